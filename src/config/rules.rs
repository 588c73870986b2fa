//! `[rules]`: earning rules as written in the file. The `rules` module turns them into the
//! pure earning function; validation here refuses anything it could not evaluate.

use super::{Config, Errors, Section};
use crate::money::Money;
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
    /// Earning factor as a decimal text (`"1.5"`).
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
    /// Earning factor for matching lines as a decimal text (`"2"` doubles).
    pub factor: Option<String>,
    /// Flat bonus points per qualifying receipt.
    pub bonus_points: Option<i64>,
    /// Minimum eligible spend for the bonus, as a decimal text.
    pub min_spend: Option<String>,
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
    /// Known merchandise categories; a receipt line with another is refused. Empty: any.
    pub categories: Vec<String>,
    /// Categories that never earn (tobacco, deposits, gift cards).
    pub excluded_categories: Vec<String>,
    /// GTIN prefixes that never earn (books: 978, 979).
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
        }
    }
}

/// Parses a factor such as `"1.5"` into hundredths (150). Factors are kept exact.
pub fn parse_factor(text: &str) -> Option<i64> {
    Money::parse(text, 2).ok().filter(|f| f.0 >= 0).map(|f| f.0)
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Section for RulesConfig {
    fn validate(&self, path: &str, config: &Config, errors: &mut Errors) {
        let decimals = crate::money::currency_decimals(&config.store.currency);
        errors.check(
            (0..=1_000_000).contains(&self.points_per_unit),
            format!("{path}.points_per_unit"),
            "must be between 0 and 1000000",
        );
        errors.check(
            Money::parse(&self.per_amount, decimals).is_ok_and(|m| m.0 > 0),
            format!("{path}.per_amount"),
            "must be a positive decimal amount such as \"1.00\"",
        );
        errors.check(
            Money::parse(&self.min_spend, decimals).is_ok_and(|m| m.0 >= 0),
            format!("{path}.min_spend"),
            "must be a decimal amount such as \"5.00\"",
        );
        errors.check(
            Money::parse(&self.max_receipt_total, decimals).is_ok_and(|m| m.0 > 0),
            format!("{path}.max_receipt_total"),
            "must be a positive decimal amount",
        );
        errors.check(
            self.cap_per_receipt >= 0,
            format!("{path}.cap_per_receipt"),
            "must not be negative (0 means no cap)",
        );
        errors.check(
            self.vesting_days <= 365,
            format!("{path}.vesting_days"),
            "must be at most 365",
        );
        for (index, prefix) in self.excluded_gtin_prefixes.iter().enumerate() {
            errors.check(
                !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()),
                format!("{path}.excluded_gtin_prefixes[{index}]"),
                "must be digits",
            );
        }
        for (category, factor) in &self.category_multipliers {
            errors.check(
                parse_factor(factor).is_some(),
                format!("{path}.category_multipliers.{category}"),
                format!("'{factor}' is not a factor such as \"2\" or \"1.5\""),
            );
        }
        for (index, tier) in self.tiers.iter().enumerate() {
            errors.check(
                !tier.name.is_empty(),
                format!("{path}.tiers[{index}].name"),
                "required",
            );
            errors.check(
                parse_factor(&tier.factor).is_some(),
                format!("{path}.tiers[{index}].factor"),
                "must be a factor such as \"1.5\"",
            );
        }
        for (index, promo) in self.promotions.iter().enumerate() {
            let at = format!("{path}.promotions[{index}]");
            errors.check(!promo.name.is_empty(), format!("{at}.name"), "required");
            for (field, value) in [("from", &promo.from), ("until", &promo.until)] {
                if let Some(value) = value {
                    errors.check(
                        value.parse::<jiff::civil::Date>().is_ok(),
                        format!("{at}.{field}"),
                        format!("'{value}' is not a date YYYY-MM-DD"),
                    );
                }
            }
            for (day_index, day) in promo.weekdays.iter().enumerate() {
                errors.check(
                    WEEKDAYS.contains(&day.to_ascii_lowercase().as_str()),
                    format!("{at}.weekdays[{day_index}]"),
                    format!("'{day}' is not one of mon, tue, wed, thu, fri, sat, sun"),
                );
            }
            if let Some(factor) = &promo.factor {
                errors.check(
                    parse_factor(factor).is_some(),
                    format!("{at}.factor"),
                    "must be a factor such as \"2\"",
                );
            }
            if let Some(min_spend) = &promo.min_spend {
                errors.check(
                    Money::parse(min_spend, decimals).is_ok(),
                    format!("{at}.min_spend"),
                    "must be a decimal amount",
                );
            }
            errors.check(
                promo.factor.is_some() || promo.bonus_points.is_some(),
                at.to_string(),
                "a promotion needs a factor or bonus_points",
            );
        }
    }
}
