//! VM test of signed A/B updates on x86_64 (OVMF -> systemd-boot) with a
//! dm-verity root (`[image] verity = true`): one v1 image and two update files
//! (v2, and v2 whose health check fails) are built once; each scenario boots
//! its own sparse copy of the v1 disk. Slot B running v2 proves each slot
//! carries its own hash; one more boot, of a v1 copy with one byte of a root
//! file flipped on the host, proves a tampered root fails closed.
//!
//! The test-only overlay qemu-tests/overlays/updatetest sends one
//! `updatetest` record (`slot=.. version=.. ...`) per boot on the record port
//! (see qemu-tests/README.md) and applies the update from a second disk
//! labelled EDGEUPD with `edgeimg-agent update apply`, then reports an
//! `update-apply` record and reboots (QEMU runs with -no-reboot: a guest
//! reboot ends the QEMU process and the test starts the next boot on the same
//! disk).
//!
//! v1 and the unhealthy update are `[update] generation = 1`, the good v2
//! is 2: the boot that blesses v2 is also offered the unhealthy update, an
//! older but validly signed one, and must refuse it without writing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgeimg_qemu_tests::{Records, attach_record_port, disk_copy, exclusive, log_dir, overlay};

const BOOT: Duration = Duration::from_secs(600);
const EXIT: Duration = Duration::from_secs(180);
const GIB: u64 = 1024 * 1024 * 1024;

/// 1 MiB of incompressible bytes (xorshift64): mkfs.erofs stores the file
/// as is (compress hints), so the test finds its blocks in the raw disk.
fn random_bytes() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..1024 * 1024 / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

fn sha256(b: &[u8]) -> String {
    edgeimg::artifact::checksums::sha256_bytes(b)
}

fn config(dir: &Path, version: &str, unhealthy: bool, generation: u64) -> PathBuf {
    let vdir = dir.join(format!("overlay-{version}"));
    let vfile = vdir.join("usr/share/edgeimg-test/version");
    std::fs::create_dir_all(vfile.parent().unwrap()).unwrap();
    std::fs::write(&vfile, format!("{version}\n")).unwrap();
    std::fs::write(vdir.join("usr/share/edgeimg-test/random"), random_bytes()).unwrap();
    let mut overlays = vec![overlay("record"), overlay("updatetest"), vdir.clone()];
    if unhealthy {
        // The new version's node never becomes ready: its health check fails.
        let d = dir.join("overlay-unhealthy");
        let f = d.join("etc/systemd/system/edgeimg-ready.service.d/unhealthy.conf");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, "[Service]\nExecStartPre=/bin/false\n").unwrap();
        overlays.push(d);
    }
    let list: Vec<String> = overlays
        .iter()
        .map(|o| format!("{:?}", o.display().to_string()))
        .collect();
    let path = dir.join(format!(
        "{version}{}.toml",
        if unhealthy { "-bad" } else { "" }
    ));
    std::fs::write(
        &path,
        format!(
            "[image]\nname = \"updtest\"\nboard = \"x86_64\"\nverity = true\nhostname = \"upd-{{machine_id}}\"\noverlays = [{}]\n\n# No K3s: the update path does not need it, and boots are faster.\n[k3s]\nenabled = false\n\n[update]\ngeneration = {generation}\n",
            list.join(", ")
        ),
    )
    .unwrap();
    path
}

fn build_signed(cfg: &Path, out: &Path, key: &Path, update: bool) -> PathBuf {
    let r = edgeimg::pipeline::build(&edgeimg::pipeline::BuildOptions {
        config: Some(cfg.to_path_buf()),
        board: None,
        out: out.to_path_buf(),
        compression: Some(edgeimg::artifact::Compression::None),
        signing_key: Some(key.to_path_buf()),
        update,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("build {}: {e:#}", cfg.display()));
    if update {
        out.join("updtest-x86_64.update")
    } else {
        r.image
    }
}

/// A FAT disk labelled EDGEUPD holding update.bin and the number of tries.
fn update_disk(update: &Path, tries: u32, dest: &Path, work: &Path) {
    let mut files = edgeimg::fs::vfat::BootFiles::default();
    files.add_file("update.bin", update.to_path_buf());
    files.add_bytes("tries", format!("{tries}\n"));
    let size =
        (std::fs::metadata(update).unwrap().len() + 64 * 1024 * 1024).next_multiple_of(1024 * 1024);
    edgeimg::fs::vfat::make(dest, size, "EDGEUPD", 0x0ed6e0d, &files, work, 0)
        .unwrap_or_else(|e| panic!("update disk: {e:#}"));
}

struct Boot {
    vm: edgeimg::qemu::RunningVm,
    records: Records,
    started: Instant,
    name: String,
}

fn start(disk: &Path, extra: Option<&Path>, work: &Path, name: &str) -> Boot {
    let b = edgeimg::config::board::load("x86_64").unwrap();
    let mut vm = edgeimg::qemu::Vm::new(&b.qemu, disk, work).unwrap();
    vm.extra_disks = extra.into_iter().map(Path::to_path_buf).collect();
    let log = log_dir().join(format!("{name}.log"));
    attach_record_port(&mut vm, &log);
    let records = Records::new(&vm);
    let vm = vm.spawn_captured(&log).unwrap();
    Boot {
        vm,
        records,
        started: Instant::now(),
        name: name.into(),
    }
}

impl Boot {
    fn wait(&mut self, needle: &str) -> String {
        self.vm
            .wait_for(needle, BOOT)
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.name))
    }
    /// The guest's record of `kind`, as text.
    fn record(&mut self, kind: &str) -> String {
        let bytes = self
            .records
            .wait(&mut self.vm, kind, BOOT)
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.name));
        String::from_utf8(bytes)
            .unwrap_or_else(|e| panic!("{}: `{kind}` record is not text: {e}", self.name))
    }
    /// The boot's report as key=value pairs.
    fn report(&mut self) -> HashMap<String, String> {
        self.record("updatetest")
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
    fn exits(mut self) {
        let st = self
            .vm
            .wait_exit(EXIT)
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.name));
        assert!(st.success(), "{}: QEMU exited with {st}", self.name);
        eprintln!(
            "{}: {:.0}s",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// The disk offset of the 4 KiB-aligned block equal to `block` inside
/// [offset, offset+len).
fn find_block(disk: &Path, offset: u64, len: u64, block: &[u8]) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(disk).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut r = std::io::BufReader::with_capacity(1 << 20, f.take(len));
    let mut buf = vec![0u8; block.len()];
    let mut at = offset;
    while r.read_exact(&mut buf).is_ok() {
        if buf == block {
            return at;
        }
        at += buf.len() as u64;
    }
    panic!("the test file's block is not stored as is in the root slot");
}

/// SHA-256 of [offset, offset+len) of a file.
fn sha256_range(path: &Path, offset: u64, len: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let mut f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    f.seek(SeekFrom::Start(offset)).unwrap();
    edgeimg_agent::update::format::sha256_of(&mut f, len, |_| Ok(()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn flip_byte(disk: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x01;
    f.write_all_at(&b, at).unwrap();
}

fn entries(r: &HashMap<String, String>) -> Vec<String> {
    let mut v: Vec<String> = r["entries"]
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// Boots v1 with the update disk attached: it reports slot A / v1, applies
/// the update and reboots.
fn boot_and_apply(disk: &Path, upd: &Path, work: &Path, name: &str) {
    let mut b = start(disk, Some(upd), work, name);
    let r = b.report();
    assert_eq!(
        (r["slot"].as_str(), r["version"].as_str()),
        ("a", "v1"),
        "{r:?}"
    );
    assert_eq!(entries(&r), ["edgeimg-1-a.conf"], "{r:?}");
    // Slot A's root is opened through dm-verity, and its files read.
    assert_eq!(r["rootdev"], "/dev/mapper/edgeimg-root", "{r:?}");
    assert_eq!(r["verity"], "verified", "{r:?}");
    assert_eq!(r["rand"], sha256(&random_bytes()), "{r:?}");
    b.wait("edgeimg: update ");
    assert_eq!(b.record("update-apply").trim(), "applied", "{name}");
    b.exits();
}

#[test]
fn x86_64_update_good_bad_and_interrupted() {
    let _guard = exclusive();
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let (key, _) = edgeimg::update::keygen(&w.join("fleet")).unwrap();
    // Generations: v1 and the unhealthy update are 1 (an equal generation
    // installs, scenario b), the good v2 is 2; so on a device running the
    // good v2 the unhealthy update is an older, validly signed one (a).
    let v1 = build_signed(&config(w, "v1", false, 1), &w.join("out-v1"), &key, false);
    let good = build_signed(&config(w, "v2", false, 2), &w.join("out-v2"), &key, true);
    let bad = build_signed(&config(w, "v2", true, 1), &w.join("out-v2bad"), &key, true);
    // The host runs the device's verification.
    let pubkey = w.join("fleet.pub");
    let expect = edgeimg::update::Expect {
        board: Some("x86_64"),
        arch: Some("amd64"),
    };
    assert_eq!(
        edgeimg::update::verify(&good, &pubkey, &expect)
            .unwrap()
            .generation,
        2
    );
    assert_eq!(
        edgeimg::update::verify(&bad, &pubkey, &expect)
            .unwrap()
            .generation,
        1
    );
    update_disk(&good, 2, &w.join("upd-good.raw"), w);
    update_disk(&bad, 1, &w.join("upd-bad.raw"), w);
    let disk_len = std::fs::metadata(&v1).unwrap().len() + GIB;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("out-v1/manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["verity"]["enabled"], true,
        "{}",
        manifest["verity"]
    );
    let v1_hash = manifest["verity"]["root_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let slot_a = manifest["layout"]["partitions"][1].clone();
    eprintln!("builds: {:.0}s", t0.elapsed().as_secs_f64());

    // (t) One byte of a root file flipped on the disk (the blocks outside the
    // hash tree, as an attacker with the card would): the file reads as an
    // I/O error, its modified bytes are never returned.
    let disk = w.join("disk-t.raw");
    disk_copy(&v1, &disk, disk_len).unwrap();
    let random = random_bytes();
    let at = find_block(
        &disk,
        slot_a["offset"].as_u64().unwrap(),
        slot_a["size"].as_u64().unwrap(),
        &random[512 * 1024..512 * 1024 + 4096],
    );
    let mut tampered = random.clone();
    tampered[512 * 1024 + 100] ^= 0x01;
    flip_byte(&disk, at + 100);
    let mut b = start(&disk, None, w, "verity-tampered");
    let r = b.report();
    let log = std::fs::read_to_string(&b.vm.log).unwrap();
    assert_ne!(
        r["rand"],
        sha256(&tampered),
        "the modified file was read: {r:?}"
    );
    assert_eq!(
        r["rand"], "error",
        "the corrupted file must not read: {r:?}"
    );
    assert!(
        log.contains("device-mapper: verity") && log.contains("is corrupted"),
        "no dm-verity corruption message on the console ({})",
        b.vm.log.display()
    );
    assert_eq!(r["rootdev"], "/dev/mapper/edgeimg-root", "{r:?}");
    assert_eq!(r["hash"], v1_hash, "{r:?}");
    b.exits();

    // (u) One byte of the hash tree's top level flipped: no block of the slot
    // verifies any more, and the initramfs refuses to boot (panic=10 reboots:
    // QEMU runs with -no-reboot and exits) before the root is ever mounted.
    let disk = w.join("disk-u.raw");
    disk_copy(&v1, &disk, disk_len).unwrap();
    let hash_offset = manifest["verity"]["hash_offset"].as_u64().unwrap();
    flip_byte(
        &disk,
        slot_a["offset"].as_u64().unwrap() + hash_offset + 4096 + 10,
    );
    let mut b = start(&disk, None, w, "verity-bad-tree");
    b.wait("edgeimg: verity: the root does not match root hash");
    let log_path = b.vm.log.clone();
    b.exits();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let records = std::fs::read_to_string(log_path.with_extension("records")).unwrap_or_default();
    assert!(
        !log.contains("EDGEIMG-UPDATETEST") && !log.contains("Welcome to") && records.is_empty(),
        "a root that does not verify was booted ({})",
        log_path.display()
    );

    // (a) A good update: slot B runs v2, is marked good, data kept. That
    // boot is offered the older (generation 1) update and refuses it.
    let disk = w.join("disk-a.raw");
    disk_copy(&v1, &disk, disk_len).unwrap();
    boot_and_apply(&disk, &w.join("upd-good.raw"), w, "update-good-1");
    let mut b = start(&disk, Some(&w.join("upd-bad.raw")), w, "update-good-2");
    b.wait("edgeimg: update good: boot entry edgeimg-2-b.conf");
    let r = b.report();
    assert_eq!(r["slot"], "b", "{r:?}");
    assert_eq!(r["version"], "v2", "{r:?}");
    assert_eq!(r["health"], "active", "{r:?}");
    assert_eq!(r["ready"], "active", "{r:?}");
    // Slot B's root is opened through dm-verity with v2's hash, and reads.
    assert_eq!(r["rootdev"], "/dev/mapper/edgeimg-root", "{r:?}");
    assert_eq!(r["verity"], "verified", "{r:?}");
    assert_eq!(r["rand"], sha256(&random_bytes()), "{r:?}");
    // Each slot carries its own hash: slot B boots with v2's, not v1's.
    let v2_manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("out-v2/manifest.json")).unwrap()).unwrap();
    assert_eq!(
        r["hash"],
        v2_manifest["verity"]["root_hash"].as_str().unwrap(),
        "{r:?}"
    );
    assert_ne!(r["hash"], v1_hash, "{r:?}");
    assert_eq!(r["data"], "data-v1", "data partition kept: {r:?}");
    assert_eq!(r["etc"], "etc-v1", "/etc overlay kept: {r:?}");
    assert_eq!(
        entries(&r),
        ["edgeimg-1-a.conf", "edgeimg-2-b.conf"],
        "blessed: {r:?}"
    );
    // The older update is refused after verification, before any write:
    // slot A (the inactive one) and the boot entries stay as they were.
    let rec = b.record("update-apply");
    assert!(
        rec.contains("update apply failed: the update is generation 1, older than generation 2 that this device runs"),
        "{rec}"
    );
    assert!(
        rec.contains("--allow-downgrade"),
        "the refusal names its override: {rec}"
    );
    let first = rec.lines().next().unwrap_or_default();
    assert_eq!(
        first, "apply-failed entries=edgeimg-1-a.conf,edgeimg-2-b.conf,",
        "{rec}"
    );
    let log_path = b.vm.log.clone();
    b.exits();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !log.contains("update: writing slot"),
        "the refused update was written ({})",
        log_path.display()
    );
    let (a_off, a_len) = (
        slot_a["offset"].as_u64().unwrap(),
        slot_a["size"].as_u64().unwrap(),
    );
    assert_eq!(
        sha256_range(&disk, a_off, a_len),
        sha256_range(&v1, a_off, a_len),
        "slot A changed"
    );

    // (b) An update whose health check fails: one try, then slot A by itself.
    let disk = w.join("disk-b.raw");
    disk_copy(&v1, &disk, disk_len).unwrap();
    boot_and_apply(&disk, &w.join("upd-bad.raw"), w, "update-bad-1");
    let mut b = start(&disk, None, w, "update-bad-2");
    b.wait("edgeimg: update health check failed on trial boot of edgeimg-2-b+0-1.conf");
    b.exits(); // FailureAction=reboot
    let mut b = start(&disk, None, w, "update-bad-3");
    let r = b.report();
    assert_eq!(
        (r["slot"].as_str(), r["version"].as_str()),
        ("a", "v1"),
        "fell back: {r:?}"
    );
    assert_eq!(r["data"], "data-v1", "{r:?}");
    assert_eq!(
        entries(&r),
        ["edgeimg-1-a.conf", "edgeimg-2-b+0-1.conf"],
        "{r:?}"
    );
    b.exits();

    // (c) Power lost while the slot is written: the old slot boots, intact.
    let disk = w.join("disk-c.raw");
    disk_copy(&v1, &disk, disk_len).unwrap();
    let mut b = start(&disk, Some(&w.join("upd-good.raw")), w, "update-killed-1");
    b.wait("update: writing slot b");
    b.vm.kill();
    drop(b);
    let mut b = start(&disk, None, w, "update-killed-2");
    let r = b.report();
    assert_eq!(
        (r["slot"].as_str(), r["version"].as_str()),
        ("a", "v1"),
        "{r:?}"
    );
    assert_eq!(r["data"], "data-v1", "{r:?}");
    assert_eq!(entries(&r), ["edgeimg-1-a.conf"], "{r:?}");
    b.exits();
    eprintln!("total: {:.0}s", t0.elapsed().as_secs_f64());
}
