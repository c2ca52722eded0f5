//! `edgeimg-agent update check` and `update pull`: the device asks its
//! update repository (TUF, verified by [`tuf_client`]) for the newest full
//! update of its board and architecture above the generation it runs,
//! downloads it with resume straight into the inactive slot ([`stream`]:
//! its signed header checked as `update apply` checks it before anything
//! is written), or rebuilds it there from a delta and the running slot,
//! and installs it with `update apply`'s steps once the whole file is
//! verified. A release whose trial boot failed is recorded in the
//! status ([`state`]) and not offered again.

use crate::config;
use crate::error::{Context, Error, Result};
use crate::root::Root;
use crate::update::state::{Pending, Status};
use crate::update::window::Window;
use crate::update::{apply, download, state, stream, tuf_client};
use edgeimg_contract::update::{REPOSITORY_PATH, TRUSTED_ROOT_PATH};
use std::fs::File;
use std::path::Path;

/// Where a download's small state is kept (the data partition): the
/// progress record and the update minus its root image (which goes to the
/// slot), and a delta being downloaded.
pub const DOWNLOAD_DIR: &str = "/var/lib/edgeimg/update/download";

/// The repository this node uses: node.toml's `[update] repository`, else
/// the image's. `None` when neither names one.
pub fn configured(root: &Root) -> Result<Option<tuf_client::Location>> {
    let image = config::load_image(root)?;
    let node = config::load_node(root, &image)?;
    let from_node = node.and_then(|n| n.update).and_then(|u| u.repository);
    let s = match from_node {
        Some(s) => s,
        None => match crate::fsutil::read_opt(&root.path(REPOSITORY_PATH))? {
            Some(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => return Ok(None),
        },
    };
    tuf_client::Location::parse(&s).map(Some)
}

/// A full update the repository offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub generation: u64,
    pub created: String,
    pub length: u64,
    pub sha256: Vec<u8>,
}

/// The newest (generation, then creation time) full update for `board` and
/// `arch` above generation `running`, skipping `failed` targets.
pub fn newest<'a>(
    targets: impl Iterator<Item = (&'a str, &'a tough::schema::Target)>,
    board: &str,
    arch: &str,
    running: u64,
    failed: &[String],
) -> Option<Candidate> {
    let s = |t: &tough::schema::Target, k: &str| {
        t.custom.get(k).and_then(|v| v.as_str()).map(str::to_string)
    };
    targets
        .filter(|(_, t)| s(t, "kind").as_deref() == Some("full"))
        .filter(|(_, t)| s(t, "board").as_deref() == Some(board))
        .filter(|(_, t)| s(t, "arch").as_deref() == Some(arch))
        .filter(|(n, _)| !failed.iter().any(|f| f == n))
        .filter_map(|(n, t)| {
            let generation = t.custom.get("generation")?.as_u64()?;
            Some(Candidate {
                name: n.to_string(),
                generation,
                created: s(t, "created").unwrap_or_default(),
                length: t.length,
                sha256: t.hashes.sha256.to_vec(),
            })
        })
        .filter(|c| c.generation > running)
        .max_by(|a, b| (a.generation, &a.created).cmp(&(b.generation, &b.created)))
}

/// A delta target that rebuilds `target` from a release of `base_generation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub name: String,
    pub target: String,
    pub base_generation: u64,
    pub length: u64,
    pub sha256: Vec<u8>,
}

fn deltas<'a>(targets: impl Iterator<Item = (&'a str, &'a tough::schema::Target)>) -> Vec<Delta> {
    targets
        .filter(|(_, t)| t.custom.get("kind").and_then(|v| v.as_str()) == Some("delta"))
        .filter_map(|(n, t)| {
            Some(Delta {
                name: n.to_string(),
                target: t.custom.get("target")?.as_str()?.to_string(),
                base_generation: t.custom.get("base_generation")?.as_u64()?,
                length: t.length,
                sha256: t.hashes.sha256.to_vec(),
            })
        })
        .collect()
}

/// What the repository offers this device, and where to get it.
pub struct Offer {
    pub candidate: Option<Candidate>,
    /// The candidate's deltas from a release of the running generation.
    pub deltas: Vec<Delta>,
    targets_base: url::Url,
    trust: tuf_client::Trust,
}

impl Offer {
    pub fn want(&self, c: &Candidate) -> Result<download::Want> {
        self.want_target(&c.name, c.length, &c.sha256)
    }

    fn want_target(&self, name: &str, length: u64, sha256: &[u8]) -> Result<download::Want> {
        // Consistent snapshots: targets are stored under their SHA-256.
        let url = self
            .targets_base
            .join(&format!("{}.{name}", crate::hex::hex(sha256)))
            .map_err(|e| Error::msg(format!("target {name}: {e}")))?;
        Ok(download::Want {
            url,
            length,
            sha256: sha256.to_vec(),
            trust: self.trust.clone(),
        })
    }
}

/// Loads the repository at `location` (verified against the image's
/// trusted root, tough's datastore under the root's `/var`) and picks the
/// update for this device.
pub fn offer(root: &Root, location: &tuf_client::Location, status: &Status) -> Result<Offer> {
    let image = config::load_image(root)?;
    let trusted = root.path(TRUSTED_ROOT_PATH);
    let trusted_root = std::fs::read(&trusted).map_err(|e| {
        Error::msg(format!(
            "{}: {e}: the image trusts no update repository (build it with [update] trusted_root)",
            trusted.display()
        ))
    })?;
    let trust = tuf_client::Trust::load(root)?;
    let repo = tuf_client::load(
        location,
        &image.board,
        &trusted_root,
        &root.path(tuf_client::DATASTORE),
        &trust,
    )?;
    let running = crate::update::running_generation(root)?;
    let candidate = newest(
        repo.targets()
            .signed
            .targets
            .iter()
            .map(|(n, t)| (n.raw(), t)),
        &image.board,
        &image.arch,
        running,
        &status.failed,
    );
    let all = || {
        repo.targets()
            .signed
            .targets
            .iter()
            .map(|(n, t)| (n.raw(), t))
    };
    let deltas = match &candidate {
        None => vec![],
        Some(c) => deltas(all())
            .into_iter()
            .filter(|d| d.target == c.name && d.base_generation == running)
            .collect(),
    };
    Ok(Offer {
        candidate,
        deltas,
        targets_base: location.board_dir(&image.board, "targets")?,
        trust,
    })
}

/// One pull at a time (the timer's and an operator's): an exclusive lock
/// on the status directory, waited for, released when the process ends.
pub(crate) fn lock(root: &Root) -> Result<std::fs::File> {
    let dir = root.path(state::STATUS_PATH);
    let dir = dir.parent().unwrap_or(Path::new("/"));
    crate::fsutil::mkdir_p(dir)?;
    let f = std::fs::File::open(dir).map_err(|e| Error::msg(format!("{}: {e}", dir.display())))?;
    // SAFETY: flock on a descriptor this function owns.
    let r = unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
    if r != 0 {
        crate::bail!(
            "cannot lock {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(f)
}

/// A trial boot that ended back on the old slot failed: record it.
pub(crate) fn settle_pending(root: &Root, status: &mut Status) -> Result<()> {
    let Some(p) = status.pending.clone() else {
        return Ok(());
    };
    let cmdline = crate::fsutil::read(&root.path("/proc/cmdline"))?;
    let slot = apply::running_slot(&cmdline)?;
    if slot.to_string() == p.slot {
        crate::log(format!("update: running {} in slot {slot}", p.target));
        status.pending = None;
    } else if config::boot_id(root)? != p.boot_id {
        crate::log(format!(
            "update: the trial boot of {} failed (back on slot {slot}): not offered again",
            p.target
        ));
        if !status.failed.contains(&p.target) {
            status.failed.push(p.target.clone());
        }
        status.pending = None;
    }
    Ok(())
}

/// What `pull` should do once the update is downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only report what is offered.
    Check,
    /// Download (resuming), then install.
    Pull,
}

/// `update pull` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullOptions {
    /// Install only inside this window (download at any time).
    pub window: Option<Window>,
    /// Reboot into the trial once installed.
    pub reboot: bool,
}

/// The environment variable the pull service's policy file sets.
pub const WINDOW_ENV: &str = "EDGEIMG_UPDATE_WINDOW";

/// `[--window HH:MM-HH:MM] [--reboot]`; the window defaults to
/// [`WINDOW_ENV`].
pub fn parse_args(args: &[&str]) -> Result<PullOptions> {
    let mut o = PullOptions::default();
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        match a {
            "--reboot" => o.reboot = true,
            "--window" => {
                let w = it
                    .next()
                    .ok_or_else(|| Error::msg("--window needs HH:MM-HH:MM"))?;
                o.window = Some(Window::parse(w)?);
            }
            _ => crate::bail!("unknown argument {a}"),
        }
    }
    if o.window.is_none()
        && let Ok(w) = std::env::var(WINDOW_ENV)
        && !w.trim().is_empty()
    {
        o.window = Some(Window::parse(&w)?);
    }
    Ok(o)
}

/// `update check` / `update pull`. Records the outcome in the status file.
pub fn run(root: &Root, mode: Mode, opts: &PullOptions) -> Result<()> {
    run_at(root, mode, opts, None)
}

/// [`run`] from `location` (a mounted repository copy, see
/// [`crate::update::usb`]) instead of the configured repository, when given.
pub fn run_at(
    root: &Root,
    mode: Mode,
    opts: &PullOptions,
    location: Option<&tuf_client::Location>,
) -> Result<()> {
    let _lock = lock(root)?;
    let mut status = Status::load(root)?;
    let r = run_inner(root, mode, opts, location, &mut status);
    status.current_generation = crate::update::running_generation(root).unwrap_or(0);
    status.last_error = r.as_ref().err().map(|e| e.to_string());
    status.save(root)?;
    r
}

fn run_inner(
    root: &Root,
    mode: Mode,
    opts: &PullOptions,
    location: Option<&tuf_client::Location>,
    status: &mut Status,
) -> Result<()> {
    settle_pending(root, status)?;
    let location = match location {
        Some(l) => l.clone(),
        None => configured(root)?.ok_or_else(|| {
            Error::msg(
                "no update repository configured ([update] repository of the image, or of node.toml)",
            )
        })?,
    };
    crate::log(format!("update: checking {location}"));
    let offer = offer(root, &location, status)?;
    status.last_check = Some(config::now_secs());
    status.available = offer.candidate.as_ref().map(|c| c.name.clone());
    let Some(c) = offer.candidate.clone() else {
        crate::log("update: no newer update for this device");
        println!("edgeimg: up to date");
        return Ok(());
    };
    println!(
        "edgeimg: update available: {} (generation {}, {} bytes)",
        c.name, c.generation, c.length
    );
    if mode == Mode::Check {
        return Ok(());
    }
    if let Some(p) = &status.pending
        && p.target == c.name
    {
        crate::log(format!(
            "update: {} is installed and waits for its trial boot: reboot",
            c.name
        ));
        return Ok(());
    }
    // This device's checks that need no update (an unconfirmed trial boot
    // is refused here, before anything is fetched), then the download into
    // the inactive slot: its signed header is checked before a byte is
    // written, and a download of the same target into the same slot that
    // was cut is continued.
    let plan = apply::plan(root, &apply::Options::default())?;
    let want = offer.want(&c)?;
    let dir = root.path(DOWNLOAD_DIR);
    let mut dl = stream::Download::open(&plan, &want, &c.name, &dir)?;
    // Only this target's download is kept: another one waiting for the
    // window is gone.
    if status.downloaded.as_ref() != Some(&c.name) || !dl.complete() {
        status.downloaded = None;
    }
    if !dl.complete() {
        if dl.done() == 0
            && let Some(d) = offer.deltas.first()
        {
            // A delta is worth trying: a base that is not the running slot
            // is found by its checks, chunk by chunk, before a chunk is
            // written; what was written is the full update's first bytes,
            // and its download continues from there.
            if let Err(e) = via_delta(root, &offer, d, &mut dl) {
                crate::log(format!(
                    "update: the delta {} does not apply ({e}): taking the full update",
                    d.name
                ));
                dl.checkpoint()?;
            }
        }
        if !dl.complete() {
            crate::log(format!("update: downloading {}", want.url));
            dl.fetch()?;
        }
    }
    if let Some(w) = opts.window
        && !w.contains(config::now_secs())
    {
        crate::log(format!(
            "update: {} downloaded and verified; it installs in the maintenance window {w}",
            c.name
        ));
        status.downloaded = Some(c.name.clone());
        return Ok(());
    }
    // The download is spent either way: a refused one would be refused again.
    let r = dl.install();
    status.downloaded = None;
    r?;
    status.pending = Some(Pending {
        target: c.name.clone(),
        generation: c.generation,
        slot: plan.slot().to_string(),
        boot_id: config::boot_id(root)?,
    });
    if opts.reboot {
        crate::log("update: rebooting into the trial boot");
        // The Pi's firmware reads tryboot.txt only after a tryboot reboot.
        let image = config::load_image(root)?;
        if apply::boot_partition(root, &image)?.1 {
            root.run("systemctl", &["reboot", "0 tryboot"])?;
        } else {
            root.run("systemctl", &["reboot"])?;
        }
    }
    Ok(())
}

/// Downloads delta `d` (with resume, into the download directory) and
/// rebuilds the full update from it and the running slot into `dl`, i.e.
/// into the inactive slot, checking the whole file's signed SHA-256.
fn via_delta(root: &Root, offer: &Offer, d: &Delta, dl: &mut stream::Download) -> Result<()> {
    let want = offer.want_target(&d.name, d.length, &d.sha256)?;
    crate::log(format!("update: downloading the delta {}", want.url));
    let dir = root.path(DOWNLOAD_DIR);
    let delta_file = download::fetch(&want, &dir)?;
    let base = apply::running_device(root)?;
    let mut slot = crate::update::delta_base::RunningSlot::find(root, &base)?;
    let r = File::open(&delta_file)
        .with_context(|| delta_file.display().to_string())
        .and_then(|f| {
            edgeimg_contract::update::delta::apply(
                &mut slot,
                &mut std::io::BufReader::new(f),
                &mut *dl,
            )
            .with_context(|| delta_file.display().to_string())
        });
    let _ = std::fs::remove_file(&delta_file);
    r?;
    dl.finish()?;
    crate::log(format!(
        "update: rebuilt {} from the delta {} and the running slot {}",
        d.target,
        d.name,
        base.display()
    ));
    Ok(())
}

/// `update status`.
pub fn print_status(root: &Root) -> Result<()> {
    state::print(root)
}
