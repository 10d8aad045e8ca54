//! The loop of a polled source (FILE, FTP): look at the place, take what is
//! there within the location's concurrency and the host's throttle, try
//! what failed again later (waits doubling), finish what is in flight when
//! the node stops. A source says how to look and how to take one item
//! ([`Polled`]); the loop is the same for all.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::support::retry::Retries;
use crate::{Admitted, Receipt, ReceiveContext};

/// An item a look found to take: a file, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// Its size when seen (what it asks of the host's bytes budget).
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// What taking an item came to.
#[derive(Debug)]
pub enum Taken {
    Published,
    /// Someone else took it first.
    Gone,
}

/// A polled source's file mask: a glob on the file name (`*`, `*.xml`,
/// `orders-??.csv`; a `*` never matches `/`), checked.
pub fn file_mask(mask: &str) -> Result<globset::GlobMatcher, crate::AdapterError> {
    Ok(globset::GlobBuilder::new(mask)
        .literal_separator(true)
        .build()
        .map_err(|e| crate::AdapterError::Config(format!("mask `{mask}`: {e}")))?
        .compile_matcher())
}

/// A polled source's `poll_interval` and `retry_after`, each between
/// 10 ms and a day.
pub fn check_intervals(poll_interval: Duration, retry_after: Duration) -> Result<(), crate::AdapterError> {
    let within = |d: Duration| d >= Duration::from_millis(10) && d <= Duration::from_secs(24 * 3600);
    for (key, value) in [("poll_interval", poll_interval), ("retry_after", retry_after)] {
        if !within(value) {
            return Err(crate::AdapterError::Config(format!(
                "{key} must be between 10ms and 1 day"
            )));
        }
    }
    Ok(())
}

/// How a polled source paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Items taken at the same time.
    pub concurrency: usize,
    /// Most items taken from one look; a full batch looks again at once.
    pub batch: usize,
    pub poll_interval: Duration,
    /// The wait before an item that failed is tried again (doubling).
    pub retry_after: Duration,
}

#[async_trait]
pub trait Polled: Send + Sync + 'static {
    /// The place looked at, for the log: a folder, a URL.
    fn place(&self) -> String;
    fn pace(&self) -> Pace;
    /// Before each look: what earlier failures left (claims to put back,
    /// messages to release).
    async fn tidy(&self, _cx: &ReceiveContext) {}
    /// The items to take now, leaving out `skip` (in flight, or waiting to
    /// be tried again) before counting to the batch.
    async fn look(&self, location: &str, skip: HashSet<String>) -> Result<Vec<Candidate>, String>;
    /// Take one item: claim, publish, remove. An error leaves it in place
    /// (or puts it back), to be tried again after a wait. `admitted` is the
    /// item's admission, for a source that charges bytes as they arrive.
    async fn take(&self, cx: &ReceiveContext, item: &Candidate, admitted: &Arc<Admitted>) -> Result<Taken, String>;
    /// Whether an item's size as looked at is trusted for its admission
    /// (a local file's: yes); otherwise it is admitted at 0 bytes and
    /// charges what arrives (a server's listing can say anything).
    fn trusts_sizes(&self) -> bool {
        true
    }
}

/// Run `source` until the node stops, then finish what is in flight.
pub async fn run<P: Polled>(source: Arc<P>, cx: ReceiveContext) {
    let pace = source.pace();
    let permits = Arc::new(Semaphore::new(pace.concurrency));
    let mut tasks: JoinSet<Result<Taken, String>> = JoinSet::new();
    // Each task's item by the task's id: a task that panicked (a library's
    // bug on a peer's odd answer) still gives its item back.
    let mut in_flight: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut retries = Retries::new(pace.retry_after);
    let mut reachable = true;
    'outer: loop {
        while let Some(done) = tasks.try_join_next_with_id() {
            settle_task(done, &mut in_flight, &mut retries);
        }
        // Neither a slow server nor a silent one holds up the stop.
        tokio::select! {
            _ = source.tidy(&cx) => {}
            _ = cx.shutdown.cancelled() => break 'outer,
        }
        let now = Instant::now();
        retries.forget_old(now);
        let skip: HashSet<String> = in_flight.values().chain(retries.waiting(now)).cloned().collect();
        let looked = tokio::select! {
            r = source.look(&cx.location, skip) => r,
            _ = cx.shutdown.cancelled() => break 'outer,
        };
        let candidates = match looked {
            Ok(c) => {
                if !reachable {
                    tracing::info!(location = %cx.location, place = %source.place(), "the source can be read again");
                    reachable = true;
                }
                c
            }
            Err(e) => {
                if reachable {
                    tracing::error!(location = %cx.location, place = %source.place(), error = %e,
                        "cannot look for files to receive; will keep trying");
                    reachable = false;
                }
                Vec::new()
            }
        };
        let mut taken = 0;
        for c in candidates {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break 'outer },
                _ = cx.shutdown.cancelled() => break 'outer,
            };
            // The host's throttle: nothing claimed or opened until admitted.
            let declared = if source.trusts_sizes() { c.size } else { 0 };
            let admitted = tokio::select! {
                a = cx.admission.admit(declared) => Arc::new(a),
                _ = cx.shutdown.cancelled() => break 'outer,
            };
            taken += 1;
            let name = c.name.clone();
            let (source, cx) = (source.clone(), cx.clone());
            let task = tasks.spawn(async move {
                let _permit = permit;
                source.take(&cx, &c, &admitted).await
            });
            in_flight.insert(task.id(), name);
            while let Some(done) = tasks.try_join_next_with_id() {
                settle_task(done, &mut in_flight, &mut retries);
            }
        }
        // A full batch means more may be waiting: look again at once.
        if taken < pace.batch {
            tokio::select! {
                _ = tokio::time::sleep(pace.poll_interval) => {}
                _ = cx.shutdown.cancelled() => break,
            }
        } else if cx.shutdown.is_cancelled() {
            break;
        }
    }
    // Stop taking; finish what is in flight, for a while: a server that
    // trickles a file does not hold the node's stop. What is cut off is
    // as after a crash: claimed, resolved at the next start.
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while let Some(done) = tasks.join_next_with_id().await {
            settle_task(done, &mut in_flight, &mut retries);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(location = %cx.location, place = %source.place(), items = ?in_flight.values().collect::<Vec<_>>(),
            "still receiving {}s after the stop: cut off; they are resolved at the next start", STOP_GRACE.as_secs());
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// How long a stopping source may finish what it has in flight.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

fn settle_task(
    done: Result<(tokio::task::Id, Result<Taken, String>), tokio::task::JoinError>,
    in_flight: &mut HashMap<tokio::task::Id, String>,
    retries: &mut Retries,
) {
    match done {
        Ok((id, result)) => {
            let Some(name) = in_flight.remove(&id) else { return };
            match result {
                Ok(_) => retries.succeeded(&name),
                Err(_) => retries.failed(name),
            }
        }
        Err(e) => {
            let name = in_flight.remove(&e.id()).unwrap_or_default();
            tracing::error!(item = %name, error = %e, "a receive task failed; the item is tried again later");
            if !name.is_empty() {
                retries.failed(name);
            }
        }
    }
}

/// Messages whose source is gone (the file deleted) but which the box
/// could not release yet (a full disk): tried again before every look, so
/// they do not stay held until the next start (which releases what is
/// left).
#[derive(Debug, Default)]
pub struct Unreleased(Mutex<Vec<(Receipt, String)>>);

impl Unreleased {
    /// Release the messages of `receipt`, whose source `file` is gone; kept
    /// to be tried again if the box cannot yet.
    pub async fn settle(&self, cx: &ReceiveContext, receipt: Receipt, file: &str) {
        if let Err(e) = cx.publisher.settled(&receipt).await {
            tracing::warn!(location = %cx.location, file = %file, messages = ?receipt.messages, error = %e,
                "received, but could not release the message yet; will try again");
            self.keep(receipt, file.to_string());
        }
    }

    fn keep(&self, receipt: Receipt, file: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((receipt, file));
    }

    /// Try again what could not be released.
    pub async fn retry(&self, cx: &ReceiveContext) {
        let pending = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for (receipt, file) in pending {
            match cx.publisher.settled(&receipt).await {
                Ok(()) => tracing::info!(location = %cx.location, file = %file, messages = ?receipt.messages,
                    "released the messages of a received file"),
                Err(_) => self.keep(receipt, file),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::kit::{self, FakeAdmission, FakePublisher};

    /// Two items; taking `boom` panics the first time (a library's bug),
    /// fails the second, goes through the third; `ok` goes through.
    struct Two {
        booms: AtomicUsize,
        oks: AtomicUsize,
        done: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Polled for Two {
        fn place(&self) -> String {
            "two".into()
        }
        fn pace(&self) -> Pace {
            Pace {
                concurrency: 2,
                batch: 10,
                poll_interval: Duration::from_millis(10),
                retry_after: Duration::from_millis(20),
            }
        }
        async fn look(&self, _location: &str, skip: HashSet<String>) -> Result<Vec<Candidate>, String> {
            let done = self.done.lock().unwrap_or_else(PoisonError::into_inner).clone();
            Ok(["boom", "ok"]
                .into_iter()
                .filter(|n| !skip.contains(*n) && !done.iter().any(|d| d == n))
                .map(|n| Candidate {
                    name: n.into(),
                    size: 1,
                    modified: None,
                })
                .collect())
        }
        async fn take(
            &self,
            _cx: &ReceiveContext,
            item: &Candidate,
            _admitted: &Arc<Admitted>,
        ) -> Result<Taken, String> {
            if item.name == "boom" {
                match self.booms.fetch_add(1, Ordering::SeqCst) {
                    0 => panic!("a library's bug"),
                    1 => return Err("failed".into()),
                    _ => {}
                }
            } else {
                self.oks.fetch_add(1, Ordering::SeqCst);
            }
            self.done
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(item.name.clone());
            Ok(Taken::Published)
        }
    }

    #[tokio::test]
    async fn an_item_whose_task_panicked_or_failed_is_tried_again_after_a_wait() {
        let two = Arc::new(Two {
            booms: AtomicUsize::new(0),
            oks: AtomicUsize::new(0),
            done: Mutex::new(Vec::new()),
        });
        let cx = kit::context(FakePublisher::new(), FakeAdmission::new());
        let task = tokio::spawn(run(two.clone(), cx.clone()));
        kit::eventually(Duration::from_secs(10), "boom taken at its third try", || async {
            two.done.lock().unwrap_or_else(PoisonError::into_inner).len() == 2
        })
        .await;
        cx.shutdown.cancel();
        task.await.unwrap();
        assert_eq!(two.booms.load(Ordering::SeqCst), 3);
        assert_eq!(two.oks.load(Ordering::SeqCst), 1, "ok taken once");
    }
}
