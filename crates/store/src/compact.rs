//! Offline compaction. sled 0.34 does not give space back (#1333): segments it no longer needs
//! stay in its `db` file as free segments, and **every open zeroes every free segment**
//! (`initialize_from_snapshot` in sled's `pagecache/segment.rs` writes a segment of zeros for
//! each), so a file with many free segments costs hundreds of MB of writes at every start (a
//! bulk load of 1,000,000 customers leaves ~30 % of a 1 GB file free: ~300 MB written and
//! ~0.5 s per start, seconds when the disk is busy). When, at open, the file is large and a
//! large share of its segments is free, the store copies every tree into a fresh database
//! `{data_dir}/db.compact`, fsyncs it, and swaps the two directories atomically
//! (`renameat2(RENAME_EXCHANGE)`), then removes the old one.
//!
//! Free segments are counted from the file itself right after sled opened it (so it has just
//! zeroed them): a free segment starts with `SEG_HEADER_LEN` zero bytes, a used one with its
//! header (crc, lsn). The segment size comes from sled's `conf`. Anything unexpected skips the
//! check; it never fails an open.
//!
//! Crash safety: `db` is always a complete database. A leftover `db.compact` is either an
//! unfinished copy (crash before the swap) or the old database (crash after it); both are
//! removed by [`recover`] at the next open, which then decides afresh (and compacts again).

use super::{durability::fsync_dir, StoreError};
use crate::Failure;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn io(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Failed(Failure::Io { context, source })
}

/// Bytes allocated on disk by the files below `dir`.
pub(crate) fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += dir_size(&entry.path())?;
        } else {
            total += meta.blocks() * 512;
        }
    }
    Ok(total)
}

/// Removes a leftover `db.compact` directory.
pub(crate) fn recover(data_dir: &Path) -> Result<(), StoreError> {
    let leftover = data_dir.join("db.compact");
    if leftover.exists() {
        tracing::warn!(path = %leftover.display(), "removing leftover of an interrupted compaction");
        std::fs::remove_dir_all(&leftover)
            .map_err(io(format!("cannot remove {}", leftover.display())))?;
        fsync_dir(data_dir).map_err(io(format!("cannot sync {}", data_dir.display())))?;
    }
    Ok(())
}

/// When [`maybe_compact`] compacts at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactTrigger {
    /// Only when sled's `db` file is at least this large (bytes)...
    pub min_file_bytes: u64,
    /// ...and at least this share of its segments (percent) is free.
    pub min_free_percent: u64,
}

impl CompactTrigger {
    /// 64 MiB and 10 % free. Measured with 1,000,000 customers (slim records): a bulk load leaves
    /// ~23 % of the segments free; a freshly compacted database has 3–4 %.
    pub const DEFAULT: CompactTrigger = CompactTrigger {
        min_file_bytes: 64 * 1024 * 1024,
        min_free_percent: 10,
    };

    /// Whether a file with `free_percent` of its segments free is compacted, when the last
    /// compaction left `after_last_compaction` percent free: the share must have grown by
    /// `min_free_percent` since. A fresh copy is not free of free segments itself (sled
    /// relocates pages while it is written; 3-13 % measured), and a trigger it met by itself
    /// would compact again at every start.
    pub fn fires(&self, free_percent: u64, after_last_compaction: Option<u64>) -> bool {
        free_percent >= self.min_free_percent + after_last_compaction.unwrap_or(0)
    }
}

/// Holds the share of free segments (percent, text) found at the first open after the last
/// compaction.
const FREE_AFTER_COMPACTION_FILE: &str = "db.free-after-compaction";

fn free_percent_after_last_compaction(data_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(data_dir.join(FREE_AFTER_COMPACTION_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Records the share of free segments of the freshly compacted database at `{data_dir}/db`
/// (open it first: sled's open zeroes the headers of free segments, which is what is counted).
/// Best effort: without the record the next start compares with 0 %.
pub(crate) fn record_free_after_compaction(data_dir: &Path) {
    let path = data_dir.join(FREE_AFTER_COMPACTION_FILE);
    let Some(count) = count_free_segments(&data_dir.join("db")) else {
        // Not sled's layout: no record, and none of an earlier compaction either.
        let _ = std::fs::remove_file(&path);
        return;
    };
    let temporary = data_dir.join(format!("{FREE_AFTER_COMPACTION_FILE}.tmp"));
    let written = std::fs::write(&temporary, format!("{}\n", count.free_percent()))
        .and_then(|()| std::fs::rename(&temporary, &path));
    if let Err(err) = written {
        tracing::warn!(path = %path.display(), error = %err,
            "cannot record the free segments after compaction; the next start may compact again");
    }
}

/// What the compaction at open did (see `Store::compacted_at_open`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenCompaction {
    /// Bytes of the database directory on disk before.
    pub size_before: u64,
    /// Bytes on disk after.
    pub size_after: u64,
    /// Segments of sled's `db` file whose header was read (all, or an even sample).
    pub segments_checked: u64,
    /// Of which free.
    pub segments_free: u64,
    /// How long the copy and swap took.
    pub elapsed: std::time::Duration,
}

/// sled 0.34's segment header length (crc32 + lsn + max stable lsn).
const SEG_HEADER_LEN: usize = 20;
/// At most this many segment headers are read; a larger file is sampled evenly (bounds the
/// check to ~1,000 random 4 KiB reads on a cold SD card).
const MAX_SEGMENTS_READ: u64 = 1024;

/// Free segments of sled's `db` file, counted from their headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SegmentCount {
    /// sled's segment size (from `conf`).
    pub segment_size: u64,
    /// Whole segments in the file.
    pub segments: u64,
    /// Segments whose header was read.
    pub checked: u64,
    /// Of those, free (all-zero header).
    pub free: u64,
}

impl SegmentCount {
    pub fn free_percent(&self) -> u64 {
        (self.free * 100).checked_div(self.checked).unwrap_or(0)
    }
}

/// `segment_size` from sled's `conf` (text lines `key: value`, then a 4-byte crc).
fn segment_size(db_dir: &Path) -> Option<u64> {
    let conf = std::fs::read(db_dir.join("conf")).ok()?;
    let text = std::str::from_utf8(conf.get(..conf.len().checked_sub(4)?)?).ok()?;
    let size: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("segment_size: "))?
        .trim()
        .parse()
        .ok()?;
    // sled requires a power of two; anything else is not the format this code knows.
    (size.is_power_of_two() && (4096..=1 << 30).contains(&size)).then_some(size)
}

/// Counts the free segments of `{db_dir}/db` (call it after sled opened the database). `None`
/// when the files do not look like sled 0.34's (no `conf`, no segment size, unreadable file).
pub(crate) fn count_free_segments(db_dir: &Path) -> Option<SegmentCount> {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    let segment_size = segment_size(db_dir)?;
    let file = std::fs::File::open(db_dir.join("db")).ok()?;
    let segments = file.metadata().ok()?.len() / segment_size;
    // 20-byte reads 512 KiB apart: without this hint a cold read-ahead fetches 128 KiB each.
    // SAFETY: posix_fadvise on a descriptor we own; it only advises the page cache.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    let step = segments.div_ceil(MAX_SEGMENTS_READ).max(1);
    let mut header = [0u8; SEG_HEADER_LEN];
    let (mut checked, mut free) = (0, 0);
    for index in (0..segments).step_by(step as usize) {
        file.read_exact_at(&mut header, index * segment_size).ok()?;
        checked += 1;
        if header.iter().all(|&b| b == 0) {
            free += 1;
        }
    }
    Some(SegmentCount {
        segment_size,
        segments,
        checked,
        free,
    })
}

/// Sends systemd `EXTEND_TIMEOUT_USEC` now and then during a compaction, so that
/// `TimeoutStartSec=` does not kill (and restart, and restart the copy of) a one-off compaction
/// at start-up that takes minutes on a Pi. A no-op outside systemd (`NOTIFY_SOCKET` unset).
pub(crate) struct StartupProgress {
    /// Whether systemd is listening (`NOTIFY_SOCKET` set).
    enabled: bool,
    last: Option<std::time::Instant>,
}

impl StartupProgress {
    /// Each extension asks for this much more time (covers a slow fsync of the copy too)...
    const EXTEND_BY: std::time::Duration = std::time::Duration::from_secs(120);
    /// ...and is sent at most this often.
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    pub fn new(status: &str) -> StartupProgress {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        if enabled {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(status)]);
        }
        let mut progress = StartupProgress {
            enabled,
            last: None,
        };
        progress.tick();
        progress
    }

    /// Extends the start-up timeout when the last extension is `EVERY` old (and, after the
    /// daemon's READY, pings the watchdog: see [`ping_watchdog_while_copying`]).
    pub fn tick(&mut self) {
        if !self.enabled || self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        let usec = Self::EXTEND_BY.as_micros() as u32;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::ExtendTimeoutUsec(usec)]);
        if PING_WATCHDOG.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
        self.last = Some(std::time::Instant::now());
    }
}

static PING_WATCHDOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a compaction's progress also pings systemd's watchdog (`WATCHDOG=1` at each
/// progress step, at most every 5 s). The daemon turns it on for the in-process restart an
/// erasure owes: it has told systemd READY, so the watchdog runs (`WatchdogSec=30`), and a copy
/// of a large database takes longer than that; a copy that makes progress is alive. Off for
/// the first start (no ping before READY).
pub fn ping_watchdog_while_copying(enabled: bool) {
    PING_WATCHDOG.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

/// Left in the data directory by earlier builds (their trigger compared sizes with it).
const OLD_BASELINE_FILE: &str = "db.size-baseline";

/// Compacts when sled's file is at least `trigger.min_file_bytes` and at least
/// `trigger.min_free_percent` of its segments are free. Returns the database back when nothing
/// was done, or what was done (the database is then closed: reopen it).
pub(crate) fn maybe_compact(
    db: sled::Db,
    data_dir: &Path,
    cache_capacity_mb: u64,
    trigger: CompactTrigger,
) -> Result<Result<sled::Db, OpenCompaction>, StoreError> {
    let _ = std::fs::remove_file(data_dir.join(OLD_BASELINE_FILE));
    let db_dir = data_dir.join("db");
    // An erasure rewrote records: their old versions are still in sled's file (see
    // `store/erasure.rs`). Copied away whatever the trigger says.
    let erasure = super::erasure::compaction_owed(&db)?;
    let file_len = std::fs::metadata(db_dir.join("db")).map_or(0, |m| m.len());
    if file_len < trigger.min_file_bytes && !erasure {
        return Ok(Ok(db));
    }
    let count = match count_free_segments(&db_dir) {
        Some(count) => count,
        None if erasure => SegmentCount::default(),
        None => {
            tracing::debug!(path = %db_dir.display(), "unexpected sled file layout: no compaction check");
            return Ok(Ok(db));
        }
    };
    let after_last = free_percent_after_last_compaction(data_dir);
    if !erasure && !trigger.fires(count.free_percent(), after_last) {
        return Ok(Ok(db));
    }
    if erasure {
        tracing::info!(
            "an erasure rewrote stored records: copying the database so that no old version stays on disk"
        );
    }
    let started = std::time::Instant::now();
    let measure = |what: &str| {
        dir_size(&db_dir).map_err(io(format!("cannot measure {} {what}", db_dir.display())))
    };
    let size_before = measure("before compaction")?;
    tracing::info!(
        size_mib = size_before / (1024 * 1024),
        segments = count.segments,
        free_percent = count.free_percent(),
        "compacting the database before start-up (sled rewrites every free segment at each open): a one-off copy of every record"
    );
    compact_into_fresh(db, data_dir, cache_capacity_mb)?;
    // The copy's memory (hundreds of MiB for a million records) would otherwise stay in
    // glibc's arenas for the life of the daemon.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    let done = OpenCompaction {
        size_before,
        size_after: measure("after compaction")?,
        segments_checked: count.checked,
        segments_free: count.free,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        size_before_mib = done.size_before / (1024 * 1024),
        size_after_mib = done.size_after / (1024 * 1024),
        seconds = done.elapsed.as_secs_f64(),
        "database compacted"
    );
    Ok(Err(done))
}

/// Copies `db` into a fresh database and swaps it in. Consumes (closes) `db`.
pub(crate) fn compact_into_fresh(
    db: sled::Db,
    data_dir: &Path,
    cache_capacity_mb: u64,
) -> Result<(), StoreError> {
    let db_dir = data_dir.join("db");
    let new_dir = data_dir.join("db.compact");
    recover(data_dir)?;
    let mut progress = StartupProgress::new("compacting the database (one-off, may take minutes)");
    {
        let fresh = super::open_sled(&new_dir, cache_capacity_mb)?;
        for name in db.tree_names() {
            let from = db.open_tree(&name)?;
            let to = fresh.open_tree(&name)?;
            let mut batch = sled::Batch::default();
            let mut n = 0;
            let meta = &*name == b"meta";
            for item in from.iter() {
                let (k, v) = item?;
                if meta && &*k == super::erasure::COMPACTION_OWED {
                    // This copy is what was owed.
                    continue;
                }
                batch.insert(k, v);
                n += 1;
                if n % 10_000 == 0 {
                    to.apply_batch(std::mem::take(&mut batch))?;
                    progress.tick();
                }
            }
            to.apply_batch(batch)?;
        }
        progress.tick();
        fresh.flush()?;
        drop(fresh);
    }
    drop(db);
    progress.tick();
    sync_tree(&new_dir).map_err(io(format!("cannot sync {}", new_dir.display())))?;
    exchange(&new_dir, &db_dir)
        .map_err(io(format!("cannot swap {} into place", new_dir.display())))?;
    fsync_dir(data_dir).map_err(io(format!("cannot sync {}", data_dir.display())))?;
    recover(data_dir)
}

fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.metadata()?.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    fsync_dir(dir)
}

/// Atomically exchanges two paths (Linux `renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::CompactTrigger;

    #[test]
    fn the_trigger_counts_free_segments_beyond_what_the_last_compaction_left() {
        let trigger = CompactTrigger::DEFAULT;
        assert!(!trigger.fires(9, None));
        assert!(trigger.fires(10, None));
        // The last copy left 13 % free: 13 % is not a reason to copy again, 23 % is.
        assert!(!trigger.fires(13, Some(13)));
        assert!(!trigger.fires(22, Some(13)));
        assert!(trigger.fires(23, Some(13)));
    }
}
