//! Every metric of the hub (Prometheus text via prometheus-client), named here and nowhere else:
//! events ingested, batches, batches refused by reason, double redemptions by kind, TLS
//! failures, and per store the seconds since it was last heard from and how many stores have
//! not been seen for `monitoring.stale_store_minutes` (both read from the database at scrape
//! time, so every hub process reports the chain's truth).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of refused batches.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// `malformed`, `wrong_store`, `too_large`, `sequence_gap`, `sequence_conflict`, ...
    pub reason: String,
}

/// Label of double redemptions.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// `voucher` or `points`.
    pub kind: String,
}

/// Label of per-store gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Store {
    /// Store id.
    pub store: String,
}

/// The hub's metrics.
pub struct Metrics {
    registry: Registry,
    /// Events stored (first time).
    pub events_ingested: Counter,
    /// Batches answered 200.
    pub batches: Counter,
    /// Batches refused, by reason.
    pub refused: Family<Reason, Counter>,
    /// Double redemptions detected, by kind.
    pub double_redemptions: Family<Kind, Counter>,
    /// Customers merged.
    pub merges: Counter,
    /// Failed TLS handshakes.
    pub tls_failures: Counter,
    /// Seconds since each store's last upload.
    pub store_last_seen_age: Family<Store, Gauge>,
    /// Stores not seen for the configured minutes.
    pub stores_not_seen: Gauge,
    /// Admin API changes accepted, by kind.
    pub admin_changes: Family<Kind, Counter>,
    /// (store, erasure) pairs not confirmed yet (read from the database at scrape time).
    pub erasures_pending: Gauge,
    /// Erasures confirmed by a store's `customer_erased` event.
    pub erasures_confirmed: Counter,
}

impl Metrics {
    /// A fresh registry.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("loyalty_hub");
        let events_ingested = Counter::default();
        let batches = Counter::default();
        let refused = Family::<Reason, Counter>::default();
        let double_redemptions = Family::<Kind, Counter>::default();
        let merges = Counter::default();
        let tls_failures = Counter::default();
        let store_last_seen_age = Family::<Store, Gauge>::default();
        let stores_not_seen = Gauge::default();
        let admin_changes = Family::<Kind, Counter>::default();
        let erasures_pending = Gauge::default();
        let erasures_confirmed = Counter::default();
        registry.register(
            "admin_changes",
            "Admin API changes accepted, by kind (customer, rules, key, offer, adjustment, erasure)",
            admin_changes.clone(),
        );
        registry.register(
            "erasures_pending",
            "Stores that have not yet confirmed an erasure (one per store and customer)",
            erasures_pending.clone(),
        );
        registry.register(
            "erasures_confirmed",
            "Erasures confirmed by a store's customer_erased event",
            erasures_confirmed.clone(),
        );
        registry.register(
            "events_ingested",
            "Events stored for the first time",
            events_ingested.clone(),
        );
        registry.register("batches", "Upload batches acknowledged", batches.clone());
        registry.register(
            "batches_refused",
            "Upload batches refused, by reason",
            refused.clone(),
        );
        registry.register(
            "double_redemptions",
            "Vouchers redeemed twice or points spent beyond the chain-wide balance",
            double_redemptions.clone(),
        );
        registry.register(
            "customer_merges",
            "Customers merged (same card enrolled in two stores)",
            merges.clone(),
        );
        registry.register(
            "tls_failures",
            "Failed TLS handshakes",
            tls_failures.clone(),
        );
        registry.register(
            "store_last_seen_age_seconds",
            "Seconds since the store's last upload",
            store_last_seen_age.clone(),
        );
        registry.register(
            "stores_not_seen",
            "Stores not heard from for monitoring.stale_store_minutes",
            stores_not_seen.clone(),
        );
        Metrics {
            registry,
            events_ingested,
            batches,
            refused,
            double_redemptions,
            merges,
            tls_failures,
            store_last_seen_age,
            stores_not_seen,
            admin_changes,
            erasures_pending,
            erasures_confirmed,
        }
    }

    /// Counts an accepted admin change.
    pub fn admin_change(&self, kind: &str) {
        self.admin_changes
            .get_or_create(&Kind {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Counts a refused batch.
    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&Reason {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a double redemption.
    pub fn double_redemption(&self, kind: &str) {
        self.double_redemptions
            .get_or_create(&Kind {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// The Prometheus text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
