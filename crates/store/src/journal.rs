//! The tamper-evident ledger journal: every entry stores the SHA-256 of the previous one, and
//! `verify` replays the whole journal, recomputing hashes and every customer's account.
//!
//! Value layout of `journal/{index:u64 BE}`: `prev_hash[32] ++ hash[32] ++ body JSON`, where
//! `hash = SHA-256(prev_hash ++ body JSON bytes)`; the first entry's `prev_hash` is 32 zero
//! bytes. `meta/journal_head` holds `index:u64 BE ++ hash[32]` of the last entry, so deleting
//! the newest entries is detected too.

use super::records::{CustomerRec, JournalBody, ReceiptRec};
use super::{corrupt, meta_key, read_u64, tx_corrupt, u64_be, StoreError, TxResult};
use loyalty_core::ledger::{Entry, EntryKind};
use sha2::{Digest, Sha256};
use sled::transaction::TransactionalTree;
use std::collections::BTreeMap;
use std::fmt;

pub(crate) type Hash = [u8; 32];

/// The head of the chain: the last index (0: empty) and its hash.
pub(crate) fn head(meta: &TransactionalTree) -> TxResult<(u64, Hash)> {
    match meta.get(meta_key::JOURNAL_HEAD)? {
        None => Ok((0, [0; 32])),
        Some(bytes) => match decode_head(&bytes) {
            Some(head) => Ok(head),
            None => corrupt("meta journal_head"),
        },
    }
}

fn decode_head(bytes: &[u8]) -> Option<(u64, Hash)> {
    let index = read_u64(bytes)?;
    let hash: Hash = bytes.get(8..40)?.try_into().ok()?;
    Some((index, hash))
}

fn hash_of(prev: &Hash, body: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(body);
    hasher.finalize().into()
}

/// Appends `body` (whose `index` is head + 1) after `prev`; updates the head. Returns its hash.
pub(crate) fn append(
    meta: &TransactionalTree,
    journal: &TransactionalTree,
    body: &JournalBody,
    prev: &Hash,
) -> TxResult<Hash> {
    let bytes = serde_json::to_vec(body).map_err(|e| tx_corrupt(e.to_string()))?;
    let hash = hash_of(prev, &bytes);
    let mut value = Vec::with_capacity(64 + bytes.len());
    value.extend_from_slice(prev);
    value.extend_from_slice(&hash);
    value.extend_from_slice(&bytes);
    journal.put(&u64_be(body.index)[..], value)?;
    let mut head = u64_be(body.index).to_vec();
    head.extend_from_slice(&hash);
    meta.put(meta_key::JOURNAL_HEAD, head)?;
    Ok(hash)
}

/// Splits a stored entry into `(prev_hash, hash, body)`.
pub(crate) fn decode(value: &[u8]) -> Option<(Hash, Hash, JournalBody)> {
    let prev: Hash = value.get(..32)?.try_into().ok()?;
    let hash: Hash = value.get(32..64)?.try_into().ok()?;
    let body = serde_json::from_slice(value.get(64..)?).ok()?;
    Some((prev, hash, body))
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Journal entries read.
    pub entries: u64,
    /// Customers checked.
    pub customers: u64,
    /// Receipts checked.
    pub receipts: u64,
    /// Sum of all local ledger entries.
    pub points_total: i64,
    /// Every inconsistency found (empty: consistent).
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "journal: {} entries, {} customers, {} receipts, {} points in local entries",
            self.entries, self.customers, self.receipts, self.points_total
        )?;
        if self.problems.is_empty() {
            write!(
                f,
                "consistent: hash chain intact, every balance equals the replay"
            )
        } else {
            writeln!(f, "INCONSISTENT: {} problem(s):", self.problems.len())?;
            for (i, problem) in self.problems.iter().enumerate() {
                if i == 50 {
                    writeln!(f, "  ... and {} more", self.problems.len() - 50)?;
                    break;
                }
                writeln!(f, "  {problem}")?;
            }
            Ok(())
        }
    }
}

#[derive(Default)]
struct Replayed {
    total: i64,
    count: u64,
    entries: Vec<Entry>,
    /// Points returns still owe: owed by floored clawbacks less what was collected.
    owed: i64,
}

/// Follows merges replayed so far (bounded, like the lookups).
fn resolve(merged: &BTreeMap<String, String>, id: &str) -> String {
    let mut id = id.to_string();
    for _ in 0..=super::MAX_MERGE_HOPS {
        match merged.get(&id) {
            Some(into) => id = into.clone(),
            None => break,
        }
    }
    id
}

/// Replays the journal and checks it against customers and receipts.
pub(crate) fn verify(
    meta: &sled::Tree,
    journal: &sled::Tree,
    customers: &sled::Tree,
    receipts: &sled::Tree,
) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    let mut expected_index = 1u64;
    let mut last_hash: Hash = [0; 32];
    let mut replayed: BTreeMap<String, Replayed> = BTreeMap::new();
    // Per sale: (earned, clawed, earn entries, when its last entry other than a collection of
    // owed points was made: unix seconds)
    let mut per_sale: BTreeMap<String, (i64, i64, u32, i64)> = BTreeMap::new();
    // Customers merged away (from → into), as replayed so far.
    let mut merged: BTreeMap<String, String> = BTreeMap::new();
    for item in journal.iter() {
        let (key, value) = item?;
        report.entries += 1;
        let Some(index) = read_u64(&key) else {
            report.problems.push("journal key is not an index".into());
            continue;
        };
        if index != expected_index {
            report.problems.push(format!(
                "journal entries {expected_index}..{} are missing (deleted?)",
                index.saturating_sub(1)
            ));
        }
        expected_index = index + 1;
        let Some((prev, hash, body)) = decode(&value) else {
            report
                .problems
                .push(format!("journal entry {index} cannot be decoded (edited?)"));
            last_hash = [0xff; 32];
            continue;
        };
        if prev != last_hash {
            report.problems.push(format!(
                "journal entry {index}: previous-hash link broken (an entry before it was edited or deleted)"
            ));
        }
        let recomputed = hash_of(&prev, &value[64..]);
        if recomputed != hash {
            report.problems.push(format!(
                "journal entry {index}: hash mismatch (entry edited)"
            ));
        }
        if body.index != index {
            report.problems.push(format!(
                "journal entry {index}: body says index {} (moved?)",
                body.index
            ));
        }
        last_hash = hash;
        if body.kind == super::merge::MERGE_KIND {
            // Customers merged at head office: what `from` had counts for `into` from now on.
            if let Some(from) = &body.reference {
                let into = resolve(&merged, &body.customer_id);
                if let Some(moved) = replayed.remove(from) {
                    let r = replayed.entry(into.clone()).or_default();
                    r.total += moved.total;
                    r.owed += moved.owed;
                    r.count += moved.count;
                    r.entries.extend(moved.entries);
                    r.entries.sort_by_key(|e| e.seq);
                }
                merged.insert(from.clone(), into);
            }
            continue;
        }
        let Some(mut entry) = body.to_entry() else {
            report.problems.push(format!(
                "journal entry {index}: unknown kind '{}'",
                body.kind
            ));
            continue;
        };
        // A clawback floored at zero counts its owed points as clawed back; the later
        // collections of them (clawbacks naming the paying sale in `reference`) pay that debt.
        let collection = entry.kind == EntryKind::Clawback && body.reference.is_some();
        let owed = body.owed.unwrap_or(0);
        if let Some(receipt_id) = &entry.receipt_id {
            let sale = per_sale.entry(receipt_id.clone()).or_default();
            if !collection {
                sale.3 = sale.3.max(body.at.as_second());
            }
            match entry.kind {
                EntryKind::Earn => {
                    sale.0 += entry.points;
                    sale.2 += 1;
                }
                EntryKind::Clawback if !collection => sale.1 += owed - entry.points,
                _ => {}
            }
        }
        report.points_total += entry.points;
        entry.customer_id = resolve(&merged, &entry.customer_id);
        let r = replayed.entry(entry.customer_id.clone()).or_default();
        r.owed += owed;
        if collection {
            r.owed += entry.points;
        }
        r.total += entry.points;
        r.count += 1;
        r.entries.push(entry);
    }
    match meta.get(meta_key::JOURNAL_HEAD)? {
        None if report.entries > 0 => report
            .problems
            .push("journal head is missing from meta".into()),
        None => {}
        Some(bytes) => match decode_head(&bytes) {
            None => report
                .problems
                .push("journal head cannot be decoded".into()),
            Some((index, hash)) => {
                if index != expected_index - 1 {
                    report.problems.push(format!(
                        "journal head says {index} entries, the journal ends at {} (newest entries deleted?)",
                        expected_index - 1
                    ));
                } else if hash != last_hash {
                    report
                        .problems
                        .push("journal head hash differs from the last entry (edited?)".into());
                }
            }
        },
    }
    // Customers: stored account vs replay.
    for item in customers.iter() {
        let (key, value) = item?;
        report.customers += 1;
        let id = String::from_utf8_lossy(&key).to_string();
        let rec: CustomerRec = match serde_json::from_slice(&value) {
            Ok(rec) => rec,
            Err(err) => {
                report
                    .problems
                    .push(format!("customer {id} cannot be decoded: {err}"));
                continue;
            }
        };
        let r = replayed.remove(&id).unwrap_or_default();
        let account = &rec.account;
        if account.local_total != r.total || account.entries != r.count {
            report.problems.push(format!(
                "customer {id}: stored {} points in {} entries, journal replay gives {} in {}",
                account.local_total, account.entries, r.total, r.count
            ));
        }
        let expected: Vec<(u64, i64)> = r
            .entries
            .iter()
            .filter(|e| e.seq > account.confirmed_through)
            .map(|e| (e.seq, e.points))
            .collect();
        let owed: i64 = account.owed.iter().map(|(_, _, points)| points).sum();
        if owed != r.owed {
            report.problems.push(format!(
                "customer {id}: stored {owed} points owed by returns, journal replay gives {}",
                r.owed
            ));
        }
        if account.unconfirmed != expected {
            report.problems.push(format!(
                "customer {id}: unconfirmed entries differ from the journal replay (balance would be {} instead of {})",
                account.confirmed_points + account.unconfirmed.iter().map(|(_, p)| p).sum::<i64>(),
                account.confirmed_points + expected.iter().map(|(_, p)| p).sum::<i64>(),
            ));
        }
    }
    for id in replayed.keys() {
        report
            .problems
            .push(format!("journal has entries of unknown customer {id}"));
    }
    // Receipts: what they say they earned and lost vs the journal.
    for item in receipts.iter() {
        let (key, value) = item?;
        report.receipts += 1;
        let id = String::from_utf8_lossy(&key).to_string();
        let rec: ReceiptRec = match serde_json::from_slice(&value) {
            Ok(rec) => rec,
            Err(err) => {
                report
                    .problems
                    .push(format!("receipt {id} cannot be decoded: {err}"));
                continue;
            }
        };
        if rec.data.original_receipt_id.is_some() || rec.customer_id.is_none() {
            continue;
        }
        let (earned, clawed, earns, _) = per_sale.remove(&id).unwrap_or_default();
        if earns > 1 {
            report
                .problems
                .push(format!("receipt {id} earned points {earns} times"));
        }
        if earned != rec.returns.original_points || clawed != rec.returns.clawed {
            report.problems.push(format!(
                "receipt {id}: stored earned {} / clawed back {}, journal says {earned} / {clawed}",
                rec.returns.original_points, rec.returns.clawed
            ));
        }
    }
    // Receipts pruned by retention (`storage.receipt_retention_days`) are gone on purpose.
    let pruned_before = crate::retention::pruned_before(meta)?;
    for (id, (earned, clawed, _, last_at)) in per_sale {
        if pruned_before.is_some_and(|before| last_at < before) {
            continue;
        }
        if earned != 0 || clawed != 0 {
            report.problems.push(format!(
                "journal moves points for receipt {id} which is not stored"
            ));
        }
    }
    Ok(report)
}
