//! The kernel command-line keys edgeimg sets: the builder writes them into
//! every boot entry, the agent rewrites them when an update lands in the
//! other slot, and the initramfs (`local-top-edgeimg-verity`) reads the
//! verity ones. Each is written `KEY=value`.

/// The root filesystem's dm-verity root hash (hex).
pub const VERITY: &str = "edgeimg.verity";
/// The partition holding the verity-protected root (`PARTUUID=...`): the slot.
pub const VERITY_DEV: &str = "edgeimg.verity.dev";
/// Byte offset of the hash tree within [`VERITY_DEV`].
pub const VERITY_OFFSET: &str = "edgeimg.verity.offset";
/// The data partition (`PARTUUID=...`).
pub const DATA: &str = "edgeimg.data";
/// The slot this entry boots: `a` or `b`.
pub const SLOT: &str = "edgeimg.slot";
