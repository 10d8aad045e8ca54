//! The assemble stage (send side): several messages into one document.
//!
//! A send port whose pipeline has an assembler leases up to `batch` messages
//! (waiting at most `wait` for a batch to fill) and transmits them as one
//! document: a header, each message's body, a separator between bodies, a
//! footer. The document is a stream over the messages' bodies, read one
//! after the other: a large body is never held whole. What the send port
//! does hold is the batch's leases and contexts, and the bodies small
//! enough to be stored inline (≤ 8 KiB each), hence `batch` ≤ 10,000.
//!
//! * `xml`: `<?xml version="1.0" encoding="UTF-8"?>` then `<root>`, each
//!   body without its own XML declaration or byte-order mark, then `</root>`.
//! * `json`: `[`, the bodies separated by `,`, `]`; or, with `key`,
//!   `{"key": [...]}`.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, stream};
use serde::Deserialize;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::Body;

fn default_batch() -> u32 {
    100
}
fn default_wait() -> Duration {
    Duration::from_secs(5)
}

/// `assemble = { type = "xml", root = "Orders", batch = 100, wait = "5s" }`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmlAssembleConfig {
    /// The root element's name (may carry a prefix, declared in `namespace`).
    pub root: String,
    /// Default namespace of the root element (`xmlns="..."`), if any.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Most messages per document.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// Longest a message waits for its batch to fill.
    #[serde(default = "default_wait", with = "humantime_serde")]
    pub wait: Duration,
}

/// `assemble = { type = "json", batch = 100, wait = "5s", key = "orders" }`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonAssembleConfig {
    /// Wrap the array in an object under this key; none: a top-level array.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default = "default_batch")]
    pub batch: u32,
    #[serde(default = "default_wait", with = "humantime_serde")]
    pub wait: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AssembleConfig {
    Xml(XmlAssembleConfig),
    Json(JsonAssembleConfig),
}

/// Most messages in one assembled document. The send port holds the batch's
/// leases, contexts and small (inline, ≤ 8 KiB) bodies while it sends.
pub const MAX_BATCH: u32 = 10_000;

impl AssembleConfig {
    pub fn batch(&self) -> u32 {
        match self {
            AssembleConfig::Xml(c) => c.batch,
            AssembleConfig::Json(c) => c.batch,
        }
    }
    pub fn wait(&self) -> Duration {
        match self {
            AssembleConfig::Xml(c) => c.wait,
            AssembleConfig::Json(c) => c.wait,
        }
    }
    pub fn component(&self) -> &'static str {
        match self {
            AssembleConfig::Xml(_) => "xml",
            AssembleConfig::Json(_) => "json",
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let name = self.component();
        if !(1..=MAX_BATCH).contains(&self.batch()) {
            return Err(format!(
                "assemble ({name}) batch {} is not 1 to {MAX_BATCH}",
                self.batch()
            ));
        }
        if self.wait() > Duration::from_secs(3600) {
            return Err(format!("assemble ({name}) wait is over an hour"));
        }
        if let AssembleConfig::Xml(c) = self {
            let ok = !c.root.is_empty()
                && c.root.chars().enumerate().all(|(i, ch)| {
                    ch.is_alphabetic() || ch == '_' || (i > 0 && (ch.is_numeric() || matches!(ch, '-' | '.' | ':')))
                });
            if !ok {
                return Err(format!("assemble (xml) root `{}` is not an element name", c.root));
            }
        }
        Ok(())
    }

    /// One document streamed from `bodies`, in order.
    pub fn assemble(&self, bodies: Vec<Body>) -> Body {
        type Piece = std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;
        fn fixed(b: impl Into<Bytes>) -> Piece {
            Box::pin(stream::once(futures::future::ready(Ok(b.into()))))
        }
        let (header, separator, footer, xml) = match self {
            AssembleConfig::Xml(c) => {
                let ns = c
                    .namespace
                    .as_deref()
                    .map(|n| format!(" xmlns=\"{}\"", escape_attr(n)))
                    .unwrap_or_default();
                (
                    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{}{ns}>\n", c.root),
                    "\n",
                    format!("\n</{}>\n", c.root),
                    true,
                )
            }
            AssembleConfig::Json(c) => (
                match &c.key {
                    Some(k) => format!("{{{}:[\n", serde_json::Value::String(k.clone())),
                    None => "[\n".to_string(),
                },
                ",\n",
                match &c.key {
                    Some(_) => "\n]}\n".to_string(),
                    None => "\n]\n".to_string(),
                },
                false,
            ),
        };
        let mut pieces: Vec<Piece> = vec![fixed(header)];
        for (i, body) in bodies.into_iter().enumerate() {
            if i > 0 {
                pieces.push(fixed(separator));
            }
            pieces.push(Box::pin(without_prolog(body, xml)));
        }
        pieces.push(fixed(footer));
        Box::new(StreamReader::new(stream::iter(pieces).flatten()))
    }
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;")
}

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// The most bytes looked at for a body's prolog.
const PROLOG_MAX: usize = 4096;

/// Whether `head` holds enough to decide what to strip.
fn prolog_decided(head: &[u8], xml: bool) -> bool {
    let rest = head.strip_prefix(BOM).unwrap_or(head);
    if !xml {
        return head.len() >= BOM.len() || !BOM.starts_with(head);
    }
    let rest = rest.trim_ascii_start();
    if rest.len() < 5 {
        return false;
    }
    !is_declaration(rest) || rest.windows(2).any(|w| w == b"?>")
}

/// Strip a byte-order mark and (xml) an XML declaration and the whitespace
/// around it from the start of `head`.
fn strip_prolog(head: &[u8], xml: bool) -> &[u8] {
    let rest = head.strip_prefix(BOM).unwrap_or(head);
    if !xml {
        return rest;
    }
    let trimmed = rest.trim_ascii_start();
    if is_declaration(trimmed)
        && let Some(end) = trimmed.windows(2).position(|w| w == b"?>")
    {
        return trimmed[end + 2..].trim_ascii_start();
    }
    rest
}

/// `<?xml ` (the declaration), not `<?xml-stylesheet` (a processing instruction).
fn is_declaration(text: &[u8]) -> bool {
    text.starts_with(b"<?xml") && text.get(5).is_some_and(|c| c.is_ascii_whitespace())
}

enum Prolog {
    Head(ReaderStream<Body>),
    Rest(ReaderStream<Body>),
    Done,
}

/// A body as a stream of chunks, its prolog stripped.
fn without_prolog(body: Body, xml: bool) -> impl Stream<Item = io::Result<Bytes>> + Send {
    let s = ReaderStream::with_capacity(body, 64 * 1024);
    stream::unfold(Prolog::Head(s), move |state| async move {
        match state {
            Prolog::Head(mut s) => {
                let mut head = BytesMut::new();
                while head.len() < PROLOG_MAX && !prolog_decided(&head, xml) {
                    match s.next().await {
                        Some(Ok(b)) => head.extend_from_slice(&b),
                        Some(Err(e)) => return Some((Err(e), Prolog::Done)),
                        None => break,
                    }
                }
                let kept = Bytes::copy_from_slice(strip_prolog(&head, xml));
                Some((Ok(kept), Prolog::Rest(s)))
            }
            Prolog::Rest(mut s) => s.next().await.map(|r| (r, Prolog::Rest(s))),
            Prolog::Done => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    async fn run(c: &AssembleConfig, bodies: &[&[u8]]) -> String {
        let bodies: Vec<Body> = bodies
            .iter()
            .map(|b| Box::new(b.to_vec().leak() as &[u8]) as Body)
            .collect();
        let mut out = Vec::new();
        c.assemble(bodies).read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    fn xml() -> AssembleConfig {
        AssembleConfig::Xml(XmlAssembleConfig {
            root: "Orders".into(),
            namespace: Some("urn:o".into()),
            batch: 10,
            wait: Duration::from_secs(1),
        })
    }

    #[tokio::test]
    async fn xml_batches_drop_each_declaration() {
        let doc = run(
            &xml(),
            &[
                b"\xEF\xBB\xBF<?xml version=\"1.0\"?>\n<Order id=\"1\"/>",
                b"<?xml-stylesheet href=\"a.xsl\"?><Styled/>",
                b"<Order id=\"2\">x</Order>",
                b"  <?xml version='1.0' encoding='UTF-8' ?>  <Order id=\"3\"/>\n",
            ],
        )
        .await;
        assert_eq!(
            doc,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Orders xmlns=\"urn:o\">\n<Order id=\"1\"/>\n<?xml-stylesheet href=\"a.xsl\"?><Styled/>\n<Order id=\"2\">x</Order>\n<Order id=\"3\"/>\n\n</Orders>\n"
        );
    }

    #[tokio::test]
    async fn json_batches_are_arrays() {
        let c = AssembleConfig::Json(JsonAssembleConfig {
            key: None,
            batch: 10,
            wait: Duration::from_secs(1),
        });
        let doc = run(&c, &[b"{\"id\":1}", b"\xEF\xBB\xBF{\"id\":2}", b"3"]).await;
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v, serde_json::json!([{"id": 1}, {"id": 2}, 3]));
        let c = AssembleConfig::Json(JsonAssembleConfig {
            key: Some("orders \"all\"".into()),
            batch: 10,
            wait: Duration::from_secs(1),
        });
        let doc = run(&c, &[b"1"]).await;
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v, serde_json::json!({"orders \"all\"": [1]}));
    }

    #[tokio::test]
    async fn a_large_body_streams_through_unchanged() {
        // 3 MiB body in 64 KiB reads: only its start is looked at.
        let big: Vec<u8> = (0..3 << 20).map(|i| b'a' + (i % 26) as u8).collect();
        let mut body = b"<Big>".to_vec();
        body.extend_from_slice(&big);
        body.extend_from_slice(b"</Big>");
        let doc = run(&xml(), &[&body, b"<?xml version=\"1.0\"?><Small/>"]).await;
        assert!(doc.contains(&format!("\n<Big>{}</Big>\n<Small/>\n", String::from_utf8(big).unwrap())));
    }

    #[test]
    fn config_is_checked() {
        let mut c = xml();
        assert!(c.validate().is_ok());
        if let AssembleConfig::Xml(x) = &mut c {
            x.root = "1bad".into();
        }
        assert!(c.validate().unwrap_err().contains("not an element name"));
        let c = AssembleConfig::Json(JsonAssembleConfig {
            key: None,
            batch: 0,
            wait: Duration::from_secs(1),
        });
        assert!(c.validate().unwrap_err().contains("batch 0"));
    }
}
