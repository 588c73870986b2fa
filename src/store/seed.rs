//! Bulk seeding of synthetic customers, for footprint and start-up measurements only
//! (`benches/footprint`, and `loyalty-gateway seed-test-customers` for `cross/measure.sh` on a
//! Pi): writes customer records and card index entries in batches, without journal entries or
//! outbox events, each batch made durable before the next. Never used by the daemon.

use super::records::CustomerRec;
use super::{Store, StoreError, CARDS, CUSTOMERS};
use crate::config::Config;
use jiff::Timestamp;
use std::process::ExitCode;

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
                let bytes =
                    serde_json::to_vec(&rec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
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

/// `loyalty-gateway seed-test-customers`: fills an *empty* store with `count` synthetic
/// customers (cards `{prefix}{n}`, the prefix given or the first of `cards.prefixes`), so that
/// idle memory and start-up can be measured on the box itself (`cross/measure.sh`). Refuses a
/// store that already holds customers: synthetic customers never mix with real ones.
pub fn seed_test_customers_command(
    config: Config,
    count: u64,
    card_prefix: Option<String>,
) -> anyhow::Result<ExitCode> {
    let prefix = match card_prefix.or_else(|| config.cards.prefixes.first().cloned()) {
        Some(prefix) if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()) => prefix,
        Some(prefix) => anyhow::bail!("card prefix {prefix:?} must be digits"),
        None => anyhow::bail!("no card prefix: pass --card-prefix or configure cards.prefixes"),
    };
    let digits = 13usize.saturating_sub(prefix.len());
    if 10u64.saturating_pow(digits as u32) < count {
        anyhow::bail!(
            "{count} customers do not fit 13-digit cards after prefix {prefix:?}; use a shorter prefix"
        );
    }
    let store = Store::open(&config.storage, &config.store.id)?;
    if store.has_customers() {
        anyhow::bail!(
            "the store in {} already holds customers; seed-test-customers only fills an empty \
             store (use a scratch storage.data_dir for measurements)",
            config.storage.data_dir.display()
        );
    }
    let started = std::time::Instant::now();
    store.seed_customers(count, &prefix, Timestamp::now())?;
    println!(
        "seeded {count} test customers (cards {prefix}{:0digits$} upwards) into {} in {:.1} s",
        0,
        config.storage.data_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
