//! K3s on first boot: merge node.toml's `[k3s]` over the image's defaults,
//! store the token, write K3s' config.yaml and enable (and start) the unit
//! for the node's role. [`render_config_yaml`] lives in the contract crate:
//! the builder calls it at build time to write the image's default config.yaml.
//!
//! The token is a secret: it is only ever written to [`K3S_TOKEN_FILE`]
//! (0600, directory 0700) and referenced by path (`token-file`); no log line,
//! error, step detail or `Debug` output contains it.

use crate::error::{Context, Result};
use crate::fsutil;
use crate::root::Root;
use crate::schema::{
    K3S_AGENT_KUBECONFIG, K3S_BIN, K3S_CONFIG, K3S_TOKEN_FILE, K3sNodeSettings, K3sRole,
    K3sSettings, MULTI_USER_WANTS_DIR, SYSTEMD_UNIT_DIR,
};
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

// The config.yaml text is written by the builder (the image's default) and
// rewritten here on first boot: one renderer, in the contract.
pub use edgeimg_contract::k3s_config::{merge, render_config_yaml, yaml_quote};

/// Where the token comes from, after merging.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// node.toml's `token` (secret), to be stored at [`K3S_TOKEN_FILE`].
    Node(String),
    /// A `token_file` already on the device (image or node.toml).
    File(String),
    /// None given to a first server: first boot generates one at
    /// [`K3S_TOKEN_FILE`] (kept if it already exists).
    Generate,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Node(_) => f.write_str("Node(<redacted>)"),
            TokenSource::File(p) => write!(f, "File({p:?})"),
            TokenSource::Generate => f.write_str("Generate"),
        }
    }
}

/// What first boot will do for K3s: merged settings and the token's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sPlan {
    /// The image's settings with node.toml's over them.
    pub settings: K3sSettings,
    /// The node.toml part, kept for [`render_config_yaml`].
    pub node: Option<K3sNodeSettings>,
    /// Where the token comes from.
    pub token: TokenSource,
}

/// Merge and check that the result can work: an agent or joining server
/// needs a server URL and a token; `cluster_init` never joins. Run before
/// any first-boot step so a bad node.toml changes nothing.
pub fn plan(image: &K3sSettings, node: Option<&K3sNodeSettings>) -> Result<K3sPlan> {
    let m = merge(image, node);
    m.validate()
        .context("k3s (image.json merged with node.toml)")?;
    let node_token = node.and_then(|n| n.token.clone());
    if m.role == K3sRole::Agent && m.server.is_none() {
        crate::bail!(
            "k3s: role = \"agent\" needs server = \"https://<server>:6443\" (in node.toml's [k3s] or the image's k3s settings)"
        );
    }
    let token = match (node_token, &m.token_file) {
        (Some(t), _) => TokenSource::Node(t),
        (None, Some(f)) => TokenSource::File(f.clone()),
        (None, None) if m.server.is_none() => TokenSource::Generate,
        (None, None) => crate::bail!(
            "k3s: joining {} as {} needs a token: set token (or token_file) in node.toml's [k3s]",
            m.server.as_deref().unwrap_or_default(),
            m.role
        ),
    };
    Ok(K3sPlan {
        settings: m,
        node: node.cloned(),
        token,
    })
}

/// [`plan`] on the device: a token file already at [`K3S_TOKEN_FILE`] (baked
/// by the builder from edgeimg.toml's token, or stored by an earlier,
/// interrupted first boot) counts as the image's `token_file` when the image
/// names none, so a joining node needs no token in node.toml then.
pub fn plan_on_device(
    root: &Root,
    image: &K3sSettings,
    node: Option<&K3sNodeSettings>,
) -> Result<K3sPlan> {
    let mut image = image.clone();
    if image.token_file.is_none()
        && fsutil::read_opt(&root.path(K3S_TOKEN_FILE))?.is_some_and(|t| !t.trim().is_empty())
    {
        image.token_file = Some(K3S_TOKEN_FILE.into());
    }
    plan(&image, node)
}

/// 32 random bytes as 64 hex characters.
fn generate_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    // The running system's /dev/urandom even under a test root: only a source of bytes.
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Create `dir` (and parents) and set it to mode 0700.
fn private_dir(dir: &Path) -> Result<()> {
    fsutil::mkdir_p(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dir.display()))
}

/// Store the token as the plan says; returns the token file's path and a
/// log-safe description.
fn store_token(root: &Root, token: &TokenSource) -> Result<(String, &'static str)> {
    let path = root.path(K3S_TOKEN_FILE);
    match token {
        TokenSource::Node(t) => {
            private_dir(path.parent().expect("token file has a parent"))?;
            fsutil::write_atomic(&path, format!("{t}\n").as_bytes(), 0o600)?;
            Ok((K3S_TOKEN_FILE.into(), "token: set from node.toml"))
        }
        TokenSource::File(f) => {
            if !root.path(f).is_file() {
                // K3s would fail to start; say so now, but it may be provided later.
                crate::log(format!("warning: token_file {f} does not exist (yet)"));
            }
            Ok((f.clone(), "token: from token_file"))
        }
        TokenSource::Generate => {
            private_dir(path.parent().expect("token file has a parent"))?;
            // A rerun of first boot (power cut after this step) keeps the token
            // K3s may already have initialized the cluster with.
            if fsutil::read_opt(&path)?.is_some_and(|t| !t.trim().is_empty()) {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("chmod 0600 {}", path.display()))?;
                return Ok((
                    K3S_TOKEN_FILE.into(),
                    "token: kept the one generated earlier",
                ));
            }
            fsutil::write_atomic(&path, format!("{}\n", generate_token()?).as_bytes(), 0o600)?;
            Ok((K3S_TOKEN_FILE.into(), "token: generated"))
        }
    }
}

/// Point `<wants>/<unit>` at `<unit dir>/<unit>` (replacing whatever is
/// there, atomically) and remove the other role's link.
fn enable_unit(root: &Root, role: K3sRole) -> Result<()> {
    let unit = role.unit();
    let other = match role {
        K3sRole::Server => K3sRole::Agent,
        K3sRole::Agent => K3sRole::Server,
    }
    .unit();
    let unit_file = format!("{SYSTEMD_UNIT_DIR}/{unit}");
    if !root.path(&unit_file).is_file() {
        crate::bail!("{unit_file} is missing: the image was built without the K3s units");
    }
    let wants = root.path(MULTI_USER_WANTS_DIR);
    fsutil::mkdir_p(&wants)?;
    let link = wants.join(unit);
    if fs::read_link(&link).ok().as_deref() != Some(Path::new(&unit_file)) {
        fsutil::symlink_atomic(Path::new(&unit_file), &link)?;
    }
    let other_link = wants.join(other);
    match fs::remove_file(&other_link) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", other_link.display()));
        }
        _ => {}
    }
    Ok(())
}

/// The `k3s` first-boot step: token, config.yaml, unit. Returns a log-safe
/// description (never the token).
pub fn step(root: &Root, plan: &K3sPlan, hostname: &str) -> Result<String> {
    let (token_file, token_note) = store_token(root, &plan.token)?;
    let yaml = render_config_yaml(&plan.settings, None, hostname, Some(&token_file));
    let cfg = root.path(K3S_CONFIG);
    private_dir(cfg.parent().expect("config has a parent"))?;
    fsutil::write_atomic(&cfg, yaml.as_bytes(), 0o600)?;
    let role = plan.settings.role;
    enable_unit(root, role)?;
    // Why start it by hand as well: systemd computed this boot's transaction
    // (default.target and everything it wants) before this agent ran, so the
    // wants symlink made above only takes effect from the next boot. A
    // `systemctl daemon-reload` in the middle of the boot transaction is
    // unsafe (it re-reads every unit while jobs are running), so instead we
    // queue a start job: `--no-block` because this unit runs before
    // sysinit.target and the K3s unit is ordered after the network, so
    // waiting for it here would deadlock the boot. Later boots start it
    // through the wants symlink. (Under a test root the command is recorded.)
    root.run("systemctl", &["--no-block", "start", role.unit()])?;
    let mode = match (role, plan.settings.cluster_init, &plan.settings.server) {
        (K3sRole::Server, true, _) => "server, new cluster (cluster-init)".to_string(),
        (K3sRole::Server, false, None) => "server, single node".to_string(),
        (K3sRole::Server, false, Some(s)) => format!("server joining {s}"),
        (K3sRole::Agent, _, s) => format!("agent of {}", s.as_deref().unwrap_or_default()),
    };
    Ok(format!(
        "{mode}; {token_note}; wrote {K3S_CONFIG}; {} enabled and started",
        role.unit()
    ))
}

/// The readiness question `ready` asks, without the program: appended to
/// `[K3S_BIN, "kubectl"]` (or a test's replacement). Agents have no admin
/// kubeconfig; they use the kubelet's, which may read its own Node.
pub fn kubectl_ready_args(role: K3sRole, hostname: &str) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    if role == K3sRole::Agent {
        a.extend(["--kubeconfig".into(), K3S_AGENT_KUBECONFIG.into()]);
    }
    a.extend(
        [
            "get",
            "node",
            hostname,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
            "--request-timeout=10s",
        ]
        .map(String::from),
    );
    a
}

/// The full default readiness command on the device.
pub fn kubectl_ready_command(root: &Root, role: K3sRole, hostname: &str) -> Vec<String> {
    let mut c = vec![
        root.path(K3S_BIN).to_string_lossy().into_owned(),
        "kubectl".to_string(),
    ];
    c.extend(kubectl_ready_args(role, hostname));
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A scratch root holding the given K3s unit files (as the image has
    /// them; `enable_unit` refuses a missing one).
    fn root_with_units(units: &[&str]) -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        for u in units {
            fsutil::write_atomic(
                &root.path(format!("{SYSTEMD_UNIT_DIR}/{u}")),
                b"[Unit]\n",
                0o644,
            )
            .unwrap();
        }
        (d, root)
    }

    /// The error text of a result that must be an error.
    fn err<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    fn settings() -> K3sSettings {
        K3sSettings {
            cluster_init: true,
            tls_san: vec!["edge.example.com".into(), "edge-1".into()],
            node_labels: vec!["site=lab".into()],
            node_taints: vec!["dedicated=edge:NoSchedule".into()],
            disable: vec!["traefik".into(), "servicelb".into()],
            ..K3sSettings::default()
        }
    }

    #[test]
    fn server_config_snapshot() {
        let y = render_config_yaml(&settings(), None, "edge-1", Some(K3S_TOKEN_FILE));
        assert_eq!(
            y,
            r#"# K3s configuration written by edgeimg (role: server, unit k3s.service).
write-kubeconfig-mode: "0600"
cluster-init: true
token-file: "/etc/rancher/k3s/edgeimg-token"
tls-san:
  - "edge-1"
  - "edge.example.com"
node-label:
  - "site=lab"
node-taint:
  - "dedicated=edge:NoSchedule"
disable:
  - "traefik"
  - "servicelb"
"#
        );
        // Build time (no hostname yet): no empty SAN.
        let y = render_config_yaml(&K3sSettings::default(), None, "", None);
        assert!(!y.contains("tls-san") && !y.contains("\"\""), "{y}");
        // Minimal server: only the mode and the hostname.
        assert_eq!(
            render_config_yaml(&K3sSettings::default(), None, "n", None),
            "# K3s configuration written by edgeimg (role: server, unit k3s.service).\nwrite-kubeconfig-mode: \"0600\"\ntls-san:\n  - \"n\"\n"
        );
    }

    #[test]
    fn agent_config_snapshot_node_overrides() {
        let node = K3sNodeSettings {
            role: Some(K3sRole::Agent),
            server: Some("https://10.0.0.1:6443".into()),
            token: Some("K10secret::server:abc".into()),
            node_labels: Some(vec!["zone=b".into()]),
            ..Default::default()
        };
        let y = render_config_yaml(&settings(), Some(&node), "edge-2", Some(K3S_TOKEN_FILE));
        assert_eq!(
            y,
            r#"# K3s configuration written by edgeimg (role: agent, unit k3s-agent.service).
server: "https://10.0.0.1:6443"
token-file: "/etc/rancher/k3s/edgeimg-token"
node-label:
  - "zone=b"
node-taint:
  - "dedicated=edge:NoSchedule"
"#
        );
        assert!(!y.contains("K10secret"));
        // A joining server drops the image's cluster-init.
        let join = K3sNodeSettings {
            server: Some("https://a:6443".into()),
            ..Default::default()
        };
        let y = render_config_yaml(&settings(), Some(&join), "edge-3", None);
        assert!(
            !y.contains("cluster-init") && y.contains("server: \"https://a:6443\"\n"),
            "{y}"
        );
    }

    #[test]
    fn hostile_strings_are_rejected_or_quoted() {
        // Rendering alone never lets a value escape its scalar.
        let evil = K3sSettings {
            tls_san: vec![
                "a\"\nserver: \"https://evil".into(),
                "b: c # d".into(),
                "é\u{2028}x😀".into(),
            ],
            ..K3sSettings::default()
        };
        let y = render_config_yaml(&evil, None, "h", None);
        assert!(
            y.contains("  - \"a\\\"\\nserver: \\\"https://evil\"\n"),
            "{y}"
        );
        assert!(y.contains("  - \"b: c # d\"\n"), "{y}");
        assert!(y.contains("  - \"\\u00E9\\u2028x\\U0001F600\"\n"), "{y}");
        assert!(y.is_ascii());
        assert_eq!(y.lines().filter(|l| l.starts_with("server")).count(), 0);
        // And validation refuses them in the first place.
        assert!(err(evil.validate()).contains("tls_san[0]"));
        for (field, bad) in [
            (
                "server",
                K3sSettings {
                    server: Some("http://a:6443".into()),
                    ..Default::default()
                },
            ),
            (
                "server",
                K3sSettings {
                    server: Some("https://a:6443\nx: y".into()),
                    ..Default::default()
                },
            ),
            (
                "node_labels[0]",
                K3sSettings {
                    node_labels: vec!["a=b\nc".into()],
                    ..Default::default()
                },
            ),
            (
                "node_labels[0]",
                K3sSettings {
                    node_labels: vec!["a: b".into()],
                    ..Default::default()
                },
            ),
            (
                "node_taints[0]",
                K3sSettings {
                    node_taints: vec!["a=b:Sometimes".into()],
                    ..Default::default()
                },
            ),
            (
                "disable[0]",
                K3sSettings {
                    disable: vec!["traefik\"".into()],
                    ..Default::default()
                },
            ),
            (
                "token_file",
                K3sSettings {
                    token_file: Some("relative".into()),
                    ..Default::default()
                },
            ),
            (
                "cluster_ready_timeout_secs",
                K3sSettings {
                    cluster_ready_timeout_secs: 0,
                    ..Default::default()
                },
            ),
        ] {
            let e = err(bad.validate());
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn yaml_quote_round_trips_through_json() {
        for s in [
            "plain",
            "with \"quotes\" and \\",
            "colon: x",
            "tab\tnl\n",
            "ünï",
        ] {
            let q = yaml_quote(s);
            // serde_json reads \uXXXX too, so the quoted form is still JSON.
            assert_eq!(serde_json::from_str::<String>(&q).unwrap(), s);
        }
    }

    #[test]
    fn plan_rules() {
        let img = K3sSettings::default();
        assert_eq!(plan(&img, None).unwrap().token, TokenSource::Generate);
        let agent = K3sNodeSettings {
            role: Some(K3sRole::Agent),
            ..Default::default()
        };
        assert!(err(plan(&img, Some(&agent))).contains("needs server"));
        let agent = K3sNodeSettings {
            server: Some("https://s:6443".into()),
            ..agent
        };
        assert!(err(plan(&img, Some(&agent))).contains("needs a token"));
        let agent = K3sNodeSettings {
            token: Some("tok".into()),
            ..agent
        };
        let p = plan(&img, Some(&agent)).unwrap();
        assert_eq!(p.token, TokenSource::Node("tok".into()));
        assert!(!format!("{p:?}").contains("tok\""), "{p:?}");
        assert!(!format!("{agent:?}").contains("\"tok\""), "{agent:?}");
        let img_file = K3sSettings {
            token_file: Some("/etc/t".into()),
            ..img
        };
        assert_eq!(
            plan(&img_file, None).unwrap().token,
            TokenSource::File("/etc/t".into())
        );
        // node says cluster_init together with a server: refused.
        let bad = K3sNodeSettings {
            server: Some("https://s:6443".into()),
            cluster_init: Some(true),
            ..Default::default()
        };
        assert!(err(plan(&img_file, Some(&bad))).contains("exclusive"));
    }

    #[test]
    fn baked_token_file_counts_on_device() {
        let (_d, root) = root_with_units(&[]);
        let agent = K3sNodeSettings {
            role: Some(K3sRole::Agent),
            server: Some("https://s:6443".into()),
            ..Default::default()
        };
        assert!(plan_on_device(&root, &K3sSettings::default(), Some(&agent)).is_err());
        fsutil::write_atomic(&root.path(K3S_TOKEN_FILE), b"baked\n", 0o600).unwrap();
        let p = plan_on_device(&root, &K3sSettings::default(), Some(&agent)).unwrap();
        assert_eq!(p.token, TokenSource::File(K3S_TOKEN_FILE.into()));
        // node.toml's token still wins.
        let agent = K3sNodeSettings {
            token: Some("n".into()),
            ..agent
        };
        assert_eq!(
            plan_on_device(&root, &K3sSettings::default(), Some(&agent))
                .unwrap()
                .token,
            TokenSource::Node("n".into())
        );
    }

    /// Entries planted under the old fixed temp name of the wants link
    /// (`.UNIT.tmp.PID`) are neither followed, removed nor renamed: the
    /// link is made under a random name.
    #[test]
    fn the_wants_link_never_uses_a_planted_temp_name() {
        let (d, root) = root_with_units(&["k3s.service", "k3s-agent.service"]);
        let wants = root.path(MULTI_USER_WANTS_DIR);
        fsutil::mkdir_p(&wants).unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, "keep\n").unwrap();
        let planted = wants.join(format!(".k3s.service.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        enable_unit(&root, K3sRole::Server).unwrap();
        assert_eq!(fs::read_link(&planted).unwrap(), victim);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep\n");
        assert_eq!(
            fs::read_link(wants.join("k3s.service")).unwrap(),
            Path::new(SYSTEMD_UNIT_DIR).join("k3s.service")
        );
        // Only the planted link and the wants link: no temp left.
        assert_eq!(fs::read_dir(&wants).unwrap().count(), 2);
    }

    #[test]
    fn step_writes_token_config_and_enables_unit() {
        let (_d, root) = root_with_units(&["k3s.service", "k3s-agent.service"]);
        // A stale server link from an earlier attempt must go.
        fsutil::mkdir_p(&root.path(MULTI_USER_WANTS_DIR)).unwrap();
        std::os::unix::fs::symlink(
            "/usr/lib/systemd/system/k3s.service",
            root.path(MULTI_USER_WANTS_DIR).join("k3s.service"),
        )
        .unwrap();
        let node = K3sNodeSettings {
            role: Some(K3sRole::Agent),
            server: Some("https://10.0.0.1:6443".into()),
            token: Some("s3cr3t-token".into()),
            ..Default::default()
        };
        let p = plan(&K3sSettings::default(), Some(&node)).unwrap();
        let detail = step(&root, &p, "edge-2").unwrap();
        assert_eq!(
            detail,
            "agent of https://10.0.0.1:6443; token: set from node.toml; wrote /etc/rancher/k3s/config.yaml; k3s-agent.service enabled and started"
        );
        assert!(!detail.contains("s3cr3t"));
        let mode = |p: &str| fs::metadata(root.path(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            fs::read_to_string(root.path(K3S_TOKEN_FILE)).unwrap(),
            "s3cr3t-token\n"
        );
        assert_eq!(mode(K3S_TOKEN_FILE), 0o600);
        assert_eq!(mode("/etc/rancher/k3s"), 0o700);
        assert_eq!(mode(K3S_CONFIG), 0o600);
        let cfg = fs::read_to_string(root.path(K3S_CONFIG)).unwrap();
        assert!(
            cfg.contains("token-file: \"/etc/rancher/k3s/edgeimg-token\"\n")
                && !cfg.contains("s3cr3t"),
            "{cfg}"
        );
        let wants = root.path(MULTI_USER_WANTS_DIR);
        assert_eq!(
            fs::read_link(wants.join("k3s-agent.service")).unwrap(),
            Path::new("/usr/lib/systemd/system/k3s-agent.service")
        );
        assert!(fs::symlink_metadata(wants.join("k3s.service")).is_err());
        assert_eq!(
            root.skipped_commands(),
            ["systemctl --no-block start k3s-agent.service"]
        );
        // Idempotent.
        step(&root, &p, "edge-2").unwrap();
    }

    #[test]
    fn first_server_token_generated_once() {
        let (_d, root) = root_with_units(&["k3s.service"]);
        let p = plan(
            &K3sSettings {
                cluster_init: true,
                ..Default::default()
            },
            None,
        )
        .unwrap();
        let detail = step(&root, &p, "edge-1").unwrap();
        assert!(
            detail.starts_with("server, new cluster (cluster-init); token: generated;"),
            "{detail}"
        );
        let tok = fs::read_to_string(root.path(K3S_TOKEN_FILE)).unwrap();
        assert_eq!(tok.trim().len(), 64);
        assert!(!detail.contains(tok.trim()));
        assert!(
            step(&root, &p, "edge-1")
                .unwrap()
                .contains("token: kept the one generated earlier")
        );
        assert_eq!(fs::read_to_string(root.path(K3S_TOKEN_FILE)).unwrap(), tok);
        // Missing unit: a clear error.
        fs::remove_file(root.path(format!("{SYSTEMD_UNIT_DIR}/k3s.service"))).unwrap();
        assert!(err(step(&root, &p, "edge-1")).contains("k3s.service is missing"));
    }

    #[test]
    fn ready_command() {
        let root = Root::new("/");
        assert_eq!(
            kubectl_ready_command(&root, K3sRole::Server, "edge-1").join(" "),
            r#"/usr/local/bin/k3s kubectl get node edge-1 -o jsonpath={.status.conditions[?(@.type=="Ready")].status} --request-timeout=10s"#
        );
        assert!(
            kubectl_ready_args(K3sRole::Agent, "e")
                .starts_with(&["--kubeconfig".into(), K3S_AGENT_KUBECONFIG.into()])
        );
    }
}
