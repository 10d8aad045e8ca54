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
