//! A software TPM2 for a VM (swtpm, package swtpm): one process per QEMU
//! run, its state in a directory the caller keeps, so a later run with the
//! same directory is the same TPM and a run with a fresh one is another
//! (`edgeimg run --tpm-state`, the VM tests).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long swtpm gets to create its control socket.
const START: Duration = Duration::from_secs(30);

pub struct Swtpm {
    child: Child,
    /// The control socket QEMU connects to (`Vm::tpm_socket`).
    pub socket: PathBuf,
}

impl Swtpm {
    /// Starts a TPM2 with its state in `state` (made if missing). It ends
    /// when QEMU disconnects (`--terminate`), or when dropped.
    pub fn start(state: &Path) -> Result<Swtpm> {
        std::fs::create_dir_all(state)?;
        let socket = state.join("swtpm.sock");
        let _ = std::fs::remove_file(&socket);
        crate::cmd::require(&[crate::cmd::SWTPM])?;
        let mut child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--terminate", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start swtpm (package swtpm)")?;
        // Ready once its socket exists (or failed when it exited).
        let deadline = Instant::now() + START;
        while !socket.exists() {
            if let Some(st) = child.try_wait()? {
                anyhow::bail!("swtpm exited with {st} before listening");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "swtpm made no socket within {}s",
                START.as_secs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Swtpm { child, socket })
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
