//! K3s' config.yaml as edgeimg writes it: the builder renders the image's
//! default at build time, the agent renders the merged node's on first boot.
//! One renderer, so both write the same keys the same way.

use crate::schema::{K3sNodeSettings, K3sRole, K3sSettings};

/// `s` as a YAML double-quoted scalar: serde_json's string escaping (valid
/// YAML escapes), with every non-ASCII character escaped as well (`\uXXXX`,
/// or `\UXXXXXXXX` beyond the BMP, since YAML has no surrogate pairs; and
/// YAML 1.1 parsers treat U+0085, U+2028, U+2029 as line breaks). The result
/// is pure ASCII, one line, and cannot end the scalar early.
pub fn yaml_quote(s: &str) -> String {
    let json = serde_json::to_string(s).expect("a string serializes");
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c as u32 {
            0..=0x7f => out.push(c),
            n @ 0x80..=0xffff => out.push_str(&format!("\\u{n:04X}")),
            n => out.push_str(&format!("\\U{n:08X}")),
        }
    }
    out
}

/// The image's settings with node.toml's values over them (each key set in
/// node.toml replaces the image's; lists are replaced). A node that names a
/// `server` without saying `cluster_init` joins: the image's `cluster_init`
/// is dropped. The token is not part of the result (see [`plan`]).
pub fn merge(image: &K3sSettings, node: Option<&K3sNodeSettings>) -> K3sSettings {
    let mut m = image.clone();
    let Some(n) = node else { return m };
    if let Some(r) = n.role {
        m.role = r;
    }
    if let Some(s) = &n.server {
        m.server = Some(s.clone());
        m.cluster_init = false;
    }
    if let Some(ci) = n.cluster_init {
        m.cluster_init = ci;
    }
    if n.token.is_some() {
        // The token will be stored at K3S_TOKEN_FILE; see the agent's k3s::plan.
        m.token_file = None;
    }
    if let Some(t) = &n.token_file {
        m.token_file = Some(t.clone());
    }
    if let Some(l) = &n.node_labels {
        m.node_labels = l.clone();
    }
    if let Some(t) = &n.node_taints {
        m.node_taints = t.clone();
    }
    m
}

/// K3s' config.yaml for `settings` merged with `node` (see [`merge`]), with
/// keys spelled as K3s spells its flags. `token_file`, when given, overrides
/// the merged `token-file` (first boot passes [`crate::schema::K3S_TOKEN_FILE`] after
/// storing a token there). `hostname` is always the first `tls-san` (none
/// when it is empty, as at build time).
/// Server-only keys (`write-kubeconfig-mode`, `cluster-init`, `tls-san`,
/// `disable`) are left out for agents. Every string is a quoted scalar
/// ([`yaml_quote`]), so no value can inject a key; values are expected to
/// have been validated already ([`K3sSettings::validate`]).
pub fn render_config_yaml(
    settings: &K3sSettings,
    node: Option<&K3sNodeSettings>,
    hostname: &str,
    token_file: Option<&str>,
) -> String {
    let m = merge(settings, node);
    let server = m.role == K3sRole::Server;
    let mut y = format!(
        "# K3s configuration written by edgeimg (role: {}, unit {}).\n",
        m.role,
        m.role.unit()
    );
    let list = |y: &mut String, key: &str, items: &[&str]| {
        if !items.is_empty() {
            y.push_str(&format!("{key}:\n"));
            for i in items {
                y.push_str(&format!("  - {}\n", yaml_quote(i)));
            }
        }
    };
    if server {
        y.push_str("write-kubeconfig-mode: \"0600\"\n");
        if m.cluster_init {
            y.push_str("cluster-init: true\n");
        }
    }
    if let Some(s) = &m.server {
        y.push_str(&format!("server: {}\n", yaml_quote(s)));
    }
    if let Some(t) = token_file.or(m.token_file.as_deref()) {
        y.push_str(&format!("token-file: {}\n", yaml_quote(t)));
    }
    if server {
        // The builder renders the image's default before any hostname exists.
        let mut sans: Vec<&str> = if hostname.is_empty() {
            vec![]
        } else {
            vec![hostname]
        };
        for s in &m.tls_san {
            if !sans.contains(&s.as_str()) {
                sans.push(s);
            }
        }
        list(&mut y, "tls-san", &sans);
    }
    list(
        &mut y,
        "node-label",
        &m.node_labels.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    list(
        &mut y,
        "node-taint",
        &m.node_taints.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    if server {
        list(
            &mut y,
            "disable",
            &m.disable.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    y
}
