//! The HTTP receive location through the real binary: 202 only once a
//! message is durable, gzip decoded on the way in, caps, auth, promotion,
//! and clients that misbehave. Driven with curl and raw TCP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

fn start(root: &Path) -> (Node, std::path::PathBuf, u16) {
    let port = free_port();
    let config = root.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "data"

[receive_ports.web.locations.web-in]
adapter = {{ type = "http", address = "127.0.0.1:{port}", path = "/in", max_body = "32MiB", max_decoded = "48MiB", promote_headers = ["x-customer"], auth = {{ type = "bearer", token = "s3cret" }}, idle_timeout = "1s", header_timeout = "1s" }}

[send_ports.out]
filter = 'receive.port == "web"'
adapter = {{ type = "file", path = "out", file_name = "%MessageId%", create_folder = true }}

[send_ports.acme]
filter = 'http.header.x-customer == "ACME" and http.method == "PUT"'
adapter = {{ type = "file", path = "acme", file_name = "%MessageId%", create_folder = true }}
"#
        ),
    )
    .unwrap();
    let node = Node::start(&config, &root.join("node.log"));
    wait_until(Duration::from_secs(30), "the HTTP location to listen", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (node, config, port)
}

/// curl a body file; returns (status, response body).
fn post(port: u16, path: &str, file: &Path, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .args(extra)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn message_id(answer: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{answer}: {e}"));
    v["message_id"].as_str().unwrap().to_string()
}

#[test]
fn posts_are_published_once_durable_and_bad_ones_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let (mut node, config, port) = start(root.path());
    let dir = root.path();
    let auth = ["-H", "Authorization: Bearer s3cret"];
    let body = content(1, 20 << 20);
    std::fs::write(dir.join("body.bin"), &body).unwrap();

    // Credentials.
    let (code, _) = post(port, "/in", &dir.join("body.bin"), &[]);
    assert_eq!(code, 401);
    let (code, _) = post(
        port,
        "/in",
        &dir.join("body.bin"),
        &["-H", "Authorization: Bearer wrong"],
    );
    assert_eq!(code, 401);
    // Path and method.
    let (code, _) = post(port, "/elsewhere", &dir.join("body.bin"), &auth);
    assert_eq!(code, 404);
    let (code, _) = post(port, "/in", &dir.join("body.bin"), &["-X", "PATCH", auth[0], auth[1]]);
    assert_eq!(code, 405);
    // Each refusal is logged (status, reason, client, path), never the
    // credentials. (Rate-limited: at most 20 lines every 10 s.)
    wait_until(Duration::from_secs(10), "the refusals in the log", || {
        let log = node.log_text();
        ["status=401", "status=404", "status=405"]
            .iter()
            .all(|s| log.lines().any(|l| l.contains("request refused") && l.contains(s)))
    });
    let log = node.log_text();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("request refused")).collect();
    assert!(
        refused.iter().any(|l| l.contains("status=401")
            && l.contains("client=127.0.0.1")
            && l.contains("missing or wrong credentials")),
        "{refused:?}"
    );
    assert!(
        !log.contains("s3cret") && !log.contains("Bearer wrong"),
        "no credentials in the log"
    );

    // A plain 20 MiB PUT, promoted header: to out/ and acme/.
    let (code, answer) = post(
        port,
        "/in",
        &dir.join("body.bin"),
        &["-X", "PUT", "-H", "X-Customer: ACME", auth[0], auth[1]],
    );
    assert_eq!(code, 202, "{answer}");
    let plain_id = message_id(&answer);
    // gzip on the wire, stored decoded.
    std::fs::write(dir.join("body.gz"), gzip(&body)).unwrap();
    let (code, answer) = post(
        port,
        "/in",
        &dir.join("body.gz"),
        &["-H", "Content-Encoding: gzip", auth[0], auth[1]],
    );
    assert_eq!(code, 202, "{answer}");
    let gz_id = message_id(&answer);

    // Refused, and nothing of them published.
    let packed = gzip(&body);
    std::fs::write(dir.join("cut.gz"), &packed[..packed.len() / 2]).unwrap();
    let (code, answer) = post(
        port,
        "/in",
        &dir.join("cut.gz"),
        &["-H", "Content-Encoding: gzip", auth[0], auth[1]],
    );
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("cannot be decoded"), "{answer}");
    std::fs::write(dir.join("big.bin"), content(2, 40 << 20)).unwrap();
    let (code, answer) = post(port, "/in", &dir.join("big.bin"), &auth);
    assert_eq!(code, 413, "{answer}");
    // Chunked (no Content-Length): the cap is found while reading.
    let (code, answer) = post(
        port,
        "/in",
        &dir.join("big.bin"),
        &["-H", "Transfer-Encoding: chunked", auth[0], auth[1]],
    );
    assert_eq!(code, 413, "{answer}");
    std::fs::write(dir.join("bomb.gz"), gzip(&vec![0u8; 60 << 20])).unwrap();
    let (code, answer) = post(
        port,
        "/in",
        &dir.join("bomb.gz"),
        &["-H", "Content-Encoding: gzip", auth[0], auth[1]],
    );
    assert_eq!(code, 413, "{answer}");
    assert!(answer.contains("decoded body is over"), "{answer}");
    let (code, _) = post(
        port,
        "/in",
        &dir.join("body.bin"),
        &["-H", "Content-Encoding: br", auth[0], auth[1]],
    );
    assert_eq!(code, 415);

    let out = dir.join("out");
    wait_until(Duration::from_secs(60), "two messages delivered", || {
        names(&out).len() == 2
    });
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    node.stop();
    assert!(std::fs::read(out.join(&plain_id)).unwrap() == body);
    assert!(
        std::fs::read(out.join(&gz_id)).unwrap() == body,
        "decoded on the way in"
    );
    assert_eq!(
        names(&dir.join("acme")),
        vec![plain_id],
        "promoted header and method route"
    );
    assert_eq!(status_json(&config)["suspended"], 0);
}

/// Send raw bytes, optionally half-close, and read what comes back (with a limit).
fn raw(port: u16, bytes: &[u8], half_close: bool, pause: Duration) -> (String, Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    std::thread::sleep(pause);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (String::from_utf8_lossy(&out).to_string(), start.elapsed())
}

#[test]
fn clients_that_break_off_or_stall_publish_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (mut node, config, port) = start(root.path());
    let head = "POST /in HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 1000\r\n\r\n";
    // Content-Length says 1000, 10 bytes come, then the client stops writing.
    let (answer, _) = raw(port, format!("{head}0123456789").as_bytes(), true, Duration::ZERO);
    assert!(!answer.contains(" 202 "), "{answer}");
    // 10 bytes, then silence: cut off after idle_timeout (1 s).
    let (answer, _) = raw(port, format!("{head}0123456789").as_bytes(), false, Duration::ZERO);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Headers that never finish: the connection is closed after header_timeout.
    let (answer, waited) = raw(port, b"POST /in HTTP/1.1\r\nHost: x\r\n", false, Duration::ZERO);
    assert!(!answer.contains(" 202 "), "{answer}");
    assert!(
        waited < Duration::from_secs(8),
        "closed after the header timeout, not the client's: {waited:?}"
    );
    // The node still serves.
    std::fs::write(root.path().join("ok.txt"), b"fine").unwrap();
    let (code, _) = post(
        port,
        "/in",
        &root.path().join("ok.txt"),
        &["-H", "Authorization: Bearer s3cret"],
    );
    assert_eq!(code, 202);
    wait_until(Duration::from_secs(30), "one message delivered", || {
        names(&root.path().join("out")).len() == 1
    });
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    assert_eq!(
        status_json(&config)["content_chunks"],
        0,
        "nothing half-published left behind"
    );
    node.stop();
}

#[test]
fn a_taken_address_stops_the_start_naming_the_location() {
    let root = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = root.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "data"
[receive_ports.web.locations.web-in]
adapter = {{ type = "http", address = "127.0.0.1:{port}", path = "/in" }}
[send_ports.out]
filter = 'receive.port == "web"'
adapter = {{ type = "file", path = "out", create_folder = true }}
"#
        ),
    )
    .unwrap();
    let out = run(sluice().args(["serve", "--config"]).arg(&config));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("receive location `web-in`") && err.contains(&format!("listening on 127.0.0.1:{port}")),
        "{err}"
    );
    drop(taken);
}
