//! What `edgeimg bundle list` shows: the shipped manifests and what the cache
//! holds, as text or JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::store::IndexRecord;
use super::{Arch, BundleError, Role, Store};
use crate::config::size::human;

#[derive(Debug, Serialize)]
pub struct Listing {
    pub shipped: Vec<Shipped>,
    /// The store's directory.
    pub cache: PathBuf,
    pub cached: Vec<Cached>,
}

#[derive(Debug, Serialize)]
pub struct Shipped {
    pub name: String,
    pub k3s_version: String,
    pub nerdctl_version: String,
    pub arches: Vec<Arch>,
}

#[derive(Debug, Serialize)]
pub struct Cached {
    pub bundle: String,
    pub arch: Arch,
    /// `None` when the k3s binary is not among the cached files.
    pub k3s_version: Option<String>,
    pub size: u64,
    pub files: Vec<IndexRecord>,
}

/// The listing of `store`.
pub fn listing(store: &Store) -> Result<Listing, BundleError> {
    let shipped = super::manifest::shipped()?
        .into_iter()
        .map(|m| Shipped {
            arches: m.arches.keys().copied().collect(),
            name: m.name,
            k3s_version: m.k3s_version,
            nerdctl_version: m.nerdctl_version,
        })
        .collect();
    let mut groups: BTreeMap<(String, Arch), Vec<IndexRecord>> = BTreeMap::new();
    for r in store.listing()? {
        groups
            .entry((r.bundle.clone(), r.arch))
            .or_default()
            .push(r);
    }
    let cached = groups
        .into_iter()
        .map(|((bundle, arch), files)| Cached {
            k3s_version: files
                .iter()
                .find(|f| f.role == Role::K3s)
                .map(|f| f.version.clone()),
            size: files.iter().map(|f| f.size).sum(),
            bundle,
            arch,
            files,
        })
        .collect();
    Ok(Listing {
        shipped,
        cache: store.root().to_path_buf(),
        cached,
    })
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "shipped manifests:")?;
        for m in &self.shipped {
            let arches = m
                .arches
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            writeln!(
                f,
                "  {:<24} k3s {:<16} nerdctl {:<8} {arches}",
                m.name, m.k3s_version, m.nerdctl_version
            )?;
        }
        writeln!(f, "cached in {}:", self.cache.display())?;
        if self.cached.is_empty() {
            writeln!(f, "  (nothing)")?;
        }
        for c in &self.cached {
            let n = c.files.len();
            writeln!(
                f,
                "  {:<24} {:<6} k3s {:<16} {:>10}  {n} {}",
                c.bundle,
                c.arch.to_string(),
                c.k3s_version.as_deref().unwrap_or("?"),
                human(c.size),
                if n == 1 { "file" } else { "files" }
            )?;
            for r in &c.files {
                writeln!(
                    f,
                    "      {:<44} {:>10}  {}",
                    r.file,
                    human(r.size),
                    r.version
                )?;
            }
        }
        Ok(())
    }
}
