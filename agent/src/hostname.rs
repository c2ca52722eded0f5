//! The node's hostname: node.toml's `hostname`, else the image's pattern
//! rendered with facts about this device, sanitized into a valid hostname.

use crate::error::{Context, Result};
use crate::fsutil;
use crate::root::Root;
use crate::schema::{ImageConfig, NodeConfig};
use std::fs;

/// Values the pattern's placeholders may use. `mac` and `serial` are optional
/// because a device may have neither; using a missing one is an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `{name}`: the image name.
    pub name: String,
    /// `{board}`: the board name.
    pub board: String,
    /// `{machine_id}`: the first 8 chars of /etc/machine-id.
    pub machine_id: String,
    /// `{mac}`: MAC of the first non-loopback interface, without colons.
    pub mac: Option<String>,
    /// `{serial}`: board/DMI serial, or the short machine id.
    pub serial: String,
}

impl Facts {
    /// Gather facts from sysfs and /etc under `root`.
    pub fn gather(root: &Root, image: &ImageConfig) -> Result<Facts> {
        let machine_id: String = crate::machine_id::read(root)?.chars().take(8).collect();
        let serial = read_serial(root).unwrap_or_else(|| machine_id.clone());
        Ok(Facts {
            name: image.name.clone(),
            board: image.board.clone(),
            machine_id,
            mac: first_mac(root),
            serial,
        })
    }
}

/// First non-empty serial from the device tree (NUL-terminated there) or DMI.
fn read_serial(root: &Root) -> Option<String> {
    [
        "/sys/firmware/devicetree/base/serial-number",
        "/sys/class/dmi/id/product_serial",
    ]
    .iter()
    .filter_map(|p| fs::read(root.path(p)).ok())
    .map(|b| {
        String::from_utf8_lossy(&b)
            .replace('\0', "")
            .trim()
            .to_string()
    })
    .find(|s| !s.is_empty())
}

/// MAC (no colons) of the first interface, in name order, that is not `lo`
/// and whose address is not all zeros (tunnels, dummies).
fn first_mac(root: &Root) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir(root.path("/sys/class/net"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names.iter().find_map(|n| {
        let addr = fs::read_to_string(root.path(format!("/sys/class/net/{n}/address"))).ok()?;
        let hex: String = addr
            .trim()
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        (!hex.is_empty() && hex.chars().any(|c| c != '0')).then_some(hex)
    })
}

/// Replace `{placeholder}`s in `pattern`; an unknown or unclosed placeholder
/// is an error naming it.
pub fn render(pattern: &str, facts: &Facts) -> Result<String> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            crate::bail!("hostname_pattern {pattern:?}: unclosed '{{'");
        };
        let key = &after[..close];
        let value = match key {
            "name" => facts.name.clone(),
            "board" => facts.board.clone(),
            "machine_id" => facts.machine_id.clone(),
            "serial" => facts.serial.clone(),
            "mac" => match &facts.mac {
                Some(m) => m.clone(),
                None => crate::bail!(
                    "hostname_pattern {pattern:?}: {{mac}} used but no network interface has a MAC address"
                ),
            },
            other => crate::bail!(
                "hostname_pattern {pattern:?}: unknown placeholder {{{other}}} (known: name, board, machine_id, mac, serial)"
            ),
        };
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Make `raw` a valid hostname label: lowercase, anything outside [a-z0-9-]
/// becomes '-', runs of '-' collapse, at most 63 chars, no '-' at either end.
pub fn sanitize(raw: &str) -> Result<String> {
    let mut s = String::new();
    for c in raw.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && s.ends_with('-')) {
            s.push(c);
        }
    }
    let s: String = s.trim_matches('-').chars().take(63).collect();
    let s = s.trim_end_matches('-').to_string();
    if s.is_empty() {
        crate::bail!("hostname {raw:?} has no usable characters after sanitizing");
    }
    Ok(s)
}

/// Decide the hostname: node.toml wins, else the rendered pattern.
pub fn decide(root: &Root, image: &ImageConfig, node: Option<&NodeConfig>) -> Result<String> {
    if let Some(h) = node.and_then(|n| n.hostname.clone()) {
        return Ok(h); // validated when node.toml was parsed
    }
    let facts = Facts::gather(root, image)?;
    sanitize(&render(&image.hostname_pattern, &facts)?)
}

/// Set `127.0.1.1 <hostname>` in an /etc/hosts text: replace the existing
/// 127.0.1.1 line (Debian's convention for the own name) or append one.
pub fn update_hosts(hosts: &str, hostname: &str) -> String {
    let line = format!("127.0.1.1\t{hostname}");
    let mut found = false;
    let mut out: Vec<String> = Vec::new();
    for l in hosts.lines() {
        if l.split_whitespace().next() == Some("127.0.1.1") {
            if !found {
                out.push(line.clone());
            }
            found = true;
        } else {
            out.push(l.to_string());
        }
    }
    if !found {
        out.push(line);
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// Write /etc/hostname and /etc/hosts and set the kernel hostname.
pub fn apply(root: &Root, hostname: &str) -> Result<()> {
    fsutil::write_atomic(
        &root.path("/etc/hostname"),
        format!("{hostname}\n").as_bytes(),
        0o644,
    )?;
    let hosts_path = root.path("/etc/hosts");
    let hosts = fsutil::read_opt(&hosts_path)?.unwrap_or_else(|| "127.0.0.1\tlocalhost\n".into());
    let new = update_hosts(&hosts, hostname);
    if new != hosts {
        fsutil::write_atomic(&hosts_path, new.as_bytes(), 0o644)?;
    }
    if root.is_host() {
        // SAFETY: pointer and length describe a live byte slice.
        let rc = unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("sethostname({hostname:?})"));
        }
    }
    Ok(())
}

/// The hostname step of first boot.
pub fn step(root: &Root, image: &ImageConfig, node: Option<&NodeConfig>) -> Result<String> {
    let h = decide(root, image, node)?;
    apply(root, &h)?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            name: "Edge".into(),
            board: "rpi4".into(),
            machine_id: "0123abcd".into(),
            mac: Some("dca632aabbcc".into()),
            serial: "10000000ABCDEF".into(),
        }
    }

    #[test]
    fn renders_placeholders() {
        assert_eq!(
            render("{name}-{board}-{serial}", &facts()).unwrap(),
            "Edge-rpi4-10000000ABCDEF"
        );
        assert_eq!(
            render("n{machine_id}.{mac}", &facts()).unwrap(),
            "n0123abcd.dca632aabbcc"
        );
        assert_eq!(render("plain", &facts()).unwrap(), "plain");
    }

    #[test]
    fn unknown_placeholder_named() {
        let e = render("{name}-{seriall}", &facts())
            .unwrap_err()
            .to_string();
        assert!(e.contains("{seriall}"), "{e}");
        assert!(
            render("{name", &facts())
                .unwrap_err()
                .to_string()
                .contains("unclosed")
        );
        let f = Facts {
            mac: None,
            ..facts()
        };
        assert!(render("{mac}", &f).unwrap_err().to_string().contains("MAC"));
    }

    #[test]
    fn sanitizes() {
        assert_eq!(sanitize("Edge_Node.01").unwrap(), "edge-node-01");
        assert_eq!(sanitize("--a  b--").unwrap(), "a-b");
        assert_eq!(sanitize(&"x".repeat(70)).unwrap().len(), 63);
        assert_eq!(
            sanitize(&format!("{}-y", "x".repeat(62))).unwrap(),
            "x".repeat(62)
        );
        assert!(sanitize("__").is_err());
    }

    #[test]
    fn hosts_update() {
        let h = "127.0.0.1\tlocalhost\n127.0.1.1\told\n::1 localhost\n";
        assert_eq!(
            update_hosts(h, "new"),
            "127.0.0.1\tlocalhost\n127.0.1.1\tnew\n::1 localhost\n"
        );
        assert_eq!(
            update_hosts("127.0.0.1 localhost", "n"),
            "127.0.0.1 localhost\n127.0.1.1\tn\n"
        );
        let twice = update_hosts(&update_hosts(h, "n"), "n");
        assert_eq!(twice.matches("127.0.1.1").count(), 1);
    }

    #[test]
    fn gathers_mac_and_serial_from_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let w = |p: &str, s: &[u8]| {
            let p = root.path(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, s).unwrap();
        };
        w("/etc/machine-id", b"0123456789abcdef0123456789abcdef\n");
        w("/sys/class/net/lo/address", b"00:00:00:00:00:00\n");
        w("/sys/class/net/tunl0/address", b"00:00:00:00:00:00\n");
        w("/sys/class/net/eth0/address", b"DC:A6:32:01:02:03\n");
        w("/sys/class/net/wlan0/address", b"dc:a6:32:09:09:09\n");
        w(
            "/sys/firmware/devicetree/base/serial-number",
            b"10000000abc\0",
        );
        let image = ImageConfig {
            name: "edge".into(),
            board: "rpi4".into(),
            arch: "arm64".into(),
            edgeimg_version: "0".into(),
            hostname_pattern: "{name}-{mac}-{serial}".into(),
            users: vec![],
            boot_mount: "/boot/efi".into(),
            k3s: None,
        };
        let f = Facts::gather(&root, &image).unwrap();
        assert_eq!(f.mac.as_deref(), Some("dca632010203"));
        assert_eq!(f.serial, "10000000abc");
        assert_eq!(
            decide(&root, &image, None).unwrap(),
            "edge-dca632010203-10000000abc"
        );
    }
}
