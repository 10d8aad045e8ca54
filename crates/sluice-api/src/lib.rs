//! The node's REST API: the operations library (`sluice-ops`) over HTTP,
//! JSON under `/api/v1`, so it and the CLI can never disagree.
//!
//! - [`ApiConfig`]: the `[api]` table (off unless configured).
//! - [`Api::bind`] binds before the node runs (a taken address fails the
//!   start, not later); [`Api::run`] serves until the node stops, through
//!   the same guarded listener as the HTTP receive location
//!   (`sluice_adapters::support::serve`: caps on connections per listener
//!   and per client address, header, write and idle timeouts, TLS).
//! - [`auth`]: every request but `GET /healthz` and `GET /readyz` carries an
//!   API token (`Authorization: Bearer`); its user's role is checked for
//!   each action (`sluice_ops::access::Permission`).
//! - `routes`: one handler per endpoint, each a call into `sluice-ops`;
//!   every change is recorded in the audit log with its result, in a task
//!   of its own, so a client that goes away cannot leave a change
//!   unrecorded.
//! - [`error`]: `{"error": {"code", "message"}}` with the code's status.
//!
//! Architecture Invariant: the API holds no list in memory. Every list is
//! a page with a cursor (`limit` at most [`MAX_LIMIT`]); a body is streamed
//! in bounded pieces; a bulk action's answer is streamed, one line per
//! entry, and the action goes at the pace the client reads it.

pub mod auth;
mod body;
mod bulk;
mod error;
pub mod history;
pub mod hosts;
pub mod openapi;
mod portal;
mod routes;
mod session;
pub mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use serde::Deserialize;
use sluice_adapters::support::guard::{Evict, Slots};
use sluice_adapters::support::serve::{self, Timeouts};
use sluice_adapters::support::tls::ServerTls;
use sluice_msgbox::{Clock, MessageBox};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use error::Problem;

/// Most items one page of a list holds.
pub const MAX_LIMIT: usize = 1000;
/// Items in a page when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest JSON request body (an edit, a bulk selection).
pub const MAX_JSON: usize = 64 * 1024;

/// The `[api]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Where to listen, `ip:port` (e.g. `127.0.0.1:8470`; `localhost:8470`
    /// is resolved at load; port 0 picks a free one).
    #[serde(deserialize_with = "sluice_adapters::support::net::deserialize_listen_address")]
    pub address: SocketAddr,
    /// HTTPS: `tls = { cert = "cert.pem", key = "key.pem" }`.
    #[serde(default)]
    pub tls: Option<ServerTls>,
    /// Connections open at once (all clients).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one client address.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
    /// How long a client may take to send a request's head.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a client may take none of its answer.
    #[serde(default = "default_write_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    /// How long a connection may stay open with no request in progress.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a client may send nothing of a request body (and it must
    /// send at least 5 KiB in every 10 s it keeps the node waiting).
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Largest new body a resubmission may upload.
    #[serde(default = "default_max_upload")]
    pub max_upload: sluice_pipeline::ByteSize,
    /// Failed authentications one client address may make in a minute;
    /// past it, what it sends without a valid token is answered 429.
    #[serde(default = "default_auth_failures")]
    pub auth_failures_per_minute: u32,
    /// How often the dashboard's figures are sampled (1 s to 5 min); an
    /// hour of samples is kept.
    #[serde(default = "default_sample_every", with = "humantime_serde")]
    pub sample_every: Duration,
}

fn default_sample_every() -> Duration {
    history::SAMPLE_EVERY
}

fn default_body_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_upload() -> sluice_pipeline::ByteSize {
    sluice_pipeline::ByteSize(1 << 30)
}

fn default_auth_failures() -> u32 {
    auth::FAILURES_ALLOWED
}

fn default_max_connections() -> usize {
    128
}
fn default_max_connections_per_client() -> usize {
    32
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_write_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

impl ApiConfig {
    /// Resolve relative paths (the TLS files) against the configuration's folder.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(tls) = &mut self.tls {
            tls.resolve_paths(base);
        }
    }

    /// What is wrong with it, as `(key, problem)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&self.sample_every) {
            out.push(("sample_every", "must be between 1s and 5m".to_string()));
        }
        if self.auth_failures_per_minute == 0 {
            out.push(("auth_failures_per_minute", "must be at least 1".to_string()));
        }
        if self.max_connections == 0 {
            out.push(("max_connections", "must be at least 1".to_string()));
        }
        if self.max_connections_per_client == 0 || self.max_connections_per_client > self.max_connections {
            out.push((
                "max_connections_per_client",
                "must be at least 1 and at most max_connections".to_string(),
            ));
        }
        for (key, d) in [
            ("body_timeout", self.body_timeout),
            ("header_timeout", self.header_timeout),
            ("write_timeout", self.write_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if d.is_zero() {
                out.push((key, "must be more than 0".to_string()));
            }
        }
        if let Some(tls) = &self.tls
            && let Err(e) = tls.server_config(&[])
        {
            out.push(("tls", e.to_string()));
        }
        out
    }
}

/// What every handler reads.
#[derive(Clone)]
pub struct ApiState {
    pub b: Arc<dyn MessageBox>,
    /// The node's data directory (its `status.json`).
    pub data_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
    /// Largest new body a resubmission may upload (bytes).
    pub max_upload: u64,
    /// Changes in progress (each with its audit record): waited for
    /// before the API stops, so none is cut between its change and its
    /// record. A bulk run stops between entries once `stopping`.
    pub(crate) work: tokio_util::task::TaskTracker,
    pub(crate) stopping: CancellationToken,
    /// The running node (ports and locations), if there is one.
    pub node: Option<Arc<dyn units::NodeControl>>,
    /// The last hour's samples (the dashboard's figures).
    pub history: Arc<history::History>,
    /// When `/readyz` last asked the box (ms; negative: it did not answer).
    ready: Arc<std::sync::atomic::AtomicI64>,
    /// Served over TLS: session cookies are `Secure`.
    pub(crate) tls: bool,
    /// Failed logins per user name.
    user_failures: Arc<auth::Failures<String>>,
    failures: Arc<auth::Failures>,
}

impl ApiState {
    pub fn new(
        b: Arc<dyn MessageBox>,
        data_dir: PathBuf,
        clock: Arc<dyn Clock>,
        node: Option<Arc<dyn units::NodeControl>>,
    ) -> ApiState {
        ApiState {
            b,
            data_dir,
            clock,
            max_upload: default_max_upload().0,
            work: tokio_util::task::TaskTracker::new(),
            stopping: CancellationToken::new(),
            node,
            history: Arc::default(),
            ready: Arc::default(),
            tls: false,
            user_failures: Arc::new(auth::Failures::new(session::LOGIN_FAILURES_PER_USER)),
            failures: Arc::default(),
        }
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("api.address: listening on {address}: {error}")]
    Bind { address: SocketAddr, error: std::io::Error },
    #[error("api.tls: {0}")]
    Tls(String),
}

/// The API, bound to its address.
pub struct Api {
    config: ApiConfig,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Api {
    pub async fn bind(config: ApiConfig) -> Result<Api, ApiError> {
        let tls = match &config.tls {
            Some(t) => Some(
                t.acceptor(&[b"h2", b"http/1.1"])
                    .map_err(|e| ApiError::Tls(e.to_string()))?,
            ),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(config.address)
            .await
            .map_err(|error| ApiError::Bind {
                address: config.address,
                error,
            })?;
        Ok(Api { config, listener, tls })
    }

    /// The address it listens on (the port the system chose for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown`, then let the requests in progress finish
    /// (for at most `grace`).
    pub async fn run(self, mut state: ApiState, shutdown: CancellationToken, grace: Duration) {
        state.failures = Arc::new(auth::Failures::new(self.config.auth_failures_per_minute));
        state.max_upload = self.config.max_upload.0;
        state.history = Arc::new(history::History::new(self.config.sample_every));
        state.tls = self.tls.is_some();
        state.stopping = shutdown.child_token();
        let (work, stopping) = (state.work.clone(), state.stopping.clone());
        let body_timeout = self.config.body_timeout;
        let address = self.local_addr().unwrap_or(self.config.address);
        tracing::info!(address = %address, tls = self.tls.is_some(), "REST API listening");
        let connections = Slots::new(
            self.config.max_connections,
            self.config.max_connections_per_client,
            true,
            Evict::Idlest {
                min_idle: Duration::from_secs(1),
            },
        );
        let listener = serve::Listener {
            listener: self.listener,
            connections,
            tls: self.tls,
            timeouts: Timeouts {
                header: self.config.header_timeout,
                write: self.config.write_timeout,
                idle: self.config.idle_timeout,
            },
        };
        tokio::spawn(history::run(state.clone()));
        let router = routes::router(state);
        let handler = move |peer: SocketAddr, req: axum::extract::Request| {
            let router = router.clone();
            async move {
                let mut req = body::guarded(req, body_timeout);
                req.extensions_mut().insert(auth::Peer(peer));
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                let mut response = match router.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                tracing::debug!(client = %peer.ip(), %method, path, status = response.status().as_u16(), "API request");
                // Answers hold the box's data: never cached, never sniffed.
                let headers = response.headers_mut();
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
                response
            }
        };
        let tracker = tokio_util::task::TaskTracker::new();
        let span = tracing::info_span!("api", address = %address);
        tracing::Instrument::instrument(serve::accept(listener, shutdown, tracker.clone(), handler), span).await;
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("REST API requests still in progress after the grace period; stopping anyway");
        }
        // Changes already begun finish with their audit record (a bulk run
        // stops after the entry in hand), however long that takes: the
        // box must not close between a change and its record.
        stopping.cancel();
        work.close();
        work.wait().await;
    }
}
