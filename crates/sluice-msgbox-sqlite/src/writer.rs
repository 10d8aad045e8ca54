//! The writer thread: every change to the box runs here, in group commits.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension, params};
use sluice_content::{ContentError, ContentId, PartBody};
use sluice_model::{Context, Filter, MessageId};
use sluice_msgbox::*;
use tokio::sync::{mpsc, oneshot};

use crate::schema::{CONTENT_FINISHED, CONTENT_PUBLISHED, CONTENT_WRITING};
use crate::{WriterStats, context_of, id_of, storage};

pub(crate) mod checkpoint;
mod operators;
mod space;

pub(crate) use space::Reserve;

type Completion = Box<dyn FnOnce(Option<&BoxError>) + Send>;

/// How a job ended. Every job checks what it must (lease held, message
/// exists...) before it writes anything, so a refused job leaves no trace;
/// a job that fails in storage mid-way fails its whole batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JobStatus {
    Done,
    Refused,
    StorageFailed,
}

/// Runs a job against the writer, or, given `None` (the transaction could
/// not start), answers without running it.
type RunFn = Box<dyn FnOnce(Option<&mut Writer>) -> (JobStatus, Completion) + Send>;

/// One change, run inside the next group commit; its answer is sent only
/// after the commit.
pub struct Job {
    durable: bool,
    run: RunFn,
}

impl Job {
    pub fn new<T: Send + 'static>(
        durable: bool,
        f: impl FnOnce(&mut Writer) -> Result<T> + Send + 'static,
        reply: oneshot::Sender<Result<T>>,
    ) -> Job {
        Job {
            durable,
            run: Box::new(move |w| {
                let result = match w {
                    Some(w) => f(w),
                    None => Err(BoxError::Storage {
                        doing: "starting a transaction".into(),
                        detail: "see the log".into(),
                    }),
                };
                let status = match &result {
                    Ok(_) => JobStatus::Done,
                    Err(BoxError::Storage { .. }) => JobStatus::StorageFailed,
                    Err(_) => JobStatus::Refused,
                };
                let complete: Completion = Box::new(move |commit_error| {
                    let answer = match commit_error {
                        // Already "message box storage failed while committing: ...".
                        Some(BoxError::Storage { doing, detail }) => Err(BoxError::Storage {
                            doing: doing.clone(),
                            detail: detail.clone(),
                        }),
                        Some(e) => Err(BoxError::Storage {
                            doing: "committing".into(),
                            detail: e.to_string(),
                        }),
                        None => result,
                    };
                    let _ = reply.send(answer);
                });
                (status, complete)
            }),
        }
    }
}

#[derive(Default)]
pub struct Stats {
    jobs: AtomicU64,
    commits: AtomicU64,
    synced: AtomicU64,
    reclaim_steps: AtomicU64,
    reclaimed_bytes: AtomicU64,
    checkpoints_beside: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> WriterStats {
        WriterStats {
            jobs: self.jobs.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            synced_commits: self.synced.load(Ordering::Relaxed),
            reclaim_steps: self.reclaim_steps.load(Ordering::Relaxed),
            reclaimed_bytes: self.reclaimed_bytes.load(Ordering::Relaxed),
            checkpoints_beside: self.checkpoints_beside.load(Ordering::Relaxed),
        }
    }
}

pub struct Writer {
    conn: Connection,
    clock: Arc<dyn Clock>,
    /// Subscriptions in subscriber-name order, as committed.
    subs: Vec<(String, Filter)>,
    /// Record tracking events (deliveries, completions, terminations).
    tracking: bool,
    space: space::Space,
    stats: Arc<Stats>,
    /// The node this writer works for: its leases, holds, staged messages
    /// and content in progress carry this id.
    node: String,
    /// The node's writer checkpoints on another thread (`None`: SQLite's
    /// automatic checkpoints, at the end of a commit).
    checkpoints: Option<checkpoint::Checkpointer>,
    /// Tracking events of the transaction in progress not yet written:
    /// written [`TRACK_ROWS`] to a statement, before the commit (or
    /// whenever that many wait). A statement per event cost more than the
    /// rows it wrote.
    events: Vec<PendingEvent>,
    /// The id of the last tracking event written in this batch (read once
    /// a batch: it holds the write lock).
    last_event_id: Option<i64>,
}

impl Writer {
    pub fn new(conn: Connection, clock: Arc<dyn Clock>, tracking: bool, node: &str) -> rusqlite::Result<Writer> {
        let mut w = Writer {
            conn,
            clock,
            subs: Vec::new(),
            tracking,
            space: space::Space::default(),
            stats: Arc::default(),
            node: node.to_string(),
            checkpoints: None,
            events: Vec::with_capacity(TRACK_ROWS),
            last_event_id: None,
        };
        w.load_subscriptions()?;
        Ok(w)
    }

    /// Checkpoint the box at `db` on a thread of its own, off the path of
    /// the commits (see `writer::checkpoint`).
    pub fn checkpoint_off_thread(&mut self, db: &Path, opts: &crate::Options, stats: Arc<Stats>) -> Result<()> {
        let c =
            checkpoint::Checkpointer::start(&mut self.conn, db, opts, stats).map_err(|detail| BoxError::Storage {
                doing: "starting the checkpointer of the message box".into(),
                detail,
            })?;
        self.checkpoints = Some(c);
        Ok(())
    }

    fn load_subscriptions(&mut self) -> rusqlite::Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT subscriber, filter FROM subscriptions ORDER BY subscriber")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        self.subs = rows
            .into_iter()
            .filter_map(|(s, f)| match Filter::parse(&f) {
                Ok(filter) => Some((s, filter)),
                Err(e) => {
                    tracing::error!(subscriber = %s, error = %e, "stored subscription filter does not parse; ignoring it");
                    None
                }
            })
            .collect();
        Ok(())
    }

    /// The writer loop: take what is waiting, run it in one transaction,
    /// commit (and sync) once, then answer everyone.
    pub fn run(mut self, mut rx: mpsc::Receiver<Job>, max_batch: usize, sync: bool, stats: Arc<Stats>) {
        self.stats = stats.clone();
        let mut synced_mode = sync;
        let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
        // For waiting for a job with a timeout (a retry due later).
        let timer = tokio::runtime::Builder::new_current_thread().enable_time().build();
        loop {
            let first = match (self.space.idle_work(), &timer) {
                // Free space to give back: a step whenever no job waits.
                (Some(wait), _) if wait.is_zero() => match rx.try_recv() {
                    Ok(job) => job,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.space_idle();
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                },
                // A retry due later: the next job, or the retry then.
                (Some(wait), Ok(timer)) => {
                    match timer.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                        Ok(Some(job)) => job,
                        Ok(None) => break,
                        Err(_) => {
                            self.space_idle();
                            continue;
                        }
                    }
                }
                (None, _) | (Some(_), Err(_)) => match rx.blocking_recv() {
                    Some(job) => job,
                    None => break,
                },
            };
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let durable = sync && batch.iter().any(|j| j.durable);
            if durable != synced_mode {
                let mode = if durable { "FULL" } else { "NORMAL" };
                if let Err(e) = self.conn.execute_batch(&format!("PRAGMA synchronous = {mode}")) {
                    tracing::error!(error = %e, "could not change the sync mode");
                }
                synced_mode = durable;
            }
            let n = batch.len() as u64;
            let completions = self.run_batch(&mut batch);
            stats.jobs.fetch_add(n, Ordering::Relaxed);
            stats.commits.fetch_add(1, Ordering::Relaxed);
            if durable {
                stats.synced.fetch_add(1, Ordering::Relaxed);
            }
            match completions {
                Ok(done) => {
                    done.into_iter().for_each(|c| c(None));
                    // After the answers: a step holds up the next batch only.
                    self.space_after_commit();
                }
                Err((e, done)) => {
                    tracing::error!(error = %e, jobs = n, "message box commit failed; every job in it failed");
                    // Nothing was freed, and the disk may be full: leave the
                    // free pages (and the WAL's size) alone until a change
                    // that frees some commits; give up the reserve for it.
                    self.space_after_failure();
                    if let Err(e) = self.load_subscriptions() {
                        tracing::error!(error = %e, "reloading subscriptions after a failed commit");
                    }
                    done.into_iter().for_each(|c| c(Some(&e)));
                }
            }
        }
        // Channel closed: every sender is gone. Make the WAL small for the
        // next start (the checkpointer stopped first, out of its way).
        self.checkpoints = None;
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %e, "checkpoint at close failed");
        }
    }

    #[allow(clippy::type_complexity)]
    pub(crate) fn run_batch(&mut self, batch: &mut Vec<Job>) -> Result<Vec<Completion>, (BoxError, Vec<Completion>)> {
        let mut done = Vec::with_capacity(batch.len());
        self.last_event_id = None;
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let err = storage("starting a transaction")(e);
            for job in batch.drain(..) {
                // Nothing runs outside a transaction: answer each with the error.
                let (_, c) = (job.run)(None);
                done.push(c);
            }
            return Err((err, done));
        }
        let mut failed = None;
        for job in batch.drain(..) {
            if failed.is_some() {
                // Never run a job outside the transaction: after some storage
                // errors (disk full, I/O) SQLite has already rolled it back and
                // would commit each later statement on its own.
                let (_, c) = (job.run)(None);
                done.push(c);
                continue;
            }
            let (status, c) = (job.run)(Some(self));
            if status == JobStatus::StorageFailed || self.conn.is_autocommit() {
                failed = Some(done.len());
            }
            done.push(c);
        }
        if failed.is_none()
            && let Err(e) = self.write_events()
        {
            let err = storage("recording the batch's tracking events")(e);
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err((err, done));
        }
        if let Some(i) = failed {
            // Keep the batch atomic: nothing of it is committed, nor kept
            // for the next one.
            self.events.clear();
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            let err = BoxError::Storage {
                doing: "running a batch of changes".into(),
                detail: format!(
                    "change {} of {} failed in storage; the whole batch was rolled back",
                    i + 1,
                    done.len()
                ),
            };
            return Err((err, done));
        }
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => Ok(done),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err((storage("committing")(e), done))
            }
        }
    }

    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    // ---- content ------------------------------------------------------

    pub fn begin_content(&mut self) -> Result<ContentId> {
        self.conn
            .prepare_cached("INSERT INTO content (state, created_at, node) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![CONTENT_WRITING, self.clock.now_ms(), self.node]))
            .map_err(storage("starting new content"))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn put_chunk(&mut self, id: ContentId, seq: u32, data: &[u8]) -> Result<()> {
        let doing = format!("writing chunk {seq} of content {id}");
        let state: Option<i64> = self
            .conn
            .prepare_cached("SELECT state FROM content WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
            .map_err(storage(&doing))?;
        if state != Some(CONTENT_WRITING) {
            return Err(BoxError::Content(ContentError::Store {
                id,
                what: "is not being written".into(),
            }));
        }
        self.conn
            .prepare_cached("INSERT INTO chunks (content_id, seq, data) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![id, seq, data]))
            .map_err(storage(&doing))?;
        Ok(())
    }

    pub fn finish_content(&mut self, id: ContentId, size: u64, crc32: u32, chunks: u32) -> Result<()> {
        let doing = format!("finishing content {id}");
        let stored: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM chunks WHERE content_id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)))
            .map_err(storage(&doing))?;
        if stored != chunks as i64 {
            return Err(BoxError::Content(ContentError::Store {
                id,
                what: format!("has {stored} chunks stored, but {chunks} were written"),
            }));
        }
        let n = self
            .conn
            .prepare_cached(
                "UPDATE content SET state = ?2, size = ?3, crc32 = ?4, chunks = ?5 WHERE id = ?1 AND state = ?6",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    CONTENT_FINISHED,
                    size as i64,
                    crc32,
                    chunks,
                    CONTENT_WRITING
                ])
            })
            .map_err(storage(&doing))?;
        if n != 1 {
            return Err(BoxError::Content(ContentError::Store {
                id,
                what: "is not being written".into(),
            }));
        }
        Ok(())
    }

    pub fn abort_content(&mut self, id: ContentId) -> Result<()> {
        let doing = format!("discarding content {id}");
        // Published content belongs to a message; never drop it here.
        let n = self
            .conn
            .prepare_cached("DELETE FROM content WHERE id = ?1 AND state < ?2")
            .and_then(|mut s| s.execute(params![id, CONTENT_PUBLISHED]))
            .map_err(storage(&doing))?;
        if n > 0 {
            self.conn
                .prepare_cached("DELETE FROM chunks WHERE content_id = ?1")
                .and_then(|mut s| s.execute([id]))
                .map_err(storage(&doing))?;
            self.freed();
        }
        Ok(())
    }

    // ---- publish and routing -------------------------------------------

    fn matching(&self, ctx: &Context) -> Vec<String> {
        self.subs
            .iter()
            .filter(|(_, f)| f.matches(ctx))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// `context_json` is `msg.context.to_json()`, made by the caller so that
    /// the writer thread does not spend its time serialising.
    /// `suspend`: store the message suspended (not resumable) with this
    /// failure, unrouted. `origin`: its `received` event's (made by the
    /// caller, off the writer thread, when tracking is on).
    pub fn publish(
        &mut self,
        msg: &NewMessage,
        context_json: &str,
        holder: Option<&str>,
        suspend: Option<&Failure>,
        origin: Option<&Origin>,
    ) -> Result<Routed> {
        let id = msg.id;
        let doing = format!("publishing message {id}");
        let subs = if suspend.is_some() {
            Vec::new()
        } else {
            self.matching(&msg.context)
        };
        let refs = subs.len().max(1) as i64 + holder.is_some() as i64;
        // The id is checked by the insert itself (a duplicate writes
        // nothing); a duplicate's parts are in use, so say what it is.
        if let Err(e) = self.check_parts(msg, &doing, &mut |_| true) {
            return Err(if self.exists(id, &doing)? {
                BoxError::Duplicate(id)
            } else {
                e
            });
        }
        self.insert_message(msg, context_json, refs, holder, &doing)?;
        self.track_received(id, origin, &doing)?;
        let unrouted = match suspend {
            Some(f) => (f.clone(), false),
            None => (no_subscriber(), true),
        };
        self.route_stored(id, &msg.context, subs, &unrouted, &doing)
    }

    /// Queue a just-stored message (holding `subs.len().max(1)` references
    /// for it) to `subs`, or, with none, suspend it with `unrouted`
    /// (failure, resumable) and publish its fault message.
    fn route_stored(
        &mut self,
        id: MessageId,
        context: &Context,
        subs: Vec<String>,
        unrouted: &(Failure, bool),
        doing: &str,
    ) -> Result<Routed> {
        if subs.is_empty() {
            let (failure, resumable) = unrouted;
            let suspended_id = self.insert_suspended(id, None, failure, 0, *resumable, Some(context), doing)?;
            return Ok(Routed::Suspended { suspended_id });
        }
        let now = self.now();
        for s in &subs {
            self.enqueue(id, s, now, doing)?;
        }
        Ok(Routed::Queued(subs))
    }

    /// Check that `msg` can be stored: its id is new, and each stored part's
    /// content is finished and not yet used (`unused` also sees each
    /// content id, to catch one used twice in a batch).
    fn check_new(&self, msg: &NewMessage, doing: &str, unused: &mut dyn FnMut(ContentId) -> bool) -> Result<()> {
        if self.exists(msg.id, doing)? {
            return Err(BoxError::Duplicate(msg.id));
        }
        self.check_parts(msg, doing, unused)
    }

    /// Whether message `id` is stored (staged or not).
    fn exists(&self, id: MessageId, doing: &str) -> Result<bool> {
        let found: Option<i64> = self
            .conn
            .prepare_cached("SELECT 1 FROM messages WHERE id = ?1")
            .and_then(|mut s| s.query_row([id.to_bytes()], |r| r.get(0)).optional())
            .map_err(storage(doing))?;
        Ok(found.is_some())
    }

    /// Check that each stored part of `msg` refers to content that is
    /// finished and not yet used (see [`check_new`](Self::check_new)).
    fn check_parts(&self, msg: &NewMessage, doing: &str, unused: &mut dyn FnMut(ContentId) -> bool) -> Result<()> {
        for part in &msg.parts {
            if let PartBody::Stored { content, .. } = &part.body {
                let state: Option<i64> = self
                    .conn
                    .prepare_cached("SELECT state FROM content WHERE id = ?1")
                    .and_then(|mut s| s.query_row([content], |r| r.get(0)).optional())
                    .map_err(storage(doing))?;
                if state != Some(CONTENT_FINISHED) || !unused(*content) {
                    return Err(BoxError::UnfinishedContent {
                        message: msg.id,
                        part: part.name.clone(),
                        content: *content,
                    });
                }
            }
        }
        Ok(())
    }

    /// Store a message, its parts and (optionally) a hold, with `refs`
    /// references; route nothing. The caller checked its parts
    /// ([`check_parts`](Self::check_parts)); an id already in the box is
    /// refused here, before anything is written.
    fn insert_message(
        &mut self,
        msg: &NewMessage,
        context_json: &str,
        refs: i64,
        holder: Option<&str>,
        doing: &str,
    ) -> Result<()> {
        let id = msg.id;
        let doing = doing.to_string();
        let now = self.now();
        let size: u64 = msg.parts.iter().map(|p| p.size).sum();
        let stored = msg
            .parts
            .iter()
            .filter(|p| matches!(p.body, PartBody::Stored { .. }))
            .count() as i64;
        // A message of one inline part (the usual small message) keeps it
        // in its own row: a row less to write, index and delete.
        let in_row = match &msg.parts[..] {
            [p] => match &p.body {
                PartBody::Inline(data) => Some((p, data)),
                PartBody::Stored { .. } => None,
            },
            _ => None,
        };
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO messages (id, created_at, context, refs, nparts, size, content_parts,
                                       part_name, part_crc32, part_data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id.to_bytes(),
                    now,
                    context_json,
                    refs,
                    msg.parts.len() as i64,
                    size as i64,
                    stored,
                    in_row.map(|(p, _)| &p.name),
                    in_row.map(|(p, _)| p.crc32),
                    in_row.map(|(_, data)| &data[..]),
                ])
            })
            .map_err(storage(&doing))?;
        if inserted == 0 {
            return Err(BoxError::Duplicate(id));
        }
        let in_table = if in_row.is_some() { &[][..] } else { &msg.parts[..] };
        for (idx, part) in in_table.iter().enumerate() {
            let (inline, content, chunks) = match &part.body {
                PartBody::Inline(data) => (Some(&data[..]), None, None),
                PartBody::Stored { content, chunks } => {
                    let n = self
                        .conn
                        .prepare_cached("UPDATE content SET state = ?2 WHERE id = ?1 AND state = ?3")
                        .and_then(|mut s| s.execute(params![content, CONTENT_PUBLISHED, CONTENT_FINISHED]))
                        .map_err(storage(&doing))?;
                    if n != 1 {
                        // Checked above; only a part listed twice gets here.
                        // A storage error rolls the whole batch back.
                        return Err(BoxError::Storage {
                            doing: doing.clone(),
                            detail: format!("content {content} is used by two parts"),
                        });
                    }
                    (None, Some(*content), Some(*chunks))
                }
            };
            self.conn
                .prepare_cached(
                    "INSERT INTO parts (message_id, idx, name, size, crc32, inline_data, content_id, chunks)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        id.to_bytes(),
                        idx as i64,
                        part.name,
                        part.size as i64,
                        part.crc32,
                        inline,
                        content,
                        chunks
                    ])
                })
                .map_err(storage(&doing))?;
        }
        if let Some(holder) = holder {
            self.conn
                .prepare_cached("INSERT INTO holds (message_id, holder, node) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![id.to_bytes(), holder, self.node]))
                .map_err(storage(&doing))?;
        }
        Ok(())
    }

    // ---- interchanges ----------------------------------------------------

    /// Store staged messages: routed now (targets kept), visible at commit.
    /// Each comes with its context's JSON and, when tracking is on, its
    /// origin's ([`origin_to_json`]), for its `received` event at commit.
    pub fn stage(&mut self, interchange: MessageId, items: &[(StagedMessage, String, Option<String>)]) -> Result<()> {
        let doing = format!("staging messages of interchange {interchange}");
        // Check every message before writing any: a refused batch leaves no trace.
        let mut ids = std::collections::HashSet::new();
        let mut contents = std::collections::HashSet::new();
        for (staged, _, _) in items {
            let m = &staged.message;
            if !ids.insert(m.id) {
                return Err(BoxError::Duplicate(m.id));
            }
            self.check_new(m, &doing, &mut |content| contents.insert(content))?;
        }
        for (staged, json, origin) in items {
            let targets = if staged.suspend.is_some() {
                Vec::new()
            } else {
                self.matching(&staged.message.context)
            };
            let refs = targets.len().max(1) as i64 + staged.holder.is_some() as i64;
            self.insert_message(&staged.message, json, refs, staged.holder.as_deref(), &doing)?;
            self.conn
                .prepare_cached(
                    "INSERT INTO staged (interchange, message_id, targets, reason, node, origin)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        interchange.to_bytes(),
                        staged.message.id.to_bytes(),
                        targets.join("\n"),
                        staged.suspend.as_ref().map(failure_to_json),
                        self.node,
                        origin
                    ])
                })
                .map_err(storage(&doing))?;
        }
        Ok(())
    }

    /// Route every staged message of the interchange, in staging order, a
    /// page at a time (memory does not grow with the interchange).
    pub fn commit_interchange(&mut self, interchange: MessageId) -> Result<InterchangeRouted> {
        const PAGE: i64 = 4096;
        let doing = format!("committing interchange {interchange}");
        let now = self.now();
        let mut routed = InterchangeRouted::default();
        let mut after = 0i64;
        loop {
            let page: Vec<StagedRow> = self
                .conn
                .prepare_cached(
                    "SELECT id, message_id, targets, reason, origin FROM staged
                     WHERE interchange = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                )
                .and_then(|mut s| {
                    s.query_map(params![interchange.to_bytes(), after, PAGE], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })?
                    .collect()
                })
                .map_err(storage(&doing))?;
            let Some(last) = page.last() else { break };
            after = last.0;
            for (_, mid, targets, reason, origin) in page {
                let mid = id_of(mid)?;
                routed.messages += 1;
                let origin = origin.filter(|_| self.tracking).map(|o| origin_from_json(&o));
                self.track_received(mid, origin.as_ref(), &doing)?;
                if let Some(reason) = reason {
                    let failure = failure_from_json(&reason);
                    let ctx = self.readable_context(mid, &doing)?;
                    self.insert_suspended(mid, None, &failure, 0, false, ctx.as_ref(), &doing)?;
                    routed.suspended += 1;
                    continue;
                }
                if targets.is_empty() {
                    let ctx = self.readable_context(mid, &doing)?;
                    self.insert_suspended(mid, None, &no_subscriber(), 0, true, ctx.as_ref(), &doing)?;
                    routed.suspended += 1;
                    routed.no_subscriber += 1;
                    continue;
                }
                for t in targets.split('\n') {
                    if self.subs.iter().any(|(name, _)| name == t) {
                        self.enqueue(mid, t, now, &doing)?;
                        *routed.queued.entry(t.to_string()).or_default() += 1;
                    } else {
                        // Unsubscribed between staging and commit: as unsubscribe does.
                        let removed = Failure::new(stage::UNSUBSCRIBE, "message box", SUBSCRIBER_REMOVED);
                        let ctx = self.readable_context(mid, &doing)?;
                        self.insert_suspended(mid, Some(t), &removed, 0, true, ctx.as_ref(), &doing)?;
                        routed.suspended += 1;
                    }
                }
            }
        }
        self.conn
            .prepare_cached("DELETE FROM staged WHERE interchange = ?1")
            .and_then(|mut s| s.execute([interchange.to_bytes()]))
            .map_err(storage(&doing))?;
        Ok(routed)
    }

    pub fn abort_interchange(&mut self, interchange: MessageId) -> Result<u64> {
        let doing = format!("discarding interchange {interchange}");
        self.freed();
        crate::schema::discard_staged(&self.conn, crate::schema::Scope::Interchange(interchange))
            .map_err(storage(&doing))
    }

    fn enqueue(&mut self, id: MessageId, subscriber: &str, now: Millis, doing: &str) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO queue (subscriber, message_id, visible_at) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![subscriber, id.to_bytes(), now]))
            .map_err(storage(doing))?;
        Ok(())
    }

    /// Suspend message `id` (for `subscriber`, or unrouted) and, given its
    /// context, publish its fault message.
    #[allow(clippy::too_many_arguments)]
    fn insert_suspended(
        &mut self,
        id: MessageId,
        subscriber: Option<&str>,
        failure: &Failure,
        attempts: u32,
        resumable: bool,
        context: Option<&Context>,
        doing: &str,
    ) -> Result<i64> {
        let now = self.now();
        let location = fault::location_of(failure, context);
        self.conn
            .prepare_cached(
                "INSERT INTO suspended (message_id, subscriber, reason, attempts, suspended_at, resumable,
                                        stage, component, location, transport, progress)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id.to_bytes(),
                    subscriber,
                    failure.error,
                    attempts,
                    now,
                    resumable,
                    failure.stage,
                    failure.component,
                    location,
                    failure.transport,
                    failure.progress
                ])
            })
            .map_err(storage(doing))?;
        let suspended_id = self.conn.last_insert_rowid();
        let e = Track {
            location: location.as_deref(),
            detail: Some(&failure.error),
            ..Track::at_port(tracked::SUSPENDED, subscriber)
        };
        self.track(id, e, doing)?;
        if let Some(ctx) = context {
            let fault = fault::FaultOf {
                original: id,
                suspended_id,
                subscriber,
                location: location.as_deref(),
                failure,
                attempts,
                resumable,
                now,
            };
            self.publish_fault(ctx, &fault, doing)?;
        }
        Ok(suspended_id)
    }

    /// The stored context of message `id`, or `None` if it cannot be
    /// decoded (then no fault message can be made from it; that must not
    /// stop the suspension).
    fn readable_context(&self, id: MessageId, doing: &str) -> Result<Option<Context>> {
        match context_of(&self.context_json(id, doing)?, id) {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                tracing::error!(message_id = %id, error = %e,
                    "a suspended message's context cannot be read; no fault message is made for it");
                Ok(None)
            }
        }
    }

    fn context_json(&self, id: MessageId, doing: &str) -> Result<String> {
        self.conn
            .prepare_cached("SELECT context FROM messages WHERE id = ?1")
            .and_then(|mut s| s.query_row([id.to_bytes()], |r| r.get(0)))
            .map_err(storage(doing))
    }

    /// Publish the fault message of a suspension: the failed message's
    /// context demoted, `fault.*` promoted, its parts shared. Not stored when
    /// nothing subscribes to it, nor for the failure of a fault message.
    fn publish_fault(&mut self, original: &Context, fault: &fault::FaultOf<'_>, doing: &str) -> Result<()> {
        let Some(ctx) = fault::fault_context(original, fault) else {
            tracing::warn!(message_id = %fault.original, suspended_id = fault.suspended_id,
                "a fault message was suspended; no fault message is made for it");
            return Ok(());
        };
        let subs = self.matching(&ctx);
        if subs.is_empty() {
            return Ok(());
        }
        let id = MessageId::new();
        let json = ctx.to_json();
        self.insert_shared(id, fault.original, &json, subs.len() as i64, doing)?;
        let origin = self.tracking.then(|| Origin::of(&ctx));
        self.track_received(id, origin.as_ref(), doing)?;
        for s in &subs {
            self.enqueue(id, s, fault.now, doing)?;
        }
        tracing::debug!(fault_message = %id, message_id = %fault.original, subscribers = ?subs, "fault message published");
        Ok(())
    }

    /// Store message `id` with `context_json` and the parts of message
    /// `from` (the same content: nothing copied but the part rows).
    fn insert_shared(
        &mut self,
        id: MessageId,
        from: MessageId,
        context_json: &str,
        refs: i64,
        doing: &str,
    ) -> Result<()> {
        let n = self
            .conn
            .prepare_cached(
                "INSERT INTO messages (id, created_at, context, refs, nparts, size, content_parts,
                                       part_name, part_crc32, part_data)
                 SELECT ?1, ?3, ?4, ?5, nparts, size, content_parts, part_name, part_crc32, part_data
                 FROM messages WHERE id = ?2",
            )
            .and_then(|mut s| s.execute(params![id.to_bytes(), from.to_bytes(), self.now(), context_json, refs]))
            .map_err(storage(doing))?;
        if n != 1 {
            return Err(BoxError::NoSuchMessage(from));
        }
        self.conn
            .prepare_cached(
                "INSERT INTO parts (message_id, idx, name, size, crc32, inline_data, content_id, chunks)
                 SELECT ?1, idx, name, size, crc32, inline_data, content_id, chunks FROM parts WHERE message_id = ?2",
            )
            .and_then(|mut s| s.execute(params![id.to_bytes(), from.to_bytes()]))
            .map_err(storage(doing))?;
        Ok(())
    }

    fn record_attempt(
        &mut self,
        mid: MessageId,
        subscriber: &str,
        attempt: u32,
        failure: &Failure,
        doing: &str,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO attempts (message_id, subscriber, attempt, at, transport, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    mid.to_bytes(),
                    subscriber,
                    attempt,
                    self.now(),
                    failure.transport,
                    failure.error
                ])
            })
            .map_err(storage(doing))?;
        Ok(())
    }

    /// Record a tracking event of message `mid`, in the transaction of
    /// the change it records (nothing when tracking is off): written with
    /// others before the commit ([`write_events`](Self::write_events)).
    fn track(&mut self, mid: MessageId, e: Track<'_>, doing: &str) -> Result<()> {
        if !self.tracking {
            return Ok(());
        }
        self.events.push(PendingEvent {
            message: mid.to_bytes(),
            at: self.now(),
            event: e.event,
            subscriber: e.subscriber.map(str::to_string),
            location: e.location.map(str::to_string),
            detail: e.detail.map(str::to_string),
            context: e.context.map(str::to_string),
        });
        if self.events.len() >= TRACK_ROWS {
            self.write_events().map_err(storage(doing))?;
        }
        Ok(())
    }

    /// Write the tracking events waiting in [`events`](Self::events), in
    /// the order they were recorded, with ids that follow it: after the
    /// highest in the table or ever purged (what `AUTOINCREMENT` would
    /// keep, without its bookkeeping row rewritten on every insert; the
    /// batch holds the write lock, so no one else takes these ids).
    fn write_events(&mut self) -> rusqlite::Result<()> {
        use std::sync::LazyLock;
        if self.events.is_empty() {
            return Ok(());
        }
        const ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?)";
        static MANY: LazyLock<String> =
            LazyLock::new(|| format!("{TRACK_INSERT} {}", vec![ROW; TRACK_ROWS].join(", ")));
        static ONE: LazyLock<String> = LazyLock::new(|| format!("{TRACK_INSERT} {ROW}"));
        let events = std::mem::take(&mut self.events);
        let result = (|| {
            let after: i64 = match self.last_event_id {
                Some(id) => id,
                None => self
                    .conn
                    .prepare_cached(
                        "SELECT max(coalesce((SELECT max(id) FROM tracking), 0),
                                    coalesce((SELECT CAST(value AS INTEGER) FROM meta
                                              WHERE key = 'tracking_purged_to'), 0))",
                    )?
                    .query_row([], |r| r.get(0))?,
            };
            // At most `TRACK_ROWS` wait: all of them in one statement, or
            // fewer (before a commit) one by one.
            let (sql, per) = if events.len() == TRACK_ROWS {
                (&*MANY, TRACK_ROWS)
            } else {
                (&*ONE, 1)
            };
            let mut stmt = self.conn.prepare_cached(sql)?;
            events.chunks(per).enumerate().try_for_each(|(i, rows)| {
                bind_events(&mut stmt, after + 1 + (i * per) as i64, rows)?;
                stmt.raw_execute().map(drop)
            })?;
            Ok(after + events.len() as i64)
        })();
        // Written or failed (the batch then fails), none waits any more;
        // the buffer's room is kept for the next ones.
        self.events = events;
        self.events.clear();
        result.map(|last| self.last_event_id = Some(last))
    }

    /// Track message `id` as received from `origin` (when tracking is on,
    /// the caller made one).
    fn track_received(&mut self, id: MessageId, origin: Option<&Origin>, doing: &str) -> Result<()> {
        let Some(o) = origin else { return Ok(()) };
        let e = Track {
            subscriber: o.port.as_deref(),
            location: o.location.as_deref(),
            detail: o.source.as_deref(),
            ..Track::new(tracked::RECEIVED)
        };
        self.track(id, e, doing)
    }

    // ---- subscriptions -------------------------------------------------

    pub fn subscribe(&mut self, sub: Subscription) -> Result<()> {
        let doing = format!("saving subscription `{}`", sub.subscriber);
        self.conn
            .prepare_cached(
                "INSERT INTO subscriptions (subscriber, filter) VALUES (?1, ?2)
                 ON CONFLICT (subscriber) DO UPDATE SET filter = excluded.filter",
            )
            .and_then(|mut s| s.execute(params![sub.subscriber, sub.filter.to_string()]))
            .map_err(storage(&doing))?;
        match self.subs.binary_search_by(|(s, _)| s.as_str().cmp(&sub.subscriber)) {
            Ok(i) => self.subs[i].1 = sub.filter,
            Err(i) => self.subs.insert(i, (sub.subscriber, sub.filter)),
        }
        Ok(())
    }

    pub fn unsubscribe(&mut self, subscriber: &str) -> Result<u64> {
        let doing = format!("removing subscription `{subscriber}`");
        let n = self
            .conn
            .execute("DELETE FROM subscriptions WHERE subscriber = ?1", [subscriber])
            .map_err(storage(&doing))?;
        if n == 0 {
            return Err(BoxError::NoSuchSubscriber(subscriber.to_string()));
        }
        // First, so that no fault message below is routed to it (a failed
        // batch reloads the subscriptions).
        self.subs.retain(|(s, _)| s != subscriber);
        // Each queued entry is suspended like any other suspension: with its
        // location and its fault message. A page at a time (memory does not
        // grow with the queue); each page's entries leave the queue.
        const PAGE: i64 = 1024;
        let removed = Failure::new(stage::UNSUBSCRIBE, "message box", SUBSCRIBER_REMOVED);
        let mut moved = 0u64;
        loop {
            type Row = (i64, Vec<u8>, u32, Option<String>);
            let page: Vec<Row> = self
                .conn
                .prepare_cached(
                    "SELECT id, message_id, generation - skipped, progress FROM queue WHERE subscriber = ?1
                     ORDER BY id LIMIT ?2",
                )
                .and_then(|mut s| {
                    s.query_map(params![subscriber, PAGE], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })?
                    .collect()
                })
                .map_err(storage(&doing))?;
            if page.is_empty() {
                break;
            }
            for (entry, mid, generation, progress) in page {
                let mid = id_of(mid)?;
                self.conn
                    .prepare_cached("DELETE FROM queue WHERE id = ?1")
                    .and_then(|mut s| s.execute([entry]))
                    .map_err(storage(&doing))?;
                let ctx = self.readable_context(mid, &doing)?;
                // What a delivery in parts did goes with the entry.
                let failure = removed.clone().with_progress(progress);
                self.insert_suspended(mid, Some(subscriber), &failure, generation, true, ctx.as_ref(), &doing)?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    // ---- queues ----------------------------------------------------------

    /// `bodies_up_to`: see [`MessageBox::lease_with_bodies`] (0: contexts only).
    pub fn lease(&mut self, subscriber: &str, max: usize, lease_for: Millis, bodies_up_to: u64) -> Result<Vec<Leased>> {
        let doing = format!("leasing entries for `{subscriber}`");
        let now = self.now();
        let until = now.saturating_add(lease_for.max(0));
        // A part kept in the message's row comes with it, by the rule of
        // the loop below (which hands them out): while the inline bodies so
        // far fit in `bodies_up_to`, none after the first that does not.
        let mut taking = bodies_up_to;
        let rows = self
            .conn
            .prepare_cached(
                "SELECT q.id, q.message_id, q.generation, m.context, q.skipped, m.content_parts, m.size,
                        m.part_name, m.size, m.part_crc32, m.part_data, q.progress
                 FROM queue q JOIN messages m ON m.id = q.message_id
                 WHERE q.subscriber = ?1 AND q.visible_at <= ?2 ORDER BY q.visible_at, q.id LIMIT ?3",
            )
            .and_then(|mut s| {
                s.query_map(params![subscriber, now, max as i64], |r| {
                    let inline_size = (r.get::<_, i64>(5)? == 0).then_some(r.get::<_, i64>(6)?.max(0) as u64);
                    let in_row = match inline_size {
                        Some(size) if size <= taking => {
                            taking -= size;
                            match r.get_ref(7)? {
                                rusqlite::types::ValueRef::Null => None,
                                _ => Some(crate::row_part(r, 7)?),
                            }
                        }
                        Some(_) => {
                            taking = 0;
                            None
                        }
                        None => None,
                    };
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, u32>(4)?,
                        inline_size,
                        in_row,
                        r.get::<_, Option<String>>(11)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(storage(&doing))?;
        let mut out = Vec::with_capacity(rows.len());
        // Room left for inline bodies handed out with the leases (read from
        // the pages this transaction has at hand, not by a reader
        // afterwards); `None`: none (no budget, or it is spent).
        let mut bodies_left = Some(bodies_up_to).filter(|b| *b > 0);
        for (entry, mid, generation, ctx, skipped, inline_size, in_row, progress) in rows {
            let message_id = id_of(mid)?;
            let context = match context_of(&ctx, message_id) {
                Ok(c) => c,
                Err(e) => {
                    // It cannot be delivered, and must not block the queue
                    // behind it: suspend it, with the reason.
                    tracing::error!(subscriber, message_id = %message_id, error = %e,
                        "a queued message's context cannot be read; suspending it");
                    self.conn
                        .prepare_cached("DELETE FROM queue WHERE id = ?1")
                        .and_then(|mut s| s.execute([entry]))
                        .map_err(storage(&doing))?;
                    let failure = Failure::new("lease", "message box", e.to_string()).with_progress(progress);
                    let made = generation.saturating_sub(skipped);
                    self.insert_suspended(message_id, Some(subscriber), &failure, made, true, None, &doing)?;
                    continue;
                }
            };
            self.conn
                .prepare_cached(
                    "UPDATE queue SET visible_at = ?2, generation = ?3, leased = 1, node = ?4 WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![entry, until, generation + 1, self.node]))
                .map_err(storage(&doing))?;
            let parts = match (inline_size, bodies_left) {
                (Some(size), Some(left)) if size <= left => {
                    bodies_left = Some(left - size);
                    Some(match in_row {
                        Some(part) => vec![part],
                        None => crate::load_parts(&self.conn, message_id, true)?,
                    })
                }
                // Once one does not fit, none after it: the budget is spent.
                (Some(_), Some(_)) => {
                    bodies_left = None;
                    None
                }
                // Stored content is streamed by whoever delivers it.
                _ => None,
            };
            out.push(Leased {
                token: LeaseToken {
                    entry,
                    generation: generation + 1,
                },
                progress,
                subscriber: subscriber.to_string(),
                message_id,
                context,
                attempt: generation + 1,
                lease_until: until,
                parts,
            });
        }
        Ok(out)
    }

    /// The entry behind a token, if the token still holds the lease: its
    /// message, subscriber, the attempt numbers skipped so far, and its
    /// progress.
    fn leased_entry(&mut self, token: LeaseToken, doing: &str) -> Result<(MessageId, String, u32, Option<String>)> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT message_id, subscriber, skipped, progress FROM queue
                 WHERE id = ?1 AND generation = ?2 AND leased = 1",
            )
            .and_then(|mut s| {
                s.query_row(params![token.entry, token.generation], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })
                .optional()
            })
            .map_err(storage(doing))?;
        let (mid, sub, skipped, progress) = row.ok_or(BoxError::LeaseLost { entry: token.entry })?;
        Ok((id_of(mid)?, sub, skipped, progress))
    }

    pub fn renew(&mut self, token: LeaseToken, lease_for: Millis) -> Result<Millis> {
        let doing = format!("renewing the lease on queue entry {}", token.entry);
        let until = self.now().saturating_add(lease_for.max(0));
        let n = self
            .conn
            .prepare_cached("UPDATE queue SET visible_at = ?3 WHERE id = ?1 AND generation = ?2 AND leased = 1")
            .and_then(|mut s| s.execute(params![token.entry, token.generation, until]))
            .map_err(storage(&doing))?;
        if n == 0 {
            return Err(BoxError::LeaseLost { entry: token.entry });
        }
        Ok(until)
    }

    /// `delivered_to`: the detail of its tracking event ([`Ack`]).
    pub fn ack(&mut self, token: LeaseToken, delivered_to: Option<&str>) -> Result<()> {
        let doing = format!("acknowledging queue entry {}", token.entry);
        // Read, then delete by rowid: a `DELETE .. RETURNING` gathers its
        // rows in a temporary b-tree that SQLite opens, begins and closes
        // for every statement, which cost more than the delete itself. The
        // batch's transaction holds the write lock (`BEGIN IMMEDIATE`), so
        // nothing changes in between.
        let row: Option<(Vec<u8>, String, bool)> = self
            .conn
            .prepare_cached(
                "SELECT message_id, subscriber, last_error IS NOT NULL FROM queue
                 WHERE id = ?1 AND generation = ?2 AND leased = 1",
            )
            .and_then(|mut s| {
                s.query_row(params![token.entry, token.generation], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
            })
            .map_err(storage(&doing))?;
        let (mid, subscriber, failed_before) = row.ok_or(BoxError::LeaseLost { entry: token.entry })?;
        let mid = id_of(mid)?;
        self.conn
            .prepare_cached("DELETE FROM queue WHERE id = ?1")
            .and_then(|mut s| s.execute([token.entry]))
            .map_err(storage(&doing))?;
        // Delivered after failures: its history (for this subscriber, from
        // before a resume too) has served. Delivered at once after a resume,
        // the older history stays until the message leaves the box.
        if failed_before {
            self.conn
                .prepare_cached("DELETE FROM attempts WHERE message_id = ?1 AND subscriber = ?2")
                .and_then(|mut s| s.execute(params![mid.to_bytes(), subscriber]))
                .map_err(storage(&doing))?;
        }
        self.drop_reference_by(mid, Some((&subscriber, delivered_to)), &doing)
    }

    /// `next_attempt`: the attempt number of the next lease (only forward).
    pub fn nack(
        &mut self,
        token: LeaseToken,
        retry_at: Millis,
        failure: &Failure,
        next_attempt: Option<u32>,
    ) -> Result<()> {
        let doing = format!("returning queue entry {}", token.entry);
        let (mid, sub, skipped, _) = self.leased_entry(token, &doing)?;
        // Attempts made, not positions: a fail-over skips positions.
        self.record_attempt(mid, &sub, token.generation.saturating_sub(skipped), failure, &doing)?;
        // A lease makes the generation one more: the next attempt's position.
        // Moving it forward only keeps every token ever handed out unique.
        let generation = next_attempt.map_or(token.generation, |n| n.saturating_sub(1).max(token.generation));
        self.conn
            .prepare_cached(
                "UPDATE queue SET visible_at = ?2, leased = 0, last_error = ?3, generation = ?4, skipped = skipped + ?5,
                                  progress = coalesce(?6, progress)
                 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    token.entry,
                    retry_at,
                    failure.error,
                    generation,
                    generation - token.generation,
                    failure.progress
                ])
            })
            .map_err(storage(&doing))?;
        Ok(())
    }

    pub fn suspend(&mut self, token: LeaseToken, failure: &Failure) -> Result<i64> {
        let doing = format!("suspending queue entry {}", token.entry);
        let (mid, sub, skipped, progress) = self.leased_entry(token, &doing)?;
        let made = token.generation.saturating_sub(skipped);
        // The entry's progress goes with it unless this failure has newer.
        let kept;
        let failure = if failure.progress.is_none() && progress.is_some() {
            kept = failure.clone().with_progress(progress);
            &kept
        } else {
            failure
        };
        self.record_attempt(mid, &sub, made, failure, &doing)?;
        self.conn
            .prepare_cached("DELETE FROM queue WHERE id = ?1")
            .and_then(|mut s| s.execute([token.entry]))
            .map_err(storage(&doing))?;
        // (A context that cannot be read makes no fault message, and must
        // not fail the batch this job commits with.)
        let ctx = self.readable_context(mid, &doing)?;
        // The reference moves from the queue entry to the suspended entry.
        self.insert_suspended(
            mid,
            Some(&sub),
            failure,
            made,
            !failure.needs_edit,
            ctx.as_ref(),
            &doing,
        )
    }

    /// Make this node's leased entries ready now.
    pub fn release_leases(&mut self) -> Result<u64> {
        let now = self.now();
        let n = self
            .conn
            .execute(
                "UPDATE queue SET visible_at = ?1, leased = 0 WHERE leased = 1 AND node = ?2",
                params![now, self.node],
            )
            .map_err(storage("releasing leases"))?;
        Ok(n as u64)
    }

    /// Take back what this node's last run left: its leases, its
    /// uncommitted interchanges, its unpublished content. Run by the node
    /// before it starts work (no content of its own is being written).
    pub fn recover(&mut self, mut found: Recovered) -> Result<Recovered> {
        let doing = "taking back the work of the node's last run";
        found.leases += self.release_leases()?;
        let (staged, contents) = crate::schema::discard_unpublished(&self.conn, &self.node).map_err(storage(doing))?;
        found.staged += staged;
        found.contents += contents;
        Ok(found)
    }

    // ---- references ------------------------------------------------------

    pub fn hold(&mut self, message: MessageId, holder: &str) -> Result<()> {
        let doing = format!("holding message {message} for `{holder}`");
        // A staged message (of an uncommitted interchange) is not in the box yet.
        let exists: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT refs FROM messages WHERE id = ?1
                 AND NOT EXISTS (SELECT 1 FROM staged WHERE message_id = ?1)",
            )
            .and_then(|mut s| s.query_row([message.to_bytes()], |r| r.get(0)).optional())
            .map_err(storage(&doing))?;
        if exists.is_none() {
            return Err(BoxError::NoSuchMessage(message));
        }
        let added = self
            .conn
            .prepare_cached("INSERT INTO holds (message_id, holder, node) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")
            .and_then(|mut s| s.execute(params![message.to_bytes(), holder, self.node]))
            .map_err(storage(&doing))?;
        if added == 1 {
            self.conn
                .prepare_cached("UPDATE messages SET refs = refs + 1 WHERE id = ?1")
                .and_then(|mut s| s.execute([message.to_bytes()]))
                .map_err(storage(&doing))?;
        }
        Ok(())
    }

    pub fn release(&mut self, message: MessageId, holder: &str) -> Result<()> {
        let doing = format!("releasing message {message} held by `{holder}`");
        // A staged message's hold goes with its interchange (commit or abort).
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM holds WHERE message_id = ?1 AND holder = ?2
                 AND NOT EXISTS (SELECT 1 FROM staged WHERE message_id = ?1)",
            )
            .and_then(|mut s| s.execute(params![message.to_bytes(), holder]))
            .map_err(storage(&doing))?;
        if n == 0 {
            return Err(BoxError::NotHeld {
                message,
                holder: holder.to_string(),
            });
        }
        self.drop_reference(message, &doing)
    }

    /// Drop one reference; the last one deletes the message, its parts and
    /// their content, here, in this transaction.
    fn drop_reference(&mut self, id: MessageId, doing: &str) -> Result<()> {
        self.drop_reference_by(id, None, doing)
    }

    /// Drop one reference; `delivered_by`: the subscriber whose delivery it
    /// was and where it went, tracked as `delivered`, or, when it was the
    /// last reference, on the `completed` event (one tracking row, not two).
    fn drop_reference_by(
        &mut self,
        id: MessageId,
        delivered_by: Option<(&str, Option<&str>)>,
        doing: &str,
    ) -> Result<()> {
        // Read, then delete or count down (no `RETURNING`: see `ack`). The
        // last reference (the usual case: one subscriber) deletes the row
        // at once, rather than first rewriting it (context and all) with
        // one reference less. The context is read for the `completed`
        // event (only when tracking is on).
        let key = id.to_bytes();
        let row: Option<(i64, PartRows, Option<String>)> = self
            .conn
            .prepare_cached(
                "SELECT refs, content_parts > 0, part_name IS NULL AND nparts > 0, iif(?2, context, NULL)
                 FROM messages WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.query_row(params![key, self.tracking], |r| {
                    let rows = PartRows {
                        stored: r.get(1)?,
                        any: r.get(2)?,
                    };
                    Ok((r.get(0)?, rows, r.get(3)?))
                })
                .optional()
            })
            .map_err(storage(doing))?;
        let Some((refs, parts, context)) = row else {
            return Err(BoxError::Storage {
                doing: doing.to_string(),
                detail: format!("message {id} is missing"),
            });
        };
        if refs <= 1 {
            self.conn
                .prepare_cached("DELETE FROM messages WHERE id = ?1")
                .and_then(|mut s| s.execute([key]))
                .map_err(storage(doing))?;
            return self.delete_message(id, parts, delivered_by, context.as_deref(), doing);
        }
        self.conn
            .prepare_cached("UPDATE messages SET refs = refs - 1 WHERE id = ?1")
            .and_then(|mut s| s.execute([key]))
            .map_err(storage(doing))?;
        match delivered_by {
            Some((s, to)) => {
                let e = Track {
                    detail: to,
                    ..Track::at_port(tracked::DELIVERED, Some(s))
                };
                self.track(id, e, doing)
            }
            None => Ok(()),
        }
    }

    /// What goes with a message whose row was just deleted: its rows in
    /// `parts` (`parts` says which there are), the content no other part
    /// uses, its attempts; tracked as `completed`, with its `context`.
    fn delete_message(
        &mut self,
        id: MessageId,
        parts: PartRows,
        delivered_by: Option<(&str, Option<&str>)>,
        context: Option<&str>,
        doing: &str,
    ) -> Result<()> {
        // Content goes with the last part that refers to it (a fault message
        // or a resubmission may share it).
        const CONTENT: [&str; 2] = [
            "DELETE FROM chunks WHERE content_id IN (SELECT p.content_id FROM parts p WHERE p.message_id = ?1
               AND p.content_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM parts o WHERE o.content_id = p.content_id AND o.message_id != ?1))",
            "DELETE FROM content WHERE id IN (SELECT p.content_id FROM parts p WHERE p.message_id = ?1
               AND p.content_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM parts o WHERE o.content_id = p.content_id AND o.message_id != ?1))",
        ];
        const PARTS: &str = "DELETE FROM parts WHERE message_id = ?1";
        const ATTEMPTS: &str = "DELETE FROM attempts WHERE message_id = ?1";
        let key = id.to_bytes();
        self.freed();
        let content: &[&str] = if parts.stored { &CONTENT } else { &[] };
        let rows: &[&str] = if parts.any { &[PARTS, ATTEMPTS] } else { &[ATTEMPTS] };
        for sql in content.iter().chain(rows) {
            self.conn
                .prepare_cached(sql)
                .and_then(|mut s| s.execute([key]))
                .map_err(storage(doing))?;
        }
        let e = Track {
            context,
            detail: delivered_by.and_then(|(_, to)| to),
            ..Track::at_port(tracked::COMPLETED, delivered_by.map(|(s, _)| s))
        };
        self.track(id, e, doing)
    }

    // ---- suspended -------------------------------------------------------

    fn suspended_entry(&mut self, id: i64, doing: &str) -> Result<SuspendedEntry> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT message_id, subscriber, reason, resumable, location, progress FROM suspended WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.query_row([id], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, bool>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                    ))
                })
                .optional()
            })
            .map_err(storage(doing))?;
        let (mid, subscriber, reason, resumable, location, progress) = row.ok_or(BoxError::NoSuchSuspended(id))?;
        Ok(SuspendedEntry {
            message: id_of(mid)?,
            subscriber,
            reason,
            resumable,
            location,
            progress,
        })
    }

    pub fn resume(&mut self, suspended: i64) -> Result<Routed> {
        let doing = format!("resuming suspended entry {suspended}");
        let entry = self.suspended_entry(suspended, &doing)?;
        if !entry.resumable {
            return Err(BoxError::NotResumable {
                id: suspended,
                reason: entry.reason.clone(),
            });
        }
        let mid = entry.message;
        let targets = match &entry.subscriber {
            Some(s) => {
                if !self.subs.iter().any(|(name, _)| name == s) {
                    return Err(BoxError::NoSuchSubscriber(s.clone()));
                }
                vec![s.clone()]
            }
            None => {
                let ctx = self.context_json(mid, &doing)?;
                let targets = self.matching(&context_of(&ctx, mid)?);
                if targets.is_empty() {
                    return Err(BoxError::StillNoSubscriber { message: mid });
                }
                targets
            }
        };
        self.conn
            .execute("DELETE FROM suspended WHERE id = ?1", [suspended])
            .map_err(storage(&doing))?;
        let now = self.now();
        for t in &targets {
            self.enqueue(mid, t, now, &doing)?;
            // The next attempt goes on from where the failed one stopped.
            if entry.progress.is_some() {
                let queued = self.conn.last_insert_rowid();
                self.conn
                    .execute(
                        "UPDATE queue SET progress = ?2 WHERE id = ?1",
                        params![queued, entry.progress],
                    )
                    .map_err(storage(&doing))?;
            }
        }
        // One reference (the suspended entry) became `targets.len()` references.
        self.conn
            .execute(
                "UPDATE messages SET refs = refs + ?2 WHERE id = ?1",
                params![mid.to_bytes(), targets.len() as i64 - 1],
            )
            .map_err(storage(&doing))?;
        let to = targets.join(", ");
        let e = Track {
            detail: Some(&to),
            ..entry.track(tracked::RESUMED)
        };
        self.track(mid, e, &doing)?;
        Ok(Routed::Queued(targets))
    }

    pub fn terminate(&mut self, suspended: i64) -> Result<()> {
        let doing = format!("terminating suspended entry {suspended}");
        let entry = self.suspended_entry(suspended, &doing)?;
        self.conn
            .execute("DELETE FROM suspended WHERE id = ?1", [suspended])
            .map_err(storage(&doing))?;
        let e = Track {
            detail: Some(&entry.reason),
            ..entry.track(tracked::TERMINATED)
        };
        self.track(entry.message, e, &doing)?;
        self.drop_reference(entry.message, &doing)
    }

    pub fn resubmit(&mut self, suspended: i64, with: &Resubmission, context_json: Option<&str>) -> Result<Resubmitted> {
        let doing = format!("resubmitting suspended entry {suspended}");
        let entry = self.suspended_entry(suspended, &doing)?;
        let mid = entry.message;
        // Rejected on receipt (no subscriber): its bytes are the problem.
        if !entry.resumable && entry.subscriber.is_none() && with.parts.is_none() {
            return Err(BoxError::NeedsNewBody {
                id: suspended,
                reason: entry.reason,
            });
        }
        let (context, json) = match &with.context {
            // `context_json` is the edited context's, made off the writer thread.
            Some(c) => (c.clone(), context_json.map_or_else(|| c.to_json(), str::to_string)),
            None => {
                let json = self.context_json(mid, &doing)?;
                // Refused, not a storage failure: it must not fail the batch.
                let context = context_of(&json, mid).map_err(|_| BoxError::NotResumable {
                    id: suspended,
                    reason: "its stored context cannot be read; resubmit it with a whole new context, or terminate it"
                        .into(),
                })?;
                (context, json)
            }
        };
        let id = MessageId::new();
        let origin = self.tracking.then(|| Origin::resubmission(mid));
        let routed = match &with.parts {
            Some(parts) => {
                let msg = NewMessage {
                    id,
                    context: context.clone(),
                    parts: parts.clone(),
                };
                self.publish(&msg, &json, None, None, origin.as_ref())?
            }
            None => {
                let subs = self.matching(&context);
                self.insert_shared(id, mid, &json, subs.len().max(1) as i64, &doing)?;
                self.track_received(id, origin.as_ref(), &doing)?;
                self.route_stored(id, &context, subs, &(no_subscriber(), true), &doing)?
            }
        };
        // The same port's delivery goes on from where the suspended one
        // stopped (a mail's recipients done are not sent to again, even
        // with an edited list: they are named by address).
        if let (Some(s), Some(p)) = (&entry.subscriber, &entry.progress) {
            self.conn
                .execute(
                    "UPDATE queue SET progress = ?3 WHERE message_id = ?1 AND subscriber = ?2",
                    params![id.to_bytes(), s, p],
                )
                .map_err(storage(&doing))?;
        }
        self.conn
            .execute("DELETE FROM suspended WHERE id = ?1", [suspended])
            .map_err(storage(&doing))?;
        let new_id = id.to_string();
        let e = Track {
            detail: Some(&new_id),
            ..entry.track(tracked::RESUBMITTED)
        };
        self.track(mid, e, &doing)?;
        self.drop_reference(mid, &doing)?;
        Ok(Resubmitted { message_id: id, routed })
    }

    /// Events are purged from the oldest (lowest id) on, while they are
    /// older than `before`: ids follow time, so no index on the time has to
    /// be kept up to date on every insert. (After the clock went back, a few
    /// events may wait for a later purge.) The highest id purged is kept
    /// (`meta.tracking_purged_to`): new ids go on after it even when every
    /// event is gone (a reader following the events goes on after the last
    /// id it saw; see [`write_events`](Self::write_events)).
    pub fn purge_tracking(&mut self, before: Millis, limit: usize) -> Result<u64> {
        let doing = "purging old tracking events";
        // Of the oldest `limit` events, the first one not old enough ends the range.
        let end: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT id FROM (SELECT id, at FROM tracking ORDER BY id LIMIT ?2) WHERE at >= ?1 ORDER BY id LIMIT 1",
            )
            .and_then(|mut s| s.query_row(params![before, limit as i64], |r| r.get(0)).optional())
            .map_err(storage(doing))?;
        self.conn
            .prepare_cached(
                "INSERT INTO meta (key, value)
                 SELECT 'tracking_purged_to', high FROM (SELECT max(id) AS high FROM tracking) WHERE high IS NOT NULL
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut s| s.execute([]))
            .map_err(storage(doing))?;
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM tracking WHERE id IN
                 (SELECT id FROM tracking WHERE (?2 IS NULL OR id < ?2) ORDER BY id LIMIT ?1)",
            )
            .and_then(|mut s| s.execute(params![limit as i64, end]))
            .map_err(storage(doing))?;
        if n > 0 {
            self.freed();
        }
        Ok(n as u64)
    }
}

/// Which rows of `parts` a message has.
#[derive(Clone, Copy)]
struct PartRows {
    /// Some refer to stored content.
    stored: bool,
    /// It has some (not one inline part kept in its own row, nor none).
    any: bool,
}

/// A suspended entry, as the writer reads it before changing it.
struct SuspendedEntry {
    message: MessageId,
    subscriber: Option<String>,
    reason: String,
    resumable: bool,
    location: Option<String>,
    /// What the failed delivery had done ([`Failure::progress`]).
    progress: Option<String>,
}

impl SuspendedEntry {
    /// An event of the entry's message, where the entry is (its send port
    /// or receive location).
    fn track(&self, event: &'static str) -> Track<'_> {
        Track {
            location: self.location.as_deref(),
            ..Track::at_port(event, self.subscriber.as_deref())
        }
    }
}

/// How many tracking events one statement writes.
const TRACK_ROWS: usize = 16;
const TRACK_INSERT: &str =
    "INSERT INTO tracking (id, message_id, at, event, subscriber, location, detail, context) VALUES";

/// A tracking event waiting to be written ([`Writer::write_events`]).
struct PendingEvent {
    message: [u8; 16],
    at: Millis,
    event: &'static str,
    subscriber: Option<String>,
    location: Option<String>,
    detail: Option<String>,
    context: Option<String>,
}

/// Bind `events`, with ids from `first` on, to the first `8 * events.len()`
/// parameters of `stmt`.
fn bind_events(stmt: &mut rusqlite::Statement<'_>, first: i64, events: &[PendingEvent]) -> rusqlite::Result<()> {
    for (i, e) in events.iter().enumerate() {
        let at = i * 8;
        stmt.raw_bind_parameter(at + 1, first + i as i64)?;
        stmt.raw_bind_parameter(at + 2, &e.message[..])?;
        stmt.raw_bind_parameter(at + 3, e.at)?;
        stmt.raw_bind_parameter(at + 4, e.event)?;
        stmt.raw_bind_parameter(at + 5, &e.subscriber)?;
        stmt.raw_bind_parameter(at + 6, &e.location)?;
        stmt.raw_bind_parameter(at + 7, &e.detail)?;
        stmt.raw_bind_parameter(at + 8, &e.context)?;
    }
    Ok(())
}

/// A tracking event, as [`Writer::track`] records it (see [`TrackingEvent`]).
struct Track<'a> {
    event: &'static str,
    subscriber: Option<&'a str>,
    location: Option<&'a str>,
    detail: Option<&'a str>,
    /// The message's context (JSON), on `completed` events.
    context: Option<&'a str>,
}

impl<'a> Track<'a> {
    fn new(event: &'static str) -> Track<'a> {
        Track {
            event,
            subscriber: None,
            location: None,
            detail: None,
            context: None,
        }
    }

    fn at_port(event: &'static str, subscriber: Option<&'a str>) -> Track<'a> {
        Track {
            subscriber,
            ..Track::new(event)
        }
    }
}

fn no_subscriber() -> Failure {
    Failure::new(stage::ROUTE, "message box", NO_SUBSCRIBER)
}

/// A row of `staged` as a commit reads it: id, message id, targets,
/// reason (a bad record's failure), origin.
type StagedRow = (i64, Vec<u8>, String, Option<String>, Option<String>);

/// A staged record's origin as stored in `staged.origin`.
pub(crate) fn origin_to_json(o: &Origin) -> String {
    serde_json::json!({ "location": o.location, "port": o.port, "source": o.source }).to_string()
}

fn origin_from_json(text: &str) -> Origin {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    Origin {
        location: s("location"),
        port: s("port"),
        source: s("source"),
    }
}

/// A bad record's failure as stored in `staged.reason`.
fn failure_to_json(f: &Failure) -> String {
    serde_json::json!({
        "error": f.error, "stage": f.stage, "component": f.component,
        "location": f.location, "transport": f.transport,
    })
    .to_string()
}

fn failure_from_json(text: &str) -> Failure {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    match s("error") {
        Some(error) => Failure {
            error,
            stage: s("stage").unwrap_or_default(),
            component: s("component").unwrap_or_default(),
            location: s("location"),
            transport: s("transport"),
            needs_edit: false,
            progress: None,
        },
        // Staged by an older build: the reason as it was.
        None => Failure::new("", "", text),
    }
}
