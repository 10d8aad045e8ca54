//! The chaos send port in the real binary: half the attempts fail and are
//! retried by the port's policy, every delivery leaks a mebibyte.

use std::time::Duration;

use crate::common::*;

/// FILE receive → chaos send with `fail_rate = 0.5` and `leak_per_message =
/// "1MiB"`: all 40 files arrive in out/ byte-identical, once each, after
/// retries; the box empties with nothing suspended; the node's RSS grows by
/// at least 30 MiB (40 MiB leaked, every page written).
#[test]
fn a_chaos_port_fails_half_its_attempts_delivers_everything_and_leaks() {
    const FILES: u64 = 40;
    let root = tempfile::tempdir().unwrap();
    let (inp, out) = (root.path().join("in"), root.path().join("out"));
    std::fs::create_dir_all(&inp).unwrap();
    let config = root.path().join("sluice.toml");
    // 60 retries at fail_rate 0.5: a message is suspended once in 2^61.
    std::fs::write(
        &config,
        r#"data_dir = "data"

[receive_ports.in.locations.in-folder]
adapter = { type = "file", path = "in", mask = "*", settle = "200ms", poll_interval = "100ms" }

[send_ports.out]
filter = 'receive.port == "in"'
adapter = { type = "chaos", path = "out", file_name = "%SourceFileName%", create_folder = true, fail_rate = 0.5, leak_per_message = "1MiB" }
retry = { count = 60, interval = "100ms", backoff = 1 }
"#,
    )
    .unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    let pid = node.child.as_ref().unwrap().id();
    let before = vm_rss(pid);
    let name_of = |i: u64| format!("f{i:02}.dat");
    let size_of = |i: u64| 100 + (i as usize * 131) % 5000;
    for i in 0..FILES {
        drop_file(&inp, &name_of(i), &content(i, size_of(i)));
    }
    wait_until(Duration::from_secs(120), "40 files in out/", || {
        names(&out).len() as u64 >= FILES
    });
    wait_until(Duration::from_secs(60), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    let after = vm_rss(pid);
    let status = status_json(&config);
    assert_eq!(status["suspended"].as_u64(), Some(0), "{status}");
    let expected: Vec<String> = (0..FILES).map(name_of).collect();
    assert_eq!(names(&out), expected, "out/ holds each file once, nothing else");
    for i in 0..FILES {
        let data = std::fs::read(out.join(name_of(i))).unwrap();
        assert!(data == content(i, size_of(i)), "{} is not byte-identical", name_of(i));
    }
    assert!(names(&inp).is_empty(), "{:?}", names(&inp));
    let log = node.log_text();
    assert!(
        log.contains("a chaos send port is configured"),
        "the node warns of the chaos port:\n{log}"
    );
    let failures = log.matches("chaos failure").count();
    assert!(failures > 0, "no attempt failed:\n{log}");
    assert!(
        !log.contains("an identical copy was already there"),
        "a file was written twice:\n{log}"
    );
    eprintln!(
        "chaos: {failures} failed attempts logged; RSS {} MiB before, {} MiB after",
        before >> 20,
        after >> 20
    );
    assert!(
        after >= before + (30 << 20),
        "RSS grew by {} MiB only ({} MiB before, {} MiB after)",
        after.saturating_sub(before) >> 20,
        before >> 20,
        after >> 20
    );
    node.stop();
}
