//! Opening the database: the data directory, offline compaction, sled's tuning, the core and
//! voucher trees, schema migrations and the instance marker; and the handle's accessors.

use super::*;

impl Store {
    /// Opens (or creates) the database in `{storage.data_dir}/db` for store `store_id`, compacts
    /// it offline first when sled's file is large and mostly free segments
    /// ([`CompactTrigger::DEFAULT`], see `store/compact.rs`), runs schema migrations, and starts
    /// group commit.
    pub fn open(config: &StorageConfig, store_id: &str) -> Result<Store, StoreError> {
        Self::open_inner(
            config,
            store_id,
            schema::MIGRATIONS,
            CompactTrigger::DEFAULT,
        )
    }

    /// [`Store::open`] with an explicit migration list (tests of the migration hook).
    #[doc(hidden)]
    pub fn open_with_migrations(
        config: &StorageConfig,
        store_id: &str,
        migrations: &[Migration],
    ) -> Result<Store, StoreError> {
        Self::open_inner(config, store_id, migrations, CompactTrigger::DEFAULT)
    }

    /// [`Store::open`] with another compaction trigger (tests with small databases).
    #[doc(hidden)]
    pub fn open_with_compact_trigger(
        config: &StorageConfig,
        store_id: &str,
        trigger: CompactTrigger,
    ) -> Result<Store, StoreError> {
        Self::open_inner(config, store_id, schema::MIGRATIONS, trigger)
    }

    pub(crate) fn open_inner(
        config: &StorageConfig,
        store_id: &str,
        migrations: &[Migration],
        trigger: CompactTrigger,
    ) -> Result<Store, StoreError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| {
            StoreError::Failed(Failure::Io {
                context: format!("cannot create data directory {}", data_dir.display()),
                source,
            })
        })?;
        let db_dir = data_dir.join("db");
        compact::recover(&data_dir)?;
        let db = open_sled(&db_dir, config.cache_capacity_mb)?;
        let (db, compacted_at_open) =
            match compact::maybe_compact(db, &data_dir, config.cache_capacity_mb, trigger)? {
                Ok(db) => (db, None),
                Err(done) => {
                    let db = open_sled(&db_dir, config.cache_capacity_mb)?;
                    compact::record_free_after_compaction(&data_dir);
                    (db, Some(done))
                }
            };
        let trees = CORE_TREES
            .iter()
            .map(|name| db.open_tree(name))
            .collect::<Result<Vec<_>, _>>()?;
        let voucher_trees = [
            db.open_tree(vouchers::ISSUED)?,
            db.open_tree(vouchers::STATE)?,
            db.open_tree(vouchers::REVOKED)?,
        ];
        let offers_tree = db.open_tree(super::offers::TREE)?;
        let migrations_applied =
            schema::prepare(&db, &trees[META], &data_dir, store_id, migrations)?;
        figures::ensure_outstanding(&trees[FIGURES], &trees[JOURNAL])?;
        let commit = GroupCommit::start(db.clone(), &db_dir).map_err(|source| {
            StoreError::Failed(Failure::Io {
                context: format!("cannot sync the database files in {}", db_dir.display()),
                source,
            })
        })?;
        let retention =
            jiff::SignedDuration::from_hours(config.outbox_retention_hours.min(100_000) as i64);
        let store = Store {
            clock_trusted: true,
            inner: Arc::new(Inner {
                commit,
                receipts: Combiner::new(),
                db,
                trees,
                voucher_trees,
                offers_tree,
                store_id: store_id.to_string(),
                data_dir,
                retention,
                receipt_retention: (config.receipt_retention_days > 0).then(|| {
                    jiff::SignedDuration::from_hours(
                        i64::from(config.receipt_retention_days.min(36_500)) * 24,
                    )
                }),
                migrations_applied,
                compacted_at_open,
            }),
        };
        // The schema version and instance marker written by `prepare` (a new database, or a
        // migration) must be durable before the instance file claims this directory holds data
        // and before open returns. A plain reopen wrote nothing that needs waiting for.
        if !store.inner.data_dir.join("instance").exists()
            || !store.inner.migrations_applied.is_empty()
        {
            store.wait_durable()?;
        }
        schema::write_instance_file(&store.inner.data_dir, &store.inner.trees[META])?;
        Ok(store)
    }

    /// Compacts the (closed) database in `{storage.data_dir}/db` now: copies it into a fresh
    /// database and swaps it in atomically (see `store/compact.rs`). Returns the sizes on disk
    /// before and after, in bytes. [`Store::open`] does this by itself when sled's file exceeds
    /// 64 MiB and 10 % of it is free segments.
    pub fn compact_offline(config: &StorageConfig) -> Result<(u64, u64), StoreError> {
        let data_dir = &config.data_dir;
        let db_dir = data_dir.join("db");
        let size = |what: &str| {
            compact::dir_size(&db_dir).map_err(|source| {
                StoreError::Failed(Failure::Io {
                    context: format!("cannot measure {} {what}", db_dir.display()),
                    source,
                })
            })
        };
        compact::recover(data_dir)?;
        if !db_dir.join("db").is_file() {
            return Err(StoreError::Failed(Failure::Io {
                context: format!(
                    "no database at {} (check storage.data_dir)",
                    db_dir.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            }));
        }
        let before = size("before compaction")?;
        let db = open_sled(&db_dir, config.cache_capacity_mb)?;
        compact::compact_into_fresh(db, data_dir, config.cache_capacity_mb)?;
        // One open of the copy (sled zeroes its free segments then), to record their share for
        // the trigger at the next start.
        drop(open_sled(&db_dir, config.cache_capacity_mb)?);
        compact::record_free_after_compaction(data_dir);
        Ok((before, size("after compaction")?))
    }

    /// This handle for times read from a clock that is `trusted` or not (`clock`): every event
    /// written through the returned handle is flagged `"clock_trusted": false` when not, so the
    /// CRM and an audit can tell that its `at` is a lower bound on the real time rather than a
    /// reading of a synchronised clock. Handles start trusted.
    pub fn stamped(&self, trusted: bool) -> Store {
        Store {
            inner: self.inner.clone(),
            clock_trusted: trusted,
        }
    }

    /// Whether this handle's times come from a trusted clock (see [`Store::stamped`]).
    pub fn clock_trusted(&self) -> bool {
        self.clock_trusted
    }

    /// The store id given at open.
    pub fn store_id(&self) -> &str {
        &self.inner.store_id
    }

    /// The id of this database instance (`meta/instance`, also `{data_dir}/instance`): drawn
    /// at random when the database was created, kept by a copy or a restored backup of the
    /// data directory, new for a wiped or replaced one. The CRM counts sequence numbers per
    /// store and instance.
    pub fn instance(&self) -> Result<String, StoreError> {
        match self.inner.trees[META].get(meta_key::INSTANCE)? {
            Some(id) => Ok(String::from_utf8_lossy(&id).into_owned()),
            None => Err(StoreError::Failed(Failure::Corrupt(
                "meta instance missing".into(),
            ))),
        }
    }

    /// What the compaction at open did, when the database was compacted before this open.
    pub fn compacted_at_open(&self) -> Option<OpenCompaction> {
        self.inner.compacted_at_open
    }

    /// Schema versions migrated from during open (empty when none ran).
    pub fn migrations_applied(&self) -> &[u32] {
        &self.inner.migrations_applied
    }

    /// The sled database, for sibling submodules opening their own trees.
    pub fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// Size of the database files on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        compact::dir_size(&self.inner.data_dir.join("db")).map_err(|source| {
            StoreError::Failed(Failure::Io {
                context: "cannot measure the database size".into(),
                source,
            })
        })
    }

    pub(crate) fn tree(&self, index: usize) -> &sled::Tree {
        &self.inner.trees[index]
    }
}

pub(crate) fn open_sled(dir: &Path, cache_capacity_mb: u64) -> Result<sled::Db, StoreError> {
    // The two trees with a key per customer hold most of the pages of a big store, and sled's
    // open time is proportional to the pages: their leaves hold up to 64 entries instead of
    // sled's 16 (1,000,000 customers: start-up 197 -> 75 ms). The append-heavy trees keep small
    // leaves (every insert clones its leaf). See vendor/sled/PATCHES.md.
    for tree in BIG_LEAF_TREES {
        sled::set_leaf_split_entries(tree.as_bytes(), BIG_LEAF_ENTRIES);
    }
    let open = || {
        sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity_mb.max(1) * 1024 * 1024)
            // The store's group commit flushes and fsyncs (sled's own flusher never fsyncs in time).
            .flush_every_ms(None)
            .open()
    };
    // sled's background threads may hold a just-closed database's file (and its lock) for a
    // moment after the last handle is dropped (seen right after a compaction): retry briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match open() {
            Err(sled::Error::Io(err))
                if err.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => {
                return result.map_err(|source| {
                    StoreError::Failed(Failure::Open {
                        path: dir.to_path_buf(),
                        source,
                    })
                })
            }
        }
    }
}
