//! Receipt retention: `storage.receipt_retention_days` bounds the `receipts` tree, so a Pi's
//! disk stays bounded over years. [`Store::prune_receipts`] removes receipts applied before the
//! retention period, except those the CRM has not acknowledged yet (their `receipt` event is
//! still in the unacknowledged part of the outbox) and sales whose points are still vesting.
//! The configuration refuses a retention not longer than the return window
//! (`rules.vesting_days`), so a return inside the window always finds its sale and claws back.
//!
//! What pruning gives up: a receipt older than the retention is no longer recognised as a
//! duplicate, and a return of it finds no original (answered like a sale of another store).
//! The journal keeps every ledger entry; `verify` accepts entries of sales applied before the
//! recorded `receipts_pruned_before` whose receipt is gone. sled does not give the space back
//! by itself (#1333): the offline compaction at open does once enough of the file is free.

use super::*;
use serde::Deserialize;
use std::collections::HashSet;

/// Removes at most this many receipts per write batch.
const BATCH: usize = 10_000;

/// What [`Store::prune_receipts`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneReport {
    /// Receipts removed.
    pub removed: u64,
    /// Receipts old enough but kept because the CRM has not acknowledged them yet.
    pub kept_unsynced: u64,
}

/// The part of a stored receipt pruning reads.
#[derive(Deserialize)]
struct Age {
    #[serde(with = "records::ts")]
    applied_at: Timestamp,
    #[serde(default, with = "records::ts_opt")]
    vests_at: Option<Timestamp>,
}

impl Store {
    /// Removes the receipts applied before `now` less `storage.receipt_retention_days` (nothing
    /// when it is 0), except receipts whose `receipt` event the CRM has not acknowledged and
    /// sales whose points still vest; durable when it returns. Blocking: reads every receipt
    /// (run it in the background, e.g. once a day).
    pub fn prune_receipts(&self, now: Timestamp) -> Result<PruneReport, StoreError> {
        let Some(retention) = self.inner.receipt_retention else {
            return Ok(PruneReport::default());
        };
        let cutoff = now.checked_sub(retention).unwrap_or(Timestamp::MIN);
        let unsynced = self.unsynced_receipt_ids()?;
        let receipts = self.tree(RECEIPTS);
        let mut report = PruneReport::default();
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for item in receipts.iter() {
            let (key, value) = item?;
            let Ok(age) = serde_json::from_slice::<Age>(&value) else {
                // Unreadable: left for `verify` to report, never removed blindly.
                continue;
            };
            if age.applied_at >= cutoff || age.vests_at.is_some_and(|at| at > now) {
                continue;
            }
            if unsynced.contains(key.as_ref()) {
                report.kept_unsynced += 1;
                continue;
            }
            batch.remove(key);
            in_batch += 1;
            if in_batch == BATCH {
                receipts.apply_batch(std::mem::take(&mut batch))?;
                report.removed += in_batch as u64;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            receipts.apply_batch(batch)?;
            report.removed += in_batch as u64;
        }
        if report.removed > 0 {
            // Never moves back: a later run with a shorter retention only moves it forward.
            let meta = self.tree(META);
            let before = pruned_before(meta)?.unwrap_or(i64::MIN);
            let at = cutoff.as_second().max(before);
            meta.insert(meta_key::RECEIPTS_PRUNED_BEFORE, &at.to_be_bytes()[..])?;
            self.wait_durable()?;
        }
        Ok(report)
    }

    /// Ids of the receipts whose `receipt` event the CRM has not acknowledged yet.
    fn unsynced_receipt_ids(&self) -> Result<HashSet<Vec<u8>>, StoreError> {
        let acked = self.outbox_stats()?.acked_through;
        let mut ids = HashSet::new();
        for item in self.tree(OUTBOX).range(u64_be(acked.saturating_add(1))..) {
            let (key, value) = item?;
            let event = outbox::decode_event(&key, &value)?;
            if event.kind == EventType::Receipt {
                if let Some(id) = event.json["payload"]["receipt_id"].as_str() {
                    ids.insert(id.as_bytes().to_vec());
                }
            }
        }
        Ok(ids)
    }
}

/// When receipts were last pruned up to (unix seconds), if ever.
pub(crate) fn pruned_before(meta: &sled::Tree) -> Result<Option<i64>, StoreError> {
    Ok(meta
        .get(meta_key::RECEIPTS_PRUNED_BEFORE)?
        .and_then(|b| Some(i64::from_be_bytes(b.get(..8)?.try_into().ok()?))))
}
