//! Fault messages: their context, shared parts, no fault of a fault.

use super::*;

pub async fn fault_message_carries_context_and_shares_parts(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("deliver", r#"t.kind == "x""#)).await.unwrap();
    b.subscribe(sub("faults", FAULTS)).await.unwrap();
    let mut m = msg("x", 1);
    m.context.write("t", "raw", vec![1u8, 2, 3]);
    let (part, data) = stored_part(&*b, "body", 5000, 7).await;
    m.parts = vec![part];
    let id = m.id;
    b.publish(m.clone()).await.unwrap();
    let before = b.counts().await.unwrap();
    let chunks = before.content_chunks;
    let l = lease_one(&*b, "deliver").await;
    let f = Failure::new(stage::TRANSMIT, "file", "no such folder").by_transport("primary");
    let sid = b.suspend(l.token, &f).await.unwrap();
    let c = b.counts().await.unwrap();
    assert_eq!(
        (c.spool, c.suspended, c.queued["faults"], c.queued["deliver"]),
        (2, 1, 1, 0)
    );
    assert_eq!(
        c.content_chunks, chunks,
        "the fault message shares the content, no bytes copied"
    );
    let fault = lease_one(&*b, "faults").await;
    let ctx = &fault.context;
    let get = |k: &str| ctx.get("fault", k).map(|p| (p.value.clone(), p.promoted));
    use sluice_model::Value;
    assert_eq!(get("port"), Some((Value::from("deliver"), true)));
    assert_eq!(get("stage"), Some((Value::from("transmit"), true)));
    assert_eq!(get("component"), Some((Value::from("file"), true)));
    assert_eq!(get("error"), Some((Value::from("no such folder"), true)));
    assert_eq!(get("transport"), Some((Value::from("primary"), true)));
    assert_eq!(get("attempts"), Some((Value::from(1i64), true)));
    assert_eq!(get("message_id"), Some((Value::from(id.to_string()), true)));
    assert_eq!(get("suspended_id"), Some((Value::from(sid), true)));
    assert_eq!(get("resumable"), Some((Value::from(true), true)));
    assert_eq!(get("time"), Some((Value::timestamp(time_of(T0)), true)));
    assert_eq!(get("promoted"), Some((Value::from("t.kind\nt.n"), false)));
    // Every original property, same type and value, demoted.
    for p in m.context.iter() {
        let copy = ctx.get(&p.namespace, &p.name).expect("property copied");
        assert_eq!((&copy.value, copy.promoted), (&p.value, false), "{}", p.key());
    }
    assert_eq!(read_all(&*b, fault.message_id).await, vec![data.clone()]);
    // The original goes; the fault's content stays until the fault goes.
    b.terminate(sid).await.unwrap();
    assert!(b.message(id).await.unwrap().is_none());
    assert_eq!(read_all(&*b, fault.message_id).await, vec![data]);
    b.ack(fault.token).await.unwrap();
    let c = b.counts().await.unwrap();
    assert_eq!((c.spool, c.content_chunks, c.suspended), (0, 0, 0));
    b.close().await.unwrap();
}

pub async fn faults_nobody_takes_and_faults_of_faults_are_not_stored(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("deliver", r#"t.kind == "x""#)).await.unwrap();
    b.publish(msg("x", 1)).await.unwrap();
    let l = lease_one(&*b, "deliver").await;
    b.suspend(l.token, &fail("down")).await.unwrap();
    assert_eq!(
        b.counts().await.unwrap().spool,
        1,
        "no fault subscriber: no fault message"
    );
    // A failing fault handler: its fault message fails, and makes no other.
    b.subscribe(sub("faults", FAULTS)).await.unwrap();
    b.publish(msg("x", 2)).await.unwrap();
    let l = lease_one(&*b, "deliver").await;
    b.suspend(l.token, &fail("down")).await.unwrap();
    let fault = lease_one(&*b, "faults").await;
    b.suspend(fault.token, &fail("fault folder missing")).await.unwrap();
    let c = b.counts().await.unwrap();
    assert_eq!(
        (c.spool, c.suspended, c.queued["faults"]),
        (3, 3, 0),
        "no fault of a fault"
    );
    // No subscriber at publish: suspended, stage route, with a fault.
    let Routed::Suspended { suspended_id } = b.publish(msg("q", 3)).await.unwrap() else {
        panic!("nobody takes kind q")
    };
    let s = b.suspended(suspended_id).await.unwrap().expect("suspended");
    assert_eq!((s.stage.as_str(), s.reason.as_str()), (stage::ROUTE, NO_SUBSCRIBER));
    let fault = lease_one(&*b, "faults").await;
    assert!(
        fault.context.get("fault", "port").is_none(),
        "no port for an unrouted message"
    );
    assert_eq!(
        fault.context.promoted("fault", "stage"),
        Some(&sluice_model::Value::from(stage::ROUTE))
    );
    b.close().await.unwrap();
}

/// Removing a subscription suspends its queued entries like any other
/// suspension: each says where it came in, and publishes its fault message,
/// which does not go to the removed subscriber (even one that took `all`).
pub async fn unsubscribe_suspends_with_fault_messages(h: &impl Harness) {
    let b = h.open(ManualClock::new(T0)).await;
    b.subscribe(sub("s", "all")).await.unwrap();
    b.subscribe(sub("faults", FAULTS)).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        let mut m = msg("x", n);
        m.context.promote("receive", "location", "in-folder");
        ids.push(m.id);
        b.publish(m).await.unwrap();
    }
    // One of them is being delivered (leased: attempt 1) when it goes.
    let leased = lease_one(&*b, "s").await;
    assert_eq!(b.unsubscribe("s").await.unwrap(), 3);
    let c = b.counts().await.unwrap();
    assert_eq!((c.spool, c.suspended, c.queued["faults"]), (6, 3, 3), "{c:?}");
    assert!(!c.queued.contains_key("s"), "nothing queued for the removed subscriber");
    let suspended = b.list_suspended(&SuspendedQuery::default(), None, 10).await.unwrap();
    for s in &suspended {
        assert_eq!(
            (s.stage.as_str(), s.reason.as_str(), s.location.as_deref()),
            (stage::UNSUBSCRIBE, SUBSCRIBER_REMOVED, Some("in-folder"))
        );
    }
    let mut faulted = Vec::new();
    for _ in 0..3 {
        let f = lease_one(&*b, "faults").await;
        let get = |k: &str| f.context.promoted("fault", k).cloned();
        use sluice_model::Value;
        assert_eq!(get("port"), Some(Value::from("s")));
        assert_eq!(get("stage"), Some(Value::from(stage::UNSUBSCRIBE)));
        assert_eq!(get("error"), Some(Value::from(SUBSCRIBER_REMOVED)));
        assert_eq!(get("location"), Some(Value::from("in-folder")));
        let id = get("message_id")
            .and_then(|v| v.as_str().map(str::to_string))
            .expect("fault.message_id");
        let attempts = if id == leased.message_id.to_string() { 1i64 } else { 0 };
        assert_eq!(get("attempts"), Some(Value::from(attempts)), "{id}");
        faulted.push(id);
        b.ack(f.token).await.unwrap();
    }
    faulted.sort();
    let mut ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    ids.sort();
    assert_eq!(faulted, ids, "one fault message per suspended entry");
    b.close().await.unwrap();
}
