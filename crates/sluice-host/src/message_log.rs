//! Per-message log lines: one for each message a receive location
//! publishes and one for each message a send port delivers, at `info` with
//! `log_messages = true` in the configuration, at `debug` without it (a
//! busy node's log stays readable at the default level).

use std::sync::atomic::{AtomicBool, Ordering};

use sluice_model::Context;

/// Node-wide (one node per process): set when the node starts.
static ON: AtomicBool = AtomicBool::new(false);

/// Per-message lines at `info` (`log_messages = true`) or at `debug`.
pub(crate) fn set(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

pub(crate) fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// `tracing::info!` when per-message lines are on, else `tracing::debug!`.
macro_rules! message_event {
    ($($arg:tt)+) => {
        if $crate::message_log::on() {
            tracing::info!($($arg)+)
        } else {
            tracing::debug!($($arg)+)
        }
    };
}
pub(crate) use message_event;

/// Where a message came from, as an operator knows it: the file name
/// (`file.name`), else the HTTP method and path, else `-`.
pub(crate) fn source(context: &Context) -> String {
    let text = |ns: &str, name: &str| context.get(ns, name).and_then(|p| p.value.as_str().map(str::to_string));
    if let Some(name) = text("file", "name") {
        return name;
    }
    match (text("http", "method"), text("http", "path")) {
        (Some(method), Some(path)) => format!("{method} {path}"),
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_the_file_name_or_the_request() {
        let mut c = Context::new();
        assert_eq!(source(&c), "-");
        c.promote("http", "method", "POST");
        c.promote("http", "path", "/orders");
        assert_eq!(source(&c), "POST /orders");
        c.promote("file", "name", "a.xml");
        assert_eq!(source(&c), "a.xml");
    }
}
