//! bmap writer: the block map `bmaptool copy` uses to flash only the mapped
//! blocks of an image and verify each range's SHA-256.
//!
//! Output is format version 2.0 and reproduces bmap-tools' `BmapCreate` output
//! byte for byte (same comments, padding and number formatting), so a bmap from
//! edgeimg and one from `bmaptool create` on the same image are interchangeable
//! and diffable. Differences from bmaptool: the block size is always 4096
//! (bmaptool uses the host filesystem's block size), and nothing in it depends
//! on time or host, so the same image gives the same bmap.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{ArtifactError, Result, io_err};
use crate::sparse;

pub const BMAP_BLOCK_SIZE: u64 = 4096;
const BMAP_VERSION: &str = "2.0";
/// Length of a hex SHA-256: the all-'0' placeholder the file checksum is
/// computed over has exactly this length.
const CHKSUM_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmapSummary {
    pub image_size: u64,
    /// Mapped blocks × block size, as bmaptool counts it (the partial last
    /// block counts whole).
    pub mapped_bytes: u64,
    /// Mapped block ranges, `(first, last)` inclusive, in 4096-byte blocks.
    pub ranges: Vec<(u64, u64)>,
}

/// Same as bmaptools.BmapHelpers.human_size, including its repeated division
/// and `%.1f` rounding, because the result is embedded in the bmap comments.
fn human_size(size: u64) -> String {
    if size == 1 {
        return "1 byte".into();
    }
    if size < 512 {
        return format!("{size} bytes");
    }
    let mut s = size as f64;
    for m in ["KiB", "MiB", "GiB", "TiB"] {
        s /= 1024.0;
        if s < 1024.0 {
            return format!("{s:.1} {m}");
        }
    }
    format!("{s:.1} EiB")
}

/// Block ranges (inclusive) covering the data extents: a block is mapped if
/// any byte of it is data; overlapping/adjacent ranges are merged.
fn block_ranges(extents: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(off, len) in extents {
        if len == 0 {
            continue;
        }
        let first = off / BMAP_BLOCK_SIZE;
        let last = (off + len).div_ceil(BMAP_BLOCK_SIZE) - 1;
        match out.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// SHA-256 of blocks `first..=last`, clipped at EOF like bmaptool (which
/// hashes what `read()` returns: a partial last block is hashed partially).
fn range_sha256(f: &File, path: &Path, first: u64, last: u64, image_size: u64) -> Result<String> {
    let start = first * BMAP_BLOCK_SIZE;
    let end = ((last + 1) * BMAP_BLOCK_SIZE).min(image_size);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut pos = start;
    while pos < end {
        let n = ((end - pos) as usize).min(buf.len());
        f.read_exact_at(&mut buf[..n], pos)
            .map_err(io_err("read image for bmap checksum", path))?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hex::encode(h.finalize()))
}

/// Replaces `text[pos..pos+s.len()]` with `s` — bmaptool writes the header with
/// blank placeholders and later overwrites them in place (seek + write), so
/// padding depends on the placeholder widths; emulate exactly that.
fn overwrite(text: &mut Vec<u8>, pos: usize, s: &str) {
    let end = pos + s.len();
    if end > text.len() {
        text.resize(end, b' ');
    }
    text[pos..end].copy_from_slice(s.as_bytes());
}

/// Writes the bmap (format 2.0, SHA-256) of `image` to `out`.
pub fn write_bmap(image: &Path, out: &mut impl Write) -> Result<BmapSummary> {
    let f = File::open(image).map_err(io_err("open image for bmap", image))?;
    let image_size = f
        .metadata()
        .map_err(io_err("stat image for bmap", image))?
        .len();
    if image_size == 0 {
        // bmaptool refuses these too: a zero-block bmap is meaningless.
        return Err(ArtifactError::Invalid {
            op: "write bmap for",
            path: image.to_path_buf(),
            msg: "image is empty".into(),
        });
    }
    let extents = sparse::data_extents(&f).map_err(io_err("find data extents of", image))?;
    let ranges = block_ranges(&extents);
    let blocks_cnt = image_size.div_ceil(BMAP_BLOCK_SIZE);
    let mapped_cnt: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();

    let (mut t, blanks) = head(image_size, blocks_cnt);
    t.push_str(&block_map(&f, image, &ranges, image_size)?);
    t.push_str("    </BlockMap>\n");
    t.push_str("</bmap>\n");

    let mapped_size = mapped_cnt * BMAP_BLOCK_SIZE;
    let mapped_percent = (mapped_cnt as f64 * 100.0) / blocks_cnt as f64;
    let mut bytes = t.into_bytes();
    overwrite(
        &mut bytes,
        blanks.mapped_size,
        &format!("{} or {:.1}%", human_size(mapped_size), mapped_percent),
    );
    overwrite(&mut bytes, blanks.mapped_count, &mapped_cnt.to_string());
    // The file checksum is taken with the checksum field all '0's (it is
    // already), then written in place: that is what BmapCopy verifies.
    let file_sum = hex::encode(Sha256::digest(&bytes));
    overwrite(&mut bytes, blanks.checksum, &file_sum);

    out.write_all(&bytes)
        .map_err(io_err("write bmap for", image))?;
    Ok(BmapSummary {
        image_size,
        mapped_bytes: mapped_size,
        ranges,
    })
}

/// Where [`head`] left blanks (spaces or zeros of the final width) for what
/// is known only after the block map is made: bmaptool's file layout, in
/// which the checksum covers the file with its own field zeroed.
struct Blanks {
    mapped_size: usize,
    mapped_count: usize,
    checksum: usize,
}

/// The bmap file up to and including `<BlockMap>`, in bmaptool's words and
/// spacing.
fn head(image_size: u64, blocks_cnt: u64) -> (String, Blanks) {
    let image_size_human = human_size(image_size);
    let mut t = String::new();
    t.push_str(&format!(
        r#"<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     The block map an optimization which allows to copy or flash the image to
     the image quicker than copying of flashing the entire image. This is
     because with bmap less data is copied: <MappedBlocksCount> blocks instead
     of <BlocksCount> blocks.

     Besides the machine-readable data, this file contains useful commentaries
     which contain human-readable information like image size, percentage of
     mapped data, etc.

     The 'version' attribute is the block map file format version in the
     'major.minor' format. The version major number is increased whenever an
     incompatible block map format change is made. The minor number changes
     in case of minor backward-compatible changes. -->

<bmap version="{BMAP_VERSION}">
    <!-- Image size in bytes: {image_size_human} -->
    <ImageSize> {image_size} </ImageSize>

    <!-- Size of a block in bytes -->
    <BlockSize> {BMAP_BLOCK_SIZE} </BlockSize>

    <!-- Count of blocks in the image file -->
    <BlocksCount> {blocks_cnt} </BlocksCount>

"#
    ));
    t.push_str("    <!-- Count of mapped blocks: ");
    let mapped_size = t.len();
    t.push_str(&format!(
        "{} or {}   -->\n",
        " ".repeat(image_size_human.len()),
        " ".repeat("100.0%".len())
    ));
    t.push_str("    <MappedBlocksCount> ");
    let mapped_count = t.len();
    t.push_str(&format!(
        "{} </MappedBlocksCount>\n\n",
        " ".repeat(blocks_cnt.to_string().len())
    ));
    t.push_str("    <!-- Type of checksum used in this file -->\n");
    t.push_str("    <ChecksumType> sha256 </ChecksumType>\n\n");
    t.push_str("    <!-- The checksum of this bmap file. When it is calculated, the value of\n");
    t.push_str("         the checksum has be zero (all ASCII \"0\" symbols).  -->\n");
    t.push_str("    <BmapFileChecksum> ");
    let checksum = t.len();
    t.push_str(&"0".repeat(CHKSUM_LEN));
    t.push_str(" </BmapFileChecksum>\n\n");
    t.push_str("    <!-- The block map which consists of elements which may either be a\n");
    t.push_str("         range of blocks or a single block. The 'chksum' attribute\n");
    t.push_str("         (if present) is the checksum of this blocks range. -->\n");
    t.push_str("    <BlockMap>\n");

    (
        t,
        Blanks {
            mapped_size,
            mapped_count,
            checksum,
        },
    )
}

/// One `<Range>` line per mapped range, with the SHA-256 of its blocks.
fn block_map(f: &File, image: &Path, ranges: &[(u64, u64)], image_size: u64) -> Result<String> {
    let mut t = String::new();
    for &(first, last) in ranges {
        let sum = range_sha256(f, image, first, last, image_size)?;
        if first != last {
            t.push_str(&format!(
                "        <Range chksum=\"{sum}\"> {first}-{last} </Range>\n"
            ));
        } else {
            t.push_str(&format!(
                "        <Range chksum=\"{sum}\"> {first} </Range>\n"
            ));
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_size_matches_bmaptools() {
        assert_eq!(human_size(1), "1 byte");
        assert_eq!(human_size(511), "511 bytes");
        assert_eq!(human_size(512), "0.5 KiB");
        assert_eq!(human_size(64 << 20), "64.0 MiB");
        assert_eq!(human_size(4096 * 5), "20.0 KiB");
    }

    #[test]
    fn ranges_are_block_granular_and_merged() {
        assert_eq!(block_ranges(&[(0, 1)]), vec![(0, 0)]);
        assert_eq!(block_ranges(&[(4095, 2)]), vec![(0, 1)]);
        assert_eq!(block_ranges(&[(0, 4096), (4096, 4096)]), vec![(0, 1)]);
        assert_eq!(block_ranges(&[(0, 4096), (8192, 10)]), vec![(0, 0), (2, 2)]);
        assert_eq!(block_ranges(&[(0, 100), (200, 100)]), vec![(0, 0)]);
    }
}
