//! Debatching through the real binary: the shipped example, interchanges
//! published whole or suspended whole, recoverable interchanges, and a crash
//! in the middle of one.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

/// An `<Orders>` document of `n` orders (ids 10001, 10002...); every third is ACME's.
fn orders(n: u32, bad: Option<u32>) -> String {
    let mut s = String::from("<?xml version=\"1.0\"?>\n<Orders xmlns=\"urn:example:orders\">\n");
    for i in 1..=n {
        let customer = if i % 3 == 0 { "ACME" } else { "Globex" };
        if Some(i) == bad {
            // No id attribute: fails the example's `order.id exists` rule.
            s.push_str(&format!("  <Order><Customer>{customer}</Customer></Order>\n"));
        } else {
            s.push_str(&format!(
                "  <Order id=\"{}\"><Customer>{customer}</Customer><Item sku=\"S-{i}\" qty=\"{}\"/></Order>\n",
                10_000 + i,
                i % 7 + 1
            ));
        }
    }
    s.push_str("</Orders>\n");
    s
}

fn example(root: &Path) -> std::path::PathBuf {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/debatch-xml/sluice.toml");
    let config = root.join("sluice.toml");
    let text = std::fs::read_to_string(example).unwrap().replace(
        r#"mask = "*.xml""#,
        r#"mask = "*.xml", settle = "200ms", poll_interval = "100ms""#,
    );
    std::fs::write(&config, text).unwrap();
    std::fs::create_dir_all(root.join("in")).unwrap();
    config
}

fn suspended(config: &Path) -> serde_json::Value {
    let out = run(sluice().args(["suspended", "list", "--json", "--config"]).arg(config));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn show(config: &Path, id: &str) -> serde_json::Value {
    let out = run(sluice()
        .args(["messages", "show", id, "--json", "--config"])
        .arg(config));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The shipped example: each order becomes a message named by its id, with
/// the document's namespace; ACME's orders also go to acme/.
#[test]
fn debatch_xml_example_splits_and_routes_by_promoted_properties() {
    let root = tempfile::tempdir().unwrap();
    let config = example(root.path());
    let mut node = Node::start(&config, &root.path().join("node.log"));
    // The sample shipped with the example, then a bigger one.
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/debatch-xml/orders.xml"
    ))
    .unwrap();
    drop_file(&root.path().join("in"), "sample.xml", &sample);
    drop_file(&root.path().join("in"), "orders.xml", orders(3000, None).as_bytes());
    let (out, acme) = (root.path().join("out"), root.path().join("acme"));
    wait_until(Duration::from_secs(120), "3003 orders in out/", || {
        names(&out).len() == 3003
    });
    wait_until(Duration::from_secs(60), "1002 orders in acme/", || {
        names(&acme).len() == 1002
    });
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    node.stop();
    assert_eq!(
        std::fs::read_to_string(out.join("1002.xml")).unwrap(),
        r#"<Order id="1002" xmlns="urn:example:orders"><Customer>Globex</Customer><Item sku="B-7" qty="1"/></Order>"#,
        "the sample's second order, standalone, with its namespace"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("10042.xml")).unwrap(),
        r#"<Order id="10042" xmlns="urn:example:orders"><Customer>ACME</Customer><Item sku="S-42" qty="1"/></Order>"#
    );
    assert!(acme.join("10042.xml").exists() && !acme.join("10041.xml").exists());
    assert!(names(&root.path().join("in")).is_empty());
}

/// By default an interchange is published whole or suspended whole: a bad
/// record (it fails the validate rule), or a document that breaks off, and
/// nothing of the file is routed; it is suspended as received, with the
/// stage, component and position.
#[test]
fn a_bad_record_suspends_the_whole_interchange() {
    let root = tempfile::tempdir().unwrap();
    let config = example(root.path());
    let mut node = Node::start(&config, &root.path().join("node.log"));
    let bad = orders(500, Some(300));
    drop_file(&root.path().join("in"), "bad.xml", bad.as_bytes());
    let cut = orders(400, None);
    let cut = &cut[..cut.find("<Order id=\"10250\"").unwrap() + 30];
    drop_file(&root.path().join("in"), "cut.xml", cut.as_bytes());
    wait_until(Duration::from_secs(60), "two suspended files", || {
        status_json(&config)["suspended"] == 2
    });
    wait_until(Duration::from_secs(30), "in/ emptied", || {
        names(&root.path().join("in")).is_empty()
    });
    // A good file behind them still goes through.
    drop_file(&root.path().join("in"), "good.xml", orders(10, None).as_bytes());
    wait_until(Duration::from_secs(60), "the good file's orders", || {
        names(&root.path().join("out")).len() == 10
    });
    let list = suspended(&config);
    let reasons: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap().to_string())
        .collect();
    let offset_300 = bad.find("<Order><Customer>").unwrap();
    assert!(
        reasons.iter().any(|r| r.contains(&format!(
            "receive location `orders-in`: validate stage, component rule: record 300 (at byte {offset_300}): does not satisfy `order.id exists`"
        ))),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(
            |r| r.contains("disassemble stage, component xml: the document ends inside a record")
                && r.contains("in record 250")
        ),
        "{reasons:?}"
    );
    for s in list.as_array().unwrap() {
        assert_eq!(s["resumable"], false);
        let msg = show(&config, s["message_id"].as_str().unwrap());
        let size = msg["parts"][0]["size"].as_u64().unwrap();
        assert!(
            size == bad.len() as u64 || size == cut.len() as u64,
            "kept as received: {size}"
        );
    }
    assert_eq!(
        status_json(&config)["spool"],
        2,
        "only the two suspended files are left"
    );
    node.stop();
}

/// With `recoverable = true` a bad record is suspended alone, with its
/// position, and the rest of the file is published.
#[test]
fn recoverable_interchange_suspends_only_the_bad_record() {
    let root = tempfile::tempdir().unwrap();
    let config = example(root.path());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        r#"max_record_size = "1MiB""#,
        "max_record_size = \"1MiB\"\nrecoverable = true",
    );
    std::fs::write(&config, text).unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("in"), "mixed.xml", orders(200, Some(77)).as_bytes());
    wait_until(Duration::from_secs(60), "199 orders in out/", || {
        names(&root.path().join("out")).len() == 199
    });
    wait_until(Duration::from_secs(30), "one suspended record", || {
        status_json(&config)["suspended"] == 1
    });
    let list = suspended(&config);
    let reason = list[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("validate stage, component rule: record 77 (at byte"),
        "{reason}"
    );
    assert_eq!(list[0]["resumable"], false);
    let msg = show(&config, list[0]["message_id"].as_str().unwrap());
    assert_eq!(
        msg["parts"][0]["size"].as_u64().unwrap(),
        r#"<Order xmlns="urn:example:orders"><Customer>Globex</Customer></Order>"#.len() as u64,
        "the suspended message is the bad record itself"
    );
    assert!(
        msg["context"].to_string().contains("mixed.xml"),
        "it keeps the file's context"
    );
    wait_until(Duration::from_secs(30), "only the bad record left", || {
        status_json(&config)["spool"] == 1
    });
    node.stop();
}

/// kill -9 while a large interchange is being staged: nothing of it was
/// visible, the staged part is discarded at restart, the file is read again,
/// and every order arrives once.
#[test]
fn kill9_in_the_middle_of_an_interchange() {
    let root = tempfile::tempdir().unwrap();
    let config = example(root.path());
    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);
    let n = 100_000;
    drop_file(&root.path().join("in"), "many.xml", orders(n, None).as_bytes());
    // Staged records count in the spool; none is queued until the commit.
    wait_until(Duration::from_secs(60), "records being staged", || {
        status_json(&config)["spool"].as_u64().unwrap() > 1000
    });
    node.kill9();
    let first_run = std::fs::read_to_string(&log).unwrap();
    let log2 = root.path().join("node2.log");
    let mut node = Node::start(&config, &log2);
    let out = root.path().join("out");
    wait_until(Duration::from_secs(300), "every order in out/", || {
        names(&out).len() == n as usize
    });
    wait_until(Duration::from_secs(60), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    assert_eq!(status_json(&config)["content_chunks"], 0);
    node.stop();
    let second_run = std::fs::read_to_string(&log2).unwrap();
    // Either the kill came before the commit (the restart discards what was
    // staged and reads the file again), or just after it (nothing to discard).
    let committed = first_run.contains("interchange published");
    let discarded = second_run.contains("discarded interchanges that were not committed");
    assert!(
        committed != discarded,
        "committed before the kill: {committed}, discarded at restart: {discarded}"
    );
}

/// The send side: records split from one file are batched again, N at a
/// time or after `wait`, into XML and JSON documents; every record lands in
/// exactly one batch.
#[test]
fn batching_assemblers_put_records_back_together() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        r#"
[receive_ports.orders.locations.xml-in]
adapter = { type = "file", path = "xml-in", settle = "200ms", poll_interval = "100ms" }
pipeline = { disassemble = { type = "xml", record = "/Orders/Order", promote = { "order.id" = "Order/@id" } } }

[receive_ports.items.locations.json-in]
adapter = { type = "file", path = "json-in", settle = "200ms", poll_interval = "100ms" }
pipeline = { disassemble = { type = "json", array = "/items" } }

[send_ports.xml-batches]
filter = 'receive.port == "orders"'
pipeline = { assemble = { type = "xml", root = "Orders", namespace = "urn:example:orders", batch = 50, wait = "1s" } }
adapter = { type = "file", path = "xml-out", file_name = "%MessageId%.xml", create_folder = true }

[send_ports.json-batches]
filter = 'receive.port == "items"'
pipeline = { assemble = { type = "json", key = "items", batch = 5, wait = "1s" }, encode = [{ type = "gzip" }] }
adapter = { type = "file", path = "json-out", file_name = "%MessageId%.json.gz", create_folder = true }
"#,
    );
    for d in ["xml-in", "json-in"] {
        std::fs::create_dir_all(root.path().join(d)).unwrap();
    }
    let mut node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("xml-in"), "orders.xml", orders(120, None).as_bytes());
    let items: Vec<String> = (0..7)
        .map(|i| format!("{{\"n\": {i}, \"name\": \"item {i}\"}}"))
        .collect();
    drop_file(
        &root.path().join("json-in"),
        "items.json",
        format!("{{\"items\": [{}]}}", items.join(", ")).as_bytes(),
    );
    let (xml_out, json_out) = (root.path().join("xml-out"), root.path().join("json-out"));
    wait_until(Duration::from_secs(60), "an empty box", || {
        status_json(&config)["spool"] == 0 && !names(&xml_out).is_empty() && !names(&json_out).is_empty()
    });
    node.stop();
    // XML: 50 + 50 + 20, each a document of its own.
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    for name in names(&xml_out) {
        let doc = std::fs::read_to_string(xml_out.join(&name)).unwrap();
        assert!(
            doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Orders xmlns=\"urn:example:orders\">\n"),
            "{doc}"
        );
        assert!(doc.ends_with("</Orders>\n"), "{doc}");
        let n = doc.matches("<Order id=").count();
        sizes.push(n);
        for part in doc.split("<Order id=\"").skip(1) {
            ids.push(part[..part.find('"').unwrap()].parse::<u32>().unwrap());
        }
    }
    sizes.sort();
    assert_eq!(sizes, vec![20, 50, 50]);
    ids.sort();
    assert_eq!(ids, (10_001..=10_120).collect::<Vec<_>>(), "every order exactly once");
    // JSON: 5 + 2, gzip-compressed after assembly.
    let mut ns = Vec::new();
    for name in names(&json_out) {
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(json_out.join(&name))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ns.extend(v["items"].as_array().unwrap().iter().map(|i| i["n"].as_i64().unwrap()));
    }
    ns.sort();
    assert_eq!(ns, (0..7).collect::<Vec<_>>());
    assert_eq!(names(&json_out).len(), 2);
}
