//! VM test of UEFI Secure Boot on x86_64: OVMF's Secure Boot firmware
//! (`qemu.firmware_code_secure_boot`) with an empty variable store (setup
//! mode: no PK) boots an image built with `[secure_boot] keys` from keys
//! `edgeimg keygen --secure-boot` made for the test, `enroll` left at its
//! default (`if-safe`).
//!
//! - First boot: systemd-boot enrolls the image's keys (db, KEK, then PK:
//!   the firmware leaves setup mode) and resets the machine; QEMU runs with
//!   -no-reboot, so that ends the QEMU process.
//! - Second boot, same disk and variable store: the firmware now enforces
//!   Secure Boot. The signed systemd-boot starts the signed UKI, the node
//!   gets ready, and the guest reports the firmware's own SecureBoot and
//!   SetupMode variables and what the loader started (test-only overlay
//!   qemu-tests/overlays/sbcheck, a `secureboot` record).
//!   That boot also applies the build's own signed update (`--update`: a
//!   signed UKI per slot) from a second disk and reboots.
//! - Third boot: systemd-boot tries slot B's signed UKI, which the firmware
//!   lets through; the node gets ready on slot B and the trial is blessed.
//! - Two copies of the enrolled disk and variables, taken before the update:
//!   one whose UKI has one byte of its command line changed
//!   (`edgeimg.slot=a` made `b`), one whose UKI has its signature removed
//!   (`sbattach --remove`). The firmware refuses to load either: systemd-boot
//!   reports the refusal on the console, and no kernel starts.
//!
//! The image also seals its data partition to the TPM2 (`[data] encryption
//! = "tpm2"`); every boot has a software TPM2 (swtpm) whose state lives in
//! one directory, as a machine's TPM would:
//! - the second boot encrypts the data partition in place (LUKS2), enrolls a
//!   TPM2 token bound to PCR 7, leaves the recovery key on the boot
//!   partition wrapped to the operator's RSA key, opens the partition with
//!   the TPM2 and grows it (the guest reports the LUKS header, the token, how
//!   the partition was opened and /var's size);
//! - the third boot (slot B, after the signed update) opens it with the
//!   TPM2 again: PCR 7 did not change with the update;
//! - a last boot of the same disk with a fresh TPM2 cannot open it: the
//!   console says why and asks for the recovery key, which the test
//!   unwraps from the boot partition with the operator's private key (the
//!   documented openssl command) and types; the node then boots, and the key
//!   appears nowhere on the console;
//! - a copy of the enrolled machine and medium booted with no TPM2: the
//!   image says `no_tpm = "refuse"`, so the initramfs stops the boot with
//!   its message, no ready line, and the data partition is the build's, byte
//!   for byte (checked in the disk file after QEMU exits);
//! - another such copy with its own TPM2, killed as soon as the console says
//!   the LUKS2 header is written and the data is being encrypted (the
//!   initramfs writes the header with `cryptsetup reencrypt --init-only`,
//!   prints the line, then encrypts with `--resume-only`): the header in the
//!   disk file says `online-reencrypt`. Booted again with the same TPM2, the
//!   initramfs says the first encryption was interrupted, takes the
//!   recovery key (unwrapped from that copy's boot partition), resumes the
//!   encryption and enrolls the TPM2; the node gets ready.
//!
//! Every boot that opens the data partition reports the SHA-256 of a file
//! the build put on it (a test-only overlay) and the time of /var's "already
//! seeded" marker, which must be the build's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edgeimg::qemu::swtpm::Swtpm;
use edgeimg_qemu_tests::{
    KERNEL_STARTED, Records, SECURE_BOOT_ENROLLED, attach_record_port, disk_copy, exclusive,
    log_dir, overlay,
};

/// The node's boot under TCG with Secure Boot (each image the firmware loads
/// is hashed in emulated code).
const BOOT: Duration = Duration::from_secs(600);
/// The firmware and systemd-boot alone, up to enrolling or refusing.
const LOADER: Duration = Duration::from_secs(240);
const EXIT: Duration = Duration::from_secs(180);
const GIB: u64 = 1024 * 1024 * 1024;

/// How systemd-boot prints the firmware's refusal to load an image
/// (EFI_SECURITY_VIOLATION or EFI_ACCESS_DENIED, by firmware version), in
/// its "Error loading \EFI\Linux\...: <status>" line.
const REFUSED: [&str; 2] = ["Security violation", "Access denied"];

const UKI: &str = "EFI/Linux/edgeimg-1-a.efi";

/// Where the device leaves its wrapped recovery key on the boot partition.
const WRAPPED_KEY: &str = "edgeimg/recovery-key.bin";
/// The initramfs' recovery prompt (src/base/files/edgeimg-data-luks).
const RECOVERY_PROMPT: &str = "edgeimg: recovery key: ";

/// The first boot's line between writing the LUKS2 header and encrypting
/// the data (src/base/files/edgeimg-data-luks).
const ENCRYPTING_IN_PLACE: &str = "in place now (interrupted, the next boot resumes it";
/// The initramfs' refusal on a device without a TPM2 (`no_tpm = "refuse"`).
const NO_TPM_REFUSED: &str = "refuses to keep /var unencrypted (no_tpm = \"refuse\")";

/// A test-only overlay that puts 8 MiB of data on the data partition
/// (/var/lib/edgeimg-test/data.bin): every boot that opens the partition
/// reports its SHA-256, which must be the build's. Returns the overlay and
/// that digest.
fn data_overlay(dir: &Path) -> (PathBuf, String) {
    let o = dir.join("overlay-data");
    let f = o.join("var/lib/edgeimg-test/data.bin");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    // Not compressible, so it spans 8 MiB of the partition.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..8 * 1024 * 1024 / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(&f, bytes).unwrap();
    let sha = edgeimg::artifact::checksums::sha256_file(&f).unwrap();
    (o, sha)
}

fn config(dir: &Path, keys: &Path, recovery_pub: &Path, data: &Path) -> PathBuf {
    let overlays: Vec<String> = [overlay("record"), overlay("sbcheck"), data.to_path_buf()]
        .iter()
        .map(|o| format!("{:?}", o.display().to_string()))
        .collect();
    let path = dir.join("sbtest.toml");
    std::fs::write(
        &path,
        format!(
            "[image]\nname = \"sbtest\"\nboard = \"x86_64\"\n\
             # The UKI's signed command line carries the verity root hash.\n\
             verity = true\noverlays = [{}]\n\n\
             # No K3s: Secure Boot does not need it, and boots are faster.\n\
             [k3s]\nenabled = false\n\n\
             [secure_boot]\nkeys = {:?}\n\n\
             [data]\nencryption = \"tpm2\"\nrecovery_public_key = {:?}\n",
            overlays.join(", "),
            keys.display().to_string(),
            recovery_pub.display().to_string()
        ),
    )
    .unwrap();
    path
}

/// One QEMU run on the Secure Boot firmware with the variable store `vars`
/// (and the update disk `extra`), with a TPM2 whose state is `tpm` when
/// given (the TPM's process is returned: it must outlive the VM).
fn start(
    disk: &Path,
    vars: &Path,
    extra: Option<&Path>,
    tpm: Option<&Path>,
    work: &Path,
    name: &str,
) -> (edgeimg::qemu::RunningVm, Records, Option<Swtpm>) {
    let b = edgeimg::config::board::load("x86_64").unwrap();
    let mut vm = edgeimg::qemu::Vm::new(&b.qemu, disk, work).unwrap();
    vm.extra_disks = extra.into_iter().map(Path::to_path_buf).collect();
    let swtpm = tpm.map(|dir| Swtpm::start(dir).unwrap_or_else(|e| panic!("{name}: {e:#}")));
    vm.tpm_socket = swtpm.as_ref().map(|t| t.socket.clone());
    vm.console_input = true;
    vm.use_secure_boot_firmware(vars)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let log = log_dir().join(format!("{name}.log"));
    attach_record_port(&mut vm, &log);
    let records = Records::new(&vm);
    (vm.spawn_captured(&log).unwrap(), records, swtpm)
}

/// What the build put on the data partition: its epoch (the "already
/// seeded" marker's time) and the test data's SHA-256.
struct Built {
    epoch: String,
    testdata: String,
}

/// What every boot that opened the data partition reports.
fn assert_data(
    r: &std::collections::HashMap<String, String>,
    text: &str,
    unlock: &str,
    built: &Built,
) {
    let get = |k: &str| r.get(k).map(String::as_str);
    // The build's files, read through dm-crypt: the in-place encryption
    // kept them, and /var was not seeded again.
    assert_eq!(get("testdata"), Some(built.testdata.as_str()), "{text}");
    assert_eq!(get("seeded"), Some(built.epoch.as_str()), "{text}");
    assert_eq!(get("var"), Some("/dev/mapper/edgeimg-data"), "{text}");
    assert_eq!(get("luks"), Some("2"), "{text}");
    assert_eq!(get("tpm2token"), Some("1"), "{text}");
    assert_eq!(get("pcrs"), Some("7"), "bound to PCR 7 only: {text}");
    assert_eq!(get("unlock"), Some(unlock), "{text}");
    // The disk is the image plus 1 GiB: first boot grew the partition, the
    // mapping and the ext4 inside.
    let mib: u64 = get("varmib").and_then(|m| m.parse().ok()).unwrap_or(0);
    assert!(mib > 1000, "/var not grown through the mapping: {text}");
}

fn openssl(args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "openssl {args:?}: {o:?}");
}

/// A FAT disk labelled EDGEUPD holding update.bin.
fn update_disk(update: &Path, dest: &Path, work: &Path) {
    let mut files = edgeimg::fs::vfat::BootFiles::default();
    files.add_file("update.bin", update.to_path_buf());
    let size =
        (std::fs::metadata(update).unwrap().len() + 64 * 1024 * 1024).next_multiple_of(1024 * 1024);
    edgeimg::fs::vfat::make(dest, size, "EDGEUPD", 0x0ed6e0d, &files, work, 0)
        .unwrap_or_else(|e| panic!("update disk: {e:#}"));
}

/// The guest's `secureboot` record as key=value pairs (and its text).
fn report(
    vm: &mut edgeimg::qemu::RunningVm,
    records: &mut Records,
    name: &str,
) -> (std::collections::HashMap<String, String>, String) {
    let bytes = records
        .wait(vm, "secureboot", BOOT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let text = String::from_utf8(bytes).unwrap();
    let r = text
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (r, text)
}

/// What every boot that enforces Secure Boot reports, on `slot`.
fn assert_enforced(r: &std::collections::HashMap<String, String>, text: &str, slot: &str) {
    let get = |k: &str| r.get(k).map(String::as_str);
    assert_eq!(get("secureboot"), Some("1"), "Secure Boot not on: {text}");
    assert_eq!(get("setupmode"), Some("0"), "still in setup mode: {text}");
    assert!(
        get("stub").is_some_and(|s| s.starts_with("systemd-stub")),
        "not started through systemd-stub: {text}"
    );
    // Debian's kernel locks itself down when the firmware enforces Secure Boot.
    assert_eq!(get("lockdown"), Some("integrity"), "{text}");
    assert_eq!(get("ready"), Some("active"), "{text}");
    assert_eq!(get("slot"), Some(slot), "{text}");
}

/// The offset and size of the partition `role` in the image, from
/// manifest.json.
fn partition(out: &Path, role: &str) -> (u64, u64) {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let p = manifest["layout"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == role)
        .unwrap_or_else(|| panic!("no {role} partition in {manifest}"));
    (p["offset"].as_u64().unwrap(), p["size"].as_u64().unwrap())
}

/// `len` bytes of `disk` from `offset`.
fn read_at(disk: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(disk).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut b = Vec::new();
    f.take(len).read_to_end(&mut b).unwrap();
    assert_eq!(b.len() as u64, len, "{} is short", disk.display());
    b
}

/// SHA-256 of `len` bytes of `disk` from `offset`.
fn sha256_at(disk: &Path, offset: u64, len: u64) -> String {
    edgeimg::artifact::checksums::sha256_bytes(&read_at(disk, offset, len))
}

/// `cryptsetup luksDump` of the LUKS2 header at `offset` in `disk` (its
/// first 16 MiB, copied to a file: luksDump reads a header from a file).
fn luks_dump(disk: &Path, offset: u64, w: &Path) -> String {
    let hdr = w.join("luks-header.bin");
    std::fs::write(&hdr, read_at(disk, offset, 16 * 1024 * 1024)).unwrap();
    let o = Command::new("cryptsetup")
        .arg("luksDump")
        .arg(&hdr)
        .output()
        .expect("cryptsetup (cryptsetup-bin)");
    assert!(o.status.success(), "cryptsetup luksDump: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The recovery key the device left on the boot partition of `disk`,
/// unwrapped with the operator's private key by the documented command
/// (docs/trusted-boot.md, "Recovery").
fn unwrap_recovery_key(disk: &Path, offset: u64, rec_key: &Path, w: &Path) -> String {
    let wrapped = w.join("recovery-key.bin");
    mcopy(
        disk,
        offset,
        &format!("::{WRAPPED_KEY}"),
        wrapped.to_str().unwrap(),
    );
    let o = Command::new("openssl")
        .args(["pkeyutl", "-decrypt", "-inkey", rec_key.to_str().unwrap()])
        .args([
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
        ])
        .args([
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
            "-in",
            wrapped.to_str().unwrap(),
        ])
        .output()
        .expect("openssl");
    assert!(o.status.success(), "unwrap the recovery key: {o:?}");
    let key = String::from_utf8(o.stdout).unwrap();
    assert!(
        key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "the recovery key is 64 hex digits ({} bytes)",
        key.len()
    );
    key
}

/// `mcopy` between the host and the FAT boot partition of `disk` at `offset`.
fn mcopy(disk: &Path, offset: u64, from: &str, to: &str) {
    let image = format!("{}@@{offset}", disk.display());
    let o = Command::new("mcopy")
        .args(["-o", "-n", "-i", &image, from, to])
        .output()
        .expect("mcopy (mtools)");
    assert!(o.status.success(), "mcopy {from} {to}: {o:?}");
}

fn sbverify(cert: &Path, file: &Path) -> bool {
    Command::new("sbverify")
        .arg("--cert")
        .arg(cert)
        .arg(file)
        .output()
        .expect("sbverify (sbsigntool)")
        .status
        .success()
}

/// A copy of the enrolled disk and variable store (another machine with
/// the same keys enrolled, and the same medium, before its first Linux boot).
fn enrolled_copy(enrolled: (&Path, &Path), w: &Path, name: &str) -> (PathBuf, PathBuf) {
    let disk = w.join(format!("{name}.raw"));
    let vars = w.join(format!("{name}-vars.fd"));
    edgeimg::sparse::copy_sparse(enrolled.0, &disk).unwrap();
    std::fs::copy(enrolled.1, &vars).unwrap();
    (disk, vars)
}

/// A copy of the enrolled disk and variable store whose UKI `change` edits
/// (on the host, as someone holding the medium would).
fn tampered_copy(
    enrolled: (&Path, &Path),
    offset: u64,
    w: &Path,
    name: &str,
    change: impl FnOnce(&Path),
) -> (PathBuf, PathBuf) {
    let (disk, vars) = enrolled_copy(enrolled, w, name);
    let uki = w.join(format!("{name}.efi"));
    mcopy(&disk, offset, &format!("::{UKI}"), uki.to_str().unwrap());
    change(&uki);
    mcopy(&disk, offset, uki.to_str().unwrap(), &format!("::{UKI}"));
    (disk, vars)
}

/// Boots a copy the firmware must refuse: reads the console until
/// systemd-boot reports the refusal (then stops the VM), failing on a
/// kernel's first line or at the deadline.
fn expect_refused(disk: &Path, vars: &Path, w: &Path, name: &str) {
    let t = Instant::now();
    let (mut vm, _, _) = start(disk, vars, None, None, w, name);
    let deadline = Instant::now() + LOADER;
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{name}: no refusal ({REFUSED:?}) on the console within {}s{}",
            LOADER.as_secs(),
            vm.tail()
        );
        let Some(line) = vm
            .next_console_line(left)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"))
        else {
            continue;
        };
        assert!(
            !KERNEL_STARTED.iter().any(|k| line.contains(k)),
            "{name}: a kernel started: {line}{}",
            vm.tail()
        );
        if REFUSED.iter().any(|r| line.contains(r)) {
            break line;
        }
    };
    vm.kill();
    assert!(
        line.contains("edgeimg-1-a.efi"),
        "{name}: the refusal names another image: {line}"
    );
    let log = std::fs::read_to_string(&vm.log).unwrap();
    assert!(
        !log.contains(edgeimg_agent::schema::READY_LINE),
        "{name}: the node got ready ({})",
        vm.log.display()
    );
    eprintln!(
        "{name}: refused ({line}) in {:.0}s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn x86_64_secure_boot_enrolls_updates_slot_b_and_refuses_changed_and_unsigned_kernels() {
    let _guard = exclusive();
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let keys = w.join("keys/fleet");
    std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
    // What `edgeimg keygen --secure-boot --out PREFIX` runs.
    edgeimg::commands::keygen(&keys, true, false, "edgeimg VM test", true)
        .unwrap_or_else(|e| panic!("keygen --secure-boot: {e:#}"));
    let (update_key, _) = edgeimg::update::keygen(&w.join("update")).unwrap();
    // The operator's recovery key pair (docs/trusted-boot.md, "Recovery").
    let rec_key = w.join("recovery.key");
    let rec_pub = w.join("recovery.pub");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:3072",
        "-out",
        rec_key.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        rec_key.to_str().unwrap(),
        "-pubout",
        "-out",
        rec_pub.to_str().unwrap(),
    ]);
    let (data_overlay, testdata) = data_overlay(w);
    let out = w.join("out");
    // One build: the image, and its own signed update (a UKI per slot).
    let built = edgeimg::pipeline::build(&edgeimg::pipeline::BuildOptions {
        config: Some(config(w, &keys, &rec_pub, &data_overlay)),
        out: out.clone(),
        compression: Some(edgeimg::artifact::Compression::None),
        signing_key: Some(update_key),
        update: true,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("build the Secure Boot image: {e:#}"));
    let upd = w.join("upd.raw");
    update_disk(&out.join("sbtest-x86_64.update"), &upd, w);
    eprintln!("keys and build: {:.0}s", t0.elapsed().as_secs_f64());
    let offset = partition(&out, "boot").0;
    let data_part = partition(&out, "data");
    let db_crt = PathBuf::from(format!("{}-db.crt", keys.display()));
    // The manifest names the db certificate that signed the boot chain.
    let manifest = edgeimg::manifest::Manifest::read(&out.join("manifest.json")).unwrap();
    let sb = manifest
        .secure_boot
        .expect("the manifest records Secure Boot");
    assert!(sb.signed);
    assert_eq!(
        sb.db_cert_sha256.as_deref(),
        Some(
            edgeimg::artifact::checksums::sha256_file(&db_crt)
                .unwrap()
                .as_str()
        )
    );
    assert_eq!(sb.enroll.as_deref(), Some("if-safe"));
    let enc = manifest
        .data_encryption
        .expect("the manifest records the data encryption");
    assert_eq!(enc.encryption, "tpm2");
    assert_eq!(enc.no_tpm.as_deref(), Some("refuse"));
    let built_data = Built {
        epoch: manifest.source_date_epoch.to_string(),
        testdata,
    };

    let disk = w.join("disk.raw");
    let disk_len = std::fs::metadata(&built.image).unwrap().len() + GIB;
    disk_copy(&built.image, &disk, disk_len).unwrap();
    let vars = w.join("vars.fd");
    // The machine's TPM2, kept across its boots.
    let tpm = w.join("tpm");

    // 1. Setup mode: systemd-boot enrolls the keys and resets the machine
    //    (-no-reboot: QEMU exits) before any kernel runs.
    let t = Instant::now();
    let (mut vm, _, _tpm) = start(&disk, &vars, None, Some(&tpm), w, "secure-boot-enroll");
    vm.wait_for(SECURE_BOOT_ENROLLED, LOADER)
        .unwrap_or_else(|e| panic!("enrollment: {e:#}"));
    let st = vm
        .wait_exit(EXIT)
        .unwrap_or_else(|e| panic!("enrollment reset: {e:#}"));
    assert!(st.success(), "QEMU exited with {st} after enrolling");
    let log = std::fs::read_to_string(&vm.log).unwrap();
    assert!(
        log.contains("Enrolling secure boot keys from directory: \\loader\\keys\\auto"),
        "enrolled from another directory ({})",
        vm.log.display()
    );
    assert!(
        !KERNEL_STARTED.iter().any(|k| log.contains(k)),
        "a kernel ran before the keys were enrolled ({})",
        vm.log.display()
    );
    eprintln!("enrolled: {:.0}s", t.elapsed().as_secs_f64());

    // The tampered copies start from the enrolled machine, before the update
    // adds slot B's UKI (which would boot first).
    let changed = tampered_copy((&disk, &vars), offset, w, "uki-changed", |uki| {
        let mut b = std::fs::read(uki).unwrap();
        let needle = b"edgeimg.slot=a";
        let at: Vec<usize> = b
            .windows(needle.len())
            .enumerate()
            .filter(|(_, win)| win == needle)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 1, "the UKI holds `edgeimg.slot=a` once: {at:?}");
        b[at[0] + needle.len() - 1] = b'b';
        std::fs::write(uki, b).unwrap();
        assert!(!sbverify(&db_crt, uki), "the changed UKI still verifies");
    });
    let unsigned = tampered_copy((&disk, &vars), offset, w, "uki-unsigned", |uki| {
        assert!(sbverify(&db_crt, uki), "the built UKI does not verify");
        let o = Command::new("sbattach")
            .arg("--remove")
            .arg(uki)
            .output()
            .expect("sbattach (sbsigntool)");
        assert!(o.status.success(), "sbattach --remove: {o:?}");
        assert!(!sbverify(&db_crt, uki), "the unsigned UKI still verifies");
    });

    // Two more machines with the keys enrolled and the medium as built: one
    // without a TPM2, one whose first encryption is cut.
    let no_tpm = enrolled_copy((&disk, &vars), w, "no-tpm");
    let cut = enrolled_copy((&disk, &vars), w, "cut");

    // 2. The same machine now enforces Secure Boot and boots the signed UKI;
    //    then it installs the update into slot B and reboots.
    let t = Instant::now();
    let name = "secure-boot-enforced";
    let (mut vm, mut records, _tpm) = start(&disk, &vars, Some(&upd), Some(&tpm), w, name);
    vm.wait_for("edgeimg: data: encrypting the data partition", BOOT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    vm.wait_for(edgeimg_agent::schema::READY_LINE, BOOT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let (r, text) = report(&mut vm, &mut records, name);
    assert_enforced(&r, &text, "a");
    assert_data(&r, &text, "tpm2", &built_data);
    assert_eq!(r["entry"], "edgeimg-1-a.efi", "{text}");
    assert_eq!(r["ukis"], "edgeimg-1-a.efi,", "{text}");
    let applied = records
        .wait(&mut vm, "update-apply", BOOT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let applied = String::from_utf8_lossy(&applied).into_owned();
    assert_eq!(applied.trim(), "applied", "{name}: {applied}");
    let st = vm
        .wait_exit(EXIT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert!(st.success(), "QEMU exited with {st}");
    eprintln!("{name}, update applied: {:.0}s", t.elapsed().as_secs_f64());

    // 3. Slot B's own signed UKI boots under Secure Boot; the trial is blessed.
    let t = Instant::now();
    let name = "secure-boot-slot-b";
    let (mut vm, mut records, _tpm) = start(&disk, &vars, None, Some(&tpm), w, name);
    let (r, text) = report(&mut vm, &mut records, name);
    assert_enforced(&r, &text, "b");
    assert_data(&r, &text, "tpm2", &built_data);
    assert!(r["entry"].starts_with("edgeimg-2-b"), "{text}");
    assert_eq!(
        r["ukis"], "edgeimg-1-a.efi,edgeimg-2-b.efi,",
        "slot B's UKI blessed, slot A's kept: {text}"
    );
    let st = vm
        .wait_exit(EXIT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert!(st.success(), "QEMU exited with {st}");
    eprintln!("{name}: {:.0}s", t.elapsed().as_secs_f64());

    // 4. The same machine with another (fresh) TPM2: the token does not
    //    open the data partition; the recovery key, unwrapped by the
    //    operator, does.
    let t = Instant::now();
    let name = "secure-boot-other-tpm";
    let key = unwrap_recovery_key(&disk, offset, &rec_key, w);
    let (mut vm, mut records, _tpm) =
        start(&disk, &vars, None, Some(&w.join("tpm-other")), w, name);
    let why = vm
        .wait_for("cannot open the data partition with the TPM2", BOOT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert!(why.contains("the TPM2 refused"), "{name}: {why}");
    // Typed once the guest turned the console's echo off (then it says so).
    vm.wait_for("type the recovery key, then Enter", LOADER)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    vm.send_console(format!("{key}\n").as_bytes()).unwrap();
    vm.wait_for("opened with the recovery key", LOADER)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let (r, text) = report(&mut vm, &mut records, name);
    assert_enforced(&r, &text, "b");
    assert_data(&r, &text, "recovery", &built_data);
    let st = vm
        .wait_exit(EXIT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert!(st.success(), "QEMU exited with {st}");
    for log in ["secure-boot-enforced", "secure-boot-slot-b", name] {
        let text = std::fs::read_to_string(log_dir().join(format!("{log}.log"))).unwrap();
        assert!(
            !text.contains(&key),
            "the recovery key is on the console ({log})"
        );
    }
    let console = std::fs::read_to_string(&vm.log).unwrap();
    assert!(console.contains(RECOVERY_PROMPT), "{name}: no prompt");
    eprintln!(
        "{name}, opened with the recovery key: {:.0}s",
        t.elapsed().as_secs_f64()
    );

    // 5. No TPM2, and the image says no_tpm = "refuse": the initramfs stops
    //    the boot (panic=10 reboots; -no-reboot ends QEMU) before the data
    //    partition is touched.
    let t = Instant::now();
    let name = "secure-boot-no-tpm";
    let (mut vm, _, _) = start(&no_tpm.0, &no_tpm.1, None, None, w, name);
    vm.wait_for(NO_TPM_REFUSED, BOOT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let st = vm
        .wait_exit(EXIT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert!(st.success(), "QEMU exited with {st}");
    let console = std::fs::read_to_string(&vm.log).unwrap();
    for not in [
        edgeimg_agent::schema::READY_LINE,
        "encrypting the data partition",
        "EDGEIMG-SBCHECK",
    ] {
        assert!(!console.contains(not), "{name}: `{not}` on the console");
    }
    // The data partition is the build's, byte for byte: still plain ext4.
    let (data_off, data_len) = data_part;
    assert_eq!(
        read_at(&no_tpm.0, data_off + 1024 + 0x38, 2),
        [0x53, 0xef],
        "{name}: no ext4 superblock on the data partition"
    );
    assert_eq!(
        sha256_at(&no_tpm.0, data_off, data_len),
        sha256_at(&built.image, data_off, data_len),
        "{name}: the data partition changed"
    );
    eprintln!("{name}, refused: {:.0}s", t.elapsed().as_secs_f64());

    // 6. A first boot whose encryption is cut: QEMU is killed once the
    //    console says the LUKS2 header is written and the data is being
    //    encrypted. The header says the reencryption is unfinished.
    let t = Instant::now();
    let name = "secure-boot-cut";
    let cut_tpm = w.join("tpm-cut");
    let (mut vm, _, tpm_proc) = start(&cut.0, &cut.1, None, Some(&cut_tpm), w, name);
    vm.wait_for(ENCRYPTING_IN_PLACE, BOOT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    vm.kill();
    drop(tpm_proc);
    let dump = luks_dump(&cut.0, data_off, w);
    assert!(
        dump.contains("online-reencrypt"),
        "{name}: the header does not say the encryption is unfinished:\n{dump}"
    );
    assert!(
        !dump.contains("systemd-tpm2"),
        "{name}: a TPM2 token already:\n{dump}"
    );
    eprintln!("{name}, cut: {:.0}s", t.elapsed().as_secs_f64());

    // 7. The same machine (its TPM2) boots again: the initramfs finds the
    //    unfinished encryption, asks for the recovery key, resumes it, enrolls
    //    the TPM2 and the node gets ready with the build's data intact.
    let t = Instant::now();
    let name = "secure-boot-resumed";
    let key = unwrap_recovery_key(&cut.0, offset, &rec_key, w);
    let (mut vm, mut records, _tpm) = start(&cut.0, &cut.1, None, Some(&cut_tpm), w, name);
    let why = vm
        .wait_for("cannot open the data partition with the TPM2", BOOT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert!(
        why.contains("its first encryption was interrupted"),
        "{name}: {why}"
    );
    vm.wait_for("type the recovery key, then Enter", LOADER)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    vm.send_console(format!("{key}\n").as_bytes()).unwrap();
    vm.wait_for("opened with the recovery key", BOOT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    vm.wait_for("the TPM2 token is sealed again to this device", LOADER)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let (r, text) = report(&mut vm, &mut records, name);
    assert_enforced(&r, &text, "a");
    assert_data(&r, &text, "recovery", &built_data);
    let st = vm
        .wait_exit(EXIT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert!(st.success(), "QEMU exited with {st}");
    for log in ["secure-boot-cut", name] {
        let text = std::fs::read_to_string(log_dir().join(format!("{log}.log"))).unwrap();
        assert!(
            !text.contains(&key),
            "the recovery key is on the console ({log})"
        );
    }
    let dump = luks_dump(&cut.0, data_off, w);
    assert!(
        !dump.contains("online-reencrypt"),
        "{name}: still unfinished:\n{dump}"
    );
    eprintln!("{name}, resumed: {:.0}s", t.elapsed().as_secs_f64());

    // 8. One byte of the UKI's signed command line changed.
    expect_refused(&changed.0, &changed.1, w, "secure-boot-uki-changed");
    // 9. The UKI without its signature.
    expect_refused(&unsigned.0, &unsigned.1, w, "secure-boot-uki-unsigned");
    eprintln!("total: {:.0}s", t0.elapsed().as_secs_f64());
}
