//! UEFI boards: systemd-boot on the ESP (removable-media path, so no NVRAM
//! entry is needed), one loader entry per root slot.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::SecureBoot;
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
pub fn planned_files(rust_arch: &str, secure_boot: Option<&SecureBoot>) -> Vec<String> {
    let (suffix, removable) = efi_names(rust_arch);
    let mut v = vec![
        format!("EFI/BOOT/{removable}"),
        format!("EFI/systemd/systemd-boot{suffix}.efi"),
        LOADER_CONF.to_string(),
        crate::boot::NODE_EXAMPLE_PATH.to_string(),
    ];
    if secure_boot.is_some() {
        v.push(uki_a());
        v.extend(AUTH.iter().map(|r| format!("{KEYS_DIR}/{r}.auth")));
    } else {
        v.extend([
            entry_a(),
            boot_files::kernel(Slot::A),
            boot_files::initrd(Slot::A),
        ]);
    }
    v.sort();
    v
}

/// Slot A's signed Unified Kernel Image: a type-2 entry systemd-boot finds
/// by itself, named as the type-1 entries are so loader.conf's default
/// pattern and the update's ordering work the same.
fn uki_a() -> String {
    format!(
        "{}/{}",
        boot_files::UKI_DIR,
        boot_files::uki_name(1, Slot::A)
    )
}
/// The keys systemd-boot enrolls by itself. It offers every directory under
/// `loader/keys` as a menu entry, but enrolls without being asked (with
/// `secure-boot-enroll if-safe` or `force`, in setup mode) only from the one
/// named `auto`: under any other name the keys wait for someone to pick the
/// entry (systemd-boot 257; docs/trusted-boot.md).
pub const KEYS_DIR: &str = "loader/keys/auto";
/// The enrollment files, in the names systemd-boot reads.
const AUTH: [&str; 3] = ["PK", "KEK", "db"];

const LOADER_CONF: &str = "loader/loader.conf";

/// Slot A's entry: the first one, numbered 1 (updates number theirs higher).
fn entry_a() -> String {
    format!(
        "{}/{}",
        boot_files::ENTRY_DIR,
        boot_files::entry_name(1, Slot::A)
    )
}

/// `slot`'s Unified Kernel Image with its command line `cmdline`, signed with
/// the db key, made in `work` as `uki-<slot>.efi`. Slot A's goes on the boot
/// partition; a Secure Boot update carries both slots' (the device picks the
/// one for the slot it writes, and edits nothing in it).
pub fn signed_uki(
    tree: &Path,
    rust_arch: &str,
    kernel: &KernelFiles,
    cmdline: &str,
    sb: &SecureBoot,
    work: &Path,
    slot: Slot,
) -> Result<PathBuf> {
    let uki = work.join(format!("uki-{slot}.efi"));
    let unsigned = work.join(format!("uki-{slot}.unsigned.efi"));
    crate::secure_boot::uki::assemble(
        &crate::secure_boot::uki::UkiInputs {
            tree,
            rust_arch,
            kernel: &kernel.vmlinuz,
            initrd: &kernel.initrd,
            cmdline,
        },
        work,
        &unsigned,
    )?;
    crate::secure_boot::sign::sign(&sb.keys, &unsigned, &uki)?;
    Ok(uki)
}

/// Boot files for slot A (slot B's entry is written by updates). With
/// Secure Boot, systemd-boot is signed and slot A boots a signed UKI holding
/// its command line; `work` holds the UKI and the signed binaries.
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
    secure_boot: Option<&SecureBoot>,
    work: &Path,
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
    let mut loader_conf =
        "default edgeimg-*\ntimeout 0\neditor no\nconsole-mode keep\n".to_string();
    let loader = match secure_boot {
        None => sdboot,
        Some(sb) => {
            let signed = work.join(format!("systemd-boot{suffix}.signed.efi"));
            crate::secure_boot::sign::sign(&sb.keys, &sdboot, &signed)?;
            signed
        }
    };
    files.add_file(&format!("EFI/BOOT/{removable}"), loader.clone());
    files.add_file(&format!("EFI/systemd/systemd-boot{suffix}.efi"), loader);
    match secure_boot {
        None => {
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
        }
        Some(sb) => {
            let uki = signed_uki(tree, rust_arch, kernel, cmdline, sb, work, Slot::A)?;
            files.add_file(&uki_a(), uki);
            // Public lists only: the private keys never enter the image.
            for r in AUTH {
                files.add_file(
                    &format!("{KEYS_DIR}/{r}.auth"),
                    sb.keys.file(&format!("{r}.auth")),
                );
            }
            loader_conf.push_str(&format!("secure-boot-enroll {}\n", sb.enroll.as_str()));
        }
    }
    files.add_bytes(LOADER_CONF, loader_conf);
    files.add_bytes(super::NODE_EXAMPLE_PATH, super::NODE_EXAMPLE);
    std::fs::metadata(&kernel.vmlinuz).context("kernel missing")?;
    Ok(files)
}
