//! Storage: the only module that imports sled. Owns customers (by id, indexed by card),
//! receipts (by id, for idempotency), the hash-chained ledger journal, the outbox of
//! sequence-numbered events for the CRM, the schema version, and durability (group commit with
//! real `fsync`). See `docs/arch/store.md` for the key layout and the durability design.
//!
//! # Public API (blocking; callers use `spawn_blocking`)
//! [`Store::open`], customers ([`Store::customer`], [`Store::customer_by_card`],
//! [`Store::enroll`], [`Store::upsert_crm_customer`], [`Store::confirm_balance`]), receipts
//! ([`Store::apply_valid_receipt`]: a receipt with its enrolment, points, voucher redemption
//! and issue in one transaction and one group commit; [`Store::apply_receipt`],
//! [`Store::attach_customer`]), ledger ([`Store::balance`],
//! [`Store::redeem_points`], [`Store::convert_to_voucher`], [`Store::crm_adjustment`]),
//! pay with points ([`Store::reserve_points`], [`Store::release_lane_points`],
//! [`Store::sweep_reservations`], [`Store::available_points`]; committed by the receipt that
//! names the reference, in its transaction),
//! outbox ([`Store::outbox_after`], [`Store::outbox_ack`], [`Store::outbox_stats`],
//! [`Store::compact_outbox`]), retention ([`Store::prune_receipts`]) and [`Store::verify`]. Every write returns only once it is on
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
//! Errors say their kind: [`StoreError::Refused`] (bad input, nothing written) or
//! [`StoreError::Failed`] (storage).
//!
//! # Modules
//! `error` (the error types), `open` (open, compaction, migrations), `tx` (the transaction
//! primitive and [`Tx`]), `customers`, `receipts` (the receipt API) and `apply` (a receipt
//! inside its transaction), `batch` (receipts combined into one transaction), `durability`
//! (group commit), `points` (balances and points operations), `reservations` (pay with
//! points), `outbox`, `journal`, `vouchers`, `sync_state`, `merge` (customers merged at head
//! office), `erasure` (what an erasure scrubs from receipts and the outbox, and the compaction
//! it owes), `compact`, `retention`, `schema`, `records`, `events`, `seed`.
//!
//! Invariants: a ledger change and its outbox event are committed in one transaction; outbox
//! sequence numbers are gapless and increasing; nothing is reported as applied before the
//! group commit's `fsync` covering it returned.

mod apply;
mod batch;
mod compact;
mod customers;
mod durability;
mod erasure;
mod error;
pub mod events;
mod figures;
mod journal;
mod merge;
pub mod offers;
mod open;
mod outbox;
mod points;
mod receipts;
mod records;
pub mod reservations;
mod retention;
mod schema;
mod seed;
pub mod sync_state;
mod tx;
pub mod vouchers;

mod settings;
use batch::{BatchAnswer, Combiner};
use durability::GroupCommit;
use events::{EventIds, EventType};
use jiff::Timestamp;
use loyalty_core::customer::{check_id, Customer};
use loyalty_core::ledger::{self, Balance, Confirmed, Earning, EarningPolicy, Entry, EntryKind};
use loyalty_core::money::Money;
use loyalty_core::receipt::{Receipt, ReceiptKind, ValidReceipt};
use records::{CustomerRec, OutcomeRec, ReceiptDataRec, ReceiptRec, ReturnRec};
pub use settings::StorageConfig;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use apply::outcome_from;
use apply::{apply_planned, Enrolment, Plan, ReceiptRequest};
pub use apply::{ReceiptApplied, ReceiptCustomer};
pub use compact::{ping_watchdog_while_copying, CompactTrigger, OpenCompaction};
pub use durability::DurabilityError;
pub use error::{Failure, Refused, StoreError};
pub use journal::VerifyReport;
use open::open_sled;
pub use outbox::{OutboxEvent, OutboxStats};
use receipts::{decode_receipt, put_receipt};
pub use receipts::{OutcomeNote, ReceiptOutcome};
pub use retention::PruneReport;
pub use schema::{Migration, SCHEMA_VERSION};
use tx::tx_corrupt;
pub use tx::{Committed, NewEntry, Tx};

/// Result inside a [`Store::transact`] closure.
pub type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Aborts a transaction with `err`.
pub fn abort<T>(err: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(err))
}

fn corrupt<T>(what: impl Into<String>) -> TxResult<T> {
    abort(StoreError::Failed(Failure::Corrupt(what.into())))
}

/// Names of the core trees, in the order a [`Tx`] holds them.
const CORE_TREES: [&str; 10] = [
    "meta",
    "customers",
    "cards",
    "receipts",
    "journal",
    "customer_journal",
    "outbox",
    "ops",
    "figures",
    "points/reservations",
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
const FIGURES: usize = 8;
const RESERVATIONS: usize = 9;

/// The longest chain of merges (`a` into `b`, `b` into `c`, ...) a customer lookup follows.
const MAX_MERGE_HOPS: usize = 16;

/// Meta keys.
mod meta_key {
    pub const SCHEMA_VERSION: &[u8] = b"schema_version";
    pub const STORE_ID: &[u8] = b"store_id";
    pub const INSTANCE: &[u8] = b"instance";
    pub const NEXT_SEQ: &[u8] = b"outbox_next_seq";
    pub const ACKED: &[u8] = b"outbox_acked_through";
    pub const JOURNAL_HEAD: &[u8] = b"journal_head";
    /// i64 BE unix seconds: receipts applied before this may have been pruned.
    pub const RECEIPTS_PRUNED_BEFORE: &[u8] = b"receipts_pruned_before";
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
    /// The voucher trees (`vouchers::ISSUED`, `STATE`, `REVOKED`, in that order): a receipt's
    /// transaction settles and issues its vouchers with its points.
    voucher_trees: [sled::Tree; 3],
    /// The `offers` tree (`offers::TREE`): a sale's transaction counts its offers' uses.
    offers_tree: sled::Tree,
    store_id: String,
    data_dir: PathBuf,
    retention: jiff::SignedDuration,
    /// How long receipts are kept (None: for ever).
    receipt_retention: Option<jiff::SignedDuration>,
    migrations_applied: Vec<u32>,
    compacted_at_open: Option<OpenCompaction>,
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

/// What the receipt batches (`store/batch.rs`) did since open: one leader at a time applies a
/// batch in one transaction, so `leading_nanos` over the wall time says how close receipts are
/// to the most that one leader can apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches applied.
    pub batches: u64,
    /// Receipts in them.
    pub receipts: u64,
    /// Nanoseconds a leader spent applying batches (its transaction and posting the answers).
    pub leading_nanos: u64,
    /// CPU nanoseconds of the leaders' threads in that time (less than `leading_nanos` by the
    /// time they waited: for the CPU, for a lock, for sled's log).
    pub leading_cpu_nanos: u64,
}

/// How a read outside a transaction treats a transaction committing at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Waits for it to finish (sled's default): several reads see all of a transaction or none.
    Consistent,
    /// Does not wait (sled patch 7): each key's value is read whole, but a committing
    /// transaction may show some of its writes and not yet others. Only for a receipt's
    /// preparation, whose reads the batch's transaction checks again (`apply_planned` resolves
    /// the customer, compares the tier, skips withdrawn offers); waiting made 64 preparing
    /// submitters queue behind every batch, and the batch behind them.
    Hint,
}

impl Reading {
    pub(crate) fn get(self, tree: &sled::Tree, key: &[u8]) -> sled::Result<Option<sled::IVec>> {
        match self {
            Reading::Consistent => tree.get(key),
            Reading::Hint => tree.get_unisolated(key),
        }
    }

    pub(crate) fn scan_prefix(self, tree: &sled::Tree, prefix: &[u8]) -> sled::Iter {
        match self {
            Reading::Consistent => tree.scan_prefix(prefix),
            Reading::Hint => tree.scan_prefix_unisolated(prefix),
        }
    }
}

impl Store {
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

#[cfg(test)]
mod reading_tests {
    use super::Reading;
    use sled::transaction::ConflictableTransactionError;
    use std::sync::mpsc;
    use std::time::Duration;

    type TxResult = Result<(), ConflictableTransactionError<()>>;

    /// While a transaction holds sled's lock, a hint read answers with the value before it,
    /// and a consistent read waits for the transaction and sees its write.
    #[test]
    fn a_hint_read_answers_during_a_transaction_and_a_consistent_read_waits() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = sled::Config::new()
            .path(dir.path())
            .open()
            .expect("open sled");
        let tree = db.open_tree("t").expect("open tree");
        tree.insert(b"k", b"old".as_slice()).expect("insert");
        tree.insert(b"p/1", b"one".as_slice()).expect("insert");
        let (inside, transaction_started) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                tree.transaction(move |t| -> TxResult {
                    t.put(b"k", b"new".as_slice())?;
                    t.put(b"p/2", b"two".as_slice())?;
                    let _ = inside.send(());
                    let _ = released.recv();
                    Ok(())
                })
            });
            transaction_started.recv().expect("the transaction started");
            let tree = &tree;

            let (hint_done, hint_answered) = mpsc::channel();
            scope.spawn(move || {
                let value = Reading::Hint.get(tree, b"k");
                let keys = Reading::Hint
                    .scan_prefix(tree, b"p/")
                    .map(|item| item.map(|(k, _)| k.to_vec()))
                    .collect::<Result<Vec<_>, _>>();
                let _ = hint_done.send((value, keys));
            });
            let hint = hint_answered.recv_timeout(Duration::from_secs(10));

            let (read_done, consistent_answered) = mpsc::channel();
            let reader = scope.spawn(move || {
                let value = Reading::Consistent.get(tree, b"k");
                let _ = read_done.send(());
                value
            });
            let consistent_answered_early = consistent_answered
                .recv_timeout(Duration::from_millis(200))
                .is_ok();

            release.send(()).expect("release the transaction");
            writer.join().expect("writer thread").expect("transaction");
            let (value, keys) = hint.expect("no hint read answered while a transaction ran");
            assert_eq!(
                value.expect("hint read").as_deref(),
                Some(b"old".as_slice())
            );
            assert_eq!(keys.expect("hint scan"), vec![b"p/1".to_vec()]);
            assert!(
                !consistent_answered_early,
                "a consistent read answered while a transaction held the lock"
            );
            let value = reader.join().expect("reader thread").expect("read");
            assert_eq!(value.as_deref(), Some(b"new".as_slice()));
        });
    }
}
