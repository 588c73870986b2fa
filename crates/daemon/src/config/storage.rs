//! `[storage]`: where the embedded database lives and how it is tuned.

use super::{Config, Errors, Section};
pub use loyalty_store::StorageConfig;

impl Section for StorageConfig {
    fn validate(&self, path: &str, config: &Config, errors: &mut Errors) {
        errors.check(
            !self.data_dir.as_os_str().is_empty(),
            format!("{path}.data_dir"),
            "required: a directory the gateway may write",
        );
        errors.check(
            (1..=1024).contains(&self.cache_capacity_mb),
            format!("{path}.cache_capacity_mb"),
            "must be between 1 and 1024 (MiB); 16 suits a Pi Zero 2 W",
        );
        // A return inside the window must find its sale (0: receipts are kept for ever).
        let window = config.rules.vesting_days;
        errors.check(
            self.receipt_retention_days == 0
                || (self.receipt_retention_days > window && self.receipt_retention_days <= 36_500),
            format!("{path}.receipt_retention_days"),
            format!(
                "must be longer than the return window (rules.vesting_days = {window}) and at most \
                 36500, or 0 to keep receipts for ever: a return inside the window must find its \
                 sale to claw its points back"
            ),
        );
    }
}
