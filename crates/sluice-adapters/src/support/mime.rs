//! A mail split into its parts as it streams in: the entities of a MIME
//! message (RFC 2045/2046), each leaf decoded from its transfer encoding
//! (base64, quoted-printable), handed on a piece at a time. Nothing is held
//! but one header block (capped), a boundary stack (capped in depth) and a
//! few bytes that may begin a boundary line; a mail of any size, or nested
//! any deeper, costs no more.
//!
//! Header blocks are read by mail-parser (encoded words, RFC 2231
//! parameters); the multipart structure, the boundaries and the decoding
//! are Sluice's own, because they stream.
//!
//! Feed bytes with [`Splitter::feed`], end with [`Splitter::finish`]; each
//! call reports [`Event`]s to a callback. A structure that breaks the
//! limits or ends in the middle is an [`MimeError`]: the mail is refused
//! whole (the caller keeps it where it was), never cut into half parts.

use mail_parser::{MessageParser, MimeHeaders};

/// What the splitter allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Multipart levels inside one another, at most.
    pub max_depth: usize,
    /// Leaf parts in one mail, at most.
    pub max_parts: usize,
    /// Bytes of one entity's header block, at most.
    pub max_header: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 16,
            max_parts: 1000,
            max_header: 64 * 1024,
        }
    }
}

/// Why a mail cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MimeError(pub String);

/// The headers of the mail itself, as promoted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub from: Option<String>,
    pub to: Option<String>,
    pub cc: Option<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    /// RFC 3339.
    pub date: Option<String>,
}

/// One leaf part as its headers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// `type/subtype`, lowercase (`text/plain` when not said).
    pub content_type: String,
    /// The file name (`Content-Disposition: filename`, else `Content-Type:
    /// name`), as given (decoded); `None` for an inline text.
    pub file_name: Option<String>,
    /// `Content-Disposition: attachment`.
    pub attachment: bool,
}

/// What the splitter found, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The mail's own headers (once, first).
    Envelope(Envelope),
    /// A leaf part begins.
    Part(PartInfo),
    /// Decoded bytes of the current part.
    Data(&'a [u8]),
    /// The current part is whole.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Base64,
    QuotedPrintable,
}

/// Where the splitter is.
enum State {
    /// Reading an entity's header block; `top`: the mail's own;
    /// `scanned`: how far the block has been searched for its end.
    Headers { block: Vec<u8>, top: bool, scanned: usize },
    /// In a leaf's body.
    Leaf(Decoder),
    /// Before the first boundary of the innermost multipart (skipped).
    Preamble,
    /// After the closing boundary of the innermost multipart (skipped).
    Epilogue,
    /// Failed or finished: nothing more is taken.
    Done,
}

pub struct Splitter {
    limits: Limits,
    state: State,
    /// The boundaries of the multiparts we are inside, outermost first.
    boundaries: Vec<Vec<u8>>,
    /// Bytes not yet decided (they may begin a boundary line).
    held: Vec<u8>,
    parts: usize,
    failed: Option<MimeError>,
}

impl Splitter {
    pub fn new(limits: Limits) -> Splitter {
        Splitter {
            limits,
            state: State::Headers {
                block: Vec::new(),
                top: true,
                scanned: 0,
            },
            boundaries: Vec::new(),
            held: Vec::new(),
            parts: 0,
            failed: None,
        }
    }

    /// Take `input`; report what it completes.
    pub fn feed(&mut self, input: &[u8], out: &mut dyn FnMut(Event<'_>)) -> Result<(), MimeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.held.extend_from_slice(input);
        let r = self.run(out, false);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.state = State::Done;
        }
        r
    }

    /// The mail ended: report the rest, or say what was left open.
    pub fn finish(&mut self, out: &mut dyn FnMut(Event<'_>)) -> Result<(), MimeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.run(out, true);
        self.state = State::Done;
        r
    }

    fn run(&mut self, out: &mut dyn FnMut(Event<'_>), eof: bool) -> Result<(), MimeError> {
        loop {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Headers { block, top, scanned } => {
                    let top = *top;
                    block.append(&mut self.held);
                    let Some((end, body)) = header_end(block, *scanned) else {
                        *scanned = block.len().saturating_sub(2);
                        if block.len() > self.limits.max_header {
                            return Err(MimeError(format!(
                                "a header block is longer than {} bytes",
                                self.limits.max_header
                            )));
                        }
                        if eof {
                            return Err(MimeError(if top {
                                "the mail ends inside its headers".into()
                            } else {
                                "the mail ends inside a part's headers".into()
                            }));
                        }
                        return Ok(());
                    };
                    self.held = block.split_off(body);
                    block.truncate(end);
                    let whole = std::mem::take(block);
                    if whole.len() > self.limits.max_header {
                        return Err(MimeError(format!(
                            "a header block is longer than {} bytes",
                            self.limits.max_header
                        )));
                    }
                    self.entity(&whole, top, out)?;
                }
                State::Preamble | State::Epilogue => {
                    let skip = matches!(self.state, State::Preamble);
                    match self.next_delimiter(eof)? {
                        Scan::Found { at, after, closing } => {
                            let _ = at;
                            self.held.drain(..after);
                            self.delimiter(closing, skip)?;
                        }
                        Scan::Undecided(keep_from) => {
                            self.held.drain(..keep_from);
                            if eof {
                                return self.end_of_input();
                            }
                            return Ok(());
                        }
                    }
                }
                State::Leaf(_) => match self.next_delimiter(eof)? {
                    Scan::Found { at, after, closing } => {
                        self.leaf_data(at, out)?;
                        self.held.drain(..after);
                        self.end_leaf(out)?;
                        self.delimiter(closing, false)?;
                    }
                    Scan::Undecided(keep_from) => {
                        self.leaf_data(keep_from, out)?;
                        self.held.drain(..keep_from);
                        if eof {
                            if !self.boundaries.is_empty() {
                                return Err(MimeError(
                                    "the mail ends inside a multipart, before its closing boundary".into(),
                                ));
                            }
                            let rest = std::mem::take(&mut self.held);
                            self.leaf_bytes(&rest, out)?;
                            self.end_leaf(out)?;
                            self.state = State::Done;
                        }
                        return Ok(());
                    }
                },
            }
        }
    }

    fn end_of_input(&mut self) -> Result<(), MimeError> {
        match self.state {
            // A missing epilogue is normal; a multipart never closed is not.
            State::Epilogue if self.boundaries.is_empty() => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(MimeError(
                "the mail ends inside a multipart, before its closing boundary".into(),
            )),
        }
    }

    /// A delimiter line was read: `closing` (`--b--`) ends the innermost
    /// multipart, otherwise a new entity begins.
    fn delimiter(&mut self, closing: bool, _in_preamble: bool) -> Result<(), MimeError> {
        if closing {
            self.boundaries.pop();
            self.state = State::Epilogue;
        } else {
            self.state = State::Headers {
                block: Vec::new(),
                top: false,
                scanned: 0,
            };
        }
        Ok(())
    }

    /// An entity's headers were read: a leaf begins, or a multipart.
    fn entity(&mut self, block: &[u8], top: bool, out: &mut dyn FnMut(Event<'_>)) -> Result<(), MimeError> {
        // mail-parser reads a header block as a message without a body.
        let mut text = block.to_vec();
        text.extend_from_slice(b"\r\n\r\n");
        let parsed = MessageParser::default().parse_headers(&text[..]);
        let ct = parsed.as_ref().and_then(|m| m.content_type());
        let (ctype, subtype) = match ct {
            Some(c) => (
                c.ctype().to_ascii_lowercase(),
                c.subtype().unwrap_or("plain").to_ascii_lowercase(),
            ),
            None => ("text".to_string(), "plain".to_string()),
        };
        if top {
            out(Event::Envelope(envelope_of(parsed.as_ref())));
        }
        if ctype == "multipart" {
            let boundary = ct
                .and_then(|c| c.attribute("boundary"))
                .map(|b| b.as_bytes().to_vec())
                .filter(|b| !b.is_empty() && b.len() <= 70)
                .ok_or_else(|| MimeError("a multipart has no usable boundary (1 to 70 characters)".into()))?;
            if self.boundaries.len() >= self.limits.max_depth {
                return Err(MimeError(format!(
                    "multiparts nest deeper than {} levels",
                    self.limits.max_depth
                )));
            }
            self.boundaries.push(boundary);
            // A boundary at the very start of the body has no line break
            // before it: give it one.
            self.held.insert(0, b'\n');
            self.state = State::Preamble;
            return Ok(());
        }
        self.parts += 1;
        if self.parts > self.limits.max_parts {
            return Err(MimeError(format!(
                "the mail has more than {} parts",
                self.limits.max_parts
            )));
        }
        let encoding = match parsed
            .as_ref()
            .and_then(|m| m.header_raw("Content-Transfer-Encoding"))
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("base64") => Encoding::Base64,
            Some("quoted-printable") => Encoding::QuotedPrintable,
            _ => Encoding::Identity,
        };
        let disposition = parsed.as_ref().and_then(|m| m.content_disposition());
        let file_name = disposition
            .and_then(|d| d.attribute("filename"))
            .or_else(|| ct.and_then(|c| c.attribute("name")))
            .map(str::to_string);
        out(Event::Part(PartInfo {
            content_type: format!("{ctype}/{subtype}"),
            attachment: disposition.is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment")),
            file_name,
        }));
        // A leaf's body starts right after the empty line; the line break
        // before a boundary belongs to the boundary, so a leaf directly
        // followed by one needs the same help as a multipart's body.
        if !self.boundaries.is_empty() {
            self.held.insert(0, b'\n');
            self.state = State::Leaf(Decoder::new(encoding, true));
        } else {
            self.state = State::Leaf(Decoder::new(encoding, false));
        }
        Ok(())
    }

    /// Hand on `held[..upto]` of the current leaf, decoded.
    fn leaf_data(&mut self, upto: usize, out: &mut dyn FnMut(Event<'_>)) -> Result<(), MimeError> {
        let bytes = self.held[..upto].to_vec();
        self.leaf_bytes(&bytes, out)
    }

    fn leaf_bytes(&mut self, bytes: &[u8], out: &mut dyn FnMut(Event<'_>)) -> Result<(), MimeError> {
        if let State::Leaf(d) = &mut self.state {
            let decoded = d.decode(bytes);
            if !decoded.is_empty() {
                out(Event::Data(&decoded));
            }
        }
        Ok(())
    }

    fn end_leaf(&mut self, out: &mut dyn FnMut(Event<'_>)) -> Result<(), MimeError> {
        if let State::Leaf(d) = &mut self.state {
            let rest = d.finish();
            if !rest.is_empty() {
                out(Event::Data(&rest));
            }
            out(Event::End);
        }
        Ok(())
    }

    /// Find the next delimiter line of any enclosing multipart in `held`.
    fn next_delimiter(&self, eof: bool) -> Result<Scan, MimeError> {
        if self.boundaries.is_empty() {
            // Not inside a multipart: everything is the leaf's (or the
            // epilogue's).
            return Ok(Scan::Undecided(self.held.len()));
        }
        let h = &self.held;
        let mut from = 0;
        while let Some(i) = find(&h[from..], b"\n--").map(|i| i + from) {
            let line = i + 3;
            let mut undecided = false;
            // Innermost first; an outer one closes the inner ones too.
            for (level, b) in self.boundaries.iter().enumerate().rev() {
                let end = line + b.len();
                if h.len() < end {
                    if h[line..].iter().zip(b.iter()).all(|(x, y)| x == y) {
                        undecided = true;
                    }
                    continue;
                }
                if &h[line..end] != b.as_slice() {
                    continue;
                }
                // `--b--` or `--b`, then optional padding, then a line end.
                let mut k = end;
                if !eof && h.len() < end + 2 && h[end..].iter().all(|&c| c == b'-') {
                    // `--b` or `--b-`: whether it closes is not known yet.
                    undecided = true;
                    continue;
                }
                let closing = h.get(k..k + 2) == Some(b"--");
                if closing {
                    k += 2;
                }
                while k < h.len() && (h[k] == b' ' || h[k] == b'\t') {
                    k += 1;
                }
                // A closing delimiter leaves its line break: it is also the
                // one before the outer multipart's next delimiter.
                let after = if h.get(k) == Some(&b'\n') {
                    Some(if closing { k } else { k + 1 })
                } else if h.get(k..k + 2) == Some(b"\r\n") {
                    Some(if closing { k } else { k + 2 })
                } else if k >= h.len() || (h[k] == b'\r' && k + 1 == h.len()) {
                    if eof {
                        Some(h.len())
                    } else {
                        undecided = true;
                        None
                    }
                } else {
                    None
                };
                let Some(after) = after else { continue };
                if level + 1 != self.boundaries.len() {
                    return Err(MimeError(
                        "a multipart ends without its closing boundary (an outer boundary came first)".into(),
                    ));
                }
                // The line break before the dashes belongs to the delimiter.
                let at = if i > 0 && h[i - 1] == b'\r' { i - 1 } else { i };
                return Ok(Scan::Found { at, after, closing });
            }
            if undecided {
                let keep = if i > 0 && h[i - 1] == b'\r' { i - 1 } else { i };
                return Ok(Scan::Undecided(keep));
            }
            from = i + 1;
        }
        // No delimiter: keep what could begin one (a final `\r`, `\n`,
        // `\n-`, `\r\n-`).
        let tail = h.len().saturating_sub(3);
        let keep = (tail..h.len())
            .find(|&k| h[k] == b'\r' || h[k] == b'\n')
            .unwrap_or(h.len());
        Ok(Scan::Undecided(keep))
    }
}

enum Scan {
    /// A delimiter line from `at` (its line break) to `after`.
    Found { at: usize, after: usize, closing: bool },
    /// No delimiter before this offset; what follows may begin one.
    Undecided(usize),
}

/// Where the header block at the start of `buf` ends, searching from
/// `from`: (the block's length, where the body starts). The block ends at
/// its first empty line (the very first line, for an entity with no
/// headers).
fn header_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    if buf.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    if buf.starts_with(b"\n") {
        return Some((0, 1));
    }
    let mut i = from;
    while let Some(k) = buf.get(i..).and_then(|rest| rest.iter().position(|&c| c == b'\n')) {
        let nl = i + k;
        match &buf[nl + 1..] {
            [b'\n', ..] => return Some((nl + 1, nl + 2)),
            [b'\r', b'\n', ..] => return Some((nl + 1, nl + 3)),
            _ => i = nl + 1,
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn envelope_of(m: Option<&mail_parser::Message<'_>>) -> Envelope {
    let Some(m) = m else { return Envelope::default() };
    let list = |a: Option<&mail_parser::Address<'_>>| {
        a.map(|a| a.iter().filter_map(|x| x.address()).collect::<Vec<_>>().join(", "))
            .filter(|s| !s.is_empty())
    };
    Envelope {
        from: list(m.from()),
        to: list(m.to()),
        cc: list(m.cc()),
        subject: m.subject().map(str::to_string),
        message_id: m.message_id().map(str::to_string),
        date: m.date().map(|d| d.to_rfc3339()),
    }
}

/// A transfer decoding that streams: what a piece ends with that cannot be
/// decoded yet (a base64 quantum's first characters, a `=` and what
/// follows it) waits for the next piece.
struct Decoder {
    encoding: Encoding,
    pending: Vec<u8>,
    /// The body began after a line break the splitter added: drop it.
    skip_newline: bool,
}

impl Decoder {
    fn new(encoding: Encoding, skip_newline: bool) -> Decoder {
        Decoder {
            encoding,
            pending: Vec::new(),
            skip_newline,
        }
    }

    fn decode(&mut self, mut input: &[u8]) -> Vec<u8> {
        if self.skip_newline && !input.is_empty() {
            input = &input[1..];
            self.skip_newline = false;
        }
        match self.encoding {
            Encoding::Identity => input.to_vec(),
            Encoding::Base64 => {
                // Kept as values (padding 64), whatever is not base64 dropped.
                self.pending.extend(
                    input
                        .iter()
                        .map(|&c| BASE64[usize::from(c)])
                        .filter(|&v| v != NOT_BASE64),
                );
                let whole = self.pending.len() / 4 * 4;
                let out = base64_quanta(&self.pending[..whole]);
                self.pending.drain(..whole);
                out
            }
            Encoding::QuotedPrintable => {
                self.pending.extend_from_slice(input);
                let (out, used) = quoted_printable(&self.pending, false);
                self.pending.drain(..used);
                out
            }
        }
    }

    fn finish(&mut self) -> Vec<u8> {
        match self.encoding {
            Encoding::Identity => Vec::new(),
            Encoding::Base64 => {
                let mut rest = std::mem::take(&mut self.pending);
                while !rest.is_empty() && !rest.len().is_multiple_of(4) {
                    rest.push(PAD);
                }
                base64_quanta(&rest)
            }
            Encoding::QuotedPrintable => {
                let rest = std::mem::take(&mut self.pending);
                quoted_printable(&rest, true).0
            }
        }
    }
}

/// Not a base64 character (in [`BASE64`]).
const NOT_BASE64: u8 = 0xFF;
/// `=`'s value in [`BASE64`].
const PAD: u8 = 64;

/// Each byte's base64 value: 0 to 63, [`PAD`] for `=`, else [`NOT_BASE64`].
const BASE64: [u8; 256] = {
    let mut table = [NOT_BASE64; 256];
    let mut i = 0;
    while i < 26 {
        table[b'A' as usize + i] = i as u8;
        table[b'a' as usize + i] = 26 + i as u8;
        i += 1;
    }
    let mut d = 0;
    while d < 10 {
        table[b'0' as usize + d] = 52 + d as u8;
        d += 1;
    }
    table[b'+' as usize] = 62;
    table[b'/' as usize] = 63;
    table[b'=' as usize] = PAD;
    table
};

/// Whole base64 quanta, as values ([`BASE64`]; a multiple of 4, padding
/// allowed; a quantum with fewer than two data values gives nothing,
/// leniently, as mail readers do).
fn base64_quanta(values: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 4 * 3);
    for q in values.chunks(4) {
        if let [a, b, c, d] = *q
            && (a | b | c | d) < PAD
        {
            // The common case: four data values, three bytes.
            let n = u32::from(a) << 18 | u32::from(b) << 12 | u32::from(c) << 6 | u32::from(d);
            out.extend_from_slice(&n.to_be_bytes()[1..]);
            continue;
        }
        let data = q.iter().take_while(|&&x| x != PAD).count();
        if data < 2 {
            continue;
        }
        let n = (0..4).fold(0u32, |acc, k| (acc << 6) | if k < data { u32::from(q[k]) } else { 0 });
        out.extend_from_slice(&n.to_be_bytes()[1..data]);
    }
    out
}

/// Decode quoted-printable: (bytes, input used). Unless `last`, an `=`
/// near the end waits for what follows it.
fn quoted_printable(input: &[u8], last: bool) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if c != b'=' {
            out.push(c);
            i += 1;
            continue;
        }
        let rest = &input[i + 1..];
        if rest.len() < 2 && !last {
            break;
        }
        if rest.starts_with(b"\r\n") {
            i += 3;
        } else if rest.starts_with(b"\n") {
            i += 2;
        } else if rest.len() >= 2 && rest[0].is_ascii_hexdigit() && rest[1].is_ascii_hexdigit() {
            let hex = |x: u8| (x as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(rest[0]) << 4 | hex(rest[1]));
            i += 3;
        } else {
            // Not an escape: kept as written.
            out.push(c);
            i += 1;
        }
    }
    (out, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a split gives, owned: envelope, and each part with its bytes.
    #[derive(Debug, Default, PartialEq)]
    struct Split {
        envelope: Option<Envelope>,
        parts: Vec<(PartInfo, Vec<u8>)>,
        ended: usize,
    }

    fn split_in_pieces(mail: &[u8], piece: usize, limits: Limits) -> Result<Split, MimeError> {
        let mut s = Splitter::new(limits);
        let mut got = Split::default();
        let mut on = |e: Event<'_>| match e {
            Event::Envelope(env) => got.envelope = Some(env),
            Event::Part(info) => got.parts.push((info, Vec::new())),
            Event::Data(d) => got.parts.last_mut().expect("data inside a part").1.extend_from_slice(d),
            Event::End => got.ended += 1,
        };
        for chunk in mail.chunks(piece.max(1)) {
            s.feed(chunk, &mut on)?;
        }
        s.finish(&mut on)?;
        Ok(got)
    }

    fn split(mail: &[u8]) -> Split {
        let whole = split_in_pieces(mail, mail.len(), Limits::default()).expect("it splits");
        // Fed a few bytes at a time it splits the same.
        for piece in [1, 2, 3, 5, 7, 64] {
            let again = split_in_pieces(mail, piece, Limits::default()).expect("it splits in pieces");
            assert_eq!(again, whole, "fed {piece} bytes at a time");
        }
        whole
    }

    const MIXED: &[u8] = b"From: Ann <ann@example.com>\r\n\
To: ops@example.com, Bob <bob@example.com>\r\n\
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\
Message-ID: <m1@example.com>\r\n\
Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
\r\n\
This is the preamble.\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=inner\r\n\
\r\n\
--inner\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Hello =C3=A9t=C3=A9, a long line that is soft=\r\n\
 broken.\r\n\
--inner\r\n\
Content-Type: text/html\r\n\
\r\n\
<p>Hello</p>\r\n\
--inner--\r\n\
--outer\r\n\
Content-Type: application/octet-stream; name=\"r.bin\"\r\n\
Content-Disposition: attachment; filename=\"report.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
AAECAwQFBgcICQoL\r\n\
DA0ODw==\r\n\
--outer\r\n\
\r\n\
no headers: plain text\r\n\
--outer--\r\n\
epilogue\r\n";

    #[test]
    fn a_mixed_mail_splits_into_decoded_leaves_whatever_the_pieces() {
        let got = split(MIXED);
        let env = got.envelope.expect("the envelope");
        assert_eq!(env.from.as_deref(), Some("ann@example.com"));
        assert_eq!(env.to.as_deref(), Some("ops@example.com, bob@example.com"));
        assert_eq!(env.subject.as_deref(), Some("Grüße"));
        assert_eq!(env.message_id.as_deref(), Some("m1@example.com"));
        assert_eq!(env.date.as_deref(), Some("2026-11-27T10:00:00Z"));
        let summary: Vec<(&str, Option<&str>, bool, &[u8])> = got
            .parts
            .iter()
            .map(|(i, b)| {
                (
                    i.content_type.as_str(),
                    i.file_name.as_deref(),
                    i.attachment,
                    b.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "text/plain",
                    None,
                    false,
                    "Hello été, a long line that is softbroken.".as_bytes()
                ),
                ("text/html", None, false, b"<p>Hello</p>".as_slice()),
                (
                    "application/octet-stream",
                    Some("report.bin"),
                    true,
                    &(0u8..16).collect::<Vec<_>>()[..]
                ),
                ("text/plain", None, false, b"no headers: plain text".as_slice()),
            ]
        );
        assert_eq!(got.ended, 4);
    }

    #[test]
    fn a_single_part_mail_is_one_leaf_with_lf_line_ends_too() {
        let got = split(b"Subject: hi\nContent-Type: text/plain\n\nline one\n--not a boundary\nend");
        assert_eq!(got.parts.len(), 1);
        assert_eq!(got.parts[0].1, b"line one\n--not a boundary\nend");
        let got = split(b"Subject: x\r\n\r\n");
        assert_eq!((got.parts.len(), got.parts[0].1.len()), (1, 0));
    }

    #[test]
    fn deep_nesting_is_refused_quickly_and_cheaply() {
        let mut mail = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n".to_vec();
        for level in 1..10_000 {
            mail.extend_from_slice(
                format!(
                    "--b{}\r\nContent-Type: multipart/mixed; boundary=b{level}\r\n\r\n",
                    level - 1
                )
                .as_bytes(),
            );
        }
        let e = split_in_pieces(&mail, 4096, Limits::default()).unwrap_err();
        assert!(e.0.contains("deeper than 16"), "{}", e.0);
    }

    #[test]
    fn broken_structures_are_refused_not_cut_into_half_parts() {
        for (mail, says) in [
            (
                &b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nunfinished"[..],
                "before its closing boundary",
            ),
            (b"Content-Type: multipart/mixed\r\n\r\n--b\r\n", "no usable boundary"),
            (b"Subject: never ends", "inside its headers"),
            (
                b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\n\r\nx\r\n--o--\r\n",
                "without its closing boundary",
            ),
        ] {
            let e = split_in_pieces(mail, 3, Limits::default()).unwrap_err();
            assert!(e.0.contains(says), "{:?}: {}", String::from_utf8_lossy(mail), e.0);
        }
        let long = format!("Subject: {}\r\n\r\nbody", "x".repeat(70_000));
        let e = split_in_pieces(long.as_bytes(), 1000, Limits::default()).unwrap_err();
        assert!(e.0.contains("header block is longer"), "{}", e.0);
        let mut many = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
        for _ in 0..1001 {
            many.extend_from_slice(b"--b\r\n\r\nx\r\n");
        }
        many.extend_from_slice(b"--b--\r\n");
        let e = split_in_pieces(&many, 4096, Limits::default()).unwrap_err();
        assert!(e.0.contains("more than 1000 parts"), "{}", e.0);
    }

    #[test]
    fn a_big_attachment_streams_through_in_small_pieces() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut b64 = String::new();
        for chunk in data.chunks(57) {
            b64.push_str(&base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                chunk,
            ));
            b64.push_str("\r\n");
        }
        let mail = format!(
            "Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=big.bin\r\n\r\n{b64}--zz--\r\n"
        );
        let mut s = Splitter::new(Limits::default());
        let (mut total, mut largest, mut ok) = (0usize, 0usize, true);
        let mut offset = 0usize;
        let mut on = |e: Event<'_>| {
            if let Event::Data(d) = e {
                ok &= d == &data[offset..offset + d.len()];
                offset += d.len();
                total += d.len();
                largest = largest.max(d.len());
            }
        };
        for chunk in mail.as_bytes().chunks(8192) {
            s.feed(chunk, &mut on).unwrap();
            assert!(s.held.len() < 8192 + 80, "it holds {} bytes", s.held.len());
        }
        s.finish(&mut on).unwrap();
        assert!(ok && total == data.len(), "{total}");
        assert!(largest <= 8192, "{largest}");
    }
}
