//! The output directory of a build: locked for the build's length, written
//! through a private staging directory inside it, and published by renaming
//! each finished file to its final name, so a failed or killed build leaves
//! nothing under a final name.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct Output {
    pub dir: PathBuf,
    /// Where every output is made before it is published.
    pub staging: tempfile::TempDir,
    _lock: crate::cache::Lock,
}

impl Output {
    pub fn open(out: &Path) -> Result<Output> {
        let dir = prepare_out_dir(out)?;
        let lock = crate::cache::Lock::acquire_transient(&dir.join(".edgeimg.lock"))?;
        remove_stale_temps(&dir);
        let staging = tempfile::Builder::new()
            .prefix(".edgeimg-build-")
            .tempdir_in(&dir)
            .with_context(|| format!("output directory {} is not writable", dir.display()))?;
        Ok(Output {
            dir,
            staging,
            _lock: lock,
        })
    }

    pub fn staged(&self, name: &str) -> PathBuf {
        self.staging.path().join(name)
    }

    /// Every output is complete: rename each to its final name.
    pub fn publish(&self, names: &[String]) -> Result<Vec<PathBuf>> {
        let mut outputs = Vec::new();
        for n in names {
            let dest = self.dir.join(n);
            std::fs::rename(self.staged(n), &dest)
                .with_context(|| format!("cannot publish {}", dest.display()))?;
            outputs.push(dest);
        }
        Ok(outputs)
    }
}

fn prepare_out_dir(out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output directory {}", out.display()))?;
    let probe = tempfile::Builder::new()
        .prefix(".edgeimg-probe-")
        .tempfile_in(out);
    probe.with_context(|| format!("output directory {} is not writable", out.display()))?;
    out.canonicalize()
        .with_context(|| format!("cannot resolve {}", out.display()))
}

/// Temporary output directories of builds that were killed.
fn remove_stale_temps(out: &Path) {
    for e in std::fs::read_dir(out).into_iter().flatten().flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with(".edgeimg-build-")
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
