//! Board descriptions: `boards/<name>.toml`, embedded in the binary so an
//! installed `edgeimg` needs no data files.

use serde::Deserialize;

use super::ConfigError;
use super::size::Bytes;
use edgeimg_contract::arch::Arch;

/// Board files shipped with edgeimg, by name.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("x86_64", include_str!("../../boards/x86_64.toml")),
    ("arm64", include_str!("../../boards/arm64.toml")),
    ("rpi4", include_str!("../../boards/rpi4.toml")),
    ("pi400", include_str!("../../boards/pi400.toml")),
    ("cm4", include_str!("../../boards/cm4.toml")),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionTable {
    Gpt,
    Mbr,
}

/// How the board's firmware finds the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    /// UEFI firmware loading systemd-boot from the ESP's removable-media path.
    Uefi,
    /// The Raspberry Pi's GPU firmware reading config.txt from the boot partition.
    Rpi,
}

impl Firmware {
    pub fn describe(self) -> &'static str {
        match self {
            Firmware::Uefi => "UEFI -> systemd-boot",
            Firmware::Rpi => "Pi firmware (config.txt)",
        }
    }
}

/// How QEMU boots the board's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QemuBoot {
    /// UEFI firmware in pflash (OVMF, AAVMF) boots the disk as a real machine would.
    Uefi,
    /// Kernel, initrd, DTB and command line taken from the image's boot
    /// partition and passed to QEMU (for firmware QEMU cannot run).
    DirectKernel,
}

/// Raspberry Pi boot partition contents.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RpiSpec {
    /// Device trees copied from the kernel package.
    pub dtbs: Vec<String>,
    /// config.txt template (minijinja; variables `kernel`, `initrd`, `image`).
    pub config_txt: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSizes {
    /// The FAT boot partition (ESP): bootloader, kernel and initrd of both slots.
    pub boot: Bytes,
    /// The data partition as written into the image; first boot grows it.
    pub data: Bytes,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct QemuSpec {
    pub binary: String,
    pub package: String,
    pub machine: String,
    pub cpu: String,
    pub boot: QemuBoot,
    /// UEFI firmware code and variable store (boot = "uefi").
    #[serde(default)]
    pub firmware_code: Option<String>,
    #[serde(default)]
    pub firmware_vars: Option<String>,
    #[serde(default)]
    pub firmware_package: Option<String>,
    /// The firmware's Secure Boot build; it takes the same `firmware_vars`
    /// template (setup mode: no PK). Used by the Secure Boot VM tests and
    /// `edgeimg run --secure-boot-vars`.
    #[serde(default)]
    pub firmware_code_secure_boot: Option<String>,
    /// That build keeps its variable store writable only from SMM (OVMF's
    /// `.secboot` build: a guest cannot rewrite the keys behind the
    /// firmware's back), so the machine needs SMM and a secure flash.
    /// AAVMF has no SMM: its variables are authenticated by the firmware's
    /// runtime services, but the flash itself is not shielded from the guest.
    #[serde(default)]
    pub secure_boot_smm: bool,
    /// "virtio" (a virtio-blk disk) or "sd" (the machine's SD card slot).
    pub disk_interface: String,
    /// Guest memory when the machine fixes it (raspi4b has exactly 2 GiB).
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Which of the machine's serial ports is the console (QEMU's -serial order).
    #[serde(default)]
    pub serial_port: u32,
    /// Under TCG, run all vCPUs on one host thread (`-accel tcg,thread=single`).
    /// x86 Linux patches its own code at boot through int3 breakpoints
    /// (text_poke_bp); with one host thread per vCPU a vCPU can run a
    /// translation of the code being patched and hit the breakpoint as a
    /// fatal exception (seen: "Oops: int3" in hrtimer_start_range_ns and a
    /// kernel panic 1.5 s into a q35 boot).
    #[serde(default)]
    pub tcg_single_thread: bool,
}

impl QemuSpec {
    /// Whether the machine can take a virtio-serial device: QEMU's raspi
    /// machines have neither PCI nor virtio-mmio slots.
    pub fn has_virtio_serial(&self) -> bool {
        !self.machine.starts_with("raspi")
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    pub description: String,
    /// The CPU architecture (by its Debian name in board files: amd64, arm64).
    pub arch: Arch,
    pub partition_table: PartitionTable,
    pub firmware: Firmware,
    pub consoles: Vec<String>,
    pub kernel_package: String,
    #[serde(default)]
    pub packages: Vec<String>,
    pub initramfs_modules: Vec<String>,
    /// Kernel modules the root keeps (names, aliases, or paths/globs under the
    /// module tree), with their dependency closure. Unset: every module stays.
    #[serde(default)]
    pub modules: Option<Vec<String>>,
    /// Firmware files the root keeps (paths/globs under /usr/lib/firmware).
    /// Unset: all of it stays; an empty list removes it all.
    #[serde(default)]
    pub firmware_files: Option<Vec<String>>,
    pub partitions: PartitionSizes,
    #[serde(default)]
    pub rpi: Option<RpiSpec>,
    pub qemu: QemuSpec,
}

impl Board {
    /// The architecture name used for Rust targets and file names.
    pub fn rust_arch(&self) -> &'static str {
        self.arch.rust()
    }

    /// Checks the combinations serde cannot (firmware vs. table vs. QEMU boot).
    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError::Toml {
            file: file.to_string(),
            message,
        };
        match self.firmware {
            Firmware::Rpi if self.rpi.is_none() => {
                return Err(bad("firmware = \"rpi\" needs an [rpi] section".into()));
            }
            Firmware::Uefi
                if self.qemu.boot == QemuBoot::Uefi
                    && (self.qemu.firmware_code.is_none() || self.qemu.firmware_vars.is_none()) =>
            {
                return Err(bad(
                    "qemu.boot = \"uefi\" needs qemu.firmware_code and qemu.firmware_vars".into(),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

pub fn names() -> Vec<&'static str> {
    EMBEDDED.iter().map(|(n, _)| *n).collect()
}

/// Loads an embedded board by name.
pub fn load(name: &str) -> Result<Board, ConfigError> {
    let (_, text) =
        EMBEDDED
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ConfigError::UnknownBoard {
                name: name.to_string(),
                known: names().join(", "),
                at: None,
            })?;
    let file = format!("boards/{name}.toml (embedded)");
    let bad = |text: &str, e: toml::de::Error| ConfigError::TomlSyntax {
        file: file.clone(),
        detail: edgeimg_contract::tomlerr::describe(text, &e),
    };
    let mut table: toml::Table = toml::from_str(text).map_err(|e| bad(text, e))?;
    // `inherits = "other"`: a board that differs from another only in a few keys
    // (Pi 400 and CM4 from rpi4) names it and overrides top-level keys.
    if let Some(parent) = table.remove("inherits") {
        let parent = parent.as_str().ok_or_else(|| ConfigError::Toml {
            file: file.clone(),
            message: "`inherits` must be a board name".into(),
        })?;
        let (_, parent_text) = EMBEDDED
            .iter()
            .find(|(n, _)| *n == parent && *n != name)
            .ok_or_else(|| ConfigError::UnknownBoard {
                name: parent.to_string(),
                known: names().join(", "),
                at: Some(format!("{file}: key `inherits`")),
            })?;
        let mut merged: toml::Table =
            toml::from_str(parent_text).map_err(|e| bad(parent_text, e))?;
        merged.extend(table);
        table = merged;
    }
    let board: Board = table.try_into().map_err(|e| bad(text, e))?;
    board.validate(&file)?;
    Ok(board)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_embedded_board_parses() {
        for name in super::names() {
            let b = super::load(name).unwrap();
            assert_eq!(b.name, name);
        }
    }
}
