//! The IMAP receive location against a real server: Dovecot 2.3
//! (`kit::dovecot`), in the clear, with `STARTTLS` and over implicit TLS.

use std::time::{Duration, Instant};

use sluice_model::{Context, MessageId};

use super::ImapReceiveConfig;
use crate::Source;
use crate::kit::dovecot::{Dovecot, DovecotOptions, PASSWORD, USER, flags_of};
use crate::kit::{self, FakePublisher, SourceHarness, eventually};
use crate::support::mail_tests::{Mailbox, bad_mails, build, config_text, mail, start};

const WAIT: Duration = Duration::from_secs(20);

fn plain_url(dovecot: &Dovecot) -> String {
    format!("imap://{USER}@127.0.0.1:{}/INBOX", dovecot.imap_port)
}

fn config(url: &str, extra: &str) -> ImapReceiveConfig {
    toml::from_str(&config_text(url, extra)).unwrap()
}

fn receiver(url: &str, extra: &str) -> Box<dyn Source> {
    build::<ImapReceiveConfig>(&config_text(url, extra))
}

fn folder(opts: &DovecotOptions) -> Mailbox {
    Mailbox::start(opts, plain_url, |url| receiver(url, ""), super::PROMOTES)
}

#[tokio::test]
async fn the_compliance_kit() {
    let f = folder(&DovecotOptions::default());
    kit::check_source(&f).await;
}

/// A text and a 3 MiB attachment, read in pieces: the message has both,
/// byte for byte, and the headers promoted.
#[tokio::test]
async fn a_mail_is_read_in_pieces_into_its_text_and_attachments_then_deleted() {
    use base64::Engine;
    let f = folder(&DovecotOptions::default());
    let attachment: Vec<u8> = (0..3 * 1024 * 1024).map(|i: usize| (i * 13 % 251) as u8).collect();
    let mut raw = String::from(
        "From: ann@example.com\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"q\"\r\n\r\n\
         --q\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n\
         --q\r\nContent-Type: application/pdf; name=\"big.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    for line in base64::engine::general_purpose::STANDARD
        .encode(&attachment)
        .as_bytes()
        .chunks(76)
    {
        raw.push_str(std::str::from_utf8(line).unwrap());
        raw.push_str("\r\n");
    }
    raw.push_str("--q--\r\n");
    f.dovecot.deliver(USER, raw.as_bytes());
    let publisher = FakePublisher::new();
    let r = start(receiver(&plain_url(&f.dovecot), ""), &publisher).await;
    eventually(WAIT, "the mail taken", || async { publisher.settled().len() == 1 }).await;
    r.stop().await;
    assert!(f.dovecot.mailbox(USER).is_empty());
    let p = &publisher.published()[0];
    assert_eq!(p.body, "Grüße".as_bytes());
    assert_eq!(p.parts.len(), 1);
    assert_eq!(p.parts[0].0, "big.pdf");
    assert!(p.parts[0].1 == attachment, "the attachment differs");
    let text = |ns: &str, n: &str| p.context.promoted(ns, n).map(|v| v.to_text());
    assert_eq!(text("mail", "subject").as_deref(), Some("big"));
    assert_eq!(
        text("imap", "url").as_deref(),
        Some(format!("imap://127.0.0.1:{}/INBOX", f.dovecot.imap_port).as_str())
    );
    assert!(text("imap", "uid").is_some() && text("imap", "uid_validity").is_some());
    kit::check_promotes_only_what_it_lists(&p.context, f.promotes());
}

/// `after = "flag"` leaves the mail, flagged, and does not take it again;
/// `after = "move"` moves it to the folder named.
#[tokio::test]
async fn after_flag_and_after_move() {
    let f = folder(&DovecotOptions::default());
    f.dovecot.deliver(USER, &mail("one", "1\r\n"));
    let publisher = FakePublisher::new();
    let r = start(receiver(&plain_url(&f.dovecot), "after = \"flag\""), &publisher).await;
    eventually(WAIT, "the mail taken", || async { publisher.settled().len() == 1 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.stop().await;
    assert_eq!(publisher.attempts(), 1, "a flagged mail is not taken again");
    let left = f.dovecot.mailbox(USER);
    assert_eq!(left.len(), 1);
    // Dovecot keeps keywords as letters from `a` in a Maildir's file names.
    assert!(flags_of(&left[0]).contains('a'), "{left:?}");
    // With \Seen: every unseen mail, the one flagged with the keyword too.
    f.dovecot.deliver(USER, &mail("two", "2\r\n"));
    let publisher = FakePublisher::new();
    let r = start(
        receiver(&plain_url(&f.dovecot), "after = \"flag\"\nflag = \"\\\\Seen\""),
        &publisher,
    )
    .await;
    eventually(WAIT, "both unseen mails taken", || async {
        publisher.settled().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.stop().await;
    assert_eq!(publisher.attempts(), 2);
    let left = f.dovecot.mailbox(USER);
    assert!(left.iter().all(|m| flags_of(m).contains('S')), "{left:?}");

    let done = f.dovecot.make_folder(USER, "Done");
    f.dovecot.deliver(USER, &mail("three", "3\r\n"));
    let publisher = FakePublisher::new();
    let r = start(
        receiver(&plain_url(&f.dovecot), "after = \"move\"\nmove_to = \"Done\""),
        &publisher,
    )
    .await;
    // Moving takes every mail not deleted, flagged or not.
    eventually(WAIT, "the three mails taken", || async {
        publisher.settled().len() == 3
    })
    .await;
    r.stop().await;
    assert!(f.dovecot.mailbox(USER).is_empty());
    let moved: Vec<_> = ["new", "cur"]
        .iter()
        .flat_map(|s| std::fs::read_dir(done.join(s)).unwrap())
        .collect();
    assert_eq!(moved.len(), 3);
}

/// New mail is taken at once in IDLE, long before the next poll.
#[tokio::test]
async fn idle_takes_new_mail_at_once() {
    let f = folder(&DovecotOptions::default());
    let publisher = FakePublisher::new();
    let r = start(receiver(&plain_url(&f.dovecot), "poll_interval = \"1h\""), &publisher).await;
    // Let it search the empty folder and enter IDLE.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    f.dovecot.deliver(USER, &mail("idle", "now\r\n"));
    eventually(WAIT, "the mail taken", || async { publisher.settled().len() == 1 }).await;
    let took = started.elapsed();
    r.stop().await;
    assert!(took < Duration::from_secs(10), "{took:?}: not woken by IDLE");
}

/// Mails the splitter refuses are stored as received, suspended with the
/// reason, and taken from the folder; the mail after them as usual.
#[tokio::test]
async fn broken_and_deeply_nested_mails_are_suspended_as_received() {
    let f = folder(&DovecotOptions::default());
    let bad = bad_mails();
    for mail in &bad {
        f.dovecot.deliver(USER, mail);
    }
    f.dovecot.deliver(USER, &mail("good", "fine\r\n"));
    let publisher = FakePublisher::new();
    let r = start(receiver(&plain_url(&f.dovecot), ""), &publisher).await;
    eventually(WAIT, "all three taken", || async { publisher.settled().len() == 3 }).await;
    r.stop().await;
    assert!(f.dovecot.mailbox(USER).is_empty());
    let suspended = publisher.suspended();
    assert_eq!(suspended.len(), 2, "{suspended:?}");
    assert!(suspended[0].1.contains("ends inside"), "{suspended:?}");
    assert!(suspended[1].1.contains("deep"), "{suspended:?}");
    let published = publisher.published();
    assert!(
        published[0].body == bad[0] && published[1].body == bad[1],
        "stored as received"
    );
    assert_eq!(published[2].body, b"fine\r\n");
}

/// Published before a crash, not yet deleted: the next run deletes it
/// without publishing it again.
#[tokio::test]
async fn a_mail_published_before_a_crash_is_finished_not_received_again() {
    let f = folder(&DovecotOptions::default());
    f.dovecot.deliver(USER, &mail("crash", "once\r\n"));
    let c = config(&plain_url(&f.dovecot), "");
    let mut session = super::session::Session::open(&c.build().unwrap().connect)
        .await
        .unwrap();
    let selected = session.select("INBOX").await.unwrap();
    let uid = session.search("UNDELETED", 10).await.unwrap()[0];
    session.logout().await;
    let publisher = FakePublisher::new();
    let id = MessageId::new();
    let mut ctx = Context::new();
    ctx.promote("imap", "uid", uid.to_string());
    ctx.promote("imap", "uid_validity", selected.uid_validity.to_string());
    ctx.promote(
        "imap",
        "mailbox",
        format!("{USER}@127.0.0.1:{}/INBOX", f.dovecot.imap_port),
    );
    crate::Publisher::submit(&*publisher, id, ctx, Box::new(&b"once\r\n"[..]))
        .await
        .unwrap();
    let r = start(receiver(&plain_url(&f.dovecot), ""), &publisher).await;
    eventually(WAIT, "the mail deleted", || async {
        f.dovecot.mailbox(USER).is_empty()
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
async fn starttls_implicit_tls_and_an_untrusted_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = kit::certificate(certs.path());
    let f = folder(&DovecotOptions {
        tls: Some((cert.clone(), key)),
        ..DovecotOptions::default()
    });
    let ca = format!("tls_ca = \"{}\"", cert.display());
    let starttls = format!("imap://{USER}@localhost:{}/INBOX", f.dovecot.imap_port);
    let implicit = format!("imaps://{USER}@localhost:{}", f.dovecot.imaps_port.unwrap());
    for (url, extra) in [
        (&starttls, format!("{ca}\nstarttls = \"required\"")),
        (&implicit, ca.clone()),
    ] {
        f.dovecot.deliver(USER, &mail("tls", "secret\r\n"));
        let publisher = FakePublisher::new();
        let r = start(receiver(url, &extra), &publisher).await;
        eventually(WAIT, "the mail taken over TLS", || async {
            publisher.settled().len() == 1
        })
        .await;
        r.stop().await;
        assert!(f.dovecot.mailbox(USER).is_empty());
    }
    f.dovecot.deliver(USER, &mail("tls", "kept\r\n"));
    for url in [&starttls, &implicit] {
        let publisher = FakePublisher::new();
        let r = start(receiver(url, "starttls = \"required\""), &publisher).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!r.task.is_finished(), "the location gave up");
        r.stop().await;
        assert_eq!(publisher.attempts(), 0);
    }
    assert_eq!(f.dovecot.mailbox(USER).len(), 1);
}

#[test]
fn bad_settings_are_refused_at_load() {
    let bad = |text: &str| {
        let c: Result<ImapReceiveConfig, _> = toml::from_str(text);
        match c {
            Err(e) => e.to_string(),
            Ok(c) => c.build().err().map(|e| e.to_string()).unwrap_or_default(),
        }
    };
    let with = |extra: &str| format!("url = \"imap://u@host/INBOX\"\npassword = \"x\"\n{extra}");
    assert!(bad("url = \"imap://host\"\npassword = \"x\"").contains("user"));
    assert!(bad("url = \"pop3://u@host\"\npassword = \"x\"").contains("imap:// or imaps://"));
    assert!(bad(&with("after = \"move\"")).contains("move_to"));
    assert!(bad(&with("after = \"move\"\nmove_to = \"INBOX\"")).contains("other than"));
    assert!(bad(&with("move_to = \"Done\"")).contains("is for after = \"move\""));
    assert!(bad(&with("after = \"flag\"\nflag = \"\\\\Deleted\"")).contains("system flag"));
    assert!(bad(&with("after = \"flag\"\nflag = \"a b\"")).contains("keyword"));
    assert!(bad(&with("after = \"flag\"\nflag = \"x)\"")).contains("keyword"));
    let c = config("imap://u@host", "");
    assert_eq!(c.shown(), "imap://host:143/INBOX");
    assert_eq!(c.mailbox(), "u@host:143/INBOX");
    kit::check_secrets_not_in_debug(&format!("{c:?}"), &[PASSWORD]);
}
