//! Restart after a crash between "published" and "source deleted".

use std::time::Duration;

use crate::common::*;
use sluice_content::Part;
use sluice_model::{Context, Filter, MessageId};
use sluice_msgbox::{NewMessage, Subscription};

/// The node died after publishing a file and before deleting it; meanwhile
/// the message was delivered and acknowledged. The source still holds the
/// message, so the restart sees it was published: it deletes the leftover
/// claim instead of receiving the file a second time, then releases the
/// message.
#[test]
fn published_claim_is_not_received_twice() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let id = MessageId::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The node's last run: its box, as that node (its holds are its own).
        let c = sluice_host::Config::load(&config).unwrap();
        let node = c.node_id().unwrap();
        let b = sluice_store::open(&c.store_url(), sluice_store::Role::Node, &c.box_options(&node)).unwrap();
        b.subscribe(Subscription {
            subscriber: "out".into(),
            filter: Filter::All,
        })
        .await
        .unwrap();
        let mut context = Context::new();
        context.promote("receive", "port", "in");
        context.promote("file", "name", "once.txt");
        let msg = NewMessage {
            id,
            context,
            parts: vec![Part::inline("body", "only once")],
        };
        b.publish_holding(msg, "receive:in-folder").await.unwrap();
        // Delivered and acknowledged before the crash.
        for l in b.lease("out", 10, 60_000).await.unwrap() {
            b.ack(l.token).await.unwrap();
        }
        b.close().await.unwrap();
    });
    let claim = root.path().join(format!("in/.sluice-claim.{id}.once.txt"));
    std::fs::write(&claim, "only once").unwrap();

    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);
    wait_until(Duration::from_secs(30), "the claim to be resolved", || !claim.exists());
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    // Give a wrongly restored file time to be received and delivered.
    std::thread::sleep(Duration::from_millis(1500));
    node.stop();
    assert!(
        names(&root.path().join("in")).is_empty(),
        "{:?}",
        names(&root.path().join("in"))
    );
    assert!(
        !root.path().join("out/once.txt").exists(),
        "the file was received a second time"
    );
}

/// Two nodes share one box (the same `store`, their own data directories
/// and node ids) and the same configuration otherwise: the same receive
/// location name (so their holds have one holder name) and send ports.
/// Node A is killed while files flow through both, and started again: it
/// takes back only its own work. Every file arrives with its bytes, and
/// node B never loses a lease it held (A's recovery would release them if
/// it took back every lease in the box).
#[test]
fn two_nodes_on_one_box_recover_only_their_own_work() {
    let root = tempfile::tempdir().unwrap();
    let node_config = |name: &str| {
        let dir = root.path().join(name);
        let config = write_config(&dir, "");
        let text = std::fs::read_to_string(&config).unwrap();
        let top = format!("store = \"sqlite:../shared/msgbox.sqlite\"\nnode_id = \"node-{name}\"\n");
        std::fs::write(&config, format!("{top}{text}")).unwrap();
        (dir, config)
    };
    let (dir_a, config_a) = node_config("a");
    let (dir_b, config_b) = node_config("b");
    let mut a = Node::start(&config_a, &dir_a.join("node.log"));
    let mut b = Node::start(&config_b, &dir_b.join("node.log"));
    const N: u64 = 1000;
    for i in 0..N {
        drop_file(&dir_a.join("in"), &format!("a-{i}.bin"), &content(i, 20_000));
        drop_file(&dir_b.join("in"), &format!("b-{i}.bin"), &content(N + i, 20_000));
    }
    // Either node delivers any message, into its own `out`.
    let delivered = || {
        let mut all = names(&dir_a.join("out"));
        all.extend(names(&dir_b.join("out")));
        all.sort();
        all.dedup();
        all.len() as u64
    };
    wait_until(Duration::from_secs(60), "some files delivered", || delivered() >= 200);
    a.kill9();
    let mut a = Node::start(&config_a, &dir_a.join("node.log"));
    wait_until(Duration::from_secs(120), "every file delivered", || {
        delivered() == 2 * N
    });
    a.stop();
    b.stop();
    let read = |name: &str| {
        std::fs::read(dir_a.join("out").join(name))
            .or_else(|_| std::fs::read(dir_b.join("out").join(name)))
            .unwrap()
    };
    for i in 0..N {
        assert!(read(&format!("a-{i}.bin")) == content(i, 20_000), "a-{i}");
        assert!(read(&format!("b-{i}.bin")) == content(N + i, 20_000), "b-{i}");
    }
    let log_b = b.log_text();
    assert!(!log_b.contains("no longer held"), "node B lost a lease:\n{log_b}");
    assert!(names(&dir_a.join("in")).is_empty() && names(&dir_b.join("in")).is_empty());
}

/// A file already in the destination with the same bytes counts as
/// delivered, and the log says what is known: the copy was there before the
/// first attempt. No restart happened, so none is mentioned.
#[test]
fn an_identical_file_already_there_is_not_called_a_redelivery_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    std::fs::create_dir_all(root.path().join("out")).unwrap();
    std::fs::write(root.path().join("out/same.txt"), "same bytes").unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("in"), "same.txt", b"same bytes");
    wait_until(Duration::from_secs(30), "the delivery to be counted", || {
        node.log_text().contains("an identical copy was already")
    });
    node.stop();
    let log = node.log_text();
    assert!(log.contains("already there before the first attempt"), "{log}");
    assert!(!log.contains("after a restart"), "{log}");
    assert_eq!(status_json(&config)["spool"], 0);
}

/// An HTTP peer for the send ports of the test below: it counts the
/// requests per `X-Sluice-Message-Id` and holds its first request for
/// `hold` before answering 200 (every other one at once).
struct Peer {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Peer {
    fn start(hold: Duration) -> Peer {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/in", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (s, f) = (seen.clone(), first.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (seen, first) = (s.clone(), f.clone());
                std::thread::spawn(move || {
                    let mut out = conn.try_clone().unwrap();
                    let mut r = BufReader::new(conn);
                    loop {
                        let (mut id, mut length, mut chunked) = (String::new(), 0usize, false);
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return; // the client closed the connection
                        }
                        loop {
                            line.clear();
                            r.read_line(&mut line).unwrap();
                            let l = line.trim_end().to_ascii_lowercase();
                            if l.is_empty() {
                                break;
                            }
                            if let Some(v) = l.strip_prefix("x-sluice-message-id:") {
                                id = v.trim().to_string();
                            } else if let Some(v) = l.strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap();
                            } else if l.starts_with("transfer-encoding:") && l.contains("chunked") {
                                chunked = true;
                            }
                        }
                        if chunked {
                            loop {
                                line.clear();
                                r.read_line(&mut line).unwrap();
                                let n = usize::from_str_radix(line.trim(), 16).unwrap();
                                let mut chunk = vec![0; n + 2];
                                r.read_exact(&mut chunk).unwrap();
                                if n == 0 {
                                    break;
                                }
                            }
                        } else {
                            let mut body = vec![0; length];
                            r.read_exact(&mut body).unwrap();
                        }
                        seen.lock().unwrap().push(id);
                        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                            std::thread::sleep(hold);
                        }
                        out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").unwrap();
                    }
                });
            }
        });
        Peer { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A send port leases ahead of its free slots. An entry leased ahead whose
/// lease runs out while the port's slots are busy may be leased and
/// delivered by another node meanwhile: when its turn comes, the port that
/// took it first finds its lease gone and does not deliver it a second
/// time. Node A (concurrency 1, lease 1 s) leases both messages, and the
/// peer holds the first for 4 s; node B, on the same box, takes the
/// second once its lease has run out.
#[test]
fn a_lease_taken_ahead_and_lost_meanwhile_is_not_delivered_twice() {
    let root = tempfile::tempdir().unwrap();
    let peer = Peer::start(Duration::from_secs(4));
    let node_config = |name: &str, enabled: bool| {
        let dir = root.path().join(name);
        std::fs::create_dir_all(dir.join("in")).unwrap();
        let config = dir.join("sluice.toml");
        std::fs::write(
            &config,
            format!(
                r#"store = "sqlite:../shared/msgbox.sqlite"
node_id = "node-{name}"
data_dir = "data"

[receive_ports.in.locations.in-folder]
adapter = {{ type = "file", path = "in", mask = "*", settle = "200ms", poll_interval = "100ms" }}

[send_ports.slow]
filter = 'receive.port == "in"'
adapter = {{ type = "http", url = "{url}" }}
concurrency = 1
lease = "1s"
enabled = {enabled}
"#,
                url = peer.url
            ),
        )
        .unwrap();
        (dir, config)
    };
    std::fs::create_dir_all(root.path().join("shared")).unwrap();
    let (dir_a, config_a) = node_config("a", false);
    let mut a = Node::start(&config_a, &dir_a.join("node.log"));
    drop_file(&dir_a.join("in"), "x.bin", b"first");
    drop_file(&dir_a.join("in"), "y.bin", b"second");
    wait_until(Duration::from_secs(30), "both queued for the stopped port", || {
        status_json(&config_a)["queued"]["slow"] == 2
    });
    // Started, port A leases both at once: one in flight (held by the
    // peer), one ahead.
    node_config("a", true);
    let reload = run(sluice().args(["reload", "--config"]).arg(&config_a));
    assert!(reload.status.success(), "{}", text(&reload.stderr));
    wait_until(Duration::from_secs(10), "the first request", || peer.seen().len() == 1);
    let (dir_b, config_b) = node_config("b", true);
    let mut b = Node::start(&config_b, &dir_b.join("node.log"));
    wait_until(Duration::from_secs(30), "both delivered and the box empty", || {
        peer.seen().len() >= 2 && status_json(&config_a)["spool"] == 0
    });
    // Time for a second delivery, if one were coming.
    std::thread::sleep(Duration::from_secs(2));
    a.stop();
    b.stop();
    let mut seen = peer.seen();
    assert_eq!(seen.len(), 2, "{seen:?}\nnode A:\n{}", a.log_text());
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 2, "delivered twice: {seen:?}");
    assert!(
        a.log_text().contains("expired before its delivery started"),
        "node A did not find its lease taken ahead gone (the case did not happen):\n{}",
        a.log_text()
    );
}
