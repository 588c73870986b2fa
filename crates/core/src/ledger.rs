//! Points ledger arithmetic: earning on a sale, proportional clawback on returns, redemption,
//! conversion to vouchers, CRM adjustments, vesting (available vs pending) and balance replay.
//! Pure: no I/O, no sled, no tokio; the `store` module persists what these functions decide.
//!
//! Invariants:
//! - Returns never claw back more than the original receipt earned; returning everything nets
//!   exactly zero (the clawback is computed cumulatively, see [`clawback`]).
//! - Rounding never makes points negative: every computed amount is clamped to `0..=original`.
//! - A balance is always the sum of entry deltas on top of the last CRM-confirmed balance;
//!   [`replay`] over the journal reproduces every stored balance.
//! - A return never makes a balance negative (the policy for returns after conversion): the
//!   clawback takes what the balance holds now ([`floor_clawback`]) and the rest is owed
//!   ([`Owed`]), collected first from the customer's next earnings ([`collect_owed`]). Each
//!   collection is a clawback entry of its own, so the journal (and the CRM) still sees every
//!   point move exactly; the clawbacks of a return add up to what it clawed.

use crate::money::Money;
use crate::receipt::{Receipt, ReceiptLimits, ReceiptLine};
use jiff::Timestamp;
use std::collections::BTreeMap;

mod owed;
pub use owed::{collect_owed, floor_clawback, Owed};

/// What the earning rules decided for one receipt (the store's view of `rules::Earned`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Earning {
    /// Points earned (never negative).
    pub points: i64,
    /// The part of the receipt that is eligible for points.
    pub eligible: Money,
    /// When the points become redeemable (`None`: at once).
    pub vests_at: Option<Timestamp>,
    /// Names of the promotions applied.
    pub promotions: Vec<String>,
}

/// The earning rules as the store needs them. Implemented by the `rules` module's
/// `EarningRules` (through [`RulesPolicy`]) and by simple stand-ins in tests.
pub trait EarningPolicy {
    /// Points a sale earns for a customer of `tier`.
    fn earn(&self, receipt: &Receipt, tier: Option<&str>) -> Earning;
    /// The eligible amount of some lines (used to claw back returns proportionally).
    fn eligible_amount(&self, lines: &[ReceiptLine]) -> Money;
    /// Limits every receipt is validated against before anything is written.
    fn limits(&self) -> &ReceiptLimits;
    /// Per line of a sale, whether offers may apply to it and its points (the base of an
    /// offer's multiplier). The default allows every line with no points (stand-ins in tests).
    fn offer_lines(&self, receipt: &Receipt, _tier: Option<&str>) -> Vec<crate::offers::OfferLine> {
        receipt
            .lines
            .iter()
            .map(|_| crate::offers::OfferLine {
                allowed: true,
                points: 0,
            })
            .collect()
    }
}

/// The `rules` module's earning rules with the store's time zone, as an [`EarningPolicy`].
#[derive(Debug, Clone)]
pub struct RulesPolicy {
    rules: crate::rules::EarningRules,
    time_zone: jiff::tz::TimeZone,
    limits: ReceiptLimits,
}

impl RulesPolicy {
    /// Wraps `rules`; promotions and vesting are evaluated in `time_zone`.
    pub fn new(rules: crate::rules::EarningRules, time_zone: jiff::tz::TimeZone) -> RulesPolicy {
        let limits = rules.receipt_limits();
        RulesPolicy {
            rules,
            time_zone,
            limits,
        }
    }
}

impl EarningPolicy for RulesPolicy {
    fn earn(&self, receipt: &Receipt, tier: Option<&str>) -> Earning {
        let earned = self.rules.earn(receipt, tier, &self.time_zone);
        Earning {
            points: earned.points.max(0),
            eligible: earned.eligible,
            vests_at: earned.vests_at,
            promotions: earned.promotions,
        }
    }

    fn eligible_amount(&self, lines: &[ReceiptLine]) -> Money {
        self.rules.eligible_amount(lines)
    }

    fn limits(&self) -> &ReceiptLimits {
        &self.limits
    }

    fn offer_lines(&self, receipt: &Receipt, tier: Option<&str>) -> Vec<crate::offers::OfferLine> {
        self.rules.offer_lines(receipt, tier, &self.time_zone)
    }
}

/// Kind of a ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Points earned on a sale.
    Earn,
    /// Points taken back because goods were returned.
    Clawback,
    /// Points spent at the till.
    Redeem,
    /// Points converted into a voucher.
    VoucherConversion,
    /// A correction from the CRM (signed).
    Adjustment,
}

impl EntryKind {
    /// Stable lower-case name (journal and CRM events).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Earn => "earn",
            EntryKind::Clawback => "clawback",
            EntryKind::Redeem => "redeem",
            EntryKind::VoucherConversion => "voucher_conversion",
            EntryKind::Adjustment => "adjustment",
        }
    }

    /// Inverse of [`EntryKind::as_str`].
    pub fn parse(text: &str) -> Option<EntryKind> {
        Some(match text {
            "earn" => EntryKind::Earn,
            "clawback" => EntryKind::Clawback,
            "redeem" => EntryKind::Redeem,
            "voucher_conversion" => EntryKind::VoucherConversion,
            "adjustment" => EntryKind::Adjustment,
            _ => return None,
        })
    }
}

/// One ledger entry as far as arithmetic is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Customer whose balance changes.
    pub customer_id: String,
    /// What happened.
    pub kind: EntryKind,
    /// Signed change of the balance.
    pub points: i64,
    /// The store outbox sequence number of the entry's event (orders it against CRM balances).
    pub seq: u64,
    /// For earn and clawback: the *sale* receipt the points belong to.
    pub receipt_id: Option<String>,
    /// For earn: when the points become redeemable.
    pub vests_at: Option<Timestamp>,
}

/// Why a ledger operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// Zero or negative points asked for where a positive number is required.
    #[error("points must be positive (got {0})")]
    NotPositive(i64),
    /// More points asked for than are available.
    #[error("not enough available points: {requested} requested, {available} available ({pending} still pending)")]
    Insufficient {
        /// Points asked for.
        requested: i64,
        /// Points redeemable now.
        available: i64,
        /// Points earned but not yet vested.
        pending: i64,
    },
    /// An absurd amount (beyond what any real operation would use).
    #[error("{0} points is outside the accepted range")]
    OutOfRange(i64),
}

/// The largest number of points one operation may move.
pub const MAX_POINTS_PER_OPERATION: i64 = 1_000_000_000;

/// A customer's balance at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balance {
    /// All points (available + pending).
    pub total: i64,
    /// Points redeemable now.
    pub available: i64,
    /// Points earned but not vested yet.
    pub pending: i64,
}

/// The last balance the CRM confirmed for a customer, and the store outbox sequence number
/// through which it includes this store's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Confirmed {
    /// Balance as confirmed by the CRM.
    pub points: i64,
    /// This store's entries with `seq <= through_seq` are included in `points`.
    pub through_seq: u64,
}

/// State of a sale's points kept for returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReturnState {
    /// Points the sale earned.
    pub original_points: i64,
    /// Eligible amount of the sale.
    pub original_eligible: Money,
    /// Total amount of the sale (used when nothing was eligible).
    pub original_total: Money,
    /// Eligible amount returned so far (capped at `original_eligible`).
    pub returned_eligible: Money,
    /// Total amount returned so far (capped at `original_total`).
    pub returned_total: Money,
    /// Points clawed back so far.
    pub clawed: i64,
}

/// Computes the clawback for one more return against a sale, cumulatively:
/// `clawed_after = floor(original_points * cumulative_returned / original)`; this clawback is
/// `clawed_after - already_clawed`. Returns the points to claw back (>= 0) and the new state.
/// Returning everything claws back exactly the original points, and the cumulative amount is
/// capped, so a customer can never lose more than the sale earned.
pub fn clawback(
    state: ReturnState,
    returning_eligible: Money,
    returning_total: Money,
) -> (i64, ReturnState) {
    let mut next = state;
    next.returned_eligible = Money(
        (state.returned_eligible.0 + returning_eligible.0.max(0))
            .min(state.original_eligible.0.max(0)),
    );
    next.returned_total = Money(
        (state.returned_total.0 + returning_total.0.max(0)).min(state.original_total.0.max(0)),
    );
    let original = state.original_points.max(0);
    let (num, den) = if state.original_eligible.0 > 0 {
        (next.returned_eligible.0, state.original_eligible.0)
    } else if state.original_total.0 > 0 {
        (next.returned_total.0, state.original_total.0)
    } else {
        (0, 1)
    };
    let clawed_after = if num >= den {
        original
    } else {
        // i128: points * amount cannot overflow.
        ((original as i128 * num as i128) / den as i128) as i64
    };
    let clawed_after = clawed_after.clamp(0, original);
    let this = (clawed_after - state.clawed).max(0);
    next.clawed = state.clawed + this;
    (this, next)
}

/// Checks that `points` can be spent from `balance` (redeem or voucher conversion).
pub fn check_spend(balance: Balance, points: i64) -> Result<(), LedgerError> {
    if points <= 0 {
        return Err(LedgerError::NotPositive(points));
    }
    if points > MAX_POINTS_PER_OPERATION {
        return Err(LedgerError::OutOfRange(points));
    }
    if points > balance.available {
        return Err(LedgerError::Insufficient {
            requested: points,
            available: balance.available,
            pending: balance.pending,
        });
    }
    Ok(())
}

/// Checks a signed CRM adjustment.
pub fn check_adjustment(points: i64) -> Result<(), LedgerError> {
    if points == 0 {
        return Err(LedgerError::NotPositive(0));
    }
    if points.abs() > MAX_POINTS_PER_OPERATION {
        return Err(LedgerError::OutOfRange(points));
    }
    Ok(())
}

/// A customer's balance at `now`: the confirmed CRM balance plus local entries not yet included
/// in it; points of sales whose vesting time lies after `now` (less what was clawed back from
/// them) are pending. `entries` are the customer's entries, in any order.
pub fn balance(confirmed: Option<Confirmed>, entries: &[Entry], now: Timestamp) -> Balance {
    let confirmed = confirmed.unwrap_or_default();
    let mut total = confirmed.points;
    // Per sale: (earned, clawed, vests_at)
    let mut sales: BTreeMap<&str, (i64, i64, Option<Timestamp>)> = BTreeMap::new();
    for entry in entries {
        if entry.seq > confirmed.through_seq {
            total += entry.points;
        }
        if let Some(receipt_id) = entry.receipt_id.as_deref() {
            match entry.kind {
                EntryKind::Earn => {
                    let sale = sales.entry(receipt_id).or_default();
                    sale.0 += entry.points;
                    sale.2 = entry.vests_at;
                }
                EntryKind::Clawback => sales.entry(receipt_id).or_default().1 += -entry.points,
                _ => {}
            }
        }
    }
    let pending: i64 = sales
        .values()
        .filter(|(_, _, vests_at)| vests_at.is_some_and(|at| at > now))
        .map(|(earned, clawed, _)| (earned - clawed).max(0))
        .sum();
    let pending = pending.clamp(0, total.max(0));
    Balance {
        total,
        available: total - pending,
        pending,
    }
}

/// Points of one sale that are not vested yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vesting {
    /// The sale.
    pub receipt_id: String,
    /// Points earned less points clawed back so far.
    pub points: i64,
    /// When they become redeemable.
    pub vests_at: Timestamp,
}

/// The compact per-customer ledger state the store keeps next to the customer, so that a
/// balance is answered without scanning the journal (and inside a transaction).
///
/// Invariant: `unconfirmed` holds exactly the customer's journal entries with
/// `seq > confirmed.through_seq`, and `local_total` is the sum of every local entry; both are
/// re-derived from the journal by `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Account {
    /// Last CRM-confirmed balance.
    pub confirmed: Confirmed,
    /// `(seq, points)` of local entries not yet included in `confirmed`.
    pub unconfirmed: Vec<(u64, i64)>,
    /// Sales whose points are not vested yet.
    pub vesting: Vec<Vesting>,
    /// Sum of all local entries ever recorded.
    pub local_total: i64,
    /// Number of local entries ever recorded.
    pub entries: u64,
    /// Points returns still owe, oldest first (see [`floor_clawback`]).
    pub owed: Vec<Owed>,
}

impl Account {
    /// Records a new entry (its `seq` is newer than every earlier one).
    pub fn record(&mut self, entry: &Entry, now: Timestamp) {
        self.local_total += entry.points;
        self.entries += 1;
        if entry.seq > self.confirmed.through_seq {
            self.unconfirmed.push((entry.seq, entry.points));
        }
        match (entry.kind, entry.receipt_id.as_deref(), entry.vests_at) {
            (EntryKind::Earn, Some(receipt_id), Some(vests_at)) if vests_at > now => {
                self.vesting.push(Vesting {
                    receipt_id: receipt_id.to_string(),
                    points: entry.points,
                    vests_at,
                });
            }
            (EntryKind::Clawback, Some(receipt_id), _) => {
                if let Some(v) = self.vesting.iter_mut().find(|v| v.receipt_id == receipt_id) {
                    v.points = (v.points + entry.points).max(0);
                }
            }
            _ => {}
        }
        self.vesting.retain(|v| v.vests_at > now && v.points > 0);
    }

    /// Takes a balance confirmed by the CRM; a confirmation older than the current one is
    /// ignored (returns false).
    pub fn confirm(&mut self, confirmed: Confirmed) -> bool {
        if confirmed.through_seq < self.confirmed.through_seq {
            return false;
        }
        self.confirmed = confirmed;
        self.unconfirmed
            .retain(|(seq, _)| *seq > confirmed.through_seq);
        true
    }

    /// Takes in the account of the same person enrolled twice (customers merged at head
    /// office): `other`'s confirmed balance, local entries and pending vesting count here from
    /// now on. The confirmation becomes the later of the two; entries of either account at or
    /// below it are folded into the confirmed points. So the total is exactly the sum of both
    /// totals, and the next confirmation from head office (whose balance includes both
    /// accounts, and which is never older than either one held) rebases it exactly.
    pub fn absorb(&mut self, other: &Account) {
        let through_seq = self.confirmed.through_seq.max(other.confirmed.through_seq);
        let mut points = self.confirmed.points + other.confirmed.points;
        let mut unconfirmed: Vec<(u64, i64)> = self
            .unconfirmed
            .iter()
            .chain(other.unconfirmed.iter())
            .copied()
            .collect();
        unconfirmed.sort_by_key(|(seq, _)| *seq);
        points += unconfirmed
            .iter()
            .filter(|(seq, _)| *seq <= through_seq)
            .map(|(_, p)| p)
            .sum::<i64>();
        unconfirmed.retain(|(seq, _)| *seq > through_seq);
        self.confirmed = Confirmed {
            points,
            through_seq,
        };
        self.unconfirmed = unconfirmed;
        self.vesting.extend(other.vesting.iter().cloned());
        // What a return could not take from `other` is owed by the survivor now.
        self.owed.extend(other.owed.iter().cloned());
        self.local_total += other.local_total;
        self.entries += other.entries;
    }

    /// The balance at `now`.
    pub fn balance(&self, now: Timestamp) -> Balance {
        let total = self.confirmed.points + self.unconfirmed.iter().map(|(_, p)| p).sum::<i64>();
        let pending: i64 = self
            .vesting
            .iter()
            .filter(|v| v.vests_at > now)
            .map(|v| v.points.max(0))
            .sum();
        let pending = pending.clamp(0, total.max(0));
        Balance {
            total,
            available: total - pending,
            pending,
        }
    }
}

/// Replays entries (journal order) into per-customer sums of deltas.
pub fn replay<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> BTreeMap<String, i64> {
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for entry in entries {
        *sums.entry(entry.customer_id.clone()).or_default() += entry.points;
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(points: i64, eligible: i64) -> ReturnState {
        ReturnState {
            original_points: points,
            original_eligible: Money(eligible),
            original_total: Money(eligible),
            ..ReturnState::default()
        }
    }

    #[test]
    fn full_return_nets_zero() {
        let (claw, next) = clawback(state(37, 1234), Money(1234), Money(1234));
        assert_eq!(claw, 37);
        assert_eq!(next.clawed, 37);
        // A further return claws nothing more.
        let (claw, _) = clawback(next, Money(500), Money(500));
        assert_eq!(claw, 0);
    }

    #[test]
    fn partial_returns_add_up_to_the_original() {
        let s = state(10, 300);
        let (a, s) = clawback(s, Money(100), Money(100));
        let (b, s) = clawback(s, Money(100), Money(100));
        let (c, s) = clawback(s, Money(100), Money(100));
        assert_eq!((a, b, c), (3, 3, 4));
        assert_eq!(s.clawed, 10);
    }

    #[test]
    fn nothing_eligible_falls_back_to_totals() {
        let s = ReturnState {
            original_points: 50,
            original_eligible: Money(0),
            original_total: Money(1000),
            ..ReturnState::default()
        };
        let (claw, _) = clawback(s, Money(0), Money(1000));
        assert_eq!(claw, 50);
    }

    #[test]
    fn vesting_splits_available_and_pending() {
        let now: Timestamp = "2026-01-10T00:00:00Z".parse().expect("time");
        let later: Timestamp = "2026-01-20T00:00:00Z".parse().expect("time");
        let earlier: Timestamp = "2026-01-05T00:00:00Z".parse().expect("time");
        let e = |kind, points, seq, receipt: &str, vests| Entry {
            customer_id: "c".into(),
            kind,
            points,
            seq,
            receipt_id: Some(receipt.into()),
            vests_at: vests,
        };
        let entries = vec![
            e(EntryKind::Earn, 100, 1, "A", Some(earlier)),
            e(EntryKind::Earn, 40, 2, "B", Some(later)),
            e(EntryKind::Clawback, -10, 3, "B", None),
        ];
        let b = balance(None, &entries, now);
        assert_eq!(
            b,
            Balance {
                total: 130,
                available: 100,
                pending: 30
            }
        );
        // A CRM balance that includes seq 1 and 2 replaces them.
        let b = balance(
            Some(Confirmed {
                points: 500,
                through_seq: 2,
            }),
            &entries,
            now,
        );
        assert_eq!(b.total, 490);
        assert_eq!(b.pending, 30);
        assert!(check_spend(b, 461).is_err());
        assert!(check_spend(b, 460).is_ok());
        assert!(check_spend(b, 0).is_err());
    }

    #[test]
    fn absorbing_an_account_keeps_both_totals_and_rebases_exactly() {
        let now = Timestamp::UNIX_EPOCH;
        let entry = |points, seq| Entry {
            customer_id: "x".into(),
            kind: EntryKind::Adjustment,
            points,
            seq,
            receipt_id: None,
            vests_at: None,
        };
        let mut into = Account::default();
        into.confirm(Confirmed {
            points: 100,
            through_seq: 2,
        });
        into.record(&entry(5, 3), now);
        into.record(&entry(7, 6), now);
        let mut from = Account::default();
        from.confirm(Confirmed {
            points: 40,
            through_seq: 4,
        });
        from.record(&entry(-3, 5), now);
        from.record(&entry(9, 8), now);
        let before = into.balance(now).total + from.balance(now).total;
        into.absorb(&from);
        assert_eq!(into.balance(now).total, before);
        assert_eq!(into.confirmed.through_seq, 4);
        assert_eq!(into.unconfirmed, vec![(5, -3), (6, 7), (8, 9)]);
        assert_eq!((into.local_total, into.entries), (18, 4));
        // Head office's next balance includes both accounts through seq 6.
        assert!(into.confirm(Confirmed {
            points: 150,
            through_seq: 6,
        }));
        assert_eq!(into.balance(now).total, 159);
    }

    #[test]
    fn rules_policy_earns_through_the_rules_module() {
        let config = crate::rules::RulesConfig {
            excluded_categories: vec!["tobacco".into()],
            vesting_days: 14,
            ..Default::default()
        };
        let rules = crate::rules::EarningRules::from_config(&config, "EUR").expect("rules");
        let policy = RulesPolicy::new(rules, jiff::tz::TimeZone::UTC);
        let line = |amount, category: &str| ReceiptLine {
            sku: "1".into(),
            name: "x".into(),
            qty_milli: 1000,
            unit_price: None,
            amount: Money(amount),
            category: Some(category.into()),
        };
        let receipt = Receipt {
            id: "R".into(),
            lane: "1".into(),
            timestamp: "2026-11-23T10:00:00Z".parse().expect("time"),
            kind: crate::receipt::ReceiptKind::Sale,
            currency: "EUR".into(),
            total: Money(1500),
            card: None,
            rewards: vec![],
            redemptions: Vec::new(),
            lines: vec![line(1000, "food"), line(500, "tobacco")],
        };
        let earning = policy.earn(&receipt, None);
        assert_eq!(earning.points, 10);
        assert_eq!(earning.eligible, Money(1000));
        assert!(earning.vests_at.is_some());
        assert_eq!(policy.eligible_amount(&receipt.lines[1..]), Money(0));
        assert_eq!(policy.limits().currency, "EUR");
    }

    proptest! {
        #[test]
        fn returns_never_exceed_and_full_return_is_zero(
            points in 0i64..1_000_000,
            eligible in 1i64..10_000_000,
            parts in proptest::collection::vec(0i64..5_000_000, 1..8),
        ) {
            let mut s = state(points, eligible);
            let mut clawed = 0;
            for part in &parts {
                let (c, next) = clawback(s, Money(*part), Money(*part));
                prop_assert!(c >= 0);
                clawed += c;
                prop_assert!(clawed <= points);
                prop_assert_eq!(next.clawed, clawed);
                s = next;
            }
            // Returning whatever is left nets exactly zero.
            let rest = eligible - s.returned_eligible.0;
            let (c, s) = clawback(s, Money(rest), Money(rest));
            prop_assert_eq!(clawed + c, points);
            prop_assert_eq!(s.clawed, points);
        }

        #[test]
        fn replay_equals_balance_and_never_negative_from_rounding(
            sales in proptest::collection::vec((0i64..10_000, 1i64..100_000, 0i64..100_000), 1..20),
        ) {
            let now = Timestamp::UNIX_EPOCH;
            let mut entries = Vec::new();
            let mut seq = 0;
            for (index, (points, eligible, returned)) in sales.iter().enumerate() {
                let receipt = format!("R{index}");
                seq += 1;
                entries.push(Entry { customer_id: "c".into(), kind: EntryKind::Earn, points: *points,
                    seq, receipt_id: Some(receipt.clone()), vests_at: None });
                let (claw, _) = clawback(state(*points, *eligible), Money(*returned), Money(*returned));
                if claw > 0 {
                    seq += 1;
                    entries.push(Entry { customer_id: "c".into(), kind: EntryKind::Clawback, points: -claw,
                        seq, receipt_id: Some(receipt), vests_at: None });
                }
            }
            let b = balance(None, &entries, now);
            prop_assert!(b.total >= 0);
            prop_assert!(b.available >= 0 && b.pending >= 0);
            let mut account = Account::default();
            for entry in &entries {
                account.record(entry, now);
            }
            prop_assert_eq!(account.balance(now), b);
            let sums = replay(&entries);
            prop_assert_eq!(sums.get("c").copied().unwrap_or(0), b.total);
        }
    }
}
