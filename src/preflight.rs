//! Everything a build checks before any long work, for both halves of a
//! rootless build and for a root build alike: host tools, the root's
//! compressor, the signing key, the SELinux modules (compiled: a broken .te
//! must not wait for a bootstrap), the K3s bundle and image archives.

use anyhow::{Context, Result};

use crate::cmd;
use crate::config::Config;
use crate::context::BuildOptions;
use crate::fs::erofs;
use crate::k3s_inputs::K3sInputs;
use crate::selinux::compile::Compiled;

/// Which part of a build runs here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// The unprivileged caller of a rootless build: bootstraps the base
    /// (mmdebstrap --mode=unshare) before re-entering a user namespace.
    RootlessOuter,
    /// Everything after the base: a root build, or the rootless inner half.
    /// The bootstrap tools are needed only on a cache miss, and the base
    /// step names them then.
    Build,
}

/// What the checks produced that the build uses.
pub struct Checked {
    pub signing_key: Option<ed25519_dalek::SigningKey>,
    pub selinux_modules: Option<Vec<Compiled>>,
    /// Filled by [`k3s`].
    pub k3s: Option<K3sInputs>,
    /// Holds the compiled modules until the build installs them.
    _selinux_dir: tempfile::TempDir,
}

pub fn run(cfg: &Config, opts: &BuildOptions, half: Half) -> Result<Checked> {
    let setuid = crate::stage::overlay::preflight(&cfg.overlays)?;
    // The inner half of a rootless build checks again, but the outer half
    // has already told the user.
    if !crate::rootless::is_inner() {
        for f in setuid {
            tracing::warn!(
                "overlay file {} is setuid/setgid; it is placed without those bits",
                f.display()
            );
        }
    }
    let mut tools: Vec<cmd::Tool> = cmd::STAGE_TOOLS.to_vec();
    if half == Half::RootlessOuter {
        tools.extend_from_slice(cmd::BOOTSTRAP_TOOLS);
        tools.extend_from_slice(cmd::ROOTLESS_TOOLS);
    }
    if cfg.selinux.is_some() {
        // SELinux labelling needs no privilege (selinux/label.rs), only
        // its tools and an mkfs.erofs that labels.
        tools.extend_from_slice(cmd::SELINUX_TOOLS);
        erofs::check_file_contexts()?;
    }
    if cfg.verity {
        tools.extend_from_slice(cmd::VERITY_TOOLS);
    }
    if let Some(sb) = &cfg.secure_boot {
        // The arm64 objcopy only for arm64: the host's own reads x86 PE.
        tools.push(if cfg.board.rust_arch() == "aarch64" {
            cmd::OBJCOPY_AARCH64
        } else {
            cmd::OBJCOPY
        });
        tools.push(cmd::SBSIGN);
        sb.keys.check().with_context(|| cfg.source.clone())?;
    }
    cmd::require(&tools)?;
    // The root's compressor too: bookworm's mkfs.erofs has no lzma, and the
    // EROFS step comes minutes into the build.
    erofs::MkfsErofs::probe()?
        .check(cfg.root_compression)
        .with_context(|| cfg.source.clone())?;
    anyhow::ensure!(
        !opts.update || opts.signing_key.is_some(),
        "--update needs --signing-key: an update is only useful signed"
    );
    let signing_key = opts
        .signing_key
        .as_deref()
        .map(crate::update::load_signing_key)
        .transpose()?;
    let selinux_dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let selinux_modules = match &cfg.selinux {
        Some(se) => Some(crate::selinux::compile_all(se, selinux_dir.path())?),
        None => None,
    };
    crate::context::source_date_epoch()?;
    Ok(Checked {
        signing_key,
        selinux_modules,
        k3s: None,
        _selinux_dir: selinux_dir,
    })
}

/// The K3s bundle and image archives, checked (after the output directory:
/// a build that cannot write its outputs says so first).
pub fn k3s(cfg: &Config, opts: &BuildOptions) -> Result<Option<K3sInputs>> {
    cfg.k3s
        .as_ref()
        .map(|k| {
            crate::k3s_inputs::prepare(
                k,
                cfg.board.arch,
                opts.bundle.as_deref(),
                &opts.lock_path(cfg),
            )
        })
        .transpose()
}
