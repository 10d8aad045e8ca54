//! The fixture against itself: Dovecot started, mail seeded, and a raw
//! client speaking POP3 and IMAP to it (in the clear, STARTTLS, implicit TLS).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::{TcpSocket, TcpStream};

use super::{Dovecot, DovecotOptions, PASSWORD, USER, flags_of};

const MAIL_1: &[u8] = b"From: a@example.com\r\nSubject: one\r\n\r\nfirst body\r\n";
const MAIL_2: &[u8] = b"From: b@example.com\r\nSubject: two\r\n\r\nsecond body\r\n";

/// A line-based client over any stream (TCP or TLS).
struct Client<S>(BufStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Client(BufStream::new(stream))
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), self.0.read_line(&mut line))
            .await
            .expect("a line within 5 s")
            .expect("read a line");
        assert!(n > 0, "the server closed the connection");
        line
    }

    async fn send(&mut self, command: &str) {
        self.0.write_all(command.as_bytes()).await.expect("send");
        self.0.write_all(b"\r\n").await.expect("send");
        self.0.flush().await.expect("send");
    }

    /// A POP3 command and its one-line answer.
    async fn pop(&mut self, command: &str) -> String {
        self.send(command).await;
        self.line().await
    }

    /// A POP3 command with a multi-line answer: the lines up to `.`.
    async fn pop_multi(&mut self, command: &str) -> String {
        let first = self.pop(command).await;
        assert!(first.starts_with("+OK"), "{command}: {first}");
        let mut text = String::new();
        loop {
            let line = self.line().await;
            if line == ".\r\n" {
                return text;
            }
            text.push_str(&line);
        }
    }

    /// An IMAP command tagged `t` and every line up to its tagged answer.
    async fn imap(&mut self, command: &str) -> String {
        self.send(&format!("t {command}")).await;
        let mut text = String::new();
        loop {
            let line = self.line().await;
            text.push_str(&line);
            if line.starts_with("t ") {
                return text;
            }
        }
    }

    fn into_inner(self) -> S {
        self.0.into_inner()
    }
}

async fn connect(port: u16) -> Client<TcpStream> {
    Client::new(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"))
}

/// Connect from 127.0.0.2, so that Dovecot does not count the connection
/// as local, hence secure.
async fn connect_from_elsewhere(port: u16) -> Client<TcpStream> {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.2:0".parse::<SocketAddr>().expect("an address"))
        .expect("bind 127.0.0.2");
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    Client::new(socket.connect(to).await.expect("connect"))
}

/// TLS to `localhost` over `tcp`, trusting the certificate `cert`.
async fn tls(cert: &Path, tcp: TcpStream) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = crate::support::tls::client_connector(Some(cert)).expect("a TLS client");
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("a server name");
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .expect("a TLS handshake within 5 s")
        .expect("the TLS handshake")
}

#[test]
fn flags_come_from_the_file_name() {
    assert_eq!(flags_of(Path::new("/m/new/1.M2P3Q4.host")), "");
    assert_eq!(flags_of(Path::new("/m/cur/1.M2P3Q4.host:2,")), "");
    assert_eq!(flags_of(Path::new("/m/cur/1.M2P3Q4.host,S=22:2,FS")), "FS");
}

#[tokio::test]
async fn pop3_lists_retrieves_and_deletes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let dovecot = Dovecot::start(dir.path(), &DovecotOptions::default());
    assert_eq!((dovecot.imaps_port, dovecot.pop3s_port), (None, None));
    dovecot.deliver(USER, MAIL_1);
    dovecot.deliver(USER, MAIL_2);
    assert_eq!(dovecot.mailbox(USER).len(), 2);

    let mut bad = connect(dovecot.pop3_port).await;
    assert!(bad.line().await.starts_with("+OK"));
    assert!(bad.pop(&format!("USER {USER}")).await.starts_with("+OK"));
    let refused = bad.pop("PASS wrong").await;
    assert!(refused.starts_with("-ERR"), "a wrong password: {refused}");

    let mut pop = connect(dovecot.pop3_port).await;
    let greeting = pop.line().await;
    assert!(greeting.starts_with("+OK"), "greeting: {greeting}");
    assert!(pop.pop(&format!("USER {USER}")).await.starts_with("+OK"));
    let pass = pop.pop(&format!("PASS {PASSWORD}")).await;
    assert!(pass.starts_with("+OK"), "PASS: {pass}\n{}", dovecot.log());
    let stat = pop.pop("STAT").await;
    assert!(stat.starts_with("+OK 2 "), "STAT: {stat}");
    let one = pop.pop_multi("RETR 1").await;
    assert_eq!(one.as_bytes(), MAIL_1);
    assert!(pop.pop("DELE 1").await.starts_with("+OK"));
    assert!(pop.pop("QUIT").await.starts_with("+OK"));

    let left = dovecot.mailbox(USER);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(std::fs::read(&left[0]).expect("the mail left"), MAIL_2);
}

#[tokio::test]
async fn imap_selects_the_inbox_and_sets_flags() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let users = vec![
        (USER.to_string(), PASSWORD.to_string()),
        ("other".to_string(), "pw-other".to_string()),
    ];
    let dovecot = Dovecot::start(dir.path(), &DovecotOptions { tls: None, users });
    dovecot.deliver(USER, MAIL_1);
    dovecot.deliver(USER, MAIL_2);
    dovecot.deliver("other", MAIL_2);

    let mut imap = connect(dovecot.imap_port).await;
    assert!(imap.line().await.starts_with("* OK"));
    let login = imap.imap(&format!("LOGIN {USER} {PASSWORD}")).await;
    assert!(login.contains("t OK"), "LOGIN: {login}\n{}", dovecot.log());
    let select = imap.imap("SELECT INBOX").await;
    assert!(select.contains("* 2 EXISTS"), "SELECT: {select}");
    let store = imap.imap("STORE 2 +FLAGS (\\Seen \\Flagged)").await;
    assert!(store.contains("t OK"), "STORE: {store}");
    assert!(imap.imap("LOGOUT").await.contains("t OK"));

    let flags: Vec<String> = dovecot.mailbox(USER).iter().map(|p| flags_of(p)).collect();
    assert_eq!(flags, ["", "FS"]);

    let mut other = connect(dovecot.imap_port).await;
    other.line().await;
    assert!(other.imap("LOGIN other pw-other").await.contains("t OK"));
    assert!(other.imap("SELECT INBOX").await.contains("* 1 EXISTS"));
}

#[tokio::test]
async fn tls_on_every_port_and_no_plaintext_login_without_it() {
    let (dir, certs) = (
        tempfile::tempdir().expect("a temp dir"),
        tempfile::tempdir().expect("a temp dir"),
    );
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("a certificate");
    let (cert_pem, key_pem) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.pem()).expect("cert.pem");
    std::fs::write(&key_pem, key_pair.serialize_pem()).expect("key.pem");
    let opts = DovecotOptions {
        tls: Some((cert_pem.clone(), key_pem)),
        ..DovecotOptions::default()
    };
    let dovecot = Dovecot::start(dir.path(), &opts);
    dovecot.deliver(USER, MAIL_1);
    dovecot.deliver(USER, MAIL_2);
    let login = format!("LOGIN {USER} {PASSWORD}");

    // IMAP over implicit TLS.
    let imaps_port = dovecot.imaps_port.expect("an IMAPS port");
    let tcp = TcpStream::connect(("127.0.0.1", imaps_port)).await.expect("connect");
    let mut imaps = Client::new(tls(&cert_pem, tcp).await);
    assert!(imaps.line().await.starts_with("* OK"));
    assert!(imaps.imap(&login).await.contains("t OK"), "{}", dovecot.log());
    assert!(imaps.imap("SELECT INBOX").await.contains("* 2 EXISTS"));

    // POP3 over implicit TLS.
    let pop3s_port = dovecot.pop3s_port.expect("a POP3S port");
    let tcp = TcpStream::connect(("127.0.0.1", pop3s_port)).await.expect("connect");
    let mut pop3s = Client::new(tls(&cert_pem, tcp).await);
    assert!(pop3s.line().await.starts_with("+OK"));
    assert!(pop3s.pop(&format!("USER {USER}")).await.starts_with("+OK"));
    assert!(pop3s.pop(&format!("PASS {PASSWORD}")).await.starts_with("+OK"));
    assert!(pop3s.pop("STAT").await.starts_with("+OK 2 "));
    assert!(pop3s.pop("QUIT").await.starts_with("+OK"));

    // IMAP STARTTLS, from 127.0.0.2: refused in the clear, then fine.
    let mut imap = connect_from_elsewhere(dovecot.imap_port).await;
    let greeting = imap.line().await;
    assert!(
        greeting.contains("STARTTLS") && greeting.contains("LOGINDISABLED"),
        "{greeting}"
    );
    assert!(
        imap.imap(&login).await.contains("t NO"),
        "a plaintext LOGIN without TLS"
    );
    assert!(imap.imap("STARTTLS").await.contains("t OK"));
    let mut imap = Client::new(tls(&cert_pem, imap.into_inner()).await);
    assert!(imap.imap(&login).await.contains("t OK"));
    assert!(imap.imap("SELECT INBOX").await.contains("* 2 EXISTS"));

    // POP3 STLS, from 127.0.0.2: refused in the clear, then fine.
    let mut pop = connect_from_elsewhere(dovecot.pop3_port).await;
    assert!(pop.line().await.starts_with("+OK"));
    assert!(pop.pop_multi("CAPA").await.contains("STLS"));
    assert!(
        pop.pop(&format!("USER {USER}")).await.starts_with("-ERR"),
        "USER without TLS"
    );
    assert!(pop.pop("STLS").await.starts_with("+OK"));
    let mut pop = Client::new(tls(&cert_pem, pop.into_inner()).await);
    assert!(pop.pop(&format!("USER {USER}")).await.starts_with("+OK"));
    assert!(pop.pop(&format!("PASS {PASSWORD}")).await.starts_with("+OK"));
    assert!(pop.pop("STAT").await.starts_with("+OK 2 "));
}
