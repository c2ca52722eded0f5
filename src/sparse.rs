//! Sparse-file helpers.
//!
//! Disk images are mostly holes: a 4 GiB image may hold a few hundred MiB of
//! data. Everything downstream (bmap, splicing filesystems into the disk image,
//! copying images for `edgeimg run`) asks the kernel where the data is with
//! `lseek(SEEK_DATA)` / `lseek(SEEK_HOLE)` instead of reading gigabytes of zeros,
//! and writes only data so the destination stays sparse.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::io_error::{IoError, io_err};

/// Size of the copy buffer and the granularity at which all-zero data is
/// skipped (kept sparse) when splicing.
pub const CHUNK: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SparseError {
    #[error(transparent)]
    Io(#[from] IoError),
}

pub type Result<T, E = SparseError> = std::result::Result<T, E>;

/// One `lseek` call; `Ok(None)` means ENXIO, i.e. no data (or hole) at or after
/// `offset` — which is how the kernel reports "past the last extent".
fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset exceeds off_t"))?;
    // SAFETY: plain syscall on a file descriptor we borrow for its duration.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// Data extents of `file` as `(offset, len)` pairs, in order, non-overlapping,
/// never extending past the file's length.
///
/// Extents are as fine as the filesystem reports them (its block size); a
/// filesystem without real hole support reports the whole file as one extent,
/// which is correct, just not sparse.
///
/// Note: this moves the file's seek position (lseek is the only interface);
/// callers should use positional I/O (`read_at`) on the same `File`.
pub fn data_extents(file: &File) -> io::Result<Vec<(u64, u64)>> {
    let len = file.metadata()?.len();
    let mut extents = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let data = match seek(file, pos, libc::SEEK_DATA) {
            Ok(Some(d)) => d,
            Ok(None) => break, // only a hole remains up to EOF
            // Filesystems predating SEEK_DATA: treat the rest as data.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && pos == 0 => {
                extents.push((0, len));
                break;
            }
            Err(e) => return Err(e),
        };
        if data >= len {
            break;
        }
        // There is always a virtual hole at EOF, so ENXIO here would only come
        // from a concurrent truncate: clamp to the length we started with.
        let hole = seek(file, data, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        if hole <= data {
            break;
        }
        extents.push((data, hole - data));
        pos = hole;
    }
    Ok(extents)
}

/// Copies the data extents of `src` into `dst` at `dst_offset + extent_offset`.
///
/// Data is moved in 1 MiB chunks and chunks that are entirely zero are not
/// written, so holes stay holes and a filesystem image full of zeroed free space
/// does not inflate the disk image. Precondition: the destination range must
/// read as zeros already (a freshly created sparse disk image), because skipped
/// chunks are not written. If `dst` is shorter than `dst_offset + len(src)` it is
/// extended (sparsely) so the tail of `src` reads back correctly.
///
/// Returns the number of bytes actually written.
pub fn splice_into(src: &Path, dst: &File, dst_offset: u64) -> Result<u64> {
    let src_file = File::open(src).map_err(io_err("open source image", src))?;
    let src_len = src_file
        .metadata()
        .map_err(io_err("stat source image", src))?
        .len();
    let extents = data_extents(&src_file).map_err(io_err("find data extents of", src))?;

    let dst_path = fd_path(dst);
    let end = dst_offset.checked_add(src_len).ok_or_else(|| {
        IoError::new(
            "compute splice end for",
            src,
            io::Error::new(io::ErrorKind::InvalidInput, "offset overflows u64"),
        )
    })?;
    let dst_len = dst
        .metadata()
        .map_err(io_err("stat destination image", &dst_path))?
        .len();
    if dst_len < end {
        dst.set_len(end)
            .map_err(io_err("extend destination image", &dst_path))?;
    }

    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    for (ext_off, ext_len) in extents {
        let mut off = ext_off;
        let ext_end = ext_off + ext_len;
        while off < ext_end {
            let n = ((ext_end - off) as usize).min(CHUNK);
            let chunk = &mut buf[..n];
            src_file
                .read_exact_at(chunk, off)
                .map_err(io_err("read source image", src))?;
            if chunk.iter().any(|&b| b != 0) {
                dst.write_all_at(chunk, dst_offset + off)
                    .map_err(io_err("write destination image", &dst_path))?;
                written += n as u64;
            }
            off += n as u64;
        }
    }
    Ok(written)
}

/// Makes a sparse copy of `src` at `dst` with the same length (replacing `dst`).
pub fn copy_sparse(src: &Path, dst: &Path) -> Result<()> {
    let len = std::fs::metadata(src)
        .map_err(io_err("stat source image", src))?
        .len();
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)
        .map_err(io_err("create sparse copy", dst))?;
    // Truncate-then-set_len yields one big hole, satisfying splice_into's
    // "destination reads as zeros" precondition.
    out.set_len(len).map_err(io_err("size sparse copy", dst))?;
    splice_into(src, &out, 0)?;
    out.sync_all().map_err(io_err("sync sparse copy", dst))?;
    Ok(())
}

/// Best-effort name of an open file for error messages (we are only handed a
/// `&File`).
fn fd_path(f: &File) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .unwrap_or_else(|_| PathBuf::from(format!("<fd {}>", f.as_raw_fd())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_of_sparse_file() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_all_at(b"hello", 4 << 20).unwrap();
        let ext = data_extents(&f).unwrap();
        assert_eq!(ext.len(), 1);
        let (o, l) = ext[0];
        assert!(o <= 4 << 20 && o + l >= (4 << 20) + 5, "{ext:?}");
        // Empty and fully-dense files.
        let e = tempfile::tempfile().unwrap();
        assert!(data_extents(&e).unwrap().is_empty());
        f.set_len(0).unwrap();
        f.write_all_at(&[1u8; 100], 0).unwrap();
        assert_eq!(data_extents(&f).unwrap(), vec![(0, 100)]);
    }
}
