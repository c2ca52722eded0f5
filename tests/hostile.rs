//! Hostile input through the real binary: each case is refused with one clear
//! error naming the file or key, a non-zero exit, nothing under a final name
//! and no secret in stdout or stderr.

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const SECRET: &str = "K10SECRETSECRET";

/// Runs `args` in `cwd`, asserts failure, one error line naming every needle,
/// and no secret anywhere in the output. Returns stderr.
fn refused(args: &[&str], cwd: &Path, needles: &[&str]) -> String {
    let o = run(edgeimg()
        .args(args)
        .current_dir(cwd)
        .env_remove("EDGEIMG_K3S_TOKEN"));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{args:?} should fail; stderr: {err}");
    assert!(
        !out.contains(SECRET),
        "secret on stdout of {args:?}:\n{out}"
    );
    assert!(
        !err.contains(SECRET),
        "secret on stderr of {args:?}:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "stderr of {args:?} lacks `{n}`:\n{err}");
    }
    assert_eq!(err.matches("error:").count(), 1, "one error:\n{err}");
    err
}

// ---- edgeimg.toml ----

#[test]
fn config_syntax_error_on_a_secret_line_is_redacted() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("edgeimg.toml"),
        format!("[image]\nname = \"x\"\n[k3s]\ntoken = \"{SECRET}\n"),
    )
    .unwrap();
    let err = refused(&["plan"], d.path(), &["edgeimg.toml:4:"]);
    assert!(!err.contains('|'), "no source snippet:\n{err}");
}

#[test]
fn config_k3s_token_is_refused_without_echoing_it() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("edgeimg.toml"),
        format!("[image]\nname = \"x\"\n\n[k3s]\ntoken = \"{SECRET}\"\n"),
    )
    .unwrap();
    refused(
        &["build", "--out", "out"],
        d.path(),
        &["edgeimg.toml:5:", "k3s.token", "edgeimg node"],
    );
    assert!(visible_files(&d.path().join("out")).is_empty());
}

#[test]
fn config_oversized_image_name_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let name = "a".repeat(5000);
    std::fs::write(
        d.path().join("edgeimg.toml"),
        format!("[image]\nname = \"{name}\"\n"),
    )
    .unwrap();
    let err = refused(&["plan"], d.path(), &["edgeimg.toml", "image.name"]);
    assert!(err.len() < 1000, "the message does not quote 5000 bytes");
}

// ---- node files on the host ----

#[test]
fn node_file_syntax_error_on_token_line_is_redacted() {
    let d = tempfile::tempdir().unwrap();
    let node = d.path().join("node.toml");
    std::fs::write(&node, format!("[k3s]\ntoken = \"{SECRET}\n")).unwrap();
    std::fs::write(d.path().join("img.raw"), vec![0u8; 4096]).unwrap();
    refused(
        &[
            "flash",
            "img.raw",
            "--to-file",
            "out.raw",
            "--node",
            "node.toml",
            "--yes",
        ],
        d.path(),
        &["node.toml"],
    );
    assert!(!d.path().join("out.raw").exists());
}

#[test]
fn node_force_over_a_world_readable_file_leaves_it_0600() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("node.toml");
    std::fs::write(&out, "old").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(d.path().join("tok"), SECRET).unwrap();
    let o = run(edgeimg()
        .args([
            "node",
            "--role",
            "agent",
            "--server",
            "https://10.0.0.1:6443",
            "--token-from",
            "tok",
            "-o",
            "node.toml",
            "--force",
        ])
        .current_dir(d.path())
        .env_remove("EDGEIMG_K3S_TOKEN"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(&out).unwrap().contains(SECRET));
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        2,
        "no temporary file left"
    );
}

#[test]
fn node_without_force_keeps_the_existing_file() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("node.toml"), "old").unwrap();
    refused(
        &["node", "--hostname", "edge-1", "-o", "node.toml"],
        d.path(),
        &["node.toml", "--force"],
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("node.toml")).unwrap(),
        "old"
    );
}

// ---- output directory ----

/// A build that fails after taking the output directory's lock (here: the
/// default config's K3s bundle is not cached) leaves nothing in it, not
/// even the lock file.
#[test]
fn a_failed_build_leaves_no_lock_file() {
    let d = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let o = run(edgeimg()
        .args(["build", "--out", "out"])
        .current_dir(d.path())
        .env("EDGEIMG_CACHE_DIR", cache.path())
        .env_remove("EDGEIMG_K3S_BUNDLE"));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("bundle"));
    let left: Vec<String> = std::fs::read_dir(d.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left in out/: {left:?}");
}

/// A join token left in the environment does not go into a node file that
/// asked for no K3s role.
#[test]
fn node_ignores_a_stray_environment_token() {
    let d = tempfile::tempdir().unwrap();
    let o = run(edgeimg()
        .args(["node", "--hostname", "edge-1", "-o", "n.toml"])
        .current_dir(d.path())
        .env("EDGEIMG_K3S_TOKEN", SECRET));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("EDGEIMG_K3S_TOKEN is set") && !err.contains(SECRET),
        "{err}"
    );
    let text = std::fs::read_to_string(d.path().join("n.toml")).unwrap();
    assert!(!text.contains(SECRET) && !text.contains("[k3s]"), "{text}");
    // Asked for, it is used.
    let o = run(edgeimg()
        .args([
            "node",
            "--role",
            "agent",
            "--server",
            "https://10.0.0.1:6443",
            "-o",
            "k.toml",
        ])
        .current_dir(d.path())
        .env("EDGEIMG_K3S_TOKEN", SECRET));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::read_to_string(d.path().join("k.toml"))
            .unwrap()
            .contains(SECRET)
    );
    // Printing it is refused, saying why.
    std::fs::write(d.path().join("tok"), SECRET).unwrap();
    refused(
        &[
            "node",
            "--role",
            "agent",
            "--server",
            "https://10.0.0.1:6443",
            "--token-from",
            "tok",
        ],
        d.path(),
        &["not printing the node file", "--out"],
    );
}

// ---- SSH keys ----

/// A private key given where a public key belongs is refused by file and
/// line, never printed, and no node file is written.
#[test]
fn node_ssh_key_file_holding_a_private_key_is_refused_unquoted() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("id_ed25519");
    ok(std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", SECRET, "-f"])
        .arg(&key));
    let private = std::fs::read_to_string(&key).unwrap();
    let body_line = private.lines().nth(1).unwrap().to_string();
    let err = refused(
        &[
            "node",
            "--ssh-key-file",
            "ops:id_ed25519",
            "-o",
            "node.toml",
        ],
        d.path(),
        &["--ssh-key-file id_ed25519:1", "private key"],
    );
    assert!(
        !err.contains(&body_line),
        "private key material printed:\n{err}"
    );
    assert!(!d.path().join("node.toml").exists());
    // The .pub beside it is accepted.
    ok(edgeimg()
        .args([
            "node",
            "--ssh-key-file",
            "ops:id_ed25519.pub",
            "-o",
            "node.toml",
        ])
        .current_dir(d.path()));
    assert!(
        std::fs::read_to_string(d.path().join("node.toml"))
            .unwrap()
            .contains("ssh-ed25519 ")
    );
}

#[test]
fn node_ssh_key_that_is_not_a_key_is_refused_unquoted() {
    let d = tempfile::tempdir().unwrap();
    let err = refused(
        &[
            "node",
            "--ssh-key",
            &format!("ops:{SECRET} more text"),
            "-o",
            "n.toml",
        ],
        d.path(),
        &["--ssh-key #1 (user ops)", "not an OpenSSH public key"],
    );
    assert!(!err.contains("more text"), "{err}");
    assert!(!d.path().join("n.toml").exists());
}

#[test]
fn config_user_ssh_key_that_is_not_a_key_names_its_line() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("edgeimg.toml"),
        format!(
            "[image]\nname = \"x\"\n\n[[users]]\nname = \"ops\"\nssh_keys = [\n  \"ssh-ed25519 {SECRET}AAAA\",\n]\n"
        ),
    )
    .unwrap();
    refused(
        &["plan"],
        d.path(),
        &[
            "edgeimg.toml:7:",
            "users[0].ssh_keys[0]",
            "not an OpenSSH public key",
        ],
    );
}

// ---- stdout ----

#[test]
fn a_closed_stdout_pipe_does_not_panic() {
    let mut child = edgeimg()
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before (or while) the child writes more than a pipe holds.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "quiet: {err}");
}

// ---- overlays ----

/// Writes an edgeimg.toml in `dir` with the given overlay list.
fn config_with_overlays(dir: &Path, overlays: &[&str]) {
    let list: Vec<String> = overlays.iter().map(|o| format!("\"{o}\"")).collect();
    std::fs::write(
        dir.join("edgeimg.toml"),
        format!("[image]\nname = \"x\"\noverlays = [{}]\n", list.join(", ")),
    )
    .unwrap();
}

/// A FIFO in an overlay is refused by path before anything is built (no
/// output directory, no bootstrap).
#[test]
fn overlay_fifo_is_refused_before_the_build_starts() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("ov/etc")).unwrap();
    let fifo = d.path().join("ov/etc/pipe");
    ok(std::process::Command::new("mkfifo").arg(&fifo));
    config_with_overlays(d.path(), &["ov"]);
    let cache = tempfile::tempdir().unwrap();
    let o = run(edgeimg()
        .args(["build", "--out", "out"])
        .current_dir(d.path())
        .env("EDGEIMG_CACHE_DIR", cache.path()));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("ov/etc/pipe") && err.contains("a FIFO"),
        "{err}"
    );
    assert!(!d.path().join("out").exists(), "the build went on: {err}");
}

/// The build host's /etc as an overlay is refused before anything is built.
#[test]
fn host_system_directory_as_overlay_is_refused() {
    let d = tempfile::tempdir().unwrap();
    config_with_overlays(d.path(), &["/etc"]);
    refused(
        &["build", "--out", "out"],
        d.path(),
        &["overlay /etc", "system directory"],
    );
    assert!(!d.path().join("out").exists());
}

/// A real build (root, when run as root) whose overlay writes through the
/// base's `var/run -> /run` link: the file lands in the image's own `/run`
/// and the build host's /run is not touched.
#[test]
fn overlay_through_var_run_never_touches_the_host_run() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a root build needs root");
        return;
    }
    let _g = exclusive();
    let d = tempfile::tempdir().unwrap();
    let name = format!(
        "edgeimg-hostile-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let host_file = Path::new("/run").join(&name);
    assert!(!host_file.exists());
    std::fs::create_dir_all(d.path().join("ov/var/run")).unwrap();
    std::fs::write(d.path().join("ov/var/run").join(&name), "from overlay\n").unwrap();
    std::fs::write(
        d.path().join("edgeimg.toml"),
        "[image]\nname = \"ovrun\"\ncompression = \"none\"\noverlays = [\"ov\"]\n[k3s]\nenabled = false\n",
    )
    .unwrap();
    let o = run(edgeimg()
        .args(["build", "--out", "out"])
        .current_dir(d.path()));
    let escaped = host_file.exists();
    let _ = std::fs::remove_file(&host_file);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !escaped,
        "the overlay wrote the build host's {}",
        host_file.display()
    );
    assert!(o.status.success(), "{err}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("out/manifest.json")).unwrap())
            .unwrap();
    let files = manifest["inputs"]["overlays"][0]["files"].to_string();
    assert!(files.contains(&format!("var/run/{name}")), "{files}");
}
