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
    make_labelled(tree, out, uuid, epoch, compression, None)
}

/// [`make`], and with `file_contexts` (an SELinux image) mkfs.erofs labels
/// every file from it (`security.selinux`, replacing any label the tree
/// carries), as root and unprivileged alike.
pub fn make_labelled(
    tree: &Path,
    out: &Path,
    uuid: Uuid,
    epoch: u64,
    compression: RootCompression,
    file_contexts: Option<&Path>,
) -> Result<u64> {
    let mut c = Cmd::new(cmd::MKFS_EROFS).args(compression.mkfs_args());
    if compression.compressor().is_some() {
        MkfsErofs::probe()?.check(compression)?;
        let hints = out.with_extension("compress-hints");
        std::fs::write(&hints, compress_hints(tree)?)
            .with_context(|| format!("cannot write {}", hints.display()))?;
        c = c.arg(format!("--compress-hints={}", hints.display()));
    }
    if let Some(fc) = file_contexts {
        check_file_contexts()?;
        c = c.arg(format!("--file-contexts={}", fc.display()));
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

/// Fails with one clear message when this host's mkfs.erofs cannot label
/// (`--file-contexts` exists only when erofs-utils is built with libselinux).
pub fn check_file_contexts() -> Result<()> {
    if cmd::which(cmd::MKFS_EROFS.name).is_none() {
        return Ok(()); // the tool check names the missing tool and its package
    }
    anyhow::ensure!(
        MkfsErofs::probe()?.file_contexts,
        "[selinux]: this host's mkfs.erofs ({}) has no --file-contexts option, which labels the \
         root; install an erofs-utils built with SELinux support (Debian's erofs-utils is; a \
         self-built one needs libselinux1-dev and ./configure --with-selinux)",
        cmd::which(cmd::MKFS_EROFS.name)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| cmd::MKFS_EROFS.name.into())
    );
    Ok(())
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

/// This host's mkfs.erofs: which erofs-utils it is and what it compresses
/// with (`edgeimg doctor` shows it; builds check it before any long work).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MkfsErofs {
    /// The program that runs (first on PATH, as [`Cmd`] resolves it).
    pub path: std::path::PathBuf,
    /// `None` for older erofs-utils (bookworm's 1.5): they have no `-V`.
    pub version: Option<String>,
    /// Empty when the program does not list them.
    pub compressors: Vec<String>,
    /// Whether it can label files (`--file-contexts`: built with libselinux).
    pub file_contexts: bool,
}

impl MkfsErofs {
    /// Asks the mkfs.erofs on PATH, once per process (a build checks it
    /// before the bootstrap and again when it makes the root): `-V` (recent
    /// erofs-utils print the version and the compressors built in) and
    /// `--help` (options; 1.5 lists its compressors at the end).
    pub fn probe() -> Result<MkfsErofs> {
        static PROBED: std::sync::OnceLock<Result<MkfsErofs, String>> = std::sync::OnceLock::new();
        PROBED
            .get_or_init(|| Self::probe_now().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(anyhow::Error::msg)
    }

    fn probe_now() -> Result<MkfsErofs> {
        let path =
            cmd::which(cmd::MKFS_EROFS.name).ok_or(cmd::CmdError::Missing(cmd::MKFS_EROFS))?;
        let run = |arg: &str| -> Result<(bool, String)> {
            let o = Cmd::new(cmd::MKFS_EROFS).arg(arg).probe()?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            Ok((o.status.success(), text))
        };
        let (ok, text) = run("-V")?;
        let (_, help) = run("--help")?;
        let file_contexts = help.contains("--file-contexts");
        if let (true, Some((version, compressors))) = (ok, parse_version(&text)) {
            return Ok(MkfsErofs {
                path,
                version: Some(version),
                compressors,
                file_contexts,
            });
        }
        Ok(MkfsErofs {
            path,
            version: None,
            compressors: available_compressors(&help).unwrap_or_default(),
            file_contexts,
        })
    }

    /// One line for `edgeimg doctor`: path, version and compressors.
    pub fn describe(&self) -> String {
        format!(
            "{} (erofs-utils {}; compressors: {})",
            self.path.display(),
            self.version
                .as_deref()
                .unwrap_or("of unknown version: no -V"),
            if self.compressors.is_empty() {
                "not listed".to_string()
            } else {
                self.compressors.join(", ")
            }
        )
    }

    /// Fails with one clear message naming the config key when this
    /// mkfs.erofs cannot make `compression` (lzma is a build option of
    /// erofs-utils: Debian enables it from trixie's 1.8 on, bookworm's 1.5
    /// has lz4 and lz4hc only).
    pub fn check(&self, compression: RootCompression) -> Result<()> {
        let Some(name) = compression.compressor() else {
            return Ok(());
        };
        if self.compressors.is_empty() || self.compressors.iter().any(|c| c == name) {
            // An mkfs.erofs that lists nothing decides itself, with its own error.
            return Ok(());
        }
        anyhow::bail!(
            "[image] root_compression = \"{name}\": this host's mkfs.erofs cannot make it \
             ({}); install an erofs-utils built with {name} (Debian trixie's 1.8, or the \
             1.8.6 that .ci/erofs-utils builds into /usr/local) or choose another \
             root_compression",
            self.describe()
        )
    }
}

/// Version and compressors from `mkfs.erofs -V` (erofs-utils 1.8):
/// "mkfs.erofs (erofs-utils) 1.8.6" then "available compressors: lz4, ...".
fn parse_version(text: &str) -> Option<(String, Vec<String>)> {
    let first = text.lines().find(|l| l.contains("mkfs.erofs"))?;
    let version = first.split_whitespace().last()?.to_string();
    if !version.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let compressors = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("available compressors:"))
        .map(split_names)
        .unwrap_or_default();
    Some((version, compressors))
}

/// The compressor names after "Available compressors are:" in mkfs.erofs
/// 1.5's help; `None` when the help does not say.
fn available_compressors(help: &str) -> Option<Vec<String>> {
    let (_, rest) = help.split_once("Available compressors are:")?;
    Some(split_names(rest.lines().next().unwrap_or("")))
}

fn split_names(list: &str) -> Vec<String> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .map(|w| w.split('[').next().unwrap_or(w))
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let l = available_compressors(v15).unwrap();
        assert_eq!(l, ["lz4hc", "lz4"]);
        assert!(available_compressors("usage only").is_none());
    }

    #[test]
    fn version_and_compressors_from_dash_v() {
        // erofs-utils 1.8.6 as .ci/setup builds it.
        let v = "mkfs.erofs (erofs-utils) 1.8.6\navailable compressors: lz4, lz4hc, lzma, deflate, zstd\n";
        let (version, list) = parse_version(v).unwrap();
        assert_eq!(version, "1.8.6");
        assert_eq!(list, ["lz4", "lz4hc", "lzma", "deflate", "zstd"]);
        // 1.5 rejects -V: its usage text is not a version.
        assert!(
            parse_version("mkfs.erofs: invalid option -- 'V'\nusage: [options] FILE DIRECTORY\n")
                .is_none()
        );
    }

    #[test]
    fn missing_compressor_names_the_key_and_the_host_tool() {
        let m = MkfsErofs {
            path: "/usr/bin/mkfs.erofs".into(),
            version: None,
            compressors: vec!["lz4hc".into(), "lz4".into()],
            file_contexts: true,
        };
        m.check(RootCompression::Lz4hc).unwrap();
        m.check(RootCompression::None).unwrap();
        let e = m.check(RootCompression::Lzma).unwrap_err().to_string();
        assert!(
            e.contains("[image] root_compression = \"lzma\"")
                && e.contains("erofs-utils of unknown version: no -V; compressors: lz4hc, lz4")
                && e.contains("/usr/bin/mkfs.erofs"),
            "{e}"
        );
    }
}
