//! Message search and tracking queries, and the index of chosen context
//! properties that makes a search by `key == "value"` a lookup.
//!
//! The index is the table `message_index` (key, value, message), kept by
//! two triggers on `messages`: every path that inserts or deletes a message
//! row (publish, resubmit, a fault message, a discarded interchange) keeps
//! it without code of its own. The triggers exist only while some key is
//! indexed, so a box without an index pays nothing for it.

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sluice_model::{Key, MessageId};
use sluice_msgbox::search::{id_bound, indexed_equality};
use sluice_msgbox::{MessageQuery, MessageSummary, Page, Result, SCAN_BUDGET, TrackingEvent, TrackingQuery};

use crate::{all_promoted, context_of, id_of, storage};

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

/// Above every message id (16 bytes): the open end of a window.
const ABOVE_ALL: [u8; 17] = [0xff; 17];

/// [`MessageBox::list_messages`](sluice_msgbox::MessageBox::list_messages).
///
/// One window of at most [`SCAN_BUDGET`] candidates (messages, or the
/// index's rows for the key and value) after `after`; every condition is
/// applied inside it, so no call reads more than the window whatever its
/// conditions. A page that fills stops at its last message; otherwise the
/// next page starts after the window.
pub(crate) fn messages(
    conn: &Connection,
    q: &MessageQuery,
    after: Option<MessageId>,
    limit: usize,
) -> Result<Page<MessageSummary, MessageId>> {
    use rusqlite::types::Value;
    let doing = "searching the messages in the box";
    let keys = match &q.context {
        Some(_) => indexed_keys(conn, doing)?,
        None => Vec::new(),
    };
    let lookup = q.context.as_ref().and_then(|f| indexed_equality(f, &keys));
    let from = after.map(|a| a.to_bytes().to_vec()).unwrap_or_default();
    let since = q.since.map(|t| id_bound(t).to_vec()).unwrap_or_default();
    let until = q.until.map(|t| id_bound(t).to_vec()).unwrap_or(ABOVE_ALL.to_vec());
    // The window's last candidate (`None`: fewer than the budget are left).
    let (candidates, key) = match lookup {
        Some(_) => ("message_index WHERE key = ?2 AND value = ?3 AND", "message_id"),
        None => ("messages WHERE ?2 IS NULL AND ?3 IS NULL AND", "id"),
    };
    let (k, v) = lookup.map(|(k, v)| (k.to_string(), v.to_string())).unzip();
    let end: Option<Vec<u8>> = conn
        .prepare_cached(&format!(
            "SELECT {key} FROM {candidates} {key} > ?1 AND {key} >= ?5 AND {key} < ?6
             ORDER BY {key} LIMIT 1 OFFSET ?4"
        ))
        .and_then(|mut s| {
            s.query_row(params![from, k, v, SCAN_BUDGET as i64 - 1, since, until], |r| r.get(0))
                .optional()
        })
        .map_err(storage(doing))?;
    // Conditions on the qualified id column `c` (ids sort by time), and
    // the port; plain comparisons, so the id's index bounds the walk.
    let conditions = |c: &str| {
        format!(
            "{c} > ?1 AND {c} <= ?2 AND {c} >= ?3 AND {c} < ?4
             AND (?5 IS NULL OR EXISTS (SELECT 1 FROM queue WHERE message_id = {c} AND subscriber = ?5)
                  OR EXISTS (SELECT 1 FROM suspended WHERE message_id = {c} AND subscriber = ?5))"
        )
    };
    let sql = match lookup {
        Some(_) => format!(
            "SELECT m.id, m.created_at, m.refs, m.nparts, m.size, m.context
             FROM message_index x JOIN messages m ON m.id = x.message_id
             WHERE x.key = ?7 AND x.value = ?8 AND {}
             ORDER BY x.message_id",
            conditions("x.message_id")
        ),
        None => format!(
            "SELECT m.id, m.created_at, m.refs, m.nparts, m.size, CASE WHEN ?6 THEN m.context END
             FROM messages m WHERE {} ORDER BY m.id",
            conditions("m.id")
        ),
    };
    let mut args: Vec<Value> = vec![
        Value::Blob(from),
        Value::Blob(end.clone().unwrap_or(ABOVE_ALL.to_vec())),
        Value::Blob(since),
        Value::Blob(until),
        q.port.clone().map(Value::Text).unwrap_or(Value::Null),
        Value::Integer(q.context.is_some().into()),
    ];
    if let (Some(k), Some(v)) = (k, v) {
        args.extend([Value::Text(k), Value::Text(v)]);
    }
    let mut page = Page {
        items: Vec::new(),
        next: None,
    };
    let mut stmt = conn.prepare_cached(&sql).map_err(storage(doing))?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args)).map_err(storage(doing))?;
    while let Some(r) = rows.next().map_err(storage(doing))? {
        let id = id_of(r.get(0).map_err(storage(doing))?)?;
        let context: Option<String> = r.get(5).map_err(storage(doing))?;
        // A context that cannot be read matches no filter.
        let matches = match (&q.context, &context) {
            (Some(filter), Some(json)) => context_of(json, id).is_ok_and(|c| filter.matches(&all_promoted(&c))),
            _ => true,
        };
        if !matches {
            continue;
        }
        let field = |i| r.get::<_, i64>(i).map_err(storage(doing));
        page.items.push(MessageSummary {
            id,
            created_at: field(1)?,
            refs: field(2)? as u32,
            parts: field(3)? as u32,
            size: field(4)? as u64,
        });
        if page.items.len() == limit {
            page.next = Some(id);
            return Ok(page);
        }
    }
    page.next = end.map(id_of).transpose()?;
    Ok(page)
}

/// [`MessageBox::tracking`](sluice_msgbox::MessageBox::tracking): as
/// [`messages`], one window of at most [`SCAN_BUDGET`] events (of the
/// message, if one is named) after `after`.
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
    let from = after.unwrap_or(0);
    let mid = q.message.map(|m| m.to_bytes().to_vec());
    let end: Option<i64> = conn
        .prepare_cached(&format!(
            "SELECT id FROM tracking WHERE {message} AND id > ?2 ORDER BY id LIMIT 1 OFFSET ?3"
        ))
        .and_then(|mut s| {
            s.query_row(params![mid, from, SCAN_BUDGET as i64 - 1], |r| r.get(0))
                .optional()
        })
        .map_err(storage(doing))?;
    let sql = format!(
        "SELECT id, message_id, at, event, subscriber, detail, context, {location} FROM tracking
         WHERE {message} AND id > ?2 AND id <= ?3 AND (?4 IS NULL OR event = ?4) AND (?5 IS NULL OR subscriber = ?5)
         AND (?6 IS NULL OR {location} = ?6) AND (?7 IS NULL OR at >= ?7) AND (?8 IS NULL OR at < ?8)
         AND (NOT ?9 OR event = 'completed')
         ORDER BY id"
    );
    let mut page = Page {
        items: Vec::new(),
        next: None,
    };
    let mut stmt = conn.prepare_cached(&sql).map_err(storage(doing))?;
    let mut rows = stmt
        .query(params![
            mid,
            from,
            end.unwrap_or(i64::MAX),
            q.event,
            q.port,
            q.location,
            q.since,
            q.until,
            q.context.is_some(),
        ])
        .map_err(storage(doing))?;
    while let Some(r) = rows.next().map_err(storage(doing))? {
        let get = |e: rusqlite::Error| storage(doing)(e);
        let id: i64 = r.get(0).map_err(get)?;
        let message_id = id_of(r.get(1).map_err(get)?)?;
        let context: Option<String> = r.get(6).map_err(get)?;
        // A context that cannot be read matches no filter, and is shown
        // without one (one bad row must not stop every page at it).
        let context = context.and_then(|c| context_of(&c, message_id).ok());
        if let Some(filter) = &q.context
            && !context.as_ref().is_some_and(|c| filter.matches(&all_promoted(c)))
        {
            continue;
        }
        page.items.push(TrackingEvent {
            id,
            message_id,
            at: r.get(2).map_err(get)?,
            event: r.get(3).map_err(get)?,
            subscriber: r.get(4).map_err(get)?,
            location: r.get(7).map_err(get)?,
            detail: r.get(5).map_err(get)?,
            context,
        });
        if page.items.len() == limit {
            page.next = Some(id);
            return Ok(page);
        }
    }
    page.next = end;
    Ok(page)
}
