//! The JSON disassembler: a byte scanner over the stream finds the array at
//! the configured JSON pointer and copies out each of its elements, exactly
//! as it appears in the input (the whitespace around it left out), as its own
//! document. No tree is built for the document: memory is one record (at most
//! `max_record_size` bytes) plus the reader's buffer.
//!
//! Outside the records the scanner is a strict, streaming JSON checker
//! (strings, escapes, numbers, literals, nesting up to 128 levels), so a
//! malformed document is refused with the byte offset where it breaks. Inside
//! a record it only delimits: it follows strings, escapes and brackets to
//! find where the element ends, and then `serde_json` checks the record on
//! its own (bounded) bytes. A record that can be delimited but is not valid
//! JSON, or is over `max_record_size`, is a bad record and the split goes on;
//! one that cannot be delimited (a bracket closing the wrong kind, the
//! document ending inside it) makes the document malformed.
//!
//! Promotion evaluates JSON pointers on the parsed record: a string is
//! promoted as a string, an integer as an int (an integer above `i64::MAX`,
//! up to `u64::MAX`, as a string of its digits, so it is not rounded), any
//! other number as a float, `true`/`false` as a bool. `null`, an object, an
//! array, or a pointer that reaches nothing promote nothing: the property is
//! absent (`exists` is false).

use sluice_model::Value;

use crate::bounded::{Bytes, Capped, oversized};
use crate::config::JsonDisassembleConfig;
use crate::disassemble::{BadRecord, Disassembler, Record, RecordSink, SplitError, property_key};

/// How deep objects and arrays may nest outside the records (serde_json's
/// limit, which the records get).
const MAX_DEPTH: usize = 128;
/// How deep a record's brackets are followed to delimit it; a record deeper
/// than serde_json's 128 is a bad record, one deeper than this is malformed.
const MAX_RECORD_DEPTH: usize = 4096;
/// The longest number or literal outside the records.
const MAX_LITERAL: u64 = 4096;

/// Parse a JSON pointer (RFC 6901) into its unescaped reference tokens.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("`{pointer}` is not a JSON pointer (it is \"\" or starts with `/`, e.g. /orders)"))?;
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => return Err(format!("`{pointer}`: `~` is written `~0` and `/` is written `~1`")),
                }
            }
            Ok(out)
        })
        .collect()
}

/// Where the first tokens of a pointer lead, for messages.
fn place(tokens: &[String]) -> String {
    if tokens.is_empty() {
        return "the top-level value".into();
    }
    let pointer: String = tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect();
    format!("`{pointer}`")
}

pub(crate) fn check(c: &JsonDisassembleConfig) -> Result<(), String> {
    JsonDisassembler::new(c).map(|_| ())
}

pub(crate) struct JsonDisassembler {
    array: Vec<String>,
    /// (property, pointer inside the record).
    promotions: Vec<(String, String)>,
    max_record: u64,
}

impl JsonDisassembler {
    pub(crate) fn new(c: &JsonDisassembleConfig) -> Result<Self, String> {
        let array = parse_pointer(&c.array).map_err(|e| format!("array {e}"))?;
        let promotions = c
            .promote
            .iter()
            .map(|(property, pointer)| {
                property_key(property).map_err(|e| format!("promote `{property}`: {e}"))?;
                parse_pointer(pointer).map_err(|e| format!("promote `{property}` = {e}"))?;
                Ok((property.clone(), pointer.clone()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(JsonDisassembler {
            array,
            promotions,
            max_record: c.max_record_size.0,
        })
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Bytes that end a number or literal.
fn ends_scalar(b: u8) -> bool {
    is_ws(b) || matches!(b, b',' | b']' | b'}' | b'[' | b'{' | b'"' | b':')
}

fn is_number(s: &[u8]) -> bool {
    let digits = |s: &[u8], i: &mut usize| {
        let start = *i;
        while *i < s.len() && s[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    let mut i = 0;
    if s.first() == Some(&b'-') {
        i += 1;
    }
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(s, &mut i);
        }
        _ => return false,
    }
    if s.get(i) == Some(&b'.') {
        i += 1;
        if !digits(s, &mut i) {
            return false;
        }
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(s, &mut i) {
            return false;
        }
    }
    i == s.len()
}

/// What a JSON value starting with `b` is, for messages.
fn kind(b: u8) -> &'static str {
    match b {
        b'{' => "an object",
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        b'-' | b'0'..=b'9' => "a number",
        _ => "not a JSON value",
    }
}

/// Map a promoted JSON value to a property value (see the module docs).
fn property_value(v: &serde_json::Value) -> Option<Value> {
    match v {
        serde_json::Value::String(s) => Some(Value::String(s.clone())),
        serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
        serde_json::Value::Number(n) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::Int(i),
            (None, Some(u), _) => Value::String(u.to_string()),
            (None, None, Some(f)) => Value::Float(f),
            (None, None, None) => Value::String(n.to_string()),
        }),
        serde_json::Value::Null | serde_json::Value::Array(_) | serde_json::Value::Object(_) => None,
    }
}

/// The streaming scanner over one document.
struct Scan<'a> {
    bytes: Bytes<'a>,
    /// The record being read, for errors.
    record: Option<u64>,
}

impl Scan<'_> {
    fn malformed_at(&self, offset: u64, message: impl Into<String>) -> SplitError {
        SplitError::Malformed {
            offset,
            record: self.record,
            message: message.into(),
        }
    }

    fn malformed(&self, message: impl Into<String>) -> SplitError {
        self.malformed_at(self.bytes.pos, message)
    }

    fn skip_ws(&mut self) -> Result<Option<u8>, SplitError> {
        self.bytes.skip_while(is_ws)
    }

    /// The next byte after whitespace, which must be there.
    fn expect_more(&mut self, what: &str) -> Result<u8, SplitError> {
        self.skip_ws()?
            .ok_or_else(|| self.malformed(format!("the document ends where {what} was expected (truncated?)")))
    }

    fn unexpected(&self, b: u8, what: &str) -> SplitError {
        self.malformed(format!("expected {what}, found `{}`", b.escape_ascii()))
    }

    /// Read a string (at its opening quote), checking it; with `target`,
    /// say whether its decoded value equals it. Nothing is buffered.
    fn string(&mut self, target: Option<&[u8]>) -> Result<bool, SplitError> {
        self.bytes.consume(1);
        // The decoded value so far equals the start of `target`, up to `at`.
        let mut matched = target.is_some();
        let mut at = 0usize;
        let mut compare = |piece: &[u8]| {
            if let Some(t) = target
                && matched
            {
                matched = t[at..].starts_with(piece);
                at += piece.len();
            }
            matched && target.is_some_and(|t| at == t.len())
        };
        loop {
            let buf = self.bytes.fill()?;
            if buf.is_empty() {
                return Err(self.malformed("the document ends inside a string (truncated?)"));
            }
            let n = buf
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(buf.len());
            compare(&buf[..n]);
            self.bytes.consume(n);
            match self.bytes.peek()? {
                Some(b'"') => {
                    self.bytes.consume(1);
                    return Ok(compare(b""));
                }
                Some(b'\\') => {
                    self.bytes.consume(1);
                    let c = self.escape()?;
                    compare(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
                Some(b) if b < 0x20 => return Err(self.malformed("a control character inside a string")),
                _ => {}
            }
        }
    }

    /// The character an escape stands for (after its backslash).
    fn escape(&mut self) -> Result<char, SplitError> {
        let at = self.bytes.pos - 1;
        let c = match self.bytes.next()? {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let high = self.hex4()?;
                let code = if (0xD800..0xDC00).contains(&high) {
                    if self.bytes.next()? != Some(b'\\') || self.bytes.next()? != Some(b'u') {
                        return Err(self.malformed_at(at, "a lone surrogate in a \\u escape"));
                    }
                    let low = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(self.malformed_at(at, "a lone surrogate in a \\u escape"));
                    }
                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    high
                };
                return char::from_u32(code).ok_or_else(|| self.malformed_at(at, "a lone surrogate in a \\u escape"));
            }
            _ => return Err(self.malformed_at(at, "an invalid escape in a string")),
        };
        Ok(c)
    }

    fn hex4(&mut self) -> Result<u32, SplitError> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self
                .bytes
                .next()?
                .and_then(|b| (b as char).to_digit(16))
                .ok_or_else(|| self.malformed("a \\u escape needs four hex digits"))?;
            v = v * 16 + d;
        }
        Ok(v)
    }

    /// A number or `true`/`false`/`null`, checked.
    fn literal(&mut self) -> Result<(), SplitError> {
        let start = self.bytes.pos;
        let mut run = Capped::default();
        self.bytes.take_until(&mut run, MAX_LITERAL, false, ends_scalar)?;
        let ok = match &run.bytes[..] {
            b"true" | b"false" | b"null" => true,
            other => run.total <= MAX_LITERAL && is_number(other),
        };
        if ok {
            return Ok(());
        }
        Err(match run.bytes.first() {
            None => self.malformed_at(start, "expected a value"),
            Some(_) if run.total > MAX_LITERAL => {
                self.malformed_at(start, format!("a number or literal longer than {MAX_LITERAL} bytes"))
            }
            Some(_) => self.malformed_at(
                start,
                format!("`{}` is not a JSON value", String::from_utf8_lossy(&run.bytes)),
            ),
        })
    }

    /// Check and skip one value (whitespace before it included).
    fn value(&mut self, depth: usize) -> Result<(), SplitError> {
        match self.expect_more("a value")? {
            b'"' => self.string(None).map(|_| ()),
            open @ (b'{' | b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(self.malformed(format!("objects and arrays nest deeper than {MAX_DEPTH}")));
                }
                self.bytes.consume(1);
                let close = if open == b'{' { b'}' } else { b']' };
                if self.expect_more("a value")? == close {
                    self.bytes.consume(1);
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        self.member_name(None)?;
                    }
                    self.value(depth + 1)?;
                    if self.after_item(close)? {
                        return Ok(());
                    }
                }
            }
            _ => self.literal(),
        }
    }

    /// Read `"name":` (whitespace first); say whether the name is `target`.
    fn member_name(&mut self, target: Option<&[u8]>) -> Result<bool, SplitError> {
        match self.expect_more("a member name")? {
            b'"' => {}
            b => return Err(self.unexpected(b, "a member name in quotes")),
        }
        let matched = self.string(target)?;
        match self.expect_more("`:`")? {
            b':' => self.bytes.consume(1),
            b => return Err(self.unexpected(b, "`:` after a member name")),
        }
        Ok(matched)
    }

    /// After an item of an object or array: `,` (false: another follows) or
    /// its closing bracket (true).
    fn after_item(&mut self, close: u8) -> Result<bool, SplitError> {
        let what = if close == b'}' { "`,` or `}`" } else { "`,` or `]`" };
        match self.expect_more(what)? {
            b',' => {
                self.bytes.consume(1);
                match self.expect_more("a value")? {
                    b']' | b'}' => Err(self.malformed("a trailing comma")),
                    _ => Ok(false),
                }
            }
            b if b == close => {
                self.bytes.consume(1);
                Ok(true)
            }
            b => Err(self.unexpected(b, what)),
        }
    }
}

impl JsonDisassembler {
    /// Walk the pointer from the value starting here; split the array it reaches.
    fn find(&self, s: &mut Scan<'_>, step: usize, out: &mut dyn RecordSink) -> Result<(), SplitError> {
        let here = place(&self.array[..step]);
        let first = s.expect_more("a value")?;
        let Some(token) = self.array.get(step) else {
            return match first {
                b'[' => self.split_array(s, out),
                b => Err(s.malformed(format!("{here} is {}, not an array", kind(b)))),
            };
        };
        match first {
            b'{' => {
                s.bytes.consume(1);
                let mut found = false;
                if s.expect_more("a member name")? == b'}' {
                    s.bytes.consume(1);
                } else {
                    loop {
                        if s.member_name(Some(token.as_bytes()))? && !found {
                            found = true;
                            self.find(s, step + 1, out)?;
                        } else {
                            s.value(step + 1)?;
                        }
                        if s.after_item(b'}')? {
                            break;
                        }
                    }
                }
                if found {
                    Ok(())
                } else {
                    Err(s.malformed_at(
                        s.bytes.pos - 1,
                        format!("{here} is an object without a member `{token}`"),
                    ))
                }
            }
            b'[' => {
                let Ok(wanted) = token.parse::<u64>() else {
                    return Err(s.malformed(format!("{here} is an array; `{token}` is not an index in it")));
                };
                s.bytes.consume(1);
                let mut i = 0u64;
                if s.expect_more("a value")? == b']' {
                    s.bytes.consume(1);
                } else {
                    loop {
                        if i == wanted {
                            self.find(s, step + 1, out)?;
                        } else {
                            s.value(step + 1)?;
                        }
                        i += 1;
                        if s.after_item(b']')? {
                            break;
                        }
                    }
                }
                if wanted < i {
                    Ok(())
                } else {
                    Err(s.malformed_at(
                        s.bytes.pos - 1,
                        format!("{here} is an array of {i} elements, without index {wanted}"),
                    ))
                }
            }
            b => Err(s.malformed(format!("{here} is {}, without a member `{token}`", kind(b)))),
        }
    }

    /// At the `[` of the array to split.
    fn split_array(&self, s: &mut Scan<'_>, out: &mut dyn RecordSink) -> Result<(), SplitError> {
        s.bytes.consume(1);
        if s.expect_more("a record or `]`")? == b']' {
            s.bytes.consume(1);
            return Ok(());
        }
        let mut index = 0;
        loop {
            index += 1;
            s.record = Some(index);
            self.record(s, index, out)?;
            s.record = None;
            if s.after_item(b']')? {
                return Ok(());
            }
        }
    }

    /// Delimit one element (at its first byte), then check and hand it on.
    fn record(&self, s: &mut Scan<'_>, index: u64, out: &mut dyn RecordSink) -> Result<(), SplitError> {
        let offset = s.bytes.pos;
        let mut body = Capped::default();
        let max = self.max_record;
        match s.bytes.peek()? {
            Some(b'{' | b'[' | b'"') => self.delimit(s, &mut body)?,
            _ => {
                s.bytes
                    .take_until(&mut body, max.saturating_add(1), true, ends_scalar)?;
                if body.total == 0 {
                    return Err(s.malformed("expected a value"));
                }
            }
        }
        if body.total > max {
            return Ok(oversized(out, index, offset, body.bytes, body.total, max)?);
        }
        let parsed = if self.promotions.is_empty() {
            serde_json::from_slice::<serde::de::IgnoredAny>(&body.bytes).map(|_| None)
        } else {
            serde_json::from_slice::<serde_json::Value>(&body.bytes).map(Some)
        };
        match parsed {
            Ok(value) => {
                let properties = match value {
                    Some(v) => self
                        .promotions
                        .iter()
                        .filter_map(|(p, ptr)| v.pointer(ptr).and_then(property_value).map(|v| (p.clone(), v)))
                        .collect(),
                    None => Vec::new(),
                };
                out.record(Record {
                    index,
                    offset,
                    body: body.bytes,
                    properties,
                })?;
            }
            Err(e) => out.bad_record(BadRecord {
                index,
                offset,
                body: body.bytes,
                message: format!("malformed JSON: {e}"),
            })?,
        }
        Ok(())
    }

    /// Copy an object, array or string out, following strings, escapes and
    /// brackets to find its end; keep at most max_record_size + 1 bytes.
    fn delimit(&self, s: &mut Scan<'_>, body: &mut Capped) -> Result<(), SplitError> {
        let keep = self.max_record.saturating_add(1);
        let mut stack: Vec<u8> = Vec::new();
        let mut in_string = false;
        let mut escape = false;
        loop {
            let start = s.bytes.pos;
            let buf = s.bytes.fill()?;
            if buf.is_empty() {
                return Err(s.malformed("the document ends inside the record (truncated?)"));
            }
            let mut done = false;
            let mut wrong = None;
            let mut used = 0;
            for &b in buf {
                used += 1;
                if in_string {
                    if escape {
                        escape = false;
                    } else if b == b'\\' {
                        escape = true;
                    } else if b == b'"' {
                        in_string = false;
                        done = stack.is_empty();
                    }
                } else {
                    match b {
                        b'"' => in_string = true,
                        b'{' => stack.push(b'}'),
                        b'[' => stack.push(b']'),
                        b'}' | b']' => {
                            if stack.pop() != Some(b) {
                                wrong = Some(b);
                            }
                            done = stack.is_empty();
                        }
                        _ => {}
                    }
                }
                if done || wrong.is_some() || stack.len() > MAX_RECORD_DEPTH {
                    break;
                }
            }
            body.push(&buf[..used], keep);
            s.bytes.consume(used);
            if let Some(b) = wrong {
                return Err(s.malformed_at(
                    start + used as u64 - 1,
                    format!("`{}` closes nothing open in the record", b as char),
                ));
            }
            if stack.len() > MAX_RECORD_DEPTH {
                return Err(s.malformed(format!("the record nests deeper than {MAX_RECORD_DEPTH}")));
            }
            if done {
                return Ok(());
            }
        }
    }
}

impl Disassembler for JsonDisassembler {
    fn split(&mut self, input: &mut dyn std::io::BufRead, out: &mut dyn RecordSink) -> Result<(), SplitError> {
        let mut s = Scan {
            bytes: Bytes::new(input),
            record: None,
        };
        s.bytes.skip_bom()?;
        if s.skip_ws()?.is_none() {
            return Err(s.malformed("the document is empty"));
        }
        self.find(&mut s, 0, out)?;
        match s.skip_ws()? {
            None => Ok(()),
            Some(_) => Err(s.malformed("data after the end of the JSON document")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ByteSize;
    use crate::bounded::testing::{Generated, one_huge_bad_record, split_generated};
    use crate::disassemble::testing::split_all;

    fn config(array: &str, promote: &[(&str, &str)]) -> JsonDisassembleConfig {
        let mut c: JsonDisassembleConfig = toml::from_str(&format!("array = {array:?}")).unwrap();
        assert_eq!(c.max_record_size, ByteSize(1 << 20));
        c.promote = promote.iter().map(|&(k, v)| (k.into(), v.into())).collect();
        c
    }

    fn split(
        array: &str,
        promote: &[(&str, &str)],
        doc: &str,
    ) -> (Vec<Record>, Vec<BadRecord>, Result<(), SplitError>) {
        let mut d = JsonDisassembler::new(&config(array, promote)).unwrap();
        let (out, res) = split_all(&mut d, doc.as_bytes());
        (out.records, out.bad, res)
    }

    fn bodies(records: &[Record]) -> Vec<&str> {
        records.iter().map(|r| std::str::from_utf8(&r.body).unwrap()).collect()
    }

    /// The error's offset, record and message, or a panic.
    fn malformed(res: Result<(), SplitError>) -> (u64, Option<u64>, String) {
        match res {
            Err(SplitError::Malformed {
                offset,
                record,
                message,
            }) => (offset, record, message),
            other => panic!("expected a malformed document, got {other:?}"),
        }
    }

    const ORDERS: &str = "\u{feff}[ {\"id\": 1, \"customer\": {\"name\": \"ACME \\\"x\\\" \\u00e9 \\ud83d\\ude00\"}, \"tags\": [\"]\", \"}\"]} ,\n\
        {\"id\": \"B2\", \"total\": 1.5, \"big\": 18446744073709551615, \"ok\": true, \"customer\": null, \"o\": {}},\n\
        \"café\", -42 ,[1,[2]],false]  \n";

    #[test]
    fn splits_a_top_level_array_exactly_and_promotes() {
        let promote = [
            ("order.id", "/id"),
            ("order.customer", "/customer/name"),
            ("order.total", "/total"),
            ("order.big", "/big"),
            ("order.ok", "/ok"),
            ("order.tags", "/tags"),
            ("order.o", "/o"),
            ("order.self", ""),
        ];
        let (records, bad, res) = split("", &promote, ORDERS);
        res.unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(
            bodies(&records),
            vec![
                r#"{"id": 1, "customer": {"name": "ACME \"x\" \u00e9 \ud83d\ude00"}, "tags": ["]", "}"]}"#,
                r#"{"id": "B2", "total": 1.5, "big": 18446744073709551615, "ok": true, "customer": null, "o": {}}"#,
                "\"café\"",
                "-42",
                "[1,[2]]",
                "false",
            ]
        );
        assert_eq!(
            records.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5, 6]
        );
        for r in &records {
            let at = r.offset as usize;
            assert_eq!(&ORDERS.as_bytes()[at..at + r.body.len()], &r.body[..]);
        }
        assert_eq!(
            records[0].properties,
            vec![
                ("order.customer".to_string(), Value::String("ACME \"x\" é 😀".into())),
                ("order.id".to_string(), Value::Int(1)),
            ]
        );
        // u64 beyond i64 is a string; null, objects and arrays promote nothing.
        assert_eq!(
            records[1].properties,
            vec![
                ("order.big".to_string(), Value::String("18446744073709551615".into())),
                ("order.id".to_string(), Value::String("B2".into())),
                ("order.ok".to_string(), Value::Bool(true)),
                ("order.total".to_string(), Value::Float(1.5)),
            ]
        );
        assert_eq!(
            records[2].properties,
            vec![("order.self".to_string(), Value::String("café".into()))]
        );
        assert_eq!(records[3].properties, vec![("order.self".to_string(), Value::Int(-42))]);
        assert!(records[4].properties.is_empty());
    }

    #[test]
    fn finds_nested_arrays_and_skips_everything_else() {
        let doc = r#"{"meta": {"a": [1, {"b": "x]"}], "s": "\"]", "n": -1.5e3}, "data": {"x": [],
            "it\u0065ms": [{"id": 1}, {"id": 2}], "items": [{"id": 3}], "y": [true, null]}, "after": "}"}"#;
        let (records, _, res) = split("/data/items", &[("order.id", "/id")], doc);
        res.unwrap();
        // The first member of that name is split; a duplicate is skipped.
        assert_eq!(bodies(&records), vec![r#"{"id": 1}"#, r#"{"id": 2}"#]);
        assert_eq!(records[1].properties, vec![("order.id".to_string(), Value::Int(2))]);

        let (records, _, res) = split("/a~1b/1", &[], r#"{"a/b": [[0], [1, 2], [3]]}"#);
        res.unwrap();
        assert_eq!(bodies(&records), vec!["1", "2"]);
    }

    #[test]
    fn empty_arrays_hold_no_records() {
        for doc in ["[]", " [ \n ] ", r#"{"orders": []}"#] {
            let array = if doc.starts_with('{') { "/orders" } else { "" };
            let (records, bad, res) = split(array, &[], doc);
            res.unwrap();
            assert!(records.is_empty() && bad.is_empty(), "{doc}");
        }
    }

    #[test]
    fn bad_records_are_handed_on_and_the_split_goes_on() {
        let doc = "[{\"a\": 1}, {\"a\": tru}, \"\u{1}\", nul, {\"a\": [1,]}, {\"a\": 3}]";
        let (records, bad, res) = split("", &[("x.a", "/a")], doc);
        res.unwrap();
        assert_eq!(bodies(&records), vec![r#"{"a": 1}"#, r#"{"a": 3}"#]);
        assert_eq!(records[1].index, 6);
        assert_eq!(bad.iter().map(|b| b.index).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
        assert_eq!(bad[0].body, br#"{"a": tru}"#);
        assert_eq!(bad[0].offset, 11);
        assert!(bad[0].message.starts_with("malformed JSON: "), "{}", bad[0].message);
        assert_eq!(bad[2].body, b"nul");

        let mut c = config("", &[]);
        c.max_record_size = ByteSize(16);
        let mut d = JsonDisassembler::new(&c).unwrap();
        let (out, res) = split_all(
            &mut d,
            br#"[{"a": 1}, {"a": "0123456789abcdef"}, "0123456789abcdefgh", 3]"#,
        );
        res.unwrap();
        assert_eq!(bodies(&out.records), vec![r#"{"a": 1}"#, "3"]);
        assert_eq!(out.bad.len(), 2);
        assert_eq!(out.bad[0].body, br#"{"a": "012345678"#);
        assert!(
            out.bad[0].message.contains("is 25 bytes, over max_record_size 16"),
            "{}",
            out.bad[0].message
        );
        assert_eq!((out.bad[1].index, out.bad[1].offset), (3, 38));
    }

    #[test]
    fn malformed_documents_say_where() {
        // (pointer, document, offset, record, message part)
        let cases: &[(&str, &str, u64, Option<u64>, &str)] = &[
            ("", "", 0, None, "empty"),
            ("", " \n", 2, None, "empty"),
            (
                "",
                "{\"a\": 1}",
                0,
                None,
                "the top-level value is an object, not an array",
            ),
            (
                "/orders",
                "{\"a\": 1}",
                7,
                None,
                "the top-level value is an object without a member `orders`",
            ),
            (
                "/orders",
                "{\"orders\": {\"x\": 1}}",
                11,
                None,
                "`/orders` is an object, not an array",
            ),
            ("/orders/x", "{\"orders\": [1]}", 11, None, "`x` is not an index"),
            (
                "/orders/1",
                "{\"orders\": [[1]]}",
                15,
                None,
                "`/orders` is an array of 1 elements, without index 1",
            ),
            (
                "/a/b",
                "{\"a\": \"s\"}",
                6,
                None,
                "`/a` is a string, without a member `b`",
            ),
            (
                "/orders",
                "{\"x\": tru, \"orders\": []}",
                6,
                None,
                "`tru` is not a JSON value",
            ),
            (
                "/orders",
                "{\"x\": 01, \"orders\": []}",
                6,
                None,
                "`01` is not a JSON value",
            ),
            ("/orders", "{\"x\" 1}", 5, None, "expected `:` after a member name"),
            ("/orders", "{\"x\": \"a\\qb\"}", 8, None, "invalid escape"),
            ("/orders", "{\"x\": \"\\ud800\"}", 7, None, "lone surrogate"),
            ("/orders", "{\"orders\": [1], }", 16, None, "trailing comma"),
            ("", "[1] x", 4, None, "data after the end"),
            ("", "[1] [2]", 4, None, "data after the end"),
            ("", "[1 2]", 3, None, "expected `,` or `]`, found `2`"),
            ("", "[1,]", 3, None, "trailing comma"),
            ("", "[1,,2]", 3, Some(2), "expected a value"),
            ("", "[{\"a\": 1}, {\"b\": ", 17, Some(2), "ends inside the record"),
            ("", "[{\"a\": [1}]", 9, Some(1), "`}` closes nothing open"),
            ("", "[1, 2", 5, None, "ends where `,` or `]` was expected"),
            (
                "/orders",
                "{\"orders\": [1]",
                14,
                None,
                "ends where `,` or `}` was expected",
            ),
        ];
        for &(pointer, doc, offset, record, part) in cases {
            let (_, _, res) = split(pointer, &[], doc);
            let (o, r, m) = malformed(res);
            assert!(m.contains(part), "{doc}: {m}");
            assert_eq!((o, r), (offset, record), "{doc}: {m}");
        }
    }

    #[test]
    fn a_huge_record_is_counted_not_held() {
        let mut c = config("", &[]);
        c.max_record_size = ByteSize(1024);
        let mut d = JsonDisassembler::new(&c).unwrap();
        let doc = Generated::new(b"[\"", b'x', 64 << 20, b"\", 7]");
        let out = one_huge_bad_record(&mut d, doc, 1024, (1, 1, (64 << 20) + 2));
        assert_eq!(bodies(&out.records), vec!["7"]);
    }

    #[test]
    fn a_huge_token_outside_records_is_refused_or_streamed() {
        let mut d = JsonDisassembler::new(&config("/a", &[])).unwrap();
        // A 200 MB number: refused after a few KiB.
        let doc = Generated::new(b"{\"n\": 1", b'0', 200_000_000, b", \"a\": [1]}");
        let (_, res, read) = split_generated(&mut d, doc);
        let (offset, _, message) = malformed(res);
        assert_eq!(offset, 6);
        assert!(message.contains("longer than 4096 bytes"), "{message}");
        assert!(read < 1 << 20, "{read}");
        // A 64 MiB string is skipped without being held.
        let doc = Generated::new(b"{\"s\": \"", b'y', 64 << 20, b"\", \"a\": [1]}");
        let (out, res, _) = split_generated(&mut d, doc);
        res.unwrap();
        assert_eq!(bodies(&out.records), vec!["1"]);
        // As is a 64 MiB member name.
        let doc = Generated::new(b"{\"", b'a', 64 << 20, b"\": 0, \"a\": [2]}");
        let (out, res, _) = split_generated(&mut d, doc);
        res.unwrap();
        assert_eq!(bodies(&out.records), vec!["2"]);
        // And deep nesting outside the records is refused, not recursed into.
        let doc = Generated::new(b"{\"x\": ", b'[', 200_000_000, b"");
        let (_, res, read) = split_generated(&mut d, doc);
        assert!(malformed(res).2.contains("nest deeper than 128"));
        assert!(read < 1 << 20, "{read}");
        let doc = Generated::new(b"{\"a\": [", b'[', 200_000_000, b"");
        let (_, res, read) = split_generated(&mut d, doc);
        let (_, record, message) = malformed(res);
        assert_eq!(record, Some(1));
        assert!(message.contains("nests deeper than 4096"), "{message}");
        assert!(read < 1 << 20, "{read}");
    }

    #[test]
    fn config_errors_are_precise() {
        let e = JsonDisassembler::new(&config("orders", &[])).err().unwrap();
        assert!(e.contains("array `orders` is not a JSON pointer"), "{e}");
        let e = JsonDisassembler::new(&config("/a~2", &[])).err().unwrap();
        assert!(e.contains("`~` is written `~0`"), "{e}");
        let e = JsonDisassembler::new(&config("", &[("order.id", "id")])).err().unwrap();
        assert!(e.contains("promote `order.id` = `id` is not a JSON pointer"), "{e}");
        let e = JsonDisassembler::new(&config("", &[("9x", "/id")])).err().unwrap();
        assert!(e.contains("not a property name"), "{e}");
    }
}
