//! End-to-end tests of firstboot, ready and status against a temporary root.

use crate::grow::tests::fake_disk;
use crate::ready::{ReadyInfo, ReadyOptions};
use crate::schema::{
    CLUSTER_READY_LINE, FIRSTBOOT_STAMP, IMAGE_CONFIG_PATH, ImageConfig, K3S_CONFIG,
    K3S_TOKEN_FILE, K3sRole, K3sSettings, READY_FILE, READY_LINE, User,
};
use crate::{Root, firstboot, ready, status};
use std::fs;
use std::time::Duration;

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
    write(
        &root,
        "/proc/sys/kernel/random/boot_id",
        "11111111-aaaa-bbbb-cccc-000000000001\n",
    );
    // As the image ships it (systemd normally fills it before the agent runs).
    write(&root, "/etc/machine-id", "");
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
        users: vec![User {
            name: "root".into(),
            groups: vec![],
            ssh_keys: vec!["ssh-ed25519 AAAA img".into()],
            shell: None,
        }],
        boot_mount: "/boot/efi".into(),
        k3s: None,
    };
    write(
        &root,
        IMAGE_CONFIG_PATH,
        &serde_json::to_string(&image).unwrap(),
    );
    (d, root)
}

#[test]
fn firstboot_runs_once_and_writes_stamp() {
    let (_d, root) = device("{name}-{serial}");
    write(
        &root,
        "/boot/efi/edgeimg/node.toml",
        "[[users]]\nname = \"root\"\nssh_keys = [\"ssh-ed25519 BBBB node\"]\n",
    );
    firstboot::run(&root).unwrap();

    let stamp = firstboot::read_stamp(&root).unwrap().unwrap();
    assert_eq!(stamp.hostname, "edge-sn-42");
    assert_eq!(stamp.boot_id, "11111111-aaaa-bbbb-cccc-000000000001");
    let names: Vec<&str> = stamp.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["grow", "machine-id", "hostname", "ssh-host-keys", "users"]
    );
    assert_eq!(
        stamp.steps[0].detail,
        "/dev/vda4 grown from 31 MiB to 118 MiB"
    );
    assert_eq!(
        fs::read_to_string(root.path("/etc/hostname")).unwrap(),
        "edge-sn-42\n"
    );
    assert!(
        fs::read_to_string(root.path("/etc/hosts"))
            .unwrap()
            .contains("127.0.1.1\tedge-sn-42\n")
    );
    assert!(crate::machine_id::read(&root).is_ok());
    assert_eq!(
        fs::read_to_string(root.path("/var/roothome/.ssh/authorized_keys")).unwrap(),
        "ssh-ed25519 AAAA img\nssh-ed25519 BBBB node\n"
    );
    // Host keys are made in a directory of random name (16 hex digits).
    let commands: Vec<String> = root
        .skipped_commands()
        .into_iter()
        .map(|c| match c.find(".tmp.") {
            Some(i) if c.len() > i + 21 => format!("{}RANDOM{}", &c[..i + 5], &c[i + 21..]),
            _ => c,
        })
        .collect();
    assert_eq!(
        commands,
        [
            "resize2fs /dev/vda4",
            "ssh-keygen -q -t ed25519 -N  -f /etc/ssh/.ssh_host_ed25519_key.tmp.RANDOM/ssh_host_ed25519_key",
            "ssh-keygen -q -t ecdsa -N  -f /etc/ssh/.ssh_host_ecdsa_key.tmp.RANDOM/ssh_host_ecdsa_key"
        ]
    );
    // Stamp JSON has the documented fields.
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(root.path(FIRSTBOOT_STAMP)).unwrap()).unwrap();
    for k in [
        "completed_at",
        "boot_id",
        "agent_version",
        "hostname",
        "steps",
    ] {
        assert!(v.get(k).is_some(), "stamp lacks {k}");
    }

    // Second run: a no-op (nothing executed, stamp untouched).
    let before = fs::read(root.path(FIRSTBOOT_STAMP)).unwrap();
    firstboot::run(&root).unwrap();
    assert_eq!(root.skipped_commands().len(), 3);
    assert_eq!(fs::read(root.path(FIRSTBOOT_STAMP)).unwrap(), before);
}

#[test]
fn node_hostname_wins() {
    let (_d, root) = device("{name}-{serial}");
    write(
        &root,
        "/boot/efi/edgeimg/node.toml",
        "hostname = \"edge-7\"\n",
    );
    firstboot::run(&root).unwrap();
    assert_eq!(
        firstboot::read_stamp(&root).unwrap().unwrap().hostname,
        "edge-7"
    );
}

#[test]
fn failing_step_is_named_and_leaves_no_stamp() {
    let (_d, root) = device("{name}-{colour}");
    let err = firstboot::run(&root).unwrap_err().to_string();
    assert!(
        err.contains("step `hostname`") && err.contains("{colour}"),
        "{err}"
    );
    assert!(firstboot::read_stamp(&root).unwrap().is_none());

    write(
        &root,
        "/boot/efi/edgeimg/node.toml",
        "hostname = \"a\"\nbogus = 1\n",
    );
    let err = firstboot::run(&root).unwrap_err().to_string();
    assert!(
        err.contains("step `config`") && err.contains("node.toml:2:"),
        "{err}"
    );
    assert!(firstboot::read_stamp(&root).unwrap().is_none());
}

#[test]
fn ready_and_status() {
    let (_d, root) = device("{name}");
    let s = status::collect(&root).unwrap();
    assert!(!s.ready && !s.firstboot_done);
    assert!(
        status::render_human(&s)
            .starts_with("edgeimg: node not ready: first boot did not complete\n")
    );
    assert!(
        ready::run(&root)
            .unwrap_err()
            .to_string()
            .contains("first boot did not complete")
    );

    firstboot::run(&root).unwrap();
    let s = status::collect(&root).unwrap();
    assert!(!s.ready && s.firstboot_done && s.firstboot_this_boot);
    assert!(
        status::render_human(&s)
            .starts_with("edgeimg: node not ready: edgeimg-ready.service has not run")
    );

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
    for k in [
        "ready",
        "firstboot_done",
        "firstboot_boot_id",
        "firstboot_this_boot",
        "boots",
        "hostname",
    ] {
        assert!(v.get(k).is_some(), "status json lacks {k}");
    }

    // Next boot: not ready until the ready service runs again.
    write(
        &root,
        "/proc/sys/kernel/random/boot_id",
        "11111111-aaaa-bbbb-cccc-000000000002\n",
    );
    let s = status::collect(&root).unwrap();
    assert!(!s.ready && !s.firstboot_this_boot);
    ready::run(&root).unwrap();
    let s = status::collect(&root).unwrap();
    assert!(s.ready);
    assert_eq!(s.boots, 2);
}

/// `device` with K3s in image.json and both K3s units installed.
fn k3s_device(k3s: K3sSettings) -> (tempfile::TempDir, Root) {
    let (d, root) = device("{name}");
    let mut image: ImageConfig =
        serde_json::from_str(&fs::read_to_string(root.path(IMAGE_CONFIG_PATH)).unwrap()).unwrap();
    image.k3s = Some(k3s);
    write(
        &root,
        IMAGE_CONFIG_PATH,
        &serde_json::to_string(&image).unwrap(),
    );
    write(&root, "/usr/lib/systemd/system/k3s.service", "[Unit]\n");
    write(
        &root,
        "/usr/lib/systemd/system/k3s-agent.service",
        "[Unit]\n",
    );
    write(&root, "/dev/console", "");
    (d, root)
}

/// A fake `k3s` (run through /bin/sh, so no exec of a just-written file):
/// counts its calls, records its arguments, and answers with `script`
/// (shell code that sees the call number in $n).
fn fake_k3s(root: &Root, script: &str) -> ReadyOptions {
    let bin = root.path("/usr/local/bin/k3s");
    let count = root.path("/tmp/k3s-calls");
    let args = root.path("/tmp/k3s-args");
    fs::create_dir_all(root.path("/tmp")).unwrap();
    write(
        root,
        "/usr/local/bin/k3s",
        &format!(
            "n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{c}'\necho \"$@\" > '{a}'\n{script}\n",
            c = count.display(),
            a = args.display()
        ),
    );
    ReadyOptions {
        poll_interval: Duration::from_millis(20),
        // Bounded so a broken fake fails the test quickly.
        timeout: Some(Duration::from_secs(20)),
        kubectl: Some(vec![
            "/bin/sh".into(),
            bin.to_string_lossy().into_owned(),
            "kubectl".into(),
        ]),
        ..ReadyOptions::default()
    }
}

fn calls(root: &Root) -> u32 {
    fs::read_to_string(root.path("/tmp/k3s-calls"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn ready_info(root: &Root) -> ReadyInfo {
    serde_json::from_str(&fs::read_to_string(root.path(READY_FILE)).unwrap()).unwrap()
}

#[test]
fn k3s_firstboot_merges_node_and_keeps_token_secret() {
    let (_d, root) = k3s_device(K3sSettings {
        cluster_init: true,
        disable: vec!["traefik".into()],
        ..Default::default()
    });
    write(
        &root,
        "/boot/efi/edgeimg/node.toml",
        "hostname = \"edge-2\"\n[k3s]\nrole = \"agent\"\nserver = \"https://10.0.0.1:6443\"\ntoken = \"K10topsecret::server:xyz\"\nnode_labels = [\"zone=b\"]\n",
    );
    firstboot::run(&root).unwrap();
    let stamp = firstboot::read_stamp(&root).unwrap().unwrap();
    let names: Vec<&str> = stamp.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "grow",
            "machine-id",
            "hostname",
            "ssh-host-keys",
            "users",
            "k3s"
        ]
    );
    assert_eq!(stamp.k3s_role, Some(K3sRole::Agent));
    let stamp_text = fs::read_to_string(root.path(FIRSTBOOT_STAMP)).unwrap();
    assert!(!stamp_text.contains("topsecret"), "{stamp_text}");
    assert!(
        stamp_text.contains("token: set from node.toml"),
        "{stamp_text}"
    );
    assert_eq!(
        fs::read_to_string(root.path(K3S_TOKEN_FILE)).unwrap(),
        "K10topsecret::server:xyz\n"
    );
    // Once stored on the data partition the token leaves the FAT; the rest
    // of node.toml stays.
    let node_after = fs::read_to_string(root.path("/boot/efi/edgeimg/node.toml")).unwrap();
    assert!(!node_after.contains("topsecret"), "{node_after}");
    assert!(
        node_after.contains("edge-2") && node_after.contains("zone=b"),
        "{node_after}"
    );
    let cfg = fs::read_to_string(root.path(K3S_CONFIG)).unwrap();
    assert_eq!(
        cfg,
        "# K3s configuration written by edgeimg (role: agent, unit k3s-agent.service).\n\
         server: \"https://10.0.0.1:6443\"\n\
         token-file: \"/etc/rancher/k3s/edgeimg-token\"\n\
         node-label:\n  - \"zone=b\"\n"
    );
    assert_eq!(
        root.skipped_commands().last().unwrap(),
        "systemctl --no-block start k3s-agent.service"
    );
    assert!(
        root.skipped_commands()
            .iter()
            .all(|c| !c.contains("topsecret"))
    );
}

#[test]
fn k3s_bad_node_config_changes_nothing() {
    let (_d, root) = k3s_device(K3sSettings::default());
    write(
        &root,
        "/boot/efi/edgeimg/node.toml",
        "[k3s]\nrole = \"agent\"\n",
    );
    let err = firstboot::run(&root).unwrap_err().to_string();
    assert!(
        err.contains("step `config`") && err.contains("needs server"),
        "{err}"
    );
    assert!(
        root.skipped_commands().is_empty(),
        "{:?}",
        root.skipped_commands()
    );
    write(
        &root,
        "/boot/efi/edgeimg/node.toml",
        "[k3s]\nserver = \"http://10.0.0.1:6443\"\n",
    );
    let err = firstboot::run(&root).unwrap_err().to_string();
    assert!(
        err.contains("node.toml") && err.contains("https://"),
        "{err}"
    );
}

#[test]
fn k3s_ready_polls_until_node_ready() {
    let (_d, root) = k3s_device(K3sSettings {
        cluster_init: true,
        ..Default::default()
    });
    firstboot::run(&root).unwrap();
    let opts = fake_k3s(
        &root,
        "if [ $n -ge 3 ]; then echo True; else echo False; fi",
    );
    let mut out = Vec::new();
    ready::run_with(&root, &opts, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{READY_LINE}\n{CLUSTER_READY_LINE}\n")
    );
    assert_eq!(calls(&root), 3);
    assert_eq!(
        fs::read_to_string(root.path("/tmp/k3s-args"))
            .unwrap()
            .trim(),
        r#"kubectl get node edge -o jsonpath={.status.conditions[?(@.type=="Ready")].status} --request-timeout=10s"#
    );
    assert_eq!(
        fs::read_to_string(root.path("/dev/console")).unwrap(),
        format!("\r\n{READY_LINE}\n\r\n{CLUSTER_READY_LINE}\n")
    );
    assert_eq!(ready_info(&root).cluster_ready, Some(true));
    let s = status::collect(&root).unwrap();
    assert_eq!(
        (s.ready, s.cluster_ready, s.k3s_role),
        (true, Some(true), Some(K3sRole::Server))
    );
    let human = status::render_human(&s);
    assert!(
        human.starts_with(&format!("{READY_LINE}\n{CLUSTER_READY_LINE}\n")),
        "{human}"
    );
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(
        (v["cluster_ready"].clone(), v["k3s_role"].clone()),
        (serde_json::json!(true), serde_json::json!("server"))
    );
}

#[test]
fn k3s_ready_times_out_with_last_error() {
    let (_d, root) = k3s_device(K3sSettings::default());
    firstboot::run(&root).unwrap();
    let mut opts = fake_k3s(
        &root,
        "echo 'Error from server (NotFound): nodes \"edge\" not found' >&2; exit 1",
    );
    opts.timeout = Some(Duration::from_millis(300));
    let mut out = Vec::new();
    let err = ready::run_with(&root, &opts, &mut out)
        .unwrap_err()
        .to_string();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], READY_LINE);
    assert!(
        lines[1].starts_with("edgeimg: cluster not ready: kubectl failed"),
        "{out}"
    );
    assert!(lines[1].contains(r#"nodes "edge" not found"#), "{out}");
    assert!(err.contains("cluster not ready"), "{err}");
    assert!(calls(&root) >= 2, "polled {} times", calls(&root));
    let info = ready_info(&root);
    assert_eq!(info.cluster_ready, Some(false));
    let s = status::collect(&root).unwrap();
    assert!(s.ready && s.cluster_ready == Some(false));
    assert!(
        s.cluster_reason.as_deref().unwrap().contains("not found"),
        "{s:?}"
    );
    assert!(
        status::render_human(&s)
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("edgeimg: cluster not ready: kubectl failed")
    );
}

#[test]
fn k3s_stand_in_is_labelled() {
    let (_d, root) = k3s_device(K3sSettings {
        stand_in: true,
        ..Default::default()
    });
    firstboot::run(&root).unwrap();
    let opts = fake_k3s(&root, "echo True");
    let mut out = Vec::new();
    ready::run_with(&root, &opts, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out.lines().nth(1),
        Some("edgeimg: cluster ready (stand-in bundle, not K3s)")
    );
    assert_eq!(calls(&root), 1);
    let human = status::render_human(&status::collect(&root).unwrap());
    assert!(
        human.contains("stand-in bundle, not K3s")
            && !human.lines().any(|l| l == CLUSTER_READY_LINE),
        "{human}"
    );
}

#[test]
fn plain_appliance_has_null_cluster_fields() {
    let (_d, root) = device("{name}");
    firstboot::run(&root).unwrap();
    let mut out = Vec::new();
    ready::run_with(&root, &ReadyOptions::default(), &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), format!("{READY_LINE}\n"));
    let v = serde_json::to_value(status::collect(&root).unwrap()).unwrap();
    assert!(
        v["cluster_ready"].is_null() && v["k3s_role"].is_null(),
        "{v}"
    );
    assert!(
        !fs::read_to_string(root.path(READY_FILE))
            .unwrap()
            .contains("cluster")
    );
}

/// node.toml is read whole into memory: one larger than any real node file
/// (here 1 MiB) is refused with an error naming it, before any step runs.
#[test]
fn an_oversized_node_file_is_refused_before_any_step() {
    let (_d, root) = k3s_device(K3sSettings::default());
    let mut big = String::from("hostname = \"x\"\n");
    while big.len() < 1 << 20 {
        big.push_str("# padding padding padding padding padding padding\n");
    }
    write(&root, "/boot/efi/edgeimg/node.toml", &big);
    let e = firstboot::run(&root).unwrap_err().to_string();
    assert!(
        e.contains("node.toml is larger than 64 KiB") && e.contains("`config`"),
        "{e}"
    );
    assert!(firstboot::read_stamp(&root).unwrap().is_none());
}
