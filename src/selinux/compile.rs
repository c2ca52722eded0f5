//! Policy module compilation on the host: `checkmodule` (the `.te`) then
//! `semodule_package` (with the `.fc` beside it, if any). A mistake in a `.te`
//! fails the build with the compiler's own message, which names file and line.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::artifact::checksums::sha256_file;
use crate::cmd::{self, Cmd};

#[derive(Debug, Clone)]
pub struct Compiled {
    /// The module name (the `.te` file's stem, which must match `module NAME`).
    pub name: String,
    pub source: PathBuf,
    pub pp: PathBuf,
    pub sha256: String,
}

/// Compiles `te` (and `NAME.fc` beside it) into `out/NAME.pp`.
pub fn compile(te: &Path, out: &Path) -> Result<Compiled> {
    let name = te
        .file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("{}: not a module file name", te.display()))?
        .to_string();
    let text =
        std::fs::read_to_string(te).with_context(|| format!("cannot read {}", te.display()))?;
    let declared = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("module "))
        .and_then(|r| r.split_whitespace().next());
    if declared != Some(name.as_str()) {
        anyhow::bail!(
            "{}: the first `module` statement must name the module `{name}` like the file (found {})",
            te.display(),
            declared.map_or("none".into(), |d| format!("`{d}`"))
        );
    }
    std::fs::create_dir_all(out)?;
    let module = out.join(format!("{name}.mod"));
    let pp = out.join(format!("{name}.pp"));
    // -M: Debian's policy is MCS (contexts end in :s0).
    Cmd::new(cmd::CHECKMODULE)
        .args(["-M", "-m", "-o"])
        .arg(&module)
        .arg(te)
        .run()
        .with_context(|| format!("SELinux module {} does not compile", te.display()))?;
    let mut c = Cmd::new(cmd::SEMODULE_PACKAGE)
        .arg("-o")
        .arg(&pp)
        .arg("-m")
        .arg(&module);
    let fc = te.with_extension("fc");
    if fc.is_file() {
        c = c.arg("-f").arg(&fc);
    }
    c.run()
        .with_context(|| format!("packaging SELinux module {} failed", te.display()))?;
    let sha256 = sha256_file(&pp)?;
    Ok(Compiled {
        name,
        source: te.to_path_buf(),
        pp,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    /// The module is compiled on the host from the same source for every
    /// architecture; the same bytes each time is what lets an arm64 and an
    /// x86_64 image carry the identical module.
    #[test]
    fn own_module_compiles_to_the_same_bytes_twice() {
        if crate::cmd::require(crate::cmd::SELINUX_TOOLS).is_err() {
            panic!("checkmodule/semodule_package must be installed (.ci/setup)");
        }
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let x = super::super::compile_own(a.path()).unwrap();
        let y = super::super::compile_own(b.path()).unwrap();
        assert_eq!(x.name, "edgeimg_k3s");
        assert_eq!(x.sha256, y.sha256);
        assert!(std::fs::metadata(&x.pp).unwrap().len() > 1000);
    }
}
