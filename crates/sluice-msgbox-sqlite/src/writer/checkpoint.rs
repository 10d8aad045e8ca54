//! Checkpoints off the writer's thread.
//!
//! A checkpoint copies the pages committed to the WAL into the database
//! file (and syncs it). Run by the writer at the end of a commit, as
//! SQLite's automatic checkpoint does, it holds up every job waiting for the
//! next group commit; in a profile of the node under load it was about a
//! tenth of the writer's time. So the node's writer asks a checkpointer
//! thread, with its own connection, to run a `PASSIVE` checkpoint once the
//! WAL holds [`CHECKPOINT_PAGES`] (SQLite lets one checkpoint run beside
//! the writer), and goes on committing meanwhile.
//!
//! Architecture Invariant: what the WAL holds that is not yet in the
//! database file stays within what the disk reserve can take in (see
//! `space`): frames no checkpoint copied are stranded when the disk fills,
//! and every commit after that needs room. So the checkpointer runs only
//! while the file system has [`ROOMY`] free; the WAL may then hold up to
//! [`BACKSTOP_PAGES`] before the writer checkpoints by itself. With less
//! room (looked at most every [`LOOK_EVERY`]), on a file system that cannot
//! say, and after a failed commit until the box has recovered, the writer
//! checkpoints by itself at [`CHECKPOINT_PAGES`], as SQLite's automatic
//! checkpoint did. Paused after a failed commit until one succeeds (the
//! room is for the clean-up), no one checkpoints.

use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;

/// A checkpoint is due once the WAL holds this many pages (1 MiB of 4 KiB
/// pages: what `wal_autocheckpoint` was).
pub(crate) const CHECKPOINT_PAGES: c_int = 256;
/// The writer checkpoints by itself once the WAL holds this many pages (the
/// checkpointer is behind, or failing).
pub(crate) const BACKSTOP_PAGES: c_int = 4096;
/// Free space on the box's file system under which the writer checkpoints
/// by itself: room for what the WAL may hold beyond a checkpoint, many
/// times over.
pub(crate) const ROOMY: u64 = 256 << 20;
/// How often the writer looks at the free space (while checkpoints are due).
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// At the backstop, how long the writer waits for the checkpoint running
/// beside it to end before checkpointing anyway.
const BACKSTOP_WAIT: Duration = Duration::from_millis(200);
/// How much nicer than the node the checkpointer thread is: below the
/// writer's priority, whose commits every publish and ack wait for. A
/// checkpoint that falls behind costs only WAL size (up to
/// [`BACKSTOP_PAGES`]); a writer kept off the CPU costs every client. Under
/// load on two cores this was worth ~10% of HTTP throughput.
const NICENESS: c_int = 10;

/// Give the calling thread (only it: Linux sets a thread's niceness by its
/// id) a lower scheduling priority: [`NICENESS`] more than it has (at most
/// 19). Raising one's niceness needs no privilege; should it fail anyway,
/// the thread runs as it would have.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid takes no arguments; getpriority and setpriority
        // read only their integer arguments.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
        // Inherited from the thread that started it: the node's.
        let now = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
        let nicer = now.saturating_add(NICENESS).min(19);
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nicer) } != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the checkpointer's priority");
        }
    }
}

#[derive(Default)]
struct Shared {
    paused: AtomicBool,
    /// After a failed commit, until the box recovered: see
    /// [`Checkpointer::inline`].
    inline: AtomicBool,
    /// The writer's last look found room for checkpoints beside it.
    roomy: AtomicBool,
    /// Whether a checkpoint was asked for and not started yet, saved from
    /// taking the lock at every commit once one is pending.
    asked: AtomicBool,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    asked: bool,
    stop: bool,
    /// A checkpoint is running on the thread.
    running: bool,
}

impl Shared {
    /// Until no checkpoint runs on the thread.
    fn wait_idle(&self) {
        let Ok(s) = self.state.lock() else { return };
        drop(self.wake.wait_while(s, |s| s.running));
    }

    /// Until no checkpoint runs on the thread, or `limit` has passed.
    fn wait_idle_for(&self, limit: Duration) {
        let Ok(s) = self.state.lock() else { return };
        let _ = self.wake.wait_timeout_while(s, limit, |s| s.running);
    }

    fn ask(&self) {
        if self.asked.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            s.asked = true;
            self.wake.notify_all();
        }
    }
}

/// The node writer's checkpointer thread (stopped when dropped).
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Start a checkpointer for the box at `db` (a connection of its own,
    /// opened like `writer`'s) and hook it to the writer's commits.
    pub(crate) fn start(
        writer: &mut Connection,
        db: &Path,
        opts: &crate::Options,
        stats: Arc<super::Stats>,
    ) -> Result<Checkpointer, String> {
        let conn =
            crate::schema::open_connection(db, opts, false).map_err(|e| format!("opening its connection: {e}"))?;
        let shared = Arc::new(Shared::default());
        let hook = shared.clone();
        let mut room = Room::new(db.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf));
        // Replaces SQLite's automatic checkpoint (`wal_autocheckpoint`).
        let on_commit = move |wal: &mut rusqlite::hooks::Wal, pages: c_int| {
            if pages < CHECKPOINT_PAGES || hook.paused.load(Ordering::Acquire) {
                return Ok(());
            }
            let beside = !hook.inline.load(Ordering::Acquire) && room.roomy();
            hook.roomy.store(beside, Ordering::Release);
            if beside && pages < BACKSTOP_PAGES {
                hook.ask();
                return Ok(());
            }
            if beside {
                // The checkpointer is behind (it runs at a lower priority):
                // let the one it is running end, or ours would find the
                // checkpoint taken and copy nothing, and the WAL would grow
                // past the backstop. Not for long: every client waits for
                // this commit, and the disk has room for a longer WAL.
                hook.wait_idle_for(BACKSTOP_WAIT);
            }
            if let Err(e) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                tracing::debug!(error = %e, pages, "the writer's own checkpoint failed");
            }
            Ok(())
        };
        writer
            .wal_hook(Some(on_commit))
            .map_err(|e| format!("hooking it to the writer's commits: {e}"))?;
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("msgbox-checkpoint".into())
            .spawn(move || {
                lower_priority();
                run(conn, &thread_shared, &stats)
            })
            .map_err(|e| format!("starting its thread: {e}"))?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    /// No checkpoints (the writer's own included) until [`resume`](Self::resume).
    pub(crate) fn pause(&self) {
        self.shared.paused.store(true, Ordering::Release);
    }

    pub(crate) fn resume(&self) {
        self.shared.paused.store(false, Ordering::Release);
    }

    /// With `true`, the writer checkpoints at the end of its commits as
    /// SQLite's automatic checkpoint would: on a disk that filled, a
    /// checkpoint done before the next commit lets that commit write the
    /// WAL from its start again (no room needed), which one running beside
    /// the writer cannot promise.
    pub(crate) fn inline(&self, inline: bool) {
        self.shared.inline.store(inline, Ordering::Release);
    }

    /// The writer checkpoints by itself from now on, and no checkpoint runs
    /// beside it once this returns: called before the disk reserve is given
    /// up, so that the room is not taken by a checkpoint already running.
    pub(crate) fn take_over(&self) {
        self.inline(true);
        self.shared.wait_idle();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.stop = true;
            self.shared.wake.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(conn: Connection, shared: &Shared, stats: &super::Stats) {
    loop {
        {
            let Ok(mut s) = shared.state.lock() else { return };
            while !s.asked && !s.stop {
                s = match shared.wake.wait(s) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            }
            if s.stop {
                return;
            }
            s.asked = false;
            // Under the lock: an ask from now on is seen at the next turn.
            shared.asked.store(false, Ordering::Release);
            // The writer checkpoints by itself now: one beside it would
            // hold up the restart of the WAL from its start, and the WAL
            // would grow. Looked at under the lock, which `take_over`
            // takes after setting `inline`.
            if shared.paused.load(Ordering::Acquire)
                || shared.inline.load(Ordering::Acquire)
                || !shared.roomy.load(Ordering::Acquire)
            {
                continue;
            }
            s.running = true;
        }
        // PASSIVE: copies what no reader still needs, waits for no one.
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(2)?))
        }) {
            Ok((busy, copied)) => {
                if busy == 0 && copied > 0 {
                    stats.checkpoints_beside.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "checkpoint failed; the writer checkpoints by itself if the WAL keeps growing")
            }
        }
        let Ok(mut s) = shared.state.lock() else { return };
        s.running = false;
        shared.wake.notify_all();
    }
}

/// Whether the box's file system has [`ROOMY`] free, looked at most every
/// [`LOOK_EVERY`].
struct Room {
    dir: PathBuf,
    last: Option<(Instant, bool)>,
}

impl Room {
    fn new(dir: PathBuf) -> Room {
        Room { dir, last: None }
    }

    fn roomy(&mut self) -> bool {
        match self.last {
            Some((at, roomy)) if at.elapsed() < LOOK_EVERY => roomy,
            _ => {
                // A file system that cannot say counts as tight.
                let roomy = free_bytes(&self.dir).is_some_and(|free| free >= ROOMY);
                self.last = Some((Instant::now(), roomy));
                roomy
            }
        }
    }
}

/// Bytes an unprivileged writer may still use on the file system of `dir`.
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and outlives the call; `st` is read
    // only after the call succeeded, which wrote it.
    let st = unsafe {
        if libc::statvfs(path.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}
