//! Pay with points (SPEC 2.3 `redeem`): points reserved for a lane's open sale, taken
//! atomically against the customer's available points (her vested balance less her other open
//! reservations), committed by the receipt that names the reference inside that receipt's one
//! transaction (a `redeem` journal entry with its `ledger` event, once), released by a void or
//! by expiry. Every write is durable before a function here returns.
//!
//! Tree `points/reservations` (a core tree, so that a receipt's transaction holds it):
//! - `r\0{reference}` → JSON [`ResRec`]: lane, customer, points, discount, expiry, state
//!   (`reserved`, `committed`, `released`, `expired`), the committing receipt.
//! - `c\0{customer id}` → JSON list of her open holds (`reference`, `points`, `until`): read and
//!   written by every transaction that takes, commits or releases one of hers, so two lanes
//!   racing for her points conflict on this key and the second sees the first's hold.
//! - `l\0{lane}\0{reference}` → empty: a lane's open reservations (void, expiry sweep, gauges).
//! - `x` ++ u64 BE closing time (Unix seconds) ++ `reference` → empty: closed records, pruned
//!   by the sweep after [`CLOSED_KEPT_SECS`] (until then a repeated request answers the same).
//!
//! Invariants: the holds of a customer never exceed her available balance when taken; a
//! reservation commits at most once, only while open and unexpired, and only inside the
//! transaction of a receipt that names it; a receipt whose reference cannot commit is applied
//! all the same and says why per reference; an expired reservation never commits.

use super::*;
use loyalty_core::redemption::Status;
use serde::{Deserialize, Serialize};

/// How long a closed reservation's record is kept (so a repeated request or receipt answers
/// what happened): 30 days.
pub const CLOSED_KEPT_SECS: i64 = 30 * 86_400;
/// Most closed records pruned by one sweep (the rest next time).
const PRUNE_BATCH: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResRec {
    lane: String,
    customer_id: String,
    points: i64,
    discount: i64,
    #[serde(with = "records::ts")]
    at: Timestamp,
    #[serde(with = "records::ts")]
    until: Timestamp,
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    receipt_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Hold {
    reference: String,
    points: i64,
    #[serde(with = "records::ts")]
    until: Timestamp,
}

/// A reservation asked for by a lane (see [`Store::reserve_points`]).
#[derive(Debug, Clone, Copy)]
pub struct Reserve<'a> {
    /// The till's reference (idempotency key).
    pub reference: &'a str,
    /// The lane whose open sale it belongs to.
    pub lane: &'a str,
    /// Whose points.
    pub customer_id: &'a str,
    /// Points to hold (positive).
    pub points: i64,
    /// The discount they give.
    pub discount: Money,
    /// When the hold runs out unless a receipt names it.
    pub until: Timestamp,
}

/// What a reservation request (or a look-up) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The reference.
    pub reference: String,
    /// Where it stands at the time asked.
    pub status: Status,
    /// Points held or spent (the points asked for when refused).
    pub points: i64,
    /// The discount (zero when refused).
    pub discount: Money,
    /// The customer's points still available for redemption (when the customer is known).
    pub available: Option<i64>,
    /// Its expiry (when one was taken).
    pub until: Option<Timestamp>,
    /// Lane holding it (when one was taken).
    pub lane: Option<String>,
    /// True when this call took the hold (false for a repeated request and a refusal).
    pub fresh: bool,
}

/// What a receipt did with one reference it named (see [`ReceiptOutcome::redemptions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedemptionResult {
    /// The reference.
    pub reference: String,
    /// `Committed`, or why not (`Unknown`, `Expired`, `Released`, `Insufficient`, `Conflict`).
    pub status: Status,
    /// Points spent (0 unless committed).
    pub points: i64,
}

/// Open reservations, for the gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenReservations {
    /// Reservations open (expired ones not yet swept included).
    pub count: u64,
    /// Their points.
    pub points: i64,
}

/// What an expiry sweep did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// References released because they ran out.
    pub expired: Vec<String>,
    /// Closed records pruned (older than [`CLOSED_KEPT_SECS`]).
    pub pruned: usize,
}

const RESERVED: &str = "reserved";
const COMMITTED: &str = "committed";
const RELEASED: &str = "released";
const EXPIRED: &str = "expired";

fn key(tag: u8, parts: &[&str]) -> Vec<u8> {
    let mut key = vec![tag, 0];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

fn closed_key(at: Timestamp, reference: &str) -> Vec<u8> {
    let mut key = vec![b'x'];
    key.extend_from_slice(&u64_be(at.as_second().max(0) as u64));
    key.extend_from_slice(reference.as_bytes());
    key
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> TxResult<T> {
    serde_json::from_slice(bytes).map_err(|e| tx_corrupt(format!("reservation {what}: {e}")))
}

fn encode<T: Serialize>(value: &T) -> TxResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| tx_corrupt(e.to_string()))
}

impl ResRec {
    /// Its status at `now` (an open one past its expiry is expired).
    fn status(&self, now: Timestamp) -> Status {
        match self.state.as_str() {
            RESERVED if now < self.until => Status::Reserved,
            RESERVED | EXPIRED => Status::Expired,
            COMMITTED => Status::Committed,
            _ => Status::Released,
        }
    }
}

impl<'a> Tx<'a> {
    fn reservations(&self) -> &TransactionalTree {
        self.tree(RESERVATIONS)
    }

    fn res_rec(&self, reference: &str) -> TxResult<Option<ResRec>> {
        match self.reservations().get(key(b'r', &[reference]))? {
            None => Ok(None),
            Some(bytes) => decode(reference, &bytes).map(Some),
        }
    }

    fn holds(&self, customer_id: &str) -> TxResult<Vec<Hold>> {
        match self.reservations().get(key(b'c', &[customer_id]))? {
            None => Ok(Vec::new()),
            Some(bytes) => decode(customer_id, &bytes),
        }
    }

    fn put_holds(&self, customer_id: &str, holds: &[Hold]) -> TxResult<()> {
        let key = key(b'c', &[customer_id]);
        if holds.is_empty() {
            self.reservations().remove(key)?;
        } else {
            self.reservations().put(key, encode(&holds)?)?;
        }
        Ok(())
    }

    /// Points of `customer_id` held by open, unexpired reservations at `now`.
    pub(crate) fn reserved_points(&self, customer_id: &str, now: Timestamp) -> TxResult<i64> {
        Ok(self
            .holds(customer_id)?
            .iter()
            .filter(|hold| now < hold.until)
            .map(|hold| hold.points)
            .sum())
    }

    /// Her points available for redemption: the available balance less open holds.
    fn available_for(&self, customer_id: &str, now: Timestamp) -> TxResult<i64> {
        let balance = self.balance(customer_id, now)?;
        Ok((balance.available - self.reserved_points(customer_id, now)?).max(0))
    }

    /// Closes an open reservation as `state`: off her holds and the lane's index, onto the
    /// list of closed records.
    fn close(
        &self,
        reference: &str,
        mut rec: ResRec,
        state: &str,
        receipt_id: Option<&str>,
        now: Timestamp,
    ) -> TxResult<()> {
        let mut holds = self.holds(&rec.customer_id)?;
        holds.retain(|hold| hold.reference != reference);
        self.put_holds(&rec.customer_id, &holds)?;
        self.reservations()
            .remove(key(b'l', &[&rec.lane, reference]))?;
        self.reservations()
            .put(closed_key(now, reference), &[][..])?;
        rec.state = state.into();
        rec.receipt_id = receipt_id.map(Into::into);
        self.reservations()
            .put(key(b'r', &[reference]), encode(&rec)?)?;
        Ok(())
    }
}

/// Who paid last in a receipt, and her balance after it.
pub(crate) type Paid = (String, Balance);

/// Inside a sale's transaction: commits each reservation `receipt` names (once per reference),
/// as a `redeem` journal entry of the reservation's customer with its `ledger` event. Returns
/// what happened to each and the balance of the last customer who paid (for the answer).
pub(crate) fn commit_in_tx(
    tx: &Tx<'_>,
    receipt: &Receipt,
    now: Timestamp,
) -> TxResult<(Vec<RedemptionResult>, Option<Paid>)> {
    let mut results: Vec<RedemptionResult> = Vec::new();
    let mut paid = None;
    for reference in &receipt.redemptions {
        if results.iter().any(|r| &r.reference == reference) {
            continue;
        }
        let result = |status, points| RedemptionResult {
            reference: reference.clone(),
            status,
            points,
        };
        let Some(rec) = tx.res_rec(reference)? else {
            results.push(result(Status::Unknown, 0));
            continue;
        };
        match rec.status(now) {
            Status::Reserved => {}
            Status::Expired => {
                if rec.state == RESERVED {
                    tx.close(reference, rec, EXPIRED, None, now)?;
                }
                results.push(result(Status::Expired, 0));
                continue;
            }
            Status::Committed => {
                // Committed by another receipt (this receipt is not a duplicate: those
                // answer their first outcome before getting here).
                results.push(result(Status::Conflict, 0));
                continue;
            }
            other => {
                results.push(result(other, 0));
                continue;
            }
        }
        // The balance may have shrunk since the hold was taken (a return clawed back).
        let balance = tx.balance(&rec.customer_id, now)?;
        if balance.available < rec.points {
            tx.close(reference, rec, RELEASED, Some(&receipt.id), now)?;
            results.push(result(Status::Insufficient, 0));
            continue;
        }
        let outcome = points::points_op_in(
            tx,
            "redeem",
            reference,
            &NewEntry {
                customer_id: &rec.customer_id,
                kind: EntryKind::Redeem,
                points: -rec.points,
                at: now,
                receipt_id: None,
                cause_receipt_id: Some(&receipt.id),
                reference: Some(reference),
                reason: Some("paid with points at the till"),
                vests_at: None,
            },
            now,
        )?;
        let points = rec.points;
        paid = Some((rec.customer_id.clone(), outcome.balance));
        tx.close(reference, rec, COMMITTED, Some(&receipt.id), now)?;
        results.push(result(Status::Committed, points));
    }
    Ok((results, paid))
}

impl Store {
    /// Reserves points for a lane's open sale, durably, against the customer's available
    /// points (vested balance less her other open reservations). Idempotent per reference: the
    /// same request again answers where that reservation stands (`reserved`, `committed`,
    /// `released`, `expired`); a reference already used for another customer or number of
    /// points answers `conflict`. A refusal (`insufficient`, `unknown_customer`) writes
    /// nothing.
    pub fn reserve_points(
        &self,
        ask: &Reserve<'_>,
        now: Timestamp,
    ) -> Result<Reservation, StoreError> {
        check_id(ask.reference)?;
        check_id(ask.customer_id)?;
        check_id(ask.lane)?;
        ledger::check_spend(
            Balance {
                total: i64::MAX,
                available: i64::MAX,
                pending: 0,
            },
            ask.points,
        )?;
        let refused = |status, available| Reservation {
            reference: ask.reference.into(),
            status,
            points: ask.points,
            discount: Money(0),
            available,
            until: None,
            lane: None,
            fresh: false,
        };
        self.transact(&[], |tx| {
            let customer = tx.customer_rec(ask.customer_id)?;
            if let Some(rec) = tx.res_rec(ask.reference)? {
                let same = rec.points == ask.points
                    && (ask.customer_id == rec.customer_id
                        || customer.as_ref().is_some_and(|c| c.id == rec.customer_id));
                let available = Some(tx.available_for(&rec.customer_id, now)?);
                return Ok(Reservation {
                    reference: ask.reference.into(),
                    status: if same {
                        rec.status(now)
                    } else {
                        Status::Conflict
                    },
                    points: rec.points,
                    discount: Money(rec.discount),
                    available,
                    until: Some(rec.until),
                    lane: Some(rec.lane),
                    fresh: false,
                });
            }
            let Some(customer) = customer else {
                return Ok(refused(Status::UnknownCustomer, None));
            };
            let available = tx.available_for(&customer.id, now)?;
            if available < ask.points {
                return Ok(refused(Status::Insufficient, Some(available)));
            }
            let rec = ResRec {
                lane: ask.lane.into(),
                customer_id: customer.id.clone(),
                points: ask.points,
                discount: ask.discount.0,
                at: now,
                until: ask.until,
                state: RESERVED.into(),
                receipt_id: None,
            };
            let mut holds = tx.holds(&customer.id)?;
            holds.retain(|hold| now < hold.until);
            holds.push(Hold {
                reference: ask.reference.into(),
                points: ask.points,
                until: ask.until,
            });
            tx.put_holds(&customer.id, &holds)?;
            tx.reservations()
                .put(key(b'r', &[ask.reference]), encode(&rec)?)?;
            tx.reservations()
                .put(key(b'l', &[ask.lane, ask.reference]), &[][..])?;
            Ok(Reservation {
                reference: ask.reference.into(),
                status: Status::Reserved,
                points: ask.points,
                discount: ask.discount,
                available: Some(available - ask.points),
                until: Some(ask.until),
                lane: Some(ask.lane.into()),
                fresh: true,
            })
        })
    }

    /// Where the reservation `reference` stands at `now` (None: never taken, or pruned).
    pub fn reservation(
        &self,
        reference: &str,
        now: Timestamp,
    ) -> Result<Option<Reservation>, StoreError> {
        let Some(bytes) = self.tree(RESERVATIONS).get(key(b'r', &[reference]))? else {
            return Ok(None);
        };
        let rec: ResRec = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Failed(Failure::Corrupt(format!("reservation {reference}: {e}")))
        })?;
        Ok(Some(Reservation {
            reference: reference.into(),
            status: rec.status(now),
            points: rec.points,
            discount: Money(rec.discount),
            available: None,
            until: Some(rec.until),
            lane: Some(rec.lane),
            fresh: false,
        }))
    }

    /// The customer's points available for redemption at `now`: her available (vested)
    /// balance less her open reservations, never below zero. (The `customer` answer's
    /// `redeemable`.)
    pub fn available_points(&self, customer_id: &str, now: Timestamp) -> Result<i64, StoreError> {
        check_id(customer_id)?;
        let Some(customer) = self.customer_rec(customer_id)? else {
            return Err(StoreError::Refused(Refused::UnknownCustomer(
                customer_id.into(),
            )));
        };
        let available = customer.account.to_account().balance(now).available;
        let held: i64 = match self.tree(RESERVATIONS).get(key(b'c', &[&customer.id]))? {
            None => 0,
            Some(bytes) => serde_json::from_slice::<Vec<Hold>>(&bytes)
                .map_err(|e| {
                    StoreError::Failed(Failure::Corrupt(format!("holds of {customer_id}: {e}")))
                })?
                .iter()
                .filter(|hold| now < hold.until)
                .map(|hold| hold.points)
                .sum(),
        };
        Ok((available - held).max(0))
    }

    /// References of the lane's open reservations, oldest key first.
    fn lane_references(&self, lane: Option<&str>) -> Result<Vec<String>, StoreError> {
        let prefix = match lane {
            Some(lane) => {
                let mut prefix = key(b'l', &[lane]);
                prefix.push(0);
                prefix
            }
            None => vec![b'l', 0],
        };
        let mut out = Vec::new();
        for item in self.tree(RESERVATIONS).scan_prefix(&prefix) {
            let (key, _) = item?;
            let rest = &key[prefix.len()..];
            // Without a lane: the key's rest is `{lane}\0{reference}`.
            let reference = match lane {
                Some(_) => rest,
                None => match rest.iter().position(|&b| b == 0) {
                    Some(at) => &rest[at + 1..],
                    None => continue,
                },
            };
            out.push(String::from_utf8_lossy(reference).into_owned());
        }
        Ok(out)
    }

    /// Releases every open reservation of `lane` (a voided sale); returns their references.
    pub fn release_lane_points(
        &self,
        lane: &str,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        check_id(lane)?;
        let references = self.lane_references(Some(lane))?;
        if references.is_empty() {
            return Ok(references);
        }
        self.transact(&[], |tx| {
            let mut released = Vec::new();
            for reference in &references {
                if let Some(rec) = tx.res_rec(reference)? {
                    if rec.state == RESERVED && rec.lane == lane {
                        tx.close(reference, rec, RELEASED, None, now)?;
                        released.push(reference.clone());
                    }
                }
            }
            Ok(released)
        })
    }

    /// Releases the reservations that ran out by `now` (they never commit) and prunes closed
    /// records older than [`CLOSED_KEPT_SECS`]. Writes (and syncs) only when there is work.
    pub fn sweep_reservations(&self, now: Timestamp) -> Result<SweepReport, StoreError> {
        let tree = self.tree(RESERVATIONS);
        let mut due = Vec::new();
        for reference in self.lane_references(None)? {
            if let Some(bytes) = tree.get(key(b'r', &[&reference]))? {
                let rec: ResRec = serde_json::from_slice(&bytes).map_err(|e| {
                    StoreError::Failed(Failure::Corrupt(format!("reservation {reference}: {e}")))
                })?;
                if rec.state == RESERVED && now >= rec.until {
                    due.push(reference);
                }
            }
        }
        let cutoff = closed_key(
            now.checked_sub(jiff::SignedDuration::from_secs(CLOSED_KEPT_SECS))
                .unwrap_or(now),
            "",
        );
        let mut old = Vec::new();
        for item in tree.range(vec![b'x']..cutoff).take(PRUNE_BATCH) {
            let (key, _) = item?;
            old.push(key.to_vec());
        }
        if due.is_empty() && old.is_empty() {
            return Ok(SweepReport::default());
        }
        self.transact(&[], |tx| {
            let mut expired = Vec::new();
            for reference in &due {
                if let Some(rec) = tx.res_rec(reference)? {
                    if rec.state == RESERVED && now >= rec.until {
                        tx.close(reference, rec, EXPIRED, None, now)?;
                        expired.push(reference.clone());
                    }
                }
            }
            for closed in &old {
                tx.reservations().remove(closed.as_slice())?;
                if let Some(reference) = closed.get(9..) {
                    let reference = String::from_utf8_lossy(reference);
                    let key = key(b'r', &[&reference]);
                    // Only a closed record (a reference reused since would be open).
                    if let Some(rec) = tx.res_rec(&reference)? {
                        if rec.state != RESERVED {
                            tx.reservations().remove(key)?;
                        }
                    }
                }
            }
            Ok(SweepReport {
                expired,
                pruned: old.len(),
            })
        })
    }

    /// Open reservations (count and points), for the gauges.
    pub fn open_reservations(&self) -> Result<OpenReservations, StoreError> {
        let tree = self.tree(RESERVATIONS);
        let mut open = OpenReservations::default();
        for reference in self.lane_references(None)? {
            if let Some(bytes) = tree.get(key(b'r', &[&reference]))? {
                if let Ok(rec) = serde_json::from_slice::<ResRec>(&bytes) {
                    open.count += 1;
                    open.points += rec.points;
                }
            }
        }
        Ok(open)
    }
}
