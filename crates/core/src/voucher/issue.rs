//! Issuing: which vouchers a customer's balance earns under the reward rules of `[rewards]`,
//! and the vouchers themselves (ids derived from the receipt, so handling a receipt twice
//! issues nothing twice). Pure: the store converts the points and records the vouchers.

use super::format::{Benefit, CustomerBinding, Voucher, VoucherId};
use crate::money::Money;
use jiff::Timestamp;
use serde::Deserialize;

/// An issuing rule as data (`rewards.rules[n]` in the configuration file): every `every_points` become a voucher worth `value`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct RewardRuleConfig {
    /// Points converted per voucher.
    pub every_points: i64,
    /// Voucher value as a decimal amount (`"5.00"`).
    pub value: String,
    /// Days the voucher stays valid.
    pub validity_days: u32,
    /// Minimum spend to redeem it, as a decimal amount.
    pub min_spend: Option<String>,
}

/// One issuing rule, built from `rewards.rules[n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardRule {
    /// Points converted per voucher.
    pub every_points: i64,
    /// Value of each voucher.
    pub value: Money,
    /// Days it stays valid (through the end of the last day, store time).
    pub validity_days: u32,
    /// Minimum spend to redeem it.
    pub min_spend: Option<Money>,
}

/// The issuing rules of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardRules {
    /// In configuration order; the first whose threshold the balance reaches applies.
    pub rules: Vec<RewardRule>,
    /// Most vouchers issued for one receipt.
    pub max_per_receipt: u32,
    /// Bind earned vouchers to the customer who earned them.
    pub bind_to_customer: bool,
    /// The store's currency.
    pub currency: String,
}

/// A rule in the configuration that cannot be used (`check-config` refuses these first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rewards.rules[{index}]: {message}")]
pub struct RuleError {
    /// Index of the rule.
    pub index: usize,
    /// What is wrong.
    pub message: String,
}

/// What a balance earns: `count` vouchers under rule `rule_index`, converting `points`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuePlan {
    /// Index of the rule applied.
    pub rule_index: usize,
    /// Vouchers to issue.
    pub count: u32,
    /// Points converted in total (`count * every_points`).
    pub points: i64,
    /// Value of each voucher.
    pub value: Money,
}

/// Where a lane's answers reach the customer: a per-lane capability the issuing rules consult.
/// Converting points into a voucher only makes sense where the voucher can be handed over: on
/// a screen that hears the lane's MQTT answers (a till that sends JSON receipts listens to
/// its `response` topic; a printer lane with `answer = "mqtt"` has a display that does) or on
/// paper (`answer = "print"`: the gateway prints a trailer after the till's cut). A lane whose
/// answers reach nobody (`answer = "none"` on every printer of the lane) converts nothing:
/// the points stay on the account until a sale on a lane that can hand a voucher over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LaneReach {
    /// Answers go to MQTT, where the till or a display shows them.
    #[default]
    Screen,
    /// Answers are printed on the lane's receipt printer.
    Paper,
    /// Nobody hears or prints the answers.
    Nowhere,
}

impl LaneReach {
    /// True when a voucher issued on this lane can be handed to the customer.
    pub fn can_hand_over_vouchers(self) -> bool {
        self != LaneReach::Nowhere
    }
}

impl RewardRules {
    /// Builds the rules of `[rewards]` for a store in `currency`.
    pub fn from_config(
        config: &[RewardRuleConfig],
        max_per_receipt: u32,
        bind_to_customer: bool,
        currency: &str,
    ) -> Result<RewardRules, RuleError> {
        let decimals = crate::money::currency_decimals(currency);
        let mut rules = Vec::new();
        for (index, rule) in config.iter().enumerate() {
            let err = |message: String| RuleError { index, message };
            let value = crate::money::Money::parse(&rule.value, decimals)
                .map_err(|e| err(e.to_string()))?;
            if value.0 <= 0 || value.0 > super::format::MAX_AMOUNT_MINOR {
                return Err(err("value must be positive".into()));
            }
            if rule.every_points <= 0 || rule.validity_days == 0 {
                return Err(err("every_points and validity_days must be positive".into()));
            }
            let min_spend = match &rule.min_spend {
                Some(text) => Some(Money::parse(text, decimals).map_err(|e| err(e.to_string()))?),
                None => None,
            };
            rules.push(RewardRule {
                every_points: rule.every_points,
                value,
                validity_days: rule.validity_days,
                min_spend,
            });
        }
        Ok(RewardRules {
            rules,
            max_per_receipt,
            bind_to_customer,
            currency: currency.to_string(),
        })
    }

    /// What a spendable balance of `balance` points earns now: the first rule whose threshold
    /// is reached, as many vouchers as the balance covers (at most `max_per_receipt`). `None`
    /// when nothing is due.
    pub fn plan(&self, balance: i64) -> Option<IssuePlan> {
        let (rule_index, rule) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, rule)| balance >= rule.every_points)?;
        let due = balance / rule.every_points;
        let count = u32::try_from(due)
            .unwrap_or(u32::MAX)
            .min(self.max_per_receipt);
        if count == 0 {
            return None;
        }
        Some(IssuePlan {
            rule_index,
            count,
            points: i64::from(count) * rule.every_points,
            value: rule.value,
        })
    }

    /// What a balance earns on a lane that reaches the customer as `reach` says: nothing where
    /// nobody would see the voucher ([`LaneReach::Nowhere`]), else [`RewardRules::plan`].
    pub fn plan_for_lane(&self, balance: i64, reach: LaneReach) -> Option<IssuePlan> {
        if !reach.can_hand_over_vouchers() {
            return None;
        }
        self.plan(balance)
    }

    /// The vouchers of `plan`, issued for `receipt_id` to `customer_id` at `now` by key
    /// `key_id`. Valid from `now` through the end of the last day in the store's time zone.
    pub fn vouchers(
        &self,
        plan: &IssuePlan,
        key_id: &str,
        receipt_id: &str,
        customer_id: &str,
        now: Timestamp,
        tz: &jiff::tz::TimeZone,
    ) -> Vec<Voucher> {
        let Some(rule) = self.rules.get(plan.rule_index) else {
            return Vec::new();
        };
        let valid_from = whole_seconds(now);
        let valid_until = end_of_day_after(valid_from, rule.validity_days, tz);
        (0..plan.count)
            .map(|index| Voucher {
                id: VoucherId::derived(key_id, receipt_id, index),
                key_id: key_id.to_string(),
                currency: self.currency.clone(),
                benefit: Benefit::AmountOff(rule.value),
                valid_from,
                valid_until,
                valid_from_issue: true,
                min_spend: rule.min_spend,
                customer: self
                    .bind_to_customer
                    .then(|| CustomerBinding::of(customer_id)),
            })
            .collect()
    }
}

/// `time` without its fraction of a second (vouchers carry whole seconds).
pub fn whole_seconds(time: Timestamp) -> Timestamp {
    Timestamp::from_second(time.as_second()).unwrap_or(time)
}

/// Midnight (store time) ending the day `days` days after `from`'s day: a voucher issued on
/// 1 March valid 90 days is good through 30 May, the whole day.
pub fn end_of_day_after(from: Timestamp, days: u32, tz: &jiff::tz::TimeZone) -> Timestamp {
    let date = from.to_zoned(tz.clone()).date();
    let fallback =
        Timestamp::from_second(from.as_second() + (i64::from(days) + 1) * 86_400).unwrap_or(from);
    date.checked_add(jiff::Span::new().days(i64::from(days) + 1))
        .ok()
        .and_then(|end| end.to_zoned(tz.clone()).ok())
        .map(|zoned| zoned.timestamp())
        .unwrap_or(fallback)
}

/// The last calendar day a voucher is valid (store time), for printing "valid until".
pub fn last_valid_day(voucher: &Voucher, tz: &jiff::tz::TimeZone) -> jiff::civil::Date {
    let last = voucher
        .valid_until
        .checked_sub(jiff::SignedDuration::from_secs(1))
        .unwrap_or(voucher.valid_until);
    last.to_zoned(tz.clone()).date()
}

#[cfg(test)]
mod tests {
    use super::*;
    fn rules() -> RewardRules {
        let config = [
            RewardRuleConfig {
                every_points: 1000,
                value: "12.00".into(),
                validity_days: 90,
                min_spend: None,
            },
            RewardRuleConfig {
                every_points: 500,
                value: "5.00".into(),
                validity_days: 90,
                min_spend: Some("20.00".into()),
            },
        ];
        RewardRules::from_config(&config, 3, true, "EUR").expect("rules")
    }

    #[test]
    fn first_reached_rule_applies() {
        let rules = rules();
        assert_eq!(rules.plan(499), None);
        assert_eq!(
            rules.plan(999),
            Some(IssuePlan {
                rule_index: 1,
                count: 1,
                points: 500,
                value: Money(500)
            })
        );
        assert_eq!(
            rules.plan(2500).map(|p| (p.rule_index, p.count, p.points)),
            Some((0, 2, 2000))
        );
        // Capped per receipt.
        assert_eq!(rules.plan(1_000_000).map(|p| p.count), Some(3));
        // Only on a lane whose answers reach the customer.
        assert_eq!(rules.plan_for_lane(2500, LaneReach::Nowhere), None);
        for reach in [LaneReach::Screen, LaneReach::Paper] {
            assert_eq!(rules.plan_for_lane(2500, reach), rules.plan(2500));
        }
    }

    #[test]
    fn vouchers_are_deterministic_and_valid_through_the_last_day() {
        let rules = rules();
        let plan = rules.plan(1200).expect("plan");
        let tz = jiff::tz::TimeZone::get("Europe/Berlin").expect("tz");
        let now: Timestamp = "2026-03-01T10:15:30.5Z".parse().expect("time");
        let a = rules.vouchers(&plan, "store-1", "R-7", "C-1", now, &tz);
        let b = rules.vouchers(&plan, "store-1", "R-7", "C-1", now, &tz);
        assert_eq!(a, b);
        assert_eq!(a.len(), 1);
        let v = &a[0];
        assert_eq!(
            v.valid_from,
            "2026-03-01T10:15:30Z".parse::<Timestamp>().expect("t")
        );
        // 1 March + 90 days = 30 May; valid through its end, Berlin time (UTC+2 in May).
        assert_eq!(
            v.valid_until,
            "2026-05-30T22:00:00Z".parse::<Timestamp>().expect("t")
        );
        assert_eq!(last_valid_day(v, &tz), jiff::civil::date(2026, 5, 30));
        assert_eq!(v.customer, Some(CustomerBinding::of("C-1")));
        assert!(v.validate().is_ok());
    }

    proptest::proptest! {
        #[test]
        fn never_converts_more_than_the_balance(balance in -10_000i64..10_000_000) {
            if let Some(plan) = rules().plan(balance) {
                proptest::prop_assert!(plan.points <= balance);
                proptest::prop_assert!(plan.count >= 1 && plan.count <= 3);
            }
        }
    }
}
