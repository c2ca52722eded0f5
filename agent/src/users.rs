//! Users and their SSH keys: create missing accounts with useradd (homes on
//! the data partition, since /home is a symlink to /var/home), then replace
//! each user's authorized_keys with the merged key list. Key material is
//! never logged, only counts.

use crate::error::{Context, Result};
use crate::fsutil;
use crate::root::Root;
use crate::schema::User;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// One line of /etc/passwd (the fields we need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory as written in /etc/passwd.
    pub home: String,
}

/// Parse /etc/passwd text; malformed lines are skipped (they are not ours).
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].into(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].into(),
            })
        })
        .collect()
}

/// Group names defined in /etc/group text.
pub fn parse_group_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split(':').next())
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .map(Into::into)
        .collect()
}

fn read_passwd(root: &Root) -> Result<Vec<PasswdEntry>> {
    Ok(parse_passwd(
        &fsutil::read_opt(&root.path("/etc/passwd"))?.unwrap_or_default(),
    ))
}

/// Where the home directory really lives. /root and /home are symlinks into
/// /var on the image; resolve them by hand so writes stay under a test root
/// (an absolute symlink would escape it).
pub fn real_home(entry: &PasswdEntry) -> String {
    if entry.name == "root" || entry.home == "/root" {
        return "/var/roothome".into();
    }
    match entry.home.strip_prefix("/home/") {
        Some(rest) => format!("/var/home/{rest}"),
        None => entry.home.clone(),
    }
}

/// authorized_keys content for a key list (one key per line).
pub fn authorized_keys(keys: &[String]) -> String {
    keys.iter().map(|k| format!("{}\n", k.trim())).collect()
}

/// `~/.ssh` (0700) and `~/.ssh/authorized_keys` (0600), owned by the user.
///
/// Runs as root in a directory the user owns, so a user could plant
/// `~/.ssh -> /etc` or `~/.ssh/authorized_keys -> /etc/shadow` to have a
/// system file chmodded, chowned or replaced on the next first-boot run.
/// Every step is therefore done through file descriptors opened with
/// O_NOFOLLOW (fchmod, fchown, a temp file made O_EXCL and renamed within
/// the directory): a symlink is refused, never followed.
fn install_keys(home: &Path, keys: &[String], owner: fsutil::Owner) -> Result<()> {
    fsutil::mkdir_p(home)?;
    let home_dir = fsutil::open_dir_nofollow_at(None, home)
        .with_context(|| format!("opening {}", home.display()))?;
    let ssh = home.join(".ssh");
    fsutil::mkdir_at(&home_dir, ".ssh", 0o700)
        .with_context(|| format!("creating {}", ssh.display()))?;
    let ssh_dir =
        fsutil::open_dir_nofollow_at(Some(&home_dir), Path::new(".ssh")).map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
                crate::error::Error::msg(format!(
                    "{} is a symlink or not a directory: refused (not followed)",
                    ssh.display()
                ))
            } else {
                crate::error::Error::msg(format!("opening {}: {e}", ssh.display()))
            }
        })?;
    ssh_dir
        .set_permissions(fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", ssh.display()))?;
    fsutil::fchown(&ssh_dir, owner, &ssh.display())?;
    fsutil::write_atomic_at(
        &ssh_dir,
        &ssh,
        "authorized_keys",
        authorized_keys(keys).as_bytes(),
        0o600,
        Some(owner),
    )
}

/// Create `user` if missing and install its keys; returns a log line.
pub fn ensure_user(root: &Root, user: &User) -> Result<String> {
    let mut note = String::new();
    if user.name != "root" && !read_passwd(root)?.iter().any(|e| e.name == user.name) {
        let known =
            parse_group_names(&fsutil::read_opt(&root.path("/etc/group"))?.unwrap_or_default());
        let (groups, missing): (Vec<&String>, Vec<&String>) =
            user.groups.iter().partition(|g| known.contains(g));
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            crate::log(format!(
                "user {}: skipping groups not in /etc/group: {}",
                user.name,
                names.join(",")
            ));
        }
        // Older useradd does not create missing parents of --home-dir.
        fsutil::mkdir_p(&root.path("/var/home"))?;
        let home = format!("/var/home/{}", user.name);
        let shell = user.shell.as_deref().unwrap_or("/bin/bash");
        let group_list = groups
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec!["--create-home", "--home-dir", &home, "--shell", shell];
        if !group_list.is_empty() {
            args.extend(["--groups", &group_list]);
        }
        args.push(&user.name);
        root.run("useradd", &args)?;
        note.push_str("created, ");
    }
    let Some(entry) = read_passwd(root)?.into_iter().find(|e| e.name == user.name) else {
        if root.is_host() {
            crate::bail!("user {}: not in /etc/passwd after useradd", user.name);
        }
        // Under a test root useradd was not executed.
        return Ok(format!(
            "{}: {note}not in passwd (useradd skipped)",
            user.name
        ));
    };
    let home = root.path(real_home(&entry));
    install_keys(
        &home,
        &user.ssh_keys,
        fsutil::Owner {
            uid: entry.uid,
            gid: entry.gid,
            strict: root.is_host(),
        },
    )?;
    Ok(format!(
        "{}: {note}{} ssh key(s)",
        user.name,
        user.ssh_keys.len()
    ))
}

/// The users step of first boot: every merged user, in order.
pub fn step(root: &Root, users: &[User]) -> Result<String> {
    let mut notes = Vec::new();
    for u in users {
        let n = ensure_user(root, u).with_context(|| format!("user {}", u.name))?;
        crate::log(&n);
        notes.push(n);
    }
    Ok(if notes.is_empty() {
        "no users".into()
    } else {
        notes.join("; ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_group() {
        let p = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\nops:x:1000:1000::/var/home/ops:/bin/bash\nbad\n",
        );
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[1],
            PasswdEntry {
                name: "ops".into(),
                uid: 1000,
                gid: 1000,
                home: "/var/home/ops".into()
            }
        );
        assert_eq!(
            parse_group_names("sudo:x:27:\nadm:x:4:ops\n"),
            ["sudo", "adm"]
        );
        assert_eq!(real_home(&p[0]), "/var/roothome");
        let h = PasswdEntry {
            home: "/home/x".into(),
            ..p[1].clone()
        };
        assert_eq!(real_home(&h), "/var/home/x");
    }

    #[test]
    fn installs_keys_and_records_useradd() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        fs::create_dir_all(root.path("/etc")).unwrap();
        fs::write(
            root.path("/etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\n",
        )
        .unwrap();
        fs::write(root.path("/etc/group"), "root:x:0:\nsudo:x:27:\n").unwrap();
        let uid = unsafe { libc::getuid() };
        let gid = unsafe { libc::getgid() };
        let users = vec![
            User {
                name: "root".into(),
                groups: vec![],
                ssh_keys: vec!["ssh-ed25519 AAAA r".into()],
                shell: None,
            },
            User {
                name: "ops".into(),
                groups: vec!["sudo".into(), "docker".into()],
                ssh_keys: vec!["k1".into(), "k2".into()],
                shell: None,
            },
        ];
        step(&root, &users).unwrap();
        assert_eq!(
            root.skipped_commands(),
            ["useradd --create-home --home-dir /var/home/ops --shell /bin/bash --groups sudo ops"]
        );
        let rk = root.path("/var/roothome/.ssh/authorized_keys");
        assert_eq!(fs::read_to_string(&rk).unwrap(), "ssh-ed25519 AAAA r\n");
        assert_eq!(
            fs::metadata(&rk).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(rk.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        // Now "useradd" has happened: keys are replaced, not appended.
        fs::write(
            root.path("/etc/passwd"),
            format!("ops:x:{uid}:{gid}::/var/home/ops:/bin/bash\n"),
        )
        .unwrap();
        step(&root, &users).unwrap();
        step(&root, &users).unwrap();
        assert_eq!(
            fs::read_to_string(root.path("/var/home/ops/.ssh/authorized_keys")).unwrap(),
            "k1\nk2\n"
        );
    }

    /// A user who owns their home can plant links there; first boot (root)
    /// must neither follow `~/.ssh -> elsewhere` (chmod/chown/write into it)
    /// nor write through `~/.ssh/authorized_keys -> elsewhere`.
    #[test]
    fn links_planted_in_a_home_are_never_followed() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let uid = unsafe { libc::getuid() };
        let gid = unsafe { libc::getgid() };
        fs::create_dir_all(root.path("/etc")).unwrap();
        fs::write(
            root.path("/etc/passwd"),
            format!("ops:x:{uid}:{gid}::/var/home/ops:/bin/bash\n"),
        )
        .unwrap();
        let outside = d.path().join("system");
        fs::create_dir(&outside).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(outside.join("shadow"), "secret\n").unwrap();
        fs::create_dir_all(root.path("/var/home/ops")).unwrap();
        symlink(&outside, root.path("/var/home/ops/.ssh")).unwrap();
        let user = User {
            name: "ops".into(),
            groups: vec![],
            ssh_keys: vec!["ssh-ed25519 AAAA k".into()],
            shell: None,
        };
        let e = ensure_user(&root, &user).unwrap_err().to_string();
        assert!(e.contains(".ssh is a symlink"), "{e}");
        assert_eq!(
            fs::metadata(&outside).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);

        // A link as authorized_keys is replaced, its target untouched.
        fs::remove_file(root.path("/var/home/ops/.ssh")).unwrap();
        fs::create_dir(root.path("/var/home/ops/.ssh")).unwrap();
        symlink(
            outside.join("shadow"),
            root.path("/var/home/ops/.ssh/authorized_keys"),
        )
        .unwrap();
        ensure_user(&root, &user).unwrap();
        let keys = root.path("/var/home/ops/.ssh/authorized_keys");
        assert!(
            !fs::symlink_metadata(&keys)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&keys).unwrap(), "ssh-ed25519 AAAA k\n");
        assert_eq!(
            fs::read_to_string(outside.join("shadow")).unwrap(),
            "secret\n"
        );
        assert_eq!(
            fs::metadata(outside.join("shadow"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
    }
}
