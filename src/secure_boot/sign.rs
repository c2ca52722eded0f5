//! Signing EFI binaries with the fleet's db key (sbsign). The key stays
//! where the operator keeps it: only the signed binary enters the image.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, SBSIGN};

/// The fleet's Secure Boot files a build reads, from `edgeimg keygen
/// --secure-boot --out PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetKeys {
    pub prefix: PathBuf,
}

impl FleetKeys {
    pub fn file(&self, tail: &str) -> PathBuf {
        let mut s = self.prefix.as_os_str().to_owned();
        s.push(format!("-{tail}"));
        PathBuf::from(s)
    }

    /// The files a build needs, checked before any long work (the private
    /// key's contents are never read here, only that it is there).
    pub fn check(&self) -> Result<()> {
        let mut missing = Vec::new();
        for t in ["db.key", "db.crt", "PK.auth", "KEK.auth", "db.auth"] {
            if !self.file(t).is_file() {
                missing.push(self.file(t).display().to_string());
            }
        }
        if !missing.is_empty() {
            bail!(
                "Secure Boot keys incomplete, missing: {} (make them with `edgeimg keygen --secure-boot --out {}`)",
                missing.join(", "),
                self.prefix.display()
            );
        }
        Ok(())
    }
}

/// Signs `input` into `output` with the db key. RSA PKCS#1 v1.5 signatures
/// are deterministic and sbsign adds no signing time, so the same input
/// signs to the same bytes.
pub fn sign(keys: &FleetKeys, input: &Path, output: &Path) -> Result<()> {
    Cmd::new(SBSIGN)
        .arg("--key")
        .arg(keys.file("db.key"))
        .arg("--cert")
        .arg(keys.file("db.crt"))
        .arg("--output")
        .arg(output)
        .arg(input)
        .run()
        .with_context(|| format!("signing {}", input.display()))?;
    Ok(())
}
