//! Bundles carried to an air-gapped host as a directory: `edgeimg bundle
//! export` writes a cached bundle under its upstream file names with a
//! `bundle.toml` that pins every file's SHA-256; `edgeimg bundle verify DIR`
//! checks such a directory (or any directory of upstream assets) with no
//! network; `bundle import DIR` reads what the directory says about itself.
//!
//! A directory to verify or import may be crafted: every member must be a
//! regular file inside it (no symlinks, no subdirectories in their place), and
//! the text files (manifest, checksum files) are read with a size bound.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::manifest::DIR_MANIFEST;
use super::{Arch, BundleError, LockFile, Manifest, ResolvedAsset, Role, Store};
use crate::io_error::{IoError, io_err};

/// The largest manifest or checksum file a bundle directory may hold.
pub const MAX_TEXT_FILE: u64 = 1 << 20;

/// What `bundle export` wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub dir: PathBuf,
    /// The files written (manifest last), with their SHA-256 and size.
    pub files: Vec<(String, String, u64)>,
}

/// One architecture of a verified bundle directory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifiedArch {
    pub arch: Arch,
    /// `binary` (an ELF for the arch) or `stand-in` (edgeimg's labelled test script).
    pub k3s_kind: &'static str,
    pub assets: Vec<ResolvedAsset>,
}

/// What `bundle verify DIR` found (every check passed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DirReport {
    pub dir: PathBuf,
    pub manifest: String,
    /// Where the manifest came from (the directory's `bundle.toml`, or a shipped one).
    pub manifest_source: String,
    pub arches: Vec<VerifiedArch>,
}

/// `edgeimg bundle export`: the cached bundle `manifest`/`arch` as recorded in
/// `lock`, re-hashed, copied into the new directory `out` under the upstream
/// names, with a `bundle.toml` pinning each file's SHA-256. Built under a
/// temporary name beside `out` and renamed at the end, so `out` never exists
/// half-written; an existing `out` is refused.
pub fn export(
    store: &Store,
    manifest: &Manifest,
    lock: &Path,
    arch: Arch,
    out: &Path,
) -> Result<ExportReport, BundleError> {
    if out.symlink_metadata().is_ok() {
        return Err(IoError::new(
            "cannot export into",
            out,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "it already exists (give a new directory)",
            ),
        )
        .into());
    }
    // nerdctl-full goes along when the lock has it.
    let buildkit = LockFile::load_or_empty(lock)?
        .entry(&manifest.name, arch)
        .zip(manifest.asset(arch, Role::NerdctlFull)?)
        .is_some_and(|(e, full)| e.assets.contains_key(&full.file));
    let bundle = super::resolve_in(store, manifest, lock, arch, buildkit)?;

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    if !parent.is_dir() {
        return Err(IoError::new(
            "cannot export into",
            out,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "its parent directory does not exist",
            ),
        )
        .into());
    }
    let tmp = parent.join(format!(".{base}.export-{}", std::process::id()));
    let result = write_export(&tmp, manifest, arch, &bundle.assets());
    let files = match result {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&tmp, out) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(IoError::new("cannot create", out, e).into());
    }
    Ok(ExportReport {
        dir: out.to_path_buf(),
        files,
    })
}

fn write_export(
    tmp: &Path,
    manifest: &Manifest,
    arch: Arch,
    assets: &[&ResolvedAsset],
) -> Result<Vec<(String, String, u64)>, BundleError> {
    std::fs::create_dir(tmp).map_err(io_err("cannot create", tmp))?;
    let mut files = Vec::new();
    for a in assets {
        let dest = tmp.join(&a.file);
        std::fs::copy(&a.path, &dest).map_err(io_err("cannot copy", &a.path))?;
        // The copy is what travels: hash it, not the source.
        let (sha, size) = super::hash_file(&dest)?;
        if sha != a.sha256 {
            return Err(BundleError::StoreCorrupt {
                asset: a.file.clone(),
                path: a.path.clone(),
                expected: a.sha256.clone(),
                actual: sha,
            });
        }
        files.push((a.file.clone(), sha, size));
    }
    let text = render_manifest(manifest, arch, assets);
    let mp = tmp.join(DIR_MANIFEST);
    std::fs::write(&mp, &text).map_err(io_err("cannot write", &mp))?;
    files.push((
        DIR_MANIFEST.to_string(),
        super::hash_bytes(text.as_bytes()),
        text.len() as u64,
    ));
    Ok(files)
}

/// A manifest for one architecture whose every asset pins its SHA-256 (the
/// format of docs/bundles.md; parsed back by [`Manifest::parse`]).
pub fn render_manifest(manifest: &Manifest, arch: Arch, assets: &[&ResolvedAsset]) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut t = String::new();
    t.push_str("# A K3s bundle exported by `edgeimg bundle export`: the files beside this\n");
    t.push_str("# manifest under their upstream names, each pinned by SHA-256.\n");
    t.push_str(
        "# Check with `edgeimg bundle verify DIR`; import with `edgeimg bundle import DIR`.\n\n",
    );
    t.push_str("schema = 1\n");
    t.push_str(&format!("name = {}\n", q(&manifest.name)));
    t.push_str(&format!("description = {}\n", q(&manifest.description)));
    t.push_str(&format!("upstream = {}\n\n", q(&manifest.upstream)));
    t.push_str(&format!(
        "[k3s]\nversion = {}\n\n",
        q(&manifest.k3s_version)
    ));
    t.push_str(&format!(
        "[nerdctl]\nversion = {}\n\n",
        q(&manifest.nerdctl_version)
    ));
    t.push_str(&format!("[arch.{arch}]\n"));
    for a in assets {
        let url = a
            .url
            .as_deref()
            .map(|u| format!("url = {}, ", q(u)))
            .unwrap_or_default();
        t.push_str(&format!(
            "{} = {{ {url}file = {}, sha256 = {} }}\n",
            a.role.key(),
            q(&a.file),
            q(&a.sha256)
        ));
    }
    t
}

/// Refuses a directory member that is not a regular file inside `dir` (a
/// symlink, a directory, a device); `Ok(false)` when it does not exist.
fn regular_member(dir: &Path, file: &str) -> Result<bool, BundleError> {
    if file.contains('/') || file == ".." || file == "." {
        return Err(BundleError::MemberNotRegular {
            path: dir.join(file),
            what: "a file name with a path in it".into(),
        });
    }
    let p = dir.join(file);
    match p.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(IoError::new("cannot read", p, e).into()),
        Ok(m) if m.file_type().is_file() => Ok(true),
        Ok(m) => Err(BundleError::MemberNotRegular {
            path: p,
            what: if m.file_type().is_symlink() {
                "a symbolic link".into()
            } else if m.is_dir() {
                "a directory".into()
            } else {
                "not a regular file".into()
            },
        }),
    }
}

/// Reads a text member of at most [`MAX_TEXT_FILE`] bytes.
fn read_text_member(p: &Path) -> Result<String, BundleError> {
    let f = std::fs::File::open(p).map_err(io_err("cannot read", p))?;
    let mut buf = Vec::new();
    f.take(MAX_TEXT_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(io_err("cannot read", p))?;
    if buf.len() as u64 > MAX_TEXT_FILE {
        return Err(BundleError::MemberTooLarge {
            path: p.to_path_buf(),
            max: MAX_TEXT_FILE,
        });
    }
    String::from_utf8(buf).map_err(|_| {
        IoError::new(
            "cannot read",
            p,
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
        )
        .into()
    })
}

/// The manifest a bundle directory describes itself with (`DIR/bundle.toml`),
/// read without following a symlink and with a size bound.
pub fn dir_manifest(dir: &Path) -> Result<Option<Manifest>, BundleError> {
    if !dir.is_dir() {
        return Err(IoError::new(
            "cannot read the bundle directory",
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        )
        .into());
    }
    if !regular_member(dir, DIR_MANIFEST)? {
        return Ok(None);
    }
    let p = dir.join(DIR_MANIFEST);
    let text = read_text_member(&p)?;
    Manifest::parse(&p.display().to_string(), &text).map(Some)
}

/// The manifest for a directory: `--manifest` when given, else its own
/// `bundle.toml`; an error says which flag to give when it has none.
pub fn manifest_for_dir(dir: &Path, given: Option<&str>) -> Result<Manifest, BundleError> {
    if let Some(name) = given {
        return Manifest::find(name);
    }
    dir_manifest(dir)?.ok_or_else(|| BundleError::DirHasNoManifest {
        dir: dir.to_path_buf(),
    })
}

/// The architectures a directory carries: `given`, else every arch of the
/// manifest whose K3s checksum file is in the directory.
pub fn arches_in_dir(
    dir: &Path,
    manifest: &Manifest,
    given: Option<Arch>,
) -> Result<Vec<Arch>, BundleError> {
    if let Some(a) = given {
        manifest.assets(a)?;
        return Ok(vec![a]);
    }
    let mut found = Vec::new();
    for (arch, assets) in &manifest.arches {
        if let Some(sums) = assets.iter().find(|a| a.role == Role::K3sChecksums)
            && regular_member(dir, &sums.file)?
        {
            found.push(*arch);
        }
    }
    if found.is_empty() {
        return Err(BundleError::NoArchInDir {
            dir: dir.to_path_buf(),
            manifest: manifest.name.clone(),
        });
    }
    Ok(found)
}

/// Checks that every file the manifest names for `arch` and that is present
/// in `dir` is a regular file (no symlink out of the directory) and that the
/// checksum files are of a sane size, before anything is hashed.
pub fn check_members(dir: &Path, manifest: &Manifest, arch: Arch) -> Result<(), BundleError> {
    for spec in manifest.assets(arch)? {
        if regular_member(dir, &spec.file)? && spec.role.is_checksums() {
            read_text_member(&dir.join(&spec.file))?;
        }
    }
    Ok(())
}

/// `edgeimg bundle verify DIR`: without network and without importing,
/// checks every architecture the directory carries: each file present and a
/// regular file, hashing to its checksum file's line and to any SHA-256 the
/// manifest pins, and the `k3s` binary built for the architecture (or
/// edgeimg's labelled stand-in script). With `lock`, a file that differs
/// from the lock's entry for the bundle (when it has one) is refused too.
pub fn verify_dir(
    dir: &Path,
    manifest: &Manifest,
    arches: &[Arch],
    lock: Option<&Path>,
) -> Result<DirReport, BundleError> {
    let mut out = Vec::new();
    for &arch in arches {
        check_members(dir, manifest, arch)?;
        let assets = super::import::verify_dir(dir, manifest, arch, false)?;
        let k3s = assets
            .iter()
            .find(|a| a.role == Role::K3s)
            .expect("k3s verified");
        let k3s_kind = k3s_kind(&k3s.path, arch)?;
        if let Some(lock) = lock {
            super::ResolvedBundle::from_assets(manifest, arch, assets.clone(), Some(dir.into()))
                .check_lock(lock)?;
        }
        out.push(VerifiedArch {
            arch,
            k3s_kind,
            assets,
        });
    }
    Ok(DirReport {
        dir: dir.to_path_buf(),
        manifest: manifest.name.clone(),
        manifest_source: manifest.source.clone(),
        arches: out,
    })
}

fn k3s_kind(path: &Path, arch: Arch) -> Result<&'static str, BundleError> {
    if crate::images::elf::is_script(path) {
        let mut head = vec![0u8; 512];
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(io_err("cannot read", path))?;
        if String::from_utf8_lossy(&head[..n]).contains(crate::k3s_inputs::STAND_IN_LABEL) {
            return Ok("stand-in");
        }
    }
    crate::images::elf::check_elf_arch(path, arch.debian())
        .map(|_| "binary")
        .map_err(|e| BundleError::WrongBinary {
            message: e.to_string(),
        })
}
