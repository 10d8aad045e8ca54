//! `sluice suspended`: list, resume and terminate suspended messages, beside
//! a running node or not.

use std::sync::Arc;

use anyhow::Context as _;
use sluice_host::Config;
use sluice_msgbox::{BoxError, MessageBox, Routed, SuspendedInfo, SystemClock};
use sluice_msgbox_sqlite::{Options, SqliteBox};

use crate::inspect::ms_to_text;

async fn all_suspended(b: &dyn MessageBox) -> anyhow::Result<Vec<SuspendedInfo>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = b
            .list_suspended(&sluice_msgbox::SuspendedQuery::default(), after, 1000)
            .await
            .context("listing suspended messages")?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        out.extend(page);
    }
    Ok(out)
}

pub async fn list(config: &Config, json: bool) -> anyhow::Result<()> {
    let b = SqliteBox::open_read_only(&config.data_dir)?;
    let list = all_suspended(&b).await?;
    if json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("(no suspended messages)");
    }
    for s in &list {
        println!(
            "#{:<6} {}  {}  {:<16} attempts {:<3} {}{}",
            s.id,
            s.message_id,
            ms_to_text(s.suspended_at),
            s.subscriber.as_deref().unwrap_or("-"),
            s.attempts,
            if s.resumable { "" } else { "[not resumable] " },
            s.reason
        );
    }
    Ok(())
}

/// What to act on: the given suspended ids, or all of them.
pub enum Which {
    Ids(Vec<i64>),
    All,
}

/// Resume or terminate; prints one line per entry and fails if any failed.
pub async fn act(config: &Config, which: Which, terminate: bool) -> anyhow::Result<()> {
    let b = SqliteBox::open_beside_node(&config.data_dir, Arc::new(SystemClock), Options::default())?;
    let ids = match which {
        Which::Ids(ids) => ids,
        Which::All => {
            let all = all_suspended(&b).await?;
            if !terminate {
                // "All" means all that can be resumed; say which are left.
                for s in all.iter().filter(|s| !s.resumable) {
                    println!("#{}: skipped, not resumable ({})", s.id, s.reason);
                }
            }
            all.into_iter()
                .filter(|s| terminate || s.resumable)
                .map(|s| s.id)
                .collect()
        }
    };
    let mut failed = 0;
    for id in &ids {
        let result = if terminate {
            b.terminate(*id).await.map(|()| "terminated".to_string())
        } else {
            b.resume(*id).await.map(|r| match r {
                Routed::Queued(subs) => format!("resumed -> {}", subs.join(", ")),
                Routed::Suspended { suspended_id } => format!("suspended again as #{suspended_id}"),
            })
        };
        match result {
            Ok(done) => println!("#{id}: {done}"),
            Err(e) => {
                failed += 1;
                let hint = match &e {
                    BoxError::StillNoSubscriber { .. } => " (add or fix a send port whose filter matches it)",
                    BoxError::NoSuchSubscriber(_) => " (its send port is gone; configure it again, or terminate)",
                    BoxError::NotResumable { .. } => {
                        " (a receive pipeline rejected it: fix the source and send it again, then terminate this)"
                    }
                    _ => "",
                };
                eprintln!("#{id}: {e}{hint}");
            }
        }
    }
    b.close().await?;
    if ids.is_empty() {
        println!("(no suspended messages)");
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} suspended message(s) could not be {}",
        ids.len(),
        if terminate { "terminated" } else { "resumed" }
    );
    Ok(())
}
