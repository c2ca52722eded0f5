//! Kernel modules and firmware trimmed to what the board names.
//!
//! A board file lists the modules it needs (`modules = [...]`): module names
//! (`virtio_blk`, `usb-storage`), or paths under the module tree
//! (`kernel/net` keeps the whole directory, `kernel/drivers/net/*.ko*` a
//! glob); an entry starting with `!` takes modules out of what the others
//! selected (`"!kernel/net/wireless"`). The build keeps their closure — hard dependencies from
//! `modules.dep`, soft and weak dependencies from `modules.softdep` and
//! `modules.weakdep` — deletes every other module and runs `depmod` for the
//! kept set, so `modprobe` on the device sees a consistent tree. The
//! initramfs is made when the base is bootstrapped, from the full set, so
//! trimming the root never touches early boot. Firmware (`firmware_files = [...]`,
//! paths or globs under /usr/lib/firmware) is kept only where named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};

use super::in_root::InRoot;

use crate::cmd::{self, Cmd};

/// What trimming did (for the build log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub kept: usize,
    pub removed: usize,
    pub bytes_removed: u64,
}

/// Compression suffixes Debian kernels use for module files.
const SUFFIXES: &[&str] = &[".xz", ".zst", ".gz"];

/// `kernel/fs/ext4/ext4.ko.xz` -> `ext4`; dashes and underscores are the same
/// to the kernel, so names are kept with underscores.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn strip_suffix(path: &str) -> &str {
    SUFFIXES
        .iter()
        .find_map(|s| path.strip_suffix(s))
        .unwrap_or(path)
}

/// Shell-style glob: `*` and `?` within one path segment, `**` across segments.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let rest = &p[2..];
                let rest = rest.strip_prefix(b"/").unwrap_or(rest);
                (0..=t.len()).any(|i| go(rest, &t[i..]))
            }
            Some(b'*') => {
                let mut i = 0;
                loop {
                    if go(&p[1..], &t[i..]) {
                        return true;
                    }
                    if i == t.len() || t[i] == b'/' {
                        return false;
                    }
                    i += 1;
                }
            }
            Some(b'?') => !t.is_empty() && t[0] != b'/' && go(&p[1..], &t[1..]),
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Whether an entry with a `/` selects `path` (relative to the module or
/// firmware directory): a glob, or a plain path naming a file or directory.
fn path_selects(entry: &str, path: &str) -> bool {
    let entry = entry.trim_end_matches('/');
    if entry.contains(['*', '?']) {
        glob_match(entry, path) || glob_match(entry, strip_suffix(path))
    } else {
        path == entry || strip_suffix(path) == entry || path.starts_with(&format!("{entry}/"))
    }
}

/// The module index of one kernel: modules.dep plus names, aliases and soft deps.
struct Index {
    /// Module path -> the paths it depends on.
    deps: BTreeMap<String, Vec<String>>,
    by_name: BTreeMap<String, String>,
    builtin: BTreeSet<String>,
    /// Exact (wildcard-free) alias -> module names.
    aliases: BTreeMap<String, Vec<String>>,
    /// Module name -> names from softdep pre/post and weakdep lines.
    soft: BTreeMap<String, Vec<String>>,
}

impl Index {
    /// The index files of the kernel directory `dir` (relative to the
    /// tree), each read through `root`: a link among them resolves inside
    /// the tree, never to the build host's own files.
    fn read(root: &InRoot, dir: &Path) -> Result<Index> {
        let read = |f: &str| {
            root.read_to_string(&dir.join(f))?
                .with_context(|| format!("{} is missing", root.show(&dir.join(f)).display()))
        };
        let optional = |f: &str| -> Result<String> {
            Ok(root.read_to_string(&dir.join(f))?.unwrap_or_default())
        };
        let mut deps = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        for line in read("modules.dep")?.lines() {
            let Some((m, d)) = line.split_once(':') else {
                continue;
            };
            by_name.insert(module_name(m), m.to_string());
            deps.insert(
                m.to_string(),
                d.split_whitespace().map(str::to_string).collect(),
            );
        }
        let builtin = optional("modules.builtin")?
            .lines()
            .map(module_name)
            .collect();
        let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in optional("modules.alias")?.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(a), Some(m)) = (w.next(), w.next(), w.next()) {
                if !a.contains(['*', '?', '[']) {
                    aliases.entry(a.to_string()).or_default().push(normalize(m));
                }
            }
        }
        let mut soft: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let (softdep, weakdep) = (optional("modules.softdep")?, optional("modules.weakdep")?);
        for line in softdep.lines().chain(weakdep.lines()) {
            let mut w = line.split_whitespace();
            if let (Some("softdep" | "weakdep"), Some(m)) = (w.next(), w.next()) {
                soft.entry(normalize(m))
                    .or_default()
                    .extend(w.filter(|x| !x.ends_with(':')).map(str::to_string));
            }
        }
        Ok(Index {
            deps,
            by_name,
            builtin,
            aliases,
            soft,
        })
    }

    /// Module paths a name (or alias) stands for; `None` if it is unknown.
    fn resolve(&self, name: &str) -> Option<Vec<String>> {
        let n = normalize(name);
        if let Some(p) = self.by_name.get(&n) {
            return Some(vec![p.clone()]);
        }
        if self.builtin.contains(&n) {
            return Some(Vec::new());
        }
        let names = self.aliases.get(name)?;
        Some(
            names
                .iter()
                .filter_map(|m| self.by_name.get(m).cloned())
                .collect(),
        )
    }

    /// Module paths one entry (a path/glob or a name/alias) selects. Every
    /// entry must select something: a typo would otherwise drop (or keep) a
    /// module silently.
    fn select_one(&self, w: &str) -> std::result::Result<Vec<String>, String> {
        if w.contains('/') {
            let hits: Vec<_> = self
                .deps
                .keys()
                .filter(|p| path_selects(w, p))
                .cloned()
                .collect();
            if hits.is_empty() {
                return Err(format!("`{w}` matches no module file"));
            }
            Ok(hits)
        } else {
            self.resolve(w).ok_or_else(|| {
                format!("`{w}` is neither a module, a built-in module nor a module alias")
            })
        }
    }

    /// `wanted` entries to module paths (before the closure), and the paths
    /// `!` entries exclude (checked against the closure by [`Index::keep`]).
    fn select(
        &self,
        wanted: &[String],
    ) -> std::result::Result<(BTreeSet<String>, BTreeMap<String, String>), String> {
        let mut out = BTreeSet::new();
        let mut excluded = BTreeMap::new();
        for w in wanted {
            match w.strip_prefix('!') {
                Some(x) => {
                    for p in self.select_one(x)? {
                        excluded.insert(p, w.clone());
                    }
                }
                None => out.extend(self.select_one(w)?),
            }
        }
        out.retain(|p| !excluded.contains_key(p));
        Ok((out, excluded))
    }

    /// The selection's closure; an error when it needs an excluded module
    /// (removing that module would break the one that needs it at load time).
    fn keep(&self, wanted: &[String]) -> std::result::Result<BTreeSet<String>, String> {
        let (start, excluded) = self.select(wanted)?;
        let kept = self.closure(start);
        for p in &kept {
            if let Some(entry) = excluded.get(p) {
                let users: Vec<String> = kept
                    .iter()
                    .filter(|k| self.deps.get(*k).is_some_and(|d| d.contains(p)))
                    .map(|k| module_name(k))
                    .collect();
                return Err(format!(
                    "`{entry}` excludes {}, which kept modules need ({}); exclude those too",
                    module_name(p),
                    if users.is_empty() {
                        "as a soft dependency".to_string()
                    } else {
                        users.join(", ")
                    }
                ));
            }
        }
        Ok(kept)
    }

    /// The selection plus everything it needs.
    fn closure(&self, start: BTreeSet<String>) -> BTreeSet<String> {
        let mut kept = BTreeSet::new();
        let mut todo: Vec<String> = start.into_iter().collect();
        while let Some(p) = todo.pop() {
            if !kept.insert(p.clone()) {
                continue;
            }
            todo.extend(self.deps.get(&p).into_iter().flatten().cloned());
            for s in self.soft.get(&module_name(&p)).into_iter().flatten() {
                // Soft dependencies are optional: unknown names are skipped.
                todo.extend(self.resolve(s).into_iter().flatten());
            }
        }
        kept
    }
}

/// Keeps the closure of `wanted` in `tree`'s modules for kernel `version`
/// and runs depmod. `source` names the board file for errors. depmod reads
/// every kept module (decompressing each .ko.xz: ~3.5 s of CPU for the x86_64
/// set), so its output is cached under `cache` keyed by `base_key` (which
/// fixes the modules' bytes) and the kept set.
pub fn trim_modules(
    tree: &Path,
    version: &str,
    wanted: &[String],
    source: &str,
    base_key: &str,
    cache: &Path,
) -> Result<Trimmed> {
    // Read and trimmed where it is inside the tree: removals and the index
    // files go through InRoot, and the directory's own path is checked.
    let root = InRoot::open(tree)?;
    let rel = Path::new("usr/lib/modules").join(version);
    let dir = root
        .host_dir(&rel)?
        .with_context(|| format!("{}: no such directory", root.show(&rel).display()))?;
    let index = Index::read(&root, &rel)?;
    let kept = index.keep(wanted).map_err(|e| {
        anyhow::anyhow!(
            "{source}: modules entry {e} in kernel {version} ({})",
            dir.display()
        )
    })?;
    let mut t = Trimmed {
        kept: kept.len(),
        ..Trimmed::default()
    };
    for p in index.deps.keys().filter(|p| !kept.contains(*p)) {
        if let Some(st) = root.lstat(&rel.join(p))? {
            t.bytes_removed += st.st_size as u64;
            root.remove(&rel.join(p))?;
            t.removed += 1;
        }
    }
    if let Some(kernel) = root.host_dir(&rel.join("kernel"))? {
        remove_empty_dirs(&kernel)?;
    }
    filter_weakdep(&root, &rel, &index, &kept)?;
    let key = {
        let listing: Vec<&str> = kept.iter().map(String::as_str).collect();
        let v = serde_json::json!({ "base": base_key, "version": version, "kept": listing });
        crate::artifact::checksums::sha256_bytes(v.to_string().as_bytes())[..24].to_string()
    };
    let cached = cache.join(&key);
    if !cached.is_dir() {
        depmod_into_cache(&root, &dir, version, &cached)?;
    }
    // Both a fresh and a cached build put the index into the tree the same
    // way: directory history decides mkfs.erofs' inode order, so writing the
    // files any other way would make the two builds' images differ.
    for e in std::fs::read_dir(&cached)? {
        let e = e?;
        let bytes = std::fs::read(e.path())
            .with_context(|| format!("cannot read {}", e.path().display()))?;
        root.write_file(&rel.join(e.file_name()), &bytes, 0o644)?;
    }
    Ok(t)
}

/// Runs the host's depmod (pointed at the tree's own configuration, so no
/// foreign-architecture binary runs) on a scratch tree of hard links to the
/// trimmed modules in `moddir_host` (the kernel's directory, resolved inside
/// the tree), and stores the index files it writes in `cached` (written aside,
/// then renamed: never half there).
fn depmod_into_cache(
    root: &InRoot,
    moddir_host: &Path,
    version: &str,
    cached: &Path,
) -> Result<()> {
    let cache = cached.parent().expect("cache entry has a parent");
    std::fs::create_dir_all(cache)?;
    let scratch = tempfile::Builder::new()
        .prefix(".depmod-")
        .tempdir_in(cache)?;
    let moddir = Path::new("usr/lib/modules").join(version);
    link_tree(moddir_host, &scratch.path().join(&moddir))?;
    // depmod looks under BASE/lib/modules; merged-/usr trees link lib to usr/lib.
    std::os::unix::fs::symlink("usr/lib", scratch.path().join("lib"))?;
    let conf = tempfile::tempdir()?;
    // The configuration is read through the tree (a link in it resolves
    // inside the tree; one that leads nowhere there is skipped).
    for d in ["etc/depmod.d", "usr/lib/depmod.d", "lib/depmod.d"] {
        let Ok(Some(host)) = root.host_dir(Path::new(d)) else {
            continue;
        };
        for e in std::fs::read_dir(host)?.flatten() {
            if let Some(text) = root.read_to_string(&Path::new(d).join(e.file_name()))? {
                std::fs::write(conf.path().join(e.file_name()), text)?;
            }
        }
    }
    Cmd::new(cmd::DEPMOD)
        .arg("-a")
        .arg("-b")
        .arg(scratch.path())
        .arg("-C")
        .arg(conf.path())
        .arg(version)
        .run()
        .context("depmod for the trimmed module set failed")?;
    let part = tempfile::Builder::new()
        .prefix(".part-")
        .tempdir_in(cache)?;
    let out = scratch.path().join(&moddir);
    for e in std::fs::read_dir(&out)? {
        let e = e?;
        if e.file_type()?.is_file() && e.file_name().to_string_lossy().starts_with("modules.") {
            std::fs::copy(e.path(), part.path().join(e.file_name()))?;
        }
    }
    let part = part.keep();
    if std::fs::rename(&part, cached).is_err() {
        let _ = std::fs::remove_dir_all(&part); // another build cached it first
    }
    Ok(())
}

/// Mirrors `src` at `dst` with hard links (a copy where linking fails):
/// depmod replaces its output files by rename, so the tree is never written.
fn link_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let ft = e.file_type()?;
        if ft.is_dir() {
            link_tree(&from, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        }
    }
    Ok(())
}

/// The host's depmod may predate modules.weakdep and leave it as it was:
/// drop the lines of removed modules so the file only names what is there.
fn filter_weakdep(root: &InRoot, dir: &Path, index: &Index, kept: &BTreeSet<String>) -> Result<()> {
    let f = dir.join("modules.weakdep");
    let Ok(Some(text)) = root.read_to_string(&f) else {
        return Ok(());
    };
    let kept_names: BTreeSet<String> = kept.iter().map(|p| module_name(p)).collect();
    let out: String = text
        .lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next()) {
                (Some("weakdep"), Some(m)) => {
                    kept_names.contains(&normalize(m)) || index.builtin.contains(&normalize(m))
                }
                _ => true,
            }
        })
        .map(|l| format!("{l}\n"))
        .collect();
    root.write_file(&f, out.as_bytes(), 0o644)
}

/// Keeps the firmware files `wanted` selects under /usr/lib/firmware.
pub fn trim_firmware(tree: &Path, wanted: &[String], source: &str) -> Result<Trimmed> {
    let root = InRoot::open(tree)?;
    let rel = Path::new("usr/lib/firmware");
    let mut t = Trimmed::default();
    let Some(dir) = root.host_dir(rel)? else {
        return Ok(t);
    };
    let mut files = Vec::new();
    walk(&dir, &dir, &mut files)?;
    for w in wanted {
        if !files.iter().any(|f| path_selects(w, f)) {
            anyhow::bail!(
                "{source}: firmware_files entry `{w}` matches no file under {}",
                dir.display()
            );
        }
    }
    for f in &files {
        if wanted.iter().any(|w| path_selects(w, f)) {
            t.kept += 1;
        } else {
            let p = rel.join(f);
            t.bytes_removed += root.lstat(&p)?.map_or(0, |st| st.st_size as u64);
            root.remove(&p)?;
            t.removed += 1;
        }
    }
    remove_empty_dirs(&dir)?;
    Ok(t)
}

/// Files (and symlinks) under `dir`, relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            walk(root, &e.path(), out)?;
        } else {
            let rel = e.path().strip_prefix(root)?.to_string_lossy().into_owned();
            out.push(rel);
        }
    }
    Ok(())
}

/// Removes directories left empty below `dir` (not `dir` itself).
fn remove_empty_dirs(dir: &Path) -> Result<bool> {
    let mut empty = true;
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type()?.is_dir() && remove_empty_dirs(&e.path())? {
            std::fs::remove_dir(e.path())?;
        } else {
            empty = false;
        }
    }
    Ok(empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("kernel/net/**", "kernel/net/ipv4/x.ko.xz"));
        assert!(glob_match(
            "kernel/drivers/*/veth.ko",
            "kernel/drivers/net/veth.ko"
        ));
        assert!(!glob_match(
            "kernel/drivers/*.ko",
            "kernel/drivers/net/veth.ko"
        ));
        assert!(glob_match(
            "**/virtio_*.ko*",
            "kernel/drivers/block/virtio_blk.ko.xz"
        ));
        assert!(path_selects("kernel/net", "kernel/net/bridge/bridge.ko.xz"));
        assert!(!path_selects("kernel/ne", "kernel/net/bridge/bridge.ko.xz"));
        assert!(path_selects(
            "kernel/drivers/net/veth.ko",
            "kernel/drivers/net/veth.ko.xz"
        ));
    }

    fn fake_tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("usr/lib/modules/6.1-test");
        for m in [
            "kernel/fs/ext4/ext4.ko.xz",
            "kernel/fs/jbd2/jbd2.ko.xz",
            "kernel/arch/x86/crc32c-intel.ko.xz",
            "kernel/crypto/crc32c_generic.ko.xz",
            "kernel/drivers/gpu/big.ko.xz",
            "kernel/drivers/net/veth.ko.xz",
        ] {
            std::fs::create_dir_all(d.join(m).parent().unwrap()).unwrap();
            std::fs::write(d.join(m), b"x").unwrap();
        }
        std::fs::write(
            d.join("modules.dep"),
            "kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz\n\
             kernel/fs/jbd2/jbd2.ko.xz:\n\
             kernel/arch/x86/crc32c-intel.ko.xz:\n\
             kernel/crypto/crc32c_generic.ko.xz:\n\
             kernel/drivers/gpu/big.ko.xz:\n\
             kernel/drivers/net/veth.ko.xz:\n",
        )
        .unwrap();
        std::fs::write(
            d.join("modules.builtin"),
            "kernel/drivers/virtio/virtio_pci.ko\n",
        )
        .unwrap();
        std::fs::write(
            d.join("modules.softdep"),
            "# soft\nsoftdep ext4 pre: crypto-crc32c\nsoftdep veth pre: missing_thing\n",
        )
        .unwrap();
        std::fs::write(
            d.join("modules.alias"),
            "alias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\nalias pci:v*d* big\n",
        )
        .unwrap();
        t
    }

    const FAKE: &str = "usr/lib/modules/6.1-test";

    fn fake_index(t: &tempfile::TempDir) -> Result<Index> {
        Index::read(&InRoot::open(t.path())?, Path::new(FAKE))
    }

    #[test]
    fn the_index_is_read_inside_the_tree() {
        // modules.dep a link to an absolute path: the build host's file of
        // that name is never what is read, the tree's is.
        let t = fake_tree();
        let host = tempfile::tempdir().unwrap();
        let outside = host.path().join("modules.dep");
        std::fs::write(&outside, "kernel/host-only.ko:\n").unwrap();
        let dep = t.path().join(FAKE).join("modules.dep");
        std::fs::remove_file(&dep).unwrap();
        std::os::unix::fs::symlink(&outside, &dep).unwrap();
        let e = fake_index(&t).err().unwrap().to_string();
        assert!(e.contains("modules.dep is missing"), "{e}");
        let inside = t.path().join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::write(&inside, "kernel/tree-only.ko:\n").unwrap();
        let idx = fake_index(&t).unwrap();
        assert_eq!(idx.deps.keys().collect::<Vec<_>>(), ["kernel/tree-only.ko"]);
    }

    #[test]
    fn a_kernel_directory_linked_out_of_the_tree_is_refused() {
        // `kernel` a link to a host directory: emptied directories are
        // removed below it, so it must not lead out of the tree.
        let t = fake_tree();
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir(host.path().join("empty")).unwrap();
        let kernel = t.path().join(FAKE).join("kernel");
        std::fs::rename(&kernel, t.path().join("kernel.real")).unwrap();
        std::os::unix::fs::symlink(host.path(), &kernel).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let e = trim_modules(
            t.path(),
            "6.1-test",
            &["ext4".into()],
            "test",
            "k",
            cache.path(),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("leads out of the tree"), "{e:#}");
        assert!(host.path().join("empty").is_dir());
    }

    #[test]
    fn closure_follows_dep_and_softdep_through_aliases() {
        let t = fake_tree();
        let idx = fake_index(&t).unwrap();
        let kept = idx
            .keep(&[
                "ext4".into(),
                "virtio_pci".into(),
                "kernel/drivers/net".into(),
            ])
            .unwrap();
        let names: BTreeSet<_> = kept.iter().map(|p| module_name(p)).collect();
        let want: BTreeSet<_> = ["ext4", "jbd2", "crc32c_intel", "crc32c_generic", "veth"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, want);
    }

    #[test]
    fn unknown_entries_are_errors() {
        let t = fake_tree();
        let idx = fake_index(&t).unwrap();
        let e = idx.select(&["ext5".into()]).unwrap_err();
        assert!(e.contains("`ext5`"), "{e}");
        let e = idx.select(&["kernel/sound".into()]).unwrap_err();
        assert!(e.contains("matches no module"), "{e}");
        // Dashes and underscores are one.
        assert!(idx.select(&["crc32c_intel".into()]).is_ok());
        let e = idx
            .keep(&["ext4".into(), "!kernel/sound".into()])
            .unwrap_err();
        assert!(e.contains("`kernel/sound` matches no module"), "{e}");
    }

    #[test]
    fn exclusions_take_modules_out_unless_a_kept_one_needs_them() {
        let t = fake_tree();
        let idx = fake_index(&t).unwrap();
        let names = |kept: BTreeSet<String>| -> Vec<String> {
            kept.iter().map(|p| module_name(p)).collect()
        };
        // A directory kept whole, one file of it taken out again.
        let kept = idx
            .keep(&["kernel/drivers".into(), "!kernel/drivers/gpu".into()])
            .unwrap();
        assert_eq!(names(kept), ["veth"]);
        // Order does not matter: an exclusion wins over a later inclusion.
        let kept = idx.keep(&["!big".into(), "kernel/drivers".into()]).unwrap();
        assert_eq!(names(kept), ["veth"]);
        // ext4 needs jbd2: excluding it is an error naming both.
        let e = idx.keep(&["ext4".into(), "!jbd2".into()]).unwrap_err();
        assert!(
            e.contains("`!jbd2` excludes jbd2") && e.contains("ext4"),
            "{e}"
        );
        // A soft dependency the closure pulls in is reported too.
        let e = idx
            .keep(&["ext4".into(), "!kernel/crypto".into()])
            .unwrap_err();
        assert!(
            e.contains("crc32c_generic") && e.contains("soft dependency"),
            "{e}"
        );
    }

    #[test]
    fn firmware_keeps_only_named_files() {
        let t = tempfile::tempdir().unwrap();
        let fw = t.path().join("usr/lib/firmware");
        std::fs::create_dir_all(fw.join("brcm")).unwrap();
        std::fs::create_dir_all(fw.join("amdgpu")).unwrap();
        std::fs::write(fw.join("brcm/a.bin"), b"a").unwrap();
        std::fs::write(fw.join("amdgpu/b.bin"), b"bb").unwrap();
        let r = trim_firmware(t.path(), &["brcm/*".into()], "board").unwrap();
        assert_eq!((r.kept, r.removed, r.bytes_removed), (1, 1, 2));
        assert!(fw.join("brcm/a.bin").exists());
        assert!(!fw.join("amdgpu").exists());
        let e = trim_firmware(t.path(), &["nope/*".into()], "boards/x.toml").unwrap_err();
        assert!(format!("{e}").contains("boards/x.toml: firmware_files entry `nope/*`"));
    }
}
