//! SFTP receive locations and send ports of the real binary against
//! OpenSSH's sshd (the compliance kit's fixture: keys of its own, on a
//! free port).

use std::time::Duration;

use sluice_adapters::kit::sshd::Sshd;

use crate::common::*;

/// Files dropped in a FILE location go out to an SFTP server, and files
/// waiting on the server come in through an SFTP location to a FILE port,
/// whole and each once, though the node is killed (`kill -9`) on the way;
/// the host key is checked against a `known_hosts` file.
#[test]
fn files_go_out_to_and_come_in_from_an_sftp_server_through_a_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let served = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(served.path());
    let known = root.path().join("known_hosts");
    std::fs::write(&known, format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_key)).unwrap();
    let inbound = sshd.files().join("inbound");
    std::fs::create_dir(&inbound).unwrap();
    const FILES: u64 = 150;
    let size = |i: u64| 10 + (i as usize * 7919) % 200_000;
    for i in 0..FILES {
        std::fs::write(inbound.join(format!("in-{i:03}.xml")), content(i, size(i))).unwrap();
    }
    let key = sshd.client_key();
    let config = write_config(
        root.path(),
        &format!(
            r#"
[send_ports.partner]
filter = 'receive.port == "in"'
adapter = {{ type = "sftp", url = "{out}", private_key_file = "{key}", known_hosts = "{known}", file_name = "%SourceFileName%", create_folder = true }}
retry = {{ count = 3, interval = "1s" }}

[receive_ports.sftpin.locations.partner]
adapter = {{ type = "sftp", url = "{inb}", private_key_file = "{key}", known_hosts = "{known}", file_mask = "*.xml", poll_interval = "200ms", max_connections = 3 }}

[send_ports.got]
filter = 'receive.port == "sftpin"'
adapter = {{ type = "file", path = "got", file_name = "%SourceFileName%.%MessageId%", create_folder = true }}
"#,
            out = sshd.url("outbound"),
            inb = sshd.url("inbound"),
            key = key.display(),
            known = known.display(),
        ),
    );
    let got = root.path().join("got");
    let outbound = sshd.files().join("outbound");
    let log = root.path().join("node.log");
    let mut node = Node::start(&config, &log);
    for i in 0..FILES {
        drop_file(
            &root.path().join("in"),
            &format!("out-{i:03}.dat"),
            &content(i, size(i)),
        );
    }
    wait_until(Duration::from_secs(60), "some files through", || {
        by_source(&got).len() >= 40 && names(&outbound).len() >= 40
    });
    node.kill9();
    let mut node = Node::start(&config, &log);
    wait_until(Duration::from_secs(120), "every file through both ways", || {
        by_source(&got).len() as u64 == FILES
            && names(&inbound).is_empty()
            && names(&outbound).len() as u64 == FILES
            && status_json(&config)["spool"] == 0
    });
    let got = by_source(&got);
    for i in 0..FILES {
        let (name_in, name_out) = (format!("in-{i:03}.xml"), format!("out-{i:03}.dat"));
        let copies = &got[&name_in];
        assert_eq!(copies.len(), 1, "{name_in} received {} times", copies.len());
        assert!(
            std::fs::read(&copies[0]).unwrap() == content(i, size(i)),
            "{name_in} differs"
        );
        assert!(
            std::fs::read(outbound.join(&name_out)).unwrap() == content(i, size(i)),
            "{name_out} differs"
        );
    }
    assert_eq!(status_json(&config)["suspended"], 0);
    node.stop();
}
