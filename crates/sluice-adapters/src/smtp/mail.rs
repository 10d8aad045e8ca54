//! A mail as it goes out: its addresses checked, its headers encoded
//! (mail-builder: RFC 2047 words, folding), its body and attachments
//! written as MIME parts in base64 as they are read, never held whole.
//!
//! Every line written starts with a header name, folding white space,
//! `--` (a boundary) or a base64 character, and the body ends with CRLF:
//! no line starts with `.`, so the DATA stream needs no dot-stuffing and
//! its end (`CRLF . CRLF`) cannot occur inside it.

use base64::Engine;
use mail_builder::headers::Header;
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::text::Text;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Body;

/// Recipients of one mail (to, cc and bcc together), at most.
pub const MAX_RECIPIENTS: usize = 1000;
/// Attachments of one mail (the message's parts after the body), at most.
pub const MAX_ATTACHMENTS: usize = 1000;
/// Bytes of one address, at most (RFC 5321's path limit).
const MAX_ADDRESS: usize = 254;
/// Bytes of a header value (subject, display names, file names), at most.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;
/// Bytes of body read and encoded at a time: 1,024 lines of base64.
const CHUNK: usize = 57 * 1024;

/// One mailbox: an address, and the name shown with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: String,
}

/// Why a rendered header value or address cannot go out: the message's
/// values are at fault (a property with a line break, an address that is
/// not one), so it is not retried as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// A header value as it may go out: no control character at all (a CR or
/// LF from a context property would end the header and start another:
/// header injection), at most [`MAX_HEADER_VALUE`] bytes.
pub fn header_value(key: &str, value: &str) -> Result<(), Refused> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(Refused(format!(
            "{key} {:?} has a control character ({}); a mail header cannot carry it (a line break there would \
             add headers of its own)",
            shorten(value),
            c.escape_default()
        )));
    }
    if value.len() > MAX_HEADER_VALUE {
        return Err(Refused(format!(
            "{key} is {} bytes, more than a mail header takes here ({MAX_HEADER_VALUE})",
            value.len()
        )));
    }
    Ok(())
}

/// `value` cut for an error message.
fn shorten(value: &str) -> String {
    match value.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &value[..i]),
        None => value.to_string(),
    }
}

/// A list of mailboxes as a config or a context property gives it:
/// `a@example.com, Name <b@example.com>, "Last, First" <c@example.com>`.
/// `key` names the setting in errors.
pub fn mailboxes(key: &str, list: &str) -> Result<Vec<Mailbox>, Refused> {
    header_value(key, list)?;
    let mut out = Vec::new();
    for item in split_list(list) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        out.push(mailbox(key, item)?);
    }
    Ok(out)
}

/// The items of an address list: split at commas outside quotes and `<>`.
fn split_list(list: &str) -> Vec<&str> {
    let (mut items, mut start, mut quoted, mut angle) = (Vec::new(), 0, false, false);
    let mut escaped = false;
    for (i, c) in list.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    items
}

/// `addr@host`, or `Name <addr@host>` (the name may be quoted).
fn mailbox(key: &str, item: &str) -> Result<Mailbox, Refused> {
    let Some(open) = item.rfind('<') else {
        return Ok(Mailbox {
            name: None,
            address: address(key, item)?,
        });
    };
    let Some(inner) = item[open + 1..].strip_suffix('>') else {
        return Err(Refused(format!("{key}: {item:?} is not `Name <address>`")));
    };
    let name = item[..open].trim();
    let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => name.to_string(),
    };
    Ok(Mailbox {
        name: (!name.is_empty()).then_some(name),
        address: address(key, inner.trim())?,
    })
}

/// An address as SMTP's `MAIL FROM` / `RCPT TO` carry it: `local@domain`,
/// printable ASCII or UTF-8 without spaces, brackets, quotes or commas.
fn address(key: &str, a: &str) -> Result<String, Refused> {
    let bad = |why: &str| Err(Refused(format!("{key}: {:?} is not a mail address: {why}", shorten(a))));
    if a.is_empty() || a.len() > MAX_ADDRESS {
        return bad("empty, or longer than 254 bytes");
    }
    if !a.is_ascii() {
        // Only with SMTPUTF8, which this port does not ask for.
        return bad("it is not ASCII (international addresses need SMTPUTF8)");
    }
    if a.chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\".contains(c))
    {
        return bad("it has a space, a control character or one of <>()[],;:\"\\");
    }
    match a.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && local.len() <= 64 && !domain.is_empty() => {
            if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") || domain.contains('@') {
                return bad("its domain is not a host name");
            }
            Ok(a.to_string())
        }
        _ => bad("it needs a local part and a domain (local@domain)"),
    }
}

/// What a mail says in its headers.
pub struct Headers<'a> {
    pub from: &'a Mailbox,
    pub to: &'a [Mailbox],
    pub cc: &'a [Mailbox],
    pub subject: &'a str,
    /// Without the angle brackets.
    pub message_id: &'a str,
    /// Seconds since the epoch.
    pub date: i64,
}

/// How the body goes: inline (its content type) or as an attachment.
pub struct Layout<'a> {
    /// The body's content type when it is the mail's text.
    pub content_type: &'a str,
    /// `Some(name)`: the body is an attachment of this name, and `text`
    /// (if any) is the mail's text.
    pub attach_as: Option<&'a str>,
    pub text: Option<&'a str>,
}

/// An attachment to come: its name and its unread body.
pub struct Attachment {
    pub name: String,
    pub body: Body,
}

/// Write the whole mail to `out`: headers, then the parts. `boundary` must
/// not occur in any part (the parts are base64: a boundary with `=` and
/// `_` cannot).
pub async fn write_mail<W: AsyncWrite + Unpin>(
    out: &mut W,
    headers: &Headers<'_>,
    layout: &Layout<'_>,
    body: Body,
    attachments: Vec<Attachment>,
    boundary: &str,
) -> std::io::Result<u64> {
    let mut head = Vec::with_capacity(1024);
    write_headers(&mut head, headers);
    let mut parts: Vec<(Vec<u8>, Body)> = Vec::new();
    match layout.attach_as {
        None => parts.push((inline_part_headers(layout.content_type), body)),
        Some(name) => {
            if let Some(text) = layout.text {
                let text: Body = Box::new(std::io::Cursor::new(text.as_bytes().to_vec()));
                parts.push((inline_part_headers("text/plain; charset=utf-8"), text));
            }
            parts.push((attachment_headers(name), body));
        }
    }
    for a in attachments {
        parts.push((attachment_headers(&a.name), a.body));
    }
    let mut written = 0u64;
    if parts.len() == 1 {
        // One part: it is the mail's own content.
        let Some((part_head, body)) = parts.pop() else {
            return Ok(0);
        };
        head.extend_from_slice(&part_head);
        head.extend_from_slice(b"\r\n");
        out.write_all(&head).await?;
        written += head.len() as u64;
        written += write_base64(out, body).await?;
        return Ok(written);
    }
    head.extend_from_slice(format!("Content-Type: multipart/mixed;\r\n boundary=\"{boundary}\"\r\n\r\n").as_bytes());
    out.write_all(&head).await?;
    written += head.len() as u64;
    for (part_head, body) in parts {
        let mut h = format!("--{boundary}\r\n").into_bytes();
        h.extend_from_slice(&part_head);
        h.extend_from_slice(b"\r\n");
        out.write_all(&h).await?;
        written += h.len() as u64;
        written += write_base64(out, body).await?;
    }
    let end = format!("--{boundary}--\r\n");
    out.write_all(end.as_bytes()).await?;
    Ok(written + end.len() as u64)
}

fn write_headers(head: &mut Vec<u8>, h: &Headers<'_>) {
    let mut header = |name: &str, value: &dyn Fn(&mut Vec<u8>, usize)| {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        value(head, name.len() + 2);
    };
    header("Date", &|o, c| Date::new(h.date).write_header(o, c));
    header("From", &|o, c| mail_address(h.from).write_header(o, c));
    if !h.to.is_empty() {
        header("To", &|o, c| address_list(h.to).write_header(o, c));
    }
    if !h.cc.is_empty() {
        header("Cc", &|o, c| address_list(h.cc).write_header(o, c));
    }
    header("Subject", &|o, c| Text::new(h.subject).write_header(o, c));
    header("Message-ID", &|o, c| MessageId::new(h.message_id).write_header(o, c));
    head.extend_from_slice(b"MIME-Version: 1.0\r\n");
}

fn mail_address(m: &Mailbox) -> Address<'_> {
    Address::new_address(m.name.as_deref(), m.address.as_str())
}

fn address_list(list: &[Mailbox]) -> Address<'_> {
    Address::new_list(list.iter().map(mail_address).collect())
}

fn inline_part_headers(content_type: &str) -> Vec<u8> {
    format!("Content-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n").into_bytes()
}

fn attachment_headers(name: &str) -> Vec<u8> {
    let name = attachment_name(name);
    format!(
        "Content-Type: {};\r\n{}\r\nContent-Disposition: attachment;\r\n{}\r\n\
         Content-Transfer-Encoding: base64\r\n",
        content_type_of(&name),
        file_name_parameter("name", &name),
        file_name_parameter("filename", &name),
    )
    .into_bytes()
}

/// The last path segment of `name`, without control characters; `file`
/// if nothing is left.
pub fn attachment_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let clean: String = last.chars().filter(|c| !c.is_control()).take(200).collect();
    match clean.trim() {
        "" | "." | ".." => "file".to_string(),
        kept => kept.to_string(),
    }
}

/// The parameter `key` (`name`, `filename`) set to `name`, as header lines
/// (each starting with a space, joined by `;` CRLF): ` key="name"` for a
/// plain ASCII name, else RFC 2231's percent-encoded UTF-8 in continuations
/// of at most 60 characters (` key*0*=utf-8''...; key*1*=...`), so no line
/// comes near SMTP's 998.
fn file_name_parameter(key: &str, name: &str) -> String {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ');
    if plain {
        return format!(" {key}=\"{name}\"");
    }
    // A character's bytes stay in one piece (some readers decode each
    // piece on its own).
    let mut pieces: Vec<String> = vec!["utf-8''".to_string()];
    for c in name.chars() {
        let mut one = String::new();
        let mut buf = [0u8; 4];
        for &b in c.encode_utf8(&mut buf).as_bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                one.push(b as char);
            } else {
                one.push_str(&format!("%{b:02X}"));
            }
        }
        match pieces.last_mut() {
            Some(last) if last.len() + one.len() <= 60 => last.push_str(&one),
            _ => pieces.push(one),
        }
    }
    pieces
        .iter()
        .enumerate()
        .map(|(i, p)| format!(" {key}*{i}*={p}"))
        .collect::<Vec<_>>()
        .join(";\r\n")
}

/// A content type for an attachment, by its extension.
fn content_type_of(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "csv" => "text/csv",
        "xml" => "application/xml",
        "json" => "application/json",
        "html" | "htm" => "text/html",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "tif" | "tiff" => "image/tiff",
        _ => "application/octet-stream",
    }
}

/// Bytes of a body's content type, at most (it goes on one header line).
const MAX_CONTENT_TYPE: usize = 256;

/// The content type a body goes out with: `value` checked (`type/subtype`
/// and parameters, no control characters, at most 256 bytes); a
/// `multipart/*` or `message/*` one (which may not be base64-encoded, RFC
/// 2045) becomes `application/octet-stream`, the bytes unchanged.
pub fn body_content_type(key: &str, value: &str) -> Result<String, Refused> {
    check_content_type(key, value)?;
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence.starts_with("multipart/") || essence.starts_with("message/") {
        return Ok("application/octet-stream".into());
    }
    Ok(value.to_string())
}

/// A content type as a header may carry it: `type/subtype` and
/// parameters, no control characters.
pub fn check_content_type(key: &str, value: &str) -> Result<(), Refused> {
    header_value(key, value)?;
    if value.len() > MAX_CONTENT_TYPE {
        return Err(Refused(format!(
            "{key} is {} bytes, more than a content type takes here ({MAX_CONTENT_TYPE})",
            value.len()
        )));
    }
    let essence = value.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match essence.split_once('/') {
        Some((t, s)) if token(t) && token(s) => Ok(()),
        _ => Err(Refused(format!("{key} {value:?} is not a content type (type/subtype)"))),
    }
}

/// Copy `body` to `out` in base64, 76 characters a line, CRLF after each
/// (the last line too): bytes written.
async fn write_base64<W: AsyncWrite + Unpin>(out: &mut W, mut body: Body) -> std::io::Result<u64> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut raw = vec![0u8; CHUNK];
    let mut encoded = Vec::with_capacity(CHUNK / 57 * 78);
    let mut line = [0u8; 76];
    let mut written = 0u64;
    loop {
        let filled = fill(&mut body, &mut raw).await?;
        encoded.clear();
        for piece in raw[..filled].chunks(57) {
            let n = engine
                .encode_slice(piece, &mut line)
                .map_err(|e| std::io::Error::other(format!("base64: {e}")))?;
            encoded.extend_from_slice(&line[..n]);
            encoded.extend_from_slice(b"\r\n");
        }
        if !encoded.is_empty() {
            out.write_all(&encoded).await?;
            written += encoded.len() as u64;
        }
        if filled < raw.len() {
            return Ok(written);
        }
    }
}

/// Read until `buf` is full or the body ends: how much was read.
async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_mailboxes_are_read_and_bad_ones_refused() {
        let got = mailboxes("to", r#"a@x.org, Bea <b@y.org>, "Last, First" <c@z.org>,"#).unwrap();
        assert_eq!(
            got,
            vec![
                Mailbox {
                    name: None,
                    address: "a@x.org".into()
                },
                Mailbox {
                    name: Some("Bea".into()),
                    address: "b@y.org".into()
                },
                Mailbox {
                    name: Some("Last, First".into()),
                    address: "c@z.org".into()
                },
            ]
        );
        for bad in [
            "a@x.org\r\nBcc: victim@evil.org",
            "a@x.org\nX: y",
            "no-at-sign",
            "a b@x.org",
            "@x.org",
            "a@",
            "a@x..org",
            "Name <a@x.org",
            "a@x.org>",
            "<a@x.org>\0",
        ] {
            assert!(mailboxes("to", bad).is_err(), "{bad:?} is refused");
        }
        assert!(mailboxes("to", "").unwrap().is_empty());
    }

    #[test]
    fn a_line_break_in_a_header_value_is_refused() {
        assert!(header_value("subject", "Invoice 42").is_ok());
        let e = header_value("subject", "Invoice\r\nBcc: victim@evil.org").unwrap_err();
        assert!(e.0.contains("control character"), "{}", e.0);
        assert!(header_value("subject", &"x".repeat(MAX_HEADER_VALUE + 1)).is_err());
        assert!(check_content_type("content_type", "text/html; charset=utf-8").is_ok());
        assert!(check_content_type("content_type", "text/html\r\nX: y").is_err());
        assert!(check_content_type("content_type", "html").is_err());
        assert!(check_content_type("content_type", &format!("text/plain; x={}", "a".repeat(300))).is_err());
        assert_eq!(
            body_content_type("content_type", "multipart/form-data; boundary=x").unwrap(),
            "application/octet-stream"
        );
        assert_eq!(body_content_type("content_type", "text/html").unwrap(), "text/html");
        assert!(mailboxes("to", "zoë@x.example").is_err(), "no SMTPUTF8");
        assert!(mailboxes("to", "Zoë <z@x.example>").is_ok(), "a name may be any text");
    }

    #[test]
    fn attachment_names_lose_paths_and_non_ascii_ones_are_encoded() {
        assert_eq!(attachment_name("../../etc/passwd"), "passwd");
        assert_eq!(attachment_name("C:\\in\\a.pdf"), "a.pdf");
        assert_eq!(attachment_name(".."), "file");
        assert_eq!(attachment_name("a\r\nb.txt"), "ab.txt");
        assert_eq!(file_name_parameter("filename", "a b.pdf"), " filename=\"a b.pdf\"");
        assert_eq!(file_name_parameter("name", "café.pdf"), " name*0*=utf-8''caf%C3%A9.pdf");
        assert_eq!(file_name_parameter("name", "a\"b"), " name*0*=utf-8''a%22b");
        let long = file_name_parameter("filename", &"ü".repeat(200));
        assert!(long.split("\r\n").all(|l| l.len() < 80), "{long}");
        assert!(long.contains(" filename*1*=%C3%BC"), "{long}");
    }

    async fn written(layout: Layout<'_>, body: &[u8], attachments: Vec<(&str, &[u8])>) -> String {
        let from = Mailbox {
            name: Some("Sluice".into()),
            address: "s@x.org".into(),
        };
        let to = vec![Mailbox {
            name: None,
            address: "a@y.org".into(),
        }];
        let h = Headers {
            from: &from,
            to: &to,
            cc: &[],
            subject: "Grüße",
            message_id: "1@x.org",
            date: 0,
        };
        let atts = attachments
            .into_iter()
            .map(|(n, b)| Attachment {
                name: n.into(),
                body: Box::new(std::io::Cursor::new(b.to_vec())) as Body,
            })
            .collect();
        let mut out = Vec::new();
        let n = write_mail(
            &mut out,
            &h,
            &layout,
            Box::new(std::io::Cursor::new(body.to_vec())),
            atts,
            "=_b",
        )
        .await
        .unwrap();
        assert_eq!(n as usize, out.len());
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn one_part_or_many_every_line_is_short_and_none_starts_with_a_dot() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let plain = written(
            Layout {
                content_type: "text/plain; charset=utf-8",
                attach_as: None,
                text: None,
            },
            b".\r\n.hello",
            vec![],
        )
        .await;
        assert!(plain.contains("Subject: =?utf-8?"), "{plain}");
        assert!(plain.contains("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"));
        assert!(plain.ends_with("\r\n"));
        let many = written(
            Layout {
                content_type: "text/plain",
                attach_as: Some("in/report.csv"),
                text: Some("See attached."),
            },
            &body,
            vec![("extra.pdf", b"%PDF")],
        )
        .await;
        assert!(many.contains("boundary=\"=_b\""));
        assert!(many.contains("filename=\"report.csv\""));
        assert!(many.contains("Content-Type: application/pdf;"));
        assert!(many.ends_with("--=_b--\r\n"));
        for text in [&plain, &many] {
            for line in text.split("\r\n") {
                assert!(line.len() <= 78, "{line}");
                assert!(!line.starts_with('.'), "{line}");
            }
        }
        // The body comes back byte for byte.
        let part = many.split("--=_b").nth(2).unwrap();
        let b64: String = part.split("\r\n\r\n").nth(1).unwrap().split("\r\n").collect();
        let back = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        assert_eq!(back, body);
    }
}
