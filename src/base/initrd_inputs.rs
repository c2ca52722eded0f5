//! What a base's initrd is made from, so that an incremental base keeps the
//! cached base's initrd (and its module indexes) when a package change
//! leaves those inputs alone. Under qemu-user, making an arm64 initrd is most
//! of an incremental base's time (58 of 87 s, measured), and a package such
//! as `less` or `curl` does not touch it.
//!
//! The inputs, compared before and after the package change:
//! - every path the cached initrd holds, as the root has it (a file's bytes,
//!   a link's target, or that it is absent): the binaries, libraries,
//!   modules, firmware and configuration `mkinitramfs` copied;
//! - the trees its hooks and `depmod` read ([`TREES`]): initramfs-tools'
//!   hooks, scripts and configuration, the module and firmware trees, udev,
//!   modprobe and depmod configuration, fstab/crypttab, the kernel's files in
//!   /boot (not the initrd), and the tools that assemble the archive.
//!
//! An initrd in a format this reader does not know is never kept.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::stage::in_root::InRoot;

/// Trees (or single files) of the root an initrd build reads beyond what it
/// copies. A path here that a package adds, drops or changes means a new
/// initrd.
pub const TREES: &[&str] = &[
    "etc/initramfs-tools",
    "usr/share/initramfs-tools",
    "etc/modprobe.d",
    "usr/lib/modprobe.d",
    "etc/depmod.d",
    "usr/lib/depmod.d",
    "etc/modules",
    "usr/lib/modules",
    "usr/lib/firmware",
    "etc/udev",
    "usr/lib/udev",
    "etc/fstab",
    "etc/crypttab",
    "etc/default",
    "etc/ld.so.conf",
    "etc/ld.so.conf.d",
    "etc/kernel",
    "usr/sbin/mkinitramfs",
    "usr/bin/cpio",
    "usr/bin/zstd",
    "usr/bin/kmod",
    "usr/lib/klibc",
];

/// Paths an initrd holds that `mkinitramfs` writes itself rather than
/// copies from the root: the dynamic linker's cache it makes with
/// `ldconfig -r` from the libraries it copied (which are compared).
const GENERATED: &[&str] = &["etc/ld.so.cache"];

/// newc cpio limits: a name longer than this, or more members, is not an
/// initrd this reader takes (the archive is the base's own, but a bound keeps
/// a damaged one from costing memory).
const MAX_NAME: usize = 4096;
const MAX_MEMBERS: usize = 200_000;

/// The paths an initrd holds (relative, without `./`), or `None` when it is
/// not newc cpio, plain or zstd-compressed, possibly after uncompressed
/// segments (early firmware), as initramfs-tools writes it.
pub fn initrd_paths(initrd: &Path) -> Result<Option<BTreeSet<String>>> {
    let f = File::open(initrd).with_context(|| format!("cannot open {}", initrd.display()))?;
    let mut r = BufReader::new(f);
    let mut paths = BTreeSet::new();
    loop {
        let mut magic = [0u8; 4];
        // Segments are padded with NULs to a 4-byte boundary (or more).
        loop {
            match read_exact_or_eof(&mut r, &mut magic)? {
                false => return Ok(Some(paths)),
                true if magic == [0; 4] => continue,
                true => break,
            }
        }
        if &magic == b"0707" {
            let mut chained = Chained::new(&magic, &mut r);
            if !read_cpio(&mut chained, &mut paths)
                .with_context(|| format!("{}: bad cpio segment", initrd.display()))?
            {
                return Ok(None);
            }
        } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
            // The compressed archive is the last segment.
            let chained = Chained::new(&magic, &mut r);
            let mut z = zstd::stream::read::Decoder::new(chained)?;
            let ok = read_cpio(&mut z, &mut paths)
                .with_context(|| format!("{}: bad zstd cpio segment", initrd.display()))?;
            return Ok(ok.then_some(paths));
        } else {
            return Ok(None);
        }
    }
}

/// Reads one newc archive up to its trailer into `paths`; false when it is
/// not newc.
fn read_cpio(r: &mut impl Read, paths: &mut BTreeSet<String>) -> io::Result<bool> {
    let mut pos: u64 = 0;
    for _ in 0..MAX_MEMBERS {
        let mut header = [0u8; 110];
        r.read_exact(&mut header)?;
        if &header[..6] != b"070701" && &header[..6] != b"070702" {
            return Ok(false);
        }
        let field = |i: usize| -> io::Result<u64> {
            let s = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .map_err(|_| io::Error::other("bad header field"))?;
            u64::from_str_radix(s, 16).map_err(|_| io::Error::other("bad header field"))
        };
        let size = field(6)?;
        let namesize = field(11)? as usize;
        if namesize == 0 || namesize > MAX_NAME {
            return Err(io::Error::other("bad name size"));
        }
        let mut name = vec![0u8; namesize];
        r.read_exact(&mut name)?;
        pos += 110 + namesize as u64;
        skip(r, pos.next_multiple_of(4) - pos)?;
        pos = pos.next_multiple_of(4);
        name.pop();
        let name = String::from_utf8_lossy(&name);
        if name == "TRAILER!!!" {
            return Ok(true);
        }
        let rel = name.trim_start_matches("./").trim_start_matches('/');
        if !rel.is_empty() && rel != "." {
            paths.insert(rel.to_string());
        }
        skip(r, size)?;
        pos += size;
        skip(r, pos.next_multiple_of(4) - pos)?;
        pos = pos.next_multiple_of(4);
    }
    Err(io::Error::other("too many members"))
}

fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied != n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Fills `buf`, or returns false at a clean end of input.
fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 if got == 0 => return Ok(false),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(true)
}

/// Bytes already read, then the rest of the reader.
struct Chained<'a, R> {
    head: Vec<u8>,
    rest: &'a mut R,
}

impl<'a, R: Read> Chained<'a, R> {
    fn new(head: &[u8], rest: &'a mut R) -> Self {
        Chained {
            head: head.to_vec(),
            rest,
        }
    }
}

impl<R: Read> Read for Chained<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.head.is_empty() {
            return self.rest.read(buf);
        }
        let n = self.head.len().min(buf.len());
        buf[..n].copy_from_slice(&self.head[..n]);
        self.head.drain(..n);
        Ok(n)
    }
}

/// How [`Inputs`] records a path the root does not have.
const ABSENT: &str = "-";

/// Each input path and what the root has there (`f <mode> <sha256>`,
/// `l <target>`, `d <mode>`, `-` for absent): equal listings mean an
/// initrd built now would be built from the same inputs.
pub type Inputs = BTreeMap<String, String>;

/// The inputs of an initrd that holds `listed`, as `root` has them now.
pub fn inputs(root: &Path, listed: &BTreeSet<String>) -> Result<Inputs> {
    let tree = InRoot::open(root)?;
    let mut out = Inputs::new();
    for rel in listed.iter().filter(|p| !GENERATED.contains(&p.as_str())) {
        out.insert(rel.clone(), describe(&tree, Path::new(rel))?);
    }
    for top in TREES {
        out.insert(top.to_string(), describe(&tree, Path::new(top))?);
        if let Some(dir) = tree.host_dir(Path::new(top))? {
            walk(&dir, Path::new(top), &mut out)?;
        }
    }
    let boot = Path::new("boot");
    if let Some(dir) = tree.host_dir(boot)? {
        for e in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let name = e?.file_name().to_string_lossy().into_owned();
            if !name.starts_with("initrd.img") {
                let rel = boot.join(&name);
                out.insert(rel.display().to_string(), describe(&tree, &rel)?);
            }
        }
    }
    Ok(out)
}

/// The paths of `listed` the initrd copied from `root`, and their inputs as
/// [`inputs`] records them. A path the root does not have was made by a hook
/// (busybox's applet links, `bin/less` among them), not copied: a file that
/// a package later puts there does not reach the initrd, so it is no input.
pub fn copied_inputs(root: &Path, listed: &BTreeSet<String>) -> Result<(BTreeSet<String>, Inputs)> {
    let mut all = inputs(root, listed)?;
    let copied: BTreeSet<String> = listed
        .iter()
        .filter(|p| all.get(*p).is_some_and(|d| d != ABSENT))
        .cloned()
        .collect();
    all.retain(|k, v| !(v == ABSENT && listed.contains(k)));
    Ok((copied, all))
}

/// The first path whose input differs between two listings.
pub fn first_difference(a: &Inputs, b: &Inputs) -> Option<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().find(|k| a.get(*k) != b.get(*k)).cloned()
}

/// `rel` as [`Inputs`] records it, its last component not followed, the
/// ones before it followed inside the tree.
fn describe(tree: &InRoot, rel: &Path) -> Result<String> {
    let Some(st) = tree
        .lstat(rel)
        .with_context(|| format!("cannot read {}", tree.show(rel).display()))?
    else {
        return Ok(ABSENT.into());
    };
    let mode = st.st_mode & 0o7777;
    Ok(match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => match tree.host_file(rel)? {
            Some(p) => format!("f {mode:o} {}", sha256(&p)?),
            None => ABSENT.into(),
        },
        libc::S_IFDIR => format!("d {mode:o}"),
        libc::S_IFLNK => {
            // The link itself: a host path is safe for readlink (it does not
            // follow the last component) once its parent is the tree's own.
            let parent = rel.parent().unwrap_or(Path::new(""));
            let dir = tree.host_dir(parent)?.with_context(|| {
                format!("{}: parent is not a directory", tree.show(rel).display())
            })?;
            let target = std::fs::read_link(dir.join(rel.file_name().unwrap_or_default()))
                .with_context(|| format!("cannot read link {}", tree.show(rel).display()))?;
            format!("l {}", target.display())
        }
        other => format!("s {other:o} {mode:o}"),
    })
}

/// Every entry below host directory `dir` (tree path `rel`), links not
/// followed (so the walk stays inside the directory it was given).
fn walk(dir: &Path, rel: &Path, out: &mut Inputs) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let host: PathBuf = e.path();
        let rel = rel.join(e.file_name());
        let m = std::fs::symlink_metadata(&host)
            .with_context(|| format!("cannot read {}", host.display()))?;
        let mode = m.permissions().mode() & 0o7777;
        let key = rel.display().to_string();
        if m.file_type().is_symlink() {
            out.insert(key, format!("l {}", std::fs::read_link(&host)?.display()));
        } else if m.is_dir() {
            out.insert(key, format!("d {mode:o}"));
            walk(&host, &rel, out)?;
        } else if m.is_file() {
            out.insert(key, format!("f {mode:o} {}", sha256(&host)?));
        } else {
            out.insert(key, format!("s {:o} {mode:o}", m.mode() & libc::S_IFMT));
        }
    }
    Ok(())
}

fn sha256(path: &Path) -> Result<String> {
    Ok(crate::artifact::checksums::sha256_file(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A newc archive of `(name, content)` members, with its trailer.
    fn newc(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut push = |name: &str, data: &[u8], ino: usize| {
            let header = format!(
                "070701{ino:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                0o100644,
                0,
                0,
                1,
                0,
                data.len(),
                0,
                0,
                0,
                0,
                name.len() + 1,
                0
            );
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        };
        for (i, (n, d)) in members.iter().enumerate() {
            push(n, d, i + 1);
        }
        push("TRAILER!!!", b"", 0);
        out
    }

    fn initrd(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("initrd.img");
        std::fs::write(&p, bytes).unwrap();
        (d, p)
    }

    #[test]
    fn paths_of_an_early_segment_and_a_zstd_archive() {
        let mut bytes = newc(&[("kernel/x86/microcode/AuthenticAMD.bin", b"ucode")]);
        bytes.extend_from_slice(&[0; 512]);
        let main = newc(&[(".", b""), ("usr/bin/busybox", b"bb"), ("./etc/fstab", b"")]);
        bytes.extend(zstd::encode_all(&main[..], 3).unwrap());
        let (_d, p) = initrd(&bytes);
        let got: Vec<String> = initrd_paths(&p).unwrap().unwrap().into_iter().collect();
        assert_eq!(
            got,
            [
                "etc/fstab",
                "kernel/x86/microcode/AuthenticAMD.bin",
                "usr/bin/busybox"
            ]
        );
    }

    #[test]
    fn an_unknown_compression_is_not_read() {
        let (_d, p) = initrd(b"\x1f\x8b\x08\x00gzip");
        assert_eq!(initrd_paths(&p).unwrap(), None);
    }

    #[test]
    fn a_damaged_archive_is_an_error() {
        let mut bytes = newc(&[("usr/bin/busybox", b"bb")]);
        bytes.truncate(150);
        let (_d, p) = initrd(&bytes);
        assert!(initrd_paths(&p).is_err());
        // A name size past the bound.
        let mut bytes = newc(&[("a", b"")]);
        bytes[94..102].copy_from_slice(b"00100000");
        let (_d, p) = initrd(&bytes);
        assert!(initrd_paths(&p).is_err());
    }

    #[test]
    fn a_change_to_a_copied_file_or_a_hook_tree_is_seen_and_others_are_not() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for (p, c) in [
            ("usr/bin/busybox", "bb"),
            ("usr/bin/less", "less"),
            ("usr/share/initramfs-tools/hooks/udev", "hook"),
            ("boot/initrd.img-6", "old initrd"),
            ("boot/vmlinuz-6", "kernel"),
        ] {
            std::fs::create_dir_all(r.join(p).parent().unwrap()).unwrap();
            std::fs::write(r.join(p), c).unwrap();
        }
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        let listed: BTreeSet<String> = [
            "usr/bin/busybox",
            "bin",
            "usr/lib/libgone.so",
            "etc/ld.so.cache",
        ]
        .map(String::from)
        .into();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/ld.so.cache"), "cache").unwrap();
        let before = inputs(r, &listed).unwrap();
        assert_eq!(before["usr/lib/libgone.so"], "-");
        assert_eq!(before["bin"], "l usr/bin");
        // A path the root lacks was made by a hook, not copied.
        let (copied, base) = copied_inputs(r, &listed).unwrap();
        assert!(!copied.contains("usr/lib/libgone.so") && copied.contains("usr/bin/busybox"));
        assert!(!base.contains_key("usr/lib/libgone.so"));
        // A file the initrd does not hold, one it makes itself, and the
        // initrd.
        std::fs::write(r.join("usr/bin/less"), "less 2").unwrap();
        std::fs::write(r.join("etc/ld.so.cache"), "cache 2").unwrap();
        std::fs::write(r.join("boot/initrd.img-6"), "new initrd").unwrap();
        assert_eq!(
            first_difference(&before, &inputs(r, &listed).unwrap()),
            None
        );
        // A file it holds.
        std::fs::write(r.join("usr/bin/busybox"), "bb 2").unwrap();
        let after = inputs(r, &listed).unwrap();
        assert_eq!(
            first_difference(&before, &after).as_deref(),
            Some("usr/bin/busybox")
        );
        // A new hook.
        std::fs::write(r.join("usr/bin/busybox"), "bb").unwrap();
        std::fs::write(r.join("usr/share/initramfs-tools/hooks/lvm2"), "").unwrap();
        let after = inputs(r, &listed).unwrap();
        assert_eq!(
            first_difference(&before, &after).as_deref(),
            Some("usr/share/initramfs-tools/hooks/lvm2")
        );
        // The kernel.
        std::fs::remove_file(r.join("usr/share/initramfs-tools/hooks/lvm2")).unwrap();
        std::fs::write(r.join("boot/vmlinuz-6"), "kernel 2").unwrap();
        let after = inputs(r, &listed).unwrap();
        assert_eq!(
            first_difference(&before, &after).as_deref(),
            Some("boot/vmlinuz-6")
        );
    }
}
