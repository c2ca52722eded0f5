//! `edgeimg keygen --tuf` and `edgeimg publish` through the real binary, and
//! the repository read back as a device would: `tough`'s client over real
//! HTTP from a small file server on loopback.

mod common;
use common::*;

use sha2::Digest as _;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Serves the files under `root` over HTTP/1.1 (GET, one request per
/// connection) on a loopback port until the test process ends; returns the
/// base URL. The listener is bound before this returns, so no wait is needed.
fn serve(root: &Path) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut line = String::new();
            let mut r = BufReader::new(conn.try_clone().unwrap());
            if r.read_line(&mut line).is_err() {
                continue;
            }
            // Skip the request headers.
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let rel = path.trim_start_matches('/');
            let file = (!rel.split('/').any(|c| c == ".." || c.is_empty()))
                .then(|| root.join(rel))
                .filter(|p| p.is_file());
            let _ = match file.and_then(|p| std::fs::read(p).ok()) {
                Some(body) => conn
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|_| conn.write_all(&body)),
                None => conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    format!("http://{addr}")
}

/// A `tough` transport over HTTP (ureq): what a device's client would use.
#[derive(Debug, Clone, Copy)]
struct Http;

#[tough::async_trait]
impl tough::Transport for Http {
    async fn fetch(&self, url: url::Url) -> Result<tough::TransportStream, tough::TransportError> {
        use tough::{TransportError, TransportErrorKind};
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let resp = agent.get(url.as_str()).call().map_err(|e| {
            TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), e)
        })?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Err(TransportError::new(
                TransportErrorKind::FileNotFound,
                url.as_str(),
            ));
        }
        if status != 200 {
            return Err(TransportError::new(
                TransportErrorKind::Other,
                format!("{url}: HTTP {status}"),
            ));
        }
        let mut body = Vec::new();
        resp.into_body()
            .into_reader()
            .read_to_end(&mut body)
            .map_err(|e| {
                TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), e)
            })?;
        let item: Result<tough::Bytes, TransportError> = Ok(tough::Bytes::from(body));
        Ok(Box::pin(futures::stream::iter([item])))
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// A loaded repository and the client's datastore, which it keeps using.
struct Client {
    repo: tough::Repository,
    _datastore: tempfile::TempDir,
}

impl std::ops::Deref for Client {
    type Target = tough::Repository;
    fn deref(&self) -> &tough::Repository {
        &self.repo
    }
}

/// The board's repository as a device loads it over HTTP, trusting `root`.
fn client_load(base: &str, board: &str, root: &Path) -> Result<Client, String> {
    let root = std::fs::read(root).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let repo = rt().block_on(async {
        tough::RepositoryLoader::new(
            &root,
            url::Url::parse(&format!("{base}/{board}/metadata/")).unwrap(),
            url::Url::parse(&format!("{base}/{board}/targets/")).unwrap(),
        )
        .transport(Http)
        .datastore(cache.path())
        .load()
        .await
        .map_err(|e| format!("{e}"))
    })?;
    Ok(Client {
        repo,
        _datastore: cache,
    })
}

fn read_target(repo: &tough::Repository, name: &str) -> Result<Vec<u8>, String> {
    rt().block_on(async {
        use futures::TryStreamExt;
        let name = tough::TargetName::new(name).unwrap();
        let stream = repo
            .read_target(&name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no such target")?;
        let chunks: Vec<tough::Bytes> = stream.try_collect().await.map_err(|e| e.to_string())?;
        Ok(chunks.concat())
    })
}

/// Every file under `dir`, hidden ones too, with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                m.insert(p.strip_prefix(dir).unwrap().join(""), vec![]);
                stack.push(p);
            } else {
                m.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    m
}

struct Fleet {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    tuf: PathBuf,
    update_key: PathBuf,
    update_pub: PathBuf,
    repo: PathBuf,
}

fn fleet() -> Fleet {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let tuf = dir.join("repo-keys");
    let o = ok(edgeimg().args(["keygen", "--tuf", "--out"]).arg(&tuf));
    for role in ["root", "targets", "snapshot", "timestamp"] {
        let k = dir.join(format!("repo-keys-{role}.key"));
        assert!(o.contains(&k.display().to_string()), "{o}");
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{role} key mode");
        assert!(
            std::fs::read_to_string(&k)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
    }
    let (update_key, update_pub) = updates::keygen(&dir, "update");
    let repo = dir.join("repo");
    Fleet {
        _dir: d,
        dir,
        tuf,
        update_key,
        update_pub,
        repo,
    }
}

impl Fleet {
    fn release(&self, generation: u64, root: &[u8]) -> PathBuf {
        let sub = self.dir.join(format!("build-{generation}"));
        std::fs::create_dir_all(&sub).unwrap();
        updates::make_update(
            &sub,
            &self.update_key,
            "x86_64",
            "amd64",
            generation,
            root,
            &format!("{generation:016x}"),
        )
    }

    fn publish(&self, update: &Path, extra: &[&str]) -> std::process::Output {
        self.publish_with(update, &self.tuf, &self.update_pub)
            .args(extra)
            .output()
            .unwrap()
    }

    /// `edgeimg publish` into this fleet's repository with other keys.
    fn publish_with(&self, update: &Path, keys: &Path, update_pub: &Path) -> Command {
        let mut c = edgeimg();
        c.arg("publish")
            .arg(update)
            .arg("--repo")
            .arg(&self.repo)
            .arg("--keys")
            .arg(keys)
            .arg("--update-key")
            .arg(update_pub);
        c
    }

    fn published(&self, update: &Path, extra: &[&str]) -> String {
        let o = self.publish(update, extra);
        assert!(
            o.status.success(),
            "publish failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn root_json(&self) -> PathBuf {
        self.dir.join("repo-keys-root.json")
    }
}

/// Every payload of `update` by name, read with the library's verification.
fn payloads_of(update: &Path, public: &Path) -> BTreeMap<String, Vec<u8>> {
    let key = edgeimg_contract::update::keys::read_public(public).unwrap();
    let v =
        edgeimg_contract::update::format::verify_file(update, &key, &Default::default()).unwrap();
    let bytes = std::fs::read(update).unwrap();
    v.header
        .payloads
        .iter()
        .map(|p| {
            let at = v.offset(p) as usize;
            (p.name.clone(), bytes[at..at + p.size as usize].to_vec())
        })
        .collect()
}

/// A delta base held in memory: payload name -> bytes.
struct MemBase(BTreeMap<String, Vec<u8>>);

impl edgeimg::publish::delta::Base for MemBase {
    fn open(
        &mut self,
        name: &str,
    ) -> edgeimg_contract::error::Result<edgeimg_contract::update::delta::Source> {
        let bytes = self.0.get(name).cloned().ok_or_else(|| {
            edgeimg_contract::error::Error::msg(format!("no base payload {name}"))
        })?;
        Ok(edgeimg_contract::update::delta::Source {
            reader: Box::new(std::io::Cursor::new(bytes)),
            offset: 0,
            what: format!("memory:{name}"),
        })
    }
}

/// The delta target file `name` in the fleet's x86_64 repository.
fn delta_file(f: &Fleet, name: &str) -> PathBuf {
    std::fs::read_dir(f.repo.join("x86_64/targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(name))
        .unwrap()
}

/// Writes `payloads` into `dir` as the static agent's `--boot-dir` reads
/// them (DIR/<payload name>), the root image excepted.
fn boot_dir(dir: &Path, payloads: &BTreeMap<String, Vec<u8>>) -> PathBuf {
    for (name, bytes) in payloads.iter().filter(|(n, _)| *n != "root.erofs") {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    dir.to_path_buf()
}

fn static_agent(f: &Fleet) -> PathBuf {
    let agent = f.dir.join("edgeimg-agent");
    if !agent.exists() {
        std::fs::write(&agent, edgeimg::agents::AGENT_X86_64).unwrap();
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    agent
}

const V1: &str = "t-x86_64-1-0000000000000001.update";
const V2: &str = "t-x86_64-2-0000000000000002.update";
const DELTA: &str = "t-x86_64-2-0000000000000002.update.delta-from-0000000000000001";

/// Two releases whose root images differ in a few places (one region
/// rewritten, 100 bytes inserted, so later bytes move).
fn two_releases(f: &Fleet) -> (PathBuf, PathBuf) {
    let old_root = noise(6 << 20, 7);
    let mut new_root = old_root.clone();
    new_root[1_000_000..1_004_096].copy_from_slice(&noise(4096, 9));
    new_root.splice(5_000_000..5_000_000, noise(100, 11));
    (f.release(1, &old_root), f.release(2, &new_root))
}

#[test]
fn keygen_tuf_never_overwrites() {
    let f = fleet();
    let before = tree(&f.dir);
    let o = run(edgeimg().args(["keygen", "--tuf", "--out"]).arg(&f.tuf));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    assert_eq!(tree(&f.dir), before, "a key file was touched");
}

#[test]
fn published_releases_verify_over_http_and_the_delta_rebuilds_the_update() {
    let f = fleet();
    let (v1, v2) = two_releases(&f);
    let out = f.published(&v1, &[]);
    assert!(out.contains(V1), "{out}");
    let out = f.published(&v2, &["--deltas", "1"]);
    assert!(out.contains(V2) && out.contains(DELTA), "{out}");

    let base = serve(&f.repo);
    let repo = client_load(&base, "x86_64", &f.root_json()).expect("the repository loads");
    let mut names: Vec<String> = repo
        .all_targets()
        .map(|(n, _)| n.raw().to_string())
        .collect();
    names.sort();
    assert_eq!(names, [V1, V2, DELTA]);
    let targets = &repo.targets().signed.targets;
    let t2 = &targets[&tough::TargetName::new(V2).unwrap()];
    assert_eq!(t2.custom["kind"], "full");
    assert_eq!(t2.custom["generation"], 2);
    assert_eq!(t2.custom["board"], "x86_64");
    let td = &targets[&tough::TargetName::new(DELTA).unwrap()];
    assert_eq!(td.custom["kind"], "delta");
    assert_eq!(td.custom["target"], V2);
    assert_eq!(td.custom["base_build_id"], "0000000000000001");

    // The client checks length and SHA-256 of what it downloads.
    assert_eq!(read_target(&repo, V1).unwrap(), std::fs::read(&v1).unwrap());
    let full = read_target(&repo, V2).unwrap();
    assert_eq!(full, std::fs::read(&v2).unwrap());
    let delta = read_target(&repo, DELTA).unwrap();
    assert!(
        delta.len() * 20 < full.len(),
        "delta {} bytes for a {} byte update",
        delta.len(),
        full.len()
    );
    eprintln!(
        "full update {} bytes, delta {} bytes",
        full.len(),
        delta.len()
    );

    // The delta applied to the old release is the new update, byte for byte.
    let old = payloads_of(&v1, &f.update_pub);
    let mut rebuilt = Vec::new();
    edgeimg::publish::delta::apply(&mut MemBase(old.clone()), &mut &delta[..], &mut rebuilt)
        .unwrap();
    assert!(rebuilt == full, "the rebuilt update differs");
    // Applied to another root image it stops at the first chunk that differs.
    let mut other = old.clone();
    other.get_mut("root.erofs").unwrap()[100] ^= 1;
    let e = edgeimg::publish::delta::apply(&mut MemBase(other), &mut &delta[..], &mut Vec::new())
        .unwrap_err();
    assert!(format!("{e:#}").contains("does not rebuild"), "{e:#}");
}

#[test]
fn the_client_refuses_a_modified_target_and_an_expired_timestamp() {
    let f = fleet();
    let (v1, _) = two_releases(&f);
    f.published(&v1, &[]);
    let base = serve(&f.repo);
    let repo = client_load(&base, "x86_64", &f.root_json()).unwrap();
    let t = &repo.targets().signed.targets[&tough::TargetName::new(V1).unwrap()];
    let file = f
        .repo
        .join("x86_64/targets")
        .join(format!("{}.{V1}", hex::encode(&t.hashes.sha256)));
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let e = read_target(&repo, V1).unwrap_err();
    assert!(e.contains("hash") || e.contains("Hash"), "{e}");

    // A timestamp validly signed by the timestamp key but expired.
    let ts_path = f.repo.join("x86_64/metadata/timestamp.json");
    let mut ts: tough::schema::Signed<tough::schema::Timestamp> =
        serde_json::from_slice(&std::fs::read(&ts_path).unwrap()).unwrap();
    ts.signed.expires = "2020-01-01T00:00:00Z".parse().unwrap();
    ts.signed.version = ts.signed.version.checked_add(1).unwrap();
    let root: tough::schema::Signed<tough::schema::Root> =
        serde_json::from_slice(&std::fs::read(f.root_json()).unwrap()).unwrap();
    let key: Vec<Box<dyn tough::key_source::KeySource>> = vec![Box::new(edgeimg::tuf::FileKey {
        path: f.dir.join("repo-keys-timestamp.key"),
    })];
    let out = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let signed = tough::editor::signed::SignedRole::new(
            ts.signed,
            &tough::schema::KeyHolder::Root(root.signed),
            &key,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .await
        .unwrap();
        signed.write(out.path(), true).await.unwrap();
    });
    std::fs::copy(out.path().join("timestamp.json"), &ts_path).unwrap();
    let Err(e) = client_load(&base, "x86_64", &f.root_json()) else {
        panic!("an expired timestamp was accepted")
    };
    assert!(e.to_lowercase().contains("expired"), "{e}");
    // The publisher still reads it, and a refresh makes it valid again.
    ok(edgeimg()
        .args(["publish", "--refresh-timestamp", "--repo"])
        .arg(&f.repo)
        .arg("--keys")
        .arg(&f.tuf));
    let repo = client_load(&base, "x86_64", &f.root_json()).expect("refreshed");
    assert_eq!(repo.timestamp().signed.version.get(), 3);
    assert_eq!(repo.snapshot().signed.version.get(), 2);
    assert_eq!(repo.targets().signed.version.get(), 1);
}

#[test]
fn republishing_is_idempotent_and_a_failed_publish_changes_nothing() {
    let f = fleet();
    let (v1, v2) = two_releases(&f);
    f.published(&v1, &[]);
    f.published(&v2, &[]);
    let before = tree(&f.repo);
    let out = f.published(&v2, &[]);
    assert!(out.contains("already published"), "{out}");
    assert_eq!(tree(&f.repo), before, "republishing changed the repository");

    let v3 = f.release(3, &noise(1 << 20, 3));
    let refused = |o: std::process::Output, needle: &str| {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "accepted");
        assert!(err.contains(needle), "{err}");
        assert_eq!(err.matches("error:").count(), 1, "{err}");
        assert_eq!(
            tree(&f.repo),
            before,
            "a failed publish changed the repository"
        );
    };
    // A well-formed key that the repository's root does not name: signing
    // fails after the update was verified and the delta made.
    let other = f.dir.join("other");
    ok(edgeimg().args(["keygen", "--tuf", "--out"]).arg(&other));
    for role in ["root", "snapshot", "timestamp"] {
        std::fs::copy(
            f.dir.join(format!("repo-keys-{role}.key")),
            f.dir.join(format!("other-{role}.key")),
        )
        .unwrap();
    }
    refused(
        run(&mut f.publish_with(&v3, &other, &f.update_pub)),
        "signing the repository metadata",
    );
    // A key file that is not a key.
    let bad = f.dir.join("bad");
    for role in ["root", "targets", "snapshot", "timestamp"] {
        let p = f.dir.join(format!("bad-{role}.key"));
        std::fs::write(&p, "not a key").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    refused(
        run(&mut f.publish_with(&v3, &bad, &f.update_pub)),
        "bad-targets.key is not a PEM file",
    );
    // An update signed with another update key, and a truncated one.
    let (_, stranger) = updates::keygen(&f.dir, "stranger");
    let o = run(&mut f.publish_with(&v3, &f.tuf, &stranger));
    refused(o, "bad signature");
    let cut = f.dir.join("cut.update");
    let bytes = std::fs::read(&v3).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
    let o = f.publish(&cut, &[]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.contains(&cut.display().to_string()),
        "names the file: {err}"
    );
    refused(o, "truncated");
    // A target file of the repository modified: no delta from it.
    let t1 = std::fs::read_dir(f.repo.join("x86_64/targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(V1))
        .unwrap();
    let mut b = std::fs::read(&t1).unwrap();
    b[200] ^= 1;
    std::fs::write(&t1, &b).unwrap();
    let before = tree(&f.repo);
    let o = f.publish(&v3, &["--deltas", "2"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success() && err.contains("corrupt or modified"),
        "{err}"
    );
    assert_eq!(
        tree(&f.repo),
        before,
        "a failed publish changed the repository"
    );
}

/// A delta file of `version` with `header` (JSON as given) and `body` after it.
fn crafted_delta_v(version: u32, header: &serde_json::Value, body: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).unwrap();
    let mut v = b"EDGEDLT\0".to_vec();
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&(json.len() as u32).to_le_bytes());
    v.extend_from_slice(&json);
    v.extend_from_slice(body);
    v
}

fn crafted_delta(header: &serde_json::Value, body: &[u8]) -> Vec<u8> {
    crafted_delta_v(2, header, body)
}

/// Applies `delta` to a base whose root image is `base`; the error, after
/// checking that nothing was written.
fn apply_err(delta: &[u8], base: &[u8]) -> String {
    let mut out = Vec::new();
    let mut b = MemBase(BTreeMap::from([("root.erofs".to_string(), base.to_vec())]));
    match edgeimg::publish::delta::apply(&mut b, &mut &delta[..], &mut out) {
        Ok(_) => panic!("a crafted delta was applied"),
        Err(e) => {
            assert!(
                out.is_empty(),
                "wrote {} bytes of a refused delta",
                out.len()
            );
            format!("{e:#}")
        }
    }
}

#[test]
fn crafted_deltas_are_refused_before_any_large_allocation() {
    let sha = "0".repeat(64);
    // A frame chunk; a reference (ref_size > 0) is into base payload 0.
    let chunk = |size: u64, frame: u64, ref_offset: u64, ref_size: u64| {
        let mut c = serde_json::json!({"size": size, "frame": frame, "sha256": sha,
            "ref_offset": ref_offset, "ref_size": ref_size});
        if ref_size > 0 {
            c["from"] = 0.into();
        }
        c
    };
    let root = serde_json::json!({"name": "root.erofs", "size": 1000, "sha256": sha});
    let header_with =
        |base: Vec<serde_json::Value>, chunks: Vec<serde_json::Value>, target_size: u64| {
            serde_json::json!({"base": base, "target_size": target_size,
            "target_sha256": sha, "chunks": chunks})
        };
    let header = |chunks: Vec<serde_json::Value>, target_size: u64| {
        header_with(vec![root.clone()], chunks, target_size)
    };
    let base = vec![0u8; 1000];
    let e = apply_err(b"EDGEUPD\0\x01\0\0\0\0\0\0\0", &base);
    assert!(e.contains("not an edgeimg delta"), "{e}");
    let mut big = b"EDGEDLT\0".to_vec();
    big.extend_from_slice(&2u32.to_le_bytes());
    big.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(apply_err(&big, &base).contains("exceeds"));
    // The format before boot payloads had bases, and one from the future.
    for v in [1u32, 3] {
        let e = apply_err(&crafted_delta_v(v, &header(vec![], 0), &[]), &base);
        assert!(
            e.contains(&format!(
                "delta format version {v} is not supported (this reads version 2)"
            )),
            "{e}"
        );
    }
    let e = apply_err(
        &crafted_delta(&header(vec![chunk(u64::MAX, 10, 0, 0)], u64::MAX), &[]),
        &base,
    );
    assert!(e.contains("chunk 0: size"), "{e}");
    let e = apply_err(
        &crafted_delta(&header(vec![chunk(10, 1 << 40, 0, 0)], 10), &[]),
        &base,
    );
    assert!(e.contains("larger than any chunk needs"), "{e}");
    let e = apply_err(
        &crafted_delta(&header(vec![chunk(10, 10, 999, 2)], 10), &[]),
        &base,
    );
    assert!(e.contains("outside the base"), "{e}");
    let e = apply_err(
        &crafted_delta(&header(vec![chunk(10, 10, u64::MAX, 2)], 10), &[]),
        &base,
    );
    assert!(e.contains("outside the base"), "{e}");
    let e = apply_err(
        &crafted_delta(&header(vec![chunk(10, 10, 0, 0)], 11), &[]),
        &base,
    );
    assert!(e.contains("chunks make 10 bytes"), "{e}");
    let e = apply_err(
        &crafted_delta(&header(vec![chunk(10, 10, 0, 0)], 10), b"short"),
        &base,
    );
    assert!(e.contains("truncated"), "{e}");
    // A frame that decompresses to more than its chunk says.
    let frame = zstd::bulk::compress(&[7u8; 100], 3).unwrap();
    let h = header(vec![chunk(10, frame.len() as u64, 0, 0)], 10);
    let e = apply_err(&crafted_delta(&h, &frame), &base);
    assert!(e.contains("delta chunk 0"), "{e}");
    let e = apply_err(&crafted_delta(&serde_json::json!({"x": 1}), &[]), &base);
    assert!(e.contains("the delta header is not valid"), "{e}");

    // Base payloads: plain unique names of payloads a device keeps as they are.
    let named = |name: &str| serde_json::json!({"name": name, "size": 10, "sha256": sha});
    for name in [
        "../vmlinuz",
        "/vmlinuz",
        "a/vmlinuz",
        "..",
        "",
        "boot/../../etc/shadow",
        "boot//x",
        "boot/a\\b",
    ] {
        let e = apply_err(
            &crafted_delta(&header_with(vec![named(name)], vec![], 0), &[]),
            &base,
        );
        assert!(
            e.contains("delta base payload 0: payload name"),
            "{name:?}: {e}"
        );
    }
    for name in ["boot/cmdline.txt", "boot/config.txt"] {
        let e = apply_err(
            &crafted_delta(&header_with(vec![named(name)], vec![], 0), &[]),
            &base,
        );
        assert!(e.contains("devices rewrite it"), "{name:?}: {e}");
    }
    let e = apply_err(
        &crafted_delta(
            &header_with(vec![named("vmlinuz"), named("vmlinuz")], vec![], 0),
            &[],
        ),
        &base,
    );
    assert!(
        e.contains("delta base payload \"vmlinuz\" appears twice"),
        "{e}"
    );
    let mut no_sha = named("vmlinuz");
    no_sha["sha256"] = "../x".into();
    let e = apply_err(
        &crafted_delta(&header_with(vec![no_sha], vec![], 0), &[]),
        &base,
    );
    assert!(e.contains("no SHA-256"), "{e}");
    // Copies (frame 0): of a base payload that exists, inside it, one chunk at most.
    let copy = |from: Option<u64>, size: u64, ref_offset: u64| {
        let mut c = serde_json::json!({"size": size, "frame": 0, "sha256": sha,
            "ref_offset": ref_offset, "ref_size": size});
        if let Some(b) = from {
            c["from"] = b.into();
        }
        c
    };
    let e = apply_err(
        &crafted_delta(&header(vec![copy(None, 10, 0)], 10), &[]),
        &base,
    );
    assert!(
        e.contains("delta chunk 0: a copy without a base payload"),
        "{e}"
    );
    let e = apply_err(
        &crafted_delta(&header(vec![copy(Some(1), 10, 0)], 10), &[]),
        &base,
    );
    assert!(
        e.contains("delta chunk 0: base payload 1 does not exist"),
        "{e}"
    );
    let e = apply_err(
        &crafted_delta(&header(vec![copy(Some(0), 10, 995)], 10), &[]),
        &base,
    );
    assert!(e.contains("outside base payload \"root.erofs\""), "{e}");
    let e = apply_err(
        &crafted_delta(&header(vec![copy(Some(0), 10, u64::MAX)], 10), &[]),
        &base,
    );
    assert!(e.contains("outside base payload"), "{e}");
    let huge = serde_json::json!({"name": "root.erofs", "size": u64::MAX, "sha256": sha});
    let e = apply_err(
        &crafted_delta(
            &header_with(vec![huge], vec![copy(Some(0), 1 << 40, 0)], 1 << 40),
            &[],
        ),
        &base,
    );
    assert!(
        e.contains("outside base payload"),
        "a copy over one chunk: {e}"
    );
    let mut unequal = copy(Some(0), 10, 0);
    unequal["ref_size"] = 20.into();
    let e = apply_err(&crafted_delta(&header(vec![unequal], 10), &[]), &base);
    assert!(e.contains("outside base payload"), "{e}");
    // A copy of bytes the base does not have: refused by its hash, unwritten.
    let e = apply_err(
        &crafted_delta(&header(vec![copy(Some(0), 10, 0)], 10), &[]),
        &base,
    );
    assert!(
        e.contains("delta chunk 0 does not rebuild what was published"),
        "{e}"
    );
    // A frame with a base payload but no window, or a window with none.
    let mut c = chunk(10, 10, 0, 0);
    c["from"] = 0.into();
    let e = apply_err(&crafted_delta(&header(vec![c], 10), &[]), &base);
    assert!(e.contains("outside the base payload"), "{e}");
    let mut c = chunk(10, 10, 0, 2);
    c.as_object_mut().unwrap().remove("from");
    let e = apply_err(&crafted_delta(&header(vec![c], 10), &[]), &base);
    assert!(e.contains("outside the base"), "{e}");
}

#[test]
fn a_repository_whose_metadata_does_not_verify_is_refused() {
    let f = fleet();
    let (v1, v2) = two_releases(&f);
    f.published(&v1, &[]);
    let ts = f.repo.join("x86_64/metadata/timestamp.json");
    let mut text = std::fs::read_to_string(&ts).unwrap();
    text = text.replacen("\"version\": 1", "\"version\": 9", 1);
    std::fs::write(&ts, &text).unwrap();
    let before = tree(&f.repo);
    let o = f.publish(&v2, &[]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "published onto a tampered repository");
    assert!(
        err.contains("does not verify") && err.contains("x86_64/metadata"),
        "{err}"
    );
    assert_eq!(tree(&f.repo), before);
}

#[test]
fn an_update_whose_name_is_path_like_is_refused() {
    // Validly signed by the fleet key, but its name would escape the
    // repository's directories as a file name.
    let f = fleet();
    let root = f.dir.join("root.erofs");
    std::fs::write(&root, b"root").unwrap();
    let sk = edgeimg::update::load_signing_key(&f.update_key).unwrap();
    for (field, value) in [("name", "../../x"), ("board", ".."), ("build_id", "a/b")] {
        let mut h = edgeimg::update::Header {
            name: "t".into(),
            board: "x86_64".into(),
            arch: "amd64".into(),
            build_id: "0011".into(),
            edgeimg_version: "0".into(),
            kernel_version: "6.12".into(),
            cmdline: "root=x".into(),
            created: 0,
            key_id: String::new(),
            generation: 1,
            payloads: vec![],
        };
        match field {
            "name" => h.name = value.into(),
            "board" => h.board = value.into(),
            _ => h.build_id = value.into(),
        }
        let file = f.dir.join(format!("{field}.update"));
        edgeimg::update::write_file(&file, h, &[("root.erofs".into(), root.as_path())], &sk)
            .unwrap();
        let o = f.publish(&file, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{field} {value:?} was published");
        assert!(
            err.contains(&format!(
                "its {field} {value:?} cannot be part of a file name"
            )),
            "{err}"
        );
    }
    assert!(!f.repo.exists(), "a refused publish made the repository");
}

#[test]
fn after_an_update_key_rotation_older_releases_get_no_delta() {
    let f = fleet();
    let (v1, _) = two_releases(&f);
    f.published(&v1, &[]);
    // Release 2 is signed with a new update key; release 1 does not verify
    // with it, so it is no delta base, and the full update is published.
    let (new_key, new_pub) = updates::keygen(&f.dir, "update2");
    let sub = f.dir.join("rotated");
    std::fs::create_dir_all(&sub).unwrap();
    let v2 = updates::make_update(
        &sub,
        &new_key,
        "x86_64",
        "amd64",
        2,
        &noise(6 << 20, 7),
        "0000000000000002",
    );
    let o = run(&mut f.publish_with(&v2, &f.tuf, &new_pub));
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(out.contains(V2) && !out.contains("delta"), "{out}");
    assert!(err.contains(&format!("no delta from {V1}")), "{err}");
    let base = serve(&f.repo);
    let repo = client_load(&base, "x86_64", &f.root_json()).unwrap();
    assert_eq!(repo.all_targets().count(), 2);
}

#[test]
fn the_static_agent_rebuilds_the_update_from_a_delta() {
    let f = fleet();
    let (v1, v2) = two_releases(&f);
    f.published(&v1, &[]);
    f.published(&v2, &[]);
    let agent = static_agent(&f);
    let old = payloads_of(&v1, &f.update_pub);
    let base = f.dir.join("slot");
    std::fs::write(&base, &old["root.erofs"]).unwrap();
    let boot = boot_dir(&f.dir.join("boot"), &old);
    let delta = delta_file(&f, DELTA);
    let out = f.dir.join("rebuilt.update");
    ok(std::process::Command::new(&agent)
        .args(["update", "delta"])
        .arg(&base)
        .arg(&delta)
        .arg(&out)
        .arg("--boot-dir")
        .arg(&boot));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&v2).unwrap());
    // Against another base: refused, and no OUT (nor OUT.part) is left.
    let mut other = std::fs::read(&base).unwrap();
    other[5_000] ^= 1;
    std::fs::write(&base, &other).unwrap();
    let out2 = f.dir.join("other.update");
    let o = run(std::process::Command::new(&agent)
        .args(["update", "delta"])
        .arg(&base)
        .arg(&delta)
        .arg(&out2)
        .arg("--boot-dir")
        .arg(&boot));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("does not rebuild what was published"), "{err}");
    assert!(
        err.contains(&delta.display().to_string()),
        "names the delta: {err}"
    );
    assert!(!out2.exists() && !f.dir.join("other.update.part").exists());
}

/// Releases with a kernel and an initrd of incompressible bytes: sent whole
/// they would cost megabytes.
fn releases_with_boot_payloads(f: &Fleet, initrd_changes: bool) -> (PathBuf, PathBuf) {
    let root = noise(6 << 20, 7);
    let kernel = noise(3 << 20, 13);
    let initrd = noise(5 << 20, 15);
    let mut new_root = root.clone();
    new_root[2_000_000..2_004_096].copy_from_slice(&noise(4096, 9));
    let mut new_initrd = initrd.clone();
    if initrd_changes {
        new_initrd[4_500_000..4_504_096].copy_from_slice(&noise(4096, 17));
        new_initrd.extend_from_slice(b"one more module");
    }
    let release = |generation: u64, payloads: &[(&str, &[u8])]| {
        let sub = f.dir.join(format!("build-{generation}"));
        std::fs::create_dir_all(&sub).unwrap();
        updates::make_update_with(
            &sub,
            &f.update_key,
            "x86_64",
            "amd64",
            generation,
            payloads,
            &format!("{generation:016x}"),
        )
    };
    let v1 = release(
        1,
        &[
            ("root.erofs", &root),
            ("vmlinuz", &kernel),
            ("initrd.img", &initrd),
        ],
    );
    let v2 = release(
        2,
        &[
            ("root.erofs", &new_root),
            ("vmlinuz", &kernel),
            ("initrd.img", &new_initrd),
        ],
    );
    f.published(&v1, &[]);
    f.published(&v2, &[]);
    (v1, v2)
}

/// The chunks of `h` that read base payload `name`.
fn chunks_from<'a>(
    h: &'a edgeimg::publish::delta::Header,
    name: &str,
) -> Vec<&'a edgeimg::publish::delta::Chunk> {
    let i = h.base.iter().position(|b| b.name == name).expect(name);
    h.chunks.iter().filter(|c| c.from == Some(i)).collect()
}

#[test]
fn unchanged_boot_payloads_cost_a_reference_and_changed_ones_are_rebuilt() {
    let f = fleet();
    let (v1, v2) = releases_with_boot_payloads(&f, true);
    let delta = std::fs::read(delta_file(&f, DELTA)).unwrap();
    let h = edgeimg::publish::delta::read_header(&mut &delta[..]).unwrap();
    let old = payloads_of(&v1, &f.update_pub);
    let new = payloads_of(&v2, &f.update_pub);
    // The unchanged kernel: copies of the base's kernel, no frame bytes.
    let kernel = chunks_from(&h, "vmlinuz");
    assert!(kernel.iter().all(|c| c.is_copy()), "{kernel:?}");
    assert_eq!(kernel.iter().map(|c| c.size).sum::<u64>(), 3 << 20);
    let b = &h.base[h.base.iter().position(|b| b.name == "vmlinuz").unwrap()];
    assert_eq!(b.size, old["vmlinuz"].len() as u64);
    assert_eq!(b.sha256, hex::encode(sha2::Sha256::digest(&old["vmlinuz"])));
    // The changed initrd: frames against the old initrd, small.
    let initrd = chunks_from(&h, "initrd.img");
    assert!(
        initrd.iter().all(|c| !c.is_copy() && c.ref_size > 0),
        "{initrd:?}"
    );
    assert_eq!(
        initrd.iter().map(|c| c.size).sum::<u64>(),
        new["initrd.img"].len() as u64
    );
    let initrd_frames: u64 = initrd.iter().map(|c| c.frame).sum();
    assert!(
        initrd_frames < 16 << 10,
        "initrd frames {initrd_frames} bytes"
    );
    // 14 MiB of incompressible payloads, of which 8 KiB changed.
    assert!(delta.len() < 64 << 10, "delta {} bytes", delta.len());
    eprintln!(
        "delta {} bytes for a {} byte update",
        delta.len(),
        std::fs::metadata(&v2).unwrap().len()
    );

    // Rebuilt byte for byte, by the library and by the static agent from
    // the base's files.
    let mut rebuilt = Vec::new();
    edgeimg::publish::delta::apply(&mut MemBase(old.clone()), &mut &delta[..], &mut rebuilt)
        .unwrap();
    assert!(
        rebuilt == std::fs::read(&v2).unwrap(),
        "the rebuilt update differs"
    );
    let agent = static_agent(&f);
    let slot = f.dir.join("slot");
    std::fs::write(&slot, &old["root.erofs"]).unwrap();
    let boot = boot_dir(&f.dir.join("boot"), &old);
    let out = f.dir.join("rebuilt.update");
    let agent_delta = |out: &Path| {
        let mut c = std::process::Command::new(&agent);
        c.args(["update", "delta"])
            .arg(&slot)
            .arg(delta_file(&f, DELTA))
            .arg(out)
            .arg("--boot-dir")
            .arg(&boot);
        run(&mut c)
    };
    let o = agent_delta(&out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&v2).unwrap());
}

#[test]
fn a_running_slot_whose_kernel_is_not_the_base_is_refused_and_nothing_written() {
    let f = fleet();
    let (v1, _v2) = releases_with_boot_payloads(&f, false);
    let old = payloads_of(&v1, &f.update_pub);
    let agent = static_agent(&f);
    let slot = f.dir.join("slot");
    std::fs::write(&slot, &old["root.erofs"]).unwrap();
    let boot = boot_dir(&f.dir.join("boot"), &old);
    let delta = delta_file(&f, DELTA);
    let attempt = |out: &Path| {
        let o = run(std::process::Command::new(&agent)
            .args(["update", "delta"])
            .arg(&slot)
            .arg(&delta)
            .arg(out)
            .arg("--boot-dir")
            .arg(&boot));
        assert!(!o.status.success());
        let mut part = out.as_os_str().to_owned();
        part.push(".part");
        assert!(!out.exists() && !Path::new(&part).exists(), "output left");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // One byte of the running slot's kernel flipped.
    let kernel = boot.join("vmlinuz");
    let mut k = old["vmlinuz"].clone();
    k[1_234_567] ^= 0x20;
    std::fs::write(&kernel, &k).unwrap();
    let err = attempt(&f.dir.join("a.update"));
    assert!(
        err.contains(&format!("{} is not the base's vmlinuz", kernel.display()))
            && err.contains("take the full update"),
        "{err}"
    );
    // A kernel cut short, and none at all: named, nothing written.
    std::fs::write(&kernel, &old["vmlinuz"][..1000]).unwrap();
    let err = attempt(&f.dir.join("b.update"));
    assert!(
        err.contains(&kernel.display().to_string()) && err.contains("shorter"),
        "{err}"
    );
    std::fs::remove_file(&kernel).unwrap();
    let err = attempt(&f.dir.join("c.update"));
    assert!(err.contains(&kernel.display().to_string()), "{err}");
    // The base's own kernel back: the same delta applies.
    std::fs::write(&kernel, &old["vmlinuz"]).unwrap();
    let out = f.dir.join("d.update");
    let o = run(std::process::Command::new(&agent)
        .args(["update", "delta"])
        .arg(&slot)
        .arg(&delta)
        .arg(&out)
        .arg("--boot-dir")
        .arg(&boot));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
