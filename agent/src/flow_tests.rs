//! End-to-end tests of firstboot, ready and status against a temporary root.

use crate::grow::tests::fake_disk;
use crate::schema::{ImageConfig, User, FIRSTBOOT_STAMP, IMAGE_CONFIG_PATH};
use crate::{firstboot, ready, status, Root};
use std::fs;

fn write(root: &Root, path: &str, content: &str) {
    let p = root.path(path);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// A device-like tree: fake disk + sysfs, image.json, /etc basics.
fn device(pattern: &str) -> (tempfile::TempDir, Root) {
    let d = tempfile::tempdir().unwrap();
    let root = Root::new(d.path());
    fake_disk(&root);
    write(&root, "/proc/sys/kernel/random/boot_id", "11111111-aaaa-bbbb-cccc-000000000001\n");
    write(&root, "/etc/machine-id", "uninitialized\n");
    write(&root, "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n");
    write(&root, "/etc/group", "root:x:0:\nsudo:x:27:\n");
    write(&root, "/etc/hosts", "127.0.0.1\tlocalhost\n");
    write(&root, "/usr/bin/ssh-keygen", "");
    write(&root, "/sys/class/dmi/id/product_serial", "SN-42\n");
    let image = ImageConfig {
        name: "edge".into(),
        board: "x86_64".into(),
        arch: "amd64".into(),
        edgeimg_version: "0.1.0".into(),
        hostname_pattern: pattern.into(),
        users: vec![User { name: "root".into(), groups: vec![], ssh_keys: vec!["ssh-ed25519 AAAA img".into()], shell: None }],
        boot_mount: "/boot/efi".into(),
    };
    write(&root, IMAGE_CONFIG_PATH, &serde_json::to_string(&image).unwrap());
    (d, root)
}

#[test]
fn firstboot_runs_once_and_writes_stamp() {
    let (_d, root) = device("{name}-{serial}");
    write(&root, "/boot/efi/edgeimg/node.toml", "[[users]]\nname = \"root\"\nssh_keys = [\"ssh-ed25519 BBBB node\"]\n");
    firstboot::run(&root).unwrap();

    let stamp = firstboot::read_stamp(&root).unwrap().unwrap();
    assert_eq!(stamp.hostname, "edge-sn-42");
    assert_eq!(stamp.boot_id, "11111111-aaaa-bbbb-cccc-000000000001");
    let names: Vec<&str> = stamp.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["grow", "machine-id", "hostname", "ssh-host-keys", "users"]);
    assert_eq!(stamp.steps[0].detail, "/dev/vda4 grown from 31 MiB to 118 MiB");
    assert_eq!(fs::read_to_string(root.path("/etc/hostname")).unwrap(), "edge-sn-42\n");
    assert!(fs::read_to_string(root.path("/etc/hosts")).unwrap().contains("127.0.1.1\tedge-sn-42\n"));
    assert!(crate::machine_id::read(&root).is_ok());
    assert_eq!(
        fs::read_to_string(root.path("/var/roothome/.ssh/authorized_keys")).unwrap(),
        "ssh-ed25519 AAAA img\nssh-ed25519 BBBB node\n"
    );
    assert_eq!(root.skipped_commands(), ["resize2fs /dev/vda4", "ssh-keygen -A"]);
    // Stamp JSON has the documented fields.
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(root.path(FIRSTBOOT_STAMP)).unwrap()).unwrap();
    for k in ["completed_at", "boot_id", "agent_version", "hostname", "steps"] {
        assert!(v.get(k).is_some(), "stamp lacks {k}");
    }

    // Second run: a no-op (nothing executed, stamp untouched).
    let before = fs::read(root.path(FIRSTBOOT_STAMP)).unwrap();
    firstboot::run(&root).unwrap();
    assert_eq!(root.skipped_commands().len(), 2);
    assert_eq!(fs::read(root.path(FIRSTBOOT_STAMP)).unwrap(), before);
}

#[test]
fn node_hostname_wins() {
    let (_d, root) = device("{name}-{serial}");
    write(&root, "/boot/efi/edgeimg/node.toml", "hostname = \"edge-7\"\n");
    firstboot::run(&root).unwrap();
    assert_eq!(firstboot::read_stamp(&root).unwrap().unwrap().hostname, "edge-7");
}

#[test]
fn failing_step_is_named_and_leaves_no_stamp() {
    let (_d, root) = device("{name}-{colour}");
    let err = firstboot::run(&root).unwrap_err().to_string();
    assert!(err.contains("step `hostname`") && err.contains("{colour}"), "{err}");
    assert!(firstboot::read_stamp(&root).unwrap().is_none());

    write(&root, "/boot/efi/edgeimg/node.toml", "hostname = \"a\"\nbogus = 1\n");
    let err = firstboot::run(&root).unwrap_err().to_string();
    assert!(err.contains("step `config`") && err.contains("node.toml") && err.contains("line 2"), "{err}");
    assert!(firstboot::read_stamp(&root).unwrap().is_none());
}

#[test]
fn ready_and_status() {
    let (_d, root) = device("{name}");
    let s = status::collect(&root).unwrap();
    assert!(!s.ready && !s.firstboot_done);
    assert!(status::render_human(&s).starts_with("edgeimg: node not ready: first boot did not complete\n"));
    assert!(ready::run(&root).unwrap_err().to_string().contains("first boot did not complete"));

    firstboot::run(&root).unwrap();
    let s = status::collect(&root).unwrap();
    assert!(!s.ready && s.firstboot_done && s.firstboot_this_boot);
    assert!(status::render_human(&s).starts_with("edgeimg: node not ready: edgeimg-ready.service has not run"));

    ready::run(&root).unwrap();
    ready::run(&root).unwrap(); // restarted in the same boot: counted once
    let s = status::collect(&root).unwrap();
    assert!(s.ready);
    assert_eq!(s.boots, 1);
    assert_eq!(s.hostname.as_deref(), Some("edge"));
    let human = status::render_human(&s);
    assert_eq!(human.lines().next(), Some(crate::schema::READY_LINE));
    assert!(human.contains("(this boot)"));
    let v: serde_json::Value = serde_json::to_value(&s).unwrap();
    for k in ["ready", "firstboot_done", "firstboot_boot_id", "firstboot_this_boot", "boots", "hostname"] {
        assert!(v.get(k).is_some(), "status json lacks {k}");
    }

    // Next boot: not ready until the ready service runs again.
    write(&root, "/proc/sys/kernel/random/boot_id", "11111111-aaaa-bbbb-cccc-000000000002\n");
    let s = status::collect(&root).unwrap();
    assert!(!s.ready && !s.firstboot_this_boot);
    ready::run(&root).unwrap();
    let s = status::collect(&root).unwrap();
    assert!(s.ready);
    assert_eq!(s.boots, 2);
}
