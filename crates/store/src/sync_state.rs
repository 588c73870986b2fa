//! What the CRM sync keeps in sled: the changes-feed cursor, and the application of one changes
//! page (merges of customers (`merge`), customers with their CRM-confirmed balances, cards and
//! consent, point adjustments made at head office, erasures with their `customer_erased`
//! confirmations, revoked vouchers, voucher keys, accepted earning rules) **in the same
//! transaction as its cursor**. Also a raw, parse-free
//! read of the outbox for the uploader. Owned by the sync engineer; the types here are plain
//! data (the CRM's JSON stays in `sync`).
//!
//! Trees (see `docs/arch/sync.md`): `sync/state` (`cursor`, `rules`, `rules_rejection`),
//! `sync/revoked_vouchers` (voucher id → revocation time, seconds BE), `sync/keys` (key id →
//! JSON of [`CrmKey`]).
//!
//! Balance rebase: a customer's CRM balance includes this store's events up to
//! `includes_store_seq`; `ledger::Account::confirm` keeps exactly the local entries with a
//! higher sequence number on top and ignores a confirmation older than the one held, so any
//! interleaving of uploads and pulls neither double counts nor loses an entry.

use super::events::EventType;
use super::merge::{apply_merge, MergeOutcome};
use super::points::points_op_in;
use super::records::{AccountRec, ConsentRec, CustomerRec};
use super::tx::NewEntry;
use super::{meta_key, read_u64, Store, StoreError, Tx, TxResult, CARDS, META, OUTBOX};
use crate::Failure;
use jiff::Timestamp;
use loyalty_core::customer::{check_id, Customer};
use loyalty_core::ledger::{self, Confirmed, EntryKind};
use loyalty_protocol::crm::events::CustomerErasedEvent;
use serde::{Deserialize, Serialize};

const STATE_TREE: &str = "sync/state";
const REVOKED_TREE: &str = "sync/revoked_vouchers";
const KEYS_TREE: &str = "sync/keys";
const CURSOR: &[u8] = b"cursor";
const RULES: &[u8] = b"rules";
const RULES_REJECTION: &[u8] = b"rules_rejection";

/// A customer as the CRM sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmCustomer {
    /// Customer id.
    pub customer_id: String,
    /// Points at the CRM.
    pub balance: i64,
    /// This store's highest sequence number included in `balance`.
    pub includes_store_seq: u64,
    /// Tier, if any.
    pub tier: Option<String>,
    /// Every card of the customer, as the CRM lists them (a card not listed is no longer
    /// hers); empty keeps the local ones.
    pub cards: Vec<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Consent flags; `None` (unknown) keeps what is stored.
    pub consent: Option<CrmConsent>,
    /// Hex SHA-256 of the normalised phone number; `None` keeps what is stored.
    pub phone_hash: Option<String>,
    /// Hex SHA-256 of the normalised e-mail address; `None` keeps what is stored.
    pub email_hash: Option<String>,
    /// Segment tags (replace the stored ones).
    pub tags: Vec<String>,
    /// Birthday `MM-DD`; `None` keeps what is stored.
    pub birthday: Option<String>,
}

/// A customer's consent flags as the CRM sent them (stored with the customer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrmConsent {
    /// Personal offers and messages.
    pub marketing: bool,
    /// Use of the purchase history for personalisation.
    pub profiling: bool,
}

/// Two customers merged at head office: the local `from` account moves into `into`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmMerge {
    /// The id that no longer exists.
    pub from: String,
    /// The surviving id.
    pub into: String,
}

/// A point adjustment made at head office (goodwill, correction, migration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmAdjustment {
    /// The CRM's id of the adjustment; the store applies each reference once.
    pub reference: String,
    /// Customer.
    pub customer_id: String,
    /// Signed points (non-zero).
    pub points: i64,
    /// Why (journalled with the entry).
    pub reason: String,
}

/// A voucher verification key from the CRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmKey {
    /// Key id.
    pub key_id: String,
    /// Algorithm (`ed25519`).
    pub algorithm: String,
    /// Public key, standard base64.
    pub public_key: String,
    /// Signer (`head-office` or a store id).
    pub issuer: Option<String>,
    /// Vouchers signed with a revoked key are refused.
    pub revoked: bool,
}

/// One changes page, ready to apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// The cursor to store with it.
    pub cursor: String,
    /// When it is applied (enrolment time of customers new to this store).
    pub now: Timestamp,
    /// Customers merged at head office (applied first, so the page's `customers` rebase the
    /// survivors).
    pub merged: Vec<CrmMerge>,
    /// Customers to create or update.
    pub customers: Vec<CrmCustomer>,
    /// Point adjustments (after the customers above, before the erasures below); each becomes
    /// a journal entry with its `ledger` event once per reference, like
    /// [`Store::crm_adjustment`].
    pub adjustments: Vec<CrmAdjustment>,
    /// Customers whose personal data must be erased (after the updates above); each is
    /// confirmed to the CRM with a `customer_erased` event in the same transaction.
    pub erased: Vec<String>,
    /// Voucher ids to refuse from now on.
    pub revoked_vouchers: Vec<String>,
    /// Keys to add or replace.
    pub keys: Vec<CrmKey>,
    /// Validated rules to store (JSON text), if the page carried acceptable ones.
    pub rules_json: Option<String>,
    /// Why the page's rules were refused, if they were.
    pub rules_rejection: Option<String>,
    /// Offers new, replaced or withdrawn (`store::offers`).
    pub offers: Vec<super::offers::CrmOfferChange>,
    /// Customers' activations of offers.
    pub clips: Vec<super::offers::CrmClip>,
}

/// What applying a page did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyReport {
    /// Accounts moved by merges now.
    pub merges: u64,
    /// Merges skipped: already applied, or `from` unknown here.
    pub merges_without_effect: u64,
    /// Merges refused (invalid ids, `from` = `into`, a cycle).
    pub refused_merges: u64,
    /// Customer entries skipped because their id was merged away.
    pub merged_away_customers: u64,
    /// Customers created or updated.
    pub customers: u64,
    /// Balance confirmations ignored because a newer one was held.
    pub stale_balances: u64,
    /// Customers skipped because an id or card was invalid.
    pub refused_customers: u64,
    /// Confirmations that include sequence numbers beyond the local outbox (data loss alarm).
    pub beyond_outbox: u64,
    /// Adjustments journalled now.
    pub adjustments: u64,
    /// Adjustments whose reference was already applied (a page delivered again).
    pub duplicate_adjustments: u64,
    /// Adjustments skipped: unknown customer, invalid id or reference, zero or out-of-range
    /// points.
    pub refused_adjustments: u64,
    /// Customers erased (that existed locally).
    pub erased: u64,
    /// `customer_erased` confirmations written (one per valid id of the page's `erased`).
    pub erasures_confirmed: u64,
    /// Vouchers revoked.
    pub revoked_vouchers: u64,
    /// Keys stored.
    pub keys: u64,
    /// Offers and clips.
    pub offers: super::offers::OffersReport,
}

/// One outbox event, undecoded: sequence number, creation time and the wire JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOutboxEvent {
    /// Sequence number.
    pub seq: u64,
    /// Creation time.
    pub at: Timestamp,
    /// `{"seq","id","type","at","payload"}` as stored.
    pub json: String,
}

impl Store {
    fn sync_trees(&self) -> Result<[sled::Tree; 3], StoreError> {
        Ok([
            self.db().open_tree(STATE_TREE)?,
            self.db().open_tree(REVOKED_TREE)?,
            self.db().open_tree(KEYS_TREE)?,
        ])
    }

    /// The changes-feed cursor stored with the last applied page (`None` before the first).
    pub fn sync_cursor(&self) -> Result<Option<String>, StoreError> {
        let [state, _, _] = self.sync_trees()?;
        Ok(state
            .get(CURSOR)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The last earning rules from the CRM that passed validation (JSON), if any.
    pub fn accepted_rules_json(&self) -> Result<Option<String>, StoreError> {
        let [state, _, _] = self.sync_trees()?;
        Ok(state
            .get(RULES)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Why the CRM's last rule set was refused, if it was (cleared when one is accepted).
    pub fn rules_rejection(&self) -> Result<Option<String>, StoreError> {
        let [state, _, _] = self.sync_trees()?;
        Ok(state
            .get(RULES_REJECTION)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Whether the CRM revoked this voucher.
    pub fn is_voucher_revoked(&self, voucher_id: &str) -> Result<bool, StoreError> {
        let [_, revoked, _] = self.sync_trees()?;
        Ok(revoked.contains_key(voucher_id.as_bytes())?)
    }

    /// Voucher keys distributed by the CRM.
    pub fn crm_keys(&self) -> Result<Vec<CrmKey>, StoreError> {
        let [_, _, keys] = self.sync_trees()?;
        let mut out = Vec::new();
        for item in keys.iter() {
            let (id, value) = item?;
            let key = serde_json::from_slice(&value).map_err(|e| {
                StoreError::Failed(Failure::Corrupt(format!(
                    "sync key {}: {e}",
                    String::from_utf8_lossy(&id)
                )))
            })?;
            out.push(key);
        }
        Ok(out)
    }

    /// `(last_seq, acked_through)` of the outbox in O(1) (`outbox_stats` also counts the
    /// stored events, which walks the whole tree).
    pub fn outbox_positions(&self) -> Result<(u64, u64), StoreError> {
        let meta = self.tree(META);
        let get = |key: &[u8]| -> Result<u64, StoreError> {
            Ok(meta.get(key)?.as_deref().and_then(read_u64).unwrap_or(0))
        };
        let last_seq = get(meta_key::NEXT_SEQ)?.max(1) - 1;
        Ok((last_seq, get(meta_key::ACKED)?))
    }

    /// Up to `max` outbox events with `seq > after`, in order, without decoding their JSON.
    pub fn outbox_raw_after(
        &self,
        after: u64,
        max: usize,
    ) -> Result<Vec<RawOutboxEvent>, StoreError> {
        let mut out = Vec::with_capacity(max.min(10_000));
        let start = after.saturating_add(1).to_be_bytes();
        for item in self.tree(OUTBOX).range(start..).take(max) {
            let (key, value) = item?;
            let bad = || StoreError::Failed(Failure::Corrupt("outbox event".into()));
            let seq = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| bad())?);
            let seconds = i64::from_be_bytes(
                value
                    .get(..8)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            );
            let json = std::str::from_utf8(&value[8..]).map_err(|_| bad())?;
            out.push(RawOutboxEvent {
                seq,
                at: Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH),
                json: json.to_string(),
            });
        }
        Ok(out)
    }

    /// Applies one changes page and stores its cursor, in one transaction; returns once durable.
    /// Invalid customer ids or cards skip that customer (counted), never the page.
    pub fn apply_changes(&self, changes: &ChangeSet) -> Result<ApplyReport, StoreError> {
        let [state, revoked, keys] = self.sync_trees()?;
        // Revocations also go where voucher checks look, in the same transaction.
        let voucher_revoked = self.db().open_tree(super::vouchers::REVOKED)?;
        let offers_tree = self.offers_tree().clone();
        let (last_seq, _) = self.outbox_positions()?;
        let key_values: Vec<(String, Vec<u8>)> = changes
            .keys
            .iter()
            .map(|k| {
                serde_json::to_vec(k)
                    .map(|v| (k.key_id.clone(), v))
                    .map_err(|e| StoreError::Failed(Failure::Corrupt(e.to_string())))
            })
            .collect::<Result<_, _>>()?;
        let now_bytes = changes.now.as_second().to_be_bytes();
        // The receipts and events that mention the people the page erases (read before: sled
        // cannot iterate inside a transaction).
        let valid_erasures: Vec<String> = changes
            .erased
            .iter()
            .filter(|id| check_id(id).is_ok())
            .cloned()
            .collect();
        let erasing = self.erasure_scan(&valid_erasures)?;
        let trees = [&state, &revoked, &keys, &voucher_revoked, &offers_tree];
        let report = self.transact(&trees, |tx| {
            let mut report = ApplyReport::default();
            for merge in &changes.merged {
                match apply_merge(tx, &merge.from, &merge.into, changes.now)? {
                    MergeOutcome::Moved => report.merges += 1,
                    MergeOutcome::Nothing => report.merges_without_effect += 1,
                    MergeOutcome::Refused => report.refused_merges += 1,
                }
            }
            for customer in &changes.customers {
                let valid = check_id(&customer.customer_id).is_ok()
                    && customer.cards.iter().all(|c| check_id(c).is_ok());
                if !valid {
                    report.refused_customers += 1;
                    continue;
                }
                if customer.includes_store_seq > last_seq {
                    report.beyond_outbox += 1;
                }
                match apply_customer(tx, customer, changes.now)? {
                    None => report.merged_away_customers += 1,
                    Some(taken) => {
                        if !taken {
                            report.stale_balances += 1;
                        }
                        report.customers += 1;
                    }
                }
            }
            for adjustment in &changes.adjustments {
                match apply_adjustment(tx, adjustment, changes.now)? {
                    None => report.refused_adjustments += 1,
                    Some(true) => report.duplicate_adjustments += 1,
                    Some(false) => report.adjustments += 1,
                }
            }
            for customer_id in &changes.erased {
                if check_id(customer_id).is_err() {
                    continue;
                }
                if erase(tx, customer_id)? {
                    report.erased += 1;
                }
                // Confirmed to head office whether or not this store knew her.
                tx.append_event(
                    EventType::CustomerErased,
                    changes.now,
                    &CustomerErasedEvent { customer_id },
                )?;
                report.erasures_confirmed += 1;
            }
            // Her card and name also leave the stored receipts and the outbox.
            super::erasure::scrub_in_tx(tx, &erasing)?;
            for voucher_id in &changes.revoked_vouchers {
                tx.extra(1).put(voucher_id.as_bytes(), &now_bytes[..])?;
                if let Some(id) = loyalty_core::voucher::VoucherId::parse(voucher_id) {
                    tx.extra(3).put(&id.0[..], &now_bytes[..])?;
                }
                report.revoked_vouchers += 1;
            }
            for (key_id, value) in &key_values {
                tx.extra(2).put(key_id.as_bytes(), value.as_slice())?;
                report.keys += 1;
            }
            if let Some(rules) = &changes.rules_json {
                tx.extra(0).put(RULES, rules.as_bytes())?;
                tx.extra(0).remove(RULES_REJECTION)?;
            }
            if let Some(reason) = &changes.rules_rejection {
                tx.extra(0).put(RULES_REJECTION, reason.as_bytes())?;
            }
            report.offers = super::offers::apply_page(
                tx.extra(4),
                &changes.offers,
                &changes.clips,
                changes.now,
            )?;
            tx.extra(0).put(CURSOR, changes.cursor.as_bytes())?;
            Ok(report)
        })?;
        // What a lane wrote for them between the scan and the commit.
        self.scrub_erased_again(erasing)?;
        Ok(report)
    }
}

impl Store {
    /// Takes a customer the CRM named as the holder of `card` (a by-card lookup for a card
    /// this store did not know): creates her with the CRM's id, cards, profile and balance, in
    /// one durable transaction without events (head office knows her). If the card became
    /// known here meanwhile (another lane enrolled it), that holder is returned unchanged.
    pub fn adopt_crm_customer(
        &self,
        card: &str,
        customer: &CrmCustomer,
        now: Timestamp,
    ) -> Result<Customer, StoreError> {
        check_id(card)?;
        check_id(&customer.customer_id)?;
        for c in &customer.cards {
            check_id(c)?;
        }
        let mut customer = customer.clone();
        if !customer.cards.iter().any(|c| c == card) {
            // The CRM answered for this card: it is hers whatever the list says.
            customer.cards.push(card.to_string());
        }
        self.transact(&[], |tx| {
            if let Some(holder) = tx.tree(CARDS).get(card.as_bytes())? {
                let holder = String::from_utf8_lossy(&holder).to_string();
                if let Some(rec) = tx.customer_rec(&holder)? {
                    return Ok(rec.to_customer());
                }
            }
            apply_customer(tx, &customer, now)?;
            match tx.customer_rec(&customer.customer_id)? {
                Some(rec) => Ok(rec.to_customer()),
                None => crate::corrupt(format!("customer {} not stored", customer.customer_id)),
            }
        })
    }
}

/// Creates or updates a customer and rebases its balance; `Some(false)` when the confirmation
/// was older than the one held (the profile is still updated), `None` when the id was merged
/// away (the entry is skipped: the survivor's entry carries her).
fn apply_customer(tx: &Tx<'_>, customer: &CrmCustomer, now: Timestamp) -> TxResult<Option<bool>> {
    let old = tx.customer_rec_exact(&customer.customer_id)?;
    if old.as_ref().is_some_and(|o| o.merged_into.is_some()) {
        return Ok(None);
    }
    let (card, more_cards) = match customer.cards.split_first() {
        Some((first, rest)) => (Some(first.clone()), rest.to_vec()),
        None => old
            .as_ref()
            .map(|o| (o.card.clone(), o.more_cards.clone()))
            .unwrap_or_default(),
    };
    let listed = |c: &String| card.as_ref() == Some(c) || more_cards.contains(c);
    for c in card.iter().chain(more_cards.iter()) {
        let Some(holder) = tx.tree(CARDS).get(c.as_bytes())? else {
            continue;
        };
        if holder != customer.customer_id.as_bytes() {
            // The CRM is the authority on cards: the card moves.
            let holder = String::from_utf8_lossy(&holder).to_string();
            if let Some(mut other) = tx.customer_rec_exact(&holder)? {
                other.more_cards.retain(|m| m != c);
                if other.card.as_ref() == Some(c) {
                    other.card = None;
                    if !other.more_cards.is_empty() {
                        other.card = Some(other.more_cards.remove(0));
                    }
                }
                tx.put_customer_rec(&other)?;
            }
        }
    }
    if let Some(old) = &old {
        for old_card in old.all_cards() {
            if !listed(old_card) {
                tx.tree(CARDS).remove(old_card.as_bytes())?;
            }
        }
    }
    let mut account = old
        .as_ref()
        .map(|o| o.account.to_account())
        .unwrap_or_default();
    let taken = account.confirm(Confirmed {
        points: customer.balance,
        through_seq: customer.includes_store_seq,
    });
    let base = old
        .clone()
        .unwrap_or_else(|| CustomerRec::bare(customer.customer_id.clone(), now));
    let rec = CustomerRec {
        card: card.clone(),
        more_cards: more_cards.clone(),
        name: customer.display_name.clone(),
        tier: customer.tier.clone(),
        has_confirmed: taken || base.has_confirmed,
        account: AccountRec::from_account(&account),
        consent: customer
            .consent
            .map(|c| ConsentRec {
                marketing: c.marketing,
                profiling: c.profiling,
            })
            .or(base.consent),
        phone_hash: contact_hash(&customer.phone_hash).or(base.phone_hash.clone()),
        email_hash: contact_hash(&customer.email_hash).or(base.email_hash.clone()),
        tags: customer.tags.clone(),
        birthday: customer.birthday.clone().or(base.birthday.clone()),
        ..base
    };
    if let Some(old) = &old {
        for key in old.contact_keys() {
            tx.tree(CARDS).remove(key)?;
        }
    }
    for key in rec.contact_keys() {
        tx.tree(CARDS).put(key, customer.customer_id.as_bytes())?;
    }
    tx.put_customer_rec(&rec)?;
    for c in card.iter().chain(more_cards.iter()) {
        tx.tree(CARDS)
            .put(c.as_bytes(), customer.customer_id.as_bytes())?;
    }
    Ok(Some(taken))
}

/// A contact hash as sent, if it has the shape of one (a malformed value is ignored).
fn contact_hash(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::to_ascii_lowercase)
        .filter(|h| loyalty_core::contact::is_contact_hash(h))
}

/// Journals one CRM adjustment unless its reference was applied before. `None` when it is
/// refused (unknown customer, invalid id or reference, zero or out-of-range points), else
/// whether it was a duplicate.
fn apply_adjustment(
    tx: &Tx<'_>,
    adjustment: &CrmAdjustment,
    now: Timestamp,
) -> TxResult<Option<bool>> {
    let valid = check_id(&adjustment.customer_id).is_ok()
        && check_id(&adjustment.reference).is_ok()
        && ledger::check_adjustment(adjustment.points).is_ok();
    if !valid || tx.customer_rec(&adjustment.customer_id)?.is_none() {
        return Ok(None);
    }
    let new = NewEntry {
        customer_id: &adjustment.customer_id,
        kind: EntryKind::Adjustment,
        points: adjustment.points,
        at: now,
        receipt_id: None,
        cause_receipt_id: None,
        reference: Some(&adjustment.reference),
        reason: Some(&adjustment.reason),
        vests_at: None,
    };
    let outcome = points_op_in(tx, "adjust", &adjustment.reference, &new, now)?;
    Ok(Some(outcome.duplicate))
}

/// Erases a customer's personal data (every card and its index entry, name, consent, contact
/// hashes and their index entries; her receipts and outbox events: `store/erasure.rs`); the
/// pseudonymous account and journal stay. An id merged away erases the survivor (the same
/// person). False when the customer is unknown here.
pub(crate) fn erase(tx: &Tx<'_>, customer_id: &str) -> TxResult<bool> {
    let Some(mut rec) = tx.customer_rec(customer_id)? else {
        return Ok(false);
    };
    for card in rec.all_cards() {
        tx.tree(CARDS).remove(card.as_bytes())?;
    }
    rec.card = None;
    for key in rec.contact_keys() {
        tx.tree(CARDS).remove(key)?;
    }
    rec.more_cards.clear();
    rec.name = None;
    rec.consent = None;
    rec.phone_hash = None;
    rec.email_hash = None;
    rec.tags.clear();
    rec.birthday = None;
    tx.put_customer_rec(&rec)?;
    Ok(true)
}
