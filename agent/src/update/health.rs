//! `edgeimg-agent update health`: on a trial boot of a new slot, decide
//! whether it is good. Run by edgeimg-update-health.service after
//! edgeimg-ready.service has finished (node ready, and with K3s the cluster
//! wait done, or failed/timed out: that unit's deadline is the health deadline).
//!
//! systemd-boot tells the OS which counting entry it booted in the
//! `LoaderBootCountPath` EFI variable. Good: the entry is renamed without its
//! `+left-done` counter, as systemd-bless-boot does (that tool is not in the
//! image's package set), and stays the default. Bad: exit 1; the unit's
//! FailureAction reboots, and once the tries are used up systemd-boot boots
//! the previous slot by itself.

use crate::config;
use crate::error::{Context, Result};
use crate::fsutil;
use crate::root::Root;
use crate::status;
use crate::update::efivar;
use std::path::Path;

/// The blessed name of a counting entry file name: `x+1-2.conf` -> `x.conf`;
/// a signed UKI counts the same way: `x+1-2.efi` -> `x.efi`.
pub fn blessed_name(name: &str) -> Option<String> {
    let (stem, ext) = name.rsplit_once('.')?;
    if ext != "conf" && ext != "efi" {
        return None;
    }
    let (base, _) = stem.split_once('+')?;
    Some(format!("{base}.{ext}"))
}

/// Whether the node is healthy, and why not.
fn verdict(root: &Root) -> Result<Result<(), String>> {
    let s = status::collect(root)?;
    if s.ready && s.cluster_ready != Some(false) {
        return Ok(Ok(()));
    }
    Ok(Err(s
        .reason
        .or(s.cluster_reason)
        .unwrap_or_else(|| "not ready".into())))
}

/// Returns whether this boot is healthy (always true when not a trial boot).
pub fn run(root: &Root) -> Result<bool> {
    if crate::update::rpi::is_trial(root)? {
        let image = config::load_image(root)?;
        let esp = root.path(&image.boot_mount);
        if !esp.join(crate::update::rpi::TRYBOOT).exists() {
            crate::log("update health: tryboot without tryboot.txt, nothing to decide");
            return Ok(true);
        }
        return match verdict(root)? {
            Ok(()) => {
                crate::update::rpi::commit(&esp)?;
                println!("edgeimg: update good: tryboot.txt is now config.txt");
                Ok(true)
            }
            Err(why) => {
                crate::update::rpi::forget_trial(&esp)?;
                println!(
                    "edgeimg: update health check failed on the tryboot: {why}; rebooting to the previous slot"
                );
                Ok(false)
            }
        };
    }
    let Some(count_path) = efivar::loader_string(root, "LoaderBootCountPath")? else {
        crate::log("update health: not a trial boot (no boot counting entry), nothing to decide");
        return Ok(true);
    };
    let image = config::load_image(root)?;
    let rel = count_path.replace('\\', "/");
    let file = root
        .path(&image.boot_mount)
        .join(rel.trim_start_matches('/'));
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Err(why) = verdict(root)? {
        println!("edgeimg: update health check failed on trial boot of {name}: {why}; rebooting");
        return Ok(false);
    }
    let Some(blessed) = blessed_name(&name) else {
        crate::bail!("{}: not a boot counting entry name", file.display());
    };
    let dir = file.parent().unwrap_or(Path::new("/"));
    if file.exists() {
        std::fs::rename(&file, dir.join(&blessed))
            .with_context(|| format!("renaming {} to {blessed}", file.display()))?;
        fsutil::sync_dir(dir)?;
    }
    println!("edgeimg: update good: boot entry {blessed} is now permanent");
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn blessing_drops_the_counter() {
        assert_eq!(
            super::blessed_name("edgeimg-2-b+1-2.conf").unwrap(),
            "edgeimg-2-b.conf"
        );
        assert_eq!(
            super::blessed_name("edgeimg-2-b+3.conf").unwrap(),
            "edgeimg-2-b.conf"
        );
        assert_eq!(super::blessed_name("edgeimg-1-a.conf"), None);
        assert_eq!(
            super::blessed_name("edgeimg-2-b+2-1.efi").unwrap(),
            "edgeimg-2-b.efi"
        );
        assert_eq!(super::blessed_name("edgeimg-1-a.efi"), None);
        assert_eq!(super::blessed_name("edgeimg-2-b+1.txt"), None);
    }
}
