//! What operators do to a running node through the REST API: list its send
//! ports and receive locations, stop and start a port, disable and enable
//! a location. The choice is kept in the box (`MessageBox::stopped_units`),
//! so it holds across restarts and reloads: the node runs the
//! configuration file with every unit an operator stopped turned off
//! ([`with_stopped`]); a unit the file disables stays disabled.
//!
//! The API's handle ([`Handle`]) sends each request to the node's main
//! loop, which owns the running units and applies the change the way a
//! reload does (`Units::reload`, between the configuration with and
//! without the unit stopped), one request at a time.

use std::collections::BTreeSet;
use std::sync::Arc;

use sluice_api::hosts::{HostDetail, RssSample};
use sluice_api::units::{NodeControl, UnitState, UnitView};
use sluice_msgbox::{Counts, MessageBox, UnitKind};
use sluice_ops::OpsError;
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::node;

/// The units operators stopped.
pub(crate) type Stopped = BTreeSet<(UnitKind, String)>;

/// The configuration the node runs and the units operators stopped, as
/// the main loop answers: the API task makes its views from it, so the loop
/// never waits on the box for a list.
pub(crate) type Snapshot = (Arc<Config>, Stopped);

pub(crate) enum Request {
    List(oneshot::Sender<Snapshot>),
    Set {
        kind: UnitKind,
        name: String,
        run: bool,
        answer: oneshot::Sender<Result<Snapshot, OpsError>>,
    },
}

/// The API's way to the node's main loop.
pub(crate) struct Handle {
    pub(crate) tx: mpsc::Sender<Request>,
    pub(crate) mbox: Arc<dyn MessageBox>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) hosts: crate::isolation::HostsView,
}

impl Handle {
    fn host(&self, name: &str) -> Result<HostDetail, OpsError> {
        let host = self
            .hosts
            .hosts(&self.metrics)
            .into_iter()
            .find(|h| h.name == name)
            .ok_or_else(|| OpsError::NotFound(format!("no host `{name}` in the configuration")))?;
        let rss = self.rss(name);
        Ok(HostDetail { host, rss })
    }

    fn rss(&self, name: &str) -> Vec<RssSample> {
        self.hosts
            .rss_history(name)
            .unwrap_or_default()
            .into_iter()
            .map(|(at, rss_bytes)| RssSample { at, rss_bytes })
            .collect()
    }
}

fn stopping() -> OpsError {
    OpsError::Unavailable("the node is stopping".into())
}

/// How long the API waits for the node's main loop (a stop waits for the
/// port's deliveries in progress; a reload may be ahead in the line).
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

impl Handle {
    async fn ask<T>(&self, request: Request, rx: oneshot::Receiver<T>) -> Result<T, OpsError> {
        self.tx.send(request).await.map_err(|_| stopping())?;
        match tokio::time::timeout(ANSWER_WITHIN, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(stopping()),
            Err(_) => Err(OpsError::Unavailable(
                "the node did not answer within 2 minutes (a reload or a stop in progress); try again".into(),
            )),
        }
    }
}

#[async_trait::async_trait]
impl NodeControl for Handle {
    async fn units(&self, counts: &Counts) -> Result<Vec<UnitView>, OpsError> {
        let (answer, rx) = oneshot::channel();
        let (config, stopped) = self.ask(Request::List(answer), rx).await?;
        Ok(views(&config, &stopped, counts, &self.metrics))
    }

    async fn set_running(&self, kind: UnitKind, name: &str, run: bool) -> Result<UnitView, OpsError> {
        let (answer, rx) = oneshot::channel();
        let request = Request::Set {
            kind,
            name: name.to_string(),
            run,
            answer,
        };
        let (config, stopped) = self.ask(request, rx).await??;
        let counts = self.mbox.counts().await.map_err(|error| OpsError::Read {
            doing: "counting queue entries".into(),
            error,
        })?;
        views(&config, &stopped, &counts, &self.metrics)
            .into_iter()
            .find(|u| u.kind == kind && u.name == name)
            .ok_or_else(|| OpsError::NotFound(format!("no {} `{name}`", kind.as_str().replace('_', " "))))
    }

    async fn hosts(&self) -> Result<Vec<HostDetail>, OpsError> {
        Ok(self
            .hosts
            .hosts(&self.metrics)
            .into_iter()
            .map(|host| {
                let rss = self.rss(&host.name);
                HostDetail { host, rss }
            })
            .collect())
    }

    async fn restart_host(&self, name: &str, who: &str) -> Result<HostDetail, OpsError> {
        let before = self.host(name)?;
        use crate::isolation::Refused;
        match self.hosts.restart(name, &format!("restarted by {who}")) {
            Err(Refused::NotIsolated) => Err(OpsError::Conflict(format!(
                "host `{name}` runs in the node's process (isolation = \"{}\"): restart the node",
                before.host.isolation
            ))),
            Err(Refused::Busy) => Err(OpsError::Conflict(format!(
                "a restart of host `{name}` is already waiting; try again once its instance runs"
            ))),
            Err(Refused::Stopped) => Err(OpsError::Unavailable(format!(
                "host `{name}` is not supervised any more (the node is stopping)"
            ))),
            Ok(()) => self.host(name),
        }
    }
}

/// `config` with every unit in `stopped` turned off (`enabled = false`).
pub(crate) fn with_stopped(config: &Config, stopped: &Stopped) -> Config {
    let mut running = config.clone();
    for (kind, name) in stopped {
        match kind {
            UnitKind::SendPort => {
                if let Some(sp) = running.send_ports.get_mut(name) {
                    sp.enabled = false;
                }
            }
            UnitKind::ReceiveLocation => {
                for pc in running.receive_ports.values_mut() {
                    if let Some(lc) = pc.locations.get_mut(name) {
                        lc.enabled = false;
                    }
                }
            }
        }
    }
    running
}

/// Whether the file has the unit, and whether it enables it.
fn configured(config: &Config, kind: UnitKind, name: &str) -> Option<bool> {
    match kind {
        UnitKind::SendPort => config.send_ports.get(name).map(|sp| sp.enabled),
        UnitKind::ReceiveLocation => config
            .receive_ports
            .values()
            .find_map(|pc| pc.locations.get(name))
            .map(|lc| lc.enabled),
    }
}

/// The marks the box holds for units this file has. Marks of other names
/// are left alone: another node sharing the box may run them.
pub(crate) async fn load_stopped(config: &Config, mbox: &dyn MessageBox) -> Result<Stopped, sluice_msgbox::BoxError> {
    let mut stopped = Stopped::new();
    for (kind, name) in mbox.stopped_units().await? {
        if configured(config, kind, &name).is_none() {
            continue;
        }
        tracing::info!(kind = kind.as_str(), name = %name, "stopped by an operator (start it again through the API)");
        stopped.insert((kind, name));
    }
    Ok(stopped)
}

/// Every unit of the file, as the API shows it, with its queue from `counts`.
pub(crate) fn views(config: &Config, stopped: &Stopped, counts: &Counts, metrics: &Metrics) -> Vec<UnitView> {
    let state = |kind: UnitKind, name: &str, enabled: bool| match (enabled, stopped.contains(&(kind, name.to_string())))
    {
        (false, _) => UnitState::Disabled,
        (true, true) => UnitState::Stopped,
        (true, false) => UnitState::Running,
    };
    let mut out = Vec::new();
    for (name, sp) in &config.send_ports {
        out.push(UnitView {
            kind: UnitKind::SendPort,
            name: name.clone(),
            receive_port: None,
            adapter: sp.adapter.kind().to_string(),
            host: sp.host.clone(),
            state: state(UnitKind::SendPort, name, sp.enabled),
            queued: Some(counts.queued.get(name).copied().unwrap_or(0)),
            messages: metrics.delivered_total(name),
            per_second: None,
        });
    }
    for (port, pc) in &config.receive_ports {
        for (name, lc) in &pc.locations {
            out.push(UnitView {
                kind: UnitKind::ReceiveLocation,
                name: name.clone(),
                receive_port: Some(port.clone()),
                adapter: lc.adapter.kind().to_string(),
                host: lc.host.clone(),
                state: state(UnitKind::ReceiveLocation, name, lc.enabled),
                queued: None,
                messages: metrics.published_total(name),
                per_second: None,
            });
        }
    }
    out
}

/// Stop or run one unit: marked in the box, then applied as a reload
/// between the running configuration and the one with the change. A change
/// the node cannot apply (a location whose address is taken now) is undone
/// in the box and answered with why.
pub(crate) async fn set(
    config: &Config,
    stopped: &mut Stopped,
    units: &mut node::Units,
    shared: &node::Shared,
    (kind, name, run): (UnitKind, String, bool),
) -> Result<(), OpsError> {
    let what = kind.as_str().replace('_', " ");
    match configured(config, kind, &name) {
        None => return Err(OpsError::NotFound(format!("no {what} `{name}` in the configuration"))),
        Some(false) if run => {
            return Err(OpsError::Conflict(format!(
                "{what} `{name}` is disabled in the configuration file (enabled = false): enable it there and reload"
            )));
        }
        _ => {}
    }
    let key = (kind, name.clone());
    if stopped.contains(&key) != run {
        return Ok(()); // already so
    }
    let mark = |stop: bool| {
        let mbox = shared.mbox.clone();
        let name = name.clone();
        async move {
            mbox.set_unit_stopped(kind, &name, stop)
                .await
                .map_err(|error| OpsError::Read {
                    doing: format!("keeping the state of {} `{name}`", kind.as_str().replace('_', " ")),
                    error,
                })
        }
    };
    mark(!run).await?;
    let mut next = stopped.clone();
    if run {
        next.remove(&key);
    } else {
        next.insert(key);
    }
    let outcome = units
        .reload(shared, &with_stopped(config, stopped), &with_stopped(config, &next))
        .await;
    if !outcome.applied {
        mark(run).await?;
        return Err(OpsError::Conflict(format!(
            "the node could not {} {what} `{name}`: {}",
            if run { "start" } else { "stop" },
            outcome.errors.join("; ")
        )));
    }
    *stopped = next;
    tracing::info!(kind = kind.as_str(), name = %name, run, "changed by an operator");
    if !outcome.errors.is_empty() {
        return Err(OpsError::Conflict(format!(
            "{what} `{name}` was {}, but: {}",
            if run { "started" } else { "stopped" },
            outcome.errors.join("; ")
        )));
    }
    Ok(())
}
