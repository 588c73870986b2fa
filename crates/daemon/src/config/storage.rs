//! `[storage]`: where the embedded database lives and how it is tuned.

use super::{Config, Errors, Section};
pub use loyalty_store::StorageConfig;

impl Section for StorageConfig {
    fn validate(&self, path: &str, _config: &Config, errors: &mut Errors) {
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
    }
}
