//! The disk image: a sparse file with a partition table, and the partition
//! images spliced in at their offsets. No loop devices, no mounts.

pub mod layout;

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};

use crate::ids::Uuid;
pub use layout::{Layout, Partition, Role};

const SECTOR: u64 = 512;

/// The disk step of a build: a sparse `path` of `layout.size` with its
/// partition table (MBR when the layout has a disk id, else GPT), each
/// filesystem image spliced in at its partition's offset.
pub fn assemble(path: &Path, layout: &Layout, parts: &[(Role, &Path)]) -> Result<()> {
    let img = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    match layout.mbr_disk_id {
        Some(id) => write_mbr(layout, id, &img)?,
        None => write_gpt(layout, &img)?,
    }
    for (role, fs) in parts {
        splice(&img, layout.get(*role), fs)?;
    }
    img.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes an empty sparse image of `layout.size` with its GPT into `out`.
pub fn write_gpt(layout: &Layout, out: &File) -> Result<()> {
    out.set_len(layout.size)
        .context("cannot size the image file")?;
    let mut f = out;
    gptman::GPT::write_protective_mbr_into(&mut f, SECTOR)
        .context("cannot write the protective MBR")?;
    let mut gpt = gptman::GPT::new_from(&mut f, SECTOR, layout.disk_guid.to_gpt_bytes())
        .context("cannot create the GPT")?;
    for p in &layout.partitions {
        let ty = Uuid::parse(&p.type_guid).expect("type GUID constants are valid");
        gpt[p.number] = gptman::GPTPartitionEntry {
            partition_type_guid: ty.to_gpt_bytes(),
            unique_partition_guid: Uuid::parse(&p.part_uuid)
                .context("GPT partitions have GUID PARTUUIDs")?
                .to_gpt_bytes(),
            starting_lba: p.offset / SECTOR,
            ending_lba: (p.offset + p.size) / SECTOR - 1,
            attribute_bits: 0,
            partition_name: p.label.as_str().into(),
        };
    }
    gpt.write_into(&mut f).context("cannot write the GPT")?;
    Ok(())
}

/// Copies a filesystem image into its partition, refusing one that does not fit.
pub fn splice(image: &File, part: &Partition, fs_image: &Path) -> Result<()> {
    let len = std::fs::metadata(fs_image)
        .with_context(|| format!("cannot read {}", fs_image.display()))?
        .len();
    if len > part.size {
        anyhow::bail!(
            "{} ({} bytes) does not fit partition {} ({} bytes)",
            fs_image.display(),
            len,
            part.label,
            part.size
        );
    }
    crate::sparse::splice_into(fs_image, image, part.offset)
        .with_context(|| format!("cannot write {} into the image", part.label))?;
    Ok(())
}

/// Writes an empty sparse image of `layout.size` with an MBR (DOS) table whose
/// disk signature is `disk_id` (Linux shows MBR PARTUUIDs as `<id>-<nn>`).
pub fn write_mbr(layout: &Layout, disk_id: u32, out: &File) -> Result<()> {
    out.set_len(layout.size)
        .context("cannot size the image file")?;
    let mut f = out;
    let mut mbr = mbrman::MBR::new_from(&mut f, SECTOR as u32, disk_id.to_le_bytes())
        .context("cannot create the MBR")?;
    for p in &layout.partitions {
        let sys = match p.role {
            Role::Boot => 0x0c, // FAT32 with LBA: what the Pi firmware looks for
            _ => 0x83,
        };
        mbr[p.number as usize] = mbrman::MBRPartitionEntry {
            boot: if p.role == Role::Boot {
                mbrman::BOOT_ACTIVE
            } else {
                mbrman::BOOT_INACTIVE
            },
            first_chs: mbrman::CHS::empty(),
            sys,
            last_chs: mbrman::CHS::empty(),
            starting_lba: u32::try_from(p.offset / SECTOR).context("MBR disks end at 2 TiB")?,
            sectors: u32::try_from(p.size / SECTOR).context("MBR partitions end at 2 TiB")?,
        };
    }
    mbr.write_into(&mut f).context("cannot write the MBR")?;
    Ok(())
}
