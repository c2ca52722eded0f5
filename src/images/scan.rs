//! One streaming pass over an image tarball: record every member's size, keep
//! the small JSON members in memory, hash `blobs/sha256/<hex>` members.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::tar_members::Flow;

use super::{ImageError, InspectOptions, MAX_JSON_KEPT, MAX_JSON_MEMBER, MAX_MEMBERS};

#[derive(Default, Debug)]
pub(crate) struct Scan {
    /// Regular members: normalised path -> size.
    files: HashMap<String, u64>,
    /// Symlinks and hard links: normalised path -> normalised target.
    links: HashMap<String, String>,
    /// Small members that look like JSON: normalised path -> content.
    json: HashMap<String, Vec<u8>>,
}

impl Scan {
    fn resolve<'a>(&'a self, mut p: &'a str) -> Option<&'a str> {
        for _ in 0..16 {
            if self.files.contains_key(p) {
                return Some(p);
            }
            p = self.links.get(p)?;
        }
        None
    }

    pub(crate) fn exists(&self, p: &str) -> bool {
        self.resolve(p).is_some()
    }

    /// Size of a member (following links).
    pub(crate) fn size(&self, p: &str) -> Option<u64> {
        self.resolve(p).and_then(|r| self.files.get(r).copied())
    }

    /// Content of a small JSON-looking member (following links).
    pub(crate) fn json(&self, p: &str) -> Option<&[u8]> {
        self.resolve(p)
            .and_then(|r| self.json.get(r))
            .map(Vec::as_slice)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.files
            .keys()
            .chain(self.links.keys())
            .map(String::as_str)
    }
}

/// Reader wrapper noting whether the tar reader ever hit end-of-file: a tar
/// that ends properly stops at its zero end-of-archive block first.
struct EofWatch<R> {
    inner: R,
    hit_eof: Rc<Cell<bool>>,
}

impl<R: Read> Read for EofWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit_eof.set(true);
        }
        Ok(n)
    }
}

/// `a/b/../c` -> `a/c`; strips `./` and leading `/`.
pub(crate) fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

fn blob_sha256(p: &str) -> Option<&str> {
    let hex = p.strip_prefix("blobs/sha256/")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

fn wants_json(p: &str, size: u64) -> bool {
    size <= MAX_JSON_MEMBER
        && (p.ends_with(".json") || p == "oci-layout" || p.starts_with("blobs/"))
}

pub(crate) fn scan<R: Read>(
    path: &Path,
    reader: R,
    opts: &InspectOptions,
    compressed: bool,
) -> Result<Scan, ImageError> {
    let corrupt = |reason: String| ImageError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let hit_eof = Rc::new(Cell::new(false));
    let mut reader = EofWatch {
        inner: reader,
        hit_eof: hit_eof.clone(),
    };
    let mut scan = Scan::default();
    let mut count = 0usize;
    let mut kept_bytes: u64 = 0;
    // Members through `tar_members`: long-name and PAX headers bounded.
    crate::tar_members::for_each(&mut reader, |m, entry| -> Result<Flow, ImageError> {
        count += 1;
        let name = normalize(&m.name);
        let kind = m.kind;
        if kind.is_dir() || name.is_empty() {
            return Ok(Flow::Continue);
        }
        if scan.files.len() + scan.links.len() >= MAX_MEMBERS {
            return Err(corrupt(format!(
                "more than {MAX_MEMBERS} members (at {name}); an image archive has a few per layer"
            )));
        }
        if kind.is_symlink() || kind.is_hard_link() {
            let target = m.link.clone().unwrap_or_default();
            let target = if kind.is_symlink() && !target.starts_with('/') {
                let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                normalize(&format!("{dir}/{target}"))
            } else {
                normalize(&target)
            };
            scan.links.insert(name, target);
            return Ok(Flow::Continue);
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            return Ok(Flow::Continue);
        }
        let size = m.size;
        let hash_it =
            blob_sha256(&name).filter(|_| opts.verify_blob_digests || wants_json(&name, size));
        let mut hasher = hash_it.map(|_| Sha256::new());
        let read_err = |e: io::Error| corrupt(format!("{name}: {e}"));
        let mut got: u64 = 0;
        if wants_json(&name, size) {
            let mut buf = Vec::with_capacity(size as usize);
            got = entry.read_to_end(&mut buf).map_err(read_err)? as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(&buf);
            }
            let looks_json = buf
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'{' || *b == b'[');
            if looks_json || !name.starts_with("blobs/") {
                kept_bytes += buf.len() as u64;
                if kept_bytes > MAX_JSON_KEPT {
                    return Err(corrupt(format!(
                        "its JSON members (index, manifests, configs) add up to more than {} MiB \
                         (at {name}); an image archive's are a few KiB",
                        MAX_JSON_KEPT >> 20
                    )));
                }
                scan.json.insert(name.clone(), buf);
            }
        } else if let Some(h) = hasher.as_mut() {
            let mut buf = vec![0u8; 128 * 1024];
            loop {
                let n = entry.read(&mut buf).map_err(read_err)?;
                if n == 0 {
                    break;
                }
                got += n as u64;
                h.update(&buf[..n]);
            }
        } else {
            got = io::copy(entry, &mut io::sink()).map_err(read_err)?;
        }
        if got != size {
            // The tar reader returns a short member at end-of-file without error.
            return Err(corrupt(format!(
                "{name} is cut short: {got} of its {size} bytes are there"
            )));
        }
        if let (Some(expected), Some(h)) = (hash_it, hasher) {
            let actual = hex::encode(h.finalize());
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(ImageError::DigestMismatch {
                    path: path.to_path_buf(),
                    member: name,
                    actual: format!("sha256:{actual}"),
                });
            }
        }
        scan.files.insert(name, size);
        Ok(Flow::Continue)
    })
    .map_err(|e| match e {
        crate::tar_members::Error::Archive(m) => corrupt(m),
        crate::tar_members::Error::Callback(e) => e,
    })?;
    if hit_eof.get() {
        return Err(corrupt(format!(
            "the tar stream ends after {count} members without its end-of-archive marker (cut short?)"
        )));
    }
    if compressed {
        // Read the rest of the compressed stream (tar padding) so its own
        // integrity checks (gzip CRC, zstd frame ends) run.
        io::copy(&mut reader, &mut io::sink())
            .map_err(|e| corrupt(format!("compressed stream: {e}")))?;
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(members: impl Iterator<Item = (String, Vec<u8>)>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, body.as_slice()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn scan_bytes(bytes: &[u8]) -> Result<Scan, ImageError> {
        scan(Path::new("x.tar"), bytes, &InspectOptions::default(), false)
    }

    #[test]
    fn too_many_members_are_refused() {
        let t = tar_of((0..=MAX_MEMBERS).map(|i| (format!("f{i}"), Vec::new())));
        let e = scan_bytes(&t).unwrap_err().to_string();
        assert!(
            e.contains("x.tar") && e.contains("more than 20000 members"),
            "{e}"
        );
        let t = tar_of((0..MAX_MEMBERS).map(|i| (format!("f{i}"), Vec::new())));
        assert_eq!(scan_bytes(&t).unwrap().files.len(), MAX_MEMBERS);
    }

    #[test]
    fn kept_json_is_bounded_in_total() {
        let big = |i: usize| (format!("m{i}.json"), vec![b'{'; MAX_JSON_MEMBER as usize]);
        let n = (MAX_JSON_KEPT / MAX_JSON_MEMBER) as usize;
        assert!(scan_bytes(&tar_of((0..n).map(big))).is_ok());
        let e = scan_bytes(&tar_of((0..=n).map(big)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.tar") && e.contains("16 MiB") && e.contains("m4.json"),
            "{e}"
        );
    }
}
