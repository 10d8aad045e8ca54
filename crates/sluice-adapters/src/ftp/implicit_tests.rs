//! FTPS with implicit TLS (`ftps://`: TLS from the first byte) against a
//! real server: vsftpd with `implicit_ssl=YES` (`kit::vsftpd`; it needs
//! root and Debian's vsftpd, which `scripts/test.sh` installs). libunftp,
//! the server of the other FTP tests, has no implicit TLS.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{FtpReceiveConfig, FtpSendConfig};
use crate::kit::vsftpd::{PASSWORD, Vsftpd};
use crate::kit::{self, FakeAdmission, FakePublisher, eventually, names_in};
use crate::{Delivered, ReceiveAdapter, Transmitter};

const WAIT: Duration = Duration::from_secs(20);

/// A vsftpd with its certificate (for `localhost`), in a folder of its own.
struct Server {
    // Stopped before its folder goes.
    ftpd: Vsftpd,
    /// The certificate: what `tls_ca` trusts.
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = kit::certificate(dir.path());
        let ftpd = Vsftpd::start(dir.path(), &cert, &key);
        Server { ftpd, cert, _dir: dir }
    }

    /// `tls_ca = "<the certificate>"`.
    fn trusted(&self) -> String {
        format!("tls_ca = \"{}\"", self.cert.display())
    }
}

fn send_config(url: &str, extra: &str) -> FtpSendConfig {
    toml::from_str(&format!(
        "url = \"{url}\"\npassword = \"{PASSWORD}\"\nfile_name = \"%SourceFileName%\"\ntimeout = \"5s\"\n{extra}"
    ))
    .unwrap()
}

fn receive_config(url: &str, extra: &str) -> FtpReceiveConfig {
    toml::from_str(&format!(
        "url = \"{url}\"\npassword = \"{PASSWORD}\"\npoll_interval = \"50ms\"\nretry_after = \"50ms\"\n\
         timeout = \"5s\"\n{extra}"
    ))
    .unwrap()
}

fn body(bytes: &[u8]) -> crate::Body {
    Box::new(std::io::Cursor::new(bytes.to_vec()))
}

#[tokio::test]
async fn a_send_port_delivers_over_implicit_tls() {
    let s = Server::start();
    let t = send_config(
        &s.ftpd.url("out"),
        &format!("{}\ncreate_folder = true\nmax_connections = 4", s.trusted()),
    )
    .build()
    .unwrap();
    // Many writes on the data connection, and a small file after it on
    // the same (pooled) control connection.
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    let delivered = t
        .transmit(&kit::outbound("big.bin"), body(&big))
        .await
        .unwrap_or_else(|e| panic!("{e}\nvsftpd's log:\n{}", s.ftpd.log_tail(40)));
    match delivered {
        Delivered::To(to) => assert_eq!(to, format!("ftps://***@localhost:{}/out/big.bin", s.ftpd.port)),
        other => panic!("{other:?}"),
    }
    t.transmit(&kit::outbound("small.txt"), body(b"over implicit TLS\r\n"))
        .await
        .unwrap_or_else(|e| panic!("{e}\nvsftpd's log:\n{}", s.ftpd.log_tail(40)));
    let took = started.elapsed();
    let out = s.ftpd.files().join("out");
    assert_eq!(std::fs::read(out.join("big.bin")).unwrap(), big, "byte for byte");
    assert_eq!(
        std::fs::read(out.join("small.txt")).unwrap(),
        b"over implicit TLS\r\n",
        "binary: the line end as it was"
    );
    assert_eq!(names_in(&out), ["big.bin", "small.txt"], "no temporary file is left");
    assert!(
        std::fs::read_dir(&out)
            .unwrap()
            .all(|e| std::fs::metadata(e.unwrap().path()).unwrap().uid() == s.ftpd.uid),
        "written by the server as its user"
    );
    // Both as the user, over protected data connections (vsftpd refuses
    // others: force_local_data_ssl).
    let log = std::fs::read_to_string(s.ftpd.dir.join("vsftpd.log")).unwrap();
    assert!(log.contains("OK UPLOAD") && log.contains("PROT P"), "{log}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    // Several at once: four control connections over TLS, each with its
    // own protected data connections, each resuming its own control
    // connection's session (vsftpd's require_ssl_reuse, on by default).
    let t = Arc::new(t);
    let sends: Vec<_> = (0..12)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move {
                t.transmit(
                    &kit::outbound(&format!("f{i:02}.txt")),
                    body(format!("file {i}").as_bytes()),
                )
                .await
            })
        })
        .collect();
    for send in sends {
        if let Err(e) = send.await.unwrap() {
            panic!("{e}\nvsftpd's log:\n{}", s.ftpd.log_tail(40));
        }
    }
    let got = names_in(&out);
    assert_eq!(got.len(), 14, "{got:?}: no temporary file is left");
    assert_eq!(std::fs::read_to_string(out.join("f07.txt")).unwrap(), "file 7");

    // The same message again (its outcome lost): the file there is read
    // back over TLS (SIZE, RETR) and taken for the earlier delivery.
    let again = t
        .transmit(&kit::outbound("small.txt"), body(b"over implicit TLS\r\n"))
        .await
        .unwrap_or_else(|e| panic!("{e}\nvsftpd's log:\n{}", s.ftpd.log_tail(40)));
    assert!(matches!(again, Delivered::AlreadyThere(_)), "{again:?}");
    assert_eq!(names_in(&out).len(), 14);
}

#[tokio::test]
async fn a_receive_location_takes_a_file_over_implicit_tls() {
    let s = Server::start();
    s.ftpd.mkdir("in");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    s.ftpd.put("in/order.xml", &bytes);
    let config = receive_config(&s.ftpd.url("in"), &s.trusted());
    let publisher = FakePublisher::new();
    let r = kit::run_source(
        ReceiveAdapter::build(&config).unwrap(),
        &publisher,
        &FakeAdmission::new(),
    )
    .await;
    let folder = s.ftpd.files().join("in");
    let log = || s.ftpd.log_tail(40);
    eventually(WAIT, "the file published", || async {
        publisher.published().len() == 1
    })
    .await;
    eventually(WAIT, "the file deleted from the server", || async {
        names_in(&folder).is_empty()
    })
    .await;
    // No second time (the next listings find nothing).
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.stop().await;
    let published = publisher.published();
    assert_eq!(published.len(), 1, "{}", log());
    assert_eq!(published[0].body, bytes, "byte for byte");
    assert_eq!(
        published[0].context.get("file", "name").unwrap().value.to_text(),
        "order.xml"
    );
    let url = published[0].context.get("ftp", "url").unwrap().value.to_text();
    assert!(
        url.starts_with("ftps://")
            && url.ends_with(&format!("localhost:{}/in/order.xml", s.ftpd.port))
            && !url.contains(&s.ftpd.user),
        "{url}"
    );
    assert_eq!(publisher.settled().len(), 1);
    assert!(names_in(&folder).is_empty(), "{:?}", names_in(&folder));
}

#[tokio::test]
async fn an_untrusted_certificate_fails_the_send_before_the_login() {
    let s = Server::start();
    // The built-in roots only: they do not vouch for the test's certificate.
    let t = send_config(&s.ftpd.url(""), "").build().unwrap();
    let started = Instant::now();
    let e = t
        .transmit(&kit::outbound("secret.txt"), body(b"not for them"))
        .await
        .unwrap_err();
    assert!(e.retryable && !e.needs_edit, "{e}");
    assert!(
        e.message.contains("TLS") && e.message.contains("certificate"),
        "says why: {e}"
    );
    assert!(!e.message.contains(PASSWORD), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(names_in(&s.ftpd.files()).is_empty(), "nothing is written");
    // The server saw no command: the handshake failed first.
    let log = std::fs::read_to_string(s.ftpd.dir.join("vsftpd.log")).unwrap_or_default();
    assert!(!log.contains("FTP command"), "{log}");
}
