//! `edgeimg-agent ready`: run on every boot by edgeimg-ready.service once
//! the node's services are up. Records the boot and announces readiness on
//! stdout and the console, where test harnesses and operators look for it.

use crate::config;
use crate::error::Result;
use crate::fsutil;
use crate::root::Root;
use crate::schema::{BOOTS_LOG, READY_FILE, READY_LINE};
use serde::{Deserialize, Serialize};
use std::io::Write;

/// Contents of [`READY_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// Unix seconds when the node became ready.
    pub since: u64,
    /// Boot id of the boot this applies to.
    pub boot_id: String,
}

/// Append `boot_id` to the boots log text unless it is already the last line
/// (the service may be restarted within one boot).
pub fn append_boot(log: &str, boot_id: &str) -> Option<String> {
    if log.lines().last() == Some(boot_id) {
        return None;
    }
    let mut s = log.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(boot_id);
    s.push('\n');
    Some(s)
}

/// Mark this boot ready; fails when first boot has not completed.
pub fn run(root: &Root) -> Result<()> {
    if crate::firstboot::read_stamp(root)?.is_none() {
        crate::bail!("first boot did not complete (no {})", crate::schema::FIRSTBOOT_STAMP);
    }
    let boot_id = config::boot_id(root)?;
    let info = ReadyInfo { since: config::now_secs(), boot_id: boot_id.clone() };
    let json = serde_json::to_string(&info).expect("ready info serializes");
    fsutil::write_atomic(&root.path(READY_FILE), format!("{json}\n").as_bytes(), 0o644)?;

    let log_path = root.path(BOOTS_LOG);
    let log = fsutil::read_opt(&log_path)?.unwrap_or_default();
    if let Some(new) = append_boot(&log, &boot_id) {
        fsutil::write_atomic(&log_path, new.as_bytes(), 0o644)?;
    }

    println!("{READY_LINE}");
    let _ = std::io::stdout().flush();
    // The console may be absent or busy; the journal still has the stdout line.
    if let Ok(mut c) = std::fs::OpenOptions::new().write(true).open(root.path("/dev/console")) {
        let _ = c.write_all(format!("\r\n{READY_LINE}\n").as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::append_boot;

    #[test]
    fn boots_log_appends_once() {
        assert_eq!(append_boot("", "a").as_deref(), Some("a\n"));
        assert_eq!(append_boot("a\n", "a"), None);
        assert_eq!(append_boot("a\nb", "a").as_deref(), Some("a\nb\na\n"));
    }
}
