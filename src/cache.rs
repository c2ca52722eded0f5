//! The user's cache directory and a lock so concurrent builds (or tests) that
//! need the same cached artifact build it once.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// `$EDGEIMG_CACHE_DIR`, else `$XDG_CACHE_HOME/edgeimg`, else `~/.cache/edgeimg`.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EDGEIMG_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("edgeimg");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("edgeimg")
}

/// An exclusive advisory lock held until dropped.
pub struct Lock {
    _file: File,
    /// Unlinked on drop (see [`Lock::acquire_transient`]).
    remove: Option<PathBuf>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Still holding the lock: whoever opened the same file waits on it
        // and, once it has it, sees the path gone and starts over.
        if let Some(p) = &self.remove {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Lock {
    /// A lock whose file is removed again when it is released, for a lock
    /// inside a directory the user owns (a build's output directory): no
    /// lock file is left beside the outputs, whether the build succeeded or
    /// failed. A waiter that locked a file already unlinked tries again.
    pub fn acquire_transient(path: &Path) -> Result<Lock> {
        use std::os::unix::fs::MetadataExt;
        loop {
            let mut lock = Lock::acquire(path)?;
            let held = lock._file.metadata().map(|m| (m.dev(), m.ino()));
            let current = std::fs::metadata(path).map(|m| (m.dev(), m.ino()));
            if let (Ok(h), Ok(c)) = (held, current)
                && h == c
            {
                lock.remove = Some(path.to_path_buf());
                return Ok(lock);
            }
        }
    }

    pub fn acquire(path: &Path) -> Result<Lock> {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        // SAFETY: flock on a valid, owned descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot lock {}", path.display()));
        }
        Ok(Lock {
            _file: file,
            remove: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_lock_leaves_no_file_and_still_excludes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".lock");
        let first = Lock::acquire_transient(&p).unwrap();
        // Another open of the file cannot take the lock while it is held.
        let other = File::open(&p).unwrap();
        // SAFETY: flock on a valid, owned descriptor.
        let rc = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, -1, "the lock is exclusive");
        drop(first);
        assert!(!p.exists(), "the lock file is gone once released");
        // The next build locks afresh.
        let again = Lock::acquire_transient(&p).unwrap();
        assert!(p.exists());
        drop(again);
        assert!(!p.exists());
    }
}
