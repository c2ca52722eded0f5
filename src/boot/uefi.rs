//! UEFI boards: systemd-boot on the ESP (removable-media path, so no NVRAM
//! entry is needed), one loader entry per root slot.

use std::path::Path;

use anyhow::{Context, Result};

use crate::fs::vfat::BootFiles;
use crate::stage::KernelFiles;
use crate::stage::in_root::InRoot;
use edgeimg_contract::arch::Arch;
use edgeimg_contract::partition::{Slot, boot_files};

/// systemd-boot's EFI binary name suffix and the removable-media file name.
fn efi_names(rust_arch: &str) -> (&'static str, String) {
    let suffix = Arch::from_name(rust_arch)
        .unwrap_or(Arch::Amd64)
        .efi_suffix();
    (suffix, format!("BOOT{}.EFI", suffix.to_ascii_uppercase()))
}

/// The boot partition's files for slot A, as [`boot_files`] names them.
pub fn planned_files(rust_arch: &str) -> Vec<String> {
    let (suffix, removable) = efi_names(rust_arch);
    let mut v = vec![
        format!("EFI/BOOT/{removable}"),
        format!("EFI/systemd/systemd-boot{suffix}.efi"),
        LOADER_CONF.to_string(),
        entry_a(),
        boot_files::kernel(Slot::A),
        boot_files::initrd(Slot::A),
        crate::boot::NODE_EXAMPLE_PATH.to_string(),
    ];
    v.sort();
    v
}

const LOADER_CONF: &str = "loader/loader.conf";

/// Slot A's entry: the first one, numbered 1 (updates number theirs higher).
fn entry_a() -> String {
    format!(
        "{}/{}",
        boot_files::ENTRY_DIR,
        boot_files::entry_name(1, Slot::A)
    )
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
    // Read from the tree, never through a link pointing at the build host.
    let rel = format!("usr/lib/systemd/boot/efi/systemd-boot{suffix}.efi");
    let Some(sdboot) = InRoot::open(tree)?.host_file(Path::new(&rel))? else {
        anyhow::bail!(
            "{} is missing from the base; the board must include the systemd-boot-efi package",
            tree.join(rel).display()
        );
    };
    let mut files = BootFiles::default();
    files.add_file(&format!("EFI/BOOT/{removable}"), sdboot.clone());
    files.add_file(&format!("EFI/systemd/systemd-boot{suffix}.efi"), sdboot);
    files.add_bytes(
        LOADER_CONF,
        "default edgeimg-*\ntimeout 0\neditor no\nconsole-mode keep\n",
    );
    let (kernel_a, initrd_a) = (boot_files::kernel(Slot::A), boot_files::initrd(Slot::A));
    files.add_bytes(
        &entry_a(),
        format!(
            "title {title} (slot A)\nversion {}\nlinux /{kernel_a}\ninitrd /{initrd_a}\noptions {cmdline}\n",
            kernel.version
        ),
    );
    files.add_file(&kernel_a, kernel.vmlinuz.clone());
    files.add_file(&initrd_a, kernel.initrd.clone());
    files.add_bytes(super::NODE_EXAMPLE_PATH, super::NODE_EXAMPLE);
    std::fs::metadata(&kernel.vmlinuz).context("kernel missing")?;
    Ok(files)
}
