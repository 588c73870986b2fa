//! Schema version and migration hook, and the instance marker that detects a database that
//! silently came back empty (sled opens a lost database as a fresh one without any error).
//!
//! `meta/schema_version` (u32 BE) is the version of the on-disk layout. `MIGRATIONS[v]`
//! migrates a database from version `v` to `v + 1`; open runs every pending one in order and
//! records the new version after each. A database newer than this build is refused.
//!
//! `meta/instance` holds a random id drawn when the database was created; once it is durable,
//! it is also written to `{data_dir}/instance`. At open, a data directory whose `instance` file
//! names a different (or no) database instance is refused with [`Failure::DataLost`].

use super::{durability, events, meta_key, read_u64, StoreError, OUTBOX};
use crate::Failure;
use std::path::Path;

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = 1;

/// A migration from version `n` (its index in the list) to `n + 1`. Runs before the store is
/// used, outside any transaction, and must be idempotent (it re-runs after a crash).
pub type Migration = fn(&sled::Db) -> Result<(), StoreError>;

/// The migrations of this build: `MIGRATIONS.len() == SCHEMA_VERSION`.
pub(crate) static MIGRATIONS: &[Migration] = &[migrate_0_to_1];

/// Version 0 (before versioning) had no outbox sequence counter in `meta`.
fn migrate_0_to_1(db: &sled::Db) -> Result<(), StoreError> {
    let meta = db.open_tree(super::CORE_TREES[super::META])?;
    if meta.get(meta_key::NEXT_SEQ)?.is_none() {
        let outbox = db.open_tree(super::CORE_TREES[OUTBOX])?;
        let last = match outbox.last()? {
            Some((key, _)) => read_u64(&key).unwrap_or(0),
            None => 0,
        };
        meta.insert(meta_key::NEXT_SEQ, &(last + 1).to_be_bytes()[..])?;
    }
    Ok(())
}

/// Checks the instance marker and the store id, and runs pending migrations. Returns the
/// versions migrated from.
pub(crate) fn prepare(
    db: &sled::Db,
    meta: &sled::Tree,
    data_dir: &Path,
    store_id: &str,
    migrations: &[Migration],
) -> Result<Vec<u32>, StoreError> {
    let supported = migrations.len() as u32;
    let instance_file = data_dir.join("instance");
    let on_disk = std::fs::read_to_string(&instance_file).ok();
    let in_db = meta
        .get(meta_key::INSTANCE)?
        .map(|v| String::from_utf8_lossy(&v).to_string());
    if let Some(expected) = &on_disk {
        if in_db.as_deref() != Some(expected.trim()) {
            return Err(StoreError::Failed(Failure::DataLost(
                data_dir.to_path_buf(),
            )));
        }
    }
    if let Some(stored) = meta.get(meta_key::STORE_ID)? {
        if stored != store_id.as_bytes() {
            return Err(StoreError::Failed(Failure::Corrupt(format!(
                "the database in {} belongs to store '{}', not '{store_id}' (check store.id and storage.data_dir)",
                data_dir.display(),
                String::from_utf8_lossy(&stored)
            ))));
        }
    }
    let version = match meta.get(meta_key::SCHEMA_VERSION)? {
        Some(bytes) => u32::from_be_bytes(
            bytes
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Failed(Failure::Corrupt("meta schema_version".into())))?,
        ),
        None => {
            let has_data = super::CORE_TREES
                .iter()
                .skip(1)
                .map(|name| db.open_tree(name).map(|t| !t.is_empty()))
                .collect::<Result<Vec<bool>, _>>()?
                .into_iter()
                .any(|b| b);
            if has_data {
                0
            } else {
                supported
            }
        }
    };
    if version > supported {
        return Err(StoreError::Failed(Failure::SchemaTooNew {
            found: version,
            supported,
        }));
    }
    let mut applied = Vec::new();
    for from in version..supported {
        migrations[from as usize](db)?;
        meta.insert(meta_key::SCHEMA_VERSION, &(from + 1).to_be_bytes()[..])?;
        db.flush()?;
        applied.push(from);
    }
    meta.insert(meta_key::SCHEMA_VERSION, &supported.to_be_bytes()[..])?;
    if meta.get(meta_key::STORE_ID)?.is_none() {
        meta.insert(meta_key::STORE_ID, store_id.as_bytes())?;
    }
    if in_db.is_none() {
        let id = events::random_hex(16).map_err(|err| StoreError::Failed(Failure::Random(err)))?;
        meta.insert(meta_key::INSTANCE, id.as_bytes())?;
    }
    Ok(applied)
}

/// Writes `{data_dir}/instance` (once the database's own marker is durable).
pub(crate) fn write_instance_file(data_dir: &Path, meta: &sled::Tree) -> Result<(), StoreError> {
    let path = data_dir.join("instance");
    if path.exists() {
        return Ok(());
    }
    let Some(id) = meta.get(meta_key::INSTANCE)? else {
        return Err(StoreError::Failed(Failure::Corrupt(
            "meta instance missing".into(),
        )));
    };
    let io = |context: &str| {
        let context = format!("{context} {}", path.display());
        move |source| StoreError::Failed(Failure::Io { context, source })
    };
    let tmp = data_dir.join("instance.tmp");
    std::fs::write(&tmp, &id).map_err(io("cannot write"))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io("cannot sync"))?;
    std::fs::rename(&tmp, &path).map_err(io("cannot create"))?;
    durability::fsync_dir(data_dir).map_err(io("cannot sync the directory of"))?;
    Ok(())
}
