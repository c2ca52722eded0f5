//! Preloaded image archives and the k3s ELF check, on fixture
//! tarballs built here with the `tar` crate: real OCI layouts and docker-archives
//! with correct SHA-256 digests and sizes.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use edgeimg::images::{
    ArchiveFormat, Compression, ImageError, Platform, check_elf_arch, inspect_archive, is_script,
    validate_for_board,
};
use serde_json::json;
use sha2::{Digest, Sha256};

type Members = Vec<(String, Vec<u8>)>;

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn tar_bytes(members: &Members) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// A small uncompressed layer holding /hello.
fn layer(arch: &str) -> Vec<u8> {
    tar_bytes(&vec![(
        "hello".into(),
        format!("hello from {arch}\n").into_bytes(),
    )])
}

struct Blob {
    digest: String,
    size: usize,
    bytes: Vec<u8>,
}

fn blob(bytes: Vec<u8>) -> Blob {
    Blob {
        digest: format!("sha256:{}", sha(&bytes)),
        size: bytes.len(),
        bytes,
    }
}

fn push(members: &mut Members, b: &Blob) {
    let hex = b.digest.strip_prefix("sha256:").unwrap();
    if !members.iter().any(|(n, _)| n.ends_with(hex)) {
        members.push((format!("blobs/sha256/{hex}"), b.bytes.clone()));
    }
}

/// One platform's manifest, config and layer as blobs; returns the manifest blob.
fn platform_image(members: &mut Members, arch: &str, variant: Option<&str>) -> Blob {
    let mut cfg = json!({"architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}, "config": {"Cmd": ["/hello"]}});
    if let Some(v) = variant {
        cfg["variant"] = json!(v);
    }
    let l = blob(layer(arch));
    cfg["rootfs"]["diff_ids"] = json!([l.digest]);
    let c = blob(serde_json::to_vec(&cfg).unwrap());
    let m = blob(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.digest, "size": c.size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l.digest, "size": l.size}]
        }))
        .unwrap(),
    );
    push(members, &l);
    push(members, &c);
    push(members, &m);
    m
}

fn oci_layout(members: &mut Members, top: serde_json::Value) {
    members.insert(
        0,
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
    );
    members.push((
        "index.json".into(),
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [top]}))
            .unwrap(),
    ));
}

/// Single-platform OCI archive, as `nerdctl save` / `ctr export` write it.
fn oci_single(arch: &str, name: &str) -> Members {
    let mut m = Members::new();
    let man = platform_image(
        &mut m,
        arch,
        if arch == "arm64" { Some("v8") } else { None },
    );
    oci_layout(
        &mut m,
        json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man.digest, "size": man.size,
               "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap()}}),
    );
    m
}

/// Multi-platform OCI archive: index.json -> image index -> amd64 + arm64 manifests
/// (plus an attestation manifest the archive does not hold).
fn oci_multi(name: &str, arches: &[&str], saved: &[&str]) -> Members {
    let mut m = Members::new();
    let mut children = Vec::new();
    for a in arches {
        let mut scratch = Members::new();
        let man = platform_image(
            &mut scratch,
            a,
            if *a == "arm64" { Some("v8") } else { None },
        );
        if saved.contains(a) {
            m.extend(scratch);
        }
        let mut p = json!({"architecture": a, "os": "linux"});
        if *a == "arm64" {
            p["variant"] = json!("v8");
        }
        children.push(
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": man.digest, "size": man.size, "platform": p}),
        );
    }
    children.push(
        json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", "a".repeat(64)), "size": 566,
        "platform": {"architecture": "unknown", "os": "unknown"},
        "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}),
    );
    let idx = blob(
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": children}),
        )
        .unwrap(),
    );
    push(&mut m, &idx);
    oci_layout(
        &mut m,
        json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": idx.digest, "size": idx.size,
               "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "1.36"}}),
    );
    m
}

/// Classic docker-archive (`docker save` before Docker 25).
fn docker_archive(arch: &str, tags: &[&str]) -> Members {
    let l = layer(arch);
    let lid = sha(&l);
    let cfg = serde_json::to_vec(&json!({"architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{lid}")]}}))
    .unwrap();
    let cid = sha(&cfg);
    vec![
        (format!("{cid}.json"), cfg),
        (format!("{lid}/layer.tar"), l),
        (format!("{lid}/VERSION"), b"1.0".to_vec()),
        (
            "manifest.json".into(),
            serde_json::to_vec(&json!([{"Config": format!("{cid}.json"), "RepoTags": tags, "Layers": [format!("{lid}/layer.tar")]}]))
                .unwrap(),
        ),
    ]
}

fn write(dir: &Path, name: &str, members: &Members) -> PathBuf {
    let p = dir.join(name);
    let t = tar_bytes(members);
    let data = if name.ends_with(".zst") || name.ends_with(".tzst") {
        zstd::encode_all(t.as_slice(), 3).unwrap()
    } else if name.ends_with(".gz") || name.ends_with(".tgz") {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&t).unwrap();
        e.finish().unwrap()
    } else {
        t
    };
    std::fs::write(&p, data).unwrap();
    p
}

fn err_of(p: &Path, arch: &str) -> String {
    let r = inspect_archive(p).and_then(|a| validate_for_board(&a, arch));
    match r {
        Ok(()) => panic!("{} unexpectedly valid for {arch}", p.display()),
        Err(e) => {
            eprintln!("{}", e);
            e.to_string()
        }
    }
}

const BUSYBOX: &str = "docker.io/library/busybox:1.36";

#[test]
fn oci_amd64_passes_for_amd64_fails_for_arm64() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "busybox.tar", &oci_single("amd64", BUSYBOX));
    let a = inspect_archive(&p).unwrap();
    assert_eq!(a.format, ArchiveFormat::Oci);
    assert_eq!(a.compression, Compression::None);
    assert_eq!(a.images.len(), 1);
    assert_eq!(a.images[0].name, BUSYBOX);
    assert_eq!(
        a.images[0].platforms,
        vec![Platform::new("linux", "amd64", None)]
    );
    assert!(
        a.images[0]
            .digest
            .as_deref()
            .unwrap()
            .starts_with("sha256:")
    );
    validate_for_board(&a, "amd64").unwrap();
    let e = err_of(&p, "arm64");
    assert!(e.contains("busybox.tar") && e.contains(BUSYBOX), "{e}");
    assert!(
        e.contains("linux/amd64") && e.contains("linux/arm64"),
        "{e}"
    );
}

#[test]
fn oci_arm64_zstd_and_gzip() {
    let d = tempfile::tempdir().unwrap();
    for name in ["b.tar.zst", "b.tzst", "b.tar.gz", "b.tgz"] {
        let p = write(d.path(), name, &oci_single("arm64", BUSYBOX));
        let a = inspect_archive(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            a.images[0].platforms,
            vec![Platform::new("linux", "arm64", Some("v8"))]
        );
        validate_for_board(&a, "arm64").unwrap();
        assert!(validate_for_board(&a, "amd64").is_err());
        // The hash of the bytes scanned, which the build's copy must match.
        assert_eq!(
            a.sha256.as_deref(),
            Some(sha(&std::fs::read(&p).unwrap()).as_str()),
            "{name}"
        );
    }
}

#[test]
fn docker_archive_good_and_short_names_normalised() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "app.tar",
        &docker_archive(
            "amd64",
            &["busybox:1.36", "registry.local:5000/team/app:v1"],
        ),
    );
    let a = inspect_archive(&p).unwrap();
    assert_eq!(a.format, ArchiveFormat::DockerArchive);
    let names: Vec<_> = a.images.iter().map(|i| i.name.as_str()).collect();
    // containerd's importer normalises RepoTags the same way.
    assert_eq!(names, [BUSYBOX, "registry.local:5000/team/app:v1"]);
    validate_for_board(&a, "amd64").unwrap();
    let e = err_of(&p, "arm64");
    assert!(
        e.contains("app.tar") && e.contains("linux/amd64") && e.contains("linux/arm64"),
        "{e}"
    );

    let p = write(
        d.path(),
        "app.tar.zst",
        &docker_archive("arm64", &["busybox:1.36"]),
    );
    validate_for_board(&inspect_archive(&p).unwrap(), "arm64").unwrap();
}

#[test]
fn docker_archive_untagged_rejected() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "untagged.tar", &docker_archive("amd64", &[]));
    let e = err_of(&p, "amd64");
    assert!(e.contains("untagged.tar") && e.contains("no name"), "{e}");
}

#[test]
fn nerdctl_style_both_formats() {
    let d = tempfile::tempdir().unwrap();
    let mut m = oci_single("amd64", BUSYBOX);
    let da = docker_archive("amd64", &["busybox:1.36"]);
    m.extend(
        da.into_iter()
            .filter(|(n, _)| n == "manifest.json" || n.ends_with(".json") || n.contains('/')),
    );
    let p = write(d.path(), "both.tar", &m);
    let a = inspect_archive(&p).unwrap();
    assert_eq!(a.format, ArchiveFormat::Both);
    assert_eq!(a.images.len(), 1, "{:?}", a.images);
    validate_for_board(&a, "amd64").unwrap();
}

#[test]
fn multi_arch_index_passes_for_both() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "multi.tar.zst",
        &oci_multi(BUSYBOX, &["amd64", "arm64"], &["amd64", "arm64"]),
    );
    let a = inspect_archive(&p).unwrap();
    assert_eq!(
        a.images[0].platforms,
        vec![
            Platform::new("linux", "amd64", None),
            Platform::new("linux", "arm64", Some("v8"))
        ]
    );
    validate_for_board(&a, "amd64").unwrap();
    validate_for_board(&a, "arm64").unwrap();
}

#[test]
fn multi_arch_index_with_one_platform_saved() {
    // `nerdctl save` without --all-platforms keeps the whole index but only
    // the host platform's content.
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "partial.tar",
        &oci_multi(BUSYBOX, &["amd64", "arm64"], &["amd64"]),
    );
    let a = inspect_archive(&p).unwrap();
    assert_eq!(
        a.images[0].platforms,
        vec![Platform::new("linux", "amd64", None)]
    );
    assert_eq!(
        a.images[0].absent_platforms,
        vec![Platform::new("linux", "arm64", Some("v8"))]
    );
    validate_for_board(&a, "amd64").unwrap();
    let e = err_of(&p, "arm64");
    assert!(
        e.contains("partial.tar") && e.contains("--platform linux/arm64"),
        "{e}"
    );
}

#[test]
fn unqualified_names_rejected() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "short.tar",
        &oci_single("amd64", "busybox:latest"),
    );
    let e = err_of(&p, "amd64");
    assert!(
        e.contains("short.tar")
            && e.contains("\"busybox:latest\"")
            && e.contains("docker.io/library/busybox:latest"),
        "{e}"
    );

    // ref.name holding only a tag: containerd would name the image "1.36".
    let mut m = oci_single("amd64", BUSYBOX);
    let idx = m.iter_mut().find(|(n, _)| n == "index.json").unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&idx.1).unwrap();
    v["manifests"][0]["annotations"] = json!({"org.opencontainers.image.ref.name": "1.36"});
    idx.1 = serde_json::to_vec(&v).unwrap();
    let p = write(d.path(), "tagonly.tar", &m);
    let e = err_of(&p, "amd64");
    assert!(
        e.contains("\"1.36\"") && e.contains("not fully qualified") && e.contains("only a tag"),
        "{e}"
    );

    // No name at all.
    v["manifests"][0]["annotations"] = json!({});
    m.iter_mut().find(|(n, _)| n == "index.json").unwrap().1 = serde_json::to_vec(&v).unwrap();
    let p = write(d.path(), "noname.tar", &m);
    let e = err_of(&p, "amd64");
    assert!(e.contains("no name") && e.contains("sha256:"), "{e}");
}

#[test]
fn truncated_archive_rejected() {
    let d = tempfile::tempdir().unwrap();
    for name in ["cut.tar", "cut.tar.zst", "cut.tar.gz"] {
        let p = write(
            d.path(),
            name,
            &oci_multi(BUSYBOX, &["amd64", "arm64"], &["amd64", "arm64"]),
        );
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len / 2).unwrap();
        let e = inspect_archive(&p).unwrap_err();
        let s = e.to_string();
        eprintln!("{s}");
        assert!(s.contains(name), "{s}");
        assert!(
            matches!(e, ImageError::Corrupt { .. }),
            "{name}: expected a corrupt-archive error, got {s}"
        );
    }
    // Cut exactly on a member boundary (no end-of-archive marker).
    let m = oci_single("amd64", BUSYBOX);
    let full = tar_bytes(&m);
    let p = d.path().join("boundary.tar");
    std::fs::write(&p, &full[..full.len() - 1024]).unwrap();
    let e = inspect_archive(&p).unwrap_err().to_string();
    assert!(e.contains("end-of-archive"), "{e}");
}

#[test]
fn missing_blob_rejected() {
    let d = tempfile::tempdir().unwrap();
    let mut m = oci_single("amd64", BUSYBOX);
    // The layer is the first blob pushed.
    let (gone, _) = m.remove(1);
    let p = write(d.path(), "nolayer.tar", &m);
    let e = inspect_archive(&p).unwrap_err().to_string();
    eprintln!("{e}");
    let hex = gone.rsplit('/').next().unwrap();
    assert!(
        e.contains("nolayer.tar")
            && e.contains(hex)
            && e.contains(BUSYBOX)
            && e.contains("not in the archive"),
        "{e}"
    );

    let mut m = docker_archive("amd64", &["busybox:1.36"]);
    m.retain(|(n, _)| !n.ends_with("layer.tar"));
    let p = write(d.path(), "docker-nolayer.tar", &m);
    let e = inspect_archive(&p).unwrap_err().to_string();
    assert!(
        e.contains("layer.tar") && e.contains("not in the archive"),
        "{e}"
    );
}

#[test]
fn size_and_digest_mismatch_rejected() {
    let d = tempfile::tempdir().unwrap();
    let mut m = oci_single("amd64", BUSYBOX);
    // Same size, different content: the digest check catches it.
    let layer = &mut m[1].1;
    let last = layer.len() - 2000;
    layer[last] ^= 0xff;
    let p = write(d.path(), "bitrot.tar", &m);
    let e = inspect_archive(&p).unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");

    // Descriptor size wrong.
    let mut m = oci_single("amd64", BUSYBOX);
    let idx = m.iter_mut().find(|(n, _)| n == "index.json").unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&idx.1).unwrap();
    v["manifests"][0]["size"] = json!(1);
    idx.1 = serde_json::to_vec(&v).unwrap();
    let p = write(d.path(), "size.tar", &m);
    let e = inspect_archive(&p).unwrap_err().to_string();
    assert!(
        e.contains("size.tar") && e.contains("descriptor says 1"),
        "{e}"
    );
}

#[test]
fn corrupt_json_rejected() {
    let d = tempfile::tempdir().unwrap();
    let mut m = oci_single("amd64", BUSYBOX);
    m.iter_mut().find(|(n, _)| n == "index.json").unwrap().1 = b"{\"manifests\": [".to_vec();
    let p = write(d.path(), "badindex.tar", &m);
    let e = inspect_archive(&p).unwrap_err().to_string();
    assert!(
        e.contains("badindex.tar") && e.contains("index.json") && e.contains("invalid JSON"),
        "{e}"
    );

    let mut m = docker_archive("amd64", &["busybox:1.36"]);
    m.iter_mut().find(|(n, _)| n == "manifest.json").unwrap().1 = b"[{\"Config\": 7}]".to_vec();
    let p = write(d.path(), "badmanifest.tar", &m);
    let e = inspect_archive(&p).unwrap_err().to_string();
    assert!(
        e.contains("manifest.json") && e.contains("invalid JSON"),
        "{e}"
    );
}

#[test]
fn not_an_image_archive_and_bad_names() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "random.tar",
        &vec![("etc/hostname".into(), b"x\n".to_vec())],
    );
    let e = inspect_archive(&p).unwrap_err().to_string();
    assert!(
        e.contains("random.tar") && e.contains("neither index.json") && e.contains("etc/hostname"),
        "{e}"
    );

    let p = write(d.path(), "image.zip", &oci_single("amd64", BUSYBOX));
    let e = inspect_archive(&p).unwrap_err().to_string();
    assert!(e.contains("image.zip") && e.contains("*.tar.zst"), "{e}");

    // Named .tar.zst but not compressed: K3s would fail to import it.
    let m = oci_single("amd64", BUSYBOX);
    let p = d.path().join("liar.tar.zst");
    std::fs::write(&p, tar_bytes(&m)).unwrap();
    let e = inspect_archive(&p).unwrap_err().to_string();
    assert!(
        e.contains("liar.tar.zst") && e.contains("name says zstd"),
        "{e}"
    );

    let p = d.path().join("x.tar.lz4");
    std::fs::write(&p, [0x04, 0x22, 0x4d, 0x18, 0, 0]).unwrap();
    let e = inspect_archive(&p).unwrap_err().to_string();
    assert!(e.contains("recompress as .tar.zst"), "{e}");

    let p = d.path().join("nothing.tar");
    std::fs::write(&p, b"").unwrap();
    assert!(matches!(
        inspect_archive(&p),
        Err(ImageError::Corrupt { .. })
    ));
}

#[test]
fn zstd_window_beyond_k3s_limit_rejected() {
    // K3s decodes zstd with at most a 32 MiB window; a --long=27 frame whose
    // window exceeds that cannot be imported on the node.
    let d = tempfile::tempdir().unwrap();
    let mut members = oci_single("amd64", BUSYBOX);
    // Enough data that the encoder actually declares a large window.
    members.push(("padding".into(), vec![7u8; 40 << 20]));
    let raw = tar_bytes(&members);
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    enc.long_distance_matching(true).unwrap();
    enc.window_log(27).unwrap();
    std::io::copy(&mut raw.as_slice(), &mut enc).unwrap();
    let data = enc.finish().unwrap();
    let p = d.path().join("long.tar.zst");
    std::fs::write(&p, data).unwrap();
    let e = inspect_archive(&p).unwrap_err().to_string();
    eprintln!("{e}");
    assert!(
        e.contains("long.tar.zst") && e.contains("32 MiB K3s decodes"),
        "{e}"
    );
}

#[test]
fn elf_check_on_host_binary() {
    let t = Path::new("/bin/true");
    let host = if cfg!(target_arch = "x86_64") {
        "amd64"
    } else {
        "arm64"
    };
    let other = if host == "amd64" { "arm64" } else { "amd64" };
    let info = check_elf_arch(t, host).unwrap();
    assert_eq!(info.debian_arch, Some(host));
    assert_eq!(info.class_bits, 64);
    let e = check_elf_arch(t, other).unwrap_err().to_string();
    assert!(
        e.contains("/bin/true") && e.contains(other) && e.contains(host),
        "{e}"
    );
    assert!(!is_script(t));
}

#[test]
fn elf_check_rejects_text_and_scripts() {
    let d = tempfile::tempdir().unwrap();
    let txt = d.path().join("k3s");
    std::fs::write(&txt, "this is not a binary\n").unwrap();
    let e = check_elf_arch(&txt, "amd64").unwrap_err().to_string();
    assert!(
        e.contains("not an ELF executable") && e.contains("k3s"),
        "{e}"
    );
    assert!(!is_script(&txt));
    std::fs::write(&txt, "#!/bin/sh\n# stand-in k3s\n").unwrap();
    assert!(is_script(&txt));
}

#[test]
fn skopeo_accepts_generated_oci_archive() {
    // Cross-check with a reference tool when it is installed (Debian: skopeo).
    let Ok(out) = std::process::Command::new("skopeo")
        .arg("--version")
        .output()
    else {
        eprintln!("skopeo not installed; skipping");
        return;
    };
    assert!(out.status.success());
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "single.tar", &oci_single("arm64", BUSYBOX));
    validate_for_board(&inspect_archive(&p).unwrap(), "arm64").unwrap();
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", p.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci-archive:{}", p.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["architecture"], "arm64");

    // And the other way round: an archive skopeo writes is accepted by us.
    let p2 = d.path().join("copied.tar");
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci-archive:{}", p.display()))
        .arg(format!("oci-archive:{}:{BUSYBOX}", p2.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = inspect_archive(&p2).unwrap();
    assert_eq!(a.images[0].name, BUSYBOX);
    validate_for_board(&a, "arm64").unwrap();
}

/// A few KiB of zstd holding many 4 MiB JSON-looking members: the scan keeps
/// a bounded amount in memory and refuses the archive by name. Run in a child
/// process (this test binary again) so the peak RSS measured is the scan's.
#[test]
fn json_bomb_is_refused_with_bounded_memory() {
    const CHILD_ENV: &str = "EDGEIMG_TEST_JSON_BOMB";
    if let Ok(p) = std::env::var(CHILD_ENV) {
        let e = inspect_archive(Path::new(&p)).expect_err("a JSON bomb must be refused");
        println!("REFUSED: {e}");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("bomb.tar.zst");
    let file = std::fs::File::create(&p).unwrap();
    let enc = zstd::stream::Encoder::new(file, 19).unwrap().auto_finish();
    let mut b = tar::Builder::new(enc);
    let member = 4 * 1024 * 1024u64;
    for i in 0..64 {
        let mut h = tar::Header::new_gnu();
        h.set_size(member);
        h.set_mode(0o644);
        h.set_cksum();
        let body = std::io::Read::chain(&b"{"[..], std::io::repeat(b' ').take(member - 1));
        b.append_data(&mut h, format!("m{i}.json"), body).unwrap();
    }
    b.into_inner().unwrap();
    let compressed = std::fs::metadata(&p).unwrap().len();
    assert!(compressed < 256 * 1024, "fixture is {compressed} bytes");

    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "MAXRSS_KB=%M"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "json_bomb_is_refused_with_bounded_memory",
            "--nocapture",
        ])
        .env(CHILD_ENV, &p)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    let rss_kb: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("MAXRSS_KB="))
        .expect("/usr/bin/time output")
        .trim()
        .parse()
        .unwrap();
    eprintln!("fixture {compressed} bytes, child peak RSS {rss_kb} KiB");
    assert!(rss_kb < 64 * 1024, "peak RSS {rss_kb} KiB");
    assert!(
        stdout.contains("REFUSED:") && stdout.contains("bomb.tar.zst") && stdout.contains("MiB"),
        "{stdout}"
    );
}
