//! UEFI boards: systemd-boot on the ESP (removable-media path, so no NVRAM
//! entry is needed), one loader entry per root slot.

use std::path::Path;

use anyhow::{Context, Result};

use crate::fs::vfat::BootFiles;
use crate::stage::KernelFiles;

/// systemd-boot's EFI binary name suffix and the removable-media file name.
fn efi_names(rust_arch: &str) -> (&'static str, &'static str) {
    match rust_arch {
        "aarch64" => ("aa64", "BOOTAA64.EFI"),
        _ => ("x64", "BOOTX64.EFI"),
    }
}

/// Boot files for slot A (slot B's entry is written by updates).
///
/// Entries are named `edgeimg-<generation>-<slot>.conf` and loader.conf's
/// default is the pattern `edgeimg-*`: systemd-boot picks the first match in
/// its order (newest id first, entries with no boot tries left last), which
/// is what makes an update's trial boot fall back by itself (docs/updates.md).
pub fn boot_files(
    tree: &Path,
    rust_arch: &str,
    kernel: &KernelFiles,
    cmdline: &str,
    title: &str,
) -> Result<BootFiles> {
    let (suffix, removable) = efi_names(rust_arch);
    let sdboot = tree.join(format!("usr/lib/systemd/boot/efi/systemd-boot{suffix}.efi"));
    if !sdboot.exists() {
        anyhow::bail!(
            "{} is missing from the base; the board must include the systemd-boot-efi package",
            sdboot.display()
        );
    }
    let mut files = BootFiles::default();
    files.add_file(&format!("EFI/BOOT/{removable}"), sdboot.clone());
    files.add_file(&format!("EFI/systemd/systemd-boot{suffix}.efi"), sdboot);
    files.add_bytes(
        "loader/loader.conf",
        "default edgeimg-*\ntimeout 0\neditor no\nconsole-mode keep\n",
    );
    files.add_bytes(
        "loader/entries/edgeimg-1-a.conf",
        format!(
            "title {title} (slot A)\nversion {}\nlinux /edgeimg/a/vmlinuz\ninitrd /edgeimg/a/initrd.img\noptions {cmdline}\n",
            kernel.version
        ),
    );
    files.add_file("edgeimg/a/vmlinuz", kernel.vmlinuz.clone());
    files.add_file("edgeimg/a/initrd.img", kernel.initrd.clone());
    files.add_bytes("edgeimg/node.toml.example", super::NODE_EXAMPLE);
    std::fs::metadata(&kernel.vmlinuz).context("kernel missing")?;
    Ok(files)
}
