//! The CPU architectures edgeimg builds for, and every name each one goes
//! by, from one table: Debian's (`amd64`, what mmdebstrap, K3s bundles and
//! `image.json` say), Rust's and the kernel's (`x86_64`, what board files,
//! the embedded agents and update files say) and the ELF `e_machine` its
//! binaries carry.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An architecture edgeimg builds images for. Serialized by its Debian name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// Every architecture, in a fixed order.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// Debian's name: `amd64`, `arm64`.
    pub const fn debian(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Rust's (and the kernel's) name: `x86_64`, `aarch64`.
    pub const fn rust(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    /// The ELF `e_machine` of this architecture's binaries (`EM_X86_64`, `EM_AARCH64`).
    pub const fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => 62,
            Arch::Arm64 => 183,
        }
    }

    /// The suffix of this architecture's EFI binaries: systemd-boot`x64`.efi,
    /// BOOT`X64`.EFI on removable media.
    pub const fn efi_suffix(self) -> &'static str {
        match self {
            Arch::Amd64 => "x64",
            Arch::Arm64 => "aa64",
        }
    }

    /// The QEMU system emulator for this architecture.
    pub const fn qemu_system(self) -> &'static str {
        match self {
            Arch::Amd64 => "qemu-system-x86_64",
            Arch::Arm64 => "qemu-system-aarch64",
        }
    }

    /// The qemu-user binfmt_misc handler name that runs this architecture's
    /// binaries on another host (`/proc/sys/fs/binfmt_misc/<name>`).
    pub const fn qemu_user(self) -> &'static str {
        match self {
            Arch::Amd64 => "qemu-x86_64",
            Arch::Arm64 => "qemu-aarch64",
        }
    }

    /// The architecture of the running program.
    pub fn host() -> Option<Arch> {
        Arch::from_name(std::env::consts::ARCH)
    }

    /// The architecture with this Debian name only.
    pub fn from_debian(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.debian() == name)
    }

    /// The architecture with this Debian or Rust name.
    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.debian() == name || a.rust() == name)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.debian())
    }
}

/// A name that is no architecture edgeimg knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownArch(pub String);

impl fmt::Display for UnknownArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown architecture {:?} (amd64/x86_64 or arm64/aarch64)",
            self.0
        )
    }
}

impl std::error::Error for UnknownArch {}

impl FromStr for Arch {
    type Err = UnknownArch;
    /// `amd64`/`x86_64` and `arm64`/`aarch64`.
    fn from_str(s: &str) -> Result<Arch, UnknownArch> {
        Arch::from_name(s).ok_or_else(|| UnknownArch(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_arch() {
        for a in Arch::ALL {
            assert_eq!(a.debian().parse::<Arch>(), Ok(a));
            assert_eq!(a.rust().parse::<Arch>(), Ok(a));
            assert_eq!(Arch::from_debian(a.debian()), Some(a));
            assert_eq!(Arch::from_debian(a.rust()), None);
        }
    }

    #[test]
    fn elf_machines_are_the_abi_numbers() {
        assert_eq!(Arch::Amd64.elf_machine(), 62);
        assert_eq!(Arch::Arm64.elf_machine(), 183);
    }

    #[test]
    fn unknown_names_are_refused_by_name() {
        let e = "riscv64".parse::<Arch>().unwrap_err();
        assert!(e.to_string().contains("riscv64"), "{e}");
    }
}
