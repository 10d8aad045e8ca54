//! Interchanges: staged, invisible until committed, aborted, gone after a restart.

use super::*;

pub async fn interchange_is_invisible_until_commit(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    let ic = MessageId::new();
    let mut ids = Vec::new();
    for batch in 0..3 {
        let ms: Vec<NewMessage> = (0..5).map(|i| msg("x", batch * 5 + i)).collect();
        ids.extend(ms.iter().map(|m| m.id));
        b.stage(ic, ms.into_iter().map(staged).collect()).await.unwrap();
    }
    let c = b.counts().await.unwrap();
    assert_eq!((c.queued["s"], c.suspended), (0, 0), "nothing queued before commit");
    assert!(
        b.lease("s", 100, 1000).await.unwrap().is_empty(),
        "no subscriber sees a staged message"
    );
    // Another interchange committed meanwhile does not make this one visible.
    let other = MessageId::new();
    b.stage(other, vec![staged(msg("y", 99))]).await.unwrap();
    let r = b.commit_interchange(other).await.unwrap();
    assert_eq!(r.messages, 1);
    assert_eq!(b.lease("s", 100, 1000).await.unwrap().len(), 1);
    let r = b.commit_interchange(ic).await.unwrap();
    assert_eq!(
        r,
        InterchangeRouted {
            messages: 15,
            queued: BTreeMap::from([("s".into(), 15)]),
            suspended: 0,
            no_subscriber: 0,
        }
    );
    let leased = b.lease("s", 100, 1000).await.unwrap();
    assert_eq!(
        leased.iter().map(|l| l.message_id).collect::<Vec<_>>(),
        ids,
        "committed in staging order"
    );
    assert_eq!(leased[3].context.promoted("t", "n"), Some(&3i64.into()));
    for l in leased {
        b.ack(l.token).await.unwrap();
    }
    // Committing again (nothing staged) does nothing.
    assert_eq!(b.commit_interchange(ic).await.unwrap(), InterchangeRouted::default());
    assert_eq!(
        b.counts().await.unwrap().spool,
        1,
        "the other interchange's leased message is left"
    );
    b.close().await.unwrap();
}

pub async fn interchange_routes_suspends_and_holds(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("xs", r#"t.kind == "x""#)).await.unwrap();
    b.subscribe(sub("all", "all")).await.unwrap();
    b.subscribe(sub("zs", r#"t.kind == "z""#)).await.unwrap();
    let ic = MessageId::new();
    let first = msg("x", 1);
    let first_id = first.id;
    let (p, data) = stored_part(&*b, "body", 3000, 4).await;
    let mut with_content = msg("x", 2);
    with_content.parts = vec![p];
    let bad = msg("x", 3);
    let bad_id = bad.id;
    let nobody = msg("q", 4);
    let z = msg("z", 5);
    b.stage(
        ic,
        vec![
            StagedMessage {
                message: first,
                holder: Some("receive:in".into()),
                suspend: None,
            },
            staged(with_content.clone()),
        ],
    )
    .await
    .unwrap();
    b.unsubscribe("all").await.unwrap();
    b.stage(
        ic,
        vec![
            StagedMessage {
                message: bad,
                holder: None,
                suspend: Some(Failure::new("validate", "rule", "record 3 (at byte 9): nope").at_location("in")),
            },
            staged(nobody),
            staged(z),
        ],
    )
    .await
    .unwrap();
    b.unsubscribe("zs").await.unwrap();
    let r = b.commit_interchange(ic).await.unwrap();
    // x1 → xs + all (all was removed after staging: suspended "subscriber removed");
    // x2 likewise; x3 suspended (bad record); q4 no subscriber; z5 → zs removed.
    assert_eq!(r.messages, 5);
    assert_eq!(r.queued, BTreeMap::from([("xs".into(), 2)]));
    assert_eq!((r.suspended, r.no_subscriber), (5, 1));
    let suspended = b.list_suspended(&SuspendedQuery::default(), None, 100).await.unwrap();
    let bad_entry = suspended
        .iter()
        .find(|s| s.message_id == bad_id)
        .expect("bad record suspended");
    assert!(!bad_entry.resumable, "a bad record is not resumable");
    assert!(bad_entry.reason.contains("record 3"));
    assert_eq!(
        (
            bad_entry.stage.as_str(),
            bad_entry.component.as_str(),
            bad_entry.location.as_deref()
        ),
        ("validate", "rule", Some("in")),
        "a bad record says where it failed"
    );
    assert!(suspended.iter().any(|s| s.reason == NO_SUBSCRIBER && s.resumable));
    assert_eq!(suspended.iter().filter(|s| s.reason == SUBSCRIBER_REMOVED).count(), 3);
    assert_eq!(b.held_by("receive:in", None, 10).await.unwrap(), vec![first_id]);
    assert_eq!(read_all(&*b, with_content.id).await, vec![data]);
    // Deliver and drop everything: only the held message stays, until released.
    for l in b.lease("xs", 10, 1000).await.unwrap() {
        b.ack(l.token).await.unwrap();
    }
    for s in suspended {
        b.terminate(s.id).await.unwrap();
    }
    assert_eq!(b.counts().await.unwrap().spool, 1);
    b.release(first_id, "receive:in").await.unwrap();
    let c = b.counts().await.unwrap();
    assert_eq!((c.spool, c.content_chunks), (0, 0));
    b.close().await.unwrap();
}

pub async fn aborted_interchange_leaves_nothing(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    let keep = msg("k", 0);
    b.publish(keep.clone()).await.unwrap();
    let ic = MessageId::new();
    let (p, _) = stored_part(&*b, "body", 5000, 2).await;
    let mut m = msg("x", 1);
    m.parts = vec![p];
    b.stage(
        ic,
        vec![
            StagedMessage {
                message: m,
                holder: Some("receive:in".into()),
                suspend: None,
            },
            staged(msg("x", 2)),
        ],
    )
    .await
    .unwrap();
    assert!(
        b.held_by("receive:in", None, 10).await.unwrap().is_empty(),
        "held_by does not list a staged message"
    );
    assert_eq!(b.abort_interchange(ic).await.unwrap(), 2);
    // A batch with a duplicate id is refused whole.
    let ic2 = MessageId::new();
    let a = msg("x", 5);
    let dup = NewMessage {
        id: a.id,
        ..msg("x", 6)
    };
    let r = b
        .stage(ic2, vec![staged(a.clone()), staged(msg("x", 7)), staged(dup)])
        .await;
    assert!(matches!(r, Err(BoxError::Duplicate(d)) if d == a.id), "{r:?}");
    assert_eq!(b.counts().await.unwrap().spool, 1, "a refused batch writes nothing");
    b.stage(ic2, vec![staged(a.clone())]).await.unwrap();
    assert!(
        b.message(a.id).await.unwrap().is_none(),
        "a staged message is not readable yet"
    );
    assert!(matches!(b.release(a.id, "x").await, Err(BoxError::NotHeld { .. })));
    b.commit_interchange(ic2).await.unwrap();
    assert!(b.message(a.id).await.unwrap().is_some());
    let c = b.counts().await.unwrap();
    assert_eq!((c.spool, c.content_chunks, c.queued["s"]), (2, 0, 2));
    assert!(b.held_by("receive:in", None, 10).await.unwrap().is_empty());
    assert_eq!(
        b.commit_interchange(ic).await.unwrap().messages,
        0,
        "nothing left to commit"
    );
    b.close().await.unwrap();
}

pub async fn uncommitted_interchange_is_gone_after_restart(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    let done = MessageId::new();
    b.stage(done, vec![staged(msg("x", 1))]).await.unwrap();
    b.commit_interchange(done).await.unwrap();
    let ic = MessageId::new();
    let (p, _) = stored_part(&*b, "body", 4000, 3).await;
    let mut m = msg("x", 2);
    m.parts = vec![p];
    b.stage(
        ic,
        vec![StagedMessage {
            message: m,
            holder: Some("receive:in".into()),
            suspend: None,
        }],
    )
    .await
    .unwrap();
    b.close().await.unwrap();
    let b = h.open(clock).await;
    let c = b.counts().await.unwrap();
    assert_eq!(
        (c.spool, c.content_chunks, c.queued["s"]),
        (1, 0, 1),
        "only the committed one is left"
    );
    assert!(b.held_by("receive:in", None, 10).await.unwrap().is_empty());
    assert_eq!(b.commit_interchange(ic).await.unwrap().messages, 0);
    b.close().await.unwrap();
}
