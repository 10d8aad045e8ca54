//! Leases: ack, nack, expiry, renewal, stale tokens, attempts.

use super::*;

pub async fn lease_ack_nack_and_expiry(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    let ids: Vec<MessageId> = {
        let mut v = Vec::new();
        for n in 0..5 {
            let m = msg("x", n);
            v.push(m.id);
            b.publish(m).await.unwrap();
        }
        v
    };
    let first = b.lease("s", 2, 1000).await.unwrap();
    assert_eq!(first.iter().map(|l| l.message_id).collect::<Vec<_>>(), ids[..2]);
    assert_eq!(first[0].lease_until, T0 + 1000);
    let rest = b.lease("s", 10, 1000).await.unwrap();
    assert_eq!(rest.iter().map(|l| l.message_id).collect::<Vec<_>>(), ids[2..]);
    assert!(
        b.lease("s", 10, 1000).await.unwrap().is_empty(),
        "leased entries are not handed out twice"
    );
    b.ack(first[0].token).await.unwrap();
    b.nack(first[1].token, T0 + 500, &fail("try later")).await.unwrap();
    assert!(
        b.lease("s", 10, 1000).await.unwrap().is_empty(),
        "a nacked entry waits for its retry time"
    );
    clock.advance(500);
    let again = b.lease("s", 10, 1000).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].message_id, again[0].attempt), (ids[1], 2));
    let info = b.message(ids[1]).await.unwrap().unwrap();
    assert_eq!(info.queue[0].last_error.as_deref(), Some("try later"));
    clock.advance(500); // T0+1000: the leases from `rest` expire
    let expired = b.lease("s", 10, 1000).await.unwrap();
    assert_eq!(expired.iter().map(|l| l.message_id).collect::<Vec<_>>(), ids[2..]);
    assert!(expired.iter().all(|l| l.attempt == 2));
    for l in again.iter().chain(&expired) {
        b.ack(l.token).await.unwrap();
    }
    let c = b.counts().await.unwrap();
    assert_eq!(
        (c.spool, c.queued.get("s").copied().unwrap_or(0), c.content_bytes),
        (0, 0, 0)
    );
    b.close().await.unwrap();
}

pub async fn stale_tokens_are_refused(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    b.publish(msg("x", 1)).await.unwrap();
    let old = b.lease("s", 1, 100).await.unwrap().remove(0);
    clock.advance(100);
    let new = b.lease("s", 1, 100).await.unwrap().remove(0);
    assert_eq!(old.token.entry, new.token.entry);
    assert!(matches!(b.ack(old.token).await, Err(BoxError::LeaseLost { .. })));
    assert!(matches!(
        b.nack(old.token, T0, &fail("x")).await,
        Err(BoxError::LeaseLost { .. })
    ));
    b.nack(new.token, T0, &fail("x")).await.unwrap();
    assert!(
        matches!(b.ack(new.token).await, Err(BoxError::LeaseLost { .. })),
        "nack gives the lease up"
    );
    let third = b.lease("s", 1, 100).await.unwrap().remove(0);
    // An expired lease nobody took over can still be acknowledged.
    clock.advance(1000);
    b.ack(third.token).await.unwrap();
    assert!(matches!(b.ack(third.token).await, Err(BoxError::LeaseLost { .. })));
    assert_eq!(b.counts().await.unwrap().spool, 0);
    b.close().await.unwrap();
}

pub async fn release_leases_makes_entries_ready(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    b.publish(msg("x", 1)).await.unwrap();
    b.publish(msg("x", 2)).await.unwrap();
    let first = b.lease("s", 1, 60_000).await.unwrap().remove(0);
    assert_eq!(b.release_leases().await.unwrap(), 1);
    assert!(matches!(b.ack(first.token).await, Err(BoxError::LeaseLost { .. })));
    let again = b.lease("s", 10, 60_000).await.unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!((again[0].message_id, again[0].attempt), (first.message_id, 2));
    b.close().await.unwrap();
}

pub async fn renew_keeps_a_lease(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    b.publish(msg("x", 1)).await.unwrap();
    let l = b.lease("s", 1, 100).await.unwrap().remove(0);
    clock.advance(90);
    assert_eq!(b.renew(l.token, 100).await.unwrap(), T0 + 190);
    clock.advance(90); // past the first expiry, before the renewed one
    assert!(
        b.lease("s", 1, 100).await.unwrap().is_empty(),
        "a renewed lease is not handed out again"
    );
    clock.advance(20);
    let again = b.lease("s", 1, 100).await.unwrap().remove(0);
    assert!(
        matches!(b.renew(l.token, 100).await, Err(BoxError::LeaseLost { .. })),
        "a lost lease cannot be renewed"
    );
    b.nack(again.token, T0, &fail("x")).await.unwrap();
    assert!(matches!(
        b.renew(again.token, 100).await,
        Err(BoxError::LeaseLost { .. })
    ));
    b.close().await.unwrap();
}

pub async fn attempts_are_recorded_and_can_skip_forward(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.subscribe(sub("deliver", r#"t.kind == "x""#)).await.unwrap();
    let m = msg("x", 1);
    b.publish(m.clone()).await.unwrap();
    let l = lease_one(&*b, "deliver").await;
    b.nack(l.token, T0, &fail("first").by_transport("primary"))
        .await
        .unwrap();
    clock.advance(1000);
    let l = lease_one(&*b, "deliver").await;
    assert_eq!(l.attempt, 2);
    // Give up on the primary: the next lease is attempt 5.
    b.nack_to_attempt(l.token, T0 + 1000, &fail("second").by_transport("primary"), 5)
        .await
        .unwrap();
    let l = lease_one(&*b, "deliver").await;
    assert_eq!(l.attempt, 5, "the attempt count skipped forward");
    // Backwards is ignored.
    b.nack_to_attempt(l.token, T0 + 1000, &fail("third").by_transport("backup"), 2)
        .await
        .unwrap();
    clock.advance(500);
    let l = lease_one(&*b, "deliver").await;
    assert_eq!(l.attempt, 6);
    let sid = b
        .suspend(l.token, &fail("fourth").by_transport("backup"))
        .await
        .unwrap();
    let s = b.suspended(sid).await.unwrap().expect("suspended");
    let history: Vec<(u32, Millis, Option<&str>, &str)> = s
        .history
        .iter()
        .map(|a| (a.attempt, a.at, a.transport.as_deref(), a.error.as_str()))
        .collect();
    assert_eq!(
        history,
        vec![
            (1, T0, Some("primary"), "first"),
            (2, T0 + 1000, Some("primary"), "second"),
            (3, T0 + 1000, Some("backup"), "third"),
            (4, T0 + 1500, Some("backup"), "fourth"),
        ],
        "attempts made, numbered 1, 2, 3... (positions 3 and 4 were skipped)"
    );
    assert_eq!((s.attempts, s.transport.as_deref()), (4, Some("backup")));
    // Resumed and delivered: the history goes with the entry.
    b.resume(sid).await.unwrap();
    let l = lease_one(&*b, "deliver").await;
    assert_eq!(
        (l.message_id, l.attempt),
        (m.id, 1),
        "a resumed entry starts its attempts again"
    );
    b.ack(l.token).await.unwrap();
    assert_eq!(b.counts().await.unwrap().spool, 0);
    // A stale token cannot record an attempt.
    b.publish(msg("x", 2)).await.unwrap();
    let l = lease_one(&*b, "deliver").await;
    b.nack(l.token, T0, &fail("x")).await.unwrap();
    assert!(matches!(
        b.nack_to_attempt(l.token, T0, &fail("y"), 9).await,
        Err(BoxError::LeaseLost { .. })
    ));
    b.close().await.unwrap();
}

/// `lease_with_bodies` hands out the parts of inline messages within its
/// byte budget (in order, none after the first that does not fit), never
/// those of stored content, and they are the parts `parts` reads.
pub async fn lease_with_bodies_hands_out_small_bodies_within_the_budget(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    let (big, _) = stored_part(&*b, "big", 3000, 4).await;
    let mut stored = msg("x", 0);
    stored.parts = vec![big];
    let mut ids = vec![stored.id];
    b.publish(stored).await.unwrap();
    for n in 1..5 {
        let m = msg("x", n); // "body of x-N": 11 bytes each
        ids.push(m.id);
        b.publish(m).await.unwrap();
    }
    // Then one small enough for what is left, and one with no body.
    for body in ["tiny", ""] {
        let mut m = msg("x", 9);
        m.parts = vec![Part::inline("body", body)];
        ids.push(m.id);
        b.publish(m).await.unwrap();
    }
    // Room for two inline bodies (22 bytes) but not a third (33); the
    // budget is then spent, though "tiny" (4) would fit in what is left.
    let got = b.lease_with_bodies("s", 10, 1000, 30).await.unwrap();
    assert_eq!(got.iter().map(|l| l.message_id).collect::<Vec<_>>(), ids);
    assert_eq!(got[0].parts, None, "stored content is not handed out with the lease");
    for l in &got[1..3] {
        let parts = l
            .parts
            .as_ref()
            .expect("an inline message within the budget comes with its parts");
        assert_eq!(parts, &b.parts(l.message_id).await.unwrap());
    }
    for l in &got[3..] {
        assert_eq!(
            l.parts, None,
            "past the budget: none, after the first that does not fit"
        );
    }
    // A lease with no budget, and a plain lease, hand out contexts only
    // (the message with no body too).
    clock.advance(1000);
    let again = b.lease_with_bodies("s", 10, 1000, 0).await.unwrap();
    assert_eq!(again.len(), 7);
    assert!(again.iter().all(|l| l.parts.is_none()));
    clock.advance(1000);
    assert!(b.lease("s", 10, 1000).await.unwrap().iter().all(|l| l.parts.is_none()));
    // The lease is a lease like any other: acked, the message is gone.
    clock.advance(1000);
    for l in b.lease_with_bodies("s", 10, 1000, 1 << 20).await.unwrap() {
        assert!(l.parts.is_some() || l.message_id == ids[0]);
        b.ack(l.token).await.unwrap();
    }
    assert_eq!(b.counts().await.unwrap().spool, 0);
}

/// `ack_many` acknowledges every token it can, in one go, and says which
/// lease was lost; what it acknowledged is gone, the lost one untouched.
pub async fn ack_many_acks_each_and_names_lost_leases(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    for n in 0..3 {
        b.publish(msg("x", n)).await.unwrap();
    }
    let first = b.lease("s", 3, 1000).await.unwrap();
    assert_eq!(first.len(), 3);
    // The middle one expires and is leased again: its first token is stale.
    b.ack(first[0].token).await.unwrap();
    clock.advance(1000);
    let again = b.lease("s", 3, 1000).await.unwrap();
    assert_eq!(again.len(), 2);
    let tokens = [first[0].token, again[0].token, first[1].token, again[1].token].map(Ack::from);
    let got = b.ack_many(&tokens).await.unwrap();
    assert_eq!(got.len(), 4);
    assert!(matches!(got[0], Err(BoxError::LeaseLost { .. })), "{:?}", got[0]);
    assert!(got[1].is_ok(), "{:?}", got[1]);
    assert!(matches!(got[2], Err(BoxError::LeaseLost { .. })), "{:?}", got[2]);
    assert!(got[3].is_ok(), "{:?}", got[3]);
    let counts = b.counts().await.unwrap();
    assert_eq!((counts.spool, counts.queued.get("s").copied().unwrap_or(0)), (0, 0));
    assert!(b.ack_many(&[]).await.unwrap().is_empty());
}

/// A delivery in parts keeps its progress: a nack records it, the next
/// lease hands it back, a nack without progress keeps it, a suspension
/// takes it along and a resume gives it back. Where an ack said the message
/// went is its tracking event's detail (`delivered`, or `completed` when it
/// was the last reference).
pub async fn progress_and_where_delivered_are_kept(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    // (Not `all`: the suspension's fault message must not be leased here.)
    b.subscribe(sub("a", r#"t.kind == "x""#)).await.unwrap();
    b.subscribe(sub("b", r#"t.kind == "x""#)).await.unwrap();
    let m = msg("x", 1);
    b.publish(m.clone()).await.unwrap();
    let l = lease_one(&*b, "a").await;
    assert_eq!(l.progress, None, "a first attempt has none");
    b.nack(l.token, T0, &fail("451 later").with_progress(Some("to: x@a".into())))
        .await
        .unwrap();
    let l = lease_one(&*b, "a").await;
    assert_eq!(l.progress.as_deref(), Some("to: x@a"));
    b.nack(l.token, T0, &fail("connection refused")).await.unwrap();
    let l = lease_one(&*b, "a").await;
    assert_eq!(
        l.progress.as_deref(),
        Some("to: x@a"),
        "a nack without progress keeps it"
    );
    let sid = b.suspend(l.token, &fail("550 no such user")).await.unwrap();
    // Kept across a restart, then resumed.
    b.close().await.unwrap();
    let b = h.open(clock.clone()).await;
    b.resume(sid).await.unwrap();
    let l = lease_one(&*b, "a").await;
    assert_eq!(l.progress.as_deref(), Some("to: x@a"), "a resume gives it back");
    let other = lease_one(&*b, "b").await;
    assert_eq!(other.progress, None, "progress is per entry, not per message");
    let got = b
        .ack_many(&[
            Ack {
                token: l.token,
                delivered_to: Some("smtp://mx <id@x>: 250 ok".into()),
            },
            Ack {
                token: other.token,
                delivered_to: Some("/out/x.xml".into()),
            },
        ])
        .await
        .unwrap();
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    let events: Vec<(String, Option<String>, Option<String>)> = b
        .tracking(&TrackingQuery::of_message(m.id), None, 20)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.event == tracked::DELIVERED || e.event == tracked::COMPLETED)
        .map(|e| (e.event, e.subscriber, e.detail))
        .collect();
    assert_eq!(
        events,
        vec![
            (
                tracked::DELIVERED.into(),
                Some("a".into()),
                Some("smtp://mx <id@x>: 250 ok".into())
            ),
            (tracked::COMPLETED.into(), Some("b".into()), Some("/out/x.xml".into())),
        ]
    );
    // A resubmission to the same port goes on from there too; the other
    // port's entry of the new message starts from nothing.
    b.publish(msg("x", 2)).await.unwrap();
    let l = lease_one(&*b, "a").await;
    let sid = b
        .suspend(l.token, &fail("550").with_progress(Some("p2".into())))
        .await
        .unwrap();
    let _ = lease_one(&*b, "b").await;
    let again = b
        .resubmit(
            sid,
            Resubmission {
                context: None,
                parts: None,
            },
        )
        .await
        .unwrap();
    let l = lease_one(&*b, "a").await;
    assert_eq!((l.message_id, l.progress.as_deref()), (again.message_id, Some("p2")));
    b.ack(l.token).await.unwrap();
    let other = lease_one(&*b, "b").await;
    assert_eq!((other.message_id, other.progress), (again.message_id, None));
    b.ack(other.token).await.unwrap();
    // A port removed with entries queued keeps their progress with the
    // suspended entries: put back and resumed, it goes on.
    b.publish(msg("x", 3)).await.unwrap();
    let l = lease_one(&*b, "a").await;
    b.nack(l.token, T0, &fail("451").with_progress(Some("p3".into())))
        .await
        .unwrap();
    b.unsubscribe("a").await.unwrap();
    b.subscribe(sub("a", r#"t.kind == "x""#)).await.unwrap();
    let held = b.list_suspended(&SuspendedQuery::default(), None, 10).await.unwrap();
    let sid = held
        .iter()
        .find(|s| s.subscriber.as_deref() == Some("a"))
        .expect("the removed port's entry, suspended")
        .id;
    b.resume(sid).await.unwrap();
    let l = lease_one(&*b, "a").await;
    assert_eq!(l.progress.as_deref(), Some("p3"));
}
