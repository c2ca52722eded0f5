//! Release artifacts written beside the raw image: compressed copies, the bmap,
//! `SHA256SUMS`. Every output goes through [`AtomicOutput`], so a file only
//! appears under its final name once it is complete: an interrupted build never
//! leaves a truncated `.img.xz` that looks finished.

pub mod bmap;
pub mod checksums;
pub mod compress;
pub mod outputs;

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

pub(crate) use crate::io_error::{IoError, io_err};
pub use bmap::{BMAP_BLOCK_SIZE, BmapSummary, write_bmap};
pub use checksums::{sha256_bytes, sha256_file, write_sha256sums};
pub use compress::{Compression, compress, decompressing_reader};
pub use outputs::{write_image_artifacts, write_sums_file};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Sparse(#[from] crate::sparse::SparseError),
    #[error("{op} {}: {msg}", path.display())]
    Invalid {
        op: &'static str,
        path: PathBuf,
        msg: String,
    },
}

pub type Result<T, E = ArtifactError> = std::result::Result<T, E>;

/// A file written under `<dir>/.<name>.partial` and renamed to `<dir>/<name>`
/// only by [`AtomicOutput::commit`]. Dropped without commit (error, panic), the
/// partial file is deleted. The partial lives in the same directory so the
/// rename is atomic (same filesystem).
#[derive(Debug)]
pub struct AtomicOutput {
    file: Option<File>,
    partial: PathBuf,
    final_path: PathBuf,
    committed: bool,
}

impl AtomicOutput {
    /// Creates the partial file exclusively: an existing partial means another
    /// build is writing the same output, or a crashed one left it behind —
    /// neither should be silently clobbered.
    pub fn create(final_path: &Path) -> Result<AtomicOutput> {
        let name = final_path
            .file_name()
            .ok_or_else(|| ArtifactError::Invalid {
                op: "create output",
                path: final_path.to_path_buf(),
                msg: "path has no file name".into(),
            })?;
        let dir = match final_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut partial_name = std::ffi::OsString::from(".");
        partial_name.push(name);
        partial_name.push(".partial");
        let partial = dir.join(partial_name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    ArtifactError::Invalid {
                        op: "create partial output",
                        path: partial.clone(),
                        msg: "already exists: another edgeimg is writing it, or an \
                              interrupted run left it behind (remove it)"
                            .into(),
                    }
                } else {
                    IoError::new("create partial output", partial.clone(), source).into()
                }
            })?;
        Ok(AtomicOutput {
            file: Some(file),
            partial,
            final_path: final_path.to_path_buf(),
            committed: false,
        })
    }

    pub fn file(&self) -> &File {
        self.file.as_ref().expect("file present until commit")
    }

    pub fn file_mut(&mut self) -> &mut File {
        self.file.as_mut().expect("file present until commit")
    }

    /// Where the data is being written (for external tools that take a path).
    pub fn partial_path(&self) -> &Path {
        &self.partial
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// fsyncs the data, renames it into place (replacing any previous output of
    /// that name) and fsyncs the directory so the rename survives a power cut.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("file present until commit");
        file.sync_all().map_err(io_err("sync", &self.partial))?;
        drop(file);
        std::fs::rename(&self.partial, &self.final_path).map_err(io_err(
            "rename partial output into place as",
            &self.final_path,
        ))?;
        self.committed = true;
        if let Some(dir) = self.final_path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // Directory fsync is best-effort durability, not correctness: some
            // filesystems refuse it, and the rename has already happened.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if !self.committed {
            self.file.take();
            if let Err(e) = std::fs::remove_file(&self.partial)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %self.partial.display(), error = %e,
                    "could not remove partial output");
            }
        }
    }
}
