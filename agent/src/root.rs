//! The filesystem root the agent works on. On the device it is "/"; unit tests
//! point it at a temporary directory so every step runs without touching the
//! host. Anything with side effects outside files (exec, ioctl, sethostname)
//! happens only when the root is the real "/".

use crate::error::{Context, Result};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A prefix under which absolute device paths are resolved.
#[derive(Debug)]
pub struct Root {
    prefix: PathBuf,
    /// Commands that were not executed because the root is not "/" (tests
    /// assert on them).
    skipped: RefCell<Vec<String>>,
}

impl Root {
    /// The real root of the running system.
    pub fn host() -> Self {
        Self::new("/")
    }

    /// A root at `prefix` (a temp dir in tests).
    pub fn new(prefix: impl Into<PathBuf>) -> Self {
        Root {
            prefix: prefix.into(),
            skipped: RefCell::new(Vec::new()),
        }
    }

    /// True when this is the running system's "/", i.e. side effects are real.
    pub fn is_host(&self) -> bool {
        self.prefix == Path::new("/")
    }

    /// Resolve an absolute device path (e.g. "/etc/hostname") under the prefix.
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        let rel = abs.strip_prefix("/").unwrap_or(abs);
        self.prefix.join(rel)
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// Run a program on the host and return its stdout. Outside the host root
    /// the command line is recorded instead (see [`Root::skipped_commands`]).
    /// Errors carry the command line, exit status and the tail of stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let cmdline = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        if !self.is_host() {
            self.skipped.borrow_mut().push(cmdline);
            return Ok(String::new());
        }
        let out = Command::new(program)
            .args(args)
            .output()
            .with_context(|| format!("running `{cmdline}`"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            crate::bail!("`{cmdline}` failed ({}): {}", out.status, tail.join(" | "));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Command lines that [`Root::run`] did not execute because the root is
    /// not the host's.
    pub fn skipped_commands(&self) -> Vec<String> {
        self.skipped.borrow().clone()
    }
}
