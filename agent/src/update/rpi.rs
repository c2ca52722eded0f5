//! Raspberry Pi slot switch with the firmware's file-level `tryboot`.
//!
//! One FAT boot partition holds the firmware (start4.elf, fixup4*.dat,
//! shared by both slots) and each slot's OS files: slot A's at the top level
//! (where the image put them), slot B's under `b/` (`os_prefix=b/`). The
//! firmware reads `config.txt`; after `reboot '0 tryboot'` it reads
//! `tryboot.txt` instead, for that one boot only. So:
//! - apply: write the slot's files, then `tryboot.txt` = the new config.txt
//!   with the slot's `os_prefix`; the operator (or a fleet tool) reboots with
//!   `systemctl reboot '0 tryboot'`;
//! - trial boot healthy ([`commit`]): `tryboot.txt` becomes `config.txt`;
//! - unhealthy, hung, or power lost: any plain reboot reads `config.txt`,
//!   i.e. the old slot. The firmware gives the new slot exactly one try.

use crate::error::{Context, Result};
use crate::fsutil;
use crate::update::format::{BOOT_PREFIX, Verified};
use crate::update::payload::{copy_payload, write_boot_file};
use edgeimg_contract::partition::Slot;
use std::path::Path;

pub const TRYBOOT: &str = "tryboot.txt";
pub const CONFIG: &str = "config.txt";
/// Set by the firmware when it booted from tryboot.txt (big-endian u32 1).
pub const TRYBOOT_FLAG: &str = "/proc/device-tree/chosen/bootloader/tryboot";

/// The OS file directory of a slot on the boot partition.
pub fn prefix(slot: Slot) -> &'static str {
    match slot {
        Slot::A => "",
        Slot::B => "b/",
    }
}

/// Boot files both slots share (the firmware) or that are not per slot.
pub fn shared(rel: &str) -> bool {
    rel == CONFIG
        || rel.starts_with("edgeimg/")
        || (rel.starts_with("start4") && rel.ends_with(".elf"))
        || (rel.starts_with("fixup4") && rel.ends_with(".dat"))
}

/// config.txt for `slot`: the image's, with the slot's `os_prefix` first
/// (outside any conditional section, so it applies to every model).
pub fn with_os_prefix(config: &str, slot: Slot) -> String {
    let body: Vec<&str> = config
        .lines()
        .filter(|l| !l.trim_start().starts_with("os_prefix="))
        .collect();
    let mut out = String::new();
    if !prefix(slot).is_empty() {
        out.push_str(&format!(
            "# edgeimg: slot {} (its kernel, initrd, DTBs and cmdline.txt are in {})\nos_prefix={}\n",
            slot.upper(),
            prefix(slot),
            prefix(slot)
        ));
    }
    out.push_str(&body.join("\n"));
    out.push('\n');
    out
}

/// Removes a pending trial (before the slot it names is overwritten).
pub fn forget_trial(esp: &Path) -> Result<()> {
    let t = esp.join(TRYBOOT);
    if t.exists() {
        std::fs::remove_file(&t).with_context(|| t.display().to_string())?;
        fsutil::sync_dir(esp)?;
    }
    Ok(())
}

/// Writes the slot's OS files and then `tryboot.txt`.
pub fn install(
    f: &mut (impl std::io::Read + std::io::Seek),
    v: &Verified,
    esp: &Path,
    slot: Slot,
    cmdline: &str,
) -> Result<()> {
    let dir = esp.join(prefix(slot));
    let mut config = None;
    for p in &v.header.payloads {
        let Some(rel) = p.name.strip_prefix(BOOT_PREFIX) else {
            continue;
        };
        if rel.contains("..") || rel.starts_with('/') {
            crate::bail!("boot file name {rel:?} escapes the boot partition");
        }
        if rel == CONFIG {
            let mut buf = Vec::new();
            copy_payload(f, v, &p.name, &mut buf)?;
            config = Some(String::from_utf8_lossy(&buf).into_owned());
        } else if rel == "cmdline.txt" {
            fsutil::write_atomic_fat(&dir.join(rel), format!("{cmdline}\n").as_bytes())?;
        } else if !shared(rel) {
            write_boot_file(f, v, &p.name, &dir.join(rel))?;
        }
    }
    let Some(config) = config else {
        crate::bail!("the update carries no boot/config.txt for the Raspberry Pi firmware");
    };
    fsutil::write_atomic_fat(&esp.join(TRYBOOT), with_os_prefix(&config, slot).as_bytes())
}

/// Whether the firmware booted from tryboot.txt this time.
pub fn is_trial(root: &crate::Root) -> Result<bool> {
    Ok(
        fsutil::read_bytes_opt(&root.path(TRYBOOT_FLAG))?
            .is_some_and(|b| b.iter().any(|&x| x != 0)),
    )
}

/// Healthy trial boot: tryboot.txt becomes config.txt.
pub fn commit(esp: &Path) -> Result<()> {
    let t = esp.join(TRYBOOT);
    let text = fsutil::read(&t)?;
    fsutil::write_atomic_fat(&esp.join(CONFIG), text.as_bytes())?;
    forget_trial(esp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::format::{self, Expect, Header};
    use std::fs::File;

    #[test]
    fn os_prefix_goes_first_and_replaces_an_old_one() {
        let c = "[all]\nos_prefix=b/\nkernel=vmlinuz\n";
        let b = with_os_prefix(c, Slot::B);
        assert!(b.contains("\nos_prefix=b/\n[all]\nkernel=vmlinuz\n"), "{b}");
        assert_eq!(b.matches("os_prefix=").count(), 1);
        assert_eq!(with_os_prefix(c, Slot::A), "[all]\nkernel=vmlinuz\n");
    }

    /// The whole Pi flow on a directory standing in for the boot partition
    /// (what the firmware then reads is config.txt / tryboot.txt + os_prefix).
    #[test]
    fn install_then_commit_switches_config_txt() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("overlays")).unwrap();
        let files = [
            ("root.erofs", "ROOT"),
            ("boot/vmlinuz", "KERNEL2"),
            ("boot/initrd.img", "INITRD2"),
            ("boot/bcm2711-rpi-4-b.dtb", "DTB2"),
            ("boot/overlays/x.dtbo", "OVL2"),
            ("boot/start4.elf", "FW2"),
            ("boot/cmdline.txt", "root=PARTUUID=x edgeimg.slot=a"),
            (
                "boot/config.txt",
                "[all]\nkernel=vmlinuz\ninitramfs initrd.img followkernel\n",
            ),
        ];
        let mut payloads = Vec::new();
        for (i, (name, text)) in files.iter().enumerate() {
            let p = src.join(format!("f{i}"));
            std::fs::write(&p, text).unwrap();
            payloads.push((name.to_string(), p));
        }
        let refs: Vec<(String, &Path)> = payloads
            .iter()
            .map(|(n, p)| (n.clone(), p.as_path()))
            .collect();
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let upd = d.path().join("u.update");
        let header = Header {
            name: "t".into(),
            board: "rpi4".into(),
            arch: "arm64".into(),
            build_id: "b".into(),
            edgeimg_version: "0".into(),
            kernel_version: "6".into(),
            cmdline: "root=PARTUUID=x edgeimg.slot=a".into(),
            created: 0,
            key_id: String::new(),
            generation: 0,
            payloads: vec![],
        };
        format::write(&mut File::create(&upd).unwrap(), header, &refs, &key).unwrap();
        let v = format::verify_file(&upd, &key.verifying_key(), &Expect::default()).unwrap();

        let esp = d.path().join("boot");
        std::fs::create_dir_all(&esp).unwrap();
        std::fs::write(esp.join("config.txt"), "[all]\nkernel=vmlinuz\n# v1\n").unwrap();
        std::fs::write(esp.join("vmlinuz"), "KERNEL1").unwrap();
        std::fs::write(esp.join("start4.elf"), "FW1").unwrap();
        let mut f = File::open(&upd).unwrap();
        install(
            &mut f,
            &v,
            &esp,
            Slot::B,
            "root=PARTUUID=dev-03 edgeimg.slot=b",
        )
        .unwrap();
        let read = |p: &str| std::fs::read_to_string(esp.join(p)).unwrap();
        assert_eq!(read("b/vmlinuz"), "KERNEL2");
        assert_eq!(read("b/initrd.img"), "INITRD2");
        assert_eq!(read("b/bcm2711-rpi-4-b.dtb"), "DTB2");
        assert_eq!(read("b/overlays/x.dtbo"), "OVL2");
        assert_eq!(
            read("b/cmdline.txt"),
            "root=PARTUUID=dev-03 edgeimg.slot=b\n"
        );
        // Slot A and the shared firmware are untouched; config.txt still boots A.
        assert_eq!(read("vmlinuz"), "KERNEL1");
        assert_eq!(read("start4.elf"), "FW1");
        assert!(!esp.join("b/start4.elf").exists());
        assert!(read("config.txt").contains("# v1"));
        let t = read("tryboot.txt");
        assert!(
            t.starts_with("# edgeimg: slot B")
                && t.contains("\nos_prefix=b/\n[all]\nkernel=vmlinuz\n"),
            "{t}"
        );

        // A healthy trial boot makes it permanent.
        commit(&esp).unwrap();
        assert_eq!(read("config.txt"), t);
        assert!(!esp.join("tryboot.txt").exists());

        // The next update goes to slot A: top-level files, no os_prefix.
        install(
            &mut f,
            &v,
            &esp,
            Slot::A,
            "root=PARTUUID=dev-02 edgeimg.slot=a",
        )
        .unwrap();
        assert_eq!(read("vmlinuz"), "KERNEL2");
        assert_eq!(read("cmdline.txt"), "root=PARTUUID=dev-02 edgeimg.slot=a\n");
        assert!(!read("tryboot.txt").contains("os_prefix"));
        assert!(
            read("config.txt").contains("os_prefix=b/"),
            "B stays until A is proven"
        );
        forget_trial(&esp).unwrap();
        assert!(!esp.join("tryboot.txt").exists());
    }
}
