//! Decoding a transport's own encoding through the pipeline's decode stage.
//!
//! Architecture Invariant: an adapter never builds a decompressor of its
//! own. It asks [`decoder`] for the decode stage's (same construction, same
//! zstd window limit, [`sluice_pipeline::DEFAULT_WINDOW_LOG_MAX`]), so a
//! small frame that asks for a huge window is refused before anything is
//! allocated, whichever door it came in by.

use sluice_pipeline::{ByteSize, DecodeConfig, GzipDecodeConfig, ZstdDecodeConfig};

use crate::Body;

/// The codings [`decoder`] knows, as named by HTTP's `Content-Encoding`.
pub const CODINGS: &[&str] = &["gzip", "zstd"];

/// `body` decoded from `coding` (`gzip` or `zstd`, see [`CODINGS`]), its
/// output capped at `max_decoded` bytes (the decode stage's error past it;
/// `u64::MAX` leaves the cap to the caller). `None` for a coding not known.
/// A frame refused for its window fails with an error that
/// [`sluice_pipeline::is_window_refusal`] recognises.
pub fn decoder(coding: &str, body: Body, max_decoded: u64) -> Option<Body> {
    let max_size = ByteSize(max_decoded);
    let cfg = match coding {
        "gzip" => DecodeConfig::Gzip(GzipDecodeConfig { max_size }),
        "zstd" => DecodeConfig::Zstd(ZstdDecodeConfig {
            max_size,
            window_log_max: sluice_pipeline::DEFAULT_WINDOW_LOG_MAX,
        }),
        _ => return None,
    };
    Some(sluice_pipeline::decoder(&cfg, body))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// A zstd frame header asking for a 2^`log` window, then one RLE block.
    fn frame(log: u8) -> Vec<u8> {
        let mut f = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, (log - 10) << 3];
        let header: u32 = 1 | (1 << 1) | (16 << 3);
        f.extend(&header.to_le_bytes()[..3]);
        f.push(b'x');
        f
    }

    async fn read(b: Body) -> std::io::Result<Vec<u8>> {
        let mut b = b;
        let mut v = Vec::new();
        b.read_to_end(&mut v).await.map(|_| v)
    }

    #[tokio::test]
    async fn zstd_windows_are_limited_like_the_pipeline_stage() {
        let ok = decoder("zstd", Box::new(std::io::Cursor::new(frame(20))), u64::MAX).unwrap();
        assert_eq!(read(ok).await.unwrap(), vec![b'x'; 16]);
        for log in [24, 27, 31] {
            let d = decoder("zstd", Box::new(std::io::Cursor::new(frame(log))), u64::MAX).unwrap();
            let e = read(d).await.unwrap_err();
            assert!(sluice_pipeline::is_window_refusal(&e), "2^{log}: {e}");
        }
        assert!(decoder("br", Box::new(tokio::io::empty()), 1).is_none());
    }
}
