//! What filesystem a partition holds, from its first 4 KiB (superblocks).

use serde::Serialize;

use crate::config::size::human;
use crate::ids::Uuid;

/// What a partition's first bytes say its filesystem is.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FsInfo {
    /// `vfat`, `erofs`, `ext4`, `empty` or `unknown`.
    pub fs: String,
    pub label: Option<String>,
    /// Filesystem UUID, or the FAT volume id as `XXXX-XXXX`.
    pub uuid: Option<String>,
    /// Size the filesystem says it has, in bytes.
    pub fs_size: Option<u64>,
    /// e.g. "FAT32", ext4 free space.
    pub detail: Option<String>,
}

fn cstr(b: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(&[]))
        .trim()
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// A filesystem UUID as its superblock stores it (in order), or `None` when unset.
fn uuid_str(b: &[u8; 16]) -> Option<String> {
    (b != &[0; 16]).then(|| Uuid(*b).to_string())
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Identifies the filesystem from its first 4 KiB (FAT boot sector, EROFS or
/// ext4 superblock at 1024).
pub fn probe_fs(head: &[u8]) -> FsInfo {
    let mut i = FsInfo {
        fs: "unknown".into(),
        label: None,
        uuid: None,
        fs_size: None,
        detail: None,
    };
    if head.len() < 4096 {
        return i;
    }
    let sb = &head[1024..];
    if le32(sb, 0) == 0xE0F5_E1E2 {
        let blkbits = sb[12] as u32;
        i.fs = "erofs".into();
        i.fs_size = Some((le32(sb, 36) as u64) << blkbits);
        i.uuid = uuid_str(sb[48..64].try_into().unwrap());
        i.label = cstr(&sb[64..80]);
        i.detail = Some(format!(
            "{} inodes, block size {}",
            u64::from_le_bytes(sb[16..24].try_into().unwrap()),
            1u64 << blkbits
        ));
        return i;
    }
    if u16::from_le_bytes([sb[56], sb[57]]) == 0xEF53 {
        let bs = 1024u64 << le32(sb, 24);
        let is64 = le32(sb, 96) & 0x80 != 0;
        let hi = |at: usize| if is64 { (le32(sb, at) as u64) << 32 } else { 0 };
        let blocks = le32(sb, 4) as u64 | hi(0x150);
        let free = le32(sb, 12) as u64 | hi(0x158);
        let has_journal = le32(sb, 92) & 0x4 != 0;
        let extents = le32(sb, 96) & 0x40 != 0;
        i.fs = if extents {
            "ext4"
        } else if has_journal {
            "ext3"
        } else {
            "ext2"
        }
        .into();
        i.fs_size = Some(blocks * bs);
        i.uuid = uuid_str(sb[104..120].try_into().unwrap());
        i.label = cstr(&sb[120..136]);
        i.detail = Some(format!("{} free, block size {bs}", human(free * bs)));
        return i;
    }
    if head[510..512] == [0x55, 0xaa]
        && (&head[82..87] == b"FAT32" || &head[54..59] == b"FAT16" || &head[54..59] == b"FAT12")
    {
        let fat32 = &head[82..87] == b"FAT32";
        let (id_at, label_at) = if fat32 { (67, 71) } else { (39, 43) };
        let bps = u16::from_le_bytes([head[11], head[12]]) as u64;
        let small = u16::from_le_bytes([head[19], head[20]]) as u64;
        let sectors = if small != 0 {
            small
        } else {
            le32(head, 32) as u64
        };
        i.fs = "vfat".into();
        let id = le32(head, id_at);
        i.uuid = Some(format!("{:04X}-{:04X}", id >> 16, id & 0xffff));
        i.label = cstr(&head[label_at..label_at + 11]).filter(|l| l != "NO NAME");
        i.fs_size = Some(sectors * bps);
        i.detail = Some(
            if fat32 {
                "FAT32"
            } else {
                std::str::from_utf8(&head[54..59]).unwrap_or("FAT")
            }
            .to_string(),
        );
        return i;
    }
    if head.iter().all(|&b| b == 0) {
        i.fs = "empty".into();
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_superblocks() {
        let mut h = vec![0u8; 4096];
        assert_eq!(probe_fs(&h).fs, "empty");
        h[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        h[1024 + 12] = 12;
        h[1024 + 36..1024 + 40].copy_from_slice(&10u32.to_le_bytes());
        h[1024 + 64..1024 + 68].copy_from_slice(b"root");
        let i = probe_fs(&h);
        assert_eq!(
            (i.fs.as_str(), i.label.as_deref(), i.fs_size),
            ("erofs", Some("root"), Some(40960))
        );
        assert_eq!(probe_fs(&h[..100]).fs, "unknown");
    }
}
