//! `[rules]`: the earning rules as written in the file (`loyalty_core::rules::RulesConfig`).
//! They are checked by building them (`rules::EarningRules::from_config`, in `built`), so the
//! file and rules pushed by the CRM are checked by the same code.

pub use loyalty_core::rules::{PromotionConfig, RoundingMode, RulesConfig, TierConfig};
