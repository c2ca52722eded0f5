//! Raspberry Pi 4 under QEMU's `raspi4b`: QEMU cannot run the Pi's GPU
//! firmware, so the kernel, initrd, command line and DTB come from the image's
//! own boot partition (read with mtools, never mounted) and are booted directly.
//! QEMU's model lacks some SoC devices, so a copy of the DTB is patched (the
//! nodes below say which and why); the card itself is never changed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cmd::{self, Cmd};

pub struct DirectBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub dtb: PathBuf,
    pub cmdline: String,
}

/// The DTB the Pi 4 firmware would pick.
pub const PI4_DTB: &str = "bcm2711-rpi-4-b.dtb";

/// /soc children QEMU's raspi4b does not model: each crashes the kernel early
/// unless disabled (measured on Debian's 6.1 and 6.12 kernels).
const DISABLE_SOC_NODES: &[&str] = &[
    "interrupt-controller@7ef00100",
    "i2c@7ef04500",
    "i2c@7ef09500",
    "clock@7ef00000",
    MINI_UART,
];
/// The mini UART (ttyS1, the console on real hardware): the kernel stalls with
/// it under QEMU 10's raspi4b, whose console is the PL011 (ttyAMA0) instead.
const MINI_UART: &str = "serial@7e215040";
const DISABLE_SOC_PREFIXES: &[&str] = &["hdmi@"];

/// Extracts the boot files from the boot partition of `disk` into `work`.
pub fn prepare(disk: &Path, work: &Path) -> Result<DirectBoot> {
    cmd::require(&[cmd::MCOPY, cmd::FDTPUT, cmd::FDTGET])?;
    let boot = edgeimg_contract::partition::spec(edgeimg_contract::partition::Role::Boot).number;
    let offset = crate::image_read::table::partition_of(disk, boot)?.offset;
    let get = |name: &str| -> Result<PathBuf> {
        let dest = work.join(name.replace('/', "_"));
        Cmd::new(cmd::MCOPY)
            .arg("-n")
            .arg("-i")
            .arg(format!("{}@@{offset}", disk.display()))
            .arg(format!("::/{name}"))
            .arg(&dest)
            .env("MTOOLS_SKIP_CHECK", "1")
            .run()
            .with_context(|| {
                format!(
                    "cannot read {name} from the boot partition of {}",
                    disk.display()
                )
            })?;
        Ok(dest)
    };
    let config = std::fs::read_to_string(get("config.txt")?)?;
    let (kernel_name, initrd_name) =
        parse_config_txt(&config).context("config.txt names no kernel= and initramfs")?;
    let cmdline = std::fs::read_to_string(get("cmdline.txt")?)?
        .trim()
        .to_string();
    let kernel = get(&kernel_name)?;
    let initrd = get(&initrd_name)?;
    let dtb = get(PI4_DTB)?;
    patch_dtb_for_qemu(&dtb)?;
    Ok(DirectBoot {
        kernel,
        initrd,
        dtb,
        cmdline,
    })
}

/// `kernel=` and the `initramfs FILE followkernel` line of a config.txt.
pub fn parse_config_txt(text: &str) -> Option<(String, String)> {
    let mut kernel = None;
    let mut initrd = None;
    for line in text.lines().map(str::trim) {
        if let Some(k) = line.strip_prefix("kernel=") {
            kernel = Some(k.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("initramfs ") {
            initrd = rest.split_whitespace().next().map(str::to_string);
        }
    }
    Some((kernel?, initrd?))
}

fn patch_dtb_for_qemu(dtb: &Path) -> Result<()> {
    let children = |node: &str| -> Vec<String> {
        Cmd::new(cmd::FDTGET)
            .arg("-l")
            .arg(dtb)
            .arg(node)
            .run()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let soc = children("/soc");
    for name in &soc {
        if DISABLE_SOC_NODES.contains(&name.as_str())
            || DISABLE_SOC_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            Cmd::new(cmd::FDTPUT)
                .args(["-t", "s"])
                .arg(dtb)
                .arg(format!("/soc/{name}"))
                .args(["status", "disabled"])
                .run()?;
        }
    }
    // emmc2's regulators are not modelled.
    for mmc in children("/emmc2bus") {
        for prop in ["vqmmc-supply", "vmmc-supply"] {
            let _ = Cmd::new(cmd::FDTPUT)
                .arg("-d")
                .arg(dtb)
                .arg(format!("/emmc2bus/{mmc}"))
                .arg(prop)
                .run();
        }
    }
    // QEMU puts the SD card on mmc@7e300000 (the Wi-Fi SDIO slot on real hardware).
    if soc.iter().any(|n| n == "mmc@7e300000") {
        for prop in ["mmc-pwrseq", "non-removable"] {
            let _ = Cmd::new(cmd::FDTPUT)
                .arg("-d")
                .arg(dtb)
                .arg("/soc/mmc@7e300000")
                .arg(prop)
                .run();
        }
        let _ = Cmd::new(cmd::FDTPUT)
            .arg("-r")
            .arg(dtb)
            .arg("/soc/mmc@7e300000/wifi@1")
            .run();
    } else {
        anyhow::bail!(
            "{} has no /soc/mmc@7e300000; cannot prepare it for QEMU's raspi4b",
            dtb.display()
        );
    }
    Ok(())
}

/// QEMU's SD model needs a power-of-two card: returns `disk` itself if it is
/// one, else a sparse padded copy in `work`.
pub fn pad_sd_card(disk: &Path, work: &Path) -> Result<PathBuf> {
    let len = std::fs::metadata(disk)
        .with_context(|| format!("cannot read {}", disk.display()))?
        .len();
    if len.is_power_of_two() {
        return Ok(disk.to_path_buf());
    }
    let padded = work.join("sd-card.img");
    crate::sparse::copy_sparse(disk, &padded)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&padded)?
        .set_len(len.next_power_of_two())?;
    tracing::info!(
        "QEMU's SD card must be a power of two: booting a padded copy {}",
        padded.display()
    );
    Ok(padded)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_kernel_and_initrd_from_config_txt() {
        let t = "[all]\narm_64bit=1\nkernel=vmlinuz\ninitramfs initrd.img followkernel\n";
        assert_eq!(
            super::parse_config_txt(t),
            Some(("vmlinuz".into(), "initrd.img".into()))
        );
        assert_eq!(super::parse_config_txt("arm_64bit=1\n"), None);
    }
}
