//! What an operator reads out of the box (issue 13): `sluice messages
//! body` and `sluice suspended body` stream a part to standard output or
//! to a file, whole or not at all, in bounded memory; tracking says where
//! each message came from and where it stopped; `suspended list --limit`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const MIB: usize = 1024 * 1024;

/// A config whose ports take only files from `in/`, and a box made by a
/// node that ran once (a CLI publish goes nowhere: it is suspended).
fn setup() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    node.stop();
    (root, config)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `sluice ARGS --config CONFIG`.
fn cli(config: &Path, args: &[&str]) -> Command {
    let mut cmd = sluice();
    cmd.args(args).arg("--config").arg(config);
    cmd
}

/// Publish `body` (no subscriber: suspended); its message id and `#` entry.
fn publish_suspended(root: &Path, config: &Path, body: &[u8]) -> (String, String) {
    let file = root.join("body.bin");
    std::fs::write(&file, body).unwrap();
    let out = run(cli(config, &["publish", "--json"]).arg("--body").arg(&file));
    let published = json_of(&out, "publish");
    let id = published["message_id"].as_str().unwrap().to_string();
    let entry = published["routed"]["suspended"]["suspended_id"].to_string();
    assert!(entry.parse::<i64>().is_ok(), "suspended: {published}");
    (id, entry)
}

/// A failed command's code and message: `error[<code>]: ...` on stderr, status 1.
fn failure(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "stdout: {}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("error["), "{stderr}");
    stderr
}

/// Files in `dir` whose names start with `.` (a temporary file left behind).
fn hidden(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn a_body_streams_to_stdout_or_whole_to_a_file_and_errors_say_what_is_missing() {
    let (root, config) = setup();
    let body = content(1, 5 * MIB + 77);
    let (id, entry) = publish_suspended(root.path(), &config, &body);

    let out = run(&mut cli(&config, &["messages", "body", &id]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout == body, "stdout: {} bytes, not the body", out.stdout.len());
    let out = run(&mut cli(
        &config,
        &["suspended", "body", &format!("#{entry}"), "--part", "0"],
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout == body, "the suspended entry's body");

    let dir = root.path().join("saved");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("body.out");
    std::fs::write(&file, b"an older file, replaced whole").unwrap();
    let out = run(cli(&config, &["messages", "body", &id]).arg("-o").arg(&file));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read(&file).unwrap() == body, "the file holds the body");
    assert_eq!(
        text(&out.stdout),
        format!(
            "wrote {} bytes (part 0 `body` of message {id}) to {}\n",
            body.len(),
            file.display()
        )
    );
    assert!(hidden(&dir).is_empty(), "no temporary file left: {:?}", hidden(&dir));

    let stderr = failure(&run(&mut cli(&config, &["messages", "body", &id, "--part", "1"])));
    assert!(
        stderr.starts_with(&format!(
            "error[not_found]: message {id} has 1 part (part 0), so no part 1"
        )),
        "{stderr}"
    );
    let nobody = "01JAAAAAAAAAAAAAAAAAAAAAAA";
    let stderr = failure(&run(&mut cli(&config, &["messages", "body", nobody])));
    assert!(
        stderr.starts_with(&format!("error[not_found]: message {nobody} is not in the box")),
        "{stderr}"
    );
    let stderr = failure(&run(&mut cli(&config, &["suspended", "body", "9999"])));
    assert!(
        stderr.starts_with("error[not_found]: suspended entry 9999 does not exist"),
        "{stderr}"
    );

    // A reader that goes away (`| head -c 10`): quietly, status 0.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cli(&config, &["messages", "body", &id])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
}

/// Content that fails its check half-way (a byte flipped on disk): the
/// command fails with `corrupt_content`, and `-o FILE` leaves no file (and
/// no temporary file) behind, never a short body that looks whole, and a
/// FILE that was there as it was.
#[test]
fn a_body_that_fails_half_way_leaves_no_file() {
    let (root, config) = setup();
    let body = content(2, 3 * MIB);
    let (id, _) = publish_suspended(root.path(), &config, &body);
    // Flip a byte of the stored content, in the middle of the body.
    let db = root.path().join("data/msgbox.sqlite");
    let mut bytes = std::fs::read(&db).unwrap();
    let probe = &body[2 * MIB..2 * MIB + 32];
    let at = bytes
        .windows(probe.len())
        .position(|w| w == probe)
        .expect("the body's bytes are in the box file");
    bytes[at + 7] ^= 0xff;
    std::fs::write(&db, bytes).unwrap();

    let file = root.path().join("body.out");
    let stderr = failure(&run(cli(&config, &["messages", "body", &id]).arg("-o").arg(&file)));
    assert!(stderr.starts_with("error[corrupt_content]: "), "{stderr}");
    assert!(stderr.contains("is corrupt"), "{stderr}");
    assert!(!file.exists(), "no half-written file");
    // A file already there is left as it was.
    std::fs::write(&file, b"the last good copy").unwrap();
    failure(&run(cli(&config, &["messages", "body", &id]).arg("-o").arg(&file)));
    assert_eq!(std::fs::read(&file).unwrap(), b"the last good copy");
    assert!(
        hidden(root.path()).is_empty(),
        "no temporary file: {:?}",
        hidden(root.path())
    );
    // To standard output: what was read went out, and the command fails.
    let out = run(&mut cli(&config, &["messages", "body", &id]));
    assert!(failure(&out).starts_with("error[corrupt_content]: "));
    assert!(out.stdout.len() <= body.len() && out.stdout != body);
}

/// Run `sluice ARGS --config CONFIG [extra]` to its end under
/// `/usr/bin/time`: its exit status and peak resident memory in KiB. (The
/// test process's own `wait4` would count this process's memory too: a
/// child made by `posix_spawn` shares it until it runs `sluice`.)
fn peak_rss_kib(config: &Path, args: &[&str], extra: &[&Path]) -> (bool, u64) {
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "this test measures memory with /usr/bin/time (GNU time): install it"
    );
    let report = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new(time)
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--config")
        .arg(config)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let kib = std::fs::read_to_string(report.path()).unwrap();
    (
        status.success(),
        kib.trim().parse().unwrap_or_else(|_| panic!("GNU time said {kib:?}")),
    )
}

/// A 96 MiB body goes out in bounded memory: the command's peak RSS stays
/// far below the body's size, to a file and to standard output.
#[test]
fn a_large_body_goes_out_in_bounded_memory() {
    let (root, config) = setup();
    let body = content(3, 96 * MIB);
    let (id, _) = publish_suspended(root.path(), &config, &body);
    let file = root.path().join("large.out");
    let args = ["messages", "body", id.as_str()];
    let (ok, rss) = peak_rss_kib(&config, &args, &[Path::new("-o"), &file]);
    assert!(ok);
    assert!(std::fs::read(&file).unwrap() == body, "the file holds the body");
    assert!(rss < 48 * 1024, "peak RSS {rss} KiB writing a 96 MiB body to a file");
    let (ok, rss) = peak_rss_kib(&config, &args, &[]);
    assert!(ok);
    assert!(rss < 48 * 1024, "peak RSS {rss} KiB writing a 96 MiB body to stdout");
}

fn tracking_json(config: &Path, id: &str) -> Vec<Value> {
    let out = run(&mut cli(config, &["messages", "tracking", "--json", "--message", id]));
    json_of(&out, "messages tracking").as_array().unwrap().clone()
}

/// A file that a send port gives up on, resumed once the port can deliver
/// it: tracking says where it came in (location, file name), where it was
/// suspended and resumed (the port) and where it was delivered; the text
/// table shows the file name.
#[test]
fn tracking_says_where_a_file_came_in_stopped_and_went_on() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        r#"
[send_ports.deliver]
filter = 'receive.port == "in" and file.name == "order-7.txt"'
adapter = { type = "file", path = "deliver", file_name = "%SourceFileName%" }
retry = { count = 0 }
"#,
    );
    let mut node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("in"), "order-7.txt", b"order 7");
    wait_until(
        Duration::from_secs(30),
        "`out` to deliver and `deliver` to give up",
        || status_json(&config)["suspended"] == 1 && root.path().join("out/order-7.txt").exists(),
    );
    std::fs::create_dir(root.path().join("deliver")).unwrap();
    let out = run(&mut cli(&config, &["suspended", "resume", "--all"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until(Duration::from_secs(30), "the box to empty", || {
        status_json(&config)["spool"] == 0
    });
    node.stop();
    assert_eq!(
        std::fs::read(root.path().join("deliver/order-7.txt")).unwrap(),
        b"order 7"
    );

    let out = run(&mut cli(&config, &["messages", "tracking", "--json"]));
    let all = json_of(&out, "messages tracking");
    let received = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "received" && e["detail"] == "order-7.txt")
        .expect("a received event with the file name");
    assert_eq!(received["location"], "in-folder");
    let id = received["message_id"].as_str().unwrap().to_string();
    let events: Vec<(String, Value, Value)> = tracking_json(&config, &id)
        .into_iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["subscriber"].clone(),
                e["location"].clone(),
            )
        })
        .collect();
    let at = |event: &str, port: Option<&str>, location: Option<&str>| {
        (
            event.to_string(),
            port.map_or(Value::Null, Value::from),
            location.map_or(Value::Null, Value::from),
        )
    };
    let here = Some("in-folder");
    let mut expected = vec![
        at("received", None, here),
        at("delivered", Some("out"), None),
        at("suspended", Some("deliver"), here),
        at("resumed", Some("deliver"), here),
        at("completed", Some("deliver"), None),
    ];
    // `out` and `deliver` work at the same time: the first two events
    // after `received` may come in either order.
    if events.get(1).is_some_and(|e| e.0 == "suspended") {
        expected.swap(1, 2);
    }
    assert_eq!(events, expected);

    let out = run(&mut cli(&config, &["messages", "tracking", "--message", &id]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.contains(" received "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("location in-folder") && row.trim_end().ends_with("order-7.txt"),
        "{table}"
    );
    assert!(table.lines().next().unwrap().contains("WHERE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(" resumed ") && l.contains("port deliver")),
        "{table}"
    );
}

/// `suspended list --limit N` shows the oldest N entries and says when more
/// match; without it, every entry (as before); `--limit 0` is a usage error.
#[test]
fn suspended_list_shows_at_most_limit_entries_and_says_more_match() {
    let (_root, config) = setup();
    for i in 0..5 {
        let out = run(&mut cli(&config, &["publish", "--prop", &format!("n=int:{i}")]));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let rows = |args: &[&str]| -> Vec<String> {
        let out = run(&mut cli(&config, args));
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).lines().map(str::to_string).collect()
    };
    let all = rows(&["suspended", "list"]);
    assert_eq!(all.len(), 6, "a header and every entry: {all:?}");
    let two = rows(&["suspended", "list", "--limit", "2"]);
    assert_eq!(two[..3], all[..3], "the oldest two");
    assert_eq!(two[3], "(the first 2 shown; more match: raise --limit)");
    assert_eq!(two.len(), 4);
    assert_eq!(
        rows(&["suspended", "list", "--limit", "5"]),
        all,
        "exactly all: nothing more to say"
    );
    let out = run(&mut cli(&config, &["suspended", "list", "--json", "--limit", "3"]));
    let listed = json_of(&out, "suspended list --json --limit 3");
    let ids: Vec<i64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let out = run(&mut cli(&config, &["suspended", "list", "--limit", "0"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("error[invalid_argument]: "),
        "{}",
        text(&out.stderr)
    );
}
