//! The peers of `sluice bench messaging`, measured the same way: N durable
//! messages of SIZE bytes, one publisher and one consumer running at once,
//! every message published (the broker confirms it) -> consumed -> acked;
//! messages/s from the first publish until the broker has taken every ack.
//!
//! - `rabbitmq`: lapin, a durable classic queue (made for the run, deleted
//!   after), persistent messages (delivery mode 2), publisher confirms with at
//!   most `--window` unconfirmed, the consumer's prefetch `--window`, one
//!   `basic.ack` per message. The end: the consumer acked N, then its channel
//!   is closed (the broker handles the acks before the close) and the queue
//!   must hold nothing (an unacked message would be requeued by the close).
//! - `nats`: async-nats, a JetStream stream with file storage and work-queue
//!   retention (an acked message is removed), made for the run and deleted
//!   after, publish acks with at most `--window` outstanding, a durable pull
//!   consumer with explicit acks (`max_ack_pending` = `--window`). The end:
//!   the consumer acked N, then the stream must hold no message (polled).
//!   File storage is the server's: nats-server fsyncs on its own interval
//!   (2 minutes by default), not per message.
//!
//! Prints one line per figure and a last line of JSON. Peak RSS is this
//! process's own (VmHWM from /proc/self/status); `--server-pid` also samples
//! the broker's resident memory (VmRSS) every 100 ms and reports the highest.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Broker {
    Rabbitmq,
    Nats,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Rabbitmq => "rabbitmq",
            Broker::Nats => "nats",
        }
    }
}

#[derive(clap::Parser, Debug)]
#[command(about = "Durable publish -> consume -> ack through RabbitMQ or NATS JetStream")]
struct Args {
    /// The broker to measure.
    #[arg(value_enum)]
    broker: Broker,
    /// Messages to publish.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Body size of each message, in bytes (at least 8: the publish time is in the first 8).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Publishes awaiting their confirmation at once; also the consumer's prefetch (RabbitMQ) or
    /// max_ack_pending (NATS).
    #[arg(long, default_value_t = 1000)]
    window: u16,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The broker's process: its VmRSS is sampled every 100 ms during the run.
    #[arg(long)]
    server_pid: Option<u32>,
    /// How long the end may take to show (the queue or stream empty) after the last ack.
    #[arg(long, default_value = "30s", value_parser = parse_secs)]
    settle_timeout: Duration,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let n = s.strip_suffix('s').unwrap_or(s);
    n.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s}: give seconds, e.g. 30s"))
}

/// What one run measured.
struct Run {
    /// The broker's version, as it reported it.
    server: String,
    /// From the first publish until the broker has taken every ack.
    seconds: f64,
    /// From the first publish until the last confirmation.
    publish_seconds: f64,
    /// Publish (just before it was sent) -> consumed, per message, in µs.
    latencies_us: Vec<u64>,
}

fn status_field(pid: &str, name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The body: the publish time (µs since `start`) in the first 8 bytes, then filler.
fn body(template: &[u8], start: Instant) -> Vec<u8> {
    let mut b = template.to_vec();
    b[..8].copy_from_slice(&(start.elapsed().as_micros() as u64).to_le_bytes());
    b
}

/// µs between a body's publish time and now.
fn latency_us(data: &[u8], start: Instant) -> u64 {
    let mut t0 = [0u8; 8];
    t0.copy_from_slice(&data[..8]);
    (start.elapsed().as_micros() as u64).saturating_sub(u64::from_le_bytes(t0))
}

async fn rabbitmq(args: &Args, template: &[u8]) -> anyhow::Result<Run> {
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    let conn = Connection::connect(&args.amqp_url, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to RabbitMQ at {}", redact(&args.amqp_url)))?;
    // lapin keeps the server's properties to itself: bench/peers.sh asks rabbitmqctl.
    let server = "RabbitMQ".to_string();
    let queue = format!("sluice-bench-peers-{}", std::process::id());
    let publish = conn.create_channel().await.context("opening a channel")?;
    let consume = conn.create_channel().await.context("opening a channel")?;
    let declare = |options| publish.queue_declare(queue.as_str().into(), options, FieldTable::default());
    declare(QueueDeclareOptions {
        durable: true,
        ..Default::default()
    })
    .await
    .with_context(|| format!("declaring the durable queue {queue}"))?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("turning publisher confirms on")?;
    consume
        .basic_qos(args.window, BasicQosOptions::default())
        .await
        .context("setting the consumer's prefetch")?;
    let mut consumer = consume
        .basic_consume(
            queue.as_str().into(),
            "sluice-bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("starting the consumer")?;

    let n = args.messages;
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(n as usize);
        while (latencies.len() as u64) < n {
            let d = consumer
                .next()
                .await
                .context("the consumer ended before every message came")?
                .context("consuming")?;
            latencies.push(latency_us(&d.data, start));
            d.ack(BasicAckOptions::default()).await.context("acking")?;
        }
        anyhow::Ok(latencies)
    });
    let properties = BasicProperties::default().with_delivery_mode(2);
    let mut unconfirmed = FuturesUnordered::new();
    let confirmed = |c: lapin::Result<lapin::Confirmation>| {
        let c = c.context("waiting for a publisher confirm")?;
        anyhow::ensure!(c.is_ack(), "the broker refused a message (nack)");
        anyhow::Ok(())
    };
    for _ in 0..n {
        if unconfirmed.len() >= args.window as usize {
            confirmed(unconfirmed.next().await.expect("the set is not empty"))?;
        }
        let confirm = publish
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body(template, start),
                properties.clone(),
            )
            .await
            .context("publishing")?;
        unconfirmed.push(confirm);
    }
    while let Some(c) = unconfirmed.next().await {
        confirmed(c)?;
    }
    let publish_seconds = start.elapsed().as_secs_f64();
    let latencies_us = consumer.await.context("the consumer task")??;
    // The broker handles the channel's acks before its close; a message left
    // unacked would go back to the queue.
    consume
        .close(200, "done".into())
        .await
        .context("closing the consumer's channel")?;
    let seconds = start.elapsed().as_secs_f64();
    let left = declare(QueueDeclareOptions {
        passive: true,
        ..Default::default()
    })
    .await
    .context("checking the queue")?
    .message_count();
    publish
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .context("deleting the queue")?;
    let _ = conn.close(200, "done".into()).await;
    anyhow::ensure!(left == 0, "{left} messages are still in the queue after every ack");
    Ok(Run {
        server,
        seconds,
        publish_seconds,
        latencies_us,
    })
}

async fn nats(args: &Args, template: &[u8]) -> anyhow::Result<Run> {
    use async_nats::jetstream::{self, stream};

    let client = async_nats::connect(args.nats_url.as_str())
        .await
        .with_context(|| format!("connecting to NATS at {}", redact(&args.nats_url)))?;
    let server = format!("nats-server {}", client.server_info().version);
    let js = jetstream::new(client.clone());
    let name = format!("SLUICE_BENCH_PEERS_{}", std::process::id());
    let subject = format!("sluice-bench-peers.{}", std::process::id());
    let stream = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the JetStream stream {name} (is JetStream on?)"))?;
    let result = nats_run(args, template, &js, stream, &subject).await;
    let _ = js.delete_stream(&name).await;
    let (seconds, publish_seconds, latencies_us) = result?;
    Ok(Run {
        server,
        seconds,
        publish_seconds,
        latencies_us,
    })
}

async fn nats_run(
    args: &Args,
    template: &[u8],
    js: &async_nats::jetstream::Context,
    mut stream: async_nats::jetstream::stream::Stream,
    subject: &str,
) -> anyhow::Result<(f64, f64, Vec<u64>)> {
    use async_nats::jetstream::consumer::{self, AckPolicy};
    use async_nats::jetstream::context::PublishAckFuture;
    use std::future::IntoFuture;

    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("sluice-bench".into()),
            ack_policy: AckPolicy::Explicit,
            max_ack_pending: args.window as i64,
            ..Default::default()
        })
        .await
        .context("creating the pull consumer")?;
    let mut messages = consumer.messages().await.context("starting to pull")?;
    let n = args.messages;
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(n as usize);
        while (latencies.len() as u64) < n {
            let m = messages
                .next()
                .await
                .context("the consumer ended before every message came")?
                .map_err(|e| anyhow::anyhow!("consuming: {e}"))?;
            latencies.push(latency_us(&m.payload, start));
            m.ack().await.map_err(|e| anyhow::anyhow!("acking: {e}"))?;
        }
        anyhow::Ok(latencies)
    });
    let mut unconfirmed: FuturesUnordered<<PublishAckFuture as IntoFuture>::IntoFuture> = FuturesUnordered::new();
    for _ in 0..n {
        if unconfirmed.len() >= args.window as usize {
            unconfirmed
                .next()
                .await
                .expect("the set is not empty")
                .context("waiting for a publish ack")?;
        }
        let ack = js
            .publish(subject.to_string(), body(template, start).into())
            .await
            .context("publishing")?;
        unconfirmed.push(ack.into_future());
    }
    while let Some(a) = unconfirmed.next().await {
        a.context("waiting for a publish ack")?;
    }
    let publish_seconds = start.elapsed().as_secs_f64();
    let latencies = consumer.await.context("the consumer task")??;
    // Acks are sent without waiting for an answer: the end is when the
    // stream (work-queue retention) has removed every message.
    let deadline = Instant::now() + args.settle_timeout;
    loop {
        let left = stream
            .info()
            .await
            .context("reading the stream's state")?
            .state
            .messages;
        if left == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{left} messages are still in the stream {:?} after every ack",
            args.settle_timeout
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok((start.elapsed().as_secs_f64(), publish_seconds, latencies))
}

/// A URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    anyhow::ensure!(args.messages > 0, "--messages must be at least 1");
    anyhow::ensure!(args.size >= 8, "--size must be at least 8");
    anyhow::ensure!(args.window > 0, "--window must be at least 1");
    let template: Vec<u8> = (0..args.size).map(|i| (i % 251) as u8).collect();

    // The broker's memory, sampled while it works.
    let sampler = args.server_pid.map(|pid| {
        let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let pid = pid.to_string();
            let mut max = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = tick.tick() => max = max.max(status_field(&pid, "VmRSS:").unwrap_or(0)),
                    _ = &mut stop => break,
                }
            }
            max
        });
        (stop_tx, task)
    });

    eprintln!(
        "peers {}: {} durable messages of {} bytes, one publisher (window {}) and one consumer at once",
        args.broker.name(),
        args.messages,
        args.size,
        args.window
    );
    let run = match args.broker {
        Broker::Rabbitmq => rabbitmq(&args, &template).await?,
        Broker::Nats => nats(&args, &template).await?,
    };
    let server_rss_kib = match sampler {
        Some((stop, task)) => {
            let _ = stop.send(());
            Some(task.await?)
        }
        None => None,
    };
    let mut lat = run.latencies_us;
    lat.sort_unstable();
    let rate = args.messages as f64 / run.seconds;
    let (p50, p99) = (quantile_ms(&lat, 0.50), quantile_ms(&lat, 0.99));
    let rss_kib = status_field("self", "VmHWM:").unwrap_or(0);
    println!("broker            {} ({})", args.broker.name(), run.server);
    println!("messages          {} of {} bytes", args.messages, args.size);
    println!(
        "elapsed           {:.2} s (publishing confirmed at {:.2} s)",
        run.seconds, run.publish_seconds
    );
    println!("throughput        {rate:.0} messages/s (publish -> consume -> ack, end to end)");
    println!("publish-to-consume p50 {p50:.2} ms, p99 {p99:.2} ms");
    println!("peak RSS (client) {:.1} MiB (VmHWM)", rss_kib as f64 / 1024.0);
    if let Some(k) = server_rss_kib {
        println!("broker RSS        {:.1} MiB (highest VmRSS sampled)", k as f64 / 1024.0);
    }
    let json = serde_json::json!({
        "bench": "peers",
        "broker": args.broker.name(),
        "server": run.server,
        "messages": args.messages,
        "size": args.size,
        "window": args.window,
        "seconds": run.seconds,
        "publish_seconds": run.publish_seconds,
        "messages_per_sec": rate,
        "publish_to_consume_p50_ms": p50,
        "publish_to_consume_p99_ms": p99,
        "peak_rss_kib": rss_kib,
        "server_rss_kib": server_rss_kib,
    });
    println!("{json}");
    Ok(())
}
