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
//! most `concurrency` files at once; a send port holds at most `concurrency`
//! deliveries, `min(concurrency, 256)` entries leased ahead of them and
//! `min(4 × concurrency, 1024)` delivered ones waiting for their ack
//! (`send_port`); waiting messages wait in the box on disk, not in memory.
//!
//! Architecture Invariant: work is in flight only once its host's
//! [`Throttle`](throttle::Throttle) admitted it (a receive location before it
//! takes a file, a send port before it delivers a leased message); a
//! throttled host takes and leases nothing new.

mod acks;
pub mod config;
pub mod control;
pub mod instance;
mod isolation;
mod message_log;
pub mod metrics;
mod node;
mod operate;
mod promises;
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
pub use crate::promises::ConfigWarning;
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
/// A runner takes its notifier when it starts; a reload adds runners.
#[derive(Default)]
pub(crate) struct Wakers {
    by_subscriber: std::sync::RwLock<HashMap<String, Arc<Notify>>>,
}

impl Wakers {
    pub(crate) fn wake(&self, subscriber: &str) {
        let map = self.by_subscriber.read().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(subscriber) {
            n.notify_one();
        }
    }
    /// The notifier of `subscriber`, made on first use. One per subscriber
    /// name ever run (bounded by the configuration's names).
    pub(crate) fn of(&self, subscriber: &str) -> Arc<Notify> {
        let mut map = self.by_subscriber.write().unwrap_or_else(|p| p.into_inner());
        map.entry(subscriber.to_string()).or_default().clone()
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
pub(crate) struct HostAdmission(pub(crate) throttle::Lane);

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

/// What a running node answers besides its configuration.
pub struct Control {
    /// Cancelled to stop the node (SIGTERM, SIGINT): stop intake, finish
    /// the work in flight, close the box.
    pub shutdown: CancellationToken,
    /// Notified to load the configuration file again (SIGHUP).
    pub reload: Arc<Notify>,
}

impl Control {
    /// Stopped by `shutdown`; never asked to reload but by the control socket.
    pub fn new(shutdown: CancellationToken) -> Control {
        Control {
            shutdown,
            reload: Arc::new(Notify::new()),
        }
    }
}

/// Run a node until `control.shutdown` is cancelled; then stop intake,
/// finish the work in flight, close the box and return. `config` was
/// loaded from `config_path`; a reload (SIGHUP, `sluice reload`) loads a
/// file again and applies what changed.
pub async fn serve(config: Config, config_path: PathBuf, control: Control) -> Result<(), HostError> {
    let shutdown = control.shutdown.clone();
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
    // The REST API too, for the same reason.
    let api = match &config.api {
        Some(a) => Some(sluice_api::Api::bind(a.clone()).await.map_err(|e| HostError::Start {
            what: "api".into(),
            message: e.to_string(),
        })?),
        None => None,
    };
    let api_address = api.as_ref().and_then(|a| a.local_addr().ok()).map(|a| a.to_string());
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
    // What operators stopped stays stopped: the node runs the file with
    // those units turned off (`operate`), subscriptions included, as a
    // reload would.
    let mut stopped = operate::load_stopped(&config, &*mbox).await?;
    let running = operate::with_stopped(&config, &stopped);
    subscribe_all(&running, &*mbox).await?;
    unsubscribe_missing(&running, &*mbox).await?;

    let send_stop = CancellationToken::new();
    let wakers = Arc::new(Wakers::default());
    let shared = node::Shared {
        node_id: node_id.clone(),
        mbox: mbox.clone(),
        wakers: wakers.clone(),
        metrics: metrics.clone(),
        throttles: throttles.clone(),
        intake_stop: shutdown.clone(),
        send_stop: send_stop.clone(),
    };

    // Receive locations are built and recover what the last run left
    // half-done before anything starts: no send port may deliver (and
    // delete) a message whose source is still being sorted out.
    for pc in running.receive_ports.values() {
        for (name, _) in pc.locations.iter().filter(|(_, lc)| !lc.enabled) {
            tracing::info!(receive_location = %name, "receive location is disabled");
        }
    }
    // Isolated hosts' units run in their instances, not here.
    let runs = node::Runs::node(&config);
    let prepared = node::prepare_locations(&shared, &running, &runs).await?;

    // Node services: RSS sampling (memory marks, metrics), status.json,
    // metrics endpoint, control socket.
    let services_stop = CancellationToken::new();
    let mut services = JoinSet::new();
    services.spawn(sample_rss(
        metrics.clone(),
        throttles.values().cloned().collect(),
        services_stop.clone(),
    ));
    // Isolated hosts: each in a host instance the node starts and watches
    // (each recovers its own locations before its ports start).
    let mut isolated = isolation::Isolated::start(&config, &stopped, mbox.clone(), wakers.clone(), metrics.clone())?;
    let metrics_address = endpoint.as_ref().map(|e| e.address().to_string());
    services.spawn(report_status(
        config.data_dir.clone(),
        throttles.clone(),
        isolated.view(),
        metrics.clone(),
        metrics_address.clone(),
        services_stop.clone(),
    ));
    services.spawn(purge_old(
        mbox.clone(),
        config.tracking.keep,
        config.tracking.enabled,
        services_stop.clone(),
    ));
    let (operate_tx, mut operate_rx) = tokio::sync::mpsc::channel(16);
    if let Some(api) = api {
        let node: Arc<dyn sluice_api::units::NodeControl> = Arc::new(operate::Handle {
            tx: operate_tx,
            mbox: mbox.clone(),
            metrics: metrics.clone(),
            hosts: isolated.view(),
        });
        let state = sluice_api::ApiState::new(mbox.clone(), config.data_dir.clone(), Arc::new(SystemClock), Some(node));
        services.spawn(api.run(state, services_stop.clone(), Duration::from_secs(10)));
    }
    if let Some(endpoint) = endpoint {
        services.spawn(endpoint.serve(metrics.clone(), mbox.clone(), services_stop.clone()));
    }
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(4);
    match control::bind(&config.data_dir) {
        Ok(listener) => {
            services.spawn(control::serve(listener, reload_tx, services_stop.clone()));
        }
        Err(e) => tracing::warn!(socket = %control::socket_path(&config.data_dir).display(), error = %e,
            "cannot listen on the control socket; `sluice reload` cannot reach this node (SIGHUP still reloads)"),
    }

    // Send ports next, so that they are ready when messages arrive.
    let mut units = node::Units::new(runs);
    units.start_ports(&shared, &running)?;
    for location in prepared {
        units.add_location(&shared, location);
    }
    tracing::info!(data_dir = %config.data_dir.display(), store = %store, node = %node_id, metrics = metrics_address.as_deref().unwrap_or("off"),
        api = api_address.as_deref().unwrap_or("off"), "node running");

    // Until asked to stop, answer reloads. A unit's task that ends while it
    // should run reports itself (see `node::supervised`).
    let mut config = config;
    let mut config_path = config_path;
    loop {
        tokio::select! {
            // Checked first: a stop wins over a reload asked at the same time.
            biased;
            _ = shutdown.cancelled() => break,
            _ = control.reload.notified() => {
                reload(&config_path, &mut config, &stopped, &mut units, &shared, &mut isolated).await;
            }
            Some(asked) = reload_rx.recv() => {
                let outcome = reload(&asked.path, &mut config, &stopped, &mut units, &shared, &mut isolated).await;
                if outcome.applied {
                    // SIGHUP reloads the file applied last.
                    config_path = asked.path;
                }
                let _ = asked.answer.send(outcome);
            }
            Some(request) = operate_rx.recv() => match request {
                operate::Request::List(answer) => {
                    let _ = answer.send((Arc::new(config.clone()), stopped.clone()));
                }
                operate::Request::Set { kind, name, run, answer } => {
                    let done = operate::set(&config, &mut stopped, &mut units, &shared, (kind, name, run)).await;
                    for change in isolated.update(&config, &stopped) {
                        tracing::info!(change = %change, "operator's change applied");
                    }
                    let _ = answer.send(done.map(|()| (Arc::new(config.clone()), stopped.clone())));
                }
            },
        }
    }
    // No more stops and starts: one asked from now on (or waiting in the
    // line) is answered "the node is stopping" at once.
    drop(operate_rx);
    tracing::info!("stopping: no new intake; finishing work in flight");
    // Isolated hosts drain beside the node's own units.
    isolated.begin_stop();
    units.stop_intake().await;
    // The isolated hosts drain as the node does, each within its drain
    // timeout, while the node's own send ports still deliver.
    isolated.stop().await;
    send_stop.cancel();
    units.stop_ports().await;
    services_stop.cancel();
    while services.join_next().await.is_some() {}
    // A node that stopped cleanly leaves no report behind (an old one would
    // look like a node that is stuck), nor a control socket.
    for path in [
        status::status_path(&config.data_dir),
        control::socket_path(&config.data_dir),
    ] {
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, file = %path.display(), "cannot remove a file the node wrote");
        }
    }
    mbox.close().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Load `path` and move the node to it; the running configuration stays
/// whole if it is refused.
async fn reload(
    path: &Path,
    config: &mut Config,
    stopped: &operate::Stopped,
    units: &mut node::Units,
    shared: &node::Shared,
    isolated: &mut isolation::Isolated,
) -> control::ReloadOutcome {
    tracing::info!(config = %path.display(), "reloading the configuration");
    // Loading resolves host names (blocking): off the runtime's threads.
    let loading = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || Config::load(&loading))
        .await
        .unwrap_or_else(|e| {
            Err(config::ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!("reading the file failed: {e}"),
            })
        });
    let outcome = match loaded {
        Ok(new) => {
            new.log_warnings();
            // The units operators stopped stay stopped.
            let (running, next) = (
                operate::with_stopped(config, stopped),
                operate::with_stopped(&new, stopped),
            );
            let mut outcome = units.reload(shared, &running, &next).await;
            outcome.warnings = new
                .warnings()
                .into_iter()
                .map(|w| format!("`{}`: {}", w.key, w.message))
                .collect();
            if outcome.applied {
                if new.log_messages != config.log_messages {
                    message_log::set(new.log_messages);
                    outcome.changes.push(format!("log_messages = {}", new.log_messages));
                }
                *config = new;
                outcome.changes.extend(isolated.update(config, stopped));
            }
            outcome
        }
        Err(e) => control::ReloadOutcome {
            errors: vec![e.to_string()],
            ..Default::default()
        },
    };
    if outcome.applied {
        if outcome.changes.is_empty() {
            tracing::info!(config = %path.display(), "configuration reloaded: nothing changed");
        }
        for change in &outcome.changes {
            tracing::info!(config = %path.display(), change = %change, "configuration reloaded");
        }
        for error in &outcome.errors {
            tracing::error!(config = %path.display(), error = %error, "configuration reloaded, but not all of it");
        }
    } else {
        for error in &outcome.errors {
            tracing::error!(config = %path.display(), error = %error,
                "configuration reload refused; the running configuration is kept");
        }
    }
    outcome
}

/// A periodic tick that ends when `stop` is cancelled.
pub(crate) struct Ticker {
    interval: tokio::time::Interval,
    stop: CancellationToken,
}

impl Ticker {
    pub(crate) fn new(period: Duration, stop: CancellationToken) -> Ticker {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticker { interval, stop }
    }

    /// Wait for the next tick; `false` once stopped.
    pub(crate) async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.interval.tick() => true,
            _ = self.stop.cancelled() => false,
        }
    }
}

/// Sample the process's RSS for the hosts' memory marks and the metrics.
pub(crate) async fn sample_rss(metrics: Arc<Metrics>, throttles: Vec<Arc<Throttle>>, stop: CancellationToken) {
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

/// Delete tracking events (when `tracking` is on) and audit entries older
/// than `keep`, and browser sessions that ended, at start and then every
/// quarter of `keep` (at most every 10 minutes), a bounded batch at a time.
async fn purge_old(mbox: Arc<dyn MessageBox>, keep: Duration, tracking: bool, stop: CancellationToken) {
    const BATCH: usize = 10_000;
    let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut ticks = Ticker::new(every, stop.clone());
    while ticks.next().await {
        let before = now_ms() - keep.as_millis().min(i64::MAX as u128) as i64;
        let now = now_ms();
        for what in ["tracking events", "audit entries", "ended sessions"] {
            if what == "tracking events" && !tracking {
                continue;
            }
            let mut purged = 0;
            loop {
                let batch = match what {
                    "tracking events" => mbox.purge_tracking(before, BATCH).await,
                    "audit entries" => mbox.purge_audit(before, BATCH).await,
                    _ => {
                        let idle_before = now - sluice_ops::access::SESSION_IDLE;
                        mbox.purge_sessions(now, idle_before, BATCH).await
                    }
                };
                match batch {
                    Ok(n) => {
                        purged += n;
                        if (n as usize) < BATCH || stop.is_cancelled() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not purge old {what}; trying again later");
                        break;
                    }
                }
            }
            if purged > 0 {
                tracing::info!(purged, keep = ?keep, "purged old {what}");
            }
        }
    }
}

/// Terminate the responses that waited suspended at a request-response
/// location's reply subscriber (`reply:<location>`: their client timed out
/// or went away) for longer than `keep`, so they do not pile up.
pub(crate) async fn purge_abandoned(
    mbox: Arc<dyn MessageBox>,
    subscriber: String,
    keep: Duration,
    stop: CancellationToken,
) {
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
    hosts: isolation::HostsView,
    metrics: Arc<Metrics>,
    metrics_address: Option<String>,
    stop: CancellationToken,
) {
    let mut ticks = Ticker::new(status::STATUS_EVERY, stop);
    let mut failing = false;
    while ticks.next().await {
        // An isolated host's throttle is in its instance: as it reported it.
        let mut by_host: std::collections::BTreeMap<String, status::HostStatus> = throttles
            .iter()
            .map(|(name, t)| (name.clone(), host_status(t)))
            .collect();
        by_host.extend(hosts.throttles());
        let report = NodeStatus {
            pid: std::process::id(),
            written_at_ms: now_ms(),
            rss: throttle::current_rss().unwrap_or(0),
            metrics_address: metrics_address.clone(),
            hosts: by_host,
            host_instances: hosts.hosts(&metrics),
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

pub(crate) fn now_ms() -> i64 {
    use sluice_msgbox::Clock;
    SystemClock.now_ms()
}

/// The subscribers of the request-response locations' responses
/// (`reply:<location>`).
fn reply_subscribers(config: &Config) -> Vec<String> {
    node::enabled_locations(config)
        .filter(|(_, (_, lc))| node::is_request_response(lc))
        .map(|(name, _)| sluice_adapters::reply_subscriber(name))
        .collect()
}

/// Subscribe every configured send port (a stopped one too: its messages
/// queue) and every request-response location's responses, with the
/// filters of `config`.
pub(crate) async fn subscribe_all(config: &Config, mbox: &dyn MessageBox) -> Result<(), HostError> {
    // A request-response location takes the responses addressed to it,
    // and the faults of what its clients wait for (answered 502 at once).
    for subscriber in reply_subscribers(config) {
        let (rns, rname) = sluice_adapters::REPLY_TO;
        let (cns, cname) = sluice_adapters::CORRELATION_ID;
        let (fns, fname) = sluice_model::reply::FAULT_REPLY_TO;
        let text = format!(
            "({rns}.{rname} == \"{subscriber}\" and {cns}.{cname} exists) or {fns}.{fname} == \"{subscriber}\""
        );
        let filter = sluice_model::Filter::parse(&text).map_err(|e| HostError::Start {
            what: format!("subscription of {subscriber}"),
            message: e.to_string(),
        })?;
        mbox.subscribe(Subscription { subscriber, filter }).await?;
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
    Ok(())
}

/// Remove the subscriptions `config` no longer has (a send port removed, a
/// request-response location removed or disabled); their queued messages
/// become suspended (resumable), never dropped. Returns (subscriber,
/// messages suspended) for each.
pub(crate) async fn unsubscribe_missing(
    config: &Config,
    mbox: &dyn MessageBox,
) -> Result<Vec<(String, u64)>, HostError> {
    let replies = reply_subscribers(config);
    let mut gone = Vec::new();
    for sub in mbox.subscriptions().await? {
        if !config.send_ports.contains_key(&sub.subscriber) && !replies.contains(&sub.subscriber) {
            let n = mbox.unsubscribe(&sub.subscriber).await?;
            tracing::warn!(subscriber = %sub.subscriber, suspended = n,
                "send port is no longer configured; its subscription is removed and its queued messages are suspended");
            gone.push((sub.subscriber, n));
        }
    }
    Ok(gone)
}
