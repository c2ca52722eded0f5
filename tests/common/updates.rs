//! Update files for tests: a key pair made by the real `edgeimg keygen`,
//! and update files written by the library code `build --update` uses, with
//! small payloads.

use std::path::{Path, PathBuf};

use super::{edgeimg, ok};

/// `edgeimg keygen --out DIR/NAME`: (NAME.key, NAME.pub).
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    let o = ok(edgeimg().arg("keygen").arg("--out").arg(&prefix));
    assert!(o.contains(".key") && o.contains(".pub"), "{o}");
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// An update for `board`/`arch` at `generation` whose root image is `root`,
/// signed with `key`: `DIR/t-<board>-<arch>-g<generation>.update`.
pub fn make_update(
    dir: &Path,
    key: &Path,
    board: &str,
    arch: &str,
    generation: u64,
    root: &[u8],
    build_id: &str,
) -> PathBuf {
    let root_path = dir.join("root.erofs");
    std::fs::write(&root_path, root).unwrap();
    let kernel = dir.join("vmlinuz");
    std::fs::write(&kernel, b"a kernel").unwrap();
    let initrd = dir.join("initrd.img");
    std::fs::write(&initrd, b"an initrd").unwrap();
    let sk = edgeimg::update::load_signing_key(key).unwrap();
    let out = dir.join(format!("t-{board}-{arch}-g{generation}.update"));
    edgeimg::update::write_file(
        &out,
        edgeimg::update::Header {
            name: "t".into(),
            board: board.into(),
            arch: arch.into(),
            build_id: build_id.into(),
            edgeimg_version: "0".into(),
            kernel_version: "6.12".into(),
            cmdline: "root=PARTUUID=x edgeimg.slot=a".into(),
            created: 0,
            key_id: String::new(),
            generation,
            payloads: vec![],
        },
        &[
            ("root.erofs".into(), root_path.as_path()),
            ("vmlinuz".into(), kernel.as_path()),
            ("initrd.img".into(), initrd.as_path()),
        ],
        &sk,
    )
    .unwrap();
    out
}
