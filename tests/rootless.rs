//! Rootless builds: the tests' image built as root and built by an unprivileged
//! user (through `runuser`, so with no capabilities at all) from the same inputs
//! and SOURCE_DATE_EPOCH are byte-identical, and the unprivileged build leaves
//! nothing owned by anyone else in that user's cache or output.
//!
//! Runs as root (CI does): it creates the build user `edgeimg-ci` with sub-id
//! ranges if `.ci/setup` has not.

mod common;
use common::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// The same epoch as tests/image.rs, so the root build reuses its cached base.
const EPOCH: &str = "1750000000";
const USER: &str = "edgeimg-ci";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Why this machine cannot run unprivileged user namespaces at all, if so.
fn userns_unavailable() -> Option<String> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Some("user.max_user_namespaces is 0".into());
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Some("kernel.unprivileged_userns_clone is 0".into());
    }
    None
}

/// The first free id after every range in `file` (at least 100000).
fn free_subid_start(file: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(f.get(1)?.parse::<u64>().ok()? + f.get(2)?.parse::<u64>().ok()?)
        })
        .fold(100_000, u64::max)
}

fn has_range(file: &str) -> bool {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(&format!("{USER}:")))
}

/// Creates the build user and its sub-id ranges when missing; returns (uid, home).
fn ensure_user() -> (u32, std::path::PathBuf) {
    if !run(Command::new("id").arg("-u").arg(USER)).status.success() {
        ok(Command::new("useradd")
            .args(["--create-home", "--user-group", "--shell", "/bin/sh"])
            .arg(USER));
    }
    for (file, flag) in [
        ("/etc/subuid", "--add-subuids"),
        ("/etc/subgid", "--add-subgids"),
    ] {
        if !has_range(file) {
            let start = free_subid_start(file);
            ok(Command::new("usermod")
                .arg(flag)
                .arg(format!("{start}-{}", start + 65535))
                .arg(USER));
        }
    }
    let uid: u32 = ok(Command::new("id").arg("-u").arg(USER))
        .trim()
        .parse()
        .unwrap();
    let home = ok(Command::new("getent").arg("passwd").arg(USER))
        .trim()
        .split(':')
        .nth(5)
        .unwrap()
        .to_string();
    (uid, home.into())
}

fn copy_tree(from: &Path, to: &Path) {
    ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// Every path under `dir` (itself included) whose owner is not `uid`.
fn foreign_owned(dir: &Path, uid: u32) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.uid() != uid {
            bad.push(format!("{} (uid {})", p.display(), m.uid()));
        }
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                stack.push(e.path());
            }
        }
    }
    bad
}

fn installed(manifest: &Path) -> serde_json::Value {
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    m["inputs"]["packages"].clone()
}

#[test]
fn unprivileged_build_gives_the_same_image_as_root() {
    if !is_root() {
        eprintln!(
            "\n\n*** SKIPPED rootless test: it must run as root to create the build user {USER} (CI runs it) ***\n\n"
        );
        return;
    }
    if let Some(why) = userns_unavailable() {
        eprintln!(
            "\n\n*** SKIPPED rootless test: this kernel forbids unprivileged user namespaces: {why} ***\n\n"
        );
        return;
    }
    let _g = exclusive();
    let (uid, home) = ensure_user();

    // Inputs the unprivileged user can read: the binary and the fixtures,
    // copied out of a checkout that may sit under /root.
    let work = tempfile::Builder::new()
        .prefix("edgeimg-rootless-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = work.path().join("edgeimg");
    std::fs::copy(env!("CARGO_BIN_EXE_edgeimg"), &bin).unwrap();
    let fx = work.path().join("fixtures");
    copy_tree(&fixtures(), &fx);
    let user_out = work.path().join("user-out");
    std::fs::create_dir(&user_out).unwrap();
    ok(Command::new("chown")
        .arg("-R")
        .arg(format!("{USER}:"))
        .arg(&fx)
        .arg(&user_out));
    let config = fx.join("image.toml");

    // As root (root's cache; the same base tests/image.rs uses).
    let root_out = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let o = run(Command::new(&bin)
        .args(["build", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(root_out.path())
        .env("SOURCE_DATE_EPOCH", EPOCH));
    assert!(
        o.status.success(),
        "root build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let root_secs = t.elapsed().as_secs_f64();

    // As the unprivileged user: a clean environment with Debian's user PATH
    // (no sbin), its own cache under its home.
    let t = Instant::now();
    let o = run(Command::new("runuser")
        .args(["-u", USER, "--", "env", "-i"])
        .arg(format!("HOME={}", home.display()))
        .arg("PATH=/usr/local/bin:/usr/bin:/bin")
        .arg(format!("SOURCE_DATE_EPOCH={EPOCH}"))
        .arg(&bin)
        .args(["build", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&user_out)
        .current_dir(work.path()));
    let user_secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "unprivileged build failed:\n{err}");
    eprintln!("timings: root build {root_secs:.1}s, unprivileged build {user_secs:.1}s");
    eprintln!("unprivileged build log:\n{err}");

    let img = "imgtest-x86_64.img";
    let sha = |p: &Path| edgeimg::artifact::checksums::sha256_file(p).unwrap();
    let (a, b) = (root_out.path().join(img), user_out.join(img));
    if sha(&a) != sha(&b) {
        // Two caches, two bootstraps: if the mirror moved between them, the
        // package versions say so.
        let (pa, pb) = (
            installed(&root_out.path().join("manifest.json")),
            installed(&user_out.join("manifest.json")),
        );
        assert_eq!(
            pa, pb,
            "the two bases hold different packages: the mirror changed since root's cached base was made; rebuild it with `edgeimg build --refresh`"
        );
        panic!("root and unprivileged builds of the same inputs differ: {a:?} vs {b:?}");
    }

    // Nothing in the user's cache or output belongs to root or to a sub-id.
    let cache = home.join(".cache/edgeimg");
    assert!(cache.join("base").is_dir(), "no base cached in {cache:?}");
    let bad = foreign_owned(&cache, uid);
    assert!(
        bad.is_empty(),
        "files in the user's cache not owned by {USER}:\n{}",
        bad.join("\n")
    );
    let bad = foreign_owned(&user_out, uid);
    assert!(
        bad.is_empty(),
        "outputs not owned by {USER}:\n{}",
        bad.join("\n")
    );
}

/// `nobody` has no sub-id range: doctor names what is missing with its fix,
/// and a build stops at once with the same list, before any work.
#[test]
fn without_sub_ids_doctor_and_build_say_what_is_missing() {
    if !is_root() {
        eprintln!("\n\n*** SKIPPED: must run as root to act as `nobody` ***\n\n");
        return;
    }
    let has = |f: &str| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("nobody:") || l.starts_with("65534:"))
    };
    assert!(
        !has("/etc/subuid") && !has("/etc/subgid"),
        "this test needs `nobody` without sub-ids"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = dir.path().join("edgeimg");
    std::fs::copy(env!("CARGO_BIN_EXE_edgeimg"), &bin).unwrap();
    let as_nobody = |args: &[&str]| {
        run(Command::new("runuser")
            .args([
                "-u",
                "nobody",
                "--",
                "env",
                "-i",
                "HOME=/nonexistent",
                "PATH=/usr/bin:/bin",
            ])
            .arg(&bin)
            .args(args)
            .current_dir(dir.path()))
    };
    let o = as_nobody(&["doctor", "--board", "x86_64"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "doctor passed without sub-ids:\n{out}");
    assert!(
        out.contains("MISSING  rootless: /etc/subuid range for nobody")
            && out.contains("usermod --add-subuids")
            && out.contains("rootless: /etc/subgid range for nobody"),
        "doctor output:\n{out}"
    );
    let o = as_nobody(&["build", "--out", "out"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("building as an unprivileged user needs user namespaces with sub-ids")
            && err.contains("/etc/subuid range for nobody: as root: usermod --add-subuids"),
        "build error:\n{err}"
    );
    assert!(
        !dir.path().join("out").exists(),
        "the failed build made its output directory"
    );
}
