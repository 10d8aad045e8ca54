//! The conformance suite every message-box backend runs.
//!
//! A backend's tests call [`conformance_tests!`](crate::conformance_tests) with
//! an expression that makes a fresh [`Harness`]; each case opens the box
//! through it (and reopens it, to test restarts).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use sluice_content::{WriteOptions, read_part, write_part};
use tokio::io::AsyncReadExt;

use crate::*;

/// Opens the backend under test. Opening again after [`MessageBox::close`]
/// must see everything that was committed: it is a restart.
#[async_trait]
pub trait Harness: Send + Sync {
    async fn open(&self, clock: Arc<dyn Clock>) -> Arc<dyn MessageBox>;
}

/// Generates one `#[tokio::test]` per conformance case, plus the model-based
/// property test, for the harness made by `$make`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            publish_routes_and_round_trips,
            no_subscriber_suspends_and_resume_routes,
            lease_ack_nack_and_expiry,
            stale_tokens_are_refused,
            release_leases_makes_entries_ready,
            renew_keeps_a_lease,
            references_from_holders,
            publish_holding_keeps_the_message,
            publish_suspended_is_not_routed,
            last_release_deletes_stored_content,
            unsubscribe_suspends_queued_entries,
            terminate_and_missing_ids,
            state_survives_restart,
            concurrent_publishes_all_land,
            interchange_is_invisible_until_commit,
            interchange_routes_suspends_and_holds,
            aborted_interchange_leaves_nothing,
            uncommitted_interchange_is_gone_after_restart,
            fault_message_carries_context_and_shares_parts,
            faults_nobody_takes_and_faults_of_faults_are_not_stored,
            unsubscribe_suspends_with_fault_messages,
            attempts_are_recorded_and_can_skip_forward,
            resubmit_publishes_again_with_shared_parts,
            resubmit_edits_and_refusals,
            suspended_query_filters,
            tracking_records_and_purges,
        );
        #[test]
        fn model_based_sequences() {
            $crate::conformance::model_based(|| $make);
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $make;
                $crate::conformance::$case(&harness).await;
            }
        )*
    };
}

const T0: Millis = 1_700_000_000_000;

/// A send-side failure with this error.
fn fail(error: &str) -> Failure {
    Failure::new(stage::TRANSMIT, "test", error)
}

fn sub(name: &str, filter: &str) -> Subscription {
    Subscription {
        subscriber: name.to_string(),
        filter: Filter::parse(filter).expect("test filter parses"),
    }
}

fn msg(kind: &str, n: i64) -> NewMessage {
    let mut context = Context::new();
    context.promote("t", "kind", kind);
    context.promote("t", "n", n);
    context.write("t", "note", format!("{kind}-{n}"));
    NewMessage {
        id: MessageId::new(),
        context,
        parts: vec![Part::inline("body", format!("body of {kind}-{n}"))],
    }
}

async fn read_all(b: &dyn MessageBox, id: MessageId) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for part in b.parts(id).await.expect("parts") {
        let mut buf = Vec::new();
        read_part(b.content(), &part)
            .read_to_end(&mut buf)
            .await
            .expect("read part");
        out.push(buf);
    }
    out
}

async fn stored_part(b: &dyn MessageBox, name: &str, size: usize, seed: u8) -> (Part, Vec<u8>) {
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
        .collect();
    let mut reader: &[u8] = &data;
    let opts = WriteOptions {
        chunk_size: 1000,
        inline_max: 64,
        max_size: None,
    };
    let part = write_part(&*b.content(), name, &mut reader, opts)
        .await
        .expect("write part");
    assert!(matches!(part.body, PartBody::Stored { .. }));
    (part, data)
}

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

fn time_of(ms: Millis) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).expect("valid time")
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

use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Publish {
        kind: u8,
        n: i64,
        stored: bool,
    },
    Lease {
        sub: usize,
        max: usize,
        lease_for: Millis,
    },
    Ack {
        token: usize,
    },
    Nack {
        token: usize,
        delay: Millis,
    },
    Suspend {
        token: usize,
    },
    Advance {
        ms: Millis,
    },
    Hold {
        msg: usize,
        holder: usize,
    },
    Release {
        msg: usize,
        holder: usize,
    },
    Resume {
        which: usize,
    },
    Terminate {
        which: usize,
    },
    Restart,
    /// Stage a message into the open interchange (`bad`: as a bad record).
    Stage {
        kind: u8,
        n: i64,
        bad: bool,
    },
    Commit,
    Abort,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 0i64..10, proptest::bool::weighted(0.2)).prop_map(|(kind, n, stored)| Op::Publish { kind, n, stored }),
        4 => (0usize..3, 1usize..4, prop_oneof![Just(50), Just(200)]).prop_map(|(sub, max, lease_for)| Op::Lease { sub, max, lease_for }),
        3 => any::<prop::sample::Index>().prop_map(|i| Op::Ack { token: i.index(1 << 16) }),
        2 => (any::<prop::sample::Index>(), 0i64..150).prop_map(|(i, delay)| Op::Nack { token: i.index(1 << 16), delay }),
        1 => any::<prop::sample::Index>().prop_map(|i| Op::Suspend { token: i.index(1 << 16) }),
        2 => prop_oneof![Just(10), Just(60), Just(250)].prop_map(|ms| Op::Advance { ms }),
        1 => (any::<prop::sample::Index>(), 0usize..2).prop_map(|(i, holder)| Op::Hold { msg: i.index(1 << 16), holder }),
        1 => (any::<prop::sample::Index>(), 0usize..2).prop_map(|(i, holder)| Op::Release { msg: i.index(1 << 16), holder }),
        1 => any::<prop::sample::Index>().prop_map(|i| Op::Resume { which: i.index(1 << 16) }),
        1 => any::<prop::sample::Index>().prop_map(|i| Op::Terminate { which: i.index(1 << 16) }),
        1 => Just(Op::Restart),
        2 => (0u8..3, 0i64..10, proptest::bool::weighted(0.2)).prop_map(|(kind, n, bad)| Op::Stage { kind, n, bad }),
        1 => Just(Op::Commit),
        1 => Just(Op::Abort),
    ]
}

const KINDS: [&str; 3] = ["x", "y", "z"];
const SUBS: [(&str, &str); 3] = [
    ("a", r#"t.kind == "x""#),
    ("b", "t.n > 5"),
    ("c", r#"t.kind == "x" or t.kind == "y""#),
];
const HOLDERS: [&str; 2] = ["h1", "h2"];

#[derive(Debug, Clone)]
struct MEntry {
    seq: u64,
    sub: String,
    msg: MessageId,
    visible_at: Millis,
    generation: u32,
    leased: bool,
}

#[derive(Debug, Clone)]
struct MSuspended {
    msg: MessageId,
    sub: Option<String>,
    resumable: bool,
}

/// A staged message of the open interchange.
#[derive(Debug, Clone)]
struct MStaged {
    msg: MessageId,
    context: Context,
    bad: bool,
    /// References it holds until the commit (its routes, or 1).
    refs: usize,
}

/// The simple model: what a correct box must do.
#[derive(Default)]
struct Model {
    now: Millis,
    next_seq: u64,
    /// Queue entries by the backend's entry id (learned when leased) or our seq.
    entries: Vec<MEntry>,
    suspended: Vec<(i64, MSuspended)>,
    holds: HashMap<MessageId, Vec<String>>,
    messages: Vec<(MessageId, Context, u64)>,
    /// The open interchange and what is staged in it.
    interchange: Option<MessageId>,
    staged: Vec<MStaged>,
}

impl Model {
    fn refs(&self, id: MessageId) -> usize {
        self.entries.iter().filter(|e| e.msg == id).count()
            + self.suspended.iter().filter(|(_, s)| s.msg == id).count()
            + self.holds.get(&id).map_or(0, |h| h.len())
            + self
                .staged
                .iter()
                .filter(|s| s.msg == id)
                .map(|s| s.refs)
                .sum::<usize>()
    }

    fn matching(ctx: &Context) -> Vec<String> {
        let mut subs: Vec<String> = SUBS
            .iter()
            .filter(|(_, f)| Filter::parse(f).unwrap().matches(ctx))
            .map(|(s, _)| s.to_string())
            .collect();
        subs.sort();
        subs
    }

    fn live(&self, id: MessageId) -> bool {
        self.refs(id) > 0
    }

    fn route(&mut self, id: MessageId, ctx: &Context) -> Vec<String> {
        let mut subs: Vec<&str> = SUBS
            .iter()
            .filter(|(_, f)| Filter::parse(f).unwrap().matches(ctx))
            .map(|(s, _)| *s)
            .collect();
        subs.sort();
        for s in &subs {
            self.next_seq += 1;
            self.entries.push(MEntry {
                seq: self.next_seq,
                sub: s.to_string(),
                msg: id,
                visible_at: self.now,
                generation: 0,
                leased: false,
            });
        }
        subs.into_iter().map(String::from).collect()
    }
}

/// Run random op sequences against a fresh box from `make` and the model.
pub fn model_based<H: Harness, F: Fn() -> H>(make: F) {
    let config = ProptestConfig {
        cases: 48,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..60))| {
        let h = make();
        rt.block_on(run_model(&h, ops));
    });
}

async fn run_model(h: &impl Harness, ops: Vec<Op>) {
    let clock = ManualClock::new(T0);
    let mut b = h.open(clock.clone()).await;
    for (s, f) in SUBS {
        b.subscribe(sub(s, f)).await.unwrap();
    }
    let mut m = Model {
        now: T0,
        ..Model::default()
    };
    // Every token ever handed out, with the model entry seq it belongs to.
    let mut tokens: Vec<(LeaseToken, u64)> = Vec::new();
    // Backend entry id -> model seq, learned at lease time.
    let mut seq_of: HashMap<EntryId, u64> = HashMap::new();
    for (step, op) in ops.into_iter().enumerate() {
        let ctx = format!("step {step}: {op:?}");
        match op {
            Op::Publish { kind, n, stored } => {
                let mut nm = msg(KINDS[kind as usize], n);
                let mut size = nm.parts[0].size;
                if stored {
                    let (p, _) = stored_part(&*b, "big", 2500, n as u8 + 1).await;
                    size += p.size;
                    nm.parts.push(p);
                }
                let routed = b.publish(nm.clone()).await.unwrap();
                let expect = m.route(nm.id, &nm.context);
                if expect.is_empty() {
                    let Routed::Suspended { suspended_id } = routed else {
                        panic!("{ctx}: expected suspension")
                    };
                    m.suspended.push((
                        suspended_id,
                        MSuspended {
                            msg: nm.id,
                            sub: None,
                            resumable: true,
                        },
                    ));
                } else {
                    assert_eq!(routed, Routed::Queued(expect), "{ctx}");
                }
                m.messages.push((nm.id, nm.context, size));
            }
            Op::Lease { sub: s, max, lease_for } => {
                let name = SUBS[s].0;
                let got = b.lease(name, max, lease_for).await.unwrap();
                let mut ready: Vec<&mut MEntry> = m
                    .entries
                    .iter_mut()
                    .filter(|e| e.sub == name && e.visible_at <= m.now)
                    .collect();
                ready.sort_by_key(|e| (e.visible_at, e.seq));
                assert_eq!(got.len(), ready.len().min(max), "{ctx}: number leased");
                for (l, e) in got.iter().zip(ready) {
                    assert_eq!(l.message_id, e.msg, "{ctx}: lease order");
                    if let Some(prev) = seq_of.insert(l.token.entry, e.seq) {
                        assert_eq!(prev, e.seq, "{ctx}: entry ids are stable");
                    }
                    e.generation += 1;
                    e.leased = true;
                    e.visible_at = m.now + lease_for;
                    assert_eq!(l.attempt, e.generation, "{ctx}: attempt");
                    assert_eq!(l.token.generation, e.generation, "{ctx}");
                    tokens.push((l.token, e.seq));
                }
            }
            Op::Ack { token } | Op::Nack { token, .. } | Op::Suspend { token } if !tokens.is_empty() => {
                let (t, seq) = tokens[token % tokens.len()];
                let pos = m
                    .entries
                    .iter()
                    .position(|e| e.seq == seq && e.generation == t.generation && e.leased);
                let result = match op {
                    Op::Ack { .. } => b.ack(t).await.map(|_| None),
                    Op::Nack { delay, .. } => b.nack(t, m.now + delay, &fail("nope")).await.map(|_| None),
                    _ => b.suspend(t, &fail("given up")).await.map(Some),
                };
                match (pos, result) {
                    (Some(i), Ok(suspended)) => match op {
                        Op::Ack { .. } => {
                            m.entries.remove(i);
                        }
                        Op::Nack { delay, .. } => {
                            m.entries[i].visible_at = m.now + delay;
                            m.entries[i].leased = false;
                        }
                        _ => {
                            let e = m.entries.remove(i);
                            let id = suspended.expect("suspend returns an id");
                            m.suspended.push((
                                id,
                                MSuspended {
                                    msg: e.msg,
                                    sub: Some(e.sub),
                                    resumable: true,
                                },
                            ));
                        }
                    },
                    (None, Err(BoxError::LeaseLost { entry })) => assert_eq!(entry, t.entry, "{ctx}"),
                    (pos, r) => panic!("{ctx}: model says valid={}, box said {r:?}", pos.is_some()),
                }
            }
            Op::Ack { .. } | Op::Nack { .. } | Op::Suspend { .. } => {}
            Op::Advance { ms } => {
                clock.advance(ms);
                m.now += ms;
            }
            Op::Hold { msg: i, holder } | Op::Release { msg: i, holder } if !m.messages.is_empty() => {
                let id = m.messages[i % m.messages.len()].0;
                let holder = HOLDERS[holder];
                // A staged message is not in the box yet: it cannot be held.
                let live = m.live(id) && !m.staged.iter().any(|st| st.msg == id);
                let held = m.holds.get(&id).is_some_and(|h| h.iter().any(|x| x == holder));
                if matches!(op, Op::Hold { .. }) {
                    match (live, b.hold(id, holder).await) {
                        (true, Ok(())) => {
                            if !held {
                                m.holds.entry(id).or_default().push(holder.to_string());
                            }
                        }
                        (false, Err(BoxError::NoSuchMessage(_))) => {}
                        (l, r) => panic!("{ctx}: live={l}, box said {r:?}"),
                    }
                } else {
                    match (held, b.release(id, holder).await) {
                        (true, Ok(())) => m.holds.entry(id).or_default().retain(|x| x != holder),
                        (false, Err(BoxError::NotHeld { .. })) => {}
                        (h, r) => panic!("{ctx}: held={h}, box said {r:?}"),
                    }
                }
            }
            Op::Hold { .. } | Op::Release { .. } => {}
            Op::Resume { which } | Op::Terminate { which } if !m.suspended.is_empty() => {
                let i = which % m.suspended.len();
                let (sid, s) = m.suspended[i].clone();
                if matches!(op, Op::Terminate { .. }) {
                    b.terminate(sid).await.unwrap();
                    m.suspended.remove(i);
                } else {
                    let r = b.resume(sid).await;
                    match s.sub {
                        _ if !s.resumable => {
                            assert!(matches!(r, Err(BoxError::NotResumable { .. })), "{ctx}: {r:?}");
                        }
                        Some(sub) => {
                            assert_eq!(r.unwrap(), Routed::Queued(vec![sub.clone()]), "{ctx}");
                            m.suspended.remove(i);
                            m.next_seq += 1;
                            let seq = m.next_seq;
                            m.entries.push(MEntry {
                                seq,
                                sub,
                                msg: s.msg,
                                visible_at: m.now,
                                generation: 0,
                                leased: false,
                            });
                        }
                        None => {
                            // Subscriptions never change in this test: still none.
                            assert!(matches!(r, Err(BoxError::StillNoSubscriber { .. })), "{ctx}: {r:?}");
                        }
                    }
                }
            }
            Op::Resume { .. } | Op::Terminate { .. } => {}
            Op::Restart => {
                b.close().await.unwrap();
                b = h.open(clock.clone()).await;
                // An uncommitted interchange does not survive a restart.
                m.interchange = None;
                m.staged.clear();
            }
            Op::Stage { kind, n, bad } => {
                let nm = msg(KINDS[kind as usize], n);
                let ic = *m.interchange.get_or_insert_with(MessageId::new);
                let refs = if bad {
                    1
                } else {
                    Model::matching(&nm.context).len().max(1)
                };
                b.stage(
                    ic,
                    vec![StagedMessage {
                        message: nm.clone(),
                        holder: None,
                        suspend: bad.then(|| Failure::new("disassemble", "xml", "a bad record")),
                    }],
                )
                .await
                .unwrap();
                m.messages.push((nm.id, nm.context.clone(), nm.parts[0].size));
                m.staged.push(MStaged {
                    msg: nm.id,
                    context: nm.context,
                    bad,
                    refs,
                });
            }
            Op::Commit | Op::Abort => {
                let Some(ic) = m.interchange.take() else {
                    continue;
                };
                let staged = std::mem::take(&mut m.staged);
                if matches!(op, Op::Abort) {
                    assert_eq!(b.abort_interchange(ic).await.unwrap(), staged.len() as u64, "{ctx}");
                    continue;
                }
                let routed = b.commit_interchange(ic).await.unwrap();
                assert_eq!(routed.messages, staged.len() as u64, "{ctx}");
                let listed = b
                    .list_suspended(&SuspendedQuery::default(), None, 100_000)
                    .await
                    .unwrap();
                let mut suspended = 0;
                for st in staged {
                    let subs = if st.bad {
                        Vec::new()
                    } else {
                        m.route(st.msg, &st.context)
                    };
                    if subs.is_empty() {
                        suspended += 1;
                        let entry = listed
                            .iter()
                            .find(|l| l.message_id == st.msg)
                            .unwrap_or_else(|| panic!("{ctx}: {} is suspended", st.msg));
                        assert_eq!(entry.resumable, !st.bad, "{ctx}");
                        m.suspended.push((
                            entry.id,
                            MSuspended {
                                msg: st.msg,
                                sub: None,
                                resumable: !st.bad,
                            },
                        ));
                    }
                }
                assert_eq!(routed.suspended, suspended, "{ctx}");
            }
        }
        if m.interchange.is_some() {
            // Nothing staged is visible to a subscriber.
            let counts = b.counts().await.unwrap();
            let queued: u64 = counts.queued.values().sum();
            assert_eq!(queued, m.entries.len() as u64, "{ctx}: staged messages are not queued");
        }
        // Invariants after every step.
        let counts = b.counts().await.unwrap();
        let live: Vec<&(MessageId, Context, u64)> = m.messages.iter().filter(|(id, _, _)| m.live(*id)).collect();
        assert_eq!(counts.spool, live.len() as u64, "{ctx}: spool");
        assert_eq!(
            counts.content_bytes,
            live.iter().map(|x| x.2).sum::<u64>(),
            "{ctx}: content bytes"
        );
        let mut queued: BTreeMap<String, u64> = BTreeMap::new();
        for e in &m.entries {
            *queued.entry(e.sub.clone()).or_default() += 1;
        }
        let got: BTreeMap<String, u64> = counts.queued.into_iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(got, queued, "{ctx}: queued");
        assert_eq!(counts.suspended, m.suspended.len() as u64, "{ctx}: suspended");
        for (id, c, _) in &m.messages {
            let info = b.message(*id).await.unwrap();
            // A staged message is stored (it counts in the spool) but not
            // readable until its interchange commits.
            let staged = m.staged.iter().any(|st| st.msg == *id);
            assert_eq!(
                info.is_some(),
                m.live(*id) && !staged,
                "{ctx}: message {id} exists exactly while referenced"
            );
            if let Some(info) = info {
                assert_eq!(&info.context, c, "{ctx}");
                assert_eq!(info.refs as usize, m.refs(*id), "{ctx}: refs of {id}");
            }
        }
    }
    b.close().await.unwrap();
}

fn staged(m: NewMessage) -> StagedMessage {
    StagedMessage {
        message: m,
        holder: None,
        suspend: None,
    }
}

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

/// The fault subscription the fault cases use.
const FAULTS: &str = "fault.message_id exists";

/// Lease one entry of `subscriber` (panics if there is none).
async fn lease_one(b: &dyn MessageBox, subscriber: &str) -> Leased {
    let mut got = b.lease(subscriber, 1, 10_000).await.unwrap();
    assert_eq!(got.len(), 1, "one entry ready for `{subscriber}`");
    got.remove(0)
}

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
    let f = Failure::new(stage::TRANSMIT, "FILE", "no such folder").by_transport("primary");
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
    assert_eq!(get("component"), Some((Value::from("FILE"), true)));
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
