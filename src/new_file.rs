//! Writing a file that must not exist yet (keys, key lists): created
//! exclusively with its final mode, so an existing file is never replaced
//! and a secret is never readable by others even for a moment, then synced.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Creates `p` (refusing if it exists) with `mode` and writes `bytes`.
pub fn write_new(p: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(p)
        .with_context(|| format!("cannot create {}", p.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", p.display()))
}
