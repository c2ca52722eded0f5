//! `edgeimg-agent update apply FILE`: install a verified update into the
//! inactive root slot and arrange a trial boot of it.
//!
//! UEFI boards (systemd-boot), in an order that is safe at every instant
//! against power loss:
//! 1. verify the whole file (signature, board, architecture, every hash);
//! 2. remove the inactive slot's old boot entries (from here on nothing boots
//!    the slot we are about to overwrite);
//! 3. write the root image to the inactive slot's partition, fsync, drop the
//!    cache and read it back to compare its SHA-256;
//! 4. write kernel and initrd to `edgeimg/<slot>/` on the ESP (temp + rename);
//! 5. write the new entry `edgeimg-<generation>-<slot>+<tries>.conf` last.
//!
//! `loader.conf` says `default edgeimg-*`: systemd-boot sorts entries by id,
//! newest generation first, and entries with no tries left last, so the new
//! entry is tried first while it has tries left; once they are used up the
//! previous generation boots again by itself. A good boot drops the `+N`
//! suffix ([`crate::update::health`]); the new slot then stays first.

use crate::config;
use crate::error::{Context, Error, Result};
use crate::fsutil;
use crate::grow;
use crate::root::Root;
use crate::update::format::{self, Expect, INITRD, ROOT, VMLINUZ, Verified};
use crate::update::{TRUSTED_KEY_PATH, keys};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const ENTRY_PREFIX: &str = "edgeimg-";
pub const LOADER_DEFAULT: &str = "edgeimg-*";

/// `edgeimg-<generation>-<slot>[+tries[-done]].conf` -> (generation, slot).
pub fn parse_entry(name: &str) -> Option<(u64, char)> {
    let stem = name.strip_prefix(ENTRY_PREFIX)?.strip_suffix(".conf")?;
    let stem = stem.split('+').next()?;
    let (g, s) = stem.rsplit_once('-')?;
    let slot = match s {
        "a" => 'a',
        "b" => 'b',
        _ => return None,
    };
    Some((g.parse().ok()?, slot))
}

/// A kernel command line parameter's value.
pub fn param<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

/// The new image's command line with this device's partitions and the target slot.
///
/// With dm-verity (`edgeimg.verity.dev=` present), `root=` names the verity
/// device and stays; the slot is `edgeimg.verity.dev=` instead. The root hash
/// (`edgeimg.verity=`) is the new image's own, so it is kept as the update has it.
pub fn device_cmdline(new: &str, current: &str, slot: char, root_partuuid: &str) -> String {
    let data = param(current, "edgeimg.data");
    let verity = param(new, "edgeimg.verity.dev").is_some();
    let mut out: Vec<String> = Vec::new();
    for t in new.split_whitespace() {
        let k = t.split('=').next().unwrap_or("");
        out.push(match k {
            "root" if verity => t.to_string(),
            "root" => format!("root=PARTUUID={root_partuuid}"),
            "edgeimg.verity.dev" => format!("edgeimg.verity.dev=PARTUUID={root_partuuid}"),
            "edgeimg.slot" => format!("edgeimg.slot={slot}"),
            "edgeimg.data" => match data {
                Some(d) => format!("edgeimg.data={d}"),
                None => t.to_string(),
            },
            _ => t.to_string(),
        });
    }
    out.join(" ")
}

/// `loader.conf` with `default edgeimg-*` (other lines kept).
pub fn loader_conf(old: &str) -> String {
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| l.split_whitespace().next() != Some("default"))
        .map(String::from)
        .collect();
    lines.insert(0, format!("default {LOADER_DEFAULT}"));
    lines.join("\n") + "\n"
}

pub fn other(slot: char) -> char {
    if slot == 'a' { 'b' } else { 'a' }
}

/// Where the target slot is on this device.
struct Target {
    slot: char,
    device: PathBuf,
    partuuid: String,
    size: u64,
}

fn find_target(root: &Root, current: char) -> Result<Target> {
    let slot = other(current);
    let data = grow::find_data_device(root)?
        .ok_or_else(|| Error::msg("/var is not on a partition: not an edgeimg disk"))?;
    // Slots are partitions 2 (a) and 3 (b) of the disk holding data (4).
    let number = if slot == 'a' { 2 } else { 3 };
    let base = data
        .partition
        .strip_suffix(&data.number.to_string())
        .ok_or_else(|| Error::msg(format!("unexpected partition name {}", data.partition)))?;
    let device = root.path(format!("{base}{number}"));
    let name = device
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sectors = fsutil::read(&root.path(format!("/sys/class/block/{name}/size")))?;
    let size = sectors
        .trim()
        .parse::<u64>()
        .map_err(|_| Error::msg(format!("bad size of {name}: {sectors:?}")))?
        * 512;
    let real = device
        .canonicalize()
        .with_context(|| device.display().to_string())?;
    let dir = root.path("/dev/disk/by-partuuid");
    let mut partuuid = None;
    for e in std::fs::read_dir(&dir)
        .with_context(|| dir.display().to_string())?
        .flatten()
    {
        if e.path().canonicalize().ok().as_deref() == Some(real.as_path()) {
            partuuid = Some(e.file_name().to_string_lossy().into_owned());
        }
    }
    let partuuid = partuuid.ok_or_else(|| {
        Error::msg(format!(
            "no PARTUUID for {} in {}",
            real.display(),
            dir.display()
        ))
    })?;
    Ok(Target {
        slot,
        device,
        partuuid,
        size,
    })
}

/// Copies payload `name` from `f` to `out`, re-hashing on the way (the file
/// could change after verification), and returns nothing but errors.
pub(crate) fn copy_payload(
    f: &mut File,
    v: &Verified,
    name: &str,
    out: &mut impl Write,
) -> Result<()> {
    let p = v.header.payload(name)?;
    f.seek(SeekFrom::Start(v.offset(p))).context("seek")?;
    let got = format::sha256_of(f, p.size, |b| out.write_all(b).context("writing"))?;
    if got != p.sha256 {
        crate::bail!("payload {name} changed while it was being installed");
    }
    Ok(())
}

pub(crate) fn write_boot_file(f: &mut File, v: &Verified, name: &str, dest: &Path) -> Result<()> {
    let dir = dest.parent().expect("has a parent");
    fsutil::mkdir_p(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        dest.file_name().unwrap().to_string_lossy()
    ));
    let mut out = File::create(&tmp).with_context(|| tmp.display().to_string())?;
    copy_payload(f, v, name, &mut out).with_context(|| tmp.display().to_string())?;
    out.sync_all().with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, dest).with_context(|| dest.display().to_string())?;
    fsutil::sync_dir(dir)
}

pub fn run(root: &Root, file: &Path, tries: u32) -> Result<()> {
    if !(1..=9).contains(&tries) {
        crate::bail!("--tries {tries}: must be 1 to 9");
    }
    let image = config::load_image(root)?;
    let key_path = root.path(TRUSTED_KEY_PATH);
    if !key_path.exists() {
        crate::bail!(
            "this image trusts no update key ({TRUSTED_KEY_PATH} is missing): build it with `edgeimg build --signing-key`"
        );
    }
    let key = keys::read_public(&key_path)?;
    crate::log(format!("update: verifying {}", file.display()));
    let v = format::verify_file(
        file,
        &key,
        &Expect {
            board: Some(&image.board),
            arch: Some(&image.arch),
        },
    )?;
    let h = &v.header;
    let cmdline = fsutil::read(&root.path("/proc/cmdline"))?;
    let current = match param(&cmdline, "edgeimg.slot") {
        Some("a") => 'a',
        Some("b") => 'b',
        other => crate::bail!("no edgeimg.slot=a|b on the kernel command line ({other:?})"),
    };
    let esp = root.path(&image.boot_mount);
    let entries = esp.join("loader/entries");
    let pi = if esp.join("loader/loader.conf").exists() {
        false
    } else if esp.join("config.txt").exists() {
        true
    } else {
        crate::bail!(
            "{} has neither loader/loader.conf (systemd-boot) nor config.txt (Raspberry Pi): is the boot partition mounted?",
            esp.display()
        );
    };
    let t = find_target(root, current)?;
    let rootp = h.payload(ROOT)?;
    if rootp.size > t.size {
        crate::bail!(
            "the new root ({} bytes) does not fit slot {} ({} bytes)",
            rootp.size,
            t.slot,
            t.size
        );
    }
    crate::log(format!(
        "update: {} build {} verified (key {}); installing into slot {} ({})",
        h.name,
        h.build_id,
        h.key_id,
        t.slot,
        t.device.display()
    ));

    // 2. Nothing may boot the slot while it is being overwritten.
    let mut generation = 0;
    if pi {
        crate::update::rpi::forget_trial(&esp)?;
    }
    let listing: Vec<std::fs::DirEntry> = if pi {
        Vec::new()
    } else {
        std::fs::read_dir(&entries)
            .with_context(|| entries.display().to_string())?
            .flatten()
            .collect()
    };
    for e in listing {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((g, s)) = parse_entry(&name) {
            generation = generation.max(g);
            if s == t.slot {
                std::fs::remove_file(e.path()).with_context(|| e.path().display().to_string())?;
            }
        }
    }
    if !pi {
        fsutil::sync_dir(&entries)?;
    }

    // 3. The root image.
    crate::log(format!(
        "update: writing slot {} ({} bytes)",
        t.slot, rootp.size
    ));
    let mut f = File::open(file).with_context(|| file.display().to_string())?;
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&t.device)
        .with_context(|| t.device.display().to_string())?;
    copy_payload(&mut f, &v, ROOT, &mut dev).with_context(|| t.device.display().to_string())?;
    dev.sync_all()
        .with_context(|| t.device.display().to_string())?;
    // Read back what the medium holds, not what the page cache remembers.
    unsafe {
        libc::posix_fadvise(
            std::os::unix::io::AsRawFd::as_raw_fd(&dev),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        );
    }
    dev.seek(SeekFrom::Start(0)).context("seek")?;
    let back = format::sha256_of(&mut (&mut dev).take(rootp.size), rootp.size, |_| Ok(()))
        .with_context(|| format!("reading back {}", t.device.display()))?;
    if back != rootp.sha256 {
        crate::bail!(
            "slot {} reads back SHA-256 {back}, expected {}: the medium is failing",
            t.slot,
            rootp.sha256
        );
    }
    drop(dev);
    let new_cmdline = device_cmdline(&h.cmdline, &cmdline, t.slot, &t.partuuid);
    if pi {
        crate::update::rpi::install(&mut f, &v, &esp, t.slot, &new_cmdline)?;
        crate::log(format!(
            "update: slot {} installed with tryboot.txt; reboot with `systemctl reboot '0 tryboot'` to try it once",
            t.slot
        ));
        println!(
            "edgeimg: update {} installed in slot {}",
            h.build_id, t.slot
        );
        return Ok(());
    }

    // 4. Kernel and initrd.
    let dir = esp.join("edgeimg").join(t.slot.to_string());
    write_boot_file(&mut f, &v, VMLINUZ, &dir.join("vmlinuz"))?;
    write_boot_file(&mut f, &v, INITRD, &dir.join("initrd.img"))?;

    // 5. loader.conf, then the new entry, last.
    let lc = esp.join("loader/loader.conf");
    let old = fsutil::read(&lc)?;
    let new = loader_conf(&old);
    if new != old {
        fsutil::write_atomic_fat(&lc, new.as_bytes())?;
    }
    let id = format!("{ENTRY_PREFIX}{}-{}", generation + 1, t.slot);
    let entry = format!(
        "title {} {} (slot {})\nversion {}\nlinux /edgeimg/{}/vmlinuz\ninitrd /edgeimg/{}/initrd.img\noptions {}\n",
        h.name,
        h.build_id,
        t.slot.to_ascii_uppercase(),
        h.kernel_version,
        t.slot,
        t.slot,
        new_cmdline
    );
    let path = entries.join(format!("{id}+{tries}.conf"));
    fsutil::write_atomic_fat(&path, entry.as_bytes())?;
    crate::log(format!(
        "update: slot {} installed as boot entry {id} with {tries} tries; reboot to try it",
        t.slot
    ));
    println!(
        "edgeimg: update {} installed in slot {}",
        h.build_id, t.slot
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        assert_eq!(parse_entry("edgeimg-1-a.conf"), Some((1, 'a')));
        assert_eq!(parse_entry("edgeimg-12-b+3.conf"), Some((12, 'b')));
        assert_eq!(parse_entry("edgeimg-2-b+0-3.conf"), Some((2, 'b')));
        assert_eq!(parse_entry("edgeimg-a.conf"), None);
        assert_eq!(parse_entry("other-1-a.conf"), None);
    }

    #[test]
    fn cmdline_takes_this_devices_partitions() {
        let new =
            "root=PARTUUID=111 rootfstype=erofs ro edgeimg.data=PARTUUID=999 edgeimg.slot=a quiet";
        let cur = "root=PARTUUID=aaa ro edgeimg.data=PARTUUID=ddd edgeimg.slot=a";
        assert_eq!(
            device_cmdline(new, cur, 'b', "bbb"),
            "root=PARTUUID=bbb rootfstype=erofs ro edgeimg.data=PARTUUID=ddd edgeimg.slot=b quiet"
        );
    }

    #[test]
    fn verity_cmdline_points_the_verity_device_at_the_target_slot() {
        let new = "root=/dev/mapper/edgeimg-root edgeimg.verity=0123abcd edgeimg.verity.dev=PARTUUID=111 edgeimg.verity.offset=8192 rootfstype=erofs ro edgeimg.data=PARTUUID=999 edgeimg.slot=a";
        let cur = "root=/dev/mapper/edgeimg-root edgeimg.verity=ffff edgeimg.verity.dev=PARTUUID=aaa edgeimg.verity.offset=4096 ro edgeimg.data=PARTUUID=ddd edgeimg.slot=a";
        assert_eq!(
            device_cmdline(new, cur, 'b', "bbb"),
            "root=/dev/mapper/edgeimg-root edgeimg.verity=0123abcd edgeimg.verity.dev=PARTUUID=bbb edgeimg.verity.offset=8192 rootfstype=erofs ro edgeimg.data=PARTUUID=ddd edgeimg.slot=b"
        );
        // An update without verity onto a verity device: back to the partition.
        let plain = "root=PARTUUID=111 ro edgeimg.data=PARTUUID=999 edgeimg.slot=a";
        assert_eq!(
            device_cmdline(plain, cur, 'b', "bbb"),
            "root=PARTUUID=bbb ro edgeimg.data=PARTUUID=ddd edgeimg.slot=b"
        );
    }

    #[test]
    fn loader_conf_defaults_to_the_pattern() {
        assert_eq!(
            loader_conf("default edgeimg-a.conf\ntimeout 0\n"),
            "default edgeimg-*\ntimeout 0\n"
        );
    }
}
