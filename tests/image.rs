//! Image tests: build real images with the real binary and check every artifact
//! with the reference tools; two builds of the same inputs are byte-identical.

mod common;
use common::*;

use std::path::Path;

const EPOCH: &str = "1750000000";

fn build(out: &Path, extra: &[&str]) -> String {
    let mut c = edgeimg();
    c.args(["build", "--config"])
        .arg(fixtures().join("image.toml"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("SOURCE_DATE_EPOCH", EPOCH);
    let o = run(&mut c);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "build failed:\n{err}");
    err
}

#[test]
fn image_artifacts_pass_reference_tools_and_builds_reproduce() {
    let _g = exclusive();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    build(a.path(), &[]);
    // Second build: same inputs and epoch, xz instead of zstd for the copy.
    build(b.path(), &["--compress", "xz"]);

    let img = a.path().join("imgtest-x86_64.img");
    assert_eq!(
        visible_files(a.path()),
        [
            "SHA256SUMS",
            "imgtest-x86_64.img",
            "imgtest-x86_64.img.bmap",
            "imgtest-x86_64.img.zst",
            "manifest.json"
        ]
    );
    assert_eq!(
        visible_files(b.path()),
        [
            "SHA256SUMS",
            "imgtest-x86_64.img",
            "imgtest-x86_64.img.bmap",
            "imgtest-x86_64.img.xz",
            "manifest.json"
        ]
    );

    // Reproducible: same .img bytes, same bmap and manifest.
    let sha = |p: &Path| edgeimg::artifact::checksums::sha256_file(p).unwrap();
    assert_eq!(
        sha(&img),
        sha(&b.path().join("imgtest-x86_64.img")),
        "two builds with the same inputs differ"
    );
    assert_eq!(
        sha(&a.path().join("manifest.json")),
        sha(&b.path().join("manifest.json"))
    );

    // Sparse: allocated far below apparent size.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&img).unwrap();
    assert!(
        m.blocks() * 512 < m.len() / 2,
        "image is not sparse: {} of {}",
        m.blocks() * 512,
        m.len()
    );

    // Partition table: sgdisk verifies it, sfdisk shows the four partitions.
    let v = ok(std::process::Command::new("sgdisk").arg("-v").arg(&img));
    assert!(v.contains("No problems found"), "{v}");
    let dump = ok(std::process::Command::new("sfdisk")
        .args(["--json"])
        .arg(&img));
    let table: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(table["partitiontable"]["label"], "gpt");
    assert_eq!(parts.len(), 4);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.path().join("manifest.json")).unwrap()).unwrap();
    let layout = manifest["layout"]["partitions"].as_array().unwrap();
    for (p, l) in parts.iter().zip(layout) {
        assert_eq!(
            p["start"].as_u64().unwrap() * 512,
            l["offset"].as_u64().unwrap()
        );
        assert_eq!(
            p["uuid"].as_str().unwrap().to_lowercase(),
            l["part_uuid"].as_str().unwrap()
        );
        assert_eq!(p["name"], l["label"]);
    }
    assert_eq!(
        parts[0]["type"].as_str().unwrap().to_uppercase(),
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    );

    // Each filesystem passes its checker.
    let work = tempfile::tempdir().unwrap();
    let part = |i: usize, name: &str| {
        let p = work.path().join(name);
        extract_range(
            &img,
            layout[i]["offset"].as_u64().unwrap(),
            layout[i]["size"].as_u64().unwrap(),
            &p,
        );
        p
    };
    let boot = part(0, "boot.vfat");
    let root = part(1, "root.erofs");
    let data = part(3, "data.ext4");
    ok(std::process::Command::new("fsck.vfat").arg("-n").arg(&boot));
    ok(std::process::Command::new("fsck.erofs").arg(&root));
    ok(std::process::Command::new("e2fsck")
        .args(["-fn"])
        .arg(&data));

    // Boot partition: systemd-boot, the entry for slot A opening its PARTUUID
    // through dm-verity (on by default) and mounting the verity device.
    let entry = ok(std::process::Command::new("mtype")
        .args(["-i"])
        .arg(&boot)
        .arg("::/loader/entries/edgeimg-1-a.conf"));
    let root_uuid = layout[1]["part_uuid"].as_str().unwrap();
    assert!(
        entry.contains("root=/dev/mapper/edgeimg-root ")
            && entry.contains(&format!("edgeimg.verity.dev=PARTUUID={root_uuid}"))
            && entry.contains("rootfstype=erofs"),
        "{entry}"
    );
    let listing = ok(std::process::Command::new("mdir")
        .args(["-/", "-b", "-i"])
        .arg(&boot)
        .arg("::/"));
    for f in [
        "EFI/BOOT/BOOTX64.EFI",
        "edgeimg/a/vmlinuz",
        "edgeimg/a/initrd.img",
        "loader/loader.conf",
        "edgeimg/node.toml.example",
    ] {
        assert!(listing.contains(f), "boot partition lacks {f}:\n{listing}");
    }
    // The plan names exactly what the build placed, in the root and on the
    // boot partition.
    let plan = plan_json(&fixtures().join("image.toml"), "x86_64", None);
    assert_build_matches_plan(&plan, &manifest, &boot, false);

    // Root: the agent, its config and the rendered overlay template are there.
    let tree = work.path().join("tree");
    ok(std::process::Command::new("fsck.erofs")
        .arg(format!("--extract={}", tree.display()))
        .arg(&root));
    let motd = std::fs::read_to_string(tree.join("etc/edgeimg/motd")).unwrap();
    assert_eq!(motd, "built by edgeimg for x86_64 (amd64), image imgtest\n");
    assert!(tree.join("usr/local/bin/hello").exists());
    let image_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.join("usr/lib/edgeimg/image.json")).unwrap())
            .unwrap();
    assert_eq!(image_json["hostname_pattern"], "t-{serial}");
    let agent = std::fs::read(tree.join("usr/lib/edgeimg/edgeimg-agent")).unwrap();
    assert_eq!(&agent[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([agent[18], agent[19]]),
        62,
        "the x86_64 image must carry the x86_64 agent"
    );
    assert!(
        !tree.join("etc/ssh/ssh_host_ed25519_key").exists(),
        "host keys must be made per node"
    );
    assert!(
        tree.join("etc/systemd/system/sysinit.target.wants/edgeimg-firstboot.service")
            .is_symlink()
    );
    assert!(
        !tree.join("usr/share/man/man1").exists()
            || std::fs::read_dir(tree.join("usr/share/man/man1"))
                .unwrap()
                .next()
                .is_none()
    );

    // bmaptool accepts the bmap and reproduces the image.
    let copy = work.path().join("copy.img");
    ok(std::process::Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(a.path().join("imgtest-x86_64.img.bmap"))
        .arg(&img)
        .arg(&copy));
    assert_eq!(sha(&copy), sha(&img));

    // Compressed copies decompress to the image; SHA256SUMS verifies.
    let unz = work.path().join("unz.img");
    ok(std::process::Command::new("zstd")
        .args(["-d", "-q", "-o"])
        .arg(&unz)
        .arg(a.path().join("imgtest-x86_64.img.zst")));
    assert_eq!(sha(&unz), sha(&img));
    std::fs::remove_file(&unz).unwrap();
    ok(std::process::Command::new("xz")
        .args(["-t"])
        .arg(b.path().join("imgtest-x86_64.img.xz")));
    ok(std::process::Command::new("sha256sum")
        .args(["--strict", "-c", "SHA256SUMS"])
        .current_dir(a.path()));
    ok(std::process::Command::new("sha256sum")
        .args(["--strict", "-c", "SHA256SUMS"])
        .current_dir(b.path()));

    // The manifest lists every input.
    assert_eq!(manifest["image"]["sha256"].as_str().unwrap(), sha(&img));
    let pkgs = manifest["inputs"]["packages"].as_array().unwrap();
    assert!(
        pkgs.iter()
            .any(|p| p["name"] == "systemd" && !p["version"].as_str().unwrap().is_empty())
    );
    assert!(
        manifest["inputs"]["kernel"]["version"]
            .as_str()
            .unwrap()
            .contains("amd64")
    );
    assert_eq!(
        manifest["inputs"]["agent"]["sha256"].as_str().unwrap(),
        edgeimg::artifact::checksums::sha256_bytes(&agent)
    );
    assert_eq!(
        manifest["source_date_epoch"].as_u64().unwrap().to_string(),
        EPOCH
    );
    assert!(
        manifest["inputs"]["overlays"][0]["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "etc/edgeimg/motd")
    );
}

#[test]
fn too_small_size_says_how_much_is_needed() {
    let _g = exclusive();
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("edgeimg.toml"),
        "[image]\nname = \"small\"\nsize = \"300M\"\n[k3s]\nenabled = false\n",
    )
    .unwrap();
    let o = run(edgeimg()
        .args(["build", "--out", "out"])
        .current_dir(d.path()));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("too small") && err.contains("needs at least") && err.contains("edgeimg.toml"),
        "{err}"
    );
    assert!(
        visible_files(&d.path().join("out")).is_empty(),
        "no output under a final name"
    );
}

#[test]
fn killed_build_leaves_no_output_under_a_final_name() {
    use std::io::{BufRead, BufReader};
    let _g = exclusive();
    let d = tempfile::tempdir().unwrap();
    let mut child = edgeimg()
        .args(["build", "--config"])
        .arg(fixtures().join("image.toml"))
        .arg("--out")
        .arg(d.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill it once the disk image is being assembled (outputs exist only as temporaries).
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with("fs: EROFS root") {
            child.kill().unwrap();
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "build finished before it could be killed: {seen:?}"
    );
    assert!(
        visible_files(d.path()).is_empty(),
        "a killed build left outputs: {:?}",
        visible_files(d.path())
    );
    // The next build cleans the killed one's temporaries and succeeds.
    let o = run(edgeimg()
        .args(["build", "--compress", "none", "--config"])
        .arg(fixtures().join("image.toml"))
        .arg("--out")
        .arg(d.path()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !all.iter().any(|n| n.starts_with(".edgeimg-build-")),
        "stale temporaries: {all:?}"
    );
}
