//! Node-owned work: leases, holds and staged interchanges belong to the node
//! whose handle took them, and recovery takes back only that node's.

use super::*;

/// Nodes A and B on one box, with subscriber `s` taking every message;
/// `None` if the backend cannot open two.
async fn two_nodes(h: &impl Harness, clock: &Arc<ManualClock>) -> Option<(Arc<dyn MessageBox>, Arc<dyn MessageBox>)> {
    let a = h.open_node(clock.clone(), "node-a").await?;
    a.subscribe(sub("s", "all")).await.unwrap();
    let b = h.open_node(clock.clone(), "node-b").await.expect("a second node");
    Some((a, b))
}

/// Node A stops (without settling what it has in hand) and starts again.
async fn restart(h: &impl Harness, clock: &Arc<ManualClock>, a: Arc<dyn MessageBox>) -> Arc<dyn MessageBox> {
    a.close().await.unwrap();
    h.open_node(clock.clone(), "node-a").await.expect("node A again")
}

pub async fn recover_takes_back_the_nodes_leases(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    b.publish(msg("x", 1)).await.unwrap();
    let l = lease_one(&*b, "s").await;
    b.close().await.unwrap();

    let b = h.open(clock.clone()).await;
    assert!(
        b.lease("s", 1, 5000).await.unwrap().is_empty(),
        "the lease survives the restart"
    );
    let r = b.recover().await.unwrap();
    assert_eq!(r.leases, 1, "{r:?}");
    assert!(matches!(b.ack(l.token).await, Err(BoxError::LeaseLost { .. })));
    let again = lease_one(&*b, "s").await;
    b.ack(again.token).await.unwrap();
    assert_eq!(
        b.recover().await.unwrap(),
        Recovered::default(),
        "nothing left to take back"
    );
    b.close().await.unwrap();
}

pub async fn nodes_recover_only_their_own_leases(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let Some((a, b)) = two_nodes(h, &clock).await else {
        return;
    };
    a.publish(msg("x", 1)).await.unwrap();
    a.publish(msg("x", 2)).await.unwrap();
    let la = lease_one(&*a, "s").await;
    let lb = lease_one(&*b, "s").await;
    assert_ne!(la.message_id, lb.message_id);

    // Node A stops without settling its lease, and comes back.
    let a = restart(h, &clock, a).await;
    assert_eq!(a.recover().await.unwrap().leases, 1, "only A's own lease");
    assert_eq!(a.release_leases().await.unwrap(), 0);
    // B's lease holds: the entry is not handed out again, and B settles it.
    let again = lease_one(&*a, "s").await;
    assert_eq!(again.message_id, la.message_id);
    assert!(
        a.lease("s", 1, 5000).await.unwrap().is_empty(),
        "B's entry stays leased"
    );
    b.renew(lb.token, 5000).await.unwrap();
    b.ack(lb.token).await.unwrap();
    a.ack(again.token).await.unwrap();
    assert_eq!(b.release_leases().await.unwrap(), 0);
    assert_eq!(a.counts().await.unwrap().spool, 0);
    b.close().await.unwrap();
    a.close().await.unwrap();
}

pub async fn held_by_lists_only_the_nodes_holds(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let Some((a, b)) = two_nodes(h, &clock).await else {
        return;
    };
    let (ma, mb) = (msg("x", 1), msg("x", 2));
    let (ida, idb) = (ma.id, mb.id);
    a.publish_holding(ma, "receive:in").await.unwrap();
    b.publish_holding(mb, "receive:in").await.unwrap();
    assert_eq!(a.held_by("receive:in", None, 10).await.unwrap(), vec![ida]);
    assert_eq!(b.held_by("receive:in", None, 10).await.unwrap(), vec![idb]);

    // A restarts and releases what it held; B's hold stays.
    let a = restart(h, &clock, a).await;
    a.recover().await.unwrap();
    for id in a.held_by("receive:in", None, 10).await.unwrap() {
        a.release(id, "receive:in").await.unwrap();
    }
    assert!(a.held_by("receive:in", None, 10).await.unwrap().is_empty());
    assert_eq!(b.held_by("receive:in", None, 10).await.unwrap(), vec![idb]);
    let info = a.message(idb).await.unwrap().expect("B's message is in the box");
    assert_eq!(info.holders, vec!["receive:in".to_string()]);
    b.close().await.unwrap();
    a.close().await.unwrap();
}

pub async fn nodes_discard_only_their_own_interchanges(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let Some((a, b)) = two_nodes(h, &clock).await else {
        return;
    };
    let (ica, icb) = (MessageId::new(), MessageId::new());
    let (pa, _) = stored_part(&*a, "body", 3000, 2).await;
    let mut m = msg("x", 1);
    m.parts = vec![pa];
    a.stage(ica, vec![staged(m)]).await.unwrap();
    let (pb, data) = stored_part(&*b, "body", 3000, 5).await;
    let mut m = msg("x", 2);
    m.parts = vec![pb];
    let idb = m.id;
    b.stage(icb, vec![staged(m)]).await.unwrap();
    // B is writing content it has not published yet.
    let (pending, pending_data) = stored_part(&*b, "body", 2500, 7).await;

    let a = restart(h, &clock, a).await;
    let r = a.recover().await.unwrap();
    assert_eq!((r.leases, r.staged), (0, 1), "only A's interchange: {r:?}");
    assert_eq!(a.commit_interchange(ica).await.unwrap().messages, 0);
    assert_eq!(
        b.commit_interchange(icb).await.unwrap().messages,
        1,
        "B's interchange is whole"
    );
    assert_eq!(read_all(&*a, idb).await, vec![data]);
    let mut m = msg("x", 3);
    m.parts = vec![pending];
    let id = m.id;
    b.publish(m)
        .await
        .expect("B's unpublished content survives A's recovery");
    assert_eq!(read_all(&*a, id).await, vec![pending_data]);
    b.close().await.unwrap();
    a.close().await.unwrap();
}
