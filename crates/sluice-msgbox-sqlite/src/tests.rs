use std::sync::Arc;

use async_trait::async_trait;
use sluice_msgbox::conformance::Harness;
use sluice_msgbox::{Clock, MessageBox};

use super::*;

struct SqliteHarness {
    dir: tempfile::TempDir,
}

impl SqliteHarness {
    fn new() -> Self {
        SqliteHarness {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
}

#[async_trait]
impl Harness for SqliteHarness {
    async fn open(&self, clock: Arc<dyn Clock>) -> Arc<dyn MessageBox> {
        Arc::new(SqliteBox::open(self.dir.path(), clock, Options::default()).expect("open sqlite box"))
    }
}

sluice_msgbox::conformance_tests!(SqliteHarness::new());

/// Group commit: many concurrent publishes share few commits, and each
/// publisher hears back only after a synced commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
    b.subscribe(Subscription {
        subscriber: "s".into(),
        filter: Filter::All,
    })
    .await
    .unwrap();
    let before = b.writer_stats();
    let mut tasks = Vec::new();
    for i in 0..2000i64 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let mut context = Context::new();
            context.promote("t", "n", i);
            b.publish(NewMessage {
                id: MessageId::new(),
                context,
                parts: vec![Part::inline("body", "x")],
            })
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let after = b.writer_stats();
    let commits = after.synced_commits - before.synced_commits;
    assert_eq!(after.jobs - before.jobs, 2000);
    assert!(
        commits < 1000,
        "2000 concurrent publishes took {commits} synced commits; group commit should share them"
    );
    assert_eq!(b.counts().await.unwrap().queued["s"], 2000);
    b.close().await.unwrap();
}

#[tokio::test]
async fn read_only_sees_a_running_box_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
    b.publish(NewMessage {
        id: MessageId::new(),
        context: Context::new(),
        parts: vec![],
    })
    .await
    .unwrap();
    let ro = SqliteBox::open_read_only(dir.path()).unwrap();
    assert_eq!(ro.counts().await.unwrap().suspended, 1);
    assert!(matches!(
        ro.subscribe(Subscription {
            subscriber: "s".into(),
            filter: Filter::All
        })
        .await,
        Err(BoxError::Closed)
    ));
    b.close().await.unwrap();
    let missing = SqliteBox::open_read_only(&dir.path().join("nope")).err().unwrap();
    assert!(missing.to_string().contains("has `sluice serve` run"), "{missing}");
}

/// A second writer beside the node (the CLI) does not discard the node's
/// unpublished content and sees its data.
#[tokio::test]
async fn open_beside_node_does_no_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let node = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
    let data = vec![5u8; 50_000];
    let mut r: &[u8] = &data;
    let part = sluice_content::write_part(&*node.content(), "body", &mut r, Default::default())
        .await
        .unwrap();
    let cli = SqliteBox::open_beside_node(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
    let Routed::Suspended { suspended_id } = cli
        .publish(NewMessage {
            id: MessageId::new(),
            context: Context::new(),
            parts: vec![],
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    cli.terminate(suspended_id).await.unwrap();
    cli.close().await.unwrap();
    // The node can still publish the content it wrote before the CLI opened.
    node.publish(NewMessage {
        id: MessageId::new(),
        context: Context::new(),
        parts: vec![part],
    })
    .await
    .unwrap();
    assert_eq!(node.counts().await.unwrap().content_bytes, 50_000);
    node.close().await.unwrap();
    assert!(SqliteBox::open_beside_node(&dir.path().join("nope"), Arc::new(SystemClock), Options::default()).is_err());
}
