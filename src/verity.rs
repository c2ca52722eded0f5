//! dm-verity for the root slot (`[image] verity = true`): the hash tree goes
//! into the slot payload right after the EROFS data, so a slot (and an update's
//! root payload) is one self-contained file, and the root hash goes on that
//! slot's kernel command line (docs/verity.md).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cmd::{self, Cmd, VERITYSETUP};
use crate::ids::Uuid;
use edgeimg_contract::cmdline as kcmd;

/// Packages an image with verity on needs on top of the base (the initramfs
/// copies veritysetup from it).
pub const PACKAGES: &[&str] = &["cryptsetup-bin"];

/// The device-mapper name the initramfs opens the root as; `root=` names it.
pub const MAPPER_NAME: &str = "edgeimg-root";
pub const BLOCK: u64 = 4096;

/// What `veritysetup format` made, as recorded in the manifest.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Verity {
    pub root_hash: String,
    pub salt: String,
    pub uuid: Uuid,
    /// Where the hash tree (its superblock first) starts in the slot, in bytes:
    /// the EROFS size rounded up to a block.
    pub hash_offset: u64,
    pub data_blocks: u64,
}

/// Appends the hash tree to the EROFS image `img` (padded to a block first)
/// and returns its parameters. Salt and UUID derive from `seed`, so the same
/// inputs give the same bytes.
pub fn format(img: &Path, seed: &str) -> Result<Verity> {
    let len = std::fs::metadata(img)
        .with_context(|| format!("cannot read {}", img.display()))?
        .len();
    let hash_offset = len.next_multiple_of(BLOCK);
    std::fs::OpenOptions::new()
        .write(true)
        .open(img)
        .and_then(|f| f.set_len(hash_offset))
        .with_context(|| format!("cannot pad {}", img.display()))?;
    let salt = Uuid::derive(seed, "verity/salt")
        .to_string()
        .replace('-', "");
    let uuid = Uuid::derive(seed, "verity/uuid");
    let data_blocks = hash_offset / BLOCK;
    let out = Cmd::new(VERITYSETUP)
        .arg("format")
        .arg(img)
        .arg(img)
        .arg(format!("--hash-offset={hash_offset}"))
        .arg(format!("--data-blocks={data_blocks}"))
        .arg(format!("--data-block-size={BLOCK}"))
        .arg(format!("--hash-block-size={BLOCK}"))
        .arg("--hash=sha256")
        .arg(format!("--salt={salt}"))
        .arg(format!("--uuid={uuid}"))
        .run()?;
    let root_hash = root_hash(&String::from_utf8_lossy(&out.stdout))
        .context("veritysetup format printed no root hash")?;
    Ok(Verity {
        root_hash,
        salt,
        uuid,
        hash_offset,
        data_blocks,
    })
}

/// The `Root hash:` line of `veritysetup format`'s report.
fn root_hash(report: &str) -> Option<String> {
    report.lines().find_map(|l| {
        let v = l.strip_prefix("Root hash:")?.trim();
        (v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit())).then(|| v.to_string())
    })
}

/// The verity parameters of a slot's command line: `root=` names the
/// verity device, `edgeimg.verity.dev=` the slot (devices rewrite it to the
/// slot an update lands in, as they do `root=` without verity).
pub fn cmdline_params(root_partuuid: &str, root_hash: &str, hash_offset: &str) -> Vec<String> {
    vec![
        format!("root=/dev/mapper/{MAPPER_NAME}"),
        format!("{}={root_hash}", kcmd::VERITY),
        format!("{}=PARTUUID={root_partuuid}", kcmd::VERITY_DEV),
        format!("{}={hash_offset}", kcmd::VERITY_OFFSET),
    ]
}

/// Fails unless the kernel in `tree` has dm-verity (as a module or built in).
pub fn check_kernel(tree: &Path, version: &str, board_file: &str) -> Result<()> {
    let rel = std::path::PathBuf::from(format!("usr/lib/modules/{version}"));
    let dir = tree.join(&rel);
    let root = crate::stage::in_root::InRoot::open(tree)?;
    let read =
        |f: &str| -> Result<String> { Ok(root.read_to_string(&rel.join(f))?.unwrap_or_default()) };
    let builtin = read("modules.builtin")?;
    if builtin.lines().any(|l| l.ends_with("/dm-verity.ko")) {
        return Ok(());
    }
    let dep = read("modules.dep")?;
    anyhow::ensure!(
        dep.lines().filter_map(|l| l.split(':').next()).any(|m| m
            .rsplit('/')
            .next()
            .is_some_and(|f| f.starts_with("dm-verity.ko"))),
        "[image] verity = true, but the kernel {version} of {board_file} has no dm-verity (neither a module in {} nor built in)",
        dir.display()
    );
    Ok(())
}

pub fn require() -> Result<()> {
    cmd::require(&[VERITYSETUP])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_hash_is_read_from_the_report() {
        let r = "VERITY header information for x\nSalt:            \t00ff\nRoot hash:      \t5d604ab71aacbd2425f3ad8f369233049eead48541eaba19cb5f9fc14f1a35eb\n";
        assert_eq!(
            root_hash(r).as_deref(),
            Some("5d604ab71aacbd2425f3ad8f369233049eead48541eaba19cb5f9fc14f1a35eb")
        );
        assert_eq!(root_hash("Root hash: nothex"), None);
    }

    #[test]
    fn a_kernel_without_dm_verity_is_one_clear_error() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("usr/lib/modules/6.1-x");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("modules.dep"), "kernel/fs/erofs/erofs.ko.xz:\n").unwrap();
        let e = check_kernel(t.path(), "6.1-x", "boards/b.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("verity = true") && e.contains("boards/b.toml") && e.contains("6.1-x"),
            "{e}"
        );
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/drivers/md/dm-verity.ko.xz: kernel/drivers/md/dm-bufio.ko.xz\n",
        )
        .unwrap();
        check_kernel(t.path(), "6.1-x", "boards/b.toml").unwrap();
        std::fs::write(dir.join("modules.dep"), "").unwrap();
        std::fs::write(
            dir.join("modules.builtin"),
            "kernel/drivers/md/dm-verity.ko\n",
        )
        .unwrap();
        check_kernel(t.path(), "6.1-x", "boards/b.toml").unwrap();
    }

    #[test]
    fn format_is_reproducible_and_verifiable() {
        if cmd::which("veritysetup").is_none() {
            panic!("veritysetup (cryptsetup-bin) is not installed: .ci/setup installs it");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut made = Vec::new();
        for n in ["a", "b"] {
            let p = dir.path().join(n);
            // Not a multiple of the block: the tree starts at the next one.
            let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(&p, &data).unwrap();
            let v = format(&p, "seed").unwrap();
            assert_eq!(v.hash_offset, 102_400);
            assert_eq!(v.data_blocks, 25);
            made.push((v, std::fs::read(&p).unwrap()));
        }
        assert_eq!(made[0], made[1], "same inputs, same tree and hash");
        let p = dir.path().join("a");
        let verify = |root: &str| {
            std::process::Command::new("veritysetup")
                .args(["verify", p.to_str().unwrap(), p.to_str().unwrap(), root])
                .arg(format!("--hash-offset={}", made[0].0.hash_offset))
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(verify(&made[0].0.root_hash));
        assert!(!verify(&"0".repeat(64)));
    }
}
