//! The model-based property test: random sequences of operations checked
//! step by step against a simple in-memory model.

use super::*;

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
    /// [`MessageBox::recover`]: the node's leases, and its open interchange.
    Recover,
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
        1 => Just(Op::Recover),
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
    /// Staged messages the last restart discarded, for the next `recover` to report.
    discarded_at_open: u64,
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
                m.discarded_at_open = std::mem::take(&mut m.staged).len() as u64;
            }
            Op::Recover => {
                let r = b.recover().await.unwrap();
                let leased = m.entries.iter().filter(|e| e.leased).count() as u64;
                let staged = m.discarded_at_open + m.staged.len() as u64;
                assert_eq!((r.leases, r.staged), (leased, staged), "{ctx}: {r:?}");
                for e in m.entries.iter_mut().filter(|e| e.leased) {
                    e.leased = false;
                    e.visible_at = m.now;
                }
                m.interchange = None;
                m.staged.clear();
                m.discarded_at_open = 0;
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
