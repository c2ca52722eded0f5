//! One function per fuzz target, each feeding attacker-controlled bytes to the
//! parser the real code runs. Kept free of libFuzzer so it also compiles on
//! stable: the builder's `tests/fuzz_corpus.rs` includes this file and replays
//! every committed corpus input through these same functions.
//!
//! A target only has to not panic, not hang and stay within memory; errors
//! are the expected outcome for almost every input.

use std::io::Cursor;
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey};
use edgeimg_agent::update::format;

/// The fuzz targets by name, in the order `fuzz/README.md` lists them.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("edgeimg_toml", edgeimg_toml),
    ("node_toml", node_toml),
    ("update_header", update_header),
    ("partition_table", partition_table),
    ("bmap", bmap),
    ("image_archive", image_archive),
    ("fat_node_toml", fat_node_toml),
];

/// edgeimg.toml as `edgeimg build` loads it (the board merge included). The
/// base directory does not exist, so relative file keys resolve to nothing.
pub fn edgeimg_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // the loader reads it with read_to_string, which refuses this
    };
    let _ = edgeimg::config::parse(
        "fuzz/edgeimg.toml",
        text,
        Path::new("/nonexistent/edgeimg-fuzz"),
        None,
    );
}

/// node.toml as the agent parses and validates it.
pub fn node_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ =
        edgeimg_agent::schema::NodeConfig::from_toml(text, Path::new("/boot/edgeimg/node.toml"));
}

/// The fixed key the signed mode signs with; it only has to be the one the
/// verifier trusts.
fn test_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// An update file. The first byte picks the mode:
/// - even: the rest is the whole file, as an attacker would send it (almost
///   every input stops at the magic, length or signature checks);
/// - odd: the rest is `header JSON \0 payload bytes`, signed here with the
///   trusted key, so the fuzzer reaches the header checks, the payload table
///   and the payload hashing behind the signature.
pub fn update_header(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = test_key();
    let file = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let (json, payloads) = match rest.iter().position(|&b| b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let version = if mode & 2 == 0 {
            format::FORMAT_VERSION
        } else {
            format::FORMAT_VERSION_NO_GENERATION
        };
        let mut signed = format::MAGIC.to_vec();
        signed.extend_from_slice(&version.to_le_bytes());
        signed.extend_from_slice(&(json.len() as u32).to_le_bytes());
        signed.extend_from_slice(json);
        let sig = key.sign(&signed);
        signed.extend_from_slice(&sig.to_bytes());
        signed.extend_from_slice(payloads);
        signed
    };
    let len = file.len() as u64;
    let mut f = Cursor::new(file);
    let expect = format::Expect {
        board: None,
        arch: None,
    };
    if let Ok(v) = format::verify_header(&mut f, len, &key.verifying_key(), &expect) {
        let _ = format::verify_payloads(&mut f, &v);
        for p in &v.header.payloads {
            let _ = v.offset(p);
        }
    }
}

/// The agent's partition-table code on a disk image: growing the data
/// partition (GPT, then MBR) and finding the boot partition by PARTUUID. The
/// first byte picks the partition number (and the MBR sector size); grow
/// writes into its own copy of the image.
pub fn partition_table(data: &[u8]) {
    let Some((&sel, disk)) = data.split_first() else {
        return;
    };
    let number = u32::from(sel & 0x7f);
    let _ = edgeimg_agent::grow::grow_gpt(&mut Cursor::new(disk.to_vec()), number);
    let ss = if sel & 0x80 == 0 { 512 } else { 4096 };
    let _ = edgeimg_agent::grow::grow_mbr(&mut Cursor::new(disk.to_vec()), number % 5, ss);
    let _ = edgeimg_agent::bootpart::read_from_disk(
        &mut Cursor::new(disk),
        "11223344-01",
        "edgeimg/node.toml",
    );
}

/// A bmap file as `edgeimg flash` reads it.
pub fn bmap(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // read as UTF-8 text; refused before parsing otherwise
    };
    if let Ok(b) = edgeimg::flash::bmap::parse(text, Path::new("fuzz.bmap")) {
        let _ = b.byte_ranges();
        let _ = b.mapped_bytes();
    }
}

/// A preloaded container image archive. The first byte picks how it is
/// compressed (the real code decides that from the file name).
pub fn image_archive(data: &[u8]) {
    use edgeimg::images::{Compression, InspectOptions, inspect_stream};
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let (name, compression) = match sel % 3 {
        0 => ("fuzz.tar", Compression::None),
        1 => ("fuzz.tar.gz", Compression::Gzip),
        _ => ("fuzz.tar.zst", Compression::Zstd),
    };
    let opts = InspectOptions {
        verify_blob_digests: true,
    };
    let _ = inspect_stream(Path::new(name), compression, Cursor::new(bytes), &opts);
}

/// Disk signature and partition of the MBR [`fat_node_toml`] puts in front.
const FAT_PARTUUID: &str = "11223344-01";

/// node.toml read straight from a FAT file system, as the agent does before
/// the boot partition is mounted. The input is the FAT image itself; an MBR
/// with one partition holding it is put in front so the real lookup by
/// PARTUUID runs too.
pub fn fat_node_toml(data: &[u8]) {
    let mut disk = mbr_in_front(data);
    if let Ok(Some(text)) =
        edgeimg_agent::bootpart::read_from_disk(&mut disk, FAT_PARTUUID, "edgeimg/node.toml")
    {
        node_toml(text.as_bytes());
    }
}

/// `fs` behind a one-sector MBR whose partition 1 starts at sector 1 and
/// covers it (rounded up to whole sectors).
pub fn mbr_in_front(fs: &[u8]) -> Cursor<Vec<u8>> {
    let sectors = fs.len().div_ceil(512) as u32;
    let mut disk = vec![0u8; 512];
    disk[440..444].copy_from_slice(&0x1122_3344u32.to_le_bytes());
    let e = &mut disk[446..462];
    e[4] = 0x0c; // FAT32 LBA
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk.extend_from_slice(fs);
    disk.resize(512 * (1 + sectors as usize), 0);
    Cursor::new(disk)
}
