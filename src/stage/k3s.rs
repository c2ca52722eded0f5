//! K3s in the image, following K3s' own conventions: the binary at
//! /usr/local/bin/k3s with the kubectl/crictl/ctr links the installer makes,
//! units equivalent to the installer's, /etc/rancher/k3s/config.yaml (0600),
//! registries.yaml, nerdctl wired to K3s' containerd, BuildKit when asked, and
//! the airgap tarball plus every preloaded image where K3s imports them.
//!
//! The images live on the read-only root (verified, replaced whole by an
//! update) under /usr/lib/edgeimg/k3s-images and appear at K3s' images
//! directory through an overlay mount, whose writable upper layer on the data
//! partition lets K3s keep its import cache (.cache.json) there.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgeimg_contract::schema::{K3S_CONFIG, K3S_TOKEN_FILE, K3sSettings};

use super::in_root::InRoot;
use super::system::{enable, write};
use crate::bundle::ResolvedBundle;

/// Where the images sit on the root, and where K3s looks for them.
pub const IMAGES_ON_ROOT: &str = "usr/lib/edgeimg/k3s-images";
pub const K3S_IMAGES_DIR: &str = "var/lib/rancher/k3s/agent/images";
const IMAGES_MOUNT_UNIT: &str = "var-lib-rancher-k3s-agent-images.mount";

pub struct K3sInput<'a> {
    pub bundle: &'a ResolvedBundle,
    pub settings: &'a K3sSettings,
    /// A join token given at build time (secret: written 0600, never logged).
    pub token: Option<&'a str>,
    pub registries_yaml: Option<String>,
    /// Validated image archives to preload, each with the SHA-256 of the
    /// bytes that were validated (the copy must match it).
    pub preloaded: &'a [(PathBuf, String)],
    pub buildkit: bool,
}

/// What [`place`] reports placing, in its order: `edgeimg plan` lists
/// these. `airgap` is the bundle's air-gap images file (left out when the
/// plan cannot read the bundle's manifest), `preloaded` the archives' names.
pub fn planned(
    registries: bool,
    buildkit: bool,
    airgap: Option<&str>,
    preloaded: &[String],
) -> Vec<String> {
    let mut v: Vec<String> = [
        K3S_BINARY,
        K3S_SERVER_UNIT,
        K3S_AGENT_UNIT,
        K3S_CONFIG.trim_start_matches('/'),
    ]
    .map(String::from)
    .to_vec();
    if registries {
        v.push(REGISTRIES.into());
    }
    v.extend([NERDCTL_BINARY, NERDCTL_CONFIG].map(String::from));
    if buildkit {
        v.extend(BUILDKIT_FILES.map(String::from));
    }
    v.extend(
        airgap
            .into_iter()
            .chain(preloaded.iter().map(String::as_str))
            .map(|n| format!("{IMAGES_ON_ROOT}/{n}")),
    );
    v.push(images_mount_file());
    v
}

/// The unit that overlays the images onto K3s' directory.
fn images_mount_file() -> String {
    format!("usr/lib/systemd/system/{IMAGES_MOUNT_UNIT}")
}

const K3S_BINARY: &str = "usr/local/bin/k3s";
const K3S_SERVER_UNIT: &str = "usr/lib/systemd/system/k3s.service";
const K3S_AGENT_UNIT: &str = "usr/lib/systemd/system/k3s-agent.service";
const REGISTRIES: &str = "etc/rancher/k3s/registries.yaml";
const NERDCTL_BINARY: &str = "usr/local/bin/nerdctl";
const NERDCTL_CONFIG: &str = "etc/nerdctl/nerdctl.toml";
/// buildkitd, buildctl and buildkit.service.
const BUILDKIT_FILES: [&str; 3] = [
    "usr/local/bin/buildkitd",
    "usr/local/bin/buildctl",
    "usr/lib/systemd/system/buildkit.service",
];

/// K3s as its installer lays it out, from the verified bundle: the binary
/// and its links, both roles' units, the config, nerdctl (and BuildKit),
/// and the images K3s imports. Returns the files placed (for the manifest).
pub fn place(tree: &Path, work: &Path, input: &K3sInput) -> Result<Vec<String>> {
    let root = InRoot::open(tree)?;
    let mut placed = Vec::new();
    placed.extend(place_binary(tree, &root, input)?);
    placed.extend(place_units(tree)?);
    placed.extend(place_config(tree, input)?);
    placed.extend(place_nerdctl(tree, work, input)?);
    if input.buildkit {
        placed.extend(place_buildkit(tree, work, input)?);
    }
    placed.extend(place_images(tree, &root, input)?);
    Ok(placed)
}

fn place_binary(tree: &Path, root: &InRoot, input: &K3sInput) -> Result<Vec<String>> {
    let mut placed = Vec::new();
    // The binary and the links K3s' installer creates.
    let b = input.bundle;
    let k3s = super::bundle_files::read_verified(&b.k3s)?;
    write(tree, K3S_BINARY, &k3s, 0o755)?;
    for link in ["kubectl", "crictl", "ctr"] {
        root.symlink(&Path::new("usr/local/bin").join(link), Path::new("k3s"))?;
    }
    placed.push(K3S_BINARY.into());

    Ok(placed)
}

fn place_units(tree: &Path) -> Result<Vec<String>> {
    let mut placed = Vec::new();
    // Units for both roles; the agent enables the one node.toml/edgeimg.toml chooses.
    write(
        tree,
        K3S_SERVER_UNIT,
        unit("server", "Lightweight Kubernetes (server)").as_bytes(),
        0o644,
    )?;
    write(
        tree,
        K3S_AGENT_UNIT,
        unit("agent", "Lightweight Kubernetes (agent)").as_bytes(),
        0o644,
    )?;
    placed.extend([K3S_SERVER_UNIT.into(), K3S_AGENT_UNIT.into()]);

    Ok(placed)
}

fn place_config(tree: &Path, input: &K3sInput) -> Result<Vec<String>> {
    let mut placed = Vec::new();
    // Config (0600: it may point at a token). The agent rewrites it on first
    // boot with the node's hostname and node.toml's overrides.
    let token_file = match input.token {
        Some(t) => {
            write(
                tree,
                K3S_TOKEN_FILE.trim_start_matches('/'),
                format!("{t}\n").as_bytes(),
                0o600,
            )?;
            Some(K3S_TOKEN_FILE)
        }
        None => input.settings.token_file.as_deref(),
    };
    let yaml =
        edgeimg_contract::k3s_config::render_config_yaml(input.settings, None, "", token_file);
    write(
        tree,
        K3S_CONFIG.trim_start_matches('/'),
        yaml.as_bytes(),
        0o600,
    )?;
    placed.push(K3S_CONFIG.trim_start_matches('/').into());
    if let Some(r) = &input.registries_yaml {
        write(tree, REGISTRIES, r.as_bytes(), 0o600)?;
        placed.push(REGISTRIES.into());
    }

    Ok(placed)
}

fn place_nerdctl(tree: &Path, work: &Path, input: &K3sInput) -> Result<Vec<String>> {
    let mut placed = Vec::new();
    let b = input.bundle;
    // nerdctl talking to K3s' containerd, in the namespace pods use.
    let nerdctl_dir = work.join("nerdctl");
    super::bundle_files::extract_verified(&b.nerdctl, &nerdctl_dir, &["nerdctl"])?;
    copy_exec(&nerdctl_dir.join("nerdctl"), tree, NERDCTL_BINARY)?;
    write(tree, NERDCTL_CONFIG, NERDCTL_TOML.as_bytes(), 0o644)?;
    placed.extend([NERDCTL_BINARY.into(), NERDCTL_CONFIG.into()]);

    Ok(placed)
}

fn place_buildkit(tree: &Path, work: &Path, input: &K3sInput) -> Result<Vec<String>> {
    let mut placed = Vec::new();
    let full = input.bundle.nerdctl_full.as_ref().context(
        "BuildKit was asked for but the bundle has no nerdctl-full archive (fetch with --buildkit)",
    )?;
    let full_dir = work.join("nerdctl-full");
    super::bundle_files::extract_verified(full, &full_dir, &["bin/buildkitd", "bin/buildctl"])?;
    let [buildkitd, buildctl, unit_path] = BUILDKIT_FILES;
    copy_exec(&full_dir.join("buildkitd"), tree, buildkitd)?;
    copy_exec(&full_dir.join("buildctl"), tree, buildctl)?;
    write(tree, unit_path, BUILDKIT_UNIT.as_bytes(), 0o644)?;
    enable(tree, "buildkit.service", "multi-user.target")?;
    placed.extend(BUILDKIT_FILES.map(String::from));

    Ok(placed)
}

/// The airgap tarball and preloaded archives on the root, overlaid onto
/// K3s' images directory (upper layer on the data partition).
fn place_images(tree: &Path, root: &InRoot, input: &K3sInput) -> Result<Vec<String>> {
    let mut placed = Vec::new();
    let b = input.bundle;
    let images = Path::new(IMAGES_ON_ROOT);
    root.mkdir_p(images, 0o755)?;
    let mut names = std::collections::BTreeSet::new();
    let mut add_image = |src: &Path, name: &str, sha256: &str| -> Result<()> {
        anyhow::ensure!(
            names.insert(name.to_string()),
            "two preloaded images are both named {name}; rename one"
        );
        super::bundle_files::copy_checked(src, name, sha256, root, &images.join(name))?;
        placed.push(format!("{IMAGES_ON_ROOT}/{name}"));
        Ok(())
    };
    add_image(
        &b.airgap_images.path,
        &b.airgap_images.file,
        &b.airgap_images.sha256,
    )?;
    for (p, sha256) in input.preloaded {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .context("image archive without a file name")?;
        add_image(p, name, sha256)?;
    }
    for d in [
        K3S_IMAGES_DIR,
        "var/lib/edgeimg/k3s-images/upper",
        "var/lib/edgeimg/k3s-images/work",
    ] {
        root.mkdir_p(Path::new(d), 0o755)?;
    }
    // An existing .cache.json turns on K3s' import cache: unchanged tarballs
    // are not imported again on every start.
    write(
        tree,
        "var/lib/edgeimg/k3s-images/upper/.cache.json",
        b"{}\n",
        0o644,
    )?;
    let unit = images_mount_file();
    write(tree, &unit, IMAGES_MOUNT.as_bytes(), 0o644)?;
    placed.push(unit);
    enable(tree, IMAGES_MOUNT_UNIT, "local-fs.target")?;
    Ok(placed)
}

fn copy_exec(src: &Path, tree: &Path, rel: &str) -> Result<()> {
    let bytes = std::fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
    write(tree, rel, &bytes, 0o755)
}

/// The installer's unit, plus the images mount and ordering after first boot.
fn unit(cmd: &str, description: &str) -> String {
    format!(
        "# Equivalent to the unit K3s' install.sh writes; installed by edgeimg. One\n\
# change: it does not wait for network-online.target, which an air-gapped\n\
# device may never reach (systemd-networkd-wait-online would hold K3s 2 minutes).\n\
[Unit]\n\
Description={description}\n\
Documentation=https://k3s.io\n\
After=network.target edgeimg-firstboot.service\n\
Requires={IMAGES_MOUNT_UNIT}\n\
After={IMAGES_MOUNT_UNIT}\n\
# No [Install] section: systemd's first-boot preset-all would enable both\n\
# roles' units. The first-boot agent enables the one for this node's role.\n\
\n\
[Service]\n\
Type=notify\n\
NotifyAccess=all\n\
EnvironmentFile=-/etc/default/%N\n\
EnvironmentFile=-/etc/sysconfig/%N\n\
EnvironmentFile=-/etc/systemd/system/%N.service.env\n\
KillMode=process\n\
Delegate=yes\n\
User=root\n\
LimitNOFILE=1048576\n\
LimitNPROC=infinity\n\
LimitCORE=infinity\n\
TasksMax=infinity\n\
TimeoutStartSec=0\n\
Restart=always\n\
RestartSec=5s\n\
ExecStartPre=-/sbin/modprobe br_netfilter\n\
ExecStartPre=-/sbin/modprobe overlay\n\
ExecStart=/usr/local/bin/k3s {cmd}\n"
    )
}

const IMAGES_MOUNT: &str = "# edgeimg: the images on the read-only root, seen where K3s imports them;\n\
# the upper layer (data partition) holds K3s' .cache.json.\n\
[Unit]\n\
Description=K3s images directory (edgeimg)\n\
RequiresMountsFor=/var /usr\n\
\n\
[Mount]\n\
What=overlay\n\
Where=/var/lib/rancher/k3s/agent/images\n\
Type=overlay\n\
Options=lowerdir=/usr/lib/edgeimg/k3s-images,upperdir=/var/lib/edgeimg/k3s-images/upper,workdir=/var/lib/edgeimg/k3s-images/work\n\
\n\
[Install]\n\
WantedBy=local-fs.target\n";

const NERDCTL_TOML: &str = "# edgeimg: nerdctl talks to K3s' containerd, in the namespace Kubernetes uses,\n\
# so `nerdctl ps` shows the cluster's containers and built images are usable by pods.\n\
address = \"unix:///run/k3s/containerd/containerd.sock\"\n\
namespace = \"k8s.io\"\n";

const BUILDKIT_UNIT: &str = "# edgeimg: BuildKit with its containerd worker on K3s' containerd (OCI worker off),\n\
# so `nerdctl build` makes images pods can use at once.\n\
[Unit]\n\
Description=BuildKit (containerd worker on K3s' containerd)\n\
After=k3s.service k3s-agent.service\n\
\n\
[Service]\n\
ExecStart=/usr/local/bin/buildkitd --oci-worker=false --containerd-worker=true --containerd-worker-addr=/run/k3s/containerd/containerd.sock --containerd-worker-namespace=k8s.io\n\
Restart=always\n\
RestartSec=5s\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n";
