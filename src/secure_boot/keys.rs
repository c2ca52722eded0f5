//! The Secure Boot key hierarchy of a fleet: PK (platform key, owns the
//! machine), KEK (may change db/dbx), db (signs what boots). Each is an RSA
//! key, a self-signed certificate, the certificate as an EFI signature list
//! (`.esl`), and that list signed for enrollment (`.auth`: PK and KEK signed
//! by PK, db by KEK) — the files systemd-boot's `secure-boot-enroll` and
//! `efi-updatevar` take.
//!
//! RSA-2048 because it is the one key type the UEFI specification requires
//! every firmware to verify; larger keys are refused by some firmwares.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cmd::{CERT_TO_EFI_SIG_LIST, Cmd, OPENSSL, SIGN_EFI_SIG_LIST};

/// The three keys, in enrollment order (PK last would lock the others out:
/// enrollment writes db and KEK while still in setup mode, then PK).
pub const ROLES: [&str; 3] = ["PK", "KEK", "db"];

/// What each role's files are called after PREFIX-.
const SUFFIXES: [&str; 4] = ["key", "crt", "esl", "auth"];

/// A certificate's lifetime. Firmware does not check it (there is no trusted
/// clock before the OS), but tools that read the certificates do.
const CERT_DAYS: &str = "3650";

/// Every file `keygen` writes for `prefix`, in the order it writes them.
pub fn paths(prefix: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ROLES
        .iter()
        .flat_map(|r| {
            SUFFIXES
                .iter()
                .map(move |s| file(prefix, &format!("{r}.{s}")))
        })
        .collect();
    out.push(file(prefix, "owner.guid"));
    out
}

fn file(prefix: &Path, tail: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(format!("-{tail}"));
    PathBuf::from(s)
}

/// The subject's common name: printable ASCII without the characters
/// openssl's `-subj` syntax gives a meaning to.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && !b"/=\\+,".contains(&b))
    {
        bail!(
            "--name {name:?}: give 1-64 printable ASCII characters without / = \\ + , (it becomes the certificates' common name)"
        );
    }
    Ok(())
}

/// `edgeimg keygen --secure-boot --out PREFIX`: makes every file in a private
/// directory beside PREFIX, then links each to its final name, which fails
/// rather than replace an existing file. Keys are 0600. Returns the paths.
pub fn keygen(prefix: &Path, name: &str) -> Result<Vec<PathBuf>> {
    check_name(name)?;
    let finals = paths(prefix);
    if let Some(p) = finals.iter().find(|p| p.exists() || p.is_symlink()) {
        bail!(
            "{} already exists; refusing to overwrite Secure Boot keys (choose another --out)",
            p.display()
        );
    }
    crate::cmd::require(crate::cmd::SECURE_BOOT_TOOLS)?;
    let dir = prefix
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // A new directory for the keys is private: it will hold the PK.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".edgeimg-keygen-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a directory in {}", dir.display()))?;
    let w = work.path().join("k");
    make_all(&w, name)?;
    let made = paths(&w);
    let mut linked = Vec::new();
    for (from, to) in made.iter().zip(&finals) {
        if let Err(e) = std::fs::hard_link(from, to) {
            for p in &linked {
                let _ = std::fs::remove_file(p);
            }
            return Err(e).with_context(|| format!("cannot create {}", to.display()));
        }
        linked.push(to.clone());
    }
    Ok(finals)
}

/// Every file under the prefix `w` (a private directory's).
fn make_all(w: &Path, name: &str) -> Result<()> {
    let guid = owner_guid()?;
    std::fs::write(file(w, "owner.guid"), format!("{guid}\n"))
        .with_context(|| format!("cannot write {}", file(w, "owner.guid").display()))?;
    for role in ROLES {
        let key = file(w, &format!("{role}.key"));
        let crt = file(w, &format!("{role}.crt"));
        Cmd::new(OPENSSL)
            .args([
                "req", "-new", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes",
            ])
            .args(["-days", CERT_DAYS, "-subj"])
            .arg(format!("/CN={name} {role}/"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .run()?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .with_context(|| key.display().to_string())?;
        Cmd::new(CERT_TO_EFI_SIG_LIST)
            .args(["-g", &guid])
            .arg(&crt)
            .arg(file(w, &format!("{role}.esl")))
            .run()?;
    }
    // PK and KEK are signed by PK, db by KEK: who may write each variable
    // once the firmware has left setup mode.
    for (role, signer) in [("PK", "PK"), ("KEK", "PK"), ("db", "KEK")] {
        Cmd::new(SIGN_EFI_SIG_LIST)
            .args(["-g", &guid, "-k"])
            .arg(file(w, &format!("{signer}.key")))
            .arg("-c")
            .arg(file(w, &format!("{signer}.crt")))
            .arg(role)
            .arg(file(w, &format!("{role}.esl")))
            .arg(file(w, &format!("{role}.auth")))
            .run()?;
    }
    Ok(())
}

/// The signature owner GUID recorded in every list: random per fleet, so
/// the fleet's entries can be told apart from the vendor's in db.
fn owner_guid() -> Result<String> {
    let mut b = [0u8; 16];
    let mut f = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut b).context("reading /dev/urandom")?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(crate::ids::Uuid(b).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_openssl_would_parse_are_refused() {
        for bad in ["", "a/b", "CN=x", "a\nb", "a\\b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("edgeimg fleet 2026").unwrap();
    }

    #[test]
    fn paths_are_beside_the_prefix() {
        let p = paths(Path::new("/k/fleet"));
        assert_eq!(p.len(), 13);
        assert_eq!(p[0], Path::new("/k/fleet-PK.key"));
        assert_eq!(p[11], Path::new("/k/fleet-db.auth"));
        assert_eq!(p[12], Path::new("/k/fleet-owner.guid"));
    }
}
