//! The `[k3s]` section of edgeimg.toml: which bundle, the node's default role
//! and K3s settings, preloaded images and registry mirrors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgeimg_contract::schema::{K3sRole, K3sSettings};
use serde::Deserialize;
use toml::Spanned;

/// The K3s release edgeimg pins by default (airgap-bundles/).
pub const DEFAULT_BUNDLE: &str = "k3s-v1.36.4+k3s1";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sSection {
    /// K3s is on by default; `false` builds a plain immutable appliance.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A shipped bundle name (`edgeimg bundle list`) or a manifest path.
    #[serde(default = "default_bundle")]
    pub bundle: String,
    #[serde(default)]
    pub role: K3sRole,
    #[serde(default)]
    pub cluster_init: bool,
    pub server: Option<Spanned<String>>,
    /// Refused: a join token here would be baked into every image. The key
    /// is parsed only to point at per-node files (`edgeimg node`).
    pub token: Option<Spanned<toml::Value>>,
    /// Path of a token file inside the image.
    pub token_file: Option<String>,
    #[serde(default)]
    pub tls_san: Vec<String>,
    #[serde(default)]
    pub node_labels: Vec<Spanned<String>>,
    #[serde(default)]
    pub node_taints: Vec<Spanned<String>>,
    /// Packaged components to disable (traefik, servicelb, metrics-server, ...).
    #[serde(default)]
    pub disable: Vec<String>,
    /// BuildKit (from the nerdctl-full archive) with a containerd worker.
    #[serde(default)]
    pub buildkit: bool,
    /// OCI-layout or docker-archive tarballs to preload, relative to the config.
    #[serde(default)]
    pub images: Vec<Spanned<String>>,
    /// registries.yaml mirrors: registry host -> endpoints.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub endpoint: Vec<String>,
}

impl Default for K3sSection {
    fn default() -> Self {
        toml::from_str("").expect("every [k3s] key has a default")
    }
}

fn yes() -> bool {
    true
}
fn default_bundle() -> String {
    DEFAULT_BUNDLE.to_string()
}

/// The validated K3s part of a [`super::Config`].
#[derive(Debug, Clone)]
pub struct K3sConfig {
    pub bundle: String,
    pub settings: K3sSettings,
    pub token: Option<String>,
    pub buildkit: bool,
    pub images: Vec<PathBuf>,
    pub registries_yaml: Option<String>,
}

/// Checks the section; `invalid(span, key, message)` builds an error with the line.
pub fn validate(
    s: &K3sSection,
    base_dir: &Path,
    invalid: &dyn Fn(std::ops::Range<usize>, &str, String) -> super::ConfigError,
) -> Result<Option<K3sConfig>, super::ConfigError> {
    if let Some(t) = &s.token {
        return Err(invalid(
            t.span(),
            "k3s.token",
            "a join token here would be baked into every image built from this file; \
             remove it and give each node its token in a node file (`edgeimg node \
             --token-from FILE -o node.toml`, then `edgeimg flash --node node.toml`)"
                .into(),
        ));
    }
    if !s.enabled {
        return Ok(None);
    }
    if let Some(server) = &s.server {
        if !server.get_ref().starts_with("https://") {
            return Err(invalid(
                server.span(),
                "k3s.server",
                format!(
                    "`{}` must be an https:// URL (e.g. https://10.0.0.1:6443)",
                    server.get_ref()
                ),
            ));
        }
    } else if s.role == K3sRole::Agent {
        return Err(invalid(
            0..0,
            "k3s.role",
            "role \"agent\" needs k3s.server (or set it per node in node.toml)".into(),
        ));
    }
    for l in &s.node_labels {
        if !l.get_ref().contains('=') || l.get_ref().contains(char::is_whitespace) {
            return Err(invalid(
                l.span(),
                "k3s.node_labels",
                format!("`{}` is not key=value", l.get_ref()),
            ));
        }
    }
    for t in &s.node_taints {
        let ok = t
            .get_ref()
            .split_once(':')
            .is_some_and(|(_, e)| ["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e));
        if !ok {
            return Err(invalid(
                t.span(),
                "k3s.node_taints",
                format!(
                    "`{}` is not key=value:Effect (NoSchedule, PreferNoSchedule, NoExecute)",
                    t.get_ref()
                ),
            ));
        }
    }
    let mut images = Vec::new();
    for i in &s.images {
        let p = base_dir.join(i.get_ref());
        if !p.is_file() {
            return Err(invalid(
                i.span(),
                "k3s.images",
                format!(
                    "`{}` is not a file (resolved to {})",
                    i.get_ref(),
                    p.display()
                ),
            ));
        }
        images.push(p);
    }
    let settings = K3sSettings {
        role: s.role,
        cluster_init: s.cluster_init,
        server: s.server.as_ref().map(|x| x.get_ref().clone()),
        token_file: s.token_file.clone(),
        tls_san: s.tls_san.clone(),
        node_labels: s.node_labels.iter().map(|x| x.get_ref().clone()).collect(),
        node_taints: s.node_taints.iter().map(|x| x.get_ref().clone()).collect(),
        disable: s.disable.clone(),
        ..K3sSettings::default()
    };
    Ok(Some(K3sConfig {
        bundle: s.bundle.clone(),
        settings,
        token: None,
        buildkit: s.buildkit,
        images,
        registries_yaml: registries_yaml(&s.mirrors),
    }))
}

/// K3s' registries.yaml for the mirrors (strings JSON-quoted: valid YAML).
fn registries_yaml(mirrors: &BTreeMap<String, Mirror>) -> Option<String> {
    if mirrors.is_empty() {
        return None;
    }
    let q = |s: &str| serde_json::to_string(s).expect("strings serialise");
    let mut y = String::from("# written by edgeimg from [k3s.mirrors]\nmirrors:\n");
    for (host, m) in mirrors {
        y.push_str(&format!("  {}:\n    endpoint:\n", q(host)));
        for e in &m.endpoint {
            y.push_str(&format!("      - {}\n", q(e)));
        }
    }
    Some(y)
}
