//! The Sluice content store: message part bodies as streams.
//!
//! A body is read from an [`AsyncRead`] in fixed-size chunks and handed to a
//! [`ChunkStore`] one chunk at a time; a body that ends before the inline
//! threshold is kept in memory and stored inline with the message instead.
//! Reading a part back is a stream that fetches one chunk at a time and checks
//! the part's CRC-32 at the end.
//!
//! Architecture Invariant: bodies are streams. Writing or reading a part of
//! any size holds at most one chunk (plus one inline body) in memory; nothing
//! in this crate ever collects a whole body (seed 003: four buffered copies of
//! each message).
//!
//! Architecture Invariant: a part becomes visible only when it is complete.
//! [`write_part`] calls [`ChunkStore::finish`] only after the last chunk and
//! the checksum; a store must not let a message reference content that is
//! not finished, and must discard unfinished content after a crash.

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Default chunk size: 256 KiB.
pub const DEFAULT_CHUNK_SIZE: usize = 256 * 1024;
/// Bodies up to this size (default 8 KiB) are stored inline with the message.
pub const DEFAULT_INLINE_MAX: usize = 8 * 1024;

/// Identifies stored (non-inline) content in a [`ChunkStore`].
pub type ContentId = i64;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("reading the part body failed after {offset} bytes: {error}")]
    Source { offset: u64, error: io::Error },
    #[error("part body is over the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("content {id}: {what}")]
    Store { id: ContentId, what: String },
    #[error("content store: {0}")]
    Backend(String),
    #[error(
        "content {id} is corrupt: expected {expected_size} bytes with CRC-32 {expected_crc:08x}, read {size} bytes with CRC-32 {crc:08x}"
    )]
    Corrupt {
        id: ContentId,
        expected_size: u64,
        expected_crc: u32,
        size: u64,
        crc: u32,
    },
}

/// Where chunks go. Implemented by each message-box backend, so that content
/// lives and dies in the same transactions as the messages that use it.
#[async_trait]
pub trait ChunkStore: Send + Sync {
    /// Start a new piece of content; it stays invisible until [`finish`](Self::finish).
    async fn begin(&self) -> Result<ContentId, ContentError>;
    /// Store chunk `seq` (0-based, in order) of `id`.
    async fn put_chunk(&self, id: ContentId, seq: u32, data: Bytes) -> Result<(), ContentError>;
    /// Mark content complete: all `chunks` chunks are written; durable when this returns.
    async fn finish(&self, id: ContentId, size: u64, crc32: u32, chunks: u32) -> Result<(), ContentError>;
    /// Drop unfinished or unpublished content.
    async fn abort(&self, id: ContentId) -> Result<(), ContentError>;
    /// Read chunk `seq` of finished content.
    async fn get_chunk(&self, id: ContentId, seq: u32) -> Result<Bytes, ContentError>;
}

/// Where a part's bytes are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PartBody {
    /// Kept with the message row.
    Inline(#[serde(with = "bytes_serde")] Bytes),
    /// Kept as `chunks` chunks under `content` in the chunk store.
    Stored { content: ContentId, chunks: u32 },
}

mod bytes_serde {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Ok(Bytes::from(Vec::<u8>::deserialize(d)?))
    }
}

/// A written part, ready to be published with a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub name: String,
    pub size: u64,
    pub crc32: u32,
    pub body: PartBody,
}

impl Part {
    /// A small part held in memory (for tests, generated messages, replies).
    pub fn inline(name: &str, data: impl Into<Bytes>) -> Part {
        let data = data.into();
        Part {
            name: name.to_string(),
            size: data.len() as u64,
            crc32: crc32fast::hash(&data),
            body: PartBody::Inline(data),
        }
    }

    /// The content in the store this part refers to (`None` when inline):
    /// what to abort if the part is never published.
    pub fn stored_content(&self) -> Option<ContentId> {
        match self.body {
            PartBody::Stored { content, .. } => Some(content),
            PartBody::Inline(_) => None,
        }
    }
}

/// How parts are cut.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    pub chunk_size: usize,
    pub inline_max: usize,
    /// Refuse bodies larger than this.
    pub max_size: Option<u64>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            inline_max: DEFAULT_INLINE_MAX,
            max_size: None,
        }
    }
}

/// Fill `buf` up to its capacity or the end of `reader`; returns bytes read.
async fn fill(
    reader: &mut (dyn AsyncRead + Send + Unpin),
    buf: &mut BytesMut,
    limit: usize,
    offset: u64,
) -> Result<usize, ContentError> {
    let start = buf.len();
    while buf.len() < limit {
        let before = buf.len();
        // read_buf never reads past the spare capacity we reserve.
        buf.reserve(limit - buf.len());
        let mut take = (&mut *reader).take((limit - buf.len()) as u64);
        let n = take.read_buf(buf).await.map_err(|error| ContentError::Source {
            offset: offset + (before - start) as u64,
            error,
        })?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.len() - start)
}

/// Stream `reader` into the store as a part named `name`.
///
/// Memory use is one chunk. On any error the partly written content is
/// aborted, so nothing half-written is left visible or referenced.
pub async fn write_part(
    store: &dyn ChunkStore,
    name: &str,
    reader: &mut (dyn AsyncRead + Send + Unpin),
    opts: WriteOptions,
) -> Result<Part, ContentError> {
    let chunk_size = opts.chunk_size.max(1);
    let mut hasher = crc32fast::Hasher::new();
    let mut first = BytesMut::with_capacity(opts.inline_max + 1);
    let n = fill(reader, &mut first, opts.inline_max + 1, 0).await?;
    if n <= opts.inline_max {
        check_limit(n as u64, opts.max_size)?;
        hasher.update(&first);
        return Ok(Part {
            name: name.to_string(),
            size: n as u64,
            crc32: hasher.finalize(),
            body: PartBody::Inline(first.freeze()),
        });
    }
    let id = store.begin().await?;
    match write_chunks(store, id, first, reader, chunk_size, opts.max_size, &mut hasher).await {
        Ok((size, chunks)) => {
            let crc32 = hasher.finalize();
            if let Err(e) = store.finish(id, size, crc32, chunks).await {
                let _ = store.abort(id).await;
                return Err(e);
            }
            Ok(Part {
                name: name.to_string(),
                size,
                crc32,
                body: PartBody::Stored { content: id, chunks },
            })
        }
        Err(e) => {
            // Best effort: a crash here leaves unfinished content that the
            // store discards when it next opens.
            let _ = store.abort(id).await;
            Err(e)
        }
    }
}

fn check_limit(size: u64, max: Option<u64>) -> Result<(), ContentError> {
    match max {
        Some(limit) if size > limit => Err(ContentError::TooLarge { limit }),
        _ => Ok(()),
    }
}

async fn write_chunks(
    store: &dyn ChunkStore,
    id: ContentId,
    first: BytesMut,
    reader: &mut (dyn AsyncRead + Send + Unpin),
    chunk_size: usize,
    max_size: Option<u64>,
    hasher: &mut crc32fast::Hasher,
) -> Result<(u64, u32), ContentError> {
    let mut buf = first;
    let mut size = buf.len() as u64;
    let mut seq = 0u32;
    loop {
        let n = fill(reader, &mut buf, chunk_size, size).await?;
        size += n as u64;
        check_limit(size, max_size)?;
        if buf.is_empty() {
            break;
        }
        let at_end = buf.len() < chunk_size;
        let chunk = buf.split().freeze();
        hasher.update(&chunk);
        store.put_chunk(id, seq, chunk).await?;
        seq += 1;
        if at_end {
            break;
        }
        buf.reserve(chunk_size);
    }
    Ok((size, seq))
}

/// A part's bytes as an [`AsyncRead`]: one chunk in memory at a time, and an
/// error at the end if the size or CRC-32 does not match what was written.
pub fn read_part(store: Arc<dyn ChunkStore>, part: &Part) -> PartReader {
    let stream: Pin<Box<dyn futures::Stream<Item = io::Result<Bytes>> + Send>> = match &part.body {
        PartBody::Inline(data) => Box::pin(futures::stream::iter([Ok(data.clone())])),
        PartBody::Stored { content, chunks } => {
            struct State {
                store: Arc<dyn ChunkStore>,
                id: ContentId,
                next: u32,
                chunks: u32,
                hasher: crc32fast::Hasher,
                size: u64,
                expected_size: u64,
                expected_crc: u32,
            }
            let state = State {
                store,
                id: *content,
                next: 0,
                chunks: *chunks,
                hasher: crc32fast::Hasher::new(),
                size: 0,
                expected_size: part.size,
                expected_crc: part.crc32,
            };
            Box::pin(futures::stream::try_unfold(state, |mut st| async move {
                if st.next == st.chunks {
                    let crc = st.hasher.clone().finalize();
                    if crc != st.expected_crc || st.size != st.expected_size {
                        return Err(io::Error::other(ContentError::Corrupt {
                            id: st.id,
                            expected_size: st.expected_size,
                            expected_crc: st.expected_crc,
                            size: st.size,
                            crc,
                        }));
                    }
                    return Ok(None);
                }
                let chunk = st.store.get_chunk(st.id, st.next).await.map_err(io::Error::other)?;
                st.hasher.update(&chunk);
                st.size += chunk.len() as u64;
                st.next += 1;
                Ok(Some((chunk, st)))
            }))
        }
    };
    PartReader {
        inner: tokio_util::io::StreamReader::new(stream),
    }
}

/// See [`read_part`].
pub struct PartReader {
    inner: tokio_util::io::StreamReader<Pin<Box<dyn futures::Stream<Item = io::Result<Bytes>> + Send>>, Bytes>,
}

impl AsyncRead for PartReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

pub mod memory {
    //! An in-memory [`ChunkStore`], for tests of code that streams parts.
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    #[derive(Default)]
    pub struct MemChunkStore {
        next: AtomicI64,
        chunks: Mutex<HashMap<(ContentId, u32), Bytes>>,
        finished: Mutex<HashMap<ContentId, (u64, u32, u32)>>,
    }

    impl MemChunkStore {
        /// Chunks currently held (finished or not).
        pub fn chunk_count(&self) -> usize {
            self.chunks.lock().map(|c| c.len()).unwrap_or(0)
        }
        pub fn largest_chunk(&self) -> usize {
            self.chunks
                .lock()
                .map(|c| c.values().map(|b| b.len()).max().unwrap_or(0))
                .unwrap_or(0)
        }
        /// Flip one byte of a stored chunk (to test corruption detection).
        pub fn corrupt(&self, id: ContentId, seq: u32) {
            if let Ok(mut c) = self.chunks.lock()
                && let Some(b) = c.get_mut(&(id, seq))
            {
                let mut v = b.to_vec();
                v[0] ^= 0xff;
                *b = Bytes::from(v);
            }
        }
    }

    fn poisoned<T>(_: T) -> ContentError {
        ContentError::Backend("memory store lock poisoned".into())
    }

    #[async_trait]
    impl ChunkStore for MemChunkStore {
        async fn begin(&self) -> Result<ContentId, ContentError> {
            Ok(self.next.fetch_add(1, Ordering::SeqCst) + 1)
        }
        async fn put_chunk(&self, id: ContentId, seq: u32, data: Bytes) -> Result<(), ContentError> {
            self.chunks.lock().map_err(poisoned)?.insert((id, seq), data);
            Ok(())
        }
        async fn finish(&self, id: ContentId, size: u64, crc32: u32, chunks: u32) -> Result<(), ContentError> {
            self.finished
                .lock()
                .map_err(poisoned)?
                .insert(id, (size, crc32, chunks));
            Ok(())
        }
        async fn abort(&self, id: ContentId) -> Result<(), ContentError> {
            self.chunks.lock().map_err(poisoned)?.retain(|(c, _), _| *c != id);
            self.finished.lock().map_err(poisoned)?.remove(&id);
            Ok(())
        }
        async fn get_chunk(&self, id: ContentId, seq: u32) -> Result<Bytes, ContentError> {
            if !self.finished.lock().map_err(poisoned)?.contains_key(&id) {
                return Err(ContentError::Store {
                    id,
                    what: "is not finished".into(),
                });
            }
            self.chunks
                .lock()
                .map_err(poisoned)?
                .get(&(id, seq))
                .cloned()
                .ok_or_else(|| ContentError::Store {
                    id,
                    what: format!("chunk {seq} is missing"),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemChunkStore;
    use super::*;
    use tokio::io::AsyncReadExt;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    async fn round_trip(n: usize, opts: WriteOptions) -> (Arc<MemChunkStore>, Part) {
        let store = Arc::new(MemChunkStore::default());
        let input = data(n);
        let mut reader: &[u8] = &input;
        let part = write_part(&*store, "body", &mut reader, opts).await.unwrap();
        assert_eq!(part.size, n as u64);
        let mut out = Vec::new();
        read_part(store.clone(), &part).read_to_end(&mut out).await.unwrap();
        assert!(out == input, "{n} bytes did not round-trip");
        (store, part)
    }

    #[tokio::test]
    async fn sizes_around_the_boundaries() {
        let opts = WriteOptions {
            chunk_size: 1024,
            inline_max: 100,
            max_size: None,
        };
        for n in [0, 1, 100, 101, 1023, 1024, 1025, 2048, 5000] {
            let (store, part) = round_trip(n, opts).await;
            match part.body {
                PartBody::Inline(_) => assert!(n <= 100),
                PartBody::Stored { chunks, .. } => {
                    assert!(n > 100);
                    assert_eq!(chunks as usize, n.div_ceil(1024));
                    assert!(store.largest_chunk() <= 1024);
                }
            }
        }
    }

    #[tokio::test]
    async fn corruption_is_detected() {
        let opts = WriteOptions {
            chunk_size: 1024,
            inline_max: 10,
            max_size: None,
        };
        let (store, part) = round_trip(4000, opts).await;
        let PartBody::Stored { content, .. } = part.body else {
            panic!()
        };
        store.corrupt(content, 1);
        let mut out = Vec::new();
        let err = read_part(store, &part).read_to_end(&mut out).await.unwrap_err();
        assert!(err.to_string().contains("is corrupt"), "{err}");
    }

    #[tokio::test]
    async fn size_limit_aborts_and_leaves_nothing() {
        let store = MemChunkStore::default();
        let input = data(10_000);
        let mut reader: &[u8] = &input;
        let opts = WriteOptions {
            chunk_size: 1024,
            inline_max: 10,
            max_size: Some(5000),
        };
        let err = write_part(&store, "body", &mut reader, opts).await.unwrap_err();
        assert!(matches!(err, ContentError::TooLarge { limit: 5000 }));
        assert_eq!(store.chunk_count(), 0);
    }

    #[tokio::test]
    async fn source_error_aborts_and_names_the_offset() {
        struct Failing(usize);
        impl AsyncRead for Failing {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                if self.0 == 0 {
                    return std::task::Poll::Ready(Err(io::Error::other("disk went away")));
                }
                let n = self.0.min(buf.remaining()).min(700);
                buf.put_slice(&vec![7u8; n]);
                self.0 -= n;
                std::task::Poll::Ready(Ok(()))
            }
        }
        let store = MemChunkStore::default();
        let opts = WriteOptions {
            chunk_size: 1024,
            inline_max: 10,
            max_size: None,
        };
        let err = write_part(&store, "body", &mut Failing(3000), opts).await.unwrap_err();
        assert!(err.to_string().contains("after 3000 bytes"), "{err}");
        assert_eq!(store.chunk_count(), 0);
    }
}
