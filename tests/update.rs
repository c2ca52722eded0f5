//! `edgeimg keygen` and `edgeimg update verify` through the real binary. The
//! update files are written by the same library code `build --update` uses,
//! with small payloads (a real build is exercised by the x86_64 update VM test).

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    updates::keygen(dir, name)
}

fn make_update(dir: &Path, key: &Path, board: &str, arch: &str) -> PathBuf {
    make_update_gen(dir, key, board, arch, 0)
}

fn make_update_gen(dir: &Path, key: &Path, board: &str, arch: &str, generation: u64) -> PathBuf {
    updates::make_update(
        dir,
        key,
        board,
        arch,
        generation,
        &vec![0xe5u8; 1 << 20],
        "00112233aabbccdd",
    )
}

fn verify(file: &Path, public: &Path) -> std::process::Output {
    run(edgeimg()
        .args(["update", "verify"])
        .arg(file)
        .arg("--key")
        .arg(public)
        .args(["--board", "x86_64", "--arch", "amd64"]))
}

fn refused(file: &Path, public: &Path, needle: &str) {
    let o = verify(file, public);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{} was accepted", file.display());
    assert!(
        err.contains("update refused") && err.contains(needle),
        "{err}"
    );
    assert!(
        err.contains(&file.display().to_string()),
        "names the file: {err}"
    );
    // With --json: one object on stdout saying so, and the same exit status.
    let j = run(edgeimg()
        .args(["update", "verify", "--json"])
        .arg(file)
        .arg("--key")
        .arg(public)
        .args(["--board", "x86_64", "--arch", "amd64"]));
    assert_eq!(
        j.status.code(),
        o.status.code(),
        "--json changes the exit status"
    );
    let v: serde_json::Value = serde_json::from_slice(&j.stdout)
        .unwrap_or_else(|e| panic!("a refused --json verify prints JSON ({e}): {j:?}"));
    assert_eq!(v["verified"], false, "{v}");
    assert_eq!(v["file"], file.display().to_string(), "{v}");
    assert!(v["error"].as_str().unwrap().contains(needle), "{v}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
}

#[test]
fn keygen_makes_a_private_key_and_never_overwrites() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "fleet");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&public).unwrap();
    assert!(text.contains("edgeimg-update-ed25519-public "), "{text}");
    let before = std::fs::read(&key).unwrap();
    let o = run(edgeimg()
        .arg("keygen")
        .arg("--out")
        .arg(d.path().join("fleet")));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&key).unwrap(), before, "key overwritten");
    // The secret never reaches the output.
    let secret = std::fs::read_to_string(&key).unwrap();
    let hex = secret
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap();
    let o = run(edgeimg()
        .arg("keygen")
        .arg("--out")
        .arg(d.path().join("other")));
    assert!(!String::from_utf8_lossy(&o.stdout).contains(hex));
}

#[test]
fn verify_accepts_a_good_update_and_refuses_every_bad_one() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "fleet");
    let good = make_update(d.path(), &key, "x86_64", "amd64");
    let o = verify(&good, &public);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("OK") && out.contains("00112233aabbccdd") && out.contains(" generation 0 "),
        "{out}"
    );

    let bytes = std::fs::read(&good).unwrap();
    let tampered = d.path().join("tampered.update");
    let mut b = bytes.clone();
    let n = b.len();
    b[n - 5000] ^= 0x40; // inside root.erofs
    std::fs::write(&tampered, &b).unwrap();
    refused(
        &tampered,
        &public,
        "payload root.erofs is corrupt or tampered with",
    );

    let header = d.path().join("header.update");
    let mut b = bytes.clone();
    let at = b.windows(6).position(|w| w == b"x86_64").unwrap();
    b[at..at + 6].copy_from_slice(b"x86_65");
    std::fs::write(&header, &b).unwrap();
    refused(&header, &public, "bad signature");

    let truncated = d.path().join("truncated.update");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1]).unwrap();
    refused(&truncated, &public, "truncated");

    let (_, other_pub) = keygen(d.path(), "other");
    refused(&good, &other_pub, "bad signature: signed with key");

    let rpi = make_update(d.path(), &key, "rpi4", "arm64");
    refused(
        &rpi,
        &public,
        "the update is for board rpi4, this is a x86_64",
    );
    let arm = make_update(d.path(), &key, "x86_64", "arm64");
    refused(
        &arm,
        &public,
        "the update is for architecture arm64, this is amd64",
    );
}

#[test]
fn build_refuses_update_without_key_and_a_world_readable_key() {
    let d = tempfile::tempdir().unwrap();
    let o = run(edgeimg()
        .args(["build", "--update", "-o"])
        .arg(d.path().join("out")));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--signing-key"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (key, _) = keygen(d.path(), "fleet");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(edgeimg()
        .args(["build", "--update", "--signing-key"])
        .arg(&key)
        .arg("-o")
        .arg(d.path().join("out")));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("chmod 600"), "{err}");
    assert!(
        !d.path().join("out").exists(),
        "no output for a refused build"
    );
}

#[test]
fn verify_shows_the_signed_generation() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "fleet");
    let g12 = make_update_gen(d.path(), &key, "x86_64", "amd64", 12);
    let o = verify(&g12, &public);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("build 00112233aabbccdd generation 12 for x86_64"),
        "{out}"
    );
    let bytes = std::fs::read(&g12).unwrap();
    // Format 2 carries it; generation 0 stays format 1, which older agents read.
    assert_eq!(&bytes[8..12], &2u32.to_le_bytes());
    let g0 = std::fs::read(make_update_gen(d.path(), &key, "x86_64", "amd64", 0)).unwrap();
    assert_eq!(&g0[8..12], &1u32.to_le_bytes());
    // The generation is signed: raising it breaks the signature.
    let at = bytes
        .windows(15)
        .position(|w| w == b"\"generation\":12")
        .unwrap();
    let mut b = bytes.clone();
    b[at + 13] = b'9';
    let raised = d.path().join("raised.update");
    std::fs::write(&raised, &b).unwrap();
    refused(&raised, &public, "bad signature");
}

/// A header signed as given (what a careless or hostile signer could make;
/// the library writer refuses such headers), one byte per payload.
fn signed_raw(dir: &Path, key: &Path, header: serde_json::Value) -> PathBuf {
    use ed25519_dalek::Signer;
    let sk = edgeimg::update::load_signing_key(key).unwrap();
    let json = serde_json::to_vec(&header).unwrap();
    let mut out = b"EDGEUPD\0".to_vec();
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    let sig = sk.sign(&out);
    out.extend_from_slice(&sig.to_bytes());
    let n = header["payloads"].as_array().unwrap().len();
    out.extend(std::iter::repeat_n(b'x', n));
    let path = dir.join("raw.update");
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn verify_refuses_hostile_headers() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "fleet");
    // SHA-256 of "x".
    let x = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881";
    let header = |names: &[&str], title: &str| {
        let payloads: Vec<serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| serde_json::json!({"name": n, "offset": i, "size": 1, "sha256": x}))
            .collect();
        serde_json::json!({
            "name": title, "board": "x86_64", "arch": "amd64", "build_id": "00aa",
            "edgeimg_version": "0", "kernel_version": "6.12", "cmdline": "root=x",
            "created": 0, "key_id": "k", "generation": 2, "payloads": payloads,
        })
    };
    // The well-formed control verifies.
    let f = signed_raw(d.path(), &key, header(&["root.erofs", "vmlinuz"], "t"));
    let o = verify(&f, &public);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (h, needle) in [
        (
            header(&["root.erofs", "vmlinuz", "vmlinuz"], "t"),
            "payload \"vmlinuz\" appears twice",
        ),
        (
            header(&["root.erofs", "../vmlinuz"], "t"),
            "payload name \"../vmlinuz\" is path-like",
        ),
        (
            header(&["root.erofs", "boot/../../x"], "t"),
            "is not a plain relative path under boot/",
        ),
        (
            header(&["root.erofs"], "t\noptions init=/bin/sh"),
            "name contains the control character '\\n'",
        ),
    ] {
        let f = signed_raw(d.path(), &key, h);
        refused(&f, &public, needle);
    }
}

/// Crafted headers cost bounded memory (< 64 MiB peak RSS): a length field
/// claiming 4 GiB, a header of the maximum size (1 MiB) holding thousands
/// of payload entries, signed, and a payload claiming 2^60 bytes. Each is
/// refused with one error naming the file.
#[test]
fn crafted_headers_are_refused_in_bounded_memory() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "fleet");
    let x = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881";
    let base = |payloads: Vec<serde_json::Value>| {
        serde_json::json!({
            "name": "t", "board": "x86_64", "arch": "amd64", "build_id": "00aa",
            "edgeimg_version": "0", "kernel_version": "6.12", "cmdline": "root=x",
            "created": 0, "key_id": "k", "generation": 2, "payloads": payloads,
        })
    };
    let check = |f: &Path, needle: &str| {
        let m = run_measured(
            edgeimg()
                .args(["update", "verify"])
                .arg(f)
                .arg("--key")
                .arg(&public)
                .args(["--board", "x86_64", "--arch", "amd64"]),
        );
        assert!(!m.success, "{} was accepted", f.display());
        assert!(
            m.stderr.contains(needle) && m.stderr.contains(&f.display().to_string()),
            "{}",
            m.stderr
        );
        assert!(
            m.peak_rss_kib < 64 * 1024,
            "{needle}: peak RSS {} KiB",
            m.peak_rss_kib
        );
    };
    // A length field of 4 GiB, and nothing behind it.
    let huge = d.path().join("huge-len.update");
    let mut b = b"EDGEUPD\0".to_vec();
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&huge, &b).unwrap();
    check(&huge, "exceeds");
    // Close to 1 MiB of signed header: 12000 payload entries.
    let many: Vec<serde_json::Value> = (0..12000)
        .map(|i| serde_json::json!({"name": format!("p{i}"), "offset": i, "size": 1, "sha256": x}))
        .collect();
    let f = signed_raw(d.path(), &key, base(many));
    let len = std::fs::metadata(&f).unwrap().len();
    assert!(len > 900 * 1024, "{len}");
    let many = d.path().join("many.update");
    std::fs::rename(&f, &many).unwrap();
    check(&many, "update refused");
    // A payload claiming 2^60 bytes.
    let f = signed_raw(
        d.path(),
        &key,
        base(vec![
            serde_json::json!({"name": "root.erofs", "offset": 0, "size": 1u64 << 60, "sha256": x}),
        ]),
    );
    check(&f, "truncated");
}
