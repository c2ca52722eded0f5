//! The device pulling its updates: the agent's `update pull` against a real
//! repository made by `edgeimg publish`, served over HTTP (or HTTPS with a
//! certificate authority made by the test) on loopback by a server that can
//! cut a download mid-way, into a fake device (its slot,
//! sysfs and ESP under a temporary root).

mod common;
use common::fleet::*;
use common::*;

use edgeimg_agent::Root;
use edgeimg_agent::update::pull::{self, Mode};
use edgeimg_agent::update::state::Status;
use edgeimg_contract::update::{CA_CERTIFICATES_PATH, SYSTEM_CA_PATH};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A loopback HTTP/1.1 server of a directory with Range support, over TLS
/// when made with [`serve_tls`]. `cut`: the next target's body stops after
/// that many bytes (0: none).
struct Server {
    url: String,
    cut: Arc<AtomicU64>,
    /// Answer a Range request with the whole file (200), as some servers do.
    ignore_range: Arc<std::sync::atomic::AtomicBool>,
    /// Every target requested, with the offset of its Range header.
    requests: Arc<Mutex<Vec<String>>>,
}

fn serve(root: &Path) -> Server {
    serve_with(root, None)
}

/// [`serve`] over HTTPS with `tls`'s certificate.
fn serve_tls(root: &Path, tls: Arc<rustls::ServerConfig>) -> Server {
    serve_with(root, Some(tls))
}

fn serve_with(root: &Path, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    let cut = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let ignore_range = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (root, c, reqs, ign) = (
        root.to_path_buf(),
        cut.clone(),
        requests.clone(),
        ignore_range.clone(),
    );
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            match &tls {
                None => answer(conn, &root, &c, &ign, &reqs),
                Some(cfg) => {
                    let Ok(sc) = rustls::ServerConnection::new(cfg.clone()) else {
                        continue;
                    };
                    let mut stream = rustls::StreamOwned::new(sc, conn);
                    answer(&mut stream, &root, &c, &ign, &reqs);
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                }
            }
        }
    });
    Server {
        url,
        cut,
        ignore_range,
        requests,
    }
}

/// One request on `conn`, answered from the directory `root`.
fn answer<S: std::io::Read + Write>(
    conn: S,
    root: &Path,
    c: &AtomicU64,
    ign: &std::sync::atomic::AtomicBool,
    reqs: &Mutex<Vec<String>>,
) {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut from = 0u64;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
            from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
        }
    }
    let conn = r.get_mut();
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let rel = path.trim_start_matches('/');
    let file = (!rel.split('/').any(|c| c == ".." || c.is_empty()))
        .then(|| root.join(rel))
        .filter(|p| p.is_file());
    let Some(body) = file.and_then(|p| std::fs::read(p).ok()) else {
        let _ = conn
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let asked = from;
    if ign.load(Ordering::SeqCst) {
        from = 0;
    }
    let mut send = &body[(from as usize).min(body.len())..];
    let head = if from > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
            send.len(),
            body.len() - 1,
            body.len()
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            send.len()
        )
    };
    if rel.contains("/targets/") {
        reqs.lock().unwrap().push(format!("{rel} from {asked}"));
        let n = c.swap(0, Ordering::SeqCst);
        if n > 0 {
            send = &send[..(n as usize).min(send.len())];
        }
    }
    let _ = conn
        .write_all(head.as_bytes())
        .and_then(|_| conn.write_all(send))
        .and_then(|_| conn.flush());
}

/// A certificate authority made for one test (`ca_pem`) and a server
/// configuration whose certificate, for 127.0.0.1 and localhost, it signed.
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki(name: &str) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(DnType::CommonName, name);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

/// Writes `pem` at the device path `at` under `root`.
fn trust_ca(root: &Root, at: &str, pem: &str) {
    let p = root.path(at);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, pem).unwrap();
}

/// Nothing reached slot B or the ESP.
fn untouched(root: &Root) {
    let slot = std::fs::read(root.path("/dev/vda3")).unwrap();
    assert!(slot.iter().all(|&b| b == 0), "slot b was written");
    unbootable(root);
}

/// Slot B may hold bytes, but nothing boots it: no entry, no kernel.
fn unbootable(root: &Root) {
    let entries: Vec<_> = std::fs::read_dir(root.path("/boot/efi/loader/entries"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["edgeimg-1-a.conf"]);
    assert!(!root.path("/boot/efi/edgeimg/b").exists());
}

/// Every file under the update directory on the device's /var, with its size.
fn stored(root: &Root) -> Vec<(String, u64)> {
    fn walk(dir: &Path, out: &mut Vec<(String, u64)>) {
        let Ok(d) = std::fs::read_dir(dir) else {
            return;
        };
        for e in d {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push((e.path().display().to_string(), e.metadata().unwrap().len()));
            }
        }
    }
    let mut out = vec![];
    walk(&root.path("/var/lib/edgeimg/update"), &mut out);
    out
}

/// The download's files only (not the status file).
fn parts(root: &Root) -> Vec<(String, u64)> {
    stored(root)
        .into_iter()
        .filter(|(p, _)| p.contains("/download/"))
        .collect()
}

/// No copy of the payload on /var: every file there is far smaller than
/// the root image (`root_len` bytes).
fn no_payload_copy(root: &Root, root_len: usize) {
    let s = stored(root);
    assert!(
        s.iter().all(|(_, n)| *n < (root_len / 10) as u64),
        "a file on /var near the payload's size: {s:?}"
    );
}

fn the_progress(root: &Root) -> serde_json::Value {
    let p = parts(root)
        .into_iter()
        .find(|(p, _)| p.ends_with(".progress"))
        .unwrap_or_else(|| panic!("no progress record: {:?}", stored(root)));
    serde_json::from_slice(&std::fs::read(p.0).unwrap()).unwrap()
}

#[test]
fn pull_resumes_a_cut_download_and_installs_the_newest_update() {
    let f = fleet();
    let v2_root = noise(300_000, 2);
    f.publish(1, &noise(200_000, 1));
    f.publish(2, &v2_root);
    let s = serve(&f.repo);
    let (_d, root) = device(&f, 1, &s.url);

    // The first download is cut after 100 000 bytes: its root image bytes
    // are in slot B (which nothing boots), a small record says how many.
    s.cut.store(100_000, Ordering::SeqCst);
    let e = pull::run(&root, Mode::Pull, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("resumes there"), "{e}");
    unbootable(&root);
    no_payload_copy(&root, v2_root.len());
    assert_eq!(the_progress(&root)["done"], 100_000);
    // The header and signature are kept beside the record; the root
    // image's bytes went straight into the slot.
    let header = parts(&root)
        .into_iter()
        .find(|(p, _)| p.ends_with(".rest"))
        .unwrap()
        .1 as usize;
    assert!(header > 80 && header < 2000, "{header}");
    let slot = std::fs::read(root.path("/dev/vda3")).unwrap();
    assert_eq!(&slot[..100_000 - header], &v2_root[..100_000 - header]);
    assert!(slot[100_000 - header..].iter().all(|&b| b == 0));
    let st = Status::load(&root).unwrap();
    assert_eq!(st.last_error.as_deref(), Some(e.as_str()));
    assert_eq!(
        st.available.as_deref(),
        Some("t-x86_64-2-0000000000000002.update")
    );

    // The next pull asks for the rest only, verifies and installs it, and
    // reboots into the trial.
    let reboot = pull::PullOptions {
        window: None,
        reboot: true,
    };
    pull::run(&root, Mode::Pull, &reboot).unwrap();
    assert_eq!(root.skipped_commands(), ["systemctl reboot"]);
    let reqs = s.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(
        reqs[0].ends_with("from 0") && reqs[1].ends_with("from 100000"),
        "{reqs:?}"
    );
    let slot = std::fs::read(root.path("/dev/vda3")).unwrap();
    assert_eq!(&slot[..v2_root.len()], &v2_root[..]);
    assert!(
        root.path("/boot/efi/loader/entries/edgeimg-2-b+3.conf")
            .exists()
    );
    assert!(
        parts(&root).is_empty(),
        "the download's state is removed once installed"
    );
    let st = Status::load(&root).unwrap();
    assert_eq!(st.last_error, None);
    let pending = st.pending.unwrap();
    assert_eq!(pending.target, "t-x86_64-2-0000000000000002.update");
    assert_eq!(pending.slot, "b");

    // The trial boot failed: back on slot A after a reboot. The release is
    // recorded and not offered again.
    std::fs::write(root.path("/proc/sys/kernel/random/boot_id"), "boot-2\n").unwrap();
    pull::run(&root, Mode::Check, &Default::default()).unwrap();
    let st = Status::load(&root).unwrap();
    assert_eq!(st.failed, ["t-x86_64-2-0000000000000002.update"]);
    assert_eq!(st.available, None);
    assert_eq!(st.pending, None);
}

/// The repository over HTTPS, its server's certificate signed by the
/// image's own certificate authority: metadata and target verify, and a cut
/// download resumes with a Range request over a new TLS connection.
#[test]
fn an_https_repository_signed_by_the_images_ca_is_pulled_and_resumed() {
    let f = fleet();
    let v2_root = noise(300_000, 2);
    f.publish(1, &noise(200_000, 1));
    f.publish(2, &v2_root);
    let pki = pki("fleet CA");
    let s = serve_tls(&f.repo, pki.server.clone());
    assert!(s.url.starts_with("https://127.0.0.1:"));
    let (_d, root) = device(&f, 1, &s.url);
    trust_ca(&root, CA_CERTIFICATES_PATH, &pki.ca_pem);

    s.cut.store(100_000, Ordering::SeqCst);
    let e = pull::run(&root, Mode::Pull, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("resumes there"), "{e}");
    unbootable(&root);
    assert_eq!(the_progress(&root)["done"], 100_000);

    pull::run(&root, Mode::Pull, &Default::default()).unwrap();
    let reqs = s.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(
        reqs[0].ends_with("from 0") && reqs[1].ends_with("from 100000"),
        "{reqs:?}"
    );
    let slot = std::fs::read(root.path("/dev/vda3")).unwrap();
    assert_eq!(&slot[..v2_root.len()], &v2_root[..]);
    assert!(
        root.path("/boot/efi/loader/entries/edgeimg-2-b+3.conf")
            .exists()
    );
    let st = Status::load(&root).unwrap();
    assert_eq!(st.last_error, None);
    assert_eq!(
        st.pending.unwrap().target,
        "t-x86_64-2-0000000000000002.update"
    );
}

/// An HTTPS server whose certificate no trusted authority signed is
/// refused before any metadata is read; with no authority at all the error
/// names where they would come from.
#[test]
fn an_https_server_the_device_does_not_trust_is_refused_and_nothing_written() {
    let f = fleet();
    f.publish(2, &noise(100_000, 2));
    let s = serve_tls(&f.repo, pki("fleet CA").server);
    let (_d, root) = device(&f, 1, &s.url);

    let e = pull::run(&root, Mode::Pull, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(SYSTEM_CA_PATH) && e.contains(CA_CERTIFICATES_PATH) && e.contains("TLS"),
        "{e}"
    );
    untouched(&root);
    assert!(parts(&root).is_empty());

    // The device trusts another authority, in its own bundle.
    trust_ca(&root, SYSTEM_CA_PATH, &pki("another CA").ca_pem);
    let e = pull::run(&root, Mode::Pull, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("invalid peer certificate") && e.contains("UnknownIssuer"),
        "{e}"
    );
    untouched(&root);
    assert!(parts(&root).is_empty());
    assert!(
        s.requests.lock().unwrap().is_empty(),
        "no target was fetched"
    );
    assert_eq!(Status::load(&root).unwrap().available, None);
}

#[test]
fn an_expired_timestamp_is_refused_and_nothing_written() {
    let f = fleet();
    f.publish(2, &noise(100_000, 2));
    f.expire_timestamp();
    let s = serve(&f.repo);
    let (_d, root) = device(&f, 1, &s.url);
    let e = pull::run(&root, Mode::Pull, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not verify") && e.to_lowercase().contains("expired"),
        "{e}"
    );
    untouched(&root);
    assert!(parts(&root).is_empty());
    assert!(
        s.requests.lock().unwrap().is_empty(),
        "no target was fetched"
    );
}

#[test]
fn a_replayed_older_snapshot_is_refused_and_nothing_written() {
    let f = fleet();
    f.publish(1, &noise(100_000, 1));
    // The device trusts snapshot version 1 after a check on generation 1.
    let s = serve(&f.repo);
    let (_d, root) = device(&f, 1, &s.url);
    pull::run(&root, Mode::Check, &Default::default()).unwrap();
    let old_snapshot = std::fs::read(f.metadata().join("1.snapshot.json")).unwrap();
    f.publish(2, &noise(100_000, 2));
    pull::run(&root, Mode::Check, &Default::default()).unwrap();
    assert_eq!(
        Status::load(&root).unwrap().available.as_deref(),
        Some("t-x86_64-2-0000000000000002.update")
    );
    // A validly signed, newer timestamp that points at snapshot 1 again.
    let mut ts = f.timestamp();
    ts.version = ts.version.checked_add(1).unwrap();
    let meta = ts.meta.get_mut("snapshot.json").unwrap();
    meta.version = std::num::NonZeroU64::MIN;
    meta.length = Some(old_snapshot.len() as u64);
    if let Some(h) = meta.hashes.as_mut() {
        use sha2::Digest;
        h.sha256 = sha2::Sha256::digest(&old_snapshot).to_vec().into();
    }
    f.resign("timestamp", ts);
    let e = pull::run(&root, Mode::Pull, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not verify") && e.contains("Snapshot version 1"),
        "{e}"
    );
    untouched(&root);
    assert!(
        s.requests.lock().unwrap().is_empty(),
        "no target was fetched"
    );
}

#[test]
fn an_older_validly_signed_update_is_not_installed() {
    let f = fleet();
    f.publish(1, &noise(100_000, 1));
    let s = serve(&f.repo);
    let (_d, root) = device(&f, 2, &s.url);
    pull::run(&root, Mode::Pull, &Default::default()).unwrap();
    untouched(&root);
    let st = Status::load(&root).unwrap();
    assert_eq!(
        (st.available, st.last_error, st.current_generation),
        (None, None, 2)
    );
    assert!(
        s.requests.lock().unwrap().is_empty(),
        "no target was fetched"
    );
}

#[test]
fn a_directory_named_by_node_toml_is_the_repository() {
    let f = fleet();
    let v2_root = noise(50_000, 2);
    f.publish(2, &v2_root);
    // The image's repository is unreachable; the node's file names a copy
    // on a mounted stick, and wins.
    let (_d, root) = device(&f, 1, "http://127.0.0.1:9/");
    let node = root
        .path("/boot/efi")
        .join(edgeimg_contract::schema::NODE_CONFIG_RELPATH);
    std::fs::create_dir_all(node.parent().unwrap()).unwrap();
    std::fs::write(
        &node,
        format!(
            "[update]\nrepository = {:?}\n",
            f.repo.display().to_string()
        ),
    )
    .unwrap();
    pull::run(&root, Mode::Pull, &Default::default()).unwrap();
    let slot = std::fs::read(root.path("/dev/vda3")).unwrap();
    assert_eq!(&slot[..v2_root.len()], &v2_root[..]);
}

#[test]
fn outside_the_window_a_pull_downloads_and_installs_later() {
    let f = fleet();
    let v2_root = noise(80_000, 2);
    f.publish(2, &v2_root);
    let s = serve(&f.repo);
    let (_d, root) = device(&f, 1, &s.url);
    // A window that starts an hour from now: not open now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let m = |secs: u64| {
        let m = (secs % 86_400) / 60;
        format!("{:02}:{:02}", m / 60, m % 60)
    };
    let closed = pull::PullOptions {
        window: Some(
            edgeimg_contract::update::window::Window::parse(&format!(
                "{}-{}",
                m(now + 3600),
                m(now + 7200)
            ))
            .unwrap(),
        ),
        reboot: false,
    };
    pull::run(&root, Mode::Pull, &closed).unwrap();
    // Downloaded into slot B and verified, but not installed: no entry.
    unbootable(&root);
    let slot = std::fs::read(root.path("/dev/vda3")).unwrap();
    assert_eq!(&slot[..v2_root.len()], &v2_root[..]);
    no_payload_copy(&root, v2_root.len());
    let st = Status::load(&root).unwrap();
    assert_eq!(
        st.downloaded.as_deref(),
        Some("t-x86_64-2-0000000000000002.update")
    );
    assert_eq!(st.pending, None);
    assert!(st.last_error.is_none());
    // Still outside: nothing fetched again, nothing installed.
    pull::run(&root, Mode::Pull, &closed).unwrap();
    unbootable(&root);
    assert_eq!(s.requests.lock().unwrap().len(), 1);
    // In the window (here: none), the downloaded file installs without
    // being fetched again.
    pull::run(&root, Mode::Pull, &Default::default()).unwrap();
    let slot = std::fs::read(root.path("/dev/vda3")).unwrap();
    assert_eq!(&slot[..v2_root.len()], &v2_root[..]);
    assert_eq!(s.requests.lock().unwrap().len(), 1);
    assert!(
        root.path("/boot/efi/loader/entries/edgeimg-2-b+3.conf")
            .exists()
    );
    let st = Status::load(&root).unwrap();
    assert_eq!(st.downloaded, None);
    assert_eq!(st.pending.unwrap().slot, "b");
    assert!(parts(&root).is_empty(), "{:?}", parts(&root));

    // A slot changed between the download and the window is read back
    // before the install: refused, no entry, and the next pull fetches the
    // update again.
    let (_d, root) = device(&f, 1, &s.url);
    s.requests.lock().unwrap().clear();
    pull::run(&root, Mode::Pull, &closed).unwrap();
    let dev = root.path("/dev/vda3");
    let mut slot = std::fs::read(&dev).unwrap();
    slot[1234] ^= 1;
    std::fs::write(&dev, &slot).unwrap();
    let e = pull::run(&root, Mode::Pull, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("payload root.erofs is corrupt"), "{e}");
    unbootable(&root);
    let st = Status::load(&root).unwrap();
    assert_eq!((st.pending, st.downloaded), (None, None));
    assert!(parts(&root).is_empty(), "{:?}", parts(&root));
    pull::run(&root, Mode::Pull, &Default::default()).unwrap();
    let slot = std::fs::read(&dev).unwrap();
    assert_eq!(&slot[..v2_root.len()], &v2_root[..]);
    assert_eq!(s.requests.lock().unwrap().len(), 2);
}

/// The embedded static agents themselves (aarch64 through qemu-user, as
/// `.ci/setup` registers it), each in a user namespace rooted at the fake
/// device, check a copy of the repository: their TUF client, its C
/// cryptography (aws-lc) included, verifies real metadata.
#[test]
fn the_static_agents_verify_the_repository() {
    let f = fleet();
    f.publish(2, &noise(50_000, 2));
    for (arch, bin) in [
        ("x86_64", edgeimg::agents::AGENT_X86_64),
        ("aarch64", edgeimg::agents::AGENT_AARCH64),
    ] {
        let (_d, root) = device(&f, 1, "/repo");
        copy_tree(&f.repo, &root.path("/repo"));
        let agent = root.path("/edgeimg-agent");
        std::fs::write(&agent, bin).unwrap();
        std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let o = ok(std::process::Command::new("unshare")
            .args(["--map-root-user", "--root"])
            .arg(root.prefix())
            .args(["/edgeimg-agent", "update", "check"]));
        assert!(
            o.contains("edgeimg: update available: t-x86_64-2-0000000000000002.update"),
            "{arch}: {o}"
        );
        // `update status` prints the status file the check wrote.
        let o = ok(std::process::Command::new("unshare")
            .args(["--map-root-user", "--root"])
            .arg(root.prefix())
            .args(["/edgeimg-agent", "update", "status"]));
        let st: serde_json::Value = serde_json::from_str(&o).unwrap();
        assert_eq!(
            st["available"], "t-x86_64-2-0000000000000002.update",
            "{arch}: {o}"
        );
        assert_eq!(st["current_generation"], 1, "{arch}: {o}");
        assert!(st["last_check"].as_u64().is_some(), "{arch}: {o}");
        // A byte of the targets metadata changed: refused by either.
        let m = root.path("/repo/x86_64/metadata/1.targets.json");
        let text = std::fs::read_to_string(&m)
            .unwrap()
            .replace("\"full\"", "\"fulL\"");
        std::fs::write(&m, text).unwrap();
        std::fs::remove_dir_all(root.path(edgeimg_agent::update::tuf_client::DATASTORE)).unwrap();
        let o = run(std::process::Command::new("unshare")
            .args(["--map-root-user", "--root"])
            .arg(root.prefix())
            .args(["/edgeimg-agent", "update", "check"]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{arch}: {err}");
        assert!(err.contains("does not verify"), "{arch}: {err}");
    }
}

#[test]
fn a_target_that_differs_from_its_signed_hash_or_length_is_refused_and_never_booted() {
    let f = fleet();
    f.publish(2, &noise(60_000, 2));
    let s = serve(&f.repo);
    let (_d, root) = device(&f, 1, &s.url);
    let target = std::fs::read_dir(f.repo.join("x86_64/targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".update"))
        .unwrap();
    let good = std::fs::read(&target).unwrap();

    // Longer than signed: the server says so before any byte is written.
    let mut longer = good.clone();
    longer.extend_from_slice(b"more");
    std::fs::write(&target, &longer).unwrap();
    let e = pull::run(&root, Mode::Pull, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than the signed length"), "{e}");
    untouched(&root);
    assert!(parts(&root).is_empty());

    // A changed payload byte: the signed header is intact, so its root
    // image went into slot B, but the whole file's SHA-256 is not the
    // signed one: no boot entry, nothing to resume.
    let mut flipped = good.clone();
    flipped[40_000] ^= 1;
    std::fs::write(&target, &flipped).unwrap();
    let e = pull::run(&root, Mode::Pull, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not match the signed targets metadata"),
        "{e}"
    );
    unbootable(&root);
    assert!(parts(&root).is_empty(), "{:?}", parts(&root));
    assert_eq!(Status::load(&root).unwrap().pending, None);
}

/// Another key's update, a valid repository: refused by its signed header
/// before a byte reaches the slot, and nothing is kept.
#[test]
fn an_update_the_image_does_not_trust_writes_nothing() {
    let f = fleet();
    f.publish(2, &noise(60_000, 2));
    let s = serve(&f.repo);
    let (_d, root) = device(&f, 1, &s.url);
    let (_, other_pub) = updates::keygen(&f.dir, "other");
    std::fs::write(
        root.path(edgeimg_contract::update::TRUSTED_KEY_PATH),
        std::fs::read(other_pub).unwrap(),
    )
    .unwrap();
    let e = pull::run(&root, Mode::Pull, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad signature"), "{e}");
    untouched(&root);
    assert!(parts(&root).is_empty(), "{:?}", parts(&root));
}

/// The bytes already in the slot are read back and hashed again when a
/// download continues: one changed between the cut and the resume makes
/// the whole file's SHA-256 fail, nothing boots it, and the next pull
/// starts over and installs.
#[test]
fn a_resume_hashes_the_slots_bytes_again() {
    let f = fleet();
    let v2_root = noise(300_000, 2);
    f.publish(2, &v2_root);
    let s = serve(&f.repo);
    let (_d, root) = device(&f, 1, &s.url);
    s.cut.store(100_000, Ordering::SeqCst);
    pull::run(&root, Mode::Pull, &Default::default()).unwrap_err();
    let dev = root.path("/dev/vda3");
    let mut slot = std::fs::read(&dev).unwrap();
    slot[50_000] ^= 0x80;
    std::fs::write(&dev, &slot).unwrap();
    // A reboot in between: a new boot, the same record.
    std::fs::write(root.path("/proc/sys/kernel/random/boot_id"), "boot-2\n").unwrap();
    let e = pull::run(&root, Mode::Pull, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not match the signed targets metadata"),
        "{e}"
    );
    unbootable(&root);
    assert!(parts(&root).is_empty(), "{:?}", parts(&root));
    let st = Status::load(&root).unwrap();
    assert_eq!(st.pending, None);
    assert_eq!(st.last_error.as_deref(), Some(e.as_str()));
    pull::run(&root, Mode::Pull, &Default::default()).unwrap();
    let reqs = s.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(
        reqs[0].ends_with("from 0")
            && reqs[1].ends_with("from 100000")
            && reqs[2].ends_with("from 0"),
        "{reqs:?}"
    );
    let slot = std::fs::read(&dev).unwrap();
    assert_eq!(&slot[..v2_root.len()], &v2_root[..]);
    assert!(
        root.path("/boot/efi/loader/entries/edgeimg-2-b+3.conf")
            .exists()
    );
}

/// Cut twice, then a server that ignores Range: each pull continues where
/// the last stopped, and the whole file sent again is taken from the start.
#[test]
fn a_download_cut_twice_continues_and_a_server_ignoring_range_starts_over() {
    let f = fleet();
    let v2_root = noise(300_000, 2);
    f.publish(2, &v2_root);
    let s = serve(&f.repo);
    let (_d, root) = device(&f, 1, &s.url);
    s.cut.store(100_000, Ordering::SeqCst);
    pull::run(&root, Mode::Pull, &Default::default()).unwrap_err();
    s.cut.store(50_000, Ordering::SeqCst);
    let e = pull::run(&root, Mode::Pull, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("at byte 150000 of"), "{e}");
    assert_eq!(the_progress(&root)["done"], 150_000);
    no_payload_copy(&root, v2_root.len());
    s.ignore_range.store(true, Ordering::SeqCst);
    pull::run(&root, Mode::Pull, &Default::default()).unwrap();
    let reqs = s.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(
        reqs[1].ends_with("from 100000") && reqs[2].ends_with("from 150000"),
        "{reqs:?}"
    );
    let slot = std::fs::read(root.path("/dev/vda3")).unwrap();
    assert_eq!(&slot[..v2_root.len()], &v2_root[..]);
    assert!(
        root.path("/boot/efi/loader/entries/edgeimg-2-b+3.conf")
            .exists()
    );
    assert!(parts(&root).is_empty());
}

#[test]
fn a_delta_from_the_running_release_is_preferred_and_a_wrong_base_falls_back_to_the_full_update() {
    let f = fleet();
    let v1_root = noise(300_000, 1);
    let mut v2_root = v1_root.clone();
    v2_root[100_000..104_096].copy_from_slice(&noise(4096, 9));
    f.publish(1, &v1_root);
    f.publish_deltas(2, &v2_root, 1);
    let s = serve(&f.repo);
    for base_matches in [true, false] {
        let (_d, root) = device(&f, 1, &s.url);
        // The running slot A holds v1 (its root, kernel and initrd).
        let w = |p: &str, b: &[u8]| {
            let p = root.path(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b).unwrap();
        };
        let mut slot_a = vec![0u8; SLOT];
        slot_a[..v1_root.len()].copy_from_slice(&v1_root);
        if !base_matches {
            slot_a[200_000] ^= 1;
        }
        w("/dev/vda2", &slot_a);
        w(
            "/sys/class/block/vda2/size",
            format!("{}\n", SLOT / 512).as_bytes(),
        );
        std::os::unix::fs::symlink("../../vda2", root.path("/dev/disk/by-partuuid/pu-2")).unwrap();
        w("/boot/efi/edgeimg/a/vmlinuz", b"a kernel");
        w("/boot/efi/edgeimg/a/initrd.img", b"an initrd");
        s.requests.lock().unwrap().clear();
        pull::run(&root, Mode::Pull, &Default::default()).unwrap();
        let slot_b = std::fs::read(root.path("/dev/vda3")).unwrap();
        assert!(
            slot_b[..v2_root.len()] == v2_root[..],
            "base matches: {base_matches}"
        );
        assert!(
            root.path("/boot/efi/loader/entries/edgeimg-2-b+3.conf")
                .exists()
        );
        assert!(parts(&root).is_empty(), "{:?}", parts(&root));
        no_payload_copy(&root, v2_root.len());
        let reqs = s.requests.lock().unwrap().clone();
        let delta = reqs.iter().filter(|r| r.contains(".delta-from-")).count();
        let full = reqs.iter().filter(|r| r.contains(".update from")).count();
        if base_matches {
            assert_eq!((delta, full), (1, 0), "the delta only: {reqs:?}");
        } else {
            assert_eq!(
                (delta, full),
                (1, 1),
                "the delta, then the full update: {reqs:?}"
            );
            // The delta's chunks before the one that did not match are the
            // update's first bytes: the full download continues after them.
            let from: u64 = reqs
                .iter()
                .find(|r| r.contains(".update from"))
                .and_then(|r| r.rsplit(' ').next()?.parse().ok())
                .unwrap();
            assert!(from > 0, "{reqs:?}");
        }
    }
}

/// The static agent pulls a 64 MiB root image into the slot in a few MiB
/// of memory (its peak RSS measured by `time`): the payload is streamed,
/// never held, and nothing near its size lands on /var.
#[test]
fn the_static_agent_streams_a_large_update_in_bounded_memory() {
    const ROOT: usize = 64 << 20;
    let f = fleet();
    let v2_root = noise(ROOT, 2);
    f.publish(2, &v2_root);
    let (_d, root) = device(&f, 1, "/repo");
    copy_tree(&f.repo, &root.path("/repo"));
    let slot = std::fs::File::create(root.path("/dev/vda3")).unwrap();
    slot.set_len(2 * ROOT as u64).unwrap();
    std::fs::write(
        root.path("/sys/class/block/vda3/size"),
        format!("{}\n", 2 * ROOT / 512),
    )
    .unwrap();
    let agent = root.path("/edgeimg-agent");
    std::fs::write(&agent, edgeimg::agents::AGENT_X86_64).unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = run(std::process::Command::new("/usr/bin/time")
        .args(["-f", "MAXRSS_KB=%M", "unshare", "--map-root-user", "--root"])
        .arg(root.prefix())
        .args(["/edgeimg-agent", "update", "pull"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let rss_kb: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("MAXRSS_KB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    eprintln!("pull of a {ROOT}-byte root image: peak RSS {rss_kb} KiB");
    assert!(rss_kb < 32 * 1024, "peak RSS {rss_kb} KiB: {err}");
    let slot = std::fs::read(root.path("/dev/vda3")).unwrap();
    assert!(
        slot[..ROOT] == v2_root[..],
        "slot b is not the update's root"
    );
    assert!(
        root.path("/boot/efi/loader/entries/edgeimg-2-b+3.conf")
            .exists()
    );
    no_payload_copy(&root, ROOT);
}
