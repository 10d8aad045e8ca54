//! Configurations as an operator meets them (issue 13): `sluice check`,
//! `SLUICE_CONFIG`, and a configuration broken during an incident.

use std::path::Path;

use crate::common::*;

/// A configuration with three errors in three places: an unknown key, a
/// filter that does not parse, a duration without a unit.
fn three_errors(config: &Path) {
    let text = std::fs::read_to_string(config)
        .unwrap()
        .replace("mask = \"*\"", "maks = \"*\"")
        .replace("file.name ends-with", "file.name endswith")
        .replace(
            "retry = { count = 3, interval = \"1s\" }\n\n[send_ports.xml]",
            "retry = { count = 3, interval = \"90\" }\n\n[send_ports.xml]",
        );
    std::fs::write(config, text).unwrap();
}

/// `sluice check` reports every error of a file, each with its key and
/// line, and exits 1; a valid file gets a summary and exit 0. Neither
/// starts anything: no data directory is made, no address is bound (the
/// HTTP location's and the metrics' addresses are held by the test).
#[test]
fn check_reports_every_error_and_starts_nothing() {
    let root = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = write_config(
        root.path(),
        &format!(
            "\n[receive_ports.web.locations.orders]\nadapter = {{ type = \"http\", address = \"{}\" }}\n\
             [metrics]\naddress = \"{}\"\n",
            held.local_addr().unwrap(),
            metrics.local_addr().unwrap()
        ),
    );
    let out = run(sluice().args(["check", "--config"]).arg(&config));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for wanted in [
        "is valid",
        "receive locations  2: in-folder (port in, file), orders (port web, http)",
        "send ports         2: out (file), xml (file)",
        "hosts              1: default",
        "metrics            http://127.0.0.1:",
    ] {
        assert!(stdout.contains(wanted), "{wanted}: {stdout}");
    }
    assert!(!root.path().join("data").exists(), "check made the data directory");

    three_errors(&config);
    let out = run(sluice().args(["check", "--config"]).arg(&config));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error[config]: configuration file "), "{stderr}");
    for wanted in [
        "3 errors",
        "`receive_ports.in.locations.in-folder.adapter` (line 4): unknown field `maks`",
        "`send_ports.out.retry.interval` (line 9): invalid value: string \"90\", expected a duration",
        "e.g. \"90s\"",
        "`send_ports.xml.filter` (line 12): invalid filter",
    ] {
        assert!(stderr.contains(wanted), "{wanted}: {stderr}");
    }
    assert!(!root.path().join("data").exists(), "check made the data directory");
}

/// `SLUICE_CONFIG` is the default of `--config`, for every command.
#[test]
fn sluice_config_is_the_default_configuration() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let out = run(sluice().arg("check").env("SLUICE_CONFIG", &config));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut node = Node::start(&config, &root.path().join("node.log"));
    drop_file(&root.path().join("in"), "a.txt", b"hello");
    wait_until(std::time::Duration::from_secs(30), "delivered", || {
        names(&root.path().join("out")).len() == 1
    });
    node.stop();
    for args in [
        &["status", "--json"][..],
        &["messages", "tracking"],
        &["suspended", "list"],
    ] {
        let out = run(sluice().args(args).env("SLUICE_CONFIG", &config));
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    // --config wins over the variable.
    let out = run(sluice()
        .args(["status", "--config"])
        .arg(&config)
        .env("SLUICE_CONFIG", "/nonexistent/sluice.toml"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(sluice().arg("status").env("SLUICE_CONFIG", "/nonexistent/sluice.toml"));
    assert!(
        text(&out.stderr).contains("cannot read configuration file /nonexistent/sluice.toml"),
        "{}",
        text(&out.stderr)
    );
}

/// A configuration broken during an incident does not block looking into
/// the box: the read-only commands work, with a warning naming the errors;
/// the commands that change things refuse it.
#[test]
fn reading_the_box_works_with_a_configuration_broken_elsewhere() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let mut node = Node::start(&config, &root.path().join("node.log"));
    std::fs::create_dir_all(root.path().join("out")).unwrap();
    std::fs::write(root.path().join("out/a.txt"), b"other bytes").unwrap();
    drop_file(&root.path().join("in"), "a.txt", b"hello");
    // The FILE send port finds other bytes under the name: retried, then
    // suspended (3 retries a second apart).
    wait_until(std::time::Duration::from_secs(30), "suspended", || {
        status_json(&config)["suspended"] == 1
    });
    node.stop();
    three_errors(&config);
    let reading: &[&[&str]] = &[
        &["status"],
        &["messages", "list"],
        &["messages", "tracking"],
        &["suspended", "list"],
        &["suspended", "show", "1"],
    ];
    for args in reading {
        let out = run(sluice().args(*args).arg("--config").arg(&config));
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("warning: configuration file ")
                && stderr.contains("is not valid (3 error(s)); reading the box sqlite:")
                && stderr.contains("unknown field `maks`")
                && stderr.contains("`sluice check --config"),
            "{args:?}: {stderr}"
        );
    }
    let out = run(sluice().args(["suspended", "list", "--json", "--config"]).arg(&config));
    assert_eq!(json_of(&out, "suspended list")[0]["subscriber"], "out");
    let changing: &[&[&str]] = &[
        &["suspended", "resume", "--all"],
        &["suspended", "terminate", "1"],
        &["publish"],
        &["serve"],
    ];
    for args in changing {
        let out = run(sluice().args(*args).arg("--config").arg(&config));
        let stderr = text(&out.stderr);
        assert!(
            out.status.code() == Some(1) && stderr.starts_with("error[config]: ") && stderr.contains("3 errors"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(status_json(&config)["suspended"], 1, "nothing changed");
    // Without a data directory there is no box to read.
    let text_now = std::fs::read_to_string(&config)
        .unwrap()
        .replace("data_dir = \"data\"", "");
    std::fs::write(&config, text_now).unwrap();
    let out = run(sluice().args(["status", "--config"]).arg(&config));
    assert!(
        !out.status.success() && text(&out.stderr).contains("missing field `data_dir`"),
        "{}",
        text(&out.stderr)
    );
}

/// A configuration that loads but will fail on some messages (a macro its
/// filter does not guarantee) passes `sluice check` with a warning that
/// names the key and the fix.
#[test]
fn check_warns_of_what_will_fail_on_some_messages() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        "\n[send_ports.by-order]\nfilter = 'receive.port == \"in\"'\n\
         adapter = { type = \"file\", path = \"orders\", file_name = \"%property:order.id%.xml\", create_folder = true }\n",
    );
    let out = run(sluice().args(["check", "--config"]).arg(&config));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("warnings           1"), "{stdout}");
    assert!(stdout.contains("`send_ports.by-order.adapter.file_name`"), "{stdout}");
    assert!(stdout.contains("and order.id exists"), "{stdout}");
}
