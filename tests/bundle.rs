//! `edgeimg bundle fetch|import|verify|list` through the real binary, against a
//! local HTTP/1.1 server laid out like the upstream release pages
//! (`/k3s-io/k3s/releases/download/v1.36.4%2Bk3s1/...`,
//! `/containerd/nerdctl/releases/download/v2.1.6/...`). The files it serves are
//! small synthetic stand-ins (not K3s, not nerdctl) with real checksum files.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use edgeimg::bundle::{self, Arch, LockFile, Manifest, Store};
use sha2::{Digest, Sha256};

const BUNDLE: &str = "k3s-v1.36.4+k3s1";
const K3S: &str = "/k3s-io/k3s/releases/download/v1.36.4%2Bk3s1";
const NERDCTL: &str = "/containerd/nerdctl/releases/download/v2.1.6";

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Deterministic filler bytes, labelled as a synthetic test asset.
fn synthetic(label: &str, len: usize) -> Vec<u8> {
    let mut v =
        format!("synthetic edgeimg test asset `{label}` (not a real release file)\n").into_bytes();
    let mut x: u64 = label.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push((x >> 24) as u8);
    }
    v
}

/// Synthetic bytes behind a 64-bit little-endian ELF header for `machine`
/// (what `bundle verify DIR` checks of the k3s binary).
fn fake_elf(machine: u16, label: &str, len: usize) -> Vec<u8> {
    let mut v = b"\x7fELF\x02\x01\x01".to_vec();
    v.resize(16, 0);
    v.extend_from_slice(&2u16.to_le_bytes()); // e_type: EXEC
    v.extend_from_slice(&machine.to_le_bytes());
    v.extend_from_slice(&synthetic(label, len - v.len()));
    v
}

// ---------------------------------------------------------------- the server

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    /// Serve these with one byte flipped (checksum files still list the good hash).
    corrupt: HashSet<String>,
    /// Announce the full length, send this many body bytes, then close: once.
    cut_once: HashMap<String, usize>,
    /// The same, every time.
    cut_always: HashMap<String, usize>,
    /// 404 these.
    missing: HashSet<String>,
    /// Answer these with `302 Found` to another path (as GitHub sends release downloads to its object store).
    redirect: HashMap<String, String>,
    /// Every request: (request line, path, Range header).
    requests: Vec<(String, String, Option<String>)>,
}

struct Server {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves the amd64 and arm64 release files of the pinned bundle.
    fn start() -> Server {
        let mut files = HashMap::new();
        for (arch, k3s) in [("amd64", "k3s"), ("arm64", "k3s-arm64")] {
            let bin = fake_elf(if arch == "amd64" { 62 } else { 183 }, k3s, 200_000);
            let airgap = synthetic(&format!("airgap-{arch}"), 700_000);
            let other = synthetic(&format!("k3s-airgap-images-{arch}.tar.gz"), 1000);
            let sums = format!(
                "{}  {k3s}\n{}  k3s-airgap-images-{arch}.tar.zst\n{}  k3s-airgap-images-{arch}.tar.gz\n",
                sha(&bin),
                sha(&airgap),
                sha(&other)
            );
            files.insert(format!("{K3S}/{k3s}"), bin);
            files.insert(format!("{K3S}/k3s-airgap-images-{arch}.tar.zst"), airgap);
            files.insert(format!("{K3S}/sha256sum-{arch}.txt"), sums.into_bytes());
        }
        let mut sums = String::new();
        for arch in ["amd64", "arm64"] {
            for name in [
                format!("nerdctl-2.1.6-linux-{arch}.tar.gz"),
                format!("nerdctl-full-2.1.6-linux-{arch}.tar.gz"),
            ] {
                let data = synthetic(
                    &name,
                    if name.contains("full") {
                        300_000
                    } else {
                        90_000
                    },
                );
                sums.push_str(&format!("{}  {name}\n", sha(&data)));
                files.insert(format!("{NERDCTL}/{name}"), data);
            }
        }
        files.insert(format!("{NERDCTL}/SHA256SUMS"), sums.into_bytes());
        let state = Arc::new(Mutex::new(State {
            files,
            ..Default::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || handle(conn, &st));
            }
        });
        Server {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    fn file(&self, path: &str) -> Vec<u8> {
        self.with(|s| s.files[path].clone())
    }

    fn requests(&self) -> Vec<(String, String, Option<String>)> {
        self.with(|s| s.requests.clone())
    }

    /// Stops accepting: later connections are refused.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One connection: HTTP/1.1, one request per connection (`Connection: close`),
/// after an optional CONNECT (proxy tunnel) on the same stream.
fn handle(conn: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let request_line = request_line.trim_end().to_string();
        let mut range = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("range")
            {
                range = Some(v.trim().to_string());
            }
        }
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        // Absolute-form (plain proxy) → path.
        let path = match target.split_once("://") {
            Some((_, rest)) => rest
                .find('/')
                .map(|i| rest[i..].to_string())
                .unwrap_or("/".into()),
            None => target.clone(),
        };
        state
            .lock()
            .unwrap()
            .requests
            .push((request_line.clone(), path.clone(), range.clone()));
        if method == "CONNECT" {
            out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .unwrap();
            continue;
        }
        let (status, headers, body, cut) = respond(state, &path, range.as_deref());
        let mut head = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = out.write_all(head.as_bytes());
        let send = cut.unwrap_or(body.len()).min(body.len());
        let _ = out.write_all(&body[..send]);
        let _ = out.flush();
        let _ = out.shutdown(Shutdown::Both);
        return;
    }
}

/// (status line, extra headers, body, bytes of the body to send before closing).
type Response = (String, Vec<(String, String)>, Vec<u8>, Option<usize>);

fn respond(state: &Mutex<State>, path: &str, range: Option<&str>) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(to) = s.redirect.get(path) {
        return (
            "302 Found".into(),
            vec![("Location".into(), to.clone())],
            vec![],
            None,
        );
    }
    if s.missing.contains(path) || !s.files.contains_key(path) {
        return ("404 Not Found".into(), vec![], b"Not Found".to_vec(), None);
    }
    let mut data = s.files[path].clone();
    if s.corrupt.contains(path) {
        let i = data.len() / 2;
        data[i] ^= 0xff;
    }
    let cut = s
        .cut_once
        .remove(path)
        .or_else(|| s.cut_always.get(path).copied());
    let len = data.len();
    if let Some(r) = range {
        let start: usize = r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse().ok())
            .expect("open-ended byte range");
        if start >= len {
            return (
                "416 Range Not Satisfiable".into(),
                vec![("Content-Range".into(), format!("bytes */{len}"))],
                vec![],
                None,
            );
        }
        return (
            "206 Partial Content".into(),
            vec![(
                "Content-Range".into(),
                format!("bytes {start}-{}/{len}", len - 1),
            )],
            data[start..].to_vec(),
            cut,
        );
    }
    (
        "200 OK".into(),
        vec![("Content-Type".into(), "application/octet-stream".into())],
        data,
        cut,
    )
}

// ---------------------------------------------------------------- the client side

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    fn lock(&self) -> PathBuf {
        self.dir.path().join("edgeimg.lock")
    }
    fn store(&self) -> Store {
        Store::open(self.cache().join("bundles"))
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_edgeimg"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("EDGEIMG_CACHE_DIR", self.cache())
            .env_remove("EDGEIMG_BUNDLE_MIRROR");
        for v in [
            "ALL_PROXY",
            "all_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "NO_PROXY",
            "no_proxy",
        ] {
            c.env_remove(v);
        }
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn fetch(&self, server: &str, extra: &[&str]) -> Output {
        let lock = self.lock();
        let mut args = vec![
            "bundle",
            "fetch",
            BUNDLE,
            "--arch",
            "amd64",
            "--mirror",
            server,
            "--lock",
            lock.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }
    /// SHA-256 names of the files in the store.
    fn stored(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.cache().join("bundles/sha256"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
    fn partials(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.cache().join("bundles/partial"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    }
}

fn ok(o: &Output) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "failed: {}\nstdout: {stdout}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

fn fails(o: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "should have failed; stdout: {}\nstderr: {err}",
        String::from_utf8_lossy(&o.stdout)
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`:\n{err}");
    }
    eprintln!("--- expected failure:\n{err}");
    err
}

fn amd64_files(server: &Server) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("k3s", server.file(&format!("{K3S}/k3s"))),
        (
            "k3s-airgap-images-amd64.tar.zst",
            server.file(&format!("{K3S}/k3s-airgap-images-amd64.tar.zst")),
        ),
        (
            "sha256sum-amd64.txt",
            server.file(&format!("{K3S}/sha256sum-amd64.txt")),
        ),
        (
            "nerdctl-2.1.6-linux-amd64.tar.gz",
            server.file(&format!("{NERDCTL}/nerdctl-2.1.6-linux-amd64.tar.gz")),
        ),
        ("SHA256SUMS", server.file(&format!("{NERDCTL}/SHA256SUMS"))),
    ]
}

// ---------------------------------------------------------------- tests

#[test]
fn good_fetch_stores_and_locks_then_hits_the_cache_offline() {
    let mut server = Server::start();
    let env = Env::new();
    let out = ok(&env.fetch(&server.url(), &[]));
    assert!(out.contains("fetched k3s "), "{out}");

    // Store: exactly the five files, each named by its SHA-256.
    let files = amd64_files(&server);
    let mut want: Vec<String> = files.iter().map(|(_, d)| sha(d)).collect();
    want.sort();
    assert_eq!(env.stored(), want);
    for h in &want {
        assert_eq!(
            &sha(&std::fs::read(env.cache().join("bundles/sha256").join(h)).unwrap()),
            h
        );
    }
    assert!(env.partials().is_empty(), "{:?}", env.partials());

    // Lock: name, version, arch, every file → sha256 and size.
    let text = std::fs::read_to_string(env.lock()).unwrap();
    assert!(
        text.contains("name = \"k3s-v1.36.4+k3s1\"")
            && text.contains("arch = \"amd64\"")
            && text.contains("version = \"v1.36.4+k3s1\""),
        "{text}"
    );
    let lock = LockFile::load_or_empty(&env.lock()).unwrap();
    let entry = lock.entry(BUNDLE, Arch::Amd64).unwrap();
    assert_eq!(entry.assets.len(), 5);
    for (name, data) in &files {
        let a = &entry.assets[*name];
        assert_eq!(
            (a.sha256.as_str(), a.size),
            (sha(data).as_str(), data.len() as u64),
            "{name}"
        );
    }
    let n_requests = server.requests().len();
    assert_eq!(n_requests, 5, "{:?}", server.requests());

    // The library resolves it for the builder.
    let m = Manifest::find(BUNDLE).unwrap();
    let r = bundle::resolve_in(&env.store(), &m, &env.lock(), Arch::Amd64, false).unwrap();
    assert_eq!(r.k3s.sha256, sha(&files[0].1));
    assert_eq!(std::fs::read(&r.k3s.path).unwrap(), files[0].1);
    assert_eq!(r.airgap_images.file, "k3s-airgap-images-amd64.tar.zst");
    assert_eq!(r.nerdctl.version, "2.1.6");
    assert!(r.nerdctl_full.is_none());
    let e = bundle::resolve_in(&env.store(), &m, &env.lock(), Arch::Amd64, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nerdctl-full-2.1.6-linux-amd64.tar.gz not locked")
            && e.contains("--buildkit")
            && e.contains("--bundle"),
        "{e}"
    );

    // Second fetch: no network at all.
    server.stop();
    let out = ok(&env.fetch(&server.url(), &[]));
    assert!(
        out.contains("cached  k3s ") && !out.contains("fetched"),
        "{out}"
    );
    assert_eq!(server.requests().len(), n_requests);

    // verify and list.
    let out = ok(&env.run(&["bundle", "verify", "--lock", env.lock().to_str().unwrap()]));
    assert!(out.contains("5 files in"), "{out}");
    let out = ok(&env.run(&["bundle", "list"]));
    assert!(
        out.contains("shipped manifests:") && out.contains("k3s-v1.36.4+k3s1"),
        "{out}"
    );
    let cached = out.split("cached in").nth(1).unwrap();
    assert!(
        cached.contains("k3s-v1.36.4+k3s1")
            && cached.contains("amd64")
            && cached.contains("v1.36.4+k3s1")
            && cached.contains("5 files"),
        "{out}"
    );

    // BuildKit needs one more file, which is not cached and the server is gone.
    fails(
        &env.fetch(&server.url(), &["--buildkit"]),
        &["nerdctl-full-2.1.6-linux-amd64.tar.gz"],
    );
}

#[test]
fn buildkit_adds_nerdctl_full_to_the_same_lock_entry() {
    let server = Server::start();
    let env = Env::new();
    ok(&env.fetch(&server.url(), &[]));
    let before = server.requests().len();
    ok(&env.fetch(&server.url(), &["--buildkit"]));
    // Only nerdctl-full and its checksum list (already stored: from the cache) are needed.
    let new: Vec<_> = server.requests()[before..]
        .iter()
        .map(|r| r.1.clone())
        .collect();
    assert_eq!(
        new,
        vec![format!("{NERDCTL}/nerdctl-full-2.1.6-linux-amd64.tar.gz")]
    );
    let lock = LockFile::load_or_empty(&env.lock()).unwrap();
    assert_eq!(lock.entry(BUNDLE, Arch::Amd64).unwrap().assets.len(), 6);
    let m = Manifest::find(BUNDLE).unwrap();
    let r = bundle::resolve_in(&env.store(), &m, &env.lock(), Arch::Amd64, true).unwrap();
    assert_eq!(
        r.nerdctl_full.unwrap().file,
        "nerdctl-full-2.1.6-linux-amd64.tar.gz"
    );
}

#[test]
fn corrupted_asset_is_refused_and_nothing_is_cached() {
    let server = Server::start();
    let path = format!("{K3S}/k3s-airgap-images-amd64.tar.zst");
    server.with(|s| s.corrupt.insert(path.clone()));
    let env = Env::new();
    let good = sha(&server.file(&path));
    let err = fails(
        &env.fetch(&server.url(), &[]),
        &[
            "k3s-airgap-images-amd64.tar.zst",
            &good,
            "does not match",
            "sha256sum-amd64.txt",
            "refused",
        ],
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    let mut bad = server.file(&path);
    let i = bad.len() / 2;
    bad[i] ^= 0xff;
    assert!(err.contains(&sha(&bad)), "names the hash it got: {err}");
    assert!(
        !env.stored().contains(&good) && !env.stored().contains(&sha(&bad)),
        "{:?}",
        env.stored()
    );
    assert!(
        env.partials().is_empty(),
        "the partial is deleted: {:?}",
        env.partials()
    );
    assert!(
        !env.lock().exists(),
        "no lock is written for a failed fetch"
    );
}

#[test]
fn truncated_asset_is_detected_and_not_cached() {
    let server = Server::start();
    let path = format!("{K3S}/k3s");
    server.with(|s| s.cut_always.insert(path.clone(), 50_000));
    let env = Env::new();
    fails(
        &env.fetch(&server.url(), &[]),
        &[
            "/k3s-io/k3s/releases/download/v1.36.4%2Bk3s1/k3s",
            "interrupted after 50000 of 200000 bytes",
            "resume",
        ],
    );
    assert!(!env.stored().contains(&sha(&server.file(&path))));
    assert!(!env.lock().exists());
    // The server keeps cutting: the resumed attempt is cut too, never stored.
    fails(
        &env.fetch(&server.url(), &[]),
        &["interrupted after 100000 of 200000 bytes"],
    );
    assert!(!env.stored().contains(&sha(&server.file(&path))));

    // A file truncated on the server (honest, shorter length) fails its checksum.
    let server = Server::start();
    server.with(|s| {
        let f = s.files.get_mut(&path).unwrap();
        f.truncate(120_000);
    });
    let env = Env::new();
    // The checksum list still names the full file's hash.
    fails(&env.fetch(&server.url(), &[]), &["k3s", "does not match"]);
    assert!(env.partials().is_empty());
    assert!(!env.stored().contains(&sha(&server.file(&path))));
}

#[test]
fn not_found_names_the_url() {
    let server = Server::start();
    let path = format!("{NERDCTL}/nerdctl-2.1.6-linux-amd64.tar.gz");
    server.with(|s| s.missing.insert(path.clone()));
    let env = Env::new();
    fails(
        &env.fetch(&server.url(), &[]),
        &[&format!("{}{path}", server.url()), "404"],
    );
    assert!(!env.lock().exists());
}

#[test]
fn interrupted_download_resumes_with_range() {
    let server = Server::start();
    let path = format!("{K3S}/k3s-airgap-images-amd64.tar.zst");
    server.with(|s| s.cut_once.insert(path.clone(), 300_000));
    let env = Env::new();
    fails(
        &env.fetch(&server.url(), &[]),
        &[
            "interrupted after 300000 of 700000 bytes",
            "run the same command again to resume",
        ],
    );
    let partials = env.partials();
    assert_eq!(partials.len(), 1, "{partials:?}");
    assert!(
        partials[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("k3s-airgap-images-amd64.tar.zst-")
    );
    assert_eq!(std::fs::metadata(&partials[0]).unwrap().len(), 300_000);

    ok(&env.fetch(&server.url(), &[]));
    let ranged: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.1 == path)
        .collect();
    assert_eq!(ranged.len(), 2, "{ranged:?}");
    assert_eq!(ranged[0].2, None);
    assert_eq!(ranged[1].2.as_deref(), Some("bytes=300000-"));
    assert!(env.stored().contains(&sha(&server.file(&path))));
    assert!(env.partials().is_empty());
}

#[test]
fn redirected_download_resumes_at_the_redirect_target() {
    let server = Server::start();
    let path = format!("{K3S}/k3s-airgap-images-amd64.tar.zst");
    let object = "/objects/release-assets/airgap-amd64".to_string();
    server.with(|s| {
        let data = s.files[&path].clone();
        s.files.insert(object.clone(), data);
        s.redirect.insert(path.clone(), object.clone());
        s.cut_once.insert(object.clone(), 123_456);
    });
    let env = Env::new();
    fails(
        &env.fetch(&server.url(), &[]),
        &["interrupted after 123456 of 700000 bytes"],
    );
    ok(&env.fetch(&server.url(), &[]));
    let reqs: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.1 == path || r.1 == object)
        .map(|r| (r.1, r.2))
        .collect();
    assert_eq!(
        reqs,
        vec![
            (path.clone(), None),
            (object.clone(), None),
            (path.clone(), Some("bytes=123456-".into())),
            (object.clone(), Some("bytes=123456-".into()))
        ]
    );
    assert!(env.stored().contains(&sha(&server.file(&path))));
}

#[test]
fn resumed_download_that_does_not_verify_starts_again() {
    let server = Server::start();
    let path = format!("{K3S}/k3s");
    let env = Env::new();
    // A stale partial whose prefix is wrong.
    let m = Manifest::find(BUNDLE).unwrap();
    let spec = m.asset(Arch::Amd64, bundle::Role::K3s).unwrap().unwrap();
    let url = m.url_for(spec, Some(&server.url())).unwrap();
    let dir = env.cache().join("bundles/partial");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("k3s-{}.part", &sha(url.as_bytes())[..12])),
        vec![b'x'; 1000],
    )
    .unwrap();
    ok(&env.fetch(&server.url(), &[]));
    let reqs: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.1 == path)
        .map(|r| r.2)
        .collect();
    assert_eq!(reqs, vec![Some("bytes=1000-".to_string()), None]);
    assert!(env.stored().contains(&sha(&server.file(&path))));
}

fn bundle_dir(server: &Server, root: &Path) -> PathBuf {
    let d = root.join("carried");
    std::fs::create_dir_all(&d).unwrap();
    for (name, data) in amd64_files(server) {
        std::fs::write(d.join(name), data).unwrap();
    }
    d
}

#[test]
fn import_from_a_directory_good_and_tampered() {
    let server = Server::start();
    let env = Env::new();
    let dir = bundle_dir(&server, env.dir.path());
    let lock = env.lock();
    let import = |env: &Env| {
        env.run(&[
            "bundle",
            "import",
            dir.to_str().unwrap(),
            "--manifest",
            BUNDLE,
            "--arch",
            "amd64",
            "--lock",
            lock.to_str().unwrap(),
        ])
    };

    // Tampered first: nothing stored, no lock.
    let k3s = std::fs::read(dir.join("k3s")).unwrap();
    let mut bad = k3s.clone();
    bad[100] ^= 1;
    std::fs::write(dir.join("k3s"), &bad).unwrap();
    fails(
        &import(&env),
        &[
            "k3s",
            &dir.join("k3s").display().to_string(),
            &sha(&k3s),
            &sha(&bad),
            "does not match",
        ],
    );
    assert!(env.stored().is_empty(), "{:?}", env.stored());
    assert!(!lock.exists());

    // Good.
    std::fs::write(dir.join("k3s"), &k3s).unwrap();
    let out = ok(&import(&env));
    assert!(out.contains("imported k3s "), "{out}");
    assert_eq!(env.stored().len(), 5);
    let m = Manifest::find(BUNDLE).unwrap();
    let r = bundle::resolve_in(&env.store(), &m, &lock, Arch::Amd64, false).unwrap();
    assert_eq!(std::fs::read(&r.k3s.path).unwrap(), k3s);
    assert!(r.k3s.path.starts_with(env.cache()));

    // The same directory as `--bundle DIR`.
    let d = bundle::from_dir(&dir, &m, Arch::Amd64, false).unwrap();
    assert_eq!(d.k3s.path, dir.join("k3s"));
    assert_eq!(d.k3s.sha256, sha(&k3s));
    d.check_lock(&lock).unwrap();
    let e = bundle::from_dir(&dir, &m, Arch::Amd64, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nerdctl-full-2.1.6-linux-amd64.tar.gz is missing"),
        "{e}"
    );
    // A directory whose checksum file was edited to match a tampered binary still differs from the lock.
    std::fs::write(dir.join("k3s"), &bad).unwrap();
    let sums = std::fs::read_to_string(dir.join("sha256sum-amd64.txt"))
        .unwrap()
        .replace(&sha(&k3s), &sha(&bad));
    std::fs::write(dir.join("sha256sum-amd64.txt"), sums).unwrap();
    let d = bundle::from_dir(&dir, &m, Arch::Amd64, false).unwrap();
    let e = d.check_lock(&lock).unwrap_err().to_string();
    assert!(e.contains(&sha(&k3s)) && e.contains(&sha(&bad)), "{e}");
    fails(&import(&env), &[&sha(&k3s), &sha(&bad), "lock"]);

    // A missing file is named.
    std::fs::remove_file(dir.join("SHA256SUMS")).unwrap();
    fails(
        &import(&env),
        &["SHA256SUMS is missing from the bundle directory"],
    );
}

#[test]
fn verify_detects_a_modified_store_file_and_fetch_repairs_it() {
    let server = Server::start();
    let env = Env::new();
    ok(&env.fetch(&server.url(), &[]));
    let lock = env.lock();
    ok(&env.run(&["bundle", "verify", "--lock", lock.to_str().unwrap()]));
    let h = sha(&server.file(&format!("{NERDCTL}/nerdctl-2.1.6-linux-amd64.tar.gz")));
    let p = env.cache().join("bundles/sha256").join(&h);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut data = std::fs::read(&p).unwrap();
    data[10] ^= 1;
    std::fs::write(&p, &data).unwrap();
    fails(
        &env.run(&["bundle", "verify", "--lock", lock.to_str().unwrap()]),
        &[
            "1 problem",
            "nerdctl-2.1.6-linux-amd64.tar.gz",
            &h,
            &sha(&data),
        ],
    );
    let m = Manifest::find(BUNDLE).unwrap();
    let e = bundle::resolve_in(&env.store(), &m, &lock, Arch::Amd64, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("store is corrupt") && e.contains(&h), "{e}");
    // fetch notices, drops the bad copy and downloads it again.
    ok(&env.fetch(&server.url(), &[]));
    ok(&env.run(&["bundle", "verify", "--lock", lock.to_str().unwrap()]));
    // A file missing from the store is a problem too.
    std::fs::remove_file(&p).unwrap();
    fails(
        &env.run(&["bundle", "verify", "--lock", lock.to_str().unwrap()]),
        &["missing from the store"],
    );
}

#[test]
fn lock_mismatch_names_both_hashes() {
    let server = Server::start();
    let env = Env::new();
    ok(&env.fetch(&server.url(), &[]));
    let lock = env.lock();
    let real = sha(&server.file(&format!("{K3S}/k3s")));

    // The upstream release changed (same names, new bytes and checksum file):
    // a fresh cache with the committed lock refuses it, naming both hashes.
    let new = synthetic("k3s rebuilt", 200_000);
    server.with(|s| {
        let sums = String::from_utf8(s.files[&format!("{K3S}/sha256sum-amd64.txt")].clone())
            .unwrap()
            .replace(&real, &sha(&new));
        s.files
            .insert(format!("{K3S}/sha256sum-amd64.txt"), sums.into_bytes());
        s.files.insert(format!("{K3S}/k3s"), new.clone());
    });
    let other = Env::new();
    std::fs::copy(&lock, other.lock()).unwrap();
    let err = fails(
        &other.fetch(&server.url(), &[]),
        &["k3s:", &real, &sha(&new), "lock", "sha256sum-amd64.txt"],
    );
    assert!(
        !err.contains("sha256sum-amd64.txt:"),
        "names the asset, not the list: {err}"
    );
    assert!(!other.stored().contains(&sha(&new)));

    // An edited lock against the cached checksum list.
    let text = std::fs::read_to_string(&lock)
        .unwrap()
        .replace(&real, &"0".repeat(64));
    std::fs::write(&lock, text).unwrap();
    fails(
        &env.fetch(&server.url(), &[]),
        &[&real, &"0".repeat(64), "k3s"],
    );
}

#[test]
fn proxy_from_the_environment_is_used() {
    let server = Server::start();
    let env = Env::new();
    let lock = env.lock();
    let o = env
        .cmd(&[
            "bundle",
            "fetch",
            BUNDLE,
            "--arch",
            "arm64",
            "--lock",
            lock.to_str().unwrap(),
        ])
        .env("EDGEIMG_BUNDLE_MIRROR", "http://mirror.invalid")
        .env("HTTP_PROXY", server.url())
        .output()
        .unwrap();
    ok(&o);
    let reqs = server.requests();
    assert!(
        reqs.iter()
            .any(|r| r.0 == "CONNECT mirror.invalid:80 HTTP/1.1"),
        "{reqs:?}"
    );
    assert!(
        reqs.iter().any(|r| r.1 == format!("{K3S}/k3s-arm64")),
        "{reqs:?}"
    );
    let l = LockFile::load_or_empty(&lock).unwrap();
    assert!(
        l.entry(BUNDLE, Arch::Arm64)
            .unwrap()
            .assets
            .contains_key("k3s-airgap-images-arm64.tar.zst")
    );
}

#[test]
fn unknown_manifest_and_bad_manifest_file() {
    let env = Env::new();
    fails(
        &env.run(&["bundle", "fetch", "k3s-v9.9.9", "--arch", "amd64"]),
        &["unknown bundle manifest `k3s-v9.9.9`", BUNDLE],
    );
    let p = env.dir.path().join("m.toml");
    std::fs::write(&p, "schema = 1\nname = \"x\"\nfrobnicate = 2\n").unwrap();
    fails(
        &env.run(&["bundle", "fetch", p.to_str().unwrap(), "--arch", "amd64"]),
        &[
            &format!("{}:3: key `frobnicate`", p.display()),
            "unknown field",
        ],
    );
    fails(&env.run(&["bundle", "verify"]), &["edgeimg.lock"]);
}

#[test]
fn credentials_in_a_mirror_url_are_not_printed() {
    let server = Server::start();
    server.with(|s| s.missing.insert(format!("{K3S}/sha256sum-amd64.txt")));
    let env = Env::new();
    let mirror = format!("http://user:s3cr3t-token@127.0.0.1:{}", server.port);
    let err = fails(&env.fetch(&mirror, &[]), &["404", "***@127.0.0.1"]);
    assert!(!err.contains("s3cr3t"), "{err}");
}

/// Runs `edgeimg` with the cache and working directory of `root` (a second host).
fn run_at(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeimg"))
        .args(args)
        .current_dir(root)
        .env("EDGEIMG_CACHE_DIR", root.join("cache"))
        .env_remove("EDGEIMG_BUNDLE_MIRROR")
        .output()
        .unwrap()
}

#[test]
fn fetch_export_verify_import_on_a_second_host() {
    let server = Server::start();
    let env = Env::new();
    // The lock lands beside the config `-c` names, as `build -c` reads it.
    std::fs::create_dir_all(env.dir.path().join("configs")).unwrap();
    let out = ok(&env.run(&[
        "bundle",
        "fetch",
        BUNDLE,
        "--arch",
        "amd64",
        "--mirror",
        &server.url(),
        "-c",
        "configs/x.toml",
    ]));
    assert!(out.contains("lock configs/edgeimg.lock"), "{out}");
    assert!(env.dir.path().join("configs/edgeimg.lock").is_file());
    assert!(!env.lock().exists(), "./edgeimg.lock written as well");

    // Export: upstream names plus a pinning bundle.toml; an existing target is refused.
    let carried = env.dir.path().join("carried");
    let export = |env: &Env| {
        env.run(&[
            "bundle",
            "export",
            BUNDLE,
            "--arch",
            "amd64",
            "--out",
            "carried",
            "-c",
            "configs/x.toml",
        ])
    };
    let out = ok(&export(&env));
    assert!(out.contains("exported k3s "), "{out}");
    let mut names: Vec<String> = std::fs::read_dir(&carried)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = amd64_files(&server)
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    want.push("bundle.toml".into());
    want.sort();
    assert_eq!(names, want);
    for (name, data) in amd64_files(&server) {
        assert_eq!(std::fs::read(carried.join(name)).unwrap(), data, "{name}");
    }
    let m = Manifest::load(&carried.join("bundle.toml")).unwrap();
    assert_eq!(m.name, BUNDLE);
    let k3s_pin = m
        .asset(Arch::Amd64, bundle::Role::K3s)
        .unwrap()
        .unwrap()
        .sha256
        .clone();
    assert_eq!(k3s_pin, Some(sha(&server.file(&format!("{K3S}/k3s")))));
    fails(&export(&env), &["carried", "already exists"]);
    // No temporary directory left behind.
    assert!(std::fs::read_dir(env.dir.path()).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".export-")
    }),);

    // The second host: another cache, no network (the server is stopped).
    drop(server);
    let host2 = tempfile::tempdir().unwrap();
    let dir2 = host2.path().join("carried");
    copy_dir(&carried, &dir2);
    let out = ok(&run_at(host2.path(), &["bundle", "verify", "carried"]));
    assert!(out.contains("complete and verified (k3s: binary"), "{out}");
    let json = ok(&run_at(
        host2.path(),
        &["bundle", "verify", "carried", "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["manifest"], BUNDLE);
    assert_eq!(v["arches"][0]["arch"], "amd64");
    assert!(
        !host2.path().join("cache").exists(),
        "verify wrote into the cache"
    );

    // `bundle import DIR` as the README writes it; then the build's resolution finds it.
    let out = ok(&run_at(host2.path(), &["bundle", "import", "carried"]));
    assert!(out.contains("imported; lock edgeimg.lock"), "{out}");
    let store2 = Store::open(host2.path().join("cache/bundles"));
    let r = bundle::resolve_in(
        &store2,
        &Manifest::find(BUNDLE).unwrap(),
        &host2.path().join("edgeimg.lock"),
        Arch::Amd64,
        false,
    )
    .unwrap();
    assert!(r.k3s.path.starts_with(host2.path().join("cache")));
    assert_eq!(r.k3s.sha256, k3s_pin.unwrap());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn verify_dir_refuses_tampered_missing_symlinked_and_wrong_arch() {
    let server = Server::start();
    let env = Env::new();
    ok(&env.fetch(&server.url(), &[]));
    ok(&env.run(&["bundle", "export", BUNDLE, "--arch", "amd64", "-o", "good"]));
    let good = env.dir.path().join("good");
    let case = |name: &str| {
        let d = env.dir.path().join(name);
        copy_dir(&good, &d);
        d
    };
    let verify = |d: &Path| env.run(&["bundle", "verify", d.to_str().unwrap()]);
    ok(&verify(&good));

    // A flipped byte: refused against the pinned and listed hash.
    let d = case("tampered");
    let mut k3s = std::fs::read(d.join("k3s")).unwrap();
    k3s[100] ^= 1;
    std::fs::write(d.join("k3s"), &k3s).unwrap();
    fails(&verify(&d), &["k3s", "does not match"]);
    // With --json: one object on stdout naming the directory and the file,
    // and the same exit status.
    let plain = verify(&d);
    let j = env.run(&["bundle", "verify", "--json", d.to_str().unwrap()]);
    assert_eq!(
        j.status.code(),
        plain.status.code(),
        "--json changes the exit status"
    );
    let v: serde_json::Value = serde_json::from_slice(&j.stdout)
        .unwrap_or_else(|e| panic!("a failed --json verify prints JSON ({e}): {j:?}"));
    assert_eq!(v["verified"], false, "{v}");
    assert_eq!(v["dir"], d.display().to_string(), "{v}");
    assert!(v["error"].as_str().unwrap().contains("k3s"), "{v}");

    // A missing file is named.
    let d = case("incomplete");
    std::fs::remove_file(d.join("k3s-airgap-images-amd64.tar.zst")).unwrap();
    fails(
        &verify(&d),
        &["k3s-airgap-images-amd64.tar.zst is missing from the bundle directory"],
    );

    // A member that is a symlink out of the directory is refused, not followed.
    let d = case("symlinked");
    let outside = env.dir.path().join("outside-k3s");
    std::fs::rename(d.join("k3s"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("k3s")).unwrap();
    fails(&verify(&d), &["k3s: a symbolic link", "regular files only"]);
    fails(
        &env.run(&[
            "bundle",
            "import",
            d.to_str().unwrap(),
            "--lock",
            "other.lock",
        ]),
        &["a symbolic link"],
    );
    assert!(!env.dir.path().join("other.lock").exists());

    // A k3s for the wrong architecture (with checksums and pins that agree) is refused.
    let d = case("wrong-arch");
    let arm = fake_elf(183, "k3s", 1000);
    let old = sha(&std::fs::read(d.join("k3s")).unwrap());
    std::fs::write(d.join("k3s"), &arm).unwrap();
    let old_sums = sha(&std::fs::read(d.join("sha256sum-amd64.txt")).unwrap());
    let sums = std::fs::read_to_string(d.join("sha256sum-amd64.txt"))
        .unwrap()
        .replace(&old, &sha(&arm));
    std::fs::write(d.join("sha256sum-amd64.txt"), &sums).unwrap();
    let t = std::fs::read_to_string(d.join("bundle.toml"))
        .unwrap()
        .replace(&old, &sha(&arm))
        .replace(&old_sums, &sha(sums.as_bytes()));
    std::fs::write(d.join("bundle.toml"), t).unwrap();
    fails(&verify(&d), &["k3s", "amd64"]);
    // The same directory with an x86-64 k3s that differs from the lock: the lock refuses it.
    let other = fake_elf(62, "another k3s", 1000);
    let arm_sums = sha(sums.as_bytes());
    let sums2 = sums.replace(&sha(&arm), &sha(&other));
    std::fs::write(d.join("k3s"), &other).unwrap();
    std::fs::write(d.join("sha256sum-amd64.txt"), &sums2).unwrap();
    let t = std::fs::read_to_string(d.join("bundle.toml"))
        .unwrap()
        .replace(&sha(&arm), &sha(&other))
        .replace(&arm_sums, &sha(sums2.as_bytes()));
    std::fs::write(d.join("bundle.toml"), t).unwrap();
    fails(&verify(&d), &["k3s", "the lock", &old, &sha(&other)]);
    // Without that lock (another host's), the directory stands on its own.
    ok(&env.run(&[
        "bundle",
        "verify",
        d.to_str().unwrap(),
        "--lock",
        "none.lock",
    ]));

    // A directory without bundle.toml needs --manifest, and then verifies.
    let d = case("no-manifest");
    std::fs::remove_file(d.join("bundle.toml")).unwrap();
    fails(&verify(&d), &["no bundle.toml", "--manifest"]);
    ok(&env.run(&[
        "bundle",
        "verify",
        d.to_str().unwrap(),
        "--manifest",
        BUNDLE,
    ]));

    // An oversized manifest is refused without reading it all.
    let d = case("huge");
    std::fs::write(d.join("bundle.toml"), vec![b'#'; 2 << 20]).unwrap();
    fails(&verify(&d), &["too large"]);

    // A missing directory says so once.
    let e = fails(&verify(&env.dir.path().join("nope")), &["nope"]);
    assert_eq!(
        e.matches("No such").count() + e.matches("no such").count(),
        1,
        "{e}"
    );
}

#[test]
fn bundle_list_json_lists_shipped_and_cached() {
    let server = Server::start();
    let env = Env::new();
    let v: serde_json::Value =
        serde_json::from_str(&ok(&env.run(&["bundle", "list", "--json"]))).unwrap();
    assert_eq!(v["shipped"][0]["name"], BUNDLE);
    assert_eq!(v["cached"].as_array().unwrap().len(), 0);
    ok(&env.fetch(&server.url(), &[]));
    let v: serde_json::Value =
        serde_json::from_str(&ok(&env.run(&["bundle", "list", "--json"]))).unwrap();
    assert_eq!(v["cached"][0]["bundle"], BUNDLE);
    assert_eq!(v["cached"][0]["files"].as_array().unwrap().len(), 5);
}

#[test]
fn standin_bundle_verifies_imports_by_its_own_manifest_and_exports_again() {
    // edgeimg's labelled stand-in (not K3s), both arches in one directory.
    let env = Env::new();
    let dir = env.dir.path().join("standin");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("qemu-tests/standin/make-bundle");
    for arch in ["amd64", "arm64"] {
        ok(&Command::new(&script)
            .args(["--arch", arch, "--out"])
            .arg(&dir)
            .output()
            .unwrap());
    }
    let out = ok(&env.run(&["bundle", "verify", "standin"]));
    for arch in ["amd64", "arm64"] {
        assert!(
            out.contains(&format!(
                "standin-v0.0.0-standin ({arch}) in standin: complete and verified (k3s: stand-in"
            )),
            "{out}"
        );
    }
    // doctor checks a `--bundle DIR` the build would be given, instead of the cache.
    let o = env.run(&["doctor", "--board", "x86_64", "--bundle", "standin"]);
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("K3s bundle"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with("ok")
            && line.contains("standin-v0.0.0-standin (amd64)")
            && line.contains("directory standin verified"),
        "{line}"
    );

    // `bundle import DIR` alone: the manifest and both arches come from the directory.
    let out = ok(&env.run(&["bundle", "import", "standin"]));
    assert_eq!(
        out.matches(" imported; lock edgeimg.lock").count(),
        2,
        "{out}"
    );
    let lock = LockFile::load_or_empty(&env.lock()).unwrap();
    assert!(lock.entry("standin-v0.0.0-standin", Arch::Amd64).is_some());
    assert!(lock.entry("standin-v0.0.0-standin", Arch::Arm64).is_some());
    // `--arch` narrows it; an arch the directory lacks is named.
    let one = env.dir.path().join("one");
    ok(&Command::new(&script)
        .args(["--arch", "arm64", "--out"])
        .arg(&one)
        .output()
        .unwrap());
    fails(
        &env.run(&["bundle", "verify", "one", "--arch", "amd64"]),
        &["one/bundle.toml has no assets for amd64 (it has: arm64)"],
    );
    // Exported again from the cache (the manifest named by its file), it verifies.
    ok(&env.run(&[
        "bundle",
        "export",
        "standin/bundle.toml",
        "--arch",
        "arm64",
        "-o",
        "again",
    ]));
    let out = ok(&env.run(&["bundle", "verify", "again"]));
    assert!(
        out.contains("(arm64) in again: complete and verified (k3s: stand-in"),
        "{out}"
    );
}
