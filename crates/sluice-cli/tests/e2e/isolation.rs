//! Isolated hosts (issue 16): a host with `isolation = "process"` runs in a
//! host instance, a child process of the node reaching the box over a Unix
//! socket; killed, it is started again and its work delivered again;
//! recycled (API restart, a changed configuration), it finishes what it
//! holds first.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// FILE in (the node's default host) → FILE out, delivered by send port
/// `out` in the isolated host `iso`; `extra` goes at the end.
fn isolated_config(root: &Path, extra: &str) -> std::path::PathBuf {
    isolated_config_with(root, "default", extra)
}

/// [`isolated_config`] with the receive location in host `location_host`.
fn isolated_config_with(root: &Path, location_host: &str, extra: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(root.join("in")).unwrap();
    let config = root.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "data"

[hosts.iso]
isolation = "process"
drain_timeout = "20s"

[receive_ports.in.locations.files]
host = "{location_host}"
adapter = {{ type = "file", path = "in", mask = "*", settle = "200ms", poll_interval = "100ms" }}

[send_ports.out]
host = "iso"
filter = 'receive.port == "in"'
adapter = {{ type = "file", path = "out", file_name = "%SourceFileName%", create_folder = true }}
retry = {{ count = 5, interval = "1s" }}
{extra}"#
        ),
    )
    .unwrap();
    config
}

/// Host `name` as `sluice status --json` lists it.
fn host(config: &Path, name: &str) -> serde_json::Value {
    let status = status_json(config);
    status["hosts"]
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no host {name} in {status}"))
}

/// The pid of host `name`'s running instance, once there is one.
fn instance_pid(config: &Path, name: &str, not: u32) -> u32 {
    let mut pid = 0;
    wait_until(Duration::from_secs(30), "the host instance to run", || {
        let h = host(config, name);
        let i = &h["instances"][0];
        pid = i["pid"].as_u64().unwrap_or(0) as u32;
        i["state"] == "running" && pid != 0 && pid != not
    });
    pid
}

fn count(dir: &Path) -> usize {
    names(dir).len()
}

/// The instance runs the host's receive location and send port in its own
/// process, and the node's status says so; killed with SIGKILL under load,
/// five times, it is started again: what it held is delivered again, the
/// files it had claimed are settled by the next instance (published:
/// deleted; not: put back and received again), and every file arrives once
/// with its bytes (a redelivery of a file already written is recognised, as
/// FILE does); the node stops cleanly and removes its socket.
#[test]
fn an_isolated_host_survives_kill_9_of_its_instance() {
    let root = tempfile::tempdir().unwrap();
    let config = isolated_config_with(root.path(), "iso", "");
    let log = root.path().join("node.log");
    let (inbox, out) = (root.path().join("in"), root.path().join("out"));
    const FILES: u64 = 3000;
    // Each delivery takes 20 ms (the chaos port writes as FILE does), 8 at
    // once: about the rate the files arrive at, so every kill finds the
    // instance holding leases, on a fast machine too (with plain FILE a
    // fast one delivered each file at once and was often killed idle).
    let text = std::fs::read_to_string(&config).unwrap();
    let slowed = text.replace(
        r#"adapter = { type = "file", path = "out","#,
        r#"adapter = { type = "chaos", delay = "20ms", path = "out","#,
    );
    assert_ne!(slowed, text, "the send port's adapter is replaced");
    std::fs::write(&config, slowed).unwrap();
    let mut node = Node::start(&config, &log);
    let node_pid = node.child.as_ref().unwrap().id();
    let mut pid = instance_pid(&config, "iso", 0);
    assert_ne!(pid, node_pid, "the isolated host runs in a process of its own");
    let h = host(&config, "iso");
    assert_eq!(h["isolation"], "process");
    // The node runs nothing itself (host default has no units here).
    assert_eq!(host(&config, "default")["instances"][0]["pid"], node_pid);
    // The instance is the node's child, running `host-instance`.
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains("host-instance"), "{cmdline:?}");

    // Files keep coming for about 8 s while the instance is killed.
    let producer = {
        let inbox = inbox.clone();
        std::thread::spawn(move || {
            for i in 0..FILES {
                drop_file(&inbox, &format!("f{i:05}.dat"), &content(i, 100 + (i as usize % 3000)));
                if i % 40 == 39 {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };
    let mut redelivery = Vec::new();
    for kill in 0..5 {
        // Under load: let this instance deliver a while.
        std::thread::sleep(Duration::from_millis(700 + 150 * kill));
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        let killed = Instant::now();
        let at_kill = count(&out);
        wait_until(Duration::from_secs(30), "deliveries after the kill", || {
            count(&out) > at_kill
        });
        redelivery.push(killed.elapsed());
        pid = instance_pid(&config, "iso", pid);
        eprintln!("kill {kill}: deliveries went on after {:?}", killed.elapsed());
    }
    producer.join().unwrap();
    wait_until(Duration::from_secs(120), "every file delivered", || {
        count(&out) as u64 == FILES && names(&inbox).is_empty()
    });
    for i in 0..FILES {
        let name = format!("f{i:05}.dat");
        let got = std::fs::read(out.join(&name)).unwrap();
        assert!(got == content(i, 100 + (i as usize % 3000)), "{name} differs");
    }
    let h = host(&config, "iso");
    assert!(
        h["instances"][0]["restarts"].as_u64().unwrap() >= redelivery.len() as u64,
        "{h}"
    );
    assert!(
        h["last_exit"].as_str().unwrap().contains("SIGKILL"),
        "the last instance's end is told: {h}"
    );
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    node.stop();
    let text = node.log_text();
    assert!(text.contains("gave back what the host instance held"), "{text}");
    assert!(
        !root.path().join("data/hosts/iso.sock").exists(),
        "the node removes its socket when it stops"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the instance ends with the node"
    );
    // Every line the instance logged says which instance it was.
    assert!(
        text.lines()
            .any(|l| l.contains("host_instance") && l.contains("send port started")),
        "{text}"
    );
}

/// An operator's restart through the API drains the instance (it finishes
/// what it holds: nothing is delivered twice) and starts another; a
/// changed configuration recycles it too; a host in the node's process
/// cannot be restarted alone, and an unknown one is not found.
#[test]
fn an_isolated_host_is_recycled_by_the_api_and_by_a_reload() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = isolated_config(root.path(), &format!("\n[api]\naddress = \"127.0.0.1:{port}\"\n"));
    // Each delivery takes 20 ms: the restart finds deliveries in flight.
    let slow = std::fs::read_to_string(&config).unwrap().replace(
        r#"adapter = { type = "file", path = "out","#,
        "concurrency = 4\nadapter = { type = \"chaos\", delay = \"20ms\", path = \"out\",",
    );
    std::fs::write(&config, slow).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let log = root.path().join("node.log");
    let (inbox, out) = (root.path().join("in"), root.path().join("out"));
    let mut node = Node::start(&config, &log);
    add_user(&config, "ops", "operator", "a long enough password");
    let token = token_for(&config, "ops");
    let first = instance_pid(&config, "iso", 0);

    // Files flow while the instance is recycled.
    const FILES: u64 = 600;
    for i in 0..FILES / 2 {
        drop_file(&inbox, &format!("a{i:04}.dat"), &content(i, 500));
    }
    let curl = |method: &str, path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-X", method, "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .args(["-w", "\n%{http_code}", "--max-time", "30"])
            .arg(format!("{base}{path}"))
            .output()
            .unwrap();
        let text = text(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    // Deliveries under way (at 20 ms each, 300 take 1.5 s over 4 slots).
    wait_until(Duration::from_secs(30), "deliveries under way", || count(&out) > 20);
    assert!(count(&out) < 250, "the restart must come while work is in flight");
    let (code, body) = curl("POST", "/api/v1/hosts/iso/restart");
    assert_eq!(code, "200", "{body}");
    let second = instance_pid(&config, "iso", first);
    for i in FILES / 2..FILES {
        drop_file(&inbox, &format!("a{i:04}.dat"), &content(i, 500));
    }
    wait_until(Duration::from_secs(60), "every file delivered", || {
        count(&out) as u64 == FILES && names(&inbox).is_empty()
    });
    let h = host(&config, "iso");
    assert_eq!(h["instances"][0]["recycles"], 1, "{h}");
    assert_eq!(h["instances"][0]["restarts"], 0, "a recycle is not a crash: {h}");
    // Nothing delivered twice: no delivery found its file already there.
    let text_log = node.log_text();
    assert!(!text_log.contains("identical copy was already there"), "{text_log}");

    // The API lists the hosts; a host in the node cannot be restarted alone.
    let (code, body) = curl("GET", "/api/v1/hosts");
    assert_eq!(code, "200", "{body}");
    let hosts: serde_json::Value = serde_json::from_str(&body).unwrap();
    let iso = hosts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "iso")
        .unwrap();
    assert_eq!(iso["instances"][0]["pid"], second);
    let (code, body) = curl("POST", "/api/v1/hosts/default/restart");
    assert_eq!(code, "409", "{body}");
    let (code, body) = curl("POST", "/api/v1/hosts/nope/restart");
    assert_eq!(code, "404", "{body}");
    let audit = curl("GET", "/api/v1/audit").1;
    assert!(audit.contains("host.restart"), "{audit}");

    // A reload that changes the host's port recycles the instance onto it.
    let changed = std::fs::read_to_string(&config).unwrap().replace(
        "retry = { count = 5, interval = \"1s\" }",
        "retry = { count = 6, interval = \"1s\" }",
    );
    std::fs::write(&config, changed).unwrap();
    let out_reload = sl(&config, &["reload"]);
    assert!(out_reload.status.success(), "{}", text(&out_reload.stderr));
    assert!(
        text(&out_reload.stdout).contains("host `iso` recycled"),
        "{}",
        text(&out_reload.stdout)
    );
    let third = instance_pid(&config, "iso", second);
    assert_ne!(third, second);
    drop_file(&inbox, "after-reload.dat", b"after the reload");
    wait_until(Duration::from_secs(30), "a delivery by the new instance", || {
        out.join("after-reload.dat").exists()
    });
    // A node killed outright takes its instance with it (no orphan keeps
    // running against a box nobody serves).
    node.kill9();
    wait_until(Duration::from_secs(5), "the instance to end with the node", || {
        !Path::new(&format!("/proc/{third}")).exists()
            || std::fs::read_to_string(format!("/proc/{third}/status")).is_ok_and(|s| s.contains("State:\tZ"))
    });
}

/// Seed 000's fault, contained: a send port in an isolated host leaks 256
/// KiB per message (the chaos adapter). Each time its instance goes over
/// its 64 MiB limit it is drained and replaced, as often as needed, while
/// the node's own memory stays where it was; every file arrives once (no
/// delivery finds its file already written), byte-identical.
#[test]
fn a_leaking_instance_is_recycled_over_its_memory_limit_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (inbox, out) = (root.path().join("in"), root.path().join("out"));
    std::fs::create_dir_all(&inbox).unwrap();
    let config = root.path().join("sluice.toml");
    std::fs::write(
        &config,
        r#"data_dir = "data"

[hosts.leaky]
isolation = "process"
memory_limit = "64MiB"
drain_timeout = "20s"

[receive_ports.in.locations.files]
adapter = { type = "file", path = "in", mask = "*", settle = "200ms", poll_interval = "100ms" }

[send_ports.leaky]
host = "leaky"
filter = 'receive.port == "in"'
concurrency = 2
adapter = { type = "chaos", path = "out", file_name = "%SourceFileName%", create_folder = true, leak_per_message = "256KiB", delay = "2ms" }
"#,
    )
    .unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    let node_pid = node.child.as_ref().unwrap().id();
    instance_pid(&config, "leaky", 0);
    let node_before = vm_rss(node_pid);
    const FILES: u64 = 1200;
    for i in 0..FILES {
        drop_file(&inbox, &format!("m{i:04}.xml"), &content(i, 2000));
    }
    wait_until(Duration::from_secs(120), "every file delivered", || {
        count(&out) as u64 == FILES && names(&inbox).is_empty()
    });
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    for i in 0..FILES {
        let name = format!("m{i:04}.xml");
        assert!(
            std::fs::read(out.join(&name)).unwrap() == content(i, 2000),
            "{name} differs"
        );
    }
    let h = host(&config, "leaky");
    let i = &h["instances"][0];
    // 300 MiB leaked under a 64 MiB limit: at least 4 recycles.
    assert!(i["memory_recycles"].as_u64().unwrap() >= 4, "{h}");
    assert_eq!(i["restarts"], 0, "drained, never crashed or killed: {h}");
    let log = node.log_text();
    assert!(log.contains("over its memory limit; recycling it"), "{log}");
    assert!(
        !log.contains("identical copy was already there"),
        "a delivery was made twice:\n{log}"
    );
    // The node did not take the leak: it grew by far less than a recycle's worth.
    let node_after = vm_rss(node_pid);
    assert!(
        node_after < node_before + (24 << 20),
        "the node grew from {node_before} to {node_after} bytes"
    );
    node.stop();
}

/// The portal's Hosts page in a real browser (Debian's headless Chromium):
/// an isolated host in its own process with its instance's RSS over time;
/// an operator's restart button recycles it (counted in status), a
/// viewer has no button. Its screenshot lands in docs/portal/hosts.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_page_in_a_real_browser() {
    use crate::api::{Driver, log_in, screenshot_dir};
    use fantoccini::Locator;
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = isolated_config(
        root.path(),
        &format!("\n[api]\naddress = \"127.0.0.1:{port}\"\nsample_every = \"1s\"\n"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    add_user(&config, "olga", "operator", "olga-s3cret-pass");
    add_user(&config, "vic", "viewer", "vic-s3cret-pass");
    let first = instance_pid(&config, "iso", 0);
    for i in 0..200 {
        drop_file(&root.path().join("in"), &format!("h{i:03}.dat"), &content(i, 4000));
    }
    let driver = Driver::start();
    let c = driver.browser().await;
    log_in(&c, &base, "olga", "olga-s3cret-pass").await;
    // Two samples of the instance's RSS make a chart.
    let mut found = false;
    for _ in 0..60 {
        c.goto(&format!("{base}/hosts")).await.unwrap();
        if c.find(Locator::Css("#rss-iso svg polyline")).await.is_ok() {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(found, "the RSS chart of host iso");
    let row = c
        .find(Locator::Css("tr[data-host=iso]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        row.contains("own process") && row.contains("running") && row.contains(&first.to_string()),
        "{row}"
    );
    let row = c
        .find(Locator::Css("tr[data-host=default]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(row.contains("in the node"), "{row}");
    std::fs::write(screenshot_dir().join("hosts.png"), c.screenshot().await.unwrap()).unwrap();
    // The restart button recycles the instance.
    c.find(Locator::Css("tr[data-host=iso] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    instance_pid(&config, "iso", first);
    wait_until(Duration::from_secs(30), "the recycle counted", || {
        host(&config, "iso")["instances"][0]["recycles"] == 1
    });
    assert!(
        c.find(Locator::Css("tr[data-host=default] button")).await.is_err(),
        "a host in the node has no restart button"
    );
    // A viewer sees the page, without buttons.
    c.find(Locator::Css("#logout")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Css("#password")).await.unwrap();
    log_in(&c, &base, "vic", "vic-s3cret-pass").await;
    c.goto(&format!("{base}/hosts")).await.unwrap();
    c.find(Locator::Css("tr[data-host=iso]")).await.unwrap();
    assert!(c.find(Locator::Css("tr[data-host=iso] button")).await.is_err());
    c.close().await.unwrap();
    node.stop();
}

/// An instance that cannot start (its HTTP location's address is taken)
/// ends at once, again and again: the node stays up, starts it again with
/// a growing wait, and says the host is crash-looping (log, status,
/// metrics); once the address is free, the next start runs.
#[test]
fn a_crash_looping_instance_is_told_and_comes_back() {
    let root = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let metrics_port = free_port();
    let config = isolated_config(
        root.path(),
        &format!(
            r#"
[receive_ports.web.locations.api]
host = "iso"
adapter = {{ type = "http", address = "{address}", path = "/in" }}

[metrics]
address = "127.0.0.1:{metrics_port}"
"#
        ),
    );
    let mut node = Node::start(&config, &root.path().join("node.log"));
    wait_until(Duration::from_secs(30), "the crash loop to be told", || {
        host(&config, "iso")["instances"][0]["state"] == "crash-loop"
    });
    let h = host(&config, "iso");
    assert!(h["instances"][0]["restarts"].as_u64().unwrap() >= 3, "{h}");
    assert_eq!(h["crash_loop"], true, "{h}");
    assert!(h["last_exit"].as_str().unwrap().contains("status 1"), "{h}");
    assert!(node.log_text().contains("isolated host is crash-looping"));
    let metrics = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .unwrap();
    let metrics = text(&metrics.stdout);
    assert!(
        metrics.contains("sluice_host_instance_crash_loop{host=\"iso\"} 1"),
        "{metrics}"
    );
    // The node itself still serves its own units.
    drop_file(&root.path().join("in"), "still.dat", b"the node goes on");
    drop(taken);
    instance_pid(&config, "iso", 0);
    wait_until(Duration::from_secs(30), "the file delivered", || {
        root.path().join("out/still.dat").exists()
    });
    node.stop();
}

/// A recycle that cannot finish in time: each delivery takes 4 s, the
/// drain timeout is 1 s. The instance is killed at its deadline, what it
/// held is given back, and the next instance delivers it: nothing lost.
#[test]
fn a_drain_past_its_timeout_is_killed_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = isolated_config(root.path(), &format!("\n[api]\naddress = \"127.0.0.1:{port}\"\n"));
    let slow = std::fs::read_to_string(&config)
        .unwrap()
        .replace("drain_timeout = \"20s\"", "drain_timeout = \"1s\"")
        .replace(
            r#"adapter = { type = "file", path = "out","#,
            "concurrency = 2\nadapter = { type = \"chaos\", delay = \"4s\", path = \"out\",",
        );
    std::fs::write(&config, slow).unwrap();
    let (inbox, out) = (root.path().join("in"), root.path().join("out"));
    let mut node = Node::start(&config, &root.path().join("node.log"));
    add_user(&config, "ops", "operator", "a long enough password");
    let token = token_for(&config, "ops");
    let first = instance_pid(&config, "iso", 0);
    for i in 0..4 {
        drop_file(&inbox, &format!("slow{i}.dat"), &content(i, 300));
    }
    // Two deliveries under way (4 s each) when the restart comes.
    wait_until(Duration::from_secs(30), "the files taken", || names(&inbox).is_empty());
    std::thread::sleep(Duration::from_millis(500));
    let answer = Command::new("curl")
        .args(["-sS", "-X", "POST", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("http://127.0.0.1:{port}/api/v1/hosts/iso/restart"))
        .output()
        .unwrap();
    assert_eq!(text(&answer.stdout), "200");
    instance_pid(&config, "iso", first);
    let log = node.log_text();
    assert!(
        log.contains("did not finish within its drain timeout; killing it"),
        "{log}"
    );
    wait_until(Duration::from_secs(60), "every file delivered", || count(&out) == 4);
    for i in 0..4 {
        assert!(std::fs::read(out.join(format!("slow{i}.dat"))).unwrap() == content(i, 300));
    }
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    let h = host(&config, "iso");
    assert_eq!(h["instances"][0]["recycles"], 1, "a forced recycle is a recycle: {h}");
    node.stop();
}
