//! Suspended messages through the real binary: a file nobody subscribes to is
//! suspended, stays suspended while nothing matches, and is delivered when a
//! matching send port exists and it is resumed. Terminate drops it.

mod common;

use std::time::Duration;

use common::*;

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
