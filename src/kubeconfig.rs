//! `edgeimg kubeconfig`: the flow operators do by hand to reach a node with
//! kubectl from their machine. Takes a K3s node's `/etc/rancher/k3s/k3s.yaml`
//! (from a file, or over SSH with the system `ssh`), points its server URL at
//! the node instead of `127.0.0.1`, names its cluster, user and context after
//! the node (K3s calls all three `default`) and merges them into the
//! operator's kubeconfig, replacing only entries of the same name.
//!
//! The file holds the cluster's admin credentials: nothing here prints or
//! puts into an error any value from it except the server URL and entry
//! names. YAML is handled as a generic [`serde_norway::Value`] so fields this
//! code does not know (extensions, exec plugins, preferences) survive.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_norway::{Mapping, Value};

use crate::cmd::Cmd;

/// Where K3s writes its admin kubeconfig on a server node.
pub const K3S_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("{0}")]
    Input(String),
    #[error("{source_name}: {msg}")]
    Bad { source_name: String, msg: String },
    // The cause follows through the error chain (`{:#}`), not repeated here.
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ssh {target}: {msg}")]
    Ssh { target: String, msg: String },
}

type Result<T> = std::result::Result<T, KubeconfigError>;

/// Where the node's kubeconfig comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A copy of k3s.yaml on this machine.
    File(PathBuf),
    /// `USER@HOST`: read with `ssh USER@HOST [sudo -n] cat /etc/rancher/k3s/k3s.yaml`.
    Ssh {
        target: String,
        /// Extra `-o OPTION`s for ssh (port, identity, known-hosts policy).
        options: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Options {
    pub source: Source,
    /// Host name or address to put into the server URL (default: the SSH host).
    pub server: Option<String>,
    /// Name of the cluster, user and context (default: the server host).
    pub name: Option<String>,
    /// Make the merged context the current one even if another is.
    pub use_context: bool,
    /// Port to put into the server URL (default: the file's, 6443 for K3s).
    pub port: Option<u16>,
    /// The kubeconfig to merge into (default: [`default_target`]).
    pub target: Option<PathBuf>,
}

/// What [`merge`] did; holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub target: PathBuf,
    pub name: String,
    pub server: String,
    /// The target's current-context afterwards.
    pub current_context: String,
    /// Whether the target file was created.
    pub created: bool,
    /// Whether entries named `name` were there already (and were replaced).
    pub replaced: bool,
    /// Whether the file already held exactly these entries (nothing changed).
    pub unchanged: bool,
}

/// `$KUBECONFIG`'s first path (kubectl's merge order writes there too), else
/// `~/.kube/config`.
pub fn default_target() -> Result<PathBuf> {
    if let Some(list) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty())
    {
        return Ok(first);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".kube").join("config")),
        None => Err(KubeconfigError::Input(
            "neither $KUBECONFIG nor $HOME is set: cannot tell where your kubeconfig is".into(),
        )),
    }
}

/// The host part of `USER@HOST` (ssh splits at the last `@`).
pub fn ssh_host(target: &str) -> &str {
    target.rsplit_once('@').map(|(_, h)| h).unwrap_or(target)
}

fn check_ssh_target(target: &str) -> Result<()> {
    let host = ssh_host(target);
    // A leading '-' would be read by ssh as an option.
    if target.starts_with('-') || host.is_empty() || target.chars().any(char::is_whitespace) {
        return Err(KubeconfigError::Input(format!(
            "--ssh {target:?}: expected USER@HOST"
        )));
    }
    Ok(())
}

/// A host for the server URL: a name, IPv4 or IPv6 address (bracketed or
/// not), nothing else (no scheme, port, path or spaces).
fn check_host(flag: &str, h: &str) -> Result<()> {
    let bare = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    let ok = !bare.is_empty()
        && !bare.starts_with('-')
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '%'))
        && (bare == h || bare.contains(':'))
        // A colon only in an IPv6 address (at least two), never HOST:PORT.
        && (bare.matches(':').count() != 1);
    if !ok {
        return Err(KubeconfigError::Input(format!(
            "{flag} {h:?}: expected a host name or address (no scheme, port or path)"
        )));
    }
    Ok(())
}

/// `h` as it goes into a URL: IPv6 addresses in brackets.
fn url_host(h: &str) -> String {
    if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h.to_string()
    }
}

/// The path part of a [`split_url`] rest (`:6443/x` -> `/x`).
fn without_port(rest: &str) -> &str {
    match rest.strip_prefix(':') {
        Some(r) => r.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    }
}

/// Splits `https://HOST[:PORT][/PATH]` into (scheme://, host, rest).
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let i = url.find("://")? + 3;
    let (scheme, after) = url.split_at(i);
    let host_end = if after.starts_with('[') {
        after.find(']')? + 1
    } else {
        after.find([':', '/']).unwrap_or(after.len())
    };
    let (host, rest) = after.split_at(host_end);
    (!host.is_empty()).then_some((scheme, host, rest))
}

/// The addresses K3s writes into k3s.yaml for the node itself.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h == "::1"
        || h.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// The most read from a node: K3s' k3s.yaml is about 3 KiB; the node may
/// be hostile, and what it sends is held in memory and parsed.
pub const MAX_NODE_KUBECONFIG: u64 = 1 << 20;

/// All of `r` when it is at most [`MAX_NODE_KUBECONFIG`] bytes, else
/// `None` (having read one byte past the cap, never the rest).
fn read_capped(r: &mut dyn Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    r.take(MAX_NODE_KUBECONFIG + 1).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= MAX_NODE_KUBECONFIG).then_some(buf))
}

fn too_large(source_name: &str) -> KubeconfigError {
    bad(
        source_name,
        format!(
            "larger than {} MiB: not a K3s kubeconfig (refused without reading the rest)",
            MAX_NODE_KUBECONFIG >> 20
        ),
    )
}

fn utf8(bytes: Vec<u8>, source_name: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| KubeconfigError::Bad {
        source_name: source_name.to_string(),
        msg: "not UTF-8 text".into(),
    })
}

/// Reads the node's kubeconfig text; returns it and a name for messages.
pub fn read_source(source: &Source) -> Result<(String, String)> {
    match source {
        Source::File(p) => {
            let name = p.display().to_string();
            let io = |source| KubeconfigError::Io {
                op: "read",
                path: p.clone(),
                source,
            };
            let mut f = std::fs::File::open(p).map_err(io)?;
            let bytes = read_capped(&mut f)
                .map_err(io)?
                .ok_or_else(|| too_large(&name))?;
            Ok((utf8(bytes, &name)?, name))
        }
        Source::Ssh { target, options } => {
            check_ssh_target(target)?;
            let name = format!("{target}:{K3S_KUBECONFIG}");
            let ssh_err = |msg: String| KubeconfigError::Ssh {
                target: target.clone(),
                msg,
            };
            let (mut ssh, _) = ssh_command(target, options)
                .into_std()
                .map_err(|e| ssh_err(e.to_string()))?;
            let mut child = ssh
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| ssh_err(format!("cannot run ssh: {e}")))?;
            // stderr drained on its own thread (capped too) so neither pipe
            // can fill and stall ssh while the other is read.
            let mut err_pipe = child.stderr.take().expect("stderr is piped");
            let err_reader = std::thread::spawn(move || {
                let mut e = Vec::new();
                let _ = (&mut err_pipe).take(64 * 1024).read_to_end(&mut e);
                let _ = std::io::copy(&mut err_pipe, &mut std::io::sink());
                e
            });
            let mut out_pipe = child.stdout.take().expect("stdout is piped");
            let stdout = read_capped(&mut out_pipe);
            if !matches!(stdout, Ok(Some(_))) {
                let _ = child.kill();
            }
            drop(out_pipe);
            let status = child
                .wait()
                .map_err(|e| ssh_err(format!("waiting for ssh: {e}")))?;
            let stderr = err_reader.join().unwrap_or_default();
            let stdout = match stdout {
                Ok(Some(b)) => b,
                Ok(None) => return Err(too_large(&name)),
                Err(e) => return Err(ssh_err(format!("reading its output: {e}"))),
            };
            let out = std::process::Output {
                status,
                stdout,
                stderr,
            };
            if !out.status.success() {
                // ssh's and sudo's own messages (never the file: cat failed).
                let err = String::from_utf8_lossy(&out.stderr);
                let last = err
                    .lines()
                    .map(str::trim)
                    .rfind(|l| !l.is_empty())
                    .unwrap_or("no error output");
                return Err(KubeconfigError::Ssh {
                    target: target.clone(),
                    msg: format!("reading {K3S_KUBECONFIG} failed ({}): {last}", out.status),
                });
            }
            Ok((utf8(out.stdout, &name)?, name))
        }
    }
}

/// The command `--ssh` runs: `ssh -o BatchMode=yes [-o OPTION...] --
/// USER@HOST cat /etc/rancher/k3s/k3s.yaml`, through `sudo -n` (never
/// prompting) unless USER is root. BatchMode: no password or host-key
/// prompt can hang a script; use an agent/key and a known host (or
/// `--ssh-option StrictHostKeyChecking=accept-new`).
pub fn ssh_command(target: &str, options: &[String]) -> Cmd {
    let mut c = Cmd::new(crate::cmd::SSH).args(["-o", "BatchMode=yes"]);
    for o in options {
        c = c.arg("-o").arg(o);
    }
    c = c.arg("--").arg(target);
    let user = target.rsplit_once('@').map(|(u, _)| u);
    if user == Some("root") {
        c.args(["cat", K3S_KUBECONFIG])
    } else {
        c.args(["sudo", "-n", "cat", K3S_KUBECONFIG])
    }
}

fn bad(source_name: &str, msg: impl Into<String>) -> KubeconfigError {
    KubeconfigError::Bad {
        source_name: source_name.to_string(),
        msg: msg.into(),
    }
}

/// Parses kubeconfig YAML. Only the parser's position is kept from its
/// error: a message quoting the text could quote a key.
fn parse(text: &str, source_name: &str) -> Result<Mapping> {
    if text.trim().is_empty() {
        return Ok(Mapping::new());
    }
    let v: Value = serde_norway::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
            .unwrap_or_default();
        bad(source_name, format!("not valid YAML{at}"))
    })?;
    match v {
        Value::Mapping(m) => Ok(m),
        Value::Null => Ok(Mapping::new()),
        _ => Err(bad(
            source_name,
            "not a kubeconfig (the top level is not a mapping)",
        )),
    }
}

/// `m[key]` as a list of entries (absent or null: empty).
fn entries<'a>(m: &'a Mapping, key: &str, source_name: &str) -> Result<&'a [Value]> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Sequence(s)) => Ok(s),
        Some(_) => Err(bad(source_name, format!("`{key}` is not a list"))),
    }
}

fn entry_name(e: &Value) -> Option<&str> {
    e.get("name").and_then(Value::as_str)
}

/// The entry of `key` named `name`, or an error naming both.
fn find<'a>(m: &'a Mapping, key: &str, name: &str, source_name: &str) -> Result<&'a Value> {
    entries(m, key, source_name)?
        .iter()
        .find(|e| entry_name(e) == Some(name))
        .ok_or_else(|| bad(source_name, format!("no {key} entry named {name:?}")))
}

/// The bodies of the node's cluster, user and context (not yet named), with
/// the server URL pointed at `server_host` when it is a loopback address (or
/// always when `force_server`).
struct NodeEntries {
    cluster: Mapping,
    user: Value,
    context: Mapping,
    server: String,
}

impl NodeEntries {
    /// Host of the (rewritten) server URL, without brackets.
    fn server_host(&self) -> &str {
        split_url(&self.server)
            .map(|(_, h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or_default()
    }

    /// The three entries, named `name`, the context pointing at the other two.
    fn named(self, name: &str) -> [(&'static str, Value); 3] {
        let entry = |body_key: &str, body: Value| {
            let mut e = Mapping::new();
            e.insert("name".into(), Value::String(name.into()));
            e.insert(body_key.into(), body);
            Value::Mapping(e)
        };
        let mut ctx = self.context;
        ctx.insert("cluster".into(), Value::String(name.into()));
        ctx.insert("user".into(), Value::String(name.into()));
        [
            ("clusters", entry("cluster", Value::Mapping(self.cluster))),
            ("users", entry("user", self.user)),
            ("contexts", entry("context", Value::Mapping(ctx))),
        ]
    }
}

fn node_entries(
    text: &str,
    source_name: &str,
    server_host: Option<&str>,
    force_server: bool,
    port: Option<u16>,
) -> Result<NodeEntries> {
    let m = parse(text, source_name)?;
    if entries(&m, "clusters", source_name)?.is_empty() {
        return Err(bad(source_name, "not a kubeconfig (no clusters)"));
    }
    // The context K3s' file selects; else its only one.
    let contexts = entries(&m, "contexts", source_name)?;
    let ctx_name = match m.get("current-context").and_then(Value::as_str) {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => match contexts {
            [one] => entry_name(one)
                .ok_or_else(|| bad(source_name, "its context has no name"))?
                .to_string(),
            _ => {
                return Err(bad(
                    source_name,
                    "no current-context, and not exactly one context to take",
                ));
            }
        },
    };
    let ctx = find(&m, "contexts", &ctx_name, source_name)?;
    let ctx_body = ctx
        .get("context")
        .and_then(Value::as_mapping)
        .ok_or_else(|| {
            bad(
                source_name,
                format!("context {ctx_name:?} has no `context`"),
            )
        })?;
    let field = |k: &str| {
        ctx_body
            .get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(source_name, format!("context {ctx_name:?} names no {k}")))
    };
    let (cluster_name, user_name) = (field("cluster")?, field("user")?);
    let cluster = find(&m, "clusters", cluster_name, source_name)?;
    let user = find(&m, "users", user_name, source_name)?;

    let mut cluster_body = cluster
        .get("cluster")
        .and_then(Value::as_mapping)
        .cloned()
        .ok_or_else(|| {
            bad(
                source_name,
                format!("cluster {cluster_name:?} has no `cluster`"),
            )
        })?;
    let url = cluster_body
        .get("server")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad(
                source_name,
                format!("cluster {cluster_name:?} has no server URL"),
            )
        })?;
    let (scheme, host, rest) = split_url(url).ok_or_else(|| {
        bad(
            source_name,
            format!("cluster {cluster_name:?}: server {url:?} is not a URL"),
        )
    })?;
    // --port replaces the URL's port (K3s writes 6443; a forwarded or
    // proxied API server listens elsewhere).
    let rest = match port {
        Some(p) => format!(":{p}{}", without_port(rest)),
        None => rest.to_string(),
    };
    let server = match server_host {
        Some(h) if force_server || is_loopback(host) => format!("{scheme}{}{rest}", url_host(h)),
        None if is_loopback(host) => {
            return Err(KubeconfigError::Input(format!(
                "{source_name} points at {url}, the node's own loopback address: give the node's name or address with --server"
            )));
        }
        _ => format!("{scheme}{host}{rest}"),
    };
    cluster_body.insert("server".into(), Value::String(server.clone()));
    Ok(NodeEntries {
        cluster: cluster_body,
        user: user
            .get("user")
            .cloned()
            .unwrap_or(Value::Mapping(Mapping::new())),
        context: ctx_body.clone(),
        server,
    })
}

/// Puts `entry` into `m[key]` in place of the entry of the same name (at its
/// position), else at the end. Returns whether one was replaced.
fn upsert(m: &mut Mapping, key: &str, entry: Value, target_name: &str) -> Result<bool> {
    let name = entry_name(&entry)
        .expect("our entries are named")
        .to_string();
    let list = m
        .entry(key.into())
        .or_insert_with(|| Value::Sequence(vec![]));
    if list.is_null() {
        *list = Value::Sequence(vec![]);
    }
    let Value::Sequence(s) = list else {
        return Err(bad(target_name, format!("`{key}` is not a list")));
    };
    match s.iter_mut().find(|e| entry_name(e) == Some(name.as_str())) {
        Some(old) => {
            *old = entry;
            Ok(true)
        }
        None => {
            s.push(entry);
            Ok(false)
        }
    }
}

/// Merges the node's kubeconfig from `o.source` into the target kubeconfig.
/// The target is only replaced (atomically, same mode, 0600 when new) after
/// everything parsed; on any error it is untouched.
pub fn merge(o: &Options) -> Result<Outcome> {
    if let Some(s) = &o.server {
        check_host("--server", s)?;
    }
    // The host for the URL: --server, else the SSH host.
    let server_host = match (&o.server, &o.source) {
        (Some(s), _) => Some(s.clone()),
        (None, Source::Ssh { target, .. }) => {
            check_ssh_target(target)?;
            Some(ssh_host(target).to_string())
        }
        (None, Source::File(_)) => None,
    };
    if let Some(n) = &o.name
        && (n.trim().is_empty() || n.chars().any(char::is_control))
    {
        return Err(KubeconfigError::Input(format!(
            "--name {n:?}: expected a non-empty name"
        )));
    }
    let (text, source_name) = read_source(&o.source)?;
    let e = node_entries(
        &text,
        &source_name,
        server_host.as_deref(),
        o.server.is_some(),
        o.port,
    )?;
    // Name: --name, else the host the server URL names.
    let name = o
        .name
        .clone()
        .unwrap_or_else(|| e.server_host().to_string());
    let server = e.server.clone();

    let target = match &o.target {
        Some(t) => t.clone(),
        None => default_target()?,
    };
    // A symlinked kubeconfig is updated where it points, not replaced by a file.
    let target = match std::fs::canonicalize(&target) {
        Ok(real) => real,
        Err(_) => target,
    };
    let target_name = target.display().to_string();
    let (existing, mode) = match std::fs::read_to_string(&target) {
        Ok(t) => {
            let mode = std::fs::metadata(&target)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o600);
            (Some(t), mode)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => (None, 0o600),
        Err(source) => {
            return Err(KubeconfigError::Io {
                op: "read",
                path: target,
                source,
            });
        }
    };
    let created = existing.is_none();
    let mut m = parse(existing.as_deref().unwrap_or(""), &target_name)?;
    // A rerun with the same inputs must say so rather than "replaced".
    let before = (!created).then(|| m.clone());
    for (k, v) in [("apiVersion", "v1"), ("kind", "Config")] {
        if !m.contains_key(k) {
            m.insert(k.into(), Value::String(v.into()));
        }
    }
    let mut replaced = false;
    for (key, entry) in e.named(&name) {
        replaced |= upsert(&mut m, key, entry, &target_name)?;
    }
    let current = m
        .get("current-context")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(String::from);
    let current = match current {
        Some(c) if !o.use_context => c,
        _ => {
            m.insert("current-context".into(), Value::String(name.clone()));
            name.clone()
        }
    };
    let unchanged = before.as_ref() == Some(&m);
    let yaml = serde_norway::to_string(&Value::Mapping(m))
        .map_err(|err| bad(&target_name, format!("cannot serialise: {err}")))?;
    write_atomic(&target, yaml.as_bytes(), mode)?;
    Ok(Outcome {
        unchanged,
        target,
        name,
        server,
        current_context: current,
        created,
        replaced,
    })
}

/// Writes `data` to a temporary file beside `path` with `mode`, syncs it and
/// renames it over `path`; creates the directory (0700) when missing.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| KubeconfigError::Io {
                op: "create directory",
                path: dir.into(),
                source,
            })?;
    }
    let io = |op: &'static str| {
        move |source| KubeconfigError::Io {
            op,
            path: path.into(),
            source,
        }
    };
    // NamedTempFile is created 0600 and removed if anything below fails.
    let mut tmp = tempfile::Builder::new()
        .prefix(".edgeimg-kubeconfig.")
        .tempfile_in(dir)
        .map_err(io("create a temporary file beside"))?;
    tmp.write_all(data).map_err(io("write"))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod"))?;
    tmp.as_file().sync_all().map_err(io("sync"))?;
    tmp.persist(path).map_err(|e| KubeconfigError::Io {
        op: "replace",
        path: path.into(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_and_loopback() {
        assert_eq!(
            split_url("https://127.0.0.1:6443"),
            Some(("https://", "127.0.0.1", ":6443"))
        );
        assert_eq!(
            split_url("https://[::1]:6443/x"),
            Some(("https://", "[::1]", ":6443/x"))
        );
        assert_eq!(split_url("https://h"), Some(("https://", "h", "")));
        assert_eq!(split_url("nope"), None);
        assert_eq!(without_port(":6443/x"), "/x");
        assert_eq!(without_port(":6443"), "");
        assert_eq!(without_port("/x"), "/x");
        for h in ["127.0.0.1", "localhost", "[::1]", "127.0.0.53"] {
            assert!(is_loopback(h), "{h}");
        }
        assert!(!is_loopback("10.0.0.1") && !is_loopback("edge-1"));
        assert_eq!(url_host("fd00::5"), "[fd00::5]");
        assert_eq!(url_host("edge-1.lan"), "edge-1.lan");
    }

    #[test]
    fn host_and_target_checks() {
        for ok in ["edge-1", "10.0.0.5", "fd00::5", "[fd00::5]", "a.b.c"] {
            check_host("--server", ok).unwrap();
        }
        for bad in ["", "https://a", "a:6443", "a/b", "a b", "-oProxy", "[a]"] {
            assert!(check_host("--server", bad).is_err(), "{bad}");
        }
        assert!(check_ssh_target("-oProxyCommand=x").is_err());
        assert!(check_ssh_target("root@").is_err());
        check_ssh_target("ops@edge-1").unwrap();
        assert_eq!(ssh_host("a@b@c"), "c");
    }

    #[test]
    fn ssh_runs_cat_through_sudo_unless_root() {
        let args = |t: &str| ssh_command(t, &["Port=2222".into()]).cmdline();
        assert_eq!(
            args("ops@edge-1"),
            "ssh -o BatchMode=yes -o Port=2222 -- ops@edge-1 sudo -n cat /etc/rancher/k3s/k3s.yaml"
        );
        assert_eq!(
            args("root@edge-1"),
            "ssh -o BatchMode=yes -o Port=2222 -- root@edge-1 cat /etc/rancher/k3s/k3s.yaml"
        );
    }
}
