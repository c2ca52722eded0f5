//! The EROFS root step with each compressor edgeimg offers: the real
//! mkfs.erofs makes a root from a small tree, dump.erofs reads its
//! superblock, fsck.erofs checks it and extracts it, and the extracted tree
//! must equal the input (content, modes, links, owners, the build's epoch).
//! Two runs give the same bytes. The full image with lzma boots in the arm64
//! VM test (qemu-tests/tests/arm64.rs).

mod common;
use common::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use edgeimg::config::schema::RootCompression;
use edgeimg::fs::erofs;

const EPOCH: u64 = 1_750_000_000;

/// A tree with what a root holds: text big enough to span several physical
/// clusters, an incompressible blob (stored as is by the compress hints), an
/// already-compressed module, a symlink, a hard link, an empty file,
/// set-uid and private modes, and a file owned by another user.
fn make_tree(root: &Path) {
    let d = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
    let w = |p: &str, b: &[u8]| std::fs::write(root.join(p), b).unwrap();
    d("usr/bin");
    d("usr/share/doc/x");
    d("usr/lib/modules/6.12/kernel");
    d("var/lib/images");
    d("etc");
    let text: String = (0..40_000)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog\n"))
        .collect();
    w("usr/share/doc/x/big.txt", text.as_bytes());
    w("etc/hostname", b"edge\n");
    w("etc/empty", b"");
    w("var/lib/images/app.tar", &noise(2 << 20, 7));
    w("usr/lib/modules/6.12/kernel/m.ko.xz", &noise(300_000, 9));
    let mut prog = b"\x7fELF".to_vec();
    prog.extend(noise(50_000, 11));
    prog.extend(std::iter::repeat_n(0u8, 200_000));
    w("usr/bin/tool", &prog);
    std::fs::set_permissions(
        root.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("etc/hostname"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("../share/doc/x/big.txt", root.join("usr/bin/link")).unwrap();
    std::fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname2")).unwrap();
    if edgeimg::rootless::is_root() {
        std::os::unix::fs::lchown(root.join("etc/hostname"), Some(1234), Some(4321)).unwrap();
    }
}

/// Every path under `dir`, sorted, with type, mode, owner, size and content.
fn describe(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                "dir".to_string()
            } else {
                let data = std::fs::read(&p).unwrap();
                format!(
                    "{} bytes {}",
                    data.len(),
                    edgeimg::artifact::checksums::sha256_bytes(&data)
                )
            };
            let mode = if m.file_type().is_symlink() {
                0
            } else {
                m.mode()
            };
            out.push(format!("{rel} {mode:o} {}:{} {what}", m.uid(), m.gid()));
            if m.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Makes the root with `compression` twice, checks it and returns its size.
fn root_with(compression: RootCompression, algorithm: &str) -> u64 {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    make_tree(&tree);
    let uuid = edgeimg::ids::Uuid::derive("erofs-test", "root");
    let img = t.path().join("root.erofs");
    let size = erofs::make(&tree, &img, uuid, EPOCH, compression)
        .unwrap_or_else(|e| panic!("mkfs.erofs with {compression:?}: {e:#}"));
    assert_eq!(size, std::fs::metadata(&img).unwrap().len());

    // Reproducible: the same tree gives the same bytes (mkfs.erofs 1.8
    // compresses on several threads; the output must not depend on them).
    let again = t.path().join("again.erofs");
    erofs::make(&tree, &again, uuid, EPOCH, compression).unwrap();
    assert!(
        std::fs::read(&img).unwrap() == std::fs::read(&again).unwrap(),
        "two {compression:?} roots from the same tree differ"
    );

    // The superblock names the algorithm (lz4hc writes the lz4 format).
    let sb = ok(Command::new("dump.erofs").arg("-s").arg(&img));
    let algs = sb
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem compr_algs:"))
        .map(str::trim)
        .unwrap_or("");
    assert_eq!(algs, algorithm, "dump.erofs -s:\n{sb}");
    assert!(sb.contains(&uuid.to_string()), "{sb}");

    // fsck.erofs decompresses everything and writes it out (unprivileged
    // too); the extracted tree is the input, with every mtime the epoch.
    let out = t.path().join("extracted");
    ok(Command::new("fsck.erofs")
        .arg(format!("--extract={}", out.display()))
        .arg("--preserve")
        .arg(&img));
    assert_eq!(describe(&out), describe(&tree));
    for p in ["etc/hostname", "usr/share/doc/x/big.txt", "usr/bin"] {
        let m = std::fs::metadata(out.join(p)).unwrap();
        assert_eq!(m.mtime() as u64, EPOCH, "{p}");
    }
    size
}

#[test]
fn lzma_root_is_lzma_and_extracts_to_the_tree() {
    let lzma = root_with(RootCompression::Lzma, "lzma");
    let lz4hc = root_with(RootCompression::Lz4hc, "lz4");
    // The text compresses much better with lzma; the stored files weigh the same.
    assert!(lzma < lz4hc, "lzma {lzma} bytes, lz4hc {lz4hc} bytes");
}

#[test]
fn doctor_names_the_erofs_utils_and_its_compressors() {
    // Not ok(): doctor fails when any other tool is missing here.
    let o = run(edgeimg().args(["doctor", "--board", "x86_64"]));
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.contains("mkfs.erofs"))
        .unwrap_or_else(|| panic!("no mkfs.erofs line:\n{out}"));
    assert!(
        line.starts_with("ok") && line.contains("erofs-utils 1.") && line.contains("lzma"),
        "{line}"
    );
}
