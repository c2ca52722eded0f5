//! SELinux at build time, on the host: compile the policy modules (edgeimg's own
//! `edgeimg_k3s` and the config's extras), install them into the image's policy
//! store offline, write /etc/selinux/config, and give the filesystem builders
//! the image's file contexts to label every file of the root and of the data
//! partition with (label.rs), so the first boot needs no relabel.

pub mod compile;
pub mod ext4;
pub mod label;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cmd::{self, Cmd};
pub use crate::config::selinux::OWN_MODULE;
use crate::config::selinux::{SelinuxConfig, SelinuxMode};

pub const OWN_TE: &str = include_str!("../../selinux-policies/edgeimg-k3s/edgeimg_k3s.te");
pub const OWN_FC: &str = include_str!("../../selinux-policies/edgeimg-k3s/edgeimg_k3s.fc");
/// Debian's refpolicy store name (selinux-policy-default).
pub const POLICY_TYPE: &str = "default";

/// One installed module, for the manifest.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ModuleRecord {
    pub name: String,
    /// "built-in" for edgeimg's own, else the `.te` path from the config.
    pub source: String,
    /// SHA-256 of the compiled `.pp` installed into the image.
    pub sha256: String,
}

/// What [`apply`] did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub mode: SelinuxMode,
    pub modules: Vec<ModuleRecord>,
    /// The image's text file contexts, with the installed modules' entries:
    /// mkfs.erofs labels the root from it, matchpathcon the data partition.
    pub file_contexts: PathBuf,
    /// A copy of the root's /var (plus the /etc overlay's directories and the
    /// seeded marker) the data partition is made from, unlabelled.
    pub data_seed: PathBuf,
}

/// Compiles edgeimg's own module into `work` (the same bytes for every
/// architecture: the policy is arch-independent).
pub fn compile_own(work: &Path) -> Result<compile::Compiled> {
    let dir = work.join("own-src");
    std::fs::create_dir_all(&dir)?;
    let te = dir.join(format!("{OWN_MODULE}.te"));
    std::fs::write(&te, OWN_TE)?;
    std::fs::write(dir.join(format!("{OWN_MODULE}.fc")), OWN_FC)?;
    compile::compile(&te, work)
}

/// Compiles edgeimg's module and the config's extras into `out`. Done before
/// any long work, so a broken `.te` fails the build at once.
pub fn compile_all(cfg: &SelinuxConfig, out: &Path) -> Result<Vec<compile::Compiled>> {
    cmd::require(cmd::SELINUX_TOOLS)?;
    let mut compiled = vec![compile_own(out)?];
    for te in &cfg.modules {
        compiled.push(compile::compile(te, out)?);
    }
    Ok(compiled)
}

/// Everything SELinux needs done to the staged `tree` before its filesystems
/// are made, with the modules [`compile_all`] made.
pub fn apply(
    tree: &Path,
    work: &Path,
    mode: SelinuxMode,
    compiled: &[compile::Compiled],
) -> Result<Applied> {
    let root = crate::stage::in_root::InRoot::open(tree)?;
    let contexts = format!("etc/selinux/{POLICY_TYPE}/contexts/files/file_contexts");
    anyhow::ensure!(
        root.host_file(Path::new(&contexts))?.is_some(),
        "the base root has no SELinux policy at /etc/selinux/{POLICY_TYPE} (selinux-policy-default not installed?)"
    );
    install(tree, compiled)?;
    write_config(tree, mode)?;
    enable_audit_socket(tree)?;
    let file_contexts = label::file_contexts(tree, &work.join("file-contexts"))?;
    let data_seed = work.join("data-seed");
    label::data_seed(tree, &data_seed)?;
    let modules = compiled
        .iter()
        .enumerate()
        .map(|(i, c)| ModuleRecord {
            name: c.name.clone(),
            source: if i == 0 {
                "built-in (selinux-policies/edgeimg-k3s)".into()
            } else {
                c.source.display().to_string()
            },
            sha256: c.sha256.clone(),
        })
        .collect();
    Ok(Applied {
        mode,
        modules,
        file_contexts,
        data_seed,
    })
}

/// Installs the modules into the image's store with the image's own semodule
/// (through chroot; qemu-user runs it for a foreign architecture). The host's
/// bookworm libsemanage (3.4) cannot read trixie's store (module format 22),
/// so `semodule -p ROOT` from the host is not an option.
fn install(tree: &Path, modules: &[compile::Compiled]) -> Result<()> {
    let inbox_rel = "tmp/edgeimg-selinux";
    let root = crate::stage::in_root::InRoot::open(tree)?;
    root.mkdir_p(Path::new(inbox_rel), 0o755)?;
    let mut c = Cmd::new(cmd::CHROOT)
        .arg(tree)
        .args(["/usr/sbin/semodule", "-n"]);
    for m in modules {
        let name = format!("{}.pp", m.name);
        let pp = std::fs::read(&m.pp).with_context(|| format!("cannot read {}", m.pp.display()))?;
        root.write_file(&Path::new(inbox_rel).join(&name), &pp, 0o644)?;
        c = c.arg("-i").arg(format!("/{inbox_rel}/{name}"));
    }
    let r = c
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .run()
        .context("installing the SELinux modules into the image's policy store failed");
    if let Some(inbox) = root.host_dir(Path::new(inbox_rel))? {
        std::fs::remove_dir_all(&inbox)?;
    }
    r?;
    Ok(())
}

/// journald's audit socket: every AVC record reaches the journal over netlink.
/// Without it (and without auditd) the kernel only printk()s them, rate-limited,
/// and denials get lost ("audit: printk limit exceeded").
fn enable_audit_socket(tree: &Path) -> Result<()> {
    let unit = "systemd-journald-audit.socket";
    let target = format!("/usr/lib/systemd/system/{unit}");
    anyhow::ensure!(
        crate::stage::in_root::InRoot::open(tree)?
            .host_file(Path::new(&target[1..]))?
            .is_some(),
        "the base root has no {target}"
    );
    for wanted_by in ["sockets.target", "systemd-journald.service"] {
        crate::stage::system::enable(tree, unit, wanted_by)?;
    }
    Ok(())
}

/// /etc/selinux/config: the mode systemd loads the policy in (the kernel
/// command line's enforcing= says the same).
fn write_config(tree: &Path, mode: SelinuxMode) -> Result<()> {
    let text = format!(
        "# Written by edgeimg from [selinux] in edgeimg.toml.\nSELINUX={}\nSELINUXTYPE={POLICY_TYPE}\n",
        mode.as_str()
    );
    crate::stage::system::write(tree, "etc/selinux/config", text.as_bytes(), 0o644)
}
