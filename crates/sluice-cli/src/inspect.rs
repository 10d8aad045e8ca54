//! `sluice status` and `sluice messages`: read the box beside a running node.

use std::ops::ControlFlow;

use sluice_host::Config;
use sluice_host::throttle::Bytes;
use sluice_model::Context;
use sluice_msgbox::Part;
use sluice_ops::messages::{self, Tracked};
use sluice_ops::parse::parse_message_id;
use sluice_ops::status::STATUS_FILE;

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

/// Every property: key, type, value, and whether it is promoted.
pub fn print_context(context: &Context) {
    outln!("context");
    for p in context.iter() {
        outln!(
            "  {:<32} {:<9} {}{}",
            p.key(),
            p.value.value_type().as_str(),
            p.value,
            if p.promoted { "  (promoted)" } else { "" }
        );
    }
}

pub fn print_parts(parts: &[Part]) {
    outln!("parts");
    for (i, p) in parts.iter().enumerate() {
        outln!("  {i}: {:<20} {:>12} bytes  crc32 {:08x}", p.name, p.size, p.crc32);
    }
}

pub async fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let b = open(config)?;
    let status = sluice_ops::status::status(&*b, &config.data_dir, now_ms()).await?;
    if json {
        outln!("{}", serde_json::to_string(&status)?);
        return Ok(());
    }
    let (c, node, age_ms) = (&status.counts, &status.node, status.node_report_age_ms);
    // The name columns are as wide as the longest name (hosts, subscribers).
    let hosts = node.iter().flat_map(|n| n.hosts.keys());
    let width = hosts
        .chain(c.queued.keys())
        .map(|name| name.chars().count() + 2)
        .fold(14, usize::max);
    outln!("data dir        {}", config.data_dir.display());
    match (node, age_ms) {
        (Some(n), Some(age)) => {
            let stale = if status.stale() {
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
            }
        }
        _ => outln!("node            not running (no {STATUS_FILE} in the data dir)"),
    }
    outln!("spool           {}", c.spool);
    outln!("suspended       {}", c.suspended);
    outln!("content bytes   {}", c.content_bytes);
    outln!("queued");
    if c.queued.is_empty() {
        outln!("  (no subscriptions)");
    }
    for (s, n) in &c.queued {
        outln!("  {s:<width$}{n}");
    }
    Ok(())
}

pub async fn list(config: &Config, limit: usize, after: Option<&str>, json: bool) -> anyhow::Result<()> {
    let after = after.map(parse_message_id).transpose()?;
    let b = open(config)?;
    let list = messages::list(&*b, &Default::default(), after, limit).await?.items;
    if json {
        outln!("{}", serde_json::to_string(&list)?);
        return Ok(());
    }
    outln!(
        "{:<26}  {:<30}  {:>4}  {:>5}  {:>12}",
        "ID",
        "CREATED",
        "REFS",
        "PARTS",
        "BYTES"
    );
    for m in &list {
        outln!(
            "{:<26}  {:<30}  {:>4}  {:>5}  {:>12}",
            m.id,
            ms_to_text(m.created_at),
            m.refs,
            m.parts,
            m.size
        );
    }
    if list.is_empty() {
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
    outln!("message   {}", m.id);
    outln!("created   {}", ms_to_text(m.created_at));
    outln!("refs      {}", m.refs);
    print_context(&m.context);
    print_parts(&m.parts);
    if !m.queue.is_empty() {
        outln!("queued");
        for q in &m.queue {
            outln!(
                "  {:<16} entry {:<8} attempts {:<3} {}{}",
                q.subscriber,
                q.entry,
                q.attempts,
                if q.leased { "leased until " } else { "ready at " },
                ms_to_text(q.visible_at)
            );
            if let Some(e) = &q.last_error {
                outln!("    last error: {e}");
            }
        }
    }
    for s in &m.suspended {
        outln!(
            "suspended #{} ({}) at {}: {}",
            s.id,
            s.subscriber.as_deref().unwrap_or("no subscriber"),
            ms_to_text(s.suspended_at),
            s.reason
        );
    }
    for h in &m.holders {
        outln!("held by   {h}");
    }
    Ok(())
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
        writeln!(
            out,
            "{:<24}  {:<26}  {:<11}  {:<24}  DETAIL",
            "AT", "MESSAGE", "EVENT", "WHERE"
        )?;
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
            writeln!(
                out,
                "{:<24}  {:<26}  {:<11}  {:<24}  {}",
                ms_to_text(e.at),
                e.message_id,
                e.event,
                place(e.subscriber.as_deref(), e.location.as_deref()),
                printable(e.detail.as_deref().unwrap_or(""))
            )
            .map_err(anyhow::Error::from)
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
