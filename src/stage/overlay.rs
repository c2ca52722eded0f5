//! Operator overlays: directory trees copied onto the root. Files ending in
//! `.j2` are rendered with minijinja (suffix dropped). Everything is owned by
//! root; modes and symlinks are kept.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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
        image => minijinja::context! { name => &cfg.name, board => &cfg.board.name, arch => &cfg.board.arch, suite => &cfg.suite },
        users => cfg.users.iter().map(|u| u.name.clone()).collect::<Vec<_>>(),
    };
    let mut out = Vec::new();
    for o in &cfg.overlays {
        let mut hashed = Vec::new();
        for f in apply(o, tree, &vars)? {
            let p = tree.join(&f);
            let sha = if p.is_symlink() {
                format!("symlink:{}", std::fs::read_link(&p)?.display())
            } else {
                crate::artifact::checksums::sha256_file(&p)?
            };
            hashed.push((f, sha));
        }
        out.push((o.clone(), hashed));
    }
    Ok(out)
}

/// Applies `src` onto `tree`; returns the files placed (relative paths).
pub fn apply(src: &Path, tree: &Path, ctx: &minijinja::Value) -> Result<Vec<String>> {
    let mut placed = Vec::new();
    walk(src, src, tree, ctx, &mut placed)?;
    placed.sort();
    Ok(placed)
}

fn walk(
    root: &Path,
    dir: &Path,
    tree: &Path,
    ctx: &minijinja::Value,
    placed: &mut Vec<String>,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read overlay {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap();
        let meta = std::fs::symlink_metadata(&path)?;
        let mut dest = tree.join(rel);
        let ft = meta.file_type();
        if ft.is_dir() {
            if !dest.exists() {
                std::fs::create_dir_all(&dest)?;
                std::fs::set_permissions(
                    &dest,
                    std::fs::Permissions::from_mode(meta.mode() & 0o7777),
                )?;
            }
            walk(root, &path, tree, ctx, placed)?;
            continue;
        }
        if dest.symlink_metadata().is_ok() && dest.is_dir() && !ft.is_symlink() {
            anyhow::bail!(
                "overlay file {} would replace the directory {}",
                path.display(),
                dest.display()
            );
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(&path)?;
            let _ = std::fs::remove_file(&dest);
            std::os::unix::fs::symlink(&target, &dest)
                .with_context(|| format!("cannot place symlink {}", dest.display()))?;
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
            let _ = std::fs::remove_file(&dest);
            std::fs::write(&dest, content)
                .with_context(|| format!("cannot write {}", dest.display()))?;
            // Setuid/setgid bits are dropped (preflight warned): an overlay
            // must not add privileged programs to the image.
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(meta.mode() & 0o1777))?;
        } else {
            anyhow::bail!(
                "overlay entry {} is not a file, directory or symlink",
                path.display()
            );
        }
        std::os::unix::fs::lchown(&dest, Some(0), Some(0)).ok();
        placed.push(dest.strip_prefix(tree).unwrap().display().to_string());
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
