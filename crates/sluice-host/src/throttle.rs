//! Per-host throttling: the one place where work becomes "in flight".
//!
//! A **host** is a named group of receive locations and send ports that share
//! one budget. Before a receive location takes a file (or any source takes a
//! submission), and before a send port delivers a leased message, it asks
//! the host's [`Throttle`] to [`admit`](Throttle::admit) it; the returned
//! [`Permit`] holds one message and its bytes until dropped.
//!
//! The throttle closes for three reasons, checked in this order:
//!
//! - **memory**: the process's resident memory (RSS, sampled by the node)
//!   reached `memory_high`; it stays closed until RSS is at or below
//!   `memory_low` (hysteresis). Intake stops and send ports lease nothing
//!   new; so that the box still drains if memory does not come back
//!   (allocators keep some), a delivery is admitted when nothing at all is
//!   in flight on the host: delivery goes on one message at a time.
//! - **messages**: in-flight messages reached `max_in_flight`; it stays
//!   closed until they are at or below `resume_in_flight` (hysteresis).
//! - **bytes**: the next message waiting would take the in-flight bytes over
//!   `max_in_flight_bytes`. A message larger than the whole budget is
//!   admitted alone, when nothing else is in flight, so it cannot wait forever.
//!
//! Waiters are admitted first come, first served, receive and delivery in
//! one line: a large message waiting for room is not overtaken by a stream
//! of small ones, and a busy intake does not starve delivery. (Under the
//! memory mark, deliveries pass the receive waiters, which cannot go.)
//!
//! **Shares.** Each receive location takes its work through a [`Lane`]: a
//! location may hold at most `location_share` percent of the host's
//! messages and bytes in flight, so one location (a flood of uploads, a
//! client that trickles) cannot take the whole budget from the others and
//! from the send ports. A waiter held back only by its own lane's share
//! steps aside: the waiters behind it in line still go.
//!
//! **Bytes as they arrive.** A source that cannot know a body's size in
//! advance (HTTP: a declared `Content-Length` is only a claim) is admitted
//! for what it has actually received, and [`Permit::charge`]s the bytes as
//! they arrive (decoded bytes, as written to the box). Charging never waits
//! (a body half-taken must be able to finish), but the charged bytes count
//! for every admission after it.
//!
//! Architecture Invariant: only admitted work is in flight, and only what is
//! in flight counts. Messages that wait in the box (queued, retrying,
//! suspended) hold no permit and never throttle live traffic.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, oneshot};

use crate::metrics::HostMetrics;

// The throttle's limits and its snapshot are what the node reports in
// `status.json`: their types live with the report, in `sluice_ops::status`.
pub use sluice_ops::status::{Limits, MemoryMarks, Reason, Snapshot};

/// One lane's share of `limits`: (messages, bytes), each at least 1
/// message and 1 MiB.
fn share(limits: &Limits) -> (u64, u64) {
    let pct = u64::from(limits.location_share.clamp(1, 100));
    let messages = (limits.max_in_flight.saturating_mul(pct) / 100).max(1);
    let bytes = (u128::from(limits.max_in_flight_bytes) * u128::from(pct) / 100) as u64;
    let bytes = bytes.max(1 << 20);
    (messages, bytes)
}

/// What a permit is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// A receive location taking a file (a submission).
    Receive,
    /// A send port delivering a leased message.
    Deliver,
}

struct Waiter {
    id: u64,
    bytes: u64,
    work: Work,
    lane: Option<usize>,
    grant: oneshot::Sender<()>,
}

/// What one lane (one receive location) holds in flight.
#[derive(Default, Clone, Copy)]
struct LaneUse {
    in_flight: u64,
    bytes: u64,
    /// A [`Lane`] uses this slot. A slot given up (its location stopped by a
    /// reload) is taken again once nothing it admitted is in flight.
    held: bool,
}

struct Inner {
    in_flight: u64,
    bytes: u64,
    rss: u64,
    /// Count hysteresis: set at the high mark, cleared at the low mark.
    messages_latched: bool,
    /// Memory hysteresis.
    memory_latched: bool,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
    state: Option<Reason>,
    engagements: u64,
    lanes: Vec<LaneUse>,
    /// Set by `grant_waiters`: a waiter is held back by the host's own
    /// limits (not only by its lane's share).
    host_blocked: bool,
}

/// One host's throttle. Cheap to share: use it through an `Arc`.
pub struct Throttle {
    host: String,
    limits: Limits,
    inner: Mutex<Inner>,
    /// Woken on every change, for [`Throttle::wait_open`].
    changed: Notify,
    metrics: Option<HostMetrics>,
}

impl Throttle {
    pub fn new(host: &str, limits: Limits, metrics: Option<HostMetrics>) -> Arc<Throttle> {
        let t = Arc::new(Throttle {
            host: host.to_string(),
            limits,
            inner: Mutex::new(Inner {
                in_flight: 0,
                bytes: 0,
                rss: 0,
                messages_latched: false,
                memory_latched: false,
                waiters: VecDeque::new(),
                next_waiter: 0,
                state: None,
                engagements: 0,
                lanes: Vec::new(),
                host_blocked: false,
            }),
            changed: Notify::new(),
            metrics,
        });
        if let Some(m) = &t.metrics {
            m.set_state(None);
        }
        t
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent under every panic-free path; a poisoned
        // lock only means another task panicked while holding it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new lane (for one receive location) with the host's share limits.
    /// A slot a dropped lane gave up is reused once its permits are all
    /// back, so locations restarted by reloads do not pile up slots.
    pub fn lane(self: &Arc<Self>) -> Lane {
        let mut inner = self.lock();
        let free = inner
            .lanes
            .iter()
            .position(|l| !l.held && l.in_flight == 0 && l.bytes == 0);
        let index = match free {
            Some(i) => i,
            None => {
                inner.lanes.push(LaneUse::default());
                inner.lanes.len() - 1
            }
        };
        inner.lanes[index].held = true;
        Lane {
            throttle: self.clone(),
            index,
        }
    }

    /// Wait until the host admits one message of `bytes` for `work`, first
    /// come first served. The permit holds it in flight until dropped.
    pub async fn admit(self: &Arc<Self>, bytes: u64, work: Work) -> Permit {
        self.admit_in(bytes, work, None).await
    }

    async fn admit_in(self: &Arc<Self>, bytes: u64, work: Work, lane: Option<usize>) -> Permit {
        let mut guard = {
            let mut inner = self.lock();
            let (tx, rx) = oneshot::channel();
            let id = inner.next_waiter;
            inner.next_waiter += 1;
            inner.waiters.push_back(Waiter {
                id,
                bytes,
                work,
                lane,
                grant: tx,
            });
            self.grant_waiters(&mut inner);
            self.update_state(&mut inner);
            WaitGuard {
                throttle: self,
                id,
                bytes,
                lane,
                rx: Some(rx),
            }
        };
        if let Some(rx) = guard.rx.as_mut() {
            // The sender lives in the queue until it grants, or until the
            // guard (on drop) takes it out: it is never dropped unsent.
            let _ = rx.await;
        }
        guard.rx = None;
        Permit {
            throttle: self.clone(),
            bytes: std::sync::atomic::AtomicU64::new(bytes),
            lane,
        }
    }

    /// Wait while the host is closed by its memory mark (unless nothing is
    /// in flight, when one delivery may go). Used before leasing. The
    /// message and bytes marks are not waited out here: leased messages
    /// queue for admission in turn with the receive side.
    pub async fn wait_open(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = self.lock();
                if !inner.memory_latched || inner.in_flight == 0 {
                    return;
                }
            }
            notified.await;
        }
    }

    /// A new RSS reading (bytes). Engages or releases the memory mark.
    pub fn set_rss(&self, rss: u64) {
        let mut inner = self.lock();
        inner.rss = rss;
        if let Some(m) = self.limits.memory {
            if rss >= m.high {
                inner.memory_latched = true;
            } else if rss <= m.low {
                inner.memory_latched = false;
            }
        }
        self.grant_waiters(&mut inner);
        self.update_state(&mut inner);
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            reason: inner.state,
            detail: inner.state.map(|r| self.detail(&inner, r)),
            in_flight: inner.in_flight,
            in_flight_bytes: inner.bytes,
            waiting: inner.waiters.len() as u64,
            rss: inner.rss,
            engagements: inner.engagements,
        }
    }

    fn can_admit(&self, inner: &Inner, bytes: u64, work: Work) -> bool {
        let alone = inner.in_flight == 0;
        if inner.messages_latched {
            return false;
        }
        if inner.memory_latched {
            return work == Work::Deliver && alone;
        }
        alone || inner.bytes.saturating_add(bytes) <= self.limits.max_in_flight_bytes
    }

    /// Whether `lane` has room for one more message of `bytes` (a message
    /// larger than the share goes when the lane holds nothing else).
    fn lane_fits(&self, inner: &Inner, lane: Option<usize>, bytes: u64) -> bool {
        let Some(use_) = lane.and_then(|l| inner.lanes.get(l)) else {
            return true;
        };
        let (messages, share_bytes) = share(&self.limits);
        use_.in_flight < messages && (use_.in_flight == 0 || use_.bytes.saturating_add(bytes) <= share_bytes)
    }

    fn take(&self, inner: &mut Inner, bytes: u64, lane: Option<usize>) {
        inner.in_flight += 1;
        inner.bytes = inner.bytes.saturating_add(bytes);
        if let Some(l) = lane.and_then(|l| inner.lanes.get_mut(l)) {
            l.in_flight += 1;
            l.bytes = l.bytes.saturating_add(bytes);
        }
        if inner.in_flight >= self.limits.max_in_flight {
            inner.messages_latched = true;
        }
    }

    fn give_back(&self, inner: &mut Inner, bytes: u64, lane: Option<usize>) {
        inner.in_flight = inner.in_flight.saturating_sub(1);
        inner.bytes = inner.bytes.saturating_sub(bytes);
        if let Some(l) = lane.and_then(|l| inner.lanes.get_mut(l)) {
            l.in_flight = l.in_flight.saturating_sub(1);
            l.bytes = l.bytes.saturating_sub(bytes);
        }
        if inner.in_flight <= self.limits.resume_in_flight {
            inner.messages_latched = false;
        }
    }

    fn release(&self, bytes: u64, lane: Option<usize>) {
        let mut inner = self.lock();
        self.give_back(&mut inner, bytes, lane);
        self.grant_waiters(&mut inner);
        self.update_state(&mut inner);
    }

    /// Count `bytes` more in flight for an admitted message (never waits).
    fn charge(&self, bytes: u64, lane: Option<usize>) {
        let mut inner = self.lock();
        inner.bytes = inner.bytes.saturating_add(bytes);
        if let Some(l) = lane.and_then(|l| inner.lanes.get_mut(l)) {
            l.bytes = l.bytes.saturating_add(bytes);
        }
        // Nothing more fits now, but whether the line is held back by the
        // host's budget may have changed.
        self.grant_waiters(&mut inner);
        self.update_state(&mut inner);
    }

    /// Admit waiters from the front of the line while they fit. Under the
    /// memory mark receive waiters cannot go, and deliveries pass them.
    fn grant_waiters(&self, inner: &mut Inner) {
        let mut i = 0;
        inner.host_blocked = false;
        while let Some(w) = inner.waiters.get(i) {
            if !self.lane_fits(inner, w.lane, w.bytes) {
                // Held back by its own location's share: the line goes on.
                i += 1;
                continue;
            }
            if !self.can_admit(inner, w.bytes, w.work) {
                if inner.memory_latched && w.work == Work::Receive {
                    i += 1;
                    continue;
                }
                inner.host_blocked = true;
                break;
            }
            let Some(w) = inner.waiters.remove(i) else { break };
            self.take(inner, w.bytes, w.lane);
            if w.grant.send(()).is_err() {
                // Its task is being cancelled right now (its guard waits
                // for the lock and will find it gone): undo.
                self.give_back(inner, w.bytes, w.lane);
            }
        }
    }

    /// Recompute the state; count an engagement, set the gauges and log on a change.
    fn update_state(&self, inner: &mut Inner) {
        let state = if inner.memory_latched {
            Some(Reason::Memory)
        } else if inner.messages_latched {
            Some(Reason::Messages)
        } else if inner.host_blocked {
            // After granting, a waiter held back by the host's budget (not
            // only by its location's share) is one that does not fit.
            Some(Reason::Bytes)
        } else {
            None
        };
        if let Some(m) = &self.metrics {
            m.set_in_flight(inner.in_flight, inner.bytes);
        }
        if state != inner.state {
            let before = inner.state;
            inner.state = state;
            if let Some(reason) = state {
                inner.engagements += 1;
                if let Some(m) = &self.metrics {
                    m.engaged(reason);
                }
            }
            if let Some(m) = &self.metrics {
                m.set_state(state);
            }
            match state {
                // Bytes throttling comes and goes with every large message: debug.
                Some(Reason::Bytes) => {
                    tracing::debug!(host = %self.host, reason = %self.detail(inner, Reason::Bytes), "host throttled")
                }
                Some(r) => tracing::info!(host = %self.host, reason = %self.detail(inner, r), "host throttled"),
                None if before == Some(Reason::Bytes) => tracing::debug!(host = %self.host, "host no longer throttled"),
                None => tracing::info!(host = %self.host, in_flight = inner.in_flight, rss = inner.rss,
                    "host no longer throttled"),
            }
            self.changed.notify_waiters();
        } else if state == Some(Reason::Memory) && inner.in_flight == 0 {
            // `wait_open` lets one through while nothing is in flight.
            self.changed.notify_waiters();
        }
    }

    fn detail(&self, inner: &Inner, reason: Reason) -> String {
        let l = &self.limits;
        match reason {
            Reason::Memory => {
                let m = l.memory.unwrap_or(MemoryMarks { high: 0, low: 0 });
                format!(
                    "memory: RSS {} reached the high mark {}; intake resumes at or below {} (delivery goes on one at a time)",
                    Bytes(inner.rss),
                    Bytes(m.high),
                    Bytes(m.low)
                )
            }
            Reason::Messages => format!(
                "in-flight messages {} reached the high mark {}; resumes at or below {}",
                inner.in_flight, l.max_in_flight, l.resume_in_flight
            ),
            Reason::Bytes => format!(
                "in-flight bytes {} + {} waiting > budget {}",
                Bytes(inner.bytes),
                Bytes(inner.waiters.front().map(|w| w.bytes).unwrap_or(0)),
                Bytes(l.max_in_flight_bytes)
            ),
        }
    }
}

/// Takes a waiter out of the queue if its task is cancelled before it was
/// admitted, or gives its admission back if it was admitted meanwhile.
struct WaitGuard<'a> {
    throttle: &'a Throttle,
    id: u64,
    bytes: u64,
    lane: Option<usize>,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let mut inner = self.throttle.lock();
        if let Some(pos) = inner.waiters.iter().position(|w| w.id == self.id) {
            inner.waiters.remove(pos);
        } else if rx.try_recv().is_ok() {
            // Granted while being cancelled.
            self.throttle.give_back(&mut inner, self.bytes, self.lane);
        }
        self.throttle.grant_waiters(&mut inner);
        self.throttle.update_state(&mut inner);
    }
}

/// One receive location's way into its host's throttle, within its share
/// (see the module doc).
pub struct Lane {
    throttle: Arc<Throttle>,
    index: usize,
}

impl Lane {
    /// Wait until the host admits one message of `bytes` for this location.
    pub async fn admit(&self, bytes: u64) -> Permit {
        self.throttle.admit_in(bytes, Work::Receive, Some(self.index)).await
    }

    pub fn throttle(&self) -> &Arc<Throttle> {
        &self.throttle
    }

    /// What this lane holds in flight: (messages, bytes).
    pub fn in_flight(&self) -> (u64, u64) {
        let inner = self.throttle.lock();
        inner
            .lanes
            .get(self.index)
            .map(|l| (l.in_flight, l.bytes))
            .unwrap_or((0, 0))
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(l) = self.throttle.lock().lanes.get_mut(self.index) {
            l.held = false;
        }
    }
}

/// One admitted message; dropping it releases its count and bytes.
pub struct Permit {
    throttle: Arc<Throttle>,
    bytes: std::sync::atomic::AtomicU64,
    lane: Option<usize>,
}

impl Permit {
    /// Count `bytes` more in flight for this message (bytes that arrived or
    /// were written since it was admitted). Never waits; see the module doc.
    pub fn charge(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        self.throttle.charge(bytes, self.lane);
    }

    /// The bytes this permit holds in flight.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permit({}, {} bytes)", self.throttle.host, self.bytes())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.throttle.release(self.bytes(), self.lane);
    }
}

/// A byte count for people: "20.0 MiB".
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        let mut u = 0;
        while v >= 1024.0 && u < UNITS.len() - 1 {
            v /= 1024.0;
            u += 1;
        }
        if u == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{v:.1} {}", UNITS[u])
        }
    }
}

/// The process's resident set size in bytes, from `/proc/self/statm`.
pub fn current_rss() -> Option<u64> {
    rss_from("/proc/self/statm")
}

/// The resident set size in bytes a `statm` file says (`/proc/PID/statm`).
pub(crate) fn rss_from(statm: &str) -> Option<u64> {
    let text = std::fs::read_to_string(statm).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096))
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    const MIB: u64 = 1 << 20;

    fn throttle(high: u64, low: u64, bytes: u64, memory: Option<(u64, u64)>) -> Arc<Throttle> {
        Throttle::new(
            "h",
            Limits {
                max_in_flight: high,
                resume_in_flight: low,
                max_in_flight_bytes: bytes,
                memory: memory.map(|(high, low)| MemoryMarks { high, low }),
                location_share: 100,
            },
            None,
        )
    }

    /// Poll a future once: `Some` if it is done. No timers, no sleeps.
    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Option<F::Output> {
        match f.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    fn admit_now(t: &Arc<Throttle>, bytes: u64) -> Option<Permit> {
        poll_once(pin!(t.admit(bytes, Work::Receive)))
    }

    fn deliver_now(t: &Arc<Throttle>, bytes: u64) -> Option<Permit> {
        poll_once(pin!(t.admit(bytes, Work::Deliver)))
    }

    #[test]
    fn message_count_has_hysteresis() {
        let t = throttle(4, 2, u64::MAX, None);
        let mut permits: Vec<Permit> = (0..4).map(|_| admit_now(&t, 1).expect("under the high mark")).collect();
        assert_eq!(t.snapshot().reason, Some(Reason::Messages));
        assert!(admit_now(&t, 1).is_none(), "closed at the high mark");
        permits.pop();
        assert_eq!(t.snapshot().in_flight, 3);
        assert!(admit_now(&t, 1).is_none(), "3 is above the low mark: still closed");
        permits.pop();
        assert_eq!(t.snapshot().reason, None, "open again at the low mark");
        permits.push(admit_now(&t, 1).expect("open"));
        permits.push(admit_now(&t, 1).expect("open"));
        assert_eq!(t.snapshot().reason, Some(Reason::Messages));
        assert_eq!(t.snapshot().engagements, 2);
        assert!(
            t.snapshot()
                .detail
                .unwrap()
                .contains("in-flight messages 4 reached the high mark 4")
        );
    }

    #[test]
    fn bytes_budget_and_first_come_first_served() {
        let t = throttle(1000, 800, 10 * MIB, None);
        let a = admit_now(&t, 6 * MIB).expect("fits");
        let mut big = pin!(t.admit(6 * MIB, Work::Receive));
        assert!(poll_once(big.as_mut()).is_none(), "6 + 6 > 10 MiB: waits");
        let s = t.snapshot();
        assert_eq!((s.reason, s.waiting), (Some(Reason::Bytes), 1));
        assert!(s.detail.unwrap().contains("+ 6.0 MiB waiting > budget 10.0 MiB"));
        // A small one that would fit does not overtake the waiting one.
        let mut small = pin!(t.admit(MIB, Work::Deliver));
        assert!(poll_once(small.as_mut()).is_none(), "first come, first served");
        drop(a);
        let b = poll_once(big.as_mut()).expect("admitted once the first left");
        let c = poll_once(small.as_mut()).expect("then the small one");
        let s = t.snapshot();
        assert_eq!((s.reason, s.in_flight, s.in_flight_bytes), (None, 2, 7 * MIB));
        drop((b, c));
        assert_eq!(t.snapshot().in_flight_bytes, 0);
    }

    #[test]
    fn a_message_larger_than_the_budget_goes_alone() {
        let t = throttle(1000, 800, 10 * MIB, None);
        let small = admit_now(&t, MIB).expect("fits");
        let mut huge = pin!(t.admit(50 * MIB, Work::Deliver));
        assert!(
            poll_once(huge.as_mut()).is_none(),
            "waits while anything else is in flight"
        );
        drop(small);
        let h = poll_once(huge.as_mut()).expect("admitted alone");
        assert_eq!(t.snapshot().in_flight_bytes, 50 * MIB);
        assert!(admit_now(&t, 1).is_none(), "nothing joins it");
        drop(h);
        assert!(admit_now(&t, 50 * MIB).is_some(), "alone at once when the host is idle");
    }

    #[test]
    fn memory_marks_close_and_open_with_hysteresis() {
        let t = throttle(1000, 800, u64::MAX, Some((200 * MIB, 150 * MIB)));
        t.set_rss(100 * MIB);
        let first = admit_now(&t, 1).expect("under the high mark");
        t.set_rss(200 * MIB);
        assert_eq!(t.snapshot().reason, Some(Reason::Memory));
        assert!(admit_now(&t, 1).is_none(), "closed at the high mark");
        let mut waiting = pin!(t.admit(1, Work::Receive));
        assert!(poll_once(waiting.as_mut()).is_none());
        t.set_rss(180 * MIB);
        assert!(
            poll_once(waiting.as_mut()).is_none(),
            "above the low mark: still closed"
        );
        t.set_rss(150 * MIB);
        let second = poll_once(waiting.as_mut()).expect("open at the low mark");
        assert_eq!(t.snapshot().reason, None);
        assert!(t.snapshot().engagements >= 1);
        drop((first, second));
    }

    #[test]
    fn under_the_memory_mark_intake_stops_and_delivery_goes_one_at_a_time() {
        let t = throttle(1000, 800, u64::MAX, Some((200 * MIB, 150 * MIB)));
        t.set_rss(300 * MIB);
        assert!(admit_now(&t, 1).is_none(), "no intake, even on an idle host");
        let mut receive = pin!(t.admit(1, Work::Receive));
        assert!(poll_once(receive.as_mut()).is_none());
        let one = deliver_now(&t, 1).expect("a delivery passes the waiting intake, alone");
        let mut two = pin!(t.admit(1, Work::Deliver));
        assert!(poll_once(two.as_mut()).is_none(), "but only one at a time");
        assert_eq!(t.snapshot().reason, Some(Reason::Memory));
        assert!(
            t.snapshot()
                .detail
                .unwrap()
                .contains("RSS 300.0 MiB reached the high mark 200.0 MiB")
        );
        drop(one);
        let two = poll_once(two.as_mut()).expect("the next delivery");
        assert!(poll_once(receive.as_mut()).is_none(), "intake still waits");
        drop(two);
        t.set_rss(100 * MIB);
        assert!(
            poll_once(receive.as_mut()).is_some(),
            "intake resumes under the low mark"
        );
    }

    #[test]
    fn a_cancelled_waiter_leaves_nothing_behind() {
        let t = throttle(1, 0, u64::MAX, None);
        let p = admit_now(&t, 5).expect("first");
        {
            let mut w = pin!(t.admit(7, Work::Receive));
            assert!(poll_once(w.as_mut()).is_none());
            assert_eq!(t.snapshot().waiting, 1);
        }
        assert_eq!(t.snapshot().waiting, 0, "the dropped waiter left the queue");
        drop(p);
        let s = t.snapshot();
        assert_eq!((s.in_flight, s.in_flight_bytes, s.reason), (0, 0, None));
        // Granted, then dropped before it ran: the grant is given back.
        let p = admit_now(&t, 5).expect("first");
        {
            let mut w = pin!(t.admit(7, Work::Receive));
            assert!(poll_once(w.as_mut()).is_none());
            drop(p);
            assert_eq!(t.snapshot().in_flight, 1, "granted to the waiter");
        }
        let s = t.snapshot();
        assert_eq!((s.in_flight, s.in_flight_bytes), (0, 0));
    }

    #[test]
    fn wait_open_waits_for_the_memory_mark_only() {
        // Closed by messages or bytes: leasing goes on, the leased queue for
        // admission in turn with the receive side.
        let t = throttle(1, 0, 10, Some((200 * MIB, 150 * MIB)));
        let p = admit_now(&t, 8).expect("fits");
        let mut waiting = pin!(t.admit(8, Work::Deliver));
        assert!(poll_once(waiting.as_mut()).is_none());
        assert_eq!(t.snapshot().reason, Some(Reason::Messages));
        assert!(poll_once(pin!(t.wait_open())).is_some());

        // Memory: closed while anything is in flight, open when nothing is.
        t.set_rss(300 * MIB);
        let mut w = pin!(t.wait_open());
        assert!(poll_once(w.as_mut()).is_none(), "closed by the memory mark");
        drop(p);
        let q = poll_once(waiting.as_mut()).expect("alone under the memory mark");
        assert!(poll_once(w.as_mut()).is_none(), "one is in flight");
        drop(q);
        assert!(poll_once(w.as_mut()).is_some(), "nothing in flight: one may go");
    }

    fn throttle_with_share(high: u64, bytes: u64, share: u8) -> Arc<Throttle> {
        Throttle::new(
            "h",
            Limits {
                max_in_flight: high,
                resume_in_flight: high * 8 / 10,
                max_in_flight_bytes: bytes,
                memory: None,
                location_share: share,
            },
            None,
        )
    }

    #[test]
    fn a_location_holds_at_most_its_share_and_does_not_block_the_line() {
        let t = throttle_with_share(10, 100 * MIB, 50);
        let (a, b) = (t.lane(), t.lane());
        let mut held: Vec<Permit> = (0..5)
            .map(|_| poll_once(pin!(a.admit(0))).expect("within the share"))
            .collect();
        assert_eq!(a.in_flight(), (5, 0));
        // Lane a is at its share (5 of 10): it waits, and steps aside.
        let mut a_waits = pin!(a.admit(0));
        assert!(poll_once(a_waits.as_mut()).is_none(), "over the share");
        let from_b = poll_once(pin!(b.admit(0))).expect("the other location goes past it");
        let delivery = deliver_now(&t, 0).expect("so do the send ports");
        assert_eq!(
            t.snapshot().reason,
            None,
            "a location at its share does not throttle the host"
        );
        held.pop();
        assert!(poll_once(a_waits.as_mut()).is_some(), "room in its share again");
        drop((from_b, delivery));
    }

    #[test]
    fn charged_bytes_count_for_later_admissions_and_are_given_back() {
        let t = throttle_with_share(100, 10 * MIB, 50);
        let lane = t.lane();
        let upload = poll_once(pin!(lane.admit(0))).expect("admitted for nothing yet");
        upload.charge(4 * MIB);
        upload.charge(2 * MIB);
        assert_eq!(t.snapshot().in_flight_bytes, 6 * MIB);
        assert_eq!(lane.in_flight(), (1, 6 * MIB));
        // Its lane's share is 5 MiB: a second upload of that location waits.
        let mut second = pin!(lane.admit(1));
        assert!(poll_once(second.as_mut()).is_none(), "the location's share is spent");
        // The host's budget (10 MiB) has 4 MiB left for the rest.
        let small = deliver_now(&t, 3 * MIB).expect("fits the host's budget");
        assert!(deliver_now(&t, 2 * MIB).is_none(), "6 + 3 + 2 MiB > 10 MiB");
        drop(small);
        drop(upload);
        assert_eq!(
            t.snapshot().in_flight_bytes,
            1,
            "what was charged is given back (the second upload, admitted now, holds 1 byte)"
        );
        assert!(poll_once(second.as_mut()).is_some());
    }

    #[test]
    fn shares_are_at_least_one_message_and_one_mib() {
        let t = throttle_with_share(1, MIB, 1);
        assert_eq!(share(t.limits()), (1, MIB));
        let t = throttle_with_share(1000, 256 * MIB, 50);
        assert_eq!(share(t.limits()), (500, 128 * MIB));
    }

    #[test]
    fn rss_is_readable() {
        let rss = current_rss().expect("/proc/self/statm");
        assert!(rss > 1 << 20, "{rss}");
    }

    #[test]
    fn bytes_read_for_people() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(20 * MIB).to_string(), "20.0 MiB");
        assert_eq!(Bytes(3 << 30).to_string(), "3.0 GiB");
    }

    #[test]
    fn a_dropped_lane_slot_is_reused_only_once_its_permits_are_back() {
        let t = throttle(1000, 800, 10 * MIB, None);
        let a = t.lane();
        let held = poll_once(pin!(a.admit(5))).expect("admitted");
        drop(a);
        // Its permit is still out: a new lane must not take its counts.
        let b = t.lane();
        assert_eq!(b.in_flight(), (0, 0));
        assert_eq!(t.lock().lanes.len(), 2);
        drop(held);
        drop(b);
        // Both slots are free now: new lanes reuse them, no new slot.
        let c = t.lane();
        let d = t.lane();
        assert_eq!(t.lock().lanes.len(), 2, "restarted locations reuse slots");
        assert_eq!((c.in_flight(), d.in_flight()), ((0, 0), (0, 0)));
    }
}
