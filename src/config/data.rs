//! `[data]`: whether the data partition (`/var` and the `/etc` upper layer)
//! is sealed to the device's TPM2 in LUKS2 (docs/trusted-boot.md). Pure:
//! reads the recovery public key, runs nothing.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{Board, ConfigError, Invalid, board::Firmware};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// "none" (default) or "tpm2".
    pub encryption: Option<Spanned<String>>,
    /// What the first boot does on a device without a TPM2: "refuse"
    /// (default) or "plain".
    pub no_tpm: Option<Spanned<String>>,
    /// The operator's RSA public key (PEM) the device wraps its recovery key
    /// to; relative to the config file. Required with "tpm2".
    pub recovery_public_key: Option<Spanned<String>>,
}

/// What the first boot does when the device has no TPM2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoTpm {
    /// Stop the boot with a message: the operator asked for encrypted data,
    /// and a device that silently kept it in the clear would look the same
    /// as its sealed siblings. The default.
    Refuse,
    /// Keep the data partition unencrypted (a message on the console says so).
    Plain,
}

impl NoTpm {
    pub fn as_str(self) -> &'static str {
        match self {
            NoTpm::Refuse => "refuse",
            NoTpm::Plain => "plain",
        }
    }
}

/// `[data] encryption = "tpm2"`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataEncryption {
    pub no_tpm: NoTpm,
    /// The operator's public key, as read at config time (PEM text).
    pub recovery_public_key: PathBuf,
    pub recovery_public_pem: String,
}

/// The room the build leaves between the data filesystem and the end of its
/// partition, for the LUKS2 header the device writes in front of the data
/// when it encrypts it in place (`cryptsetup reencrypt --encrypt
/// --reduce-device-size`): twice LUKS2's default 16 MiB header, as
/// cryptsetup(8) recommends.
pub const LUKS_HEADROOM: u64 = 32 * 1024 * 1024;

/// Largest public key file read (a 16384-bit RSA key's PEM is ~2.8 KiB).
const MAX_KEY_FILE: u64 = 16 * 1024;

pub fn validate(
    section: &DataSection,
    board: &Board,
    base_dir: &Path,
    invalid: &Invalid,
) -> Result<Option<DataEncryption>, ConfigError> {
    let on = match &section.encryption {
        None => false,
        Some(e) => match e.get_ref().as_str() {
            "none" => false,
            "tpm2" => true,
            other => {
                return Err(invalid(
                    e.span(),
                    "data.encryption",
                    format!("`{other}` is not one of: none, tpm2"),
                ));
            }
        },
    };
    let no_tpm = match &section.no_tpm {
        None => NoTpm::Refuse,
        Some(v) => match v.get_ref().as_str() {
            "refuse" => NoTpm::Refuse,
            "plain" => NoTpm::Plain,
            other => {
                return Err(invalid(
                    v.span(),
                    "data.no_tpm",
                    format!("`{other}` is not one of: refuse, plain"),
                ));
            }
        },
    };
    if !on {
        // Settings that only mean something with encryption are mistakes.
        for (k, key) in [
            (&section.no_tpm, "data.no_tpm"),
            (&section.recovery_public_key, "data.recovery_public_key"),
        ] {
            if let Some(k) = k {
                return Err(invalid(
                    k.span(),
                    key,
                    "only applies with `encryption = \"tpm2\"`".into(),
                ));
            }
        }
        return Ok(None);
    }
    let e = section.encryption.as_ref().expect("on");
    if board.firmware != Firmware::Uefi {
        return Err(invalid(
            e.span(),
            "data.encryption",
            format!(
                "board `{}` has no UEFI firmware and no TPM2 measured boot; the data partition cannot be sealed to a TPM there",
                board.name
            ),
        ));
    }
    let Some(k) = &section.recovery_public_key else {
        return Err(invalid(
            e.span(),
            "data.recovery_public_key",
            "is required with `encryption = \"tpm2\"`: without a recovery key a replaced TPM or a changed Secure Boot state would lose the data (docs/trusted-boot.md)".into(),
        ));
    };
    let path = base_dir.join(k.get_ref());
    let pem =
        read_public_key(&path).map_err(|m| invalid(k.span(), "data.recovery_public_key", m))?;
    Ok(Some(DataEncryption {
        no_tpm,
        recovery_public_key: path,
        recovery_public_pem: pem,
    }))
}

/// The key file's text, when it is one PEM public key (SubjectPublicKeyInfo,
/// what `openssl pkey -pubout` writes). Whether it is RSA of a usable size
/// is checked at build time, with openssl (`recovery::check_public_key`).
fn read_public_key(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {shown}: {e}"))?
        .len();
    if len > MAX_KEY_FILE {
        return Err(format!(
            "{shown} is {len} bytes; a PEM public key is at most {MAX_KEY_FILE}"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let t = text.trim();
    if text.contains("PRIVATE KEY") {
        return Err(format!(
            "{shown} holds a private key; name the public one (openssl pkey -in KEY -pubout)"
        ));
    }
    if !t.starts_with(BEGIN) || !t.ends_with(END) || t.matches(BEGIN).count() != 1 {
        return Err(format!(
            "{shown} is not one PEM public key (`{BEGIN}` ... `{END}`, as `openssl pkey -pubout` writes)"
        ));
    }
    let body = &t[BEGIN.len()..t.len() - END.len()];
    if !body
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+/=\r\n".contains(c))
    {
        return Err(format!("{shown}: the PEM body is not base64"));
    }
    Ok(format!("{t}\n"))
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const PUB: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----\n";

    fn p(dir: &Path, text: &str) -> Result<super::super::Config, ConfigError> {
        parse("edgeimg.toml", text, dir, None)
    }

    fn dir_with_key() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("keys")).unwrap();
        std::fs::write(d.path().join("keys/recovery.pub"), PUB).unwrap();
        d
    }

    #[test]
    fn off_by_default_and_tpm2_with_its_defaults() {
        let d = dir_with_key();
        assert_eq!(
            p(d.path(), "[image]\nname = \"x\"\n")
                .unwrap()
                .data_encryption,
            None
        );
        let c = p(
            d.path(),
            "[image]\nname = \"x\"\n[data]\nencryption = \"tpm2\"\nrecovery_public_key = \"keys/recovery.pub\"\n",
        )
        .unwrap();
        let e = c.data_encryption.unwrap();
        assert_eq!(e.no_tpm, NoTpm::Refuse);
        assert_eq!(e.recovery_public_pem, PUB);
        assert!(c.board.initramfs_modules.iter().any(|m| m == "dm-crypt"));
        let plain = p(
            d.path(),
            "[image]\nname = \"x\"\n[data]\nencryption = \"tpm2\"\nno_tpm = \"plain\"\nrecovery_public_key = \"keys/recovery.pub\"\n",
        )
        .unwrap();
        assert_eq!(plain.data_encryption.unwrap().no_tpm, NoTpm::Plain);
    }

    /// arm64: the initramfs gets the arm64 AES code (Crypto Extensions and
    /// NEON) instead of x86's AES-NI; the board file itself is untouched,
    /// so arm64 and rpi4 images without encryption keep sharing one base.
    #[test]
    fn arm64_gets_its_own_aes_modules_and_keeps_the_shared_board_modules() {
        let d = dir_with_key();
        let c = p(
            d.path(),
            "[image]\nname = \"x\"\nboard = \"arm64\"\n[data]\nencryption = \"tpm2\"\nrecovery_public_key = \"keys/recovery.pub\"\n",
        )
        .unwrap();
        let m = &c.board.initramfs_modules;
        for want in [
            "dm-crypt",
            "xts",
            "algif_skcipher",
            "aes-ce-blk",
            "aes-neon-bs",
        ] {
            assert!(m.iter().any(|x| x == want), "{want} missing: {m:?}");
        }
        assert!(!m.iter().any(|x| x == "aesni-intel"), "{m:?}");
        let arm64 = super::super::board::load("arm64").unwrap();
        let rpi4 = super::super::board::load("rpi4").unwrap();
        assert_eq!(arm64.initramfs_modules, rpi4.initramfs_modules);
        assert_eq!(arm64.packages, rpi4.packages);
    }

    /// Each bad value: one error naming the file, line and key.
    #[test]
    fn bad_values_name_the_file_line_and_key() {
        let d = dir_with_key();
        let err = |text: &str| p(d.path(), text).unwrap_err().to_string();
        let e = err("[image]\nname = \"x\"\n[data]\nencryption = \"luks\"\n");
        assert!(
            e.starts_with("edgeimg.toml:4: key `data.encryption`"),
            "{e}"
        );
        assert!(e.contains("none, tpm2"), "{e}");
        let e = err(
            "[image]\nname = \"x\"\n[data]\nencryption = \"tpm2\"\nno_tpm = \"maybe\"\nrecovery_public_key = \"keys/recovery.pub\"\n",
        );
        assert!(e.starts_with("edgeimg.toml:5: key `data.no_tpm`"), "{e}");
        let e = err("[image]\nname = \"x\"\n[data]\nencryption = \"tpm2\"\n");
        assert!(
            e.contains("key `data.recovery_public_key`: is required"),
            "{e}"
        );
        let e = err(
            "[image]\nname = \"x\"\n[data]\nencryption = \"tpm2\"\nrecovery_public_key = \"keys/missing.pub\"\n",
        );
        assert!(
            e.starts_with("edgeimg.toml:5: key `data.recovery_public_key`: cannot read"),
            "{e}"
        );
        let e = err("[image]\nname = \"x\"\n[data]\nno_tpm = \"plain\"\n");
        assert!(e.contains("key `data.no_tpm`: only applies with"), "{e}");
        let e = err("[image]\nname = \"x\"\n[data]\nencrypt = \"tpm2\"\n");
        assert!(e.contains("encrypt"), "{e}");
    }

    #[test]
    fn a_board_without_uefi_is_refused() {
        let d = dir_with_key();
        let e = p(
            d.path(),
            "[image]\nname = \"x\"\nboard = \"rpi4\"\n[data]\nencryption = \"tpm2\"\nrecovery_public_key = \"keys/recovery.pub\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("edgeimg.toml:5: key `data.encryption`: board `rpi4` has no UEFI"),
            "{e}"
        );
    }

    #[test]
    fn only_a_pem_public_key_is_taken() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("k");
        for (text, want) in [
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "private key",
            ),
            ("ssh-ed25519 AAAAC3Nza x\n", "not one PEM public key"),
            (
                "-----BEGIN PUBLIC KEY-----\nA$A\n-----END PUBLIC KEY-----\n",
                "not base64",
            ),
        ] {
            std::fs::write(&f, text).unwrap();
            let e = read_public_key(&f).unwrap_err();
            assert!(e.contains(want), "{e}");
            // The message never quotes the file's content.
            assert!(!e.contains("AAAA") && !e.contains("A$A"), "{e}");
        }
        std::fs::write(&f, vec![b'A'; 20_000]).unwrap();
        assert!(read_public_key(&f).unwrap_err().contains("at most"));
    }
}
