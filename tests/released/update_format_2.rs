// FROZEN: the agent released before the update repository and `update pull` (formats 1 and 2).
//
// The update file format exactly as that released agent reads it: copied
// from `contract/src/update/format.rs` at commit cbd4d0497e50, the test module left out
// and `crate::` paths pointed at the contract crate (the same error type
// and key ids). Never edit it to follow today's format: tests/bridge.rs
// proves that what today's builder writes still verifies here, which is
// how a device running that agent installs its first update in the new
// format.
#![allow(dead_code)]

//! The update file: one file, a signed header, then the payloads.
//!
//! ```text
//! offset 0   8 bytes   magic "EDGEUPD\0"
//!        8   u32 LE    format version (1 or 2, see below)
//!       12   u32 LE    header length H (at most 1 MiB)
//!       16   H bytes   header: JSON (see [`Header`])
//!     16+H   64 bytes  ed25519 signature over bytes [0, 16+H)
//!     80+H   payloads, back to back, in header order
//! ```
//!
//! The signature covers the header; the header carries every payload's size
//! and SHA-256; so a file that verifies is exactly what the key holder built.
//! [`verify_file`] checks everything (signature, board, architecture, length,
//! every hash, and that no header field can escape into a path or a line of a
//! boot file) before a caller writes anything.
//!
//! Format 2 adds the header's `generation` (the version floor, see
//! [`Header::generation`]). Agents before it read only format 1 and refuse
//! every field they do not know, so [`write`] writes format 1, without the
//! field, when the generation is 0: such a file still installs on those
//! devices. A file with a generation is format 2; an agent that only reads
//! format 1 refuses it ("update format version 2 is not supported") before
//! writing anything. This agent reads both; a format 1 file is generation 0.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use edgeimg_contract::error::{Context, Error, Result};
pub use edgeimg_contract::hex::{hex, unhex};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"EDGEUPD\0";
/// The newest format this agent reads and writes (see the module docs).
pub const FORMAT_VERSION: u32 = 2;
/// The format without `generation`, still written for generation 0.
pub const FORMAT_VERSION_NO_GENERATION: u32 = 1;
pub const MAX_HEADER: u32 = 1024 * 1024;
const SIG_LEN: u64 = 64;

/// Payload names.
pub const ROOT: &str = "root.erofs";
pub const VMLINUZ: &str = "vmlinuz";
pub const INITRD: &str = "initrd.img";
/// Raspberry Pi boot files are named `boot/<path on the boot partition>`.
pub const BOOT_PREFIX: &str = "boot/";

/// A Secure Boot image's update carries, instead of a kernel and an initrd,
/// one signed Unified Kernel Image per slot: each holds its slot's whole
/// command line (root or verity device, slot, data partition), fixed and
/// signed at build time, so the device picks the target slot's UKI and
/// edits nothing.
pub fn uki(slot: edgeimg_contract::partition::Slot) -> String {
    format!("uki-{slot}.efi")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Image name (`image.name`).
    pub name: String,
    pub board: String,
    /// Debian architecture (amd64, arm64).
    pub arch: String,
    /// Identifies this build: the first 16 hex digits of the root image's SHA-256.
    pub build_id: String,
    /// edgeimg version that built it.
    pub edgeimg_version: String,
    /// Kernel version of the payload kernel.
    pub kernel_version: String,
    /// The image's kernel command line; the device substitutes its own
    /// partitions (`root=`, `edgeimg.data=`, `edgeimg.slot=`).
    pub cmdline: String,
    /// Build time (SOURCE_DATE_EPOCH or the base's time), Unix seconds.
    pub created: u64,
    /// Which key signed it ([`edgeimg_contract::update::keys::key_id`]).
    pub key_id: String,
    /// The version floor: `[update] generation` of the image's config. A
    /// device refuses an update whose generation is below the one it runs
    /// unless told to allow the downgrade. 0 (and absent: format 1) is the
    /// lowest.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    pub payloads: Vec<Payload>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub name: String,
    /// Offset from the start of the payload area.
    pub offset: u64,
    pub size: u64,
    pub sha256: String,
}

impl Header {
    pub fn payload(&self, name: &str) -> Result<&Payload> {
        self.payloads
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::msg(format!("the update has no {name} payload")))
    }
}

/// What the verifier must find in the header; `None` accepts any value.
#[derive(Debug, Clone, Default)]
pub struct Expect<'a> {
    pub board: Option<&'a str>,
    pub arch: Option<&'a str>,
}

/// A verified update: its header and where the payload area starts.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Header,
    pub payload_start: u64,
}

impl Verified {
    /// Absolute offset of `p` in the file.
    pub fn offset(&self, p: &Payload) -> u64 {
        self.payload_start + p.offset
    }
}

/// SHA-256 of the next `len` bytes of `r`, hex; errors if `r` ends early.
pub fn sha256_of(
    r: &mut impl Read,
    len: u64,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut left = len;
    while left > 0 {
        let n = buf.len().min(left as usize);
        r.read_exact(&mut buf[..n])
            .map_err(|e| Error::msg(format!("{e}")))?;
        h.update(&buf[..n]);
        sink(&buf[..n])?;
        left -= n as u64;
    }
    Ok(hex(&h.finalize()))
}

/// The format a header is written in: 1 when it has no generation (every
/// agent reads it), else 2.
pub fn format_version(header: &Header) -> u32 {
    if header.generation == 0 {
        FORMAT_VERSION_NO_GENERATION
    } else {
        FORMAT_VERSION
    }
}

fn prefix(version: u32, header_len: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&header_len.to_le_bytes());
    v
}

/// Writes an update: `header` (its payload offsets, sizes and hashes are
/// filled in here) and the payload files, in order, signed with `key`.
pub fn write(
    out: &mut impl Write,
    mut header: Header,
    payloads: &[(String, &Path)],
    key: &SigningKey,
) -> Result<Header> {
    header.payloads.clear();
    header.key_id = edgeimg_contract::update::keys::key_id(&key.verifying_key());
    let mut offset = 0;
    for (name, path) in payloads {
        let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let size = f.metadata().context("stat")?.len();
        let sha256 = sha256_of(&mut f, size, |_| Ok(()))
            .with_context(|| format!("reading {}", path.display()))?;
        header.payloads.push(Payload {
            name: name.clone(),
            offset,
            size,
            sha256,
        });
        offset += size;
    }
    check_header(&header).context("refusing to sign the header")?;
    let json = serde_json::to_vec(&header).context("encoding the header")?;
    let mut signed = prefix(format_version(&header), json.len() as u32);
    signed.extend_from_slice(&json);
    let sig = key.sign(&signed);
    out.write_all(&signed).context("writing the header")?;
    out.write_all(&sig.to_bytes())
        .context("writing the signature")?;
    for (name, path) in payloads {
        let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        std::io::copy(&mut f, out).with_context(|| format!("writing payload {name}"))?;
    }
    Ok(header)
}

/// Reads and checks the signed header (magic, version, signature, board,
/// architecture, payload table) of the update in `f`, whose length is `len`.
pub fn verify_header(
    f: &mut (impl Read + Seek),
    len: u64,
    key: &VerifyingKey,
    expect: &Expect,
) -> Result<Verified> {
    let truncated = |what: &str| Error::msg(format!("truncated: the file ends inside the {what}"));
    f.seek(SeekFrom::Start(0)).context("seek")?;
    let mut pre = [0u8; 16];
    if len < 8 {
        return Err(truncated("magic"));
    }
    f.read_exact(&mut pre[..len.min(16) as usize])
        .context("reading")?;
    if &pre[..8] != MAGIC {
        edgeimg_contract::bail!("not an edgeimg update file (bad magic)");
    }
    if len < 16 {
        return Err(truncated("header"));
    }
    let version = u32::from_le_bytes(pre[8..12].try_into().unwrap());
    if version != FORMAT_VERSION && version != FORMAT_VERSION_NO_GENERATION {
        edgeimg_contract::bail!(
            "update format version {version} is not supported (this agent reads versions {FORMAT_VERSION_NO_GENERATION} and {FORMAT_VERSION})"
        );
    }
    let hlen = u32::from_le_bytes(pre[12..16].try_into().unwrap());
    if hlen > MAX_HEADER {
        edgeimg_contract::bail!("header length {hlen} exceeds {MAX_HEADER} bytes: corrupt file");
    }
    if len < 16 + hlen as u64 + SIG_LEN {
        return Err(truncated("header or signature"));
    }
    let mut json = vec![0u8; hlen as usize];
    f.read_exact(&mut json).context("reading the header")?;
    let mut sig = [0u8; 64];
    f.read_exact(&mut sig).context("reading the signature")?;
    let mut signed = pre.to_vec();
    signed.extend_from_slice(&json);
    let sig = Signature::from_bytes(&sig);
    if key.verify_strict(&signed, &sig).is_err() {
        // Name the signer when the header is intact enough to say who it was.
        let signer = serde_json::from_slice::<Header>(&json)
            .ok()
            .map(|h| h.key_id)
            .filter(|id| *id != edgeimg_contract::update::keys::key_id(key));
        match signer {
            Some(id) => edgeimg_contract::bail!(
                "bad signature: signed with key {id}, not with the trusted key {}",
                edgeimg_contract::update::keys::key_id(key)
            ),
            None => edgeimg_contract::bail!(
                "bad signature: the header was modified or not signed with the trusted key {}",
                edgeimg_contract::update::keys::key_id(key)
            ),
        }
    }
    let header: Header = serde_json::from_slice(&json).context("signed header is not valid")?;
    if version == FORMAT_VERSION_NO_GENERATION && header.generation != 0 {
        edgeimg_contract::bail!(
            "signed header is not valid: format version 1 carries no generation, this one says {}",
            header.generation
        );
    }
    check_header(&header).context("signed header is not valid")?;
    if let Some(b) = expect.board
        && header.board != b
    {
        edgeimg_contract::bail!("the update is for board {}, this is a {b}", header.board);
    }
    if let Some(a) = expect.arch
        && header.arch != a
    {
        edgeimg_contract::bail!(
            "the update is for architecture {}, this is {a}",
            header.arch
        );
    }
    let mut end = 0u64;
    for p in &header.payloads {
        if p.offset != end {
            edgeimg_contract::bail!("payload {} is not where the table says", p.name);
        }
        end = end
            .checked_add(p.size)
            .ok_or_else(|| Error::msg("payload sizes overflow"))?;
    }
    header.payload(ROOT)?;
    let payload_start = 16 + hlen as u64 + SIG_LEN;
    let want = payload_start + end;
    if len < want {
        edgeimg_contract::bail!("truncated: {len} bytes, the header describes {want}");
    }
    if len > want {
        edgeimg_contract::bail!("{} unexpected bytes after the last payload", len - want);
    }
    Ok(Verified {
        header,
        payload_start,
    })
}

/// A header field that ends up in a file (a boot entry line, cmdline.txt, a
/// log line) must be one line of printable text.
fn check_text(what: &str, s: &str) -> Result<()> {
    if let Some(c) = s
        .chars()
        .find(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        edgeimg_contract::bail!("{what} contains the control character {c:?}");
    }
    Ok(())
}

/// A payload name: `root.erofs`-like (no `/`), or `boot/<relative path>`
/// whose every component is a plain name (no `..`, `.`, empty, `\\`).
pub fn check_payload_name(name: &str) -> Result<()> {
    check_text("payload name", name)?;
    let bad = |why: &str| Err(Error::msg(format!("payload name {name:?} {why}")));
    let plain = |c: &str| !c.is_empty() && c != "." && c != ".." && !c.contains('\\');
    match name.strip_prefix(BOOT_PREFIX) {
        Some(rel) => {
            if !rel.split('/').all(plain) {
                return bad("is not a plain relative path under boot/");
            }
        }
        None => {
            if name.contains('/') || !plain(name) {
                return bad("is path-like (only boot/ names may contain '/')");
            }
        }
    }
    Ok(())
}

/// Everything in the header a device would write somewhere is checked: no
/// field carries a control character or line break, payload names are unique
/// and cannot name a path outside where they go, hashes are SHA-256 hex.
pub fn check_header(h: &Header) -> Result<()> {
    for (what, v) in [
        ("name", &h.name),
        ("board", &h.board),
        ("arch", &h.arch),
        ("build_id", &h.build_id),
        ("edgeimg_version", &h.edgeimg_version),
        ("kernel_version", &h.kernel_version),
        ("cmdline", &h.cmdline),
        ("key_id", &h.key_id),
    ] {
        check_text(what, v)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &h.payloads {
        check_payload_name(&p.name)?;
        if !seen.insert(p.name.as_str()) {
            edgeimg_contract::bail!("payload {:?} appears twice", p.name);
        }
        if p.sha256.len() != 64 || unhex(&p.sha256).is_none() {
            edgeimg_contract::bail!("payload {:?} has no SHA-256 (64 hex digits)", p.name);
        }
    }
    Ok(())
}

/// Full verification of an update file: [`verify_header`], then every
/// payload's SHA-256. Reads the whole file; writes nothing.
pub fn verify_file(path: &Path, key: &VerifyingKey, expect: &Expect) -> Result<Verified> {
    let ctx = || path.display().to_string();
    let mut f = File::open(path).with_context(ctx)?;
    let len = f.metadata().with_context(ctx)?.len();
    let v = verify_header(&mut f, len, key, expect).with_context(ctx)?;
    verify_payloads(&mut f, &v).with_context(ctx)?;
    Ok(v)
}

/// Hashes every payload and compares it with the signed header.
pub fn verify_payloads(f: &mut (impl Read + Seek), v: &Verified) -> Result<()> {
    f.seek(SeekFrom::Start(v.payload_start)).context("seek")?;
    for p in &v.header.payloads {
        let got = sha256_of(f, p.size, |_| Ok(()))
            .with_context(|| format!("reading payload {}", p.name))?;
        if got != p.sha256 {
            edgeimg_contract::bail!(
                "payload {} is corrupt or tampered with: SHA-256 {got}, the signed header says {}",
                p.name,
                p.sha256
            );
        }
    }
    Ok(())
}
