//! The voucher settings a running gateway needs, built from `[store]` and `[rewards]`: the
//! store's signing key (read from its file: shell side), trusted keys, issuing rules, the
//! reservation timeout and when a redemption is committed.

use super::issue::{RewardRules, RuleError};
use super::keyfile::{self, KeyFileError};
use super::keys::{KeyError, StoreKey, TrustedKeys};
use crate::config::Config;
use crate::money::Money;

/// When a reserved voucher is redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemOn {
    /// When a receipt of the lane names it in `rewards`.
    Named,
    /// By the lane's next receipt, named or not.
    NextReceipt,
}

/// Everything the voucher store needs besides the database.
#[derive(Debug, Clone)]
pub struct VoucherSettings {
    /// The store's currency.
    pub currency: String,
    /// The store's time zone.
    pub time_zone: jiff::tz::TimeZone,
    /// The store's signing key (needed to issue; not to redeem).
    pub store_key: Option<StoreKey>,
    /// Issuing rules.
    pub rules: RewardRules,
    /// How long a scan holds a voucher for its lane.
    pub reservation_timeout: jiff::SignedDuration,
    /// When a redemption is committed.
    pub redeem_on: RedeemOn,
    /// Largest goodwill voucher.
    pub goodwill_max: Money,
    /// Default validity of goodwill vouchers, days.
    pub goodwill_days: u32,
}

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
    Amount(#[from] crate::money::MoneyError),
}

impl VoucherSettings {
    /// Builds the settings, reading the signing key file (refused when its mode is loose).
    pub fn from_config(config: &Config) -> Result<VoucherSettings, SettingsError> {
        let store_key = keyfile::load_store_key(config)?;
        Self::with_key(config, store_key)
    }

    /// Builds the settings with a given store key (tests, or no key file).
    pub fn with_key(
        config: &Config,
        store_key: Option<StoreKey>,
    ) -> Result<VoucherSettings, SettingsError> {
        let currency = config.store.currency.clone();
        let decimals = crate::money::currency_decimals(&currency);
        let rewards = &config.rewards;
        Ok(VoucherSettings {
            rules: RewardRules::from_config(rewards, &currency)?,
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

    /// The trusted keys of the configuration plus the store's own key.
    pub fn trusted_keys(&self, config: &Config) -> Result<TrustedKeys, SettingsError> {
        Ok(TrustedKeys::from_config(
            &config.rewards,
            self.store_key.as_ref(),
        )?)
    }
}
