//! The chaos send port: FILE send with faults put in on purpose, for testing
//! deployments (retries, process isolation, memory-limit recycling of hosts).
//! Never for production.
//!
//! ```toml
//! adapter = { type = "chaos", path = "out", file_name = "%SourceFileName%",
//!             delay = "200ms", fail_rate = 0.5, leak_per_message = "1MiB" }
//! ```
//!
//! Each attempt waits `delay`, then fails with a retryable error with
//! probability `fail_rate` (before anything is written), then writes exactly
//! as a FILE send port with the same keys does, then, once the message is
//! delivered, allocates `leak_per_message` bytes, fills them and keeps them
//! until the process ends: the fault of seed 000, a vendor's fax library
//! that leaked memory on every poll. What it leaked so far:
//! [`leaked_bytes`].

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use humantime_serde::re::humantime::format_duration;
use serde::Deserialize;
use sluice_pipeline::ByteSize;

use crate::file::{FileSendConfig, FileTransmitter};
use crate::{AdapterError, Body, Claim, Delivered, Need, Outbound, SendAdapter, TransmitError, Transmitter};

/// The most `leak_per_message` may be: 1 GiB.
pub const MAX_LEAK_PER_MESSAGE: u64 = 1 << 30;
/// The longest `delay`: an hour.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// The byte every leaked page is filled with (not zero, so that every page is
/// really written and counts in the process's resident memory).
const LEAK_FILL: u8 = 0xA5;

/// What the chaos ports of this process leaked, kept until it ends.
static LEAKED: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());
static LEAKED_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes the chaos send ports of this process have leaked so far.
pub fn leaked_bytes() -> u64 {
    LEAKED_BYTES.load(Ordering::Relaxed)
}

/// `type = "chaos"` send port: the keys of a FILE send port, and the faults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosSendConfig {
    /// Where and how to write: `path`, `file_name`, `overwrite`, `fsync`,
    /// `create_folder`, as for FILE.
    #[serde(flatten)]
    pub file: FileSendConfig,
    /// Wait this long before each attempt (at most [`MAX_DELAY`]).
    #[serde(default, with = "humantime_serde")]
    pub delay: Duration,
    /// The share of attempts (0 to 1) that fail, retryably, before writing.
    #[serde(default)]
    pub fail_rate: f64,
    /// Bytes kept forever after each delivery (at most [`MAX_LEAK_PER_MESSAGE`]).
    #[serde(default = "no_leak")]
    pub leak_per_message: ByteSize,
}

fn no_leak() -> ByteSize {
    ByteSize(0)
}

impl ChaosSendConfig {
    pub fn build(&self) -> Result<ChaosTransmitter, AdapterError> {
        let bad = |m: String| AdapterError::Config(m);
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(bad(format!(
                "fail_rate `{}` must be 0 to 1 (the share of attempts that fail; 0: none, 1: all)",
                self.fail_rate
            )));
        }
        if self.delay > MAX_DELAY {
            return Err(bad(format!(
                "delay `{}` must be at most {}",
                format_duration(self.delay),
                format_duration(MAX_DELAY)
            )));
        }
        if self.leak_per_message.0 > MAX_LEAK_PER_MESSAGE {
            return Err(bad(format!(
                "leak_per_message `{}` must be at most 1GiB",
                self.leak_per_message
            )));
        }
        let file = self.file.build()?;
        tracing::warn!(path = %self.file.path.display(), delay = %format_duration(self.delay), fail_rate = self.fail_rate,
            leak_per_message = self.leak_per_message.0,
            "a chaos send port is configured: it delays, fails and leaks memory on purpose, for testing deployments only");
        Ok(ChaosTransmitter {
            file,
            delay: self.delay,
            fail_rate: self.fail_rate,
            leak_per_message: self.leak_per_message.0,
        })
    }
}

impl SendAdapter for ChaosSendConfig {
    fn resolve_paths(&mut self, base: &Path) {
        self.file.resolve_paths(base);
    }
    fn build(&self) -> Result<Arc<dyn Transmitter>, AdapterError> {
        Ok(Arc::new(ChaosSendConfig::build(self)?))
    }
    fn resources(&self) -> Vec<Claim> {
        SendAdapter::resources(&self.file)
    }
    fn needs(&self) -> Vec<Need> {
        SendAdapter::needs(&self.file)
    }
}

/// A FILE transmitter with delays, failures and a leak.
pub struct ChaosTransmitter {
    file: FileTransmitter,
    delay: Duration,
    fail_rate: f64,
    leak_per_message: u64,
}

#[async_trait]
impl Transmitter for ChaosTransmitter {
    async fn transmit(&self, msg: &Outbound, body: Body) -> Result<Delivered, TransmitError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.fail_rate > 0.0 && fastrand::f64() < self.fail_rate {
            return Err(TransmitError::retry(format!(
                "chaos failure: this attempt failed on purpose (fail_rate {}); nothing was written",
                self.fail_rate
            )));
        }
        let delivered = self.file.transmit(msg, body).await?;
        if self.leak_per_message > 0 {
            let n = self.leak_per_message;
            // Filling up to a gigabyte is no work for the runtime's threads.
            if let Err(e) = tokio::task::spawn_blocking(move || leak(n)).await {
                tracing::warn!(message_id = %msg.id, error = %e, "the chaos send port could not leak its bytes");
            }
        }
        Ok(delivered)
    }
}

/// Allocate `n` bytes, write every one, and keep them until the process ends.
fn leak(n: u64) {
    let Ok(len) = usize::try_from(n) else {
        return;
    };
    let mut bytes: Vec<u8> = Vec::new();
    if bytes.try_reserve_exact(len).is_err() {
        tracing::warn!(bytes = n, "the chaos send port could not allocate the bytes it leaks");
        return;
    }
    bytes.resize(len, LEAK_FILL);
    let bytes = std::hint::black_box(bytes.into_boxed_slice());
    LEAKED.lock().unwrap_or_else(PoisonError::into_inner).push(bytes);
    LEAKED_BYTES.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::{names_in, outbound};

    fn config(dir: &Path, extra: &str) -> Result<ChaosSendConfig, toml::de::Error> {
        toml::from_str(&format!(
            "path = '{}'\nfile_name = '%SourceFileName%'\n{extra}",
            dir.display()
        ))
    }

    fn transmitter(dir: &Path, extra: &str) -> ChaosTransmitter {
        config(dir, extra).unwrap().build().unwrap()
    }

    #[test]
    fn defaults_are_no_chaos_and_the_file_keys_are_files() {
        let c = config(Path::new("/out"), "overwrite = true").unwrap();
        assert_eq!(
            (c.delay, c.fail_rate, c.leak_per_message),
            (Duration::ZERO, 0.0, ByteSize(0))
        );
        assert_eq!(c.file.path, Path::new("/out"));
        assert!(c.file.overwrite && c.file.fsync && !c.file.create_folder);
        let c = config(
            Path::new("/out"),
            "delay = '1.5s'\nfail_rate = 0.25\nleak_per_message = '10KiB'",
        )
        .unwrap();
        assert_eq!(
            (c.delay, c.fail_rate, c.leak_per_message),
            (Duration::from_millis(1500), 0.25, ByteSize(10 << 10))
        );
        let c = config(Path::new("/out"), "leak_per_message = 4096").unwrap();
        assert_eq!(c.leak_per_message, ByteSize(4096));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = Path::new("/out");
        for (extra, says) in [
            ("leak_per_mesage = 1", "unknown field `leak_per_mesage`"),
            ("leak_per_message = '10 parsecs'", "is not a size unit"),
            ("leak_per_message = 'much'", "is not a size"),
            ("leak_per_message = -1", "cannot be negative"),
            ("delay = '5'", "delay"),
            ("fail_rate = 'half'", "fail_rate"),
        ] {
            let e = config(dir, extra).unwrap_err().to_string();
            assert!(e.contains(says), "{extra}: {e}");
        }
        for (extra, says) in [
            ("fail_rate = 1.5", "fail_rate `1.5` must be 0 to 1"),
            ("fail_rate = -0.1", "fail_rate `-0.1` must be 0 to 1"),
            ("fail_rate = nan", "fail_rate `NaN` must be 0 to 1"),
            (
                "leak_per_message = '2GiB'",
                "leak_per_message `2147483648 bytes` must be at most 1GiB",
            ),
            ("delay = '2h'", "delay `2h` must be at most 1h"),
        ] {
            let e = config(dir, extra).unwrap().build().err().unwrap().to_string();
            assert!(e.contains(says), "{extra}: {e}");
        }
        // FILE's own checks hold too.
        let c: ChaosSendConfig = toml::from_str("path = '/out'\nfile_name = 'a/%MessageId%'").unwrap();
        let e = c.build().err().unwrap().to_string();
        assert!(e.contains("file_name `a/%MessageId%`"), "{e}");
        for good in [
            "fail_rate = 0",
            "fail_rate = 1.0",
            "leak_per_message = '1GiB'",
            "delay = '1h'",
        ] {
            config(dir, good).unwrap().build().unwrap();
        }
    }

    #[tokio::test]
    async fn fail_rate_1_always_fails_retryably_and_writes_nothing() {
        // A size no other test leaks: none of it may be kept.
        const ODD: usize = 1_234_567;
        let dir = tempfile::tempdir().unwrap();
        let t = transmitter(dir.path(), &format!("fail_rate = 1.0\nleak_per_message = {ODD}"));
        for _ in 0..20 {
            let e = t.transmit(&outbound("a.txt"), Box::new(&b"one"[..])).await.unwrap_err();
            assert!(e.retryable && !e.needs_edit, "{e}");
            assert!(e.message.starts_with("chaos failure"), "{e}");
        }
        assert!(names_in(dir.path()).is_empty(), "{:?}", names_in(dir.path()));
        let kept = LEAKED.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(!kept.iter().any(|b| b.len() == ODD), "a failed attempt leaked");
    }

    #[tokio::test]
    async fn fail_rate_0_writes_exactly_like_file() {
        let (chaos_dir, file_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let chaos = transmitter(chaos_dir.path(), "fail_rate = 0.0");
        let file = FileSendConfig {
            path: file_dir.path().to_path_buf(),
            file_name: "%SourceFileName%".into(),
            overwrite: false,
            fsync: true,
            create_folder: false,
        }
        .build()
        .unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let m = outbound("a.bin");
        let by_chaos = chaos
            .transmit(&m, Box::new(std::io::Cursor::new(data.clone())))
            .await
            .unwrap();
        let by_file = file
            .transmit(&m, Box::new(std::io::Cursor::new(data.clone())))
            .await
            .unwrap();
        assert!(matches!(by_chaos, Delivered::To(_)) && matches!(by_file, Delivered::To(_)));
        let (a, b) = (
            std::fs::read(chaos_dir.path().join("a.bin")).unwrap(),
            std::fs::read(file_dir.path().join("a.bin")).unwrap(),
        );
        assert!(a == data && a == b, "not byte-identical");
        // Then FILE's rules: the same bytes again are an earlier delivery,
        // other bytes are refused (retryably), and nothing temporary is left.
        let again = chaos
            .transmit(&m, Box::new(std::io::Cursor::new(data.clone())))
            .await
            .unwrap();
        assert!(matches!(again, Delivered::AlreadyThere(_)), "{again:?}");
        let e = chaos.transmit(&m, Box::new(&b"other"[..])).await.unwrap_err();
        assert!(e.retryable && e.message.contains("already exists"), "{e}");
        assert_eq!(names_in(chaos_dir.path()), ["a.bin"]);
    }

    #[tokio::test]
    async fn half_the_attempts_fail_at_fail_rate_one_half() {
        let dir = tempfile::tempdir().unwrap();
        let t = transmitter(dir.path(), "fail_rate = 0.5\noverwrite = true");
        let mut failed = 0;
        for _ in 0..200 {
            if t.transmit(&outbound("a"), Box::new(&b"x"[..])).await.is_err() {
                failed += 1;
            }
        }
        // Binomial(200, 0.5): outside 50..=150 about once in 10^12 runs.
        assert!((50..=150).contains(&failed), "{failed} of 200 failed");
    }

    #[tokio::test]
    async fn each_delivery_leaks_its_bytes_for_good() {
        const LEAK: u64 = 3 << 20;
        let dir = tempfile::tempdir().unwrap();
        let t = transmitter(dir.path(), "leak_per_message = '3MiB'");
        let before = leaked_bytes();
        for i in 0..4 {
            t.transmit(&outbound(&format!("f{i}")), Box::new(&b"x"[..]))
                .await
                .unwrap();
        }
        // Other tests of this process may leak meanwhile, never less.
        assert!(
            leaked_bytes() - before >= 4 * LEAK,
            "{} leaked",
            leaked_bytes() - before
        );
        let kept = LEAKED.lock().unwrap_or_else(PoisonError::into_inner);
        let ours = kept.iter().filter(|b| b.len() as u64 == LEAK).count();
        assert!(ours >= 4, "{ours} blocks of 3 MiB kept");
        assert!(
            kept.iter()
                .filter(|b| b.len() as u64 == LEAK)
                .all(|b| b.iter().all(|&x| x == LEAK_FILL)),
            "every byte written"
        );
    }

    /// The delay is waited before each attempt, on tokio's clock (paused
    /// here, so the test takes no time): nothing is written before it ends.
    #[tokio::test(start_paused = true)]
    async fn the_delay_comes_before_each_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(transmitter(dir.path(), "delay = '30s'"));
        let start = tokio::time::Instant::now();
        let sending = {
            let t = t.clone();
            tokio::spawn(async move { t.transmit(&outbound("a"), Box::new(&b"x"[..])).await })
        };
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(!sending.is_finished());
        assert!(names_in(dir.path()).is_empty(), "written before the delay ended");
        sending.await.unwrap().unwrap();
        assert!(start.elapsed() >= Duration::from_secs(30), "{:?}", start.elapsed());
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"x");
    }

    /// It claims what FILE claims, and needs what its file name needs.
    #[test]
    fn resources_and_needs_are_files() {
        let mut c: crate::SendAdapterConfig =
            toml::from_str("type = 'chaos'\npath = 'out'\nfile_name = '%property:order.id%.xml'").unwrap();
        assert_eq!(c.kind(), "chaos");
        c.adapter_mut().resolve_paths(Path::new("/etc/sluice"));
        let claims = c.resources();
        assert_eq!(claims.len(), 1);
        assert!(!claims[0].exclusive);
        assert_eq!(claims[0].resource.to_string(), "/etc/sluice/out");
        let needs = c.needs();
        assert_eq!(needs.len(), 1);
        assert_eq!(needs[0].property.to_string(), "order.id");
    }
}
