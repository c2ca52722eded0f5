//! Reading one file from the FAT file system of the boot partition, in
//! process and read-only, with the checked reader in [`crate::fat`]: the
//! agent reads node.toml this way before systemd mounts the partition, and
//! the builder's `inspect` reads a flashed card or a compressed image the
//! same way.

use crate::error::{Context, Result};
use std::io::{self, Read, Seek, SeekFrom, Write};

/// The most node.toml may hold: a few users with keys and a K3s table are a
/// few KiB, and the file is read whole into memory, so anything near the
/// size of the boot partition is refused rather than read.
pub use crate::fat::MAX_FILE;

/// `<rel>` from the FAT file system at bytes `start..start + len` of `disk`
/// (at most [`MAX_FILE`] bytes); `None` when it is absent.
pub fn read_from_partition<D: Read + Seek>(
    disk: &mut D,
    start: u64,
    len: u64,
    rel: &str,
) -> Result<Option<String>> {
    let mut part = ReadOnlySlice {
        disk,
        start,
        len,
        pos: 0,
    };
    match crate::fat::read_file(&mut part, len, rel)
        .with_context(|| format!("reading {rel} from its FAT file system"))?
    {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| crate::error::Error::msg(format!("{rel} is not UTF-8 text"))),
    }
}

/// All of `r` as UTF-8 text, refusing more than [`MAX_FILE`] bytes with an
/// error naming `what`.
pub fn read_bounded<R: Read>(r: &mut R, what: &str) -> Result<String> {
    let mut bytes = Vec::new();
    r.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what}"))?;
    if bytes.len() as u64 > MAX_FILE {
        crate::bail!(
            "{what} is larger than {} KiB: refused (a node file is a few KiB)",
            MAX_FILE / 1024
        );
    }
    String::from_utf8(bytes)
        .map_err(|_| crate::error::Error::msg(format!("{what} is not UTF-8 text")))
}

/// One partition of a disk opened read-only, as the file system library's
/// disk: reads stay inside the partition, writes are refused.
struct ReadOnlySlice<'a, D> {
    disk: &'a mut D,
    start: u64,
    len: u64,
    pos: u64,
}

impl<D: Read + Seek> Read for ReadOnlySlice<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        self.disk.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.disk.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<D> Seek for ReadOnlySlice<'_, D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the partition")
        })?;
        Ok(self.pos)
    }
}

impl<D> Write for ReadOnlySlice<'_, D> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the boot partition is read here, never written",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn writes_are_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("d"), vec![0u8; 4096]).unwrap();
        let mut d = File::open(t.path().join("d")).unwrap();
        let mut s = ReadOnlySlice {
            disk: &mut d,
            start: 1024,
            len: 1024,
            pos: 0,
        };
        assert_eq!(
            s.write(b"x").unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        // Reads stop at the partition's end.
        s.seek(SeekFrom::End(-10)).unwrap();
        let mut buf = [1u8; 64];
        assert_eq!(s.read(&mut buf).unwrap(), 10);
        assert_eq!(s.read(&mut buf).unwrap(), 0);
    }
}
