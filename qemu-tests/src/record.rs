//! Framed result records from the guest (the self-check's JSON, the update
//! test's report). The guest's `edgeimg-record` (qemu-tests/overlays/record)
//! writes each record as one or more lines
//!
//! ```text
//! EDGEIMG-REC <kind> <len> <sum> <i>/<n> <chunk-sum> <base64 chunk>
//! ```
//!
//! `len` is the record's length in bytes, `sum` the first 16 hex digits of
//! its SHA-256, chunk `i` of `n` carries at most 600 base64 characters and
//! `chunk-sum` is the first 16 hex digits of the SHA-256 of those characters.
//! A line that was torn or had kernel messages written into it fails its
//! chunk sum and is skipped; a record is accepted only when its chunks decode
//! to `len` bytes with SHA-256 prefix `sum`. Copies of a record (the rpi4
//! guest repeats it on the console) fill the gaps torn copies leave.

use std::collections::{HashMap, HashSet, VecDeque};

pub const MARKER: &str = "EDGEIMG-REC";
/// Chunks per record the parser accepts: records are a few KiB at most.
const MAX_CHUNKS: usize = 64;
const MAX_CHUNK_CHARS: usize = 600;

/// One verified chunk line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub kind: String,
    pub len: usize,
    pub sum: String,
    pub index: usize,
    pub count: usize,
    pub data: String,
}

fn sha16(bytes: &[u8]) -> String {
    edgeimg::artifact::checksums::sha256_bytes(bytes)[..16].to_string()
}

fn is_hex16(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Parses and verifies one line. `Ok(None)`: no record on this line; `Err`:
/// a record line that is torn, interleaved or otherwise not intact (why).
pub fn parse_chunk(line: &str) -> Result<Option<Chunk>, String> {
    let Some(at) = line.find(MARKER) else {
        return Ok(None);
    };
    // Single spaces between exactly seven fields: anything written into the
    // line adds or changes a field.
    let fields: Vec<&str> = line[at..].trim_end_matches('\r').split(' ').collect();
    let [_, kind, len, sum, part, chunk_sum, data] = fields[..] else {
        return Err(format!("{} fields, not 7", fields.len()));
    };
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        return Err(format!("bad kind {kind:?}"));
    }
    let len: usize = len.parse().map_err(|_| format!("bad length {len:?}"))?;
    if !is_hex16(sum) || !is_hex16(chunk_sum) {
        return Err("bad checksum field".into());
    }
    let (index, count) = part
        .split_once('/')
        .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
        .ok_or_else(|| format!("bad chunk number {part:?}"))?;
    if index == 0 || index > count || count > MAX_CHUNKS {
        return Err(format!("bad chunk number {part:?}"));
    }
    if data.is_empty() || data.len() > MAX_CHUNK_CHARS {
        return Err(format!("chunk of {} characters", data.len()));
    }
    if sha16(data.as_bytes()) != chunk_sum {
        return Err(format!("chunk {part} of {kind} fails its checksum"));
    }
    Ok(Some(Chunk {
        kind: kind.to_string(),
        len,
        sum: sum.to_string(),
        index,
        count,
        data: data.to_string(),
    }))
}

/// Strict base64 (standard alphabet, padded).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let b = text.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, q) in b.chunks(4).enumerate() {
        let last = i + 1 == b.len() / 4;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// What one line did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// No record marker on the line.
    NotARecord,
    /// A record line that is not intact, and why: skipped.
    Rejected(String),
    /// A chunk kept; its record is not complete yet (or was complete already).
    Chunk,
    /// A record of this kind is complete and verified.
    Complete(String),
}

type Key = (String, usize, String, usize);

/// Collects verified chunks into records.
#[derive(Default)]
pub struct Assembler {
    partial: HashMap<Key, Vec<Option<String>>>,
    complete: HashSet<Key>,
    done: VecDeque<(String, Vec<u8>)>,
}

impl Assembler {
    pub fn feed(&mut self, line: &str) -> Fed {
        let chunk = match parse_chunk(line) {
            Ok(None) => return Fed::NotARecord,
            Err(why) => return Fed::Rejected(why),
            Ok(Some(c)) => c,
        };
        let key = (
            chunk.kind.clone(),
            chunk.len,
            chunk.sum.clone(),
            chunk.count,
        );
        // Further copies of a record already taken.
        if self.complete.contains(&key) {
            return Fed::Chunk;
        }
        let slots = self
            .partial
            .entry(key.clone())
            .or_insert_with(|| vec![None; chunk.count]);
        slots[chunk.index - 1] = Some(chunk.data);
        if slots.iter().any(Option::is_none) {
            return Fed::Chunk;
        }
        let slots = self.partial.remove(&key).unwrap();
        let text: String = slots.into_iter().flatten().collect();
        let Some(bytes) = base64_decode(&text) else {
            return Fed::Rejected(format!("{} record is not base64", key.0));
        };
        if bytes.len() != key.1 || sha16(&bytes) != key.2 {
            return Fed::Rejected(format!(
                "{} record: {} bytes with SHA-256 {}, framed as {} bytes with {}",
                key.0,
                bytes.len(),
                sha16(&bytes),
                key.1,
                key.2
            ));
        }
        self.complete.insert(key.clone());
        self.done.push_back((key.0.clone(), bytes));
        Fed::Complete(key.0)
    }

    /// The oldest complete record of `kind`, taken out.
    pub fn take(&mut self, kind: &str) -> Option<Vec<u8>> {
        let at = self.done.iter().position(|(k, _)| k == kind)?;
        self.done.remove(at).map(|(_, b)| b)
    }
}

/// The lines `edgeimg-record` writes for `payload` (the harness's tests use
/// it; the guest's shell script is the one that runs in the VMs).
pub fn frame(kind: &str, payload: &[u8]) -> Vec<String> {
    let b64 = base64_encode(payload);
    let chunks: Vec<&str> = b64
        .as_bytes()
        .chunks(MAX_CHUNK_CHARS)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let n = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{MARKER} {kind} {} {} {}/{n} {} {c}",
                payload.len(),
                sha16(payload),
                i + 1,
                sha16(c.as_bytes())
            )
        })
        .collect()
}

fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-check-like JSON large enough for three chunks.
    fn payload() -> Vec<u8> {
        let entries = r#""entries":["edgeimg-1-a.conf","edgeimg-2-b.conf"]"#;
        let pad = "x".repeat(1000);
        format!(r#"{{"usr_ro":true,{entries},"hostname":"vm-1","pad":"{pad}"}}"#).into_bytes()
    }

    fn assemble(lines: &[String]) -> (Assembler, Vec<Fed>) {
        let mut a = Assembler::default();
        let fed = lines.iter().map(|l| a.feed(l)).collect();
        (a, fed)
    }

    #[test]
    fn intact_record_is_accepted() {
        let p = payload();
        let lines = frame("selfcheck", &p);
        assert_eq!(lines.len(), 3);
        // With the console's prefixes: a kmsg timestamp, a carriage return.
        let lines: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("[   12.{i:06}] {l}\r"))
            .collect();
        let (mut a, fed) = assemble(&lines);
        assert_eq!(fed.last(), Some(&Fed::Complete("selfcheck".into())));
        assert_eq!(a.take("selfcheck"), Some(p));
        assert_eq!(a.take("selfcheck"), None);
        assert_eq!(base64_decode(&base64_encode(b"ab")), Some(b"ab".to_vec()));
    }

    /// A kernel message written into the middle of the line. Read as a plain
    /// `key=value` line (as the console report once was), this one gives keys
    /// "(Version" and "TCOBASE" and `entries` "[": here the line fails its
    /// checksum and nothing is returned.
    #[test]
    fn kernel_messages_interleaved_are_rejected() {
        let p = b"slot=a version=v1 entries=edgeimg-1-a.conf,";
        let kmsg = "[    3.1] iTCO_wdt: Found a ICH9 TCO device (Version=2, TCOBASE=0x0660)";
        let plain = format!("slot=a version=v1 entries={kmsg}edgeimg-1-a.conf,");
        let misread: Vec<(&str, &str)> = plain
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        assert!(misread.iter().any(|(k, _)| *k == "TCOBASE"), "{misread:?}");
        assert!(misread.contains(&("entries", "[")), "{misread:?}");

        let line = &frame("updatetest", p)[0];
        let at = line.len() - 20;
        let torn = format!("{}{kmsg}{}", &line[..at], &line[at..]);
        let (mut a, fed) = assemble(&[torn]);
        assert!(matches!(fed[0], Fed::Rejected(_)), "{fed:?}");
        assert_eq!(a.take("updatetest"), None);
        // Before the marker a kernel message leaves the record intact (it is
        // read); one that cuts the line short does not.
        let after = format!("{kmsg}{line}");
        assert!(matches!(parse_chunk(&after), Ok(Some(_))));
        let torn = format!("{}{kmsg}", &line[..at]);
        assert!(parse_chunk(&torn).is_err());

        // A kernel message inside the base64 with no space still fails.
        let torn = format!("{}iTCO{}", &line[..at], &line[at..]);
        assert!(parse_chunk(&torn).is_err());
    }

    #[test]
    fn truncated_and_split_records_are_rejected() {
        let p = payload();
        let lines = frame("selfcheck", &p);
        // A line cut short, and the rest of it on the next line (a newline
        // from a kernel message inside it).
        let cut = lines[1].len() / 2;
        let torn = vec![
            lines[0].clone(),
            lines[1][..cut].to_string(),
            lines[1][cut..].to_string(),
            lines[2].clone(),
        ];
        let (mut a, fed) = assemble(&torn);
        assert!(matches!(fed[1], Fed::Rejected(_)), "{fed:?}");
        assert_eq!(fed[2], Fed::NotARecord);
        assert!(!fed.contains(&Fed::Complete("selfcheck".into())), "{fed:?}");
        assert_eq!(a.take("selfcheck"), None);
        // An intact copy of the missing chunk completes the record.
        assert_eq!(a.feed(&lines[1]), Fed::Complete("selfcheck".into()));
        assert_eq!(a.take("selfcheck"), Some(p));
    }

    #[test]
    fn bad_checksums_are_rejected() {
        let p = br#"{"slot":"a"}"#;
        let line = &frame("updatetest", p)[0];
        let f: Vec<&str> = line.split(' ').collect();
        // A chunk checksum that does not match its data.
        let mut bad = f.clone();
        bad[5] = "0123456789abcdef";
        assert!(parse_chunk(&bad.join(" ")).is_err());
        // A record checksum that does not match the payload: the chunk is
        // intact, the record is not.
        let mut bad = f.clone();
        bad[3] = "0123456789abcdef";
        let (mut a, fed) = assemble(&[bad.join(" ")]);
        assert!(matches!(fed[0], Fed::Rejected(_)), "{fed:?}");
        assert_eq!(a.take("updatetest"), None);
        // A length that does not match.
        let mut bad = f.clone();
        bad[2] = "13";
        let (_, fed) = assemble(&[bad.join(" ")]);
        assert!(matches!(fed[0], Fed::Rejected(_)), "{fed:?}");
        // Data altered with its chunk checksum recomputed: the record sum catches it.
        let mut bad = f.clone();
        let data = bad[6].replace('e', "f");
        let sum = sha16(data.as_bytes());
        bad[6] = &data;
        bad[5] = &sum;
        let (_, fed) = assemble(&[bad.join(" ")]);
        assert!(matches!(fed[0], Fed::Rejected(_)), "{fed:?}");
    }

    #[test]
    fn copies_are_taken_once_and_kinds_kept_apart() {
        let a1 = frame("updatetest", b"slot=a version=v1");
        let a2 = frame("update-apply", b"applied");
        let mut a = Assembler::default();
        for l in a1.iter().chain(&a2).chain(&a1) {
            a.feed(l);
        }
        assert_eq!(a.take("update-apply"), Some(b"applied".to_vec()));
        assert_eq!(a.take("updatetest"), Some(b"slot=a version=v1".to_vec()));
        assert_eq!(a.take("updatetest"), None);
    }
}

/// The guest's framing script and this parser agree.
#[cfg(test)]
mod guest_script {
    #[test]
    fn edgeimg_record_output_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        // Over two chunks, with bytes base64 must carry (newlines, quotes, UTF-8).
        let payload: Vec<u8> = format!("{{\"k\":\"é\\n{}\"}}\n", "ab\"c".repeat(300)).into_bytes();
        let file = dir.path().join("payload");
        std::fs::write(&file, &payload).unwrap();
        let port = dir.path().join("port");
        std::fs::write(&port, "").unwrap();
        let script = crate::overlay("record").join("usr/local/libexec/edgeimg-record");
        let st = std::process::Command::new("sh")
            .arg(&script)
            .args(["selfcheck"])
            .arg(&file)
            .env("EDGEIMG_RECORD_PORT", &port)
            .status()
            .unwrap();
        assert!(st.success(), "{st}");
        let out = std::fs::read_to_string(&port).unwrap();
        assert!(out.lines().count() >= 3, "{out}");
        let mut a = super::Assembler::default();
        for l in out.lines() {
            assert!(!matches!(a.feed(l), super::Fed::Rejected(_)), "{l}");
        }
        assert_eq!(a.take("selfcheck"), Some(payload));
    }
}
