//! The metric registry ([`Metrics`]): every metric name (all prefixed `loyalty_`), registered
//! once at zero, with the typed recording methods the other modules call and the
//! Prometheus/OpenMetrics rendering served on `GET /metrics`.

use super::families::{
    AnswerKind, LookupOutcomeKind, ReceiptOutcome, RedemptionOutcome, ScanKind, SyncErrorKind,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ScanLabel {
    kind: ScanKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SyncErrorLabel {
    kind: SyncErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LookupLabel {
    outcome: LookupOutcomeKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: ReceiptOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RedemptionLabel {
    outcome: RedemptionOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabel {
    r#type: AnswerKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeviceLabel {
    device: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WhatLabel {
    what: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Upper bounds (seconds) of the answer-latency histogram: 0.5 ms to 2.5 s.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds (seconds) of the answer-age histogram: 1 ms to 60 s (past capacity an input
/// may wait in the gateway's queue before its lane gets to it).
const AGE_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// The metric registry and its handles. Clone it freely: clones share the same metrics, and
/// every recording method is a few atomic operations.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<MetricsInner>,
}

struct MetricsInner {
    registry: Registry,
    scans: Family<ScanLabel, Counter>,
    receipts: Family<OutcomeLabel, Counter>,
    points_earned: Counter,
    points_reversed: Counter,
    answer_latency: Family<TypeLabel, Histogram>,
    answer_age: Histogram,
    input_queue_depth: Gauge,
    outbox_depth: Gauge,
    outbox_oldest_age: FloatGauge,
    device_up: Family<DeviceLabel, Gauge>,
    broker_connected: Gauge,
    sync_errors: Family<SyncErrorLabel, Counter>,
    sync_acked: Counter,
    sync_last_success: Gauge,
    card_lookups: Family<LookupLabel, Counter>,
    vouchers_issued: Counter,
    unknown_categories: Counter,
    vouchers_redeemed: Counter,
    clock_untrusted: Gauge,
    untrusted_stamps: Counter,
    invariant_violations: Family<WhatLabel, Counter>,
    redemptions: Family<RedemptionLabel, Counter>,
    reservations_open: Gauge,
    points_reserved: Gauge,
    group_commits: Counter,
    durable_writes: Counter,
    /// Held while the two above catch up with the store's counters (a scrape and housekeeping
    /// may refresh at once; each increment must be counted once).
    durability_refresh: std::sync::Mutex<()>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric registered (at zero).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("loyalty");
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Version of the running gateway (value is always 1)",
            build_info,
        );
        let inner = MetricsInner {
            scans: Family::default(),
            receipts: Family::default(),
            points_earned: Counter::default(),
            points_reversed: Counter::default(),
            answer_latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            answer_age: Histogram::new(AGE_BUCKETS),
            input_queue_depth: Gauge::default(),
            outbox_depth: Gauge::default(),
            outbox_oldest_age: FloatGauge::default(),
            device_up: Family::default(),
            broker_connected: Gauge::default(),
            sync_errors: Family::default(),
            sync_acked: Counter::default(),
            sync_last_success: Gauge::default(),
            card_lookups: Family::default(),
            vouchers_issued: Counter::default(),
            unknown_categories: Counter::default(),
            vouchers_redeemed: Counter::default(),
            clock_untrusted: Gauge::default(),
            untrusted_stamps: Counter::default(),
            invariant_violations: Family::default(),
            redemptions: Family::default(),
            reservations_open: Gauge::default(),
            points_reserved: Gauge::default(),
            group_commits: Counter::default(),
            durable_writes: Counter::default(),
            durability_refresh: std::sync::Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register("scans", "Scans handled, by kind", inner.scans.clone());
        registry.register(
            "receipts_unknown_category",
            "Receipts applied with a line category rules.categories does not list (earned nothing)",
            inner.unknown_categories.clone(),
        );
        registry.register(
            "receipts",
            "Receipts handled, by outcome",
            inner.receipts.clone(),
        );
        registry.register(
            "points_earned",
            "Points credited by receipts",
            inner.points_earned.clone(),
        );
        registry.register(
            "points_reversed",
            "Points debited by returns",
            inner.points_reversed.clone(),
        );
        registry.register(
            "answer_latency_seconds",
            "Time from input to answer on the lane, by answer type",
            inner.answer_latency.clone(),
        );
        registry.register(
            "answer_age_seconds",
            "Time from an MQTT input's arrival at the gateway to its answer being published (queueing included)",
            inner.answer_age.clone(),
        );
        registry.register(
            "input_queue_depth",
            "Inputs taken from the edges that no lane has answered yet (queued or being handled)",
            inner.input_queue_depth.clone(),
        );
        registry.register(
            "store_group_commits",
            "Group commits (one flush and fsync each) since start",
            inner.group_commits.clone(),
        );
        registry.register(
            "store_durable_writes",
            "Writes answered only once durable since start (a receipt, a scan that enrolled, ...); over loyalty_store_group_commits_total: how many share one",
            inner.durable_writes.clone(),
        );
        registry.register(
            "outbox_depth",
            "Events in the outbox not yet acknowledged by the CRM",
            inner.outbox_depth.clone(),
        );
        registry.register(
            "outbox_oldest_unsent_age_seconds",
            "Age of the oldest event not yet acknowledged by the CRM (0 when none)",
            inner.outbox_oldest_age.clone(),
        );
        registry.register(
            "serial_device_up",
            "1 while a serial device is open and reading, by configured name",
            inner.device_up.clone(),
        );
        registry.register(
            "broker_connected",
            "1 while connected to the MQTT broker",
            inner.broker_connected.clone(),
        );
        registry.register(
            "sync_errors",
            "Failed CRM sync requests, by kind",
            inner.sync_errors.clone(),
        );
        registry.register(
            "sync_events_acked",
            "Events the CRM acknowledged",
            inner.sync_acked.clone(),
        );
        registry.register(
            "sync_last_success_timestamp_seconds",
            "Unix time of the last successful CRM exchange (0 when none yet)",
            inner.sync_last_success.clone(),
        );
        registry.register(
            "card_lookups",
            "Cards this store did not know, looked up at the CRM before enrolling, by outcome",
            inner.card_lookups.clone(),
        );
        registry.register(
            "vouchers_issued",
            "Vouchers issued by this store",
            inner.vouchers_issued.clone(),
        );
        registry.register(
            "vouchers_redeemed",
            "Vouchers redeemed in this store",
            inner.vouchers_redeemed.clone(),
        );
        registry.register(
            "clock_untrusted",
            "1 while the wall clock is not trusted (no RTC, NTP not yet synchronised)",
            inner.clock_untrusted.clone(),
        );
        registry.register(
            "untrusted_time_events",
            "Scans and receipts handled while the clock was not trusted (their events carry clock_trusted false)",
            inner.untrusted_stamps.clone(),
        );
        registry.register(
            "invariant_violations",
            "Operations rejected because an internal invariant failed, by what",
            inner.invariant_violations.clone(),
        );
        registry.register(
            "points_redemptions",
            "Pay with points: redemptions by outcome (reserved, refused, committed by a receipt or not, released by a void, expired)",
            inner.redemptions.clone(),
        );
        registry.register(
            "points_reservations_open",
            "Pay with points: reservations holding points for a lane's open sale",
            inner.reservations_open.clone(),
        );
        registry.register(
            "points_reserved",
            "Pay with points: points held by open reservations",
            inner.points_reserved.clone(),
        );
        for &outcome in RedemptionOutcome::ALL {
            let _ = inner
                .redemptions
                .get_or_create_owned(&RedemptionLabel { outcome });
        }
        // Export every known series from the start, so rates and alerts work before traffic.
        for &kind in ScanKind::ALL {
            let _ = inner.scans.get_or_create_owned(&ScanLabel { kind });
        }
        for &outcome in ReceiptOutcome::ALL {
            let _ = inner
                .receipts
                .get_or_create_owned(&OutcomeLabel { outcome });
        }
        for &kind in AnswerKind::ALL {
            let _ = inner
                .answer_latency
                .get_or_create_owned(&TypeLabel { r#type: kind });
        }
        for &kind in SyncErrorKind::ALL {
            let _ = inner
                .sync_errors
                .get_or_create_owned(&SyncErrorLabel { kind });
        }
        for &outcome in LookupOutcomeKind::ALL {
            let _ = inner
                .card_lookups
                .get_or_create_owned(&LookupLabel { outcome });
        }
        let mut inner = inner;
        inner.registry = registry;
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// A points redemption went through a step (`n` times).
    pub fn redemption(&self, outcome: RedemptionOutcome, n: u64) {
        self.inner
            .redemptions
            .get_or_create(&RedemptionLabel { outcome })
            .inc_by(n);
    }

    /// Open points reservations and the points they hold (read from the store).
    pub fn reservations(&self, open: u64, points: i64) {
        self.inner
            .reservations_open
            .set(i64::try_from(open).unwrap_or(i64::MAX));
        self.inner.points_reserved.set(points);
    }

    /// A scan was handled.
    pub fn scan(&self, kind: ScanKind) {
        self.inner.scans.get_or_create(&ScanLabel { kind }).inc();
    }

    /// A receipt was handled.
    pub fn receipt(&self, outcome: ReceiptOutcome) {
        self.inner
            .receipts
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Points earned by one receipt (negative for a return).
    pub fn points(&self, earned: i64) {
        if earned >= 0 {
            self.inner.points_earned.inc_by(earned.unsigned_abs());
        } else {
            self.inner.points_reversed.inc_by(earned.unsigned_abs());
        }
    }

    /// An answer of type `kind` went to a lane `latency` after its input arrived.
    pub fn answer(&self, kind: AnswerKind, latency: Duration) {
        self.inner
            .answer_latency
            .get_or_create(&TypeLabel { r#type: kind })
            .observe(latency.as_secs_f64());
    }

    /// An MQTT input was answered `age` after it arrived at the gateway (its wait in the input
    /// queue included); recorded by the broker edge when it acknowledges the input.
    pub fn answer_age(&self, age: Duration) {
        self.inner.answer_age.observe(age.as_secs_f64());
    }

    /// The input queue holds `depth` inputs not yet answered.
    pub fn input_queue(&self, depth: u64) {
        self.inner
            .input_queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// The store's durability counters since open ([`loyalty_store::Store::durability_stats`]).
    pub fn durability(&self, group_commits: u64, durable_writes: u64) {
        let _refreshing = self
            .inner
            .durability_refresh
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        for (counter, total) in [
            (&self.inner.group_commits, group_commits),
            (&self.inner.durable_writes, durable_writes),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The outbox holds `depth` unacknowledged events, the oldest `oldest_unsent_age` old.
    pub fn outbox(&self, depth: u64, oldest_unsent_age: Option<Duration>) {
        self.inner
            .outbox_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        self.inner
            .outbox_oldest_age
            .set(oldest_unsent_age.map_or(0.0, |age| age.as_secs_f64()));
    }

    /// A serial device came up or went away.
    pub fn device(&self, name: &str, up: bool) {
        self.inner
            .device_up
            .get_or_create(&DeviceLabel {
                device: name.to_string(),
            })
            .set(i64::from(up));
    }

    /// The MQTT connection came up or went down.
    pub fn broker(&self, connected: bool) {
        self.inner.broker_connected.set(i64::from(connected));
    }

    /// A CRM sync request failed.
    pub fn sync_error(&self, kind: SyncErrorKind) {
        self.inner
            .sync_errors
            .get_or_create(&SyncErrorLabel { kind })
            .inc();
    }

    /// A card this store did not know was looked up at the CRM (or not, sync being down).
    pub fn card_lookup(&self, outcome: LookupOutcomeKind) {
        self.inner
            .card_lookups
            .get_or_create(&LookupLabel { outcome })
            .inc();
    }

    /// The CRM acknowledged `events` more events at Unix time `at_unix_seconds`.
    pub fn sync_success(&self, events: u64, at_unix_seconds: i64) {
        self.inner.sync_acked.inc_by(events);
        self.inner.sync_last_success.set(at_unix_seconds);
    }

    /// A voucher was issued.
    pub fn voucher_issued(&self) {
        self.inner.vouchers_issued.inc();
    }

    /// A receipt was applied with categories the rules do not list.
    pub fn unknown_categories(&self) {
        self.inner.unknown_categories.inc();
    }

    /// A voucher was redeemed.
    pub fn voucher_redeemed(&self) {
        self.inner.vouchers_redeemed.inc();
    }

    /// Whether the clock is currently trusted (see `clock`).
    pub fn clock_trusted(&self, trusted: bool) {
        self.inner.clock_untrusted.set(i64::from(!trusted));
    }

    /// A scan or receipt was handled (its events stamped) while the clock was untrusted.
    pub fn untrusted_time_event(&self) {
        self.inner.untrusted_stamps.inc();
    }

    /// An operation was rejected because an internal invariant failed (`what`: a short stable
    /// name such as `"ledger_chain"`).
    pub fn invariant_violation(&self, what: &str) {
        self.inner
            .invariant_violations
            .get_or_create(&WhatLabel {
                what: what.to_string(),
            })
            .inc();
    }

    /// The whole registry in the Prometheus/OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
