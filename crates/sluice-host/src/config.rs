//! The configuration file (`sluice.toml`).
//!
//! ```toml
//! data_dir = "data"                      # relative to this file
//! # store = "sqlite:data/msgbox.sqlite"  # the message box (this default); env SLUICE_STORE wins
//! # node_id = "node-a"                   # default: generated once, kept in <data_dir>/node-id
//!
//! [receive_ports.in.locations.in-folder]
//! adapter = { type = "file", path = "in", mask = "*" }
//!
//! [send_ports.out]
//! filter = 'receive.port == "in"'
//! adapter = { type = "file", path = "out", file_name = "%SourceFileName%" }
//!
//! [hosts.default]                        # optional: throttling (these are the defaults)
//! max_in_flight = 1000
//! max_in_flight_bytes = "256MiB"
//!
//! [metrics]                              # optional: the Prometheus endpoint is off without it
//! address = "127.0.0.1:9464"
//! ```
//!
//! Every table refuses unknown keys; relative paths resolve against the
//! folder of the configuration file; [`Config::load`] checks everything it
//! can before the node starts, and its errors name the key that is wrong.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sluice_adapters::{Claim, Exchange, ReceiveAdapterConfig, SendAdapterConfig};
use sluice_model::Filter;
use sluice_pipeline::{ByteSize, ReceivePipelineConfig, SendPipelineConfig};

use crate::throttle::{Limits, MemoryMarks};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("configuration file {path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the message box lives (relative to the configuration file).
    pub data_dir: PathBuf,
    #[serde(default)]
    pub receive_ports: BTreeMap<String, ReceivePortConfig>,
    #[serde(default)]
    pub send_ports: BTreeMap<String, SendPortConfig>,
    /// Throttling budgets by host name; `default` always exists (with the
    /// defaults unless configured).
    #[serde(default)]
    pub hosts: BTreeMap<String, HostConfig>,
    /// The Prometheus endpoint; off unless configured.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Tracking of what happened to messages (on, kept 7 days, by default).
    #[serde(default)]
    pub tracking: TrackingConfig,
    /// The message box, as a store URL (`sqlite:PATH`, a relative path
    /// against the folder of this file). The environment variable
    /// [`STORE_ENV`] wins over it; without either, the SQLite box
    /// `msgbox.sqlite` in `data_dir`. See [`Config::store_url`].
    #[serde(default)]
    pub store: Option<String>,
    /// This node's id: the leases, holds and staged interchanges it owns in
    /// the box carry it. Default: one generated at the first start and kept
    /// in `<data_dir>/node-id`. See [`Config::node_id`].
    #[serde(default)]
    pub node_id: Option<String>,
    /// The folder of the configuration file (set by [`Config::load`]).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The store, resolved (set by [`Config::load`]).
    #[serde(skip)]
    store_url: Option<sluice_store::StoreUrl>,
    /// The file's tables as written (set by [`Config::from_toml`]): a
    /// reload compares them to tell which locations and ports changed.
    #[serde(skip)]
    pub(crate) raw: toml::Table,
}

/// The environment variable that names the message box's store URL; it wins
/// over the `store` key (a deployment chooses its database, the file its
/// routes).
pub const STORE_ENV: &str = "SLUICE_STORE";

/// The file in the data directory that keeps a generated node id.
pub const NODE_ID_FILE: &str = "node-id";

/// `[tracking]`: the box records each delivery, termination and
/// resubmission, and the context of each message as it leaves; the node
/// deletes what is older than `keep`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long tracking events are kept before the node purges them.
    #[serde(default = "default_tracking_keep", with = "humantime_serde")]
    pub keep: Duration,
}

fn default_tracking_keep() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            enabled: true,
            keep: default_tracking_keep(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceivePortConfig {
    #[serde(default)]
    pub locations: BTreeMap<String, ReceiveLocationConfig>,
}

fn yes() -> bool {
    true
}

/// The host every port belongs to unless it names another.
pub const DEFAULT_HOST: &str = "default";

fn default_host() -> String {
    DEFAULT_HOST.to_string()
}

fn default_max_in_flight() -> u64 {
    1000
}
fn default_max_in_flight_bytes() -> ByteSize {
    ByteSize(256 << 20)
}

/// `[hosts.<name>]`: the budget shared by the receive locations and send
/// ports that name this host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// High mark: at this many messages in flight, intake and dequeuing pause.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u64,
    /// Low mark: they resume at this many or fewer (default 80% of the high mark).
    #[serde(default)]
    pub resume_in_flight: Option<u64>,
    /// Most bytes in flight; a single larger message goes alone.
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: ByteSize,
    /// Process RSS at which this host pauses (off unless set).
    #[serde(default)]
    pub memory_high: Option<ByteSize>,
    /// RSS at or below which it resumes (default 80% of `memory_high`).
    #[serde(default)]
    pub memory_low: Option<ByteSize>,
    /// Percent of the messages and bytes in flight one receive location may
    /// hold (1–100, default 50): one location cannot starve the others and
    /// the send ports.
    #[serde(default = "default_location_share")]
    pub location_share: u8,
}

fn default_location_share() -> u8 {
    50
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            max_in_flight: default_max_in_flight(),
            resume_in_flight: None,
            max_in_flight_bytes: default_max_in_flight_bytes(),
            memory_high: None,
            memory_low: None,
            location_share: default_location_share(),
        }
    }
}

impl HostConfig {
    /// The throttle's limits, defaults filled in and ranges checked;
    /// `Err((key, message))` names the key (relative to the host's table).
    pub fn limits(&self) -> Result<Limits, (&'static str, String)> {
        if !(1..=1_000_000).contains(&self.max_in_flight) {
            return Err(("max_in_flight", "must be between 1 and 1000000".into()));
        }
        let resume = self.resume_in_flight.unwrap_or(self.max_in_flight * 8 / 10);
        if resume >= self.max_in_flight {
            return Err((
                "resume_in_flight",
                format!("must be below max_in_flight ({})", self.max_in_flight),
            ));
        }
        if self.max_in_flight_bytes.0 < 1 << 20 {
            return Err(("max_in_flight_bytes", "must be at least 1MiB".into()));
        }
        let memory = match (self.memory_high, self.memory_low) {
            (None, None) => None,
            (None, Some(_)) => return Err(("memory_low", "needs memory_high".into())),
            (Some(high), low) => {
                if high.0 < 32 << 20 {
                    return Err(("memory_high", "must be at least 32MiB".into()));
                }
                let low = low.map(|l| l.0).unwrap_or(high.0 / 10 * 8);
                if low >= high.0 {
                    return Err(("memory_low", format!("must be below memory_high ({high})")));
                }
                Some(MemoryMarks { high: high.0, low })
            }
        };
        if !(1..=100).contains(&self.location_share) {
            return Err(("location_share", "must be a percentage between 1 and 100".into()));
        }
        Ok(Limits {
            max_in_flight: self.max_in_flight,
            resume_in_flight: resume,
            max_in_flight_bytes: self.max_in_flight_bytes.0,
            memory,
            location_share: self.location_share,
        })
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to listen for `GET /metrics` (e.g. `127.0.0.1:9464`; port 0 picks a free one).
    #[serde(deserialize_with = "socket_address")]
    pub address: SocketAddr,
}

fn socket_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not a listening address: use IP:port, e.g. 127.0.0.1:9464 or [::1]:9464"
        ))
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveLocationConfig {
    pub adapter: ReceiveAdapterConfig,
    #[serde(default)]
    pub pipeline: ReceivePipelineConfig,
    /// A disabled location takes nothing.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The host whose throttle this location shares.
    #[serde(default = "default_host")]
    pub host: String,
}

fn default_concurrency() -> usize {
    8
}
fn default_lease() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendPortConfig {
    /// Which messages this port takes: a filter over promoted properties.
    pub filter: String,
    pub adapter: SendAdapterConfig,
    #[serde(default)]
    pub pipeline: SendPipelineConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    /// A second transport, tried when the first one has used up its
    /// retries (or failed in a way retrying cannot help), with its own
    /// retry policy; only after it too has given up is the message suspended.
    #[serde(default)]
    pub backup: Option<BackupConfig>,
    /// Messages sent at the same time.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How long a message is reserved for one delivery attempt; after that
    /// (a crash of a node in a group) it can be delivered again.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// A stopped port keeps its subscription: messages queue up for it and
    /// are delivered when it starts.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The host whose throttle this port shares.
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(skip)]
    pub parsed_filter: Option<Filter>,
}

/// A send port's backup transport.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    pub adapter: SendAdapterConfig,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_retry_count() -> u32 {
    3
}
fn default_retry_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_retry_backoff() -> f64 {
    2.0
}
fn default_retry_max_interval() -> Duration {
    Duration::from_secs(3600)
}

/// What a send port does when a delivery fails: `count` retries, the first
/// `interval` after the failure, each next one `backoff` times longer, never
/// more than `max_interval` apart; then the message is suspended.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt; then the message is suspended (resumable).
    #[serde(default = "default_retry_count")]
    pub count: u32,
    /// Wait before the first retry. The message waits in the box, not in memory.
    #[serde(default = "default_retry_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Each wait is this many times the one before (1 = a fixed interval).
    #[serde(default = "default_retry_backoff")]
    pub backoff: f64,
    /// The longest wait between two attempts.
    #[serde(default = "default_retry_max_interval", with = "humantime_serde")]
    pub max_interval: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            count: default_retry_count(),
            interval: default_retry_interval(),
            backoff: default_retry_backoff(),
            max_interval: default_retry_max_interval(),
        }
    }
}

impl RetryConfig {
    /// A fixed interval (no backoff).
    pub fn fixed(count: u32, interval: Duration) -> Self {
        RetryConfig {
            count,
            interval,
            backoff: 1.0,
            max_interval: interval,
        }
    }

    /// The wait after failed attempt number `attempt` (1 = the first try):
    /// `interval × backoff^(attempt − 1)`, capped at `max_interval`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self.backoff.powi(attempt.saturating_sub(1).min(1000) as i32);
        let secs = self.interval.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max_interval.as_secs_f64() {
            return self.max_interval.max(self.interval.min(self.max_interval));
        }
        Duration::from_secs_f64(secs)
    }

    /// `Err((key, message))`, the key relative to the `retry` table.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.interval > WEEK {
            return Err(("interval", "must be at most a week".into()));
        }
        if self.count > 1_000_000 {
            return Err(("count", "must be at most 1000000".into()));
        }
        if !(1.0..=100.0).contains(&self.backoff) {
            return Err((
                "backoff",
                format!("{} is not 1 to 100 (1 = a fixed interval)", self.backoff),
            ));
        }
        if self.max_interval > WEEK || self.max_interval < self.interval {
            return Err((
                "max_interval",
                format!(
                    "{:?} must be at least interval ({:?}) and at most a week",
                    self.max_interval, self.interval
                ),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The message box's store URL, resolved: [`STORE_ENV`], else `store`,
    /// else the SQLite box `msgbox.sqlite` in the data directory.
    pub fn store_url(&self) -> sluice_store::StoreUrl {
        self.store_url
            .clone()
            .unwrap_or_else(|| sluice_store::StoreUrl::default_in(&self.data_dir))
    }

    /// How to open this node's message box for `node_id` (the CLI opens it
    /// the same way).
    pub fn box_options(&self, node_id: &str) -> sluice_store::StoreOptions {
        sluice_store::StoreOptions {
            tracking: self.tracking.enabled,
            ..sluice_store::StoreOptions::new(node_id)
        }
    }

    /// This node's id: `node_id`, else the one kept in
    /// `<data_dir>/node-id`, made there the first time (the host name and
    /// a random suffix, so two nodes on one machine differ).
    pub fn node_id(&self) -> std::io::Result<String> {
        if let Some(id) = &self.node_id {
            return Ok(id.clone());
        }
        let file = self.data_dir.join(NODE_ID_FILE);
        match std::fs::read_to_string(&file) {
            Ok(text) if check_name(text.trim()).is_ok() => return Ok(text.trim().to_string()),
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} does not hold a valid node id", file.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let id = generated_node_id();
        std::fs::create_dir_all(&self.data_dir)?;
        // Written aside and renamed into place: a reader never sees half an id.
        let tmp = self.data_dir.join(format!(".{NODE_ID_FILE}.tmp"));
        std::fs::write(&tmp, format!("{id}\n"))?;
        std::fs::rename(&tmp, &file)?;
        Ok(id)
    }

    /// Read, parse and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let base = path
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        Config::from_toml(&text, path, &base)
    }

    /// Parse and validate configuration text; `base` is the folder relative paths start from.
    pub fn from_toml(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.base_dir = base.to_path_buf();
        config.data_dir = if config.data_dir.is_absolute() {
            config.data_dir.clone()
        } else {
            base.join(&config.data_dir)
        };
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        let from_env = std::env::var(STORE_ENV).ok().filter(|v| !v.trim().is_empty());
        let (store_key, store) = match (&from_env, &config.store) {
            (Some(url), _) => (format!("{STORE_ENV} (environment)"), Some(url.trim())),
            (None, Some(url)) => ("store".to_string(), Some(url.as_str())),
            (None, None) => (String::new(), None),
        };
        if let Some(url) = store {
            let url = sluice_store::StoreUrl::parse(url)
                .map(|u| u.resolve(base))
                .and_then(|u| u.check().map(|()| u))
                .map_err(|e| invalid(store_key, e.to_string()))?;
            config.store_url = Some(url);
        }
        if let Some(id) = &config.node_id {
            check_name(id).map_err(|m| invalid("node_id".into(), m))?;
        }
        if config.tracking.keep < Duration::from_secs(1) || config.tracking.keep > Duration::from_secs(10 * 365 * 86400)
        {
            return Err(invalid(
                "tracking.keep".into(),
                "must be between 1s and 10 years (to keep no tracking, set tracking.enabled = false)".into(),
            ));
        }
        config.hosts.entry(DEFAULT_HOST.to_string()).or_default();
        for (name, hc) in &config.hosts {
            let key = format!("hosts.{name}");
            check_name(name).map_err(|m| invalid(key.clone(), m))?;
            hc.limits().map_err(|(k, m)| invalid(format!("{key}.{k}"), m))?;
        }
        let hosts = &config.hosts;
        let check_host = |key: String, host: &str| {
            if hosts.contains_key(host) {
                Ok(())
            } else {
                Err(invalid(
                    format!("{key}.host"),
                    format!("no host `{host}` is configured (add a [hosts.{host}] table)"),
                ))
            }
        };
        let mut locations: HashMap<String, String> = HashMap::new();
        let mut claims = Claims::default();
        for (port, pc) in &mut config.receive_ports {
            check_name(port).map_err(|m| invalid(format!("receive_ports.{port}"), m))?;
            for (name, lc) in &mut pc.locations {
                let key = format!("receive_ports.{port}.locations.{name}");
                check_name(name).map_err(|m| invalid(key.clone(), m))?;
                if let Some(other) = locations.insert(name.clone(), port.clone()) {
                    return Err(invalid(
                        key,
                        format!("receive location names must be unique; `{name}` is also in receive port `{other}`"),
                    ));
                }
                check_host(key.clone(), &lc.host)?;
                lc.pipeline
                    .validate()
                    .map_err(|m| invalid(format!("{key}.pipeline"), m))?;
                if lc.adapter.exchange() == Exchange::RequestResponse && lc.pipeline.disassemble.is_some() {
                    return Err(invalid(
                        format!("{key}.pipeline.disassemble"),
                        "a request-response location answers each request with one response; it cannot split \
                         the request into many messages (use one-way)"
                            .into(),
                    ));
                }
                lc.adapter.resolve_paths(base);
                claims
                    .take(&format!("receive location `{name}`"), &key, lc.adapter.resources())
                    .map_err(|(k, m)| invalid(k, m))?;
                lc.adapter
                    .build()
                    .map_err(|e| invalid(format!("{key}.adapter"), e.to_string()))?;
            }
        }
        for (name, sp) in &mut config.send_ports {
            let key = format!("send_ports.{name}");
            check_name(name).map_err(|m| invalid(key.clone(), m))?;
            let filter = Filter::parse(&sp.filter).map_err(|e| invalid(format!("{key}.filter"), e.to_string()))?;
            // The box stores the filter as text: it must read back the same.
            if Filter::parse(&filter.to_string()).ok().as_ref() != Some(&filter) {
                return Err(invalid(
                    format!("{key}.filter"),
                    format!("cannot be stored faithfully (as `{filter}`)"),
                ));
            }
            sp.parsed_filter = Some(filter);
            if !(1..=10_000).contains(&sp.concurrency) {
                return Err(invalid(
                    format!("{key}.concurrency"),
                    "must be between 1 and 10000".into(),
                ));
            }
            if sp.lease < Duration::from_secs(1) || sp.lease > WEEK {
                return Err(invalid(format!("{key}.lease"), "must be between 1s and 7 days".into()));
            }
            sp.retry
                .check()
                .map_err(|(k, m)| invalid(format!("{key}.retry.{k}"), m))?;
            check_host(key.clone(), &sp.host)?;
            sp.pipeline
                .validate()
                .map_err(|m| invalid(format!("{key}.pipeline"), m))?;
            if sp.adapter.exchange() == Exchange::SolicitResponse && sp.pipeline.assemble.is_some() {
                return Err(invalid(
                    format!("{key}.pipeline.assemble"),
                    "a solicit-response port answers each request with one response; it cannot send batches".into(),
                ));
            }
            if let Some(a) = &sp.pipeline.assemble
                && a.wait() * 2 >= sp.lease
            {
                // A batch's first messages are leased while it fills.
                return Err(invalid(
                    format!("{key}.pipeline.assemble.wait"),
                    format!("must be under half the port's lease ({:?})", sp.lease),
                ));
            }
            sp.adapter.resolve_paths(base);
            claims
                .take(&format!("send port `{name}`"), &key, sp.adapter.resources())
                .map_err(|(k, m)| invalid(k, m))?;
            sp.adapter
                .build()
                .map_err(|e| invalid(format!("{key}.adapter"), e.to_string()))?;
            if let Some(b) = &mut sp.backup {
                b.retry
                    .check()
                    .map_err(|(k, m)| invalid(format!("{key}.backup.retry.{k}"), m))?;
                if (b.adapter.exchange() == Exchange::SolicitResponse)
                    != (sp.adapter.exchange() == Exchange::SolicitResponse)
                {
                    return Err(invalid(
                        format!("{key}.backup.adapter"),
                        "must be solicit-response exactly when the primary adapter is".into(),
                    ));
                }
                if sp.pipeline.assemble.is_some() {
                    return Err(invalid(
                        format!("{key}.backup"),
                        "a batching port (pipeline.assemble) cannot have a backup transport yet".into(),
                    ));
                }
                b.adapter.resolve_paths(base);
                claims
                    .take(
                        &format!("send port `{name}` (backup)"),
                        &format!("{key}.backup"),
                        b.adapter.resources(),
                    )
                    .map_err(|(k, m)| invalid(k, m))?;
                b.adapter
                    .build()
                    .map_err(|e| invalid(format!("{key}.backup.adapter"), e.to_string()))?;
            }
        }
        config.raw = toml::from_str(text).unwrap_or_default();
        Ok(config)
    }
}

/// What the locations and ports claim (addresses, folders...), so two
/// cannot take the same exclusive resource, whatever their adapter.
#[derive(Default)]
struct Claims {
    /// (owner, key of the claim, claim).
    taken: Vec<(String, String, Claim)>,
}

impl Claims {
    /// Take `claims` for `owner` (whose table is `key`); the error is
    /// (key, message), naming both.
    fn take(&mut self, owner: &str, key: &str, claims: Vec<Claim>) -> Result<(), (String, String)> {
        for claim in claims {
            let claim_key = format!("{key}.adapter.{}", claim.key);
            if let Some((other, other_key, _)) = self.taken.iter().find(|(_, _, c)| c.conflicts_with(&claim)) {
                return Err((
                    claim_key,
                    format!(
                        "{} is also the {} of {other} (`{other_key}`); two cannot share it",
                        claim.resource,
                        claim.resource.noun()
                    ),
                ));
            }
            self.taken.push((owner.to_string(), claim_key, claim));
        }
        Ok(())
    }
}

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// A node id for a node that names none: `<host name>-<random>`.
fn generated_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let random = sluice_model::MessageId::new().to_string().to_lowercase();
    let suffix = &random[random.len() - 8..];
    if host.is_empty() {
        format!("node-{suffix}")
    } else {
        format!("{host}-{suffix}")
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "`{name}` is not a valid name (use letters, digits, -, _ and .)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/sluice/sluice.toml"), Path::new("/etc/sluice"))
    }

    const GOOD: &str = r#"
data_dir = "data"

[receive_ports.in.locations.in-folder]
adapter = { type = "file", path = "in", mask = "*.xml" }

[send_ports.out]
filter = 'receive.port == "in"'
adapter = { type = "file", path = "/srv/out", file_name = "%SourceFileName%" }
retry = { count = 5, interval = "30s" }
"#;

    #[test]
    fn parses_and_resolves_paths() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/etc/sluice/data"));
        let loc = &c.receive_ports["in"].locations["in-folder"];
        let Some(f) = loc.adapter.downcast_ref::<sluice_adapters::file::FileReceiveConfig>() else {
            panic!("a file receive location")
        };
        assert_eq!(f.path, PathBuf::from("/etc/sluice/in"));
        let out = &c.send_ports["out"];
        let Some(f) = out.adapter.downcast_ref::<sluice_adapters::file::FileSendConfig>() else {
            panic!("a file send port")
        };
        assert_eq!(f.path, PathBuf::from("/srv/out"));
        assert_eq!((out.retry.count, out.retry.interval), (5, Duration::from_secs(30)));
        assert!(out.enabled);
    }

    #[test]
    fn the_store_defaults_to_the_sqlite_box_in_the_data_directory() {
        let c = load(GOOD).unwrap();
        let default = "sqlite:/etc/sluice/data/msgbox.sqlite";
        assert_eq!(c.store_url().to_string(), default);
        // A relative path is taken from the configuration file's folder.
        let c = load(&format!("store = \"sqlite:data/msgbox.sqlite\"\n{GOOD}")).unwrap();
        assert_eq!(c.store_url().to_string(), default);
        let c = load(&format!("store = \"sqlite:///srv/box.sqlite\"\n{GOOD}")).unwrap();
        assert_eq!(c.store_url().to_string(), "sqlite:/srv/box.sqlite");
        let e = load(&format!("store = \"mysql://db\"\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`store`") && e.contains("unknown scheme `mysql`") && e.contains("sqlite:"),
            "{e}"
        );
        let e = load(&format!(
            "store = \"postgres://postgres@127.0.0.1:5432/sluice\"\n{GOOD}"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("`store`") && e.contains("not built yet"), "{e}");
    }

    #[test]
    fn the_node_id_is_configured_or_made_once() {
        let c = load(&format!("node_id = \"node-a\"\n{GOOD}")).unwrap();
        assert_eq!(c.node_id().unwrap(), "node-a");
        let e = load(&format!("node_id = \"a b\"\n{GOOD}")).unwrap_err().to_string();
        assert!(e.contains("`node_id`"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let mut c = load(GOOD).unwrap();
        c.data_dir = dir.path().join("data");
        let id = c.node_id().unwrap();
        assert!(check_name(&id).is_ok(), "{id}");
        assert_eq!(c.node_id().unwrap(), id, "kept in the data directory");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("data").join(NODE_ID_FILE))
                .unwrap()
                .trim(),
            id
        );
    }

    #[test]
    fn tracking_is_on_by_default_and_checked() {
        let c = load(GOOD).unwrap();
        assert!(c.tracking.enabled && c.box_options("n").tracking);
        assert_eq!(c.tracking.keep, Duration::from_secs(7 * 86400));
        let c = load(&format!("{GOOD}\n[tracking]\nenabled = false\n")).unwrap();
        assert!(!c.box_options("n").tracking);
        let c = load(&format!("{GOOD}\n[tracking]\nkeep = \"36h\"\n")).unwrap();
        assert_eq!(c.tracking.keep, Duration::from_secs(36 * 3600));
        let e = load(&format!("{GOOD}\n[tracking]\nkeep = \"0s\"\n")).unwrap_err();
        assert!(e.to_string().contains("tracking.keep"), "{e}");
    }

    #[test]
    fn a_backup_transport_is_checked_like_the_primary() {
        let backup = |b: &str| {
            GOOD.replace(
                r#"retry = { count = 5, interval = "30s" }"#,
                &format!("retry = {{ count = 5, interval = \"30s\" }}\nbackup = {b}"),
            )
        };
        let c = load(&backup(
            r#"{ adapter = { type = "file", path = "spare" }, retry = { count = 1, interval = "5s" } }"#,
        ))
        .unwrap();
        let b = c.send_ports["out"].backup.as_ref().expect("backup");
        let Some(f) = b.adapter.downcast_ref::<sluice_adapters::file::FileSendConfig>() else {
            panic!("a file backup")
        };
        assert_eq!((f.path.as_path(), b.retry.count), (Path::new("/etc/sluice/spare"), 1));
        let e = load(&backup(
            r#"{ adapter = { type = "file", path = "spare" }, retry = { backoff = 0.5 } }"#,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("send_ports.out.backup.retry.backoff"), "{e}");
        let e = load(&backup(
            r#"{ adapter = { type = "http", url = "http://127.0.0.1:1/x", mode = "solicit-response" } }"#,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("send_ports.out.backup.adapter"), "{e}");
        let e = load(&backup(r#"{ retry = { count = 1 } }"#)).unwrap_err();
        assert!(e.to_string().contains("adapter"), "{e}");
    }

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        let c = load(GOOD).unwrap();
        let r = &c.send_ports["out"].retry;
        assert_eq!(
            (r.backoff, r.max_interval),
            (2.0, Duration::from_secs(3600)),
            "defaults"
        );
        let secs: Vec<u64> = (1..=9).map(|a| r.delay(a).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(r.delay(u32::MAX), Duration::from_secs(3600), "no overflow");
        let fixed = RetryConfig::fixed(3, Duration::from_millis(500));
        assert!((1..5).all(|a| fixed.delay(a) == Duration::from_millis(500)));
        let c = load(&GOOD.replace(
            "interval = \"30s\" }",
            "interval = \"2s\", backoff = 1.5, max_interval = \"5s\" }",
        ))
        .unwrap();
        let r = &c.send_ports["out"].retry;
        let ms: Vec<u128> = (1..=5).map(|a| r.delay(a).as_millis()).collect();
        assert_eq!(ms, [2000, 3000, 4500, 5000, 5000]);
        for (bad, key) in [
            ("backoff = 0.5", "retry.backoff"),
            ("max_interval = \"1s\"", "retry.max_interval"),
            ("max_interval = \"30d\"", "retry.max_interval"),
        ] {
            let e = load(&GOOD.replace("interval = \"30s\" }", &format!("interval = \"30s\", {bad} }}")))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("send_ports.out.{key}")), "{bad}: {e}");
        }
    }

    #[test]
    fn request_response_locations_are_checked() {
        let rr = r#"
data_dir = "data"
[receive_ports.web.locations.relay]
adapter = { type = "http", address = "127.0.0.1:1", mode = "request-response", response_timeout = "2s" }
[send_ports.out]
filter = 'receive.port == "web"'
adapter = { type = "http", url = "http://127.0.0.1:2/", mode = "solicit-response", tls_ca = "ca.pem" }
"#;
        // tls_ca resolves against the config's folder and must be readable.
        let e = load(rr).unwrap_err().to_string();
        assert!(
            e.contains("send_ports.out.adapter") && e.contains("/etc/sluice/ca.pem"),
            "{e}"
        );
        let rr = rr.replace(", tls_ca = \"ca.pem\"", "");
        let c = load(&rr).unwrap();
        assert_eq!(
            c.receive_ports["web"].locations["relay"].adapter.exchange(),
            Exchange::RequestResponse
        );
        let e = load(&rr.replace("response_timeout = \"2s\"", "response_timeout = \"0s\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("response_timeout"), "{e}");
        let e = load(&rr.replace("mode = \"request-response\"", "mode = \"request-reply\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("request-reply") && e.contains("request-response"), "{e}");
        let split = rr.replace(
            "[send_ports.out]",
            "pipeline = { disassemble = { type = \"lines\" } }\n[send_ports.out]",
        );
        let e = load(&split).unwrap_err().to_string();
        assert!(
            e.contains("relay.pipeline.disassemble") && e.contains("one response"),
            "{e}"
        );
        let batched = rr.replace(
            "mode = \"solicit-response\" }",
            "mode = \"solicit-response\" }\npipeline = { assemble = { type = \"json\", batch = 10, wait = \"1s\" } }",
        );
        let e = load(&batched).unwrap_err().to_string();
        assert!(
            e.contains("send_ports.out.pipeline.assemble") && e.contains("batches"),
            "{e}"
        );
        let tls = rr.replace(
            "response_timeout = \"2s\"",
            "response_timeout = \"2s\", tls = { cert = \"nope.pem\", key = \"nope.key\" }",
        );
        let e = load(&tls).unwrap_err().to_string();
        assert!(e.contains("tls.cert /etc/sluice/nope.pem"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = load(&GOOD.replace("mask =", "maks =")).unwrap_err().to_string();
        assert!(e.contains("unknown field `maks`") && e.contains("line 5"), "{e}");
        let e = load(&GOOD.replace("retry = {", "retries = {")).unwrap_err().to_string();
        assert!(e.contains("unknown field `retries`"), "{e}");
        let e = load(&GOOD.replace(r#"'receive.port == "in"'"#, r#"'receive.port = "in"'"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`send_ports.out.filter`") && e.contains("=="), "{e}");
        let e = load(&GOOD.replace("type = \"file\", path = \"in\"", "type = \"ftp\", path = \"in\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `ftp`"), "{e}");
        let e = load(&GOOD.replace("%SourceFileName%", "%Source%"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`send_ports.out.adapter`") && e.contains("%Source%"), "{e}");
        let e = load(&GOOD.replace("count = 5", "count = 5000000"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`send_ports.out.retry.count`"), "{e}");
        let e = load(&GOOD.replace("[send_ports.out]", "[send_ports.out]\nlease = \"500ms\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`send_ports.out.lease`"), "{e}");
        let e = load(&GOOD.replace("mask = \"*.xml\"", "mask = \"*.xml\", poll_interval = \"0s\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("poll_interval"), "{e}");
        let e = load("receive_ports = {}").unwrap_err().to_string();
        assert!(e.contains("missing field `data_dir`"), "{e}");
        let e = load(&format!(
            "{GOOD}\n[receive_ports.other.locations.in-folder]\nadapter = {{ type = \"file\", path = \"x\" }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("must be unique"), "{e}");
    }

    #[test]
    fn two_file_locations_cannot_watch_one_folder() {
        let two =
            format!("{GOOD}\n[receive_ports.in.locations.other]\nadapter = {{ type = \"file\", path = \"./in/\" }}\n");
        let e = load(&two).unwrap_err().to_string();
        assert!(
            e.contains("`receive_ports.in.locations.other.adapter.path`")
                && e.contains("/etc/sluice/./in/ is also the folder of receive location `in-folder`")
                && e.contains("receive_ports.in.locations.in-folder.adapter.path"),
            "{e}"
        );
        // One folder, masks that select different files: fine (as before the
        // claims were checked); masks that may select the same: refused.
        let masks = |a: &str, b: &str| {
            format!(
                "{GOOD}\n[receive_ports.in.locations.xml]\nadapter = {{ type = \"file\", path = \"/srv/drop\", mask = \"{a}\" }}\n\
                 [receive_ports.in.locations.csv]\nadapter = {{ type = \"file\", path = \"/srv/drop/\", mask = \"{b}\" }}\n"
            )
        };
        load(&masks("*.xml", "*.csv")).unwrap();
        load(&masks("orders-*.xml", "invoices-*.xml")).unwrap();
        for (a, b) in [("*.xml", "*.xml"), ("*", "*.csv"), ("*.xml", "a.xml")] {
            let e = load(&masks(a, b)).unwrap_err().to_string();
            assert!(e.contains("is also the folder of receive location"), "{a} {b}: {e}");
        }
        // Send ports may share a folder (or write where a location reads).
        let shared = format!(
            "{GOOD}\n[send_ports.copy]\nfilter = 'receive.port == \"in\"'\nadapter = {{ type = \"file\", path = \"/srv/out\" }}\n"
        );
        load(&shared).unwrap();
        // Port 0 is any free port: never a collision.
        let any = format!(
            "{GOOD}\n[receive_ports.web.locations.a]\nadapter = {{ type = \"http\", address = \"127.0.0.1:0\" }}\n\
             [receive_ports.web.locations.b]\nadapter = {{ type = \"http\", address = \"127.0.0.1:0\" }}\n"
        );
        load(&any).unwrap();
        let wild = format!(
            "{GOOD}\n[receive_ports.web.locations.a]\nadapter = {{ type = \"http\", address = \"0.0.0.0:8480\" }}\n\
             [receive_ports.web.locations.b]\nadapter = {{ type = \"http\", address = \"127.0.0.1:8480\" }}\n"
        );
        let e = load(&wild).unwrap_err().to_string();
        assert!(e.contains("is also the address of receive location `a`"), "{e}");
    }

    #[test]
    fn an_unknown_adapter_type_lists_the_known_ones() {
        let e = load(&GOOD.replace("type = \"file\", path = \"in\"", "type = \"ftp\", path = \"in\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `ftp`, expected `file` or `http`"), "{e}");
        assert_eq!(ReceiveAdapterConfig::kinds(), ["file", "http"]);
        assert_eq!(SendAdapterConfig::kinds(), ["file", "http"]);
    }

    #[test]
    fn two_http_locations_cannot_share_an_address() {
        let two = format!(
            "{GOOD}\n[receive_ports.web.locations.a]\nadapter = {{ type = \"http\", address = \"127.0.0.1:8480\" }}\n\
             [receive_ports.web.locations.b]\nadapter = {{ type = \"http\", address = \"127.0.0.1:8480\", path = \"/b\" }}\n"
        );
        let e = load(&two).unwrap_err().to_string();
        assert!(
            e.contains("adapter.address") && e.contains("is also the address of receive location"),
            "{e}"
        );
    }

    #[test]
    fn hosts_default_and_validate() {
        let c = load(GOOD).unwrap();
        let l = c.hosts["default"].limits().unwrap();
        assert_eq!(
            (l.max_in_flight, l.resume_in_flight, l.max_in_flight_bytes, l.memory),
            (1000, 800, 256 << 20, None)
        );
        assert_eq!(c.send_ports["out"].host, "default");
        assert!(c.metrics.is_none());

        let text = format!(
            "{GOOD}\n[hosts.big]\nmax_in_flight = 10\nmax_in_flight_bytes = \"64MiB\"\nmemory_high = \"512MiB\"\n[metrics]\naddress = \"127.0.0.1:9464\"\n"
        )
        .replace("[send_ports.out]", "[send_ports.out]\nhost = \"big\"");
        let c = load(&text).unwrap();
        let l = c.hosts["big"].limits().unwrap();
        assert_eq!(
            (l.max_in_flight, l.resume_in_flight, l.max_in_flight_bytes),
            (10, 8, 64 << 20)
        );
        assert_eq!(
            l.memory,
            Some(MemoryMarks {
                high: 512 << 20,
                low: (512 << 20) / 10 * 8
            })
        );
        assert_eq!(c.send_ports["out"].host, "big");
        assert_eq!(c.metrics.unwrap().address.port(), 9464);

        for (extra, wanted) in [
            (
                "[hosts.default]\nmax_in_flight = 10\nresume_in_flight = 10",
                &["`hosts.default.resume_in_flight`", "below max_in_flight"][..],
            ),
            ("[hosts.default]\nmax_in_flight = 0", &["`hosts.default.max_in_flight`"]),
            (
                "[hosts.default]\nmax_in_flight_bytes = \"1KiB\"",
                &["`hosts.default.max_in_flight_bytes`"],
            ),
            (
                "[hosts.default]\nmemory_low = \"100MiB\"",
                &["`hosts.default.memory_low`", "needs memory_high"],
            ),
            (
                "[hosts.default]\nmemory_high = \"100MiB\"\nmemory_low = \"200MiB\"",
                &["`hosts.default.memory_low`", "below memory_high"],
            ),
            ("[hosts.default]\nmax_in_flite = 3", &["unknown field `max_in_flite`"]),
            ("[hosts.\"a b\"]", &["`hosts.a b`"]),
            ("[metrics]\naddress = \"localhost\"", &["address = ", "IP:port"]),
        ] {
            let e = load(&format!("{GOOD}\n{extra}\n")).unwrap_err().to_string();
            assert!(wanted.iter().all(|w| e.contains(w)), "{extra}: {e}");
        }
        let e = load(&GOOD.replace("[send_ports.out]", "[send_ports.out]\nhost = \"nope\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`send_ports.out.host`") && e.contains("no host `nope`"),
            "{e}"
        );
        let e = load(&GOOD.replace("mask = \"*.xml\" }", "mask = \"*.xml\" }\nhost = \"nope\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`receive_ports.in.locations.in-folder.host`"), "{e}");
    }
}
