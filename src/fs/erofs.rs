//! The read-only root: EROFS from the staged tree.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd::{self, Cmd};
use crate::config::schema::RootCompression;
use crate::ids::Uuid;

/// Makes `out` from `tree`. Every timestamp becomes `epoch` and the UUID is
/// fixed, so the same tree gives the same bytes.
pub fn make(
    tree: &Path,
    out: &Path,
    uuid: Uuid,
    epoch: u64,
    compression: RootCompression,
) -> Result<u64> {
    let mut c = Cmd::new(cmd::MKFS_EROFS).args(compression.mkfs_args());
    if let Some(name) = compression.compressor() {
        check_compressor(name)?;
        let hints = out.with_extension("compress-hints");
        std::fs::write(&hints, compress_hints(tree)?)
            .with_context(|| format!("cannot write {}", hints.display()))?;
        c = c.arg(format!("--compress-hints={}", hints.display()));
    }
    c.arg(format!("-T{epoch}"))
        .arg(format!("-U{uuid}"))
        .arg("--quiet")
        .arg(out)
        .arg(tree)
        .run()
        .context("making the EROFS root filesystem failed")?;
    let _ = std::fs::remove_file(out.with_extension("compress-hints"));
    Ok(std::fs::metadata(out)?.len())
}

/// File names that are compressed already (kernel modules are .ko.xz).
const COMPRESSED_SUFFIXES: &str =
    r"\.(xz|zst|gz|tgz|bz2|lz4|lzma|zip|jar|png|jpe?g|gif|webp|woff2?)$";
/// Files at least this big are sampled for compressibility.
const SAMPLE_FROM: u64 = 1 << 20;

/// mkfs.erofs' `--compress-hints` file: a physical cluster size of 0 stores a
/// file uncompressed. Already-compressed data (kernel modules, image
/// archives with gzip/zstd layers) does not shrink, and erofs-utils 1.5
/// spends minutes failing to compress it with lz4hc (measured: 64 MiB of
/// random bytes took 96 s with lz4hc, 0.4 s stored). So: every file whose
/// name says it is compressed, and every big file whose samples do not
/// compress, is stored as is. Paths are relative to the tree, without a
/// leading slash, as mkfs.erofs matches them.
pub fn compress_hints(tree: &Path) -> Result<String> {
    let suffix = regex_lite_suffix();
    let mut out = format!("0 {COMPRESSED_SUFFIXES}\n");
    let mut big = Vec::new();
    big_files(tree, tree, &mut big)?;
    big.sort();
    for rel in big {
        if suffix(&rel) {
            continue;
        }
        if !compressible(&tree.join(&rel))? {
            out.push_str(&format!("0 ^{}$\n", ere_escape(&rel)));
        }
    }
    Ok(out)
}

/// The same test as COMPRESSED_SUFFIXES, in Rust (to skip sampling those).
fn regex_lite_suffix() -> impl Fn(&str) -> bool {
    const EXT: &[&str] = &[
        "xz", "zst", "gz", "tgz", "bz2", "lz4", "lzma", "zip", "jar", "png", "jpg", "jpeg", "gif",
        "webp", "woff", "woff2",
    ];
    |p: &str| p.rsplit_once('.').is_some_and(|(_, e)| EXT.contains(&e))
}

fn big_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            big_files(root, &e.path(), out)?;
        } else if ft.is_file() && e.metadata()?.len() >= SAMPLE_FROM {
            if let Some(rel) = e.path().strip_prefix(root)?.to_str() {
                out.push(rel.to_string());
            }
        }
    }
    Ok(())
}

/// Whether seven 64 KiB samples from the inside of the file (an archive's
/// headers and trailing zero blocks compress even when its payload does
/// not) shrink by at least 10% under fast zstd.
fn compressible(path: &Path) -> Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    const SAMPLE: u64 = 64 * 1024;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let len = f.metadata()?.len();
    let (mut raw, mut packed) = (0usize, 0usize);
    for i in 1..8 {
        let mut buf = Vec::with_capacity(SAMPLE as usize);
        f.seek(SeekFrom::Start(len / 8 * i))?;
        (&mut f).take(SAMPLE).read_to_end(&mut buf)?;
        raw += buf.len();
        packed += zstd::bulk::compress(&buf, 1)?.len();
    }
    Ok(packed * 100 < raw * 90)
}

/// Escapes a path for a POSIX extended regular expression.
fn ere_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if ".[]{}()\\*+?^$|".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Fails with one clear message when this host's mkfs.erofs lacks the
/// compressor (Debian bookworm's erofs-utils 1.5 has lz4 and lz4hc only).
fn check_compressor(name: &str) -> Result<()> {
    let out = std::process::Command::new(cmd::MKFS_EROFS.name)
        .arg("--help")
        .output()
        .context("cannot run mkfs.erofs --help")?;
    let help = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(list) = available_compressors(&help) {
        anyhow::ensure!(
            list.iter().any(|c| c == name),
            "image.root_compression = \"{name}\": this host's mkfs.erofs cannot make it \
             (available: {}); install an erofs-utils built with {name} or choose another",
            list.join(", ")
        );
    }
    Ok(())
}

/// The compressor names after "Available compressors are:" in mkfs.erofs'
/// help; `None` when the help does not say (then mkfs.erofs itself decides).
fn available_compressors(help: &str) -> Option<Vec<String>> {
    let (_, rest) = help.split_once("Available compressors are:")?;
    Some(
        rest.split(|c: char| c == ',' || c.is_whitespace())
            .map(|w| w.split('[').next().unwrap_or(w))
            .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric()))
            .map(str::to_string)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn hints_store_compressed_and_incompressible_files_as_is() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("var/lib/images");
        std::fs::create_dir_all(&d).unwrap();
        // Pseudo-random bytes (xorshift): incompressible, no extension hint.
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let noise: Vec<u8> = (0..2 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut tar = vec![b'{'; 256 * 1024];
        tar.extend_from_slice(&noise);
        tar.extend(std::iter::repeat_n(0u8, 128 * 1024));
        std::fs::write(d.join("app (v1).tar"), &tar).unwrap();
        std::fs::write(d.join("text.tar"), vec![b'a'; 2 << 20]).unwrap();
        std::fs::write(d.join("small.bin"), &noise[..1000]).unwrap();
        let h = super::compress_hints(t.path()).unwrap();
        let lines: Vec<&str> = h.lines().collect();
        assert_eq!(lines[0], format!("0 {}", super::COMPRESSED_SUFFIXES));
        assert_eq!(lines[1], r"0 ^var/lib/images/app \(v1\)\.tar$");
        assert_eq!(lines.len(), 2, "{h}");
    }

    #[test]
    fn compressor_list_from_help() {
        let v15 = "usage: ...\n --quiet  quiet\n\nAvailable compressors are: lz4hc, lz4\nmkfs.erofs 1.5\n";
        let l = super::available_compressors(v15).unwrap();
        assert!(l.contains(&"lz4hc".to_string()) && !l.contains(&"lzma".to_string()));
        assert!(super::available_compressors("usage only").is_none());
    }
}
