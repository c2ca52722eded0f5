//! Making delta payloads (the format and how a device applies one are the
//! contract's [`edgeimg_contract::update::delta`], re-exported here, so the
//! host tests apply deltas with the device's own code).
//!
//! Every payload of the new update is made from the base release's payload
//! of the same name: a payload that did not change (the kernel and initrd
//! for most releases, the Pi's firmware and DTBs) is a copy, which costs its
//! name, size and SHA-256. A changed one is cut in [`CHUNK`]s, each
//! compressed with zstd against a window of the old payload around the same
//! offset ([`MARGIN`] either side), as a "ref prefix", with long-distance
//! matching, as `zstd --patch-from` does: without it the match finder of the
//! level misses most of a 20 MiB reference. The signed header and a payload
//! with no counterpart in the base are plain zstd. Only payloads a device
//! keeps verbatim ([`kept_verbatim`]) are bases.
//!
//! Why this and not one `--patch-from` frame or bsdiff: applying needs at
//! most one reference window ([`MAX_REF`]) plus one chunk in memory, whatever
//! the image size (a single frame over a 300 MB image needs a 300 MB window;
//! bspatch needs the old file and the patch at once), work stops and
//! resumes at any chunk boundary, since each chunk is checked on its own, and
//! the device decodes with a pure-Rust zstd decoder.

use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use zstd::zstd_safe;

pub use edgeimg_contract::update::delta::{
    Base, BasePayload, CHUNK, Chunk, DirBase, Header, MAGIC, MARGIN, MAX_HEADER, MAX_REF,
    UpdateBase, VERSION, WINDOW_LOG, apply, kept_verbatim, read_header,
};
use edgeimg_contract::update::format::{Payload, Verified};

/// zstd level: unchanged regions cost little at any level; higher levels
/// mostly buy time on the publishing host.
pub const LEVEL: i32 = 12;

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn zerr(what: &str, code: usize) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}", zstd_safe::get_error_name(code))
}

fn read_range(f: &mut (impl Read + Seek), offset: u64, len: u64) -> Result<Vec<u8>> {
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// One zstd frame of `data`, with `reference` (may be empty) as its prefix.
fn compress(data: &[u8], reference: &[u8]) -> Result<Vec<u8>> {
    // A context per chunk: the prefix is borrowed for its frame only.
    let mut cctx = zstd_safe::CCtx::create();
    for p in [
        zstd_safe::CParameter::CompressionLevel(LEVEL),
        zstd_safe::CParameter::WindowLog(WINDOW_LOG),
        zstd_safe::CParameter::ChecksumFlag(false),
        // Finds the long matches in the reference that the level's own
        // match finder, sized for its level, misses (as `--patch-from` does).
        zstd_safe::CParameter::EnableLongDistanceMatching(true),
    ] {
        cctx.set_parameter(p)
            .map_err(|c| zerr("zstd parameter", c))?;
    }
    if !reference.is_empty() {
        cctx.ref_prefix(reference)
            .map_err(|c| zerr("zstd prefix", c))?;
    }
    let mut frame = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
    cctx.compress2(&mut frame, data)
        .map_err(|c| zerr("zstd compression", c))?;
    Ok(frame)
}

/// What a new payload is made from: a base payload (index in the header's
/// base list, and the payload in the old update) or nothing.
enum Source<'a> {
    /// Byte-identical to this base payload: a copy.
    Same(usize, &'a Payload),
    /// The same-named base payload, changed: frames referencing it.
    Changed(usize, &'a Payload),
    /// Nothing in the base to start from: plain frames.
    New,
}

/// The base payload a new payload `p` is rebuilt from, adding it to `base`
/// the first time: the same name (identical or changed), else an identical
/// payload under another name. Only payloads devices keep verbatim count.
fn source_of<'a>(p: &Payload, old: &'a Verified, base: &mut Vec<BasePayload>) -> Source<'a> {
    let candidates = || {
        old.header
            .payloads
            .iter()
            .filter(|o| o.size > 0 && kept_verbatim(&o.name))
    };
    let same_name = candidates().find(|o| o.name == p.name);
    let found = match same_name {
        Some(o) if o.sha256 == p.sha256 => Some((o, true)),
        Some(o) => Some((o, false)),
        None => candidates()
            .find(|o| o.sha256 == p.sha256)
            .map(|o| (o, true)),
    };
    let Some((o, same)) = found else {
        return Source::New;
    };
    let i = match base.iter().position(|b| b.name == o.name) {
        Some(i) => i,
        None => {
            base.push(BasePayload {
                name: o.name.clone(),
                size: o.size,
                sha256: o.sha256.clone(),
            });
            base.len() - 1
        }
    };
    if same {
        Source::Same(i, o)
    } else {
        Source::Changed(i, o)
    }
}

/// The delta being made: the two update files, the frames so far (in a
/// temporary file), the chunk table and the hash of the output.
struct Maker<'a> {
    old: &'a mut std::fs::File,
    old_v: &'a Verified,
    new: &'a mut std::fs::File,
    frames: std::fs::File,
    chunks: Vec<Chunk>,
    whole: Sha256,
}

impl Maker<'_> {
    /// Frames for the new file's bytes `[start, start+len)`, each chunk
    /// referencing the bytes of base payload `refer` around its own offset
    /// (relative to the payload).
    fn framed(&mut self, start: u64, len: u64, refer: Option<(usize, &Payload)>) -> Result<()> {
        let mut at = 0;
        while at < len {
            let n = CHUNK.min(len - at);
            let data = read_range(self.new, start + at, n)?;
            self.whole.update(&data);
            let (from, ref_offset, ref_size, reference) = match refer {
                Some((i, o)) => {
                    let s = at.saturating_sub(MARGIN).min(o.size);
                    let e = (at + n + MARGIN).min(o.size);
                    let r = read_range(self.old, self.old_v.offset(o) + s, e - s)?;
                    (Some(i), s, e - s, r)
                }
                None => (None, 0, 0, vec![]),
            };
            let frame = compress(&data, &reference)?;
            self.frames.write_all(&frame)?;
            self.chunks.push(Chunk {
                size: n,
                frame: frame.len() as u64,
                sha256: sha_hex(&data),
                from,
                ref_offset,
                ref_size,
            });
            at += n;
        }
        Ok(())
    }

    /// The new file's payload at `start` is base payload `i` (`o`) as it
    /// is: copies of [`CHUNK`] bytes at most, each with its own hash, so
    /// the device checks every chunk before writing it.
    fn copy(&mut self, start: u64, i: usize, o: &Payload) -> Result<()> {
        let mut at = 0;
        while at < o.size {
            let n = CHUNK.min(o.size - at);
            let data = read_range(self.new, start + at, n)?;
            self.whole.update(&data);
            self.chunks.push(Chunk {
                size: n,
                frame: 0,
                sha256: sha_hex(&data),
                from: Some(i),
                ref_offset: at,
                ref_size: n,
            });
            at += n;
        }
        Ok(())
    }
}

/// Writes the delta that rebuilds `new` (a whole update file, its header
/// `new_v`) from the payloads of the base release `old` (header `old_v`)
/// into `out`: a copy of every payload that did not change, frames against
/// its old self for one that did, plain frames for the rest (the signed
/// header, a payload with no counterpart).
pub fn make(
    old: &mut std::fs::File,
    old_v: &Verified,
    new: &mut std::fs::File,
    new_v: &Verified,
    out: &mut impl Write,
) -> Result<Header> {
    let target_size = new.metadata()?.len();
    let mut base = vec![];
    let mut m = Maker {
        old,
        old_v,
        new,
        frames: tempfile::tempfile().context("temporary file")?,
        chunks: vec![],
        whole: Sha256::new(),
    };
    m.framed(0, new_v.payload_start, None)?;
    for p in &new_v.header.payloads {
        let start = new_v.offset(p);
        match source_of(p, old_v, &mut base) {
            Source::Same(i, o) => m.copy(start, i, o)?,
            Source::Changed(i, o) => m.framed(start, p.size, Some((i, o)))?,
            Source::New => m.framed(start, p.size, None)?,
        }
    }
    let Maker {
        mut frames,
        chunks,
        whole,
        ..
    } = m;
    let header = Header {
        base,
        target_size,
        target_sha256: hex::encode(whole.finalize()),
        chunks,
    };
    let json = serde_json::to_vec(&header)?;
    if json.len() > MAX_HEADER as usize {
        bail!(
            "the delta header would be {} bytes, over {MAX_HEADER}",
            json.len()
        );
    }
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    out.write_all(&(json.len() as u32).to_le_bytes())?;
    out.write_all(&json)?;
    frames.seek(SeekFrom::Start(0))?;
    std::io::copy(&mut frames, out)?;
    Ok(header)
}

pub(crate) struct HashWriter<'a>(pub &'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
