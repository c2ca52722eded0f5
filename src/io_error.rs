//! The I/O error every module reports the same way: what was being done, to
//! which path, and the OS's cause. Module error enums wrap it with
//! `#[error(transparent)] Io(#[from] IoError)`, so its message is theirs.
//! The OS's cause is part of the message and deliberately not the error's
//! `source()`: the CLI prints the whole chain (`{:#}`), which would print it twice.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {cause}", path.display())]
pub struct IoError {
    /// What was being done, as the message's first words ("read", "cannot open").
    pub op: &'static str,
    pub path: PathBuf,
    pub cause: io::Error,
}

impl IoError {
    pub fn new(op: &'static str, path: impl Into<PathBuf>, cause: io::Error) -> Self {
        IoError {
            op,
            path: path.into(),
            cause,
        }
    }
}

/// For `map_err`: `File::open(p).map_err(io_err("open", p))?`. The path is
/// copied only when there is an error.
pub fn io_err<P: AsRef<Path>>(op: &'static str, path: P) -> impl FnOnce(io::Error) -> IoError {
    move |cause| IoError::new(op, path.as_ref(), cause)
}
