//! node.toml straight off the boot partition, before systemd mounts it.
//!
//! systemd mounts the boot partition (fstab, `nofail`) only once udev has
//! processed the disk: under QEMU TCG, or on a slow board, seconds after first
//! boot could otherwise start. First boot must finish before the network
//! starts (it sets the hostname DHCP sends), so waiting for that mount held up
//! the whole boot. The boot partition is on the disk that holds /var (one
//! flashed image), so when it is not mounted yet the agent finds it in that
//! disk's partition table by the PARTUUID /etc/fstab names and reads the file
//! from the FAT file system itself: the disk is opened read-only and every
//! write is refused, there is no mount, so nothing races systemd's own mount
//! (or its fsck) of the same partition.

use crate::error::{Context, Result};
use crate::fsutil;
use crate::grow::{find_data_device, find_mount_devnum};
use crate::root::Root;
pub use edgeimg_contract::bootfs::{MAX_FILE, read_bounded, read_from_partition};
use gptman::GPT;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long to wait for systemd's mount when the partition cannot be read
/// directly: systemd's own device timeout for it (fstab's
/// `x-systemd.device-timeout=90s`).
const MOUNT_WAIT: Duration = Duration::from_secs(90);

/// Where node.toml came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The mounted boot partition.
    Mounted,
    /// Read from the partition on `disk` before it was mounted.
    Direct { disk: String },
}

/// The text of `<boot_mount>/<rel>` (`None` when the file is absent), from the
/// mount when it is there, else straight from the partition; when that fails
/// too, after waiting for systemd to mount it.
pub fn read_file(root: &Root, boot_mount: &str, rel: &str) -> Result<(Option<String>, Source)> {
    let path = root.path(Path::new(boot_mount).join(rel));
    if !root.is_host() || is_mounted(root, boot_mount)? {
        return Ok((read_opt_bounded(&path)?, Source::Mounted));
    }
    match read_unmounted(root, boot_mount, rel) {
        Ok((text, disk)) => return Ok((text, Source::Direct { disk })),
        Err(e) => crate::log(format!(
            "cannot read the boot partition before it is mounted ({e}); waiting up to {} s for {boot_mount}",
            MOUNT_WAIT.as_secs()
        )),
    }
    let deadline = Instant::now() + MOUNT_WAIT;
    while !is_mounted(root, boot_mount)? {
        if Instant::now() >= deadline {
            crate::log(format!(
                "{boot_mount} was not mounted within {} s",
                MOUNT_WAIT.as_secs()
            ));
            return Ok((None, Source::Mounted));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok((read_opt_bounded(&path)?, Source::Mounted))
}

pub fn is_mounted(root: &Root, mount_point: &str) -> Result<bool> {
    let mountinfo = fsutil::read(&root.path("/proc/self/mountinfo"))?;
    Ok(find_mount_devnum(&mountinfo, mount_point).is_some())
}

/// `<rel>` read from the FAT file system of the partition fstab mounts at
/// `boot_mount`, found on /var's disk; also names that disk.
fn read_unmounted(root: &Root, boot_mount: &str, rel: &str) -> Result<(Option<String>, String)> {
    let fstab_path = root.path("/etc/fstab");
    let fstab = fsutil::read(&fstab_path)?;
    let Some(spec) = fstab_source(&fstab, boot_mount) else {
        crate::bail!("{} has no entry for {boot_mount}", fstab_path.display());
    };
    let Some(partuuid) = spec
        .strip_prefix("PARTUUID=")
        .map(|u| u.trim_matches('"').to_ascii_lowercase())
    else {
        crate::bail!(
            "{}: {boot_mount} is {spec}, not a PARTUUID=",
            fstab_path.display()
        );
    };
    let Some(data) = find_data_device(root)? else {
        crate::bail!("/var is not on a disk partition");
    };
    let mut disk = File::open(root.path(&data.disk))
        .with_context(|| format!("opening {} read-only", data.disk))?;
    let text = read_from_disk(&mut disk, &partuuid, rel)
        .with_context(|| format!("{} (PARTUUID={partuuid})", data.disk))?;
    Ok((text, data.disk))
}

/// The source field of the fstab line that mounts `mount_point`.
pub fn fstab_source(fstab: &str, mount_point: &str) -> Option<String> {
    fstab.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (src, target) = (f.next()?, f.next()?);
        (!src.starts_with('#') && target == mount_point).then(|| src.to_string())
    })
}

/// `<rel>` from the FAT file system in the partition `partuuid` of `disk` (a
/// disk device or image file with a GPT or MBR); `None` when it is absent.
/// Generic over the reader so the fuzz targets run this same code on bytes.
pub fn read_from_disk<D: Read + Seek>(
    disk: &mut D,
    partuuid: &str,
    rel: &str,
) -> Result<Option<String>> {
    let (start, len) = find_partition(disk, partuuid)?;
    read_from_partition(disk, start, len, rel)
}

/// [`read_bounded`] of a file; `Ok(None)` when it does not exist.
pub fn read_opt_bounded(path: &Path) -> Result<Option<String>> {
    match File::open(path) {
        Ok(mut f) => read_bounded(&mut f, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// First byte and length of the partition whose PARTUUID is `partuuid`.
fn find_partition<D: Read + Seek>(disk: &mut D, partuuid: &str) -> Result<(u64, u64)> {
    if let Ok(gpt) = GPT::find_from(disk) {
        let ss = gpt.sector_size;
        for (n, p) in gpt.iter().filter(|(_, p)| p.is_used()) {
            if guid_string(&p.unique_partition_guid) == partuuid {
                return crate::grow::byte_span(n, p.starting_lba, p.ending_lba, ss);
            }
        }
        crate::bail!("no GPT partition has this PARTUUID");
    }
    disk.seek(SeekFrom::Start(0)).context("seeking")?;
    let mbr = crate::grow::read_mbr(disk, 512).context("neither a GPT nor an MBR")?;
    let id = u32::from_le_bytes(mbr.header.disk_signature);
    for (n, p) in mbr.iter().filter(|(_, p)| p.is_used()) {
        if mbr_partuuid(id, n as u32) == partuuid {
            return Ok((u64::from(p.starting_lba) * 512, u64::from(p.sectors) * 512));
        }
    }
    crate::bail!("no MBR partition has this PARTUUID")
}

pub use edgeimg_contract::partition::mbr_partuuid;

/// A GPT GUID as the kernel and blkid print it (first three fields little-endian).
fn guid_string(g: &[u8; 16]) -> String {
    use crate::hex::hex;
    let rev = |b: &[u8]| hex(&b.iter().rev().copied().collect::<Vec<_>>());
    format!(
        "{}-{}-{}-{}-{}",
        rev(&g[0..4]),
        rev(&g[4..6]),
        rev(&g[6..8]),
        hex(&g[8..10]),
        hex(&g[10..16])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Command;

    const MIB: u64 = 1024 * 1024;

    /// A 32 MiB FAT file system holding `files`, made by the real mkfs.vfat
    /// and mcopy (what the builder uses for the boot partition).
    fn fat_image(dir: &Path, files: &[(&str, &str)]) -> std::path::PathBuf {
        let img = dir.join("fat.img");
        let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
        ok(Command::new("mkfs.vfat").arg("-C").arg(&img).arg("32768"));
        ok(Command::new("mmd").arg("-i").arg(&img).arg("::edgeimg"));
        for (name, text) in files {
            let src = dir.join("src");
            std::fs::write(&src, text).unwrap();
            ok(Command::new("mcopy")
                .arg("-i")
                .arg(&img)
                .arg(&src)
                .arg(format!("::{name}")));
        }
        img
    }

    /// A disk file: 1 MiB of table space, then the FAT image as partition 1.
    fn disk_with(dir: &Path, fat: &Path) -> File {
        let fat = std::fs::read(fat).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("disk.img"))
            .unwrap();
        f.set_len(MIB + fat.len() as u64 + MIB).unwrap();
        f.seek(SeekFrom::Start(MIB)).unwrap();
        f.write_all(&fat).unwrap();
        f
    }

    const GUID: [u8; 16] = [
        0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ];

    #[test]
    fn guid_is_printed_like_blkid() {
        assert_eq!(guid_string(&GUID), "12345678-9abc-def0-0123-456789abcdef");
    }

    #[test]
    fn fstab_source_finds_the_mount() {
        let fstab = "# /boot/efi is here\nPARTUUID=ab-01 /boot/efi vfat umask=0077,nofail 0 2\ntmpfs /tmp tmpfs defaults 0 0\n";
        assert_eq!(
            fstab_source(fstab, "/boot/efi").as_deref(),
            Some("PARTUUID=ab-01")
        );
        assert_eq!(fstab_source(fstab, "/boot"), None);
    }

    #[test]
    fn reads_node_toml_from_a_gpt_partition_without_mounting() {
        let t = tempfile::tempdir().unwrap();
        let fat = fat_image(t.path(), &[("edgeimg/node.toml", "hostname = \"n1\"\n")]);
        let mut disk = disk_with(t.path(), &fat);
        let mut gpt = GPT::new_from(&mut disk, 512, [7; 16]).unwrap();
        gpt[1] = gptman::GPTPartitionEntry {
            partition_type_guid: [1; 16],
            unique_partition_guid: GUID,
            starting_lba: MIB / 512,
            ending_lba: MIB / 512 + 32 * MIB / 512 - 1,
            attribute_bits: 0,
            partition_name: "boot".into(),
        };
        gpt.write_into(&mut disk).unwrap();
        let before = std::fs::read(t.path().join("disk.img")).unwrap();
        let mut ro = File::open(t.path().join("disk.img")).unwrap();
        let got = read_from_disk(
            &mut ro,
            "12345678-9abc-def0-0123-456789abcdef",
            "edgeimg/node.toml",
        )
        .unwrap();
        assert_eq!(got.as_deref(), Some("hostname = \"n1\"\n"));
        // A missing file is None; another PARTUUID is an error.
        assert_eq!(
            read_from_disk(
                &mut ro,
                "12345678-9abc-def0-0123-456789abcdef",
                "edgeimg/nope.toml"
            )
            .unwrap(),
            None
        );
        let e = read_from_disk(
            &mut ro,
            "00000000-9abc-def0-0123-456789abcdef",
            "edgeimg/node.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("no GPT partition"), "{e}");
        // Nothing was written.
        assert!(std::fs::read(t.path().join("disk.img")).unwrap() == before);
    }

    #[test]
    fn reads_node_toml_from_an_mbr_partition() {
        let t = tempfile::tempdir().unwrap();
        let fat = fat_image(t.path(), &[("edgeimg/node.toml", "hostname = \"pi\"\n")]);
        let mut disk = disk_with(t.path(), &fat);
        let mut mbr = mbrman::MBR::new_from(&mut disk, 512, [0x44, 0x33, 0x22, 0x11]).unwrap();
        mbr[1] = mbrman::MBRPartitionEntry {
            boot: mbrman::BOOT_INACTIVE,
            first_chs: mbrman::CHS::empty(),
            sys: 0x0c,
            last_chs: mbrman::CHS::empty(),
            starting_lba: (MIB / 512) as u32,
            sectors: (32 * MIB / 512) as u32,
        };
        mbr.write_into(&mut disk).unwrap();
        let mut ro = File::open(t.path().join("disk.img")).unwrap();
        let got = read_from_disk(&mut ro, "11223344-01", "edgeimg/node.toml").unwrap();
        assert_eq!(got.as_deref(), Some("hostname = \"pi\"\n"));
        assert!(read_from_disk(&mut ro, "11223344-02", "edgeimg/node.toml").is_err());
    }
}
