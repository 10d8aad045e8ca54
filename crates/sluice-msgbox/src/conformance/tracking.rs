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
            (m.id, tracked::COMPLETED.into(), Some("a".into()), T0),
            (m2.id, tracked::TERMINATED.into(), Some("a".into()), T0 + 10_000),
            (m2.id, tracked::COMPLETED.into(), None, T0 + 10_000),
        ]
    );
    let done = b.tracking(Some(m2.id), None, 10).await.unwrap();
    assert_eq!(done.len(), 2);
    assert_eq!(done[0].detail.as_deref(), Some("down"));
    assert_eq!(done[1].context.as_ref(), Some(&m2.context), "the context is kept");
    assert_eq!(b.purge_tracking(T0 + 5000, 1000).await.unwrap(), 1);
    assert_eq!(b.tracking(None, None, 100).await.unwrap().len(), 2);
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
            (tracked::DELIVERED.into(), Some("a".into())),
            (tracked::COMPLETED.into(), Some("b".into()))
        ]
    );
    // Purged in bounded batches, oldest first, up to the first newer event.
    assert_eq!(b.purge_tracking(T0 + 15_000, 1).await.unwrap(), 1);
    assert_eq!(b.purge_tracking(T0 + 15_000, 1).await.unwrap(), 1);
    assert_eq!(
        b.purge_tracking(T0 + 15_000, 1).await.unwrap(),
        0,
        "m3's events are newer"
    );
    assert_eq!(b.tracking(None, None, 100).await.unwrap().len(), 2);
    b.close().await.unwrap();
}
