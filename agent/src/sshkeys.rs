//! SSH host keys: the image ships none (they must differ per device), so
//! first boot generates them when OpenSSH is installed.
//!
//! Only the types in [`HOST_KEYS`]: Ed25519 and ECDSA P-256, which every
//! OpenSSH since 6.5 (2014) accepts. Not RSA: `ssh-keygen -A` also makes a
//! 3072-bit RSA key, whose prime search takes seconds on a slow board (and
//! under QEMU TCG), on the first boot's critical path. The image's sshd
//! names the same files as its `HostKey`s (edgeimg writes
//! [`SSHD_DROP_IN`]), so sshd neither looks for an RSA key nor offers one.

use crate::error::{Context, Result};
use crate::root::Root;

// The key list and sshd drop-in are the builder's too (it writes the drop-in).
pub use edgeimg_contract::ssh::{HOST_KEYS, SSHD_DROP_IN, sshd_drop_in};

/// Generate the missing host keys; a no-op without OpenSSH or when all exist.
pub fn ensure(root: &Root) -> Result<String> {
    if !root.path("/usr/bin/ssh-keygen").exists() {
        return Ok("ssh-keygen not installed; skipped".into());
    }
    let mut made = Vec::new();
    for (kind, path) in HOST_KEYS {
        if root.path(path).exists() {
            continue;
        }
        // Into a temporary name, then renamed: public key first, private
        // key last, so a power cut never leaves a truncated key under the
        // final name (its existence is what says "done" above). A leftover
        // from such a cut is removed first: ssh-keygen would ask before
        // overwriting it.
        let tmp = format!("{path}.edgeimg-new");
        for p in [tmp.clone(), format!("{tmp}.pub")] {
            match std::fs::remove_file(root.path(&p)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {p}"));
                }
                _ => {}
            }
        }
        root.run(
            "ssh-keygen",
            &["-q", "-t", kind, "-N", "", "-f", tmp.as_str()],
        )?;
        if root.is_host() {
            for (from, to) in [
                (format!("{tmp}.pub"), format!("{path}.pub")),
                (tmp, path.to_string()),
            ] {
                std::fs::rename(&from, &to).with_context(|| format!("renaming {from} to {to}"))?;
            }
        }
        made.push(*kind);
    }
    if made.is_empty() {
        return Ok("host keys already present".into());
    }
    Ok(format!("host keys generated: {}", made.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_only_missing_types_and_clears_leftovers() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        std::fs::create_dir_all(root.path("/usr/bin")).unwrap();
        std::fs::create_dir_all(root.path("/etc/ssh")).unwrap();
        std::fs::write(root.path("/usr/bin/ssh-keygen"), "").unwrap();
        std::fs::write(root.path("/etc/ssh/ssh_host_ed25519_key"), "k").unwrap();
        // A half-written key from an interrupted boot.
        std::fs::write(
            root.path("/etc/ssh/ssh_host_ecdsa_key.edgeimg-new"),
            "partial",
        )
        .unwrap();
        assert_eq!(ensure(&root).unwrap(), "host keys generated: ecdsa");
        assert_eq!(
            root.skipped_commands(),
            ["ssh-keygen -q -t ecdsa -N  -f /etc/ssh/ssh_host_ecdsa_key.edgeimg-new"]
        );
        assert!(
            !root
                .path("/etc/ssh/ssh_host_ecdsa_key.edgeimg-new")
                .exists()
        );
    }

    #[test]
    fn skipped_without_openssh() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        assert_eq!(ensure(&root).unwrap(), "ssh-keygen not installed; skipped");
        assert!(root.skipped_commands().is_empty());
    }

    #[test]
    fn drop_in_names_every_generated_key_and_no_rsa() {
        let text = sshd_drop_in();
        for (_, path) in HOST_KEYS {
            assert!(text.contains(&format!("HostKey {path}\n")), "{text}");
        }
        assert!(!text.contains("rsa"), "{text}");
    }
}
