//! Removing the K3s join token from node.toml once first boot has used it.
//!
//! The boot partition is FAT: anyone holding the card can read it, on any
//! machine. First boot stores the token where K3s reads it (0600 on the data
//! partition, see [`crate::k3s`]), so the copy on the FAT is only a liability
//! afterwards. It is removed by rewriting node.toml without `[k3s] token`
//! (temp file and rename, so a power cut leaves the old or the new file,
//! never a torn one). Everything else in the file is kept; comments are not
//! (the file is re-serialized), and a comment at its top says what happened.
//!
//! A rename on FAT only frees the old file's clusters: their bytes stay on
//! the partition until reused, token included. So before the rename the old
//! file is overwritten where it lies, at its own length (no truncation, so
//! the same clusters are written), with bytes that hold no part of the
//! token, and synced: after the scrub the token is nowhere in the
//! partition's bytes (see [`cover`] for what those bytes are).
//!
//! Runs at the end of first boot and again on every boot from `ready`: when
//! first boot read node.toml before systemd mounted the boot partition there
//! is nothing to write to yet, and `ready` finishes the job later.

use crate::error::{Context, Result};
use crate::fsutil;
use crate::root::Root;
use crate::schema::{ImageConfig, NODE_CONFIG_RELPATH};
use std::path::Path;

/// First line of a node.toml whose token was removed.
pub const SCRUBBED_NOTE: &str =
    "# edgeimg-agent removed the K3s join token from this file after first boot used it.";

/// What [`scrub_token`] did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scrubbed {
    Removed,
    NoToken,
    NoFile,
    /// The boot partition is not mounted yet; `ready` retries.
    NotMounted,
}

/// Rewrites node.toml on the boot partition without `[k3s] token`.
pub fn scrub_token(root: &Root, image: &ImageConfig) -> Result<Scrubbed> {
    if root.is_host() && !crate::bootpart::is_mounted(root, &image.boot_mount)? {
        return Ok(Scrubbed::NotMounted);
    }
    let path = root.path(Path::new(&image.boot_mount).join(NODE_CONFIG_RELPATH));
    let Some(text) = crate::bootpart::read_opt_bounded(&path)? else {
        return Ok(Scrubbed::NoFile);
    };
    scrub_text(&text, &mut MountedFile { path: &path }, &path)
}

/// The two writes a scrub makes to node.toml: on the device through the
/// mounted partition ([`MountedFile`]); the tests also drive them through
/// the fatfs crate on a FAT image, to look at the partition's raw bytes.
pub(crate) trait NodeFile {
    /// Writes `data` over the file's bytes where they lie: same length as
    /// the file, no truncation (so the same clusters are rewritten), durable
    /// when it returns.
    fn overwrite_in_place(&mut self, data: &[u8]) -> Result<()>;
    /// Replaces the file with `data` (temporary file and rename).
    fn replace(&mut self, data: &[u8]) -> Result<()>;
}

/// node.toml on the mounted boot partition.
pub(crate) struct MountedFile<'a> {
    pub path: &'a Path,
}

impl NodeFile for MountedFile<'_> {
    fn overwrite_in_place(&mut self, data: &[u8]) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let shown = self.path.display();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.path)
            .with_context(|| format!("opening {shown} to overwrite it"))?;
        let len = f
            .metadata()
            .with_context(|| format!("reading the size of {shown}"))?
            .len();
        if len != data.len() as u64 {
            crate::bail!("{shown} changed while it was scrubbed ({len} bytes now); not rewritten");
        }
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("overwriting {shown}"))
    }

    fn replace(&mut self, data: &[u8]) -> Result<()> {
        fsutil::write_atomic_fat(self.path, data)
    }
}

/// The scrub of node.toml's `text` (`shown` names it in errors): the old
/// bytes are covered in place, then the file is replaced by the text without
/// the token.
pub(crate) fn scrub_text(text: &str, file: &mut dyn NodeFile, shown: &Path) -> Result<Scrubbed> {
    let (new, token) = match split_token(text) {
        // Not TOML: first boot refused it already; the message for that is
        // elsewhere, and its content is not echoed here.
        Err(_) => crate::bail!(
            "{}: does not parse as TOML; the token (if any) was not removed",
            shown.display()
        ),
        Ok(None) => return Ok(Scrubbed::NoToken),
        Ok(Some(split)) => split,
    };
    file.overwrite_in_place(&cover(text, &new, &token))
        .context("overwriting the join token on the boot partition")?;
    file.replace(new.as_bytes())
        .context("removing the join token")?;
    Ok(Scrubbed::Removed)
}

/// `text` re-serialized without `[k3s] token`; `None` when it has none.
pub fn without_token(text: &str) -> Result<Option<String>> {
    Ok(split_token(text)?.map(|(new, _)| new))
}

/// [`without_token`], and the value it removed.
fn split_token(text: &str) -> Result<Option<(String, toml::Value)>> {
    let mut doc: toml::Table = text
        .parse()
        .map_err(|_| crate::error::Error::msg("not TOML"))?;
    let Some(token) = doc
        .get_mut("k3s")
        .and_then(|k| k.as_table_mut())
        .and_then(|k| k.remove("token"))
    else {
        return Ok(None);
    };
    let body = toml::to_string(&doc).context("serializing node.toml")?;
    Ok(Some((format!("{SCRUBBED_NOTE}\n{body}"), token)))
}

/// What is written over the old node.toml in place: exactly as long as
/// `old`, holding no byte of its token, and still a node file where it can
/// be (a power cut between the two writes leaves it on the card):
///
/// - `new` (the file without the token) padded with spaces, when it fits;
/// - else `old` with every occurrence of the token's text replaced by `x`s
///   (the token as written, a plain string);
/// - else (a token written with escapes, and a longer `new`) a comment as
///   long as `old`; the rename that follows puts `new` in place.
fn cover(old: &str, new: &str, token: &toml::Value) -> Vec<u8> {
    let len = old.len();
    if new.len() <= len {
        let mut out = new.as_bytes().to_vec();
        out.resize(len, b' ');
        return out;
    }
    if let Some(t) = token.as_str().filter(|t| !t.is_empty())
        && old.contains(t)
    {
        return old.replace(t, &"x".repeat(t.len())).into_bytes();
    }
    let mut out = vec![b' '; len];
    out[0] = b'#';
    if len > 1 {
        out[len - 1] = b'\n';
    }
    out
}

/// [`scrub_token`] with the outcome logged; never fails the caller (a
/// failure is logged loudly instead: the node itself works either way).
pub fn scrub_and_log(root: &Root, image: &ImageConfig) {
    match scrub_token(root, image) {
        Ok(Scrubbed::Removed) => {
            crate::log("removed the K3s join token from node.toml on the boot partition")
        }
        Ok(Scrubbed::NotMounted) => crate::log(
            "boot partition not mounted yet: the join token is removed from node.toml later",
        ),
        Ok(Scrubbed::NoToken | Scrubbed::NoFile) => {}
        Err(e) => crate::log(format!(
            "WARNING: the K3s join token stays on the boot partition: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "# ops notes\nhostname = \"edge-7\"\n\n[k3s]\nrole = \"agent\"\nserver = \"https://10.0.0.1:6443\"\ntoken = \"K10topsecret::server:abc\"\n\n[[users]]\nname = \"ops\"\nssh_keys = [\"ssh-ed25519 AAAA k\"]\n";

    #[test]
    fn the_token_is_removed_and_the_rest_kept() {
        let new = without_token(NODE).unwrap().unwrap();
        assert!(!new.contains("topsecret"), "{new}");
        assert!(new.starts_with(SCRUBBED_NOTE));
        let path = Path::new("node.toml");
        let before = crate::schema::NodeConfig::from_toml(NODE, path).unwrap();
        let after = crate::schema::NodeConfig::from_toml(&new, path).unwrap();
        assert_eq!(after.hostname, before.hostname);
        assert_eq!(after.users, before.users);
        let (a, b) = (after.k3s.unwrap(), before.k3s.unwrap());
        assert_eq!((a.role, a.server), (b.role, b.server));
        assert!(a.token.is_none() && b.token.is_some());
        assert_eq!(without_token(&new).unwrap(), None);
        assert_eq!(without_token("hostname = \"x\"\n").unwrap(), None);
        assert!(without_token("token = = \"K10secret\"").is_err());
    }

    #[test]
    fn the_cover_is_as_long_as_the_old_file_and_holds_no_token() {
        let token = toml::Value::String("K10topsecret::server:abc".into());
        let (new, removed) = split_token(NODE).unwrap().unwrap();
        assert_eq!(removed, token);
        for (old, new) in [
            // The new text fits: it is the cover, padded.
            (NODE.to_string(), new.clone()),
            // It does not: the token's characters are crossed out.
            (NODE.to_string(), format!("{new}{}", " ".repeat(NODE.len()))),
            // Not literally there either (escaped): one comment.
            (
                NODE.replace("topsecret", "top\\u0073ecret"),
                format!("{new}{}", " ".repeat(NODE.len())),
            ),
        ] {
            let c = String::from_utf8(cover(&old, &new, &token)).unwrap();
            assert_eq!(c.len(), old.len());
            assert!(
                !c.contains("topsecret") && !c.contains("ecret::server"),
                "{c}"
            );
            c.parse::<toml::Table>().unwrap();
        }
    }

    /// node.toml on a FAT image through the fatfs crate: a replace makes a
    /// new file and renames it over the old one, like the kernel's vfat.
    struct FatFile<'a, T: fatfs::ReadWriteSeek> {
        dir: &'a fatfs::Dir<'a, T>,
    }

    impl<T: fatfs::ReadWriteSeek> NodeFile for FatFile<'_, T> {
        fn overwrite_in_place(&mut self, data: &[u8]) -> Result<()> {
            use std::io::{Seek, Write};
            let mut f = self.dir.open_file("node.toml").unwrap();
            assert_eq!(
                f.seek(std::io::SeekFrom::End(0)).unwrap(),
                data.len() as u64
            );
            f.seek(std::io::SeekFrom::Start(0)).unwrap();
            f.write_all(data).unwrap();
            f.flush().unwrap();
            Ok(())
        }

        fn replace(&mut self, data: &[u8]) -> Result<()> {
            use std::io::Write;
            let mut f = self.dir.create_file(".node.toml.tmp").unwrap();
            f.write_all(data).unwrap();
            f.flush().unwrap();
            drop(f);
            self.dir.remove("node.toml").unwrap();
            self.dir
                .rename(".node.toml.tmp", self.dir, "node.toml")
                .unwrap();
            Ok(())
        }
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// A FAT image holding `edgeimg/node.toml`; then `scrub` on its
    /// edgeimg directory; the image's raw bytes and the file's new text.
    fn on_fat_image(scrub: impl FnOnce(&mut dyn NodeFile, &str)) -> (Vec<u8>, String) {
        use std::io::{Read, Write};
        let mut disk = std::io::Cursor::new(vec![0u8; 2 << 20]);
        fatfs::format_volume(&mut disk, fatfs::FormatVolumeOptions::new()).unwrap();
        {
            disk.set_position(0);
            let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).unwrap();
            let dir = fs.root_dir().create_dir("edgeimg").unwrap();
            dir.create_file("node.toml")
                .unwrap()
                .write_all(NODE.as_bytes())
                .unwrap();
            // A file written after it, as flash leaves the card.
            fs.root_dir()
                .create_file("cmdline.txt")
                .unwrap()
                .write_all(b"console=tty1\n")
                .unwrap();
            drop(dir);
            fs.unmount().unwrap();
        }
        assert!(contains(disk.get_ref(), b"topsecret"));
        let mut text = String::new();
        {
            disk.set_position(0);
            let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).unwrap();
            let dir = fs.root_dir().open_dir("edgeimg").unwrap();
            scrub(&mut FatFile { dir: &dir }, NODE);
            dir.open_file("node.toml")
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            drop(dir);
            fs.unmount().unwrap();
        }
        (disk.into_inner(), text)
    }

    #[test]
    fn no_copy_of_the_token_is_left_in_the_fat_partition() {
        let (raw, text) = on_fat_image(|f, node| {
            let r = scrub_text(node, f, Path::new("node.toml")).unwrap();
            assert_eq!(r, Scrubbed::Removed);
        });
        assert_eq!(text, without_token(NODE).unwrap().unwrap());
        assert!(!contains(&raw, b"topsecret"), "token left on the partition");
        assert!(!contains(&raw, b"K10top"));
        // The rest of the node file is in the new file.
        assert!(contains(&raw, b"https://10.0.0.1:6443"));

        // Without the overwrite, the freed clusters still hold it.
        let (raw, text) = on_fat_image(|f, node| {
            f.replace(without_token(node).unwrap().unwrap().as_bytes())
                .unwrap();
        });
        assert!(!text.contains("topsecret"));
        assert!(contains(&raw, b"topsecret"));
    }

    /// The device's own path: the kernel's vfat on a loop mount (root
    /// only; skipped where mounting is not possible).
    #[test]
    fn no_copy_of_the_token_is_left_on_a_mounted_vfat() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to loop-mount a FAT image");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("boot.img");
        let mnt = t.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::write(&img, vec![0u8; 4 << 20]).unwrap();
        {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&img)
                .unwrap();
            fatfs::format_volume(&mut f, fatfs::FormatVolumeOptions::new()).unwrap();
        }
        struct Mount<'a>(&'a Path);
        impl Drop for Mount<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(self.0).status();
            }
        }
        let mount = || {
            let ok = std::process::Command::new("mount")
                .args(["-t", "vfat", "-o", "loop"])
                .arg(&img)
                .arg(&mnt)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ok.then(|| Mount(&mnt))
        };
        let Some(m) = mount() else {
            eprintln!("skipped: cannot loop-mount a FAT image here");
            return;
        };
        let node = mnt.join("node.toml");
        std::fs::write(&node, NODE).unwrap();
        drop(m);
        assert!(contains(&std::fs::read(&img).unwrap(), b"topsecret"));
        let m = mount().unwrap();
        let text = std::fs::read_to_string(&node).unwrap();
        let r = scrub_text(&text, &mut MountedFile { path: &node }, &node).unwrap();
        assert_eq!(r, Scrubbed::Removed);
        assert_eq!(
            std::fs::read_to_string(&node).unwrap(),
            without_token(NODE).unwrap().unwrap()
        );
        drop(m);
        let raw = std::fs::read(&img).unwrap();
        assert!(!contains(&raw, b"topsecret"), "token left on the partition");
        assert!(contains(&raw, b"https://10.0.0.1:6443"));
    }
}
