//! The signed boot files of a Secure Boot build, made with the real tools
//! (objcopy, sbsign) from the host's systemd-stub (systemd-boot-efi, as the
//! image's own root carries it): the UKI and systemd-boot verify against the
//! fleet's db certificate, the UKI holds the command line, the plan names
//! exactly what is made, and the same inputs give the same bytes.

mod common;

use std::path::Path;
use std::process::Command;

use common::{edgeimg, ok};
use edgeimg::config::SecureBoot;
use edgeimg::config::schema::Enroll;
use edgeimg::secure_boot::sign::FleetKeys;
use edgeimg::stage::KernelFiles;

const EFI: &str = "/usr/lib/systemd/boot/efi";

/// A root holding the host's stub and systemd-boot, an os-release and a
/// stand-in kernel and initrd (the stub does not look inside them here).
fn tree(root: &Path) -> KernelFiles {
    let efi = root.join("usr/lib/systemd/boot/efi");
    std::fs::create_dir_all(&efi).unwrap();
    for f in ["linuxx64.efi.stub", "systemd-bootx64.efi"] {
        std::fs::copy(Path::new(EFI).join(f), efi.join(f)).unwrap();
    }
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::write(root.join("boot/vmlinuz"), vec![0x5a; 10_000]).unwrap();
    std::fs::write(root.join("boot/initrd.img"), vec![0xa5; 5_000]).unwrap();
    KernelFiles {
        version: "6.1.0-1-amd64".into(),
        vmlinuz: root.join("boot/vmlinuz"),
        initrd: root.join("boot/initrd.img"),
    }
}

fn sbverify(keys: &FleetKeys, file: &Path) -> bool {
    Command::new("sbverify")
        .arg("--cert")
        .arg(keys.file("db.crt"))
        .arg(file)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn uki_and_loader_are_signed_and_reproducible() {
    let d = tempfile::tempdir().unwrap();
    let prefix = d.path().join("fleet");
    ok(edgeimg()
        .args(["keygen", "--secure-boot", "--out"])
        .arg(&prefix));
    let sb = SecureBoot {
        keys: FleetKeys { prefix },
        enroll: Enroll::Force,
    };
    let cmdline = "root=/dev/mapper/edgeimg-root edgeimg.slot=a ro";
    let make = |n: &str| {
        let root = d.path().join(n);
        let k = tree(&root);
        let work = d.path().join(format!("{n}-work"));
        std::fs::create_dir_all(&work).unwrap();
        let files =
            edgeimg::boot::uefi::boot_files(&root, "x86_64", &k, cmdline, "t", Some(&sb), &work)
                .unwrap();
        files.materialize(&work).unwrap()
    };
    let one = make("one");
    let two = make("two");

    let mut names: Vec<String> = one.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        edgeimg::boot::uefi::planned_files("x86_64", Some(&sb))
    );
    let get = |set: &[(String, std::path::PathBuf)], n: &str| {
        std::fs::read(&set.iter().find(|(m, _)| m == n).unwrap().1).unwrap()
    };
    for (name, path) in &one {
        assert_eq!(
            std::fs::read(path).unwrap(),
            get(&two, name),
            "{name} differs"
        );
        if name.ends_with(".efi") || name.ends_with(".EFI") {
            assert!(sbverify(&sb.keys, path), "{name} does not verify");
        }
    }
    // Unsigned systemd-boot does not verify: the check above can fail.
    assert!(!sbverify(
        &sb.keys,
        &Path::new(EFI).join("systemd-bootx64.efi")
    ));

    let uki = one
        .iter()
        .find(|(n, _)| n == "EFI/Linux/edgeimg-1-a.efi")
        .unwrap();
    let out = d.path().join("cmdline.bin");
    let dump = Command::new("objcopy")
        .arg("--dump-section")
        .arg(format!(".cmdline={}", out.display()))
        .arg(&uki.1)
        .arg(d.path().join("scratch.efi"))
        .output()
        .unwrap();
    assert!(dump.status.success(), "{dump:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), cmdline);

    let conf = String::from_utf8(get(&one, "loader/loader.conf")).unwrap();
    assert!(conf.contains("secure-boot-enroll force\n"), "{conf}");
    assert_eq!(
        get(&one, &format!("{}/db.auth", edgeimg::boot::uefi::KEYS_DIR)),
        std::fs::read(sb.keys.file("db.auth")).unwrap()
    );
    // Only public lists: no private key lands on the boot partition.
    for (_, path) in &one {
        let b = std::fs::read(path).unwrap();
        assert!(!b.windows(11).any(|w| w == b"PRIVATE KEY"));
    }
}
