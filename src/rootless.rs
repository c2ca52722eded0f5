//! Rootless builds. As an unprivileged user, `edgeimg build` bootstraps the base
//! with `mmdebstrap --mode=unshare`, then runs the rest of the build again
//! inside a user namespace mapped the way mmdebstrap maps its own: uid/gid 0 is
//! the calling user, 1..65535 the first range of the user's /etc/subuid and
//! /etc/subgid. Inside it the process is root of that namespace, so the base
//! unpacks with its real owners, every staging step runs exactly as in a root
//! build, and mkfs.erofs records the owners it sees (the same numbers a root
//! build sees): the image bytes are the same. Nothing is ever owned by the
//! host's root, and no xattr is written by the host's root.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd::{self, Cmd, NEWGIDMAP, UNSHARE};

/// Set in the environment of the re-executed build (the inner half).
pub const INNER_ENV: &str = "EDGEIMG_USERNS";

/// True with euid 0: the host's root, or root of the namespace a rootless
/// build re-executed itself into.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True in the build re-executed inside the user namespace.
pub fn is_inner() -> bool {
    std::env::var_os(INNER_ENV).is_some()
}

/// True when this build must hand its staging half to a user namespace.
pub fn needed() -> bool {
    !is_root() && !is_inner()
}

/// The current user's name (for /etc/subuid lookups).
fn user_name() -> Option<String> {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy
    // the name out before any other call could overwrite it.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// The first sub-id range of the current user in `file` (`name:start:count`,
/// or the numeric uid in place of the name), if it holds at least 65536 ids.
pub fn subid_range(file: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(file).ok()?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() }.to_string();
    let name = user_name();
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let who = f.next()?;
        if who != uid && Some(who) != name.as_deref() {
            return None;
        }
        let start: u64 = f.next()?.parse().ok()?;
        let count: u64 = f.next()?.parse().ok()?;
        (count >= 65536).then_some((start, count))
    })
}

/// The first id after every range given out in `file` (at least 100000).
fn free_start(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':').skip(1);
            Some(f.next()?.trim().parse::<u64>().ok()? + f.next()?.trim().parse::<u64>().ok()?)
        })
        .fold(100_000, u64::max)
}

/// Why this host cannot run a rootless build, each with its fix; empty when it can.
pub fn problems() -> Vec<(String, String)> {
    let user = user_name().unwrap_or_else(|| "USER".into());
    let mut out = Vec::new();
    for t in [cmd::NEWUIDMAP, NEWGIDMAP, UNSHARE] {
        if cmd::which(t.name).is_none() {
            out.push((t.name.to_string(), format!("apt-get install {}", t.package)));
        }
    }
    for (file, tool) in [
        ("/etc/subuid", "usermod --add-subuids"),
        ("/etc/subgid", "usermod --add-subgids"),
    ] {
        if subid_range(Path::new(file)).is_none() {
            let start = free_start(Path::new(file));
            out.push((
                format!("{file} range for {user}"),
                format!("as root: {tool} {start}-{} {user}", start + 65535),
            ));
        }
    }
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        out.push((
            "user.max_user_namespaces".into(),
            "as root: sysctl -w user.max_user_namespaces=10000".into(),
        ));
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        out.push((
            "kernel.unprivileged_userns_clone".into(),
            "as root: sysctl -w kernel.unprivileged_userns_clone=1".into(),
        ));
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        out.push((
            "kernel.apparmor_restrict_unprivileged_userns".into(),
            "as root: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0".into(),
        ));
    }
    out
}

/// Fails with every missing prerequisite and its fix.
pub fn check() -> Result<()> {
    let p = problems();
    if p.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = p.iter().map(|(w, fix)| format!("  {w}: {fix}")).collect();
    anyhow::bail!(
        "building as an unprivileged user needs user namespaces with sub-ids (or run as root); missing:\n{}",
        lines.join("\n")
    )
}

/// Runs this program again with `args` inside the user namespace and returns
/// its exit code. The inner process inherits the terminal and the environment.
pub fn reexec(args: &[OsString]) -> Result<i32> {
    let exe = std::env::current_exe().context("cannot find the edgeimg binary to re-execute")?;
    // --map-auto maps 1..65535 onto the first sub-id range, --map-root-user maps
    // 0 onto the caller: the same layout as mmdebstrap's unshare mode.
    let status = Cmd::new(UNSHARE)
        .args(["--map-auto", "--map-root-user", "--"])
        .arg(&exe)
        .args(args)
        .env(INNER_ENV, "1")
        .status()
        .context("cannot enter the user namespace")?;
    Ok(status.code().unwrap_or(1))
}
