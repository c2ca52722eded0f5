//! Raspberry Pi boards: the boot partition as the Pi firmware expects it —
//! start4.elf/fixup4*.dat from Debian's raspi-firmware, the board family's DTBs
//! from the kernel package, kernel and initrd, config.txt and cmdline.txt.

use std::path::Path;

use anyhow::{Context, Result};

use crate::config::board::RpiSpec;
use crate::fs::vfat::BootFiles;
use crate::stage::KernelFiles;

/// Where Debian's raspi-firmware package keeps the firmware in the root.
const FIRMWARE_DIR: &str = "usr/lib/raspi-firmware";

/// The boot partition's files, as [`boot_files`] names them. The firmware
/// files and overlays are whatever Debian's raspi-firmware ships: patterns
/// (`*`) here.
pub fn planned_files(rpi: &RpiSpec) -> Vec<String> {
    let mut v = vec![FIRMWARE_START.to_string(), FIRMWARE_FIXUP.to_string()];
    v.extend(rpi.dtbs.iter().cloned());
    v.extend(
        [
            "overlays/*",
            "vmlinuz",
            "initrd.img",
            "config.txt",
            "cmdline.txt",
            crate::boot::NODE_EXAMPLE_PATH,
        ]
        .map(String::from),
    );
    v
}

/// The Pi 4 family's firmware (bootcode.bin is in the Pi 4's EEPROM).
const FIRMWARE_START: &str = "start4*.elf";
const FIRMWARE_FIXUP: &str = "fixup4*.dat";

pub fn boot_files(
    tree: &Path,
    rpi: &RpiSpec,
    kernel: &KernelFiles,
    cmdline: &str,
    image: &str,
) -> Result<BootFiles> {
    let mut files = BootFiles::default();
    let fw = tree.join(FIRMWARE_DIR);
    let mut found_start = false;
    for e in std::fs::read_dir(&fw).with_context(|| format!("{} is missing: the board needs the raspi-firmware package (component non-free-firmware)", fw.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        // Pi 4 family firmware only (start4*.elf, fixup4*.dat); bootcode.bin is in the Pi 4's EEPROM.
        if crate::boot::matches(FIRMWARE_START, &name) || crate::boot::matches(FIRMWARE_FIXUP, &name) {
            found_start |= name == "start4.elf";
            files.add_file(&name, e.path());
        }
    }
    anyhow::ensure!(found_start, "start4.elf not found in {}", fw.display());
    let dtb_dir = tree.join(format!("usr/lib/linux-image-{}/broadcom", kernel.version));
    for dtb in &rpi.dtbs {
        let p = dtb_dir.join(dtb);
        anyhow::ensure!(
            p.exists(),
            "device tree {dtb} is not in the kernel package ({})",
            dtb_dir.display()
        );
        files.add_file(dtb, p);
    }
    // Overlays (for dtoverlay= lines) where the firmware package ships them.
    let overlays = fw.join("overlays");
    if overlays.is_dir() {
        for e in std::fs::read_dir(&overlays)?.flatten() {
            files.add_file(
                &format!("overlays/{}", e.file_name().to_string_lossy()),
                e.path(),
            );
        }
    }
    files.add_file("vmlinuz", kernel.vmlinuz.clone());
    files.add_file("initrd.img", kernel.initrd.clone());
    files.add_bytes("config.txt", render_config(&rpi.config_txt, image)?);
    files.add_bytes("cmdline.txt", format!("{cmdline}\n"));
    files.add_bytes(super::NODE_EXAMPLE_PATH, super::NODE_EXAMPLE);
    Ok(files)
}

pub fn render_config(template: &str, image: &str) -> Result<String> {
    let env = minijinja::Environment::new();
    let text = env
        .render_str(
            template,
            minijinja::context! { kernel => "vmlinuz", initrd => "initrd.img", image => image },
        )
        .map_err(|e| anyhow::anyhow!("the board's config.txt template: {e:#}"))?;
    Ok(format!("{}\n", text.trim()))
}
