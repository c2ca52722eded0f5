//! The device's TUF client: `tough` (the implementation `edgeimg publish`
//! signs with) loads a board's repository from the image's trusted root.
//!
//! tough checks signatures and thresholds, walks root rotations, refuses
//! expired metadata (a freeze) and metadata older than what it last trusted
//! (a rollback; mix-and-match through the snapshot's versions). What it last
//! trusted, and the latest time it has seen, live in its datastore on the
//! data partition ([`DATASTORE`]), so the protection survives reboots.
//!
//! Metadata comes over HTTP or HTTPS (`ureq`; TLS through rustls with the
//! aws-lc-rs provider tough already links, trusting only the certificate
//! authorities the image carries: [`Trust`]) or from a directory (`file://`
//! or an absolute path: a mounted copy of the repository).

use crate::error::{Error, Result};
use crate::root::Root;
use edgeimg_contract::update::{CA_CERTIFICATES_PATH, SYSTEM_CA_PATH};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tough::{
    ExpirationEnforcement, FilesystemTransport, RepositoryLoader, Transport, TransportError,
    TransportErrorKind,
};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};

/// tough's record of the metadata it last trusted.
pub const DATASTORE: &str = "/var/lib/edgeimg/tuf";

/// A repository location: the directory holding `<board>/metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location(url::Url);

impl Location {
    /// `http://…`, `https://…`, `file:///…` or an absolute path.
    pub fn parse(s: &str) -> Result<Location> {
        edgeimg_contract::schema::validate_repository(s)?;
        let mut url = if s.starts_with('/') {
            url::Url::from_directory_path(s)
                .map_err(|_| Error::msg(format!("repository {s:?} is not a usable path")))?
        } else {
            url::Url::parse(s).map_err(|e| Error::msg(format!("repository {s:?}: {e}")))?
        };
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        Ok(Location(url))
    }

    /// `<board>/<dir>/` under the repository.
    pub fn board_dir(&self, board: &str, dir: &str) -> Result<url::Url> {
        self.0
            .join(&format!("{board}/{dir}/"))
            .map_err(|e| Error::msg(format!("repository {}: {e}", self.0)))
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How long one request may take to connect and to go without data.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The certificate authorities an `https://` repository's certificate must
/// chain to: the device's bundle ([`SYSTEM_CA_PATH`]) and the image's own
/// ([`CA_CERTIFICATES_PATH`]), whichever exist. No built-in list: the fleet's
/// operator decides what the devices trust.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    certs: Arc<Vec<Certificate<'static>>>,
}

impl Trust {
    /// Reads the bundles under `root`; a missing one is skipped, one that
    /// does not parse is an error.
    pub fn load(root: &Root) -> Result<Trust> {
        let mut certs = vec![];
        for p in [SYSTEM_CA_PATH, CA_CERTIFICATES_PATH] {
            let path = root.path(p);
            let pem = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => crate::bail!("{}: {e}", path.display()),
            };
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(PemItem::Certificate(c)) => certs.push(c),
                    Ok(_) => {}
                    Err(e) => crate::bail!("{}: not a PEM certificate bundle: {e}", path.display()),
                }
            }
        }
        Ok(Trust {
            certs: Arc::new(certs),
        })
    }

    /// How many certificate authorities it holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Refuses an `https://` URL when there is nothing to verify its server
    /// with, naming where the authorities would come from.
    pub fn check(&self, url: &url::Url) -> std::result::Result<(), String> {
        if url.scheme() == "https" && self.certs.is_empty() {
            return Err(format!(
                "{url}: no certificate authority to verify the server's TLS certificate with: neither {SYSTEM_CA_PATH} nor {CA_CERTIFICATES_PATH} exists (build the image with [update] ca_certificates)"
            ));
        }
        Ok(())
    }

    fn tls_config(&self) -> TlsConfig {
        TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::Specific(self.certs.clone()))
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .build()
    }
}

/// One HTTP(S) agent: no redirects to elsewhere, statuses handled by the
/// caller, servers verified against `trust`.
pub fn http_agent(trust: &Trust) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(HTTP_TIMEOUT))
        .timeout_recv_response(Some(HTTP_TIMEOUT))
        .timeout_recv_body(Some(HTTP_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(trust.tls_config())
        .build()
        .into()
}

/// The agent for an update target's body, hundreds of MB over a link of
/// any speed: like [`http_agent`], but the body may take as long as it
/// takes while data keeps coming (each read within [`HTTP_TIMEOUT`]);
/// ureq's body timeout is a total, which would cut every download longer
/// than that.
pub fn target_agent(trust: &Trust) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(HTTP_TIMEOUT))
        .timeout_recv_response(Some(HTTP_TIMEOUT))
        .timeout_recv_body(None)
        .timeout_per_read(Some(HTTP_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(trust.tls_config())
        .build()
        .into()
}

/// tough's transport: `file://` through its own, `http://` and `https://`
/// through ureq. tough bounds every metadata read by its size limits.
#[derive(Debug, Clone)]
pub struct AgentTransport {
    pub trust: Trust,
}

#[tough::async_trait]
impl Transport for AgentTransport {
    async fn fetch(&self, url: url::Url) -> Result<tough::TransportStream, TransportError> {
        match url.scheme() {
            "file" => FilesystemTransport.fetch(url).await,
            "http" | "https" => http_stream(url, &self.trust),
            _ => Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url,
            )),
        }
    }
}

/// A GET as a stream of chunks. Runs blocking I/O inside the stream: the
/// agent's runtime is one thread that does nothing else.
fn http_stream(url: url::Url, trust: &Trust) -> Result<tough::TransportStream, TransportError> {
    let other = |e: &dyn std::fmt::Display| {
        TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), e.to_string())
    };
    trust.check(&url).map_err(|e| other(&e))?;
    let resp = http_agent(trust)
        .get(url.as_str())
        .call()
        .map_err(|e| other(&e))?;
    match resp.status().as_u16() {
        200 => {}
        404 | 403 | 410 => {
            return Err(TransportError::new(
                TransportErrorKind::FileNotFound,
                url.as_str(),
            ));
        }
        s => return Err(other(&format!("HTTP status {s}"))),
    }
    let mut reader = resp.into_body().into_reader();
    let u = url.clone();
    let stream = futures::stream::unfold(false, move |done| {
        let u = u.clone();
        let mut buf = vec![0u8; 64 * 1024];
        let r = if done {
            None
        } else {
            match std::io::Read::read(&mut reader, &mut buf) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(bytes::Bytes::from(buf)), false))
                }
                Err(e) => Some((
                    Err(TransportError::new_with_cause(
                        TransportErrorKind::Other,
                        u.as_str(),
                        e,
                    )),
                    true,
                )),
            }
        };
        std::future::ready(r)
    });
    Ok(Box::pin(stream) as Pin<Box<_>>)
}

/// An error with its chain of causes on one line (tough's top-level messages
/// say which file, the causes say why).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Runs a future on a one-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| Error::msg(format!("starting the async runtime: {e}")))?;
    Ok(rt.block_on(f))
}

/// Loads and verifies `board`'s repository from `trusted_root` (bytes of a
/// root.json), recording what it trusts in `datastore` (created if missing);
/// an `https://` server is verified against `trust`.
pub fn load(
    location: &Location,
    board: &str,
    trusted_root: &[u8],
    datastore: &Path,
    trust: &Trust,
) -> Result<tough::Repository> {
    std::fs::create_dir_all(datastore)
        .map_err(|e| Error::msg(format!("cannot create {}: {e}", datastore.display())))?;
    let metadata = location.board_dir(board, "metadata")?;
    let targets = location.board_dir(board, "targets")?;
    let loader = RepositoryLoader::new(&trusted_root, metadata.clone(), targets)
        .transport(AgentTransport {
            trust: trust.clone(),
        })
        .expiration_enforcement(ExpirationEnforcement::Safe)
        .datastore(datastore);
    block_on(loader.load())?.map_err(|e| {
        Error::msg(format!(
            "the repository {metadata} does not verify: {}",
            chain(&e)
        ))
    })
}
