//! A request body on its way into the box, as an `AsyncRead`: complete
//! or refused, capped, charged to the host's throttle as it arrives, and cut
//! off when the client sends too slowly.
//!
//! Architecture Invariant: a body counts as complete only when its stream
//! ended normally (HTTP/2: END_STREAM received, not a reset of any kind)
//! and its length matches the declared `Content-Length`; anything else is
//! an error, so nothing truncated is ever published.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http_body::Body as _;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

use crate::Admitted;
use crate::support::guard::Holder;

/// Why a request body could not be taken: the client's doing.
#[derive(Debug, Clone)]
pub enum Fault {
    TooLarge(String),
    Undecodable(String),
    TooSlow(String),
    Broken(String),
}

/// The first fault of a request (later ones are its consequences).
pub type FaultSlot = Arc<Mutex<Option<Fault>>>;

pub fn record(slot: &Mutex<Option<Fault>>, f: Fault) {
    if let Ok(mut slot) = slot.lock() {
        slot.get_or_insert(f);
    }
}

fn io_error(kind: std::io::ErrorKind, message: String) -> std::io::Error {
    std::io::Error::new(kind, message)
}

/// The request body's data frames; ends with an error unless the body
/// ended normally with the declared length (see the module doc).
pub struct CompleteBody {
    body: axum::body::Body,
    /// HTTP/2: a stream ended by RST_STREAM(NO_ERROR) looks ended to hyper;
    /// only `is_end_stream` tells END_STREAM from a reset.
    h2: bool,
    declared: Option<u64>,
    seen: u64,
    fault: FaultSlot,
    done: bool,
}

impl CompleteBody {
    pub fn new(body: axum::body::Body, h2: bool, declared: Option<u64>, fault: FaultSlot) -> Self {
        CompleteBody {
            body,
            h2,
            declared,
            seen: 0,
            fault,
            done: false,
        }
    }

    fn broken(&mut self, message: String) -> Poll<Option<std::io::Result<Bytes>>> {
        self.done = true;
        record(&self.fault, Fault::Broken(message.clone()));
        Poll::Ready(Some(Err(io_error(std::io::ErrorKind::UnexpectedEof, message))))
    }
}

impl Stream for CompleteBody {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        // Trailers: nothing of the body.
                        continue;
                    };
                    self.seen += data.len() as u64;
                    if let Some(d) = self.declared
                        && self.seen > d
                    {
                        let seen = self.seen;
                        return self.broken(format!(
                            "the body is longer ({seen}+ bytes) than its Content-Length {d}"
                        ));
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(Some(Err(e))) => {
                    let seen = self.seen;
                    return self.broken(format!("the body broke off after {seen} bytes: {e}"));
                }
                Poll::Ready(None) => {
                    let seen = self.seen;
                    if self.h2 && !self.body.is_end_stream() {
                        return self.broken(format!(
                            "the client reset the stream after {seen} bytes, before the body's end"
                        ));
                    }
                    if let Some(d) = self.declared
                        && seen != d
                    {
                        return self.broken(format!("the body ended after {seen} of its Content-Length {d} bytes"));
                    }
                    self.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// A minimum transfer rate: at least `bytes` in every `interval` spent
/// waiting for the client.
#[derive(Debug, Clone, Copy)]
pub struct MinRate {
    pub bytes: u64,
    pub interval: Duration,
}

/// The client's pace: cut off (`TooSlow`) when it sends nothing for `idle`,
/// or less than the minimum rate. Only time spent waiting for the client
/// counts: while the node is slow to read (a busy disk), the client is not.
pub struct Paced<R> {
    inner: R,
    idle: Duration,
    rate: MinRate,
    fault: FaultSlot,
    /// Time waited for the client in the current window, and bytes got in it.
    window_waited: Duration,
    window_bytes: u64,
    /// Since when the client has kept us waiting (the current stretch), and
    /// from when that stretch is not yet counted in the window.
    stretch_since: Option<Instant>,
    counted_from: Option<Instant>,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The upload's slot: told the bytes received; cancelled if a location
    /// at its cap evicts this upload to make room.
    holder: Option<(Arc<Holder>, Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>)>,
}

impl<R> Paced<R> {
    /// Report to (and be evicted by) the upload slot `holder`.
    pub fn with_holder(mut self, holder: Arc<Holder>) -> Self {
        let evicted = Box::pin(holder.evicted().clone().cancelled_owned());
        self.holder = Some((holder, evicted));
        self
    }

    pub fn new(inner: R, idle: Duration, rate: MinRate, fault: FaultSlot) -> Self {
        Paced {
            inner,
            idle,
            rate,
            fault,
            window_waited: Duration::ZERO,
            window_bytes: 0,
            stretch_since: None,
            counted_from: None,
            timer: Box::pin(tokio::time::sleep(idle)),
            holder: None,
        }
    }

    /// `Some` once the location evicted this upload to make room.
    fn evicted(&mut self, cx: &mut TaskContext<'_>) -> Option<String> {
        let (holder, evicted) = self.holder.as_mut()?;
        if evicted.as_mut().poll(cx).is_pending() {
            return None;
        }
        let (waited, bytes, _) = holder.pace().unwrap_or_default();
        Some(format!(
            "cut off to make room for another client: the location is at its cap of uploads and this one \
             was the slowest ({bytes} bytes in {:.1} s)",
            waited.as_secs_f64()
        ))
    }

    fn too_slow(&mut self, message: String) -> Poll<std::io::Result<()>> {
        record(&self.fault, Fault::TooSlow(message.clone()));
        Poll::Ready(Err(io_error(std::io::ErrorKind::TimedOut, message)))
    }

    /// Count the waiting up to `now` into the window; at the window's end,
    /// check the rate and start a new window.
    fn close_window_if_due(&mut self, now: Instant) -> Result<(), String> {
        if let Some(from) = self.counted_from {
            self.window_waited += now.saturating_duration_since(from);
            self.counted_from = Some(now);
        }
        if self.window_waited >= self.rate.interval {
            if self.window_bytes < self.rate.bytes {
                return Err(format!(
                    "the client sent {} bytes in {:.0} s, below the minimum rate of {} bytes per {:.0} s",
                    self.window_bytes,
                    self.window_waited.as_secs_f64(),
                    self.rate.bytes,
                    self.rate.interval.as_secs_f64()
                ));
            }
            self.window_waited = Duration::ZERO;
            self.window_bytes = 0;
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Paced<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some((holder, _)) = &self.holder {
            holder.reading();
        }
        if let Some(m) = self.evicted(cx) {
            return self.too_slow(m);
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let got = (buf.filled().len() - before) as u64;
                let now = Instant::now();
                if let Some((holder, _)) = &self.holder {
                    holder.wait_ends();
                    holder.received(got);
                    if got == 0 && r.is_ok() && buf.remaining() > 0 {
                        // End of the body: it has all arrived.
                        holder.finish();
                    }
                }
                self.window_bytes += got;
                let due = self.close_window_if_due(now);
                self.stretch_since = None;
                self.counted_from = None;
                if r.is_ok()
                    && got > 0
                    && let Err(m) = due
                {
                    return self.too_slow(m);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let now = Instant::now();
                if let Some((holder, _)) = &self.holder {
                    holder.wait_begins();
                }
                let since = *self.stretch_since.get_or_insert(now);
                if self.counted_from.is_none() {
                    self.counted_from = Some(now);
                }
                if now.saturating_duration_since(since) >= self.idle {
                    let secs = self.idle.as_secs_f64();
                    return self.too_slow(format!("the client sent nothing for {secs:.0} s"));
                }
                if let Err(m) = self.close_window_if_due(now) {
                    return self.too_slow(m);
                }
                // Wake at the stretch's idle limit or the window's end.
                let window_left = self.rate.interval.saturating_sub(self.window_waited);
                let next = (since + self.idle).min(now + window_left);
                self.timer.as_mut().reset(next);
                if self.timer.as_mut().poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}

/// Counts bytes through; past `max` it fails. Charges what passes to the
/// host's throttle (`charge`), so what has arrived counts, not what was
/// declared.
pub struct Capped<R> {
    pub inner: R,
    pub seen: u64,
    pub max: u64,
    /// Over the decoder's output (else over the bytes as sent).
    pub decoded: bool,
    pub fault: FaultSlot,
    pub charge: Option<Arc<Admitted>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Capped<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let got = (buf.filled().len() - before) as u64;
            self.seen += got;
            if let Some(a) = &self.charge
                && got > 0
            {
                a.charge(got);
            }
            if self.seen > self.max {
                let what = if self.decoded { "the decoded body" } else { "the body" };
                let message = format!("{what} is over {} bytes", self.max);
                record(&self.fault, Fault::TooLarge(message.clone()));
                return Poll::Ready(Err(io_error(std::io::ErrorKind::InvalidData, message)));
            }
        }
        if let Poll::Ready(Err(e)) = &r {
            // An error below the decoder is the body breaking off; one from
            // the decoder itself is the encoding being wrong.
            let fault = if self.decoded && sluice_pipeline::is_window_refusal(e) {
                Fault::TooLarge(format!(
                    "the body cannot be decoded within the memory allowed: a zstd frame asks for a window \
                     over {} MiB (2^{}); compress without --long, or send it with decode = false",
                    (1u64 << sluice_pipeline::DEFAULT_WINDOW_LOG_MAX) >> 20,
                    sluice_pipeline::DEFAULT_WINDOW_LOG_MAX
                ))
            } else if self.decoded {
                Fault::Undecodable(e.to_string())
            } else {
                Fault::Broken(e.to_string())
            };
            record(&self.fault, fault);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn slot() -> FaultSlot {
        Arc::new(Mutex::new(None))
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_below_the_minimum_rate_is_cut_off() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let fault = slot();
        let rate = MinRate {
            bytes: 100,
            interval: Duration::from_secs(10),
        };
        let mut paced = Paced::new(rx, Duration::from_secs(60), rate, fault.clone());
        let feeder = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for _ in 0..100 {
                if tx.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
        let started = Instant::now();
        let mut sink = Vec::new();
        let err = paced.read_to_end(&mut sink).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() <= Duration::from_secs(12), "cut within a window");
        assert!(matches!(fault.lock().unwrap().clone(), Some(Fault::TooSlow(m)) if m.contains("minimum rate")));
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_cut_off_at_the_idle_limit() {
        let (_tx, rx) = tokio::io::duplex(64);
        let fault = slot();
        let rate = MinRate {
            bytes: 0,
            interval: Duration::from_secs(10),
        };
        let mut paced = Paced::new(rx, Duration::from_secs(30), rate, fault.clone());
        let started = Instant::now();
        let mut sink = Vec::new();
        let err = paced.read_to_end(&mut sink).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed().as_secs(), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_client_above_the_rate_is_not_cut_and_node_slowness_does_not_count() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let fault = slot();
        let rate = MinRate {
            bytes: 1000,
            interval: Duration::from_secs(10),
        };
        let mut paced = Paced::new(rx, Duration::from_secs(60), rate, fault.clone());
        // The client sent everything at once; the node reads late (slow disk).
        use tokio::io::AsyncWriteExt;
        tx.write_all(&[1u8; 5000]).await.unwrap();
        drop(tx);
        tokio::time::sleep(Duration::from_secs(120)).await;
        let mut sink = Vec::new();
        paced.read_to_end(&mut sink).await.unwrap();
        assert_eq!(sink.len(), 5000);
        assert!(fault.lock().unwrap().is_none());
    }
}
