//! Operator overlays: directory trees copied onto the root. Files ending in
//! `.j2` are rendered with minijinja (suffix dropped). Everything is owned by
//! root; modes and symlinks are kept.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::in_root::InRoot;
use crate::context::Ctx;

/// Each overlay with the files it placed and their SHA-256
/// (`symlink:<target>` for a link), for the manifest.
pub type OverlayFiles = Vec<(PathBuf, Vec<(String, String)>)>;

/// Host directories that are never an overlay: copying them would put the
/// build host's own system files (and secrets such as /etc/shadow) into the
/// image. Anything under the first group is refused too.
const HOST_TREES_AND_BELOW: &[&str] = &["/etc", "/proc", "/sys", "/dev", "/run", "/boot"];
const HOST_TREES: &[&str] = &[
    "/", "/usr", "/var", "/bin", "/sbin", "/lib", "/lib64", "/home", "/root", "/tmp",
];

/// Checks every overlay before the build starts (the bootstrap takes
/// minutes): no host system directory, nothing but regular files,
/// directories and symlinks. Returns the setuid/setgid files found, which
/// [`apply`] places without those bits.
pub fn preflight(overlays: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut set_id = Vec::new();
    for o in overlays {
        let real = std::fs::canonicalize(o)
            .with_context(|| format!("cannot read overlay {}", o.display()))?;
        let host = HOST_TREES.iter().any(|h| real == Path::new(h))
            || HOST_TREES_AND_BELOW.iter().any(|h| real.starts_with(h));
        anyhow::ensure!(
            !host,
            "overlay {} is the build host's system directory {}; an overlay holds only the files to add",
            o.display(),
            real.display()
        );
        check_tree(o, &mut set_id)?;
    }
    Ok(set_id)
}

fn check_tree(dir: &Path, set_id: &mut Vec<PathBuf>) -> Result<()> {
    for e in
        std::fs::read_dir(dir).with_context(|| format!("cannot read overlay {}", dir.display()))?
    {
        let path = e
            .with_context(|| format!("cannot read overlay {}", dir.display()))?
            .path();
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("cannot read overlay entry {}", path.display()))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            check_tree(&path, set_id)?;
        } else if ft.is_file() {
            if meta.mode() & 0o6000 != 0 {
                set_id.push(path);
            }
        } else {
            anyhow::ensure!(
                ft.is_symlink(),
                "overlay entry {} is {}; an overlay may hold only files, directories and symlinks",
                path.display(),
                special_kind(&ft)
            );
        }
    }
    Ok(())
}

fn special_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_char_device() {
        "a character device"
    } else {
        "a special file"
    }
}

/// Every overlay of the config, in order, into `tree`.
pub fn apply_all(ctx: &Ctx, tree: &Path) -> Result<OverlayFiles> {
    let cfg = ctx.cfg;
    let vars = minijinja::context! {
        image => minijinja::context! { name => &cfg.name, board => &cfg.board.name, arch => cfg.board.arch.debian(), suite => &cfg.suite },
        users => cfg.users.iter().map(|u| u.name.clone()).collect::<Vec<_>>(),
    };
    let mut out = Vec::new();
    for o in &cfg.overlays {
        out.push((o.clone(), apply_hashed(o, tree, &vars)?));
    }
    Ok(out)
}

/// Applies `src` onto `tree`; returns the files placed (relative paths).
pub fn apply(src: &Path, tree: &Path, ctx: &minijinja::Value) -> Result<Vec<String>> {
    Ok(apply_hashed(src, tree, ctx)?
        .into_iter()
        .map(|(f, _)| f)
        .collect())
}

/// [`apply`], with each placed file's SHA-256 (`symlink:<target>` for a
/// link), taken from the bytes written rather than read back by a path.
///
/// Every write goes through [`InRoot`]: the base's absolute symlinks
/// (`var/run -> /run`) resolve inside the tree, so no overlay path can
/// reach the build host's files.
pub fn apply_hashed(
    src: &Path,
    tree: &Path,
    ctx: &minijinja::Value,
) -> Result<Vec<(String, String)>> {
    let root = InRoot::open(tree)?;
    let mut placed = Vec::new();
    walk(src, src, &root, ctx, &mut placed)?;
    placed.sort();
    Ok(placed)
}

fn walk(
    src_root: &Path,
    dir: &Path,
    root: &InRoot,
    ctx: &minijinja::Value,
    placed: &mut Vec<(String, String)>,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read overlay {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(src_root).unwrap();
        let meta = std::fs::symlink_metadata(&path)?;
        let mut dest = rel.to_path_buf();
        let ft = meta.file_type();
        if ft.is_dir() {
            root.mkdir(&dest, meta.mode() & 0o7777)?;
            walk(src_root, &path, root, ctx, placed)?;
            continue;
        }
        let dest_is_dir = root
            .lstat(&dest)
            .with_context(|| format!("cannot read {}", root.show(&dest).display()))?
            .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        if dest_is_dir && !ft.is_symlink() {
            anyhow::bail!(
                "overlay file {} would replace the directory {}",
                path.display(),
                root.show(&dest).display()
            );
        }
        let sha = if ft.is_symlink() {
            let target = std::fs::read_link(&path)?;
            root.symlink(&dest, &target)?;
            format!("symlink:{}", target.display())
        } else if ft.is_file() {
            let content =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let content = if path.extension().is_some_and(|x| x == "j2") {
                dest.set_extension("");
                let text = String::from_utf8(content)
                    .with_context(|| format!("template {} is not UTF-8", path.display()))?;
                render(&text, &path, ctx)?.into_bytes()
            } else {
                content
            };
            // Setuid/setgid bits are dropped (preflight warned): an overlay
            // must not add privileged programs to the image.
            root.write_file(&dest, &content, meta.mode() & 0o1777)?;
            {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(&content))
            }
        } else {
            anyhow::bail!(
                "overlay entry {} is not a file, directory or symlink",
                path.display()
            );
        };
        placed.push((dest.display().to_string(), sha));
    }
    Ok(())
}

fn render(text: &str, path: &Path, ctx: &minijinja::Value) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // Config files end in a newline; keep it.
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("default syntax builds"),
    );
    env.render_str(text, ctx)
        .map_err(|e| anyhow::anyhow!("template {}: {e:#}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The base's `var/run -> /run` (an absolute link, as in Debian): an
    /// overlay writing `var/run/...` lands in the tree's own `run/`, never
    /// in the host's. Here "the host's /run" is a directory beside the tree
    /// that the link names by absolute path: with host path resolution the
    /// overlay file would be written (and a file there replaced) in it.
    #[test]
    fn an_overlay_through_an_absolute_base_link_stays_in_the_tree() {
        let host = tempfile::tempdir().unwrap();
        let tree = host.path().join("tree");
        let host_run = host.path().join("run");
        std::fs::create_dir_all(tree.join("var")).unwrap();
        std::fs::create_dir_all(tree.join(host_run.strip_prefix("/").unwrap())).unwrap();
        std::fs::create_dir_all(&host_run).unwrap();
        std::fs::write(host_run.join("victim"), "host file\n").unwrap();
        std::os::unix::fs::symlink(&host_run, tree.join("var/run")).unwrap();
        let src = host.path().join("overlay");
        std::fs::create_dir_all(src.join("var/run/sub")).unwrap();
        std::fs::write(src.join("var/run/victim"), "from overlay\n").unwrap();
        std::fs::write(src.join("var/run/sub/new"), "new\n").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", src.join("var/run/link")).unwrap();
        let placed = apply_hashed(&src, &tree, &minijinja::context! {}).unwrap();
        // Nothing changed or appeared in the host's directory.
        let names: Vec<_> = std::fs::read_dir(&host_run)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["victim"]);
        assert_eq!(
            std::fs::read_to_string(host_run.join("victim")).unwrap(),
            "host file\n"
        );
        // The files are in the tree, where the link leads inside it.
        let inside = tree.join(host_run.strip_prefix("/").unwrap());
        assert_eq!(
            std::fs::read_to_string(inside.join("victim")).unwrap(),
            "from overlay\n"
        );
        assert_eq!(
            std::fs::read_to_string(inside.join("sub/new")).unwrap(),
            "new\n"
        );
        assert_eq!(
            placed.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
            ["var/run/link", "var/run/sub/new", "var/run/victim"]
        );
        assert_eq!(placed[0].1, "symlink:/etc/shadow");
    }

    #[test]
    fn setuid_files_are_reported_and_placed_without_the_bits() {
        let src = tempfile::tempdir().unwrap();
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("usr/bin")).unwrap();
        let su = src.path().join("usr/bin/su2");
        std::fs::write(&su, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&su, std::fs::Permissions::from_mode(0o6755)).unwrap();
        std::fs::write(src.path().join("usr/bin/plain"), "x").unwrap();
        assert_eq!(preflight(&[src.path().to_path_buf()]).unwrap(), vec![su]);
        apply(src.path(), tree.path(), &minijinja::context! {}).unwrap();
        let mode = std::fs::metadata(tree.path().join("usr/bin/su2"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    #[test]
    fn special_files_and_host_trees_are_refused() {
        let src = tempfile::tempdir().unwrap();
        let sock = src.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = preflight(&[src.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.sock") && e.contains("a socket"), "{e}");
        for host in ["/", "/etc", "/etc/ssh", "/usr"] {
            let e = preflight(&[PathBuf::from(host)]).unwrap_err().to_string();
            assert!(e.contains("system directory"), "{host}: {e}");
        }
    }

    #[test]
    fn copies_and_renders() {
        let src = tempfile::tempdir().unwrap();
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("etc/motd.d")).unwrap();
        std::fs::write(
            src.path().join("etc/motd.d/hello.j2"),
            "image {{ image.name }}\n",
        )
        .unwrap();
        std::fs::write(src.path().join("etc/plain"), "x").unwrap();
        std::os::unix::fs::symlink("plain", src.path().join("etc/link")).unwrap();
        let ctx = minijinja::context! { image => minijinja::context! { name => "demo" } };
        let placed = apply(src.path(), tree.path(), &ctx).unwrap();
        assert_eq!(
            std::fs::read_to_string(tree.path().join("etc/motd.d/hello")).unwrap(),
            "image demo\n"
        );
        assert_eq!(
            std::fs::read_link(tree.path().join("etc/link"))
                .unwrap()
                .to_str(),
            Some("plain")
        );
        assert_eq!(placed, vec!["etc/link", "etc/motd.d/hello", "etc/plain"]);
    }

    #[test]
    fn undefined_template_variable_is_an_error() {
        let src = tempfile::tempdir().unwrap();
        let tree = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("x.j2"), "{{ nope }}").unwrap();
        let e = apply(src.path(), tree.path(), &minijinja::context! {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.j2"), "{e}");
    }
}
