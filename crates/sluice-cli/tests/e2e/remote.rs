//! The CLI over HTTP (issue 15): `sluice --server URL --token-env NAME ...`
//! against a real node's REST API, no configuration file on the caller's
//! side: the same rows as the local commands on the same box, a body
//! downloaded whole, a resubmission with an edit delivered, a bulk
//! terminate dry-run then run, the API's refusals with their codes, and
//! no token in any output.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::*;

/// The environment variable the tests put the token in.
const TOKEN_ENV: &str = "SLUICE_TEST_API_TOKEN";

/// `sluice --server BASE --token-env TOKEN_ENV ARGS` with `token` in that
/// variable, nothing else to go by (no configuration, no SLUICE_*).
fn remote(base: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = sluice();
    cmd.args(["--server", base, "--token-env", TOKEN_ENV])
        .args(args)
        .env_remove("SLUICE_CONFIG")
        .env_remove("SLUICE_SERVER")
        .env_remove("SLUICE_TOKEN")
        .env_remove(TOKEN_ENV);
    if let Some(t) = token {
        cmd.env(TOKEN_ENV, t);
    }
    run(&mut cmd)
}

/// `remote`, expecting exit status `code`; stdout and stderr.
fn remote_expect(base: &str, token: &str, args: &[&str], code: i32) -> (String, String) {
    let out = remote(base, Some(token), args);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "{args:?}\nstdout: {o}\nstderr: {e}");
    (o, e)
}

fn suspended_count(config: &Path) -> u64 {
    status_json(config)["suspended"].as_u64().unwrap()
}

#[test]
fn an_operator_lists_reads_resubmits_and_terminates_on_a_node_through_the_cli_over_http() {
    let root = tempfile::tempdir().unwrap();
    let (config, base) = api_config(root.path(), "");
    let _node = Node::start(&config, &root.path().join("node.log"));
    add_user(&config, "olga", "operator", "olga-s3cret-pass");
    add_user(&config, "vic", "viewer", "vic-s3cret-pass");
    let (olga, vic) = (token_for(&config, "olga"), token_for(&config, "vic"));
    let bodies: [&[u8]; 3] = [b"first body", b"second body", b"third body"];
    for (i, body) in bodies.iter().enumerate() {
        drop_file(&root.path().join("in"), &format!("m{i}.txt"), body);
    }
    wait_until(Duration::from_secs(30), "three suspended", || {
        suspended_count(&config) == 3
    });

    // The same rows as the local command on the same box.
    let (listed, _) = remote_expect(&base, &olga, &["suspended", "list"], 0);
    let (local, _) = expect(&config, &["suspended", "list"], 0);
    assert_eq!(listed, local);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    let (limited, _) = remote_expect(
        &base,
        &olga,
        &["suspended", "list", "--port", "broken", "--limit", "2"],
        0,
    );
    let (local, _) = expect(&config, &["suspended", "list", "--port", "broken", "--limit", "2"], 0);
    assert_eq!(limited, local);
    assert!(limited.contains("more match"), "{limited}");
    let (json, _) = remote_expect(&base, &vic, &["suspended", "list", "--json"], 0);
    let entries: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ids: Vec<i64> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{json}");
    for args in [vec!["messages", "list"], vec!["messages", "tracking"], vec!["status"]] {
        let (over_http, _) = remote_expect(&base, &vic, &args, 0);
        let (here, _) = expect(&config, &args, 0);
        if args == ["status"] {
            // The first line says where: the server, or the data directory.
            assert!(over_http.starts_with(&format!("server          {base}")), "{over_http}");
            let tail = |s: &str| {
                s.lines()
                    .filter(|l| l.starts_with("suspended") || l.starts_with("spool"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            };
            assert_eq!(tail(&over_http), tail(&here));
        } else {
            assert_eq!(over_http, here, "{args:?}");
        }
    }

    // One entry in full, and its body to a file: the bytes as received.
    let id = ids[0].to_string();
    let (shown, _) = remote_expect(&base, &vic, &["suspended", "show", &id], 0);
    let (local, _) = expect(&config, &["suspended", "show", &id], 0);
    assert_eq!(shown, local);
    assert!(shown.contains("send port   broken"), "{shown}");
    let file = root.path().join("body.bin");
    let (said, _) = remote_expect(
        &base,
        &olga,
        &["suspended", "body", &id, "-o", file.to_str().unwrap()],
        0,
    );
    assert!(said.starts_with("wrote "), "{said}");
    let first = std::fs::read(&file).unwrap();
    assert!(bodies.contains(&first.as_slice()), "{first:?}");
    let (local_body, _) = expect(&config, &["suspended", "body", &id], 0);
    assert_eq!(local_body.as_bytes(), first.as_slice());
    // A viewer never reads a body: the API's 403, with its code.
    let (_, err) = remote_expect(&base, &vic, &["suspended", "body", &id], 1);
    assert!(err.starts_with("error[forbidden]: "), "{err}");

    // Resubmitted with one property set: delivered by the port it now matches.
    let (said, _) = remote_expect(
        &base,
        &olga,
        &["suspended", "resubmit", &id, "--set", "route.fixed=bool:true"],
        0,
    );
    let resent = said
        .strip_prefix(&format!("#{id}: resubmitted as "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{said}"))
        .to_string();
    assert!(said.trim_end().ends_with("-> good"), "{said}");
    wait_until(Duration::from_secs(30), "the resubmitted message delivered", || {
        std::fs::read(root.path().join("out").join(&resent)).ok() == Some(first.clone())
    });

    // A viewer may not change anything: the API's 403, exit status 1.
    let (_, err) = remote_expect(&base, &vic, &["suspended", "terminate", "--all"], 1);
    assert!(err.starts_with("error[forbidden]: "), "{err}");
    assert_eq!(suspended_count(&config), 2);

    // Bulk: a dry run lists and changes nothing, then the run.
    let (dry, _) = remote_expect(
        &base,
        &olga,
        &["suspended", "terminate", "--port", "broken", "--dry-run"],
        0,
    );
    let (local_dry, _) = expect(&config, &["suspended", "terminate", "--port", "broken", "--dry-run"], 0);
    assert_eq!(dry, local_dry);
    for other in &ids[1..] {
        assert!(
            dry.contains(&format!("#{other}: would terminate (port broken")),
            "{dry}"
        );
    }
    assert!(
        dry.contains("(dry run: 2 would be terminated; nothing was changed)"),
        "{dry}"
    );
    assert_eq!(suspended_count(&config), 2, "a dry run changes nothing");
    let (_, err) = remote_expect(&base, &olga, &["suspended", "terminate", "--port", "nope"], 1);
    assert!(err.starts_with("error[nothing_matches]: "), "{err}");
    let (done, _) = remote_expect(&base, &olga, &["suspended", "terminate", "--port", "broken"], 0);
    for other in &ids[1..] {
        assert!(done.contains(&format!("#{other}: terminated\n")), "{done}");
    }
    assert!(
        done.contains("terminated 2 of 2; 0 failed, 0 skipped, 0 taken by another operation"),
        "{done}"
    );
    assert_eq!(suspended_count(&config), 0);
    let (_, err) = remote_expect(&base, &olga, &["suspended", "resume", &ids[1].to_string()], 1);
    assert!(err.contains("does not exist"), "{err}");

    let left = json_of(
        &remote(&base, Some(&olga), &["suspended", "list", "--json"]),
        "suspended list --json",
    );
    assert_eq!(left, serde_json::json!([]));

    // A wrong token: refused (401), and its text in no output.
    let forged = format!("{}x", &olga[..olga.len() - 1]);
    let out = remote(&base, Some(&forged), &["suspended", "list"]);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{o}\n{e}");
    assert!(e.starts_with("error[unauthenticated]: "), "{e}");
    assert!(e.contains(&base), "the error names the server: {e}");
    let secret = &forged[forged.len() - 20..];
    assert!(!o.contains(secret) && !e.contains(secret), "{o}\n{e}");
}

#[test]
fn without_a_server_or_a_configuration_or_with_a_closed_port_the_cli_says_so_quickly() {
    // A port nothing listens on: refused at once, the server named.
    let base = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = remote(&base, Some("sluice_abc_not-a-real-secret"), &["suspended", "list"]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.starts_with("error[unreachable]: "), "{e}");
    assert!(e.contains(&format!("cannot connect to {base}")), "{e}");
    assert!(!e.contains("not-a-real-secret"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it hung: {:?}",
        started.elapsed()
    );

    // No token in the variable named: said before anything is sent.
    let out = remote(&base, None, &["status"]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.starts_with("error[unauthenticated]: no API token") && e.contains(TOKEN_ENV),
        "{e}"
    );

    // Commands that work on the node's machine only.
    for args in [vec!["serve"], vec!["check"], vec!["publish"], vec!["tokens", "list"]] {
        let out = remote(&base, Some("t"), &args);
        let e = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.starts_with("error[invalid_argument]: "), "{args:?}: {e}");
    }

    // Neither --server nor --config: a clear error, not a local box.
    let out = run(sluice()
        .args(["suspended", "list"])
        .env_remove("SLUICE_CONFIG")
        .env_remove("SLUICE_SERVER"));
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(e.contains("--config") && e.contains("--server"), "{e}");

    // Not a URL.
    let out = remote("127.0.0.1:1", Some("t"), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error[invalid_argument]: --server"),
        "{}",
        text(&out.stderr)
    );
}
