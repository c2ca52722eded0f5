//! The lock file (`edgeimg.lock` next to the config): for every bundle and
//! architecture fetched or imported, the SHA-256 and size of each file. Later
//! fetches, `bundle verify` and builds check against it. Format: docs/bundles.md.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Arch, BundleError, Role};
use crate::io_error::IoError;

const HEADER: &str = "# edgeimg bundle lock: the SHA-256 of every K3s bundle file fetched or imported.\n\
# Written by `edgeimg bundle fetch` / `edgeimg bundle import`; checked by builds and\n\
# `edgeimg bundle verify`. Keep it in version control next to edgeimg.toml.\n\n";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Format version (1).
    pub lock_version: u32,
    #[serde(default, rename = "bundle")]
    pub bundles: Vec<LockEntry>,
}

/// One bundle for one architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    /// Manifest name, e.g. `k3s-v1.36.4+k3s1`.
    pub name: String,
    pub arch: Arch,
    /// K3s version.
    pub version: String,
    pub nerdctl_version: String,
    /// Upstream file name → hash and size.
    pub assets: BTreeMap<String, LockedAsset>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedAsset {
    pub role: Role,
    pub sha256: String,
    pub size: u64,
}

impl LockFile {
    /// Reads a lock; a missing file is an empty lock.
    pub fn load_or_empty(path: &Path) -> Result<LockFile, BundleError> {
        let Some(l) = super::read_toml::<LockFile>(path, "cannot read lock file")? else {
            return Ok(LockFile {
                lock_version: 1,
                bundles: Vec::new(),
            });
        };
        let invalid = |message: String| BundleError::LockInvalid {
            file: path.to_path_buf(),
            line: 1,
            message,
        };
        if l.lock_version != 1 {
            return Err(invalid(format!(
                "unsupported lock_version {} (this edgeimg reads 1)",
                l.lock_version
            )));
        }
        for e in &l.bundles {
            for (file, a) in &e.assets {
                if !super::is_sha256(&a.sha256) {
                    return Err(invalid(format!(
                        "bundle {} ({}) asset `{file}`: `{}` is not a lowercase SHA-256",
                        e.name, e.arch, a.sha256
                    )));
                }
            }
        }
        Ok(l)
    }

    pub fn entry(&self, name: &str, arch: Arch) -> Option<&LockEntry> {
        self.bundles
            .iter()
            .find(|e| e.name == name && e.arch == arch)
    }

    /// Adds `entry`, merging its assets into an existing entry of the same
    /// name and arch (so a later `--buildkit` fetch adds nerdctl_full).
    pub fn upsert(&mut self, entry: LockEntry) {
        match self
            .bundles
            .iter_mut()
            .find(|e| e.name == entry.name && e.arch == entry.arch)
        {
            Some(e) => {
                e.version = entry.version;
                e.nerdctl_version = entry.nerdctl_version;
                e.assets.extend(entry.assets);
            }
            None => self.bundles.push(entry),
        }
        self.bundles
            .sort_by(|a, b| (&a.name, a.arch).cmp(&(&b.name, b.arch)));
    }

    pub fn to_text(&self) -> String {
        format!(
            "{HEADER}{}",
            toml::to_string(self).expect("lock serialises")
        )
    }

    /// Writes the lock atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<(), BundleError> {
        let io = |source| BundleError::from(IoError::new("cannot write lock file", path, source));
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("edgeimg.lock")
        ));
        std::fs::write(&tmp, self.to_text()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file: &str, hash: char) -> LockEntry {
        LockEntry {
            name: "k3s-v1.36.4+k3s1".into(),
            arch: Arch::Amd64,
            version: "v1.36.4+k3s1".into(),
            nerdctl_version: "2.1.6".into(),
            assets: [(
                file.to_string(),
                LockedAsset {
                    role: Role::K3s,
                    sha256: hash.to_string().repeat(64),
                    size: 3,
                },
            )]
            .into(),
        }
    }

    #[test]
    fn round_trips_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("edgeimg.lock");
        let mut l = LockFile::load_or_empty(&p).unwrap();
        l.upsert(entry("k3s", 'a'));
        l.upsert(entry("nerdctl-full-2.1.6-linux-amd64.tar.gz", 'b'));
        l.save(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("[[bundle]]") && text.contains("[bundle.assets.k3s]"),
            "{text}"
        );
        let back = LockFile::load_or_empty(&p).unwrap();
        assert_eq!(back, l);
        assert_eq!(
            back.entry("k3s-v1.36.4+k3s1", Arch::Amd64)
                .unwrap()
                .assets
                .len(),
            2
        );
    }

    #[test]
    fn bad_lock_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("edgeimg.lock");
        std::fs::write(
            &p,
            "lock_version = 1\n\n[[bundle]]\nname = \"x\"\narch = \"mips\"\n",
        )
        .unwrap();
        let e = LockFile::load_or_empty(&p).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:5:", p.display())), "{e}");
    }
}
