//! The voucher settings a running gateway needs, built from `[store]` and `[rewards]`: the
//! store's signing key (read from its file: shell side), trusted keys, issuing rules, the
//! reservation timeout and when a redemption is committed.

use crate::config::{Built, Config};
use crate::vouchers::keyfile::{self, KeyFileError};
use loyalty_core::money::Money;
use loyalty_core::voucher::issue::{RewardRules, RuleError};
use loyalty_core::voucher::keys::{KeyError, StoreKey, TrustedKeys};
pub use loyalty_core::voucher::settings::{RedeemOn, VoucherSettings};

/// Why the voucher settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The signing key file is unusable.
    #[error("rewards.signing_key_file: {0}")]
    KeyFile(#[from] KeyFileError),
    /// A trusted key is unusable.
    #[error("rewards.trusted_keys: {0}")]
    TrustedKey(#[from] KeyError),
    /// A rule is unusable.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// An amount is unusable.
    #[error("rewards.goodwill_max_value: {0}")]
    Amount(#[from] loyalty_core::money::MoneyError),
}

/// Builders of [`VoucherSettings`] from the configuration as built at load ([`Built`]: its
/// issuing rules and trusted keys are already parsed; only the signing key file is read here).
pub trait VoucherSettingsExt: Sized {
    /// The settings of `[store]` and `[rewards]`, reading the signing key file (refused when
    /// its mode is loose).
    fn from_config(config: &Built) -> Result<Self, SettingsError>;
    /// The settings with a given store key (tests, or no key file).
    fn with_key(config: &Built, store_key: Option<StoreKey>) -> Result<Self, SettingsError>;
    /// The trusted keys of the configuration plus the store's own key.
    fn trusted_keys(&self, config: &Built) -> Result<TrustedKeys, SettingsError>;
}

impl VoucherSettingsExt for VoucherSettings {
    fn from_config(config: &Built) -> Result<VoucherSettings, SettingsError> {
        let store_key = keyfile::load_store_key(&config.raw)?;
        Self::with_key(config, store_key)
    }

    fn with_key(
        config: &Built,
        store_key: Option<StoreKey>,
    ) -> Result<VoucherSettings, SettingsError> {
        with_rules(&config.raw, config.reward_rules.clone(), store_key)
    }

    fn trusted_keys(&self, config: &Built) -> Result<TrustedKeys, SettingsError> {
        let keys = TrustedKeys::new();
        for (key_id, key) in &config.trusted_keys {
            keys.insert(key_id, *key)?;
        }
        if let Some(store_key) = &self.store_key {
            keys.insert(&store_key.key_id, store_key.signing.verifying_key())?;
        }
        Ok(keys)
    }
}

/// The settings of `[store]` and `[rewards]` around issuing rules already built.
fn with_rules(
    config: &Config,
    rules: RewardRules,
    store_key: Option<StoreKey>,
) -> Result<VoucherSettings, SettingsError> {
    let currency = config.store.currency.clone();
    let decimals = loyalty_core::money::currency_decimals(&currency);
    let rewards = &config.rewards;
    Ok(VoucherSettings {
        rules,
        time_zone: config.store.time_zone(),
        store_key,
        reservation_timeout: jiff::SignedDuration::from_secs(
            rewards.reservation_timeout_secs.min(86_400) as i64,
        ),
        redeem_on: if rewards.redeem_on == "next_receipt" {
            RedeemOn::NextReceipt
        } else {
            RedeemOn::Named
        },
        goodwill_max: Money::parse(&rewards.goodwill_max_value, decimals)?,
        goodwill_days: rewards.goodwill_validity_days,
        currency,
    })
}
