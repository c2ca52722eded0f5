//! The changes that make a Debian tree an edgeimg root: read-only friendly
//! layout, identity removed (each node makes its own on first boot), the agent
//! and its units, fstab and network defaults.

use std::path::Path;

use anyhow::{Context, Result};

use super::in_root::InRoot;
use crate::agents;

/// Values the system files are made from.
pub struct SystemInput<'a> {
    pub agent: &'a [u8],
    pub image_config: &'a edgeimg_contract::schema::ImageConfig,
    pub boot_partuuid: String,
    /// Extra lines for /usr/lib/os-release (IMAGE_ID=..., ...).
    pub os_release_extra: Vec<(String, String)>,
}

/// The units the agent runs, and the target each is enabled for (none: the
/// pull service, which its timer starts, and the USB update service, which
/// its udev rule starts).
const AGENT_UNITS: [(&str, &str, &str); 6] = [
    (
        "edgeimg-firstboot.service",
        agents::FIRSTBOOT_UNIT,
        "sysinit.target",
    ),
    (
        "edgeimg-ready.service",
        agents::READY_UNIT,
        "multi-user.target",
    ),
    (
        "edgeimg-update-health.service",
        agents::UPDATE_HEALTH_UNIT,
        "multi-user.target",
    ),
    ("edgeimg-update-pull.service", agents::UPDATE_PULL_UNIT, ""),
    ("edgeimg-update-usb@.service", agents::UPDATE_USB_UNIT, ""),
    (
        "edgeimg-update-pull.timer",
        agents::UPDATE_PULL_TIMER,
        "timers.target",
    ),
];

const DHCP_NETWORK: &str = "etc/systemd/network/80-edgeimg-dhcp.network";
/// What the agent is and which units run it, for whoever looks in the root.
const AGENT_README: &str = "usr/lib/edgeimg/README.md";

/// What [`apply`] reports placing in a root with sshd and systemd-networkd
/// (every edgeimg base has both: openssh-server and systemd are required
/// packages), in its order: `edgeimg plan` lists these.
pub fn planned() -> Vec<String> {
    let mut v = vec![
        edgeimg_contract::ssh::SSHD_DROP_IN
            .trim_start_matches('/')
            .to_string(),
        SSH_SERVICE_DROP_IN.to_string(),
        "etc/fstab".to_string(),
        agents::AGENT_PATH.to_string(),
        AGENT_README.to_string(),
        edgeimg_contract::schema::IMAGE_CONFIG_PATH
            .trim_start_matches('/')
            .to_string(),
    ];
    v.extend(
        AGENT_UNITS
            .iter()
            .map(|(name, _, _)| format!("usr/lib/systemd/system/{name}")),
    );
    v.push(agents::UPDATE_USB_RULE_PATH.to_string());
    v.push(DHCP_NETWORK.to_string());
    v
}

/// Everything the system needs beyond the Debian base, in the staged tree:
/// per-node identity left empty, sshd's settings, the read-only root's
/// directory layout, the agent and its units, networking, os-release.
/// Returns the files placed (for the manifest).
pub fn apply(tree: &Path, input: &SystemInput) -> Result<Vec<String>> {
    let root = InRoot::open(tree)?;
    let mut placed = Vec::new();
    clear_identity(tree, &root)?;
    placed.extend(configure_ssh(tree)?);
    lay_out_dirs(&root)?;
    write(
        tree,
        "etc/fstab",
        fstab(&input.boot_partuuid).as_bytes(),
        0o644,
    )?;
    placed.push("etc/fstab".into());
    placed.extend(install_agent(tree, input)?);
    disable_e2scrub_reap(&root)?;
    placed.extend(configure_network(tree)?);
    extend_os_release(&root, input)?;
    Ok(placed)
}

fn clear_identity(tree: &Path, root: &InRoot) -> Result<()> {
    // Identity is per node: systemd makes the machine-id on every device's
    // first boot, the agent makes SSH host keys. Empty, not "uninitialized"
    // (machine-id(5), "First Boot Semantics"): an empty file gets an id
    // written at once but is no systemd first boot, so PID 1 does not run
    // `preset-all` on the device. Debian ships no "disable *" preset, so
    // preset-all enabled every unit with an [Install] section (ssh.socket
    // beside ssh.service, journald's audit socket, wait-online, ...), on
    // every later boot too, and cost seconds on slow boards. The units the
    // image enables are the ones its build enabled, as `edgeimg inspect`
    // shows. The agent's own first boot does not depend on systemd's.
    write(tree, "etc/machine-id", b"", 0o444)?;
    root.remove(Path::new("var/lib/dbus/machine-id"))?;
    if let Some(ssh) = root.host_dir(Path::new("etc/ssh"))? {
        for e in std::fs::read_dir(&ssh).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                root.remove(&Path::new("etc/ssh").join(e.file_name()))?;
            }
        }
    }
    write(tree, "etc/hostname", b"localhost\n", 0o644)?;
    Ok(())
}

/// sshd's drop-ins, when the base has sshd.
fn configure_ssh(tree: &Path) -> Result<Vec<String>> {
    let mut placed = Vec::new();
    // sshd uses exactly the host keys the agent makes (no RSA: see sshkeys.rs).
    if tree.join("usr/sbin/sshd").exists() {
        let rel = edgeimg_contract::ssh::SSHD_DROP_IN.trim_start_matches('/');
        write(
            tree,
            rel,
            edgeimg_contract::ssh::sshd_drop_in().as_bytes(),
            0o644,
        )?;
        placed.push(rel.into());
    }
    if tree.join("usr/lib/systemd/system/ssh.service").exists() {
        write(
            tree,
            SSH_SERVICE_DROP_IN,
            SSH_NO_PRE_CHECK.as_bytes(),
            0o644,
        )?;
        placed.push(SSH_SERVICE_DROP_IN.into());
    }

    Ok(placed)
}

fn lay_out_dirs(root: &InRoot) -> Result<()> {
    // Home directories live on the data partition (the root is read-only).
    relocate_to_var(root, "home", "home")?;
    relocate_to_var(root, "root", "roothome")?;
    root.mkdir_p(Path::new("boot/efi"), 0o755)?;
    // raspi-firmware's hooks copy the firmware, kernel and initrd here; edgeimg
    // lays out the real boot partition itself, so the copies would only waste space.
    if let Some(fw) = root.host_dir(Path::new("boot/firmware"))? {
        std::fs::remove_dir_all(&fw)?;
        root.mkdir(Path::new("boot/firmware"), 0o755)?;
    }

    Ok(())
}

/// The agent binary, its notes, the image's `image.json` and its units.
fn install_agent(tree: &Path, input: &SystemInput) -> Result<Vec<String>> {
    let mut placed = Vec::new();
    write(tree, agents::AGENT_PATH, input.agent, 0o755)?;
    placed.push(agents::AGENT_PATH.into());
    write(tree, AGENT_README, agents::README.as_bytes(), 0o644)?;
    placed.push(AGENT_README.into());
    let image_json = serde_json::to_vec_pretty(input.image_config)?;
    write(
        tree,
        edgeimg_contract::schema::IMAGE_CONFIG_PATH.trim_start_matches('/'),
        &image_json,
        0o644,
    )?;
    placed.push(
        edgeimg_contract::schema::IMAGE_CONFIG_PATH
            .trim_start_matches('/')
            .into(),
    );

    for (name, text, target) in AGENT_UNITS {
        let unit = format!("usr/lib/systemd/system/{name}");
        write(tree, &unit, agents::render(text).as_bytes(), 0o644)?;
        if !target.is_empty() {
            enable(tree, name, target)?;
        }
        placed.push(unit);
    }
    // A medium labelled for updates starts edgeimg-update-usb@.service.
    write(
        tree,
        agents::UPDATE_USB_RULE_PATH,
        agents::render(agents::UPDATE_USB_RULE).as_bytes(),
        0o644,
    )?;
    placed.push(agents::UPDATE_USB_RULE_PATH.into());

    Ok(placed)
}

fn disable_e2scrub_reap(root: &InRoot) -> Result<()> {
    // e2scrub_reap removes e2scrub's stale LVM snapshots at every boot; an
    // edgeimg disk has no LVM, so it would only spend a boot-time second
    // (its shell script and LVM tools) on finding none.
    for target in ["default.target", "multi-user.target"] {
        let link =
            Path::new("etc/systemd/system").join(format!("{target}.wants/e2scrub_reap.service"));
        root.remove(&link)
            .context("cannot disable e2scrub_reap.service")?;
    }

    Ok(())
}

fn configure_network(tree: &Path) -> Result<Vec<String>> {
    let mut placed = Vec::new();
    // DHCP on wired interfaces through systemd-networkd, if the suite ships it.
    if tree
        .join("usr/lib/systemd/system/systemd-networkd.service")
        .exists()
    {
        write(tree, DHCP_NETWORK, NETWORK_DHCP.as_bytes(), 0o644)?;
        enable(tree, "systemd-networkd.service", "multi-user.target")?;
        if tree
            .join("usr/lib/systemd/system/systemd-networkd.socket")
            .exists()
        {
            enable(tree, "systemd-networkd.socket", "sockets.target")?;
        }
        placed.push(DHCP_NETWORK.into());
    }

    Ok(placed)
}

/// os-release gains the image's own fields (name, board, version...).
fn extend_os_release(root: &InRoot, input: &SystemInput) -> Result<()> {
    let os_release = Path::new("usr/lib/os-release");
    let mut text = root
        .read_to_string(os_release)?
        .context("the base has no /usr/lib/os-release")?;
    for (k, v) in &input.os_release_extra {
        text.push_str(&format!("{k}=\"{v}\"\n"));
    }
    root.write_file(os_release, text.as_bytes(), 0o644)?;
    Ok(())
}

const SSH_SERVICE_DROP_IN: &str = "etc/systemd/system/ssh.service.d/50-edgeimg.conf";

/// Debian's ssh.service runs `sshd -t` before `sshd -D`; sshd -D checks the
/// same configuration and fails the same way (exit 255, which the unit does
/// not restart on), so the extra exec only delayed every boot's sshd (and the
/// ready line after it) by ~0.5 s on slow boards. Reloads keep their check.
const SSH_NO_PRE_CHECK: &str = "# edgeimg: sshd -D checks its configuration itself; no separate `sshd -t` at start.\n[Service]\nExecStartPre=\n";

const NETWORK_DHCP: &str = "# edgeimg default: DHCP on wired interfaces. Override with an overlay.\n[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n";

/// The boot partition is `nofail` (a node boots without it) with systemd's
/// usual 90 s device timeout: the initramfs does not run udev, so the
/// partition's device unit only appears once udev has been triggered in the
/// real root, which takes well over 10 s on a slow board or under QEMU TCG.
/// First boot does not wait for this mount: it reads node.toml straight from
/// the partition when the mount is not there yet (agent bootpart.rs), and
/// waits for the mount, up to this same timeout, only when that fails.
fn fstab(boot_partuuid: &str) -> String {
    format!(
        "# edgeimg: / (EROFS, read-only), /var (data) and /etc (overlay) are mounted by the initramfs.\n\
         PARTUUID={boot_partuuid} /boot/efi vfat umask=0077,nofail,x-systemd.device-timeout=90s 0 2\n\
         tmpfs /tmp tmpfs mode=1777,nosuid,nodev 0 0\n"
    )
}

/// Replaces `/<dir>` by a symlink to `var/<target>`, moving its content into
/// the image's /var (which seeds the data partition on first boot).
fn relocate_to_var(root: &InRoot, dir: &str, target: &str) -> Result<()> {
    let from = Path::new(dir);
    let to = Path::new("var").join(target);
    match root.lstat(from)? {
        Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => return Ok(()),
        Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
            root.mkdir_p(Path::new("var"), 0o755)?;
            root.rename(from, &to)?;
        }
        _ => root.mkdir_p(&to, 0o755)?,
    }
    root.symlink(from, Path::new(&format!("var/{target}")))
}

/// `systemctl enable` without systemctl: the wants symlink.
/// The link is placed through [`InRoot`], like every write into the tree.
pub fn enable(tree: &Path, unit: &str, target: &str) -> Result<()> {
    let root = InRoot::open(tree)?;
    let dir = Path::new("etc/systemd/system").join(format!("{target}.wants"));
    root.mkdir_p(&dir, 0o755)
        .and_then(|()| {
            root.symlink(
                &dir.join(unit),
                Path::new(&format!("/usr/lib/systemd/system/{unit}")),
            )
        })
        .with_context(|| format!("cannot enable {unit}"))
}

/// Writes `rel` under `tree` (creating parents) with `mode`, resolved inside
/// the tree ([`InRoot::write`]): a link in the base cannot send it out.
pub fn write(tree: &Path, rel: &str, content: &[u8], mode: u32) -> Result<()> {
    InRoot::open(tree)?.write(Path::new(rel), content, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `planned` is what `apply` places in a root that has sshd and
    /// systemd-networkd, as every edgeimg base does.
    #[test]
    fn planned_is_what_apply_places() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path();
        for f in [
            "usr/sbin/sshd",
            "usr/lib/systemd/system/ssh.service",
            "usr/lib/systemd/system/systemd-networkd.service",
        ] {
            write(tree, f, b"", 0o644).unwrap();
        }
        write(tree, "usr/lib/os-release", b"ID=debian\n", 0o644).unwrap();
        let image_config = edgeimg_contract::schema::ImageConfig {
            name: "x".into(),
            board: "x86_64".into(),
            arch: "amd64".into(),
            edgeimg_version: crate::VERSION.into(),
            hostname_pattern: "{name}".into(),
            users: Vec::new(),
            boot_mount: "/boot/efi".into(),
            k3s: None,
        };
        let placed = apply(
            tree,
            &SystemInput {
                agent: b"agent",
                image_config: &image_config,
                boot_partuuid: "0".repeat(36),
                os_release_extra: Vec::new(),
            },
        )
        .unwrap();
        assert_eq!(placed, planned());
        for p in &placed {
            assert!(tree.join(p).is_file(), "{p}");
        }
        usb_update_rule_and_unit(tree);
    }

    /// The USB update rule starts the template unit for a vfat or ext4
    /// filesystem with the contract's label; the unit runs the agent on
    /// that device and is enabled by nothing else.
    fn usb_update_rule_and_unit(tree: &Path) {
        let label = edgeimg_contract::update::USB_LABEL;
        let rule = std::fs::read_to_string(tree.join(agents::UPDATE_USB_RULE_PATH)).unwrap();
        let lines: Vec<&str> = rule
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        let matching = lines
            .iter()
            .find(|l| l.contains("SYSTEMD_WANTS"))
            .expect("a SYSTEMD_WANTS line");
        for want in [
            &format!("ENV{{ID_FS_LABEL}}==\"{label}\""),
            "ENV{ID_FS_TYPE}==\"vfat|ext4\"",
            "ENV{ID_FS_USAGE}==\"filesystem\"",
            "TAG+=\"systemd\"",
            "ENV{SYSTEMD_WANTS}+=\"edgeimg-update-usb@%k.service\"",
        ] {
            assert!(matching.contains(want), "{want} in {matching}");
        }
        assert!(!rule.contains("@USB_LABEL@"), "{rule}");
        // Every GOTO has its LABEL; every line is a rule of key-op-value pairs.
        for l in &lines {
            if let Some(g) = l.split("GOTO=\"").nth(1) {
                let target = g.split('"').next().unwrap();
                assert!(rule.contains(&format!("LABEL=\"{target}\"")), "{l}");
            }
            for pair in l.split(", ") {
                assert!(
                    ["==", "!=", "+=", "="].iter().any(|op| pair.contains(op))
                        && pair.ends_with('"'),
                    "{pair:?} in {l:?}"
                );
            }
        }
        let unit = std::fs::read_to_string(
            tree.join("usr/lib/systemd/system/edgeimg-update-usb@.service"),
        )
        .unwrap();
        assert!(unit.contains(&format!("labelled {label} ")), "{unit}");
        assert!(!unit.contains("@USB_LABEL@"));
        assert!(unit.contains(
            "ExecStart=/usr/lib/edgeimg/edgeimg-agent update usb --device /dev/%I --reboot"
        ));
        assert!(unit.contains("BindsTo=dev-%i.device"));
        assert!(!unit.contains("[Install]"), "started by the rule only");
        assert!(
            !tree
                .join("etc/systemd/system/multi-user.target.wants/edgeimg-update-usb@.service")
                .exists()
        );
    }
}
