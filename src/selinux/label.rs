//! Labels on the host: `setfiles` writes every file's `security.selinux` xattr
//! into the staged root (mkfs.erofs carries xattrs into the image) and into a
//! copy of /var the data partition is made from (mke2fs -d carries them too).
//! The initramfs' first-boot seeding (busybox cp -a) would drop labels, so a
//! labelled data partition is made at build time, marked as already seeded.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd::{self, Cmd};

/// Made in the data seed besides /var's content: what the initramfs script
/// (local-bottom-edgeimg) would create on the first boot, relative to /var.
const DATA_DIRS: &[&str] = &[
    "lib/edgeimg/etc-overlay",
    "lib/edgeimg/etc-overlay/upper",
    "lib/edgeimg/etc-overlay/work",
];
/// Its "already seeded" marker: the initramfs then leaves the partition alone.
const SEEDED_MARKER: &str = "lib/edgeimg/var-seeded";

pub fn label_root_and_seed(tree: &Path, seed: &Path, epoch: u64) -> Result<()> {
    let var = tree.join("var");
    // The data partition's own directories are labelled with the rest: made
    // inside the root's /var for setfiles, copied out, removed again.
    let mut made = Vec::new();
    for d in DATA_DIRS {
        let p = var.join(d);
        if !p.exists() {
            std::fs::create_dir_all(&p)?;
            made.push(p);
        }
    }
    let marker = var.join(SEEDED_MARKER);
    std::fs::write(&marker, b"")?;
    made.push(marker);

    let specs = spec_copy(tree, &seed.with_extension("contexts"))?;
    Cmd::new(cmd::SETFILES)
        // -m: no /proc/mounts look-up (the tree is no mount); -F: reset even
        // customizable types; -r: paths in the spec are relative to the tree.
        .args(["-m", "-F", "-r"])
        .arg(tree)
        .arg(&specs)
        .arg(tree)
        .run()
        .context("labelling the root tree with setfiles failed")?;

    // The seed: /var with every xattr, through tar like the base unpack.
    std::fs::create_dir_all(seed)?;
    let archive = seed.with_extension("tar");
    Cmd::new(cmd::TAR)
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(&var)
        .arg(".")
        .run()
        .context("copying the labelled /var failed")?;
    crate::stage::unpack(&archive, seed)?;
    std::fs::remove_file(&archive)?;
    // mke2fs -d keeps the files' times: pin them like the EROFS (-T) for
    // reproducible bytes.
    set_times(seed, epoch)?;
    for p in made.iter().rev() {
        if p.is_dir() {
            std::fs::remove_dir(p)?;
        } else {
            std::fs::remove_file(p)?;
        }
    }
    Ok(())
}

/// The image's text file contexts, copied out without their compiled `.bin`
/// twins: those are in trixie's format, which the host's libselinux may not read.
fn spec_copy(tree: &Path, dir: &Path) -> Result<std::path::PathBuf> {
    let src = tree
        .join("etc/selinux")
        .join(super::POLICY_TYPE)
        .join("contexts/files");
    std::fs::create_dir_all(dir)?;
    for e in std::fs::read_dir(&src).with_context(|| format!("cannot read {}", src.display()))? {
        let e = e?;
        let n = e.file_name();
        let n = n.to_string_lossy();
        if n.starts_with("file_contexts") && !n.ends_with(".bin") && e.file_type()?.is_file() {
            std::fs::copy(e.path(), dir.join(&*n))?;
        }
    }
    Ok(dir.join("file_contexts"))
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
                    .open(e.path())?
                    .set_times(times)?;
            }
        }
        std::fs::File::open(&d)?.set_times(times)?;
    }
    Ok(())
}
