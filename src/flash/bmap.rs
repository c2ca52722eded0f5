//! bmap reader: the ranges (and their SHA-256) `edgeimg flash` writes and
//! verifies. Reads the format bmap-tools writes (version 2.x, sha256 checksums;
//! 1.x files without checksums are accepted and verified against what was
//! written). The file's own checksum (`BmapFileChecksum`) is checked, so a
//! damaged or hand-edited bmap is refused rather than trusted.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
#[error("bmap {}: {msg}", path.display())]
pub struct BmapError {
    pub path: PathBuf,
    pub msg: String,
}

/// One mapped range, blocks `first..=last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmapRange {
    pub first: u64,
    pub last: u64,
    /// Lowercase hex SHA-256 of the range's bytes (clipped at the image end).
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    pub blocks_count: u64,
    pub mapped_blocks: u64,
    pub ranges: Vec<BmapRange>,
}

impl Bmap {
    /// Byte ranges `[start, end)` of the mapped blocks, clipped at the image end.
    pub fn byte_ranges(&self) -> Vec<(u64, u64)> {
        self.ranges
            .iter()
            .map(|r| {
                (
                    r.first * self.block_size,
                    ((r.last + 1) * self.block_size).min(self.image_size),
                )
            })
            .collect()
    }

    /// Bytes that will be written (mapped ranges clipped at the image end).
    pub fn mapped_bytes(&self) -> u64 {
        self.byte_ranges().iter().map(|(s, e)| e - s).sum()
    }

    pub fn read(path: &Path) -> Result<Bmap, BmapError> {
        let text = std::fs::read_to_string(path).map_err(|e| BmapError {
            path: path.into(),
            msg: format!("cannot read: {e}"),
        })?;
        parse(&text, path)
    }
}

/// The text without `<!-- ... -->` comments (bmap-tools' comments mention
/// element names).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        match rest[i..].find("-->") {
            Some(j) => rest = &rest[i + j + 3..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

fn tag<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let s = text.find(&open)? + open.len();
    let e = s + text[s..].find(&close)?;
    Some(text[s..e].trim())
}

fn attr<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let s = attrs.find(&key)? + key.len();
    let e = s + attrs[s..].find('"')?;
    Some(&attrs[s..e])
}

/// Parses a bmap; errors name `path` and what is wrong.
pub fn parse(original: &str, path: &Path) -> Result<Bmap, BmapError> {
    let stripped = strip_comments(original);
    let text = stripped.as_str();
    let err = |msg: String| BmapError {
        path: path.into(),
        msg,
    };
    let num = |name: &str| -> Result<u64, BmapError> {
        let v = tag(text, name).ok_or_else(|| err(format!("no <{name}> element")))?;
        v.parse::<u64>()
            .map_err(|_| err(format!("<{name}> is {v:?}, not a number")))
    };
    let root = text
        .find("<bmap")
        .ok_or_else(|| err("not a bmap file (no <bmap> element)".into()))?;
    let root_end = root
        + text[root..]
            .find('>')
            .ok_or_else(|| err("unterminated <bmap> element".into()))?;
    let version = attr(&text[root..root_end], "version")
        .ok_or_else(|| err("<bmap> has no version".into()))?;
    let major = version.split('.').next().unwrap_or("");
    if major != "1" && major != "2" {
        return Err(err(format!(
            "format version {version} is not supported (1.x and 2.x are)"
        )));
    }
    let image_size = num("ImageSize")?;
    let block_size = num("BlockSize")?;
    let blocks_count = num("BlocksCount")?;
    let mapped_blocks = num("MappedBlocksCount")?;
    if block_size == 0 || image_size == 0 {
        return Err(err("ImageSize and BlockSize must be positive".into()));
    }
    if blocks_count != image_size.div_ceil(block_size) {
        return Err(err(format!(
            "BlocksCount {blocks_count} does not match ImageSize {image_size} / BlockSize {block_size}"
        )));
    }
    let checksum_type = tag(text, "ChecksumType").unwrap_or(if major == "1" { "sha1" } else { "" });
    let has_sums = match (major, checksum_type) {
        ("1", _) => false, // 1.x: SHA-1 (ignored; the written data is verified against the image instead)
        (_, "sha256") => true,
        (_, other) => {
            return Err(err(format!(
                "checksum type {other:?} is not supported (sha256 is)"
            )));
        }
    };
    if has_sums {
        let want = tag(text, "BmapFileChecksum")
            .ok_or_else(|| err("no <BmapFileChecksum> element".into()))?;
        let pos = original
            .find("<BmapFileChecksum>")
            .ok_or_else(|| err("no <BmapFileChecksum> element".into()))?;
        // The value as written after that tag; not there (the element
        // parsed from another spot than the file's text shows) is an error,
        // never an index past the end.
        let vstart = original[pos..]
            .find(want)
            .map(|i| pos + i)
            .ok_or_else(|| err("<BmapFileChecksum> value not found where the element is".into()))?;
        let mut zeroed = original.as_bytes().to_vec();
        zeroed[vstart..vstart + want.len()].fill(b'0');
        let got = hex::encode(Sha256::digest(&zeroed));
        if !got.eq_ignore_ascii_case(want) {
            return Err(err(format!(
                "file checksum mismatch: BmapFileChecksum says {want}, the file hashes to {got} (damaged or edited bmap)"
            )));
        }
    }

    let map = {
        let s = text
            .find("<BlockMap>")
            .ok_or_else(|| err("no <BlockMap> element".into()))?;
        let body = &text[s + "<BlockMap>".len()..];
        // Only an end tag after the start counts (an earlier one is no end).
        let e = body
            .find("</BlockMap>")
            .ok_or_else(|| err("unterminated <BlockMap>".into()))?;
        &body[..e]
    };
    let mut ranges = Vec::new();
    let mut rest = map;
    while let Some(i) = rest.find("<Range") {
        rest = &rest[i + "<Range".len()..];
        let gt = rest
            .find('>')
            .ok_or_else(|| err("unterminated <Range>".into()))?;
        let attrs = &rest[..gt];
        // The end tag must follow the start tag's `>`.
        let close = gt
            + 1
            + rest[gt + 1..]
                .find("</Range>")
                .ok_or_else(|| err("unterminated <Range>".into()))?;
        let body = rest[gt + 1..close].trim();
        rest = &rest[close + "</Range>".len()..];
        let bad = || err(format!("range {body:?} is not N or N-M"));
        let (first, last) = match body.split_once('-') {
            Some((a, b)) => (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            ),
            None => {
                let n: u64 = body.parse().map_err(|_| bad())?;
                (n, n)
            }
        };
        if last < first || last >= blocks_count {
            return Err(err(format!(
                "range {first}-{last} is outside the image's {blocks_count} blocks"
            )));
        }
        if let Some(prev) = ranges.last().map(|r: &BmapRange| r.last)
            && first <= prev
        {
            return Err(err(format!(
                "range {first}-{last} overlaps or precedes the one before it"
            )));
        }
        let sha256 = if has_sums {
            let s =
                attr(attrs, "chksum").ok_or_else(|| err(format!("range {body} has no chksum")))?;
            if s.len() != 64 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err(format!("range {body}: chksum {s:?} is not a SHA-256")));
            }
            Some(s.to_ascii_lowercase())
        } else {
            None
        };
        ranges.push(BmapRange {
            first,
            last,
            sha256,
        });
    }
    let counted: u64 = ranges.iter().map(|r| r.last - r.first + 1).sum();
    if counted != mapped_blocks {
        return Err(err(format!(
            "MappedBlocksCount is {mapped_blocks} but the ranges cover {counted} blocks"
        )));
    }
    Ok(Bmap {
        image_size,
        block_size,
        blocks_count,
        mapped_blocks,
        ranges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> (tempfile::TempDir, String) {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("a.img");
        let mut f = std::fs::File::create(&img).unwrap();
        f.set_len(10 * 4096 + 100).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[1u8; 5000], 0).unwrap();
        f.write_all_at(&[2u8; 10], 8 * 4096).unwrap();
        f.write_all_at(&[3u8; 50], 10 * 4096 + 10).unwrap();
        f.flush().unwrap();
        let mut out = Vec::new();
        crate::artifact::write_bmap(&img, &mut out).unwrap();
        (d, String::from_utf8(out).unwrap())
    }

    #[test]
    fn reads_what_the_writer_writes() {
        let (_d, text) = sample();
        let b = parse(&text, Path::new("x.bmap")).unwrap();
        assert_eq!(b.image_size, 10 * 4096 + 100);
        assert_eq!(b.block_size, 4096);
        assert_eq!(b.blocks_count, 11);
        assert_eq!(
            b.ranges
                .iter()
                .map(|r| (r.first, r.last))
                .collect::<Vec<_>>(),
            vec![(0, 1), (8, 8), (10, 10)]
        );
        assert_eq!(b.byte_ranges().last(), Some(&(40960, 41060)));
        assert_eq!(b.mapped_bytes(), 2 * 4096 + 4096 + 100);
        assert!(
            b.ranges
                .iter()
                .all(|r| r.sha256.as_ref().is_some_and(|s| s.len() == 64))
        );
    }

    #[test]
    fn refuses_edited_or_broken_bmaps() {
        let (_d, text) = sample();
        let edited = text.replacen("> 8 </Range>", "> 9 </Range>", 1);
        assert_ne!(edited, text);
        let e = parse(&edited, Path::new("x.bmap")).unwrap_err().to_string();
        assert!(
            e.contains("x.bmap") && e.contains("file checksum mismatch"),
            "{e}"
        );
        let e = parse("<foo/>", Path::new("y.bmap"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("y.bmap") && e.contains("not a bmap"), "{e}");
        let v3 = text.replace("version=\"2.0\"", "version=\"3.0\"");
        assert!(
            parse(&v3, Path::new("z"))
                .unwrap_err()
                .to_string()
                .contains("3.0")
        );
    }

    /// Found by the bmap fuzz target: an end tag before the start tag made
    /// the slice bounds cross (a panic); now it is an error naming the file.
    #[test]
    fn block_map_end_tag_before_start_is_an_error() {
        let text = "<bmap version=\"1.4\"><ImageSize>8192</ImageSize><BlockSize>4096</BlockSize>\
                    <BlocksCount>2</BlocksCount><MappedBlocksCount>1</MappedBlocksCount>\
                    </BlockMap><BlockMap><Range>0</Range></bmap>";
        let e = parse(text, Path::new("x.bmap")).unwrap_err().to_string();
        assert!(
            e.contains("x.bmap") && e.contains("unterminated <BlockMap>"),
            "{e}"
        );
    }

    /// Found by the bmap fuzz target: a `</Range>` before the range's `>`.
    #[test]
    fn range_end_tag_before_its_start_is_an_error() {
        let text = "<bmap version=\"1.4\"><ImageSize>8192</ImageSize><BlockSize>4096</BlockSize>\
                    <BlocksCount>2</BlocksCount><MappedBlocksCount>1</MappedBlocksCount>\
                    <BlockMap><Range</Range>>0</BlockMap></bmap>";
        let e = parse(text, Path::new("x.bmap")).unwrap_err().to_string();
        assert!(e.contains("x.bmap") && e.contains("<Range>"), "{e}");
    }
}
