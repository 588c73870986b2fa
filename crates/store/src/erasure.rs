//! What an erasure from the changes feed removes beyond the customer's record
//! (`sync_state::erase`): her card numbers from the stored receipts (`receipts`: sales, returns
//! and the sales a return looks up inside the return window) and her card and name from every
//! event still in the outbox (unsent ones, and sent ones kept for `outbox_retention_hours`),
//! in the changes page's transaction; and the owed compaction that takes the old versions out of
//! sled's files.
//!
//! sled cannot iterate inside a transaction, so the records to rewrite are found before it
//! ([`Store::erasure_scan`]: a byte search of the two trees for her ids and cards as JSON
//! strings, then re-read and checked inside the transaction, so a record changed meanwhile is
//! judged on what it holds then). After the page's transaction a second scan finds what a lane
//! wrote between the first scan and the commit ([`Store::scrub_erased_again`]).
//!
//! sled is log-structured: a rewritten or removed value stays in its `db` file until the
//! segment is reused. The erasure's transaction therefore sets `meta`
//! `erasure_compaction_owed`; the next open copies every live record into a fresh database and
//! deletes the old files (`compact`), whatever the compaction trigger says, and the copy does not
//! carry the key. Until that start the old bytes are in the file (documented in the README).

use super::records::ReceiptRec;
use super::{Store, StoreError, Tx, TxResult, META, OUTBOX, RECEIPTS};
use crate::Failure;
use loyalty_protocol::crm::events::{scrub_erased, ErasedPerson};

/// `meta` key: an erasure rewrote records whose old versions may still be in sled's files; the
/// next open compacts.
pub(crate) const COMPACTION_OWED: &[u8] = b"erasure_compaction_owed";

/// The people a page erases and the records that may hold their data, found before the
/// transaction.
#[derive(Debug, Default)]
pub(crate) struct ErasureScan {
    pub(crate) people: Vec<ErasedPerson>,
    /// Keys of `receipts` values that mention one of them.
    pub(crate) receipts: Vec<Vec<u8>>,
    /// Keys of `outbox` values that mention one of them.
    pub(crate) outbox: Vec<Vec<u8>>,
}

impl ErasureScan {
    fn is_empty(&self) -> bool {
        self.receipts.is_empty() && self.outbox.is_empty()
    }
}

fn json_string(text: &str) -> Vec<u8> {
    serde_json::to_vec(text).unwrap_or_else(|_| text.as_bytes().to_vec())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

impl Store {
    /// Who `customer_ids` are here (every id merged into them, every card) and which stored
    /// receipts and outbox events mention them. Reads only.
    pub(crate) fn erasure_scan(&self, customer_ids: &[String]) -> Result<ErasureScan, StoreError> {
        let mut people = Vec::new();
        for id in customer_ids {
            let Some(rec) = self.customer_rec(id)? else {
                continue;
            };
            let personal = rec.card.is_some()
                || !rec.more_cards.is_empty()
                || rec.name.is_some()
                || rec.phone_hash.is_some()
                || rec.email_hash.is_some();
            if !personal {
                // Erased before (a page delivered again): nothing left to scrub or to copy.
                continue;
            }
            let mut ids = vec![id.clone(), rec.id.clone()];
            ids.extend(rec.merged_from.iter().cloned());
            ids.sort();
            ids.dedup();
            people.push(ErasedPerson {
                ids,
                cards: rec.all_cards().cloned().collect(),
            });
        }
        self.scan_for(people)
    }

    fn scan_for(&self, people: Vec<ErasedPerson>) -> Result<ErasureScan, StoreError> {
        let needles: Vec<Vec<u8>> = people
            .iter()
            .flat_map(|p| p.ids.iter().chain(p.cards.iter()))
            .map(|text| json_string(text))
            .collect();
        let mut scan = ErasureScan {
            people,
            ..ErasureScan::default()
        };
        if needles.is_empty() {
            return Ok(scan);
        }
        for (tree, keys) in [(RECEIPTS, &mut scan.receipts), (OUTBOX, &mut scan.outbox)] {
            for item in self.tree(tree).iter() {
                let (key, value) = item?;
                if needles.iter().any(|n| contains(&value, n)) {
                    keys.push(key.to_vec());
                }
            }
        }
        Ok(scan)
    }

    /// Whether an erasure rewrote records whose old versions are still in sled's files: the
    /// next open copies the database (the daemon restarts its gateway in-process for it).
    pub fn erasure_compaction_owed(&self) -> Result<bool, StoreError> {
        Ok(self.tree(META).contains_key(COMPACTION_OWED)?)
    }

    /// After the page's transaction: scrubs what a lane wrote for the erased people between
    /// [`Store::erasure_scan`] and the commit (usually nothing), durably.
    pub(crate) fn scrub_erased_again(&self, first: ErasureScan) -> Result<(), StoreError> {
        if first.people.is_empty() {
            return Ok(());
        }
        let again = self.scan_for(first.people)?;
        if again.is_empty() {
            return Ok(());
        }
        self.transact(&[], |tx| scrub_in_tx(tx, &again).map(|_| ()))
    }
}

/// Rewrites the scanned receipts and events that still hold an erased person's card or name,
/// and marks the compaction owed. Returns how many records changed.
pub(crate) fn scrub_in_tx(tx: &Tx<'_>, scan: &ErasureScan) -> TxResult<u64> {
    if scan.people.is_empty() {
        return Ok(0);
    }
    let mut changed = 0;
    for key in &scan.receipts {
        let Some(bytes) = tx.tree(RECEIPTS).get(key)? else {
            continue;
        };
        let mut rec: ReceiptRec =
            super::receipts::decode_receipt(&String::from_utf8_lossy(key), &bytes)?;
        let hers = |p: &ErasedPerson| match &rec.customer_id {
            Some(id) => p.ids.contains(id),
            None => rec.data.card.as_ref().is_some_and(|c| p.cards.contains(c)),
        };
        if rec.data.card.is_some() && scan.people.iter().any(hers) {
            rec.data.card = None;
            super::receipts::put_receipt(tx, &rec)?;
            changed += 1;
        }
    }
    for key in &scan.outbox {
        let Some(value) = tx.tree(OUTBOX).get(key)? else {
            continue;
        };
        let (at, json) = value.split_at(8.min(value.len()));
        let mut text = None;
        for person in &scan.people {
            let current = text.as_deref().unwrap_or(json);
            match scrub_erased(current, person) {
                Ok(Some(scrubbed)) => text = Some(scrubbed),
                Ok(None) => {}
                Err(err) => {
                    return Err(sled::transaction::ConflictableTransactionError::Abort(
                        StoreError::Failed(Failure::Corrupt(format!(
                            "outbox event {}: {err}",
                            super::read_u64(key).unwrap_or(0)
                        ))),
                    ))
                }
            }
        }
        if let Some(text) = text {
            let mut new = at.to_vec();
            new.extend_from_slice(&text);
            tx.tree(OUTBOX).put(key.as_slice(), new)?;
            changed += 1;
        }
    }
    tx.tree(META).put(COMPACTION_OWED, &[1u8][..])?;
    Ok(changed)
}

/// Whether an erasure left old versions in sled's files (see the module's doc).
pub(crate) fn compaction_owed(db: &sled::Db) -> Result<bool, StoreError> {
    Ok(db
        .open_tree(super::CORE_TREES[META])?
        .contains_key(COMPACTION_OWED)?)
}
