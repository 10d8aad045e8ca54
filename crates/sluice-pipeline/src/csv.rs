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
        check_batch(c.batch)?;
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
            self.raw.push(&buf[..nin], max + 2);
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
                        let grown = (self.out.len() * 2).min(max as usize + 1);
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
