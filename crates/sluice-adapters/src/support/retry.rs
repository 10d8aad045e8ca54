//! Items of a polled source (a folder's files, a remote folder's files)
//! that failed, and when each may be tried again: the wait doubles while an
//! item keeps failing, up to 32 times the first, and a success forgets it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How many times the first wait the wait grows to, at most.
const MAX_FACTOR: u32 = 32;

#[derive(Debug)]
struct Wait {
    until: Instant,
    wait: Duration,
}

/// The failed items of one source, by name.
#[derive(Debug)]
pub struct Retries {
    first: Duration,
    waits: HashMap<String, Wait>,
}

impl Retries {
    /// `first`: the wait after a first failure (a source's `retry_after`).
    pub fn new(first: Duration) -> Retries {
        Retries {
            first,
            waits: HashMap::new(),
        }
    }

    /// `name` failed (again): it waits twice as long as last time, or
    /// `first` after a first failure.
    pub fn failed(&mut self, name: String) {
        let wait = self
            .waits
            .get(&name)
            .map(|w| (w.wait * 2).min(self.first * MAX_FACTOR))
            .unwrap_or(self.first);
        self.waits.insert(
            name,
            Wait {
                until: Instant::now() + wait,
                wait,
            },
        );
    }

    /// `name` went through: its failures are forgotten.
    pub fn succeeded(&mut self, name: &str) {
        self.waits.remove(name);
    }

    /// Forget failures that are long past (the longest wait after their
    /// end); the others are kept, so the wait keeps doubling while an item
    /// keeps failing.
    pub fn forget_old(&mut self, now: Instant) {
        let longest = self.first * MAX_FACTOR;
        self.waits.retain(|_, w| w.until + longest > now);
    }

    /// The names still waiting at `now`.
    pub fn waiting(&self, now: Instant) -> impl Iterator<Item = &String> {
        self.waits.iter().filter(move |(_, w)| w.until > now).map(|(n, _)| n)
    }

    /// The wait `name` is in, if it failed.
    pub fn wait_of(&self, name: &str) -> Option<Duration> {
        self.waits.get(name).map(|w| w.wait)
    }

    pub fn is_empty(&self) -> bool {
        self.waits.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_while_an_item_keeps_failing_and_a_success_forgets_it() {
        let mut r = Retries::new(Duration::from_secs(1));
        let mut waits = Vec::new();
        for _ in 0..7 {
            r.failed("f".into());
            waits.push(r.wait_of("f").unwrap().as_secs());
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 32]);
        let now = Instant::now();
        assert_eq!(r.waiting(now).collect::<Vec<_>>(), vec!["f"]);
        assert_eq!(r.waiting(now + Duration::from_secs(33)).count(), 0);
        r.forget_old(now + Duration::from_secs(33));
        assert!(!r.is_empty(), "kept while its wait could still grow");
        r.forget_old(now + Duration::from_secs(65));
        assert!(r.is_empty(), "forgotten once long past");
        r.failed("g".into());
        r.succeeded("g");
        assert!(r.is_empty(), "success forgets the failures");
    }
}
