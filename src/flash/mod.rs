//! `edgeimg flash`: write an image (`.img`, `.img.zst`, `.img.xz`) to an SD
//! card, USB stick, disk, or (with `--to-file`) a file.
//!
//! Order: probe and check the target ([`device`]), read the bmap ([`bmap`]),
//! validate `--node` before anything is written, confirm, write only the
//! mapped ranges while checking them against the bmap ([`writer`]), sync, read
//! every written range back and compare SHA-256, then put the node file on the
//! boot partition with mtools (no mount).

pub mod bmap;
pub mod device;
pub mod writer;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmd::{Cmd, MCOPY, MDIR, MMD};
use crate::config::size::human;
use crate::io_error::{IoError, io_err};
use device::{HostView, Kind, Refusal};

#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Bmap(#[from] bmap::BmapError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{0}")]
    Image(String),
    #[error("image {}: ends at byte {at}, before byte {wanted} that its bmap maps (truncated download?)", image.display())]
    Truncated {
        image: PathBuf,
        at: u64,
        wanted: u64,
    },
    #[error("image {}: {range} has SHA-256 {got} but its bmap says {want}: the image or the bmap is damaged, or they belong to different builds", image.display())]
    ImageMismatch {
        image: PathBuf,
        range: String,
        want: String,
        got: String,
    },
    #[error("{}: no room to write at byte {at}: the target is smaller than the image", target.display())]
    TargetFull { target: PathBuf, at: u64 },
    #[error("refusing to write to {}: it is in use (mounted, or opened exclusively by another program)", .0.display())]
    Busy(PathBuf),
    #[error("verify failed on {}: {} of {total} written ranges read back wrong; first: {} read back with SHA-256 {}, expected {} — the medium did not keep what was written (failing card or reader?)", target.display(), mismatches.len(), mismatches[0].range, mismatches[0].got, mismatches[0].want)]
    Verify {
        target: PathBuf,
        total: usize,
        mismatches: Vec<writer::Mismatch>,
    },
    #[error("not confirmed: nothing was written to {}", .0.display())]
    NotConfirmed(PathBuf),
    #[error("node file {}: {msg}", path.display())]
    Node { path: PathBuf, msg: String },
    #[error(transparent)]
    Tool(#[from] crate::cmd::CmdError),
    #[error(transparent)]
    Read(#[from] crate::image_read::ReadError),
}

#[derive(Debug, Clone, Default)]
pub struct FlashOptions {
    pub image: PathBuf,
    pub target: PathBuf,
    /// Explicit bmap (default: beside the image).
    pub bmap: Option<PathBuf>,
    /// Write the whole image even if a bmap is there.
    pub no_bmap: bool,
    pub to_file: bool,
    pub yes: bool,
    pub node: Option<PathBuf>,
    pub json: bool,
    pub quiet: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FlashReport {
    pub image: String,
    pub target: String,
    pub image_size: u64,
    pub written: u64,
    pub verified: u64,
    pub ranges: usize,
    pub bmap: Option<String>,
    pub node_file: bool,
    pub seconds: f64,
    /// Phase times: writing, syncing, reading back.
    pub write_seconds: f64,
    pub sync_seconds: f64,
    pub verify_seconds: f64,
}

/// The bmap beside an image: `x.img.bmap` for `x.img`, `x.img.zst` and
/// `x.img.xz`, else `x.bmap`.
pub fn bmap_beside(image: &Path) -> Option<PathBuf> {
    let raw = crate::image_read::uncompressed_name(image);
    let mut a = raw.clone().into_os_string();
    a.push(".bmap");
    let a = PathBuf::from(a);
    let b = raw.with_extension("bmap");
    [a, b].into_iter().find(|p| p.is_file())
}

/// Reads and validates a node file with the agent's own schema.
pub fn load_node(path: &Path) -> Result<String, FlashError> {
    let text = std::fs::read_to_string(path).map_err(io_err("read node file", path))?;
    edgeimg_contract::schema::NodeConfig::from_toml(&text, path).map_err(|e| FlashError::Node {
        path: path.into(),
        msg: e.to_string(),
    })?;
    Ok(text)
}

/// Progress as a bar (terminal), JSON lines (`--json`) or nothing.
struct Reporter {
    json: bool,
    bar: indicatif::ProgressBar,
    last: Instant,
}

impl Reporter {
    fn new(json: bool) -> Self {
        Reporter {
            json,
            bar: indicatif::ProgressBar::hidden(),
            last: Instant::now() - Duration::from_secs(1),
        }
    }
    fn event(&self, v: serde_json::Value) {
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{v}");
            let _ = out.flush();
        }
    }
    fn phase(&mut self, progress: &crate::progress::Progress, phase: &str, total: u64) {
        self.bar.finish_and_clear();
        if !self.json {
            self.bar = progress.bytes(phase, total);
        }
        self.last = Instant::now() - Duration::from_secs(1);
        self.event(serde_json::json!({"event": "phase", "phase": phase, "total": total}));
    }
    fn tick(&mut self, phase: &str, done: u64, total: u64) {
        self.bar.set_position(done);
        if self.json && (self.last.elapsed() >= Duration::from_millis(250) || done == total) {
            self.last = Instant::now();
            self.event(serde_json::json!({"event": "progress", "phase": phase, "bytes": done, "total": total}));
        }
    }
}

/// Asks on the terminal; anything but "yes"/"y" is a no.
fn confirm(
    image: &Path,
    t: &device::Target,
    image_size: Option<u64>,
    mapped: Option<u64>,
) -> Result<(), FlashError> {
    let mut e = std::io::stderr().lock();
    let size = image_size.map_or("size unknown until decompressed".to_string(), human);
    let _ = writeln!(
        e,
        "edgeimg flash: about to write {} ({size}{}) to",
        image.display(),
        mapped.map_or(String::new(), |m| format!(", {} mapped", human(m)))
    );
    let _ = writeln!(e, "  {}", t.describe());
    for p in &t.partitions {
        let _ = writeln!(
            e,
            "    {:<12} {:>10}  {}",
            p.name,
            human(p.size),
            p.label.clone().unwrap_or_default()
        );
    }
    if t.kind != Kind::Missing {
        let _ = writeln!(e, "Everything on {} will be lost.", t.path.display());
    }
    let _ = write!(e, "Continue? Type yes: ");
    let _ = e.flush();
    let mut line = String::new();
    let stdin = std::io::stdin();
    if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 {
        let _ = writeln!(e);
    }
    match line.trim() {
        "yes" | "y" | "YES" | "Yes" => Ok(()),
        _ => Err(FlashError::NotConfirmed(t.path.clone())),
    }
}

/// Where a flash writes: the block device itself, or (`--to-file`) a
/// temporary file beside the target that is renamed over it only once the
/// write, the verify pass and the node file have all succeeded — a failed
/// flash leaves no partial image under the target's name.
struct Sink {
    file: File,
    /// The path written now (the device, or the temporary file).
    path: PathBuf,
    temp: Option<tempfile::TempPath>,
}

fn open_target(t: &device::Target) -> Result<Sink, FlashError> {
    let p = &t.path;
    match t.kind {
        Kind::BlockDevice => OpenOptions::new()
            .read(true)
            .write(true)
            // O_EXCL on a block device: EBUSY if mounted or claimed — the
            // kernel's own last line of defence behind our checks.
            .custom_flags(libc::O_EXCL)
            .open(p)
            .map(|file| Sink {
                file,
                path: p.clone(),
                temp: None,
            })
            .map_err(|source| {
                if source.raw_os_error() == Some(libc::EBUSY) {
                    FlashError::Busy(p.clone())
                } else {
                    IoError::new("open for writing", p, source).into()
                }
            }),
        Kind::RegularFile | Kind::Missing => {
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            // tempfile creates it O_EXCL, mode 0600, under a random name of
            // letters and digits only (so mtools can address it).
            let tmp = tempfile::Builder::new()
                .prefix(".edgeimg-flash-")
                .suffix(".tmp")
                .tempfile_in(dir)
                .map_err(io_err("create a temporary file in", dir))?;
            let (file, temp) = tmp.into_parts();
            Ok(Sink {
                file,
                path: temp.to_path_buf(),
                temp: Some(temp),
            })
        }
    }
}

/// Gives a `--to-file` target its final mode and name: 0600 when a node file
/// (which may hold a join token) was written into it, else 0644.
fn publish_file(
    temp: tempfile::TempPath,
    target: &Path,
    with_node: bool,
) -> Result<(), FlashError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if with_node { 0o600 } else { 0o644 };
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("set the mode of", &temp))?;
    File::open(&temp)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", &temp))?;
    temp.persist(target)
        .map_err(|e| IoError::new("rename the flashed image to", target, e.error))?;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable once the directory is.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// How mtools is pointed at an image: `-i NAME@@OFFSET` with `NAME` relative
/// to the returned directory. mtools splits its argument at `@@`, so a path
/// whose own name holds `@@` would address a different file: refused. The
/// directory part is never passed to mtools, only used as its working
/// directory, so `@@` there is harmless.
fn mtools_spec(target: &Path, off: u64) -> Result<(PathBuf, String), FlashError> {
    let real;
    let mut target = target;
    if target
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes().windows(2).any(|w| w == b"@@"))
    {
        // A device reached through a link such as /dev/disk/by-id/…@@…:
        // its real node is named without '@@'.
        real = std::fs::canonicalize(target).map_err(io_err("resolve", target))?;
        target = &real;
    }
    let name = target.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        FlashError::Image(format!(
            "{}: cannot place the node file: the name is not UTF-8",
            target.display()
        ))
    })?;
    if name.contains("@@") {
        return Err(FlashError::Image(format!(
            "{}: cannot place the node file: mtools reads '@@' in a file name as an offset",
            target.display()
        )));
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, format!("./{name}@@{off}")))
}

/// Byte offset of partition 1 (the FAT boot partition) on the written target.
fn boot_offset(target: &Path) -> Result<u64, FlashError> {
    let mut f = File::open(target).map_err(io_err("open", target))?;
    let table = crate::image_read::read_table(&mut f, target)?;
    let p = table.partition(1).ok_or_else(|| {
        FlashError::Image(format!(
            "{}: the image has no partition 1 (boot partition) for the node file",
            target.display()
        ))
    })?;
    let mut head = vec![0u8; 4096];
    use std::os::unix::fs::FileExt;
    f.read_exact_at(&mut head, p.offset)
        .map_err(io_err("read boot partition of", target))?;
    let fs = crate::image_read::probe_fs(&head);
    if fs.fs != "vfat" {
        return Err(FlashError::Image(format!(
            "{}: partition 1 is {}, not the FAT boot partition; cannot place the node file",
            target.display(),
            fs.fs
        )));
    }
    Ok(p.offset)
}

/// Copies `node` (already validated) to `edgeimg/node.toml` on the boot
/// partition of `target`, with mtools at the partition's offset.
pub fn write_node_file(target: &Path, node: &Path) -> Result<(), FlashError> {
    let off = boot_offset(target)?;
    let (cwd, spec) = mtools_spec(target, off)?;
    // mtools runs in the target's directory: the node path must survive that.
    let node = std::path::absolute(node).map_err(io_err("resolve", node))?;
    let rel = edgeimg_contract::schema::NODE_CONFIG_RELPATH;
    let dir = rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let exists = Cmd::new(MDIR)
        .env("MTOOLS_SKIP_CHECK", "1")
        .current_dir(&cwd)
        .args(["-b", "-i", &spec, &format!("::{dir}")])
        .run()
        .is_ok();
    if !exists {
        Cmd::new(MMD)
            .env("MTOOLS_SKIP_CHECK", "1")
            .current_dir(&cwd)
            .args(["-i", &spec, &format!("::{dir}")])
            .run()?;
    }
    Cmd::new(MCOPY)
        .env("MTOOLS_SKIP_CHECK", "1")
        .current_dir(&cwd)
        .args(["-o", "-i", &spec])
        .arg(&node)
        .arg(format!("::{rel}"))
        .run()?;
    Ok(())
}

/// Flashes `o.image` to `o.target`. Every refusal happens before the target
/// is opened for writing.
pub fn flash(o: &FlashOptions) -> Result<FlashReport, FlashError> {
    let started = Instant::now();
    let progress = crate::progress::Progress::new(o.quiet || o.json);
    let host = HostView::current();
    let img_meta = std::fs::metadata(&o.image).map_err(io_err("open image", &o.image))?;
    if !img_meta.is_file() {
        return Err(FlashError::Image(format!(
            "{} is not an image file",
            o.image.display()
        )));
    }
    let target = device::probe(&o.target, &host)?;
    device::check_target(&target, o.to_file, &o.image, &host)?;

    let compressed = crate::image_read::uncompressed_name(&o.image) != o.image;
    let bmap_path = if o.no_bmap {
        None
    } else {
        o.bmap.clone().or_else(|| bmap_beside(&o.image))
    };
    let bmap = bmap_path.as_deref().map(bmap::Bmap::read).transpose()?;
    let image_size = match (&bmap, compressed) {
        (Some(b), false) if b.image_size != img_meta.len() => {
            return Err(FlashError::Image(format!(
                "{} is {} bytes but its bmap {} is for a {}-byte image: they belong to different builds",
                o.image.display(),
                img_meta.len(),
                bmap_path.as_ref().unwrap().display(),
                b.image_size
            )));
        }
        (Some(b), _) => Some(b.image_size),
        (None, false) => Some(img_meta.len()),
        (None, true) => crate::manifest::Manifest::beside(&o.image)
            .map_err(|e| FlashError::Image(format!("{e:#}")))?
            .map(|(_, m)| m.image.size),
    };
    if let Some(s) = image_size {
        device::check_size(&target, s)?;
    }
    if let Some(n) = &o.node {
        load_node(n)?;
        if target.kind == Kind::BlockDevice {
            // Refused now rather than after the image is written.
            mtools_spec(&target.path, 0)?;
        }
    }
    let mapped = bmap.as_ref().map(|b| b.mapped_bytes());
    let reporter_note = |s: &str| {
        if !o.quiet && !o.json {
            eprintln!("{s}");
        }
    };
    if bmap.is_none() {
        reporter_note(&format!(
            "edgeimg flash: no bmap for {}: writing the whole image",
            o.image.display()
        ));
    }
    if !o.yes {
        confirm(&o.image, &target, image_size, mapped)?;
    }

    let mut rep = Reporter::new(o.json);
    rep.event(serde_json::json!({
        "event": "start", "image": o.image.display().to_string(),
        "target": target.path.display().to_string(), "target_kind": target.kind.key(),
        "target_size": target.size, "target_model": target.model, "target_removable": target.removable,
        "image_size": image_size, "mapped_bytes": mapped, "bmap": bmap_path.as_ref().map(|p| p.display().to_string()),
    }));
    let ranges: Vec<writer::Range> = match &bmap {
        Some(b) => b
            .ranges
            .iter()
            .zip(b.byte_ranges())
            .map(|(r, (s, e))| writer::Range {
                start: s,
                end: e,
                blocks: Some((r.first, r.last)),
                sha256: r.sha256.clone(),
            })
            .collect(),
        None => vec![writer::Range {
            start: 0,
            end: u64::MAX,
            blocks: None,
            sha256: None,
        }],
    };
    let Sink {
        file,
        path: sink_path,
        temp,
    } = open_target(&target)?;
    let is_dev = target.kind == Kind::BlockDevice;
    if !is_dev && let Some(s) = image_size {
        file.set_len(s).map_err(io_err("size", &target.path))?;
    }
    let write_total = mapped.or(image_size).unwrap_or(0);
    rep.phase(&progress, "write", write_total);
    let t_write = Instant::now();
    let written = writer::write(&o.image, ranges, &file, &target.path, !is_dev, &mut |n| {
        rep.tick("write", n, write_total)
    })?;
    if !is_dev {
        // Without a known size up front (compressed, no bmap), size it now.
        file.set_len(written.image_end.max(image_size.unwrap_or(0)))
            .map_err(io_err("size", &target.path))?;
    }
    if let Some(off) = writer::inject_fault(&file, &target.path)? {
        reporter_note(&format!(
            "edgeimg flash: TEST FAULT INJECTION ({}): flipped the byte at {off}",
            writer::CORRUPT_AT_ENV
        ));
    }
    rep.bar.finish_and_clear();
    let write_seconds = t_write.elapsed().as_secs_f64();
    reporter_note(&format!("edgeimg flash: syncing {}", target.path.display()));
    let t_sync = Instant::now();
    writer::sync(&file, &target.path, is_dev)?;
    let sync_seconds = t_sync.elapsed().as_secs_f64();
    let t_verify = Instant::now();
    let verify_total: u64 = written.ranges.iter().map(|r| r.end - r.start).sum();
    rep.phase(&progress, "verify", verify_total);
    let mismatches = writer::verify(&file, &target.path, &written, &mut |n| {
        rep.tick("verify", n, verify_total)
    })?;
    rep.bar.finish_and_clear();
    let verify_seconds = t_verify.elapsed().as_secs_f64();
    if !mismatches.is_empty() {
        return Err(FlashError::Verify {
            target: target.path.clone(),
            total: written.ranges.len(),
            mismatches,
        });
    }
    drop(file);
    if let Some(n) = &o.node {
        write_node_file(&sink_path, n)?;
        if is_dev {
            let f = File::open(&target.path).map_err(io_err("open", &target.path))?;
            f.sync_all().map_err(io_err("sync", &target.path))?;
        }
        reporter_note(&format!(
            "edgeimg flash: wrote {} to the boot partition as {}",
            n.display(),
            edgeimg_contract::schema::NODE_CONFIG_RELPATH
        ));
    }
    if let Some(temp) = temp {
        publish_file(temp, &target.path, o.node.is_some())?;
    }
    if is_dev {
        reread_partitions(&target.path);
    }
    let report = FlashReport {
        image: o.image.display().to_string(),
        target: target.path.display().to_string(),
        image_size: written.image_end.max(image_size.unwrap_or(0)),
        written: written.bytes,
        verified: verify_total,
        ranges: written.ranges.len(),
        bmap: bmap_path.map(|p| p.display().to_string()),
        node_file: o.node.is_some(),
        seconds: started.elapsed().as_secs_f64(),
        write_seconds,
        sync_seconds,
        verify_seconds,
    };
    rep.event(serde_json::json!({"event": "done", "report": report}));
    Ok(report)
}

/// Asks the kernel to re-read the partition table (best effort: the new
/// partitions appear without replugging).
fn reread_partitions(dev: &Path) {
    const BLKRRPART: libc::c_ulong = 0x125f;
    if let Ok(f) = File::open(dev) {
        use std::os::fd::AsRawFd;
        // SAFETY: ioctl without arguments on our own fd.
        unsafe { libc::ioctl(f.as_raw_fd(), BLKRRPART as _) };
    }
}
