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
