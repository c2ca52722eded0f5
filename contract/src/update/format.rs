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

use crate::error::{Context, Error, Result};
pub use crate::hex::{hex, unhex};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
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
pub fn uki(slot: crate::partition::Slot) -> String {
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
    /// Which key signed it ([`crate::update::keys::key_id`]).
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
    header.key_id = crate::update::keys::key_id(&key.verifying_key());
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
        crate::bail!("not an edgeimg update file (bad magic)");
    }
    if len < 16 {
        return Err(truncated("header"));
    }
    let version = u32::from_le_bytes(pre[8..12].try_into().unwrap());
    if version != FORMAT_VERSION && version != FORMAT_VERSION_NO_GENERATION {
        crate::bail!(
            "update format version {version} is not supported (this agent reads versions {FORMAT_VERSION_NO_GENERATION} and {FORMAT_VERSION})"
        );
    }
    let hlen = u32::from_le_bytes(pre[12..16].try_into().unwrap());
    if hlen > MAX_HEADER {
        crate::bail!("header length {hlen} exceeds {MAX_HEADER} bytes: corrupt file");
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
            .filter(|id| *id != crate::update::keys::key_id(key));
        match signer {
            Some(id) => crate::bail!(
                "bad signature: signed with key {id}, not with the trusted key {}",
                crate::update::keys::key_id(key)
            ),
            None => crate::bail!(
                "bad signature: the header was modified or not signed with the trusted key {}",
                crate::update::keys::key_id(key)
            ),
        }
    }
    let header: Header = serde_json::from_slice(&json).context("signed header is not valid")?;
    if version == FORMAT_VERSION_NO_GENERATION && header.generation != 0 {
        crate::bail!(
            "signed header is not valid: format version 1 carries no generation, this one says {}",
            header.generation
        );
    }
    check_header(&header).context("signed header is not valid")?;
    if let Some(b) = expect.board
        && header.board != b
    {
        crate::bail!("the update is for board {}, this is a {b}", header.board);
    }
    if let Some(a) = expect.arch
        && header.arch != a
    {
        crate::bail!(
            "the update is for architecture {}, this is {a}",
            header.arch
        );
    }
    let mut end = 0u64;
    for p in &header.payloads {
        if p.offset != end {
            crate::bail!("payload {} is not where the table says", p.name);
        }
        end = end
            .checked_add(p.size)
            .ok_or_else(|| Error::msg("payload sizes overflow"))?;
    }
    header.payload(ROOT)?;
    let payload_start = 16 + hlen as u64 + SIG_LEN;
    let want = payload_start + end;
    if len < want {
        crate::bail!("truncated: {len} bytes, the header describes {want}");
    }
    if len > want {
        crate::bail!("{} unexpected bytes after the last payload", len - want);
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
        crate::bail!("{what} contains the control character {c:?}");
    }
    Ok(())
}

/// A payload name: `root.erofs`-like (no `/`), or `boot/<relative path>`
/// whose every component is a plain name (no `..`, `.`, empty, `\\`).
pub(crate) fn check_payload_name(name: &str) -> Result<()> {
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
            crate::bail!("payload {:?} appears twice", p.name);
        }
        if p.sha256.len() != 64 || unhex(&p.sha256).is_none() {
            crate::bail!("payload {:?} has no SHA-256 (64 hex digits)", p.name);
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
            crate::bail!(
                "payload {} is corrupt or tampered with: SHA-256 {got}, the signed header says {}",
                p.name,
                p.sha256
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path, board: &str, arch: &str, key: &SigningKey) -> std::path::PathBuf {
        let root = dir.join("root");
        std::fs::write(&root, vec![0x5a; 300_000]).unwrap();
        let k = dir.join("k");
        std::fs::write(&k, b"kernel").unwrap();
        let out = dir.join(format!("{board}-{arch}.update"));
        let mut f = File::create(&out).unwrap();
        write(
            &mut f,
            Header {
                name: "t".into(),
                board: board.into(),
                arch: arch.into(),
                build_id: "0123".into(),
                edgeimg_version: "0".into(),
                kernel_version: "6".into(),
                cmdline: "root=x".into(),
                created: 1,
                key_id: String::new(),
                generation: 0,
                payloads: vec![],
            },
            &[(ROOT.into(), root.as_path()), (VMLINUZ.into(), k.as_path())],
            key,
        )
        .unwrap();
        out
    }

    fn err(path: &Path, key: &VerifyingKey, e: &Expect) -> String {
        verify_file(path, key, e).unwrap_err().to_string()
    }

    #[test]
    fn good_file_verifies_and_every_fault_is_named() {
        let d = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[1; 32]);
        let pk = key.verifying_key();
        let f = sample(d.path(), "x86_64", "amd64", &key);
        let expect = Expect {
            board: Some("x86_64"),
            arch: Some("amd64"),
        };
        let v = verify_file(&f, &pk, &expect).unwrap();
        assert_eq!(v.header.payloads.len(), 2);

        let other = SigningKey::from_bytes(&[2; 32]).verifying_key();
        assert!(err(&f, &other, &expect).contains("bad signature: signed with key"));

        let data = std::fs::read(&f).unwrap();
        let t = d.path().join("t");
        let mut bad = data.clone();
        let n = bad.len();
        bad[n - 100] ^= 1; // inside the root payload
        std::fs::write(&t, &bad).unwrap();
        assert!(err(&t, &pk, &expect).contains("payload root.erofs is corrupt"));
        let mut bad = data.clone();
        bad[30] ^= 1; // inside the header
        std::fs::write(&t, &bad).unwrap();
        assert!(err(&t, &pk, &expect).contains("bad signature"));
        std::fs::write(&t, &data[..data.len() - 1]).unwrap();
        assert!(err(&t, &pk, &expect).contains("truncated"));
        std::fs::write(&t, &data[..40]).unwrap();
        assert!(err(&t, &pk, &expect).contains("truncated"));
        std::fs::write(&t, &data[..4]).unwrap();
        assert!(err(&t, &pk, &expect).contains("truncated"));
        let e = Expect {
            board: Some("rpi4"),
            arch: None,
        };
        assert!(err(&f, &pk, &e).contains("for board x86_64, this is a rpi4"));
        let e = Expect {
            board: None,
            arch: Some("arm64"),
        };
        assert!(err(&f, &pk, &e).contains("for architecture amd64, this is arm64"));
        std::fs::write(&t, b"hello world, not an update").unwrap();
        assert!(err(&t, &pk, &expect).contains("bad magic"));
    }

    /// An update signed as is: `header` is JSON written by hand (what a
    /// hostile or buggy signer could produce), `payloads` back to back.
    fn signed_raw(
        dir: &Path,
        version: u32,
        header: &serde_json::Value,
        payloads: &[&[u8]],
        key: &SigningKey,
    ) -> std::path::PathBuf {
        let json = serde_json::to_vec(header).unwrap();
        let mut signed = prefix(version, json.len() as u32);
        signed.extend_from_slice(&json);
        let sig = key.sign(&signed);
        let mut out = signed;
        out.extend_from_slice(&sig.to_bytes());
        for p in payloads {
            out.extend_from_slice(p);
        }
        let path = dir.join("raw.update");
        std::fs::write(&path, out).unwrap();
        path
    }

    /// A header as JSON for [`signed_raw`]: every payload in `names` holds `b"x"`.
    fn raw_header(names: &[&str]) -> serde_json::Value {
        let sha = {
            let mut h = Sha256::new();
            h.update(b"x");
            hex(&h.finalize())
        };
        let payloads: Vec<serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| serde_json::json!({"name": n, "offset": i, "size": 1, "sha256": sha}))
            .collect();
        serde_json::json!({
            "name": "t", "board": "x86_64", "arch": "amd64", "build_id": "0123",
            "edgeimg_version": "0", "kernel_version": "6", "cmdline": "root=x",
            "created": 1, "key_id": "k", "generation": 3, "payloads": payloads,
        })
    }

    fn raw_err(header: &serde_json::Value, version: u32) -> String {
        let d = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[1; 32]);
        let n = header["payloads"].as_array().unwrap().len();
        let bodies = vec![&b"x"[..]; n];
        let f = signed_raw(d.path(), version, header, &bodies, &key);
        verify_file(&f, &key.verifying_key(), &Expect::default())
            .map(|v| format!("accepted: {:?}", v.header))
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn a_well_formed_raw_header_verifies() {
        // The helpers themselves make a file that verifies, so each refusal
        // below is caused by the one thing it changes.
        let h = raw_header(&[ROOT, VMLINUZ, "boot/overlays/x.dtbo"]);
        assert!(raw_err(&h, 2).starts_with("accepted"), "{}", raw_err(&h, 2));
    }

    #[test]
    fn duplicate_payload_names_are_refused() {
        let h = raw_header(&[ROOT, VMLINUZ, VMLINUZ]);
        let e = raw_err(&h, 2);
        assert!(e.contains("payload \"vmlinuz\" appears twice"), "{e}");
        let h = raw_header(&[ROOT, "boot/config.txt", "boot/config.txt"]);
        assert!(raw_err(&h, 2).contains("appears twice"));
    }

    #[test]
    fn path_like_payload_names_are_refused() {
        for name in [
            "../root.erofs",
            "/root.erofs",
            "sub/vmlinuz",
            "..",
            "",
            "boot/../../etc/passwd",
            "boot//x",
            "boot/./x",
            "boot/",
            "boot/a\\..\\b",
        ] {
            let e = raw_err(&raw_header(&[ROOT, name]), 2);
            assert!(
                e.contains("signed header is not valid: payload name"),
                "{name:?}: {e}"
            );
        }
    }

    #[test]
    fn control_characters_in_header_fields_are_refused() {
        for (field, value) in [
            ("name", "t\noptions init=/bin/sh"),
            ("build_id", "01\r23"),
            ("kernel_version", "6\nlinux /evil"),
            ("cmdline", "root=x\noptions init=/bin/sh"),
            ("edgeimg_version", "0\u{1b}[2J"),
            ("board", "x86_64\u{0}"),
            ("key_id", "k\u{2028}"),
        ] {
            let mut h = raw_header(&[ROOT]);
            h[field] = value.into();
            let e = raw_err(&h, 2);
            assert!(
                e.contains(&format!(
                    "signed header is not valid: {field} contains the control character"
                )),
                "{field}: {e}"
            );
        }
        let mut h = raw_header(&[ROOT, "boot/x\ny"]);
        h["payloads"][1]["name"] = "boot/x\ny".into();
        assert!(raw_err(&h, 2).contains("payload name contains the control character"));
        let mut h = raw_header(&[ROOT]);
        h["payloads"][0]["sha256"] = "../x".into();
        assert!(raw_err(&h, 2).contains("has no SHA-256"));
    }

    #[test]
    fn generation_is_signed_and_selects_the_format() {
        let d = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[1; 32]);
        let pk = key.verifying_key();
        let root = d.path().join("root");
        std::fs::write(&root, b"root").unwrap();
        let header = |generation| Header {
            name: "t".into(),
            board: "x86_64".into(),
            arch: "amd64".into(),
            build_id: "0123".into(),
            edgeimg_version: "0".into(),
            kernel_version: "6".into(),
            cmdline: "root=x".into(),
            created: 1,
            key_id: String::new(),
            generation,
            payloads: vec![],
        };
        let write_to = |name: &str, generation| {
            let p = d.path().join(name);
            write(
                &mut File::create(&p).unwrap(),
                header(generation),
                &[(ROOT.into(), root.as_path())],
                &key,
            )
            .unwrap();
            p
        };
        let g7 = write_to("g7", 7);
        let bytes = std::fs::read(&g7).unwrap();
        assert_eq!(&bytes[8..12], &2u32.to_le_bytes());
        let v = verify_file(&g7, &pk, &Expect::default()).unwrap();
        assert_eq!(v.header.generation, 7);
        // Generation 0 is format 1 without the field: what older agents read.
        let g0 = write_to("g0", 0);
        let bytes = std::fs::read(&g0).unwrap();
        assert_eq!(&bytes[8..12], &1u32.to_le_bytes());
        assert!(!String::from_utf8_lossy(&bytes).contains("generation"));
        assert_eq!(
            verify_file(&g0, &pk, &Expect::default())
                .unwrap()
                .header
                .generation,
            0
        );
        // The generation is under the signature.
        let mut bad = std::fs::read(&g7).unwrap();
        let at = bad.windows(12).position(|w| w == b"generation\":").unwrap();
        bad[at + 12] = b'9';
        let t = d.path().join("t");
        std::fs::write(&t, &bad).unwrap();
        assert!(
            verify_file(&t, &pk, &Expect::default())
                .unwrap_err()
                .to_string()
                .contains("bad signature")
        );
        // Format 1 cannot carry one; format 3 is not known.
        let e = raw_err(&raw_header(&[ROOT]), 1);
        assert!(e.contains("format version 1 carries no generation"), "{e}");
        let e = raw_err(&raw_header(&[ROOT]), 3);
        assert!(
            e.contains("update format version 3 is not supported"),
            "{e}"
        );
    }
}
