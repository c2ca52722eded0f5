//! One function per subcommand; `main.rs` only dispatches here.

use std::path::Path;

use anyhow::{Context, Result};

use crate::artifact::Compression;
use crate::cli::{BuildArgs, CompressArg, ConfigArgs};
use crate::config::{self, board};
use crate::pipeline::{self, BuildOptions};

pub fn build(c: ConfigArgs, a: BuildArgs, quiet: bool) -> Result<()> {
    let compression = a.compress.map(|c| match c {
        CompressArg::Zstd => Compression::Zstd,
        CompressArg::Xz => Compression::Xz,
        CompressArg::None => Compression::None,
    });
    let mut opts = BuildOptions {
        config: c.config,
        board: c.board,
        out: a.out,
        refresh: a.refresh,
        compression,
        quiet,
        bundle: a.bundle,
        lock: a.lock,
        signing_key: a.signing_key,
        update: a.update,
        secure_boot_keys: a.secure_boot_keys,
    };
    if crate::rootless::needed() {
        // Unprivileged: bootstrap (or reuse) the base here, then run the whole
        // build again as root of a user namespace; it prints its own errors.
        pipeline::prepare_base(&opts)?;
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        let code = crate::rootless::reexec(&args)?;
        if code != 0 {
            std::process::exit(code);
        }
        return Ok(());
    }
    if crate::rootless::is_inner() {
        // The outer half already refreshed the base.
        opts.refresh = false;
    }
    let report = pipeline::build(&opts)?;
    if !quiet {
        for o in &report.outputs {
            println!("{}", o.display());
        }
    }
    Ok(())
}

pub fn keygen(prefix: &Path, secure_boot: bool, name: &str) -> Result<()> {
    let made = if secure_boot {
        crate::secure_boot::keys::keygen(prefix, name)?
    } else {
        let (key, public) = crate::update::keygen(prefix)?;
        vec![key, public]
    };
    for p in made {
        println!("{}", p.display());
    }
    Ok(())
}

pub fn update(c: crate::cli::UpdateCommand) -> Result<()> {
    match c {
        crate::cli::UpdateCommand::Verify {
            file,
            key,
            board,
            arch,
        } => {
            let h = crate::update::verify(
                &file,
                &key,
                &crate::update::Expect {
                    board: board.as_deref(),
                    arch: arch.as_deref(),
                },
            )?;
            println!(
                "{}: OK: {} build {} generation {} for {} ({}), kernel {}, signed with key {}",
                file.display(),
                h.name,
                h.build_id,
                h.generation,
                h.board,
                h.arch,
                h.kernel_version,
                h.key_id
            );
            Ok(())
        }
    }
}

pub fn plan(c: ConfigArgs, bundle: Option<&Path>, json: bool) -> Result<()> {
    let cfg = config::load(c.config.as_deref(), c.board.as_deref())?;
    let plan = crate::plan::make(&cfg, bundle);
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{plan}");
    }
    Ok(())
}

/// The board of an image: `--board`, else manifest.json beside it, else the
/// `-<board>.img` suffix of its name.
pub fn board_of_image(image: &Path, board: Option<&str>) -> Result<board::Board> {
    if let Some(b) = board {
        return Ok(board::load(b)?);
    }
    if let Some((_, m)) = crate::manifest::Manifest::beside(image)? {
        return Ok(board::load(&m.board)?);
    }
    let stem = image
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .trim_end_matches(".img");
    for name in board::names() {
        if stem.ends_with(&format!("-{name}")) {
            return Ok(board::load(name)?);
        }
    }
    anyhow::bail!(
        "cannot tell the board of {}; pass --board ({})",
        image.display(),
        board::names().join(", ")
    )
}

pub fn run(
    image: &Path,
    board: Option<&str>,
    snapshot: bool,
    memory: u32,
    cpus: u32,
    kvm: bool,
) -> Result<()> {
    if !image.is_file() {
        anyhow::bail!("{} is not an image file", image.display());
    }
    let b = board_of_image(image, board)?;
    let work = tempfile::tempdir()?;
    let mut vm = crate::qemu::Vm::new(&b.qemu, image, work.path())?;
    vm.snapshot = snapshot;
    vm.memory_mib = memory;
    vm.cpus = cpus;
    vm.kvm |= kvm;
    eprintln!(
        "edgeimg: booting {} as {} ({}, {}); quit with Ctrl-A x",
        image.display(),
        b.name,
        b.qemu.machine,
        if vm.kvm { "KVM" } else { "TCG" }
    );
    let status = vm.run_interactive()?;
    if !status.success() {
        anyhow::bail!("{} exited with {status}", b.qemu.binary);
    }
    Ok(())
}

pub fn doctor(boards: &[String]) -> Result<()> {
    let boards = crate::doctor::boards_for(boards)?;
    let checks = crate::doctor::checks(&boards);
    let mut missing = Vec::new();
    let mut fixes = Vec::new();
    for c in &checks {
        match &c.found {
            Some(p) => println!("ok       {:<40} {}", c.what, p),
            None if c.package.is_empty() => {
                println!("MISSING  {:<40} fix: {}", c.what, c.purpose);
                fixes.push(c.what.clone());
            }
            None => {
                println!(
                    "MISSING  {:<40} package {} ({})",
                    c.what, c.package, c.purpose
                );
                missing.push(c.package.clone());
            }
        }
    }
    if missing.is_empty() && !fixes.is_empty() {
        anyhow::bail!("not ready: {} (see the fix lines above)", fixes.join(", "));
    }
    if missing.is_empty() {
        println!(
            "all tools for {} present",
            boards
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    } else {
        missing.sort();
        missing.dedup();
        anyhow::bail!(
            "missing tools; install with: apt-get install {} (QEMU and firmware from bookworm-backports on bookworm)",
            missing.join(" ")
        )
    }
}

pub fn boards() -> Result<()> {
    println!(
        "{:<10} {:<6} {:<6} {:<26} {:<10} {:<30} description",
        "board", "arch", "table", "firmware", "qemu", "secure boot"
    );
    for name in board::names() {
        let b = board::load(name)?;
        println!(
            "{:<10} {:<6} {:<6} {:<26} {:<10} {:<30} {}",
            b.name,
            b.arch,
            format!("{:?}", b.partition_table).to_lowercase(),
            b.firmware.describe(),
            b.qemu.machine,
            // The Pi's own signed boot burns OTP fuses: not offered.
            match b.firmware {
                board::Firmware::Uefi => "UEFI, fleet keys",
                board::Firmware::Rpi => "none: verity + signed updates",
            },
            b.description
        );
    }
    Ok(())
}

pub fn flash(a: crate::cli::FlashArgs, quiet: bool) -> Result<()> {
    let o = crate::flash::FlashOptions {
        image: a.image,
        target: a.target,
        bmap: a.bmap,
        no_bmap: a.no_bmap,
        to_file: a.to_file,
        yes: a.yes,
        node: a.node,
        json: a.json,
        quiet,
    };
    match crate::flash::flash(&o) {
        Ok(r) => {
            if !quiet && !a.json {
                let secs = r.seconds.max(0.001);
                println!(
                    "flashed {} to {}: wrote {} of {} ({} ranges), verified, in {:.1} s ({:.0} MiB/s){}",
                    r.image,
                    r.target,
                    config::size::human(r.written),
                    config::size::human(r.image_size),
                    r.ranges,
                    secs,
                    r.written as f64 / secs / 1048576.0,
                    if r.node_file {
                        "; node file written"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        Err(e) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"event": "error", "message": e.to_string()})
                );
            }
            Err(e.into())
        }
    }
}

pub fn inspect(image: &Path, json: bool) -> Result<()> {
    let r = crate::inspect::inspect(image)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{r}");
    }
    Ok(())
}

pub fn node(a: crate::cli::NodeArgs) -> Result<()> {
    // The environment's token is for node files that ask for K3s.
    let wants_k3s = a.role.is_some() || a.server.is_some() || a.cluster_init;
    if !wants_k3s && a.token_from.is_none() && std::env::var_os(crate::node::TOKEN_ENV).is_some() {
        eprintln!(
            "note: {} is set, but this node file asks for no K3s role or server: the token is not written (give --role and --server to use it)",
            crate::node::TOKEN_ENV
        );
    }
    let spec = crate::node::NodeSpec {
        hostname: a.hostname,
        users: a.users,
        groups: a.groups,
        ssh_keys: a.ssh_keys,
        ssh_key_files: a.ssh_key_files,
        shells: a.shells,
        role: a.role,
        server: a.server,
        cluster_init: a.cluster_init,
        token: crate::node::read_token(a.token_from.as_deref(), wants_k3s)?,
        node_labels: a.node_labels,
        node_taints: a.node_taints,
    };
    let cfg = crate::node::make(&spec)?;
    let text = crate::node::render(&cfg)?;
    crate::node::write(&text, a.out.as_deref(), a.force, spec.token.is_some())?;
    if let Some(p) = &a.out {
        eprintln!(
            "wrote {}; flash it with: edgeimg flash IMAGE DEVICE --node {}",
            p.display(),
            p.display()
        );
    }
    Ok(())
}

/// `edgeimg kubeconfig`: prints what was merged, never a credential.
pub fn kubeconfig(a: crate::cli::KubeconfigArgs, quiet: bool) -> Result<()> {
    use crate::kubeconfig::{self, Options, Source};
    let source = match (a.from, a.ssh) {
        (Some(f), _) => Source::File(f),
        (None, Some(target)) => Source::Ssh {
            target,
            options: a.ssh_options,
        },
        (None, None) => anyhow::bail!("give --from FILE or --ssh USER@HOST"),
    };
    let r = kubeconfig::merge(&Options {
        source,
        server: a.server,
        name: a.name,
        use_context: a.use_context,
        port: a.port,
        target: None,
    })?;
    if !quiet {
        println!(
            "{} cluster, user and context {:?} (server {}) in {}{}; current-context {:?}",
            if r.unchanged {
                "unchanged:"
            } else if r.replaced {
                "replaced"
            } else {
                "added"
            },
            r.name,
            r.server,
            r.target.display(),
            if r.created { " (created)" } else { "" },
            r.current_context
        );
    }
    Ok(())
}

pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    crate::docgen::completions(shell, &mut std::io::stdout());
    Ok(())
}

pub fn man(out: &Path) -> Result<()> {
    let files = crate::docgen::man_pages(out)
        .with_context(|| format!("writing man pages into {}", out.display()))?;
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

pub fn docs(write: Option<&Path>, check: Option<&Path>) -> Result<()> {
    let text = crate::docgen::cli_reference();
    if let Some(p) = write {
        std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    } else if let Some(p) = check {
        let have =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        if have != text {
            anyhow::bail!(
                "{} is stale: regenerate it with `edgeimg docs --write {}`",
                p.display(),
                p.display()
            );
        }
    } else {
        print!("{text}");
    }
    Ok(())
}

/// `edgeimg bundle fetch|import|verify|list`.
pub fn bundle(c: crate::cli::BundleCommand, quiet: bool) -> Result<()> {
    use crate::bundle::{self, Arch, Manifest};
    use crate::cli::{BundleArch, BundleCommand};
    let arch_of = |a: BundleArch| match a {
        BundleArch::Amd64 => Arch::Amd64,
        BundleArch::Arm64 => Arch::Arm64,
    };
    let size = |n: u64| config::size::human(n);
    match c {
        BundleCommand::Fetch {
            manifest,
            arch,
            buildkit,
            lock,
            mirror,
        } => {
            let m = Manifest::find(&manifest)?;
            let mirror = mirror.filter(|m| !m.is_empty());
            let opts = bundle::FetchOptions {
                arch: arch_of(arch),
                buildkit,
                lock: lock.clone(),
                mirror,
                quiet,
            };
            let r = bundle::fetch(&m, &opts)?;
            if !quiet {
                for a in r.bundle.assets() {
                    let how = if r.downloaded.contains(&a.file) {
                        "fetched"
                    } else {
                        "cached "
                    };
                    println!(
                        "{how} {:<44} {:>10}  sha256 {}",
                        a.file,
                        size(a.size),
                        a.sha256
                    );
                }
                println!(
                    "{} ({}) ready; lock {}",
                    r.bundle.name,
                    r.bundle.arch,
                    lock.display()
                );
            }
        }
        BundleCommand::Import {
            dir,
            manifest,
            arch,
            buildkit,
            lock,
        } => {
            let m = Manifest::find(&manifest)?;
            let r = bundle::import(&dir, &m, arch_of(arch), buildkit, &lock)?;
            if !quiet {
                for a in r.bundle.assets() {
                    println!(
                        "imported {:<44} {:>10}  sha256 {}",
                        a.file,
                        size(a.size),
                        a.sha256
                    );
                }
                println!(
                    "{} ({}) imported; lock {}",
                    r.bundle.name,
                    r.bundle.arch,
                    lock.display()
                );
            }
        }
        BundleCommand::Verify { lock } => {
            let n = bundle::verify(&lock)?;
            if !quiet {
                println!(
                    "{n} file(s) in {} verified against the cache",
                    lock.display()
                );
            }
        }
        BundleCommand::List => {
            println!("shipped manifests:");
            for m in bundle::manifest::shipped()? {
                let arches = m
                    .arches
                    .keys()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                println!(
                    "  {:<24} k3s {:<16} nerdctl {:<8} {}",
                    m.name, m.k3s_version, m.nerdctl_version, arches
                );
            }
            let store = bundle::Store::open_default();
            let listing = store.listing()?;
            println!("cached in {}:", store.root().display());
            if listing.is_empty() {
                println!("  (nothing)");
            }
            let mut groups: std::collections::BTreeMap<
                (String, Arch),
                Vec<bundle::store::IndexRecord>,
            > = Default::default();
            for r in listing {
                groups
                    .entry((r.bundle.clone(), r.arch))
                    .or_default()
                    .push(r);
            }
            for ((name, arch), files) in groups {
                let k3s_version = files
                    .iter()
                    .find(|f| f.role == bundle::Role::K3s)
                    .map(|f| f.version.clone())
                    .unwrap_or_else(|| "?".into());
                let total: u64 = files.iter().map(|f| f.size).sum();
                println!(
                    "  {name:<24} {arch:<6} k3s {k3s_version:<16} {:>10}  {} file(s)",
                    size(total),
                    files.len()
                );
                for f in files {
                    println!("      {:<44} {:>10}  {}", f.file, size(f.size), f.version);
                }
            }
        }
    }
    Ok(())
}
