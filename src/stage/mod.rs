//! Composes the root tree of the image: the cached base unpacked, then the
//! immutable-layout fixes, the agent and its units, board files and the
//! operator's overlays. Produces the tree plus the boot files taken out of it.

pub mod bundle_files;
pub mod compose;
pub mod in_root;
pub mod k3s;
pub mod modules;
pub mod overlay;
pub mod system;
pub mod update_stamps;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cmd::{self, Cmd};

/// Kernel and initrd found in the base tree (moved out of the root: they live
/// on the boot partition).
#[derive(Debug, Clone)]
pub struct KernelFiles {
    pub version: String,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
}

/// Unpacks the base tarball into `tree` (which must be empty), keeping owners,
/// modes and xattrs. The device nodes mmdebstrap puts in /dev are left out:
/// devtmpfs provides /dev on the device, and a rootless build (in a user
/// namespace) cannot make device nodes, so root builds leave them out too and
/// both give the same bytes.
pub fn unpack(base_tar: &Path, tree: &Path) -> Result<()> {
    std::fs::create_dir_all(tree)?;
    Cmd::new(cmd::TAR)
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*"])
        .arg("--exclude=./dev/*")
        .arg("-xpf")
        .arg(base_tar)
        .arg("-C")
        .arg(tree)
        .run()
        .context("unpacking the base root filesystem failed")?;
    Ok(())
}

/// Moves the kernel and initrd out of `tree/boot` into `dest`.
pub fn take_kernel(tree: &Path, dest: &Path) -> Result<KernelFiles> {
    // The kernel is moved out of the tree's own /boot, never through a link
    // in the base pointing at the build host's.
    let root = in_root::InRoot::open(tree)?;
    let boot = root
        .host_dir(Path::new("boot"))?
        .with_context(|| format!("{} is not a directory", tree.join("boot").display()))?;
    let mut versions: Vec<String> = std::fs::read_dir(&boot)
        .with_context(|| format!("cannot read {}", boot.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string))
        .collect();
    versions.sort();
    let version = versions
        .pop()
        .context("the base root has no kernel in /boot (is the board's kernel_package right?)")?;
    if !versions.is_empty() {
        tracing::warn!("several kernels in the base; using {version}");
    }
    std::fs::create_dir_all(dest)?;
    let vmlinuz = dest.join("vmlinuz");
    let initrd = dest.join("initrd.img");
    // Each a regular file inside the tree (a link to the build host's own
    // kernel is refused), both checked before either is moved; one reached
    // through a link inside the tree is copied, so `dest` gets the file.
    let from = |name: &str| {
        root.host_file(&Path::new("boot").join(format!("{name}-{version}")))?
            .with_context(|| format!("the base root has no {name}-{version} in /boot"))
    };
    let (from_vmlinuz, from_initrd) = (from("vmlinuz")?, from("initrd.img")?);
    move_file(&from_vmlinuz, &vmlinuz)?;
    move_file(&from_initrd, &initrd)?;
    Ok(KernelFiles {
        version,
        vmlinuz,
        initrd,
    })
}

fn move_file(from: &Path, to: &Path) -> Result<()> {
    let link = std::fs::symlink_metadata(from)?.file_type().is_symlink();
    if link || std::fs::rename(from, to).is_err() {
        std::fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
        std::fs::remove_file(from)?;
    }
    Ok(())
}

/// Debian packages and versions installed in the tree (from dpkg's status file).
pub fn installed_packages(tree: &Path) -> Result<Vec<(String, String, String)>> {
    let status = in_root::InRoot::open(tree)?
        .read_to_string(Path::new("var/lib/dpkg/status"))?
        .context("the base has no dpkg status (var/lib/dpkg/status)")?;
    let mut out = Vec::new();
    for para in status.split("\n\n") {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        if let (Some(p), Some(v), Some(a), Some(s)) = (
            field("Package:"),
            field("Version:"),
            field("Architecture:"),
            field("Status:"),
        ) {
            if s.ends_with("installed")
                && !s.contains("not-installed")
                && !s.contains("config-files")
            {
                out.push((p, v, a));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_is_taken_from_the_tree_only() {
        let tree = tempfile::tempdir().unwrap();
        let boot = tree.path().join("boot");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(boot.join("kernel.real"), b"kernel").unwrap();
        // A link inside the tree: the file is what is taken, not the link.
        std::os::unix::fs::symlink("kernel.real", boot.join("vmlinuz-6.1-x")).unwrap();
        // A link to the build host's own file is refused.
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("initrd"), b"host").unwrap();
        std::os::unix::fs::symlink(host.path().join("initrd"), boot.join("initrd.img-6.1-x"))
            .unwrap();
        let dest = tempfile::tempdir().unwrap();
        let e = take_kernel(tree.path(), dest.path()).unwrap_err();
        assert!(format!("{e:#}").contains("leads out of the tree"), "{e:#}");
        std::fs::remove_file(boot.join("initrd.img-6.1-x")).unwrap();
        std::fs::write(boot.join("initrd.img-6.1-x"), b"initrd").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let k = take_kernel(tree.path(), dest.path()).unwrap();
        assert!(!std::fs::symlink_metadata(&k.vmlinuz).unwrap().is_symlink());
        assert_eq!(std::fs::read(&k.vmlinuz).unwrap(), b"kernel");
        assert_eq!(std::fs::read(&k.initrd).unwrap(), b"initrd");
        assert!(!boot.join("initrd.img-6.1-x").exists());
    }
}
