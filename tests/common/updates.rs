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
    let payloads: [(&str, &[u8]); 3] = [
        ("root.erofs", root),
        ("vmlinuz", b"a kernel"),
        ("initrd.img", b"an initrd"),
    ];
    make_update_with(dir, key, board, arch, generation, &payloads, build_id)
}

/// An update like [`make_update`]'s with the payloads given (name, bytes).
pub fn make_update_with(
    dir: &Path,
    key: &Path,
    board: &str,
    arch: &str,
    generation: u64,
    payloads: &[(&str, &[u8])],
    build_id: &str,
) -> PathBuf {
    let files = dir.join("payloads");
    let mut list = vec![];
    for (i, (name, bytes)) in payloads.iter().enumerate() {
        std::fs::create_dir_all(&files).unwrap();
        let p = files.join(i.to_string());
        std::fs::write(&p, bytes).unwrap();
        list.push((name.to_string(), p));
    }
    let sk = edgeimg::update::load_signing_key(key).unwrap();
    let out = dir.join(format!("t-{board}-{arch}-g{generation}.update"));
    let refs: Vec<(String, &Path)> = list.iter().map(|(n, p)| (n.clone(), p.as_path())).collect();
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
        &refs,
        &sk,
    )
    .unwrap();
    out
}
