//! End-to-end runs of the real `sluice` binary: per-host throttling, stopped
//! send ports, the Prometheus endpoint and what `sluice status` says.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

/// `GET path` on the node's metrics endpoint: (status code, content type, body).
fn http_get(address: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(address).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (code, content_type, body.to_string())
}

/// The value of the sample `series` (name and labels, exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The metrics address the running node reports (it listens on port 0).
fn metrics_address(config: &Path) -> String {
    let mut address = None;
    wait_until(Duration::from_secs(30), "the node's status report", || {
        address = status_json(config)["node"]["metrics_address"]
            .as_str()
            .map(String::from);
        address.is_some()
    });
    address.unwrap_or_default()
}

const METRICS: &str = "\n[metrics]\naddress = \"127.0.0.1:0\"\n";

/// A node on the test config with metrics on and `[hosts.default]` set to
/// `limits`: (config, node, metrics address).
fn start_node_with_host(root: &Path, limits: &str) -> (PathBuf, Node, String) {
    let config = write_config(root, &format!("{METRICS}\n[hosts.default]\n{limits}\n"));
    let node = Node::start(&config, &root.join("node.log"));
    let address = metrics_address(&config);
    (config, node, address)
}

/// Files of 3 MiB against a 4 MiB bytes budget: only one fits at a time, so
/// the host throttles (seen on /metrics while the files are going through,
/// and never more bytes in flight than the budget), and every file still
/// arrives byte-identical.
#[test]
fn a_small_bytes_budget_throttles_and_every_file_arrives() {
    const FILES: u64 = 24;
    const SIZE: usize = 3 * 1024 * 1024;
    let root = tempfile::tempdir().unwrap();
    let (config, mut node, address) = start_node_with_host(root.path(), "max_in_flight_bytes = \"4MiB\"");
    for i in 0..FILES {
        drop_file(&root.path().join("in"), &format!("f{i}.bin"), &content(i, SIZE));
    }
    let engaged = r#"sluice_throttle_engagements_total{host="default",reason="bytes"}"#;
    let mut seen_engaged = false;
    let mut most_bytes: f64 = 0.0;
    wait_until(Duration::from_secs(120), "every file in out/", || {
        let (_, _, text) = http_get(&address, "/metrics");
        seen_engaged |= sample(&text, engaged).unwrap_or(0.0) > 0.0;
        most_bytes = most_bytes.max(sample(&text, r#"sluice_bytes_in_flight{host="default"}"#).unwrap_or(0.0));
        names(&root.path().join("out")).len() == FILES as usize
    });
    assert!(seen_engaged, "throttling never showed on /metrics");
    assert!(most_bytes <= (4 * 1024 * 1024) as f64, "{most_bytes} bytes in flight");
    for i in 0..FILES {
        let got = std::fs::read(root.path().join(format!("out/f{i}.bin"))).unwrap();
        assert!(got == content(i, SIZE), "f{i}.bin differs");
    }
    // The node writes its report every second: the files may all have
    // gone through before the next one.
    let mut host = serde_json::Value::Null;
    wait_until(Duration::from_secs(10), "status.json to count the engagements", || {
        host = status_json(&config)["node"]["hosts"]["default"].clone();
        host["engagements"].as_u64() > Some(0)
    });
    assert_eq!(host["limits"]["max_in_flight_bytes"], 4 * 1024 * 1024);
    node.stop();
}

/// A message mark of 2 (resume at 1) shared by the receive location and two
/// send ports: the host closes over and over (counted on /metrics by
/// reason), and still every file arrives: nothing waits on anything that
/// waits on it.
#[test]
fn a_small_message_mark_throttles_and_nothing_stalls() {
    const FILES: u64 = 200;
    let root = tempfile::tempdir().unwrap();
    let (config, mut node, address) = start_node_with_host(root.path(), "max_in_flight = 2\nresume_in_flight = 1");
    for i in 0..FILES {
        let name = if i % 4 == 0 {
            format!("f{i}.xml")
        } else {
            format!("f{i}.txt")
        };
        drop_file(&root.path().join("in"), &name, &content(i, 2000));
    }
    let mut most_in_flight: f64 = 0.0;
    wait_until(Duration::from_secs(120), "every file in out/ and xml/", || {
        let (_, _, text) = http_get(&address, "/metrics");
        most_in_flight =
            most_in_flight.max(sample(&text, r#"sluice_messages_in_flight{host="default"}"#).unwrap_or(0.0));
        names(&root.path().join("out")).len() == FILES as usize
            && names(&root.path().join("xml")).len() == (FILES / 4) as usize
    });
    let text = http_get(&address, "/metrics").2;
    let engaged = sample(
        &text,
        r#"sluice_throttle_engagements_total{host="default",reason="messages"}"#,
    );
    assert!(engaged > Some(0.0), "{text}");
    assert!(most_in_flight <= 2.0, "{most_in_flight} in flight");
    let host = &status_json(&config)["node"]["hosts"]["default"];
    assert_eq!(
        (
            host["limits"]["max_in_flight"].as_u64(),
            host["limits"]["resume_in_flight"].as_u64()
        ),
        (Some(2), Some(1))
    );
    node.stop();
}

/// `enabled = false` on a send port: its subscription stays, so files are
/// received and queued for it (not suspended) while nothing is delivered;
/// after a restart with the port enabled, every one is delivered.
#[test]
fn a_stopped_send_port_queues_until_it_starts() {
    const FILES: u64 = 50;
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let text = std::fs::read_to_string(&config).unwrap();
    let stopped = text.replace("[send_ports.out]\n", "[send_ports.out]\nenabled = false\n");
    assert_ne!(stopped, text);
    std::fs::write(&config, &stopped).unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    for i in 0..FILES {
        drop_file(
            &root.path().join("in"),
            &format!("f{i}.txt"),
            &content(i, 1000 + i as usize),
        );
    }
    wait_until(
        Duration::from_secs(60),
        "every file received and queued for `out`",
        || {
            let s = status_json(&config);
            s["queued"]["out"] == FILES && names(&root.path().join("in")).is_empty()
        },
    );
    let s = status_json(&config);
    assert_eq!((s["suspended"].as_u64(), s["spool"].as_u64()), (Some(0), Some(FILES)));
    assert!(names(&root.path().join("out")).is_empty(), "a stopped port delivered");
    node.stop();
    assert!(
        status_json(&config)["node"].is_null(),
        "a cleanly stopped node leaves no report"
    );

    std::fs::write(&config, &text).unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    wait_until(Duration::from_secs(60), "every queued file delivered", || {
        names(&root.path().join("out")).len() == FILES as usize
    });
    for i in 0..FILES {
        let got = std::fs::read(root.path().join(format!("out/f{i}.txt"))).unwrap();
        assert!(got == content(i, 1000 + i as usize), "f{i}.txt differs");
    }
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    node.stop();
}

/// What /metrics says after a run: the counters match the files, the queue
/// is empty, the host is open; anything but /metrics is 404; `sluice status`
/// shows the host.
#[test]
fn metrics_count_what_went_through() {
    const FILES: u64 = 30;
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), METRICS);
    let mut node = Node::start(&config, &root.path().join("node.log"));
    let address = metrics_address(&config);
    for i in 0..FILES {
        drop_file(&root.path().join("in"), &format!("f{i}.txt"), &content(i, 100));
    }
    drop_file(&root.path().join("in"), "one.xml", b"<one/>");
    let delivered =
        |text: &str, port: &str| sample(text, &format!("sluice_messages_delivered_total{{port=\"{port}\"}}"));
    let mut text = String::new();
    wait_until(Duration::from_secs(60), "every delivery counted, queues empty", || {
        text = http_get(&address, "/metrics").2;
        delivered(&text, "out") == Some((FILES + 1) as f64)
            && delivered(&text, "xml") == Some(1.0)
            && sample(&text, r#"sluice_queue_depth{subscriber="out"}"#) == Some(0.0)
    });
    assert_eq!(
        sample(&text, r#"sluice_messages_published_total{location="in-folder"}"#),
        Some((FILES + 1) as f64),
        "{text}"
    );
    assert!(!text.contains("sluice_messages_suspended_total{"), "{text}");
    assert_eq!(sample(&text, r#"sluice_throttled{host="default"}"#), Some(0.0));
    assert_eq!(sample(&text, r#"sluice_messages_in_flight{host="default"}"#), Some(0.0));
    assert!(
        sample(&text, "sluice_process_resident_memory_bytes").unwrap_or(0.0) > 1e6,
        "{text}"
    );
    let (code, content_type, _) = http_get(&address, "/metrics");
    assert_eq!(code, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert_eq!(http_get(&address, "/other").0, 404);

    let out = run(sluice().args(["status", "--config"]).arg(&config));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains(&format!("http://{address}/metrics")), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.trim_start().starts_with("default") && l.contains("open")),
        "{shown}"
    );
    node.stop();
}

/// A metrics address that is taken stops the start, naming `metrics.address`.
#[test]
fn a_taken_metrics_address_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), &format!("\n[metrics]\naddress = \"{address}\"\n"));
    let out = run(sluice().args(["serve", "--config"]).arg(&config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("metrics.address {address}")) && err.contains("cannot listen"),
        "{err}"
    );
}

/// Suspended messages never count toward throttling: with a message mark
/// of 3, fifty suspended messages (no subscriber) leave the host open with
/// nothing in flight, and files sent one at a time go through without it
/// ever closing.
#[test]
fn suspended_messages_do_not_count_toward_throttling() {
    let root = tempfile::tempdir().unwrap();
    let (config, mut node, address) = start_node_with_host(root.path(), "max_in_flight = 3\nresume_in_flight = 2");
    for i in 0..50 {
        let out = run(sluice()
            .args(["publish", "--config"])
            .arg(&config)
            .args(["--prop", &format!("nobody.n=int:{i}")]));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    wait_until(Duration::from_secs(30), "50 suspended", || {
        status_json(&config)["suspended"] == 50
    });
    let host = &status_json(&config)["node"]["hosts"]["default"];
    assert_eq!(
        (host["throttled"].as_bool(), host["in_flight"].as_u64()),
        (Some(false), Some(0)),
        "{host}"
    );
    for i in 0..5 {
        drop_file(&root.path().join("in"), &format!("f{i}.txt"), &content(i, 1000));
        wait_until(Duration::from_secs(30), "the file in out/", || {
            names(&root.path().join("out")).len() == i as usize + 1
        });
    }
    let text = http_get(&address, "/metrics").2;
    for reason in ["messages", "bytes"] {
        let engaged = sample(
            &text,
            &format!(r#"sluice_throttle_engagements_total{{host="default",reason="{reason}"}}"#),
        );
        assert!(engaged.unwrap_or(0.0) == 0.0, "the host closed ({reason}): {text}");
    }
    let host = &status_json(&config)["node"]["hosts"]["default"];
    assert_eq!(host["throttled"], false, "{host}");
    assert_eq!(status_json(&config)["suspended"], 50);
    node.stop();
}
