//! Board descriptions: `boards/<name>.toml`, embedded in the binary so an
//! installed `edgeimg` needs no data files.

use serde::Deserialize;

use super::size::Bytes;
use super::ConfigError;

/// Board files shipped with edgeimg, by name.
pub const EMBEDDED: &[(&str, &str)] = &[("x86_64", include_str!("../../boards/x86_64.toml"))];

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
}

impl Firmware {
    pub fn describe(self) -> &'static str {
        match self {
            Firmware::Uefi => "UEFI -> systemd-boot",
        }
    }
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
    pub firmware_code: String,
    pub firmware_vars: String,
    pub firmware_package: String,
    pub disk_interface: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    pub description: String,
    /// Debian architecture name (amd64, arm64).
    pub arch: String,
    pub partition_table: PartitionTable,
    pub firmware: Firmware,
    pub consoles: Vec<String>,
    pub kernel_package: String,
    #[serde(default)]
    pub packages: Vec<String>,
    pub initramfs_modules: Vec<String>,
    pub partitions: PartitionSizes,
    pub qemu: QemuSpec,
}

impl Board {
    /// The architecture name used for Rust targets and file names.
    pub fn rust_arch(&self) -> &'static str {
        match self.arch.as_str() {
            "arm64" => "aarch64",
            _ => "x86_64",
        }
    }
}

pub fn names() -> Vec<&'static str> {
    EMBEDDED.iter().map(|(n, _)| *n).collect()
}

/// Loads an embedded board by name.
pub fn load(name: &str) -> Result<Board, ConfigError> {
    let (_, text) = EMBEDDED
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| ConfigError::UnknownBoard { name: name.to_string(), known: names().join(", "), at: None })?;
    toml::from_str(text).map_err(|e| ConfigError::Toml { file: format!("boards/{name}.toml (embedded)"), message: e.to_string() })
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
