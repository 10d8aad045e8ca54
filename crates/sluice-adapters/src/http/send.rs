//! HTTP send port, one-way or solicit-response.
//!
//! ```toml
//! adapter = { type = "http", url = "https://example.com/orders/%property:order.id%", method = "PUT",
//!             compress = "gzip", headers = { "X-Source" = "sluice" },
//!             headers_from_context = { "X-Customer" = "order.customer" },
//!             connect_timeout = "10s", timeout = "5m" }
//! ```
//!
//! The request body is the message body, streamed from the box (never held
//! whole); with `compress = "gzip"` it is compressed on the way and sent
//! with `Content-Encoding: gzip`; a message that carries `http.content_encoding`
//! (a body kept encoded as it came) is sent labelled with it. Every request
//! carries `X-Sluice-Message-Id`.
//! A 2xx answer is a delivery; 408, 429 and 5xx, a refused or dropped
//! connection and a timeout are retried per the port's policy; any other
//! answer (4xx, a redirect, which is not followed with a streamed body) fails
//! at once and the message is suspended.
//!
//! `mode = "solicit-response"`: a 2xx answer's body streams into the box as
//! a new message (the host publishes it, correlated to the request, before
//! the request is acknowledged); its context holds `http.status`,
//! `http.content_type` and `http.content_encoding` (when the peer sent them).
//! `tls_ca = "ca.pem"` adds a certificate authority to the built-in roots
//! (for peers with a private PKI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use sluice_model::{Context, Key};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::macros::Template;
use crate::support::secret::{Secret, redact_url};
use crate::{AdapterError, Body, Delivered, Outbound, Response, TransmitError, Transmitter};

fn default_method() -> String {
    "POST".into()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_timeout() -> Duration {
    Duration::from_secs(300)
}

/// One-way (the answer's status decides) or solicit-response (the answer
/// becomes a message).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SendMode {
    #[default]
    OneWay,
    SolicitResponse,
}

/// Compression of the request body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compress {
    #[default]
    None,
    Gzip,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSendConfig {
    /// `http://` or `https://` URL; macros (`%MessageId%`,
    /// `%property:ns.name%`...) are filled in percent-encoded.
    pub url: String,
    /// `POST` (default), `PUT` or `PATCH`.
    #[serde(default = "default_method")]
    pub method: String,
    /// `Content-Type` of the request (default `application/octet-stream`).
    /// `Content-Type` of the request. Default: the message's
    /// `http.content_type` (what an HTTP client sent, what a peer answered),
    /// else `application/octet-stream`.
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub compress: Compress,
    /// Fixed request headers. Their values may be credentials (an
    /// `Authorization` token): never printed, and sent marked sensitive.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Request headers taken from the message's context: header → property
    /// (`ns.name`). A message without the property is sent without the header.
    #[serde(default)]
    pub headers_from_context: BTreeMap<String, String>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The whole exchange, request body included (and, solicit-response,
    /// the answer's body).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub mode: SendMode,
    /// PEM file of certificate authorities trusted besides the built-in roots.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

impl HttpSendConfig {
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = &mut self.tls_ca {
            crate::support::names::resolve_in_place(base, p);
        }
    }

    pub fn build(&self) -> Result<HttpTransmitter, AdapterError> {
        let bad = |m: String| AdapterError::Config(m);
        let url = Template::parse(&self.url).map_err(bad)?;
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(bad(format!(
                "url `{}` must start with http:// or https://",
                redact_url(&self.url)
            )));
        }
        let method = match self.method.to_ascii_uppercase().as_str() {
            "POST" => reqwest::Method::POST,
            "PUT" => reqwest::Method::PUT,
            "PATCH" => reqwest::Method::PATCH,
            other => {
                return Err(bad(format!(
                    "method `{other}`: use POST, PUT or PATCH (a send port sends a body)"
                )));
            }
        };
        let mut headers = HeaderMap::new();
        let header_name = |h: &str| HeaderName::from_bytes(h.as_bytes()).map_err(|e| bad(format!("header `{h}`: {e}")));
        for (h, v) in &self.headers {
            let mut value = HeaderValue::from_str(v.expose()).map_err(|e| bad(format!("header `{h}`: {e}")))?;
            value.set_sensitive(true);
            headers.insert(header_name(h)?, value);
        }
        if let Some(ct) = &self.content_type {
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_str(ct).map_err(|e| bad(format!("content_type: {e}")))?,
            );
        }
        if self.compress == Compress::Gzip {
            headers.insert(reqwest::header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let mut from_context = Vec::new();
        for (h, key) in &self.headers_from_context {
            let k = Key::parse(key).ok_or_else(|| {
                bad(format!(
                    "headers_from_context `{h}`: `{key}` is not a property (ns.name)"
                ))
            })?;
            from_context.push((header_name(h)?, k));
        }
        if self.connect_timeout.is_zero() || self.timeout.is_zero() {
            return Err(bad("connect_timeout and timeout must be above zero".into()));
        }
        let mut client = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &self.tls_ca {
            for c in crate::support::tls::ca_certificates("tls_ca", ca)? {
                let c = reqwest::Certificate::from_der(c.as_ref())
                    .map_err(|e| bad(format!("tls_ca {}: {e}", ca.display())))?;
                client = client.add_root_certificate(c);
            }
        }
        let client = client
            .build()
            .map_err(|e| bad(format!("building the HTTP client: {e}")))?;
        Ok(HttpTransmitter {
            url,
            method,
            headers,
            from_context,
            gzip: self.compress == Compress::Gzip,
            solicit: self.mode == SendMode::SolicitResponse,
            client,
        })
    }
}

pub struct HttpTransmitter {
    url: Template,
    method: reqwest::Method,
    headers: HeaderMap,
    from_context: Vec<(HeaderName, Key)>,
    gzip: bool,
    solicit: bool,
    client: reqwest::Client,
}

/// The most of an error response's body kept for the error message.
const ERROR_BODY_MAX: usize = 512;

impl HttpTransmitter {
    /// Send the request; `Ok` is a 2xx answer, its body not read yet.
    async fn exchange(&self, msg: &Outbound, body: Body) -> Result<(String, reqwest::Response), TransmitError> {
        let url = self.url.render_url(msg.id, &msg.context).map_err(TransmitError::from)?;
        let mut headers = self.headers.clone();
        for (h, key) in &self.from_context {
            if let Some(p) = msg.context.get(&key.namespace, &key.name) {
                let v = HeaderValue::from_str(&p.value.to_text())
                    .map_err(|e| TransmitError::fatal(format!("header `{h}` from {key}: {e}")))?;
                headers.insert(h.clone(), v);
            }
        }
        if !headers.contains_key(reqwest::header::CONTENT_TYPE) {
            let ct = msg
                .context
                .get("http", "content_type")
                .and_then(|p| HeaderValue::from_str(&p.value.to_text()).ok())
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            headers.insert(reqwest::header::CONTENT_TYPE, ct);
        }
        // A body kept encoded as it came (`decode = false`) goes on labelled so.
        if !self.gzip
            && !headers.contains_key(reqwest::header::CONTENT_ENCODING)
            && let Some(v) = msg
                .context
                .get("http", "content_encoding")
                .and_then(|p| HeaderValue::from_str(&p.value.to_text()).ok())
        {
            headers.insert(reqwest::header::CONTENT_ENCODING, v);
        }
        if let Ok(v) = HeaderValue::from_str(&msg.id.to_string()) {
            headers.insert(HeaderName::from_static("x-sluice-message-id"), v);
        }
        let stream: Body = if self.gzip {
            Box::new(async_compression::tokio::bufread::GzipEncoder::new(
                tokio::io::BufReader::with_capacity(64 * 1024, body),
            ))
        } else {
            body
        };
        let request = self
            .client
            .request(self.method.clone(), &url)
            .headers(headers)
            .body(reqwest::Body::wrap_stream(ReaderStream::with_capacity(
                stream,
                64 * 1024,
            )));
        // As it may be shown: without credentials.
        let shown = redact_url(&url);
        let response = request.send().await.map_err(|e| {
            // Refused, reset, timed out, or the body failed to read: all may pass.
            TransmitError::retry(format!("{} {shown}: {}", self.method, error_chain(&e.without_url())))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok((shown, response));
        }
        let retryable = status.is_server_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| format!(" to {l} (redirects are not followed)"))
            .unwrap_or_default();
        let text = error_body(response).await;
        let message = format!("{} {shown}: HTTP {status}{location}{text}", self.method);
        Err(if retryable {
            TransmitError::retry(message)
        } else {
            TransmitError::fatal(message)
        })
    }
}

#[async_trait]
impl Transmitter for HttpTransmitter {
    async fn transmit(&self, msg: &Outbound, body: Body) -> Result<Delivered, TransmitError> {
        let (url, response) = self.exchange(msg, body).await?;
        let status = response.status();
        // One-way: the answer's body is read and dropped (a chunk at a time).
        let mut s = response.bytes_stream();
        while let Some(chunk) = s.next().await {
            if let Err(e) = chunk {
                tracing::debug!(url = %url, error = %e, "the answer's body broke off after a 2xx status; delivered");
                break;
            }
        }
        Ok(Delivered::To(format!(
            "{} {} ({status})",
            self.method,
            where_delivered(&url)
        )))
    }

    fn solicits_response(&self) -> bool {
        self.solicit
    }

    async fn solicit(&self, msg: &Outbound, body: Body) -> Result<(Delivered, Response), TransmitError> {
        let (url, response) = self.exchange(msg, body).await?;
        let status = response.status();
        let mut context = Context::new();
        context.promote("http", "status", i64::from(status.as_u16()));
        for (name, key) in [
            (reqwest::header::CONTENT_TYPE, "content_type"),
            (reqwest::header::CONTENT_ENCODING, "content_encoding"),
        ] {
            if let Some(v) = response.headers().get(name).and_then(|v| v.to_str().ok()) {
                context.promote("http", key, v);
            }
        }
        let what = format!("{} {url}", self.method);
        let stream = response.bytes_stream().map(move |r| {
            r.map_err(|e| {
                // Timed out or cut off mid-answer: the host retries the request.
                std::io::Error::other(format!("the answer of {what} broke off: {}", error_chain(&e)))
            })
        });
        let body: Body = Box::new(StreamReader::new(Box::pin(stream)));
        Ok((
            Delivered::To(format!("{} {} ({status})", self.method, where_delivered(&url))),
            Response { context, body },
        ))
    }
}

/// The start of an error answer's body, for the error message.
async fn error_body(response: reqwest::Response) -> String {
    let mut s = response.bytes_stream();
    let mut kept = Vec::new();
    while let Some(Ok(chunk)) = s.next().await {
        kept.extend_from_slice(&chunk[..chunk.len().min(ERROR_BODY_MAX - kept.len())]);
        if kept.len() >= ERROR_BODY_MAX {
            break;
        }
    }
    if kept.is_empty() {
        String::new()
    } else {
        format!(": {}", String::from_utf8_lossy(&kept).trim())
    }
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A URL as a delivery's record names it (the log line and the tracking
/// event's detail): no user or password, and no query (it may carry a
/// token): `https://h/in?…`.
fn where_delivered(url: &str) -> String {
    let shown = crate::support::secret::redact_url(url);
    match shown.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => shown,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::{Path, Request};
    use axum::http::StatusCode;
    use sluice_model::{Context, MessageId};

    use super::*;

    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        uri: String,
        headers: axum::http::HeaderMap,
        body: Vec<u8>,
    }

    /// A real HTTP server on a free port: records what it receives on every
    /// path; `/status/N` answers N; `/slow` answers after 2 s.
    async fn server() -> (String, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let app = axum::Router::new()
            .route(
                "/status/{code}",
                axum::routing::any(|Path(code): Path<u16>| async move {
                    let location = [(axum::http::header::LOCATION, "http://elsewhere/")];
                    (
                        StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT),
                        location,
                        "nope, said the server",
                    )
                }),
            )
            .route(
                "/slow",
                axum::routing::any(|| async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    "late"
                }),
            )
            .fallback(move |req: Request| {
                let s = s.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
                    s.lock().unwrap().push(Seen {
                        method: parts.method.to_string(),
                        uri: parts.uri.to_string(),
                        headers: parts.headers,
                        body: body.to_vec(),
                    });
                    "ok"
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), seen)
    }

    fn config(url: &str) -> HttpSendConfig {
        toml::from_str(&format!("url = \"{url}\"")).unwrap()
    }

    fn outbound(ctx: Context) -> Outbound {
        Outbound {
            id: MessageId::new(),
            port: "p".into(),
            context: ctx,
            attempt: 1,
            progress: None,
        }
    }

    /// Credentials in the URL or a fixed header are never shown: not in the
    /// configuration's `Debug`, not where a message was delivered, not in
    /// an error (which is stored with the message's attempts and faults).
    #[tokio::test]
    async fn credentials_are_never_shown() {
        let (base, _) = server().await;
        let with_creds = |b: &str| b.replacen("http://", "http://bob:s3cret@", 1);
        let mut c = config(&with_creds(&base));
        c.headers.insert("Authorization".into(), Secret::new("Bearer t0ken"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("t0ken"), "{shown}");
        let t = c.build().unwrap();
        let r = t
            .transmit(&outbound(Context::new()), Box::new(std::io::Cursor::new(b"x".to_vec())))
            .await
            .unwrap();
        let Delivered::To(to) = r else { panic!("{r:?}") };
        assert_eq!(where_delivered("https://u:p@h/in?token=s3cret"), "https://***@h/in?…");
        assert!(to.contains("***@") && !to.contains("s3cret"), "{to}");
        // Nobody listening: the error names the URL without its password.
        let c = config(&with_creds("http://127.0.0.1:1/in"));
        let e = c
            .build()
            .unwrap()
            .transmit(&outbound(Context::new()), Box::new(std::io::Cursor::new(b"x".to_vec())))
            .await
            .unwrap_err();
        assert!(
            e.message.contains("***@127.0.0.1:1") && !e.message.contains("s3cret"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn streams_the_body_with_headers_and_url_macros() {
        let (base, seen) = server().await;
        let mut c = config(&format!(
            "{base}/orders/%property:order.id%?c=%property:order.customer%"
        ));
        c.method = "put".into();
        c.headers.insert("X-Source".into(), Secret::new("sluice"));
        c.headers_from_context
            .insert("X-Customer".into(), "order.customer".into());
        c.headers_from_context
            .insert("X-Missing".into(), "order.nothing".into());
        let t = c.build().unwrap();
        let mut ctx = Context::new();
        ctx.promote("order", "id", "A/1 ?x");
        ctx.promote("order", "customer", "ACME & Co");
        let msg = outbound(ctx);
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let r = t
            .transmit(&msg, Box::new(std::io::Cursor::new(body.clone())))
            .await
            .unwrap();
        assert!(matches!(r, Delivered::To(ref to) if to.contains("200")), "{r:?}");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!(s.method, "PUT");
        assert_eq!(
            s.uri, "/orders/A%2F1%20%3Fx?c=ACME%20%26%20Co",
            "macro values cannot add path segments or parameters"
        );
        assert_eq!(s.headers["x-source"], "sluice");
        assert_eq!(s.headers["x-customer"], "ACME & Co");
        assert!(!s.headers.contains_key("x-missing"));
        assert_eq!(s.headers["content-type"], "application/octet-stream");
        assert_eq!(s.headers["x-sluice-message-id"], msg.id.to_string().as_str());
        assert!(s.body == body, "the body arrives whole");
    }

    #[tokio::test]
    async fn solicit_response_returns_the_answer_streamed_with_its_properties() {
        let (base, seen) = server().await;
        let mut c = config(&format!("{base}/in"));
        c.mode = SendMode::SolicitResponse;
        let t = c.build().unwrap();
        assert!(t.solicits_response());
        let mut ctx = Context::new();
        ctx.promote("http", "content_type", "application/json");
        ctx.promote("http", "content_encoding", "gzip");
        let (delivered, mut response) = t.solicit(&outbound(ctx), Box::new(&b"{}"[..])).await.unwrap();
        assert!(matches!(delivered, Delivered::To(ref to) if to.contains("200")));
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut response.body, &mut answer)
            .await
            .unwrap();
        assert_eq!(answer, b"ok");
        let get = |n: &str| response.context.get("http", n).map(|p| p.value.to_text());
        assert_eq!(get("status").as_deref(), Some("200"));
        assert_eq!(get("content_type").as_deref(), Some("text/plain; charset=utf-8"));
        let s = seen.lock().unwrap()[0].clone();
        assert_eq!(s.headers["content-type"], "application/json", "from http.content_type");
        assert_eq!(s.headers["content-encoding"], "gzip", "kept encoded, labelled so");
        // A one-way transmitter cannot solicit.
        let one_way = config(&format!("{base}/in")).build().unwrap();
        assert!(!one_way.solicits_response());
        // An error answer is not a response: retried or failed as one-way.
        let mut c = config(&format!("{base}/status/503"));
        c.mode = SendMode::SolicitResponse;
        let e = c
            .build()
            .unwrap()
            .solicit(&outbound(Context::new()), Box::new(&b"x"[..]))
            .await;
        assert!(matches!(e, Err(ref e) if e.retryable && e.message.contains("503")));
    }

    #[tokio::test]
    async fn gzip_compresses_on_the_way() {
        let (base, seen) = server().await;
        let mut c = config(&format!("{base}/in"));
        c.compress = Compress::Gzip;
        let t = c.build().unwrap();
        let body = b"hello hello hello hello ".repeat(10_000);
        t.transmit(&outbound(Context::new()), Box::new(std::io::Cursor::new(body.clone())))
            .await
            .unwrap();
        let s = seen.lock().unwrap()[0].clone();
        assert_eq!(s.headers["content-encoding"], "gzip");
        assert!(s.body.len() < body.len() / 20, "compressed: {} bytes", s.body.len());
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&s.body[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, body);
    }

    #[tokio::test]
    async fn answers_decide_retry_or_failure() {
        let (base, _) = server().await;
        let send = |path: &str, timeout_ms: u64| {
            let mut c = config(&format!("{base}{path}"));
            c.timeout = Duration::from_millis(timeout_ms);
            let t = c.build().unwrap();
            async move { t.transmit(&outbound(Context::new()), Box::new(&b"x"[..])).await }
        };
        for (code, retry) in [
            (503, true),
            (500, true),
            (429, true),
            (408, true),
            (404, false),
            (400, false),
            (302, false),
        ] {
            let e = send(&format!("/status/{code}"), 5000).await.unwrap_err();
            assert_eq!(e.retryable, retry, "{code}: {e}");
            assert!(e.message.contains(&format!("HTTP {code}")), "{e}");
            assert!(e.message.contains("nope, said the server"), "{e}");
            if code == 302 {
                assert!(e.message.contains("redirects are not followed"), "{e}");
            }
        }
        let e = send("/slow", 300).await.unwrap_err();
        assert!(e.retryable, "a timeout is retried: {e}");
        // Nothing listens there.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let t = config(&format!("http://{closed}/x")).build().unwrap();
        let e = t
            .transmit(&outbound(Context::new()), Box::new(&b"x"[..]))
            .await
            .unwrap_err();
        assert!(e.retryable, "{e}");
        assert!(e.message.contains(&closed.to_string()), "{e}");
        // A macro without its property fails the message, not the port.
        let t = config(&format!("{base}/%property:a.b%")).build().unwrap();
        let e = t
            .transmit(&outbound(Context::new()), Box::new(&b"x"[..]))
            .await
            .unwrap_err();
        assert!(!e.retryable && e.message.contains("a.b"), "{e}");
    }

    #[test]
    fn config_errors_are_precise() {
        let e = config("ftp://x/").build().err().unwrap().to_string();
        assert!(e.contains("http:// or https://"), "{e}");
        let mut c = config("http://x/");
        c.method = "GET".into();
        assert!(c.build().err().unwrap().to_string().contains("POST, PUT or PATCH"));
        let mut c = config("http://x/");
        c.headers.insert("Bad Header".into(), Secret::new("v"));
        assert!(c.build().err().unwrap().to_string().contains("header `Bad Header`"));
        let e = toml::from_str::<HttpSendConfig>("url = \"http://x/\"\nretries = 3")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown field `retries`"), "{e}");
    }

    /// One Sluice node's port at its defaults, sending to another's
    /// location at its defaults, is never told 429 for how many requests
    /// it has open at once: that would cost each refused message a retry
    /// interval (60 s by default) and, three times over, a suspension.
    #[test]
    fn a_default_port_fits_within_a_default_locations_cap_per_client() {
        use crate::SendAdapter;
        let port = config("http://127.0.0.1:1/in").default_concurrency();
        let location: super::super::HttpReceiveConfig = toml::from_str("address = \"127.0.0.1:1\"").unwrap();
        assert!(
            port <= location.max_uploads_per_client,
            "a port's default concurrency ({port}) is above a location's default max_uploads_per_client ({})",
            location.max_uploads_per_client
        );
        assert!(
            location.max_uploads_per_client < location.max_uploads,
            "one client address must not be able to take all of a location's uploads"
        );
    }
}
