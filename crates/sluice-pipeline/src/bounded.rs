//! What the byte-scanning disassemblers (json, csv, lines) share: a record
//! buffer that keeps at most a fixed number of bytes while counting all of
//! them, and the byte-level reading they do on a [`BufRead`].

use std::io::BufRead;

use sluice_model::Value;

use crate::config::ByteSize;
use crate::disassemble::{BadRecord, Record, RecordSink, SplitError, Stopped};

/// A UTF-8 byte order mark; skipped at the start of a document.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// Record bytes, of which at most `keep` are held; the rest are only counted.
#[derive(Debug, Default)]
pub(crate) struct Capped {
    pub(crate) bytes: Vec<u8>,
    /// Every byte pushed, kept or not.
    pub(crate) total: u64,
    /// The last byte pushed, kept or not.
    pub(crate) last: Option<u8>,
}

impl Capped {
    pub(crate) fn push(&mut self, chunk: &[u8], keep: u64) {
        let room = (keep as usize).saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        self.total += chunk.len() as u64;
        if let Some(&b) = chunk.last() {
            self.last = Some(b);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.total = 0;
        self.last = None;
    }
}

/// Gathers `per_message` records into one message (csv and lines `batch`),
/// numbering messages and bad records in one sequence, in document order.
/// A bad record ends the batch in progress: that batch is handed on first,
/// then the bad record, each with its own index.
pub(crate) struct Batcher {
    per_message: u64,
    body: Vec<u8>,
    count: u64,
    offset: u64,
    properties: Vec<(String, Value)>,
    /// The index of the last message or bad record handed on.
    index: u64,
}

impl Batcher {
    pub(crate) fn new(per_message: u32) -> Self {
        Batcher {
            per_message: u64::from(per_message.max(1)),
            body: Vec::new(),
            count: 0,
            offset: 0,
            properties: Vec::new(),
            index: 0,
        }
    }

    /// Add a record at `offset`: `prefix` starts each message (a csv
    /// header), `end` follows each record.
    pub(crate) fn push(
        &mut self,
        out: &mut dyn RecordSink,
        offset: u64,
        prefix: &[u8],
        record: &[u8],
        end: &[u8],
        properties: Vec<(String, Value)>,
    ) -> Result<(), Stopped> {
        if self.count == 0 {
            self.offset = offset;
            self.body.extend_from_slice(prefix);
        }
        self.body.extend_from_slice(record);
        self.body.extend_from_slice(end);
        self.properties = properties;
        self.count += 1;
        if self.count == self.per_message {
            self.flush(out)?;
        }
        Ok(())
    }

    /// Hand on the batch in progress, if any.
    pub(crate) fn flush(&mut self, out: &mut dyn RecordSink) -> Result<(), Stopped> {
        if self.count == 0 {
            return Ok(());
        }
        self.count = 0;
        self.index += 1;
        out.record(Record {
            index: self.index,
            offset: self.offset,
            body: std::mem::take(&mut self.body),
            properties: std::mem::take(&mut self.properties),
        })
    }

    /// Hand on a bad record (after the batch in progress).
    pub(crate) fn bad(
        &mut self,
        out: &mut dyn RecordSink,
        offset: u64,
        body: Vec<u8>,
        message: String,
    ) -> Result<(), Stopped> {
        self.flush(out)?;
        self.index += 1;
        out.bad_record(BadRecord {
            index: self.index,
            offset,
            body,
            message,
        })
    }

    /// Hand on a record over `max` bytes (after the batch in progress).
    pub(crate) fn oversized(
        &mut self,
        out: &mut dyn RecordSink,
        offset: u64,
        body: Vec<u8>,
        size: u64,
        max: u64,
    ) -> Result<(), Stopped> {
        self.flush(out)?;
        self.index += 1;
        oversized(out, self.index, offset, body, size, max)
    }
}

/// Check a csv or lines `batch`: a message of `batch` records, each up to
/// `max_record_size`, is held in memory whole, so their product is capped.
pub(crate) fn check_batch(batch: u32, max_record_size: ByteSize) -> Result<(), String> {
    if !(1..=MAX_BATCH).contains(&batch) {
        return Err(format!("batch {batch} is not 1 to {MAX_BATCH} (records per message)"));
    }
    if u64::from(batch).saturating_mul(max_record_size.0) > MAX_BATCH_BYTES.0 {
        return Err(format!(
            "batch {batch} × max_record_size {max_record_size} is over {MAX_BATCH_BYTES}: a message is held in memory whole \
             (lower max_record_size to what one record can really be)"
        ));
    }
    Ok(())
}

/// The most bytes a batch of records may come to.
const MAX_BATCH_BYTES: ByteSize = ByteSize(1 << 30);

/// The most records a csv or lines message may gather.
const MAX_BATCH: u32 = 1_000_000;

/// Hand on a record over `max` bytes as a bad record holding its first `max`.
pub(crate) fn oversized(
    out: &mut dyn RecordSink,
    index: u64,
    offset: u64,
    mut body: Vec<u8>,
    size: u64,
    max: u64,
) -> Result<(), Stopped> {
    body.truncate(max as usize);
    out.bad_record(BadRecord {
        index,
        offset,
        body,
        message: format!(
            "the record is {size} bytes, over max_record_size {max} bytes (the suspended copy holds its first {max} bytes)"
        ),
    })
}

/// A [`BufRead`] read byte by byte or run by run, counting its position.
pub(crate) struct Bytes<'a> {
    input: &'a mut dyn BufRead,
    /// Bytes consumed so far: the offset of the next byte in the document.
    pub(crate) pos: u64,
}

impl<'a> Bytes<'a> {
    pub(crate) fn new(input: &'a mut dyn BufRead) -> Self {
        Bytes { input, pos: 0 }
    }

    pub(crate) fn fill(&mut self) -> Result<&[u8], SplitError> {
        self.input.fill_buf().map_err(SplitError::Read)
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.input.consume(n);
        self.pos += n as u64;
    }

    pub(crate) fn peek(&mut self) -> Result<Option<u8>, SplitError> {
        Ok(self.fill()?.first().copied())
    }

    pub(crate) fn next(&mut self) -> Result<Option<u8>, SplitError> {
        let b = self.peek()?;
        if b.is_some() {
            self.consume(1);
        }
        Ok(b)
    }

    /// Consume the bytes for which `skip` holds; return the next byte (not consumed).
    pub(crate) fn skip_while(&mut self, skip: impl Fn(u8) -> bool) -> Result<Option<u8>, SplitError> {
        loop {
            let buf = self.fill()?;
            if buf.is_empty() {
                return Ok(None);
            }
            match buf.iter().position(|&b| !skip(b)) {
                Some(n) => {
                    let b = buf[n];
                    self.consume(n);
                    return Ok(Some(b));
                }
                None => {
                    let n = buf.len();
                    self.consume(n);
                }
            }
        }
    }

    /// Copy the bytes up to (not including) the first one for which `stop`
    /// holds into `into` (at most `keep` of them), consuming them. Returns
    /// the stop byte, or `None` at the end of the input (or, without
    /// `read_past`, once more than `keep` bytes were read).
    pub(crate) fn take_until(
        &mut self,
        into: &mut Capped,
        keep: u64,
        read_past: bool,
        stop: impl Fn(u8) -> bool,
    ) -> Result<Option<u8>, SplitError> {
        loop {
            let buf = self.fill()?;
            if buf.is_empty() || (!read_past && into.total > keep) {
                return Ok(None);
            }
            let found = buf.iter().position(|&b| stop(b));
            let n = found.unwrap_or(buf.len());
            let stop_byte = found.map(|i| buf[i]);
            into.push(&buf[..n], keep);
            self.consume(n);
            if stop_byte.is_some() {
                return Ok(stop_byte);
            }
        }
    }

    /// Skip a UTF-8 byte order mark at the start of the document (when the
    /// reader's first buffer holds all three bytes of it, as any buffer of a
    /// sane size does).
    pub(crate) fn skip_bom(&mut self) -> Result<(), SplitError> {
        if self.pos == 0 && self.fill()?.starts_with(BOM) {
            self.consume(BOM.len());
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::io::{self, Read};

    use crate::disassemble::testing::Collected;
    use crate::disassemble::{Disassembler, SplitError};

    /// A document made on the fly: `head`, then `count` copies of `fill`,
    /// then `tail`. Never held in memory whole.
    pub struct Generated {
        head: Vec<u8>,
        fill: u8,
        count: u64,
        tail: Vec<u8>,
        /// Bytes handed out so far.
        pub read: u64,
    }

    impl Generated {
        pub fn new(head: &[u8], fill: u8, count: u64, tail: &[u8]) -> Self {
            Generated {
                head: head.to_vec(),
                fill,
                count,
                tail: tail.to_vec(),
                read: 0,
            }
        }
        pub fn size(&self) -> u64 {
            self.head.len() as u64 + self.count + self.tail.len() as u64
        }
    }

    impl Read for Generated {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let (head, count) = (self.head.len() as u64, self.count);
            let at = self.read;
            let n = if at < head {
                let part = &self.head[at as usize..];
                let n = part.len().min(buf.len());
                buf[..n].copy_from_slice(&part[..n]);
                n
            } else if at < head + count {
                let n = ((head + count - at) as usize).min(buf.len());
                buf[..n].fill(self.fill);
                n
            } else {
                let part = &self.tail[((at - head - count) as usize).min(self.tail.len())..];
                let n = part.len().min(buf.len());
                buf[..n].copy_from_slice(&part[..n]);
                n
            };
            self.read += n as u64;
            Ok(n)
        }
    }

    /// Run `d` over a generated document through a 64 KiB buffer; also say
    /// how many bytes it read.
    pub fn split_generated(d: &mut dyn Disassembler, input: Generated) -> (Collected, Result<(), SplitError>, u64) {
        let mut out = Collected::default();
        let mut r = io::BufReader::with_capacity(64 * 1024, input);
        let res = d.split(&mut r, &mut out);
        let read = r.get_ref().read - r.buffer().len() as u64;
        (out, res, read)
    }

    /// Split a generated document holding one huge record (`size` bytes,
    /// at `index` and `offset`) and check that it was read through, and
    /// handed on as a bad record of `max` bytes without being held.
    pub fn one_huge_bad_record(
        d: &mut dyn Disassembler,
        doc: Generated,
        max: usize,
        (index, offset, size): (u64, u64, u64),
    ) -> Collected {
        let total = doc.size();
        let (out, res, read) = split_generated(d, doc);
        res.unwrap();
        assert_eq!(read, total);
        assert_eq!(out.bad.len(), 1);
        let bad = &out.bad[0];
        assert_eq!((bad.index, bad.offset, bad.body.len()), (index, offset, max));
        assert!(bad.body.capacity() < 4 * max, "{}", bad.body.capacity());
        assert!(bad.message.contains(&format!("is {size} bytes")), "{}", bad.message);
        out
    }
}
