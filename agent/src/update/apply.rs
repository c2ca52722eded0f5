//! `edgeimg-agent update apply FILE`: install a verified update into the
//! inactive root slot and arrange a trial boot of it.
//!
//! Refused before anything is written: during a trial boot that has not been
//! confirmed (the other slot is then the only known-good one, and installing
//! would overwrite it), and an update whose generation is below the running
//! image's ([`crate::update::GENERATION_PATH`]) unless `--allow-downgrade`.
//!
//! UEFI boards (systemd-boot), in an order that is safe at every instant
//! against power loss:
//! 1. verify the whole file (signature, board, architecture, every hash,
//!    header fields), check the trial boot and the generation;
//! 2. remove the inactive slot's old boot entries (from here on nothing boots
//!    the slot we are about to overwrite);
//! 3. write the root image to the inactive slot's partition, fsync, drop the
//!    cache and read it back to compare its SHA-256;
//! 4. write kernel and initrd to `edgeimg/<slot>/` on the ESP (temp + rename);
//! 5. write the new entry `edgeimg-<n>-<slot>+<tries>.conf` last (`n`: one
//!    more than the highest entry number on the ESP).
//!
//! A Secure Boot image's update carries a signed UKI per slot instead of the
//! kernel and initrd, each with its slot's command line fixed at build time:
//! step 4 is skipped and step 5 writes the target slot's UKI as
//! `EFI/Linux/edgeimg-<n>-<slot>+<tries>.efi`, an entry of its own that
//! systemd-boot counts and orders like an entry file. Nothing in it is
//! edited (that would break its signature).
//!
//! `loader.conf` says `default edgeimg-*`: systemd-boot sorts entries by id,
//! highest entry number first, and entries with no tries left last, so the new
//! entry is tried first while it has tries left; once they are used up the
//! previous entry boots again by itself. A good boot drops the `+N`
//! suffix ([`crate::update::health`]); the new slot then stays first.
//!
//! `update pull` ([`crate::update::stream`]) takes the same steps from the
//! same [`Plan`], with the update as it arrives instead of a file: the
//! signed header is verified and [`Plan::check`]ed before step 2, the root
//! image is written to the slot as it is downloaded (step 3), and the whole
//! update (its signed SHA-256 from the repository, then every payload's
//! hash, the root image read back from the slot) is checked before
//! [`Plan::install_boot`] takes steps 4 and 5.

use crate::config;
use crate::error::{Context, Error, Result};
use crate::fsutil;
use crate::grow;
use crate::root::Root;
use crate::update::format::{self, Expect, Header, INITRD, ROOT, VMLINUZ, Verified};
use crate::update::payload::{copy_payload, write_boot_file};
use crate::update::{DEFAULT_TRIES, TRUSTED_KEY_PATH, efivar, health, keys};
use edgeimg_contract::cmdline as kcmd;
use edgeimg_contract::partition::{Slot, boot_files};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub use edgeimg_contract::partition::boot_files::{ENTRY_PREFIX, parse_entry};
pub const LOADER_DEFAULT: &str = "edgeimg-*";

/// A kernel command line parameter's value.
pub fn param<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

/// The new image's command line with this device's partitions and the target slot.
///
/// With dm-verity (`edgeimg.verity.dev=` present), `root=` names the verity
/// device and stays; the slot is `edgeimg.verity.dev=` instead. The root hash
/// (`edgeimg.verity=`) is the new image's own, so it is kept as the update has it.
pub fn device_cmdline(new: &str, current: &str, slot: Slot, root_partuuid: &str) -> String {
    let data = param(current, kcmd::DATA);
    let verity = param(new, kcmd::VERITY_DEV).is_some();
    let mut out: Vec<String> = Vec::new();
    for t in new.split_whitespace() {
        let k = t.split('=').next().unwrap_or("");
        out.push(match k {
            "root" if verity => t.to_string(),
            "root" => format!("root=PARTUUID={root_partuuid}"),
            kcmd::VERITY_DEV => format!("{}=PARTUUID={root_partuuid}", kcmd::VERITY_DEV),
            kcmd::SLOT => format!("{}={slot}", kcmd::SLOT),
            kcmd::DATA => match data {
                Some(d) => format!("{}={d}", kcmd::DATA),
                None => t.to_string(),
            },
            _ => t.to_string(),
        });
    }
    out.join(" ")
}

/// `loader.conf` with `default edgeimg-*` (other lines kept).
pub fn loader_conf(old: &str) -> String {
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| l.split_whitespace().next() != Some("default"))
        .map(String::from)
        .collect();
    lines.insert(0, format!("default {LOADER_DEFAULT}"));
    lines.join("\n") + "\n"
}

/// The slot this boot runs (`edgeimg.slot=` of the kernel command line).
pub fn running_slot(cmdline: &str) -> Result<Slot> {
    match param(cmdline, kcmd::SLOT).and_then(Slot::from_name) {
        Some(s) => Ok(s),
        None => crate::bail!(
            "no {}=a|b on the kernel command line ({:?})",
            kcmd::SLOT,
            param(cmdline, kcmd::SLOT)
        ),
    }
}

/// The mounted boot partition, and whether it is a Raspberry Pi's
/// (`config.txt`) rather than systemd-boot's (`loader/loader.conf`).
pub fn boot_partition(root: &Root, image: &crate::schema::ImageConfig) -> Result<(PathBuf, bool)> {
    let esp = root.path(&image.boot_mount);
    if esp.join("loader/loader.conf").exists() {
        Ok((esp, false))
    } else if esp.join("config.txt").exists() {
        Ok((esp, true))
    } else {
        crate::bail!(
            "{} has neither loader/loader.conf (systemd-boot) nor config.txt (Raspberry Pi): is the boot partition mounted?",
            esp.display()
        )
    }
}

/// Where the target slot is on this device.
struct Target {
    slot: Slot,
    device: PathBuf,
    partuuid: String,
    size: u64,
}

fn find_target(root: &Root, current: Slot) -> Result<Target> {
    let slot = current.other();
    let data = grow::find_data_device(root)?
        .ok_or_else(|| Error::msg("/var is not on a partition: not an edgeimg disk"))?;
    // The slot is a partition of the disk holding the data partition.
    let number = slot.partition_number();
    let base = data
        .partition
        .strip_suffix(&data.number.to_string())
        .ok_or_else(|| Error::msg(format!("unexpected partition name {}", data.partition)))?;
    let device = root.path(format!("{base}{number}"));
    let name = device
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sectors = fsutil::read(&root.path(format!("/sys/class/block/{name}/size")))?;
    let size = sectors
        .trim()
        .parse::<u64>()
        .map_err(|_| Error::msg(format!("bad size of {name}: {sectors:?}")))?
        * 512;
    let real = device
        .canonicalize()
        .with_context(|| device.display().to_string())?;
    let dir = root.path("/dev/disk/by-partuuid");
    let mut partuuid = None;
    for e in std::fs::read_dir(&dir)
        .with_context(|| dir.display().to_string())?
        .flatten()
    {
        if e.path().canonicalize().ok().as_deref() == Some(real.as_path()) {
            partuuid = Some(e.file_name().to_string_lossy().into_owned());
        }
    }
    let partuuid = partuuid.ok_or_else(|| {
        Error::msg(format!(
            "no PARTUUID for {} in {}",
            real.display(),
            dir.display()
        ))
    })?;
    Ok(Target {
        slot,
        device,
        partuuid,
        size,
    })
}

/// The partition of the slot this boot runs: the base a delta is applied to.
pub fn running_device(root: &Root) -> Result<PathBuf> {
    let cmdline = fsutil::read(&root.path("/proc/cmdline"))?;
    // find_target names the other slot of the one it is given.
    Ok(find_target(root, running_slot(&cmdline)?.other())?.device)
}

/// `update apply` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Boot attempts of the new slot (UEFI boards), 1 to 9.
    pub tries: u32,
    /// Install an update whose generation is below the running image's.
    pub allow_downgrade: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tries: DEFAULT_TRIES,
            allow_downgrade: false,
        }
    }
}

/// `FILE [--tries N] [--allow-downgrade]`, options in any order.
pub fn parse_args(args: &[&str]) -> Result<(PathBuf, Options)> {
    let mut o = Options::default();
    let mut file = None;
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        match a {
            "--tries" => {
                let n = it
                    .next()
                    .ok_or_else(|| Error::msg("--tries needs a number"))?;
                o.tries = n
                    .parse()
                    .map_err(|_| Error::msg(format!("--tries {n}: not a number")))?;
            }
            "--allow-downgrade" => o.allow_downgrade = true,
            _ if a.starts_with('-') => crate::bail!("unknown option {a}"),
            _ if file.is_some() => crate::bail!("one update file only (got {a} too)"),
            _ => file = Some(PathBuf::from(a)),
        }
    }
    let file = file.ok_or_else(|| Error::msg("no update file given"))?;
    Ok((file, o))
}

/// The version floor: an update older than the running image is refused
/// unless explicitly allowed.
pub fn check_generation(running: u64, update: u64, allow_downgrade: bool) -> Result<()> {
    if update < running && !allow_downgrade {
        crate::bail!(
            "the update is generation {update}, older than generation {running} that this device runs: refusing to downgrade (--allow-downgrade installs it anyway)"
        );
    }
    Ok(())
}

/// The boot entry of the trial boot in progress, if this boot is one that
/// the health check has not confirmed yet: systemd-boot booted a counting
/// entry that still has its counter, or the Pi firmware booted tryboot.txt
/// and it has not become config.txt.
pub fn unconfirmed_trial(root: &Root, esp: &Path, pi: bool) -> Result<Option<String>> {
    if pi {
        let pending = esp.join(crate::update::rpi::TRYBOOT);
        return Ok((crate::update::rpi::is_trial(root)? && pending.exists())
            .then(|| crate::update::rpi::TRYBOOT.to_string()));
    }
    let Some(count_path) = efivar::loader_string(root, "LoaderBootCountPath")? else {
        return Ok(None);
    };
    let rel = count_path.replace('\\', "/");
    let file = esp.join(rel.trim_start_matches('/'));
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((file.exists() && health::blessed_name(&name).is_some()).then_some(name))
}

/// One line of a boot entry: the header values in it are one line of
/// printable text (the verifier refuses others; this is the last check
/// before the file is written).
fn entry_value<'a>(key: &str, v: &'a str) -> Result<&'a str> {
    if v.chars().any(|c| c.is_control()) {
        crate::bail!("boot entry {key} {v:?} contains a control character");
    }
    Ok(v)
}

/// The systemd-boot entry of `slot`.
pub fn boot_entry(h: &Header, slot: Slot, cmdline: &str) -> Result<String> {
    Ok(format!(
        "title {} {} (slot {})\nversion {}\nlinux /{}\ninitrd /{}\noptions {}\n",
        entry_value("title", &h.name)?,
        entry_value("title", &h.build_id)?,
        slot.upper(),
        entry_value("version", &h.kernel_version)?,
        boot_files::kernel(slot),
        boot_files::initrd(slot),
        entry_value("options", cmdline)?,
    ))
}

/// Whether the update installs `slot`'s signed UKI rather than a kernel, an
/// initrd and an entry. A device that boots signed UKIs (its firmware may
/// enforce Secure Boot) takes only an update that carries them: a plain
/// kernel would not be let through. The UKI's command line was fixed at
/// build time for the partitions of that build's image, so the update's
/// data partition must be this device's.
fn signed_kernel(h: &Header, uki_dir: &Path, slot: Slot, running: &str) -> Result<bool> {
    let name = format::uki(slot);
    let carried = h.payloads.iter().any(|p| p.name == name);
    let boots_ukis = std::fs::read_dir(uki_dir)
        .map(|d| {
            d.flatten()
                .any(|e| boot_files::parse_uki(&e.file_name().to_string_lossy()).is_some())
        })
        .unwrap_or(false);
    if boots_ukis && !carried {
        crate::bail!(
            "this device boots signed kernel images ({}) and the update carries none for slot {slot}: build the update with the image's [secure_boot] keys",
            uki_dir.display()
        );
    }
    if carried && param(&h.cmdline, kcmd::DATA) != param(running, kcmd::DATA) {
        crate::bail!(
            "the update's signed command lines name data partition {:?}, this device's is {:?}: it was built for another image (a different image seed)",
            param(&h.cmdline, kcmd::DATA).unwrap_or("none"),
            param(running, kcmd::DATA).unwrap_or("none")
        );
    }
    Ok(carried)
}

/// Removes `slot`'s entries from `dir` (entry files or UKIs, as `parse`
/// names them; a missing directory has none) and returns the highest entry
/// number of either slot found there.
fn remove_slot_entries(
    dir: &Path,
    parse: fn(&str) -> Option<(u64, Slot)>,
    slot: Slot,
) -> Result<u64> {
    let listing = match std::fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| dir.display().to_string()),
    };
    let mut number = 0;
    for e in listing.flatten() {
        if let Some((g, s)) = parse(&e.file_name().to_string_lossy()) {
            number = number.max(g);
            if s == slot {
                std::fs::remove_file(e.path()).with_context(|| e.path().display().to_string())?;
            }
        }
    }
    fsutil::sync_dir(dir)?;
    Ok(number)
}

/// This device as `update apply` sees it before it looks at an update: the
/// trusted key, the running and the target slot, the boot partition. Made
/// by [`plan`], which refuses during an unconfirmed trial boot.
pub struct Plan {
    tries: u32,
    allow_downgrade: bool,
    board: String,
    arch: String,
    key: ed25519_dalek::VerifyingKey,
    cmdline: String,
    esp: PathBuf,
    pi: bool,
    running: u64,
    target: Target,
}

/// What goes into the boot files for one update, checked before anything
/// is touched ([`Plan::check`]).
pub struct Checked {
    signed: bool,
    cmdline: String,
    entry: String,
}

/// The checks that need no update: `--tries`, a trusted key, the running
/// slot, the boot partition, no unconfirmed trial boot, the target slot.
pub fn plan(root: &Root, opts: &Options) -> Result<Plan> {
    let tries = opts.tries;
    if !(1..=9).contains(&tries) {
        crate::bail!("--tries {tries}: must be 1 to 9");
    }
    let image = config::load_image(root)?;
    let key_path = root.path(TRUSTED_KEY_PATH);
    if !key_path.exists() {
        crate::bail!(
            "this image trusts no update key ({TRUSTED_KEY_PATH} is missing): build it with `edgeimg build --signing-key`"
        );
    }
    let key = keys::read_public(&key_path)?;
    let cmdline = fsutil::read(&root.path("/proc/cmdline"))?;
    let current = running_slot(&cmdline)?;
    let (esp, pi) = boot_partition(root, &image)?;
    if let Some(entry) = unconfirmed_trial(root, &esp, pi)? {
        crate::bail!(
            "slot {current} is on a trial boot ({entry}) that the health check has not confirmed: slot {} is the only known-good one and an update would overwrite it; let edgeimg-update-health.service confirm this boot (or reboot to fall back), then apply",
            current.other()
        );
    }
    let running = crate::update::running_generation(root)?;
    let target = find_target(root, current)?;
    Ok(Plan {
        tries,
        allow_downgrade: opts.allow_downgrade,
        board: image.board,
        arch: image.arch,
        key,
        cmdline,
        esp,
        pi,
        running,
        target,
    })
}

impl Plan {
    pub fn key(&self) -> &ed25519_dalek::VerifyingKey {
        &self.key
    }

    /// This device's board and architecture, which an update must name.
    pub fn expect(&self) -> Expect<'_> {
        Expect {
            board: Some(&self.board),
            arch: Some(&self.arch),
        }
    }

    /// The slot an update goes into.
    pub fn slot(&self) -> Slot {
        self.target.slot
    }

    /// The target slot's partition.
    pub fn device(&self) -> &Path {
        &self.target.device
    }

    /// The target slot's PARTUUID.
    pub fn partuuid(&self) -> &str {
        &self.target.partuuid
    }

    /// Everything about a verified header that decides whether it may be
    /// installed here: the version floor, the root image fitting the slot,
    /// the signed kernel images, the boot entry's text. Writes nothing.
    pub fn check(&self, h: &Header) -> Result<Checked> {
        check_generation(self.running, h.generation, self.allow_downgrade)?;
        let rootp = h.payload(ROOT)?;
        if rootp.size > self.target.size {
            crate::bail!(
                "the new root ({} bytes) does not fit slot {} ({} bytes)",
                rootp.size,
                self.target.slot,
                self.target.size
            );
        }
        let uki_dir = self.esp.join(boot_files::UKI_DIR);
        let signed = !self.pi && signed_kernel(h, &uki_dir, self.target.slot, &self.cmdline)?;
        let cmdline = device_cmdline(
            &h.cmdline,
            &self.cmdline,
            self.target.slot,
            &self.target.partuuid,
        );
        let entry = boot_entry(h, self.target.slot, &cmdline)?;
        Ok(Checked {
            signed,
            cmdline,
            entry,
        })
    }

    /// The log line of a header that passed [`Plan::check`].
    pub fn log_verified(&self, h: &Header) {
        if h.generation < self.running {
            crate::log(format!(
                "update: installing generation {} over generation {}: downgrade allowed by --allow-downgrade",
                h.generation, self.running
            ));
        }
        crate::log(format!(
            "update: {} build {} generation {} verified (key {}); installing into slot {} ({})",
            h.name,
            h.build_id,
            h.generation,
            h.key_id,
            self.target.slot,
            self.target.device.display()
        ));
    }

    /// Step 2: nothing may boot the target slot while it is overwritten.
    /// Returns the highest entry number left on the boot partition.
    /// Idempotent.
    pub fn unboot_target(&self) -> Result<u64> {
        if self.pi {
            crate::update::rpi::forget_trial(&self.esp)?;
            return Ok(0);
        }
        let entries = self.esp.join("loader/entries");
        let uki_dir = self.esp.join(boot_files::UKI_DIR);
        Ok(
            remove_slot_entries(&entries, parse_entry, self.target.slot)?.max(remove_slot_entries(
                &uki_dir,
                boot_files::parse_uki,
                self.target.slot,
            )?),
        )
    }

    /// The "writing slot" log line, just before the first byte goes there.
    pub fn log_writing(&self, size: u64) {
        crate::log(format!(
            "update: writing slot {} ({size} bytes)",
            self.target.slot
        ));
    }

    /// Opens the target slot's partition for writing and reading back.
    pub fn open_device(&self) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.target.device)
            .with_context(|| self.target.device.display().to_string())
    }

    /// Steps 4 and 5 (or the Pi's boot files and tryboot.txt): once the
    /// root image is in the slot and `f` (the update, verified as `v`)
    /// has been checked whole. Every boot file is hashed again as it is
    /// copied.
    pub fn install_boot(
        &self,
        f: &mut (impl Read + Seek),
        v: &Verified,
        checked: &Checked,
    ) -> Result<()> {
        let h = &v.header;
        let (esp, slot, tries) = (&self.esp, self.target.slot, self.tries);
        let number = self.unboot_target()?;
        if self.pi {
            crate::update::rpi::install(f, v, esp, slot, &checked.cmdline)?;
            crate::log(format!(
                "update: slot {slot} installed with tryboot.txt; reboot with `systemctl reboot '0 tryboot'` to try it once"
            ));
            println!("edgeimg: update {} installed in slot {slot}", h.build_id);
            return Ok(());
        }

        // 4. Kernel and initrd (a signed UKI holds both).
        if !checked.signed {
            write_boot_file(f, v, VMLINUZ, &esp.join(boot_files::kernel(slot)))?;
            write_boot_file(f, v, INITRD, &esp.join(boot_files::initrd(slot)))?;
        }

        // 5. loader.conf, then the new entry (or the slot's signed UKI, which is
        // an entry of its own), last.
        let lc = esp.join("loader/loader.conf");
        let old = fsutil::read(&lc)?;
        let new = loader_conf(&old);
        if new != old {
            fsutil::write_atomic_fat(&lc, new.as_bytes())?;
        }
        let id = if checked.signed {
            let name = boot_files::uki_name(number + 1, slot);
            let id = name.trim_end_matches(".efi").to_string();
            let path = esp
                .join(boot_files::UKI_DIR)
                .join(format!("{id}+{tries}.efi"));
            write_boot_file(f, v, &format::uki(slot), &path)?;
            id
        } else {
            let name = boot_files::entry_name(number + 1, slot);
            let id = name.trim_end_matches(".conf").to_string();
            let path = esp
                .join("loader/entries")
                .join(format!("{id}+{tries}.conf"));
            fsutil::write_atomic_fat(&path, checked.entry.as_bytes())?;
            id
        };
        crate::log(format!(
            "update: slot {slot} installed as boot entry {id} with {tries} tries; reboot to try it"
        ));
        println!("edgeimg: update {} installed in slot {slot}", h.build_id);
        Ok(())
    }
}

/// Drops the page cache of `f`, so what is read next comes from the medium.
pub fn drop_cache(f: &File) {
    // SAFETY: fadvise on a descriptor the caller owns; only a hint.
    unsafe {
        libc::posix_fadvise(
            std::os::unix::io::AsRawFd::as_raw_fd(f),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        );
    }
}

pub fn run(root: &Root, file: &Path, opts: &Options) -> Result<()> {
    let p = plan(root, opts)?;
    crate::log(format!("update: verifying {}", file.display()));
    let v = format::verify_file(file, p.key(), &p.expect())?;
    let h = &v.header;
    let checked = p.check(h)?;
    p.log_verified(h);

    // 2. Nothing may boot the slot while it is being overwritten.
    p.unboot_target()?;

    // 3. The root image.
    let rootp = h.payload(ROOT)?;
    p.log_writing(rootp.size);
    let device = p.device().display().to_string();
    let mut f = File::open(file).with_context(|| file.display().to_string())?;
    let mut dev = p.open_device()?;
    copy_payload(&mut f, &v, ROOT, &mut dev).with_context(|| device.clone())?;
    dev.sync_all().with_context(|| device.clone())?;
    // Read back what the medium holds, not what the page cache remembers.
    drop_cache(&dev);
    dev.seek(SeekFrom::Start(0)).context("seek")?;
    let back = format::sha256_of(&mut (&mut dev).take(rootp.size), rootp.size, |_| Ok(()))
        .with_context(|| format!("reading back {device}"))?;
    if back != rootp.sha256 {
        crate::bail!(
            "slot {} reads back SHA-256 {back}, expected {}: the medium is failing",
            p.slot(),
            rootp.sha256
        );
    }
    drop(dev);

    // 4 and 5.
    p.install_boot(&mut f, &v, &checked)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        assert_eq!(parse_entry("edgeimg-1-a.conf"), Some((1, Slot::A)));
        assert_eq!(parse_entry("edgeimg-12-b+3.conf"), Some((12, Slot::B)));
        assert_eq!(parse_entry("edgeimg-2-b+0-3.conf"), Some((2, Slot::B)));
        assert_eq!(parse_entry("edgeimg-a.conf"), None);
        assert_eq!(parse_entry("other-1-a.conf"), None);
    }

    #[test]
    fn cmdline_takes_this_devices_partitions() {
        let new =
            "root=PARTUUID=111 rootfstype=erofs ro edgeimg.data=PARTUUID=999 edgeimg.slot=a quiet";
        let cur = "root=PARTUUID=aaa ro edgeimg.data=PARTUUID=ddd edgeimg.slot=a";
        assert_eq!(
            device_cmdline(new, cur, Slot::B, "bbb"),
            "root=PARTUUID=bbb rootfstype=erofs ro edgeimg.data=PARTUUID=ddd edgeimg.slot=b quiet"
        );
    }

    #[test]
    fn verity_cmdline_points_the_verity_device_at_the_target_slot() {
        let new = "root=/dev/mapper/edgeimg-root edgeimg.verity=0123abcd edgeimg.verity.dev=PARTUUID=111 edgeimg.verity.offset=8192 rootfstype=erofs ro edgeimg.data=PARTUUID=999 edgeimg.slot=a";
        let cur = "root=/dev/mapper/edgeimg-root edgeimg.verity=ffff edgeimg.verity.dev=PARTUUID=aaa edgeimg.verity.offset=4096 ro edgeimg.data=PARTUUID=ddd edgeimg.slot=a";
        assert_eq!(
            device_cmdline(new, cur, Slot::B, "bbb"),
            "root=/dev/mapper/edgeimg-root edgeimg.verity=0123abcd edgeimg.verity.dev=PARTUUID=bbb edgeimg.verity.offset=8192 rootfstype=erofs ro edgeimg.data=PARTUUID=ddd edgeimg.slot=b"
        );
        // An update without verity onto a verity device: back to the partition.
        let plain = "root=PARTUUID=111 ro edgeimg.data=PARTUUID=999 edgeimg.slot=a";
        assert_eq!(
            device_cmdline(plain, cur, Slot::B, "bbb"),
            "root=PARTUUID=bbb ro edgeimg.data=PARTUUID=ddd edgeimg.slot=b"
        );
    }

    #[test]
    fn loader_conf_defaults_to_the_pattern() {
        assert_eq!(
            loader_conf("default edgeimg-a.conf\ntimeout 0\n"),
            "default edgeimg-*\ntimeout 0\n"
        );
    }

    /// A UEFI device running slot A of generation `running` (fake disk,
    /// sysfs and ESP under a temporary root) and a signed update of
    /// generation `update` for it.
    pub(crate) fn device(running: u64, update: u64) -> (tempfile::TempDir, Root, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path().join("root"));
        crate::grow::tests::fake_disk(&root);
        let w = |p: &str, s: &[u8]| {
            let p = root.path(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        w("/dev/vda3", &[0u8; 64 * 1024]);
        w("/sys/class/block/vda3/size", b"128\n");
        std::fs::create_dir_all(root.path("/dev/disk/by-partuuid")).unwrap();
        std::os::unix::fs::symlink("../../vda3", root.path("/dev/disk/by-partuuid/pu-3")).unwrap();
        w(
            crate::schema::IMAGE_CONFIG_PATH,
            br#"{"name":"edge","board":"x86_64","arch":"amd64","edgeimg_version":"0","hostname_pattern":"e"}"#,
        );
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        w(
            TRUSTED_KEY_PATH,
            keys::public_text(&key.verifying_key()).as_bytes(),
        );
        w(
            crate::update::GENERATION_PATH,
            format!("{running}\n").as_bytes(),
        );
        w(
            "/proc/cmdline",
            b"root=PARTUUID=pu-2 ro edgeimg.data=PARTUUID=pu-4 edgeimg.slot=a\n",
        );
        w("/boot/efi/loader/loader.conf", b"default edgeimg-*\n");
        w("/boot/efi/loader/entries/edgeimg-1-a.conf", b"title v1\n");
        w(
            "/boot/efi/loader/entries/edgeimg-1-b.conf",
            b"title old b\n",
        );
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        for (n, b) in [("root", &[0x5au8; 4096][..]), ("k", b"K2"), ("i", b"I2")] {
            std::fs::write(src.join(n), b).unwrap();
        }
        let file = d.path().join("u.update");
        format::write(
            &mut File::create(&file).unwrap(),
            Header {
                name: "edge".into(),
                board: "x86_64".into(),
                arch: "amd64".into(),
                build_id: "00aa".into(),
                edgeimg_version: "0".into(),
                kernel_version: "6.12".into(),
                cmdline: "root=PARTUUID=x ro edgeimg.slot=a".into(),
                created: 0,
                key_id: String::new(),
                generation: update,
                payloads: vec![],
            },
            &[
                (ROOT.into(), src.join("root").as_path()),
                (VMLINUZ.into(), src.join("k").as_path()),
                (INITRD.into(), src.join("i").as_path()),
            ],
            &key,
        )
        .unwrap();
        (d, root, file)
    }

    fn entries(root: &Root) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.path("/boot/efi/loader/entries"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Nothing was written: slot B's device is all zeros, the entries and
    /// the ESP's slot directory are as they were.
    fn untouched(root: &Root) {
        let dev = std::fs::read(root.path("/dev/vda3")).unwrap();
        assert!(dev.iter().all(|&b| b == 0), "slot b was written");
        assert_eq!(entries(root), ["edgeimg-1-a.conf", "edgeimg-1-b.conf"]);
        assert!(!root.path("/boot/efi/edgeimg/b").exists());
    }

    #[test]
    fn an_update_installs_into_the_other_slot() {
        // The control for the refusals below: the same device and file apply.
        let (_d, root, file) = device(4, 4);
        run(&root, &file, &Options::default()).unwrap();
        let dev = std::fs::read(root.path("/dev/vda3")).unwrap();
        assert_eq!(&dev[..4096], &[0x5a; 4096][..]);
        assert_eq!(entries(&root), ["edgeimg-1-a.conf", "edgeimg-2-b+3.conf"]);
        let e = std::fs::read_to_string(root.path("/boot/efi/loader/entries/edgeimg-2-b+3.conf"))
            .unwrap();
        assert_eq!(
            e,
            "title edge 00aa (slot B)\nversion 6.12\nlinux /edgeimg/b/vmlinuz\ninitrd /edgeimg/b/initrd.img\noptions root=PARTUUID=pu-3 ro edgeimg.slot=b\n"
        );
    }

    /// [`device`] as a Secure Boot image has it (signed UKIs in EFI/Linux, no
    /// entry files), with an update that carries a UKI per slot (`ukis`) or
    /// a kernel and initrd, for the data partition `data`.
    fn signed_device(ukis: bool, data: &str) -> (tempfile::TempDir, Root, PathBuf) {
        let (d, root, file) = device(1, 1);
        std::fs::remove_dir_all(root.path("/boot/efi/loader/entries")).unwrap();
        let linux = root.path("/boot/efi/EFI/Linux");
        std::fs::create_dir_all(&linux).unwrap();
        std::fs::write(linux.join("edgeimg-1-a.efi"), b"UKI A1").unwrap();
        std::fs::write(linux.join("edgeimg-1-b.efi"), b"old UKI B").unwrap();
        let src = d.path().join("src");
        for (n, b) in [("uki-a", &b"UKI A2"[..]), ("uki-b", b"UKI B2")] {
            std::fs::write(src.join(n), b).unwrap();
        }
        let mut payloads = vec![(ROOT.to_string(), src.join("root"))];
        if ukis {
            payloads.push((format::uki(Slot::A), src.join("uki-a")));
            payloads.push((format::uki(Slot::B), src.join("uki-b")));
        } else {
            payloads.push((VMLINUZ.into(), src.join("k")));
            payloads.push((INITRD.into(), src.join("i")));
        }
        let refs: Vec<(String, &Path)> = payloads
            .iter()
            .map(|(n, p)| (n.clone(), p.as_path()))
            .collect();
        format::write(
            &mut File::create(&file).unwrap(),
            Header {
                name: "edge".into(),
                board: "x86_64".into(),
                arch: "amd64".into(),
                build_id: "00bb".into(),
                edgeimg_version: "0".into(),
                kernel_version: "6.12".into(),
                cmdline: format!(
                    "root=PARTUUID=pu-2 ro edgeimg.data=PARTUUID={data} edgeimg.slot=a"
                ),
                created: 0,
                key_id: String::new(),
                generation: 1,
                payloads: vec![],
            },
            &refs,
            &ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        )
        .unwrap();
        (d, root, file)
    }

    /// Slot B not written and the signed kernel images as they were.
    fn signed_untouched(root: &Root) {
        let dev = std::fs::read(root.path("/dev/vda3")).unwrap();
        assert!(dev.iter().all(|&b| b == 0), "slot b was written");
        assert_eq!(ukis(root), ["edgeimg-1-a.efi", "edgeimg-1-b.efi"]);
    }

    fn ukis(root: &Root) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.path("/boot/efi/EFI/Linux"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_signed_update_installs_the_target_slots_uki_unedited() {
        let (_d, root, file) = signed_device(true, "pu-4");
        run(&root, &file, &Options::default()).unwrap();
        let dev = std::fs::read(root.path("/dev/vda3")).unwrap();
        assert_eq!(&dev[..4096], &[0x5a; 4096][..]);
        // Slot B's old UKI gone, its new one counting, slot A's untouched.
        assert_eq!(ukis(&root), ["edgeimg-1-a.efi", "edgeimg-2-b+3.efi"]);
        let linux = root.path("/boot/efi/EFI/Linux");
        assert_eq!(
            std::fs::read(linux.join("edgeimg-2-b+3.efi")).unwrap(),
            b"UKI B2"
        );
        assert_eq!(
            std::fs::read(linux.join("edgeimg-1-a.efi")).unwrap(),
            b"UKI A1"
        );
        // No kernel, initrd or entry file beside it.
        assert!(!root.path("/boot/efi/edgeimg/b").exists());
        assert!(!root.path("/boot/efi/loader/entries").exists());
    }

    #[test]
    fn a_device_booting_signed_ukis_refuses_an_update_without_them() {
        let (_d, root, file) = signed_device(false, "pu-4");
        let e = run(&root, &file, &Options::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("boots signed kernel images") && e.contains("carries none for slot b"),
            "{e}"
        );
        signed_untouched(&root);
    }

    #[test]
    fn a_signed_update_for_another_data_partition_is_refused() {
        let (_d, root, file) = signed_device(true, "other-4");
        let e = run(&root, &file, &Options::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "name data partition \"PARTUUID=other-4\", this device's is \"PARTUUID=pu-4\""
            ),
            "{e}"
        );
        signed_untouched(&root);
    }

    #[test]
    fn an_older_generation_is_refused_unless_allowed() {
        let (_d, root, file) = device(5, 4);
        let e = run(&root, &file, &Options::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the update is generation 4, older than generation 5 that this device runs: refusing to downgrade (--allow-downgrade"),
            "{e}"
        );
        untouched(&root);
        let allow = Options {
            allow_downgrade: true,
            ..Options::default()
        };
        run(&root, &file, &allow).unwrap();
        assert_eq!(entries(&root), ["edgeimg-1-a.conf", "edgeimg-2-b+3.conf"]);
        // Same and newer generations need no flag; an image without the file is 0.
        check_generation(5, 5, false).unwrap();
        check_generation(5, 6, false).unwrap();
        let (_d, root, file) = device(0, 0);
        std::fs::remove_file(root.path(crate::update::GENERATION_PATH)).unwrap();
        run(&root, &file, &Options::default()).unwrap();
    }

    #[test]
    fn apply_is_refused_during_an_unconfirmed_trial_boot() {
        let (_d, root, file) = device(1, 2);
        // systemd-boot booted a counting entry that is still counting.
        let name = "edgeimg-1-a+2-1.conf";
        std::fs::rename(
            root.path("/boot/efi/loader/entries/edgeimg-1-a.conf"),
            root.path(format!("/boot/efi/loader/entries/{name}")),
        )
        .unwrap();
        let var = root.path(format!(
            "{}/LoaderBootCountPath-{}",
            efivar::EFIVARS,
            efivar::LOADER_GUID
        ));
        std::fs::create_dir_all(var.parent().unwrap()).unwrap();
        let mut raw = vec![7, 0, 0, 0];
        for u in format!("\\loader\\entries\\{name}\0").encode_utf16() {
            raw.extend_from_slice(&u.to_le_bytes());
        }
        std::fs::write(&var, raw).unwrap();
        let e = run(&root, &file, &Options::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("slot a is on a trial boot ({name}) that the health check has not confirmed: slot b is the only known-good one")),
            "{e}"
        );
        let dev = std::fs::read(root.path("/dev/vda3")).unwrap();
        assert!(dev.iter().all(|&b| b == 0), "slot b was written");
        assert!(
            root.path("/boot/efi/loader/entries/edgeimg-1-b.conf")
                .exists()
        );
        // --allow-downgrade does not lift it.
        let allow = Options {
            allow_downgrade: true,
            ..Options::default()
        };
        assert!(run(&root, &file, &allow).is_err());
        // Once the health check has blessed the entry, the same boot may apply.
        std::fs::rename(
            root.path(format!("/boot/efi/loader/entries/{name}")),
            root.path("/boot/efi/loader/entries/edgeimg-1-a.conf"),
        )
        .unwrap();
        run(&root, &file, &Options::default()).unwrap();
    }

    #[test]
    fn a_pending_pi_tryboot_is_an_unconfirmed_trial() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let esp = root.path("/boot/firmware");
        std::fs::create_dir_all(&esp).unwrap();
        std::fs::write(esp.join("tryboot.txt"), "os_prefix=b/\n").unwrap();
        // Not booted from tryboot.txt: an installed trial waiting for its reboot.
        assert_eq!(unconfirmed_trial(&root, &esp, true).unwrap(), None);
        let flag = root.path(crate::update::rpi::TRYBOOT_FLAG);
        std::fs::create_dir_all(flag.parent().unwrap()).unwrap();
        std::fs::write(&flag, [0, 0, 0, 1]).unwrap();
        assert_eq!(
            unconfirmed_trial(&root, &esp, true).unwrap().as_deref(),
            Some("tryboot.txt")
        );
        // Committed: tryboot.txt became config.txt.
        std::fs::remove_file(esp.join("tryboot.txt")).unwrap();
        assert_eq!(unconfirmed_trial(&root, &esp, true).unwrap(), None);
    }

    #[test]
    fn boot_entry_refuses_a_value_that_would_add_a_line() {
        let h = |name: &str, kv: &str| Header {
            name: name.into(),
            board: "x86_64".into(),
            arch: "amd64".into(),
            build_id: "b".into(),
            edgeimg_version: "0".into(),
            kernel_version: kv.into(),
            cmdline: String::new(),
            created: 0,
            key_id: String::new(),
            generation: 0,
            payloads: vec![],
        };
        assert!(boot_entry(&h("edge", "6"), Slot::B, "ro").is_ok());
        for (hd, cmdline) in [
            (h("edge\noptions init=/bin/sh", "6"), "ro"),
            (h("edge", "6\rlinux /x"), "ro"),
            (h("edge", "6"), "ro\noptions init=/bin/sh"),
            (h("edge", "6"), "ro\u{0}"),
        ] {
            let e = boot_entry(&hd, Slot::B, cmdline).unwrap_err().to_string();
            assert!(e.contains("contains a control character"), "{e}");
        }
    }

    #[test]
    fn apply_arguments() {
        let (f, o) = parse_args(&["u.update"]).unwrap();
        assert_eq!((f, o), (PathBuf::from("u.update"), Options::default()));
        let (f, o) = parse_args(&["--allow-downgrade", "u", "--tries", "2"]).unwrap();
        assert_eq!(f, PathBuf::from("u"));
        assert_eq!(
            o,
            Options {
                tries: 2,
                allow_downgrade: true
            }
        );
        for (args, msg) in [
            (&["u", "--tries"][..], "--tries needs a number"),
            (&["u", "--tries", "x"][..], "--tries x: not a number"),
            (&["u", "--force"][..], "unknown option --force"),
            (&["u", "v"][..], "one update file only"),
            (&[][..], "no update file given"),
        ] {
            let e = parse_args(args).unwrap_err().to_string();
            assert!(e.contains(msg), "{args:?}: {e}");
        }
    }
}
