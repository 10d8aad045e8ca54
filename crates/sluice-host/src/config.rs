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
//!
//! [api]                                  # optional: the REST API is off without it
//! address = "127.0.0.1:8470"
//! tls = { cert = "cert.pem", key = "key.pem" }
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

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    /// The file is not TOML: every syntax error found.
    #[error("configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The file is TOML but not a valid configuration: every problem found
    /// (in the order of the file), not only the first.
    #[error("configuration file {path}: {}", Problems(problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

impl ConfigError {
    /// The problems found (none for a file that cannot be read or parsed).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

/// One thing wrong in a configuration: the key it is about (with the line
/// of the file, when known) and what is wrong, with the valid choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `send_ports.out.filter`, `hosts.default.max_in_flight`, or
    /// `SLUICE_STORE (environment)`.
    pub key: String,
    /// The line of the file (1-based) the key is on.
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    /// `` `send_ports.out.filter` (line 12): ... ``; the lines of a message
    /// of several are indented under the first.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`", self.key)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        write!(f, ": {}", self.message.trim_end().replace('\n', "\n    "))
    }
}

/// A list of problems: one on the line, several one a line below a count.
struct Problems<'a>(&'a [Problem]);

impl std::fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} errors", many.len())?;
                for p in many {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

/// A configuration for commands that only read the box, read as far as it
/// goes: see [`Config::load_for_reading`].
#[derive(Debug)]
pub struct ForReading {
    /// The configuration: its data directory and store are valid; any
    /// other part may be missing or unchecked when there are problems.
    pub config: Config,
    /// Why the configuration as a whole is not valid, if it is not.
    pub problems: Option<ConfigError>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the message box lives (relative to the configuration file).
    pub data_dir: PathBuf,
    pub receive_ports: BTreeMap<String, ReceivePortConfig>,
    pub send_ports: BTreeMap<String, SendPortConfig>,
    /// Throttling budgets by host name; `default` always exists (with the
    /// defaults unless configured).
    pub hosts: BTreeMap<String, HostConfig>,
    /// The Prometheus endpoint; off unless configured.
    pub metrics: Option<MetricsConfig>,
    /// The REST API; off unless configured.
    pub api: Option<sluice_api::ApiConfig>,
    /// Tracking of what happened to messages (on, kept 7 days, by default).
    pub tracking: TrackingConfig,
    /// `[box]`: what the message box indexes.
    pub box_config: BoxConfig,
    /// The message box, as a store URL (`sqlite:PATH`, a relative path
    /// against the folder of this file). The environment variable
    /// [`STORE_ENV`] wins over it; without either, the SQLite box
    /// `msgbox.sqlite` in `data_dir`. See [`Config::store_url`].
    pub store: Option<String>,
    /// This node's id: the leases, holds and staged interchanges it owns in
    /// the box carry it. Default: one generated at the first start and kept
    /// in `<data_dir>/node-id`. See [`Config::node_id`].
    pub node_id: Option<String>,
    /// `log_messages = true`: the node logs one line at `info` for each
    /// message it receives (location, message id, source, size) and each
    /// it delivers (send port, message id, destination). Default false:
    /// those lines are at `debug`.
    pub log_messages: bool,
    /// The folder of the configuration file (set by [`Config::load`]).
    pub base_dir: PathBuf,
    /// The configuration file, as it was named when read (for messages).
    pub path: PathBuf,
    /// The store, resolved (set by [`Config::load`]).
    store_url: Option<sluice_store::StoreUrl>,
    /// The file's tables as written (set when it is read): a reload
    /// compares them to tell which locations and ports changed.
    pub(crate) raw: RawTables,
}

/// A configuration file's tables as written: inline secrets included, so
/// never printed (`Debug` shows `RawTables(..)`).
#[derive(Clone, Default)]
pub(crate) struct RawTables(pub(crate) toml::Table);

impl std::fmt::Debug for RawTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawTables(..)")
    }
}

/// The keys of the top level of a configuration file.
const TOP_KEYS: [&str; 11] = [
    "data_dir",
    "store",
    "node_id",
    "log_messages",
    "receive_ports",
    "send_ports",
    "hosts",
    "metrics",
    "api",
    "tracking",
    "box",
];

/// What a duration looks like, added to an error about one: an example
/// and every unit accepted (`humantime`'s).
pub const DURATION_HELP: &str = "a duration is a number and a unit, e.g. \"90s\", \"500ms\" or \"1h 30m\"; \
    units: ns, us, ms, s (sec, seconds), m (min, minutes), h (hr, hours), d (days), w (weeks), M (months), y (years)";

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

/// `[box]`: `index = ["order.id", ...]`, context properties whose string
/// values the box indexes, so that a message search by `order.id == "A1"`
/// (the API's and portal's `where`) is a lookup, not a scan. Each costs the
/// box an index row per message that has it; the node fills in or drops
/// rows for the messages already in the box when the list changes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxConfig {
    #[serde(default)]
    pub index: Vec<String>,
}

/// Most properties `[box] index` may name.
pub const MAX_INDEXED: usize = 16;

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

#[derive(Debug, Clone, Default, Deserialize)]
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
    /// Where the host's receive locations and send ports run: in the
    /// node's process (`in-process`, the default) or in a host instance of
    /// their own (`process`), a child process the node supervises.
    #[serde(default)]
    pub isolation: Isolation,
    /// An isolated host's instance whose RSS goes over this is recycled:
    /// drained (it stops taking work and finishes what it holds), then
    /// started again. Off unless set; at least 16MiB; `process` only.
    #[serde(default)]
    pub memory_limit: Option<ByteSize>,
    /// How long a recycled (or restarted, or stopping) instance may take to
    /// finish what it holds before it is killed (default 30s, 1s–1h).
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

/// `[hosts.<name>] isolation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// In the node's process.
    #[default]
    InProcess,
    /// In a host instance: a child process of the node.
    Process,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::InProcess => "in-process",
            Isolation::Process => "process",
        }
    }
}

fn default_location_share() -> u8 {
    50
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The least `memory_limit` an isolated host may have: a host instance
/// takes about 15 MiB before it does anything.
pub const MIN_MEMORY_LIMIT: u64 = 16 << 20;

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            max_in_flight: default_max_in_flight(),
            resume_in_flight: None,
            max_in_flight_bytes: default_max_in_flight_bytes(),
            memory_high: None,
            memory_low: None,
            location_share: default_location_share(),
            isolation: Isolation::InProcess,
            memory_limit: None,
            drain_timeout: default_drain_timeout(),
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
        if let Some(limit) = self.memory_limit {
            if self.isolation != Isolation::Process {
                return Err((
                    "memory_limit",
                    "needs isolation = \"process\" (a node's own memory is limited by memory_high)".into(),
                ));
            }
            if limit.0 < MIN_MEMORY_LIMIT {
                return Err(("memory_limit", "must be at least 16MiB".into()));
            }
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.drain_timeout) {
            return Err(("drain_timeout", "must be between 1s and 1h".into()));
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
    /// Where to listen for `GET /metrics` (e.g. `127.0.0.1:9464`, or
    /// `localhost:9464` resolved at load; port 0 picks a free one).
    #[serde(deserialize_with = "sluice_adapters::support::net::deserialize_listen_address")]
    pub address: SocketAddr,
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
    /// Messages sent at the same time; unset: the adapter's default
    /// ([`SendAdapter::default_concurrency`](sluice_adapters::SendAdapter::default_concurrency)),
    /// see [`concurrency`](Self::concurrency).
    #[serde(default)]
    pub concurrency: Option<usize>,
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

impl SendPortConfig {
    /// Messages sent at the same time: as configured, or its adapter's
    /// default (HTTP 128, FILE 8: BENCHMARKS.md, issue 14).
    pub fn concurrency(&self) -> usize {
        self.concurrency.unwrap_or_else(|| self.adapter.default_concurrency())
    }
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
            index: self
                .box_config
                .index
                .iter()
                .filter_map(|k| sluice_msgbox::Key::parse(k))
                .collect(),
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

    /// Read, parse and validate a configuration file. Every problem found
    /// is reported ([`ConfigError::Invalid`]), not only the first.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let (text, base) = read_file(path)?;
        Config::from_toml(&text, path, &base)
    }

    /// Read a configuration file for a command that only reads the box
    /// (`status`, `messages`, `suspended list`): a configuration broken
    /// elsewhere must not block looking into the box during an incident.
    /// It fails only when the box cannot be found: the file cannot be read
    /// or parsed, or `data_dir` or the store is invalid. Otherwise the
    /// configuration is what could be read, with the problems of the rest.
    pub fn load_for_reading(path: &Path) -> Result<ForReading, ConfigError> {
        let (text, base) = read_file(path)?;
        let mut read = Reader::read(&text, &base);
        let blocking = read.syntax
            || read
                .problems
                .iter()
                .any(|p| p.key == "data_dir" || p.key == "store" || p.key.starts_with(STORE_ENV));
        match read.config.take() {
            Some(config) if !blocking => Ok(ForReading {
                config,
                problems: (!read.problems.is_empty()).then(|| read.error(path)),
            }),
            _ => Err(read.error(path)),
        }
    }

    /// Parse and validate configuration text; `base` is the folder relative paths start from.
    pub fn from_toml(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut read = Reader::read(text, base);
        match read.config.take() {
            Some(mut config) if read.problems.is_empty() => {
                config.path = path.to_path_buf();
                Ok(config)
            }
            _ => Err(read.error(path)),
        }
    }
}

/// A TOML syntax error without the quoted line of the file (`3 | password
/// = "abc`) and its caret: the line can hold an inline secret, and the
/// error is logged (a refused reload) as well as printed. The position and
/// the explanation stay.
fn without_source_lines(error: &str) -> String {
    error
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            let quoted = t.starts_with('|') || t.split_once('|').is_some_and(|(n, _)| n.trim().parse::<u64>().is_ok());
            !quoted && !t.is_empty()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text of a configuration file and the folder relative paths start from.
fn read_file(path: &Path) -> Result<(String, PathBuf), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let base = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((text, base))
}

type Raw<'t> = toml::Spanned<toml::de::DeValue<'t>>;

/// What reading a configuration found: the configuration (unless its
/// `data_dir` could not be read) and every problem, in the order of the file.
struct Read {
    config: Option<Config>,
    problems: Vec<Problem>,
    /// The problems are TOML syntax errors: nothing else was checked.
    syntax: bool,
}

impl Read {
    /// Why the configuration cannot be used.
    fn error(self, path: &Path) -> ConfigError {
        let path = path.to_path_buf();
        if self.syntax {
            let message = self.problems.into_iter().map(|p| p.message).collect::<Vec<_>>();
            return ConfigError::Parse {
                path,
                message: message.join("\n"),
            };
        }
        ConfigError::Invalid {
            path,
            problems: self.problems,
        }
    }
}

/// Reads a configuration a table at a time, so that a table that does not
/// deserialize is reported and the others are still read and checked.
struct Reader<'t> {
    text: &'t str,
    problems: Vec<Problem>,
    /// The line of every key of the file (`send_ports.out.filter`), for
    /// problems found after reading.
    lines: HashMap<String, usize>,
    /// Where the value of every key of the file is, to name the key of an
    /// error found inside a table (the innermost value that holds it).
    values: Vec<(String, std::ops::Range<usize>)>,
}

impl<'t> Reader<'t> {
    fn read(text: &'t str, base: &Path) -> Read {
        let (root, syntax) = toml::de::DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            let problems = syntax
                .into_iter()
                .map(|mut e| {
                    e.set_input(Some(text));
                    Problem {
                        key: String::new(),
                        line: None,
                        message: without_source_lines(&e.to_string()),
                    }
                })
                .collect();
            return Read {
                config: None,
                problems,
                syntax: true,
            };
        }
        let mut r = Reader {
            text,
            problems: Vec::new(),
            lines: HashMap::new(),
            values: Vec::new(),
        };
        r.note_lines("", root.get_ref());
        let mut config = Config {
            data_dir: PathBuf::new(),
            receive_ports: BTreeMap::new(),
            send_ports: BTreeMap::new(),
            hosts: BTreeMap::new(),
            metrics: None,
            api: None,
            tracking: TrackingConfig::default(),
            box_config: BoxConfig::default(),
            store: None,
            node_id: None,
            log_messages: false,
            base_dir: base.to_path_buf(),
            path: PathBuf::new(),
            store_url: None,
            raw: RawTables(toml::from_str(text).unwrap_or_default()),
        };
        let mut data_dir = None;
        let mut data_dir_given = false;
        for (key, value) in root.into_inner() {
            let (key_at, key) = (key.span().start, key.into_inner());
            match key.as_ref() {
                "data_dir" => {
                    data_dir_given = true;
                    data_dir = r.value::<PathBuf>("data_dir", value);
                }
                "store" => config.store = r.value("store", value),
                "node_id" => config.node_id = r.value("node_id", value),
                "log_messages" => config.log_messages = r.value("log_messages", value).unwrap_or(false),
                "tracking" => config.tracking = r.value("tracking", value).unwrap_or_default(),
                "box" => config.box_config = r.value("box", value).unwrap_or_default(),
                "metrics" => config.metrics = r.value("metrics", value),
                "api" => config.api = r.value("api", value),
                "hosts" => {
                    for (name, value) in r.table("hosts", value) {
                        if let Some(host) = r.value(&format!("hosts.{name}"), value) {
                            config.hosts.insert(name, host);
                        }
                    }
                }
                "receive_ports" => {
                    for (port, value) in r.table("receive_ports", value) {
                        let key = format!("receive_ports.{port}");
                        let mut pc = ReceivePortConfig::default();
                        for (field, (field_at, value)) in r.table_at(&key, value) {
                            if field != "locations" {
                                r.unknown(&key, &field, field_at, &["locations"]);
                                continue;
                            }
                            for (name, value) in r.table(&format!("{key}.locations"), value) {
                                if let Some(lc) = r.value(&format!("{key}.locations.{name}"), value) {
                                    pc.locations.insert(name, lc);
                                }
                            }
                        }
                        config.receive_ports.insert(port, pc);
                    }
                }
                "send_ports" => {
                    for (name, value) in r.table("send_ports", value) {
                        if let Some(sp) = r.value(&format!("send_ports.{name}"), value) {
                            config.send_ports.insert(name, sp);
                        }
                    }
                }
                other => r.unknown("", other, key_at, &TOP_KEYS),
            }
        }
        match data_dir {
            Some(dir) => config.data_dir = if dir.is_absolute() { dir } else { base.join(dir) },
            None if !data_dir_given => r.problem(
                "data_dir",
                "missing field `data_dir`: the folder of the node's data, e.g. data_dir = \"data\"",
            ),
            None => {}
        }
        r.check(&mut config, base);
        // In the order of the file; problems without a line last.
        r.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Read {
            config: data_dir_given
                .then_some(config)
                .filter(|c| !c.data_dir.as_os_str().is_empty()),
            problems: r.problems,
            syntax: false,
        }
    }

    fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// Remember the line of every key under `prefix`.
    fn note_lines(&mut self, prefix: &str, table: &toml::de::DeTable<'t>) {
        for (key, value) in table.iter() {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            self.lines.insert(path.clone(), self.line_at(key.span().start));
            self.values.push((path.clone(), value.span()));
            if let toml::de::DeValue::Table(inner) = value.get_ref() {
                self.note_lines(&path, inner);
            }
        }
    }

    /// A problem with `key`, on the line of the key (or of the nearest
    /// table around it).
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let mut at = key.as_str();
        let line = loop {
            if let Some(line) = self.lines.get(at) {
                break Some(*line);
            }
            match at.rsplit_once('.') {
                Some((up, _)) => at = up,
                None => break None,
            }
        };
        self.problems.push(Problem {
            key,
            line,
            message: message.into(),
        });
    }

    fn unknown(&mut self, table: &str, field: &str, at: usize, expected: &[&str]) {
        let key = if table.is_empty() {
            field.to_string()
        } else {
            format!("{table}.{field}")
        };
        let expected: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
        self.problems.push(Problem {
            key,
            line: Some(self.line_at(at)),
            message: format!("unknown field `{field}`, expected one of {}", expected.join(", ")),
        });
    }

    /// `value` as a `T`; a problem (and `None`) if it is not one.
    fn value<T: serde::de::DeserializeOwned>(&mut self, key: &str, value: Raw<'t>) -> Option<T> {
        match T::deserialize(toml::de::ValueDeserializer::from(value)) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut message = e.message().trim_end().to_string();
                if message.ends_with("expected a duration") {
                    message = format!("{message}: {DURATION_HELP}");
                }
                // The innermost key around the error, within this table.
                let at = e.span().map(|s| s.start);
                let within = format!("{key}.");
                let inner = at.and_then(|at| {
                    self.values
                        .iter()
                        .filter(|(path, span)| path.starts_with(&within) && span.contains(&at))
                        .max_by_key(|(path, _)| path.len())
                });
                self.problems.push(Problem {
                    key: inner.map_or(key, |(path, _)| path).to_string(),
                    line: at.map(|at| self.line_at(at)),
                    message,
                });
                None
            }
        }
    }

    /// The entries of a table, by name; a problem if `value` is not a table.
    fn table(&mut self, key: &str, value: Raw<'t>) -> Vec<(String, Raw<'t>)> {
        self.table_at(key, value)
            .into_iter()
            .map(|(name, (_, value))| (name, value))
            .collect()
    }

    /// [`Reader::table`], with where each name is in the text.
    fn table_at(&mut self, key: &str, value: Raw<'t>) -> Vec<(String, (usize, Raw<'t>))> {
        let at = value.span().start;
        match value.into_inner() {
            toml::de::DeValue::Table(t) => t
                .into_iter()
                .map(|(name, value)| (name.get_ref().to_string(), (name.span().start, value)))
                .collect(),
            other => {
                self.problems.push(Problem {
                    key: key.to_string(),
                    line: Some(self.line_at(at)),
                    message: format!("must be a table, not a {}", other.type_str()),
                });
                Vec::new()
            }
        }
    }

    /// Check what deserializing cannot: names, ranges, filters, hosts,
    /// claims, adapters; resolve paths and the store. Every problem is
    /// noted and the checks go on.
    fn check(&mut self, config: &mut Config, base: &Path) {
        let from_env = std::env::var(STORE_ENV).ok().filter(|v| !v.trim().is_empty());
        let (store_key, store) = match (&from_env, &config.store) {
            (Some(url), _) => (format!("{STORE_ENV} (environment)"), Some(url.trim())),
            (None, Some(url)) => ("store".to_string(), Some(url.as_str())),
            (None, None) => (String::new(), None),
        };
        if let Some(url) = store {
            match sluice_store::StoreUrl::parse(url)
                .map(|u| u.resolve(base))
                .and_then(|u| u.check().map(|()| u))
            {
                Ok(url) => config.store_url = Some(url),
                Err(e) => self.problem(store_key, e.to_string()),
            }
        }
        if let Some(id) = &config.node_id
            && let Err(m) = check_name(id)
        {
            self.problem("node_id", m);
        }
        if config.tracking.keep < Duration::from_secs(1) || config.tracking.keep > Duration::from_secs(10 * 365 * 86400)
        {
            self.problem(
                "tracking.keep",
                "must be between 1s and 10 years (to keep no tracking, set tracking.enabled = false)",
            );
        }
        let index = &config.box_config.index;
        if index.len() > MAX_INDEXED {
            self.problem(
                "box.index",
                format!("names {} properties; at most {MAX_INDEXED}", index.len()),
            );
        }
        for (i, key) in index.iter().enumerate() {
            if sluice_msgbox::Key::parse(key).is_none() {
                self.problem(
                    "box.index",
                    format!("`{key}` is not a property key (`namespace.name` or `name`, as filters write it)"),
                );
            } else if index[..i].contains(key) {
                self.problem("box.index", format!("`{key}` is named twice"));
            }
        }
        if let Some(api) = &mut config.api {
            api.resolve_paths(base);
            for (key, problem) in api.problems() {
                self.problem(format!("api.{key}"), problem);
            }
        }
        config.hosts.entry(DEFAULT_HOST.to_string()).or_default();
        for (name, hc) in &config.hosts {
            let key = format!("hosts.{name}");
            if let Err(m) = check_name(name) {
                self.problem(key.clone(), m);
            }
            if let Err((k, m)) = hc.limits() {
                self.problem(format!("{key}.{k}"), m);
            }
        }
        let hosts: Vec<String> = config.hosts.keys().cloned().collect();
        let check_host = |r: &mut Self, key: &str, host: &str| {
            if !hosts.iter().any(|h| h == host) {
                r.problem(
                    format!("{key}.host"),
                    format!("no host `{host}` is configured (add a [hosts.{host}] table)"),
                );
            }
        };
        let mut locations: HashMap<String, String> = HashMap::new();
        let mut claims = Claims::default();
        for (port, pc) in &mut config.receive_ports {
            if let Err(m) = check_name(port) {
                self.problem(format!("receive_ports.{port}"), m);
            }
            for (name, lc) in &mut pc.locations {
                let key = format!("receive_ports.{port}.locations.{name}");
                if let Err(m) = check_name(name) {
                    self.problem(key.clone(), m);
                }
                if let Some(other) = locations.insert(name.clone(), port.clone()) {
                    self.problem(
                        key.clone(),
                        format!("receive location names must be unique; `{name}` is also in receive port `{other}`"),
                    );
                }
                check_host(self, &key, &lc.host);
                if let Err(m) = lc.pipeline.validate() {
                    self.problem(format!("{key}.pipeline"), m);
                }
                if lc.adapter.exchange() == Exchange::RequestResponse && lc.pipeline.disassemble.is_some() {
                    self.problem(
                        format!("{key}.pipeline.disassemble"),
                        "a request-response location answers each request with one response; it cannot split \
                         the request into many messages (use one-way)",
                    );
                }
                lc.adapter.resolve_paths(base);
                if let Err((k, m)) = claims.take(&format!("receive location `{name}`"), &key, lc.adapter.resources()) {
                    self.problem(k, m);
                }
                if let Err(e) = lc.adapter.build() {
                    self.problem(format!("{key}.adapter"), e.to_string());
                }
            }
        }
        for (name, sp) in &mut config.send_ports {
            let key = format!("send_ports.{name}");
            if let Err(m) = check_name(name) {
                self.problem(key.clone(), m);
            }
            match Filter::parse(&sp.filter) {
                // The box stores the filter as text: it must read back the same.
                Ok(filter) if Filter::parse(&filter.to_string()).ok().as_ref() != Some(&filter) => {
                    self.problem(
                        format!("{key}.filter"),
                        format!("cannot be stored faithfully (as `{filter}`)"),
                    );
                }
                Ok(filter) => sp.parsed_filter = Some(filter),
                Err(e) => self.problem(format!("{key}.filter"), e.to_string()),
            }
            if !(1..=10_000).contains(&sp.concurrency()) {
                self.problem(format!("{key}.concurrency"), "must be between 1 and 10000");
            }
            if sp.lease < Duration::from_secs(1) || sp.lease > WEEK {
                self.problem(format!("{key}.lease"), "must be between 1s and 7 days");
            }
            if let Err((k, m)) = sp.retry.check() {
                self.problem(format!("{key}.retry.{k}"), m);
            }
            check_host(self, &key, &sp.host);
            if let Err(m) = sp.pipeline.validate() {
                self.problem(format!("{key}.pipeline"), m);
            }
            if sp.adapter.exchange() == Exchange::SolicitResponse && sp.pipeline.assemble.is_some() {
                self.problem(
                    format!("{key}.pipeline.assemble"),
                    "a solicit-response port answers each request with one response; it cannot send batches",
                );
            }
            if sp.adapter.delivers_in_parts() && sp.pipeline.assemble.is_some() {
                self.problem(
                    format!("{key}.pipeline.assemble"),
                    format!(
                        "a `{}` port keeps track of each message's recipients; it cannot send batches",
                        sp.adapter.kind()
                    ),
                );
            }
            if let Some(a) = &sp.pipeline.assemble
                && a.wait() * 2 >= sp.lease
            {
                // A batch's first messages are leased while it fills.
                self.problem(
                    format!("{key}.pipeline.assemble.wait"),
                    format!("must be under half the port's lease ({:?})", sp.lease),
                );
            }
            sp.adapter.resolve_paths(base);
            if let Err((k, m)) = claims.take(&format!("send port `{name}`"), &key, sp.adapter.resources()) {
                self.problem(k, m);
            }
            if let Err(e) = sp.adapter.build() {
                self.problem(format!("{key}.adapter"), e.to_string());
            }
            if let Some(b) = &mut sp.backup {
                if let Err((k, m)) = b.retry.check() {
                    self.problem(format!("{key}.backup.retry.{k}"), m);
                }
                if (b.adapter.exchange() == Exchange::SolicitResponse)
                    != (sp.adapter.exchange() == Exchange::SolicitResponse)
                {
                    self.problem(
                        format!("{key}.backup.adapter"),
                        "must be solicit-response exactly when the primary adapter is",
                    );
                }
                if sp.pipeline.assemble.is_some() {
                    self.problem(
                        format!("{key}.backup"),
                        "a batching port (pipeline.assemble) cannot have a backup transport yet",
                    );
                }
                b.adapter.resolve_paths(base);
                if let Err((k, m)) = claims.take(
                    &format!("send port `{name}` (backup)"),
                    &format!("{key}.backup"),
                    b.adapter.resources(),
                ) {
                    self.problem(k, m);
                }
                if let Err(e) = b.adapter.build() {
                    self.problem(format!("{key}.backup.adapter"), e.to_string());
                }
            }
        }
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

    /// A port's concurrency is what it says, or what suits its adapter;
    /// out of range is a configuration error naming the key.
    #[test]
    fn a_send_ports_concurrency_defaults_to_its_adapters() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.send_ports["out"].concurrency(), 8, "FILE");
        let http = format!(
            "{GOOD}\n[send_ports.web]\nfilter = 'receive.port == \"in\"'\nadapter = {{ type = \"http\", url = \"http://127.0.0.1:9/\" }}\n"
        );
        let c = load(&http).unwrap();
        assert_eq!(c.send_ports["web"].concurrency(), 128, "HTTP");
        let c = load(&format!("{http}concurrency = 3\n")).unwrap();
        assert_eq!(c.send_ports["web"].concurrency(), 3, "as configured");
        let e = load(&format!("{http}concurrency = 0\n")).unwrap_err().to_string();
        assert!(e.contains("send_ports.web.concurrency"), "{e}");
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
    fn the_box_index_names_property_keys() {
        let c = load(GOOD).unwrap();
        assert!(c.box_options("n").index.is_empty());
        let c = load(&format!("{GOOD}\n[box]\nindex = [\"order.id\", \"customer\"]\n")).unwrap();
        let keys: Vec<String> = c.box_options("n").index.iter().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["order.id", "customer"]);
        for bad in [r#"["order."]"#, r#"["a", "a"]"#, r#"["1x"]"#] {
            let e = load(&format!("{GOOD}\n[box]\nindex = {bad}\n")).unwrap_err();
            assert!(e.to_string().contains("box.index"), "{bad}: {e}");
        }
        let e = load(&format!("{GOOD}\n[box]\nindexes = []\n")).unwrap_err();
        assert!(e.to_string().contains("indexes"), "{e}");
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
        let mail = "[send_ports.mail]\nfilter = 'x == 1'\nadapter = { type = \"smtp\", url = \"smtp://h\", \
                    from = \"a@x.example\", to = \"b@x.example\" }\n\
                    pipeline = { assemble = { type = \"json\", batch = 10, wait = \"1s\" } }\n";
        let e = load(mail).unwrap_err().to_string();
        assert!(
            e.contains("send_ports.mail.pipeline.assemble")
                && e.contains("`smtp` port keeps track of each message's recipients"),
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
        let e = load(&GOOD.replace("type = \"file\", path = \"in\"", "type = \"pigeon\", path = \"in\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `pigeon`"), "{e}");
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

    /// `sluice check` and the node's start report every problem of a file,
    /// each with its key and line, in the order of the file.
    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let text = format!(
            "node_idd = \"x\"\n{}\n[send_ports.b]\nfilter = 'all'\nadapter = {{ type = \"file\", path = \"b\" }}\n\
             lease = \"90\"\n[send_ports.c]\nfilter = 'all'\nadapter = {{ type = \"file\", path = \"c\" }}\nhost = \"nope\"\n",
            GOOD.replace("mask =", "maks =")
                .replace(r#"'receive.port == "in"'"#, r#"'receive.port = "in"'"#)
        );
        let e = load(&text).unwrap_err();
        let found: Vec<(&str, Option<usize>)> = e.problems().iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            found,
            [
                ("node_idd", Some(1)),
                ("receive_ports.in.locations.in-folder.adapter", Some(6)),
                ("send_ports.out.filter", Some(9)),
                ("send_ports.b.lease", Some(16)),
                ("send_ports.c.host", Some(20)),
            ],
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.starts_with("configuration file /etc/sluice/sluice.toml: 5 errors\n  `node_idd` (line 1): "),
            "{text}"
        );
        for wanted in [
            "unknown field `maks`",
            "`send_ports.out.filter` (line 9): invalid filter",
            "unknown field `node_idd`, expected one of `data_dir`",
            "no host `nope` is configured",
        ] {
            assert!(text.contains(wanted), "{wanted}: {text}");
        }
    }

    #[test]
    fn a_duration_error_gives_an_example_and_every_unit() {
        for bad in ["90", "5 parsecs", "soon"] {
            let e = load(&GOOD.replace("interval = \"30s\"", &format!("interval = \"{bad}\""))).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("`send_ports.out.retry.interval` (line 10)")
                    && text.contains("e.g. \"90s\"")
                    && [
                        "ns",
                        "us",
                        "ms",
                        "s (sec",
                        "m (min",
                        "h (hr",
                        "d (days)",
                        "w (weeks)",
                        "M (months)",
                        "y (years)"
                    ]
                    .iter()
                    .all(|unit| text.contains(unit)),
                "{bad}: {text}"
            );
        }
        let e = load(&GOOD.replace("interval = \"30s\"", "interval = 30")).unwrap_err();
        assert!(e.to_string().contains("e.g. \"90s\""), "{e}");
    }

    #[test]
    fn a_listening_address_may_name_a_host() {
        let c = load(&format!("{GOOD}\n[metrics]\naddress = \"localhost:9464\"\n")).unwrap();
        assert_eq!(c.metrics.unwrap().address.to_string(), "127.0.0.1:9464");
        let c = load(&format!(
            "{GOOD}\n[receive_ports.web.locations.h]\nadapter = {{ type = \"http\", address = \"localhost:8490\" }}\n"
        ))
        .unwrap();
        let Some(h) = c.receive_ports["web"].locations["h"]
            .adapter
            .downcast_ref::<sluice_adapters::http::HttpReceiveConfig>()
        else {
            panic!("an http receive location")
        };
        assert_eq!(h.address.to_string(), "127.0.0.1:8490");
    }

    #[test]
    fn syntax_errors_stop_the_reading() {
        let e = load("data_dir = \"data\"\n[send_ports.out\nfilter = 'all'\n").unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");
        // The quoted line could hold an inline secret: only where and why.
        let e = load("data_dir = \"data\"\npassword = \"s3cr3t-value\n").unwrap_err();
        assert!(!e.to_string().contains("s3cr3t-value"), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");
        // Nor does a configuration's Debug show its tables as written.
        let c = load("data_dir = \"data\"\n[receive_ports.r.locations.l]\nadapter = { type = \"http\", address = \"127.0.0.1:0\", path = \"/in\", auth = { type = \"bearer\", token = \"s3cr3t-token\" } }\n").unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t-token"), "{c:?}");
    }

    /// Commands that only read the box need its place: a configuration
    /// broken elsewhere still gives it, with its problems.
    #[test]
    fn reading_the_box_needs_only_the_data_directory_and_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        let broken = GOOD.replace(r#"'receive.port == "in"'"#, r#"'receive.port = "in"'"#);
        std::fs::write(&path, format!("store = \"sqlite:box.sqlite\"\n{broken}")).unwrap();
        assert!(Config::load(&path).is_err());
        let r = Config::load_for_reading(&path).unwrap();
        let base = dir.path().canonicalize().unwrap();
        assert_eq!(r.config.data_dir, base.join("data"));
        assert_eq!(
            r.config.store_url().to_string(),
            format!("sqlite:{}", base.join("box.sqlite").display())
        );
        let problems = r.problems.expect("the problems");
        assert_eq!(problems.problems()[0].key, "send_ports.out.filter");
        // A valid configuration has no problems.
        std::fs::write(&path, GOOD).unwrap();
        assert!(Config::load_for_reading(&path).unwrap().problems.is_none());
        // Without a valid data_dir or store the box cannot be found.
        for bad in [
            broken.replace("data_dir = \"data\"", ""),
            broken.replace("data_dir = \"data\"", "data_dir = 5"),
            format!("store = \"mysql://db\"\n{broken}"),
            "data_dir = \"data\"\n[broken".to_string(),
        ] {
            std::fs::write(&path, &bad).unwrap();
            assert!(Config::load_for_reading(&path).is_err(), "{bad}");
        }
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
        let e = load(&GOOD.replace("type = \"file\", path = \"in\"", "type = \"gopher\", path = \"in\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown variant `gopher`, expected one of `file`, `http`, `ftp`, `sftp`"),
            "{e}"
        );
        assert_eq!(
            ReceiveAdapterConfig::kinds(),
            ["file", "http", "ftp", "sftp", "pop3", "imap"]
        );
        assert_eq!(
            SendAdapterConfig::kinds(),
            ["file", "http", "chaos", "ftp", "sftp", "smtp"]
        );
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
            ("[metrics]\naddress = \"localhost\"", &["`metrics", "IP:port"]),
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
