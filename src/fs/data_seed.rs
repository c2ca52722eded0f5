//! The data partition's first content, made by the build: the image's /var
//! plus what the initramfs (local-bottom-edgeimg) makes on an empty data
//! partition: the /etc overlay's directories and the "already seeded"
//! marker. The initramfs then only mounts it. Without it, the device's first
//! boot copied /var (~800 files on x86_64) out of the compressed root with
//! busybox `cp -a` and synced twice before systemd could start: about a
//! second under QEMU TCG, more on an SD card. (SELinux images get the same,
//! labelled, from `selinux::label`.)

use std::path::Path;

use anyhow::{Context, Result};

/// What the initramfs creates on a new data partition, relative to /var.
pub const DATA_DIRS: &[&str] = &[
    "lib/edgeimg/etc-overlay",
    "lib/edgeimg/etc-overlay/upper",
    "lib/edgeimg/etc-overlay/work",
];
/// The initramfs' "already seeded" marker, relative to /var.
pub const SEEDED_MARKER: &str = "lib/edgeimg/var-seeded";

/// Turns the staged tree's `var` directory into the data partition's content,
/// in place: call it only once the root filesystem has been made from the
/// tree (these additions belong on the data partition, not in the root).
/// Every time is pinned to `epoch` (mke2fs -d keeps them) for reproducible bytes.
pub fn prepare_in_place(var: &Path, epoch: u64) -> Result<()> {
    for d in DATA_DIRS {
        let p = var.join(d);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    let marker = var.join(SEEDED_MARKER);
    std::fs::write(&marker, b"").with_context(|| format!("cannot write {}", marker.display()))?;
    set_times(var, epoch)
}

/// Sets every file's and directory's access and modification time under
/// `dir` to `epoch` (symbolic links keep theirs: no portable call for them).
fn set_times(dir: &Path, epoch: u64) -> Result<()> {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    let times = std::fs::FileTimes::new().set_accessed(t).set_modified(t);
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                todo.push(e.path());
            } else if ft.is_file() {
                std::fs::File::options()
                    .write(true)
                    .open(e.path())
                    .and_then(|f| f.set_times(times))
                    .with_context(|| format!("cannot set the times of {}", e.path().display()))?;
            }
        }
        std::fs::File::open(&d)
            .and_then(|f| f.set_times(times))
            .with_context(|| format!("cannot set the times of {}", d.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn adds_the_initramfs_dirs_and_marker_and_pins_times() {
        let d = tempfile::tempdir().unwrap();
        let var = d.path().join("var");
        std::fs::create_dir_all(var.join("lib/dpkg")).unwrap();
        std::fs::write(var.join("lib/dpkg/status"), "x").unwrap();
        prepare_in_place(&var, 1_700_000_000).unwrap();
        for p in DATA_DIRS {
            assert!(var.join(p).is_dir(), "{p}");
        }
        assert!(var.join(SEEDED_MARKER).is_file());
        for p in ["lib/dpkg/status", "lib/edgeimg", SEEDED_MARKER, ""] {
            let m = std::fs::metadata(var.join(p)).unwrap();
            assert_eq!(m.mtime(), 1_700_000_000, "{p}");
        }
        // Idempotent (a rerun over an already prepared tree).
        prepare_in_place(&var, 1_700_000_000).unwrap();
    }
}
