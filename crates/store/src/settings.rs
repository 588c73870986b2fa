//! Where and how the store keeps its data (`[storage]` in the configuration file).

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
    /// Days a receipt is kept (for duplicates and returns) before [`crate::Store::prune_receipts`]
    /// removes it; 0 keeps receipts for ever. Must be longer than the return window
    /// (`rules.vesting_days`). Receipts the CRM has not acknowledged are never removed.
    pub receipt_retention_days: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("/var/lib/loyalty-gateway"),
            cache_capacity_mb: 16,
            outbox_retention_hours: 24 * 7,
            receipt_retention_days: 0,
        }
    }
}
