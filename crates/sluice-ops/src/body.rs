//! The bytes of one part of a message, streamed from the box: what `sluice
//! messages body` and `sluice suspended body` write out, and what the REST
//! API serves.
//!
//! Memory does not grow with the part: [`Body::next`] hands out at most
//! [`READ_SIZE`] bytes at a time, read from the content store one chunk at
//! a time. The part's size is known before the first byte, and its size and
//! CRC-32 are checked after the last one. A byte range (HTTP `Range`) is
//! served from the same [`Body`], skipped to its start and ended at its
//! end.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sluice_content::{ContentError, PartReader, read_part};
use sluice_model::MessageId;
use sluice_msgbox::{BoxError, MessageBox, Part};
use tokio::io::AsyncReadExt;

use crate::OpsError;
use crate::error::read_error;

/// Most bytes [`Body::next`] hands out at once.
pub const READ_SIZE: usize = 64 * 1024;

/// Whose body: a message's, or a suspended entry's message's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOf {
    Message(MessageId),
    /// The `#` number of `sluice suspended list`.
    Suspended(i64),
}

/// One part of a message, open for reading.
pub struct Body {
    /// The message the part belongs to.
    pub message_id: MessageId,
    /// Its position among the message's parts (0: the body).
    pub index: usize,
    /// How many parts the message has.
    pub parts: usize,
    pub name: String,
    /// Its size in bytes: what [`next`](Body::next) hands out in all.
    pub size: u64,
    pub crc32: u32,
    /// Bytes handed out so far.
    read: u64,
    reader: PartReader,
    b: Arc<dyn MessageBox>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("message_id", &self.message_id)
            .field("index", &self.index)
            .field("name", &self.name)
            .field("size", &self.size)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

/// Open part `part` (default 0, the body) of a message, or of a suspended
/// entry's message. `not_found` when the message or the entry is not in
/// the box, or it has no such part (the error says how many it has).
pub async fn open(b: Arc<dyn MessageBox>, of: BodyOf, part: Option<usize>) -> Result<Body, OpsError> {
    let (message_id, parts) = match of {
        BodyOf::Message(id) => (id, crate::messages::show(&*b, id).await?.parts),
        BodyOf::Suspended(id) => {
            let shown = crate::suspended::show(&*b, id).await?;
            (shown.entry.message_id, shown.parts)
        }
    };
    let index = part.unwrap_or(0);
    let Some(p) = parts.get(index) else {
        return Err(OpsError::NotFound(no_such_part(message_id, index, &parts)));
    };
    let Part { name, size, crc32, .. } = p.clone();
    Ok(Body {
        message_id,
        index,
        parts: parts.len(),
        name,
        size,
        crc32,
        read: 0,
        reader: read_part(b.content(), p),
        b,
    })
}

fn no_such_part(id: MessageId, index: usize, parts: &[Part]) -> String {
    match parts.len() {
        0 => format!("message {id} has no parts, so no part {index}"),
        1 => format!("message {id} has 1 part (part 0), so no part {index}"),
        n => format!("message {id} has {n} parts (0 to {}), so no part {index}", n - 1),
    }
}

impl Body {
    /// The next bytes (at most [`READ_SIZE`]), or `None` after the last,
    /// once the part's size and CRC-32 are checked. A message that left
    /// the box meanwhile (delivered, terminated) is `not_found`, saying how
    /// far the reading got; stored bytes that fail the check are
    /// `corrupt_content`.
    pub async fn next(&mut self) -> Result<Option<Bytes>, OpsError> {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let n = match (&mut self.reader).take(READ_SIZE as u64).read_buf(&mut buf).await {
            Ok(n) => n,
            Err(e) => return Err(self.failed(e).await),
        };
        self.read += n as u64;
        Ok((n > 0).then(|| buf.freeze()))
    }

    /// Bytes handed out so far.
    pub fn read(&self) -> u64 {
        self.read
    }

    /// What a failed read means: corrupt content, the message gone, or
    /// the box's storage failing.
    async fn failed(&mut self, e: std::io::Error) -> OpsError {
        let doing = format!("reading part {} of message {}", self.index, self.message_id);
        let content = match e.into_inner().map(|inner| inner.downcast::<ContentError>()) {
            Some(Ok(content)) => *content,
            Some(Err(other)) => ContentError::Backend(other.to_string()),
            None => ContentError::Backend("the read failed".into()),
        };
        if matches!(content, ContentError::Corrupt { .. }) {
            return OpsError::Read {
                doing,
                error: BoxError::Content(content),
            };
        }
        match self.b.message(self.message_id).await {
            Ok(None) => OpsError::NotFound(format!(
                "message {} left the box while part {} was read, after {} of {} bytes (it was delivered or \
                 terminated meanwhile); its content is gone",
                self.message_id, self.index, self.read, self.size
            )),
            Ok(Some(_)) => read_error(doing)(BoxError::Content(content)),
            Err(error) => read_error(doing)(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_content::{WriteOptions, write_part};
    use sluice_model::Context;
    use sluice_msgbox::{NewMessage, Routed, Subscription, SystemClock};
    use sluice_msgbox_sqlite::{Options, SqliteBox};

    use super::*;
    use crate::ErrorCode;

    async fn open_box() -> (tempfile::TempDir, Arc<dyn MessageBox>) {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
        (dir, Arc::new(b))
    }

    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// A stored part of `data`, in chunks of 16 KiB.
    async fn stored(b: &dyn MessageBox, name: &str, data: &[u8]) -> Part {
        let opts = WriteOptions {
            chunk_size: 16 * 1024,
            inline_max: 64,
            max_size: None,
        };
        let mut reader = data;
        write_part(&*b.content(), name, &mut reader, opts).await.unwrap()
    }

    async fn publish(b: &dyn MessageBox, parts: Vec<Part>) -> (MessageId, Routed) {
        let mut context = Context::new();
        context.promote("t", "kind", "x");
        let id = MessageId::new();
        let routed = b.publish(NewMessage { id, context, parts }).await.unwrap();
        (id, routed)
    }

    /// Everything `next` hands out, checking that no piece is over `READ_SIZE`.
    async fn read_all(body: &mut Body) -> Result<Vec<u8>, OpsError> {
        let mut out = Vec::new();
        while let Some(piece) = body.next().await? {
            assert!(!piece.is_empty() && piece.len() <= READ_SIZE, "{}", piece.len());
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_part_streams_in_bounded_pieces_and_missing_ones_say_what_there_is() {
        let (_dir, b) = open_box().await;
        let big = data(5 * READ_SIZE + 123, 7);
        let parts = vec![stored(&*b, "body", &big).await, Part::inline("extra", "small")];
        // No subscription: suspended, so both ways in find it.
        let (id, routed) = publish(&*b, parts).await;
        let Routed::Suspended { suspended_id } = routed else {
            panic!()
        };
        let mut body = open(b.clone(), BodyOf::Message(id), None).await.unwrap();
        assert_eq!((body.index, body.parts, body.name.as_str()), (0, 2, "body"));
        assert_eq!(body.size, big.len() as u64);
        assert!(read_all(&mut body).await.unwrap() == big, "part 0 round-trips");
        assert_eq!(body.read(), big.len() as u64);
        assert!(body.next().await.unwrap().is_none(), "the end stays the end");
        let mut extra = open(b.clone(), BodyOf::Suspended(suspended_id), Some(1)).await.unwrap();
        assert_eq!((extra.message_id, extra.name.as_str()), (id, "extra"));
        assert_eq!(read_all(&mut extra).await.unwrap(), b"small");

        let e = open(b.clone(), BodyOf::Message(id), Some(2)).await.unwrap_err();
        assert_eq!(e.error_code(), ErrorCode::NotFound);
        assert_eq!(
            e.to_string(),
            format!("message {id} has 2 parts (0 to 1), so no part 2")
        );
        let nobody = MessageId::new();
        let e = open(b.clone(), BodyOf::Message(nobody), None).await.unwrap_err();
        assert_eq!(e.error_code(), ErrorCode::NotFound);
        assert!(
            e.to_string().contains(&format!("message {nobody} is not in the box")),
            "{e}"
        );
        let e = open(b.clone(), BodyOf::Suspended(suspended_id + 1), None)
            .await
            .unwrap_err();
        assert_eq!(e.error_code(), ErrorCode::NotFound);
        assert!(e.to_string().contains("does not exist"), "{e}");
        let (empty, _) = publish(&*b, vec![]).await;
        let e = open(b.clone(), BodyOf::Message(empty), None).await.unwrap_err();
        assert_eq!(e.to_string(), format!("message {empty} has no parts, so no part 0"));
    }

    /// The message is delivered (and its content deleted) while its body
    /// is read: the reading ends with `not_found`, saying how far it got,
    /// never with a short body that looks whole.
    #[tokio::test]
    async fn a_message_delivered_while_read_ends_the_read_with_not_found() {
        let (_dir, b) = open_box().await;
        b.subscribe(Subscription {
            subscriber: "out".into(),
            filter: sluice_model::Filter::All,
        })
        .await
        .unwrap();
        let big = data(4 * READ_SIZE, 3);
        let (id, _) = publish(&*b, vec![stored(&*b, "body", &big).await]).await;
        let mut body = open(b.clone(), BodyOf::Message(id), None).await.unwrap();
        let first = body.next().await.unwrap().unwrap();
        assert_eq!(body.read(), first.len() as u64);
        let leased = b.lease("out", 1, 10_000).await.unwrap();
        b.ack(leased[0].token).await.unwrap();
        let e = read_all(&mut body).await.unwrap_err();
        assert_eq!(e.error_code(), ErrorCode::NotFound);
        let text = e.to_string();
        assert!(
            text.contains(&format!(
                "message {id} left the box while part 0 was read, after {} of {} bytes",
                first.len(),
                big.len()
            )),
            "{text}"
        );
        assert!(text.contains("its content is gone"), "{text}");
    }
}
