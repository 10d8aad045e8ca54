//! Users, API tokens and the audit log.

use super::*;

fn user(name: &str, role: Role) -> UserRecord {
    UserRecord {
        name: name.to_string(),
        role,
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt-of-{name}$hash"),
        created_at: T0,
    }
}

fn token(id: &str, user: &str, fill: u8) -> NewToken {
    NewToken {
        id: id.to_string(),
        user: user.to_string(),
        hash: [fill; 32],
        created_at: T0 + 1,
    }
}

pub async fn users_and_tokens_are_kept_and_removed_together(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.add_user(user("olga", Role::Operator)).await.unwrap();
    b.add_user(user("ann", Role::Admin)).await.unwrap();
    b.add_user(user("vic", Role::Viewer)).await.unwrap();
    // A name is taken once; the first stays as it was.
    let again = b.add_user(user("olga", Role::Admin)).await;
    assert!(
        matches!(again, Err(BoxError::UserExists(ref n)) if n == "olga"),
        "{again:?}"
    );
    assert_eq!(b.user("olga").await.unwrap(), Some(user("olga", Role::Operator)));
    assert_eq!(b.user("nobody").await.unwrap(), None);
    // Paged in name order.
    let names = |v: Vec<UserRecord>| v.into_iter().map(|u| u.name).collect::<Vec<_>>();
    assert_eq!(names(b.users(None, 2).await.unwrap()), ["ann", "olga"]);
    assert_eq!(names(b.users(Some("olga"), 2).await.unwrap()), ["vic"]);

    // A token belongs to an existing user; its id is unique; it is found by
    // its hash only, with its user's role.
    let orphan = b.add_token(token("t-0", "nobody", 9)).await;
    assert!(
        matches!(orphan, Err(BoxError::NoSuchUser(ref n)) if n == "nobody"),
        "{orphan:?}"
    );
    b.add_token(token("t-1", "olga", 1)).await.unwrap();
    b.add_token(token("t-2", "olga", 2)).await.unwrap();
    b.add_token(token("t-3", "vic", 3)).await.unwrap();
    let dup = b.add_token(token("t-1", "vic", 4)).await;
    assert!(
        matches!(dup, Err(BoxError::TokenExists(ref id)) if id == "t-1"),
        "{dup:?}"
    );
    let found = b.token([2; 32]).await.unwrap().expect("token t-2");
    assert_eq!(
        found,
        TokenRecord {
            id: "t-2".into(),
            user: "olga".into(),
            role: Role::Operator,
            created_at: T0 + 1
        }
    );
    assert_eq!(b.token([4; 32]).await.unwrap(), None, "a refused token is not stored");
    assert_eq!(b.token([9; 32]).await.unwrap(), None);
    let ids = |v: Vec<TokenRecord>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(b.tokens(None).await.unwrap()), ["t-1", "t-2", "t-3"]);
    assert_eq!(ids(b.tokens(Some("olga")).await.unwrap()), ["t-1", "t-2"]);

    // Revoked: gone at once. Kept across a restart.
    assert!(b.revoke_token("t-1").await.unwrap());
    assert!(!b.revoke_token("t-1").await.unwrap());
    assert_eq!(b.token([1; 32]).await.unwrap(), None);
    b.close().await.unwrap();
    let b = h.open(clock.clone()).await;
    assert_eq!(ids(b.tokens(None).await.unwrap()), ["t-2", "t-3"]);
    assert_eq!(b.user("ann").await.unwrap(), Some(user("ann", Role::Admin)));

    // The last admin stays (someone must be able to manage users); with
    // another admin, they can go.
    let last = b.remove_user("ann").await;
    assert!(
        matches!(last, Err(BoxError::LastAdmin(ref n)) if n == "ann"),
        "{last:?}"
    );
    assert!(b.user("ann").await.unwrap().is_some());
    b.add_user(user("zed", Role::Admin)).await.unwrap();
    assert_eq!(b.remove_user("ann").await.unwrap(), 0);
    let last = b.remove_user("zed").await;
    assert!(matches!(last, Err(BoxError::LastAdmin(_))), "{last:?}");

    // A removed user's tokens go with them; the name can be taken again
    // and the old tokens do not come back to it.
    assert_eq!(b.remove_user("olga").await.unwrap(), 1);
    assert_eq!(b.token([2; 32]).await.unwrap(), None);
    assert_eq!(b.user("olga").await.unwrap(), None);
    let gone = b.remove_user("olga").await;
    assert!(matches!(gone, Err(BoxError::NoSuchUser(_))), "{gone:?}");
    b.add_user(user("olga", Role::Viewer)).await.unwrap();
    assert_eq!(b.token([2; 32]).await.unwrap(), None);
    assert_eq!(ids(b.tokens(Some("olga")).await.unwrap()), Vec::<String>::new());
    b.close().await.unwrap();
}

pub async fn audit_entries_are_kept_newest_first_and_purged_by_age(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    let entry = |n: i64, result: &str| NewAuditEntry {
        at: T0 + n * 1000,
        actor: "olga".into(),
        source: "127.0.0.1".into(),
        action: "suspended.resume".into(),
        target: format!("suspended {n}"),
        result: result.into(),
        detail: (result != "ok").then(|| format!("detail {n}")),
    };
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            b.record_audit(entry(n, if n == 3 { "not_found" } else { "ok" }))
                .await
                .unwrap(),
        );
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    let page = b.audit(None, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[4], ids[3]]);
    assert_eq!(page[1].entry, entry(3, "not_found"));
    let next = b.audit(Some(ids[3]), 10).await.unwrap();
    assert_eq!(next.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[2], ids[1], ids[0]]);
    b.close().await.unwrap();
    let b = h.open(clock.clone()).await;
    // Older than T0 + 2 s: entries 0 and 1, at most one at a time.
    assert_eq!(b.purge_audit(T0 + 2000, 1).await.unwrap(), 1);
    assert_eq!(b.purge_audit(T0 + 2000, 10).await.unwrap(), 1);
    assert_eq!(b.purge_audit(T0 + 2000, 10).await.unwrap(), 0);
    let left = b.audit(None, 10).await.unwrap();
    assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[4], ids[3], ids[2]]);
    // Ids never come back after a purge.
    let newest = b.record_audit(entry(9, "ok")).await.unwrap();
    assert!(newest > ids[4]);
    b.close().await.unwrap();
}

pub async fn stopped_units_are_kept_across_restarts(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    assert!(b.stopped_units().await.unwrap().is_empty());
    assert!(b.set_unit_stopped(UnitKind::SendPort, "out", true).await.unwrap());
    assert!(
        !b.set_unit_stopped(UnitKind::SendPort, "out", true).await.unwrap(),
        "already"
    );
    assert!(
        b.set_unit_stopped(UnitKind::ReceiveLocation, "out", true)
            .await
            .unwrap()
    );
    assert!(b.set_unit_stopped(UnitKind::SendPort, "a", true).await.unwrap());
    b.close().await.unwrap();
    let b = h.open(clock.clone()).await;
    assert_eq!(
        b.stopped_units().await.unwrap(),
        vec![
            (UnitKind::ReceiveLocation, "out".to_string()),
            (UnitKind::SendPort, "a".to_string()),
            (UnitKind::SendPort, "out".to_string()),
        ]
    );
    assert!(b.set_unit_stopped(UnitKind::SendPort, "out", false).await.unwrap());
    assert!(!b.set_unit_stopped(UnitKind::SendPort, "out", false).await.unwrap());
    assert_eq!(b.stopped_units().await.unwrap().len(), 2);
    b.close().await.unwrap();
}

pub async fn sessions_are_found_by_hash_and_end_with_their_user(h: &impl Harness) {
    let clock = ManualClock::new(T0);
    let b = h.open(clock.clone()).await;
    b.add_user(user("olga", Role::Operator)).await.unwrap();
    b.add_user(user("ann", Role::Admin)).await.unwrap();
    let session = |fill: u8, user: &str| NewSession {
        hash: [fill; 32],
        user: user.to_string(),
        csrf: format!("csrf-{fill}"),
        created_at: T0,
        expires_at: T0 + 3_600_000,
    };
    let orphan = b.add_session(session(9, "nobody")).await;
    assert!(matches!(orphan, Err(BoxError::NoSuchUser(_))), "{orphan:?}");
    b.add_session(session(1, "olga")).await.unwrap();
    b.add_session(session(2, "olga")).await.unwrap();
    b.add_session(session(3, "ann")).await.unwrap();
    let found = b.session([1; 32]).await.unwrap().expect("session 1");
    assert_eq!(
        (found.user.as_str(), found.role, found.csrf.as_str()),
        ("olga", Role::Operator, "csrf-1")
    );
    assert_eq!((found.expires_at, found.seen_at), (T0 + 3_600_000, T0));
    assert_eq!(b.session([9; 32]).await.unwrap(), None);
    // Touched: later only, never earlier.
    b.touch_session([1; 32], T0 + 60_000).await.unwrap();
    b.touch_session([1; 32], T0 + 30_000).await.unwrap();
    assert_eq!(b.session([1; 32]).await.unwrap().unwrap().seen_at, T0 + 60_000);
    // Ended by logout; by purge (expired or idle); with their user.
    assert!(b.remove_session([3; 32]).await.unwrap());
    assert!(!b.remove_session([3; 32]).await.unwrap());
    assert_eq!(b.session([3; 32]).await.unwrap(), None);
    b.add_session(session(4, "ann")).await.unwrap();
    assert_eq!(
        b.purge_sessions(T0 + 1000, T0 + 30_000, 10).await.unwrap(),
        2,
        "2 and 4 idle since T0"
    );
    assert!(b.session([1; 32]).await.unwrap().is_some());
    b.close().await.unwrap();
    let b = h.open(clock.clone()).await;
    assert!(b.session([1; 32]).await.unwrap().is_some(), "kept across a restart");
    assert_eq!(b.purge_sessions(T0 + 3_600_000, 0, 10).await.unwrap(), 1, "expired");
    b.add_session(session(5, "olga")).await.unwrap();
    b.add_user(user("zed", Role::Admin)).await.unwrap();
    b.remove_user("olga").await.unwrap();
    assert_eq!(b.session([5; 32]).await.unwrap(), None, "gone with its user");
    b.close().await.unwrap();
}
