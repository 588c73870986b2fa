//! Voucher state in sled: vouchers issued by this store, reservations by lanes, redemptions
//! and head office's revocations, each written atomically with its outbox event
//! (`voucher_issued`, `voucher_redeemed`) and its ledger entry (the points converted), through
//! [`Store::transact`]; durable before any function here returns. The decisions themselves are
//! the pure `voucher::check`; this module only reads the state they need and records their
//! outcome.
//!
//! Submodules: `redeem` (a receipt's vouchers redeemed, in the receipt's transaction) and
//! `issue` (earned and goodwill vouchers).
//!
//! Trees (values are JSON records private to this module):
//! - `vouchers/issued`: voucher id (10 bytes) → the voucher text, origin, receipt, customer.
//! - `vouchers/state`: voucher id → `reserved {lane, at, until, text}` or
//!   `redeemed {lane, at, receipt_id, discount, text}`; absent means free.
//! - `vouchers/revoked`: voucher id → revocation time (Unix seconds, 8 bytes big-endian).
//! - `vouchers/meta`: `time_floor` → the latest trusted time seen (Unix seconds, big-endian).
//!
//! Invariants: a voucher is `redeemed` at most once (the state record is read and written in
//! the same serialisable transaction as its `voucher_redeemed` event, so that two lanes or a
//! crash and a retry cannot both redeem it); a reservation is durable before the lane hears
//! `valid`; a voucher is recorded before its text is returned to anyone (so it can be
//! announced and revoked); points are converted in the same transaction that records the
//! voucher they paid for.

use super::events::EventType;
use super::{abort, NewEntry, ReceiptOutcome, Store, StoreError, Tx, TxResult};
use crate::{Failure, Refused};
use jiff::Timestamp;
use loyalty_core::ledger::EntryKind;
use loyalty_core::money::Money;
use loyalty_core::receipt::Receipt;
use loyalty_core::voucher::{
    self, check::RedemptionState, Benefit, CheckContext, Clock, CustomerBinding, Refusal,
    TrustedKeys, Verdict, Voucher, VoucherId,
};
use loyalty_core::voucher::{RedeemOn, VoucherSettings};
use loyalty_protocol::crm::events::{
    Issue, VoucherIssuedEvent, VoucherKeyEvent, VoucherRedeemedEvent,
};
use serde::{Deserialize, Serialize};

mod issue;
mod redeem;
mod wallet;
use issue::issued_from;
pub use issue::IssueError;
pub(crate) use redeem::ReceiptVoucherStep;
pub use redeem::{CommitOutcome, ReceiptVouchers, Redemption};

pub(crate) const ISSUED: &str = "vouchers/issued";
pub(crate) const STATE: &str = "vouchers/state";
/// Voucher id (10 bytes) → revocation time; the sync feed writes here too.
pub(crate) const REVOKED: &str = "vouchers/revoked";
const META: &str = "vouchers/meta";
/// Meta key: the id of the store key last announced to the CRM.
const ANNOUNCED_KEY: &[u8] = b"announced_key";
const TIME_FLOOR: &[u8] = b"time_floor";

// Indexes of the extra trees in a transaction.
const T_ISSUED: usize = 0;
const T_STATE: usize = 1;
const T_REVOKED: usize = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IssuedRec {
    text: String,
    origin: String,
    receipt_id: Option<String>,
    customer_id: Option<String>,
    #[serde(with = "super::records::ts")]
    issued_at: Timestamp,
    points: i64,
    /// The staff member who issued it (goodwill from the staff page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issued_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum StateRec {
    Reserved {
        lane: String,
        #[serde(with = "super::records::ts")]
        at: Timestamp,
        #[serde(with = "super::records::ts")]
        until: Timestamp,
        text: String,
    },
    Redeemed {
        lane: String,
        #[serde(with = "super::records::ts")]
        at: Timestamp,
        receipt_id: String,
        discount: i64,
        text: String,
    },
}

impl StateRec {
    fn to_state(&self) -> RedemptionState {
        match self {
            StateRec::Reserved {
                lane, at, until, ..
            } => RedemptionState::Reserved {
                lane: lane.clone(),
                at: *at,
                until: *until,
            },
            StateRec::Redeemed {
                lane,
                at,
                receipt_id,
                ..
            } => RedemptionState::Redeemed {
                at: *at,
                lane: lane.clone(),
                receipt_id: receipt_id.clone(),
            },
        }
    }
}

/// A voucher this store issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedVoucher {
    /// Its content.
    pub voucher: Voucher,
    /// Its QR text (`LGV1:...`), to print or show.
    pub text: String,
    /// The receipt it was earned on (none for goodwill).
    pub receipt_id: Option<String>,
    /// The customer it was issued to.
    pub customer_id: Option<String>,
    /// Points converted for it.
    pub points: i64,
}

/// What [`Vouchers::revoke`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokeReport {
    /// Ids newly revoked.
    pub revoked: usize,
    /// Ids that were already revoked.
    pub already: usize,
    /// Entries that are not voucher ids (20 hex digits), ignored.
    pub unparsable: Vec<String>,
}

/// The voucher side of the store. Cheap to clone (shares the [`Store`]).
#[derive(Clone)]
pub struct Vouchers {
    store: Store,
    issued: sled::Tree,
    state: sled::Tree,
    revoked: sled::Tree,
    meta: sled::Tree,
    keys: TrustedKeys,
    settings: VoucherSettings,
    /// Where the answers of the lane this handle serves reach the customer (the issuing rules
    /// convert nothing where they reach nobody).
    reach: voucher::issue::LaneReach,
}

fn corrupt<T>(what: String) -> TxResult<T> {
    abort(StoreError::Failed(Failure::Corrupt(what)))
}

fn decode_state(id: &VoucherId, bytes: &[u8]) -> Result<StateRec, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|err| StoreError::Failed(Failure::Corrupt(format!("voucher state {id}: {err}"))))
}

fn decode_issued(id: &VoucherId, bytes: &[u8]) -> Result<IssuedRec, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|err| StoreError::Failed(Failure::Corrupt(format!("issued voucher {id}: {err}"))))
}

fn to_json<T: Serialize>(value: &T) -> TxResult<Vec<u8>> {
    match serde_json::to_vec(value) {
        Ok(bytes) => Ok(bytes),
        Err(err) => corrupt(err.to_string()),
    }
}

fn tx_state(tx: &Tx<'_>, id: &VoucherId) -> TxResult<Option<StateRec>> {
    match tx.extra(T_STATE).get(id.0)? {
        None => Ok(None),
        Some(bytes) => match decode_state(id, &bytes) {
            Ok(rec) => Ok(Some(rec)),
            Err(err) => abort(err),
        },
    }
}

fn tx_issued(tx: &Tx<'_>, id: &VoucherId) -> TxResult<Option<IssuedRec>> {
    match tx.extra(T_ISSUED).get(id.0)? {
        None => Ok(None),
        Some(bytes) => match decode_issued(id, &bytes) {
            Ok(rec) => Ok(Some(rec)),
            Err(err) => abort(err),
        },
    }
}

struct OneRevoked(bool);

impl voucher::Revocations for OneRevoked {
    fn is_revoked(&self, _id: &VoucherId) -> bool {
        self.0
    }
}

impl Vouchers {
    /// This handle for times read from a clock that is `trusted` or not: the events it writes
    /// are flagged like those of [`Store::stamped`].
    pub fn stamped(&self, trusted: bool) -> Vouchers {
        Vouchers {
            store: self.store.stamped(trusted),
            ..self.clone()
        }
    }

    /// This handle for a lane whose answers reach the customer as `reach` says: through a
    /// handle for a lane they reach nobody ([`voucher::issue::LaneReach::Nowhere`]) no points
    /// are converted into vouchers (they stay on the account).
    pub fn for_lane(mut self, reach: voucher::issue::LaneReach) -> Vouchers {
        self.reach = reach;
        self
    }

    /// Opens the voucher trees of `store`.
    pub fn open(
        store: &Store,
        settings: VoucherSettings,
        keys: TrustedKeys,
    ) -> Result<Vouchers, StoreError> {
        let db = store.db();
        Ok(Vouchers {
            store: store.clone(),
            issued: db.open_tree(ISSUED)?,
            state: db.open_tree(STATE)?,
            revoked: db.open_tree(REVOKED)?,
            meta: db.open_tree(META)?,
            keys,
            settings,
            reach: voucher::issue::LaneReach::default(),
        })
    }

    /// The trusted keys (shared: add keys from the CRM here).
    pub fn trusted_keys(&self) -> &TrustedKeys {
        &self.keys
    }

    /// The settings.
    pub fn settings(&self) -> &VoucherSettings {
        &self.settings
    }

    fn extra(&self) -> [&sled::Tree; 3] {
        [&self.issued, &self.state, &self.revoked]
    }

    /// Announces this store's public signing key to the CRM (a `voucher_key` outbox event),
    /// once per key: returns true when an event was written now. Durable on return.
    pub fn announce_store_key(&self, now: Timestamp) -> Result<bool, StoreError> {
        let Some(key) = &self.settings.store_key else {
            return Ok(false);
        };
        let announcement = key.announcement();
        let key_id = announcement.key_id.clone();
        if self.meta.get(ANNOUNCED_KEY)?.as_deref() == Some(key_id.as_bytes()) {
            return Ok(false);
        }
        let meta = self.meta.clone();
        self.store.transact(&[&meta], |tx| {
            if tx.extra(0).get(ANNOUNCED_KEY)?.as_deref() == Some(key_id.as_bytes()) {
                return Ok(false);
            }
            tx.append_event(
                EventType::VoucherKey,
                now,
                &VoucherKeyEvent::new(&announcement),
            )?;
            tx.extra(0).put(ANNOUNCED_KEY, key_id.as_bytes())?;
            Ok(true)
        })
    }

    // ----- time -----

    /// The latest trusted time seen (persisted), a lower bound on the real time.
    pub fn time_floor(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .meta
            .get(TIME_FLOOR)?
            .and_then(|bytes| Some(i64::from_be_bytes(bytes.as_ref().try_into().ok()?)))
            .and_then(|seconds| Timestamp::from_second(seconds).ok()))
    }

    /// Records a trusted time reading (call it while the clock is trusted, e.g. once a
    /// minute). Raises the floor only; durable with the next group commit.
    pub fn observe_trusted_time(&self, now: Timestamp) -> Result<(), StoreError> {
        let seconds = now.as_second();
        self.meta.fetch_and_update(TIME_FLOOR, |old| {
            let old = old
                .and_then(|b| b.try_into().ok())
                .map(i64::from_be_bytes)
                .unwrap_or(i64::MIN);
            Some(old.max(seconds).to_be_bytes().to_vec())
        })?;
        Ok(())
    }

    /// The clock as the checks see it: `now`, whether it is trusted, and the stored floor.
    pub fn clock(&self, now: Timestamp, trusted: bool) -> Result<Clock, StoreError> {
        Ok(Clock {
            now,
            trusted,
            floor: self.time_floor()?,
        })
    }

    // ----- reads -----

    /// The voucher's state in this store.
    pub fn state(&self, id: &VoucherId) -> Result<RedemptionState, StoreError> {
        Ok(match self.state.get(id.0)? {
            None => RedemptionState::Free,
            Some(bytes) => decode_state(id, &bytes)?.to_state(),
        })
    }

    /// True when head office revoked it.
    pub fn is_revoked(&self, id: &VoucherId) -> Result<bool, StoreError> {
        Ok(self.revoked.contains_key(id.0)?)
    }

    /// A voucher this store issued.
    pub fn issued(&self, id: &VoucherId) -> Result<Option<IssuedVoucher>, StoreError> {
        match self.issued.get(id.0)? {
            None => Ok(None),
            Some(bytes) => issued_from(id, &decode_issued(id, &bytes)?).map(Some),
        }
    }

    /// The vouchers issued for a receipt (in order).
    pub fn issued_for_receipt(&self, receipt_id: &str) -> Result<Vec<IssuedVoucher>, StoreError> {
        let Some(key) = &self.settings.store_key else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for index in 0..self.settings.rules.max_per_receipt.max(1) {
            let id = VoucherId::derived(&key.key_id, receipt_id, index);
            match self.issued(&id)? {
                Some(issued) => out.push(issued),
                None => break,
            }
        }
        Ok(out)
    }

    // ----- scanning -----

    /// A voucher scanned at `lane` (with `customer_id` identified there, if any): checks it
    /// at `now`, trusted or not as this handle is [`Vouchers::stamped`] (a trusted `now` also
    /// raises the stored time floor) and, when valid, reserves it for the lane durably before
    /// returning `Valid`. A second
    /// scan at the same lane renews the reservation; at another lane it is `reserved`; once
    /// redeemed, everywhere `redeemed` with when and where. A refusal writes nothing.
    pub fn scan(
        &self,
        text: &str,
        lane: &str,
        customer_id: Option<&str>,
        now: Timestamp,
    ) -> Result<Verdict, StoreError> {
        let clock_trusted = self.store.clock_trusted();
        let signed = match voucher::decode(text.trim()) {
            Ok(signed) => signed,
            Err(err) => return Ok(Verdict::Refused(Refusal::Malformed(err))),
        };
        let id = signed.voucher.id;
        // A voucher bound to an id merged (at head office) into the lane's customer is hers.
        let aliases;
        let customer_id = match (&signed.voucher.customer, customer_id) {
            (Some(bound), Some(customer)) if !bound.matches(customer) => {
                aliases = self.store.customer_ids_of(customer)?;
                aliases
                    .iter()
                    .map(String::as_str)
                    .find(|alias| bound.matches(alias))
                    .or(Some(customer))
            }
            _ => customer_id,
        };
        if clock_trusted {
            self.observe_trusted_time(now)?;
        }
        let clock = self.clock(now, clock_trusted)?;
        let check_with = |state: &RedemptionState, revoked: bool| {
            voucher::check(
                &signed,
                &CheckContext {
                    keys: &self.keys,
                    clock,
                    revocations: &OneRevoked(revoked),
                    currency: &self.settings.currency,
                    lane,
                    customer_id,
                    state,
                },
            )
        };
        // A refusal needs no write (and no fsync).
        let verdict = check_with(&self.state(&id)?, self.is_revoked(&id)?);
        if matches!(verdict, Verdict::Refused(_)) {
            return Ok(verdict);
        }
        let until = now
            .checked_add(self.settings.reservation_timeout)
            .unwrap_or(now);
        let canonical = text.trim().to_string();
        self.store.transact(&self.extra(), |tx| {
            // Decided again inside the transaction: another lane may have won meanwhile.
            let state = tx_state(tx, &id)?
                .map(|rec| rec.to_state())
                .unwrap_or(RedemptionState::Free);
            let revoked = tx.extra(T_REVOKED).get(id.0)?.is_some();
            let verdict = check_with(&state, revoked);
            if let Verdict::Valid { .. } = verdict {
                let rec = StateRec::Reserved {
                    lane: lane.to_string(),
                    at: now,
                    until,
                    text: canonical.clone(),
                };
                tx.extra(T_STATE).put(&id.0, to_json(&rec)?)?;
            }
            Ok(verdict)
        })
    }

    /// Releases every reservation held by `lane` (a voided sale). Returns the vouchers freed.
    pub fn release_lane(&self, lane: &str) -> Result<Vec<VoucherId>, StoreError> {
        let held = self.reservations_of(lane, None)?;
        if held.is_empty() {
            return Ok(held);
        }
        self.store.transact(&self.extra(), |tx| {
            let mut freed = Vec::new();
            for id in &held {
                if let Some(StateRec::Reserved { lane: holder, .. }) = tx_state(tx, id)? {
                    if holder == lane {
                        tx.extra(T_STATE).remove(&id.0)?;
                        freed.push(*id);
                    }
                }
            }
            Ok(freed)
        })
    }

    /// Vouchers reserved by `lane` (still running at `now`, when given).
    fn reservations_of(
        &self,
        lane: &str,
        running_at: Option<Timestamp>,
    ) -> Result<Vec<VoucherId>, StoreError> {
        let mut out = Vec::new();
        for item in self.state.iter() {
            let (key, value) = item?;
            let Ok(bytes) = <[u8; 10]>::try_from(key.as_ref()) else {
                continue;
            };
            let id = VoucherId(bytes);
            if let StateRec::Reserved {
                lane: holder,
                until,
                ..
            } = decode_state(&id, &value)?
            {
                if holder == lane && running_at.is_none_or(|now| now < until) {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    // ----- revocation -----

    /// Revokes vouchers by id (the CRM's `revoked_vouchers`): every later scan answers
    /// `invalid` (revoked) and no receipt redeems them. Idempotent; durable on return.
    pub fn revoke(&self, ids: &[String], now: Timestamp) -> Result<RevokeReport, StoreError> {
        let mut report = RevokeReport::default();
        let mut parsed = Vec::new();
        for text in ids {
            match VoucherId::parse(text) {
                Some(id) => parsed.push(id),
                None => report.unparsable.push(text.clone()),
            }
        }
        let (revoked, already) = self.store.transact(&self.extra(), |tx| {
            let (mut revoked, mut already) = (0, 0);
            for id in &parsed {
                // The first revocation time is kept.
                if tx.extra(T_REVOKED).get(id.0)?.is_some() {
                    already += 1;
                } else {
                    tx.extra(T_REVOKED)
                        .put(&id.0, &now.as_second().to_be_bytes()[..])?;
                    revoked += 1;
                }
            }
            Ok((revoked, already))
        })?;
        report.revoked = revoked;
        report.already = already;
        Ok(report)
    }
}
