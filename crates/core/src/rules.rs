//! Earning rules: the pure function from a receipt (plus the customer's tier and the store's
//! time zone) to loyalty points. Owns the built, exact form of `[rules]` ([`EarningRules`]),
//! which lines are eligible (excluded categories, excluded GTIN prefixes such as books),
//! category multipliers, tier factors, promotions with date / weekday / time-of-day windows,
//! minimum spend, the cap per receipt, vesting, and the arithmetic of a return's clawback.
//!
//! Invariants:
//! - no I/O, no tokio, no floats: amounts are integer minor units, factors are integer
//!   hundredths, every intermediate is `i128`;
//! - rounding happens once per receipt, on the exact sum, per [`RoundingMode`];
//! - points are never negative, never above the cap, and `Earned::points` always equals
//!   the sum of the per-line points plus `Earned::bonus_points`;
//! - only sales earn; a return earns nothing here (see [`EarningRules::clawback`]).
//!
//! Order of factors (all multiply, so the order changes nothing in the exact value; it is
//! the order in which they are documented and applied):
//! 1. a line is *eligible* unless its category is excluded (or, with `categories` set, not
//!    listed there) or its SKU starts with an excluded GTIN prefix; discount lines (negative amounts) reduce the eligible spend;
//! 2. exact line value = `amount × points_per_unit / per_amount`
//!    `× category multiplier × tier factor × promotion factor` (each factor 1.00 when absent;
//!    several promotion factors on one line do not stack: the highest wins, first in
//!    configuration order on a tie; a promotion factor is at least 1.00, so points are
//!    monotone in spend);
//! 3. if the eligible spend is not positive or below `min_spend`, the receipt earns nothing
//!    (no bonus either);
//! 4. base points = the exact sum of the line values, rounded once (floor / nearest / ceil),
//!    at least 0;
//! 5. bonus points of every promotion that applies (window, tier, its own `min_spend`);
//! 6. the cap: base points are capped first, bonus points fill what the cap leaves;
//! 7. the base points are distributed over the lines with a positive value (largest
//!    remainder), so per-line points add up exactly.

mod arith;
mod build;
mod spec;
use crate::money::{currency_decimals, Money};
use crate::receipt::{Receipt, ReceiptKind, ReceiptLimits, ReceiptLine};
pub use arith::*;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
pub use spec::{PromotionConfig, RoundingMode, RulesConfig, TierConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The largest factor accepted anywhere (category, tier, promotion): 100.00.
pub const MAX_FACTOR_HUNDREDTHS: i64 = 10_000;

/// One factor is 1.00.
const ONE: i128 = 100;

/// A problem in the rules, named by its key below `[rules]` (`promotions[0].factor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleProblem {
    /// Key path relative to the `[rules]` table.
    pub key: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// Why rules could not be built. Lists every problem, not only the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid earning rules: {}", list_problems(.problems))]
pub struct RulesError {
    /// Every problem found.
    pub problems: Vec<RuleProblem>,
}

fn list_problems(problems: &[RuleProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("rules.{}: {}", p.key, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a line earns nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// Its category is in `excluded_categories`.
    Category(String),
    /// Its GTIN starts with one of `excluded_gtin_prefixes` (the prefix that matched).
    GtinPrefix(String),
    /// `categories` is set and does not list its category: a new category earns nothing
    /// until the rules name it (the receipt is applied all the same).
    UnknownCategory(String),
}

/// Points of one receipt line (same order as the receipt's lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinePoints {
    /// Points credited for this line (0 for excluded and discount lines).
    pub points: i64,
    /// Why the line earns nothing, if it is excluded.
    pub excluded: Option<Exclusion>,
    /// The combined factor in hundredths applied to this line (category × tier × promotion,
    /// truncated to whole hundredths; for display); 0 when excluded.
    pub factor_hundredths: i64,
}

/// What a receipt earned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earned {
    /// Total points credited: `sum(lines.points) + bonus_points`. Never negative, never above
    /// the cap.
    pub points: i64,
    /// Per-line points, one entry per receipt line, in order.
    pub lines: Vec<LinePoints>,
    /// Flat promotion bonus points included in `points` (after the cap).
    pub bonus_points: i64,
    /// Eligible spend: the sum of the amounts of the lines that are not excluded. Keep it with
    /// the sale: a return's clawback is proportional to it.
    pub eligible: Money,
    /// Names of the promotions that contributed (a winning factor on a line, or a bonus).
    pub promotions: Vec<String>,
    /// True when the cap reduced the points.
    pub capped: bool,
    /// When the points become redeemable (`None`: at once, or nothing earned).
    pub vests_at: Option<Timestamp>,
}

impl Earned {
    fn nothing(lines: Vec<LinePoints>, eligible: Money) -> Earned {
        Earned {
            points: 0,
            lines,
            bonus_points: 0,
            eligible,
            promotions: Vec::new(),
            capped: false,
            vests_at: None,
        }
    }
}

/// What a return takes back from the sale it refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clawback {
    /// Points to debit now (never negative, never more than the sale's points not yet
    /// clawed back).
    pub points: i64,
    /// Eligible amount returned by this return, capped so that all returns of a sale together
    /// never exceed the sale's eligible amount. Add it to the sale's running total.
    pub eligible_returned: Money,
}

/// A time-of-day window, `from` inclusive, `until` exclusive; crosses midnight when
/// `from > until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeWindow {
    from: Option<Time>,
    until: Option<Time>,
}

impl TimeWindow {
    fn contains(&self, t: Time) -> bool {
        match (self.from, self.until) {
            (None, None) => true,
            (Some(f), None) => t >= f,
            (None, Some(u)) => t < u,
            (Some(f), Some(u)) if f <= u => t >= f && t < u,
            (Some(f), Some(u)) => t >= f || t < u,
        }
    }
}

/// A built promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Promotion {
    name: String,
    from: Option<Date>,
    until: Option<Date>,
    /// Empty: every day.
    weekdays: Vec<Weekday>,
    time: TimeWindow,
    /// Empty: all eligible lines.
    categories: BTreeSet<String>,
    /// Empty: every customer (and card-less receipts).
    tiers: BTreeSet<String>,
    factor: Option<i64>,
    bonus_points: i64,
    min_spend: Money,
}

impl Promotion {
    fn in_window(&self, local: &jiff::Zoned, tier: Option<&str>) -> bool {
        let date = local.date();
        !matches!(self.from, Some(f) if date < f)
            && !matches!(self.until, Some(u) if date > u)
            && (self.weekdays.is_empty() || self.weekdays.contains(&local.weekday()))
            && self.time.contains(local.time())
            && (self.tiers.is_empty() || tier.is_some_and(|t| self.tiers.contains(t)))
    }

    fn covers(&self, line: &ReceiptLine) -> bool {
        self.categories.is_empty()
            || line
                .category
                .as_ref()
                .is_some_and(|c| self.categories.contains(c))
    }
}

/// Earning rules in exact integer form, built from `[rules]` by [`EarningRules::from_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarningRules {
    currency: String,
    points_per_unit: i64,
    per_amount: Money,
    rounding: RoundingMode,
    categories: BTreeSet<String>,
    excluded_categories: BTreeSet<String>,
    offer_excluded_categories: BTreeSet<String>,
    excluded_gtin_prefixes: Vec<String>,
    category_multipliers: BTreeMap<String, i64>,
    tiers: BTreeMap<String, i64>,
    promotions: Vec<Promotion>,
    min_spend: Money,
    cap_per_receipt: Option<i64>,
    vesting_days: u32,
    max_receipt_total: Money,
}

impl EarningRules {
    /// The limits `receipt::validate` applies under these rules (store currency, largest
    /// total, known categories).
    pub fn receipt_limits(&self) -> ReceiptLimits {
        ReceiptLimits {
            currency: self.currency.clone(),
            max_total: self.max_receipt_total,
            known_categories: self.categories.clone(),
        }
    }

    /// The rounding mode.
    pub fn rounding(&self) -> RoundingMode {
        self.rounding
    }

    /// Per line, whether a personal offer may apply to it (it earns, and its category is not
    /// in `offer_excluded_categories`) and the points the rules credit for it.
    pub fn offer_lines(
        &self,
        receipt: &Receipt,
        tier: Option<&str>,
        tz: &TimeZone,
    ) -> Vec<crate::offers::OfferLine> {
        let earned = self.earn(receipt, tier, tz);
        receipt
            .lines
            .iter()
            .zip(earned.lines.iter())
            .map(|(line, points)| crate::offers::OfferLine {
                allowed: points.excluded.is_none()
                    && !line
                        .category
                        .as_ref()
                        .is_some_and(|c| self.offer_excluded_categories.contains(c)),
                points: points.points,
            })
            .collect()
    }

    /// Why `line` earns nothing, or `None` when it is eligible.
    pub fn exclusion(&self, line: &ReceiptLine) -> Option<Exclusion> {
        if let Some(category) = &line.category {
            if self.excluded_categories.contains(category) {
                return Some(Exclusion::Category(category.clone()));
            }
            if !self.categories.is_empty() && !self.categories.contains(category) {
                return Some(Exclusion::UnknownCategory(category.clone()));
            }
        }
        let gtin = normalized_gtin(&line.sku)?;
        self.excluded_gtin_prefixes
            .iter()
            .find(|prefix| gtin.starts_with(prefix.as_str()))
            .map(|prefix| Exclusion::GtinPrefix(prefix.clone()))
    }

    /// Sum of the amounts of the lines that are not excluded (discount lines included, so it
    /// may be negative for odd inputs). The ledger uses it to claw back returns proportionally.
    pub fn eligible_amount(&self, lines: &[ReceiptLine]) -> Money {
        Money(
            lines
                .iter()
                .filter(|l| self.exclusion(l).is_none())
                .fold(0_i64, |acc, l| acc.saturating_add(l.amount.0)),
        )
    }

    /// When points earned at `at` become redeemable: `vesting_days` calendar days later in the
    /// store's time zone (same wall-clock time, DST-aware). `None` when vesting is off.
    pub fn vesting_time(&self, at: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        if self.vesting_days == 0 {
            return None;
        }
        let span = jiff::Span::new().days(i64::from(self.vesting_days));
        match at.to_zoned(tz.clone()).checked_add(span) {
            Ok(z) => Some(z.timestamp()),
            // Only near the end of the representable range; vest at the latest time.
            Err(_) => Some(Timestamp::MAX),
        }
    }

    /// The points a receipt earns. `tier` is the customer's tier (an unknown tier or `None`
    /// earns with factor 1.00); `tz` is the store's time zone, in which promotion windows are
    /// evaluated from `receipt.timestamp`. A return earns nothing (see [`Self::clawback`]).
    /// Never panics, whatever the receipt holds.
    pub fn earn(&self, receipt: &Receipt, tier: Option<&str>, tz: &TimeZone) -> Earned {
        let mut lines: Vec<LinePoints> = receipt
            .lines
            .iter()
            .map(|l| LinePoints {
                points: 0,
                excluded: self.exclusion(l),
                factor_hundredths: 0,
            })
            .collect();
        let eligible = Money(
            receipt
                .lines
                .iter()
                .zip(&lines)
                .filter(|(_, lp)| lp.excluded.is_none())
                .fold(0_i64, |acc, (l, _)| acc.saturating_add(l.amount.0)),
        );
        if !matches!(receipt.kind, ReceiptKind::Sale)
            || eligible.0 <= 0
            || eligible < self.min_spend
        {
            return Earned::nothing(lines, eligible);
        }

        let local = receipt.timestamp.to_zoned(tz.clone());
        let active: Vec<&Promotion> = self
            .promotions
            .iter()
            .filter(|p| p.in_window(&local, tier))
            .filter(|p| {
                let spend = receipt
                    .lines
                    .iter()
                    .zip(&lines)
                    .filter(|(l, lp)| lp.excluded.is_none() && p.covers(l))
                    .fold(0_i64, |acc, (l, _)| acc.saturating_add(l.amount.0));
                spend > 0 && spend >= p.min_spend.0
            })
            .collect();
        let tier_factor = tier
            .and_then(|t| self.tiers.get(t))
            .copied()
            .unwrap_or(ONE as i64);

        // Exact line values: numerator over the common denominator per_amount × 100³.
        let denominator = i128::from(self.per_amount.0) * ONE * ONE * ONE;
        let mut numerators = vec![0_i128; lines.len()];
        let mut contributed = vec![false; active.len()];
        let mut sum: i128 = 0;
        for (index, line) in receipt.lines.iter().enumerate() {
            if lines[index].excluded.is_some() {
                continue;
            }
            let category = line
                .category
                .as_ref()
                .and_then(|c| self.category_multipliers.get(c))
                .copied()
                .unwrap_or(ONE as i64);
            let mut promo = ONE as i64;
            let mut winner = None;
            for (pi, p) in active.iter().enumerate() {
                if let Some(f) = p.factor {
                    if p.covers(line) && (winner.is_none() || f > promo) {
                        promo = f;
                        winner = Some(pi);
                    }
                }
            }
            if let Some(pi) = winner {
                if line.amount.0 > 0 {
                    contributed[pi] = true;
                }
            }
            let factor = i128::from(category) * i128::from(tier_factor) * i128::from(promo);
            lines[index].factor_hundredths = i64::try_from(factor / (ONE * ONE)).unwrap_or(0);
            let n = i128::from(line.amount.0)
                .saturating_mul(i128::from(self.points_per_unit))
                .saturating_mul(factor);
            numerators[index] = n;
            sum = sum.saturating_add(n);
        }

        let base = round_div(sum, denominator, self.rounding).max(0);
        let base = i64::try_from(base).unwrap_or(i64::MAX);
        let mut bonus: i64 = 0;
        for (pi, p) in active.iter().enumerate() {
            if p.bonus_points > 0 {
                bonus = bonus.saturating_add(p.bonus_points);
                contributed[pi] = true;
            }
        }
        let (base_final, bonus_final, capped) = match self.cap_per_receipt {
            Some(cap) if base.saturating_add(bonus) > cap => {
                let b = base.min(cap);
                (b, bonus.min(cap - b), true)
            }
            _ => (base, bonus, false),
        };
        for (lp, points) in lines.iter_mut().zip(allocate(base_final, &numerators)) {
            lp.points = points;
        }
        let points = base_final + bonus_final;
        let promotions = active
            .iter()
            .zip(&contributed)
            .filter(|(_, c)| **c)
            .map(|(p, _)| p.name.clone())
            .collect();
        Earned {
            points,
            lines,
            bonus_points: bonus_final,
            eligible,
            promotions,
            capped,
            vests_at: if points > 0 {
                self.vesting_time(receipt.timestamp, tz)
            } else {
                None
            },
        }
    }

    /// The points a return takes back from its sale, proportionally to eligible spend.
    ///
    /// The ledger keeps, per sale, the points it credited (`sale_points`), the sale's eligible
    /// amount (`sale_eligible`, from [`Earned::eligible`]) and the running total of eligible
    /// amounts already returned against it (`returned_before`, 0 at first; add
    /// [`Clawback::eligible_returned`] after each return). The points the customer keeps after
    /// returns are `round(sale_points × (sale_eligible − returned) / sale_eligible)` with the
    /// rules' rounding mode; the clawback is the difference before and after this return. So
    /// partial returns never take back more in total than the sale earned, and returning
    /// everything takes back exactly `sale_points`. Excluded returned lines (tobacco, books)
    /// take back nothing.
    pub fn clawback(
        &self,
        sale_points: i64,
        sale_eligible: Money,
        returned_before: Money,
        returned_lines: &[ReceiptLine],
    ) -> Clawback {
        let total = sale_eligible.0.max(0);
        let before = returned_before.0.clamp(0, total);
        let now = self.eligible_amount(returned_lines).0.max(0);
        let after = before.saturating_add(now).min(total);
        if total == 0 || sale_points <= 0 {
            return Clawback {
                points: 0,
                eligible_returned: Money(after - before),
            };
        }
        let keep = |returned: i64| -> i128 {
            round_div(
                i128::from(sale_points) * i128::from(total - returned),
                i128::from(total),
                self.rounding,
            )
        };
        let points = i64::try_from(keep(before) - keep(after))
            .unwrap_or(0)
            .max(0);
        Clawback {
            points,
            eligible_returned: Money(after - before),
        }
    }
}

/// The GTIN in 13-digit form for prefix matching: EAN-13 as is, UPC-A (12) with a leading 0,
/// GTIN-14 without its packaging indicator digit. `None` for anything that is not a GTIN (an
/// internal SKU never matches an excluded prefix).
fn normalized_gtin(sku: &str) -> Option<std::borrow::Cow<'_, str>> {
    let sku = sku.trim();
    if !sku.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match sku.len() {
        8 | 13 => Some(sku.into()),
        12 => Some(format!("0{sku}").into()),
        14 => Some(sku[1..].into()),
        _ => None,
    }
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::Category(c) => write!(f, "category '{c}' does not earn"),
            Exclusion::GtinPrefix(p) => write!(f, "articles with GTIN prefix {p} do not earn"),
            Exclusion::UnknownCategory(c) => write!(
                f,
                "category '{c}' is not in rules.categories: it earns nothing until it is added"
            ),
        }
    }
}

#[cfg(test)]
mod tests;
