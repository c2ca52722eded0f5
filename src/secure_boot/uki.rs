//! Unified Kernel Images: systemd-stub with the kernel, initrd, command line
//! and os-release added as PE sections, so one signature covers all of them
//! (systemd-stub ignores a command line passed by the loader when Secure Boot
//! is on). Bookworm has no ukify, so this does what ukify does with objcopy:
//! each new section is placed after the stub's last one, aligned to the
//! stub's section alignment, at a virtual address objcopy is told outright
//! (objcopy would otherwise stack them all at address 0).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, OBJCOPY, OBJCOPY_AARCH64};
use crate::stage::in_root::InRoot;
use edgeimg_contract::arch::Arch;

/// What goes into one UKI.
pub struct UkiInputs<'a> {
    /// The root whose systemd-stub is used (the image's own, so the stub
    /// matches the systemd that boots).
    pub tree: &'a Path,
    pub rust_arch: &'a str,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub cmdline: &'a str,
}

/// The stub's path inside a root (package systemd-boot-efi).
pub fn stub_path(rust_arch: &str) -> String {
    let suffix = Arch::from_name(rust_arch)
        .unwrap_or(Arch::Amd64)
        .efi_suffix();
    format!("usr/lib/systemd/boot/efi/linux{suffix}.efi.stub")
}

/// The objcopy that reads the architecture's PE files.
fn objcopy(rust_arch: &str) -> Cmd {
    Cmd::new(if rust_arch == "aarch64" {
        OBJCOPY_AARCH64
    } else {
        OBJCOPY
    })
}

/// Where the stub's sections end: its image base, section alignment and the
/// first free relative address.
#[derive(Debug, PartialEq, Eq)]
pub struct PeEnd {
    pub image_base: u64,
    pub section_alignment: u64,
    pub end_rva: u64,
}

fn u16_at(b: &[u8], o: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(
        b.get(o..o + 2).context("PE file truncated")?.try_into()?,
    ))
}
fn u32_at(b: &[u8], o: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(
        b.get(o..o + 4).context("PE file truncated")?.try_into()?,
    ))
}

/// Reads a PE32+ header (every UEFI stub on x86_64 and arm64 is PE32+).
pub fn pe_end(b: &[u8]) -> Result<PeEnd> {
    if b.get(0..2) != Some(b"MZ") {
        bail!("not a PE file (no MZ header)");
    }
    let pe = u32_at(b, 0x3c)? as usize;
    if b.get(pe..pe + 4) != Some(b"PE\0\0") {
        bail!("not a PE file (no PE signature)");
    }
    let coff = pe + 4;
    let nsections = u16_at(b, coff + 2)? as usize;
    let opt_size = u16_at(b, coff + 16)? as usize;
    let opt = coff + 20;
    if u16_at(b, opt)? != 0x20b {
        bail!("not a PE32+ file");
    }
    let image_base = u64::from_le_bytes(
        b.get(opt + 24..opt + 32)
            .context("PE file truncated")?
            .try_into()?,
    );
    let section_alignment = u64::from(u32_at(b, opt + 32)?);
    if !section_alignment.is_power_of_two() {
        bail!("PE section alignment {section_alignment} is not a power of two");
    }
    let table = opt + opt_size;
    let mut end = 0u64;
    for i in 0..nsections {
        let s = table + i * 40;
        let vsize = u64::from(u32_at(b, s + 8)?);
        let va = u64::from(u32_at(b, s + 12)?);
        end = end.max(va + vsize);
    }
    Ok(PeEnd {
        image_base,
        section_alignment,
        end_rva: end,
    })
}

fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Each section's virtual address (image base included, as objcopy takes
/// it), in order, after the stub's own sections.
pub fn section_vmas(end: &PeEnd, sizes: &[u64]) -> Vec<u64> {
    let mut next = align(end.end_rva, end.section_alignment);
    sizes
        .iter()
        .map(|size| {
            let vma = end.image_base + next;
            next = align(next + size, end.section_alignment);
            vma
        })
        .collect()
}

/// Assembles the UKI at `out` (in `work`, which holds the small section
/// files). Sections: `.osrel` (the root's os-release, for the loader's
/// menu), `.cmdline`, `.initrd`, then `.linux` last, as ukify orders them.
pub fn assemble(inp: &UkiInputs, work: &Path, out: &Path) -> Result<()> {
    // The stub and os-release are the tree's own: never read through a
    // link that points at the build host.
    let root = InRoot::open(inp.tree)?;
    let rel = stub_path(inp.rust_arch);
    let Some(stub) = root.host_file(Path::new(&rel))? else {
        bail!(
            "{} is missing from the base; Secure Boot images need the systemd-boot-efi package",
            root.show(Path::new(&rel)).display()
        );
    };
    let stub_bytes = std::fs::read(&stub).with_context(|| format!("reading {}", stub.display()))?;
    let end = pe_end(&stub_bytes).with_context(|| format!("reading {}", stub.display()))?;
    let osrel = match root.read_to_string(Path::new("etc/os-release"))? {
        Some(t) => t,
        None => root
            .read_to_string(Path::new("usr/lib/os-release"))?
            .context("the root has no os-release (etc/os-release, usr/lib/os-release)")?,
    };
    let osrel_file = work.join("uki.osrel");
    std::fs::write(&osrel_file, osrel)?;
    let cmdline_file = work.join("uki.cmdline");
    std::fs::write(&cmdline_file, inp.cmdline.as_bytes())?;
    let sections: [(&str, PathBuf); 4] = [
        (".osrel", osrel_file),
        (".cmdline", cmdline_file),
        (".initrd", inp.initrd.to_path_buf()),
        (".linux", inp.kernel.to_path_buf()),
    ];
    let sizes = sections
        .iter()
        .map(|(_, p)| {
            Ok(std::fs::metadata(p)
                .with_context(|| p.display().to_string())?
                .len())
        })
        .collect::<Result<Vec<u64>>>()?;
    let vmas = section_vmas(&end, &sizes);
    let mut cmd = objcopy(inp.rust_arch);
    for ((name, path), vma) in sections.iter().zip(vmas) {
        let mut add = std::ffi::OsString::from(format!("{name}="));
        add.push(path);
        cmd = cmd
            .arg("--add-section")
            .arg(add)
            .arg("--change-section-vma")
            .arg(format!("{name}={vma:#x}"));
    }
    cmd.arg(&stub).arg(out).run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_follow_the_stub_aligned() {
        let end = PeEnd {
            image_base: 0x1_0000_0000,
            section_alignment: 0x1000,
            end_rva: 0x1_2345,
        };
        let v = section_vmas(&end, &[10, 0x1000, 1]);
        assert_eq!(v, vec![0x1_0001_3000, 0x1_0001_4000, 0x1_0001_5000]);
    }

    #[test]
    fn a_stub_linked_out_of_the_tree_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("stub"), b"the build host's").unwrap();
        let stub = d.path().join(stub_path("x86_64"));
        std::fs::create_dir_all(stub.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(host.path().join("stub"), &stub).unwrap();
        let k = d.path().join("vmlinuz");
        std::fs::write(&k, b"k").unwrap();
        let inputs = UkiInputs {
            tree: d.path(),
            rust_arch: "x86_64",
            kernel: &k,
            initrd: &k,
            cmdline: "ro",
        };
        let e = assemble(&inputs, d.path(), &d.path().join("uki.efi")).unwrap_err();
        assert!(format!("{e:#}").contains("leads out of the tree"), "{e:#}");
    }

    #[test]
    fn non_pe_is_refused() {
        assert!(pe_end(b"MZ").is_err());
        assert!(pe_end(b"\x7fELF....").is_err());
    }
}
