//! Applying a delta: the update file rebuilt chunk by chunk from the base
//! release, every chunk checked before the next.

use super::base::{Base, Source};
use super::decode::decode_frame;
use super::{Chunk, Header, read_header};
use crate::error::{Context, Error, Result};
use crate::update::format::{ROOT, sha256_of};
use sha2::{Digest, Sha256};
use std::io::{Read, SeekFrom, Write};

fn sha_hex(b: &[u8]) -> String {
    crate::hex::hex(&Sha256::digest(b))
}

/// Every base payload but the root image is hashed whole before anything
/// is written: a device whose boot files are not the base's refuses the
/// delta naming the file, and takes the full update.
fn check_small_bases(base: &mut dyn Base, h: &Header) -> Result<()> {
    for b in h.base.iter().filter(|b| b.name != ROOT) {
        let mut s = base
            .open(&b.name)
            .with_context(|| format!("the base's {}", b.name))?;
        s.reader
            .seek(SeekFrom::Start(s.offset))
            .with_context(|| s.what.clone())?;
        let got = sha256_of(&mut s.reader, b.size, |_| Ok(())).with_context(|| {
            format!(
                "{}: shorter than the base's {} ({} bytes)",
                s.what, b.name, b.size
            )
        })?;
        if got != b.sha256 {
            crate::bail!(
                "{} is not the base's {}: SHA-256 {got}, the delta was made from {}; take the full update",
                s.what,
                b.name,
                b.sha256
            );
        }
    }
    Ok(())
}

/// The source of chunk `c`'s base payload, reusing the one the previous
/// chunk opened (chunks of one payload follow each other).
fn source<'a>(
    open: &'a mut Option<(usize, Source)>,
    base: &mut dyn Base,
    h: &Header,
    from: usize,
) -> Result<&'a mut Source> {
    if open.as_ref().is_none_or(|(i, _)| *i != from) {
        let name = &h.base[from].name;
        let s = base
            .open(name)
            .with_context(|| format!("the base's {name}"))?;
        *open = Some((from, s));
    }
    Ok(&mut open.as_mut().unwrap().1)
}

fn mismatch(i: usize, s: &Source, h: &Header, c: &Chunk) -> Error {
    let b = &h.base[c.from.unwrap()];
    Error::msg(format!(
        "delta chunk {i} does not rebuild what was published: {} is not the base's {} (SHA-256 {}); take the full update",
        s.what, b.name, b.sha256
    ))
}

/// Applies `delta` to `base`, writing the update file to `out`. Holds at
/// most one reference window and one chunk; stops at the first chunk whose
/// output does not match its hash, before writing it.
pub fn apply(base: &mut dyn Base, delta: &mut impl Read, out: &mut impl Write) -> Result<Header> {
    let h = read_header(delta)?;
    check_small_bases(base, &h)?;
    let mut whole = Sha256::new();
    let mut frame = Vec::new();
    let mut open = None;
    for (i, c) in h.chunks.iter().enumerate() {
        let mut src = match c.from {
            Some(b) => Some(source(&mut open, base, &h, b)?),
            None => None,
        };
        if c.is_copy() {
            let s = src.expect("read_header: a copy has a base");
            let mut data = vec![0u8; c.size as usize];
            s.reader
                .seek(SeekFrom::Start(s.offset + c.ref_offset))
                .and_then(|_| s.reader.read_exact(&mut data))
                .with_context(|| format!("delta chunk {i}: copying from {}", s.what))?;
            if sha_hex(&data) != c.sha256 {
                return Err(mismatch(i, s, &h, c));
            }
            whole.update(&data);
            out.write_all(&data).context("writing the rebuilt update")?;
            continue;
        }
        frame.resize(c.frame as usize, 0);
        delta
            .read_exact(&mut frame)
            .with_context(|| format!("truncated: the delta ends inside chunk {i}"))?;
        let mut reference = vec![0u8; c.ref_size as usize];
        if let Some(s) = src.as_mut() {
            s.reader
                .seek(SeekFrom::Start(s.offset + c.ref_offset))
                .and_then(|_| s.reader.read_exact(&mut reference))
                .with_context(|| format!("reading {} for chunk {i}", s.what))?;
        }
        let data = decode_frame(&frame, reference, c.size as usize)
            .with_context(|| format!("delta chunk {i}"));
        let data = match (data, src) {
            (Ok(d), _) if sha_hex(&d) == c.sha256 => d,
            (_, Some(s)) => return Err(mismatch(i, s, &h, c)),
            (Err(e), None) => return Err(e),
            (Ok(_), None) => crate::bail!("delta chunk {i} does not rebuild what was published"),
        };
        whole.update(&data);
        out.write_all(&data).context("writing the rebuilt update")?;
    }
    let mut rest = [0u8; 1];
    if delta.read(&mut rest).context("reading the delta")? != 0 {
        crate::bail!("unexpected bytes after the last delta chunk");
    }
    if crate::hex::hex(&whole.finalize()) != h.target_sha256 {
        crate::bail!("the rebuilt update does not have the SHA-256 the delta names");
    }
    Ok(h)
}

/// `edgeimg-agent update delta BASE DELTA OUT`: rebuilds the update file
/// OUT from `base` and DELTA. OUT appears only complete: the bytes go to
/// `OUT.part`, renamed once every chunk and the whole file's SHA-256
/// matched; a refused delta leaves neither.
pub fn apply_files(
    base: &mut dyn Base,
    delta: &std::path::Path,
    out: &std::path::Path,
) -> Result<Header> {
    let mut d = std::io::BufReader::new(
        std::fs::File::open(delta).with_context(|| delta.display().to_string())?,
    );
    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let f = std::fs::File::create(&part).with_context(|| part.display().to_string())?;
    let mut w = std::io::BufWriter::new(f);
    let r = apply(base, &mut d, &mut w)
        .with_context(|| delta.display().to_string())
        .and_then(|h| {
            let f = w
                .into_inner()
                .map_err(|e| Error::msg(format!("writing {}: {e}", part.display())))?;
            f.sync_all().with_context(|| part.display().to_string())?;
            std::fs::rename(&part, out).with_context(|| out.display().to_string())?;
            Ok(h)
        });
    if r.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    r
}
