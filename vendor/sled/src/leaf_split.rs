//! loyalty-gateway patch: the number of entries above which a leaf node splits, per tree.
//!
//! Upstream sled splits every leaf above 16 entries. A database's open time is proportional to
//! its number of pages (the snapshot's page table is read and the segment accounting rebuilt),
//! so two trees of a million small keys each (about 200,000 leaves) cost ~200 ms at every
//! start. Larger leaves in the big, read-mostly trees cut the pages; the small, append-heavy
//! trees keep small leaves, since every insert clones its leaf in memory and a consolidation
//! rewrites it whole. The setting only changes when leaves split: data written with any value
//! reads back with any other.

use std::sync::RwLock;

/// Upstream's split threshold for leaves.
const DEFAULT_LEAF_SPLIT_ENTRIES: usize = 16;

static OVERRIDES: RwLock<Vec<(Vec<u8>, usize)>> = RwLock::new(Vec::new());

/// Leaves of every tree named `tree_name` (in any database of this process) opened after this
/// call split above `entries` entries (at least 4, at most 1024).
pub fn set_leaf_split_entries(tree_name: &[u8], entries: usize) {
    let entries = entries.clamp(4, 1024);
    let mut overrides = OVERRIDES.write().unwrap_or_else(|poison| poison.into_inner());
    if let Some(entry) = overrides.iter_mut().find(|(name, _)| name == tree_name) {
        entry.1 = entries;
    } else {
        overrides.push((tree_name.to_vec(), entries));
    }
}

/// The threshold for a tree being opened (read once per tree handle, not per operation).
pub(crate) fn entries_for(tree_name: &[u8]) -> usize {
    OVERRIDES
        .read()
        .unwrap_or_else(|poison| poison.into_inner())
        .iter()
        .find(|(name, _)| name == tree_name)
        .map_or(DEFAULT_LEAF_SPLIT_ENTRIES, |(_, entries)| *entries)
}
