//! `edgeimg build`, as named steps over one build context (the shape of
//! mkosi's `build_image`): preflight, base, stage, filesystems, disk, update
//! file, artifacts, publish. Each step lives in the module that owns its
//! work; this one only orders them. Everything is made in temporary places,
//! and outputs get their final names only once all of them are complete.

pub mod output;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::artifact;
use crate::config::board::Firmware;
use crate::config::{self, size::human};
use crate::disk::Role;
use crate::manifest;
use crate::plan;
use crate::preflight::{self, Checked, Half};
use crate::progress::Progress;
use crate::stage::{self, compose::Staged};

pub use crate::context::{BuildOptions, Ctx, source_date_epoch};

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub image: PathBuf,
    pub outputs: Vec<PathBuf>,
    pub base_reused: bool,
    pub seconds: f64,
}

/// The unprivileged half of a rootless build: checks the inputs and makes
/// sure the base is cached (bootstrapping it with `mmdebstrap --mode=unshare`),
/// so the half in the user namespace only reuses it. See `rootless`.
pub fn prepare_base(opts: &BuildOptions) -> Result<()> {
    let progress = Progress::new(opts.quiet);
    crate::rootless::check()?;
    let mut cfg = config::load(opts.config.as_deref(), opts.board.as_deref())?;
    if let Some(k) = &opts.secure_boot_keys {
        cfg.set_secure_boot_keys(k)?;
    }
    let plan = plan::make(&cfg, opts.bundle.as_deref());
    preflight::run(&cfg, opts, Half::RootlessOuter)?;
    preflight::k3s(&cfg, opts)?;
    crate::base::ensure(&plan.base, &cache_dir()?, opts.refresh, &progress)?;
    Ok(())
}

pub fn build(opts: &BuildOptions) -> Result<BuildReport> {
    if crate::rootless::needed() {
        anyhow::bail!(
            "as an unprivileged user, build through the `edgeimg build` command (it runs the staging steps in a user namespace)"
        );
    }
    let started = Instant::now();
    // Directories the stage makes get their mode from the umask: fix it, so the
    // caller's (pam_umask gives users 002) cannot change the image bytes.
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0o022) };
    let progress = Progress::new(opts.quiet);
    let mut cfg = config::load(opts.config.as_deref(), opts.board.as_deref())?;
    if let Some(c) = opts.compression {
        cfg.compression = c;
    }
    if let Some(k) = &opts.secure_boot_keys {
        cfg.set_secure_boot_keys(k)?;
    }
    let plan = plan::make(&cfg, opts.bundle.as_deref());
    let mut checked = preflight::run(&cfg, opts, Half::Build)?;
    let out = output::Output::open(&opts.out)?;
    checked.k3s = preflight::k3s(&cfg, opts)?;
    let cache = cache_dir()?;
    progress.note(&format!(
        "edgeimg: building {} for {} ({}), config {}",
        plan.name, plan.board, plan.arch, plan.config_source
    ));
    let base = crate::base::ensure(&plan.base, &cache, opts.refresh, &progress)?;
    let work = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(cache.join("work"))
        .context("cannot create a work directory")?;
    // The steps see the path; the directory goes with `work`, dropped below.
    let work_dir = work.path().to_path_buf();
    let ctx = Ctx {
        cfg: &cfg,
        plan: &plan,
        opts,
        progress: &progress,
        epoch: source_date_epoch()?.unwrap_or(base.meta.created),
        work: &work_dir,
    };
    let staged = stage::compose::compose(&ctx, &base, &checked)?;
    let fs = crate::fs::images::make_all(&ctx, &staged)?;
    let mut names = disk_and_update(&ctx, &out, &staged, &fs, &checked)?;
    let kernel = kernel_info(&staged.kernel)?;
    drop(work); // the tree is big; free it before compressing

    let img_name = plan.image_file();
    let img_path = out.staged(&img_name);
    names.extend(artifact::write_image_artifacts(
        &ctx,
        &img_path,
        fs.layout.size,
        out.staging.path(),
    )?);
    let m = manifest::Manifest::collect(manifest::Inputs {
        plan: &plan,
        config_text: cfg_text(&cfg)?,
        base: &base.meta,
        packages: &staged.packages,
        kernel: &kernel,
        agent: crate::agents::binary(cfg.board.rust_arch()),
        overlays: &staged.overlay_files,
        layout: &fs.layout,
        k3s: checked.k3s.as_ref(),
        selinux: staged.selinux.as_ref(),
        placed: &staged.placed,
        image: &img_path,
        epoch: ctx.epoch,
        kernel_cmdline: &fs.kernel_cmdline,
        verity: fs.verity.as_ref(),
        secure_boot: cfg.secure_boot.as_ref(),
        data_encryption: cfg.data_encryption.as_ref(),
    })?;
    std::fs::write(out.staged("manifest.json"), serde_json::to_vec_pretty(&m)?)?;
    names.push("manifest.json".into());
    names.push(artifact::write_sums_file(out.staging.path(), &names)?);

    let outputs = out.publish(&names)?;
    let seconds = started.elapsed().as_secs_f64();
    progress.note(&format!(
        "edgeimg: wrote {} in {:.1}s",
        out.dir.join(&img_name).display(),
        seconds
    ));
    Ok(BuildReport {
        image: out.dir.join(&img_name),
        outputs,
        base_reused: base.reused,
        seconds,
    })
}

/// The disk step, then the update file when asked for: the names written.
fn disk_and_update(
    ctx: &Ctx,
    out: &output::Output,
    staged: &Staged,
    fs: &crate::fs::images::Filesystems,
    checked: &Checked,
) -> Result<Vec<String>> {
    let t = Instant::now();
    let img_name = ctx.plan.image_file();
    crate::disk::assemble(
        &out.staged(&img_name),
        &fs.layout,
        &[
            (Role::Boot, fs.boot.as_path()),
            (Role::RootA, fs.root.as_path()),
            (Role::Data, fs.data.as_path()),
        ],
    )?;
    let mut names = vec![img_name.clone()];
    if let (true, Some(key)) = (ctx.opts.update, &checked.signing_key) {
        let name = ctx.progress.timed(
            || {
                let payloads = crate::update::BuildPayloads {
                    root: &fs.root,
                    vmlinuz: &staged.kernel.vmlinuz,
                    initrd: &staged.kernel.initrd,
                    kernel_version: &staged.kernel.version,
                    cmdline: &fs.kernel_cmdline,
                    pi_boot_files: (ctx.cfg.board.firmware == Firmware::Rpi)
                        .then_some(&fs.boot_files),
                    ukis: fs
                        .update_ukis
                        .as_ref()
                        .map(|(a, b)| (a.as_path(), b.as_path())),
                };
                crate::update::write_for_build(ctx, &payloads, key, out.staging.path())
            },
            |name| format!("update: {name} signed"),
        )?;
        names.push(name);
    }
    ctx.progress.note(&format!(
        "disk: {} ({}) assembled ({:.1}s)",
        img_name,
        human(fs.layout.size),
        t.elapsed().as_secs_f64()
    ));
    Ok(names)
}

/// The cache directory, with the `work` directory builds make theirs in.
fn cache_dir() -> Result<PathBuf> {
    let cache = crate::cache::dir();
    std::fs::create_dir_all(cache.join("work"))
        .with_context(|| format!("cannot create the cache directory {}", cache.display()))?;
    Ok(cache)
}

fn cfg_text(cfg: &config::Config) -> Result<String> {
    if cfg.source == "built-in default" {
        Ok(config::DEFAULT_CONFIG.to_string())
    } else {
        std::fs::read_to_string(&cfg.source).with_context(|| format!("cannot read {}", cfg.source))
    }
}

fn kernel_info(k: &stage::KernelFiles) -> Result<manifest::KernelInfo> {
    Ok(manifest::KernelInfo {
        version: k.version.clone(),
        vmlinuz_sha256: artifact::checksums::sha256_file(&k.vmlinuz)?,
        initrd_sha256: artifact::checksums::sha256_file(&k.initrd)?,
    })
}
