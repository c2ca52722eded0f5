//! VM test of the pull path on arm64 (AAVMF -> systemd-boot, dm-verity root):
//! a v1 image built for the generic arm64 board pulls v2 from a TUF
//! repository `edgeimg publish` made (served by the host's [`RepoServer`],
//! reached over QEMU's user network). The repository holds v2's full update
//! and its delta from v1; the device takes the delta, rebuilds v2 into the
//! inactive slot from it and the slot it runs, verifies it, installs it and
//! reboots; v2 then boots from slot B and is blessed. The x86_64 update test
//! covers the other pull cases (cut and resumed downloads, the window, the
//! refusals, USB, rollback); they run the same agent code, built for aarch64
//! here.

use std::time::Instant;

use edgeimg_qemu_tests::repo_server::RepoServer;
use edgeimg_qemu_tests::update_vm::*;
use edgeimg_qemu_tests::{disk_copy, exclusive};

const BOARD: &str = "arm64";

#[test]
fn arm64_pulls_a_delta_update_and_boots_it() {
    let _guard = exclusive();
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let server = RepoServer::start();
    let fleet = Fleet::new(BOARD, w, server.guest_url("main"));
    let (v1, v1_update) = fleet.build("v1", false, 1);
    let (_, v2_update) = fleet.build("v2", false, 2);
    let repo = w.join("repo");
    fleet.publish(&v1_update, &repo, 0);
    fleet.publish(&v2_update, &repo, 1);
    server.mount("main", &repo);
    let delta = target_file(&repo, BOARD, "the delta", |n| {
        n.contains(".update.delta-from-")
    });
    let delta_name = target_name(&delta);
    let v2_manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("out-v2/manifest.json")).unwrap()).unwrap();
    let v2_hash = v2_manifest["verity"]["root_hash"]
        .as_str()
        .unwrap()
        .to_string();
    eprintln!("builds and repository: {:.0}s", t0.elapsed().as_secs_f64());

    let disk = w.join("disk.raw");
    disk_copy(&v1, &disk, std::fs::metadata(&v1).unwrap().len() + GIB).unwrap();
    // Boot 1: v1 from slot A; the product's pull service takes the delta.
    // Boot 2: v2 from slot B, through dm-verity with v2's hash, blessed.
    pull_delta_and_boot_v2(
        BOARD,
        &server,
        &disk,
        true,
        &delta_name,
        &v2_hash,
        w,
        "arm64-pull",
    );
    eprintln!("total: {:.0}s", t0.elapsed().as_secs_f64());
}
