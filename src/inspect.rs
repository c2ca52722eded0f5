//! `edgeimg inspect`: what is in an image, read from the image itself
//! (partition table, filesystem superblocks, the boot partition's node file)
//! and from the `manifest.json` beside it (board, inputs, K3s, images, SELinux).
//! The reading itself is [`crate::image_read`]'s; this module makes the
//! report and prints it.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use serde::Serialize;

use crate::config::size::human;
use crate::image_read::{
    FsInfo, ReadError, TableKind, TablePartition, probe_fs, read_node_file, read_table,
    stream_capture, uncompressed_name,
};
use crate::io_error::io_err;
use crate::manifest::Manifest;

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
    /// How the boot chain is signed, from the manifest; `None` for a
    /// manifest from before it recorded this.
    pub secure_boot: Option<String>,
    /// Whether the data partition is encrypted, from the manifest.
    pub data_encryption: Option<String>,
    pub node_file: Option<NodeFile>,
    /// The manifest's `inputs` as they are.
    pub inputs: Option<crate::manifest::InputList>,
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
    fn head(&mut self, offset: u64, image: &Path) -> Result<Vec<u8>, ReadError> {
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
        let boot = edgeimg_contract::partition::spec(edgeimg_contract::partition::Role::Boot);
        if p.number == boot.number && fs.fs == "vfat" {
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
        secure_boot: m.and_then(|m| m.secure_boot.as_ref()).map(secure_boot_line),
        data_encryption: m
            .and_then(|m| m.data_encryption.as_ref())
            .map(data_encryption_line),
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

/// One line for the boot chain's signature.
fn secure_boot_line(s: &crate::manifest::SecureBootInfo) -> String {
    if !s.signed {
        return "not signed (systemd-boot, kernel and initrd as built; no Secure Boot)".into();
    }
    format!(
        "signed: systemd-boot and a UKI per slot, db certificate sha256 {}, enroll {}",
        s.db_cert_sha256.as_deref().unwrap_or("unknown"),
        s.enroll.as_deref().unwrap_or("unknown")
    )
}

/// One line for the data partition's encryption.
fn data_encryption_line(d: &crate::manifest::DataEncryptionInfo) -> String {
    match d.encryption.as_str() {
        "none" => "none (plain ext4)".into(),
        other => format!(
            "{other}: LUKS2 made on the device's first boot, sealed to its TPM2 (PCR 7); without a TPM2: {}; recovery public key sha256 {}",
            d.no_tpm.as_deref().unwrap_or("unknown"),
            d.recovery_public_key_sha256.as_deref().unwrap_or("unknown")
        ),
    }
}

/// One readable line for the K3s bundle; the stand-in is named as such so it
/// is never mistaken for K3s.
fn k3s_line(k: &crate::manifest::K3sInput) -> String {
    let mut line = format!(
        "K3s {} (bundle {}), role {}, nerdctl {}, BuildKit {}",
        k.k3s_version,
        k.bundle,
        k.role.as_deref().unwrap_or("unknown"),
        k.nerdctl_version,
        match k.buildkit {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        }
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
        )?;
        writeln!(
            f,
            "secure boot {}",
            or(&self.secure_boot, "unknown (not in the manifest)")
        )?;
        writeln!(
            f,
            "data enc    {}",
            or(&self.data_encryption, "unknown (not in the manifest)")
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
