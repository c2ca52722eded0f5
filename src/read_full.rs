//! Filling a buffer from a reader: short reads are normal (pipes,
//! decompressors, block devices) and an interrupted read is retried, so
//! callers see either a full buffer, the end of the input, or a real error.

use std::io::{ErrorKind, Read};

/// Calls `read(rest, filled)` until `buf` is full or it returns 0 (the end),
/// retrying interrupted reads; returns how many bytes were read.
pub fn fill(
    buf: &mut [u8],
    mut read: impl FnMut(&mut [u8], usize) -> std::io::Result<usize>,
) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match read(&mut buf[n..], n) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// [`fill`] from a [`Read`].
pub fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    fill(buf, |b, _| r.read(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One byte per call, an interruption before each.
    struct Stutter {
        data: Vec<u8>,
        interrupt: bool,
    }

    impl Read for Stutter {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(ErrorKind::Interrupted.into());
            }
            if self.data.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.data.remove(0);
            Ok(1)
        }
    }

    #[test]
    fn short_and_interrupted_reads_fill_the_buffer() {
        let mut r = Stutter {
            data: b"hello world".to_vec(),
            interrupt: false,
        };
        let mut buf = [0u8; 5];
        assert_eq!(read_full(&mut r, &mut buf).unwrap(), 5);
        assert_eq!(&buf, b"hello");
        let mut rest = [0u8; 16];
        assert_eq!(read_full(&mut r, &mut rest).unwrap(), 6);
        assert_eq!(&rest[..6], b" world");
    }
}
