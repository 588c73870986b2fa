//! Building the exact earning rules from their definition ([`RulesConfig`]): every amount,
//! factor, category, weekday and time window checked, every problem named with its key.

use super::*;

pub(super) const WEEKDAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

/// Collects problems while building.
#[derive(Default)]
pub(super) struct Problems(Vec<RuleProblem>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(RuleProblem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn amount(&mut self, key: &str, text: &str, decimals: u32, min: i64) -> Money {
        match Money::parse(text, decimals) {
            Ok(m) if m.0 >= min => m,
            Ok(_) if min > 0 => {
                self.push(key, format!("'{text}' must be a positive amount"));
                Money::ZERO
            }
            Ok(_) => {
                self.push(key, format!("'{text}' must not be negative"));
                Money::ZERO
            }
            Err(err) => {
                self.push(key, format!("{err} (write e.g. \"5.00\")"));
                Money::ZERO
            }
        }
    }

    fn factor(&mut self, key: &str, text: &str) -> i64 {
        match Money::parse(text, 2) {
            Ok(f) if (0..=MAX_FACTOR_HUNDREDTHS).contains(&f.0) => f.0,
            _ => {
                self.push(
                    key,
                    format!("'{text}' is not a factor between 0 and 100 such as \"2\" or \"1.5\""),
                );
                ONE as i64
            }
        }
    }

    fn category(&mut self, key: &str, category: &str, known: &BTreeSet<String>) {
        if category.is_empty() {
            self.push(key, "a category name must not be empty");
        } else if !known.is_empty() && !known.contains(category) {
            self.push(
                key,
                format!("'{category}' is not one of the known categories in rules.categories"),
            );
        }
    }
}

/// Parses `HH:MM` (or `HH:MM:SS`).
pub(super) fn parse_time_of_day(text: &str) -> Option<Time> {
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let num = |i: usize| parts.get(i).and_then(|p| p.parse::<i8>().ok()).unwrap_or(0);
    Time::new(num(0), num(1), num(2), 0).ok()
}

impl EarningRules {
    /// Builds exact rules from the configuration text. `currency` is the store's ISO code (it
    /// fixes the number of decimals of every amount). Every problem is reported, with its key.
    /// Also used for rules that arrive from the CRM, which the config validation never saw.
    pub fn from_config(config: &RulesConfig, currency: &str) -> Result<EarningRules, RulesError> {
        let decimals = currency_decimals(currency);
        let mut p = Problems::default();
        if !(0..=1_000_000).contains(&config.points_per_unit) {
            p.push("points_per_unit", "must be between 0 and 1000000");
        }
        let per_amount = p.amount("per_amount", &config.per_amount, decimals, 1);
        let min_spend = p.amount("min_spend", &config.min_spend, decimals, 0);
        let max_receipt_total =
            p.amount("max_receipt_total", &config.max_receipt_total, decimals, 1);
        if config.cap_per_receipt < 0 {
            p.push("cap_per_receipt", "must not be negative (0 means no cap)");
        }
        if config.vesting_days > 365 {
            p.push("vesting_days", "must be at most 365");
        }
        let mut categories = BTreeSet::new();
        for (index, category) in config.categories.iter().enumerate() {
            if category.is_empty() {
                p.push(format!("categories[{index}]"), "must not be empty");
            } else if !categories.insert(category.clone()) {
                p.push(
                    format!("categories[{index}]"),
                    format!("'{category}' is listed twice"),
                );
            }
        }
        let mut excluded_categories = BTreeSet::new();
        for (index, category) in config.excluded_categories.iter().enumerate() {
            p.category(
                &format!("excluded_categories[{index}]"),
                category,
                &categories,
            );
            excluded_categories.insert(category.clone());
        }
        let mut offer_excluded_categories = BTreeSet::new();
        for (index, category) in config.offer_excluded_categories.iter().enumerate() {
            p.category(
                &format!("offer_excluded_categories[{index}]"),
                category,
                &categories,
            );
            offer_excluded_categories.insert(category.clone());
        }
        let mut excluded_gtin_prefixes = Vec::new();
        for (index, prefix) in config.excluded_gtin_prefixes.iter().enumerate() {
            if prefix.is_empty() || prefix.len() > 13 || !prefix.bytes().all(|b| b.is_ascii_digit())
            {
                p.push(
                    format!("excluded_gtin_prefixes[{index}]"),
                    format!("'{prefix}' must be 1 to 13 digits (e.g. \"978\")"),
                );
            } else {
                excluded_gtin_prefixes.push(prefix.clone());
            }
        }
        let mut category_multipliers = BTreeMap::new();
        for (category, factor) in &config.category_multipliers {
            let key = format!("category_multipliers.{category}");
            p.category(&key, category, &categories);
            let f = p.factor(&key, factor);
            category_multipliers.insert(category.clone(), f);
        }
        let mut tiers = BTreeMap::new();
        for (index, tier) in config.tiers.iter().enumerate() {
            if tier.name.is_empty() {
                p.push(format!("tiers[{index}].name"), "required");
            }
            let f = p.factor(&format!("tiers[{index}].factor"), &tier.factor);
            if tiers.insert(tier.name.clone(), f).is_some() {
                p.push(
                    format!("tiers[{index}].name"),
                    format!("tier '{}' is defined twice", tier.name),
                );
            }
        }
        let mut promotions = Vec::new();
        for (index, promo) in config.promotions.iter().enumerate() {
            let at = format!("promotions[{index}]");
            if promo.name.is_empty() {
                p.push(format!("{at}.name"), "required");
            }
            let mut date = |field: &str, value: &Option<String>| -> Option<Date> {
                let value = value.as_ref()?;
                match value.parse::<Date>() {
                    Ok(d) => Some(d),
                    Err(_) => {
                        p.push(
                            format!("{at}.{field}"),
                            format!("'{value}' is not a date YYYY-MM-DD"),
                        );
                        None
                    }
                }
            };
            let from = date("from", &promo.from);
            let until = date("until", &promo.until);
            if let (Some(f), Some(u)) = (from, until) {
                if f > u {
                    p.push(format!("{at}.until"), "must not be before from");
                }
            }
            let mut weekdays = Vec::new();
            for (day_index, day) in promo.weekdays.iter().enumerate() {
                let lower = day.to_ascii_lowercase();
                match WEEKDAYS.iter().find(|(n, _)| *n == lower) {
                    Some((_, w)) => weekdays.push(*w),
                    None => p.push(
                        format!("{at}.weekdays[{day_index}]"),
                        format!("'{day}' is not one of mon, tue, wed, thu, fri, sat, sun"),
                    ),
                }
            }
            let mut time = |field: &str, value: &Option<String>| -> Option<Time> {
                let value = value.as_ref()?;
                match parse_time_of_day(value) {
                    Some(t) => Some(t),
                    None => {
                        p.push(
                            format!("{at}.{field}"),
                            format!("'{value}' is not a time of day HH:MM"),
                        );
                        None
                    }
                }
            };
            let time_window = TimeWindow {
                from: time("time_from", &promo.time_from),
                until: time("time_until", &promo.time_until),
            };
            let mut promo_categories = BTreeSet::new();
            for (ci, category) in promo.categories.iter().enumerate() {
                p.category(&format!("{at}.categories[{ci}]"), category, &categories);
                promo_categories.insert(category.clone());
            }
            let mut promo_tiers = BTreeSet::new();
            for (ti, tier) in promo.tiers.iter().enumerate() {
                if !config.tiers.iter().any(|t| &t.name == tier) {
                    p.push(
                        format!("{at}.tiers[{ti}]"),
                        format!("'{tier}' is not a tier defined in rules.tiers"),
                    );
                }
                promo_tiers.insert(tier.clone());
            }
            let factor = promo.factor.as_ref().map(|text| {
                let key = format!("{at}.factor");
                let f = p.factor(&key, text);
                if f < ONE as i64 {
                    // Keeps earning monotone in spend: a promotion never lowers points.
                    p.push(
                        key,
                        format!("'{text}' is below 1: a promotion must not lower earning"),
                    );
                }
                f
            });
            let bonus_points = promo.bonus_points.unwrap_or(0);
            if !(0..=1_000_000).contains(&bonus_points) {
                p.push(
                    format!("{at}.bonus_points"),
                    "must be between 0 and 1000000",
                );
            }
            if promo.factor.is_none() && promo.bonus_points.is_none() {
                p.push(at.clone(), "a promotion needs a factor or bonus_points");
            }
            let promo_min_spend = match &promo.min_spend {
                Some(text) => p.amount(&format!("{at}.min_spend"), text, decimals, 0),
                None => Money::ZERO,
            };
            promotions.push(Promotion {
                name: promo.name.clone(),
                from,
                until,
                weekdays,
                time: time_window,
                categories: promo_categories,
                tiers: promo_tiers,
                factor,
                bonus_points,
                min_spend: promo_min_spend,
            });
        }
        if !p.0.is_empty() {
            return Err(RulesError { problems: p.0 });
        }
        Ok(EarningRules {
            currency: currency.to_string(),
            points_per_unit: config.points_per_unit,
            per_amount,
            rounding: config.rounding,
            categories,
            excluded_categories,
            offer_excluded_categories,
            excluded_gtin_prefixes,
            category_multipliers,
            tiers,
            promotions,
            min_spend,
            cap_per_receipt: (config.cap_per_receipt > 0).then_some(config.cap_per_receipt),
            vesting_days: config.vesting_days,
            max_receipt_total,
        })
    }
}
