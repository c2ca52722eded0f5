//! The partition table both sides name partitions by: the builder writes
//! kernel command lines with these names, the agent looks partitions up by them.

/// An MBR partition's PARTUUID as the kernel and blkid print it: the disk
/// signature and the partition number, both in hex. The builder writes
/// /etc/fstab and command lines with it; the agent finds partitions by it.
pub fn mbr_partuuid(disk_id: u32, number: u32) -> String {
    format!("{disk_id:08x}-{number:02x}")
}
