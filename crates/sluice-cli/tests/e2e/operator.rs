//! The small things an operator meets at the command line (issue 13):
//! tables that line up, a port name with a typo, a `--where` that must not
//! reach fault messages, a summary and an exit message that agree.

use std::path::{Path, PathBuf};

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// A configuration of `body` (with fast polling) in a fresh folder.
fn config_of(root: &Path, body: &str) -> PathBuf {
    for dir in ["in", "other"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let config = root.join("sluice.toml");
    std::fs::write(&config, format!("data_dir = \"data\"\n{body}")).unwrap();
    config
}

const FAST: &str = r#"settle = "200ms", poll_interval = "100ms""#;

/// A FILE send port to a folder that does not exist: each message is
/// suspended at its first failure.
fn failing_port(name: &str, filter: &str, path: &str) -> String {
    format!(
        "\n[send_ports.{name}]\nfilter = '{filter}'\n\
         adapter = {{ type = \"file\", path = \"{path}\", create_folder = false }}\n\
         retry = {{ count = 0, interval = \"1s\" }}\n"
    )
}

/// `status` widens its name column to the longest name, so a long send
/// port name does not run into its count; every time printed has three
/// digits of milliseconds, so the time columns line up.
#[test]
fn tables_line_up_whatever_the_names_and_times() {
    let root = tempfile::tempdir().unwrap();
    let long = "a-send-port-with-a-rather-long-name";
    let config = write_config(
        root.path(),
        &format!(
            "\n[send_ports.{long}]\nfilter = 'receive.port == \"in\"'\n\
             adapter = {{ type = \"file\", path = \"long\" }}\nenabled = false\n"
        ),
    );
    let mut node = Node::start(&config, &root.path().join("node.log"));
    for i in 0..3 {
        drop_file(&root.path().join("in"), &format!("f{i}.txt"), b"hello");
    }
    wait_until(Duration::from_secs(30), "delivered", || {
        names(&root.path().join("out")).len() == 3
    });
    let (status, _) = expect(&config, &["status"], 0);
    node.stop();
    let queued: Vec<&str> = status.lines().skip_while(|l| *l != "queued").skip(1).collect();
    assert_eq!(queued.len(), 3, "{status}");
    let column = |line: &str| line.rfind(' ').map(|at| at + 1);
    assert!(
        queued.iter().all(|l| column(l) == column(queued[0])),
        "counts in one column:\n{status}"
    );
    assert!(
        queued.iter().any(|l| l.starts_with(&format!("  {long}  3"))),
        "{status}"
    );
    let hosts: Vec<&str> = status.lines().filter(|l| l.starts_with("  default ")).collect();
    assert!(
        hosts.len() == 1 && hosts[0].starts_with(&format!("  {:<w$}open", "default", w = long.len() + 2)),
        "{status}"
    );

    let (list, _) = expect(&config, &["messages", "list"], 0);
    let times: Vec<&str> = list
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(times.len(), 3, "{list}");
    for t in times {
        let millis = t.strip_suffix('Z').and_then(|t| t.rsplit_once('.')).map(|(_, ms)| ms);
        assert!(
            t.len() == 24 && millis.is_some_and(|ms| ms.len() == 3 && ms.bytes().all(|b| b.is_ascii_digit())),
            "{t} in {list}"
        );
    }
}

/// `suspended list --port P` (or `--location L`) with a name that is
/// neither configured nor known in the box says so (a typo is not an
/// empty list); a known port with nothing suspended is an empty list.
#[test]
fn listing_an_unknown_port_or_location_says_it_does_not_exist() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    node.stop();
    for (flags, wanted) in [
        (
            &["--port", "ot"][..],
            "error[not_found]: no send port `ot` is configured or known in the box (send ports: out, xml)",
        ),
        (
            &["--location", "in"],
            "error[not_found]: no receive location `in` is configured (receive locations: in-folder)",
        ),
        (
            &["--port", "ot", "--json"],
            "error[not_found]: no send port `ot` is configured",
        ),
    ] {
        let (out, err) = expect(&config, &[&["suspended", "list"][..], flags].concat(), 1);
        assert!(out.is_empty() && err.starts_with(wanted), "{flags:?}: {out}{err}");
    }
    let (out, _) = expect(&config, &["suspended", "list", "--port", "out"], 0);
    assert_eq!(out, "(no suspended message matches port `out`)\n");
    let (out, _) = expect(&config, &["suspended", "list", "--location", "in-folder", "--json"], 0);
    assert_eq!(out, "[]\n");
}

/// A fault message carries its failed message's properties, so `--where`
/// would match it too: without `--include-faults`, `--where` leaves fault
/// messages out, in `list` and in bulk runs alike.
#[test]
fn where_leaves_fault_messages_alone_unless_asked() {
    let root = tempfile::tempdir().unwrap();
    let config = config_of(
        root.path(),
        &format!(
            "[receive_ports.in.locations.in-folder]\nadapter = {{ type = \"file\", path = \"in\", {FAST} }}\n{}{}",
            failing_port("deliver", "receive.port == \"in\"", "missing"),
            failing_port("fault-handler", "fault.message_id exists", "missing-too")
        ),
    );
    let mut node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("in"), "a.txt", b"hello");
    // The original at `deliver`, then its fault message at `fault-handler`.
    wait_until(Duration::from_secs(30), "two suspended entries", || {
        status_json(&config)["suspended"] == 2
    });
    node.stop();
    let ports = |flags: &[&str]| -> Vec<String> {
        let (out, _) = expect(&config, &[&["suspended", "list", "--json"][..], flags].concat(), 0);
        let list: Value = serde_json::from_str(&out).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| e["subscriber"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let by_name = ["--where", "file.name == \"a.txt\""];
    assert_eq!(ports(&[]), ["deliver", "fault-handler"]);
    assert_eq!(ports(&by_name), ["deliver"]);
    assert_eq!(
        ports(&[&by_name[..], &["--include-faults"]].concat()),
        ["deliver", "fault-handler"]
    );
    let (_, err) = expect(&config, &["suspended", "list", "--include-faults"], 2);
    assert!(err.contains("--where"), "{err}");
    let (out, _) = expect(&config, &[&["suspended", "terminate"][..], &by_name].concat(), 0);
    assert!(
        out.ends_with("terminated 1 of 1; 0 failed, 0 skipped, 0 taken by another operation\n"),
        "{out}"
    );
    assert_eq!(ports(&[]), ["fault-handler"], "the fault message is left alone");
}

/// A bulk resume in which entries are resumed, skipped and failed: the
/// exit message counts them as the summary does.
#[test]
fn a_bulk_summary_and_its_exit_message_agree() {
    let root = tempfile::tempdir().unwrap();
    let config = config_of(
        root.path(),
        &format!(
            r#"
[receive_ports.in.locations.in-folder]
adapter = {{ type = "file", path = "in", mask = "*.txt", {FAST} }}

[receive_ports.in.locations.packed]
adapter = {{ type = "file", path = "in", mask = "*.gz", {FAST} }}
pipeline = {{ decode = [{{ type = "gzip" }}] }}

[receive_ports.other.locations.other]
adapter = {{ type = "file", path = "other", {FAST} }}
{}"#,
            failing_port("out", "receive.port == \"in\"", "out")
        ),
    );
    let mut node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("in"), "a.txt", b"hello");
    drop_file(&root.path().join("in"), "b.gz", b"not gzip");
    drop_file(&root.path().join("other"), "c.txt", b"nobody wants it");
    wait_until(Duration::from_secs(30), "three suspended entries", || {
        status_json(&config)["suspended"] == 3
    });
    node.stop();
    std::fs::create_dir(root.path().join("out")).unwrap();
    let (out, err) = expect(&config, &["suspended", "resume", "--all"], 1);
    assert!(
        out.ends_with("resumed 1 of 3; 1 failed, 1 skipped, 0 taken by another operation\n"),
        "{out}"
    );
    assert!(
        err.ends_with(
            "error[no_subscriber]: 1 of 3 suspended message(s) failed (1 resumed, 1 skipped, 0 taken by another operation)\n"
        ),
        "{err}"
    );
}
