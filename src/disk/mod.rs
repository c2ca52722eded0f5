//! The disk image: a sparse file with a partition table, and the partition
//! images spliced in at their offsets. No loop devices, no mounts.

pub mod layout;

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};

pub use layout::{Layout, Partition, Role};
use crate::ids::Uuid;

const SECTOR: u64 = 512;

/// Writes an empty sparse image of `layout.size` with its GPT into `out`.
pub fn write_gpt(layout: &Layout, out: &File) -> Result<()> {
    out.set_len(layout.size).context("cannot size the image file")?;
    let mut f = out;
    gptman::GPT::write_protective_mbr_into(&mut f, SECTOR).context("cannot write the protective MBR")?;
    let mut gpt = gptman::GPT::new_from(&mut f, SECTOR, layout.disk_guid.to_gpt_bytes()).context("cannot create the GPT")?;
    for p in &layout.partitions {
        let ty = Uuid::parse(&p.type_guid).expect("type GUID constants are valid");
        gpt[p.number] = gptman::GPTPartitionEntry {
            partition_type_guid: ty.to_gpt_bytes(),
            unique_partition_guid: p.part_uuid.to_gpt_bytes(),
            starting_lba: p.offset / SECTOR,
            ending_lba: (p.offset + p.size) / SECTOR - 1,
            attribute_bits: 0,
            partition_name: p.label.into(),
        };
    }
    gpt.write_into(&mut f).context("cannot write the GPT")?;
    Ok(())
}

/// Copies a filesystem image into its partition, refusing one that does not fit.
pub fn splice(image: &File, part: &Partition, fs_image: &Path) -> Result<()> {
    let len = std::fs::metadata(fs_image).with_context(|| format!("cannot read {}", fs_image.display()))?.len();
    if len > part.size {
        anyhow::bail!("{} ({} bytes) does not fit partition {} ({} bytes)", fs_image.display(), len, part.label, part.size);
    }
    crate::sparse::splice_into(fs_image, image, part.offset).with_context(|| format!("cannot write {} into the image", part.label))?;
    Ok(())
}
