//! The CSV disassembler: each record (or each `batch` records) becomes a
//! message. Records are delimited by `csv-core`, the `csv` crate's own
//! parser, driven directly over the reader's buffer: that gives the exact
//! input bytes of each record and buffers that never grow past the limits
//! (a 1 GiB field is counted and dropped, not held).
//!
//! A message is the header line (with `header = true`), then each record's
//! own bytes as they are in the input (quotes, escapes and line breaks inside
//! quoted fields untouched), each followed by `\n` (the record's own line end,
//! `\n`, `\r\n` or `\r`, is replaced). Blank lines between records are
//! skipped and take no index. A UTF-8 byte order mark at the start is
//! skipped. The index of a message is its place in the interchange; its
//! offset is that of its first record.
//!
//! Bad records (the split goes on after each): a record with another number
//! of fields than the header (without a header: than the first record), a
//! record over `max_record_size` (its first `max_record_size` bytes are
//! kept), a promoted field that is not UTF-8. A bad record ends the batch in
//! progress: that batch is handed on first, then the bad record. A header
//! over `max_record_size`, or one that lacks a promoted column, makes the
//! document malformed. A document with a header only holds no records.
//!
//! Promotion (only with `batch = 1`): a column by name (needs a header) or
//! `#N` (1-based, also with a header); values are strings. A `#N` beyond a
//! record's last field promotes nothing.
//!
//! Limitation: csv-core reads an unterminated quoted field to the end of the
//! document (it is then one record: usually an oversized or bad one).

use std::io::BufRead;

use csv_core::{ReadRecordResult, Reader, ReaderBuilder};
use sluice_model::Value;

use crate::bounded::{Batcher, Bytes, Capped, check_batch};
use crate::config::CsvDisassembleConfig;
use crate::disassemble::{Disassembler, RecordSink, SplitError, property_key};

/// The most fields whose values are kept (for the header's names and for
/// promotion); a record with more is still counted and delimited.
const MAX_COLUMNS: usize = 65_536;

#[derive(Debug, Clone)]
enum Column {
    Name(String),
    /// 0-based.
    Number(usize),
}

pub(crate) fn check(c: &CsvDisassembleConfig) -> Result<(), String> {
    CsvDisassembler::new(c).map(|_| ())
}

pub(crate) struct CsvDisassembler {
    header: bool,
    delimiter: u8,
    batch: u32,
    max: u64,
    promotions: Vec<(String, Column)>,
}

impl CsvDisassembler {
    pub(crate) fn new(c: &CsvDisassembleConfig) -> Result<Self, String> {
        check_batch(c.batch, c.max_record_size)?;
        let delimiter = u8::try_from(c.delimiter)
            .ok()
            .filter(|d| d.is_ascii() && !matches!(d, b'"' | b'\r' | b'\n'))
            .ok_or_else(|| {
                format!(
                    "delimiter `{}` is not one ASCII character other than a quote or a line end",
                    c.delimiter.escape_default()
                )
            })?;
        if !c.promote.is_empty() && c.batch != 1 {
            return Err(format!(
                "promote needs batch = 1 (batch is {}): a message of several records has no one value to promote",
                c.batch
            ));
        }
        let promotions = c
            .promote
            .iter()
            .map(|(property, column)| {
                property_key(property).map_err(|e| format!("promote `{property}`: {e}"))?;
                let bad = |why: &str| format!("promote `{property}` = `{column}`: {why}");
                let column = match column.strip_prefix('#') {
                    Some(n) => match n.parse::<usize>() {
                        Ok(n) if n >= 1 => Column::Number(n - 1),
                        _ => return Err(bad("a column number is written `#1`, `#2`, …")),
                    },
                    None if column.is_empty() => return Err(bad("name a column, or write `#N`")),
                    None if !c.header => return Err(bad("a column by name needs header = true (or write `#N`)")),
                    None => Column::Name(column.clone()),
                };
                Ok((property.clone(), column))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(CsvDisassembler {
            header: c.header,
            delimiter,
            batch: c.batch,
            max: c.max_record_size.0,
            promotions,
        })
    }
}

/// One record as read: its bytes (at most max_record_size + 2 of them: room
/// for a `\r\n`), its field count, and, when wanted, its field values.
struct Row {
    offset: u64,
    raw: Capped,
    fields: u64,
    out: Vec<u8>,
    nout: usize,
    ends: Vec<usize>,
    nends: usize,
    /// The field values could not all be kept.
    lost: bool,
}

impl Row {
    fn new() -> Self {
        Row {
            offset: 0,
            raw: Capped::default(),
            fields: 0,
            out: vec![0; 1024],
            nout: 0,
            ends: vec![0; 64],
            nends: 0,
            lost: false,
        }
    }

    /// Field `i`'s value (unquoted), if kept.
    fn field(&self, i: usize) -> Option<&[u8]> {
        if self.lost || i >= self.nends {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.out.get(start..self.ends[i])
    }

    /// The record's bytes without its line end, and its size.
    fn line(&self) -> (&[u8], u64) {
        let is_end = |b: &u8| *b == b'\r' || *b == b'\n';
        if self.raw.total == self.raw.bytes.len() as u64 {
            let kept = self.raw.bytes.len() - self.raw.bytes.iter().rev().take_while(|b| is_end(b)).count();
            (&self.raw.bytes[..kept], kept as u64)
        } else {
            let end = self.raw.last.as_ref().is_some_and(is_end);
            (&self.raw.bytes, self.raw.total - u64::from(end))
        }
    }

    /// Read the next record; false at the end of the document.
    fn read(&mut self, core: &mut Reader, bytes: &mut Bytes<'_>, keep: bool, max: u64) -> Result<bool, SplitError> {
        self.raw.clear();
        self.fields = 0;
        self.nout = 0;
        self.nends = 0;
        self.lost = false;
        bytes.skip_while(|b| b == b'\r' || b == b'\n')?;
        self.offset = bytes.pos;
        loop {
            let buf = bytes.fill()?;
            let eof = buf.is_empty();
            let (res, nin, nout, nend) =
                core.read_record(buf, &mut self.out[self.nout..], &mut self.ends[self.nends..]);
            self.raw.push(&buf[..nin], max.saturating_add(2));
            bytes.consume(nin);
            self.nout += nout;
            self.nends += nend;
            self.fields += nend as u64;
            match res {
                ReadRecordResult::Record => return Ok(true),
                ReadRecordResult::End => return Ok(false),
                ReadRecordResult::InputEmpty if eof => return Ok(false),
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    // Values are never longer than the record's bytes: past
                    // the limit the record is over it, and its values unused.
                    if keep && self.out.len() as u64 <= max {
                        let grown = (self.out.len() * 2).min((max as usize).saturating_add(1));
                        self.out.resize(grown, 0);
                    } else {
                        self.lost = true;
                        self.nout = 0;
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    if keep && self.ends.len() < MAX_COLUMNS {
                        let grown = (self.ends.len() * 2).min(MAX_COLUMNS);
                        self.ends.resize(grown, 0);
                    } else {
                        self.lost = true;
                        self.nends = 0;
                    }
                }
            }
        }
    }
}

/// What every record is read against.
struct Header {
    /// The header line with its `\n`, starting every message (empty without a header).
    line: Vec<u8>,
    /// The field count every record must have (without a header: the first record's).
    fields: Option<u64>,
    /// Each promotion's column (0-based).
    columns: Vec<Option<usize>>,
}

impl CsvDisassembler {
    /// Read the header; `None` for an empty document.
    fn header(&self, core: &mut Reader, bytes: &mut Bytes<'_>, row: &mut Row) -> Result<Option<Header>, SplitError> {
        let malformed = |row: &Row, message: String| SplitError::Malformed {
            offset: row.offset,
            record: None,
            message,
        };
        if !row.read(core, bytes, true, self.max)? {
            return Ok(None);
        }
        let (line, size) = row.line();
        if size > self.max {
            return Err(malformed(
                row,
                format!("the header is {size} bytes, over max_record_size {} bytes", self.max),
            ));
        }
        let mut header = line.to_vec();
        header.push(b'\n');
        let mut columns = Vec::with_capacity(self.promotions.len());
        for (property, column) in &self.promotions {
            columns.push(Some(match column {
                Column::Number(n) => *n,
                Column::Name(name) if row.lost => {
                    return Err(malformed(
                        row,
                        format!("the header has more than {MAX_COLUMNS} columns; promote `{property}` = `{name}` cannot be found"),
                    ));
                }
                Column::Name(name) => (0..row.nends)
                    .find(|&i| row.field(i) == Some(name.as_bytes()))
                    .ok_or_else(|| {
                        malformed(
                            row,
                            format!("the header has no column `{name}` (promote `{property}`)"),
                        )
                    })?,
            }));
        }
        Ok(Some(Header {
            line: header,
            fields: Some(row.fields),
            columns,
        }))
    }
}

impl Disassembler for CsvDisassembler {
    fn split(&mut self, input: &mut dyn BufRead, out: &mut dyn RecordSink) -> Result<(), SplitError> {
        let mut core = ReaderBuilder::new().delimiter(self.delimiter).build();
        let mut bytes = Bytes::new(input);
        bytes.skip_bom()?;
        let mut row = Row::new();
        let mut header = if self.header {
            match self.header(&mut core, &mut bytes, &mut row)? {
                Some(header) => header,
                None => return Ok(()),
            }
        } else {
            Header {
                line: Vec::new(),
                fields: None,
                columns: self
                    .promotions
                    .iter()
                    .map(|(_, c)| match c {
                        Column::Number(n) => Some(*n),
                        Column::Name(_) => None,
                    })
                    .collect(),
            }
        };
        let keep = !self.promotions.is_empty();
        let mut batch = Batcher::new(self.batch);
        while row.read(&mut core, &mut bytes, keep, self.max)? {
            let (line, size) = row.line();
            if size > self.max {
                batch.oversized(out, row.offset, line.to_vec(), size, self.max)?;
                continue;
            }
            let want = *header.fields.get_or_insert(row.fields);
            if row.fields != want {
                let of = if self.header { "the header" } else { "the first record" };
                let message = format!("the record has {} fields, {of} {want}", row.fields);
                batch.bad(out, row.offset, line.to_vec(), message)?;
                continue;
            }
            let mut properties = Vec::with_capacity(self.promotions.len());
            let mut error = None;
            for ((property, _), column) in self.promotions.iter().zip(&header.columns) {
                let Some(value) = column.and_then(|i| row.field(i)) else {
                    continue;
                };
                match std::str::from_utf8(value) {
                    Ok(v) => properties.push((property.clone(), Value::String(v.to_string()))),
                    Err(e) => {
                        error = Some(format!("the field promoted to `{property}` is not UTF-8: {e}"));
                        break;
                    }
                }
            }
            match error {
                Some(message) => batch.bad(out, row.offset, line.to_vec(), message)?,
                None => batch.push(out, row.offset, &header.line, line, b"\n", properties)?,
            }
        }
        batch.flush(out)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ByteSize;
    use crate::bounded::testing::{Generated, one_huge_bad_record};
    use crate::disassemble::testing::split_all;

    /// A config from its TOML options.
    fn config(toml: &str) -> CsvDisassembleConfig {
        toml::from_str(toml).unwrap()
    }

    fn csv(toml: &str) -> CsvDisassembler {
        CsvDisassembler::new(&config(toml)).unwrap()
    }

    /// (index, offset, body) of each record, of each bad record, and the result.
    type Seen = Vec<(u64, u64, String)>;

    fn split(d: &mut CsvDisassembler, doc: &str) -> (Seen, Seen, Result<(), SplitError>) {
        let (out, res) = split_all(d, doc.as_bytes());
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (
            out.records.iter().map(|r| (r.index, r.offset, text(&r.body))).collect(),
            out.bad.iter().map(|r| (r.index, r.offset, text(&r.body))).collect(),
            res,
        )
    }

    #[test]
    fn splits_records_under_the_header_and_promotes() {
        let doc = "\u{feff}id,name,note\r\n1,ACME,\"a, \"\"quoted\"\"\r\nnote\"\r\n\r\n2,Zoë,\n";
        let mut d = csv(r##"promote = { "order.id" = "id", "order.name" = "#2", "order.note" = "note" }"##);
        let (out, res) = split_all(&mut d, doc.as_bytes());
        res.unwrap();
        assert!(out.bad.is_empty(), "{:?}", out.bad);
        let bodies: Vec<&str> = out
            .records
            .iter()
            .map(|r| std::str::from_utf8(&r.body).unwrap())
            .collect();
        assert_eq!(
            bodies,
            vec![
                "id,name,note\n1,ACME,\"a, \"\"quoted\"\"\r\nnote\"\n",
                "id,name,note\n2,Zoë,\n"
            ]
        );
        assert_eq!(
            out.records.iter().map(|r| (r.index, r.offset)).collect::<Vec<_>>(),
            vec![(1, 17), (2, 49)]
        );
        let s = |v: &str| Value::String(v.into());
        assert_eq!(
            out.records[0].properties,
            vec![
                ("order.id".to_string(), s("1")),
                ("order.name".to_string(), s("ACME")),
                ("order.note".to_string(), s("a, \"quoted\"\r\nnote")),
            ]
        );
        assert_eq!(out.records[1].properties[1], ("order.name".to_string(), s("Zoë")));
    }

    #[test]
    fn without_a_header_and_with_another_delimiter() {
        let mut d = csv(r##"header = false
            delimiter = ";"
            promote = { "x.second" = "#2", "x.tenth" = "#10" }"##);
        let (records, bad, res) = split(&mut d, "a;b\nc;d;e\nf;g");
        res.unwrap();
        assert_eq!(records, vec![(1, 0, "a;b\n".into()), (3, 10, "f;g\n".into())]);
        assert_eq!(bad, vec![(2, 4, "c;d;e".into())]);
        // A bare `\r` ends a row too.
        let (records, _, res) = split(&mut d, "x;y\ry;z\r");
        res.unwrap();
        assert_eq!(records, vec![(1, 0, "x;y\n".into()), (2, 4, "y;z\n".into())]);
        let mut d = csv("delimiter = \"\\t\"\nheader = false");
        let (records, _, res) = split(&mut d, "a\tb,c\n");
        res.unwrap();
        assert_eq!(records, vec![(1, 0, "a\tb,c\n".into())]);
    }

    #[test]
    fn batches_repeat_the_header_and_a_bad_record_ends_one() {
        let mut d = csv("batch = 2\nmax_record_size = 16");
        let doc = "h1,h2\n1,a\n2,b\n3,c\n4\n5,0123456789abcdef\n6,f\n7,g\n";
        let (records, bad, res) = split(&mut d, doc);
        res.unwrap();
        assert_eq!(
            records,
            vec![
                (1, 6, "h1,h2\n1,a\n2,b\n".into()),
                (2, 14, "h1,h2\n3,c\n".into()),
                (5, 39, "h1,h2\n6,f\n7,g\n".into()),
            ]
        );
        assert_eq!(bad, vec![(3, 18, "4".into()), (4, 20, "5,0123456789abcd".into())]);
        let (out, _) = split_all(&mut d, doc.as_bytes());
        assert!(
            out.bad[0].message.contains("the record has 1 fields, the header 2"),
            "{}",
            out.bad[0].message
        );
        assert!(
            out.bad[1].message.contains("is 18 bytes, over max_record_size 16"),
            "{}",
            out.bad[1].message
        );
    }

    #[test]
    fn a_promoted_field_must_be_utf8() {
        let mut d = csv(r#"promote = { "x.a" = "a" }"#);
        let (out, res) = split_all(&mut d, b"a,b\n\xff,1\nok,2\n");
        res.unwrap();
        assert_eq!(out.bad.len(), 1);
        assert_eq!(
            (out.bad[0].index, out.bad[0].offset, &out.bad[0].body[..]),
            (1, 4, &b"\xff,1"[..])
        );
        assert!(out.bad[0].message.contains("not UTF-8"), "{}", out.bad[0].message);
        assert_eq!(out.records[0].body, b"a,b\nok,2\n");
        // Without promotion the bytes are not looked at.
        let (out, res) = split_all(&mut csv(""), b"a,b\n\xff,1\n");
        res.unwrap();
        assert_eq!(out.records[0].body, b"a,b\n\xff,1\n");
    }

    #[test]
    fn headers_only_and_empty_documents_hold_no_records() {
        for doc in ["", "\n\r\n", "a,b", "a,b\r\n\r\n"] {
            let (records, bad, res) = split(&mut csv(""), doc);
            res.unwrap();
            assert!(records.is_empty() && bad.is_empty(), "{doc:?}");
        }
    }

    #[test]
    fn a_bad_header_makes_the_document_malformed() {
        let mut d = csv(r#"promote = { "x.id" = "id" }"#);
        match split(&mut d, "\nname,other\n1,2\n").2 {
            Err(SplitError::Malformed {
                offset,
                record,
                message,
            }) => {
                assert_eq!((offset, record), (1, None));
                assert!(
                    message.contains("the header has no column `id` (promote `x.id`)"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        let mut d = csv("max_record_size = 16");
        match split(&mut d, "a,0123456789abcdef\n1,2\n").2 {
            Err(SplitError::Malformed { offset, message, .. }) => {
                assert_eq!(offset, 0);
                assert!(message.contains("the header is 18 bytes"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_huge_field_is_counted_not_held() {
        for promote in ["", r#"promote = { "x.a" = "a" }"#] {
            let mut d = CsvDisassembler::new(&CsvDisassembleConfig {
                max_record_size: ByteSize(1024),
                ..config(promote)
            })
            .unwrap();
            let doc = Generated::new(b"a,b\n1,\"", b'q', 200_000_000, b"\"\n2,x\n");
            let out = one_huge_bad_record(&mut d, doc, 1024, (1, 4, 200_000_004));
            assert_eq!(out.records.len(), 1);
            assert_eq!(out.records[0].body, b"a,b\n2,x\n");
            assert_eq!(out.records[0].index, 2);
        }
    }

    #[test]
    fn config_errors_are_precise() {
        let err = |toml: &str| check(&config(toml)).unwrap_err();
        assert!(err("delimiter = \"é\"").contains("delimiter `\\u{e9}` is not one ASCII character"));
        assert!(err("delimiter = '\"'").contains("other than a quote"));
        assert!(err("batch = 0").contains("batch 0 is not 1 to 1000000"));
        assert!(err("batch = 2000000").contains("batch 2000000"));
        let e = err("batch = 2\npromote = { \"x.a\" = \"#1\" }");
        assert!(e.contains("promote needs batch = 1 (batch is 2)"), "{e}");
        let e = err("header = false\npromote = { \"x.a\" = \"a\" }");
        assert!(
            e.contains("promote `x.a` = `a`: a column by name needs header = true"),
            "{e}"
        );
        let e = err("promote = { \"x.a\" = \"#0\" }");
        assert!(e.contains("a column number is written `#1`"), "{e}");
        let e = err("promote = { \"9\" = \"a\" }");
        assert!(e.contains("not a property name"), "{e}");
        assert!(err("batch = 1025").contains("batch 1025 × max_record_size 1048576 bytes is over 1073741824 bytes"));
        assert!(check(&config("delimiter = \"|\"\nbatch = 1000000\nmax_record_size = 1024")).is_ok());
    }
}
