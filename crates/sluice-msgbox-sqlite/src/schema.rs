use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

use crate::Options;

/// 2: suspended entries say where (stage, component, location, transport);
/// failed attempts are kept (`attempts`); tracking events (`tracking`);
/// content can be shared by parts of several messages (fault messages,
/// resubmissions), found by `parts_content`.
/// 3: work in progress belongs to a node: leased queue entries, holds,
/// staged messages and content being written carry the node's id (`node`);
/// a box of an older version gives all of it to the node that migrates it.
/// 4: a message of one inline part keeps it in its own row (`part_name`,
/// `part_crc32`, `part_data`), not in `parts`. Rows written before keep
/// their parts in `parts`. An earlier build refuses to open such a box;
/// one already running on it when a node of this version upgraded it would
/// read such a message with no parts (an empty body), so the upgrade also
/// renames `stored_parts` (now `content_parts`), which its statements name:
/// they fail instead. Every node on a box is stopped before a newer one
/// starts (README).
/// 5: the operators' tables: `users`, `tokens` and `sessions` (hashes
/// only), `audit` and `stopped_units` (send ports and receive locations an
/// operator stopped).
pub const SCHEMA_VERSION: i64 = 5;

/// The node id of handles opened without one (tests, `sluice bench`).
pub const DEFAULT_NODE: &str = "local";

/// Content states. Only `PUBLISHED` content survives a restart.
pub const CONTENT_WRITING: i64 = 0;
pub const CONTENT_FINISHED: i64 = 1;
pub const CONTENT_PUBLISHED: i64 = 2;

/// How long a connection waits for another one's lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// An existing box without `auto_vacuum = INCREMENTAL` is converted at open
/// (a `VACUUM`, which copies every page in use) only while it holds at most
/// this much; a bigger one is converted at a later start, once it holds less.
pub const CONVERT_MAX_BYTES: i64 = 1 << 30;

pub fn open_connection(path: &Path, opts: &Options, reader: bool) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if !reader {
        // A new box gives freed pages back to the file system (the writer
        // runs `incremental_vacuum`). This must come before anything is
        // written: switching to WAL writes the first page.
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        if pages == 0 {
            conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
        }
    }
    // temp_store = FILE: a statement's journal (kept while a statement runs
    // inside the writer's larger transaction, a copy of each page it
    // changes) stays in memory up to 64 KiB, then spills to a temporary
    // file; temporary b-trees and sorts spill beyond their caches (about 2
    // MB, and `cache_size`). With MEMORY none of them spills: a statement
    // that touches many pages (a big interchange discarded, a start taking
    // over a backlog) held a copy of each in RAM. The files go to SQLite's
    // temporary directory (`SQLITE_TMPDIR`, else `TMPDIR`, `/var/tmp`,
    // `/tmp`), which the README asks operators to give room.
    //
    // wal_autocheckpoint: checkpoint every 1 MiB of WAL (SQLite's default is
    // 4 MiB). Committed frames not yet checkpointed are stranded in the WAL
    // when the disk fills (a checkpoint needs room in the database file);
    // fewer of them leave the box able to commit its small transactions (an
    // abort, an ack, a small file) on a full disk. Costs ~3% of throughput.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {sync};
         PRAGMA cache_size = -{cache};
         PRAGMA mmap_size = 0;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA wal_autocheckpoint = 256;
         PRAGMA temp_store = FILE;
         PRAGMA query_only = {query_only};",
        sync = if opts.sync { "FULL" } else { "OFF" },
        cache = opts.cache_kib.max(256),
        query_only = if reader { 1 } else { 0 },
    ))?;
    // The query planner stability guarantee: a cached statement keeps the
    // plan it was prepared with. Without it SQLite marks a statement to be
    // prepared again whenever a new value is bound to a parameter that could
    // change its plan (a `LIMIT ?`, a column compared with a partial index's
    // condition), which made most leases and part reads compile their
    // statements anew: a tenth of the writer's time.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// [`migrate_for`] the [`DEFAULT_NODE`].
#[cfg(test)]
pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    migrate_for(conn, DEFAULT_NODE)
}

/// Run `f` in a write transaction of its own (`BEGIN IMMEDIATE`).
fn immediate(conn: &Connection, f: impl FnOnce(&Connection) -> rusqlite::Result<()>) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match f(conn) {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get(0),
    )
}

/// The schema version of an existing box (`None`: a new, empty one).
pub fn schema_version(conn: &Connection) -> Option<i64> {
    conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| {
        r.get::<_, String>(0)
    })
    .ok()
    .and_then(|v| v.parse().ok())
}

/// A writer beside the node (the CLI) does not upgrade a box: a node of the
/// earlier version may be running on it, and would go on writing rows the
/// new schema does not expect (work owned by no node). The node upgrades it
/// when it starts.
pub fn refuse_older_beside_node(conn: &Connection) -> rusqlite::Result<()> {
    match schema_version(conn) {
        Some(v) if v < SCHEMA_VERSION => Err(rusqlite::Error::InvalidParameterName(format!(
            "the message box has schema version {v}, from an earlier version of Sluice; start the node              (`sluice serve`) once with this version to upgrade it (version {SCHEMA_VERSION}; an upgraded box              cannot be opened by the earlier version), then run this command again"
        ))),
        _ => Ok(()),
    }
}

/// Create the tables, or bring an older box up to [`SCHEMA_VERSION`] in
/// place; `node` is the opener, which takes over an older box's leases,
/// holds, staged messages and content in progress.
pub fn migrate_for(conn: &Connection, node: &str) -> rusqlite::Result<()> {
    // Tracking event ids only grow without `AUTOINCREMENT`, whose
    // bookkeeping row cost every event a second write (boxes made before
    // keep it): the writer gives them itself, after the highest in the
    // table or ever purged (`meta.tracking_purged_to`). Queue entries keep
    // it: a lease token names its entry by id, which must never come back
    // for another entry.
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS messages (
             id BLOB PRIMARY KEY,
             created_at INTEGER NOT NULL,
             context TEXT NOT NULL,
             refs INTEGER NOT NULL,
             nparts INTEGER NOT NULL,
             size INTEGER NOT NULL,
             content_parts INTEGER NOT NULL,
             part_name TEXT,
             part_crc32 INTEGER,
             part_data BLOB
         );
         CREATE TABLE IF NOT EXISTS parts (
             message_id BLOB NOT NULL,
             idx INTEGER NOT NULL,
             name TEXT NOT NULL,
             size INTEGER NOT NULL,
             crc32 INTEGER NOT NULL,
             inline_data BLOB,
             content_id INTEGER,
             chunks INTEGER,
             PRIMARY KEY (message_id, idx)
         );
         CREATE TABLE IF NOT EXISTS content (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             state INTEGER NOT NULL,
             size INTEGER,
             crc32 INTEGER,
             chunks INTEGER,
             created_at INTEGER NOT NULL,
             node TEXT NOT NULL DEFAULT ''
         );
         CREATE TABLE IF NOT EXISTS chunks (
             content_id INTEGER NOT NULL,
             seq INTEGER NOT NULL,
             data BLOB NOT NULL,
             PRIMARY KEY (content_id, seq)
         );
         CREATE TABLE IF NOT EXISTS subscriptions (subscriber TEXT PRIMARY KEY, filter TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS queue (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             subscriber TEXT NOT NULL,
             message_id BLOB NOT NULL,
             visible_at INTEGER NOT NULL,
             generation INTEGER NOT NULL DEFAULT 0,
             leased INTEGER NOT NULL DEFAULT 0,
             last_error TEXT,
             skipped INTEGER NOT NULL DEFAULT 0,
             node TEXT NOT NULL DEFAULT ''
         );
         CREATE INDEX IF NOT EXISTS queue_ready ON queue (subscriber, visible_at, id);
         CREATE INDEX IF NOT EXISTS queue_message ON queue (message_id);
         CREATE TABLE IF NOT EXISTS holds (
             message_id BLOB NOT NULL,
             holder TEXT NOT NULL,
             node TEXT NOT NULL DEFAULT '',
             PRIMARY KEY (message_id, holder)
         );
         CREATE TABLE IF NOT EXISTS suspended (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             message_id BLOB NOT NULL,
             subscriber TEXT,
             reason TEXT NOT NULL,
             attempts INTEGER NOT NULL,
             suspended_at INTEGER NOT NULL,
             resumable INTEGER NOT NULL DEFAULT 1
         );
         CREATE INDEX IF NOT EXISTS suspended_message ON suspended (message_id);
         CREATE INDEX IF NOT EXISTS holds_holder ON holds (holder, message_id);
         CREATE TABLE IF NOT EXISTS staged (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             interchange BLOB NOT NULL,
             message_id BLOB NOT NULL,
             targets TEXT NOT NULL,
             reason TEXT,
             node TEXT NOT NULL DEFAULT '',
             origin TEXT
         );
         CREATE INDEX IF NOT EXISTS staged_interchange ON staged (interchange, id);
         CREATE INDEX IF NOT EXISTS staged_message ON staged (message_id);
         CREATE TABLE IF NOT EXISTS attempts (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             message_id BLOB NOT NULL,
             subscriber TEXT NOT NULL,
             attempt INTEGER NOT NULL,
             at INTEGER NOT NULL,
             transport TEXT,
             error TEXT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS attempts_entry ON attempts (message_id, subscriber, id);
         CREATE TABLE IF NOT EXISTS tracking (
             id INTEGER PRIMARY KEY,
             message_id BLOB NOT NULL,
             at INTEGER NOT NULL,
             event TEXT NOT NULL,
             subscriber TEXT,
             detail TEXT,
             context TEXT,
             location TEXT
         );
         CREATE INDEX IF NOT EXISTS tracking_message ON tracking (message_id, id);
         DROP INDEX IF EXISTS tracking_at;
         CREATE INDEX IF NOT EXISTS parts_content ON parts (content_id) WHERE content_id IS NOT NULL;
         CREATE TABLE IF NOT EXISTS users (
             name TEXT PRIMARY KEY,
             role TEXT NOT NULL,
             password_hash TEXT NOT NULL,
             created_at INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS tokens (
             id TEXT PRIMARY KEY,
             user TEXT NOT NULL,
             hash BLOB NOT NULL UNIQUE,
             created_at INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user);
         CREATE TABLE IF NOT EXISTS audit (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             at INTEGER NOT NULL,
             actor TEXT NOT NULL,
             source TEXT NOT NULL,
             action TEXT NOT NULL,
             target TEXT NOT NULL,
             result TEXT NOT NULL,
             detail TEXT
         );
         CREATE TABLE IF NOT EXISTS sessions (
             hash BLOB PRIMARY KEY,
             user TEXT NOT NULL,
             csrf TEXT NOT NULL,
             created_at INTEGER NOT NULL,
             expires_at INTEGER NOT NULL,
             seen_at INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user);
         CREATE TABLE IF NOT EXISTS indexed_keys (key TEXT PRIMARY KEY, ns TEXT NOT NULL, name TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS message_index (
             key TEXT NOT NULL,
             value TEXT NOT NULL,
             message_id BLOB NOT NULL,
             PRIMARY KEY (key, value, message_id)
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS message_index_message ON message_index (message_id);
         CREATE TABLE IF NOT EXISTS stopped_units (
             kind TEXT NOT NULL,
             name TEXT NOT NULL,
             PRIMARY KEY (kind, name)
         );
         COMMIT;",
    )?;
    // Version 1 boxes: suspended entries gain where-it-failed columns, and
    // queue entries the attempt positions a fail-over skipped.
    for (table, column, decl) in [
        ("suspended", "stage", "TEXT NOT NULL DEFAULT ''"),
        ("suspended", "component", "TEXT NOT NULL DEFAULT ''"),
        ("suspended", "location", "TEXT"),
        ("suspended", "transport", "TEXT"),
        ("queue", "skipped", "INTEGER NOT NULL DEFAULT 0"),
        // Version 2 boxes: the node that owns the work in progress (new
        // boxes have the column from the start).
        ("queue", "node", "TEXT NOT NULL DEFAULT ''"),
        ("holds", "node", "TEXT NOT NULL DEFAULT ''"),
        ("staged", "node", "TEXT NOT NULL DEFAULT ''"),
        ("content", "node", "TEXT NOT NULL DEFAULT ''"),
        // Tracking events say where (the receive location), and staged
        // records where they came from, for their `received` events. Older
        // builds write neither (NULL) and read on: no new schema version.
        ("tracking", "location", "TEXT"),
        ("staged", "origin", "TEXT"),
        // Version 3 boxes: a message's one inline part in its row.
        ("messages", "part_name", "TEXT"),
        ("messages", "part_crc32", "INTEGER"),
        ("messages", "part_data", "BLOB"),
        // How far a delivery in parts had got (`Failure::progress`), on a
        // queue entry and a suspended one. Older builds neither write nor
        // read it: no new schema version.
        ("queue", "progress", "TEXT"),
        ("suspended", "progress", "TEXT"),
    ] {
        // Looked at and added in one write transaction: a node and a CLI
        // opening an old box at once must not both add the column (the
        // second would fail on "duplicate column name").
        immediate(conn, |conn| {
            if !has_column(conn, table, column)? {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
            }
            Ok(())
        })?;
    }
    // Suspended entries counted by where and why without a sort of them
    // (`MessageBox::suspended_groups`); the expression is the query's.
    conn.execute_batch(&format!(
        "CREATE INDEX IF NOT EXISTS suspended_groups ON suspended
             (subscriber, substr(reason, 1, {}), location)",
        sluice_msgbox::GROUP_ERROR_CHARS
    ))?;
    // Version 3 boxes: `stored_parts` is renamed, nothing else changes. A
    // node of an earlier version still running on the box names the old
    // column in its publish, lease and ack, so those fail from now on
    // (loudly: sources stay where they are, leases expire and go to a
    // node of this version) rather than deliver a message whose one part
    // it cannot see (in the row since version 4) with an empty body.
    immediate(conn, |conn| {
        if has_column(conn, "messages", "stored_parts")? {
            conn.execute_batch("ALTER TABLE messages RENAME COLUMN stored_parts TO content_parts")?;
        }
        Ok(())
    })?;
    match schema_version(conn) {
        None => {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                [SCHEMA_VERSION.to_string()],
            )?;
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "the message box has schema version {v}, newer than this build understands ({SCHEMA_VERSION})"
            )));
        }
        Some(v) if v < SCHEMA_VERSION => {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let r = (|| {
                if v < 3 {
                    // Everything in progress was the one node's: now the opener's.
                    adopt_ownerless(conn, node)?;
                }
                conn.execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                    [SCHEMA_VERSION.to_string()],
                )
            })();
            match r {
                Ok(_) => conn.execute_batch("COMMIT")?,
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
        Some(_) => {}
    }
    Ok(())
}

/// The box's `auto_vacuum` mode: 0 none, 1 full, 2 incremental.
pub fn auto_vacuum(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
}

/// What [`convert_to_incremental_vacuum`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Conversion {
    /// The box already gives space back.
    Already,
    /// Converted by a `VACUUM`: file sizes (database and WAL) before and after.
    Converted { before: u64, after: u64 },
    /// Not converted: it holds more than [`CONVERT_MAX_BYTES`] (`in_use`).
    TooBig { in_use: i64 },
}

/// Make a box created before `auto_vacuum = INCREMENTAL` (schema versions 1
/// and 2 as first released) give freed pages back, once: that takes a
/// `VACUUM`, which rewrites every page in use (through the WAL, and a
/// temporary file in the system temp directory), so it needs about twice
/// the data in use in free disk space and, for a few hundred MB, seconds.
/// Only the node does it at open, before its writer starts (never beside a
/// running node). Boxes holding more than [`CONVERT_MAX_BYTES`] are left
/// as they are (and tried again at the next start): a box is usually near
/// empty when its messages flow, and then the conversion is quick however
/// big the file grew. The freed pages are dropped on the way.
pub fn convert_to_incremental_vacuum(conn: &Connection, path: &Path) -> rusqlite::Result<Conversion> {
    match auto_vacuum(conn)? {
        2 => return Ok(Conversion::Already),
        // Full and incremental boxes keep the same page map: no VACUUM needed.
        1 => {
            conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
            return Ok(Conversion::Already);
        }
        _ => {}
    }
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let in_use = (pages - free) * page_size;
    if in_use > CONVERT_MAX_BYTES {
        return Ok(Conversion::TooBig { in_use });
    }
    let before = files_size(path);
    tracing::info!(
        file_mb = before / 1_000_000,
        in_use_mb = in_use / 1_000_000,
        "converting the message box to give back free space; this takes a while once"
    );
    // The copy VACUUM makes goes to a temporary file (`temp_store = FILE`,
    // as every connection has it), not memory.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")?;
    let vacuumed = conn.execute_batch("VACUUM");
    // The WAL now holds the whole new box (or, after a failure, what was
    // written of it): give that back before the node starts.
    let checkpoint = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    vacuumed?;
    checkpoint?;
    Ok(Conversion::Converted {
        before,
        after: files_size(path),
    })
}

/// Bytes of the database file and its WAL.
pub fn files_size(path: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    len(path) + len(Path::new(&wal))
}

/// Drop what node `node` left unpublished: its uncommitted interchanges,
/// and content it wrote (half-written after a crash, or finished but not
/// yet referenced by a message). Run at the node's open, before its writer
/// starts, so that it is not writing content at the time; other nodes'
/// work is left alone. Returns (staged messages, contents) discarded.
pub fn recover(conn: &Connection, node: &str) -> rusqlite::Result<(u64, u64)> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match adopt_ownerless(conn, node).and_then(|()| discard_unpublished(conn, node)) {
        Ok(n) => {
            conn.execute_batch("COMMIT")?;
            Ok(n)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Work that no node owns (written by an earlier version into a box a
/// newer one had upgraded) becomes the starting node's, so that its
/// recovery releases it.
///
/// Architecture Invariant: a start writes in proportion to what the node
/// left in flight, not to the backlog. A queue entry is given a node when
/// it is leased (a waiting one has none, or keeps its last leaser's, which
/// nothing reads), so only leased entries are adopted: taking over every
/// waiting entry rewrote a 1,000,000-message backlog at each start (and,
/// with temporary storage in memory, held a copy of every page it
/// changed: 28 MiB).
fn adopt_ownerless(conn: &Connection, node: &str) -> rusqlite::Result<()> {
    conn.execute("UPDATE queue SET node = ?1 WHERE node = '' AND leased = 1", [node])?;
    for table in ["holds", "staged", "content"] {
        conn.execute(&format!("UPDATE {table} SET node = ?1 WHERE node = ''"), [node])?;
    }
    Ok(())
}

/// [`recover`]'s statements, inside the caller's transaction.
pub fn discard_unpublished(conn: &Connection, node: &str) -> rusqlite::Result<(u64, u64)> {
    let staged = discard_staged(conn, Scope::Node(node))?;
    conn.execute(
        "DELETE FROM chunks WHERE content_id IN (SELECT id FROM content WHERE state < ?1 AND node = ?2)",
        params![CONTENT_PUBLISHED, node],
    )?;
    let contents = conn.execute(
        "DELETE FROM content WHERE state < ?1 AND node = ?2",
        params![CONTENT_PUBLISHED, node],
    )?;
    Ok((staged, contents as u64))
}

/// Which staged messages [`discard_staged`] drops.
pub enum Scope<'a> {
    Interchange(sluice_model::MessageId),
    /// Every interchange this node staged.
    Node(&'a str),
}

/// Delete staged messages (of one interchange, or of a node), their parts,
/// content, holds and staging rows, set-wise. Returns how many messages.
pub fn discard_staged(conn: &Connection, scope: Scope<'_>) -> rusqlite::Result<u64> {
    let (column, key) = match scope {
        Scope::Interchange(i) => ("interchange", rusqlite::types::Value::Blob(i.to_bytes().to_vec())),
        Scope::Node(n) => ("node", rusqlite::types::Value::Text(n.to_string())),
    };
    let which = format!("(SELECT message_id FROM staged WHERE {column} = ?1)");
    let content = format!("(SELECT content_id FROM parts WHERE message_id IN {which} AND content_id IS NOT NULL)");
    conn.execute(&format!("DELETE FROM chunks WHERE content_id IN {content}"), [&key])?;
    conn.execute(&format!("DELETE FROM content WHERE id IN {content}"), [&key])?;
    conn.execute(&format!("DELETE FROM parts WHERE message_id IN {which}"), [&key])?;
    conn.execute(&format!("DELETE FROM holds WHERE message_id IN {which}"), [&key])?;
    let n = conn.execute(&format!("DELETE FROM messages WHERE id IN {which}"), [&key])?;
    conn.execute(&format!("DELETE FROM staged WHERE {column} = ?1"), [&key])?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    /// A cached statement runs with new values bound without being
    /// compiled again (the query planner stability guarantee is on).
    #[test]
    fn cached_statements_are_not_prepared_again_for_new_values() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("box.db"), &Options::default(), false).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, k BLOB, c INTEGER);
             CREATE INDEX t_k ON t (k);
             CREATE INDEX t_c ON t (c) WHERE c = 1;
             INSERT INTO t (k, c) VALUES (x'01', 1), (x'02', NULL), (x'03', 3);",
        )
        .unwrap();
        // A `LIMIT ?` as a lease has; a column compared with a partial
        // index's condition.
        for sql in [
            "SELECT id FROM t ORDER BY id LIMIT ?1",
            "SELECT id FROM t WHERE c = ?1 ORDER BY id",
        ] {
            for v in [1i64, 5, 1, 2, 1] {
                let mut stmt = conn.prepare_cached(sql).unwrap();
                let value: rusqlite::types::Value = v.into();
                let _rows: Vec<i64> = stmt
                    .query_map([value], |r| r.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "{sql} with {v}");
            }
        }
    }
}
