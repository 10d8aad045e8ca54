//! The host: a node (`sluice serve`) that opens the message box and runs the
//! configured receive locations and send ports against it.
//!
//! ```text
//! Source (adapter) ──submit──> LocationPublisher ──pipeline──> write parts ──> MessageBox::publish
//!                                                                                  │ notify
//! MessageBox::lease <── SendPortRunner ──> read parts ──> send pipeline ──> Transmitter
//!        ack / nack (retry-at) / suspend <──────────────────────────────────────────┘
//! ```
//!
//! Architecture Invariant: only the message box commits. `LocationPublisher::submit`
//! returns `Ok` to a source only after `publish` returned, and a send port acks
//! only after its transmitter reported delivery.
//!
//! Architecture Invariant: every queue is bounded. A receive location takes at
//! most `concurrency` files at once; a send port leases at most `concurrency`
//! entries at once; waiting messages wait in the box on disk, not in memory.
//!
//! Architecture Invariant: work is in flight only once its host's
//! [`Throttle`](throttle::Throttle) admitted it (a receive location before it
//! takes a file, a send port before it delivers a leased message); a
//! throttled host takes and leases nothing new.

pub mod config;
mod message_log;
pub mod metrics;
mod publisher;
mod send_port;
pub mod status;
pub mod throttle;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_msgbox::{MessageBox, Subscription, SystemClock};
use tokio::sync::Notify;
use tokio::task::JoinSet;
pub use tokio_util::sync::CancellationToken;

pub use crate::config::Config;
use crate::metrics::Metrics;
use crate::publisher::LocationPublisher;
use crate::send_port::SendPortRunner;
use crate::status::{NodeStatus, host_status};
use crate::throttle::Throttle;

/// How often the node samples its resident memory for the memory marks.
const RSS_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("data directory {path}: {message}")]
    DataDir { path: PathBuf, message: String },
    #[error("message box: {0}")]
    Box(#[from] sluice_msgbox::BoxError),
    #[error("message box: {0}")]
    Store(#[from] sluice_store::StoreError),
    #[error("{what}: {message}")]
    Start { what: String, message: String },
}

/// Wakes a send port when a message is queued for it (it also polls).
#[derive(Default)]
pub(crate) struct Wakers {
    by_subscriber: HashMap<String, Arc<Notify>>,
}

impl Wakers {
    pub(crate) fn wake(&self, subscriber: &str) {
        if let Some(n) = self.by_subscriber.get(subscriber) {
            n.notify_one();
        }
    }
    /// The notifier of `subscriber` (a fresh one, never woken, if unknown).
    pub(crate) fn of(&self, subscriber: &str) -> Arc<Notify> {
        self.by_subscriber.get(subscriber).cloned().unwrap_or_default()
    }
}

/// Holds the data directory's lock file for as long as the node runs, so two
/// nodes cannot share one embedded box.
struct DataDirLock {
    _file: std::fs::File,
}

fn lock_data_dir(dir: &Path) -> Result<DataDirLock, HostError> {
    let err = |message: String| HostError::DataDir {
        path: dir.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create it: {e}")))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("sluice.lock"))
        .map_err(|e| err(format!("cannot open the lock file: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(err(
            "another `sluice serve` is using it (the lock file sluice.lock is held)".into(),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(err(format!("cannot lock it: {e}"))),
    }
}

/// A receive location's way into its host's throttle, within its share.
struct HostAdmission(throttle::Lane);

impl sluice_adapters::Held for throttle::Permit {
    fn charge(&self, bytes: u64) {
        throttle::Permit::charge(self, bytes);
    }
}

#[async_trait]
impl sluice_adapters::Admission for HostAdmission {
    async fn admit(&self, bytes: u64) -> sluice_adapters::Admitted {
        sluice_adapters::Admitted::new(self.0.admit(bytes).await)
    }
}

/// Run a node until `shutdown` is cancelled; then stop intake, finish the
/// work in flight, close the box and return.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), HostError> {
    let _lock = lock_data_dir(&config.data_dir)?;
    message_log::set(config.log_messages);
    // A server must not run out of file descriptors at 1024; HTTP locations
    // keep a reserve of them for the box and the other adapters.
    if let Some(limit) = sluice_adapters::support::raise_fd_limit() {
        tracing::debug!(open_files_limit = limit, "file descriptor limit");
    }
    // Bind the metrics endpoint first: a taken address stops the start
    // before anything has been touched.
    let endpoint = match &config.metrics {
        Some(m) => Some(metrics::Endpoint::bind(m.address).await.map_err(|e| HostError::Start {
            what: format!("metrics.address {}", m.address),
            message: format!("cannot listen there: {e}"),
        })?),
        None => None,
    };
    let metrics = Metrics::new();
    let throttles: HashMap<String, Arc<Throttle>> = config
        .hosts
        .iter()
        .map(|(name, hc)| {
            let limits = hc.limits().map_err(|(key, message)| HostError::Start {
                what: format!("hosts.{name}.{key}"),
                message,
            })?;
            Ok((name.clone(), Throttle::new(name, limits, Some(metrics.host(name)))))
        })
        .collect::<Result<_, HostError>>()?;
    let throttle_of = |what: &str, host: &str| {
        throttles.get(host).cloned().ok_or_else(|| HostError::Start {
            what: what.to_string(),
            message: format!("no host `{host}` is configured"),
        })
    };
    let node_id = config.node_id().map_err(|e| HostError::DataDir {
        path: config.data_dir.clone(),
        message: format!("cannot read or keep the node id: {e}"),
    })?;
    let store = config.store_url();
    let mbox = sluice_store::open(&store, sluice_store::Role::Node, &config.box_options(&node_id))?;
    // What this node's earlier run (killed, crashed) left is ours to take
    // back now: its leases, its unfinished interchanges and content. Other
    // nodes sharing the box keep theirs.
    let recovered = mbox.recover().await?;
    if recovered.leases > 0 {
        tracing::info!(
            entries = recovered.leases,
            "took back leases held when the node last stopped"
        );
    }
    if recovered.staged > 0 {
        tracing::info!(
            messages = recovered.staged,
            "discarded interchanges that were not committed before the last stop"
        );
    }
    if recovered.contents > 0 {
        tracing::info!(
            contents = recovered.contents,
            "discarded content that was never published before the last stop"
        );
    }
    sync_subscriptions(&config, &*mbox).await?;

    let mut wakers = Wakers::default();
    for name in config.send_ports.keys().cloned().chain(reply_subscribers(&config)) {
        wakers.by_subscriber.insert(name, Arc::new(Notify::new()));
    }
    let wakers = Arc::new(wakers);

    // Receive locations are built and recover what the last run left
    // half-done before anything starts: no send port may deliver (and
    // delete) a message whose source is still being sorted out.
    let mut sources = Vec::new();
    let mut reply_runners = Vec::new();
    let mut abandoned = Vec::new();
    for (port, pc) in &config.receive_ports {
        for (name, lc) in &pc.locations {
            if !lc.enabled {
                tracing::info!(receive_location = %name, "receive location is disabled");
                continue;
            }
            let mut source = lc.adapter.build().map_err(|e| HostError::Start {
                what: format!("receive location `{name}`"),
                message: e.to_string(),
            })?;
            // Listen (or whatever the adapter must take) now: a taken
            // address stops the start, naming the location.
            source.bind().await.map_err(|e| HostError::Start {
                what: format!("receive location `{name}`"),
                message: e.to_string(),
            })?;
            let pipeline = lc.pipeline.build().map_err(|message| HostError::Start {
                what: format!("receive location `{name}` pipeline"),
                message,
            })?;
            let publisher = Arc::new(LocationPublisher::new(
                name,
                pipeline,
                mbox.clone(),
                wakers.clone(),
                metrics.clone(),
            ));
            let throttle = throttle_of(&format!("receive location `{name}`"), &lc.host)?;
            let cx = sluice_adapters::ReceiveContext {
                port: port.clone(),
                location: name.clone(),
                publisher: publisher.clone(),
                admission: Arc::new(HostAdmission(throttle.lane())),
                shutdown: shutdown.clone(),
            };
            if let Some(keep) = lc.adapter.abandoned_keep() {
                abandoned.push((sluice_adapters::reply_subscriber(name), keep));
            }
            if let Some(replies) = source.replies(name) {
                let subscriber = sluice_adapters::reply_subscriber(name);
                reply_runners.push((
                    subscriber.clone(),
                    SendPortRunner::replies(
                        &subscriber,
                        replies,
                        mbox.clone(),
                        wakers.clone(),
                        throttle,
                        metrics.clone(),
                    ),
                ));
            }
            source.recover(&cx).await;
            let released = publisher.release_leftovers().await?;
            if released > 0 {
                tracing::info!(receive_location = %name, messages = released,
                    "released messages whose source was already settled when the node last stopped");
            }
            sources.push((source, cx, lc.adapter.kind()));
        }
    }

    // Node services: RSS sampling (memory marks, metrics), status.json, metrics endpoint.
    let services_stop = CancellationToken::new();
    let mut services = JoinSet::new();
    services.spawn(sample_rss(
        metrics.clone(),
        throttles.values().cloned().collect(),
        services_stop.clone(),
    ));
    let metrics_address = endpoint.as_ref().map(|e| e.address().to_string());
    services.spawn(report_status(
        config.data_dir.clone(),
        throttles.clone(),
        metrics_address.clone(),
        services_stop.clone(),
    ));
    if config.tracking.enabled {
        services.spawn(purge_tracking(
            mbox.clone(),
            config.tracking.keep,
            services_stop.clone(),
        ));
    }
    for (subscriber, keep) in abandoned {
        services.spawn(purge_abandoned(mbox.clone(), subscriber, keep, services_stop.clone()));
    }
    if let Some(endpoint) = endpoint {
        services.spawn(endpoint.serve(metrics.clone(), mbox.clone(), services_stop.clone()));
    }

    let mut task_names: HashMap<tokio::task::Id, String> = HashMap::new();
    // Send ports next, so that they are ready when messages arrive.
    let send_stop = CancellationToken::new();
    let mut senders = JoinSet::new();
    for (name, sp) in &config.send_ports {
        if !sp.enabled {
            tracing::info!(send_port = %name, "send port is stopped; its messages wait in the box");
            continue;
        }
        let what = format!("send port `{name}`");
        let runner = SendPortRunner::new(
            name,
            sp,
            mbox.clone(),
            wakers.clone(),
            throttle_of(&what, &sp.host)?,
            metrics.clone(),
        )
        .map_err(|message| HostError::Start {
            what: what.clone(),
            message,
        })?;
        let handle = senders.spawn(runner.run(send_stop.clone()));
        task_names.insert(handle.id(), format!("send port `{name}`"));
    }
    for (subscriber, runner) in reply_runners {
        let handle = senders.spawn(runner.run(send_stop.clone()));
        task_names.insert(handle.id(), format!("responses to `{subscriber}`"));
    }

    let mut receivers = JoinSet::new();
    for (source, cx, kind) in sources {
        let location = cx.location.clone();
        tracing::info!(receive_port = %cx.port, receive_location = %location, adapter = kind, "receive location started");
        let what = format!("receive location `{location}`");
        let handle = receivers.spawn(async move {
            if let Err(e) = source.run(cx).await {
                tracing::error!(receive_location = %location, error = %e, "receive location stopped with an error");
            }
        });
        task_names.insert(handle.id(), what);
    }
    tracing::info!(data_dir = %config.data_dir.display(), store = %store, node = %node_id, metrics = metrics_address.as_deref().unwrap_or("off"),
        "node running");

    // Until asked to stop, watch the tasks: one that ends now has failed
    // (a panic); say so loudly rather than let a port go quiet.
    loop {
        tokio::select! {
            // Checked first: a task that ends because the node stops has not failed.
            biased;
            _ = shutdown.cancelled() => break,
            Some(ended) = senders.join_next_with_id() => report_early_end(&task_names, ended),
            Some(ended) = receivers.join_next_with_id() => report_early_end(&task_names, ended),
        }
    }
    tracing::info!("stopping: no new intake; finishing work in flight");
    while receivers.join_next().await.is_some() {}
    send_stop.cancel();
    while senders.join_next().await.is_some() {}
    services_stop.cancel();
    while services.join_next().await.is_some() {}
    // A node that stopped cleanly leaves no report behind (an old one would
    // look like a node that is stuck).
    if let Err(e) = std::fs::remove_file(status::status_path(&config.data_dir))
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, "cannot remove status.json");
    }
    mbox.close().await?;
    tracing::info!("stopped");
    Ok(())
}

/// A periodic tick that ends when `stop` is cancelled.
struct Ticker {
    interval: tokio::time::Interval,
    stop: CancellationToken,
}

impl Ticker {
    fn new(period: Duration, stop: CancellationToken) -> Ticker {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticker { interval, stop }
    }

    /// Wait for the next tick; `false` once stopped.
    async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.interval.tick() => true,
            _ = self.stop.cancelled() => false,
        }
    }
}

/// Sample the process's RSS for the hosts' memory marks and the metrics.
async fn sample_rss(metrics: Arc<Metrics>, throttles: Vec<Arc<Throttle>>, stop: CancellationToken) {
    let mut ticks = Ticker::new(RSS_EVERY, stop);
    let mut warned = false;
    while ticks.next().await {
        match throttle::current_rss() {
            Some(rss) => {
                metrics.set_rss(rss);
                for t in &throttles {
                    t.set_rss(rss);
                }
            }
            None if !warned => {
                tracing::warn!(
                    "cannot read the process's resident memory (/proc/self/statm); memory marks are not enforced"
                );
                warned = true;
            }
            None => {}
        }
    }
}

/// Delete tracking events older than `keep`, at start and then every
/// quarter of `keep` (at most every 10 minutes), a bounded batch at a time.
async fn purge_tracking(mbox: Arc<dyn MessageBox>, keep: Duration, stop: CancellationToken) {
    const BATCH: usize = 10_000;
    let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut ticks = Ticker::new(every, stop.clone());
    while ticks.next().await {
        let before = now_ms() - keep.as_millis().min(i64::MAX as u128) as i64;
        let mut purged = 0;
        loop {
            match mbox.purge_tracking(before, BATCH).await {
                Ok(n) => {
                    purged += n;
                    if (n as usize) < BATCH || stop.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not purge old tracking events; trying again later");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(events = purged, keep = ?keep, "purged old tracking events");
        }
    }
}

/// Terminate the responses that waited suspended at a request-response
/// location's reply subscriber (`reply:<location>`: their client timed out
/// or went away) for longer than `keep`, so they do not pile up.
async fn purge_abandoned(mbox: Arc<dyn MessageBox>, subscriber: String, keep: Duration, stop: CancellationToken) {
    const PAGE: usize = 1000;
    let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut ticks = Ticker::new(every, stop.clone());
    while ticks.next().await {
        let query = sluice_msgbox::SuspendedQuery {
            port: Some(subscriber.clone()),
            until: Some(now_ms() - keep.as_millis().min(i64::MAX as u128) as i64),
            ..Default::default()
        };
        let mut terminated = 0u64;
        'pages: loop {
            let page = match mbox.list_suspended(&query, None, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(subscriber = %subscriber, error = %e,
                        "could not list abandoned responses; trying again later");
                    break;
                }
            };
            for entry in &page {
                match mbox.terminate(entry.id).await {
                    Ok(()) | Err(sluice_msgbox::BoxError::NoSuchSuspended(_)) => terminated += 1,
                    Err(e) => {
                        tracing::warn!(subscriber = %subscriber, suspended_id = entry.id, error = %e,
                            "could not terminate an abandoned response; trying again later");
                        break 'pages;
                    }
                }
                if stop.is_cancelled() {
                    break 'pages;
                }
            }
            if page.len() < PAGE {
                break;
            }
        }
        if terminated > 0 {
            tracing::info!(subscriber = %subscriber, responses = terminated, keep = ?keep,
                "terminated responses abandoned by their clients");
        }
    }
}

/// Write `status.json` every [`status::STATUS_EVERY`] for `sluice status`.
async fn report_status(
    data_dir: PathBuf,
    throttles: HashMap<String, Arc<Throttle>>,
    metrics_address: Option<String>,
    stop: CancellationToken,
) {
    let mut ticks = Ticker::new(status::STATUS_EVERY, stop);
    let mut failing = false;
    while ticks.next().await {
        let report = NodeStatus {
            pid: std::process::id(),
            written_at_ms: now_ms(),
            rss: throttle::current_rss().unwrap_or(0),
            metrics_address: metrics_address.clone(),
            hosts: throttles
                .iter()
                .map(|(name, t)| (name.clone(), host_status(t)))
                .collect(),
        };
        match status::write(&data_dir, &report).await {
            Ok(()) if failing => {
                tracing::info!("status.json is written again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cannot write status.json; `sluice status` will not show the throttle state");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

fn now_ms() -> i64 {
    use sluice_msgbox::Clock;
    SystemClock.now_ms()
}

fn report_early_end(
    names: &HashMap<tokio::task::Id, String>,
    ended: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
) {
    let (id, detail) = match ended {
        Ok((id, ())) => (id, "it returned".to_string()),
        Err(e) => (e.id(), e.to_string()),
    };
    let what = names.get(&id).map(String::as_str).unwrap_or("a task");
    tracing::error!(task = what, detail = %detail, "stopped while the node is running; restart the node to restart it");
}

/// The subscribers of the request-response locations' responses
/// (`reply:<location>`).
fn reply_subscribers(config: &Config) -> Vec<String> {
    config
        .receive_ports
        .values()
        .flat_map(|p| p.locations.iter())
        .filter(|(_, lc)| lc.enabled && lc.adapter.exchange() == sluice_adapters::Exchange::RequestResponse)
        .map(|(name, _)| sluice_adapters::reply_subscriber(name))
        .collect()
}

/// Make the box's subscriptions match the configured send ports. A
/// subscription with no send port left is removed; its queued messages become
/// suspended (resumable), never dropped.
async fn sync_subscriptions(config: &Config, mbox: &dyn MessageBox) -> Result<(), HostError> {
    // A request-response location takes the responses addressed to it.
    let replies = reply_subscribers(config);
    for subscriber in &replies {
        let (rns, rname) = sluice_adapters::REPLY_TO;
        let (cns, cname) = sluice_adapters::CORRELATION_ID;
        let text = format!("{rns}.{rname} == \"{subscriber}\" and {cns}.{cname} exists");
        let filter = sluice_model::Filter::parse(&text).map_err(|e| HostError::Start {
            what: format!("subscription of {subscriber}"),
            message: e.to_string(),
        })?;
        mbox.subscribe(Subscription {
            subscriber: subscriber.clone(),
            filter,
        })
        .await?;
    }
    for (name, sp) in &config.send_ports {
        let filter = sp.parsed_filter.clone().ok_or_else(|| HostError::Start {
            what: format!("send port `{name}`"),
            message: "filter was not validated".into(),
        })?;
        mbox.subscribe(Subscription {
            subscriber: name.clone(),
            filter,
        })
        .await?;
    }
    for sub in mbox.subscriptions().await? {
        if !config.send_ports.contains_key(&sub.subscriber) && !replies.contains(&sub.subscriber) {
            let n = mbox.unsubscribe(&sub.subscriber).await?;
            tracing::warn!(subscriber = %sub.subscriber, suspended = n,
                "send port is no longer configured; its subscription is removed and its queued messages are suspended");
        }
    }
    Ok(())
}
