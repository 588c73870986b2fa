//! Group commit: makes sled's writes survive a power cut, sharing one flush + fsync among every
//! writer that committed before it started.
//!
//! sled 0.34.7's `flush()` ends in `sync_file_range` (no drive cache flush, no metadata), and its
//! real `fsync` only runs in a background thread (upstream #1452). The store therefore disables
//! sled's flusher (`flush_every_ms(None)`) and runs its own *syncer* thread: writers take a
//! ticket (their write generation) after their transaction committed and block on a `Condvar`;
//! the syncer notes the newest generation, calls `Db::flush()`, then `fsync`s sled's `db` file,
//! any new `snap.*` / `blobs/*` files and, when entries appeared, the directory, and publishes
//! the durable generation. Waiters wake when `durable >= ticket`.
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
    /// Set once a flush or fsync failed.
    failed: Option<String>,
    /// Ask the syncer to stop.
    shutdown: bool,
}

/// Counters for tests, the benchmark and metrics.
#[derive(Debug, Default)]
pub struct SyncCounters {
    /// `fsync` calls made by the syncer.
    pub fsyncs: AtomicU64,
    /// Group commits (flush + fsync rounds).
    pub commits: AtomicU64,
    /// Tickets taken (writes waited for).
    pub tickets: AtomicU64,
    /// Total nanoseconds spent in flush + fsync.
    pub sync_nanos: AtomicU64,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
    pub(crate) counters: SyncCounters,
}

/// The group-commit machinery; dropping it stops the syncer after a last sync.
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding this lock cannot leave State inconsistent (plain counters).
    shared
        .state
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}

impl GroupCommit {
    /// Starts the syncer for the sled database at `dir`.
    pub(crate) fn start(db: sled::Db, dir: &Path) -> std::io::Result<GroupCommit> {
        let mut files = SyncFiles::open(dir)?;
        // Everything that exists now (conf, db, snapshots, the directory) is made durable once.
        files.sync_all_now()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            counters: SyncCounters::default(),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("store-syncer".into())
            .spawn(move || syncer(thread_shared, db, files))?;
        Ok(GroupCommit {
            shared,
            thread: Some(thread),
        })
    }

    /// Blocks until everything this thread committed before the call is on disk.
    pub(crate) fn wait_durable(&self) -> Result<(), DurabilityError> {
        let shared = &self.shared;
        let mut state = lock(shared);
        if let Some(failed) = &state.failed {
            return Err(DurabilityError(failed.clone()));
        }
        state.written += 1;
        let ticket = state.written;
        shared.counters.tickets.fetch_add(1, Ordering::Relaxed);
        shared.work.notify_one();
        while state.durable < ticket {
            if let Some(failed) = &state.failed {
                return Err(DurabilityError(failed.clone()));
            }
            state = shared
                .done
                .wait(state)
                .unwrap_or_else(|poison| poison.into_inner());
        }
        Ok(())
    }

    pub(crate) fn counters(&self) -> &SyncCounters {
        &self.shared.counters
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        lock(&self.shared).shutdown = true;
        self.shared.work.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn syncer(shared: Arc<Shared>, db: sled::Db, mut files: SyncFiles) {
    loop {
        let target = {
            let mut state = lock(&shared);
            while state.written == state.durable && !state.shutdown && state.failed.is_none() {
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(|poison| poison.into_inner());
            }
            if state.failed.is_some() || (state.shutdown && state.written == state.durable) {
                return;
            }
            state.written
        };
        let started = Instant::now();
        let result = db
            .flush()
            .map_err(|err| format!("sled flush: {err}"))
            .and_then(|_| {
                files
                    .sync(&shared.counters)
                    .map_err(|err| format!("fsync: {err}"))
            });
        let counters = &shared.counters;
        counters
            .sync_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        counters.commits.fetch_add(1, Ordering::Relaxed);
        let mut state = lock(&shared);
        match result {
            Ok(()) => state.durable = state.durable.max(target),
            Err(err) => {
                tracing::error!(error = %err, "storage is no longer durable; refusing writes");
                state.failed = Some(err);
            }
        }
        shared.done.notify_all();
    }
}

/// The files of a sled directory that must be fsynced, with what was already synced.
struct SyncFiles {
    dir: PathBuf,
    db: File,
    synced_names: HashSet<PathBuf>,
}

impl SyncFiles {
    fn open(dir: &Path) -> std::io::Result<SyncFiles> {
        Ok(SyncFiles {
            dir: dir.to_path_buf(),
            db: File::open(dir.join("db"))?,
            synced_names: HashSet::new(),
        })
    }

    /// fsyncs everything at start: `conf`, `db`, snapshots, blobs and the directories.
    fn sync_all_now(&mut self) -> std::io::Result<()> {
        let counters = SyncCounters::default();
        File::open(self.dir.join("conf"))?.sync_all()?;
        self.sync(&counters)?;
        fsync_dir(&self.dir)
    }

    /// fsyncs the log file, and new snapshot or blob files plus their directory.
    fn sync(&mut self, counters: &SyncCounters) -> std::io::Result<()> {
        self.db.sync_all()?;
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
        if new_entries {
            fsync_dir(&self.dir)?;
            counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            // Forget names that are gone so the set does not grow for ever.
            self.synced_names.retain(|path| path.exists());
        }
        Ok(())
    }
}

/// fsyncs a directory (its entries: created, renamed or removed files).
pub(crate) fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
