//! The earning rules as data (`[rules]` in the configuration file, or rules the CRM pushes):
//! decimal texts and names, deserialisable, not yet checked. [`super::EarningRules::from_config`]
//! builds the exact earning function from them and refuses anything it could not evaluate.

use serde::Deserialize;
use std::collections::BTreeMap;

/// How fractional points are rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RoundingMode {
    /// Towards zero (the customer never gets a point that was not fully earned).
    #[default]
    Floor,
    /// Half up.
    Nearest,
    /// Away from zero.
    Ceil,
}

/// A customer tier and its earning factor.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct TierConfig {
    /// Tier name as the CRM sends it (`"basic"`, `"gold"`).
    pub name: String,
    /// Earning factor as a decimal text (`"1.5"`), at most 100.
    pub factor: String,
}

/// A promotion: extra factor or bonus points within a date, weekday and time window.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct PromotionConfig {
    /// Name shown in logs and answers.
    pub name: String,
    /// First day (`YYYY-MM-DD`, store time zone), inclusive.
    pub from: Option<String>,
    /// Last day, inclusive.
    pub until: Option<String>,
    /// Weekdays it applies on (`["sat", "sun"]`); empty means every day.
    pub weekdays: Vec<String>,
    /// Only lines of these categories; empty means all eligible lines.
    pub categories: Vec<String>,
    /// Earning factor for matching lines as a decimal text (`"2"` doubles). Several factor
    /// promotions on one line do not stack: the highest applies.
    pub factor: Option<String>,
    /// Flat bonus points per qualifying receipt.
    pub bonus_points: Option<i64>,
    /// Minimum eligible spend (in the promotion's categories, if any) for the promotion to
    /// apply at all (factor and bonus), as a decimal text.
    pub min_spend: Option<String>,
    /// Start of the daily time window (`HH:MM`, store time zone), inclusive.
    pub time_from: Option<String>,
    /// End of the daily time window (`HH:MM`), exclusive; before `time_from` means the window
    /// crosses midnight.
    pub time_until: Option<String>,
    /// Only customers of these tiers; empty means everyone (card-less receipts earn nothing
    /// anyway).
    pub tiers: Vec<String>,
}

/// Earning rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RulesConfig {
    /// Points earned per `per_amount` of eligible spend.
    pub points_per_unit: i64,
    /// The amount that earns `points_per_unit`, as a decimal text (`"1.00"`).
    pub per_amount: String,
    /// How fractional points are rounded.
    pub rounding: RoundingMode,
    /// Known merchandise categories; a receipt line with another is refused. Empty: any. When
    /// set, every category named elsewhere in `[rules]` must be one of them (catches typos).
    pub categories: Vec<String>,
    /// Categories that never earn (tobacco, deposits, gift cards).
    pub excluded_categories: Vec<String>,
    /// GTIN prefixes that never earn (books: 978, 979). Matched against the GTIN in 13-digit
    /// form (UPC-A gets a leading 0, GTIN-14 loses its indicator digit); non-GTIN SKUs never
    /// match.
    pub excluded_gtin_prefixes: Vec<String>,
    /// Category factors as decimal texts (`fresh = "2"`).
    pub category_multipliers: BTreeMap<String, String>,
    /// Tiers and their factors.
    pub tiers: Vec<TierConfig>,
    /// Promotions.
    pub promotions: Vec<PromotionConfig>,
    /// Minimum eligible spend before anything is earned, as a decimal text.
    pub min_spend: String,
    /// Most points one receipt can earn (0: no cap).
    pub cap_per_receipt: i64,
    /// Days before earned points become redeemable (covers the return window; 0: at once).
    pub vesting_days: u32,
    /// Largest accepted receipt total, as a decimal text.
    pub max_receipt_total: String,
    /// Categories no personal or segment offer ever applies to (the store's merchandising
    /// limits, e.g. tobacco, baby formula), on top of the lines that earn nothing.
    pub offer_excluded_categories: Vec<String>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            points_per_unit: 1,
            per_amount: "1.00".into(),
            rounding: RoundingMode::Floor,
            categories: Vec::new(),
            excluded_categories: Vec::new(),
            excluded_gtin_prefixes: Vec::new(),
            category_multipliers: BTreeMap::new(),
            tiers: Vec::new(),
            promotions: Vec::new(),
            min_spend: "0".into(),
            cap_per_receipt: 0,
            vesting_days: 0,
            max_receipt_total: "100000.00".into(),
            offer_excluded_categories: Vec::new(),
        }
    }
}
