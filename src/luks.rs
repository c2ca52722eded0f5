//! The data partition sealed to the device's TPM2 (`[data] encryption =
//! "tpm2"`), build side: what the root carries so the device's first boot
//! can encrypt it (docs/trusted-boot.md). No key material: the volume key
//! and the recovery key are made on the device; the image holds only the
//! operator's public key and the fallback setting, so its bytes do not
//! depend on any device.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd::{self, Cmd};
use crate::config::data::DataEncryption;
use crate::stage::in_root::InRoot;

/// Packages the first boot's tools come from (the initramfs runs them from
/// the root): cryptsetup; systemd-cryptenroll and cryptsetup's TPM2 token
/// plugin; the TPM2 libraries systemd loads with dlopen (no package depends
/// on them, so they are named); openssl to wrap the recovery key.
pub const PACKAGES: &[&str] = &[
    "cryptsetup-bin",
    "systemd-cryptsetup",
    "libtss2-esys-3.0.2-0t64",
    "libtss2-mu-4.0.1-0t64",
    "libtss2-rc0t64",
    "libtss2-tcti-device0t64",
    "openssl",
];

/// The root's settings file; the initramfs encrypts only when it exists.
pub const CONF: &str = "usr/lib/edgeimg/data-encryption.conf";
/// The operator's public key the recovery key is wrapped to.
pub const PUBLIC_KEY: &str = "usr/lib/edgeimg/recovery.pub";
/// Where the device leaves the wrapped recovery key, on the boot partition.
pub const WRAPPED_KEY: &str = "edgeimg/recovery-key.bin";

/// The smallest RSA key accepted for the recovery key.
const MIN_RSA_BITS: u32 = 2048;

/// The settings file's text.
pub fn conf(e: &DataEncryption) -> String {
    format!(
        "# edgeimg: the data partition is encrypted on first boot and sealed to the TPM2 (PCR 7).\n\
         encryption=tpm2\nno_tpm={}\n",
        e.no_tpm.as_str()
    )
}

/// Places the settings and the public key in the root; returns their paths.
pub fn apply(tree: &Path, e: &DataEncryption) -> Result<Vec<String>> {
    let root = InRoot::open(tree)?;
    root.write(Path::new(CONF), conf(e).as_bytes(), 0o644)?;
    root.write(
        Path::new(PUBLIC_KEY),
        e.recovery_public_pem.as_bytes(),
        0o644,
    )?;
    Ok(vec![CONF.to_string(), PUBLIC_KEY.to_string()])
}

/// The recovery public key's size, when it is an RSA key the device can
/// wrap to (RSA-OAEP with SHA-256 needs at least 66 bytes of modulus for
/// the 64-character key; 2048 bits is the floor accepted).
pub fn check_public_key(path: &Path) -> Result<u32> {
    let out = Cmd::new(cmd::OPENSSL)
        .args(["pkey", "-pubin", "-noout", "-text", "-in"])
        .arg(path)
        .run()
        .with_context(|| format!("{}: not a public key openssl reads", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let bits = rsa_bits(&text).with_context(|| {
        format!(
            "{}: not an RSA public key (the device wraps the recovery key with RSA-OAEP)",
            path.display()
        )
    })?;
    anyhow::ensure!(
        bits >= MIN_RSA_BITS,
        "{}: an RSA key of {bits} bits; at least {MIN_RSA_BITS}",
        path.display()
    );
    Ok(bits)
}

/// `Public-Key: (3072 bit)` in `openssl pkey -text` output of an RSA key.
fn rsa_bits(text: &str) -> Option<u32> {
    if !text.contains("Modulus:") {
        return None;
    }
    let line = text.lines().find(|l| l.contains("Public-Key: ("))?;
    line.split('(')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let mut c = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or(b""))
            .unwrap();
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "openssl {args:?}: {o:?}");
        o.stdout
    }

    /// The wrapped-key format: what the device's initramfs runs (the same
    /// openssl command as src/base/files/edgeimg-data-luks) gives a file the
    /// documented operator command turns back into the key, and only with
    /// the right private key.
    #[test]
    fn the_wrapped_recovery_key_opens_with_the_documented_command() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
        for (key, pubk) in [("a.key", "a.pub"), ("b.key", "b.pub")] {
            openssl(
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:3072",
                    "-out",
                    &p(key),
                ],
                None,
            );
            openssl(&["pkey", "-in", &p(key), "-pubout", "-out", &p(pubk)], None);
        }
        assert_eq!(check_public_key(Path::new(&p("a.pub"))).unwrap(), 3072);
        let script = include_str!("base/files/edgeimg-data-luks");
        assert!(script.contains("openssl pkeyutl -encrypt -pubin -inkey \"$edgeimg_luks_pub\" \\\n\t\t-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 \\\n\t\t-pkeyopt rsa_mgf1_md:sha256"));
        let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let wrapped = openssl(
            &[
                "pkeyutl",
                "-encrypt",
                "-pubin",
                "-inkey",
                &p("a.pub"),
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ],
            Some(key.as_bytes()),
        );
        assert_eq!(wrapped.len(), 384, "one RSA-3072 block");
        assert!(
            !wrapped
                .windows(16)
                .any(|w| key.as_bytes().windows(16).any(|k| k == w))
        );
        std::fs::write(p("recovery-key.bin"), &wrapped).unwrap();
        // docs/trusted-boot.md, "Recovery".
        let opened = openssl(
            &[
                "pkeyutl",
                "-decrypt",
                "-inkey",
                &p("a.key"),
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
                "-in",
                &p("recovery-key.bin"),
            ],
            None,
        );
        assert_eq!(opened, key.as_bytes());
        let wrong = Command::new("openssl")
            .args([
                "pkeyutl",
                "-decrypt",
                "-inkey",
                &p("b.key"),
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
                "-in",
                &p("recovery-key.bin"),
            ])
            .output()
            .unwrap();
        assert!(!wrong.status.success());
    }

    #[test]
    fn small_and_non_rsa_keys_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
        openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:1024",
                "-out",
                &p("s.key"),
            ],
            None,
        );
        openssl(
            &["pkey", "-in", &p("s.key"), "-pubout", "-out", &p("s.pub")],
            None,
        );
        let e = check_public_key(Path::new(&p("s.pub"))).unwrap_err();
        assert!(
            format!("{e:#}").contains("1024 bits; at least 2048"),
            "{e:#}"
        );
        openssl(
            &["genpkey", "-algorithm", "ED25519", "-out", &p("e.key")],
            None,
        );
        openssl(
            &["pkey", "-in", &p("e.key"), "-pubout", "-out", &p("e.pub")],
            None,
        );
        let e = check_public_key(Path::new(&p("e.pub"))).unwrap_err();
        assert!(format!("{e:#}").contains("not an RSA public key"), "{e:#}");
    }
}
