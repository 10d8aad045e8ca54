//! `sluice dev …`: tools for trying Sluice out and testing against it.
//!
//! `sluice dev echo-server --port 8481` answers every request (any method,
//! any path) with `200 OK` and the request's own body, streamed back as it
//! arrives (never buffered whole), with the request's `Content-Type` and
//! `Content-Encoding`. HTTP/1.1 and HTTP/2 (h2c prior knowledge), no TLS.
//! Its connections are TCP_NODELAY, as a benchmark's peer should be.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::serve::ListenerExt as _;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct EchoServerArgs {
    /// Port to listen on (0: any free port; the port chosen is printed).
    #[arg(long, default_value_t = 8481)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
}

async fn echo(request: Request) -> Response {
    let copied: HeaderMap = request
        .headers()
        .iter()
        .filter(|(name, _)| *name == header::CONTENT_TYPE || *name == header::CONTENT_ENCODING)
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let mut response = Response::new(Body::from_stream(request.into_body().into_data_stream()));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().extend(copied);
    response
}

pub async fn echo_server(args: EchoServerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let addr = SocketAddr::new(args.address, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr().context("reading the address listened on")?;
    // On stdout, for scripts and tests that asked for port 0.
    outln!("echo server listening on http://{local}");
    tracing::info!(address = %local, "echo server listening; every request is answered with its own body");
    let app = axum::Router::new().fallback(echo);
    // Small answers go out at once: without TCP_NODELAY a response written
    // in pieces waits for the client's delayed ACK (about 40 ms each).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serving")
}
