//! `sluice reload`: ask a running node to load its configuration again.

use std::path::Path;

use sluice_host::Config;

/// `sluice reload`: check the file here (its errors are printed without
/// bothering the node), then ask the node of its data directory to load it.
pub async fn reload(config: &Config, config_path: &Path, json: bool) -> anyhow::Result<()> {
    if !json {
        outln!(
            "asking the node of {} to load {} (a location or port that changed first finishes what it holds)",
            config.data_dir.display(),
            config_path.display()
        );
    }
    let outcome = sluice_host::control::request_reload(&config.data_dir, config_path).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        if outcome.applied && outcome.changes.is_empty() {
            outln!("reloaded {}: nothing changed", config_path.display());
        } else if outcome.applied {
            outln!("reloaded {}:", config_path.display());
        }
        for change in &outcome.changes {
            outln!("  {change}");
        }
        for warning in &outcome.warnings {
            eprintln!("warning: {warning}");
        }
    }
    if !outcome.applied {
        anyhow::bail!(ReloadFailed::Refused(outcome.errors));
    }
    if !outcome.errors.is_empty() {
        anyhow::bail!(ReloadFailed::Incomplete(outcome.errors));
    }
    Ok(())
}

/// How a reload the node answered did not go whole.
#[derive(Debug)]
pub enum ReloadFailed {
    /// The node refused it and runs the configuration it had.
    Refused(Vec<String>),
    /// The node took the configuration, but not all of it started.
    Incomplete(Vec<String>),
}

impl std::fmt::Display for ReloadFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (said, errors) = match self {
            ReloadFailed::Refused(e) => (
                "the node refused the configuration and keeps running the one it had:",
                e,
            ),
            ReloadFailed::Incomplete(e) => ("the node took the configuration, but not all of it runs:", e),
        };
        f.write_str(said)?;
        for e in errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ReloadFailed {}
