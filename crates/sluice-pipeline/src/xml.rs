//! The XML disassembler: a pull parser (quick-xml) over the stream; each
//! element at the record path is copied out as its own document, with the
//! namespace declarations of its ancestors added to its root element. No
//! tree is built: memory is one record plus the parser's token buffer.

use std::io::{self, BufRead};

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use sluice_model::Value;

use crate::config::XmlDisassembleConfig;
use crate::disassemble::{
    BadRecord, Disassembler, Record, RecordSink, SplitError, TokenLimit, is_token_limit, property_key,
};

/// A promotion: property ← path inside the record.
#[derive(Debug, Clone)]
struct Promotion {
    property: String,
    /// Local names below the record element (empty: the record element itself).
    elements: Vec<Vec<u8>>,
    /// `@name`: an attribute of that element; none: its text.
    attribute: Option<Vec<u8>>,
}

fn parse_record_path(path: &str) -> Result<Vec<Vec<u8>>, String> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("record `{path}` must be an absolute path such as /Orders/Order"))?;
    let parts: Vec<Vec<u8>> = rest.split('/').map(|p| p.as_bytes().to_vec()).collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.contains(&b'@') || p.contains(&b':'))
    {
        return Err(format!(
            "record `{path}`: write each step as an element's local name, without prefixes or attributes (/Orders/Order)"
        ));
    }
    Ok(parts)
}

fn parse_promotion(property: &str, path: &str, record: &[u8]) -> Result<Promotion, String> {
    property_key(property).map_err(|e| format!("promote `{property}`: {e}"))?;
    let bad = |why: &str| format!("promote `{property}` = `{path}`: {why}");
    let mut steps: Vec<&str> = path.split('/').collect();
    let attribute = match steps.last() {
        Some(last) if last.starts_with('@') => {
            let name = &last[1..];
            if name.is_empty() {
                return Err(bad("an attribute step needs a name (`@id`)"));
            }
            steps.pop();
            Some(name.as_bytes().to_vec())
        }
        _ => None,
    };
    let Some((first, below)) = steps.split_first() else {
        return Err(bad("empty path"));
    };
    if first.as_bytes() != record {
        return Err(bad(&format!(
            "paths start with the record element `{}` (e.g. `{}/@id`)",
            String::from_utf8_lossy(record),
            String::from_utf8_lossy(record)
        )));
    }
    if below.iter().any(|s| s.is_empty() || s.contains('@') || s.contains(':')) {
        return Err(bad(
            "each step is an element's local name; only the last may be `@attribute`",
        ));
    }
    Ok(Promotion {
        property: property.to_string(),
        elements: below.iter().map(|s| s.as_bytes().to_vec()).collect(),
        attribute,
    })
}

/// Deepest element nesting accepted (outside and inside records together).
const MAX_DEPTH: usize = 1024;

pub(crate) fn check(c: &XmlDisassembleConfig) -> Result<(), String> {
    XmlDisassembler::new(c).map(|_| ())
}

pub(crate) struct XmlDisassembler {
    record_path: Vec<Vec<u8>>,
    promotions: Vec<Promotion>,
    max_record: u64,
}

impl XmlDisassembler {
    pub(crate) fn new(c: &XmlDisassembleConfig) -> Result<Self, String> {
        let record_path = parse_record_path(&c.record)?;
        let record = record_path.last().cloned().unwrap_or_default();
        let promotions = c
            .promote
            .iter()
            .map(|(k, v)| parse_promotion(k, v, &record))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(XmlDisassembler {
            record_path,
            promotions,
            max_record: c.max_record_size.0,
        })
    }
}

/// Namespace declarations an element makes: (raw `xmlns:p` key, raw value).
type NsDecls = Vec<(Vec<u8>, Vec<u8>)>;

/// An element outside the records: its local name and its declarations.
struct Ancestor {
    local: Vec<u8>,
    ns: NsDecls,
}

/// The record being copied out.
struct Current {
    index: u64,
    offset: u64,
    body: Vec<u8>,
    /// Bytes of the record beyond what `body` keeps (over the limit).
    dropped: u64,
    /// Local names below the record element.
    path: Vec<Vec<u8>>,
    values: Vec<Option<String>>,
    /// Promotions collecting text now: (promotion index, depth of its element).
    collecting: Vec<(usize, usize, String)>,
    error: Option<String>,
}

impl Current {
    fn push(&mut self, bytes: &[&[u8]], max: u64) {
        let n: usize = bytes.iter().map(|b| b.len()).sum();
        if self.dropped > 0 || (self.body.len() + n) as u64 > max {
            if self.dropped == 0 {
                let room = (max as usize).saturating_sub(self.body.len());
                let mut left = room;
                for b in bytes {
                    let take = b.len().min(left);
                    self.body.extend_from_slice(&b[..take]);
                    left -= take;
                }
                self.dropped += (n - room) as u64;
            } else {
                self.dropped += n as u64;
            }
            return;
        }
        for b in bytes {
            self.body.extend_from_slice(b);
        }
    }

    fn decoded_text(
        &mut self,
        text: Result<std::borrow::Cow<'_, str>, quick_xml::encoding::EncodingError>,
        what: &str,
        max: u64,
    ) {
        match text {
            Ok(s) => self.text(&s, max),
            Err(e) => {
                self.error.get_or_insert(format!("{what} is not UTF-8: {e}"));
            }
        }
    }

    /// Add text to the promotions collecting now. A promoted value is part
    /// of the record, so it can never be longer than the record limit.
    fn text(&mut self, text: &str, max: u64) {
        for (_, _, acc) in &mut self.collecting {
            if (acc.len() + text.len()) as u64 <= max {
                acc.push_str(text);
            }
        }
    }
}

fn quote_for(value: &[u8]) -> &'static [u8] {
    if value.contains(&b'"') { b"'" } else { b"\"" }
}

fn is_ns_decl(key: &[u8]) -> bool {
    key == b"xmlns" || key.starts_with(b"xmlns:")
}

fn ns_decls(e: &BytesStart<'_>) -> Result<NsDecls, quick_xml::Error> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a?;
        if is_ns_decl(a.key.as_ref()) {
            out.push((a.key.as_ref().to_vec(), a.value.to_vec()));
        }
    }
    Ok(out)
}

fn to_split_error(e: quick_xml::Error, offset: u64, record: Option<u64>) -> SplitError {
    match e {
        quick_xml::Error::Io(io) => {
            if is_token_limit(&io) {
                return SplitError::Malformed {
                    offset,
                    record,
                    message: io.to_string(),
                };
            }
            match std::sync::Arc::try_unwrap(io) {
                Ok(io) => SplitError::Read(io),
                Err(shared) => SplitError::Read(io::Error::new(shared.kind(), shared.to_string())),
            }
        }
        other => SplitError::Malformed {
            offset,
            record,
            message: format!("malformed XML: {other}"),
        },
    }
}

impl XmlDisassembler {
    /// Whether `ancestors` is the path of the records' parent element.
    fn is_parent(&self, ancestors: &[Ancestor]) -> bool {
        ancestors.len() + 1 == self.record_path.len()
            && ancestors.iter().zip(&self.record_path).all(|(a, p)| a.local == *p)
    }

    /// Whether an element named `local` under `ancestors` is a record.
    fn is_record(&self, ancestors: &[Ancestor], local: &[u8]) -> bool {
        ancestors.len() + 1 == self.record_path.len()
            && ancestors.iter().zip(&self.record_path).all(|(a, p)| a.local == *p)
            && local == &self.record_path[ancestors.len()][..]
    }

    fn start_record(
        &self,
        e: &BytesStart<'_>,
        ancestors: &[Ancestor],
        index: u64,
        offset: u64,
    ) -> Result<Current, quick_xml::Error> {
        let mut cur = Current {
            index,
            offset,
            body: Vec::new(),
            dropped: 0,
            path: Vec::new(),
            values: vec![None; self.promotions.len()],
            collecting: Vec::new(),
            error: None,
        };
        // The record's own tag, plus every namespace declaration in scope
        // that it does not make itself (innermost ancestor first).
        let own = ns_decls(e)?;
        let mut added: NsDecls = Vec::new();
        for a in ancestors.iter().rev() {
            for (k, v) in &a.ns {
                if !own.iter().any(|(ok, _)| ok == k) && !added.iter().any(|(ak, _)| ak == k) {
                    added.push((k.clone(), v.clone()));
                }
            }
        }
        cur.push(&[b"<", e], self.max_record);
        for (k, v) in &added {
            let q = quote_for(v);
            cur.push(&[b" ", k, b"=", q, v, q], self.max_record);
        }
        Ok(cur)
    }

    /// An element starts inside the record (`empty`: `<x/>`).
    fn element(&self, cur: &mut Current, e: &BytesStart<'_>, empty: bool, is_root: bool) {
        if !is_root {
            cur.path.push(e.local_name().as_ref().to_vec());
        }
        let depth = cur.path.len();
        for (i, p) in self.promotions.iter().enumerate() {
            if cur.values[i].is_some() || p.elements != cur.path {
                continue;
            }
            match &p.attribute {
                Some(name) => {
                    for a in e.attributes().flatten() {
                        if a.key.local_name().as_ref() == &name[..] && !is_ns_decl(a.key.as_ref()) {
                            match a.unescape_value() {
                                Ok(v) => cur.values[i] = Some(v.into_owned()),
                                Err(err) => {
                                    cur.error
                                        .get_or_insert(format!("attribute `{}`: {err}", String::from_utf8_lossy(name)));
                                }
                            }
                            break;
                        }
                    }
                }
                None if empty => cur.values[i] = Some(String::new()),
                None => {
                    if !cur.collecting.iter().any(|(j, _, _)| *j == i) {
                        cur.collecting.push((i, depth, String::new()));
                    }
                }
            }
        }
        if empty && !is_root {
            cur.path.pop();
        }
    }

    /// An element ends inside the record.
    fn element_end(&self, cur: &mut Current) {
        let depth = cur.path.len();
        let mut k = 0;
        while k < cur.collecting.len() {
            if cur.collecting[k].1 == depth {
                let (i, _, text) = cur.collecting.swap_remove(k);
                cur.values[i].get_or_insert(text);
            } else {
                k += 1;
            }
        }
        cur.path.pop();
    }

    fn finish(&self, cur: Current, out: &mut dyn RecordSink) -> Result<(), SplitError> {
        if cur.dropped > 0 {
            let size = cur.body.len() as u64 + cur.dropped;
            out.bad_record(BadRecord {
                index: cur.index,
                offset: cur.offset,
                body: cur.body,
                message: format!(
                    "the element is {size} bytes, over max_record_size {} bytes (the suspended copy holds its first {} bytes)",
                    self.max_record, self.max_record
                ),
            })?;
            return Ok(());
        }
        if let Some(message) = cur.error {
            out.bad_record(BadRecord {
                index: cur.index,
                offset: cur.offset,
                body: cur.body,
                message,
            })?;
            return Ok(());
        }
        let properties = self
            .promotions
            .iter()
            .zip(cur.values)
            .filter_map(|(p, v)| v.map(|v| (p.property.clone(), Value::String(v))))
            .collect();
        out.record(Record {
            index: cur.index,
            offset: cur.offset,
            body: cur.body,
            properties,
        })?;
        Ok(())
    }
}

impl Disassembler for XmlDisassembler {
    fn split(&mut self, input: &mut dyn BufRead, out: &mut dyn RecordSink) -> Result<(), SplitError> {
        // A token (tag, text run) may be as large as a record, plus slack.
        let limit = self.max_record.saturating_add(64 * 1024);
        let mut reader = Reader::from_reader(TokenLimit::new(input, limit));
        reader.config_mut().check_end_names = true;
        reader.config_mut().trim_markup_names_in_closing_tags = true;
        let mut buf = Vec::with_capacity(8 * 1024);
        let mut ancestors: Vec<Ancestor> = Vec::new();
        let mut current: Option<Current> = None;
        let mut index = 0u64;
        let mut seen_root = false;
        let mut root_closed = false;
        // Whether the record elements' parent (`/Orders` for `/Orders/Order`;
        // the document itself for a root record) was seen: if not, the
        // record path matches nothing here, and that is an error, not an
        // empty interchange.
        let mut parent_seen = self.record_path.len() == 1;
        let max = self.max_record;
        loop {
            buf.clear();
            reader.get_mut().reset();
            let before = reader.buffer_position();
            let record = current.as_ref().map(|c| c.index);
            let event = match reader.read_event_into(&mut buf) {
                Ok(ev) => ev,
                Err(e) => {
                    let at = reader.error_position().max(before);
                    return Err(to_split_error(e, at, record));
                }
            };
            let bad_event = |e: quick_xml::Error| to_split_error(e, before, record);
            let malformed = |message: String| SplitError::Malformed {
                offset: before,
                record,
                message,
            };
            let depth = ancestors.len() + current.as_ref().map_or(0, |c| c.path.len() + 1);
            match &event {
                Event::Start(_) | Event::Empty(_) if root_closed => {
                    return Err(malformed("a second root element after the document's end".into()));
                }
                Event::Text(t)
                    if ancestors.is_empty() && current.is_none() && !t.iter().all(u8::is_ascii_whitespace) =>
                {
                    return Err(malformed("text outside the root element".into()));
                }
                Event::GeneralRef(_) | Event::CData(_) if ancestors.is_empty() && current.is_none() => {
                    return Err(malformed("content outside the root element".into()));
                }
                Event::Start(_) if depth >= MAX_DEPTH => {
                    return Err(malformed(format!("elements are nested deeper than {MAX_DEPTH}")));
                }
                Event::Start(e) | Event::Empty(e)
                    if ancestors.is_empty()
                        && current.is_none()
                        && e.local_name().as_ref() != &self.record_path[0][..] =>
                {
                    return Err(malformed(format!(
                        "the root element is `{}`, but the record path starts with `{}`",
                        String::from_utf8_lossy(e.local_name().as_ref()),
                        String::from_utf8_lossy(&self.record_path[0])
                    )));
                }
                Event::Decl(d) => {
                    if seen_root {
                        return Err(malformed("an XML declaration after the root element".into()));
                    }
                    if let Some(Ok(enc)) = d.encoding() {
                        let enc = String::from_utf8_lossy(&enc).to_ascii_lowercase();
                        if !matches!(enc.as_str(), "utf-8" | "utf8" | "us-ascii" | "ascii") {
                            return Err(malformed(format!(
                                "the document is encoded in `{enc}`; the XML disassembler reads UTF-8 only"
                            )));
                        }
                    }
                }
                Event::DocType(t) if t.windows(8).any(|w| w == b"<!ENTITY") => {
                    return Err(malformed(
                        "DOCTYPE entity declarations are not supported (the entities would not survive splitting)"
                            .into(),
                    ));
                }
                _ => {}
            }
            match (&mut current, event) {
                (None, Event::Start(e)) => {
                    seen_root = true;
                    let local = e.local_name().as_ref().to_vec();
                    if self.is_record(&ancestors, &local) {
                        index += 1;
                        let mut cur = self.start_record(&e, &ancestors, index, before).map_err(bad_event)?;
                        cur.push(&[b">"], max);
                        self.element(&mut cur, &e, false, true);
                        current = Some(cur);
                    } else {
                        let ns = ns_decls(&e).map_err(bad_event)?;
                        ancestors.push(Ancestor { local, ns });
                        parent_seen |= self.is_parent(&ancestors);
                    }
                }
                (None, Event::Empty(e)) => {
                    seen_root = true;
                    if self.is_record(&ancestors, e.local_name().as_ref()) {
                        index += 1;
                        let mut cur = self.start_record(&e, &ancestors, index, before).map_err(bad_event)?;
                        cur.push(&[b"/>"], max);
                        self.element(&mut cur, &e, true, true);
                        self.finish(cur, out)?;
                    } else {
                        // `<Orders/>`: the parent itself, empty.
                        ancestors.push(Ancestor {
                            local: e.local_name().as_ref().to_vec(),
                            ns: Vec::new(),
                        });
                        parent_seen |= self.is_parent(&ancestors);
                        ancestors.pop();
                    }
                    root_closed = ancestors.is_empty();
                }
                (None, Event::End(_)) => {
                    ancestors.pop();
                    root_closed = ancestors.is_empty();
                }
                (None, Event::Eof) => {
                    if !seen_root {
                        return Err(malformed("the document has no root element".into()));
                    }
                    if let Some(open) = ancestors.last() {
                        return Err(malformed(format!(
                            "the document ends inside element `{}` (truncated?)",
                            String::from_utf8_lossy(&open.local)
                        )));
                    }
                    if !parent_seen {
                        let parent: Vec<String> = self.record_path[..self.record_path.len() - 1]
                            .iter()
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .collect();
                        return Err(malformed(format!(
                            "no element /{} in the document: the record path matches nothing here",
                            parent.join("/")
                        )));
                    }
                    return Ok(());
                }
                // Text, comments and the like between records are not part of any record.
                (None, _) => {}
                (Some(cur), Event::Start(e)) => {
                    cur.push(&[b"<", &e, b">"], max);
                    self.element(cur, &e, false, false);
                }
                (Some(cur), Event::Empty(e)) => {
                    cur.push(&[b"<", &e, b"/>"], max);
                    self.element(cur, &e, true, false);
                }
                (Some(cur), Event::End(e)) => {
                    cur.push(&[b"</", &e, b">"], max);
                    if cur.path.is_empty() {
                        self.element_end(cur);
                        if let Some(done) = current.take() {
                            self.finish(done, out)?;
                        }
                        root_closed = ancestors.is_empty();
                    } else {
                        self.element_end(cur);
                    }
                }
                (Some(cur), Event::Text(t)) => {
                    cur.push(&[&t], max);
                    if !cur.collecting.is_empty() {
                        cur.decoded_text(t.xml10_content(), "text", max);
                    }
                }
                (Some(cur), Event::CData(t)) => {
                    cur.push(&[b"<![CDATA[", &t, b"]]>"], max);
                    if !cur.collecting.is_empty() {
                        cur.decoded_text(t.xml10_content(), "CDATA", max);
                    }
                }
                (Some(cur), Event::GeneralRef(r)) => {
                    cur.push(&[b"&", &r, b";"], max);
                    if !cur.collecting.is_empty() {
                        let resolved = match r.resolve_char_ref() {
                            Ok(Some(c)) => Some(c.to_string()),
                            Ok(None) => r.decode().ok().and_then(|name| {
                                quick_xml::escape::resolve_predefined_entity(&name).map(str::to_string)
                            }),
                            Err(_) => None,
                        };
                        match resolved {
                            Some(s) => cur.text(&s, max),
                            None => {
                                cur.error.get_or_insert(format!(
                                    "unknown entity reference `&{};`",
                                    String::from_utf8_lossy(&r)
                                ));
                            }
                        }
                    }
                }
                (Some(cur), Event::Comment(t)) => cur.push(&[b"<!--", &t, b"-->"], max),
                (Some(cur), Event::PI(t)) => cur.push(&[b"<?", &t, b"?>"], max),
                (Some(_), Event::Decl(_) | Event::DocType(_)) => {
                    return Err(SplitError::Malformed {
                        offset: before,
                        record,
                        message: "an XML declaration or DOCTYPE inside an element".into(),
                    });
                }
                (Some(_), Event::Eof) => {
                    return Err(SplitError::Malformed {
                        offset: before,
                        record,
                        message: "the document ends inside a record (truncated?)".into(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ByteSize;
    use crate::disassemble::testing::split_all;

    fn config(record: &str, promote: &[(&str, &str)]) -> XmlDisassembleConfig {
        XmlDisassembleConfig {
            record: record.into(),
            max_record_size: ByteSize(1 << 20),
            recoverable: false,
            promote: promote
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    const ORDERS: &str = r#"<?xml version="1.0"?>
<o:Orders xmlns:o="urn:orders" xmlns="urn:default" batch="7">
  <!-- two orders -->
  <o:Order id="A1"><Customer>ACME &amp; Sons</Customer><Lines><Line sku="x"/></Lines></o:Order>
  <o:Order id='B"2' xmlns="urn:own"><Customer><![CDATA[Zed <Ltd>]]></Customer><Note>caf&#233;</Note></o:Order>
  <o:Other>not a record</o:Other>
  <o:Order id="C3"/>
</o:Orders>
"#;

    #[test]
    fn splits_records_keeps_namespaces_and_promotes() {
        let mut d = XmlDisassembler::new(&config(
            "/Orders/Order",
            &[
                ("order.id", "Order/@id"),
                ("order.customer", "Order/Customer"),
                ("order.sku", "Order/Lines/Line/@sku"),
                ("order.note", "Order/Note"),
            ],
        ))
        .unwrap();
        let (out, res) = split_all(&mut d, ORDERS.as_bytes());
        res.unwrap();
        assert!(out.bad.is_empty(), "{:?}", out.bad);
        assert_eq!(out.records.len(), 3);
        let bodies: Vec<String> = out
            .records
            .iter()
            .map(|r| String::from_utf8(r.body.clone()).unwrap())
            .collect();
        assert_eq!(
            bodies[0],
            r#"<o:Order id="A1" xmlns:o="urn:orders" xmlns="urn:default"><Customer>ACME &amp; Sons</Customer><Lines><Line sku="x"/></Lines></o:Order>"#
        );
        // Its own default namespace wins over the ancestor's.
        assert_eq!(
            bodies[1],
            r#"<o:Order id='B"2' xmlns="urn:own" xmlns:o="urn:orders"><Customer><![CDATA[Zed <Ltd>]]></Customer><Note>caf&#233;</Note></o:Order>"#
        );
        assert_eq!(
            bodies[2],
            r#"<o:Order id="C3" xmlns:o="urn:orders" xmlns="urn:default"/>"#
        );
        let props = |i: usize| -> Vec<(String, String)> {
            out.records[i]
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        };
        assert_eq!(
            props(0),
            vec![
                ("order.customer".into(), "ACME & Sons".into()),
                ("order.id".into(), "A1".into()),
                ("order.sku".into(), "x".into()),
            ]
        );
        assert_eq!(
            props(1),
            vec![
                ("order.customer".into(), "Zed <Ltd>".into()),
                ("order.id".into(), "B\"2".into()),
                ("order.note".into(), "café".into()),
            ]
        );
        assert_eq!(props(2), vec![("order.id".into(), "C3".into())]);
        assert_eq!(out.records.iter().map(|r| r.index).collect::<Vec<_>>(), vec![1, 2, 3]);
        // Offsets point at each record's `<`.
        for r in &out.records {
            assert_eq!(
                &ORDERS.as_bytes()[r.offset as usize..r.offset as usize + 8],
                b"<o:Order"
            );
        }
    }

    #[test]
    fn an_oversized_record_is_a_bad_record_and_the_rest_goes_on() {
        let mut c = config("/a/r", &[]);
        c.max_record_size = ByteSize(64);
        let big = "x".repeat(500);
        let doc = format!("<a><r>1</r><r>{big}</r><r>3</r></a>");
        let mut d = XmlDisassembler::new(&c).unwrap();
        let (out, res) = split_all(&mut d, doc.as_bytes());
        res.unwrap();
        assert_eq!(out.records.len(), 2);
        assert_eq!(out.bad.len(), 1);
        assert_eq!(out.bad[0].index, 2);
        assert_eq!(out.bad[0].body.len(), 64);
        assert!(
            out.bad[0].message.contains("over max_record_size 64"),
            "{}",
            out.bad[0].message
        );
        assert_eq!(out.records[1].body, b"<r>3</r>");
    }

    #[test]
    fn a_huge_token_outside_records_is_refused_not_buffered() {
        let mut c = config("/a/r", &[]);
        c.max_record_size = ByteSize(16);
        let doc = format!("<a>{}<r>1</r></a>", "y".repeat(200_000));
        let mut d = XmlDisassembler::new(&c).unwrap();
        let (_, res) = split_all(&mut d, doc.as_bytes());
        match res {
            Err(SplitError::Malformed { message, .. }) => assert!(message.contains("larger than"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_and_truncated_documents_say_where() {
        let mut d = XmlDisassembler::new(&config("/a/r", &[])).unwrap();
        let (out, res) = split_all(&mut d, b"<a><r>1</r><r><x>2</y></r></a>");
        assert_eq!(out.records.len(), 1);
        match res {
            Err(SplitError::Malformed {
                record,
                offset,
                message,
            }) => {
                assert_eq!(record, Some(2));
                assert!(offset >= 14, "{offset}");
                assert!(message.contains("malformed XML"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let (_, res) = split_all(&mut d, b"<a><r>1</r><r>2");
        match res {
            Err(SplitError::Malformed { record, .. }) => assert_eq!(record, Some(2)),
            other => panic!("{other:?}"),
        }
        let (_, res) = split_all(&mut d, b"");
        assert!(matches!(res, Err(SplitError::Malformed { .. })), "{res:?}");
    }

    #[test]
    fn a_document_that_does_not_close_or_goes_on_after_its_end_is_malformed() {
        let mut d = XmlDisassembler::new(&config("/a/r", &[])).unwrap();
        for (doc, what) in [
            (&b"<a><r>1</r><r>2</r>"[..], "ends inside element `a`"),
            (b"<a><r>1</r></a><b/>", "a second root element"),
            (b"<a><r>1</r></a>junk", "text outside the root element"),
            (b"junk<a><r>1</r></a>", "text outside the root element"),
        ] {
            let (_, res) = split_all(&mut d, doc);
            match res {
                Err(SplitError::Malformed { message, .. }) => assert!(message.contains(what), "{message}"),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(doc)),
            }
        }
        let (out, res) = split_all(&mut d, b"<?xml version=\"1.0\"?>\n<a><r>1</r></a>\n<!-- end -->\n");
        res.unwrap();
        assert_eq!(out.records.len(), 1);
        // A record path of the root itself.
        let mut root = XmlDisassembler::new(&config("/a", &[])).unwrap();
        let (out, res) = split_all(&mut root, b"<a>1</a>");
        res.unwrap();
        assert_eq!(out.records.len(), 1);
        let (_, res) = split_all(&mut root, b"<a>1</a><a>2</a>");
        assert!(matches!(res, Err(SplitError::Malformed { .. })), "{res:?}");
    }

    #[test]
    fn a_document_the_record_path_does_not_fit_is_malformed_not_empty() {
        let mut d = XmlDisassembler::new(&config("/Orders/Batch/Order", &[])).unwrap();
        for (doc, what) in [
            (&b"<Foo><Order id='1'/></Foo>"[..], "the root element is `Foo`"),
            (b"<Orders><Order id='1'/></Orders>", "no element /Orders/Batch"),
            (
                b"<?xml version='1.0' encoding='ISO-8859-1'?><Orders/>",
                "encoded in `iso-8859-1`",
            ),
            (b"<!DOCTYPE Orders [<!ENTITY co 'ACME'>]><Orders/>", "DOCTYPE entity"),
            (b"<Orders><Batch/></Orders>&amp;", "content outside the root"),
            (b"<Orders><Batch/></Orders><![CDATA[x]]>", "content outside the root"),
        ] {
            let (_, res) = split_all(&mut d, doc);
            match res {
                Err(SplitError::Malformed { message, .. }) => assert!(message.contains(what), "{message}"),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(doc)),
            }
        }
        // The parent present but empty: an interchange of no records.
        for doc in [&b"<Orders><Batch/></Orders>"[..], b"<Orders><Batch></Batch></Orders>"] {
            let (out, res) = split_all(&mut d, doc);
            res.unwrap();
            assert!(out.records.is_empty());
        }
        let mut d = XmlDisassembler::new(&config("/Orders/Order", &[])).unwrap();
        let (out, res) = split_all(&mut d, b"<?xml version='1.0' encoding='utf-8'?><Orders/>");
        res.unwrap();
        assert!(out.records.is_empty());
    }

    #[test]
    fn deep_nesting_and_long_promoted_text_are_bounded() {
        let mut d = XmlDisassembler::new(&config("/a/r", &[])).unwrap();
        let deep = "<x>".repeat(5000);
        let (_, res) = split_all(&mut d, format!("<a>{deep}").as_bytes());
        match res {
            Err(SplitError::Malformed { message, .. }) => {
                assert!(message.contains("nested deeper than 1024"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let mut c = config("/a/r", &[("r.v", "r/v")]);
        c.max_record_size = ByteSize(100);
        let mut d = XmlDisassembler::new(&c).unwrap();
        let doc = format!("<a><r><v>{}</v></r></a>", "&amp;".repeat(10_000));
        let (out, res) = split_all(&mut d, doc.as_bytes());
        res.unwrap();
        assert_eq!(out.bad.len(), 1, "the record is over the limit");
        assert!(out.bad[0].body.len() <= 100);
    }

    #[test]
    fn config_errors_are_precise() {
        let e = XmlDisassembler::new(&config("Orders/Order", &[])).err().unwrap();
        assert!(e.contains("absolute path"), "{e}");
        let e = XmlDisassembler::new(&config("/Orders/Order", &[("order.id", "Orders/@id")]))
            .err()
            .unwrap();
        assert!(e.contains("start with the record element `Order`"), "{e}");
        let e = XmlDisassembler::new(&config("/Orders/Order", &[("9x", "Order/@id")]))
            .err()
            .unwrap();
        assert!(e.contains("not a property name"), "{e}");
    }
}
