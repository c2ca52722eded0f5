//! Booting images in QEMU: the command line per board (machine, firmware, disk),
//! interactive runs for `edgeimg run`, and captured runs whose serial console
//! the VM tests read with deadlines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub mod rpi;

use crate::config::board::{QemuBoot, QemuSpec};

/// How the VM gets to its kernel.
#[derive(Debug, Clone)]
pub enum BootMode {
    /// UEFI firmware in pflash with a writable copy of its variable store.
    Uefi { code: String, vars: PathBuf },
    /// Kernel, initrd and DTB passed by QEMU (taken from the image's boot partition).
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        dtb: PathBuf,
        append: String,
    },
}

/// One VM: a board's QEMU description plus the disk to boot.
#[derive(Debug, Clone)]
pub struct Vm {
    pub qemu: QemuSpec,
    pub disk: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    /// KVM hangs on some hosts (see DESIGN.md §6): TCG unless asked.
    pub kvm: bool,
    /// Discard disk writes (QEMU's -snapshot).
    pub snapshot: bool,
    pub boot: BootMode,
    /// More raw disks, attached read-only after the boot disk (e.g. a test's
    /// update medium).
    pub extra_disks: Vec<PathBuf>,
}

impl Vm {
    /// Prepares a VM for `disk`; the firmware's variable store is copied into `work`.
    ///
    /// Boards QEMU boots directly (rpi4) get their kernel, initrd, DTB (patched
    /// for QEMU's model) and command line from the image's boot partition; an
    /// SD card that is not a power of two in size is replaced by a padded copy
    /// in `work` (QEMU's SD model needs one).
    pub fn new(qemu: &QemuSpec, disk: &Path, work: &Path) -> Result<Vm> {
        crate::cmd::require(&[crate::cmd::Tool::owned(
            &qemu.binary,
            &qemu.package,
            "boot images",
        )])?;
        let mut disk = disk.to_path_buf();
        let boot = match qemu.boot {
            QemuBoot::Uefi => {
                let code = qemu
                    .firmware_code
                    .clone()
                    .context("board has no qemu.firmware_code")?;
                let vars_src = qemu
                    .firmware_vars
                    .clone()
                    .context("board has no qemu.firmware_vars")?;
                let package = qemu
                    .firmware_package
                    .as_deref()
                    .unwrap_or("the board's firmware package");
                for f in [&code, &vars_src] {
                    if !Path::new(f).exists() {
                        anyhow::bail!(
                            "firmware file {f} is missing (Debian package: {package}; on bookworm install it from bookworm-backports)"
                        );
                    }
                }
                let vars = work.join("efi-vars.fd");
                std::fs::copy(&vars_src, &vars)
                    .with_context(|| format!("cannot copy {vars_src}"))?;
                BootMode::Uefi { code, vars }
            }
            QemuBoot::DirectKernel => {
                let files = rpi::prepare(&disk, work)?;
                if qemu.disk_interface == "sd" {
                    disk = rpi::pad_sd_card(&disk, work)?;
                }
                BootMode::Direct {
                    kernel: files.kernel,
                    initrd: files.initrd,
                    dtb: files.dtb,
                    append: files.cmdline,
                }
            }
        };
        Ok(Vm {
            qemu: qemu.clone(),
            disk,
            memory_mib: qemu.memory_mib.unwrap_or(2048),
            cpus: 2,
            kvm: std::env::var("EDGEIMG_QEMU_KVM").is_ok_and(|v| v == "1"),
            snapshot: false,
            boot,
            extra_disks: Vec::new(),
        })
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.qemu.binary);
        c.args(["-accel", if self.kvm { "kvm" } else { "tcg" }]);
        c.args(["-machine", &self.qemu.machine, "-cpu", &self.qemu.cpu]);
        // raspi4b fixes its CPU count; other machines take -smp.
        if self.qemu.boot == QemuBoot::Uefi {
            c.args(["-smp", &self.cpus.to_string()]);
        }
        c.args(["-m", &self.memory_mib.to_string()]);
        match &self.boot {
            BootMode::Uefi { code, vars } => {
                c.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={code}"
                ));
                c.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
            }
            BootMode::Direct {
                kernel,
                initrd,
                dtb,
                append,
            } => {
                c.arg("-kernel")
                    .arg(kernel)
                    .arg("-initrd")
                    .arg(initrd)
                    .arg("-dtb")
                    .arg(dtb)
                    .arg("-append")
                    .arg(append);
            }
        }
        c.arg("-drive").arg(format!(
            "file={},format=raw,if={},cache=unsafe",
            self.disk.display(),
            self.qemu.disk_interface
        ));
        // Air-gapped by design: no network device unless the operator adds one.
        for d in &self.extra_disks {
            c.arg("-drive").arg(format!(
                "file={},format=raw,if={},readonly=on",
                d.display(),
                self.qemu.disk_interface
            ));
        }
        c.args(["-nic", "none", "-no-reboot", "-display", "none"]);
        if self.snapshot {
            c.arg("-snapshot");
        }
        c
    }

    /// Serial ports before the console one are connected to nothing.
    fn unused_serial_ports(&self, c: &mut Command) {
        for _ in 0..self.qemu.serial_port {
            c.args(["-serial", "null"]);
        }
    }

    /// Runs with the serial console (and QEMU's monitor, Ctrl-A c) on this terminal.
    pub fn run_interactive(&self) -> Result<std::process::ExitStatus> {
        let mut c = self.command();
        self.unused_serial_ports(&mut c);
        c.args(["-serial", "mon:stdio"]);
        c.status()
            .with_context(|| format!("cannot start {}", self.qemu.binary))
    }

    /// Starts the VM with its serial console captured line by line. Every line
    /// is also appended to `log` (kept for failed tests).
    pub fn spawn_captured(&self, log: &Path) -> Result<RunningVm> {
        let mut c = self.command();
        self.unused_serial_ports(&mut c);
        c.args(["-serial", "stdio", "-monitor", "none"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .with_context(|| format!("cannot start {}", self.qemu.binary))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        // A new file, not a truncation: target/ of a worktree may be a
        // hard-linked copy of another's, and its old logs shared inodes.
        let _ = std::fs::remove_file(log);
        let mut logf = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        std::thread::spawn(move || {
            use std::io::Write;
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = logf.write_all(&buf);
                        let line = String::from_utf8_lossy(&buf)
                            .replace('\r', "")
                            .trim_end()
                            .to_string();
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(RunningVm {
            child,
            lines: rx,
            log: log.to_path_buf(),
        })
    }
}

pub struct RunningVm {
    child: Child,
    lines: Receiver<String>,
    pub log: PathBuf,
}

impl RunningVm {
    /// Waits until a console line contains `needle`; returns that line. Fails
    /// at the deadline or when the VM stops first (quoting the log's tail).
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    anyhow::bail!(
                        "no `{needle}` on the console within {}s{}",
                        timeout.as_secs(),
                        self.tail()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("the VM stopped before `{needle}` appeared{}", self.tail())
                }
            }
        }
    }

    /// Waits for QEMU to exit (the guest powered off) within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                anyhow::bail!(
                    "the VM did not power off within {}s{}",
                    timeout.as_secs(),
                    self.tail()
                );
            }
            // Drain console lines while waiting; this also paces the loop.
            let _ = self.lines.recv_timeout(Duration::from_millis(200));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "; last console lines ({}):\n  {}",
            self.log.display(),
            lines[lines.len().saturating_sub(30)..].join("\n  ")
        )
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        self.kill();
    }
}
