//! The embedded message box: one SQLite database (WAL mode) in the data
//! directory, holding messages, parts, content chunks, subscriptions, queues,
//! holds and suspended entries.
//!
//! All writes go through one writer thread. It takes every job waiting in its
//! (bounded) queue, runs each in its own savepoint inside one transaction, and
//! commits once: **group commit**. Callers are answered only after that commit
//! (and its fsync, for durable jobs) returned. Reads use a small pool of
//! separate connections, which WAL lets run beside the writer.
//!
//! Architecture Invariant: content lives in the same database as the messages,
//! so the transaction that releases a message's last reference deletes its
//! parts and chunks too (no sweeper, no orphan files).
//!
//! Architecture Invariant: the writer's queue is bounded in jobs and chunk
//! writes are bounded in bytes (a semaphore of [`Options::chunk_budget_bytes`]),
//! so a fast producer waits instead of growing memory.
//!
//! Architecture Invariant: space freed in the file (refused bodies, delivered
//! content, a drained backlog) goes back to the file system. Boxes are made
//! with `auto_vacuum = INCREMENTAL` (older ones are converted when the node
//! opens them, if small enough); the node's writer runs `incremental_vacuum`
//! in bounded steps once more than 32 MiB is free, and keeps a 1 MiB reserve
//! file (`msgbox.sqlite-reserve`) that it gives up when a commit fails, so
//! that it can still clean up on a full disk (see `writer/space.rs`).

mod schema;
mod search;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use sluice_content::{ChunkStore, ContentError, ContentId, Part, PartBody};
use sluice_model::{Context, MessageId};
use sluice_msgbox::*;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::writer::{Job, Writer};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "msgbox.sqlite";

#[derive(Debug, Clone)]
pub struct Options {
    /// fsync every commit that carries a publish, ack or other state change
    /// (SQLite `synchronous = FULL`). Turning it off loses durability.
    pub sync: bool,
    /// Jobs waiting for the writer before callers wait.
    pub queue_depth: usize,
    /// Most jobs in one transaction.
    pub max_batch: usize,
    /// Bytes of chunk data waiting for the writer before writers of parts wait.
    pub chunk_budget_bytes: usize,
    /// Page cache per connection, in KiB.
    pub cache_kib: i64,
    /// Reader connections kept open.
    pub readers: usize,
    /// Record tracking events: each delivery, termination, resubmission,
    /// and the context of each message as it leaves the box. Purge them
    /// with [`MessageBox::purge_tracking`] (the node does, by default).
    pub tracking: bool,
    /// The node this handle works for: the leases, holds, staged messages
    /// and content it makes carry this id, and recovery takes back only
    /// this node's (several nodes may share one box).
    pub node_id: String,
    /// Context properties (`namespace.name`) whose string values the box
    /// indexes, so that a message search by `key == "value"` is a lookup.
    /// Set by the node's open (the box keeps the set; a change fills in or
    /// drops index rows for the messages already in it); each costs an
    /// index row per message that has it.
    pub index: Vec<sluice_model::Key>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: true,
            queue_depth: 4096,
            max_batch: 2048,
            chunk_budget_bytes: 8 * 1024 * 1024,
            cache_kib: 4096,
            readers: 4,
            tracking: true,
            node_id: schema::DEFAULT_NODE.to_string(),
            index: Vec::new(),
        }
    }
}

struct Inner {
    path: PathBuf,
    opts: Options,
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    closed: std::sync::atomic::AtomicBool,
    chunk_budget: Arc<Semaphore>,
    stats: Arc<writer::Stats>,
    /// What the node's open discarded, reported by the first `recover`.
    recovered: Mutex<Recovered>,
    /// The box keeps a message's one inline part in its row (schema 4
    /// on): always once opened for writing (migrated); a read-only handle
    /// beside an older node looks until the node upgrades the box.
    parts_in_rows: std::sync::atomic::AtomicBool,
}

impl Inner {
    /// The parts of message `id`, read by a reader connection.
    fn parts(&self, conn: &Connection, id: MessageId) -> Result<Vec<Part>> {
        let in_rows = self.parts_in_rows(conn)?;
        let parts = load_parts(conn, id, in_rows)?;
        // The node may have upgraded the box since the look above, and
        // stored the message after it, its part in its row.
        if parts.is_empty() && !in_rows && self.parts_in_rows(conn)? {
            return load_parts(conn, id, true);
        }
        Ok(parts)
    }

    fn parts_in_rows(&self, conn: &Connection) -> Result<bool> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.parts_in_rows.load(Relaxed) {
            return Ok(true);
        }
        let found: bool = conn
            .prepare_cached("SELECT count(*) > 0 FROM pragma_table_info('messages') WHERE name = 'part_name'")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(storage("reading the layout of the message box"))?;
        self.parts_in_rows.store(found, Relaxed);
        Ok(found)
    }
}

/// The SQLite message box. Cheap to clone; clones share one writer.
#[derive(Clone)]
pub struct SqliteBox {
    inner: Arc<Inner>,
}

/// What the writer has done so far (for tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub jobs: u64,
    pub commits: u64,
    pub synced_commits: u64,
    /// Steps (transactions) of `incremental_vacuum` giving free space back.
    pub reclaim_steps: u64,
    /// Bytes of free pages given back to the file system.
    pub reclaimed_bytes: u64,
    /// Checkpoints run beside the writer (not at the end of its commits).
    pub checkpoints_beside: u64,
}

/// A role as stored; a row with another is read as an error, never as a role.
fn role_of(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Role> {
    let text: String = r.get(at)?;
    text.parse()
        .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(at, rusqlite::types::Type::Text, e.into()))
}

fn user_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        name: r.get(0)?,
        role: role_of(r, 1)?,
        password_hash: r.get(2)?,
        created_at: r.get(3)?,
    })
}

fn token_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        user: r.get(1)?,
        role: role_of(r, 2)?,
        created_at: r.get(3)?,
    })
}

fn storage(doing: &str) -> impl Fn(rusqlite::Error) -> BoxError + '_ {
    move |e| BoxError::Storage {
        doing: doing.to_string(),
        detail: e.to_string(),
    }
}

impl SqliteBox {
    /// Open (creating if needed) the box in `data_dir` ([`DB_FILE`]) for a node.
    pub fn open(data_dir: &Path, clock: Arc<dyn Clock>, opts: Options) -> Result<SqliteBox> {
        SqliteBox::open_file(&data_dir.join(DB_FILE), clock, opts)
    }

    /// Open (creating it and its folder if needed) the box in the database
    /// file `path` for the node `opts.node_id`. What that node left
    /// unpublished when it last stopped (uncommitted interchanges, content
    /// not yet published) is discarded now, before the writer starts;
    /// [`MessageBox::recover`] reports it and releases the node's leases.
    pub fn open_file(path: &Path, clock: Arc<dyn Clock>, opts: Options) -> Result<SqliteBox> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| BoxError::Storage {
                doing: format!("creating the folder of the message box {}", dir.display()),
                detail: e.to_string(),
            })?;
        }
        SqliteBox::open_mode(path, clock, opts, true)
    }

    /// Open an existing box for changes beside a running node (for
    /// `sluice suspended resume` and friends). Unlike [`SqliteBox::open`] it
    /// creates nothing and does no start-up recovery, which would discard
    /// content the node is writing. SQLite serialises the two writers.
    pub fn open_beside_node(data_dir: &Path, clock: Arc<dyn Clock>, opts: Options) -> Result<SqliteBox> {
        SqliteBox::open_file_beside_node(&data_dir.join(DB_FILE), clock, opts)
    }

    /// [`open_beside_node`](Self::open_beside_node) for the database file `path`.
    pub fn open_file_beside_node(path: &Path, clock: Arc<dyn Clock>, opts: Options) -> Result<SqliteBox> {
        existing_db(path)?;
        SqliteBox::open_mode(path, clock, opts, false)
    }

    fn open_mode(path: &Path, clock: Arc<dyn Clock>, opts: Options, node: bool) -> Result<SqliteBox> {
        let path = path.to_path_buf();
        let mut recovered = Recovered::default();
        if node {
            // On a full disk, start-up (recovery, conversion) may need the
            // room kept for it; the writer takes it again.
            writer::Reserve::beside(&path).release();
        }
        let mut conn = schema::open_connection(&path, &opts, false)
            .map_err(storage(&format!("opening the message box {}", path.display())))?;
        if !node {
            schema::refuse_older_beside_node(&conn)
                .map_err(storage(&format!("opening the message box {}", path.display())))?;
        }
        schema::migrate_for(&conn, &opts.node_id)
            .map_err(storage(&format!("creating tables in {}", path.display())))?;
        if node {
            let (staged, contents) = schema::recover(&conn, &opts.node_id).map_err(storage(
                "discarding what the node left unpublished when it last stopped",
            ))?;
            recovered.staged = staged;
            recovered.contents = contents;
            convert_box(&conn, &path);
            // A fill that fails (a full disk) is rolled back whole: the
            // box keeps the index it had, and a search on a key it lacks
            // reads the box a window at a time. The node runs on.
            if let Err(e) = search::sync_index(&mut conn, &opts.index) {
                tracing::warn!(error = %e, keys = ?opts.index.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "could not index the context properties [box] index names; searches on them read the box \
                     a window at a time until a start that can");
            }
        }
        let stats = Arc::new(writer::Stats::default());
        let mut writer =
            Writer::new(conn, clock, opts.tracking, &opts.node_id).map_err(storage("loading subscriptions"))?;
        if node {
            // Only the node gives free space back (the CLI beside it would
            // hold the node's writer up).
            writer
                .give_back_space(&path)
                .map_err(storage("reading the free space of the message box"))?;
            writer.checkpoint_off_thread(&path, &opts, stats.clone())?;
        }
        let (tx, rx) = mpsc::channel(opts.queue_depth.max(1));
        let thread_stats = stats.clone();
        let max_batch = opts.max_batch.max(1);
        let sync = opts.sync;
        let handle = std::thread::Builder::new()
            .name("msgbox-writer".into())
            .spawn(move || writer.run(rx, max_batch, sync, thread_stats))
            .map_err(|e| BoxError::Storage {
                doing: "starting the writer thread".into(),
                detail: e.to_string(),
            })?;
        Ok(SqliteBox {
            inner: Arc::new(Inner {
                path,
                chunk_budget: Arc::new(Semaphore::new(chunk_budget_permits(&opts))),
                opts,
                sender: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(handle)),
                readers: Mutex::new(Vec::new()),
                closed: Default::default(),
                stats,
                recovered: Mutex::new(recovered),
                // Migrated above.
                parts_in_rows: true.into(),
            }),
        })
    }

    /// Open an existing box for reading only, beside a running node (for
    /// `sluice status` and `sluice messages`): no writer, no recovery. Every
    /// write fails with [`BoxError::Closed`].
    pub fn open_read_only(data_dir: &Path) -> Result<SqliteBox> {
        SqliteBox::open_file_read_only(&data_dir.join(DB_FILE))
    }

    /// [`open_read_only`](Self::open_read_only) for the database file `path`.
    pub fn open_file_read_only(path: &Path) -> Result<SqliteBox> {
        let path = existing_db(path)?;
        let opts = Options::default();
        let conn = schema::open_connection(&path, &opts, true)
            .map_err(storage(&format!("opening the message box {}", path.display())))?;
        Ok(SqliteBox {
            inner: Arc::new(Inner {
                path,
                chunk_budget: Arc::new(Semaphore::new(1)),
                opts,
                sender: Mutex::new(None),
                writer_thread: Mutex::new(None),
                readers: Mutex::new(vec![conn]),
                closed: Default::default(),
                stats: Default::default(),
                recovered: Default::default(),
                parts_in_rows: Default::default(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn writer_stats(&self) -> WriterStats {
        self.inner.stats.snapshot()
    }

    fn sender(&self) -> Result<mpsc::Sender<Job>> {
        self.inner
            .sender
            .lock()
            .map_err(|_| BoxError::Closed)?
            .clone()
            .ok_or(BoxError::Closed)
    }

    /// Run `f` on the writer, inside the next group commit. `durable` jobs
    /// are answered only after the commit is synced to disk.
    async fn write<T: Send + 'static>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let job = Job::new(durable, f, tx);
        self.sender()?.send(job).await.map_err(|_| BoxError::Closed)?;
        rx.await.map_err(|_| BoxError::Closed)?
    }

    /// Where a message to publish came from, for its `received` tracking
    /// event; made here, off the writer thread, and only when tracking is on.
    fn origin(&self, context: &Context) -> Option<Origin> {
        self.inner.opts.tracking.then(|| Origin::of(context))
    }

    /// Run `f` on a reader connection, off the async threads.
    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        if self.inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(BoxError::Closed);
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match inner.readers.lock().map_err(|_| BoxError::Closed)?.pop() {
                Some(c) => c,
                None => schema::open_connection(&inner.path, &inner.opts, true)
                    .map_err(storage("opening a reader connection"))?,
            };
            let result = f(&conn);
            let mut pool = inner.readers.lock().map_err(|_| BoxError::Closed)?;
            if pool.len() < inner.opts.readers {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| BoxError::Storage {
            doing: "running a read".into(),
            detail: e.to_string(),
        })?
    }
}

/// Make a box made before `auto_vacuum = INCREMENTAL` give space back (see
/// [`schema::convert_to_incremental_vacuum`]). A failure (a full disk: the
/// conversion needs room for a copy) leaves the box as it was and working.
fn convert_box(conn: &Connection, path: &Path) {
    let started = std::time::Instant::now();
    match schema::convert_to_incremental_vacuum(conn, path) {
        Ok(schema::Conversion::Already) => {}
        Ok(schema::Conversion::Converted { before, after }) => tracing::info!(
            before_mb = before / 1_000_000,
            after_mb = after / 1_000_000,
            took_ms = started.elapsed().as_millis() as u64,
            "converted the message box; it now gives freed space back"
        ),
        Ok(schema::Conversion::TooBig { in_use }) => tracing::warn!(
            in_use_mb = in_use / 1_000_000,
            limit_mb = schema::CONVERT_MAX_BYTES / 1_000_000,
            "the message box was made by an older version and does not give freed space back; it holds too \
             much to convert now (that copies all of it), so it is converted at a later start, once it holds less"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "could not convert the message box to give back free space (it needs free disk space for a copy); \
             it works as before and is converted at a later start"
        ),
    }
}

/// Permits of the chunk-write budget: one per KiB.
fn chunk_budget_permits(opts: &Options) -> usize {
    (opts.chunk_budget_bytes / 1024).max(1)
}

/// The database file of a box that must already exist (opened beside a node).
fn existing_db(path: &Path) -> Result<PathBuf> {
    let path = path.to_path_buf();
    if !path.exists() {
        return Err(BoxError::Storage {
            doing: format!("opening the message box {}", path.display()),
            detail: "no such file (has `sluice serve` run with this data directory?)".into(),
        });
    }
    Ok(path)
}

fn id_of(bytes: Vec<u8>) -> Result<MessageId> {
    let arr: [u8; 16] = bytes.try_into().map_err(|_| BoxError::Storage {
        doing: "reading a message id".into(),
        detail: "stored id is not 16 bytes".into(),
    })?;
    Ok(MessageId::from_bytes(arr))
}

fn context_of(json: &str, id: MessageId) -> Result<Context> {
    Context::from_json(json).map_err(|e| BoxError::Storage {
        doing: format!("reading the context of message {id}"),
        detail: e.to_string(),
    })
}

/// The parts of message `id`; `in_rows`: the box may keep a message's one
/// inline part in its row (schema 4 on; see [`Inner::parts_in_rows`]).
pub(crate) fn load_parts(conn: &Connection, id: MessageId, in_rows: bool) -> Result<Vec<Part>> {
    let doing = format!("reading the parts of message {id}");
    if in_rows && let Some(part) = part_in_row(conn, id, &doing)? {
        return Ok(vec![part]);
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT name, size, crc32, inline_data, content_id, chunks FROM parts WHERE message_id = ?1 ORDER BY idx",
        )
        .map_err(storage(&doing))?;
    let rows = stmt
        .query_map([id.to_bytes()], |r| {
            let inline: Option<Vec<u8>> = r.get(3)?;
            let content: Option<i64> = r.get(4)?;
            let chunks: Option<u32> = r.get(5)?;
            Ok(Part {
                name: r.get(0)?,
                size: r.get::<_, i64>(1)? as u64,
                crc32: r.get(2)?,
                body: match (inline, content) {
                    (Some(data), _) => PartBody::Inline(Bytes::from(data)),
                    (None, Some(content)) => PartBody::Stored {
                        content,
                        chunks: chunks.unwrap_or(0),
                    },
                    (None, None) => PartBody::Inline(Bytes::new()),
                },
            })
        })
        .map_err(storage(&doing))?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(storage(&doing))
}

/// The one inline part message `id` keeps in its row, if it does.
fn part_in_row(conn: &Connection, id: MessageId, doing: &str) -> Result<Option<Part>> {
    conn.prepare_cached(
        "SELECT part_name, size, part_crc32, part_data FROM messages WHERE id = ?1 AND part_name IS NOT NULL",
    )
    .and_then(|mut s| s.query_row([id.to_bytes()], |r| row_part(r, 0)).optional())
    .map_err(storage(doing))
}

/// The part a message keeps in its row, from the columns `at`..: its
/// `part_name, size, part_crc32, part_data` (the name not NULL).
pub(crate) fn row_part(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Part> {
    Ok(Part {
        name: r.get(at)?,
        size: r.get::<_, i64>(at + 1)? as u64,
        crc32: r.get(at + 2)?,
        body: PartBody::Inline(Bytes::from(r.get::<_, Option<Vec<u8>>>(at + 3)?.unwrap_or_default())),
    })
}

const SUSPENDED_COLUMNS: &str =
    "id, message_id, subscriber, reason, attempts, suspended_at, resumable, stage, component, location, transport";

/// A row of `suspended`, as [`SUSPENDED_COLUMNS`] selects it.
struct SuspendedRow(i64, Vec<u8>, Option<String>, SuspendedInfo);

fn suspended_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SuspendedRow> {
    let id: i64 = r.get(0)?;
    let mid: Vec<u8> = r.get(1)?;
    let subscriber: Option<String> = r.get(2)?;
    Ok(SuspendedRow(
        id,
        mid,
        subscriber.clone(),
        SuspendedInfo {
            id,
            // Set from the row's bytes in `suspended_info`.
            message_id: MessageId::from_bytes([0; 16]),
            subscriber,
            reason: r.get(3)?,
            attempts: r.get(4)?,
            suspended_at: r.get(5)?,
            resumable: r.get(6)?,
            stage: r.get(7)?,
            component: r.get(8)?,
            location: r.get(9)?,
            transport: r.get(10)?,
            history: Vec::new(),
        },
    ))
}

/// Finish a suspended row: its message id, and its attempt history.
fn suspended_info(conn: &Connection, row: SuspendedRow) -> Result<SuspendedInfo> {
    let SuspendedRow(_, mid, subscriber, mut info) = row;
    info.message_id = id_of(mid)?;
    if let Some(sub) = subscriber {
        let doing = format!("reading the attempts of suspended entry {}", info.id);
        info.history = conn
            .prepare_cached(
                "SELECT attempt, at, transport, error FROM attempts WHERE message_id = ?1 AND subscriber = ?2 ORDER BY id",
            )
            .map_err(storage(&doing))?
            .query_map(params![info.message_id.to_bytes(), sub], |r| {
                Ok(AttemptInfo {
                    attempt: r.get(0)?,
                    at: r.get(1)?,
                    transport: r.get(2)?,
                    error: r.get(3)?,
                })
            })
            .map_err(storage(&doing))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(storage(&doing))?;
    }
    Ok(info)
}

/// `suspended_groups`: a send port's entries by port (whatever location
/// they came in by), a location's (no port) by location. Each group walks
/// the index `suspended_groups` in order: no sort of the entries (which,
/// with temporary storage in memory, would cost memory in proportion to
/// them); only the groups are sorted.
fn groups_sql() -> String {
    let error = format!("substr(reason, 1, {GROUP_ERROR_CHARS})");
    format!(
        "SELECT * FROM (
             SELECT subscriber, NULL, {error}, count(*), min(suspended_at), max(suspended_at)
             FROM suspended WHERE subscriber IS NOT NULL GROUP BY subscriber, {error}
             UNION ALL
             SELECT NULL, location, {error}, count(*), min(suspended_at), max(suspended_at)
             FROM suspended WHERE subscriber IS NULL GROUP BY location, {error})
         ORDER BY 4 DESC, 5 LIMIT ?1"
    )
}

/// The context with every property promoted: what a query filter sees.
fn all_promoted(ctx: &Context) -> Context {
    let mut all = Context::new();
    for p in ctx.iter() {
        all.promote(&p.namespace, &p.name, p.value.clone());
    }
    all
}

#[async_trait]
impl ChunkStore for SqliteBox {
    async fn begin(&self) -> Result<ContentId, ContentError> {
        self.write(false, |w| w.begin_content()).await.map_err(to_content)
    }

    async fn put_chunk(&self, id: ContentId, seq: u32, data: Bytes) -> Result<(), ContentError> {
        // Fail now on a closed or read-only box, not after waiting for budget.
        self.sender().map_err(to_content)?;
        // Hold budget for the chunk until the writer has stored it.
        let permits = (data.len() / 1024).max(1).min(chunk_budget_permits(&self.inner.opts)) as u32;
        let permit = self
            .inner
            .chunk_budget
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| ContentError::Backend("the message box is closed".into()))?;
        self.write(false, move |w| {
            let r = w.put_chunk(id, seq, &data);
            drop(permit);
            r
        })
        .await
        .map_err(to_content)
    }

    async fn finish(&self, id: ContentId, size: u64, crc32: u32, chunks: u32) -> Result<(), ContentError> {
        self.write(true, move |w| w.finish_content(id, size, crc32, chunks))
            .await
            .map_err(to_content)
    }

    async fn abort(&self, id: ContentId) -> Result<(), ContentError> {
        self.write(false, move |w| w.abort_content(id))
            .await
            .map_err(to_content)
    }

    async fn get_chunk(&self, id: ContentId, seq: u32) -> Result<Bytes, ContentError> {
        self.read(move |conn| {
            let doing = format!("reading chunk {seq} of content {id}");
            conn.prepare_cached("SELECT data FROM chunks WHERE content_id = ?1 AND seq = ?2")
                .map_err(storage(&doing))?
                .query_row(params![id, seq], |r| r.get::<_, Vec<u8>>(0))
                .optional()
                .map_err(storage(&doing))?
                .map(Bytes::from)
                .ok_or_else(|| {
                    BoxError::Content(ContentError::Store {
                        id,
                        what: format!("chunk {seq} is missing"),
                    })
                })
        })
        .await
        .map_err(to_content)
    }
}

fn to_content(e: BoxError) -> ContentError {
    match e {
        BoxError::Content(c) => c,
        other => ContentError::Backend(other.to_string()),
    }
}

#[async_trait]
impl MessageBox for SqliteBox {
    fn content(&self) -> Arc<dyn ChunkStore> {
        Arc::new(self.clone())
    }

    async fn publish(&self, msg: NewMessage) -> Result<Routed> {
        let json = msg.context.to_json();
        let origin = self.origin(&msg.context);
        self.write(true, move |w| w.publish(&msg, &json, None, None, origin.as_ref()))
            .await
    }

    async fn publish_holding(&self, msg: NewMessage, holder: &str) -> Result<Routed> {
        let json = msg.context.to_json();
        let origin = self.origin(&msg.context);
        let holder = holder.to_string();
        self.write(true, move |w| {
            w.publish(&msg, &json, Some(&holder), None, origin.as_ref())
        })
        .await
    }

    async fn publish_suspended(&self, msg: NewMessage, holder: &str, failure: &Failure) -> Result<i64> {
        let json = msg.context.to_json();
        let origin = self.origin(&msg.context);
        let (holder, failure) = (holder.to_string(), failure.clone());
        match self
            .write(true, move |w| {
                w.publish(&msg, &json, Some(&holder), Some(&failure), origin.as_ref())
            })
            .await?
        {
            Routed::Suspended { suspended_id } => Ok(suspended_id),
            Routed::Queued(_) => Err(BoxError::Storage {
                doing: "publishing a suspended message".into(),
                detail: "it was routed instead".into(),
            }),
        }
    }

    async fn stage(&self, interchange: MessageId, messages: Vec<StagedMessage>) -> Result<()> {
        let items: Vec<(StagedMessage, String, Option<String>)> = messages
            .into_iter()
            .map(|m| {
                let json = m.message.context.to_json();
                let origin = self.origin(&m.message.context).map(|o| writer::origin_to_json(&o));
                (m, json, origin)
            })
            .collect();
        // Not durable: a crash discards every uncommitted interchange anyway.
        self.write(false, move |w| w.stage(interchange, &items)).await
    }

    async fn commit_interchange(&self, interchange: MessageId) -> Result<InterchangeRouted> {
        self.write(true, move |w| w.commit_interchange(interchange)).await
    }

    async fn abort_interchange(&self, interchange: MessageId) -> Result<u64> {
        self.write(false, move |w| w.abort_interchange(interchange)).await
    }

    async fn subscribe(&self, sub: Subscription) -> Result<()> {
        self.write(true, move |w| w.subscribe(sub)).await
    }

    async fn unsubscribe(&self, subscriber: &str) -> Result<u64> {
        let s = subscriber.to_string();
        self.write(true, move |w| w.unsubscribe(&s)).await
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        self.read(|conn| {
            let doing = "listing subscriptions";
            let mut stmt = conn
                .prepare_cached("SELECT subscriber, filter FROM subscriptions ORDER BY subscriber")
                .map_err(storage(doing))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(storage(doing))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(storage(doing))?;
            rows.into_iter()
                .map(|(subscriber, f)| {
                    let filter = Filter::parse(&f).map_err(|e| BoxError::Storage {
                        doing: format!("reading the filter of subscription `{subscriber}`"),
                        detail: e.to_string(),
                    })?;
                    Ok(Subscription { subscriber, filter })
                })
                .collect()
        })
        .await
    }

    async fn lease(&self, subscriber: &str, max: usize, lease_for_ms: Millis) -> Result<Vec<Leased>> {
        let s = subscriber.to_string();
        // A lease needs no fsync: after a crash the entry is simply leasable again.
        self.write(false, move |w| w.lease(&s, max, lease_for_ms, 0)).await
    }

    async fn lease_with_bodies(
        &self,
        subscriber: &str,
        max: usize,
        lease_for_ms: Millis,
        bodies_up_to: u64,
    ) -> Result<Vec<Leased>> {
        let s = subscriber.to_string();
        self.write(false, move |w| w.lease(&s, max, lease_for_ms, bodies_up_to))
            .await
    }

    async fn renew(&self, token: LeaseToken, lease_for_ms: Millis) -> Result<Millis> {
        // Like a lease, a renewal needs no fsync.
        self.write(false, move |w| w.renew(token, lease_for_ms)).await
    }

    async fn ack(&self, token: LeaseToken) -> Result<()> {
        self.write(true, move |w| w.ack(token, None)).await
    }

    async fn ack_many(&self, acks: &[Ack]) -> Result<Vec<Result<()>>> {
        let acks = acks.to_vec();
        self.write(true, move |w| {
            let mut out = Vec::with_capacity(acks.len());
            for a in acks {
                match w.ack(a.token, a.delivered_to.as_deref()) {
                    // The transaction is gone: nothing of it commits.
                    Err(e @ BoxError::Storage { .. }) => return Err(e),
                    other => out.push(other),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn nack(&self, token: LeaseToken, retry_at: Millis, failure: &Failure) -> Result<()> {
        let f = failure.clone();
        self.write(true, move |w| w.nack(token, retry_at, &f, None)).await
    }

    async fn nack_to_attempt(
        &self,
        token: LeaseToken,
        retry_at: Millis,
        failure: &Failure,
        next_attempt: u32,
    ) -> Result<()> {
        let f = failure.clone();
        self.write(true, move |w| w.nack(token, retry_at, &f, Some(next_attempt)))
            .await
    }

    async fn suspend(&self, token: LeaseToken, failure: &Failure) -> Result<i64> {
        let f = failure.clone();
        self.write(true, move |w| w.suspend(token, &f)).await
    }

    async fn release_leases(&self) -> Result<u64> {
        self.write(true, |w| w.release_leases()).await
    }

    async fn recover(&self) -> Result<Recovered> {
        let found = std::mem::take(&mut *self.inner.recovered.lock().map_err(|_| BoxError::Closed)?);
        self.write(true, move |w| w.recover(found)).await
    }

    async fn hold(&self, message: MessageId, holder: &str) -> Result<()> {
        let h = holder.to_string();
        self.write(true, move |w| w.hold(message, &h)).await
    }

    async fn release(&self, message: MessageId, holder: &str) -> Result<()> {
        let h = holder.to_string();
        self.write(true, move |w| w.release(message, &h)).await
    }

    async fn resume(&self, suspended: i64) -> Result<Routed> {
        self.write(true, move |w| w.resume(suspended)).await
    }

    async fn terminate(&self, suspended: i64) -> Result<()> {
        self.write(true, move |w| w.terminate(suspended)).await
    }

    async fn resubmit(&self, suspended: i64, with: Resubmission) -> Result<Resubmitted> {
        let json = with.context.as_ref().map(|c| c.to_json());
        self.write(true, move |w| w.resubmit(suspended, &with, json.as_deref()))
            .await
    }

    async fn suspended(&self, id: i64) -> Result<Option<SuspendedInfo>> {
        self.read(move |conn| {
            let doing = format!("reading suspended entry {id}");
            let row = conn
                .prepare_cached(&format!("SELECT {SUSPENDED_COLUMNS} FROM suspended WHERE id = ?1"))
                .map_err(storage(&doing))?
                .query_row([id], suspended_row)
                .optional()
                .map_err(storage(&doing))?;
            row.map(|r| suspended_info(conn, r)).transpose()
        })
        .await
    }

    async fn tracking(
        &self,
        query: &TrackingQuery,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Page<TrackingEvent, i64>> {
        let q = query.clone();
        self.read(move |conn| search::tracking(conn, &q, after, limit)).await
    }

    async fn purge_tracking(&self, before: Millis, limit: usize) -> Result<u64> {
        self.write(false, move |w| w.purge_tracking(before, limit)).await
    }

    async fn add_user(&self, user: UserRecord) -> Result<()> {
        self.write(true, move |w| w.add_user(user)).await
    }

    async fn remove_user(&self, name: &str) -> Result<u64> {
        let name = name.to_string();
        self.write(true, move |w| w.remove_user(&name)).await
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let name = name.to_string();
        self.read(move |conn| {
            let doing = format!("reading user `{name}`");
            conn.prepare_cached("SELECT name, role, password_hash, created_at FROM users WHERE name = ?1")
                .and_then(|mut s| s.query_row([&name], user_of).optional())
                .map_err(storage(&doing))
        })
        .await
    }

    async fn users(&self, after: Option<&str>, limit: usize) -> Result<Vec<UserRecord>> {
        let after = after.map(str::to_string);
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT name, role, password_hash, created_at FROM users WHERE ?1 IS NULL OR name > ?1
                 ORDER BY name LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![after, limit as i64], user_of)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(storage("listing users"))
        })
        .await
    }

    async fn add_token(&self, token: NewToken) -> Result<()> {
        self.write(true, move |w| w.add_token(token)).await
    }

    async fn token(&self, hash: [u8; 32]) -> Result<Option<TokenRecord>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT t.id, t.user, u.role, t.created_at FROM tokens t JOIN users u ON u.name = t.user
                 WHERE t.hash = ?1",
            )
            .and_then(|mut s| s.query_row([hash], token_of).optional())
            .map_err(storage("looking up an API token"))
        })
        .await
    }

    async fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>> {
        let user = user.map(str::to_string);
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT t.id, t.user, u.role, t.created_at FROM tokens t JOIN users u ON u.name = t.user
                 WHERE ?1 IS NULL OR t.user = ?1 ORDER BY t.id",
            )
            .and_then(|mut s| s.query_map([user], token_of)?.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(storage("listing API tokens"))
        })
        .await
    }

    async fn revoke_token(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(true, move |w| w.revoke_token(&id)).await
    }

    async fn record_audit(&self, entry: NewAuditEntry) -> Result<i64> {
        self.write(true, move |w| w.record_audit(entry)).await
    }

    async fn audit(&self, before: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, at, actor, source, action, target, result, detail FROM audit
                 WHERE ?1 IS NULL OR id < ?1 ORDER BY id DESC LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![before, limit as i64], |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        entry: NewAuditEntry {
                            at: r.get(1)?,
                            actor: r.get(2)?,
                            source: r.get(3)?,
                            action: r.get(4)?,
                            target: r.get(5)?,
                            result: r.get(6)?,
                            detail: r.get(7)?,
                        },
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(storage("reading the audit log"))
        })
        .await
    }

    async fn purge_audit(&self, before: Millis, limit: usize) -> Result<u64> {
        self.write(false, move |w| w.purge_audit(before, limit)).await
    }

    async fn set_unit_stopped(&self, kind: UnitKind, name: &str, stopped: bool) -> Result<bool> {
        let name = name.to_string();
        self.write(true, move |w| w.set_unit_stopped(kind, &name, stopped))
            .await
    }

    async fn add_session(&self, session: NewSession) -> Result<()> {
        self.write(true, move |w| w.add_session(session)).await
    }

    async fn session(&self, hash: [u8; 32]) -> Result<Option<SessionRecord>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT s.user, u.role, s.csrf, s.expires_at, s.seen_at FROM sessions s JOIN users u ON u.name = s.user
                 WHERE s.hash = ?1",
            )
            .and_then(|mut s| {
                s.query_row([hash], |r| {
                    Ok(SessionRecord {
                        user: r.get(0)?,
                        role: role_of(r, 1)?,
                        csrf: r.get(2)?,
                        expires_at: r.get(3)?,
                        seen_at: r.get(4)?,
                    })
                })
                .optional()
            })
            .map_err(storage("looking up a session"))
        })
        .await
    }

    async fn touch_session(&self, hash: [u8; 32], at: Millis) -> Result<()> {
        self.write(false, move |w| w.touch_session(hash, at)).await
    }

    async fn remove_session(&self, hash: [u8; 32]) -> Result<bool> {
        self.write(true, move |w| w.remove_session(hash)).await
    }

    async fn purge_sessions(&self, now: Millis, idle_before: Millis, limit: usize) -> Result<u64> {
        self.write(false, move |w| w.purge_sessions(now, idle_before, limit))
            .await
    }

    async fn stopped_units(&self) -> Result<Vec<(UnitKind, String)>> {
        self.read(|conn| {
            let doing = "reading the units operators stopped";
            let rows = conn
                .prepare_cached("SELECT kind, name FROM stopped_units ORDER BY kind, name")
                .and_then(|mut s| {
                    s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(storage(doing))?;
            rows.into_iter()
                .map(|(kind, name)| {
                    let kind = kind.parse().map_err(|detail| BoxError::Storage {
                        doing: doing.to_string(),
                        detail,
                    })?;
                    Ok((kind, name))
                })
                .collect()
        })
        .await
    }

    fn commit_stats(&self) -> Option<CommitStats> {
        let s = self.writer_stats();
        Some(CommitStats {
            jobs: s.jobs,
            commits: s.commits,
            synced_commits: s.synced_commits,
        })
    }

    async fn held_by(&self, holder: &str, after: Option<MessageId>, limit: usize) -> Result<Vec<MessageId>> {
        let holder = holder.to_string();
        let node = self.inner.opts.node_id.clone();
        self.read(move |conn| {
            let doing = format!("listing messages held by `{holder}`");
            let after = after.map(|a| a.to_bytes().to_vec()).unwrap_or_default();
            let ids = conn
                .prepare_cached(
                    "SELECT message_id FROM holds WHERE holder = ?1 AND message_id > ?2 AND node = ?4
                     AND NOT EXISTS (SELECT 1 FROM staged WHERE staged.message_id = holds.message_id)
                     ORDER BY message_id LIMIT ?3",
                )
                .map_err(storage(&doing))?
                .query_map(params![holder, after, limit as i64, node], |r| r.get::<_, Vec<u8>>(0))
                .map_err(storage(&doing))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(storage(&doing))?;
            ids.into_iter().map(id_of).collect()
        })
        .await
    }

    async fn parts(&self, message: MessageId) -> Result<Vec<Part>> {
        let inner = self.inner.clone();
        self.read(move |conn| inner.parts(conn, message)).await
    }

    async fn message(&self, id: MessageId) -> Result<Option<MessageInfo>> {
        let inner = self.inner.clone();
        self.read(move |conn| {
            let doing = format!("reading message {id}");
            let Some((created_at, ctx, refs)) = conn
                .prepare_cached(
                    "SELECT created_at, context, refs FROM messages WHERE id = ?1
                     AND NOT EXISTS (SELECT 1 FROM staged WHERE message_id = ?1)",
                )
                .map_err(storage(&doing))?
                .query_row([id.to_bytes()], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, u32>(2)?)))
                .optional()
                .map_err(storage(&doing))?
            else {
                return Ok(None);
            };
            let queue = conn
                .prepare_cached(
                    "SELECT id, subscriber, visible_at, leased, generation - skipped, last_error FROM queue WHERE message_id = ?1 ORDER BY id",
                )
                .map_err(storage(&doing))?
                .query_map([id.to_bytes()], |r| {
                    Ok(QueueEntryInfo {
                        entry: r.get(0)?,
                        subscriber: r.get(1)?,
                        visible_at: r.get(2)?,
                        leased: r.get(3)?,
                        attempts: r.get(4)?,
                        last_error: r.get(5)?,
                    })
                })
                .map_err(storage(&doing))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(storage(&doing))?;
            let suspended = conn
                .prepare_cached(&format!(
                    "SELECT {SUSPENDED_COLUMNS} FROM suspended WHERE message_id = ?1 ORDER BY id"
                ))
                .map_err(storage(&doing))?
                .query_map([id.to_bytes()], suspended_row)
                .map_err(storage(&doing))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(storage(&doing))?
                .into_iter()
                .map(|r| suspended_info(conn, r))
                .collect::<Result<Vec<_>>>()?;
            let holders = conn
                .prepare_cached("SELECT holder FROM holds WHERE message_id = ?1 ORDER BY holder")
                .map_err(storage(&doing))?
                .query_map([id.to_bytes()], |r| r.get::<_, String>(0))
                .map_err(storage(&doing))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(storage(&doing))?;
            Ok(Some(MessageInfo {
                id,
                created_at,
                context: context_of(&ctx, id)?,
                parts: inner.parts(conn, id)?,
                refs,
                queue,
                suspended,
                holders,
            }))
        })
        .await
    }

    async fn list_messages(
        &self,
        query: &MessageQuery,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Page<MessageSummary, MessageId>> {
        let q = query.clone();
        self.read(move |conn| search::messages(conn, &q, after, limit)).await
    }

    async fn suspended_groups(&self, limit: usize) -> Result<Vec<SuspendedGroup>> {
        self.read(move |conn| {
            conn.prepare_cached(&groups_sql())
                .and_then(|mut s| {
                    s.query_map([limit as i64], |r| {
                        Ok(SuspendedGroup {
                            port: r.get(0)?,
                            location: r.get(1)?,
                            error: r.get(2)?,
                            count: r.get::<_, i64>(3)? as u64,
                            first: r.get(4)?,
                            last: r.get(5)?,
                        })
                    })?
                    .collect()
                })
                .map_err(storage("counting suspended messages by port and error"))
        })
        .await
    }

    async fn list_suspended(
        &self,
        query: &SuspendedQuery,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<SuspendedInfo>> {
        let q = query.clone();
        self.read(move |conn| {
            let doing = "listing suspended messages";
            // Page through the rows the SQL conditions match; the context
            // filter (if any) is applied here, to each row's message.
            let page = if q.context.is_some() { limit.max(256) } else { limit };
            let mut out = Vec::new();
            let mut after = after.unwrap_or(0);
            let error = q.error_contains.as_ref().map(|e| e.to_lowercase());
            loop {
                let rows = conn
                    .prepare_cached(&format!(
                        "SELECT {SUSPENDED_COLUMNS} FROM suspended WHERE id > ?1
                         AND (?2 IS NULL OR subscriber = ?2) AND (?3 IS NULL OR location = ?3)
                         AND (?4 IS NULL OR stage = ?4) AND (?5 IS NULL OR instr(lower(reason), ?5) > 0)
                         AND (?6 IS NULL OR suspended_at >= ?6) AND (?7 IS NULL OR suspended_at < ?7)
                         AND (?8 IS NULL OR resumable = ?8)
                         ORDER BY id LIMIT ?9"
                    ))
                    .map_err(storage(doing))?
                    .query_map(
                        params![
                            after,
                            q.port,
                            q.location,
                            q.stage,
                            error,
                            q.since,
                            q.until,
                            q.resumable,
                            page as i64
                        ],
                        suspended_row,
                    )
                    .map_err(storage(doing))?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(storage(doing))?;
                let Some(last) = rows.last() else { break };
                after = last.0;
                let full = rows.len() == page;
                for row in rows {
                    if let Some(filter) = &q.context {
                        let mid = id_of(row.1.clone())?;
                        let json: Option<String> = conn
                            .prepare_cached("SELECT context FROM messages WHERE id = ?1")
                            .map_err(storage(doing))?
                            .query_row([mid.to_bytes()], |r| r.get(0))
                            .optional()
                            .map_err(storage(doing))?;
                        let Some(json) = json else { continue };
                        // A context that cannot be read matches no filter
                        // (it is still listed without one).
                        let Ok(ctx) = context_of(&json, mid) else { continue };
                        if !filter.matches(&all_promoted(&ctx)) {
                            continue;
                        }
                    }
                    out.push(suspended_info(conn, row)?);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
                if !full {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn counts(&self) -> Result<Counts> {
        let inner = self.inner.clone();
        self.read(move |conn| {
            let doing = "counting messages";
            let in_rows = inner.parts_in_rows(conn)?;
            let one = |sql: &str| -> Result<u64> {
                conn.prepare_cached(sql)
                    .map_err(storage(doing))?
                    .query_row([], |r| r.get::<_, i64>(0))
                    .map(|n| n as u64)
                    .map_err(storage(doing))
            };
            let mut queued = std::collections::BTreeMap::new();
            let mut stmt = conn
                .prepare_cached("SELECT subscriber, count(*) FROM queue GROUP BY subscriber")
                .map_err(storage(doing))?;
            for row in stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(storage(doing))?
            {
                let (s, n) = row.map_err(storage(doing))?;
                queued.insert(s, n as u64);
            }
            for s in conn
                .prepare_cached("SELECT subscriber FROM subscriptions")
                .map_err(storage(doing))?
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(storage(doing))?
            {
                queued.entry(s.map_err(storage(doing))?).or_insert(0);
            }
            Ok(Counts {
                spool: one("SELECT count(*) FROM messages")?,
                queued,
                suspended: one("SELECT count(*) FROM suspended")?,
                // Shared content (fault messages, resubmissions) once.
                content_bytes: one("SELECT (SELECT coalesce(sum(size), 0) FROM content WHERE state = 2)
                          + (SELECT coalesce(sum(size), 0) FROM parts WHERE content_id IS NULL)")?
                    + if in_rows {
                        one("SELECT coalesce(sum(size), 0) FROM messages WHERE part_name IS NOT NULL")?
                    } else {
                        0
                    },
                content_chunks: one("SELECT count(*) FROM chunks")?,
            })
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let sender = self.inner.sender.lock().map_err(|_| BoxError::Closed)?.take();
        drop(sender);
        let handle = self.inner.writer_thread.lock().map_err(|_| BoxError::Closed)?.take();
        if let Some(h) = handle {
            tokio::task::spawn_blocking(move || h.join())
                .await
                .map_err(|e| BoxError::Storage {
                    doing: "stopping the writer".into(),
                    detail: e.to_string(),
                })?
                .map_err(|_| BoxError::Storage {
                    doing: "stopping the writer".into(),
                    detail: "it panicked".into(),
                })?;
        }
        if let Ok(mut readers) = self.inner.readers.lock() {
            readers.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
