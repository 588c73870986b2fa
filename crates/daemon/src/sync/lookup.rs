//! By-card lookups: a lane that scans a card the store does not know asks the CRM
//! (`GET /v1/stores/{id}/customers/by-card/{card}`) before it enrolls the card offline, so a
//! customer known at head office (another store) is recognised here with her chain-wide id and
//! balance.
//!
//! Invariants:
//! - A lookup never takes longer than `crm.lookup_timeout_ms`, connect and TLS included: the
//!   whole call is under one timeout, and a lookup that runs out is abandoned (its connection
//!   dropped) and the lane enrolls offline.
//! - Lookups of different lanes never wait for each other: each takes an idle connection of a
//!   small pool or opens its own (the changes feed and the uploader have theirs).
//! - When sync is known to be down (the last upload or changes poll failed, or a lookup failed
//!   or timed out less than [`PAUSE_AFTER_FAILURE`] ago), no lookup is tried: an offline store
//!   does not pay the timeout for every new card.

use super::client::{ClientSettings, CrmClient, WireCounters};
use super::status::SyncStatusHandle;
use crate::telemetry::{LookupOutcomeKind, Metrics};
use jiff::Timestamp;
use loyalty_protocol::crm::WireCustomer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long lookups stay off after one failed or timed out.
pub const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// Idle connections kept for lookups.
const IDLE_CONNECTIONS: usize = 4;

/// What a lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum LookupOutcome {
    /// The CRM knows the card: this customer holds it.
    Found(WireCustomer),
    /// The CRM answered 404: nobody in the chain holds it.
    NotFound,
    /// Not asked: sync is known to be down.
    Skipped,
    /// The CRM did not answer within the timeout, or failed (the text says how).
    Failed(String),
}

/// Counters of lookups since start.
#[derive(Debug, Default)]
pub struct LookupCounters {
    /// Cards the CRM knew.
    pub found: AtomicU64,
    /// Cards the CRM did not know.
    pub not_found: AtomicU64,
    /// Lookups not tried (sync down).
    pub skipped: AtomicU64,
    /// Lookups that failed or ran out of time.
    pub failed: AtomicU64,
}

/// The by-card lookup service the lanes share.
pub struct CardLookup {
    store_id: String,
    instance: String,
    settings: ClientSettings,
    wire: Arc<WireCounters>,
    timeout: Duration,
    status: SyncStatusHandle,
    idle: Mutex<Vec<CrmClient>>,
    last_failure: Mutex<Option<Timestamp>>,
    counters: LookupCounters,
    metrics: Option<Metrics>,
}

impl CardLookup {
    /// A lookup service for `store_id` (database `instance`) with `timeout` per lookup.
    pub fn new(
        store_id: String,
        instance: String,
        settings: ClientSettings,
        wire: Arc<WireCounters>,
        timeout: Duration,
        status: SyncStatusHandle,
        metrics: Option<Metrics>,
    ) -> CardLookup {
        CardLookup {
            store_id,
            instance,
            settings,
            wire,
            timeout,
            status,
            idle: Mutex::new(Vec::new()),
            last_failure: Mutex::new(None),
            counters: LookupCounters::default(),
            metrics,
        }
    }

    fn record(&self, counter: &AtomicU64, outcome: LookupOutcomeKind) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.card_lookup(outcome);
        }
    }

    /// The longest a lookup takes.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Lookups since start.
    pub fn counters(&self) -> &LookupCounters {
        &self.counters
    }

    /// Whether sync is known to be down (then lookups are skipped).
    pub fn sync_known_down(&self) -> bool {
        let status = self.status.snapshot();
        if status.upload_failures > 0 || status.feed_failures > 0 {
            return true;
        }
        let last_failure = *self
            .last_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Uploads may well work while lookups do not (head office busy): only time resumes them.
        last_failure.is_some_and(|failed_at| {
            Timestamp::now()
                .duration_since(failed_at)
                .try_into()
                .is_ok_and(|age: Duration| age < PAUSE_AFTER_FAILURE)
        })
    }

    /// Asks the CRM who holds `card`, within the timeout.
    pub async fn lookup(&self, card: &str) -> LookupOutcome {
        if self.sync_known_down() {
            self.record(&self.counters.skipped, LookupOutcomeKind::Skipped);
            return LookupOutcome::Skipped;
        }
        let mut client = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
            .unwrap_or_else(|| CrmClient::new(self.settings.clone(), self.wire.clone()));
        let asked = tokio::time::timeout(
            self.timeout,
            client.get_customer_by_card(&self.store_id, &self.instance, card),
        )
        .await;
        let outcome = match asked {
            Ok(Ok(Some(customer))) => LookupOutcome::Found(customer),
            Ok(Ok(None)) => LookupOutcome::NotFound,
            Ok(Err(err)) => LookupOutcome::Failed(err.to_string()),
            Err(_) => LookupOutcome::Failed(format!(
                "the CRM did not answer within {:?} (crm.lookup_timeout_ms)",
                self.timeout
            )),
        };
        match &outcome {
            LookupOutcome::Found(_) | LookupOutcome::NotFound => {
                if matches!(outcome, LookupOutcome::Found(_)) {
                    self.record(&self.counters.found, LookupOutcomeKind::Found);
                } else {
                    self.record(&self.counters.not_found, LookupOutcomeKind::NotFound);
                }
                let mut idle = self
                    .idle
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if idle.len() < IDLE_CONNECTIONS {
                    idle.push(client);
                }
            }
            LookupOutcome::Failed(reason) => {
                // The connection may be mid-request: dropped with `client`.
                self.record(&self.counters.failed, LookupOutcomeKind::Failed);
                *self
                    .last_failure
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Timestamp::now());
                tracing::warn!(
                    reason = %reason,
                    pause_secs = PAUSE_AFTER_FAILURE.as_secs(),
                    "CRM card lookup abandoned; the card is enrolled offline, and lookups pause until sync works again"
                );
            }
            LookupOutcome::Skipped => {}
        }
        outcome
    }
}
