//! Types and paths shared between the builder (`edgeimg`) and the agent.
//!
//! The builder writes [`ImageConfig`] as JSON to [`IMAGE_CONFIG_PATH`] inside
//! the image; the operator may drop a [`NodeConfig`] TOML at
//! [`NODE_CONFIG_RELPATH`] on the boot partition after flashing. Unknown keys
//! are rejected in both so a typo never silently does nothing.

use crate::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where the builder writes the image's [`ImageConfig`] (JSON).
pub const IMAGE_CONFIG_PATH: &str = "/usr/lib/edgeimg/image.json";
/// Path of the per-node file, relative to the boot partition's mount point
/// ([`ImageConfig::boot_mount`]).
pub const NODE_CONFIG_RELPATH: &str = "edgeimg/node.toml";
/// The line printed on stdout and the console when the node is ready. Test
/// harnesses wait for it on the serial console.
pub const READY_LINE: &str = "edgeimg: node ready";
/// Persistent agent state (on the data partition).
pub const STATE_DIR: &str = "/var/lib/edgeimg";
/// Written atomically once every first-boot step has succeeded.
pub const FIRSTBOOT_STAMP: &str = "/var/lib/edgeimg/firstboot.json";
/// One boot id per line, appended by `edgeimg-agent ready`.
pub const BOOTS_LOG: &str = "/var/lib/edgeimg/boots.log";
/// Per-boot agent state (tmpfs).
pub const RUN_DIR: &str = "/run/edgeimg";
/// Written by `edgeimg-agent ready` on every boot.
pub const READY_FILE: &str = "/run/edgeimg/ready.json";
/// Default mount point of the boot partition (ESP).
pub const DEFAULT_BOOT_MOUNT: &str = "/boot/efi";

fn default_boot_mount() -> String {
    DEFAULT_BOOT_MOUNT.to_string()
}

/// What the builder tells the agent about the image (JSON at [`IMAGE_CONFIG_PATH`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Image name from edgeimg.toml (`{name}` in the hostname pattern).
    pub name: String,
    /// Board name, e.g. "rpi4" (`{board}`).
    pub board: String,
    /// Debian architecture, e.g. "arm64".
    pub arch: String,
    /// Version of the edgeimg that built the image.
    pub edgeimg_version: String,
    /// Hostname template; placeholders `{name}`, `{board}`, `{machine_id}`,
    /// `{mac}`, `{serial}`. The result is sanitized into a valid hostname.
    pub hostname_pattern: String,
    /// Users created on first boot.
    #[serde(default)]
    pub users: Vec<User>,
    /// Mount point of the boot partition holding [`NODE_CONFIG_RELPATH`].
    #[serde(default = "default_boot_mount")]
    pub boot_mount: String,
}

/// A login user with its SSH keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name; must match `^[a-z_][a-z0-9_-]{0,31}$`.
    pub name: String,
    /// Supplementary groups; groups absent from /etc/group are skipped.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Lines of authorized_keys (one key each).
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Login shell; /bin/bash when unset.
    #[serde(default)]
    pub shell: Option<String>,
}

/// The per-node file on the boot partition (TOML); every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Hostname for this node; overrides the image's pattern.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Users added to the image's; a user with the same name as an image user
    /// gets this entry's groups and keys appended.
    #[serde(default)]
    pub users: Vec<User>,
}

/// True for a POSIX-portable login/group name as useradd accepts it:
/// `^[a-z_][a-z0-9_-]{0,31}$`.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b[1..].iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// True for a single-label hostname: 1–63 of `[a-z0-9-]`, not starting or
/// ending with '-'.
pub fn is_valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && !h.starts_with('-')
        && !h.ends_with('-')
        && h.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

impl User {
    /// Check the name, groups, shell and keys; the error names the offending value.
    pub fn validate(&self) -> Result<()> {
        if !is_valid_name(&self.name) {
            crate::bail!(
                "user name {:?} is invalid: it must match ^[a-z_][a-z0-9_-]{{0,31}}$ \
                 (lowercase letter or '_' first, then up to 31 of a-z 0-9 _ -)",
                self.name
            );
        }
        for g in &self.groups {
            if !is_valid_name(g) {
                crate::bail!("user {:?}: group name {g:?} is invalid (must match ^[a-z_][a-z0-9_-]{{0,31}}$)", self.name);
            }
        }
        if let Some(shell) = &self.shell
            && (!shell.starts_with('/') || shell.contains(char::is_whitespace))
        {
            crate::bail!("user {:?}: shell {shell:?} must be an absolute path", self.name);
        }
        for (i, key) in self.ssh_keys.iter().enumerate() {
            // A newline would smuggle a second entry into authorized_keys.
            if key.trim().is_empty() || key.contains(['\n', '\r']) {
                crate::bail!("user {:?}: ssh_keys[{i}] must be one non-empty line", self.name);
            }
        }
        Ok(())
    }
}

impl ImageConfig {
    /// Parse the JSON written by the builder; errors name `path`.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let cfg: ImageConfig = serde_json::from_str(text).with_context(|| format!("parsing {}", path.display()))?;
        cfg.validate().map_err(|e| e.context(path.display()))?;
        Ok(cfg)
    }

    /// Check users and the hostname pattern's presence.
    pub fn validate(&self) -> Result<()> {
        if self.hostname_pattern.trim().is_empty() {
            crate::bail!("hostname_pattern is empty");
        }
        for u in &self.users {
            u.validate()?;
        }
        Ok(())
    }
}

impl NodeConfig {
    /// Parse node.toml; errors name `path` and, for syntax and unknown keys,
    /// the line and column (from the toml crate).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        cfg.validate().map_err(|e| e.context(path.display()))?;
        Ok(cfg)
    }

    /// Check the hostname (strictly: an operator wrote it, so a bad value is an
    /// error rather than something to rewrite) and the users.
    pub fn validate(&self) -> Result<()> {
        if let Some(h) = &self.hostname
            && !is_valid_hostname(h)
        {
            crate::bail!("hostname = {h:?} is invalid: use 1-63 of a-z 0-9 '-', not starting or ending with '-'");
        }
        for u in &self.users {
            u.validate()?;
        }
        Ok(())
    }
}

/// Image users first, then node users; a repeated name merges into the first
/// entry: groups and keys are appended without duplicates, a later shell wins.
pub fn merge_users(image: &[User], node: &[User]) -> Vec<User> {
    let mut out: Vec<User> = Vec::new();
    for u in image.iter().chain(node) {
        match out.iter_mut().find(|o| o.name == u.name) {
            Some(o) => {
                for g in &u.groups {
                    if !o.groups.contains(g) {
                        o.groups.push(g.clone());
                    }
                }
                for k in &u.ssh_keys {
                    if !o.ssh_keys.contains(k) {
                        o.ssh_keys.push(k.clone());
                    }
                }
                if u.shell.is_some() {
                    o.shell = u.shell.clone();
                }
            }
            None => out.push(u.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/boot/efi/edgeimg/node.toml")
    }

    #[test]
    fn node_toml_unknown_key_names_file_and_line() {
        let err = NodeConfig::from_toml("hostname = \"a\"\n\nhostnme = \"b\"\n", p()).unwrap_err().to_string();
        assert!(err.starts_with("/boot/efi/edgeimg/node.toml:"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("hostnme"), "{err}");
    }

    #[test]
    fn node_toml_unknown_user_key_rejected() {
        let t = "[[users]]\nname = \"ops\"\nssh_key = \"x\"\n";
        let err = NodeConfig::from_toml(t, p()).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("ssh_key"), "{err}");
    }

    #[test]
    fn node_toml_parses_all_optional() {
        assert_eq!(NodeConfig::from_toml("", p()).unwrap(), NodeConfig::default());
        let n = NodeConfig::from_toml(
            "hostname = \"edge-1\"\n[[users]]\nname = \"ops\"\nssh_keys = [\"ssh-ed25519 AAAA ops\"]\n",
            p(),
        )
        .unwrap();
        assert_eq!(n.hostname.as_deref(), Some("edge-1"));
        assert_eq!(n.users[0].ssh_keys.len(), 1);
        assert!(n.users[0].groups.is_empty());
    }

    #[test]
    fn node_hostname_invalid_named() {
        let err = NodeConfig::from_toml("hostname = \"Edge_1\"\n", p()).unwrap_err().to_string();
        assert!(err.contains("node.toml") && err.contains("\"Edge_1\""), "{err}");
    }

    #[test]
    fn user_name_validation() {
        for ok in ["ops", "_svc", "a", "k3s-admin_2", &"a".repeat(32)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "Ops", "1ops", "-ops", "op s", "op.s", &"a".repeat(33)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        let u = User { name: "Bad".into(), groups: vec![], ssh_keys: vec![], shell: None };
        let err = u.validate().unwrap_err().to_string();
        assert!(err.contains("\"Bad\"") && err.contains("^[a-z_]"), "{err}");
        let u = User { name: "ok".into(), groups: vec![], ssh_keys: vec!["a\nb".into()], shell: None };
        assert!(u.validate().unwrap_err().to_string().contains("ssh_keys[0]"));
    }

    #[test]
    fn image_json_roundtrip_and_defaults() {
        let j = r#"{"name":"edge","board":"rpi4","arch":"arm64","edgeimg_version":"0.1.0",
                    "hostname_pattern":"{name}-{serial}"}"#;
        let c = ImageConfig::from_json(j, Path::new(IMAGE_CONFIG_PATH)).unwrap();
        assert_eq!(c.boot_mount, "/boot/efi");
        assert!(c.users.is_empty());
        let back = serde_json::to_string(&c).unwrap();
        assert_eq!(ImageConfig::from_json(&back, Path::new("x")).unwrap(), c);
        let bad = j.replace("\"arch\"", "\"archh\"");
        let err = ImageConfig::from_json(&bad, Path::new(IMAGE_CONFIG_PATH)).unwrap_err().to_string();
        assert!(err.contains(IMAGE_CONFIG_PATH) && err.contains("archh"), "{err}");
    }

    #[test]
    fn users_merge() {
        let u = |n: &str, g: &[&str], k: &[&str], s: Option<&str>| User {
            name: n.into(),
            groups: g.iter().map(|x| x.to_string()).collect(),
            ssh_keys: k.iter().map(|x| x.to_string()).collect(),
            shell: s.map(Into::into),
        };
        let image = vec![u("ops", &["sudo"], &["k1"], None), u("root", &[], &["r1"], None)];
        let node = vec![u("dev", &[], &["d1"], Some("/bin/sh")), u("ops", &["sudo", "adm"], &["k1", "k2"], Some("/bin/zsh"))];
        let m = merge_users(&image, &node);
        assert_eq!(m.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), ["ops", "root", "dev"]);
        assert_eq!(m[0], u("ops", &["sudo", "adm"], &["k1", "k2"], Some("/bin/zsh")));
        assert_eq!(m[2].shell.as_deref(), Some("/bin/sh"));
    }
}
