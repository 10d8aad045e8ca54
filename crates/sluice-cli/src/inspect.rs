//! `sluice status` and `sluice messages`: read the box beside a running
//! node, or a node's REST API (`--server`). Both print from the same JSON
//! (the operations' outputs serialized, or the API's answers).

use std::ops::ControlFlow;

use anyhow::Context as _;
use serde_json::Value;
use sluice_host::Config;
use sluice_host::throttle::Bytes;
use sluice_model::ValueType;
use sluice_ops::messages::{self, Tracked};
use sluice_ops::parse::parse_message_id;
use sluice_ops::status::{NodeStatus, STALE_AFTER_MS, STATUS_FILE};

use crate::remote::Remote;
use crate::store::open_read as open;

fn now_ms() -> i64 {
    use sluice_msgbox::Clock;
    sluice_msgbox::SystemClock.now_ms()
}

pub use sluice_ops::ms_to_text;

/// For a listing printed as it is read: go on while writing works, else
/// keep the error and stop.
pub fn stop_on_error<E>(written: Result<(), E>, failed: &mut Option<E>) -> ControlFlow<()> {
    match written {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            *failed = Some(e);
            ControlFlow::Break(())
        }
    }
}

/// Where something happened, for a table: `port out`, `location in-folder`
/// or `-` (a send port wins when both are known).
pub fn place(port: Option<&str>, location: Option<&str>) -> String {
    match (port, location) {
        (Some(port), _) => format!("port {port}"),
        (None, Some(location)) => format!("location {location}"),
        (None, None) => "-".to_string(),
    }
}

/// Every property: key, type, value, and whether it is promoted, from the
/// context as answers show it (`[{namespace, name, type, value,
/// promoted}]`: `Context::to_display_json`, or the REST API's JSON).
pub fn print_context(context: &Value) {
    outln!("context");
    for p in context.as_array().into_iter().flatten() {
        let (namespace, name, ty) = (text_of(p, "namespace"), text_of(p, "name"), text_of(p, "type"));
        let key = if namespace.is_empty() {
            name.to_string()
        } else {
            format!("{namespace}.{name}")
        };
        // Shown as the value's own Display (strings quoted): the JSON
        // value read back as its type, as it was written.
        let raw = match &p["value"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let value = ValueType::parse(ty)
            .and_then(|t| sluice_model::Value::from_text(t, &raw).ok())
            .map(|v| v.to_string())
            .unwrap_or(raw);
        outln!(
            "  {:<32} {:<9} {}{}",
            printable(&key),
            printable(ty),
            printable(&value),
            if p["promoted"].as_bool() == Some(true) {
                "  (promoted)"
            } else {
                ""
            }
        );
    }
}

/// Parts as answers show them: `[{name, size, crc32}]` (CRC-32 in hex).
pub fn print_parts(parts: &Value) {
    outln!("parts");
    for (i, p) in parts.as_array().into_iter().flatten().enumerate() {
        outln!(
            "  {i}: {:<20} {:>12} bytes  crc32 {}",
            printable(text_of(p, "name")),
            number(p, "size"),
            printable(text_of(p, "crc32"))
        );
    }
}

/// A text field of an answer (empty if it is not there).
pub fn text_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A text field of an answer that may be null.
pub fn some_text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A whole number of an answer (0 if it is not there).
pub fn number(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or_default()
}

/// A time of an answer (ms) as text.
pub fn time_of(v: &Value, key: &str) -> String {
    ms_to_text(number(v, key))
}

pub async fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let b = open(config)?;
    let status = sluice_ops::status::status(&*b, &config.data_dir, now_ms()).await?;
    if json {
        outln!("{}", serde_json::to_string(&status)?);
        return Ok(());
    }
    print_status(
        &format!("data dir        {}", config.data_dir.display()),
        &serde_json::to_value(&status)?,
    )
}

/// `status` through the node's REST API.
pub async fn status_remote(r: &Remote, json: bool) -> anyhow::Result<()> {
    let status = r.get("/api/v1/status", &[], "reading the status").await?;
    if json {
        outln!("{status}");
        return Ok(());
    }
    print_status(&format!("server          {}", r.server()), &status)
}

/// The status as `sluice_ops::status::Status` serializes it.
fn print_status(first: &str, status: &Value) -> anyhow::Result<()> {
    let node: Option<NodeStatus> =
        serde_json::from_value(status["node"].clone()).context("reading the node's report in the status")?;
    let age_ms = status["node_report_age_ms"].as_i64();
    let queued = status["queued"].as_object().cloned().unwrap_or_default();
    // The name columns are as wide as the longest name (hosts, subscribers).
    let hosts = node.iter().flat_map(|n| n.hosts.keys());
    let width = hosts
        .chain(queued.keys())
        .map(|name| name.chars().count() + 2)
        .fold(14, usize::max);
    outln!("{first}");
    match (&node, age_ms) {
        (Some(n), Some(age)) => {
            let stale = if age > STALE_AFTER_MS {
                "  (stale: the node may have been killed or be stuck)"
            } else {
                ""
            };
            outln!(
                "node            pid {}, RSS {}, reported {:.1} s ago{stale}",
                n.pid,
                Bytes(n.rss),
                age as f64 / 1000.0
            );
            if let Some(a) = &n.metrics_address {
                outln!("metrics         http://{a}/metrics");
            }
            outln!("hosts");
            for (name, h) in &n.hosts {
                let state = match &h.now.detail {
                    Some(d) if h.throttled => format!("THROTTLED: {d}"),
                    _ => "open".to_string(),
                };
                outln!(
                    "  {name:<width$}{state}; in flight {} ({}), waiting {}, throttled {} time(s) since start",
                    h.now.in_flight,
                    Bytes(h.now.in_flight_bytes),
                    h.now.waiting,
                    h.now.engagements
                );
                // Where an isolated host runs: its instance.
                let Some(view) = n
                    .host_instances
                    .iter()
                    .find(|v| v.name == *name && v.isolation == "process")
                else {
                    continue;
                };
                let pad = "";
                for i in &view.instances {
                    let limit = view
                        .memory_limit
                        .map(|l| format!(" (limit {})", Bytes(l)))
                        .unwrap_or_default();
                    let process = if i.pid == 0 {
                        "no process".to_string()
                    } else {
                        format!("pid {}, RSS {}{limit}, up {} s", i.pid, Bytes(i.rss_bytes), i.uptime_s)
                    };
                    outln!(
                        "  {pad:<width$}isolated: {}, {process}, handled {}, recycled {} ({} over memory), restarted {}",
                        i.state,
                        i.handled,
                        i.recycles,
                        i.memory_recycles,
                        i.restarts
                    );
                }
                if view.crash_loop {
                    outln!("  {pad:<width$}CRASH LOOP: its instances keep ending; see the node's log");
                }
                if let Some(exit) = &view.last_exit {
                    outln!("  {pad:<width$}last instance {exit}");
                }
            }
            // An isolated host with no instance running has no throttle to
            // report: it is in trouble, so it is shown all the same.
            for view in n
                .host_instances
                .iter()
                .filter(|v| v.isolation == "process" && !n.hosts.contains_key(&v.name))
            {
                let name = &view.name;
                for i in &view.instances {
                    outln!(
                        "  {name:<width$}isolated: {}, no instance running, recycled {} ({} over memory), restarted {}",
                        i.state,
                        i.recycles,
                        i.memory_recycles,
                        i.restarts
                    );
                }
                if view.crash_loop {
                    outln!(
                        "  {:<width$}CRASH LOOP: its instances keep ending; see the node's log",
                        ""
                    );
                }
                if let Some(exit) = &view.last_exit {
                    outln!("  {:<width$}last instance {exit}", "");
                }
            }
        }
        _ => outln!("node            not running (no {STATUS_FILE} in the data dir)"),
    }
    outln!("spool           {}", number(status, "spool"));
    outln!("suspended       {}", number(status, "suspended"));
    outln!("content bytes   {}", number(status, "content_bytes"));
    outln!("queued");
    if queued.is_empty() {
        outln!("  (no subscriptions)");
    }
    for (s, n) in &queued {
        outln!("  {s:<width$}{n}");
    }
    Ok(())
}

fn messages_header() -> String {
    format!(
        "{:<26}  {:<30}  {:>4}  {:>5}  {:>12}",
        "ID", "CREATED", "REFS", "PARTS", "BYTES"
    )
}

/// A row of `messages list`, from a message as answers show it.
fn message_row(m: &Value) -> String {
    format!(
        "{:<26}  {:<30}  {:>4}  {:>5}  {:>12}",
        text_of(m, "id"),
        time_of(m, "created_at"),
        number(m, "refs"),
        number(m, "parts"),
        number(m, "size")
    )
}

pub async fn list(config: &Config, limit: usize, after: Option<&str>, json: bool) -> anyhow::Result<()> {
    let mut after = after.map(parse_message_id).transpose()?;
    let b = open(config)?;
    // A search answers at most a window of the box per call.
    let mut list = Vec::new();
    while list.len() < limit {
        let page = messages::list(&*b, &Default::default(), after, limit - list.len()).await?;
        list.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if json {
        outln!("{}", serde_json::to_string(&list)?);
        return Ok(());
    }
    outln!("{}", messages_header());
    for m in &list {
        outln!("{}", message_row(&serde_json::to_value(m)?));
    }
    if list.is_empty() {
        outln!("(no messages)");
    }
    Ok(())
}

/// `messages list` through the node's REST API: pages of at most 1000
/// until `limit`.
pub async fn list_remote(r: &Remote, limit: usize, after: Option<&str>, json: bool) -> anyhow::Result<()> {
    let mut after = after.map(parse_message_id).transpose()?.map(|id| id.to_string());
    let mut n = 0usize;
    if json {
        out!("[");
    } else {
        outln!("{}", messages_header());
    }
    while n < limit {
        let mut query = vec![("limit", (limit - n).min(1000).to_string())];
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let page = r.get("/api/v1/messages", &query, "listing messages").await?;
        for m in page["items"].as_array().into_iter().flatten().take(limit - n) {
            if json {
                out!("{}{m}", if n == 0 { "" } else { "," });
            } else {
                outln!("{}", message_row(m));
            }
            n += 1;
        }
        match page["next"].as_str() {
            Some(next) => after = Some(crate::remote::advance(&after, next.to_string())?),
            None => break,
        }
    }
    if json {
        outln!("]");
    } else if n == 0 {
        outln!("(no messages)");
    }
    Ok(())
}

pub async fn show(config: &Config, id: &str, json: bool) -> anyhow::Result<()> {
    let id = parse_message_id(id)?;
    let b = open(config)?;
    let m = messages::show(&*b, id).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    print_message(&serde_json::to_value(&m)?);
    Ok(())
}

/// `messages show` through the node's REST API.
pub async fn show_remote(r: &Remote, id: &str, json: bool) -> anyhow::Result<()> {
    let id = parse_message_id(id)?;
    let m = r
        .get(&format!("/api/v1/messages/{id}"), &[], &format!("reading message {id}"))
        .await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    print_message(&m);
    Ok(())
}

/// A message as `sluice_ops::messages::MessageDetail` serializes it.
fn print_message(m: &Value) {
    outln!("message   {}", text_of(m, "id"));
    outln!("created   {}", text_of(m, "created_at"));
    outln!("refs      {}", number(m, "refs"));
    print_context(&m["context"]);
    print_parts(&m["parts"]);
    let queue = m["queue"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !queue.is_empty() {
        outln!("queued");
        for q in queue {
            let leased = q["leased"].as_bool() == Some(true);
            outln!(
                "  {:<16} entry {:<8} attempts {:<3} {}{}",
                text_of(q, "subscriber"),
                number(q, "entry"),
                number(q, "attempts"),
                if leased { "leased until " } else { "ready at " },
                time_of(q, "visible_at")
            );
            if let Some(e) = some_text(q, "last_error") {
                outln!("    last error: {e}");
            }
        }
    }
    for s in m["suspended"].as_array().into_iter().flatten() {
        outln!(
            "suspended #{} ({}) at {}: {}",
            number(s, "id"),
            some_text(s, "subscriber").unwrap_or("no subscriber"),
            time_of(s, "suspended_at"),
            text_of(s, "reason")
        );
    }
    for h in m["holders"].as_array().into_iter().flatten() {
        outln!("held by   {}", h.as_str().unwrap_or_default());
    }
}

fn tracking_header() -> String {
    format!(
        "{:<24}  {:<26}  {:<11}  {:<24}  DETAIL",
        "AT", "MESSAGE", "EVENT", "WHERE"
    )
}

/// A row of `messages tracking`, from an event as answers show it.
fn tracking_row(e: &Value) -> String {
    format!(
        "{:<24}  {:<26}  {:<11}  {:<24}  {}",
        time_of(e, "at"),
        text_of(e, "message_id"),
        text_of(e, "event"),
        place(some_text(e, "subscriber"), some_text(e, "location")),
        printable(text_of(e, "detail"))
    )
}

/// Tracking events (received, suspended, resumed, delivered, terminated,
/// resubmitted, completed), oldest first, a page at a time: where each
/// happened (send port or receive location) and its detail (a received
/// message's source, e.g. its file name); with `--json` completed events
/// carry the context.
pub async fn tracking(config: &Config, message: Option<&str>, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let message = message.map(parse_message_id).transpose()?;
    let b = open(config)?;
    let mut out = std::io::stdout().lock();
    if json {
        write!(out, "[")?;
    } else {
        writeln!(out, "{}", tracking_header())?;
    }
    let mut failed: Option<anyhow::Error> = None;
    let mut n = 0u64;
    // A page at a time, printed as it comes: memory does not grow with the list.
    let query = sluice_msgbox::TrackingQuery {
        message,
        ..Default::default()
    };
    messages::tracking(&*b, &query, |e| {
        let written = if json {
            serde_json::to_string(&Tracked::new(e))
                .map_err(anyhow::Error::from)
                .and_then(|j| Ok(write!(out, "{}{j}", if n == 0 { "" } else { "," })?))
        } else {
            serde_json::to_value(Tracked::new(e))
                .map_err(anyhow::Error::from)
                .and_then(|v| Ok(writeln!(out, "{}", tracking_row(&v))?))
        };
        n += 1;
        stop_on_error(written, &mut failed)
    })
    .await?;
    if let Some(e) = failed {
        return Err(e.context("writing the tracking events"));
    }
    if json {
        writeln!(out, "]")?;
    } else if n == 0 {
        writeln!(out, "(no tracking events)")?;
    }
    Ok(())
}

/// `messages tracking` through the node's REST API, a page at a time.
pub async fn tracking_remote(r: &Remote, message: Option<&str>, json: bool) -> anyhow::Result<()> {
    let message = message.map(parse_message_id).transpose()?;
    if json {
        out!("[");
    } else {
        outln!("{}", tracking_header());
    }
    let mut after: Option<i64> = None;
    let mut n = 0u64;
    loop {
        let mut query = vec![("limit", "1000".to_string())];
        if let Some(m) = message {
            query.push(("message", m.to_string()));
        }
        if let Some(a) = after {
            query.push(("after", a.to_string()));
        }
        let page = r.get("/api/v1/tracking", &query, "reading tracking events").await?;
        for e in page["items"].as_array().into_iter().flatten() {
            if json {
                out!("{}{e}", if n == 0 { "" } else { "," });
            } else {
                outln!("{}", tracking_row(e));
            }
            n += 1;
        }
        match page["next"].as_i64() {
            Some(next) => after = Some(crate::remote::advance(&after, next)?),
            None => break,
        }
    }
    if json {
        outln!("]");
    } else if n == 0 {
        outln!("(no tracking events)");
    }
    Ok(())
}

/// `text` for a terminal: control characters (a file name or request path
/// can hold any) escaped, so a table cannot move the cursor or change
/// colours.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::printable("a.txt"), "a.txt");
        assert_eq!(super::printable("a\u{1b}[31mred\n.txt"), "a\\u{1b}[31mred\\n.txt");
    }
}
