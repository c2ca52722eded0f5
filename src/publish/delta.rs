//! Making delta payloads (the format and how a device applies one are the
//! contract's [`edgeimg_contract::update::delta`], re-exported here, so the
//! host tests apply deltas with the device's own code).
//!
//! A chunk of the new root image is compressed with zstd against a window of
//! the old root image around the same offset ([`MARGIN`] either side), as a
//! "ref prefix", with long-distance matching, as `zstd --patch-from` does:
//! without it the match finder of the level misses most of a 20 MiB
//! reference. Every other chunk (the signed header, the kernel, the initrd)
//! is plain zstd.
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
    CHUNK, Chunk, Header, MAGIC, MARGIN, MAX_HEADER, MAX_REF, VERSION, WINDOW_LOG, apply,
    read_header,
};

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
