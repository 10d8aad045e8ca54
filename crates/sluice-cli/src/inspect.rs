//! `sluice status` and `sluice messages`: read the box beside a running node.

use anyhow::Context as _;
use sluice_host::Config;
use sluice_host::status::{STATUS_EVERY, STATUS_FILE};
use sluice_host::throttle::Bytes;
use sluice_model::{Context, MessageId};
use sluice_msgbox::Part;

use crate::store::open_read as open;

fn now_ms() -> i64 {
    use sluice_msgbox::Clock;
    sluice_msgbox::SystemClock.now_ms()
}

pub use sluice_host::ops::ms_to_text;

/// A message's parts as JSON: name, size, CRC-32.
pub fn parts_json(parts: &[Part]) -> serde_json::Value {
    parts
        .iter()
        .map(|p| serde_json::json!({"name": p.name, "size": p.size, "crc32": format!("{:08x}", p.crc32)}))
        .collect()
}

/// Every property: key, type, value, and whether it is promoted.
pub fn print_context(context: &Context) {
    println!("context");
    for p in context.iter() {
        println!(
            "  {:<32} {:<9} {}{}",
            p.key(),
            p.value.value_type().as_str(),
            p.value,
            if p.promoted { "  (promoted)" } else { "" }
        );
    }
}

pub fn print_parts(parts: &[Part]) {
    println!("parts");
    for (i, p) in parts.iter().enumerate() {
        println!("  {i}: {:<20} {:>12} bytes  crc32 {:08x}", p.name, p.size, p.crc32);
    }
}

pub async fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let b = open(config)?;
    let c = b.counts().await.context("reading counts")?;
    // The node's live state (throttling) is in its status.json report.
    let node =
        sluice_host::status::read(&config.data_dir).map_err(|e| anyhow::anyhow!("reading the node's report {e}"))?;
    let age_ms = node.as_ref().map(|n| (now_ms() - n.written_at_ms).max(0));
    if json {
        let mut v = serde_json::to_value(&c)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("node".into(), serde_json::to_value(&node)?);
            obj.insert("node_report_age_ms".into(), serde_json::to_value(age_ms)?);
        }
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    println!("data dir        {}", config.data_dir.display());
    match (&node, age_ms) {
        (Some(n), Some(age)) => {
            let stale = if age > 5 * STATUS_EVERY.as_millis() as i64 {
                "  (stale: the node may have been killed or be stuck)"
            } else {
                ""
            };
            println!(
                "node            pid {}, RSS {}, reported {:.1} s ago{stale}",
                n.pid,
                Bytes(n.rss),
                age as f64 / 1000.0
            );
            if let Some(a) = &n.metrics_address {
                println!("metrics         http://{a}/metrics");
            }
            println!("hosts");
            for (name, h) in &n.hosts {
                let state = match &h.now.detail {
                    Some(d) if h.throttled => format!("THROTTLED: {d}"),
                    _ => "open".to_string(),
                };
                println!(
                    "  {name:<14}{state}; in flight {} ({}), waiting {}, throttled {} time(s) since start",
                    h.now.in_flight,
                    Bytes(h.now.in_flight_bytes),
                    h.now.waiting,
                    h.now.engagements
                );
            }
        }
        _ => println!("node            not running (no {STATUS_FILE} in the data dir)"),
    }
    println!("spool           {}", c.spool);
    println!("suspended       {}", c.suspended);
    println!("content bytes   {}", c.content_bytes);
    println!("queued");
    if c.queued.is_empty() {
        println!("  (no subscriptions)");
    }
    for (s, n) in &c.queued {
        println!("  {s:<14}{n}");
    }
    Ok(())
}

pub async fn list(config: &Config, limit: usize, after: Option<&str>, json: bool) -> anyhow::Result<()> {
    let b = open(config)?;
    let after = after.map(str::parse::<MessageId>).transpose()?;
    let list = b.list_messages(after, limit).await.context("listing messages")?;
    if json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(());
    }
    println!(
        "{:<26}  {:<30}  {:>4}  {:>5}  {:>12}",
        "ID", "CREATED", "REFS", "PARTS", "BYTES"
    );
    for m in &list {
        println!(
            "{:<26}  {:<30}  {:>4}  {:>5}  {:>12}",
            m.id,
            ms_to_text(m.created_at),
            m.refs,
            m.parts,
            m.size
        );
    }
    if list.is_empty() {
        println!("(no messages)");
    }
    Ok(())
}

pub async fn show(config: &Config, id: &str, json: bool) -> anyhow::Result<()> {
    let b = open(config)?;
    let id: MessageId = id.parse()?;
    let Some(m) = b.message(id).await.with_context(|| format!("reading message {id}"))? else {
        anyhow::bail!("message {id} is not in the box (it was delivered and released, or never existed)");
    };
    if json {
        let parts = parts_json(&m.parts);
        let v = serde_json::json!({
            "id": m.id,
            "created_at": ms_to_text(m.created_at),
            "refs": m.refs,
            "context": m.context.to_display_json(),
            "parts": parts,
            "queue": m.queue,
            "suspended": m.suspended,
            "holders": m.holders,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("message   {}", m.id);
    println!("created   {}", ms_to_text(m.created_at));
    println!("refs      {}", m.refs);
    print_context(&m.context);
    print_parts(&m.parts);
    if !m.queue.is_empty() {
        println!("queued");
        for q in &m.queue {
            println!(
                "  {:<16} entry {:<8} attempts {:<3} {}{}",
                q.subscriber,
                q.entry,
                q.attempts,
                if q.leased { "leased until " } else { "ready at " },
                ms_to_text(q.visible_at)
            );
            if let Some(e) = &q.last_error {
                println!("    last error: {e}");
            }
        }
    }
    for s in &m.suspended {
        println!(
            "suspended #{} ({}) at {}: {}",
            s.id,
            s.subscriber.as_deref().unwrap_or("no subscriber"),
            ms_to_text(s.suspended_at),
            s.reason
        );
    }
    for h in &m.holders {
        println!("held by   {h}");
    }
    Ok(())
}

/// Tracking events (delivered, terminated, resubmitted, completed), oldest
/// first, a page at a time; with `--json` completed events carry the context.
pub async fn tracking(config: &Config, message: Option<&str>, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let b = open(config)?;
    let message = message.map(str::parse::<MessageId>).transpose()?;
    let mut out = std::io::stdout().lock();
    if json {
        write!(out, "[")?;
    } else {
        writeln!(
            out,
            "{:<24}  {:<26}  {:<11}  {:<16}  DETAIL",
            "AT", "MESSAGE", "EVENT", "SUBSCRIBER"
        )?;
    }
    let mut after = None;
    let mut n = 0u64;
    loop {
        let page = b
            .tracking(message, after, 1000)
            .await
            .context("reading tracking events")?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for e in &page {
            if json {
                let mut v = serde_json::to_value(e)?;
                if let (Some(obj), Some(ctx)) = (v.as_object_mut(), &e.context) {
                    obj.insert("context".into(), ctx.to_display_json());
                }
                write!(out, "{}{}", if n == 0 { "" } else { "," }, serde_json::to_string(&v)?)?;
            } else {
                writeln!(
                    out,
                    "{:<24}  {:<26}  {:<11}  {:<16}  {}",
                    ms_to_text(e.at),
                    e.message_id,
                    e.event,
                    e.subscriber.as_deref().unwrap_or("-"),
                    e.detail.as_deref().unwrap_or("")
                )?;
            }
            n += 1;
        }
        if page.len() < 1000 {
            break;
        }
    }
    if json {
        writeln!(out, "]")?;
    } else if n == 0 {
        writeln!(out, "(no tracking events)")?;
    }
    Ok(())
}
