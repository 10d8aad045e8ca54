//! The FTP receive location against a real FTP server (libunftp, in the
//! test's process; see `tests.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_model::{Context, MessageId};

use super::FtpReceiveConfig;
use super::tests::{PASSWORD, USER, names, served_with_in};
use crate::kit::{self, FakeAdmission, FakePublisher, SourceHarness, eventually};
use crate::{ReceiveAdapter, Source};

const WAIT: Duration = Duration::from_secs(20);

/// A location on `in/` of the server at `port`: quick polls and retries
/// unless `extra` sets them.
fn config(port: u16, extra: &str) -> FtpReceiveConfig {
    let mut text = format!("url = \"ftp://{USER}@127.0.0.1:{port}/in\"\npassword = \"{PASSWORD}\"\n{extra}\n");
    for (key, value) in [("poll_interval", "50ms"), ("retry_after", "50ms"), ("timeout", "5s")] {
        if !extra.contains(&format!("{key} =")) {
            text.push_str(&format!("{key} = \"{value}\"\n"));
        }
    }
    toml::from_str(&text).unwrap()
}

fn receiver(port: u16, extra: &str) -> Box<dyn Source> {
    ReceiveAdapter::build(&config(port, extra)).unwrap()
}

/// Write `body` as `in/name` the way a producer should: aside, then moved in.
fn drop_file(root: &Path, name: &str, body: &[u8]) {
    let aside = root.join(format!("{name}.part-aside"));
    std::fs::write(&aside, body).unwrap();
    std::fs::rename(&aside, root.join("in").join(name)).unwrap();
}

async fn start(source: Box<dyn Source>, publisher: &Arc<FakePublisher>) -> kit::Running {
    kit::run_source(source, publisher, &FakeAdmission::new()).await
}

fn published_names(p: &FakePublisher) -> Vec<String> {
    let mut v: Vec<String> = p
        .published()
        .iter()
        .map(|s| s.context.get("file", "name").unwrap().value.to_text())
        .collect();
    v.sort();
    v
}

/// The owner part of this test location's claims (`kit::context`'s node
/// and location).
fn mine() -> String {
    crate::support::fetch::owner_of("kit-node", "kit-in")
}

struct Remote {
    root: tempfile::TempDir,
    port: u16,
}

#[async_trait]
impl SourceHarness for Remote {
    fn source(&self) -> Box<dyn Source> {
        receiver(self.port, "")
    }
    async fn offer(&self, body: &[u8]) {
        drop_file(self.root.path(), "kit.txt", body);
    }
    async fn acknowledged(&self) -> bool {
        names(&self.root.path().join("in")).is_empty()
    }
    async fn kept(&self) -> bool {
        self.root.path().join("in/kit.txt").exists()
    }
    fn peer_retries(&self) -> bool {
        false
    }
    fn promotes(&self) -> &'static [(&'static str, &'static str)] {
        super::PROMOTES
    }
}

#[tokio::test]
async fn the_ftp_receive_location_passes_the_kit() {
    let (root, port) = served_with_in().await;
    kit::check_source(&Remote { root, port }).await;
}

#[tokio::test]
async fn files_arrive_whole_with_their_names_and_are_deleted_after_the_publish() {
    let (root, port) = served_with_in().await;
    let publisher = FakePublisher::new();
    let r = start(receiver(port, "mask = \"*.xml\"\nmax_connections = 3"), &publisher).await;
    let mut expected = Vec::new();
    for i in 0..40 {
        let body: Vec<u8> = (0..i * 997).map(|b| (b % 251) as u8).collect();
        drop_file(root.path(), &format!("f{i:02}.xml"), &body);
        expected.push((format!("f{i:02}.xml"), body));
    }
    drop_file(root.path(), "other.csv", b"not for this mask");
    eventually(WAIT, "forty files published", || async {
        publisher.published().len() == 40
    })
    .await;
    eventually(WAIT, "the folder emptied of them", || async {
        names(&root.path().join("in")) == vec!["other.csv".to_string()]
    })
    .await;
    for s in publisher.published() {
        let name = s.context.get("file", "name").unwrap().value.to_text();
        let (_, body) = expected.iter().find(|(n, _)| *n == name).unwrap();
        assert_eq!(&s.body, body, "{name}");
        assert_eq!(
            s.context.get("file", "size").unwrap().value.to_text(),
            body.len().to_string()
        );
        let url = s.context.get("ftp", "url").unwrap().value.to_text();
        assert!(
            url.ends_with(&format!("127.0.0.1:{port}/in/{name}")) && !url.contains(USER),
            "{url}"
        );
    }
    eventually(WAIT, "every message settled", || async {
        publisher.settled().len() == 40
    })
    .await;
    r.stop().await;
}

#[tokio::test]
async fn a_file_still_being_written_is_left_until_it_holds_still() {
    let (root, port) = served_with_in().await;
    let publisher = FakePublisher::new();
    let r = start(receiver(port, "poll_interval = \"100ms\""), &publisher).await;
    let path = root.path().join("in/growing.dat");
    let mut written = Vec::new();
    for i in 0..25u8 {
        written.extend(std::iter::repeat_n(i, 1000));
        std::fs::write(&path, &written).unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(publisher.published().is_empty(), "taken while it still grew");
    }
    eventually(WAIT, "the file published once whole", || async {
        publisher.published().len() == 1
    })
    .await;
    assert_eq!(publisher.published()[0].body, written);
    r.stop().await;
}

#[tokio::test]
async fn two_locations_on_one_folder_take_each_file_once() {
    let (root, port) = served_with_in().await;
    let (a, b) = (FakePublisher::new(), FakePublisher::new());
    let extra = "poll_interval = \"20ms\"\nmax_connections = 4";
    let ra = start(receiver(port, extra), &a).await;
    let rb = start(receiver(port, extra), &b).await;
    for i in 0..150 {
        drop_file(root.path(), &format!("n{i:03}"), format!("body {i}").as_bytes());
    }
    eventually(WAIT, "every file taken", || async {
        a.published().len() + b.published().len() >= 150 && names(&root.path().join("in")).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut all = published_names(&a);
    all.extend(published_names(&b));
    all.sort();
    let expected: Vec<String> = (0..150).map(|i| format!("n{i:03}")).collect();
    assert_eq!(all, expected, "each file exactly once across the two");
    ra.stop().await;
    rb.stop().await;
}

#[tokio::test]
async fn claims_a_crash_left_are_resolved_at_the_start() {
    let (root, port) = served_with_in().await;
    let publisher = FakePublisher::new();
    // Published before the crash: its claim is deleted, not received again.
    let done = MessageId::new();
    let body = Box::new(std::io::Cursor::new(b"already in the box".to_vec()));
    crate::Publisher::submit(&*publisher, done, Context::new(), body)
        .await
        .unwrap();
    let folder = root.path().join("in");
    std::fs::write(
        folder.join(format!(".sluice-claim.{}.{done}.a.xml", mine())),
        "already in the box",
    )
    .unwrap();
    // Not published: put back under its name and received.
    let lost = MessageId::new();
    std::fs::write(
        folder.join(format!(".sluice-claim.{}.{lost}.b.xml", mine())),
        "received again",
    )
    .unwrap();
    // Another location's (its mask, not this one's), and another node's
    // (it may be receiving that file right now): left alone.
    let theirs = format!(".sluice-claim.{}.{}.c.csv", mine(), MessageId::new());
    std::fs::write(folder.join(&theirs), "theirs").unwrap();
    let other_node = format!(
        ".sluice-claim.{}.{}.d.xml",
        crate::support::fetch::owner_of("another-node", "kit-in"),
        MessageId::new()
    );
    std::fs::write(folder.join(&other_node), "another node's").unwrap();
    let r = start(receiver(port, "mask = \"*.xml\""), &publisher).await;
    let mut left = vec![theirs.clone(), other_node.clone()];
    left.sort();
    eventually(WAIT, "the claims resolved", || async { names(&folder) == left }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = publisher.published();
    assert_eq!(got.len(), 2, "a.xml is not received again, b.xml once");
    assert_eq!(got[1].body, b"received again");
    assert_eq!(names(&folder), left);
    r.stop().await;
}

#[tokio::test]
async fn with_list_hidden_reserved_names_and_folders_are_left_alone() {
    let (root, port) = served_with_in().await;
    let folder = root.path().join("in");
    std::fs::create_dir(folder.join("sub")).unwrap();
    std::fs::write(folder.join(".hidden"), "hidden").unwrap();
    std::fs::write(folder.join(".sluice-tmp.out.x.1"), "being written by a send port").unwrap();
    drop_file(root.path(), "name with spaces.txt", b"spaces");
    for listing in ["list", "mlsd"] {
        let publisher = FakePublisher::new();
        let r = start(receiver(port, &format!("listing = \"{listing}\"")), &publisher).await;
        eventually(WAIT, "the plain file published", || async {
            publisher.published().len() == 1
        })
        .await;
        assert_eq!(published_names(&publisher), vec!["name with spaces.txt"], "{listing}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(publisher.published().len(), 1, "{listing}");
        r.stop().await;
        drop_file(root.path(), "name with spaces.txt", b"spaces");
    }
    let mut left = names(&folder);
    left.retain(|n| n != "name with spaces.txt");
    assert_eq!(left, vec![".hidden", ".sluice-tmp.out.x.1", "sub"]);
}

/// A server that takes the connection and never greets: the location
/// neither receives anything nor holds up the node's stop (the kit's stop
/// fails after 5 s), though each attempt waits `timeout` for the greeting.
#[tokio::test]
async fn a_silent_server_does_not_hold_up_the_stop() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let publisher = FakePublisher::new();
    let source = receiver(port, "timeout = \"3s\"");
    let cx = kit::context(publisher.clone(), FakeAdmission::new());
    let started = std::time::Instant::now();
    source.recover(&cx).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    let task = tokio::spawn(source.run(cx.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cx.shutdown.cancel();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stopped while waiting for the greeting")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(publisher.published().is_empty());
}

#[test]
fn configuration_is_checked_and_secrets_never_show() {
    let c = config(2121, "file_mask = \"*.xml\"");
    assert_eq!(c.mask, "*.xml", "file_mask is another name of mask");
    let debug = format!("{:?} {:?}", c, c.build().unwrap());
    kit::check_secrets_not_in_debug(&debug, &[PASSWORD]);
    for (extra, why) in [
        ("mask = \"[x\"", "mask `[x`"),
        ("batch = 0", "batch"),
        ("max_connections = 0", "max_connections"),
        ("max_listing = 0", "max_listing"),
        ("transfer_timeout = \"0s\"", "transfer_timeout"),
    ] {
        let e = config(2121, extra).build().err().unwrap().to_string();
        assert!(e.contains(why), "{extra}: {e}");
    }
    let e = toml::from_str::<FtpReceiveConfig>("url = 'ftp://u@h/in'\nmaks = '*'").unwrap_err();
    assert!(e.to_string().contains("unknown field `maks`"), "{e}");
}

#[test]
fn two_locations_cannot_take_the_same_files_of_one_server_folder() {
    let claim = |url: &str, mask: &str| {
        let c: FtpReceiveConfig = toml::from_str(&format!("url = '{url}'\nmask = '{mask}'")).unwrap();
        c.resources().remove(0)
    };
    let a = claim("ftp://u@Host:21//srv/in", "*.xml");
    assert!(
        a.conflicts_with(&claim("ftpes://v@host//srv/in/", "*")),
        "same folder, overlapping masks"
    );
    assert!(
        !a.conflicts_with(&claim("ftp://u@host//srv/in", "*.csv")),
        "masks apart"
    );
    assert!(
        !a.conflicts_with(&claim("ftp://u@host//srv/out", "*.xml")),
        "another folder"
    );
    let home = claim("ftp://u@host/in", "*");
    assert!(
        !home.conflicts_with(&claim("ftp://w@host/in", "*")),
        "each user's own login folder"
    );
    assert!(home.conflicts_with(&claim("ftp://u@host:21/in", "*")));
}

/// What the scripted server below does wrong.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Lie {
    /// None: the control case.
    Honest,
    /// Sends half the file, closes the data connection, says `226`.
    Short,
    /// Sends all of it, then says `426` (the transfer failed).
    Aborted,
    /// Sends a little, then nothing more, keeping the connections open.
    Stalls,
    /// A listing line of 64 KiB.
    LongLine,
    /// A listing that says the file is 2^64 - 1 bytes (it is 1,000).
    HugeListing,
}

/// A scripted FTP server of its own (plain text over tokio, no code shared
/// with the client under test) holding one file `f.dat` of 1,000 bytes
/// and lying as `lie` says. Its passive answers name 10.255.255.1: the
/// client must connect to the control connection's address instead. The
/// commands it got are logged.
async fn liar(lie: Lie) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let control = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = control.local_addr().unwrap().port();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log2 = log.clone();
    tokio::spawn(async move {
        let name = Arc::new(std::sync::Mutex::new("f.dat".to_string()));
        while let Ok((socket, _)) = control.accept().await {
            let (log, name) = (log2.clone(), name.clone());
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let mut data: Option<tokio::net::TcpListener> = None;
                let mut held = Vec::new();
                write.write_all(b"220 liar ready\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap().push(line.clone());
                    let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                    let current = name.lock().unwrap().clone();
                    let reply: String = match verb.to_ascii_uppercase().as_str() {
                        "USER" => "331 password please".into(),
                        "PASS" => "230 in".into(),
                        "TYPE" => "200 binary".into(),
                        "CWD" => "250 there".into(),
                        "NOOP" => "200 ok".into(),
                        "PASV" => {
                            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                            let p = l.local_addr().unwrap().port();
                            data = Some(l);
                            format!("227 Entering Passive Mode (10,255,255,1,{},{})", p >> 8, p & 0xff)
                        }
                        "EPSV" => "500 no".into(),
                        "RNFR" if arg == current => "350 go on".into(),
                        "RNFR" => "550 no such file".into(),
                        "RNTO" => {
                            *name.lock().unwrap() = arg.to_string();
                            "250 renamed".into()
                        }
                        "SIZE" if arg == current => "213 1000".into(),
                        "SIZE" => "550 no such file".into(),
                        "DELE" => "250 deleted".into(),
                        "MLSD" | "RETR" => {
                            let Some(l) = data.take() else {
                                write.write_all(b"425 no PASV\r\n").await.unwrap();
                                continue;
                            };
                            write.write_all(b"150 here it comes\r\n").await.unwrap();
                            let (mut d, _) = l.accept().await.unwrap();
                            let reply = if verb == "MLSD" {
                                let mut listing = format!("type=file;size=1000;modify=20260101000000; {current}\r\n");
                                if lie == Lie::HugeListing {
                                    listing =
                                        format!("type=file;size={};modify=20260101000000; {current}\r\n", u64::MAX);
                                }
                                if lie == Lie::LongLine {
                                    listing =
                                        format!("type=file;size=1;modify=20260101000000; {}\r\n", "x".repeat(65536));
                                }
                                d.write_all(listing.as_bytes()).await.unwrap();
                                "226 done"
                            } else {
                                match lie {
                                    Lie::Honest | Lie::HugeListing => {
                                        d.write_all(&[7u8; 1000]).await.unwrap();
                                        "226 done"
                                    }
                                    Lie::Short => {
                                        d.write_all(&[7u8; 500]).await.unwrap();
                                        "226 done (it says)"
                                    }
                                    Lie::Aborted => {
                                        d.write_all(&[7u8; 1000]).await.unwrap();
                                        "426 connection closed; transfer aborted"
                                    }
                                    Lie::Stalls => {
                                        d.write_all(&[7u8; 10]).await.unwrap();
                                        held.push(d);
                                        continue;
                                    }
                                    Lie::LongLine => "226 done",
                                }
                            };
                            drop(d);
                            reply.into()
                        }
                        "QUIT" => "221 bye".into(),
                        _ => "502 not here".into(),
                    };
                    if write.write_all(format!("{reply}\r\n").as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, log)
}

#[tokio::test]
async fn a_download_cut_short_failed_or_stalled_is_never_published_and_the_file_is_put_back() {
    // The control: the same server telling the truth, its passive answers
    // still naming another host, is received and deleted.
    let (port, log) = liar(Lie::Honest).await;
    let publisher = FakePublisher::new();
    let r = start(receiver(port, "timeout = \"1s\""), &publisher).await;
    eventually(WAIT, "published", || async { publisher.published().len() == 1 }).await;
    assert_eq!(publisher.published()[0].body, vec![7u8; 1000]);
    eventually(WAIT, "deleted", || async {
        log.lock().unwrap().iter().any(|l| l.starts_with("DELE .sluice-claim."))
    })
    .await;
    r.stop().await;
    for lie in [Lie::Short, Lie::Aborted, Lie::Stalls] {
        let (port, log) = liar(lie).await;
        let publisher = FakePublisher::new();
        let r = start(receiver(port, "timeout = \"1s\"\nretry_after = \"1h\""), &publisher).await;
        eventually(WAIT, "an attempt", || async { publisher.attempts() >= 1 }).await;
        eventually(WAIT, "the file put back", || async {
            log.lock().unwrap().iter().any(|l| l == "RNTO f.dat")
        })
        .await;
        r.stop().await;
        assert!(publisher.published().is_empty(), "{lie:?}: published");
        let log = log.lock().unwrap();
        assert!(!log.iter().any(|l| l.starts_with("DELE")), "{lie:?}: deleted: {log:?}");
        assert!(
            log.iter().any(|l| l.starts_with("RNTO .sluice-claim.")),
            "{lie:?}: claimed first"
        );
    }
}

#[tokio::test]
async fn a_listing_line_over_the_cap_fails_the_listing_and_takes_nothing() {
    let (port, log) = liar(Lie::LongLine).await;
    let publisher = FakePublisher::new();
    let r = start(receiver(port, ""), &publisher).await;
    eventually(WAIT, "a few listings", || async {
        log.lock().unwrap().iter().filter(|l| *l == "MLSD").count() >= 3
    })
    .await;
    r.stop().await;
    assert!(publisher.published().is_empty());
    assert!(!log.lock().unwrap().iter().any(|l| l.starts_with("RNFR")));
}

/// A listing's size is the server's word: the host's throttle is charged
/// the bytes that arrive, not a size a listing claims (2^64 - 1 here,
/// which would hold the whole host's admissions).
#[tokio::test]
async fn the_throttle_is_charged_what_arrives_not_what_a_listing_claims() {
    let (port, _log) = liar(Lie::HugeListing).await;
    let (publisher, admission) = (FakePublisher::new(), FakeAdmission::new());
    let r = kit::run_source(receiver(port, "timeout = \"2s\""), &publisher, &admission).await;
    eventually(WAIT, "published", || async { publisher.published().len() == 1 }).await;
    r.stop().await;
    assert_eq!(publisher.published()[0].body.len(), 1000);
    assert_eq!(admission.bytes(), 1000, "charged as it arrived");
}

/// A server that trickles forever (here: sends 10 bytes and then nothing,
/// within a long idle limit) does not hold up the stop past the grace
/// period; the file stays claimed, for the next start to resolve.
#[tokio::test]
async fn a_stalled_download_is_cut_off_at_the_stop_after_a_grace_period() {
    let (port, log) = liar(Lie::Stalls).await;
    let publisher = FakePublisher::new();
    let r = start(receiver(port, "timeout = \"300s\""), &publisher).await;
    eventually(WAIT, "the download started", || async {
        log.lock().unwrap().iter().any(|l| l.starts_with("RETR"))
    })
    .await;
    r.cx.shutdown.cancel();
    let started = std::time::Instant::now();
    tokio::time::timeout(crate::support::poll::STOP_GRACE + Duration::from_secs(5), r.task)
        .await
        .expect("stopped within the grace period")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= crate::support::poll::STOP_GRACE - Duration::from_secs(1));
    assert!(publisher.published().is_empty());
    assert!(!log.lock().unwrap().iter().any(|l| l.starts_with("DELE")));
}
