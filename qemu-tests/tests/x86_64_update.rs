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
//! - (b): an update whose health check fails, on a USB stick (a third
//!   disk, found by the image's udev rule): three tries, then slot A;
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

use std::time::Instant;

use edgeimg_qemu_tests::repo_server::RepoServer;
use edgeimg_qemu_tests::update_vm::*;
use edgeimg_qemu_tests::{disk_copy, exclusive};

const BOARD: &str = "x86_64";

#[test]
fn x86_64_update_pull_good_bad_and_interrupted() {
    let _guard = exclusive();
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let server = RepoServer::start();
    let fleet = Fleet::new(BOARD, w, server.guest_url("main"));
    // The image's maintenance window is now; the first pulls of (p) are
    // given one that is not.
    let outside = window(5, 6);
    // Generations: v1 is 1, both v2 updates are 2; so on a device running
    // v2, v1's update file is an older, validly signed one (p).
    let (v1, v1_update) = fleet.build("v1", false, 1);
    let (_, good) = fleet.build("v2", false, 2);
    let (_, bad) = fleet.build("v2", true, 2);
    // The host runs the device's verification.
    let expect = edgeimg::update::Expect {
        board: Some("x86_64"),
        arch: Some("amd64"),
    };
    for (u, generation) in [(&good, 2), (&bad, 2), (&v1_update, 1)] {
        assert_eq!(
            edgeimg::update::verify(u, &fleet.update_pub, &expect)
                .unwrap()
                .generation,
            generation
        );
    }
    let repos = repos(&fleet, &v1_update, &good);
    server.mount("replayed", &repos.full_at_v1);
    server.mount("expired", &repos.expired);
    let full_v2 = target_file(&repos.full, BOARD, "the full v2", |n| {
        n.contains("-x86_64-2-") && n.ends_with(".update")
    });
    let delta = target_file(&repos.with_delta, BOARD, "the delta", |n| {
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
    eprintln!(
        "builds and repositories: {:.0}s",
        t0.elapsed().as_secs_f64()
    );

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
    let mut b = start(BOARD, &disk, &[], false, w, "verity-tampered");
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
    let mut b = start(BOARD, &disk, &[], false, w, "verity-bad-tree");
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
    let mut b = start(BOARD, &disk, &[&plan], true, w, "pull-cut");
    check_v1(&b.report(), true);
    let (rc, out) = step(&mut b, "pull");
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("the next pull resumes there"), "{out}");
    assert!(
        out.contains("\"last_error\":"),
        "the status records the error: {out}"
    );
    b.exits();
    assert_eq!(offsets(&server.take_requests(), &full_v2_name), [0]);

    // Boot 2: the next pull resumes where the cut left it (a Range request,
    // after a reboot), verifies, and holds the update for the window; the
    // product's pull service then runs in the image's window, installs it
    // without downloading again, and reboots into the trial.
    let plan = w.join("plan-p2.raw");
    plan_disk(&format!("pull {outside}\nservice\n"), None, &plan, w);
    let mut b = start(BOARD, &disk, &[&plan], true, w, "pull-resume");
    check_v1(&b.report(), false);
    let (rc, out) = step(&mut b, "pull");
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("update: resuming"), "{out}");
    assert!(
        out.contains("it installs in the maintenance window"),
        "{out}"
    );
    assert!(
        out.contains("entries=edgeimg-1-a.conf,\n") || out.ends_with("entries=edgeimg-1-a.conf,"),
        "nothing installed outside the window: {out}"
    );
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
    let mut b = start(BOARD, &disk, &[&plan], true, w, "pull-good");
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
    assert_eq!(
        server.take_requests(),
        Vec::<String>::new(),
        "a refused repository's target was fetched"
    );
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

    // (b) An update whose health check fails, brought on a USB stick: the
    // image's udev rule finds the medium at boot and the agent installs it
    // and reboots; one try, then slot A by itself.
    let disk = w.join("disk-b.raw");
    disk_copy(&v1, &disk, disk_len).unwrap();
    let stick = w.join("usb-bad.raw");
    usb_stick(&bad, &stick, w);
    let plan = w.join("plan-b.raw");
    plan_disk("wait\n", None, &plan, w);
    let mut b = start(BOARD, &disk, &[&plan, &stick], false, w, "update-usb-bad-1");
    check_v1(&b.report(), true);
    let line = b.wait(&format!(
        "{}updtest-x86_64-2-",
        edgeimg_agent::update::usb::INSTALLED_PREFIX
    ));
    assert!(line.contains("rebooting into the trial boot"), "{line}");
    b.exits();
    // The USB install uses the default of three tries: systemd-boot counts
    // each failed trial boot down, then boots slot A by itself.
    for (left, done) in [(2, 1), (1, 2), (0, 3)] {
        let mut b = start(
            BOARD,
            &disk,
            &[],
            false,
            w,
            &format!("update-bad-try{done}"),
        );
        b.wait(&format!(
            "edgeimg: update health check failed on trial boot of edgeimg-2-b+{left}-{done}.conf"
        ));
        b.exits(); // FailureAction=reboot
    }
    let mut b = start(BOARD, &disk, &[], false, w, "update-bad-back");
    let r = b.report();
    assert_eq!(
        (r["slot"].as_str(), r["version"].as_str()),
        ("a", "v1"),
        "fell back: {r:?}"
    );
    assert_eq!(r["data"], "data-v1", "{r:?}");
    assert_eq!(
        entries(&r),
        ["edgeimg-1-a.conf", "edgeimg-2-b+0-3.conf"],
        "{r:?}"
    );
    b.exits();

    // (c) Power lost while the slot is written: the old slot boots, intact.
    let disk = w.join("disk-c.raw");
    disk_copy(&v1, &disk, disk_len).unwrap();
    let plan = w.join("plan-c1.raw");
    plan_disk("apply\n", Some((&good, 2)), &plan, w);
    let mut b = start(BOARD, &disk, &[&plan], false, w, "update-killed-1");
    b.wait("update: writing slot b");
    b.vm.kill();
    drop(b);
    // The pull service then takes the delta from v1 (the slot it runs),
    // not the full update, rebuilds v2 from it and reboots into it.
    server.mount("main", &repos.with_delta);
    pull_delta_and_boot_v2(
        BOARD,
        &server,
        &disk,
        false,
        &delta_name,
        &v2_hash,
        w,
        "update-killed-delta",
    );
    eprintln!("total: {:.0}s", t0.elapsed().as_secs_f64());
}
