//! A base made from the closest cached base: the package difference applied
//! to a copy of it (apt in a chroot, as mmdebstrap's root mode runs it, with
//! the same deferred depmod/initramfs hooks and the same cleanup) instead of
//! a bootstrap from nothing. The cached initrd is kept when the change leaves
//! its inputs alone (see initrd_inputs).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::initrd_inputs::{self, Inputs};
use super::{APPLY_DIFFERENCE, BASE_EPOCH, BaseMeta, BaseSpec};
use crate::cmd::{self, Cmd};
use crate::progress::Progress;

/// A cached base of the same family and what must change to reach the spec.
#[derive(Debug)]
pub struct Source {
    pub tar: PathBuf,
    pub key: String,
    pub add: Vec<String>,
    pub drop: Vec<String>,
}

/// The cached base of `spec`'s family (everything but the packages equal)
/// whose package list differs least from `spec`'s; ties go to the smaller
/// key, so the choice does not depend on directory order.
pub fn closest(dir: &Path, spec: &BaseSpec) -> Option<Source> {
    let family = spec.family();
    let want = spec.package_set();
    let mut best: Option<(usize, Source)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(meta) = std::fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<BaseMeta>(&b)?))
        else {
            continue;
        };
        let (Some(f), Some(have)) = (&meta.family, &meta.packages) else {
            continue;
        };
        let tar = path.with_extension("tar");
        if *f != family || !tar.exists() {
            continue;
        }
        let have: std::collections::BTreeSet<String> = have.iter().cloned().collect();
        let add: Vec<String> = want.difference(&have).cloned().collect();
        let drop: Vec<String> = have.difference(&want).cloned().collect();
        let distance = add.len() + drop.len();
        let better = match &best {
            None => true,
            Some((d, s)) => distance < *d || (distance == *d && meta.key < s.key),
        };
        if better {
            best = Some((
                distance,
                Source {
                    tar,
                    key: meta.key.clone(),
                    add,
                    drop,
                },
            ));
        }
    }
    best.map(|(_, s)| s)
}

/// Writes the base for `spec` to `out`: `source` extracted under `work`, the
/// difference applied, packed as mmdebstrap packs a root. Returns whether
/// the cached base's initrd was kept.
pub fn apply(
    source: &Source,
    work: &Path,
    hooks: &Path,
    cpu: &str,
    out: &Path,
    progress: &Progress,
) -> Result<bool> {
    let root = work.join("root");
    std::fs::create_dir(&root)?;
    Cmd::new(cmd::TAR)
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&source.tar)
        .arg("-C")
        .arg(&root)
        .run()
        .with_context(|| format!("cannot extract {}", source.tar.display()))?;
    let script = hooks.join("apply-difference");
    std::fs::write(&script, APPLY_DIFFERENCE)?;
    let run = |args: &[String], what: &str| -> Result<()> {
        let mut c = Cmd::new(cmd::UNSHARE)
            .env("SOURCE_DATE_EPOCH", BASE_EPOCH.to_string())
            .args(["--mount", "sh"])
            .arg(&script)
            .arg(&args[0])
            .arg(&root)
            .arg(hooks)
            .arg(cpu)
            .args(&args[1..]);
        if let Some(v) = super::qemu_cpu(cpu, source_arch(&root)?) {
            c = c.env("QEMU_CPU", v);
        }
        let bar = progress.spinner(what);
        c.run_streaming(&mut |line| bar.set_message(line.to_string()))
            .with_context(|| format!("{what} in the cached base failed"))?;
        bar.finish_and_clear();
        Ok(())
    };
    let initrd = InitrdInputs::read(&root)?;
    run(
        &[
            "packages".into(),
            source.add.join(" "),
            source.drop.join(" "),
        ],
        "applying the package difference",
    )?;
    let keep = initrd.unchanged(&root, progress)?;
    let initrd_arg = if keep { "keep-initrd" } else { "new-initrd" };
    run(
        &["finish".into(), initrd_arg.into()],
        if keep {
            "finishing the base"
        } else {
            "making the initrd"
        },
    )?;
    pack(&source.tar, &root, out)?;
    Ok(keep)
}

/// The cached base's initrd and what it was made from, read before the
/// package change.
struct InitrdInputs {
    /// `None`: no single initrd in a format edgeimg reads; a new one is made.
    listed: Option<(BTreeSet<String>, Inputs)>,
}

impl InitrdInputs {
    fn read(root: &Path) -> Result<Self> {
        let boot = root.join("boot");
        let initrds: Vec<PathBuf> = std::fs::read_dir(&boot)
            .with_context(|| format!("cannot list {}", boot.display()))?
            .flatten()
            // Regular files only (a link is not followed out of the root).
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| e.file_name().to_string_lossy().starts_with("initrd.img-"))
            .map(|e| e.path())
            .collect();
        let [initrd] = initrds.as_slice() else {
            return Ok(InitrdInputs { listed: None });
        };
        let Some(paths) = initrd_inputs::initrd_paths(initrd)? else {
            return Ok(InitrdInputs { listed: None });
        };
        Ok(InitrdInputs {
            listed: Some(initrd_inputs::copied_inputs(root, &paths)?),
        })
    }

    /// Whether the root, after the package change, holds the same inputs;
    /// says which one changed when not.
    fn unchanged(&self, root: &Path, progress: &Progress) -> Result<bool> {
        let Some((paths, before)) = &self.listed else {
            progress.note("base: the cached initrd cannot be read; making a new one");
            return Ok(false);
        };
        let after = initrd_inputs::inputs(root, paths)?;
        match initrd_inputs::first_difference(before, &after) {
            None => {
                progress.note(
                    "base: the initrd's inputs did not change; keeping the cached base's initrd",
                );
                Ok(true)
            }
            Some(path) => {
                progress.note(&format!(
                    "base: the package change touches the initrd's input /{path}; making a new initrd"
                ));
                Ok(false)
            }
        }
    }
}

/// The dpkg architecture of an extracted root.
fn source_arch(root: &Path) -> Result<edgeimg_contract::arch::Arch> {
    let p = root.join("var/lib/dpkg/arch");
    let s = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let name = s.lines().next().unwrap_or_default().trim();
    edgeimg_contract::arch::Arch::from_debian(name)
        .with_context(|| format!("{}: unknown architecture {name:?}", p.display()))
}

/// mmdebstrap's tarball: its /dev entries (written by mmdebstrap itself, not
/// by tar) copied from the source base, then tar with mmdebstrap's options.
fn pack(source: &Path, root: &Path, out: &Path) -> Result<()> {
    let prefix = dev_prefix(source)?;
    let mut f = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    f.write_all(&prefix)?;
    f.flush()?;
    let (mut tar, cmdline) = Cmd::new(cmd::TAR)
        .args([
            "--sort=name",
            &format!("--mtime=@{BASE_EPOCH}"),
            "--clamp-mtime",
            "--numeric-owner",
            "--one-file-system",
            "--format=pax",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "-c",
            "--exclude=./dev",
            "--xattrs",
            "-C",
        ])
        .arg(root)
        .arg(".")
        .into_std()?;
    let status = tar
        .stdout(f)
        .status()
        .with_context(|| format!("cannot start {cmdline}"))?;
    anyhow::ensure!(status.success(), "`{cmdline}` failed ({status})");
    Ok(())
}

/// The leading `./dev` entries of an mmdebstrap tarball, byte for byte.
fn dev_prefix(tar: &Path) -> Result<Vec<u8>> {
    let mut f = File::open(tar).with_context(|| format!("cannot open {}", tar.display()))?;
    let mut offset = 0u64;
    let mut header = [0u8; 512];
    loop {
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut header)
            .with_context(|| format!("{}: truncated tar header", tar.display()))?;
        let name_end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = &header[..name_end];
        if !(name == b"./dev/" || name.starts_with(b"./dev/")) {
            break;
        }
        let size = std::str::from_utf8(&header[124..136])
            .ok()
            .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
            .and_then(|s| u64::from_str_radix(s, 8).ok())
            .with_context(|| format!("{}: bad size in tar header", tar.display()))?;
        anyhow::ensure!(size < 1 << 20, "{}: /dev entry too large", tar.display());
        offset += 512 + size.div_ceil(512) * 512;
    }
    let mut prefix = vec![0u8; offset as usize];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut prefix)?;
    Ok(prefix)
}
