//! `sluice bench messaging`: durable publish -> route -> lease -> ack on an
//! embedded box in a fresh temporary directory.
//!
//! `sluice bench hostile`: an open-loop load of POSTs to an HTTP receive
//! location beside slow clients (slowloris: headers or a body that never end,
//! connections that send nothing), with the node's RSS and open files sampled.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use sluice_content::{Part, WriteOptions, write_part};
use sluice_model::{Context, Filter, MessageId};
use sluice_msgbox::{NewMessage, Subscription};
use tokio::sync::Mutex;

#[derive(clap::Args, Debug)]
pub struct MessagingArgs {
    /// Messages to publish.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Body size of each message, in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Subscriptions every message matches (queue entries per message).
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Only publish: leave every message queued, and measure publish latency.
    #[arg(long)]
    publish_only: bool,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Entries leased at a time by each subscriber.
    #[arg(long, default_value_t = 512)]
    lease_batch: usize,
    /// Where to make the temporary data directory (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Publish at this many messages per second in total (default: as fast as
    /// possible). Latency at a steady rate below capacity shows the cost of a
    /// message rather than the length of the backlog.
    #[arg(long)]
    rate: Option<f64>,
    /// Do not fsync commits (measures the cost of durability; not a valid result).
    #[arg(long)]
    no_sync: bool,
    /// Record no tracking events (measures what tracking costs).
    #[arg(long)]
    no_tracking: bool,
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

pub async fn messaging(args: MessagingArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.messages > 0 && args.subscribers > 0 && args.concurrency > 0,
        "counts must be at least 1"
    );
    let tmp = match &args.dir {
        Some(d) => tempfile::Builder::new().prefix("sluice-bench-").tempdir_in(d),
        None => tempfile::Builder::new().prefix("sluice-bench-").tempdir(),
    }
    .context("creating a temporary data directory")?;
    // The default store (the SQLite box) in the temporary data directory.
    let opts = sluice_store::StoreOptions {
        sync: !args.no_sync,
        tracking: !args.no_tracking,
        ..sluice_store::StoreOptions::new("bench")
    };
    let url = sluice_store::StoreUrl::default_in(tmp.path());
    let b = sluice_store::open(&url, sluice_store::Role::Node, &opts)?;
    for i in 0..args.subscribers {
        b.subscribe(Subscription {
            subscriber: format!("s{i}"),
            filter: Filter::All,
        })
        .await?;
    }
    if let Some(rate) = args.rate {
        anyhow::ensure!(rate > 0.0, "--rate must be positive");
        eprintln!("publishing at {rate} messages/s");
    }
    eprintln!(
        "bench messaging: {} messages of {} bytes, {} subscriber(s), {}, fsync {}, tracking {}, data dir {}",
        args.messages,
        args.size,
        args.subscribers,
        if args.publish_only {
            "publish only"
        } else {
            "publish -> route -> lease -> ack"
        },
        if args.no_sync { "OFF" } else { "on" },
        if args.no_tracking { "off" } else { "on" },
        tmp.path().display()
    );
    let body = Bytes::from((0..args.size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let start = Instant::now();
    let stats_before = b.commit_stats().unwrap_or_default();
    let publish_hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let next = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicU64::new(0));

    let mut publishers = Vec::new();
    for _ in 0..args.concurrency {
        let (b, body, next, hist, published) = (
            b.clone(),
            body.clone(),
            next.clone(),
            publish_hist.clone(),
            published.clone(),
        );
        let total = args.messages;
        let rate = args.rate;
        publishers.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new(3)?;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                if let Some(rate) = rate {
                    tokio::time::sleep_until((start + Duration::from_secs_f64(n as f64 / rate)).into()).await;
                }
                let t0 = Instant::now();
                let mut context = Context::new();
                context.promote("bench", "n", n as i64);
                context.write("bench", "t0_us", start.elapsed().as_micros() as i64);
                let part = if body.len() <= sluice_content::DEFAULT_INLINE_MAX {
                    Part::inline("body", body.clone())
                } else {
                    let mut r: &[u8] = &body;
                    write_part(&*b.content(), "body", &mut r, WriteOptions::default()).await?
                };
                b.publish(NewMessage {
                    id: MessageId::new(),
                    context,
                    parts: vec![part],
                })
                .await?;
                local.record(t0.elapsed().as_micros() as u64)?;
                published.fetch_add(1, Ordering::Relaxed);
            }
            hist.lock().await.add(&local)?;
            anyhow::Ok(())
        }));
    }

    let e2e_hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let mut consumers = Vec::new();
    if !args.publish_only {
        for i in 0..args.subscribers {
            let (b, hist) = (b.clone(), e2e_hist.clone());
            let (total, batch) = (args.messages, args.lease_batch);
            consumers.push(tokio::spawn(async move {
                let name = format!("s{i}");
                let mut local = Histogram::<u64>::new(3)?;
                let mut acked = 0u64;
                while acked < total {
                    let leased = b.lease(&name, batch, 60_000).await?;
                    if leased.is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    let mut acks = Vec::with_capacity(leased.len());
                    for l in leased {
                        let b = b.clone();
                        let t0 = l
                            .context
                            .get("bench", "t0_us")
                            .and_then(|p| p.value.as_int())
                            .unwrap_or(0);
                        acks.push(tokio::spawn(async move { b.ack(l.token).await.map(|_| t0) }));
                    }
                    for a in acks {
                        let t0 = a.await??;
                        let now = start.elapsed().as_micros() as i64;
                        local.record((now - t0).max(0) as u64)?;
                        acked += 1;
                    }
                }
                hist.lock().await.add(&local)?;
                anyhow::Ok(())
            }));
        }
    }
    let mut last_report = Instant::now();
    for p in publishers {
        while !p.is_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if last_report.elapsed() > Duration::from_secs(5) {
                eprintln!(
                    "  {} published after {:.1}s",
                    published.load(Ordering::Relaxed),
                    start.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
        }
        p.await??;
    }
    let publish_secs = start.elapsed().as_secs_f64();
    for c in consumers {
        c.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let counts = b.counts().await?;
    let stats = b.commit_stats().unwrap_or_default();
    let commits = stats.synced_commits - stats_before.synced_commits;
    let hist = if args.publish_only {
        publish_hist.lock().await.clone()
    } else {
        e2e_hist.lock().await.clone()
    };
    let p50 = hist.value_at_quantile(0.50) as f64 / 1000.0;
    let p99 = hist.value_at_quantile(0.99) as f64 / 1000.0;
    let rate = args.messages as f64 / secs;
    let db_bytes = dir_size(tmp.path());
    if !args.publish_only {
        anyhow::ensure!(
            counts.spool == 0,
            "after every ack the box should be empty, but {} messages remain",
            counts.spool
        );
    } else {
        anyhow::ensure!(
            counts.queued.values().sum::<u64>() == args.messages * args.subscribers as u64,
            "expected every message queued, counts: {counts:?}"
        );
    }
    b.close().await?;
    let rss_mib = peak_rss_kib() as f64 / 1024.0;
    let what = if args.publish_only { "publish" } else { "publish-to-ack" };
    outln!("messages        {}", args.messages);
    outln!("elapsed         {secs:.2} s (publishing done at {publish_secs:.2} s)");
    outln!("throughput      {rate:.0} messages/s");
    outln!("{what} p50  {p50:.2} ms");
    outln!("{what} p99  {p99:.2} ms");
    outln!(
        "synced commits  {commits} ({:.1} messages per commit)",
        args.messages as f64 / commits.max(1) as f64
    );
    outln!("box on disk     {:.1} MiB", db_bytes as f64 / 1048576.0);
    outln!("peak RSS        {rss_mib:.1} MiB");
    let json = serde_json::json!({
        "bench": "messaging",
        "messages": args.messages,
        "size": args.size,
        "subscribers": args.subscribers,
        "publish_only": args.publish_only,
        "rate": args.rate,
        "fsync": !args.no_sync,
        "seconds": secs,
        "messages_per_sec": rate,
        "latency": what,
        "p50_ms": p50,
        "p99_ms": p99,
        "synced_commits": commits,
        "box_bytes_on_disk": db_bytes,
        "peak_rss_mib": rss_mib,
    });
    outln!("{json}");
    Ok(())
}

// ---------------------------------------------------------------------------
// `sluice bench hostile`: a normal load beside slow and hostile clients.

/// How a slow connection misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SlowMode {
    /// Send a request line and the start of the headers, then one more header
    /// byte every --slow-interval (slowloris): the headers never end.
    Headers,
    /// Send whole headers with `Content-Length: 1048576`, then one body byte
    /// every --slow-interval: the body never ends.
    Body,
    /// Connect and send nothing.
    Idle,
}

impl SlowMode {
    fn name(self) -> &'static str {
        match self {
            SlowMode::Headers => "headers",
            SlowMode::Body => "body",
            SlowMode::Idle => "idle",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct HostileArgs {
    /// The target, e.g. http://127.0.0.1:8480/in (an IP address or localhost; http only).
    #[arg(long)]
    url: String,
    /// Slow connections held open at once (0: the normal load alone). One
    /// that the server closes, or that cannot be opened, is opened again.
    #[arg(long, default_value_t = 1000)]
    slow: usize,
    #[arg(long, value_enum, default_value_t = SlowMode::Headers)]
    slow_mode: SlowMode,
    /// Source address of the slow connections: one address (all come from
    /// it), or an IPv4 block such as 127.0.1.0/24 (spread round robin over
    /// its addresses, leaving out the block's first and last). Every
    /// 127.0.0.0/8 address is the loopback on Linux.
    #[arg(long, default_value = "127.0.1.0/24")]
    slow_source: String,
    /// How often a slow connection sends its next byte (headers, body).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    slow_interval: Duration,
    /// How long a slow connection waits before opening again after the
    /// server closed or refused it.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    reopen_delay: Duration,
    /// The slow connections open (spread over the first half of this) before
    /// the normal load starts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    ramp: Duration,
    /// Normal load: requests per second, each sent at its scheduled time
    /// whether or not earlier ones were answered (open loop).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// How long the normal load runs (the slow connections stop with it).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Body size of each normal request (a POST), in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Most keep-alive connections of the normal load (a request waits for
    /// one, and that wait counts in its latency).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// A normal request not fully answered this long after its scheduled
    /// time is given up (counted as "timeout").
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Source address of the normal load.
    #[arg(long, default_value = "127.0.0.1")]
    source: IpAddr,
    /// Sample this process (the node) once a second: RSS, peak RSS (VmHWM)
    /// and open file descriptors.
    #[arg(long)]
    pid: Option<u32>,
    /// One JSON object on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
}

pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    host: String,
    path: String,
}

pub(crate) async fn target(url: &str) -> anyhow::Result<Target> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("--url {url}"))?;
    anyhow::ensure!(uri.scheme_str() == Some("http"), "--url: only http:// is supported");
    let authority = uri.authority().context("--url has no host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .find(|a| a.is_ipv4())
        .with_context(|| format!("{host}: no IPv4 address"))?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    Ok(Target {
        addr,
        host: authority.as_str().to_string(),
        path,
    })
}

/// The source addresses an --slow-source names.
fn sources(spec: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
    let bad = || anyhow::anyhow!("--slow-source {spec}: give an IPv4 address or block (a.b.c.d/n)");
    let Some((ip, bits)) = spec.split_once('/') else {
        return Ok(vec![spec.parse().map_err(|_| bad())?]);
    };
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let bits: u32 = bits.parse().map_err(|_| bad())?;
    anyhow::ensure!(
        (16..=32).contains(&bits),
        "--slow-source {spec}: the block must be /16 to /32"
    );
    if bits >= 31 {
        return Ok(vec![ip]);
    }
    let base = u32::from(ip) & (u32::MAX << (32 - bits));
    let size = 1u32 << (32 - bits);
    Ok((1..size - 1).map(|i| Ipv4Addr::from(base + i)).collect())
}

/// Raise this process's open-file limit to what it needs, if it is lower
/// (the soft limit is often 1,024).
pub(crate) fn raise_nofile(need: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < need {
            lim.rlim_cur = lim.rlim_max.min(need);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < need {
            eprintln!(
                "warning: the open-file limit is {} and this run needs about {need}",
                lim.rlim_cur
            );
        }
    }
}

fn count(map: &std::sync::Mutex<BTreeMap<String, u64>>, key: impl Into<String>) {
    *map.lock().unwrap().entry(key.into()).or_default() += 1;
}

async fn connect(source: SocketAddr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if to.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(source)?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn io_kind(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "refused".into(),
        ConnectionReset => "reset".into(),
        AddrNotAvailable => "address_not_available".into(),
        AddrInUse => "address_in_use".into(),
        TimedOut => "timeout".into(),
        _ => match e.raw_os_error() {
            Some(libc::EMFILE) | Some(libc::ENFILE) => "too_many_open_files".into(),
            _ => format!("{:?}", e.kind()).to_lowercase(),
        },
    }
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>;

/// The normal load's keep-alive connections: at most `slots` in use or idle.
pub(crate) struct Pool {
    target: SocketAddr,
    source: SocketAddr,
    slots: Arc<tokio::sync::Semaphore>,
    idle: std::sync::Mutex<Vec<Sender>>,
    opened: AtomicU64,
}

impl Pool {
    /// At most `connections` to `target`, each from `source` (port 0: any).
    pub(crate) fn new(target: SocketAddr, source: SocketAddr, connections: usize) -> Pool {
        Pool {
            target,
            source,
            slots: Arc::new(tokio::sync::Semaphore::new(connections)),
            idle: std::sync::Mutex::new(Vec::new()),
            opened: AtomicU64::new(0),
        }
    }

    /// Connections opened so far.
    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// A ready connection (an idle one, or a new one) and the slot it holds.
    async fn get(&self) -> Result<(tokio::sync::OwnedSemaphorePermit, Sender), String> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "pool closed".to_string())?;
        loop {
            let Some(mut s) = self.idle.lock().unwrap().pop() else {
                break;
            };
            if !s.is_closed() && s.ready().await.is_ok() {
                return Ok((permit, s));
            }
        }
        let stream = connect(self.source, self.target)
            .await
            .map_err(|e| format!("connect_{}", io_kind(&e)))?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|_| "handshake".to_string())?;
        tokio::spawn(conn);
        Ok((permit, sender))
    }

    fn put(&self, sender: Sender) {
        if !sender.is_closed() {
            self.idle.lock().unwrap().push(sender);
        }
    }
}

/// One POST of `body` to `target` over one of the pool's keep-alive
/// connections: the answer's status and headers (its body is read and
/// dropped). An error is a short outcome name: "send", "connect_refused" ...
pub(crate) async fn post(
    pool: &Pool,
    target: &Target,
    body: Bytes,
) -> Result<(hyper::StatusCode, hyper::HeaderMap), String> {
    let (permit, mut sender) = pool.get().await?;
    let request = hyper::Request::post(&target.path)
        .header(hyper::header::HOST, &target.host)
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
        .body(http_body_util::Full::new(body))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|_| "send".to_string())?;
    let (parts, body) = response.into_parts();
    use http_body_util::BodyExt;
    body.collect().await.map_err(|_| "response_body".to_string())?;
    pool.put(sender);
    drop(permit);
    Ok((parts.status, parts.headers))
}

/// An open-loop load: `total` requests at `rate` per second from `start`,
/// each spawned at its scheduled time (given to `request`) whether or not
/// earlier ones were answered; `report(sent, scheduled time)` every 5 s.
/// Returns once the last is spawned, with the requests still running.
pub(crate) async fn open_loop<F, R>(
    start: Instant,
    rate: f64,
    total: u64,
    mut request: impl FnMut(Instant) -> F,
    mut report: R,
) -> tokio::task::JoinSet<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
    R: FnMut(u64, Instant),
{
    let mut requests = tokio::task::JoinSet::new();
    let mut last_report = Instant::now();
    for n in 0..total {
        let at = start + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        requests.spawn(request(at));
        while requests.try_join_next().is_some() {}
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            report(n + 1, at);
        }
    }
    requests
}

#[derive(Default)]
struct NormalStats {
    /// Latency (µs, from the scheduled send time) of the requests answered 2xx.
    ok: Option<Histogram<u64>>,
    /// By outcome: "202", "503", "timeout", "connect_refused", "send" ...
    outcomes: BTreeMap<String, u64>,
    in_flight: i64,
}

async fn normal_request(
    pool: Arc<Pool>,
    target: Arc<Target>,
    body: Bytes,
    at: Instant,
    timeout: Duration,
    stats: Arc<std::sync::Mutex<NormalStats>>,
) {
    stats.lock().unwrap().in_flight += 1;
    let exchange = async { post(&pool, &target, body).await.map(|(status, _)| status) };
    let outcome = tokio::time::timeout_at((at + timeout).into(), exchange).await;
    let latency = at.elapsed();
    let mut s = stats.lock().unwrap();
    s.in_flight -= 1;
    let key = match outcome {
        Ok(Ok(status)) => {
            if status.is_success() {
                let h = s.ok.get_or_insert_with(|| Histogram::new(3).expect("histogram"));
                let _ = h.record(latency.as_micros() as u64);
            }
            status.as_u16().to_string()
        }
        Ok(Err(e)) => e,
        Err(_) => "timeout".into(),
    };
    *s.outcomes.entry(key).or_default() += 1;
}

#[derive(Default)]
struct SlowStats {
    open: AtomicI64,
    max_open: AtomicI64,
    attempts: AtomicU64,
    connected: AtomicU64,
    /// The server ended the connection (EOF or reset), by how: "eof",
    /// "answered_408_then_eof", "reset", "write_failed" ...
    closed_by_server: std::sync::Mutex<BTreeMap<String, u64>>,
    /// Connect attempts that failed, by reason ("refused", "timeout" ...).
    connect_failed: std::sync::Mutex<BTreeMap<String, u64>>,
    /// How long the connections the server closed had been open (ms).
    lifetime: std::sync::Mutex<Option<Histogram<u64>>>,
    bytes_sent: AtomicU64,
}

/// The status code at the start of what the server sent, if it is an answer.
fn status_of(answer: &[u8]) -> Option<String> {
    let line = answer.strip_prefix(b"HTTP/1.")?.get(2..5)?;
    std::str::from_utf8(line).ok().map(str::to_string)
}

/// One slow connection, opened again each time it ends, until `deadline`.
#[allow(clippy::too_many_arguments)]
async fn slow_slot(
    source: IpAddr,
    target: Arc<Target>,
    mode: SlowMode,
    interval: Duration,
    reopen_delay: Duration,
    deadline: Instant,
    stats: Arc<SlowStats>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = match mode {
        SlowMode::Headers => format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice-bench-slowloris\r\n",
            target.path, target.host
        ),
        SlowMode::Body => format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n",
            target.path, target.host
        ),
        SlowMode::Idle => String::new(),
    };
    let drip: &[u8] = match mode {
        SlowMode::Headers => b"X-Slow: 1\r\n",
        _ => b"x",
    };
    let at_deadline = || Instant::now() >= deadline;
    while !at_deadline() {
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        let connect_by = (Instant::now() + Duration::from_secs(5)).min(deadline);
        let stream =
            match tokio::time::timeout_at(connect_by.into(), connect(SocketAddr::new(source, 0), target.addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    count(&stats.connect_failed, io_kind(&e));
                    tokio::time::sleep(reopen_delay).await;
                    continue;
                }
                Err(_) => {
                    if !at_deadline() {
                        count(&stats.connect_failed, "timeout");
                    }
                    continue;
                }
            };
        stats.connected.fetch_add(1, Ordering::Relaxed);
        let now_open = stats.open.fetch_add(1, Ordering::Relaxed) + 1;
        stats.max_open.fetch_max(now_open, Ordering::Relaxed);
        let opened = Instant::now();
        let (mut rd, mut wr) = stream.into_split();
        let mut ended: Option<String> = None;
        if !head.is_empty() {
            match wr.write_all(head.as_bytes()).await {
                Ok(()) => {
                    stats.bytes_sent.fetch_add(head.len() as u64, Ordering::Relaxed);
                }
                Err(e) => ended = Some(format!("write_failed_{}", io_kind(&e))),
            }
        }
        let mut tick = tokio::time::interval_at((opened + interval).into(), interval);
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        // From the start of the line each time: a lone "\r\n" would end the headers.
        let mut n = 0;
        while ended.is_none() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => break,
                r = rd.read(&mut buf) => match r {
                    Ok(0) => {
                        ended = Some(match status_of(&answer) {
                            Some(code) => format!("answered_{code}_then_eof"),
                            None => "eof".into(),
                        })
                    }
                    Ok(k) => {
                        if answer.len() < 64 {
                            answer.extend_from_slice(&buf[..k.min(64)]);
                        }
                    }
                    Err(e) => {
                        ended = Some(match status_of(&answer) {
                            Some(code) => format!("answered_{code}_then_{}", io_kind(&e)),
                            None => io_kind(&e),
                        })
                    }
                },
                _ = tick.tick(), if mode != SlowMode::Idle => {
                    let byte = drip[n % drip.len()];
                    n += 1;
                    match wr.write_all(&[byte]).await {
                        Ok(()) => {
                            stats.bytes_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => ended = Some(format!("write_failed_{}", io_kind(&e))),
                    }
                }
            }
        }
        stats.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(how) = ended {
            count(&stats.closed_by_server, how);
            {
                let mut l = stats.lifetime.lock().unwrap();
                let h = l.get_or_insert_with(|| Histogram::new(3).expect("histogram"));
                let _ = h.record(opened.elapsed().as_millis() as u64);
            }
            tokio::time::sleep(reopen_delay).await;
        }
    }
}

/// One sample of the node: RSS and peak RSS (KiB) and open file descriptors.
fn sample_process(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((field("VmRSS:"), field("VmHWM:"), fds))
}

pub(crate) fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 100.0).round() / 100.0
}

pub async fn hostile(args: HostileArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate >= 0.0 && args.rate.is_finite(), "--rate must be 0 or more");
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(!args.slow_interval.is_zero(), "--slow-interval must be above zero");
    let target = Arc::new(target(&args.url).await?);
    let slow_sources = sources(&args.slow_source)?;
    raise_nofile((args.slow + args.connections + 256) as libc::rlim_t);
    if let Some(pid) = args.pid {
        anyhow::ensure!(sample_process(pid).is_some(), "--pid {pid}: cannot read /proc/{pid}");
    }
    let ramp = if args.slow > 0 { args.ramp } else { Duration::ZERO };
    eprintln!(
        "bench hostile: {} POSTs/s of {} bytes for {:?} to {} (up to {} connections, from {}); {} slow connections ({}, from {} address{} in {}, a byte every {:?}) opened over {:?} first",
        args.rate,
        args.size,
        args.duration,
        args.url,
        args.connections,
        args.source,
        args.slow,
        args.slow_mode.name(),
        slow_sources.len(),
        if slow_sources.len() == 1 { "" } else { "es" },
        args.slow_source,
        args.slow_interval,
        ramp,
    );

    let start = Instant::now();
    let load_start = start + ramp;
    let deadline = load_start + args.duration;

    // Slow side.
    let slow_stats = Arc::new(SlowStats::default());
    let mut slow_tasks = tokio::task::JoinSet::new();
    for i in 0..args.slow {
        let source = IpAddr::V4(slow_sources[i % slow_sources.len()]);
        let (target, stats) = (target.clone(), slow_stats.clone());
        let begin = start + ramp.mul_f64(0.5 * i as f64 / args.slow as f64);
        let (mode, interval, reopen) = (args.slow_mode, args.slow_interval, args.reopen_delay);
        slow_tasks.spawn(async move {
            tokio::time::sleep_until(begin.into()).await;
            slow_slot(source, target, mode, interval, reopen, deadline, stats).await
        });
    }

    // Node sampler.
    let normal = Arc::new(std::sync::Mutex::new(NormalStats::default()));
    let sampler = args.pid.map(|pid| {
        let (slow_stats, normal) = (slow_stats.clone(), normal.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some((rss, hwm, fds)) = sample_process(pid) else {
                    break;
                };
                samples.push(serde_json::json!({
                    "t": (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                    "rss_kib": rss,
                    "hwm_kib": hwm,
                    "fds": fds,
                    "slow_open": slow_stats.open.load(Ordering::Relaxed),
                    "normal_in_flight": normal.lock().unwrap().in_flight,
                }));
                if Instant::now() >= deadline {
                    break;
                }
            }
            samples
        })
    });

    // Normal load, open loop.
    let pool = Arc::new(Pool::new(
        target.addr,
        SocketAddr::new(args.source, 0),
        args.connections,
    ));
    let body = Bytes::from((0..args.size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let total = (args.rate * args.duration.as_secs_f64()).round() as u64;
    let mut requests = open_loop(
        load_start,
        args.rate,
        total,
        |at| {
            normal_request(
                pool.clone(),
                target.clone(),
                body.clone(),
                at,
                args.timeout,
                normal.clone(),
            )
        },
        |sent, at| {
            let s = normal.lock().unwrap();
            eprintln!(
                "  {:.0}s: {sent} sent, {} answered 202, {} in flight; slow connections open {}",
                at.duration_since(load_start).as_secs_f64(),
                s.outcomes.get("202").copied().unwrap_or(0),
                s.in_flight,
                slow_stats.open.load(Ordering::Relaxed)
            );
        },
    )
    .await;
    let sent_secs = load_start.elapsed().as_secs_f64();
    // Just before the slow connections stop themselves at the deadline.
    tokio::time::sleep_until((deadline - Duration::from_millis(100).min(args.duration)).into()).await;
    let slow_open_at_end = slow_stats.open.load(Ordering::Relaxed);
    // Every slow task ends at the deadline (a connect in progress by 5 s
    // after it); every request by its timeout.
    while slow_tasks.join_next().await.is_some() {}
    while requests.join_next().await.is_some() {}
    let samples = match sampler {
        Some(s) => s.await?,
        None => Vec::new(),
    };

    // Summary.
    let normal = std::mem::take(&mut *normal.lock().unwrap());
    let hist = normal.ok.unwrap_or_else(|| Histogram::new(3).expect("histogram"));
    let ok = hist.len();
    let errors: u64 = normal
        .outcomes
        .iter()
        .filter(|(k, _)| !k.starts_with('2'))
        .map(|(_, v)| v)
        .sum();
    let q = |p: f64| {
        if ok == 0 {
            None
        } else {
            Some(ms(hist.value_at_quantile(p)))
        }
    };
    let (p50, p90, p99, max) = (q(0.50), q(0.90), q(0.99), (ok > 0).then(|| ms(hist.max())));
    let closed: BTreeMap<String, u64> = slow_stats.closed_by_server.lock().unwrap().clone();
    let connect_failed = slow_stats.connect_failed.lock().unwrap().clone();
    let lifetime = slow_stats.lifetime.lock().unwrap().clone();
    let attempts = slow_stats.attempts.load(Ordering::Relaxed);
    let max_of = |key: &str| samples.iter().filter_map(|s| s[key].as_u64()).max();
    let node = args.pid.map(|pid| {
        let last = samples.last();
        serde_json::json!({
            "pid": pid,
            "samples": samples.len(),
            "max_rss_kib": max_of("rss_kib"),
            "hwm_kib": last.map(|s| s["hwm_kib"].clone()),
            "max_fds": max_of("fds"),
            "fds_at_end": last.map(|s| s["fds"].clone()),
            "series": samples,
        })
    });
    let json = serde_json::json!({
        "bench": "hostile",
        "url": args.url,
        "normal": {
            "rate": args.rate,
            "duration_s": args.duration.as_secs_f64(),
            "size": args.size,
            "connections_max": args.connections,
            "sent": total,
            "ok": ok,
            "errors": errors,
            "outcomes": normal.outcomes,
            "p50_ms": p50,
            "p90_ms": p90,
            "p99_ms": p99,
            "max_ms": max,
            "sent_per_s": total as f64 / sent_secs.max(1e-9),
            "ok_per_s": ok as f64 / args.duration.as_secs_f64().max(1e-9),
            "connections_opened": pool.opened.load(Ordering::Relaxed),
        },
        "slow": {
            "connections": args.slow,
            "mode": args.slow_mode.name(),
            "source": args.slow_source,
            "source_addresses": slow_sources.len(),
            "interval_s": args.slow_interval.as_secs_f64(),
            "open_at_end": slow_open_at_end,
            "max_open": slow_stats.max_open.load(Ordering::Relaxed),
            "connect_attempts": attempts,
            "connected": slow_stats.connected.load(Ordering::Relaxed),
            "reopens": attempts.saturating_sub(args.slow as u64),
            "closed_by_server": closed.values().sum::<u64>(),
            "closed_how": closed,
            "connect_failed": connect_failed,
            "lifetime_of_closed_s": lifetime.as_ref().map(|h| serde_json::json!({
                "min": h.min() as f64 / 1000.0,
                "p50": h.value_at_quantile(0.5) as f64 / 1000.0,
                "max": h.max() as f64 / 1000.0,
            })),
            "bytes_sent": slow_stats.bytes_sent.load(Ordering::Relaxed),
        },
        "node": node,
    });

    let opt = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
    let map = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        }
    };
    let mut text = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        text,
        "normal   sent {total}, answered 2xx {ok}, errors {errors} (outcomes: {}), {} connections opened",
        map(&normal.outcomes),
        pool.opened.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        text,
        "         latency from the scheduled send, ms: p50 {} p90 {} p99 {} max {}; {:.1} answered 2xx/s",
        opt(p50),
        opt(p90),
        opt(p99),
        opt(max),
        ok as f64 / args.duration.as_secs_f64().max(1e-9)
    );
    let _ = writeln!(
        text,
        "slow     {} {}: open at the end {slow_open_at_end} (most {}), connect attempts {attempts} (reopens {}), closed by the server {} ({}), connect failed: {}",
        args.slow,
        args.slow_mode.name(),
        slow_stats.max_open.load(Ordering::Relaxed),
        attempts.saturating_sub(args.slow as u64),
        closed.values().sum::<u64>(),
        map(&closed),
        map(&connect_failed),
    );
    if let Some(h) = &lifetime {
        let _ = writeln!(
            text,
            "         closed ones had lived {:.1}..{:.1} s (p50 {:.1} s)",
            h.min() as f64 / 1000.0,
            h.max() as f64 / 1000.0,
            h.value_at_quantile(0.5) as f64 / 1000.0
        );
    }
    if let Some(n) = &json["node"].as_object() {
        let kib = |v: &serde_json::Value| {
            v.as_u64()
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            text,
            "node     pid {}: RSS max {} (VmHWM {}), open fds max {} (at the end {})",
            n["pid"],
            kib(&n["max_rss_kib"]),
            kib(&n["hwm_kib"]),
            n["max_fds"],
            n["fds_at_end"]
        );
    }
    if args.json {
        eprint!("{text}");
        outln!("{json}");
    } else {
        out!("{text}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_sources() {
        let block = sources("127.0.1.0/24").unwrap();
        assert_eq!(block.len(), 254);
        assert_eq!(block[0], Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(block[253], Ipv4Addr::new(127, 0, 1, 254));
        assert_eq!(sources("127.0.1.77/24").unwrap(), block);
        assert_eq!(sources("127.0.1.1").unwrap(), vec![Ipv4Addr::new(127, 0, 1, 1)]);
        assert_eq!(sources("127.0.1.9/32").unwrap(), vec![Ipv4Addr::new(127, 0, 1, 9)]);
        assert_eq!(sources("127.2.0.0/16").unwrap().len(), 65534);
        assert!(sources("127.0.1.0/8").is_err());
        assert!(sources("localhost").is_err());
    }

    #[test]
    fn answer_status() {
        assert_eq!(status_of(b"HTTP/1.1 408 Request Timeout\r\n").as_deref(), Some("408"));
        assert_eq!(status_of(b"HTTP/1.0 400 ").as_deref(), Some("400"));
        assert_eq!(status_of(b"HTTP/1.1 4"), None);
        assert_eq!(status_of(b"garbage"), None);
    }
}
