//! Compressed copies of the raw image: zstd (fast, for development) and xz
//! (smaller, for releases), both multithreaded and streaming with a 1 MiB
//! buffer so memory stays bounded whatever the image size.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ArtifactError, AtomicOutput, Result, io_err};

const BUF: usize = 1024 * 1024;
const ZSTD_LEVEL: i32 = 3;
const XZ_PRESET: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Zstd,
    Xz,
}

impl Compression {
    /// File-name extension appended to `.img` (without the dot).
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Zstd => Some("zst"),
            Compression::Xz => Some("xz"),
        }
    }
}

fn threads() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Compresses `image` into `out` (written atomically: `out` appears only when
/// complete). `progress` is called with the cumulative number of input bytes
/// read. With [`Compression::None`] the image is copied as is.
pub fn compress(image: &Path, out: &Path, kind: Compression, progress: &dyn Fn(u64)) -> Result<()> {
    let mut input = File::open(image).map_err(io_err("open image to compress", image))?;
    let atomic = AtomicOutput::create(out)?;
    let writer =
        BufWriter::with_capacity(BUF, atomic.file().try_clone().map_err(io_err("open", out))?);

    match kind {
        Compression::None => {
            let mut w = writer;
            pump(&mut input, image, &mut w, out, progress)?;
            w.flush().map_err(io_err("write", out))?;
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::Encoder::new(writer, ZSTD_LEVEL)
                .map_err(io_err("start zstd compression into", out))?;
            enc.multithread(threads())
                .map_err(io_err("enable zstd multithreading for", out))?;
            // A content checksum lets `zstd -t` / the decoder detect corruption.
            enc.include_checksum(true)
                .map_err(io_err("enable zstd checksum for", out))?;
            pump(&mut input, image, &mut enc, out, progress)?;
            let mut w = enc.finish().map_err(io_err("finish zstd stream", out))?;
            w.flush().map_err(io_err("write", out))?;
        }
        Compression::Xz => {
            let stream = liblzma::stream::MtStreamBuilder::new()
                .preset(XZ_PRESET)
                .threads(threads())
                .check(liblzma::stream::Check::Crc64)
                .encoder()
                .map_err(|e| ArtifactError::Invalid {
                    op: "start multithreaded xz compression into",
                    path: out.to_path_buf(),
                    msg: e.to_string(),
                })?;
            let mut enc = liblzma::write::XzEncoder::new_stream(writer, stream);
            pump(&mut input, image, &mut enc, out, progress)?;
            let mut w = enc.finish().map_err(io_err("finish xz stream", out))?;
            w.flush().map_err(io_err("write", out))?;
        }
    }
    atomic.commit()
}

/// Copies `r` to `w` through a 1 MiB buffer, reporting progress.
fn pump(
    r: &mut File,
    rpath: &Path,
    w: &mut impl Write,
    wpath: &Path,
    progress: &dyn Fn(u64),
) -> Result<()> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read image", rpath)(e).into()),
        };
        w.write_all(&buf[..n])
            .map_err(io_err("write compressed", wpath))?;
        total += n as u64;
        progress(total);
    }
    Ok(())
}

/// Opens `path` for reading, decompressing by extension: `.zst` (zstd), `.xz`
/// (xz, concatenated streams allowed), anything else is read as is.
pub fn decompressing_reader(path: &Path) -> Result<Box<dyn Read>> {
    let f = File::open(path).map_err(io_err("open", path))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    Ok(match ext {
        "zst" => Box::new(
            zstd::stream::Decoder::new(f).map_err(io_err("start zstd decompression of", path))?,
        ),
        "xz" => Box::new(liblzma::read::XzDecoder::new_multi_decoder(f)),
        _ => Box::new(BufReader::with_capacity(BUF, f)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_and_extensions() {
        #[derive(Deserialize, Serialize)]
        struct T {
            c: Compression,
        }
        for (s, c, e) in [
            ("none", Compression::None, None),
            ("zstd", Compression::Zstd, Some("zst")),
            ("xz", Compression::Xz, Some("xz")),
        ] {
            let t: T = toml::from_str(&format!("c = \"{s}\"")).unwrap();
            assert_eq!(t.c, c);
            assert_eq!(c.extension(), e);
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{s}\""));
        }
        assert!(toml::from_str::<T>("c = \"gzip\"").is_err());
    }
}
