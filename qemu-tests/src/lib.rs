//! Shared harness for the VM tests: build a test image through the library,
//! give it a disk larger than the image, boot it in QEMU and read the guest's
//! self-check line from the serial console, with deadlines (no sleeps).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use edgeimg::pipeline::{BuildOptions, BuildReport};

/// Boot deadlines are generous: TCG on a busy 2-core CI machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(900);
pub const SELFCHECK_TIMEOUT: Duration = Duration::from_secs(180);
pub const POWEROFF_TIMEOUT: Duration = Duration::from_secs(180);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Serialises builds and boots across test binaries and threads: on two cores,
/// parallel TCG guests and builds slow each other 1.5-2.5x.
pub fn exclusive() -> edgeimg::cache::Lock {
    edgeimg::cache::Lock::acquire(&edgeimg::cache::dir().join("vm-tests.lock")).expect("VM test lock")
}

/// Builds the image described by `config` (relative to qemu-tests/) into `out`.
pub fn build(config: &str, board: Option<&str>, out: &Path) -> Result<BuildReport> {
    edgeimg::pipeline::build(&BuildOptions {
        config: Some(repo_root().join("qemu-tests").join(config)),
        board: board.map(String::from),
        out: out.to_path_buf(),
        refresh: false,
        compression: Some(edgeimg::artifact::Compression::None),
        quiet: false,
    })
}

/// A sparse copy of `image` grown to `size` bytes: a medium larger than the image.
pub fn disk_copy(image: &Path, dest: &Path, size: u64) -> Result<()> {
    edgeimg::sparse::copy_sparse(image, dest)?;
    let f = std::fs::OpenOptions::new().write(true).open(dest)?;
    f.set_len(size)?;
    Ok(())
}

/// One boot: waits for the ready line and the self-check, then for power-off.
/// Returns the self-check's JSON and the ready line.
pub fn boot_once(board: &str, disk: &Path, work: &Path, log_name: &str) -> Result<(serde_json::Value, String)> {
    let b = edgeimg::config::board::load(board)?;
    let vm = edgeimg::qemu::Vm::new(&b.qemu, disk, work)?;
    let log = log_dir().join(log_name);
    let mut running = vm.spawn_captured(&log)?;
    let ready = running.wait_for(edgeimg_agent::schema::READY_LINE, READY_TIMEOUT).context("waiting for the ready line")?;
    let line = running.wait_for("EDGEIMG-SELFCHECK {", SELFCHECK_TIMEOUT).context("waiting for the guest self-check")?;
    let json = &line[line.find('{').unwrap()..];
    let v: serde_json::Value = serde_json::from_str(json).with_context(|| format!("self-check line is not JSON: {line}"))?;
    let status = running.wait_exit(POWEROFF_TIMEOUT)?;
    anyhow::ensure!(status.success(), "QEMU exited with {status}");
    Ok((v, ready))
}

/// Console logs are kept here (target/vm-logs) for failed runs.
pub fn log_dir() -> PathBuf {
    let d = repo_root().join("target").join("vm-logs");
    std::fs::create_dir_all(&d).unwrap();
    d
}
