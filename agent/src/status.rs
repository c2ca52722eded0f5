//! `edgeimg-agent status [--json]`: is this node ready, and since when.

use crate::config;
use crate::error::Result;
use crate::fsutil;
use crate::ready::ReadyInfo;
use crate::root::Root;
use crate::schema::{
    BOOTS_LOG, CLUSTER_NOT_READY_PREFIX, CLUSTER_READY_LINE, CLUSTER_READY_STAND_IN_LINE, K3sRole,
    READY_FILE, READY_LINE,
};
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
    /// With K3s: whether `ready` saw the node report Ready in this boot;
    /// `null` for an image without K3s.
    pub cluster_ready: Option<bool>,
    /// The K3s role first boot set up (`"server"`/`"agent"`); `null` without
    /// K3s or before first boot.
    pub k3s_role: Option<K3sRole>,
    /// Why the cluster is not ready (absent when ready or without K3s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_reason: Option<String>,
    /// The image carries edgeimg's test stand-in bundle, not K3s.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stand_in: bool,
}

/// Collect the status from files under `root`.
pub fn collect(root: &Root) -> Result<Status> {
    let boot_id = config::boot_id(root).ok();
    let stamp = crate::firstboot::read_stamp(root)?;
    let stamp_role = stamp.as_ref().and_then(|s| s.k3s_role);
    let ready_info: Option<ReadyInfo> = config::read_json(&root.path(READY_FILE))?;
    let boots = fsutil::read_opt(&root.path(BOOTS_LOG))?
        .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count() as u64)
        .unwrap_or(0);
    let hostname = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| fsutil::read_opt(&root.path(p)).ok().flatten())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty());
    // /run is a tmpfs, but compare boot ids anyway so a stale file can't lie.
    let ready_now = ready_info
        .as_ref()
        .is_some_and(|r| boot_id.as_deref() == Some(r.boot_id.as_str()));
    let reason = if stamp.is_none() {
        Some("first boot did not complete".to_string())
    } else if !ready_now {
        Some("edgeimg-ready.service has not run in this boot".to_string())
    } else {
        None
    };
    // image.json is on the read-only root; if it cannot be read, `status`
    // still reports what it can (no K3s fields).
    let k3s = config::load_image(root).ok().and_then(|i| i.k3s);
    let cluster_ready = k3s
        .as_ref()
        .map(|_| ready_now && ready_info.as_ref().and_then(|r| r.cluster_ready) == Some(true));
    let cluster_reason = match (cluster_ready, &reason) {
        (Some(false), Some(_)) => Some("the node is not ready".to_string()),
        (Some(false), None) => Some(
            ready_info
                .as_ref()
                .and_then(|r| r.cluster_error.clone())
                .unwrap_or_else(|| {
                    "waiting for the node to report Ready (edgeimg-ready.service)".to_string()
                }),
        ),
        _ => None,
    };
    Ok(Status {
        ready: reason.is_none(),
        firstboot_done: stamp.is_some(),
        firstboot_completed_at: stamp.as_ref().map(|s| s.completed_at),
        firstboot_this_boot: stamp
            .as_ref()
            .is_some_and(|s| boot_id.as_deref() == Some(s.boot_id.as_str())),
        firstboot_boot_id: stamp.as_ref().map(|s| s.boot_id.clone()),
        boots,
        hostname,
        reason,
        cluster_ready,
        k3s_role: k3s.as_ref().and(stamp_role),
        cluster_reason,
        stand_in: k3s.is_some_and(|k| k.stand_in),
    })
}

/// Human-readable report; the first line is the ready line or the reason.
pub fn render_human(s: &Status) -> String {
    let mut out = match &s.reason {
        None => format!("{READY_LINE}\n"),
        Some(r) => format!("edgeimg: node not ready: {r}\n"),
    };
    match (s.cluster_ready, &s.cluster_reason) {
        (Some(true), _) if s.stand_in => out += &format!("{CLUSTER_READY_STAND_IN_LINE}\n"),
        (Some(true), _) => out += &format!("{CLUSTER_READY_LINE}\n"),
        (Some(false), r) => {
            out += &format!(
                "{CLUSTER_NOT_READY_PREFIX}{}\n",
                r.as_deref().unwrap_or("unknown")
            )
        }
        (None, _) => {}
    }
    match (s.firstboot_completed_at, &s.firstboot_boot_id) {
        (Some(at), Some(id)) => {
            let when = if s.firstboot_this_boot {
                " (this boot)"
            } else {
                ""
            };
            out += &format!("first boot: done {} in boot {id}{when}\n", rfc3339_utc(at));
        }
        _ => out += "first boot: not done\n",
    }
    out += &format!(
        "hostname:   {}\n",
        s.hostname.as_deref().unwrap_or("(unknown)")
    );
    out += &format!("boots:      {}\n", s.boots);
    if s.cluster_ready.is_some() {
        let role = s
            .k3s_role
            .map(|r| format!("{r} ({})", r.unit()))
            .unwrap_or_else(|| "(not set up yet)".into());
        out += &format!(
            "k3s role:   {role}{}\n",
            if s.stand_in {
                ", stand-in bundle (not K3s)"
            } else {
                ""
            }
        );
    }
    out
}

/// Print the status; returns whether the node is ready and, with K3s, the
/// cluster too (exit code 0 vs 1).
pub fn run(root: &Root, json: bool) -> Result<bool> {
    let s = collect(root)?;
    if json {
        println!("{}", serde_json::to_string(&s).expect("status serializes"));
    } else {
        print!("{}", render_human(&s));
    }
    Ok(s.ready && s.cluster_ready != Some(false))
}
