//! Group commit: makes sled's writes survive a power cut, sharing one flush + fsync among every
//! writer that committed before it started.
//!
//! sled 0.34.7's `flush()` ends in `sync_file_range` (no drive cache flush, no metadata), and its
//! real `fsync` only runs in a background thread (upstream #1452). The store therefore disables
//! sled's flusher (`flush_every_ms(None)`) and syncs itself: writers take a ticket (their write
//! generation) after their transaction committed. A round notes the newest generation, calls
//! `Db::flush()`, then `fdatasync`s sled's `db` file (the vendored sled grows it by whole
//! segments, so its length rarely changes and no inode write is needed), `fsync`s any new
//! `snap.*` / `blobs/*` files and, when entries appeared, the directory, and publishes the
//! durable generation. Each waiter is woken by the round that makes `durable >= ticket`, and
//! only by it (waking every waiter after every round cost more thread wake-ups than receipts at
//! 64 submitters): a parked thread, or an async task (`Committed::durable`: a busy lane awaits
//! its receipts' tickets while it applies the next ones; such a wait never syncs on the
//! caller's thread). A lone writer (nothing else pending, no round running) leads its round on its
//! own thread, with no hand-off (each thread wake-up costs latency at the lanes); when writers
//! overlap, a *syncer* thread runs rounds back to back, so a round never waits for a waiter to
//! be scheduled (measured: leading every round from a waiter's thread halved the throughput at
//! 64 submitters).
//!
//! Invariant: `durable` only grows, and a generation is published only after the fsyncs that
//! cover every write committed before that generation was taken returned successfully. After a
//! failed flush or fsync the store is poisoned (every later wait fails): the kernel may have
//! dropped the dirty pages, so nothing may be reported as durable any more.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

/// Why durability could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage flush failed: {0} (check the disk; restart the gateway once it is writable)")]
pub struct DurabilityError(pub String);

#[derive(Default)]
struct State {
    /// Newest write generation handed out.
    written: u64,
    /// Every write with a generation <= this is on disk.
    durable: u64,
    /// A sync round is running (led by a lone writer or by the syncer thread).
    syncing: bool,
    /// Set once a flush or fsync failed.
    failed: Option<String>,
    /// Ask the syncer thread to stop.
    shutdown: bool,
    /// Writers waiting, with their tickets: a round wakes only those it made durable (all of
    /// them when it failed), not the ones waiting for the next round.
    waiting: Vec<(u64, Waiter)>,
}

/// Who waits for a ticket: a thread (parked) or an async task.
enum Waiter {
    Thread(std::thread::Thread),
    Task(std::task::Waker),
}

impl Waiter {
    fn wake(&self) {
        match self {
            Waiter::Thread(thread) => thread.unpark(),
            Waiter::Task(waker) => waker.wake_by_ref(),
        }
    }
}

/// Counters for tests, the benchmark and metrics.
#[derive(Debug, Default)]
pub struct SyncCounters {
    /// `fsync` calls made by group commits.
    pub fsyncs: AtomicU64,
    /// Group commits (flush + fsync rounds).
    pub commits: AtomicU64,
    /// Tickets taken (writes waited for).
    pub tickets: AtomicU64,
    /// Total nanoseconds spent in flush + fsync.
    pub sync_nanos: AtomicU64,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the syncer thread has work (or must stop).
    work: Condvar,
    db: sled::Db,
    /// Only the round's leader touches the files (the lock is never contended).
    files: Mutex<SyncFiles>,
    counters: SyncCounters,
}

/// The group-commit machinery; dropping it stops the syncer thread after a last sync.
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent (plain counters, and a
    // file set that only ever records files already synced).
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl GroupCommit {
    /// Group commit for the sled database at `dir`.
    pub(crate) fn start(db: sled::Db, dir: &Path) -> std::io::Result<GroupCommit> {
        let files = SyncFiles::open(dir)?;
        // Everything that exists now (conf, db, snapshots, the directory) is made durable once,
        // by a first round the syncer thread runs at once, off the start-up path (on a big
        // database it fsyncs what sled's open wrote: tens of milliseconds). Writers wait for it
        // like for any round; nothing is reported durable before it.
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                written: 1,
                ..State::default()
            }),
            work: Condvar::new(),
            db,
            files: Mutex::new(files),
            counters: SyncCounters::default(),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("store-syncer".into())
            .spawn(move || syncer(&thread_shared))?;
        Ok(GroupCommit {
            shared,
            thread: Some(thread),
        })
    }

    /// Blocks until everything this thread committed before the call is on disk.
    pub(crate) fn wait_durable(&self) -> Result<(), DurabilityError> {
        let ticket = self.ticket()?;
        self.wait_ticket(ticket)
    }

    /// Takes a ticket (the newest write generation) for everything this thread committed
    /// before the call; nothing is synced yet: wait for it with [`GroupCommit::wait_ticket`] or
    /// [`GroupCommit::poll_ticket`].
    pub(crate) fn ticket(&self) -> Result<u64, DurabilityError> {
        let mut state = lock(&self.shared.state);
        if let Some(failed) = &state.failed {
            return Err(DurabilityError(failed.clone()));
        }
        state.written += 1;
        self.shared.counters.tickets.fetch_add(1, Ordering::Relaxed);
        Ok(state.written)
    }

    /// Blocks until `ticket` is durable.
    ///
    /// A lone writer (nothing else pending, no round running) syncs on its own thread: no
    /// hand-off, which would cost two thread wake-ups on the answer's path. Otherwise the writer
    /// wakes the syncer thread and waits; the syncer runs rounds back to back while writers keep
    /// coming, each covering every write committed before it began.
    pub(crate) fn wait_ticket(&self, ticket: u64) -> Result<(), DurabilityError> {
        let shared = &*self.shared;
        let mut state = lock(&shared.state);
        // A round failed after the ticket was taken: a later round succeeding proves nothing
        // (the kernel may have dropped the pages the failed one was writing).
        if let (Some(failed), true) = (&state.failed, state.durable < ticket) {
            return Err(DurabilityError(failed.clone()));
        }
        if !state.syncing && state.durable + 1 == ticket {
            state.syncing = true;
            drop(state);
            let result = shared.sync_once();
            state = lock(&shared.state);
            shared.finish_round(&mut state, ticket, result);
        } else if state.durable < ticket {
            shared.work.notify_one();
        }
        let mut registered = false;
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if let Some(failed) = &state.failed {
                return Err(DurabilityError(failed.clone()));
            }
            if !registered {
                state
                    .waiting
                    .push((ticket, Waiter::Thread(std::thread::current())));
                registered = true;
            }
            drop(state);
            // Unparked by the round that covers the ticket (an unpark before the park makes it
            // return at once; a spurious return only loops).
            std::thread::park();
            state = lock(&shared.state);
        }
    }

    /// Polls whether `ticket` is durable, from async code: never syncs on the caller's thread
    /// (the syncer thread runs the round) and wakes the task once the round that covers the
    /// ticket has finished.
    pub(crate) fn poll_ticket(
        &self,
        ticket: u64,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), DurabilityError>> {
        let shared = &*self.shared;
        let mut state = lock(&shared.state);
        if state.durable >= ticket {
            return std::task::Poll::Ready(Ok(()));
        }
        if let Some(failed) = &state.failed {
            return std::task::Poll::Ready(Err(DurabilityError(failed.clone())));
        }
        let known = state.waiting.iter().any(|(waiting, waiter)| {
            *waiting == ticket && matches!(waiter, Waiter::Task(w) if w.will_wake(cx.waker()))
        });
        if !known {
            state
                .waiting
                .push((ticket, Waiter::Task(cx.waker().clone())));
        }
        if !state.syncing {
            shared.work.notify_one();
        }
        std::task::Poll::Pending
    }

    pub(crate) fn counters(&self) -> &SyncCounters {
        &self.shared.counters
    }
}

impl Shared {
    /// One round: sled's flush, then the fsyncs that make it survive a power cut.
    fn sync_once(&self) -> Result<(), String> {
        let started = Instant::now();
        let result = self
            .db
            .flush()
            .map_err(|err| format!("sled flush: {err}"))
            .and_then(|_| {
                lock(&self.files)
                    .sync(&self.counters)
                    .map_err(|err| format!("fsync: {err}"))
            });
        self.counters
            .sync_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// Publishes a round's result (under the state lock) and wakes everyone concerned.
    fn finish_round(&self, state: &mut State, target: u64, result: Result<(), String>) {
        state.syncing = false;
        match result {
            Ok(()) if state.failed.is_none() => state.durable = state.durable.max(target),
            Ok(()) => {}
            Err(err) => {
                tracing::error!(error = %err, "storage is no longer durable; refusing writes");
                state.failed = Some(err);
            }
        }
        let (durable, failed) = (state.durable, state.failed.is_some());
        state.waiting.retain(|(ticket, writer)| {
            let done = failed || *ticket <= durable;
            if done {
                writer.wake();
            }
            !done
        });
        // Writers that arrived during the round are the syncer's next round.
        self.work.notify_one();
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The syncer thread: runs rounds while writers wait and no round is running; after shutdown,
/// one last round for anything still pending.
fn syncer(shared: &Shared) {
    loop {
        let target = {
            let mut state = lock(&shared.state);
            loop {
                if state.failed.is_some() {
                    return;
                }
                let pending = state.written > state.durable;
                if pending && !state.syncing {
                    break;
                }
                if state.shutdown && !pending {
                    return;
                }
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(|poison| poison.into_inner());
            }
            state.syncing = true;
            state.written
        };
        let result = shared.sync_once();
        let mut state = lock(&shared.state);
        shared.finish_round(&mut state, target, result);
    }
}

/// The files of a sled directory that must be fsynced, with what was already synced.
struct SyncFiles {
    dir: PathBuf,
    db: File,
    synced_names: HashSet<PathBuf>,
    /// The first round also syncs `conf` and the directory (everything sled wrote before).
    first_round: bool,
}

impl SyncFiles {
    fn open(dir: &Path) -> std::io::Result<SyncFiles> {
        Ok(SyncFiles {
            dir: dir.to_path_buf(),
            db: File::open(dir.join("db"))?,
            synced_names: HashSet::new(),
            first_round: true,
        })
    }

    /// fsyncs the log file, and new snapshot or blob files plus their directory; in the first
    /// round also `conf` and the directory.
    fn sync(&mut self, counters: &SyncCounters) -> std::io::Result<()> {
        if self.first_round {
            File::open(self.dir.join("conf"))?.sync_all()?;
            counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        // The log's data and its length (sled writes whole segments at the end of the file, so
        // the length rarely changes): no inode write for the modification time on every round.
        self.db.sync_data()?;
        counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        let mut new_entries = false;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("snap.") && !name.ends_with(".generating") {
                let path = entry.path();
                if !self.synced_names.contains(&path) {
                    File::open(&path)?.sync_all()?;
                    counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                    self.synced_names.insert(path);
                    new_entries = true;
                }
            }
        }
        let blobs = self.dir.join("blobs");
        if blobs.is_dir() {
            let mut new_blobs = false;
            for entry in std::fs::read_dir(&blobs)? {
                let path = entry?.path();
                if !self.synced_names.contains(&path) {
                    match File::open(&path) {
                        Ok(file) => file.sync_all()?,
                        // A blob garbage-collected meanwhile needs no sync.
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(err),
                    }
                    counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                    self.synced_names.insert(path);
                    new_blobs = true;
                }
            }
            if new_blobs {
                fsync_dir(&blobs)?;
                counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                new_entries = true;
            }
        }
        if new_entries || self.first_round {
            fsync_dir(&self.dir)?;
            counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            // Forget names that are gone so the set does not grow for ever.
            self.synced_names.retain(|path| path.exists());
        }
        self.first_round = false;
        Ok(())
    }
}

/// fsyncs a directory (its entries: created, renamed or removed files).
pub(crate) fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round that failed poisons every ticket not yet durable, whichever way it is waited for:
    /// a later round that succeeds (a lone writer leading one) must not report it durable.
    #[test]
    fn after_a_failed_round_no_pending_ticket_is_reported_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .expect("sled");
        let commit = GroupCommit::start(db, dir.path()).expect("group commit");
        commit.wait_durable().expect("the first round");
        let ticket = commit.ticket().expect("ticket");
        {
            // A round covering the ticket fails (as a failed fdatasync would).
            let mut state = lock(&commit.shared.state);
            state.syncing = true;
            let target = state.written;
            commit
                .shared
                .finish_round(&mut state, target, Err("injected fsync failure".into()));
        }
        let waited = commit.wait_ticket(ticket);
        assert!(waited.is_err(), "{waited:?}");
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(matches!(
            commit.poll_ticket(ticket, &mut cx),
            std::task::Poll::Ready(Err(_))
        ));
        assert!(commit.ticket().is_err(), "no new ticket after a failure");
    }
}
