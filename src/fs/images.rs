//! The filesystems step of a build: the EROFS root (with its dm-verity hash
//! tree when on), the final kernel command line, the disk layout sized from
//! the root, the boot partition for the board's firmware, and the seeded
//! (and, with SELinux, labelled) data partition — each a file in the work
//! directory, ready to be spliced into the disk.

use std::path::PathBuf;

use anyhow::Result;

use super::{data_seed, erofs, ext4, vfat};
use crate::config::board::Firmware;
use crate::config::{ImageSize, size::human};
use crate::context::Ctx;
use crate::disk::Role;
use crate::disk::layout::{self, Layout};
use crate::stage::compose::Staged;
use edgeimg_contract::partition::Slot;

pub struct Filesystems {
    /// The slot payload: EROFS data, then the hash tree with verity.
    pub root: PathBuf,
    pub verity: Option<crate::verity::Verity>,
    pub kernel_cmdline: String,
    /// Both slots' signed UKIs (A, B) for the update file of a Secure Boot
    /// build with `--update`.
    pub update_ukis: Option<(PathBuf, PathBuf)>,
    pub layout: Layout,
    pub boot_files: vfat::BootFiles,
    pub boot: PathBuf,
    pub data: PathBuf,
}

pub fn make_all(ctx: &Ctx, staged: &Staged) -> Result<Filesystems> {
    let cfg = ctx.cfg;
    let root = ctx.work.join("root.erofs");
    ctx.progress.timed(
        || {
            erofs::make_labelled(
                &staged.tree,
                &root,
                ctx.plan.ids.root_a_fs_uuid,
                ctx.epoch,
                cfg.root_compression,
                staged.selinux.as_ref().map(|s| s.file_contexts.as_path()),
            )
        },
        |bytes| format!("fs: EROFS root {}", human(*bytes)),
    )?;
    // The hash tree follows the EROFS data in the same file: the slot payload.
    let verity = if cfg.verity {
        Some(ctx.progress.timed(
            || crate::verity::format(&root, &cfg.seed),
            |v| {
                format!(
                    "fs: dm-verity hash tree at {}, root hash {}",
                    v.hash_offset, v.root_hash
                )
            },
        )?)
    } else {
        None
    };
    let kernel_cmdline = crate::plan::kernel_cmdline(
        cfg,
        &ctx.plan.ids,
        verity
            .as_ref()
            .map(|v| (v.root_hash.as_str(), v.hash_offset)),
    );
    let layout = layout_for(ctx, std::fs::metadata(&root)?.len())?;
    let boot_files = match (cfg.board.firmware, &cfg.board.rpi) {
        (Firmware::Rpi, Some(rpi)) => crate::boot::rpi::boot_files(
            &staged.tree,
            rpi,
            &staged.kernel,
            &kernel_cmdline,
            &cfg.name,
        )?,
        _ => crate::boot::uefi::boot_files(
            &staged.tree,
            cfg.board.rust_arch(),
            &staged.kernel,
            &kernel_cmdline,
            &cfg.name,
            cfg.secure_boot.as_ref(),
            ctx.work,
        )?,
    };
    let update_ukis = update_ukis(ctx, staged, verity.as_ref())?;
    let boot = ctx.work.join("boot.vfat");
    vfat::make(
        &boot,
        layout.get(Role::Boot).size,
        "EDGEBOOT",
        ctx.plan.ids.boot_volume_id,
        &boot_files,
        ctx.work,
        ctx.epoch,
    )?;
    let data = make_data(
        ctx,
        staged,
        data_fs_size(ctx.cfg, layout.get(Role::Data).size)?,
    )?;
    Ok(Filesystems {
        root,
        verity,
        kernel_cmdline,
        update_ukis,
        layout,
        boot_files,
        boot,
        data,
    })
}

/// With Secure Boot and `--update`: the update carries a signed UKI per slot,
/// each with its slot's command line (slot A's is the one on the boot
/// partition, made with the boot files).
fn update_ukis(
    ctx: &Ctx,
    staged: &Staged,
    verity: Option<&crate::verity::Verity>,
) -> Result<Option<(PathBuf, PathBuf)>> {
    let (Some(sb), true) = (&ctx.cfg.secure_boot, ctx.opts.update) else {
        return Ok(None);
    };
    // Their own directory: the UKI's section files and names are per slot
    // only within one directory.
    let work = ctx.work.join("update-ukis");
    std::fs::create_dir_all(&work)?;
    let [a, b] = [Slot::A, Slot::B].map(|slot| {
        let cmdline = crate::plan::slot_cmdline(
            ctx.cfg,
            &ctx.plan.ids,
            verity.map(|v| (v.root_hash.as_str(), v.hash_offset)),
            slot,
        );
        crate::boot::uefi::signed_uki(
            &staged.tree,
            ctx.cfg.board.rust_arch(),
            &staged.kernel,
            &cmdline,
            sb,
            &work,
            slot,
        )
    });
    Ok(Some((a?, b?)))
}

/// Partitions sized from the root payload (and `[image] size` when fixed).
fn layout_for(ctx: &Ctx, root_bytes: u64) -> Result<Layout> {
    let cfg = ctx.cfg;
    let fixed = match cfg.size {
        ImageSize::Auto => None,
        ImageSize::Fixed(b) => Some(b.0),
    };
    layout::compute(
        &ctx.plan.ids,
        cfg.board.arch,
        cfg.board.partitions.boot.0,
        root_bytes,
        cfg.board.partitions.data.0,
        fixed,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.source))
}

/// The data filesystem's size in a data partition of `partition` bytes:
/// all of it, or with `[data] encryption` all but the room the device's
/// first boot writes the LUKS2 header into (the partition and the image
/// keep their size; the ext4 ends earlier).
pub fn data_fs_size(cfg: &crate::config::Config, partition: u64) -> Result<u64> {
    if cfg.data_encryption.is_none() {
        return Ok(partition);
    }
    let headroom = crate::config::data::LUKS_HEADROOM;
    // At least as much filesystem as headroom: smaller would not hold the seed.
    anyhow::ensure!(
        partition >= 2 * headroom,
        "{}: the data partition ({} MiB) is too small to encrypt: it needs {} MiB for the LUKS2 header and as much again for the filesystem",
        cfg.source,
        partition >> 20,
        headroom >> 20
    );
    Ok(partition - headroom)
}

/// The data partition, seeded here rather than by the device's first boot
/// (data_seed.rs): with SELinux from its labelled copy, without from the
/// tree's /var itself (the root is made already, so it may change).
fn make_data(ctx: &Ctx, staged: &Staged, size: u64) -> Result<PathBuf> {
    let data = ctx.work.join("data.ext4");
    let seed = match &staged.selinux {
        Some(s) => s.data_seed.clone(),
        None => {
            let var = staged.tree.join("var");
            data_seed::prepare_in_place(&var, ctx.epoch)?;
            var
        }
    };
    ext4::make(
        &data,
        size,
        "edgeimg-data",
        ctx.plan.ids.data_fs_uuid,
        ctx.plan.ids.data_hash_seed,
        ctx.epoch,
        Some(&seed),
    )?;
    if let Some(s) = &staged.selinux {
        ctx.progress.timed(
            || -> Result<usize> {
                let labels = crate::selinux::label::data_labels(&s.data_seed, &s.file_contexts)?;
                crate::selinux::ext4::set_labels(&data, &labels, ctx.epoch)?;
                Ok(labels.len())
            },
            |n| format!("selinux: data partition labelled, {n} paths"),
        )?;
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(data: &str) -> crate::config::Config {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("r.pub"),
            "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        crate::config::parse(
            "edgeimg.toml",
            &format!("[image]\nname = \"x\"\n{data}"),
            d.path(),
            None,
        )
        .unwrap()
    }

    /// The ext4 leaves the LUKS2 headroom at the partition's end only when
    /// the device will encrypt it; a partition too small to hold both is an
    /// error naming the config.
    #[test]
    fn the_data_filesystem_leaves_the_luks_headroom() {
        const MIB: u64 = 1 << 20;
        let plain = cfg("");
        assert_eq!(data_fs_size(&plain, 256 * MIB).unwrap(), 256 * MIB);
        let enc = cfg("[data]\nencryption = \"tpm2\"\nrecovery_public_key = \"r.pub\"\n");
        assert_eq!(
            data_fs_size(&enc, 256 * MIB).unwrap(),
            256 * MIB - crate::config::data::LUKS_HEADROOM
        );
        assert_eq!(crate::config::data::LUKS_HEADROOM, 32 * MIB);
        let e = data_fs_size(&enc, 48 * MIB).unwrap_err().to_string();
        assert!(
            e.starts_with("edgeimg.toml: the data partition (48 MiB) is too small"),
            "{e}"
        );
    }
}
