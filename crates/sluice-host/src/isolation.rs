//! Isolated hosts, the node's side: one supervisor per host with
//! `isolation = "process"`, which starts its host instance (a child
//! process, `sluice host-instance`), serves its calls on the box over a
//! Unix socket in the data directory (`hosts/<host>.sock`), watches its
//! memory, recycles it, and starts it again when it dies.
//!
//! Architecture Invariant: an instance's death costs nothing but time.
//! When its connection ends, everything it held goes back at once (see
//! `sluice_channel`'s server: leases ready again, its interchanges
//! aborted, its unpublished content dropped); its receive locations'
//! claims are settled by the next instance's recovery, as after a node's
//! crash. A recycle (memory over `memory_limit`, a changed configuration,
//! an operator's restart) drains first: the instance stops taking work and
//! finishes what it holds, so it loses nothing and delivers nothing twice;
//! past `drain_timeout` it is killed, which loses nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_channel::{Connection, GivenBack, InstanceHandle, NodeSide, wire};
use sluice_msgbox::MessageBox;
use tokio::net::UnixListener;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Wakers;
use crate::config::{Config, HostConfig, Isolation};
use crate::metrics::Metrics;
use crate::node::{self, Runs};
use crate::operate::Stopped;
use crate::status::{HostStatus, HostView, InstanceStatus};

/// How often the node reads an instance's resident memory (a read of
/// `/proc/PID/statm`): often, so that a fast leak overshoots the limit by
/// little before the instance is asked to drain.
const WATCH_EVERY: Duration = Duration::from_millis(50);
/// How long a started instance has to connect and say hello.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);
/// An instance that ends sooner than this after it started counts toward
/// a crash loop; one that ran longer starts again at once (its work is
/// ready again: it should be delivered again within a second).
const QUICK_FAILURE: Duration = Duration::from_secs(1);
/// The longest wait between two starts of a crash-looping instance.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Starts in a row that ended quickly before the host is reported as
/// crash-looping.
const CRASH_LOOP: u32 = 3;
/// Or this many deaths within [`CRASH_WINDOW`], however long each ran.
const CRASH_LOOP_DEATHS: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// How often an instance's RSS is kept for the portal's chart without an
/// API (with one: its `sample_every`); an hour of samples is kept.
const RSS_SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// An isolated host as the node sees it (status, API, portal).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostRecord {
    /// `starting`, `running`, `draining`, `backoff` (waiting to start
    /// again after a crash), `crash-loop`, `stopped`, `failed` (cannot run
    /// at all: its socket cannot be made).
    pub state: &'static str,
    /// The running instance, if one is.
    pub instance: Option<InstanceRecord>,
    /// Instances that ended without being asked (crashed, killed).
    pub restarts: u64,
    /// Instances drained and replaced (memory limit, configuration
    /// change, operator's restart).
    pub recycles: u64,
    /// Of the recycles, those over the memory limit.
    pub memory_recycles: u64,
    /// Why the last instance ended, as an operator reads it.
    pub last_exit: Option<String>,
    /// Its instances keep ending (see `CRASH_LOOP`, `CRASH_LOOP_DEATHS`).
    pub crash_loop: bool,
    /// (Unix ms, RSS bytes) of the instances, oldest first.
    pub rss_history: Vec<(i64, u64)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct InstanceRecord {
    pub pid: u32,
    /// When it started (Unix ms).
    pub started_at_ms: i64,
    pub rss_bytes: u64,
    /// Messages it received and delivered.
    pub handled: u64,
    /// Its host's throttle, as it last said (JSON of a `HostStatus`).
    #[serde(skip)]
    pub host_status: Option<String>,
}

/// What the node runs now, for the instances it starts.
struct Current {
    config: Config,
    stopped: Stopped,
}

/// A request to a supervisor.
enum Ask {
    /// Drain the running instance and start another (why).
    Recycle(String),
}

struct Supervisor {
    record: Arc<Mutex<HostRecord>>,
    asks: mpsc::Sender<Ask>,
    task: JoinHandle<()>,
    /// The host's units as last started (their fingerprint).
    fingerprint: String,
    /// The running instance's handle, for wake-ups.
    slot: Arc<Mutex<Option<InstanceHandle>>>,
    forwarders: Arc<Mutex<Forwarders>>,
}

/// One isolated host, as its supervisor runs it.
struct Host {
    name: String,
    hc: HostConfig,
    record: Arc<Mutex<HostRecord>>,
    slot: Arc<Mutex<Option<InstanceHandle>>>,
    forwarders: Arc<Mutex<Forwarders>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every isolated host's supervisor.
pub(crate) struct Isolated {
    hosts: BTreeMap<String, Supervisor>,
    current: Arc<Mutex<Arc<Current>>>,
    stop: CancellationToken,
    wakers: Arc<Wakers>,
}

/// What supervisors share.
struct Ctx {
    /// How often an instance's RSS is kept, and how many samples (an hour).
    rss_every: Duration,
    rss_samples: usize,
    mbox: Arc<dyn MessageBox>,
    wakers: Arc<Wakers>,
    metrics: Arc<Metrics>,
    data_dir: PathBuf,
    exe: PathBuf,
    current: Arc<Mutex<Arc<Current>>>,
}

impl Isolated {
    /// Start a supervisor for every isolated host of `config` (running it
    /// with the units in `stopped` turned off).
    pub(crate) fn start(
        config: &Config,
        stopped: &Stopped,
        mbox: Arc<dyn MessageBox>,
        wakers: Arc<Wakers>,
        metrics: Arc<Metrics>,
    ) -> Result<Isolated, crate::HostError> {
        let current = Arc::new(Mutex::new(Arc::new(Current {
            config: config.clone(),
            stopped: stopped.clone(),
        })));
        let stop = CancellationToken::new();
        let mut hosts = BTreeMap::new();
        let running = crate::operate::with_stopped(config, stopped);
        // The running binary, even once a package upgrade replaced its file:
        // an instance must speak this node's protocol.
        let exe = if Path::new("/proc/self/exe").exists() {
            PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("sluice"))
        };
        let rss_every = config.api.as_ref().map(|a| a.sample_every).unwrap_or(RSS_SAMPLE_EVERY);
        let ctx = Arc::new(Ctx {
            rss_every,
            rss_samples: (3600 / rss_every.as_secs().max(1)).clamp(2, 3600) as usize,
            mbox,
            wakers,
            metrics,
            data_dir: config.data_dir.clone(),
            exe,
            current: current.clone(),
        });
        for (name, hc) in config.hosts.iter().filter(|(_, hc)| hc.isolation == Isolation::Process) {
            let record = Arc::new(Mutex::new(HostRecord {
                state: "starting",
                ..Default::default()
            }));
            // A socket that cannot be made stops the start, naming it, as
            // a taken address does for a receive location.
            let socket = listen(&config.data_dir, name).map_err(|e| crate::HostError::Start {
                what: format!("isolated host `{name}`"),
                message: format!(
                    "cannot listen on its socket {}: {e}",
                    socket_path(&config.data_dir, name).display()
                ),
            })?;
            let (asks, rx) = mpsc::channel(1);
            let slot: Arc<Mutex<Option<InstanceHandle>>> = Arc::default();
            let forwarders = Arc::new(Mutex::new(Forwarders {
                by_port: HashMap::new(),
            }));
            lock(&forwarders).reconcile(&running, name, &ctx.wakers, &slot);
            let task = tokio::spawn(supervise(
                Host {
                    name: name.clone(),
                    hc: hc.clone(),
                    record: record.clone(),
                    slot: slot.clone(),
                    forwarders: forwarders.clone(),
                },
                ctx.clone(),
                socket,
                rx,
                stop.clone(),
            ));
            hosts.insert(
                name.clone(),
                Supervisor {
                    record,
                    asks,
                    task,
                    fingerprint: node::host_fingerprint(&running, name),
                    slot,
                    forwarders,
                },
            );
        }
        Ok(Isolated {
            hosts,
            current,
            stop,
            wakers: ctx.wakers.clone(),
        })
    }

    /// The node now runs `config` with `stopped`: an isolated host whose
    /// units changed is recycled onto it. Returns what changed, one line each.
    pub(crate) fn update(&mut self, config: &Config, stopped: &Stopped) -> Vec<String> {
        *lock(&self.current) = Arc::new(Current {
            config: config.clone(),
            stopped: stopped.clone(),
        });
        let running = crate::operate::with_stopped(config, stopped);
        let mut changes = Vec::new();
        for (name, sup) in &mut self.hosts {
            // Wake-ups follow the ports at once (a port moved back to the
            // node must not lose its wake-ups to a forwarder meanwhile).
            lock(&sup.forwarders).reconcile(&running, name, &self.wakers, &sup.slot);
            let fingerprint = node::host_fingerprint(&running, name);
            if fingerprint != sup.fingerprint {
                sup.fingerprint = fingerprint;
                let _ = sup.asks.try_send(Ask::Recycle("its configuration changed".into()));
                changes.push(format!("host `{name}` recycled onto the new configuration"));
            }
        }
        changes
    }

    /// A view of every host for reports, usable from anywhere.
    pub(crate) fn view(&self) -> HostsView {
        HostsView {
            records: self
                .hosts
                .iter()
                .map(|(name, sup)| (name.clone(), sup.record.clone()))
                .collect(),
            asks: self
                .hosts
                .iter()
                .map(|(name, sup)| (name.clone(), sup.asks.clone()))
                .collect(),
            current: self.current.clone(),
            started: Instant::now(),
        }
    }

    /// Start draining every instance (each within its `drain_timeout`).
    pub(crate) fn begin_stop(&self) {
        self.stop.cancel();
    }

    /// Drain every instance and wait for them to end.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        for (_, sup) in self.hosts {
            let _ = sup.task.await;
        }
    }
}

/// Why a restart was not asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No such isolated host.
    NotIsolated,
    /// A recycle is already waiting.
    Busy,
    /// Its supervisor ended (the node is stopping, or its socket failed).
    Stopped,
}

/// Where every host runs, for the node's reports (status, API, portal).
#[derive(Clone)]
pub(crate) struct HostsView {
    records: BTreeMap<String, Arc<Mutex<HostRecord>>>,
    asks: BTreeMap<String, mpsc::Sender<Ask>>,
    current: Arc<Mutex<Arc<Current>>>,
    /// When the node started.
    started: Instant,
}

impl HostsView {
    /// Each host of the configuration the node runs, with its instances.
    pub(crate) fn hosts(&self, metrics: &Metrics) -> Vec<HostView> {
        let current = lock(&self.current).clone();
        let running = crate::operate::with_stopped(&current.config, &current.stopped);
        let node_rss = crate::throttle::current_rss().unwrap_or(0);
        let now = crate::now_ms();
        current
            .config
            .hosts
            .iter()
            .map(|(name, hc)| {
                let mut view = HostView {
                    name: name.clone(),
                    isolation: hc.isolation.as_str().to_string(),
                    memory_limit: hc.memory_limit.map(|l| l.0),
                    ..Default::default()
                };
                match self.records.get(name) {
                    Some(record) => {
                        let r = lock(record);
                        view.last_exit = r.last_exit.clone();
                        view.crash_loop = r.crash_loop;
                        let i = r.instance.clone().unwrap_or_default();
                        view.instances.push(InstanceStatus {
                            pid: i.pid,
                            rss_bytes: i.rss_bytes,
                            uptime_s: if i.pid == 0 {
                                0
                            } else {
                                ((now - i.started_at_ms).max(0) / 1000) as u64
                            },
                            handled: i.handled,
                            recycles: r.recycles,
                            memory_recycles: r.memory_recycles,
                            restarts: r.restarts,
                            state: r.state.to_string(),
                        });
                    }
                    None => {
                        let runs = Runs::Host(name.clone());
                        let received: u64 = runs.locations(&running).map(|(l, _)| metrics.published_total(l)).sum();
                        let delivered: u64 = running
                            .send_ports
                            .iter()
                            .filter(|(_, sp)| sp.host == *name)
                            .map(|(p, _)| metrics.delivered_total(p))
                            .sum();
                        view.instances.push(InstanceStatus {
                            pid: std::process::id(),
                            rss_bytes: node_rss,
                            uptime_s: self.started.elapsed().as_secs(),
                            handled: received + delivered,
                            state: "running".into(),
                            ..Default::default()
                        });
                    }
                }
                view
            })
            .collect()
    }

    /// The throttle of each isolated host as its instance last reported it.
    pub(crate) fn throttles(&self) -> BTreeMap<String, HostStatus> {
        self.records
            .iter()
            .filter_map(|(name, record)| {
                let r = lock(record);
                let text = r.instance.as_ref()?.host_status.as_ref()?;
                Some((name.clone(), serde_json::from_str(text).ok()?))
            })
            .collect()
    }

    /// Drain isolated host `name`'s instance and start another.
    pub(crate) fn restart(&self, name: &str, why: &str) -> Result<(), Refused> {
        let asks = self.asks.get(name).ok_or(Refused::NotIsolated)?;
        asks.try_send(Ask::Recycle(why.to_string())).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refused::Busy,
            mpsc::error::TrySendError::Closed(_) => Refused::Stopped,
        })
    }

    /// The RSS samples of host `name`'s instances (isolated hosts).
    pub(crate) fn rss_history(&self, name: &str) -> Option<Vec<(i64, u64)>> {
        let record = self.records.get(name)?;
        Some(lock(record).rss_history.clone())
    }
}

/// The node's end of one instance's channel.
struct NodeEnd {
    wakers: Arc<Wakers>,
    metrics: Arc<Metrics>,
    record: Arc<Mutex<HostRecord>>,
    /// The instance's totals as last reported, per unit.
    last: Mutex<HashMap<String, u64>>,
}

impl NodeSide for NodeEnd {
    fn queued(&self, subscribers: &mut dyn Iterator<Item = &str>) {
        for s in subscribers {
            self.wakers.wake(s);
        }
    }

    fn stats(&self, stats: wire::Stats) {
        let mut last = lock(&self.last);
        for (location, total) in &stats.received {
            let before = last.insert(format!("r:{location}"), *total).unwrap_or(0);
            self.metrics.published_many(location, total.saturating_sub(before));
        }
        for (port, total) in &stats.delivered {
            let before = last.insert(format!("d:{port}"), *total).unwrap_or(0);
            self.metrics.delivered_many(port, total.saturating_sub(before));
        }
        let mut record = lock(&self.record);
        if let Some(i) = &mut record.instance {
            i.handled = stats.handled();
            i.host_status = Some(stats.host_status);
        }
    }
}

/// The resident memory of process `pid`.
fn rss_of(pid: u32) -> Option<u64> {
    crate::throttle::rss_from(&format!("/proc/{pid}/statm"))
}

/// The socket host `host`'s instance connects to.
pub(crate) fn socket_path(data_dir: &Path, host: &str) -> PathBuf {
    data_dir.join("hosts").join(format!("{host}.sock"))
}

/// Listen on the host's socket: a folder only this user can enter, a
/// socket only this user can open, an old one (a crash) replaced.
fn listen(data_dir: &Path, host: &str) -> std::io::Result<(UnixListener, u64)> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let path = socket_path(data_dir, host);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, std::fs::metadata(&path)?.ino()))
}

/// Start host `host`'s instance: this binary, `host-instance`, killed if
/// the node dies (and when its handle is dropped).
fn spawn(exe: &Path, host: &str, socket: &Path) -> std::io::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.arg("host-instance")
        .arg("--host")
        .arg(host)
        .arg("--socket")
        .arg(socket)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    // Killed when the thread that started it ends: the node's runtime
    // threads live as long as the node. A node that died between the fork
    // and the prctl is caught by the parent check.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe and touch nothing of
    // the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the node ended as the host instance started"));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// How a child ended, as an operator reads it.
fn describe(status: &std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) if s.success() => "exited normally".into(),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (_, Some(libc::SIGKILL)) => "killed (SIGKILL: by the node past its drain timeout, by an operator, or by \
                                         the kernel's out-of-memory killer)"
                .into(),
            (_, Some(sig)) => format!("killed by signal {sig}"),
            _ => format!("ended ({s})"),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

/// Why a running instance is being drained.
#[derive(Debug, Clone, PartialEq)]
enum Draining {
    Memory(u64),
    Asked(String),
    Stopping,
}

/// Wake-ups for the ports of an isolated host, forwarded to its instance
/// (the node's `Wakers` is where every publish wakes a port).
struct Forwarders {
    by_port: HashMap<String, CancellationToken>,
}

impl Forwarders {
    /// Forward exactly the subscribers of `host`'s units in `config`.
    fn reconcile(
        &mut self,
        config: &Config,
        host: &str,
        wakers: &Arc<Wakers>,
        slot: &Arc<Mutex<Option<InstanceHandle>>>,
    ) {
        let want = host_subscribers(config, host);
        self.by_port.retain(|port, stop| {
            let keep = want.contains(port);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for port in want {
            if self.by_port.contains_key(&port) {
                continue;
            }
            let stop = CancellationToken::new();
            let (notify, slot, name) = (wakers.of(&port), slot.clone(), port.clone());
            let until = stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = notify.notified() => {}
                        _ = until.cancelled() => break,
                    }
                    let handle = lock(&slot).clone();
                    if let Some(h) = handle {
                        h.wake(&name);
                    }
                }
            });
            self.by_port.insert(port, stop);
        }
    }
}

impl Drop for Forwarders {
    fn drop(&mut self) {
        for stop in self.by_port.values() {
            stop.cancel();
        }
    }
}

/// Run host `host`'s instances, one at a time, until `stop`.
async fn supervise(
    host: Host,
    ctx: Arc<Ctx>,
    (listener, inode): (UnixListener, u64),
    mut asks: mpsc::Receiver<Ask>,
    stop: CancellationToken,
) {
    let name = host.name.clone();
    let set = |f: &dyn Fn(&mut HostRecord)| f(&mut lock(&host.record));
    let socket = socket_path(&ctx.data_dir, &name);
    let mut quick_failures = 0u32;
    // Deaths in the last CRASH_WINDOW: an instance that dies a while after
    // its start, again and again (a message that kills it), is a crash
    // loop too, reported though it starts again at once.
    let mut deaths: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    let mut last_sample = Instant::now() - ctx.rss_every;
    'instances: while !stop.is_cancelled() {
        let current = lock(&ctx.current).clone();
        let running = crate::operate::with_stopped(&current.config, &current.stopped);
        lock(&host.forwarders).reconcile(&running, &name, &ctx.wakers, &host.slot);
        // A new instance runs the configuration of now: a recycle asked
        // while there was none (a drain, a wait) has nothing left to do.
        while asks.try_recv().is_ok() {}
        set(&|r| r.state = "starting");
        let started = Instant::now();
        // Deaths spread over the window clear only after a run as long.
        let clears_after = if deaths.len() >= CRASH_LOOP_DEATHS {
            CRASH_WINDOW
        } else {
            QUICK_FAILURE
        };
        let outcome = run_one(
            &host,
            &ctx,
            &current,
            (&listener, &socket),
            &mut asks,
            &stop,
            (&mut last_sample, clears_after),
        )
        .await;
        *lock(&host.slot) = None;
        let ran = started.elapsed();
        let delay = match outcome {
            Ended::Drained(Draining::Stopping) => break 'instances,
            Ended::Drained(Draining::Memory(_)) => {
                ctx.metrics.instance_ended(&name, false);
                set(&|r| {
                    r.recycles += 1;
                    r.memory_recycles += 1;
                });
                quick_failures = 0;
                Duration::ZERO
            }
            Ended::Drained(Draining::Asked(_)) => {
                ctx.metrics.instance_ended(&name, false);
                set(&|r| r.recycles += 1);
                quick_failures = 0;
                Duration::ZERO
            }
            Ended::Died => {
                ctx.metrics.instance_ended(&name, true);
                set(&|r| r.restarts += 1);
                let now = Instant::now();
                deaths.push_back(now);
                while deaths.front().is_some_and(|d| now.duration_since(*d) > CRASH_WINDOW) {
                    deaths.pop_front();
                }
                if ran < QUICK_FAILURE {
                    quick_failures += 1;
                } else {
                    quick_failures = 0;
                }
                // The first quick failure starts again at once too (a kill
                // just after a start is not a loop); then 100ms, doubling.
                if quick_failures <= 1 {
                    Duration::ZERO
                } else {
                    (Duration::from_millis(100) * 2u32.saturating_pow(quick_failures - 2)).min(MAX_BACKOFF)
                }
            }
        };
        if stop.is_cancelled() {
            break;
        }
        let crash_loop = quick_failures >= CRASH_LOOP || deaths.len() >= CRASH_LOOP_DEATHS;
        ctx.metrics.instance_crash_loop(&name, crash_loop);
        if crash_loop {
            tracing::error!(host = %name, deaths_in_window = deaths.len(), quick_failures, next_start_in = ?delay,
                "isolated host is crash-looping: its instance keeps ending ({} deaths in the last {:?}); its messages \
                 wait in the box", deaths.len(), CRASH_WINDOW);
        }
        if delay > Duration::ZERO {
            set(&|r| r.state = if crash_loop { "crash-loop" } else { "backoff" });
            if !crash_loop {
                tracing::warn!(host = %name, next_start_in = ?delay, "starting the isolated host's instance again after a wait");
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => break,
            }
        }
        if crash_loop {
            set(&|r| r.crash_loop = true);
        }
    }
    set(&|r| {
        r.state = "stopped";
        r.instance = None;
    });
    // Only the socket this supervisor made (another node's, after a data
    // directory was moved under it, is not ours).
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata(&socket).is_ok_and(|m| m.ino() == inode) {
        let _ = std::fs::remove_file(&socket);
    }
}

enum Ended {
    /// It was drained (and exited, or was killed past its drain timeout).
    Drained(Draining),
    /// It ended by itself (crashed, killed, failed to start or connect).
    Died,
}

/// The connection of process `pid` on `listener`, within `CONNECT_WITHIN`:
/// one from another process is dropped (and logged), and the wait goes on.
async fn accept_from(listener: &UnixListener, host: &str, pid: u32) -> Option<Connection> {
    let deadline = tokio::time::Instant::now() + CONNECT_WITHIN;
    loop {
        let accepted = tokio::time::timeout_at(deadline, listener.accept()).await;
        let stream = match accepted {
            Err(_) => {
                tracing::error!(host = %host, pid, "the host instance did not connect within {CONNECT_WITHIN:?}; killing it");
                return None;
            }
            Ok(Err(e)) => {
                tracing::error!(host = %host, error = %e, "cannot accept the host instance's connection");
                return None;
            }
            Ok(Ok((stream, _))) => stream,
        };
        let peer = stream.peer_cred().ok().and_then(|c| c.pid());
        if peer != Some(pid as i32) {
            tracing::error!(host = %host, expected = pid, peer = ?peer,
                "a process other than the host instance connected to its socket; dropped");
            continue;
        }
        let within = deadline.saturating_duration_since(tokio::time::Instant::now());
        return match Connection::accept(stream, within).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(host = %host, pid, error = %e, "the host instance's channel did not open");
                None
            }
        };
    }
}

/// Start one instance and watch it until it ends.
async fn run_one(
    host: &Host,
    ctx: &Ctx,
    current: &Current,
    (listener, socket): (&UnixListener, &Path),
    asks: &mut mpsc::Receiver<Ask>,
    stop: &CancellationToken,
    (last_sample, clears_after): (&mut Instant, Duration),
) -> Ended {
    let (name, hc) = (host.name.as_str(), &host.hc);
    let set = |f: &mut dyn FnMut(&mut HostRecord)| f(&mut lock(&host.record));
    // What it runs: the node's configuration as TOML (secrets included:
    // over the 0600 socket to our own child, never logged).
    let config = match toml::to_string(&current.config.raw.0) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(host = %name, error = %e, "cannot write the configuration for the host instance");
            set(&mut |r| r.last_exit = Some(format!("could not start: the configuration cannot be written: {e}")));
            return Ended::Died;
        }
    };
    let mut child = match spawn(&ctx.exe, name, socket) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(host = %name, exe = %ctx.exe.display(), error = %e, "cannot start the isolated host's instance");
            set(&mut |r| r.last_exit = Some(format!("could not start: {e}")));
            return Ended::Died;
        }
    };
    let pid = child.id().unwrap_or(0);
    // Its connection, checked to come from the process just started.
    let conn = tokio::select! {
        conn = accept_from(listener, name, pid) => conn,
        status = child.wait() => {
            let why = describe(&status);
            tracing::error!(host = %name, pid, exit = %why, "the host instance ended before it connected");
            set(&mut |r| r.last_exit = Some(why.clone()));
            return Ended::Died;
        }
        _ = stop.cancelled() => None,
    };
    let Some(conn) = conn else {
        let _ = child.start_kill();
        let status = child.wait().await;
        set(&mut |r| r.last_exit = Some(describe(&status)));
        return if stop.is_cancelled() {
            Ended::Drained(Draining::Stopping)
        } else {
            Ended::Died
        };
    };
    let start = wire::Start {
        config,
        config_path: current.config.path.display().to_string(),
        base_dir: current.config.base_dir.display().to_string(),
        stopped: current
            .stopped
            .iter()
            .map(|(kind, name)| (kind.as_str().to_string(), name.clone()))
            .collect(),
    };
    if let Err(e) = conn.start(start).await {
        tracing::error!(host = %name, pid, error = %e, "cannot tell the host instance what to run");
        let _ = child.start_kill();
        let status = child.wait().await;
        set(&mut |r| r.last_exit = Some(describe(&status)));
        return Ended::Died;
    }
    let handle = conn.handle();
    *lock(&host.slot) = Some(handle.clone());
    let started_at_ms = crate::now_ms();
    set(&mut |r| {
        r.state = "running";
        r.instance = Some(InstanceRecord {
            pid,
            started_at_ms,
            ..Default::default()
        });
    });
    tracing::info!(host = %name, pid, "host instance started");
    let node_end = Arc::new(NodeEnd {
        wakers: ctx.wakers.clone(),
        metrics: ctx.metrics.clone(),
        record: host.record.clone(),
        last: Mutex::default(),
    });
    let mut serving = tokio::spawn(conn.serve(ctx.mbox.clone(), node_end));
    let mut given: Option<GivenBack> = None;
    // Everything queued for its ports while it was away: look now.
    let running = crate::operate::with_stopped(&current.config, &current.stopped);
    for port in host_subscribers(&running, name) {
        handle.wake(&port);
    }
    let mut draining: Option<(Instant, Draining)> = None;
    let mut killed = false;
    // Once it has run a while, the host is no longer crash-looping.
    let up = Instant::now();
    let mut settled = false;
    let mut ticks = tokio::time::interval(WATCH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let begin_drain = |why: Draining, draining: &mut Option<(Instant, Draining)>| {
        let handle = handle.clone();
        tokio::spawn(async move { handle.drain().await });
        *draining = Some((Instant::now(), why));
    };
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            // The node's end of the channel ended while the instance lives
            // (it sent what the node cannot read): what it held is given
            // back, so it must not go on; kill it.
            served = &mut serving, if given.is_none() => {
                given = Some(served.unwrap_or_default());
                // An instance that is ending closes its channel first.
                if let Ok(status) = tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                    break status;
                }
                if !killed {
                    tracing::error!(host = %name, pid,
                        "the channel to the host instance ended while it runs; killing it (what it held is delivered again)");
                    let _ = child.start_kill();
                    killed = true;
                }
            }
            _ = ticks.tick() => {
                let rss = rss_of(pid).unwrap_or(0);
                ctx.metrics.instance_rss(name, Some(rss));
                if !settled && up.elapsed() >= clears_after {
                    settled = true;
                    ctx.metrics.instance_crash_loop(name, false);
                    set(&mut |r| r.crash_loop = false);
                }
                let now = crate::now_ms();
                let sample = last_sample.elapsed() >= ctx.rss_every;
                if sample {
                    *last_sample = Instant::now();
                }
                set(&mut |r| {
                    if let Some(i) = &mut r.instance {
                        i.rss_bytes = rss;
                    }
                    if sample {
                        if r.rss_history.len() >= ctx.rss_samples {
                            r.rss_history.remove(0);
                        }
                        r.rss_history.push((now, rss));
                    }
                });
                if let Some(limit) = hc.memory_limit
                    && rss > limit.0
                    && draining.is_none()
                {
                    tracing::warn!(host = %name, pid, rss_bytes = rss, memory_limit = limit.0,
                        "host instance is over its memory limit; recycling it: it finishes what it holds, then a new one starts");
                    begin_drain(Draining::Memory(rss), &mut draining);
                    set(&mut |r| r.state = "draining");
                }
                if let Some((since, why)) = &draining
                    && !killed
                    && since.elapsed() > hc.drain_timeout
                    && matches!(child.try_wait(), Ok(None))
                {
                    tracing::error!(host = %name, pid, drain_timeout = ?hc.drain_timeout, reason = ?why,
                        "host instance did not finish within its drain timeout; killing it (what it held is given back and delivered again)");
                    let _ = child.start_kill();
                    killed = true;
                }
            }
            Some(Ask::Recycle(why)) = asks.recv(), if draining.is_none() => {
                tracing::info!(host = %name, pid, reason = %why, "recycling the host instance");
                begin_drain(Draining::Asked(why), &mut draining);
                set(&mut |r| r.state = "draining");
            }
            _ = stop.cancelled(), if draining.is_none() => {
                begin_drain(Draining::Stopping, &mut draining);
                set(&mut |r| r.state = "draining");
            }
        }
    };
    *lock(&host.slot) = None;
    ctx.metrics.instance_rss(name, None);
    // Its socket is closed with it; what it held goes back now.
    if given.is_none() {
        given = match tokio::time::timeout(Duration::from_secs(60), &mut serving).await {
            Ok(Ok(g)) => Some(g),
            Ok(Err(e)) => {
                tracing::error!(host = %name, pid, error = %e,
                    "giving back what the host instance held failed; its leases are ready again when they expire");
                None
            }
            Err(_) => {
                tracing::warn!(host = %name, pid,
                    "the node's box did not answer the host instance's last calls within 60 s; its leases are ready \
                     again when they expire, its unpublished content is dropped at the node's next start");
                serving.abort();
                None
            }
        };
    }
    let why = describe(&status);
    let expected = draining.is_some() && !killed && status.as_ref().is_ok_and(|s| s.success());
    if let Some(g) = given
        && (g.leases > 0 || g.interchanges > 0 || g.contents > 0)
    {
        tracing::info!(host = %name, pid, leases = g.leases, interchanges = g.interchanges, contents = g.contents,
            "gave back what the host instance held: its leased messages are ready to be delivered again");
    }
    if expected {
        tracing::info!(host = %name, pid, "host instance ended after draining");
    } else {
        tracing::error!(host = %name, pid, exit = %why, "host instance ended");
    }
    set(&mut |r| {
        r.last_exit = Some(why.clone());
        r.instance = None;
    });
    match draining {
        Some((_, d)) if expected || (killed && status.is_ok()) => Ended::Drained(d),
        _ => Ended::Died,
    }
}

/// The subscribers of `host`'s units in `config`: its send ports, and the
/// responses of its request-response locations (`reply:<location>`).
fn host_subscribers(config: &Config, host: &str) -> Vec<String> {
    let runs = Runs::Host(host.to_string());
    let mut subscribers: Vec<String> = config
        .send_ports
        .iter()
        .filter(|(_, sp)| runs.host(&sp.host))
        .map(|(n, _)| n.clone())
        .collect();
    subscribers.extend(
        runs.locations(config)
            .filter(|(_, (_, lc))| node::is_request_response(lc))
            .map(|(n, _)| sluice_adapters::reply_subscriber(n)),
    );
    subscribers
}
