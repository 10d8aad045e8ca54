//! The REST API (issue 15), through curl against the real node: tokens
//! made by the CLI, roles enforced, suspended messages found, read,
//! resubmitted with an edit, terminated one by one and in bulk (a dry run
//! first), every action in the audit log, errors with their codes, and no
//! secret in any answer or log line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// An answer: status, head (lowercase header lines), body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&self.body)))
    }

    /// The stable error code of an error answer.
    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_string()
    }

    fn lines(&self) -> Vec<Value> {
        text(&self.body)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }
}

/// `curl` (a peer that is not ours) with a method, a token and extra args.
fn call(base: &str, method: &str, path: &str, token: Option<&str>, extra: &[&str]) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http1.1", "-i", "-X", method, "--max-time", "30"]);
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    let out = cmd.args(extra).arg(format!("{base}{path}")).output().expect("run curl");
    assert!(out.status.success(), "curl {method} {path}: {}", text(&out.stderr));
    let raw = out.stdout;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer");
    let head = text(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    Answer {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

fn get(base: &str, path: &str, token: Option<&str>) -> Answer {
    call(base, "GET", path, token, &[])
}

fn post_json(base: &str, path: &str, token: &str, body: &str) -> Answer {
    call(
        base,
        "POST",
        path,
        Some(token),
        &["-H", "Content-Type: application/json", "--data-binary", body],
    )
}

/// The audit log, as `token` reads it, holds each (action, result).
fn assert_audited(base: &str, token: &str, expected: &[(&str, &str)]) {
    let audit = get(base, "/api/v1/audit?limit=1000", Some(token)).json();
    let actions: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    for e in expected {
        assert!(actions.contains(e), "{e:?} in {actions:?}");
    }
}

#[test]
fn operators_find_read_fix_and_resend_through_the_api_and_everything_is_audited() {
    let root = tempfile::tempdir().unwrap();
    let (config, base) = api_config(root.path(), "");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    add_user(&config, "olga", "operator", "olga-s3cret-pass");
    add_user(&config, "vic", "viewer", "vic-s3cret-pass");
    add_user(&config, "ann", "admin", "ann-s3cret-pass");
    let (olga, vic, ann) = (
        token_for(&config, "olga"),
        token_for(&config, "vic"),
        token_for(&config, "ann"),
    );
    for (i, body) in ["first body", "second body", "third body"].iter().enumerate() {
        drop_file(&root.path().join("in"), &format!("m{i}.txt"), body.as_bytes());
    }
    wait_until(Duration::from_secs(30), "three suspended", || {
        status_json(&config)["suspended"].as_u64() == Some(3)
    });

    // Health answers need nothing; everything else needs a valid token.
    assert_eq!(get(&base, "/healthz", None).status, 200);
    assert_eq!(get(&base, "/readyz", None).status, 200);
    let anonymous = get(&base, "/api/v1/suspended", None);
    assert_eq!((anonymous.status, anonymous.code().as_str()), (401, "unauthenticated"));
    assert!(
        anonymous.head.contains("www-authenticate: bearer"),
        "{}",
        anonymous.head
    );
    let forged = format!("{}x", &olga[..olga.len() - 1]);
    assert_eq!(get(&base, "/api/v1/suspended", Some(&forged)).status, 401);
    assert_eq!(get(&base, "/api/v1/status", Some("not-a-token")).status, 401);

    // A viewer sees the list, the entry and its context, never a body, and
    // changes nothing.
    let list = get(&base, "/api/v1/suspended?port=broken&limit=2", Some(&vic));
    assert_eq!(list.status, 200, "{}", text(&list.body));
    let page = list.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next"].as_i64().expect("a cursor: there is a third");
    let rest = get(
        &base,
        &format!("/api/v1/suspended?port=broken&after={next}"),
        Some(&vic),
    )
    .json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next"].is_null());
    let ids: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let shown = get(&base, &format!("/api/v1/suspended/{}", ids[0]), Some(&vic));
    assert_eq!(shown.status, 200);
    let shown = shown.json();
    let file_name = shown["context"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "name" && p["namespace"] == "file")
        .unwrap_or_else(|| panic!("{shown}"))["value"]
        .as_str()
        .unwrap()
        .to_string();
    // Files are taken in no set order: which body the first entry has.
    let first: &[u8] = match file_name.as_str() {
        "m0.txt" => b"first body",
        "m1.txt" => b"second body",
        _ => b"third body",
    };
    assert_eq!(shown["parts"][0]["size"], first.len());
    let denied = get(&base, &format!("/api/v1/suspended/{}/parts/0", ids[0]), Some(&vic));
    assert_eq!((denied.status, denied.code().as_str()), (403, "forbidden"));
    let denied = post_json(&base, &format!("/api/v1/suspended/{}/resume", ids[0]), &vic, "");
    assert_eq!((denied.status, denied.code().as_str()), (403, "forbidden"));
    assert_eq!(get(&base, "/api/v1/users", Some(&vic)).status, 403);
    assert_eq!(
        get(&base, "/api/v1/users", Some(&olga)).status,
        403,
        "an operator is no admin"
    );

    // An operator reads the body, whole and by range.
    let part = format!("/api/v1/suspended/{}/parts/0", ids[0]);
    let body = get(&base, &part, Some(&olga));
    assert_eq!((body.status, body.body.as_slice()), (200, first));
    assert!(body.head.contains("accept-ranges: bytes"));
    let ranged = call(&base, "GET", &part, Some(&olga), &["-H", "Range: bytes=-4"]);
    assert_eq!((ranged.status, ranged.body.as_slice()), (206, b"body".as_slice()));
    let n = first.len();
    assert!(
        ranged
            .head
            .contains(&format!("content-range: bytes {}-{}/{n}", n - 4, n - 1)),
        "{}",
        ranged.head
    );
    let outside = call(&base, "GET", &part, Some(&olga), &["-H", &format!("Range: bytes={n}-")]);
    assert_eq!(outside.status, 416);

    // Bad input: a clear error with its code, nothing changed.
    for (path, status, code) in [
        ("/api/v1/suspended?where=a%20==", 400, "invalid_filter"),
        ("/api/v1/suspended?limit=0", 400, "invalid_argument"),
        ("/api/v1/suspended?prot=broken", 400, "invalid_argument"),
        ("/api/v1/suspended?since=yesterday", 400, "invalid_argument"),
        ("/api/v1/suspended/999999", 404, "not_found"),
        ("/api/v1/suspended/abc", 400, "invalid_argument"),
        ("/api/v1/suspended/-1", 400, "invalid_argument"),
        ("/api/v1/messages/not-an-id", 400, "invalid_argument"),
        ("/api/v1/nothing-here", 404, "not_found"),
    ] {
        let a = get(&base, path, Some(&olga));
        assert_eq!(
            (a.status, a.code().as_str()),
            (status, code),
            "{path}: {}",
            text(&a.body)
        );
    }
    for trick in ["..%2F0", "-1", "1e0", "%2E%2E"] {
        let a = get(
            &base,
            &format!("/api/v1/suspended/{}/parts/{trick}", ids[0]),
            Some(&olga),
        );
        assert_eq!(a.status, 400, "{trick}: {}", text(&a.body));
    }
    let a = get(&base, &format!("/api/v1/suspended/{}/parts/7", ids[0]), Some(&olga));
    assert_eq!((a.status, a.code().as_str()), (404, "not_found"));
    let a = post_json(
        &base,
        &format!("/api/v1/suspended/{}/resubmit", ids[0]),
        &olga,
        r#"{"set": ["route.fixed=int:nope"]}"#,
    );
    assert_eq!(
        (a.status, a.code().as_str()),
        (400, "invalid_argument"),
        "{}",
        text(&a.body)
    );
    let a = post_json(
        &base,
        &format!("/api/v1/suspended/{}/resubmit", ids[0]),
        &olga,
        r#"{"remove": ["no.such"]}"#,
    );
    assert_eq!(
        (a.status, a.code().as_str()),
        (400, "invalid_edit"),
        "{}",
        text(&a.body)
    );
    assert_eq!(status_json(&config)["suspended"], 3);

    // Resubmitted with one property set: delivered by the port it now matches.
    let a = post_json(
        &base,
        &format!("/api/v1/suspended/{}/resubmit", ids[0]),
        &olga,
        r#"{"set": ["route.fixed=bool:true"]}"#,
    );
    assert_eq!(a.status, 200, "{}", text(&a.body));
    let resent = a.json()["message_id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(30), "the resubmitted message delivered", || {
        std::fs::read(root.path().join("out").join(&resent)).ok().as_deref() == Some(first)
    });
    let tracked = get(&base, &format!("/api/v1/tracking?message={resent}"), Some(&vic)).json();
    let events: Vec<&str> = tracked["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"completed"), "{events:?}");

    // One terminated by id; the rest in bulk, a dry run first.
    let a = post_json(&base, &format!("/api/v1/suspended/{}/terminate", ids[1]), &olga, "");
    assert_eq!(a.status, 200, "{}", text(&a.body));
    assert_eq!(
        get(&base, &format!("/api/v1/suspended/{}", ids[1]), Some(&olga)).status,
        404
    );
    let dry = post_json(
        &base,
        "/api/v1/suspended/terminate",
        &olga,
        r#"{"port": "broken", "dry_run": true}"#,
    );
    assert_eq!(dry.status, 200, "{}", text(&dry.body));
    assert!(dry.head.contains("content-type: application/x-ndjson"));
    let lines = dry.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (lines[0]["id"].as_i64(), lines[0]["would"].as_str()),
        (Some(ids[2]), Some("terminate"))
    );
    assert_eq!(lines[1]["matched"], 1);
    assert_eq!(status_json(&config)["suspended"], 1, "a dry run changes nothing");
    let nothing = post_json(&base, "/api/v1/suspended/terminate", &olga, r#"{"port": "nope"}"#);
    assert_eq!((nothing.status, nothing.code().as_str()), (404, "nothing_matches"));
    let unsaid = post_json(&base, "/api/v1/suspended/terminate", &olga, "{}");
    assert_eq!((unsaid.status, unsaid.code().as_str()), (400, "invalid_argument"));
    let done = post_json(&base, "/api/v1/suspended/terminate", &olga, r#"{"port": "broken"}"#);
    assert_eq!(done.status, 200, "{}", text(&done.body));
    let lines = done.lines();
    assert_eq!(lines[0], serde_json::json!({"event": "matched", "total": 1}));
    assert_eq!(
        (lines[1]["event"].as_str(), lines[1]["id"].as_i64()),
        (Some("entry"), Some(ids[2]))
    );
    assert_eq!(lines[1]["outcome"]["outcome"], "terminated", "{lines:?}");
    assert_eq!(lines.last().unwrap()["summary"]["done"], 1);
    assert_eq!(status_json(&config)["suspended"], 0);

    // The CLI's actions are recorded too, as `cli:<login>`.
    drop_file(&root.path().join("in"), "m3.txt", b"fourth body");
    wait_until(Duration::from_secs(30), "one suspended", || {
        status_json(&config)["suspended"].as_u64() == Some(1)
    });
    let (_, err) = expect(&config, &["suspended", "terminate", "--all"], 0);
    assert!(err.is_empty() || !err.contains("error"), "{err}");
    assert_eq!(status_json(&config)["suspended"], 0);

    // The audit log: who, from where, what, on what, how it ended.
    let audit = get(&base, "/api/v1/audit?limit=1000", Some(&vic)).json();
    let entries = audit["items"].as_array().unwrap();
    let find = |action: &str, result: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action && e["result"] == result)
            .unwrap_or_else(|| panic!("no {action} {result} in {audit}"))
    };
    let resubmitted = find("suspended.resubmit", "ok");
    assert_eq!(
        (resubmitted["actor"].as_str(), resubmitted["source"].as_str()),
        (Some("olga"), Some("127.0.0.1"))
    );
    assert_eq!(resubmitted["target"], format!("suspended {}", ids[0]));
    assert!(
        resubmitted["detail"]
            .as_str()
            .unwrap()
            .contains("set route.fixed=bool:true")
    );
    find("suspended.resubmit", "invalid_edit");
    for id in [ids[1], ids[2]] {
        let target = format!("suspended {id}");
        assert!(
            entries
                .iter()
                .any(|e| e["action"] == "suspended.terminate" && e["target"] == target && e["result"] == "ok"),
            "{target} in {audit}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "suspended.terminate" && e["target"] == format!("suspended {}", ids[2]))
    );
    find("suspended.terminate_all", "ok");
    assert!(find("users.add", "ok")["actor"].as_str().unwrap().starts_with("cli:"));
    let by_cli = entries
        .iter()
        .filter(|e| e["actor"].as_str().unwrap().starts_with("cli:") && e["source"] == "cli")
        .map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect::<Vec<_>>();
    assert!(by_cli.contains(&("suspended.terminate", "ok")), "{by_cli:?}");
    assert!(by_cli.contains(&("suspended.terminate_all", "ok")), "{by_cli:?}");
    find("tokens.create", "ok");
    assert!(
        !entries
            .iter()
            .any(|e| e["action"] == "suspended.terminate_all" && e["detail"].as_str().unwrap_or("").contains("dry")),
        "a dry run is not an action"
    );

    // An admin manages users; a removed user's token is dead at once.
    let users = get(&base, "/api/v1/users", Some(&ann));
    assert_eq!(users.status, 200);
    assert!(!text(&users.body).contains("argon2"), "no hash in any answer");
    let a = call(&base, "DELETE", "/api/v1/users/ann", Some(&ann), &[]);
    assert_eq!(
        (a.status, a.code().as_str()),
        (409, "conflict"),
        "no one removes themselves"
    );
    let a = call(&base, "DELETE", "/api/v1/users/vic", Some(&ann), &[]);
    assert_eq!(a.status, 200, "{}", text(&a.body));
    let a = get(&base, "/api/v1/status", Some(&vic));
    assert_eq!((a.status, a.code().as_str()), (401, "unauthenticated"));
    let made = post_json(
        &base,
        "/api/v1/users",
        &ann,
        r#"{"name": "neo", "role": "viewer", "password": "neo-s3cret-pass"}"#,
    );
    assert_eq!(made.status, 201, "{}", text(&made.body));
    assert!(!text(&made.body).contains("neo-s3cret-pass"));
    let t = post_json(&base, "/api/v1/users/neo/tokens", &ann, "");
    assert_eq!(t.status, 201);
    let neo = t.json()["token"].as_str().unwrap().to_string();
    let status = get(&base, "/api/v1/status", Some(&neo));
    assert_eq!(status.status, 200);
    assert!(status.json()["suspended"].is_u64());

    node.stop();
    // No secret in the log, even at debug for the API.
    let log = node.log_text();
    for secret in [&olga, &vic, &ann, &neo, &forged] {
        assert!(!log.contains(secret.as_str()), "a token in the log");
    }
    for password in [
        "olga-s3cret-pass",
        "vic-s3cret-pass",
        "ann-s3cret-pass",
        "neo-s3cret-pass",
    ] {
        assert!(!log.contains(password), "a password in the log");
    }
}

/// `GET /api/v1/messages` and `/tracking` by context, time and port (the
/// context on an indexed key), suspended entries counted by port and
/// error, the sampled history and each port's rate; malformed searches
/// refused with their codes.
#[test]
fn messages_and_tracking_are_found_by_context_time_and_port() {
    let root = tempfile::tempdir().unwrap();
    let (config, base) = api_config(root.path(), "sample_every = \"1s\"\n\n[box]\nindex = [\"file.name\"]");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    add_user(&config, "olga", "operator", "olga-s3cret-pass");
    let olga = token_for(&config, "olga");
    for i in 1..=3 {
        drop_file(&root.path().join("in"), &format!("order-{i}.xml"), b"<order/>");
    }
    wait_until(Duration::from_secs(30), "three suspended", || {
        status_json(&config)["suspended"].as_u64() == Some(3)
    });
    let search = |query: &str| {
        let a = get(&base, &format!("/api/v1/messages?{query}"), Some(&olga));
        assert_eq!(a.status, 200, "{query}: {}", text(&a.body));
        let page = a.json();
        assert!(page["next"].is_null(), "{query}: the whole box was searched");
        page["items"].as_array().unwrap().len()
    };
    let enc = |t: &str| t.replace(' ', "%20").replace('"', "%22").replace('=', "%3D");
    assert_eq!(search(&format!("where={}", enc(r#"file.name == "order-2.xml""#))), 1);
    assert_eq!(search(&format!("where={}", enc(r#"file.name == "order-9.xml""#))), 0);
    assert_eq!(
        search(&format!("where={}", enc(r#"file.name starts-with "order-""#))),
        3
    );
    assert_eq!(search("port=broken"), 3);
    assert_eq!(search("port=good"), 0);
    assert_eq!(search("since=1h"), 3);
    assert_eq!(search("until=1h"), 0);
    for (query, code) in [
        ("where=a%20==", "invalid_filter"),
        ("since=yesterday", "invalid_argument"),
        ("after=not-an-id", "invalid_argument"),
        ("limit=0", "invalid_argument"),
        ("colour=red", "invalid_argument"),
    ] {
        let a = get(&base, &format!("/api/v1/messages?{query}"), Some(&olga));
        assert_eq!((a.status, a.code().as_str()), (400, code), "{query}: {}", text(&a.body));
    }

    // Counted by port and error (with the API's samples, every second).
    wait_until(Duration::from_secs(30), "the three in one group", || {
        let groups = get(&base, "/api/v1/suspended/groups", Some(&olga)).json();
        let groups = groups["items"].as_array().unwrap().clone();
        groups.len() == 1 && (groups[0]["port"].as_str(), groups[0]["count"].as_u64()) == (Some("broken"), Some(3))
    });

    // One resubmitted and delivered: its whole path, found by its context.
    let first = get(&base, "/api/v1/suspended?limit=1", Some(&olga)).json()["items"][0]["id"]
        .as_i64()
        .unwrap();
    let done = post_json(
        &base,
        &format!("/api/v1/suspended/{first}/resubmit"),
        &olga,
        r#"{"set": ["route.fixed=bool:true"]}"#,
    );
    assert_eq!(done.status, 200, "{}", text(&done.body));
    wait_until(Duration::from_secs(30), "delivered", || {
        names(&root.path().join("out")).len() == 1
    });
    let tracked = |query: &str| {
        let a = get(&base, &format!("/api/v1/tracking?{query}"), Some(&olga));
        assert_eq!(a.status, 200, "{query}: {}", text(&a.body));
        a.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // The file is in place before its delivery is acknowledged.
    wait_until(Duration::from_secs(30), "the delivery tracked", || {
        tracked("port=good") == ["completed"]
    });
    // Only `completed` events carry a context: a `where` matches no other.
    assert_eq!(tracked("where=route.fixed%20==%20true"), ["completed"]);
    assert_eq!(tracked("event=terminated"), Vec::<String>::new());
    assert_eq!(
        tracked("since=1h&event=received").len(),
        4,
        "three files and the resubmission"
    );
    let a = get(&base, "/api/v1/tracking?where=(", Some(&olga));
    assert_eq!((a.status, a.code().as_str()), (400, "invalid_filter"));

    // The history, sampled every second, and each unit's rate from it: a
    // sample after the delivery was acknowledged.
    wait_until(Duration::from_secs(30), "a sample of the box as it is now", || {
        let history = get(&base, "/api/v1/history", Some(&olga)).json();
        assert_eq!(history["every_seconds"], 1);
        let last = history["items"].as_array().unwrap().last().unwrap().clone();
        last["delivered_per_second"].as_f64().is_some()
            && (last["suspended"].as_u64(), last["queued"].as_u64()) == (Some(2), Some(0))
    });
    let ports = get(&base, "/api/v1/ports", Some(&olga)).json();
    let good = ports["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "good")
        .unwrap()
        .clone();
    assert!(good["per_second"].as_f64().is_some_and(|r| r >= 0.0), "{good}");
    assert_eq!(good["messages"], 1, "{good}");
    node.stop();
}

/// The API's listener keeps every client to the same bounds as an HTTP
/// receive location: silent connections at the cap do not hold it shut,
/// and an address that keeps failing to authenticate is answered 429.
#[test]
fn silent_clients_and_token_guessers_do_not_hold_the_api_shut() {
    let root = tempfile::tempdir().unwrap();
    let (config, base) = api_config(root.path(), "max_connections = 4\nmax_connections_per_client = 2");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    let address: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let connect_from = |last: u8| {
        rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind((std::net::Ipv4Addr::new(127, 0, 0, last), 0).into())
                .unwrap();
            socket.connect(address).await.unwrap()
        })
    };
    // Four connections that never send a byte, from two other addresses:
    // the listener's cap.
    let silent: Vec<_> = [2u8, 2, 3, 3].into_iter().map(connect_from).collect();
    // A third from one of them is over its address's cap: closed at once.
    let mut over = connect_from(2);
    let read = rt.block_on(async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), over.read(&mut buf)).await
    });
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    std::thread::sleep(Duration::from_millis(1500));
    // A newcomer is still served: the longest idle is closed to make room.
    assert_eq!(get(&base, "/healthz", None).status, 200);
    let log = node.log_text();
    assert!(log.contains("the longest idle one is closed to make room"), "{log}");
    assert!(log.contains("the cap of 2 per client address is reached"), "{log}");
    drop(silent);
    // Guessing tokens: refused, then refused before any lookup.
    let mut statuses = Vec::new();
    for i in 0..25 {
        statuses.push(get(&base, "/api/v1/status", Some(&format!("sluice_guess{i}"))).status);
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    let limited = get(&base, "/api/v1/status", Some("sluice_guess"));
    assert_eq!((limited.status, limited.code().as_str()), (429, "rate_limited"));
    assert!(limited.head.contains("retry-after:"));
    // A valid token from the same address is still served.
    add_user(&config, "olga", "operator", "olga-s3cret-pass");
    let olga = token_for(&config, "olga");
    assert_eq!(get(&base, "/api/v1/status", Some(&olga)).status, 200);
    node.stop();
}

/// Schemathesis (from PyPI; `scripts/test.sh` installs it and names it in
/// `SLUICE_SCHEMATHESIS`), a schema-based fuzzer, against the node's own
/// OpenAPI document: no answer is a 5xx, and every answer (status, content
/// type, headers, body) is as the document says. The node is still
/// healthy after it.
#[test]
fn the_api_answers_as_its_document_says_under_a_fuzzer() {
    let fuzzer = std::env::var("SLUICE_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let found = Command::new(&fuzzer).arg("--version").output();
    assert!(
        found.as_ref().is_ok_and(|o| o.status.success()),
        "schemathesis is missing ({fuzzer}): run ./scripts/test.sh, which installs it, or set SLUICE_SCHEMATHESIS"
    );
    let root = tempfile::tempdir().unwrap();
    // The fuzzer sends thousands of requests without a valid token.
    let (config, base) = api_config(root.path(), "auth_failures_per_minute = 1000000");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    for i in 0..5 {
        drop_file(
            &root.path().join("in"),
            &format!("m{i}.txt"),
            format!("body {i}").as_bytes(),
        );
    }
    wait_until(Duration::from_secs(30), "five suspended", || {
        status_json(&config)["suspended"].as_u64() == Some(5)
    });
    add_user(&config, "fuzz-admin-7f3e", "admin", "fuzz-admin-pass");
    let token = token_for(&config, "fuzz-admin-7f3e");
    let out = Command::new(&fuzzer)
        .args(["run", &format!("{base}/api/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // Every check but "schema-valid data is accepted": a valid-looking
        // time ("9999-99-99") or filter the schema cannot rule out is
        // rightly refused with 400.
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", "25", "--seed", "1", "--request-timeout", "30"])
        .current_dir(root.path())
        .output()
        .expect("run schemathesis");
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("Tested: 34"), "{}", text(&out.stdout));
    assert_eq!(get(&base, "/healthz", None).status, 200);
    assert_eq!(
        get(&base, "/api/v1/status", Some(&token)).status,
        200,
        "the fuzzer's admin is still there"
    );
    node.stop();
    assert!(!node.log_text().contains("panicked"), "{}", node.log_text());
}

/// Ports and locations: listed with their state and queue; an operator
/// stops a send port (its messages wait in the box) and disables a
/// location (its files stay where they are); the choice holds across a
/// reload and a restart, and undoing it delivers what waited.
#[test]
fn operators_stop_and_start_ports_and_locations_and_it_holds_across_restarts() {
    let root = tempfile::tempdir().unwrap();
    let (config, base) = api_config(root.path(), "");
    let text_of = std::fs::read_to_string(&config).unwrap();
    let with_off = text_of.replace(
        "[api]",
        "[send_ports.off]\nfilter = 'never.matches exists'\nadapter = { type = \"file\", path = \"out\" }\nenabled = false\n\n[api]",
    );
    std::fs::write(&config, with_off).unwrap();
    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);
    add_user(&config, "olga", "operator", "olga-s3cret-pass");
    add_user(&config, "vic", "viewer", "vic-s3cret-pass");
    let (olga, vic) = (token_for(&config, "olga"), token_for(&config, "vic"));
    let units = |token: &str| -> Vec<Value> {
        let a = get(&base, "/api/v1/ports", Some(token));
        assert_eq!(a.status, 200, "{}", text(&a.body));
        a.json()["items"].as_array().unwrap().clone()
    };
    let state_of = |token: &str, name: &str| -> Value {
        units(token)
            .into_iter()
            .find(|u| u["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let listed = units(&vic);
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert_eq!(state_of(&vic, "good")["state"], "running");
    assert_eq!(state_of(&vic, "off")["state"], "disabled");
    let files = state_of(&vic, "files");
    assert_eq!(
        (
            files["kind"].as_str(),
            files["receive_port"].as_str(),
            files["adapter"].as_str()
        ),
        (Some("receive_location"), Some("in"), Some("file"))
    );

    // Who may, and what does not exist.
    let a = post_json(&base, "/api/v1/send-ports/good/stop", &vic, "");
    assert_eq!((a.status, a.code().as_str()), (403, "forbidden"));
    let a = post_json(&base, "/api/v1/send-ports/nope/stop", &olga, "");
    assert_eq!((a.status, a.code().as_str()), (404, "not_found"));
    let a = post_json(&base, "/api/v1/send-ports/off/start", &olga, "");
    assert_eq!((a.status, a.code().as_str()), (409, "conflict"), "the file disables it");

    // Stopped: a message for it waits in the box, across a reload and a restart.
    let a = post_json(&base, "/api/v1/send-ports/good/stop", &olga, "");
    assert_eq!(a.status, 200, "{}", text(&a.body));
    assert_eq!(a.json()["state"], "stopped");
    let out = sl(&config, &["publish", "--prop", "route.fixed=bool:true", "--json"]);
    let id = json_of(&out, "publish")["message_id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !root.path().join("out").join(&id).exists(),
        "a stopped port delivers nothing"
    );
    assert_eq!(state_of(&vic, "good")["queued"], 1);
    expect(&config, &["reload"], 0);
    node.stop();
    let mut node = Node::start(&config, &log);
    assert_eq!(state_of(&vic, "good")["state"], "stopped", "kept across a restart");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!root.path().join("out").join(&id).exists());

    // Started again: what waited is delivered.
    let a = post_json(&base, "/api/v1/send-ports/good/start", &olga, "");
    assert_eq!((a.status, a.json()["state"].as_str()), (200, Some("running")));
    wait_until(Duration::from_secs(30), "the waiting message delivered", || {
        root.path().join("out").join(&id).exists()
    });

    // A disabled location leaves its files where they are.
    let a = post_json(&base, "/api/v1/receive-locations/files/disable", &olga, "");
    assert_eq!((a.status, a.json()["state"].as_str()), (200, Some("stopped")));
    drop_file(&root.path().join("in"), "later.txt", b"later");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        root.path().join("in").join("later.txt").exists(),
        "a disabled location takes nothing"
    );
    let a = post_json(&base, "/api/v1/receive-locations/files/enable", &olga, "");
    assert_eq!(a.status, 200, "{}", text(&a.body));
    wait_until(Duration::from_secs(30), "the file taken", || {
        !root.path().join("in").join("later.txt").exists()
    });

    assert_audited(
        &base,
        &vic,
        &[
            ("send_port.stop", "ok"),
            ("send_port.start", "ok"),
            ("send_port.start", "conflict"),
            ("send_port.stop", "not_found"),
            ("receive_location.disable", "ok"),
            ("receive_location.enable", "ok"),
        ],
    );
    node.stop();
}

/// A client that lies about its body or trickles it: a resubmission whose
/// upload is cut short changes nothing (the entry stays, the failure is
/// recorded as the client's), and a body that does not come is cut off at
/// `body_timeout` without holding the API.
#[test]
fn cut_short_and_trickled_bodies_change_nothing() {
    use std::io::{Read, Write};
    let root = tempfile::tempdir().unwrap();
    let (config, base) = api_config(root.path(), "body_timeout = \"1s\"");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    add_user(&config, "olga", "operator", "olga-s3cret-pass");
    let olga = token_for(&config, "olga");
    drop_file(&root.path().join("in"), "m.txt", b"the body");
    wait_until(Duration::from_secs(30), "one suspended", || {
        status_json(&config)["suspended"].as_u64() == Some(1)
    });
    let id = get(&base, "/api/v1/suspended", Some(&olga)).json()["items"][0]["id"]
        .as_i64()
        .unwrap();
    let address = base.trim_start_matches("http://").to_string();
    let head = |length: usize, content_type: &str| {
        format!(
            "POST /api/v1/suspended/{id}/resubmit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {olga}\r\n\
             Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    // A new body that says 1000 bytes and stops at 10.
    let mut c = std::net::TcpStream::connect(&address).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(head(1000, "application/octet-stream").as_bytes()).unwrap();
    c.write_all(b"0123456789").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");
    // A JSON edit that never comes: cut off at body_timeout.
    let started = std::time::Instant::now();
    let mut c = std::net::TcpStream::connect(&address).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(head(50, "application/json").as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cut off at body_timeout, not later"
    );
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Nothing changed; the first failure is recorded as the client's.
    wait_until(Duration::from_secs(10), "the failed resubmission recorded", || {
        let audit = get(&base, "/api/v1/audit", Some(&olga)).json();
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "suspended.resubmit" && e["result"] == "invalid_argument")
    });
    let shown = get(&base, &format!("/api/v1/suspended/{id}"), Some(&olga));
    assert_eq!(shown.status, 200, "the entry is still there");
    assert_eq!(status_json(&config)["spool"], 1, "no new message");
    assert_eq!(get(&base, "/healthz", None).status, 200);
    node.stop();
}

/// Browser sessions: the login form, a cookie that is HttpOnly and
/// SameSite=Strict, changes refused without the session's CSRF token, a
/// login posted from another site refused, logins limited per user, and
/// logging out ends the session.
#[test]
fn browsers_log_in_need_the_csrf_token_for_changes_and_log_out() {
    let root = tempfile::tempdir().unwrap();
    let (config, base) = api_config(root.path(), "");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    add_user(&config, "olga", "operator", "olga-s3cret-pass");
    add_user(&config, "ann", "admin", "ann-s3cret-pass");
    drop_file(&root.path().join("in"), "m.txt", b"the body");
    wait_until(Duration::from_secs(30), "one suspended", || {
        status_json(&config)["suspended"].as_u64() == Some(1)
    });
    let login = |user: &str, password: &str, extra: &[&str]| {
        let form = format!("username={user}&password={password}");
        let mut args = vec![
            "--data-binary",
            form.as_str(),
            "-H",
            "Content-Type: application/x-www-form-urlencoded",
        ];
        args.extend_from_slice(extra);
        call(&base, "POST", "/login", None, &args)
    };
    let form = get(&base, "/login", None);
    assert_eq!(form.status, 200);
    assert!(text(&form.body).contains("name=\"password\""));
    assert!(form.head.contains("content-security-policy:") && form.head.contains("x-frame-options: deny"));
    let wrong = login("olga", "not-her-password", &[]);
    assert_eq!(wrong.status, 401);
    assert!(text(&wrong.body).contains("Wrong user name or password") && !wrong.head.contains("set-cookie"));
    let elsewhere = login("olga", "olga-s3cret-pass", &["-H", "Origin: http://evil.example"]);
    assert_eq!(elsewhere.status, 403, "a form posted from another site");
    assert!(!elsewhere.head.contains("set-cookie"));
    let ok = login("olga", "olga-s3cret-pass", &["-H", &format!("Origin: {base}")]);
    assert_eq!(ok.status, 303, "{}", text(&ok.body));
    assert!(ok.head.contains("location: /\r\n"), "{}", ok.head);
    let set = ok
        .head
        .lines()
        .find(|l| l.starts_with("set-cookie: sluice_session="))
        .expect("a session cookie")
        .to_string();
    for attribute in ["httponly", "samesite=strict", "path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    // The head was lowercased: a new login, its cookie's value as sent.
    let session = {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-D",
                "-",
                "--data-binary",
                "username=olga&password=olga-s3cret-pass",
            ])
            .arg(format!("{base}/login"))
            .output()
            .unwrap();
        let head = text(&out.stdout);
        let line = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: sluice_session="))
            .unwrap()
            .to_string();
        line.split_once('=').unwrap().1.split(';').next().unwrap().to_string()
    };
    let cookie = format!("Cookie: sluice_session={session}");
    let home = call(&base, "GET", "/", None, &["-H", &cookie]);
    assert_eq!(home.status, 200);
    assert!(text(&home.body).contains("olga"));
    let me = call(&base, "GET", "/api/v1/session", None, &["-H", &cookie]).json();
    assert_eq!(
        (me["user"].as_str(), me["role"].as_str()),
        (Some("olga"), Some("operator"))
    );
    let csrf = me["csrf"].as_str().expect("a csrf token").to_string();
    let list = call(&base, "GET", "/api/v1/suspended", None, &["-H", &cookie]);
    assert_eq!(list.status, 200);
    let id = list.json()["items"][0]["id"].as_i64().unwrap();

    // A change with the cookie alone (what a forged cross-site request
    // carries) is refused; with the wrong token too; with the right one it
    // goes through.
    let path = format!("/api/v1/suspended/{id}/terminate");
    let forged = call(&base, "POST", &path, None, &["-H", &cookie]);
    assert_eq!((forged.status, forged.code().as_str()), (403, "forbidden"));
    let wrong = call(&base, "POST", &path, None, &["-H", &cookie, "-H", "X-CSRF-Token: nope"]);
    assert_eq!(wrong.status, 403);
    assert_eq!(status_json(&config)["suspended"], 1, "nothing changed");
    let done = call(
        &base,
        "POST",
        &path,
        None,
        &["-H", &cookie, "-H", &format!("X-CSRF-Token: {csrf}")],
    );
    assert_eq!(done.status, 200, "{}", text(&done.body));

    // Logging out needs the token too, then ends the session.
    let refused = call(
        &base,
        "POST",
        "/logout",
        None,
        &["-H", &cookie, "--data-binary", "csrf=nope"],
    );
    assert_eq!(refused.status, 403);
    assert_eq!(
        call(&base, "GET", "/api/v1/status", None, &["-H", &cookie]).status,
        200,
        "still logged in"
    );
    let out = call(
        &base,
        "POST",
        "/logout",
        None,
        &["-H", &cookie, "--data-binary", &format!("csrf={csrf}")],
    );
    assert_eq!(out.status, 303);
    assert!(
        out.head.contains("location: /login") && out.head.contains("max-age=0"),
        "{}",
        out.head
    );
    let after = call(&base, "GET", "/api/v1/status", None, &["-H", &cookie]);
    assert_eq!((after.status, after.code().as_str()), (401, "unauthenticated"));
    assert_eq!(
        call(&base, "GET", "/", None, &["-H", &cookie]).status,
        303,
        "back to the login form"
    );

    // Guessing one user's password: limited per user, whatever the address.
    for _ in 0..10 {
        assert_eq!(login("ann", "guess-guess", &[]).status, 401);
    }
    let limited = login("ann", "ann-s3cret-pass", &[]);
    assert_eq!(limited.status, 429, "even the right password waits");
    assert!(limited.head.contains("retry-after:"));

    let tokens_log = node.log_text();
    assert!(
        !tokens_log.contains(&session) && !tokens_log.contains(&csrf),
        "no session secret in the log"
    );
    assert!(!tokens_log.contains("olga-s3cret-pass") && !tokens_log.contains("guess-guess"));
    add_user(&config, "vic", "viewer", "vic-s3cret-pass");
    assert_audited(
        &base,
        &token_for(&config, "vic"),
        &[
            ("login", "ok"),
            ("login", "unauthenticated"),
            ("logout", "ok"),
            ("suspended.terminate", "ok"),
        ],
    );
    node.stop();
}

/// Debian's chromedriver on a free port, killed when dropped.
pub(crate) struct Driver {
    child: std::process::Child,
    port: u16,
}

impl Driver {
    pub(crate) fn start() -> Driver {
        let binary = "/usr/bin/chromedriver";
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing: run ./scripts/test.sh, which installs Debian's chromium and chromium-driver"
        );
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        wait_until(Duration::from_secs(20), "chromedriver listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Driver { child, port }
    }

    pub(crate) async fn browser(&self) -> fantoccini::Client {
        // One crypto provider for the process (the WebDriver client's TLS,
        // unused on plain http, still asks for one).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
            }),
        );
        fantoccini::ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the portal's screenshots go (shown in the README).
pub(crate) fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/portal");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Clicks a filter form's submit button and waits for the answer to that
/// GET: the list element is on the page before the click too, so waiting for
/// it alone can read the unfiltered list.
async fn submit_filter(c: &fantoccini::Client, button: &str, param: &str) {
    use fantoccini::Locator;
    c.find(Locator::Css(button)).await.unwrap().click().await.unwrap();
    let wanted = format!("{param}=");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let url = c.current_url().await.unwrap();
        if url.query().is_some_and(|q| q.contains(&wanted)) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no answer to the filter at {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn log_in(c: &fantoccini::Client, base: &str, user: &str, password: &str) {
    use fantoccini::Locator;
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Css("#username"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css("#user")).await.unwrap();
    assert_eq!(c.find(Locator::Css("#user")).await.unwrap().text().await.unwrap(), user);
}

/// The portal in a real browser (Debian's headless Chromium through
/// chromedriver): an operator logs in, finds a suspended message by its
/// error, reads its context and body, resubmits it with one property edited
/// and sees it delivered, bulk-terminates the rest after a dry run; a
/// request without the CSRF token is refused; logging out ends the session;
/// a viewer sees neither bodies nor buttons, and the API refuses them
/// anyway. Screenshots of the main pages land in docs/portal/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_in_a_real_browser() {
    use fantoccini::Locator;
    let root = tempfile::tempdir().unwrap();
    // Samples every second: the dashboard draws the last hour from them.
    let (config, base) = api_config(root.path(), "sample_every = \"1s\"");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    add_user(&config, "olga", "operator", "olga-s3cret-pass");
    add_user(&config, "vic", "viewer", "vic-s3cret-pass");
    for (name, body) in [
        ("order-1.xml", "<order id=\"1\"/>"),
        ("order-2.xml", "<order id=\"2\"/>"),
        ("order-3.xml", "<order id=\"3\"/>"),
    ] {
        drop_file(&root.path().join("in"), name, body.as_bytes());
    }
    wait_until(Duration::from_secs(30), "three suspended", || {
        status_json(&config)["suspended"].as_u64() == Some(3)
    });
    let shots = screenshot_dir();
    let driver = Driver::start();
    let c = driver.browser().await;
    log_in(&c, &base, "olga", "olga-s3cret-pass").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/");
    // The dashboard shows the last sample's counts (taken every second).
    let mut shown = String::new();
    for _ in 0..50 {
        shown = c.find(Locator::Css("#suspended")).await.unwrap().text().await.unwrap();
        if shown == "3" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.refresh().await.unwrap();
    }
    assert_eq!(shown, "3");
    assert!(c.find(Locator::Css("#as-of")).await.is_ok());

    // Messages searched by their context: the one named order-2.xml.
    c.goto(&format!("{base}/messages")).await.unwrap();
    c.find(Locator::Css("input[name=where]"))
        .await
        .unwrap()
        .send_keys(r#"file.name == "order-2.xml""#)
        .await
        .unwrap();
    submit_filter(&c, "#search", "where").await;
    c.wait().for_element(Locator::Css("#messages")).await.unwrap();
    let found = c.find_all(Locator::Css("#messages tbody tr")).await.unwrap();
    assert_eq!(found.len(), 1, "one message of the three matches");
    std::fs::write(shots.join("messages.png"), c.screenshot().await.unwrap()).unwrap();
    found[0].find(Locator::Css("a")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Css("#context")).await.unwrap();
    let context = c.find(Locator::Css("#context")).await.unwrap().text().await.unwrap();
    assert!(
        context.contains("order-2.xml") && !context.contains("order-1.xml"),
        "{context}"
    );

    // Found by its error.
    c.goto(&format!("{base}/suspended")).await.unwrap();
    c.find(Locator::Css("input[name=error]"))
        .await
        .unwrap()
        .send_keys("does not exist")
        .await
        .unwrap();
    submit_filter(&c, "#filter", "error").await;
    c.wait().for_element(Locator::Css("#suspended-list")).await.unwrap();
    let rows = c.find_all(Locator::Css("#suspended-list tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 3);
    // Grouped by port and error, with their count.
    let group = c
        .find(Locator::Css("#groups tbody tr"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(group.contains("send port broken") && group.contains(" 3 "), "{group}");
    std::fs::write(shots.join("suspended.png"), c.screenshot().await.unwrap()).unwrap();
    c.find(Locator::Css("#suspended-list tbody tr td a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css("#context")).await.unwrap();
    let context = c.find(Locator::Css("#context")).await.unwrap().text().await.unwrap();
    assert!(context.contains("file") && context.contains(".xml"), "{context}");
    let body = c
        .find(Locator::Css("#body-preview"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.starts_with("<order id="), "{body}");
    std::fs::write(shots.join("suspended-detail.png"), c.screenshot().await.unwrap()).unwrap();

    // Resubmitted with one property set: delivered by the port it matches now.
    c.find(Locator::Css("#resubmit textarea[name=set]"))
        .await
        .unwrap()
        .send_keys("route.fixed=bool:true")
        .await
        .unwrap();
    c.find(Locator::Css("#resubmit-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css("#resubmitted")).await.unwrap();
    let out = root.path().join("out");
    // Delivered: one file in place (`names` leaves out the port's
    // temporary one, renamed once whole), with the body.
    wait_until(Duration::from_secs(30), "the resubmitted message delivered", || {
        names(&out).len() == 1
    });
    let delivered = out.join(&names(&out)[0]);
    assert_eq!(std::fs::read_to_string(delivered).unwrap(), body);

    // Another resubmitted with a new body, chosen as a file in the form.
    let fixed = root.path().join("fixed-order.xml");
    std::fs::write(&fixed, "<order id=\"2\" fixed=\"yes\"/>").unwrap();
    c.goto(&format!("{base}/suspended")).await.unwrap();
    c.find(Locator::Css("#suspended-list tbody tr td a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css("#new-body")).await.unwrap();
    c.find(Locator::Css("#resubmit textarea[name=set]"))
        .await
        .unwrap()
        .send_keys("route.fixed=bool:true")
        .await
        .unwrap();
    c.find(Locator::Css("#new-body"))
        .await
        .unwrap()
        .send_keys(fixed.to_str().unwrap())
        .await
        .unwrap();
    c.find(Locator::Css("#resubmit-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css("#resubmitted")).await.unwrap();
    wait_until(Duration::from_secs(30), "the one with a new body delivered", || {
        names(&out).len() == 2
    });
    let bodies: Vec<String> = names(&out)
        .iter()
        .map(|n| std::fs::read_to_string(out.join(n)).unwrap())
        .collect();
    assert!(
        bodies.contains(&"<order id=\"2\" fixed=\"yes\"/>".to_string()),
        "{bodies:?}"
    );

    // The rest: a dry run first, then terminated.
    c.goto(&format!("{base}/suspended")).await.unwrap();
    c.find(Locator::Css("input[data-select-all]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css("button[data-op=terminate][data-dry=true]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css("#bulk-summary")).await.unwrap();
    let preview = c.find(Locator::Css("#result")).await.unwrap().text().await.unwrap();
    assert!(
        preview.contains("Dry run: 1 would be terminated") && preview.contains("would terminate"),
        "{preview}"
    );
    std::fs::write(shots.join("bulk-preview.png"), c.screenshot().await.unwrap()).unwrap();
    assert_eq!(status_json(&config)["suspended"], 1, "a dry run changes nothing");
    c.find(Locator::Css("button[data-op=terminate]:not([data-dry])"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Its progress, entry by entry, then its summary. (Waited for by what
    // only a finished real run adds: the dry run's summary is still on the
    // page until this one's answer replaces it.)
    c.wait().for_element(Locator::Css("#bulk-refresh")).await.unwrap();
    let progress = c.find(Locator::Css("#bulk-count")).await.unwrap().text().await.unwrap();
    assert_eq!(progress.trim(), "1 of 1");
    let summary = c
        .find(Locator::Css("#bulk-summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(summary, "1 terminated, 0 failed, 0 skipped.");
    wait_until(Duration::from_secs(30), "terminated", || {
        status_json(&config)["suspended"].as_u64() == Some(0)
    });
    // The outcome stays until the operator asks for the list again.
    std::fs::write(shots.join("bulk-done.png"), c.screenshot().await.unwrap()).unwrap();
    c.find(Locator::Css("#bulk-refresh"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The list again, without the one just terminated.
    c.wait().for_element(Locator::Css("#empty")).await.unwrap();
    assert!(
        c.find(Locator::Css("#bulk-summary")).await.is_err(),
        "the page was loaded again"
    );

    // A change without the session's CSRF token (what a forged request
    // carries: the cookie alone) is refused.
    let status = c
        .execute(
            "return fetch('/api/v1/suspended/resume', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{\"all\": true}'}).then(r => r.status)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, serde_json::json!(403));

    for (page, shot) in [("/ports", "ports.png"), ("/audit", "audit.png")] {
        c.goto(&format!("{base}{page}")).await.unwrap();
        c.wait().for_element(Locator::Css("main h1")).await.unwrap();
        std::fs::write(shots.join(shot), c.screenshot().await.unwrap()).unwrap();
    }
    assert!(c.find(Locator::Css("#audit")).await.is_ok());
    // Each port's messages per second, from the samples.
    c.goto(&format!("{base}/ports")).await.unwrap();
    let good = c
        .find(Locator::Css("tr[data-unit=good]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(good.contains("send port") && good.contains(" 2 "), "{good}");
    // The dashboard's last hour: a chart for each figure, once sampled twice.
    let olga = token_for(&config, "olga");
    wait_until(Duration::from_secs(30), "two samples", || {
        get(&base, "/api/v1/history", Some(&olga)).json()["items"]
            .as_array()
            .is_some_and(|s| s.len() >= 2)
    });
    c.goto(&format!("{base}/")).await.unwrap();
    for chart in ["published", "delivered", "queued", "suspended", "throttled"] {
        c.find(Locator::Css(&format!("#{chart}-chart svg polyline")))
            .await
            .unwrap_or_else(|_| panic!("the {chart} chart"));
    }
    std::fs::write(shots.join("dashboard.png"), c.screenshot().await.unwrap()).unwrap();

    // Logging out ends the session.
    c.find(Locator::Css("#logout")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Css("#password")).await.unwrap();
    c.goto(&format!("{base}/suspended")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/login", "the session is over");

    // A viewer: no bodies, no buttons; the API refuses a change anyway.
    drop_file(&root.path().join("in"), "order-4.xml", b"<order id=\"4\"/>");
    wait_until(Duration::from_secs(30), "one suspended", || {
        status_json(&config)["suspended"].as_u64() == Some(1)
    });
    log_in(&c, &base, "vic", "vic-s3cret-pass").await;
    c.goto(&format!("{base}/suspended")).await.unwrap();
    assert!(
        c.find(Locator::Css("button[data-action]")).await.is_err(),
        "no action buttons for a viewer"
    );
    c.find(Locator::Css("#suspended-list tbody tr td a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css("#context")).await.unwrap();
    assert!(
        c.find(Locator::Css("#body-preview")).await.is_err(),
        "no body for a viewer"
    );
    assert!(c.find(Locator::Css("#no-bodies")).await.is_ok());
    assert!(c.find(Locator::Css("#terminate")).await.is_err() && c.find(Locator::Css("#resubmit")).await.is_err());
    let status = c
        .execute(
            "const csrf = document.querySelector('meta[name=csrf]').content; \
             return fetch('/api/v1/suspended/terminate', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}, body: '{\"all\": true}'}).then(r => r.status)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        status,
        serde_json::json!(403),
        "a viewer may not act, even with the token"
    );
    assert!(
        c.find(Locator::Css("a[href='/users']")).await.is_err(),
        "no users page for a viewer"
    );
    c.close().await.unwrap();
    assert_eq!(status_json(&config)["suspended"], 1);
    node.stop();
}

/// Over HTTPS (HTTP/2, as browsers speak it: `:authority`, no `Host`), a
/// login form from our own origin logs in with a `Secure` cookie; one from
/// elsewhere is refused. And password guesses sent all at once are limited
/// as if sent one after another.
#[test]
fn logins_over_https_and_guesses_sent_at_once() {
    let root = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    std::fs::write(root.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(root.path().join("key.pem"), key_pair.serialize_pem()).unwrap();
    let (config, base) = api_config(root.path(), "tls = { cert = \"cert.pem\", key = \"key.pem\" }");
    let base = base.replace("http://", "https://");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    add_user(&config, "olga", "operator", "olga-s3cret-pass");
    let form = [
        "--http2",
        "-k",
        "--data-binary",
        "username=olga&password=olga-s3cret-pass",
    ];
    let ours = call(
        &base,
        "POST",
        "/login",
        None,
        &[&form[..], &["-H", &format!("Origin: {base}")]].concat(),
    );
    assert_eq!(ours.status, 303, "{}\n{}", ours.head, text(&ours.body));
    assert!(ours.head.starts_with("http/2"), "{}", ours.head);
    let cookie = ours
        .head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap()
        .to_string();
    assert!(cookie.contains("; secure"), "{cookie}");
    let theirs = call(
        &base,
        "POST",
        "/login",
        None,
        &[&form[..], &["-H", "Origin: https://evil.example"]].concat(),
    );
    assert_eq!(theirs.status, 403);
    let plain = call(
        &base,
        "POST",
        "/login",
        None,
        &[
            &form[..],
            &["-H", &format!("Origin: {}", base.replace("https", "http"))],
        ]
        .concat(),
    );
    assert_eq!(plain.status, 403, "another scheme is another origin");

    // 30 guesses at once for one user: at most 10 get an answer on the
    // password, the rest wait (429).
    add_user(&config, "ann", "admin", "ann-s3cret-pass");
    let guesses: Vec<_> = (0..30)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let body = format!("username=ann&password=guess-{i}");
                call(
                    &base,
                    "POST",
                    "/login",
                    None,
                    &["--http2", "-k", "--data-binary", &body],
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = guesses.into_iter().map(|t| t.join().unwrap()).collect();
    let answered = statuses.iter().filter(|s| **s == 401).count();
    assert!(answered <= 10, "{answered} guesses were checked: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    node.stop();
}
