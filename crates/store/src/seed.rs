//! Bulk seeding of synthetic customers, for footprint and start-up measurements only
//! (`benches/footprint`, and `loyalty-gateway seed-test-customers` for `cross/measure.sh` on a
//! Pi): writes customer records and card index entries in batches, without journal entries or
//! outbox events, each batch made durable before the next. Never used by the daemon.

use super::records::CustomerRec;
use super::{Store, StoreError, CARDS, CUSTOMERS};
use crate::Failure;
use jiff::Timestamp;

/// Customers written per sled batch. A sled batch keeps every version of the leaves it
/// rewrites until it ends, and the store disables sled's own flusher: 10,000 customers per
/// batch without a flush in between took 3 GB of memory for 300,000 customers (and left a
/// bloated file to compact at the next open); 1,000 per batch, each flushed, takes ~70 MB.
const BATCH: u64 = 1_000;

impl Store {
    /// Writes `count` customers with cards `{card_prefix}{n}` (zero-padded to 13 digits) and ids
    /// `seed-{n}`. For measurements only: no events reach the CRM.
    #[doc(hidden)]
    pub fn seed_customers(
        &self,
        count: u64,
        card_prefix: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let width = 13usize.saturating_sub(card_prefix.len());
        let mut start = 0;
        while start < count {
            let end = (start + BATCH).min(count);
            let mut customers = sled::Batch::default();
            let mut cards = sled::Batch::default();
            for n in start..end {
                let id = format!("seed-{n}");
                let card = format!("{card_prefix}{n:0width$}");
                let rec = CustomerRec::enrolled_locally(id.clone(), card.clone(), at);
                let bytes = serde_json::to_vec(&rec)
                    .map_err(|e| StoreError::Failed(Failure::Corrupt(e.to_string())))?;
                customers.insert(id.as_bytes(), bytes);
                cards.insert(card.as_bytes(), id.as_bytes());
            }
            self.tree(CUSTOMERS).apply_batch(customers)?;
            self.tree(CARDS).apply_batch(cards)?;
            self.wait_durable()?;
            start = end;
        }
        Ok(())
    }

    /// Whether the store holds any customer.
    pub fn has_customers(&self) -> bool {
        !self.tree(CUSTOMERS).is_empty()
    }
}
