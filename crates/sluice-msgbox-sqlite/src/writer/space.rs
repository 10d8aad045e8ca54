//! Disk space: giving freed pages back to the file system, and keeping a
//! little room for cleaning up after the disk filled.
//!
//! Deleted content and messages leave free pages in the database file, which
//! SQLite reuses but never gives back by itself. Boxes are made with
//! `auto_vacuum = INCREMENTAL`: once more than [`RECLAIM_ABOVE`] is free,
//! the writer runs `incremental_vacuum` in steps of at most [`RECLAIM_STEP`]
//! (one transaction each), after commits that freed something and whenever
//! no job waits, until at most [`RECLAIM_KEEP`] is left. A step moves pages
//! in use from the end of the file into free ones and cuts the end off; that
//! goes through the WAL, and the file shrinks at the next complete
//! checkpoint. Once done, the WAL (which the steps grew) is checkpointed and
//! truncated too, without waiting for readers.
//!
//! A full disk: the commit that fails leaves no room to delete what filled
//! the disk (an unfinished body), since a delete writes pages too. So the node
//! keeps a [`Reserve`] file beside the box; when a commit fails it deletes
//! it and, in a box that gives space back, pauses automatic checkpoints
//! (which would grow the database file into that room before the clean-up,
//! usually the next job: the body's abort). Checkpoints resume after the
//! next commit that succeeds, whatever it is, or at a second failure in a
//! row, whether or not the reserve can be taken again: on a disk that stays
//! full an unchecked WAL would grow until nothing commits. The clean-up starts a
//! recovery: every free page is given back in small steps, each followed by
//! a truncating checkpoint (so each step needs little room, and gives some
//! back), for at most [`RECOVERY_BURST`] at once and the rest whenever no
//! job waits; then the reserve is written again (retried at most once a
//! second while there is no room). Nothing is vacuumed or truncated right
//! after the failed commit itself (that gave the room to whatever wrote
//! next, before the box could clean up).
//!
//! A truncating checkpoint that a reader's snapshot holds up is tried again
//! after the next commit, or every [`TRUNCATE_RETRY`] while the node is idle
//! (for at most [`TRUNCATE_TRIES`] tries).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Writer;

/// Free pages are given back once there are more than this many bytes of
/// them...
const RECLAIM_ABOVE: i64 = 32 << 20;
/// ...until at most this many are left: room for the next bodies to grow
/// into without growing the file.
const RECLAIM_KEEP: i64 = 4 << 20;
/// Most bytes of free pages given back in one step (one transaction), so a
/// group commit waits for one step at most (tens of milliseconds; after a
/// failed commit, for [`RECOVERY_BURST`] at most).
const RECLAIM_STEP: i64 = 16 << 20;
/// Most bytes of free pages given back in one step while recovering from a
/// failed commit: each step is followed by a truncating checkpoint, so it
/// needs at most about this much room on the disk.
const RECOVERY_STEP: i64 = 1 << 20;
/// Recovery steps run back to back after the clean-up commit for at most
/// this long (jobs wait meanwhile); the rest whenever no job waits.
const RECOVERY_BURST: Duration = Duration::from_millis(200);
/// A truncating checkpoint held up by a reader is tried again this often
/// while no job comes...
const TRUNCATE_RETRY: Duration = Duration::from_secs(1);
/// ...at most this many times (then at the next commit).
const TRUNCATE_TRIES: u32 = 60;
/// Size of the reserve kept beside the box for a full disk.
pub const RESERVE_BYTES: usize = 1 << 20;
/// While the reserve cannot be taken again (the disk is still full), try at
/// most this often.
const RESERVE_RETRY: Duration = Duration::from_secs(1);

/// The writer's state of giving space back.
#[derive(Default)]
pub(super) struct Space {
    /// The box is `auto_vacuum = INCREMENTAL` and this is the node's writer.
    vacuum: bool,
    page_size: i64,
    /// A change committed since the last look may have freed pages.
    freed: bool,
    /// Giving back, a step at a time, down to `keep` bytes.
    active: bool,
    keep: i64,
    /// Bytes given back and steps taken in this run (for the log).
    given: i64,
    steps: u64,
    /// Once done: checkpoint and truncate the WAL, which the steps grew.
    truncate_wal: bool,
    /// Truncations held up by readers since the last commit or the last
    /// run's end (0: try at once; then after a commit, or every
    /// [`TRUNCATE_RETRY`] up to [`TRUNCATE_TRIES`]).
    truncate_tries: u32,
    truncate_last: Option<Instant>,
    /// A commit failed: give every free page back and take the reserve again.
    recovering: bool,
    /// The last commit failed.
    failing: bool,
    /// Automatic checkpoints are paused: the `wal_autocheckpoint` to restore.
    paused: Option<i64>,
    /// The node's reserve (none for a writer beside the node).
    reserve: Option<Reserve>,
}

impl Space {
    /// When the writer has something to do if no job comes: `None` for
    /// nothing, else in how long (zero: now).
    pub(super) fn idle_work(&self) -> Option<Duration> {
        if !self.vacuum {
            None
        } else if self.active || (self.truncate_wal && self.truncate_tries == 0) {
            Some(Duration::ZERO)
        } else if self.truncate_wal && self.truncate_tries < TRUNCATE_TRIES {
            Some(TRUNCATE_RETRY.saturating_sub(self.truncate_last.map_or(TRUNCATE_RETRY, |t| t.elapsed())))
        } else {
            None
        }
    }
}

/// Room kept on the disk for cleaning up after it filled: a file of
/// [`RESERVE_BYTES`] beside the database (`msgbox.sqlite-reserve`), deleted
/// when a commit fails and written again once the box has recovered.
pub struct Reserve {
    path: PathBuf,
    held: bool,
    last_try: Option<Instant>,
}

impl Reserve {
    /// The reserve of the database at `db` (not taken yet).
    pub fn beside(db: &Path) -> Reserve {
        let mut path = db.as_os_str().to_owned();
        path.push("-reserve");
        Reserve {
            path: PathBuf::from(path),
            held: false,
            last_try: None,
        }
    }

    /// Give the reserve's space to the file system. Whether there was one.
    pub fn release(&mut self) -> bool {
        self.held = false;
        // Not taken again by the next commit (which may be the clean-up).
        self.last_try = Some(Instant::now());
        match std::fs::remove_file(&self.path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::warn!(error = %e, path = %self.path.display(), "could not delete the disk reserve");
                false
            }
        }
    }

    /// Take the space (again). `retry`: unless tried less than
    /// [`RESERVE_RETRY`] ago. Whether the reserve is held.
    fn take(&mut self, retry: bool) -> bool {
        if self.held {
            return true;
        }
        if retry && self.last_try.is_some_and(|t| t.elapsed() < RESERVE_RETRY) {
            return false;
        }
        self.last_try = Some(Instant::now());
        // Bytes that do not compress, so that the file system really
        // allocates them.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let data: Vec<u8> = (0..RESERVE_BYTES / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        let written = std::fs::File::create(&self.path).and_then(|mut f| f.write_all(&data));
        match written {
            Ok(()) => {
                self.held = true;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "no room for the disk reserve yet");
                let _ = std::fs::remove_file(&self.path);
                false
            }
        }
    }
}

impl Writer {
    /// The node's writer gives free pages back (if the box can:
    /// `auto_vacuum = INCREMENTAL`) and keeps the disk reserve beside `db`.
    /// Starts with what is free now.
    pub fn give_back_space(&mut self, db: &Path) -> rusqlite::Result<()> {
        let mut reserve = Reserve::beside(db);
        if !reserve.take(false) {
            tracing::warn!(
                mb = RESERVE_BYTES >> 20,
                path = %reserve.path.display(),
                "no room on the disk to keep a reserve beside the message box (for cleaning up after the disk fills); trying again later"
            );
        }
        self.space.reserve = Some(reserve);
        if crate::schema::auto_vacuum(&self.conn)? == 2 {
            self.space.vacuum = true;
            self.space.page_size = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            self.space.freed = true;
            self.look_for_free_space();
        }
        Ok(())
    }

    /// A change in this transaction deleted rows (content, messages, events).
    pub(super) fn freed(&mut self) {
        self.space.freed = true;
    }

    fn free_bytes(&self) -> rusqlite::Result<i64> {
        let pages: i64 = self
            .conn
            .prepare_cached("PRAGMA freelist_count")?
            .query_row([], |r| r.get(0))?;
        Ok(pages * self.space.page_size)
    }

    /// After a commit that freed pages: start giving them back if there are
    /// enough of them (or, recovering from a failed commit, any).
    fn look_for_free_space(&mut self) {
        if !std::mem::take(&mut self.space.freed) || self.space.active {
            return;
        }
        let (above, keep) = if self.space.recovering {
            (0, 0)
        } else {
            (RECLAIM_ABOVE, RECLAIM_KEEP)
        };
        match self.free_bytes() {
            Ok(free) if free > above => {
                tracing::debug!(free_mb = free >> 20, "giving free space in the message box back");
                let s = &mut self.space;
                s.active = true;
                s.keep = keep;
                s.given = 0;
                s.steps = 0;
                s.truncate_wal = false;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the free space of the message box"),
        }
    }

    pub(super) fn space_after_commit(&mut self) {
        if self.space.reserve.is_none() {
            return;
        }
        // A commit since: readers in the WAL's way may have moved on.
        self.space.truncate_tries = 0;
        let freed = self.space.freed;
        if self.space.vacuum {
            self.look_for_free_space();
            if freed && self.space.active {
                if self.space.recovering {
                    // Now, steps back to back: until then, other jobs would
                    // write into the room the reserve left. For a while at
                    // most; the rest at idle moments.
                    let until = Instant::now() + RECOVERY_BURST;
                    while self.space.active && Instant::now() < until {
                        self.reclaim_step();
                    }
                } else {
                    self.reclaim_step();
                }
            }
        }
        // Checkpoints paused by a failed commit resume once one succeeded
        // (after the recovery's own checkpoints), room or not.
        self.space.failing = false;
        self.resume_checkpoints();
        let s = &mut self.space;
        if s.recovering && !s.active && s.truncate_wal {
            // Not at the next idle moment either.
            self.truncate_wal();
        }
        let s = &mut self.space;
        if !s.active && !s.truncate_wal {
            // Not giving back (or cannot: an old box): take the reserve again
            // if it was not, when there is room.
            if let Some(r) = &mut s.reserve
                && r.take(true)
            {
                self.recovered();
            }
        }
    }

    /// Automatic checkpoints as before the failed commit.
    fn resume_checkpoints(&mut self) {
        let Some(pages) = self.space.paused.take() else { return };
        if let Some(c) = &self.checkpoints {
            c.resume();
            return;
        }
        if let Err(e) = self.conn.execute_batch(&format!("PRAGMA wal_autocheckpoint = {pages}")) {
            tracing::warn!(error = %e, "could not turn automatic checkpoints back on");
        }
    }

    /// The reserve is held again: recovery is over.
    fn recovered(&mut self) {
        if !std::mem::take(&mut self.space.recovering) {
            return;
        }
        self.resume_checkpoints();
        if let Some(c) = &self.checkpoints {
            c.inline(false);
        }
        tracing::info!(
            mb = RESERVE_BYTES >> 20,
            "took the disk reserve beside the message box again"
        );
    }

    pub(super) fn space_after_failure(&mut self) {
        let s = &mut self.space;
        s.freed = false;
        s.active = false;
        s.truncate_wal = false;
        if s.reserve.is_none() {
            return;
        }
        // Before the room is given up: no checkpoint beside the writer may
        // take it (one running is waited for).
        if let Some(c) = &self.checkpoints {
            c.take_over();
        }
        let s = &mut self.space;
        let Some(reserve) = &mut s.reserve else { return };
        let released = reserve.release();
        s.recovering = true;
        let again = std::mem::replace(&mut s.failing, true);
        if s.paused.is_some() {
            // Failed again with checkpoints paused: the pause does not help
            // (and would let the WAL grow); checkpoint as usual.
            self.resume_checkpoints();
        } else if s.vacuum
            && !again
            && let Some(c) = &self.checkpoints
        {
            // As below, for the node's checkpointer and the writer's backstop.
            c.pause();
            self.space.paused = Some(0);
        } else if s.vacuum && !again {
            // Until the box has cleaned up, the room is for the clean-up
            // (and the vacuum after it), not for a checkpoint growing the
            // database file into it. The truncating checkpoints of the
            // recovery copy only the pages left. (A box that cannot give
            // space back keeps its checkpoints: nothing would truncate its
            // WAL.)
            let off = self
                .conn
                .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get::<_, i64>(0))
                .and_then(|pages| {
                    self.conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
                    Ok(pages)
                });
            match off {
                Ok(pages) => self.space.paused = Some(pages),
                Err(e) => tracing::warn!(error = %e, "could not turn automatic checkpoints off"),
            }
        }
        if released {
            tracing::warn!(
                mb = RESERVE_BYTES >> 20,
                "a commit failed (a full disk?); gave up the disk reserve beside the message box, so that it can clean up"
            );
        }
    }

    pub(super) fn space_idle(&mut self) {
        if self.space.active {
            self.reclaim_step();
        } else if self.space.truncate_wal {
            self.truncate_wal();
        }
    }

    fn stop_reclaiming(&mut self) {
        let s = &mut self.space;
        s.freed = false;
        s.active = false;
        s.truncate_wal = false;
    }

    /// Give back up to [`RECLAIM_STEP`] of free pages, in one transaction.
    fn reclaim_step(&mut self) {
        let free = match self.free_bytes() {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the free space of the message box");
                self.stop_reclaiming();
                return;
            }
        };
        let step = if self.space.recovering {
            RECOVERY_STEP
        } else {
            RECLAIM_STEP
        };
        let pages = (free - self.space.keep).min(step) / self.space.page_size;
        if pages > 0 {
            if let Err(e) = self.incremental_vacuum(pages) {
                tracing::warn!(
                    error = %e,
                    "could not give free space in the message box back; trying again after a change that frees more"
                );
                self.stop_reclaiming();
                return;
            }
            let bytes = pages * self.space.page_size;
            self.space.steps += 1;
            self.space.given += bytes;
            self.stats.reclaim_steps.fetch_add(1, Ordering::Relaxed);
            self.stats.reclaimed_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            if self.space.recovering {
                // Copy the moved pages into the file and cut its end off
                // now: the next step then has that room too.
                let _ = self.checkpoint_truncate();
            }
            if free - bytes > self.space.keep {
                return;
            }
        }
        let s = &mut self.space;
        if s.given >= RECLAIM_ABOVE {
            tracing::info!(
                mb = s.given >> 20,
                steps = s.steps,
                "gave free space in the message box back to the file system"
            );
        }
        s.active = false;
        s.truncate_wal = true;
        s.truncate_tries = 0;
    }

    fn incremental_vacuum(&mut self, pages: i64) -> rusqlite::Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        // One row per page given back: step through them all.
        let r = self
            .conn
            .prepare(&format!("PRAGMA incremental_vacuum({pages})"))
            .and_then(|mut s| {
                let mut rows = s.query([])?;
                while rows.next()?.is_some() {}
                Ok(())
            })
            .and_then(|()| self.conn.execute_batch("COMMIT"));
        if r.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        r
    }

    /// The steps went through the WAL: copy it into the file (which cuts the
    /// file's end off) and truncate it. Without waiting for readers: if one
    /// is in the way, try again after the next commit. Then, recovering from
    /// a failed commit, take the reserve again.
    fn truncate_wal(&mut self) {
        self.space.truncate_last = Some(Instant::now());
        match self.checkpoint_truncate() {
            Ok(true) => {
                let s = &mut self.space;
                s.truncate_wal = false;
                if s.recovering
                    && let Some(r) = &mut s.reserve
                    && r.take(false)
                {
                    self.recovered();
                }
            }
            Ok(false) => {
                self.space.truncate_tries += 1;
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not truncate the write-ahead log");
                self.space.truncate_tries += 1;
            }
        }
    }

    /// `wal_checkpoint(TRUNCATE)` without waiting for readers: whether it
    /// completed (false: a reader or writer was in the way).
    fn checkpoint_truncate(&mut self) -> rusqlite::Result<bool> {
        let _ = self.conn.busy_timeout(Duration::ZERO);
        let r = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
        let _ = self.conn.busy_timeout(crate::schema::BUSY_TIMEOUT);
        r.map(|busy| busy == 0)
    }
}
