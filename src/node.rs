//! `edgeimg node`: writes a per-node `node.toml` from flags, for
//! `edgeimg flash --node` (or to copy onto a flashed card's boot partition).
//! The result is validated with the agent's own schema ([`NodeConfig`]), so a
//! file this writes is a file the agent accepts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::io_error::{IoError, io_err};
use edgeimg_contract::schema::{K3sNodeSettings, K3sRole, NodeConfig, User};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{flag} {value:?}: {msg}")]
    Flag {
        flag: &'static str,
        value: String,
        msg: String,
    },
    /// An SSH key that is not a public key: named by where it came from,
    /// never quoted (it may be a private key).
    #[error("{origin}: {msg}")]
    Key { origin: String, msg: String },
    /// A request edgeimg declines for safety (the reason says what to do).
    #[error("{0}")]
    Refused(String),
    #[error("the node file would be invalid: {0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{} exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
}

/// The flags of `edgeimg node`, as plain data.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    pub hostname: Option<String>,
    /// `NAME`
    pub users: Vec<String>,
    /// `NAME:GROUP[,GROUP...]`
    pub groups: Vec<String>,
    /// `NAME:KEY` (one authorized_keys line)
    pub ssh_keys: Vec<String>,
    /// `NAME:PATH` (an authorized_keys file: every non-empty, non-comment line)
    pub ssh_key_files: Vec<String>,
    /// `NAME:SHELL`
    pub shells: Vec<String>,
    /// K3s role: `server` or `agent`.
    pub role: Option<String>,
    /// URL of the server to join.
    pub server: Option<String>,
    /// Start a new cluster (first server).
    pub cluster_init: bool,
    /// The join token (a secret; read from a file or the environment, never a flag value).
    pub token: Option<String>,
    /// `key=value` node labels.
    pub node_labels: Vec<String>,
    /// `key=value:Effect` node taints.
    pub node_taints: Vec<String>,
}

/// Reads the join token: from `path` (`-` for stdin), else from
/// [`TOKEN_ENV`] when `from_env` (the node file asks for K3s: a token left in
/// the environment must not go into a file that did not ask for one). Only
/// the first line counts.
pub fn read_token(path: Option<&Path>, from_env: bool) -> Result<Option<String>, NodeError> {
    let text = match path {
        Some(p) if p == Path::new("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_line(&mut s)
                .map_err(io_err("read token from", p))?;
            s
        }
        Some(p) => std::fs::read_to_string(p).map_err(io_err("read token from", p))?,
        None if !from_env => return Ok(None),
        None => match std::env::var(TOKEN_ENV) {
            Ok(t) => t,
            Err(_) => return Ok(None),
        },
    };
    let t = text.lines().next().unwrap_or("").trim().to_string();
    if t.is_empty() {
        return Err(NodeError::Invalid("the join token is empty".into()));
    }
    Ok(Some(t))
}

/// Environment variable `edgeimg node` reads the join token from.
pub const TOKEN_ENV: &str = "EDGEIMG_K3S_TOKEN";

fn split<'a>(flag: &'static str, v: &'a str) -> Result<(&'a str, &'a str), NodeError> {
    v.split_once(':')
        .filter(|(n, rest)| !n.is_empty() && !rest.trim().is_empty())
        .ok_or_else(|| NodeError::Flag {
            flag,
            value: v.to_string(),
            msg: "expected USER:VALUE".into(),
        })
}

fn user<'a>(users: &'a mut Vec<User>, name: &str) -> &'a mut User {
    if let Some(i) = users.iter().position(|u| u.name == name) {
        return &mut users[i];
    }
    users.push(User {
        name: name.to_string(),
        groups: vec![],
        ssh_keys: vec![],
        shell: None,
    });
    users.last_mut().unwrap()
}

/// Builds and validates the node configuration.
pub fn make(spec: &NodeSpec) -> Result<NodeConfig, NodeError> {
    let mut users: Vec<User> = Vec::new();
    for u in &spec.users {
        user(&mut users, u.trim());
    }
    for g in &spec.groups {
        let (n, gs) = split("--group", g)?;
        let u = user(&mut users, n);
        for g in gs.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if !u.groups.iter().any(|x| x == g) {
                u.groups.push(g.to_string());
            }
        }
    }
    for (i, k) in spec.ssh_keys.iter().enumerate() {
        let Some((n, key)) = k.split_once(':') else {
            return Err(NodeError::Key {
                origin: format!("--ssh-key #{}", i + 1),
                msg: "expected USER:KEY".into(),
            });
        };
        crate::ssh_pubkey::check(key).map_err(|msg| NodeError::Key {
            origin: format!("--ssh-key #{} (user {})", i + 1, n.trim()),
            msg,
        })?;
        user(&mut users, n.trim())
            .ssh_keys
            .push(key.trim().to_string());
    }
    for kf in &spec.ssh_key_files {
        let (n, path) = split("--ssh-key-file", kf)?;
        let text = std::fs::read_to_string(path).map_err(io_err("read SSH key file", path))?;
        let mut keys: Vec<String> = Vec::new();
        for (no, l) in text.lines().enumerate() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            crate::ssh_pubkey::check(l).map_err(|msg| NodeError::Key {
                origin: format!("--ssh-key-file {}:{}", path.trim(), no + 1),
                msg,
            })?;
            keys.push(l.to_string());
        }
        if keys.is_empty() {
            return Err(NodeError::Flag {
                flag: "--ssh-key-file",
                value: kf.clone(),
                msg: "the file holds no key".into(),
            });
        }
        user(&mut users, n).ssh_keys.extend(keys);
    }
    for s in &spec.shells {
        let (n, sh) = split("--shell", s)?;
        user(&mut users, n).shell = Some(sh.trim().to_string());
    }
    let role = match spec.role.as_deref() {
        None => None,
        Some("server") => Some(K3sRole::Server),
        Some("agent") => Some(K3sRole::Agent),
        Some(r) => {
            return Err(NodeError::Flag {
                flag: "--role",
                value: r.into(),
                msg: "expected server or agent".into(),
            });
        }
    };
    let k3s = K3sNodeSettings {
        role,
        server: spec.server.clone(),
        token: spec.token.clone(),
        cluster_init: spec.cluster_init.then_some(true),
        node_labels: (!spec.node_labels.is_empty()).then(|| spec.node_labels.clone()),
        node_taints: (!spec.node_taints.is_empty()).then(|| spec.node_taints.clone()),
        ..Default::default()
    };
    let k3s = (k3s != K3sNodeSettings::default()).then_some(k3s);
    let cfg = NodeConfig {
        hostname: spec.hostname.clone(),
        users,
        k3s,
        ..Default::default()
    };
    // The agent's messages quote values; never let one quote the token.
    cfg.validate()
        .map_err(|e| NodeError::Invalid(redact(&e.to_string(), spec.token.as_deref())))?;
    Ok(cfg)
}

fn redact(msg: &str, secret: Option<&str>) -> String {
    match secret {
        Some(t) if !t.is_empty() => msg.replace(t, "<redacted>"),
        _ => msg.to_string(),
    }
}

/// The file's text: a comment header, then the TOML. Parsed back with the
/// agent's parser before it is returned.
pub fn render(cfg: &NodeConfig) -> Result<String, NodeError> {
    let body = toml::to_string(cfg).map_err(|e| NodeError::Invalid(e.to_string()))?;
    let text = format!(
        "# edgeimg node file: read by edgeimg-agent on first boot from the boot\n\
         # partition's {}. Written by `edgeimg node`; edit freely.\n\n{body}",
        edgeimg_contract::schema::NODE_CONFIG_RELPATH
    );
    let secret = cfg.k3s.as_ref().and_then(|k| k.token.as_deref());
    let back = NodeConfig::from_toml(&text, Path::new("node.toml"))
        .map_err(|e| NodeError::Invalid(redact(&e.to_string(), secret)))?;
    if back != *cfg {
        return Err(NodeError::Invalid(
            "the written file does not read back the same".into(),
        ));
    }
    Ok(text)
}

/// Writes `text` to `out` (mode 0600: node files will carry join tokens), or
/// to stdout when `out` is None.
pub fn write(
    text: &str,
    out: Option<&Path>,
    force: bool,
    has_secret: bool,
) -> Result<(), NodeError> {
    match out {
        None if has_secret => Err(NodeError::Refused("not printing the node file: it holds the join token, a secret; write it to a file with --out (mode 0600)".into())),
        None => {
            print!("{text}");
            Ok(())
        }
        Some(p) => {
            if !force && std::fs::symlink_metadata(p).is_ok() {
                return Err(NodeError::Exists(p.into()));
            }
            write_private(p, text.as_bytes(), force)
        }
    }
}

/// Writes `bytes` to `path` with mode 0600 whatever was there before: a
/// temporary file created 0600 in the same directory, renamed over `path`
/// (with `replace`; else the rename refuses an existing `path`).
pub fn write_private(path: &Path, bytes: &[u8], replace: bool) -> Result<(), NodeError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|source| IoError::new("create", &tmp, source))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|source| IoError::new("write", &tmp, source))?;
        if !replace && std::fs::symlink_metadata(path).is_ok() {
            return Err(NodeError::Exists(path.into()));
        }
        std::fs::rename(&tmp, path).map_err(|source| IoError::new("rename into", path, source))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Replaces every `token` value in a node file's JSON form with `true`, so
/// `edgeimg node --json` says a token is set without printing it.
pub fn redact_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k.contains("token") && !x.is_null() {
                    *x = serde_json::Value::Bool(true);
                } else {
                    redact_json(x);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_a_file_the_agent_reads() {
        let spec = NodeSpec {
            hostname: Some("edge-07".into()),
            users: vec!["ops".into()],
            groups: vec!["ops:sudo,adm".into(), "ops:sudo".into()],
            ssh_keys: vec![
                "ops:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMJTy1J2eXbIGzzT/RSVqyHTxS+tyrSMeTEhQPu2n/uD ops@laptop".into(),
                "deploy:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIICNrNDBmVFpi9ZAOW5JHk6KHrNETrrdltqKBhDetXUt deploy".into(),
            ],
            ssh_key_files: vec![],
            shells: vec!["deploy:/bin/sh".into()],
            role: Some("agent".into()),
            server: Some("https://10.0.0.1:6443".into()),
            token: Some("K10secret::server:abc".into()),
            node_labels: vec!["site=berlin".into()],
            ..Default::default()
        };
        let cfg = make(&spec).unwrap();
        assert_eq!(cfg.users.len(), 2);
        assert_eq!(cfg.users[0].groups, vec!["sudo", "adm"]);
        assert_eq!(cfg.users[1].shell.as_deref(), Some("/bin/sh"));
        let k = cfg.k3s.as_ref().unwrap();
        assert_eq!(
            (k.role, k.server.as_deref(), k.token.as_deref()),
            (
                Some(K3sRole::Agent),
                Some("https://10.0.0.1:6443"),
                Some("K10secret::server:abc")
            )
        );
        assert!(
            write("x", None, false, true)
                .unwrap_err()
                .to_string()
                .contains("--out")
        );
        let text = render(&cfg).unwrap();
        assert_eq!(NodeConfig::from_toml(&text, Path::new("n")).unwrap(), cfg);
        assert_eq!(
            NodeConfig::from_toml(&render(&NodeConfig::default()).unwrap(), Path::new("n"))
                .unwrap(),
            NodeConfig::default()
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_flag() {
        let e = make(&NodeSpec {
            hostname: Some("Bad_Host".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("Bad_Host"), "{e}");
        let e = make(&NodeSpec {
            ssh_keys: vec!["nokey".into()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--ssh-key #1") && e.contains("USER:KEY"), "{e}");
        let e = make(&NodeSpec {
            users: vec!["Root".into()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("Root"), "{e}");
        let e = make(&NodeSpec {
            role: Some("boss".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--role") && e.contains("boss"), "{e}");
        let e = make(&NodeSpec {
            server: Some("http://x".into()),
            token: Some("TOPSECRET\nx".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(!e.contains("TOPSECRET"), "{e}");
    }
}
