//! The SFTP adapter against a real SSH server: OpenSSH's sshd
//! (`kit::sshd`), started by each test with keys of its own.

use std::time::{Duration, Instant};

use super::SftpSendConfig;
use crate::kit::{free_port, names_in as names, outbound};
use crate::{Delivered, Transmitter};

/// An sshd for one test, and the folder it lives in.
struct Sshd {
    inner: crate::kit::sshd::Sshd,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Sshd {
    type Target = crate::kit::sshd::Sshd;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl Sshd {
    fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        Sshd {
            inner: crate::kit::sshd::Sshd::start(dir.path()),
            _dir: dir,
        }
    }

    /// A send port's configuration: the client key, the pinned host key,
    /// the served folder's `sub` (absolute), then `extra`.
    fn config(&self, sub: &str, extra: &str) -> SftpSendConfig {
        let host_key = if extra.contains("host_key") || extra.contains("known_hosts") {
            String::new()
        } else {
            format!("host_key = \"{}\"\n", self.host_key)
        };
        toml::from_str(&format!(
            "url = \"{url}\"\nprivate_key_file = \"{key}\"\n\
             file_name = \"%SourceFileName%\"\ntimeout = \"5s\"\n{host_key}{extra}",
            url = self.url(sub),
            key = self.client_key().display(),
        ))
        .unwrap()
    }
}

fn body(bytes: &[u8]) -> crate::Body {
    Box::new(std::io::Cursor::new(bytes.to_vec()))
}

#[tokio::test]
async fn files_arrive_whole_under_their_names_several_at_once() {
    let sshd = Sshd::start();
    let t = std::sync::Arc::new(
        sshd.config("inbound", "create_folder = true\nmax_connections = 3")
            .build()
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for i in 0..20usize {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let bytes: Vec<u8> = (0..i * 50_001).map(|b| (b % 253) as u8).collect();
            let d = t.transmit(&outbound(&format!("f{i:02}.dat")), body(&bytes)).await;
            (i, bytes, d)
        }));
    }
    let folder = sshd.files().join("inbound");
    for task in tasks {
        let (i, bytes, d) = task.await.unwrap();
        assert!(matches!(d, Ok(Delivered::To(_))), "{i}: {d:?}");
        assert_eq!(
            std::fs::read(folder.join(format!("f{i:02}.dat"))).unwrap(),
            bytes,
            "{i}"
        );
    }
    assert_eq!(names(&folder).len(), 20, "no temporary file left: {:?}", names(&folder));
}

#[tokio::test]
async fn an_existing_file_is_not_replaced_unless_configured_and_a_redelivery_is_recognised() {
    let sshd = Sshd::start();
    let folder = sshd.files();
    std::fs::write(folder.join("a.xml"), "someone else's").unwrap();
    let t = sshd.config("", "").build().unwrap();
    let e = t.transmit(&outbound("a.xml"), body(b"mine")).await.unwrap_err();
    assert!(e.retryable && e.message.contains("already exists"), "{e}");
    assert_eq!(std::fs::read(folder.join("a.xml")).unwrap(), b"someone else's");
    assert_eq!(names(&folder), vec!["a.xml"], "the temporary file is removed");
    // The same bytes: this message's earlier delivery.
    std::fs::write(folder.join("b.xml"), "mine").unwrap();
    let d = t.transmit(&outbound("b.xml"), body(b"mine")).await.unwrap();
    assert!(matches!(d, Delivered::AlreadyThere(_)), "{d:?}");
    let t = sshd.config("", "overwrite = true").build().unwrap();
    t.transmit(&outbound("a.xml"), body(b"mine")).await.unwrap();
    assert_eq!(std::fs::read(folder.join("a.xml")).unwrap(), b"mine");
}

#[tokio::test]
async fn a_server_with_another_host_key_is_refused() {
    let sshd = Sshd::start();
    let other = tempfile::tempdir().unwrap();
    crate::kit::sshd::keygen(&other.path().join("k"));
    let wrong = std::fs::read_to_string(other.path().join("k.pub")).unwrap();
    let e = sshd
        .config("", &format!("host_key = \"{}\"", wrong.trim()))
        .build()
        .unwrap()
        .transmit(&outbound("x"), body(b"x"))
        .await
        .unwrap_err();
    assert!(
        e.retryable && e.message.contains("is not the configured `host_key`"),
        "{e}"
    );
    assert!(names(&sshd.files()).is_empty());
    // known_hosts: the right key passes, a changed one is refused.
    let known = other.path().join("known_hosts");
    std::fs::write(&known, format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_key)).unwrap();
    let extra = format!("known_hosts = \"{}\"", known.display());
    sshd.config("", &extra)
        .build()
        .unwrap()
        .transmit(&outbound("y"), body(b"y"))
        .await
        .unwrap();
    std::fs::write(&known, format!("[127.0.0.1]:{} {}", sshd.port, wrong.trim())).unwrap();
    let e = sshd
        .config("", &extra)
        .build()
        .unwrap()
        .transmit(&outbound("z"), body(b"z"))
        .await
        .unwrap_err();
    assert!(
        e.message.contains("does not match") || e.message.contains("is not in"),
        "{e}"
    );
    assert_eq!(names(&sshd.files()), vec!["y"]);
}

#[tokio::test]
async fn a_key_the_server_does_not_know_is_refused_clearly_and_in_time() {
    let sshd = Sshd::start();
    let other = tempfile::tempdir().unwrap();
    crate::kit::sshd::keygen(&other.path().join("k"));
    let mut c = sshd.config("", "");
    c.private_key_file = Some(other.path().join("k"));
    let e = c
        .build()
        .unwrap()
        .transmit(&outbound("x"), body(b"x"))
        .await
        .unwrap_err();
    assert!(
        e.retryable && e.message.contains("logging in") && e.message.contains("refused"),
        "{e}"
    );
    // Nothing listens.
    let mut c = sshd.config("", "connect_timeout = \"2s\"");
    c.url = format!("sftp://u@127.0.0.1:{}/x", free_port());
    let started = Instant::now();
    let e = c
        .build()
        .unwrap()
        .transmit(&outbound("x"), body(b"x"))
        .await
        .unwrap_err();
    assert!(e.message.contains("connecting"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn an_attempt_removes_what_earlier_attempts_left() {
    let sshd = Sshd::start();
    let t = sshd.config("", "").build().unwrap();
    let mut msg = outbound("done.dat");
    msg.attempt = 3;
    for earlier in 1..3 {
        std::fs::write(
            sshd.files()
                .join(format!(".sluice-tmp.{}.{}.{earlier}", msg.port, msg.id)),
            "half",
        )
        .unwrap();
    }
    t.transmit(&msg, body(b"whole")).await.unwrap();
    assert_eq!(names(&sshd.files()), vec!["done.dat"]);
}

#[test]
fn configuration_is_checked_and_secrets_never_show() {
    let base = "url = \"sftp://u@h/in\"\n";
    let build = |extra: &str| {
        toml::from_str::<SftpSendConfig>(&format!("{base}{extra}"))
            .unwrap()
            .build()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(
        build("password = \"pw-s3cret\"").contains("host_key"),
        "a host key is required"
    );
    assert!(build("password = \"pw\"\nprivate_key_env = \"K\"\naccept_unknown_host_key = true").contains("not both"));
    assert!(build("accept_unknown_host_key = true").contains("private key"));
    assert!(build("password = \"pw\"\nhost_key = \"nonsense\"").contains("host_key: not an OpenSSH public key"));
    assert!(build("password = \"pw\"\naccept_unknown_host_key = true\ntimeout = \"0s\"").contains("timeout"));
    let e =
        toml::from_str::<SftpSendConfig>("url = 'sftp://u:pw@h/in'\npassword = 'x'\naccept_unknown_host_key = true")
            .unwrap()
            .build()
            .unwrap_err()
            .to_string();
    assert!(e.contains("password in the URL") && !e.contains(":pw@"), "{e}");
    let c: SftpSendConfig = toml::from_str(&format!(
        "{base}password = \"pw-s3cret\"\naccept_unknown_host_key = true"
    ))
    .unwrap();
    let debug = format!("{c:?} {:?}", c.build().unwrap());
    crate::kit::check_secrets_not_in_debug(&debug, &["pw-s3cret"]);
    // The receive location's configuration: a passphrase too.
    let r: super::SftpReceiveConfig = toml::from_str(&format!(
        "{base}password = \"pw-s3cret\"\naccept_unknown_host_key = true\npassphrase = \"ph-s3cret\""
    ))
    .unwrap();
    let debug = format!("{r:?} {:?}", r.build().unwrap());
    crate::kit::check_secrets_not_in_debug(&debug, &["pw-s3cret", "ph-s3cret"]);
    let e = toml::from_str::<super::SftpReceiveConfig>(&format!("{base}password = 'x'\nhost_key = 'x'\nbatch = 0"))
        .unwrap()
        .build()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("host_key") || e.contains("batch"), "{e}");
}

mod receiving {
    use std::sync::Arc;

    use async_trait::async_trait;
    use sluice_model::{Context, MessageId};

    use super::super::SftpReceiveConfig;
    use super::*;
    use crate::kit::{self, FakeAdmission, FakePublisher, SourceHarness, eventually};
    use crate::{ReceiveAdapter, Source};

    const WAIT: Duration = Duration::from_secs(20);

    impl Sshd {
        /// A receive location on the served folder's `sub`.
        fn receive_config(&self, sub: &str, extra: &str) -> SftpReceiveConfig {
            let mut text = format!(
                "url = \"sftp://{user}@127.0.0.1:{port}/{folder}\"\nprivate_key_file = \"{key}\"\n\
                 host_key = \"{host_key}\"\n{extra}\n",
                user = self.user,
                port = self.port,
                folder = self.files().join(sub).display(),
                key = self.client_key().display(),
                host_key = self.host_key,
            );
            for (key, value) in [("poll_interval", "50ms"), ("retry_after", "50ms"), ("timeout", "5s")] {
                if !extra.contains(&format!("{key} =")) {
                    text.push_str(&format!("{key} = \"{value}\"\n"));
                }
            }
            toml::from_str(&text).unwrap()
        }

        fn receiver(&self, extra: &str) -> Box<dyn Source> {
            ReceiveAdapter::build(&self.receive_config("in", extra)).unwrap()
        }
    }

    fn served_with_in() -> Sshd {
        let sshd = Sshd::start();
        std::fs::create_dir(sshd.files().join("in")).unwrap();
        sshd
    }

    fn drop_file(sshd: &Sshd, name: &str, body: &[u8]) {
        let aside = sshd.files().join(format!("{name}.aside"));
        std::fs::write(&aside, body).unwrap();
        std::fs::rename(&aside, sshd.files().join("in").join(name)).unwrap();
    }

    async fn start(source: Box<dyn Source>, publisher: &Arc<FakePublisher>) -> kit::Running {
        kit::run_source(source, publisher, &FakeAdmission::new()).await
    }

    fn mine() -> String {
        crate::support::fetch::owner_of("kit-node", "kit-in")
    }

    struct Remote(Sshd);

    #[async_trait]
    impl SourceHarness for Remote {
        fn source(&self) -> Box<dyn Source> {
            self.0.receiver("")
        }
        async fn offer(&self, body: &[u8]) {
            drop_file(&self.0, "kit.txt", body);
        }
        async fn acknowledged(&self) -> bool {
            names(&self.0.files().join("in")).is_empty()
        }
        async fn kept(&self) -> bool {
            self.0.files().join("in/kit.txt").exists()
        }
        fn peer_retries(&self) -> bool {
            false
        }
        fn promotes(&self) -> &'static [(&'static str, &'static str)] {
            super::super::PROMOTES
        }
    }

    #[tokio::test]
    async fn the_sftp_receive_location_passes_the_kit() {
        kit::check_source(&Remote(served_with_in())).await;
    }

    #[tokio::test]
    async fn files_arrive_whole_once_each_across_two_locations_and_are_deleted() {
        let sshd = served_with_in();
        let (a, b) = (FakePublisher::new(), FakePublisher::new());
        let extra = "mask = \"*.xml\"\nmax_connections = 3";
        let ra = start(sshd.receiver(extra), &a).await;
        let rb = start(sshd.receiver(extra), &b).await;
        let mut expected = Vec::new();
        for i in 0..60usize {
            let body: Vec<u8> = (0..i * 4099).map(|b| (b % 251) as u8).collect();
            drop_file(&sshd, &format!("f{i:02}.xml"), &body);
            expected.push((format!("f{i:02}.xml"), body));
        }
        drop_file(&sshd, "other.csv", b"not for this mask");
        eventually(WAIT, "every file taken", || async {
            a.published().len() + b.published().len() >= 60 && names(&sshd.files().join("in")) == vec!["other.csv"]
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut all: Vec<_> = a.published().into_iter().chain(b.published()).collect();
        all.sort_by_key(|s| s.context.get("file", "name").unwrap().value.to_text());
        assert_eq!(all.len(), 60, "each file exactly once across the two");
        for (s, (name, body)) in all.iter().zip(&expected) {
            assert_eq!(&s.context.get("file", "name").unwrap().value.to_text(), name);
            assert_eq!(&s.body, body, "{name}");
            let url = s.context.get("sftp", "url").unwrap().value.to_text();
            assert!(
                url.starts_with("sftp://***@127.0.0.1:") && url.ends_with(&format!("/in/{name}")),
                "{url}"
            );
        }
        ra.stop().await;
        rb.stop().await;
    }

    #[tokio::test]
    async fn claims_a_crash_left_are_resolved_and_a_file_is_never_put_back_over_a_newcomer() {
        let sshd = served_with_in();
        let folder = sshd.files().join("in");
        let publisher = FakePublisher::new();
        let done = MessageId::new();
        let body = Box::new(std::io::Cursor::new(b"already in the box".to_vec()));
        crate::Publisher::submit(&*publisher, done, Context::new(), body)
            .await
            .unwrap();
        std::fs::write(
            folder.join(format!(".sluice-claim.{}.{done}.a.xml", mine())),
            "already in the box",
        )
        .unwrap();
        let lost = MessageId::new();
        std::fs::write(
            folder.join(format!(".sluice-claim.{}.{lost}.b.xml", mine())),
            "received again",
        )
        .unwrap();
        // c.xml's claim cannot go back: a new c.xml took its name.
        let blocked = format!(".sluice-claim.{}.{}.c.xml", mine(), MessageId::new());
        std::fs::write(folder.join(&blocked), "the old c").unwrap();
        std::fs::write(folder.join("c.xml"), "the new c").unwrap();
        // Nothing can be published: every file taken is put back, and
        // waits an hour before it is tried again.
        publisher.set_mode(kit::Mode::Fail);
        let r = start(sshd.receiver("mask = \"*.xml\"\nretry_after = \"1h\""), &publisher).await;
        eventually(WAIT, "both files tried and put back", || async {
            publisher.attempts() >= 3 && names(&folder).contains(&"b.xml".to_string())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        r.stop().await;
        let left = names(&folder);
        assert!(
            !left.iter().any(|n| n.contains(&done.to_string())),
            "the published one's claim is deleted: {left:?}"
        );
        assert_eq!(std::fs::read(folder.join("b.xml")).unwrap(), b"received again");
        // Both c's are there, one under its name and one claimed: neither
        // replaced the other.
        let mut cs: Vec<Vec<u8>> = left
            .iter()
            .filter(|n| n.ends_with("c.xml"))
            .map(|n| std::fs::read(folder.join(n)).unwrap())
            .collect();
        cs.sort();
        assert_eq!(cs, vec![b"the new c".to_vec(), b"the old c".to_vec()], "{left:?}");
        assert_eq!(left.len(), 3, "{left:?}");
    }
}
