//! K3s air-gap bundles: manifests (`airgap-bundles/`), download with resume and
//! verification (`edgeimg bundle fetch`), hand-carried assets (`bundle import`,
//! `build --bundle DIR`), the content-addressed store and the lock file.
//!
//! Trust flows one way: the release's checksum file (`sha256sum-<arch>.txt`,
//! nerdctl's `SHA256SUMS`) names the SHA-256 of every asset; an asset enters the
//! store only when its bytes hash to that; the lock records what entered, and
//! every later use ([`resolve`], `bundle verify`) re-hashes against the lock.
//!
//! The builder calls [`resolve`] (cached bundle, checked against the lock) or
//! [`from_dir`] (a `--bundle DIR`), and gets a [`ResolvedBundle`].

pub mod carry;
pub mod fetch;
pub mod import;
pub mod list;
pub mod lock;
pub mod manifest;
pub mod store;
pub mod sums;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::io_error::IoError;

pub use fetch::{FetchOptions, FetchReport, fetch};
pub use import::{ImportReport, import, verify};
pub use lock::{LockEntry, LockFile, LockedAsset};
pub use manifest::{AssetSpec, Manifest};
pub use store::Store;

/// The lock file's name: it lives beside the config a build reads
/// ([`crate::config::lock_path`]), for `build` and every `bundle` command alike.
pub const DEFAULT_LOCK: &str = "edgeimg.lock";
/// Environment variable holding a mirror that replaces the manifest's upstream.
pub const MIRROR_ENV: &str = "EDGEIMG_BUNDLE_MIRROR";

// A bundle architecture, spelled as K3s and nerdctl spell it (Debian's names).
pub use edgeimg_contract::arch::Arch;

/// What an asset is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The `k3s` binary (`k3s`, `k3s-arm64`).
    K3s,
    /// `k3s-airgap-images-<arch>.tar.zst`.
    AirgapImages,
    /// The K3s release's `sha256sum-<arch>.txt`.
    K3sChecksums,
    /// `nerdctl-<v>-linux-<arch>.tar.gz`.
    Nerdctl,
    /// `nerdctl-full-<v>-linux-<arch>.tar.gz` (BuildKit and friends).
    NerdctlFull,
    /// nerdctl's `SHA256SUMS`.
    NerdctlChecksums,
}

impl Role {
    /// The manifest key (and lock `role` value).
    pub fn key(self) -> &'static str {
        match self {
            Role::K3s => "k3s",
            Role::AirgapImages => "airgap_images",
            Role::K3sChecksums => "k3s_checksums",
            Role::Nerdctl => "nerdctl",
            Role::NerdctlFull => "nerdctl_full",
            Role::NerdctlChecksums => "nerdctl_checksums",
        }
    }

    /// The checksum file an asset is verified against (None for checksum files).
    pub fn checksums(self) -> Option<Role> {
        match self {
            Role::K3s | Role::AirgapImages => Some(Role::K3sChecksums),
            Role::Nerdctl | Role::NerdctlFull => Some(Role::NerdctlChecksums),
            Role::K3sChecksums | Role::NerdctlChecksums => None,
        }
    }

    pub fn is_checksums(self) -> bool {
        self.checksums().is_none()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

#[derive(Debug, Error)]
pub enum BundleError {
    #[error("{file}:{line}: key `{key}`: {message}")]
    ManifestInvalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error(
        "unknown bundle manifest `{name}` (shipped: {known}; a manifest file is named by a path ending in .toml)"
    )]
    UnknownManifest { name: String, known: String },
    #[error("unknown architecture `{0}` (amd64 or arm64)")]
    UnknownArch(String),
    #[error("manifest {manifest} has no assets for {arch} (it has: {known})")]
    ArchNotInManifest {
        manifest: String,
        arch: Arch,
        known: String,
    },
    /// Its `op` starts with "cannot".
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(
        "{url}: not found (HTTP 404); check the manifest's URL and the mirror (--mirror / EDGEIMG_BUNDLE_MIRROR)"
    )]
    NotFound { url: String },
    #[error("{url}: HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: download interrupted after {got} of {} bytes ({message}); the partial file {} is kept: run the same command again to resume", expected.map(|e| e.to_string()).unwrap_or_else(|| "?".into()), partial.display())]
    Interrupted {
        url: String,
        got: u64,
        expected: Option<u64>,
        partial: PathBuf,
        message: String,
    },
    #[error("{url}: the server sent {got} bytes but announced {expected} (truncated); the partial file {} is kept: run again to resume", partial.display())]
    Truncated {
        url: String,
        got: u64,
        expected: u64,
        partial: PathBuf,
    },
    #[error(
        "{}: SHA-256 {actual} does not match {expected} from {against}; refused, nothing was cached",
        located(asset, source_desc)
    )]
    ChecksumMismatch {
        asset: String,
        source_desc: String,
        expected: String,
        actual: String,
        against: String,
    },
    #[error("{asset} is not listed in the checksum file {checksums}")]
    NotInChecksums { asset: String, checksums: String },
    #[error("{file}:{line}: not a checksum line (`<sha256>  <file>`)")]
    ChecksumSyntax { file: String, line: usize },
    #[error(transparent)]
    LockMismatch(Box<LockMismatch>),
    #[error("{}:{line}: {message}", file.display())]
    LockInvalid {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "K3s bundle {bundle} ({arch}) is not cached{}: {missing}. Get it with `edgeimg bundle fetch {bundle} --arch {arch}{buildkit_flag}` on a connected machine, \
         or carry the files in and run `edgeimg bundle import DIR --manifest {bundle} --arch {arch}{buildkit_flag}`, \
         or build from a directory of the assets with `edgeimg build --bundle DIR`",
        lock.as_ref().map(|l| format!(" (lock {})", l.display())).unwrap_or_default(),
        buildkit_flag = if *buildkit { " --buildkit" } else { "" }
    )]
    NotCached {
        bundle: String,
        arch: Arch,
        buildkit: bool,
        lock: Option<PathBuf>,
        missing: String,
    },
    #[error("{asset}: the cached file {} hashes to {actual}, not {expected} as locked; the store is corrupt: delete that file and run `edgeimg bundle fetch` (or `bundle import`) again", path.display())]
    StoreCorrupt {
        asset: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{asset}: {} is missing from the bundle directory {}", file, dir.display())]
    MissingInDir {
        asset: String,
        file: String,
        dir: PathBuf,
    },
    #[error(
        "{asset}: the manifest {manifest} has no URL for it; carry it in with `edgeimg bundle import`"
    )]
    NoUrl { asset: String, manifest: String },
    #[error("no lock file {}: run `edgeimg bundle fetch` or `edgeimg bundle import` first, or pass --lock", lock.display())]
    NoLock { lock: PathBuf },
    #[error("{}: {what}; a bundle directory holds regular files only", path.display())]
    MemberNotRegular { path: PathBuf, what: String },
    #[error("{}: larger than {max} bytes, too large for a manifest or checksum file", path.display())]
    MemberTooLarge { path: PathBuf, max: u64 },
    #[error("{}: no bundle.toml in the directory; give --manifest NAME (see `edgeimg bundle list`)", dir.display())]
    DirHasNoManifest { dir: PathBuf },
    #[error("{}: no architecture of {manifest} is in the directory (no K3s checksum file for any); give --arch", dir.display())]
    NoArchInDir { dir: PathBuf, manifest: String },
    #[error("{message}")]
    WrongBinary { message: String },
    #[error("bundle verify: {count} problem(s):\n{details}")]
    VerifyFailed { count: usize, details: String },
}

/// A file whose SHA-256 differs from the lock's (boxed in [`BundleError::LockMismatch`]).
#[derive(Debug, Error)]
#[error(
    "{asset}: the lock {} records SHA-256 {locked} but {source_desc} says {upstream}; the upstream file changed or the lock is wrong. \
     If the change is expected, remove the [[bundle]] entry for {bundle} ({arch}) from the lock and fetch again",
    lock.display()
)]
pub struct LockMismatch {
    pub asset: String,
    pub lock: PathBuf,
    pub bundle: String,
    pub arch: Arch,
    pub locked: String,
    pub upstream: String,
    /// What disagrees with the lock (a checksum file's URL, a file in a bundle directory).
    pub source_desc: String,
}

/// One file of a resolved bundle, on local disk and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedAsset {
    pub role: Role,
    /// Upstream file name (e.g. `k3s-arm64`, `k3s-airgap-images-arm64.tar.zst`).
    pub file: String,
    /// Where the bytes are: the store (`<cache>/bundles/sha256/<hex>`) or the `--bundle` directory.
    pub path: PathBuf,
    /// Lowercase hex SHA-256 of the bytes at `path` (verified when resolved).
    pub sha256: String,
    pub size: u64,
    /// Version of the component (K3s version for K3s assets, nerdctl's for nerdctl's).
    pub version: String,
    /// Upstream URL from the manifest (for manifest.json), if any.
    pub url: Option<String>,
}

/// A bundle ready for the builder: every path exists and was hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedBundle {
    /// Manifest name, e.g. `k3s-v1.36.4+k3s1`.
    pub name: String,
    pub arch: Arch,
    pub k3s_version: String,
    pub nerdctl_version: String,
    pub k3s: ResolvedAsset,
    pub airgap_images: ResolvedAsset,
    pub nerdctl: ResolvedAsset,
    /// Present when BuildKit was asked for (and, from a directory, when the archive is there).
    pub nerdctl_full: Option<ResolvedAsset>,
    pub k3s_checksums: ResolvedAsset,
    pub nerdctl_checksums: ResolvedAsset,
    /// `None`: the content-addressed store; `Some(dir)`: a `--bundle DIR`.
    pub dir: Option<PathBuf>,
}

impl ResolvedBundle {
    /// Every asset, checksum files included, in role order.
    pub fn assets(&self) -> Vec<&ResolvedAsset> {
        let mut v = vec![
            &self.k3s,
            &self.airgap_images,
            &self.k3s_checksums,
            &self.nerdctl,
        ];
        v.extend(self.nerdctl_full.as_ref());
        v.push(&self.nerdctl_checksums);
        v
    }

    fn from_assets(
        m: &Manifest,
        arch: Arch,
        mut assets: Vec<ResolvedAsset>,
        dir: Option<PathBuf>,
    ) -> ResolvedBundle {
        let mut take = |role: Role| {
            assets
                .iter()
                .position(|a| a.role == role)
                .map(|i| assets.swap_remove(i))
        };
        let k3s = take(Role::K3s).expect("k3s resolved");
        let airgap_images = take(Role::AirgapImages).expect("airgap resolved");
        let nerdctl = take(Role::Nerdctl).expect("nerdctl resolved");
        let nerdctl_full = take(Role::NerdctlFull);
        let k3s_checksums = take(Role::K3sChecksums).expect("k3s checksums resolved");
        let nerdctl_checksums = take(Role::NerdctlChecksums).expect("nerdctl checksums resolved");
        ResolvedBundle {
            name: m.name.clone(),
            arch,
            k3s_version: m.k3s_version.clone(),
            nerdctl_version: m.nerdctl_version.clone(),
            k3s,
            airgap_images,
            nerdctl,
            nerdctl_full,
            k3s_checksums,
            nerdctl_checksums,
            dir,
        }
    }

    /// Checks every asset against `lock`'s entry for this bundle and arch, if
    /// the lock has one (use after [`from_dir`] so a `--bundle DIR` cannot
    /// silently differ from what was locked). A missing lock file is fine.
    pub fn check_lock(&self, lock: &Path) -> Result<(), BundleError> {
        let l = LockFile::load_or_empty(lock)?;
        let Some(entry) = l.entry(&self.name, self.arch) else {
            return Ok(());
        };
        for a in self.assets() {
            if let Some(locked) = entry.assets.get(&a.file)
                && locked.sha256 != a.sha256
            {
                return Err(BundleError::LockMismatch(Box::new(LockMismatch {
                    asset: a.file.clone(),
                    lock: lock.to_path_buf(),
                    bundle: self.name.clone(),
                    arch: self.arch,
                    locked: locked.sha256.clone(),
                    upstream: a.sha256.clone(),
                    source_desc: format!("{}", a.path.display()),
                })));
            }
        }
        Ok(())
    }
}

/// The cached bundle `manifest` for `arch` as recorded in `lock` (the lock
/// file next to the config, default `edgeimg.lock`): every locked file is
/// found in the store and re-hashed against the lock. `buildkit` also requires
/// `nerdctl_full`.
///
/// Errors: [`BundleError::NotCached`] (message names `edgeimg bundle fetch`,
/// `edgeimg bundle import` and `--bundle`) when the lock has no entry or a file
/// is not in the store; [`BundleError::StoreCorrupt`] when a stored file's hash
/// differs from the lock.
pub fn resolve(
    manifest: &Manifest,
    lock: &Path,
    arch: Arch,
    buildkit: bool,
) -> Result<ResolvedBundle, BundleError> {
    resolve_in(&Store::open_default(), manifest, lock, arch, buildkit)
}

/// [`resolve`] against a given store.
pub fn resolve_in(
    store: &Store,
    manifest: &Manifest,
    lock: &Path,
    arch: Arch,
    buildkit: bool,
) -> Result<ResolvedBundle, BundleError> {
    let required = manifest.required(arch, buildkit)?;
    let l = LockFile::load_or_empty(lock)?;
    let not_cached = |missing: String| BundleError::NotCached {
        bundle: manifest.name.clone(),
        arch,
        buildkit,
        lock: Some(lock.to_path_buf()),
        missing,
    };
    let Some(entry) = l.entry(&manifest.name, arch) else {
        return Err(not_cached(if lock.exists() {
            "the lock has no entry for it".into()
        } else {
            "no lock file".into()
        }));
    };
    let mut missing = Vec::new();
    let mut assets = Vec::new();
    for spec in &required {
        let Some(locked) = entry.assets.get(&spec.file) else {
            missing.push(format!("{} not locked", spec.file));
            continue;
        };
        match store.check(&locked.sha256, &spec.file)? {
            Some(path) => assets.push(ResolvedAsset {
                role: spec.role,
                file: spec.file.clone(),
                path,
                sha256: locked.sha256.clone(),
                size: locked.size,
                version: manifest.version_of(spec.role).to_string(),
                url: spec.url.clone(),
            }),
            None => missing.push(format!("{} not in the store", spec.file)),
        }
    }
    if !missing.is_empty() {
        return Err(not_cached(missing.join(", ")));
    }
    Ok(ResolvedBundle::from_assets(manifest, arch, assets, None))
}

/// A bundle directory (`edgeimg build --bundle DIR`): the assets under their
/// upstream file names, with the release checksum files beside them. Every
/// asset is hashed and checked against its checksum file (and any SHA-256
/// pinned in the manifest). `nerdctl_full` is required when `buildkit`, and
/// taken when present otherwise. Does not consult a lock: see
/// [`ResolvedBundle::check_lock`]. Use [`Manifest::in_dir`] first when the
/// directory may carry its own `bundle.toml`.
pub fn from_dir(
    dir: &Path,
    manifest: &Manifest,
    arch: Arch,
    buildkit: bool,
) -> Result<ResolvedBundle, BundleError> {
    let assets = import::verify_dir(dir, manifest, arch, buildkit)?;
    Ok(ResolvedBundle::from_assets(
        manifest,
        arch,
        assets,
        Some(dir.to_path_buf()),
    ))
}

/// An asset and where it was read: the path or URL alone when it ends with
/// the asset's name (so the name is not printed twice), else `asset (where)`.
fn located(asset: &str, source_desc: &str) -> String {
    if source_desc == asset || source_desc.ends_with(&format!("/{asset}")) {
        source_desc.to_string()
    } else {
        format!("{asset} ({source_desc})")
    }
}

pub(crate) fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Reads and parses a TOML file of the lock or the store; `Ok(None)` when it
/// does not exist. A parse error names the file and line.
pub(crate) fn read_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    op: &'static str,
) -> Result<Option<T>, BundleError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IoError::new(op, path, source).into()),
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| BundleError::LockInvalid {
            file: path.to_path_buf(),
            line: e
                .span()
                .map(|s| manifest::line_of(&text, s.start))
                .unwrap_or(1),
            message: edgeimg_contract::tomlerr::message(&text, &e),
        })
}

/// SHA-256 and length of a file.
pub fn hash_file(path: &Path) -> Result<(String, u64), BundleError> {
    let io = |source| IoError::new("cannot read", path, source);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf).map_err(io)?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

pub(crate) fn hash_bytes(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A URL with any `user:password@` replaced by `***@`, for messages.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let auth_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_parses_board_spellings() {
        assert_eq!("x86_64".parse::<Arch>().unwrap(), Arch::Amd64);
        assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Arm64);
        assert!(
            "riscv64"
                .parse::<Arch>()
                .unwrap_err()
                .to_string()
                .contains("riscv64")
        );
    }

    #[test]
    fn a_checksum_mismatch_names_the_file_once() {
        let e = BundleError::ChecksumMismatch {
            asset: "k3s".into(),
            source_desc: "/carried/k3s".into(),
            expected: "a".into(),
            actual: "b".into(),
            against: "x".into(),
        }
        .to_string();
        assert!(e.starts_with("/carried/k3s: SHA-256 b"), "{e}");
        let e = BundleError::ChecksumMismatch {
            asset: "k3s".into(),
            source_desc: "the upstream checksum file https://h/sums".into(),
            expected: "a".into(),
            actual: "b".into(),
            against: "x".into(),
        }
        .to_string();
        assert!(e.starts_with("k3s (the upstream checksum file"), "{e}");
    }

    #[test]
    fn redact_hides_credentials() {
        assert_eq!(
            redact("https://u:tok@mirror.example/x@y"),
            "https://***@mirror.example/x@y"
        );
        assert_eq!(redact("https://github.com/a"), "https://github.com/a");
    }

    #[test]
    fn not_cached_names_all_three_ways() {
        let m = Manifest::find("k3s-v1.36.4+k3s1").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("bundles"));
        let e = resolve_in(
            &store,
            &m,
            &dir.path().join("edgeimg.lock"),
            Arch::Arm64,
            true,
        )
        .unwrap_err()
        .to_string();
        for s in [
            "edgeimg bundle fetch k3s-v1.36.4+k3s1 --arch arm64 --buildkit",
            "edgeimg bundle import",
            "--bundle",
        ] {
            assert!(e.contains(s), "{e}");
        }
    }
}
