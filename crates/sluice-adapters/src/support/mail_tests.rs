//! What the POP3 and IMAP locations' tests share: a Dovecot mailbox under
//! the compliance kit, and the mails they send it.

use std::sync::Arc;

use async_trait::async_trait;

use crate::kit::dovecot::{Dovecot, DovecotOptions, PASSWORD, USER};
use crate::kit::{self, FakeAdmission, FakePublisher, SourceHarness};
use crate::{ReceiveAdapter, Source};

/// A Dovecot (its folder under /tmp: its sockets want a short path, and as
/// root a folder others may search) and how to make the location under
/// test on its `USER`'s mailbox.
pub struct Mailbox {
    _dir: tempfile::TempDir,
    pub dovecot: Dovecot,
    /// The location's URL on this server, in the clear.
    url: fn(&Dovecot) -> String,
    promotes: &'static [(&'static str, &'static str)],
    build: fn(&str) -> Box<dyn Source>,
}

impl Mailbox {
    pub fn start(
        opts: &DovecotOptions,
        url: fn(&Dovecot) -> String,
        build: fn(&str) -> Box<dyn Source>,
        promotes: &'static [(&'static str, &'static str)],
    ) -> Mailbox {
        let dir = tempfile::Builder::new().prefix("mb").tempdir_in("/tmp").unwrap();
        let dovecot = Dovecot::start(dir.path(), opts);
        Mailbox {
            _dir: dir,
            dovecot,
            url,
            promotes,
            build,
        }
    }

    pub fn url(&self) -> String {
        (self.url)(&self.dovecot)
    }
}

#[async_trait]
impl SourceHarness for Mailbox {
    fn source(&self) -> Box<dyn Source> {
        (self.build)(&self.url())
    }
    /// In base64: a mail's text ends with a line end, the kit's bodies do not.
    async fn offer(&self, body: &[u8]) {
        use base64::Engine;
        let mut raw = b"Subject: kit\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
        raw.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(body).as_bytes());
        raw.extend_from_slice(b"\r\n");
        self.dovecot.deliver(USER, &raw);
    }
    async fn acknowledged(&self) -> bool {
        self.dovecot.mailbox(USER).is_empty()
    }
    async fn kept(&self) -> bool {
        !self.dovecot.mailbox(USER).is_empty()
    }
    fn peer_retries(&self) -> bool {
        false
    }
    fn promotes(&self) -> &'static [(&'static str, &'static str)] {
        self.promotes
    }
}

/// The TOML of a location on `url`: the test password, quick polls, a
/// short timeout and no TLS unless `extra` sets them.
pub fn config_text(url: &str, extra: &str) -> String {
    let mut text = format!("url = \"{url}\"\npassword = \"{PASSWORD}\"\n{extra}\n");
    for (key, value) in [("poll_interval", "100ms"), ("timeout", "5s"), ("starttls", "off")] {
        if !extra.contains(&format!("{key} =")) {
            text.push_str(&format!("{key} = \"{value}\"\n"));
        }
    }
    text
}

/// The location `text` configures, built.
pub fn build<C: ReceiveAdapter + serde::de::DeserializeOwned>(text: &str) -> Box<dyn Source> {
    let config: C = toml::from_str(text).unwrap();
    config.build().unwrap()
}

pub async fn start(source: Box<dyn Source>, publisher: &Arc<FakePublisher>) -> kit::Running {
    kit::run_source(source, publisher, &FakeAdmission::new()).await
}

/// A plain mail.
pub fn mail(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Ann <ann@example.com>\r\nTo: ops@example.com\r\nSubject: {subject}\r\nMessage-ID: \
         <{subject}@example.com>\r\n\r\n{body}"
    )
    .into_bytes()
}

/// Two mails the splitter refuses: a multipart that never ends, and one
/// nested 10,000 levels deep.
pub fn bad_mails() -> [Vec<u8>; 2] {
    let broken = b"Subject: broken\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nno end".to_vec();
    let mut deep = String::from("Subject: deep\r\n");
    for i in 0..10_000 {
        deep.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    [broken, deep.into_bytes()]
}

/// A mail of a text and an attachment `invoice.bin` of `size` bytes (base64),
/// and the attachment.
pub fn with_attachment(size: usize) -> (Vec<u8>, Vec<u8>) {
    use base64::Engine;
    let attachment: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&attachment);
    let mut raw = String::from(
        "From: Ann <ann@example.com>\r\nTo: ops@example.com, Bob <bob@example.com>\r\nSubject: =?utf-8?q?Rechnung_M=C3=A4rz?=\r\n\
         Message-ID: <inv-1@example.com>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"xyz\"\r\n\r\n--xyz\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Invoice attached.\r\n--xyz\r\nContent-Type: application/octet-stream\r\n\
         Content-Disposition: attachment; filename=\"invoice.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    for line in encoded.as_bytes().chunks(76) {
        raw.push_str(std::str::from_utf8(line).unwrap());
        raw.push_str("\r\n");
    }
    raw.push_str("--xyz--\r\n");
    (raw.into_bytes(), attachment)
}
