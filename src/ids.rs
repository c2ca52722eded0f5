//! Every identifier in an image (disk GUID, partition UUIDs, filesystem UUIDs,
//! FAT volume id) derives from one seed, so the same inputs give the same bytes.

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
