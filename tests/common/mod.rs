//! Helpers shared by the integration tests: run the real `edgeimg` binary and
//! the reference tools.

#![allow(dead_code)]

pub mod erofs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn edgeimg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgeimg"))
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Runs a command, returning its output; panics with stderr if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Names of the files in `dir` that are not hidden.
pub fn visible_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Serialises builds across test threads and binaries (2-core machines).
pub fn exclusive() -> edgeimg::cache::Lock {
    edgeimg::cache::Lock::acquire(&edgeimg::cache::dir().join("vm-tests.lock")).expect("test lock")
}
