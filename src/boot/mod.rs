//! What goes onto the boot partition, per firmware path.

pub mod rpi;
pub mod uefi;

/// Whether `name` matches `pattern`, which may hold one `*` (any run of
/// characters, `/` included): how a plan names files it cannot list.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.len() >= head.len() + tail.len() && name.starts_with(head) && name.ends_with(tail)
        }
    }
}

/// The example node file's path on the boot partition.
pub const NODE_EXAMPLE_PATH: &str = "edgeimg/node.toml.example";

/// The node file's path on the boot partition, and an example beside it.
pub const NODE_EXAMPLE: &str = "# edgeimg per-node settings, read once by the first-boot agent.\n\
# Copy this file to node.toml (same folder) on any PC after flashing, and edit.\n\
# Every key is optional.\n\
\n\
# hostname = \"edge-01\"\n\
\n\
# [[users]]\n\
# name = \"ops\"\n\
# groups = [\"sudo\"]\n\
# ssh_keys = [\"ssh-ed25519 AAAA... ops@example\"]\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::board::RpiSpec;
    use crate::stage::KernelFiles;
    use std::path::Path;

    fn touch(tree: &Path, rel: &str) {
        let p = tree.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    fn kernel(tree: &Path) -> KernelFiles {
        touch(tree, "boot/vmlinuz-6.1.0-1-arm64");
        touch(tree, "boot/initrd.img-6.1.0-1-arm64");
        KernelFiles {
            version: "6.1.0-1-arm64".into(),
            vmlinuz: tree.join("boot/vmlinuz-6.1.0-1-arm64"),
            initrd: tree.join("boot/initrd.img-6.1.0-1-arm64"),
        }
    }

    /// Each planned name (or pattern) matches a file the firmware's step
    /// makes, and each file matches one: what `edgeimg plan` shows is what
    /// the build puts on the boot partition.
    fn same(planned: &[String], made: &[String]) {
        for m in made {
            assert!(
                planned.iter().any(|p| matches(p, m)),
                "{m} not planned: {planned:?}"
            );
        }
        for p in planned {
            assert!(made.iter().any(|m| matches(p, m)), "{p} not made: {made:?}");
        }
    }

    #[test]
    fn uefi_plan_is_what_the_step_makes() {
        for arch in ["x86_64", "aarch64"] {
            let d = tempfile::tempdir().unwrap();
            let suffix = if arch == "aarch64" { "aa64" } else { "x64" };
            touch(
                d.path(),
                &format!("usr/lib/systemd/boot/efi/systemd-boot{suffix}.efi"),
            );
            let k = kernel(d.path());
            let files = uefi::boot_files(d.path(), arch, &k, "ro", "t", None, d.path()).unwrap();
            let made: Vec<String> = files.files.keys().cloned().collect();
            same(&uefi::planned_files(arch, None), &made);
        }
    }

    #[test]
    fn rpi_plan_is_what_the_step_makes() {
        let d = tempfile::tempdir().unwrap();
        let k = kernel(d.path());
        for f in [
            "start4.elf",
            "start4x.elf",
            "fixup4.dat",
            "fixup4x.dat",
            "bootcode.bin",
        ] {
            touch(d.path(), &format!("usr/lib/raspi-firmware/{f}"));
        }
        touch(d.path(), "usr/lib/raspi-firmware/overlays/disable-bt.dtbo");
        touch(
            d.path(),
            &format!(
                "usr/lib/linux-image-{}/broadcom/bcm2711-rpi-4-b.dtb",
                k.version
            ),
        );
        let rpi = RpiSpec {
            dtbs: vec!["bcm2711-rpi-4-b.dtb".into()],
            config_txt: "kernel={{ kernel }}".into(),
        };
        let files = rpi::boot_files(d.path(), &rpi, &k, "ro", "t").unwrap();
        let made: Vec<String> = files.files.keys().cloned().collect();
        assert!(!made.contains(&"bootcode.bin".to_string()));
        same(&rpi::planned_files(&rpi), &made);
    }

    /// Replaces `rel` in `tree` by a link to a file of the build host's.
    fn link_out(tree: &Path, rel: &str) -> tempfile::TempDir {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), b"the build host's").unwrap();
        let p = tree.join(rel);
        let _ = std::fs::remove_file(&p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(host.path().join("secret"), p).unwrap();
        host
    }

    #[test]
    fn boot_files_never_come_from_outside_the_tree() {
        // UEFI: systemd-boot a link to a host file.
        let d = tempfile::tempdir().unwrap();
        let k = kernel(d.path());
        let _host = link_out(d.path(), "usr/lib/systemd/boot/efi/systemd-bootx64.efi");
        let e = uefi::boot_files(d.path(), "x86_64", &k, "ro", "t", None, d.path()).unwrap_err();
        assert!(format!("{e:#}").contains("leads out of the tree"), "{e:#}");
        // The Pi: a firmware file, then a device tree.
        let d = tempfile::tempdir().unwrap();
        let k = kernel(d.path());
        touch(d.path(), "usr/lib/raspi-firmware/start4.elf");
        let dtb = format!("usr/lib/linux-image-{}/broadcom/b.dtb", k.version);
        touch(d.path(), &dtb);
        let rpi = RpiSpec {
            dtbs: vec!["b.dtb".into()],
            config_txt: String::new(),
        };
        assert!(rpi::boot_files(d.path(), &rpi, &k, "ro", "t").is_ok());
        for rel in ["usr/lib/raspi-firmware/fixup4.dat", &dtb] {
            let _host = link_out(d.path(), rel);
            let e = rpi::boot_files(d.path(), &rpi, &k, "ro", "t").unwrap_err();
            assert!(
                format!("{e:#}").contains("leads out of the tree"),
                "{rel}: {e:#}"
            );
            std::fs::remove_file(d.path().join(rel)).unwrap();
            touch(d.path(), rel);
        }
    }

    #[test]
    fn patterns_match_as_globs_with_one_star() {
        assert!(matches("start4*.elf", "start4.elf"));
        assert!(matches("start4*.elf", "start4db.elf"));
        assert!(!matches("start4*.elf", "start.elf"));
        assert!(!matches("start4*.elf", "start4.elf.bak"));
        assert!(matches("overlays/*", "overlays/a.dtbo"));
        assert!(matches("config.txt", "config.txt") && !matches("config.txt", "config.txtx"));
    }
}
