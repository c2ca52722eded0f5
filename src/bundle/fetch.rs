//! `edgeimg bundle fetch`: download a bundle's assets (ureq, rustls, proxy from
//! HTTPS_PROXY/HTTP_PROXY/ALL_PROXY/NO_PROXY), resuming partial downloads with
//! `Range`, verify each against its release checksum file (and the lock) before
//! it enters the store, then record them in the lock.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::lock::{LockEntry, LockFile, LockedAsset};
use super::store::IndexRecord;
use super::sums::Checksums;
use super::{
    Arch, AssetSpec, BundleError, Manifest, ResolvedAsset, ResolvedBundle, Role, Store, redact,
};
use crate::io_error::{IoError, io_err};
use crate::progress::Progress;

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub arch: Arch,
    /// Also fetch `nerdctl_full` (BuildKit).
    pub buildkit: bool,
    /// The lock file to check against and update (default `edgeimg.lock`).
    pub lock: PathBuf,
    /// Replaces the manifest's `upstream` prefix (`https://github.com`) in every URL.
    pub mirror: Option<String>,
    pub quiet: bool,
}

#[derive(Debug, Clone)]
pub struct FetchReport {
    pub bundle: ResolvedBundle,
    /// Files downloaded by this call.
    pub downloaded: Vec<String>,
    /// Files already in the store (verified against the lock), not downloaded.
    pub cached: Vec<String>,
}

/// Fetches into the default store (`<cache>/bundles`).
pub fn fetch(manifest: &Manifest, opts: &FetchOptions) -> Result<FetchReport, BundleError> {
    fetch_into(&Store::open_default(), manifest, opts)
}

pub fn fetch_into(
    store: &Store,
    manifest: &Manifest,
    opts: &FetchOptions,
) -> Result<FetchReport, BundleError> {
    let arch = opts.arch;
    let required = manifest.required(arch, opts.buildkit)?;
    let progress = Progress::new(opts.quiet);
    let _guard = store.lock()?;
    let mut lock = LockFile::load_or_empty(&opts.lock)?;
    let entry = lock.entry(&manifest.name, arch).cloned();
    let locked = |file: &str| entry.as_ref().and_then(|e| e.assets.get(file)).cloned();

    let mut resolved: BTreeMap<Role, ResolvedAsset> = BTreeMap::new();
    let mut cached = Vec::new();
    let mut todo: Vec<&AssetSpec> = Vec::new();
    for spec in &required {
        if let Some(l) = locked(&spec.file) {
            match store.check(&l.sha256, &spec.file) {
                Ok(Some(path)) => {
                    resolved.insert(
                        spec.role,
                        asset(manifest, spec, path, l.sha256.clone(), l.size),
                    );
                    cached.push(spec.file.clone());
                    continue;
                }
                Ok(None) => {}
                Err(BundleError::StoreCorrupt { path, .. }) => {
                    progress.note(&format!(
                        "warning: cached {} ({}) is corrupt; removing it and fetching again",
                        spec.file,
                        path.display()
                    ));
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(e),
            }
        }
        todo.push(spec);
    }
    let mut downloaded = Vec::new();
    if !todo.is_empty() {
        let agent = agent();
        let fetcher = Fetcher {
            agent: &agent,
            store,
            manifest,
            mirror: opts.mirror.as_deref(),
            progress: &progress,
        };
        // Checksum files first: from the store when locked and present, else downloaded.
        let mut sums: BTreeMap<Role, Checksums> = BTreeMap::new();
        for role in [Role::K3sChecksums, Role::NerdctlChecksums] {
            if !todo
                .iter()
                .any(|s| s.role == role || s.role.checksums() == Some(role))
            {
                continue;
            }
            let spec = required
                .iter()
                .find(|s| s.role == role)
                .expect("checksum files are required");
            if let Some(a) = resolved.get(&role) {
                let text =
                    std::fs::read_to_string(&a.path).map_err(io_err("cannot read", &a.path))?;
                sums.insert(
                    role,
                    Checksums::parse(
                        &format!("{} (cached {})", spec.file, a.path.display()),
                        &text,
                    )?,
                );
                continue;
            }
            let (part, url, sha256, size) = fetcher.download_checksums(spec)?;
            let refuse = |e: BundleError| {
                let _ = std::fs::remove_file(&part);
                Err(e)
            };
            let text = std::fs::read_to_string(&part).map_err(io_err("cannot read", &part))?;
            let list = match Checksums::parse(&spec.file, &text) {
                Ok(l) => l,
                Err(e) => return refuse(e),
            };
            if let Some(l) = locked(&spec.file)
                && l.sha256 != sha256
            {
                // Name the asset whose upstream checksum changed, else the checksum file itself.
                let changed = required
                    .iter()
                    .filter(|a| a.role.checksums() == Some(role))
                    .find_map(|a| {
                        let la = locked(&a.file)?;
                        let listed = list.get(&a.file).ok()?;
                        (la.sha256 != listed)
                            .then(|| (a.file.clone(), la.sha256, listed.to_string()))
                    });
                let (asset_name, locked_hash, upstream) =
                    changed.unwrap_or((spec.file.clone(), l.sha256, sha256));
                return refuse(BundleError::LockMismatch(Box::new(super::LockMismatch {
                    asset: asset_name,
                    lock: opts.lock.clone(),
                    bundle: manifest.name.clone(),
                    arch,
                    locked: locked_hash,
                    upstream,
                    source_desc: format!("the upstream checksum file {}", redact(&url)),
                })));
            }
            let path = store.insert(&part, &sha256)?;
            resolved.insert(role, asset(manifest, spec, path, sha256, size));
            downloaded.push(spec.file.clone());
            sums.insert(role, list);
        }
        for spec in todo.iter().filter(|s| !s.role.is_checksums()) {
            let listed = sums[&spec.role.checksums().expect("asset has a checksum file")]
                .get(&spec.file)?
                .to_string();
            let expected = match &spec.sha256 {
                Some(pin) if *pin != listed => {
                    return Err(BundleError::ChecksumMismatch {
                        asset: spec.file.clone(),
                        source_desc: format!(
                            "listed in {}",
                            sums[&spec.role.checksums().unwrap()].source
                        ),
                        expected: pin.clone(),
                        actual: listed,
                        against: format!("the sha256 pinned in manifest {}", manifest.source),
                    });
                }
                _ => listed,
            };
            if let Some(l) = locked(&spec.file)
                && l.sha256 != expected
            {
                return Err(BundleError::LockMismatch(Box::new(super::LockMismatch {
                    asset: spec.file.clone(),
                    lock: opts.lock.clone(),
                    bundle: manifest.name.clone(),
                    arch,
                    locked: l.sha256,
                    upstream: expected,
                    source_desc: format!(
                        "the upstream checksum file {}",
                        sums[&spec.role.checksums().unwrap()].source
                    ),
                })));
            }
            let against = format!(
                "the checksum file {}",
                sums[&spec.role.checksums().unwrap()].source
            );
            let (path, size) = fetcher.download_verified(spec, &expected, &against)?;
            resolved.insert(spec.role, asset(manifest, spec, path, expected, size));
            downloaded.push(spec.file.clone());
        }
    }
    let assets: Vec<ResolvedAsset> = resolved.into_values().collect();
    if !downloaded.is_empty() || entry.is_none() || assets.iter().any(|a| locked(&a.file).is_none())
    {
        lock.upsert(lock_entry(manifest, arch, &assets));
        lock.save(&opts.lock)?;
    }
    store.record(index_records(manifest, arch, &assets))?;
    Ok(FetchReport {
        bundle: ResolvedBundle::from_assets(manifest, arch, assets, None),
        downloaded,
        cached,
    })
}

pub(crate) fn asset(
    m: &Manifest,
    spec: &AssetSpec,
    path: PathBuf,
    sha256: String,
    size: u64,
) -> ResolvedAsset {
    ResolvedAsset {
        role: spec.role,
        file: spec.file.clone(),
        path,
        sha256,
        size,
        version: m.version_of(spec.role).to_string(),
        url: spec.url.clone(),
    }
}

pub(crate) fn lock_entry(m: &Manifest, arch: Arch, assets: &[ResolvedAsset]) -> LockEntry {
    LockEntry {
        name: m.name.clone(),
        arch,
        version: m.k3s_version.clone(),
        nerdctl_version: m.nerdctl_version.clone(),
        assets: assets
            .iter()
            .map(|a| {
                (
                    a.file.clone(),
                    LockedAsset {
                        role: a.role,
                        sha256: a.sha256.clone(),
                        size: a.size,
                    },
                )
            })
            .collect(),
    }
}

pub(crate) fn index_records(
    m: &Manifest,
    arch: Arch,
    assets: &[ResolvedAsset],
) -> Vec<IndexRecord> {
    assets
        .iter()
        .map(|a| IndexRecord {
            bundle: m.name.clone(),
            arch,
            version: a.version.clone(),
            role: a.role,
            file: a.file.clone(),
            sha256: a.sha256.clone(),
            size: a.size,
        })
        .collect()
}

/// The HTTP agent: rustls with webpki roots, proxy from the environment,
/// HTTP errors returned as responses (so a 404 names its URL).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(ureq::Proxy::try_from_env())
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .user_agent(format!("edgeimg/{}", crate::VERSION))
        .build()
        .into()
}

struct Fetcher<'a> {
    agent: &'a ureq::Agent,
    store: &'a Store,
    manifest: &'a Manifest,
    mirror: Option<&'a str>,
    progress: &'a Progress,
}

impl Fetcher<'_> {
    fn url(&self, spec: &AssetSpec) -> Result<String, BundleError> {
        self.manifest
            .url_for(spec, self.mirror)
            .ok_or_else(|| BundleError::NoUrl {
                asset: spec.file.clone(),
                manifest: self.manifest.source.clone(),
            })
    }

    fn partial(&self, spec: &AssetSpec, url: &str) -> Result<PathBuf, BundleError> {
        let dir = self.store.partial_dir();
        std::fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        Ok(dir.join(format!(
            "{}-{}.part",
            spec.file,
            &super::hash_bytes(url.as_bytes())[..12]
        )))
    }

    /// A checksum file: downloaded whole (small) into `partial/` and checked
    /// against any manifest pin. Returns (partial path, url, sha256, size); the
    /// caller checks the lock and stores it.
    fn download_checksums(
        &self,
        spec: &AssetSpec,
    ) -> Result<(PathBuf, String, String, u64), BundleError> {
        let url = self.url(spec)?;
        let part = self.partial(spec, &url)?;
        let _ = std::fs::remove_file(&part);
        self.progress
            .note(&format!("fetching {} from {}", spec.file, redact(&url)));
        download(self.agent, &url, &part, self.progress, &spec.file)?;
        let (sha256, size) = super::hash_file(&part)?;
        if let Some(pin) = &spec.sha256
            && *pin != sha256
        {
            let _ = std::fs::remove_file(&part);
            return Err(BundleError::ChecksumMismatch {
                asset: spec.file.clone(),
                source_desc: redact(&url),
                expected: pin.clone(),
                actual: sha256,
                against: format!("the sha256 pinned in manifest {}", self.manifest.source),
            });
        }
        Ok((part, url, sha256, size))
    }

    /// An asset: downloaded (resuming a partial), hashed, and stored only when
    /// it matches `expected`. A resumed download that does not match is
    /// retried once from the start.
    fn download_verified(
        &self,
        spec: &AssetSpec,
        expected: &str,
        against: &str,
    ) -> Result<(PathBuf, u64), BundleError> {
        let url = self.url(spec)?;
        let part = self.partial(spec, &url)?;
        for attempt in 0..2 {
            let resumed = part.metadata().map(|m| m.len() > 0).unwrap_or(false);
            if resumed {
                self.progress.note(&format!(
                    "resuming {} from {} at byte {}",
                    spec.file,
                    redact(&url),
                    part.metadata().map(|m| m.len()).unwrap_or(0)
                ));
            } else {
                self.progress
                    .note(&format!("fetching {} from {}", spec.file, redact(&url)));
            }
            download(self.agent, &url, &part, self.progress, &spec.file)?;
            let (actual, size) = super::hash_file(&part)?;
            if actual == expected {
                let path = self.store.insert(&part, expected)?;
                self.progress.note(&format!(
                    "  {} verified: sha256 {actual}, {size} bytes",
                    spec.file
                ));
                return Ok((path, size));
            }
            let _ = std::fs::remove_file(&part);
            if !(resumed && attempt == 0) {
                return Err(BundleError::ChecksumMismatch {
                    asset: spec.file.clone(),
                    source_desc: redact(&url),
                    expected: expected.to_string(),
                    actual,
                    against: against.to_string(),
                });
            }
            self.progress.note(&format!(
                "  {}: the resumed download does not verify; starting again from the beginning",
                spec.file
            ));
        }
        unreachable!("the loop returns")
    }
}

/// Downloads `url` into `part`, appending with `Range: bytes=<len>-` when
/// `part` already holds a prefix. Returns when the body was received in full.
/// An interrupted body keeps `part` for the next call.
pub fn download(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    progress: &Progress,
    label: &str,
) -> Result<(), BundleError> {
    let shown = redact(url);
    let transport = |e: ureq::Error| BundleError::Transport {
        url: shown.clone(),
        message: e.to_string(),
    };
    let io = |source| IoError::new("cannot write", part, source);
    for _ in 0..2 {
        let offset = part.metadata().map(|m| m.len()).unwrap_or(0);
        let mut req = agent.get(url);
        if offset > 0 {
            req = req.header("Range", format!("bytes={offset}-"));
        }
        let resp = req.call().map_err(transport)?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (append, total) = match status {
            206 if offset > 0 => {
                let range = header("content-range").and_then(|v| parse_content_range(&v));
                match range {
                    Some((start, total)) if start == offset => (true, total),
                    _ => {
                        // Not the range we asked for: start again from zero.
                        let _ = std::fs::remove_file(part);
                        continue;
                    }
                }
            }
            200 => (false, resp.body().content_length()),
            416 if offset > 0 => {
                let _ = std::fs::remove_file(part);
                continue;
            }
            404 => return Err(BundleError::NotFound { url: shown }),
            s => {
                return Err(BundleError::HttpStatus {
                    url: shown,
                    status: s,
                });
            }
        };
        let mut file = if append {
            std::fs::OpenOptions::new()
                .append(true)
                .open(part)
                .map_err(io)?
        } else {
            std::fs::File::create(part).map_err(io)?
        };
        let start = if append { offset } else { 0 };
        let pb = progress.bytes(label, total.unwrap_or(0));
        pb.set_position(start);
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = start;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    file.write_all(&buf[..n]).map_err(io)?;
                    got += n as u64;
                    pb.set_position(got);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    file.flush().map_err(io)?;
                    pb.abandon();
                    return Err(BundleError::Interrupted {
                        url: shown,
                        got,
                        expected: total,
                        partial: part.to_path_buf(),
                        message: e.to_string(),
                    });
                }
            }
        }
        file.sync_all().map_err(io)?;
        pb.finish_and_clear();
        if let Some(t) = total
            && got != t
        {
            return Err(BundleError::Truncated {
                url: shown,
                got,
                expected: t,
                partial: part.to_path_buf(),
            });
        }
        return Ok(());
    }
    Err(BundleError::Transport {
        url: shown,
        message: "the server did not honour the Range request twice".into(),
    })
}

/// `bytes <start>-<end>/<total>` → (start, total).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some((start.parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
