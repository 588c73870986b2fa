//! Offline compaction. sled 0.34 does not give space back under insert-then-delete (#1333),
//! which is exactly an outbox's pattern. When, at open, the database files are far larger than
//! the live data, the store copies every tree into a fresh database `{data_dir}/db.compact`,
//! fsyncs it, and swaps the two directories atomically (`renameat2(RENAME_EXCHANGE)`), then
//! removes the old one.
//!
//! Crash safety: `db` is always a complete database. A leftover `db.compact` is either an
//! unfinished copy (crash before the swap) or the old database (crash after it); both are
//! removed by [`recover`] at the next open.

use super::{durability::fsync_dir, StoreError};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Compact only when the files exceed this size...
pub(crate) const COMPACT_MIN_BYTES: u64 = 64 * 1024 * 1024;
/// ...and this many times the live data.
pub(crate) const COMPACT_FACTOR: u64 = 8;

fn io(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { context, source }
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

/// Live bytes (keys + values) of every tree.
fn live_bytes(db: &sled::Db) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        for item in tree.iter() {
            let (k, v) = item?;
            total += (k.len() + v.len()) as u64;
        }
    }
    Ok(total)
}

/// File in the data directory holding the database size after the last check, so that the
/// check at start-up reads every record only when the database grew `COMPACT_FACTOR` times since
/// (a full scan of a million customers costs seconds on every start otherwise).
const BASELINE_FILE: &str = "db.size-baseline";

fn read_baseline(data_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(data_dir.join(BASELINE_FILE))
        .ok()
        .and_then(|text| text.trim().parse().ok())
}

fn write_baseline(data_dir: &Path, size: u64) {
    // Best effort: without it the next start only repeats this check.
    let _ = std::fs::write(data_dir.join(BASELINE_FILE), format!("{size}\n"));
}

/// Compacts when the database is much larger than its live data. Returns the database back
/// when nothing was done, or `None` when it was compacted (and closed: reopen it). Counting the
/// live data reads every record, so it is done only when the database grew `COMPACT_FACTOR`
/// times since the size recorded at the previous check.
pub(crate) fn maybe_compact(
    db: sled::Db,
    data_dir: &Path,
    cache_capacity_mb: u64,
) -> Result<Option<sled::Db>, StoreError> {
    let db_dir = data_dir.join("db");
    let size = dir_size(&db_dir).map_err(io(format!("cannot measure {}", db_dir.display())))?;
    if size < COMPACT_MIN_BYTES {
        return Ok(Some(db));
    }
    match read_baseline(data_dir) {
        None => {
            write_baseline(data_dir, size);
            return Ok(Some(db));
        }
        Some(baseline) if size < baseline.saturating_mul(COMPACT_FACTOR) => return Ok(Some(db)),
        Some(_) => {}
    }
    let live = live_bytes(&db)?;
    if size < live.saturating_mul(COMPACT_FACTOR) {
        write_baseline(data_dir, size);
        return Ok(Some(db));
    }
    tracing::info!(size, live, "compacting the database offline");
    compact_into_fresh(db, data_dir, cache_capacity_mb)?;
    if let Ok(after) = dir_size(&db_dir) {
        write_baseline(data_dir, after);
    }
    Ok(None)
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
    {
        let fresh = super::open_sled(&new_dir, cache_capacity_mb)?;
        for name in db.tree_names() {
            let from = db.open_tree(&name)?;
            let to = fresh.open_tree(&name)?;
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for item in from.iter() {
                let (k, v) = item?;
                batch.insert(k, v);
                n += 1;
                if n % 10_000 == 0 {
                    to.apply_batch(std::mem::take(&mut batch))?;
                }
            }
            to.apply_batch(batch)?;
        }
        fresh.flush()?;
        drop(fresh);
    }
    drop(db);
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
