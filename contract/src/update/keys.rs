//! ed25519 key files, one line of text each:
//!
//! ```text
//! PREFIX.pub:  edgeimg-update-ed25519-public <64 hex digits: the public key>
//! PREFIX.key:  edgeimg-update-ed25519-secret <64 hex digits: the secret seed>
//! ```
//!
//! Lines starting with `#` and blank lines are ignored. Text, so a key can be
//! pasted into a config management system; hex, so no base64 code is needed.

use crate::error::{Context, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::path::Path;

pub const PUBLIC_TAG: &str = "edgeimg-update-ed25519-public";
pub const SECRET_TAG: &str = "edgeimg-update-ed25519-secret";

/// A short, stable name of a public key: the first 8 bytes of its SHA-256, hex.
pub fn key_id(key: &VerifyingKey) -> String {
    let d = Sha256::digest(key.as_bytes());
    crate::hex::hex(&d[..8])
}

pub fn public_text(key: &VerifyingKey) -> String {
    format!(
        "# edgeimg update signing key {} (public; images built with the matching .key trust it)\n{PUBLIC_TAG} {}\n",
        key_id(key),
        crate::hex::hex(key.as_bytes())
    )
}

pub fn secret_text(key: &SigningKey) -> String {
    format!(
        "# edgeimg update signing key {} (SECRET: keep it off devices and out of logs)\n{SECRET_TAG} {}\n",
        key_id(&key.verifying_key()),
        crate::hex::hex(key.as_bytes())
    )
}

fn parse_line(text: &str, tag: &str, what: &str) -> Result<[u8; 32]> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| crate::error::Error::msg(format!("no {what} in it")))?;
    let Some(hexkey) = line.strip_prefix(tag).map(str::trim) else {
        crate::bail!("not an edgeimg {what} (expected a line `{tag} <64 hex digits>`)");
    };
    let bytes = crate::hex::unhex(hexkey)
        .filter(|b| b.len() == 32)
        .ok_or_else(|| crate::error::Error::msg(format!("the {what} is not 64 hex digits")))?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes);
    Ok(out)
}

pub fn parse_public(text: &str) -> Result<VerifyingKey> {
    let b = parse_line(text, PUBLIC_TAG, "public key")?;
    VerifyingKey::from_bytes(&b)
        .map_err(|_| crate::error::Error::msg("the public key is not a valid ed25519 point"))
}

pub fn parse_secret(text: &str) -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&parse_line(
        text,
        SECRET_TAG,
        "secret key",
    )?))
}

pub fn read_public(path: &Path) -> Result<VerifyingKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_public(&text).with_context(|| path.display().to_string())
}

/// Reads a secret key file. The error never contains the file's content.
pub fn read_secret(path: &Path) -> Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_secret(&text).with_context(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let pk = parse_public(&public_text(&sk.verifying_key())).unwrap();
        assert_eq!(pk, sk.verifying_key());
        let sk2 = parse_secret(&secret_text(&sk)).unwrap();
        assert_eq!(sk2.as_bytes(), sk.as_bytes());
    }

    #[test]
    fn wrong_kind_is_named() {
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let e = parse_public(&secret_text(&sk)).unwrap_err().to_string();
        assert!(e.contains("not an edgeimg public key"), "{e}");
        let e = parse_public("edgeimg-update-ed25519-public abcd\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("64 hex"), "{e}");
    }
}
