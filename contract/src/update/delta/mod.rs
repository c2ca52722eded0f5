//! Delta payloads: a new update file rebuilt from the release a device
//! already runs (its root image and its boot payloads).
//!
//! A delta is a list of chunks whose outputs, back to back, are the new
//! update file. A chunk is either
//! - a zstd frame of at most [`CHUNK`] output bytes, compressed with a
//!   window of one base payload (the same-named payload of the base release:
//!   its root image, kernel, initrd or Pi boot file) around the same offset
//!   as its reference (zstd's "ref prefix", what `zstd --patch-from` does for
//!   a whole file), or with no reference (plain zstd: the signed header, a
//!   payload the base has no counterpart of); or
//! - a copy: at most [`CHUNK`] bytes of a base payload taken as they are,
//!   with no frame, for a payload that did not change (typically the kernel
//!   and initrd). It costs the delta the payload's name, size and SHA-256
//!   once, and an offset, size and SHA-256 per chunk.
//!
//! Every chunk carries the SHA-256 of its output, the whole output the
//! SHA-256 of the full update file, and every base payload its own size and
//! SHA-256.
//!
//! Applying holds one reference window ([`MAX_REF`]) and one chunk at a
//! time, whatever the image size, writes a chunk only once its hash
//! matched, and decodes with `ruzstd`
//! (pure Rust, so the static agent needs no C toolchain). Base payloads other
//! than the root image are hashed before anything is written, so a device
//! whose boot files are not the base's refuses the delta naming the file;
//! the root image (hundreds of MB, usually the running slot itself) is
//! checked chunk by chunk as it is read.
//!
//! ```text
//! offset 0   8 bytes   magic "EDGEDLT\0"
//!        8   u32 LE    format version 2
//!       12   u32 LE    header length H (at most 1 MiB)
//!       16   H bytes   header: JSON (see [`Header`])
//!     16+H   the frames, back to back, in chunk order (copies have none)
//! ```
//!
//! Version 1 referenced the root image only and carried the boot payloads
//! whole; it is refused by name, like any other version: the device then
//! takes the full update.
//!
//! The delta file needs no signature of its own: the repository's signed
//! metadata carries its length and hash, and the output is the signed update
//! file, checked again (signature and every payload's SHA-256) by `update
//! apply` before anything is installed.

mod apply;
mod base;
mod decode;

pub use apply::{apply, apply_files};
pub use base::{Base, DirBase, Source, UpdateBase};

use crate::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Read;

pub const MAGIC: &[u8; 8] = b"EDGEDLT\0";
pub const VERSION: u32 = 2;
pub const MAX_HEADER: u32 = 1024 * 1024;
/// Output bytes per frame chunk.
pub const CHUNK: u64 = 4 << 20;
/// Base bytes on either side of a chunk's own offset in its reference.
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
    /// The base release's payloads the chunks read, by update payload name.
    pub base: Vec<BasePayload>,
    /// The update file it produces.
    pub target_size: u64,
    pub target_sha256: String,
    pub chunks: Vec<Chunk>,
}

/// One payload of the base release: what the device must hold, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasePayload {
    /// Its payload name in the base update (`root.erofs`, `vmlinuz`,
    /// `boot/<path>`): what the device locates it by.
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    /// Output bytes.
    pub size: u64,
    /// Bytes of its zstd frame in the delta file; 0 for a copy.
    pub frame: u64,
    pub sha256: String,
    /// Index into [`Header::base`] of the payload it reads; none for a
    /// plain frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<usize>,
    /// The bytes of that payload it reads: `[ref_offset, ref_offset+ref_size)`
    /// (a frame's reference window, or a copy's bytes: then `ref_size` is
    /// `size`); 0 and 0 for none.
    pub ref_offset: u64,
    pub ref_size: u64,
}

impl Chunk {
    pub fn is_copy(&self) -> bool {
        self.frame == 0
    }
}

/// Whether a device keeps payload `name` of the release it runs byte for
/// byte where it can read it back (so a delta may use it as a base). The
/// Pi's `cmdline.txt` is rewritten for the device and `config.txt` gains the
/// slot's `os_prefix`: those two never are.
pub fn kept_verbatim(name: &str) -> bool {
    !matches!(name, "boot/config.txt" | "boot/cmdline.txt")
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && crate::hex::unhex(s).is_some()
}

fn check_base(h: &Header) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, b) in h.base.iter().enumerate() {
        crate::update::format::check_payload_name(&b.name)
            .with_context(|| format!("delta base payload {i}"))?;
        if !kept_verbatim(&b.name) {
            crate::bail!(
                "delta base payload {:?}: devices rewrite it, it cannot be a base",
                b.name
            );
        }
        if !seen.insert(b.name.as_str()) {
            crate::bail!("delta base payload {:?} appears twice", b.name);
        }
        if !is_sha256_hex(&b.sha256) {
            crate::bail!("delta base payload {:?}: no SHA-256", b.name);
        }
    }
    Ok(())
}

fn check_chunk(h: &Header, i: usize, c: &Chunk) -> Result<()> {
    if !is_sha256_hex(&c.sha256) {
        crate::bail!("delta chunk {i}: no SHA-256");
    }
    let base = match c.from {
        None => None,
        Some(b) => Some(h.base.get(b).ok_or_else(|| {
            Error::msg(format!(
                "delta chunk {i}: base payload {b} does not exist (the delta names {})",
                h.base.len()
            ))
        })?),
    };
    let inside = |b: &BasePayload| {
        c.ref_offset
            .checked_add(c.ref_size)
            .is_some_and(|e| e <= b.size)
    };
    if c.is_copy() {
        let Some(b) = base else {
            crate::bail!("delta chunk {i}: a copy without a base payload");
        };
        if c.size == 0 || c.size > CHUNK || c.ref_size != c.size || !inside(b) {
            crate::bail!(
                "delta chunk {i}: a copy of {} bytes at {} is outside base payload {:?} ({} bytes)",
                c.ref_size,
                c.ref_offset,
                b.name,
                b.size
            );
        }
        return Ok(());
    }
    if c.size == 0 || c.size > CHUNK {
        crate::bail!("delta chunk {i}: size {} is not in 1..={CHUNK}", c.size);
    }
    if c.frame > MAX_FRAME {
        crate::bail!(
            "delta chunk {i}: frame of {} bytes is larger than any chunk needs",
            c.frame
        );
    }
    match base {
        None if c.ref_offset != 0 || c.ref_size != 0 => {
            crate::bail!("delta chunk {i}: its reference is outside the base (no base payload)")
        }
        Some(b) if c.ref_size == 0 || c.ref_size > MAX_REF || !inside(b) => crate::bail!(
            "delta chunk {i}: its reference is outside the base payload {:?} or over {MAX_REF} bytes",
            b.name
        ),
        _ => Ok(()),
    }
}

/// Reads and checks a delta's header: the version, every size bounded,
/// every base payload a plain unique name, every reference inside its base
/// payload, the chunks adding up to the target.
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
        crate::bail!(
            "delta format version {version} is not supported (this reads version {VERSION}): take the full update"
        );
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
    if !is_sha256_hex(&h.target_sha256) {
        crate::bail!("the delta header is not valid: the target SHA-256 is not 64 hex digits");
    }
    check_base(&h)?;
    let mut total = 0u64;
    for (i, c) in h.chunks.iter().enumerate() {
        check_chunk(&h, i, c)?;
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
