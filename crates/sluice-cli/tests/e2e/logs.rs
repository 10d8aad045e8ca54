//! The node's log as an operator reads it (issue 13): JSON lines, a filter
//! that is checked, and per-message lines when asked for.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

/// `log_messages = true` at the top of a quickstart-style configuration.
fn with_log_messages(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, format!("log_messages = true\n{text}")).unwrap();
}

/// With `log_messages = true` and `SLUICE_LOG_FORMAT=json`, every line of
/// the log is one JSON object, and each message received and delivered
/// has its line at info: location, message id, the file's name and size;
/// send port, message id, destination.
#[test]
fn json_lines_with_one_line_per_received_and_delivered_message() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    with_log_messages(&config);
    let mut cmd = sluice();
    cmd.env("SLUICE_LOG_FORMAT", "json");
    let mut node = Node::start_with(cmd, &config, &root.path().join("node.log"));
    drop_file(&root.path().join("in"), "a.xml", b"<a/>\n");
    wait_until(Duration::from_secs(30), "delivered twice", || {
        names(&root.path().join("out")).len() == 1 && names(&root.path().join("xml")).len() == 1
    });
    node.stop();
    let lines: Vec<serde_json::Value> = node
        .log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let received: Vec<_> = lines.iter().filter(|l| l["message"] == "message received").collect();
    assert_eq!(received.len(), 1, "{lines:#?}");
    let r = received[0];
    assert_eq!(
        (&r["level"], &r["receive_location"], &r["source"], &r["bytes"], &r["to"]),
        (
            &"INFO".into(),
            &"in-folder".into(),
            &"a.xml".into(),
            &5.into(),
            &"out, xml".into()
        ),
        "{r}"
    );
    let id = r["message_id"].as_str().expect("a message id");
    let mut delivered: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["message"] == "delivered" && l["level"] == "INFO" && l["message_id"] == id)
        .map(|l| (l["send_port"].to_string(), l["to"].to_string()))
        .collect();
    delivered.sort();
    assert_eq!(delivered.len(), 2, "{lines:#?}");
    assert!(
        delivered[0].0 == "\"out\"" && delivered[0].1.ends_with("/out/a.xml\""),
        "{delivered:?}"
    );
    assert!(
        delivered[1].0 == "\"xml\"" && delivered[1].1.ends_with("/xml/a.xml\""),
        "{delivered:?}"
    );
}

/// Without `log_messages`, the default level has no line per message.
#[test]
fn no_line_per_message_at_info_by_default() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("in"), "a.txt", b"hello");
    wait_until(Duration::from_secs(30), "delivered", || {
        names(&root.path().join("out")).len() == 1
    });
    node.stop();
    let log = node.log_text();
    assert!(log.contains("node running") && log.contains("stopped"), "{log}");
    assert!(!log.contains("message received") && !log.contains("delivered"), "{log}");
}

/// Run a command that must end by itself at once; a node that started
/// instead is stopped, and the test fails.
fn run_briefly(cmd: &mut std::process::Command) -> std::process::Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sluice");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap");
            panic!("still running after 20 s: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// A `SLUICE_LOG` that is not a filter, or a `SLUICE_LOG_FORMAT` that is not
/// a format, stops the command before anything starts (exit status 2),
/// saying why with an example; it is never silently replaced by `info`.
#[test]
fn a_log_setting_that_is_not_valid_is_an_error_at_start() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    for (var, value, wanted) in [
        (
            "SLUICE_LOG",
            "warning",
            "error[invalid_argument]: SLUICE_LOG `warning`: `warning` is not a level",
        ),
        (
            "SLUICE_LOG",
            "info,sluice_host=loud",
            "error[invalid_argument]: SLUICE_LOG `info,sluice_host=loud` is not a valid filter",
        ),
        (
            "SLUICE_LOG_FORMAT",
            "xml",
            "error[invalid_argument]: SLUICE_LOG_FORMAT `xml` is not a log format: use text (the default) or json",
        ),
    ] {
        for command in ["serve", "status"] {
            let out = run_briefly(sluice().args([command, "--config"]).arg(&config).env(var, value));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.code() == Some(2) && stderr.starts_with(wanted),
                "{command} with {var}={value}: {:?} {stderr}",
                out.status
            );
            if var == "SLUICE_LOG" {
                assert!(stderr.contains("e.g. SLUICE_LOG=debug"), "{stderr}");
            }
        }
    }
    assert!(!root.path().join("data").exists(), "nothing started");
}
