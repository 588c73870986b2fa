//! `[storage]`: where the embedded database lives and how it is tuned.

use super::{Config, Errors, Section};
use serde::Deserialize;
use std::path::PathBuf;

/// Where and how data is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Data directory (the sled database lives in `{data_dir}/db`).
    pub data_dir: PathBuf,
    /// sled page cache in MiB. sled's own default (1 GiB) is twice a Pi Zero 2 W's RAM.
    pub cache_capacity_mb: u64,
    /// Hours a synced outbox event is kept before compaction removes it.
    pub outbox_retention_hours: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("/var/lib/loyalty-gateway"),
            cache_capacity_mb: 16,
            outbox_retention_hours: 24 * 7,
        }
    }
}

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
