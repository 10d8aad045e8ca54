//! `sluice bench messaging`: durable publish -> route -> lease -> ack on an
//! embedded box in a fresh temporary directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use sluice_content::{Part, WriteOptions, write_part};
use sluice_model::{Context, Filter, MessageId};
use sluice_msgbox::{MessageBox, NewMessage, Subscription, SystemClock};
use sluice_msgbox_sqlite::{Options, SqliteBox};
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
    let opts = Options {
        sync: !args.no_sync,
        tracking: !args.no_tracking,
        ..Options::default()
    };
    let mbox = SqliteBox::open(tmp.path(), Arc::new(SystemClock), opts)?;
    let b: Arc<dyn MessageBox> = Arc::new(mbox.clone());
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
    let stats_before = mbox.writer_stats();
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
    let stats = mbox.writer_stats();
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
    println!("messages        {}", args.messages);
    println!("elapsed         {secs:.2} s (publishing done at {publish_secs:.2} s)");
    println!("throughput      {rate:.0} messages/s");
    println!("{what} p50  {p50:.2} ms");
    println!("{what} p99  {p99:.2} ms");
    println!(
        "synced commits  {commits} ({:.1} messages per commit)",
        args.messages as f64 / commits.max(1) as f64
    );
    println!("box on disk     {:.1} MiB", db_bytes as f64 / 1048576.0);
    println!("peak RSS        {rss_mib:.1} MiB");
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
    println!("{json}");
    Ok(())
}
