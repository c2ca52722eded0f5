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
/// K3s' configuration file (mode 0600), written by the builder (defaults) and
/// by first boot (merged with node.toml).
pub const K3S_CONFIG: &str = "/etc/rancher/k3s/config.yaml";
/// Where first boot stores the join token (node.toml's `token`, or one it
/// generated for a first server); mode 0600, directory 0700.
pub const K3S_TOKEN_FILE: &str = "/etc/rancher/k3s/edgeimg-token";
/// The K3s binary (with the kubectl, crictl, ctr links beside it).
pub const K3S_BIN: &str = "/usr/local/bin/k3s";
/// Kubeconfig of the kubelet on every K3s node; on an agent, the only
/// credentials on the machine. The node authorizer lets it read its own Node.
pub const K3S_AGENT_KUBECONFIG: &str = "/var/lib/rancher/k3s/agent/kubelet.kubeconfig";
/// Where the builder installs `k3s.service` and `k3s-agent.service` (enabling
/// neither; first boot enables the one for the node's role).
pub const SYSTEMD_UNIT_DIR: &str = "/usr/lib/systemd/system";
/// Where first boot enables the role's unit (a symlink into [`SYSTEMD_UNIT_DIR`]).
pub const MULTI_USER_WANTS_DIR: &str = "/etc/systemd/system/multi-user.target.wants";
/// Printed by `edgeimg-agent ready` when the K3s node reports Ready.
pub const CLUSTER_READY_LINE: &str = "edgeimg: cluster ready";
/// Printed instead of [`CLUSTER_READY_LINE`] when the image carries
/// edgeimg's test stand-in bundle ([`K3sSettings::stand_in`]), which is not K3s.
pub const CLUSTER_READY_STAND_IN_LINE: &str = "edgeimg: cluster ready (stand-in bundle, not K3s)";
/// Prefix of the line printed when the node did not become Ready in time.
pub const CLUSTER_NOT_READY_PREFIX: &str = "edgeimg: cluster not ready: ";
/// Default of [`K3sSettings::cluster_ready_timeout_secs`].
pub const DEFAULT_CLUSTER_READY_TIMEOUT_SECS: u64 = 600;
/// Upper bound of [`K3sSettings::cluster_ready_timeout_secs`]: below the
/// 15 min `TimeoutStartSec=` of edgeimg-ready.service, so the agent reports
/// the timeout itself instead of being killed by systemd.
pub const MAX_CLUSTER_READY_TIMEOUT_SECS: u64 = 840;

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
    /// K3s defaults of the image; `None` builds a plain appliance (no K3s
    /// step on first boot, no cluster wait in `ready`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s: Option<K3sSettings>,
}

/// The K3s role of a node: `server` (control plane, `k3s.service`) or
/// `agent` (worker, `k3s-agent.service`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum K3sRole {
    /// `k3s server`.
    #[default]
    Server,
    /// `k3s agent`.
    Agent,
}

impl K3sRole {
    /// "server" or "agent".
    pub fn as_str(self) -> &'static str {
        match self {
            K3sRole::Server => "server",
            K3sRole::Agent => "agent",
        }
    }

    /// The systemd unit that runs this role, as K3s' installer names it.
    pub fn unit(self) -> &'static str {
        match self {
            K3sRole::Server => "k3s.service",
            K3sRole::Agent => "k3s-agent.service",
        }
    }
}

impl std::fmt::Display for K3sRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The image's K3s defaults (the `k3s` object of image.json). There is
/// deliberately no token here: image.json is world-readable on the read-only
/// root, so a token comes from node.toml, a `token_file`, or is generated on
/// a first server's first boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K3sSettings {
    /// Role of nodes flashed with this image, unless node.toml says otherwise.
    pub role: K3sRole,
    /// Start a new embedded-etcd cluster (`cluster-init`); servers only,
    /// never together with `server`.
    pub cluster_init: bool,
    /// URL of an existing server (`https://host:6443`): required for agents
    /// and for servers joining a cluster.
    pub server: Option<String>,
    /// Absolute path of a file holding the join token (`token-file`).
    pub token_file: Option<String>,
    /// Extra names/addresses for the API server certificate; the hostname is
    /// always added.
    pub tls_san: Vec<String>,
    /// `key=value` node labels.
    pub node_labels: Vec<String>,
    /// `key=value:Effect` node taints (Effect: NoSchedule, PreferNoSchedule,
    /// NoExecute; `=value` may be omitted).
    pub node_taints: Vec<String>,
    /// Packaged components not to deploy (e.g. traefik, servicelb); servers only.
    pub disable: Vec<String>,
    /// True only for edgeimg's labelled test stand-in bundle, never for K3s:
    /// the ready line then says so.
    pub stand_in: bool,
    /// How long `ready` waits for the node to report Ready (1..=840 s).
    pub cluster_ready_timeout_secs: u64,
}

impl Default for K3sSettings {
    fn default() -> Self {
        K3sSettings {
            role: K3sRole::Server,
            cluster_init: false,
            server: None,
            token_file: None,
            tls_san: Vec::new(),
            node_labels: Vec::new(),
            node_taints: Vec::new(),
            disable: Vec::new(),
            stand_in: false,
            cluster_ready_timeout_secs: DEFAULT_CLUSTER_READY_TIMEOUT_SECS,
        }
    }
}

/// node.toml's `[k3s]` table: every key optional, each one set replaces the
/// image's value (lists are replaced, not appended). `token` is a secret: it
/// is written to [`K3S_TOKEN_FILE`] (0600) and never logged; `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sNodeSettings {
    /// Role of this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<K3sRole>,
    /// URL of the server to join (`https://host:6443`). When set and
    /// `cluster_init` is not, the image's `cluster_init` is dropped: a
    /// joining node never initializes a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The join token (secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Absolute path of a file on the device holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Start a new embedded-etcd cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_init: Option<bool>,
    /// `key=value` labels, replacing the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_labels: Option<Vec<String>>,
    /// `key=value:Effect` taints, replacing the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_taints: Option<Vec<String>>,
}

impl std::fmt::Debug for K3sNodeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K3sNodeSettings")
            .field("role", &self.role)
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("cluster_init", &self.cluster_init)
            .field("node_labels", &self.node_labels)
            .field("node_taints", &self.node_taints)
            .finish()
    }
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
    /// K3s settings for this node, over the image's (ignored, with a log
    /// line, when the image has no K3s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s: Option<K3sNodeSettings>,
    /// Update settings for this node, over the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<NodeUpdate>,
}

/// `[update]` of node.toml.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeUpdate {
    /// The update repository this node pulls from, instead of the image's.
    #[serde(default)]
    pub repository: Option<String>,
}

/// True for a POSIX-portable login/group name as useradd accepts it:
/// `^[a-z_][a-z0-9_-]{0,31}$`.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// True for a single-label hostname: 1–63 of `[a-z0-9-]`, not starting or
/// ending with '-'.
pub fn is_valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && !h.starts_with('-')
        && !h.ends_with('-')
        && h.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
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
                crate::bail!(
                    "user {:?}: group name {g:?} is invalid (must match ^[a-z_][a-z0-9_-]{{0,31}}$)",
                    self.name
                );
            }
        }
        if let Some(shell) = &self.shell
            && (!shell.starts_with('/')
                || shell.len() > 255
                || shell.contains(|c: char| c.is_whitespace() || c.is_control() || c == ':'))
        {
            crate::bail!(
                "user {:?}: shell {shell:?} must be an absolute path without ':', spaces or control characters (at most 255 bytes)",
                self.name
            );
        }
        for (i, key) in self.ssh_keys.iter().enumerate() {
            // A newline would smuggle a second entry into authorized_keys.
            if key.trim().is_empty() || key.contains(['\n', '\r']) {
                crate::bail!(
                    "user {:?}: ssh_keys[{i}] must be one non-empty line",
                    self.name
                );
            }
        }
        Ok(())
    }
}

impl ImageConfig {
    /// Parse the JSON written by the builder; errors name `path`.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let cfg: ImageConfig =
            serde_json::from_str(text).with_context(|| format!("parsing {}", path.display()))?;
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
        if let Some(k) = &self.k3s {
            k.validate().map_err(|e| e.context("k3s"))?;
        }
        Ok(())
    }
}

impl NodeConfig {
    /// Parse node.toml; errors name `path` and, for syntax and unknown keys,
    /// the line and column (from the toml crate).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| {
            Error::msg(crate::tomlerr::format(
                &path.display().to_string(),
                text,
                &e,
            ))
        })?;
        cfg.validate().map_err(|e| e.context(path.display()))?;
        Ok(cfg)
    }

    /// Check the hostname (strictly: an operator wrote it, so a bad value is an
    /// error rather than something to rewrite) and the users.
    pub fn validate(&self) -> Result<()> {
        if let Some(h) = &self.hostname
            && !is_valid_hostname(h)
        {
            crate::bail!(
                "hostname = {h:?} is invalid: use 1-63 of a-z 0-9 '-', not starting or ending with '-'"
            );
        }
        for u in &self.users {
            u.validate()?;
        }
        if let Some(k) = &self.k3s {
            k.validate().map_err(|e| e.context("[k3s]"))?;
        }
        if let Some(r) = self.update.as_ref().and_then(|u| u.repository.as_ref()) {
            validate_repository(r).map_err(|e| e.context("[update]"))?;
        }
        Ok(())
    }
}

/// Check an update repository location: one line, an `http://`, `https://`
/// or `file://` URL or an absolute path (a directory, e.g. a USB stick).
/// Other schemes are refused here rather than on every device.
pub fn validate_repository(r: &str) -> Result<()> {
    check_line("repository", r)?;
    let ok = ["http://", "https://", "file:///"]
        .iter()
        .any(|p| r.starts_with(p) && r.len() > p.len())
        || r.starts_with('/');
    if !ok {
        crate::bail!(
            "repository = {r:?} is invalid: expected an http://, https:// or file:// URL or an absolute path"
        );
    }
    Ok(())
}

/// A single-line, non-empty value without control characters (newlines
/// would smuggle extra keys into config files); the error names `what`.
fn check_line(what: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        crate::bail!("{what} is empty");
    }
    if value
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'))
    {
        crate::bail!("{what} = {value:?} must be one line without control characters");
    }
    if value.trim() != value {
        crate::bail!("{what} = {value:?} has leading or trailing whitespace");
    }
    Ok(())
}

/// Check a K3s server URL: `https://HOST[:PORT][/]`, HOST a DNS name, IPv4
/// or `[IPv6]` address, PORT 1-65535 (K3s' is 6443).
pub fn validate_server_url(url: &str) -> Result<()> {
    check_line("server", url)?;
    let bad = |why: &str| {
        Error::msg(format!(
            "server = {url:?} is invalid: {why} (expected e.g. \"https://10.0.0.1:6443\")"
        ))
    };
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(bad("the scheme must be https://"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@', ' ', '\\']) {
        return Err(bad(
            "only https://host:port is allowed, no path, query or user",
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return Err(bad("unclosed '[' in IPv6 address"));
        };
        if h.is_empty()
            || !h
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(bad("malformed IPv6 address"));
        }
        match after {
            "" => (h, None),
            p => match p.strip_prefix(':') {
                Some(port) => (h, Some(port)),
                None => return Err(bad("unexpected text after the IPv6 address")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if !authority.starts_with('[')
        && (host.is_empty()
            || host.starts_with(['-', '.'])
            || host.ends_with('-')
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        return Err(bad("the host must be a DNS name or IP address"));
    }
    if let Some(p) = port
        && !(!p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && matches!(p.parse::<u32>(), Ok(1..=65535)))
    {
        return Err(bad("the port must be a number 1-65535"));
    }
    Ok(())
}

/// Kubernetes qualified name: `[prefix/]name`, prefix a DNS subdomain (<=253),
/// name 1-63 of `[A-Za-z0-9-_.]` starting and ending alphanumeric.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            })
    });
    prefix_ok && !name.is_empty() && is_label_value(name)
}

/// Kubernetes label value: empty, or up to 63 of `[A-Za-z0-9-_.]` starting
/// and ending alphanumeric.
fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// True for a `key=value` node label (Kubernetes syntax for both parts).
pub fn is_valid_node_label(label: &str) -> bool {
    label
        .split_once('=')
        .is_some_and(|(k, v)| is_qualified_name(k) && is_label_value(v))
}

/// True for a `key[=value]:Effect` node taint, Effect one of NoSchedule,
/// PreferNoSchedule, NoExecute.
pub fn is_valid_node_taint(taint: &str) -> bool {
    let Some((kv, effect)) = taint.rsplit_once(':') else {
        return false;
    };
    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
    matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        && is_qualified_name(k)
        && is_label_value(v)
}

fn check_token_file(path: &str) -> Result<()> {
    check_line("token_file", path)?;
    if !path.starts_with('/') {
        crate::bail!("token_file = {path:?} must be an absolute path");
    }
    Ok(())
}

fn check_labels_taints(labels: &[String], taints: &[String]) -> Result<()> {
    for (i, l) in labels.iter().enumerate() {
        check_line(&format!("node_labels[{i}]"), l)?;
        if !is_valid_node_label(l) {
            crate::bail!(
                "node_labels[{i}] = {l:?} is invalid: use key=value (Kubernetes label syntax, e.g. \"topology.kubernetes.io/zone=lab\")"
            );
        }
    }
    for (i, t) in taints.iter().enumerate() {
        check_line(&format!("node_taints[{i}]"), t)?;
        if !is_valid_node_taint(t) {
            crate::bail!(
                "node_taints[{i}] = {t:?} is invalid: use key=value:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute \
                 (e.g. \"dedicated=edge:NoSchedule\")"
            );
        }
    }
    Ok(())
}

impl K3sSettings {
    /// Check every value's shape (URL, paths, labels, taints, names, no
    /// newlines). Whether the combination is complete (an agent has a
    /// server and a token) is checked after merging node.toml, by
    /// the agent's `k3s::plan`.
    pub fn validate(&self) -> Result<()> {
        if let Some(s) = &self.server {
            validate_server_url(s)?;
        }
        if self.cluster_init && self.server.is_some() {
            crate::bail!(
                "cluster_init = true and server are exclusive: a node either starts a cluster or joins one"
            );
        }
        if let Some(t) = &self.token_file {
            check_token_file(t)?;
        }
        for (i, s) in self.tls_san.iter().enumerate() {
            check_line(&format!("tls_san[{i}]"), s)?;
            if s.contains(char::is_whitespace) || s.contains(',') {
                crate::bail!("tls_san[{i}] = {s:?} must be one DNS name or IP address");
            }
        }
        check_labels_taints(&self.node_labels, &self.node_taints)?;
        for (i, d) in self.disable.iter().enumerate() {
            if d.is_empty()
                || !d
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            {
                crate::bail!(
                    "disable[{i}] = {d:?} is invalid: name a K3s component such as traefik, servicelb, metrics-server, local-storage"
                );
            }
        }
        if !(1..=MAX_CLUSTER_READY_TIMEOUT_SECS).contains(&self.cluster_ready_timeout_secs) {
            crate::bail!(
                "cluster_ready_timeout_secs = {} must be 1-{MAX_CLUSTER_READY_TIMEOUT_SECS} (edgeimg-ready.service allows 15 min)",
                self.cluster_ready_timeout_secs
            );
        }
        Ok(())
    }
}

impl K3sNodeSettings {
    /// Check every value's shape; the token is never echoed in errors.
    pub fn validate(&self) -> Result<()> {
        if let Some(s) = &self.server {
            validate_server_url(s)?;
        }
        if self.cluster_init == Some(true) && self.server.is_some() {
            crate::bail!(
                "cluster_init = true and server are exclusive: a node either starts a cluster or joins one"
            );
        }
        if let Some(t) = &self.token {
            // Say what is wrong without quoting the secret.
            if t.trim().is_empty() {
                crate::bail!("token is empty");
            }
            if t.chars().any(|c| c.is_control() || c.is_whitespace()) {
                crate::bail!(
                    "token must be one line without spaces or control characters (value not shown)"
                );
            }
            if self.token_file.is_some() {
                crate::bail!("token and token_file are exclusive");
            }
        }
        if let Some(t) = &self.token_file {
            check_token_file(t)?;
        }
        check_labels_taints(
            self.node_labels.as_deref().unwrap_or_default(),
            self.node_taints.as_deref().unwrap_or_default(),
        )
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

    #[test]
    fn node_update_repository_is_checked() {
        let p = Path::new("node.toml");
        let c = NodeConfig::from_toml("[update]\nrepository = \"/media/usb/repo\"\n", p).unwrap();
        assert_eq!(
            c.update.unwrap().repository.as_deref(),
            Some("/media/usb/repo")
        );
        for bad in [
            "relative/repo",
            "ftp://h/",
            "http://",
            "https://",
            "http://h/\nx",
            "https://h/\nx",
        ] {
            let text = format!("[update]\nrepository = {bad:?}\n");
            let e = NodeConfig::from_toml(&text, p).unwrap_err().to_string();
            assert!(
                e.contains("[update]") && e.contains("repository"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn repository_schemes() {
        for ok in [
            "http://10.0.0.1/fleet",
            "https://updates.example/fleet",
            "https://127.0.0.1:8443/",
            "file:///media/usb/repo",
            "/media/usb/repo",
        ] {
            validate_repository(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "ftp://h/fleet",
            "sftp://h/",
            "https:/h",
            "HTTPS//h",
            "h/fleet",
        ] {
            let e = validate_repository(bad).unwrap_err().to_string();
            assert!(e.contains("https://"), "{bad}: {e}");
        }
        let c = NodeConfig::from_toml(
            "[update]\nrepository = \"https://10.0.0.1/fleet\"\n",
            Path::new("node.toml"),
        )
        .unwrap();
        assert_eq!(
            c.update.unwrap().repository.as_deref(),
            Some("https://10.0.0.1/fleet")
        );
    }

    fn p() -> &'static Path {
        Path::new("/boot/efi/edgeimg/node.toml")
    }

    #[test]
    fn node_toml_unknown_key_names_file_and_line() {
        let err = NodeConfig::from_toml("hostname = \"a\"\n\nhostnme = \"b\"\n", p())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/boot/efi/edgeimg/node.toml:"), "{err}");
        assert!(err.contains("node.toml:3:"), "{err}");
        assert!(err.contains("hostnme"), "{err}");
    }

    #[test]
    fn node_toml_unknown_user_key_rejected() {
        let t = "[[users]]\nname = \"ops\"\nssh_key = \"x\"\n";
        let err = NodeConfig::from_toml(t, p()).unwrap_err().to_string();
        assert!(
            err.contains("node.toml:3:") && err.contains("ssh_key"),
            "{err}"
        );
    }

    #[test]
    fn node_toml_parses_all_optional() {
        assert_eq!(
            NodeConfig::from_toml("", p()).unwrap(),
            NodeConfig::default()
        );
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
        let err = NodeConfig::from_toml("hostname = \"Edge_1\"\n", p())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node.toml") && err.contains("\"Edge_1\""),
            "{err}"
        );
    }

    #[test]
    fn user_name_validation() {
        for ok in ["ops", "_svc", "a", "k3s-admin_2", &"a".repeat(32)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "Ops", "1ops", "-ops", "op s", "op.s", &"a".repeat(33)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        let u = User {
            name: "Bad".into(),
            groups: vec![],
            ssh_keys: vec![],
            shell: None,
        };
        let err = u.validate().unwrap_err().to_string();
        assert!(err.contains("\"Bad\"") && err.contains("^[a-z_]"), "{err}");
        let u = User {
            name: "ok".into(),
            groups: vec![],
            ssh_keys: vec!["a\nb".into()],
            shell: None,
        };
        assert!(
            u.validate()
                .unwrap_err()
                .to_string()
                .contains("ssh_keys[0]")
        );
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
        let err = ImageConfig::from_json(&bad, Path::new(IMAGE_CONFIG_PATH))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(IMAGE_CONFIG_PATH) && err.contains("archh"),
            "{err}"
        );
    }

    #[test]
    fn users_merge() {
        let u = |n: &str, g: &[&str], k: &[&str], s: Option<&str>| User {
            name: n.into(),
            groups: g.iter().map(|x| x.to_string()).collect(),
            ssh_keys: k.iter().map(|x| x.to_string()).collect(),
            shell: s.map(Into::into),
        };
        let image = vec![
            u("ops", &["sudo"], &["k1"], None),
            u("root", &[], &["r1"], None),
        ];
        let node = vec![
            u("dev", &[], &["d1"], Some("/bin/sh")),
            u("ops", &["sudo", "adm"], &["k1", "k2"], Some("/bin/zsh")),
        ];
        let m = merge_users(&image, &node);
        assert_eq!(
            m.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
            ["ops", "root", "dev"]
        );
        assert_eq!(
            m[0],
            u("ops", &["sudo", "adm"], &["k1", "k2"], Some("/bin/zsh"))
        );
        assert_eq!(m[2].shell.as_deref(), Some("/bin/sh"));
    }
}

#[cfg(test)]
mod hostile_tests {
    use super::*;

    #[test]
    fn node_toml_syntax_error_does_not_print_the_token() {
        let text = "hostname = \"edge-1\"\n[k3s]\ntoken = \"K10SECRETSECRET\n";
        let e = NodeConfig::from_toml(text, Path::new("/boot/efi/edgeimg/node.toml"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("K10SECRETSECRET"), "{e}");
        assert!(e.starts_with("/boot/efi/edgeimg/node.toml:3:"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn node_toml_wrong_type_for_token_does_not_print_it() {
        let text = "[k3s]\ntoken = [\"K10SECRETSECRET\"]\n";
        let e = NodeConfig::from_toml(text, Path::new("node.toml"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("K10SECRETSECRET"), "{e}");
        assert!(e.contains("node.toml:2:"), "{e}");
    }

    #[test]
    fn shell_with_colon_or_control_characters_is_refused() {
        for shell in [
            "/bin/sh:x",
            "/bin/sh\u{7}",
            &format!("/{}", "a".repeat(300)),
        ] {
            let text = format!("[[users]]\nname = \"ops\"\nshell = {shell:?}\n");
            let e = NodeConfig::from_toml(&text, Path::new("node.toml"));
            assert!(e.is_err(), "{shell:?} accepted");
        }
    }
}
