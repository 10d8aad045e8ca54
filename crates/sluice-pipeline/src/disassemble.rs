//! The disassemble stage: split one inbound document (an interchange) into
//! records, each its own message, promoting properties on the way.
//!
//! A [`Disassembler`] is synchronous code reading a [`BufRead`]: the pipeline
//! runs it on a blocking thread over the (decoded) body stream and hands the
//! records back through a small bounded channel, so memory is bounded by a
//! few records (each at most `max_record_size`), never by the document.
//!
//! Architecture Invariant: a disassembler never holds more than one record
//! (at most `max_record_size` bytes) plus its reader's buffer. A token or
//! record over the limit is reported as a bad record or a malformed
//! document; it is not buffered.

use std::io::{self, BufRead};

use sluice_model::{Key, Value};

use crate::config::DisassembleConfig;

/// One record split out of an interchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// 1-based position of the record in the interchange.
    pub index: u64,
    /// Byte offset of the record's first byte in the (decoded) document.
    pub offset: u64,
    pub body: Vec<u8>,
    /// Promoted properties: (`ns.name` as configured, value).
    pub properties: Vec<(String, Value)>,
}

/// A record that could be delimited but not taken (over the size limit,
/// unparseable on its own). The splitter goes on after it.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRecord {
    pub index: u64,
    pub offset: u64,
    /// What could be kept of the record: the whole of it, or, for a record
    /// over the limit, its first `max_record_size` bytes.
    pub body: Vec<u8>,
    pub message: String,
}

/// The receiving side went away (it failed, or stopped reading): stop splitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Where a disassembler puts what it splits out, in document order.
pub trait RecordSink {
    fn record(&mut self, record: Record) -> Result<(), Stopped>;
    fn bad_record(&mut self, record: BadRecord) -> Result<(), Stopped>;
}

/// Why splitting stopped before the end of the document.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// Reading the input failed: the source, or an earlier stage (a decoder's
    /// error arrives as an `io::Error` wrapping a [`PipelineError`](crate::PipelineError)).
    #[error("{0}")]
    Read(io::Error),
    /// The document cannot be split any further.
    #[error("{message} (at byte {offset}{})", record.map(|r| format!(", in record {r}")).unwrap_or_default())]
    Malformed {
        offset: u64,
        /// The record being read when it broke, if any.
        record: Option<u64>,
        message: String,
    },
    #[error("stopped")]
    Stopped,
}

impl From<Stopped> for SplitError {
    fn from(_: Stopped) -> Self {
        SplitError::Stopped
    }
}

/// A format's splitter. Built fresh for each document.
pub trait Disassembler: Send {
    fn split(&mut self, input: &mut dyn BufRead, out: &mut dyn RecordSink) -> Result<(), SplitError>;
}

/// Parse a promoted property's name (`ns.name`, or a bare `name`).
pub fn property_key(key: &str) -> Result<Key, String> {
    Key::parse(key).ok_or_else(|| "not a property name (write `namespace.name`, e.g. `order.id`)".to_string())
}

/// Check what serde cannot: paths, pointers, option combinations.
pub(crate) fn check(d: &DisassembleConfig) -> Result<(), String> {
    match d {
        DisassembleConfig::Xml(c) => crate::xml::check(c).map_err(|e| format!("disassemble (xml): {e}")),
        DisassembleConfig::Json(c) => crate::json::check(c).map_err(|e| format!("disassemble (json): {e}")),
        DisassembleConfig::Csv(c) => crate::csv::check(c).map_err(|e| format!("disassemble (csv): {e}")),
        DisassembleConfig::Lines(c) => crate::lines::check(c).map_err(|e| format!("disassemble (lines): {e}")),
    }
}

/// A fresh splitter for one document. The config must have passed [`check`].
pub(crate) fn build(d: &DisassembleConfig) -> Result<Box<dyn Disassembler>, String> {
    match d {
        DisassembleConfig::Xml(c) => Ok(Box::new(crate::xml::XmlDisassembler::new(c)?)),
        DisassembleConfig::Json(c) => Ok(Box::new(crate::json::JsonDisassembler::new(c)?)),
        DisassembleConfig::Csv(c) => Ok(Box::new(crate::csv::CsvDisassembler::new(c)?)),
        DisassembleConfig::Lines(c) => Ok(Box::new(crate::lines::LinesDisassembler::new(c)?)),
    }
}

/// A [`BufRead`] that refuses to hand out more than `limit` bytes between two
/// calls of [`TokenLimit::reset`]: a parser that buffers a whole token (a text
/// node, a tag, a string) cannot be made to buffer more than that.
pub struct TokenLimit<R> {
    inner: R,
    limit: u64,
    since_reset: u64,
    position: u64,
}

impl<R: BufRead> TokenLimit<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        TokenLimit {
            inner,
            limit,
            since_reset: 0,
            position: 0,
        }
    }
    pub fn reset(&mut self) {
        self.since_reset = 0;
    }
    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.position
    }
}

/// The error [`TokenLimit`] reports; recognisable with [`is_token_limit`].
#[derive(Debug, thiserror::Error)]
#[error("a single token is larger than {0} bytes")]
pub struct TokenTooLarge(pub u64);

pub fn is_token_limit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<TokenTooLarge>())
}

impl<R: BufRead> io::Read for TokenLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for TokenLimit<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.since_reset > self.limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, TokenTooLarge(self.limit)));
        }
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.since_reset += amt as u64;
        self.position += amt as u64;
        self.inner.consume(amt);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Collects what a disassembler produces.
    #[derive(Default, Debug)]
    pub struct Collected {
        pub records: Vec<Record>,
        pub bad: Vec<BadRecord>,
    }

    impl RecordSink for Collected {
        fn record(&mut self, record: Record) -> Result<(), Stopped> {
            self.records.push(record);
            Ok(())
        }
        fn bad_record(&mut self, record: BadRecord) -> Result<(), Stopped> {
            self.bad.push(record);
            Ok(())
        }
    }

    /// Run `d` over `input`, read through a tiny buffer so that every
    /// token straddles reads.
    pub fn split_all(d: &mut dyn Disassembler, input: &[u8]) -> (Collected, Result<(), SplitError>) {
        let mut out = Collected::default();
        let mut r = io::BufReader::with_capacity(7, input);
        let res = d.split(&mut r, &mut out);
        (out, res)
    }
}
