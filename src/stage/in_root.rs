//! File operations confined to the staged root tree.
//!
//! The base tree has absolute symlinks (`var/run -> /run`, `var/lock ->
//! /run/lock`, ...). A path such as `<tree>/var/run/x` resolved by the host
//! kernel the usual way follows them out of the tree: during a root build an
//! overlay file placed there would write, or replace, the build host's own
//! `/run/x`. Every path here is resolved with `openat2(RESOLVE_IN_ROOT)`
//! against a descriptor of the tree, so the kernel treats the tree as `/`:
//! `var/run -> /run` leads to `<tree>/run`, and `..` cannot climb out. The
//! last component is then created or replaced relative to its parent's
//! descriptor with the `*at` calls, never by a path.
//!
//! Every write the stage makes into the tree goes through here: the
//! operator's overlays, and the builder's own files (units, K3s config,
//! fstab, update key, stamps, image archives; [`super::system::write`] and
//! [`super::system::enable`] are the short forms). Where a step walks a
//! directory of the base with ordinary calls (modules, firmware, host keys),
//! [`InRoot::host_dir`] first checks that the directory's plain path is the
//! one inside the tree.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The staged root, opened once.
pub struct InRoot {
    root: OwnedFd,
    path: PathBuf,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// `(parent, last component)` of a tree-relative path.
fn split(rel: &Path) -> io::Result<(&Path, CString)> {
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    Ok((parent, cstr(Path::new(name))?))
}

impl InRoot {
    pub fn open(tree: &Path) -> Result<Self> {
        let f = File::open(tree).with_context(|| format!("cannot open {}", tree.display()))?;
        Ok(InRoot {
            root: f.into(),
            path: tree.to_path_buf(),
        })
    }

    /// For messages: where `rel` is on the host.
    pub fn show(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    /// `rel` opened with `flags`, resolved inside the tree.
    fn resolve(&self, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let c = cstr(rel)?;
        // struct open_how as the kernel defines it (libc's is non-exhaustive).
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: valid dirfd, C string and open_how of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.root.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOSYS) {
                return Err(io::Error::other(
                    "openat2 is not available (Linux 5.6 or later is needed to place overlays safely)",
                ));
            }
            return Err(e);
        }
        // SAFETY: a new descriptor owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    fn parent(&self, rel: &Path) -> io::Result<(OwnedFd, CString)> {
        let (parent, name) = split(rel)?;
        Ok((
            self.resolve(parent, libc::O_PATH | libc::O_DIRECTORY)?,
            name,
        ))
    }

    /// What `rel` is, without following a last-component symlink; `None`
    /// when absent.
    pub fn lstat(&self, rel: &Path) -> io::Result<Option<libc::stat>> {
        let (dir, name) = match self.parent(rel) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // SAFETY: an all-zero stat is valid; fstatat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r == 0 {
            return Ok(Some(st));
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::NotFound {
            return Ok(None);
        }
        Err(e)
    }

    /// Whether `rel` is a directory, following symlinks inside the tree.
    pub fn is_dir(&self, rel: &Path) -> bool {
        self.resolve(rel, libc::O_PATH | libc::O_DIRECTORY).is_ok()
    }

    /// Creates directory `rel` with `mode` unless it (or a link to a
    /// directory inside the tree) is there.
    pub fn mkdir(&self, rel: &Path, mode: u32) -> Result<()> {
        if self.is_dir(rel) {
            return Ok(());
        }
        let show = || format!("cannot create {}", self.show(rel).display());
        let (dir, name) = self.parent(rel).with_context(show)?;
        // SAFETY: valid dirfd and C string.
        if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) } != 0 {
            return Err(io::Error::last_os_error()).with_context(show);
        }
        let f = File::from(
            self.resolve(rel, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .with_context(show)?,
        );
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(show)?;
        Ok(())
    }

    /// Removes a non-directory `rel` (a file or a link itself); absent is fine.
    fn unlink(&self, dir: &OwnedFd, name: &CString) -> io::Result<()> {
        // SAFETY: valid dirfd and C string.
        if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::NotFound {
            return Ok(());
        }
        Err(e)
    }

    /// Creates `rel` and the directories above it (mode `mode`), inside the
    /// tree; an absolute link on the way leads inside the tree, and one whose
    /// target is missing there is an error naming the path.
    pub fn mkdir_p(&self, rel: &Path, mode: u32) -> Result<()> {
        let mut at = PathBuf::new();
        for c in rel.components() {
            at.push(c);
            if matches!(c, std::path::Component::Normal(_)) {
                self.mkdir(&at, mode)?;
            }
        }
        Ok(())
    }

    /// A new file `rel` (replacing a file or link there, never opening it),
    /// created O_EXCL|O_NOFOLLOW with `mode` and owned by root, to write to.
    pub fn create(&self, rel: &Path, mode: u32) -> Result<File> {
        let show = || format!("cannot write {}", self.show(rel).display());
        let (dir, name) = self.parent(rel).with_context(show)?;
        self.unlink(&dir, &name).with_context(show)?;
        // SAFETY: valid dirfd and C string; the fd is owned below.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error()).with_context(show);
        }
        // SAFETY: just opened.
        let f = unsafe { File::from_raw_fd(fd) };
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(show)?;
        // SAFETY: fchown on our own fd; failure (rootless) is not an error.
        unsafe { libc::fchown(f.as_raw_fd(), 0, 0) };
        Ok(f)
    }

    /// Writes `content` as a new file `rel` (replacing a file or link there,
    /// never writing through it) with `mode`, owned by root.
    pub fn write_file(&self, rel: &Path, content: &[u8], mode: u32) -> Result<()> {
        let mut f = self.create(rel, mode)?;
        f.write_all(content)
            .with_context(|| format!("cannot write {}", self.show(rel).display()))
    }

    /// [`Self::write_file`], creating the directories above `rel` (0755).
    pub fn write(&self, rel: &Path, content: &[u8], mode: u32) -> Result<()> {
        if let Some(parent) = rel.parent() {
            self.mkdir_p(parent, 0o755)?;
        }
        self.write_file(rel, content, mode)
    }

    /// Removes the file or link `rel` (never what a link points at);
    /// absent is fine.
    pub fn remove(&self, rel: &Path) -> Result<()> {
        let show = || format!("cannot remove {}", self.show(rel).display());
        let (dir, name) = match self.parent(rel) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(show),
        };
        self.unlink(&dir, &name).with_context(show)
    }

    /// The text of file `rel` (links followed inside the tree); `None` when
    /// absent.
    pub fn read_to_string(&self, rel: &Path) -> Result<Option<String>> {
        let show = || format!("cannot read {}", self.show(rel).display());
        let f = match self.resolve(rel, libc::O_RDONLY) {
            Ok(fd) => File::from(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(show),
        };
        io::read_to_string(f).map(Some).with_context(show)
    }

    /// Renames `from` to `to` (the entries themselves, not what links in
    /// them point at), both resolved inside the tree.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let show = || {
            format!(
                "cannot move {} to {}",
                self.show(from).display(),
                self.show(to).display()
            )
        };
        let (fd, fname) = self.parent(from).with_context(show)?;
        let (td, tname) = self.parent(to).with_context(show)?;
        // SAFETY: valid dirfds and C strings.
        let r = unsafe {
            libc::renameat(
                fd.as_raw_fd(),
                fname.as_ptr(),
                td.as_raw_fd(),
                tname.as_ptr(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error()).with_context(show);
        }
        Ok(())
    }

    /// The host path of directory `rel` for a step that walks it with
    /// ordinary calls (which do not follow links below it): `None` when it
    /// is not a directory, an error when its plain path leads anywhere but
    /// the directory inside the tree (a link on the way pointing out).
    pub fn host_dir(&self, rel: &Path) -> Result<Option<PathBuf>> {
        self.host_path(rel, true)
    }

    /// The host path of regular file `rel` for a step that reads or copies
    /// it by path (a tool, the boot partition's writer): `None` when it is
    /// not a regular file, an error when its plain path leads anywhere but
    /// the file inside the tree (a link pointing out, at any component).
    pub fn host_file(&self, rel: &Path) -> Result<Option<PathBuf>> {
        self.host_path(rel, false)
    }

    /// The plain host path of `rel` once it is known to reach the same
    /// directory or regular file as `rel` resolved inside the tree.
    fn host_path(&self, rel: &Path, dir: bool) -> Result<Option<PathBuf>> {
        use std::os::unix::fs::MetadataExt;
        let host = self.path.join(rel);
        let kind = |m: &std::fs::Metadata| if dir { m.is_dir() } else { m.is_file() };
        let plain = std::fs::metadata(&host).ok().filter(kind);
        // O_PATH: nothing is opened for reading (a FIFO would block).
        let inside = match self.resolve(rel, libc::O_PATH) {
            Ok(fd) => Some(
                File::from(fd)
                    .metadata()
                    .with_context(|| format!("cannot read {}", self.show(rel).display()))?,
            )
            .filter(kind),
            Err(_) => None,
        };
        match (plain, inside) {
            (None, None) => Ok(None),
            (Some(m), Some(i)) if (m.dev(), m.ino()) == (i.dev(), i.ino()) => Ok(Some(host)),
            _ => anyhow::bail!(
                "{}: a symlink on the way leads out of the tree; refused",
                host.display()
            ),
        }
    }

    /// Places symlink `rel -> target` (replacing a file or link there).
    pub fn symlink(&self, rel: &Path, target: &Path) -> Result<()> {
        let show = || format!("cannot place symlink {}", self.show(rel).display());
        let (dir, name) = self.parent(rel).with_context(show)?;
        self.unlink(&dir, &name).with_context(show)?;
        let t = cstr(target).with_context(show)?;
        // SAFETY: valid C strings and dirfd.
        if unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), name.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error()).with_context(show);
        }
        // SAFETY: as above; a failure (rootless) is not an error.
        unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                name.as_ptr(),
                0,
                0,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_links_and_dotdot_stay_in_the_tree() {
        let host = tempfile::tempdir().unwrap();
        let tree = host.path().join("tree");
        let outside = host.path().join("outside");
        std::fs::create_dir_all(tree.join("var")).unwrap();
        std::fs::create_dir_all(tree.join("run")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("var/run")).unwrap();
        std::os::unix::fs::symlink("../../..", tree.join("var/up")).unwrap();
        let r = InRoot::open(&tree).unwrap();
        // `var/run` points (absolutely) at `outside`; inside the tree that
        // path does not exist, so the write fails rather than escaping.
        assert!(r.write_file(Path::new("var/run/x"), b"x", 0o644).is_err());
        r.write_file(Path::new("var/up/y"), b"y", 0o644).unwrap();
        assert_eq!(std::fs::read(tree.join("y")).unwrap(), b"y");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert!(!host.path().join("y").exists());
    }

    /// The builder's own writes (files, units, links, removals, directory
    /// walks) through a base whose links point out of the tree.
    #[test]
    fn stage_writes_through_hostile_links_stay_in_the_tree() {
        let host = tempfile::tempdir().unwrap();
        let tree = host.path().join("tree");
        let outside = host.path().join("outside");
        std::fs::create_dir_all(tree.join("etc/systemd")).unwrap();
        std::fs::create_dir_all(tree.join("var/lib")).unwrap();
        std::fs::create_dir_all(tree.join("usr/lib")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("machine-id"), "host\n").unwrap();
        let link = |rel: &str, to: &Path| std::os::unix::fs::symlink(to, tree.join(rel)).unwrap();
        // A unit directory and a state directory pointing out (absolute).
        link("etc/systemd/system", &outside);
        link("var/lib/dbus", &outside);
        link("usr/lib/firmware", &outside);
        // A directory link to `/`.
        link("var/lib/edgeimg", Path::new("/"));

        // Units and files under the outward link: refused, naming the path.
        let e = crate::stage::system::enable(&tree, "x.service", "multi-user.target").unwrap_err();
        assert!(format!("{e:#}").contains("etc/systemd/system"), "{e:#}");
        let e = crate::stage::system::write(&tree, "etc/systemd/system/y.conf", b"y", 0o644)
            .unwrap_err();
        assert!(format!("{e:#}").contains("etc/systemd/system"), "{e:#}");
        // Through the link to `/`: inside the tree's own root.
        let unique = format!("edgeimg-in-root-test-{}", std::process::id());
        let rel = format!("var/lib/edgeimg/{unique}/f");
        crate::stage::system::write(&tree, &rel, b"f", 0o644).unwrap();
        assert_eq!(std::fs::read(tree.join(&unique).join("f")).unwrap(), b"f");
        assert!(!Path::new("/").join(&unique).exists());
        // A removal through the link removes nothing outside.
        let r = InRoot::open(&tree).unwrap();
        r.remove(Path::new("var/lib/dbus/machine-id")).unwrap();
        // A directory the stage walks with plain paths is refused.
        let e = r.host_dir(Path::new("usr/lib/firmware")).unwrap_err();
        assert!(format!("{e:#}").contains("leads out of the tree"), "{e:#}");
        let e = crate::stage::modules::trim_firmware(&tree, &[], "board").unwrap_err();
        assert!(format!("{e:#}").contains("leads out of the tree"), "{e:#}");

        // Nothing outside changed.
        let names: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["machine-id"]);
        assert_eq!(
            std::fs::read(outside.join("machine-id")).unwrap(),
            b"host\n"
        );
    }
}
