//! The base root filesystem: Debian bootstrapped with mmdebstrap, trimmed, with
//! edgeimg's initramfs pieces built in, cached as a tarball keyed by a hash of
//! everything that went into it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::artifact::checksums::sha256_bytes;
use crate::cmd::{self, Cmd};
use crate::progress::Progress;
use edgeimg_contract::arch::Arch;

mod incremental;
mod initrd_inputs;

const LOCAL_BOTTOM: &str = include_str!("files/local-bottom-edgeimg");
const INITRAMFS_CONF: &str = include_str!("files/initramfs.conf");
const VERITY_HOOK: &str = include_str!("files/hook-edgeimg-verity");
const VERITY_LOCAL_TOP: &str = include_str!("files/local-top-edgeimg-verity");
/// Sourced by LOCAL_BOTTOM when the root asks for an encrypted data partition.
const DATA_LUKS: &str = include_str!("files/edgeimg-data-luks");
/// mmdebstrap hooks that move depmod, the initramfs and sshd's host keys out of
/// the package scripts (essential-defer) and do the first two once at the end
/// (customize-finish): under qemu-user each of them costs tens of seconds.
const ESSENTIAL_DEFER: &str = include_str!("files/essential-defer");
const CUSTOMIZE_FINISH: &str = include_str!("files/customize-finish");
/// Foreign roots only: the host's own dpkg-deb, tar, sed, cp... stand in for
/// the target's while packages install and while the initrd is made.
const NATIVE_TOOLS: &str = include_str!("files/native-tools");
/// Applies a package difference to a copy of a cached base (see incremental).
const APPLY_DIFFERENCE: &str = include_str!("files/apply-difference");
/// Bumped whenever the way a base is made changes in a way the inputs don't show.
/// 2: bootstrapped with `SOURCE_DATE_EPOCH=BASE_EPOCH`; edgeimg's initramfs
/// files owned by root in unshare mode too.
/// 3: depmod and the initramfs deferred to one run at the end, the host's
/// depmod for a foreign architecture, no sshd host keys in the base.
/// 4: the metadata records the family and package list, so a changed list
/// starts from the closest cached base.
/// 5: an incremental base keeps the cached initrd when its inputs did not
/// change.
/// 6: in a foreign root, the host's own dpkg-deb, dpkg-split, tar, dash,
/// perl and everyday tools run natively while packages install, and the
/// everyday tools while the initrd is made (native-tools).
const BASE_FORMAT: u32 = 6;

/// The `SOURCE_DATE_EPOCH` every base is bootstrapped with (2025-01-01 UTC).
/// With it mmdebstrap's output is reproducible (times clamped, logs dropped),
/// in root and unshare mode alike, so a base is a function of its key and the
/// mirror. A constant, not the build's epoch: the image's own times come from
/// the build's epoch (mkfs.erofs -T, the FAT and ext4 clocks), and one base
/// serves builds with any epoch.
pub const BASE_EPOCH: u64 = 1_735_689_600;

/// Packages every edgeimg image needs, whatever the board.
pub const REQUIRED_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "kmod",
    "initramfs-tools",
    "busybox",
    "e2fsprogs",
    "openssh-server",
    "dbus",
    "sudo",
    "procps",
    "iproute2",
    "zstd",
];

/// dpkg filters that keep docs, man pages and translations out of the image
/// (copyright files stay: they are the licence record).
pub const DPKG_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
];

/// What determines a base root filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct BaseSpec {
    pub suite: String,
    pub arch: Arch,
    pub mirror: String,
    /// Sorted, deduplicated.
    pub packages: Vec<String>,
    pub initramfs_modules: Vec<String>,
    /// dm-verity root (`verity = true`): veritysetup and the local-top script
    /// go into the initramfs. Left out of the key when off, so images without
    /// verity keep their cached base.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verity: bool,
    /// `[data] encryption = "tpm2"`: the script that encrypts and opens the
    /// data partition goes into the initramfs. Out of the key when off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub luks: bool,
}

/// Facts recorded beside a cached base.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseMeta {
    pub key: String,
    pub created: u64,
    pub sha256: String,
    pub suite: String,
    pub arch: Arch,
    pub mirror: String,
    /// [`BaseSpec::family`]: bases of one family differ in packages only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Sorted, deduplicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<String>>,
    /// The key of the cached base this one was made from by applying the
    /// package difference; none when bootstrapped from nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental_from: Option<String>,
    /// For an incremental base: whether the cached base's initrd was kept
    /// (the package change left its inputs alone) or a new one made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_kept: Option<bool>,
}

pub struct Base {
    pub tar: PathBuf,
    pub meta: BaseMeta,
    pub reused: bool,
}

impl BaseSpec {
    /// Files laid into the target before any package is installed.
    fn files(&self) -> Vec<(&'static str, String, u32)> {
        let mut modules = self.initramfs_modules.join("\n");
        modules.push('\n');
        let mut files = vec![
            (
                "etc/initramfs-tools/conf.d/edgeimg.conf",
                INITRAMFS_CONF.to_string(),
                0o644,
            ),
            (
                "etc/initramfs-tools/scripts/local-bottom/edgeimg",
                LOCAL_BOTTOM.to_string(),
                0o755,
            ),
            (
                "usr/share/initramfs-tools/modules.d/edgeimg",
                modules,
                0o644,
            ),
        ];
        if self.verity {
            files.extend([
                (
                    "etc/initramfs-tools/hooks/edgeimg-verity",
                    VERITY_HOOK.to_string(),
                    0o755,
                ),
                (
                    "etc/initramfs-tools/scripts/local-top/edgeimg-verity",
                    VERITY_LOCAL_TOP.to_string(),
                    0o755,
                ),
            ]);
        }
        if self.luks {
            files.push((
                "etc/initramfs-tools/scripts/edgeimg-data-luks",
                DATA_LUKS.to_string(),
                0o644,
            ));
        }
        files
    }

    /// The cache key: a hash of every input of the bootstrap.
    pub fn key(&self) -> String {
        let files: Vec<_> = self
            .files()
            .into_iter()
            .map(|(p, c, m)| (p, sha256_bytes(c.as_bytes()), m))
            .collect();
        // apply-difference too: a base made by it is cached under this key.
        let hooks = [
            ESSENTIAL_DEFER,
            CUSTOMIZE_FINISH,
            NATIVE_TOOLS,
            APPLY_DIFFERENCE,
        ]
        .map(|h| sha256_bytes(h.as_bytes()));
        let v = serde_json::json!({ "format": BASE_FORMAT, "spec": self, "files": files, "dpkg": DPKG_EXCLUDES, "hooks": hooks });
        sha256_bytes(v.to_string().as_bytes())[..24].to_string()
    }

    /// The key of everything but the packages: bases of one family can be
    /// turned into each other by installing and removing packages.
    pub fn family(&self) -> String {
        BaseSpec {
            packages: vec![],
            ..self.clone()
        }
        .key()
    }

    fn package_set(&self) -> std::collections::BTreeSet<String> {
        self.packages.iter().cloned().collect()
    }
}

/// qemu-user's CPU for a foreign arm64 target, unless the caller chose one:
/// its default `max` CPU emulates pointer authentication with QARMA, which
/// every function of Debian's arm64 binaries uses; the implementation-defined
/// algorithm is cheaper and the results are the same (depmod under qemu-user:
/// 17 % less CPU time).
fn qemu_cpu(cpu: &str, arch: Arch) -> Option<&'static str> {
    (cpu == "foreign" && arch == Arch::Arm64 && std::env::var_os("QEMU_CPU").is_none())
        .then_some("max,pauth-impdef=on")
}

/// The directory sync-in creates for `rel`: its first two components
/// (`etc/initramfs-tools`, `usr/share`...), which hold only edgeimg's files
/// at setup time.
fn top_dir(rel: &str) -> String {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        ["usr", "share", d, ..] => format!("usr/share/{d}"),
        [a, b, _, ..] => format!("{a}/{b}"),
        _ => rel.to_string(),
    }
}

/// Returns the cached base for `spec`, bootstrapping it first if needed.
pub fn ensure(spec: &BaseSpec, cache: &Path, refresh: bool, progress: &Progress) -> Result<Base> {
    let key = spec.key();
    let dir = cache.join("base");
    let tar = dir.join(format!("{}-{}-{key}.tar", spec.suite, spec.arch));
    let meta_path = tar.with_extension("json");
    // Concurrent builds of the same base wait for one bootstrap.
    let _lock = crate::cache::Lock::acquire(&tar.with_extension("lock"))?;
    if !refresh && tar.exists() && meta_path.exists() {
        let meta: BaseMeta =
            serde_json::from_slice(&std::fs::read(&meta_path)?).with_context(|| {
                format!(
                    "corrupt cache entry {}; rerun with --refresh",
                    meta_path.display()
                )
            })?;
        progress.note(&format!(
            "base: reusing cached {} {} root ({})",
            spec.suite,
            spec.arch,
            tar.display()
        ));
        return Ok(Base {
            tar,
            meta,
            reused: true,
        });
    }
    if crate::rootless::is_inner() {
        // The outer half bootstrapped it; mmdebstrap cannot run as a namespace's root.
        anyhow::bail!(
            "base {} is not in the cache of this rootless build",
            tar.display()
        );
    }
    if let Some(problem) = crate::doctor::foreign_arch_problem(spec.arch) {
        anyhow::bail!(
            "cannot bootstrap an {} root on this {} host: {problem}",
            spec.arch,
            crate::doctor::host_arch()
        );
    }
    let work = tempfile::Builder::new()
        .prefix("edgeimg-base-")
        .tempdir_in(&dir)
        .context("cannot create a work directory in the cache")?;
    let hooks = work.path().join("hooks");
    std::fs::create_dir_all(&hooks)?;
    std::fs::write(hooks.join("essential-defer"), ESSENTIAL_DEFER)?;
    std::fs::write(hooks.join("customize-finish"), CUSTOMIZE_FINISH)?;
    std::fs::write(hooks.join("native-tools"), NATIVE_TOOLS)?;
    // The host's depmod indexes a foreign root; a native one indexes itself.
    let cpu = if spec.arch == crate::doctor::host_arch() {
        "native"
    } else {
        "foreign"
    };
    if cpu == "foreign" {
        cmd::require(&[cmd::PATCHELF])?;
    }
    let partial = work.path().join("base.tar");
    let mut incremental = None;
    // The chroot needs real root (a rootless build bootstraps from nothing);
    // --refresh asks for a bootstrap from nothing.
    if !refresh && crate::rootless::is_root() {
        incremental = try_incremental(spec, &dir, work.path(), cpu, &partial, progress);
    }
    if incremental.is_none() {
        bootstrap(spec, work.path(), cpu, &partial, progress)?;
    }
    let sha256 = crate::artifact::checksums::sha256_file(&partial)?;
    // The default epoch of images made from it (without SOURCE_DATE_EPOCH).
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let meta = BaseMeta {
        key,
        created,
        sha256,
        suite: spec.suite.clone(),
        arch: spec.arch,
        mirror: spec.mirror.clone(),
        family: Some(spec.family()),
        packages: Some(spec.package_set().into_iter().collect()),
        incremental_from: incremental.as_ref().map(|(key, _)| key.clone()),
        initrd_kept: incremental.map(|(_, kept)| kept),
    };
    // The tarball first, then its metadata: a base counts as cached only when both exist.
    std::fs::rename(&partial, &tar).with_context(|| format!("cannot store {}", tar.display()))?;
    let meta_tmp = work.path().join("meta.json");
    std::fs::write(&meta_tmp, serde_json::to_vec_pretty(&meta)?)?;
    std::fs::rename(&meta_tmp, &meta_path)?;
    Ok(Base {
        tar,
        meta,
        reused: false,
    })
}

/// mmdebstrap options that have the host's dpkg-deb, dpkg-split, tar, dash,
/// perl and everyday tools stand in for the target's for the whole install
/// (`native-tools`): set up once
/// the essential set is extracted, before dpkg installs anything; gone before
/// the customize hook that finishes the root.
fn native_install_hooks(script: &Path) -> [String; 2] {
    let script = script.display();
    [
        format!("--extract-hook=sh '{script}' --install \"$1\""),
        format!("--customize-hook=sh '{script}' --remove \"$1\""),
    ]
}

/// Makes the base from the closest cached one of its family, if there is one;
/// returns that base's key and whether its initrd was kept. A failure is reported and leaves the bootstrap
/// from nothing to the caller.
fn try_incremental(
    spec: &BaseSpec,
    dir: &Path,
    work: &Path,
    cpu: &str,
    partial: &Path,
    progress: &Progress,
) -> Option<(String, bool)> {
    let source = incremental::closest(dir, spec)?;
    progress.note(&format!(
        "base: incremental from cached base {}: adding [{}], dropping [{}]",
        source.key,
        source.add.join(" "),
        source.drop.join(" ")
    ));
    match incremental::apply(&source, work, &work.join("hooks"), cpu, partial, progress) {
        Ok(kept) => Some((source.key, kept)),
        Err(e) => {
            progress.note(&format!(
                "base: the incremental base failed ({e:#}); bootstrapping from nothing"
            ));
            let _ = std::fs::remove_dir_all(work.join("root"));
            let _ = std::fs::remove_file(partial);
            None
        }
    }
}

/// Bootstraps the base from nothing with mmdebstrap into `partial`.
fn bootstrap(
    spec: &BaseSpec,
    work: &Path,
    cpu: &str,
    partial: &Path,
    progress: &Progress,
) -> Result<()> {
    cmd::require(&[cmd::MMDEBSTRAP])?;
    let files = work.join("files");
    for (rel, content, mode) in spec.files() {
        let p = files.join(rel);
        std::fs::create_dir_all(p.parent().unwrap())?;
        std::fs::write(&p, content)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    }
    let essential_defer = work.join("hooks/essential-defer");
    let customize_finish = work.join("hooks/customize-finish");
    let mut packages = spec.packages.clone();
    packages.sort();
    packages.dedup();
    let mut c = Cmd::new(cmd::MMDEBSTRAP)
        .env("SOURCE_DATE_EPOCH", BASE_EPOCH.to_string())
        .arg("--variant=minbase")
        .arg(format!("--architectures={}", spec.arch))
        .arg(format!("--include={}", packages.join(",")))
        .arg("--aptopt=Acquire::Retries \"3\"")
        .arg("--components=main,non-free-firmware");
    if let Some(v) = qemu_cpu(cpu, spec.arch) {
        c = c.env("QEMU_CPU", v);
    }
    if !crate::rootless::is_root() {
        // Explicit, so a host without user namespaces fails here, clearly.
        c = c.arg("--mode=unshare");
    }
    for d in DPKG_EXCLUDES {
        c = c.arg(format!("--dpkgopt={d}"));
    }
    if cpu == "foreign" {
        c = c.args(native_install_hooks(&work.join("hooks/native-tools")));
    }
    c = c
        .arg(format!("--setup-hook=sync-in {} /", files.display()))
        // sync-in keeps the caller's owner: as a user that is its uid, not root.
        // Hooks run as root of mmdebstrap's namespace, so this makes them root's
        // as in a root-mode bootstrap (where it changes nothing).
        .arg(format!(
            "--setup-hook=chown -R 0:0 {}",
            spec.files()
                .iter()
                .map(|(rel, _, _)| format!("\"$1/{}\"", top_dir(rel)))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(" ")
        ))
        .arg(format!(
            "--essential-hook=sh '{}' \"$1\"",
            essential_defer.display()
        ))
        .arg(format!(
            "--customize-hook=sh '{}' \"$1\" {cpu}",
            customize_finish.display()
        ))
        .arg(&spec.suite)
        .arg(partial)
        .arg(&spec.mirror);
    progress.note(&format!(
        "base: bootstrapping Debian {} {} with mmdebstrap (cached for later builds)",
        spec.suite, spec.arch
    ));
    let bar = progress.spinner("mmdebstrap");
    c.run_streaming(&mut |line| bar.set_message(line.to_string()))
        .context("bootstrapping the base root filesystem failed")?;
    bar.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verity_off_leaves_the_key_and_files_alone() {
        let mut spec = BaseSpec {
            suite: "trixie".into(),
            arch: Arch::Amd64,
            mirror: "http://deb.debian.org/debian".into(),
            packages: vec!["busybox".into()],
            initramfs_modules: vec!["erofs".into()],
            verity: false,
            luks: false,
        };
        // The key of a base without verity is the one from before the field existed.
        let json = serde_json::to_value(&spec).unwrap();
        assert!(json.get("verity").is_none(), "{json}");
        assert_eq!(spec.files().len(), 3);
        let off = spec.key();
        spec.verity = true;
        assert_ne!(spec.key(), off);
        assert!(
            spec.files()
                .iter()
                .any(|(p, _, _)| p.ends_with("local-top/edgeimg-verity"))
        );
    }

    #[test]
    fn the_closest_base_of_the_family_is_chosen() {
        let spec = |packages: &[&str], verity: bool| BaseSpec {
            suite: "trixie".into(),
            arch: Arch::Amd64,
            mirror: "http://deb.debian.org/debian".into(),
            packages: packages.iter().map(|p| p.to_string()).collect(),
            initramfs_modules: vec![],
            verity,
            luks: false,
        };
        let dir = tempfile::tempdir().unwrap();
        let cache = |s: &BaseSpec| {
            let meta = BaseMeta {
                key: s.key(),
                created: 0,
                sha256: String::new(),
                suite: s.suite.clone(),
                arch: s.arch,
                mirror: s.mirror.clone(),
                family: Some(s.family()),
                packages: Some(s.packages.clone()),
                incremental_from: None,
                initrd_kept: None,
            };
            let stem = dir.path().join(s.key());
            std::fs::write(
                stem.with_extension("json"),
                serde_json::to_vec(&meta).unwrap(),
            )
            .unwrap();
            std::fs::write(stem.with_extension("tar"), b"").unwrap();
        };
        cache(&spec(&["a", "b", "c"], false));
        cache(&spec(&["a", "x", "y", "z"], false));
        // Nearest of all, but another family: verity changes the initramfs.
        cache(&spec(&["a", "b", "d"], true));
        let want = spec(&["a", "b", "d"], false);
        assert_eq!(want.family(), spec(&["q"], false).family());
        let source = incremental::closest(dir.path(), &want).unwrap();
        assert_eq!(source.key, spec(&["a", "b", "c"], false).key());
        assert_eq!(source.add, ["d"]);
        assert_eq!(source.drop, ["c"]);
        // A base without a family (older format) is never a source.
        let other = spec(&["k"], false);
        let stem = dir.path().join("old");
        std::fs::write(
            stem.with_extension("json"),
            r#"{"key":"old","created":0,"sha256":"","suite":"trixie","arch":"amd64","mirror":""}"#,
        )
        .unwrap();
        std::fs::write(stem.with_extension("tar"), b"").unwrap();
        assert_ne!(incremental::closest(dir.path(), &other).unwrap().key, "old");
    }

    #[test]
    fn the_chown_hook_covers_every_synced_file() {
        let spec = BaseSpec {
            suite: "trixie".into(),
            arch: Arch::Amd64,
            mirror: "http://deb.debian.org/debian".into(),
            packages: vec![],
            initramfs_modules: vec![],
            verity: true,
            luks: true,
        };
        for (rel, _, _) in spec.files() {
            let top = top_dir(rel);
            assert!(rel.starts_with(&format!("{top}/")), "{rel} not under {top}");
            // Never a directory packages also fill at setup time.
            assert!(
                !["etc", "usr", "usr/share"].contains(&top.as_str()),
                "{top}"
            );
        }
    }
}
