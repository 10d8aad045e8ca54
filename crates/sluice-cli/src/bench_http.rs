//! `sluice bench http`: POSTs at a fixed rate to a one-way HTTP receive
//! location, and an HTTP server in the same process standing for the send
//! port's destination; for every message, the time from its `202 Accepted`
//! (which carries `X-Sluice-Message-Id`) to its delivery at the server (the
//! HTTP send port sends the same header), on one clock.
//!
//! The load is open loop: each request goes at its scheduled time whether or
//! not earlier ones were answered, over at most `--connections` keep-alive
//! connections (a request waiting for one waits in its latency). After the
//! load the bench waits (up to `--drain-timeout`) for every accepted message
//! to be delivered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::serve::ListenerExt as _;
use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::bench::{Pool, Target, ms, open_loop, post, raise_nofile, target};

/// The header both sides carry: the receive location's answer and every
/// request of the HTTP send port.
const MESSAGE_ID: &str = "x-sluice-message-id";

/// Largest delivery body the receiver reads (a bigger one is answered 413
/// and not counted as delivered).
const MAX_DELIVERY_BODY: usize = 16 << 20;

#[derive(clap::Args, Debug)]
pub struct HttpArgs {
    /// The HTTP receive location (one-way), e.g. http://127.0.0.1:8480/in
    /// (an IP address or localhost; http only).
    #[arg(long)]
    url: String,
    /// Where the receiver listens (ip:port): point the node's HTTP send port
    /// here (any path). It answers every request 200 and notes when it
    /// arrived, by its X-Sluice-Message-Id.
    #[arg(long)]
    receiver: SocketAddr,
    /// Requests per second, each sent at its scheduled time.
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// How long the load runs.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Body size of each request, in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Most keep-alive connections to the receive location.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// A request not answered this long after its scheduled time is given up
    /// (counted as "timeout").
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// After the load, how long to wait for the accepted messages to be delivered.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
}

/// A message the receive location accepted.
struct Accepted {
    /// When its request was due (open loop).
    scheduled: Instant,
    /// When its 202 arrived.
    answered: Instant,
}

/// What the receiver saw.
#[derive(Default)]
struct Deliveries {
    /// First arrival of each message id (the body read whole).
    first: std::sync::Mutex<HashMap<String, Instant>>,
    /// Arrivals of an id already seen (at-least-once redeliveries).
    duplicates: AtomicU64,
    /// Requests without an X-Sluice-Message-Id, or whose body broke off.
    other: AtomicU64,
}

async fn receive(State(d): State<Arc<Deliveries>>, request: Request) -> StatusCode {
    let id = request
        .headers()
        .get(MESSAGE_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Delivered once its body has all arrived.
    if axum::body::to_bytes(request.into_body(), MAX_DELIVERY_BODY)
        .await
        .is_err()
    {
        d.other.fetch_add(1, Ordering::Relaxed);
        return StatusCode::PAYLOAD_TOO_LARGE;
    }
    let at = Instant::now();
    match id {
        Some(id) => match d.first.lock().expect("no panics while held").entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => {
                d.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(at);
            }
        },
        None => {
            d.other.fetch_add(1, Ordering::Relaxed);
        }
    }
    StatusCode::OK
}

#[derive(Default)]
struct Sent {
    accepted: HashMap<String, Accepted>,
    /// By outcome: "202", "503", "timeout", "connect_refused", "202_without_id" ...
    outcomes: std::collections::BTreeMap<String, u64>,
}

async fn request(
    pool: Arc<Pool>,
    target: Arc<Target>,
    body: Bytes,
    at: Instant,
    timeout: Duration,
    sent: Arc<std::sync::Mutex<Sent>>,
) {
    let outcome = tokio::time::timeout_at((at + timeout).into(), post(&pool, &target, body)).await;
    let answered = Instant::now();
    let mut s = sent.lock().expect("no panics while held");
    let key = match outcome {
        Ok(Ok((status, headers))) => {
            let id = headers.get(MESSAGE_ID).and_then(|v| v.to_str().ok());
            match id {
                Some(id) if status == StatusCode::ACCEPTED => {
                    s.accepted.insert(
                        id.to_owned(),
                        Accepted {
                            scheduled: at,
                            answered,
                        },
                    );
                    "202".to_string()
                }
                None if status == StatusCode::ACCEPTED => "202_without_id".to_string(),
                _ => status.as_u16().to_string(),
            }
        }
        Ok(Err(e)) => e,
        Err(_) => "timeout".into(),
    };
    *s.outcomes.entry(key).or_default() += 1;
}

/// p50, p99 and max of `h` in ms (None when empty).
fn summary(h: &Histogram<u64>) -> serde_json::Value {
    if h.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::json!({
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
    })
}

fn line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "none".into();
    }
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    )
}

pub async fn http(args: HttpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0.0 && args.rate.is_finite(), "--rate must be above 0");
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    let target = Arc::new(target(&args.url).await?);
    raise_nofile((args.connections + 256) as libc::rlim_t);

    // The receiver.
    let deliveries = Arc::new(Deliveries::default());
    let listener = tokio::net::TcpListener::bind(args.receiver)
        .await
        .with_context(|| format!("listening on {}", args.receiver))?;
    // TCP_NODELAY, like `sluice dev echo-server` (see there).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = axum::Router::new().fallback(receive).with_state(deliveries.clone());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });

    let total = (args.rate * args.duration.as_secs_f64()).round() as u64;
    eprintln!(
        "bench http: {total} POSTs of {} bytes at {}/s for {:?} to {} (up to {} connections); deliveries received on http://{}",
        args.size, args.rate, args.duration, args.url, args.connections, args.receiver
    );
    let pool = Arc::new(Pool::new(
        target.addr,
        SocketAddr::new(
            if target.addr.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            },
            0,
        ),
        args.connections,
    ));
    let body = Bytes::from((0..args.size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let sent = Arc::new(std::sync::Mutex::new(Sent::default()));
    let start = Instant::now();
    let mut requests = open_loop(
        start,
        args.rate,
        total,
        |at| {
            request(
                pool.clone(),
                target.clone(),
                body.clone(),
                at,
                args.timeout,
                sent.clone(),
            )
        },
        |n, at| {
            let accepted = sent.lock().expect("no panics while held").accepted.len();
            let delivered = deliveries.first.lock().expect("no panics while held").len();
            eprintln!(
                "  {:.0}s: {n} sent, {accepted} accepted, {delivered} delivered",
                at.duration_since(start).as_secs_f64(),
            );
        },
    )
    .await;
    let sent_secs = start.elapsed().as_secs_f64();
    while requests.join_next().await.is_some() {}
    let load_end = Instant::now();

    // Every accepted message delivered, or the drain timeout.
    let sent = std::mem::take(&mut *sent.lock().expect("no panics while held"));
    loop {
        let waiting = {
            let first = deliveries.first.lock().expect("no panics while held");
            sent.accepted.keys().filter(|id| !first.contains_key(*id)).count()
        };
        if waiting == 0 || load_end.elapsed() >= args.drain_timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.abort();
    let first = std::mem::take(&mut *deliveries.first.lock().expect("no panics while held"));

    let mut accept = Histogram::<u64>::new(3)?; // scheduled -> 202
    let mut to_delivery = Histogram::<u64>::new(3)?; // 202 -> delivered
    let mut end_to_end = Histogram::<u64>::new(3)?; // scheduled -> delivered
    let (mut delivered, mut before_202) = (0u64, 0u64);
    let mut last_delivery = None::<Instant>;
    for (id, a) in &sent.accepted {
        accept.record(a.answered.duration_since(a.scheduled).as_micros() as u64)?;
        let Some(&at) = first.get(id) else { continue };
        delivered += 1;
        last_delivery = Some(last_delivery.map_or(at, |l: Instant| l.max(at)));
        // The send port can deliver before the client has read its 202.
        if at < a.answered {
            before_202 += 1;
        }
        to_delivery.record(at.saturating_duration_since(a.answered).as_micros() as u64)?;
        end_to_end.record(at.duration_since(a.scheduled).as_micros() as u64)?;
    }
    let accepted = sent.accepted.len() as u64;
    let missing = accepted - delivered;
    let unknown = first.keys().filter(|id| !sent.accepted.contains_key(*id)).count() as u64;
    let errors: u64 = sent
        .outcomes
        .iter()
        .filter(|(k, _)| k.as_str() != "202")
        .map(|(_, v)| v)
        .sum();
    let drain_s = last_delivery.map(|l| l.saturating_duration_since(load_end).as_secs_f64());
    let delivered_per_s = last_delivery.map(|l| delivered as f64 / l.duration_since(start).as_secs_f64());
    let duplicates = deliveries.duplicates.load(Ordering::Relaxed);
    let other = deliveries.other.load(Ordering::Relaxed);

    let outcomes = sent
        .outcomes
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    outln!(
        "sent               {total} in {sent_secs:.1} s ({:.0}/s, target {}/s), {} connections opened",
        total as f64 / sent_secs.max(1e-9),
        args.rate,
        pool.opened()
    );
    outln!("answered           {outcomes}");
    outln!("202 latency        {} (from the scheduled send)", line(&accept));
    outln!(
        "delivered          {delivered} of {accepted} accepted ({missing} not delivered within {:?} after the load; {duplicates} duplicate deliveries, {unknown} of unknown id, {other} other requests)",
        args.drain_timeout
    );
    outln!(
        "202 -> delivered   {} ({before_202} delivered before the client read its 202: counted as 0)",
        line(&to_delivery)
    );
    outln!("send -> delivered  {} (from the scheduled send)", line(&end_to_end));
    if let (Some(d), Some(r)) = (drain_s, delivered_per_s) {
        outln!("drain              last delivery {d:.2} s after the load ended ({r:.0} delivered/s overall)");
    }
    let json = serde_json::json!({
        "bench": "http",
        "url": args.url,
        "rate": args.rate,
        "duration_s": args.duration.as_secs_f64(),
        "size": args.size,
        "connections_max": args.connections,
        "sent": total,
        "sent_per_s": total as f64 / sent_secs.max(1e-9),
        "accepted": accepted,
        "errors": errors,
        "outcomes": sent.outcomes,
        "accept_latency": summary(&accept),
        "delivered": delivered,
        "missing": missing,
        "duplicates": duplicates,
        "unknown_deliveries": unknown,
        "other_requests": other,
        "delivered_before_202": before_202,
        "accepted_to_delivered": summary(&to_delivery),
        "sent_to_delivered": summary(&end_to_end),
        "drain_s": drain_s,
        "delivered_per_s": delivered_per_s,
    });
    outln!("{json}");
    anyhow::ensure!(
        missing == 0,
        "{missing} accepted messages were not delivered within {:?} after the load",
        args.drain_timeout
    );
    Ok(())
}
