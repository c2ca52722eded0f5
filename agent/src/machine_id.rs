//! /etc/machine-id: systemd normally writes it before we run (the image ships
//! it empty or "uninitialized"); we only fill it in when it is still unset, so
//! the id is unique per device and stable across reboots (/etc is persistent).

use crate::error::{Context, Result};
use crate::fsutil;
use crate::root::Root;
use std::io::Read;

/// Path of the machine id.
pub const MACHINE_ID: &str = "/etc/machine-id";

/// True when the content is a usable id (32 lowercase hex chars).
pub fn is_set(content: &str) -> bool {
    let t = content.trim();
    t.len() == 32
        && t.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Ensure /etc/machine-id holds an id; returns a short description.
pub fn ensure(root: &Root) -> Result<String> {
    let path = root.path(MACHINE_ID);
    let current = fsutil::read_opt(&path)?.unwrap_or_default();
    if is_set(&current) {
        return Ok("machine-id already set".into());
    }
    if !current.trim().is_empty() && current.trim() != "uninitialized" {
        crate::log(format!(
            "{}: replacing malformed machine id",
            path.display()
        ));
    }
    // /dev/urandom of the running system even under a test root: it's only a source of bytes.
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    fsutil::write_atomic(&path, format!("{id}\n").as_bytes(), 0o444)?;
    Ok("machine-id generated".into())
}

/// The machine id, or an error naming the file.
pub fn read(root: &Root) -> Result<String> {
    let path = root.path(MACHINE_ID);
    let s = fsutil::read(&path)?;
    if !is_set(&s) {
        crate::bail!(
            "{}: no machine id set (content {:?})",
            path.display(),
            s.trim()
        );
    }
    Ok(s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_only_when_unset() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        std::fs::create_dir_all(root.path("/etc")).unwrap();
        std::fs::write(root.path(MACHINE_ID), "uninitialized\n").unwrap();
        assert_eq!(ensure(&root).unwrap(), "machine-id generated");
        let id = read(&root).unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(ensure(&root).unwrap(), "machine-id already set");
        assert_eq!(read(&root).unwrap(), id);
    }
}
