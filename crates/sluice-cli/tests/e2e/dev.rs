//! `sluice dev echo-server`: answers every request with its body, streamed,
//! over HTTP/1.1 and HTTP/2, with the request's content type and encoding.
//! Driven with curl (installed by scripts/test.sh when missing).

use std::process::Command;

use crate::common::*;

fn curl(args: &[&str]) -> std::process::Output {
    let out = Command::new("curl")
        .args(["-sS", "--fail"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn echo_server_streams_the_body_back() {
    let echo = Echo::start();
    let dir = tempfile::tempdir().unwrap();
    // 64 MiB, to see it streamed rather than collected.
    let body = content(7, 64 << 20);
    let input = dir.path().join("in.bin");
    std::fs::write(&input, &body).unwrap();
    let output = dir.path().join("out.bin");
    let headers = curl(&[
        "-D",
        "-",
        "-o",
        output.to_str().unwrap(),
        "-H",
        "Content-Type: application/x-test",
        "-H",
        "Content-Encoding: gzip",
        "--data-binary",
        &format!("@{}", input.display()),
        &format!("{}/any/path?x=1", echo.url),
    ]);
    assert!(
        std::fs::read(&output).unwrap() == body,
        "the body comes back byte for byte"
    );
    let headers = String::from_utf8_lossy(&headers.stdout).to_lowercase();
    assert!(headers.contains("content-type: application/x-test"), "{headers}");
    assert!(headers.contains("content-encoding: gzip"), "{headers}");
    // Any method; HTTP/2 without TLS (prior knowledge).
    let out = curl(&[
        "--http2-prior-knowledge",
        "-X",
        "PUT",
        "-d",
        "hello",
        "-w",
        " %{http_version}",
        &echo.url,
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello 2");
    let out = curl(&["-X", "GET", &format!("{}/empty", echo.url)]);
    assert!(out.stdout.is_empty());
}
