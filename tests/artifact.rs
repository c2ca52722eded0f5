//! Artifact tests against the real reference tools: bmaptool (bmap-tools),
//! zstd, xz, sha256sum, cmp. No mocks: if these pass, what we ship is what
//! those tools accept.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgeimg::artifact::{
    AtomicOutput, Compression, compress, decompressing_reader, sha256_bytes, sha256_file,
    write_bmap, write_sha256sums,
};
use edgeimg::sparse;

const MIB: u64 = 1024 * 1024;

/// Deterministic non-zero filler (no rand dependency needed).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as u8) | 1
        })
        .collect()
}

/// A sparse image: `len` bytes, data written at each `(offset, len)`.
fn sparse_image(path: &Path, len: u64, data: &[(u64, usize)]) {
    let f = File::create(path).unwrap();
    f.set_len(len).unwrap();
    for (i, &(off, n)) in data.iter().enumerate() {
        f.write_all_at(&pattern(n, i as u64), off).unwrap();
    }
    f.sync_all().unwrap();
}

/// 64 MiB + 1234 bytes: unaligned length, data at the start, straddling a block
/// boundary, a multi-MiB run, and in the partial last block.
fn test_image(dir: &Path) -> PathBuf {
    let img = dir.join("disk.img");
    let len = 64 * MIB + 1234;
    sparse_image(
        &img,
        len,
        &[
            (0, 4096),
            (MIB + 4000, 300),
            (10 * MIB, 2 * MIB as usize + 17),
            (40 * MIB + 8192, 1),
            (len - 700, 700),
        ],
    );
    img
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn cmp(a: &Path, b: &Path) {
    ok(Command::new("cmp").arg(a).arg(b));
}

fn bmap_of(img: &Path) -> (String, edgeimg::artifact::BmapSummary) {
    let mut buf = Vec::new();
    let summary = write_bmap(img, &mut buf).unwrap();
    (String::from_utf8(buf).unwrap(), summary)
}

/// `bmaptool copy --bmap BMAP IMG TARGET`: the reference consumer of our bmaps.
fn bmaptool_copy(bmap: &Path, img: &Path, target: &Path) -> Command {
    let mut c = Command::new("bmaptool");
    c.arg("copy").arg("--bmap").arg(bmap).arg(img).arg(target);
    c
}

/// Writes `bmap` beside `img` (NAME.bmap), has bmaptool copy `img` with it to
/// NAME.out, and checks the copy is identical.
fn bmaptool_copy_matches(img: &Path, bmap: &str) {
    let p = img.with_extension("bmap");
    fs::write(&p, bmap).unwrap();
    let t = img.with_extension("out");
    ok(&mut bmaptool_copy(&p, img, &t));
    cmp(img, &t);
}

/// Recomputes BmapFileChecksum the way bmaptool verifies it (checksum field
/// replaced by 64 '0's), so a test can alter a bmap and keep it self-consistent.
fn reseal(bmap: &str) -> String {
    let start = bmap.find("<BmapFileChecksum> ").unwrap() + "<BmapFileChecksum> ".len();
    let zeroed = format!(
        "{}{}{}",
        &bmap[..start],
        "0".repeat(64),
        &bmap[start + 64..]
    );
    let sum = sha256_bytes(zeroed.as_bytes());
    format!("{}{}{}", &bmap[..start], sum, &bmap[start + 64..])
}

#[test]
fn bmaptool_copies_with_our_bmap() {
    let dir = tempfile::tempdir().unwrap();
    let img = test_image(dir.path());
    let (bmap, summary) = bmap_of(&img);
    let bmap_path = dir.path().join("disk.img.bmap");
    fs::write(&bmap_path, &bmap).unwrap();

    assert_eq!(summary.image_size, 64 * MIB + 1234);
    assert!(bmap.contains("<bmap version=\"2.0\">"));
    assert!(bmap.contains("<BlockSize> 4096 </BlockSize>"));
    assert!(bmap.contains("<ChecksumType> sha256 </ChecksumType>"));
    assert!(bmap.contains(&format!(
        "<BlocksCount> {} </BlocksCount>",
        (64 * MIB + 1234).div_ceil(4096)
    )));
    // Ranges are block-granular: the 300 bytes at 1 MiB+4000 straddle blocks
    // 256 and 257; the partial last block (index 16384) is mapped.
    assert!(summary.ranges.contains(&(256, 257)), "{:?}", summary.ranges);
    assert_eq!(summary.ranges.last().unwrap().1, 16384);
    assert!(summary.mapped_bytes < 3 * MIB, "{}", summary.mapped_bytes);

    let target = dir.path().join("target.img");
    ok(&mut bmaptool_copy(&bmap_path, &img, &target));
    cmp(&img, &target);
}

#[test]
fn bmap_matches_bmaptool_create_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let img = test_image(dir.path());
    let (ours, _) = bmap_of(&img);
    let theirs = ok(Command::new("bmaptool").arg("create").arg(&img)).stdout;
    let theirs = String::from_utf8(theirs).unwrap();
    // bmaptool uses the host filesystem's block size; only compare where that
    // is our 4096 (ext4, xfs, tmpfs on x86_64/arm64 with 4K pages).
    if theirs.contains("<BlockSize> 4096 </BlockSize>") {
        assert_eq!(ours, theirs);
    } else {
        eprintln!("host block size is not 4096; skipping byte comparison");
    }
}

#[test]
fn bmaptool_rejects_corrupted_range_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let img = test_image(dir.path());
    let (bmap, _) = bmap_of(&img);

    // Flip one hex digit of the second range's checksum, then reseal the file
    // checksum: only the per-range check can catch this.
    let at = bmap.match_indices("chksum=\"").nth(1).unwrap().0 + "chksum=\"".len();
    let mut bad = bmap.clone().into_bytes();
    bad[at] = if bad[at] == b'0' { b'1' } else { b'0' };
    let bad = reseal(&String::from_utf8(bad).unwrap());
    let bad_path = dir.path().join("bad.bmap");
    fs::write(&bad_path, &bad).unwrap();
    let out = run(&mut bmaptool_copy(
        &bad_path,
        &img,
        &dir.path().join("t1.img"),
    ));
    assert!(
        !out.status.success(),
        "bmaptool accepted a corrupted range checksum"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum mismatch for blocks range"), "{err}");

    // Sanity: the resealed, unmodified bmap is unchanged by reseal (i.e. our
    // file checksum is computed exactly as bmaptool verifies it).
    assert_eq!(reseal(&bmap), bmap);

    // Tampering with the file without resealing trips the file checksum.
    let tampered = bmap.replacen("Size of a block in bytes", "Size of a block in BYTES", 1);
    let t_path = dir.path().join("tampered.bmap");
    fs::write(&t_path, tampered).unwrap();
    let out = run(&mut bmaptool_copy(
        &t_path,
        &img,
        &dir.path().join("t2.img"),
    ));
    assert!(!out.status.success(), "bmaptool accepted a tampered bmap");
}

#[test]
fn bmap_of_fully_sparse_and_tiny_images() {
    let dir = tempfile::tempdir().unwrap();
    // All hole: no ranges, still a valid bmap that bmaptool copies.
    let hole = dir.path().join("hole.img");
    sparse_image(&hole, 8 * MIB, &[]);
    let (bmap, s) = bmap_of(&hole);
    assert!(s.ranges.is_empty());
    bmaptool_copy_matches(&hole, &bmap);

    // Shorter than one block.
    let tiny = dir.path().join("tiny.img");
    fs::write(&tiny, b"hello").unwrap();
    let (bmap, s) = bmap_of(&tiny);
    assert_eq!(s.ranges, vec![(0, 0)]);
    bmaptool_copy_matches(&tiny, &bmap);

    // Empty image is an error naming the file.
    let empty = dir.path().join("empty.img");
    File::create(&empty).unwrap();
    let err = write_bmap(&empty, &mut Vec::new()).unwrap_err().to_string();
    assert!(err.contains("empty.img"), "{err}");
}

fn compressible_image(dir: &Path) -> PathBuf {
    let img = dir.join("c.img");
    // Small enough to keep debug-build xz fast, with data and holes.
    sparse_image(
        &img,
        6 * MIB + 123,
        &[(0, 100_000), (3 * MIB, 700_000), (6 * MIB, 123)],
    );
    img
}

fn roundtrip(kind: Compression, tool: &str) {
    let dir = tempfile::tempdir().unwrap();
    let img = compressible_image(dir.path());
    let ext = kind.extension().unwrap();
    let out = dir.path().join(format!("c.img.{ext}"));
    let seen = std::cell::Cell::new(0u64);
    compress(&img, &out, kind, &|n| {
        assert!(n >= seen.get());
        seen.set(n);
    })
    .unwrap();
    assert_eq!(seen.get(), fs::metadata(&img).unwrap().len());
    // Only the final name exists: no partial left behind.
    assert_eq!(
        names(dir.path()),
        vec!["c.img".to_string(), format!("c.img.{ext}")]
    );

    let cli_out = dir.path().join("cli.img");
    let o = ok(Command::new(tool).arg("-d").arg("-c").arg(&out));
    fs::write(&cli_out, o.stdout).unwrap();
    cmp(&img, &cli_out);
    // The CLI's own integrity test (zstd frame checksum / xz CRC64).
    ok(Command::new(tool).arg("-t").arg(&out));

    let mut back = Vec::new();
    decompressing_reader(&out)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, fs::read(&img).unwrap());
}

#[test]
fn zstd_roundtrip_with_cli() {
    roundtrip(Compression::Zstd, "zstd");
}

#[test]
fn xz_roundtrip_with_cli() {
    roundtrip(Compression::Xz, "xz");
}

#[test]
fn none_compression_and_plain_reader() {
    let dir = tempfile::tempdir().unwrap();
    let img = compressible_image(dir.path());
    let out = dir.path().join("copy.img");
    compress(&img, &out, Compression::None, &|_| {}).unwrap();
    cmp(&img, &out);
    let mut back = Vec::new();
    decompressing_reader(&img)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, fs::read(&img).unwrap());
}

#[test]
fn compress_refuses_to_clobber_concurrent_partial_and_names_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = compressible_image(dir.path());
    let out = dir.path().join("c.img.zst");
    let _held = AtomicOutput::create(&out).unwrap();
    let err = compress(&img, &out, Compression::Zstd, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains(".c.img.zst.partial"), "{err}");
    let err = compress(
        &dir.path().join("missing.img"),
        &dir.path().join("m.zst"),
        Compression::Zstd,
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("missing.img"), "{err}");
}

#[test]
fn splice_into_keeps_destination_sparse() {
    let dir = tempfile::tempdir().unwrap();
    // Source "filesystem image": data, plus an explicitly written (allocated)
    // all-zero MiB that must not be copied as data.
    let src = dir.path().join("fs.img");
    sparse_image(
        &src,
        8 * MIB + 5,
        &[(4096, 10_000), (5 * MIB, MIB as usize), (8 * MIB, 5)],
    );
    File::options()
        .write(true)
        .open(&src)
        .unwrap()
        .write_all_at(&vec![0u8; MIB as usize], 2 * MIB)
        .unwrap();

    let disk = dir.path().join("disk.img");
    let d = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&disk)
        .unwrap();
    let disk_len = 256 * MIB;
    d.set_len(disk_len).unwrap();
    let off = 100 * MIB;
    let written = sparse::splice_into(&src, &d, off).unwrap();
    d.sync_all().unwrap();

    // Written data: the non-zero 1 MiB chunks only (the zero MiB skipped).
    assert!(
        (10_000 + MIB + 5..=3 * MIB + 5).contains(&written),
        "{written}"
    );
    let allocated = fs::metadata(&disk).unwrap().blocks() * 512;
    assert_eq!(fs::metadata(&disk).unwrap().len(), disk_len);
    assert!(
        allocated < 4 * MIB,
        "destination not sparse: {allocated} bytes allocated"
    );

    let src_bytes = fs::read(&src).unwrap();
    let mut got = vec![0u8; src_bytes.len()];
    d.read_exact_at(&mut got, off).unwrap();
    assert_eq!(got, src_bytes);
    // Outside the spliced range: still zeros.
    let mut before = vec![1u8; 4096];
    d.read_exact_at(&mut before, off - 4096).unwrap();
    assert!(before.iter().all(|&b| b == 0));
}

#[test]
fn splice_extends_short_destination_and_copy_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    sparse_image(&src, 16 * MIB, &[(MIB, 3000)]);

    // Destination shorter than offset + source: extended so the tail holes
    // still read back as zeros.
    let short = dir.path().join("short.img");
    let d = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&short)
        .unwrap();
    sparse::splice_into(&src, &d, MIB).unwrap();
    assert_eq!(fs::metadata(&short).unwrap().len(), 17 * MIB);

    let copy = dir.path().join("copy.img");
    sparse::copy_sparse(&src, &copy).unwrap();
    cmp(&src, &copy);
    let md = fs::metadata(&copy).unwrap();
    assert_eq!(md.len(), 16 * MIB);
    assert!(
        md.blocks() * 512 < MIB,
        "copy not sparse: {} blocks",
        md.blocks()
    );

    let err = sparse::copy_sparse(&dir.path().join("nope.img"), &copy)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.img"), "{err}");
}

#[test]
fn data_extents_report_data_regions() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("e.img");
    sparse_image(&p, 32 * MIB, &[(MIB, 10), (20 * MIB, 8192)]);
    let ext = sparse::data_extents(&File::open(&p).unwrap()).unwrap();
    assert_eq!(ext.len(), 2, "{ext:?}");
    assert!(ext[0].0 <= MIB && ext[0].0 + ext[0].1 >= MIB + 10);
    assert!(ext[1].0 <= 20 * MIB && ext[1].0 + ext[1].1 >= 20 * MIB + 8192);
    assert!(ext.iter().all(|&(o, l)| o + l <= 32 * MIB));
}

#[test]
fn sha256sums_verified_by_coreutils() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("b.img.bmap"), b"bmap").unwrap();
    sparse_image(&dir.path().join("a.img"), 3 * MIB + 1, &[(MIB, 100)]);
    fs::write(dir.path().join("a.img.zst"), b"zst").unwrap();

    let mut sums = Vec::new();
    write_sha256sums(dir.path(), &["b.img.bmap", "a.img.zst", "a.img"], &mut sums).unwrap();
    let text = String::from_utf8(sums.clone()).unwrap();
    let listed: Vec<&str> = text
        .lines()
        .map(|l| l.split_once("  ").unwrap().1)
        .collect();
    assert_eq!(listed, ["a.img", "a.img.zst", "b.img.bmap"]);
    fs::write(dir.path().join("SHA256SUMS"), &sums).unwrap();
    ok(Command::new("sha256sum")
        .arg("--strict")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(dir.path()));

    // sha256_file agrees with coreutils.
    let o = ok(Command::new("sha256sum").arg(dir.path().join("a.img")));
    let cli = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        cli.split_whitespace().next().unwrap(),
        sha256_file(&dir.path().join("a.img")).unwrap()
    );

    // And coreutils notices a change.
    fs::write(dir.path().join("a.img.zst"), b"changed").unwrap();
    let out = run(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(dir.path()));
    assert!(!out.status.success());
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn atomic_output_commit_and_drop() {
    let dir = tempfile::tempdir().unwrap();
    let fin = dir.path().join("out.img.xz");

    // Dropped without commit: nothing under either name.
    {
        let mut a = AtomicOutput::create(&fin).unwrap();
        a.file_mut().write_all(b"half").unwrap();
        assert_eq!(names(dir.path()), vec![".out.img.xz.partial"]);
        assert!(!fin.exists());
    }
    assert!(names(dir.path()).is_empty());

    // A second writer of the same output is refused while the first is open.
    let a = AtomicOutput::create(&fin).unwrap();
    let err = AtomicOutput::create(&fin).unwrap_err().to_string();
    assert!(err.contains(".out.img.xz.partial"), "{err}");
    a.file().write_all(b"complete").unwrap();
    a.commit().unwrap();
    assert_eq!(names(dir.path()), vec!["out.img.xz"]);
    assert_eq!(fs::read(&fin).unwrap(), b"complete");

    // Commit replaces a previous output of the same name.
    let mut b = AtomicOutput::create(&fin).unwrap();
    b.file_mut().write_all(b"v2").unwrap();
    b.commit().unwrap();
    assert_eq!(names(dir.path()), vec!["out.img.xz"]);
    assert_eq!(fs::read(&fin).unwrap(), b"v2");
}
