//! `sluice publish`: publish one message into the box from the command line,
//! beside a running node or not, as a receive location would: the body is
//! streamed into the content store, then the message is published (durable
//! when this returns). A running node's send ports poll their queues, so they
//! pick it up without being told.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use sluice_content::{WriteOptions, write_part};
use sluice_host::Config;
use sluice_model::{Context, Key, MessageId, Value, ValueType};
use sluice_msgbox::{MessageBox, NewMessage, Routed, SystemClock};
use sluice_msgbox_sqlite::{Options, SqliteBox};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What `--prop` accepts, for error messages.
const PROP_SYNTAX: &str = "KEY=TYPE:VALUE, TYPE one of string, int, float, bool, timestamp, bytes";

/// Parse one `--prop KEY=TYPE:VALUE` into its key and value.
fn parse_prop(arg: &str) -> Result<(Key, Value), String> {
    let (key, typed) = arg
        .split_once('=')
        .ok_or_else(|| format!("no `=` (expected {PROP_SYNTAX})"))?;
    let key = Key::parse(key).ok_or_else(|| {
        format!("`{key}` is not a property key (`namespace.name` or `name`; a name starts with a letter or `_`)")
    })?;
    let (ty, text) = typed
        .split_once(':')
        .ok_or_else(|| format!("no `TYPE:` before the value (expected {PROP_SYNTAX})"))?;
    let ty = ValueType::parse(ty).ok_or_else(|| format!("unknown type `{ty}` (expected {PROP_SYNTAX})"))?;
    let value = match ty {
        // Strictly RFC 3339 (`Value::from_text` also takes stored nanoseconds).
        ValueType::Timestamp => OffsetDateTime::parse(text, &Rfc3339)
            .map(Value::timestamp)
            .map_err(|e| format!("`{text}` is not an RFC 3339 timestamp ({e})"))?,
        ValueType::Bytes => parse_bytes(text)?,
        other => Value::from_text(other, text)?,
    };
    Ok((key, value))
}

/// `hex:00ff` or `base64:AP8=`.
fn parse_bytes(text: &str) -> Result<Value, String> {
    match text.split_once(':') {
        Some(("hex", hex)) => Value::from_text(ValueType::Bytes, hex),
        Some(("base64", b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map(Value::Bytes)
            .map_err(|e| format!("`{b64}` is not base64 ({e})")),
        _ => Err(format!("`{text}`: write bytes as `hex:00ff` or `base64:AP8=`")),
    }
}

/// The message's context: every `--prop`, promoted, then `publish.by = "cli"`
/// and `received_at` (now) unless given.
fn context_of(props: &[String]) -> anyhow::Result<Context> {
    let mut ctx = Context::new();
    for arg in props {
        let (key, value) = parse_prop(arg).map_err(|e| anyhow::anyhow!("--prop `{arg}`: {e}"))?;
        ctx.promote(&key.namespace, &key.name, value);
    }
    if ctx.get("publish", "by").is_none() {
        ctx.promote("publish", "by", "cli");
    }
    if ctx.get("", "received_at").is_none() {
        ctx.promote("", "received_at", OffsetDateTime::now_utc());
    }
    Ok(ctx)
}

/// Where the body comes from: a file, stdin (`-`), or nothing (empty body).
async fn body_reader(body: Option<&Path>) -> anyhow::Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>> {
    Ok(match body {
        None => Box::new(tokio::io::empty()),
        Some(p) if p == Path::new("-") => Box::new(tokio::io::stdin()),
        Some(p) => Box::new(
            tokio::fs::File::open(p)
                .await
                .with_context(|| format!("opening the body file {}", p.display()))?,
        ),
    })
}

/// Stream the body into the content store and publish the message.
async fn store_and_publish(
    b: &SqliteBox,
    id: MessageId,
    context: Context,
    body: Option<&Path>,
) -> anyhow::Result<Routed> {
    let mut reader = body_reader(body).await?;
    let from = match body {
        None => "(empty)".to_string(),
        Some(p) if p == Path::new("-") => "stdin".to_string(),
        Some(p) => p.display().to_string(),
    };
    let part = write_part(&*b.content(), "body", &mut reader, WriteOptions::default())
        .await
        .with_context(|| format!("storing the body from {from} in the content store"))?;
    let stored = part.stored_content();
    let message = NewMessage {
        id,
        context,
        parts: vec![part],
    };
    match b.publish(message).await {
        Ok(routed) => Ok(routed),
        Err(e) => {
            if let Some(content) = stored {
                let _ = b.content().abort(content).await;
            }
            Err(anyhow::Error::new(e).context(format!("publishing the message {id}")))
        }
    }
}

pub async fn publish(config: &Config, body: Option<PathBuf>, props: &[String], json: bool) -> anyhow::Result<()> {
    // Everything the user wrote is checked before the box is touched.
    let context = context_of(props)?;
    let b = SqliteBox::open_beside_node(&config.data_dir, Arc::new(SystemClock), Options::default())?;
    let id = MessageId::new();
    let result = store_and_publish(&b, id, context, body.as_deref()).await;
    let closed = b.close().await;
    let routed = result?;
    closed.context("closing the message box")?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({"message_id": id, "routed": routed}))?
        );
        return Ok(());
    }
    match routed {
        Routed::Queued(subs) => println!("published {id}: queued for {}", subs.join(", ")),
        Routed::Suspended { suspended_id } => {
            println!("published {id}: no subscriber; suspended (#{suspended_id}, resumable)")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(arg: &str) -> (String, Value) {
        let (k, v) = parse_prop(arg).unwrap();
        (k.to_string(), v)
    }

    #[test]
    fn every_type_parses() {
        assert_eq!(
            prop("order.id=string:A1"),
            ("order.id".into(), Value::String("A1".into()))
        );
        assert_eq!(prop("n=int:-5"), ("n".into(), Value::Int(-5)));
        assert_eq!(prop("a.b.c=float:1.5"), ("a.b.c".into(), Value::Float(1.5)));
        assert_eq!(prop("x.ok=bool:true"), ("x.ok".into(), Value::Bool(true)));
        assert_eq!(prop("s=string:a=b:c"), ("s".into(), Value::String("a=b:c".into())));
        assert_eq!(prop("b=bytes:hex:00ff"), ("b".into(), Value::Bytes(vec![0, 255])));
        assert_eq!(prop("b=bytes:base64:AP8="), ("b".into(), Value::Bytes(vec![0, 255])));
        let (_, t) = prop("t=timestamp:2026-11-22T11:00:00.123456+01:00");
        assert_eq!(t.to_text(), "2026-11-22T10:00:00.123456Z");
    }

    #[test]
    fn bad_props_say_what_is_wrong() {
        for (arg, says) in [
            ("n", "no `=`"),
            ("n=5", "no `TYPE:`"),
            ("n=integer:5", "unknown type `integer`"),
            ("n=int:five", "not an int"),
            ("n=bool:yes", "not a bool"),
            ("t=timestamp:123", "not an RFC 3339 timestamp"),
            ("b=bytes:00ff", "hex:00ff"),
            ("b=bytes:hex:0", "not hex"),
            ("b=bytes:base64:!!", "not base64"),
            (".n=int:1", "not a property key"),
            ("a.=int:1", "not a property key"),
            ("a.1=int:1", "not a property key"),
        ] {
            let e = parse_prop(arg).unwrap_err();
            assert!(e.contains(says), "{arg}: {e}");
        }
        let e = context_of(&["ok=int:1".into(), "n=int:x".into()]).unwrap_err();
        assert!(e.to_string().starts_with("--prop `n=int:x`: "), "{e}");
    }

    #[test]
    fn defaults_unless_given() {
        let ctx = context_of(&[]).unwrap();
        assert_eq!(ctx.promoted("publish", "by"), Some(&Value::String("cli".into())));
        assert!(matches!(ctx.promoted("", "received_at"), Some(Value::Timestamp(_))));
        let ctx = context_of(&["publish.by=string:test".into()]).unwrap();
        assert_eq!(ctx.promoted("publish", "by"), Some(&Value::String("test".into())));
    }
}
