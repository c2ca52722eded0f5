//! The STAND-IN bundle (qemu-tests/standin/make-bundle; NOT K3s) is a bundle
//! directory edgeimg accepts like a real one: its own `bundle.toml` parses,
//! every file verifies against its checksum file, every script says it is a
//! stand-in, and a rebuild gives the same bytes.
//!
//! The first run downloads Debian's busybox-static .deb (cached afterwards,
//! see qemu-tests/standin/README.md).

use std::path::Path;
use std::process::Command;

use edgeimg::bundle::{self, Arch, Manifest};

fn make_bundle(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("standin/make-bundle");
    let out = Command::new(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "make-bundle {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Regular files of one tar.gz, as (path, bytes).
fn tar_gz_files(path: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(path)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "tar -xzf {}", path.display());
    let mut out = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir.path()).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn assert_labelled(what: &str, data: &[u8], label: &str) {
    let text = String::from_utf8_lossy(data);
    let head: Vec<&str> = text.lines().take(3).collect();
    assert!(
        head.first().is_some_and(|l| l.starts_with("#!/bin/sh")),
        "{what}: not a sh script: {head:?}"
    );
    assert!(
        head.iter().any(|l| l.contains(label)),
        "{what}: first lines lack `{label}`: {head:?}"
    );
}

#[test]
fn standin_bundle_is_accepted_labelled_and_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    make_bundle(&["--arch", "amd64", "--out", dir.to_str().unwrap()]);

    let manifest = Manifest::in_dir(&dir)
        .unwrap()
        .expect("make-bundle writes bundle.toml");
    assert!(manifest.name.starts_with("standin-"), "{}", manifest.name);
    assert!(
        manifest.description.contains("STAND-IN") && manifest.description.contains("NOT K3s"),
        "{}",
        manifest.description
    );
    assert_eq!(manifest.k3s_version, "v0.0.0-standin");
    for buildkit in [false, true] {
        let b = bundle::from_dir(&dir, &manifest, Arch::Amd64, buildkit).unwrap();
        assert_eq!(b.k3s.file, "k3s");
        assert_eq!(b.airgap_images.file, "k3s-airgap-images-amd64.tar.zst");
        assert_eq!(b.nerdctl.file, "nerdctl-2.1.6-linux-amd64.tar.gz");
        assert_eq!(
            b.nerdctl_full.as_ref().unwrap().file,
            "nerdctl-full-2.1.6-linux-amd64.tar.gz"
        );
    }
    assert!(manifest.assets(Arch::Arm64).is_err(), "only amd64 was made");

    assert_labelled(
        "k3s",
        &std::fs::read(dir.join("k3s")).unwrap(),
        "edgeimg STAND-IN for K3s: NOT K3s",
    );
    let nerdctl = tar_gz_files(&dir.join("nerdctl-2.1.6-linux-amd64.tar.gz"));
    assert_eq!(
        nerdctl.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["nerdctl"]
    );
    assert_labelled(
        "nerdctl",
        &nerdctl[0].1,
        "edgeimg STAND-IN for nerdctl: NOT nerdctl",
    );
    let full = tar_gz_files(&dir.join("nerdctl-full-2.1.6-linux-amd64.tar.gz"));
    assert_eq!(
        full.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["bin/buildctl", "bin/buildkitd", "bin/nerdctl"]
    );
    for (path, data) in &full {
        let label = if path.ends_with("nerdctl") {
            "edgeimg STAND-IN for nerdctl: NOT nerdctl"
        } else {
            "NOT BuildKit"
        };
        assert_labelled(path, data, label);
        assert!(
            String::from_utf8_lossy(data)
                .lines()
                .nth(1)
                .unwrap()
                .contains("edgeimg STAND-IN"),
            "{path}"
        );
    }

    // Same inputs, same bytes.
    let again = tmp.path().join("again");
    make_bundle(&["--arch", "amd64", "--out", again.to_str().unwrap()]);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names.len(), 7, "{names:?}");
    for n in names {
        assert!(
            std::fs::read(dir.join(&n)).unwrap() == std::fs::read(again.join(&n)).unwrap(),
            "{n:?} differs between two runs"
        );
    }
}

#[test]
fn preload_image_is_an_oci_archive_with_a_full_name() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("hello.tar");
    make_bundle(&[
        "--preload-image",
        "--arch",
        "arm64",
        "--out",
        file.to_str().unwrap(),
    ]);
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(&file)
        .arg("index.json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let index: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &index["manifests"][0];
    assert_eq!(
        m["annotations"]["org.opencontainers.image.ref.name"],
        "docker.io/edgeimg/hello:1"
    );
    assert_eq!(
        m["annotations"]["io.containerd.image.name"],
        "docker.io/edgeimg/hello:1"
    );
    assert_eq!(m["platform"]["architecture"], "arm64");
    assert_eq!(m["platform"]["os"], "linux");
}

#[test]
fn both_arches_share_one_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    make_bundle(&["amd64", dir.to_str().unwrap()]);
    make_bundle(&["--arch", "arm64", "--out", dir.to_str().unwrap()]);
    let manifest = Manifest::in_dir(&dir).unwrap().unwrap();
    let amd64 = bundle::from_dir(&dir, &manifest, Arch::Amd64, true).unwrap();
    let arm64 = bundle::from_dir(&dir, &manifest, Arch::Arm64, true).unwrap();
    assert_eq!(amd64.k3s.file, "k3s");
    assert_eq!(arm64.k3s.file, "k3s-arm64");
    assert_eq!(arm64.airgap_images.file, "k3s-airgap-images-arm64.tar.zst");
    assert_ne!(amd64.airgap_images.sha256, arm64.airgap_images.sha256);
}
