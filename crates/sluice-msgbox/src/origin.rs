//! Where a message came from, as its `received` tracking event records it:
//! the same rules for every backend, read from the context the adapters
//! write (`receive.location`, `file.name`, `http.method`, ...).

use sluice_model::{Context, MessageId};

use crate::FAULT_NS;

/// Most characters of [`Origin::source`]: a longer one (an HTTP path a
/// client chose) is cut there, with `…`.
pub const MAX_SOURCE_CHARS: usize = 256;

/// Where a message came in, and what it was at its source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The receive location it came in by (`receive.location`; for a fault
    /// message, the failed message's `fault.location`).
    pub location: Option<String>,
    /// The send port it came in by: a solicit-response answer's
    /// `send.port` (for a fault message, the failed message's `fault.port`).
    pub port: Option<String>,
    /// What it was at its source, for an operator: the file name
    /// (`orders.xml`), the request (`POST /orders`), `response to <id>`,
    /// `published by cli`, `fault message of <id>`, `resubmission of <id>`;
    /// a record of an interchange adds `record <n>`.
    pub source: Option<String>,
}

impl Origin {
    /// The origin its context tells.
    pub fn of(context: &Context) -> Origin {
        let text = |ns: &str, name: &str| context.get(ns, name).map(|p| p.value.to_text());
        if let Some(original) = text(FAULT_NS, "message_id") {
            return Origin {
                location: text(FAULT_NS, "location"),
                port: text(FAULT_NS, "port"),
                source: Some(cut(format!("fault message of {original}"))),
            };
        }
        let port = text("send", "port");
        let base = if let Some(name) = text("file", "name") {
            Some(name)
        } else if let (Some(request), Some(_)) = (text("correlation", "id"), &port) {
            Some(match text("http", "status") {
                Some(status) => format!("response to {request} (HTTP {status})"),
                None => format!("response to {request}"),
            })
        } else if let (Some(method), Some(path)) = (text("http", "method"), text("http", "path")) {
            Some(format!("{method} {path}"))
        } else {
            text("publish", "by").map(|by| format!("published by {by}"))
        };
        let source = match (base, text("interchange", "sequence")) {
            (Some(base), Some(n)) => Some(format!("{base} record {n}")),
            (None, Some(n)) => Some(format!("record {n}")),
            (base, None) => base,
        };
        Origin {
            location: text("receive", "location"),
            port,
            source: source.map(cut),
        }
    }

    /// The new message of a resubmission of `original`.
    pub fn resubmission(original: MessageId) -> Origin {
        Origin {
            source: Some(format!("resubmission of {original}")),
            ..Origin::default()
        }
    }
}

/// At most [`MAX_SOURCE_CHARS`] characters.
fn cut(text: String) -> String {
    match text.char_indices().nth(MAX_SOURCE_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(props: &[(&str, &str, sluice_model::Value)]) -> Context {
        let mut c = Context::new();
        for (ns, name, v) in props {
            c.promote(ns, name, v.clone());
        }
        c
    }

    #[test]
    fn origins_say_where_and_what() {
        let file = ctx(&[
            ("receive", "location", "in-folder".into()),
            ("file", "name", "orders.xml".into()),
        ]);
        let o = Origin::of(&file);
        assert_eq!(o.location.as_deref(), Some("in-folder"));
        assert_eq!(o.port, None);
        assert_eq!(o.source.as_deref(), Some("orders.xml"));

        let mut record = file.clone();
        record.promote("interchange", "sequence", 3i64);
        assert_eq!(Origin::of(&record).source.as_deref(), Some("orders.xml record 3"));

        let http = ctx(&[
            ("receive", "location", "web".into()),
            ("http", "method", "POST".into()),
            ("http", "path", "/orders".into()),
        ]);
        assert_eq!(Origin::of(&http).source.as_deref(), Some("POST /orders"));

        let answer = ctx(&[
            ("correlation", "id", "01J".into()),
            ("send", "port", "ask".into()),
            ("http", "status", 200i64.into()),
            ("http", "method", "POST".into()),
        ]);
        let o = Origin::of(&answer);
        assert_eq!((o.location, o.port.as_deref()), (None, Some("ask")));
        assert_eq!(o.source.as_deref(), Some("response to 01J (HTTP 200)"));

        let cli = ctx(&[("publish", "by", "cli".into())]);
        assert_eq!(Origin::of(&cli).source.as_deref(), Some("published by cli"));

        let fault = ctx(&[
            ("fault", "message_id", "01K".into()),
            ("fault", "port", "out".into()),
            ("fault", "location", "in-folder".into()),
            ("file", "name", "a.txt".into()),
        ]);
        let o = Origin::of(&fault);
        assert_eq!(o.port.as_deref(), Some("out"));
        assert_eq!(o.location.as_deref(), Some("in-folder"));
        assert_eq!(o.source.as_deref(), Some("fault message of 01K"));

        assert_eq!(Origin::of(&Context::new()), Origin::default());
    }

    #[test]
    fn a_long_source_is_cut() {
        let long = "é".repeat(MAX_SOURCE_CHARS * 4);
        let o = Origin::of(&ctx(&[("file", "name", long.as_str().into())]));
        let source = o.source.unwrap();
        assert_eq!(source.chars().count(), MAX_SOURCE_CHARS + 1);
        assert!(source.ends_with('…'));
    }
}
