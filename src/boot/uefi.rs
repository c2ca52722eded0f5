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

/// The boot partition's files for slot A, as [`boot_files`] names them.
pub fn planned_files(rust_arch: &str) -> Vec<String> {
    let (suffix, removable) = efi_names(rust_arch);
    let mut v = vec![
        format!("EFI/BOOT/{removable}"),
        format!("EFI/systemd/systemd-boot{suffix}.efi"),
        LOADER_CONF.to_string(),
        ENTRY_A.to_string(),
        KERNEL_A.to_string(),
        INITRD_A.to_string(),
        crate::boot::NODE_EXAMPLE_PATH.to_string(),
    ];
    v.sort();
    v
}

const LOADER_CONF: &str = "loader/loader.conf";
const ENTRY_A: &str = "loader/entries/edgeimg-1-a.conf";
const KERNEL_A: &str = "edgeimg/a/vmlinuz";
const INITRD_A: &str = "edgeimg/a/initrd.img";

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
        LOADER_CONF,
        "default edgeimg-*\ntimeout 0\neditor no\nconsole-mode keep\n",
    );
    files.add_bytes(
        ENTRY_A,
        format!(
            "title {title} (slot A)\nversion {}\nlinux /{KERNEL_A}\ninitrd /{INITRD_A}\noptions {cmdline}\n",
            kernel.version
        ),
    );
    files.add_file(KERNEL_A, kernel.vmlinuz.clone());
    files.add_file(INITRD_A, kernel.initrd.clone());
    files.add_bytes(super::NODE_EXAMPLE_PATH, super::NODE_EXAMPLE);
    std::fs::metadata(&kernel.vmlinuz).context("kernel missing")?;
    Ok(files)
}
