//! What keeps one client from holding an HTTP receive location shut:
//! caps on connections and uploads (per location and per client address),
//! a process-wide reserve of file descriptors, idle connections closed,
//! and a write timeout for clients that do not read their answer.
//!
//! **Making room.** A location at its own cap does not simply turn new
//! clients away (a slowloris from many addresses would then hold it shut):
//! it evicts the worst holder, if one is bad enough: for connections, the
//! one that has had no request in progress for longest (silent, or still
//! trickling its headers); for uploads, the slowest (lowest average rate
//! since it began, under a threshold). The evicted one is cut off (a
//! connection closed, an upload answered 408) and the newcomer takes its
//! place. The caps per client address never make room.
//!
//! Architecture Invariant: every connection and every upload holds a slot
//! of a bounded count (location, client address, process) for exactly as
//! long as it lives: the slots are taken before any work is done for it and
//! given back by `Drop`, however the connection or the request ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::support::fd::{FD_RESERVE, fd_limit};

/// Connections every HTTP receive location of this process may still
/// open: the file-descriptor limit less the reserve (read once, at the
/// first connection; the node raises its soft limit before).
fn process_budget() -> &'static AtomicI64 {
    static BUDGET: OnceLock<AtomicI64> = OnceLock::new();
    BUDGET.get_or_init(|| {
        let limit = fd_limit().unwrap_or(1024);
        let reserve = FD_RESERVE.max(limit / 8);
        AtomicI64::new(limit.saturating_sub(reserve).max(16) as i64)
    })
}

/// A log line at most once per interval, saying how many were left out.
pub struct RateLimited {
    every: Duration,
    /// Lines allowed in each period of `every`.
    burst: u32,
    /// The current period's start and the lines written in it.
    window: Mutex<Option<(Instant, u32)>>,
    suppressed: AtomicU64,
}

impl RateLimited {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        RateLimited::with_burst(every, 1)
    }

    /// At most `burst` lines per period of `every`.
    pub fn with_burst(every: Duration, burst: u32) -> Self {
        RateLimited {
            every,
            burst: burst.max(1),
            window: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` (n = occurrences left out since the last line) when a line
    /// may be written now; `None` when it must be left out.
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let Ok(mut window) = self.window.lock() else {
            return None;
        };
        match &mut *window {
            Some((start, lines)) if now.duration_since(*start) < self.every => {
                if *lines >= self.burst {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                *lines += 1;
            }
            _ => *window = Some((now, 1)),
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// How often a request waiting for room at a full location looks again
/// for a holder to evict (see [`Slots::take_within`]).
const ROOM_POLL: Duration = Duration::from_millis(20);

/// Why a connection or an upload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The location's own cap.
    Location(usize),
    /// The cap per client address.
    Client(usize),
    /// The process's file descriptors (less the reserve) are taken.
    Process,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Location(n) => write!(f, "the location's cap of {n} is reached"),
            Refusal::Client(n) => write!(f, "the cap of {n} per client address is reached"),
            Refusal::Process => write!(
                f,
                "the process is near its limit of open files (a reserve is kept for the box and other adapters)"
            ),
        }
    }
}

/// Which holder a location at its cap evicts to make room.
#[derive(Debug, Clone, Copy)]
pub enum Evict {
    /// Connections: the one with no request in progress for longest, if
    /// for at least `min_idle`.
    Idlest { min_idle: Duration },
    /// Uploads: the slowest, if it began at least `min_age` ago and has
    /// averaged under `below` bytes per second.
    Slowest { min_age: Duration, below: u64 },
}

/// Counts per location and per client address, each with a cap.
pub struct Slots {
    max: usize,
    per_client: usize,
    /// Also take a slot of the process's file-descriptor budget.
    process: bool,
    evict: Evict,
    inner: Mutex<SlotCounts>,
    /// Woken when a slot is given back (for [`Slots::take_within`]).
    given_back: tokio::sync::Notify,
    pub refusals: RateLimited,
    pub evictions: RateLimited,
}

#[derive(Default)]
struct SlotCounts {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
    holders: HashMap<u64, Arc<Holder>>,
    next: u64,
}

/// What one slot's holder is doing: how a location at its cap chooses whom
/// to evict, and how the holder learns it was.
pub struct Holder {
    client: IpAddr,
    started: Instant,
    /// Bytes received (uploads).
    bytes: AtomicU64,
    /// Requests in progress (connections).
    active: AtomicUsize,
    /// When it last had no request in progress (ms since `started`).
    idle_since_ms: AtomicU64,
    /// Cancelled when the holder is evicted.
    evicted: CancellationToken,
    /// Uploads: whether its body began to be read (a request still waiting
    /// for the host's throttle is never evicted as slow), and the time spent
    /// waiting for the client since (µs), over which its pace is judged:
    /// time the node took is not the client's.
    reading: std::sync::atomic::AtomicBool,
    client_wait_us: AtomicU64,
    /// While the client keeps it waiting: since when (µs since `started`,
    /// plus one; 0 when not waiting).
    wait_began_us: AtomicU64,
    /// Uploads: the body has all arrived (never evicted any more).
    finished: std::sync::atomic::AtomicBool,
    /// Connections: answers being written, and when one last made progress
    /// (ms since `started`).
    answering: AtomicUsize,
    answer_progress_ms: AtomicU64,
}

impl Holder {
    fn new(client: IpAddr) -> Holder {
        Holder {
            client,
            started: Instant::now(),
            bytes: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            evicted: CancellationToken::new(),
            reading: std::sync::atomic::AtomicBool::new(false),
            client_wait_us: AtomicU64::new(0),
            wait_began_us: AtomicU64::new(0),
            finished: std::sync::atomic::AtomicBool::new(false),
            answering: AtomicUsize::new(0),
            answer_progress_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A request began; it is in progress until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InRequest {
        self.active.fetch_add(1, Ordering::AcqRel);
        InRequest(self.clone())
    }

    /// How long it has had no request in progress (`None` while one is).
    pub fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.idle_since_ms.load(Ordering::Acquire);
        Some(Duration::from_millis(self.now_ms().saturating_sub(since)))
    }

    /// Its body is being read from now on (uploads).
    pub fn reading(&self) {
        self.reading.store(true, Ordering::Relaxed);
    }

    /// Count bytes received (uploads).
    pub fn received(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64 + 1
    }

    /// The client keeps the upload waiting from now (uploads).
    pub fn wait_begins(&self) {
        let _ = self
            .wait_began_us
            .compare_exchange(0, self.now_us(), Ordering::AcqRel, Ordering::Acquire);
    }

    /// The client sent something (or the wait ended otherwise).
    pub fn wait_ends(&self) {
        let began = self.wait_began_us.swap(0, Ordering::AcqRel);
        if began != 0 {
            self.client_wait_us
                .fetch_add(self.now_us().saturating_sub(began), Ordering::Relaxed);
        }
    }

    /// Count time spent waiting for the client (uploads; tests).
    #[cfg(test)]
    fn waited(&self, d: Duration) {
        self.client_wait_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// The body has all arrived: never evicted as slow any more.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }

    /// Time spent waiting for the client, bytes received, and the average
    /// bytes per second over that time (`None` before reading began or
    /// once the body has all arrived).
    pub fn pace(&self) -> Option<(Duration, u64, u64)> {
        if !self.reading.load(Ordering::Relaxed) || self.finished.load(Ordering::Relaxed) {
            return None;
        }
        let began = self.wait_began_us.load(Ordering::Acquire);
        let now = if began == 0 {
            0
        } else {
            self.now_us().saturating_sub(began)
        };
        let waited = Duration::from_micros(self.client_wait_us.load(Ordering::Relaxed) + now);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let rate = bytes as f64 / waited.as_secs_f64().max(0.001);
        Some((waited, bytes, rate as u64))
    }

    /// An answer is being written until the guard is dropped; `progress`
    /// on it marks each frame handed over.
    pub fn answering(self: &Arc<Self>) -> Answering {
        self.answer_progress_ms.store(self.now_ms(), Ordering::Release);
        self.answering.fetch_add(1, Ordering::AcqRel);
        Answering(self.clone())
    }

    /// How long the answers being written have made no progress (`None`
    /// when none is being written).
    pub fn answer_stalled_for(&self) -> Option<Duration> {
        if self.answering.load(Ordering::Acquire) == 0 {
            return None;
        }
        let since = self.answer_progress_ms.load(Ordering::Acquire);
        Some(Duration::from_millis(self.now_ms().saturating_sub(since)))
    }

    /// Cancelled when a location at its cap evicted this holder.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }
}

/// An answer being written on its connection.
pub struct Answering(Arc<Holder>);

impl Answering {
    /// A frame of the answer was handed to the connection.
    pub fn progress(&self) {
        self.0.answer_progress_ms.store(self.0.now_ms(), Ordering::Release);
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request in progress on its connection.
pub struct InRequest(Arc<Holder>);

impl Drop for InRequest {
    fn drop(&mut self) {
        let now = self.0.now_ms();
        self.0.idle_since_ms.store(now, Ordering::Release);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slots {
    pub fn new(max: usize, per_client: usize, process: bool, evict: Evict) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            per_client,
            process,
            evict,
            inner: Mutex::new(SlotCounts::default()),
            given_back: tokio::sync::Notify::new(),
            refusals: RateLimited::new(Duration::from_secs(10)),
            evictions: RateLimited::new(Duration::from_secs(10)),
        })
    }

    /// The holder to evict to make room, if one is bad enough.
    fn victim(&self, c: &SlotCounts) -> Option<Arc<Holder>> {
        let candidates = c.holders.values().filter(|h| !h.evicted.is_cancelled());
        match self.evict {
            Evict::Idlest { min_idle } => candidates
                .filter_map(|h| h.idle_for().filter(|d| *d >= min_idle).map(|d| (d, h)))
                .max_by_key(|(d, _)| *d)
                .map(|(_, h)| h.clone()),
            Evict::Slowest { min_age, below } => candidates
                .filter_map(|h| h.pace().map(|p| (p, h)))
                // Judged on time spent waiting for the client, not on time
                // the node took. (A client that waits for `100 Continue`
                // over a link slower than `min_age` is judged slow too: only
                // while the location is full.)
                .filter(|((waited, _, rate), _)| *waited >= min_age && *rate < below)
                .map(|((_, _, rate), h)| (rate, h))
                .min_by_key(|(rate, _)| *rate)
                .map(|(_, h)| h.clone()),
        }
    }

    /// Take a slot for `client`, or say which cap refuses it. At the
    /// location's cap the worst holder is evicted to make room (see the
    /// module doc); the second value is the client evicted, if one was.
    pub fn take(self: &Arc<Self>, client: IpAddr) -> Result<(Slot, Option<IpAddr>), Refusal> {
        let mut c = self.inner.lock().map_err(|_| Refusal::Location(self.max))?;
        let mine = c.by_client.get(&client).copied().unwrap_or(0);
        if mine >= self.per_client {
            return Err(Refusal::Client(self.per_client));
        }
        // The process's budget first: nobody is evicted for a newcomer
        // that cannot come in anyway.
        let give_back = || {
            if self.process {
                process_budget().fetch_add(1, Ordering::AcqRel);
            }
        };
        if self.process {
            let budget = process_budget();
            if budget.fetch_sub(1, Ordering::AcqRel) <= 0 {
                budget.fetch_add(1, Ordering::AcqRel);
                return Err(Refusal::Process);
            }
        }
        let mut evicted = None;
        if c.total >= self.max {
            // An evicted holder gives its slot back when it ends (soon);
            // until then the count stands over the cap by the evictions in
            // progress, never by more than a quarter of it.
            if c.total >= self.max + (self.max / 4).max(1) {
                give_back();
                return Err(Refusal::Location(self.max));
            }
            match self.victim(&c) {
                Some(v) => {
                    v.evicted.cancel();
                    evicted = Some(v.client);
                }
                None => {
                    give_back();
                    return Err(Refusal::Location(self.max));
                }
            }
        }
        c.total += 1;
        *c.by_client.entry(client).or_insert(0) += 1;
        let id = c.next;
        c.next += 1;
        let holder = Arc::new(Holder::new(client));
        c.holders.insert(id, holder.clone());
        Ok((
            Slot {
                slots: self.clone(),
                id,
                holder,
            },
            evicted,
        ))
    }

    /// [`Slots::take`], waiting up to `wait` for room when the location's
    /// own cap refuses: for a slot given back (an evicted holder ends a
    /// moment after it was chosen) or for a holder to become bad enough to
    /// evict (one that is slow but has not been slow for long yet). A
    /// location full of slow clients that keep coming back then still takes
    /// every normal request, a little later, instead of refusing the few
    /// that arrive while no holder can be evicted. The caps per client and
    /// of the process refuse at once.
    pub async fn take_within(
        self: &Arc<Self>,
        client: IpAddr,
        wait: Duration,
    ) -> Result<(Slot, Option<IpAddr>), Refusal> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before trying, so a slot given back in between wakes it.
            let given_back = self.given_back.notified();
            tokio::pin!(given_back);
            given_back.as_mut().enable();
            match self.take(client) {
                Err(Refusal::Location(n)) => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return Err(Refusal::Location(n));
                    }
                    // Holders age into candidates with no slot given back:
                    // look again at least this often.
                    let next = deadline.min(now + ROOM_POLL);
                    let _ = tokio::time::timeout_at(next, given_back).await;
                }
                other => return other,
            }
        }
    }

    /// Slots taken now (all clients).
    pub fn taken(&self) -> usize {
        self.inner.lock().map(|c| c.total).unwrap_or(0)
    }
}

/// One connection's or upload's slot; given back on drop.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    holder: Arc<Holder>,
}

impl Slot {
    pub fn holder(&self) -> &Arc<Holder> {
        &self.holder
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.slots.inner.lock() {
            c.total = c.total.saturating_sub(1);
            c.holders.remove(&self.id);
            let client = self.holder.client;
            if let Some(n) = c.by_client.get_mut(&client) {
                *n -= 1;
                if *n == 0 {
                    c.by_client.remove(&client);
                }
            }
        }
        if self.slots.process {
            process_budget().fetch_add(1, Ordering::AcqRel);
        }
        self.slots.given_back.notify_waiters();
    }
}

/// A connection's stream with a write timeout: a peer that takes none of
/// what is written to it for `write_timeout` is cut off (the write fails;
/// the connection ends, and an answer being streamed to it ends
/// unfinished). Serves a listener's clients and an SMTP server alike.
pub struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteTimeout<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// After the inner write returned `Pending`: fail once it has been
    /// pending for the timeout.
    fn pending(&mut self, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the peer took nothing written to it for {} s", timeout.as_secs_f64()),
            )));
        }
        Poll::Pending
    }

    fn track<T>(&mut self, r: Poll<std::io::Result<T>>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Ready(v) => {
                self.stalled = None;
                Poll::Ready(v)
            }
            Poll::Pending => match self.pending(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.track(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.track(r, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEVER: Evict = Evict::Idlest {
        min_idle: Duration::from_secs(3600),
    };

    #[test]
    fn slots_cap_per_location_and_per_client_and_give_back_on_drop() {
        let s = Slots::new(3, 2, false, NEVER);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = s.take(a).unwrap();
        let _a2 = s.take(a).unwrap();
        assert_eq!(s.take(a).err(), Some(Refusal::Client(2)));
        let _b1 = s.take(b).unwrap();
        assert_eq!(s.take(b).err(), Some(Refusal::Location(3)));
        drop(a1);
        assert_eq!(s.taken(), 2);
        let _b2 = s.take(b).unwrap();
        assert_eq!(s.taken(), 3);
    }

    #[test]
    fn a_full_location_evicts_its_idlest_connection_never_a_busy_one() {
        let s = Slots::new(
            2,
            10,
            false,
            Evict::Idlest {
                min_idle: Duration::ZERO,
            },
        );
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        let (busy, _) = s.take(ip(1)).unwrap();
        let _in_request = busy.holder().enter();
        let (idle, _) = s.take(ip(2)).unwrap();
        let (newcomer, evicted) = s.take(ip(3)).expect("room is made");
        assert_eq!(evicted, Some(ip(2)), "the idle one is evicted");
        assert!(idle.holder().evicted().is_cancelled());
        assert!(!busy.holder().evicted().is_cancelled());
        // Nobody idle is left to evict: refused.
        let _in_request2 = newcomer.holder().enter();
        assert_eq!(s.take(ip(4)).err(), Some(Refusal::Location(2)));
        drop(idle);
        assert_eq!(s.taken(), 2);
    }

    #[test]
    fn a_full_location_evicts_its_slowest_upload_if_slow_enough() {
        let s = Slots::new(
            4,
            10,
            false,
            Evict::Slowest {
                min_age: Duration::ZERO,
                below: 10_000,
            },
        );
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        let (fast, _) = s.take(ip(1)).unwrap();
        fast.holder().reading();
        fast.holder().waited(Duration::from_millis(10));
        fast.holder().received(1 << 30);
        let (slow, _) = s.take(ip(2)).unwrap();
        slow.holder().reading();
        slow.holder().waited(Duration::from_secs(1));
        slow.holder().received(1);
        // One whose body has all arrived is never a victim, however slow.
        let (done, _) = s.take(ip(6)).unwrap();
        done.holder().reading();
        done.holder().waited(Duration::from_secs(100));
        done.holder().received(1);
        done.holder().finish();
        // One still waiting to be read is never a victim.
        let (_waiting, _) = s.take(ip(5)).unwrap();
        let (_new, evicted) = s.take(ip(3)).expect("room is made");
        assert_eq!(evicted, Some(ip(2)));
        assert!(slow.holder().evicted().is_cancelled() && !fast.holder().evicted().is_cancelled());
        // The fast one is never evicted: no room.
        assert_eq!(s.take(ip(4)).err(), Some(Refusal::Location(4)));
    }

    #[tokio::test]
    async fn a_request_waits_briefly_for_room_at_a_full_location() {
        let s = Slots::new(
            1,
            10,
            false,
            Evict::Slowest {
                min_age: Duration::from_millis(50),
                below: 10_000,
            },
        );
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        // A slot given back while one waits: it gets it.
        let (held, _) = s.take(ip(1)).unwrap();
        let giver = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(held);
        });
        let started = Instant::now();
        let (mine, evicted) = s
            .take_within(ip(2), Duration::from_secs(5))
            .await
            .expect("the slot given back");
        assert!(evicted.is_none() && started.elapsed() >= Duration::from_millis(90));
        giver.await.unwrap();
        // A holder slow, but not for long enough yet: evicted once it is.
        mine.holder().reading();
        mine.holder().wait_begins();
        assert_eq!(s.take(ip(3)).err(), Some(Refusal::Location(1)), "not yet");
        let (_newcomer, evicted) = s
            .take_within(ip(3), Duration::from_secs(5))
            .await
            .expect("room made once it has been slow for 50 ms");
        assert_eq!(evicted, Some(ip(2)));
        // Nobody to evict and nothing given back: refused after the wait.
        let started = Instant::now();
        assert_eq!(
            s.take_within(ip(4), Duration::from_millis(200)).await.err(),
            Some(Refusal::Location(1))
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
        // The cap per client refuses at once.
        let s = Slots::new(5, 1, false, NEVER);
        let _one = s.take(ip(5)).unwrap();
        let started = Instant::now();
        assert_eq!(
            s.take_within(ip(5), Duration::from_secs(5)).await.err(),
            Some(Refusal::Client(1))
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_holder_is_idle_only_without_a_request() {
        let h = Arc::new(Holder::new(IpAddr::from([127, 0, 0, 1])));
        assert!(h.idle_for().is_some());
        let g = h.enter();
        assert!(h.idle_for().is_none());
        drop(g);
        assert!(h.idle_for().unwrap() < Duration::from_secs(1));
    }

    #[test]
    fn rate_limited_allows_a_burst_per_period() {
        let r = RateLimited::with_burst(Duration::from_secs(3600), 3);
        assert_eq!((r.allow(), r.allow(), r.allow()), (Some(0), Some(0), Some(0)));
        assert_eq!((r.allow(), r.allow()), (None, None));
        assert_eq!(r.suppressed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn rate_limited_says_how_many_were_left_out() {
        let r = RateLimited::new(Duration::from_secs(3600));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
        assert_eq!(r.suppressed.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_times_out() {
        use tokio::io::AsyncWriteExt;
        // A pipe whose reader never reads: writes fill it, then stay pending.
        let (writer, _reader) = tokio::io::duplex(1024);
        let mut w = WriteTimeout::new(writer, Duration::from_secs(5));
        let chunk = vec![0u8; 4096];
        let started = tokio::time::Instant::now();
        let err = loop {
            if let Err(e) = w.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(5));
    }
}
