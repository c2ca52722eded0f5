//! Using a K3s bundle's files in the build without trusting them twice.
//!
//! Bundle files are verified when the build starts (preflight), but used
//! minutes later: a file swapped in between (a `--bundle` directory someone
//! else can write) would go into the image unchecked. So each file is opened
//! once, hashed while it is read, and what was read is used only when the
//! hash still matches the one verified — the same bytes, from the same open
//! file, never a second read by path.
//!
//! Release archives are unpacked here rather than by `tar`: a member that is
//! a symlink or hard link (pointing at a build-host file) is refused, never
//! followed or created, and name headers are bounded ([`crate::tar_members`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::in_root::InRoot;
use sha2::{Digest, Sha256};

use crate::bundle::ResolvedAsset;
use crate::tar_members::{self, Flow};

/// A reader that hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn open(a: &ResolvedAsset) -> Result<Hashing<File>> {
    let f = File::open(&a.path).with_context(|| format!("cannot read {}", a.path.display()))?;
    Ok(Hashing {
        inner: f,
        hash: Sha256::new(),
    })
}

/// Reads the rest of `r`, then checks the whole file's hash.
fn finish<R: Read>(mut r: Hashing<R>, a: &ResolvedAsset) -> Result<()> {
    io::copy(&mut r, &mut io::sink())
        .with_context(|| format!("cannot read {}", a.path.display()))?;
    let got = hex::encode(r.hash.finalize());
    if got != a.sha256 {
        bail!(
            "{} ({}) changed since it was verified: SHA-256 is now {got}, verified {}; refusing to use it",
            a.path.display(),
            a.file,
            a.sha256
        );
    }
    Ok(())
}

/// The bytes of `a`, read once and checked against its verified SHA-256.
pub fn read_verified(a: &ResolvedAsset) -> Result<Vec<u8>> {
    let mut r = open(a)?;
    let mut v = Vec::new();
    r.read_to_end(&mut v)
        .with_context(|| format!("cannot read {}", a.path.display()))?;
    finish(r, a)?;
    Ok(v)
}

/// Copies `a` to `rel` in the staged tree (a new file, placed through
/// [`InRoot`]), checking the verified SHA-256 over the very bytes copied; on
/// a mismatch the copy is removed.
pub fn copy_verified(a: &ResolvedAsset, root: &InRoot, rel: &Path) -> Result<()> {
    copy_checked(&a.path, &a.file, &a.sha256, root, rel)
}

/// [`copy_verified`] for any file checked earlier (a preloaded image
/// archive): `path`, named `file` in messages, must still hash to `sha256`.
pub fn copy_checked(
    path: &Path,
    file: &str,
    sha256: &str,
    root: &InRoot,
    rel: &Path,
) -> Result<()> {
    let a = ResolvedAsset {
        role: crate::bundle::Role::K3s,
        file: file.to_string(),
        path: path.to_path_buf(),
        sha256: sha256.to_string(),
        size: 0,
        version: String::new(),
        url: None,
    };
    let a = &a;
    let mut r = open(a)?;
    let dest = root.show(rel);
    let res = (|| -> Result<()> {
        if root.lstat(rel)?.is_some() {
            bail!("cannot create {}: it exists", dest.display());
        }
        let mut out = root.create(rel, 0o644)?;
        io::copy(&mut r, &mut out)
            .with_context(|| format!("cannot copy {} to {}", a.path.display(), dest.display()))?;
        out.flush()?;
        Ok(())
    })();
    let res = res.and_then(|_| finish(r, a));
    if res.is_err() {
        let _ = root.remove(rel);
    }
    res
}

/// `./bin/x` and `bin/x` name the same member.
fn member_name(n: &str) -> &str {
    n.trim_start_matches("./")
}

/// Unpacks `members` (regular files only) of the `.tar.gz` release archive
/// `a` into `dest`, each under its base name, from one read of the archive
/// whose hash is checked before this returns Ok. Links among the wanted
/// members are refused.
pub fn extract_verified(a: &ResolvedAsset, dest: &Path, members: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let mut r = open(a)?;
    let mut found = vec![false; members.len()];
    let archive = a.path.display().to_string();
    {
        let gz = flate2::read::GzDecoder::new(&mut r);
        tar_members::for_each(gz, |m, entry| -> Result<Flow> {
            let name = member_name(&m.name);
            let Some(i) = members.iter().position(|w| *w == name) else {
                return Ok(Flow::Continue);
            };
            if m.kind.is_symlink() || m.kind.is_hard_link() {
                bail!(
                    "{archive}: member {name} is a link (to {}): refused, bundle members are never followed",
                    m.link.as_deref().unwrap_or("?")
                );
            }
            if !m.kind.is_file() {
                bail!("{archive}: member {name} is not a regular file");
            }
            let base = name.rsplit('/').next().unwrap_or(name);
            let out_path = dest.join(base);
            let _ = std::fs::remove_file(&out_path);
            let mut out = File::create_new(&out_path)
                .with_context(|| format!("cannot create {}", out_path.display()))?;
            let n = io::copy(entry, &mut out)
                .with_context(|| format!("{archive}: reading member {name}"))?;
            if n != m.size {
                bail!("{archive}: member {name} is cut short ({n} of {} bytes)", m.size);
            }
            found[i] = true;
            Ok(Flow::Continue)
        })
        .map_err(|e| match e {
            tar_members::Error::Archive(m) => anyhow::anyhow!("{archive}: {m}"),
            tar_members::Error::Callback(e) => e,
        })?;
    }
    // The hash covers the whole file, trailing bytes included.
    finish(r, a)?;
    let missing: Vec<&str> = members
        .iter()
        .zip(&found)
        .filter(|(_, f)| !**f)
        .map(|(m, _)| *m)
        .collect();
    if !missing.is_empty() {
        bail!("{archive} lacks {}", missing.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Role;

    fn asset(path: &Path) -> ResolvedAsset {
        let (sha256, size) = crate::bundle::hash_file(path).unwrap();
        ResolvedAsset {
            role: Role::Nerdctl,
            file: "nerdctl.tar.gz".into(),
            path: path.to_path_buf(),
            sha256,
            size,
            version: "1".into(),
            url: None,
        }
    }

    fn targz(path: &Path, build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        std::fs::write(path, gz.finish().unwrap()).unwrap();
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        b.append_data(&mut h, name, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, to: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, name, to).unwrap();
    }

    #[test]
    fn members_are_extracted_from_the_verified_bytes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("n.tar.gz");
        targz(&p, |b| {
            file(b, "README", b"r");
            file(b, "nerdctl", b"\x7fELF binary");
        });
        let a = asset(&p);
        extract_verified(&a, &d.path().join("out"), &["nerdctl"]).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("out/nerdctl")).unwrap(),
            b"\x7fELF binary"
        );
        let e = extract_verified(&a, &d.path().join("out2"), &["buildkitd"]).unwrap_err();
        assert!(format!("{e:#}").contains("lacks buildkitd"), "{e:#}");
    }

    /// A wanted member that is a symlink or hard link to a build-host file
    /// is refused: nothing of the host file is read or placed.
    #[test]
    fn link_members_are_refused_never_followed() {
        let d = tempfile::tempdir().unwrap();
        for (kind, to) in [
            (tar::EntryType::Symlink, "/etc/passwd"),
            (tar::EntryType::Link, "../../../../etc/passwd"),
        ] {
            let p = d.path().join("evil.tar.gz");
            targz(&p, |b| link(b, "nerdctl", kind, to));
            let out = d.path().join(format!("out-{kind:?}"));
            let e = extract_verified(&asset(&p), &out, &["nerdctl"]).unwrap_err();
            assert!(
                format!("{e:#}").contains("member nerdctl is a link"),
                "{e:#}"
            );
            assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
        }
    }

    /// A file swapped after verification is refused where it is used, and
    /// nothing of it is left behind.
    #[test]
    fn a_file_swapped_after_verification_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k3s");
        std::fs::write(&p, b"verified k3s").unwrap();
        let a = asset(&p);
        assert_eq!(read_verified(&a).unwrap(), b"verified k3s");
        std::fs::write(&p, b"swapped!!!!!").unwrap();
        let e = read_verified(&a).unwrap_err();
        assert!(
            format!("{e:#}").contains("changed since it was verified"),
            "{e:#}"
        );
        let dest = d.path().join("copy");
        let root = InRoot::open(d.path()).unwrap();
        let e = copy_verified(&a, &root, Path::new("copy")).unwrap_err();
        assert!(
            format!("{e:#}").contains("changed since it was verified"),
            "{e:#}"
        );
        assert!(!dest.exists());
        let tgz = d.path().join("n.tar.gz");
        targz(&tgz, |b| file(b, "nerdctl", b"good"));
        let a = asset(&tgz);
        targz(&tgz, |b| file(b, "nerdctl", b"evil"));
        let e = extract_verified(&a, &d.path().join("x"), &["nerdctl"]).unwrap_err();
        assert!(
            format!("{e:#}").contains("changed since it was verified"),
            "{e:#}"
        );
    }
}
