//! Customers merged at head office (the same person enrolled twice, e.g. offline in two
//! stores): [`apply_merge`] moves the local `from` account into `into` inside the changes
//! page's transaction (`sync_state`).
//!
//! What moves: every card of `from` (the `cards` index then names `into`), the account
//! (`ledger::Account::absorb`: confirmed balance, unconfirmed entries, pending vesting, totals),
//! the profile fields `into` lacks, and the ids merged into `from` before. `from` keeps a
//! tombstone record (`merged_into`, nothing personal, no points) so that every lookup of the old
//! id (a receipt's customer on a return, a lane that identified her before the merge, a
//! voucher bound to her) resolves to `into`; `into` lists it in `merged_from`.
//!
//! Journal: one `merge` entry (`customer_id` = into, `reference` = from, 0 points, `seq` 0: it
//! has no outbox event, head office made the merge) chained like every entry, so `verify`
//! replays it: the entries of `from` before it count for `into` after it.
//!
//! Idempotent: a `from` that is already a tombstone, or unknown here, changes nothing.

use super::journal;
use super::records::{CustomerRec, JournalBody};
use super::{Tx, TxResult, CARDS, JOURNAL, META};
use jiff::Timestamp;
use loyalty_core::customer::check_id;

/// The journal entry kind of a merge (not a points movement: not a `ledger::EntryKind`).
pub(crate) const MERGE_KIND: &str = "merge";

/// What one merge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MergeOutcome {
    /// The account moved now.
    Moved,
    /// `from` was merged before (a page delivered again) or is unknown here: nothing to do.
    Nothing,
    /// Invalid ids, `from` equal to `into`, or a merge that would make a cycle: skipped.
    Refused,
}

/// Moves the local account of `from` into `into` (see the module documentation).
pub(crate) fn apply_merge(
    tx: &Tx<'_>,
    from: &str,
    into: &str,
    now: Timestamp,
) -> TxResult<MergeOutcome> {
    if check_id(from).is_err() || check_id(into).is_err() || from == into {
        return Ok(MergeOutcome::Refused);
    }
    let Some(old) = tx.customer_rec_exact(from)? else {
        return Ok(MergeOutcome::Nothing);
    };
    if old.merged_into.is_some() {
        return Ok(MergeOutcome::Nothing);
    }
    // The survivor as it is here (itself possibly merged on since), or a new record for it.
    let mut survivor = match tx.customer_rec(into)? {
        Some(rec) => rec,
        None => CustomerRec::bare(into.to_string(), old.enrolled_at),
    };
    if survivor.id == old.id || survivor.merged_from.iter().any(|id| id == from) {
        return Ok(MergeOutcome::Refused);
    }
    for card in old.all_cards() {
        tx.tree(CARDS)
            .put(card.as_bytes(), survivor.id.as_bytes())?;
        if !survivor.all_cards().any(|c| c == card) {
            if survivor.card.is_none() {
                survivor.card = Some(card.clone());
            } else {
                survivor.more_cards.push(card.clone());
            }
        }
    }
    let mut account = survivor.account.to_account();
    account.absorb(&old.account.to_account());
    survivor.account = super::records::AccountRec::from_account(&account);
    survivor.has_confirmed |= old.has_confirmed;
    survivor.enrolled_at = survivor.enrolled_at.min(old.enrolled_at);
    if survivor.name.is_none() {
        survivor.name = old.name.clone();
    }
    if survivor.tier.is_none() {
        survivor.tier = old.tier.clone();
    }
    if survivor.consent.is_none() {
        survivor.consent = old.consent;
    }
    // The survivor keeps her own contact hashes, else takes the merged one's; the index
    // follows (no entry may outlive an erasure of the survivor).
    for key in old.contact_keys() {
        tx.tree(CARDS).remove(key)?;
    }
    if survivor.phone_hash.is_none() {
        survivor.phone_hash = old.phone_hash.clone();
    }
    if survivor.email_hash.is_none() {
        survivor.email_hash = old.email_hash.clone();
    }
    for key in survivor.contact_keys() {
        tx.tree(CARDS).put(key, survivor.id.as_bytes())?;
    }
    survivor.merged_from.push(old.id.clone());
    survivor.merged_from.extend(old.merged_from.iter().cloned());
    // The ids merged into `from` before now resolve through it; point them at the survivor.
    for earlier in &old.merged_from {
        if let Some(mut tomb) = tx.customer_rec_exact(earlier)? {
            tomb.merged_into = Some(survivor.id.clone());
            tx.put_customer_rec(&tomb)?;
        }
    }
    let tombstone = CustomerRec {
        merged_into: Some(survivor.id.clone()),
        ..CustomerRec::bare(old.id.clone(), old.enrolled_at)
    };
    tx.put_customer_rec(&tombstone)?;
    tx.put_customer_rec(&survivor)?;
    let (index, prev) = journal::head(tx.tree(META))?;
    let body = JournalBody {
        index: index + 1,
        seq: 0,
        customer_id: survivor.id.clone(),
        kind: MERGE_KIND.into(),
        points: 0,
        at: now,
        receipt_id: None,
        cause_receipt_id: None,
        reference: Some(old.id.clone()),
        reason: None,
        vests_at: None,
        owed: None,
    };
    journal::append(tx.tree(META), tx.tree(JOURNAL), &body, &prev)?;
    Ok(MergeOutcome::Moved)
}
