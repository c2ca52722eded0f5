//! Removing the K3s join token from node.toml once first boot has used it.
//!
//! The boot partition is FAT: anyone holding the card can read it, on any
//! machine. First boot stores the token where K3s reads it (0600 on the data
//! partition, see [`crate::k3s`]), so the copy on the FAT is only a liability
//! afterwards. It is removed by rewriting node.toml without `[k3s] token`
//! (temp file and rename, so a power cut leaves the old or the new file,
//! never a torn one). Everything else in the file is kept; comments are not
//! (the file is re-serialized), and a comment at its top says what happened.
//!
//! Runs at the end of first boot and again on every boot from `ready`: when
//! first boot read node.toml before systemd mounted the boot partition there
//! is nothing to write to yet, and `ready` finishes the job later.

use crate::error::{Context, Result};
use crate::fsutil;
use crate::root::Root;
use crate::schema::{ImageConfig, NODE_CONFIG_RELPATH};
use std::path::Path;

/// First line of a node.toml whose token was removed.
pub const SCRUBBED_NOTE: &str =
    "# edgeimg-agent removed the K3s join token from this file after first boot used it.";

/// What [`scrub_token`] did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scrubbed {
    Removed,
    NoToken,
    NoFile,
    /// The boot partition is not mounted yet; `ready` retries.
    NotMounted,
}

/// Rewrites node.toml on the boot partition without `[k3s] token`.
pub fn scrub_token(root: &Root, image: &ImageConfig) -> Result<Scrubbed> {
    if root.is_host() && !crate::bootpart::is_mounted(root, &image.boot_mount)? {
        return Ok(Scrubbed::NotMounted);
    }
    let path = root.path(Path::new(&image.boot_mount).join(NODE_CONFIG_RELPATH));
    let Some(text) = crate::bootpart::read_opt_bounded(&path)? else {
        return Ok(Scrubbed::NoFile);
    };
    match without_token(&text) {
        // Not TOML: first boot refused it already; the message for that is
        // elsewhere, and its content is not echoed here.
        Err(_) => crate::bail!(
            "{}: does not parse as TOML; the token (if any) was not removed",
            path.display()
        ),
        Ok(None) => Ok(Scrubbed::NoToken),
        Ok(Some(new)) => {
            fsutil::write_atomic_fat(&path, new.as_bytes()).context("removing the join token")?;
            Ok(Scrubbed::Removed)
        }
    }
}

/// `text` re-serialized without `[k3s] token`; `None` when it has none.
pub fn without_token(text: &str) -> Result<Option<String>> {
    let mut doc: toml::Table = text
        .parse()
        .map_err(|_| crate::error::Error::msg("not TOML"))?;
    let removed = doc
        .get_mut("k3s")
        .and_then(|k| k.as_table_mut())
        .and_then(|k| k.remove("token"))
        .is_some();
    if !removed {
        return Ok(None);
    }
    let body = toml::to_string(&doc).context("serializing node.toml")?;
    Ok(Some(format!("{SCRUBBED_NOTE}\n{body}")))
}

/// [`scrub_token`] with the outcome logged; never fails the caller (a
/// failure is logged loudly instead: the node itself works either way).
pub fn scrub_and_log(root: &Root, image: &ImageConfig) {
    match scrub_token(root, image) {
        Ok(Scrubbed::Removed) => {
            crate::log("removed the K3s join token from node.toml on the boot partition")
        }
        Ok(Scrubbed::NotMounted) => crate::log(
            "boot partition not mounted yet: the join token is removed from node.toml later",
        ),
        Ok(Scrubbed::NoToken | Scrubbed::NoFile) => {}
        Err(e) => crate::log(format!(
            "WARNING: the K3s join token stays on the boot partition: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "# ops notes\nhostname = \"edge-7\"\n\n[k3s]\nrole = \"agent\"\nserver = \"https://10.0.0.1:6443\"\ntoken = \"K10topsecret::server:abc\"\n\n[[users]]\nname = \"ops\"\nssh_keys = [\"ssh-ed25519 AAAA k\"]\n";

    #[test]
    fn the_token_is_removed_and_the_rest_kept() {
        let new = without_token(NODE).unwrap().unwrap();
        assert!(!new.contains("topsecret"), "{new}");
        assert!(new.starts_with(SCRUBBED_NOTE));
        let path = Path::new("node.toml");
        let before = crate::schema::NodeConfig::from_toml(NODE, path).unwrap();
        let after = crate::schema::NodeConfig::from_toml(&new, path).unwrap();
        assert_eq!(after.hostname, before.hostname);
        assert_eq!(after.users, before.users);
        let (a, b) = (after.k3s.unwrap(), before.k3s.unwrap());
        assert_eq!((a.role, a.server), (b.role, b.server));
        assert!(a.token.is_none() && b.token.is_some());
        assert_eq!(without_token(&new).unwrap(), None);
        assert_eq!(without_token("hostname = \"x\"\n").unwrap(), None);
        assert!(without_token("token = = \"K10secret\"").is_err());
    }
}
