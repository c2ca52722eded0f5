//! dm-verity images (the default; `[image] verity = false` opts out), without a VM: the slot A
//! payload verifies with `veritysetup verify` against the root hash on slot
//! A's boot entry, a flipped byte does not, and rebuilds are byte-identical.
//! (The boots, a tampered disk and A/B updates: qemu-tests/tests/x86_64_update.rs.)

mod common;
use common::*;

use std::path::Path;

fn build(out: &Path) {
    let mut c = edgeimg();
    c.args(["build", "--compress", "none", "--config"])
        .arg(fixtures().join("verity.toml"))
        .arg("--out")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", "1750000000");
    let o = run(&mut c);
    assert!(
        o.status.success(),
        "build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn param<'a>(cmdline: &'a str, key: &str) -> &'a str {
    cmdline
        .split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {cmdline}"))
}

#[test]
fn verity_root_verifies_against_the_boot_entry_and_rebuilds_identically() {
    let _g = exclusive();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    build(a.path());
    build(b.path());
    let img = a.path().join("veritytest-x86_64.img");
    let sha = |p: &Path| edgeimg::artifact::checksums::sha256_file(p).unwrap();
    assert_eq!(
        sha(&img),
        sha(&b.path().join("veritytest-x86_64.img")),
        "two verity builds with the same inputs differ"
    );

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.path().join("manifest.json")).unwrap()).unwrap();
    let v = &manifest["verity"];
    assert_eq!(v["enabled"], true, "{v}");
    let hash_offset = v["hash_offset"].as_u64().unwrap();
    assert_eq!(hash_offset % 4096, 0);
    assert_eq!(v["data_blocks"].as_u64().unwrap() * 4096, hash_offset);
    let parts = manifest["layout"]["partitions"].as_array().unwrap();
    let work = tempfile::tempdir().unwrap();
    let boot = work.path().join("boot.vfat");
    extract_range(
        &img,
        parts[0]["offset"].as_u64().unwrap(),
        parts[0]["size"].as_u64().unwrap(),
        &boot,
    );
    let root = work.path().join("root-a");
    let slot_size = parts[1]["size"].as_u64().unwrap();
    extract_range(&img, parts[1]["offset"].as_u64().unwrap(), slot_size, &root);

    // The boot entry names the verity device, the slot and the hash.
    let entry = ok(std::process::Command::new("mtype")
        .args(["-i"])
        .arg(&boot)
        .arg("::/loader/entries/edgeimg-1-a.conf"));
    let options = entry
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .unwrap_or_else(|| panic!("no options line:\n{entry}"));
    assert_eq!(param(options, "root"), "/dev/mapper/edgeimg-root");
    let root_hash = param(options, "edgeimg.verity");
    assert_eq!(root_hash, v["root_hash"].as_str().unwrap());
    assert_eq!(
        param(options, "edgeimg.verity.dev"),
        format!("PARTUUID={}", parts[1]["part_uuid"].as_str().unwrap())
    );
    assert_eq!(
        param(options, "edgeimg.verity.offset"),
        hash_offset.to_string()
    );
    assert_eq!(manifest["kernel_cmdline"].as_str().unwrap(), options);

    // The tree fits in the slot, and the slot verifies against that hash.
    let tree_end = std::fs::metadata(&root).unwrap().len();
    assert!(tree_end == slot_size && hash_offset < slot_size);
    let verify = |p: &Path| {
        std::process::Command::new("veritysetup")
            .arg("verify")
            .arg(p)
            .arg(p)
            .arg(root_hash)
            .arg(format!("--hash-offset={hash_offset}"))
            .output()
            .expect("veritysetup (cryptsetup-bin) runs")
    };
    let o = verify(&root);
    assert!(
        o.status.success(),
        "slot A does not verify: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    ok(std::process::Command::new("fsck.erofs").arg(&root));

    // One flipped byte in the EROFS data: verification fails.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&root)
            .unwrap();
        let at = hash_offset / 2;
        let mut byte = [0u8];
        f.read_exact_at(&mut byte, at).unwrap();
        byte[0] ^= 0x80;
        f.write_all_at(&byte, at).unwrap();
    }
    let o = verify(&root);
    assert!(!o.status.success(), "a tampered slot verified");
}
