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

impl SqliteHarness {
    /// The box's URL, as a configuration names it.
    fn url(&self) -> String {
        format!("sqlite:{}", self.dir.path().join(DB_FILE).display())
    }

    fn open_as(&self, clock: Arc<dyn Clock>, node: &str) -> Arc<dyn MessageBox> {
        let opts = sluice_store::StoreOptions {
            clock,
            ..sluice_store::StoreOptions::new(node)
        };
        sluice_store::open_url(&self.url(), sluice_store::Role::Node, &opts).expect("open sqlite box by URL")
    }
}

#[async_trait]
impl Harness for SqliteHarness {
    async fn open(&self, clock: Arc<dyn Clock>) -> Arc<dyn MessageBox> {
        self.open_as(clock, crate::schema::DEFAULT_NODE)
    }

    /// Two nodes on one SQLite file: each has its own writer; SQLite
    /// serialises them.
    async fn open_node(&self, clock: Arc<dyn Clock>, node: &str) -> Option<Arc<dyn MessageBox>> {
        Some(self.open_as(clock, node))
    }
}

sluice_msgbox::conformance_tests!(SqliteHarness::new());

/// A box in a fresh directory with subscriber `s` taking every message.
async fn box_with_subscriber_s() -> (tempfile::TempDir, SqliteBox) {
    let dir = tempfile::tempdir().unwrap();
    let b = box_with_subscriber_s_in(dir.path()).await;
    (dir, b)
}

/// A node's box in `dir` with subscriber `s` taking everything.
async fn box_with_subscriber_s_in(dir: &std::path::Path) -> SqliteBox {
    let b = SqliteBox::open(dir, Arc::new(SystemClock), Options::default()).unwrap();
    b.subscribe(Subscription {
        subscriber: "s".into(),
        filter: Filter::All,
    })
    .await
    .unwrap();
    b
}

/// Group commit: many concurrent publishes share few commits, and each
/// publisher hears back only after a synced commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_share_commits() {
    let (_dir, b) = box_with_subscriber_s().await;
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

/// Unmounts its tmpfs (lazily) when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A temporary directory with a tmpfs of `kib` KiB mounted on it (a disk
/// that fills up for real). Needs root, and says so.
fn tmpfs(kib: u32) -> (tempfile::TempDir, Unmount) {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
        .arg(dir.path())
        .status()
        .expect("run mount");
    assert!(status.success(), "this test mounts a {kib} KiB tmpfs and needs root");
    let u = Unmount(dir.path().to_path_buf());
    (dir, u)
}

/// Disk full in the middle of a batch: SQLite rolls the transaction back by
/// itself; the jobs after the failing one must not then run (and commit) on
/// their own. Mounts a 1 MiB tmpfs: needs root.
#[test]
fn disk_full_mid_batch_commits_nothing() {
    use crate::writer::{Job, Writer};
    let (dir, _u) = tmpfs(1024);
    let path = dir.path().join(crate::DB_FILE);
    // A small page cache makes the big job spill, so it fails mid-way.
    let opts = Options {
        cache_kib: 256,
        ..Options::default()
    };
    let mut writer = bare_writer(&path, &opts);
    let sub = |name: &str| Subscription {
        subscriber: name.into(),
        filter: Filter::All,
    };
    let (tx1, mut rx1) = tokio::sync::oneshot::channel();
    let (tx2, mut rx2) = tokio::sync::oneshot::channel();
    let (tx3, mut rx3) = tokio::sync::oneshot::channel();
    let first = sub("before");
    let last = sub("after");
    let mut batch = vec![
        Job::new(true, move |w: &mut Writer| w.subscribe(first), tx1),
        Job::new(
            true,
            |w: &mut Writer| {
                let id = w.begin_content()?;
                for seq in 0..128 {
                    w.put_chunk(id, seq, &[7u8; 64 * 1024])?;
                }
                Ok(())
            },
            tx2,
        ),
        Job::new(true, move |w: &mut Writer| w.subscribe(last), tx3),
    ];
    let result = writer.run_batch(&mut batch);
    let Err((err, done)) = result else {
        panic!("an 8 MiB job cannot fit in 1 MiB")
    };
    assert!(
        err.to_string().contains("rolled back"),
        "the big job fails mid-batch: {err}"
    );
    for c in done {
        c(Some(&err));
    }
    assert!(rx1.try_recv().unwrap().is_err());
    assert!(rx2.try_recv().unwrap().is_err());
    assert!(rx3.try_recv().unwrap().is_err());
    let check = crate::schema::open_connection(&path, &opts, true).unwrap();
    let n: i64 = check
        .query_row("SELECT count(*) FROM subscriptions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0, "no job of the failed batch may be committed");
}

/// A writer on a new box at `path`, with tracking, driven by the test
/// (`run_batch`), without the box's thread and checkpointer.
fn bare_writer(path: &std::path::Path, opts: &Options) -> crate::writer::Writer {
    let conn = crate::schema::open_connection(path, opts, false).unwrap();
    crate::schema::migrate(&conn).unwrap();
    crate::writer::Writer::new(conn, Arc::new(SystemClock), true, crate::schema::DEFAULT_NODE).unwrap()
}

/// Tracking events are written together, a statement to many: all of them
/// in the order recorded, and none of a batch rolled back (some of them
/// written mid-batch, the rest waiting) with the next batch.
#[test]
fn tracking_events_are_written_in_order_and_never_outlive_their_batch() {
    use crate::writer::{Job, Writer};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(crate::DB_FILE);
    let opts = Options::default();
    let mut writer = bare_writer(&path, &opts);
    let publish = |w: &mut Writer, n: usize| -> Result<Vec<MessageId>, BoxError> {
        (0..n)
            .map(|_| {
                let mut context = Context::new();
                context.promote("receive", "location", "in");
                let m = NewMessage {
                    id: MessageId::new(),
                    context,
                    parts: vec![],
                };
                let origin = Origin::of(&m.context);
                w.publish(&m, &m.context.to_json(), None, None, Some(&origin))?;
                Ok(m.id)
            })
            .collect()
    };
    let (tx, _rx) = tokio::sync::oneshot::channel();
    // 2 events each (received, suspended: no subscriber): 22 events, more
    // than one statement's worth.
    let failing = Job::new(
        true,
        move |w: &mut Writer| -> Result<(), BoxError> {
            publish(w, 11)?;
            Err(BoxError::Storage {
                doing: "testing".into(),
                detail: "failed after its changes".into(),
            })
        },
        tx,
    );
    assert!(writer.run_batch(&mut vec![failing]).is_err());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = Job::new(true, move |w: &mut Writer| publish(w, 9), tx);
    let Ok(done) = writer.run_batch(&mut vec![job]) else {
        panic!("the second batch commits")
    };
    done.into_iter().for_each(|c| c(None));
    let ids = rx.blocking_recv().unwrap().unwrap();
    let check = crate::schema::open_connection(&path, &opts, true).unwrap();
    let events: Vec<(Vec<u8>, String)> = check
        .prepare("SELECT message_id, event FROM tracking ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let expected: Vec<(Vec<u8>, String)> = ids
        .iter()
        .flat_map(|id| [tracked::RECEIVED, tracked::SUSPENDED].map(|e| (id.to_bytes().to_vec(), e.to_string())))
        .collect();
    assert_eq!(events, expected);
}

/// A queued message whose stored context cannot be read (damaged, or written
/// by a newer version) is suspended with the reason instead of blocking the
/// queue behind it.
#[tokio::test]
async fn unreadable_context_is_suspended_not_blocking() {
    let (dir, b) = box_with_subscriber_s().await;
    let bad = MessageId::new();
    for id in [bad, MessageId::new()] {
        b.publish(NewMessage {
            id,
            context: Context::new(),
            parts: vec![],
        })
        .await
        .unwrap();
    }
    let conn = rusqlite::Connection::open(dir.path().join(crate::DB_FILE)).unwrap();
    conn.execute(
        "UPDATE messages SET context = ?2 WHERE id = ?1",
        rusqlite::params![
            bad.to_bytes(),
            r#"[{"ns":"a","name":"b","type":"decimal","value":"1"}]"#
        ],
    )
    .unwrap();
    let leased = b.lease("s", 10, 60_000).await.unwrap();
    assert_eq!(leased.len(), 1, "the readable message is delivered");
    assert_ne!(leased[0].message_id, bad);
    let suspended = b.list_suspended(&SuspendedQuery::default(), None, 10).await.unwrap();
    assert_eq!(suspended.len(), 1);
    assert_eq!(suspended[0].message_id, bad);
    assert!(
        suspended[0].reason.contains("unknown type `decimal`"),
        "{}",
        suspended[0].reason
    );
    // Resubmitting it as it is is refused (it cannot be routed), and the
    // refusal fails no other change; a context filter skips it.
    assert!(matches!(
        b.resubmit(suspended[0].id, Default::default()).await,
        Err(BoxError::NotResumable { .. })
    ));
    let q = SuspendedQuery {
        context: Some(Filter::parse("a.b exists").unwrap()),
        ..Default::default()
    };
    assert!(b.list_suspended(&q, None, 10).await.unwrap().is_empty());
    let mut ctx = Context::new();
    ctx.promote("fixed", "by", "ops");
    let r = b
        .resubmit(
            suspended[0].id,
            Resubmission {
                context: Some(ctx),
                parts: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        r.routed,
        Routed::Queued(vec!["s".into()]),
        "with a whole new context it goes"
    );
    b.close().await.unwrap();
}

/// A box written by schema version 1 (suspended entries without stage,
/// component, location, transport; no attempts or tracking tables) opens,
/// is migrated, and its suspended entries can be listed, resumed and resubmitted.
#[tokio::test]
async fn a_version_1_box_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(crate::DB_FILE);
    let id = MessageId::new();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema_version', '1');
             CREATE TABLE messages (id BLOB PRIMARY KEY, created_at INTEGER NOT NULL, context TEXT NOT NULL,
                 refs INTEGER NOT NULL, nparts INTEGER NOT NULL, size INTEGER NOT NULL, stored_parts INTEGER NOT NULL);
             CREATE TABLE suspended (id INTEGER PRIMARY KEY AUTOINCREMENT, message_id BLOB NOT NULL,
                 subscriber TEXT, reason TEXT NOT NULL, attempts INTEGER NOT NULL, suspended_at INTEGER NOT NULL,
                 resumable INTEGER NOT NULL DEFAULT 1);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO messages VALUES (?1, 1, '[{\"ns\":\"t\",\"name\":\"k\",\"type\":\"string\",\"value\":\"v\",\"promoted\":true}]', 1, 0, 0, 0)",
            [id.to_bytes()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO suspended (message_id, subscriber, reason, attempts, suspended_at) VALUES (?1, NULL, 'no subscriber', 0, 1)",
            [id.to_bytes()],
        )
        .unwrap();
    }
    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
    let s = b.list_suspended(&SuspendedQuery::default(), None, 10).await.unwrap();
    assert_eq!((s.len(), s[0].message_id, s[0].stage.as_str()), (1, id, ""));
    b.subscribe(Subscription {
        subscriber: "s".into(),
        filter: Filter::parse(r#"t.k == "v""#).unwrap(),
    })
    .await
    .unwrap();
    let r = b.resubmit(s[0].id, Default::default()).await.unwrap();
    assert_eq!(r.routed, Routed::Queued(vec!["s".into()]));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, crate::schema::SCHEMA_VERSION.to_string());
    b.close().await.unwrap();
}

const MIB: u64 = 1 << 20;

/// Bytes of the box's database file and WAL.
fn box_size(b: &SqliteBox) -> u64 {
    crate::schema::files_size(b.path())
}

/// Wait (at most 10 s) for the box's files to be at most `limit` bytes.
async fn wait_for_size_at_most(b: &SqliteBox, limit: u64, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let size = box_size(b);
        if size <= limit {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: the box is still {} MiB after 10 s (limit {} MiB; {:?})",
            size / MIB,
            limit / MIB,
            b.writer_stats()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Write `chunks` chunks of 256 KiB of content, then abort it.
async fn write_and_abort(b: &SqliteBox, chunks: u32) {
    let store = b.content();
    let waste = store.begin().await.unwrap();
    for seq in 0..chunks {
        store
            .put_chunk(waste, seq, Bytes::from(vec![0u8; 256 * 1024]))
            .await
            .unwrap();
    }
    store.abort(waste).await.unwrap();
}

/// Content of `n` bytes that is not all one byte.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// A refused body (issue 11): ~100 MiB written as unfinished content, then
/// aborted. The box gives the space back (its file and WAL shrink) soon
/// after, with no other change to trigger it.
#[tokio::test]
async fn aborted_content_gives_its_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
    let conn = rusqlite::Connection::open(b.path()).unwrap();
    assert_eq!(
        crate::schema::auto_vacuum(&conn).unwrap(),
        2,
        "a new box is incremental"
    );
    let before = box_size(&b);
    let store = b.content();
    let id = store.begin().await.unwrap();
    let chunk = Bytes::from(pattern(256 * 1024, 1));
    for seq in 0..400 {
        store.put_chunk(id, seq, chunk.clone()).await.unwrap();
    }
    let full = box_size(&b);
    assert!(full > before + 90 * MIB, "100 MiB written: {} MiB", full / MIB);
    store.abort(id).await.unwrap();
    wait_for_size_at_most(&b, before + 16 * MIB, "after aborting 100 MiB").await;
    let stats = b.writer_stats();
    assert!(stats.reclaim_steps >= 5, "{stats:?}");
    assert_eq!(b.counts().await.unwrap().content_chunks, 0);
    b.close().await.unwrap();
}

/// A drained backlog: messages with ~100 MiB of stored content, delivered
/// and acked. The space goes back, and the message left (whose pages the
/// vacuum moved) reads back intact.
#[tokio::test]
async fn acked_messages_give_their_space_back() {
    let (_dir, b) = box_with_subscriber_s().await;
    let before = box_size(&b);
    let store = b.content();
    let publish = |seed: u8, size: usize| {
        let (b, store) = (b.clone(), store.clone());
        async move {
            let data = pattern(size, seed);
            let mut r: &[u8] = &data;
            let part = sluice_content::write_part(&*store, "body", &mut r, Default::default())
                .await
                .unwrap();
            let id = MessageId::new();
            b.publish(NewMessage {
                id,
                context: Context::new(),
                parts: vec![part],
            })
            .await
            .unwrap();
            (id, data)
        }
    };
    for i in 0..50 {
        publish(i, 2 * MIB as usize).await;
    }
    // The last one written: at the end of the file, where the vacuum takes
    // pages from.
    let (keep, keep_data) = publish(99, 3 * MIB as usize + 17).await;
    let full = box_size(&b);
    assert!(full > before + 90 * MIB, "100 MiB published: {} MiB", full / MIB);
    let leased = b.lease("s", 100, 60_000).await.unwrap();
    assert_eq!(leased.len(), 51);
    for l in leased.iter().filter(|l| l.message_id != keep) {
        b.ack(l.token).await.unwrap();
    }
    wait_for_size_at_most(&b, before + 3 * MIB + 16 * MIB, "after acking 100 MiB").await;
    let parts = b.parts(keep).await.unwrap();
    let mut read = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut sluice_content::read_part(store.clone(), &parts[0]), &mut read)
        .await
        .unwrap();
    assert!(read == keep_data, "the message left reads back intact");
    let counts = b.counts().await.unwrap();
    assert_eq!((counts.spool, counts.content_bytes), (1, keep_data.len() as u64));
    b.close().await.unwrap();
}

/// A box made before boxes gave space back (`auto_vacuum = NONE`, as schema
/// version 2 made them) is converted when the node opens it: its data is
/// kept, its free pages are dropped, and from then on it gives space back.
/// The CLI beside a node does not convert it.
#[tokio::test]
async fn an_old_box_is_converted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(crate::DB_FILE);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL").unwrap();
        crate::schema::migrate(&conn).unwrap();
        assert_eq!(crate::schema::auto_vacuum(&conn).unwrap(), 0);
    }
    // Fill it through a writer that does not convert: a message with
    // stored content, and 40 MiB of content written and aborted.
    let old = SqliteBox::open_beside_node(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
    let data = pattern(MIB as usize + 5, 7);
    let mut r: &[u8] = &data;
    let part = sluice_content::write_part(&*old.content(), "body", &mut r, Default::default())
        .await
        .unwrap();
    let mut context = Context::new();
    context.promote("t", "k", "v");
    let id = MessageId::new();
    let Routed::Suspended { suspended_id } = old
        .publish(NewMessage {
            id,
            context,
            parts: vec![part],
        })
        .await
        .unwrap()
    else {
        panic!("no subscriber: suspended")
    };
    write_and_abort(&old, 160).await;
    old.close().await.unwrap();
    let unconverted = crate::schema::files_size(&path);
    assert!(unconverted > 40 * MIB, "{} MiB", unconverted / MIB);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        assert_eq!(
            crate::schema::auto_vacuum(&conn).unwrap(),
            0,
            "the CLI did not convert it"
        );
    }

    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(crate::schema::auto_vacuum(&conn).unwrap(), 2, "converted");
    let converted = box_size(&b);
    assert!(converted < 8 * MIB, "free pages dropped: {} MiB", converted / MIB);
    let info = b.message(id).await.unwrap().expect("the message is kept");
    assert_eq!(info.context.get("t", "k").and_then(|p| p.value.as_str()), Some("v"));
    assert_eq!(info.suspended[0].id, suspended_id);
    let mut read = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut sluice_content::read_part(b.content(), &info.parts[0]), &mut read)
        .await
        .unwrap();
    assert!(read == data, "its content reads back intact");
    // It gives space back now.
    write_and_abort(&b, 200).await;
    wait_for_size_at_most(&b, converted + 16 * MIB, "after aborting 50 MiB in a converted box").await;
    b.close().await.unwrap();
}

/// A disk that fills up with a body (tmpfs of a few sizes, so that the
/// failing write stops at different places): the body's clean-up still
/// commits (the reserve beside the box is given up for it), the space goes
/// back, small messages still go in and out, and the reserve is taken again.
/// Mounts tmpfs: needs root.
#[tokio::test]
async fn a_full_disk_is_cleaned_up_and_keeps_working() {
    for kib in [3072, 3584, 4096, 4608, 5120, 6144] {
        let (dir, _u) = tmpfs(kib);
        let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
        let reserve = dir.path().join(format!("{}-reserve", crate::DB_FILE));
        assert_eq!(
            std::fs::metadata(&reserve).unwrap().len(),
            1 << 20,
            "{kib} KiB: the reserve"
        );
        b.subscribe(Subscription {
            subscriber: "s".into(),
            filter: Filter::All,
        })
        .await
        .unwrap();
        for round in 0..3 {
            let store = b.content();
            let id = store.begin().await.unwrap();
            let chunk = Bytes::from(pattern(256 * 1024, round));
            let mut failed = false;
            for seq in 0..64 {
                if store.put_chunk(id, seq, chunk.clone()).await.is_err() {
                    failed = true;
                    break;
                }
            }
            assert!(failed, "{kib} KiB, round {round}: 16 MiB does not fit");
            store
                .abort(id)
                .await
                .unwrap_or_else(|e| panic!("{kib} KiB, round {round}: the clean-up commits: {e}"));
            b.publish(NewMessage {
                id: MessageId::new(),
                context: Context::new(),
                parts: vec![Part::inline("body", "still working")],
            })
            .await
            .unwrap_or_else(|e| panic!("{kib} KiB, round {round}: a small message goes in: {e}"));
            let leased = b.lease("s", 10, 60_000).await.unwrap();
            assert_eq!(leased.len(), 1, "{kib} KiB, round {round}");
            b.ack(leased[0].token)
                .await
                .unwrap_or_else(|e| panic!("{kib} KiB, round {round}: and out: {e}"));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !reserve.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{kib} KiB: the reserve is taken again"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        b.close().await.unwrap();
    }
}

/// A disk that stays full, with no clean-up: a body fills it and is never
/// aborted, then ordinary jobs that free nothing (subscriptions made and
/// dropped) keep coming. They commit: the failed commit gave up the reserve
/// and paused checkpoints, but the first commit that succeeds turns them
/// back on, so the WAL does not grow until nothing commits. (A box too old
/// to give space back never pauses them.) Mounts tmpfs: needs root.
#[tokio::test]
async fn a_disk_that_stays_full_keeps_committing_small_jobs() {
    for kib in [3072, 4096, 5120] {
        let (dir, _u) = tmpfs(kib);
        let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
        let store = b.content();
        let id = store.begin().await.unwrap();
        let chunk = Bytes::from(pattern(256 * 1024, 3));
        let mut seq = 0;
        while store.put_chunk(id, seq, chunk.clone()).await.is_ok() {
            seq += 1;
            assert!(seq < 64, "{kib} KiB: 16 MiB does not fit");
        }
        let mut failed = Vec::new();
        for i in 0..400 {
            let name = format!("s{i}");
            let r = match b
                .subscribe(Subscription {
                    subscriber: name.clone(),
                    filter: Filter::All,
                })
                .await
            {
                Ok(()) => b.unsubscribe(&name).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                failed.push(format!("{i}: {e}"));
            }
        }
        assert!(
            failed.len() <= 2,
            "{kib} KiB: {} of 400 failed, first {:?}",
            failed.len(),
            failed.first()
        );
        b.close().await.unwrap();
    }
}

/// A reader's snapshot holds up the truncating checkpoint after the space
/// is given back; once the reader is done, the idle node truncates the WAL
/// by itself (no other commit comes to trigger it).
#[tokio::test]
async fn a_truncation_held_up_by_a_reader_is_retried_while_idle() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
    let before = box_size(&b);
    let reader = rusqlite::Connection::open(b.path()).unwrap();
    reader.execute_batch("BEGIN; SELECT count(*) FROM messages;").unwrap();
    write_and_abort(&b, 200).await;
    // The steps ran (into the WAL), but the WAL cannot be truncated yet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while b.writer_stats().reclaimed_bytes < 30 * MIB {
        assert!(std::time::Instant::now() < deadline, "{:?}", b.writer_stats());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(box_size(&b) > before + 16 * MIB, "held up by the reader");
    reader.execute_batch("COMMIT").unwrap();
    wait_for_size_at_most(&b, before + 16 * MIB, "after the reader finished").await;
    b.close().await.unwrap();
}

/// A box of schema version 2 (one node, no owners) migrates in place: its
/// leases, holds and staged messages become the opening node's, and only
/// that node takes them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_box_gives_its_work_to_the_node_that_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(crate::DB_FILE);
    let clock = ManualClock::new(1_700_000_000_000);
    let (held, entry) = {
        let b = SqliteBox::open(dir.path(), clock.clone(), Options::default()).unwrap();
        b.subscribe(Subscription {
            subscriber: "s".into(),
            filter: Filter::All,
        })
        .await
        .unwrap();
        let id = publish_held(&b).await;
        let leased = b.lease("s", 1, 60_000).await.unwrap();
        b.close().await.unwrap();
        (id, leased[0].token)
    };
    {
        // Back to version 2: no `node` columns.
        let conn = rusqlite::Connection::open(&path).unwrap();
        for table in ["queue", "holds", "staged", "content"] {
            conn.execute_batch(&format!("ALTER TABLE {table} DROP COLUMN node"))
                .unwrap();
        }
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'", [])
            .unwrap();
    }
    let as_node = |node: &str| Options {
        node_id: node.into(),
        ..Options::default()
    };
    // A command beside the node does not upgrade it (an earlier node may be
    // running on it): it says to start the node first.
    let refused = SqliteBox::open_beside_node(dir.path(), clock.clone(), as_node("n1"))
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("start the node"), "{refused}");
    let b = SqliteBox::open(dir.path(), clock.clone(), as_node("n1")).unwrap();
    let other = SqliteBox::open(dir.path(), clock.clone(), as_node("n2")).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, crate::schema::SCHEMA_VERSION.to_string());
    assert!(other.held_by("receive:in", None, 10).await.unwrap().is_empty());
    assert_eq!(other.recover().await.unwrap().leases, 0, "not n2's lease");
    assert_eq!(b.held_by("receive:in", None, 10).await.unwrap(), vec![held]);
    assert_eq!(b.recover().await.unwrap().leases, 1, "n1 took the old box's work over");
    assert!(matches!(b.ack(entry).await, Err(BoxError::LeaseLost { .. })));
    other.close().await.unwrap();
    b.close().await.unwrap();
}

/// Work no node owns (an earlier version writing into a box a newer one
/// upgraded) becomes the next starting node's, so its recovery releases it.
#[tokio::test]
async fn work_no_node_owns_is_taken_by_the_next_node_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let held = {
        let b = SqliteBox::open(dir.path(), clock.clone(), Options::default()).unwrap();
        let id = publish_held(&b).await;
        b.close().await.unwrap();
        id
    };
    let conn = rusqlite::Connection::open(dir.path().join(crate::DB_FILE)).unwrap();
    conn.execute("UPDATE holds SET node = ''", []).unwrap();
    drop(conn);
    let b = SqliteBox::open(dir.path(), clock.clone(), Options::default()).unwrap();
    assert_eq!(b.held_by("receive:in", None, 10).await.unwrap(), vec![held]);
    b.close().await.unwrap();
}

/// A node's start does work in proportion to what it left in flight, not
/// to the backlog: waiting queue entries (which no node owns until one
/// leases them) are not taken over, so opening a box with a backlog
/// writes next to nothing; its own lease is still taken back.
#[tokio::test]
async fn a_start_does_not_rewrite_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let b = box_with_subscriber_s_in(dir.path()).await;
    publish_many(&b, 3_000, 16).await;
    let leased = b.lease("s", 1, 60_000).await.unwrap();
    assert_eq!(leased.len(), 1);
    b.close().await.unwrap();
    let wal = || {
        std::fs::metadata(dir.path().join(format!("{DB_FILE}-wal")))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    assert_eq!(wal(), 0, "the close checkpoints and truncates the WAL");
    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
    // Rewriting 3,000 queue entries is some 30 pages of 4 KiB, and a frame
    // header each, in the WAL (156,592 bytes when the start did it).
    assert!(wal() < 8 * 4096, "the start wrote {} bytes of WAL", wal());
    assert_eq!(b.recover().await.unwrap().leases, 1, "the lease it held is taken back");
    assert_eq!(b.lease("s", 5_000, 60_000).await.unwrap().len(), 3_000);
    b.close().await.unwrap();
}

/// Every connection the box opens (the writer and each reader) is set to
/// keep temporary data (statement journals, temporary b-trees) in memory
/// only while small, spilling to a temporary file beyond that: memory does
/// not grow with what one statement touches.
#[test]
fn every_connection_is_set_to_spill_temporary_data_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    for reader in [false, true] {
        let conn = crate::schema::open_connection(&path, &Options::default(), reader).unwrap();
        let mode: i64 = conn.query_row("PRAGMA temp_store", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, 1, "temp_store = FILE (reader: {reader})");
    }
}

/// A small message published held by `receive:in`, as a location does.
async fn publish_held(b: &SqliteBox) -> MessageId {
    let m = NewMessage {
        id: MessageId::new(),
        context: Context::new(),
        parts: vec![Part::inline("body", "x")],
    };
    let id = m.id;
    b.publish_holding(m, "receive:in").await.unwrap();
    id
}

/// A box whose tracking events have no `location` column yet (made before
/// tracking said where; an older node may still run on it) can be read as
/// it is; the next node to open it adds the column, and new events say
/// where they happened.
#[tokio::test]
async fn tracking_events_of_a_box_made_before_locations_are_read_and_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let in_folder = || {
        let mut context = Context::new();
        context.promote("receive", "location", "in-folder");
        NewMessage {
            id: MessageId::new(),
            context,
            parts: vec![],
        }
    };
    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
    b.publish(in_folder()).await.unwrap();
    b.close().await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(crate::DB_FILE)).unwrap();
    conn.execute_batch("ALTER TABLE tracking DROP COLUMN location; ALTER TABLE staged DROP COLUMN origin;")
        .unwrap();
    drop(conn);
    let ro = SqliteBox::open_read_only(dir.path()).unwrap();
    let old = ro.tracking(&TrackingQuery::default(), None, 10).await.unwrap().items;
    assert_eq!(
        old.iter()
            .map(|e| (e.event.as_str(), e.location.as_deref()))
            .collect::<Vec<_>>(),
        [(tracked::RECEIVED, None), (tracked::SUSPENDED, None)]
    );
    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
    b.publish(in_folder()).await.unwrap();
    let events = ro
        .tracking(&TrackingQuery::default(), old.last().map(|e| e.id), 10)
        .await
        .unwrap()
        .items;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.event.as_str(), e.location.as_deref()))
            .collect::<Vec<_>>(),
        [
            (tracked::RECEIVED, Some("in-folder")),
            (tracked::SUSPENDED, Some("in-folder"))
        ]
    );
    b.close().await.unwrap();
}

/// Publish `n` messages of `size` inline bytes, 100 at a time.
async fn publish_many(b: &SqliteBox, n: usize, size: usize) {
    for _ in 0..n.div_ceil(100) {
        let mut batch = tokio::task::JoinSet::new();
        for i in 0..100i64 {
            let b = b.clone();
            batch.spawn(async move {
                let mut context = Context::new();
                context.promote("t", "n", i);
                b.publish(NewMessage {
                    id: MessageId::new(),
                    context,
                    parts: vec![Part::inline("body", pattern(size, 7))],
                })
                .await
            });
        }
        while let Some(r) = batch.join_next().await {
            r.unwrap().unwrap();
        }
    }
}

fn wal_size(b: &SqliteBox) -> u64 {
    let mut wal = b.path().as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// With room on the disk the node checkpoints beside its writer, and the
/// WAL stays within the writer's backstop; on a small disk the writer
/// checkpoints by itself, as SQLite would (the full-disk cases above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_run_beside_the_writer_only_while_the_disk_has_room() {
    use crate::writer::checkpoint::{BACKSTOP_PAGES, ROOMY};
    let (dir, b) = box_with_subscriber_s().await;
    let free = crate::writer::checkpoint::free_bytes(dir.path()).unwrap();
    assert!(
        free >= 2 * ROOMY,
        "this case needs {} MiB free in {}",
        2 * ROOMY / MIB,
        dir.path().display()
    );
    // ~50 MiB through the WAL, three times the writer's backstop.
    publish_many(&b, 12_500, 4000).await;
    let stats = b.writer_stats();
    assert!(stats.checkpoints_beside > 0, "{stats:?}");
    // The checkpointer yields the CPU to the writer (Linux: a thread's own
    // niceness, 10 more than the node's). Other tests' boxes come and go
    // meanwhile (a thread gone, or just started): this box's checkpointer,
    // running for a while now, is among those seen lowered.
    #[cfg(target_os = "linux")]
    {
        let nice_of = |task: &std::path::Path| -> Option<i32> {
            let stat = std::fs::read_to_string(task.join("stat")).ok()?;
            // Fields after the parenthesised name: state is field 3, nice 19.
            stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok()
        };
        let own = nice_of(std::path::Path::new("/proc/thread-self")).unwrap();
        let lowered = (own + 10).min(19);
        let mut seen = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let task = task.path();
            let is_checkpointer =
                std::fs::read_to_string(task.join("comm")).is_ok_and(|c| c.trim() == "msgbox-checkpoi");
            if let Some(nice) = is_checkpointer.then(|| nice_of(&task)).flatten() {
                seen.push(nice);
            }
        }
        assert!(
            seen.contains(&lowered),
            "checkpointer niceness {seen:?}, expected {lowered} (test thread at {own})"
        );
    }
    assert!(
        wal_size(&b) <= (BACKSTOP_PAGES as u64 + 512) * 4096,
        "the WAL is {} bytes ({stats:?})",
        wal_size(&b)
    );
    b.close().await.unwrap();

    let (small, _u) = tmpfs(64 * 1024);
    let b = box_with_subscriber_s_in(small.path()).await;
    publish_many(&b, 1500, 4000).await;
    let stats = b.writer_stats();
    assert_eq!(stats.checkpoints_beside, 0, "{stats:?}");
    assert!(wal_size(&b) <= 2 * MIB, "the WAL is {} bytes", wal_size(&b));
    b.close().await.unwrap();
}

/// A message of one inline part keeps it in its own row (no `parts` row);
/// messages stored before (schema 3: every part in `parts`) are read,
/// leased with their bodies, counted and deleted as before, by a read-only
/// handle beside the older node too.
#[tokio::test]
async fn one_inline_part_lives_in_its_message_row_and_a_version_3_box_reads_on() {
    use sluice_content::Part;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(crate::DB_FILE);
    let message = |parts: Vec<Part>| NewMessage {
        id: MessageId::new(),
        context: Context::new(),
        parts,
    };
    let (old_one, two) = (
        message(vec![Part::inline("old", "old body")]),
        message(vec![Part::inline("a", "first"), Part::inline("b", "")]),
    );
    let parts_rows = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("SELECT count(*) FROM parts", [], |r| r.get(0)).unwrap()
    };
    {
        let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
        b.subscribe(Subscription {
            subscriber: "s".into(),
            filter: Filter::All,
        })
        .await
        .unwrap();
        b.publish(old_one.clone()).await.unwrap();
        b.publish(two.clone()).await.unwrap();
        b.close().await.unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        assert_eq!(parts_rows(&conn), 2, "only the two-part message has rows in `parts`");
        // Back to version 3: the one part in `parts`, no columns for it.
        conn.execute_batch(
            "INSERT INTO parts (message_id, idx, name, size, crc32, inline_data)
               SELECT id, 0, part_name, size, part_crc32, part_data FROM messages WHERE part_name IS NOT NULL;
             ALTER TABLE messages DROP COLUMN part_name;
             ALTER TABLE messages DROP COLUMN part_crc32;
             ALTER TABLE messages DROP COLUMN part_data;
             ALTER TABLE messages RENAME COLUMN content_parts TO stored_parts;
             UPDATE meta SET value = '3' WHERE key = 'schema_version';",
        )
        .unwrap();
    }
    let bytes = (b"old body".len() + b"first".len()) as u64;
    let ro = SqliteBox::open_read_only(dir.path()).unwrap();
    assert_eq!(ro.parts(old_one.id).await.unwrap(), old_one.parts);
    assert_eq!(ro.counts().await.unwrap().content_bytes, bytes);
    // A node of the earlier version, running on the box: its lease names
    // `stored_parts`.
    let earlier = rusqlite::Connection::open(&path).unwrap();
    let mut earlier_lease = earlier
        .prepare("SELECT m.context, m.stored_parts, m.size FROM messages m")
        .unwrap();
    assert!(earlier_lease.query([]).unwrap().next().is_ok());
    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
    // Upgraded: the earlier node's lease fails rather than hand out a
    // message whose one part it would not see.
    let failed = earlier_lease.query([]).and_then(|mut rows| rows.next().map(drop));
    assert!(
        failed.as_ref().is_err_and(|e| e.to_string().contains("stored_parts")),
        "{failed:?}"
    );
    let new_one = message(vec![Part::inline("body", "new body")]);
    b.publish(new_one.clone()).await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(parts_rows(&conn), 3, "the new message's part is in its row");
    // The read-only handle opened before the upgrade sees it too.
    assert_eq!(ro.parts(new_one.id).await.unwrap(), new_one.parts);
    assert_eq!(
        ro.counts().await.unwrap().content_bytes,
        bytes + b"new body".len() as u64
    );
    let info = b.message(new_one.id).await.unwrap().expect("stored");
    assert_eq!(info.parts, new_one.parts);
    let leased = b.lease_with_bodies("s", 10, 60_000, 1 << 20).await.unwrap();
    let bodies: Vec<_> = leased.iter().map(|l| (l.message_id, l.parts.clone())).collect();
    assert_eq!(
        bodies,
        [
            (old_one.id, Some(old_one.parts)),
            (two.id, Some(two.parts)),
            (new_one.id, Some(new_one.parts))
        ]
    );
    for l in leased {
        b.ack(l.token).await.unwrap();
    }
    assert_eq!(parts_rows(&conn), 0, "deleted with their messages");
    let counts = b.counts().await.unwrap();
    assert_eq!((counts.spool, counts.content_bytes), (0, 0));
    b.close().await.unwrap();
}

/// Tracking ids go on growing when every event was purged, so a reader
/// following the events after the last id it saw misses none of the next
/// ones.
#[tokio::test]
async fn tracking_ids_never_go_back_even_after_every_event_was_purged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let b = SqliteBox::open(dir.path(), clock.clone(), Options::default()).unwrap();
    let publish = || async {
        b.publish(NewMessage {
            id: MessageId::new(),
            context: Context::new(),
            parts: vec![],
        })
        .await
        .unwrap()
    };
    publish().await;
    let before = b.tracking(&TrackingQuery::default(), None, 100).await.unwrap().items;
    let last = before.last().expect("events").id;
    clock.advance(60_000);
    let purged = b.purge_tracking(clock.now_ms(), 100).await.unwrap();
    assert_eq!(purged as usize, before.len(), "every event");
    assert!(
        b.tracking(&TrackingQuery::default(), None, 100)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    publish().await;
    let after = b
        .tracking(&TrackingQuery::default(), Some(last), 100)
        .await
        .unwrap()
        .items;
    assert!(!after.is_empty(), "the new events follow the last one seen");
    assert!(after.iter().all(|e| e.id > last));
    b.close().await.unwrap();
}

/// A message whose context has `order.id` (promoted or not) and a 1 KiB body.
fn order(id: &str, promoted: bool) -> NewMessage {
    let mut context = Context::new();
    if promoted {
        context.promote("order", "id", id);
    } else {
        context.write("order", "id", id);
    }
    NewMessage {
        id: MessageId::new(),
        context,
        parts: vec![Part::inline("body", vec![b'x'; 1024])],
    }
}

fn index_rows(dir: &std::path::Path) -> i64 {
    let conn = Connection::open(dir.join(DB_FILE)).unwrap();
    conn.query_row("SELECT count(*) FROM message_index", [], |r| r.get(0))
        .unwrap()
}

/// `[box] index`: a search by an indexed key finds a message past the scan
/// budget in one call; the index follows publishes and deletions, fills in
/// when a key is added and empties when it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_key_is_found_without_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let indexed = |keys: &[&str]| Options {
        sync: false,
        index: keys.iter().map(|k| Key::parse(k).unwrap()).collect(),
        ..Options::default()
    };
    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), indexed(&[])).unwrap();
    b.subscribe(Subscription {
        subscriber: "s".into(),
        filter: Filter::All,
    })
    .await
    .unwrap();
    let early = order("EARLY", true);
    b.publish(early.clone()).await.unwrap();
    let mut publishes = tokio::task::JoinSet::new();
    for i in 0..SCAN_BUDGET + 100 {
        let b = b.clone();
        publishes.spawn(async move { b.publish(order(&format!("N{i}"), i % 2 == 0)).await.map(|_| ()) });
    }
    while let Some(done) = publishes.join_next().await {
        done.unwrap().unwrap();
    }
    b.close().await.unwrap();
    let search = |id: &str| MessageQuery {
        context: Some(Filter::parse(&format!(r#"order.id == "{id}" and order.id exists"#)).unwrap()),
        ..MessageQuery::default()
    };
    // Added to a box with messages: filled in at open.
    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), indexed(&["order.id"])).unwrap();
    assert_eq!(index_rows(dir.path()), SCAN_BUDGET as i64 + 101);
    let late = order("LATE", false);
    b.publish(late.clone()).await.unwrap();
    for (id, want) in [("LATE", late.id), ("EARLY", early.id)] {
        let page = b.list_messages(&search(id), None, 10).await.unwrap();
        assert_eq!(page.items.iter().map(|m| m.id).collect::<Vec<_>>(), [want], "{id}");
        assert_eq!(page.next, None, "{id}: found without running out of budget");
    }
    // The filter still decides: an index hit with another condition false.
    let neither = MessageQuery {
        context: Some(Filter::parse(r#"order.id == "LATE" and order.id == "EARLY""#).unwrap()),
        ..MessageQuery::default()
    };
    assert!(b.list_messages(&neither, None, 10).await.unwrap().items.is_empty());
    // Delivered: its index row goes with it.
    let before = index_rows(dir.path());
    let leased = b.lease("s", 1, 10_000).await.unwrap();
    assert_eq!(leased[0].message_id, early.id);
    b.ack(leased[0].token).await.unwrap();
    assert_eq!(index_rows(dir.path()), before - 1);
    assert!(
        b.list_messages(&search("EARLY"), None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    b.close().await.unwrap();
    // Dropped from the configuration: the rows and the triggers go.
    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), indexed(&[])).unwrap();
    assert_eq!(index_rows(dir.path()), 0);
    b.publish(order("AFTER", true)).await.unwrap();
    assert_eq!(index_rows(dir.path()), 0);
    // Unindexed, the same search still finds it, a budget at a time.
    let mut after = None;
    let mut calls = 0;
    let found = loop {
        calls += 1;
        let page = b.list_messages(&search("LATE"), after, 10).await.unwrap();
        if !page.items.is_empty() {
            break page.items[0].id;
        }
        after = Some(page.next.expect("more to search"));
    };
    assert_eq!((found, calls), (late.id, 2));
    b.close().await.unwrap();
}

/// Counting suspended entries by port and error walks an index: no sort
/// of the entries (which, with temporary storage in memory, would cost
/// memory in proportion to them).
#[test]
fn suspended_groups_are_counted_without_sorting_the_entries() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
    drop(b);
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let plan: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {}", crate::groups_sql()))
        .unwrap()
        .query_map([10], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let plan = plan.join("; ");
    assert_eq!(plan.matches("USING INDEX suspended_groups").count(), 2, "{plan}");
    assert!(!plan.contains("FOR GROUP BY"), "{plan}");
}

/// An index that cannot be filled at the node's start (here a trigger
/// refuses it, as a full disk would) is left as it was: the box opens, and
/// a search on the key reads the box instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_cannot_be_filled_does_not_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let b = box_with_subscriber_s_in(dir.path()).await;
    let m = order("A1", true);
    b.publish(m.clone()).await.unwrap();
    b.close().await.unwrap();
    Connection::open(dir.path().join(DB_FILE))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON indexed_keys BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        )
        .unwrap();
    let opts = Options {
        index: vec![Key::parse("order.id").unwrap()],
        ..Options::default()
    };
    let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), opts).expect("the box opens");
    assert_eq!(index_rows(dir.path()), 0);
    let search = MessageQuery {
        context: Some(Filter::parse(r#"order.id == "A1""#).unwrap()),
        ..MessageQuery::default()
    };
    let page = b.list_messages(&search, None, 10).await.unwrap();
    assert_eq!(page.items.iter().map(|m| m.id).collect::<Vec<_>>(), [m.id]);
    b.close().await.unwrap();
}
