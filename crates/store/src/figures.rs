//! The `figures` tree: the store's figures counted per hour in the transaction of what they
//! count (a receipt, a ledger entry, an enrolment, a voucher issued or redeemed), so that the
//! staff page reads a month of figures without scanning receipts (`loyalty_core::figures`
//! aggregates them into days).
//!
//! Keys: `h` ++ hour (u64 BE) ++ metric (u8) → i64 BE; `v` ++ hour ++ customer id → empty (a
//! member's visit); `o` → i64 BE, the points outstanding over the whole ledger (filled from the
//! journal once, at the first open of a database that has none).

use super::*;
use loyalty_core::figures::{hour_of, Counts, HourCounts, Metric};

const OUTSTANDING: &[u8] = b"o";

fn hour_key(prefix: u8, hour: i64) -> Vec<u8> {
    let mut key = vec![prefix];
    key.extend_from_slice(&(hour.max(0) as u64).to_be_bytes());
    key
}

impl<'a> Tx<'a> {
    /// Adds `value` to `metric` in the hour of `at`.
    pub(crate) fn count(&self, at: Timestamp, metric: Metric, value: i64) -> TxResult<()> {
        if value == 0 {
            return Ok(());
        }
        let mut key = hour_key(b'h', hour_of(at));
        key.push(metric as u8);
        self.add_i64(&key, value)
    }

    /// Records a member's visit in the hour of `at`.
    pub(crate) fn count_visit(&self, at: Timestamp, customer_id: &str) -> TxResult<()> {
        let mut key = hour_key(b'v', hour_of(at));
        key.extend_from_slice(customer_id.as_bytes());
        self.tree(FIGURES).put(key, &[][..])?;
        Ok(())
    }

    /// A sale: its receipt, whether a member made it, its total.
    pub(crate) fn count_sale(
        &self,
        at: Timestamp,
        customer_id: Option<&str>,
        total: i64,
    ) -> TxResult<()> {
        self.count(at, Metric::Receipts, 1)?;
        match customer_id {
            Some(customer_id) => {
                self.count(at, Metric::MemberReceipts, 1)?;
                self.count(at, Metric::MemberSales, total)?;
                self.count_visit(at, customer_id)
            }
            None => self.count(at, Metric::OtherSales, total),
        }
    }

    /// A card attached to a sale applied at `applied_at` without one: a member's sale now.
    pub(crate) fn count_attached(
        &self,
        applied_at: Timestamp,
        customer_id: &str,
        total: i64,
    ) -> TxResult<()> {
        self.count(applied_at, Metric::MemberReceipts, 1)?;
        self.count(applied_at, Metric::OtherSales, -total)?;
        self.count(applied_at, Metric::MemberSales, total)?;
        self.count_visit(applied_at, customer_id)
    }

    /// A ledger entry: points issued or redeemed, and the points outstanding.
    pub(crate) fn count_points(&self, at: Timestamp, kind: EntryKind, points: i64) -> TxResult<()> {
        match kind {
            EntryKind::Earn | EntryKind::Clawback => {
                self.count(at, Metric::PointsIssued, points)?
            }
            EntryKind::Redeem | EntryKind::VoucherConversion => {
                self.count(at, Metric::PointsRedeemed, -points)?
            }
            EntryKind::Adjustment => {}
        }
        self.add_i64(OUTSTANDING, points)
    }

    /// An outbox event that is itself a figure (enrolment, voucher issued or redeemed).
    pub(crate) fn count_event(&self, at: Timestamp, kind: EventType) -> TxResult<()> {
        match kind {
            EventType::CustomerEnrolled => self.count(at, Metric::Enrolments, 1),
            EventType::VoucherIssued => self.count(at, Metric::VouchersIssued, 1),
            EventType::VoucherRedeemed => self.count(at, Metric::VouchersRedeemed, 1),
            _ => Ok(()),
        }
    }

    fn add_i64(&self, key: &[u8], value: i64) -> TxResult<()> {
        let tree = self.tree(FIGURES);
        let old = match tree.get(key)? {
            Some(bytes) => read_i64(&bytes),
            None => 0,
        };
        tree.put(key, &(old + value).to_be_bytes()[..])?;
        Ok(())
    }
}

fn read_i64(bytes: &[u8]) -> i64 {
    bytes.try_into().map(i64::from_be_bytes).unwrap_or_default()
}

/// At open: a database without the points outstanding (made before figures were kept) gets them
/// summed from its journal, once.
pub(crate) fn ensure_outstanding(
    figures: &sled::Tree,
    journal: &sled::Tree,
) -> Result<(), StoreError> {
    if figures.get(OUTSTANDING)?.is_some() {
        return Ok(());
    }
    let mut sum = 0i64;
    for item in journal.iter() {
        let (_, value) = item?;
        if let Some((_, _, body)) = journal::decode(&value) {
            sum += body.points;
        }
    }
    figures.insert(OUTSTANDING, &sum.to_be_bytes()[..])?;
    Ok(())
}

impl Store {
    /// Counts by hour and members' visits from `from` on, and the points outstanding now (see
    /// `loyalty_core::figures::aggregate`).
    pub fn figures_since(&self, from: Timestamp) -> Result<HourCounts, StoreError> {
        let tree = self.tree(FIGURES);
        let mut out = HourCounts::default();
        let hour_from = hour_of(from);
        for item in tree.range(hour_key(b'h', hour_from)..hour_key(b'h', i64::MAX)) {
            let (key, value) = item?;
            if key.len() != 10 {
                continue;
            }
            let hour = read_u64(&key[1..9]).unwrap_or(0) as i64;
            if let Some(metric) = Metric::from_byte(key[9]) {
                out.hours
                    .entry(hour)
                    .or_insert_with(Counts::default)
                    .add(metric, read_i64(&value));
            }
        }
        for item in tree.range(hour_key(b'v', hour_from)..hour_key(b'v', i64::MAX)) {
            let (key, _) = item?;
            if key.len() <= 9 {
                continue;
            }
            let hour = read_u64(&key[1..9]).unwrap_or(0) as i64;
            out.visits
                .push((hour, String::from_utf8_lossy(&key[9..]).into_owned()));
        }
        out.outstanding = tree.get(OUTSTANDING)?.map(|v| read_i64(&v)).unwrap_or(0);
        Ok(out)
    }
}
