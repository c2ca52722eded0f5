//! `edgeimg build`: config -> plan -> base -> stage -> filesystems -> disk ->
//! artifacts. Everything is made in temporary places; outputs are renamed to
//! their final names only once all of them are complete.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::artifact::{self, Compression};
use crate::cmd;
use crate::config::board::{Firmware, PartitionTable};
use crate::config::{self, ImageSize};
use crate::disk::{self, Role};
use crate::fs::{erofs, ext4, vfat};
use crate::manifest;
use crate::plan;
use crate::progress::Progress;
use crate::stage;

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub config: Option<PathBuf>,
    pub board: Option<String>,
    pub out: PathBuf,
    pub refresh: bool,
    pub compression: Option<Compression>,
    pub quiet: bool,
    /// A directory holding the K3s bundle assets (upstream file names).
    pub bundle: Option<PathBuf>,
    /// The bundle lock file (default: edgeimg.lock beside the config).
    pub lock: Option<PathBuf>,
    /// Update signing key: the image trusts its public key.
    pub signing_key: Option<PathBuf>,
    /// Also write the signed update file (needs `signing_key`).
    pub update: bool,
}

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
    let cfg = config::load(opts.config.as_deref(), opts.board.as_deref())?;
    // SELinux labelling needs no privilege (selinux/label.rs), only its
    // tools: checked before the bootstrap, like the rest.
    if cfg.selinux.is_some() {
        cmd::require(cmd::SELINUX_TOOLS)?;
        erofs::check_file_contexts()?;
    }
    let plan = plan::make(&cfg, opts.bundle.as_deref());
    cmd::require(cmd::BUILD_TOOLS)?;
    cmd::require(cmd::ROOTLESS_TOOLS)?;
    erofs::MkfsErofs::probe()?
        .check(cfg.root_compression)
        .with_context(|| cfg.source.clone())?;
    if let Some(k) = &cfg.k3s {
        let lock = opts
            .lock
            .clone()
            .unwrap_or_else(|| cfg.base_dir.join(crate::bundle::DEFAULT_LOCK));
        crate::k3s_inputs::prepare(k, &cfg.board.arch, opts.bundle.as_deref(), &lock)?;
    }
    let cache = crate::cache::dir();
    std::fs::create_dir_all(cache.join("work"))
        .with_context(|| format!("cannot create the cache directory {}", cache.display()))?;
    source_date_epoch()?;
    crate::base::ensure(&plan.base, &cache, opts.refresh, &progress)?;
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
    let plan = plan::make(&cfg, opts.bundle.as_deref());

    // Fail before any long work: tools, output directory.
    let mut tools: Vec<cmd::Tool> = cmd::BUILD_TOOLS.to_vec();
    tools.retain(|t| t.name != "mmdebstrap" && t.name != "newuidmap"); // only needed on a cache miss
    if cfg.selinux.is_some() {
        tools.extend_from_slice(cmd::SELINUX_TOOLS);
        erofs::check_file_contexts()?;
    }
    if cfg.verity {
        tools.extend(cmd::VERITY_TOOLS);
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
    // Policy modules compile first: a broken .te must not wait for a bootstrap.
    let selinux_dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let selinux_modules = match &cfg.selinux {
        Some(se) => Some(crate::selinux::compile_all(se, selinux_dir.path())?),
        None => None,
    };
    let out_dir = prepare_out_dir(&opts.out)?;
    let _out_lock = crate::cache::Lock::acquire(&out_dir.join(".edgeimg.lock"))?;
    remove_stale_temps(&out_dir);
    let staging_out = tempfile::Builder::new()
        .prefix(".edgeimg-build-")
        .tempdir_in(&out_dir)
        .with_context(|| format!("output directory {} is not writable", out_dir.display()))?;
    // Bundle and images are checked before anything long runs.
    let lock = opts
        .lock
        .clone()
        .unwrap_or_else(|| cfg.base_dir.join(crate::bundle::DEFAULT_LOCK));
    let k3s = match &cfg.k3s {
        Some(k) => Some(crate::k3s_inputs::prepare(
            k,
            &cfg.board.arch,
            opts.bundle.as_deref(),
            &lock,
        )?),
        None => None,
    };

    let cache = crate::cache::dir();
    std::fs::create_dir_all(cache.join("work"))
        .with_context(|| format!("cannot create the cache directory {}", cache.display()))?;
    progress.note(&format!(
        "edgeimg: building {} for {} ({}), config {}",
        plan.name, plan.board, plan.arch, plan.config_source
    ));
    let base = crate::base::ensure(&plan.base, &cache, opts.refresh, &progress)?;
    let epoch = source_date_epoch()?.unwrap_or(base.meta.created);

    let work = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(cache.join("work"))
        .context("cannot create a work directory")?;
    let tree = work.path().join("root");
    let t = Instant::now();
    stage::unpack(&base.tar, &tree)?;
    let kernel = stage::take_kernel(&tree, &work.path().join("kernel"))?;
    let board_file = format!("boards/{}.toml", cfg.board.name);
    if cfg.verity {
        crate::verity::check_kernel(&tree, &kernel.version, &board_file)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", cfg.source))?;
    }
    if let Some(wanted) = &cfg.board.modules {
        // What the initramfs loads must also be there after switch_root.
        let mut wanted = wanted.clone();
        wanted.extend(cfg.board.initramfs_modules.iter().cloned());
        let t = stage::modules::trim_modules(
            &tree,
            &kernel.version,
            &wanted,
            &board_file,
            &base.meta.key,
            &cache.join("depmod"),
        )?;
        progress.note(&format!(
            "stage: kernel modules trimmed to the board's set: {} kept, {} removed ({})",
            t.kept,
            t.removed,
            config::size::human(t.bytes_removed)
        ));
    }
    if let Some(wanted) = &cfg.board.firmware_files {
        let t = stage::modules::trim_firmware(&tree, wanted, &board_file)?;
        progress.note(&format!(
            "stage: firmware trimmed to the board's set: {} kept, {} removed ({})",
            t.kept,
            t.removed,
            config::size::human(t.bytes_removed)
        ));
    }
    let packages = stage::installed_packages(&tree)?;
    let agent = crate::agents::binary(cfg.board.rust_arch());
    let image_config = edgeimg_agent::schema::ImageConfig {
        name: cfg.name.clone(),
        board: cfg.board.name.clone(),
        arch: cfg.board.arch.clone(),
        edgeimg_version: crate::VERSION.to_string(),
        hostname_pattern: cfg.hostname_pattern.clone(),
        users: cfg.users.clone(),
        boot_mount: "/boot/efi".into(),
        k3s: match (&cfg.k3s, &k3s) {
            (Some(k), Some(inputs)) => Some(edgeimg_agent::schema::K3sSettings {
                stand_in: inputs.stand_in,
                // A token given at build time is placed in the agent's token file.
                token_file: if k.token.is_some() {
                    Some(edgeimg_agent::schema::K3S_TOKEN_FILE.to_string())
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
    let system = stage::system::SystemInput {
        agent,
        image_config: &image_config,
        boot_partuuid: plan.ids.boot_partuuid.to_string(),
        os_release_extra: vec![
            ("IMAGE_ID".into(), cfg.name.clone()),
            ("EDGEIMG_BOARD".into(), cfg.board.name.clone()),
            ("EDGEIMG_VERSION".into(), crate::VERSION.into()),
        ],
    };
    let mut placed = stage::system::apply(&tree, &system)?;
    if let Some(sk) = &signing_key {
        let rel = edgeimg_agent::update::TRUSTED_KEY_PATH.trim_start_matches('/');
        stage::system::write(
            &tree,
            rel,
            edgeimg_agent::update::keys::public_text(&sk.verifying_key()).as_bytes(),
            0o644,
        )?;
        placed.push(rel.into());
    }
    // The version floor the device compares an update's generation with.
    let rel = edgeimg_agent::update::GENERATION_PATH.trim_start_matches('/');
    stage::system::write(
        &tree,
        rel,
        format!("{}\n", cfg.update_generation).as_bytes(),
        0o644,
    )?;
    placed.push(rel.into());
    if let (Some(k), Some(inputs)) = (&cfg.k3s, &k3s) {
        let preloaded: Vec<PathBuf> = inputs.preloaded.iter().map(|(p, _)| p.clone()).collect();
        let settings = image_config.k3s.clone().expect("set above");
        placed.extend(stage::k3s::place(
            &tree,
            work.path(),
            &stage::k3s::K3sInput {
                bundle: &inputs.bundle,
                settings: &settings,
                token: k.token.as_deref(),
                registries_yaml: k.registries_yaml.clone(),
                preloaded: &preloaded,
                buildkit: k.buildkit,
            },
        )?);
        progress.note(&format!(
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
    }
    let ctx = minijinja::context! {
        image => minijinja::context! { name => &cfg.name, board => &cfg.board.name, arch => &cfg.board.arch, suite => &cfg.suite },
        users => cfg.users.iter().map(|u| u.name.clone()).collect::<Vec<_>>(),
    };
    let mut overlay_files = Vec::new();
    for o in &cfg.overlays {
        let files = stage::overlay::apply(o, &tree, &ctx)?;
        placed.extend(files.iter().cloned());
        let mut hashed = Vec::new();
        for f in files {
            let p = tree.join(&f);
            let sha = if p.is_symlink() {
                format!("symlink:{}", std::fs::read_link(&p)?.display())
            } else {
                artifact::checksums::sha256_file(&p)?
            };
            hashed.push((f, sha));
        }
        overlay_files.push((o.clone(), hashed));
    }
    let overlay_paths: Vec<String> = overlay_files
        .iter()
        .flat_map(|(_, files)| files.iter().map(|(p, _)| p.clone()))
        .collect();
    match stage::update_stamps::blocking_overlay_file(&overlay_paths) {
        None => {
            stage::update_stamps::write(&tree, epoch)?;
            placed.extend(stage::update_stamps::STAMPS.map(String::from));
        }
        Some(f) => progress.note(&format!(
            "stage: overlay file /{f} is input of ldconfig, sysusers, hwdb or the journal catalog: the device's first boot runs systemd's update units"
        )),
    }
    progress.note(&format!(
        "stage: root tree composed ({:.1}s)",
        t.elapsed().as_secs_f64()
    ));
    // SELinux last: modules installed, then every file of the final tree labelled.
    let selinux = match (&cfg.selinux, &selinux_modules) {
        (Some(se), Some(modules)) => {
            let t = Instant::now();
            let applied = crate::selinux::apply(&tree, work.path(), se.mode, modules)?;
            progress.note(&format!(
                "selinux: {} module(s) installed, file contexts and data seed ready, mode {} ({:.1}s)",
                applied.modules.len(),
                se.mode.as_str(),
                t.elapsed().as_secs_f64()
            ));
            Some(applied)
        }
        _ => None,
    };

    // Filesystems.
    let t = Instant::now();
    let root_img = work.path().join("root.erofs");
    let root_bytes = erofs::make_labelled(
        &tree,
        &root_img,
        plan.ids.root_a_fs_uuid,
        epoch,
        cfg.root_compression,
        selinux.as_ref().map(|s| s.file_contexts.as_path()),
    )?;
    progress.note(&format!(
        "fs: EROFS root {} ({:.1}s)",
        config::size::human(root_bytes),
        t.elapsed().as_secs_f64()
    ));
    // The hash tree follows the EROFS data in the same file: the slot payload.
    let verity = if cfg.verity {
        let t = Instant::now();
        let v = crate::verity::format(&root_img, &cfg.seed)?;
        progress.note(&format!(
            "fs: dm-verity hash tree at {}, root hash {} ({:.1}s)",
            v.hash_offset,
            v.root_hash,
            t.elapsed().as_secs_f64()
        ));
        Some(v)
    } else {
        None
    };
    let root_bytes = std::fs::metadata(&root_img)?.len();
    let kernel_cmdline = crate::plan::kernel_cmdline(
        &cfg,
        &plan.ids,
        verity
            .as_ref()
            .map(|v| (v.root_hash.as_str(), v.hash_offset)),
    );
    let fixed = match cfg.size {
        ImageSize::Auto => None,
        ImageSize::Fixed(b) => Some(b.0),
    };
    let mbr_disk_id = (cfg.board.partition_table == PartitionTable::Mbr)
        .then(|| crate::ids::mbr_disk_id(&cfg.seed));
    let layout = disk::layout::compute(
        &cfg.seed,
        &cfg.board.arch,
        mbr_disk_id,
        cfg.board.partitions.boot.0,
        root_bytes,
        cfg.board.partitions.data.0,
        fixed,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.source))?;
    let boot_files = match (cfg.board.firmware, &cfg.board.rpi) {
        (Firmware::Rpi, Some(rpi)) => {
            crate::boot::rpi::boot_files(&tree, rpi, &kernel, &kernel_cmdline, &cfg.name)?
        }
        _ => crate::boot::uefi::boot_files(
            &tree,
            cfg.board.rust_arch(),
            &kernel,
            &kernel_cmdline,
            &cfg.name,
        )?,
    };
    let boot_img = work.path().join("boot.vfat");
    vfat::make(
        &boot_img,
        layout.get(Role::Boot).size,
        "EDGEBOOT",
        crate::ids::fat_volume_id(&cfg.seed),
        &boot_files,
        work.path(),
        epoch,
    )?;
    let data_img = work.path().join("data.ext4");
    // The data partition is seeded here, not by the device's first boot
    // (fs/data_seed.rs). With SELinux, from its copy (labelled below);
    // without, from the tree's /var itself: the root is made already, so it
    // may change.
    let data_seed = match &selinux {
        Some(s) => s.data_seed.clone(),
        None => {
            let var = tree.join("var");
            crate::fs::data_seed::prepare_in_place(&var, epoch)?;
            var
        }
    };
    ext4::make(
        &data_img,
        layout.get(Role::Data).size,
        "edgeimg-data",
        plan.ids.data_fs_uuid,
        plan.ids.data_hash_seed,
        epoch,
        Some(&data_seed),
    )?;
    if let Some(s) = &selinux {
        let t = Instant::now();
        let labels = crate::selinux::label::data_labels(&s.data_seed, &s.file_contexts)?;
        crate::selinux::ext4::set_labels(&data_img, &labels, epoch)?;
        progress.note(&format!(
            "selinux: data partition labelled, {} paths ({:.1}s)",
            labels.len(),
            t.elapsed().as_secs_f64()
        ));
    }

    // Disk.
    let t = Instant::now();
    let img_name = plan.image_file();
    let img_path = staging_out.path().join(&img_name);
    let img = std::fs::File::create(&img_path)
        .with_context(|| format!("cannot create {}", img_path.display()))?;
    match mbr_disk_id {
        Some(id) => disk::write_mbr(&layout, id, &img)?,
        None => disk::write_gpt(&layout, &img)?,
    }
    disk::splice(&img, layout.get(Role::Boot), &boot_img)?;
    disk::splice(&img, layout.get(Role::RootA), &root_img)?;
    disk::splice(&img, layout.get(Role::Data), &data_img)?;
    img.sync_all()?;
    drop(img);
    let kernel_info = kernel_info(&kernel)?;
    let mut names = vec![img_name.clone()];
    if let (true, Some(sk)) = (opts.update, &signing_key) {
        let t = Instant::now();
        let name = format!("{}-{}.update", plan.name, plan.board);
        let root_sha = artifact::checksums::sha256_file(&root_img)?;
        let mut payloads: Vec<(String, PathBuf)> = vec![
            (edgeimg_agent::update::format::ROOT.into(), root_img.clone()),
            (
                edgeimg_agent::update::format::VMLINUZ.into(),
                kernel.vmlinuz.clone(),
            ),
            (
                edgeimg_agent::update::format::INITRD.into(),
                kernel.initrd.clone(),
            ),
        ];
        // The Pi firmware's files (firmware, DTBs, config.txt, cmdline.txt)
        // travel too: a Pi slot switch swaps the whole boot directory.
        if cfg.board.firmware == Firmware::Rpi {
            for (dest, src) in boot_files.materialize(work.path())? {
                payloads.push((
                    format!("{}{dest}", edgeimg_agent::update::format::BOOT_PREFIX),
                    src,
                ));
            }
        }
        let refs: Vec<(String, &Path)> = payloads
            .iter()
            .map(|(n, p)| (n.clone(), p.as_path()))
            .collect();
        crate::update::write_file(
            &staging_out.path().join(&name),
            crate::update::Header {
                name: cfg.name.clone(),
                board: cfg.board.name.clone(),
                arch: cfg.board.arch.clone(),
                build_id: root_sha[..16].to_string(),
                edgeimg_version: crate::VERSION.into(),
                kernel_version: kernel.version.clone(),
                cmdline: kernel_cmdline.clone(),
                created: epoch,
                key_id: String::new(),
                generation: cfg.update_generation,
                payloads: vec![],
            },
            &refs,
            sk,
        )?;
        progress.note(&format!(
            "update: {name} signed ({:.1}s)",
            t.elapsed().as_secs_f64()
        ));
        names.push(name);
    }
    drop(work); // the tree is big; free it before compressing
    progress.note(&format!(
        "disk: {} ({}) assembled ({:.1}s)",
        img_name,
        config::size::human(layout.size),
        t.elapsed().as_secs_f64()
    ));

    // Artifacts.
    if let Some(ext) = cfg.compression.extension() {
        let t = Instant::now();
        let name = format!("{img_name}.{ext}");
        let bar = progress.bytes(&format!("compress {ext}"), layout.size);
        artifact::compress::compress(
            &img_path,
            &staging_out.path().join(&name),
            cfg.compression,
            &|n| bar.set_position(n),
        )?;
        bar.finish_and_clear();
        progress.note(&format!(
            "artifact: {name} ({:.1}s)",
            t.elapsed().as_secs_f64()
        ));
        names.push(name);
    }
    let bmap_name = format!("{img_name}.bmap");
    let mut bmap = std::fs::File::create(staging_out.path().join(&bmap_name))?;
    artifact::bmap::write_bmap(&img_path, &mut bmap)?;
    names.push(bmap_name);

    let m = manifest::Manifest::collect(manifest::Inputs {
        plan: &plan,
        config_text: cfg_text(&cfg)?,
        base: &base.meta,
        packages: &packages,
        kernel: &kernel_info,
        agent,
        overlays: &overlay_files,
        layout: &layout,
        k3s: k3s.as_ref(),
        selinux: selinux.as_ref(),
        placed: &placed,
        image: &img_path,
        epoch,
        kernel_cmdline: &kernel_cmdline,
        verity: verity.as_ref(),
    })?;
    std::fs::write(
        staging_out.path().join("manifest.json"),
        serde_json::to_vec_pretty(&m)?,
    )?;
    names.push("manifest.json".into());
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut sums = std::fs::File::create(staging_out.path().join("SHA256SUMS"))?;
    artifact::checksums::write_sha256sums(staging_out.path(), &refs, &mut sums)?;
    names.push("SHA256SUMS".into());

    // Publish: every output is complete; rename each to its final name.
    let mut outputs = Vec::new();
    for n in &names {
        let dest = out_dir.join(n);
        std::fs::rename(staging_out.path().join(n), &dest)
            .with_context(|| format!("cannot publish {}", dest.display()))?;
        outputs.push(dest);
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.note(&format!(
        "edgeimg: wrote {} in {:.1}s",
        out_dir.join(&img_name).display(),
        seconds
    ));
    Ok(BuildReport {
        image: out_dir.join(&img_name),
        outputs,
        base_reused: base.reused,
        seconds,
    })
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

/// `SOURCE_DATE_EPOCH` if set (must be a number).
pub fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds")),
        Err(_) => Ok(None),
    }
}

fn prepare_out_dir(out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output directory {}", out.display()))?;
    let probe = tempfile::Builder::new()
        .prefix(".edgeimg-probe-")
        .tempfile_in(out);
    probe.with_context(|| format!("output directory {} is not writable", out.display()))?;
    out.canonicalize()
        .with_context(|| format!("cannot resolve {}", out.display()))
}

/// Temporary output directories of builds that were killed.
fn remove_stale_temps(out: &Path) {
    for e in std::fs::read_dir(out).into_iter().flatten().flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with(".edgeimg-build-")
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
