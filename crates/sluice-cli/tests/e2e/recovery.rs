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
