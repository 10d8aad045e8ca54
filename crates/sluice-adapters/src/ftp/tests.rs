//! The FTP send port against a real FTP server: libunftp (an FTP and FTPS
//! server library, not this crate's client code) with a folder on disk, in
//! the test's process, on a free port. The server helpers serve the
//! receive tests (`receive_tests.rs`) too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sluice_model::{Context, MessageId};
use unftp_core::auth::{AuthenticationError, Authenticator, Credentials, Principal};

use super::FtpSendConfig;
pub(super) use crate::kit::{certificate, free_port};
use crate::{Delivered, Outbound, Transmitter};

pub(super) const USER: &str = "sluice";
pub(super) const PASSWORD: &str = "s3cret-pw";

/// One user, one password.
#[derive(Debug)]
struct OnePassword;

#[async_trait]
impl Authenticator for OnePassword {
    async fn authenticate(&self, user: &str, creds: &Credentials) -> Result<Principal, AuthenticationError> {
        if user == USER && creds.password.as_deref() == Some(PASSWORD) {
            Ok(Principal { username: user.into() })
        } else {
            Err(AuthenticationError::BadPassword)
        }
    }
}

/// An FTP server on 127.0.0.1 serving `root` (explicit FTPS too, with
/// `tls`); its port once it answers.
pub(super) async fn server(root: &Path, tls: Option<&(PathBuf, PathBuf)>) -> u16 {
    let root = root.to_path_buf();
    let port = free_port();
    let mut builder = libunftp::ServerBuilder::with_authenticator(
        Box::new(move || unftp_sbe_fs::Filesystem::new(root.clone()).unwrap()),
        Arc::new(OnePassword),
    );
    if let Some((cert, key)) = tls {
        builder = builder.ftps(cert.clone(), key.clone());
    }
    let server = builder.build().unwrap();
    tokio::spawn(server.listen(format!("127.0.0.1:{port}")));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "the FTP server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    port
}

fn config(url: &str, extra: &str) -> FtpSendConfig {
    let timeout = if extra.contains("timeout") {
        ""
    } else {
        "timeout = \"5s\"\n"
    };
    toml::from_str(&format!(
        "url = \"{url}\"\npassword = \"{PASSWORD}\"\nfile_name = \"%SourceFileName%\"\n{timeout}{extra}"
    ))
    .unwrap()
}

fn outbound(name: &str) -> Outbound {
    let mut context = Context::new();
    context.promote("file", "name", name);
    Outbound {
        id: MessageId::new(),
        port: "out".into(),
        context,
        attempt: 1,
        progress: None,
    }
}

pub(super) fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A server over a fresh folder that has an `in/` folder.
pub(super) async fn served_with_in() -> (tempfile::TempDir, u16) {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("in")).unwrap();
    let port = server(root.path(), None).await;
    (root, port)
}

/// One message through a port built from `config(url, extra)`.
async fn send_once(url: &str, extra: &str, name: &str, bytes: &[u8]) -> Result<Delivered, crate::TransmitError> {
    config(url, extra)
        .build()
        .unwrap()
        .transmit(&outbound(name), body(bytes))
        .await
}

fn body(bytes: &[u8]) -> crate::Body {
    Box::new(std::io::Cursor::new(bytes.to_vec()))
}

#[tokio::test]
async fn files_arrive_whole_under_their_names_several_at_once() {
    let (root, port) = served_with_in().await;
    let t = config(&format!("ftp://{USER}@127.0.0.1:{port}/in"), "max_connections = 2")
        .build()
        .unwrap();
    // A 3 MiB body (many writes) and small ones, some at once.
    let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    match t.transmit(&outbound("big.bin"), body(&big)).await.unwrap() {
        // Where it went, as it may be shown (no user or password).
        Delivered::To(to) => assert_eq!(to, format!("ftp://***@127.0.0.1:{port}/in/big.bin")),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(root.path().join("in/big.bin")).unwrap(), big);
    let t = Arc::new(t);
    let sends: Vec<_> = (0..12)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move {
                t.transmit(&outbound(&format!("f{i:02}.txt")), body(format!("file {i}").as_bytes()))
                    .await
            })
        })
        .collect();
    for s in sends {
        s.await.unwrap().unwrap();
    }
    let got = names(&root.path().join("in"));
    assert_eq!(got.len(), 13, "{got:?}: no temporary file is left");
    assert!(got.iter().all(|n| !n.starts_with(".sluice-")), "{got:?}");
    assert_eq!(
        std::fs::read_to_string(root.path().join("in/f07.txt")).unwrap(),
        "file 7"
    );
}

#[tokio::test]
async fn an_existing_file_is_not_replaced_unless_configured_and_a_redelivery_is_recognised() {
    let root = tempfile::tempdir().unwrap();
    let port = server(root.path(), None).await;
    let url = format!("ftp://{USER}@127.0.0.1:{port}/");
    let t = config(&url, "").build().unwrap();
    std::fs::write(root.path().join("a.txt"), "someone else's").unwrap();
    let e = t.transmit(&outbound("a.txt"), body(b"ours")).await.unwrap_err();
    assert!(
        e.retryable && e.message.contains("already exists with other content"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("a.txt")).unwrap(),
        "someone else's"
    );
    assert_eq!(names(root.path()), ["a.txt"], "the temporary file is removed");
    // The same bytes: an earlier delivery of this message.
    std::fs::write(root.path().join("b.txt"), "ours").unwrap();
    let d = t.transmit(&outbound("b.txt"), body(b"ours")).await.unwrap();
    assert!(matches!(d, Delivered::AlreadyThere(_)), "{d:?}");
    assert_eq!(names(root.path()), ["a.txt", "b.txt"]);
    // As long, other bytes: not taken for an earlier delivery.
    std::fs::write(root.path().join("c.txt"), "sruo").unwrap();
    let e = t.transmit(&outbound("c.txt"), body(b"ours")).await.unwrap_err();
    assert!(e.message.contains("already exists with other content"), "{e}");
    assert_eq!(std::fs::read_to_string(root.path().join("c.txt")).unwrap(), "sruo");
    let t = config(&url, "overwrite = true").build().unwrap();
    t.transmit(&outbound("a.txt"), body(b"ours")).await.unwrap();
    assert_eq!(std::fs::read_to_string(root.path().join("a.txt")).unwrap(), "ours");
}

#[tokio::test]
async fn the_folder_is_made_when_configured_and_waited_for_otherwise() {
    let root = tempfile::tempdir().unwrap();
    let port = server(root.path(), None).await;
    let url = format!("ftp://{USER}@127.0.0.1:{port}/out/eu/orders");
    let e = send_once(&url, "", "x", b"x").await.unwrap_err();
    assert!(
        e.retryable && e.message.contains("changing to folder out/eu/orders"),
        "{e}"
    );
    send_once(&url, "create_folder = true", "x", b"x").await.unwrap();
    assert_eq!(std::fs::read(root.path().join("out/eu/orders/x")).unwrap(), b"x");
}

#[tokio::test]
async fn a_name_from_the_message_cannot_leave_the_folder() {
    let (root, port) = served_with_in().await;
    let t = config(&format!("ftp://{USER}@127.0.0.1:{port}/in"), "")
        .build()
        .unwrap();
    for name in ["../escaped", "a/b", "..", "x\r\nDELE y"] {
        let e = t.transmit(&outbound(name), body(b"x")).await.unwrap_err();
        assert!(!e.retryable && e.needs_edit, "{name:?}: {e}");
    }
    assert!(names(root.path()).iter().all(|n| n == "in"), "{:?}", names(root.path()));
    assert!(names(&root.path().join("in")).is_empty());
}

#[tokio::test]
async fn a_wrong_password_a_server_gone_and_a_silent_server_fail_clearly_and_in_time() {
    let root = tempfile::tempdir().unwrap();
    let port = server(root.path(), None).await;
    let mut c = config(&format!("ftp://{USER}@127.0.0.1:{port}/"), "");
    c.password = Some(crate::support::Secret::new("wrong-pw"));
    let e = c
        .build()
        .unwrap()
        .transmit(&outbound("x"), body(b"x"))
        .await
        .unwrap_err();
    assert!(e.retryable && e.message.contains("logging in"), "{e}");
    assert!(!e.message.contains("wrong-pw") && !e.message.contains(PASSWORD), "{e}");
    assert!(names(root.path()).is_empty());

    // Nothing listens.
    let gone = free_port();
    let e = send_once(&format!("ftp://{USER}@127.0.0.1:{gone}/"), "", "x", b"x")
        .await
        .unwrap_err();
    assert!(e.retryable && e.message.contains("connecting"), "{e}");

    // A server that takes the connection and never greets.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let started = Instant::now();
    let e = send_once(
        &format!("ftp://{USER}@127.0.0.1:{silent_port}/"),
        "timeout = \"1s\"",
        "x",
        b"x",
    )
    .await
    .unwrap_err();
    assert!(e.retryable && e.message.contains("no answer within"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn explicit_tls_checks_the_certificate_and_delivers() {
    let root = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let tls = certificate(certs.path());
    let port = server(root.path(), Some(&tls)).await;
    let url = format!("ftpes://{USER}@localhost:{port}/");
    // Not trusted: the handshake fails, before the login.
    let e = send_once(&url, "", "x", b"x").await.unwrap_err();
    assert!(e.retryable && e.message.contains("AUTH TLS"), "{e}");
    let t = config(&url, &format!("tls_ca = \"{}\"", tls.0.display()))
        .build()
        .unwrap();
    t.transmit(&outbound("secret.txt"), body(b"over TLS")).await.unwrap();
    assert_eq!(std::fs::read(root.path().join("secret.txt")).unwrap(), b"over TLS");
}

#[test]
fn configuration_is_checked_and_secrets_never_show() {
    let c = config("ftp://u@h/in", "");
    crate::kit::check_secrets_not_in_debug(&format!("{c:?}"), &[PASSWORD]);
    let t = c.build().unwrap();
    crate::kit::check_secrets_not_in_debug(&format!("{t:?}"), &[PASSWORD]);
    for (extra, why) in [
        ("timeout = \"0s\"", "timeout must be"),
        ("max_connections = 0", "max_connections must be"),
        ("file_name = \"a/%MessageId%\"", "file_name"),
        ("password_env = \"X\"", "exactly one of `password`"),
    ] {
        let text = format!("url = \"ftp://u@h/in\"\npassword = \"{PASSWORD}\"\n{extra}");
        let e = toml::from_str::<FtpSendConfig>(&text)
            .map_err(|e| e.to_string())
            .and_then(|c| c.build().map(drop).map_err(|e| e.to_string()))
            .unwrap_err();
        assert!(e.contains(why), "{extra}: {e}");
        assert!(!e.contains(PASSWORD), "{e}");
    }
}

#[tokio::test]
async fn an_attempt_removes_what_earlier_attempts_left() {
    let (root, port) = served_with_in().await;
    let t = config(&format!("ftp://{USER}@127.0.0.1:{port}/in"), "")
        .build()
        .unwrap();
    let mut msg = outbound("late.txt");
    msg.attempt = 3;
    // Attempt 1 was killed mid-upload; attempt 2 failed before its STOR.
    let left = root.path().join(format!("in/.sluice-tmp.out.{}.1", msg.id));
    std::fs::write(&left, "half").unwrap();
    t.transmit(&msg, body(b"whole")).await.unwrap();
    assert_eq!(names(&root.path().join("in")), ["late.txt"]);
}

#[tokio::test]
async fn two_messages_with_one_name_never_both_count_as_delivered() {
    let (root, port) = served_with_in().await;
    let t = Arc::new(
        config(&format!("ftp://{USER}@127.0.0.1:{port}/in"), "max_connections = 8")
            .build()
            .unwrap(),
    );
    let sends: Vec<_> = (0..8u8)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move { t.transmit(&outbound("same.txt"), body(&[b'a' + i; 1000])).await })
        })
        .collect();
    let mut delivered = Vec::new();
    for (i, s) in sends.into_iter().enumerate() {
        if s.await.unwrap().is_ok() {
            delivered.push(i as u8);
        }
    }
    assert_eq!(delivered.len(), 1, "exactly one is delivered: {delivered:?}");
    let got = std::fs::read(root.path().join("in/same.txt")).unwrap();
    assert_eq!(got, vec![b'a' + delivered[0]; 1000], "and it is the file there");
    assert_eq!(
        names(&root.path().join("in")),
        ["same.txt"],
        "no temporary file is left"
    );
}
