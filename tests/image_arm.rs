//! Image tests for the arm64 boards, cross-built on this host: the Raspberry
//! Pi 4 card (MBR, the Pi firmware's boot files, config.txt, cmdline.txt) and
//! the generic arm64 UEFI image.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

fn build(board: &str, out: &Path, extra: &[&std::ffi::OsStr]) {
    let o = run(edgeimg()
        .args(["build", "--board", board, "--compress", "none", "--config"])
        .arg(fixtures().join("image.toml"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("SOURCE_DATE_EPOCH", "1750000000"));
    assert!(
        o.status.success(),
        "{board} build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// ELF e_machine of a binary: 62 x86_64, 183 aarch64.
fn elf_machine(bytes: &[u8]) -> u16 {
    assert_eq!(&bytes[..4], b"\x7fELF");
    u16::from_le_bytes([bytes[18], bytes[19]])
}

#[test]
fn rpi4_card_is_laid_out_for_the_pi_firmware() {
    let _g = exclusive();
    let out = tempfile::tempdir().unwrap();
    // Signed, with its update file: the Pi tryboot switch is checked below.
    let keys = tempfile::tempdir().unwrap();
    ok(edgeimg()
        .arg("keygen")
        .arg("--out")
        .arg(keys.path().join("fleet")));
    build(
        "rpi4",
        out.path(),
        &[
            "--signing-key".as_ref(),
            keys.path().join("fleet.key").as_os_str(),
            "--update".as_ref(),
        ],
    );
    let img = out.path().join("imgtest-rpi4.img");

    // MBR (DOS) with four primary partitions; the first is bootable FAT32 LBA.
    let table: serde_json::Value =
        serde_json::from_str(&ok(Command::new("sfdisk").arg("--json").arg(&img))).unwrap();
    let t = &table["partitiontable"];
    assert_eq!(t["label"], "dos");
    let disk_id = t["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("0x")
        .to_lowercase();
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[0]["bootable"], true);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["layout"]["mbr_disk_id"]
            .as_u64()
            .map(|d| format!("{d:08x}")),
        Some(disk_id.clone())
    );

    let work = tempfile::tempdir().unwrap();
    let boot = work.path().join("boot.vfat");
    extract_range(
        &img,
        parts[0]["start"].as_u64().unwrap() * 512,
        parts[0]["size"].as_u64().unwrap() * 512,
        &boot,
    );
    ok(Command::new("fsck.vfat").arg("-n").arg(&boot));
    // The plan names exactly what the build placed: the Pi firmware's files,
    // no systemd-boot.
    let plan = plan_json(&fixtures().join("image.toml"), "rpi4", None);
    assert_build_matches_plan(&plan, &manifest, &boot, true);
    let listing = ok(Command::new("mdir")
        .args(["-/", "-b", "-i"])
        .arg(&boot)
        .arg("::/"));
    for f in [
        "start4.elf",
        "fixup4.dat",
        "bcm2711-rpi-4-b.dtb",
        "bcm2711-rpi-400.dtb",
        "bcm2711-rpi-cm4-io.dtb",
        "vmlinuz",
        "initrd.img",
        "config.txt",
        "cmdline.txt",
        "edgeimg/node.toml.example",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.trim_start_matches("::/") == f || l.ends_with(&format!("/{f}"))),
            "boot partition lacks {f}:\n{listing}"
        );
    }

    let config = ok(Command::new("mtype")
        .arg("-i")
        .arg(&boot)
        .arg("::/config.txt"));
    for line in [
        "arm_64bit=1",
        "kernel=vmlinuz",
        "initramfs initrd.img followkernel",
        "enable_uart=1",
        "cmdline=cmdline.txt",
    ] {
        assert!(
            config.lines().any(|l| l.trim() == line),
            "config.txt lacks `{line}`:\n{config}"
        );
    }
    let cmdline = ok(Command::new("mtype")
        .arg("-i")
        .arg(&boot)
        .arg("::/cmdline.txt"));
    assert_eq!(
        cmdline.lines().count(),
        1,
        "cmdline.txt must be one line: {cmdline:?}"
    );
    assert!(
        cmdline.contains("root=/dev/mapper/edgeimg-root ")
            && cmdline.contains(&format!("edgeimg.verity.dev=PARTUUID={disk_id}-02")),
        "cmdline.txt must open the root slot, named by the MBR disk id, through dm-verity (the default): {cmdline}"
    );
    assert!(
        cmdline.contains(&format!("edgeimg.data=PARTUUID={disk_id}-04")),
        "{cmdline}"
    );
    assert!(
        cmdline.trim_end().ends_with("console=ttyS1,115200"),
        "the mini UART must be /dev/console on a Pi: {cmdline}"
    );

    // The root carries the aarch64 agent.
    let root = work.path().join("root.erofs");
    extract_range(
        &img,
        parts[1]["start"].as_u64().unwrap() * 512,
        parts[1]["size"].as_u64().unwrap() * 512,
        &root,
    );
    let tree = work.path().join("tree");
    ok(Command::new("fsck.erofs")
        .arg(format!("--extract={}", tree.display()))
        .arg(&root));
    assert_eq!(
        elf_machine(&std::fs::read(tree.join("usr/lib/edgeimg/edgeimg-agent")).unwrap()),
        183
    );
    assert!(
        std::fs::read_to_string(tree.join("usr/share/edgeimg/update.pub"))
            .unwrap()
            .contains("edgeimg-update-ed25519-public"),
        "the image trusts the signing key"
    );

    rpi4_update_switches_slots_with_tryboot(out.path(), &boot, work.path(), keys.path());
}

/// The rpi4 update file, applied to a copy of the card's boot partition the
/// way the agent does on a Pi (QEMU cannot run the Pi firmware), then read
/// back from the FAT image with mtools: what the firmware would find.
fn rpi4_update_switches_slots_with_tryboot(out: &Path, boot: &Path, work: &Path, keys: &Path) {
    use edgeimg_agent::update::{format, keys as k, rpi};
    let upd = out.join("imgtest-rpi4.update");
    let public = keys.join("fleet.pub");
    let v = ok(edgeimg()
        .args(["update", "verify"])
        .arg(&upd)
        .arg("--key")
        .arg(&public)
        .args(["--board", "rpi4", "--arch", "arm64"]));
    assert!(v.contains("OK"), "{v}");
    let o = run(edgeimg()
        .args(["update", "verify"])
        .arg(&upd)
        .arg("--key")
        .arg(&public)
        .args(["--board", "x86_64"]));
    assert!(!o.status.success());
    let v = format::verify_file(
        &upd,
        &k::read_public(&public).unwrap(),
        &format::Expect {
            board: Some("rpi4"),
            arch: Some("arm64"),
        },
    )
    .unwrap();
    let names: Vec<&str> = v.header.payloads.iter().map(|p| p.name.as_str()).collect();
    for n in [
        "root.erofs",
        "boot/vmlinuz",
        "boot/initrd.img",
        "boot/config.txt",
        "boot/cmdline.txt",
        "boot/start4.elf",
        "boot/bcm2711-rpi-4-b.dtb",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }

    // The boot partition as a directory, updated into slot B, written back.
    let dir = work.join("bootdir");
    std::fs::create_dir_all(&dir).unwrap();
    ok(Command::new("mcopy")
        .args(["-s", "-n", "-i"])
        .arg(boot)
        .arg("::/*")
        .arg(&dir));
    let mut f = std::fs::File::open(&upd).unwrap();
    rpi::install(
        &mut f,
        &v,
        &dir,
        edgeimg_contract::partition::Slot::B,
        "root=PARTUUID=0badcafe-03 edgeimg.slot=b",
    )
    .unwrap();
    ok(Command::new("mmd").args(["-i"]).arg(boot).arg("::/b"));
    for e in std::fs::read_dir(dir.join("b")).unwrap().flatten() {
        ok(Command::new("mcopy")
            .args(["-s", "-i"])
            .arg(boot)
            .arg(e.path())
            .arg("::/b/"));
    }
    ok(Command::new("mcopy")
        .args(["-i"])
        .arg(boot)
        .arg(dir.join("tryboot.txt"))
        .arg("::/tryboot.txt"));

    let mtype = |p: &str| ok(Command::new("mtype").arg("-i").arg(boot).arg(p));
    let tryboot = mtype("::/tryboot.txt");
    assert!(tryboot.contains("\nos_prefix=b/\n"), "{tryboot}");
    assert!(tryboot.contains("kernel=vmlinuz"), "{tryboot}");
    assert_eq!(
        mtype("::/b/cmdline.txt").trim(),
        "root=PARTUUID=0badcafe-03 edgeimg.slot=b"
    );
    // config.txt still boots slot A until the trial boot is found healthy.
    assert!(!mtype("::/config.txt").contains("os_prefix"));
    let listing = ok(Command::new("mdir")
        .args(["-/", "-b", "-i"])
        .arg(boot)
        .arg("::/b"));
    for f in [
        "vmlinuz",
        "initrd.img",
        "bcm2711-rpi-4-b.dtb",
        "cmdline.txt",
    ] {
        assert!(listing.contains(&format!("::/b/{f}")), "{f}: {listing}");
    }
    assert!(
        !listing.contains("start4.elf"),
        "firmware is shared: {listing}"
    );
    ok(Command::new("fsck.vfat").arg("-n").arg(boot));
}

#[test]
fn arm64_uefi_image_has_aarch64_bootloader_and_agent() {
    let _g = exclusive();
    let out = tempfile::tempdir().unwrap();
    build("arm64", out.path(), &[]);
    let img = out.path().join("imgtest-arm64.img");
    let v = ok(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(v.contains("No problems found"), "{v}");
    let table: serde_json::Value =
        serde_json::from_str(&ok(Command::new("sfdisk").arg("--json").arg(&img))).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    // The root slots carry the Discoverable Partitions type for arm64 roots.
    assert_eq!(
        parts[1]["type"].as_str().unwrap().to_uppercase(),
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"
    );
    let work = tempfile::tempdir().unwrap();
    let boot = work.path().join("boot.vfat");
    extract_range(
        &img,
        parts[0]["start"].as_u64().unwrap() * 512,
        parts[0]["size"].as_u64().unwrap() * 512,
        &boot,
    );
    ok(Command::new("fsck.vfat").arg("-n").arg(&boot));
    let efi = work.path().join("BOOTAA64.EFI");
    ok(Command::new("mcopy")
        .arg("-i")
        .arg(&boot)
        .arg("::/EFI/BOOT/BOOTAA64.EFI")
        .arg(&efi));
    let pe = std::fs::read(&efi).unwrap();
    let pe_off = u32::from_le_bytes(pe[0x3c..0x40].try_into().unwrap()) as usize;
    assert_eq!(
        u16::from_le_bytes([pe[pe_off + 4], pe[pe_off + 5]]),
        0xaa64,
        "systemd-boot must be the AArch64 build"
    );
    let entry = ok(Command::new("mtype")
        .arg("-i")
        .arg(&boot)
        .arg("::/loader/entries/edgeimg-1-a.conf"));
    assert!(entry.contains("console=ttyAMA0,115200"), "{entry}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    let plan = plan_json(&fixtures().join("image.toml"), "arm64", None);
    assert_build_matches_plan(&plan, &manifest, &boot, false);
}
