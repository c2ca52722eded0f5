//! A small HTTP/1.1 server on the host's loopback for the update VM tests:
//! it serves update repositories (directories made by `edgeimg publish`)
//! under URL prefixes, answers `Range` requests, and can misbehave on
//! purpose: cut the next target download mid-way. A guest on QEMU's
//! user network reaches it at `http://10.0.2.2:<port>/`
//! ([`edgeimg::qemu::USER_NET_HOST`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    /// URL prefix (no slashes) -> directory served under it.
    roots: BTreeMap<String, PathBuf>,
    /// The next target request sends this many body bytes and closes.
    cut: Option<u64>,
    /// `<path> from <offset>` of every target request, in order.
    requests: Vec<String>,
}

pub struct RepoServer {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl RepoServer {
    pub fn start() -> RepoServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the repository server");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                // One thread per connection: a slow reader does not hold up
                // the others.
                std::thread::spawn(move || {
                    let _ = answer(conn, &s);
                });
            }
        });
        RepoServer { port, state }
    }

    /// The repository URL a guest on the user network uses for `prefix`.
    pub fn guest_url(&self, prefix: &str) -> String {
        format!(
            "http://{}:{}/{prefix}",
            edgeimg::qemu::USER_NET_HOST,
            self.port
        )
    }

    /// Serves `dir` under `/<prefix>/` (replacing what was served there).
    pub fn mount(&self, prefix: &str, dir: &Path) {
        self.state
            .lock()
            .unwrap()
            .roots
            .insert(prefix.to_string(), dir.to_path_buf());
    }

    /// The next target download stops after `bytes` body bytes.
    pub fn cut_next_target(&self, bytes: u64) {
        self.state.lock().unwrap().cut = Some(bytes);
    }

    /// Every target request so far (`<path> from <offset>`), and forgets them.
    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().requests)
    }
}

fn answer(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut from = 0u64;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
            from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let file = {
        let st = state.lock().unwrap();
        let rel = path.trim_start_matches('/');
        let (prefix, rest) = rel.split_once('/').unwrap_or((rel, ""));
        st.roots
            .get(prefix)
            .filter(|_| !rest.split('/').any(|c| c == ".." || c.is_empty()))
            .map(|root| root.join(rest))
            .filter(|p| p.is_file())
    };
    let Some(file) = file else {
        return out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let mut f = std::fs::File::open(&file)?;
    let len = f.metadata()?.len();
    let from = from.min(len);
    let head = if from > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{len}\r\nConnection: close\r\n\r\n",
            len - from,
            len.saturating_sub(1),
        )
    } else {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let cut = if path.contains("/targets/") {
        let mut st = state.lock().unwrap();
        st.requests.push(format!("{path} from {from}"));
        st.cut.take()
    } else {
        None
    };
    out.write_all(head.as_bytes())?;
    f.seek(SeekFrom::Start(from))?;
    match cut {
        None => std::io::copy(&mut f, &mut out)?,
        Some(n) => std::io::copy(&mut f.take(n), &mut out)?,
    };
    out.flush()
}
