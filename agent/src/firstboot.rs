//! `edgeimg-agent firstboot`: the once-per-device setup, run by
//! edgeimg-firstboot.service. Each step is idempotent, and the stamp is
//! written only after all succeeded, so a crash or power cut mid-way simply
//! reruns everything on the next boot.

use crate::config;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::root::Root;
use crate::schema::{FIRSTBOOT_STAMP, K3sRole, merge_users};
use crate::timefmt::rfc3339_utc;
use serde::{Deserialize, Serialize};

/// The stamp at [`FIRSTBOOT_STAMP`], proof that first boot completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Unix seconds when the last step finished.
    pub completed_at: u64,
    /// Boot id of the boot that completed first boot.
    pub boot_id: String,
    /// Version of the agent that ran it.
    pub agent_version: String,
    /// The hostname that was set.
    pub hostname: String,
    /// What each step did, in order.
    pub steps: Vec<StepRecord>,
    /// The K3s role first boot set up; absent for a plain appliance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s_role: Option<K3sRole>,
}

/// One step's name and outcome in the stamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step name: grow, machine-id, hostname, ssh-host-keys, users, k3s.
    pub name: String,
    /// What it did (no secrets).
    pub detail: String,
}

/// Read the stamp; `None` when first boot has not completed.
pub fn read_stamp(root: &Root) -> Result<Option<Stamp>> {
    config::read_json(&root.path(FIRSTBOOT_STAMP))
}

/// Prefix an error with the name of the step that failed.
fn step_err(name: &str) -> impl Fn(Error) -> Error + '_ {
    move |e| e.context(format!("first boot step `{name}` failed"))
}

/// Run first boot unless the stamp exists. Errors name the failed step.
pub fn run(root: &Root) -> Result<()> {
    if let Some(stamp) = read_stamp(root)? {
        crate::log(format!(
            "first boot already done on {}",
            rfc3339_utc(stamp.completed_at)
        ));
        return Ok(());
    }
    let boot_id = config::boot_id(root).map_err(step_err("config"))?;
    let image = config::load_image(root).map_err(step_err("config"))?;
    let node = config::load_node(root, &image).map_err(step_err("config"))?;
    match &node {
        Some(_) => crate::log("using node configuration from the boot partition"),
        None => crate::log("no node configuration on the boot partition"),
    }
    let node_k3s = node.as_ref().and_then(|n| n.k3s.as_ref());
    // Merge and check K3s settings before any step, so a bad node.toml changes nothing.
    let k3s_plan = match &image.k3s {
        Some(k) => Some(crate::k3s::plan_on_device(root, k, node_k3s).map_err(step_err("config"))?),
        None => {
            if node_k3s.is_some() {
                crate::log(
                    "node.toml has a [k3s] table but the image was built without K3s; ignoring it",
                );
            }
            None
        }
    };
    let users = merge_users(
        &image.users,
        node.as_ref().map(|n| n.users.as_slice()).unwrap_or(&[]),
    );

    let mut steps = Vec::new();
    let mut record = |name: &str, res: Result<String>| -> Result<String> {
        let detail = res.map_err(step_err(name))?;
        crate::log(format!("{name}: {detail}"));
        steps.push(StepRecord {
            name: name.into(),
            detail: detail.clone(),
        });
        Ok(detail)
    };
    record("grow", crate::grow::step(root))?;
    record("machine-id", crate::machine_id::ensure(root))?;
    let hostname = record(
        "hostname",
        crate::hostname::step(root, &image, node.as_ref()),
    )?;
    record("ssh-host-keys", crate::sshkeys::ensure(root))?;
    record("users", crate::users::step(root, &users))?;
    if let Some(plan) = &k3s_plan {
        record("k3s", crate::k3s::step(root, plan, &hostname))?;
    }

    let stamp = Stamp {
        completed_at: config::now_secs(),
        boot_id,
        agent_version: crate::AGENT_VERSION.into(),
        hostname,
        steps,
        k3s_role: k3s_plan.map(|p| p.settings.role),
    };
    let json = serde_json::to_string_pretty(&stamp).expect("stamp serializes");
    fsutil::write_atomic(
        &root.path(FIRSTBOOT_STAMP),
        format!("{json}\n").as_bytes(),
        0o644,
    )
    .map_err(step_err("stamp"))?;
    // Only now: had a step failed, the rerun on the next boot needs the token.
    crate::scrub::scrub_and_log(root, &image);
    crate::log("first boot complete");
    Ok(())
}
