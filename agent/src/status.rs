//! `edgeimg-agent status [--json]`: is this node ready, and since when.

use crate::config;
use crate::error::Result;
use crate::fsutil;
use crate::ready::ReadyInfo;
use crate::root::Root;
use crate::schema::{BOOTS_LOG, READY_FILE, READY_LINE};
use crate::timefmt::rfc3339_utc;
use serde::Serialize;

/// Everything `status` reports; `--json` prints it as one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Ready for this boot (edgeimg-ready.service ran in this boot).
    pub ready: bool,
    /// First boot completed (the stamp exists).
    pub firstboot_done: bool,
    /// Unix seconds when first boot completed.
    pub firstboot_completed_at: Option<u64>,
    /// Boot id of the boot that completed first boot.
    pub firstboot_boot_id: Option<String>,
    /// Whether that was the current boot.
    pub firstboot_this_boot: bool,
    /// Number of boots recorded in the boots log.
    pub boots: u64,
    /// Current hostname (kernel's, else /etc/hostname).
    pub hostname: Option<String>,
    /// Why the node is not ready (absent when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Collect the status from files under `root`.
pub fn collect(root: &Root) -> Result<Status> {
    let boot_id = config::boot_id(root).ok();
    let stamp = crate::firstboot::read_stamp(root)?;
    let ready_info: Option<ReadyInfo> = config::read_json(&root.path(READY_FILE))?;
    let boots = fsutil::read_opt(&root.path(BOOTS_LOG))?.map(|s| s.lines().filter(|l| !l.trim().is_empty()).count() as u64).unwrap_or(0);
    let hostname = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| fsutil::read_opt(&root.path(p)).ok().flatten())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty());
    // /run is a tmpfs, but compare boot ids anyway so a stale file can't lie.
    let ready_now = ready_info.as_ref().is_some_and(|r| boot_id.as_deref() == Some(r.boot_id.as_str()));
    let reason = if stamp.is_none() {
        Some("first boot did not complete".to_string())
    } else if !ready_now {
        Some("edgeimg-ready.service has not run in this boot".to_string())
    } else {
        None
    };
    Ok(Status {
        ready: reason.is_none(),
        firstboot_done: stamp.is_some(),
        firstboot_completed_at: stamp.as_ref().map(|s| s.completed_at),
        firstboot_this_boot: stamp.as_ref().is_some_and(|s| boot_id.as_deref() == Some(s.boot_id.as_str())),
        firstboot_boot_id: stamp.map(|s| s.boot_id),
        boots,
        hostname,
        reason,
    })
}

/// Human-readable report; the first line is the ready line or the reason.
pub fn render_human(s: &Status) -> String {
    let mut out = match &s.reason {
        None => format!("{READY_LINE}\n"),
        Some(r) => format!("edgeimg: node not ready: {r}\n"),
    };
    match (s.firstboot_completed_at, &s.firstboot_boot_id) {
        (Some(at), Some(id)) => {
            let when = if s.firstboot_this_boot { " (this boot)" } else { "" };
            out += &format!("first boot: done {} in boot {id}{when}\n", rfc3339_utc(at));
        }
        _ => out += "first boot: not done\n",
    }
    out += &format!("hostname:   {}\n", s.hostname.as_deref().unwrap_or("(unknown)"));
    out += &format!("boots:      {}\n", s.boots);
    out
}

/// Print the status; returns whether the node is ready (exit code 0 vs 1).
pub fn run(root: &Root, json: bool) -> Result<bool> {
    let s = collect(root)?;
    if json {
        println!("{}", serde_json::to_string(&s).expect("status serializes"));
    } else {
        print!("{}", render_human(&s));
    }
    Ok(s.ready)
}
