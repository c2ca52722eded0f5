//! Signed updates on the host: key generation, writing the update file at
//! build time, and `edgeimg update verify`. The file format and the
//! verification are the agent's own code ([`edgeimg_contract::update`]), so the
//! host checks exactly what a device checks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgeimg_contract::partition::Slot;
use edgeimg_contract::update::{format, keys};

pub use format::{Expect, Header};

/// The two files of a key pair made from `prefix`.
pub fn key_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let s = prefix.as_os_str().to_string_lossy();
    (
        PathBuf::from(format!("{s}.key")),
        PathBuf::from(format!("{s}.pub")),
    )
}

fn random_seed() -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    let mut f = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut seed).context("reading /dev/urandom")?;
    Ok(seed)
}

/// `edgeimg keygen --out PREFIX`: PREFIX.key (0600) and PREFIX.pub; never
/// overwrites either.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf)> {
    let (key_path, pub_path) = key_paths(prefix);
    for p in [&key_path, &pub_path] {
        if p.exists() || p.is_symlink() {
            anyhow::bail!(
                "{} already exists; refusing to overwrite a key (choose another --out)",
                p.display()
            );
        }
    }
    let sk = ed25519_dalek::SigningKey::from_bytes(&random_seed()?);
    use crate::new_file::write_new;
    write_new(&key_path, keys::secret_text(&sk).as_bytes(), 0o600)?;
    if let Err(e) = write_new(
        &pub_path,
        keys::public_text(&sk.verifying_key()).as_bytes(),
        0o644,
    ) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    Ok((key_path, pub_path))
}

/// The signing key for a build, read before any long work.
pub fn load_signing_key(path: &Path) -> Result<ed25519_dalek::SigningKey> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("signing key {}", path.display()))?;
    if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0 {
        anyhow::bail!(
            "signing key {} is readable by other users; chmod 600 it",
            path.display()
        );
    }
    keys::read_secret(path).map_err(|e| anyhow::anyhow!("signing key: {e}"))
}

/// What a build's update file carries.
pub struct BuildPayloads<'a> {
    /// The slot payload (EROFS root, then the hash tree with verity).
    pub root: &'a Path,
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub kernel_version: &'a str,
    /// Slot A's kernel command line (the device rewrites the slot's parts).
    pub cmdline: &'a str,
    /// The whole boot directory, for a Pi (its slot switch swaps it:
    /// firmware, DTBs, config.txt, cmdline.txt).
    pub pi_boot_files: Option<&'a crate::fs::vfat::BootFiles>,
    /// A Secure Boot build's signed UKIs for slots A and B: they replace the
    /// kernel and initrd (both are inside each UKI).
    pub ukis: Option<(&'a Path, &'a Path)>,
}

/// The update-file step of a build: `<name>-<board>.update` in `dir`,
/// signed with `key`. Returns its name.
pub fn write_for_build(
    ctx: &crate::context::Ctx,
    p: &BuildPayloads,
    key: &ed25519_dalek::SigningKey,
    dir: &Path,
) -> Result<String> {
    let cfg = ctx.cfg;
    let name = format!("{}-{}.update", ctx.plan.name, ctx.plan.board);
    let root_sha = crate::artifact::checksums::sha256_file(p.root)?;
    let mut payloads: Vec<(String, PathBuf)> = vec![(format::ROOT.into(), p.root.to_path_buf())];
    match p.ukis {
        Some((a, b)) => payloads.extend([
            (format::uki(Slot::A), a.to_path_buf()),
            (format::uki(Slot::B), b.to_path_buf()),
        ]),
        None => payloads.extend([
            (format::VMLINUZ.into(), p.vmlinuz.to_path_buf()),
            (format::INITRD.into(), p.initrd.to_path_buf()),
        ]),
    }
    if let Some(files) = p.pi_boot_files {
        for (dest, src) in files.materialize(ctx.work)? {
            payloads.push((format!("{}{dest}", format::BOOT_PREFIX), src));
        }
    }
    let refs: Vec<(String, &Path)> = payloads
        .iter()
        .map(|(n, p)| (n.clone(), p.as_path()))
        .collect();
    write_file(
        &dir.join(&name),
        Header {
            name: cfg.name.clone(),
            board: cfg.board.name.clone(),
            arch: cfg.board.arch.to_string(),
            build_id: root_sha[..16].to_string(),
            edgeimg_version: crate::VERSION.into(),
            kernel_version: p.kernel_version.to_string(),
            cmdline: p.cmdline.to_string(),
            created: ctx.epoch,
            key_id: String::new(),
            generation: cfg.update_generation,
            payloads: vec![],
        },
        &refs,
        key,
    )?;
    Ok(name)
}

/// Writes the update file `dest` (payloads in order) signed with `key`.
pub fn write_file(
    dest: &Path,
    header: Header,
    payloads: &[(String, &Path)],
    key: &ed25519_dalek::SigningKey,
) -> Result<Header> {
    let f =
        std::fs::File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let mut w = std::io::BufWriter::new(f);
    let h = format::write(&mut w, header, payloads, key)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", dest.display()))?;
    let f = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    f.sync_all()?;
    Ok(h)
}

/// `edgeimg update verify`: the agent's verification, on the host.
pub fn verify(file: &Path, key: &Path, expect: &Expect) -> Result<Header> {
    let key = keys::read_public(key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let v = format::verify_file(file, &key, expect)
        .map_err(|e| anyhow::anyhow!("update refused: {e}"))?;
    Ok(v.header)
}
