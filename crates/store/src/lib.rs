//! Storage: the only module that imports sled. Owns customers (by id, indexed by card),
//! receipts (by id, for idempotency), the hash-chained ledger journal, the outbox of
//! sequence-numbered events for the CRM, the schema version, and durability (group commit with
//! real `fsync`). See `docs/arch/store.md` for the key layout and the durability design.
//!
//! # Public API (blocking; callers use `spawn_blocking`)
//! [`Store::open`], customers ([`Store::customer`], [`Store::customer_by_card`],
//! [`Store::enroll`], [`Store::upsert_crm_customer`], [`Store::confirm_balance`]), receipts
//! ([`Store::apply_receipt`], [`Store::attach_customer`]), ledger ([`Store::balance`],
//! [`Store::redeem_points`], [`Store::convert_to_voucher`], [`Store::crm_adjustment`]),
//! outbox ([`Store::outbox_after`], [`Store::outbox_ack`], [`Store::outbox_stats`],
//! [`Store::compact_outbox`]) and [`Store::verify`]. Every write returns only once it is on
//! disk (surviving a power cut); a duplicate returns the first answer and writes nothing.
//!
//! # Primitives for sibling submodules (`store/vouchers.rs`, `store/sync_state.rs`)
//! - [`Store::db`]: the `sled::Db`, to open your own trees (name them `vouchers/...`,
//!   `sync/...`; document them in `docs/arch/store.md`).
//! - [`Store::transact`]: a multi-tree transaction over the core trees *plus your trees*; the
//!   closure gets a [`Tx`] with [`Tx::append_event`] (an outbox event, atomically with your
//!   writes), [`Tx::ledger_entry`] (a journal entry that moves points) and [`Tx::extra`] (your
//!   trees, in the order passed). It returns after the commit is durable (group commit). The
//!   closure may run more than once: no I/O inside, draw randomness before.
//! - [`Store::wait_durable`]: blocks until everything committed before the call is on disk
//!   (for writes you made outside `transact`).
//!
//! Invariants: a ledger change and its outbox event are committed in one transaction; outbox
//! sequence numbers are gapless and increasing; nothing is reported as applied before the
//! group commit's `fsync` covering it returned.

mod batch;
mod compact;
mod durability;
pub mod events;
mod journal;
mod records;
mod schema;
mod seed;
pub mod sync_state;
pub mod vouchers;

mod settings;
use batch::{BatchAnswer, Combiner};
use durability::GroupCommit;
use events::{EventIds, EventType};
use jiff::Timestamp;
use loyalty_core::customer::{check_id, Customer, IdError};
use loyalty_core::ledger::{
    self, Balance, Confirmed, Earning, EarningPolicy, Entry, EntryKind, LedgerError,
};
use loyalty_core::money::Money;
use loyalty_core::receipt::{self, Receipt, ReceiptError, ReceiptKind};
use loyalty_protocol::crm::events::{CustomerEvent, Event, LedgerEvent, ReceiptEvent};
use records::{CustomerRec, OutcomeRec, ReceiptDataRec, ReceiptRec, ReturnRec};
pub use settings::StorageConfig;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub use compact::{CompactTrigger, OpenCompaction};
pub use durability::DurabilityError;
pub use journal::VerifyReport;
pub use schema::{Migration, SCHEMA_VERSION};

/// Why a store operation failed. Input problems (bad receipt, unknown customer, not enough
/// points) are separate variants from storage failures so callers can answer the lane.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open the database at {path}: {source} (check storage.data_dir and its permissions; is another gateway running?)")]
    Open {
        /// Database directory.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// A sled read or write failed.
    #[error("storage error: {0} (check the disk)")]
    Sled(#[from] sled::Error),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// Writes could not be made durable.
    #[error(transparent)]
    Durability(#[from] DurabilityError),
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0} (run `loyalty-gateway verify`)")]
    Corrupt(String),
    /// The database was written by a newer version.
    #[error("database schema version {found} is newer than this program supports ({supported}); install the newer version again")]
    SchemaTooNew {
        /// Version found.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// The database came up empty although this data directory held one before.
    #[error("the database at {0} is empty or replaced although it held data before (lost on a power cut?); restore a backup, or remove {0}/instance to start afresh deliberately")]
    DataLost(PathBuf),
    /// The operating system's random source failed.
    #[error("no random numbers from the operating system: {0}")]
    Random(getrandom::Error),
    /// The receipt was refused; nothing was written.
    #[error("receipt refused: {0}")]
    InvalidReceipt(#[from] ReceiptError),
    /// An identifier was refused.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// No such customer.
    #[error("unknown customer '{0}'")]
    UnknownCustomer(String),
    /// No such receipt.
    #[error("unknown receipt '{0}'")]
    UnknownReceipt(String),
    /// The receipt is a return, where a sale is needed.
    #[error("receipt '{0}' is a return, not a sale")]
    NotASale(String),
    /// The receipt already belongs to another customer.
    #[error("receipt '{receipt_id}' already belongs to customer '{customer_id}'")]
    AlreadyAttached {
        /// Receipt.
        receipt_id: String,
        /// Its customer.
        customer_id: String,
    },
    /// The card belongs to another customer.
    #[error("card '{card}' already belongs to customer '{customer_id}'")]
    CardTaken {
        /// Card number.
        card: String,
        /// Its customer.
        customer_id: String,
    },
    /// The ledger refused the operation.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The CRM acknowledged events this store never wrote: the local database lost data.
    #[error("the CRM acknowledged outbox sequence {acked} but the last local event is {last}: this store's database lost events (restore a backup; do not continue as a fresh store)")]
    AckBeyondOutbox {
        /// What the CRM acknowledged.
        acked: u64,
        /// The last sequence number written here.
        last: u64,
    },
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(err: TransactionError<StoreError>) -> Self {
        match err {
            TransactionError::Abort(err) => err,
            TransactionError::Storage(err) => StoreError::Sled(err),
        }
    }
}

/// Result inside a [`Store::transact`] closure.
pub type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Aborts a transaction with `err`.
pub fn abort<T>(err: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(err))
}

fn corrupt<T>(what: impl Into<String>) -> TxResult<T> {
    abort(StoreError::Corrupt(what.into()))
}

/// Names of the core trees, in the order a [`Tx`] holds them.
const CORE_TREES: [&str; 8] = [
    "meta",
    "customers",
    "cards",
    "receipts",
    "journal",
    "customer_journal",
    "outbox",
    "ops",
];
/// Trees whose leaves split above [`BIG_LEAF_ENTRIES`] entries (see `open_sled`).
const BIG_LEAF_TREES: [&str; 2] = ["customers", "cards"];
const BIG_LEAF_ENTRIES: usize = 64;
const META: usize = 0;
const CUSTOMERS: usize = 1;
const CARDS: usize = 2;
const RECEIPTS: usize = 3;
const JOURNAL: usize = 4;
const CUSTOMER_JOURNAL: usize = 5;
const OUTBOX: usize = 6;
const OPS: usize = 7;

/// Meta keys.
mod meta_key {
    pub const SCHEMA_VERSION: &[u8] = b"schema_version";
    pub const STORE_ID: &[u8] = b"store_id";
    pub const INSTANCE: &[u8] = b"instance";
    pub const NEXT_SEQ: &[u8] = b"outbox_next_seq";
    pub const ACKED: &[u8] = b"outbox_acked_through";
    pub const JOURNAL_HEAD: &[u8] = b"journal_head";
}

fn u64_be(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// The store handle. Cheap to clone; all clones share one database and one group commit.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Whether the times this handle is given come from a trusted clock (see
    /// [`Store::stamped`]); events written through it carry `clock_trusted: false` when not.
    clock_trusted: bool,
}

struct Inner {
    // Field order matters for drop: the group commit makes pending writes durable before the db
    // closes.
    commit: GroupCommit,
    /// Concurrent `apply_receipt` calls, combined into one transaction per batch.
    receipts: Combiner<Arc<ReceiptRequest>>,
    db: sled::Db,
    trees: Vec<sled::Tree>,
    store_id: String,
    data_dir: PathBuf,
    retention: jiff::SignedDuration,
    migrations_applied: Vec<u32>,
    compacted_at_open: Option<OpenCompaction>,
}

/// What a receipt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptOutcome {
    /// The receipt.
    pub receipt_id: String,
    /// The customer whose points moved (for a return: the original sale's customer).
    pub customer_id: Option<String>,
    /// Points earned (negative: clawed back by a return).
    pub earned: i64,
    /// The customer's balance right after.
    pub balance: Option<Balance>,
    /// Promotions applied.
    pub promotions: Vec<String>,
    /// True when this receipt id had been applied before: nothing changed, this is the first
    /// answer again.
    pub duplicate: bool,
    /// Something the lane may want to know.
    pub note: Option<OutcomeNote>,
}

/// Remarks on a receipt outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeNote {
    /// A sale without a customer: stored, and a card scanned shortly after can attach it.
    NoCustomer,
    /// A return of a sale this store never saw: recorded and sent to the CRM (which may claw
    /// back centrally), no local points change.
    OriginalUnknown,
    /// A return of a sale without a customer: recorded; no points change.
    OriginalWithoutCustomer,
}

impl OutcomeNote {
    fn as_str(self) -> &'static str {
        match self {
            OutcomeNote::NoCustomer => "no_customer",
            OutcomeNote::OriginalUnknown => "original_unknown",
            OutcomeNote::OriginalWithoutCustomer => "original_without_customer",
        }
    }
    fn parse(text: &str) -> Option<OutcomeNote> {
        Some(match text {
            "no_customer" => OutcomeNote::NoCustomer,
            "original_unknown" => OutcomeNote::OriginalUnknown,
            "original_without_customer" => OutcomeNote::OriginalWithoutCustomer,
            _ => return None,
        })
    }
}

/// What a points operation (redeem, conversion, adjustment) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerOutcome {
    /// Journal index of the entry.
    pub entry: u64,
    /// Customer.
    pub customer_id: String,
    /// Signed points moved.
    pub points: i64,
    /// Balance right after.
    pub balance: Balance,
    /// True when the reference had been used before: nothing changed.
    pub duplicate: bool,
}

/// One outbox event, as the CRM receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Per-store, gapless, increasing.
    pub seq: u64,
    /// Globally unique (random), the CRM's deduplication key.
    pub id: String,
    /// Event type.
    pub kind: EventType,
    /// When it happened.
    pub at: Timestamp,
    /// The whole event as JSON: `{"seq", "id", "type", "at", "payload"}`.
    pub json: serde_json::Value,
}

/// Outbox counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// The last sequence number written (0: none yet).
    pub last_seq: u64,
    /// The CRM acknowledged everything up to here.
    pub acked_through: u64,
    /// Events written but not acknowledged.
    pub unacked: u64,
    /// Events still stored (acknowledged ones wait for compaction).
    pub stored: u64,
}

/// Durability counters (for metrics, tests and the benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurabilityStats {
    /// `fsync` calls by group commits since open.
    pub fsyncs: u64,
    /// Group commits (flush + fsync rounds) since open.
    pub commits: u64,
    /// Writes that waited for durability since open.
    pub tickets: u64,
    /// Nanoseconds spent in group commits (flush + fsync) since open.
    pub sync_nanos: u64,
}

/// A new ledger entry, for [`Tx::ledger_entry`].
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// Customer.
    pub customer_id: &'a str,
    /// Kind.
    pub kind: EntryKind,
    /// Signed points.
    pub points: i64,
    /// When.
    pub at: Timestamp,
    /// The sale the points belong to (earn, clawback).
    pub receipt_id: Option<&'a str>,
    /// The receipt that caused it when not `receipt_id` (a return).
    pub cause_receipt_id: Option<&'a str>,
    /// Caller's reference (voucher id, CRM adjustment id, redemption reference).
    pub reference: Option<&'a str>,
    /// Free text.
    pub reason: Option<&'a str>,
    /// Vesting time of earned points.
    pub vests_at: Option<Timestamp>,
}

/// A transaction over the core trees and the caller's extra trees (see [`Store::transact`]).
pub struct Tx<'a> {
    trees: &'a [TransactionalTree],
    ids: EventIds,
    next_id: Cell<u32>,
    /// Customer records decoded (or written) in this transaction, so that a receipt decodes
    /// its customer once. Every write of the customers tree goes through `put_customer_rec`,
    /// which keeps this in step; a re-run of the closure gets a fresh `Tx`.
    customers: RefCell<HashMap<String, CustomerRec>>,
    /// Whether the times of the events appended now come from a trusted clock (a receipt
    /// batch sets it per request).
    clock_trusted: Cell<bool>,
}

impl<'a> Tx<'a> {
    /// The caller's `index`-th extra tree (in the order given to [`Store::transact`]).
    pub fn extra(&self, index: usize) -> &TransactionalTree {
        &self.trees[CORE_TREES.len() + index]
    }

    fn tree(&self, index: usize) -> &TransactionalTree {
        &self.trees[index]
    }

    fn get_u64(&self, key: &[u8]) -> TxResult<u64> {
        match self.tree(META).get(key)? {
            None => Ok(0),
            Some(bytes) => match read_u64(&bytes) {
                Some(v) => Ok(v),
                None => corrupt(format!("meta {}", String::from_utf8_lossy(key))),
            },
        }
    }

    /// Appends an outbox event with the next sequence number; returns the sequence number.
    pub fn append_event(
        &self,
        kind: EventType,
        at: Timestamp,
        payload: &impl serde::Serialize,
    ) -> TxResult<u64> {
        let next = self.get_u64(meta_key::NEXT_SEQ)?.max(1);
        self.tree(META)
            .insert(meta_key::NEXT_SEQ, &u64_be(next + 1)[..])?;
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        let id = self.ids.nth(n);
        let event = Event {
            seq: next,
            id: &id,
            kind,
            at,
            clock_trusted: self.clock_trusted.get(),
            payload,
        };
        let mut value = at.as_second().to_be_bytes().to_vec();
        event
            .write_to(&mut value)
            .map_err(|e| tx_corrupt(e.to_string()))?;
        self.tree(OUTBOX).insert(&u64_be(next)[..], value)?;
        Ok(next)
    }

    /// Reads a customer record.
    fn customer_rec(&self, customer_id: &str) -> TxResult<Option<CustomerRec>> {
        if let Some(rec) = self.customers.borrow().get(customer_id) {
            return Ok(Some(rec.clone()));
        }
        match self.tree(CUSTOMERS).get(customer_id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => match serde_json::from_slice::<CustomerRec>(&bytes) {
                Ok(rec) => {
                    self.customers
                        .borrow_mut()
                        .insert(customer_id.to_string(), rec.clone());
                    Ok(Some(rec))
                }
                Err(err) => corrupt(format!("customer {customer_id}: {err}")),
            },
        }
    }

    fn put_customer_rec(&self, rec: &CustomerRec) -> TxResult<()> {
        let bytes = serde_json::to_vec(rec).map_err(|e| tx_corrupt(e.to_string()))?;
        self.tree(CUSTOMERS).insert(rec.id.as_bytes(), bytes)?;
        self.customers
            .borrow_mut()
            .insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// The customer's balance as of this transaction.
    pub fn balance(&self, customer_id: &str, now: Timestamp) -> TxResult<Balance> {
        match self.customer_rec(customer_id)? {
            Some(rec) => Ok(rec.account.to_account().balance(now)),
            None => abort(StoreError::UnknownCustomer(customer_id.into())),
        }
    }

    /// Appends a journal entry that moves a customer's points, its `ledger` outbox event and the
    /// customer's updated account, atomically. Returns the journal index and the new balance.
    /// Spending entries (redeem, conversion) are checked against the available balance.
    pub fn ledger_entry(&self, new: &NewEntry<'_>, now: Timestamp) -> TxResult<(u64, Balance)> {
        let Some(mut rec) = self.customer_rec(new.customer_id)? else {
            return abort(StoreError::UnknownCustomer(new.customer_id.into()));
        };
        let mut account = rec.account.to_account();
        if matches!(new.kind, EntryKind::Redeem | EntryKind::VoucherConversion) {
            if let Err(err) = ledger::check_spend(account.balance(now), -new.points) {
                return abort(err.into());
            }
        }
        let (index, prev) = journal::head(self.tree(META))?;
        let index = index + 1;
        // The event's seq is the next one; it is taken below by append_event.
        let seq = self.get_u64(meta_key::NEXT_SEQ)?.max(1);
        let body = records::JournalBody {
            index,
            seq,
            customer_id: new.customer_id.into(),
            kind: new.kind.as_str().into(),
            points: new.points,
            at: new.at,
            receipt_id: new.receipt_id.map(Into::into),
            cause_receipt_id: new.cause_receipt_id.map(Into::into),
            reference: new.reference.map(Into::into),
            reason: new.reason.map(Into::into),
            vests_at: new.vests_at,
        };
        let hash = journal::append(self.tree(META), self.tree(JOURNAL), &body, &prev)?;
        let mut key = new.customer_id.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&u64_be(index));
        self.tree(CUSTOMER_JOURNAL).insert(key, &[][..])?;
        let hash_hex = events::hex(&hash);
        let payload = LedgerEvent {
            entry: index,
            customer_id: new.customer_id,
            kind: new.kind,
            points: new.points,
            receipt_id: new.receipt_id,
            cause_receipt_id: new.cause_receipt_id,
            reference: new.reference,
            reason: new.reason,
            vests_at: new.vests_at,
            hash: &hash_hex,
        };
        let event_seq = self.append_event(EventType::Ledger, new.at, &payload)?;
        debug_assert_eq!(event_seq, seq);
        let entry = Entry {
            customer_id: new.customer_id.into(),
            kind: new.kind,
            points: new.points,
            seq,
            receipt_id: new.receipt_id.map(Into::into),
            vests_at: new.vests_at,
        };
        account.record(&entry, now);
        rec.account = records::AccountRec::from_account(&account);
        self.put_customer_rec(&rec)?;
        Ok((index, account.balance(now)))
    }
}

fn tx_corrupt(what: String) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(StoreError::Corrupt(what))
}

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

    fn open_inner(
        config: &StorageConfig,
        store_id: &str,
        migrations: &[Migration],
        trigger: CompactTrigger,
    ) -> Result<Store, StoreError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| StoreError::Io {
            context: format!("cannot create data directory {}", data_dir.display()),
            source,
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
        let migrations_applied =
            schema::prepare(&db, &trees[META], &data_dir, store_id, migrations)?;
        let commit = GroupCommit::start(db.clone(), &db_dir).map_err(|source| StoreError::Io {
            context: format!("cannot sync the database files in {}", db_dir.display()),
            source,
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
                store_id: store_id.to_string(),
                data_dir,
                retention,
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
            compact::dir_size(&db_dir).map_err(|source| StoreError::Io {
                context: format!("cannot measure {} {what}", db_dir.display()),
                source,
            })
        };
        compact::recover(data_dir)?;
        if !db_dir.join("db").is_file() {
            return Err(StoreError::Io {
                context: format!(
                    "no database at {} (check storage.data_dir)",
                    db_dir.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
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

    /// Runs `f` as one atomic transaction over the core trees plus `extra` trees (which must
    /// belong to [`Store::db`]) and returns once the commit is durable. The closure may run more
    /// than once: do no I/O inside it.
    pub fn transact<T>(
        &self,
        extra: &[&sled::Tree],
        f: impl Fn(&Tx<'_>) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        let value = self.commit_only(extra, f)?;
        self.wait_durable()?;
        Ok(value)
    }

    /// [`Store::transact`] without waiting for durability (the caller must wait before it
    /// reports anything as done).
    fn commit_only<T>(
        &self,
        extra: &[&sled::Tree],
        f: impl Fn(&Tx<'_>) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        let ids = EventIds::random().map_err(StoreError::Random)?;
        let mut all: Vec<&sled::Tree> = self.inner.trees.iter().collect();
        all.extend_from_slice(extra);
        let result = all
            .as_slice()
            .transaction(|views: &Vec<TransactionalTree>| {
                let tx = Tx {
                    trees: views,
                    ids,
                    next_id: Cell::new(0),
                    customers: RefCell::new(HashMap::new()),
                    clock_trusted: Cell::new(self.clock_trusted),
                };
                f(&tx)
            });
        Ok(result?)
    }

    /// Blocks until everything committed before this call is on disk (group commit: one flush
    /// and fsync serve every writer waiting at that moment).
    pub fn wait_durable(&self) -> Result<(), StoreError> {
        Ok(self.inner.commit.wait_durable()?)
    }

    /// Durability counters since open.
    pub fn durability_stats(&self) -> DurabilityStats {
        let c = self.inner.commit.counters();
        DurabilityStats {
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            tickets: c.tickets.load(Ordering::Relaxed),
            sync_nanos: c.sync_nanos.load(Ordering::Relaxed),
        }
    }

    /// Size of the database files on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        compact::dir_size(&self.inner.data_dir.join("db")).map_err(|source| StoreError::Io {
            context: "cannot measure the database size".into(),
            source,
        })
    }

    fn tree(&self, index: usize) -> &sled::Tree {
        &self.inner.trees[index]
    }

    // ----- customers -----

    /// The customer with this id.
    pub fn customer(&self, customer_id: &str) -> Result<Option<Customer>, StoreError> {
        Ok(self.customer_rec(customer_id)?.map(|rec| rec.to_customer()))
    }

    fn customer_rec(&self, customer_id: &str) -> Result<Option<CustomerRec>, StoreError> {
        match self.tree(CUSTOMERS).get(customer_id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("customer {customer_id}: {e}"))),
        }
    }

    /// The customer holding this card.
    pub fn customer_by_card(&self, card: &str) -> Result<Option<Customer>, StoreError> {
        match self.tree(CARDS).get(card.as_bytes())? {
            None => Ok(None),
            Some(id) => self.customer(&String::from_utf8_lossy(&id)),
        }
    }

    /// Enrolls a new customer for an unknown card of the program's range (emits
    /// `customer_enrolled`). Enrolling a known card returns its customer unchanged.
    pub fn enroll(&self, card: &str, at: Timestamp) -> Result<Customer, StoreError> {
        check_id(card)?;
        let id = format!(
            "{}-{}",
            self.inner.store_id,
            events::random_hex(8).map_err(StoreError::Random)?
        );
        self.transact(&[], |tx| {
            if let Some(existing) = tx.tree(CARDS).get(card.as_bytes())? {
                let existing = String::from_utf8_lossy(&existing).to_string();
                return match tx.customer_rec(&existing)? {
                    Some(rec) => Ok(rec.to_customer()),
                    None => corrupt(format!("card {card} points to missing customer {existing}")),
                };
            }
            let rec = CustomerRec::enrolled_locally(id.clone(), card.to_string(), at);
            tx.put_customer_rec(&rec)?;
            tx.tree(CARDS).insert(card.as_bytes(), id.as_bytes())?;
            let customer = rec.to_customer();
            tx.append_event(
                EventType::CustomerEnrolled,
                at,
                &CustomerEvent::new(&customer),
            )?;
            Ok(customer)
        })
    }

    /// Creates or updates a customer's profile as sent by the CRM (card, name, tier; no
    /// event: the CRM already knows). The local account is kept.
    pub fn upsert_crm_customer(&self, customer: &Customer) -> Result<(), StoreError> {
        check_id(&customer.id)?;
        if let Some(card) = &customer.card {
            check_id(card)?;
        }
        self.transact(&[], |tx| {
            let old = tx.customer_rec(&customer.id)?;
            if let Some(card) = &customer.card {
                if let Some(holder) = tx.tree(CARDS).get(card.as_bytes())? {
                    if holder != customer.id.as_bytes() {
                        // The CRM is the authority on cards: move the card.
                        let holder = String::from_utf8_lossy(&holder).to_string();
                        if let Some(mut other) = tx.customer_rec(&holder)? {
                            other.card = None;
                            tx.put_customer_rec(&other)?;
                        }
                    }
                }
            }
            if let Some(old_card) = old.as_ref().and_then(|o| o.card.clone()) {
                if Some(&old_card) != customer.card.as_ref() {
                    tx.tree(CARDS).remove(old_card.as_bytes())?;
                }
            }
            let rec = CustomerRec {
                id: customer.id.clone(),
                card: customer.card.clone(),
                name: customer.name.clone(),
                tier: customer.tier.clone(),
                enrolled_at: old.as_ref().map_or(customer.enrolled_at, |o| o.enrolled_at),
                local: old.as_ref().is_some_and(|o| o.local),
                has_confirmed: old.as_ref().is_some_and(|o| o.has_confirmed),
                account: old.map(|o| o.account).unwrap_or_default(),
            };
            tx.put_customer_rec(&rec)?;
            if let Some(card) = &customer.card {
                tx.tree(CARDS)
                    .insert(card.as_bytes(), customer.id.as_bytes())?;
            }
            Ok(())
        })
    }

    /// Records the balance the CRM confirmed for a customer, including this store's events up
    /// to `through_seq`. An older confirmation than the one held is ignored (returns false).
    pub fn confirm_balance(
        &self,
        customer_id: &str,
        points: i64,
        through_seq: u64,
    ) -> Result<bool, StoreError> {
        self.transact(&[], |tx| {
            let Some(mut rec) = tx.customer_rec(customer_id)? else {
                return abort(StoreError::UnknownCustomer(customer_id.into()));
            };
            let mut account = rec.account.to_account();
            let taken = account.confirm(Confirmed {
                points,
                through_seq,
            });
            if taken {
                rec.has_confirmed = true;
                rec.account = records::AccountRec::from_account(&account);
                tx.put_customer_rec(&rec)?;
            }
            Ok(taken)
        })
    }

    /// Honors an erasure request: removes the card index and the profile's personal fields.
    /// The pseudonymous ledger stays (it is needed for the hash chain and balances).
    pub fn erase_customer(&self, customer_id: &str) -> Result<bool, StoreError> {
        self.transact(&[], |tx| {
            let Some(mut rec) = tx.customer_rec(customer_id)? else {
                return Ok(false);
            };
            if let Some(card) = rec.card.take() {
                tx.tree(CARDS).remove(card.as_bytes())?;
            }
            rec.name = None;
            tx.put_customer_rec(&rec)?;
            Ok(true)
        })
    }

    // ----- receipts -----

    /// Applies a receipt: validates it (nothing is written when refused), stores it, earns
    /// points on a sale for `customer_id` (or the customer of `receipt.card` when `None`),
    /// claws back proportionally on a return, and writes the outbox events, atomically. Returns
    /// once durable. A duplicate receipt id returns the first outcome (`duplicate: true`) and
    /// changes nothing.
    pub fn apply_receipt(
        &self,
        receipt: &Receipt,
        customer_id: Option<&str>,
        policy: &dyn EarningPolicy,
        now: Timestamp,
    ) -> Result<ReceiptOutcome, StoreError> {
        receipt::validate(receipt, policy.limits())?;
        if let Some(id) = customer_id {
            check_id(id)?;
        }
        if let ReceiptKind::Return {
            original_receipt_id,
        } = &receipt.kind
        {
            check_id(original_receipt_id)?;
        }
        let request = Arc::new(self.prepare_receipt(receipt, customer_id, policy, now)?);
        let answer = self
            .inner
            .receipts
            .submit(request.clone(), |batch| self.apply_batch(batch));
        let result = match answer {
            BatchAnswer::Done(result) => result,
            // Alone, with the policy at hand (a tier changed meanwhile, or the batch failed).
            BatchAnswer::Retry => {
                match self.commit_only(&[], |tx| apply_planned(tx, &request, Some(policy)))? {
                    BatchAnswer::Done(result) => result,
                    BatchAnswer::Retry => Err(StoreError::Corrupt(
                        "receipt could not be applied alone (internal error)".into(),
                    )),
                }
            }
        };
        // Refusals wrote nothing; anything else (applied, or a duplicate whose first
        // application may still be in flight) is answered only once it is on disk.
        let outcome = result?;
        self.wait_durable()?;
        Ok(outcome)
    }

    /// Prepares a (validated) receipt for a batch. Everything that needs the policy is
    /// computed here, outside the batch (see `store/batch.rs`): the earning for the tier of
    /// the customer as read now, or the eligible amount of a return.
    fn prepare_receipt(
        &self,
        receipt: &Receipt,
        customer_id: Option<&str>,
        policy: &dyn EarningPolicy,
        now: Timestamp,
    ) -> Result<ReceiptRequest, StoreError> {
        let plan = match &receipt.kind {
            ReceiptKind::Sale => {
                let tier = self.expected_tier(customer_id, receipt.card.as_deref())?;
                let earning = policy.earn(receipt, tier.as_deref());
                Plan::Sale { tier, earning }
            }
            ReceiptKind::Return { .. } => Plan::Return {
                eligible: policy.eligible_amount(&receipt.lines),
            },
        };
        Ok(ReceiptRequest {
            receipt: receipt.clone(),
            data: ReceiptDataRec::from_receipt(receipt),
            customer_id: customer_id.map(Into::into),
            now,
            clock_trusted: self.clock_trusted,
            plan,
        })
    }

    /// The tier of the customer a sale will be applied to, as read outside a transaction
    /// (`apply_planned` checks it again inside).
    fn expected_tier(
        &self,
        customer_id: Option<&str>,
        card: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let id = match (customer_id, card) {
            (Some(id), _) => id.to_string(),
            (None, Some(card)) => match self.tree(CARDS).get(card.as_bytes())? {
                Some(id) => String::from_utf8_lossy(&id).to_string(),
                None => return Ok(None),
            },
            (None, None) => return Ok(None),
        };
        Ok(self.customer_rec(&id)?.and_then(|c| c.tier))
    }

    /// Applies a batch of receipts in one transaction; one answer per request, in order.
    fn apply_batch(&self, batch: &[Arc<ReceiptRequest>]) -> Vec<BatchAnswer> {
        let result = self.commit_only(&[], |tx| {
            batch
                .iter()
                .map(|request| apply_planned(tx, request, None))
                .collect::<TxResult<Vec<BatchAnswer>>>()
        });
        match result {
            Ok(answers) => answers,
            Err(err) => {
                tracing::warn!(error = %err, receipts = batch.len(),
                    "a receipt batch failed; applying its receipts one by one");
                batch.iter().map(|_| BatchAnswer::Retry).collect()
            }
        }
    }

    /// Attaches a card-less sale to a customer (a card scanned just after the receipt): earns
    /// its points now, exactly once (less what returns of it already took back). Attaching it
    /// again to the same customer returns the same answer with `duplicate: true`.
    pub fn attach_customer(
        &self,
        receipt_id: &str,
        customer_id: &str,
        policy: &dyn EarningPolicy,
        now: Timestamp,
    ) -> Result<ReceiptOutcome, StoreError> {
        check_id(receipt_id)?;
        check_id(customer_id)?;
        self.transact(&[], |tx| {
            let Some(bytes) = tx.tree(RECEIPTS).get(receipt_id.as_bytes())? else {
                return abort(StoreError::UnknownReceipt(receipt_id.into()));
            };
            let mut rec = decode_receipt(receipt_id, &bytes)?;
            if rec.data.original_receipt_id.is_some() {
                return abort(StoreError::NotASale(receipt_id.into()));
            }
            match (&rec.customer_id, &rec.attach_outcome) {
                (Some(existing), Some(outcome)) if existing == customer_id => {
                    return Ok(outcome_from(receipt_id, outcome, true));
                }
                (Some(existing), _) if existing == customer_id => {
                    return Ok(outcome_from(receipt_id, &rec.outcome, true));
                }
                (Some(existing), _) => {
                    return abort(StoreError::AlreadyAttached {
                        receipt_id: receipt_id.into(),
                        customer_id: existing.clone(),
                    })
                }
                (None, _) => {}
            }
            let Some(customer) = tx.customer_rec(customer_id)? else {
                return abort(StoreError::UnknownCustomer(customer_id.into()));
            };
            let receipt = rec.data.to_receipt();
            let earning = policy.earn(&receipt, customer.tier.as_deref());
            let points = earning.points.max(0);
            let mut state = rec.returns.to_state();
            state.original_points = points;
            state.original_eligible = earning.eligible;
            state.clawed = 0;
            let mut balance = tx.balance(customer_id, now)?;
            if points > 0 {
                let (index, b) = tx.ledger_entry(
                    &NewEntry {
                        customer_id,
                        kind: EntryKind::Earn,
                        points,
                        at: now,
                        receipt_id: Some(receipt_id),
                        cause_receipt_id: None,
                        reference: None,
                        reason: Some("attached"),
                        vests_at: earning.vests_at,
                    },
                    now,
                )?;
                rec.entries.push(index);
                balance = b;
            }
            // Returns of this sale made before the card was attached.
            let (claw, state) = ledger::clawback(
                state,
                loyalty_core::money::Money(0),
                loyalty_core::money::Money(0),
            );
            if claw > 0 {
                let (index, b) = tx.ledger_entry(
                    &NewEntry {
                        customer_id,
                        kind: EntryKind::Clawback,
                        points: -claw,
                        at: now,
                        receipt_id: Some(receipt_id),
                        cause_receipt_id: None,
                        reference: None,
                        reason: Some("returned before attach"),
                        vests_at: None,
                    },
                    now,
                )?;
                rec.entries.push(index);
                balance = b;
            }
            rec.returns = ReturnRec::from_state(&state);
            rec.customer_id = Some(customer_id.into());
            rec.vests_at = earning.vests_at;
            rec.promotions = earning.promotions.clone();
            let outcome = OutcomeRec {
                customer_id: Some(customer_id.into()),
                earned: points - claw,
                total: Some(balance.total),
                available: Some(balance.available),
                pending: Some(balance.pending),
                promotions: earning.promotions.clone(),
                note: None,
            };
            rec.attach_outcome = Some(outcome.clone());
            put_receipt(tx, &rec)?;
            Ok(outcome_from(receipt_id, &outcome, false))
        })
    }

    /// The first outcome of a receipt, if it was applied.
    pub fn receipt_outcome(&self, receipt_id: &str) -> Result<Option<ReceiptOutcome>, StoreError> {
        match self.tree(RECEIPTS).get(receipt_id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => {
                let rec: ReceiptRec = serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("receipt {receipt_id}: {e}")))?;
                Ok(Some(outcome_from(receipt_id, &rec.outcome, false)))
            }
        }
    }

    /// The stored receipt, if it was applied.
    pub fn receipt(&self, receipt_id: &str) -> Result<Option<Receipt>, StoreError> {
        match self.tree(RECEIPTS).get(receipt_id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => {
                let rec: ReceiptRec = serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("receipt {receipt_id}: {e}")))?;
                Ok(Some(rec.data.to_receipt()))
            }
        }
    }

    /// Number of receipts stored.
    pub fn receipt_count(&self) -> usize {
        self.tree(RECEIPTS).len()
    }

    // ----- ledger -----

    /// A customer's balance at `now`.
    pub fn balance(&self, customer_id: &str, now: Timestamp) -> Result<Balance, StoreError> {
        match self.customer_rec(customer_id)? {
            Some(rec) => Ok(rec.account.to_account().balance(now)),
            None => Err(StoreError::UnknownCustomer(customer_id.into())),
        }
    }

    /// The customer's journal entries, oldest first.
    pub fn customer_entries(&self, customer_id: &str) -> Result<Vec<Entry>, StoreError> {
        let mut prefix = customer_id.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.tree(CUSTOMER_JOURNAL).scan_prefix(&prefix) {
            let (key, _) = item?;
            let index = read_u64(&key[prefix.len()..])
                .ok_or_else(|| StoreError::Corrupt("customer_journal key".into()))?;
            let Some(value) = self.tree(JOURNAL).get(u64_be(index))? else {
                return Err(StoreError::Corrupt(format!(
                    "journal entry {index} missing"
                )));
            };
            let (_, _, body) = journal::decode(&value)
                .ok_or_else(|| StoreError::Corrupt(format!("journal entry {index}")))?;
            let entry = body
                .to_entry()
                .ok_or_else(|| StoreError::Corrupt(format!("journal entry {index} kind")))?;
            out.push(entry);
        }
        Ok(out)
    }

    fn points_op(
        &self,
        op: &str,
        reference: &str,
        new: NewEntry<'_>,
        now: Timestamp,
    ) -> Result<LedgerOutcome, StoreError> {
        check_id(new.customer_id)?;
        check_id(reference)?;
        let mut op_key = op.as_bytes().to_vec();
        op_key.push(0);
        op_key.extend_from_slice(reference.as_bytes());
        self.transact(&[], |tx| {
            if let Some(bytes) = tx.tree(OPS).get(&op_key)? {
                let Some(index) = read_u64(&bytes) else {
                    return corrupt("ops value");
                };
                let balance = tx.balance(new.customer_id, now)?;
                let points = bytes.get(8..16).and_then(read_u64).map_or(0, |p| p as i64);
                return Ok(LedgerOutcome {
                    entry: index,
                    customer_id: new.customer_id.into(),
                    points,
                    balance,
                    duplicate: true,
                });
            }
            let (index, balance) = tx.ledger_entry(&new, now)?;
            let mut value = u64_be(index).to_vec();
            value.extend_from_slice(&u64_be(new.points as u64));
            tx.tree(OPS).insert(op_key.as_slice(), value)?;
            Ok(LedgerOutcome {
                entry: index,
                customer_id: new.customer_id.into(),
                points: new.points,
                balance,
                duplicate: false,
            })
        })
    }

    /// Spends `points` at the till. `reference` makes it idempotent (the lane's redemption id).
    pub fn redeem_points(
        &self,
        customer_id: &str,
        points: i64,
        reference: &str,
        now: Timestamp,
    ) -> Result<LedgerOutcome, StoreError> {
        self.spend(
            "redeem",
            EntryKind::Redeem,
            customer_id,
            points,
            reference,
            now,
        )
    }

    /// Converts `points` into the voucher `voucher_id` (the ledger side only; the voucher
    /// module stores the voucher). Idempotent per voucher id.
    pub fn convert_to_voucher(
        &self,
        customer_id: &str,
        points: i64,
        voucher_id: &str,
        now: Timestamp,
    ) -> Result<LedgerOutcome, StoreError> {
        self.spend(
            "voucher",
            EntryKind::VoucherConversion,
            customer_id,
            points,
            voucher_id,
            now,
        )
    }

    /// Takes `points` (positive) off the customer's available balance as a `kind` entry,
    /// idempotent per (`op`, `reference`).
    fn spend(
        &self,
        op: &str,
        kind: EntryKind,
        customer_id: &str,
        points: i64,
        reference: &str,
        now: Timestamp,
    ) -> Result<LedgerOutcome, StoreError> {
        // Only the sign is checked here; the available balance is checked in the transaction.
        ledger::check_spend(
            Balance {
                total: i64::MAX,
                available: i64::MAX,
                pending: 0,
            },
            points,
        )?;
        self.points_op(
            op,
            reference,
            NewEntry {
                customer_id,
                kind,
                points: -points,
                at: now,
                receipt_id: None,
                cause_receipt_id: None,
                reference: Some(reference),
                reason: None,
                vests_at: None,
            },
            now,
        )
    }

    /// Applies a signed adjustment from the CRM. Idempotent per `crm_reference`.
    pub fn crm_adjustment(
        &self,
        customer_id: &str,
        points: i64,
        crm_reference: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<LedgerOutcome, StoreError> {
        ledger::check_adjustment(points)?;
        self.points_op(
            "adjust",
            crm_reference,
            NewEntry {
                customer_id,
                kind: EntryKind::Adjustment,
                points,
                at: now,
                receipt_id: None,
                cause_receipt_id: None,
                reference: Some(crm_reference),
                reason: Some(reason),
                vests_at: None,
            },
            now,
        )
    }

    // ----- outbox -----

    /// Up to `max` events with `seq > after`, in order.
    pub fn outbox_after(&self, after: u64, max: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        let start = after.saturating_add(1);
        let mut out = Vec::new();
        for item in self.tree(OUTBOX).range(u64_be(start)..).take(max) {
            let (key, value) = item?;
            out.push(decode_event(&key, &value)?);
        }
        Ok(out)
    }

    /// The CRM acknowledged every event through `through`. An acknowledgement beyond the
    /// last local event means this database lost data: [`StoreError::AckBeyondOutbox`].
    pub fn outbox_ack(&self, through: u64) -> Result<(), StoreError> {
        self.transact(&[], |tx| {
            let last = tx.get_u64(meta_key::NEXT_SEQ)?.max(1) - 1;
            if through > last {
                return abort(StoreError::AckBeyondOutbox {
                    acked: through,
                    last,
                });
            }
            let acked = tx.get_u64(meta_key::ACKED)?;
            if through > acked {
                tx.tree(META)
                    .insert(meta_key::ACKED, &u64_be(through)[..])?;
            }
            Ok(())
        })
    }

    /// Outbox counters.
    pub fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let meta = self.tree(META);
        let get = |key: &[u8]| -> Result<u64, StoreError> {
            Ok(meta.get(key)?.as_deref().and_then(read_u64).unwrap_or(0))
        };
        let last_seq = get(meta_key::NEXT_SEQ)?.max(1) - 1;
        let acked_through = get(meta_key::ACKED)?;
        Ok(OutboxStats {
            last_seq,
            acked_through,
            unacked: last_seq - acked_through.min(last_seq),
            stored: self.tree(OUTBOX).len() as u64,
        })
    }

    /// Removes acknowledged events older than `storage.outbox_retention_hours`; returns how
    /// many were removed. Unacknowledged events are never removed.
    pub fn compact_outbox(&self, now: Timestamp) -> Result<u64, StoreError> {
        let cutoff = now
            .checked_sub(self.inner.retention)
            .unwrap_or(Timestamp::MIN)
            .as_second();
        let acked = self.outbox_stats()?.acked_through;
        let outbox = self.tree(OUTBOX);
        let mut removed = 0u64;
        loop {
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            let mut done = true;
            for item in outbox.range(..=u64_be(acked)) {
                let (key, value) = item?;
                let at = value
                    .get(..8)
                    .map(|b| i64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
                    .unwrap_or(i64::MIN);
                if at > cutoff {
                    break;
                }
                batch.remove(key);
                in_batch += 1;
                if in_batch == 10_000 {
                    done = false;
                    break;
                }
            }
            if in_batch == 0 {
                break;
            }
            outbox.apply_batch(batch)?;
            removed += in_batch;
            if done {
                break;
            }
        }
        if removed > 0 {
            self.wait_durable()?;
        }
        Ok(removed)
    }

    // ----- verification -----

    /// Replays the journal: checks the hash chain (an edited, inserted or deleted entry breaks
    /// it), recomputes every customer's balance state and compares it with the stored one.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        journal::verify(
            self.tree(META),
            self.tree(JOURNAL),
            self.tree(CUSTOMERS),
            self.tree(RECEIPTS),
        )
    }

    /// Test hook: the raw sled tree named `name` (tests edit it to simulate tampering).
    #[doc(hidden)]
    pub fn raw_tree_for_tests(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.inner.db.open_tree(name)?)
    }
}

fn open_sled(dir: &Path, cache_capacity_mb: u64) -> Result<sled::Db, StoreError> {
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
                return result.map_err(|source| StoreError::Open {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

fn decode_receipt(receipt_id: &str, bytes: &[u8]) -> TxResult<ReceiptRec> {
    serde_json::from_slice(bytes).map_err(|e| tx_corrupt(format!("receipt {receipt_id}: {e}")))
}

fn put_receipt(tx: &Tx<'_>, rec: &ReceiptRec) -> TxResult<()> {
    let bytes = serde_json::to_vec(rec).map_err(|e| tx_corrupt(e.to_string()))?;
    tx.tree(RECEIPTS).insert(rec.data.id.as_bytes(), bytes)?;
    Ok(())
}

fn decode_event(key: &[u8], value: &[u8]) -> Result<OutboxEvent, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("outbox event: {what}"));
    let seq = read_u64(key).ok_or_else(|| bad("key"))?;
    let json: serde_json::Value =
        serde_json::from_slice(value.get(8..).ok_or_else(|| bad("value"))?)
            .map_err(|e| bad(&e.to_string()))?;
    let id = json["id"].as_str().ok_or_else(|| bad("id"))?.to_string();
    let kind = json["type"]
        .as_str()
        .and_then(EventType::parse)
        .ok_or_else(|| bad("type"))?;
    let at = json["at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad("at"))?;
    Ok(OutboxEvent {
        seq,
        id,
        kind,
        at,
        json,
    })
}

fn outcome_from(receipt_id: &str, rec: &OutcomeRec, duplicate: bool) -> ReceiptOutcome {
    ReceiptOutcome {
        receipt_id: receipt_id.into(),
        customer_id: rec.customer_id.clone(),
        earned: rec.earned,
        balance: match (rec.total, rec.available, rec.pending) {
            (Some(total), Some(available), Some(pending)) => Some(Balance {
                total,
                available,
                pending,
            }),
            _ => None,
        },
        promotions: rec.promotions.clone(),
        duplicate,
        note: rec.note.as_deref().and_then(OutcomeNote::parse),
    }
}

fn outcome_rec(
    customer_id: Option<&str>,
    earned: i64,
    balance: Option<Balance>,
    promotions: &[String],
    note: Option<OutcomeNote>,
) -> OutcomeRec {
    OutcomeRec {
        customer_id: customer_id.map(Into::into),
        earned,
        total: balance.map(|b| b.total),
        available: balance.map(|b| b.available),
        pending: balance.map(|b| b.pending),
        promotions: promotions.to_vec(),
        note: note.map(|n| n.as_str().to_string()),
    }
}

/// A receipt prepared for [`apply_planned`]: owned, so that another caller's thread can apply
/// it in a batch (see `store/batch.rs`).
pub(crate) struct ReceiptRequest {
    receipt: Receipt,
    data: ReceiptDataRec,
    customer_id: Option<String>,
    now: Timestamp,
    /// Whether `now` came from a trusted clock (the submitting handle's [`Store::stamped`]).
    clock_trusted: bool,
    plan: Plan,
}

/// What the earning policy said, computed before the transaction.
enum Plan {
    /// A sale: the earning for a customer of `tier` (`None` also for no customer).
    Sale {
        tier: Option<String>,
        earning: Earning,
    },
    /// A return: the eligible amount of the returned lines.
    Return { eligible: Money },
}

/// Applies one prepared receipt inside a transaction. A duplicate answers the first outcome; a
/// refusal is decided before anything is written and returned as `Done(Err(..))`; an error of
/// the transaction (corrupt data, storage) aborts it. When the customer's tier differs from
/// the one the earning was computed for, `policy` recomputes it, or without a policy the
/// request is left untouched and answered [`BatchAnswer::Retry`].
fn apply_planned(
    tx: &Tx<'_>,
    request: &ReceiptRequest,
    policy: Option<&dyn EarningPolicy>,
) -> TxResult<BatchAnswer> {
    // A batch combines requests of several handles: each request's events carry its own flag.
    tx.clock_trusted.set(request.clock_trusted);
    let receipt = &request.receipt;
    if let Some(bytes) = tx.tree(RECEIPTS).get(receipt.id.as_bytes())? {
        let rec = decode_receipt(&receipt.id, &bytes)?;
        return Ok(BatchAnswer::Done(Ok(outcome_from(
            &receipt.id,
            &rec.outcome,
            true,
        ))));
    }
    match (&request.plan, &receipt.kind) {
        (Plan::Sale { tier, earning }, ReceiptKind::Sale) => {
            let customer = match (request.customer_id.as_deref(), &receipt.card) {
                (Some(id), _) => match tx.customer_rec(id)? {
                    Some(rec) => Some(rec),
                    None => {
                        return Ok(BatchAnswer::Done(Err(StoreError::UnknownCustomer(
                            id.into(),
                        ))))
                    }
                },
                (None, Some(card)) => match tx.tree(CARDS).get(card.as_bytes())? {
                    Some(id) => tx.customer_rec(&String::from_utf8_lossy(&id))?,
                    None => None,
                },
                (None, None) => None,
            };
            let actual_tier = customer.as_ref().and_then(|c| c.tier.as_deref());
            let recomputed;
            let earning = if actual_tier == tier.as_deref() {
                earning
            } else {
                match policy {
                    Some(policy) => {
                        recomputed = policy.earn(receipt, actual_tier);
                        &recomputed
                    }
                    None => return Ok(BatchAnswer::Retry),
                }
            };
            let outcome = apply_sale(
                tx,
                receipt,
                &request.data,
                customer.as_ref(),
                earning,
                request.now,
            )?;
            Ok(BatchAnswer::Done(Ok(outcome)))
        }
        (
            Plan::Return { eligible },
            ReceiptKind::Return {
                original_receipt_id,
            },
        ) => apply_return(
            tx,
            receipt,
            &request.data,
            original_receipt_id,
            *eligible,
            request.now,
        )
        .map(BatchAnswer::Done),
        _ => corrupt("receipt request plan does not match its kind (internal error)"),
    }
}

fn apply_sale(
    tx: &Tx<'_>,
    receipt: &Receipt,
    data: &ReceiptDataRec,
    customer: Option<&CustomerRec>,
    earning: &Earning,
    now: Timestamp,
) -> TxResult<ReceiptOutcome> {
    let points = if customer.is_some() {
        earning.points.max(0)
    } else {
        0
    };
    let mut rec = ReceiptRec {
        data: data.clone(),
        applied_at: now,
        customer_id: customer.as_ref().map(|c| c.id.clone()),
        eligible: earning.eligible.0,
        vests_at: earning.vests_at,
        promotions: earning.promotions.clone(),
        returns: ReturnRec {
            original_points: points,
            original_eligible: earning.eligible.0,
            original_total: receipt.total.0,
            ..Default::default()
        },
        outcome: outcome_rec(None, 0, None, &[], None),
        attach_outcome: None,
        entries: Vec::new(),
    };
    let outcome = match customer {
        Some(customer) => {
            let mut balance = tx.balance(&customer.id, now)?;
            if points > 0 {
                let (index, b) = tx.ledger_entry(
                    &NewEntry {
                        customer_id: &customer.id,
                        kind: EntryKind::Earn,
                        points,
                        at: now,
                        receipt_id: Some(&receipt.id),
                        cause_receipt_id: None,
                        reference: None,
                        reason: None,
                        vests_at: earning.vests_at,
                    },
                    now,
                )?;
                rec.entries.push(index);
                balance = b;
            }
            outcome_rec(
                Some(&customer.id),
                points,
                Some(balance),
                &earning.promotions,
                None,
            )
        }
        None => outcome_rec(None, 0, None, &[], Some(OutcomeNote::NoCustomer)),
    };
    rec.outcome = outcome.clone();
    put_receipt(tx, &rec)?;
    tx.append_event(
        EventType::Receipt,
        receipt.timestamp,
        &ReceiptEvent::new(receipt, rec.customer_id.as_deref(), points),
    )?;
    Ok(outcome_from(&receipt.id, &outcome, false))
}

/// Applies a return; `Ok(Err(NotASale))` (nothing written) when the "original" is a return.
fn apply_return(
    tx: &Tx<'_>,
    receipt: &Receipt,
    data: &ReceiptDataRec,
    original_id: &str,
    returning_eligible: Money,
    now: Timestamp,
) -> TxResult<Result<ReceiptOutcome, StoreError>> {
    let mut rec = ReceiptRec {
        data: data.clone(),
        applied_at: now,
        customer_id: None,
        eligible: returning_eligible.0,
        vests_at: None,
        promotions: Vec::new(),
        returns: ReturnRec::default(),
        outcome: outcome_rec(None, 0, None, &[], None),
        attach_outcome: None,
        entries: Vec::new(),
    };
    let outcome = match tx.tree(RECEIPTS).get(original_id.as_bytes())? {
        None => outcome_rec(None, 0, None, &[], Some(OutcomeNote::OriginalUnknown)),
        Some(bytes) => {
            let mut original = decode_receipt(original_id, &bytes)?;
            if original.data.original_receipt_id.is_some() {
                return Ok(Err(StoreError::NotASale(original_id.into())));
            }
            let (claw, state) = ledger::clawback(
                original.returns.to_state(),
                returning_eligible,
                receipt.total,
            );
            original.returns = ReturnRec::from_state(&state);
            let outcome = match original.customer_id.clone() {
                Some(customer_id) => {
                    let mut balance = tx.balance(&customer_id, now)?;
                    if claw > 0 {
                        let (index, b) = tx.ledger_entry(
                            &NewEntry {
                                customer_id: &customer_id,
                                kind: EntryKind::Clawback,
                                points: -claw,
                                at: now,
                                receipt_id: Some(original_id),
                                cause_receipt_id: Some(&receipt.id),
                                reference: None,
                                reason: None,
                                vests_at: None,
                            },
                            now,
                        )?;
                        rec.entries.push(index);
                        balance = b;
                    }
                    rec.customer_id = Some(customer_id.clone());
                    outcome_rec(Some(&customer_id), -claw, Some(balance), &[], None)
                }
                None => outcome_rec(
                    None,
                    0,
                    None,
                    &[],
                    Some(OutcomeNote::OriginalWithoutCustomer),
                ),
            };
            put_receipt(tx, &original)?;
            outcome
        }
    };
    rec.outcome = outcome.clone();
    put_receipt(tx, &rec)?;
    tx.append_event(
        EventType::Receipt,
        receipt.timestamp,
        &ReceiptEvent::new(receipt, rec.customer_id.as_deref(), outcome.earned),
    )?;
    Ok(Ok(outcome_from(&receipt.id, &outcome, false)))
}
