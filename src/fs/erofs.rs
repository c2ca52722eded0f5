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
    if let Some(name) = compression.compressor() {
        check_compressor(name)?;
    }
    Cmd::new(cmd::MKFS_EROFS)
        .args(compression.mkfs_args())
        .arg(format!("-T{epoch}"))
        .arg(format!("-U{uuid}"))
        .arg("--quiet")
        .arg(out)
        .arg(tree)
        .run()
        .context("making the EROFS root filesystem failed")?;
    Ok(std::fs::metadata(out)?.len())
}

/// Fails with one clear message when this host's mkfs.erofs lacks the
/// compressor (Debian bookworm's erofs-utils 1.5 has lz4 and lz4hc only).
fn check_compressor(name: &str) -> Result<()> {
    let out = std::process::Command::new(cmd::MKFS_EROFS.name)
        .arg("--help")
        .output()
        .context("cannot run mkfs.erofs --help")?;
    let help = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(list) = available_compressors(&help) {
        anyhow::ensure!(
            list.iter().any(|c| c == name),
            "image.root_compression = \"{name}\": this host's mkfs.erofs cannot make it \
             (available: {}); install an erofs-utils built with {name} or choose another",
            list.join(", ")
        );
    }
    Ok(())
}

/// The compressor names after "Available compressors are:" in mkfs.erofs'
/// help; `None` when the help does not say (then mkfs.erofs itself decides).
fn available_compressors(help: &str) -> Option<Vec<String>> {
    let (_, rest) = help.split_once("Available compressors are:")?;
    Some(
        rest.split(|c: char| c == ',' || c.is_whitespace())
            .map(|w| w.split('[').next().unwrap_or(w))
            .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric()))
            .map(str::to_string)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn compressor_list_from_help() {
        let v15 = "usage: ...\n --quiet  quiet\n\nAvailable compressors are: lz4hc, lz4\nmkfs.erofs 1.5\n";
        let l = super::available_compressors(v15).unwrap();
        assert!(l.contains(&"lz4hc".to_string()) && !l.contains(&"lzma".to_string()));
        assert!(super::available_compressors("usage only").is_none());
    }
}
