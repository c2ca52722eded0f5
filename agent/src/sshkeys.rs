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
use crate::fsutil;
use crate::root::Root;
use std::path::Path;

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
        // ssh-keygen writes the key and its .pub by name, opening whatever
        // is there: it writes them into a new directory of its own (random
        // name, 0700, made by mkdir beside the key, so nothing planted is
        // used), then they are renamed into place: public key first,
        // private key last, so a power cut never leaves a truncated key
        // under the final name (its existence is what says "done" above).
        // A directory left by such a cut is removed first.
        let key = Path::new(path);
        let (Some(dir), Some(name)) = (key.parent(), key.file_name().and_then(|n| n.to_str()))
        else {
            crate::bail!("{path}: not a file path");
        };
        fsutil::mkdir_p(&root.path(dir))?;
        remove_leftovers(&root.path(dir), name)?;
        let made_dir = fsutil::temp_dir_beside(&root.path(dir), name)?;
        let tmp_dir = dir.join(made_dir.file_name().expect("a named directory"));
        let tmp = tmp_dir.join(name).to_string_lossy().into_owned();
        let res = (|| -> Result<()> {
            root.run(
                "ssh-keygen",
                &["-q", "-t", kind, "-N", "", "-f", tmp.as_str()],
            )?;
            if root.is_host() {
                for (from, to) in [
                    (format!("{tmp}.pub"), format!("{path}.pub")),
                    (tmp.clone(), path.to_string()),
                ] {
                    std::fs::rename(&from, &to)
                        .with_context(|| format!("renaming {from} to {to}"))?;
                }
            }
            Ok(())
        })();
        let cleaned = std::fs::remove_dir_all(&made_dir)
            .with_context(|| format!("removing {}", tmp_dir.display()));
        res?;
        cleaned?;
        made.push(*kind);
    }
    if made.is_empty() {
        return Ok("host keys already present".into());
    }
    Ok(format!("host keys generated: {}", made.join(", ")))
}

/// Removes what an interrupted run left in `dir` for the key `name`: its
/// temporary directories (a link of that name is removed, not followed).
fn remove_leftovers(dir: &Path, name: &str) -> Result<()> {
    let prefix = fsutil::temp_prefix(name);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        if !e.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let p = e.path();
        let r = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
            Ok(_) => std::fs::remove_file(&p),
            Err(e) => Err(e),
        };
        match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", p.display()));
            }
            _ => {}
        }
    }
    Ok(())
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
        let leftover = root.path("/etc/ssh/.ssh_host_ecdsa_key.tmp.0123456789abcdef");
        std::fs::create_dir(&leftover).unwrap();
        std::fs::write(leftover.join("ssh_host_ecdsa_key"), "partial").unwrap();
        // A link planted under the old fixed temp name, to a file that
        // must stay as it is.
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let planted = root.path("/etc/ssh/ssh_host_ecdsa_key.edgeimg-new");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();

        assert_eq!(ensure(&root).unwrap(), "host keys generated: ecdsa");
        let cmds = root.skipped_commands();
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        // Into a fresh random directory, never the old fixed name.
        let out = cmds[0]
            .strip_prefix("ssh-keygen -q -t ecdsa -N  -f /etc/ssh/.ssh_host_ecdsa_key.tmp.")
            .and_then(|r| r.strip_suffix("/ssh_host_ecdsa_key"))
            .unwrap_or_else(|| panic!("{cmds:?}"));
        assert!(out.len() == 16 && out != "0123456789abcdef", "{out}");
        assert!(!leftover.exists());
        assert_eq!(std::fs::read_link(&planted).unwrap(), victim);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        // The key's directory holds the present key and the planted link.
        assert_eq!(std::fs::read_dir(root.path("/etc/ssh")).unwrap().count(), 2);
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
