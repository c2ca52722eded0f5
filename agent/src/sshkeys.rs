//! SSH host keys: the image ships none (they must differ per device), so
//! first boot generates them with `ssh-keygen -A` when OpenSSH is installed.

use crate::error::Result;
use crate::root::Root;

/// Generate missing host keys; a no-op without OpenSSH or when keys exist.
pub fn ensure(root: &Root) -> Result<String> {
    if !root.path("/usr/bin/ssh-keygen").exists() {
        return Ok("ssh-keygen not installed; skipped".into());
    }
    if root.path("/etc/ssh/ssh_host_ed25519_key").exists() {
        return Ok("host keys already present".into());
    }
    // -A creates every missing default key type under /etc/ssh.
    root.run("ssh-keygen", &["-A"])?;
    Ok("host keys generated".into())
}
