//! POP3 and IMAP receive locations of the real binary against Dovecot (the
//! compliance kit's fixture), over STLS and implicit TLS: mails with
//! attachments received, relayed by SMTP (aiosmtpd) with their attachments
//! and written to a folder; a broken mail suspended as received; `kill -9`
//! survived without a mail lost or received twice.

use std::path::Path;
use std::time::Duration;

use mail_parser::MimeHeaders;
use sluice_adapters::kit::dovecot::{Dovecot, DovecotOptions};
use sluice_adapters::kit::smtpd::{Smtpd, SmtpdOptions};

use crate::common::*;

const POP_USER: &str = "pop";
const IMAP_USER: &str = "imap";
const PASSWORD: &str = "Pw-mail-e2e-not-shown";

/// Dovecot with TLS (certificate for `localhost`) and the two users; the
/// certificate's path.
fn dovecot(dir: &Path) -> (Dovecot, std::path::PathBuf) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key_pair.serialize_pem()).unwrap();
    let run = dir.join("dc");
    std::fs::create_dir(&run).unwrap();
    let opts = DovecotOptions {
        tls: Some((c.clone(), k)),
        users: vec![
            (POP_USER.to_string(), PASSWORD.to_string()),
            (IMAP_USER.to_string(), PASSWORD.to_string()),
        ],
    };
    (Dovecot::start(&run, &opts), c)
}

/// Folders for Dovecot (its sockets want a short path; as root, a folder
/// others may search): under /tmp.
fn short_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("m").tempdir_in("/tmp").unwrap()
}

fn invoice(i: usize, attachment: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(attachment);
    let mut raw = format!(
        "From: partner@example.com\r\nTo: orders@example.com\r\nSubject: invoice {i}\r\nMessage-ID: <inv-{i}@example.com>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n\
         Content-Type: text/plain\r\n\r\nInvoice {i} attached.\r\n--b{i}\r\nContent-Type: application/octet-stream\r\n\
         Content-Disposition: attachment; filename=\"invoice-{i}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    );
    for line in encoded.as_bytes().chunks(76) {
        raw.push_str(std::str::from_utf8(line).unwrap());
        raw.push_str("\r\n");
    }
    raw.push_str(&format!("--b{i}--\r\n"));
    raw.into_bytes()
}

/// Mails come in by POP3 (STLS) and IMAP (implicit TLS), are written out
/// (their text) and relayed by SMTP with their attachments identical; a
/// mail with a broken structure is stored as received, suspended with the
/// reason; the password never shows.
#[test]
fn mails_come_in_by_pop3_and_imap_with_their_attachments() {
    let root = tempfile::tempdir().unwrap();
    let mail_dir = short_dir();
    let (dovecot, ca) = dovecot(mail_dir.path());
    let smtp_dir = tempfile::tempdir().unwrap();
    let smtpd = Smtpd::start(smtp_dir.path(), &SmtpdOptions::default());
    let secret = root.path().join("mail.password");
    std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    let attachment = |i: usize| content(i as u64, 100_000 + i * 1000);
    for i in 0..3 {
        dovecot.deliver(POP_USER, &invoice(i, &attachment(i)));
        dovecot.deliver(IMAP_USER, &invoice(10 + i, &attachment(10 + i)));
    }
    let broken =
        b"Subject: broken\r\nContent-Type: multipart/mixed; boundary=\"z\"\r\n\r\n--z\r\n\r\nno closing boundary\r\n";
    dovecot.deliver(POP_USER, broken);
    let config = write_config(
        root.path(),
        &format!(
            r#"
[receive_ports.mail.locations.pop]
adapter = {{ type = "pop3", url = "pop3://{POP_USER}@localhost:{pop}", password_file = "{secret}", tls_ca = "{ca}", poll_interval = "200ms" }}

[receive_ports.mail.locations.imap]
adapter = {{ type = "imap", url = "imaps://{IMAP_USER}@localhost:{imaps}/INBOX", password_file = "{secret}", tls_ca = "{ca}", poll_interval = "200ms" }}

[send_ports.texts]
filter = 'receive.port == "mail"'
adapter = {{ type = "file", path = "texts", file_name = "%property:mail.subject%.txt", create_folder = true }}

[send_ports.relay]
filter = 'receive.port == "mail"'
adapter = {{ type = "smtp", url = "{smtp}", starttls = "off", from = "sluice@example.com", to = "archive@example.com", subject = "%property:mail.subject%" }}
"#,
            pop = dovecot.pop3_port,
            imaps = dovecot.imaps_port.unwrap(),
            secret = secret.display(),
            ca = ca.display(),
            smtp = smtpd.url(false),
        ),
    );
    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);
    let texts = root.path().join("texts");
    wait_until(Duration::from_secs(60), "six mails written out", || {
        names(&texts).len() == 6
    });
    let relayed = smtpd.wait_for(6, Duration::from_secs(30));
    wait_until(
        Duration::from_secs(30),
        "the mailboxes emptied, the broken mail suspended",
        || {
            dovecot.mailbox(POP_USER).is_empty()
                && dovecot.mailbox(IMAP_USER).is_empty()
                && status_json(&config)["suspended"] == 1
        },
    );
    for i in [0, 1, 2, 10, 11, 12] {
        let text = std::fs::read(texts.join(format!("invoice {i}.txt"))).unwrap();
        assert_eq!(text, format!("Invoice {i} attached.").as_bytes());
        let mail = relayed
            .iter()
            .find(|m| String::from_utf8_lossy(&m.content).contains(&format!("Subject: invoice {i}\r\n")))
            .unwrap_or_else(|| panic!("invoice {i} was not relayed"));
        let parsed = mail_parser::MessageParser::default().parse(&mail.content).unwrap();
        let att = parsed.attachment(0).expect("the attachment relayed");
        assert_eq!(att.attachment_name(), Some(format!("invoice-{i}.bin").as_str()));
        assert!(att.contents() == attachment(i), "invoice {i}'s attachment differs");
    }
    node.stop();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("stored as received, suspended"),
        "the broken mail is said: {log_text}"
    );
    assert!(!log_text.contains(PASSWORD), "the password shows in the log");
    // The broken mail, as received, is the one message left.
    assert_eq!(status_json(&config)["spool"], 1);
    let listed = text(&sl(&config, &["suspended", "list"]).stdout);
    assert!(listed.contains("the mail ends inside"), "{listed}");
}

/// 150 mails in each mailbox; the node is killed (`kill -9`) twice while
/// it takes them: at the end each mail was written once, none is left.
#[test]
fn mails_survive_kill_9_none_lost_none_twice() {
    let root = tempfile::tempdir().unwrap();
    let mail_dir = short_dir();
    let (dovecot, ca) = dovecot(mail_dir.path());
    const MAILS: usize = 150;
    for i in 0..MAILS {
        let body = |u: &str| {
            format!(
                "Subject: {u} {i:03}\r\nMessage-ID: <{u}-{i}@x>\r\n\r\n{}\r\n",
                "x".repeat(i * 97 % 20_000)
            )
        };
        dovecot.deliver(POP_USER, body("pop").as_bytes());
        dovecot.deliver(IMAP_USER, body("imap").as_bytes());
    }
    let config = write_config(
        root.path(),
        &format!(
            r#"
[receive_ports.mail.locations.pop]
adapter = {{ type = "pop3", url = "pop3s://{POP_USER}@localhost:{pop3s}", password_env = "SLUICE_E2E_MAIL_PASSWORD", tls_ca = "{ca}", poll_interval = "200ms", max_per_poll = 20 }}

[receive_ports.mail.locations.imap]
adapter = {{ type = "imap", url = "imap://{IMAP_USER}@localhost:{imap}", password_env = "SLUICE_E2E_MAIL_PASSWORD", tls_ca = "{ca}", poll_interval = "200ms", max_per_poll = 20 }}

[send_ports.got]
filter = 'receive.port == "mail"'
adapter = {{ type = "file", path = "got", file_name = "%property:mail.subject%.%MessageId%", create_folder = true }}
"#,
            pop3s = dovecot.pop3s_port.unwrap(),
            imap = dovecot.imap_port,
            ca = ca.display(),
        ),
    );
    let got = root.path().join("got");
    let log = root.path().join("node.log");
    let start = || {
        let mut cmd = sluice();
        cmd.env("SLUICE_E2E_MAIL_PASSWORD", PASSWORD);
        Node::start_with(cmd, &config, &log)
    };
    for kill_after in [50, 170] {
        let mut node = start();
        wait_until(Duration::from_secs(60), "mails arriving", || {
            std::fs::read_dir(&got).map(|d| d.count()).unwrap_or(0) >= kill_after
        });
        node.kill9();
    }
    let mut node = start();
    wait_until(Duration::from_secs(120), "every mail taken", || {
        dovecot.mailbox(POP_USER).is_empty() && dovecot.mailbox(IMAP_USER).is_empty()
    });
    wait_until(Duration::from_secs(30), "the box empty", || {
        status_json(&config)["spool"] == 0
    });
    node.stop();
    let mut by_subject = std::collections::BTreeMap::<String, usize>::new();
    for entry in std::fs::read_dir(&got).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let subject = name.rsplit_once('.').unwrap().0.to_string();
        *by_subject.entry(subject).or_default() += 1;
    }
    // A POP3 session deletes at its QUIT, after up to 20 mails: a kill
    // leaves some published and not deleted, which the next start finishes.
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("published before the last stop"),
        "no kill landed between a publish and its delete: {log_text}"
    );
    let twice: Vec<_> = by_subject.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "received twice: {twice:?}");
    for u in ["pop", "imap"] {
        for i in 0..MAILS {
            assert!(by_subject.contains_key(&format!("{u} {i:03}")), "{u} {i:03} lost");
        }
    }
}
