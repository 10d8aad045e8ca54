//! SMTP send ports of the real binary against aiosmtpd (the compliance
//! kit's fixture), over STARTTLS with a login.

use std::time::Duration;

use sluice_adapters::kit::smtpd::{Smtpd, SmtpdOptions};

use crate::common::*;

/// Files dropped in a FILE location are mailed to two recipients, one of
/// which the server refuses (550): the other gets it once, the message is
/// suspended with the server's words, and resuming it tries the refused
/// recipient only. A second port mails the same files to a recipient the
/// server takes: its tracking records say which mail (Message-ID) the
/// server took, and its answer. The password never shows in the log.
#[test]
fn files_are_mailed_each_recipient_answered_and_the_refused_one_suspended() {
    let root = tempfile::tempdir().unwrap();
    let served = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (c, k) = (served.path().join("cert.pem"), served.path().join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key_pair.serialize_pem()).unwrap();
    let smtpd = Smtpd::start(
        served.path(),
        &SmtpdOptions {
            tls: Some((c.clone(), k)),
            auth: Some(("sluice".into(), "Pw-e2e-not-shown".into())),
            ..Default::default()
        },
    );
    let secret = root.path().join("smtp.password");
    std::fs::write(&secret, "Pw-e2e-not-shown\n").unwrap();
    let config = write_config(
        root.path(),
        &format!(
            r#"
[send_ports.mail]
filter = 'receive.port == "in"'
adapter = {{ type = "smtp", url = "{url}", tls_ca = "{ca}", username = "sluice", password_file = "{secret}", from = "Sluice <ops@sluice.example>", to = "ok@x.example, refuse@x.example", subject = "File %SourceFileName%", attach = true }}
retry = {{ count = 2, interval = "1s" }}

[send_ports.audit]
filter = 'receive.port == "in"'
adapter = {{ type = "smtp", url = "{url}", tls_ca = "{ca}", username = "sluice", password_file = "{secret}", from = "ops@sluice.example", to = "audit@x.example" }}
"#,
            url = smtpd.url(false),
            ca = c.display(),
            secret = secret.display(),
        ),
    );
    let log = root.path().join("node.log");
    let node = Node::start(&config, &log);
    const FILES: u64 = 5;
    for i in 0..FILES {
        drop_file(
            &root.path().join("in"),
            &format!("f{i}.csv"),
            &content(i, 5000 + i as usize),
        );
    }
    wait_until(Duration::from_secs(60), "every file suspended at `mail`", || {
        status_json(&config)["suspended"] == FILES
    });
    let taken = smtpd.wait_for(2 * FILES as usize, Duration::from_secs(10));
    let count = |who: &str| taken.iter().filter(|m| m.rcpt_tos == [who]).count();
    assert_eq!((count("ok@x.example"), count("audit@x.example")), (5, 5));
    assert!(taken.iter().all(|m| m.tls && m.auth.as_deref() == Some("sluice")));
    let list = sl(&config, &["suspended", "list", "--port", "mail"]);
    let listed = text(&list.stdout);
    assert!(
        listed.contains("550 5.1.1 <refuse@x.example>: Recipient address rejected: User unknown"),
        "{listed}"
    );
    assert!(listed.contains("delivered to ok@x.example"), "{listed}");

    // Resumed: the refused recipient alone is tried again (and refused
    // again); ok@ gets no second copy.
    let out = sl(&config, &["suspended", "resume", "--all"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::thread::sleep(Duration::from_secs(2));
    wait_until(Duration::from_secs(60), "suspended again", || {
        status_json(&config)["suspended"] == FILES
    });
    assert_eq!(smtpd.taken().len(), 2 * FILES as usize, "no mail went twice");

    // The audit port's deliveries name the mail the server took.
    let tracking = sl(&config, &["messages", "tracking", "--json"]);
    let events = json_of(&tracking, "tracking");
    let details: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subscriber"] == "audit" && (e["event"] == "delivered" || e["event"] == "completed"))
        .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(details.len(), FILES as usize, "{events:#}");
    for d in &details {
        assert!(d.contains("Message-ID <") && d.contains("@sluice.example>"), "{d}");
        assert!(d.contains("250 2.0.0 Ok: queued as Q"), "{d}");
    }
    drop(node);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("Pw-e2e-not-shown"), "the password is never logged");
}

/// `examples/ftp-to-mail` as written (its FTP and mail servers' ports
/// swapped for the test's): files on the FTP server are mailed as
/// attachments, whole, and gone from the server.
#[test]
fn the_ftp_to_mail_example_mails_each_file_as_an_attachment() {
    let root = tempfile::tempdir().unwrap();
    let served = tempfile::tempdir().unwrap();
    let ftp_root = tempfile::tempdir().unwrap();
    let outbox = ftp_root.path().join("outbox");
    std::fs::create_dir(&outbox).unwrap();
    let ftp_port = crate::ftp::ftp_server(ftp_root.path());
    let smtpd = Smtpd::start(
        served.path(),
        &SmtpdOptions {
            no_starttls: true,
            ..Default::default()
        },
    );
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/ftp-to-mail/sluice.toml"
    ))
    .unwrap();
    let config = root.path().join("sluice.toml");
    let text = example
        .replace(
            "ftp://partner@127.0.0.1:2121/outbox",
            &format!("ftp://partner@127.0.0.1:{ftp_port}/outbox"),
        )
        .replace("smtp://127.0.0.1:8025", &format!("smtp://127.0.0.1:{}", smtpd.port))
        .replace("poll_interval = \"5s\"", "poll_interval = \"200ms\"");
    assert_ne!(text, example);
    std::fs::write(&config, text).unwrap();
    const FILES: u64 = 4;
    for i in 0..FILES {
        std::fs::write(outbox.join(format!("report-{i}.csv")), content(i, 100_000 + i as usize)).unwrap();
    }
    let log = root.path().join("node.log");
    let mut cmd = sluice();
    cmd.env("FTP_PASSWORD", crate::ftp::PASSWORD);
    let node = Node::start_with(cmd, &config, &log);
    let taken = smtpd.wait_for(FILES as usize, Duration::from_secs(60));
    wait_until(Duration::from_secs(30), "the outbox emptied", || {
        names(&outbox).is_empty()
    });
    drop(node);
    assert_eq!(taken.len() as u64, FILES);
    let mut seen = Vec::new();
    for m in &taken {
        assert_eq!(m.rcpt_tos, ["operations@example.com", "archive@example.com"]);
        let text = String::from_utf8_lossy(&m.content);
        assert!(!text.contains("archive@"), "bcc stays out of the headers");
        let name = text
            .split("filename=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("an attachment's name")
            .to_string();
        let i: u64 = name
            .trim_start_matches("report-")
            .trim_end_matches(".csv")
            .parse()
            .unwrap();
        // The attachment, decoded, is the file.
        let part = text.split(&format!("filename=\"{name}\"")).nth(1).unwrap();
        let b64: String = part
            .split("\r\n\r\n")
            .nth(1)
            .unwrap()
            .split("\r\n--")
            .next()
            .unwrap()
            .split("\r\n")
            .collect();
        assert_eq!(decode_base64(&b64), content(i, 100_000 + i as usize), "{name}");
        seen.push(i);
    }
    seen.sort();
    assert_eq!(seen, (0..FILES).collect::<Vec<_>>());
}

/// Standard base64, for reading a mail back.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let n = chunk.iter().filter(|&&c| c != b'=').count();
        let v = chunk
            .iter()
            .map(|&c| if c == b'=' { 0 } else { value(c) as u32 })
            .fold(0u32, |a, x| (a << 6) | x);
        let bytes = v.to_be_bytes();
        out.extend_from_slice(&bytes[1..n]);
    }
    out
}
