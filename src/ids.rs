//! Every identifier in an image (disk GUID, partition UUIDs, filesystem UUIDs,
//! FAT volume id) derives from one seed, so the same inputs give the same bytes.

use edgeimg_contract::partition::{PARTITIONS, Role};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;

/// A UUID derived from `seed` and a purpose string, shaped as a version-4 UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    pub fn derive(seed: &str, purpose: &str) -> Uuid {
        let d = Sha256::new()
            .chain_update(seed.as_bytes())
            .chain_update([0u8])
            .chain_update(purpose.as_bytes())
            .finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        b[6] = (b[6] & 0x0f) | 0x40; // version 4
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        Uuid(b)
    }

    /// The on-disk GPT form: the first three fields little-endian.
    pub fn to_gpt_bytes(self) -> [u8; 16] {
        swap_gpt_fields(self.0)
    }

    /// From the on-disk GPT form (what `edgeimg inspect` reads back).
    pub fn from_gpt_bytes(g: [u8; 16]) -> Uuid {
        Uuid(swap_gpt_fields(g))
    }

    pub fn parse(s: &str) -> Option<Uuid> {
        let h: String = s.chars().filter(|c| *c != '-').collect();
        let v = hex::decode(h).ok()?;
        v.try_into().ok().map(Uuid)
    }
}

/// Byte-swaps the first three fields: between the UUID's big-endian order and
/// GPT's little-endian one (its own inverse).
fn swap_gpt_fields(b: [u8; 16]) -> [u8; 16] {
    let mut g = b;
    g[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    g[4..6].copy_from_slice(&[b[5], b[4]]);
    g[6..8].copy_from_slice(&[b[7], b[6]]);
    g
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode(self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl serde::Serialize for Uuid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Uuid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        let s = String::deserialize(d)?;
        Uuid::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a UUID: {s:?}")))
    }
}

/// A 32-bit FAT volume id from the seed.
pub fn fat_volume_id(seed: &str) -> u32 {
    let u = Uuid::derive(seed, "fat-volume-id").0;
    u32::from_be_bytes([u[0], u[1], u[2], u[3]])
}

/// An MBR disk signature from the seed (never zero: the Pi firmware and Linux
/// treat 0 as "no id").
pub fn mbr_disk_id(seed: &str) -> u32 {
    let u = Uuid::derive(seed, "mbr-disk-id").0;
    u32::from_be_bytes([u[0], u[1], u[2], u[3]]).max(1)
}

/// Every identifier of one image, derived once from its seed: the plan shows
/// them and the build writes exactly these (layout, file systems, FAT).
#[derive(Debug, Clone, Serialize)]
pub struct Ids {
    pub disk_guid: Uuid,
    /// MBR disk signature (MBR boards only), shown as 8 hex digits.
    #[serde(serialize_with = "hex_lower_opt")]
    pub mbr_disk_id: Option<u32>,
    pub boot_partuuid: String,
    pub root_a_partuuid: String,
    pub root_b_partuuid: String,
    pub data_partuuid: String,
    pub root_a_fs_uuid: Uuid,
    pub data_fs_uuid: Uuid,
    pub data_hash_seed: Uuid,
    /// The FAT volume id of the boot partition, shown as 8 hex digits.
    #[serde(serialize_with = "hex_upper")]
    pub boot_volume_id: u32,
}

impl Ids {
    /// The identifiers for `seed`; `mbr` for boards whose disk has an MBR.
    pub fn derive(seed: &str, mbr: bool) -> Ids {
        let disk_id = mbr.then(|| mbr_disk_id(seed));
        let part = |n: usize| {
            let p = &PARTITIONS[n];
            partuuid(seed, disk_id, p.number, p.label)
        };
        Ids {
            disk_guid: Uuid::derive(seed, "disk"),
            mbr_disk_id: disk_id,
            boot_partuuid: part(0),
            root_a_partuuid: part(1),
            root_b_partuuid: part(2),
            data_partuuid: part(3),
            root_a_fs_uuid: Uuid::derive(seed, "fs/root-a"),
            data_fs_uuid: Uuid::derive(seed, "fs/data"),
            data_hash_seed: Uuid::derive(seed, "fs/data/hash-seed"),
            boot_volume_id: fat_volume_id(seed),
        }
    }

    /// The PARTUUID of the partition with `role`.
    pub fn partuuid(&self, role: Role) -> &str {
        match role {
            Role::Boot => &self.boot_partuuid,
            Role::RootA => &self.root_a_partuuid,
            Role::RootB => &self.root_b_partuuid,
            Role::Data => &self.data_partuuid,
        }
    }
}

fn hex_lower_opt<S: serde::Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(id) => s.serialize_some(&format!("{id:08x}")),
        None => s.serialize_none(),
    }
}

fn hex_upper<S: serde::Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:08X}"))
}

/// The PARTUUID of partition `number` (labelled `label`): derived from the seed
/// on GPT; the disk signature and number on MBR.
fn partuuid(seed: &str, mbr_disk_id: Option<u32>, number: u32, label: &str) -> String {
    match mbr_disk_id {
        Some(id) => edgeimg_contract::partition::mbr_partuuid(id, number),
        None => Uuid::derive(seed, &format!("partition/{label}")).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_stable_and_distinct() {
        let a = Uuid::derive("s", "root-a");
        assert_eq!(a, Uuid::derive("s", "root-a"));
        assert_ne!(a, Uuid::derive("s", "root-b"));
        assert_ne!(a, Uuid::derive("t", "root-a"));
        let s = a.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert_eq!(Uuid::parse(&s), Some(a));
    }

    #[test]
    fn gpt_bytes_are_mixed_endian() {
        let u = Uuid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(u.to_gpt_bytes()[..4], [0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(u.to_gpt_bytes()[8..], u.0[8..]);
        // The EFI system partition's type GUID as it stands on disk.
        let on_disk = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        assert_eq!(
            Uuid::from_gpt_bytes(on_disk).to_string(),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
        assert_eq!(Uuid::from_gpt_bytes(u.to_gpt_bytes()), u);
    }
}
