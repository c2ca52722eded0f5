//! The data partition: an ext4 holding the image's /var, marked seeded
//! (`populate`, see data_seed.rs; with SELinux a copy, labelled afterwards by
//! selinux/ext4.rs). It starts small; first boot grows it to the medium.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd::{self, Cmd};
use crate::ids::Uuid;

pub fn make(
    out: &Path,
    size: u64,
    label: &str,
    uuid: Uuid,
    hash_seed: Uuid,
    epoch: u64,
    populate: Option<&Path>,
) -> Result<()> {
    let f =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    f.set_len(size)?;
    drop(f);
    Cmd::new(cmd::MKE2FS)
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", label])
        .arg("-U")
        .arg(uuid.to_string())
        // hash_seed and the faked clock make the bytes reproducible; resize_inode
        // reserve lets first boot grow it far online.
        .arg("-E")
        .arg(format!(
            "hash_seed={hash_seed},lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0"
        ))
        .args(populate.map(|d| format!("-d{}", d.display())))
        .arg(out)
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .run()
        .context("making the ext4 data filesystem failed")?;
    if let Some(dir) = populate {
        pin_ctimes(out, dir, epoch)?;
    }
    Ok(())
}

/// `mke2fs -d` copies each file's ctime from the source tree, i.e. the time
/// the build wrote it (no call can set a ctime), and symbolic links' atimes
/// (which std cannot set), so two builds of the same inputs differed.
/// debugfs sets those to `epoch`, the time mke2fs writes everywhere else
/// (E2FSPROGS_FAKE_TIME).
fn pin_ctimes(fs: &Path, dir: &Path, epoch: u64) -> Result<()> {
    let mut script = format!("sif / ctime @{epoch}\n");
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .with_context(|| format!("cannot read {}", d.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let rel = e.path();
            let rel = rel.strip_prefix(dir).expect("under dir");
            let rel = rel
                .to_str()
                .with_context(|| format!("{}: file name is not UTF-8", e.path().display()))?;
            // debugfs splits its command lines on blanks and takes quotes.
            if rel.contains(['"', '\n', '\\']) {
                anyhow::bail!(
                    "{}: a quote, backslash or newline in a /var file name cannot go on the data partition",
                    e.path().display()
                );
            }
            let ft = e.file_type()?;
            // Symbolic links' atime and mtime too: nothing on the host sets
            // them (tar leaves the atime at the time it unpacked the base).
            let fields: &[&str] = if ft.is_symlink() {
                &["ctime", "atime", "mtime"]
            } else {
                &["ctime"]
            };
            for f in fields {
                script.push_str(&format!("sif \"/{rel}\" {f} @{epoch}\n"));
            }
            if ft.is_dir() {
                todo.push(e.path());
            }
        }
    }
    run_debugfs(fs, &script, epoch)
        .context("setting the data partition's inode times with debugfs failed")
}

/// Runs `script` (debugfs commands, one per line) read-write on the ext4
/// image file `image`, with debugfs' clock at `epoch` (the superblock write
/// time, and what it stamps on inodes it changes). The one place the build
/// edits an ext4 image without mounting it (inode times here, SELinux labels
/// in selinux/ext4.rs). debugfs goes on after a failed command and exits 0:
/// its complaints on stderr (besides its version banner) are the errors.
pub fn run_debugfs(image: &Path, script: &str, epoch: u64) -> Result<()> {
    let cmds = image.with_extension("debugfs");
    std::fs::write(&cmds, script).with_context(|| format!("cannot write {}", cmds.display()))?;
    let out = Cmd::new(cmd::DEBUGFS)
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(image)
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .run()?;
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs 1."))
        .collect();
    anyhow::ensure!(
        errors.is_empty(),
        "debugfs -f {} on {}:\n  {}",
        cmds.display(),
        image.display(),
        errors.join("\n  ")
    );
    std::fs::remove_file(&cmds)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populated_inodes_get_the_epoch_as_ctime() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("var");
        std::fs::create_dir_all(src.join("lib/a dir")).unwrap();
        std::fs::write(src.join("lib/a dir/f"), "x").unwrap();
        std::os::unix::fs::symlink("f", src.join("lib/a dir/l")).unwrap();
        let img = d.path().join("data.ext4");
        let epoch = 1_234_567_890;
        let id = Uuid::derive("t", "data");
        make(&img, 16 << 20, "t", id, id, epoch, Some(&src)).unwrap();
        for p in ["/", "/lib", "/lib/a dir", "/lib/a dir/f", "/lib/a dir/l"] {
            let out = Cmd::new(cmd::DEBUGFS)
                .arg("-R")
                .arg(format!("stat \"{p}\""))
                .arg(&img)
                .run()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(&format!(" ctime: {epoch:#010x}:")),
                "{p}: {text}"
            );
            if p.ends_with("/l") {
                for f in ["atime", "mtime"] {
                    assert!(
                        text.contains(&format!(" {f}: {epoch:#010x}:")),
                        "{p} {f}: {text}"
                    );
                }
            }
        }
        assert!(!img.with_extension("debugfs").exists());
    }
}
