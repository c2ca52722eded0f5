//! `edgeimg doctor`: every host tool the chosen boards need, found or not, with
//! the package that provides it.

use std::path::Path;

use crate::cmd::{self, Tool};
use crate::config::board::{self, Board, QemuBoot};
use edgeimg_contract::arch::Arch;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub what: String,
    pub package: String,
    pub purpose: String,
    pub found: Option<String>,
}

pub fn checks(boards: &[Board]) -> Vec<Check> {
    // cmd's table, each tool once (debugfs is a build and an SELinux tool).
    // Rootless prerequisites are listed only for an unprivileged caller
    // (rootless_checks), with what is missing and its fix.
    let mut out: Vec<Check> = Vec::new();
    for (_, tools) in cmd::GROUPS {
        if std::ptr::eq(*tools, cmd::ROOTLESS_TOOLS) {
            continue;
        }
        for t in *tools {
            if !out.iter().any(|c| c.what == t.name) {
                out.push(tool_check(t));
            }
        }
    }
    for b in boards {
        let mut tools = vec![Tool::owned(
            &b.qemu.binary,
            &b.qemu.package,
            "boot images (edgeimg run, VM tests)",
        )];
        if b.qemu.boot == QemuBoot::DirectKernel {
            tools.extend([cmd::FDTPUT, cmd::FDTGET]);
        }
        for t in tools {
            if !out.iter().any(|c| c.what == t.name) {
                out.push(tool_check(&t));
            }
        }
        for f in [
            &b.qemu.firmware_code,
            &b.qemu.firmware_vars,
            &b.qemu.firmware_code_secure_boot,
        ]
        .into_iter()
        .flatten()
        {
            if !out.iter().any(|c| &c.what == f) {
                out.push(Check {
                    what: f.clone(),
                    package: b.qemu.firmware_package.clone().unwrap_or_default(),
                    purpose: format!("UEFI firmware for {} VMs", b.name),
                    found: Path::new(f).exists().then(|| f.clone()),
                });
            }
        }
        if let Some(c) = foreign_arch_check(b.arch) {
            if !out.iter().any(|x| x.what == c.what) {
                out.push(c);
            }
        }
    }
    out.extend(rootless_checks());
    out
}

/// As an unprivileged user, builds need user namespaces with sub-ids (root
/// builds do not): one line per prerequisite, each missing one with its fix.
fn rootless_checks() -> Vec<Check> {
    if crate::rootless::is_root() {
        return Vec::new();
    }
    let problems = crate::rootless::problems();
    let mut out: Vec<Check> = cmd::ROOTLESS_TOOLS.iter().map(tool_check).collect();
    for (what, fix) in &problems {
        let tool =
            out.iter().any(|c| &c.what == what) || cmd::BUILD_TOOLS.iter().any(|t| t.name == what);
        if tool {
            continue; // listed as a tool, with its package
        }
        out.push(Check {
            what: format!("rootless: {what}"),
            package: String::new(),
            purpose: fix.clone(),
            found: None,
        });
    }
    if problems.is_empty() {
        out.push(Check {
            what: "rootless: sub-ids, user namespaces".into(),
            package: String::new(),
            purpose: String::new(),
            found: Some("/etc/subuid and /etc/subgid ranges; user namespaces enabled".into()),
        });
    }
    out
}

/// The host's architecture (a host edgeimg does not build for counts as
/// amd64: every target is then foreign to it).
pub fn host_arch() -> Arch {
    Arch::host().unwrap_or(Arch::Amd64)
}

/// Why a root for `arch` cannot be bootstrapped on this host, with the fix.
pub fn foreign_arch_problem(arch: Arch) -> Option<String> {
    let c = foreign_arch_check(arch)?;
    if c.found.is_some() {
        None
    } else {
        Some(c.purpose)
    }
}

/// Bootstrapping a foreign-arch root runs its programs through qemu-user via
/// binfmt_misc: the handler must be registered, not just installed.
fn foreign_arch_check(arch: Arch) -> Option<Check> {
    if arch == host_arch() {
        return None;
    }
    let handler = format!("/proc/sys/fs/binfmt_misc/{}", arch.qemu_user());
    let qemu = format!("{}-static", arch.qemu_user());
    let handler = handler.as_str();
    let qemu = qemu.as_str();
    let registered = std::fs::read_to_string(handler).is_ok_and(|s| s.starts_with("enabled"));
    let installed = cmd::which(qemu).is_some();
    Some(Check {
        // The row names the handler; where it lives is in the fix text.
        what: format!("binfmt {}", handler.rsplit('/').next().unwrap_or(handler)),
        package: "qemu-user-static binfmt-support".into(),
        purpose: if !installed {
            format!("run {arch} programs while bootstrapping: install qemu-user-static")
        } else if !Path::new("/proc/sys/fs/binfmt_misc/register").exists() {
            format!(
                "mount binfmt_misc: `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc`, then `update-binfmts --enable {}`",
                arch.qemu_user()
            )
        } else {
            format!(
                "register the handler: `update-binfmts --enable {}` (package binfmt-support)",
                arch.qemu_user()
            )
        },
        found: (registered && installed).then(|| format!("{handler} (enabled)")),
    })
}

fn tool_check(t: &Tool) -> Check {
    let mut found = cmd::which(t.name).map(|p| p.display().to_string());
    // Which erofs-utils decides which root_compression values build.
    if found.is_some() && t.name == cmd::MKFS_EROFS.name {
        found = crate::fs::erofs::MkfsErofs::probe()
            .map(|m| m.describe())
            .ok()
            .or(found);
    }
    Check {
        what: t.name.to_string(),
        package: t.package.to_string(),
        purpose: t.purpose.to_string(),
        found,
    }
}

pub fn boards_for(names: &[String]) -> anyhow::Result<Vec<Board>> {
    let names: Vec<String> = if names.is_empty() {
        board::names().into_iter().map(String::from).collect()
    } else {
        names.to_vec()
    };
    names
        .iter()
        .map(|n| board::load(n).map_err(Into::into))
        .collect()
}

/// What a build of the config needs besides tools: the lock readable, and
/// (with K3s enabled) the config's bundle cached and locked for the config's
/// board. A gap's `purpose` is the command that fixes it.
/// With `bundle_dir` (a `build --bundle DIR`), that directory is checked as
/// `bundle verify DIR` does, instead of the cache.
pub fn config_checks(
    config: Option<&Path>,
    lock: Option<&Path>,
    bundle_dir: Option<&Path>,
) -> Vec<Check> {
    use crate::bundle::{self, LockFile, Manifest};
    let lock = lock
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate::config::lock_path(config));
    let fix = |what: String, purpose: String| Check {
        what,
        package: String::new(),
        purpose,
        found: None,
    };
    let mut out = Vec::new();
    let lock_what = format!("bundle lock {}", lock.display());
    match LockFile::load_or_empty(&lock) {
        Ok(l) if lock.exists() => out.push(Check {
            found: Some(format!(
                "{} {}",
                l.bundles.len(),
                if l.bundles.len() == 1 {
                    "entry"
                } else {
                    "entries"
                }
            )),
            ..fix(lock_what, String::new())
        }),
        Ok(_) => {}
        Err(e) => out.push(fix(
            lock_what,
            format!("{e}; repair or delete it, then run `edgeimg bundle fetch`"),
        )),
    }
    let cfg = match crate::config::load(config, None) {
        Ok(c) => c,
        Err(e) => {
            out.push(fix("configuration".into(), format!("{e}")));
            return out;
        }
    };
    let Some(k) = &cfg.k3s else {
        return out;
    };
    let what = format!("K3s bundle {} ({})", k.bundle, cfg.board.arch);
    let arch = cfg.board.arch;
    let flag = if k.buildkit { " --buildkit" } else { "" };
    let get = format!(
        "`edgeimg bundle fetch {} --arch {arch}{flag}`, or carry it in: `edgeimg bundle import DIR`",
        k.bundle
    );
    if let Some(dir) = bundle_dir {
        let checked = Manifest::for_build(&k.bundle, Some(dir)).and_then(|m| {
            bundle::carry::check_members(dir, &m, arch)?;
            let b = bundle::from_dir(dir, &m, arch, k.buildkit)?;
            b.check_lock(&lock)?;
            Ok(b)
        });
        out.push(match checked {
            Ok(b) => Check {
                found: Some(format!("directory {} verified", dir.display())),
                ..fix(format!("K3s bundle {} ({})", b.name, b.arch), String::new())
            },
            Err(e) => fix(what, format!("{e}")),
        });
        return out;
    }
    match Manifest::find(&k.bundle).and_then(|m| bundle::resolve(&m, &lock, arch, k.buildkit)) {
        Ok(b) => out.push(Check {
            found: Some(format!("cached, locked in {}", lock.display())),
            ..fix(format!("K3s bundle {} ({})", b.name, b.arch), String::new())
        }),
        Err(bundle::BundleError::NotCached { missing, .. }) => {
            out.push(fix(what, format!("not cached ({missing}): run {get}")))
        }
        Err(e) => out.push(fix(what, format!("{e}"))),
    }
    out
}
