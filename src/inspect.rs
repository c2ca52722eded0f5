//! `edgeimg inspect`: what is in an image, read from the image itself
//! (partition table, filesystem superblocks, the boot partition's node file)
//! and from the `manifest.json` beside it (board, inputs, K3s, images, SELinux).
//!
//! Also the partition-table reader `edgeimg flash` uses to find the boot
//! partition on a flashed target.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cmd::{self, Cmd};
use crate::config::size::human;
use crate::ids::Uuid;
use crate::io_error::{IoError, io_err};
use crate::manifest::Manifest;
use crate::stream_capture;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Gpt,
    Mbr,
}

#[derive(Debug, Clone, Serialize)]
pub struct TablePartition {
    pub number: u32,
    /// Byte offset and size.
    pub offset: u64,
    pub size: u64,
    /// GPT type GUID, or the MBR type byte as `0x0c`.
    pub type_id: String,
    /// A name for the type, when known.
    pub type_name: Option<String>,
    /// GPT partition GUID, or for MBR `<disk id>-<nn>` (what Linux calls PARTUUID).
    pub part_uuid: String,
    /// GPT partition name (MBR has none).
    pub name: Option<String>,
    pub bootable: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub kind: TableKind,
    /// GPT disk GUID or MBR disk signature (8 hex digits).
    pub disk_id: String,
    pub sector_size: u64,
    pub partitions: Vec<TablePartition>,
}

impl Table {
    pub fn partition(&self, number: u32) -> Option<&TablePartition> {
        self.partitions.iter().find(|p| p.number == number)
    }
}

/// A GUID as GPT stores it, in the usual text form.
fn guid(b: &[u8; 16]) -> String {
    Uuid::from_gpt_bytes(*b).to_string()
}

fn gpt_type_name(g: &str) -> Option<&'static str> {
    use crate::disk::layout::*;
    Some(match g {
        TYPE_ESP => "EFI system",
        TYPE_ROOT_X86_64 => "Linux root (x86-64)",
        TYPE_ROOT_ARM64 => "Linux root (arm64)",
        TYPE_LINUX_DATA => "Linux data",
        _ => return None,
    })
}

fn mbr_type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        0x0b => "FAT32 (CHS)",
        0x0c => "FAT32 (LBA)",
        0x0e => "FAT16 (LBA)",
        0xef => "EFI system",
        0x83 => "Linux",
        0x82 => "Linux swap",
        0xee => "GPT protective",
        _ => return None,
    })
}

/// Reads the partition table of a disk image or device: GPT when there is
/// one (512- or 4096-byte sectors), else MBR.
pub fn read_table<R: Read + Seek>(f: &mut R, path: &Path) -> Result<Table, InspectError> {
    let invalid = |msg: String| InspectError::Invalid {
        path: path.into(),
        msg,
    };
    f.seek(SeekFrom::Start(0)).map_err(io_err("seek", path))?;
    if let Ok(gpt) = gptman::GPT::find_from(f) {
        let partitions = gpt
            .iter()
            .filter(|(_, p)| p.is_used())
            .map(|(n, p)| {
                let (offset, size) = gpt_span(p.starting_lba, p.ending_lba, gpt.sector_size)
                    .ok_or_else(|| {
                        invalid(format!(
                            "GPT partition {n}: sectors {}..={} of {} bytes are not a valid range",
                            p.starting_lba, p.ending_lba, gpt.sector_size
                        ))
                    })?;
                let t = guid(&p.partition_type_guid);
                Ok(TablePartition {
                    number: n,
                    offset,
                    size,
                    type_name: gpt_type_name(&t).map(String::from),
                    type_id: t,
                    part_uuid: guid(&p.unique_partition_guid),
                    name: Some(p.partition_name.as_str().to_string()).filter(|s| !s.is_empty()),
                    bootable: p.attribute_bits & 0b100 != 0,
                })
            })
            .collect::<Result<Vec<_>, InspectError>>()?;
        return Ok(Table {
            kind: TableKind::Gpt,
            disk_id: guid(&gpt.header.disk_guid),
            sector_size: gpt.sector_size,
            partitions,
        });
    }
    let mut sector = [0u8; 512];
    match f
        .seek(SeekFrom::Start(0))
        .and_then(|_| f.read_exact(&mut sector))
    {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(invalid(
                "no partition table: shorter than one 512-byte sector".into(),
            ));
        }
        r => r.map_err(io_err("read partition table of", path))?,
    }
    if sector[510..512] != [0x55, 0xaa] {
        return Err(invalid("no partition table (neither GPT nor MBR)".into()));
    }
    f.seek(SeekFrom::Start(0)).map_err(io_err("seek", path))?;
    let mbr =
        mbrman::MBR::read_from(f, 512).map_err(|e| invalid(format!("cannot read the MBR: {e}")))?;
    let disk_id = u32::from_le_bytes(mbr.header.disk_signature);
    let partitions = mbr
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(n, p)| TablePartition {
            number: n as u32,
            offset: p.starting_lba as u64 * 512,
            size: p.sectors as u64 * 512,
            type_id: format!("0x{:02x}", p.sys),
            type_name: mbr_type_name(p.sys).map(String::from),
            part_uuid: format!("{disk_id:08x}-{n:02}"),
            name: None,
            bootable: p.boot == mbrman::BOOT_ACTIVE,
        })
        .collect();
    Ok(Table {
        kind: TableKind::Mbr,
        disk_id: format!("{disk_id:08x}"),
        sector_size: 512,
        partitions,
    })
}

/// Byte offset and size of GPT sectors `start..=end`; `None` when the range
/// is empty or does not fit in 64 bits (a hostile table must not wrap).
fn gpt_span(start: u64, end: u64, sector_size: u64) -> Option<(u64, u64)> {
    let sectors = end.checked_add(1)?.checked_sub(start).filter(|&n| n > 0)?;
    let offset = start.checked_mul(sector_size)?;
    let size = sectors.checked_mul(sector_size)?;
    offset.checked_add(size)?;
    Some((offset, size))
}

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

#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    #[serde(flatten)]
    pub table: TablePartition,
    #[serde(flatten)]
    pub fs: FsInfo,
    /// Layout role recorded in the manifest (`boot`, `root-a`, ...).
    pub role: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeFile {
    pub present: bool,
    pub hostname: Option<String>,
    pub users: Vec<String>,
    /// K3s role and server from the file's `[k3s]` table.
    pub k3s_role: Option<String>,
    pub k3s_server: Option<String>,
    /// Whether a join token is set (the token itself is never shown).
    pub token_set: bool,
    /// Set when the file is there but does not parse.
    pub error: Option<String>,
}

impl NodeFile {
    fn absent(error: Option<String>) -> NodeFile {
        NodeFile {
            present: false,
            hostname: None,
            users: vec![],
            k3s_role: None,
            k3s_server: None,
            token_set: false,
            error,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub image: String,
    pub size: u64,
    /// Bytes allocated on disk (the sparse image).
    pub allocated: u64,
    pub manifest: Option<String>,
    pub name: Option<String>,
    pub board: Option<String>,
    pub arch: Option<String>,
    pub edgeimg_version: Option<String>,
    pub image_sha256: Option<String>,
    /// Whether the (decompressed) image still hashes to the manifest's
    /// SHA-256; false after e.g. `flash --to-file --node` added a node file.
    pub sha256_matches: Option<bool>,
    pub table_kind: TableKind,
    pub disk_id: String,
    pub partitions: Vec<PartitionReport>,
    pub kernel: Option<String>,
    pub kernel_cmdline: Option<String>,
    /// K3s bundle, version and nerdctl (marked STAND-IN for the test bundle);
    /// `None` when there is no manifest or it records no bundle.
    pub k3s: Option<String>,
    pub preloaded_images: Vec<String>,
    pub selinux: Option<String>,
    pub node_file: Option<NodeFile>,
    /// The manifest's `inputs` as they are.
    pub inputs: Option<crate::manifest::InputList>,
}

/// Image path with compression suffix removed (`x.img.zst` -> `x.img`).
pub fn uncompressed_name(image: &Path) -> PathBuf {
    match image.extension().and_then(|e| e.to_str()) {
        Some("zst" | "xz") => image.with_extension(""),
        _ => image.to_path_buf(),
    }
}

/// Reads `edgeimg/node.toml` from the FAT at `offset` of `disk` with mtools,
/// without mounting. `Ok(None)` when the file is absent.
pub fn read_node_file(disk: &Path, offset: u64) -> Result<Option<String>, crate::cmd::CmdError> {
    let spec = format!("{}@@{offset}", disk.display());
    match Cmd::new(cmd::MTYPE)
        .env("MTOOLS_SKIP_CHECK", "1")
        .args([
            "-i",
            &spec,
            &format!("::{}", edgeimg_contract::schema::NODE_CONFIG_RELPATH),
        ])
        .run()
    {
        Ok(o) => Ok(Some(String::from_utf8_lossy(&o.stdout).into_owned())),
        Err(crate::cmd::CmdError::Failed { stderr, .. }) if stderr.contains("not found") => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The image's bytes as inspect reads them: the file itself, or a
/// compressed image read through [`stream_capture`] (only the sectors the
/// table, the superblocks and the FAT need are kept; nothing is written).
enum Source {
    Plain(File),
    Compressed(stream_capture::Captured),
}

impl Source {
    /// Up to 4 KiB at `offset` (a filesystem's superblock area).
    fn head(&mut self, offset: u64, image: &Path) -> Result<Vec<u8>, InspectError> {
        let mut head = vec![0u8; 4096];
        let n = match self {
            Source::Plain(f) => f
                .read_at(&mut head, offset)
                .map_err(io_err("read partition of", image))?,
            Source::Compressed(c) => {
                c.seek(SeekFrom::Start(offset))
                    .map_err(io_err("read partition of", image))?;
                crate::read_full::read_full(c, &mut head).unwrap_or(0)
            }
        };
        head.truncate(n);
        Ok(head)
    }
}

/// What a node file's text (or the failure to read it) says.
fn node_file_of(read: Result<Option<String>, String>) -> NodeFile {
    match read {
        Ok(None) => NodeFile::absent(None),
        Ok(Some(text)) => match edgeimg_contract::schema::NodeConfig::from_toml(
            &text,
            Path::new(edgeimg_contract::schema::NODE_CONFIG_RELPATH),
        ) {
            Ok(n) => NodeFile {
                present: true,
                hostname: n.hostname,
                users: n.users.into_iter().map(|u| u.name).collect(),
                k3s_role: n
                    .k3s
                    .as_ref()
                    .and_then(|k| k.role)
                    .map(|r| r.as_str().to_string()),
                k3s_server: n.k3s.as_ref().and_then(|k| k.server.clone()),
                token_set: n.k3s.as_ref().is_some_and(|k| k.token.is_some()),
                error: None,
            },
            Err(e) => NodeFile {
                present: true,
                ..NodeFile::absent(Some(e.to_string()))
            },
        },
        Err(e) => NodeFile::absent(Some(e)),
    }
}

/// Inspects `image` (`.img`, `.img.zst`, `.img.xz`) or a block device (a
/// flashed card or disk), read-only.
pub fn inspect(image: &Path) -> anyhow::Result<Report> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(image).map_err(|cause| crate::exit::Unreadable {
        path: image.to_path_buf(),
        cause,
    })?;
    let device = meta.file_type().is_block_device();
    if !meta.is_file() && !device {
        anyhow::bail!(
            "{} is neither an image file nor a block device",
            image.display()
        );
    }
    let compressed = !device && uncompressed_name(image) != image;
    // A manifest lies beside an image file; a device has none.
    let manifest = if device {
        None
    } else {
        Manifest::beside(image)?
    };
    let m = manifest.as_ref().map(|(_, m)| m);
    let (mut src, table, size, stream_sha) = if compressed {
        let mut cap = stream_capture::Captured::default();
        let table = stream_capture::parse_with(image, &mut cap, |c| read_table(c, image))??;
        // One full pass: the size, the SHA-256 and every partition's first
        // 4 KiB, in a single decompression.
        let heads: Vec<(u64, u64)> = table
            .partitions
            .iter()
            .map(|p| (p.offset, p.offset.saturating_add(4096)))
            .collect();
        let mut h = Sha256::new();
        stream_capture::pass(image, &mut cap, &heads, Some(&mut |b: &[u8]| h.update(b)))?;
        let size = cap.len.unwrap_or(0);
        (
            Source::Compressed(cap),
            table,
            size,
            Some(hex::encode(h.finalize())),
        )
    } else {
        let mut f = File::open(image).map_err(io_err("open", image))?;
        let table = read_table(&mut f, image)?;
        // A device's metadata has no length: its end does.
        let size = if device {
            f.seek(std::io::SeekFrom::End(0))
                .map_err(io_err("read", image))?
        } else {
            meta.len()
        };
        (Source::Plain(f), table, size, None)
    };
    let mut partitions = Vec::new();
    let mut node_file = None;
    for p in &table.partitions {
        let fs = probe_fs(&src.head(p.offset, image)?);
        let role = m
            .and_then(|m| m.layout.partitions.iter().find(|x| x.number == p.number))
            .and_then(|x| serde_json::to_value(x.role).ok())
            .and_then(|v| v.as_str().map(String::from));
        if p.number == 1 && fs.fs == "vfat" {
            let read = match &mut src {
                // A device is read in process, through the descriptor
                // already open read-only.
                Source::Plain(f) if device => edgeimg_contract::bootfs::read_from_partition(
                    f,
                    p.offset,
                    p.size,
                    edgeimg_contract::schema::NODE_CONFIG_RELPATH,
                )
                .map_err(|e| e.to_string()),
                Source::Plain(_) => read_node_file(image, p.offset).map_err(|e| e.to_string()),
                Source::Compressed(cap) => {
                    let rel = edgeimg_contract::schema::NODE_CONFIG_RELPATH;
                    stream_capture::parse_with(image, cap, |c| {
                        edgeimg_contract::bootfs::read_from_partition(c, p.offset, p.size, rel)
                            .map_err(|e| e.to_string())
                    })
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
                }
            };
            node_file = Some(node_file_of(read));
        }
        partitions.push(PartitionReport {
            table: p.clone(),
            fs,
            role,
        });
    }
    let sha256_matches = match (m, &stream_sha) {
        (Some(m), Some(h)) => Some(*h == m.image.sha256),
        (Some(m), None) => Some(hash_matches(image, &m.image.sha256)?),
        (None, _) => None,
    };
    Ok(Report {
        image: image.display().to_string(),
        size,
        allocated: if device {
            size
        } else if compressed {
            meta.len()
        } else {
            meta.blocks() * 512
        },
        manifest: manifest.as_ref().map(|(p, _)| p.display().to_string()),
        name: m.map(|m| m.name.clone()),
        board: m.map(|m| m.board.clone()),
        arch: m.map(|m| m.arch.clone()),
        edgeimg_version: m.map(|m| m.edgeimg_version.clone()),
        image_sha256: m.map(|m| m.image.sha256.clone()),
        sha256_matches,
        table_kind: table.kind,
        disk_id: table.disk_id.clone(),
        partitions,
        kernel: m.map(|m| m.inputs.kernel.version.clone()),
        kernel_cmdline: m.map(|m| m.kernel_cmdline.clone()),
        k3s: m.and_then(|m| m.inputs.k3s.as_ref()).map(k3s_line),
        preloaded_images: m
            .and_then(|m| m.inputs.k3s.as_ref())
            .map(|k| {
                k.preloaded_images
                    .iter()
                    .flat_map(|p| {
                        p.images
                            .iter()
                            .map(move |i| format!("{i} (from {})", p.file))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        selinux: m
            .and_then(|m| m.inputs.selinux.as_ref())
            .map(|s| format!("policy {}, mode {}", s.policy, s.mode)),
        node_file,
        inputs: manifest.map(|(_, m)| m.inputs),
    })
}

/// Hashes `raw` (streaming, 1 MiB at a time) and compares with the manifest's
/// `want`; says on stderr that it hashes, as a large image takes a while.
fn hash_matches(raw: &Path, want: &str) -> anyhow::Result<bool> {
    eprintln!("hashing {} to compare with its manifest...", raw.display());
    Ok(crate::artifact::checksums::sha256_file(raw)? == want)
}

/// One readable line for the K3s bundle; the stand-in is named as such so it
/// is never mistaken for K3s.
fn k3s_line(k: &crate::manifest::K3sInput) -> String {
    let mut line = format!(
        "K3s {} (bundle {}), nerdctl {}",
        k.k3s_version, k.bundle, k.nerdctl_version
    );
    if k.stand_in {
        line.push_str(" -- STAND-IN: edgeimg's test bundle, NOT K3s");
    }
    line
}

/// `o`, or `none` when it is unset.
fn or(o: &Option<String>, none: &str) -> String {
    o.clone().unwrap_or_else(|| none.to_string())
}

impl Report {
    /// The file, and what its manifest says it is.
    fn fmt_identity(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "image       {} ({}, {} allocated)",
            self.image,
            human(self.size),
            human(self.allocated)
        )?;
        let Some(m) = &self.manifest else {
            return writeln!(
                f,
                "manifest    none beside the image (board, inputs and versions unknown)"
            );
        };
        writeln!(f, "manifest    {m}")?;
        writeln!(f, "name        {}", or(&self.name, "?"))?;
        writeln!(
            f,
            "board       {} ({})",
            or(&self.board, "?"),
            or(&self.arch, "?")
        )?;
        writeln!(f, "built by    edgeimg {}", or(&self.edgeimg_version, "?"))?;
        if let Some(s) = &self.image_sha256 {
            match self.sha256_matches {
                Some(false) => writeln!(
                    f,
                    "sha256      {s} in the manifest, but the image DIFFERS (changed since the build, e.g. a node file added)"
                )?,
                _ => writeln!(f, "sha256      {s} (the image matches)")?,
            }
        }
        Ok(())
    }

    /// The partition table as read from the image itself.
    fn fmt_partitions(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "table       {} (disk id {})",
            match self.table_kind {
                TableKind::Gpt => "GPT",
                TableKind::Mbr => "MBR (DOS)",
            },
            self.disk_id
        )?;
        writeln!(
            f,
            "  {:<2} {:>9} {:>9}  {:<20} {:<16} {:<6} {:<12} {:<7} details",
            "#", "offset", "size", "type", "name", "fs", "label", "role"
        )?;
        for p in &self.partitions {
            let mut details = Vec::new();
            if let Some(u) = &p.fs.uuid {
                details.push(format!("uuid {u}"));
            }
            if let Some(s) = p.fs.fs_size {
                details.push(format!("fs {}", human(s)));
            }
            if let Some(d) = &p.fs.detail {
                details.push(d.clone());
            }
            writeln!(
                f,
                "  {:<2} {:>9} {:>9}  {:<20} {:<16} {:<6} {:<12} {:<7} {}",
                p.table.number,
                human(p.table.offset),
                human(p.table.size),
                p.table
                    .type_name
                    .clone()
                    .unwrap_or_else(|| p.table.type_id.clone()),
                or(&p.table.name, "-"),
                p.fs.fs,
                or(&p.fs.label, "-"),
                or(&p.role, "-"),
                details.join(", ")
            )?;
        }
        Ok(())
    }

    /// Kernel, K3s, preloaded images and SELinux: "unknown" without a
    /// manifest, never "none" for what was not checked.
    fn fmt_contents(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let known = self.manifest.is_some();
        let unless = |yes: &'static str| if known { yes } else { "unknown (no manifest)" };
        writeln!(f, "kernel      {}", or(&self.kernel, "unknown"))?;
        if let Some(c) = &self.kernel_cmdline {
            writeln!(f, "cmdline     {c}")?;
        }
        writeln!(
            f,
            "k3s         {}",
            or(&self.k3s, unless("none (no K3s bundle in the manifest)"))
        )?;
        if !known || self.preloaded_images.is_empty() {
            writeln!(f, "images      {}", unless("none preloaded"))?;
        } else {
            writeln!(
                f,
                "images      {}",
                self.preloaded_images.join("\n            ")
            )?;
        }
        writeln!(
            f,
            "selinux     {}",
            or(&self.selinux, unless("not enabled (none in the manifest)"))
        )
    }

    /// The node file on the boot partition, its token only as "set".
    fn fmt_node_file(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rel = edgeimg_contract::schema::NODE_CONFIG_RELPATH;
        let n = match &self.node_file {
            None => return writeln!(f, "node file   no FAT boot partition"),
            Some(n) if !n.present => {
                return writeln!(f, "node file   none ({rel} absent on the boot partition)");
            }
            Some(n) => n,
        };
        if let Some(e) = &n.error {
            return writeln!(f, "node file   present but invalid: {e}");
        }
        writeln!(
            f,
            "node file   {rel}: hostname {}, users [{}]",
            or(&n.hostname, "(image pattern)"),
            n.users.join(", ")
        )?;
        if n.k3s_role.is_some() || n.k3s_server.is_some() || n.token_set {
            writeln!(
                f,
                "            k3s role {}, server {}, token {}",
                or(&n.k3s_role, "(image default)"),
                or(&n.k3s_server, "(none)"),
                if n.token_set {
                    "set (not shown)"
                } else {
                    "not set"
                }
            )?;
        }
        Ok(())
    }

    /// The manifest's inputs, one line each (K3s and SELinux have theirs above).
    fn fmt_inputs(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(i) = &self.inputs else {
            return Ok(());
        };
        writeln!(f, "inputs")?;
        writeln!(
            f,
            "  config    {} (sha256 {})",
            i.config.name, i.config.sha256
        )?;
        let b = &i.base;
        writeln!(
            f,
            "  base      Debian {} {} from {} (rootfs sha256 {})",
            b.suite, b.arch, b.mirror, b.tarball_sha256
        )?;
        writeln!(
            f,
            "  kernel    {} (vmlinuz sha256 {})",
            i.kernel.version, i.kernel.vmlinuz_sha256
        )?;
        writeln!(
            f,
            "  agent     {} {} (sha256 {})",
            i.agent.name, i.agent.version, i.agent.sha256
        )?;
        writeln!(
            f,
            "  packages  {} Debian packages (--json lists them)",
            i.packages.len()
        )?;
        for ov in &i.overlays {
            writeln!(f, "  overlay   {} ({} files)", ov.path, ov.files.len())?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fmt_identity(f)?;
        self.fmt_partitions(f)?;
        self.fmt_contents(f)?;
        self.fmt_node_file(f)?;
        self.fmt_inputs(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt_guids_are_mixed_endian() {
        let u = Uuid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b").unwrap();
        assert_eq!(
            guid(&u.to_gpt_bytes()),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
    }

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
