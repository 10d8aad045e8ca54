//! The POP3 receive location against a real server: Dovecot 2.3
//! (`kit::dovecot`), in the clear, with `STLS` and over implicit TLS; and a
//! server that greets and then says nothing.

use std::sync::Arc;
use std::time::Duration;

use sluice_model::{Context, MessageId};

use super::Pop3ReceiveConfig;
use crate::Source;
use crate::kit::dovecot::{Dovecot, DovecotOptions, PASSWORD, USER};
use crate::kit::{self, FakeAdmission, FakePublisher, SourceHarness, eventually};
use crate::support::mail_tests::{Mailbox, bad_mails, build, config_text, mail, start, with_attachment};

const WAIT: Duration = Duration::from_secs(20);

fn plain_url(dovecot: &Dovecot) -> String {
    format!("pop3://{USER}@127.0.0.1:{}", dovecot.pop3_port)
}

fn config(url: &str, extra: &str) -> Pop3ReceiveConfig {
    toml::from_str(&config_text(url, extra)).unwrap()
}

fn receiver(url: &str, extra: &str) -> Box<dyn Source> {
    build::<Pop3ReceiveConfig>(&config_text(url, extra))
}

fn mailbox(opts: &DovecotOptions) -> Mailbox {
    Mailbox::start(opts, plain_url, |url| receiver(url, ""), super::PROMOTES)
}

#[tokio::test]
async fn the_compliance_kit() {
    let m = mailbox(&DovecotOptions::default());
    kit::check_source(&m).await;
}

#[tokio::test]
async fn a_mail_becomes_a_message_of_its_text_and_attachments_then_is_deleted() {
    let m = mailbox(&DovecotOptions::default());
    let (raw, attachment) = with_attachment(3 * 1024 * 1024);
    m.dovecot.deliver(USER, &raw);
    // A line that starts with a dot, stuffed by the server.
    m.dovecot
        .deliver(USER, &mail("dots", ".hidden\r\n..two\r\n.\r\nend\r\n"));
    let publisher = FakePublisher::new();
    let admission = FakeAdmission::new();
    let r = kit::run_source(receiver(&plain_url(&m.dovecot), ""), &publisher, &admission).await;
    eventually(WAIT, "both mails deleted", || async {
        m.dovecot.mailbox(USER).is_empty()
    })
    .await;
    eventually(WAIT, "both settled", || async { publisher.settled().len() == 2 }).await;
    r.stop().await;
    let published = publisher.published();
    assert_eq!(published.len(), 2);
    let invoice = &published[0];
    assert_eq!(invoice.body, b"Invoice attached.");
    assert_eq!(invoice.parts.len(), 1);
    assert_eq!(invoice.parts[0].0, "invoice.bin");
    assert!(invoice.parts[0].1 == attachment, "the attachment differs");
    let text = |ns: &str, n: &str| invoice.context.promoted(ns, n).map(|v| v.to_text());
    assert_eq!(text("mail", "subject").as_deref(), Some("Rechnung März"));
    assert_eq!(text("mail", "from").as_deref(), Some("ann@example.com"));
    assert_eq!(text("mail", "message_id").as_deref(), Some("inv-1@example.com"));
    assert!(text("mail", "to").unwrap().contains("bob@example.com"));
    assert!(text("mail", "date").unwrap().starts_with("2026-11-27T"));
    assert_eq!(
        text("pop3", "url").as_deref(),
        Some(format!("pop3://127.0.0.1:{}", m.dovecot.pop3_port).as_str())
    );
    assert!(text("pop3", "uidl").is_some());
    kit::check_promotes_only_what_it_lists(&invoice.context, m.promotes());
    assert_eq!(
        published[1].body, b".hidden\r\n..two\r\n.\r\nend\r\n",
        "unstuffed as it was written"
    );
    assert_eq!(admission.in_flight(), 0);
    assert!(admission.bytes() >= raw.len() as u64, "charged as the mails arrived");
}

#[tokio::test]
async fn the_first_attachment_as_the_body_and_the_text_dropped() {
    let m = mailbox(&DovecotOptions::default());
    let (raw, attachment) = with_attachment(10_000);
    m.dovecot.deliver(USER, &raw);
    let publisher = FakePublisher::new();
    let r = start(
        receiver(&plain_url(&m.dovecot), "body = \"attachment\"\nparts = \"body\""),
        &publisher,
    )
    .await;
    eventually(WAIT, "the mail taken", || async { publisher.settled().len() == 1 }).await;
    r.stop().await;
    let p = &publisher.published()[0];
    assert!(p.body == attachment);
    assert!(p.parts.is_empty());
}

/// Mails the splitter refuses (a broken structure, a 10,000-level
/// nesting) are stored as received, suspended with the reason, and
/// deleted; the mail after them is taken as usual.
#[tokio::test]
async fn broken_and_deeply_nested_mails_are_suspended_as_received() {
    let m = mailbox(&DovecotOptions::default());
    let bad = bad_mails();
    for mail in &bad {
        m.dovecot.deliver(USER, mail);
    }
    m.dovecot.deliver(USER, &mail("good", "fine\r\n"));
    let publisher = FakePublisher::new();
    let r = start(receiver(&plain_url(&m.dovecot), ""), &publisher).await;
    eventually(WAIT, "all three taken", || async { publisher.settled().len() == 3 }).await;
    r.stop().await;
    assert!(m.dovecot.mailbox(USER).is_empty());
    let suspended = publisher.suspended();
    assert_eq!(suspended.len(), 2, "{suspended:?}");
    assert!(suspended[0].1.contains("ends inside"), "{suspended:?}");
    assert!(suspended[1].1.contains("deep"), "{suspended:?}");
    let published = publisher.published();
    assert_eq!(published.len(), 3);
    // As served: POP3 ends a mail without a final line end with one.
    assert_eq!(published[0].body, [bad[0].as_slice(), b"\r\n"].concat());
    assert!(published[1].body == bad[1], "the deep mail is stored as it was");
    assert_eq!(published[2].body, b"fine\r\n");
    assert!(published[0].context.promoted("pop3", "uidl").is_some());
}

/// Published before a crash, not yet deleted: the next run deletes it
/// without publishing it again.
#[tokio::test]
async fn a_mail_published_before_a_crash_is_deleted_not_received_again() {
    let m = mailbox(&DovecotOptions::default());
    m.dovecot.deliver(USER, &mail("crash", "once\r\n"));
    // The UIDL Dovecot gives it, read by this crate's client.
    let c = config(&plain_url(&m.dovecot), "");
    let connect = c.build().unwrap().connect.clone();
    let mut session = super::client::Session::open(&connect).await.unwrap();
    let (listing, _) = session.uidl(10).await.unwrap();
    session.quit().await.unwrap();
    let uid = listing[0].1.clone();
    // The earlier run's publish, held (not settled).
    let publisher = FakePublisher::new();
    let id = MessageId::new();
    let mut ctx = Context::new();
    ctx.promote("pop3", "uidl", uid.as_str());
    ctx.promote("pop3", "mailbox", format!("{USER}@127.0.0.1:{}", m.dovecot.pop3_port));
    crate::Publisher::submit(&*publisher, id, ctx, Box::new(&b"once\r\n"[..]))
        .await
        .unwrap();
    let r = start(receiver(&plain_url(&m.dovecot), ""), &publisher).await;
    eventually(WAIT, "the mail deleted", || async {
        m.dovecot.mailbox(USER).is_empty()
    })
    .await;
    eventually(WAIT, "its message released", || async {
        publisher.settled() == vec![id]
    })
    .await;
    r.stop().await;
    assert_eq!(publisher.published().len(), 1, "not published a second time");
}

#[tokio::test]
async fn stls_and_implicit_tls_and_an_untrusted_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = kit::certificate(certs.path());
    let m = mailbox(&DovecotOptions {
        tls: Some((cert.clone(), key)),
        ..DovecotOptions::default()
    });
    let ca = format!("tls_ca = \"{}\"", cert.display());
    let stls = format!("pop3://{USER}@localhost:{}", m.dovecot.pop3_port);
    let implicit = format!("pop3s://{USER}@localhost:{}", m.dovecot.pop3s_port.unwrap());
    for (url, extra) in [
        (&stls, format!("{ca}\nstarttls = \"required\"")),
        (&implicit, ca.clone()),
    ] {
        let c = config(url, &extra);
        if let Err(e) = super::client::Session::open(&c.build().unwrap().connect).await {
            panic!("{url}: {e}\n{}", m.dovecot.log());
        }
        m.dovecot.deliver(USER, &mail("tls", "secret\r\n"));
        let publisher = FakePublisher::new();
        let r = start(receiver(url, &extra), &publisher).await;
        eventually(WAIT, "the mail taken over TLS", || async {
            publisher.settled().len() == 1
        })
        .await;
        r.stop().await;
        assert!(m.dovecot.mailbox(USER).is_empty());
    }
    // Without the CA: refused at the handshake, nothing taken.
    m.dovecot.deliver(USER, &mail("tls", "kept\r\n"));
    for url in [&stls, &implicit] {
        let publisher = FakePublisher::new();
        let r = start(receiver(url, "starttls = \"required\""), &publisher).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        r.stop().await;
        assert_eq!(publisher.attempts(), 0);
    }
    assert_eq!(m.dovecot.mailbox(USER).len(), 1);
}

/// Errors a location meets at a session's start, as they are said.
async fn session_error(url: &str, extra: &str) -> String {
    let c = config(url, extra);
    let connect = c.build().unwrap().connect.clone();
    match super::client::Session::open(&connect).await {
        Ok(_) => panic!("the session opened"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_wrong_password_and_a_server_without_stls_are_said_clearly() {
    let m = mailbox(&DovecotOptions::default());
    let url = plain_url(&m.dovecot);
    let c: Pop3ReceiveConfig = toml::from_str(&format!(
        "url = \"{url}\"\npassword = \"not-the-password\"\nstarttls = \"off\"\ntimeout = \"5s\""
    ))
    .unwrap();
    let e = match super::client::Session::open(&c.build().unwrap().connect).await {
        Ok(_) => panic!("logged in with a wrong password"),
        Err(e) => e,
    };
    assert!(matches!(e, super::client::Pop3Error::Login(_)), "{e}");
    assert!(e.to_string().contains("PASS"), "{e}");
    assert!(!e.to_string().contains("not-the-password"), "{e}");
    // No STLS offered (this server has no TLS): refused before the password is sent.
    let e = session_error(&url, "starttls = \"required\"").await;
    assert!(e.contains("does not offer STLS"), "{e}");
    let e = session_error(&url, "starttls = \"opportunistic\"").await;
    assert!(e.contains("not sent in clear"), "{e}");
    // The location keeps running through a wrong password, leaving the mail.
    m.dovecot.deliver(USER, &mail("kept", "x\r\n"));
    let publisher = FakePublisher::new();
    let source: Box<dyn Source> = crate::ReceiveAdapter::build(&c).unwrap();
    let r = start(source, &publisher).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!r.task.is_finished(), "the location gave up");
    r.stop().await;
    assert_eq!(publisher.attempts(), 0);
    assert_eq!(m.dovecot.mailbox(USER).len(), 1);
}

/// A server that greets, then says nothing: the session ends within its
/// limit, and a location on it stops promptly.
#[tokio::test]
async fn a_server_that_stalls_is_given_up_within_the_limit() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.write_all(b"+OK stalling\r\n").await;
            held.push(tcp);
        }
    });
    let url = format!("pop3://{USER}@127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let e = session_error(&url, "timeout = \"500ms\"").await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(e.contains("no answer within"), "{e}");
    let publisher = FakePublisher::new();
    let r = start(receiver(&url, "timeout = \"300ms\""), &publisher).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.stop().await;
}

#[test]
fn bad_settings_are_refused_at_load() {
    let bad = |text: &str| {
        let c: Result<Pop3ReceiveConfig, _> = toml::from_str(text);
        match c {
            Err(e) => e.to_string(),
            Ok(c) => c.build().err().map(|e| e.to_string()).unwrap_or_default(),
        }
    };
    assert!(bad("url = \"pop3://host\"\npassword = \"x\"").contains("user"));
    assert!(bad("url = \"imap://u@host\"\npassword = \"x\"").contains("pop3:// or pop3s://"));
    assert!(bad("url = \"pop3://u@host/INBOX\"\npassword = \"x\"").contains("no folders"));
    assert!(bad("url = \"pop3://u@host\"").contains("password"));
    assert!(bad("url = \"pop3://u@host\"\npassword = \"x\"\nbody = \"html\"").contains("unknown variant"));
    let debug = format!("{:?}", config("pop3://u@host", ""));
    kit::check_secrets_not_in_debug(&debug, &[PASSWORD]);
}

/// What a scripted POP3 server does for one command.
enum Act {
    Say(&'static [u8]),
    /// Say it in these pieces, with a pause between them.
    Pieces(&'static [&'static [u8]]),
    /// Say this, then hang up.
    SayAndHang(&'static [u8]),
}

/// A scripted POP3 server on a free port: `script(command, connection
/// number)` answers each command (anything unscripted gets `+OK`). Every
/// command it got, in order, is in the returned list.
async fn scripted_pop3(script: fn(&str, usize) -> Option<Act>) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let commands = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = commands.clone();
    tokio::spawn(async move {
        let mut connection = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            connection += 1;
            let seen = seen.clone();
            tokio::spawn(async move {
                let (read, mut write) = tcp.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"+OK scripted\r\n").await;
                while let Ok(Some(line)) = lines.next_line().await {
                    seen.lock().unwrap().push(line.clone());
                    let act = match line.as_str() {
                        "CAPA" => Act::Say(b"-ERR no capabilities\r\n"),
                        _ => script(&line, connection).unwrap_or(Act::Say(b"+OK\r\n")),
                    };
                    let pieces: Vec<&[u8]> = match &act {
                        Act::Say(b) | Act::SayAndHang(b) => vec![b],
                        Act::Pieces(p) => p.to_vec(),
                    };
                    for piece in pieces {
                        if write.write_all(piece).await.is_err() || write.flush().await.is_err() {
                            return;
                        }
                        if matches!(act, Act::Pieces(_)) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    if matches!(act, Act::SayAndHang(_)) {
                        return;
                    }
                }
            });
        }
    });
    (port, commands)
}

/// A server that hangs up in the middle of a mail: nothing is published
/// or deleted, and the next session takes the mail whole, once.
#[tokio::test]
async fn a_server_gone_in_the_middle_of_a_mail_leaves_it_for_the_next_session() {
    let (port, commands) = scripted_pop3(|command, connection| match command {
        "UIDL" => Some(Act::Say(b"+OK\r\n1 only\r\n.\r\n")),
        "LIST 1" => Some(Act::Say(b"+OK 1 40\r\n")),
        "RETR 1" if connection == 1 => Some(Act::SayAndHang(b"+OK\r\nSubject: cut\r\n\r\nthe first half")),
        "RETR 1" => Some(Act::Say(b"+OK\r\nSubject: cut\r\n\r\nthe whole mail\r\n.\r\n")),
        _ => None,
    })
    .await;
    let publisher = FakePublisher::new();
    let r = start(receiver(&format!("pop3://{USER}@127.0.0.1:{port}"), ""), &publisher).await;
    eventually(WAIT, "the mail taken on the second session", || async {
        publisher.settled().len() == 1
    })
    .await;
    r.stop().await;
    let published = publisher.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].body, b"the whole mail\r\n");
    let commands = commands.lock().unwrap().clone();
    let dele: Vec<_> = commands.iter().filter(|c| c.starts_with("DELE")).collect();
    assert_eq!(dele, ["DELE 1"], "deleted once, after the whole mail: {commands:?}");
    assert_eq!(commands.iter().filter(|c| *c == "RETR 1").count(), 2, "{commands:?}");
}

/// A scripted server: the mail's lines come in pieces split where a reader
/// could mistake them (`.` | `\r\n`, `.\r` | `\n`, a stuffed `..`), and a
/// second mail is longer than `LIST` said. The first is taken, unstuffed
/// as it was written; the second is refused (the session it broke is
/// dropped) and not tried again; the next session deletes the first.
#[tokio::test]
async fn lines_split_anywhere_are_read_right_and_a_mail_longer_than_listed_is_refused() {
    const PIECES: &[&[u8]] = &[
        b"+OK\r\nSubject: split\r\n\r\n",
        b".",
        b".dot line\r\n",
        b"plain\r",
        b"\n.",
        b"\r",
        b"\n",
    ];
    // The long mail: 200 lines of 1,000 bytes where LIST said 10.
    static LONG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    LONG.get_or_init(|| {
        let mut m = b"+OK\r\nSubject: long\r\n\r\n".to_vec();
        for _ in 0..200 {
            m.extend_from_slice(&[b'x'; 1000]);
            m.extend_from_slice(b"\r\n");
        }
        m.extend_from_slice(b".\r\n");
        m
    });
    let (port, commands) = scripted_pop3(|command, _| match command {
        "UIDL" => Some(Act::Say(b"+OK\r\n1 first\r\n2 second\r\n.\r\n")),
        "LIST 1" => Some(Act::Say(b"+OK 1 40\r\n")),
        "LIST 2" => Some(Act::Say(b"+OK 2 10\r\n")),
        "RETR 1" => Some(Act::Pieces(PIECES)),
        "RETR 2" => LONG.get().map(|m| Act::Say(m.as_slice())),
        _ => None,
    })
    .await;
    let url = format!("pop3://{USER}@127.0.0.1:{port}");
    let publisher = FakePublisher::new();
    let r = start(receiver(&url, ""), &publisher).await;
    eventually(WAIT, "the first mail settled", || async {
        publisher.settled().len() == 1
    })
    .await;
    r.stop().await;
    let published = publisher.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].body, b".dot line\r\nplain\r\n");
    assert_eq!(
        publisher.attempts(),
        1,
        "the long mail is refused in its first piece, before a publish"
    );
    let commands = commands.lock().unwrap().clone();
    let retr2 = commands.iter().filter(|c| *c == "RETR 2").count();
    assert_eq!(retr2, 1, "the refused mail is not read again: {commands:?}");
    assert!(
        commands.contains(&"DELE 1".to_string()) && commands.contains(&"QUIT".to_string()),
        "{commands:?}"
    );
    assert!(!commands.contains(&"DELE 2".to_string()), "{commands:?}");
}
