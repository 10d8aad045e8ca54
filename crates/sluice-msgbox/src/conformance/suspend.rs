//! Suspended entries: unsubscribe, terminate, resubmit, queries.

use super::*;

pub async fn unsubscribe_suspends_queued_entries(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    for n in 0..3 {
        b.publish(msg("x", n)).await.unwrap();
    }
    assert_eq!(b.unsubscribe("s").await.unwrap(), 3);
    assert!(b.subscriptions().await.unwrap().is_empty());
    let c = b.counts().await.unwrap();
    assert_eq!((c.spool, c.suspended), (3, 3));
    let s = b.list_suspended(&SuspendedQuery::default(), None, 10).await.unwrap();
    assert!(s.iter().all(|s| s.subscriber.as_deref() == Some("s")));
    assert!(matches!(b.resume(s[0].id).await, Err(BoxError::NoSuchSubscriber(_))));
    b.subscribe(sub("s", "all")).await.unwrap();
    assert_eq!(b.resume(s[0].id).await.unwrap(), Routed::Queued(vec!["s".into()]));
    assert!(matches!(
        b.unsubscribe("nobody").await,
        Err(BoxError::NoSuchSubscriber(_))
    ));
    b.close().await.unwrap();
}

pub async fn terminate_and_missing_ids(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    let Routed::Suspended { suspended_id } = b.publish(msg("x", 1)).await.unwrap() else {
        panic!()
    };
    b.terminate(suspended_id).await.unwrap();
    assert!(matches!(
        b.terminate(suspended_id).await,
        Err(BoxError::NoSuchSuspended(_))
    ));
    assert!(matches!(
        b.resume(suspended_id).await,
        Err(BoxError::NoSuchSuspended(_))
    ));
    assert_eq!(b.counts().await.unwrap().spool, 0);
    assert!(b.message(MessageId::new()).await.unwrap().is_none());
    assert!(matches!(
        b.release(MessageId::new(), "h").await,
        Err(BoxError::NotHeld { .. })
    ));
    assert!(matches!(
        b.ack(LeaseToken {
            entry: 424242,
            generation: 1
        })
        .await,
        Err(BoxError::LeaseLost { entry: 424242 })
    ));
    b.close().await.unwrap();
}

pub async fn resubmit_publishes_again_with_shared_parts(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("a", r#"t.kind == "x""#)).await.unwrap();
    b.subscribe(sub("b", "t.n > 0")).await.unwrap();
    let mut m = msg("x", 1);
    m.context.write("t", "empty", "");
    m.context.write("t", "big", i64::MIN);
    let (part, data) = stored_part(&*b, "body", 4000, 5).await;
    m.parts = vec![part];
    let id = m.id;
    b.publish(m.clone()).await.unwrap();
    let la = lease_one(&*b, "a").await;
    b.ack(la.token).await.unwrap();
    let lb = lease_one(&*b, "b").await;
    let sid = b.suspend(lb.token, &fail("peer down")).await.unwrap();
    let chunks = b.counts().await.unwrap().content_chunks;
    let r = b.resubmit(sid, Resubmission::default()).await.unwrap();
    assert_ne!(r.message_id, id, "a resubmission is a new message");
    assert_eq!(
        r.routed,
        Routed::Queued(vec!["a".into(), "b".into()]),
        "routed as the original was"
    );
    assert!(b.message(id).await.unwrap().is_none(), "the original is gone");
    let c = b.counts().await.unwrap();
    assert_eq!(
        (c.spool, c.suspended, c.content_chunks),
        (1, 0, chunks),
        "content shared"
    );
    let info = b.message(r.message_id).await.unwrap().expect("resubmitted");
    assert_eq!(info.context, m.context, "the original context, property by property");
    assert_eq!(read_all(&*b, r.message_id).await, vec![data]);
    for s in ["a", "b"] {
        let l = lease_one(&*b, s).await;
        assert_eq!((l.message_id, l.attempt), (r.message_id, 1));
        b.ack(l.token).await.unwrap();
    }
    let c = b.counts().await.unwrap();
    assert_eq!((c.spool, c.content_chunks), (0, 0));
    assert!(matches!(
        b.resubmit(sid, Resubmission::default()).await,
        Err(BoxError::NoSuchSuspended(x)) if x == sid
    ));
    b.close().await.unwrap();
}

pub async fn resubmit_edits_and_refusals(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("a", r#"t.kind == "x""#)).await.unwrap();
    b.subscribe(sub("z", r#"t.kind == "z""#)).await.unwrap();
    b.publish(msg("x", 1)).await.unwrap();
    let l = lease_one(&*b, "a").await;
    let sid = b.suspend(l.token, &fail("down")).await.unwrap();
    // Edited: routes by the edit.
    let mut ctx = l.context.clone();
    ctx.promote("t", "kind", "z");
    let r = b
        .resubmit(
            sid,
            Resubmission {
                context: Some(ctx.clone()),
                parts: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.routed, Routed::Queued(vec!["z".into()]));
    assert_eq!(b.message(r.message_id).await.unwrap().unwrap().context, ctx);
    // Rejected on receipt: only with a new body.
    let m = msg("x", 2);
    let rejected = b
        .publish_suspended(m, "receive:in", &Failure::new("decode", "gzip", "not gzip"))
        .await
        .unwrap();
    assert!(matches!(
        b.resubmit(rejected, Resubmission::default()).await,
        Err(BoxError::NeedsNewBody { id, .. }) if id == rejected
    ));
    assert!(
        b.suspended(rejected).await.unwrap().is_some(),
        "a refused resubmit changes nothing"
    );
    let (part, data) = stored_part(&*b, "body", 3000, 9).await;
    let r = b
        .resubmit(
            rejected,
            Resubmission {
                context: None,
                parts: Some(vec![part]),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.routed, Routed::Queued(vec!["a".into()]));
    assert_eq!(read_all(&*b, r.message_id).await, vec![data]);
    assert!(b.suspended(rejected).await.unwrap().is_none());
    b.close().await.unwrap();
}

pub async fn a_suspension_needing_an_edit_is_resubmitted_not_resumed(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("a", r#"t.kind == "x""#)).await.unwrap();
    b.subscribe(sub("faults", FAULTS)).await.unwrap();
    b.publish(msg("x", 1)).await.unwrap();
    let l = lease_one(&*b, "a").await;
    let failure = fail("`%property:t.id%` uses property t.id, which the message does not have").needing_edit();
    let sid = b.suspend(l.token, &failure).await.unwrap();
    assert!(!b.suspended(sid).await.unwrap().unwrap().resumable);
    let fault = lease_one(&*b, "faults").await;
    assert_eq!(
        fault.context.promoted("fault", "resumable"),
        Some(&sluice_model::Value::from(false))
    );
    b.ack(fault.token).await.unwrap();
    assert!(matches!(b.resume(sid).await, Err(BoxError::NotResumable { id, .. }) if id == sid));
    // Resubmitted with its context edited, its parts shared: no new body needed.
    let mut ctx = l.context.clone();
    ctx.promote("t", "id", "A1");
    let r = b
        .resubmit(
            sid,
            Resubmission {
                context: Some(ctx),
                parts: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.routed, Routed::Queued(vec!["a".into()]));
    assert_eq!(read_all(&*b, r.message_id).await, vec![b"body of x-1".to_vec()]);
    b.close().await.unwrap();
}

pub async fn suspended_query_filters(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.subscribe(sub("a", r#"t.kind == "x""#)).await.unwrap();
    b.subscribe(sub("b", r#"t.kind == "y""#)).await.unwrap();
    let mut ids = Vec::new();
    for (i, (kind, error)) in [("x", "Folder missing"), ("y", "timeout"), ("x", "disk full")]
        .into_iter()
        .enumerate()
    {
        let mut m = msg(kind, i as i64);
        m.context.promote("receive", "location", "in-folder");
        b.publish(m).await.unwrap();
        let sub = if kind == "x" { "a" } else { "b" };
        let l = lease_one(&*b, sub).await;
        ids.push(b.suspend(l.token, &fail(error)).await.unwrap());
        clock.advance(1000);
    }
    let rejected = b
        .publish_suspended(
            msg("x", 9),
            "receive:in",
            &Failure::new("decode", "gzip", "bad").at_location("gz-in"),
        )
        .await
        .unwrap();
    let q = |f: &dyn Fn(&mut SuspendedQuery)| {
        let mut q = SuspendedQuery::default();
        f(&mut q);
        q
    };
    let list = |q: SuspendedQuery| {
        let b = b.clone();
        async move {
            b.list_suspended(&q, None, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(SuspendedQuery::default()).await,
        vec![ids[0], ids[1], ids[2], rejected]
    );
    assert_eq!(list(q(&|q| q.port = Some("a".into()))).await, vec![ids[0], ids[2]]);
    assert_eq!(list(q(&|q| q.stage = Some("decode".into()))).await, vec![rejected]);
    assert_eq!(list(q(&|q| q.location = Some("in-folder".into()))).await, ids);
    assert_eq!(list(q(&|q| q.location = Some("gz-in".into()))).await, vec![rejected]);
    assert_eq!(
        list(q(&|q| q.error_contains = Some("FOLDER".into()))).await,
        vec![ids[0]]
    );
    assert_eq!(
        list(q(&|q| {
            q.since = Some(T0 + 1000);
            q.until = Some(T0 + 2000);
        }))
        .await,
        vec![ids[1]]
    );
    // The context filter sees demoted properties too (t.note is written, not promoted).
    assert_eq!(
        list(q(&|q| q.context = Some(Filter::parse(r#"t.note == "x-2""#).unwrap()))).await,
        vec![ids[2]]
    );
    assert_eq!(list(q(&|q| q.resumable = Some(false))).await, vec![rejected]);
    assert!(list(q(&|q| q.port = Some("nobody".into()))).await.is_empty());
    // Paging with a context filter goes on past non-matching rows.
    let page = b
        .list_suspended(
            &q(&|q| q.context = Some(Filter::parse(r#"t.kind == "x""#).unwrap())),
            Some(ids[0]),
            1,
        )
        .await
        .unwrap();
    assert_eq!(page.iter().map(|s| s.id).collect::<Vec<_>>(), vec![ids[2]]);
    b.close().await.unwrap();
}

pub async fn suspended_entries_are_counted_by_port_and_error(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.subscribe(sub("a", r#"t.kind == "x""#)).await.unwrap();
    let long = format!("timeout {}", "z".repeat(GROUP_ERROR_CHARS));
    for (i, error) in [
        "timeout",
        "Folder missing",
        "timeout",
        &format!("{long}1"),
        &format!("{long}2"),
    ]
    .into_iter()
    .enumerate()
    {
        b.publish(msg("x", i as i64)).await.unwrap();
        let l = lease_one(&*b, "a").await;
        b.suspend(l.token, &fail(error)).await.unwrap();
        clock.advance(1000);
    }
    b.publish_suspended(
        msg("x", 9),
        "receive:in",
        &Failure::new("decode", "gzip", "bad").at_location("gz-in"),
    )
    .await
    .unwrap();
    let groups = b.suspended_groups(10).await.unwrap();
    let at =
        |port: Option<&str>, location: Option<&str>, error: &str, count: u64, first: i64, last: i64| SuspendedGroup {
            port: port.map(str::to_string),
            location: location.map(str::to_string),
            error: error.to_string(),
            count,
            first: T0 + first,
            last: T0 + last,
        };
    let cut: String = long.chars().take(GROUP_ERROR_CHARS).collect();
    assert_eq!(groups.len(), 4, "{groups:?}");
    // The largest first; errors that differ past the cut are one group.
    assert_eq!(groups[0], at(Some("a"), None, "timeout", 2, 0, 2000));
    assert_eq!(groups[1], at(Some("a"), None, &cut, 2, 3000, 4000));
    assert!(groups.contains(&at(Some("a"), None, "Folder missing", 1, 1000, 1000)));
    assert!(groups.contains(&at(None, Some("gz-in"), "bad", 1, 5000, 5000)));
    assert_eq!(b.suspended_groups(1).await.unwrap().len(), 1);
    b.close().await.unwrap();
}
