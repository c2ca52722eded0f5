//! Partition layout math: where each partition starts and how big it is.
//! Pure: no I/O, unit-tested.

use serde::{Deserialize, Serialize};

use crate::config::size::{MIB, human};
use crate::ids::{Ids, Uuid};
use edgeimg_contract::arch::Arch;

/// Partition type GUIDs (UEFI spec and the Discoverable Partitions Specification).
pub const TYPE_ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
pub const TYPE_ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
pub const TYPE_ROOT_ARM64: &str = "b921b045-1df0-41c3-af44-4c6f280d3fae";
/// Generic Linux data: deliberately not the /var type, so systemd's GPT
/// auto-generator never mounts it behind the initramfs' back.
pub const TYPE_LINUX_DATA: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

/// Space before the first partition (protective MBR, GPT header and entries, alignment).
pub const HEAD: u64 = MIB;
/// Space after the last partition (backup GPT), rounded to alignment.
pub const TAIL: u64 = MIB;
/// The smallest data partition a fixed-size image may leave.
pub const MIN_DATA: u64 = 64 * MIB;

pub use edgeimg_contract::partition::{PARTITIONS, Role};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partition {
    pub number: u32,
    pub label: String,
    pub role: Role,
    pub fs: String,
    pub type_guid: String,
    /// What Linux shows as PARTUUID: a GUID on GPT, `<disk id>-<nn>` on MBR.
    pub part_uuid: String,
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layout {
    pub disk_guid: Uuid,
    /// The MBR disk signature, for MBR disks.
    pub mbr_disk_id: Option<u32>,
    pub size: u64,
    pub partitions: Vec<Partition>,
}

impl Layout {
    pub fn get(&self, role: Role) -> &Partition {
        self.partitions
            .iter()
            .find(|p| p.role == role)
            .expect("every role is laid out")
    }
}

/// Size of one root slot for a root filesystem of `root_bytes`: room for the
/// image to grow by a quarter in later updates, at least 64 MiB more.
pub fn slot_size(root_bytes: u64) -> u64 {
    (root_bytes + (root_bytes / 4).max(64 * MIB)).next_multiple_of(MIB)
}

#[derive(Debug, thiserror::Error)]
#[error("image size {} is too small for its content: it needs at least {} ({} boot, 2 x {} root slots, {} data minimum, {} partition tables); set image.size to \"{}M\" or more, or \"auto\"", human(*.requested), human(*.needed), human(*.boot), human(*.slot), human(MIN_DATA), human(HEAD + TAIL), .needed.div_ceil(MIB))]
pub struct TooSmall {
    pub requested: u64,
    pub needed: u64,
    pub boot: u64,
    pub slot: u64,
}

/// Lays out the four partitions. With `fixed`, the data partition takes what is
/// left; otherwise it gets `data` bytes (first boot grows it to the medium).
pub fn compute(
    ids: &Ids,
    arch: Arch,
    boot: u64,
    root_bytes: u64,
    data: u64,
    fixed: Option<u64>,
) -> Result<Layout, TooSmall> {
    let boot = boot.next_multiple_of(MIB);
    let wanted_slot = slot_size(root_bytes);
    let min_slot = root_bytes.next_multiple_of(MIB);
    let fixed_part = HEAD + boot + TAIL;
    let (slot, data, size) = match fixed {
        None => {
            let data = data.next_multiple_of(MIB);
            (wanted_slot, data, fixed_part + 2 * wanted_slot + data)
        }
        Some(total) => {
            let total = total / MIB * MIB;
            let needed = fixed_part + 2 * min_slot + MIN_DATA;
            if total < needed {
                return Err(TooSmall {
                    requested: total,
                    needed,
                    boot,
                    slot: min_slot,
                });
            }
            // Prefer room for growth in the slots, but never below the minimum data.
            let slot = if fixed_part + 2 * wanted_slot + MIN_DATA <= total {
                wanted_slot
            } else {
                min_slot
            };
            (slot, total - fixed_part - 2 * slot, total)
        }
    };
    let root_type = if arch == Arch::Arm64 {
        TYPE_ROOT_ARM64
    } else {
        TYPE_ROOT_X86_64
    };
    let mut offset = HEAD;
    let partitions = PARTITIONS
        .iter()
        .map(|spec| {
            let (ty, sz) = match spec.role {
                Role::Boot => (TYPE_ESP, boot),
                Role::RootA | Role::RootB => (root_type, slot),
                Role::Data => (TYPE_LINUX_DATA, data),
            };
            let p = Partition {
                number: spec.number,
                label: spec.label.to_string(),
                role: spec.role,
                fs: spec.fs.to_string(),
                type_guid: ty.to_string(),
                part_uuid: ids.partuuid(spec.role).to_string(),
                offset,
                size: sz,
            };
            offset += sz;
            p
        })
        .collect();
    Ok(Layout {
        disk_guid: ids.disk_guid,
        mbr_disk_id: ids.mbr_disk_id,
        size,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_layout_is_aligned_and_contiguous() {
        let l = compute(
            &Ids::derive("s", false),
            Arch::Amd64,
            256 * MIB,
            300 * MIB + 5,
            256 * MIB,
            None,
        )
        .unwrap();
        let mut end = HEAD;
        for p in &l.partitions {
            assert_eq!(p.offset % MIB, 0);
            assert_eq!(p.size % MIB, 0);
            assert_eq!(p.offset, end);
            end += p.size;
        }
        assert_eq!(l.size, end + TAIL);
        assert!(l.get(Role::RootA).size >= 300 * MIB + 5);
        assert_eq!(l.get(Role::RootA).size, l.get(Role::RootB).size);
        assert_eq!(l.get(Role::Data).number, 4);
    }

    #[test]
    fn fixed_size_gives_rest_to_data() {
        let l = compute(
            &Ids::derive("s", false),
            Arch::Amd64,
            256 * MIB,
            300 * MIB,
            256 * MIB,
            Some(4096 * MIB),
        )
        .unwrap();
        assert_eq!(l.size, 4096 * MIB);
        let d = l.get(Role::Data);
        assert_eq!(d.offset + d.size + TAIL, l.size);
    }

    #[test]
    fn too_small_says_how_much_is_needed() {
        let e = compute(
            &Ids::derive("s", false),
            Arch::Amd64,
            256 * MIB,
            300 * MIB,
            256 * MIB,
            Some(512 * MIB),
        )
        .unwrap_err();
        assert_eq!(e.needed, HEAD + 256 * MIB + 600 * MIB + MIN_DATA + TAIL);
        let msg = e.to_string();
        assert!(msg.contains("too small") && msg.contains("922M"), "{msg}");
    }

    #[test]
    fn uuids_follow_the_seed() {
        let a = compute(&Ids::derive("one", false), Arch::Amd64, MIB, MIB, MIB, None).unwrap();
        let b = compute(&Ids::derive("two", false), Arch::Amd64, MIB, MIB, MIB, None).unwrap();
        assert_ne!(a.disk_guid, b.disk_guid);
        assert_ne!(a.partitions[1].part_uuid, b.partitions[1].part_uuid);
        assert_eq!(
            a.partitions[1].part_uuid,
            compute(
                &Ids::derive("one", false),
                Arch::Amd64,
                MIB,
                9 * MIB,
                MIB,
                None
            )
            .unwrap()
            .partitions[1]
                .part_uuid
        );
    }

    #[test]
    fn mbr_partuuids_are_disk_id_and_number() {
        let mbr_ids = Ids::derive("s", true);
        let id = format!("{:08x}", mbr_ids.mbr_disk_id.unwrap());
        let l = compute(&mbr_ids, Arch::Arm64, MIB, MIB, MIB, None).unwrap();
        assert_eq!(l.get(Role::RootA).part_uuid, format!("{id}-02"));
        assert_eq!(l.get(Role::Data).part_uuid, format!("{id}-04"));
    }
}
