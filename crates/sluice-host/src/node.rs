//! The running node's parts: one unit per receive location and one per send
//! port, each started and stopped on its own, so that a reload
//! ([`Units::reload`]) stops, starts or restarts what changed and leaves the
//! others running.
//!
//! Architecture Invariant: a unit is stopped the way the whole node stops,
//! only narrower. A receive location stops taking work and finishes what it
//! holds (its request-response clients get their answers) before its
//! responses runner stops; a send port finishes its deliveries in flight
//! before it returns; a subscription is removed only after its port has
//! stopped, so its queued messages are suspended, never lost or delivered
//! twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_adapters::{Exchange, ReceiveContext, Source};
use sluice_msgbox::MessageBox;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ReceiveLocationConfig, SendPortConfig};
use crate::metrics::Metrics;
use crate::publisher::LocationPublisher;
use crate::send_port::SendPortRunner;
use crate::throttle::Throttle;
use crate::{HostAdmission, HostError, Wakers};

/// What every unit of a node shares.
pub(crate) struct Shared {
    /// This node's id (`node_id`), for the claims its locations make.
    pub(crate) node_id: String,
    pub(crate) mbox: Arc<dyn MessageBox>,
    pub(crate) wakers: Arc<Wakers>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) throttles: std::collections::HashMap<String, Arc<Throttle>>,
    /// Cancelled when the node stops: no new intake anywhere.
    pub(crate) intake_stop: CancellationToken,
    /// Cancelled once every location has stopped: send ports finish.
    pub(crate) send_stop: CancellationToken,
}

impl Shared {
    fn throttle(&self, what: &str, host: &str) -> Result<Arc<Throttle>, HostError> {
        self.throttles.get(host).cloned().ok_or_else(|| HostError::Start {
            what: what.to_string(),
            message: format!("no host `{host}` is configured"),
        })
    }
}

/// A receive location built (and, once [`bind`](PreparedLocation::bind)
/// returned, holding its address or folder), not running yet.
pub(crate) struct PreparedLocation {
    name: String,
    kind: &'static str,
    fingerprint: String,
    source: Box<dyn Source>,
    publisher: Arc<LocationPublisher>,
    cx: ReceiveContext,
    stop: CancellationToken,
    replies: Option<(String, SendPortRunner)>,
    abandoned_keep: Option<Duration>,
}

impl PreparedLocation {
    /// Build location `name` of receive port `port`: its source, pipeline,
    /// publisher and (request-response) responses runner. Takes nothing yet.
    pub(crate) fn build(
        shared: &Shared,
        config: &Config,
        port: &str,
        name: &str,
        lc: &ReceiveLocationConfig,
    ) -> Result<PreparedLocation, HostError> {
        let what = format!("receive location `{name}`");
        let start_error = |message: String| HostError::Start {
            what: what.clone(),
            message,
        };
        let source = lc.adapter.build().map_err(|e| start_error(e.to_string()))?;
        let pipeline = lc.pipeline.build().map_err(|message| HostError::Start {
            what: format!("{what} pipeline"),
            message,
        })?;
        let publisher = Arc::new(LocationPublisher::new(
            name,
            pipeline,
            shared.mbox.clone(),
            shared.wakers.clone(),
            shared.metrics.clone(),
        ));
        let throttle = shared.throttle(&what, &lc.host)?;
        let stop = shared.intake_stop.child_token();
        let cx = ReceiveContext {
            node: shared.node_id.clone(),
            port: port.to_string(),
            location: name.to_string(),
            publisher: publisher.clone(),
            admission: Arc::new(HostAdmission(throttle.lane())),
            shutdown: stop.clone(),
        };
        let replies = source.replies(name).map(|replies| {
            let subscriber = sluice_adapters::reply_subscriber(name);
            let runner = SendPortRunner::replies(
                &subscriber,
                replies,
                shared.mbox.clone(),
                shared.wakers.clone(),
                throttle,
                shared.metrics.clone(),
            );
            (subscriber, runner)
        });
        Ok(PreparedLocation {
            name: name.to_string(),
            kind: lc.adapter.kind(),
            fingerprint: location_fingerprint(config, port, name, lc),
            source,
            publisher,
            cx,
            stop,
            replies,
            abandoned_keep: lc.adapter.abandoned_keep(),
        })
    }

    /// Take what the location needs (listen on its address...).
    pub(crate) async fn bind(&mut self) -> Result<(), HostError> {
        self.source.bind().await.map_err(|e| HostError::Start {
            what: format!("receive location `{}`", self.name),
            message: e.to_string(),
        })
    }

    /// Settle what an earlier run of this location left half-done.
    pub(crate) async fn recover(&self) -> Result<(), HostError> {
        self.source.recover(&self.cx).await;
        let released = self.publisher.release_leftovers().await?;
        if released > 0 {
            tracing::info!(receive_location = %self.name, messages = released,
                "released messages whose source was already settled when the node last stopped");
        }
        Ok(())
    }

    /// Run it: its responses runner first (request-response), then intake.
    pub(crate) fn start(self, shared: &Shared) -> LocationUnit {
        let reply_stop = shared.send_stop.child_token();
        let mut helpers = Vec::new();
        if let Some((subscriber, runner)) = self.replies {
            helpers.push(supervised(
                format!("responses to `{subscriber}`"),
                reply_stop.clone(),
                runner.run(reply_stop.clone()),
            ));
            if let Some(keep) = self.abandoned_keep {
                helpers.push(supervised(
                    format!("purge of responses abandoned at `{subscriber}`"),
                    reply_stop.clone(),
                    crate::purge_abandoned(shared.mbox.clone(), subscriber, keep, reply_stop.clone()),
                ));
            }
        }
        let location = self.name.clone();
        tracing::info!(receive_port = %self.cx.port, receive_location = %location, adapter = self.kind,
            "receive location started");
        let source = self.source;
        let cx = self.cx;
        let receive = supervised(
            format!("receive location `{location}`"),
            self.stop.clone(),
            async move {
                if let Err(e) = source.run(cx).await {
                    tracing::error!(receive_location = %location, error = %e, "receive location stopped with an error");
                }
            },
        );
        LocationUnit {
            fingerprint: self.fingerprint,
            stop: self.stop,
            receive,
            reply_stop,
            helpers,
        }
    }
}

/// A running receive location.
pub(crate) struct LocationUnit {
    fingerprint: String,
    stop: CancellationToken,
    receive: JoinHandle<()>,
    /// Stops its responses runner and the purge of abandoned responses.
    reply_stop: CancellationToken,
    helpers: Vec<JoinHandle<()>>,
}

impl LocationUnit {
    /// Stop intake, finish what is in flight (waiting clients get their
    /// responses), then stop the responses runner.
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.receive.await;
        self.reply_stop.cancel();
        for h in self.helpers {
            let _ = h.await;
        }
    }
}

/// A running send port.
pub(crate) struct PortUnit {
    fingerprint: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl PortUnit {
    /// Build send port `name` (nothing runs yet).
    fn build(shared: &Shared, name: &str, sp: &SendPortConfig) -> Result<SendPortRunner, HostError> {
        let what = format!("send port `{name}`");
        SendPortRunner::new(
            name,
            sp,
            shared.mbox.clone(),
            shared.wakers.clone(),
            shared.throttle(&what, &sp.host)?,
            shared.metrics.clone(),
        )
        .map_err(|message| HostError::Start { what, message })
    }

    fn start(shared: &Shared, name: &str, runner: SendPortRunner, fingerprint: String) -> PortUnit {
        let stop = shared.send_stop.child_token();
        let task = supervised(format!("send port `{name}`"), stop.clone(), runner.run(stop.clone()));
        PortUnit {
            fingerprint,
            stop,
            task,
        }
    }

    /// Finish the deliveries in flight and stop leasing.
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Spawn `work`; if it ends before `stop` is cancelled (it returned, or it
/// panicked), say so loudly rather than let a port go quiet.
fn supervised<F>(what: String, stop: CancellationToken, work: F) -> JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    // In the span of whoever runs the unit (a host instance's).
    let inner = tokio::spawn(tracing::Instrument::in_current_span(work));
    tokio::spawn(async move {
        let detail = match inner.await {
            Ok(()) => "it returned".to_string(),
            Err(e) => e.to_string(),
        };
        if !stop.is_cancelled() {
            tracing::error!(task = %what, detail = %detail,
                "stopped while the node is running; reload the configuration (`sluice reload`, SIGHUP) or restart \
                 the node to start it again");
        }
    })
}

/// Which units a process runs: the node runs those of every host but the
/// isolated ones (each runs in a host instance of its own); a host
/// instance runs its host's.
#[derive(Debug, Clone)]
pub(crate) enum Runs {
    Node {
        isolated: std::collections::BTreeSet<String>,
    },
    Host(String),
}

impl Runs {
    /// The node's share of `config`.
    pub(crate) fn node(config: &Config) -> Runs {
        Runs::Node {
            isolated: config
                .hosts
                .iter()
                .filter(|(_, hc)| hc.isolation == crate::config::Isolation::Process)
                .map(|(name, _)| name.clone())
                .collect(),
        }
    }

    /// Whether this process runs the units of `host`.
    pub(crate) fn host(&self, host: &str) -> bool {
        match self {
            Runs::Node { isolated } => !isolated.contains(host),
            Runs::Host(h) => h == host,
        }
    }

    /// The enabled receive locations of `config` this process runs.
    pub(crate) fn locations<'c>(
        &self,
        config: &'c Config,
    ) -> impl Iterator<Item = (&'c str, (&'c str, &'c ReceiveLocationConfig))> {
        enabled_locations(config).filter(|(_, (_, lc))| self.host(&lc.host))
    }

    /// The enabled send ports of `config` this process runs.
    fn ports<'c>(&self, config: &'c Config) -> impl Iterator<Item = (&'c str, &'c SendPortConfig)> {
        enabled_ports(config, true).filter(|(_, sp)| self.host(&sp.host))
    }
}

/// Build, bind and recover every receive location of `config` that `runs`
/// takes, before anything starts: a taken address stops the start, naming
/// the location, and no send port may deliver (and delete) a message whose
/// source is still being sorted out.
pub(crate) async fn prepare_locations(
    shared: &Shared,
    config: &Config,
    runs: &Runs,
) -> Result<Vec<PreparedLocation>, HostError> {
    let mut prepared = Vec::new();
    for (name, (port, lc)) in runs.locations(config) {
        let mut location = PreparedLocation::build(shared, config, port, name, lc)?;
        location.bind().await?;
        prepared.push(location);
    }
    for location in &prepared {
        location.recover().await?;
    }
    Ok(prepared)
}

/// What `host`'s units are configured as, all together: equal
/// fingerprints, nothing of the host changed (an isolated host's instance
/// is recycled when it changes).
pub(crate) fn host_fingerprint(config: &Config, host: &str) -> String {
    let runs = Runs::Host(host.to_string());
    let mut out = String::new();
    for (name, (port, lc)) in runs.locations(config) {
        out.push_str(&location_fingerprint(config, port, name, lc));
        out.push('\n');
    }
    for (name, sp) in runs.ports(config) {
        out.push_str(&port_fingerprint(config, name, sp));
        out.push('\n');
    }
    out
}

/// The running units of a node (or of a host instance), by name.
pub(crate) struct Units {
    runs: Runs,
    locations: BTreeMap<String, LocationUnit>,
    ports: BTreeMap<String, PortUnit>,
}

/// What a reload did, or why it was refused.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReloadOutcome {
    /// The new configuration is running (refused: the old one still is).
    pub applied: bool,
    /// What changed, one line each (`send port `b` added`).
    pub changes: Vec<String>,
    /// Why it was refused, or what could not be applied.
    pub errors: Vec<String>,
    /// What the new configuration will fail on (`Config::warnings`), as
    /// `key: message`; said whether or not it was applied.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl Units {
    pub(crate) fn new(runs: Runs) -> Units {
        Units {
            runs,
            locations: BTreeMap::new(),
            ports: BTreeMap::new(),
        }
    }

    /// Start the send ports of `config` that this process runs (the
    /// locations are prepared and started by the caller, which must
    /// recover them all first).
    pub(crate) fn start_ports(&mut self, shared: &Shared, config: &Config) -> Result<(), HostError> {
        for (name, sp) in self.runs.ports(config) {
            let runner = PortUnit::build(shared, name, sp)?;
            let unit = PortUnit::start(shared, name, runner, port_fingerprint(config, name, sp));
            self.ports.insert(name.to_string(), unit);
        }
        Ok(())
    }

    pub(crate) fn add_location(&mut self, shared: &Shared, prepared: PreparedLocation) {
        let name = prepared.name.clone();
        self.locations.insert(name, prepared.start(shared));
    }

    /// The node stops: wait for every location (their intake was stopped
    /// with the node's), then, once `send_stop` is cancelled by the caller,
    /// for the send ports.
    pub(crate) async fn stop_intake(&mut self) {
        for (_, unit) in std::mem::take(&mut self.locations) {
            unit.stop().await;
        }
    }

    pub(crate) async fn stop_ports(&mut self) {
        for (_, unit) in std::mem::take(&mut self.ports) {
            unit.stop().await;
        }
    }

    /// Move the node from `old` to `new`: locations and ports added,
    /// removed or changed, the others untouched. Everything that can fail
    /// (a new adapter, pipeline or address) is tried before anything is
    /// stopped: an invalid configuration, or one that changes what only a
    /// restart can change, is refused whole and the running one kept.
    pub(crate) async fn reload(&mut self, shared: &Shared, old: &Config, new: &Config) -> ReloadOutcome {
        let mut out = ReloadOutcome {
            errors: fixed_changes(old, new),
            ..ReloadOutcome::default()
        };
        if !out.errors.is_empty() {
            return out;
        }
        // The plan: which units go, come and change.
        let new_locations: BTreeMap<&str, (&str, &ReceiveLocationConfig)> = self.runs.locations(new).collect();
        let new_ports: BTreeMap<&str, &SendPortConfig> = self.runs.ports(new).collect();
        let removed_locations: Vec<String> = self
            .locations
            .keys()
            .filter(|n| !new_locations.contains_key(n.as_str()))
            .cloned()
            .collect();
        let removed_ports: Vec<String> = self
            .ports
            .keys()
            .filter(|n| !new_ports.contains_key(n.as_str()))
            .cloned()
            .collect();
        // What the locations that stop hold (an address, a folder): a new
        // location that claims the same binds once they have let go.
        let leaving: Vec<sluice_adapters::Claim> = self
            .runs
            .locations(old)
            .filter(|(name, (port, lc))| {
                new_locations
                    .get(name)
                    .map(|(p, l)| location_fingerprint(new, p, name, l))
                    != Some(location_fingerprint(old, port, name, lc))
            })
            .flat_map(|(_, (_, lc))| lc.adapter.resources())
            .collect();
        // Build every new or changed unit first, and bind the new locations
        // that need nothing of a leaving one: what fails refuses the reload.
        let mut locations = Vec::new();
        for (name, (port, lc)) in &new_locations {
            let fingerprint = location_fingerprint(new, port, name, lc);
            let what = match self.locations.get(*name) {
                None => "added",
                Some(u) if u.fingerprint != fingerprint => "changed (restarted)",
                // Its task ended while it should run (reported then): a
                // reload starts it again.
                Some(u) if u.receive.is_finished() => "restarted (it had stopped)",
                Some(_) => continue,
            };
            // A location binds now, before anything stops (a taken address
            // refuses the reload), unless what it takes is held by a
            // leaving location (its old self, a removed one): then it binds
            // once that one has let go.
            let waits = lc
                .adapter
                .resources()
                .iter()
                .any(|c| leaving.iter().any(|l| c.conflicts_with(l)));
            match PreparedLocation::build(shared, new, port, name, lc) {
                Ok(mut p) => {
                    if !waits && let Err(e) = p.bind().await {
                        out.errors.push(e.to_string());
                        continue;
                    }
                    locations.push((what, waits, p));
                }
                Err(e) => out.errors.push(e.to_string()),
            }
        }
        let mut ports = Vec::new();
        for (name, sp) in &new_ports {
            let fingerprint = port_fingerprint(new, name, sp);
            let what = match self.ports.get(*name) {
                None => "added",
                Some(u) if u.fingerprint != fingerprint => "changed (restarted)",
                Some(u) if u.task.is_finished() => "restarted (it had stopped)",
                Some(_) => continue,
            };
            match PortUnit::build(shared, name, sp) {
                Ok(runner) => ports.push((name.to_string(), what, runner, fingerprint)),
                Err(e) => out.errors.push(e.to_string()),
            }
        }
        if !out.errors.is_empty() {
            // Dropping what was built lets go of what it bound.
            return out;
        }
        // Subscriptions first (new filters route from now on), then send
        // ports, so that they are ready when the locations publish.
        if let Err(e) = crate::subscribe_all(new, &*shared.mbox).await {
            out.errors.push(e.to_string());
            return out;
        }
        for (name, what, runner, fingerprint) in ports {
            if let Some(old) = self.ports.remove(&name) {
                old.stop().await;
            }
            self.ports
                .insert(name.clone(), PortUnit::start(shared, &name, runner, fingerprint));
            out.changes.push(format!("send port `{name}` {what}"));
        }
        // Every leaving location lets go before a new one binds in its place.
        for name in removed_locations {
            if let Some(unit) = self.locations.remove(&name) {
                unit.stop().await;
                tracing::info!(receive_location = %name, "receive location stopped (reload)");
                out.changes.push(format!("receive location `{name}` removed"));
            }
        }
        for (_, _, p) in &locations {
            if let Some(old) = self.locations.remove(&p.name) {
                old.stop().await;
            }
        }
        for (what, waits, mut p) in locations {
            let name = p.name.clone();
            if waits && let Err(e) = p.bind().await {
                // Its old self is stopped and let go; what held the
                // address in between is not ours. Say so; the next
                // reload tries again.
                tracing::error!(receive_location = %name, error = %e,
                    "receive location could not start after a reload; it is stopped");
                out.errors
                    .push(format!("{e} (the location is stopped; reload again to retry)"));
                continue;
            }
            if let Err(e) = p.recover().await {
                out.errors.push(e.to_string());
            }
            self.add_location(shared, p);
            out.changes.push(format!("receive location `{name}` {what}"));
        }
        for name in removed_ports {
            if let Some(unit) = self.ports.remove(&name) {
                unit.stop().await;
                tracing::info!(send_port = %name, "send port stopped (reload)");
                out.changes.push(format!("send port `{name}` stopped"));
            }
        }
        match crate::unsubscribe_missing(new, &*shared.mbox).await {
            Ok(gone) => {
                for (subscriber, suspended) in gone {
                    let what = if old.send_ports.contains_key(&subscriber) {
                        format!("send port `{subscriber}` removed")
                    } else {
                        format!("subscription `{subscriber}` removed")
                    };
                    out.changes
                        .push(format!("{what}: {suspended} queued messages suspended (resumable)"));
                }
            }
            Err(e) => out.errors.push(e.to_string()),
        }
        out.applied = true;
        out
    }
}

/// The enabled receive locations of `config`: (name, (port, config)).
pub(crate) fn enabled_locations(config: &Config) -> impl Iterator<Item = (&str, (&str, &ReceiveLocationConfig))> {
    config.receive_ports.iter().flat_map(|(port, pc)| {
        pc.locations
            .iter()
            .filter(|(_, lc)| lc.enabled)
            .map(move |(name, lc)| (name.as_str(), (port.as_str(), lc)))
    })
}

/// The send ports of `config` that run (`enabled`), or all.
fn enabled_ports(config: &Config, enabled_only: bool) -> impl Iterator<Item = (&str, &SendPortConfig)> {
    config
        .send_ports
        .iter()
        .filter(move |(_, sp)| sp.enabled || !enabled_only)
        .map(|(n, sp)| (n.as_str(), sp))
}

/// What a location is configured as: its table as written and as resolved
/// (paths against the file's folder). Equal fingerprints: nothing to do.
fn location_fingerprint(config: &Config, port: &str, name: &str, lc: &ReceiveLocationConfig) -> String {
    let raw = raw_at(config, &["receive_ports", port, "locations", name]);
    format!("{port}\n{lc:?}\n{raw}")
}

fn port_fingerprint(config: &Config, name: &str, sp: &SendPortConfig) -> String {
    let raw = raw_at(config, &["send_ports", name]);
    format!("{sp:?}\n{raw}")
}

/// The table at `path` of the file as written (secrets written inline
/// included: a changed password restarts what uses it). Never printed.
fn raw_at(config: &Config, path: &[&str]) -> String {
    let mut at: Option<&toml::Value> = None;
    for (i, key) in path.iter().enumerate() {
        at = if i == 0 {
            config.raw.0.get(*key)
        } else {
            at.and_then(|v| v.get(*key))
        };
    }
    at.map(|v| v.to_string()).unwrap_or_default()
}

/// The keys a reload cannot change (the box, the node's identity, the
/// hosts' throttles, the metrics endpoint, the REST API, tracking, the box's
/// index): one error per key
/// that differs.
fn fixed_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut errors = Vec::new();
    let mut differs = |key: &str, a: String, b: String| {
        if a != b {
            errors.push(format!(
                "`{key}` changed: it is set when the node starts; stop and start the node to apply it \
                 (nothing was changed)"
            ));
        }
    };
    differs(
        "data_dir",
        old.data_dir.display().to_string(),
        new.data_dir.display().to_string(),
    );
    differs("store", old.store_url().to_string(), new.store_url().to_string());
    differs("node_id", format!("{:?}", old.node_id), format!("{:?}", new.node_id));
    differs("metrics", format!("{:?}", old.metrics), format!("{:?}", new.metrics));
    differs("api", format!("{:?}", old.api), format!("{:?}", new.api));
    differs("tracking", format!("{:?}", old.tracking), format!("{:?}", new.tracking));
    differs("box", format!("{:?}", old.box_config), format!("{:?}", new.box_config));
    let names: std::collections::BTreeSet<&String> = old.hosts.keys().chain(new.hosts.keys()).collect();
    for name in names {
        differs(
            &format!("hosts.{name}"),
            format!("{:?}", old.hosts.get(name)),
            format!("{:?}", new.hosts.get(name)),
        );
    }
    errors
}

/// Whether `config` has a request-response location `name` that runs.
pub(crate) fn is_request_response(lc: &ReceiveLocationConfig) -> bool {
    lc.enabled && lc.adapter.exchange() == Exchange::RequestResponse
}
