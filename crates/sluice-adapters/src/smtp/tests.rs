//! The SMTP send port against a real SMTP server (aiosmtpd, see
//! `kit::smtpd`), and against scripted peers that stall or hang up where
//! no real server would.

use std::path::PathBuf;
use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::SmtpSendConfig;
use crate::kit::smtpd::{Smtpd, SmtpdOptions};
use crate::{Body, Delivered, OtherPart, Outbound, TransmitError, Transmitter};

fn config(toml_text: &str) -> SmtpSendConfig {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("{toml_text}: {e}"))
}

fn body(bytes: &[u8]) -> Body {
    Box::new(std::io::Cursor::new(bytes.to_vec()))
}

fn message(props: &[(&str, &str, &str)]) -> Outbound {
    let mut m = crate::kit::outbound("report.csv");
    for (ns, name, v) in props {
        m.context.promote(ns, name, *v);
    }
    m
}

/// A server with STARTTLS and a login, and a port config for it.
struct Tls {
    dir: tempfile::TempDir,
    server: Smtpd,
    ca: PathBuf,
}

fn tls_server(auth: bool) -> Tls {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = crate::kit::certificate(dir.path());
    let server = Smtpd::start(
        dir.path(),
        &SmtpdOptions {
            tls: Some((c.clone(), k)),
            auth: auth.then(|| ("sluice".to_string(), "s3cret-Pw".to_string())),
            ..Default::default()
        },
    );
    Tls { dir, server, ca: c }
}

impl Tls {
    /// A port sending to this server (trusting its certificate): `from`,
    /// then `extra` (TOML lines).
    fn port(&self, extra: &str) -> super::SmtpTransmitter {
        config(&format!(
            "url = \"{}\"\ntls_ca = \"{}\"\nfrom = \"ops@sluice.example\"\n{extra}",
            self.server.url(false),
            self.ca.display()
        ))
        .build()
        .unwrap()
    }
}

fn parsed(raw: &[u8]) -> mail_parser::Message<'_> {
    MessageParser::default().parse(raw).expect("the mail parses")
}

#[tokio::test]
async fn a_mail_goes_out_over_starttls_with_a_login_and_the_other_parts_attached() {
    let t = tls_server(true);
    let cfg = config(&format!(
        r#"url = "{}"
           username = "sluice"
           password = "s3cret-Pw"
           tls_ca = "{}"
           from = "Sluice Ops <ops@sluice.example>"
           to = "%property:mail.to%"
           cc = "Ann <ann@y.example>"
           bcc = "audit@z.example"
           subject = "Report %SourceFileName% für %property:t.who%""#,
        t.server.url(false),
        t.ca.display()
    ));
    let tx = cfg.build().unwrap();
    let msg = message(&[
        ("mail", "to", r#""Doe, Jo" <jo@x.example>, bo@x.example"#),
        ("t", "who", "Zoë"),
        ("mail", "content_type", "text/html; charset=utf-8"),
    ]);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let others = vec![
        OtherPart {
            name: "in/scan.pdf".into(),
            size: big.len() as u64,
            body: body(&big),
        },
        OtherPart {
            name: "notes.txt".into(),
            size: 3,
            body: body(b"abc"),
        },
    ];
    let done = tx
        .transmit_all(&msg, body(b"<p>Hello</p>"), others)
        .await
        .expect("delivered");
    let Delivered::To(to) = done else { panic!("{done:?}") };
    assert!(to.contains(&format!("Message-ID <{}@sluice.example>", msg.id)), "{to}");
    assert!(to.contains("250 2.0.0 Ok: queued as Q1"), "{to}");
    let taken = t.server.wait_for(1, Duration::from_secs(5));
    assert_eq!(taken.len(), 1);
    let m = &taken[0];
    assert!(m.tls, "sent over TLS");
    assert_eq!(m.auth.as_deref(), Some("sluice"));
    assert_eq!(m.mail_from, "ops@sluice.example");
    assert_eq!(
        m.rcpt_tos,
        vec!["jo@x.example", "bo@x.example", "ann@y.example", "audit@z.example"]
    );
    let mail = parsed(&m.content);
    assert_eq!(mail.subject(), Some("Report report.csv für Zoë"));
    assert_eq!(mail.message_id(), Some(format!("{}@sluice.example", msg.id).as_str()));
    let to: Vec<(Option<&str>, Option<&str>)> = mail.to().unwrap().iter().map(|b| (b.name(), b.address())).collect();
    assert_eq!(
        to,
        vec![(Some("Doe, Jo"), Some("jo@x.example")), (None, Some("bo@x.example"))]
    );
    assert_eq!(mail.cc().unwrap().first().unwrap().address(), Some("ann@y.example"));
    assert!(mail.bcc().is_none(), "bcc is never in the headers");
    assert!(
        !String::from_utf8_lossy(&m.content).contains("audit@"),
        "nor anywhere in the mail"
    );
    assert_eq!(mail.body_html(0).as_deref(), Some("<p>Hello</p>"), "the body, as HTML");
    let atts: Vec<(String, Vec<u8>)> = mail
        .attachments()
        .map(|a| {
            (
                a.attachment_name().unwrap_or_default().to_string(),
                a.contents().to_vec(),
            )
        })
        .collect();
    assert_eq!(
        atts,
        vec![
            ("scan.pdf".to_string(), big),
            ("notes.txt".to_string(), b"abc".to_vec())
        ]
    );
    drop(t.dir);
}

#[tokio::test]
async fn attached_body_with_text_over_implicit_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = crate::kit::certificate(dir.path());
    let server = Smtpd::start(
        dir.path(),
        &SmtpdOptions {
            tls: Some((c.clone(), k)),
            implicit: true,
            ..Default::default()
        },
    );
    let tx = config(&format!(
        r#"url = "{}"
           tls_ca = "{}"
           from = "ops@sluice.example"
           to = "a@x.example"
           attach = true
           text = "Attached: %SourceFileName%""#,
        server.url(true),
        c.display()
    ))
    .build()
    .unwrap();
    let msg = message(&[]);
    tx.transmit(&msg, body(b"id;amount\n1;10\n")).await.expect("delivered");
    let taken = server.wait_for(1, Duration::from_secs(5));
    let mail = parsed(&taken[0].content);
    assert_eq!(mail.subject(), Some("report.csv"), "the default subject");
    assert_eq!(mail.body_text(0).as_deref(), Some("Attached: report.csv"));
    let a = mail.attachments().next().expect("the body, attached");
    assert_eq!(a.attachment_name(), Some("report.csv"));
    assert_eq!(a.contents(), b"id;amount\n1;10\n");
}

#[tokio::test]
async fn each_recipient_is_sent_to_once_the_put_off_retried_and_the_refused_suspended() {
    let t = tls_server(false);
    let tx = t.port("to = \"ok@x.example, refuse-me@x.example, flaky@x.example\"");
    let mut msg = message(&[]);
    // 1: ok takes it, flaky is put off (451), refuse-me refused (550):
    // retried, for those two only.
    let e = tx.transmit(&msg, body(b"hello")).await.unwrap_err();
    assert!(e.retryable, "{}", e.message);
    assert!(e.message.contains("flaky@x.example: 451 4.3.0"), "{}", e.message);
    assert!(e.message.contains("delivered to ok@x.example"), "{}", e.message);
    // 2: flaky takes it now; refuse-me still refused, with the server's
    // words: suspended (resumable), not needing an edit.
    msg.progress = e.progress.clone();
    msg.attempt = 2;
    let e = tx.transmit(&msg, body(b"hello")).await.unwrap_err();
    assert!(!e.retryable && !e.needs_edit, "{}", e.message);
    assert!(
        e.message
            .contains("refuse-me@x.example: 550 5.1.1 <refuse-me@x.example>: Recipient address rejected"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("delivered to flaky@x.example, ok@x.example"),
        "{}",
        e.message
    );
    // 3: resumed: only the refused one is tried again.
    msg.progress = e.progress.clone();
    let e = tx.transmit(&msg, body(b"hello")).await.unwrap_err();
    assert!(e.message.contains("refuse-me"), "{}", e.message);
    let taken = t.server.wait_for(2, Duration::from_secs(5));
    let to: Vec<Vec<String>> = taken.iter().map(|m| m.rcpt_tos.clone()).collect();
    assert_eq!(
        to,
        vec![vec!["ok@x.example".to_string()], vec!["flaky@x.example".to_string()]]
    );
    // Both copies are the same mail (one Message-ID).
    let ids: Vec<String> = taken
        .iter()
        .map(|m| parsed(&m.content).message_id().unwrap().to_string())
        .collect();
    assert_eq!(ids[0], ids[1]);
    // Once all are done (the refused one taken off the list), nothing more goes.
    let progress: serde_json::Value = serde_json::from_str(msg.progress.as_deref().unwrap()).unwrap();
    assert_eq!(progress["done"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_refusal_after_data_suspends_and_a_put_off_recipient_is_retried() {
    let t = tls_server(false);
    let e = t
        .port("to = \"baddata@x.example\"")
        .transmit(&message(&[]), body(b"x"))
        .await
        .unwrap_err();
    assert!(!e.retryable, "{}", e.message);
    assert!(
        e.message.contains("554 5.6.0 Message refused by policy"),
        "{}",
        e.message
    );
    let e = t
        .port("to = \"later@x.example\"")
        .transmit(&message(&[]), body(b"x"))
        .await
        .unwrap_err();
    assert!(e.retryable && e.message.contains("451 4.7.1"), "{}", e.message);
    assert!(t.server.taken().is_empty());
}

#[tokio::test]
async fn header_injection_and_bad_addresses_are_refused_before_anything_is_sent() {
    let t = tls_server(false);
    let tx = t.port("to = \"%property:mail.to%\"\nsubject = \"Order %property:t.subject%\"");
    for (to, subject, says) in [
        ("a@x.example", "42\r\nBcc: victim@evil.example", "control character"),
        ("a@x.example\r\nBcc: victim@evil.example", "42", "control character"),
        ("a@x.example\nX-Evil: 1", "42", "control character"),
        ("not an address", "42", "not a mail address"),
        ("", "42", "no recipient"),
    ] {
        let e = tx
            .transmit(&message(&[("mail", "to", to), ("t", "subject", subject)]), body(b"x"))
            .await
            .unwrap_err();
        assert!(e.needs_edit, "{to:?}/{subject:?}: {}", e.message);
        assert!(e.message.contains(says), "{to:?}/{subject:?}: {}", e.message);
    }
    let e = tx
        .transmit(&message(&[("t", "subject", "42")]), body(b"x"))
        .await
        .unwrap_err();
    assert!(e.needs_edit && e.message.contains("mail.to"), "{}", e.message);
    assert!(t.server.taken().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn tls_and_login_failures_are_clear_and_never_show_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Smtpd::start(
        dir.path(),
        &SmtpdOptions {
            no_starttls: true,
            ..Default::default()
        },
    );
    let url = plain.url(false);
    let build = |extra: &str| {
        config(&format!(
            "url = \"{url}\"\nfrom = \"ops@sluice.example\"\nto = \"a@x.example\"\n{extra}"
        ))
        .build()
        .unwrap()
    };
    let e = build("").transmit(&message(&[]), body(b"x")).await.unwrap_err();
    assert!(e.retryable && e.message.contains("STARTTLS"), "{}", e.message);
    let e = build("starttls = \"opportunistic\"\nusername = \"u\"\npassword = \"hunter2-secret\"")
        .transmit(&message(&[]), body(b"x"))
        .await
        .unwrap_err();
    assert!(e.message.contains("not sent in clear"), "{}", e.message);
    build("starttls = \"opportunistic\"")
        .transmit(&message(&[]), body(b"x"))
        .await
        .expect("in clear, as configured");
    assert!(!plain.wait_for(1, Duration::from_secs(5))[0].tls);

    let t = tls_server(true);
    let e = t
        .port("username = \"sluice\"\npassword = \"wrong-Pw-123\"\nto = \"a@x.example\"")
        .transmit(&message(&[]), body(b"x"))
        .await
        .unwrap_err();
    assert!(
        e.retryable && e.message.contains("logging in as sluice"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("wrong-Pw-123"), "{}", e.message);
    // An unknown certificate authority.
    let e = config(&format!(
        "url = \"{}\"\nfrom = \"ops@sluice.example\"\nto = \"a@x.example\"",
        t.server.url(false)
    ))
    .build()
    .unwrap()
    .transmit(&message(&[]), body(b"x"))
    .await
    .unwrap_err();
    assert!(e.retryable && e.message.contains("TLS handshake"), "{}", e.message);
    assert!(t.server.taken().is_empty());
}

#[test]
fn the_password_shows_in_no_debug_output() {
    let c = config(
        "url = \"smtp://h\"\nusername = \"u\"\npassword = \"Debug-Hidden-77\"\nfrom = \"o@x.example\"\nto = \"a@x.example\"",
    );
    crate::kit::check_secrets_not_in_debug(&format!("{c:?}"), &["Debug-Hidden-77"]);
    let t = c.build().unwrap();
    crate::kit::check_secrets_not_in_debug(&format!("{t:?}"), &["Debug-Hidden-77"]);
}

#[test]
fn bad_configurations_are_refused_at_load() {
    for (extra, says) in [
        ("url = \"smtp://u@h\"\nto = \"a@x.example\"", "username"),
        ("url = \"http://h\"\nto = \"a@x.example\"", "smtp://"),
        ("url = \"smtp://h/path\"\nto = \"a@x.example\"", "only smtp://host:port"),
        (
            "url = \"smtps://h\"\nstarttls = \"off\"\nto = \"a@x.example\"",
            "starttls",
        ),
        ("url = \"smtp://h\"", "recipients"),
        (
            "url = \"smtp://h\"\nto = \"a@x.example\"\npassword = \"p\"",
            "without `username`",
        ),
        ("url = \"smtp://h\"\nto = \"%nope%\"", "unknown macro"),
    ] {
        let cfg = config(&format!("from = \"o@x.example\"\n{extra}"));
        let e = cfg.build().unwrap_err().to_string();
        assert!(e.contains(says), "{extra}: {e}");
    }
}

/// A scripted peer: answers the envelope, then after `354` does `then`.
async fn scripted(then: &'static str) -> (u16, tokio::task::JoinHandle<usize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"220 scripted ESMTP\r\n").await.unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return 0;
            }
            let answer: &[u8] = match line.get(..4).unwrap_or("") {
                "EHLO" => b"250-scripted\r\n250 8BITMIME\r\n",
                "MAIL" | "RCPT" | "RSET" => b"250 OK\r\n",
                "DATA" => b"354 go on\r\n",
                _ => b"500 what\r\n",
            };
            w.write_all(answer).await.unwrap();
            if line.starts_with("DATA") {
                break;
            }
        }
        match then {
            // Take nothing more: the client's writes stall.
            "stall" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                0
            }
            // Take some, then hang up.
            _ => {
                let mut buf = vec![0u8; 64 * 1024];
                let n = r.read(&mut buf).await.unwrap_or(0);
                drop(w);
                n
            }
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_server_that_stalls_or_hangs_up_mid_mail_fails_the_attempt_in_time() {
    for then in ["stall", "hang up"] {
        let (port, _task) = scripted(then).await;
        let tx = config(&format!(
            r#"url = "smtp://127.0.0.1:{port}"
               starttls = "off"
               timeout = "1s"
               from = "ops@sluice.example"
               to = "a@x.example""#
        ))
        .build()
        .unwrap();
        let big = vec![b'x'; 64 << 20];
        let started = std::time::Instant::now();
        let e: TransmitError = tx.transmit(&message(&[]), body(&big)).await.unwrap_err();
        assert!(e.retryable, "{then}: {}", e.message);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{then}: {:?}",
            started.elapsed()
        );
        assert!(e.message.contains("sending the mail"), "{then}: {}", e.message);
    }
}

/// A body that fails after some bytes (a content store that cannot read).
struct Broken(usize);

impl tokio::io::AsyncRead for Broken {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("chunk 3 is corrupt")));
        }
        let n = self.0.min(buf.remaining()).min(4096);
        buf.put_slice(&vec![b'a'; n]);
        self.0 -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_body_that_fails_to_read_sends_no_half_mail() {
    let t = tls_server(false);
    let tx = t.port("to = \"a@x.example\"");
    let e = tx.transmit(&message(&[]), Box::new(Broken(200_000))).await.unwrap_err();
    assert!(e.retryable && e.message.contains("chunk 3 is corrupt"), "{}", e.message);
    // The next mail goes on a new connection, and is the only one taken.
    tx.transmit(&message(&[]), body(b"whole")).await.expect("delivered");
    let taken = t.server.wait_for(1, Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        t.server.taken().len(),
        1,
        "the broken one was never ended, so never taken"
    );
    assert_eq!(parsed(&taken[0].content).body_text(0).as_deref(), Some("whole"));
}
