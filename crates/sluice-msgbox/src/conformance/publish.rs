//! Publishing, routing, references (holds), restarts.

use super::*;

pub async fn publish_routes_and_round_trips(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("xs", r#"t.kind == "x""#)).await.unwrap();
    b.subscribe(sub("big", "t.n > 5")).await.unwrap();
    let mut m = msg("x", 9);
    m.context
        .set("t", "ts", sluice_model::Value::timestamp(time_of(T0)), true);
    m.context.write("t", "raw", vec![0u8, 255, 7]);
    m.context.write("t", "f", 0.1f64);
    let (big, big_data) = stored_part(&*b, "attachment", 5555, 3).await;
    m.parts.push(big);
    let id = m.id;
    let routed = b.publish(m.clone()).await.unwrap();
    assert_eq!(routed, Routed::Queued(vec!["big".into(), "xs".into()]));
    let info = b.message(id).await.unwrap().expect("message is in the box");
    assert_eq!(info.context, m.context, "context round-trips exactly");
    assert_eq!(info.refs, 2);
    assert_eq!(info.parts.len(), 2);
    assert_eq!(info.parts[0].name, "body");
    assert_eq!(read_all(&*b, id).await, vec![b"body of x-9".to_vec(), big_data]);
    let counts = b.counts().await.unwrap();
    assert_eq!(counts.spool, 1);
    assert_eq!(counts.queued, BTreeMap::from([("big".into(), 1), ("xs".into(), 1)]));
    assert_eq!(counts.content_bytes, 11 + 5555);
    assert!(matches!(b.publish(m).await, Err(BoxError::Duplicate(d)) if d == id));
    let leased = b.lease("xs", 10, 1000).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].message_id, id);
    assert_eq!(leased[0].attempt, 1);
    assert_eq!(leased[0].context.get("t", "note").unwrap().value, "x-9".into());
    b.close().await.unwrap();
}

pub async fn no_subscriber_suspends_and_resume_routes(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    let m = msg("q", 1);
    let id = m.id;
    let Routed::Suspended { suspended_id } = b.publish(m).await.unwrap() else {
        panic!("a message nobody subscribes to must be suspended");
    };
    let list = b.list_suspended(&SuspendedQuery::default(), None, 10).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reason, NO_SUBSCRIBER);
    assert_eq!(list[0].message_id, id);
    assert_eq!(list[0].subscriber, None);
    assert!(matches!(
        b.resume(suspended_id).await,
        Err(BoxError::StillNoSubscriber { .. })
    ));
    assert_eq!(
        b.counts().await.unwrap().suspended,
        1,
        "a failed resume keeps it suspended"
    );
    b.subscribe(sub("qs", r#"t.kind starts-with "q""#)).await.unwrap();
    assert_eq!(b.resume(suspended_id).await.unwrap(), Routed::Queued(vec!["qs".into()]));
    let counts = b.counts().await.unwrap();
    assert_eq!((counts.suspended, counts.spool, counts.queued["qs"]), (0, 1, 1));
    let l = b.lease("qs", 1, 1000).await.unwrap();
    b.ack(l[0].token).await.unwrap();
    assert_eq!(b.counts().await.unwrap().spool, 0);
    b.close().await.unwrap();
}

pub async fn references_from_holders(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    let m = msg("x", 1);
    let id = m.id;
    b.publish(m).await.unwrap();
    b.hold(id, "orchestration-1").await.unwrap();
    b.hold(id, "orchestration-1").await.unwrap();
    b.hold(id, "orchestration-2").await.unwrap();
    assert_eq!(b.message(id).await.unwrap().unwrap().refs, 3);
    let l = b.lease("s", 1, 100).await.unwrap();
    b.ack(l[0].token).await.unwrap();
    assert!(b.message(id).await.unwrap().is_some(), "held messages stay");
    b.release(id, "orchestration-1").await.unwrap();
    assert!(matches!(
        b.release(id, "orchestration-1").await,
        Err(BoxError::NotHeld { .. })
    ));
    let info = b.message(id).await.unwrap().unwrap();
    assert_eq!(
        (info.refs, info.holders.clone()),
        (1, vec!["orchestration-2".to_string()])
    );
    b.release(id, "orchestration-2").await.unwrap();
    assert!(
        b.message(id).await.unwrap().is_none(),
        "the last release deletes the message"
    );
    assert!(matches!(b.hold(id, "late").await, Err(BoxError::NoSuchMessage(_))));
    b.close().await.unwrap();
}

pub async fn publish_holding_keeps_the_message(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    let m = msg("x", 1);
    let id = m.id;
    assert_eq!(
        b.publish_holding(m, "receive:folder").await.unwrap(),
        Routed::Queued(vec!["s".into()])
    );
    let orphan = msg("nobody", 0);
    let orphan_id = orphan.id;
    b.unsubscribe("s").await.unwrap();
    assert!(matches!(
        b.publish_holding(orphan, "receive:folder").await.unwrap(),
        Routed::Suspended { .. }
    ));
    b.subscribe(sub("s", "all")).await.unwrap();
    assert_eq!(
        b.held_by("receive:folder", None, 10).await.unwrap(),
        vec![id, orphan_id]
    );
    assert_eq!(
        b.held_by("receive:folder", Some(id), 10).await.unwrap(),
        vec![orphan_id]
    );
    assert!(b.held_by("other", None, 10).await.unwrap().is_empty());
    // Delivered and acknowledged, a message stays while its source holds it.
    for s in b.list_suspended(&SuspendedQuery::default(), None, 10).await.unwrap() {
        b.resume(s.id).await.unwrap();
    }
    for l in b.lease("s", 10, 100).await.unwrap() {
        b.ack(l.token).await.unwrap();
    }
    assert_eq!(b.message(id).await.unwrap().unwrap().refs, 1);
    assert_eq!(b.message(orphan_id).await.unwrap().unwrap().refs, 1);
    b.release(id, "receive:folder").await.unwrap();
    b.release(orphan_id, "receive:folder").await.unwrap();
    assert_eq!(b.counts().await.unwrap().spool, 0);
    b.close().await.unwrap();
}

pub async fn publish_suspended_is_not_routed(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    // Not `all`: that would take the fault message too.
    b.subscribe(sub("s", r#"t.kind == "x""#)).await.unwrap();
    let m = msg("x", 1);
    let id = m.id;
    let sid = b
        .publish_suspended(
            m,
            "receive:folder",
            &Failure::new("decode", "gzip", "truncated").at_location("folder"),
        )
        .await
        .unwrap();
    let c = b.counts().await.unwrap();
    assert_eq!(
        (c.spool, c.suspended, c.queued["s"]),
        (1, 1, 0),
        "suspended, not queued"
    );
    let s = b.list_suspended(&SuspendedQuery::default(), None, 10).await.unwrap();
    assert_eq!((s[0].id, s[0].message_id, s[0].subscriber.clone()), (sid, id, None));
    assert_eq!(
        (s[0].reason.as_str(), s[0].stage.as_str(), s[0].component.as_str()),
        ("truncated", "decode", "gzip")
    );
    assert_eq!(s[0].location.as_deref(), Some("folder"));
    assert!(!s[0].resumable);
    assert!(matches!(b.resume(sid).await, Err(BoxError::NotResumable { id, .. }) if id == sid));
    assert_eq!(
        b.counts().await.unwrap().suspended,
        1,
        "a refused resume changes nothing"
    );
    assert_eq!(b.message(id).await.unwrap().unwrap().refs, 2);
    b.release(id, "receive:folder").await.unwrap();
    b.terminate(sid).await.unwrap();
    assert_eq!(b.counts().await.unwrap().spool, 0);
    b.close().await.unwrap();
}

pub async fn last_release_deletes_stored_content(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    let mut m = msg("x", 1);
    let (p, _) = stored_part(&*b, "big", 10_500, 5).await;
    m.parts = vec![p];
    b.publish(m).await.unwrap();
    let c = b.counts().await.unwrap();
    assert_eq!((c.content_bytes, c.content_chunks), (10_500, 11));
    // Content written but never published is dropped by abort.
    let (orphan, _) = stored_part(&*b, "orphan", 3000, 7).await;
    if let PartBody::Stored { content, .. } = orphan.body {
        b.content().abort(content).await.unwrap();
    }
    let l = b.lease("s", 1, 100).await.unwrap();
    b.ack(l[0].token).await.unwrap();
    let c = b.counts().await.unwrap();
    assert_eq!((c.spool, c.content_bytes, c.content_chunks), (0, 0, 0));
    b.close().await.unwrap();
}

pub async fn state_survives_restart(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.subscribe(sub("s", r#"t.kind == "x""#)).await.unwrap();
    let mut m = msg("x", 1);
    let (p, data) = stored_part(&*b, "big", 4321, 9).await;
    m.parts.push(p);
    let id = m.id;
    let ctx = m.context.clone();
    b.publish(m).await.unwrap();
    b.publish(msg("y", 2)).await.unwrap(); // suspended: no subscriber
    let l = b.lease("s", 1, 5000).await.unwrap().remove(0);
    // Unpublished content must not survive a restart.
    let (_orphan, _) = stored_part(&*b, "orphan", 3000, 1).await;
    b.close().await.unwrap();
    assert!(matches!(b.counts().await, Err(BoxError::Closed)));

    let b = h.open(clock.clone()).await;
    assert_eq!(b.subscriptions().await.unwrap(), vec![sub("s", r#"t.kind == "x""#)]);
    let info = b.message(id).await.unwrap().expect("message survives");
    assert_eq!(info.context, ctx);
    assert_eq!(read_all(&*b, id).await[1], data);
    let c = b.counts().await.unwrap();
    assert_eq!(
        (c.spool, c.suspended, c.content_chunks),
        (2, 1, 5),
        "orphan chunks are gone after restart"
    );
    assert!(
        b.lease("s", 1, 5000).await.unwrap().is_empty(),
        "the lease survives the restart"
    );
    b.ack(l.token).await.unwrap();
    assert_eq!(b.counts().await.unwrap().spool, 1);
    b.close().await.unwrap();
}

pub async fn concurrent_publishes_all_land(h: &impl Harness) {
    let b = h.open(Arc::new(SystemClock)).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..100 {
                b.publish(msg("x", t * 1000 + n)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(b.counts().await.unwrap().queued["s"], 800);
    let mut seen = 0;
    loop {
        let l = b.lease("s", 64, 60_000).await.unwrap();
        if l.is_empty() {
            break;
        }
        seen += l.len();
        let acks: Vec<_> = l.into_iter().map(|l| (b.clone(), l.token)).collect();
        let mut js = Vec::new();
        for (b, t) in acks {
            js.push(tokio::spawn(async move { b.ack(t).await.unwrap() }));
        }
        for j in js {
            j.await.unwrap();
        }
    }
    assert_eq!(seen, 800);
    assert_eq!(b.counts().await.unwrap().spool, 0);
    b.close().await.unwrap();
}

// ---------------------------------------------------------------------------
// Model-based property test.
