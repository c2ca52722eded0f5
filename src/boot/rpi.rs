//! Raspberry Pi boards: the boot partition as the Pi firmware expects it —
//! start4.elf/fixup4*.dat from Debian's raspi-firmware, the board family's DTBs
//! from the kernel package, kernel and initrd, config.txt and cmdline.txt.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::board::RpiSpec;
use crate::fs::vfat::BootFiles;
use crate::stage::KernelFiles;
use crate::stage::in_root::InRoot;

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
    // Every file is taken from the tree, never through a link pointing at
    // the build host (`InRoot::host_file` refuses one).
    let root = InRoot::open(tree)?;
    let fw_rel = Path::new(FIRMWARE_DIR);
    let fw = root.host_dir(fw_rel)?.with_context(|| format!("{} is missing: the board needs the raspi-firmware package (component non-free-firmware)", tree.join(fw_rel).display()))?;
    let mut found_start = false;
    for e in std::fs::read_dir(&fw).with_context(|| format!("cannot read {}", fw.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        // Pi 4 family firmware only (start4*.elf, fixup4*.dat); bootcode.bin is in the Pi 4's EEPROM.
        if crate::boot::matches(FIRMWARE_START, &name)
            || crate::boot::matches(FIRMWARE_FIXUP, &name)
        {
            if let Some(p) = root.host_file(&fw_rel.join(&name))? {
                found_start |= name == "start4.elf";
                files.add_file(&name, p);
            }
        }
    }
    anyhow::ensure!(found_start, "start4.elf not found in {}", fw.display());
    let dtb_rel = PathBuf::from(format!("usr/lib/linux-image-{}/broadcom", kernel.version));
    for dtb in &rpi.dtbs {
        let p = root.host_file(&dtb_rel.join(dtb))?.with_context(|| {
            format!(
                "device tree {dtb} is not in the kernel package ({})",
                tree.join(&dtb_rel).display()
            )
        })?;
        files.add_file(dtb, p);
    }
    // Overlays (for dtoverlay= lines) where the firmware package ships them.
    let overlays_rel = fw_rel.join("overlays");
    if let Some(overlays) = root.host_dir(&overlays_rel)? {
        for e in std::fs::read_dir(&overlays)?.flatten() {
            if let Some(p) = root.host_file(&overlays_rel.join(e.file_name()))? {
                files.add_file(&format!("overlays/{}", e.file_name().to_string_lossy()), p);
            }
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
