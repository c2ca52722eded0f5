//! Labels without xattrs on the host, so root and unprivileged builds label
//! the same way and give the same bytes (a user namespace may not write
//! `security.*` xattrs on the host's filesystems):
//! - the EROFS root: `mkfs.erofs --file-contexts` looks every file up in the
//!   image's own file contexts while it writes the image (fs::erofs);
//! - the data partition: `mke2fs -d` from an unlabelled seed (a copy of
//!   /var), then each inode's `security.selinux` is written into the ext4
//!   image file by debugfs (selinux::ext4::set_labels), the labels looked up with
//!   the host's `matchpathcon -f` in the same file contexts.
//!
//! Both look-ups are libselinux' `selabel_lookup` with the file's type, which
//! is what `setfiles` does: the labels are those `setfiles` would write
//! (`<<none>>` entries leave a file unlabelled, as `setfiles` does).
//!
//! The initramfs' first-boot seeding (busybox cp -a) would drop labels, so a
//! labelled data partition is made at build time, marked as already seeded.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cmd::{self, Cmd};
// What the initramfs would make on a new data partition, and its "already
// seeded" marker: the same as an unlabelled build's seed.
use crate::fs::data_seed::{DATA_DIRS, SEEDED_MARKER};

/// Where the data partition is mounted on the device: its paths' labels are
/// looked up under this prefix.
pub const DATA_MOUNT: &str = "/var";
/// mke2fs makes it on every ext4; not in the seed, labelled all the same.
const LOST_FOUND: &str = "lost+found";

/// The image's text file contexts (after `semodule` rebuilt them with the
/// installed modules), copied into `dir` without their compiled `.bin`
/// twins: those are in trixie's format, which the host's libselinux may not
/// read, and libselinux prefers a `.bin` that is newer than its text file.
/// Returns the path of the copied `file_contexts` (its `.homedirs`, `.local`
/// and `.subs*` companions sit beside it, where libselinux looks for them).
pub fn file_contexts(tree: &Path, dir: &Path) -> Result<PathBuf> {
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

/// The data partition's content: a copy of the root's /var plus the /etc
/// overlay's directories and the "already seeded" marker. (mke2fs -d copies
/// the files' times; selinux::ext4::set_labels pins them to the epoch after.)
pub fn data_seed(tree: &Path, seed: &Path) -> Result<()> {
    std::fs::create_dir_all(seed)?;
    let archive = seed.with_extension("tar");
    // Through tar like the base unpack: owners and modes kept as they are.
    Cmd::new(cmd::TAR)
        .args(["--numeric-owner", "-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(tree.join("var"))
        .arg(".")
        .run()
        .context("copying the root's /var for the data partition failed")?;
    crate::stage::unpack(&archive, seed)?;
    std::fs::remove_file(&archive)?;
    for d in DATA_DIRS {
        std::fs::create_dir_all(seed.join(d))?;
    }
    std::fs::write(seed.join(SEEDED_MARKER), b"")?;
    Ok(())
}

/// Kinds of file, as `matchpathcon -m` names them.
fn kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "lnk_file"
    } else if ft.is_fifo() {
        "pipe" // not "fifo_file": matchpathcon reads only the first letter
    } else if ft.is_socket() {
        "sock_file"
    } else if ft.is_char_device() {
        "chr_file"
    } else if ft.is_block_device() {
        "blk_file"
    } else {
        "file"
    }
}

/// Every path of the data partition made from `seed` ("/" is its root,
/// mounted at [`DATA_MOUNT`]) with its label from `file_contexts` (`None`:
/// `<<none>>`, left unlabelled). Sorted, so the debugfs script and the
/// image bytes do not depend on the order the host lists directories in.
pub fn data_labels(seed: &Path, file_contexts: &Path) -> Result<Vec<(String, Option<String>)>> {
    let mut paths = vec![("/".to_string(), "dir")];
    let mut todo = vec![seed.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let e = e?;
            let ft = e.file_type()?;
            let rel = e.path().strip_prefix(seed)?.to_path_buf();
            let rel = rel.to_str().with_context(|| {
                format!(
                    "{}: a file name that is not UTF-8 cannot be labelled",
                    e.path().display()
                )
            })?;
            paths.push((format!("/{rel}"), kind(ft)));
            if ft.is_dir() {
                todo.push(e.path());
            }
        }
    }
    paths.push((format!("/{LOST_FOUND}"), "dir"));
    paths.sort();
    let mut labels = vec![None; paths.len()];
    for k in [
        "dir",
        "file",
        "lnk_file",
        "pipe",
        "sock_file",
        "chr_file",
        "blk_file",
    ] {
        let idx: Vec<usize> = (0..paths.len()).filter(|&i| paths[i].1 == k).collect();
        for chunk in idx.chunks(500) {
            let full: Vec<String> = chunk
                .iter()
                .map(|&i| match paths[i].0.as_str() {
                    "/" => DATA_MOUNT.to_string(),
                    p => format!("{DATA_MOUNT}{p}"),
                })
                .collect();
            for (&i, label) in chunk.iter().zip(lookup(file_contexts, k, &full)?) {
                labels[i] = label;
            }
        }
    }
    Ok(paths.into_iter().map(|(p, _)| p).zip(labels).collect())
}

/// `matchpathcon -n -f FILE_CONTEXTS -m KIND PATH...`: one context per path,
/// in order; `<<none>>` becomes `None`. `-m` also keeps matchpathcon from
/// looking at the host's file of the same name.
fn lookup(file_contexts: &Path, kind: &str, paths: &[String]) -> Result<Vec<Option<String>>> {
    let out = Cmd::new(cmd::MATCHPATHCON)
        .arg("-n")
        .arg("-f")
        .arg(file_contexts)
        .args(["-m", kind])
        .args(paths)
        .run()
        .context("looking up the data partition's SELinux labels failed")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    anyhow::ensure!(
        lines.len() == paths.len(),
        "matchpathcon gave {} labels for {} paths (a file name with a line break?)",
        lines.len(),
        paths.len()
    );
    Ok(lines
        .into_iter()
        .map(|l| (l != "<<none>>").then(|| l.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    /// Labels by file type and `<<none>>`, looked up under /var, sorted.
    #[test]
    fn data_labels_follow_type_and_none_entries() {
        if crate::cmd::which("matchpathcon").is_none() {
            eprintln!("SKIPPED: no matchpathcon (selinux-utils)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let fc = t.path().join("file_contexts");
        std::fs::write(
            &fc,
            "/var(/.*)?\tsystem_u:object_r:var_t:s0\n\
             /var/x\t--\tsystem_u:object_r:file_x_t:s0\n\
             /var/x\t-d\tsystem_u:object_r:dir_x_t:s0\n\
             /var/link\t-l\tsystem_u:object_r:link_t:s0\n\
             /var/lost\\+found\t-d\tsystem_u:object_r:lost_found_t:s0\n\
             /var/d/.+\t<<none>>\n",
        )
        .unwrap();
        let seed = t.path().join("seed");
        std::fs::create_dir_all(seed.join("x")).unwrap();
        std::fs::create_dir_all(seed.join("d/e")).unwrap();
        std::fs::write(seed.join("d/e/f"), b"").unwrap();
        symlink("x", seed.join("link")).unwrap();
        let got = super::data_labels(&seed, &fc).unwrap();
        let ctx = |t: &str| Some(format!("system_u:object_r:{t}:s0"));
        assert_eq!(
            got,
            vec![
                ("/".to_string(), ctx("var_t")),
                ("/d".to_string(), ctx("var_t")),
                ("/d/e".to_string(), None),
                ("/d/e/f".to_string(), None),
                ("/link".to_string(), ctx("link_t")),
                ("/lost+found".to_string(), ctx("lost_found_t")),
                ("/x".to_string(), ctx("dir_x_t")),
            ]
        );
    }
}
