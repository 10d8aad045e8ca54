//! The session against a real server (Dovecot, `kit::dovecot`: in the
//! clear, STARTTLS, implicit TLS) and against scripted ones that stall or
//! lie; and the [`Scanner`] on its own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::kit::dovecot::{Dovecot, DovecotOptions, PASSWORD, USER, flags_of};

const MAIL_1: &[u8] = b"From: a@example.com\r\nSubject: one\r\n\r\nfirst body\r\n";
const MAIL_2: &[u8] = b"From: b@example.com\r\nSubject: two\r\n\r\nsecond body\r\n";

/// A bound against hanging, not a measurement.
const LIMIT: Duration = Duration::from_secs(60);

fn settings(host: &str, port: u16, security: Security, ca: Option<&Path>) -> Connect {
    Connect {
        host: host.to_string(),
        port,
        security,
        tls: crate::support::tls::client_config(ca).expect("a TLS client"),
        user: USER.to_string(),
        password: Secret::new(PASSWORD),
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
    }
}

/// Dovecot without TLS, and its folder.
fn plain_server() -> (tempfile::TempDir, Dovecot) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let dovecot = Dovecot::start(dir.path(), &DovecotOptions::default());
    (dir, dovecot)
}

/// Dovecot with STARTTLS and implicit TLS (a certificate for
/// `localhost`), its folders and the certificate's file.
fn tls_server() -> (tempfile::TempDir, tempfile::TempDir, Dovecot, PathBuf) {
    let (dir, certs) = (
        tempfile::tempdir().expect("a temp dir"),
        tempfile::tempdir().expect("a temp dir"),
    );
    let (cert, key) = crate::kit::certificate(certs.path());
    let opts = DovecotOptions {
        tls: Some((cert.clone(), key)),
        ..DovecotOptions::default()
    };
    let dovecot = Dovecot::start(dir.path(), &opts);
    (dir, certs, dovecot, cert)
}

async fn open_plain(dovecot: &Dovecot) -> Session {
    Session::open(&settings("127.0.0.1", dovecot.imap_port, Security::Off, None))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", dovecot.log()))
}

/// The mail files of a Maildir folder (`new/` and `cur/`).
fn files_in(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in ["new", "cur"] {
        for entry in std::fs::read_dir(folder.join(sub)).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    files
}

/// The `Login:` lines of Dovecot's log, once it has `n` of them or 30 s
/// passed (it writes its log through a process of its own, a moment
/// later).
async fn logins(dovecot: &Dovecot, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let lines: Vec<String> = dovecot
            .log()
            .lines()
            .filter(|l| l.contains("Login:"))
            .map(String::from)
            .collect();
        if lines.len() >= n || start.elapsed() > Duration::from_secs(30) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_session_logs_in_selects_and_knows_what_the_server_offers() {
    let (_dir, dovecot) = plain_server();
    dovecot.deliver(USER, MAIL_1);
    dovecot.deliver(USER, MAIL_2);
    let mut s = open_plain(&dovecot).await;
    assert!(
        s.can_idle() && s.can_move() && s.has_uidplus(),
        "Dovecot offers IDLE, MOVE and UIDPLUS"
    );
    assert!(!s.is_encrypted());
    let selected = s.select("INBOX").await.unwrap();
    assert_eq!(selected.exists, 2);
    assert!(selected.uid_validity > 0);
    // The same folder again: the same UIDVALIDITY.
    assert_eq!(s.select("INBOX").await.unwrap(), selected);

    let e = s.select("No such folder").await.unwrap_err();
    assert!(matches!(e, ImapError::Protocol(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("selecting the folder \"No such folder\"") && text.contains("the server said NO"),
        "{text}"
    );
    for bad in ["a\r\nb", "nul\0", "Gelöscht", ""] {
        let e = s.select(bad).await.unwrap_err();
        assert!(matches!(e, ImapError::Invalid(_)), "{bad:?}: {e:?}");
    }
    // A refused command leaves the session usable.
    assert_eq!(s.select("INBOX").await.unwrap().exists, 2);
    s.logout().await;
}

#[tokio::test]
async fn a_folder_name_with_spaces_quotes_and_ampersands_is_quoted() {
    let (_dir, dovecot) = plain_server();
    let name = "Q \"x\" & y";
    let folder = dovecot.make_folder(USER, name);
    // Modified UTF-7 writes `&` as `&-`: so does Dovecot's Maildir layout.
    let on_disk = dovecot.maildir(USER).join(".Q \"x\" &- y");
    std::fs::rename(&folder, &on_disk).unwrap();
    let mut s = open_plain(&dovecot).await;
    assert_eq!(s.select(name).await.unwrap().exists, 0);
    assert_eq!(folder_name("a\\b").unwrap(), "\"a\\\\b\"");
}

#[tokio::test]
async fn a_wrong_password_is_refused_clearly_without_showing_it() {
    let (_dir, dovecot) = plain_server();
    let mut c = settings("127.0.0.1", dovecot.imap_port, Security::Off, None);
    c.password = Secret::new("wrong-pw-7391");
    let e = Session::open(&c).await.unwrap_err();
    assert!(matches!(e, ImapError::Login(_)), "{e:?}");
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "logging in as {USER} at imap://{USER}@127.0.0.1:{}: the server refused: ",
            dovecot.imap_port
        )),
        "{text}"
    );
    assert!(text.contains("Authentication failed"), "{text}");
    assert!(!text.contains("wrong-pw-7391") && !format!("{e:?}").contains("wrong-pw-7391"));
    // The right one at once (no penalty).
    open_plain(&dovecot).await;
}

#[tokio::test]
async fn the_password_never_goes_in_clear_unless_starttls_is_off() {
    let (_dir, dovecot) = plain_server();
    let port = dovecot.imap_port;
    let e = Session::open(&settings("127.0.0.1", port, Security::StartTlsRequired, None))
        .await
        .unwrap_err();
    assert!(matches!(e, ImapError::Login(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("the server does not offer STARTTLS; starttls = \"required\""),
        "{e}"
    );
    let e = Session::open(&settings("127.0.0.1", port, Security::StartTlsOpportunistic, None))
        .await
        .unwrap_err();
    assert!(matches!(e, ImapError::Login(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("the password is not sent in clear unless starttls = \"off\""),
        "{e}"
    );
    assert!(!dovecot.log().contains("Login:"), "{}", dovecot.log());
    // Off: in clear, as asked.
    assert!(!open_plain(&dovecot).await.is_encrypted());
    assert_eq!(logins(&dovecot, 1).await.len(), 1);
}

#[tokio::test]
async fn starttls_upgrades_the_connection_before_the_login() {
    let (_dir, _certs, dovecot, cert) = tls_server();
    dovecot.deliver(USER, MAIL_1);
    for security in [Security::StartTlsRequired, Security::StartTlsOpportunistic] {
        let c = settings("localhost", dovecot.imap_port, security, Some(&cert));
        let mut s = Session::open(&c)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", dovecot.log()));
        assert!(s.is_encrypted());
        assert_eq!(s.select("INBOX").await.unwrap().exists, 1);
        s.logout().await;
    }
    let lines = logins(&dovecot, 2).await;
    assert_eq!(lines.len(), 2, "{}", dovecot.log());
    assert!(lines.iter().all(|l| l.contains(", TLS")), "{lines:?}");
}

#[tokio::test]
async fn implicit_tls_works_and_an_untrusted_certificate_is_refused() {
    let (_dir, _certs, dovecot, cert) = tls_server();
    dovecot.deliver(USER, MAIL_1);
    let imaps = dovecot.imaps_port.expect("an IMAPS port");
    let mut s = Session::open(&settings("localhost", imaps, Security::Implicit, Some(&cert)))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", dovecot.log()));
    assert!(s.is_encrypted());
    assert_eq!(s.select("INBOX").await.unwrap().exists, 1);
    s.logout().await;

    // Only the built-in roots: the self-signed certificate is refused,
    // with implicit TLS and with STARTTLS.
    for (port, security) in [
        (imaps, Security::Implicit),
        (dovecot.imap_port, Security::StartTlsRequired),
    ] {
        let e = Session::open(&settings("localhost", port, security, None))
            .await
            .unwrap_err();
        assert!(matches!(e, ImapError::Connect(_)), "{e:?}");
        assert!(e.to_string().contains("the TLS handshake with"), "{e}");
        assert!(e.to_string().contains("certificate"), "{e}");
    }
    // The name checked: the certificate is for localhost, not 127.0.0.1.
    let e = Session::open(&settings("127.0.0.1", imaps, Security::Implicit, Some(&cert)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
    // Give a stray login the time to show up in the log.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(logins(&dovecot, 1).await.len(), 1, "{}", dovecot.log());
}

#[tokio::test]
async fn search_gives_uids_ascending_at_most_max_across_windows() {
    let (_dir, dovecot) = plain_server();
    let count = SEARCH_WINDOW_FIRST as usize + 44;
    for i in 0..count {
        dovecot.deliver(USER, format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes());
    }
    let mut s = open_plain(&dovecot).await;
    assert_eq!(s.select("INBOX").await.unwrap().exists as usize, count);

    let all = s.search("UNDELETED", 10_000).await.unwrap();
    assert_eq!(all.len(), count);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "ascending: {all:?}");
    // More than one window, cut at max.
    let first = s.search("UNDELETED", count - 4).await.unwrap();
    assert_eq!(first, all[..count - 4]);
    assert_eq!(s.search("UNDELETED", 3).await.unwrap(), all[..3]);
    assert_eq!(s.search("", 2).await.unwrap(), all[..2], "no criteria: all");
    assert!(s.search("UNDELETED", 0).await.unwrap().is_empty());

    // Criteria with a keyword.
    s.add_flag(all[1], "$SluiceReceived").await.unwrap();
    s.add_flag(all[290], "$SluiceReceived").await.unwrap();
    let left = s.search("UNDELETED UNKEYWORD $SluiceReceived", 3).await.unwrap();
    assert_eq!(left, [all[0], all[2], all[3]]);
    let marked = s.search("KEYWORD $SluiceReceived", 100).await.unwrap();
    assert_eq!(marked, [all[1], all[290]]);

    for bad in [
        "UNDELETED\r\nA0 LOGOUT",
        "SUBJECT {3}",
        "SUBJECT é",
        "charset UTF-8 ALL",
    ] {
        let e = s.search(bad, 10).await.unwrap_err();
        assert!(matches!(e, ImapError::Invalid(_)), "{bad:?}: {e:?}");
    }
    let e = s.search("NOSUCHKEY", 10).await.unwrap_err();
    assert!(matches!(e, ImapError::Protocol(_)), "{e:?}");
    assert!(e.to_string().contains("the server said BAD"), "{e}");
    assert_eq!(s.search("UNDELETED", 1).await.unwrap(), all[..1], "usable after a BAD");
}

#[tokio::test]
async fn an_empty_folder_is_searched_and_new_mail_found() {
    let (_dir, dovecot) = plain_server();
    let mut s = open_plain(&dovecot).await;
    assert_eq!(s.select("INBOX").await.unwrap().exists, 0);
    assert!(s.search("UNDELETED", 10).await.unwrap().is_empty());
    dovecot.deliver(USER, MAIL_1);
    assert_eq!(s.search("UNDELETED", 10).await.unwrap().len(), 1);
}

/// A mail of about 3 MB: CRLF lines, 8-bit bytes, and lines that look
/// like IMAP (a literal's announcement among them).
fn big_mail() -> Vec<u8> {
    let mut mail = b"From: a@example.com\r\nSubject: big\r\nContent-Type: text/plain; charset=latin1\r\n\r\n".to_vec();
    let mut i = 0u32;
    while mail.len() < 3_000_000 {
        mail.extend_from_slice(format!("line {i:07} ").as_bytes());
        mail.extend_from_slice(&[0xe9, 0xe8, b' ', 0xff, b'"', b'(']);
        match i % 1000 {
            7 => mail.extend_from_slice(b" {99999999}"),
            8 => mail.extend_from_slice(b"* 1 FETCH (BODY[] {400000000}"),
            9 => mail.extend_from_slice(b") A0009 OK done"),
            _ => mail.extend_from_slice(b" the quick brown fox jumps over the lazy dog"),
        }
        mail.extend_from_slice(b"\r\n");
        i += 1;
    }
    mail
}

#[tokio::test]
async fn a_big_mail_reads_back_byte_identical_in_pieces_and_stays_unseen() {
    let (_dir, dovecot) = plain_server();
    let mail = big_mail();
    dovecot.deliver(USER, MAIL_1);
    dovecot.deliver(USER, &mail);
    let mut s = open_plain(&dovecot).await;
    s.select("INBOX").await.unwrap();
    let uids = s.search("UNDELETED", 10).await.unwrap();
    let uid = uids[1];
    assert_eq!(s.size(uid).await.unwrap(), Some(mail.len() as u64));

    const PIECE: u32 = 256 * 1024;
    let mut read = Vec::new();
    let mut pieces = 0;
    loop {
        let piece = s
            .fetch_piece(uid, read.len() as u64, PIECE)
            .await
            .unwrap()
            .expect("the mail");
        assert!(piece.len() <= PIECE as usize);
        if piece.is_empty() {
            break;
        }
        read.extend_from_slice(&piece);
        pieces += 1;
        assert!(pieces < 100, "the reads do not end");
    }
    assert_eq!(pieces, mail.len().div_ceil(PIECE as usize));
    assert!(
        read == mail,
        "the mail read back differs ({} bytes, {} sent)",
        read.len(),
        mail.len()
    );
    // A piece from the middle.
    let middle = s.fetch_piece(uid, 1_000_001, 1000).await.unwrap().unwrap();
    assert_eq!(middle[..], mail[1_000_001..1_001_001]);
    // Past the end: empty.
    let past = s.fetch_piece(uid, mail.len() as u64 + 10, 100).await.unwrap().unwrap();
    assert!(past.is_empty());

    for bad in [0, MAX_PIECE + 1] {
        let e = s.fetch_piece(uid, 0, bad).await.unwrap_err();
        assert!(matches!(e, ImapError::Invalid(_)), "{e:?}");
    }
    assert!(matches!(
        s.fetch_piece(uid, 1 << 33, 10).await.unwrap_err(),
        ImapError::Invalid(_)
    ));
    s.logout().await;
    // BODY.PEEK: not marked seen.
    let files = dovecot.mailbox(USER);
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| !flags_of(f).contains('S')), "{files:?}");
}

#[tokio::test]
async fn a_uid_that_is_gone_gives_none() {
    let (_dir, dovecot) = plain_server();
    dovecot.deliver(USER, MAIL_1);
    let mut s = open_plain(&dovecot).await;
    s.select("INBOX").await.unwrap();
    let uid = s.search("UNDELETED", 10).await.unwrap()[0];
    assert_eq!(s.size(uid + 1000).await.unwrap(), None);
    assert_eq!(s.fetch_piece(uid + 1000, 0, 100).await.unwrap(), None);
    s.delete(uid).await.unwrap();
    assert_eq!(s.size(uid).await.unwrap(), None);
    assert_eq!(s.fetch_piece(uid, 0, 100).await.unwrap(), None);
}

#[tokio::test]
async fn delete_removes_the_mail_with_and_without_uidplus() {
    let (_dir, dovecot) = plain_server();
    for mail in [MAIL_1, MAIL_2, MAIL_1] {
        dovecot.deliver(USER, mail);
    }
    let mut s = open_plain(&dovecot).await;
    s.select("INBOX").await.unwrap();
    let uids = s.search("UNDELETED", 10).await.unwrap();
    s.delete(uids[0]).await.unwrap();
    let left = dovecot.mailbox(USER);
    assert_eq!(left.len(), 2);
    assert_eq!(std::fs::read(&left[0]).unwrap(), MAIL_2);

    s.forget_extensions();
    assert!(!s.has_uidplus());
    s.delete(uids[2]).await.unwrap();
    let left = dovecot.mailbox(USER);
    assert_eq!(left.len(), 1);
    assert_eq!(std::fs::read(&left[0]).unwrap(), MAIL_2);
    assert_eq!(s.search("UNDELETED", 10).await.unwrap(), [uids[1]]);
}

#[tokio::test]
async fn move_puts_the_mail_in_the_other_folder_with_and_without_move() {
    let (_dir, dovecot) = plain_server();
    let archive = dovecot.make_folder(USER, "Archive");
    for mail in [MAIL_1, MAIL_2, MAIL_1] {
        dovecot.deliver(USER, mail);
    }
    let mut s = open_plain(&dovecot).await;
    s.select("INBOX").await.unwrap();
    let uids = s.search("UNDELETED", 10).await.unwrap();
    s.move_to(uids[1], "Archive").await.unwrap();
    assert_eq!(dovecot.mailbox(USER).len(), 2);
    let moved = files_in(&archive);
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(std::fs::read(&moved[0]).unwrap(), MAIL_2);

    // A folder that does not exist: said so, the mail left where it is.
    let e = s.move_to(uids[0], "Nowhere").await.unwrap_err();
    assert!(matches!(e, ImapError::Protocol(_)), "{e:?}");
    assert!(e.to_string().contains("the folder \"Nowhere\" does not exist"), "{e}");
    assert_eq!(dovecot.mailbox(USER).len(), 2);

    s.forget_extensions();
    assert!(!s.can_move());
    s.move_to(uids[0], "Archive").await.unwrap();
    assert_eq!(dovecot.mailbox(USER).len(), 1);
    assert_eq!(files_in(&archive).len(), 2);
    let e = s.move_to(uids[2], "Nowhere").await.unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert_eq!(s.search("UNDELETED", 10).await.unwrap(), [uids[2]]);
    assert_eq!(s.select("Archive").await.unwrap().exists, 2);
}

#[tokio::test]
async fn add_flag_sets_flags_and_keywords_and_refuses_what_is_no_flag() {
    let (_dir, dovecot) = plain_server();
    dovecot.deliver(USER, MAIL_1);
    dovecot.deliver(USER, MAIL_2);
    let mut s = open_plain(&dovecot).await;
    s.select("INBOX").await.unwrap();
    let uids = s.search("UNDELETED", 10).await.unwrap();
    s.add_flag(uids[1], "\\Flagged").await.unwrap();
    s.add_flag(uids[1], "\\Seen").await.unwrap();
    s.add_flag(uids[0], "$SluiceReceived").await.unwrap();
    // A gone mail: nothing to flag.
    s.add_flag(uids[1] + 100, "\\Seen").await.unwrap();
    let flags: Vec<String> = dovecot.mailbox(USER).iter().map(|p| flags_of(p)).collect();
    assert_eq!(flags[1], "FS");
    assert_eq!(s.search("KEYWORD $SluiceReceived", 10).await.unwrap(), [uids[0]]);
    for bad in [
        "a b",
        "(x)",
        "\"q\"",
        "x\r\n",
        "",
        "\\Deleted",
        "\\Other",
        "é",
        "a{3}",
        "a]",
    ] {
        let e = s.add_flag(uids[0], bad).await.unwrap_err();
        assert!(matches!(e, ImapError::Invalid(_)), "{bad:?}: {e:?}");
    }
}

#[tokio::test]
async fn idle_wakes_when_mail_comes_and_times_out_otherwise() {
    let (_dir, dovecot) = plain_server();
    dovecot.deliver(USER, MAIL_1);
    let mut s = open_plain(&dovecot).await;
    s.select("INBOX").await.unwrap();
    assert_eq!(s.search("UNDELETED", 10).await.unwrap().len(), 1);
    assert_eq!(s.idle(Duration::from_millis(500)).await.unwrap(), Waited::TimedOut);

    let (waited, ()) = tokio::join!(s.idle(LIMIT), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        dovecot.deliver(USER, MAIL_2);
    });
    assert_eq!(waited.unwrap(), Waited::Changed);
    // Usable after: the new mail is found.
    assert_eq!(s.search("UNDELETED", 10).await.unwrap().len(), 2);
    assert_eq!(s.idle(Duration::from_millis(300)).await.unwrap(), Waited::TimedOut);

    // New mail reported in another command's answer: no IDLE needed.
    let uid = s.search("UNDELETED", 1).await.unwrap()[0];
    dovecot.deliver(USER, MAIL_1);
    s.delete(uid).await.unwrap();
    assert_eq!(s.idle(LIMIT).await.unwrap(), Waited::Changed);
    assert_eq!(s.search("UNDELETED", 10).await.unwrap().len(), 2);
}

/// A scripted server: it greets, then answers each command line `tag
/// rest` with `answer(tag, rest)`; an empty answer stalls (it reads on and
/// never answers). Its port.
async fn scripted(greeting: &'static str, answer: fn(&str, &str) -> String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let (read, mut write) = tcp.into_split();
                let mut lines = BufReader::new(read).lines();
                if write.write_all(greeting.as_bytes()).await.is_err() {
                    return;
                }
                let mut stalled = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    if stalled {
                        continue;
                    }
                    let (tag, rest) = line.split_once(' ').unwrap_or((&line, ""));
                    let out = answer(tag, rest);
                    stalled = out.is_empty();
                    if write.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

const FAKE_GREETING: &str = "* OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] fake ready\r\n";

/// Logs in and selects (one mail, UID 1); `then` answers the rest.
fn fake(tag: &str, rest: &str, then: fn(&str, &str) -> String) -> String {
    if rest.starts_with("LOGIN") {
        format!("{tag} OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] logged in\r\n")
    } else if rest.starts_with("SELECT") {
        format!("* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n{tag} OK [READ-WRITE] selected\r\n")
    } else {
        then(tag, rest)
    }
}

fn fake_settings(port: u16) -> Connect {
    let mut c = settings("127.0.0.1", port, Security::Off, None);
    c.connect_timeout = Duration::from_millis(500);
    c.timeout = Duration::from_millis(500);
    c
}

#[tokio::test]
async fn a_server_that_stalls_gives_a_timeout_error_within_the_limit() {
    // Greets, then never answers.
    let port = scripted("* OK stalling\r\n", |_, _| String::new()).await;
    let start = Instant::now();
    let e = tokio::time::timeout(LIMIT, Session::open(&fake_settings(port)))
        .await
        .expect("an error, not a hang")
        .unwrap_err();
    assert!(matches!(e, ImapError::Connect(_)) && e.is_transient(), "{e:?}");
    assert!(
        e.to_string().contains("logging in as sluice") && e.to_string().contains("no answer within"),
        "{e}"
    );
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());

    // Never greets.
    let port = scripted("", |_, _| String::new()).await;
    let e = tokio::time::timeout(LIMIT, Session::open(&fake_settings(port)))
        .await
        .expect("an error, not a hang")
        .unwrap_err();
    assert!(
        e.to_string().contains("waiting for the greeting") && e.is_transient(),
        "{e}"
    );

    // Stalls after the login: the command times out, and the session is
    // no use after.
    let port = scripted(FAKE_GREETING, |tag, rest| fake(tag, rest, |_, _| String::new())).await;
    let mut s = Session::open(&fake_settings(port)).await.unwrap();
    assert_eq!(
        s.select("INBOX").await.unwrap(),
        Selected {
            uid_validity: 7,
            exists: 1
        }
    );
    let e = tokio::time::timeout(LIMIT, s.size(1))
        .await
        .expect("an error, not a hang")
        .unwrap_err();
    assert!(e.is_transient() && e.to_string().contains("no answer within"), "{e}");
    let e = s.size(1).await.unwrap_err();
    assert!(e.to_string().contains("cannot be used after an earlier error"), "{e}");
    // IDLE too: the wait is bounded even if the server never agrees.
    let port = scripted(FAKE_GREETING, |tag, rest| fake(tag, rest, |_, _| String::new())).await;
    let mut s = Session::open(&fake_settings(port)).await.unwrap();
    s.select("INBOX").await.unwrap();
    let e = tokio::time::timeout(LIMIT, s.idle(Duration::from_secs(1)))
        .await
        .expect("an error, not a hang")
        .unwrap_err();
    assert!(e.to_string().contains("no answer within"), "{e}");
    tokio::time::timeout(LIMIT, s.logout()).await.expect("logout ends");
}

#[tokio::test]
async fn a_server_that_sends_more_than_asked_is_refused_before_it_is_kept() {
    // Announces half a gigabyte: refused at the announcement.
    let port = scripted(FAKE_GREETING, |tag, rest| {
        fake(tag, rest, |_, _| {
            "* 1 FETCH (UID 1 BODY[]<0> {500000000}\r\n".to_string()
        })
    })
    .await;
    let mut s = Session::open(&fake_settings(port)).await.unwrap();
    s.select("INBOX").await.unwrap();
    let e = s.fetch_piece(1, 0, 1024).await.unwrap_err();
    assert!(matches!(e, ImapError::Protocol(_)), "{e:?}");
    assert!(e.to_string().contains("announced 500000000 bytes"), "{e}");
    assert!(s.size(1).await.unwrap_err().to_string().contains("cannot be used"));

    // Sends 20 bytes for a piece of 10.
    let port = scripted(FAKE_GREETING, |tag, rest| {
        fake(tag, rest, |tag, _| {
            format!("* 1 FETCH (UID 1 BODY[]<0> {{20}}\r\n01234567890123456789)\r\n{tag} OK done\r\n")
        })
    })
    .await;
    let mut s = Session::open(&fake_settings(port)).await.unwrap();
    s.select("INBOX").await.unwrap();
    let e = s.fetch_piece(1, 0, 10).await.unwrap_err();
    assert!(e.to_string().contains("sent 20 bytes for a piece of at most 10"), "{e}");

    // Hides a big literal behind one imap-proto reads as no literal.
    let port = scripted(FAKE_GREETING, |tag, rest| {
        fake(tag, rest, |_, _| {
            "* 1 FETCH (UID 1 XFOO ({10}\r\n) BODY[] {400000000}\r\n".to_string()
        })
    })
    .await;
    let mut s = Session::open(&fake_settings(port)).await.unwrap();
    s.select("INBOX").await.unwrap();
    let e = s.fetch_piece(1, 0, 1024).await.unwrap_err();
    assert!(e.to_string().contains("where this client takes none"), "{e}");

    // More UIDs than messages searched.
    let port = scripted(FAKE_GREETING, |tag, rest| {
        fake(tag, rest, |tag, _| format!("* SEARCH 1 2 3\r\n{tag} OK done\r\n"))
    })
    .await;
    let mut s = Session::open(&fake_settings(port)).await.unwrap();
    s.select("INBOX").await.unwrap();
    let e = s.search("ALL", 10).await.unwrap_err();
    assert!(e.to_string().contains("more UIDs than the 1 messages searched"), "{e}");

    // A BYE ends the session.
    let port = scripted(FAKE_GREETING, |tag, rest| {
        fake(tag, rest, |_, _| "* BYE shutting down\r\n".to_string())
    })
    .await;
    let mut s = Session::open(&fake_settings(port)).await.unwrap();
    s.select("INBOX").await.unwrap();
    let e = s.size(1).await.unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("the server ended the session: shutting down"),
        "{e}"
    );
}

/// Feed `answer` in chunks of `chunk` bytes; the first refusal.
fn scan(max_literal: u64, answer: &[u8], chunk: usize) -> Result<(), String> {
    let mut scanner = Scanner::new(max_literal);
    answer.chunks(chunk).try_for_each(|c| scanner.feed(c))
}

#[test]
fn the_scanner_takes_literals_only_where_imap_proto_reads_them() {
    let piece = b"* 3 FETCH (UID 9 BODY[]<0> {26}\r\nhi {99999999}\r\n* OK {77}\r\n FLAGS (\\Seen))\r\nA1 OK done\r\n";
    for chunk in [1, 2, 7, 1000] {
        assert_eq!(scan(26, piece, chunk), Ok(()), "chunks of {chunk}");
        assert!(scan(25, piece, chunk).unwrap_err().contains("more than the 25"));
    }
    let good: &[&[u8]] = &[
        b"* LIST (\\HasNoChildren) \"/\" {5}\r\nINBOX\r\n",
        b"* 1 FETCH (FLAGS (\\Seen) UID 1 body[1.2]<10> {3}\r\nabc BODY[TEXT] {0}\r\n)\r\n",
        b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n",
        b"+ idling\r\n",
        b"* SEARCH 1 2 3\r\n",
    ];
    for answer in good {
        assert_eq!(scan(100, answer, 1), Ok(()), "{}", String::from_utf8_lossy(answer));
    }
    let bad: &[&[u8]] = &[
        // Text for imap-proto.
        b"* OK hello {5}\r\nxxxxx\r\n",
        b"A1 NO [ALERT] {5}\r\nxxxxx\r\n",
        b"* OK [CAPABILITY IMAP4rev1 IDLE] ready {5}\r\nxxxxx\r\n",
        b"+ {5}\r\nxxxxx\r\n",
        // In a FETCH: not right after BODY[...], nested, after a quote, or
        // glued to a word.
        b"* 1 FETCH (XFOO {5}\r\nxxxxx)\r\n",
        b"* 1 FETCH (XFOO (BODY[] {5}\r\nxxxxx))\r\n",
        b"* 1 FETCH (INTERNALDATE \"x\" BODY[] {5}\r\nxxxxx)\r\n",
        b"* 1 FETCH (XFOO a{5}\r\nxxxxx)\r\n",
        b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {5}\r\nxxxxx)\r\n",
        // In the first words.
        b"* {5}\r\nxxxxx\r\n",
    ];
    for answer in bad {
        let e = scan(100, answer, 3).unwrap_err();
        assert!(e.contains("where this client takes none"), "{e}");
    }
    let mut long = b"* SEARCH".to_vec();
    while long.len() <= MAX_LINE {
        long.extend_from_slice(b" 1234567");
    }
    assert!(scan(100, &long, 4096).unwrap_err().contains("outside its literals"));
    // The limit is per response: the next one starts afresh.
    assert_eq!(
        scan(
            5,
            b"* LIST () \"/\" {5}\r\nINBOX\r\n* LIST () \"/\" {5}\r\nDraft\r\n",
            1
        ),
        Ok(())
    );
    assert!(scan(9, b"* X ({5}\r\nINBOX {5}\r\nDraft)\r\n", 1).is_err());
}

/// The folder's `PERMANENTFLAGS` say which flags stick: a keyword only
/// where `\*` is among them (Dovecot), not on a server that keeps only the
/// system flags.
#[tokio::test]
async fn permanent_flags_say_which_flags_stick() {
    let port = scripted(FAKE_GREETING, |tag, rest| {
        if rest.starts_with("SELECT") {
            format!(
                "* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [PERMANENTFLAGS (\\Deleted \\Seen)] limited\r\n\
                 {tag} OK [READ-WRITE] selected\r\n"
            )
        } else {
            fake(tag, rest, |tag, _| format!("{tag} OK\r\n"))
        }
    })
    .await;
    let mut s = Session::open(&fake_settings(port)).await.unwrap();
    s.select("INBOX").await.unwrap();
    assert!(s.keeps_flag("\\Seen") && s.keeps_flag("\\seen"));
    assert!(!s.keeps_flag("$SluiceReceived") && !s.keeps_flag("\\Flagged"));

    // None said: every flag is kept (RFC 3501 7.1).
    let port = scripted(FAKE_GREETING, |tag, rest| {
        fake(tag, rest, |tag, _| format!("{tag} OK\r\n"))
    })
    .await;
    let mut s = Session::open(&fake_settings(port)).await.unwrap();
    s.select("INBOX").await.unwrap();
    assert!(s.keeps_flag("$SluiceReceived"));

    let (_dir, dovecot) = plain_server();
    let mut s = open_plain(&dovecot).await;
    s.select("INBOX").await.unwrap();
    assert!(s.keeps_flag("$SluiceReceived") && s.keeps_flag("\\Flagged"));
}
