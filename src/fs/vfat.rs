//! The FAT32 boot partition, filled with mtools (no mount). Files are added in
//! sorted order and timestamps come from the epoch, so the bytes are reproducible.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cmd::{self, Cmd};

/// What goes onto the boot partition: destination path (with '/') -> content.
#[derive(Debug, Default, Clone)]
pub struct BootFiles {
    pub files: BTreeMap<String, Source>,
}

#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl BootFiles {
    pub fn add_file(&mut self, dest: &str, src: PathBuf) {
        self.files.insert(dest.to_string(), Source::File(src));
    }
    pub fn add_bytes(&mut self, dest: &str, content: impl Into<Vec<u8>>) {
        self.files
            .insert(dest.to_string(), Source::Bytes(content.into()));
    }
    /// Every file as (destination, path on disk); in-memory contents are
    /// written under `work/boot-files/` first.
    pub fn materialize(&self, work: &Path) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for (dest, s) in &self.files {
            let path = match s {
                Source::File(p) => p.clone(),
                Source::Bytes(b) => {
                    let p = work.join("boot-files").join(dest);
                    std::fs::create_dir_all(p.parent().expect("has a parent"))?;
                    std::fs::write(&p, b)
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    p
                }
            };
            out.push((dest.clone(), path));
        }
        Ok(out)
    }
    pub fn total_bytes(&self) -> Result<u64> {
        let mut n = 0;
        for s in self.files.values() {
            n += match s {
                Source::File(p) => std::fs::metadata(p)
                    .with_context(|| format!("cannot read {}", p.display()))?
                    .len(),
                Source::Bytes(b) => b.len() as u64,
            };
        }
        Ok(n)
    }
}

pub fn make(
    out: &Path,
    size: u64,
    label: &str,
    volume_id: u32,
    files: &BootFiles,
    work: &Path,
    epoch: u64,
) -> Result<()> {
    let needed = files.total_bytes()?;
    // FAT32 metadata (two FATs, reserved sectors) takes a few percent.
    if needed + size / 16 > size {
        anyhow::bail!(
            "boot files ({} bytes) do not fit a {} byte boot partition; raise the board's partitions.boot",
            needed,
            size
        );
    }
    let f =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    f.set_len(size)?;
    drop(f);
    Cmd::new(cmd::MKFS_VFAT)
        .args(["--invariant", "-F", "32", "-S", "512", "-n", label, "-i"])
        .arg(format!("{volume_id:08X}"))
        .arg(out)
        .run()
        .context("making the FAT boot filesystem failed")?;

    // Materialise byte sources so mcopy can read them, with the epoch as mtime.
    let staging = work.join("boot-files");
    let mut dirs: std::collections::BTreeSet<String> = Default::default();
    let mut by_dir: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for (i, (dest, src)) in files.files.iter().enumerate() {
        let (dir, name) = dest.rsplit_once('/').unwrap_or(("", dest));
        let mut d = String::new();
        for comp in dir.split('/').filter(|c| !c.is_empty()) {
            d = if d.is_empty() {
                comp.to_string()
            } else {
                format!("{d}/{comp}")
            };
            dirs.insert(d.clone());
        }
        let local = staging.join(i.to_string()).join(name);
        std::fs::create_dir_all(local.parent().unwrap())?;
        match src {
            Source::File(p) => {
                std::fs::copy(p, &local).with_context(|| format!("cannot copy {}", p.display()))?;
            }
            Source::Bytes(b) => std::fs::write(&local, b)?,
        }
        set_mtime(&local, epoch)?;
        by_dir.entry(dir.to_string()).or_default().push(local);
    }
    let img = format!("{}", out.display());
    if !dirs.is_empty() {
        // BTreeSet order creates parents before children.
        Cmd::new(cmd::MMD)
            .arg("-i")
            .arg(&img)
            .args(dirs.iter().map(|d| format!("::/{d}")))
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .env("MTOOLS_SKIP_CHECK", "1")
            .run()
            .context("creating boot partition directories failed")?;
    }
    for (dir, locals) in by_dir {
        Cmd::new(cmd::MCOPY)
            .args(["-m", "-o", "-i"])
            .arg(&img)
            .args(&locals)
            .arg(format!("::/{dir}/"))
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .env("MTOOLS_SKIP_CHECK", "1")
            .run()
            .context("copying files onto the boot partition failed")?;
    }
    Ok(())
}

fn set_mtime(p: &Path, epoch: u64) -> Result<()> {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    let f = std::fs::File::options().write(true).open(p)?;
    f.set_modified(t)?;
    Ok(())
}
