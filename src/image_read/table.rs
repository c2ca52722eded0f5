//! The partition table of an image or device: GPT (512- or 4096-byte
//! sectors) or MBR, with checked arithmetic (a hostile table is an error,
//! never a wrapped size).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Serialize;

use super::ReadError;
use crate::ids::Uuid;
use crate::io_error::io_err;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Gpt,
    Mbr,
}

#[derive(Debug, Clone, Serialize)]
pub struct TablePartition {
    pub number: u32,
    /// Byte offset and size.
    pub offset: u64,
    pub size: u64,
    /// GPT type GUID, or the MBR type byte as `0x0c`.
    pub type_id: String,
    /// A name for the type, when known.
    pub type_name: Option<String>,
    /// GPT partition GUID, or for MBR `<disk id>-<nn>` (what Linux calls PARTUUID).
    pub part_uuid: String,
    /// GPT partition name (MBR has none).
    pub name: Option<String>,
    pub bootable: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub kind: TableKind,
    /// GPT disk GUID or MBR disk signature (8 hex digits).
    pub disk_id: String,
    pub sector_size: u64,
    pub partitions: Vec<TablePartition>,
}

impl Table {
    pub fn partition(&self, number: u32) -> Option<&TablePartition> {
        self.partitions.iter().find(|p| p.number == number)
    }
}

/// A GUID as GPT stores it, in the usual text form.
fn guid(b: &[u8; 16]) -> String {
    Uuid::from_gpt_bytes(*b).to_string()
}

fn gpt_type_name(g: &str) -> Option<&'static str> {
    use crate::disk::layout::*;
    Some(match g {
        TYPE_ESP => "EFI system",
        TYPE_ROOT_X86_64 => "Linux root (x86-64)",
        TYPE_ROOT_ARM64 => "Linux root (arm64)",
        TYPE_LINUX_DATA => "Linux data",
        _ => return None,
    })
}

fn mbr_type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        0x0b => "FAT32 (CHS)",
        0x0c => "FAT32 (LBA)",
        0x0e => "FAT16 (LBA)",
        0xef => "EFI system",
        0x83 => "Linux",
        0x82 => "Linux swap",
        0xee => "GPT protective",
        _ => return None,
    })
}

/// Reads the partition table of a disk image or device: GPT when there is
/// one (512- or 4096-byte sectors), else MBR.
pub fn read_table<R: Read + Seek>(f: &mut R, path: &Path) -> Result<Table, ReadError> {
    let invalid = |msg: String| ReadError::Invalid {
        path: path.into(),
        msg,
    };
    f.seek(SeekFrom::Start(0)).map_err(io_err("seek", path))?;
    if let Ok(gpt) = gptman::GPT::find_from(f) {
        let partitions = gpt
            .iter()
            .filter(|(_, p)| p.is_used())
            .map(|(n, p)| {
                let (offset, size) = gpt_span(p.starting_lba, p.ending_lba, gpt.sector_size)
                    .ok_or_else(|| {
                        invalid(format!(
                            "GPT partition {n}: sectors {}..={} of {} bytes are not a valid range",
                            p.starting_lba, p.ending_lba, gpt.sector_size
                        ))
                    })?;
                let t = guid(&p.partition_type_guid);
                Ok(TablePartition {
                    number: n,
                    offset,
                    size,
                    type_name: gpt_type_name(&t).map(String::from),
                    type_id: t,
                    part_uuid: guid(&p.unique_partition_guid),
                    name: Some(p.partition_name.as_str().to_string()).filter(|s| !s.is_empty()),
                    bootable: p.attribute_bits & 0b100 != 0,
                })
            })
            .collect::<Result<Vec<_>, ReadError>>()?;
        return Ok(Table {
            kind: TableKind::Gpt,
            disk_id: guid(&gpt.header.disk_guid),
            sector_size: gpt.sector_size,
            partitions,
        });
    }
    let mut sector = [0u8; 512];
    match f
        .seek(SeekFrom::Start(0))
        .and_then(|_| f.read_exact(&mut sector))
    {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(invalid(
                "no partition table: shorter than one 512-byte sector".into(),
            ));
        }
        r => r.map_err(io_err("read partition table of", path))?,
    }
    if sector[510..512] != [0x55, 0xaa] {
        return Err(invalid("no partition table (neither GPT nor MBR)".into()));
    }
    f.seek(SeekFrom::Start(0)).map_err(io_err("seek", path))?;
    let mbr =
        mbrman::MBR::read_from(f, 512).map_err(|e| invalid(format!("cannot read the MBR: {e}")))?;
    let disk_id = u32::from_le_bytes(mbr.header.disk_signature);
    let partitions = mbr
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(n, p)| TablePartition {
            number: n as u32,
            offset: p.starting_lba as u64 * 512,
            size: p.sectors as u64 * 512,
            type_id: format!("0x{:02x}", p.sys),
            type_name: mbr_type_name(p.sys).map(String::from),
            part_uuid: format!("{disk_id:08x}-{n:02}"),
            name: None,
            bootable: p.boot == mbrman::BOOT_ACTIVE,
        })
        .collect();
    Ok(Table {
        kind: TableKind::Mbr,
        disk_id: format!("{disk_id:08x}"),
        sector_size: 512,
        partitions,
    })
}

/// Partition `number` of the image or device at `path`.
pub fn partition_of(path: &Path, number: u32) -> Result<TablePartition, ReadError> {
    let mut f = std::fs::File::open(path).map_err(io_err("open", path))?;
    let table = read_table(&mut f, path)?;
    table
        .partition(number)
        .cloned()
        .ok_or_else(|| ReadError::Invalid {
            path: path.into(),
            msg: format!("no partition {number}"),
        })
}

/// Byte offset and size of GPT sectors `start..=end`; `None` when the range
/// is empty or does not fit in 64 bits (a hostile table must not wrap).
fn gpt_span(start: u64, end: u64, sector_size: u64) -> Option<(u64, u64)> {
    let sectors = end.checked_add(1)?.checked_sub(start).filter(|&n| n > 0)?;
    let offset = start.checked_mul(sector_size)?;
    let size = sectors.checked_mul(sector_size)?;
    offset.checked_add(size)?;
    Some((offset, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt_guids_are_mixed_endian() {
        let u = Uuid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b").unwrap();
        assert_eq!(
            guid(&u.to_gpt_bytes()),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
    }
}
