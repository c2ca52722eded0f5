//! What a flash target is, and whether writing to it is safe.
//!
//! Everything here reads the kernel's view (`/proc/self/mountinfo`,
//! `/proc/swaps`, `/sys/class/block`) through a [`HostView`], so the refusals
//! are unit-testable with made-up trees, and testable for real with loop
//! devices.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::config::size::human;

/// Mount points whose disk is never a flash target.
pub const SYSTEM_MOUNTS: &[&str] = &["/", "/boot", "/boot/efi", "/boot/firmware", "/usr", "/var"];

/// Test-only: colon-separated mount points treated like `/` (can only add to
/// [`SYSTEM_MOUNTS`], never remove), so the "holds /" refusal can be tested on
/// a loop device.
pub const EXTRA_SYSTEM_MOUNTS_ENV: &str = "EDGEIMG_FLASH_EXTRA_SYSTEM_MOUNTS";

/// Why a target is refused. Every message names the target and the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("refusing to write to {}: it is a regular file; pass --to-file to write the image into a file", .0.display())]
    RegularFile(PathBuf),
    #[error("refusing to write to {}: {what}", path.display())]
    NotATarget { path: PathBuf, what: String },
    #[error("refusing to write to {}: no such device; pass --to-file to create a file", .0.display())]
    Missing(PathBuf),
    #[error("refusing to write to {}: it is partition {partition} of /dev/{disk}; flash the whole disk (/dev/{disk})", path.display())]
    Partition {
        path: PathBuf,
        partition: String,
        disk: String,
    },
    #[error("refusing to write to {}: it holds {mountpoint} (mounted from /dev/{dev}) — that is this machine's own disk", path.display())]
    SystemDisk {
        path: PathBuf,
        mountpoint: String,
        dev: String,
    },
    #[error("refusing to write to {}: /dev/{dev} is mounted at {mountpoint}; unmount it (and every partition of the disk) first", path.display())]
    Mounted {
        path: PathBuf,
        dev: String,
        mountpoint: String,
    },
    #[error("refusing to write to {}: /dev/{dev} is in use as swap; swapoff it first", path.display())]
    Swap { path: PathBuf, dev: String },
    #[error("refusing to write to {}: it is {} but the image needs {} ({} bytes)", path.display(), human(*size), human(*image_size), image_size)]
    TooSmall {
        path: PathBuf,
        size: u64,
        image_size: u64,
    },
    #[error("refusing to write to {}: it is the image being flashed", .0.display())]
    IsTheImage(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    BlockDevice,
    RegularFile,
    /// Does not exist yet (a file will be created with --to-file).
    Missing,
}

impl Kind {
    /// The machine value of `flash --json`'s `target_kind`.
    pub fn key(&self) -> &'static str {
        match self {
            Kind::BlockDevice => "block_device",
            Kind::RegularFile => "regular_file",
            Kind::Missing => "new_file",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PartInfo {
    pub name: String,
    pub size: u64,
    pub label: Option<String>,
}

/// A flash target as the kernel sees it.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    pub kind: Kind,
    /// Bytes (0 for a missing file).
    pub size: u64,
    /// Kernel name (`sdb`, `mmcblk0`, `loop3`) of a block device.
    pub name: Option<String>,
    /// `major:minor` of a block device.
    pub devno: Option<String>,
    /// Vendor and model (or the loop device's backing file).
    pub model: Option<String>,
    /// Set when the device is a partition: the disk's kernel name.
    pub parent: Option<String>,
    pub partitions: Vec<PartInfo>,
    pub removable: bool,
    /// (dev, inode) of a regular file.
    pub file_id: Option<(u64, u64)>,
}

impl Target {
    /// One line for the confirmation prompt and `--json` start event.
    pub fn describe(&self) -> String {
        match self.kind {
            Kind::RegularFile => format!(
                "{} (regular file, {})",
                self.path.display(),
                human(self.size)
            ),
            Kind::Missing => format!("{} (new file)", self.path.display()),
            Kind::BlockDevice => {
                let mut s = format!("{} ({}", self.path.display(), human(self.size));
                if let Some(m) = &self.model {
                    s.push_str(&format!(", {m}"));
                }
                if self.removable {
                    s.push_str(", removable");
                }
                s.push(')');
                s
            }
        }
    }
}

/// The host's state, read once: a view of sysfs (`sys` is normally `/sys`)
/// and the text of mountinfo and swaps.
#[derive(Debug, Clone)]
pub struct HostView {
    pub sys: PathBuf,
    pub mountinfo: String,
    pub swaps: String,
    pub system_mounts: Vec<String>,
}

impl HostView {
    pub fn current() -> HostView {
        let mut system_mounts: Vec<String> = SYSTEM_MOUNTS.iter().map(|s| s.to_string()).collect();
        if let Ok(extra) = std::env::var(EXTRA_SYSTEM_MOUNTS_ENV) {
            system_mounts.extend(extra.split(':').filter(|s| !s.is_empty()).map(String::from));
        }
        HostView {
            sys: PathBuf::from("/sys"),
            mountinfo: std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            swaps: std::fs::read_to_string("/proc/swaps").unwrap_or_default(),
            system_mounts,
        }
    }

    fn block_dir(&self, name: &str) -> Option<PathBuf> {
        let p = self.sys.join("class/block").join(name);
        p.exists().then_some(p)
    }

    fn read(&self, p: &Path) -> Option<String> {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Kernel name of the block device `maj:min`.
    pub fn name_of_devno(&self, devno: &str) -> Option<String> {
        let link = std::fs::read_link(self.sys.join("dev/block").join(devno)).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    /// The disk a partition belongs to (None for a whole disk).
    pub fn parent_disk(&self, name: &str) -> Option<String> {
        let dir = self.block_dir(name)?;
        if !dir.join("partition").exists() {
            return None;
        }
        let real = std::fs::canonicalize(&dir).ok()?;
        Some(real.parent()?.file_name()?.to_string_lossy().into_owned())
    }

    /// Partition names of a disk.
    pub fn partitions(&self, disk: &str) -> Vec<String> {
        let Some(dir) = self.block_dir(disk) else {
            return vec![];
        };
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .map(|r| {
                r.flatten()
                    .filter(|e| e.path().join("partition").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn list(&self, name: &str, sub: &str) -> Vec<String> {
        self.block_dir(name)
            .and_then(|d| std::fs::read_dir(d.join(sub)).ok())
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The disk, its partitions, and everything stacked on them (device
    /// mapper, md: `holders/`), transitively.
    pub fn family(&self, disk: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<String> = vec![disk.to_string()];
        todo.extend(self.partitions(disk));
        while let Some(n) = todo.pop() {
            if out.insert(n.clone()) {
                todo.extend(self.list(&n, "holders"));
            }
        }
        out
    }

    /// The whole disks under a device: itself if a disk, its disk if a
    /// partition, and for a stacked device (dm, md) the disks of its `slaves/`.
    pub fn disks_under(&self, name: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            let slaves = self.list(&n, "slaves");
            if !slaves.is_empty() {
                todo.extend(slaves);
            } else if let Some(p) = self.parent_disk(&n) {
                out.insert(p);
            } else {
                out.insert(n);
            }
        }
        out
    }

    /// Block device names behind each mount, with the mount point.
    pub fn mounts(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for m in parse_mountinfo(&self.mountinfo) {
            let mut names = BTreeSet::new();
            if let Some(n) = self.name_of_devno(&m.devno) {
                names.insert(n);
            }
            // btrfs and friends report an anonymous 0:N; their source names the device.
            if let Some(dev) = m.source.strip_prefix("/dev/")
                && let Ok(meta) = std::fs::metadata(&m.source)
                && meta.file_type().is_block_device()
            {
                let rdev = meta.rdev();
                let devno = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
                names.insert(
                    self.name_of_devno(&devno)
                        .unwrap_or_else(|| dev.to_string()),
                );
            }
            for n in names {
                v.push((n, m.mountpoint.clone()));
            }
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub devno: String,
    pub mountpoint: String,
    pub source: String,
}

/// Decodes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo` (proc(5)): `id parent maj:min root mountpoint
/// options [optional...] - fstype source superoptions`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            if f.len() < 5 || sep + 2 >= f.len() {
                return None;
            }
            Some(Mount {
                devno: f[2].to_string(),
                mountpoint: unescape(f[4]),
                source: unescape(f[sep + 2]),
            })
        })
        .collect()
}

/// Stats `path` and reads what sysfs knows about it. A path that does not
/// exist is [`Kind::Missing`].
pub fn probe(path: &Path, host: &HostView) -> Result<Target, Refusal> {
    let mut t = Target {
        path: path.to_path_buf(),
        kind: Kind::Missing,
        size: 0,
        name: None,
        devno: None,
        model: None,
        parent: None,
        partitions: vec![],
        removable: false,
        file_id: None,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(t),
    };
    let ft = meta.file_type();
    if ft.is_file() {
        t.kind = Kind::RegularFile;
        t.size = meta.len();
        t.file_id = Some((meta.dev(), meta.ino()));
        return Ok(t);
    }
    if !ft.is_block_device() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_char_device() {
            "a character device"
        } else {
            "a special file"
        };
        return Err(Refusal::NotATarget {
            path: path.into(),
            what: format!("it is {what}, not a block device or a regular file"),
        });
    }
    t.kind = Kind::BlockDevice;
    let rdev = meta.rdev();
    let devno = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
    let name = host
        .name_of_devno(&devno)
        .ok_or_else(|| Refusal::NotATarget {
            path: path.into(),
            what: format!("it is a block device ({devno}) that sysfs does not list"),
        })?;
    let dir = host.sys.join("class/block").join(&name);
    t.size = host
        .read(&dir.join("size"))
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        * 512;
    t.parent = host.parent_disk(&name);
    let vendor = host.read(&dir.join("device/vendor"));
    let model = host.read(&dir.join("device/model"));
    t.model = match (vendor, model) {
        (Some(v), Some(m)) => Some(format!("{v} {m}")),
        (None, Some(m)) | (Some(m), None) => Some(m),
        (None, None) => host
            .read(&dir.join("loop/backing_file"))
            .map(|b| format!("loop device backed by {b}")),
    };
    t.removable = host.read(&dir.join("removable")).as_deref() == Some("1");
    t.partitions = host
        .partitions(&name)
        .into_iter()
        .map(|p| PartInfo {
            size: host
                .read(&dir.join(&p).join("size"))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                * 512,
            label: label_of(&p),
            name: p,
        })
        .collect();
    t.devno = Some(devno);
    t.name = Some(name);
    Ok(t)
}

/// The filesystem label udev recorded for a partition, if any.
fn label_of(name: &str) -> Option<String> {
    let dir = std::fs::read_dir("/dev/disk/by-label").ok()?;
    for e in dir.flatten() {
        if std::fs::canonicalize(e.path()).ok()?.file_name()?.to_str() == Some(name) {
            return Some(unescape(
                &e.file_name().to_string_lossy().replace("\\x", "\\"),
            ));
        }
    }
    None
}

/// Every refusal that does not need the image: not a file without
/// `--to-file`, not a partition, not the system disk, nothing mounted, no
/// swap. `image` is the source file (a target must not be the image itself).
pub fn check_target(
    t: &Target,
    to_file: bool,
    image: &Path,
    host: &HostView,
) -> Result<(), Refusal> {
    match t.kind {
        Kind::Missing if to_file => return Ok(()),
        Kind::Missing => {
            return Err(Refusal::Missing(t.path.clone()));
        }
        Kind::RegularFile => {
            if !to_file {
                return Err(Refusal::RegularFile(t.path.clone()));
            }
            let same = std::fs::metadata(image).ok().map(|m| (m.dev(), m.ino()));
            if same.is_some() && same == t.file_id {
                return Err(Refusal::IsTheImage(t.path.clone()));
            }
            return Ok(());
        }
        Kind::BlockDevice => {}
    }
    let name = t.name.clone().unwrap_or_default();
    if let Some(disk) = &t.parent {
        return Err(Refusal::Partition {
            path: t.path.clone(),
            partition: name,
            disk: disk.clone(),
        });
    }
    let family = host.family(&name);
    let mounts = host.mounts();
    // The system disk first: it is the worst mistake and the most specific message.
    for sm in &host.system_mounts {
        for (dev, mp) in &mounts {
            if mp == sm && host.disks_under(dev).contains(&name) {
                return Err(Refusal::SystemDisk {
                    path: t.path.clone(),
                    mountpoint: mp.clone(),
                    dev: dev.clone(),
                });
            }
        }
    }
    for (dev, mp) in &mounts {
        if family.contains(dev) {
            return Err(Refusal::Mounted {
                path: t.path.clone(),
                dev: dev.clone(),
                mountpoint: mp.clone(),
            });
        }
    }
    for line in host.swaps.lines().skip(1) {
        let Some(src) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(dev) = src.strip_prefix("/dev/")
            && (family.contains(dev)
                || std::fs::canonicalize(src)
                    .ok()
                    .and_then(|p| {
                        p.file_name()
                            .map(|n| family.contains(n.to_str().unwrap_or("")))
                    })
                    .unwrap_or(false))
        {
            return Err(Refusal::Swap {
                path: t.path.clone(),
                dev: dev.to_string(),
            });
        }
    }
    Ok(())
}

/// A block device smaller than the image is refused; a file grows.
pub fn check_size(t: &Target, image_size: u64) -> Result<(), Refusal> {
    if t.kind == Kind::BlockDevice && t.size < image_size {
        return Err(Refusal::TooSmall {
            path: t.path.clone(),
            size: t.size,
            image_size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake sysfs: sda (sda1 mounted at /, sda2), sdb (sdb1), sdc holding
    /// a dm device mounted at /srv, vdb whole-disk mounted at /boot.
    fn fake() -> (tempfile::TempDir, HostView) {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        let dev = |name: &str, parent: Option<&str>, devno: &str| {
            let real = match parent {
                Some(p) => sys.join("devices/virtual/block").join(p).join(name),
                None => sys.join("devices/virtual/block").join(name),
            };
            std::fs::create_dir_all(real.join("holders")).unwrap();
            std::fs::create_dir_all(real.join("slaves")).unwrap();
            std::fs::write(real.join("size"), "2048\n").unwrap();
            if parent.is_some() {
                std::fs::write(real.join("partition"), "1\n").unwrap();
            }
            std::fs::create_dir_all(sys.join("class/block")).unwrap();
            std::fs::create_dir_all(sys.join("dev/block")).unwrap();
            symlink(&real, sys.join("class/block").join(name)).unwrap();
            symlink(&real, sys.join("dev/block").join(devno)).unwrap();
            real
        };
        dev("sda", None, "8:0");
        dev("sda1", Some("sda"), "8:1");
        dev("sda2", Some("sda"), "8:2");
        dev("sdb", None, "8:16");
        dev("sdb1", Some("sdb"), "8:17");
        let sdc = dev("sdc", None, "8:32");
        let dm = dev("dm-0", None, "254:0");
        symlink(sys.join("class/block/dm-0"), sdc.join("holders/dm-0")).unwrap();
        symlink(sys.join("class/block/sdc"), dm.join("slaves/sdc")).unwrap();
        dev("vdb", None, "253:16");
        let mountinfo = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 254:0 / /srv rw - xfs /dev/mapper/data rw
24 22 253:16 / /boot rw - ext4 /dev/vdb rw
25 22 0:30 / /tmp\\040dir rw - tmpfs tmpfs rw
";
        let host = HostView {
            sys: sys.to_path_buf(),
            mountinfo: mountinfo.into(),
            swaps: "Filename Type Size Used Priority\n/dev/sdb1 partition 100 0 -2\n".into(),
            system_mounts: SYSTEM_MOUNTS.iter().map(|s| s.to_string()).collect(),
        };
        (d, host)
    }

    fn block(host: &HostView, name: &str) -> Target {
        Target {
            path: PathBuf::from(format!("/dev/{name}")),
            kind: Kind::BlockDevice,
            size: 1 << 30,
            name: Some(name.into()),
            devno: None,
            model: None,
            parent: host.parent_disk(name),
            partitions: vec![],
            removable: false,
            file_id: None,
        }
    }

    #[test]
    fn mountinfo_is_parsed_with_escapes() {
        let m =
            parse_mountinfo("25 22 0:30 / /tmp\\040dir rw shared:3 master:1 - tmpfs tmpfs rw\n");
        assert_eq!(
            m,
            vec![Mount {
                devno: "0:30".into(),
                mountpoint: "/tmp dir".into(),
                source: "tmpfs".into()
            }]
        );
    }

    #[test]
    fn refusals_on_a_fake_host() {
        let (_d, host) = fake();
        let img = Path::new("/nonexistent.img");
        let e = check_target(&block(&host, "sda"), false, img, &host).unwrap_err();
        assert!(
            matches!(&e, Refusal::SystemDisk { mountpoint, dev, .. } if mountpoint == "/" && dev == "sda1"),
            "{e}"
        );
        assert!(
            e.to_string().contains("/dev/sda") && e.to_string().contains("holds /"),
            "{e}"
        );
        let e = check_target(&block(&host, "vdb"), false, img, &host).unwrap_err();
        assert!(
            matches!(&e, Refusal::SystemDisk { mountpoint, .. } if mountpoint == "/boot"),
            "{e}"
        );
        let e = check_target(&block(&host, "sda2"), false, img, &host).unwrap_err();
        assert!(
            matches!(&e, Refusal::Partition { disk, .. } if disk == "sda"),
            "{e}"
        );
        let e = check_target(&block(&host, "sdc"), false, img, &host).unwrap_err();
        assert!(
            matches!(&e, Refusal::Mounted { dev, mountpoint, .. } if dev == "dm-0" && mountpoint == "/srv"),
            "{e}"
        );
        let e = check_target(&block(&host, "sdb"), false, img, &host).unwrap_err();
        assert!(
            matches!(&e, Refusal::Swap { dev, .. } if dev == "sdb1"),
            "{e}"
        );
        let mut quiet = host.clone();
        quiet.swaps.clear();
        check_target(&block(&quiet, "sdb"), false, img, &quiet).unwrap();
        assert_eq!(
            host.disks_under("dm-0"),
            BTreeSet::from(["sdc".to_string()])
        );
    }

    #[test]
    fn files_need_to_file_and_devices_need_room() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("t.img");
        std::fs::write(&f, b"x").unwrap();
        let host = HostView {
            sys: d.path().into(),
            mountinfo: String::new(),
            swaps: String::new(),
            system_mounts: vec![],
        };
        let t = probe(&f, &host).unwrap();
        assert_eq!(t.kind, Kind::RegularFile);
        assert_eq!(
            check_target(&t, false, Path::new("/x.img"), &host),
            Err(Refusal::RegularFile(f.clone()))
        );
        check_target(&t, true, Path::new("/x.img"), &host).unwrap();
        assert_eq!(
            check_target(&t, true, &f, &host),
            Err(Refusal::IsTheImage(f.clone()))
        );
        let missing = probe(&d.path().join("new.img"), &host).unwrap();
        assert_eq!(missing.kind, Kind::Missing);
        assert!(check_target(&missing, false, Path::new("/x.img"), &host).is_err());
        let e = probe(d.path(), &host).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        check_size(&t, 1 << 40).unwrap();
        let (_f, fake_host) = fake();
        let mut small = block(&fake_host, "sdb");
        small.size = 1000;
        let e = check_size(&small, 4096).unwrap_err();
        assert!(
            e.to_string().contains("/dev/sdb") && e.to_string().contains("4096 bytes"),
            "{e}"
        );
    }
}
