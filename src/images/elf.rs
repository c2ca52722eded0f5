//! The `k3s` binary's architecture, from its ELF header: a wrong-arch binary is
//! a clear error at build time, not an `Exec format error` on the device.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::ImageError;
use crate::io_error::io_err;
use edgeimg_contract::arch::Arch;

/// What an ELF header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub path: PathBuf,
    /// 32 or 64.
    pub class_bits: u8,
    pub little_endian: bool,
    /// `e_machine` (62 x86-64, 183 AArch64, ...).
    pub machine: u16,
    /// Human name of `e_machine` (`x86-64`, `aarch64`, ...).
    pub machine_name: &'static str,
    /// The Debian architecture this header matches, if edgeimg knows it.
    pub debian_arch: Option<&'static str>,
    /// `e_type` 2 (executable) or 3 (shared object: PIE or static-pie).
    pub e_type: u16,
}

const EM_386: u16 = 3;
const EM_ARM: u16 = 40;
const EM_X86_64: u16 = Arch::Amd64.elf_machine();
const EM_AARCH64: u16 = Arch::Arm64.elf_machine();
const EM_RISCV: u16 = 243;

fn machine_name(m: u16) -> &'static str {
    match m {
        EM_386 => "i386",
        8 => "mips",
        20 => "powerpc",
        21 => "ppc64",
        22 => "s390",
        EM_ARM => "arm (32-bit)",
        EM_X86_64 => "x86-64",
        EM_AARCH64 => "aarch64",
        EM_RISCV => "riscv",
        258 => "loongarch",
        _ => "an unknown machine",
    }
}

fn debian_arch_of(machine: u16, bits: u8, le: bool) -> Option<&'static str> {
    match (machine, bits, le) {
        (EM_X86_64, 64, true) => Some("amd64"),
        (EM_AARCH64, 64, true) => Some("arm64"),
        (EM_ARM, 32, true) => Some("armhf"),
        (EM_386, 32, true) => Some("i386"),
        (EM_RISCV, 64, true) => Some("riscv64"),
        _ => None,
    }
}

fn describe_needed(debian_arch: &str) -> String {
    match debian_arch {
        "amd64" => "amd64 (x86-64)".into(),
        "arm64" => "arm64 (aarch64)".into(),
        other => other.into(),
    }
}

/// Whether the file starts with `#!` (a script; edgeimg's labelled stand-in
/// bundle ships a shell script as `k3s`: the caller decides whether that is allowed).
pub fn is_script(path: &Path) -> bool {
    let mut b = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
        && &b == b"#!"
}

/// Read `path`'s ELF header and check it is a 64-bit little-endian executable
/// for `debian_arch` (`amd64`: e_machine 62; `arm64`: e_machine 183).
pub fn check_elf_arch(path: &Path, debian_arch: &str) -> Result<ElfInfo, ImageError> {
    let expected = match Arch::from_debian(debian_arch) {
        Some(a) => a.elf_machine(),
        None => return Err(ImageError::UnknownArch(debian_arch.to_string())),
    };
    let info = read_elf(path)?;
    if info.machine != expected || info.class_bits != 64 || !info.little_endian {
        let mut found = info.machine_name.to_string();
        if let Some(a) = info.debian_arch {
            found.push_str(&format!(" (Debian arch {a})"));
        } else {
            found.push_str(&format!(
                " ({}-bit {}-endian, e_machine {})",
                info.class_bits,
                if info.little_endian { "little" } else { "big" },
                info.machine
            ));
        }
        return Err(ImageError::ElfWrongArch {
            path: path.to_path_buf(),
            found,
            needed: describe_needed(debian_arch),
        });
    }
    Ok(info)
}

/// Parse the ELF identification and `e_type`/`e_machine` of `path`.
pub fn read_elf(path: &Path) -> Result<ElfInfo, ImageError> {
    let not_elf = |reason: &str| ImageError::NotElf {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut f = std::fs::File::open(path).map_err(io_err("cannot read", path))?;
    let mut h = [0u8; 20];
    let mut n = 0;
    while n < h.len() {
        match f.read(&mut h[n..]).map_err(io_err("cannot read", path))? {
            0 => break,
            k => n += k,
        }
    }
    if n >= 2 && &h[..2] == b"#!" {
        return Err(not_elf("it is a script starting with #!"));
    }
    if n < 4 || &h[..4] != b"\x7fELF" {
        return Err(not_elf(if n == 0 {
            "the file is empty"
        } else {
            "no ELF magic at the start"
        }));
    }
    if n < 20 {
        return Err(not_elf("the ELF header is truncated"));
    }
    let class_bits = match h[4] {
        1 => 32,
        2 => 64,
        _ => return Err(not_elf("invalid ELF class")),
    };
    let little_endian = match h[5] {
        1 => true,
        2 => false,
        _ => return Err(not_elf("invalid ELF data encoding")),
    };
    let u16_at = |i: usize| {
        if little_endian {
            u16::from_le_bytes([h[i], h[i + 1]])
        } else {
            u16::from_be_bytes([h[i], h[i + 1]])
        }
    };
    let e_type = u16_at(16);
    let machine = u16_at(18);
    if e_type != 2 && e_type != 3 {
        return Err(not_elf(&format!(
            "ELF file of type {e_type}, not an executable (relocatable object or core dump?)"
        )));
    }
    Ok(ElfInfo {
        path: path.to_path_buf(),
        class_bits,
        little_endian,
        machine,
        machine_name: machine_name(machine),
        debian_arch: debian_arch_of(machine, class_bits, little_endian),
        e_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, data: u8, e_type: u16, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = data;
        h[6] = 1;
        h[16..18].copy_from_slice(&e_type.to_le_bytes());
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn synthetic_headers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k3s");
        std::fs::write(&p, header(2, 1, 2, EM_AARCH64)).unwrap();
        let i = check_elf_arch(&p, "arm64").unwrap();
        assert_eq!(i.debian_arch, Some("arm64"));
        let e = check_elf_arch(&p, "amd64").unwrap_err().to_string();
        assert!(
            e.contains("aarch64") && e.contains("amd64") && e.contains("k3s"),
            "{e}"
        );

        std::fs::write(&p, header(1, 1, 2, EM_ARM)).unwrap();
        let e = check_elf_arch(&p, "arm64").unwrap_err().to_string();
        assert!(e.contains("arm (32-bit)") && e.contains("armhf"), "{e}");

        std::fs::write(&p, header(2, 1, 1, EM_X86_64)).unwrap();
        assert!(matches!(
            check_elf_arch(&p, "amd64"),
            Err(ImageError::NotElf { .. })
        ));

        std::fs::write(&p, b"#!/bin/sh\necho stand-in\n").unwrap();
        assert!(is_script(&p));
        let e = check_elf_arch(&p, "amd64").unwrap_err().to_string();
        assert!(
            e.contains("not an ELF executable") && e.contains("script"),
            "{e}"
        );

        std::fs::write(&p, b"").unwrap();
        assert!(!is_script(&p));
        assert!(matches!(
            check_elf_arch(&p, "amd64"),
            Err(ImageError::NotElf { .. })
        ));
        assert!(matches!(
            check_elf_arch(&p, "s390x"),
            Err(ImageError::UnknownArch(_))
        ));
    }
}
