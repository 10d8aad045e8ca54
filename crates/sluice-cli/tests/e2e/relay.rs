//! Request-response through the real binary: an HTTP receive location in
//! request-response mode, a solicit-response HTTP send port, the response
//! routed back and streamed to the waiting client; timeouts with a trace,
//! a peer that breaks off, a late response, no subscriber; HTTPS on both
//! sides. Driven with curl, `sluice dev echo-server` and a raw TCP peer.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// What curl got: status, headers (lower-case names), body file.
struct Answer {
    status: u16,
    headers: String,
    body: PathBuf,
    http_version: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.body).unwrap_or_default()).to_string()
    }
}

/// Stream `file` to `url` with `curl -T` (a POST here), answer saved to `out`.
fn curl(url: &str, file: &Path, out: &Path, extra: &[&str]) -> Answer {
    let headers = out.with_extension("headers");
    let output = Command::new("curl")
        .args(["-sS", "-X", "POST", "-T"])
        .arg(file)
        .arg("-o")
        .arg(out)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let w = String::from_utf8_lossy(&output.stdout).to_string();
    let mut it = w.split_whitespace();
    let status = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Answer {
        status,
        http_version: it.next().unwrap_or_default().to_string(),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: out.to_path_buf(),
    }
}

/// The example's configuration, moved to free ports and a scratch folder.
fn example_config(root: &Path, relay_port: u16, echo: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(repo.join("examples/http-relay/sluice.toml")).expect("the example");
    assert!(text.contains("127.0.0.1:8480") && text.contains("127.0.0.1:8481"));
    let text = text
        .replace("127.0.0.1:8480", &format!("127.0.0.1:{relay_port}"))
        .replace("127.0.0.1:8481", echo);
    let config = root.join("sluice.toml");
    std::fs::write(&config, text).unwrap();
    config
}

fn listening(port: u16) {
    wait_until(Duration::from_secs(30), "the HTTP location to listen", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// A node on `tables` (the configuration after `data_dir`) in `dir`, its
/// location on `port` listening; and a small request body, `req.txt`.
fn start_node(dir: &Path, tables: &str, port: u16) -> (Node, PathBuf, PathBuf) {
    let config = dir.join("sluice.toml");
    std::fs::write(&config, format!("data_dir = \"data\"\n{tables}")).unwrap();
    let node = Node::start(&config, &dir.join("node.log"));
    listening(port);
    let req = dir.join("req.txt");
    std::fs::write(&req, b"hello").unwrap();
    (node, config, req)
}

#[test]
fn the_relay_example_answers_with_what_the_echo_endpoint_answers() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let echo = Echo::start();
    let port = free_port();
    let config = example_config(dir, port, echo.address());
    // Beside the example: a location that keeps bodies encoded as they came.
    let raw_port = free_port();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        r#"
[receive_ports.relay.locations.relay-raw]
adapter = {{ type = "http", address = "127.0.0.1:{raw_port}", path = "/relay", mode = "request-response", decode = false }}

[send_ports.to-echo-raw]
filter = 'receive.location == "relay-raw"'
adapter = {{ type = "http", url = "http://{}/echo", mode = "solicit-response" }}
"#,
        echo.address()
    ));
    std::fs::write(&config, text).unwrap();
    let mut node = Node::start(&config, &dir.join("node.log"));
    listening(port);
    let url = format!("http://127.0.0.1:{port}/relay");

    // 24 MiB, streamed through the box both ways, content type kept.
    let body = content(7, 24 << 20);
    std::fs::write(dir.join("body.bin"), &body).unwrap();
    let a = curl(
        &url,
        &dir.join("body.bin"),
        &dir.join("a1"),
        &["-H", "Content-Type: application/xml"],
    );
    assert_eq!(a.status, 200, "{}\n{}", a.headers, node.log_text());
    assert!(std::fs::read(&a.body).unwrap() == body, "the answer is the body");
    assert_eq!(a.header("content-type").as_deref(), Some("application/xml"));
    let request_id = a.header("x-sluice-message-id").expect("the request's id");
    assert_eq!(request_id.len(), 26, "{request_id}");

    // gzip on the wire: decoded on the way in, so the echo answers it plain.
    let small = content(8, 3 << 20);
    std::fs::write(dir.join("body.gz"), gzip(&small)).unwrap();
    let a = curl(
        &url,
        &dir.join("body.gz"),
        &dir.join("a2"),
        &["-H", "Content-Encoding: gzip"],
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(std::fs::read(&a.body).unwrap() == small);

    // Kept encoded: forwarded labelled gzip, answered labelled gzip.
    let a = curl(
        &format!("http://127.0.0.1:{raw_port}/relay"),
        &dir.join("body.gz"),
        &dir.join("a3"),
        &["-H", "Content-Encoding: gzip"],
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-encoding").as_deref(), Some("gzip"));
    assert!(
        std::fs::read(&a.body).unwrap() == std::fs::read(dir.join("body.gz")).unwrap(),
        "the gzip bytes as sent"
    );

    // HTTP/2 (prior knowledge), and 12 at once: each client gets its own answer.
    let handles: Vec<_> = (0..12u64)
        .map(|i| {
            let (url, dir) = (url.clone(), dir.to_path_buf());
            std::thread::spawn(move || {
                let data = content(100 + i, 100_000 + i as usize * 77_777);
                let file = dir.join(format!("c{i}.bin"));
                std::fs::write(&file, &data).unwrap();
                let a = curl(
                    &url,
                    &file,
                    &dir.join(format!("c{i}.out")),
                    &["--http2-prior-knowledge"],
                );
                (
                    a.status,
                    a.http_version.clone(),
                    std::fs::read(&a.body).unwrap() == data,
                )
            })
        })
        .collect();
    for h in handles {
        let (status, version, same) = h.join().unwrap();
        assert_eq!((status, version.as_str(), same), (200, "2", true));
    }

    // Requests and responses are gone from the box once answered.
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    node.stop();
    assert_eq!(status_json(&config)["suspended"], 0, "{}", node.log_text());
}

/// A peer for the send port, answering by the request's `x-mode` header:
/// `slow` answers after 5 s, `broken` promises 1000 bytes and sends 10,
/// `once-503` answers 503 the first time and "fine" after, anything else
/// answers "fine" at once.
fn raw_peer() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let failed_once = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let failed_once = failed_once.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut got = Vec::new();
                let mut buf = [0u8; 8192];
                // Headers, then a chunked body ending in 0\r\n\r\n.
                while !got.ends_with(b"0\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
                if head.contains("x-mode: slow") {
                    std::thread::sleep(Duration::from_secs(5));
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate");
                } else if head.contains("x-mode: once-503")
                    && !failed_once.swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
                } else if head.contains("x-mode: broken") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
                } else {
                    let _ =
                        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nfine");
                }
                let _ = s.flush();
            });
        }
    });
    port
}

#[test]
fn failures_answer_502_or_504_saying_where_the_request_is_and_the_node_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let peer = raw_peer();
    let (port, lonely, closed) = (free_port(), free_port(), free_port());
    let (mut node, config, req) = start_node(
        dir,
        &format!(
            r#"
[receive_ports.relay.locations.relay-in]
adapter = {{ type = "http", address = "127.0.0.1:{port}", path = "/relay", mode = "request-response", response_timeout = "3s", promote_headers = ["x-mode"] }}

[receive_ports.relay.locations.lonely]
adapter = {{ type = "http", address = "127.0.0.1:{lonely}", path = "/relay", mode = "request-response", response_timeout = "3s" }}

[send_ports.to-peer]
filter = 'receive.location == "relay-in" and not http.header.x-mode == "down"'
adapter = {{ type = "http", url = "http://127.0.0.1:{peer}/x", mode = "solicit-response", headers_from_context = {{ "X-Mode" = "http.header.x-mode" }}, timeout = "20s" }}
retry = {{ count = 1, interval = "500ms" }}

[send_ports.to-nowhere]
filter = 'http.header.x-mode == "down"'
adapter = {{ type = "http", url = "http://127.0.0.1:{closed}/x", mode = "solicit-response" }}
retry = {{ count = 1, interval = "500ms" }}
"#
        ),
        port,
    );
    let url = format!("http://127.0.0.1:{port}/relay");
    let trace = |a: &Answer| -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(&a.text()).unwrap_or_else(|e| panic!("{}: {e}", a.text()));
        (
            v["message_id"].as_str().unwrap_or_default().to_string(),
            v["trace"].as_str().unwrap_or_default().to_string(),
        )
    };

    // An unreachable destination: retried, suspended; the client gets 502
    // and where its request stopped.
    let a = curl(&url, &req, &dir.join("down"), &["-H", "X-Mode: down"]);
    assert_eq!(a.status, 502, "{}", a.text());
    let (id, _) = trace(&a);
    assert_eq!(Some(id.clone()), a.header("x-sluice-message-id"));
    assert!(
        a.text()
            .contains("suspended at send port `to-nowhere` after 2 attempt(s)"),
        "{}",
        a.text()
    );

    // A peer that closes mid-answer: nothing half-published, retried, suspended.
    let a = curl(&url, &req, &dir.join("broken"), &["-H", "X-Mode: broken"]);
    assert_eq!(a.status, 502, "{}", a.text());
    assert!(a.text().contains("suspended at send port `to-peer`"), "{}", a.text());
    let log = node.log_text();
    assert!(log.contains("broke off"), "{log}");

    // A peer slower than the timeout: 504 while it is being delivered; its
    // late response finds no one waiting and is suspended with that reason.
    let started = Instant::now();
    let a = curl(&url, &req, &dir.join("slow"), &["-H", "X-Mode: slow"]);
    assert_eq!(a.status, 504, "{}", a.text());
    assert!(started.elapsed() < Duration::from_secs(5), "answered at the timeout");
    let (slow_id, t) = trace(&a);
    assert!(t.contains("queued for `to-peer`, being delivered"), "{t}");
    wait_until(Duration::from_secs(20), "the late response to be suspended", || {
        let out = run(sluice().args(["suspended", "list", "--config"]).arg(&config));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains(&format!("no request {slow_id} is waiting"))
    });

    // No subscriber: answered at once, the request suspended.
    let started = Instant::now();
    let a = curl(
        &format!("http://127.0.0.1:{lonely}/relay"),
        &req,
        &dir.join("lonely"),
        &[],
    );
    assert_eq!(a.status, 502, "{}", a.text());
    assert!(a.text().contains("no send port subscribes"), "{}", a.text());
    assert!(started.elapsed() < Duration::from_secs(2));

    // And the node still answers.
    let a = curl(&url, &req, &dir.join("ok"), &[]);
    assert_eq!((a.status, a.text().as_str()), (200, "fine"));
    assert_eq!(a.header("content-type").as_deref(), Some("text/plain"));
    let log = node.log_text();
    assert!(log.contains("no response in time; answered 504"), "{log}");
    node.stop();
    // down, broken (requests), the late response, lonely's request.
    assert_eq!(status_json(&config)["suspended"], 4);
}

/// A request suspended downstream (its send port gave up after its
/// retries) is answered at once with 502, long before `response_timeout`:
/// where it stopped and its suspended entry, not the error (it names the
/// peer's address), which the log has. A failed attempt with retries left
/// is no suspension: that client waits, and gets the retry's answer.
#[test]
fn a_request_suspended_downstream_is_answered_502_at_once() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let peer = raw_peer();
    let (port, closed) = (free_port(), free_port());
    let (mut node, config, req) = start_node(
        dir,
        &format!(
            r#"
[receive_ports.relay.locations.relay-in]
adapter = {{ type = "http", address = "127.0.0.1:{port}", path = "/relay", mode = "request-response", response_timeout = "5m", promote_headers = ["x-mode"] }}

[send_ports.to-nowhere]
filter = 'http.header.x-mode == "down"'
adapter = {{ type = "http", url = "http://127.0.0.1:{closed}/internal-path", mode = "solicit-response" }}
retry = {{ count = 1, interval = "500ms" }}

[send_ports.to-peer]
filter = 'http.header.x-mode == "once-503"'
adapter = {{ type = "http", url = "http://127.0.0.1:{peer}/x", mode = "solicit-response", headers_from_context = {{ "X-Mode" = "http.header.x-mode" }} }}
retry = {{ count = 1, interval = "1s" }}
"#
        ),
        port,
    );
    let url = format!("http://127.0.0.1:{port}/relay");
    // Without the early answer, curl gives up first (status 0).
    let bound = ["--max-time", "60"];

    let a = curl(
        &url,
        &req,
        &dir.join("down"),
        &[&["-H", "X-Mode: down"][..], &bound].concat(),
    );
    assert_eq!(a.status, 502, "{}", a.text());
    let v: serde_json::Value = serde_json::from_str(&a.text()).unwrap_or_else(|e| panic!("{}: {e}", a.text()));
    let error = v["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the request was suspended at send port `to-nowhere` after 2 attempt(s)")
            && error.contains("transmit failed (http)"),
        "{error}"
    );
    let id = v["message_id"].as_str().unwrap_or_default().to_string();
    assert_eq!(Some(id.clone()), a.header("x-sluice-message-id"));
    assert!(
        !a.text().contains(&closed.to_string()) && !a.text().contains("internal-path"),
        "the answer names the peer: {}",
        a.text()
    );
    let out = run(sluice().args(["suspended", "list", "--json", "--config"]).arg(&config));
    let listed: serde_json::Value = json_of(&out, "suspended list");
    let entry = listed
        .as_array()
        .and_then(|l| l.iter().find(|s| s["message_id"] == id.as_str()))
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(entry["id"], v["suspended_id"], "{listed}");
    let log = node.log_text();
    assert!(
        log.contains("the request was suspended downstream; answered 502 at once"),
        "{log}"
    );
    assert!(log.contains("internal-path"), "the log has the error: {log}");

    // The first attempt fails (503), the retry answers: no 502 meanwhile.
    let a = curl(
        &url,
        &req,
        &dir.join("flaky"),
        &[&["-H", "X-Mode: once-503"][..], &bound].concat(),
    );
    assert_eq!((a.status, a.text().as_str()), (200, "fine"));
    assert!(node.log_text().contains("will retry"));
    node.stop();
    // Only the request sent nowhere: the fault that answered it is gone.
    let status = status_json(&config);
    assert_eq!(
        (&status["suspended"], &status["spool"]),
        (&1.into(), &1.into()),
        "{status}"
    );
}

#[test]
fn https_on_both_sides() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key_pair.serialize_pem()).unwrap();
    let port = free_port();
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "data"

[receive_ports.secure.locations.secure-in]
adapter = {{ type = "http", address = "127.0.0.1:{port}", path = "/in", tls = {{ cert = "cert.pem", key = "key.pem" }} }}

[receive_ports.files.locations.files-in]
adapter = {{ type = "file", path = "in", settle = "100ms" }}

[send_ports.out]
filter = 'receive.location == "secure-in"'
adapter = {{ type = "file", path = "out", file_name = "%property:http.header.x-name%", create_folder = true }}

[send_ports.forward]
filter = 'receive.location == "files-in"'
adapter = {{ type = "http", url = "https://localhost:{port}/in", tls_ca = "cert.pem", headers_from_context = {{ "X-Name" = "file.name" }} }}
"#
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("in")).unwrap();
    // The location promotes x-name for the file name.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        r#"path = "/in", tls"#,
        r#"path = "/in", promote_headers = ["x-name"], tls"#,
    );
    std::fs::write(&config, text).unwrap();
    let mut node = Node::start(&config, &dir.join("node.log"));
    listening(port);
    let url = format!("https://localhost:{port}/in");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let body = content(9, 2 << 20);
    std::fs::write(dir.join("b.bin"), &body).unwrap();

    // curl trusting the certificate: HTTP/2 by ALPN.
    let a = curl(
        &url,
        &dir.join("b.bin"),
        &dir.join("a1"),
        &[
            "--cacert",
            dir.join("cert.pem").to_str().unwrap(),
            "--resolve",
            &resolve,
            "-H",
            "X-Name: from-curl",
        ],
    );
    assert_eq!((a.status, a.http_version.as_str()), (202, "2"), "{}", a.text());
    // Not trusting it, or speaking plain HTTP to it: nothing taken.
    let a = curl(&url, &dir.join("b.bin"), &dir.join("a2"), &["--resolve", &resolve]);
    assert_eq!(a.status, 0, "certificate not trusted");
    let a = curl(
        &format!("http://127.0.0.1:{port}/in"),
        &dir.join("b.bin"),
        &dir.join("a3"),
        &["-H", "X-Name: plain"],
    );
    assert_ne!(a.status, 202);

    // A send port trusting the certificate by tls_ca posts over HTTPS.
    drop_file(&dir.join("in"), "from-file", &body);
    let out = dir.join("out");
    wait_until(Duration::from_secs(60), "both bodies in out/", || {
        names(&out).len() == 2
    });
    node.stop();
    assert_eq!(names(&out), vec!["from-curl", "from-file"]);
    for n in ["from-curl", "from-file"] {
        assert!(std::fs::read(out.join(n)).unwrap() == body, "{n}");
    }
    assert_eq!(status_json(&config)["suspended"], 0);
}
