//! FTP send ports of the real binary against a real FTP server (libunftp,
//! serving a folder, in this test's process).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

const USER: &str = "partner";
pub(crate) const PASSWORD: &str = "e2e-ftp-Secret";

#[derive(Debug)]
struct OnePassword;

#[async_trait::async_trait]
impl unftp_core::auth::Authenticator for OnePassword {
    async fn authenticate(
        &self,
        user: &str,
        creds: &unftp_core::auth::Credentials,
    ) -> Result<unftp_core::auth::Principal, unftp_core::auth::AuthenticationError> {
        if user == USER && creds.password.as_deref() == Some(PASSWORD) {
            Ok(unftp_core::auth::Principal { username: user.into() })
        } else {
            Err(unftp_core::auth::AuthenticationError::BadPassword)
        }
    }
}

/// An FTP server for `root` on a free port of 127.0.0.1, running on a
/// thread of its own for the rest of the test binary's life; its port.
pub(crate) fn ftp_server(root: &Path) -> u16 {
    let root: PathBuf = root.to_path_buf();
    let port = free_port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the FTP server");
        rt.block_on(async move {
            let server = libunftp::ServerBuilder::with_authenticator(
                Box::new(move || unftp_sbe_fs::Filesystem::new(root.clone()).expect("the server's folder")),
                Arc::new(OnePassword),
            )
            .build()
            .expect("an FTP server");
            let _ = server.listen(format!("127.0.0.1:{port}")).await;
        });
    });
    wait_until(Duration::from_secs(10), "the FTP server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    port
}

/// Files dropped in a FILE location arrive on the FTP server under their
/// names, whole, with no temporary file left; the password, given in the
/// environment, shows nowhere in the node's log.
#[test]
fn files_go_out_to_an_ftp_server() {
    let root = tempfile::tempdir().unwrap();
    let served = tempfile::tempdir().unwrap();
    let port = ftp_server(served.path());
    let config = write_config(
        root.path(),
        &format!(
            r#"
[send_ports.partner]
filter = 'receive.port == "in"'
adapter = {{ type = "ftp", url = "ftp://{USER}@127.0.0.1:{port}/inbound", password_env = "SLUICE_E2E_FTP_PASSWORD", file_name = "%SourceFileName%", create_folder = true }}
retry = {{ count = 3, interval = "1s" }}
"#
        ),
    );
    let log = root.path().join("node.log");
    let mut cmd = sluice();
    cmd.env("SLUICE_E2E_FTP_PASSWORD", PASSWORD);
    let mut node = Node::start_with(cmd, &config, &log);
    const FILES: u64 = 40;
    for i in 0..FILES {
        drop_file(
            &root.path().join("in"),
            &format!("order-{i:03}.dat"),
            &content(i, 100 + (i as usize * 997) % 200_000),
        );
    }
    let inbound = served.path().join("inbound");
    wait_until(Duration::from_secs(60), "every file on the FTP server", || {
        names(&inbound).len() as u64 == FILES && status_json(&config)["spool"] == 0
    });
    for i in 0..FILES {
        let name = format!("order-{i:03}.dat");
        let got = std::fs::read(inbound.join(&name)).unwrap();
        assert!(got == content(i, 100 + (i as usize * 997) % 200_000), "{name} differs");
    }
    assert!(
        names(&inbound).iter().all(|n| !n.starts_with(".sluice-")),
        "{:?}",
        names(&inbound)
    );
    node.stop();
    let text = node.log_text();
    assert!(!text.contains(PASSWORD), "the password shows in the log");
}

/// Files waiting on an FTP server are received through an FTP receive
/// location and written out by a FILE send port, whole and each once,
/// though the node is killed (`kill -9`) twice while it takes them: what a
/// kill left claimed on the server is resolved at the next start.
#[test]
fn files_come_in_from_an_ftp_server_and_survive_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let served = tempfile::tempdir().unwrap();
    let outbox = served.path().join("outbox");
    std::fs::create_dir(&outbox).unwrap();
    const FILES: u64 = 300;
    let size = |i: u64| 50 + (i as usize * 7919) % 300_000;
    for i in 0..FILES {
        std::fs::write(outbox.join(format!("inv-{i:03}.xml")), content(i, size(i))).unwrap();
    }
    std::fs::write(outbox.join("readme.txt"), "not for this mask").unwrap();
    let port = ftp_server(served.path());
    let config = write_config(
        root.path(),
        &format!(
            r#"
[receive_ports.ftpin.locations.partner]
adapter = {{ type = "ftp", url = "ftp://{USER}@127.0.0.1:{port}/outbox", password_env = "SLUICE_E2E_FTP_PASSWORD", file_mask = "*.xml", poll_interval = "200ms", max_connections = 4 }}

[send_ports.got]
filter = 'receive.port == "ftpin"'
adapter = {{ type = "file", path = "got", file_name = "%SourceFileName%.%MessageId%", create_folder = true }}
"#
        ),
    );
    let got = root.path().join("got");
    let log = root.path().join("node.log");
    let start = || {
        let mut cmd = sluice();
        cmd.env("SLUICE_E2E_FTP_PASSWORD", PASSWORD);
        Node::start_with(cmd, &config, &log)
    };
    for kill_after in [60, 160] {
        let mut node = start();
        wait_until(Duration::from_secs(60), "files arriving", || {
            by_source(&got).len() >= kill_after
        });
        node.kill9();
    }
    let mut node = start();
    wait_until(Duration::from_secs(120), "every file received and written", || {
        by_source(&got).len() as u64 == FILES && names(&outbox) == vec!["readme.txt".to_string()]
    });
    wait_until(Duration::from_secs(30), "the box empty", || {
        status_json(&config)["spool"] == 0
    });
    let got = by_source(&got);
    for i in 0..FILES {
        let name = format!("inv-{i:03}.xml");
        let copies = &got[&name];
        assert_eq!(copies.len(), 1, "{name} received {} times", copies.len());
        assert!(
            std::fs::read(&copies[0]).unwrap() == content(i, size(i)),
            "{name} differs"
        );
    }
    let status = status_json(&config);
    assert_eq!(status["suspended"], 0, "{status}");
    node.stop();
    let text = node.log_text();
    assert!(!text.contains(PASSWORD), "the password shows in the log");
}
