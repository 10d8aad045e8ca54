//! Tracking events and their purge.

use super::*;

pub async fn tracking_records_and_purges(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.subscribe(sub("a", r#"t.kind == "x""#)).await.unwrap();
    let m = msg("x", 1);
    b.publish(m.clone()).await.unwrap();
    let l = lease_one(&*b, "a").await;
    b.ack(l.token).await.unwrap();
    clock.advance(10_000);
    let m2 = msg("x", 2);
    b.publish(m2.clone()).await.unwrap();
    let l = lease_one(&*b, "a").await;
    let sid = b.suspend(l.token, &fail("down")).await.unwrap();
    b.terminate(sid).await.unwrap();
    let events: Vec<(MessageId, String, Option<String>, Millis)> = b
        .tracking(&TrackingQuery::default(), None, 100)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| (e.message_id, e.event, e.subscriber, e.at))
        .collect();
    assert_eq!(
        events,
        vec![
            (m.id, tracked::RECEIVED.into(), None, T0),
            (m.id, tracked::COMPLETED.into(), Some("a".into()), T0),
            (m2.id, tracked::RECEIVED.into(), None, T0 + 10_000),
            (m2.id, tracked::SUSPENDED.into(), Some("a".into()), T0 + 10_000),
            (m2.id, tracked::TERMINATED.into(), Some("a".into()), T0 + 10_000),
            (m2.id, tracked::COMPLETED.into(), None, T0 + 10_000),
        ]
    );
    let done = b
        .tracking(&TrackingQuery::of_message(m2.id), None, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(done.len(), 4);
    assert_eq!(done[1].detail.as_deref(), Some("down"));
    assert_eq!(done[2].detail.as_deref(), Some("down"));
    assert_eq!(done[3].context.as_ref(), Some(&m2.context), "the context is kept");
    assert_eq!(b.purge_tracking(T0 + 5000, 1000).await.unwrap(), 2);
    assert_eq!(
        b.tracking(&TrackingQuery::default(), None, 100)
            .await
            .unwrap()
            .items
            .len(),
        4
    );
    assert_eq!(b.purge_tracking(T0 + 5000, 1000).await.unwrap(), 0);
    // Delivered to two: the first delivery is its own event, the last one
    // completes the message.
    b.subscribe(sub("b", "t.n > 0")).await.unwrap();
    clock.advance(10_000);
    let m3 = msg("x", 3);
    b.publish(m3.clone()).await.unwrap();
    for s in ["a", "b"] {
        let l = lease_one(&*b, s).await;
        b.ack(l.token).await.unwrap();
    }
    let events: Vec<(String, Option<String>)> = b
        .tracking(&TrackingQuery::of_message(m3.id), None, 10)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| (e.event, e.subscriber))
        .collect();
    assert_eq!(
        events,
        vec![
            (tracked::RECEIVED.into(), None),
            (tracked::DELIVERED.into(), Some("a".into())),
            (tracked::COMPLETED.into(), Some("b".into()))
        ]
    );
    // Purged in bounded batches, oldest first, up to the first newer event.
    assert_eq!(b.purge_tracking(T0 + 15_000, 3).await.unwrap(), 3);
    assert_eq!(b.purge_tracking(T0 + 15_000, 3).await.unwrap(), 1);
    assert_eq!(
        b.purge_tracking(T0 + 15_000, 3).await.unwrap(),
        0,
        "m3's events are newer"
    );
    assert_eq!(
        b.tracking(&TrackingQuery::default(), None, 100)
            .await
            .unwrap()
            .items
            .len(),
        3
    );
    b.close().await.unwrap();
}

/// An event as the cases compare it: kind, send port, receive location, detail.
type Seen = (String, Option<String>, Option<String>, Option<String>);

async fn events_of(b: &dyn MessageBox, id: MessageId) -> Vec<Seen> {
    b.tracking(&TrackingQuery::of_message(id), None, 100)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| (e.event, e.subscriber, e.location, e.detail))
        .collect()
}

fn seen(event: &str, port: Option<&str>, location: Option<&str>, detail: Option<&str>) -> Seen {
    (
        event.into(),
        port.map(str::to_string),
        location.map(str::to_string),
        detail.map(str::to_string),
    )
}

/// A message as the FILE receive location `in-folder` publishes file `name`.
fn received_file(kind: &str, n: i64, name: &str) -> NewMessage {
    let mut m = msg(kind, n);
    m.context.promote("receive", "location", "in-folder");
    m.context.promote("file", "name", name);
    m
}

/// Every change to a message is tracked with where it happened: received
/// (with its origin), suspended (port or location, error), resumed (to
/// whom), resubmitted (and the new message received), fault messages and
/// interchange records received (the records only when committed); a
/// change the box refuses leaves no event.
pub async fn tracking_says_where_messages_came_and_stopped(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("a", r#"t.kind == "x""#)).await.unwrap();
    b.subscribe(sub("faults", FAULTS)).await.unwrap();
    let m = received_file("x", 1, "a.txt");
    b.publish(m.clone()).await.unwrap();
    let l = lease_one(&*b, "a").await;
    let sid = b.suspend(l.token, &fail("down")).await.unwrap();
    assert_eq!(b.resume(sid).await.unwrap(), Routed::Queued(vec!["a".into()]));
    let l = lease_one(&*b, "a").await;
    let sid = b.suspend(l.token, &fail("down again")).await.unwrap();
    let again = b.resubmit(sid, Resubmission::default()).await.unwrap();
    let new_id = again.message_id.to_string();
    let (port, at) = (Some("a"), Some("in-folder"));
    assert_eq!(
        events_of(&*b, m.id).await,
        vec![
            seen(tracked::RECEIVED, None, at, Some("a.txt")),
            seen(tracked::SUSPENDED, port, at, Some("down")),
            seen(tracked::RESUMED, port, at, Some("a")),
            seen(tracked::SUSPENDED, port, at, Some("down again")),
            seen(tracked::RESUBMITTED, port, at, Some(&new_id)),
            seen(tracked::COMPLETED, None, None, None),
        ]
    );
    let origin = format!("resubmission of {}", m.id);
    assert_eq!(
        events_of(&*b, again.message_id).await,
        vec![seen(tracked::RECEIVED, None, None, Some(&origin))]
    );
    // Each suspension published a fault message: received, from where the
    // original stopped.
    let fault_of = format!("fault message of {}", m.id);
    let faults: Vec<TrackingEvent> = b
        .tracking(&TrackingQuery::default(), None, 1000)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.detail.as_deref() == Some(fault_of.as_str()))
        .collect();
    assert_eq!(faults.len(), 2, "{faults:?}");
    for f in &faults {
        assert_eq!(
            (f.event.as_str(), f.subscriber.as_deref(), f.location.as_deref()),
            (tracked::RECEIVED, port, at)
        );
    }

    // Routed nowhere: received, then suspended for no subscriber.
    let nobody = msg("y", 2);
    b.publish(nobody.clone()).await.unwrap();
    assert_eq!(
        events_of(&*b, nobody.id).await,
        vec![
            seen(tracked::RECEIVED, None, None, None),
            seen(tracked::SUSPENDED, None, None, Some(NO_SUBSCRIBER)),
        ]
    );
    // Refused by a receive location's pipeline: suspended there.
    let bad = received_file("x", 3, "b.gz");
    let failure = Failure::new("decode", "gzip", "truncated").at_location("gz-folder");
    let bad_sid = b.publish_suspended(bad.clone(), "receive:gz", &failure).await.unwrap();
    assert_eq!(
        events_of(&*b, bad.id).await,
        vec![
            seen(tracked::RECEIVED, None, at, Some("b.gz")),
            seen(tracked::SUSPENDED, None, Some("gz-folder"), Some("truncated")),
        ]
    );

    // Changes the box refuses leave no event.
    let before = b
        .tracking(&TrackingQuery::default(), None, 1000)
        .await
        .unwrap()
        .items
        .len();
    assert!(matches!(b.resume(bad_sid).await, Err(BoxError::NotResumable { .. })));
    assert!(matches!(
        b.resubmit(bad_sid, Resubmission::default()).await,
        Err(BoxError::NeedsNewBody { .. })
    ));
    assert!(matches!(b.terminate(424_242).await, Err(BoxError::NoSuchSuspended(_))));
    let mut dup = msg("x", 4);
    dup.id = again.message_id;
    assert!(matches!(b.publish(dup).await, Err(BoxError::Duplicate(_))));
    assert_eq!(
        b.tracking(&TrackingQuery::default(), None, 1000)
            .await
            .unwrap()
            .items
            .len(),
        before
    );

    // An interchange's records are received when it is committed, not before.
    let ic = MessageId::new();
    let records: Vec<NewMessage> = (1..=2)
        .map(|n| {
            let mut r = received_file("x", 10 + n, "batch.csv");
            r.context.promote("interchange", "sequence", n);
            r
        })
        .collect();
    b.stage(ic, records.iter().cloned().map(staged).collect())
        .await
        .unwrap();
    for r in &records {
        assert!(events_of(&*b, r.id).await.is_empty(), "staged: not received yet");
    }
    b.commit_interchange(ic).await.unwrap();
    for (n, r) in records.iter().enumerate() {
        let source = format!("batch.csv record {}", n + 1);
        assert_eq!(
            events_of(&*b, r.id).await,
            vec![seen(tracked::RECEIVED, None, at, Some(&source))]
        );
    }
    b.close().await.unwrap();
}

/// A message made at `ms` (ids carry their time), of `kind`, number `n`.
fn msg_at(ms: Millis, kind: &str, n: i64) -> NewMessage {
    let mut bytes = search::id_bound(ms);
    bytes[6..].copy_from_slice(&MessageId::new().to_bytes()[6..]);
    NewMessage {
        id: MessageId::from_bytes(bytes),
        ..msg(kind, n)
    }
}

async fn found(b: &dyn MessageBox, q: &MessageQuery, after: Option<MessageId>, limit: usize) -> Vec<MessageId> {
    let page = b.list_messages(q, after, limit).await.unwrap();
    page.items.iter().map(|m| m.id).collect()
}

pub async fn messages_are_found_by_context_time_and_port(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.subscribe(sub("a", r#"t.kind == "x""#)).await.unwrap();
    b.subscribe(sub("b", r#"t.kind == "y""#)).await.unwrap();
    let m1 = msg_at(T0 + 1000, "x", 1);
    let m2 = msg_at(T0 + 2000, "y", 2);
    let m3 = msg_at(T0 + 3000, "x", 3);
    for m in [&m1, &m2, &m3] {
        b.publish(m.clone()).await.unwrap();
    }
    let all = MessageQuery::default();
    let page = b.list_messages(&all, None, 10).await.unwrap();
    assert_eq!(
        page.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        [m1.id, m2.id, m3.id]
    );
    assert_eq!(page.next, None, "the end of the box");
    assert_eq!(page.items[0].parts, 1);
    // Paging: a full page names its last id; the last page none.
    let first = b.list_messages(&all, None, 2).await.unwrap();
    assert_eq!(first.next, Some(m2.id));
    assert_eq!(found(&*b, &all, first.next, 2).await, [m3.id]);
    let q = |f: fn(&mut MessageQuery)| {
        let mut q = MessageQuery::default();
        f(&mut q);
        q
    };
    let kind_x = q(|q| q.context = Some(Filter::parse(r#"t.kind == "x""#).unwrap()));
    assert_eq!(found(&*b, &kind_x, None, 10).await, [m1.id, m3.id]);
    assert_eq!(found(&*b, &kind_x, Some(m1.id), 10).await, [m3.id]);
    // The filter sees properties that are not promoted.
    let note = q(|q| q.context = Some(Filter::parse(r#"t.note == "y-2""#).unwrap()));
    assert_eq!(found(&*b, &note, None, 10).await, [m2.id]);
    let since = q(|q| q.since = Some(T0 + 2000));
    assert_eq!(found(&*b, &since, None, 10).await, [m2.id, m3.id]);
    let until = q(|q| q.until = Some(T0 + 2000));
    assert_eq!(found(&*b, &until, None, 10).await, [m1.id]);
    let port_b = q(|q| q.port = Some("b".into()));
    assert_eq!(found(&*b, &port_b, None, 10).await, [m2.id]);
    // Suspended at a port is still at it; delivered is gone from the box.
    let l = lease_one(&*b, "a").await;
    b.suspend(l.token, &fail("down")).await.unwrap();
    let l = lease_one(&*b, "a").await;
    b.ack(l.token).await.unwrap();
    let port_a = q(|q| q.port = Some("a".into()));
    assert_eq!(found(&*b, &port_a, None, 10).await, [m1.id]);
    let nothing = q(|q| q.port = Some("nobody".into()));
    let page = b.list_messages(&nothing, None, 10).await.unwrap();
    assert!(page.items.is_empty() && page.next.is_none());
    b.close().await.unwrap();
}

pub async fn a_search_examines_a_bounded_number_of_rows(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("a", "all")).await.unwrap();
    let n = SCAN_BUDGET + 10;
    let mut last = None;
    for chunk in 0..n.div_ceil(1000) {
        let batch: Vec<NewMessage> = (0..1000.min(n - chunk * 1000)).map(|i| msg("x", i as i64)).collect();
        last = batch.last().map(|m| m.id);
        let mut publishes = tokio::task::JoinSet::new();
        for m in batch {
            let b = b.clone();
            publishes.spawn(async move { b.publish(m).await.map(|_| ()) });
        }
        while let Some(done) = publishes.join_next().await {
            done.unwrap().unwrap();
        }
    }
    let wanted = msg("needle", 0);
    b.publish(wanted.clone()).await.unwrap();
    let needle = MessageQuery {
        context: Some(Filter::parse(r#"t.kind == "needle""#).unwrap()),
        ..MessageQuery::default()
    };
    // The first call stops after the budget with nothing found and a
    // cursor; going on finds it.
    let first = b.list_messages(&needle, None, 10).await.unwrap();
    assert!(first.items.is_empty());
    let cursor = first.next.expect("a cursor after the budget");
    assert!(Some(cursor) < last);
    let second = b.list_messages(&needle, Some(cursor), 10).await.unwrap();
    assert_eq!(second.items.iter().map(|m| m.id).collect::<Vec<_>>(), [wanted.id]);
    assert_eq!(second.next, None);
    // So does a condition the backend checks itself (a port, an event),
    // not only a context filter.
    let nobody = MessageQuery {
        port: Some("nobody".into()),
        ..MessageQuery::default()
    };
    let first = b.list_messages(&nobody, None, 10).await.unwrap();
    assert!(first.items.is_empty() && first.next.is_some(), "{:?}", first.next);
    let last = b.list_messages(&nobody, first.next, 10).await.unwrap();
    assert!(last.items.is_empty() && last.next.is_none());
    let terminated = TrackingQuery {
        event: Some(tracked::TERMINATED.into()),
        ..TrackingQuery::default()
    };
    let first = b.tracking(&terminated, None, 10).await.unwrap();
    assert!(first.items.is_empty() && first.next.is_some(), "{:?}", first.next);
    b.close().await.unwrap();
}

pub async fn tracking_is_found_by_event_port_time_and_context(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.subscribe(sub("a", r#"t.kind == "x""#)).await.unwrap();
    b.subscribe(sub("b", r#"t.kind == "y""#)).await.unwrap();
    let x = msg("x", 1);
    b.publish(x.clone()).await.unwrap();
    let l = lease_one(&*b, "a").await;
    b.ack(l.token).await.unwrap();
    clock.advance(5000);
    let y = msg("y", 2);
    b.publish(y.clone()).await.unwrap();
    let l = lease_one(&*b, "b").await;
    b.ack(l.token).await.unwrap();
    let events = |q: TrackingQuery| {
        let b = b.clone();
        async move {
            let page = b.tracking(&q, None, 100).await.unwrap();
            assert_eq!(page.next, None);
            page.items
                .into_iter()
                .map(|e| (e.message_id, e.event))
                .collect::<Vec<_>>()
        }
    };
    let completed = |id: MessageId| (id, tracked::COMPLETED.to_string());
    let received = |id: MessageId| (id, tracked::RECEIVED.to_string());
    assert_eq!(
        events(TrackingQuery {
            event: Some(tracked::COMPLETED.into()),
            ..Default::default()
        })
        .await,
        [completed(x.id), completed(y.id)]
    );
    assert_eq!(
        events(TrackingQuery {
            port: Some("b".into()),
            ..Default::default()
        })
        .await,
        [completed(y.id)]
    );
    assert_eq!(
        events(TrackingQuery {
            since: Some(T0 + 5000),
            ..Default::default()
        })
        .await,
        [received(y.id), completed(y.id)]
    );
    assert_eq!(
        events(TrackingQuery {
            until: Some(T0 + 5000),
            ..Default::default()
        })
        .await,
        [received(x.id), completed(x.id)]
    );
    // A context filter: only `completed` events carry a context.
    assert_eq!(
        events(TrackingQuery {
            context: Some(Filter::parse("t.n == 2").unwrap()),
            ..Default::default()
        })
        .await,
        [completed(y.id)]
    );
    assert_eq!(
        events(TrackingQuery {
            event: Some(tracked::RECEIVED.into()),
            message: Some(x.id),
            ..Default::default()
        })
        .await,
        [received(x.id)]
    );
    b.close().await.unwrap();
}
