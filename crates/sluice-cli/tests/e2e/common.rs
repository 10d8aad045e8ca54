//! Helpers for end-to-end tests that run the real `sluice` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// A running `sluice serve`, killed if the test ends without stopping it.
pub struct Node {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Node {
    pub fn start(config: &Path, log: &Path) -> Node {
        Node::start_with(sluice(), config, log)
    }

    /// Start `cmd` (a `sluice` command, perhaps wrapped) with `serve --config`.
    pub fn start_with(mut cmd: Command, config: &Path, log: &Path) -> Node {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        // Counted before the start: a node that comes up before this
        // thread looks again must not be taken for an earlier run.
        let before = std::fs::read_to_string(log)
            .map(|s| s.matches("node running").count())
            .unwrap_or(0);
        let child = cmd
            .args(["serve", "--config"])
            .arg(config)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start sluice serve");
        let mut node = Node {
            child: Some(child),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while node.log_text().matches("node running").count() == before {
            if let Some(status) = node.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "sluice serve exited with {status} before running; log:\n{}",
                    node.log_text()
                );
            }
            assert!(Instant::now() < deadline, "sluice serve did not start within 60s");
            std::thread::sleep(Duration::from_millis(20));
        }
        node
    }

    /// `kill -9`: no chance to finish anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reap");
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = c.try_wait().expect("wait") {
                    assert!(
                        status.success(),
                        "sluice serve exited with {status}; log:\n{}",
                        self.log_text()
                    );
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "sluice serve did not stop within 60s after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wait (polling) until `f` is true; panic with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run sluice")
}

pub fn status_json(config: &Path) -> serde_json::Value {
    let out = run(sluice().args(["status", "--json", "--config"]).arg(config));
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json prints one JSON object")
}

/// File names in a folder, sorted: every file but a send port's
/// half-written `.sluice-tmp.*` (not delivered yet) and `.gitkeep`.
/// Receive claims (`.sluice-claim.*`) count: a folder holding one is not done.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with(".sluice-tmp.") && n != ".gitkeep")
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Deterministic pseudo-random content for file number `i` of length `len`.
pub fn content(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Write a file as producers should: to a temporary name, then rename.
pub fn drop_file(dir: &Path, name: &str, data: &[u8]) {
    let tmp = dir.join(format!(".{name}.partial"));
    std::fs::write(&tmp, data).expect("write file");
    std::fs::rename(&tmp, dir.join(name)).expect("rename file");
}

/// Retry a failed file after 500 ms instead of 10 s.
pub fn fast_retry(config: &Path) {
    let text = std::fs::read_to_string(config).expect("read config").replace(
        r#"settle = "200ms", poll_interval = "100ms""#,
        r#"settle = "200ms", poll_interval = "100ms", retry_after = "500ms""#,
    );
    std::fs::write(config, text).expect("write config");
}

/// A quickstart-style config in `root` with fast polling for tests.
pub fn write_config(root: &Path, extra: &str) -> PathBuf {
    std::fs::create_dir_all(root.join("in")).expect("mkdir in/");
    let config = root.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "data"

[receive_ports.in.locations.in-folder]
adapter = {{ type = "file", path = "in", mask = "*", settle = "200ms", poll_interval = "100ms" }}

[send_ports.out]
filter = 'receive.port == "in"'
adapter = {{ type = "file", path = "out", file_name = "%SourceFileName%", create_folder = true }}
retry = {{ count = 3, interval = "1s" }}

[send_ports.xml]
filter = 'receive.port == "in" and file.name ends-with ".xml"'
adapter = {{ type = "file", path = "xml", file_name = "%SourceFileName%", create_folder = true }}
retry = {{ count = 3, interval = "1s" }}
{extra}"#
        ),
    )
    .expect("write config");
    config
}

/// `gzip -c` of `data`, by the system's gzip (the reference implementation).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gzip");
    let mut stdin = child.stdin.take().expect("gzip stdin");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("gzip output");
    writer.join().expect("writer thread").expect("write to gzip");
    out.stdout
}

/// A running `sluice dev echo-server` on a free port, killed when dropped.
pub struct Echo {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl Echo {
    pub fn start() -> Echo {
        use std::io::BufRead;
        let mut child = sluice()
            .args(["dev", "echo-server", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the echo server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the echo server says where it listens");
        let url = line.trim().rsplit(' ').next().unwrap_or_default().to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{line}");
        Echo { child, url }
    }

    /// `127.0.0.1:PORT`
    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A command's JSON output (it must have succeeded).
pub fn json_of(out: &std::process::Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"))
}

/// `sluice ARGS --config CONFIG`.
pub fn sl(config: &Path, args: &[&str]) -> Output {
    run(sluice().args(args).arg("--config").arg(config))
}

/// Bytes of output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run `sluice ARGS --config CONFIG`, expect exit status `code`, return
/// stdout and stderr.
pub fn expect(config: &Path, args: &[&str], code: i32) -> (String, String) {
    let out = sl(config, args);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "{args:?}\nstdout: {o}\nstderr: {e}");
    (o, e)
}

/// `sluice users add NAME --role ROLE`, the password on standard input.
pub fn add_user(config: &Path, name: &str, role: &str, password: &str) {
    let mut child = sluice()
        .args(["users", "add", name, "--role", role, "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice users add");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "users add {name}: {}", text(&out.stderr));
}

/// A new API token of `user`, made by `sluice tokens create`.
pub fn token_for(config: &Path, user: &str) -> String {
    let v = json_of(&sl(config, &["tokens", "create", user, "--json"]), "tokens create");
    v["token"].as_str().unwrap().to_string()
}

/// A node's configuration in `root` with the REST API on a free port (and
/// `api_extra` in its `[api]` table): a receive folder `in`, a send port
/// `broken` that fails (suspends) every message without `route.fixed`,
/// and `good`, which delivers those with it to `out` under their ids.
/// Returns the configuration file and the API's base URL.
pub fn api_config(root: &Path, api_extra: &str) -> (PathBuf, String) {
    for dir in ["in", "out"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let port = free_port();
    let config = root.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "data"

[receive_ports.in.locations.files]
adapter = {{ type = "file", path = "in", mask = "*", settle = "200ms", poll_interval = "100ms" }}

# Fails every message until it carries route.fixed (the folder is missing).
[send_ports.broken]
filter = 'receive.port == "in" and not route.fixed exists'
adapter = {{ type = "file", path = "missing", create_folder = false }}
retry = {{ count = 0, interval = "1s" }}

[send_ports.good]
filter = 'route.fixed == true'
adapter = {{ type = "file", path = "out", file_name = "%MessageId%" }}

[api]
address = "127.0.0.1:{port}"
{api_extra}
"#
        ),
    )
    .unwrap();
    (config, format!("http://127.0.0.1:{port}"))
}

/// A field of `/proc/PID/status` given in kB (`VmRSS:`, `VmHWM:`), in bytes
/// (0 if it is missing).
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The resident memory (RSS) of process `pid`, in bytes.
pub fn vm_rss(pid: u32) -> u64 {
    proc_status_bytes(pid, "VmRSS:")
}

/// The files of `dir` named `<source name>.<message id>` (a FILE port's
/// `file_name = "%SourceFileName%.%MessageId%"`), by source name: a source
/// received twice shows as two files, which `%SourceFileName%` alone would
/// hide (the second delivery of the same bytes counts as already there).
pub fn by_source(dir: &Path) -> std::collections::BTreeMap<String, Vec<PathBuf>> {
    let mut out: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    for name in names(dir) {
        if let Some((source, _id)) = name.rsplit_once('.') {
            out.entry(source.to_string()).or_default().push(dir.join(&name));
        }
    }
    out
}
