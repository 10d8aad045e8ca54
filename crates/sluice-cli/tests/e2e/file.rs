//! End-to-end runs of the real `sluice` binary with FILE receive and send.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;

/// The shipped quickstart, run from a copy: files in in/ reach out/, XML
/// files also xml/, in/ empties, the box empties, SIGTERM stops it cleanly.
#[test]
fn quickstart_example_routes_files() {
    let root = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/quickstart/sluice.toml");
    let config = root.path().join("sluice.toml");
    std::fs::copy(example, &config).unwrap();
    std::fs::create_dir_all(root.path().join("in")).unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("in"), "hello.txt", b"hello");
    drop_file(&root.path().join("in"), "order.xml", b"<order/>");
    let big = content(7, 3 * 1024 * 1024 + 17);
    drop_file(&root.path().join("in"), "big.bin", &big);
    wait_until(Duration::from_secs(60), "three files in out/", || {
        names(&root.path().join("out")).len() == 3
    });
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    assert_eq!(names(&root.path().join("out")), ["big.bin", "hello.txt", "order.xml"]);
    assert_eq!(names(&root.path().join("xml")), ["order.xml"]);
    assert_eq!(std::fs::read(root.path().join("out/big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(root.path().join("xml/order.xml")).unwrap(), b"<order/>");
    assert!(names(&root.path().join("in")).is_empty());
    node.stop();
    let status = status_json(&config);
    assert_eq!(
        (status["spool"].as_u64(), status["content_bytes"].as_u64()),
        (Some(0), Some(0))
    );
}

/// `kill -9` twice while 20,000 files are being received and delivered, then
/// a restart: every file arrives byte-identical, none is missing, in/ ends
/// empty, the box ends with spool 0 and no content left.
#[test]
fn kill9_while_receiving_20000_files_loses_nothing() {
    const FILES: u64 = 20_000;
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let (inp, out, xml) = (root.path().join("in"), root.path().join("out"), root.path().join("xml"));
    let size_of = |i: u64| -> usize {
        if i.is_multiple_of(97) {
            300_000 + (i as usize % 7) * 1000 // stored in chunks
        } else {
            (i as usize * 37) % 6000 // inline
        }
    };
    let name_of = |i: u64| {
        if i.is_multiple_of(10) {
            format!("f{i:05}.xml")
        } else {
            format!("f{i:05}.dat")
        }
    };
    for i in 0..FILES {
        drop_file(&inp, &name_of(i), &content(i, size_of(i)));
    }
    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);
    wait_until(Duration::from_secs(120), "3,000 files delivered", || {
        names(&out).len() >= 3_000
    });
    node.kill9();
    let after_first = names(&out).len();
    let mut node = Node::start(&config, &log);
    wait_until(Duration::from_secs(120), "more files after the first restart", || {
        names(&out).len() >= after_first + 6_000
    });
    node.kill9();
    let mut node = Node::start(&config, &log);
    wait_until(Duration::from_secs(300), "all 20,000 files delivered", || {
        names(&out).len() as u64 >= FILES
    });
    wait_until(Duration::from_secs(60), "an empty box", || {
        let s = status_json(&config);
        s["spool"] == 0 && names(&inp).is_empty()
    });
    node.stop();
    // What the restarts had to recover (shown with --nocapture).
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    for line in log_text
        .lines()
        .filter(|l| l.contains("took back leases") || l.contains("put back files") || l.contains("discarded content"))
    {
        eprintln!("recovery: {line}");
    }
    eprintln!(
        "redeliveries found already delivered: {}",
        log_text.matches("an identical copy was already delivered").count()
    );
    assert_eq!(log_text.matches("node running").count(), 3, "three runs of the node");

    let expected: BTreeSet<String> = (0..FILES).map(name_of).collect();
    let got: BTreeSet<String> = names(&out).into_iter().collect();
    assert_eq!(
        got, expected,
        "out/ holds exactly the input files, and no temporary files"
    );
    let expected_xml: BTreeSet<String> = (0..FILES).filter(|i| i.is_multiple_of(10)).map(name_of).collect();
    assert_eq!(names(&xml).into_iter().collect::<BTreeSet<_>>(), expected_xml);
    for i in 0..FILES {
        let data = std::fs::read(out.join(name_of(i))).unwrap();
        assert!(data == content(i, size_of(i)), "{} is not byte-identical", name_of(i));
        if i.is_multiple_of(10) {
            assert!(std::fs::read(xml.join(name_of(i))).unwrap() == data);
        }
    }
    assert!(
        names(&inp).is_empty(),
        "in/ ends empty (no claimed files left): {:?}",
        names(&inp)
    );
    let status = status_json(&config);
    assert_eq!(status["spool"], 0, "{status}");
    assert_eq!(status["suspended"], 0, "{status}");
    assert_eq!(status["content_bytes"], 0, "{status}");
    assert_eq!(status["content_chunks"], 0, "no content left behind: {status}");
}

/// A file nobody subscribes to is suspended, not dropped; `messages show`
/// displays its full context.
#[test]
fn unrouted_file_is_suspended_with_its_context() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        r#"
[receive_ports.orphans.locations.orphan-folder]
adapter = { type = "file", path = "orphans", settle = "100ms", poll_interval = "100ms" }
"#,
    );
    std::fs::create_dir_all(root.path().join("orphans")).unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("orphans"), "lost.txt", b"nobody wants me");
    wait_until(Duration::from_secs(30), "a suspended message", || {
        status_json(&config)["suspended"] == 1
    });
    assert!(
        names(&root.path().join("orphans")).is_empty(),
        "the source is deleted once the suspension is durable"
    );
    let list = run(sluice().args(["messages", "list", "--json", "--config"]).arg(&config));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    let show = run(sluice().args(["messages", "show", &id, "--config"]).arg(&config));
    let text = String::from_utf8_lossy(&show.stdout);
    for expected in [
        "file.name",
        "lost.txt",
        "receive.port",
        "orphans",
        "receive.location",
        "file.size",
        "received_at",
        "no subscriber",
    ] {
        assert!(text.contains(expected), "`messages show` lacks {expected}:\n{text}");
    }
    let show = run(sluice()
        .args(["messages", "show", &id, "--json", "--config"])
        .arg(&config));
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(v["suspended"][0]["reason"], "no subscriber");
    assert_eq!(v["parts"][0]["size"], 15);
    node.stop();
}

#[test]
fn invalid_config_is_refused_naming_the_key() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace("mask =", "maks =");
    std::fs::write(&config, text).unwrap();
    let out = run(sluice().args(["serve", "--config"]).arg(&config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `maks`") && err.contains("sluice.toml"),
        "{err}"
    );

    let config = write_config(root.path(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("ends-with", "endswith");
    std::fs::write(&config, text).unwrap();
    let out = run(sluice().args(["serve", "--config"]).arg(&config));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("send_ports.xml.filter"), "{err}");

    let out = run(sluice().args(["serve", "--config", "/nonexistent/sluice.toml"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot read configuration file /nonexistent/sluice.toml"),
        "{err}"
    );
}

/// Two nodes cannot share one embedded box.
#[test]
fn second_node_on_same_data_dir_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    let out = run(sluice().args(["serve", "--config"]).arg(&config));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("another `sluice serve` is using it"),
        "{err}"
    );
    node.stop();
}

/// A send folder that goes missing: the message is retried from the box and
/// delivered once the folder is back; nothing is lost meanwhile.
#[test]
fn delivery_waits_for_a_missing_folder() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        r#"
[receive_ports.strict.locations.strict-folder]
adapter = { type = "file", path = "strict-in", settle = "100ms", poll_interval = "100ms" }

[send_ports.strict]
filter = 'receive.port == "strict"'
adapter = { type = "file", path = "strict-out", file_name = "%SourceFileName%" }
retry = { count = 100, interval = "500ms", backoff = 2, max_interval = "2s" }
"#,
    );
    std::fs::create_dir_all(root.path().join("strict-in")).unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("strict-in"), "a.txt", b"wait for me");
    // Waits that double, up to the cap: 0.5 s, 1 s, 2 s, 2 s.
    wait_until(Duration::from_secs(30), "four retries to be logged", || {
        node.log_text().matches("will retry").count() >= 4
    });
    let log = node.log_text();
    let waits: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("will retry"))
        .filter_map(|l| l.split("retry_in=").nth(1)?.split_whitespace().next())
        .take(4)
        .collect();
    assert_eq!(waits, ["500ms", "1s", "2s", "2s"], "{log}");
    assert_eq!(status_json(&config)["queued"]["strict"], 1);
    std::fs::create_dir_all(root.path().join("strict-out")).unwrap();
    wait_until(Duration::from_secs(30), "delivery after the folder appears", || {
        root.path().join("strict-out/a.txt").exists()
    });
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    node.stop();
}

/// The data directory fills up: the file that does not fit stays in in/
/// (put back, logged), the node keeps serving other files, and once there is
/// room the file is received and delivered intact. Needs root (tmpfs mount).
#[test]
fn full_data_disk_leaves_the_file_and_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    fast_retry(&config);
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&data)
        .output()
        .expect("run mount");
    assert!(
        mount.status.success(),
        "this test mounts a 4 MiB tmpfs as the data directory and needs root: {}",
        String::from_utf8_lossy(&mount.stderr)
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data.clone());

    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);
    let inp = root.path().join("in");
    let big = content(1, 8 * 1024 * 1024);
    drop_file(&inp, "big.bin", &big);
    wait_until(Duration::from_secs(60), "the full disk to be reported", || {
        node.log_text().contains("receiving failed; the file is left in place")
    });
    assert!(
        node.log_text().contains("full"),
        "the error says the disk is full:\n{}",
        node.log_text()
    );
    assert!(
        inp.join("big.bin").exists(),
        "the file is back in in/ under its own name"
    );
    // The node keeps serving files that fit.
    drop_file(&inp, "small.txt", b"still working");
    wait_until(Duration::from_secs(60), "the small file delivered", || {
        root.path().join("out/small.txt").exists()
    });
    // Make room: the big file goes through on a later try.
    let remount = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&data)
        .status()
        .expect("remount");
    assert!(remount.success());
    wait_until(Duration::from_secs(120), "the big file delivered", || {
        root.path().join("out/big.bin").exists()
    });
    wait_until(Duration::from_secs(60), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    assert!(std::fs::read(root.path().join("out/big.bin")).unwrap() == big);
    assert!(names(&inp).is_empty());
    node.stop();
}

/// A file the node may not read stays in in/ under its name, the error names
/// it, and it is received once readable. The node runs as `nobody` (as root,
/// permissions do not stop reads); needs root to set that up.
#[test]
fn unreadable_file_is_left_in_place_and_retried() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    fast_retry(&config);
    for d in [
        root.path().to_path_buf(),
        root.path().join("in"),
        root.path().join("data"),
    ] {
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_sluice"));
    let log = root.path().join("node.log");
    let mut node = Node::start_with(cmd, &config, &log);
    let file = root.path().join("in/secret.txt");
    std::fs::write(&file, b"for root only").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    wait_until(Duration::from_secs(30), "the failure to be logged", || {
        node.log_text().contains("receiving failed; the file is left in place")
    });
    let text = node.log_text();
    assert!(
        text.contains("secret.txt") && text.contains("Permission denied"),
        "{text}"
    );
    assert!(file.exists(), "the file is back under its own name");
    assert!(!root.path().join("out/secret.txt").exists());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    wait_until(Duration::from_secs(30), "delivery once readable", || {
        root.path().join("out/secret.txt").exists()
    });
    assert_eq!(
        std::fs::read(root.path().join("out/secret.txt")).unwrap(),
        b"for root only"
    );
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    node.stop();
}

/// A file that is still being written (modified within `settle`) is not
/// taken; once the writer is done, the whole file is received.
#[test]
fn file_still_being_written_is_not_taken() {
    use std::io::Write;
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(r#"settle = "200ms""#, r#"settle = "1s""#);
    std::fs::write(&config, text).unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    let path = root.path().join("in/slow.dat");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut written = Vec::new();
    for i in 0..12u64 {
        let chunk = content(i, 10_000);
        f.write_all(&chunk).unwrap();
        f.flush().unwrap();
        written.extend_from_slice(&chunk);
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            path.exists(),
            "the file was taken while still being written (after {} bytes)",
            written.len()
        );
    }
    drop(f);
    wait_until(Duration::from_secs(30), "the finished file delivered", || {
        root.path().join("out/slow.dat").exists()
    });
    assert!(std::fs::read(root.path().join("out/slow.dat")).unwrap() == written);
    node.stop();
}

/// SIGTERM while a large file is being received: the node finishes that
/// receive (the file is published, not abandoned half-way) before it exits,
/// and the message is delivered, then or after the next start.
#[test]
fn sigterm_finishes_the_receive_in_flight() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);
    let inp = root.path().join("in");
    let big = content(3, 300 * 1024 * 1024);
    drop_file(&inp, "big.bin", &big);
    wait_until(Duration::from_secs(30), "the file to be claimed", || {
        std::fs::read_dir(&inp)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".sluice-claim."))
    });
    node.stop();
    let left: Vec<String> = std::fs::read_dir(&inp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "the receive in flight was finished and the file deleted: {left:?}"
    );
    let _node = Node::start(&config, &log);
    wait_until(Duration::from_secs(60), "delivery", || {
        status_json(&config)["spool"] == 0
    });
    assert!(std::fs::read(root.path().join("out/big.bin")).unwrap() == big);
}

/// A delivery that takes longer than its lease keeps it (renewal), so the
/// message is not handed out a second time while it is still being written.
#[test]
fn long_delivery_renews_its_lease() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[send_ports.out]\n", "[send_ports.out]\nlease = \"1s\"\n");
    std::fs::write(&config, text).unwrap();
    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);
    let big = content(9, 400 * 1024 * 1024);
    drop_file(&root.path().join("in"), "long.bin", &big);
    wait_until(Duration::from_secs(120), "delivery", || {
        root.path().join("out/long.bin").exists()
    });
    wait_until(Duration::from_secs(60), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    node.stop();
    let text = node.log_text();
    assert!(
        !text.contains("an identical copy was already delivered"),
        "delivered twice:\n{text}"
    );
    assert!(
        !text.contains("could not record the outcome"),
        "the lease was lost:\n{text}"
    );
    assert!(std::fs::read(root.path().join("out/long.bin")).unwrap() == big);
}

/// Deliver `ok<i>.txt` files one after another: each one needs the
/// location to look at its folder a few times (it must settle first), so
/// several polls have passed when this returns.
fn let_several_polls_pass(root: &std::path::Path) {
    for i in 0..3 {
        drop_file(&root.join("in"), &format!("ok{i}.txt"), b"fine");
        wait_until(Duration::from_secs(30), "a later file delivered", || {
            root.join(format!("out/ok{i}.txt")).exists()
        });
    }
}

/// `sluice serve` with `config`, which it must refuse: its stderr. A node
/// that starts instead is stopped (not waited on for ever) and fails the test.
fn serve_refused(config: &std::path::Path) -> String {
    let mut child = sluice()
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sluice serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap");
            panic!(
                "the configuration was accepted and the node ran:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("reap");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// For each `(what, file)`: exactly one line of `log` contains `what` (not
/// one per poll), and it names `file`.
fn assert_logged_once_naming(log: &str, expected: &[(&str, &str)]) {
    for (what, file) in expected {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(what)).collect();
        assert_eq!(lines.len(), 1, "{what}: one line: {lines:#?}");
        assert!(lines[0].contains(file), "{what}: the line names {file}: {}", lines[0]);
    }
}

/// A file whose name is not UTF-8 cannot be a `file.name`: it stays where it
/// is, with one warning that names it (its odd bytes escaped) and says to
/// rename it, not one per poll; the other files keep flowing, and once
/// renamed it is received.
#[test]
fn a_name_that_is_not_utf8_is_warned_about_once() {
    use std::os::unix::ffi::OsStrExt;
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let inp = root.path().join("in");
    let odd = inp.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    std::fs::write(&odd, b"a Latin-1 name").unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    wait_until(Duration::from_secs(30), "the warning", || {
        node.log_text().contains("not UTF-8")
    });
    let_several_polls_pass(root.path());
    // One line: it names the file (the byte that is not UTF-8 escaped), its
    // location, and what to do.
    assert_logged_once_naming(
        &node.log_text(),
        &[
            ("not UTF-8", r"caf\xE9.txt"),
            ("not UTF-8", "in-folder"),
            ("not UTF-8", "rename it"),
        ],
    );
    assert!(odd.exists(), "the file is left in place");
    std::fs::rename(&odd, inp.join("cafe.txt")).unwrap();
    wait_until(Duration::from_secs(30), "the renamed file delivered", || {
        root.path().join("out/cafe.txt").exists()
    });
    assert_eq!(
        std::fs::read(root.path().join("out/cafe.txt")).unwrap(),
        b"a Latin-1 name"
    );
    node.stop();
}

/// Subfolders and symbolic links in a receive folder are left alone and
/// logged once each. A location with `follow_symlinks = true` receives the
/// file a link points to and deletes the link, never the file; a link to a
/// folder or to nothing is skipped, logged once.
#[test]
fn links_and_subfolders_are_logged_once_and_a_followed_link_loses_only_the_link() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        r#"
[receive_ports.in.locations.linked]
adapter = { type = "file", path = "linked", settle = "200ms", poll_interval = "100ms", follow_symlinks = true }
"#,
    );
    let (inp, linked, targets) = (
        root.path().join("in"),
        root.path().join("linked"),
        root.path().join("targets"),
    );
    for d in [&linked, &targets.join("folder"), &inp.join("sub")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(targets.join("t.xml"), b"<linked/>").unwrap();
    symlink(targets.join("t.xml"), inp.join("link.txt")).unwrap();
    symlink(targets.join("t.xml"), linked.join("a.xml")).unwrap();
    symlink(targets.join("folder"), linked.join("folder")).unwrap();
    symlink(targets.join("none"), linked.join("dangling")).unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    wait_until(Duration::from_secs(30), "the linked file delivered", || {
        root.path().join("xml/a.xml").exists()
    });
    let_several_polls_pass(root.path());
    node.stop();
    assert_eq!(std::fs::read(root.path().join("out/a.xml")).unwrap(), b"<linked/>");
    assert!(linked.join("a.xml").symlink_metadata().is_err(), "the link is deleted");
    assert_eq!(
        std::fs::read(targets.join("t.xml")).unwrap(),
        b"<linked/>",
        "the file it pointed to stays"
    );
    assert!(inp.join("link.txt").symlink_metadata().unwrap().is_symlink() && inp.join("sub").is_dir());
    assert_logged_once_naming(
        &node.log_text(),
        &[
            ("skipping a subfolder", "in/sub"),
            ("skipping a symbolic link (logged once)", "in/link.txt"),
            ("skipping a symbolic link to a folder", "linked/folder"),
            ("points to nothing", "linked/dangling"),
        ],
    );
}

/// Content the receive pipeline refuses is suspended as received, and a
/// file no send port wants is suspended too; the log line that says so
/// names the file.
#[test]
fn a_rejected_or_unrouted_file_is_logged_with_its_name() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        r#"
[receive_ports.packed.locations.packed-folder]
adapter = { type = "file", path = "packed", settle = "100ms", poll_interval = "100ms" }
pipeline = { decode = [{ type = "gzip" }] }

[receive_ports.orphans.locations.orphan-folder]
adapter = { type = "file", path = "orphans", settle = "100ms", poll_interval = "100ms" }
"#,
    );
    for d in ["packed", "orphans"] {
        std::fs::create_dir_all(root.path().join(d)).unwrap();
    }
    let mut node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("packed"), "not-really.gz", b"plain text, not gzip");
    drop_file(&root.path().join("orphans"), "lost.txt", b"nobody wants me");
    wait_until(Duration::from_secs(30), "both files suspended", || {
        status_json(&config)["suspended"] == 2
    });
    node.stop();
    assert_logged_once_naming(
        &node.log_text(),
        &[
            ("rejected", "packed/not-really.gz"),
            ("no subscription matches", "orphans/lost.txt"),
        ],
    );
}

/// However the folder is written (`./in`, `in/`, its absolute path, a
/// symbolic link to it), a second location on it is refused at load.
#[test]
fn a_second_location_on_one_folder_is_refused_however_the_path_is_written() {
    let root = tempfile::tempdir().unwrap();
    write_config(root.path(), "");
    std::os::unix::fs::symlink(root.path().join("in"), root.path().join("alias")).unwrap();
    let absolute = root.path().join("in").display().to_string();
    for path in ["./in", "in/", "alias", absolute.as_str()] {
        let config = write_config(
            root.path(),
            &format!("[receive_ports.in.locations.again]\nadapter = {{ type = \"file\", path = \"{path}\" }}\n"),
        );
        let err = serve_refused(&config);
        assert!(
            err.contains("receive_ports.in.locations.again.adapter.path")
                && err.contains("receive_ports.in.locations.in-folder.adapter.path")
                && err.contains("is also the folder of receive location"),
            "{path}: {err}"
        );
    }
}

/// A FILE send port's `file_name` with a `/` of its own can never write a
/// file into the folder: refused at load, naming the port and the key.
#[test]
fn a_file_name_with_a_slash_is_refused_at_load() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        r#"
[send_ports.nested]
filter = 'receive.port == "in"'
adapter = { type = "file", path = "out", file_name = "out/%MessageID%.xml" }
"#,
    );
    let err = serve_refused(&config);
    assert!(
        err.contains("send_ports.nested.adapter") && err.contains("file_name `out/%MessageID%.xml` has a `/`"),
        "{err}"
    );
}

/// A property value that would lead out of the send folder (`..`,
/// `../x`) is refused for that message: it is suspended at once (retrying
/// cannot help) with a reason that says why and what to do, and nothing is
/// written outside the folder.
#[test]
fn a_property_value_cannot_lead_a_file_out_of_its_folder() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        r#"
[send_ports.named]
filter = 'app.name exists'
adapter = { type = "file", path = "named", file_name = "%property:app.name%", create_folder = true }
retry = { count = 3, interval = "1s" }
"#,
    );
    let mut node = Node::start(&config, &root.path().join("node.log"));
    for value in ["../escaped", ".."] {
        let out = run(sluice()
            .args(["publish", "--prop", &format!("app.name=string:{value}"), "--config"])
            .arg(&config));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    wait_until(Duration::from_secs(30), "both suspended", || {
        status_json(&config)["suspended"] == 2
    });
    node.stop();
    let list = json_of(
        &run(sluice().args(["suspended", "list", "--json", "--config"]).arg(&config)),
        "suspended list",
    );
    for s in list.as_array().unwrap() {
        let reason = s["reason"].as_str().unwrap();
        assert!(
            reason.contains("may not name a file outside the folder") && reason.contains("resubmit"),
            "{reason}"
        );
        assert_eq!(s["attempts"], 1, "not retried: {s}");
        assert_eq!(s["resumable"], false, "resuming would fail the same way: {s}");
    }
    assert!(!root.path().join("escaped").exists());
    assert!(names(&root.path().join("named")).is_empty());
}
