//! `[redeem]`: paying with points at the till (SPEC 2.3 `redeem`): what a point is worth, the
//! largest redemption, and how long a reservation holds the points for the lane's open sale.

use super::{Config, Errors, Section};
use loyalty_core::money::Money;
use loyalty_core::redemption::PointValue;
use serde::Deserialize;

/// Pay with points.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RedeemConfig {
    /// What one point is worth as a discount, a decimal amount of the store's currency
    /// (at least its smallest unit), e.g. `"0.01"`.
    pub point_value: String,
    /// The most points one redemption may take.
    pub max_points: i64,
    /// Seconds a reservation holds the points for the lane's open sale before it expires
    /// (released by the sweep; an expired reservation never commits).
    pub reservation_secs: u64,
}

impl Default for RedeemConfig {
    fn default() -> Self {
        RedeemConfig {
            point_value: "0.01".into(),
            max_points: 1_000_000,
            reservation_secs: 900,
        }
    }
}

impl RedeemConfig {
    /// The point value in the store's currency with `decimals` (the default's when invalid,
    /// which validation refuses before the daemon runs).
    pub fn point_value(&self, decimals: u32) -> PointValue {
        PointValue {
            minor_per_point: Money::parse(&self.point_value, decimals)
                .map(|m| m.0)
                .unwrap_or(1)
                .max(1),
            max_points: self.max_points,
        }
    }

    /// How long a reservation holds.
    pub fn reservation(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::from_secs(self.reservation_secs.min(86_400) as i64)
    }
}

impl Section for RedeemConfig {
    fn validate(&self, path: &str, config: &Config, errors: &mut Errors) {
        let decimals = loyalty_core::money::currency_decimals(&config.store.currency);
        errors.check(
            Money::parse(&self.point_value, decimals).is_ok_and(|m| m.0 > 0),
            format!("{path}.point_value"),
            "must be a positive decimal amount of the store's currency, such as \"0.01\"",
        );
        errors.check(
            self.max_points > 0,
            format!("{path}.max_points"),
            "must be positive",
        );
        errors.check(
            (5..=86_400).contains(&self.reservation_secs),
            format!("{path}.reservation_secs"),
            "must be 5 to 86400 seconds (a reservation must outlast a sale and not hold points for days; 900 is usual)",
        );
    }
}
