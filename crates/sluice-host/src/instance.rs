//! A host instance: the child process (`sluice host-instance`) that runs
//! one isolated host's receive locations and send ports, reaching the
//! node's message box over the host channel (`sluice-channel`).
//!
//! It runs the same units as the node does (`node::Units`), against a
//! [`RemoteBox`] instead of the box, with its host's throttle, sampled on
//! its own resident memory. The node tells it what to run (its
//! configuration as the node runs it), wakes its ports, and asks it to
//! drain; it stops the way a node stops (intake first, then the send ports
//! finish what they hold) and exits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_channel::{Channel, RemoteBox, wire};
use sluice_msgbox::{MessageBox, UnitKind};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Isolation};
use crate::metrics::Metrics;
use crate::node::{self, Runs};
use crate::status::host_status;
use crate::throttle::Throttle;
use crate::{HostError, Wakers, operate};

/// How often an instance tells the node what it has done.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Run host `host`'s units, reaching the node through `socket`, until the
/// node asks to drain (or `shutdown` is cancelled: SIGTERM); `Err` when
/// the channel to the node ends first (the node stopped or died: nothing
/// can be finished without the box).
pub async fn run(socket: &Path, host: &str, shutdown: CancellationToken) -> Result<(), HostError> {
    use tracing::Instrument;
    // Every line the instance logs says which instance it is.
    let span = tracing::info_span!("host_instance", host = %host, pid = std::process::id());
    run_in_span(socket, host, shutdown).instrument(span).await
}

async fn run_in_span(socket: &Path, host: &str, shutdown: CancellationToken) -> Result<(), HostError> {
    let start_error = |message: String| HostError::Start {
        what: format!("host instance of `{host}`"),
        message,
    };
    let (channel, mut incoming, start) = Channel::connect(socket, host)
        .await
        .map_err(|e| start_error(e.to_string()))?;
    let config = Config::from_toml(
        &start.config,
        Path::new(&start.config_path),
        &PathBuf::from(&start.base_dir),
    )
    .map_err(|e| start_error(format!("the node's configuration does not load here: {e}")))?;
    let hc = config
        .hosts
        .get(host)
        .ok_or_else(|| start_error(format!("the configuration has no host `{host}`")))?;
    if hc.isolation != Isolation::Process {
        return Err(start_error(format!(
            "host `{host}` is not isolated (isolation = \"process\")"
        )));
    }
    let stopped: operate::Stopped = start
        .stopped
        .iter()
        .filter_map(|(kind, name)| Some((kind.parse::<UnitKind>().ok()?, name.clone())))
        .collect();
    let running = operate::with_stopped(&config, &stopped);
    crate::message_log::set(config.log_messages);

    let limits = hc
        .limits()
        .map_err(|(key, message)| start_error(format!("hosts.{host}.{key}: {message}")))?;
    let metrics = Metrics::new();
    let throttle = Throttle::new(host, limits, Some(metrics.host(host)));
    let mbox: Arc<dyn MessageBox> = Arc::new(RemoteBox::new(channel.clone()));
    let intake_stop = CancellationToken::new();
    let send_stop = CancellationToken::new();
    let node_id = config
        .node_id()
        .map_err(|e| start_error(format!("cannot read the node id: {e}")))?;
    let shared = node::Shared {
        node_id,
        mbox,
        wakers: Arc::new(Wakers::default()),
        metrics: metrics.clone(),
        throttles: HashMap::from([(host.to_string(), throttle.clone())]),
        intake_stop: intake_stop.clone(),
        send_stop: send_stop.clone(),
    };
    let runs = Runs::Host(host.to_string());

    // As the node starts: every location bound and recovered before any
    // send port delivers.
    let prepared = node::prepare_locations(&shared, &running, &runs).await?;
    let services_stop = CancellationToken::new();
    let mut services = tokio::task::JoinSet::new();
    services.spawn(crate::sample_rss(
        metrics.clone(),
        vec![throttle.clone()],
        services_stop.clone(),
    ));
    // The node's wake-ups for this instance's ports.
    let wakers = shared.wakers.clone();
    let mut wakes = std::mem::replace(&mut incoming.wakes, tokio::sync::mpsc::channel(1).1);
    let wakes_stop = services_stop.clone();
    services.spawn(async move {
        loop {
            tokio::select! {
                Some(port) = wakes.recv() => wakers.wake(&port),
                _ = wakes_stop.cancelled() => break,
                else => break,
            }
        }
    });
    let mut units = node::Units::new(runs.clone());
    units.start_ports(&shared, &running)?;
    for location in prepared {
        units.add_location(&shared, location);
    }
    services.spawn(report(
        channel.clone(),
        running.clone(),
        runs,
        metrics.clone(),
        throttle.clone(),
        services_stop.clone(),
    ));
    tracing::info!(host = %host, pid = std::process::id(), "host instance running");

    let lost = tokio::select! {
        _ = incoming.drain.cancelled() => false,
        // SIGTERM: a service manager stopping the node's whole group; the
        // node drains its instances too.
        _ = shutdown.cancelled() => false,
        _ = incoming.closed.cancelled() => true,
    };
    if lost {
        // Without the box nothing can finish; what this instance held is
        // given back by the node (or taken back at its next start).
        return Err(start_error("the channel to the node closed; stopping at once".into()));
    }
    tracing::info!(host = %host, "host instance draining: no new intake; finishing work in flight");
    intake_stop.cancel();
    units.stop_intake().await;
    send_stop.cancel();
    units.stop_ports().await;
    services_stop.cancel();
    // The last counts reach the node before the instance goes.
    while services.join_next().await.is_some() {}
    channel.flush().await;
    tracing::info!(host = %host, "host instance drained");
    Ok(())
}

/// Send the node this instance's counters and its host's state, every
/// [`STATS_EVERY`] and once more when it stops.
async fn report(
    channel: Arc<Channel>,
    config: Config,
    runs: Runs,
    metrics: Arc<Metrics>,
    throttle: Arc<Throttle>,
    stop: CancellationToken,
) {
    let locations: Vec<String> = runs.locations(&config).map(|(n, _)| n.to_string()).collect();
    let ports: Vec<String> = config
        .send_ports
        .iter()
        .filter(|(_, sp)| runs.host(&sp.host))
        .map(|(n, _)| n.clone())
        .collect();
    let mut ticks = crate::Ticker::new(STATS_EVERY, stop);
    loop {
        let going_on = ticks.next().await;
        let stats = wire::Stats {
            received: locations
                .iter()
                .map(|l| (l.clone(), metrics.published_total(l)))
                .collect(),
            delivered: ports.iter().map(|p| (p.clone(), metrics.delivered_total(p))).collect(),
            host_status: serde_json::to_string(&host_status(&throttle)).unwrap_or_default(),
        };
        channel.stats(stats).await;
        if !going_on {
            break;
        }
    }
}
