//! A fleet for the update tests: TUF repository keys from `edgeimg keygen
//! --tuf`, an update signing key, releases published with `edgeimg
//! publish`, and a fake UEFI device (its slots, sysfs, ESP and the image's
//! update settings under a temporary root) that the agent's code updates.

use super::{edgeimg, ok, updates};
use edgeimg_agent::Root;
use std::path::PathBuf;

/// A fleet: its TUF repository keys, its update signing key and its
/// repository directory, under one temporary directory.
pub struct Fleet {
    pub _dir: tempfile::TempDir,
    pub dir: PathBuf,
    pub tuf: PathBuf,
    pub update_key: PathBuf,
    pub update_pub: PathBuf,
    pub repo: PathBuf,
}

pub fn fleet() -> Fleet {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let tuf = dir.join("repo-keys");
    ok(edgeimg().args(["keygen", "--tuf", "--out"]).arg(&tuf));
    let (update_key, update_pub) = updates::keygen(&dir, "update");
    let repo = dir.join("repo");
    Fleet {
        _dir: d,
        dir,
        tuf,
        update_key,
        update_pub,
        repo,
    }
}

impl Fleet {
    /// Release `generation` with a root image of `root`, published.
    pub fn publish(&self, generation: u64, root: &[u8]) {
        self.publish_deltas(generation, root, 0)
    }

    /// The update file of release `generation` with root image `root`.
    pub fn update(&self, generation: u64, root: &[u8]) -> PathBuf {
        let sub = self.dir.join(format!("build-{generation}"));
        std::fs::create_dir_all(&sub).unwrap();
        updates::make_update(
            &sub,
            &self.update_key,
            "x86_64",
            "amd64",
            generation,
            root,
            &format!("{generation:016x}"),
        )
    }

    /// Same, with deltas from up to `deltas` older releases.
    pub fn publish_deltas(&self, generation: u64, root: &[u8], deltas: usize) {
        let u = self.update(generation, root);
        ok(edgeimg()
            .arg("publish")
            .arg(&u)
            .arg("--repo")
            .arg(&self.repo)
            .arg("--keys")
            .arg(&self.tuf)
            .arg("--update-key")
            .arg(&self.update_pub)
            .arg("--deltas")
            .arg(deltas.to_string()));
    }

    pub fn metadata(&self) -> PathBuf {
        self.repo.join("x86_64/metadata")
    }

    /// Re-signs `role`'s metadata file `name` with the repository's key.
    pub fn resign<T: tough::schema::Role + serde::Serialize>(&self, role: &str, signed: T) {
        let root: tough::schema::Signed<tough::schema::Root> =
            serde_json::from_slice(&std::fs::read(self.dir.join("repo-keys-root.json")).unwrap())
                .unwrap();
        let key: Vec<Box<dyn tough::key_source::KeySource>> =
            vec![Box::new(edgeimg::tuf::FileKey {
                path: self.dir.join(format!("repo-keys-{role}.key")),
            })];
        let out = tempfile::tempdir().unwrap();
        edgeimg::tuf::block_on(async {
            let s = tough::editor::signed::SignedRole::new(
                signed,
                &tough::schema::KeyHolder::Root(root.signed),
                &key,
                &aws_lc_rs::rand::SystemRandom::new(),
            )
            .await
            .unwrap();
            s.write(out.path(), false).await.unwrap();
        })
        .unwrap();
        std::fs::copy(
            out.path().join(format!("{role}.json")),
            self.metadata().join(format!("{role}.json")),
        )
        .unwrap();
    }

    pub fn timestamp(&self) -> tough::schema::Timestamp {
        let s: tough::schema::Signed<tough::schema::Timestamp> =
            serde_json::from_slice(&std::fs::read(self.metadata().join("timestamp.json")).unwrap())
                .unwrap();
        s.signed
    }

    /// The timestamp re-signed (a newer version) to have expired.
    pub fn expire_timestamp(&self) {
        let mut ts = self.timestamp();
        ts.expires = "2020-01-01T00:00:00Z".parse().unwrap();
        ts.version = ts.version.checked_add(1).unwrap();
        self.resign("timestamp", ts);
    }
}

pub const SLOT: usize = 1 << 20;

/// A UEFI device running slot A of `generation`, trusting the fleet's
/// update key and TUF root, configured to pull from `url`.
pub fn device(f: &Fleet, generation: u64, url: &str) -> (tempfile::TempDir, Root) {
    let d = tempfile::tempdir().unwrap();
    let root = Root::new(d.path());
    let w = |p: &str, s: &[u8]| {
        let p = root.path(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w(
        "/proc/self/mountinfo",
        b"30 22 254:4 / /var rw,relatime - ext4 /dev/vda4 rw\n\
          31 22 254:1 / /boot/efi rw,relatime - vfat /dev/vda1 rw\n",
    );
    w("/sys/devices/virtual/block/vda/vda4/partition", b"4\n");
    std::fs::create_dir_all(root.path("/sys/dev/block")).unwrap();
    std::os::unix::fs::symlink(
        "../../devices/virtual/block/vda/vda4",
        root.path("/sys/dev/block/254:4"),
    )
    .unwrap();
    w("/dev/vda3", &vec![0u8; SLOT]);
    w(
        "/sys/class/block/vda3/size",
        format!("{}\n", SLOT / 512).as_bytes(),
    );
    std::fs::create_dir_all(root.path("/dev/disk/by-partuuid")).unwrap();
    std::os::unix::fs::symlink("../../vda3", root.path("/dev/disk/by-partuuid/pu-3")).unwrap();
    w(
        edgeimg_contract::schema::IMAGE_CONFIG_PATH,
        br#"{"name":"t","board":"x86_64","arch":"amd64","edgeimg_version":"0","hostname_pattern":"e"}"#,
    );
    w(
        edgeimg_contract::update::TRUSTED_KEY_PATH,
        &std::fs::read(&f.update_pub).unwrap(),
    );
    w(
        edgeimg_contract::update::TRUSTED_ROOT_PATH,
        &std::fs::read(f.dir.join("repo-keys-root.json")).unwrap(),
    );
    w(
        edgeimg_contract::update::REPOSITORY_PATH,
        format!("{url}\n").as_bytes(),
    );
    w(
        edgeimg_contract::update::GENERATION_PATH,
        format!("{generation}\n").as_bytes(),
    );
    w(
        "/proc/cmdline",
        b"root=PARTUUID=pu-2 ro edgeimg.data=PARTUUID=pu-4 edgeimg.slot=a\n",
    );
    w("/proc/sys/kernel/random/boot_id", b"boot-1\n");
    w("/boot/efi/loader/loader.conf", b"default edgeimg-*\n");
    w("/boot/efi/loader/entries/edgeimg-1-a.conf", b"title v1\n");
    (d, root)
}

/// Copies `dir` to `to` (files and directories only).
pub fn copy_tree(dir: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}
