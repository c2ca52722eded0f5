//! Filesystem images, each made by its reference tool into a plain file:
//! FAT32 boot, EROFS root, ext4 data (seeded from /var). All reproducible from the epoch and seed.

pub mod data_seed;
pub mod erofs;
pub mod ext4;
pub mod images;
pub mod vfat;
