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
