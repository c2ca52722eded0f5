//! Reading disk images and devices, for every command that looks inside
//! one (`inspect`, `flash`, `run` on the Pi's boot files): the partition
//! table ([`table`]), what filesystem a partition holds ([`fs_probe`]),
//! compressed images read as a stream without a temporary copy
//! ([`stream_capture`]), the node file on the boot partition, and the names
//! of an image's companions. The typed manifest beside an image is
//! [`crate::manifest::Manifest::beside`].

use std::path::{Path, PathBuf};

use crate::cmd::{self, Cmd};
use crate::io_error::IoError;

pub mod fs_probe;
pub mod stream_capture;
pub mod table;

pub use fs_probe::{FsInfo, probe_fs};
pub use table::{Table, TableKind, TablePartition, read_table};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
}

/// Image path with compression suffix removed (`x.img.zst` -> `x.img`).
pub fn uncompressed_name(image: &Path) -> PathBuf {
    match image.extension().and_then(|e| e.to_str()) {
        Some("zst" | "xz") => image.with_extension(""),
        _ => image.to_path_buf(),
    }
}

/// Reads `edgeimg/node.toml` from the FAT at `offset` of `disk` with mtools,
/// without mounting. `Ok(None)` when the file is absent.
pub fn read_node_file(disk: &Path, offset: u64) -> Result<Option<String>, crate::cmd::CmdError> {
    let spec = format!("{}@@{offset}", disk.display());
    match Cmd::new(cmd::MTYPE)
        .env("MTOOLS_SKIP_CHECK", "1")
        .args([
            "-i",
            &spec,
            &format!("::{}", edgeimg_contract::schema::NODE_CONFIG_RELPATH),
        ])
        .run()
    {
        Ok(o) => Ok(Some(String::from_utf8_lossy(&o.stdout).into_owned())),
        Err(crate::cmd::CmdError::Failed { stderr, .. }) if stderr.contains("not found") => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
