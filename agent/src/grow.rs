//! Grow the data partition (mounted at /var) and its ext4 to fill the medium.
//!
//! The image is smaller than the SD card / disk it is flashed to. Steps:
//! find /var's device (mountinfo -> sysfs), rewrite the partition table of the
//! parent disk (GPT: move the backup header to the end, extend the partition;
//! MBR: extend the entry), tell the kernel the partition's new size with the
//! BLKPG ioctl (the disk is in use, so BLKRRPART would be refused), and grow
//! the mounted ext4 online with resize2fs. Every part is idempotent: a rerun
//! after a crash finds the table already grown and only repeats the cheap
//! kernel/resize2fs calls.
//!
//! An encrypted data partition (`[data] encryption = "tpm2"`) is mounted
//! through dm-crypt: /var's device is the mapping, the partition is its one
//! slave. The partition grows the same way, then `cryptsetup resize` widens
//! the mapping (the initramfs opened it with the key in the dm table, so no
//! key is asked for) before resize2fs grows the ext4 inside.

use crate::error::{Context, Result};
use crate::fsutil;
use crate::root::Root;
use gptman::GPT;
use mbrman::MBR;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

const MIB: u64 = 1024 * 1024;

/// The block device backing a mount point, as found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDevice {
    /// Partition device, e.g. "/dev/mmcblk0p4".
    pub partition: String,
    /// Whole disk, e.g. "/dev/mmcblk0".
    pub disk: String,
    /// Partition number (1-based), from /sys/dev/block/M:m/partition.
    pub number: u32,
    /// The dm-crypt mapping's name when /var is mounted through one.
    pub mapper: Option<String>,
}

impl DataDevice {
    /// What holds the ext4: the mapping, else the partition.
    pub fn filesystem(&self) -> String {
        match &self.mapper {
            Some(name) => format!("/dev/mapper/{name}"),
            None => self.partition.clone(),
        }
    }
}

/// Find "major:minor" of the topmost mount at `mount_point` in mountinfo text.
pub fn find_mount_devnum(mountinfo: &str, mount_point: &str) -> Option<String> {
    // Fields: id parent major:minor root mount-point ...; later lines are
    // mounted on top of earlier ones, so the last match is what is visible.
    mountinfo.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 4 && f[4] == mount_point).then(|| f[2].to_string())
    })
}

/// Map /var to its partition and disk via /proc/self/mountinfo and sysfs.
/// `Ok(None)` when /var is not a separate block-device partition.
pub fn find_data_device(root: &Root) -> Result<Option<DataDevice>> {
    let mi_path = root.path("/proc/self/mountinfo");
    let mountinfo = fsutil::read(&mi_path)?;
    let Some(devnum) = find_mount_devnum(&mountinfo, "/var") else {
        return Ok(None);
    };
    let mut sys = root.path(format!("/sys/dev/block/{devnum}"));
    let mapper = match fsutil::read_opt(&sys.join("dm/name"))? {
        None => None,
        Some(name) => {
            // A device-mapper device: follow it to its partition when it
            // has exactly one below it (dm-crypt).
            let slaves = sys.join("slaves");
            let below: Vec<_> = match std::fs::read_dir(&slaves) {
                Ok(d) => d.flatten().map(|e| e.file_name()).collect(),
                Err(_) => Vec::new(),
            };
            let [slave] = below.as_slice() else {
                return Ok(None);
            };
            sys = root.path(format!("/sys/class/block/{}", slave.to_string_lossy()));
            Some(name.trim().to_string())
        }
    };
    let part_file = sys.join("partition");
    let Some(number) = fsutil::read_opt(&part_file)? else {
        return Ok(None); // a whole disk or a virtual device: nothing to grow
    };
    let number: u32 = number.trim().parse().with_context(|| {
        format!(
            "{}: bad partition number {:?}",
            part_file.display(),
            number.trim()
        )
    })?;
    // /sys/dev/block/M:m -> .../block/<disk>/<partition>
    let real = sys
        .canonicalize()
        .with_context(|| format!("resolving {}", sys.display()))?;
    let name = |p: Option<&Path>| {
        p.and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
    };
    let (Some(part), Some(disk)) = (name(Some(&real)), name(real.parent())) else {
        crate::bail!(
            "{}: unexpected sysfs path {}",
            sys.display(),
            real.display()
        );
    };
    Ok(Some(DataDevice {
        partition: format!("/dev/{part}"),
        disk: format!("/dev/{disk}"),
        number,
        mapper,
    }))
}

/// What the table rewrite decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The partition was extended; sizes in bytes.
    Grown {
        /// First byte of the partition on the disk.
        start: u64,
        /// Size before.
        old_size: u64,
        /// Size after.
        new_size: u64,
    },
    /// Already within 1 MiB of the maximum.
    AlreadyMax {
        /// First byte of the partition on the disk.
        start: u64,
        /// Current size.
        size: u64,
    },
    /// Not growable (not the last partition, logical MBR partition, ...).
    Skipped(String),
}

/// Pure planning: the new last sector (inclusive) for a partition starting at
/// `start` and ending at `end`, when the usable area ends at `last_usable`
/// (inclusive). The size is rounded down to whole MiB. `None` when the gain
/// would be under 1 MiB.
pub fn plan_end(start: u64, end: u64, last_usable: u64, sector_size: u64) -> Option<u64> {
    let per_mib = MIB.checked_div(sector_size).filter(|&n| n > 0)?;
    let max_sectors = last_usable.checked_add(1)?.checked_sub(start)?;
    let aligned = max_sectors / per_mib * per_mib;
    let new_end = start.checked_add(aligned)?.checked_sub(1)?;
    (aligned > 0 && new_end >= end.checked_add(per_mib)?).then_some(new_end)
}

/// First byte and length of the sectors `start..=end`, every step checked:
/// the numbers come from a partition table on the medium, which may be
/// hostile, and a wrapped size would be used as a real one in a release build.
pub fn byte_span(number: u32, start: u64, end: u64, sector_size: u64) -> Result<(u64, u64)> {
    let span = end
        .checked_add(1)
        .and_then(|e| e.checked_sub(start))
        .filter(|&n| n > 0)
        .and_then(|sectors| {
            let off = start.checked_mul(sector_size)?;
            let len = sectors.checked_mul(sector_size)?;
            off.checked_add(len)?;
            Some((off, len))
        });
    match span {
        Some(s) => Ok(s),
        None => crate::bail!(
            "partition {number}: sectors {start}..={end} of {sector_size} bytes are not a valid range"
        ),
    }
}

/// Rewrite a GPT so partition `number` fills the disk (`disk` = the whole
/// disk or an image file; its size is taken from seeking to the end, which
/// for a block device is the device size).
pub fn grow_gpt<D: Read + Write + Seek>(disk: &mut D, number: u32) -> Result<Outcome> {
    let mut gpt = GPT::find_from(disk).context("reading GPT")?;
    let ss = gpt.sector_size;
    let old_backup = gpt.header.backup_lba;
    // Recompute backup LBA and last usable LBA for the (bigger) medium.
    gpt.header
        .update_from(disk, ss)
        .context("sizing GPT to the disk")?;
    let last = gpt
        .iter()
        .filter(|(_, p)| p.is_used())
        .max_by_key(|(_, p)| p.ending_lba)
        .map(|(i, _)| i);
    if last != Some(number) {
        return Ok(Outcome::Skipped(format!(
            "partition {number} is not the last one on the disk"
        )));
    }
    let p = &gpt[number];
    let (start, end) = (p.starting_lba, p.ending_lba);
    let (first_byte, old_size) = byte_span(number, start, end, ss)?;
    let new_end = plan_end(start, end, gpt.header.last_usable_lba, ss);
    if new_end.is_none() && old_backup == gpt.header.backup_lba {
        return Ok(Outcome::AlreadyMax {
            start: first_byte,
            size: old_size,
        });
    }
    let new_size = match new_end {
        Some(e) => byte_span(number, start, e, ss)?.1,
        None => old_size,
    };
    if let Some(e) = new_end {
        gpt[number].ending_lba = e;
    }
    gpt.write_into(disk).context("writing GPT")?;
    fix_protective_mbr(disk, ss)?;
    Ok(match new_end {
        Some(_) => Outcome::Grown {
            start: first_byte,
            old_size,
            new_size,
        },
        None => Outcome::AlreadyMax {
            start: first_byte,
            size: old_size,
        }, // only the backup header moved
    })
}

/// The protective MBR's 0xEE entry spans the whole disk; refresh it for the
/// new size (keeping its boot flag) so tools like `sgdisk -v` stay quiet.
fn fix_protective_mbr<D: Read + Write + Seek>(disk: &mut D, ss: u64) -> Result<()> {
    let mut entry = [0u8; 16];
    disk.seek(SeekFrom::Start(446))
        .and_then(|_| disk.read_exact(&mut entry))
        .context("reading protective MBR")?;
    if entry[4] != 0xEE {
        return Ok(()); // hybrid or missing: leave it alone
    }
    let res = if entry[0] == 0x80 {
        GPT::write_bootable_protective_mbr_into(disk, ss)
    } else {
        GPT::write_protective_mbr_into(disk, ss)
    };
    res.context("writing protective MBR")
}

/// `MBR::read_from`, after refusing a table it would panic on: mbrman (0.6)
/// unwraps an empty range when every used partition starts at sector 0, and
/// the agent is built with panic=abort, so a hostile disk would kill it.
pub fn read_mbr<D: Read + Seek>(disk: &mut D, sector_size: u32) -> Result<MBR> {
    let mut sector0 = [0u8; 512];
    disk.seek(SeekFrom::Start(0)).context("seeking")?;
    disk.read_exact(&mut sector0).context("reading sector 0")?;
    for (i, e) in sector0[446..510].chunks(16).enumerate() {
        let starting_lba = u32::from_le_bytes(e[8..12].try_into().unwrap());
        if e[4] != 0 && starting_lba == 0 {
            crate::bail!(
                "MBR partition {} starts at sector 0 (over the table itself)",
                i + 1
            );
        }
    }
    disk.seek(SeekFrom::Start(0)).context("seeking")?;
    MBR::read_from(disk, sector_size).context("parsing the MBR")
}

/// Rewrite an MBR so primary partition `number` fills the disk (capped at the
/// 2 TiB an MBR can address).
pub fn grow_mbr<D: Read + Write + Seek>(
    disk: &mut D,
    number: u32,
    sector_size: u32,
) -> Result<Outcome> {
    let mut mbr = read_mbr(disk, sector_size).context("reading MBR")?;
    if !(1..=4).contains(&number) {
        return Ok(Outcome::Skipped(format!(
            "partition {number} is a logical MBR partition"
        )));
    }
    let n = number as usize;
    // Saturating: a used entry with no sectors ends "before" its start and
    // is refused by `byte_span` below rather than wrapping here.
    let end_of = |p: &mbrman::MBRPartitionEntry| {
        (u64::from(p.starting_lba) + u64::from(p.sectors)).saturating_sub(1)
    };
    let last = mbr
        .iter()
        .filter(|(_, p)| p.is_used())
        .max_by_key(|(_, p)| end_of(p))
        .map(|(i, _)| i);
    if last != Some(n) || mbr[n].is_extended() {
        return Ok(Outcome::Skipped(format!(
            "partition {number} is not the last primary partition"
        )));
    }
    let ss = u64::from(sector_size);
    let (start, end) = (u64::from(mbr[n].starting_lba), end_of(&mbr[n]));
    if mbr[n].sectors == 0 {
        crate::bail!("MBR partition {number} has no sectors");
    }
    let (first_byte, old_size) = byte_span(number, start, end, ss)?;
    let Some(last_sector) = u64::from(mbr.disk_size)
        .min(u64::from(u32::MAX))
        .checked_sub(1)
    else {
        crate::bail!("the MBR says the disk has no sectors");
    };
    let Some(new_end) = plan_end(start, end, last_sector, ss) else {
        return Ok(Outcome::AlreadyMax {
            start: first_byte,
            size: old_size,
        });
    };
    let (_, new_size) = byte_span(number, start, new_end, ss)?;
    let sectors = new_end + 1 - start; // byte_span checked this
    mbr[n].sectors = u32::try_from(sectors).context("partition size")?;
    if !mbr[n].last_chs.is_empty() {
        // Beyond CHS range: the conventional "maximum" address, as fdisk writes.
        mbr[n].last_chs = mbrman::CHS::new(1023, 254, 63);
    }
    mbr.write_into(disk).context("writing MBR")?;
    Ok(Outcome::Grown {
        start: first_byte,
        old_size,
        new_size,
    })
}

/// Rewrite the table of `disk` (GPT if present, else MBR) and sync it.
pub fn grow_table(disk: &mut File, number: u32, is_block: bool) -> Result<Outcome> {
    let gpt = GPT::find_from(disk).is_ok();
    let out = if gpt {
        grow_gpt(disk, number)?
    } else {
        let ss = if is_block { sector_size(disk)? } else { 512 };
        grow_mbr(disk, number, ss)?
    };
    disk.sync_all().context("fsync of the disk")?;
    Ok(out)
}

// Block-device ioctls (linux/fs.h, linux/blkpg.h); not in the libc crate.
const BLKSSZGET: u32 = 0x1268; // _IO(0x12,104)
const BLKPG: u32 = 0x1269; // _IO(0x12,105)
const BLKGETSIZE64: u32 = 0x8008_1272; // _IOR(0x12,114,size_t), 64-bit targets
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

/// `struct blkpg_ioctl_arg` from linux/blkpg.h.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `struct blkpg_partition` from linux/blkpg.h; start and length in bytes.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

fn sector_size(disk: &File) -> Result<u32> {
    let mut ss: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int to the pointer.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKSSZGET as _, &mut ss) };
    if rc != 0 || ss <= 0 {
        return Err(std::io::Error::last_os_error()).context("BLKSSZGET");
    }
    Ok(ss as u32)
}

/// Size in bytes: BLKGETSIZE64 for block devices, the length for files.
pub fn disk_size(disk: &File, is_block: bool) -> Result<u64> {
    if !is_block {
        return Ok(disk.metadata().context("stat")?.len());
    }
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 to the pointer.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKGETSIZE64 as _, &mut size) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("BLKGETSIZE64");
    }
    Ok(size)
}

/// Tell the kernel partition `number` of the open disk now spans
/// `start..start+length` bytes (works while the partition is mounted).
fn blkpg_resize(disk: &File, number: u32, start: u64, length: u64) -> Result<()> {
    let mut part = BlkpgPartition {
        start: start as libc::c_longlong,
        length: length as libc::c_longlong,
        pno: number as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: arg points at a live blkpg_partition of the declared size.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG as _, &mut arg) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!("BLKPG_RESIZE_PARTITION (partition {number}, start {start}, length {length})")
        });
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / MIB)
}

/// The grow step of first boot.
pub fn step(root: &Root) -> Result<String> {
    let Some(dev) = find_data_device(root)? else {
        return Ok("/var is not on a partition; nothing to grow".into());
    };
    let disk_path: PathBuf = root.path(&dev.disk);
    let mut disk = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk_path)
        .with_context(|| format!("opening {}", disk_path.display()))?;
    let is_block = disk
        .metadata()
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    let size = disk_size(&disk, is_block).with_context(|| disk_path.display().to_string())?;
    crate::log(format!(
        "data partition {} (#{}) on {} ({})",
        dev.partition,
        dev.number,
        dev.disk,
        mib(size)
    ));
    let outcome = grow_table(&mut disk, dev.number, is_block)
        .with_context(|| disk_path.display().to_string())?;
    let (start, new_size, note) = match outcome {
        Outcome::Skipped(why) => return Ok(format!("{}: not grown: {why}", dev.partition)),
        Outcome::AlreadyMax { start, size } => (
            start,
            size,
            format!("{} already fills the disk ({})", dev.partition, mib(size)),
        ),
        Outcome::Grown {
            start,
            old_size,
            new_size,
        } => (
            start,
            new_size,
            format!(
                "{} grown from {} to {}",
                dev.partition,
                mib(old_size),
                mib(new_size)
            ),
        ),
    };
    crate::log(&note);
    // Repeated even when the table was already grown: a crash may have come
    // between the table write and these calls.
    if is_block {
        blkpg_resize(&disk, dev.number, start, new_size).with_context(|| dev.disk.clone())?;
    }
    drop(disk);
    if let Some(name) = &dev.mapper {
        root.run("cryptsetup", &["resize", name])?;
    }
    let out = root.run("resize2fs", &[&dev.filesystem()])?;
    if let Some(line) = out.lines().rev().find(|l| !l.trim().is_empty()) {
        crate::log(format!("resize2fs: {}", line.trim()));
    }
    Ok(note)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SS: u64 = 512;

    /// A 64 MiB file with a GPT: p1 at 1..9 MiB, p4 (data) at 9..40 MiB.
    fn gpt_file(path: &Path) {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        f.set_len(64 * MIB).unwrap();
        let mut gpt = GPT::new_from(&mut f, SS, [7; 16]).unwrap();
        let mk = |start: u64, end: u64, g: u8| gptman::GPTPartitionEntry {
            partition_type_guid: [1; 16],
            unique_partition_guid: [g; 16],
            starting_lba: start,
            ending_lba: end,
            attribute_bits: 0,
            partition_name: "p".into(),
        };
        gpt[1] = mk(2048, 9 * 2048 - 1, 1);
        gpt[4] = mk(9 * 2048, 40 * 2048 - 1, 4);
        GPT::write_protective_mbr_into(&mut f, SS).unwrap();
        gpt.write_into(&mut f).unwrap();
    }

    #[test]
    fn plan_rounds_to_mib() {
        // usable area ends mid-MiB: size rounds down to whole MiB
        assert_eq!(
            plan_end(2048, 4095, 2048 * 10 + 100, 512),
            Some(2048 + 2048 * 9 - 1)
        );
        assert_eq!(plan_end(2048, 2048 * 10 - 1, 2048 * 10 + 100, 512), None); // gain < 1 MiB
    }

    #[test]
    fn gpt_grows_on_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("disk.img");
        gpt_file(&path);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.set_len(128 * MIB).unwrap();
        let out = grow_table(&mut f, 4, false).unwrap();
        let total = 128 * MIB / SS;
        let gpt = GPT::find_from(&mut f).unwrap();
        assert_eq!(gpt.header.backup_lba, total - 1);
        assert_eq!(gpt.header.last_usable_lba, total - 34);
        let p = &gpt[4];
        assert_eq!(p.starting_lba, 9 * 2048);
        assert_eq!((p.ending_lba + 1 - p.starting_lba) * SS % MIB, 0);
        // 128 MiB minus the 33-sector backup GPT: the last whole MiB is lost.
        assert_eq!(p.ending_lba, 127 * 2048 - 1);
        assert_eq!(
            out,
            Outcome::Grown {
                start: 9 * MIB,
                old_size: 31 * MIB,
                new_size: 118 * MIB
            }
        );
        // The backup header really is at the last LBA.
        let mut sig = [0u8; 8];
        f.seek(SeekFrom::Start((total - 1) * SS)).unwrap();
        f.read_exact(&mut sig).unwrap();
        assert_eq!(&sig, b"EFI PART");
        // Protective MBR covers the new size.
        let mbr = MBR::read_from(&mut f, 512).unwrap();
        assert_eq!(u64::from(mbr[1].sectors), total - 1);
        // Idempotent.
        assert!(matches!(
            grow_table(&mut f, 4, false).unwrap(),
            Outcome::AlreadyMax { .. }
        ));
        // Not the last partition: left alone.
        assert!(matches!(
            grow_table(&mut f, 1, false).unwrap(),
            Outcome::Skipped(_)
        ));
    }

    #[test]
    fn mbr_grows_on_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("disk.img");
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(64 * MIB).unwrap();
        let mut mbr = MBR::new_from(&mut f, 512, [1, 2, 3, 4]).unwrap();
        let mk = |start: u32, sectors: u32, sys: u8| mbrman::MBRPartitionEntry {
            boot: mbrman::BOOT_INACTIVE,
            first_chs: mbrman::CHS::empty(),
            sys,
            last_chs: mbrman::CHS::empty(),
            starting_lba: start,
            sectors,
        };
        mbr[1] = mk(2048, 16 * 2048, 0x0c);
        mbr[2] = mk(17 * 2048, 20 * 2048, 0x83);
        mbr.write_into(&mut f).unwrap();
        f.set_len(128 * MIB + 4096).unwrap(); // odd size: the tail is not a whole MiB
        let out = grow_table(&mut f, 2, false).unwrap();
        assert_eq!(
            out,
            Outcome::Grown {
                start: 17 * MIB,
                old_size: 20 * MIB,
                new_size: 111 * MIB
            }
        );
        let mbr = MBR::read_from(&mut f, 512).unwrap();
        assert_eq!(mbr[2].starting_lba, 17 * 2048);
        assert_eq!(mbr[2].sectors, 111 * 2048);
        assert!(matches!(
            grow_table(&mut f, 2, false).unwrap(),
            Outcome::AlreadyMax { .. }
        ));
        assert!(matches!(
            grow_table(&mut f, 1, false).unwrap(),
            Outcome::Skipped(_)
        ));
    }

    #[test]
    fn mountinfo_lookup() {
        let mi = "22 1 254:2 / / ro,relatime - erofs /dev/vda2 ro\n\
                  30 22 254:4 / /var rw,relatime - ext4 /dev/vda4 rw\n\
                  31 22 0:40 /etc /etc rw - overlay overlay rw\n";
        assert_eq!(find_mount_devnum(mi, "/var").as_deref(), Some("254:4"));
        assert_eq!(find_mount_devnum(mi, "/srv"), None);
    }

    /// Build a fake /proc + /sys + /dev/vda (a GPT image file) under `root`.
    pub(crate) fn fake_disk(root: &Root) {
        let w = |p: &str, s: &str| {
            let p = root.path(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        w(
            "/proc/self/mountinfo",
            "30 22 254:4 / /var rw,relatime - ext4 /dev/vda4 rw\n",
        );
        w("/sys/devices/virtual/block/vda/vda4/partition", "4\n");
        std::fs::create_dir_all(root.path("/sys/dev/block")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/virtual/block/vda/vda4",
            root.path("/sys/dev/block/254:4"),
        )
        .unwrap();
        std::fs::create_dir_all(root.path("/dev")).unwrap();
        gpt_file(&root.path("/dev/vda"));
        OpenOptions::new()
            .write(true)
            .open(root.path("/dev/vda"))
            .unwrap()
            .set_len(128 * MIB)
            .unwrap();
    }

    #[test]
    fn step_against_fake_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        fake_disk(&root);
        let dev = find_data_device(&root).unwrap().unwrap();
        assert_eq!(
            dev,
            DataDevice {
                partition: "/dev/vda4".into(),
                disk: "/dev/vda".into(),
                number: 4,
                mapper: None,
            }
        );
        assert_eq!(
            step(&root).unwrap(),
            "/dev/vda4 grown from 31 MiB to 118 MiB"
        );
        assert_eq!(root.skipped_commands(), ["resize2fs /dev/vda4"]);
    }

    /// /var on dm-crypt: the partition below the mapping grows, then the
    /// mapping, then the ext4 inside it.
    #[test]
    fn step_through_a_dm_crypt_mapping() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        fake_disk(&root);
        let w = |p: &str, s: &str| {
            let p = root.path(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        w(
            "/proc/self/mountinfo",
            "30 22 253:0 / /var rw,relatime - ext4 /dev/mapper/edgeimg-data rw\n",
        );
        w("/sys/devices/virtual/block/dm-0/dm/name", "edgeimg-data\n");
        std::fs::create_dir_all(root.path("/sys/devices/virtual/block/dm-0/slaves/vda4")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/virtual/block/dm-0",
            root.path("/sys/dev/block/253:0"),
        )
        .unwrap();
        std::fs::create_dir_all(root.path("/sys/class/block")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/virtual/block/vda/vda4",
            root.path("/sys/class/block/vda4"),
        )
        .unwrap();
        let dev = find_data_device(&root).unwrap().unwrap();
        assert_eq!(dev.partition, "/dev/vda4");
        assert_eq!(dev.disk, "/dev/vda");
        assert_eq!(dev.mapper.as_deref(), Some("edgeimg-data"));
        assert_eq!(
            step(&root).unwrap(),
            "/dev/vda4 grown from 31 MiB to 118 MiB"
        );
        assert_eq!(
            root.skipped_commands(),
            [
                "cryptsetup resize edgeimg-data",
                "resize2fs /dev/mapper/edgeimg-data"
            ]
        );
    }

    /// Real block device check of the table rewrite and BLKPG resize (root
    /// only): `EDGEIMG_AGENT_TEST_DISK=/dev/loopN cargo test -p edgeimg-agent
    /// -- --ignored real_block_device` with a loop device whose partition 4 is
    /// the last one and is known to the kernel (`losetup -P` / `partx -a`).
    #[test]
    #[ignore]
    fn real_block_device() {
        let disk_path = std::env::var("EDGEIMG_AGENT_TEST_DISK").expect("EDGEIMG_AGENT_TEST_DISK");
        let mut disk = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk_path)
            .unwrap();
        assert!(disk.metadata().unwrap().file_type().is_block_device());
        let size = disk_size(&disk, true).unwrap();
        let out = grow_table(&mut disk, 4, true).unwrap();
        let (start, len) = match out {
            Outcome::Grown {
                start, new_size, ..
            } => (start, new_size),
            Outcome::AlreadyMax { start, size } => (start, size),
            Outcome::Skipped(w) => panic!("{w}"),
        };
        blkpg_resize(&disk, 4, start, len).unwrap();
        let name = Path::new(&disk_path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let sys = format!("/sys/block/{name}/{name}p4/size");
        let sectors: u64 = std::fs::read_to_string(&sys)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(sectors * 512, len, "{sys}");
        assert!(start + len <= size);
    }

    /// Found by the partition_table fuzz target: a used MBR entry at sector 0
    /// made mbrman panic (an abort in the agent); now it is an error.
    #[test]
    fn mbr_partition_at_sector_zero_is_an_error_not_a_panic() {
        let mut disk = vec![0u8; 64 * 512];
        disk[446 + 4] = 0x83;
        disk[446 + 12..446 + 16].copy_from_slice(&8u32.to_le_bytes());
        disk[510] = 0x55;
        disk[511] = 0xaa;
        let e = grow_mbr(&mut std::io::Cursor::new(disk.clone()), 1, 512).unwrap_err();
        assert!(format!("{e:#}").contains("starts at sector 0"), "{e:#}");
        let e = crate::bootpart::read_from_disk(&mut std::io::Cursor::new(disk), "0-01", "x")
            .unwrap_err();
        assert!(format!("{e:#}").contains("starts at sector 0"), "{e:#}");
    }

    /// Found by the partition_table fuzz target: a 0-sector partition made
    /// `end - start` underflow.
    #[test]
    fn mbr_partition_without_sectors_is_an_error_not_a_panic() {
        let mut disk = vec![0u8; 64 * 512];
        disk[446 + 4] = 0x83;
        disk[446 + 8..446 + 12].copy_from_slice(&8u32.to_le_bytes());
        disk[510] = 0x55;
        disk[511] = 0xaa;
        assert!(grow_mbr(&mut std::io::Cursor::new(disk), 1, 512).is_err());
    }

    /// The 64 MiB GPT disk of [`gpt_file`] with partition 4's last sector
    /// set to `end` and both CRCs fixed, so the table still reads as valid.
    pub(crate) fn gpt_with_p4_end(end: u64) -> Vec<u8> {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("disk.img");
        gpt_file(&p);
        let mut disk = std::fs::read(&p).unwrap();
        let entries = 2 * 512;
        let e4 = entries + 3 * 128;
        disk[e4 + 40..e4 + 48].copy_from_slice(&end.to_le_bytes());
        let crc = crc32fast::hash(&disk[entries..entries + 128 * 128]);
        disk[512 + 88..512 + 92].copy_from_slice(&crc.to_le_bytes());
        disk[512 + 16..512 + 20].fill(0);
        let crc = crc32fast::hash(&disk[512..512 + 92]);
        disk[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
        disk
    }

    /// A GPT entry whose size in bytes does not fit in 64 bits: a clear
    /// error from grow and from the boot-partition reader, never a wrapped
    /// size (nor an overflow panic, an abort in the agent).
    #[test]
    fn gpt_partition_too_large_to_address_is_an_error_not_a_wrap() {
        let disk = gpt_with_p4_end(u64::MAX - 2);
        assert!(GPT::find_from(&mut std::io::Cursor::new(disk.clone())).is_ok());
        let e = grow_gpt(&mut std::io::Cursor::new(disk.clone()), 4).unwrap_err();
        assert!(format!("{e:#}").contains("partition 4: sectors"), "{e:#}");
        let uuid = "04040404-0404-0404-0404-040404040404";
        let e = crate::bootpart::read_from_disk(&mut std::io::Cursor::new(disk), uuid, "x")
            .unwrap_err();
        assert!(format!("{e:#}").contains("partition 4: sectors"), "{e:#}");
        assert_eq!(plan_end(2048, 4096, u64::MAX, 512), None);
        assert_eq!(plan_end(2048, u64::MAX, u64::MAX - 1, 512), None);
    }
}
