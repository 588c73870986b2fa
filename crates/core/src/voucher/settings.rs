//! What the voucher store needs besides its database: currency, time zone, the store's
//! signing key, issuing rules, reservation timeout and when a redemption is committed. The
//! daemon builds it from the configuration (`loyalty_daemon::vouchers::settings`).

use super::issue::RewardRules;
use super::keys::StoreKey;
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
