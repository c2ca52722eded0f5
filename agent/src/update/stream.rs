//! `update pull`'s download: the full update goes straight into the
//! inactive slot as it arrives, never whole onto the data partition.
//!
//! The update file is a signed header, then its payloads. The header
//! arrives first and is verified (signature with the image's update key,
//! board, architecture, the length it describes against the repository's
//! signed length) and checked like `update apply` checks it ([`Plan::check`]:
//! the version floor, the root image fitting the slot, the signed kernel
//! images) before a byte is written anywhere; a refused update leaves the
//! slot and the boot partition as they were. Then the target slot's boot
//! entries are removed ([`Plan::unboot_target`]), and the root image payload
//! goes from the HTTP body (or the delta being rebuilt) to the slot
//! partition, hashed on the way. Everything else of the file (the header,
//! the signature and the boot payloads: kernel and initrd, signed UKIs, the
//! Pi's boot files; a few tens of MB at most) goes to
//! `<sha256>.rest` in the download directory on the data partition.
//!
//! A progress record (`<sha256>.progress`: the target, its signed length
//! and SHA-256, the slot, the bytes done) lets the next pull, after a cut
//! connection or a reboot, continue with an HTTP `Range` request; the
//! bytes done are read back from the slot and the `.rest` file and hashed
//! again, never trusted from the record, so a byte changed there makes the
//! whole file's SHA-256 fail. A server that ignores Range sends the file
//! from the start again. More bytes than the signed length are refused.
//!
//! Once complete, the whole file must have the signed SHA-256; before the
//! boot files are installed ([`Download::install`]), the file is read back
//! once more (the slot with its page cache dropped, so from the medium):
//! its SHA-256 and length again, the signature, and every payload's hash,
//! exactly as `update apply FILE` verifies a file. Only then are the boot
//! files and the boot entry written.

use crate::error::{Context, Error, Result};
use crate::update::apply::{self, Plan};
use crate::update::download::{self, Want};
use crate::update::format::{self, MAX_HEADER, ROOT, Verified};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes between two checkpoints (data synced, then the record written).
const CHECKPOINT: u64 = 16 << 20;
const BUF: usize = 256 * 1024;

/// The progress record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    target: String,
    sha256: String,
    length: u64,
    /// The slot and partition written.
    slot: String,
    partuuid: String,
    /// Bytes of the update file stored (slot and `.rest`), synced.
    done: u64,
}

/// Where the bytes of the update file are kept: the root image payload in
/// the slot, every other byte in the `.rest` file, in file order.
#[derive(Debug, Clone, Copy)]
struct Layout {
    header_end: u64,
    root_start: u64,
    root_size: u64,
}

impl Layout {
    fn of(v: &Verified) -> Result<Layout> {
        let root = v.header.payload(ROOT)?;
        Ok(Layout {
            header_end: v.payload_start,
            root_start: v.offset(root),
            root_size: root.size,
        })
    }

    /// File offset `o`: whether it is in the slot, its offset there (or in
    /// `.rest`), and how many bytes from it stay in the same place.
    fn locate(&self, o: u64) -> (bool, u64, u64) {
        let root_end = self.root_start + self.root_size;
        if o < self.root_start {
            (false, o, self.root_start - o)
        } else if o < root_end {
            (true, o - self.root_start, root_end - o)
        } else {
            (false, o - self.root_size, u64::MAX)
        }
    }

    /// The length of `.rest` when `done` bytes of the file are stored.
    fn rest_len(&self, done: u64) -> u64 {
        match self.locate(done) {
            (true, _, _) => self.root_start,
            (false, at, _) => at,
        }
    }
}

/// The update file as stored, readable and seekable like the file itself;
/// the bytes read in order from the start are hashed.
struct Spliced<'a> {
    rest: &'a File,
    slot: &'a File,
    layout: Layout,
    len: u64,
    pos: u64,
    hash: Sha256,
    hashed: u64,
}

impl<'a> Spliced<'a> {
    fn new(rest: &'a File, slot: &'a File, layout: Layout, len: u64) -> Self {
        Spliced {
            rest,
            slot,
            layout,
            len,
            pos: 0,
            hash: Sha256::new(),
            hashed: 0,
        }
    }
}

impl Read for Spliced<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let (in_slot, at, run) = self.layout.locate(self.pos);
        let n = (buf.len() as u64).min(run).min(self.len - self.pos) as usize;
        let f = if in_slot { self.slot } else { self.rest };
        let n = f.read_at(&mut buf[..n], at)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the stored update ends at byte {} (in {})",
                    self.pos,
                    if in_slot {
                        "the slot"
                    } else {
                        "the .rest file"
                    }
                ),
            ));
        }
        if self.pos == self.hashed {
            self.hash.update(&buf[..n]);
            self.hashed += n as u64;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Spliced<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let p = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos = p.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}

/// The header has been verified and checked: the bytes after it go to
/// their places.
struct Ready {
    layout: Layout,
    slot: File,
}

/// One update being downloaded into the inactive slot (see the module
/// docs). Bytes come from [`Download::fetch`] (the repository) or through
/// [`Write`] (a delta being rebuilt), in file order from [`Download::done`].
pub struct Download<'a> {
    plan: &'a Plan,
    want: &'a Want,
    progress: Progress,
    progress_path: PathBuf,
    rest_path: PathBuf,
    rest: File,
    /// SHA-256 of the bytes `[0, progress.done)`.
    hash: Sha256,
    /// The header's bytes while it is incomplete.
    head: Vec<u8>,
    ready: Option<Ready>,
    /// Bytes since the last checkpoint.
    unsynced: u64,
}

/// `<dir>/<sha256>.progress` and `<dir>/<sha256>.rest` of `want`.
pub fn state_paths(dir: &Path, want: &Want) -> (PathBuf, PathBuf) {
    let h = crate::hex::hex(&want.sha256);
    (
        dir.join(format!("{h}.progress")),
        dir.join(format!("{h}.rest")),
    )
}

impl<'a> Download<'a> {
    /// The download of `want` (repository target `target`) into `plan`'s
    /// slot, continuing the one recorded under `dir` if it is the same
    /// target into the same slot: its header verified and checked again,
    /// its bytes read back and hashed again. The state of other targets is
    /// removed (one download at a time).
    pub fn open(plan: &'a Plan, want: &'a Want, target: &str, dir: &Path) -> Result<Self> {
        crate::fsutil::mkdir_p(dir)?;
        let (progress_path, rest_path) = state_paths(dir, want);
        for e in std::fs::read_dir(dir)
            .with_context(|| dir.display().to_string())?
            .flatten()
        {
            let p = e.path();
            let ours = p == progress_path || p == rest_path;
            let stale = p
                .extension()
                .is_some_and(|x| x == "progress" || x == "rest");
            // A whole download kept by an agent before this one.
            let whole = p == download::part_path(dir, want);
            if !ours && (stale || whole) {
                let _ = std::fs::remove_file(&p);
            }
        }
        let fresh = Progress {
            target: target.to_string(),
            sha256: crate::hex::hex(&want.sha256),
            length: want.length,
            slot: plan.slot().to_string(),
            partuuid: plan.partuuid().to_string(),
            done: 0,
        };
        let recorded: Option<Progress> = crate::config::read_json(&progress_path).unwrap_or(None);
        let done = match recorded {
            Some(p)
                if p.done <= p.length
                    && Progress {
                        done: 0,
                        ..p.clone()
                    } == fresh =>
            {
                p.done
            }
            _ => 0,
        };
        let rest = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&rest_path)
            .with_context(|| rest_path.display().to_string())?;
        let mut d = Download {
            plan,
            want,
            progress: fresh,
            progress_path,
            rest_path,
            rest,
            hash: Sha256::new(),
            head: Vec::new(),
            ready: None,
            unsynced: 0,
        };
        if done > 0 {
            d.resume(done)?;
        } else {
            d.restart()?;
        }
        Ok(d)
    }

    /// Bytes of the update stored so far.
    pub fn done(&self) -> u64 {
        self.progress.done
    }

    pub fn complete(&self) -> bool {
        self.progress.done == self.want.length && self.ready.is_some()
    }

    /// Nothing stored: the next byte is the file's first. The slot keeps
    /// what it has (without a boot entry, if a header had been accepted)
    /// until the next header is accepted.
    fn restart(&mut self) -> Result<()> {
        self.progress.done = 0;
        self.hash = Sha256::new();
        self.head.clear();
        self.ready = None;
        self.unsynced = 0;
        let _ = std::fs::remove_file(&self.progress_path);
        self.rest
            .set_len(0)
            .with_context(|| self.rest_path.display().to_string())
    }

    /// Continues after `done` stored bytes: the header read back from
    /// `.rest` and accepted again, then every stored byte hashed again.
    fn resume(&mut self, done: u64) -> Result<()> {
        let mut pre = [0u8; 16];
        let hlen = match self.rest.read_exact_at(&mut pre, 0) {
            Ok(()) if done >= 16 => u32::from_le_bytes(pre[12..16].try_into().unwrap()),
            _ => return self.restart(),
        };
        let header_end = 16 + u64::from(hlen.min(MAX_HEADER)) + 64;
        if done < header_end {
            return self.restart();
        }
        let mut head = vec![0u8; header_end as usize];
        if self.rest.read_exact_at(&mut head, 0).is_err() {
            return self.restart();
        }
        if let Err(e) = self.accept(&head) {
            self.restart()?;
            return Err(e);
        }
        let layout = self.ready.as_ref().unwrap().layout;
        self.progress.done = done;
        if done == self.want.length {
            // Complete: [`Download::install`] reads it all back anyway.
            return Ok(());
        }
        self.plan.log_writing(layout.root_size);
        crate::log(format!(
            "update: resuming {} at byte {done} of {}: hashing the bytes already in slot {} and {} again",
            self.want.url,
            self.want.length,
            self.plan.slot(),
            self.rest_path.display()
        ));
        let slot = &self.ready.as_ref().unwrap().slot;
        let mut sp = Spliced::new(&self.rest, slot, layout, done);
        let hashed = std::io::copy(&mut sp, &mut std::io::sink());
        match hashed {
            Ok(n) if n == done => {
                self.hash = sp.hash;
                self.rest
                    .set_len(layout.rest_len(done))
                    .with_context(|| self.rest_path.display().to_string())
            }
            r => {
                crate::log(format!(
                    "update: the stored bytes cannot be read back ({}): starting over",
                    match r {
                        Ok(n) => format!("{n} of {done} bytes"),
                        Err(e) => e.to_string(),
                    }
                ));
                self.restart()
            }
        }
    }

    /// Verifies and checks the header `head` (its exact bytes), then makes
    /// the slot unbootable and opens it: from here on bytes go to the slot.
    fn accept(&mut self, head: &[u8]) -> Result<()> {
        let plan = self.plan;
        let v = format::verify_header(
            &mut std::io::Cursor::new(head),
            self.want.length,
            plan.key(),
            &plan.expect(),
        )
        .with_context(|| self.want.url.to_string())?;
        plan.check(&v.header)?;
        plan.log_verified(&v.header);
        let layout = Layout::of(&v)?;
        if layout.header_end != head.len() as u64 {
            crate::bail!("the header is not where it says");
        }
        plan.unboot_target()?;
        let slot = plan.open_device()?;
        self.ready = Some(Ready { layout, slot });
        Ok(())
    }

    /// Stores the next bytes of the file.
    fn store(&mut self, mut buf: &[u8]) -> Result<()> {
        if self.ready.is_none() {
            // The header first: gathered, then verified before anything
            // is written.
            let need = |head: &[u8]| -> usize {
                if head.len() < 16 {
                    16
                } else {
                    match u32::from_le_bytes(head[12..16].try_into().unwrap()) {
                        // Refused by the verifier as it is.
                        hlen if hlen > MAX_HEADER => 16,
                        hlen => 16 + hlen as usize + 64,
                    }
                }
            };
            while self.ready.is_none() && !buf.is_empty() {
                let n = (need(&self.head) - self.head.len()).min(buf.len());
                self.head.extend_from_slice(&buf[..n]);
                buf = &buf[n..];
                let full = self.head.len() == need(&self.head);
                if self.head.len() >= 16 && full {
                    let head = std::mem::take(&mut self.head);
                    if let Err(e) = self.accept(&head) {
                        self.restart()?;
                        return Err(e);
                    }
                    let root_size = self.ready.as_ref().unwrap().layout.root_size;
                    self.plan.log_writing(root_size);
                    self.rest
                        .write_all_at(&head, 0)
                        .with_context(|| self.rest_path.display().to_string())?;
                    self.hash.update(&head);
                    self.progress.done = head.len() as u64;
                    self.unsynced += head.len() as u64;
                }
            }
        }
        while !buf.is_empty() {
            let done = self.progress.done;
            if done + buf.len() as u64 > self.want.length {
                self.restart()?;
                crate::bail!(
                    "{}: the server sent more than the signed length of {} bytes",
                    self.want.url,
                    self.want.length
                );
            }
            let ready = self.ready.as_ref().expect("the header was accepted");
            let (in_slot, at, run) = ready.layout.locate(done);
            let n = (buf.len() as u64).min(run) as usize;
            if in_slot {
                ready
                    .slot
                    .write_all_at(&buf[..n], at)
                    .with_context(|| self.plan.device().display().to_string())?;
            } else {
                self.rest
                    .write_all_at(&buf[..n], at)
                    .with_context(|| self.rest_path.display().to_string())?;
            }
            self.hash.update(&buf[..n]);
            self.progress.done += n as u64;
            self.unsynced += n as u64;
            buf = &buf[n..];
            if self.unsynced >= CHECKPOINT {
                self.checkpoint()?;
            }
        }
        Ok(())
    }

    /// The stored bytes synced, then recorded.
    pub fn checkpoint(&mut self) -> Result<()> {
        if let Some(r) = &self.ready {
            r.slot
                .sync_data()
                .with_context(|| self.plan.device().display().to_string())?;
        }
        self.rest
            .sync_data()
            .with_context(|| self.rest_path.display().to_string())?;
        // Only what follows an accepted header is worth resuming.
        let mut p = self.progress.clone();
        if self.ready.is_none() {
            p.done = 0;
        }
        let text = serde_json::to_string(&p).map_err(Error::msg)? + "\n";
        crate::fsutil::write_atomic(&self.progress_path, text.as_bytes(), 0o644)?;
        self.unsynced = 0;
        Ok(())
    }

    /// Downloads the rest of the update from the repository (nothing when
    /// it is complete) and checks the whole file's signed SHA-256.
    pub fn fetch(&mut self) -> Result<()> {
        let want = self.want;
        if self.complete() {
            return Ok(());
        }
        let done = self.progress.done;
        if done > 0 {
            crate::log(format!(
                "update: continuing {} from byte {done} of {} (Range)",
                want.url, want.length
            ));
        }
        let src = download::open_at(&want.url, &want.trust, done)?;
        if done > 0 && !src.resumed {
            crate::log(format!(
                "update: {} ignored the range request: downloading from the start",
                want.url
            ));
            self.restart()?;
        }
        let done = self.progress.done;
        if let Some(n) = src.length
            && done.saturating_add(n) > want.length
        {
            self.restart()?;
            crate::bail!(
                "{}: the server sent more than the signed length of {} bytes ({} from byte {done})",
                want.url,
                want.length,
                n
            );
        }
        // One byte more than is left: a longer body is refused, not cut.
        let mut src = src.reader.take(want.length - done + 1);
        let mut buf = vec![0u8; BUF];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.checkpoint()?;
                    crate::bail!(
                        "{}: interrupted at byte {} of {}: {e}; the next pull resumes there",
                        want.url,
                        self.progress.done,
                        want.length
                    );
                }
            };
            self.store(&buf[..n])?;
        }
        if self.progress.done < want.length {
            self.checkpoint()?;
            crate::bail!(
                "{}: the connection ended at byte {} of {}; the next pull resumes there",
                want.url,
                self.progress.done,
                want.length
            );
        }
        self.finish()
    }

    /// All bytes stored: the whole file's SHA-256 against the signed one.
    pub fn finish(&mut self) -> Result<()> {
        if self.progress.done != self.want.length || self.ready.is_none() {
            crate::bail!(
                "{}: {} of {} bytes stored",
                self.want.url,
                self.progress.done,
                self.want.length
            );
        }
        let got = std::mem::take(&mut self.hash).finalize();
        if got.as_slice() != self.want.sha256.as_slice() {
            self.restart()?;
            crate::bail!(
                "{}: SHA-256 {} does not match the signed targets metadata ({}): slot {} holds no bootable update, the next pull starts over",
                self.want.url,
                crate::hex::hex(got.as_slice()),
                crate::hex::hex(&self.want.sha256),
                self.plan.slot()
            );
        }
        self.checkpoint()
    }

    /// Installs the complete download: the whole file read back (the slot
    /// from the medium) and verified as `update apply` verifies a file,
    /// then the boot files and the boot entry ([`Plan::install_boot`]).
    /// The download's state is removed either way.
    pub fn install(mut self) -> Result<()> {
        let r = self.install_inner();
        let _ = std::fs::remove_file(&self.progress_path);
        let _ = std::fs::remove_file(&self.rest_path);
        if r.is_err() {
            self.progress.done = 0;
        }
        r
    }

    fn install_inner(&mut self) -> Result<()> {
        if !self.complete() {
            crate::bail!("{}: the download is not complete", self.want.url);
        }
        let ready = self.ready.as_ref().unwrap();
        let plan = self.plan;
        crate::log(format!(
            "update: verifying {} as stored (slot {} and {})",
            self.want.url,
            plan.slot(),
            self.rest_path.display()
        ));
        ready
            .slot
            .sync_data()
            .with_context(|| plan.device().display().to_string())?;
        apply::drop_cache(&ready.slot);
        let len = self.want.length;
        let mut sp = Spliced::new(&self.rest, &ready.slot, ready.layout, len);
        let v = format::verify_header(&mut sp, len, plan.key(), &plan.expect())
            .and_then(|v| format::verify_payloads(&mut sp, &v).map(|_| v))
            .with_context(|| format!("slot {} and {}", plan.slot(), self.rest_path.display()))?;
        let got = std::mem::take(&mut sp.hash).finalize();
        if sp.hashed != len || got.as_slice() != self.want.sha256.as_slice() {
            crate::bail!(
                "slot {} and {} read back SHA-256 {} ({} bytes), the signed targets metadata says {}: the medium is failing or the bytes were changed",
                plan.slot(),
                self.rest_path.display(),
                crate::hex::hex(got.as_slice()),
                sp.hashed,
                crate::hex::hex(&self.want.sha256)
            );
        }
        let checked = plan.check(&v.header)?;
        plan.install_boot(&mut sp, &v, &checked)
    }
}

/// A delta being rebuilt writes the update here.
impl Write for Download<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.store(buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A download that stored nothing worth resuming leaves no files.
impl Drop for Download<'_> {
    fn drop(&mut self) {
        if self.progress.done == 0 || self.ready.is_none() {
            let _ = std::fs::remove_file(&self.progress_path);
            let _ = std::fs::remove_file(&self.rest_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::format::Header;
    use edgeimg_contract::partition::Slot;

    /// [`apply::tests::device`] as a Raspberry Pi (config.txt on the boot
    /// partition, no loader) and a Pi update for it whose root image is
    /// between boot payloads, so bytes after it go to `.rest` too.
    fn pi() -> (tempfile::TempDir, crate::Root, Vec<u8>, Vec<u8>) {
        let (d, root, _) = apply::tests::device(1, 2);
        std::fs::remove_dir_all(root.path("/boot/efi/loader")).unwrap();
        std::fs::write(root.path("/boot/efi/config.txt"), "[all]\n").unwrap();
        let src = d.path().join("pi-src");
        std::fs::create_dir_all(&src).unwrap();
        let rootfs: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let files: [(&str, &[u8]); 4] = [
            ("boot/config.txt", b"[all]\nkernel=vmlinuz\n"),
            (ROOT, &rootfs),
            ("boot/vmlinuz", b"PI KERNEL 2"),
            ("boot/cmdline.txt", b"root=PARTUUID=x edgeimg.slot=a"),
        ];
        let mut payloads = vec![];
        for (i, (name, bytes)) in files.iter().enumerate() {
            let p = src.join(format!("{i}"));
            std::fs::write(&p, bytes).unwrap();
            payloads.push((name.to_string(), p));
        }
        let refs: Vec<(String, &Path)> = payloads
            .iter()
            .map(|(n, p)| (n.clone(), p.as_path()))
            .collect();
        let mut file = vec![];
        format::write(
            &mut file,
            Header {
                name: "edge".into(),
                board: "x86_64".into(),
                arch: "amd64".into(),
                build_id: "00pi".into(),
                edgeimg_version: "0".into(),
                kernel_version: "6.12".into(),
                cmdline: "root=PARTUUID=x ro edgeimg.slot=a".into(),
                created: 0,
                key_id: String::new(),
                generation: 2,
                payloads: vec![],
            },
            &refs,
            &ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        )
        .unwrap();
        (d, root, file, rootfs)
    }

    fn want(file: &[u8]) -> Want {
        Want {
            url: "http://updates.invalid/t.update".parse().unwrap(),
            length: file.len() as u64,
            sha256: Sha256::digest(file).to_vec(),
            trust: Default::default(),
        }
    }

    #[test]
    fn a_pi_update_streams_resumes_and_installs_with_tryboot() {
        let (_d, root, file, rootfs) = pi();
        let plan = apply::plan(&root, &apply::Options::default()).unwrap();
        assert_eq!(plan.slot(), Slot::B);
        let want = want(&file);
        let dir = root.path("/var/lib/edgeimg/update/download");
        // Up to a byte past the root image, in odd pieces, then "cut".
        let cut = file.len() - 20;
        {
            let mut dl = Download::open(&plan, &want, "t", &dir).unwrap();
            for piece in file[..cut].chunks(777) {
                dl.write_all(piece).unwrap();
            }
            dl.checkpoint().unwrap();
        }
        let dev = std::fs::read(root.path("/dev/vda3")).unwrap();
        assert_eq!(&dev[..rootfs.len()], &rootfs[..]);
        assert!(!root.path("/boot/efi/tryboot.txt").exists());
        // The rest of the file, not the root image, is on /var.
        let (_, rest) = state_paths(&dir, &want);
        let rest_len = std::fs::metadata(&rest).unwrap().len() as usize;
        assert_eq!(rest_len, cut - rootfs.len());
        // A fresh open (another process, after a reboot) continues there.
        let mut dl = Download::open(&plan, &want, "t", &dir).unwrap();
        assert_eq!(dl.done(), cut as u64);
        dl.write_all(&file[cut..]).unwrap();
        dl.finish().unwrap();
        dl.install().unwrap();
        let esp = root.path("/boot/efi");
        assert!(
            std::fs::read_to_string(esp.join("tryboot.txt"))
                .unwrap()
                .contains("os_prefix=b/")
        );
        assert_eq!(
            std::fs::read(esp.join("b/vmlinuz")).unwrap(),
            b"PI KERNEL 2"
        );
        assert!(
            std::fs::read_to_string(esp.join("b/cmdline.txt"))
                .unwrap()
                .contains("root=PARTUUID=pu-3")
        );
        assert!(!rest.exists());
    }

    #[test]
    fn a_changed_byte_after_the_root_image_fails_the_resumed_hash() {
        let (_d, root, file, _) = pi();
        let plan = apply::plan(&root, &apply::Options::default()).unwrap();
        let want = want(&file);
        let dir = root.path("/var/lib/edgeimg/update/download");
        let cut = file.len() - 10;
        {
            let mut dl = Download::open(&plan, &want, "t", &dir).unwrap();
            dl.write_all(&file[..cut]).unwrap();
            dl.checkpoint().unwrap();
        }
        let (progress, rest) = state_paths(&dir, &want);
        let mut r = std::fs::read(&rest).unwrap();
        let n = r.len();
        r[n - 3] ^= 1; // in the kernel, after the root image
        std::fs::write(&rest, r).unwrap();
        let mut dl = Download::open(&plan, &want, "t", &dir).unwrap();
        assert_eq!(dl.done(), cut as u64);
        dl.write_all(&file[cut..]).unwrap();
        let e = dl.finish().unwrap_err().to_string();
        assert!(
            e.contains("does not match the signed targets metadata"),
            "{e}"
        );
        drop(dl);
        assert!(!progress.exists() && !rest.exists());
        assert!(!root.path("/boot/efi/tryboot.txt").exists());
        assert!(!root.path("/boot/efi/b").exists());
    }

    #[test]
    fn a_header_that_is_refused_writes_nothing() {
        let (_d, root, mut file, _) = pi();
        // The device runs a newer generation: the version floor.
        std::fs::write(root.path(crate::update::GENERATION_PATH), "3\n").unwrap();
        let plan = apply::plan(&root, &apply::Options::default()).unwrap();
        let w = want(&file);
        let dir = root.path("/var/lib/edgeimg/update/download");
        let mut dl = Download::open(&plan, &w, "t", &dir).unwrap();
        let e = dl.write_all(&file).unwrap_err().to_string();
        assert!(e.contains("refusing to downgrade"), "{e}");
        drop(dl);
        let dev = std::fs::read(root.path("/dev/vda3")).unwrap();
        assert!(dev.iter().all(|&b| b == 0));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        // A length other than the signed one: refused by the header too.
        std::fs::write(root.path(crate::update::GENERATION_PATH), "1\n").unwrap();
        let plan = apply::plan(&root, &apply::Options::default()).unwrap();
        file.push(0);
        let mut w = want(&file);
        w.length -= 2;
        let mut dl = Download::open(&plan, &w, "t", &dir).unwrap();
        let e = dl.write_all(&file).unwrap_err().to_string();
        assert!(e.contains("the header describes"), "{e}");
        drop(dl);
        let dev = std::fs::read(root.path("/dev/vda3")).unwrap();
        assert!(dev.iter().all(|&b| b == 0));
    }
}
