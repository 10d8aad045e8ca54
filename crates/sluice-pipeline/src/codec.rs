//! Streaming compression stages (gzip, zstd) over `Body` streams.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};

use async_compression::Level;
use async_compression::tokio::bufread::{GzipDecoder, GzipEncoder, ZstdDecoder, ZstdEncoder};
use tokio::io::{AsyncRead, BufReader, ReadBuf};

use crate::config::{DecodeConfig, EncodeConfig};
use crate::{Body, PipelineError};

/// Buffer between a stream and a codec.
const BUFFER: usize = 64 * 1024;

/// Counts what a codec takes from its input, and remembers whether the input
/// itself failed (so that error is passed on as it is, not blamed on the codec).
struct Counting {
    inner: Body,
    read: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
}

impl AsyncRead for Counting {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) => {
                self.read
                    .fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
            }
            Poll::Ready(Err(_)) => self.failed.store(true, Ordering::Relaxed),
            Poll::Pending => {}
        }
        r
    }
}

/// A decoder's output, capped in size, with errors that say where.
struct Decoded {
    inner: Body,
    component: &'static str,
    input: Arc<AtomicU64>,
    input_failed: Arc<AtomicBool>,
    output: u64,
    max: u64,
    /// The error already returned: every later read returns it again, so a
    /// reader that goes on never mistakes a cut-short stream for a whole one.
    failed: Option<(io::ErrorKind, Option<PipelineError>, String)>,
}

impl Decoded {
    fn error(&self, message: String) -> io::Error {
        self.error_of(io::ErrorKind::Other, message)
    }

    fn error_of(&self, kind: io::ErrorKind, message: String) -> io::Error {
        io::Error::new(
            kind,
            PipelineError {
                stage: "decode",
                component: self.component.to_string(),
                message,
            },
        )
    }
}

impl AsyncRead for Decoded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some((kind, stage, msg)) = &self.failed {
            return Poll::Ready(Err(match stage {
                Some(p) => io::Error::new(*kind, p.clone()),
                None => io::Error::new(*kind, msg.clone()),
            }));
        }
        let before = buf.filled().len();
        let r = self.poll_decoded(cx, buf, before);
        if let Poll::Ready(Err(e)) = &r {
            // An error hands out no bytes (the codec may have written some).
            buf.set_filled(before);
            let stage = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<PipelineError>())
                .cloned();
            self.failed = Some((e.kind(), stage, e.to_string()));
        }
        r
    }
}

impl Decoded {
    fn poll_decoded(&mut self, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>, before: usize) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                self.output += (buf.filled().len() - before) as u64;
                if self.output > self.max {
                    buf.set_filled(before);
                    let msg = format!(
                        "the decoded stream is over the limit of {} bytes (at input byte {}); raise max_size if this is expected",
                        self.max,
                        self.input.load(Ordering::Relaxed)
                    );
                    return Poll::Ready(Err(self.error(msg)));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) if self.input_failed.load(Ordering::Relaxed) => Poll::Ready(Err(e)),
            Poll::Ready(Err(e)) => {
                let (kind, what) = if e.kind() == io::ErrorKind::UnexpectedEof {
                    (io::ErrorKind::Other, "the compressed stream is truncated".to_string())
                } else if e.to_string().contains("too much memory") {
                    (
                        WINDOW_REFUSED,
                        "the stream needs a larger window than allowed (raise window_log_max if it is expected)"
                            .to_string(),
                    )
                } else {
                    (io::ErrorKind::Other, format!("the compressed stream is corrupt: {e}"))
                };
                let msg = format!(
                    "{what} (at input byte {}, after {} decoded bytes)",
                    self.input.load(Ordering::Relaxed),
                    self.output
                );
                Poll::Ready(Err(self.error_of(kind, msg)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The kind of the error a decoder returns when a frame asks for more
/// window (memory) than `window_log_max` allows.
const WINDOW_REFUSED: io::ErrorKind = io::ErrorKind::OutOfMemory;

/// Whether a [`decoder`]'s error is a frame refused because it asks for a
/// window above `window_log_max` (before the decoder allocated it), rather
/// than corrupt or truncated input.
pub fn is_window_refusal(e: &io::Error) -> bool {
    e.kind() == WINDOW_REFUSED && e.get_ref().is_some_and(|inner| inner.is::<PipelineError>())
}

/// Wrap `body` in a decoder: the decode stage's own construction (gzip
/// members and zstd frames concatenated are one stream; zstd frames may not
/// ask for a window above `window_log_max`), output capped at `max_size`,
/// errors naming stage `decode`, the component and the input position, an
/// error of `body` itself passed on as it is. Used by the receive pipeline
/// and by adapters that decode a transport's own encoding (HTTP
/// `Content-Encoding`).
pub fn decoder(cfg: &DecodeConfig, body: Body) -> Body {
    let read = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let input = BufReader::with_capacity(
        BUFFER,
        Counting {
            inner: body,
            read: read.clone(),
            failed: failed.clone(),
        },
    );
    let (component, max, inner): (&'static str, u64, Body) = match cfg {
        DecodeConfig::Gzip(c) => {
            let mut d = GzipDecoder::new(input);
            d.multiple_members(true);
            ("gzip", c.max_size.0, Box::new(d))
        }
        DecodeConfig::Zstd(c) => {
            let params = [async_compression::zstd::DParameter::window_log_max(c.window_log_max)];
            let mut d = ZstdDecoder::with_params(input, &params);
            d.multiple_members(true);
            ("zstd", c.max_size.0, Box::new(d))
        }
    };
    Box::new(Decoded {
        inner,
        component,
        input: read,
        input_failed: failed,
        output: 0,
        max,
        failed: None,
    })
}

/// Wrap `body` in an encoder.
pub(crate) fn encoder(cfg: &EncodeConfig, body: Body) -> Body {
    let input = BufReader::with_capacity(BUFFER, body);
    match cfg {
        EncodeConfig::Gzip(c) => Box::new(GzipEncoder::with_quality(input, Level::Precise(c.level as i32))),
        EncodeConfig::Zstd(c) => Box::new(ZstdEncoder::with_quality(input, Level::Precise(c.level))),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::config::*;

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| b"the quick brown fox jumps over the lazy dog\n"[i % 44])
            .collect()
    }

    async fn read(mut b: Body) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        b.read_to_end(&mut v).await.map(|_| v)
    }

    fn gz(level: u32) -> EncodeConfig {
        EncodeConfig::Gzip(GzipEncodeConfig { level })
    }
    fn gunzip(max: u64) -> DecodeConfig {
        DecodeConfig::Gzip(GzipDecodeConfig {
            max_size: ByteSize(max),
        })
    }

    #[tokio::test]
    async fn gzip_and_zstd_round_trip() {
        let data = text(1_000_000);
        for (enc, dec) in [
            (gz(6), gunzip(u64::MAX)),
            (
                EncodeConfig::Zstd(ZstdEncodeConfig { level: 3 }),
                DecodeConfig::Zstd(ZstdDecodeConfig {
                    max_size: ByteSize(u64::MAX),
                    window_log_max: 23,
                }),
            ),
        ] {
            let packed = read(encoder(&enc, Box::new(std::io::Cursor::new(data.clone()))))
                .await
                .unwrap();
            assert!(packed.len() < data.len() / 10, "{enc:?} compresses text");
            let back = read(decoder(&dec, Box::new(std::io::Cursor::new(packed))))
                .await
                .unwrap();
            assert!(back == data, "{enc:?} round-trips");
        }
    }

    /// A frame that asks for a window above the limit is refused before the
    /// decoder allocates it.
    #[tokio::test]
    async fn zstd_window_is_limited() {
        let data = text(300_000);
        let packed = zstd::bulk::compress(&data, 3).unwrap();
        let small = DecodeConfig::Zstd(ZstdDecodeConfig {
            max_size: ByteSize(u64::MAX),
            window_log_max: 10,
        });
        let e = read(decoder(&small, Box::new(std::io::Cursor::new(packed.clone()))))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("larger window than allowed"), "{e}");
        assert!(is_window_refusal(&e), "{e:?}");
        let normal = DecodeConfig::Zstd(ZstdDecodeConfig {
            max_size: ByteSize(u64::MAX),
            window_log_max: 23,
        });
        assert!(
            read(decoder(&normal, Box::new(std::io::Cursor::new(packed))))
                .await
                .unwrap()
                == data
        );
    }

    #[tokio::test]
    async fn concatenated_gzip_members_are_one_stream() {
        let a = read(encoder(&gz(6), Box::new(&b"first "[..]))).await.unwrap();
        let b = read(encoder(&gz(1), Box::new(&b"second"[..]))).await.unwrap();
        let both = [a, b].concat();
        let out = read(decoder(&gunzip(u64::MAX), Box::new(std::io::Cursor::new(both))))
            .await
            .unwrap();
        assert_eq!(out, b"first second");
    }

    #[tokio::test]
    async fn truncated_and_corrupt_streams_say_where() {
        let packed = read(encoder(&gz(6), Box::new(std::io::Cursor::new(text(200_000)))))
            .await
            .unwrap();
        let cut = packed[..packed.len() / 2].to_vec();
        let e = read(decoder(&gunzip(u64::MAX), Box::new(std::io::Cursor::new(cut))))
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("decode stage, component gzip") && msg.contains("truncated"),
            "{msg}"
        );
        assert!(msg.contains("at input byte"), "{msg}");

        let mut bad = packed.clone();
        for b in &mut bad[200..260] {
            *b ^= 0x5a;
        }
        let e = read(decoder(&gunzip(u64::MAX), Box::new(std::io::Cursor::new(bad))))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("decode stage, component gzip"), "{e}");

        let e = read(decoder(&gunzip(u64::MAX), Box::new(&b"not gzip at all"[..])))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
    }

    #[tokio::test]
    async fn an_error_sticks_and_hands_out_no_bytes() {
        use tokio::io::AsyncReadExt;
        let packed = read(encoder(&gz(6), Box::new(std::io::Cursor::new(text(200_000)))))
            .await
            .unwrap();
        let mut d = decoder(
            &gunzip(u64::MAX),
            Box::new(std::io::Cursor::new(packed[..packed.len() / 2].to_vec())),
        );
        let mut buf = vec![0u8; 1 << 20];
        let mut first_error = None;
        for _ in 0..1000 {
            match d.read(&mut buf).await {
                Ok(0) => panic!("a truncated stream must not end cleanly"),
                Ok(_) => continue,
                Err(e) => {
                    first_error = Some(e);
                    break;
                }
            }
        }
        let first = first_error.expect("an error");
        let again = d.read(&mut buf).await.unwrap_err();
        assert_eq!(again.to_string(), first.to_string());
        assert!(
            again
                .get_ref()
                .and_then(|e| e.downcast_ref::<PipelineError>())
                .is_some(),
            "still a stage error"
        );
    }

    #[tokio::test]
    async fn a_decompression_bomb_stops_at_the_cap() {
        // 64 MiB of zeros packs into about 64 KiB.
        let zeros = vec![0u8; 64 << 20];
        let bomb = read(encoder(&gz(9), Box::new(std::io::Cursor::new(zeros))))
            .await
            .unwrap();
        assert!(bomb.len() < 200_000);
        let e = read(decoder(&gunzip(1 << 20), Box::new(std::io::Cursor::new(bomb))))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("over the limit of 1048576 bytes"), "{e}");
    }

    #[tokio::test]
    async fn a_failing_source_is_not_blamed_on_the_codec() {
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(self: Pin<&mut Self>, _: &mut TaskContext<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Err(io::Error::other("the file shrank")))
            }
        }
        let e = read(decoder(&gunzip(u64::MAX), Box::new(Broken))).await.unwrap_err();
        assert_eq!(e.to_string(), "the file shrank");
    }
}
