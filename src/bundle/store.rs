//! The content-addressed store under `<cache>/bundles/`:
//!
//! ```text
//! <cache>/bundles/sha256/<hex>        verified files, named by their SHA-256, read-only
//! <cache>/bundles/partial/<file>-<urlhash>.part   downloads in progress (resumed with Range)
//! <cache>/bundles/index.toml          which bundle/arch/file each hash came as (for `bundle list`)
//! <cache>/bundles/.lock               serialises concurrent fetches and imports
//! ```
//!
//! A file enters `sha256/` only by rename after its hash was checked.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Arch, BundleError, Role};
use crate::io_error::{IoError, io_err};

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// What `bundle list` shows about a stored file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexRecord {
    pub bundle: String,
    pub arch: Arch,
    pub version: String,
    pub role: Role,
    pub file: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    #[serde(default, rename = "file")]
    files: Vec<IndexRecord>,
}

impl Store {
    /// `edgeimg::cache::dir()/bundles`.
    pub fn open_default() -> Store {
        Store::open(crate::cache::dir().join("bundles"))
    }

    pub fn open(root: PathBuf) -> Store {
        Store { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the file with this SHA-256 is (or would be) stored.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    pub fn partial_dir(&self) -> PathBuf {
        self.root.join("partial")
    }

    /// The stored file for `sha256`, re-hashed: `Ok(None)` when absent,
    /// [`BundleError::StoreCorrupt`] when its bytes no longer match.
    pub fn check(&self, sha256: &str, asset: &str) -> Result<Option<PathBuf>, BundleError> {
        let p = self.path(sha256);
        if !p.is_file() {
            return Ok(None);
        }
        let (actual, _) = super::hash_file(&p)?;
        if actual != sha256 {
            return Err(BundleError::StoreCorrupt {
                asset: asset.to_string(),
                path: p,
                expected: sha256.to_string(),
                actual,
            });
        }
        Ok(Some(p))
    }

    /// Moves a verified file (on the same filesystem, e.g. from `partial/`)
    /// into the store under `sha256`. The caller has checked the hash.
    pub fn insert(&self, verified: &Path, sha256: &str) -> Result<PathBuf, BundleError> {
        let dest = self.path(sha256);
        let dir = dest.parent().expect("store path has a parent");
        std::fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
        let io = |source| IoError::new("cannot store", &dest, source);
        std::fs::set_permissions(verified, std::fs::Permissions::from_mode(0o444)).map_err(io)?;
        std::fs::rename(verified, &dest).map_err(io)?;
        Ok(dest)
    }

    /// Copies `src` into the store through a temporary file whose hash is
    /// checked against `sha256` (so a file changing under us cannot slip in).
    pub fn insert_copy(
        &self,
        src: &Path,
        sha256: &str,
        asset: &str,
    ) -> Result<PathBuf, BundleError> {
        let dest = self.path(sha256);
        if dest.is_file() && self.check(sha256, asset).is_ok() {
            return Ok(dest);
        }
        let pd = self.partial_dir();
        std::fs::create_dir_all(&pd).map_err(io_err("cannot create", &pd))?;
        let tmp = pd.join(format!("{sha256}.import"));
        std::fs::copy(src, &tmp).map_err(io_err("cannot copy into the store", src))?;
        let (actual, _) = super::hash_file(&tmp)?;
        if actual != sha256 {
            let _ = std::fs::remove_file(&tmp);
            return Err(BundleError::ChecksumMismatch {
                asset: asset.to_string(),
                source_desc: src.display().to_string(),
                expected: sha256.to_string(),
                actual,
                against:
                    "the hash checked a moment earlier (the file changed while being imported)"
                        .into(),
            });
        }
        if dest.exists() {
            // A corrupt copy (checked above): replace it.
            let _ = std::fs::remove_file(&dest);
        }
        self.insert(&tmp, sha256)
    }

    /// Serialises fetches and imports on this store.
    pub fn lock(&self) -> Result<crate::cache::Lock, BundleError> {
        let p = self.root.join(".lock");
        crate::cache::Lock::acquire(&p).map_err(|e| {
            IoError::new("cannot lock", p, std::io::Error::other(format!("{e:#}"))).into()
        })
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.toml")
    }

    /// Every stored file's provenance (stale records of removed files included;
    /// [`Store::listing`] filters them).
    pub fn index(&self) -> Result<Vec<IndexRecord>, BundleError> {
        let index = super::read_toml::<Index>(&self.index_path(), "cannot read")?;
        Ok(index.map(|i| i.files).unwrap_or_default())
    }

    /// Records where stored files came from (call with the store lock held).
    pub fn record(
        &self,
        records: impl IntoIterator<Item = IndexRecord>,
    ) -> Result<(), BundleError> {
        let mut files = self.index()?;
        files.extend(records);
        files.sort();
        files.dedup();
        let p = self.index_path();
        let tmp = self.root.join(".index.toml.tmp");
        let io = |source| BundleError::from(IoError::new("cannot write", &p, source));
        std::fs::create_dir_all(&self.root).map_err(io)?;
        std::fs::write(
            &tmp,
            toml::to_string(&Index { files }).expect("index serialises"),
        )
        .map_err(io)?;
        std::fs::rename(&tmp, &p).map_err(io)
    }

    /// Index records whose file is present in the store (not re-hashed).
    pub fn listing(&self) -> Result<Vec<IndexRecord>, BundleError> {
        Ok(self
            .index()?
            .into_iter()
            .filter(|r| self.path(&r.sha256).is_file())
            .collect())
    }
}
