//! The CLI as an operator uses it in a shell (issue 13): output piped into
//! a reader that goes away.

use std::process::Stdio;

use crate::common::*;

/// `sluice status | true`, `sluice messages tracking | head -1`, `sluice
/// suspended list | head -3`: when the reader of standard output has gone,
/// the command ends quietly with status 0 (no panic, no error), like any
/// Unix tool. The pipe's read end is closed before the command starts, so
/// its first write fails.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    for i in 0..3 {
        drop_file(&root.path().join("in"), &format!("f{i}.txt"), b"hello");
    }
    wait_until(std::time::Duration::from_secs(30), "delivered", || {
        names(&root.path().join("out")).len() == 3
    });
    node.stop();
    let commands: &[&[&str]] = &[
        &["status"],
        &["status", "--json"],
        &["messages", "tracking"],
        &["messages", "tracking", "--json"],
        &["messages", "list"],
        &["suspended", "list"],
    ];
    for args in commands {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = sluice()
            .args(*args)
            .arg("--config")
            .arg(&config)
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "{args:?}: {:?}, stderr: {stderr}",
            out.status
        );
    }
}

/// SIGHUP (a service manager's reload) during a load of 5,000 files: the
/// node reloads its unchanged file (nothing restarts), keeps running, and
/// every file is delivered exactly once (one `completed` tracking event
/// each); the node then stops cleanly. (Reloads that change things:
/// `reload::`.)
#[test]
fn sighup_during_a_load_loses_nothing_and_delivers_nothing_twice() {
    const FILES: usize = 5000;
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    let pid = node.child.as_ref().expect("running").id().to_string();
    for i in 0..FILES {
        drop_file(
            &root.path().join("in"),
            &format!("f{i}.txt"),
            format!("file {i}").as_bytes(),
        );
        if i % 1000 == 500 {
            let hup = std::process::Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap();
            assert!(hup.success());
        }
    }
    for _ in 0..3 {
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(hup.success());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    wait_until(std::time::Duration::from_secs(180), "every file in out/", || {
        names(&root.path().join("out")).len() == FILES
    });
    assert!(
        node.child.as_mut().expect("running").try_wait().unwrap().is_none(),
        "the node is still running after SIGHUP; log:\n{}",
        node.log_text()
    );
    for i in (0..FILES).step_by(97) {
        let got = std::fs::read(root.path().join(format!("out/f{i}.txt"))).unwrap();
        assert_eq!(got, format!("file {i}").as_bytes());
    }
    wait_until(std::time::Duration::from_secs(30), "the box to empty", || {
        status_json(&config)["spool"] == 0
    });
    let out = run(sluice()
        .args(["messages", "tracking", "--json", "--config"])
        .arg(&config));
    let events = json_of(&out, "messages tracking");
    let completed = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "completed")
        .count();
    assert_eq!(completed, FILES, "each message completed exactly once");
    assert!(node.log_text().contains("SIGHUP received"), "logged");
    assert!(
        node.log_text().contains("configuration reloaded: nothing changed"),
        "log:\n{}",
        node.log_text()
    );
    node.stop();
}
