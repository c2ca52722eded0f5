//! Preloaded container images (docs/k3s.md): inspect and validate the image
//! tarballs that go into K3s' images directory, before anything is written.
//!
//! [`inspect_archive`] streams one tarball (never extracts it, never holds it in
//! memory): it reads the small JSON members (OCI `index.json`, docker-archive
//! `manifest.json`, image indexes, manifests, configs), checks that every blob a
//! manifest references is present (and, for OCI blobs, has the descriptor's size
//! and its SHA-256 matches its name), and reports the images with their names and
//! platforms. [`validate_for_board`] then decides whether the archive is usable on
//! a board: every image fully qualified, every image runnable on the board's arch.
//!
//! Formats: OCI image layout tarballs (`nerdctl save`, `ctr export`,
//! `skopeo copy ... oci-archive:`; nested image indexes for multi-platform
//! images), docker-archive tarballs (`docker save`), and both at once (nerdctl
//! writes both). Compression follows K3s' own list of what it imports from
//! `/var/lib/rancher/k3s/agent/images/` ([`K3S_IMAGE_EXTENSIONS`]): `.tar`,
//! `.tar.gz`/`.tgz`, `.tar.zst`/`.tzst` are read; `.tar.bz2`/`.tbz` and `.tar.lz4`
//! are recognised but refused (edgeimg cannot verify them; recompress to zstd).
//!
//! [`elf`] checks the `k3s` binary's ELF header against the board's arch.

mod docker_archive;
pub mod elf;
mod names;
mod oci;
mod scan;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::io_error::IoError;

pub use elf::{ElfInfo, check_elf_arch, is_script};
pub use names::{is_fully_qualified, normalize_reference};

/// File name endings K3s imports as image tarballs from its images directory
/// (K3s' `preloadFile` / wharfie's `tarfile.SupportedExtensions`).
pub const K3S_IMAGE_EXTENSIONS: &[&str] = &[
    ".tar", ".tar.lz4", ".tar.bz2", ".tbz", ".tar.gz", ".tgz", ".tar.zst", ".tzst",
];

/// K3s decodes zstd with at most 32 MiB of window (`MaxDecoderMemory = 1<<25`);
/// a tarball compressed with a larger window (`zstd --long=27`) fails to import
/// on the node, so it fails here too.
pub const K3S_ZSTD_WINDOW_LOG_MAX: u32 = 25;

/// Members we read into memory must be at most this big (manifests, configs
/// and indexes are a few KiB).
pub const MAX_JSON_MEMBER: u64 = 4 * 1024 * 1024;

/// All members kept in memory together must be at most this big: a real
/// archive keeps an index, a manifest and a config per image, so a handful
/// of KiB; many JSON-looking members would otherwise grow the scan without
/// bound (a few KiB of zstd can expand to thousands of 4 MiB members).
pub const MAX_JSON_KEPT: u64 = 16 * 1024 * 1024;

/// At most this many members are recorded (each costs its name in memory);
/// a layer is a few members, so this is thousands of layers.
pub const MAX_MEMBERS: usize = 20_000;

/// How an archive file is compressed, decided by its name as K3s decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Bzip2,
    Lz4,
}

impl Compression {
    fn magic_ok(self, head: &[u8]) -> bool {
        match self {
            Compression::Gzip => head.starts_with(&[0x1f, 0x8b]),
            Compression::Zstd => head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Bzip2 => head.starts_with(b"BZh"),
            Compression::Lz4 => head.starts_with(&[0x04, 0x22, 0x4d, 0x18]),
            Compression::None => {
                // A tar starts with a header: reject data that is plainly
                // one of the compressed formats instead.
                ![
                    Compression::Gzip,
                    Compression::Zstd,
                    Compression::Bzip2,
                    Compression::Lz4,
                ]
                .iter()
                .any(|c| c.magic_ok(head))
            }
        }
    }

    fn sniff(head: &[u8]) -> &'static str {
        for (c, n) in [
            (Compression::Gzip, "gzip"),
            (Compression::Zstd, "zstd"),
            (Compression::Bzip2, "bzip2"),
            (Compression::Lz4, "lz4"),
        ] {
            if c.magic_ok(head) {
                return n;
            }
        }
        "uncompressed (or unknown) data"
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "uncompressed tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Lz4 => "lz4",
        })
    }
}

/// The compression K3s would assume for `path`, from its name (case-insensitive,
/// like K3s' `HasSuffixI`), or an error naming the extensions K3s imports.
pub fn k3s_compression(path: &Path) -> Result<Compression, ImageError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let c = if name.ends_with(".tar") {
        Compression::None
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Compression::Gzip
    } else if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
        Compression::Zstd
    } else if name.ends_with(".tar.bz2") || name.ends_with(".tbz") {
        Compression::Bzip2
    } else if name.ends_with(".tar.lz4") {
        Compression::Lz4
    } else {
        return Err(ImageError::UnsupportedName {
            path: path.to_path_buf(),
        });
    };
    Ok(c)
}

/// Which container image tarball format(s) an archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ArchiveFormat {
    /// OCI image layout (`oci-layout`, `index.json`, `blobs/`).
    Oci,
    /// docker-archive (`manifest.json` with `Config`, `RepoTags`, `Layers`).
    DockerArchive,
    /// Both in one tar (what `nerdctl save` writes).
    Both,
}

impl fmt::Display for ArchiveFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArchiveFormat::Oci => "OCI image layout",
            ArchiveFormat::DockerArchive => "docker-archive",
            ArchiveFormat::Both => "OCI image layout + docker-archive",
        })
    }
}

/// An OCI platform (`os/architecture[/variant]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
        }
    }

    /// Whether an image for this platform runs on a board of Debian arch
    /// `debian_arch` (`amd64`: linux/amd64, variant none or v1; `arm64`:
    /// linux/arm64, variant none or v8).
    pub fn runs_on(&self, debian_arch: &str) -> bool {
        if self.os != "linux" {
            return false;
        }
        let v = self.variant.as_deref();
        match debian_arch {
            "amd64" => self.architecture == "amd64" && matches!(v, None | Some("v1")),
            "arm64" => self.architecture == "arm64" && matches!(v, None | Some("v8")),
            _ => false,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// One image (one name) found in an archive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageRef {
    /// The name the node's containerd will give the image on import. OCI: the
    /// `io.containerd.image.name` annotation, else `org.opencontainers.image.ref.name`,
    /// taken literally (containerd does not normalise them); docker-archive:
    /// `RepoTags`, normalised as containerd normalises them (`busybox:1.36` ->
    /// `docker.io/library/busybox:1.36`). Empty when the archive names none.
    pub name: String,
    /// Platforms whose manifest, config and layers are all in the archive.
    pub platforms: Vec<Platform>,
    /// Platforms an image index lists but whose content the archive does not
    /// hold (`nerdctl save` without `--all-platforms` keeps the full index).
    pub absent_platforms: Vec<Platform>,
    /// Digest of the manifest or index the name points at (OCI); `None` for
    /// docker-archive-only images, which have no manifest digest.
    pub digest: Option<String>,
}

/// What [`inspect_archive`] found in one tarball.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageArchive {
    pub path: PathBuf,
    pub format: ArchiveFormat,
    pub compression: Compression,
    pub images: Vec<ImageRef>,
    /// SHA-256 of the file's bytes as scanned (set by [`inspect_archive`]):
    /// the build copies the archive only if it still hashes to this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Everything that can be wrong with a preloaded image or the `k3s` binary.
/// Messages name the file, the image and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Its `op` is "cannot read".
    #[error(transparent)]
    Io(#[from] IoError),

    #[error(
        "{}: K3s imports image tarballs named *{} only; rename the file or re-save it in one of these formats",
        path.display(),
        K3S_IMAGE_EXTENSIONS.join(", *")
    )]
    UnsupportedName { path: PathBuf },

    #[error(
        "{}: {compression} tarballs are imported by K3s but edgeimg cannot verify them; \
         recompress as .tar.zst (e.g. `{hint}`)",
        path.display()
    )]
    UnsupportedCompression {
        path: PathBuf,
        compression: Compression,
        hint: String,
    },

    #[error(
        "{}: the name says {named} but the content is {actual}; K3s picks the decompressor \
         from the name, so it could not import this file",
        path.display()
    )]
    CompressionMismatch {
        path: PathBuf,
        named: Compression,
        actual: &'static str,
    },

    #[error("{}: corrupt or truncated image archive: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    #[error(
        "{}: not a container image archive: it has neither index.json (OCI image layout) \
         nor manifest.json (docker-archive){found}",
        path.display()
    )]
    NotAnImageArchive { path: PathBuf, found: String },

    #[error("{}: {member}: invalid JSON: {reason}", path.display())]
    BadJson {
        path: PathBuf,
        member: String,
        reason: String,
    },

    #[error("{}: {image}: {referenced_by} references {blob}, which is not in the archive", path.display())]
    MissingBlob {
        path: PathBuf,
        image: String,
        referenced_by: String,
        blob: String,
    },

    #[error(
        "{}: {image}: blob {blob} is {actual} bytes but its descriptor says {expected}",
        path.display()
    )]
    SizeMismatch {
        path: PathBuf,
        image: String,
        blob: String,
        expected: u64,
        actual: u64,
    },

    #[error("{}: blob {member} does not match its digest (its SHA-256 is {actual})", path.display())]
    DigestMismatch {
        path: PathBuf,
        member: String,
        actual: String,
    },

    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },

    #[error(
        "{}: image {digest} has no name: K3s would import it untagged and no pod could refer to it; \
         save it by name (e.g. `nerdctl save -o FILE docker.io/library/busybox:1.36`)",
        path.display()
    )]
    Unnamed { path: PathBuf, digest: String },

    #[error(
        "{}: image name \"{name}\" is not fully qualified (registry, repository and tag or digest); \
         K3s' containerd imports OCI names literally, so pods could not find it. \
         Use \"{suggestion}\"{hint}",
        path.display()
    )]
    Unqualified {
        path: PathBuf,
        name: String,
        suggestion: String,
        hint: String,
    },

    #[error(
        "{}: image {image} is for {platforms}, but the board needs linux/{board_arch}{absent}",
        path.display()
    )]
    WrongPlatform {
        path: PathBuf,
        image: String,
        platforms: String,
        board_arch: String,
        absent: String,
    },

    #[error("unknown board architecture \"{0}\" (expected amd64 or arm64)")]
    UnknownArch(String),

    #[error("{}: not an ELF executable ({reason})", path.display())]
    NotElf { path: PathBuf, reason: String },

    #[error("{}: ELF executable is for {found}, but the board needs {needed}", path.display())]
    ElfWrongArch {
        path: PathBuf,
        found: String,
        needed: String,
    },
}

/// How thoroughly [`inspect_archive_with`] checks blobs.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    /// Hash every `blobs/sha256/<hex>` member (layers included) and compare
    /// with its name. Costs one SHA-256 pass over the archive; catches bit rot
    /// that sizes alone do not.
    pub verify_blob_digests: bool,
}

impl Default for InspectOptions {
    fn default() -> Self {
        InspectOptions {
            verify_blob_digests: true,
        }
    }
}

/// Inspect a container image tarball without extracting it (full checks: see
/// [`InspectOptions::default`]).
pub fn inspect_archive(path: &Path) -> Result<ImageArchive, ImageError> {
    inspect_archive_with(path, &InspectOptions::default())
}

/// [`inspect_archive`] with explicit options.
pub fn inspect_archive_with(
    path: &Path,
    opts: &InspectOptions,
) -> Result<ImageArchive, ImageError> {
    let compression = k3s_compression(path)?;
    let io_err = |source| IoError::new("cannot read", path, source);
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let mut head = [0u8; 8];
    let n = crate::read_full::read_full(&mut file, &mut head).map_err(io_err)?;
    let head = &head[..n];
    if n == 0 {
        return Err(ImageError::Corrupt {
            path: path.to_path_buf(),
            reason: "the file is empty".into(),
        });
    }
    if !compression.magic_ok(head) {
        return Err(ImageError::CompressionMismatch {
            path: path.to_path_buf(),
            named: compression,
            actual: Compression::sniff(head),
        });
    }
    drop(file);
    // Hashed while scanned (the very bytes checked), then to the end.
    let mut file = std::io::BufReader::with_capacity(
        256 * 1024,
        HashingRead {
            inner: std::fs::File::open(path).map_err(io_err)?,
            hash: <sha2::Sha256 as sha2::Digest>::new(),
        },
    );
    let mut archive = inspect_stream(path, compression, &mut file, opts)?;
    std::io::copy(&mut file, &mut std::io::sink()).map_err(io_err)?;
    let hashing = file.into_inner();
    archive.sha256 = Some(hex::encode(sha2::Digest::finalize(hashing.hash)));
    Ok(archive)
}

/// Hashes what is read through it.
struct HashingRead<R> {
    inner: R,
    hash: sha2::Sha256,
}

impl<R: std::io::Read> std::io::Read for HashingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hash, &buf[..n]);
        Ok(n)
    }
}

/// The scan of [`inspect_archive_with`] over an already opened, buffered
/// archive whose `compression` was decided from `path` (named in errors).
/// Public so the fuzz targets run this same code on bytes.
pub fn inspect_stream<R: std::io::BufRead>(
    path: &Path,
    compression: Compression,
    file: R,
    opts: &InspectOptions,
) -> Result<ImageArchive, ImageError> {
    let io_err = |source| IoError::new("cannot read", path, source);
    let scan = match compression {
        Compression::None => scan::scan(path, file, opts, false)?,
        Compression::Gzip => scan::scan(path, flate2::read::MultiGzDecoder::new(file), opts, true)?,
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(file).map_err(io_err)?;
            d.window_log_max(K3S_ZSTD_WINDOW_LOG_MAX).map_err(io_err)?;
            scan::scan(path, d, opts, true).map_err(|e| match e {
                ImageError::Corrupt { path, reason } if reason.contains("too much memory") => ImageError::Corrupt {
                    path,
                    reason: format!(
                        "{reason}: it was compressed with a zstd window larger than the 32 MiB K3s decodes \
                         (zstd --long=27 or more?); recompress with `zstd -T0 -19 --long=25` or without --long"
                    ),
                },
                e => e,
            })?
        }
        Compression::Bzip2 | Compression::Lz4 => {
            let p = path.display();
            let hint = if compression == Compression::Bzip2 {
                format!("bzcat {p} | zstd -o ARCHIVE.tar.zst")
            } else {
                format!("lz4cat {p} | zstd -o ARCHIVE.tar.zst")
            };
            return Err(ImageError::UnsupportedCompression {
                path: path.to_path_buf(),
                compression,
                hint,
            });
        }
    };
    build(path, compression, &scan)
}

fn build(
    path: &Path,
    compression: Compression,
    scan: &scan::Scan,
) -> Result<ImageArchive, ImageError> {
    let has_index = scan.exists("index.json");
    let has_manifest = scan.exists("manifest.json");
    let format = match (has_index, has_manifest) {
        (true, true) => ArchiveFormat::Both,
        (true, false) => ArchiveFormat::Oci,
        (false, true) => ArchiveFormat::DockerArchive,
        (false, false) => {
            let mut names: Vec<&str> = scan.names().take(6).collect();
            names.sort();
            let found = if names.is_empty() {
                " (it holds no files)".to_string()
            } else {
                format!(" (it holds e.g. {})", names.join(", "))
            };
            return Err(ImageError::NotAnImageArchive {
                path: path.to_path_buf(),
                found,
            });
        }
    };
    let mut images = Vec::new();
    if has_index {
        images.extend(oci::images(path, scan)?);
    }
    if has_manifest {
        for img in docker_archive::images(path, scan)? {
            // nerdctl writes both views of the same images: merge by name.
            if let Some(existing) = images
                .iter_mut()
                .find(|i: &&mut ImageRef| !img.name.is_empty() && i.name == img.name)
            {
                let set: BTreeSet<Platform> = existing
                    .platforms
                    .iter()
                    .chain(&img.platforms)
                    .cloned()
                    .collect();
                existing.platforms = set.into_iter().collect();
                existing
                    .absent_platforms
                    .retain(|p| !existing.platforms.contains(p));
            } else {
                images.push(img);
            }
        }
    }
    if images.is_empty() {
        return Err(ImageError::Invalid {
            path: path.to_path_buf(),
            reason: format!("the {format} lists no images"),
        });
    }
    Ok(ImageArchive {
        path: path.to_path_buf(),
        format,
        compression,
        images,
        sha256: None,
    })
}

/// Check an inspected archive against a board of Debian arch `arch` (`amd64` or
/// `arm64`): every image is named, fully qualified, and has content for the
/// board's platform.
pub fn validate_for_board(archive: &ImageArchive, arch: &str) -> Result<(), ImageError> {
    if !matches!(arch, "amd64" | "arm64") {
        return Err(ImageError::UnknownArch(arch.to_string()));
    }
    let path = || archive.path.clone();
    for img in &archive.images {
        if img.name.is_empty() {
            return Err(ImageError::Unnamed {
                path: path(),
                digest: img
                    .digest
                    .clone()
                    .unwrap_or_else(|| "(docker-archive entry without RepoTags)".into()),
            });
        }
        if !is_fully_qualified(&img.name) {
            let suggestion = normalize_reference(&img.name);
            let hint = if img.name.contains(['/', ':', '@']) {
                format!(
                    " (re-tag and re-save it, e.g. `nerdctl tag {} {suggestion}`)",
                    img.name
                )
            } else {
                format!(
                    "; or, if \"{}\" is only a tag (an OCI ref.name), save the image under its full name, \
                     e.g. `nerdctl save -o FILE docker.io/library/busybox:1.36`",
                    img.name
                )
            };
            return Err(ImageError::Unqualified {
                path: path(),
                name: img.name.clone(),
                suggestion,
                hint,
            });
        }
        if !img.platforms.iter().any(|p| p.runs_on(arch)) {
            let list = |ps: &[Platform]| {
                ps.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let platforms = if img.platforms.is_empty() {
                "no platform at all".to_string()
            } else {
                list(&img.platforms)
            };
            let absent = if img.absent_platforms.iter().any(|p| p.runs_on(arch)) {
                format!(
                    "; its index lists {} but the archive does not hold that content: re-save it with \
                     `nerdctl save --platform linux/{arch}` (or `--all-platforms`)",
                    list(&img.absent_platforms)
                )
            } else {
                String::new()
            };
            return Err(ImageError::WrongPlatform {
                path: path(),
                image: img.name.clone(),
                platforms,
                board_arch: arch.to_string(),
                absent,
            });
        }
    }
    Ok(())
}

/// `inspect_archive` then `validate_for_board`.
pub fn check_archive_for_board(path: &Path, arch: &str) -> Result<ImageArchive, ImageError> {
    let a = inspect_archive(path)?;
    validate_for_board(&a, arch)?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3s_extensions() {
        let c = |n: &str| k3s_compression(Path::new(n));
        assert_eq!(c("a.tar").unwrap(), Compression::None);
        assert_eq!(c("a.TAR.ZST").unwrap(), Compression::Zstd);
        assert_eq!(c("a.tzst").unwrap(), Compression::Zstd);
        assert_eq!(c("a.tgz").unwrap(), Compression::Gzip);
        assert_eq!(c("a.tar.gz").unwrap(), Compression::Gzip);
        assert_eq!(c("a.tbz").unwrap(), Compression::Bzip2);
        assert_eq!(c("a.tar.lz4").unwrap(), Compression::Lz4);
        let e = c("a.zip").unwrap_err().to_string();
        assert!(e.contains("a.zip") && e.contains("*.tar.zst"), "{e}");
        assert!(c("a.tar.xz").is_err());
    }

    #[test]
    fn magic() {
        assert!(Compression::Zstd.magic_ok(&[0x28, 0xb5, 0x2f, 0xfd, 0]));
        assert!(!Compression::None.magic_ok(&[0x1f, 0x8b, 8]));
        assert!(Compression::None.magic_ok(b"index.json\0"));
    }

    #[test]
    fn platform_matching() {
        assert!(Platform::new("linux", "arm64", Some("v8")).runs_on("arm64"));
        assert!(Platform::new("linux", "arm64", None).runs_on("arm64"));
        assert!(!Platform::new("linux", "arm", Some("v7")).runs_on("arm64"));
        assert!(Platform::new("linux", "amd64", None).runs_on("amd64"));
        assert!(!Platform::new("linux", "amd64", None).runs_on("arm64"));
        assert!(!Platform::new("windows", "amd64", None).runs_on("amd64"));
        assert_eq!(
            Platform::new("linux", "arm64", Some("v8")).to_string(),
            "linux/arm64/v8"
        );
    }

    #[test]
    fn unknown_arch() {
        let a = ImageArchive {
            path: "x.tar".into(),
            format: ArchiveFormat::Oci,
            compression: Compression::None,
            images: vec![],
            sha256: None,
        };
        assert!(matches!(
            validate_for_board(&a, "armhf"),
            Err(ImageError::UnknownArch(_))
        ));
    }
}
