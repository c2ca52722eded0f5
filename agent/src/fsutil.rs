//! Small file helpers: every error names the path, and writes that must
//! survive a power cut go through [`write_atomic`].

use crate::error::{Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Read a file to a string; `Ok(None)` when it does not exist.
pub fn read_opt(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Read a file to a string; a missing file is an error naming the path.
pub fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Create a directory and its parents.
pub fn mkdir_p(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("creating directory {}", path.display()))
}

/// Replace `path` with `data` so that a crash leaves either the old or the new
/// content, never a torn file: write a temp file beside it, fsync, rename over,
/// fsync the directory. `mode` is applied to the new file before the rename.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_atomic_inner(path, data, Some(mode))
}

/// [`write_atomic`] for FAT (the boot partition): no file modes there, and
/// chmod fails with EPERM under the mount's umask.
pub fn write_atomic_fat(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_inner(path, data, None)
}

fn write_atomic_inner(path: &Path, data: &[u8], mode: Option<u32>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    mkdir_p(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The directory may be writable by others (a user's home): a name they
    // can predict could be a symlink planted there, so the temp file gets an
    // unguessable name and is created O_EXCL|O_NOFOLLOW — never opened
    // through an existing file or link.
    let (tmp, mut f) = create_temp_beside(dir, &name, mode.unwrap_or(0o644))
        .with_context(|| format!("writing {}", path.display()))?;
    let res = (|| -> std::io::Result<()> {
        // The umask may have masked `mode`; set it explicitly.
        if let Some(mode) = mode {
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing {}", path.display()))
}

/// A new file `.<name>.tmp.<random>` in `dir`, created exclusively (fails
/// rather than open anything already there, link or not).
fn create_temp_beside(dir: &Path, name: &str, mode: u32) -> std::io::Result<(PathBuf, File)> {
    create_exclusive_beside(dir, name, |tmp| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(mode)
            .open(tmp)
    })
}

/// `create` at a new random name `.<name>.tmp.<random>` in `dir`, retried
/// while the name is taken. `create` must fail with AlreadyExists rather
/// than use anything already at the name (O_EXCL|O_NOFOLLOW, symlink(2),
/// mkdir(2)): a name nobody can predict, and nothing planted is followed.
fn create_exclusive_beside<T>(
    dir: &Path,
    name: &str,
    mut create: impl FnMut(&Path) -> std::io::Result<T>,
) -> std::io::Result<(PathBuf, T)> {
    for _ in 0..16 {
        let tmp = dir.join(format!("{}{:016x}", temp_prefix(name), random_u64()?));
        match create(&tmp) {
            Ok(t) => return Ok((tmp, t)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        ErrorKind::AlreadyExists,
        "no free temporary name after 16 tries",
    ))
}

/// What every temporary name for `name` starts with (a random part follows).
pub fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp.")
}

/// Point `link` at `target`, replacing whatever is at `link` atomically: the
/// new link is made under a random name beside it (symlink(2) never follows
/// or reuses an existing entry), then renamed over `link`.
pub fn symlink_atomic(target: &Path, link: &Path) -> Result<()> {
    let dir = link
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, ()) =
        create_exclusive_beside(dir, &name, |tmp| std::os::unix::fs::symlink(target, tmp))
            .with_context(|| format!("creating symlink {}", link.display()))?;
    if let Err(e) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("creating symlink {}", link.display()));
    }
    Ok(())
}

/// A new, empty directory `.<name>.tmp.<random>` in `dir`, mode 0700, made
/// by mkdir(2) (which fails rather than use an existing entry or follow a
/// link): a private place for a tool that writes several files by name.
pub fn temp_dir_beside(dir: &Path, name: &str) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let (tmp, ()) = create_exclusive_beside(dir, name, |tmp| {
        fs::DirBuilder::new().mode(0o700).create(tmp)
    })
    .with_context(|| format!("creating a temporary directory in {}", dir.display()))?;
    Ok(tmp)
}

/// 64 random bits from the kernel (getrandom, no file to open).
fn random_u64() -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    // SAFETY: writes at most 8 bytes into our buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::from_le_bytes(b))
}

/// Read a file's bytes; `Ok(None)` when it does not exist.
pub fn read_bytes_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// fsync a directory, so renames and unlinks in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// `openat(dir, name)` as a directory, never through a symlink: `name` is
/// one component, and a link there (planted by whoever owns `dir`) is an
/// error rather than followed.
pub fn open_dir_nofollow_at(dir: Option<&File>, path: &Path) -> std::io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "NUL in path"))?;
    let at = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: a valid C string and directory fd; the new fd is owned below.
    let fd = unsafe {
        libc::openat(
            at,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `mkdirat(dir, name, mode)`; an existing entry of that name is left for
/// [`open_dir_nofollow_at`] to judge.
pub fn mkdir_at(dir: &File, name: &str, mode: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let c = std::ffi::CString::new(name)
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "NUL in name"))?;
    // SAFETY: a valid C string and directory fd.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == ErrorKind::AlreadyExists {
        return Ok(());
    }
    Err(e)
}

/// Owner for a file written by [`write_atomic_at`].
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// Fail when chown is refused (on the device); unprivileged tests pass false.
    pub strict: bool,
}

/// `fchown` of an open file, so no path (and no link) is involved.
pub fn fchown(f: &File, owner: Owner, what: &dyn std::fmt::Display) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fchown on our own fd.
    if unsafe { libc::fchown(f.as_raw_fd(), owner.uid, owner.gid) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if !owner.strict && e.kind() == ErrorKind::PermissionDenied {
        return Ok(());
    }
    Err(e).with_context(|| format!("chown {}:{} {what}", owner.uid, owner.gid))
}

/// [`write_atomic`] relative to an open directory: temp file created
/// O_EXCL|O_NOFOLLOW under a random name in `dir`, moded and chowned through
/// its fd, then renamed over `name` in that same directory. Nothing is
/// resolved by path, so a directory an unprivileged user controls (a home)
/// cannot redirect the write or the chown with a symlink.
pub fn write_atomic_at(
    dir: &File,
    dir_path: &Path,
    name: &str,
    data: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let shown = dir_path.join(name);
    let res = (|| -> Result<()> {
        let mut tmp = None;
        for _ in 0..16 {
            let t = format!(
                "{}{:016x}",
                temp_prefix(name),
                random_u64().context("getrandom")?
            );
            let c = std::ffi::CString::new(t.clone()).context("temp name")?;
            // SAFETY: valid C string and directory fd; the fd is owned below.
            let fd = unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    mode as libc::c_uint,
                )
            };
            if fd >= 0 {
                // SAFETY: just opened, owned by nobody else.
                tmp = Some((t, c, unsafe { File::from_raw_fd(fd) }));
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::AlreadyExists {
                return Err(e).context("creating a temporary file");
            }
        }
        let Some((t, c, mut f)) = tmp else {
            crate::bail!("no free temporary name after 16 tries");
        };
        let body = (|| -> Result<()> {
            f.set_permissions(fs::Permissions::from_mode(mode))
                .context("chmod")?;
            if let Some(o) = owner {
                fchown(&f, o, &shown.display())?;
            }
            f.write_all(data).context("write")?;
            f.sync_all().context("fsync")?;
            let to = std::ffi::CString::new(name).context("name")?;
            // SAFETY: valid C strings and directory fds.
            let r = unsafe {
                libc::renameat(dir.as_raw_fd(), c.as_ptr(), dir.as_raw_fd(), to.as_ptr())
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error()).context("rename");
            }
            dir.sync_all().context("fsync directory")
        })();
        if body.is_err() {
            // SAFETY: valid C string and directory fd.
            unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
            let _ = t;
        }
        body
    })();
    res.with_context(|| format!("writing {}", shown.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link planted under the old predictable temp name (`.NAME.tmp.PID`)
    /// must not be written through; the new name is random and O_EXCL.
    #[test]
    fn write_atomic_never_writes_through_a_planted_temp_link() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, "keep\n").unwrap();
        let planted = d.path().join(format!(".out.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let out = d.path().join("out");
        write_atomic(&out, b"new\n", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep\n");
        assert_eq!(fs::read_to_string(&out).unwrap(), "new\n");
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Only the planted link, the victim and the output: no temp left.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 3);
    }
}
