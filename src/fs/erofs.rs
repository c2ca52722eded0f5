//! The read-only root: EROFS from the staged tree.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd::{self, Cmd};
use crate::config::schema::RootCompression;
use crate::ids::Uuid;

/// Makes `out` from `tree`. Every timestamp becomes `epoch` and the UUID is
/// fixed, so the same tree gives the same bytes.
pub fn make(
    tree: &Path,
    out: &Path,
    uuid: Uuid,
    epoch: u64,
    compression: RootCompression,
) -> Result<u64> {
    Cmd::new(cmd::MKFS_EROFS)
        .args(compression.mkfs_arg())
        .arg(format!("-T{epoch}"))
        .arg(format!("-U{uuid}"))
        .arg("--quiet")
        .arg(out)
        .arg(tree)
        .run()
        .context("making the EROFS root filesystem failed")?;
    Ok(std::fs::metadata(out)?.len())
}
