//! What the update VM tests share: their image configs and builds, the
//! repositories `edgeimg publish` makes for them, the disks the test-only
//! overlay `overlays/updatetest` reads its plan from, USB sticks, and one
//! boot with its records (see tests/x86_64_update.rs, tests/arm64_update.rs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Records, attach_record_port, log_dir, overlay};

pub const BOOT: Duration = Duration::from_secs(600);
pub const EXIT: Duration = Duration::from_secs(180);
pub const GIB: u64 = 1024 * 1024 * 1024;

/// 1 MiB of incompressible bytes (xorshift64): mkfs.erofs stores the file
/// as is (compress hints), so the test finds its blocks in the raw disk.
pub fn random_bytes() -> Vec<u8> {
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

pub fn sha256(b: &[u8]) -> String {
    edgeimg::artifact::checksums::sha256_bytes(b)
}

/// Where the images pull from, and the maintenance window they install in.
struct Pulling<'a> {
    url: &'a str,
    trusted_root: &'a Path,
    window: &'a str,
}

fn config(
    dir: &Path,
    board: &str,
    version: &str,
    unhealthy: bool,
    generation: u64,
    pull: &Pulling,
) -> PathBuf {
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
            "[image]\nname = \"updtest\"\nboard = {board:?}\nverity = true\nhostname = \"upd-{{machine_id}}\"\noverlays = [{}]\n\n# No K3s: the update path does not need it, and boots are faster.\n[k3s]\nenabled = false\n\n[update]\ngeneration = {generation}\nrepository = {:?}\ntrusted_root = {:?}\nwindow = {:?}\n",
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
fn build_signed(cfg: &Path, board: &str, out: &Path, key: &Path) -> (PathBuf, PathBuf) {
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
    (r.image, out.join(format!("updtest-{board}.update")))
}

/// A fleet's keys (the update signing key, the TUF repository keys) and the
/// settings its test images pull with, under the test's directory.
pub struct Fleet {
    pub board: &'static str,
    pub dir: PathBuf,
    pub update_key: PathBuf,
    pub update_pub: PathBuf,
    /// TUF key prefix (`edgeimg keygen --tuf`).
    pub tuf: PathBuf,
    /// The images' repository URL, as the guest reaches it.
    pub url: String,
    /// The images' maintenance window: now (the guest's clock is the host's).
    pub window: String,
}

impl Fleet {
    pub fn new(board: &'static str, dir: &Path, url: String) -> Fleet {
        let (update_key, update_pub) = edgeimg::update::keygen(&dir.join("fleet")).unwrap();
        let tuf = dir.join("repo-keys");
        edgeimg::tuf::keygen(&tuf).unwrap();
        Fleet {
            board,
            dir: dir.to_path_buf(),
            update_key,
            update_pub,
            tuf,
            url,
            window: window(-1, 3),
        }
    }

    /// Builds release `version` (of `generation`; `unhealthy`: its health
    /// check fails) into `out-<version>[-bad]`: the image and its update.
    pub fn build(&self, version: &str, unhealthy: bool, generation: u64) -> (PathBuf, PathBuf) {
        let trusted_root = edgeimg::tuf::root_path(&self.tuf);
        let pull = Pulling {
            url: &self.url,
            trusted_root: &trusted_root,
            window: &self.window,
        };
        let cfg = config(&self.dir, self.board, version, unhealthy, generation, &pull);
        let out = self.dir.join(format!(
            "out-{version}{}",
            if unhealthy { "-bad" } else { "" }
        ));
        build_signed(&cfg, self.board, &out, &self.update_key)
    }

    /// Publishes `update` to `repo` with deltas from up to `deltas` older
    /// releases.
    pub fn publish(&self, update: &Path, repo: &Path, deltas: usize) {
        publish(update, repo, &self.tuf, &self.update_pub, deltas)
    }
}

/// The fleet's update repositories, each a directory `edgeimg publish` made
/// with the same TUF keys.
pub struct Repos {
    /// v1 and v2, and the delta v1 -> v2.
    pub with_delta: PathBuf,
    /// v1 and v2, no delta: a device takes the full update.
    pub full: PathBuf,
    /// `full` as it was with v1 only: older, validly signed metadata.
    pub full_at_v1: PathBuf,
    /// `full` with a timestamp that has expired.
    pub expired: PathBuf,
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

pub fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {}", from.display());
}

pub fn repos(f: &Fleet, v1: &Path, v2: &Path) -> Repos {
    let (w, tuf) = (f.dir.as_path(), f.tuf.as_path());
    let r = Repos {
        with_delta: w.join("repo-delta"),
        full: w.join("repo-full"),
        full_at_v1: w.join("repo-full-at-v1"),
        expired: w.join("repo-expired"),
    };
    f.publish(v1, &r.with_delta, 0);
    f.publish(v2, &r.with_delta, 1);
    f.publish(v1, &r.full, 0);
    copy_tree(&r.full, &r.full_at_v1);
    f.publish(v2, &r.full, 0);
    copy_tree(&r.full, &r.expired);
    // A newer timestamp, validly signed, that expired an hour ago.
    let now = jiff::Timestamp::now();
    edgeimg::publish::refresh_timestamp(
        &r.expired,
        tuf,
        now.checked_add(jiff::SignedDuration::from_hours(24))
            .unwrap(),
        now.checked_sub(jiff::SignedDuration::from_hours(1))
            .unwrap(),
    )
    .unwrap_or_else(|e| panic!("refresh the timestamp: {e:#}"));
    r
}

/// The one target file of `repo` whose name matches (stored as
/// `<sha256>.<target name>`).
pub fn target_file(
    repo: &Path,
    board: &str,
    what: &str,
    matches: impl Fn(&str) -> bool,
) -> PathBuf {
    let dir = repo.join(board).join("targets");
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
pub fn target_name(file: &Path) -> String {
    let n = file.file_name().unwrap().to_string_lossy();
    n.split_once('.').unwrap().1.to_string()
}

/// `HH:MM-HH:MM` (UTC) from `from` to `to` hours after now: the guest's
/// clock is the host's.
pub fn window(from: i64, to: i64) -> String {
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
pub fn plan_disk(plan: &str, update: Option<(&Path, u32)>, dest: &Path, work: &Path) {
    let mut files = edgeimg::fs::vfat::BootFiles::default();
    files.add_bytes("plan", plan.to_string());
    let mut size = 64 * 1024 * 1024;
    if let Some((update, tries)) = update {
        files.add_file("update.bin", update.to_path_buf());
        files.add_bytes("tries", format!("{tries}\n"));
        size += std::fs::metadata(update)
            .unwrap()
            .len()
            .next_multiple_of(1024 * 1024);
    }
    edgeimg::fs::vfat::make(dest, size, "EDGEUPD", 0x0ed6e0d, &files, work, 0)
        .unwrap_or_else(|e| panic!("update disk: {e:#}"));
}

pub struct Boot {
    pub vm: edgeimg::qemu::RunningVm,
    pub records: Records,
    pub started: Instant,
    pub name: String,
}

/// A USB-stick-like medium: a FAT filesystem labelled as the image's USB
/// update rule expects, holding one update file at its top level.
pub fn usb_stick(update: &Path, dest: &Path, work: &Path) {
    let mut files = edgeimg::fs::vfat::BootFiles::default();
    files.add_file("release.update", update.to_path_buf());
    let size =
        (std::fs::metadata(update).unwrap().len() + 64 * 1024 * 1024).next_multiple_of(1024 * 1024);
    edgeimg::fs::vfat::make(
        dest,
        size,
        edgeimg_contract::update::USB_LABEL,
        0x5b0c_d15c,
        &files,
        work,
        0,
    )
    .unwrap_or_else(|e| panic!("USB stick: {e:#}"));
}

/// Boots `disk` with `extra` disks attached, on the user network (the
/// repository server) when `net`.
pub fn start(
    board: &str,
    disk: &Path,
    extra: &[&Path],
    net: bool,
    work: &Path,
    name: &str,
) -> Boot {
    let b = edgeimg::config::board::load(board).unwrap();
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
    pub fn wait(&mut self, needle: &str) -> String {
        self.vm
            .wait_for(needle, BOOT)
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.name))
    }
    /// The guest's record of `kind`, as text.
    pub fn record(&mut self, kind: &str) -> String {
        let bytes = self
            .records
            .wait(&mut self.vm, kind, BOOT)
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.name));
        String::from_utf8(bytes)
            .unwrap_or_else(|e| panic!("{}: `{kind}` record is not text: {e}", self.name))
    }
    /// The boot's report as key=value pairs.
    pub fn report(&mut self) -> HashMap<String, String> {
        self.record("updatetest")
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
    pub fn exits(mut self) {
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
pub fn find_block(disk: &Path, offset: u64, len: u64, block: &[u8]) -> u64 {
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
pub fn sha256_range(path: &Path, offset: u64, len: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let mut f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    f.seek(SeekFrom::Start(offset)).unwrap();
    edgeimg_agent::update::format::sha256_of(&mut f, len, |_| Ok(()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn flip_byte(disk: &Path, at: u64) {
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

pub fn entries(r: &HashMap<String, String>) -> Vec<String> {
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
pub fn check_v1(r: &HashMap<String, String>, first_boot: bool) {
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
pub fn check_v2(r: &HashMap<String, String>, v2_hash: &str) {
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
pub fn step(b: &mut Boot, kind: &str) -> (i32, String) {
    let rec = b.record(kind);
    let (first, rest) = rec.split_once('\n').unwrap_or((&rec, ""));
    let rc = first
        .strip_prefix("rc=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}: `{kind}` record without rc=: {rec}", b.name));
    (rc, rest.trim_end().to_string())
}

/// The offset each request of target `name` started at.
pub fn offsets(requests: &[String], name: &str) -> Vec<u64> {
    requests
        .iter()
        .filter_map(|r| r.rsplit_once(" from "))
        .filter(|(path, _)| path.ends_with(&format!(".{name}")))
        .map(|(_, from)| from.parse().unwrap())
        .collect()
}

/// Boots `disk` (v1 on slot A; `first_boot` of the disk or not) on the user
/// network with a plan that starts the product's pull service against a
/// repository holding v2 and its delta `delta_name` from v1: the service
/// fetches only the delta, rebuilds v2 into slot B and reboots; then boots
/// v2 from slot B, blessed, with root hash `v2_hash`. Boots are named
/// `<name>-1` and `<name>-2`.
pub fn pull_delta_and_boot_v2(
    board: &str,
    server: &crate::repo_server::RepoServer,
    disk: &Path,
    first_boot: bool,
    delta_name: &str,
    v2_hash: &str,
    work: &Path,
    name: &str,
) {
    server.take_requests();
    let plan = work.join(format!("plan-{name}.raw"));
    plan_disk("service\n", None, &plan, work);
    let mut b = start(board, disk, &[&plan], true, work, &format!("{name}-1"));
    check_v1(&b.report(), first_boot);
    b.wait("starting edgeimg-update-pull.service");
    b.wait("update: rebuilt");
    b.exits();
    let requests = server.take_requests();
    assert_eq!(offsets(&requests, delta_name), [0], "{requests:?}");
    assert_eq!(
        requests.len(),
        1,
        "only the delta was fetched: {requests:?}"
    );
    let mut b = start(board, disk, &[], false, work, &format!("{name}-2"));
    b.wait("edgeimg: update good: boot entry edgeimg-2-b.conf");
    check_v2(&b.report(), v2_hash);
    b.exits();
}
