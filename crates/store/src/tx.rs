//! The transaction primitive: [`Store::transact`] runs a closure as one sled transaction over
//! the core trees plus a caller's trees and returns once a group commit made it durable; the
//! closure gets a [`Tx`] to append outbox events and ledger entries (hash-chained journal,
//! gapless outbox seq) atomically with its own writes.

use super::*;
use loyalty_protocol::crm::events::{Event, LedgerEvent, OwingLedgerEvent};

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
    pub(crate) trees: &'a [TransactionalTree],
    pub(crate) ids: EventIds,
    pub(crate) next_id: Cell<u32>,
    /// Customer records decoded (or written) in this transaction, so that a receipt decodes
    /// its customer once. Every write of the customers tree goes through `put_customer_rec`,
    /// which keeps this in step; a re-run of the closure gets a fresh `Tx`.
    pub(crate) customers: RefCell<HashMap<String, CustomerRec>>,
    /// Whether the times of the events appended now come from a trusted clock (a receipt
    /// batch sets it per request).
    pub(crate) clock_trusted: Cell<bool>,
}

impl<'a> Tx<'a> {
    /// The caller's `index`-th extra tree (in the order given to [`Store::transact`]).
    pub fn extra(&self, index: usize) -> &TransactionalTree {
        &self.trees[CORE_TREES.len() + index]
    }

    pub(crate) fn tree(&self, index: usize) -> &TransactionalTree {
        &self.trees[index]
    }

    pub(crate) fn get_u64(&self, key: &[u8]) -> TxResult<u64> {
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
            .put(meta_key::NEXT_SEQ, &u64_be(next + 1)[..])?;
        self.count_event(at, kind)?;
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
        self.tree(OUTBOX).put(&u64_be(next)[..], value)?;
        Ok(next)
    }

    /// Reads a customer record; an id merged away at head office resolves to the survivor
    /// (see [`Tx::customer_rec_exact`]).
    pub(crate) fn customer_rec(&self, customer_id: &str) -> TxResult<Option<CustomerRec>> {
        let mut id = customer_id.to_string();
        for _ in 0..=MAX_MERGE_HOPS {
            match self.customer_rec_exact(&id)? {
                None => return Ok(None),
                Some(rec) => match rec.merged_into {
                    Some(into) => id = into,
                    None => return Ok(Some(rec)),
                },
            }
        }
        corrupt(format!(
            "customer {customer_id}: more than {MAX_MERGE_HOPS} merges in a row (a cycle?)"
        ))
    }

    /// Reads the record stored under exactly this id (a merged-away id gives its tombstone).
    pub(crate) fn customer_rec_exact(&self, customer_id: &str) -> TxResult<Option<CustomerRec>> {
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

    pub(crate) fn put_customer_rec(&self, rec: &CustomerRec) -> TxResult<()> {
        let bytes = serde_json::to_vec(rec).map_err(|e| tx_corrupt(e.to_string()))?;
        self.tree(CUSTOMERS).put(rec.id.as_bytes(), bytes)?;
        self.customers
            .borrow_mut()
            .insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// The customer's balance as of this transaction.
    pub fn balance(&self, customer_id: &str, now: Timestamp) -> TxResult<Balance> {
        match self.customer_rec(customer_id)? {
            Some(rec) => Ok(rec.account.to_account().balance(now)),
            None => abort(StoreError::Refused(Refused::UnknownCustomer(
                customer_id.into(),
            ))),
        }
    }

    /// Appends a journal entry that moves a customer's points, its `ledger` outbox event and the
    /// customer's updated account, atomically. Returns the journal index and the new balance.
    /// Spending entries (redeem, conversion) are checked against the available balance.
    pub fn ledger_entry(&self, new: &NewEntry<'_>, now: Timestamp) -> TxResult<(u64, Balance)> {
        self.entry_owing(new, None, now)
    }

    /// [`Tx::ledger_entry`] for a clawback floored at zero: the entry records `owed` (the
    /// points the return still owes) and the account keeps the debt, collected from the
    /// customer's next earnings ([`Tx::collect_owed`]).
    pub(crate) fn floored_clawback(
        &self,
        new: &NewEntry<'_>,
        owed: i64,
        now: Timestamp,
    ) -> TxResult<(u64, Balance)> {
        let owed = (owed > 0).then_some(owed);
        let result = self.entry_owing(new, owed, now)?;
        if let (Some(points), Some(sale), Some(ret)) = (owed, new.receipt_id, new.cause_receipt_id)
        {
            if let Some(mut rec) = self.customer_rec(new.customer_id)? {
                let mut account = rec.account.to_account();
                account.owe(ledger::Owed {
                    receipt_id: sale.into(),
                    cause_receipt_id: ret.into(),
                    points,
                });
                rec.account = records::AccountRec::from_account(&account);
                self.put_customer_rec(&rec)?;
            }
        }
        Ok(result)
    }

    /// After a sale earned `earned` points for a customer who owes points from returns: one
    /// clawback entry per debt paid (oldest first), `reference` naming the sale. Returns their
    /// journal indexes and the balance after them (None when nothing was owed).
    pub(crate) fn collect_owed(
        &self,
        customer_id: &str,
        sale_id: &str,
        earned: i64,
        now: Timestamp,
    ) -> TxResult<(Vec<u64>, Option<Balance>)> {
        let Some(mut rec) = self.customer_rec(customer_id)? else {
            return Ok((Vec::new(), None));
        };
        let mut account = rec.account.to_account();
        let taken = account.take_owed(earned);
        if taken.is_empty() {
            return Ok((Vec::new(), None));
        }
        rec.account.owed = records::AccountRec::from_account(&account).owed;
        self.put_customer_rec(&rec)?;
        let mut indexes = Vec::new();
        let mut balance = None;
        for debt in &taken {
            let (index, after) = self.entry_owing(
                &NewEntry {
                    customer_id,
                    kind: EntryKind::Clawback,
                    points: -debt.points,
                    at: now,
                    receipt_id: Some(&debt.receipt_id),
                    cause_receipt_id: Some(&debt.cause_receipt_id),
                    reference: Some(sale_id),
                    reason: Some("owed by a return, collected from this sale's points"),
                    vests_at: None,
                },
                None,
                now,
            )?;
            indexes.push(index);
            balance = Some(after);
        }
        Ok((indexes, balance))
    }

    fn entry_owing(
        &self,
        new: &NewEntry<'_>,
        owed: Option<i64>,
        now: Timestamp,
    ) -> TxResult<(u64, Balance)> {
        let Some(mut rec) = self.customer_rec(new.customer_id)? else {
            return abort(StoreError::Refused(Refused::UnknownCustomer(
                new.customer_id.into(),
            )));
        };
        // An id merged away at head office: the entry belongs to the survivor.
        let customer_id = rec.id.clone();
        let new = &NewEntry {
            customer_id: &customer_id,
            ..new.clone()
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
            owed,
        };
        let hash = journal::append(self.tree(META), self.tree(JOURNAL), &body, &prev)?;
        let mut key = new.customer_id.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&u64_be(index));
        self.tree(CUSTOMER_JOURNAL).put(key, &[][..])?;
        let hash_hex = events::hex(&hash);
        let payload = LedgerEvent {
            entry: index,
            customer_id: new.customer_id.into(),
            kind: new.kind,
            points: new.points,
            receipt_id: new.receipt_id.map(Into::into),
            cause_receipt_id: new.cause_receipt_id.map(Into::into),
            reference: new.reference.map(Into::into),
            reason: new.reason.map(Into::into),
            vests_at: new.vests_at,
            hash: hash_hex.as_str().into(),
        };
        let event_seq = match owed {
            None => self.append_event(EventType::Ledger, new.at, &payload)?,
            Some(owed) => self.append_event(
                EventType::Ledger,
                new.at,
                &OwingLedgerEvent {
                    entry: payload,
                    owed,
                },
            )?,
        };
        self.count_points(new.at, new.kind, new.points)?;
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

pub(crate) fn tx_corrupt(what: String) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(StoreError::Failed(Failure::Corrupt(what)))
}

impl Store {
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
    pub(crate) fn commit_only<T>(
        &self,
        extra: &[&sled::Tree],
        f: impl Fn(&Tx<'_>) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        let ids = EventIds::random().map_err(|err| StoreError::Failed(Failure::Random(err)))?;
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

    /// Wraps `value`, the result of writes this thread has committed, until those writes are
    /// durable (see [`Committed`]).
    pub(crate) fn committed<T>(&self, value: T) -> Result<Committed<T>, StoreError> {
        Ok(Committed {
            value,
            ticket: self.inner.commit.ticket()?,
            store: self.clone(),
        })
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

    /// What the receipt batches did since open (see [`BatchStats`]).
    pub fn batch_stats(&self) -> BatchStats {
        self.inner.receipts.stats()
    }
}

/// The result of a committed transaction that is not durable yet: what it holds may be reported
/// only once [`Committed::wait`] or [`Committed::durable`] returned it, after the group commit
/// that covers it. Meanwhile the caller can go on and commit more (a lane's next receipt): its
/// later writes are durable no earlier than these (sled's log is written in order).
#[must_use = "nothing may be reported before it is durable: wait for it"]
pub struct Committed<T> {
    value: T,
    ticket: u64,
    store: Store,
}

impl<T> Committed<T> {
    /// The value, before it is durable, for bookkeeping that is lost with the process anyway
    /// (a lane's session); never for an answer or an acknowledgement.
    pub fn peek(&self) -> &T {
        &self.value
    }

    /// Blocks until durable (a lone writer syncs on its own thread).
    pub fn wait(self) -> Result<T, StoreError> {
        self.store.inner.commit.wait_ticket(self.ticket)?;
        Ok(self.value)
    }

    /// Waits, without blocking a thread, until durable (the syncer thread runs the round).
    pub async fn durable(self) -> Result<T, StoreError> {
        let commit = &self.store.inner.commit;
        std::future::poll_fn(|cx| commit.poll_ticket(self.ticket, cx)).await?;
        Ok(self.value)
    }
}
