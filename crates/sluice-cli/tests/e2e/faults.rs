//! Failures and fault messages through the real binary: the shipped faults
//! example (suspend after the retries, a fault message per suspension written
//! by the fault handler, resume delivers), what a fault message carries and
//! where it goes, parts shared rather than copied, a send port's backup
//! transport, a file a receive pipeline rejects, and a fault handler that
//! fails too (no loop).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

/// The fault handler of the tests that look at fault messages in the box: it
/// takes every fault message but is stopped, so they stay queued for it.
const STOPPED_FAULT_HANDLER: &str = r#"
[send_ports.fault-handler]
filter = 'fault.message_id exists'
adapter = { type = "file", path = "faults", file_name = "%MessageId%-%SourceFileName%", create_folder = true }
enabled = false
"#;

/// A copy of the shipped example in `root`, unchanged but for `edit`.
fn example(root: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/faults/sluice.toml");
    let config = root.join("sluice.toml");
    std::fs::write(&config, edit(std::fs::read_to_string(example).unwrap())).unwrap();
    std::fs::create_dir_all(root.join("in")).unwrap();
    config
}

/// Run a `sluice` command that must succeed and print JSON.
fn json(cmd: &mut Command) -> Value {
    let out = run(cmd);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn suspended(config: &Path) -> Vec<Value> {
    let v = json(sluice().args(["suspended", "list", "--json", "--config"]).arg(config));
    v.as_array().expect("a list").clone()
}

fn show(config: &Path, id: &str) -> Value {
    json(
        sluice()
            .args(["messages", "show", id, "--json", "--config"])
            .arg(config),
    )
}

/// Every message in the box, shown.
fn messages(config: &Path) -> Vec<Value> {
    let list = json(
        sluice()
            .args(["messages", "list", "--json", "--limit", "1000", "--config"])
            .arg(config),
    );
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| show(config, m["id"].as_str().unwrap()))
        .collect()
}

/// The property `key` (`namespace.name`) of a shown message, if it has it.
fn prop<'a>(m: &'a Value, key: &str) -> Option<&'a Value> {
    let (ns, name) = key.rsplit_once('.').unwrap_or(("", key));
    m["context"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["namespace"] == ns && p["name"] == name)
}

/// The value of property `key`, which must be there with type `ty` and
/// promoted as `promoted` says.
fn value<'a>(m: &'a Value, key: &str, ty: &str, promoted: bool) -> &'a Value {
    let p = prop(m, key).unwrap_or_else(|| panic!("no {key} in {m:#}"));
    assert_eq!(
        (p["type"].as_str(), p["promoted"].as_bool()),
        (Some(ty), Some(promoted)),
        "{key}: {p}"
    );
    &p["value"]
}

/// The fault messages in the box (they carry fault.message_id).
fn fault_messages(config: &Path) -> Vec<Value> {
    messages(config)
        .into_iter()
        .filter(|m| prop(m, "fault.message_id").is_some())
        .collect()
}

/// The files a send port has delivered to `dir`: its names without the
/// `.sluice-tmp.*` files being written (`names` lists every entry, so that
/// a receive folder counts its claims).
fn delivered(dir: &Path) -> Vec<String> {
    names(dir).into_iter().filter(|n| !n.starts_with('.')).collect()
}

/// A file name in faults/ is `<fault message id>-<original name>`: the
/// original name.
fn original_name(fault_file: &str) -> &str {
    let (id, name) = fault_file.split_at(26);
    assert!(
        id.parse::<sluice_model::MessageId>().is_ok() && name.starts_with('-'),
        "{fault_file}"
    );
    &name[1..]
}

/// The node's log has `times` lines that contain every one of `words`.
fn assert_logged(node: &Node, words: &[&str], times: usize) {
    let log = node.log_text();
    let n = log.lines().filter(|l| words.iter().all(|w| l.contains(w))).count();
    assert_eq!(n, times, "lines with {words:?}; log:\n{log}");
}

/// The shipped example, as it is: five files fail to reach out/ (missing),
/// are suspended after three attempts about a second apart, and each fault
/// message lands in faults/ with the original's bytes; `mkdir out` and
/// `suspended resume --all` deliver them all and leave an empty box.
#[test]
fn faults_example_suspends_writes_faults_and_resume_delivers() {
    let root = tempfile::tempdir().unwrap();
    let config = example(root.path(), |t| t);
    let mut node = Node::start(&config, &root.path().join("node.log"));
    let files: Vec<(String, Vec<u8>)> = (1..=5u64)
        .map(|i| {
            // One of them stored in chunks, the others inline.
            let len = if i == 3 { 700_000 } else { 100 * i as usize };
            (format!("file-{i}.dat"), content(i, len))
        })
        .collect();
    for (name, data) in &files {
        drop_file(&root.path().join("in"), name, data);
    }
    wait_until(Duration::from_secs(60), "five suspended messages", || {
        suspended(&config).len() == 5
    });
    let list = suspended(&config);
    let mut originals = Vec::new();
    for s in &list {
        assert_eq!(s["subscriber"], "deliver", "{s:#}");
        assert_eq!(
            (s["stage"].as_str(), s["component"].as_str()),
            (Some("transmit"), Some("file"))
        );
        assert_eq!(s["location"], "in-folder");
        assert_eq!(
            (s["attempts"].as_u64(), s["resumable"].as_bool()),
            (Some(3), Some(true))
        );
        let reason = s["reason"].as_str().unwrap();
        assert!(
            reason.contains("out does not exist") && !reason.contains("attempt"),
            "{reason}"
        );
        let history = s["history"].as_array().unwrap();
        let numbers: Vec<u64> = history.iter().map(|h| h["attempt"].as_u64().unwrap()).collect();
        assert_eq!(numbers, [1, 2, 3], "{s:#}");
        for h in history {
            assert!(h["error"].as_str().unwrap().contains("does not exist"), "{h}");
        }
        // retry = { count = 2, interval = "1s", backoff = 1 }: a second apart.
        let at: Vec<i64> = history.iter().map(|h| h["at"].as_i64().unwrap()).collect();
        for w in at.windows(2) {
            let gap = w[1] - w[0];
            assert!((900..5_000).contains(&gap), "attempts {gap} ms apart: {s:#}");
        }
        originals.push(s["message_id"].as_str().unwrap().to_string());
    }

    // One fault message per suspension, written by the fault handler with
    // the original's bytes and name.
    let faults = root.path().join("faults");
    wait_until(Duration::from_secs(30), "five files in faults/", || {
        delivered(&faults).len() == 5
    });
    let mut got: Vec<(String, Vec<u8>)> = delivered(&faults)
        .iter()
        .map(|f| (original_name(f).to_string(), std::fs::read(faults.join(f)).unwrap()))
        .collect();
    got.sort();
    assert!(got == files, "faults/ holds each original's bytes under its name");
    assert!(!root.path().join("out").exists());
    // The fault messages went to the fault handler alone (not to `deliver`,
    // where the originals went) and, delivered, left the box.
    wait_until(Duration::from_secs(30), "only the five originals in the box", || {
        status_json(&config)["spool"] == 5
    });
    let status = status_json(&config);
    assert_eq!(
        (status["suspended"].as_u64(), status["queued"]["deliver"].as_u64()),
        (Some(5), Some(0)),
        "{status}"
    );

    // The walk-through: create out/, resume everything.
    std::fs::create_dir(root.path().join("out")).unwrap();
    let out = run(sluice().args(["suspended", "resume", "--all", "--config"]).arg(&config));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("resumed -> deliver")
            .count(),
        5,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out_dir = root.path().join("out");
    wait_until(Duration::from_secs(30), "five files in out/", || {
        delivered(&out_dir).len() == 5
    });
    for (name, data) in &files {
        assert!(std::fs::read(out_dir.join(name)).unwrap() == *data, "out/{name}");
    }
    assert!(suspended(&config).is_empty());
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    let status = status_json(&config);
    assert_eq!(
        (status["content_bytes"].as_u64(), status["content_chunks"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(delivered(&faults).len(), 5, "resuming made no new fault");
    assert!(names(&root.path().join("in")).is_empty());
    for id in &originals {
        let out = run(sluice().args(["messages", "show", id, "--config"]).arg(&config));
        assert!(!out.status.success(), "{id} left the box");
    }
    node.stop();
}

/// What a fault message carries, looked at in the box while the fault
/// handler is stopped: `fault.*` promoted, the original's context copied
/// demoted, routed to the fault handler only, the original's parts shared
/// (no chunk copied). Once everything is delivered, the shared content goes
/// with the last message that refers to it.
#[test]
fn fault_message_says_where_and_why_routes_only_to_the_handler_and_shares_parts() {
    let root = tempfile::tempdir().unwrap();
    let stopped = |t: String| {
        let (before, _) = t
            .split_once("[send_ports.fault-handler]")
            .expect("the example has a fault handler");
        format!("{before}{STOPPED_FAULT_HANDLER}")
    };
    let config = example(root.path(), stopped);
    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);
    let big = content(42, 3 * 1024 * 1024 + 17);
    let small = b"a small one".to_vec();
    drop_file(&root.path().join("in"), "big.bin", &big);
    drop_file(&root.path().join("in"), "small.txt", &small);
    // Once in/ is empty (claims included), both are published; only big.bin
    // is stored in chunks (small bodies are inline), so these are its chunks.
    wait_until(Duration::from_secs(60), "both files in the box", || {
        names(&root.path().join("in")).is_empty()
    });
    let before = status_json(&config);
    let chunks = before["content_chunks"].as_u64().unwrap();
    assert!(chunks >= 12, "3 MiB is stored in chunks ({chunks})");

    wait_until(
        Duration::from_secs(60),
        "two suspended messages and their faults",
        || {
            let s = status_json(&config);
            s["suspended"] == 2 && s["queued"]["fault-handler"] == 2
        },
    );
    let status = status_json(&config);
    assert_eq!(status["spool"], 4, "{status}");
    assert_eq!(status["queued"]["deliver"], 0, "{status}");
    // Stored content is shared and counted once; only the small inline
    // body (a few bytes in the part row) exists twice.
    assert_eq!(
        (
            status["content_chunks"].as_u64(),
            status["content_bytes"].as_u64().unwrap() - before["content_bytes"].as_u64().unwrap()
        ),
        (Some(chunks), small.len() as u64),
        "the fault shares the original's chunks, counted once: {status}"
    );

    let list = suspended(&config);
    let faults = fault_messages(&config);
    assert_eq!(faults.len(), 2);
    for f in &faults {
        let original_id = value(f, "fault.message_id", "string", true).as_str().unwrap();
        let s = list
            .iter()
            .find(|s| s["message_id"] == original_id)
            .unwrap_or_else(|| panic!("fault of {original_id}, which is not suspended"));
        let original = show(&config, original_id);
        assert_eq!(value(f, "fault.port", "string", true), "deliver");
        assert_eq!(value(f, "fault.location", "string", true), "in-folder");
        assert_eq!(value(f, "fault.stage", "string", true), "transmit");
        assert_eq!(value(f, "fault.component", "string", true), "file");
        let error = value(f, "fault.error", "string", true).as_str().unwrap();
        let out = root.path().join("out");
        assert!(
            error.contains(&format!("folder {} does not exist", out.display())),
            "{error}"
        );
        assert_eq!(error, s["reason"], "the suspended entry's reason");
        assert_eq!(value(f, "fault.attempts", "int", true), 3);
        assert_eq!(value(f, "fault.suspended_id", "int", true), &s["id"]);
        assert_eq!(value(f, "fault.resumable", "bool", true), true);
        value(f, "fault.time", "timestamp", true);
        assert!(prop(f, "fault.transport").is_none(), "no backup, no transport: {f:#}");
        // The original's context, every property with its type and value,
        // none promoted.
        let mut promoted = Vec::new();
        for p in original["context"].as_array().unwrap() {
            let key = match (p["namespace"].as_str().unwrap(), p["name"].as_str().unwrap()) {
                ("", name) => name.to_string(), // received_at
                (ns, name) => format!("{ns}.{name}"),
            };
            assert_eq!(value(f, &key, p["type"].as_str().unwrap(), false), &p["value"], "{key}");
            if p["promoted"] == true {
                promoted.push(key);
            }
        }
        let name = value(f, "file.name", "string", false).as_str().unwrap();
        assert!(name == "big.bin" || name == "small.txt", "{name}");
        assert!(promoted.contains(&"file.name".to_string()) && promoted.contains(&"receive.port".to_string()));
        let listed = value(f, "fault.promoted", "string", false).as_str().unwrap();
        let mut listed: Vec<&str> = listed.split('\n').collect();
        listed.sort();
        promoted.sort();
        assert_eq!(listed, promoted, "fault.promoted names what the original promoted");
        // Routed to the fault handler alone (not to `deliver`, where the original went).
        let queue = f["queue"].as_array().unwrap();
        assert_eq!(queue.len(), 1, "{f:#}");
        assert_eq!(queue[0]["subscriber"], "fault-handler");
        assert_eq!(f["parts"], original["parts"], "the same parts (size, crc)");
    }

    // Start the fault handler, create out/ and resume: the originals and
    // their faults are delivered, and the shared content goes with the last.
    node.stop();
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("enabled = false\n", ""),
    )
    .unwrap();
    let mut node = Node::start(&config, &log);
    std::fs::create_dir(root.path().join("out")).unwrap();
    let out = run(sluice().args(["suspended", "resume", "--all", "--config"]).arg(&config));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until(Duration::from_secs(60), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    let status = status_json(&config);
    assert_eq!(
        (status["content_bytes"].as_u64(), status["content_chunks"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(std::fs::read(root.path().join("out/big.bin")).unwrap() == big);
    assert_eq!(std::fs::read(root.path().join("out/small.txt")).unwrap(), small);
    let faults_dir = root.path().join("faults");
    let mut in_faults: Vec<(String, Vec<u8>)> = delivered(&faults_dir)
        .iter()
        .map(|f| (original_name(f).to_string(), std::fs::read(faults_dir.join(f)).unwrap()))
        .collect();
    in_faults.sort();
    assert!(in_faults == vec![("big.bin".to_string(), big), ("small.txt".to_string(), small)]);
    node.stop();
}

/// A receive location with fast polling and a send port `safe` whose
/// primary transport writes to a missing folder, then `backup`, plus
/// `extra`.
fn backup_config(root: &Path, primary_file_name: &str, primary_retry: &str, backup: &str, extra: &str) -> PathBuf {
    std::fs::create_dir_all(root.join("in")).unwrap();
    let config = root.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "data"

[receive_ports.in.locations.in-folder]
adapter = {{ type = "file", path = "in", settle = "100ms", poll_interval = "100ms" }}

[send_ports.safe]
filter = 'receive.port == "in"'
adapter = {{ type = "file", path = "missing", file_name = "{primary_file_name}", create_folder = false }}
retry = {primary_retry}
backup = {{ adapter = {{ type = "file", path = "{backup}", file_name = "%SourceFileName%", create_folder = {} }}, retry = {{ count = 1, interval = "500ms", backoff = 1 }} }}
{extra}"#,
            backup == "backup"
        ),
    )
    .unwrap();
    config
}

const PRIMARY_RETRY: &str = r#"{ count = 1, interval = "500ms", backoff = 1 }"#;

/// The primary fails twice (one retry), the backup takes the message:
/// delivered, nothing suspended, no fault.
#[test]
fn backup_transport_delivers_after_the_primary_retries() {
    let root = tempfile::tempdir().unwrap();
    let config = backup_config(
        root.path(),
        "%SourceFileName%",
        PRIMARY_RETRY,
        "backup",
        STOPPED_FAULT_HANDLER,
    );
    let node = Node::start(&config, &root.path().join("node.log"));
    let data = content(9, 20_000);
    drop_file(&root.path().join("in"), "order.xml", &data);
    let delivered = root.path().join("backup/order.xml");
    wait_until(Duration::from_secs(30), "the file in backup/", || delivered.exists());
    assert!(std::fs::read(&delivered).unwrap() == data);
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    let status = status_json(&config);
    assert_eq!(
        (status["suspended"].as_u64(), status["queued"]["fault-handler"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(!root.path().join("missing").exists());
    // Two attempts on the primary: one retry, then the failover.
    let failed = ["send_port=safe", r#"transport="primary""#, "missing does not exist"];
    assert_logged(&node, &[&failed[..], &["will retry", "attempt=1"]].concat(), 1);
    assert_logged(
        &node,
        &[&failed[..], &["going on to the backup", "attempt=2"]].concat(),
        1,
    );
    assert_logged(&node, &["send_port=safe", "delivery failed"], 2);
}

/// Both transports fail: suspended after 2 + 2 attempts, the history says
/// which transport made each, and the fault message says `backup`.
#[test]
fn both_transports_failing_suspends_after_four_attempts_with_a_backup_fault() {
    let root = tempfile::tempdir().unwrap();
    let config = backup_config(
        root.path(),
        "%SourceFileName%",
        PRIMARY_RETRY,
        "missing-too",
        STOPPED_FAULT_HANDLER,
    );
    let _node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("in"), "order.xml", b"<order/>");
    wait_until(Duration::from_secs(30), "the message suspended", || {
        status_json(&config)["suspended"] == 1
    });
    let s = &suspended(&config)[0];
    assert_eq!(
        (s["subscriber"].as_str(), s["transport"].as_str()),
        (Some("safe"), Some("backup"))
    );
    assert_eq!(
        (s["attempts"].as_u64(), s["resumable"].as_bool()),
        (Some(4), Some(true)),
        "{s:#}"
    );
    let reason = s["reason"].as_str().unwrap();
    assert!(reason.contains("missing-too does not exist"), "{reason}");
    let history = s["history"].as_array().unwrap();
    let seen: Vec<(u64, &str, bool)> = history
        .iter()
        .map(|h| {
            let error = h["error"].as_str().unwrap();
            (
                h["attempt"].as_u64().unwrap(),
                h["transport"].as_str().unwrap(),
                error.contains("missing-too does not exist"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "primary", false),
            (2, "primary", false),
            (3, "backup", true),
            (4, "backup", true)
        ],
        "{s:#}"
    );
    wait_until(Duration::from_secs(30), "the fault message", || {
        status_json(&config)["queued"]["fault-handler"] == 1
    });
    let faults = fault_messages(&config);
    assert_eq!(faults.len(), 1);
    let f = &faults[0];
    assert_eq!(value(f, "fault.transport", "string", true), "backup");
    assert_eq!(value(f, "fault.port", "string", true), "safe");
    assert_eq!(value(f, "fault.attempts", "int", true), 4);
    assert_eq!(value(f, "fault.message_id", "string", true), &s["message_id"]);
}

/// An error retrying cannot help (the primary's file name needs a property
/// the message does not have) goes to the backup at once, without waiting
/// for the primary's retries (an hour apart here).
#[test]
fn a_non_retryable_primary_error_fails_over_at_once() {
    let root = tempfile::tempdir().unwrap();
    let config = backup_config(
        root.path(),
        "%property:order.id%",
        r#"{ count = 3, interval = "1h" }"#,
        "backup",
        "",
    );
    let node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("in"), "order.xml", b"<order/>");
    let delivered = root.path().join("backup/order.xml");
    wait_until(Duration::from_secs(30), "the file in backup/", || delivered.exists());
    assert_eq!(std::fs::read(&delivered).unwrap(), b"<order/>");
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    let failover = ["send_port=safe", "going on to the backup", "attempt=1", "order.id"];
    assert_logged(&node, &failover, 1);
    assert_logged(&node, &["send_port=safe", "delivery failed"], 1);
}

/// A non-retryable primary error, then a backup that fails too: three
/// attempts were made (one primary, two backup), and the entry counts
/// three, numbered 1, 2, 3, though the fail-over skipped the primary's
/// other positions.
#[test]
fn after_a_fail_over_the_attempts_made_are_counted() {
    let root = tempfile::tempdir().unwrap();
    let config = backup_config(
        root.path(),
        "%property:order.id%",
        r#"{ count = 3, interval = "1h" }"#,
        "missing-too",
        STOPPED_FAULT_HANDLER,
    );
    let _node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("in"), "order.xml", b"<order/>");
    wait_until(Duration::from_secs(30), "the message suspended", || {
        status_json(&config)["suspended"] == 1
    });
    let s = &suspended(&config)[0];
    assert_eq!(s["attempts"].as_u64(), Some(3), "{s:#}");
    let history: Vec<(u64, &str)> = s["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["attempt"].as_u64().unwrap(), h["transport"].as_str().unwrap()))
        .collect();
    assert_eq!(history, vec![(1, "primary"), (2, "backup"), (3, "backup")]);
}

/// A file the receive pipeline rejects (not gzip) is stored as received and
/// suspended, not resumable, saying which stage, component and location;
/// its fault message reaches the fault handler with the same bytes. The file
/// leaves the folder because its suspended copy is in the box.
#[test]
fn a_rejected_file_is_suspended_and_its_fault_reaches_the_handler() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("packed")).unwrap();
    let config = root.path().join("sluice.toml");
    std::fs::write(
        &config,
        r#"data_dir = "data"

[receive_ports.packed.locations.packed-folder]
adapter = { type = "file", path = "packed", settle = "100ms", poll_interval = "100ms" }
pipeline = { decode = [{ type = "gzip" }] }

[send_ports.unpacked]
filter = 'receive.port == "packed"'
adapter = { type = "file", path = "unpacked", file_name = "%SourceFileStem%", create_folder = true }

[send_ports.fault-handler]
filter = 'fault.message_id exists'
adapter = { type = "file", path = "faults", file_name = "%MessageId%-%SourceFileName%", create_folder = true }

# Stopped: keeps a copy of each receive-side fault in the box to look at.
[send_ports.fault-inspector]
filter = 'fault.location == "packed-folder" and not (fault.port exists)'
adapter = { type = "file", path = "inspected", create_folder = true }
enabled = false
"#,
    )
    .unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    let data = content(5, 400_000);
    drop_file(&root.path().join("packed"), "report.csv.gz", &data);

    let faults = root.path().join("faults");
    wait_until(Duration::from_secs(30), "the fault in faults/", || {
        delivered(&faults).len() == 1
    });
    let fault_file = &delivered(&faults)[0];
    assert_eq!(original_name(fault_file), "report.csv.gz");
    assert!(
        std::fs::read(faults.join(fault_file)).unwrap() == data,
        "the bytes as received"
    );
    wait_until(Duration::from_secs(30), "the file taken from the folder", || {
        names(&root.path().join("packed")).is_empty()
    });
    assert!(!root.path().join("unpacked").exists(), "not routed");

    let list = suspended(&config);
    assert_eq!(list.len(), 1, "{list:#?}");
    let s = &list[0];
    assert!(s["subscriber"].is_null(), "{s:#}");
    assert_eq!(
        (s["stage"].as_str(), s["component"].as_str()),
        (Some("decode"), Some("gzip"))
    );
    assert_eq!(
        (s["location"].as_str(), s["resumable"].as_bool()),
        (Some("packed-folder"), Some(false))
    );
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("receive location `packed-folder`: decode stage, component gzip"),
        "{reason}"
    );
    // The file is gone from the folder because this copy is durable: the
    // suspended message holds its bytes, exactly.
    let original = show(&config, s["message_id"].as_str().unwrap());
    assert_eq!(original["parts"][0]["size"], data.len() as u64);
    assert_eq!(value(&original, "file.name", "string", true), "report.csv.gz");
    let sid = s["id"].as_i64().unwrap().to_string();
    let resume = run(sluice().args(["suspended", "resume", &sid, "--config"]).arg(&config));
    assert!(!resume.status.success());
    assert!(String::from_utf8_lossy(&resume.stderr).contains("not resumable"));

    // The fault message as the inspector holds it (the handler has
    // delivered and released its own reference).
    wait_until(Duration::from_secs(30), "the fault delivered by the handler", || {
        status_json(&config)["queued"]["fault-handler"] == 0
    });
    let faults = fault_messages(&config);
    assert_eq!(faults.len(), 1);
    let f = &faults[0];
    assert_eq!(value(f, "fault.location", "string", true), "packed-folder");
    assert_eq!(value(f, "fault.stage", "string", true), "decode");
    assert_eq!(value(f, "fault.component", "string", true), "gzip");
    assert_eq!(value(f, "fault.resumable", "bool", true), false);
    assert_eq!(value(f, "fault.attempts", "int", true), 0);
    assert_eq!(value(f, "fault.error", "string", true), &s["reason"]);
    assert_eq!(value(f, "fault.message_id", "string", true), &s["message_id"]);
    assert_eq!(value(f, "receive.location", "string", false), "packed-folder");
    assert!(
        prop(f, "fault.port").is_none() && prop(f, "fault.transport").is_none(),
        "{f:#}"
    );
    assert_eq!(f["parts"], original["parts"]);
    let queue = f["queue"].as_array().unwrap();
    assert_eq!(queue.len(), 1, "{f:#}");
    assert_eq!(queue[0]["subscriber"], "fault-inspector");

    // Terminated, the original goes; its content stays while the fault
    // message refers to it.
    assert!(
        run(sluice().args(["suspended", "terminate", &sid, "--config"]).arg(&config))
            .status
            .success()
    );
    let status = status_json(&config);
    assert_eq!(status["spool"], 1, "{status}");
    assert!(status["content_chunks"].as_u64().unwrap() > 0, "{status}");
    node.stop();
}

/// A fault handler that fails too makes no fault message of its own fault
/// messages (no loop): the fault message is suspended beside the original,
/// in the transaction that would have published one, and both are
/// delivered once their folders exist and they are resumed.
#[test]
fn a_failing_fault_handler_makes_no_fault_loop() {
    let root = tempfile::tempdir().unwrap();
    let config = example(root.path(), |t| {
        let failing = t.replace(
            "create_folder = true }",
            "create_folder = false }\nretry = { count = 1, interval = \"500ms\", backoff = 1 }",
        );
        assert_ne!(failing, t, "the example's fault handler creates its folder");
        failing
    });
    let node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("in"), "lost.txt", b"twice failed");
    wait_until(Duration::from_secs(60), "the original and its fault suspended", || {
        status_json(&config)["suspended"] == 2
    });
    let status = status_json(&config);
    assert_eq!(status["spool"], 2, "no fault of the fault: {status}");
    assert_eq!(status["queued"]["fault-handler"], 0, "{status}");
    let list = suspended(&config);
    let handler = list
        .iter()
        .find(|s| s["subscriber"] == "fault-handler")
        .expect("the fault suspended");
    let deliver = list
        .iter()
        .find(|s| s["subscriber"] == "deliver")
        .expect("the original suspended");
    assert_eq!(
        (handler["attempts"].as_u64(), handler["resumable"].as_bool()),
        (Some(2), Some(true))
    );
    let fault = show(&config, handler["message_id"].as_str().unwrap());
    assert_eq!(
        value(&fault, "fault.message_id", "string", true),
        &deliver["message_id"]
    );
    assert_logged(&node, &["no fault message is made for it"], 1);

    for dir in ["out", "faults"] {
        std::fs::create_dir(root.path().join(dir)).unwrap();
    }
    let out = run(sluice().args(["suspended", "resume", "--all", "--config"]).arg(&config));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    assert_eq!(
        std::fs::read(root.path().join("out/lost.txt")).unwrap(),
        b"twice failed"
    );
    let faults = delivered(&root.path().join("faults"));
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(original_name(&faults[0]), "lost.txt");
}

/// A send port removed from the configuration while a message waits for
/// it: at the next start the entry is suspended (stage `unsubscribe`), like
/// any suspension, and its fault message reaches the fault handler.
#[test]
fn removing_a_send_port_suspends_its_queue_with_fault_messages() {
    let root = tempfile::tempdir().unwrap();
    let config = example(root.path(), |t| {
        let slow = t.replace(
            r#"retry = { count = 2, interval = "1s", backoff = 1 }"#,
            r#"retry = { count = 2, interval = "1h" }"#,
        );
        assert_ne!(slow, t, "the example's retry policy");
        slow
    });
    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);
    drop_file(&root.path().join("in"), "waiting.txt", b"waits for deliver");
    wait_until(Duration::from_secs(30), "the first attempt failed", || {
        node.log_text().contains("will retry")
    });
    node.stop();
    assert_eq!(status_json(&config)["queued"]["deliver"], 1);

    let text = std::fs::read_to_string(&config).unwrap();
    let (start, end) = (
        text.find("[send_ports.deliver]").unwrap(),
        text.find("[send_ports.fault-handler]").unwrap(),
    );
    std::fs::write(&config, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let mut node = Node::start(&config, &log);
    let faults = root.path().join("faults");
    wait_until(Duration::from_secs(30), "the fault in faults/", || {
        delivered(&faults).len() == 1
    });
    let fault_file = &delivered(&faults)[0];
    assert_eq!(original_name(fault_file), "waiting.txt");
    assert_eq!(std::fs::read(faults.join(fault_file)).unwrap(), b"waits for deliver");
    let list = suspended(&config);
    assert_eq!(list.len(), 1, "{list:#?}");
    let s = &list[0];
    assert_eq!(
        (s["subscriber"].as_str(), s["stage"].as_str()),
        (Some("deliver"), Some("unsubscribe"))
    );
    assert_eq!(
        (s["reason"].as_str(), s["location"].as_str()),
        (Some("subscriber removed"), Some("in-folder"))
    );
    assert_eq!(s["resumable"], true);
    wait_until(Duration::from_secs(30), "only the original in the box", || {
        status_json(&config)["spool"] == 1
    });
    node.stop();
}

/// A send port whose file name needs a property its filter does not
/// guarantee is a warning at start, naming the port's key, the macro and
/// the fix; a port whose file name its locations vouch for is not. A
/// message without the property is suspended at once, not resumable:
/// `resume` refuses it, `resubmit --set` delivers it.
#[test]
fn a_macro_the_filter_does_not_guarantee_warns_and_its_failure_is_resubmitted_not_resumed() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        r#"data_dir = "data"

[receive_ports.in.locations.in-folder]
adapter = { type = "file", path = "in", mask = "*", settle = "200ms", poll_interval = "100ms" }

[send_ports.by-order]
filter = 'receive.port == "in"'
adapter = { type = "file", path = "out", file_name = "%property:order.id%.txt", create_folder = true }
retry = { count = 3, interval = "1s" }

[send_ports.copy]
filter = 'receive.port == "in"'
adapter = { type = "file", path = "copy", file_name = "%SourceFileName%", create_folder = true }
"#,
    )
    .unwrap();
    let mut node = Node::start(&config, &dir.join("node.log"));
    let log = node.log_text();
    assert!(
        log.contains("send_ports.by-order.adapter.file_name")
            && log.contains("`%property:order.id%` needs property order.id")
            && log.contains("add `and order.id exists` to the filter"),
        "{log}"
    );
    assert!(!log.contains("send_ports.copy"), "{log}");

    drop_file(&dir.join("in"), "a.txt", b"order without an id");
    wait_until(Duration::from_secs(30), "the copy and the suspension", || {
        dir.join("copy/a.txt").exists() && status_json(&config)["suspended"] == 1
    });
    let entry = suspended(&config).remove(0);
    assert_eq!(
        (&entry["subscriber"], &entry["resumable"]),
        (&"by-order".into(), &false.into()),
        "{entry}"
    );
    assert_eq!(entry["attempts"], 1, "not retried: {entry}");
    assert!(
        entry["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("resubmit it with order.id set"),
        "{entry}"
    );
    assert!(node.log_text().contains("suspended, not resumable"));
    let id = entry["id"].to_string();
    let out = run(sluice().args(["suspended", "resume", &id, "--config"]).arg(&config));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && stderr.contains("not resumable"), "{stderr}");
    let out = run(sluice()
        .args(["suspended", "resubmit", &id, "--set", "order.id=string:A1", "--config"])
        .arg(&config));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until(Duration::from_secs(30), "the resubmitted order", || {
        std::fs::read(dir.join("out/A1.txt")).is_ok_and(|b| b == b"order without an id")
    });
    node.stop();
    assert_eq!(status_json(&config)["suspended"], 0);
}
