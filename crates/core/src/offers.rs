//! Personal and segment offers (eCoupons) as plain data, and the two decisions made on them:
//! which offers are **active** for a customer now (what the till's screen lists:
//! [`active`]) and what they **give** on a sale ([`apply`]). No I/O: the store reads offers,
//! clips and uses and calls these functions inside the receipt's transaction.
//!
//! Rules (each tested below):
//! - Every offer needs the customer's `profiling` consent (and `marketing` too when the offer
//!   says so); unknown consent counts as no consent. Without it nothing is shown or applied.
//! - A personal offer is for its one customer; a segment offer for every customer carrying its
//!   tag. Outside `[valid_from, valid_until)` an offer does not exist.
//! - An offer that requires activation applies only once the customer clipped it.
//! - At most `max_uses_per_customer` sales of one customer use it.
//! - A line qualifies when the earning rules do not exclude it ([`OfferLine::allowed`]), its
//!   category is not in the offer's `exclude_categories`, and it matches the offer's GTINs,
//!   brands (GS1 company prefixes) or categories (every line, with none of them). Discount and
//!   zero lines never qualify. The qualifying lines must reach `min_spend`.
//! - Benefits: flat bonus points; a multiplier on the qualifying lines' points (the bonus is
//!   the extra `factor - 1`, rounded down); an amount off (no points; capped at the qualifying
//!   lines' amount).

use crate::money::Money;
use crate::receipt::Receipt;
use jiff::Timestamp;
use std::collections::BTreeSet;

/// Who an offer is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One customer (a personal offer).
    Customer(String),
    /// Every customer carrying this tag.
    Segment(String),
}

/// What an offer gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferBenefit {
    /// Flat bonus points.
    BonusPoints(i64),
    /// The qualifying lines' points times `hundredths / 100` (e.g. 200 = double).
    Multiplier {
        /// The factor in hundredths (100 to 10,000).
        hundredths: i64,
    },
    /// An amount off the qualifying lines (the till takes it off).
    AmountOff(Money),
}

/// Which lines an offer applies to (see the module's rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Articles by exact GTIN (`sku`).
    pub gtins: Vec<String>,
    /// Brands as GTIN prefixes (GS1 company prefixes).
    pub brands: Vec<String>,
    /// Categories.
    pub categories: Vec<String>,
    /// Minimum spend on the qualifying lines.
    pub min_spend: Option<Money>,
    /// Categories never qualifying for this offer.
    pub exclude_categories: Vec<String>,
}

/// An offer as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The CRM's id.
    pub id: String,
    /// Who it is for.
    pub target: Target,
    /// First moment it applies.
    pub valid_from: Option<Timestamp>,
    /// The moment it ends (exclusive).
    pub valid_until: Option<Timestamp>,
    /// Text for the till.
    pub text: String,
    /// Which lines.
    pub conditions: Conditions,
    /// What it gives.
    pub benefit: OfferBenefit,
    /// Applies only once clipped by the customer.
    pub requires_activation: bool,
    /// Needs `marketing` consent besides `profiling`.
    pub requires_marketing: bool,
    /// Sales of one customer it applies to.
    pub max_uses_per_customer: u32,
}

impl Offer {
    /// Whether the offer exists at `now` (inside its validity window).
    pub fn in_force(&self, now: Timestamp) -> bool {
        self.valid_from.is_none_or(|from| from <= now)
            && self.valid_until.is_none_or(|until| now < until)
    }
}

/// A customer's consent flags (from head office's profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Consent {
    /// Personal offers and messages.
    pub marketing: bool,
    /// Use of the purchase history for personalisation.
    pub profiling: bool,
}

/// The customer an offer is considered for, with what the store knows of her and the offers.
#[derive(Debug, Clone, Default)]
pub struct Holder<'a> {
    /// Her id (merges resolved).
    pub customer_id: &'a str,
    /// Her segment tags.
    pub tags: &'a [String],
    /// Her consent; `None` (unknown) is no consent.
    pub consent: Option<Consent>,
    /// Offers she activated.
    pub clipped: BTreeSet<String>,
    /// Her uses so far per offer (absent: 0).
    pub uses: std::collections::BTreeMap<String, u32>,
}

impl Holder<'_> {
    /// Whether `offer` is hers and may be shown and applied now (target, validity, consent,
    /// activation, uses left).
    pub fn may_use(&self, offer: &Offer, now: Timestamp) -> bool {
        let Some(consent) = self.consent else {
            return false;
        };
        let for_her = match &offer.target {
            Target::Customer(id) => id == self.customer_id,
            Target::Segment(tag) => self.tags.iter().any(|t| t == tag),
        };
        for_her
            && offer.in_force(now)
            && consent.profiling
            && (consent.marketing || !offer.requires_marketing)
            && (!offer.requires_activation || self.clipped.contains(&offer.id))
            && self.uses.get(&offer.id).copied().unwrap_or(0) < offer.max_uses_per_customer
    }
}

/// The offers the customer may use now, in the order given (what the till's screen lists).
pub fn active<'o>(offers: &'o [Offer], holder: &Holder<'_>, now: Timestamp) -> Vec<&'o Offer> {
    offers.iter().filter(|o| holder.may_use(o, now)).collect()
}

/// One receipt line as the offers see it (same order as the receipt's lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferLine {
    /// False when the earning rules exclude the line (e.g. tobacco) or its category is on the
    /// store's list of categories offers never apply to.
    pub allowed: bool,
    /// The points the rules credit for the line (the base of a multiplier).
    pub points: i64,
}

/// What one offer gave on a sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferUse {
    /// The offer.
    pub offer_id: String,
    /// Bonus points (0 for an amount off).
    pub bonus_points: i64,
    /// Amount off the till was told to give, if that is the benefit.
    pub amount_off: Option<Money>,
    /// Spend on the qualifying lines.
    pub qualifying: Money,
}

/// The offers a sale uses, in the order given: each offer the customer may use
/// ([`Holder::may_use`]) whose qualifying lines exist and reach its minimum spend. `lines`
/// has one entry per receipt line; a missing entry counts as not allowed.
pub fn apply(
    offers: &[Offer],
    holder: &Holder<'_>,
    receipt: &Receipt,
    lines: &[OfferLine],
    now: Timestamp,
) -> Vec<OfferUse> {
    let mut uses = Vec::new();
    for offer in offers.iter().filter(|o| holder.may_use(o, now)) {
        let mut qualifying = 0i64;
        let mut base_points = 0i64;
        let mut any = false;
        for (index, line) in receipt.lines.iter().enumerate() {
            let Some(info) = lines.get(index) else {
                continue;
            };
            if !info.allowed || line.amount.0 <= 0 || !qualifies(&offer.conditions, line) {
                continue;
            }
            any = true;
            qualifying = qualifying.saturating_add(line.amount.0);
            base_points = base_points.saturating_add(info.points.max(0));
        }
        if !any || offer.conditions.min_spend.is_some_and(|m| qualifying < m.0) {
            continue;
        }
        let (bonus_points, amount_off) = match offer.benefit {
            OfferBenefit::BonusPoints(points) => (points.max(0), None),
            OfferBenefit::Multiplier { hundredths } => {
                let extra = hundredths.saturating_sub(100).max(0);
                (base_points.saturating_mul(extra) / 100, None)
            }
            OfferBenefit::AmountOff(amount) => (0, Some(Money(amount.0.clamp(0, qualifying)))),
        };
        uses.push(OfferUse {
            offer_id: offer.id.clone(),
            bonus_points,
            amount_off,
            qualifying: Money(qualifying),
        });
    }
    uses
}

fn qualifies(conditions: &Conditions, line: &crate::receipt::ReceiptLine) -> bool {
    let category = line.category.as_deref();
    if category.is_some_and(|c| conditions.exclude_categories.iter().any(|x| x == c)) {
        return false;
    }
    let open = conditions.gtins.is_empty()
        && conditions.brands.is_empty()
        && conditions.categories.is_empty();
    open || conditions.gtins.iter().any(|g| g == &line.sku)
        || conditions
            .brands
            .iter()
            .any(|b| !b.is_empty() && line.sku.starts_with(b.as_str()))
        || category.is_some_and(|c| conditions.categories.iter().any(|x| x == c))
}

/// Parses a multiplier factor (`"2"`, `"1.5"`, at most two decimals, 1 to 100) into hundredths.
pub fn parse_factor(text: &str) -> Option<i64> {
    let hundredths = Money::parse(text.trim(), 2).ok()?.0;
    (100..=10_000).contains(&hundredths).then_some(hundredths)
}

#[cfg(test)]
mod tests;
