//! `[rewards]`: QR vouchers: signing key, trusted keys, issuing rules, redemption settings.

use super::{Config, Errors, Section};
use crate::money::Money;
use serde::Deserialize;
use std::path::PathBuf;

/// An issuing rule: every `every_points` become a voucher worth `value`.
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

/// A trusted public key for voucher signatures.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct TrustedKeyConfig {
    /// Key id carried in vouchers.
    pub key_id: String,
    /// Ed25519 public key, base64.
    pub public_key: String,
}

/// Voucher settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RewardsConfig {
    /// The store's Ed25519 signing key file (mode 0600); `keys generate` writes it.
    pub signing_key_file: Option<PathBuf>,
    /// Key id for the store's key (defaults to `store-{store_id}`).
    pub key_id: Option<String>,
    /// Public keys trusted besides the store's own.
    pub trusted_keys: Vec<TrustedKeyConfig>,
    /// Issuing rules (at most one is applied per receipt: the first that matches).
    pub rules: Vec<RewardRuleConfig>,
    /// Largest goodwill voucher staff may issue, as a decimal amount.
    pub goodwill_max_value: String,
    /// Seconds a voucher stays reserved for a lane before it is released.
    pub reservation_timeout_secs: u64,
    /// `"named"`: redeemed when a receipt lists it in `rewards`; `"next_receipt"`: redeemed by
    /// the lane's next receipt even if the till does not name it.
    pub redeem_on: String,
}

impl Default for RewardsConfig {
    fn default() -> Self {
        RewardsConfig {
            signing_key_file: None,
            key_id: None,
            trusted_keys: Vec::new(),
            rules: Vec::new(),
            goodwill_max_value: "10.00".into(),
            reservation_timeout_secs: 300,
            redeem_on: "named".into(),
        }
    }
}

impl Section for RewardsConfig {
    fn validate(&self, path: &str, config: &Config, errors: &mut Errors) {
        let decimals = crate::money::currency_decimals(&config.store.currency);
        for (index, rule) in self.rules.iter().enumerate() {
            let at = format!("{path}.rules[{index}]");
            errors.check(
                rule.every_points > 0,
                format!("{at}.every_points"),
                "must be positive",
            );
            errors.check(
                Money::parse(&rule.value, decimals).is_ok_and(|m| m.0 > 0),
                format!("{at}.value"),
                "must be a positive decimal amount such as \"5.00\"",
            );
            errors.check(
                rule.validity_days > 0,
                format!("{at}.validity_days"),
                "must be positive",
            );
        }
        for (index, key) in self.trusted_keys.iter().enumerate() {
            errors.check(
                !key.key_id.is_empty(),
                format!("{path}.trusted_keys[{index}].key_id"),
                "required",
            );
            errors.check(
                !key.public_key.is_empty(),
                format!("{path}.trusted_keys[{index}].public_key"),
                "required: a base64 Ed25519 public key",
            );
        }
        errors.check(
            Money::parse(&self.goodwill_max_value, decimals).is_ok_and(|m| m.0 >= 0),
            format!("{path}.goodwill_max_value"),
            "must be a decimal amount",
        );
        errors.check(
            self.redeem_on == "named" || self.redeem_on == "next_receipt",
            format!("{path}.redeem_on"),
            "must be \"named\" or \"next_receipt\"",
        );
    }
}
