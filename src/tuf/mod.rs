//! The Update Framework keys of a fleet's update repository: `edgeimg keygen
//! --tuf` makes one ed25519 key per top-level role (root, targets, snapshot,
//! timestamp) and the first `root.json`, signed by the root key. The
//! metadata itself is made and signed by the `tough` crate; this module only
//! holds the key files.
//!
//! Files of `PREFIX`:
//!
//! ```text
//! PREFIX-root.key  PREFIX-targets.key  PREFIX-snapshot.key  PREFIX-timestamp.key
//!     private keys, PEM PKCS#8 ed25519, mode 0600
//! PREFIX-root.json
//!     root metadata version 1: the four public keys, threshold 1 each,
//!     consistent snapshots; what each device image trusts
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::num::NonZeroU64;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tough::key_source::KeySource;
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root};
use tough::sign::Sign;

/// The four top-level roles, in the order their key files are listed.
pub const ROLES: [RoleType; 4] = [
    RoleType::Root,
    RoleType::Targets,
    RoleType::Snapshot,
    RoleType::Timestamp,
];

/// How long the first root metadata is valid.
pub const ROOT_EXPIRES_DAYS: i64 = 365;

pub fn role_name(role: RoleType) -> &'static str {
    match role {
        RoleType::Root => "root",
        RoleType::Targets => "targets",
        RoleType::Snapshot => "snapshot",
        RoleType::Timestamp => "timestamp",
        _ => "other",
    }
}

/// `PREFIX-<role>.key`.
pub fn key_path(prefix: &Path, role: RoleType) -> PathBuf {
    let s = prefix.as_os_str().to_string_lossy();
    PathBuf::from(format!("{s}-{}.key", role_name(role)))
}

/// `PREFIX-root.json`.
pub fn root_path(prefix: &Path) -> PathBuf {
    let s = prefix.as_os_str().to_string_lossy();
    PathBuf::from(format!("{s}-root.json"))
}

/// Runs a `tough` future to completion on a one-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting the async runtime")?;
    Ok(rt.block_on(f))
}

/// A role key read from its file: checked to be private to its owner, PEM
/// PKCS#8, and a key `tough` can sign with.
#[derive(Debug)]
pub struct FileKey {
    pub path: PathBuf,
}

impl FileKey {
    fn read(&self) -> Result<Vec<u8>> {
        use std::io::Read;
        let p = &self.path;
        let f = std::fs::File::open(p).with_context(|| format!("key {}", p.display()))?;
        let meta = f
            .metadata()
            .with_context(|| format!("key {}", p.display()))?;
        if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0 {
            anyhow::bail!(
                "key {} is readable by other users; chmod 600 it",
                p.display()
            );
        }
        // A key file is a few hundred bytes; read at most 64 KiB of anything.
        let mut text = Vec::new();
        f.take(64 * 1024)
            .read_to_end(&mut text)
            .with_context(|| format!("reading key {}", p.display()))?;
        let pem = pem::parse(&text)
            .map_err(|e| anyhow::anyhow!("key {} is not a PEM file: {e}", p.display()))?;
        if pem.tag() != "PRIVATE KEY" {
            anyhow::bail!(
                "key {} is a PEM {:?}, not a PKCS#8 \"PRIVATE KEY\"",
                p.display(),
                pem.tag()
            );
        }
        Ok(pem.contents().to_vec())
    }

    /// The key, ready to sign; errors name the file.
    pub fn signer(&self) -> Result<Box<dyn Sign>> {
        let der = self.read()?;
        let k = tough::sign::parse_keypair(&der).map_err(|e| {
            anyhow::anyhow!(
                "key {} is not a usable signing key: {e}",
                self.path.display()
            )
        })?;
        Ok(Box::new(k))
    }
}

#[tough::async_trait]
impl KeySource for FileKey {
    async fn as_sign(
        &self,
    ) -> std::result::Result<Box<dyn Sign>, Box<dyn std::error::Error + Send + Sync + 'static>>
    {
        self.signer().map_err(|e| format!("{e:#}").into())
    }

    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Err("edgeimg never rewrites a key file".into())
    }
}

/// Loads the role keys of `prefix` for `roles`, each checked before any
/// repository file is written.
pub fn load_keys(prefix: &Path, roles: &[RoleType]) -> Result<Vec<Box<dyn KeySource>>> {
    let mut keys: Vec<Box<dyn KeySource>> = Vec::new();
    for &role in roles {
        let k = FileKey {
            path: key_path(prefix, role),
        };
        k.signer()?;
        keys.push(Box::new(k));
    }
    Ok(keys)
}

/// `edgeimg keygen --tuf --out PREFIX`: the four role keys and the signed
/// root metadata. Refuses before writing anything if any file exists; on a
/// failure part-way, removes what it wrote.
pub fn keygen(prefix: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = ROLES.iter().map(|&r| key_path(prefix, r)).collect();
    paths.push(root_path(prefix));
    for p in &paths {
        if p.exists() || p.is_symlink() {
            anyhow::bail!(
                "{} already exists; refusing to overwrite a key (choose another --out)",
                p.display()
            );
        }
    }
    let mut written: Vec<PathBuf> = Vec::new();
    let r = (|| -> Result<()> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        for &role in &ROLES {
            let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| anyhow::anyhow!("generating an ed25519 key failed"))?;
            let text = pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref().to_vec()));
            let p = key_path(prefix, role);
            crate::new_file::write_new(&p, text.as_bytes(), 0o600)?;
            written.push(p);
        }
        let root = block_on(signed_root(prefix))??;
        let p = root_path(prefix);
        crate::new_file::write_new(&p, &root, 0o644)?;
        written.push(p);
        Ok(())
    })();
    if let Err(e) = r {
        for p in &written {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    Ok(paths)
}

/// Root metadata version 1 naming the role keys of `prefix`, signed with
/// the root key: its bytes.
async fn signed_root(prefix: &Path) -> Result<Vec<u8>> {
    let expires = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * ROOT_EXPIRES_DAYS))
        .context("root expiry")?;
    let mut root = Root {
        spec_version: "1.0.0".into(),
        consistent_snapshot: true,
        version: NonZeroU64::MIN,
        expires,
        keys: HashMap::new(),
        roles: HashMap::new(),
        _extra: HashMap::new(),
    };
    for role in ROLES {
        let key = FileKey {
            path: key_path(prefix, role),
        }
        .signer()?
        .tuf_key();
        let id = key
            .key_id()
            .map_err(|e| anyhow::anyhow!("key id of the {} key: {e}", role_name(role)))?;
        root.keys.insert(id.clone(), key);
        root.roles.insert(
            role,
            RoleKeys {
                keyids: vec![id],
                threshold: NonZeroU64::MIN,
                _extra: HashMap::new(),
            },
        );
    }
    let root_key: Vec<Box<dyn KeySource>> = vec![Box::new(FileKey {
        path: key_path(prefix, RoleType::Root),
    })];
    let signed = tough::editor::signed::SignedRole::new(
        root.clone(),
        &KeyHolder::Root(root),
        &root_key,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("signing the root metadata: {e}"))?;
    // The signed bytes are only reachable through `write`: into a temporary
    // directory, then read back.
    let tmp = tempfile::tempdir().context("temporary directory")?;
    signed
        .write(tmp.path(), false)
        .await
        .map_err(|e| anyhow::anyhow!("writing the root metadata: {e}"))?;
    std::fs::read(tmp.path().join("1.root.json")).context("reading the signed root metadata")
}
