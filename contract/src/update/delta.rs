//! Delta payloads: a new update file rebuilt from the root image a device
//! already runs.
//!
//! A delta is a list of independent zstd frames, one per output chunk of at
//! most [`CHUNK`] bytes. A chunk of the new root image was compressed with a
//! window of the old root image around the same offset as its reference
//! (zstd's "ref prefix", what `zstd --patch-from` does for a whole file);
//! every other chunk (the signed header, the kernel, the initrd) is plain
//! zstd. Every chunk carries the SHA-256 of its output, and the whole output
//! the SHA-256 of the full update file.
//!
//! Applying holds one reference window ([`MAX_REF`]) and one chunk at a
//! time, whatever the image size, and decodes with `ruzstd` (pure Rust, so
//! the static agent needs no C toolchain).
//!
//! ```text
//! offset 0   8 bytes   magic "EDGEDLT\0"
//!        8   u32 LE    format version 1
//!       12   u32 LE    header length H (at most 1 MiB)
//!       16   H bytes   header: JSON (see [`Header`])
//!     16+H   the frames, back to back, in chunk order
//! ```
//!
//! The delta file needs no signature of its own: the repository's signed
//! metadata carries its length and hash, and the output is the signed update
//! file, checked again (signature and payload hashes) before it is installed.

use crate::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};

pub const MAGIC: &[u8; 8] = b"EDGEDLT\0";
pub const VERSION: u32 = 1;
pub const MAX_HEADER: u32 = 1024 * 1024;
/// Output bytes per chunk.
pub const CHUNK: u64 = 4 << 20;
/// Old-image bytes on either side of a chunk's own offset in its reference.
pub const MARGIN: u64 = 8 << 20;
/// The largest reference window a delta may ask for: what apply holds.
pub const MAX_REF: u64 = CHUNK + 2 * MARGIN;
/// zstd window log of the frames: a frame may reach back over its whole
/// reference.
pub const WINDOW_LOG: u32 = 25;
/// The largest frame a chunk can need (zstd's compress bound of a chunk).
pub const MAX_FRAME: u64 = CHUNK + CHUNK / 255 + 64 * 1024;

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
    crate::hex::hex(&Sha256::digest(b))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && crate::hex::unhex(s).is_some()
}

/// Reads and checks a delta's header: every size bounded, every reference
/// inside the base, the chunks adding up to the target.
pub fn read_header(delta: &mut impl Read) -> Result<Header> {
    let mut pre = [0u8; 16];
    delta
        .read_exact(&mut pre)
        .context("truncated: the file ends inside the delta prefix")?;
    if &pre[..8] != MAGIC {
        crate::bail!("not an edgeimg delta (bad magic)");
    }
    let version = u32::from_le_bytes(pre[8..12].try_into().unwrap());
    if version != VERSION {
        crate::bail!("delta format version {version} is not supported (this reads {VERSION})");
    }
    let hlen = u32::from_le_bytes(pre[12..16].try_into().unwrap());
    if hlen > MAX_HEADER {
        crate::bail!("delta header length {hlen} exceeds {MAX_HEADER} bytes: corrupt file");
    }
    let mut json = vec![0u8; hlen as usize];
    delta
        .read_exact(&mut json)
        .context("truncated: the file ends inside the delta header")?;
    let h: Header = serde_json::from_slice(&json).context("the delta header is not valid")?;
    if !is_sha256_hex(&h.base_sha256) || !is_sha256_hex(&h.target_sha256) {
        crate::bail!("the delta header is not valid: a SHA-256 is not 64 hex digits");
    }
    let mut total = 0u64;
    for (i, c) in h.chunks.iter().enumerate() {
        if c.size == 0 || c.size > CHUNK {
            crate::bail!("delta chunk {i}: size {} is not in 1..={CHUNK}", c.size);
        }
        if c.frame == 0 || c.frame > MAX_FRAME {
            crate::bail!(
                "delta chunk {i}: frame of {} bytes is larger than any chunk needs",
                c.frame
            );
        }
        if c.ref_size > MAX_REF
            || c.ref_offset
                .checked_add(c.ref_size)
                .is_none_or(|e| e > h.base_size)
        {
            crate::bail!("delta chunk {i}: its reference is outside the base image");
        }
        if !is_sha256_hex(&c.sha256) {
            crate::bail!("delta chunk {i}: no SHA-256");
        }
        total = total
            .checked_add(c.size)
            .ok_or_else(|| Error::msg("delta chunk sizes overflow"))?;
    }
    if total != h.target_size {
        crate::bail!(
            "delta chunks make {total} bytes, the header says {}",
            h.target_size
        );
    }
    Ok(h)
}

/// Decodes one frame into exactly `size` bytes, with `reference` (may be
/// empty) as its raw-content dictionary.
fn decode_frame(frame: &[u8], reference: Vec<u8>, size: usize) -> Result<Vec<u8>> {
    use ruzstd::decoding::{Dictionary, FrameDecoder};
    let mut dec = FrameDecoder::new();
    let mut src = frame;
    // A frame compressed against a prefix names no dictionary: the
    // reference is given as a raw-content dictionary (id 1, never on the
    // wire) and forced after the frame header is read.
    let with_ref = !reference.is_empty();
    if with_ref {
        dec.add_dict(Dictionary {
            id: 1,
            fse: Default::default(),
            huf: Default::default(),
            dict_content: reference,
            offset_hist: [1, 4, 8],
        })
        .map_err(|e| Error::msg(format!("{e}")))?;
    }
    // A frame asking for a larger window than a delta uses is refused
    // before any buffer of that size exists.
    dec.set_max_window_size(1 << WINDOW_LOG);
    dec.init(&mut src)
        .map_err(|e| Error::msg(format!("zstd frame header: {e}")))?;
    if with_ref {
        dec.force_dict(1).map_err(|e| Error::msg(format!("{e}")))?;
    }
    let mut out = vec![0u8; size];
    let mut done = 0;
    while !dec.is_finished() {
        if done == size {
            // A frame that decodes to more than its chunk says.
            let mut probe = [0u8; 1];
            let (read, n) = dec
                .decode_from_to(src, &mut probe)
                .map_err(|e| Error::msg(format!("{e}")))?;
            src = &src[read..];
            if n > 0 {
                crate::bail!("the frame decodes to more than {size} bytes");
            }
            if read == 0 && !dec.is_finished() {
                crate::bail!("the frame is truncated");
            }
            continue;
        }
        let (read, n) = dec
            .decode_from_to(src, &mut out[done..])
            .map_err(|e| Error::msg(format!("{e}")))?;
        src = &src[read..];
        done += n;
        if read == 0 && n == 0 && !dec.is_finished() {
            crate::bail!("the frame is truncated");
        }
    }
    if done != size {
        crate::bail!("the frame decodes to {done} bytes, not {size}");
    }
    Ok(out)
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
    for (i, c) in h.chunks.iter().enumerate() {
        frame.resize(c.frame as usize, 0);
        delta
            .read_exact(&mut frame)
            .with_context(|| format!("truncated: the delta ends inside chunk {i}"))?;
        let mut reference = vec![0u8; c.ref_size as usize];
        if c.ref_size > 0 {
            base.seek(SeekFrom::Start(c.ref_offset))
                .and_then(|_| base.read_exact(&mut reference))
                .with_context(|| {
                    format!(
                        "reading the base image for chunk {i} (is it {} bytes?)",
                        h.base_size
                    )
                })?;
        }
        let data = decode_frame(&frame, reference, c.size as usize)
            .with_context(|| format!("delta chunk {i}"))?;
        if sha_hex(&data) != c.sha256 {
            crate::bail!(
                "delta chunk {i} does not rebuild what was published: the base is not the root image {} the delta was made from",
                h.base_sha256
            );
        }
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
/// OUT from the root image BASE (a file or the running slot's block device)
/// and DELTA. OUT appears only complete: the bytes go to `OUT.part`, renamed
/// once every chunk and the whole file's SHA-256 matched.
pub fn apply_files(
    base: &std::path::Path,
    delta: &std::path::Path,
    out: &std::path::Path,
) -> Result<Header> {
    let mut b = std::fs::File::open(base).with_context(|| base.display().to_string())?;
    let mut d = std::io::BufReader::new(
        std::fs::File::open(delta).with_context(|| delta.display().to_string())?,
    );
    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let f = std::fs::File::create(&part).with_context(|| part.display().to_string())?;
    let mut w = std::io::BufWriter::new(f);
    let r = apply(&mut b, &mut d, &mut w)
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
