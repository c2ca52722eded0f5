//! Writes an image's mapped ranges to a target and reads them back.
//!
//! A reader thread decompresses (or reads) the image and hashes each range
//! while the calling thread writes, so decompression, hashing and the device's
//! writes overlap. Positional writes only: the target is never grown past
//! what the image needs.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use super::FlashError;
use crate::io_error::{IoError, io_err};
use crate::read_full::{fill, read_full};

/// Read/write granularity.
pub const CHUNK: usize = 4 * 1024 * 1024;

/// Test-only fault injection: after writing, flip the byte at this target
/// offset (decimal) before the sync, so the verify pass must catch it.
pub const CORRUPT_AT_ENV: &str = "EDGEIMG_FLASH_CORRUPT_AT";

/// One range to write: bytes `[start, end)` of the image; `end == u64::MAX`
/// means "to the end of the image" (no bmap). `blocks` is the bmap's block
/// range, for messages.
#[derive(Debug, Clone)]
pub struct Range {
    pub start: u64,
    pub end: u64,
    pub blocks: Option<(u64, u64)>,
    pub sha256: Option<String>,
}

impl Range {
    pub fn describe(&self) -> String {
        match self.blocks {
            Some((f, l)) if f == l => format!("bytes {}..{} (block {f})", self.start, self.end),
            Some((f, l)) => format!("bytes {}..{} (blocks {f}-{l})", self.start, self.end),
            None => format!("bytes {}..{}", self.start, self.end),
        }
    }
}

/// What was written: every range with its true end and the SHA-256 of the
/// image data written there (the verify pass compares against these).
#[derive(Debug, Clone)]
pub struct Written {
    pub ranges: Vec<Range>,
    pub bytes: u64,
    /// Where the image ended (the image size).
    pub image_end: u64,
}

enum Msg {
    /// Image bytes at an offset, in a pooled buffer.
    Data(u64, Vec<u8>),
    /// Range `i` ended at this image offset.
    RangeEnd(usize, u64),
    Err(FlashError),
}

/// Buffers in flight: bounds memory (POOL x CHUNK) and avoids faulting in
/// fresh pages for every chunk.
const POOL: usize = 6;

fn pool() -> (mpsc::SyncSender<Vec<u8>>, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::sync_channel(POOL);
    for _ in 0..POOL {
        tx.send(vec![0u8; CHUNK]).expect("pool has room");
    }
    (tx, rx)
}

/// The reader thread: streams `image` (decompressing by extension), skipping
/// unmapped bytes.
fn read_ranges(
    image: PathBuf,
    ranges: Vec<Range>,
    tx: mpsc::SyncSender<Msg>,
    free: mpsc::Receiver<Vec<u8>>,
) {
    let plain = !matches!(
        image.extension().and_then(|e| e.to_str()),
        Some("zst" | "xz")
    );
    let run = || -> Result<(), FlashError> {
        let mut plain_file = None;
        let mut stream = None;
        if plain {
            plain_file = Some(File::open(&image).map_err(io_err("open image", &image))?);
        } else {
            stream = Some(
                crate::artifact::decompressing_reader(&image)
                    .map_err(|e| FlashError::Image(e.to_string()))?,
            );
        }
        let mut pos = 0u64;
        let mut skip = vec![0u8; 1 << 20];
        for (i, r) in ranges.iter().enumerate() {
            // Skip to the range's start (streams cannot seek).
            if let Some(s) = stream.as_mut() {
                while pos < r.start {
                    let n = ((r.start - pos) as usize).min(skip.len());
                    let got = read_full(s.as_mut(), &mut skip[..n])
                        .map_err(io_err("decompress image", &image))?;
                    if got == 0 {
                        return Err(FlashError::Truncated {
                            image: image.clone(),
                            at: pos,
                            wanted: r.start,
                        });
                    }
                    pos += got as u64;
                }
            }
            pos = r.start;
            while pos < r.end {
                let n = ((r.end - pos).min(CHUNK as u64)) as usize;
                let Ok(mut buf) = free.recv() else {
                    return Ok(());
                };
                buf.resize(n, 0);
                let got = match (&plain_file, stream.as_mut()) {
                    (Some(f), _) => {
                        read_full_at(f, &mut buf, pos).map_err(io_err("read image", &image))?
                    }
                    (None, Some(s)) => read_full(s.as_mut(), &mut buf)
                        .map_err(io_err("decompress image", &image))?,
                    _ => unreachable!(),
                };
                buf.truncate(got);
                if got == 0 {
                    if r.end == u64::MAX {
                        break;
                    }
                    return Err(FlashError::Truncated {
                        image: image.clone(),
                        at: pos,
                        wanted: r.end,
                    });
                }
                let off = pos;
                pos += got as u64;
                if tx.send(Msg::Data(off, buf)).is_err() {
                    return Ok(()); // the writer stopped (its error is reported)
                }
            }
            if tx.send(Msg::RangeEnd(i, pos)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        let _ = tx.send(Msg::Err(e));
    }
}

fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    fill(buf, |b, n| f.read_at(b, off + n as u64))
}

/// What the hasher thread gets: data to hash (buffer returned to the pool
/// afterwards) or the end of a range.
enum HashMsg {
    Data(Vec<u8>),
    End(usize),
}

/// Hashes ranges in order on its own thread; returns `(range index, sha256)`
/// for each range as it ends.
fn hasher(
    rx: mpsc::Receiver<HashMsg>,
    free: mpsc::SyncSender<Vec<u8>>,
    done: mpsc::Sender<(usize, String)>,
) {
    let mut h = Sha256::new();
    for m in rx {
        match m {
            HashMsg::Data(b) => {
                h.update(&b);
                let _ = free.send(b);
            }
            HashMsg::End(i) => {
                let _ = done.send((i, hex::encode(std::mem::take(&mut h).finalize())));
            }
        }
    }
}

/// Starts writeback of what was written so far, so the final sync is short
/// and a device's dirty pages do not pile up (Linux sync_file_range).
fn start_writeback(target: &File, from: u64, to: u64) {
    // SAFETY: advisory syscall on our own fd.
    unsafe {
        libc::sync_file_range(
            target.as_raw_fd(),
            from as i64,
            (to - from) as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

/// Writes `ranges` of `image` to `target`. With `skip_zeros` (a freshly
/// created file target, which reads as zeros already) all-zero chunks are not
/// written, keeping the file sparse. `progress` gets the bytes written so far.
///
/// Three threads: the reader (reads/decompresses), this one (writes), the
/// hasher (SHA-256 of each range, checked against the bmap).
pub fn write(
    image: &Path,
    ranges: Vec<Range>,
    target: &File,
    target_path: &Path,
    skip_zeros: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Written, FlashError> {
    let (tx, rx) = mpsc::sync_channel::<Msg>(POOL);
    let (free_tx, free_rx) = pool();
    let (htx, hrx) = mpsc::channel::<HashMsg>();
    let (dtx, drx) = mpsc::channel::<(usize, String)>();
    let img = image.to_path_buf();
    let rs = ranges.clone();
    let reader = std::thread::spawn(move || read_ranges(img, rs, tx, free_rx));
    let hash = std::thread::spawn(move || hasher(hrx, free_tx, dtx));
    let mut out = ranges;
    let mut bytes = 0u64;
    let mut image_end = 0u64;
    let mut synced_to = 0u64;
    const WRITEBACK: u64 = 64 << 20;
    let check = |out: &mut Vec<Range>, i: usize, sum: String| -> Result<(), FlashError> {
        let r = &mut out[i];
        if let Some(want) = &r.sha256
            && *want != sum
        {
            return Err(FlashError::ImageMismatch {
                image: image.into(),
                range: r.describe(),
                want: want.clone(),
                got: sum,
            });
        }
        r.sha256 = Some(sum);
        Ok(())
    };
    let result = (|| {
        for msg in rx.iter() {
            match msg {
                Msg::Data(off, buf) => {
                    if !(skip_zeros && buf.iter().all(|&b| b == 0)) {
                        target.write_all_at(&buf, off).map_err(|source| {
                            match source.raw_os_error() {
                                Some(libc::ENOSPC) | Some(libc::EFBIG) => FlashError::TargetFull {
                                    target: target_path.into(),
                                    at: off,
                                },
                                _ => IoError::new("write to", target_path, source).into(),
                            }
                        })?;
                    }
                    let end = off + buf.len() as u64;
                    bytes += buf.len() as u64;
                    image_end = image_end.max(end);
                    let _ = htx.send(HashMsg::Data(buf));
                    if end >= synced_to + WRITEBACK {
                        start_writeback(target, synced_to, end);
                        synced_to = end;
                    }
                    progress(bytes);
                }
                Msg::RangeEnd(i, end) => {
                    out[i].end = end;
                    let _ = htx.send(HashMsg::End(i));
                }
                Msg::Err(e) => return Err(e),
            }
            while let Ok((i, sum)) = drx.try_recv() {
                check(&mut out, i, sum)?;
            }
        }
        Ok(())
    })();
    drop(rx);
    drop(htx);
    let _ = reader.join();
    let _ = hash.join();
    result?;
    for (i, sum) in drx.try_iter() {
        check(&mut out, i, sum)?;
    }
    Ok(Written {
        ranges: out,
        bytes,
        image_end,
    })
}

/// Fault injection for tests: flips the byte at `EDGEIMG_FLASH_CORRUPT_AT`.
pub fn inject_fault(target: &File, target_path: &Path) -> Result<Option<u64>, FlashError> {
    let Ok(v) = std::env::var(CORRUPT_AT_ENV) else {
        return Ok(None);
    };
    let off: u64 = v
        .trim()
        .parse()
        .map_err(|_| FlashError::Image(format!("{CORRUPT_AT_ENV}={v:?} is not a byte offset")))?;
    let mut b = [0u8; 1];
    target
        .read_exact_at(&mut b, off)
        .map_err(io_err("read (fault injection)", target_path))?;
    b[0] ^= 0xff;
    target
        .write_all_at(&b, off)
        .map_err(io_err("write (fault injection)", target_path))?;
    Ok(Some(off))
}

/// Flushes the target to the medium and, for a block device, drops its cached
/// pages so the verify pass reads the medium rather than memory.
pub fn sync(target: &File, target_path: &Path, drop_cache: bool) -> Result<(), FlashError> {
    target.sync_all().map_err(io_err("sync", target_path))?;
    if drop_cache {
        // SAFETY: advisory syscall on our own fd.
        unsafe { libc::posix_fadvise(target.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    Ok(())
}

/// A range whose read-back did not match.
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub range: String,
    pub want: String,
    pub got: String,
}

/// Reads every written range back from `target` and compares its SHA-256.
/// Two threads: one reads, this one hashes.
pub fn verify(
    target: &File,
    target_path: &Path,
    written: &Written,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<Mismatch>, FlashError> {
    let f = target.try_clone().map_err(io_err("reopen", target_path))?;
    let ranges = written.ranges.clone();
    let (tx, rx) = mpsc::sync_channel::<(usize, Option<Vec<u8>>)>(POOL);
    let (free_tx, free_rx) = pool();
    let path = target_path.to_path_buf();
    let reader = std::thread::spawn(move || -> Result<(), FlashError> {
        for (i, r) in ranges.iter().enumerate() {
            let mut pos = r.start;
            while pos < r.end {
                let n = ((r.end - pos).min(CHUNK as u64)) as usize;
                let Ok(mut buf) = free_rx.recv() else {
                    return Ok(());
                };
                buf.resize(n, 0);
                let got = read_full_at(&f, &mut buf, pos).map_err(io_err("read back", &path))?;
                buf.truncate(got);
                if got == 0 {
                    break; // short target: the hash will not match
                }
                pos += got as u64;
                if tx.send((i, Some(buf))).is_err() {
                    return Ok(());
                }
            }
            if tx.send((i, None)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    });
    let mut mismatches = Vec::new();
    let mut h = Sha256::new();
    let mut done = 0u64;
    for (i, buf) in rx.iter() {
        match buf {
            Some(b) => {
                h.update(&b);
                done += b.len() as u64;
                let _ = free_tx.send(b);
                progress(done);
            }
            None => {
                let got = hex::encode(std::mem::take(&mut h).finalize());
                let r = &written.ranges[i];
                let want = r.sha256.clone().unwrap_or_default();
                if got != want {
                    mismatches.push(Mismatch {
                        range: r.describe(),
                        want,
                        got,
                    });
                }
            }
        }
    }
    drop(free_tx);
    reader.join().expect("verify reader thread")?;
    Ok(mismatches)
}
