//! VM test of signed A/B updates on x86_64 (OVMF -> systemd-boot) with a
//! dm-verity root: the device pulling them from a TUF repository over HTTP,
//! applying them by hand, rolling back, and refusing what it must refuse.
//! One v1 image and three update files (v1, v2, and v2 whose health check
//! fails) are built once, and published to repositories that a small HTTP
//! server on the host's loopback serves ([`RepoServer`]; the guest reaches it
//! over QEMU's user network). Each scenario boots its own sparse copy of the
//! v1 disk:
//!
//! - (t)/(u): a flipped root byte / hash-tree byte: dm-verity fails closed;
//! - (p): a full update pulled: its download is cut by the server and
//!   resumed after a reboot with a Range request, held until the maintenance
//!   window, installed by the product's pull service, booted and blessed;
//!   on v2 a replayed older repository, an expired timestamp and an older
//!   validly signed update are each refused with nothing written;
//! - (b): an update whose health check fails: one try, then slot A;
//! - (c): power lost while the slot is written: slot A boots intact, and the
//!   next pull takes the delta from v1 (not the full update) and boots v2.
//!
//! The test-only overlay qemu-tests/overlays/updatetest sends one
//! `updatetest` record (`slot=.. version=.. ...`) per boot on the record port
//! (see qemu-tests/README.md), then runs the steps of a `plan` file on a
//! second disk labelled EDGEUPD (see its script) and records their results.
//! QEMU runs with -no-reboot: a guest reboot ends the QEMU process and the
//! test starts the next boot on the same disk. The pull timer is moved out of
//! the way by the overlay so that the test decides when a pull runs.
//!
//! v1 is `[update] generation = 1`, both v2 updates (the good one and the
//! one whose health check fails) are 2: the boot that blesses v2 is offered
//! v1's update file, an older but validly signed one, and must refuse it
//! without writing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgeimg_qemu_tests::repo_server::RepoServer;
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

/// Where the images pull from, and the maintenance window they install in.
struct Pulling<'a> {
    url: &'a str,
    trusted_root: &'a Path,
    window: &'a str,
}

fn config(dir: &Path, version: &str, unhealthy: bool, generation: u64, pull: &Pulling) -> PathBuf {
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
            "[image]\nname = \"updtest\"\nboard = \"x86_64\"\nverity = true\nhostname = \"upd-{{machine_id}}\"\noverlays = [{}]\n\n# No K3s: the update path does not need it, and boots are faster.\n[k3s]\nenabled = false\n\n[update]\ngeneration = {generation}\nrepository = {:?}\ntrusted_root = {:?}\nwindow = {:?}\n",
            list.join(", "),
            pull.url,
            pull.trusted_root.display().to_string(),
            pull.window,
        ),
    )
    .unwrap();
    path
}

/// Builds `cfg` signed with `key`: the image and its update file.
fn build_signed(cfg: &Path, out: &Path, key: &Path) -> (PathBuf, PathBuf) {
    let r = edgeimg::pipeline::build(&edgeimg::pipeline::BuildOptions {
        config: Some(cfg.to_path_buf()),
        board: None,
        out: out.to_path_buf(),
        compression: Some(edgeimg::artifact::Compression::None),
        signing_key: Some(key.to_path_buf()),
        update: true,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("build {}: {e:#}", cfg.display()));
    (r.image, out.join("updtest-x86_64.update"))
}

/// The fleet's update repositories, each a directory `edgeimg publish` made
/// with the same TUF keys.
struct Repos {
    /// v1 and v2, and the delta v1 -> v2.
    with_delta: PathBuf,
    /// v1 and v2, no delta: a device takes the full update.
    full: PathBuf,
    /// `full` as it was with v1 only: older, validly signed metadata.
    full_at_v1: PathBuf,
    /// `full` with a timestamp that has expired.
    expired: PathBuf,
}

fn publish(update: &Path, repo: &Path, tuf: &Path, update_pub: &Path, deltas: usize) {
    let in_days = |d: i64| {
        jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(24 * d))
            .unwrap()
    };
    edgeimg::publish::publish(&edgeimg::publish::Options {
        update,
        repo,
        keys: tuf,
        update_key: update_pub,
        deltas,
        expires: in_days(90),
        timestamp_expires: in_days(7),
    })
    .unwrap_or_else(|e| panic!("publish {}: {e:#}", update.display()));
}

fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {}", from.display());
}

fn repos(w: &Path, v1: &Path, v2: &Path, tuf: &Path, update_pub: &Path) -> Repos {
    let r = Repos {
        with_delta: w.join("repo-delta"),
        full: w.join("repo-full"),
        full_at_v1: w.join("repo-full-at-v1"),
        expired: w.join("repo-expired"),
    };
    publish(v1, &r.with_delta, tuf, update_pub, 0);
    publish(v2, &r.with_delta, tuf, update_pub, 1);
    publish(v1, &r.full, tuf, update_pub, 0);
    copy_tree(&r.full, &r.full_at_v1);
    publish(v2, &r.full, tuf, update_pub, 0);
    copy_tree(&r.full, &r.expired);
    // A newer timestamp, validly signed, that expired an hour ago.
    let now = jiff::Timestamp::now();
    edgeimg::publish::refresh_timestamp(
        &r.expired,
        tuf,
        now.checked_add(jiff::SignedDuration::from_hours(24)).unwrap(),
        now.checked_sub(jiff::SignedDuration::from_hours(1)).unwrap(),
    )
    .unwrap_or_else(|e| panic!("refresh the timestamp: {e:#}"));
    r
}

/// The one target file of `repo` whose name matches (stored as
/// `<sha256>.<target name>`).
fn target_file(repo: &Path, what: &str, matches: impl Fn(&str) -> bool) -> PathBuf {
    let dir = repo.join("x86_64/targets");
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    assert_eq!(found.len(), 1, "{what} in {}: {found:?}", dir.display());
    found[0].clone()
}

/// The name a target file is requested by (without the hash prefix).
fn target_name(file: &Path) -> String {
    let n = file.file_name().unwrap().to_string_lossy();
    n.split_once('.').unwrap().1.to_string()
}

/// `HH:MM-HH:MM` (UTC) from `from` to `to` hours after now: the guest's
/// clock is the host's.
fn window(from: i64, to: i64) -> String {
    let at = |h: i64| {
        let t = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(h))
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC);
        format!("{:02}:{:02}", t.hour(), t.minute())
    };
    format!("{}-{}", at(from), at(to))
}

/// A FAT disk labelled EDGEUPD with the overlay's `plan`, and an update
/// file (`update.bin`) with its number of tries for the `apply` step.
fn plan_disk(plan: &str, update: Option<(&Path, u32)>, dest: &Path, work: &Path) {
    let mut files = edgeimg::fs::vfat::BootFiles::default();
    files.add_bytes("plan", plan.to_string());
    let mut size = 64 * 1024 * 1024;
    if let Some((update, tries)) = update {
        files.add_file("update.bin", update.to_path_buf());
        files.add_bytes("tries", format!("{tries}\n"));
        size += std::fs::metadata(update).unwrap().len().next_multiple_of(1024 * 1024);
    }
    edgeimg::fs::vfat::make(dest, size, "EDGEUPD", 0x0ed6e0d, &files, work, 0)
        .unwrap_or_else(|e| panic!("update disk: {e:#}"));
}

struct Boot {
    vm: edgeimg::qemu::RunningVm,
    records: Records,
    started: Instant,
    name: String,
}

/// Boots `disk` with `extra` disks attached, on the user network (the
/// repository server) when `net`.
fn start(disk: &Path, extra: &[&Path], net: bool, work: &Path, name: &str) -> Boot {
    let b = edgeimg::config::board::load("x86_64").unwrap();
    let mut vm = edgeimg::qemu::Vm::new(&b.qemu, disk, work).unwrap();
    vm.extra_disks = extra.iter().map(|p| p.to_path_buf()).collect();
    vm.user_net = net;
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

/// The report of a boot of v1 from slot A, through dm-verity; the data
/// partition's marker is there from the second boot of a disk on.
fn check_v1(r: &HashMap<String, String>, first_boot: bool) {
    assert_eq!(
        (r["slot"].as_str(), r["version"].as_str()),
        ("a", "v1"),
        "{r:?}"
    );
    assert_eq!(entries(r), ["edgeimg-1-a.conf"], "{r:?}");
    let data = if first_boot { "none" } else { "data-v1" };
    assert_eq!(r["data"], data, "{r:?}");
    assert_eq!(r["rootdev"], "/dev/mapper/edgeimg-root", "{r:?}");
    assert_eq!(r["verity"], "verified", "{r:?}");
    assert_eq!(r["rand"], sha256(&random_bytes()), "{r:?}");
}

/// The report of a boot of v2 from slot B, blessed, with v2's root hash and
/// v1's data.
fn check_v2(r: &HashMap<String, String>, v2_hash: &str) {
    assert_eq!(
        (r["slot"].as_str(), r["version"].as_str()),
        ("b", "v2"),
        "{r:?}"
    );
    assert_eq!(r["health"], "active", "{r:?}");
    assert_eq!(r["ready"], "active", "{r:?}");
    // Slot B's root is opened through dm-verity with v2's hash, and reads.
    assert_eq!(r["rootdev"], "/dev/mapper/edgeimg-root", "{r:?}");
    assert_eq!(r["verity"], "verified", "{r:?}");
    assert_eq!(r["rand"], sha256(&random_bytes()), "{r:?}");
    assert_eq!(r["hash"], v2_hash, "{r:?}");
    assert_eq!(r["data"], "data-v1", "data partition kept: {r:?}");
    assert_eq!(r["etc"], "etc-v1", "/etc overlay kept: {r:?}");
    assert_eq!(
        entries(r),
        ["edgeimg-1-a.conf", "edgeimg-2-b.conf"],
        "blessed: {r:?}"
    );
}

/// A step's record: its exit code, and the rest (output, status, entries).
fn step(b: &mut Boot, kind: &str) -> (i32, String) {
    let rec = b.record(kind);
    let (first, rest) = rec.split_once('\n').unwrap_or((&rec, ""));
    let rc = first
        .strip_prefix("rc=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}: `{kind}` record without rc=: {rec}", b.name));
    (rc, rest.trim_end().to_string())
}

/// The offset each request of target `name` started at.
fn offsets(requests: &[String], name: &str) -> Vec<u64> {
    requests
        .iter()
        .filter_map(|r| r.rsplit_once(" from "))
        .filter(|(path, _)| path.ends_with(&format!(".{name}")))
        .map(|(_, from)| from.parse().unwrap())
        .collect()
}

#[test]
fn x86_64_update_pull_good_bad_and_interrupted() {
    let _guard = exclusive();
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let server = RepoServer::start();
    let (key, update_pub) = edgeimg::update::keygen(&w.join("fleet")).unwrap();
    let tuf = w.join("repo-keys");
    edgeimg::tuf::keygen(&tuf).unwrap();
    let trusted_root = edgeimg::tuf::root_path(&tuf);
    let main_url = server.guest_url("main");
    // The image's maintenance window is now; the first pulls of (p) are
    // given one that is not.
    let (inside, outside) = (window(-1, 3), window(5, 6));
    let pull = Pulling {
        url: &main_url,
        trusted_root: &trusted_root,
        window: &inside,
    };
    // Generations: v1 is 1, both v2 updates are 2; so on a device running
    // v2, v1's update file is an older, validly signed one (p).
    let (v1, v1_update) = build_signed(&config(w, "v1", false, 1, &pull), &w.join("out-v1"), &key);
    let (_, good) = build_signed(&config(w, "v2", false, 2, &pull), &w.join("out-v2"), &key);
    let (_, bad) = build_signed(&config(w, "v2", true, 2, &pull), &w.join("out-v2bad"), &key);
    // The host runs the device's verification.
    let expect = edgeimg::update::Expect {
        board: Some("x86_64"),
        arch: Some("amd64"),
    };
    for (u, generation) in [(&good, 2), (&bad, 2), (&v1_update, 1)] {
        assert_eq!(
            edgeimg::update::verify(u, &update_pub, &expect)
                .unwrap()
                .generation,
            generation
        );
    }
    let repos = repos(w, &v1_update, &good, &tuf, &update_pub);
    server.mount("replayed", &repos.full_at_v1);
    server.mount("expired", &repos.expired);
    let full_v2 = target_file(&repos.full, "the full v2", |n| {
        n.contains("-x86_64-2-") && n.ends_with(".update")
    });
    let delta = target_file(&repos.with_delta, "the delta", |n| {
        n.contains(".update.delta-from-")
    });
    let (full_v2_name, delta_name) = (target_name(&full_v2), target_name(&delta));
    let full_len = std::fs::metadata(&full_v2).unwrap().len();
    let delta_len = std::fs::metadata(&delta).unwrap().len();
    eprintln!("full update {full_len} bytes, delta from v1 {delta_len} bytes");
    assert!(delta_len < full_len / 10, "the delta is not small");
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
    let v2_manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("out-v2/manifest.json")).unwrap()).unwrap();
    let v2_hash = v2_manifest["verity"]["root_hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(v2_hash, v1_hash);
    let slot_a = manifest["layout"]["partitions"][1].clone();
    let (a_off, a_len) = (
        slot_a["offset"].as_u64().unwrap(),
        slot_a["size"].as_u64().unwrap(),
    );
    eprintln!("builds and repositories: {:.0}s", t0.elapsed().as_secs_f64());

    // (t) One byte of a root file flipped on the disk (the blocks outside the
    // hash tree, as an attacker with the card would): the file reads as an
    // I/O error, its modified bytes are never returned.
    let disk = w.join("disk-t.raw");
    disk_copy(&v1, &disk, disk_len).unwrap();
    let random = random_bytes();
    let at = find_block(&disk, a_off, a_len, &random[512 * 1024..512 * 1024 + 4096]);
    let mut tampered = random.clone();
    tampered[512 * 1024 + 100] ^= 0x01;
    flip_byte(&disk, at + 100);
    let mut b = start(&disk, &[], false, w, "verity-tampered");
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
    flip_byte(&disk, a_off + hash_offset + 4096 + 10);
    let mut b = start(&disk, &[], false, w, "verity-bad-tree");
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

    // (p) The full update pulled. Boot 1: outside its window, the download is
    // cut by the server half-way: the pull fails and keeps what it has.
    server.mount("main", &repos.full);
    server.take_requests();
    let disk = w.join("disk-p.raw");
    disk_copy(&v1, &disk, disk_len).unwrap();
    let plan = w.join("plan-p1.raw");
    plan_disk(&format!("pull {outside}\n"), None, &plan, w);
    server.cut_next_target(full_len / 2);
    let mut b = start(&disk, &[&plan], true, w, "pull-cut");
    check_v1(&b.report(), true);
    let (rc, out) = step(&mut b, "pull");
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("the next pull resumes there"), "{out}");
    assert!(out.contains("\"last_error\":"), "the status records the error: {out}");
    b.exits();
    assert_eq!(offsets(&server.take_requests(), &full_v2_name), [0]);

    // Boot 2: the next pull resumes where the cut left it (a Range request,
    // after a reboot), verifies, and holds the update for the window; the
    // product's pull service then runs in the image's window, installs it
    // without downloading again, and reboots into the trial.
    let plan = w.join("plan-p2.raw");
    plan_disk(&format!("pull {outside}\nservice\n"), None, &plan, w);
    let mut b = start(&disk, &[&plan], true, w, "pull-resume");
    check_v1(&b.report(), false);
    let (rc, out) = step(&mut b, "pull");
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("update: resuming"), "{out}");
    assert!(out.contains("it installs in the maintenance window"), "{out}");
    assert!(out.contains("entries=edgeimg-1-a.conf,\n") || out.ends_with("entries=edgeimg-1-a.conf,"), "nothing installed outside the window: {out}");
    b.wait("starting edgeimg-update-pull.service");
    b.exits();
    let resumed = offsets(&server.take_requests(), &full_v2_name);
    assert!(
        resumed.len() == 1 && resumed[0] > 0,
        "one resumed request of the full update: {resumed:?}"
    );

    // Boot 3: v2 on slot B, blessed; then a replayed older repository, an
    // expired timestamp and an older, validly signed update are each refused
    // with nothing fetched or written.
    let plan = w.join("plan-p3.raw");
    plan_disk(
        &format!(
            "pull-from {}\npull-from {}\napply\n",
            server.guest_url("replayed"),
            server.guest_url("expired")
        ),
        Some((&v1_update, 1)),
        &plan,
        w,
    );
    let mut b = start(&disk, &[&plan], true, w, "pull-good");
    b.wait("edgeimg: update good: boot entry edgeimg-2-b.conf");
    check_v2(&b.report(), &v2_hash);
    let (rc, out) = step(&mut b, "pull");
    assert_ne!(rc, 0, "{out}");
    assert!(
        out.contains("does not verify") && out.contains("when we had previously fetched version"),
        "a replayed older repository: {out}"
    );
    let (rc, out) = step(&mut b, "pull");
    assert_ne!(rc, 0, "{out}");
    assert!(
        out.contains("does not verify") && out.contains("expired"),
        "an expired timestamp: {out}"
    );
    // The older update is refused after verification, before any write:
    // slot A (the inactive one) and the boot entries stay as they were.
    let (rc, out) = step(&mut b, "update-apply");
    assert_ne!(rc, 0, "{out}");
    assert!(
        out.contains("update apply failed: the update is generation 1, older than generation 2 that this device runs"),
        "{out}"
    );
    assert!(
        out.contains("--allow-downgrade"),
        "the refusal names its override: {out}"
    );
    assert!(
        out.ends_with("entries=edgeimg-1-a.conf,edgeimg-2-b.conf,"),
        "{out}"
    );
    let log_path = b.vm.log.clone();
    b.exits();
    assert_eq!(server.take_requests(), Vec::<String>::new(), "a refused repository's target was fetched");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !log.contains("update: writing slot"),
        "a refused update was written ({})",
        log_path.display()
    );
    assert_eq!(
        sha256_range(&disk, a_off, a_len),
        sha256_range(&v1, a_off, a_len),
        "slot A changed"
    );

    // (b) An update whose health check fails: one try, then slot A by itself.
    let disk = w.join("disk-b.raw");
    disk_copy(&v1, &disk, disk_len).unwrap();
    let plan = w.join("plan-b.raw");
    plan_disk("apply\n", Some((&bad, 1)), &plan, w);
    let mut b = start(&disk, &[&plan], false, w, "update-bad-1");
    check_v1(&b.report(), true);
    let (rc, out) = step(&mut b, "update-apply");
    assert_eq!(rc, 0, "{out}");
    b.exits();
    let mut b = start(&disk, &[], false, w, "update-bad-2");
    b.wait("edgeimg: update health check failed on trial boot of edgeimg-2-b+0-1.conf");
    b.exits(); // FailureAction=reboot
    let mut b = start(&disk, &[], false, w, "update-bad-3");
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
    let plan = w.join("plan-c1.raw");
    plan_disk("apply\n", Some((&good, 2)), &plan, w);
    let mut b = start(&disk, &[&plan], false, w, "update-killed-1");
    b.wait("update: writing slot b");
    b.vm.kill();
    drop(b);
    // The pull service then takes the delta from v1 (the slot it runs),
    // not the full update, rebuilds v2 from it and reboots into it.
    server.mount("main", &repos.with_delta);
    server.take_requests();
    let plan = w.join("plan-c2.raw");
    plan_disk("service\n", None, &plan, w);
    let mut b = start(&disk, &[&plan], true, w, "update-killed-2");
    check_v1(&b.report(), false);
    b.wait("starting edgeimg-update-pull.service");
    b.exits();
    let requests = server.take_requests();
    assert_eq!(offsets(&requests, &delta_name), [0], "{requests:?}");
    assert_eq!(requests.len(), 1, "only the delta was fetched: {requests:?}");
    let mut b = start(&disk, &[], false, w, "delta-good");
    b.wait("edgeimg: update good: boot entry edgeimg-2-b.conf");
    check_v2(&b.report(), &v2_hash);
    b.exits();
    eprintln!("total: {:.0}s", t0.elapsed().as_secs_f64());
}
