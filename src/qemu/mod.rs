//! Booting images in QEMU: the command line per board (machine, firmware, disk),
//! interactive runs for `edgeimg run`, and captured runs whose serial console
//! the VM tests read with deadlines.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub mod rpi;
pub mod swtpm;

use crate::cmd::{Cmd, Tool};
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
    /// KVM hangs on some hosts: TCG unless asked (`EDGEIMG_QEMU_KVM=1`,
    /// docs/config.md).
    pub kvm: bool,
    /// Discard disk writes (QEMU's -snapshot).
    pub snapshot: bool,
    pub boot: BootMode,
    /// More raw disks, attached read-only after the boot disk (e.g. a test's
    /// update medium).
    pub extra_disks: Vec<PathBuf>,
    /// A virtio-serial port named [`RECORD_PORT`] whose guest output QEMU
    /// writes to this file: the VM tests read the guest's results there, on a
    /// channel nothing else writes to (the serial console also carries kernel
    /// messages, which can land in the middle of a user-space line). Only on
    /// machines with PCI ([`Vm::has_virtio_serial`]).
    pub record_port: Option<PathBuf>,
    /// The firmware is the board's Secure Boot build
    /// ([`Vm::use_secure_boot_firmware`]).
    pub secure_boot: bool,
    /// A TPM2 emulator's control socket (`swtpm socket --tpm2 --ctrl
    /// type=unixio,path=...`): the guest gets a TPM2 (CRB on x86, TIS on
    /// arm64's virt machine) backed by it.
    pub tpm_socket: Option<PathBuf>,
    /// A captured run takes console input from [`RunningVm::send_console`]
    /// (else its serial input is empty).
    pub console_input: bool,
    /// A NIC on QEMU's user-mode network (slirp): the guest gets an address
    /// by DHCP and reaches the host's loopback services at
    /// [`USER_NET_HOST`]. Off by default: edgeimg nodes are air-gapped by
    /// design, and a VM only gets a network when asked (the update VM test
    /// serves its repository this way).
    pub user_net: bool,
}

/// The address under which a guest on the user-mode network
/// ([`Vm::user_net`]) reaches the host's 127.0.0.1.
pub const USER_NET_HOST: &str = "10.0.2.2";

/// The guest sees the record port as /dev/virtio-ports/<this name>.
pub const RECORD_PORT: &str = "org.edgeimg.records";

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
            record_port: None,
            secure_boot: false,
            tpm_socket: None,
            console_input: false,
            user_net: false,
        })
    }

    /// Boots the board's Secure Boot firmware (`qemu.firmware_code_secure_boot`)
    /// with the variable store `vars`, which the caller keeps: keys enrolled
    /// on one boot are there on the next (QEMU exits when the guest reboots,
    /// as after systemd-boot enrolls). A missing `vars` starts as a copy of
    /// the board's store template, which holds no PK: setup mode.
    pub fn use_secure_boot_firmware(&mut self, vars: &Path) -> Result<()> {
        let code =
            self.qemu.firmware_code_secure_boot.clone().context(
                "the board has no Secure Boot firmware (qemu.firmware_code_secure_boot)",
            )?;
        let template = self
            .qemu
            .firmware_vars
            .clone()
            .context("board has no qemu.firmware_vars")?;
        let package = self
            .qemu
            .firmware_package
            .as_deref()
            .unwrap_or("the board's firmware package");
        if !Path::new(&code).exists() {
            anyhow::bail!("firmware file {code} is missing (Debian package: {package})");
        }
        if !vars.exists() {
            std::fs::copy(&template, vars)
                .with_context(|| format!("cannot copy {template} to {}", vars.display()))?;
        }
        self.boot = BootMode::Uefi {
            code,
            vars: vars.to_path_buf(),
        };
        self.secure_boot = true;
        Ok(())
    }

    /// Whether the machine can take a virtio-serial device
    /// ([`QemuSpec::has_virtio_serial`]).
    pub fn has_virtio_serial(&self) -> bool {
        self.qemu.has_virtio_serial()
    }

    pub fn command(&self) -> Cmd {
        let mut c = Cmd::new(Tool::owned(
            &self.qemu.binary,
            &self.qemu.package,
            "boot images (edgeimg run, VM tests)",
        ));
        let accel = match (self.kvm, self.qemu.tcg_single_thread) {
            (true, _) => "kvm",
            (false, true) => "tcg,thread=single",
            (false, false) => "tcg",
        };
        c = c.args(["-accel", accel]);
        if self.secure_boot && self.qemu.secure_boot_smm {
            // The Secure Boot firmware keeps its variables writable only from
            // SMM: the machine needs SMM, and the variable flash must answer
            // only to it.
            c = c.args(["-machine", &format!("{},smm=on", self.qemu.machine)]);
            c = c.args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
        } else {
            c = c.args(["-machine", &self.qemu.machine]);
        }
        c = c.args(["-cpu", &self.qemu.cpu]);
        // raspi4b fixes its CPU count; other machines take -smp.
        if self.qemu.boot == QemuBoot::Uefi {
            c = c.args(["-smp", &self.cpus.to_string()]);
        }
        c = c.args(["-m", &self.memory_mib.to_string()]);
        match &self.boot {
            BootMode::Uefi { code, vars } => {
                c = c.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={code}"
                ));
                c = c.arg("-drive").arg(format!(
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
                c = c
                    .arg("-kernel")
                    .arg(kernel)
                    .arg("-initrd")
                    .arg(initrd)
                    .arg("-dtb")
                    .arg(dtb)
                    .arg("-append")
                    .arg(append);
            }
        }
        c = c.arg("-drive").arg(format!(
            "file={},format=raw,if={},cache=unsafe",
            self.disk.display(),
            self.qemu.disk_interface
        ));
        for d in &self.extra_disks {
            c = c.arg("-drive").arg(format!(
                "file={},format=raw,if={},readonly=on",
                d.display(),
                self.qemu.disk_interface
            ));
        }
        let nic = if self.user_net {
            // virtio: every board the update VM tests boot has PCI.
            "user,model=virtio-net-pci".to_string()
        } else {
            "none".to_string()
        };
        c = c.args(["-nic", &nic, "-no-reboot", "-display", "none"]);
        if let Some(path) = &self.record_port {
            c = c.args(["-device", "virtio-serial-pci,id=edgeimg-vser"]);
            // QEMU's option syntax doubles a comma inside a value.
            let path = path.display().to_string().replace(',', ",,");
            c = c
                .arg("-chardev")
                .arg(format!("file,id=edgeimg-rec,path={path}"));
            c = c.arg("-device").arg(format!(
                "virtserialport,bus=edgeimg-vser.0,chardev=edgeimg-rec,name={RECORD_PORT}"
            ));
        }
        if let Some(sock) = &self.tpm_socket {
            let sock = sock.display().to_string().replace(',', ",,");
            let model = if self.qemu.machine.starts_with("virt") {
                "tpm-tis-device"
            } else {
                "tpm-crb"
            };
            c = c
                .arg("-chardev")
                .arg(format!("socket,id=chrtpm,path={sock}"))
                .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
                .arg("-device")
                .arg(format!("{model},tpmdev=tpm0"));
        }
        if self.snapshot {
            c = c.arg("-snapshot");
        }
        c
    }

    /// Serial ports before the console one are connected to nothing.
    fn unused_serial_ports(&self, mut c: Cmd) -> Cmd {
        for _ in 0..self.qemu.serial_port {
            c = c.args(["-serial", "null"]);
        }
        c
    }

    /// Runs with the serial console (and QEMU's monitor, Ctrl-A c) on this terminal.
    pub fn run_interactive(&self) -> Result<std::process::ExitStatus> {
        self.unused_serial_ports(self.command())
            .args(["-serial", "mon:stdio"])
            .status()
            .with_context(|| format!("cannot start {}", self.qemu.binary))
    }

    /// Starts the VM with its serial console captured line by line. Every line
    /// is also appended to `log` (kept for failed tests).
    pub fn spawn_captured(&self, log: &Path) -> Result<RunningVm> {
        let (mut c, _) = self
            .unused_serial_ports(self.command())
            .args(["-serial", "stdio", "-monitor", "none"])
            .into_std()?;
        c.stdin(if self.console_input {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some(path) = &self.record_port {
            anyhow::ensure!(
                self.has_virtio_serial(),
                "QEMU's {} has no slot for the record port",
                self.qemu.machine
            );
            // QEMU truncates the file: unlink a hard-linked copy's first (as
            // for the log below).
            let _ = std::fs::remove_file(path);
        }
        let mut child = c
            .spawn()
            .with_context(|| format!("cannot start {}", self.qemu.binary))?;
        let stdout = child.stdout.take().expect("piped");
        let console_in = child.stdin.take();
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
            console_in,
            lines: rx,
            log: log.to_path_buf(),
            port: self.record_port.clone().map(|path| PortTail {
                path,
                offset: 0,
                partial: Vec::new(),
                lines: VecDeque::new(),
            }),
        })
    }
}

pub struct RunningVm {
    child: Child,
    /// The serial console's input, with [`Vm::console_input`].
    console_in: Option<std::process::ChildStdin>,
    lines: Receiver<String>,
    pub log: PathBuf,
    port: Option<PortTail>,
}

/// The host's read position in the record port's file.
struct PortTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    lines: VecDeque<String>,
}

impl PortTail {
    /// Reads what QEMU appended since the last call; complete lines are
    /// queued, and with `flush` (QEMU has exited) an unterminated last one too.
    fn read(&mut self, flush: bool) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            // QEMU has not created it yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).context(format!("cannot read {}", self.path.display())),
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut new = Vec::new();
        f.read_to_end(&mut new)?;
        self.offset += new.len() as u64;
        self.partial.extend_from_slice(&new);
        while let Some(at) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=at).collect();
            self.lines.push_back(
                String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            );
        }
        if flush && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.lines
                .push_back(String::from_utf8_lossy(&line).into_owned());
        }
        Ok(())
    }
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

    /// The next line the guest wrote to the record port, within `timeout`:
    /// `Ok(None)` at the deadline, an error when the VM has stopped and left
    /// no more lines, or when the VM has no record port. Console lines are
    /// left for [`RunningVm::wait_for`].
    pub fn next_port_line(&mut self, timeout: Duration) -> Result<Option<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            // Whether QEMU had exited before this read: then the read saw
            // everything it wrote.
            let exited = self.child.try_wait()?.is_some();
            let port = self.port.as_mut().context("this VM has no record port")?;
            if let Some(line) = port.lines.pop_front() {
                return Ok(Some(line));
            }
            port.read(exited)?;
            if let Some(line) = port.lines.pop_front() {
                return Ok(Some(line));
            }
            if exited {
                let path = port.path.display().to_string();
                anyhow::bail!("the VM stopped (record port {path}){}", self.tail());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // A regular file has no readiness to wait on: poll it, within
            // the caller's deadline.
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    /// The next console line within `timeout`: `Ok(None)` at the deadline, an
    /// error once the console has closed (the VM stopped).
    pub fn next_console_line(&mut self, timeout: Duration) -> Result<Option<String>> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(Some(line)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                anyhow::bail!("the VM stopped{}", self.tail())
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

    /// Types `text` on the serial console (needs [`Vm::console_input`]).
    pub fn send_console(&mut self, text: &[u8]) -> Result<()> {
        use std::io::Write;
        let input = self
            .console_in
            .as_mut()
            .context("the VM was started without console input")?;
        input.write_all(text)?;
        input.flush()?;
        Ok(())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The console log's last lines, for error messages.
    pub fn tail(&self) -> String {
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
