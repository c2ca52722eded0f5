//! A read-only FAT12/16/32 reader for one small file, every number from the
//! disk checked before it is used.
//!
//! The boot partition is the one file system on the medium anyone may edit,
//! and the agent reads node.toml from it as root before anything is mounted.
//! Reading one file by path needs little of FAT: the boot sector, the first
//! FAT, directory entries (with long names) and one cluster chain. A general
//! FAT library computes offsets from cluster numbers as it finds them (a
//! cluster below 2 in a crafted directory entry underflowed in fatfs 0.3.6)
//! and follows chains as long as they go, so a chain that loops never ends.
//! Here every cluster number is checked against the volume, every chain is cut
//! at the volume's cluster count, a directory is read at most to FAT's own
//! limit of 65,536 entries, and the file at most to [`MAX_FILE`] bytes.

use crate::error::{Context, Result};
use std::io::{Read, Seek, SeekFrom};

/// The largest file [`read_file`] returns.
pub const MAX_FILE: u64 = 64 * 1024;

/// FAT's own limit on the entries of one directory.
const MAX_DIR_ENTRIES: u64 = 65_536;
const ENTRY: usize = 32;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_LONG_NAME: u8 = 0x0f;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

/// The layout a boot sector describes, checked against itself and the
/// partition.
#[derive(Debug)]
struct Volume {
    fat_type: FatType,
    cluster_bytes: u64,
    /// Byte offset of the first FAT.
    fat_start: u64,
    fat_bytes: u64,
    /// FAT12/16: the fixed root directory (offset, entries); FAT32: none.
    fixed_root: Option<(u64, u64)>,
    /// FAT32: the root directory's first cluster.
    root_cluster: u32,
    /// Byte offset of cluster 2.
    data_start: u64,
    /// The highest valid cluster number (clusters are 2..=max_cluster).
    max_cluster: u32,
}

/// Where a cluster chain goes after one cluster.
enum Next {
    Cluster(u32),
    End,
}

/// A directory entry that matched a name.
struct Entry {
    is_dir: bool,
    first_cluster: u32,
    size: u32,
}

/// The file at `rel` (`/`-separated, matched without regard to ASCII case as
/// FAT does) in the FAT file system on `part` (`len` bytes from offset 0);
/// `None` when a component is absent. A file over [`MAX_FILE`] bytes is an
/// error.
pub fn read_file<D: Read + Seek>(part: &mut D, len: u64, rel: &str) -> Result<Option<Vec<u8>>> {
    let vol = Volume::read(part, len)?;
    let components: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let Some((last, dirs)) = components.split_last() else {
        crate::bail!("no file name in {rel:?}");
    };
    // `None`: the root directory.
    let mut dir: Option<u32> = None;
    for name in dirs {
        match vol.find(part, dir, name)? {
            Some(e) if e.is_dir => dir = Some(vol.check_cluster(e.first_cluster, name)?),
            Some(_) => crate::bail!("{name} in {rel} is a file, not a directory"),
            None => return Ok(None),
        }
    }
    match vol.find(part, dir, last)? {
        Some(e) if e.is_dir => crate::bail!("{rel} is a directory, not a file"),
        Some(e) => vol.read_chain(part, e.first_cluster, e.size, rel).map(Some),
        None => Ok(None),
    }
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

fn read_at<D: Read + Seek>(part: &mut D, offset: u64, buf: &mut [u8]) -> Result<()> {
    part.seek(SeekFrom::Start(offset))
        .and_then(|_| part.read_exact(buf))
        .with_context(|| format!("reading {} bytes at offset {offset}", buf.len()))
}

impl Volume {
    fn read<D: Read + Seek>(part: &mut D, len: u64) -> Result<Volume> {
        let mut b = [0u8; 512];
        read_at(part, 0, &mut b).context("reading the FAT boot sector")?;
        Volume::parse(&b, len).context("not a usable FAT file system")
    }

    /// The boot sector's fields (Microsoft's FAT specification), each
    /// checked; the FAT type from the cluster count, as the specification
    /// defines it.
    fn parse(b: &[u8; 512], len: u64) -> Result<Volume> {
        let bytes_per_sector = le16(b, 11);
        if ![512, 1024, 2048, 4096].contains(&bytes_per_sector) {
            crate::bail!("{bytes_per_sector} bytes per sector (512, 1024, 2048 or 4096)");
        }
        let sectors_per_cluster = u64::from(b[13]);
        if !sectors_per_cluster.is_power_of_two() {
            crate::bail!("{sectors_per_cluster} sectors per cluster (a power of two)");
        }
        let reserved = le16(b, 14);
        let fats = u64::from(b[16]);
        let root_entries = le16(b, 17);
        let total = match le16(b, 19) {
            0 => le32(b, 32),
            n => n,
        };
        let fat_sectors = match le16(b, 22) {
            0 => le32(b, 36),
            n => n,
        };
        if reserved == 0 || fats == 0 || fat_sectors == 0 {
            crate::bail!(
                "{reserved} reserved sectors, {fats} FATs of {fat_sectors} sectors (each at least 1)"
            );
        }
        // All in u64 from 16- and 32-bit fields: none of this can overflow.
        let root_sectors = (root_entries * ENTRY as u64).div_ceil(bytes_per_sector);
        let fat_start_sector = reserved;
        let root_start_sector = reserved + fats * fat_sectors;
        let data_start_sector = root_start_sector + root_sectors;
        if total * bytes_per_sector > len {
            crate::bail!(
                "{total} sectors of {bytes_per_sector} bytes do not fit the {len}-byte partition"
            );
        }
        if data_start_sector >= total {
            crate::bail!("no data area: it would start at sector {data_start_sector} of {total}");
        }
        let clusters = (total - data_start_sector) / sectors_per_cluster;
        let fat_type = match clusters {
            0 => crate::bail!("no data cluster"),
            1..4085 => FatType::Fat12,
            4085..65525 => FatType::Fat16,
            _ => FatType::Fat32,
        };
        // The highest cluster number a FAT32 entry can hold (28 bits) less
        // the reserved values.
        if clusters > 0x0fff_fff5 {
            crate::bail!("{clusters} clusters (FAT32 has at most 268,435,445)");
        }
        let max_cluster = u32::try_from(clusters + 1).expect("checked above");
        let fat_bytes = fat_sectors * bytes_per_sector;
        let entry_bits = match fat_type {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        };
        if (u64::from(max_cluster) + 1) * entry_bits > fat_bytes * 8 {
            crate::bail!("a FAT of {fat_bytes} bytes cannot map {clusters} clusters");
        }
        let (fixed_root, root_cluster) = if fat_type == FatType::Fat32 {
            if root_entries != 0 {
                crate::bail!(
                    "a FAT32 volume with a fixed root directory of {root_entries} entries"
                );
            }
            (None, u32::try_from(le32(b, 44)).expect("32-bit field"))
        } else {
            if root_entries == 0 {
                crate::bail!("a FAT12/16 volume without root directory entries");
            }
            (
                Some((root_start_sector * bytes_per_sector, root_entries)),
                0,
            )
        };
        let vol = Volume {
            fat_type,
            cluster_bytes: sectors_per_cluster * bytes_per_sector,
            fat_start: fat_start_sector * bytes_per_sector,
            fat_bytes,
            fixed_root,
            root_cluster,
            data_start: data_start_sector * bytes_per_sector,
            max_cluster,
        };
        if fat_type == FatType::Fat32 {
            vol.check_cluster(root_cluster, "the root directory")?;
        }
        Ok(vol)
    }

    /// `cluster` when it is a data cluster of this volume.
    fn check_cluster(&self, cluster: u32, what: &str) -> Result<u32> {
        if cluster < 2 || cluster > self.max_cluster {
            crate::bail!(
                "{what} starts at cluster {cluster}, outside the volume's clusters 2 to {}",
                self.max_cluster
            );
        }
        Ok(cluster)
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_start + u64::from(cluster - 2) * self.cluster_bytes
    }

    /// The FAT entry of `cluster` (checked by the caller) in the first FAT.
    fn next<D: Read + Seek>(&self, part: &mut D, cluster: u32) -> Result<Next> {
        let c = u64::from(cluster);
        let (at, width) = match self.fat_type {
            FatType::Fat12 => (c + c / 2, 2),
            FatType::Fat16 => (c * 2, 2),
            FatType::Fat32 => (c * 4, 4),
        };
        debug_assert!(at + width <= self.fat_bytes, "checked when parsed");
        let mut b = [0u8; 4];
        read_at(part, self.fat_start + at, &mut b[..width as usize]).context("reading the FAT")?;
        let (value, end) = match self.fat_type {
            FatType::Fat12 if cluster % 2 == 1 => (le16(&b, 0) >> 4, 0xff8),
            FatType::Fat12 => (le16(&b, 0) & 0xfff, 0xff8),
            FatType::Fat16 => (le16(&b, 0), 0xfff8),
            FatType::Fat32 => (le32(&b, 0) & 0x0fff_ffff, 0x0fff_fff8),
        };
        if value >= end {
            return Ok(Next::End);
        }
        match u32::try_from(value) {
            Ok(n) if (2..=self.max_cluster).contains(&n) => Ok(Next::Cluster(n)),
            _ => crate::bail!(
                "the FAT entry of cluster {cluster} is {value:#x}: free, bad or outside the volume in the middle of a chain"
            ),
        }
    }

    /// The clusters of the chain from `first`, at most `limit` of them and
    /// never more than the volume has (a chain longer than that loops).
    fn chain<D: Read + Seek>(
        &self,
        part: &mut D,
        first: u32,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u32>> {
        let mut cluster = self.check_cluster(first, what)?;
        let mut out = vec![cluster];
        while (out.len() as u64) < limit {
            match self.next(part, cluster)? {
                Next::End => return Ok(out),
                Next::Cluster(n) if out.len() as u64 >= u64::from(self.max_cluster) - 1 => {
                    crate::bail!("the cluster chain of {what} loops (it reaches cluster {n} again)")
                }
                Next::Cluster(n) => {
                    cluster = n;
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    /// The entry named `name` in directory `dir` (`None`: the root).
    fn find<D: Read + Seek>(
        &self,
        part: &mut D,
        dir: Option<u32>,
        name: &str,
    ) -> Result<Option<Entry>> {
        let mut names = LongName::default();
        let mut scan = |block: &[u8]| -> Option<Option<Entry>> {
            for e in block.chunks_exact(ENTRY) {
                match e[0] {
                    // The end of the directory.
                    0x00 => return Some(None),
                    0xe5 => names.clear(),
                    _ if e[11] == ATTR_LONG_NAME => names.push(e),
                    _ if e[11] & ATTR_VOLUME_ID != 0 => names.clear(),
                    _ => {
                        let long = names.take(e);
                        let short = short_name(e);
                        let matches = long
                            .as_deref()
                            .is_some_and(|l| l.eq_ignore_ascii_case(name))
                            || short.eq_ignore_ascii_case(name);
                        if matches {
                            let hi = if self.fat_type == FatType::Fat32 {
                                le16(e, 20)
                            } else {
                                0
                            };
                            return Some(Some(Entry {
                                is_dir: e[11] & ATTR_DIRECTORY != 0,
                                first_cluster: u32::try_from(hi << 16 | le16(e, 26))
                                    .expect("32 bits"),
                                size: u32::try_from(le32(e, 28)).expect("32 bits"),
                            }));
                        }
                    }
                }
            }
            None
        };
        let what = format!("the directory holding {name}");
        let block_entries = self.cluster_bytes / ENTRY as u64;
        let blocks: Vec<(u64, u64)> = match (dir, self.fixed_root) {
            (None, Some((offset, entries))) => vec![(offset, entries * ENTRY as u64)],
            (dir, _) => {
                let first = dir.unwrap_or(self.root_cluster);
                let limit = MAX_DIR_ENTRIES.div_ceil(block_entries);
                self.chain(part, first, limit, &what)?
                    .into_iter()
                    .map(|c| (self.cluster_offset(c), self.cluster_bytes))
                    .collect()
            }
        };
        let mut buf = Vec::new();
        for (offset, bytes) in blocks {
            buf.resize(
                usize::try_from(bytes).expect("at most a cluster or a fixed root"),
                0,
            );
            read_at(part, offset, &mut buf).with_context(|| format!("reading {what}"))?;
            if let Some(found) = scan(&buf) {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// A file's `size` bytes from its chain at `first`.
    fn read_chain<D: Read + Seek>(
        &self,
        part: &mut D,
        first: u32,
        size: u32,
        what: &str,
    ) -> Result<Vec<u8>> {
        let size = u64::from(size);
        if size > MAX_FILE {
            crate::bail!(
                "{what} is larger than {} KiB: refused (a node file is a few KiB)",
                MAX_FILE / 1024
            );
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let clusters = size.div_ceil(self.cluster_bytes);
        let chain = self.chain(part, first, clusters, what)?;
        if (chain.len() as u64) < clusters {
            crate::bail!(
                "{what}: its cluster chain ends after {} of the {clusters} clusters its size needs",
                chain.len()
            );
        }
        let mut out = vec![0u8; usize::try_from(size).expect("at most MAX_FILE")];
        for (i, (c, piece)) in chain
            .iter()
            .zip(out.chunks_mut(usize::try_from(self.cluster_bytes).expect("a cluster")))
            .enumerate()
        {
            read_at(part, self.cluster_offset(*c), piece)
                .with_context(|| format!("reading cluster {} of {what}", i + 1))?;
        }
        Ok(out)
    }
}

/// `NAME.EXT` from an 8.3 entry (0x05 stands for a leading 0xe5).
fn short_name(e: &[u8]) -> String {
    let part = |b: &[u8]| -> String {
        b.iter()
            .map(|&c| {
                if c == b' ' || c.is_ascii_graphic() {
                    c as char
                } else {
                    '\u{fffd}'
                }
            })
            .collect::<String>()
            .trim_end()
            .to_string()
    };
    let mut base = e[..8].to_vec();
    if base[0] == 0x05 {
        base[0] = 0xe5;
    }
    let (base, ext) = (part(&base), part(&e[8..11]));
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// The long name pieces that precede an 8.3 entry, last piece first on disk.
#[derive(Default)]
struct LongName {
    /// UCS-2 units by piece (piece 1 is the name's start).
    pieces: Vec<[u16; 13]>,
    checksum: u8,
    /// The piece number expected next (counting down to 1); 0: none.
    expect: u8,
}

impl LongName {
    fn clear(&mut self) {
        self.pieces.clear();
        self.expect = 0;
    }

    fn push(&mut self, e: &[u8]) {
        let order = e[0] & 0x1f;
        let units: [u16; 13] = std::array::from_fn(|i| {
            let at = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30][i];
            u16::from_le_bytes([e[at], e[at + 1]])
        });
        if e[0] & 0x40 != 0 {
            // The last piece comes first and starts a new name.
            self.pieces.clear();
            self.checksum = e[13];
        } else if order != self.expect || e[13] != self.checksum {
            self.clear();
            return;
        }
        if order == 0 {
            self.clear();
            return;
        }
        self.pieces.push(units);
        self.expect = order - 1;
    }

    /// The long name for the 8.3 entry `e`, when the pieces are complete and
    /// carry its checksum.
    fn take(&mut self, e: &[u8]) -> Option<String> {
        let sum = e[..11]
            .iter()
            .fold(0u8, |s, &c| s.rotate_right(1).wrapping_add(c));
        let complete = !self.pieces.is_empty() && self.expect == 0 && self.checksum == sum;
        let pieces = std::mem::take(&mut self.pieces);
        self.expect = 0;
        if !complete {
            return None;
        }
        let units: Vec<u16> = pieces
            .iter()
            .rev()
            .flatten()
            .copied()
            .take_while(|&u| u != 0)
            .collect();
        String::from_utf16(&units).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    const NODE: &str = "edgeimg/node.toml";

    /// A `mib`-MiB volume of `fat_type` with 512-byte clusters, written by
    /// another FAT implementation (fatfs): `edgeimg/node.toml` of `node`
    /// bytes, fragmented (a file written between its two halves), beside a
    /// long-named file.
    fn volume(fat_type: fatfs::FatType, mib: usize, node: &[u8]) -> Vec<u8> {
        let mut disk = Cursor::new(vec![0u8; mib << 20]);
        let opts = fatfs::FormatVolumeOptions::new()
            .fat_type(fat_type)
            .bytes_per_cluster(512);
        fatfs::format_volume(&mut disk, opts).unwrap();
        {
            let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).unwrap();
            let dir = fs.root_dir().create_dir("edgeimg").unwrap();
            let (a, b) = node.split_at(node.len() / 2);
            let mut f = dir.create_file("node.toml").unwrap();
            f.write_all(a).unwrap();
            let mut other = dir.create_file("a rather long name.toml").unwrap();
            other.write_all(&[b'x'; 1500]).unwrap();
            f.write_all(b).unwrap();
            fs.root_dir()
                .create_file("readme.txt")
                .unwrap()
                .write_all(b"hello")
                .unwrap();
        }
        disk.into_inner()
    }

    fn read(v: &[u8], rel: &str) -> Result<Option<Vec<u8>>> {
        read_file(&mut Cursor::new(v), v.len() as u64, rel)
    }

    fn text(n: usize) -> Vec<u8> {
        (0..n).map(|i| b'a' + (i % 26) as u8).collect()
    }

    /// The byte offset of the 8.3 entry whose name starts with `base` and
    /// whose extension is `ext` (a long name's short alias is `NODE~1.TOM`).
    fn entry_at(v: &[u8], base: &str, ext: &str) -> usize {
        v.chunks_exact(ENTRY)
            .position(|e| {
                e[11] != ATTR_LONG_NAME
                    && e.starts_with(base.as_bytes())
                    && e[8..11].starts_with(ext.as_bytes())
            })
            .expect("entry present")
            * ENTRY
    }

    #[test]
    fn reads_fragmented_and_long_named_files_on_fat12_16_32() {
        for (ty, mib, want) in [
            (fatfs::FatType::Fat12, 1, FatType::Fat12),
            (fatfs::FatType::Fat16, 8, FatType::Fat16),
            (fatfs::FatType::Fat32, 40, FatType::Fat32),
        ] {
            let node = text(3000);
            let v = volume(ty, mib, &node);
            let len = v.len() as u64;
            let vol = Volume::read(&mut Cursor::new(&v), len).unwrap();
            assert_eq!(vol.fat_type, want);
            assert_eq!(read(&v, NODE).unwrap().unwrap(), node, "{want:?}");
            // FAT matches names without regard to case; short names too.
            assert_eq!(read(&v, "EDGEIMG/Node.TOML").unwrap().unwrap(), node);
            assert_eq!(read(&v, "README.TXT").unwrap().unwrap(), b"hello");
            let long = read(&v, "edgeimg/A Rather Long Name.toml")
                .unwrap()
                .unwrap();
            assert_eq!(long, vec![b'x'; 1500]);
            assert_eq!(read(&v, "edgeimg/absent.toml").unwrap(), None);
            assert_eq!(read(&v, "absent/node.toml").unwrap(), None);
            let e = read(&v, "edgeimg").unwrap_err().to_string();
            assert!(e.contains("is a directory"), "{e}");
            let e = read(&v, "readme.txt/x").unwrap_err().to_string();
            assert!(e.contains("is a file"), "{e}");
        }
    }

    #[test]
    fn reads_what_mkfs_fat_and_mtools_wrote() {
        // The tools edgeimg builds boot partitions with (and a user's
        // machine edits them with), at each FAT type.
        for (bits, kib) in [("12", "4096"), ("16", "20480"), ("32", "40960")] {
            let d = tempfile::tempdir().unwrap();
            let (img, node) = (d.path().join("fat.img"), d.path().join("node.toml"));
            let run = |cmd: &str, args: &[&std::ffi::OsStr]| {
                let out = std::process::Command::new(cmd).args(args).output().unwrap();
                assert!(out.status.success(), "{cmd}: {out:?}");
            };
            run(
                "mkfs.fat",
                &[
                    "-C".as_ref(),
                    "-F".as_ref(),
                    bits.as_ref(),
                    img.as_os_str(),
                    kib.as_ref(),
                ],
            );
            let text = text(5000);
            std::fs::write(&node, &text).unwrap();
            run(
                "mmd",
                &["-i".as_ref(), img.as_os_str(), "::edgeimg".as_ref()],
            );
            run(
                "mcopy",
                &[
                    "-i".as_ref(),
                    img.as_os_str(),
                    node.as_os_str(),
                    "::edgeimg/node.toml".as_ref(),
                ],
            );
            let v = std::fs::read(&img).unwrap();
            assert_eq!(read(&v, NODE).unwrap().unwrap(), text, "FAT{bits}");
        }
    }

    #[test]
    fn crafted_entries_and_chains_are_errors() {
        let v = volume(fatfs::FatType::Fat16, 8, &text(3000));
        let vol = Volume::read(&mut Cursor::new(&v), v.len() as u64).unwrap();
        let at = entry_at(&v, "NODE", "TOM");
        let set = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut w = v.clone();
            f(&mut w);
            w
        };
        // A first cluster below 2 (what underflowed in fatfs) or past the
        // volume's last.
        for c in [1u16, 0, u16::try_from(vol.max_cluster + 1).unwrap()] {
            let w = set(&|w| w[at + 26..at + 28].copy_from_slice(&c.to_le_bytes()));
            let e = read(&w, NODE).unwrap_err().to_string();
            assert!(e.contains(&format!("cluster {c}, outside")), "{e}");
        }
        // A size larger than the limit is refused before anything is read.
        let w = set(&|w| w[at + 28..at + 32].copy_from_slice(&(1u32 << 20).to_le_bytes()));
        let e = read(&w, NODE).unwrap_err().to_string();
        assert!(e.contains("larger than 64 KiB"), "{e}");
        // A size the chain does not cover.
        let w = set(&|w| w[at + 28..at + 32].copy_from_slice(&60_000u32.to_le_bytes()));
        let e = read(&w, NODE).unwrap_err().to_string();
        assert!(e.contains("ends after 6 of the 118 clusters"), "{e}");
        // A free cluster in the middle of the chain.
        let first = u64::from(u16::from_le_bytes([v[at + 26], v[at + 27]]));
        let fat_entry = usize::try_from(vol.fat_start + first * 2).unwrap();
        let w = set(&|w| w[fat_entry..fat_entry + 2].copy_from_slice(&[0, 0]));
        let e = read(&w, NODE).unwrap_err().to_string();
        assert!(e.contains("free, bad or outside the volume"), "{e}");
    }

    #[test]
    fn a_directory_chain_that_loops_ends() {
        // edgeimg/'s one cluster points at itself and holds no end marker
        // (every entry deleted): a reader that follows chains as long as they
        // go never returns. This one stops at FAT's 65,536 entries.
        let v = volume(fatfs::FatType::Fat16, 8, &text(10));
        let vol = Volume::read(&mut Cursor::new(&v), v.len() as u64).unwrap();
        let at = entry_at(&v, "EDGEIMG ", "   ");
        let dir = u16::from_le_bytes([v[at + 26], v[at + 27]]);
        let mut w = v.clone();
        let fat_entry = usize::try_from(vol.fat_start + u64::from(dir) * 2).unwrap();
        w[fat_entry..fat_entry + 2].copy_from_slice(&dir.to_le_bytes());
        let start = usize::try_from(vol.cluster_offset(u32::from(dir))).unwrap();
        for e in w[start..start + 512].chunks_exact_mut(ENTRY) {
            e[0] = 0xe5;
        }
        assert_eq!(read(&w, NODE).unwrap(), None);
        // A chain longer than the volume's cluster count is a loop.
        let e = vol
            .chain(&mut Cursor::new(&w), u32::from(dir), u64::MAX, "edgeimg/")
            .map(|c| c.len())
            .unwrap_err()
            .to_string();
        assert!(e.contains("loops"), "{e}");
    }

    #[test]
    fn boot_sectors_that_do_not_add_up_are_refused() {
        let v = volume(fatfs::FatType::Fat12, 1, &text(10));
        for (field, bytes, want) in [
            (11, vec![0, 0], "0 bytes per sector"),
            (13, vec![3], "3 sectors per cluster"),
            (16, vec![0], "0 FATs"),
            (17, vec![0, 0], "without root directory entries"),
            // 65,535 sectors of 512 bytes: more than the 1 MiB partition.
            (
                19,
                vec![0xff, 0xff],
                "do not fit the 1048576-byte partition",
            ),
            (22, vec![1, 0], "cannot map"),
        ] {
            let mut w = v.clone();
            w[field..field + bytes.len()].copy_from_slice(&bytes);
            let e = read(&w, NODE).unwrap_err().to_string();
            assert!(e.contains("not a usable FAT file system"), "{e}");
            assert!(e.contains(want), "field at {field}: {e}");
        }
        let e = read(&[0u8; 100], NODE).unwrap_err().to_string();
        assert!(e.contains("reading the FAT boot sector"), "{e}");
    }
}
