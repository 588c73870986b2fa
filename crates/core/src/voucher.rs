//! QR reward vouchers (SPEC 2.6): the signed compact format ([`format`]), the pure redemption
//! decision ([`check`]), issuing rules ([`issue`]) and keys in memory ([`keys`]). The signing
//! key file and the `keys` / `voucher` subcommands live in the daemon (`vouchers`).
//!
//! Invariant: `format`, `check`, `issue` and `keys` do no I/O and never import tokio or sled;
//! redemption state lives in `store::vouchers`, images in `render`.

pub mod check;
pub mod format;
pub mod issue;
pub mod keys;
pub mod settings;

pub use check::{
    check, check_receipt, check_text, CheckContext, Clock, Discount, RedemptionState, Refusal,
    Revocations, Verdict,
};
pub use format::{
    decode, is_voucher_text, valid_key_id, Benefit, CustomerBinding, FormatError, SignedVoucher,
    Voucher, VoucherId, QR_PREFIX,
};
pub use issue::{IssuePlan, RewardRules};
pub use keys::{KeyAnnouncement, KeyChange, KeyError, StoreKey, TrustedKeys};
pub use settings::{RedeemOn, VoucherSettings};
