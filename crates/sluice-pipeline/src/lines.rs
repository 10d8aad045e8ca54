//! The lines disassembler: each line of the document (or each `batch`
//! lines) becomes a message.
//!
//! A line ends at `\n` or `\r\n` (a `\r` alone is part of the line); the last
//! line needs no line end. With `batch = 1` a message is the line without its
//! line end; with `batch > 1` it is the lines each followed by `\n` (the last,
//! shorter batch too), so every batch is a well-formed text file. Empty lines
//! are skipped (`skip_empty = true`, the default) and then take no index; with
//! `skip_empty = false` each is an empty message. A UTF-8 byte order mark at
//! the start is skipped; lines are not otherwise checked (any bytes).
//!
//! A line over `max_record_size` is a bad record holding its first
//! `max_record_size` bytes: the rest of it is read and counted, never held,
//! so memory is one line (or one batch) plus the reader's buffer.

use std::io::BufRead;

use crate::bounded::{Batcher, Bytes, Capped, check_batch};
use crate::config::LinesDisassembleConfig;
use crate::disassemble::{Disassembler, RecordSink, SplitError};

pub(crate) fn check(c: &LinesDisassembleConfig) -> Result<(), String> {
    check_batch(c.batch, c.max_record_size)
}

pub(crate) struct LinesDisassembler {
    batch: u32,
    max: u64,
    skip_empty: bool,
}

impl LinesDisassembler {
    pub(crate) fn new(c: &LinesDisassembleConfig) -> Result<Self, String> {
        check(c)?;
        Ok(LinesDisassembler {
            batch: c.batch,
            max: c.max_record_size.0,
            skip_empty: c.skip_empty,
        })
    }
}

impl Disassembler for LinesDisassembler {
    fn split(&mut self, input: &mut dyn BufRead, out: &mut dyn RecordSink) -> Result<(), SplitError> {
        let mut bytes = Bytes::new(input);
        bytes.skip_bom()?;
        let mut batch = Batcher::new(self.batch);
        let end: &[u8] = if self.batch == 1 { b"" } else { b"\n" };
        let mut line = Capped::default();
        loop {
            let offset = bytes.pos;
            line.clear();
            // One byte more than the limit: room for the `\r` of a `\r\n`.
            let newline = bytes
                .take_until(&mut line, self.max.saturating_add(1), true, |b| b == b'\n')?
                .is_some();
            if newline {
                bytes.consume(1);
            } else if line.total == 0 {
                break;
            }
            let mut size = line.total;
            if newline && line.last == Some(b'\r') {
                size -= 1;
                line.bytes.truncate(size as usize);
            }
            if size == 0 && self.skip_empty {
                continue;
            }
            if size > self.max {
                let body = std::mem::take(&mut line.bytes);
                batch.oversized(out, offset, body, size, self.max)?;
            } else {
                batch.push(out, offset, b"", &line.bytes, end, Vec::new())?;
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

    fn lines(batch: u32, max: u64, skip_empty: bool) -> LinesDisassembler {
        LinesDisassembler::new(&LinesDisassembleConfig {
            batch,
            max_record_size: ByteSize(max),
            recoverable: false,
            skip_empty,
        })
        .unwrap()
    }

    /// (index, offset, body) of each record, and of each bad record.
    type Seen = Vec<(u64, u64, String)>;

    fn split(d: &mut LinesDisassembler, doc: &[u8]) -> (Seen, Seen) {
        let (out, res) = split_all(d, doc);
        res.unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (
            out.records.iter().map(|r| (r.index, r.offset, text(&r.body))).collect(),
            out.bad.iter().map(|r| (r.index, r.offset, text(&r.body))).collect(),
        )
    }

    #[test]
    fn splits_lines_with_either_line_end() {
        let doc = "\u{feff}one\r\ntwo\n\n\r\nthrée\rx\nlast".as_bytes();
        let (records, bad) = split(&mut lines(1, 1024, true), doc);
        assert!(bad.is_empty());
        assert_eq!(
            records,
            vec![
                (1, 3, "one".into()),
                (2, 8, "two".into()),
                (3, 15, "thrée\rx".into()),
                (4, 24, "last".into()),
            ]
        );
        let (records, _) = split(&mut lines(1, 1024, false), b"a\n\r\n\nb\n");
        let bodies: Vec<&str> = records.iter().map(|r| r.2.as_str()).collect();
        assert_eq!(bodies, vec!["a", "", "", "b"]);
        assert_eq!(records[3].0, 4);
    }

    #[test]
    fn batches_end_each_line_with_a_newline() {
        let (records, _) = split(&mut lines(2, 1024, true), b"a\r\nb\nc\n\nd\ne");
        assert_eq!(
            records,
            vec![(1, 0, "a\nb\n".into()), (2, 5, "c\nd\n".into()), (3, 10, "e\n".into()),]
        );
    }

    #[test]
    fn a_long_line_is_a_bad_record_and_ends_the_batch() {
        let doc = b"a\n0123456789abcdefXYZ\r\nb\nc\n0123456789abcdef\r\n";
        let (records, bad) = split(&mut lines(2, 16, true), doc);
        assert_eq!(
            records,
            vec![
                (1, 0, "a\n".into()),
                (3, 23, "b\nc\n".into()),
                (4, 27, "0123456789abcdef\n".into())
            ]
        );
        assert_eq!(bad, vec![(2, 2, "0123456789abcdef".into())]);
    }

    #[test]
    fn empty_documents_hold_no_records() {
        for doc in [&b""[..], b"\n", b"\r\n\n"] {
            let (records, bad) = split(&mut lines(1, 1024, true), doc);
            assert!(records.is_empty() && bad.is_empty());
        }
    }

    #[test]
    fn a_huge_line_is_counted_not_held() {
        let mut d = lines(1, 1024, true);
        let doc = Generated::new(b"first\n", b'z', 200_000_000, b"\nlast");
        let out = one_huge_bad_record(&mut d, doc, 1024, (2, 6, 200_000_000));
        let bodies: Vec<&[u8]> = out.records.iter().map(|r| &r.body[..]).collect();
        assert_eq!(bodies, vec![&b"first"[..], b"last"]);
        assert_eq!(out.records[1].index, 3);
    }

    #[test]
    fn batch_is_checked() {
        let c = |batch| LinesDisassembleConfig {
            batch,
            max_record_size: ByteSize(1024),
            recoverable: false,
            skip_empty: true,
        };
        assert!(check(&c(0)).unwrap_err().contains("batch 0 is not 1 to 1000000"));
        assert!(check(&c(1_000_001)).is_err());
        assert!(check(&c(1_000_000)).is_ok());
        let e = check(&LinesDisassembleConfig {
            max_record_size: ByteSize(1 << 20),
            ..c(1025)
        })
        .unwrap_err();
        assert!(
            e.contains("batch 1025 × max_record_size 1048576 bytes is over 1073741824 bytes"),
            "{e}"
        );
    }
}
