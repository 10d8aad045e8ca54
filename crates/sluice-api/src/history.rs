//! The last hour, as the dashboard draws it: every `[api] sample_every`
//! ([`SAMPLE_EVERY`] unless configured) the API samples the box's counts,
//! the node's hosts and each unit's message counter, and keeps an hour's
//! samples (at most [`MOST_KEPT`]) in memory: a fixed size, whatever the
//! uptime. Rates (messages per second) are the
//! differences of counters between samples. `GET /api/v1/history` answers
//! them; the dashboard draws them; the ports page takes each unit's rate
//! from the last two.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use sluice_msgbox::{Millis, UnitKind};
use utoipa::ToSchema;

use crate::ApiState;

/// How often the API samples unless configured.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);
/// Most samples kept (an hour's at one a second).
pub const MOST_KEPT: usize = 3600;
/// What the dashboard draws.
const HOUR: Duration = Duration::from_secs(3600);

/// One sample.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Sample {
    /// When (ms since the epoch).
    pub at: Millis,
    /// Messages published by the receive locations per second since the
    /// sample before (absent on the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_per_second: Option<f64>,
    /// Messages delivered by the send ports per second since the sample
    /// before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_per_second: Option<f64>,
    /// Queue entries in the box.
    pub queued: u64,
    pub suspended: u64,
    /// Messages in the box.
    pub spool: u64,
    /// Hosts whose throttle held work back (by the node's last report).
    pub throttled: Vec<String>,
}

/// Each unit's messages since the node started (a location's published, a
/// port's delivered), by kind and name.
type Totals = BTreeMap<(UnitKind, String), u64>;

/// What the last sample read, for pages to show without reading it again.
#[derive(Clone)]
pub struct Latest {
    /// When it was read.
    pub at: Millis,
    /// The box's counts and the node's report.
    pub status: sluice_ops::status::Status,
    /// The largest groups of suspended entries ([`GROUPS_KEPT`]).
    pub groups: Vec<sluice_msgbox::SuspendedGroup>,
}

/// Groups of suspended entries each sample keeps.
pub const GROUPS_KEPT: usize = 100;

#[derive(Default)]
struct Inner {
    samples: VecDeque<Sample>,
    /// The last sample's unit totals, and each unit's rate since the one
    /// before: only the last are kept, whatever the number of units.
    totals: Totals,
    rates: BTreeMap<(UnitKind, String), f64>,
    latest: Option<Latest>,
}

/// The kept samples, oldest first.
pub struct History {
    inner: Mutex<Inner>,
    /// An hour's samples.
    kept: usize,
    /// Seconds between samples.
    pub every: Duration,
}

impl Default for History {
    fn default() -> Self {
        History::new(SAMPLE_EVERY)
    }
}

impl History {
    /// An hour's samples taken `every` so often.
    pub fn new(every: Duration) -> History {
        let kept = (HOUR.as_millis() / every.as_millis().max(1)) as usize;
        History {
            inner: Mutex::default(),
            kept: kept.clamp(2, MOST_KEPT),
            every,
        }
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.lock().samples.iter().cloned().collect()
    }

    /// What the last sample read (`None` before the first).
    pub fn latest(&self) -> Option<Latest> {
        self.lock().latest.clone()
    }

    /// Each unit's messages per second between the last two samples.
    pub fn rates(&self) -> BTreeMap<(UnitKind, String), f64> {
        self.lock().rates.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add `sample` with its units' `totals`: the rates are each unit's
    /// difference from the sample before (a unit that went, or whose
    /// counter started again, does not make the sum jump).
    fn push(&self, mut sample: Sample, totals: Totals) {
        let mut inner = self.lock();
        if let Some(before) = inner.samples.back() {
            let secs = (sample.at - before.at) as f64 / 1000.0;
            let rates: BTreeMap<_, _> = totals
                .iter()
                .map(|(unit, n)| {
                    let was = inner.totals.get(unit).copied().unwrap_or(0);
                    (unit.clone(), rate(was, *n, secs))
                })
                .collect();
            let sum = |kind: UnitKind| {
                let total: f64 = rates.iter().filter(|((k, _), _)| *k == kind).map(|(_, r)| r).sum();
                Some((total * 10.0).round() / 10.0)
            };
            sample.published_per_second = sum(UnitKind::ReceiveLocation);
            sample.delivered_per_second = sum(UnitKind::SendPort);
            inner.rates = rates;
        }
        while inner.samples.len() >= self.kept {
            inner.samples.pop_front();
        }
        inner.samples.push_back(sample);
        inner.totals = totals;
    }
}

/// Per second from `was` to `now` over `secs`; a counter that went back
/// (a unit removed and added again) counts from zero.
fn rate(was: u64, now: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    let n = if now >= was { now - was } else { now };
    (n as f64 / secs * 10.0).round() / 10.0
}

/// Take one sample now (nothing when the box does not answer: a gap).
pub(crate) async fn sample(state: &ApiState) {
    let status = match sluice_ops::status::status(&*state.b, &state.data_dir, state.clock.now_ms()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "no dashboard sample: the box did not answer");
            return;
        }
    };
    let units = match &state.node {
        Some(node) => node.units(&status.counts).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let groups = match sluice_ops::suspended::groups(&*state.b, GROUPS_KEPT).await {
        Ok(g) => g,
        Err(e) => {
            tracing::debug!(error = %e, "no dashboard sample: the box did not answer");
            return;
        }
    };
    let c = &status.counts;
    let at = state.clock.now_ms();
    let throttled = status
        .node
        .iter()
        .flat_map(|n| {
            n.hosts
                .iter()
                .filter(|(_, h)| h.throttled)
                .map(|(name, _)| name.clone())
        })
        .collect();
    let sample = Sample {
        at,
        published_per_second: None,
        delivered_per_second: None,
        queued: c.queued.values().sum(),
        suspended: c.suspended,
        spool: c.spool,
        throttled,
    };
    let totals = units.into_iter().map(|u| ((u.kind, u.name), u.messages)).collect();
    state.history.push(sample, totals);
    state.history.lock().latest = Some(Latest { at, status, groups });
}

/// Sample (as often as the history says) until the API stops.
pub(crate) async fn run(state: ApiState) {
    let mut every = tokio::time::interval(state.history.every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.stopping.cancelled() => return,
            _ = every.tick() => sample(&state).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: Millis) -> Sample {
        Sample {
            at: ms,
            published_per_second: None,
            delivered_per_second: None,
            queued: 0,
            suspended: 0,
            spool: 0,
            throttled: Vec::new(),
        }
    }

    fn totals(ports: &[(&str, u64)], location: u64) -> Totals {
        let mut t: Totals = ports
            .iter()
            .map(|(p, n)| ((UnitKind::SendPort, p.to_string()), *n))
            .collect();
        t.insert((UnitKind::ReceiveLocation, "l".to_string()), location);
        t
    }

    #[test]
    fn rates_are_differences_over_time_and_the_hour_is_bounded() {
        let h = History::new(Duration::from_secs(15));
        h.push(at(0), totals(&[("p", 0), ("q", 1_000_000)], 0));
        assert!(h.rates().is_empty(), "one sample has no rate");
        h.push(at(10_000), totals(&[("p", 50), ("q", 1_000_000)], 200));
        let s = h.samples();
        assert_eq!(s[0].delivered_per_second, None);
        assert_eq!(s[1].delivered_per_second, Some(5.0));
        assert_eq!(s[1].published_per_second, Some(20.0));
        assert_eq!(h.rates()[&(UnitKind::SendPort, "p".to_string())], 5.0);
        // A port removed, another's counter started again: no jump.
        h.push(at(20_000), totals(&[("p", 10)], 200));
        assert_eq!(h.samples()[2].delivered_per_second, Some(1.0));
        for i in 0..500 {
            h.push(at(30_000 + i * 15_000), totals(&[("p", 10)], 200));
        }
        assert_eq!(h.samples().len(), 240, "an hour of samples 15 s apart");
    }
}
