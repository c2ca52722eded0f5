//! `/etc/.updated` and `/var/.updated`: the build has already done what
//! systemd's `ConditionNeedsUpdate=` units would do on the device's first boot.
//!
//! Debian's packages build the dynamic linker cache, the journal catalog and
//! the hwdb, and create their system users, while the base is bootstrapped.
//! Without the stamps, systemd compares /usr's mtime with stamps that do not
//! exist and runs ldconfig, journalctl --update-catalog, systemd-sysusers and
//! systemd-update-done again on every device's first boot: all before
//! sysinit.target, so before the network and sshd (about a second of CPU
//! under QEMU TCG, on a slow board too). With the stamps at the image's epoch
//! (the EROFS root gives /usr that same mtime) they are skipped. After an A/B
//! update the new root's /usr is newer than the data partition's stamp, so
//! they run then, as on any Debian system after an upgrade.
//!
//! Not when an overlay adds what those tools read (a shared library,
//! ld.so.conf.d, sysusers.d, hwdb.d, a catalog): the first boot then runs
//! them (the caveat of systemd/mkosi#3338).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Where the tools behind those units read their input (relative to the root).
const UPDATE_INPUTS: &[&str] = &[
    "etc/ld.so.conf",
    "etc/sysusers.d/",
    "usr/lib/sysusers.d/",
    "etc/udev/hwdb.d/",
    "usr/lib/udev/hwdb.d/",
    "usr/lib/systemd/catalog/",
];

/// Whether an overlay file is input of ldconfig (a shared library, or its
/// configuration), sysusers, hwdb or the journal catalog.
fn needs_device_update(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so")
        || name.contains(".so.")
        || UPDATE_INPUTS.iter().any(|p| path.starts_with(p))
}

/// The first overlay file that needs the device's own update units, if any.
pub fn blocking_overlay_file(overlay_files: &[String]) -> Option<&str> {
    overlay_files
        .iter()
        .map(String::as_str)
        .find(|f| needs_device_update(f))
}

/// The stamps, relative to the root.
pub const STAMPS: [&str; 2] = ["etc/.updated", "var/.updated"];

/// Writes both stamps with mtime `epoch` (what systemd-update-done would
/// write: a `TIMESTAMP_NSEC=` line).
pub fn write(tree: &Path, epoch: u64) -> Result<()> {
    let text = format!(
        "# edgeimg: written by the build, which already did what the ConditionNeedsUpdate= units do.\n\
         TIMESTAMP_NSEC={}\n",
        u128::from(epoch) * 1_000_000_000
    );
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    let root = super::in_root::InRoot::open(tree)?;
    for rel in STAMPS {
        let rel = Path::new(rel);
        let mut f = root.create(rel, 0o644)?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.set_modified(when))
            .with_context(|| format!("cannot write {}", root.show(rel).display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn stamps_carry_the_epoch() {
        let t = tempfile::tempdir().unwrap();
        for d in ["etc", "var"] {
            std::fs::create_dir(t.path().join(d)).unwrap();
        }
        write(t.path(), 1_700_000_000).unwrap();
        for d in ["etc", "var"] {
            let p = t.path().join(d).join(".updated");
            assert_eq!(std::fs::metadata(&p).unwrap().mtime(), 1_700_000_000);
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(
                text.contains("\nTIMESTAMP_NSEC=1700000000000000000\n"),
                "{text}"
            );
        }
    }

    #[test]
    fn overlays_with_libraries_or_sysusers_keep_the_device_updates() {
        let files = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Units, scripts and configuration do not need them.
        let plain = files(&[
            "etc/motd",
            "usr/lib/systemd/system/app.service",
            "usr/local/libexec/app",
            "usr/local/bin/tool",
        ]);
        assert_eq!(blocking_overlay_file(&plain), None);
        assert_eq!(
            blocking_overlay_file(&files(&[
                "etc/motd",
                "usr/lib/x86_64-linux-gnu/libfoo.so.1"
            ])),
            Some("usr/lib/x86_64-linux-gnu/libfoo.so.1")
        );
        for f in [
            "usr/local/lib/libbar.so",
            "etc/ld.so.conf.d/app.conf",
            "etc/sysusers.d/app.conf",
            "usr/lib/sysusers.d/app.conf",
            "etc/udev/hwdb.d/70-app.hwdb",
            "usr/lib/systemd/catalog/app.catalog",
        ] {
            assert!(blocking_overlay_file(&files(&[f])).is_some(), "{f}");
        }
    }
}
