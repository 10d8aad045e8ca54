//! Logs on stderr: `SLUICE_LOG` sets the filter (default `info`),
//! `SLUICE_LOG_FORMAT` the format (`text`, the default, or `json`: one
//! JSON object per line). A value that is not valid is an error at start,
//! never silently replaced by the default.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// The variable of the filter.
pub const LOG_ENV: &str = "SLUICE_LOG";
/// The variable of the format.
pub const FORMAT_ENV: &str = "SLUICE_LOG_FORMAT";

const EXAMPLE: &str = "e.g. SLUICE_LOG=debug or SLUICE_LOG=info,sluice_host=debug";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`
    /// and the event's fields.
    Json,
}

/// The filter of `SLUICE_LOG` (unset or empty: `info`), or why it is not one.
pub fn filter(value: Option<&str>) -> Result<EnvFilter, String> {
    let value = value.map(str::trim).filter(|v| !v.is_empty()).unwrap_or("info");
    // A directive without `=` is a level or a target; a word that is
    // neither a level nor one of Sluice's targets is a mistake (`warning`,
    // `verbose`) that would otherwise silence almost every line.
    for directive in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[']);
        if bare && directive.parse::<LevelFilter>().is_err() && !directive.starts_with("sluice") {
            return Err(format!(
                "{LOG_ENV} `{value}`: `{directive}` is not a level (off, error, warn, info, debug, trace); \
                 to set the level of a target write target=level; {EXAMPLE}"
            ));
        }
    }
    // Libraries that log what they send, secrets included, whatever the
    // level asked for: the FTP client logs its `PASS` command at trace.
    let kept: Vec<&str> = value
        .split(',')
        .filter(|d| !SILENCED.iter().any(|t| d.trim().starts_with(t)))
        .collect();
    let value = kept.join(",");
    let silenced = SILENCED.iter().map(|t| format!(",{t}=off")).collect::<String>();
    EnvFilter::builder()
        .parse(format!("{value}{silenced}"))
        .map_err(|e| format!("{LOG_ENV} `{value}` is not a valid filter: {e}; {EXAMPLE}"))
}

/// Log targets never shown: they would print secrets (suppaftp logs each
/// command it sends, `PASS <password>` among them; russh logs the packets
/// it writes at trace, the password of a login among them; russh-sftp
/// logs what it reads and writes).
const SILENCED: &[&str] = &["suppaftp", "russh", "russh_sftp"];

/// The format of `SLUICE_LOG_FORMAT` (unset or empty: text), or why it is not one.
pub fn format(value: Option<&str>) -> Result<Format, String> {
    match value.map(str::trim).unwrap_or_default() {
        "" | "text" => Ok(Format::Text),
        "json" => Ok(Format::Json),
        other => Err(format!(
            "{FORMAT_ENV} `{other}` is not a log format: use text (the default) or json"
        )),
    }
}

/// Install the subscriber the environment asks for, writing to stderr.
pub fn init() -> Result<(), String> {
    let var = |name: &str| std::env::var(name).ok();
    let filter = filter(var(LOG_ENV).as_deref())?;
    let format = format(var(FORMAT_ENV).as_deref())?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_levels_targets_and_directives() {
        for good in [
            None,
            Some(""),
            Some("debug"),
            Some("WARN"),
            Some("info,sluice_host=debug"),
            Some("sluice_host"),
            Some("hyper=warn,info"),
        ] {
            assert!(filter(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn a_library_that_logs_secrets_stays_silent_whatever_is_asked() {
        for asked in [
            "trace",
            "trace,suppaftp=trace",
            "suppaftp::async_ftp=trace,info",
            "suppaftp=trace",
            "russh=trace,russh_sftp=debug",
            "russh::session=trace",
        ] {
            let shown = filter(Some(asked)).unwrap().to_string();
            for target in SILENCED {
                assert!(shown.contains(&format!("{target}=off")), "{asked}: {shown}");
                assert!(
                    !shown.contains(&format!("{target}=trace"))
                        && !shown.contains(&format!("{target}=debug"))
                        && !shown.contains(&format!("{target}::")),
                    "{asked}: {shown}"
                );
            }
        }
    }

    #[test]
    fn a_filter_that_is_not_one_is_an_error_with_an_example() {
        for bad in ["warning", "verbose", "info,chatty", "sluice_host=loud", "[{"] {
            let e = filter(Some(bad)).unwrap_err();
            assert!(
                e.starts_with(&format!("SLUICE_LOG `{bad}`")) && e.contains("e.g. SLUICE_LOG=debug"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn formats_are_text_and_json() {
        assert_eq!(format(None), Ok(Format::Text));
        assert_eq!(format(Some("text")), Ok(Format::Text));
        assert_eq!(format(Some("json")), Ok(Format::Json));
        let e = format(Some("xml")).unwrap_err();
        assert!(
            e.contains("SLUICE_LOG_FORMAT `xml`") && e.contains("text") && e.contains("json"),
            "{e}"
        );
    }
}
