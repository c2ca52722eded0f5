//! Resolving and checking everything K3s needs before any long work starts:
//! the bundle (cached and locked, or a `--bundle DIR`), the k3s binary's
//! architecture, and every image archive's names and platforms.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bundle::{self, Arch, Manifest, ResolvedBundle};
use crate::config::k3s::K3sConfig;
use crate::images;

/// The label every file of edgeimg's test stand-in bundle carries in its first lines.
pub const STAND_IN_LABEL: &str = "edgeimg STAND-IN";

/// The checked K3s inputs of a build.
pub struct K3sInputs {
    pub bundle: ResolvedBundle,
    /// True for edgeimg's labelled test stand-in (a script, not K3s).
    pub stand_in: bool,
    /// The image's default role (a node file may choose another).
    pub role: edgeimg_contract::schema::K3sRole,
    /// BuildKit installed from the nerdctl-full archive.
    pub buildkit: bool,
    /// Preloaded image archives with what they contain.
    pub preloaded: Vec<(PathBuf, images::ImageArchive)>,
    pub airgap: images::ImageArchive,
}

pub fn prepare(
    k: &K3sConfig,
    arch: Arch,
    bundle_dir: Option<&Path>,
    lock: &Path,
) -> Result<K3sInputs> {
    let debian_arch = arch.debian();
    let manifest = Manifest::for_build(&k.bundle, bundle_dir)?;
    let bundle = match bundle_dir {
        Some(dir) => {
            let b = bundle::from_dir(dir, &manifest, arch, k.buildkit)?;
            b.check_lock(lock)?;
            b
        }
        None => bundle::resolve(&manifest, lock, arch, k.buildkit)?,
    };

    // The k3s binary must be for the board; only the labelled stand-in may be a script.
    let k3s = &bundle.k3s.path;
    let stand_in = images::elf::is_script(k3s) && file_head(k3s)?.contains(STAND_IN_LABEL);
    if !stand_in {
        images::elf::check_elf_arch(k3s, debian_arch)
            .with_context(|| format!("bundle {}: k3s binary {}", bundle.name, bundle.k3s.file))?;
    }

    let airgap = images::inspect_archive(&bundle.airgap_images.path)
        .with_context(|| format!("bundle {}: {}", bundle.name, bundle.airgap_images.file))?;
    images::validate_for_board(&airgap, debian_arch)
        .with_context(|| format!("bundle {}: {}", bundle.name, bundle.airgap_images.file))?;
    let mut preloaded = Vec::new();
    for p in &k.images {
        let a = images::inspect_archive(p)?;
        images::validate_for_board(&a, debian_arch)?;
        preloaded.push((p.clone(), a));
    }
    Ok(K3sInputs {
        bundle,
        stand_in,
        role: k.settings.role,
        buildkit: k.buildkit,
        preloaded,
        airgap,
    })
}

fn file_head(p: &Path) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; 512];
    let n = std::fs::File::open(p)?.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
