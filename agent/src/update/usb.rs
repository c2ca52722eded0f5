//! `edgeimg-agent update usb`: updates from a removable medium, for sites
//! without a network.
//!
//! The image's udev rule (`90-edgeimg-update-usb.rules`) starts
//! `edgeimg-update-usb@<device>.service` for a vfat or ext4 filesystem
//! labelled [`USB_LABEL`], at boot (coldplug) or when inserted; the service
//! runs `update usb --device /dev/<device> --reboot`, which mounts it
//! read-only, nosuid, nodev, noexec at `/run/edgeimg/usb/<device>`, looks at
//! what it carries ([`inspect`]), installs, unmounts, and reboots into the
//! trial boot when something was installed.
//!
//! What a medium may carry, at its top level:
//! - `repository/`: a copy of `edgeimg publish --repo`'s directory
//!   (`repository/<board>/metadata/*.json`, `repository/<board>/targets/`).
//!   It is pulled from exactly as `update pull` pulls from a directory
//!   ([`pull::run_at`]): TUF metadata verified against the image's trusted
//!   root, the same datastore (rollback and freeze protection), the failed
//!   releases skipped, only a generation above the running one taken;
//! - or exactly one `*.update` file: checked as `update apply` checks it
//!   (signature, board, architecture, every hash, the version floor), and
//!   taken only when its generation is above the running one (as a pull
//!   would), so a stick left in does not install the same release again on
//!   the next boot, and never a release whose trial boot failed here.
//!
//! The maintenance window does not apply: someone inserted the medium, so
//! the update installs at once. Anything else on the medium is refused with
//! one reason and nothing written: both kinds at once, several update
//! files, a symbolic link (which could point off the medium), a special
//! file, an update file larger than [`MAX_UPDATE_BYTES`].
//!
//! Every outcome prints one line (stdout; the unit sends it to the journal
//! and the console): [`INSTALLED_PREFIX`], [`NOTHING_PREFIX`] or
//! [`REFUSED_PREFIX`].

use crate::config;
use crate::error::{Error, Result};
use crate::root::Root;
use crate::update::format::{self, Expect, Header};
use crate::update::state::{Pending, Status};
use crate::update::{TRUSTED_KEY_PATH, apply, keys, pull, tuf_client};
pub use edgeimg_contract::update::{USB_LABEL, USB_MOUNT_DIR};
use std::path::{Path, PathBuf};

/// The repository copy's directory at the top of the medium.
pub const REPOSITORY_DIR: &str = "repository";
/// An update file larger than this is refused before it is read.
pub const MAX_UPDATE_BYTES: u64 = 32 << 30;
/// Entries at the top of the medium, and in the board's repository copy,
/// looked at before giving up.
const MAX_ENTRIES: usize = 100_000;
/// Directory depth of the repository copy looked at.
const MAX_DEPTH: usize = 8;

/// The outcome lines.
pub const INSTALLED_PREFIX: &str = "edgeimg: usb update: installed ";
pub const NOTHING_PREFIX: &str = "edgeimg: usb update: nothing to install";
pub const REFUSED_PREFIX: &str = "edgeimg: usb update: refused: ";

/// What a medium carries for this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Medium {
    /// A repository copy: the `repository/` directory.
    Repository(PathBuf),
    /// One update file at the top level.
    File(PathBuf),
    /// Nothing for this device, and why.
    Nothing(String),
}

/// Where the medium is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Already mounted at this directory.
    Mount(PathBuf),
    /// A block device (`/dev/NAME`), mounted here under [`USB_MOUNT_DIR`].
    Device(String),
}

/// `update usb` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Reboot into the trial boot once something is installed.
    pub reboot: bool,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Installed into the inactive slot (or installed earlier in this boot
    /// and still waiting for its trial boot).
    Installed { name: String, generation: u64 },
    /// Nothing newer for this device, and why.
    Nothing(String),
}

/// `MOUNTPOINT [--reboot]` or `--device /dev/NAME [--reboot]`.
pub fn parse_args(args: &[&str]) -> Result<(Source, Options)> {
    let mut o = Options::default();
    let mut source = None;
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        let s = match a {
            "--reboot" => {
                o.reboot = true;
                continue;
            }
            "--device" => {
                let d = it
                    .next()
                    .ok_or_else(|| Error::msg("--device needs /dev/NAME"))?;
                device_name(d)?;
                Source::Device(d.to_string())
            }
            _ if a.starts_with('-') => crate::bail!("unknown option {a}"),
            _ if !a.starts_with('/') => crate::bail!("{a}: the mount point must be absolute"),
            _ => Source::Mount(PathBuf::from(a)),
        };
        if source.is_some() {
            crate::bail!("one medium only (got {a} too)");
        }
        source = Some(s);
    }
    let source = source.ok_or_else(|| Error::msg("no mount point or --device given"))?;
    Ok((source, o))
}

/// `NAME` of `/dev/NAME`: a kernel block device name (`sdb1`, `vdb`,
/// `mmcblk1p1`), which also names the mount point.
pub fn device_name(dev: &str) -> Result<&str> {
    let name = dev.strip_prefix("/dev/").unwrap_or("");
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !plain {
        crate::bail!("--device {dev:?}: expected /dev/<kernel device name>");
    }
    Ok(name)
}

/// Looks at the top of the medium mounted at `mount` for this `board`;
/// reads nothing but directory entries and their types. A medium that
/// cannot be taken as it is is an error, with the one reason.
pub fn inspect(mount: &Path, board: &str) -> Result<Medium> {
    let io = |p: &Path, e: std::io::Error| Error::msg(format!("{}: {e}", p.display()));
    let md = std::fs::symlink_metadata(mount).map_err(|e| io(mount, e))?;
    if !md.is_dir() {
        crate::bail!("{} is not a directory", mount.display());
    }
    let mut repository = None;
    let mut updates = Vec::new();
    for (n, e) in std::fs::read_dir(mount)
        .map_err(|e| io(mount, e))?
        .enumerate()
    {
        if n >= MAX_ENTRIES {
            crate::bail!(
                "more than {MAX_ENTRIES} entries at the top of the medium: not an update medium"
            );
        }
        let e = e.map_err(|e| io(mount, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.eq_ignore_ascii_case(REPOSITORY_DIR) {
            repository = Some(e.path());
        } else if name.to_ascii_lowercase().ends_with(".update") && !name.starts_with('.') {
            updates.push(e.path());
        }
    }
    updates.sort();
    let names = |v: &[PathBuf]| {
        v.iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if repository.is_some() && !updates.is_empty() {
        crate::bail!(
            "the medium holds both a repository copy ({REPOSITORY_DIR}/) and update files ({}): keep one of them",
            names(&updates)
        );
    }
    if updates.len() > 1 {
        crate::bail!(
            "the medium holds {} update files ({}): keep exactly one",
            updates.len(),
            names(&updates)
        );
    }
    if let Some(repo) = repository {
        return inspect_repository(&repo, board);
    }
    let Some(file) = updates.pop() else {
        return Ok(Medium::Nothing(format!(
            "no {REPOSITORY_DIR}/ and no .update file on the medium"
        )));
    };
    let md = std::fs::symlink_metadata(&file).map_err(|e| io(&file, e))?;
    if md.file_type().is_symlink() {
        crate::bail!(
            "{} is a symbolic link (it could point off the medium): copy the update file itself",
            file.display()
        );
    }
    if !md.is_file() {
        crate::bail!("{} is not a regular file", file.display());
    }
    if md.len() > MAX_UPDATE_BYTES {
        crate::bail!(
            "{} is {} bytes, more than the {MAX_UPDATE_BYTES} bytes an update may have",
            file.display(),
            md.len()
        );
    }
    Ok(Medium::File(file))
}

/// The repository copy: this board's directory, a plain tree of
/// directories and regular files (no links, no special files).
fn inspect_repository(repo: &Path, board: &str) -> Result<Medium> {
    let plain_dir = |p: &Path| -> Result<bool> {
        match std::fs::symlink_metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::msg(format!("{}: {e}", p.display()))),
            Ok(m) if m.file_type().is_symlink() => crate::bail!(
                "{} is a symbolic link (it could point off the medium): copy the repository itself",
                p.display()
            ),
            Ok(m) if !m.is_dir() => crate::bail!("{} is not a directory", p.display()),
            Ok(_) => Ok(true),
        }
    };
    plain_dir(repo)?;
    let dir = repo.join(board);
    if !plain_dir(&dir)? {
        return Ok(Medium::Nothing(format!(
            "the repository copy has no {board}/ (this device's board)"
        )));
    }
    if !plain_dir(&dir.join("metadata"))? {
        crate::bail!(
            "{} has no metadata/: not a copy of an `edgeimg publish` repository",
            dir.display()
        );
    }
    let mut seen = 0;
    walk(&dir, 0, &mut seen)?;
    Ok(Medium::Repository(repo.to_path_buf()))
}

fn walk(dir: &Path, depth: usize, seen: &mut usize) -> Result<()> {
    if depth > MAX_DEPTH {
        crate::bail!("{}: directories nested too deep", dir.display());
    }
    let io = |e: std::io::Error| Error::msg(format!("{}: {e}", dir.display()));
    for e in std::fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        *seen += 1;
        if *seen > MAX_ENTRIES {
            crate::bail!("more than {MAX_ENTRIES} files in the repository copy");
        }
        let t = e.file_type().map_err(io)?;
        let p = e.path();
        if t.is_symlink() {
            crate::bail!(
                "{} is a symbolic link (it could point off the medium): copy the repository itself",
                p.display()
            );
        } else if t.is_dir() {
            walk(&p, depth + 1, seen)?;
        } else if !t.is_file() {
            crate::bail!("{} is not a regular file", p.display());
        }
    }
    Ok(())
}

/// `update usb`: mounts the medium (with `--device`), installs what it
/// carries, unmounts, and reboots into the trial boot when asked. Prints
/// the outcome line, the reason included.
pub fn run(root: &Root, source: &Source, opts: &Options) -> Result<Outcome> {
    let r = match source {
        Source::Mount(dir) => install_from(root, dir),
        Source::Device(dev) => mounted(root, dev, |dir| install_from(root, dir)),
    };
    let r = r.and_then(|o| {
        match &o {
            Outcome::Installed { name, generation } if opts.reboot => {
                println!(
                    "{INSTALLED_PREFIX}{name} (generation {generation}), rebooting into the trial boot"
                );
                reboot(root)?;
            }
            Outcome::Installed { name, generation } => println!(
                "{INSTALLED_PREFIX}{name} (generation {generation}); reboot to start its trial boot"
            ),
            Outcome::Nothing(why) => println!("{NOTHING_PREFIX}: {why}"),
        }
        Ok(o)
    });
    if let Err(e) = &r {
        println!("{REFUSED_PREFIX}{e}");
    }
    r
}

/// Runs `f` on `dev` mounted read-only, nosuid, nodev, noexec at
/// `USB_MOUNT_DIR/NAME`; unmounts afterwards whatever `f` returned.
fn mounted<T>(root: &Root, dev: &str, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let name = device_name(dev)?;
    let base = root.path(USB_MOUNT_DIR);
    crate::fsutil::mkdir_p(&base)?;
    std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| Error::msg(format!("{}: {e}", base.display())))?;
    let dir = base.join(name);
    crate::fsutil::mkdir_p(&dir)?;
    let d = dir.to_string_lossy().into_owned();
    crate::log(format!("update: usb: mounting {dev} read-only at {d}"));
    root.run(
        "mount",
        &["-t", "vfat,ext4", "-o", "ro,nosuid,nodev,noexec", dev, &d],
    )
    .map_err(|e| Error::msg(format!("cannot mount {dev} ({USB_LABEL}): {e}")))?;
    let r = f(&dir);
    match root.run("umount", &[&d]) {
        Ok(_) => {
            let _ = std::fs::remove_dir(&dir);
        }
        Err(e) => crate::log(format!("update: usb: cannot unmount {d}: {e}")),
    }
    r
}

/// Looks at the medium mounted at `dir` and installs what it carries.
pub fn install_from(root: &Root, dir: &Path) -> Result<Outcome> {
    let image = config::load_image(root)?;
    match inspect(dir, &image.board)? {
        Medium::Nothing(why) => Ok(Outcome::Nothing(why)),
        Medium::Repository(repo) => from_repository(root, &repo),
        Medium::File(file) => from_file(root, &file, &image),
    }
}

/// `update pull` from the copy, the maintenance window aside.
fn from_repository(root: &Root, repo: &Path) -> Result<Outcome> {
    let s = repo
        .to_str()
        .ok_or_else(|| Error::msg(format!("{}: not a UTF-8 path", repo.display())))?;
    let location = tuf_client::Location::parse(s)?;
    crate::log(format!("update: usb: pulling from the repository copy {s}"));
    pull::run_at(
        root,
        pull::Mode::Pull,
        &pull::PullOptions::default(),
        Some(&location),
    )?;
    let boot = config::boot_id(root)?;
    match Status::load(root)?.pending {
        Some(p) if p.boot_id == boot => Ok(Outcome::Installed {
            name: p.target,
            generation: p.generation,
        }),
        _ => Ok(Outcome::Nothing(format!(
            "the repository copy offers nothing newer than generation {} for this device",
            crate::update::running_generation(root)?
        ))),
    }
}

/// `update apply` of the one file, if it is newer than what runs and its
/// trial boot never failed here; recorded in the status like a pull.
fn from_file(root: &Root, file: &Path, image: &crate::schema::ImageConfig) -> Result<Outcome> {
    let key_path = root.path(TRUSTED_KEY_PATH);
    if !key_path.exists() {
        crate::bail!(
            "this image trusts no update key ({TRUSTED_KEY_PATH} is missing): build it with `edgeimg build --signing-key`"
        );
    }
    let key = keys::read_public(&key_path)?;
    // The signed header says which release this is; `update apply` below
    // verifies the whole file again before writing anything.
    let mut f =
        std::fs::File::open(file).map_err(|e| Error::msg(format!("{}: {e}", file.display())))?;
    let len = f
        .metadata()
        .map_err(|e| Error::msg(format!("{}: {e}", file.display())))?
        .len();
    let header = format::verify_header(
        &mut f,
        len,
        &key,
        &Expect {
            board: Some(&image.board),
            arch: Some(&image.arch),
        },
    )
    .map_err(|e| Error::msg(format!("{}: {e}", file.display())))?
    .header;
    drop(f);
    let _lock = pull::lock(root)?;
    let mut status = Status::load(root)?;
    let r = apply_file(root, file, &header, &mut status);
    status.current_generation = crate::update::running_generation(root).unwrap_or(0);
    status.last_error = r.as_ref().err().map(|e| e.to_string());
    status.save(root)?;
    r
}

fn apply_file(root: &Root, file: &Path, h: &Header, status: &mut Status) -> Result<Outcome> {
    pull::settle_pending(root, status)?;
    let name = edgeimg_contract::update::target_name(h);
    let running = crate::update::running_generation(root)?;
    apply::check_generation(running, h.generation, false)
        .map_err(|e| Error::msg(format!("{}: {e}", file.display())))?;
    if h.generation == running {
        return Ok(Outcome::Nothing(format!(
            "{} is generation {running}, the generation this device runs (a medium's update must be newer)",
            file.display()
        )));
    }
    if status.failed.contains(&name) {
        crate::bail!(
            "{name}: its trial boot failed on this device before (`update status` lists it as failed): not installed again (`edgeimg-agent update apply` installs it by hand)"
        );
    }
    let boot = config::boot_id(root)?;
    if let Some(p) = &status.pending
        && p.target == name
        && p.boot_id == boot
    {
        crate::log(format!(
            "update: {name} is installed and waits for its trial boot"
        ));
        return Ok(Outcome::Installed {
            name,
            generation: h.generation,
        });
    }
    apply::run(root, file, &apply::Options::default())?;
    let cmdline = crate::fsutil::read(&root.path("/proc/cmdline"))?;
    let slot = apply::running_slot(&cmdline)?.other();
    status.pending = Some(Pending {
        target: name.clone(),
        generation: h.generation,
        slot: slot.to_string(),
        boot_id: boot,
    });
    Ok(Outcome::Installed {
        name,
        generation: h.generation,
    })
}

/// Into the trial boot (the Pi's firmware reads tryboot.txt only after a
/// tryboot reboot).
fn reboot(root: &Root) -> Result<()> {
    let image = config::load_image(root)?;
    if apply::boot_partition(root, &image)?.1 {
        root.run("systemctl", &["reboot", "0 tryboot"])?;
    } else {
        root.run("systemctl", &["reboot"])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stick() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn put(p: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn repo(s: &Path) {
        put(&s.join("repository/x86_64/metadata/timestamp.json"), b"{}");
        put(&s.join("repository/x86_64/targets/abc.t.update"), b"x");
    }

    fn err(s: &Path) -> String {
        inspect(s, "x86_64").unwrap_err().to_string()
    }

    #[test]
    fn a_repository_copy_or_one_update_file() {
        let s = stick();
        repo(s.path());
        put(&s.path().join("README.txt"), b"notes");
        assert_eq!(
            inspect(s.path(), "x86_64").unwrap(),
            Medium::Repository(s.path().join("repository"))
        );
        // Another board's copy only: nothing for this device.
        assert!(matches!(
            inspect(s.path(), "rpi4").unwrap(),
            Medium::Nothing(w) if w.contains("no rpi4/")
        ));
        let s = stick();
        put(&s.path().join("edge-x86_64.UPDATE"), b"u");
        assert_eq!(
            inspect(s.path(), "x86_64").unwrap(),
            Medium::File(s.path().join("edge-x86_64.UPDATE"))
        );
        let s = stick();
        put(&s.path().join("photo.jpg"), b"");
        assert!(matches!(
            inspect(s.path(), "x86_64").unwrap(),
            Medium::Nothing(w) if w.contains("no repository/ and no .update")
        ));
    }

    #[test]
    fn both_kinds_or_several_files_are_refused() {
        let s = stick();
        repo(s.path());
        put(&s.path().join("a.update"), b"u");
        let e = err(s.path());
        assert!(
            e.contains("both a repository copy") && e.contains("a.update"),
            "{e}"
        );
        let s = stick();
        put(&s.path().join("a.update"), b"u");
        put(&s.path().join("b.update"), b"u");
        let e = err(s.path());
        assert!(e.contains("2 update files (a.update, b.update)"), "{e}");
    }

    #[test]
    fn links_special_files_and_huge_files_are_refused() {
        let link = |target: &str, at: &Path| {
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, at).unwrap();
        };
        // The update file itself a link off the medium.
        let s = stick();
        link("/etc/shadow", &s.path().join("x.update"));
        assert!(err(s.path()).contains("symbolic link"));
        // A link inside the repository copy.
        let s = stick();
        repo(s.path());
        link(
            "/var/lib/edgeimg/tuf/timestamp.json",
            &s.path().join("repository/x86_64/metadata/1.root.json"),
        );
        let e = err(s.path());
        assert!(e.contains("1.root.json is a symbolic link"), "{e}");
        // The repository, or the board's directory, a link.
        for at in ["repository", "repository/x86_64"] {
            let s = stick();
            link("/", &s.path().join(at));
            assert!(err(s.path()).contains("symbolic link"), "{at}");
        }
        // A FIFO would block the reader.
        let s = stick();
        repo(s.path());
        let fifo = s.path().join("repository/x86_64/metadata/snapshot.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(err(s.path()).contains("not a regular file"));
        // A directory named like an update file.
        let s = stick();
        std::fs::create_dir(s.path().join("d.update")).unwrap();
        assert!(err(s.path()).contains("not a regular file"));
        // A huge (sparse) update file is refused before it is read.
        let s = stick();
        let f = std::fs::File::create(s.path().join("big.update")).unwrap();
        f.set_len(MAX_UPDATE_BYTES + 1).unwrap();
        assert!(err(s.path()).contains("more than the"));
        // A repository copy without metadata.
        let s = stick();
        std::fs::create_dir_all(s.path().join("repository/x86_64/targets")).unwrap();
        assert!(err(s.path()).contains("has no metadata/"));
    }

    #[test]
    fn arguments() {
        assert_eq!(
            parse_args(&["/media/s", "--reboot"]).unwrap(),
            (Source::Mount("/media/s".into()), Options { reboot: true })
        );
        assert_eq!(
            parse_args(&["--device", "/dev/sdb1"]).unwrap(),
            (Source::Device("/dev/sdb1".into()), Options::default())
        );
        for bad in [
            &["--device", "/dev/../etc"][..],
            &["--device", "sdb1"],
            &["--device", "/dev/a/b"],
            &["relative"],
            &[],
            &["/a", "/b"],
            &["--window", "x"],
        ] {
            assert!(parse_args(bad).is_err(), "{bad:?}");
        }
    }

    /// With `--device`, the medium is mounted read-only under /run and
    /// unmounted again, whatever the outcome.
    #[test]
    fn a_device_is_mounted_read_only_and_unmounted() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        put(
            &root.path(edgeimg_contract::schema::IMAGE_CONFIG_PATH),
            br#"{"name":"t","board":"x86_64","arch":"amd64","edgeimg_version":"0","hostname_pattern":"e"}"#,
        );
        // What the (skipped) mount would show: two update files.
        let dir = root.path(USB_MOUNT_DIR).join("sdb1");
        put(&dir.join("a.update"), b"u");
        put(&dir.join("b.update"), b"u");
        let e = run(
            &root,
            &Source::Device("/dev/sdb1".into()),
            &Options { reboot: true },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("keep exactly one"), "{e}");
        let d = dir.to_string_lossy();
        assert_eq!(
            root.skipped_commands(),
            [
                format!("mount -t vfat,ext4 -o ro,nosuid,nodev,noexec /dev/sdb1 {d}"),
                format!("umount {d}"),
            ]
        );
        let mode = std::fs::metadata(root.path(USB_MOUNT_DIR)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o700
        );
    }
}
