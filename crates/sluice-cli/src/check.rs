//! `sluice check`: validate a configuration without starting anything (no
//! data directory made, no box opened, no address bound), and the warning
//! of commands that read the box with a configuration invalid elsewhere.

use std::path::Path;

use sluice_host::Config;
use sluice_host::config::ConfigError;

/// Problems named in the warning of a command that reads the box anyway.
const WARN_FIRST: usize = 3;

/// Load and check the configuration at `path`: every error found (an
/// `error[config]`, exit status 1), or a short summary of what it configures.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    outln!("configuration file {} is valid", path.display());
    outln!("data dir           {}", config.data_dir.display());
    outln!("store              {}", config.store_url());
    let mut locations = Vec::new();
    for (port, pc) in &config.receive_ports {
        for (name, lc) in &pc.locations {
            let disabled = if lc.enabled { "" } else { ", disabled" };
            locations.push(format!("{name} (port {port}, {}{disabled})", lc.adapter.kind()));
        }
    }
    outln!("receive locations  {}", listed(&locations));
    let ports: Vec<String> = config
        .send_ports
        .iter()
        .map(|(name, sp)| {
            let backup = sp.backup.as_ref().map(|b| format!(", backup {}", b.adapter.kind()));
            let stopped = if sp.enabled { "" } else { ", stopped" };
            format!("{name} ({}{}{stopped})", sp.adapter.kind(), backup.unwrap_or_default())
        })
        .collect();
    outln!("send ports         {}", listed(&ports));
    let hosts: Vec<String> = config.hosts.keys().cloned().collect();
    outln!("hosts              {}", listed(&hosts));
    match &config.metrics {
        Some(m) => outln!("metrics            http://{}/metrics", m.address),
        None => outln!("metrics            off"),
    }
    outln!("log messages       {}", if config.log_messages { "on" } else { "off" });
    let warnings = config.warnings();
    if !warnings.is_empty() {
        outln!(
            "warnings           {} (it runs, but these will fail on some messages):",
            warnings.len()
        );
        for w in &warnings {
            outln!("  `{}`: {}", w.key, w.message);
        }
    }
    Ok(())
}

/// `3: a, b, c`, or `none`.
fn listed(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        format!("{}: {}", items.len(), items.join(", "))
    }
}

/// Say on stderr that the configuration is invalid, naming its first
/// problems, and that the box is read all the same.
pub fn warn_invalid(path: &Path, e: &ConfigError, config: &Config) {
    let problems = e.problems();
    eprintln!(
        "warning: configuration file {} is not valid ({} error(s)); reading the box {} all the same",
        path.display(),
        problems.len(),
        config.store_url()
    );
    for p in problems.iter().take(WARN_FIRST) {
        eprintln!("  {p}");
    }
    if problems.len() > WARN_FIRST {
        eprintln!("  ... and {} more", problems.len() - WARN_FIRST);
    }
    eprintln!("  (`sluice check --config {}` lists every error)", path.display());
}
