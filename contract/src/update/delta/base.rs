//! Where a delta's base payloads come from: [`Base`] names a payload of the
//! base release and gets its bytes. On a device the root image is the
//! running slot and the boot payloads are the running slot's files on the
//! boot partition (the agent's implementation); on a host they are files in
//! a directory ([`DirBase`]) or the base release's update file
//! ([`UpdateBase`]).

use crate::error::{Context, Result};
use crate::update::format::{ROOT, Verified};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// One opened base payload.
pub struct Source {
    pub reader: Box<dyn ReadSeek>,
    /// Where the payload starts in `reader`.
    pub offset: u64,
    /// What it is, for messages: a path.
    pub what: String,
}

impl Source {
    /// The file at `path`, the payload from its first byte.
    pub fn file(path: &Path) -> Result<Source> {
        let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
        Ok(Source {
            reader: Box::new(f),
            offset: 0,
            what: path.display().to_string(),
        })
    }
}

/// The base release as the applier has it.
pub trait Base {
    /// Opens base payload `name` (a name [`super::read_header`] accepted).
    fn open(&mut self, name: &str) -> Result<Source>;
}

/// The root image at `root` (a file or a block device: bytes after the
/// image are ignored), every other base payload at `dir/<payload name>`
/// (`dir/vmlinuz`, `dir/boot/overlays/x.dtbo`).
pub struct DirBase {
    pub root: PathBuf,
    pub dir: PathBuf,
}

impl Base for DirBase {
    fn open(&mut self, name: &str) -> Result<Source> {
        if name == ROOT {
            Source::file(&self.root)
        } else {
            Source::file(&self.dir.join(name))
        }
    }
}

/// The base release's update file itself (its header verified by the
/// caller): what a publishing host or a test has.
pub struct UpdateBase {
    pub path: PathBuf,
    pub verified: Verified,
}

impl Base for UpdateBase {
    fn open(&mut self, name: &str) -> Result<Source> {
        let p = self.verified.header.payload(name)?;
        let mut s = Source::file(&self.path)?;
        s.offset = self.verified.offset(p);
        s.what = format!("{} (payload {name})", self.path.display());
        Ok(s)
    }
}
