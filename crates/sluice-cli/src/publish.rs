//! `sluice publish`: publish one message into the box from the command line,
//! beside a running node or not, as a receive location would: the body is
//! streamed into the content store, then the message is published (durable
//! when this returns). A running node's send ports poll their queues, so they
//! pick it up without being told.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sluice_content::{WriteOptions, write_part};
use sluice_host::Config;
use sluice_model::{Context, MessageId};
use sluice_msgbox::{MessageBox, NewMessage, Routed};
use sluice_ops::OpsError;
use sluice_ops::parse::parse_property;
use time::OffsetDateTime;

/// The message's context: every `--prop`, promoted, then `publish.by = "cli"`
/// and `received_at` (now) unless given.
fn context_of(props: &[String]) -> anyhow::Result<Context> {
    let mut ctx = Context::new();
    for arg in props {
        let (key, value) =
            parse_property(arg).map_err(|e| OpsError::InvalidArgument(format!("--prop `{arg}`: {e}")))?;
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
pub(crate) async fn body_reader(body: Option<&Path>) -> anyhow::Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>> {
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
    b: &dyn MessageBox,
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
    let b = crate::store::open_write(config)?;
    let id = MessageId::new();
    let result = store_and_publish(&*b, id, context, body.as_deref()).await;
    let closed = b.close().await;
    let routed = result?;
    closed.context("closing the message box")?;
    if json {
        outln!(
            "{}",
            serde_json::to_string(&serde_json::json!({"message_id": id, "routed": routed}))?
        );
        return Ok(());
    }
    match routed {
        Routed::Queued(subs) => outln!("published {id}: queued for {}", subs.join(", ")),
        Routed::Suspended { suspended_id } => {
            outln!("published {id}: no subscriber; suspended (#{suspended_id}, resumable)")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_model::Value;

    use super::*;

    #[test]
    fn a_bad_prop_names_itself() {
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
