//! `[rewards]`: QR vouchers: signing key, trusted keys, issuing rules, redemption settings.

use super::{Config, Errors, Section};
use loyalty_core::money::Money;
pub use loyalty_core::voucher::issue::RewardRuleConfig;
use serde::Deserialize;
use std::path::PathBuf;

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
    /// Most vouchers issued for one receipt (a large CRM adjustment must not print dozens).
    pub max_vouchers_per_receipt: u32,
    /// Bind earned vouchers to the customer who earned them (they must scan their card first).
    pub bind_earned_vouchers: bool,
    /// Days a goodwill voucher stays valid unless `--days` says otherwise.
    pub goodwill_validity_days: u32,
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
            max_vouchers_per_receipt: 3,
            bind_earned_vouchers: true,
            goodwill_validity_days: 30,
        }
    }
}

impl Section for RewardsConfig {
    fn validate(&self, path: &str, config: &Config, errors: &mut Errors) {
        let decimals = loyalty_core::money::currency_decimals(&config.store.currency);
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
                (1..=3660).contains(&rule.validity_days),
                format!("{at}.validity_days"),
                "must be 1 to 3660 days",
            );
            if let Some(min_spend) = &rule.min_spend {
                errors.check(
                    Money::parse(min_spend, decimals).is_ok_and(|m| m.0 >= 0),
                    format!("{at}.min_spend"),
                    "must be a decimal amount such as \"20.00\"",
                );
            }
        }
        errors.check(
            self.rules.is_empty() || self.signing_key_file.is_some(),
            format!("{path}.signing_key_file"),
            "required when rewards.rules are set (create one with `loyalty-gateway keys generate --out PATH`)",
        );
        if let Some(key_id) = &self.key_id {
            errors.check(
                loyalty_core::voucher::valid_key_id(key_id),
                format!("{path}.key_id"),
                "must be 1 to 32 letters, digits, '-', '_' or '.'",
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (index, key) in self.trusted_keys.iter().enumerate() {
            let at = format!("{path}.trusted_keys[{index}]");
            errors.check(
                loyalty_core::voucher::valid_key_id(&key.key_id),
                format!("{at}.key_id"),
                "required: 1 to 32 letters, digits, '-', '_' or '.'",
            );
            errors.check(
                seen.insert(key.key_id.as_str()),
                format!("{at}.key_id"),
                "duplicate key id",
            );
            // `public_key` is checked by parsing it, once, in `built::build`.
        }
        errors.check(
            (10..=86_400).contains(&self.reservation_timeout_secs),
            format!("{path}.reservation_timeout_secs"),
            "must be 10 to 86400 seconds",
        );
        errors.check(
            (1..=20).contains(&self.max_vouchers_per_receipt),
            format!("{path}.max_vouchers_per_receipt"),
            "must be 1 to 20",
        );
        errors.check(
            (1..=3660).contains(&self.goodwill_validity_days),
            format!("{path}.goodwill_validity_days"),
            "must be 1 to 3660 days",
        );
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

#[cfg(test)]
mod tests {
    fn errors_of(text: &str) -> Vec<String> {
        match crate::config::parse(text) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn rewards_errors_name_their_keys() {
        let errors = errors_of(
            "[store]\nid = \"S1\"\n\n[rewards]\nredeem_on = \"sometimes\"\n\
             reservation_timeout_secs = 1\n\n\
             [[rewards.rules]]\nevery_points = 500\nvalue = \"5.00\"\nvalidity_days = 90\n\
             min_spend = \"x\"\n\n\
             [[rewards.trusted_keys]]\nkey_id = \"ho\"\npublic_key = \"AAAA\"\n",
        );
        for key in [
            "rewards.redeem_on",
            "rewards.reservation_timeout_secs",
            "rewards.rules[0].min_spend",
            "rewards.signing_key_file",
            "rewards.trusted_keys[0].public_key",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key} missing from {errors:?}"
            );
        }
    }

    #[test]
    fn a_complete_rewards_section_is_valid() {
        let public = loyalty_core::voucher::keys::public_key_base64(
            &ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]).verifying_key(),
        );
        let text = format!(
            "[store]\nid = \"S1\"\n\n[rewards]\nsigning_key_file = \"/etc/lg/store.key\"\n\n\
             [[rewards.rules]]\nevery_points = 500\nvalue = \"5.00\"\nvalidity_days = 90\n\n\
             [[rewards.trusted_keys]]\nkey_id = \"ho-2026\"\npublic_key = \"{public}\"\n"
        );
        assert_eq!(errors_of(&text), Vec::<String>::new());
    }
}
