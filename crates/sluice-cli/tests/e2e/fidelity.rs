//! Context fidelity (issue 5, seed 004): a message carrying properties of
//! every type is suspended at two send ports, the node is restarted, and the
//! message is resubmitted. It reaches the same subscribers as the original,
//! and its context equals the original property by property, type by type.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

/// Both ports route on typed comparisons, so a property that came back with
/// another type or value would send the resubmission elsewhere (or nowhere).
const CONFIG: &str = r#"data_dir = "data"

[send_ports.a]
filter = 'fid.s == "héllo wörld ✓ 日本 \"q\"" and fid.neg < -1000000 and fid.zero == 0 and fid.empty == ""'
adapter = { type = "file", path = "a", file_name = "%MessageId%.bin", create_folder = false }
retry = { count = 0, interval = "1s" }

[send_ports.b]
filter = 'fid.max == 9223372036854775807 and fid.min < -9223372036854775000 and fid.ts > "2026-11-22T10:00:00.123456788Z" and fid.ts < "2026-11-22T10:00:00.123456790Z" and fid.yes == true and fid.no == false and fid.pi > 3.14159 and fid.tiny < 0.000001 and fid.bytes exists'
adapter = { type = "file", path = "b", file_name = "%MessageId%.bin", create_folder = false }
retry = { count = 0, interval = "1s" }
"#;

/// 27 properties: every type, with the edge values that tend to get lost
/// (unicode, empty, quotes and newlines, extreme and negative integers,
/// floats that do not print round, nanosecond timestamps with and without
/// an offset, empty and binary bytes).
const PROPS: &[&str] = &[
    "fid.s=string:héllo wörld ✓ 日本 \"q\"",
    "fid.empty=string:",
    "fid.lines=string:line one\nline two\ttabbed",
    "fid.emoji=string:🦀🚀",
    "fid.rtl=string:שלום",
    "fid.spaces=string:  padded  ",
    "fid.neg=int:-1234567890",
    "fid.zero=int:0",
    "fid.max=int:9223372036854775807",
    "fid.min=int:-9223372036854775808",
    "fid.one=int:1",
    "fid.pi=float:3.141592653589793",
    "fid.tiny=float:1e-300",
    "fid.negf=float:-0.1",
    "fid.huge=float:1.7976931348623157e308",
    "fid.yes=bool:true",
    "fid.no=bool:false",
    "fid.also=bool:true",
    "fid.ts=timestamp:2026-11-22T10:00:00.123456789Z",
    "fid.ts_offset=timestamp:2026-11-22T11:00:00.000001+01:00",
    "fid.ts_old=timestamp:1970-01-01T00:00:00.5Z",
    "fid.bytes=bytes:hex:00ff10",
    "fid.nul=bytes:base64:AAAA",
    "fid.blank=bytes:hex:",
    "fid.deep.ns.key=string:namespace with dots",
    "bare=string:no namespace",
    "order.id=string:A-1",
];

fn suspended(config: &Path) -> Vec<Value> {
    let out = run(sluice().args(["suspended", "list", "--json", "--config"]).arg(config));
    match json_of(&out, "suspended list") {
        Value::Array(a) => a,
        other => panic!("suspended list: not an array: {other}"),
    }
}

fn message_context(config: &Path, id: &str) -> Value {
    let out = run(sluice()
        .args(["messages", "show", id, "--json", "--config"])
        .arg(config));
    json_of(&out, "messages show")["context"].clone()
}

#[test]
fn resubmitted_after_a_restart_the_context_is_equal_and_routes_the_same() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("sluice.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let body = root.path().join("body.bin");
    let data = content(7, 300_000);
    std::fs::write(&body, &data).unwrap();
    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);

    let mut cmd = sluice();
    cmd.args(["publish", "--json", "--config"])
        .arg(&config)
        .arg("--body")
        .arg(&body);
    for p in PROPS {
        cmd.args(["--prop", p]);
    }
    let published = json_of(&run(&mut cmd), "publish");
    let id = published["message_id"].as_str().expect("message id").to_string();
    assert_eq!(
        published["routed"],
        serde_json::json!({"queued": ["a", "b"]}),
        "the original goes to both ports"
    );
    wait_until(Duration::from_secs(30), "both deliveries suspended", || {
        suspended(&config).len() == 2
    });
    let original = message_context(&config, &id);
    let props = original.as_array().expect("context is an array");
    assert!(props.len() >= 20 + 2, "every property is in the box: {original}");
    for ty in ["string", "int", "float", "bool", "timestamp", "bytes"] {
        assert!(
            props.iter().filter(|p| p["type"] == ty).count() >= 3,
            "at least three {ty} properties"
        );
    }

    node.stop();
    let mut node = Node::start(&config, &log);
    std::fs::create_dir_all(root.path().join("a")).unwrap();
    std::fs::create_dir_all(root.path().join("b")).unwrap();
    let list = suspended(&config);
    let at_a = list
        .iter()
        .find(|s| s["subscriber"] == "a")
        .expect("the entry suspended at a");
    let sid = at_a["id"].as_i64().expect("suspended id").to_string();
    assert_eq!(at_a["message_id"], Value::from(id.clone()));
    let out = run(sluice().args(["suspended", "resubmit", &sid, "--config"]).arg(&config));
    assert!(
        out.status.success(),
        "resubmit: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Resubmitting publishes again: both subscribers get the new message.
    wait_until(Duration::from_secs(30), "delivered to a and b", || {
        names(&root.path().join("a")).len() == 1 && names(&root.path().join("b")).len() == 1
    });
    for port in ["a", "b"] {
        let dir = root.path().join(port);
        let file = dir.join(&names(&dir)[0]);
        assert!(std::fs::read(&file).unwrap() == data, "{port}: the body arrived intact");
    }
    // The original is still suspended at b (resubmit took only a's entry).
    let left = suspended(&config);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["subscriber"], "b");
    assert_eq!(message_context(&config, &id), original, "the original is unchanged");

    // The new message's context, as the box tracked it when it completed.
    wait_until(Duration::from_secs(30), "the resubmission completed", || {
        completed_context(&config, &id).is_some()
    });
    let resubmitted = completed_context(&config, &id).expect("tracked");
    let (orig, new) = (props, resubmitted.as_array().expect("context array"));
    assert_eq!(new.len(), orig.len(), "same number of properties");
    for (o, n) in orig.iter().zip(new) {
        assert_eq!(n, o, "property by property, type by type, promoted as it was");
    }
    let out = run(sluice()
        .args(["suspended", "terminate", "--all", "--config"])
        .arg(&config));
    assert!(out.status.success());
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    node.stop();
}

/// The context of the message resubmitted from `original`, from its
/// `completed` tracking event (None until it completed).
fn completed_context(config: &Path, original: &str) -> Option<Value> {
    let out = run(sluice()
        .args(["messages", "tracking", "--json", "--config"])
        .arg(config));
    let events = json_of(&out, "messages tracking");
    let events = events.as_array()?;
    let new_id = events
        .iter()
        .find(|e| e["message_id"] == original && e["event"] == "resubmitted")?["detail"]
        .as_str()?
        .to_string();
    events
        .iter()
        .find(|e| e["message_id"] == new_id.as_str() && e["event"] == "completed")
        .map(|e| e["context"].clone())
}

/// Tracking is on out of the box and purged by the node: with
/// `[tracking] keep = "2s"`, a delivered message's `completed` event (with
/// its context) is there at first and gone a few seconds later, while the
/// node runs.
#[test]
fn the_node_purges_tracking_older_than_keep() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "\n[tracking]\nkeep = \"2s\"\n");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("in"), "a.txt", b"tracked");
    let events = || {
        let out = run(sluice()
            .args(["messages", "tracking", "--json", "--config"])
            .arg(&config));
        json_of(&out, "messages tracking")
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    wait_until(Duration::from_secs(30), "the message completed and tracked", || {
        events().iter().any(|e| {
            e["event"] == "completed"
                && e["context"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|p| p["name"] == "name" && p["value"] == "a.txt"))
        })
    });
    wait_until(Duration::from_secs(30), "the events purged", || events().is_empty());
    assert!(
        node.log_text().contains("purged old tracking events"),
        "{}",
        node.log_text()
    );
    node.stop();
}
