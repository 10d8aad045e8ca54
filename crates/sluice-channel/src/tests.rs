//! The channel between a real box (SQLite, in a temporary directory) and a
//! client over a real Unix socket pair.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_content::{WriteOptions, read_part, write_part};
use sluice_model::{Context, Filter, MessageId};
use sluice_msgbox::{BoxError, MessageBox, NewMessage, StagedMessage, Subscription};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use crate::wire::Stats;
use crate::{Channel, Connection, GivenBack, NodeSide, RemoteBox};

#[derive(Default)]
struct Seen {
    queued: Mutex<Vec<String>>,
    stats: Mutex<Vec<Stats>>,
}

impl NodeSide for Seen {
    fn queued(&self, subscribers: &mut dyn Iterator<Item = &str>) {
        self.queued.lock().unwrap().extend(subscribers.map(str::to_string));
    }
    fn stats(&self, stats: Stats) {
        self.stats.lock().unwrap().push(stats);
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    node_box: Arc<dyn MessageBox>,
    seen: Arc<Seen>,
    served: tokio::task::JoinHandle<GivenBack>,
}

/// A node's box with a subscription `out` to everything, and the server
/// side of a socket pair serving it; the other end is returned.
async fn harness() -> (Harness, UnixStream) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("box.sqlite").display());
    let node_box = sluice_store::open_url(
        &url,
        sluice_store::Role::Node,
        &sluice_store::StoreOptions::new("node-a"),
    )
    .unwrap();
    node_box
        .subscribe(Subscription {
            subscriber: "out".into(),
            filter: Filter::parse("all").unwrap(),
        })
        .await
        .unwrap();
    let (node_end, instance_end) = UnixStream::pair().unwrap();
    let seen = Arc::new(Seen::default());
    let (mbox, node): (Arc<dyn MessageBox>, Arc<dyn NodeSide>) = (node_box.clone(), seen.clone());
    let served = tokio::spawn(async move {
        let conn = Connection::accept(node_end, Duration::from_secs(5)).await.unwrap();
        assert_eq!(conn.hello.host, "leaky");
        conn.start(start()).await.unwrap();
        conn.serve(mbox, node).await
    });
    (
        Harness {
            _dir: dir,
            node_box,
            seen,
            served,
        },
        instance_end,
    )
}

fn start() -> crate::wire::Start {
    crate::wire::Start {
        config: "data_dir = \".\"".into(),
        config_path: "sluice.toml".into(),
        base_dir: ".".into(),
        stopped: vec![("send_port".into(), "b".into())],
    }
}

fn message(body: &[u8]) -> NewMessage {
    let mut context = Context::new();
    context.set("order", "id", "O-1", true);
    NewMessage {
        id: MessageId::new(),
        context,
        parts: vec![sluice_content::Part::inline("body", body.to_vec())],
    }
}

#[tokio::test]
async fn a_message_goes_through_the_node_and_wakes_its_port() {
    let (h, stream) = harness().await;
    let (channel, _incoming, got) = Channel::over(stream, "leaky").await.unwrap();
    assert_eq!(got, start());
    let remote = RemoteBox::new(channel.clone());
    let m = message(b"hello");
    remote.publish_holding(m.clone(), "in").await.unwrap();
    assert_eq!(*h.seen.queued.lock().unwrap(), vec!["out".to_string()]);
    // The node's box has it, held by `in` and queued for `out`.
    let info = h.node_box.message(m.id).await.unwrap().unwrap();
    assert_eq!(info.holders, vec!["in".to_string()]);
    assert_eq!(remote.held_by("in", None, 10).await.unwrap(), vec![m.id]);

    let leased = remote.lease_with_bodies("out", 10, 60_000, 1 << 20).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].context, m.context);
    assert_eq!(leased[0].parts.as_deref(), Some(&m.parts[..]));
    let acks = remote.ack_many(&[leased[0].token.into()]).await.unwrap();
    assert!(acks[0].is_ok());
    // A second ack of the same token is refused as the box refuses it.
    assert!(matches!(
        remote.ack(leased[0].token).await,
        Err(BoxError::LeaseLost { .. })
    ));
    remote.release(m.id, "in").await.unwrap();
    assert!(h.node_box.message(m.id).await.unwrap().is_none());
    assert!(matches!(
        remote.release(m.id, "in").await,
        Err(BoxError::NoSuchMessage(_) | BoxError::NotHeld { .. })
    ));

    let stats = Stats {
        received: vec![("in".into(), 1)],
        delivered: vec![("out".into(), 1)],
        host_status: "{}".into(),
    };
    assert_eq!(stats.handled(), 2);
    channel.stats(stats.clone()).await;
    drop((remote, channel, _incoming));
    let back = h.served.await.unwrap();
    assert_eq!(back, GivenBack::default());
    assert_eq!(*h.seen.stats.lock().unwrap(), vec![stats]);
}

#[tokio::test]
async fn a_big_body_crosses_a_chunk_at_a_time() {
    let (h, stream) = harness().await;
    let (channel, _incoming, got) = Channel::over(stream, "leaky").await.unwrap();
    assert_eq!(got, start());
    let remote = RemoteBox::new(channel);
    let body: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let part = write_part(&*remote.content(), "body", &mut &body[..], WriteOptions::default())
        .await
        .unwrap();
    assert!(part.stored_content().is_some(), "3 MiB is stored in chunks, not inline");
    let mut m = message(b"");
    m.parts = vec![part.clone()];
    remote.publish(m.clone()).await.unwrap();
    // Read back through the channel, and straight from the node's box.
    for store in [remote.content(), h.node_box.content()] {
        let mut back = Vec::new();
        read_part(store, &part).read_to_end(&mut back).await.unwrap();
        assert!(back == body, "the body read back differs");
    }
}

#[tokio::test]
async fn an_instance_that_dies_gives_back_what_it_held_at_once() {
    let (h, stream) = harness().await;
    let published = message(b"queued for out");
    h.node_box.publish(published.clone()).await.unwrap();
    // The instance runs on a runtime of its own, dropped to kill it: no
    // goodbye, its socket simply closes.
    let instance = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let interchange = MessageId::new();
    let (leased, content) = instance
        .spawn(async move {
            let (channel, incoming, _) = Channel::over(stream, "leaky").await.unwrap();
            let remote = RemoteBox::new(channel);
            // A lease for a minute, content written and never finished,
            // an interchange staged and never committed.
            let leased = remote.lease("out", 10, 60_000).await.unwrap();
            let content = remote.content().begin().await.unwrap();
            remote
                .content()
                .put_chunk(content, 0, bytes::Bytes::from_static(b"half"))
                .await
                .unwrap();
            remote
                .stage(
                    interchange,
                    vec![StagedMessage {
                        message: message(b"record"),
                        holder: None,
                        suspend: None,
                    }],
                )
                .await
                .unwrap();
            std::mem::forget(incoming);
            (leased, content)
        })
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].message_id, published.id);
    instance.shutdown_background();

    let back = tokio::time::timeout(Duration::from_secs(5), h.served)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        back,
        GivenBack {
            leases: 1,
            interchanges: 1,
            contents: 1
        }
    );
    // Ready now, not in a minute.
    let again = h.node_box.lease("out", 10, 60_000).await.unwrap();
    assert_eq!(again.len(), 1, "the dead instance's lease is ready again at once");
    assert_eq!(again[0].message_id, published.id);
    assert!(
        h.node_box.content().get_chunk(content, 0).await.is_err(),
        "its content is gone"
    );
    assert_eq!(h.node_box.counts().await.unwrap().spool, 1, "the staged record is gone");
}

#[tokio::test]
async fn a_peer_of_another_protocol_is_refused() {
    use futures::SinkExt;
    let (node_end, instance_end) = UnixStream::pair().unwrap();
    let mut writer = tokio_util::codec::FramedWrite::new(instance_end, crate::wire::codec());
    let hello = crate::wire::ToNode::Hello(crate::wire::Hello {
        protocol: "sluice-channel/0".into(),
        host: "h".into(),
        pid: 1,
    });
    writer.send(crate::wire::encode(&hello).unwrap()).await.unwrap();
    let refused = Connection::accept(node_end, Duration::from_secs(5)).await;
    assert!(matches!(refused, Err(crate::ChannelError::Protocol(m)) if m.contains("sluice-channel/0")));
    // And one that says nothing is refused in time.
    let (node_end, _silent) = UnixStream::pair().unwrap();
    let refused = Connection::accept(node_end, Duration::from_millis(50)).await;
    assert!(matches!(refused, Err(crate::ChannelError::Protocol(m)) if m.contains("no hello")));
}

/// A call over the frame limit is refused alone, on the instance's side:
/// the channel stays open and the next call goes through. A lease asking
/// for more than the node hands out at once is cut to it.
#[tokio::test]
async fn an_oversized_call_is_refused_alone() {
    let (h, stream) = harness().await;
    let (channel, _incoming, _) = Channel::over(stream, "leaky").await.unwrap();
    let remote = RemoteBox::new(channel.clone());
    let big: Vec<StagedMessage> = (0..2100)
        .map(|_| StagedMessage {
            message: message(&[7u8; 8192]),
            holder: None,
            suspend: None,
        })
        .collect();
    let refused = remote.stage(MessageId::new(), big).await;
    assert!(
        matches!(&refused, Err(BoxError::Storage { detail, .. }) if detail.contains("over the channel's limit")),
        "{refused:?}"
    );
    assert!(!channel.is_closed());
    for _ in 0..5000 {
        h.node_box.publish(message(b"x")).await.unwrap();
    }
    let leased = remote.lease("out", u32::MAX as usize, 60_000).await.unwrap();
    assert_eq!(leased.len(), crate::server::MAX_LEASE_AT_ONCE as usize);
}
