//! `[rules]`: the earning rules as written in the file (`loyalty_core::rules::RulesConfig`);
//! validation builds the pure earning function and names every problem by key path.

use super::{Config, Errors, Section};
pub use loyalty_core::rules::{PromotionConfig, RoundingMode, RulesConfig, TierConfig};

impl Section for RulesConfig {
    /// Validation is the build of the exact rules (`rules::EarningRules::from_config`), so the
    /// file and rules pushed by the CRM are checked by the same code.
    fn validate(&self, path: &str, config: &Config, errors: &mut Errors) {
        if let Err(err) =
            loyalty_core::rules::EarningRules::from_config(self, &config.store.currency)
        {
            for problem in err.problems {
                errors.push(format!("{path}.{}", problem.key), problem.message);
            }
        }
    }
}
