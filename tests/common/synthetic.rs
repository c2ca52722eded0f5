//! Small synthetic disk images for the flash and inspect tests: no full build.

#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn ok(cmd: &mut Command) {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub const MIB: u64 = 1 << 20;
/// Offset and length of the data partition's scattered data.
pub const DATA_AT: u64 = 42 * MIB;

/// A 64 MiB sparse disk image: p1 FAT32 EDGEBOOT (1..41 MiB), p2 with data
/// spots (41..57 MiB), p3 empty. `table` is "gpt" or "dos".
pub fn make_image(dir: &Path, table: &str) -> PathBuf {
    let img = dir.join(format!("test-{table}.img"));
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(64 * MIB).unwrap();
    drop(f);
    let script = if table == "gpt" {
        "label: gpt\nstart=2048, size=81920, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=EDGEBOOT\nstart=83968, size=32768, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=edgeimg-data\nstart=116736, size=8192, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=edgeimg-root-b\n"
    } else {
        "label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=81920, type=c, bootable\nstart=83968, size=32768, type=83\nstart=116736, size=8192, type=83\n"
    };
    let mut c = Command::new("sfdisk");
    c.arg("--quiet")
        .arg(&img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = c.spawn().expect("sfdisk");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed");
    let fat = dir.join(format!("fat-{table}.img"));
    let _ = std::fs::remove_file(&fat);
    ok(Command::new("mkfs.vfat")
        .args(["-C", "-F", "32", "-n", "EDGEBOOT", "--invariant"])
        .arg(&fat)
        .arg("40960"));
    std::fs::write(dir.join("hello.txt"), "hello from the boot partition\n").unwrap();
    ok(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&fat)
        .arg(dir.join("hello.txt"))
        .arg("::hello.txt"));
    // Splice the FAT in, writing only non-zero chunks (the image stays sparse).
    let out = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let fatf = std::fs::File::open(&fat).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0u64;
    loop {
        let n = fatf.read_at(&mut buf, pos).unwrap();
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            out.write_all_at(&buf[..n], MIB + pos).unwrap();
        }
        pos += n as u64;
    }
    // Deterministic pseudo-random data spots in p2.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (off, len) in [
        (DATA_AT, 300_000u64),
        (DATA_AT + 3 * MIB, 4096),
        (DATA_AT + 7 * MIB + 17, 1_000_000),
    ] {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        out.write_all_at(&data, off).unwrap();
    }
    out.sync_all().unwrap();
    let _ = std::fs::remove_file(&fat);
    let mut bmap = Vec::new();
    edgeimg::artifact::write_bmap(&img, &mut bmap).unwrap();
    std::fs::write(dir.join(format!("test-{table}.img.bmap")), bmap).unwrap();
    img
}
