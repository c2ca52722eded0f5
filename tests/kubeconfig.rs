//! `edgeimg kubeconfig` through the real binary, on kubeconfig files shaped
//! like K3s' /etc/rancher/k3s/k3s.yaml with real PEM made by `openssl`, read
//! back by the real `kubectl`.

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

/// base64 of a file, one line (as K3s writes the *-data fields).
fn b64(path: &Path) -> String {
    ok(Command::new("base64").arg("-w0").arg(path))
}

/// A K3s-style k3s.yaml: an EC CA and a client certificate and key made by
/// openssl, server https://127.0.0.1:6443, everything named `default`.
struct NodeFile {
    path: PathBuf,
    ca: String,
    cert: String,
    key: String,
}

fn k3s_yaml(dir: &Path, server: &str) -> NodeFile {
    let pem = |name: &str, cn: &str| {
        ok(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .arg("-subj")
            .arg(format!("/CN={cn}"))
            .arg("-keyout")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(dir.join(format!("{name}.crt"))));
    };
    pem("ca", "k3s-server-ca@1700000000");
    pem("client", "system:admin");
    let ca = b64(&dir.join("ca.crt"));
    let cert = b64(&dir.join("client.crt"));
    let key = b64(&dir.join("client.key"));
    let text = format!(
        "apiVersion: v1\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: default\n\
         contexts:\n\
         - context:\n    cluster: default\n    user: default\n  name: default\n\
         current-context: default\n\
         kind: Config\n\
         preferences: {{}}\n\
         users:\n\
         - name: default\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n"
    );
    let path = dir.join("k3s.yaml");
    std::fs::write(&path, text).unwrap();
    NodeFile {
        path,
        ca,
        cert,
        key,
    }
}

/// An operator's kubeconfig with another cluster, a token user, a context
/// with a namespace, a field kubectl ignores and current-context `prod`.
const EXISTING: &str = "\
apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster:
    server: https://prod.example.com:6443
    insecure-skip-tls-verify: true
    extensions:
    - name: edgeimg-test
      extension:
        note: keep me
users:
- name: prod-admin
  user:
    token: prod-secret-token-value
contexts:
- name: prod
  context:
    cluster: prod
    user: prod-admin
    namespace: apps
current-context: prod
preferences: {}
x-operator-note: unknown top-level fields survive
";

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = ok(Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(["config"])
        .args(args));
    out.trim().to_string()
}

/// `kubectl config view --raw -o jsonpath={EXPR}`: what kubectl reads.
fn jsonpath(kubeconfig: &Path, expr: &str) -> String {
    kubectl(
        kubeconfig,
        &["view", "--raw", "-o", &format!("jsonpath={{{expr}}}")],
    )
}

fn yaml(path: &Path) -> Value {
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The entry named `name` of `list` in a parsed kubeconfig.
fn entry<'a>(v: &'a Value, list: &str, name: &str) -> &'a Value {
    v[list]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {list} entry {name}"))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Runs `edgeimg` as `c` says; asserts no credential (from `node` or
/// [`EXISTING`]) is in its output. Returns (success, stdout+stderr).
fn run_without_secrets(node: &NodeFile, c: &mut Command) -> (bool, String) {
    let o = run(c);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for secret in [&node.key, &node.cert, &node.ca] {
        assert!(!text.contains(&secret[..40]), "credential printed:\n{text}");
    }
    assert!(!text.contains("PRIVATE KEY") && !text.contains("prod-secret-token"));
    (o.status.success(), text)
}

/// Runs `edgeimg kubeconfig ARGS` with `KUBECONFIG=kubeconfig` (see
/// [`run_without_secrets`]).
fn merge(node: &NodeFile, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    run_without_secrets(
        node,
        edgeimg()
            .arg("kubeconfig")
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("HOME"),
    )
}

#[test]
fn merges_into_existing_kubeconfig_leaving_others_untouched() {
    let d = tempfile::tempdir().unwrap();
    let node = k3s_yaml(d.path(), "https://127.0.0.1:6443");
    let target = d.path().join("config");
    std::fs::write(&target, EXISTING).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = yaml(&target);
    // $KUBECONFIG is a list: the first path is the one written.
    let list = format!("{}:{}", target.display(), d.path().join("other").display());
    let from = node.path.to_str().unwrap();
    let (good, out) = merge(
        &node,
        Path::new(&list),
        &["--from", from, "--server", "10.0.0.5", "--name", "edge-1"],
    );
    assert!(good, "{out}");
    assert!(
        out.contains("added") && out.contains("https://10.0.0.5:6443"),
        "{out}"
    );
    assert!(!d.path().join("other").exists());

    // kubectl reads the result.
    let mut contexts: Vec<String> = kubectl(&target, &["get-contexts", "-o", "name"])
        .lines()
        .map(String::from)
        .collect();
    contexts.sort();
    assert_eq!(contexts, ["edge-1", "prod"]);
    assert_eq!(kubectl(&target, &["current-context"]), "prod");
    let jp = |list: &str, name: &str, field: &str| {
        jsonpath(&target, &format!(".{list}[?(@.name==\"{name}\")].{field}"))
    };
    assert_eq!(
        jp("clusters", "edge-1", "cluster.server"),
        "https://10.0.0.5:6443"
    );
    assert_eq!(
        jp("clusters", "prod", "cluster.server"),
        "https://prod.example.com:6443"
    );
    assert_eq!(
        jp("clusters", "edge-1", "cluster.certificate-authority-data"),
        node.ca
    );
    assert_eq!(
        jp("users", "edge-1", "user.client-certificate-data"),
        node.cert
    );
    assert_eq!(jp("users", "edge-1", "user.client-key-data"), node.key);
    assert_eq!(jp("contexts", "edge-1", "context.cluster"), "edge-1");
    assert_eq!(jp("contexts", "edge-1", "context.user"), "edge-1");
    // `kubectl config view` (redacted) parses it too.
    let view = kubectl(&target, &["view"]);
    assert!(
        view.contains("name: edge-1") && view.contains("DATA+OMITTED"),
        "{view}"
    );

    // The other entries and unknown fields are exactly as they were.
    let after = yaml(&target);
    for (list, name) in [
        ("clusters", "prod"),
        ("users", "prod-admin"),
        ("contexts", "prod"),
    ] {
        assert_eq!(
            entry(&after, list, name),
            entry(&before, list, name),
            "{list} {name}"
        );
    }
    assert_eq!(after["x-operator-note"], before["x-operator-note"]);
    assert_eq!(mode(&target), 0o600);

    // Idempotent: the same input leaves the same bytes.
    let first = std::fs::read(&target).unwrap();
    let (good, out) = merge(
        &node,
        &target,
        &["--from", from, "--server", "10.0.0.5", "--name", "edge-1"],
    );
    assert!(good && out.starts_with("unchanged:"), "{out}");
    assert_eq!(std::fs::read(&target).unwrap(), first);

    // A new address replaces the entries in place; --use switches context.
    let (good, out) = merge(
        &node,
        &target,
        &[
            "--from",
            from,
            "--server",
            "edge-1.lan",
            "--name",
            "edge-1",
            "--use",
        ],
    );
    assert!(good, "{out}");
    assert_eq!(
        jp("clusters", "edge-1", "cluster.server"),
        "https://edge-1.lan:6443"
    );
    assert_eq!(kubectl(&target, &["current-context"]), "edge-1");
    let after = yaml(&target);
    assert_eq!(after["clusters"].as_sequence().unwrap().len(), 2);
    assert_eq!(after["users"].as_sequence().unwrap().len(), 2);
    assert_eq!(after["contexts"].as_sequence().unwrap().len(), 2);
    // No temporary file left beside it.
    let mut names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".edgeimg-kubeconfig"))
        .collect();
    names.sort();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn creates_missing_kubeconfig_private_with_current_context() {
    let d = tempfile::tempdir().unwrap();
    let node = k3s_yaml(d.path(), "https://127.0.0.1:6443");
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let o = run(edgeimg()
        .args(["kubeconfig", "--from"])
        .arg(&node.path)
        .args(["--server", "fd00::5"])
        .env_remove("KUBECONFIG")
        .env("HOME", &home));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let target = home.join(".kube/config");
    assert_eq!(mode(&target), 0o600);
    assert_eq!(mode(&home.join(".kube")), 0o700);
    // Named after the host; an IPv6 address goes into the URL in brackets.
    assert_eq!(kubectl(&target, &["current-context"]), "fd00::5");
    assert_eq!(
        jsonpath(&target, ".clusters[0].cluster.server"),
        "https://[fd00::5]:6443"
    );
}

#[test]
fn bad_input_is_one_error_naming_the_file_and_target_untouched() {
    let d = tempfile::tempdir().unwrap();
    let node = k3s_yaml(d.path(), "https://127.0.0.1:6443");
    let target = d.path().join("config");
    std::fs::write(&target, EXISTING).unwrap();
    let fails = |args: &[&str], needles: &[&str]| {
        let (good, out) = merge(&node, &target, args);
        assert!(!good, "{args:?} should fail:\n{out}");
        for n in needles {
            assert!(out.contains(n), "output of {args:?} lacks `{n}`:\n{out}");
        }
        assert_eq!(out.matches("error:").count(), 1, "one error:\n{out}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), EXISTING);
    };
    // Malformed YAML: the parser's position only, never the text.
    let broken = d.path().join("broken.yaml");
    let text = std::fs::read_to_string(&node.path).unwrap();
    std::fs::write(&broken, format!("{}\n  - [unclosed: {}", text, node.key)).unwrap();
    let b = broken.to_str().unwrap();
    fails(
        &["--from", b, "--server", "e"],
        &["broken.yaml", "not valid YAML", "line"],
    );
    // YAML, but not a kubeconfig.
    let list = d.path().join("list.yaml");
    std::fs::write(&list, "- a\n- b\n").unwrap();
    fails(
        &["--from", list.to_str().unwrap(), "--server", "e"],
        &["list.yaml", "not a kubeconfig"],
    );
    // A context naming a user that is not there.
    let dangling = d.path().join("dangling.yaml");
    std::fs::write(
        &dangling,
        text.replace("user: default\n  name", "user: nobody\n  name"),
    )
    .unwrap();
    fails(
        &["--from", dangling.to_str().unwrap(), "--server", "e"],
        &["dangling.yaml", "no users entry named \"nobody\""],
    );
    // Missing file.
    fails(
        &["--from", "/nonexistent/k3s.yaml", "--server", "e"],
        &["/nonexistent/k3s.yaml"],
    );
    // Only the loopback address and no --server.
    let from = node.path.to_str().unwrap();
    fails(&["--from", from], &["k3s.yaml", "127.0.0.1", "--server"]);
    // A server with a port or scheme.
    fails(
        &["--from", from, "--server", "https://e:6443"],
        &["--server"],
    );
    // A malformed target kubeconfig: named, and left as it is.
    let bad_target = d.path().join("bad-target");
    std::fs::write(&bad_target, "clusters: {not: a list}\n").unwrap();
    let (good, out) = merge(&node, &bad_target, &["--from", from, "--server", "e"]);
    assert!(
        !good && out.contains("bad-target") && out.contains("`clusters` is not a list"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&bad_target).unwrap(),
        "clusters: {not: a list}\n"
    );
    // A file that already names the node: no --server needed.
    let named = k3s_yaml(
        &tempfile::tempdir_in(d.path()).unwrap().keep(),
        "https://edge-9.lan:6443",
    );
    let (good, out) = merge(&named, &target, &["--from", named.path.to_str().unwrap()]);
    assert!(good && out.contains("\"edge-9.lan\""), "{out}");
}

/// A stand-in `ssh` first on PATH: records its arguments and prints the file
/// (or fails like ssh when FAKE_SSH_FAIL is set). Used for the non-root
/// command line (`sudo -n cat ...`), which the real-sshd test below cannot
/// reach without a second user account on this machine.
fn fake_ssh(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("ssh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '%s\\n' \"$*\" > \"$FAKE_SSH_ARGS\"\n\
         if [ -n \"${FAKE_SSH_FAIL:-}\" ]; then echo 'ops@edge-2: Permission denied (publickey).' >&2; exit 255; fi\n\
         exec cat \"$FAKE_SSH_FILE\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn ssh_reads_the_node_file_with_batch_mode_and_sudo() {
    let d = tempfile::tempdir().unwrap();
    let node = k3s_yaml(d.path(), "https://127.0.0.1:6443");
    let bin = fake_ssh(d.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let args_file = d.path().join("ssh-args");
    let target = d.path().join("kube").join("config");
    let go = |fail: bool, extra: &[&str]| {
        let mut c = edgeimg();
        c.args(["kubeconfig", "--ssh", "ops@edge-2"])
            .args(extra)
            .env("PATH", &path)
            .env("KUBECONFIG", &target)
            .env("FAKE_SSH_ARGS", &args_file)
            .env("FAKE_SSH_FILE", &node.path);
        if fail {
            c.env("FAKE_SSH_FAIL", "1");
        }
        run_without_secrets(&node, &mut c)
    };
    let (good, out) = go(true, &[]);
    assert!(!good, "{out}");
    assert!(
        out.contains("ssh ops@edge-2") && out.contains("Permission denied (publickey)"),
        "{out}"
    );
    assert!(!target.exists(), "nothing written when ssh fails");

    let (good, out) = go(false, &["--ssh-option", "Port=2222"]);
    assert!(good, "{out}");
    assert_eq!(
        std::fs::read_to_string(&args_file).unwrap().trim(),
        "-o BatchMode=yes -o Port=2222 -- ops@edge-2 sudo -n cat /etc/rancher/k3s/k3s.yaml"
    );
    assert_eq!(kubectl(&target, &["current-context"]), "edge-2");
    assert_eq!(
        jsonpath(&target, ".clusters[0].cluster.server"),
        "https://edge-2:6443"
    );
    assert_eq!(
        jsonpath(&target, ".users[0].user.client-key-data"),
        node.key
    );
}

/// A real OpenSSH server on a free loopback port, as root, accepting one
/// client key; its ForceCommand records the command the client asked for
/// and prints the node file (this machine has no /etc/rancher/k3s/k3s.yaml,
/// and the test must not make one).
struct Sshd {
    child: std::process::Child,
    port: u16,
    client_key: PathBuf,
    known_hosts: PathBuf,
    remote_command: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd(dir: &Path, node_file: &Path) -> Sshd {
    use std::io::BufRead;
    let sshd = Path::new("/usr/sbin/sshd");
    assert!(
        sshd.exists(),
        "/usr/sbin/sshd missing: install openssh-server (.ci/setup does)"
    );
    let keygen = |name: &str| {
        ok(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join(name)));
    };
    keygen("hostkey");
    keygen("client");
    keygen("stranger");
    std::fs::copy(dir.join("client.pub"), dir.join("authorized_keys")).unwrap();
    let remote_command = dir.join("remote-command");
    let force = dir.join("force.sh");
    std::fs::write(
        &force,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$SSH_ORIGINAL_COMMAND\" > '{}'\nexec cat '{}'\n",
            remote_command.display(),
            node_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&force, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Privilege separation directory (made by the service at boot normally).
    std::fs::create_dir_all("/run/sshd").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
    let mut child = Command::new(sshd)
        .args(["-D", "-e", "-f", "/dev/null", "-p", &port.to_string()])
        .args(["-o", "ListenAddress=127.0.0.1", "-h"])
        .arg(dir.join("hostkey"))
        .arg("-o")
        .arg(opt("AuthorizedKeysFile", &dir.join("authorized_keys")))
        .arg("-o")
        .arg(opt("ForceCommand", &force))
        // The temporary directory is under world-writable /tmp.
        .args([
            "-o",
            "StrictModes=no",
            "-o",
            "PidFile=none",
            "-o",
            "UsePAM=no",
        ])
        .args([
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "KbdInteractiveAuthentication=no",
        ])
        .args(["-o", "PermitRootLogin=prohibit-password"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sshd");
    // Wait for its "Server listening" line, with a deadline.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains("Server listening") => break,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                panic!("sshd did not start listening on port {port}: {e}");
            }
        }
    }
    Sshd {
        child,
        port,
        client_key: dir.join("client"),
        known_hosts: dir.join("known_hosts"),
        remote_command,
    }
}

#[test]
fn ssh_through_a_real_sshd() {
    let d = tempfile::tempdir().unwrap();
    let node = k3s_yaml(d.path(), "https://127.0.0.1:6443");
    let s = sshd(d.path(), &node.path);
    let target = d.path().join("kube").join("config");
    let go = |key: &Path| {
        run_without_secrets(
            &node,
            edgeimg()
                .args([
                    "kubeconfig",
                    "--ssh",
                    "root@127.0.0.1",
                    "--server",
                    "edge-3",
                ])
                .args(["--ssh-option", &format!("Port={}", s.port)])
                .args(["--ssh-option", &format!("IdentityFile={}", key.display())])
                .args(["--ssh-option", "IdentitiesOnly=yes"])
                .args([
                    "--ssh-option",
                    &format!("UserKnownHostsFile={}", s.known_hosts.display()),
                ])
                .args(["--ssh-option", "StrictHostKeyChecking=accept-new"])
                .env("KUBECONFIG", &target),
        )
    };
    // A key the server does not accept: BatchMode fails at once, no prompt.
    let (good, out) = go(&d.path().join("stranger"));
    assert!(!good, "{out}");
    assert!(
        out.contains("ssh root@127.0.0.1") && out.contains("Permission denied"),
        "{out}"
    );
    assert!(!target.exists());

    let (good, out) = go(&s.client_key);
    assert!(good, "{out}");
    // root reads the file without sudo.
    assert_eq!(
        std::fs::read_to_string(&s.remote_command).unwrap().trim(),
        "cat /etc/rancher/k3s/k3s.yaml"
    );
    // --server names the node; the name defaults to it.
    assert_eq!(kubectl(&target, &["current-context"]), "edge-3");
    assert_eq!(
        jsonpath(&target, ".clusters[0].cluster.server"),
        "https://edge-3:6443"
    );
    assert_eq!(
        jsonpath(&target, ".users[0].user.client-key-data"),
        node.key
    );
}

/// What is read from a node is capped (1 MiB): an endless or huge k3s.yaml,
/// from a file or over ssh, is one error naming the source, the target is
/// untouched, and the read stops at the cap rather than exhausting memory.
#[test]
fn a_huge_node_kubeconfig_is_refused_at_the_cap() {
    let d = tempfile::tempdir().unwrap();
    let node = k3s_yaml(d.path(), "https://127.0.0.1:6443");
    let target = d.path().join("config");
    std::fs::write(&target, EXISTING).unwrap();
    let huge = d.path().join("huge.yaml");
    let mut text = std::fs::read_to_string(&node.path).unwrap();
    text.push_str(&"# padding\n".repeat(200_000));
    std::fs::write(&huge, &text).unwrap();
    let (good, out) = merge(
        &node,
        &target,
        &["--from", huge.to_str().unwrap(), "--server", "e"],
    );
    assert!(
        !good && out.contains("huge.yaml") && out.contains("larger than 1 MiB"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), EXISTING);

    // Over ssh: a node that never stops sending.
    let bin = d.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("ssh");
    std::fs::write(&script, "#!/bin/sh\nexec yes 'apiVersion: v1'\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut c = edgeimg();
    c.args(["kubeconfig", "--ssh", "ops@edge-2", "--server", "e"])
        .env("PATH", &path)
        .env("KUBECONFIG", &target);
    let (good, out) = run_without_secrets(&node, &mut c);
    assert!(
        !good
            && out.contains("ops@edge-2:/etc/rancher/k3s/k3s.yaml")
            && out.contains("larger than 1 MiB"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), EXISTING);
}
