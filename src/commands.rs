//! One function per subcommand; `main.rs` only dispatches here.

use std::path::{Path, PathBuf};

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

pub fn keygen(prefix: &Path, secure_boot: bool, tuf: bool, name: &str, quiet: bool) -> Result<()> {
    let made = if tuf {
        crate::tuf::keygen(prefix)?
    } else if secure_boot {
        crate::secure_boot::keys::keygen(prefix, name)?
    } else {
        let (key, public) = crate::update::keygen(prefix)?;
        vec![key, public]
    };
    if !quiet {
        for p in made {
            println!("{}", p.display());
        }
    }
    Ok(())
}

pub fn publish(a: crate::cli::PublishArgs, quiet: bool) -> Result<()> {
    crate::publish::run(a, quiet)
}

/// With `--json`, a verification that fails still prints one JSON object on
/// stdout: `what` (the file, directory or lock checked) with `verified`
/// false and the error; the command then fails as it would without `--json`
/// (the error on stderr, the refusal's exit status).
fn json_on_failure<T, E: Into<anyhow::Error>>(
    json: bool,
    mut what: serde_json::Value,
    r: std::result::Result<T, E>,
) -> Result<T> {
    let r = r.map_err(Into::into);
    if let (true, Err(e)) = (json, &r) {
        what["verified"] = false.into();
        what["error"] = format!("{e:#}").into();
        println!("{what}");
    }
    r
}

pub fn update(c: crate::cli::UpdateCommand, quiet: bool) -> Result<()> {
    match c {
        crate::cli::UpdateCommand::Verify {
            file,
            key,
            board,
            arch,
            json,
        } => {
            // A missing input is not a refusal: it exits differently.
            for p in [&file, &key] {
                std::fs::File::open(p).map_err(|cause| crate::exit::Unreadable {
                    path: p.clone(),
                    cause,
                })?;
            }
            let h = json_on_failure(
                json,
                serde_json::json!({ "file": file }),
                crate::update::verify(
                    &file,
                    &key,
                    &crate::update::Expect {
                        board: board.as_deref(),
                        arch: arch.as_deref(),
                    },
                ),
            )?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "file": file, "verified": true, "name": h.name, "build_id": h.build_id,
                        "generation": h.generation, "board": h.board, "arch": h.arch,
                        "kernel_version": h.kernel_version, "key_id": h.key_id,
                    })
                );
                return Ok(());
            }
            if quiet {
                return Ok(());
            }
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
    secure_boot_vars: Option<&Path>,
    tpm_state: Option<&Path>,
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
    if let Some(vars) = secure_boot_vars {
        vm.use_secure_boot_firmware(vars)
            .with_context(|| format!("board {}", b.name))?;
    }
    // Kept until QEMU exits (swtpm also ends by itself when QEMU disconnects).
    let _tpm = match tpm_state {
        Some(dir) => {
            if let Some(note) = tpm_note(&b)? {
                eprintln!("edgeimg: note: {note}");
            }
            let t = crate::qemu::swtpm::Swtpm::start(dir)?;
            vm.tpm_socket = Some(t.socket.clone());
            Some(t)
        }
        None => None,
    };
    eprintln!(
        "edgeimg: booting {} as {} ({}, {}{}{}); quit with Ctrl-A x",
        image.display(),
        b.name,
        b.qemu.machine,
        if vm.kvm { "KVM" } else { "TCG" },
        match secure_boot_vars {
            Some(v) => format!(", Secure Boot firmware, variables in {}", v.display()),
            None => String::new(),
        },
        match tpm_state {
            Some(d) => format!(", TPM2 state in {}", d.display()),
            None => String::new(),
        }
    );
    let status = vm.run_interactive()?;
    if !status.success() {
        anyhow::bail!("{} exited with {status}", b.qemu.binary);
    }
    Ok(())
}

pub fn doctor(
    boards: &[String],
    config: Option<&Path>,
    lock: Option<&Path>,
    bundle: Option<&Path>,
    json: bool,
    quiet: bool,
) -> Result<()> {
    let boards = crate::doctor::boards_for(boards)?;
    let mut checks = crate::doctor::checks(&boards);
    checks.extend(crate::doctor::config_checks(config, lock, bundle));
    let mut missing = Vec::new();
    let mut fixes = Vec::new();
    for c in &checks {
        match &c.found {
            Some(p) if !quiet && !json => println!("ok       {:<40} {}", c.what, p),
            Some(_) => {}
            None if c.package.is_empty() => {
                if !quiet && !json {
                    println!("MISSING  {:<40} fix: {}", c.what, c.purpose);
                }
                fixes.push(format!("{}: {}", c.what, c.purpose));
            }
            None => {
                if !quiet && !json {
                    println!(
                        "MISSING  {:<40} package {} ({})",
                        c.what, c.package, c.purpose
                    );
                }
                missing.push(c.package.clone());
            }
        }
    }
    missing.sort();
    missing.dedup();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "boards": boards.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
                "ready": missing.is_empty() && fixes.is_empty(),
                "install": missing,
                "checks": checks.iter().map(|c| serde_json::json!({
                    "what": c.what, "ok": c.found.is_some(), "found": c.found,
                    "package": (!c.package.is_empty()).then_some(&c.package),
                    "fix": (c.found.is_none() && c.package.is_empty()).then_some(&c.purpose),
                    "purpose": (!c.package.is_empty()).then_some(&c.purpose),
                })).collect::<Vec<_>>(),
            }))?
        );
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "missing tools; install with: apt-get install {} (QEMU and firmware from bookworm-backports on bookworm){}",
            missing.join(" "),
            if fixes.is_empty() {
                String::new()
            } else {
                format!("; also not ready: {}", fixes.join(", "))
            }
        )
    }
    if !fixes.is_empty() {
        anyhow::bail!("not ready: {}", fixes.join("; "));
    }
    if !quiet && !json {
        println!(
            "all tools for {} present",
            boards
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// What `run --tpm-state` can give the guest of board `b`: an error for a
/// board QEMU models without a TPM2 (the Raspberry Pi machine), a note when
/// the guest's kernel cannot use the one QEMU gives it.
fn tpm_note(b: &board::Board) -> Result<Option<&'static str>> {
    if b.firmware != board::Firmware::Uefi {
        anyhow::bail!(
            "--tpm-state: board `{}` has no TPM2 (its firmware has no measured boot, and QEMU's {} machine no TPM device)",
            b.name,
            b.qemu.machine
        );
    }
    Ok((b.arch == edgeimg_contract::arch::Arch::Arm64).then_some(
        "QEMU's arm64 virt machine offers the TPM2 only as a TIS device (tpm-tis-device); \
         the firmware measures into it, but Debian's arm64 kernel has no driver for it \
         (tpm_tis, CONFIG_TCG_TIS), so the guest sees no TPM2 (docs/trusted-boot.md)",
    ))
}

/// The `secure boot` column of `edgeimg boards`.
fn secure_boot_support(b: &board::Board) -> &'static str {
    match (b.firmware, &b.qemu.firmware_code_secure_boot) {
        // The Pi's own signed boot burns OTP fuses: not offered.
        (board::Firmware::Rpi, _) => "none: verity + signed updates",
        // qemu-tests/tests/x86_64_secure_boot.rs and arm64.rs enroll and
        // enforce.
        (board::Firmware::Uefi, Some(_)) => "signed UKI, fleet keys",
        // No Secure Boot firmware to boot it with in QEMU: never enforced
        // in a VM test.
        (board::Firmware::Uefi, None) => "signed UKI, fleet keys (untested)",
    }
}

pub fn boards(json: bool) -> Result<()> {
    if json {
        let mut v = Vec::new();
        for name in board::names() {
            let b = board::load(name)?;
            v.push(serde_json::json!({
                "name": b.name, "arch": b.arch,
                "partition_table": format!("{:?}", b.partition_table).to_lowercase(),
                "firmware": b.firmware.describe(), "qemu_machine": b.qemu.machine,
                "secure_boot": secure_boot_support(&b),
                "description": b.description,
            }));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<10} {:<6} {:<6} {:<26} {:<10} {:<34} description",
        "board", "arch", "table", "firmware", "qemu", "secure boot"
    );
    for name in board::names() {
        let b = board::load(name)?;
        println!(
            "{:<10} {:<6} {:<6} {:<26} {:<10} {:<34} {}",
            b.name,
            b.arch,
            format!("{:?}", b.partition_table).to_lowercase(),
            b.firmware.describe(),
            b.qemu.machine,
            secure_boot_support(&b),
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
                    "flashed {} to {}: wrote {} of {} ({} {}), verified, in {:.1} s ({:.0} MiB/s){}",
                    r.image,
                    r.target,
                    config::size::human(r.written),
                    config::size::human(r.image_size),
                    r.ranges,
                    if r.ranges == 1 { "range" } else { "ranges" },
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

pub fn node(a: crate::cli::NodeArgs, quiet: bool) -> Result<()> {
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
    if a.json {
        let mut v = serde_json::to_value(&cfg)?;
        crate::node::redact_json(&mut v);
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"written": a.out, "node": v}))?
        );
        return Ok(());
    }
    if let Some(p) = a.out.as_ref().filter(|_| !quiet) {
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

pub fn man(out: &Path, quiet: bool) -> Result<()> {
    let files = crate::docgen::man_pages(out)
        .with_context(|| format!("writing man pages into {}", out.display()))?;
    for f in files.iter().filter(|_| !quiet) {
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

/// `edgeimg bundle fetch|import|export|verify|list`.
pub fn bundle(c: crate::cli::BundleCommand, quiet: bool) -> Result<()> {
    use crate::cli::BundleCommand;
    match c {
        BundleCommand::Fetch {
            manifest,
            arch,
            buildkit,
            lock,
            mirror,
        } => bundle_fetch(&manifest, arch, buildkit, &lock_of(&lock), mirror, quiet),
        BundleCommand::Import {
            dir,
            manifest,
            arch,
            buildkit,
            lock,
        } => bundle_import(
            &dir,
            manifest.as_deref(),
            arch,
            buildkit,
            &lock_of(&lock),
            quiet,
        ),
        BundleCommand::Export {
            manifest,
            arch,
            out,
            lock,
        } => bundle_export(&manifest, arch, &out, &lock_of(&lock), quiet),
        BundleCommand::Verify {
            dir: Some(dir),
            manifest,
            arch,
            lock,
            json,
        } => bundle_verify_dir(
            &dir,
            manifest.as_deref(),
            arch,
            &lock_of(&lock),
            json,
            quiet,
        ),
        BundleCommand::Verify {
            dir: None,
            lock,
            json,
            ..
        } => bundle_verify_lock(&lock_of(&lock), json, quiet),
        BundleCommand::List { json } => {
            let l = crate::bundle::list::listing(&crate::bundle::Store::open_default())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&l)?);
            } else {
                print!("{l}");
            }
            Ok(())
        }
    }
}

fn arch_of(a: crate::cli::BundleArch) -> crate::bundle::Arch {
    match a {
        crate::cli::BundleArch::Amd64 => crate::bundle::Arch::Amd64,
        crate::cli::BundleArch::Arm64 => crate::bundle::Arch::Arm64,
    }
}

/// The lock a bundle command uses: `--lock`, else the one beside the config.
fn lock_of(l: &crate::cli::LockArgs) -> PathBuf {
    l.lock
        .clone()
        .unwrap_or_else(|| config::lock_path(l.config.as_deref()))
}

/// One line per asset: `<verb> <file> <size>  sha256 <hash>`.
fn print_assets<'a>(verb: &str, assets: impl IntoIterator<Item = (&'a str, u64, &'a str)>) {
    for (file, size, sha) in assets {
        println!(
            "{verb} {file:<44} {:>10}  sha256 {sha}",
            config::size::human(size)
        );
    }
}

fn bundle_fetch(
    manifest: &str,
    arch: crate::cli::BundleArch,
    buildkit: bool,
    lock: &Path,
    mirror: Option<String>,
    quiet: bool,
) -> Result<()> {
    use crate::bundle::{self, Manifest};
    let m = Manifest::find(manifest)?;
    let opts = bundle::FetchOptions {
        arch: arch_of(arch),
        buildkit,
        lock: lock.to_path_buf(),
        mirror: mirror.filter(|m| !m.is_empty()),
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
            print_assets(how, [(a.file.as_str(), a.size, a.sha256.as_str())]);
        }
        println!(
            "{} ({}) ready; lock {}",
            r.bundle.name,
            r.bundle.arch,
            lock.display()
        );
    }
    Ok(())
}

fn bundle_import(
    dir: &Path,
    manifest: Option<&str>,
    arch: Option<crate::cli::BundleArch>,
    buildkit: bool,
    lock: &Path,
    quiet: bool,
) -> Result<()> {
    use crate::bundle::carry;
    let m = carry::manifest_for_dir(dir, manifest)?;
    for arch in carry::arches_in_dir(dir, &m, arch.map(arch_of))? {
        carry::check_members(dir, &m, arch)?;
        let r = crate::bundle::import(dir, &m, arch, buildkit, lock)?;
        if !quiet {
            print_assets(
                "imported",
                r.bundle
                    .assets()
                    .into_iter()
                    .map(|a| (a.file.as_str(), a.size, a.sha256.as_str())),
            );
            println!(
                "{} ({}) imported; lock {}",
                r.bundle.name,
                r.bundle.arch,
                lock.display()
            );
        }
    }
    Ok(())
}

fn bundle_export(
    manifest: &str,
    arch: crate::cli::BundleArch,
    out: &Path,
    lock: &Path,
    quiet: bool,
) -> Result<()> {
    use crate::bundle::{Manifest, Store, carry};
    let m = Manifest::find(manifest)?;
    let r = carry::export(&Store::open_default(), &m, lock, arch_of(arch), out)?;
    if !quiet {
        print_assets(
            "exported",
            r.files
                .iter()
                .map(|(file, sha, n)| (file.as_str(), *n, sha.as_str())),
        );
        println!(
            "{} ({}) written to {}; on the other host: edgeimg bundle verify {} && edgeimg bundle import {}",
            m.name,
            arch_of(arch),
            r.dir.display(),
            r.dir.display(),
            r.dir.display()
        );
    }
    Ok(())
}

fn bundle_verify_dir(
    dir: &Path,
    manifest: Option<&str>,
    arch: Option<crate::cli::BundleArch>,
    lock: &Path,
    json: bool,
    quiet: bool,
) -> Result<()> {
    use crate::bundle::carry;
    let r = json_on_failure(
        json,
        serde_json::json!({ "dir": dir }),
        carry::manifest_for_dir(dir, manifest).and_then(|m| {
            let arches = carry::arches_in_dir(dir, &m, arch.map(arch_of))?;
            carry::verify_dir(dir, &m, &arches, Some(lock))
        }),
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else if !quiet {
        for a in &r.arches {
            print_assets(
                "ok",
                a.assets
                    .iter()
                    .map(|f| (f.file.as_str(), f.size, f.sha256.as_str())),
            );
            println!(
                "{} ({}) in {}: complete and verified (k3s: {}; manifest {})",
                r.manifest,
                a.arch,
                dir.display(),
                a.k3s_kind,
                r.manifest_source
            );
        }
    }
    Ok(())
}

fn bundle_verify_lock(lock: &Path, json: bool, quiet: bool) -> Result<()> {
    let n = json_on_failure(
        json,
        serde_json::json!({ "lock": lock }),
        crate::bundle::verify(lock),
    )?;
    if json {
        println!(
            "{}",
            serde_json::json!({"lock": lock, "files": n, "verified": true})
        );
    } else if !quiet {
        println!(
            "{n} {} in {} verified against the cache",
            if n == 1 { "file" } else { "files" },
            lock.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_tpm_state_refuses_the_pi_and_warns_on_arm64() {
        let e = tpm_note(&board::load("rpi4").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("board `rpi4` has no TPM2"), "{e}");
        assert_eq!(tpm_note(&board::load("x86_64").unwrap()).unwrap(), None);
        let n = tpm_note(&board::load("arm64").unwrap()).unwrap().unwrap();
        assert!(
            n.contains("tpm_tis") && n.contains("docs/trusted-boot.md"),
            "{n}"
        );
    }
}
