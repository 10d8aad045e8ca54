//! Message search and tracking queries, and the index of chosen context
//! properties that makes a search by `key == "value"` a lookup.
//!
//! The index is the table `message_index` (key, value, message), kept by
//! two triggers on `messages`: every path that inserts or deletes a message
//! row (publish, resubmit, a fault message, a discarded interchange) keeps
//! it without code of its own. The triggers exist only while some key is
//! indexed, so a box without an index pays nothing for it.

use std::collections::BTreeSet;

use rusqlite::{Connection, Transaction, params};
use sluice_model::{Key, MessageId};
use sluice_msgbox::search::{id_bound, indexed_equality};
use sluice_msgbox::{MessageQuery, MessageSummary, Page, Result, SCAN_BUDGET, TrackingEvent, TrackingQuery};

use crate::{all_promoted, context_of, id_of, storage};

/// Rows read from SQLite at a time while a filter is applied in Rust.
const CHUNK: usize = 256;

/// Make the index hold exactly `keys` (string values, promoted or not):
/// rows of keys no longer wanted deleted, keys newly wanted filled in from
/// the messages in the box, the triggers made or dropped. One transaction;
/// nothing is done when the set is unchanged.
pub(crate) fn sync_index(conn: &mut Connection, keys: &[Key]) -> rusqlite::Result<()> {
    let want: BTreeSet<String> = keys.iter().map(Key::to_string).collect();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let have: BTreeSet<String> = tx
        .prepare("SELECT key FROM indexed_keys")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if have == want {
        return Ok(());
    }
    tx.execute("DELETE FROM indexed_keys", [])?;
    for k in keys {
        tx.execute(
            "INSERT OR IGNORE INTO indexed_keys (key, ns, name) VALUES (?1, ?2, ?3)",
            params![k.to_string(), k.namespace, k.name],
        )?;
    }
    tx.execute(
        "DELETE FROM message_index WHERE key NOT IN (SELECT key FROM indexed_keys)",
        [],
    )?;
    for k in keys.iter().filter(|k| !have.contains(&k.to_string())) {
        let n = fill(&tx, k)?;
        tracing::info!(key = %k, messages = n, "indexed a context property of the messages in the box");
    }
    if want.is_empty() {
        tx.execute_batch(
            "DROP TRIGGER IF EXISTS message_index_insert;
             DROP TRIGGER IF EXISTS message_index_delete;",
        )?;
    } else {
        tx.execute_batch(&format!(
            "CREATE TRIGGER IF NOT EXISTS message_index_insert AFTER INSERT ON messages BEGIN
                 INSERT OR IGNORE INTO message_index (key, value, message_id)
                 SELECT k.key, json_extract(j.value, '$.value'), NEW.id
                 FROM json_each(NEW.context) j
                 JOIN indexed_keys k ON {MATCHES};
             END;
             CREATE TRIGGER IF NOT EXISTS message_index_delete AFTER DELETE ON messages BEGIN
                 DELETE FROM message_index WHERE message_id = OLD.id;
             END;"
        ))?;
    }
    tx.commit()
}

/// A stored property `j` (of `json_each` over a context) that is key `k`'s
/// and a string.
const MATCHES: &str = "k.ns = json_extract(j.value, '$.ns') AND k.name = json_extract(j.value, '$.name')
                       AND json_extract(j.value, '$.type') = 'string'";

fn fill(tx: &Transaction<'_>, k: &Key) -> rusqlite::Result<usize> {
    tx.execute(
        &format!(
            "INSERT OR IGNORE INTO message_index (key, value, message_id)
             SELECT k.key, json_extract(j.value, '$.value'), m.id
             FROM indexed_keys k, messages m, json_each(m.context) j
             WHERE k.key = ?1 AND {MATCHES}"
        ),
        [k.to_string()],
    )
}

/// The keys the box indexes (as the node that opened it last set them).
fn indexed_keys(conn: &Connection, doing: &str) -> Result<Vec<Key>> {
    let texts: Vec<String> = conn
        .prepare_cached("SELECT key FROM indexed_keys")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(storage(doing))?;
    Ok(texts.iter().filter_map(|t| Key::parse(t)).collect())
}

type Row = (Vec<u8>, i64, u32, u32, i64, Option<String>);

/// [`MessageBox::list_messages`](sluice_msgbox::MessageBox::list_messages).
pub(crate) fn messages(
    conn: &Connection,
    q: &MessageQuery,
    after: Option<MessageId>,
    limit: usize,
) -> Result<Page<MessageSummary, MessageId>> {
    let doing = "searching the messages in the box";
    let keys = match &q.context {
        Some(_) => indexed_keys(conn, doing)?,
        None => Vec::new(),
    };
    let lookup = q.context.as_ref().and_then(|f| indexed_equality(f, &keys));
    // Conditions on the id column `c`, qualified (ids sort by time), and
    // the port.
    let conditions = |c: &str| {
        format!(
            "{c} > ?1 AND {c} >= ?2 AND (?3 IS NULL OR {c} < ?3)
             AND (?4 IS NULL OR EXISTS (SELECT 1 FROM queue WHERE message_id = {c} AND subscriber = ?4)
                  OR EXISTS (SELECT 1 FROM suspended WHERE message_id = {c} AND subscriber = ?4))"
        )
    };
    let sql = match lookup {
        Some(_) => format!(
            "SELECT m.id, m.created_at, m.refs, m.nparts, m.size, m.context
             FROM message_index x JOIN messages m ON m.id = x.message_id
             WHERE x.key = ?7 AND x.value = ?8 AND {}
             ORDER BY x.message_id LIMIT ?5",
            conditions("x.message_id")
        ),
        None => format!(
            "SELECT m.id, m.created_at, m.refs, m.nparts, m.size, CASE WHEN ?6 THEN m.context END
             FROM messages m WHERE {} ORDER BY m.id LIMIT ?5",
            conditions("m.id")
        ),
    };
    let chunk = if q.context.is_some() { CHUNK.max(limit) } else { limit };
    let mut from = after.map(|a| a.to_bytes().to_vec()).unwrap_or_default();
    let mut page = Page {
        items: Vec::new(),
        next: None,
    };
    let mut examined = 0;
    loop {
        use rusqlite::types::Value;
        let mut args: Vec<Value> = vec![
            Value::Blob(from.clone()),
            Value::Blob(q.since.map(|t| id_bound(t).to_vec()).unwrap_or_default()),
            q.until
                .map(|t| Value::Blob(id_bound(t).to_vec()))
                .unwrap_or(Value::Null),
            q.port.clone().map(Value::Text).unwrap_or(Value::Null),
            Value::Integer(chunk as i64),
            Value::Integer(q.context.is_some().into()),
        ];
        if let Some((k, v)) = lookup {
            args.extend([Value::Text(k.to_string()), Value::Text(v.to_string())]);
        }
        let rows: Vec<Row> = conn
            .prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_map(rusqlite::params_from_iter(args), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                })?
                .collect()
            })
            .map_err(storage(doing))?;
        let Some(last) = rows.last() else { return Ok(page) };
        from = last.0.clone();
        let more = rows.len() == chunk;
        for (id, created_at, refs, parts, size, context) in rows {
            let id = id_of(id)?;
            examined += 1;
            // A context that cannot be read matches no filter.
            let matches = match (&q.context, &context) {
                (Some(filter), Some(json)) => context_of(json, id).is_ok_and(|c| filter.matches(&all_promoted(&c))),
                _ => true,
            };
            if matches {
                page.items.push(MessageSummary {
                    id,
                    created_at,
                    refs,
                    parts,
                    size: size as u64,
                });
            }
            if page.items.len() == limit || examined >= SCAN_BUDGET {
                page.next = Some(id);
                return Ok(page);
            }
        }
        if !more {
            return Ok(page);
        }
    }
}

/// [`MessageBox::tracking`](sluice_msgbox::MessageBox::tracking).
pub(crate) fn tracking(
    conn: &Connection,
    q: &TrackingQuery,
    after: Option<i64>,
    limit: usize,
) -> Result<Page<TrackingEvent, i64>> {
    let doing = "reading tracking events";
    // A box a node of this version has not opened yet (read beside an
    // older node) has no `location` column.
    let has_location: bool = conn
        .prepare_cached("SELECT count(*) > 0 FROM pragma_table_info('tracking') WHERE name = 'location'")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(storage(doing))?;
    let location = if has_location { "location" } else { "NULL" };
    // One message's events through its index; a condition `?1 IS NULL OR`
    // would keep the planner from it.
    let message = if q.message.is_some() {
        "message_id = ?1"
    } else {
        "?1 IS NULL"
    };
    let sql = format!(
        "SELECT id, message_id, at, event, subscriber, detail, context, {location} FROM tracking
         WHERE {message} AND id > ?2 AND (?3 IS NULL OR event = ?3) AND (?4 IS NULL OR subscriber = ?4)
         AND (?5 IS NULL OR {location} = ?5) AND (?6 IS NULL OR at >= ?6) AND (?7 IS NULL OR at < ?7)
         AND (NOT ?8 OR event = 'completed')
         ORDER BY id LIMIT ?9"
    );
    let chunk = if q.context.is_some() { CHUNK.max(limit) } else { limit };
    let mut from = after.unwrap_or(0);
    let mut page = Page {
        items: Vec::new(),
        next: None,
    };
    let mut examined = 0;
    loop {
        type Event = (
            i64,
            Vec<u8>,
            i64,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Event> = conn
            .prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_map(
                    params![
                        q.message.map(|m| m.to_bytes().to_vec()),
                        from,
                        q.event,
                        q.port,
                        q.location,
                        q.since,
                        q.until,
                        q.context.is_some(),
                        chunk as i64,
                    ],
                    |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                        ))
                    },
                )?
                .collect()
            })
            .map_err(storage(doing))?;
        let Some(last) = rows.last() else { return Ok(page) };
        from = last.0;
        let more = rows.len() == chunk;
        for (id, mid, at, event, subscriber, detail, context, location) in rows {
            let message_id = id_of(mid)?;
            examined += 1;
            let context = context.map(|c| context_of(&c, message_id)).transpose();
            let matches = match (&q.context, &context) {
                (None, _) => true,
                (Some(filter), Ok(Some(ctx))) => filter.matches(&all_promoted(ctx)),
                _ => false,
            };
            if matches {
                page.items.push(TrackingEvent {
                    id,
                    message_id,
                    at,
                    event,
                    subscriber,
                    location,
                    detail,
                    context: context?,
                });
            }
            if page.items.len() == limit || examined >= SCAN_BUDGET {
                page.next = Some(id);
                return Ok(page);
            }
        }
        if !more {
            return Ok(page);
        }
    }
}
