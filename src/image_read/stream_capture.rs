//! Reading a compressed disk image (`.img.zst`, `.img.xz`) as if it were
//! seekable, holding only the bytes a reader actually asks for.
//!
//! A compressed stream cannot seek, and decompressing a whole image to a
//! temporary file to read a few sectors costs the image's full size in disk
//! space and time. Instead a parser (partition table, FAT) runs against a
//! [`Captured`] reader that serves only the ranges captured so far: a read
//! outside them fails and is recorded, the stream is decompressed again
//! keeping those ranges too, and the parser runs again — until it runs without
//! asking for anything new. Each pass stops at the last byte wanted, and the
//! bytes kept are capped ([`MAX_CAPTURED`]), so memory is bounded whatever
//! the image (or a hostile table in it) asks for.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::read_full::read_full;

/// The most bytes kept in memory for one image.
pub const MAX_CAPTURED: u64 = 32 << 20;

/// Reads are captured in whole blocks of this size (fewer, larger ranges).
const BLOCK: u64 = 64 * 1024;

/// The most decompression passes one parse may take.
const MAX_PASSES: usize = 8;

/// Ranges `[start, end)` of the decompressed image, and where a parser
/// tried to read outside them.
#[derive(Debug, Default)]
pub struct Captured {
    chunks: BTreeMap<u64, Vec<u8>>,
    /// The decompressed size, once a pass has reached the end.
    pub len: Option<u64>,
    pos: u64,
    missing: Vec<(u64, u64)>,
}

impl Captured {
    fn kept(&self) -> u64 {
        self.chunks.values().map(|c| c.len() as u64).sum()
    }

    /// The captured chunk holding byte `pos`: chunks may overlap (a 4 KiB
    /// superblock range inside a later 64 KiB block), so not only the one
    /// that starts last before `pos` is looked at.
    fn chunk_at(&self, pos: u64) -> Option<(u64, &Vec<u8>)> {
        self.chunks
            .range(..=pos)
            .rev()
            .find(|(s, c)| pos < **s + c.len() as u64)
            .map(|(s, c)| (*s, c))
    }

    fn covered(&self, start: u64, end: u64) -> bool {
        self.chunk_at(start)
            .is_some_and(|(s, c)| s + c.len() as u64 >= end)
    }

    /// Restarts reading from the beginning, forgetting misses.
    fn rewind(&mut self) {
        self.pos = 0;
        self.missing.clear();
    }
}

impl Read for Captured {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.len.is_some_and(|l| self.pos >= l) {
            return Ok(0);
        }
        if let Some((s, c)) = self.chunk_at(self.pos) {
            let off = (self.pos - s) as usize;
            let n = buf.len().min(c.len() - off);
            buf[..n].copy_from_slice(&c[off..off + n]);
            self.pos += n as u64;
            return Ok(n);
        }
        // Beyond what was captured (or past a stream that ended early).
        if self.len.is_none() || self.pos < self.len.unwrap_or(0) {
            let start = self.pos / BLOCK * BLOCK;
            let end = self
                .pos
                .saturating_add(buf.len() as u64)
                .div_ceil(BLOCK)
                .saturating_mul(BLOCK);
            self.missing.push((start, end));
        }
        Err(io::Error::other("not captured yet"))
    }
}

impl Seek for Captured {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => match self.len {
                Some(l) => l.checked_add_signed(d),
                None => return Err(io::Error::other("image size not known yet")),
            },
        };
        self.pos = pos.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad seek"))?;
        Ok(self.pos)
    }
}

/// Merged, sorted ranges.
fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// What a full pass hands every decompressed byte to.
pub type OnBytes<'a> = dyn FnMut(&[u8]) + 'a;

/// One decompression pass over `image`: keeps the bytes of `want` in `cap`,
/// hands every byte to `each` (when given, the pass reads to the end and
/// records the size); otherwise stops after the last wanted byte.
pub fn pass(
    image: &Path,
    cap: &mut Captured,
    want: &[(u64, u64)],
    mut each: Option<&mut OnBytes<'_>>,
) -> anyhow::Result<()> {
    let want: Vec<(u64, u64)> = merge(want.to_vec())
        .into_iter()
        .filter(|&(s, e)| e > s && !cap.covered(s, e))
        .collect();
    let need: u64 = want.iter().map(|(s, e)| e - s).sum();
    if cap.kept() + need > MAX_CAPTURED {
        anyhow::bail!(
            "{}: reading it would keep more than {} MiB of the decompressed image in memory (a damaged or hostile partition table?)",
            image.display(),
            MAX_CAPTURED >> 20
        );
    }
    let stop = want.last().map_or(0, |r| r.1);
    if each.is_none() && want.is_empty() {
        return Ok(());
    }
    let mut r = crate::artifact::decompressing_reader(image)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let mut kept: Vec<(u64, Vec<u8>)> = want
        .iter()
        .map(|&(s, e)| (s, Vec::with_capacity((e - s) as usize)))
        .collect();
    loop {
        if each.is_none() && pos >= stop {
            break;
        }
        let n = read_full(r.as_mut(), &mut buf)
            .map_err(|e| anyhow::anyhow!("decompressing {}: {e}", image.display()))?;
        if n == 0 {
            cap.len = Some(pos);
            break;
        }
        let (lo, hi) = (pos, pos + n as u64);
        for ((s, e), (_, k)) in want.iter().zip(kept.iter_mut()) {
            let (a, b) = ((*s).max(lo), (*e).min(hi));
            if a < b {
                k.extend_from_slice(&buf[(a - lo) as usize..(b - lo) as usize]);
            }
        }
        if let Some(f) = each.as_mut() {
            f(&buf[..n]);
        }
        pos = hi;
    }
    for (s, k) in kept {
        if !k.is_empty() {
            cap.chunks.insert(s, k);
        }
    }
    Ok(())
}

/// Runs `parse` against the captured image until it reads nothing that was
/// not captured, capturing what it missed between runs.
pub fn parse_with<T>(
    image: &Path,
    cap: &mut Captured,
    mut parse: impl FnMut(&mut Captured) -> T,
) -> anyhow::Result<T> {
    for _ in 0..MAX_PASSES {
        cap.rewind();
        let out = parse(cap);
        if cap.missing.is_empty() {
            return Ok(out);
        }
        let want = std::mem::take(&mut cap.missing);
        // A stream that ends before a wanted byte records its length: the
        // next run reads end-of-file there instead of missing again.
        pass(image, cap, &want, None)?;
    }
    anyhow::bail!(
        "{}: still reading new parts of the image after {MAX_PASSES} passes (a damaged or hostile file system?)",
        image.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parser_gets_what_it_asks_for_and_memory_stays_small() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("x.img");
        let mut data = vec![0u8; 8 << 20];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        std::fs::write(&raw, &data).unwrap();
        let zst = d.path().join("x.img.zst");
        crate::artifact::compress(&raw, &zst, crate::artifact::Compression::Zstd, &|_| {}).unwrap();
        let mut cap = Captured::default();
        let got = parse_with(&zst, &mut cap, |c| {
            let mut a = [0u8; 16];
            c.seek(SeekFrom::Start(5_000_000)).unwrap();
            c.read_exact(&mut a).ok()?;
            let mut b = [0u8; 4];
            c.seek(SeekFrom::Start(100)).unwrap();
            c.read_exact(&mut b).ok()?;
            Some((a, b))
        })
        .unwrap()
        .unwrap();
        assert_eq!(&got.0[..], &data[5_000_000..5_000_016]);
        assert_eq!(&got.1[..], &data[100..104]);
        assert!(cap.kept() <= 2 * BLOCK, "{}", cap.kept());
        // A parser that wants more than the cap is refused, not obeyed.
        let e = parse_with(&zst, &mut Captured::default(), |c| {
            let mut big = vec![0u8; (MAX_CAPTURED + 1) as usize];
            c.read_exact(&mut big).is_ok()
        })
        .unwrap_err();
        assert!(format!("{e}").contains("more than 32 MiB"), "{e}");
    }

    /// A small range captured first (a superblock) and a block around it
    /// later: reads past the small one are served by the block, not missed
    /// again on every pass.
    #[test]
    fn overlapping_captures_serve_reads() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("y.img");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&raw, &data).unwrap();
        let zst = d.path().join("y.img.zst");
        crate::artifact::compress(&raw, &zst, crate::artifact::Compression::Zstd, &|_| {}).unwrap();
        let mut cap = Captured::default();
        pass(&zst, &mut cap, &[(100_000, 104_096)], None).unwrap();
        let got = parse_with(&zst, &mut cap, |c| {
            let mut a = [0u8; 8];
            c.seek(SeekFrom::Start(90_000)).unwrap();
            c.read_exact(&mut a).ok()?;
            let mut b = [0u8; 8];
            c.seek(SeekFrom::Start(110_000)).unwrap();
            c.read_exact(&mut b).ok()?;
            Some((a, b))
        })
        .unwrap()
        .unwrap();
        assert_eq!(&got.0[..], &data[90_000..90_008]);
        assert_eq!(&got.1[..], &data[110_000..110_008]);
    }
}
