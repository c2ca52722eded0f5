//! The update status of this device, one JSON file on the data partition
//! ([`STATUS_PATH`]): what it runs, when it last checked, the last error,
//! the update installed and waiting for its trial boot, and the releases
//! whose trial boot failed (never offered again automatically).
//! `edgeimg-agent update status` prints it.

use crate::error::Result;
use crate::root::Root;
use serde::{Deserialize, Serialize};

pub const STATUS_PATH: &str = "/var/lib/edgeimg/update/status.json";

/// An update written to the inactive slot, waiting for its trial boot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pending {
    /// The repository target installed.
    pub target: String,
    pub generation: u64,
    /// The slot it went into.
    pub slot: String,
    /// The boot that installed it: a later boot on the old slot means the
    /// trial failed.
    pub boot_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub current_generation: u64,
    /// Seconds since the epoch of the last completed repository check.
    #[serde(default)]
    pub last_check: Option<u64>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The newest update the repository offers this device, if any.
    #[serde(default)]
    pub available: Option<String>,
    /// Downloaded and verified, waiting for the maintenance window.
    #[serde(default)]
    pub downloaded: Option<String>,
    #[serde(default)]
    pub pending: Option<Pending>,
    /// Targets whose trial boot failed.
    #[serde(default)]
    pub failed: Vec<String>,
}

impl Status {
    pub fn load(root: &Root) -> Result<Status> {
        Ok(crate::config::read_json(&root.path(STATUS_PATH))?.unwrap_or_default())
    }

    pub fn save(&self, root: &Root) -> Result<()> {
        let path = root.path(STATUS_PATH);
        if let Some(dir) = path.parent() {
            crate::fsutil::mkdir_p(dir)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(crate::Error::msg)? + "\n";
        crate::fsutil::write_atomic(&path, text.as_bytes(), 0o644)
    }
}

/// `update status`: the file, or an empty status when there is none yet.
pub fn print(root: &Root) -> Result<()> {
    let mut s = Status::load(root)?;
    s.current_generation = crate::update::running_generation(root)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&s).map_err(crate::Error::msg)?
    );
    Ok(())
}
