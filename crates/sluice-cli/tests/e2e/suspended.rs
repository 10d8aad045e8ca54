//! Suspended messages through the real binary: a file nobody subscribes to is
//! suspended, stays suspended while nothing matches, and is delivered when a
//! matching send port exists and it is resumed. Terminate drops it. The
//! operations: list with filters, show, resume, resubmit with edits and a new
//! body, terminate, one entry or in bulk; bad input changes nothing; a bulk
//! run stopped with Ctrl-C is finished by running it again; two bulk runs at
//! once each account for every entry they matched.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const ORPHANS: &str = r#"
[receive_ports.orphans.locations.orphan-folder]
adapter = { type = "file", path = "orphans", settle = "100ms", poll_interval = "100ms" }
"#;

const ADOPTER: &str = r#"
[send_ports.adopter]
filter = 'receive.port == "orphans"'
adapter = { type = "file", path = "adopted", file_name = "%SourceFileName%", create_folder = true }
"#;

/// Suspended entry ids ordered as `names`: the entry whose message has
/// `file.name` == names[0] first, and so on (files are received
/// concurrently, so the order of suspension is not the order of dropping).
fn suspended_ids(config: &std::path::Path, names: &[&str]) -> Vec<i64> {
    let out = run(sluice().args(["suspended", "list", "--json", "--config"]).arg(config));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let name_of = |message_id: &str| -> String {
        let show = run(sluice()
            .args(["messages", "show", message_id, "--json", "--config"])
            .arg(config));
        let m: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
        let ctx = m["context"].as_array().unwrap().clone();
        let p = ctx
            .iter()
            .find(|p| p["namespace"] == "file" && p["name"] == "name")
            .expect("file.name");
        p["value"].as_str().unwrap().to_string()
    };
    let entries: Vec<(i64, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_i64().unwrap(), name_of(s["message_id"].as_str().unwrap())))
        .collect();
    names
        .iter()
        .map(|n| {
            entries
                .iter()
                .find(|(_, name)| name == n)
                .unwrap_or_else(|| panic!("no suspended {n}"))
                .0
        })
        .collect()
}

#[test]
fn resume_delivers_once_a_send_port_matches_and_terminate_drops() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), ORPHANS);
    std::fs::create_dir_all(root.path().join("orphans")).unwrap();
    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);
    drop_file(&root.path().join("orphans"), "keep.txt", b"adopt me");
    drop_file(&root.path().join("orphans"), "drop.txt", b"forget me");
    wait_until(Duration::from_secs(30), "two suspended messages", || {
        status_json(&config)["suspended"] == 2
    });

    // Nothing matches yet: resume fails, says why, changes nothing.
    let out = run(sluice().args(["suspended", "resume", "--all", "--config"]).arg(&config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still matches no subscription"), "{err}");
    assert_eq!(status_json(&config)["suspended"], 2);

    let ids = suspended_ids(&config, &["keep.txt", "drop.txt"]);
    let show = run(sluice().args(["suspended", "list", "--config"]).arg(&config));
    assert!(String::from_utf8_lossy(&show.stdout).contains("no subscriber"));

    // Terminate one (while the node runs), twice: the second says it is gone.
    let out = run(sluice()
        .args(["suspended", "terminate", &ids[1].to_string(), "--config"])
        .arg(&config));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(sluice()
        .args(["suspended", "terminate", &ids[1].to_string(), "--config"])
        .arg(&config));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let status = status_json(&config);
    assert_eq!(
        (status["suspended"].as_u64(), status["spool"].as_u64()),
        (Some(1), Some(1))
    );

    // Add a send port that wants them, restart, resume: delivered.
    node.stop();
    let text = std::fs::read_to_string(&config).unwrap() + ADOPTER;
    std::fs::write(&config, text).unwrap();
    let mut node = Node::start(&config, &log);
    let out = run(sluice()
        .args(["suspended", "resume", &ids[0].to_string(), "--config"])
        .arg(&config));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed -> adopter"));
    wait_until(Duration::from_secs(30), "the resumed message delivered", || {
        root.path().join("adopted").join("keep.txt").exists()
    });
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    assert_eq!(
        std::fs::read(root.path().join("adopted/keep.txt")).unwrap(),
        b"adopt me"
    );
    assert!(!root.path().join("adopted/drop.txt").exists());
    node.stop();

    let out = run(sluice().args(["suspended", "resume", "--config"]).arg(&config));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("or pass --all"));
}

/// Send port `deliver` takes orders and writes them to a folder that does
/// not exist (and is not created), failing at once: each order is suspended
/// after one attempt. Anything else has no subscriber.
const DELIVER: &str = r#"
[send_ports.deliver]
filter = 'kind == "order"'
adapter = { type = "file", path = "missing", file_name = "%property:order.id%.txt", create_folder = false }
retry = { count = 0, interval = "1s" }
"#;

/// `suspended list --json` with these filter flags.
fn list(config: &Path, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["suspended", "list", "--json"];
    args.extend_from_slice(filters);
    let (o, _) = expect(config, &args, 0);
    serde_json::from_str::<Value>(&o)
        .unwrap_or_else(|e| panic!("{e}: {o}"))
        .as_array()
        .unwrap()
        .clone()
}

/// The `order.id` of each listed entry's message, sorted.
fn orders(config: &Path, filters: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list(config, filters)
        .iter()
        .map(|s| {
            let show = show_json(config, s["id"].as_i64().unwrap());
            property(&show["context"], "order", "id").as_str().unwrap().to_string()
        })
        .collect();
    v.sort();
    v
}

fn show_json(config: &Path, id: i64) -> Value {
    let (o, _) = expect(config, &["suspended", "show", &id.to_string(), "--json"], 0);
    serde_json::from_str(&o).unwrap()
}

fn property<'a>(context: &'a Value, namespace: &str, name: &str) -> &'a Value {
    &context
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["namespace"] == namespace && p["name"] == name)
        .unwrap_or_else(|| panic!("no {namespace}.{name} in {context}"))["value"]
}

/// The suspended entry whose message has `order.id` == `order`.
fn entry_of(config: &Path, order: &str) -> i64 {
    let filter = format!("order.id == \"{order}\"");
    let found = list(config, &["--where", &filter]);
    assert_eq!(found.len(), 1, "{order}: {found:?}");
    found[0]["id"].as_i64().unwrap()
}

fn publish(config: &Path, props: &[&str]) {
    let mut args = vec!["publish"];
    for p in props {
        args.extend_from_slice(&["--prop", p]);
    }
    expect(config, &args, 0);
}

/// A root with the `deliver` port, a box made by a node that ran once.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), DELIVER);
    Node::start(&config, &root.path().join("node.log")).stop();
    (root, config)
}

/// Orders A1, B2, B3 failed at `deliver`, C3 (not an order) has no subscriber.
fn four_suspended(config: &Path) {
    for order in ["A1", "B2", "B3"] {
        publish(config, &["kind=string:order", &format!("order.id=string:{order}")]);
    }
    publish(config, &["kind=string:other", "order.id=string:C3"]);
    wait_until(Duration::from_secs(30), "four suspended messages", || {
        status_json(config)["suspended"] == 4
    });
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[test]
fn list_filters_and_show_where_it_failed() {
    let (root, config) = setup();
    let _node = Node::start(&config, &root.path().join("node.log"));
    four_suspended(&config);

    assert_eq!(orders(&config, &[]), ["A1", "B2", "B3", "C3"]);
    assert_eq!(orders(&config, &["--port", "deliver"]), ["A1", "B2", "B3"]);
    assert_eq!(orders(&config, &["--stage", "route"]), ["C3"]);
    assert_eq!(
        orders(
            &config,
            &["--stage", "transmit", "--where", "order.id starts-with \"B\""]
        ),
        ["B2", "B3"]
    );
    assert_eq!(
        orders(&config, &["--error", "MISSING DOES NOT EXIST"]),
        ["A1", "B2", "B3"]
    );
    assert_eq!(orders(&config, &["--error", "no SUBSCRIBER"]), ["C3"]);
    assert_eq!(
        orders(&config, &["--where", "order.id == \"B2\" or kind == \"other\""]),
        ["B2", "C3"]
    );
    assert_eq!(orders(&config, &["--since", "1h"]), ["A1", "B2", "B3", "C3"]);
    assert!(orders(&config, &["--until", "1h"]).is_empty());
    // A time range around the latest suspension: since is inclusive, until exclusive.
    let all = list(&config, &[]);
    let latest = all.iter().max_by_key(|s| s["suspended_at"].as_i64()).unwrap();
    let at = rfc3339(latest["suspended_at"].as_i64().unwrap());
    let since: Vec<_> = list(&config, &["--since", &at])
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert!(since.contains(&latest["id"]), "{since:?}");
    let until = list(&config, &["--until", &at]);
    assert!(!until.iter().any(|s| s["id"] == latest["id"]));
    assert_eq!(since.len() + until.len(), 4);

    // The table: id, message, time, port or location, stage/component, attempts, resumable, reason.
    let (table, _) = expect(&config, &["suspended", "list", "--port", "deliver"], 0);
    let a1 = entry_of(&config, "A1");
    let row = table.lines().find(|l| l.starts_with(&format!("#{a1} "))).unwrap();
    for col in ["port deliver", "transmit/file", " 1  ", "yes", "does not exist"] {
        assert!(row.contains(col), "{col}: {row}");
    }
    let (none, _) = expect(&config, &["suspended", "list", "--error", "nope"], 0);
    assert_eq!(none.trim(), "(no suspended message matches error containing \"nope\")");

    // Show: where, every attempt, the typed context, the parts.
    let (shown, _) = expect(&config, &["suspended", "show", &format!("#{a1}")], 0);
    for line in [
        "stage       transmit",
        "component   file",
        "send port   deliver",
        "attempts    1",
        "    1  ",
        "order.id                         string    \"A1\"  (promoted)",
        "0: body                            0 bytes",
    ] {
        assert!(shown.contains(line), "{line}:\n{shown}");
    }
    let v = show_json(&config, a1);
    assert_eq!(v["history"].as_array().unwrap().len(), 1);
    assert!(v["history"][0]["error"].as_str().unwrap().contains("does not exist"));
    assert_eq!(v["stage"], "transmit");
    assert_eq!(v["component"], "file");
    assert_eq!(v["subscriber"], "deliver");
    assert_eq!(property(&v["context"], "", "kind"), "order");
    assert_eq!(v["parts"][0]["size"], 0);
    let (_, err) = expect(&config, &["suspended", "show", "999"], 1);
    assert!(err.contains("suspended entry 999 does not exist"), "{err}");
}

#[test]
fn resume_resubmit_terminate_and_bad_input_that_changes_nothing() {
    let (root, config) = setup();
    let _node = Node::start(&config, &root.path().join("node.log"));
    four_suspended(&config);
    let (a1, c3) = (entry_of(&config, "A1"), entry_of(&config, "C3"));
    let body = root.path().join("fixed.xml");
    std::fs::write(&body, b"<order id=\"C3\">fixed</order>\n").unwrap();

    // Bad input: says what is wrong, exit status 2 (usage) or 1, nothing changes.
    let before = list(&config, &[]);
    let (a1s, c3s) = (a1.to_string(), c3.to_string());
    let body_arg = body.to_str().unwrap();
    for (args, code, says) in [
        (vec!["suspended", "resume", "999"], 1, "#999: does not exist"),
        (
            vec!["suspended", "resubmit", &a1s, "--set", "n=int:abc"],
            2,
            "`abc` is not an int",
        ),
        (
            vec!["suspended", "resubmit", &a1s, "--set", "n=integer:1"],
            2,
            "unknown type `integer`",
        ),
        (
            vec!["suspended", "resubmit", &a1s, "--set", "a=int:1", "--remove", "a"],
            2,
            "named twice",
        ),
        (
            vec!["suspended", "resubmit", &a1s, "--remove", "order.typo"],
            1,
            "no property `order.typo`",
        ),
        (
            vec!["suspended", "resubmit", &c3s, "--body", "/nonexistent"],
            1,
            "opening the body file",
        ),
        (
            vec!["suspended", "resubmit", "--all", "--body", body_arg],
            2,
            "exactly one suspended entry",
        ),
        (
            vec!["suspended", "resume", &a1s, "--port", "deliver"],
            2,
            "cannot be used with",
        ),
        (
            vec!["suspended", "resume", "--port", "nope"],
            1,
            "no suspended message matches port `nope`",
        ),
        (
            vec![
                "suspended",
                "terminate",
                "--where",
                "order.id == \"ZZ\"",
                "--since",
                "2h",
            ],
            1,
            "no suspended message matches suspended at or after",
        ),
        (vec!["suspended", "list", "--where", "order.id =="], 2, "needs a value"),
        (
            vec!["suspended", "list", "--since", "yesterday"],
            2,
            "nor a duration ago",
        ),
        // Last: the id that exists is terminated, the other one is reported.
        (vec!["suspended", "terminate", "999", &a1s], 1, "#999: does not exist"),
    ] {
        let (_, err) = expect(&config, &args, code);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // Only the entry terminated by the last command went.
    let terminated_a1 = before.iter().filter(|s| s["id"] != a1).cloned().collect::<Vec<_>>();
    assert_eq!(list(&config, &[]), terminated_a1);

    // Terminate one twice: the second says it is gone.
    let b3 = entry_of(&config, "B3");
    let (out, _) = expect(&config, &["suspended", "terminate", &b3.to_string()], 0);
    assert!(out.contains(&format!("#{b3}: terminated")), "{out}");
    let (_, err) = expect(&config, &["suspended", "terminate", &b3.to_string()], 1);
    assert!(err.contains(&format!("#{b3}: does not exist")), "{err}");

    // A1 again; then the folder exists: resume one, then the rest by port.
    publish(&config, &["kind=string:order", "order.id=string:A1"]);
    wait_until(Duration::from_secs(30), "A1 suspended again", || {
        status_json(&config)["suspended"] == 3
    });
    std::fs::create_dir(root.path().join("missing")).unwrap();
    let a1 = entry_of(&config, "A1");
    let b2 = entry_of(&config, "B2");
    let (out, _) = expect(&config, &["suspended", "resume", &a1.to_string()], 0);
    assert!(out.contains(&format!("#{a1}: resumed -> deliver")), "{out}");
    let (out, _) = expect(&config, &["suspended", "resume", "--port", "deliver"], 0);
    assert!(out.contains(&format!("#{b2}: resumed -> deliver")), "{out}");
    assert!(
        out.contains("resumed 1 of 1; 0 failed, 0 skipped, 0 taken by another operation"),
        "{out}"
    );
    let delivered = root.path().join("missing");
    wait_until(Duration::from_secs(30), "A1 and B2 delivered", || {
        names(&delivered) == ["A1.txt", "B2.txt"]
    });

    // Resubmit C3 as an order with a new id and a new body, without publish.by.
    let original = show_json(&config, c3);
    let (out, _) = expect(
        &config,
        &[
            "suspended",
            "resubmit",
            &c3s,
            "--set",
            "kind=string:order",
            "--set",
            "order.id=string:C3-fixed",
            "--set",
            "fix.by=string:ops",
            "--remove",
            "publish.by",
            "--body",
            body_arg,
        ],
        0,
    );
    assert!(
        out.contains(&format!("#{c3}: resubmitted as ")) && out.contains("-> deliver"),
        "{out}"
    );
    let fixed = delivered.join("C3-fixed.txt");
    wait_until(Duration::from_secs(30), "C3-fixed delivered", || fixed.exists());
    assert_eq!(std::fs::read(&fixed).unwrap(), std::fs::read(&body).unwrap());

    // Tracking: the original was resubmitted as the new message, whose
    // context is the original's with the edits (in place), nothing else.
    let old_id = original["message_id"].as_str().unwrap();
    let events = tracking(&config, &[]);
    let resubmitted = events
        .iter()
        .find(|e| e["event"] == "resubmitted" && e["message_id"] == old_id)
        .expect("a resubmitted event");
    let new_id = resubmitted["detail"].as_str().unwrap();
    assert!(out.contains(new_id), "{out}");
    let mine = tracking(&config, &["--message", new_id]);
    let kinds: Vec<_> = mine.iter().map(|e| e["event"].as_str().unwrap()).collect();
    // Received as a resubmission; one subscriber: its delivery was the last
    // reference, so one event for it.
    assert_eq!(kinds, ["received", "completed"]);
    assert_eq!(mine[0]["detail"], format!("resubmission of {old_id}"));
    assert!(mine[1]["subscriber"].is_string(), "{:?}", mine[1]);
    let mut expected = original["context"].as_array().unwrap().clone();
    expected.retain(|p| !(p["namespace"] == "publish" && p["name"] == "by"));
    for p in expected.iter_mut() {
        match (p["namespace"].as_str(), p["name"].as_str()) {
            (Some(""), Some("kind")) => p["value"] = "order".into(),
            (Some("order"), Some("id")) => p["value"] = "C3-fixed".into(),
            _ => {}
        }
    }
    expected.push(
        serde_json::json!({"namespace": "fix", "name": "by", "type": "string", "value": "ops", "promoted": true}),
    );
    assert_eq!(mine[1]["context"], Value::Array(expected));
    let (table, _) = expect(&config, &["messages", "tracking", "--message", new_id], 0);
    assert!(table.contains("completed    port deliver"), "{table}");

    // Terminate in bulk: three messages nobody wants, by stage.
    for _ in 0..3 {
        publish(&config, &["kind=string:other"]);
    }
    let (out, _) = expect(&config, &["suspended", "terminate", "--stage", "route"], 0);
    assert_eq!(out.lines().filter(|l| l.ends_with(": terminated")).count(), 3, "{out}");
    assert!(out.contains("terminated 3 of 3"), "{out}");
    assert!(list(&config, &[]).is_empty());
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
}

/// Every error is printed as `error[<code>]: <message>` with its stable
/// code, and the exit statuses stay: 1 for a failed operation, 2 for bad
/// flags.
#[test]
fn errors_carry_their_code_and_keep_their_exit_status() {
    let (_root, config) = setup();
    let (out, err) = expect(&config, &["suspended", "resume", "999999"], 1);
    assert_eq!(
        out,
        "resumed 0 of 1; 1 failed, 0 skipped, 0 taken by another operation\n"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "#999999: does not exist (it was resumed, resubmitted or terminated, or never existed)",
            "error[not_found]: 1 of 1 suspended message(s) failed (0 resumed, 0 skipped, 0 taken by another operation)",
        ],
        "{err}"
    );
    let (_, err) = expect(&config, &["suspended", "show", "999999"], 1);
    assert!(
        err.starts_with("error[not_found]: suspended entry 999999 does not exist"),
        "{err}"
    );
    let (_, err) = expect(&config, &["suspended", "resume", "--port", "nope"], 1);
    assert_eq!(
        err,
        "error[nothing_matches]: no suspended message matches port `nope`\n"
    );
    let (_, err) = expect(&config, &["messages", "show", "01J9Z3XK5V8Q2M4N6P7R8S9T0A"], 1);
    assert!(
        err.starts_with("error[not_found]: message 01J9Z3XK5V8Q2M4N6P7R8S9T0A is not in the box"),
        "{err}"
    );
    let (_, err) = expect(&config, &["messages", "show", "nope"], 1);
    assert!(
        err.starts_with("error[invalid_argument]: `nope` is not a message id"),
        "{err}"
    );
    let (_, err) = expect(&config, &["publish", "--prop", "n=int:x"], 1);
    assert!(err.starts_with("error[invalid_argument]: --prop `n=int:x`: "), "{err}");
    let (_, err) = expect(&config, &["suspended", "resume", "1", "--all"], 2);
    assert!(err.starts_with("error[invalid_argument]: "), "{err}");
    let (_, err) = expect(&config, &["suspended", "resume"], 2);
    assert!(
        err.starts_with("error[invalid_argument]: name the suspended entries"),
        "{err}"
    );
    let out = run(sluice().args(["status", "--config", "/nonexistent/sluice.toml"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error[config]: cannot read configuration file /nonexistent/sluice.toml"),
        "{}",
        text(&out.stderr)
    );
}

fn tracking(config: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["messages", "tracking", "--json"];
    all.extend_from_slice(args);
    let (o, _) = expect(config, &all, 0);
    serde_json::from_str::<Value>(&o).unwrap().as_array().unwrap().clone()
}

/// Ctrl-C during a bulk run stops it after the current entry with exit
/// status 130, the rest stays suspended, and the same command finishes it.
#[test]
fn an_interrupted_bulk_run_is_finished_by_running_it_again() {
    let (_root, config) = setup();
    let n = 100;
    for i in 0..n {
        publish(&config, &[&format!("i=int:{i}")]);
    }
    let mut child = sluice()
        .args(["suspended", "terminate", "--all", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.ends_with(": terminated\n"), "{first}");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{rest}\n{err}");
    assert_eq!(err.trim(), "interrupted; run the same command again to continue");
    let summary = rest.lines().last().unwrap();
    let left = status_json(&config)["suspended"].as_u64().unwrap();
    assert!(left > 0 && left < n, "{left} left");
    assert_eq!(
        summary,
        format!(
            "terminated {0} of {n}; 0 failed, 0 skipped, 0 taken by another operation; stopped after {0} of {n}",
            n - left
        )
    );
    let (out, _) = expect(&config, &["suspended", "terminate", "--all"], 0);
    assert!(
        out.ends_with(&format!(
            "terminated {left} of {left}; 0 failed, 0 skipped, 0 taken by another operation\n"
        )),
        "{out}"
    );
    assert_eq!(status_json(&config)["suspended"], 0);
}

/// Each line of a file is a message of its own, and nobody subscribes:
/// each is suspended ("no subscriber"), all in one transaction.
const LINES: &str = r#"
[receive_ports.lines.locations.lines-folder]
adapter = { type = "file", path = "lines", settle = "100ms", poll_interval = "100ms" }
pipeline = { disassemble = { type = "lines" } }
"#;

/// A stopped send port that takes them: resumed, they wait in its queue.
const LATER: &str = r#"
[send_ports.later]
filter = 'receive.port == "lines"'
adapter = { type = "file", path = "later", create_folder = true }
enabled = false
"#;

/// A bulk run's output adds up: its summary (`resumed 1490 of 2500; 0
/// failed, 0 skipped, 1010 taken by another operation`), and its lines, one
/// per entry or per stretch of entries taken before the run reached them
/// (`#1001..#2000: 600 of 1000 taken by another operation`). Nothing
/// failed, and it exited 0. Returns (done, matched).
fn adds_up(out: &Output, done_word: &str) -> (u64, u64) {
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    let lines: Vec<&str> = o.lines().collect();
    let summary = *lines.last().unwrap_or_else(|| panic!("no output; stderr: {e}"));
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .map(|n| n.parse().unwrap())
        .collect();
    let [done, matched, failed, skipped, taken] = numbers[..] else {
        panic!("not a summary: {summary}")
    };
    assert_eq!(done + failed + skipped + taken, matched, "{summary}");
    assert_eq!(
        summary,
        format!(
            "{done_word} {done} of {matched}; {failed} failed, {skipped} skipped, {taken} taken by another operation"
        )
    );
    assert_eq!((failed, skipped), (0, 0), "{summary}\n{e}");
    assert_eq!(out.status.code(), Some(0), "{summary}\n{e}");
    let (mut done_lines, mut taken_lines) = (0, 0);
    for line in &lines[..lines.len() - 1] {
        if line.ends_with(": terminated") || line.contains(": resumed -> later") {
            done_lines += 1;
        } else if let Some(rest) = line.strip_suffix("taken by another operation") {
            // `#12: ` (one), or `#1001..#2000: 600 of 1000 `.
            let (_, count) = rest.split_once(": ").unwrap_or_else(|| panic!("{line}"));
            taken_lines += match count.split_once(" of ") {
                Some((n, _)) => n.parse::<u64>().unwrap_or_else(|_| panic!("{line}")),
                None if count.is_empty() => 1,
                None => panic!("{line}"),
            };
        } else {
            panic!("unexpected line: {line}");
        }
    }
    assert_eq!((done_lines, taken_lines), (done, taken), "{summary}");
    (done, matched)
}

/// `sluice suspended resume --all` and `terminate --all` at once over a few
/// thousand entries: each entry is resumed or terminated, once, and each
/// run's summary and lines account for every entry it matched, those the
/// other took included, with exit status 0. (Before, a run did not count
/// the entries the other took before it read their page: `resumed 0 of
/// 5000; 0 failed, 0 skipped, 1000 gone`, 4000 unaccounted.)
#[test]
fn two_bulk_runs_at_once_account_for_every_entry() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), LINES);
    let folder = root.path().join("lines");
    std::fs::create_dir_all(&folder).unwrap();
    let log = root.path().join("node.log");
    let n = 3000u64;
    let mut node = Node::start(&config, &log);
    let body: String = (0..n).map(|i| format!("line {i}\n")).collect();
    drop_file(&folder, "lines.txt", body.as_bytes());
    wait_until(Duration::from_secs(60), "3000 suspended messages", || {
        status_json(&config)["suspended"] == n
    });
    node.stop();
    // The stopped send port's subscription: the node makes it.
    let text_now = std::fs::read_to_string(&config).unwrap() + LATER;
    std::fs::write(&config, text_now).unwrap();
    Node::start(&config, &log).stop();
    assert_eq!(status_json(&config)["suspended"], n);

    let start = |command: &str| {
        let child = sluice()
            .args(["suspended", command, "--all", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read as it runs, so that neither waits on a full pipe.
        std::thread::spawn(move || child.wait_with_output().unwrap())
    };
    let resume = start("resume");
    let terminate = start("terminate");
    let (resumed, terminated) = (resume.join().unwrap(), terminate.join().unwrap());
    let (r_done, r_matched) = adds_up(&resumed, "resumed");
    let (t_done, t_matched) = adds_up(&terminated, "terminated");
    assert!(r_matched <= n && t_matched <= n, "{r_matched} {t_matched}");
    assert_eq!(r_done + t_done, n, "resumed {r_done}, terminated {t_done}");
    let status = status_json(&config);
    assert_eq!(status["suspended"], 0);
    // The resumed messages wait for the stopped port; the rest are gone.
    assert_eq!(status["spool"], r_done, "{status}");
}
