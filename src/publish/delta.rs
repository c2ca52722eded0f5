//! Delta payloads: a new update file rebuilt from the root image a device
//! already runs.
//!
//! A delta is a list of independent zstd frames, one per output chunk of at
//! most [`CHUNK`] bytes. A chunk of the new root image is compressed with a
//! window of the old root image around the same offset as its reference
//! (zstd's "ref prefix", what `zstd --patch-from` does for a whole file), so
//! an unchanged or slightly moved region costs a few bytes; every other chunk
//! (the signed header, the kernel, the initrd) is plain zstd. Every chunk
//! carries the SHA-256 of its output, and the whole output the SHA-256 of the
//! full update file.
//!
//! Frames use long-distance matching, as `zstd --patch-from` does: without
//! it the match finder of the level misses most of a 20 MiB reference.
//!
//! Why this and not one `--patch-from` frame or bsdiff: applying needs at
//! most one reference window ([`MAX_REF`]) plus one chunk in memory, whatever
//! the image size (a single frame over a 300 MB image needs a 300 MB window;
//! bspatch needs the old file and the patch at once), and work stops and
//! resumes at any chunk boundary, since each chunk is checked on its own.
//!
//! ```text
//! offset 0   8 bytes   magic "EDGEDLT\0"
//!        8   u32 LE    format version 1
//!       12   u32 LE    header length H (at most 1 MiB)
//!       16   H bytes   header: JSON (see [`Header`])
//!     16+H   the frames, back to back, in chunk order
//! ```
//!
//! The delta file needs no signature of its own: the TUF targets metadata
//! signs its length and hash, and the output is the signed update file,
//! checked again (signature and payload hashes) before it is installed.

use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zstd::zstd_safe;

pub const MAGIC: &[u8; 8] = b"EDGEDLT\0";
pub const VERSION: u32 = 1;
pub const MAX_HEADER: u32 = 1024 * 1024;
/// Output bytes per chunk.
pub const CHUNK: u64 = 4 << 20;
/// Old-image bytes on either side of a chunk's own offset in its reference.
pub const MARGIN: u64 = 8 << 20;
/// The largest reference window a delta may ask for: what apply holds.
pub const MAX_REF: u64 = CHUNK + 2 * MARGIN;
/// zstd window: a frame may reach back over its whole reference.
pub const WINDOW_LOG: u32 = 25;
/// zstd level: unchanged regions cost little at any level; higher levels
/// mostly buy time on the publishing host.
pub const LEVEL: i32 = 12;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The root image the delta applies to: its size and SHA-256.
    pub base_size: u64,
    pub base_sha256: String,
    /// The update file it produces.
    pub target_size: u64,
    pub target_sha256: String,
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    /// Output bytes.
    pub size: u64,
    /// Bytes of its zstd frame in the delta file.
    pub frame: u64,
    pub sha256: String,
    /// The reference window in the base: `[ref_offset, ref_offset+ref_size)`;
    /// `ref_size` 0 for none.
    pub ref_offset: u64,
    pub ref_size: u64,
}

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

/// Where the new root image sits in the new update file, and the old root
/// image (the base) in its own file.
pub struct Layout {
    pub new_root_offset: u64,
    pub new_root_size: u64,
    pub base_offset: u64,
    pub base_size: u64,
}

/// Writes the delta that rebuilds `new` (a whole update file) from the base
/// `[base_offset, base_offset+base_size)` of `old` into `out`.
pub fn make(
    old: &mut std::fs::File,
    new: &mut std::fs::File,
    l: &Layout,
    out: &mut impl Write,
) -> Result<Header> {
    let target_size = new.metadata()?.len();
    // The base's hash: what a device compares with the root image it runs.
    old.seek(SeekFrom::Start(l.base_offset))?;
    let mut h = Sha256::new();
    std::io::copy(&mut (&mut *old).take(l.base_size), &mut HashWriter(&mut h))?;
    let base_sha256 = hex::encode(h.finalize());

    // Chunk boundaries: the root image on CHUNK boundaries of its own, so
    // its chunk i lines up with the old image's bytes at the same offset.
    let mut bounds = vec![];
    let mut cut = |start: u64, end: u64, in_root: bool| {
        let mut o = start;
        while o < end {
            let n = CHUNK.min(end - o);
            bounds.push((o, n, in_root));
            o += n;
        }
    };
    let root_end = l.new_root_offset + l.new_root_size;
    cut(0, l.new_root_offset, false);
    cut(l.new_root_offset, root_end, true);
    cut(root_end, target_size, false);

    let mut chunks = vec![];
    let mut frames = tempfile::tempfile().context("temporary file")?;
    let mut whole = Sha256::new();
    for (o, n, in_root) in bounds {
        let data = read_range(new, o, n)?;
        whole.update(&data);
        let (ref_offset, ref_size) = if in_root && l.base_size > 0 {
            let at = o - l.new_root_offset;
            let start = at.saturating_sub(MARGIN).min(l.base_size);
            let end = (at + n + MARGIN).min(l.base_size);
            (start, end - start)
        } else {
            (0, 0)
        };
        let reference = if ref_size > 0 {
            read_range(old, l.base_offset + ref_offset, ref_size)?
        } else {
            vec![]
        };
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
            cctx.ref_prefix(&reference)
                .map_err(|c| zerr("zstd prefix", c))?;
        }
        let mut frame = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
        cctx.compress2(&mut frame, &data)
            .map_err(|c| zerr("zstd compression", c))?;
        frames.write_all(&frame)?;
        chunks.push(Chunk {
            size: n,
            frame: frame.len() as u64,
            sha256: sha_hex(&data),
            ref_offset,
            ref_size,
        });
    }
    let header = Header {
        base_size: l.base_size,
        base_sha256,
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

/// Reads and checks a delta's header: every size bounded, every reference
/// inside the base, the chunks adding up to the target.
pub fn read_header(delta: &mut impl Read) -> Result<Header> {
    let mut pre = [0u8; 16];
    delta
        .read_exact(&mut pre)
        .context("truncated: the file ends inside the delta prefix")?;
    if &pre[..8] != MAGIC {
        bail!("not an edgeimg delta (bad magic)");
    }
    let version = u32::from_le_bytes(pre[8..12].try_into().unwrap());
    if version != VERSION {
        bail!("delta format version {version} is not supported (this reads {VERSION})");
    }
    let hlen = u32::from_le_bytes(pre[12..16].try_into().unwrap());
    if hlen > MAX_HEADER {
        bail!("delta header length {hlen} exceeds {MAX_HEADER} bytes: corrupt file");
    }
    let mut json = vec![0u8; hlen as usize];
    delta
        .read_exact(&mut json)
        .context("truncated: the file ends inside the delta header")?;
    let h: Header = serde_json::from_slice(&json).context("the delta header is not valid")?;
    let mut total = 0u64;
    for (i, c) in h.chunks.iter().enumerate() {
        if c.size == 0 || c.size > CHUNK {
            bail!("delta chunk {i}: size {} is not in 1..={CHUNK}", c.size);
        }
        if c.frame > zstd_safe::compress_bound(CHUNK as usize) as u64 {
            bail!(
                "delta chunk {i}: frame of {} bytes is larger than any chunk needs",
                c.frame
            );
        }
        if c.ref_size > MAX_REF
            || c.ref_offset
                .checked_add(c.ref_size)
                .is_none_or(|e| e > h.base_size)
        {
            bail!("delta chunk {i}: its reference is outside the base image");
        }
        if c.sha256.len() != 64 || hex::decode(&c.sha256).is_err() {
            bail!("delta chunk {i}: no SHA-256");
        }
        total = total
            .checked_add(c.size)
            .context("delta chunk sizes overflow")?;
    }
    if total != h.target_size {
        bail!(
            "delta chunks make {total} bytes, the header says {}",
            h.target_size
        );
    }
    Ok(h)
}

/// Applies `delta` to `base` (the device's root image, at least
/// `base_size` bytes; what follows is ignored), writing the update file to
/// `out`. Holds at most one reference window and one chunk; stops at the
/// first chunk whose output does not match its hash, before writing it.
pub fn apply(
    base: &mut (impl Read + Seek),
    delta: &mut impl Read,
    out: &mut impl Write,
) -> Result<Header> {
    let h = read_header(delta)?;
    let mut whole = Sha256::new();
    let mut frame = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    for (i, c) in h.chunks.iter().enumerate() {
        frame.resize(c.frame as usize, 0);
        delta
            .read_exact(&mut frame)
            .with_context(|| format!("truncated: the delta ends inside chunk {i}"))?;
        let reference = if c.ref_size > 0 {
            read_range(base, c.ref_offset, c.ref_size).with_context(|| {
                format!(
                    "reading the base image for chunk {i} (is it {} bytes?)",
                    h.base_size
                )
            })?
        } else {
            vec![]
        };
        let mut dctx = zstd_safe::DCtx::create();
        dctx.set_parameter(zstd_safe::DParameter::WindowLogMax(WINDOW_LOG))
            .map_err(|e| zerr("zstd parameter", e))?;
        if !reference.is_empty() {
            dctx.ref_prefix(&reference)
                .map_err(|e| zerr("zstd prefix", e))?;
        }
        data.clear();
        data.reserve_exact(c.size as usize);
        let n = dctx
            .decompress(&mut data, &frame)
            .map_err(|e| zerr(&format!("delta chunk {i}"), e))?;
        if n as u64 != c.size || sha_hex(&data) != c.sha256 {
            bail!(
                "delta chunk {i} does not rebuild what was published: the base is not the root image {} the delta was made from",
                h.base_sha256
            );
        }
        whole.update(&data);
        out.write_all(&data).context("writing the rebuilt update")?;
    }
    let mut rest = [0u8; 1];
    if delta.read(&mut rest)? != 0 {
        bail!("unexpected bytes after the last delta chunk");
    }
    if hex::encode(whole.finalize()) != h.target_sha256 {
        bail!("the rebuilt update does not have the SHA-256 the delta names");
    }
    Ok(h)
}
