//! `sluice publish` through the real binary: a message published from the
//! command line is routed on its typed properties and delivered by a running
//! node (which polls its queues; nothing wakes it), suspended when nothing
//! wants it, refused whole when a property is malformed, and stored for later
//! when no node runs.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::common::*;

/// `acme` wants ACME's refunds (an int comparison); `recent` routes on a
/// timestamp (against literals with another offset and to the microsecond),
/// a float and a bool; `never` wants a positive `n`.
const PORTS: &str = r#"
[send_ports.acme]
filter = 'order.customer == "ACME" and n < 0'
adapter = { type = "file", path = "acme", file_name = "%MessageId%.bin", create_folder = true }

[send_ports.recent]
filter = 'shipped_at > "2026-11-22T10:30:00+01:00" and shipped_at > "2026-11-22T10:00:00.123455Z" and weight > 1 and urgent == true and n > -10 and tag exists'
adapter = { type = "file", path = "recent", file_name = "%MessageId%.bin", create_folder = true }

[send_ports.never]
filter = 'n > 0'
adapter = { type = "file", path = "never", file_name = "%MessageId%.bin", create_folder = true }
"#;

/// A property of every type.
const PROPS: &[&str] = &[
    "order.customer=string:ACME",
    "n=int:-5",
    "weight=float:1.5",
    "urgent=bool:true",
    "shipped_at=timestamp:2026-11-22T10:00:00.123456Z",
    "tag=bytes:hex:00ff",
    "app.sig=bytes:base64:AP8=",
];

const MIB: usize = 1024 * 1024;

/// A config with the ports above, and a box made by a node that ran once.
fn setup(root: &Path) -> PathBuf {
    let config = write_config(root, PORTS);
    let mut node = Node::start(&config, &root.join("node.log"));
    node.stop();
    config
}

/// A fresh root, its config and a node running on it.
fn running() -> (tempfile::TempDir, PathBuf, Node) {
    let root = tempfile::tempdir().unwrap();
    let config = setup(root.path());
    let node = Node::start(&config, &root.path().join("node.log"));
    (root, config, node)
}

fn publish(config: &Path, body: Option<&Path>, props: &[&str], extra: &[&str]) -> Output {
    let mut cmd = sluice();
    cmd.args(["publish", "--config"]).arg(config);
    if let Some(b) = body {
        cmd.arg("--body").arg(b);
    }
    for p in props {
        cmd.args(["--prop", p]);
    }
    run(cmd.args(extra))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The message id in `published <id>: ...`.
fn published_id(out: &Output) -> String {
    assert!(out.status.success(), "publish failed: {}", stderr(out));
    let text = stdout(out);
    text.strip_prefix("published ")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("unexpected output: {text}"))
        .to_string()
}

/// Publish a 3 MiB body (from a file) with [`PROPS`]: it goes to `acme` and
/// `recent`. Returns its id and body.
fn publish_3_mib(root: &Path, config: &Path, seed: u64) -> (String, Vec<u8>) {
    let body = content(seed, 3 * MIB);
    let file = root.join(format!("body-{seed}.bin"));
    std::fs::write(&file, &body).unwrap();
    let out = publish(config, Some(&file), PROPS, &[]);
    let id = published_id(&out);
    assert_eq!(stdout(&out), format!("published {id}: queued for acme, recent\n"));
    (id, body)
}

/// Wait until message `id` is in `acme/` and `recent/`, byte-identical to
/// `body`, and gone from the box.
fn delivered_to_acme_and_recent(root: &Path, config: &Path, id: &str, body: &[u8]) {
    for port in ["acme", "recent"] {
        let delivered = root.join(port).join(format!("{id}.bin"));
        wait_until(Duration::from_secs(30), &format!("delivery to {port}"), || {
            delivered.exists()
        });
        assert!(std::fs::read(&delivered).unwrap() == body, "{port}: not byte-identical");
    }
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(config)["spool"] == 0
    });
}

#[test]
fn published_beside_a_running_node_routes_on_typed_properties_and_is_delivered() {
    let (root, config, mut node) = running();
    let (id, body) = publish_3_mib(root.path(), &config, 7);

    // Nothing tells the node; its send ports find the entries by polling.
    delivered_to_acme_and_recent(root.path(), &config, &id, &body);
    let status = status_json(&config);
    assert_eq!(
        (status["suspended"].as_u64(), status["content_chunks"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(names(&root.path().join("never")).is_empty());
    node.stop();
}

#[test]
fn no_subscriber_suspends_and_says_so() {
    let (root, config, mut node) = running();

    let out = publish(&config, None, &["order.customer=string:NOBODY"], &[]);
    let id = published_id(&out);
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("published {id}: no subscriber; suspended (#")) && text.ends_with(", resumable)\n"),
        "{text}"
    );

    // --json, with the body from stdin.
    let mut child = sluice()
        .args(["publish", "--json", "--body", "-", "--prop", "n=int:7", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"from stdin").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["routed"], serde_json::json!({"queued": ["never"]}), "{v}");
    let stdin_id = v["message_id"].as_str().unwrap().to_string();
    let delivered = root.path().join("never").join(format!("{stdin_id}.bin"));
    wait_until(Duration::from_secs(30), "the stdin message delivered", || {
        delivered.exists()
    });
    assert_eq!(std::fs::read(&delivered).unwrap(), b"from stdin");

    let list = run(sluice().args(["suspended", "list", "--config"]).arg(&config));
    assert!(stdout(&list).contains(&id), "{}", stdout(&list));
    assert!(stdout(&list).contains("no subscriber"), "{}", stdout(&list));
    let status = status_json(&config);
    assert_eq!(
        (status["suspended"].as_u64(), status["spool"].as_u64()),
        (Some(1), Some(1))
    );
    node.stop();
}

#[test]
fn a_bad_prop_publishes_nothing_and_names_the_argument() {
    let (root, config, mut node) = running();
    let file = root.path().join("body.bin");
    std::fs::write(&file, content(1, MIB)).unwrap();

    for (bad, says) in [
        ("n", "no `=`"),
        ("n=int", "no `TYPE:`"),
        ("n=integer:5", "unknown type `integer`"),
        ("n=int:five", "is not an int"),
        ("n=float:x", "is not a float"),
        ("n=bool:yes", "is not a bool"),
        ("t=timestamp:2026-11-22 10:00", "is not an RFC 3339 timestamp"),
        ("b=bytes:00ff", "hex:00ff"),
        ("b=bytes:hex:0g", "is not hex bytes"),
        ("b=bytes:base64:***", "is not base64"),
        ("order.=string:x", "is not a property key"),
        ("1st=string:x", "is not a property key"),
    ] {
        let out = publish(&config, Some(&file), &["order.customer=string:ACME", bad], &[]);
        assert!(!out.status.success(), "{bad}: accepted");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("--prop `{bad}`: ")) && err.contains(says),
            "{bad}: {err}"
        );
        assert!(stdout(&out).is_empty(), "{bad}: {}", stdout(&out));
    }
    // A body that cannot be read: nothing published either.
    let missing = root.path().join("missing.bin");
    let out = publish(&config, Some(&missing), &["n=int:-1"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("opening the body file"), "{}", stderr(&out));

    let status = status_json(&config);
    assert_eq!(
        (status["spool"].as_u64(), status["content_chunks"].as_u64()),
        (Some(0), Some(0)),
        "{status}"
    );
    node.stop();
}

#[test]
fn published_without_a_node_waits_in_the_box_until_one_runs() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), PORTS);
    // No box yet: say how to get one.
    let out = publish(&config, None, &[], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("has `sluice serve` run"), "{}", stderr(&out));

    let mut node = Node::start(&config, &root.path().join("node.log"));
    node.stop();
    let (id, body) = publish_3_mib(root.path(), &config, 9);

    // Every property is stored typed and promoted, with the CLI's own two.
    let show = run(sluice()
        .args(["messages", "show", &id, "--json", "--config"])
        .arg(&config));
    assert!(show.status.success(), "{}", stderr(&show));
    let m: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let prop = |ns: &str, name: &str| -> (String, serde_json::Value) {
        let p = m["context"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["namespace"] == ns && p["name"] == name)
            .unwrap_or_else(|| panic!("no {ns}.{name} in {m}"));
        assert_eq!(p["promoted"], true, "{p}");
        (p["type"].as_str().unwrap().to_string(), p["value"].clone())
    };
    use serde_json::json;
    assert_eq!(prop("order", "customer"), ("string".into(), json!("ACME")));
    assert_eq!(prop("", "n"), ("int".into(), json!(-5)));
    assert_eq!(prop("", "weight"), ("float".into(), json!(1.5)));
    assert_eq!(prop("", "urgent"), ("bool".into(), json!(true)));
    assert_eq!(
        prop("", "shipped_at"),
        ("timestamp".into(), json!("2026-11-22T10:00:00.123456Z"))
    );
    assert_eq!(prop("", "tag"), ("bytes".into(), json!("00ff")));
    assert_eq!(prop("app", "sig"), ("bytes".into(), json!("00ff")));
    assert_eq!(prop("publish", "by"), ("string".into(), json!("cli")));
    assert_eq!(prop("", "received_at").0, "timestamp");
    assert_eq!(m["parts"][0]["size"], 3 * MIB as u64);
    assert_eq!(status_json(&config)["queued"]["acme"], 1);

    let mut node = Node::start(&config, &root.path().join("node.log"));
    delivered_to_acme_and_recent(root.path(), &config, &id, &body);
    node.stop();
}

/// The box a configuration names: `store` (a relative path from the file's
/// folder), or `SLUICE_STORE`, which wins over it; the node and the CLI open
/// the same one. An unknown or unbuilt scheme is refused before anything runs.
#[test]
fn the_store_url_names_the_box_and_the_environment_wins() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("store = \"sqlite:boxes/main.sqlite\"\n{text}")).unwrap();
    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);
    node.stop();
    assert!(root.path().join("boxes/main.sqlite").exists());
    assert!(!root.path().join("data/msgbox.sqlite").exists());
    assert!(
        root.path().join("data/node-id").exists(),
        "the node id is kept with the data"
    );

    let elsewhere = root.path().join("env.sqlite");
    let url = format!("sqlite:{}", elsewhere.display());
    let with_env = |url: &str| {
        let mut c = sluice();
        c.env("SLUICE_STORE", url);
        c
    };
    let mut node = Node::start_with(with_env(&url), &config, &log);
    node.stop();
    assert!(elsewhere.exists(), "SLUICE_STORE wins over `store`");
    let out = run(with_env(&url).args(["publish", "--config"]).arg(&config));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(with_env(&url).args(["status", "--json", "--config"]).arg(&config));
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["spool"], 1, "published into the box SLUICE_STORE names");
    assert_eq!(status_json(&config)["spool"], 0, "not into the one `store` names");

    let out = run(with_env("mysql://db/sluice").args(["status", "--config"]).arg(&config));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("SLUICE_STORE") && err.contains("unknown scheme `mysql`") && err.contains("sqlite:"),
        "{err}"
    );
    let out = run(with_env("postgres://postgres@127.0.0.1:5432/sluice")
        .args(["serve", "--config"])
        .arg(&config));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not built yet"), "{}", stderr(&out));
}
