//! Downloading one update target with resume into a file (a delta: the
//! full update goes into the slot, [`crate::update::stream`]): the bytes
//! so far stay in a `.part` file named by the target's signed SHA-256, so an interrupted
//! download (a cut connection, a reboot) continues where it stopped with an
//! HTTP Range request, and a different target never continues another's
//! bytes. Nothing beyond the signed length is accepted, and the whole file
//! must have the signed SHA-256 before it is handed on.

use crate::error::{Context, Error, Result};
use crate::update::tuf_client;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What the signed targets metadata says about the file to fetch.
#[derive(Debug, Clone)]
pub struct Want {
    pub url: url::Url,
    pub length: u64,
    pub sha256: Vec<u8>,
    /// What an `https://` server's certificate must chain to.
    pub trust: tuf_client::Trust,
}

/// `<dir>/<sha256>.part`, the download in progress.
pub fn part_path(dir: &Path, want: &Want) -> PathBuf {
    dir.join(format!("{}.part", crate::hex::hex(&want.sha256)))
}

/// A target's bytes from some offset on.
pub(crate) struct Source {
    pub reader: Box<dyn Read>,
    /// Whether it starts at the offset asked for (a server that ignores
    /// Range sends the whole file again, from byte 0).
    pub resumed: bool,
    /// How many bytes it says it sends, when it says so (Content-Length).
    pub length: Option<u64>,
}

/// A source of `url` positioned at `offset`.
pub(crate) fn open_at(url: &url::Url, trust: &tuf_client::Trust, offset: u64) -> Result<Source> {
    match url.scheme() {
        "file" => {
            let p = url
                .to_file_path()
                .map_err(|_| Error::msg(format!("{url} is not a local path")))?;
            let mut f = File::open(&p).with_context(|| p.display().to_string())?;
            let len = f.metadata().with_context(|| p.display().to_string())?.len();
            f.seek(SeekFrom::Start(offset))
                .with_context(|| p.display().to_string())?;
            Ok(Source {
                reader: Box::new(f),
                resumed: true,
                length: Some(len.saturating_sub(offset)),
            })
        }
        "http" | "https" => {
            trust.check(url).map_err(Error::msg)?;
            let mut req = tuf_client::target_agent(trust).get(url.as_str());
            if offset > 0 {
                req = req.header("Range", format!("bytes={offset}-"));
            }
            let resp = req.call().map_err(|e| Error::msg(format!("{url}: {e}")))?;
            let header = |k: &str| {
                resp.headers()
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let resumed = match resp.status().as_u16() {
                206 if offset > 0 => {
                    // The part sent must start where it was asked to.
                    if let Some(r) = header("content-range")
                        && !r.trim().starts_with(&format!("bytes {offset}-"))
                    {
                        crate::bail!(
                            "{url}: asked for the bytes from {offset}, the server sent {r:?}"
                        );
                    }
                    true
                }
                200 => false,
                s => crate::bail!("{url}: HTTP status {s}"),
            };
            let length = header("content-length").and_then(|v| v.trim().parse().ok());
            Ok(Source {
                reader: Box::new(resp.into_body().into_reader()),
                resumed,
                length,
            })
        }
        s => crate::bail!("{url}: the scheme {s} is not supported (http://, https:// or a path)"),
    }
}

/// Completes the download of `want` into [`part_path`] under `dir` and
/// returns that path once the whole file has the signed length and SHA-256.
/// An interruption keeps the part for the next call; bytes that do not
/// match the signed hash remove it.
pub fn fetch(want: &Want, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let part = part_path(dir, want);
    // Parts of other targets are stale: only one download at a time.
    for e in std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .flatten()
    {
        let p = e.path();
        if p != part && p.extension().is_some_and(|x| x == "part") {
            let _ = std::fs::remove_file(&p);
        }
    }
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part)
        .with_context(|| part.display().to_string())?;
    let mut have = f
        .metadata()
        .with_context(|| part.display().to_string())?
        .len();
    if have > want.length {
        have = 0;
    }
    // The hash of what is already there: read back, never trusted from a record.
    let mut hash = Sha256::new();
    f.seek(SeekFrom::Start(0)).context("seek")?;
    hash_prefix(&mut f, have, &mut hash).with_context(|| part.display().to_string())?;
    if have > 0 && have < want.length {
        crate::log(format!(
            "update: resuming {} at byte {have} of {}",
            want.url, want.length
        ));
    }
    if have < want.length {
        let Source {
            reader: src,
            resumed,
            ..
        } = open_at(&want.url, &want.trust, have)?;
        if !resumed && have > 0 {
            crate::log(format!(
                "update: {} ignored the range request: downloading from the start",
                want.url
            ));
            have = 0;
            hash = Sha256::new();
        }
        f.set_len(have)
            .with_context(|| part.display().to_string())?;
        f.seek(SeekFrom::Start(have)).context("seek")?;
        // One byte more than is left: a longer body is refused, not cut.
        let mut src = src.take(want.length - have + 1);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = f.sync_data();
                    crate::bail!(
                        "{}: interrupted at byte {have} of {}: {e}; the next pull resumes there",
                        want.url,
                        want.length
                    );
                }
            };
            if have + n as u64 > want.length {
                drop(f);
                let _ = std::fs::remove_file(&part);
                crate::bail!(
                    "{}: the server sent more than the signed length of {} bytes",
                    want.url,
                    want.length
                );
            }
            f.write_all(&buf[..n])
                .with_context(|| part.display().to_string())?;
            hash.update(&buf[..n]);
            have += n as u64;
        }
        f.sync_data().with_context(|| part.display().to_string())?;
        if have < want.length {
            crate::bail!(
                "{}: the connection ended at byte {have} of {}; the next pull resumes there",
                want.url,
                want.length
            );
        }
    }
    let got = hash.finalize();
    if got.as_slice() != want.sha256.as_slice() {
        drop(f);
        let _ = std::fs::remove_file(&part);
        crate::bail!(
            "{}: SHA-256 {} does not match the signed targets metadata ({}): removed",
            want.url,
            crate::hex::hex(got.as_slice()),
            crate::hex::hex(&want.sha256)
        );
    }
    Ok(part)
}

fn hash_prefix(f: &mut File, n: u64, hash: &mut Sha256) -> std::io::Result<()> {
    let mut r = f.take(n);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            return Ok(());
        }
        hash.update(&buf[..k]);
    }
}
