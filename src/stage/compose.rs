//! The stage step of a build: the cached base unpacked into the work
//! directory and turned into the image's root tree — kernel taken out,
//! modules and firmware trimmed to the board's, then the system files, the
//! version floor and signing key, K3s, the operator's overlays, the update
//! stamps, and SELinux labels last.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::in_root::InRoot;
use super::{KernelFiles, k3s, overlay, system, update_stamps};
use crate::base::Base;
use crate::config;
use crate::context::Ctx;
use crate::preflight::Checked;

/// The composed tree and what the later steps and the manifest need of it.
pub struct Staged {
    pub tree: PathBuf,
    pub kernel: KernelFiles,
    /// (name, version, architecture) of every installed package.
    pub packages: Vec<(String, String, String)>,
    /// Root files edgeimg placed (the plan's `files`, plus overlays').
    pub placed: Vec<String>,
    pub overlay_files: overlay::OverlayFiles,
    pub selinux: Option<crate::selinux::Applied>,
}

pub fn compose(ctx: &Ctx, base: &Base, checked: &Checked) -> Result<Staged> {
    let started = std::time::Instant::now();
    let tree = ctx.work.join("root");
    super::unpack(&base.tar, &tree)?;
    let kernel = super::take_kernel(&tree, &ctx.work.join("kernel"))?;
    trim(ctx, base, &tree, &kernel)?;
    let packages = super::installed_packages(&tree)?;
    let image_config = image_config(ctx, checked)?;
    let mut placed = system::apply(
        &tree,
        &system::SystemInput {
            agent: crate::agents::binary(ctx.cfg.board.rust_arch()),
            image_config: &image_config,
            boot_partuuid: ctx.plan.ids.boot_partuuid.to_string(),
            os_release_extra: vec![
                ("IMAGE_ID".into(), ctx.cfg.name.clone()),
                ("EDGEIMG_BOARD".into(), ctx.cfg.board.name.clone()),
                ("EDGEIMG_VERSION".into(), crate::VERSION.into()),
            ],
        },
    )?;
    placed.extend(update_keys(ctx, &tree, checked)?);
    if let Some(e) = &ctx.cfg.data_encryption {
        crate::luks::check_public_key(&e.recovery_public_key).map_err(|err| {
            anyhow::anyhow!(
                "{}: key `data.recovery_public_key`: {err:#}",
                ctx.cfg.source
            )
        })?;
        placed.extend(crate::luks::apply(&tree, e)?);
    }
    if let (Some(k), Some(inputs), Some(settings)) = (&ctx.cfg.k3s, &checked.k3s, &image_config.k3s)
    {
        placed.extend(place_k3s(ctx, &tree, k, inputs, settings)?);
    }
    let overlay_files = overlay::apply_all(ctx, &tree)?;
    placed.extend(
        overlay_files
            .iter()
            .flat_map(|(_, files)| files.iter().map(|(p, _)| p.clone())),
    );
    placed.extend(stamps_unless_overlaid(ctx, &tree, &overlay_files)?);
    ctx.progress.note(&format!(
        "stage: root tree composed ({:.1}s)",
        started.elapsed().as_secs_f64()
    ));
    // SELinux last: modules installed, then every file of the final tree labelled.
    let selinux = match (&ctx.cfg.selinux, &checked.selinux_modules) {
        (Some(se), Some(modules)) => Some(ctx.progress.timed(
            || crate::selinux::apply(&tree, ctx.work, se.mode, modules),
            |a| {
                format!(
                    "selinux: {} module(s) installed, file contexts and data seed ready, mode {}",
                    a.modules.len(),
                    se.mode.as_str()
                )
            },
        )?),
        _ => None,
    };
    Ok(Staged {
        tree,
        kernel,
        packages,
        placed,
        overlay_files,
        selinux,
    })
}

/// dpkg's backups of its database from before its last change. The image
/// never runs dpkg, and the last change differs between a base bootstrapped
/// from nothing and one made incrementally, so without them both bases give
/// the same image.
const DPKG_BACKUPS: &[&str] = &["var/lib/dpkg/status-old", "var/lib/dpkg/diversions-old"];

/// apt's record of which packages were installed as dependencies: written
/// in the order of apt's package cache, which differs between a base from
/// nothing and an incremental one with the same entries.
const APT_AUTO_MARKS: &str = "var/lib/apt/extended_states";

/// Rewrites a deb822 file (stanzas separated by blank lines) with its stanzas
/// in byte order, if it exists.
fn sort_stanzas(root: &InRoot, rel: &std::path::Path) -> Result<()> {
    let Some(text) = root.read_to_string(rel)? else {
        return Ok(());
    };
    let mut stanzas: Vec<&str> = text
        .split("\n\n")
        .map(|s| s.trim_matches('\n'))
        .filter(|s| !s.is_empty())
        .collect();
    stanzas.sort_unstable();
    let mut sorted = stanzas.join("\n\n");
    if !sorted.is_empty() {
        sorted.push('\n');
    }
    if sorted != text {
        root.write_file(rel, sorted.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// What the root loses or gets normalised before edgeimg adds to it: dpkg's
/// backups, apt's marks in one order, then the verity module check, and the
/// board's module and firmware sets.
fn trim(ctx: &Ctx, base: &Base, tree: &std::path::Path, kernel: &KernelFiles) -> Result<()> {
    let cfg = ctx.cfg;
    let root = InRoot::open(tree)?;
    for b in DPKG_BACKUPS {
        root.remove(std::path::Path::new(b))?;
    }
    sort_stanzas(&root, std::path::Path::new(APT_AUTO_MARKS))?;
    let board_file = ctx.board_file();
    if cfg.verity {
        crate::verity::check_kernel(tree, &kernel.version, &board_file)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", cfg.source))?;
    }
    if let Some(wanted) = &cfg.board.modules {
        // What the initramfs loads must also be there after switch_root.
        let mut wanted = wanted.clone();
        wanted.extend(cfg.board.initramfs_modules.iter().cloned());
        let t = super::modules::trim_modules(
            tree,
            &kernel.version,
            &wanted,
            &board_file,
            &base.meta.key,
            &crate::cache::dir().join("depmod"),
        )?;
        ctx.progress.note(&format!(
            "stage: kernel modules trimmed to the board's set: {} kept, {} removed ({})",
            t.kept,
            t.removed,
            config::size::human(t.bytes_removed)
        ));
    }
    if let Some(wanted) = &cfg.board.firmware_files {
        let t = super::modules::trim_firmware(tree, wanted, &board_file)?;
        ctx.progress.note(&format!(
            "stage: firmware trimmed to the board's set: {} kept, {} removed ({})",
            t.kept,
            t.removed,
            config::size::human(t.bytes_removed)
        ));
    }
    Ok(())
}

/// What the builder tells the agent (`/usr/lib/edgeimg/image.json`),
/// checked as the agent would check it on every device.
fn image_config(ctx: &Ctx, checked: &Checked) -> Result<edgeimg_contract::schema::ImageConfig> {
    let cfg = ctx.cfg;
    let image_config = edgeimg_contract::schema::ImageConfig {
        name: cfg.name.clone(),
        board: cfg.board.name.clone(),
        arch: cfg.board.arch.to_string(),
        edgeimg_version: crate::VERSION.to_string(),
        hostname_pattern: cfg.hostname_pattern.clone(),
        users: cfg.users.clone(),
        boot_mount: "/boot/efi".into(),
        k3s: match (&cfg.k3s, &checked.k3s) {
            (Some(k), Some(inputs)) => Some(edgeimg_contract::schema::K3sSettings {
                stand_in: inputs.stand_in,
                // A token given at build time is placed in the agent's token file.
                token_file: if k.token.is_some() {
                    Some(edgeimg_contract::schema::K3S_TOKEN_FILE.to_string())
                } else {
                    k.settings.token_file.clone()
                },
                ..k.settings.clone()
            }),
            _ => None,
        },
    };
    // What the agent would reject on every device must stop the build instead.
    image_config
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.source))?;
    Ok(image_config)
}

/// The trusted update key (when the build signs) and the version floor the
/// device compares an update's generation with.
fn update_keys(ctx: &Ctx, tree: &std::path::Path, checked: &Checked) -> Result<Vec<String>> {
    let mut placed = Vec::new();
    if let Some(sk) = &checked.signing_key {
        let rel = edgeimg_contract::update::TRUSTED_KEY_PATH.trim_start_matches('/');
        system::write(
            tree,
            rel,
            edgeimg_contract::update::keys::public_text(&sk.verifying_key()).as_bytes(),
            0o644,
        )?;
        placed.push(rel.into());
    }
    if let Some(r) = &ctx.cfg.update_repository {
        let rel = edgeimg_contract::update::REPOSITORY_PATH.trim_start_matches('/');
        system::write(tree, rel, format!("{}\n", r.url).as_bytes(), 0o644)?;
        placed.push(rel.into());
        let root = std::fs::read(&r.trusted_root)
            .with_context(|| format!("reading {}", r.trusted_root.display()))?;
        let rel = edgeimg_contract::update::TRUSTED_ROOT_PATH.trim_start_matches('/');
        system::write(tree, rel, &root, 0o644)?;
        placed.push(rel.into());
        if let Some(c) = &r.ca_certificates {
            let pem = std::fs::read(c).with_context(|| format!("reading {}", c.display()))?;
            let rel = edgeimg_contract::update::CA_CERTIFICATES_PATH.trim_start_matches('/');
            system::write(tree, rel, &pem, 0o644)?;
            placed.push(rel.into());
        }
        if let Some(w) = &r.window {
            let rel = edgeimg_contract::update::POLICY_PATH.trim_start_matches('/');
            system::write(
                tree,
                rel,
                format!("EDGEIMG_UPDATE_WINDOW={w}\n").as_bytes(),
                0o644,
            )?;
            placed.push(rel.into());
        }
    }
    let rel = edgeimg_contract::update::GENERATION_PATH.trim_start_matches('/');
    system::write(
        tree,
        rel,
        format!("{}\n", ctx.cfg.update_generation).as_bytes(),
        0o644,
    )?;
    placed.push(rel.into());
    Ok(placed)
}

/// The K3s part of the stage: [`k3s::place`] with the checked inputs, and
/// a line saying what was placed (STAND-IN when it is the stand-in).
fn place_k3s(
    ctx: &Ctx,
    tree: &std::path::Path,
    k: &crate::config::k3s::K3sConfig,
    inputs: &crate::k3s_inputs::K3sInputs,
    settings: &edgeimg_contract::schema::K3sSettings,
) -> Result<Vec<String>> {
    let preloaded: Vec<(PathBuf, String)> = inputs
        .preloaded
        .iter()
        .map(|(p, a)| {
            let sha = a
                .sha256
                .clone()
                .with_context(|| format!("{}: not hashed when it was checked", p.display()))?;
            Ok((p.clone(), sha))
        })
        .collect::<Result<_>>()?;
    let placed = k3s::place(
        tree,
        ctx.work,
        &k3s::K3sInput {
            bundle: &inputs.bundle,
            settings,
            token: k.token.as_deref(),
            registries_yaml: k.registries_yaml.clone(),
            preloaded: &preloaded,
            buildkit: k.buildkit,
        },
    )?;
    ctx.progress.note(&format!(
        "stage: {} {} placed with {} preloaded image archive(s){}",
        if inputs.stand_in {
            "STAND-IN bundle"
        } else {
            "K3s"
        },
        inputs.bundle.k3s_version,
        preloaded.len(),
        if k.buildkit { " and BuildKit" } else { "" }
    ));
    Ok(placed)
}

/// Writes the stamps unless an overlay replaced an input of the update
/// units (the device's first boot then runs them); returns what it placed.
fn stamps_unless_overlaid(
    ctx: &Ctx,
    tree: &std::path::Path,
    overlay_files: &overlay::OverlayFiles,
) -> Result<Vec<String>> {
    let paths: Vec<String> = overlay_files
        .iter()
        .flat_map(|(_, files)| files.iter().map(|(p, _)| p.clone()))
        .collect();
    match update_stamps::blocking_overlay_file(&paths) {
        None => {
            update_stamps::write(tree, ctx.epoch)?;
            Ok(update_stamps::STAMPS.map(String::from).to_vec())
        }
        Some(f) => {
            ctx.progress.note(&format!(
                "stage: overlay file /{f} is input of ldconfig, sysusers, hwdb or the journal catalog: the device's first boot runs systemd's update units"
            ));
            Ok(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{InRoot, sort_stanzas};
    use std::path::Path;

    #[test]
    fn stanzas_come_out_sorted_and_a_missing_file_is_fine() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("extended_states");
        let root = InRoot::open(d.path()).unwrap();
        let rel = Path::new("extended_states");
        sort_stanzas(&root, rel).unwrap();
        assert!(!p.exists());
        std::fs::write(
            &p,
            "Package: zstd\nArchitecture: amd64\nAuto-Installed: 1\n\nPackage: libc6\nArchitecture: amd64\nAuto-Installed: 1\n\n",
        )
        .unwrap();
        sort_stanzas(&root, rel).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "Package: libc6\nArchitecture: amd64\nAuto-Installed: 1\n\nPackage: zstd\nArchitecture: amd64\nAuto-Installed: 1\n"
        );
    }
}
