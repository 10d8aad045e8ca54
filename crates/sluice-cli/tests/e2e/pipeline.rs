//! Pipelines through the real binary: gzip on the way out, gzip/zstd on the
//! way in, and what a broken compressed stream does.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn gunzip(path: &std::path::Path) -> Vec<u8> {
    let out = Command::new("gzip").arg("-dc").arg(path).output().expect("run gzip");
    assert!(
        out.status.success(),
        "gzip -dc {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The shipped example: files come out gzip-compressed as <name>.gz and
/// decompress to the input byte for byte.
#[test]
fn large_file_gzip_example_compresses_on_the_way_out() {
    let root = tempfile::tempdir().unwrap();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/large-file-gzip/sluice.toml"
    );
    let config = root.path().join("sluice.toml");
    std::fs::copy(example, &config).unwrap();
    std::fs::create_dir_all(root.path().join("in")).unwrap();
    let mut node = Node::start(&config, &root.path().join("node.log"));
    let text: Vec<u8> = (0..5_000_000u32)
        .flat_map(|i| format!("{i},customer-{},{}\n", i % 97, i * 3).into_bytes())
        .collect();
    drop_file(&root.path().join("in"), "orders.csv", &text);
    let out = root.path().join("out/orders.csv.gz");
    wait_until(Duration::from_secs(120), "orders.csv.gz", || out.exists());
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    node.stop();
    assert!(
        std::fs::metadata(&out).unwrap().len() < text.len() as u64 / 3,
        "it is compressed"
    );
    assert!(gunzip(&out) == text, "it decompresses to the input");
}

/// Decoding on the way in: a gzip upload is stored and delivered decoded; a
/// truncated one is not routed: it is suspended as received (its bytes
/// kept), with an error that says which stage and component failed and
/// where, and the node goes on.
#[test]
fn gzip_decode_on_receive_and_a_truncated_stream() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        r#"
[receive_ports.packed.locations.packed-folder]
adapter = { type = "file", path = "packed", settle = "100ms", poll_interval = "100ms", retry_after = "1h" }
pipeline = { decode = [{ type = "gzip" }] }

[send_ports.unpacked]
filter = 'receive.port == "packed"'
adapter = { type = "file", path = "unpacked", file_name = "%SourceFileStem%", create_folder = true }
"#,
    );
    std::fs::create_dir_all(root.path().join("packed")).unwrap();
    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);
    let data: Vec<u8> = (0..300_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let packed = gzip(&data);
    drop_file(&root.path().join("packed"), "good.txt.gz", &packed);
    drop_file(&root.path().join("packed"), "cut.txt.gz", &packed[..packed.len() / 2]);
    wait_until(Duration::from_secs(60), "good.txt delivered", || {
        root.path().join("unpacked/good.txt").exists()
    });
    assert!(std::fs::read(root.path().join("unpacked/good.txt")).unwrap() == data);
    wait_until(Duration::from_secs(60), "the truncated file to be suspended", || {
        status_json(&config)["suspended"] == 1
    });
    wait_until(
        Duration::from_secs(30),
        "the truncated file taken from the folder",
        || !root.path().join("packed/cut.txt.gz").exists(),
    );
    let out = run(sluice().args(["suspended", "list", "--json", "--config"]).arg(&config));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reason = list[0]["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains(
            "receive location `packed-folder`: decode stage, component gzip: the compressed stream is truncated (at input byte"
        ),
        "{reason}"
    );
    let id = list[0]["message_id"].as_str().unwrap().to_string();
    let show = run(sluice()
        .args(["messages", "show", &id, "--json", "--config"])
        .arg(&config));
    let msg: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(
        msg["parts"][0]["size"],
        (packed.len() / 2) as u64,
        "the bytes are kept as received"
    );
    assert!(msg["context"].to_string().contains("cut.txt.gz"));
    // The good file went through; only the suspended one waits.
    assert_eq!(status_json(&config)["spool"], 1);
    let sid = list[0]["id"].as_i64().unwrap().to_string();
    assert_eq!(list[0]["resumable"], false);
    let resume = run(sluice().args(["suspended", "resume", &sid, "--config"]).arg(&config));
    assert!(!resume.status.success(), "its bytes are not what the send port expects");
    assert!(String::from_utf8_lossy(&resume.stderr).contains("not resumable"));
    let all = run(sluice().args(["suspended", "resume", "--all", "--config"]).arg(&config));
    assert!(String::from_utf8_lossy(&all.stdout).contains("skipped, not resumable"));
    assert!(
        run(sluice().args(["suspended", "terminate", &sid, "--config"]).arg(&config))
            .status
            .success()
    );
    wait_until(Duration::from_secs(30), "an empty box", || {
        status_json(&config)["spool"] == 0
    });
    assert_eq!(status_json(&config)["content_chunks"], 0, "nothing is left in the box");
    node.stop();
}
