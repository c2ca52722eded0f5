//! Hand-carried assets: `edgeimg bundle import DIR` (into the store and the
//! lock) and `edgeimg build --bundle DIR` ([`super::from_dir`]). The directory
//! holds the files under their upstream names with the release checksum files
//! beside them; everything is verified exactly as a download is.

use std::path::{Path, PathBuf};

use super::fetch::{asset, index_records, lock_entry};
use super::lock::LockFile;
use super::sums::Checksums;
use super::{Arch, BundleError, Manifest, ResolvedAsset, ResolvedBundle, Role, Store};
use crate::io_error::io_err;

#[derive(Debug, Clone)]
pub struct ImportReport {
    pub bundle: ResolvedBundle,
    /// The lock that was updated.
    pub lock: PathBuf,
}

/// Verifies the assets in `dir` against the checksum files in `dir` and any
/// manifest pins; returns them with their paths in `dir`. Nothing is written.
pub(crate) fn verify_dir(
    dir: &Path,
    manifest: &Manifest,
    arch: Arch,
    buildkit: bool,
) -> Result<Vec<ResolvedAsset>, BundleError> {
    let mut wanted = manifest
        .required(arch, buildkit)?
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    if !buildkit
        && let Some(full) = manifest.asset(arch, Role::NerdctlFull)?
        && dir.join(&full.file).is_file()
    {
        wanted.push(full.clone());
    }
    let missing = |spec: &super::AssetSpec| BundleError::MissingInDir {
        asset: spec.role.key().to_string(),
        file: spec.file.clone(),
        dir: dir.to_path_buf(),
    };
    let mut out = Vec::new();
    let mut sums: Vec<(Role, Checksums)> = Vec::new();
    // Checksum files first.
    for spec in wanted.iter().filter(|s| s.role.is_checksums()) {
        let p = dir.join(&spec.file);
        if !p.is_file() {
            return Err(missing(spec));
        }
        let (sha256, size) = super::hash_file(&p)?;
        if let Some(pin) = &spec.sha256
            && *pin != sha256
        {
            return Err(BundleError::ChecksumMismatch {
                asset: spec.file.clone(),
                source_desc: p.display().to_string(),
                expected: pin.clone(),
                actual: sha256,
                against: format!("the sha256 pinned in manifest {}", manifest.source),
            });
        }
        let text = std::fs::read_to_string(&p).map_err(io_err("cannot read", &p))?;
        sums.push((
            spec.role,
            Checksums::parse(&p.display().to_string(), &text)?,
        ));
        out.push(asset(manifest, spec, p, sha256, size));
    }
    for spec in wanted.iter().filter(|s| !s.role.is_checksums()) {
        let p = dir.join(&spec.file);
        if !p.is_file() {
            return Err(missing(spec));
        }
        let list = &sums
            .iter()
            .find(|(r, _)| Some(*r) == spec.role.checksums())
            .expect("checksum file verified")
            .1;
        let expected = spec
            .sha256
            .clone()
            .unwrap_or(list.get(&spec.file)?.to_string());
        let listed = list.get(&spec.file)?;
        let (actual, size) = super::hash_file(&p)?;
        if actual != listed || actual != expected {
            let (expected, against) = if actual != listed {
                (
                    listed.to_string(),
                    format!("the checksum file {}", list.source),
                )
            } else {
                (
                    expected,
                    format!("the sha256 pinned in manifest {}", manifest.source),
                )
            };
            return Err(BundleError::ChecksumMismatch {
                asset: spec.file.clone(),
                source_desc: p.display().to_string(),
                expected,
                actual,
                against,
            });
        }
        out.push(asset(manifest, spec, p, actual, size));
    }
    Ok(out)
}

/// `edgeimg bundle import DIR`: verify everything in `dir` (nothing is stored
/// unless every wanted file verifies), check it against `lock`'s entry if
/// there is one, copy into the store and update the lock.
pub fn import(
    dir: &Path,
    manifest: &Manifest,
    arch: Arch,
    buildkit: bool,
    lock: &Path,
) -> Result<ImportReport, BundleError> {
    import_into(&Store::open_default(), dir, manifest, arch, buildkit, lock)
}

pub fn import_into(
    store: &Store,
    dir: &Path,
    manifest: &Manifest,
    arch: Arch,
    buildkit: bool,
    lock: &Path,
) -> Result<ImportReport, BundleError> {
    let from_dir = ResolvedBundle::from_assets(
        manifest,
        arch,
        verify_dir(dir, manifest, arch, buildkit)?,
        Some(dir.to_path_buf()),
    );
    from_dir.check_lock(lock)?;
    let _guard = store.lock()?;
    let mut stored = Vec::new();
    for a in from_dir.assets() {
        let path = store.insert_copy(&a.path, &a.sha256, &a.file)?;
        stored.push(ResolvedAsset { path, ..a.clone() });
    }
    let mut l = LockFile::load_or_empty(lock)?;
    l.upsert(lock_entry(manifest, arch, &stored));
    l.save(lock)?;
    store.record(index_records(manifest, arch, &stored))?;
    Ok(ImportReport {
        bundle: ResolvedBundle::from_assets(manifest, arch, stored, None),
        lock: lock.to_path_buf(),
    })
}

/// One problem `bundle verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyProblem {
    pub bundle: String,
    pub arch: Arch,
    pub file: String,
    pub path: PathBuf,
    /// `missing from the store`, or `hashes to X, locked Y`.
    pub problem: String,
}

/// Re-hashes every file `lock` records against the default store. Returns the
/// number of files checked, or [`BundleError::VerifyFailed`] listing every problem.
pub fn verify(lock: &Path) -> Result<usize, BundleError> {
    verify_in(&Store::open_default(), lock)
}

pub fn verify_in(store: &Store, lock: &Path) -> Result<usize, BundleError> {
    if !lock.exists() {
        return Err(BundleError::NoLock {
            lock: lock.to_path_buf(),
        });
    }
    let l = LockFile::load_or_empty(lock)?;
    let mut problems = Vec::new();
    let mut n = 0;
    for e in &l.bundles {
        for (file, a) in &e.assets {
            n += 1;
            let path = store.path(&a.sha256);
            let problem = if !path.is_file() {
                Some("missing from the store".to_string())
            } else {
                let (actual, size) = super::hash_file(&path)?;
                (actual != a.sha256 || size != a.size).then(|| {
                    format!(
                        "hashes to {actual} ({size} bytes), locked {} ({} bytes)",
                        a.sha256, a.size
                    )
                })
            };
            if let Some(problem) = problem {
                problems.push(VerifyProblem {
                    bundle: e.name.clone(),
                    arch: e.arch,
                    file: file.clone(),
                    path,
                    problem,
                });
            }
        }
    }
    if problems.is_empty() {
        return Ok(n);
    }
    let details = problems
        .iter()
        .map(|p| {
            format!(
                "  {} ({}) {}: {}: {}",
                p.bundle,
                p.arch,
                p.file,
                p.path.display(),
                p.problem
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    Err(BundleError::VerifyFailed {
        count: problems.len(),
        details,
    })
}
