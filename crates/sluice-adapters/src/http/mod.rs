//! HTTP adapters. Receive (`type = "http"` on a receive location): the
//! request body streams into the box; one-way answers `202` once durable,
//! request-response answers with the message routed back (see `reply`).
//! Send (`type = "http"` on a send port): the body streams from the box into
//! the request, optionally gzip-compressed; the answer decides delivered,
//! retry or fail, and solicit-response publishes it as a new message.

mod receive;
mod reply;
mod send;

pub use crate::support::fd::{FD_RESERVE, fd_limit, raise_fd_limit};
pub use receive::{HttpAuth, HttpReceiveConfig, HttpReceiver, MinRateConfig, ReceiveMode, ServerTls};
pub use send::{Compress, HttpSendConfig, HttpTransmitter, SendMode};

use std::path::Path;
use std::sync::Arc;

use crate::{AdapterError, Claim, Exchange, Resource, Source, Transmitter};

/// The properties an HTTP receive location promotes (namespace, name),
/// besides those of every location: `http.query` and `http.content_type`
/// when the request has them, `http.content_encoding` when the body is kept
/// encoded (`decode = false`), and `http.header.<name>` for each of
/// `promote_headers`; request-response adds [`crate::REPLY_TO`].
pub const PROMOTES: &[(&str, &str)] = &[
    ("http", "method"),
    ("http", "path"),
    ("http", "query"),
    ("http", "content_type"),
    ("http", "content_encoding"),
];

/// The properties of a solicit-response answer (besides `correlation.id`,
/// `reply.to`, `send.port` and `received_at`, which the host adds).
pub const ANSWER_PROMOTES: &[(&str, &str)] = &[
    ("http", "status"),
    ("http", "content_type"),
    ("http", "content_encoding"),
];

impl crate::ReceiveAdapter for HttpReceiveConfig {
    fn resolve_paths(&mut self, base: &Path) {
        HttpReceiveConfig::resolve_paths(self, base);
    }
    fn build(&self) -> Result<Box<dyn Source>, AdapterError> {
        Ok(Box::new(HttpReceiveConfig::build(self)?))
    }
    fn resources(&self) -> Vec<Claim> {
        vec![Claim::exclusive("address", Resource::Listen(self.address))]
    }
    fn exchange(&self) -> Exchange {
        match self.mode {
            ReceiveMode::OneWay => Exchange::OneWay,
            ReceiveMode::RequestResponse => Exchange::RequestResponse,
        }
    }
    /// Method and path, and `reply.to` in request-response mode.
    fn always_promotes(&self) -> Vec<sluice_model::Key> {
        let mut keys = crate::support::keys(&[("http", "method"), ("http", "path")]);
        if self.mode == ReceiveMode::RequestResponse {
            keys.extend(crate::support::keys(&[crate::REPLY_TO]));
        }
        keys
    }
    fn abandoned_keep(&self) -> Option<std::time::Duration> {
        (self.mode == ReceiveMode::RequestResponse).then_some(self.abandoned_keep)
    }
}

impl crate::SendAdapter for HttpSendConfig {
    fn resolve_paths(&mut self, base: &Path) {
        HttpSendConfig::resolve_paths(self, base);
    }
    fn build(&self) -> Result<Arc<dyn Transmitter>, AdapterError> {
        Ok(Arc::new(HttpSendConfig::build(self)?))
    }
    fn resources(&self) -> Vec<Claim> {
        vec![Claim::shared("url", Resource::Endpoint(self.url.clone()))]
    }
    fn exchange(&self) -> Exchange {
        match self.mode {
            SendMode::OneWay => Exchange::OneWay,
            SendMode::SolicitResponse => Exchange::SolicitResponse,
        }
    }
    /// On a busy machine a delivery's time is mostly its wait for a CPU,
    /// not the peer's: with 32 at once a port delivered about half what 64
    /// clients posted to a location of the same node on two cores, and its
    /// backlog grew for as long as they posted; with 128 it kept up
    /// (BENCHMARKS.md, issue 14), bounded by the CPU rather than by round
    /// trips. Of the order of other integration tools' HTTP pools (Vector's
    /// adaptive limit tops out at 200, Camel's pool at 200). A peer that
    /// takes fewer requests at once is configured so (`concurrency`); the
    /// host's throttle bounds what all ports hold in flight together. A
    /// Sluice HTTP location takes as many at once from one address by
    /// default (`max_uploads_per_client`), so a node sending to another at
    /// the defaults is not refused with 429.
    fn default_concurrency(&self) -> usize {
        128
    }
    fn needs(&self) -> Vec<crate::Need> {
        crate::macros::Template::parse(&self.url)
            .map(|t| t.needs("url"))
            .unwrap_or_default()
    }
}

/// The compliance kit, run over an HTTP receive location.
#[cfg(test)]
mod compliance {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use crate::kit::{self, SourceHarness};
    use crate::{ReceiveAdapter, Source};

    struct Location {
        port: u16,
        /// The last offer's answer, once it came.
        answer: std::sync::Arc<Mutex<Option<u16>>>,
    }

    impl Location {
        fn new() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            Location {
                port,
                answer: Default::default(),
            }
        }
        fn answer(&self) -> Option<u16> {
            *self.answer.lock().expect("lock")
        }
    }

    #[async_trait]
    impl SourceHarness for Location {
        fn source(&self) -> Box<dyn Source> {
            let text = format!("address = '127.0.0.1:{}'\npath = '/in'", self.port);
            let config: super::HttpReceiveConfig = toml::from_str(&text).expect("config");
            ReceiveAdapter::build(&config).expect("build")
        }
        async fn offer(&self, body: &[u8]) {
            *self.answer.lock().expect("lock") = None;
            let (answer, url, body) = (
                self.answer.clone(),
                format!("http://127.0.0.1:{}/in", self.port),
                body.to_vec(),
            );
            tokio::spawn(async move {
                let status = match reqwest::Client::new().post(url).body(body).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                *answer.lock().expect("lock") = Some(status);
            });
        }
        async fn acknowledged(&self) -> bool {
            self.answer().is_some_and(|s| (200..300).contains(&s))
        }
        async fn kept(&self) -> bool {
            self.answer().is_some_and(|s| !(200..300).contains(&s))
        }
        fn peer_retries(&self) -> bool {
            true
        }
        fn may_submit_unheld(&self) -> bool {
            true
        }
        fn promotes(&self) -> &'static [(&'static str, &'static str)] {
            super::PROMOTES
        }
    }

    #[tokio::test]
    async fn the_http_receive_location_passes_the_kit() {
        kit::check_source(&Location::new()).await;
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        for auth in [
            "{ type = 'basic', user = 'u', password = 'kit-secret-1' }",
            "{ type = 'bearer', token = 'kit-secret-1' }",
        ] {
            let text = format!("type = 'http'\naddress = '127.0.0.1:0'\nauth = {auth}");
            let config: crate::ReceiveAdapterConfig = toml::from_str(&text).expect("config");
            kit::check_secrets_not_in_debug(&format!("{config:?}"), &["kit-secret-1"]);
        }
    }
}
