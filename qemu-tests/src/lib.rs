//! Shared harness for the VM tests: build a test image through the library,
//! give it a disk larger than the image, boot it in QEMU and read the guest's
//! self-check record, with deadlines (no sleeps). The guest's results come
//! as framed records ([`record`]) on a virtio-serial port nothing else writes
//! to, or, on machines without virtio (rpi4), on the console, where only
//! records that verify are read.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use edgeimg::pipeline::{BuildOptions, BuildReport};

pub mod record;
pub mod repo_server;
pub mod selinux;
pub mod update_vm;

/// Boot deadlines are generous: TCG on a busy 2-core CI machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(900);
pub const SELFCHECK_TIMEOUT: Duration = Duration::from_secs(180);
pub const POWEROFF_TIMEOUT: Duration = Duration::from_secs(180);
/// A guest that reads its results from the console (rpi4) and writes nothing
/// to it for this long has stalled: QEMU's raspi4b model has been seen to
/// freeze whole (no kernel message, not even a soft-lockup warning) between
/// two systemd units. The longest quiet stretch of a good rpi4 boot here is
/// under three minutes (waiting for the node to be ready).
pub const CONSOLE_STALL: Duration = Duration::from_secs(420);

/// The error [`Records::wait`] returns when the console stayed silent for
/// [`CONSOLE_STALL`]: the emulator froze, so the boot may be redone once
/// from the disk as it was before it ([`boot_once_redoing_a_stall`]).
#[derive(Debug)]
pub struct GuestStalled {
    pub silent: Duration,
}

impl std::fmt::Display for GuestStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the guest wrote nothing to its console for {}s (the emulator stalled)",
            self.silent.as_secs()
        )
    }
}

impl std::error::Error for GuestStalled {}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Serialises builds and boots across test binaries and threads: on two cores,
/// parallel TCG guests and builds slow each other 1.5-2.5x.
pub fn exclusive() -> edgeimg::cache::Lock {
    edgeimg::cache::Lock::acquire(&edgeimg::cache::dir().join("vm-tests.lock"))
        .expect("VM test lock")
}

/// Builds the image described by `config` into `out`, with K3s from `bundle`.
pub fn build(
    config: &Path,
    board: Option<&str>,
    out: &Path,
    bundle: Option<&Path>,
) -> Result<BuildReport> {
    edgeimg::pipeline::build(&BuildOptions {
        config: Some(config.to_path_buf()),
        board: board.map(String::from),
        out: out.to_path_buf(),
        refresh: false,
        compression: Some(edgeimg::artifact::Compression::None),
        quiet: false,
        bundle: bundle.map(Path::to_path_buf),
        lock: None,
        signing_key: None,
        update: false,
        secure_boot_keys: None,
    })
}

/// The K3s bundle for the VM tests: `EDGEIMG_K3S_BUNDLE` (a directory of
/// real upstream assets) when set, else edgeimg's labelled STAND-IN bundle made
/// by qemu-tests/standin/make-bundle (NOT K3s). Returns the directory and
/// whether it is the stand-in.
pub fn k3s_bundle(arch: &str, work: &Path) -> Result<(PathBuf, bool)> {
    if let Some(real) = std::env::var_os("EDGEIMG_K3S_BUNDLE") {
        return Ok((PathBuf::from(real), false));
    }
    let dir = work.join("standin-bundle");
    let script = repo_root().join("qemu-tests/standin/make-bundle");
    let st = std::process::Command::new(&script)
        .args(["--arch", arch, "--out"])
        .arg(&dir)
        .status()?;
    anyhow::ensure!(st.success(), "{} --arch {arch} failed", script.display());
    Ok((dir, true))
}

/// The self-check image's config: users, the self-check overlay, K3s with a
/// preloaded image (docker.io/edgeimg/hello:1, made by make-bundle).
pub fn selfcheck_config(arch: &str, work: &Path) -> Result<PathBuf> {
    let hello = work.join("hello.tar");
    let script = repo_root().join("qemu-tests/standin/make-bundle");
    let st = std::process::Command::new(&script)
        .args(["--preload-image", "--arch", arch, "--out"])
        .arg(&hello)
        .status()?;
    anyhow::ensure!(st.success(), "{} --preload-image failed", script.display());
    let base = std::fs::read_to_string(repo_root().join("qemu-tests/selfcheck.toml"))?;
    let overlays: Vec<String> = ["record", "selfcheck"]
        .iter()
        .map(|o| format!("{:?}", overlay(o).display().to_string()))
        .collect();
    let text = base.replace(
        "overlays = [\"overlays/record\", \"overlays/selfcheck\"]",
        &format!("overlays = [{}]", overlays.join(", ")),
    ) + "\n[k3s]\nimages = [\"hello.tar\"]\n";
    anyhow::ensure!(
        !text.contains("\"overlays/"),
        "qemu-tests/selfcheck.toml's overlays line is not the one selfcheck_config replaces"
    );
    let path = work.join("edgeimg.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The test-only overlay `name` (qemu-tests/overlays/NAME).
pub fn overlay(name: &str) -> PathBuf {
    repo_root().join("qemu-tests/overlays").join(name)
}

/// Gives `vm` the record port when its machine can take one; its file sits
/// beside the console log `log` (as NAME.records), kept with it.
pub fn attach_record_port(vm: &mut edgeimg::qemu::Vm, log: &Path) {
    if vm.has_virtio_serial() {
        vm.record_port = Some(log.with_extension("records"));
    }
}

/// Reads one boot's records: from the record port when the VM has one, else
/// from the console (rpi4).
pub struct Records {
    port: bool,
    asm: record::Assembler,
}

impl Records {
    pub fn new(vm: &edgeimg::qemu::Vm) -> Records {
        Records {
            port: vm.record_port.is_some(),
            asm: record::Assembler::default(),
        }
    }

    /// The next intact record of `kind` within `timeout`. Lines that do not
    /// verify are skipped (and logged); fails at the deadline, or when the VM
    /// stops first, saying so.
    pub fn wait(
        &mut self,
        vm: &mut edgeimg::qemu::RunningVm,
        kind: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let channel = if self.port { "record port" } else { "console" };
        let mut skipped = 0;
        let mut last_line = Instant::now();
        loop {
            if let Some(r) = self.asm.take(kind) {
                return Ok(r);
            }
            let silent = last_line.elapsed();
            if !self.port && silent >= CONSOLE_STALL {
                return Err(anyhow::Error::new(GuestStalled { silent }).context(format!(
                    "no intact `{kind}` record on the console{}",
                    vm.tail()
                )));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                anyhow::bail!(
                    "no intact `{kind}` record on the {channel} within {}s ({skipped} torn record line(s) skipped){}",
                    timeout.as_secs(),
                    vm.tail()
                );
            }
            let line = if self.port {
                vm.next_port_line(left)
            } else {
                vm.next_console_line(left.min(CONSOLE_STALL.saturating_sub(silent)))
            }
            .with_context(|| {
                format!("no intact `{kind}` record on the {channel} ({skipped} torn record line(s) skipped)")
            })?;
            let Some(line) = line else { continue };
            last_line = Instant::now();
            if let record::Fed::Rejected(why) = self.asm.feed(&line) {
                skipped += 1;
                let shown: String = line.chars().take(160).collect();
                eprintln!("skipped a record line that does not verify ({why}): {shown}...");
            }
        }
    }
}

/// A sparse copy of `image` grown to `size` bytes: a medium larger than the image.
pub fn disk_copy(image: &Path, dest: &Path, size: u64) -> Result<()> {
    edgeimg::sparse::copy_sparse(image, dest)?;
    let f = std::fs::OpenOptions::new().write(true).open(dest)?;
    f.set_len(size)?;
    Ok(())
}

/// One boot: waits for the self-check record, then for power-off. Returns
/// the self-check's JSON and the agent's cluster line of that boot ("edgeimg:
/// cluster ready..." or "edgeimg: cluster not ready: ...", which the caller
/// asserts), as the guest read it from its journal.
///
/// With `secure_boot_vars`, the machine runs the board's Secure Boot firmware
/// on that variable store (kept by the caller across boots); with
/// `tpm_state`, it has a software TPM2 (swtpm) whose state is that directory
/// (the same directory on every boot: the same TPM).
pub fn boot_once(
    board: &str,
    disk: &Path,
    secure_boot_vars: Option<&Path>,
    tpm_state: Option<&Path>,
    work: &Path,
    log_name: &str,
) -> Result<(serde_json::Value, String)> {
    let b = edgeimg::config::board::load(board)?;
    let mut vm = edgeimg::qemu::Vm::new(&b.qemu, disk, work)?;
    if let Some(vars) = secure_boot_vars {
        vm.use_secure_boot_firmware(vars)?;
    }
    // Kept until QEMU exits.
    let swtpm = tpm_state
        .map(edgeimg::qemu::swtpm::Swtpm::start)
        .transpose()?;
    vm.tpm_socket = swtpm.as_ref().map(|t| t.socket.clone());
    let log = log_dir().join(log_name);
    attach_record_port(&mut vm, &log);
    let mut records = Records::new(&vm);
    let mut running = vm.spawn_captured(&log)?;
    // The self-check runs once the node is ready (or has given up).
    let bytes = records
        .wait(&mut running, "selfcheck", READY_TIMEOUT + SELFCHECK_TIMEOUT)
        .context("waiting for the guest self-check")?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "the self-check record is not JSON: {}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    let ready = v["cluster_line"]
        .as_str()
        .filter(|l| l.starts_with("edgeimg: cluster "))
        .with_context(|| format!("no cluster line in the self-check: {v}"))?
        .to_string();
    let status = running.wait_exit(POWEROFF_TIMEOUT)?;
    anyhow::ensure!(status.success(), "QEMU exited with {status}");
    Ok((v, ready))
}

/// [`boot_once`], redone once when the emulator stalled ([`GuestStalled`]):
/// the disk is put back as it was before the stalled boot (a sparse copy
/// kept for that), so the second try starts from the same state and every
/// assertion holds for it as for a first try. Any other failure is returned
/// as is. Both console logs are kept (the stalled one as `NAME-stalled.log`).
/// A TPM's state (`tpm_state`) is not put back: only the disk is.
/// Boards with a record port are not watched for silence (their console may
/// rest while the port carries the results), so they are booted once.
pub fn boot_once_redoing_a_stall(
    board: &str,
    disk: &Path,
    secure_boot_vars: Option<&Path>,
    tpm_state: Option<&Path>,
    work: &Path,
    log_name: &str,
) -> Result<(serde_json::Value, String)> {
    if edgeimg::config::board::load(board)?
        .qemu
        .has_virtio_serial()
    {
        return boot_once(board, disk, secure_boot_vars, tpm_state, work, log_name);
    }
    let before = work.join("disk-before-boot.raw");
    edgeimg::sparse::copy_sparse(disk, &before)
        .with_context(|| format!("keep {} before the boot", disk.display()))?;
    let first = boot_once(board, disk, secure_boot_vars, tpm_state, work, log_name);
    let stalled = matches!(&first, Err(e) if e.downcast_ref::<GuestStalled>().is_some());
    if !stalled {
        let _ = std::fs::remove_file(&before);
        return first;
    }
    let e = first.unwrap_err();
    let log = log_dir().join(log_name);
    let kept = log.with_file_name(log_name.replace(".log", "-stalled.log"));
    std::fs::rename(&log, &kept)?;
    eprintln!(
        "{board}: {e:#}\n{board}: console kept as {}; booting again from the disk as it was before that boot (once)",
        kept.display()
    );
    std::fs::rename(&before, disk)?;
    boot_once(board, disk, secure_boot_vars, tpm_state, work, log_name)
}

/// What systemd-boot prints once the firmware took the keys (then it resets
/// the machine).
pub const SECURE_BOOT_ENROLLED: &str = "Custom Secure Boot keys successfully enrolled";
/// Lines that only appear once a kernel runs.
pub const KERNEL_STARTED: [&str; 2] = ["Linux version", "EFI stub: "];

/// The boot before a signed image's first: the board's Secure Boot firmware
/// in setup mode (`vars` a copy of its empty store) starts systemd-boot, which
/// enrolls the image's keys from `loader/keys/auto` (db, KEK, then PK: the
/// firmware leaves setup mode) and resets the machine; QEMU runs with
/// -no-reboot, so that ends the QEMU process. No kernel may run before.
pub fn enroll_secure_boot_keys(board: &str, disk: &Path, vars: &Path, work: &Path) -> Result<()> {
    let b = edgeimg::config::board::load(board)?;
    let mut vm = edgeimg::qemu::Vm::new(&b.qemu, disk, work)?;
    vm.use_secure_boot_firmware(vars)?;
    let log = log_dir().join(format!("{board}-secure-boot-enroll.log"));
    let mut running = vm.spawn_captured(&log)?;
    running.wait_for(SECURE_BOOT_ENROLLED, READY_TIMEOUT)?;
    let status = running.wait_exit(POWEROFF_TIMEOUT)?;
    anyhow::ensure!(
        status.success(),
        "QEMU exited with {status} after enrolling"
    );
    let text = std::fs::read_to_string(&log)?;
    anyhow::ensure!(
        !KERNEL_STARTED.iter().any(|k| text.contains(k)),
        "a kernel ran before the keys were enrolled ({})",
        log.display()
    );
    Ok(())
}

/// Console logs are kept here (target/vm-logs) for failed runs.
pub fn log_dir() -> PathBuf {
    let d = repo_root().join("target").join("vm-logs");
    std::fs::create_dir_all(&d).unwrap();
    d
}

const GIB: u64 = 1024 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// A built self-check image, kept in its temporary directory.
pub struct SelfcheckImage {
    pub board: String,
    pub dir: tempfile::TempDir,
    pub image: PathBuf,
    /// Built with the labelled stand-in bundle (not `EDGEIMG_K3S_BUNDLE`).
    pub stand_in: bool,
    /// When set, every Linux boot of [`check_server_boots`] has a software
    /// TPM2 whose state is this directory (one TPM for all of them).
    pub tpm_state: Option<PathBuf>,
    /// Signed for Secure Boot ([`SelfcheckImage::build_secure_boot`]): the
    /// firmware variable store its boots share, in setup mode until the
    /// first boot enrolls the image's keys.
    pub secure_boot_vars: Option<PathBuf>,
}

impl SelfcheckImage {
    /// The self-check image for `board`, built with the VM tests' bundle.
    /// Call under [`exclusive`].
    pub fn build(board: &str) -> SelfcheckImage {
        Self::build_with(board, "")
    }

    /// [`SelfcheckImage::build`] with `image_keys` (TOML lines) added to the
    /// config's `[image]` section, e.g. `root_compression = "lzma"`.
    pub fn build_with(board: &str, image_keys: &str) -> SelfcheckImage {
        Self::build_in(tempfile::tempdir().unwrap(), board, image_keys, "", None)
    }

    /// [`SelfcheckImage::build_with`], signed for UEFI Secure Boot with keys
    /// `edgeimg keygen --secure-boot` makes for the test (`[secure_boot]
    /// keys`, enrollment left at its default, `if-safe`). Its boots run the
    /// board's Secure Boot firmware from setup mode: [`check_server_boots`]
    /// lets systemd-boot enroll the keys first.
    pub fn build_secure_boot(board: &str, image_keys: &str) -> SelfcheckImage {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys/fleet");
        std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
        edgeimg::commands::keygen(&keys, true, false, "edgeimg VM test", true)
            .unwrap_or_else(|e| panic!("keygen --secure-boot: {e:#}"));
        let section = format!("\n[secure_boot]\nkeys = {:?}\n", keys.display().to_string());
        let vars = dir.path().join("secure-boot-vars.fd");
        Self::build_in(dir, board, image_keys, &section, Some(vars))
    }

    /// The self-check image for `board` with `sections` (TOML) appended to
    /// its config, built in `dir` (which holds the files they name).
    pub fn build_with_sections(
        dir: tempfile::TempDir,
        board: &str,
        sections: &str,
    ) -> SelfcheckImage {
        Self::build_in(dir, board, "", sections, None)
    }

    /// What a boot of this image with no TPM2 leaves in the self-check's
    /// `data_unlock` (/run/edgeimg-data-unlock): "plain" for an image whose
    /// data partition is sealed to a TPM2 with `no_tpm = "plain"` (a boot
    /// without a TPM2 keeps it unencrypted), "" for one without `[data]
    /// encryption`. The harness' VMs have no TPM2, and an image with
    /// `no_tpm = "refuse"` would not boot in them.
    pub fn data_unlock_without_tpm(&self) -> &'static str {
        let manifest =
            edgeimg::manifest::Manifest::read(&self.dir.path().join("manifest.json")).unwrap();
        match manifest.data_encryption {
            None => "",
            Some(e) if e.encryption == "none" => "",
            Some(e) => {
                assert_eq!(
                    e.no_tpm.as_deref(),
                    Some("plain"),
                    "the harness' VMs have no TPM2: {e:?}"
                );
                "plain"
            }
        }
    }

    fn build_in(
        dir: tempfile::TempDir,
        board: &str,
        image_keys: &str,
        sections: &str,
        secure_boot_vars: Option<PathBuf>,
    ) -> SelfcheckImage {
        let arch = edgeimg::config::board::load(board).unwrap().arch;
        let (bundle, stand_in) =
            k3s_bundle(arch.debian(), dir.path()).expect("K3s bundle for the VM test");
        let config = selfcheck_config(arch.debian(), dir.path()).expect("self-check config");
        if !image_keys.is_empty() {
            let text = std::fs::read_to_string(&config).unwrap();
            assert!(text.contains("[image]\n"), "{text}");
            let text = text.replacen("[image]\n", &format!("[image]\n{image_keys}\n"), 1);
            std::fs::write(&config, text).unwrap();
        }
        if !sections.is_empty() {
            let mut text = std::fs::read_to_string(&config).unwrap();
            text.push_str(sections);
            std::fs::write(&config, text).unwrap();
        }
        let report = build(&config, Some(board), dir.path(), Some(&bundle))
            .unwrap_or_else(|e| panic!("build the {board} test image: {e:#}"));
        SelfcheckImage {
            board: board.to_string(),
            dir,
            image: report.image,
            stand_in,
            secure_boot_vars,
            tpm_state: None,
        }
    }

    /// What `dump.erofs -s` says about the root (slot A) inside the image,
    /// read in place at the partition's offset from manifest.json.
    pub fn root_superblock(&self) -> String {
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.dir.path().join("manifest.json")).expect("manifest.json"),
        )
        .unwrap();
        let root = manifest["layout"]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["role"] == "root-a")
            .unwrap_or_else(|| panic!("no root-a partition: {manifest}"));
        let o = std::process::Command::new("dump.erofs")
            .arg("-s")
            .arg(format!("--offset={}", root["offset"].as_u64().unwrap()))
            .arg(&self.image)
            .output()
            .expect("dump.erofs");
        assert!(o.status.success(), "dump.erofs -s: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// The product's proof for one board: build the self-check image, boot it twice
/// on a medium larger than the image and assert on what the guest reports.
/// First boot: immutable root, data partition grown to the medium, identity
/// and users made, ready line. Second boot: /etc change kept, agent not rerun.
pub fn check_two_boots(board: &str) {
    let _guard = exclusive();
    let img = SelfcheckImage::build(board);
    check_server_boots(&img);
}

/// [`check_two_boots`] on an image already built; returns the first boot's
/// self-check (a single server, as the image's defaults say).
pub fn check_server_boots(img: &SelfcheckImage) -> serde_json::Value {
    let board = img.board.as_str();
    let out = &img.dir;
    let stand_in = img.stand_in;
    let image_len = std::fs::metadata(&img.image).unwrap().len();
    // A bigger medium; a power of two so QEMU's SD card model takes it as is.
    let disk_len = (image_len + 2 * GIB).next_power_of_two();
    let disk = out.path().join("disk.raw");
    disk_copy(&img.image, &disk, disk_len).unwrap();
    let vars = img.secure_boot_vars.as_deref();
    if let Some(vars) = vars {
        enroll_secure_boot_keys(board, &disk, vars, out.path())
            .unwrap_or_else(|e| panic!("{board} Secure Boot enrollment: {e:#}"));
    }

    let (first, ready) = boot_once_redoing_a_stall(
        board,
        &disk,
        vars,
        img.tpm_state.as_deref(),
        out.path(),
        &format!("{board}-boot1.log"),
    )
    .unwrap_or_else(|e| panic!("{board} first boot: {e:#}"));
    // The cluster-ready line; the stand-in says it is not K3s.
    assert!(ready.contains("edgeimg: cluster ready"), "{ready}");
    assert_eq!(ready.contains("stand-in"), stand_in, "{ready}");
    assert_eq!(first["status"]["cluster_ready"], true, "{first}");
    assert_eq!(first["status"]["k3s_role"], "server", "{first}");
    let k = &first["k3s"];
    assert_eq!(k["active"], "k3s", "k3s.service must be running: {first}");
    assert_eq!(k["enabled"], "k3s", "only k3s.service enabled: {first}");
    assert!(
        k["join"].is_null(),
        "a single server joins nothing: {first}"
    );
    assert!(
        k["images"]
            .as_str()
            .unwrap()
            .contains("docker.io/edgeimg/hello:1"),
        "preloaded image imported: {first}"
    );
    assert!(
        k["hello"]
            .as_str()
            .unwrap()
            .contains("hello from a preloaded image"),
        "the preloaded image runs: {first}"
    );
    assert!(
        k["nerdctl_sees_hello"].as_u64().unwrap() >= 1,
        "nerdctl reaches K3s' containerd in k8s.io: {first}"
    );
    assert_eq!(k["config_mode"], "600", "{first}");
    // A first server generates its token; it must be in no log line.
    assert_eq!(
        k["token_logged"], 0,
        "the join token is in the journal (or no token file): {first}"
    );
    if !stand_in {
        // Real K3s (EDGEIMG_K3S_BUNDLE): a Ready node and a Running pod from
        // the preloaded image, with no network to pull from.
        assert_eq!(k["node_ready"], "True", "node Ready: {first}");
        assert_eq!(
            k["pod_phase"], "Running",
            "pod from the preloaded image: {first}"
        );
    }
    if stand_in {
        assert_eq!(
            k["imported"], 2,
            "airgap tarball and preloaded image imported on first boot: {first}"
        );
    }
    assert_eq!(first["usr_ro"], true, "/usr must be read-only: {first}");
    assert_eq!(first["root_fstype"], "erofs", "{first}");
    // The firmware's own SecureBoot variable: 1 once the keys are enrolled
    // and the signed chain booted; 0 (or none, no UEFI) otherwise.
    let enforced = first["secureboot"] == "1";
    assert_eq!(enforced, vars.is_some(), "Secure Boot state: {first}");
    // dm-verity is on by default and no self-check config turns it off: the
    // root must come through the verity device, never the raw slot.
    assert_eq!(first["root_source"], "/dev/mapper/edgeimg-root", "{first}");
    assert_eq!(
        first["root_verity"], "verified",
        "the root is not a dm-verity device the kernel verifies: {first}"
    );
    assert_eq!(first["etc_fstype"], "overlay", "{first}");
    assert_eq!(first["var_fstype"], "ext4", "{first}");
    let unlock = img.data_unlock_without_tpm();
    assert_plain_data(&first, unlock, &format!("{board}-boot1.log"));
    assert_eq!(first["disk_bytes"].as_u64(), Some(disk_len), "{first}");
    let part_end = first["part_start"].as_u64().unwrap() + first["part_bytes"].as_u64().unwrap();
    // Grown to the end of the medium, less the backup GPT and 1 MiB alignment.
    assert!(
        part_end + 2 * MIB > disk_len && part_end <= disk_len,
        "data partition ends at {part_end} of {disk_len}: {first}"
    );
    assert!(
        first["part_bytes"].as_u64().unwrap() > 2 * GIB,
        "data partition did not grow: {first}"
    );
    assert!(
        first["fs_bytes"].as_u64().unwrap() * 100 > first["part_bytes"].as_u64().unwrap() * 90,
        "filesystem did not grow: {first}"
    );
    assert_eq!(
        first["etc_marker"], "",
        "the /etc marker must not exist before the first boot: {first}"
    );
    assert_eq!(first["firstboot_condition"], "yes", "{first}");
    assert_eq!(first["status"]["ready"], true, "{first}");
    assert_eq!(first["status"]["firstboot_this_boot"], true, "{first}");
    assert_eq!(first["status"]["boots"], 1, "{first}");
    assert!(
        first["hostname"].as_str().unwrap().starts_with("vm-"),
        "hostname from the pattern: {first}"
    );
    assert_eq!(first["ops_keys"], 1, "user ops gets its key: {first}");
    assert!(
        first["ops_groups"]
            .as_str()
            .unwrap()
            .split(',')
            .any(|g| g == "sudo"),
        "{first}"
    );
    assert_eq!(
        first["host_key"], true,
        "SSH host keys made on first boot: {first}"
    );
    assert_eq!(
        first["sshd"], "active:ssh_host_ed25519_key,ssh_host_ecdsa_key",
        "sshd runs with the Ed25519 and ECDSA keys first boot made: {first}"
    );
    assert_eq!(
        first["ssh_socket"], "disabled",
        "units as the build enabled them (no first-boot preset-all): {first}"
    );
    assert_eq!(
        first["upd"], "nnn",
        "ldconfig, sysusers and the catalog update skipped (the build's update stamps): {first}"
    );

    let (second, _) = boot_once_redoing_a_stall(
        board,
        &disk,
        vars,
        img.tpm_state.as_deref(),
        out.path(),
        &format!("{board}-boot2.log"),
    )
    .unwrap_or_else(|e| panic!("{board} second boot: {e:#}"));
    let boot1 = first["boot_id"].as_str().unwrap();
    assert_ne!(second["boot_id"], first["boot_id"]);
    assert_eq!(
        second["etc_marker"],
        format!("written-on-{boot1}"),
        "/etc change lost: {second}"
    );
    assert_eq!(
        second["firstboot_condition"], "no",
        "first-boot unit ran again: {second}"
    );
    assert_eq!(
        second["status"]["firstboot_boot_id"], first["boot_id"],
        "{second}"
    );
    assert_eq!(second["status"]["firstboot_this_boot"], false, "{second}");
    assert_eq!(second["status"]["boots"], 2, "{second}");
    assert_eq!(
        second["hostname"], first["hostname"],
        "hostname must persist: {second}"
    );
    assert_eq!(second["usr_ro"], true);
    assert_plain_data(&second, unlock, &format!("{board}-boot2.log"));
    assert_eq!(second["k3s"]["active"], "k3s", "{second}");
    assert!(
        second["k3s"]["hello"]
            .as_str()
            .unwrap()
            .contains("hello from a preloaded image"),
        "{second}"
    );
    if stand_in {
        // K3s' import cache: unchanged archives are not imported again.
        assert_eq!(
            second["k3s"]["imported"], 0,
            "re-imported on the second boot: {second}"
        );
        assert_eq!(second["k3s"]["cached"], 2, "{second}");
    }
    first
}

/// The second scenario on the same image: a second disk of it, flashed the
/// way an operator does (`edgeimg node --role agent` then `edgeimg flash
/// --to-file --node`), boots as a K3s agent of `server_hostname`. The two
/// VMs are not networked (the server is not contacted): this checks what the
/// node makes of node.toml. Asserts: k3s-agent.service (not k3s.service)
/// enabled; config.yaml (0600) names the server URL and the token file, which
/// holds node.toml's token; the token is on no console or journal line.
/// With the stand-in the agent also reports Ready (the stand-in answers the
/// readiness question for any role); real K3s cannot join without a server,
/// so with `EDGEIMG_K3S_BUNDLE` the node reports "cluster not ready" after
/// `cluster_ready_timeout_secs`.
pub fn check_agent_disk(img: &SelfcheckImage, server_hostname: &str) {
    let board = img.board.as_str();
    let work = img.dir.path();
    let mut raw = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut raw).unwrap();
    let token = format!("K10{}::server:edgeimg-vm-test", hex(&raw));
    let server = format!("https://{server_hostname}:6443");
    let spec = edgeimg::node::NodeSpec {
        hostname: Some("agent-1".into()),
        role: Some("agent".into()),
        server: Some(server.clone()),
        token: Some(token.clone()),
        ..Default::default()
    };
    let node = work.join("agent-node.toml");
    let text = edgeimg::node::make(&spec)
        .and_then(|c| edgeimg::node::render(&c))
        .expect("agent node.toml");
    edgeimg::node::write(&text, Some(&node), true, true).expect("write agent node.toml");

    let disk = work.join("agent-disk.raw");
    let r = edgeimg::flash::flash(&edgeimg::flash::FlashOptions {
        image: img.image.clone(),
        target: disk.clone(),
        to_file: true,
        yes: true,
        node: Some(node),
        quiet: true,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("flash the agent disk: {e:#}"));
    assert!(r.node_file, "{r:?}");
    let image_len = std::fs::metadata(&img.image).unwrap().len();
    let disk_len = (image_len + 2 * GIB).next_power_of_two();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(disk_len)
        .unwrap();

    let log_name = format!("{board}-agent.log");
    let (v, ready) = boot_once(board, &disk, None, None, work, &log_name)
        .unwrap_or_else(|e| panic!("{board} agent boot: {e:#}"));
    let console = std::fs::read_to_string(log_dir().join(&log_name)).unwrap();
    assert!(
        !console.contains(&token),
        "the join token appears on the agent's console (log {log_name})"
    );
    if img.stand_in {
        assert!(ready.contains("cluster ready (stand-in"), "{ready}");
        assert_eq!(v["status"]["cluster_ready"], true, "{v}");
    } else {
        assert!(ready.contains("cluster not ready"), "{ready}");
    }
    assert_eq!(v["status"]["ready"], true, "{v}");
    assert_plain_data(&v, img.data_unlock_without_tpm(), &log_name);
    assert_eq!(v["status"]["k3s_role"], "agent", "{v}");
    assert_eq!(v["hostname"], "agent-1", "hostname from node.toml: {v}");
    let k = &v["k3s"];
    assert_eq!(
        k["enabled"], "k3s-agent",
        "k3s-agent.service, and not k3s.service, enabled: {v}"
    );
    if img.stand_in {
        assert_eq!(k["active"], "k3s-agent", "{v}");
        assert!(
            k["hello"]
                .as_str()
                .unwrap()
                .contains("hello from a preloaded image"),
            "the preloaded image runs on the agent: {v}"
        );
    }
    let join = &k["join"];
    assert_eq!(join["server"], server.as_str(), "{v}");
    assert_eq!(
        join["token_file"],
        edgeimg_agent::schema::K3S_TOKEN_FILE,
        "{v}"
    );
    assert_eq!(
        join["token_sha"],
        edgeimg::artifact::sha256_bytes(token.as_bytes())[..16],
        "the token file holds node.toml's token: {v}"
    );
    assert_eq!(k["config_mode"], "600", "{v}");
    assert_eq!(
        k["token_logged"], 0,
        "the join token is in the journal: {v}"
    );
}

/// The initramfs' line when a device without a TPM2 keeps its data
/// partition unencrypted (`no_tpm = "plain"`, src/base/files/edgeimg-data-luks).
pub const NO_TPM_PLAIN: &str = "edgeimg: data: this device has no TPM2: the data partition stays unencrypted (no_tpm = \"plain\")";

/// A boot without a TPM2 left /var a plain ext4 on the data partition itself
/// (no dm-crypt mapping) and recorded `unlock` ("plain" or, without `[data]
/// encryption`, nothing); with "plain" the console (the log `log_name`)
/// says so.
fn assert_plain_data(v: &serde_json::Value, unlock: &str, log_name: &str) {
    assert_eq!(v["data_unlock"], unlock, "{v}");
    assert_eq!(v["var_fstype"], "ext4", "{v}");
    let source = v["var_source"].as_str().unwrap_or_default();
    assert!(
        source.starts_with("/dev/") && !source.starts_with("/dev/mapper/"),
        "/var is not the data partition itself: {v}"
    );
    let console = std::fs::read_to_string(log_dir().join(log_name)).unwrap();
    assert_eq!(
        console.contains(NO_TPM_PLAIN),
        unlock == "plain",
        "the no-TPM line on the console ({log_name})"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The self-check image with `[selinux] mode = MODE` added.
pub fn selinux_config(arch: &str, work: &Path, mode: &str) -> Result<PathBuf> {
    let path = selfcheck_config(arch, work)?;
    let mut text = std::fs::read_to_string(&path)?;
    // A test-only module lets the self-check's journalctl read the journal
    // (qemu-tests/selinux/edgeimg-selfcheck); edgeimg's own comes first.
    let test_module = repo_root().join("qemu-tests/selinux/edgeimg-selfcheck");
    text.push_str(&format!(
        "\n[selinux]\nmode = \"{mode}\"\nmodules = [{:?}]\n",
        test_module.display().to_string()
    ));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// SHA-256 of the policy module `name` as installed in the image's policy
/// store, read from the data partition (the store lives in /var): libsemanage
/// keeps the `.pp` it was given, bzip2-compressed, as `.../400/<name>/hll`.
pub fn installed_module_sha256(
    image: &Path,
    manifest: &serde_json::Value,
    name: &str,
) -> Result<String> {
    let data = manifest["layout"]["partitions"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["role"] == "data"))
        .context("no data partition in the manifest's layout")?;
    let (offset, size) = (
        data["offset"].as_u64().context("offset")?,
        data["size"].as_u64().context("size")?,
    );
    let work = tempfile::tempdir()?;
    let part = work.path().join("data.ext4");
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(image)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut out = std::fs::File::create(&part)?;
        std::io::copy(&mut f.take(size), &mut out)?;
    }
    let hll = work.path().join("hll.bz2");
    let st = std::process::Command::new("debugfs")
        .arg("-R")
        .arg(format!(
            "dump /lib/selinux/default/active/modules/400/{name}/hll {}",
            hll.display()
        ))
        .arg(&part)
        .output()?;
    anyhow::ensure!(
        st.status.success() && hll.exists(),
        "debugfs could not dump {name}'s hll"
    );
    let pp = std::process::Command::new("bzip2")
        .args(["-dc"])
        .arg(&hll)
        .output()?;
    anyhow::ensure!(pp.status.success(), "{name}'s hll is not bzip2 data");
    Ok(edgeimg::artifact::checksums::sha256_bytes(&pp.stdout))
}
