//! `edgeimg inspect`: on synthetic GPT/MBR images (fast), and on a real built
//! image whose filesystems are cross-checked with the reference tools
//! (dump.erofs, dumpe2fs, fsck.vfat's view via mtools).

mod common;
#[path = "common/synthetic.rs"]
mod synthetic;

use std::path::Path;
use std::process::Command;

use common::*;
use synthetic::{MIB, make_image};

fn inspect_json(img: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(edgeimg().args(["inspect", "--json"]).arg(img))).unwrap()
}

#[test]
fn inspect_reads_gpt_and_mbr_tables_and_the_fat() {
    let d = tempfile::tempdir().unwrap();
    for (table, kind) in [("gpt", "gpt"), ("dos", "mbr")] {
        let img = make_image(d.path(), table);
        let j = inspect_json(&img);
        assert_eq!(j["table_kind"], kind);
        assert_eq!(j["size"], 64 * MIB);
        let p = j["partitions"].as_array().unwrap();
        assert_eq!(p.len(), 3, "{j}");
        assert_eq!(
            (
                p[0]["number"].as_u64(),
                p[0]["offset"].as_u64(),
                p[0]["size"].as_u64()
            ),
            (Some(1), Some(MIB), Some(40 * MIB))
        );
        assert_eq!(p[0]["fs"], "vfat");
        assert_eq!(p[0]["label"], "EDGEBOOT");
        assert_eq!(p[0]["detail"], "FAT32");
        assert_eq!(p[2]["fs"], "empty");
        if kind == "gpt" {
            assert_eq!(p[0]["name"], "EDGEBOOT");
            assert_eq!(p[0]["type_name"], "EFI system");
        } else {
            assert_eq!(j["disk_id"], "1234abcd");
            assert_eq!(p[0]["type_id"], "0x0c");
            assert_eq!(p[0]["part_uuid"], "1234abcd-01");
            assert_eq!(p[0]["bootable"], true);
        }
        assert_eq!(j["node_file"]["present"], false);
        assert!(j["manifest"].is_null());
        let text = ok(edgeimg().arg("inspect").arg(&img));
        assert!(
            text.contains("manifest    none beside the image") && text.contains("EDGEBOOT"),
            "{text}"
        );
    }
    // A manifest beside it supplies board, K3s, images, SELinux (whatever the
    // build recorded), and a compressed image inspects the same.
    let img = d.path().join("test-gpt.img");
    let manifest = serde_json::json!({
        "format": 1, "name": "fleet", "board": "x86_64", "arch": "amd64", "edgeimg_version": "0.1.0",
        "source_date_epoch": 0, "seed": "s",
        "image": {"file": "test-gpt.img", "size": 64 * MIB, "sha256": "00"},
        "kernel_cmdline": "root=PARTUUID=x ro",
        "verity": {"enabled": false},
        "secure_boot": {"signed": true, "db_cert_sha256": "66", "enroll": "if-safe"},
        "data_encryption": {"encryption": "tpm2", "no_tpm": "refuse", "recovery_public_key_sha256": "77"},
        "inputs": {
            "config": {"name": "image.toml", "version": "", "sha256": "11"},
            "base": {"suite": "trixie", "arch": "amd64", "mirror": "http://deb.debian.org/debian",
                     "cache_key": "k", "tarball_sha256": "22", "requested_packages": []},
            "kernel": {"version": "6.12.0-test", "vmlinuz_sha256": "33", "initrd_sha256": "44"},
            "agent": {"name": "edgeimg-agent", "version": "0.1.0", "sha256": "55"},
            "packages": [], "overlays": [],
            "k3s": {"bundle": "stand-in", "stand_in": true, "k3s_version": "v1.33.1+k3s1",
                    "nerdctl_version": "2.1.2", "role": "agent", "buildkit": true, "assets": [],
                    "preloaded_images": [{"file": "nginx.tar", "sha256": "abcdef0123456789",
                                          "images": ["docker.io/library/nginx:1.27"]}]},
            "selinux": {"mode": "enforcing", "policy": "default", "modules": []},
        },
        "layout": {"disk_guid": "00000000-0000-4000-8000-000000000000", "size": 64 * MIB,
                   "partitions": [{"number": 1, "label": "boot", "role": "boot", "fs": "vfat",
                                   "type_guid": "t", "part_uuid": "u", "offset": MIB, "size": 40 * MIB}]},
        "placed_files": [],
    });
    std::fs::write(d.path().join("manifest.json"), manifest.to_string()).unwrap();
    let zst = Path::new(&format!("{}.zst", img.display())).to_path_buf();
    edgeimg::artifact::compress(&img, &zst, edgeimg::artifact::Compression::Zstd, &|_| {}).unwrap();
    for i in [&img, &zst] {
        let j = inspect_json(i);
        assert_eq!(j["board"], "x86_64");
        assert_eq!(j["selinux"], "policy default, mode enforcing");
        assert_eq!(
            j["preloaded_images"][0],
            "docker.io/library/nginx:1.27 (from nginx.tar)"
        );
        assert_eq!(j["partitions"][0]["role"], "boot");
        assert_eq!(j["partitions"][0]["fs"], "vfat");
        let text = ok(edgeimg().arg("inspect").arg(i));
        for want in [
            "board       x86_64 (amd64)",
            "k3s         K3s v1.33.1+k3s1 (bundle stand-in), role agent, nerdctl 2.1.2, BuildKit yes -- STAND-IN",
            "selinux     policy default, mode enforcing",
            "secure boot signed: systemd-boot and a UKI per slot, db certificate sha256 66, enroll if-safe",
            "data enc    tpm2: LUKS2 made on the device's first boot, sealed to its TPM2 (PCR 7); without a TPM2: refuse; recovery public key sha256 77",
            "nginx:1.27",
            "kernel      6.12.0-test",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("null") && !text.contains("{\""), "{text}");
        // The manifest's made-up SHA-256 is not the image's.
        assert_eq!(j["sha256_matches"], false);
        assert!(text.contains("the image DIFFERS"), "{text}");
    }
    // A manifest from before the format field reads as format 1; a newer
    // format is refused by name rather than misread.
    // Nor the K3s role and BuildKit, nor Secure Boot: they read as unknown.
    let mut old = manifest.clone();
    old.as_object_mut().unwrap().remove("format");
    old.as_object_mut().unwrap().remove("secure_boot");
    old.as_object_mut().unwrap().remove("data_encryption");
    for k in ["role", "buildkit"] {
        old["inputs"]["k3s"].as_object_mut().unwrap().remove(k);
    }
    std::fs::write(d.path().join("manifest.json"), old.to_string()).unwrap();
    assert_eq!(inspect_json(&img)["board"], "x86_64");
    let text = ok(edgeimg().arg("inspect").arg(&img));
    assert!(
        text.contains("role unknown, nerdctl 2.1.2, BuildKit unknown")
            && text.contains("secure boot unknown (not in the manifest)")
            && text.contains("data enc    unknown (not in the manifest)"),
        "{text}"
    );
    let mut newer = manifest.clone();
    newer["format"] = 99.into();
    std::fs::write(d.path().join("manifest.json"), newer.to_string()).unwrap();
    let o = run(edgeimg().arg("inspect").arg(&img));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("manifest.json") && err.contains("format 99"),
        "{err}"
    );
    std::fs::remove_file(d.path().join("manifest.json")).unwrap();
    // Without a manifest, what was not read from the image is unknown, not none.
    let text = ok(edgeimg().arg("inspect").arg(&img));
    for want in [
        "k3s         unknown",
        "selinux     unknown",
        "images      unknown",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // A file too small for a partition table says so.
    let tiny = d.path().join("tiny.img");
    std::fs::write(&tiny, b"not an image").unwrap();
    let o = run(edgeimg().arg("inspect").arg(&tiny));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("tiny.img: no partition table: shorter than one 512-byte sector"),
        "{err}"
    );
    let o = run(edgeimg().arg("inspect").arg(d.path().join("nope.img")));
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nope.img"));
}

/// Copies bytes [offset, offset+len) of `img` into `dest`.
fn extract(img: &Path, offset: u64, len: u64, dest: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut out = std::fs::File::create(dest).unwrap();
    std::io::copy(&mut f.by_ref().take(len), &mut out).unwrap();
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key:?} in\n{text}"))
}

#[test]
fn inspect_a_real_image_agrees_with_the_reference_tools() {
    let _g = exclusive();
    let out = tempfile::tempdir().unwrap();
    let o = run(edgeimg()
        .args(["build", "--quiet", "--config"])
        .arg(fixtures().join("image.toml"))
        .arg("--out")
        .arg(out.path())
        .env("SOURCE_DATE_EPOCH", "1750000000"));
    assert!(
        o.status.success(),
        "build failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let img = out.path().join("imgtest-x86_64.img");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("manifest.json")).unwrap())
            .unwrap();
    let j = inspect_json(&img);
    assert_eq!(j["board"], "x86_64");
    assert_eq!(j["name"], "imgtest");
    assert_eq!(j["kernel"], manifest["inputs"]["kernel"]["version"]);
    assert_eq!(j["image_sha256"], manifest["image"]["sha256"]);
    assert_eq!(j["table_kind"], "gpt");
    assert_eq!(j["disk_id"], manifest["layout"]["disk_guid"]);
    let parts = j["partitions"].as_array().unwrap();
    let layout = manifest["layout"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), layout.len());
    for (p, l) in parts.iter().zip(layout) {
        for k in ["number", "offset", "size", "part_uuid", "role"] {
            assert_eq!(p[k], l[k], "partition {}: {k}", l["number"]);
        }
        assert_eq!(p["name"], l["label"]);
        if l["fs"] != "none" {
            assert_eq!(p["fs"], l["fs"], "partition {}", l["number"]);
        }
    }
    let scratch = tempfile::tempdir().unwrap();
    for p in parts {
        let (off, size) = (p["offset"].as_u64().unwrap(), p["size"].as_u64().unwrap());
        let part = scratch.path().join(format!("p{}", p["number"]));
        match p["fs"].as_str().unwrap() {
            "erofs" => {
                extract(&img, off, size, &part);
                let d = ok(Command::new("dump.erofs").arg("-s").arg(&part));
                assert_eq!(
                    field(&d, "Filesystem UUID:"),
                    p["uuid"].as_str().unwrap(),
                    "{d}"
                );
                if let Some(label) = p["label"].as_str() {
                    assert!(d.contains(label), "{d}");
                }
                let blocks: u64 = field(&d, "Filesystem blocks:").parse().unwrap();
                let bs: u64 = d
                    .lines()
                    .find_map(|l| l.strip_prefix("Filesystem blocksize:"))
                    .map_or(4096, |s| s.trim().parse().unwrap());
                assert_eq!(p["fs_size"].as_u64(), Some(blocks * bs), "{d}");
            }
            "ext4" => {
                extract(&img, off, size, &part);
                let d = ok(Command::new("dumpe2fs").arg("-h").arg(&part));
                assert_eq!(field(&d, "Filesystem UUID:"), p["uuid"].as_str().unwrap());
                let name = field(&d, "Filesystem volume name:");
                assert_eq!(p["label"].as_str().unwrap_or("<none>"), name);
                let blocks: u64 = field(&d, "Block count:").parse().unwrap();
                let bs: u64 = field(&d, "Block size:").parse().unwrap();
                assert_eq!(p["fs_size"].as_u64(), Some(blocks * bs));
            }
            "vfat" => {
                let info = ok(Command::new("minfo")
                    .env("MTOOLS_SKIP_CHECK", "1")
                    .arg("-i")
                    .arg(format!("{}@@{off}", img.display()))
                    .arg("::"));
                let serial = info
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("serial number:"))
                    .unwrap()
                    .trim()
                    .to_uppercase();
                assert_eq!(
                    p["uuid"].as_str().unwrap().replace('-', ""),
                    serial,
                    "{info}"
                );
                assert!(
                    info.contains(&format!("disk type=\"{}", p["detail"].as_str().unwrap())),
                    "{info}"
                );
                assert_eq!(p["label"], "EDGEBOOT");
            }
            other => assert!(
                other == "empty" || p["role"] == "root-b",
                "partition {p}: {other}"
            ),
        }
    }
    let text = ok(edgeimg().arg("inspect").arg(&img));
    for want in [
        "board       x86_64 (amd64)",
        "table       GPT",
        "EDGEBOOT",
        "erofs",
        "ext4",
        "k3s ",
        "selinux ",
        "secure boot not signed",
        "images ",
        "node file   none",
        "inputs",
        "base      Debian",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // The compressed copy inspects the same.
    let z = inspect_json(&out.path().join("imgtest-x86_64.img.zst"));
    assert_eq!(z["partitions"], j["partitions"]);
}

/// `img`'s GPT with partition `n`'s first and last sectors replaced and the
/// CRCs fixed, so only the arithmetic on them can object.
fn patch_gpt_entry(img: &Path, n: usize, first: u64, last: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut hdr = [0u8; 92];
    f.read_exact_at(&mut hdr, 512).unwrap();
    let lba = u64::from_le_bytes(hdr[72..80].try_into().unwrap());
    let count = u32::from_le_bytes(hdr[80..84].try_into().unwrap()) as usize;
    let size = u32::from_le_bytes(hdr[84..88].try_into().unwrap()) as usize;
    let mut entries = vec![0u8; count * size];
    f.read_exact_at(&mut entries, lba * 512).unwrap();
    let e = (n - 1) * size;
    entries[e + 32..e + 40].copy_from_slice(&first.to_le_bytes());
    entries[e + 40..e + 48].copy_from_slice(&last.to_le_bytes());
    f.write_all_at(&entries, lba * 512).unwrap();
    hdr[88..92].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
    hdr[16..20].fill(0);
    let c = crc32fast::hash(&hdr);
    hdr[16..20].copy_from_slice(&c.to_le_bytes());
    f.write_all_at(&hdr, 512).unwrap();
}

/// A GPT entry whose byte size does not fit in 64 bits, or that ends before
/// it starts: one error naming the image and the partition, plain or
/// compressed — never a wrapped size (or an overflow panic).
#[test]
fn inspect_refuses_a_hostile_gpt_entry_clearly() {
    let d = tempfile::tempdir().unwrap();
    for (first, last) in [(2048, u64::MAX - 1), (4096, 2047)] {
        let img = make_image(d.path(), "gpt");
        patch_gpt_entry(&img, 2, first, last);
        let zst = Path::new(&format!("{}.zst", img.display())).to_path_buf();
        let _ = std::fs::remove_file(&zst);
        edgeimg::artifact::compress(&img, &zst, edgeimg::artifact::Compression::Zstd, &|_| {})
            .unwrap();
        for i in [&img, &zst] {
            let o = run(edgeimg().arg("inspect").arg(i));
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{e}");
            assert!(
                e.contains(&i.display().to_string())
                    && e.contains(&format!("GPT partition 2: sectors {first}..={last}")),
                "{e}"
            );
            assert!(!e.contains("panicked"), "{e}");
        }
    }
}

/// A compressed image is read as a stream: nothing is decompressed to a
/// temporary file, the node file is found on its FAT, and memory stays
/// bounded (< 64 MiB peak RSS) for a 4 GiB image whose data is mostly zeros.
#[test]
fn inspect_streams_a_compressed_image_in_bounded_memory() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "gpt");
    let node = d.path().join("node.toml");
    std::fs::write(&node, "hostname = \"edge-z\"\n").unwrap();
    ok(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i"])
        .arg(format!("{}@@{MIB}", img.display()))
        .arg("-s")
        .arg(&node)
        .arg("::node.toml"));
    ok(Command::new("mmd")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{MIB}", img.display()))
        .arg("::edgeimg"));
    ok(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{MIB}", img.display()))
        .arg(&node)
        .arg("::edgeimg/node.toml"));
    // Grow to 4 GiB of zeros: a whole-image temp file would be 4 GiB.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(4096 * MIB)
        .unwrap();
    let zst = Path::new(&format!("{}.zst", img.display())).to_path_buf();
    edgeimg::artifact::compress(&img, &zst, edgeimg::artifact::Compression::Zstd, &|_| {}).unwrap();
    let tmp = d.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let m = run_measured(
        edgeimg()
            .args(["inspect", "--json"])
            .arg(&zst)
            .env("TMPDIR", &tmp),
    );
    assert!(m.success, "{}", m.stderr);
    let j: serde_json::Value = serde_json::from_str(&m.stdout).unwrap();
    assert_eq!(j["size"], 4096 * MIB);
    assert_eq!(j["partitions"][0]["fs"], "vfat");
    assert_eq!(j["node_file"]["hostname"], "edge-z", "{j}");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "a temp file was made"
    );
    assert!(
        m.peak_rss_kib < 64 * 1024,
        "inspect of a 4 GiB .zst peaked at {} KiB",
        m.peak_rss_kib
    );
}

/// Detaches a loop device when the test ends, passed or not.
struct Loop(String);
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn inspect_reads_a_flashed_card_read_only() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: attaching a loop device needs root (CI runs as root)");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "gpt");
    // A node file with a join token, as `flash --node` leaves it on the card.
    let node = d.path().join("node.toml");
    std::fs::write(
        &node,
        "hostname = \"edge-07\"\n[k3s]\nrole = \"agent\"\nserver = \"https://10.0.0.1:6443\"\ntoken = \"K10secret-token-value\"\n",
    )
    .unwrap();
    let fat = format!("{}@@{MIB}", img.display());
    ok(Command::new("mmd")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", &fat, "::edgeimg"]));
    ok(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", &fat])
        .arg(&node)
        .arg("::edgeimg/node.toml"));
    let from_file = inspect_json(&img);
    let dev = ok(Command::new("losetup")
        .args(["--find", "--show", "--read-only"])
        .arg(&img));
    let dev = Loop(dev.trim().to_string());
    let before = edgeimg::artifact::checksums::sha256_file(&img).unwrap();
    let j = inspect_json(Path::new(&dev.0));
    assert_eq!(j["size"], 64 * MIB, "{j}");
    assert_eq!(j["partitions"], from_file["partitions"], "{j}");
    assert_eq!(j["table_kind"], "gpt");
    assert_eq!(j["node_file"]["present"], true, "{j}");
    assert_eq!(j["node_file"]["hostname"], "edge-07", "{j}");
    assert_eq!(j["node_file"]["token_set"], true, "{j}");
    assert!(j["manifest"].is_null(), "{j}");
    let text = ok(edgeimg().arg("inspect").arg(&dev.0));
    assert!(text.contains("edge-07"), "{text}");
    assert!(
        !text.contains("secret-token") && !j.to_string().contains("secret-token"),
        "the token is never shown"
    );
    assert_eq!(
        edgeimg::artifact::checksums::sha256_file(&img).unwrap(),
        before,
        "inspect changed the card"
    );
    // A character device is neither.
    let o = run(edgeimg().args(["inspect", "/dev/null"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("neither an image file nor a block device"),
        "{err}"
    );
}
