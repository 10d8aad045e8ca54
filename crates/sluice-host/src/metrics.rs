//! The node's metrics, and the Prometheus endpoint that serves them
//! (`[metrics] address = "127.0.0.1:9464"`, `GET /metrics`, OpenMetrics text).
//!
//! Counters and gauges are always kept (they cost an atomic add); the HTTP
//! endpoint runs only when `[metrics]` is configured. Queue depths come from
//! [`MessageBox::counts`], which counts rows: they are refreshed at a scrape,
//! at most once every [`QUEUE_DEPTH_MAX_AGE`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};
use sluice_msgbox::MessageBox;
use tokio_util::sync::CancellationToken;

use crate::throttle::Reason;

/// Queue depths shown by a scrape are at most this old.
pub const QUEUE_DEPTH_MAX_AGE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LocationLabel {
    location: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabel {
    port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriberLabel {
    subscriber: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostReasonLabel {
    host: String,
    reason: String,
}

/// Where a message was suspended, and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SuspendedLabel {
    /// `receive_location` or `send_port`.
    stage: String,
    /// The location's or port's name.
    name: String,
    /// `no_subscriber`, `rejected` (by a receive pipeline) or `delivery_failed`.
    reason: String,
}

/// Why a message was suspended, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspension {
    NoSubscriber,
    Rejected,
    /// A bad record of a recoverable interchange, suspended alone.
    BadRecord,
    DeliveryFailed,
}

impl Suspension {
    fn label(self) -> (&'static str, &'static str) {
        match self {
            Suspension::NoSubscriber => ("receive_location", "no_subscriber"),
            Suspension::Rejected => ("receive_location", "rejected"),
            Suspension::BadRecord => ("receive_location", "bad_record"),
            Suspension::DeliveryFailed => ("send_port", "delivery_failed"),
        }
    }
}

pub struct Metrics {
    registry: Registry,
    published: Family<LocationLabel, Counter>,
    delivered: Family<PortLabel, Counter>,
    suspended: Family<SuspendedLabel, Counter>,
    queue_depth: Family<SubscriberLabel, Gauge>,
    in_flight: Family<HostLabel, Gauge>,
    bytes_in_flight: Family<HostLabel, Gauge>,
    throttled: Family<HostLabel, Gauge>,
    throttle_state: Family<HostReasonLabel, Gauge>,
    engagements: Family<HostReasonLabel, Counter>,
    rss: Gauge,
    instance_rss: Family<HostLabel, Gauge>,
    instance_up: Family<HostLabel, Gauge>,
    instance_restarts: Family<HostLabel, Counter>,
    instance_recycles: Family<HostLabel, Counter>,
    instance_crash_loop: Family<HostLabel, Gauge>,
    queue_depth_at: Mutex<Option<Instant>>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut r = Registry::default();
        // Counters get `_total` appended by the encoder.
        let m = Metrics {
            published: add(
                &mut r,
                "sluice_messages_published",
                "Messages a receive location stored in the box (routed or suspended)",
            ),
            delivered: add(
                &mut r,
                "sluice_messages_delivered",
                "Messages a send port delivered (and acknowledged)",
            ),
            suspended: add(
                &mut r,
                "sluice_messages_suspended",
                "Messages suspended, by stage, location or port, and reason",
            ),
            queue_depth: add(
                &mut r,
                "sluice_queue_depth",
                "Queue entries per subscriber (ready, leased or waiting to retry), refreshed at most every 5 s",
            ),
            in_flight: add(
                &mut r,
                "sluice_messages_in_flight",
                "Messages admitted by a host's throttle and not finished",
            ),
            bytes_in_flight: add(
                &mut r,
                "sluice_bytes_in_flight",
                "Bytes of the messages in flight on a host",
            ),
            throttled: add(&mut r, "sluice_throttled", "1 while a host is throttled, else 0"),
            throttle_state: add(
                &mut r,
                "sluice_throttle_state",
                "1 for the reason a host is throttled now (memory, messages, bytes), 0 for the others",
            ),
            engagements: add(
                &mut r,
                "sluice_throttle_engagements",
                "Times a host's throttle closed, by reason",
            ),
            rss: add(
                &mut r,
                "sluice_process_resident_memory_bytes",
                "Resident memory (RSS) of the node process",
            ),
            instance_rss: add(
                &mut r,
                "sluice_host_instance_resident_memory_bytes",
                "Resident memory (RSS) of an isolated host's instance",
            ),
            instance_up: add(
                &mut r,
                "sluice_host_instance_up",
                "1 while an isolated host's instance runs, else 0",
            ),
            instance_restarts: add(
                &mut r,
                "sluice_host_instance_restarts",
                "Instances of an isolated host that ended without being asked (crashed, killed) and were started again",
            ),
            instance_recycles: add(
                &mut r,
                "sluice_host_instance_recycles",
                "Instances of an isolated host drained and replaced (memory limit, configuration change, restart)",
            ),
            instance_crash_loop: add(
                &mut r,
                "sluice_host_instance_crash_loop",
                "1 while an isolated host's instances keep ending as they start (started again with backoff), else 0",
            ),
            queue_depth_at: Mutex::new(None),
            registry: Registry::default(),
        };
        Arc::new(Metrics { registry: r, ..m })
    }

    pub fn published(&self, location: &str) {
        self.published_many(location, 1);
    }

    /// `n` messages published at once (the records of an interchange).
    pub fn published_many(&self, location: &str, n: u64) {
        self.published
            .get_or_create(&LocationLabel {
                location: location.to_string(),
            })
            .inc_by(n);
    }

    pub fn delivered(&self, port: &str) {
        self.delivered_many(port, 1);
    }

    /// `n` messages delivered (a host instance's, counted by the node).
    pub fn delivered_many(&self, port: &str, n: u64) {
        self.delivered
            .get_or_create(&PortLabel { port: port.to_string() })
            .inc_by(n);
    }

    /// Messages send port `port` delivered since the node started.
    pub fn delivered_total(&self, port: &str) -> u64 {
        self.delivered
            .get_or_create(&PortLabel { port: port.to_string() })
            .get()
    }

    /// Messages receive location `location` published since the node started.
    pub fn published_total(&self, location: &str) -> u64 {
        self.published
            .get_or_create(&LocationLabel {
                location: location.to_string(),
            })
            .get()
    }

    /// A message suspended at receive location or send port `name`.
    pub fn suspended(&self, name: &str, why: Suspension) {
        self.suspended_many(name, why, 1);
    }

    pub fn suspended_many(&self, name: &str, why: Suspension, n: u64) {
        if n == 0 {
            return;
        }
        let (stage, reason) = why.label();
        self.suspended
            .get_or_create(&SuspendedLabel {
                stage: stage.to_string(),
                name: name.to_string(),
                reason: reason.to_string(),
            })
            .inc_by(n);
    }

    pub fn set_rss(&self, bytes: u64) {
        self.rss.set(gauge_value(bytes));
    }

    /// The handles a host's throttle updates.
    /// An isolated host's instance: its RSS (`None`: none runs).
    pub(crate) fn instance_rss(&self, host: &str, rss: Option<u64>) {
        let label = HostLabel { host: host.to_string() };
        self.instance_up.get_or_create(&label).set(i64::from(rss.is_some()));
        self.instance_rss
            .get_or_create(&label)
            .set(rss.unwrap_or(0).min(i64::MAX as u64) as i64);
    }

    /// Whether an isolated host is crash-looping.
    pub(crate) fn instance_crash_loop(&self, host: &str, looping: bool) {
        self.instance_crash_loop
            .get_or_create(&HostLabel { host: host.to_string() })
            .set(i64::from(looping));
    }

    /// An isolated host's instance ended unasked (`restart`) or was recycled.
    pub(crate) fn instance_ended(&self, host: &str, restart: bool) {
        let label = HostLabel { host: host.to_string() };
        if restart {
            self.instance_restarts.get_or_create(&label).inc();
        } else {
            self.instance_recycles.get_or_create(&label).inc();
        }
    }

    pub fn host(&self, host: &str) -> HostMetrics {
        let h = HostLabel { host: host.to_string() };
        HostMetrics {
            in_flight: self.in_flight.get_or_create_owned(&h),
            bytes: self.bytes_in_flight.get_or_create_owned(&h),
            throttled: self.throttled.get_or_create_owned(&h),
            state: by_reason(&self.throttle_state, host),
            engagements: by_reason(&self.engagements, host),
        }
    }

    pub fn set_queue_depths(&self, queued: &BTreeMap<String, u64>) {
        for (subscriber, n) in queued {
            self.queue_depth
                .get_or_create(&SubscriberLabel {
                    subscriber: subscriber.clone(),
                })
                .set(gauge_value(*n));
        }
    }

    /// Refresh the queue depths from the box if they are older than
    /// [`QUEUE_DEPTH_MAX_AGE`].
    pub async fn refresh_queue_depths(&self, mbox: &dyn MessageBox) {
        let due = {
            let mut at = self.queue_depth_at.lock().unwrap_or_else(|p| p.into_inner());
            let due = at.is_none_or(|t| t.elapsed() >= QUEUE_DEPTH_MAX_AGE);
            if due {
                *at = Some(Instant::now());
            }
            due
        };
        if !due {
            return;
        }
        match mbox.counts().await {
            Ok(c) => self.set_queue_depths(&c.queued),
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count the queues"),
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics: cannot encode");
        }
        out
    }
}

/// Make a metric and register it.
fn add<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// A host's metric for each [`Reason`], in [`Reason::ALL`] order.
fn by_reason<M: Metric + Clone + Default>(family: &Family<HostReasonLabel, M>, host: &str) -> [M; 3] {
    Reason::ALL.map(|r| {
        family.get_or_create_owned(&HostReasonLabel {
            host: host.to_string(),
            reason: r.as_str().to_string(),
        })
    })
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One host's gauges and counters.
#[derive(Clone)]
pub struct HostMetrics {
    in_flight: Gauge,
    bytes: Gauge,
    throttled: Gauge,
    state: [Gauge; 3],
    engagements: [Counter; 3],
}

impl HostMetrics {
    pub(crate) fn set_in_flight(&self, messages: u64, bytes: u64) {
        self.in_flight.set(gauge_value(messages));
        self.bytes.set(gauge_value(bytes));
    }

    pub(crate) fn set_state(&self, state: Option<Reason>) {
        self.throttled.set(i64::from(state.is_some()));
        for (i, r) in Reason::ALL.iter().enumerate() {
            self.state[i].set(i64::from(state == Some(*r)));
        }
    }

    pub(crate) fn engaged(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.engagements[i].inc();
        }
    }
}

/// The endpoint's listening socket, bound before the node starts anything,
/// so a taken address stops the start with an error.
pub struct Endpoint {
    listener: tokio::net::TcpListener,
    address: SocketAddr,
}

impl Endpoint {
    pub async fn bind(address: SocketAddr) -> std::io::Result<Endpoint> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        Ok(Endpoint { listener, address })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serve `GET /metrics` until `stop` is cancelled; everything else is 404.
    pub async fn serve(self, metrics: Arc<Metrics>, mbox: Arc<dyn MessageBox>, stop: CancellationToken) {
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(scrape))
            .with_state((metrics, mbox));
        tracing::info!(address = %self.address, "metrics endpoint listening (GET /metrics)");
        if let Err(e) = axum::serve(self.listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(address = %self.address, error = %e, "metrics endpoint stopped");
        }
    }
}

async fn scrape(State((metrics, mbox)): State<(Arc<Metrics>, Arc<dyn MessageBox>)>) -> Response {
    metrics.refresh_queue_depths(&*mbox).await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_labels() {
        let m = Metrics::new();
        m.published("in-folder");
        m.published("in-folder");
        m.delivered("out");
        m.suspended("out", Suspension::DeliveryFailed);
        m.set_rss(1234);
        let h = m.host("default");
        h.set_in_flight(3, 4096);
        h.set_state(Some(Reason::Bytes));
        h.engaged(Reason::Bytes);
        m.set_queue_depths(&BTreeMap::from([("out".to_string(), 7)]));
        let text = m.encode();
        for line in [
            r#"sluice_messages_published_total{location="in-folder"} 2"#,
            r#"sluice_messages_delivered_total{port="out"} 1"#,
            r#"sluice_messages_suspended_total{stage="send_port",name="out",reason="delivery_failed"} 1"#,
            r#"sluice_queue_depth{subscriber="out"} 7"#,
            r#"sluice_messages_in_flight{host="default"} 3"#,
            r#"sluice_bytes_in_flight{host="default"} 4096"#,
            r#"sluice_throttled{host="default"} 1"#,
            r#"sluice_throttle_state{host="default",reason="bytes"} 1"#,
            r#"sluice_throttle_state{host="default",reason="memory"} 0"#,
            r#"sluice_throttle_engagements_total{host="default",reason="bytes"} 1"#,
            r#"sluice_throttle_engagements_total{host="default",reason="messages"} 0"#,
            "sluice_process_resident_memory_bytes 1234",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
