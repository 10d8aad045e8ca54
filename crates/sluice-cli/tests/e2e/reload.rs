//! Configuration reload through the real binary: `sluice reload` and
//! SIGHUP add, remove and change ports and locations under load without
//! losing or duplicating a message; a bad configuration is refused whole.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn reload(config: &Path) -> std::process::Output {
    run(sluice().args(["reload", "--config"]).arg(config))
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn hup(node: &Node) {
    let pid = node.child.as_ref().expect("running").id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
}

/// Deliveries to `port` from `messages tracking --json`: `delivered`
/// events, and `completed` ones carrying it (its delivery was the last).
fn deliveries(config: &Path, port: &str) -> usize {
    let out = run(sluice()
        .args(["messages", "tracking", "--json", "--config"])
        .arg(config));
    json_of(&out, "messages tracking")
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| (e["event"] == "delivered" || e["event"] == "completed") && e["subscriber"] == port)
        .count()
}

/// Under a steady load of files, a reload adds a send port and a second
/// location, changes a port and removes one; then SIGHUP applies a change
/// of the busy location itself. Every file is delivered to `out` exactly
/// once, the added port gets what was published after it came, the new
/// location takes its folder, and what the removed port had queued is
/// suspended, not lost.
#[test]
fn a_reload_under_load_changes_ports_and_locations_and_loses_nothing() {
    const FILES: usize = 3000;
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    // `xml` is stopped: what it takes queues, to be suspended when it goes.
    let base = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[send_ports.xml]\n", "[send_ports.xml]\nenabled = false\n");
    std::fs::write(&config, &base).unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    for i in 0..5 {
        drop_file(&root.path().join("in"), &format!("early{i}.xml"), b"<a/>");
    }
    let dropper = {
        let dir = root.path().join("in");
        std::thread::spawn(move || {
            for i in 0..FILES {
                drop_file(&dir, &format!("f{i}.txt"), format!("file {i}").as_bytes());
                // About 8 s of load: both reloads land in the middle of it.
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(25));
                }
            }
        })
    };
    wait_until(Duration::from_secs(60), "the first files delivered", || {
        names(&root.path().join("out")).len() > 300
    });

    // Reload 1: add `copy` and location `in2`, change `out`, remove `xml`.
    std::fs::create_dir_all(root.path().join("in2")).unwrap();
    let second = base
        .replace(
            "retry = { count = 3, interval = \"1s\" }\n\n[send_ports.xml]",
            "retry = { count = 4, interval = \"1s\" }\n\n[send_ports.xml]",
        )
        .replace(
            &base[base.find("[send_ports.xml]").unwrap()..],
            r#"[send_ports.copy]
filter = 'receive.port == "in"'
adapter = { type = "file", path = "copy", file_name = "%SourceFileName%", create_folder = true }

[receive_ports.in.locations.in2]
adapter = { type = "file", path = "in2", mask = "*", settle = "200ms", poll_interval = "100ms" }
"#,
        );
    assert_ne!(second, base);
    let reload_file = root.path().join("second.toml");
    std::fs::write(&reload_file, &second).unwrap();
    let out = reload(&reload_file);
    let said = text(&out);
    assert!(out.status.success(), "reload failed: {said}\nlog:\n{}", node.log_text());
    for change in [
        "send port `copy` added",
        "send port `out` changed (restarted)",
        "receive location `in2` added",
        "send port `xml` removed: 5 queued messages suspended (resumable)",
    ] {
        assert!(said.contains(change), "`{change}` in: {said}");
    }
    assert!(
        !said.contains("in-folder"),
        "the unchanged location is left alone: {said}"
    );
    for i in 0..50 {
        drop_file(&root.path().join("in2"), &format!("second{i}.txt"), b"2");
    }

    // Reload 2, by SIGHUP: the node reloads the file it applied last.
    std::fs::write(
        &reload_file,
        second.replace(
            r#"path = "in", mask = "*", settle = "200ms", poll_interval = "100ms""#,
            r#"path = "in", mask = "*", settle = "200ms", poll_interval = "150ms""#,
        ),
    )
    .unwrap();
    hup(&node);
    wait_until(Duration::from_secs(60), "the SIGHUP reload", || {
        node.log_text()
            .contains("receive location `in-folder` changed (restarted)")
    });

    assert!(
        !dropper.is_finished(),
        "both reloads came while files were still arriving"
    );
    dropper.join().unwrap();
    wait_until(Duration::from_secs(180), "every file in out/", || {
        names(&root.path().join("out")).len() == FILES + 5 + 50
    });
    wait_until(Duration::from_secs(60), "the box to settle", || {
        let s = status_json(&config);
        s["queued"]
            .as_object()
            .map(|q| q.values().all(|v| v == 0))
            .unwrap_or(true)
    });
    for i in (0..FILES).step_by(97) {
        let got = std::fs::read(root.path().join(format!("out/f{i}.txt"))).unwrap();
        assert_eq!(got, format!("file {i}").as_bytes());
    }
    assert_eq!(
        deliveries(&config, "out"),
        FILES + 5 + 50,
        "each file delivered to `out` exactly once; log:\n{}",
        node.log_text()
    );
    let copies = names(&root.path().join("copy")).len();
    assert!(copies >= 50, "the added port took what came after it: {copies}");
    assert_eq!(deliveries(&config, "copy"), copies, "no copy twice");
    // The removed port's queue: suspended, resumable, nothing dropped.
    let out = run(sluice().args(["suspended", "list", "--json", "--config"]).arg(&config));
    let suspended = json_of(&out, "suspended list");
    let xml: Vec<_> = suspended
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subscriber"] == "xml")
        .collect();
    assert_eq!(xml.len(), 5, "the removed port's queue is suspended: {suspended}");
    assert!(xml.iter().all(|e| e["resumable"] == true));
    let log = node.log_text();
    assert!(!log.contains("stopped while the node is running"), "log:\n{log}");
    node.stop();
    assert!(node.log_text().contains("stopped"));
}

/// A configuration with errors is refused whole: the valid new port in it
/// is not added, the running configuration keeps delivering. So is one that
/// changes what only a restart can (a host's throttle), one whose new
/// address is taken, and, by SIGHUP, a file that does not parse.
#[test]
fn a_refused_reload_keeps_the_running_configuration() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let base = std::fs::read_to_string(&config).unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));

    let added = r#"
[send_ports.copy]
filter = 'receive.port == "in"'
adapter = { type = "file", path = "copy", file_name = "%SourceFileName%", create_folder = true }
"#;
    // Errors the CLI finds before it asks the node.
    let bad = root.path().join("bad.toml");
    std::fs::write(&bad, format!("{base}{added}\n[send_ports.broken]\nfilter = 'receive.port =='\nadapter = {{ type = \"file\", path = \"b\" }}\n")).unwrap();
    let out = reload(&bad);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("error[config]"), "{}", text(&out));
    assert!(text(&out).contains("send_ports.broken.filter"), "{}", text(&out));

    // What only a restart can change: the node refuses it.
    let host = root.path().join("host.toml");
    std::fs::write(&host, format!("{base}{added}\n[hosts.default]\nmax_in_flight = 10\n")).unwrap();
    let out = reload(&host);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("`hosts.default` changed"), "{}", text(&out));
    assert!(text(&out).contains("keeps running the one it had"), "{}", text(&out));

    // A new HTTP location whose address is taken: nothing is applied.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let http = root.path().join("http.toml");
    std::fs::write(
        &http,
        format!(
            "{base}{added}\n[receive_ports.web.locations.web-in]\nadapter = {{ type = \"http\", address = \"127.0.0.1:{port}\", path = \"/in\" }}\n"
        ),
    )
    .unwrap();
    let out = reload(&http);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("web-in"), "{}", text(&out));

    // By SIGHUP: the file it runs no longer parses.
    std::fs::write(&config, format!("{base}\nthis is not toml\n")).unwrap();
    hup(&node);
    wait_until(Duration::from_secs(30), "the refused SIGHUP reload", || {
        node.log_text().contains("configuration reload refused")
    });

    // Still the old configuration: files go to out/, no copy/ appears.
    drop_file(&root.path().join("in"), "after.txt", b"still here");
    wait_until(Duration::from_secs(30), "delivery with the old configuration", || {
        names(&root.path().join("out")) == ["after.txt"]
    });
    assert!(
        !root.path().join("copy").exists(),
        "nothing of a refused file was applied"
    );
    assert!(
        !node.log_text().contains("configuration reloaded"),
        "log:\n{}",
        node.log_text()
    );
    // A good file is taken after all that.
    std::fs::write(&config, format!("{base}{added}")).unwrap();
    let out = reload(&config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("send port `copy` added"), "{}", text(&out));
    drop_file(&root.path().join("in"), "later.txt", b"both");
    wait_until(Duration::from_secs(30), "delivery to the added port", || {
        names(&root.path().join("copy")) == ["later.txt"]
    });
    node.stop();
}

/// An HTTP location renamed keeps its address: the old one lets go before
/// the new one binds, and clients are answered before and after. A change
/// to an address that is taken is refused before anything stops: the
/// location keeps answering where it was. Without a node, `sluice reload`
/// says so.
#[test]
fn a_renamed_http_location_takes_over_its_address() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = root.path().join("sluice.toml");
    let text_of = |name: &str| {
        format!(
            r#"data_dir = "data"

[receive_ports.web.locations.{name}]
adapter = {{ type = "http", address = "127.0.0.1:{port}", path = "/in" }}

[send_ports.out]
filter = 'receive.port == "web"'
adapter = {{ type = "file", path = "out", file_name = "%MessageID%", create_folder = true }}
"#
        )
    };
    std::fs::write(&config, text_of("web-a")).unwrap();
    let out = reload(&config);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no node answers"), "{}", text(&out));

    let mut node = Node::start(&config, &root.path().join("node.log"));
    let post = || {
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", "x"])
            .arg(format!("http://127.0.0.1:{port}/in"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap()
    };
    assert_eq!(post(), "202");
    std::fs::write(&config, text_of("web-b")).unwrap();
    let out = reload(&config);
    assert!(out.status.success(), "{}\nlog:\n{}", text(&out), node.log_text());
    assert!(
        text(&out).contains("receive location `web-a` removed"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("receive location `web-b` added"), "{}", text(&out));
    wait_until(Duration::from_secs(10), "the renamed location to listen", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert_eq!(post(), "202");
    wait_until(Duration::from_secs(30), "both messages delivered", || {
        names(&root.path().join("out")).len() == 2
    });
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let elsewhere = taken.local_addr().unwrap().port();
    std::fs::write(
        &config,
        text_of("web-b").replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{elsewhere}")),
    )
    .unwrap();
    let out = reload(&config);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("keeps running the one it had"), "{}", text(&out));
    assert_eq!(post(), "202", "still answering at its address");
    node.stop();
}
