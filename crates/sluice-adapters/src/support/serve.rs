//! An HTTP listener under the [`guard`](super::guard)s: the accept loop
//! (a connection slot taken before anything is spent on a connection, or
//! the connection closed at once; the longest idle one evicted to make
//! room), the TLS handshake (bounded in time), and each connection served
//! by hyper-util's auto server (HTTP/1.1 and HTTP/2) with a header read
//! timeout, a write timeout, an idle timeout, and a graceful close when the
//! listener stops. Used by the HTTP receive location and by the node's
//! REST API, so both keep every client to the same bounds.
//!
//! Log lines are written inside the caller's span (`Span::current()` when
//! [`accept`] is called): it names the listener.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::guard::{Holder, RateLimited, Slots, WriteTimeout};

/// How long a client may take, at each step.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To send a request's head (and, with TLS, to finish the handshake).
    pub header: Duration,
    /// To take any of what is written to it.
    pub write: Duration,
    /// With no request in progress, before the connection is closed.
    pub idle: Duration,
}

/// What [`accept`] serves.
pub struct Listener {
    pub listener: tokio::net::TcpListener,
    /// The connection slots (per listener and per client address).
    pub connections: Arc<Slots>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub timeouts: Timeouts,
}

/// Accept connections until `shutdown`, each served in a task of
/// `tracker` by `handler` (given the client's address and the request);
/// returns once it stops accepting (the caller waits on `tracker` for the
/// connections to end, as long as it sees fit).
pub async fn accept<H, F>(l: Listener, shutdown: CancellationToken, tracker: TaskTracker, handler: H)
where
    H: Fn(SocketAddr, axum::extract::Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = axum::response::Response> + Send + 'static,
{
    let span = tracing::Span::current();
    let accept_errors = RateLimited::new(Duration::from_secs(10));
    let Listener {
        listener,
        connections,
        tls,
        timeouts,
    } = l;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    if let Some(left_out) = accept_errors.allow() {
                        tracing::warn!(error = %e, left_out, "accepting a connection");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Caps first, before anything is spent on the connection.
        let slot = match connections.take(peer.ip()) {
            Ok((slot, evicted)) => {
                if let Some(client) = evicted
                    && let Some(left_out) = connections.evictions.allow()
                {
                    tracing::warn!(evicted = %client, left_out,
                        "at its cap of connections: the longest idle one is closed to make room");
                }
                slot
            }
            Err(refusal) => {
                if let Some(left_out) = connections.refusals.allow() {
                    tracing::warn!(client = %peer.ip(), cap = %refusal,
                        open = connections.taken(), left_out, "connection refused (closed at once)");
                }
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (tls, stopping, handler) = (tls.clone(), shutdown.clone(), handler.clone());
        tracker.spawn(
            async move {
                let holder = slot.holder().clone();
                let _slot = slot;
                match tls {
                    None => serve_connection(stream, peer, holder, stopping, timeouts, handler).await,
                    Some(acceptor) => {
                        // An evicted connection or a stopping listener does
                        // not wait for a handshake.
                        let handshake = tokio::select! {
                            h = tokio::time::timeout(timeouts.header, acceptor.accept(stream)) => h,
                            _ = holder.evicted().cancelled() => return,
                            _ = stopping.cancelled() => return,
                        };
                        match handshake {
                            Ok(Ok(tls)) => serve_connection(tls, peer, holder, stopping, timeouts, handler).await,
                            Ok(Err(e)) => tracing::info!(peer = %peer, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::info!(peer = %peer, "TLS handshake too slow; closed"),
                        }
                    }
                }
            }
            .instrument(span.clone()),
        );
    }
}

/// Serve one connection until it ends: closed when it has had no request
/// in progress for the idle timeout, or gracefully when the listener stops.
async fn serve_connection<I, H, F>(
    io: I,
    peer: SocketAddr,
    holder: Arc<Holder>,
    stopping: CancellationToken,
    timeouts: Timeouts,
    handler: H,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(SocketAddr, axum::extract::Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = axum::response::Response> + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let act = holder.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        // In progress from its head until its answer's last byte.
        let in_request = act.enter();
        let holder = act.clone();
        let handler = handler.clone();
        async move {
            let response = handler(peer, req.map(axum::body::Body::new)).await;
            // Watched from here: an answer that makes no progress for
            // the write timeout (an HTTP/2 client that grants no window
            // never makes a socket write wait) ends the connection.
            let answering = holder.answering();
            Ok::<_, std::convert::Infallible>(response.map(|b| {
                use http_body_util::BodyExt;
                axum::body::Body::new(b.map_frame(move |f| {
                    let _ = &in_request;
                    answering.progress();
                    f
                }))
            }))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    // HTTP/2: a stream left unread (waiting for admission) takes at most a
    // quarter of the connection's window, so its siblings keep flowing; and
    // what a client can make the node buffer is bounded per connection.
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(256 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_concurrent_streams(100);
    let io = TokioIo::new(WriteTimeout::new(io, timeouts.write));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(timeouts.idle));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    let mut evicted = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = stopping.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = holder.evicted().cancelled(), if !evicted => {
                // Room made for a newcomer. Chosen while it had no request
                // in progress; one may have begun since: let it finish.
                evicted = true;
                if holder.idle_for().is_some() {
                    tracing::debug!(peer = %peer, "closing an idle connection to make room for another client");
                    return;
                }
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tick.tick() => {
                if holder
                    .answer_stalled_for()
                    .is_some_and(|d| d >= timeouts.write)
                {
                    tracing::info!(peer = %peer, "the client took none of its answer for write_timeout; connection closed");
                    return;
                }
                // Idle (no request in progress): closed outright, whether it
                // idled too long or the listener is stopping (a graceful
                // close could wait on a client that never answers).
                if holder.idle_for().is_some_and(|d| closing || d >= timeouts.idle) {
                    tracing::debug!(peer = %peer, closing, "closing an idle connection");
                    return;
                }
            }
        }
    }
}
