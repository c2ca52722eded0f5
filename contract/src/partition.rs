//! The partition table both sides name partitions by: the builder writes
//! kernel command lines with these names, the agent looks partitions up by them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The FAT boot partition (EFI system partition, or the Pi firmware's).
    Boot,
    RootA,
    RootB,
    /// /var and the /etc upper layer; grows to fill the medium on first boot.
    Data,
}

/// One partition of every edgeimg disk, in disk order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSpec {
    /// Partition number (1-based, as Linux names it: `sda2`, `mmcblk0p2`).
    pub number: u32,
    /// GPT partition name / file system label.
    pub label: &'static str,
    pub role: Role,
    /// The file system the build writes into it (`none`: left empty).
    pub fs: &'static str,
}

/// The partition table both sides agree on: the builder lays the disk out
/// from it, the agent finds the other slot by it.
pub const PARTITIONS: [PartitionSpec; 4] = [
    PartitionSpec {
        number: 1,
        label: "EDGEBOOT",
        role: Role::Boot,
        fs: "vfat",
    },
    PartitionSpec {
        number: 2,
        label: "edgeimg-root-a",
        role: Role::RootA,
        fs: "erofs",
    },
    PartitionSpec {
        number: 3,
        label: "edgeimg-root-b",
        role: Role::RootB,
        fs: "none",
    },
    PartitionSpec {
        number: 4,
        label: "edgeimg-data",
        role: Role::Data,
        fs: "ext4",
    },
];

/// The partition with this role.
pub fn spec(role: Role) -> &'static PartitionSpec {
    PARTITIONS
        .iter()
        .find(|p| p.role == role)
        .expect("PARTITIONS has every role")
}

/// One of the two root slots an A/B update switches between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    /// The name on the kernel command line (`edgeimg.slot=a`) and in boot
    /// file paths: `a` or `b`.
    pub const fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The name people read: `A` or `B`.
    pub const fn upper(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    pub fn from_name(name: &str) -> Option<Slot> {
        match name {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    /// The slot an update of this one writes.
    pub const fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub const fn role(self) -> Role {
        match self {
            Slot::A => Role::RootA,
            Slot::B => Role::RootB,
        }
    }

    /// The slot's partition number.
    pub fn partition_number(self) -> u32 {
        spec(self.role()).number
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// systemd-boot's boot entries and a slot's kernel and initrd on the UEFI
/// boot partition: the builder writes slot A's, an update writes the other
/// slot's, and the agent recognises both by these names.
pub mod boot_files {
    use super::Slot;

    /// Every edgeimg entry's name starts with this (`edgeimg-<n>-<slot>[+tries].conf`).
    pub const ENTRY_PREFIX: &str = "edgeimg-";
    /// Where the entries live on the boot partition.
    pub const ENTRY_DIR: &str = "loader/entries";

    /// Entry `n` of `slot`, without boot counting: `edgeimg-1-a.conf`.
    pub fn entry_name(n: u64, slot: Slot) -> String {
        format!("{ENTRY_PREFIX}{n}-{slot}.conf")
    }

    /// `edgeimg-<n>-<slot>[+tries[-done]].conf` -> (entry number, slot).
    pub fn parse_entry(name: &str) -> Option<(u64, Slot)> {
        parse_numbered(name.strip_suffix(".conf")?)
    }

    /// Where a Secure Boot image's signed Unified Kernel Images are: systemd-boot
    /// lists every `.efi` there as an entry of its own (no entry file), with
    /// boot counting in the file name as for entry files.
    pub const UKI_DIR: &str = "EFI/Linux";

    /// UKI `n` of `slot`, without boot counting: `edgeimg-1-a.efi`.
    pub fn uki_name(n: u64, slot: Slot) -> String {
        format!("{ENTRY_PREFIX}{n}-{slot}.efi")
    }

    /// `edgeimg-<n>-<slot>[+tries[-done]].efi` -> (entry number, slot).
    pub fn parse_uki(name: &str) -> Option<(u64, Slot)> {
        parse_numbered(name.strip_suffix(".efi")?)
    }

    /// `edgeimg-<n>-<slot>[+tries[-done]]` -> (entry number, slot).
    fn parse_numbered(name: &str) -> Option<(u64, Slot)> {
        let stem = name.strip_prefix(ENTRY_PREFIX)?;
        let stem = stem.split('+').next()?;
        let (g, s) = stem.rsplit_once('-')?;
        Some((g.parse().ok()?, Slot::from_name(s)?))
    }

    /// The slot's kernel, relative to the boot partition: `edgeimg/a/vmlinuz`.
    pub fn kernel(slot: Slot) -> String {
        format!("edgeimg/{slot}/vmlinuz")
    }

    /// The slot's initrd, relative to the boot partition.
    pub fn initrd(slot: Slot) -> String {
        format!("edgeimg/{slot}/initrd.img")
    }
}

/// An MBR partition's PARTUUID as the kernel and blkid print it: the disk
/// signature and the partition number, both in hex. The builder writes
/// /etc/fstab and command lines with it; the agent finds partitions by it.
pub fn mbr_partuuid(disk_id: u32, number: u32) -> String {
    format!("{disk_id:08x}-{number:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_disk_order_and_slots_name_their_partitions() {
        for (i, p) in PARTITIONS.iter().enumerate() {
            assert_eq!(p.number as usize, i + 1, "{}", p.label);
        }
        assert_eq!(Slot::A.partition_number(), 2);
        assert_eq!(Slot::B.partition_number(), 3);
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(Slot::from_name(Slot::B.name()), Some(Slot::B));
        assert_eq!(Slot::from_name("c"), None);
    }

    #[test]
    fn entry_names_round_trip_with_boot_counting() {
        use boot_files::*;
        assert_eq!(entry_name(1, Slot::A), "edgeimg-1-a.conf");
        assert_eq!(parse_entry("edgeimg-1-a.conf"), Some((1, Slot::A)));
        assert_eq!(parse_entry("edgeimg-12-b+3.conf"), Some((12, Slot::B)));
        assert_eq!(parse_entry("edgeimg-2-b+0-3.conf"), Some((2, Slot::B)));
        assert_eq!(parse_entry("edgeimg-a.conf"), None);
        assert_eq!(parse_entry("other-1-a.conf"), None);
        assert_eq!(kernel(Slot::B), "edgeimg/b/vmlinuz");
        assert_eq!(uki_name(1, Slot::A), "edgeimg-1-a.efi");
        assert_eq!(parse_uki("edgeimg-1-a.efi"), Some((1, Slot::A)));
        assert_eq!(parse_uki("edgeimg-2-b+2-1.efi"), Some((2, Slot::B)));
        assert_eq!(parse_uki("edgeimg-2-b.conf"), None);
        assert_eq!(parse_entry("edgeimg-2-b.efi"), None);
    }
}
