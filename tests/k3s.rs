//! K3s in the image, through the real binary with edgeimg's labelled STAND-IN
//! bundle (qemu-tests/standin/make-bundle; not K3s): placement following K3s'
//! conventions, and every bad bundle or image refused before anything is built.

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn make_bundle(arch: &str, out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("qemu-tests/standin/make-bundle");
    ok(Command::new(script)
        .args(["--arch", arch, "--out"])
        .arg(out));
}

fn make_hello(arch: &str, out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("qemu-tests/standin/make-bundle");
    ok(Command::new(script)
        .args(["--preload-image", "--arch", arch, "--out"])
        .arg(out));
}

fn config(dir: &Path, k3s: &str) -> PathBuf {
    let p = dir.join("edgeimg.toml");
    std::fs::write(
        &p,
        format!("[image]\nname = \"k3stest\"\ncompression = \"none\"\n\n[k3s]\n{k3s}"),
    )
    .unwrap();
    p
}

fn build(cfg: &Path, board: &str, bundle: Option<&Path>, out: &Path) -> std::process::Output {
    let mut c = edgeimg();
    c.args(["build", "--board", board, "--config"])
        .arg(cfg)
        .arg("--out")
        .arg(out)
        .env_remove("EDGEIMG_K3S_BUNDLE");
    if let Some(b) = bundle {
        c.arg("--bundle").arg(b);
    }
    run(&mut c)
}

fn fails(o: &std::process::Output, needles: &[&str], out: &Path) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "should fail: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`:\n{err}");
    }
    assert!(
        visible_files(out).is_empty(),
        "no output under a final name"
    );
}

#[test]
fn missing_bundle_names_every_way_to_get_one() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "");
    let out = d.path().join("out");
    fails(
        &build(&cfg, "x86_64", None, &out),
        &["bundle fetch", "bundle import", "--bundle"],
        &out,
    );
}

#[test]
fn wrong_arch_k3s_binary_and_images_are_refused_before_building() {
    let d = tempfile::tempdir().unwrap();
    let bundle = d.path().join("bundle");
    make_bundle("amd64", &bundle);

    // An x86_64 ELF where the k3s binary goes, for an arm64 board: bundle for arm64
    // whose k3s is the host's /bin/true (checksums rewritten so only the ELF check can catch it).
    let arm = d.path().join("arm");
    make_bundle("arm64", &arm);
    std::fs::copy("/bin/true", arm.join("k3s-arm64")).unwrap();
    let sha = edgeimg::artifact::checksums::sha256_file(&arm.join("k3s-arm64")).unwrap();
    let sums = std::fs::read_to_string(arm.join("sha256sum-arm64.txt")).unwrap();
    let sums: String = sums
        .lines()
        .map(|l| {
            if l.ends_with("  k3s-arm64") {
                format!("{sha}  k3s-arm64\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(arm.join("sha256sum-arm64.txt"), &sums).unwrap();
    let manifest = std::fs::read_to_string(arm.join("bundle.toml")).unwrap();
    let manifest: String = manifest
        .lines()
        .map(|l| {
            if l.starts_with("k3s = { file = \"k3s-arm64\"") {
                format!("k3s = {{ file = \"k3s-arm64\", sha256 = \"{sha}\" }}\n")
            } else if l.starts_with("k3s_checksums = { file = \"sha256sum-arm64.txt\"") {
                let s = edgeimg::artifact::checksums::sha256_file(&arm.join("sha256sum-arm64.txt"))
                    .unwrap();
                format!("k3s_checksums = {{ file = \"sha256sum-arm64.txt\", sha256 = \"{s}\" }}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(arm.join("bundle.toml"), manifest).unwrap();
    let out = d.path().join("out");
    let cfg = config(d.path(), "");
    fails(
        &build(&cfg, "arm64", Some(&arm), &out),
        &["k3s", "x86", "arm64"],
        &out,
    );

    // A preloaded image for the wrong architecture.
    make_hello("arm64", &d.path().join("hello-arm64.tar"));
    let cfg = config(d.path(), "images = [\"hello-arm64.tar\"]\n");
    fails(
        &build(&cfg, "x86_64", Some(&bundle), &out),
        &["hello-arm64.tar", "linux/arm64", "amd64"],
        &out,
    );

    // A truncated image archive.
    make_hello("amd64", &d.path().join("hello.tar"));
    let bytes = std::fs::read(d.path().join("hello.tar")).unwrap();
    std::fs::write(d.path().join("cut.tar"), &bytes[..bytes.len() / 2]).unwrap();
    let cfg = config(d.path(), "images = [\"cut.tar\"]\n");
    fails(
        &build(&cfg, "x86_64", Some(&bundle), &out),
        &["cut.tar"],
        &out,
    );

    // A tampered bundle file (checksum mismatch).
    let bad = d.path().join("bad");
    make_bundle("amd64", &bad);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(bad.join("k3s-airgap-images-amd64.tar.zst"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"x").unwrap();
    let cfg = config(d.path(), "");
    fails(
        &build(&cfg, "x86_64", Some(&bad), &out),
        &["k3s-airgap-images-amd64.tar.zst"],
        &out,
    );
}

#[test]
fn k3s_nerdctl_buildkit_and_images_are_placed_as_k3s_expects() {
    let _g = exclusive();
    let d = tempfile::tempdir().unwrap();
    let bundle = d.path().join("bundle");
    make_bundle("amd64", &bundle);
    make_hello("amd64", &d.path().join("hello.tar"));
    let cfg = config(
        d.path(),
        "images = [\"hello.tar\"]\nbuildkit = true\ndisable = [\"traefik\"]\nnode_labels = [\"site=lab\"]\n\n[k3s.mirrors.\"docker.io\"]\nendpoint = [\"https://registry.local:5000\"]\n",
    );
    let out = d.path().join("out");
    let o = build(&cfg, "x86_64", Some(&bundle), &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("STAND-IN"),
        "the build log must say it used the stand-in: {err}"
    );

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let k = &manifest["inputs"]["k3s"];
    assert_eq!(k["stand_in"], true);
    assert_eq!(
        k["preloaded_images"][0]["images"][0],
        "docker.io/edgeimg/hello:1"
    );
    assert!(
        k["assets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "k3s" && a["sha256"].as_str().unwrap().len() == 64)
    );

    // Extract the root and look at what K3s will see.
    let img = out.join("k3stest-x86_64.img");
    let root_part = &manifest["layout"]["partitions"][1];
    let root = d.path().join("root.erofs");
    let part = |p: &serde_json::Value| (p["offset"].as_u64().unwrap(), p["size"].as_u64().unwrap());
    let (offset, size) = part(root_part);
    extract_range(&img, offset, size, &root);
    // The plan of the same config and bundle names exactly what was placed,
    // and says what K3s this is.
    let boot = d.path().join("boot.vfat");
    let (offset, size) = part(&manifest["layout"]["partitions"][0]);
    extract_range(&img, offset, size, &boot);
    let plan = plan_json(&cfg, "x86_64", Some(&bundle));
    assert_build_matches_plan(&plan, &manifest, &boot, false);
    let k = &plan["k3s"];
    assert_eq!(k["stand_in"], true, "{k}");
    assert_eq!(k["buildkit"], true, "{k}");
    assert_eq!(k["disabled"][0], "traefik", "{k}");
    assert!(
        k["preloaded_images"][0]
            .as_str()
            .unwrap()
            .ends_with("hello.tar"),
        "{k}"
    );
    let tree = d.path().join("tree");
    ok(Command::new("fsck.erofs")
        .arg(format!("--extract={}", tree.display()))
        .arg(&root));
    let mode = |p: &str| {
        std::fs::metadata(tree.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    let read =
        |p: &str| std::fs::read_to_string(tree.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));

    assert_eq!(mode("usr/local/bin/k3s"), 0o755);
    for l in ["kubectl", "crictl", "ctr"] {
        assert_eq!(
            std::fs::read_link(tree.join("usr/local/bin").join(l))
                .unwrap()
                .to_str(),
            Some("k3s")
        );
    }
    assert!(
        read("usr/lib/systemd/system/k3s.service").contains("ExecStart=/usr/local/bin/k3s server")
    );
    assert!(
        read("usr/lib/systemd/system/k3s-agent.service")
            .contains("ExecStart=/usr/local/bin/k3s agent")
    );
    assert_eq!(mode("etc/rancher/k3s/config.yaml"), 0o600);
    let cfg_yaml = read("etc/rancher/k3s/config.yaml");
    assert!(
        cfg_yaml.contains("\"traefik\"") && cfg_yaml.contains("\"site=lab\""),
        "{cfg_yaml}"
    );
    assert_eq!(mode("etc/rancher/k3s/registries.yaml"), 0o600);
    assert!(read("etc/rancher/k3s/registries.yaml").contains("\"https://registry.local:5000\""));
    let nerdctl = read("etc/nerdctl/nerdctl.toml");
    assert!(
        nerdctl.contains("address = \"unix:///run/k3s/containerd/containerd.sock\"")
            && nerdctl.contains("namespace = \"k8s.io\"")
    );
    assert_eq!(mode("usr/local/bin/nerdctl"), 0o755);
    let bk = read("usr/lib/systemd/system/buildkit.service");
    assert!(
        bk.contains("--oci-worker=false")
            && bk.contains("--containerd-worker=true")
            && bk.contains("--containerd-worker-addr=/run/k3s/containerd/containerd.sock")
            && bk.contains("--containerd-worker-namespace=k8s.io")
    );
    assert!(
        tree.join("etc/systemd/system/multi-user.target.wants/buildkit.service")
            .is_symlink()
    );
    for f in ["hello.tar", "k3s-airgap-images-amd64.tar.zst"] {
        assert!(
            tree.join("usr/lib/edgeimg/k3s-images").join(f).is_file(),
            "{f} on the root"
        );
    }
    assert!(read("var/lib/edgeimg/k3s-images/upper/.cache.json").starts_with('{'));
    let mount = read("usr/lib/systemd/system/var-lib-rancher-k3s-agent-images.mount");
    assert!(
        mount.contains("Where=/var/lib/rancher/k3s/agent/images")
            && mount.contains("lowerdir=/usr/lib/edgeimg/k3s-images")
    );
    let image_json: serde_json::Value =
        serde_json::from_str(&read("usr/lib/edgeimg/image.json")).unwrap();
    assert_eq!(image_json["k3s"]["stand_in"], true);
}

/// `dir`'s nerdctl archive replaced by `tgz`, with the checksum file and
/// the manifest's pins rewritten so only the archive's content can object.
fn swap_nerdctl_archive(dir: &Path, tgz: &[u8]) {
    let name = "nerdctl-2.1.6-linux-amd64.tar.gz";
    std::fs::write(dir.join(name), tgz).unwrap();
    let sha = |p: &Path| edgeimg::artifact::checksums::sha256_file(p).unwrap();
    let new = sha(&dir.join(name));
    let sums: String = std::fs::read_to_string(dir.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .map(|l| {
            if l.ends_with(&format!("  {name}")) {
                format!("{new}  {name}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(dir.join("SHA256SUMS"), sums).unwrap();
    let sums_sha = sha(&dir.join("SHA256SUMS"));
    let manifest: String = std::fs::read_to_string(dir.join("bundle.toml"))
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("nerdctl = {") {
                format!("nerdctl = {{ file = \"{name}\", sha256 = \"{new}\" }}\n")
            } else if l.starts_with("nerdctl_checksums = {") {
                format!(
                    "nerdctl_checksums = {{ file = \"SHA256SUMS\", sha256 = \"{sums_sha}\" }}\n"
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(dir.join("bundle.toml"), manifest).unwrap();
}

fn gz(tar: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(tar).unwrap();
    e.finish().unwrap()
}

/// Crafted release archives in a bundle whose checksums all match: a
/// `nerdctl` member that is a symlink to a build-host file is refused, never
/// followed into the image; a GNU long-name header claiming 1 GiB (its data
/// really there, 1 MiB compressed) is refused from its header, the build's
/// peak RSS staying far below it. Nothing is left under a final name.
/// The plan of a config with K3s, SELinux (enforcing) and dm-verity names
/// exactly what its build placed (root files and boot partition), and the
/// boot entry the build wrote carries what the plan says: the SELinux
/// arguments and the root hash of the verity tree the manifest records.
#[test]
fn k3s_selinux_and_verity_build_is_what_its_plan_says() {
    let _g = exclusive();
    let d = tempfile::tempdir().unwrap();
    let bundle = d.path().join("bundle");
    make_bundle("amd64", &bundle);
    let cfg = d.path().join("edgeimg.toml");
    std::fs::write(
        &cfg,
        "[image]\nname = \"k3stest\"\ncompression = \"none\"\nverity = true\n\n[k3s]\nbuildkit = true\n\n[selinux]\nmode = \"enforcing\"\n",
    )
    .unwrap();
    let out = d.path().join("out");
    let o = build(&cfg, "x86_64", Some(&bundle), &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let boot = d.path().join("boot.vfat");
    let p = &manifest["layout"]["partitions"][0];
    extract_range(
        &out.join("k3stest-x86_64.img"),
        p["offset"].as_u64().unwrap(),
        p["size"].as_u64().unwrap(),
        &boot,
    );

    let plan = plan_json(&cfg, "x86_64", Some(&bundle));
    assert_build_matches_plan(&plan, &manifest, &boot, false);
    assert_eq!(plan["verity"], true, "{plan}");
    assert_eq!(plan["selinux"]["mode"], "enforcing", "{plan}");
    assert_eq!(plan["k3s"]["buildkit"], true, "{plan}");
    assert_eq!(manifest["verity"]["enabled"], true, "{manifest}");

    // Slot A's entry: what the plan's command line says, with the real hash.
    let entry = fat_files(&boot)
        .into_iter()
        .find(|f| f.starts_with("loader/entries/") && f.ends_with("-a.conf"))
        .expect("a boot entry for slot A");
    let text = ok(Command::new("mtype")
        .arg("-i")
        .arg(&boot)
        .arg(format!("::/{entry}")));
    let hash = manifest["verity"]["root_hash"].as_str().unwrap();
    assert_eq!(hash.len(), 64, "{manifest}");
    for arg in [
        format!("{}={hash}", edgeimg_contract::cmdline::VERITY),
        "selinux=1".to_string(),
        "enforcing=1".to_string(),
    ] {
        assert!(
            text.split_whitespace().any(|w| w == arg),
            "{entry} lacks `{arg}`:\n{text}"
        );
    }
}

#[test]
fn crafted_bundle_archives_are_refused_without_following_or_exhausting() {
    let _g = exclusive();
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "");
    let out = d.path().join("out");

    let link = d.path().join("link");
    make_bundle("amd64", &link);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "nerdctl", "/etc/shadow").unwrap();
    swap_nerdctl_archive(&link, &gz(&b.into_inner().unwrap()));
    fails(
        &build(&cfg, "x86_64", Some(&link), &out),
        &["member nerdctl is a link", "/etc/shadow"],
        &out,
    );

    let huge = d.path().join("huge");
    make_bundle("amd64", &huge);
    let mut h = tar::Header::new_gnu();
    h.set_path("././@LongLink").unwrap();
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(1 << 30);
    h.set_mode(0o644);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.resize(512 + (1 << 30), b'a');
    let tgz = gz(&tar);
    drop(tar);
    swap_nerdctl_archive(&huge, &tgz);
    let m = run_measured(
        edgeimg()
            .args(["build", "--board", "x86_64", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(&out)
            .arg("--bundle")
            .arg(&huge)
            .env_remove("EDGEIMG_K3S_BUNDLE"),
    );
    assert!(!m.success, "{}", m.stderr);
    assert!(
        m.stderr.contains("name or PAX header")
            && m.stderr.contains("nerdctl-2.1.6-linux-amd64.tar.gz"),
        "{}",
        m.stderr
    );
    assert!(visible_files(&out).is_empty());
    assert!(
        m.peak_rss_kib < 256 * 1024,
        "a 1 GiB name header drove the build to {} KiB",
        m.peak_rss_kib
    );
    eprintln!(
        "build with a 1 GiB name header: peak RSS {} KiB",
        m.peak_rss_kib
    );
}
