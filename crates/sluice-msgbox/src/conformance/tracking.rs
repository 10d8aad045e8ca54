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
        .tracking(None, None, 100)
        .await
        .unwrap()
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
    let done = b.tracking(Some(m2.id), None, 10).await.unwrap();
    assert_eq!(done.len(), 4);
    assert_eq!(done[1].detail.as_deref(), Some("down"));
    assert_eq!(done[2].detail.as_deref(), Some("down"));
    assert_eq!(done[3].context.as_ref(), Some(&m2.context), "the context is kept");
    assert_eq!(b.purge_tracking(T0 + 5000, 1000).await.unwrap(), 2);
    assert_eq!(b.tracking(None, None, 100).await.unwrap().len(), 4);
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
        .tracking(Some(m3.id), None, 10)
        .await
        .unwrap()
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
    assert_eq!(b.tracking(None, None, 100).await.unwrap().len(), 3);
    b.close().await.unwrap();
}

/// An event as the cases compare it: kind, send port, receive location, detail.
type Seen = (String, Option<String>, Option<String>, Option<String>);

async fn events_of(b: &dyn MessageBox, id: MessageId) -> Vec<Seen> {
    b.tracking(Some(id), None, 100)
        .await
        .unwrap()
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
        .tracking(None, None, 1000)
        .await
        .unwrap()
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
    let before = b.tracking(None, None, 1000).await.unwrap().len();
    assert!(matches!(b.resume(bad_sid).await, Err(BoxError::NotResumable { .. })));
    assert!(matches!(
        b.resubmit(bad_sid, Resubmission::default()).await,
        Err(BoxError::NeedsNewBody { .. })
    ));
    assert!(matches!(b.terminate(424_242).await, Err(BoxError::NoSuchSuspended(_))));
    let mut dup = msg("x", 4);
    dup.id = again.message_id;
    assert!(matches!(b.publish(dup).await, Err(BoxError::Duplicate(_))));
    assert_eq!(b.tracking(None, None, 1000).await.unwrap().len(), before);

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
