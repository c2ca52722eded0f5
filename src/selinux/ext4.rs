//! SELinux labels into an ext4 image file, without mounting it and without
//! xattrs on the host (so unprivileged builds can): debugfs `ea_set` per
//! inode. Used for the data partition, which `mke2fs -d` makes from an
//! unlabelled seed (label.rs computes the labels).

use std::path::Path;

use anyhow::{Context, Result};

/// Writes each path's `security.selinux` into the ext4 image file `image`
/// (debugfs `ea_set`, no mount, no xattr on the host: works unprivileged) and
/// pins its access, change and modification times to `epoch` (mke2fs -d
/// copies the seed's, whose change times are the build's). `labels` are
/// absolute paths in the filesystem; `None` leaves a path unlabelled. The
/// values carry the trailing NUL the kernel and libselinux store.
pub fn set_labels(image: &Path, labels: &[(String, Option<String>)], epoch: u64) -> Result<()> {
    let dir = image.with_extension("labels");
    std::fs::create_dir_all(&dir)?;
    // ea_set -f reads the value from a file: one per distinct label.
    let mut values = std::collections::BTreeMap::new();
    // debugfs stamps what it changes with its clock: make that the epoch too.
    let mut script = format!("set_current_time @{epoch}\n");
    for (path, label) in labels {
        anyhow::ensure!(
            !path.contains(['"', '\\']) && !path.chars().any(char::is_control),
            "cannot label {path:?} in the data partition: debugfs cannot name it"
        );
        if let Some(l) = label {
            let n = values.len();
            let file = values
                .entry(l.clone())
                .or_insert_with(|| dir.join(format!("{n}")));
            script.push_str(&format!(
                "ea_set -f \"{}\" \"{path}\" security.selinux\n",
                file.display()
            ));
        }
        for t in ["atime", "mtime", "ctime"] {
            script.push_str(&format!("sif \"{path}\" {t} @{epoch}\n"));
        }
    }
    for (label, file) in &values {
        let mut v = label.as_bytes().to_vec();
        v.push(0);
        std::fs::write(file, v)?;
    }
    crate::fs::ext4::run_debugfs(image, &script, epoch)
        .context("labelling the ext4 data filesystem failed")?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Labels land on the named inodes with the kernel's trailing NUL, times
    /// are the epoch, and two runs at different wall-clock times give the
    /// same bytes.
    #[test]
    fn set_labels_writes_xattrs_and_pins_times() {
        if crate::cmd::which("debugfs").is_none() {
            eprintln!("SKIPPED: no debugfs (e2fsprogs)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let seed = t.path().join("seed");
        std::fs::create_dir_all(seed.join("lib/a")).unwrap();
        std::fs::write(seed.join("lib/a/f"), b"x").unwrap();
        let labels = vec![
            (
                "/".to_string(),
                Some("system_u:object_r:var_t:s0".to_string()),
            ),
            ("/lib".to_string(), None),
            (
                "/lib/a".to_string(),
                Some("system_u:object_r:a_t:s0".to_string()),
            ),
            (
                "/lib/a/f".to_string(),
                Some("system_u:object_r:a_t:s0".to_string()),
            ),
        ];
        let make = |name: &str| {
            let img = t.path().join(name);
            let u = crate::ids::Uuid([7; 16]);
            crate::fs::ext4::make(&img, 16 << 20, "d", u, u, 1_750_000_000, Some(&seed)).unwrap();
            super::set_labels(&img, &labels, 1_750_000_000).unwrap();
            img
        };
        let a = make("a.ext4");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = make("b.ext4");
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
        let dbg = |req: &str| {
            let o = std::process::Command::new(crate::cmd::which("debugfs").unwrap())
                .arg("-R")
                .arg(req)
                .arg(&a)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        assert!(
            dbg("ea_get /lib/a/f security.selinux").contains("= \"system_u:object_r:a_t:s0\\000\""),
            "{}",
            dbg("ea_get /lib/a/f security.selinux")
        );
        assert!(!dbg("ea_list /lib").contains("selinux"), "/lib labelled");
        let stat = dbg("stat /lib/a/f");
        for t in ["ctime", "atime", "mtime"] {
            assert!(
                stat.contains(&format!("{t}: 0x684ee180:00000000")),
                "{t} not pinned:\n{stat}"
            );
        }
    }
}
