//! The daemon's shell: opens the store, starts the edges (MQTT, serial devices, printer
//! proxies, CRM sync, local API), and runs the main loop that routes every [`Input`] to the
//! actor of its lane. A lane actor handles its lane's inputs strictly in order (card scans and
//! receipts of one lane must not overtake each other) while different lanes run in parallel, so
//! their receipts share the store's group commits.
//!
//! Invariant: every input that names a lane gets exactly one answer on that lane (a refusal is
//! an `error` answer); a receipt's answer is sent only after the store reported it durable.

pub mod backend;
mod clock;
mod daemon;
mod lanes;
mod receipt;
mod redeem;
mod scan;
mod screen;

pub use clock::TrustedClock;
use clock::*;
pub use daemon::{receipt_input, request, run_daemon, SHUTDOWN_BOUND};
use lanes::*;
use receipt::*;
use redeem::*;
use scan::*;
use screen::*;

use crate::blocking::blocking;
use crate::config::{Built, Config};
use crate::input::{Handled, Input, Origin, Unreadable};
use crate::mqtt::BrokerState;
use crate::systemd::Heartbeat;
use crate::telemetry::{AnswerKind, Metrics, ReceiptOutcome as ReceiptMetric, ScanKind};
use crate::vouchers::VoucherSettingsExt;
use jiff::{SignedDuration, Timestamp};
use loyalty_core::clock::{ClockGuard, TrustedTime};
use loyalty_core::lane::{CardDecision, Identified, LaneSession};
use loyalty_core::ledger::{EarningPolicy, RulesPolicy};
use loyalty_core::receipt::Receipt;
use loyalty_core::scan::{CardMatcher, Scan};
use loyalty_core::voucher::{Benefit, Verdict};
use loyalty_protocol::till::Response;
use loyalty_protocol::till::{DiscountJson, IssuedVoucherJson};
use loyalty_store::vouchers::{IssuedVoucher, Vouchers};
use loyalty_store::{ReceiptOutcome, Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// State of one configured device (serial port or printer proxy), for health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Open and reading.
    pub up: bool,
    /// The last detail reported (path opened, or the error).
    pub detail: String,
}

/// What the rest of the program (daemon, demo, tests, local API) holds of a running gateway.
#[derive(Clone)]
pub struct GatewayHandle {
    /// Feed inputs directly (the demo's in-process lanes, tests).
    pub inputs: mpsc::Sender<Input>,
    /// Every answer sent to any lane.
    pub answers: broadcast::Sender<Response>,
    /// The store.
    pub store: Store,
    /// Issued, reserved and redeemed vouchers.
    pub vouchers: Vouchers,
    /// The broker connection.
    pub broker: watch::Receiver<BrokerState>,
    /// Devices by configured name.
    pub devices: Arc<Mutex<BTreeMap<String, DeviceStatus>>>,
    /// The rules in force (replaced when the CRM sends new ones).
    pub rules: Arc<RwLock<Arc<RulesPolicy>>>,
    /// Counts of what the main loop did, for summaries and metrics.
    pub counters: Arc<Counters>,
    /// CRM sync: status, rules from the CRM, upload nudges.
    pub sync: Arc<crate::sync::SyncHandle>,
    /// Every metric.
    pub metrics: Metrics,
    /// Bumped by the main loop (input router) on every input and every second when idle.
    pub heartbeat: Heartbeat,
    /// The trusted wall clock.
    pub clock: Arc<Mutex<TrustedClock>>,
    /// Every task the gateway started; [`GatewayHandle::stop`] waits for them.
    pub tasks: TaskTracker,
    storage_failures: Arc<std::sync::atomic::AtomicU64>,
    in_lanes: Arc<std::sync::atomic::AtomicU64>,
}

impl GatewayHandle {
    /// False after storage writes failed repeatedly without a success since (the watchdog and
    /// `/health` use it).
    pub fn storage_ok(&self) -> bool {
        self.storage_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            < 3
    }

    /// The input queue's depth: inputs the edges handed over that no lane has answered yet
    /// (waiting for the router, or in a lane's queue, or being handled). Past capacity the
    /// broker's in-flight window keeps it full; see [`OVERLOAD_QUEUE_DEPTH`].
    pub fn input_queue_depth(&self) -> u64 {
        let routing = self.inputs.max_capacity() - self.inputs.capacity();
        routing as u64 + self.in_lanes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The orderly end, after the `shutdown` token given to [`start`] was cancelled: waits up to
    /// `bound` for every task (the edges stop reading, the lanes finish what they hold, the
    /// broker edge sends the last answers and acknowledgements, publishes the retained
    /// `offline` status and disconnects), then makes sure the last group commit is on disk.
    /// False when tasks were still running at the bound (they are abandoned).
    pub async fn stop(&self, bound: Duration) -> bool {
        self.tasks.close();
        let finished = tokio::time::timeout(bound, self.tasks.wait()).await.is_ok();
        if !finished {
            tracing::warn!(
                still_running = self.tasks.len(),
                bound_ms = bound.as_millis() as u64,
                "shutdown bound reached; abandoning the tasks still running"
            );
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.wait_durable()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(error = %err, "the last writes could not be made durable")
            }
            Err(err) => tracing::error!(error = %err, "the final storage flush failed"),
        }
        finished
    }
}

/// Simple counters of the gateway's work.
#[derive(Debug, Default)]
pub struct Counters {
    /// Scans handled.
    pub scans: std::sync::atomic::AtomicU64,
    /// Receipts durably applied (not counting duplicates).
    pub receipts: std::sync::atomic::AtomicU64,
    /// Duplicate receipts answered with their first outcome.
    pub duplicates: std::sync::atomic::AtomicU64,
    /// Error answers.
    pub errors: std::sync::atomic::AtomicU64,
    /// Points earned (net of returns).
    pub points: std::sync::atomic::AtomicI64,
    /// Customers enrolled offline.
    pub enrolled: std::sync::atomic::AtomicU64,
    /// Vouchers issued.
    pub vouchers_issued: std::sync::atomic::AtomicU64,
    /// Vouchers redeemed.
    pub vouchers_redeemed: std::sync::atomic::AtomicU64,
}

/// Which edges to start.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Connect to the MQTT broker of the configuration.
    pub mqtt: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions { mqtt: true }
    }
}

/// Everything a lane actor needs, shared by all lanes.
struct Shared {
    store: Store,
    vouchers: Vouchers,
    time_zone: jiff::tz::TimeZone,
    rules: Arc<RwLock<Arc<RulesPolicy>>>,
    cards: CardMatcher,
    enroll_unknown: bool,
    /// Where each lane's answers reach the customer (`config::lane_reach`): the issuing rules
    /// convert no points into vouchers on a lane they reach nobody.
    lane_reach: BTreeMap<String, loyalty_core::voucher::issue::LaneReach>,
    /// Answers to the broker's publisher task (None when MQTT is off).
    to_mqtt: Option<crate::mqtt::AnswerSender>,
    /// Answers to in-process observers (tests, the demo, serial displays).
    observers: broadcast::Sender<Response>,
    sync: Arc<crate::sync::SyncHandle>,
    metrics: Metrics,
    clock: Arc<Mutex<TrustedClock>>,
    storage_failures: Arc<std::sync::atomic::AtomicU64>,
    card_before_receipt: SignedDuration,
    card_after_receipt: SignedDuration,
    counters: Arc<Counters>,
    /// Fault injection for crash tests: the receipt with this id is received and never applied
    /// (see [`STALL_RECEIPT_ENV`]).
    stall_receipt: Option<String>,
    /// Inputs handed to a lane actor and not yet answered.
    in_lanes: Arc<std::sync::atomic::AtomicU64>,
    /// Paying with points (`[redeem]`).
    redeem: RedeemSettings,
}

/// `/health` says `overloaded` while the input queue holds at least this many inputs. The
/// gateway holds at most `mqtt::INTAKE_WINDOW` (256) unanswered MQTT inputs, less if the broker's
/// `max_inflight_messages` is lower (100 in `config/mosquitto-gateway.conf`): the queue stays
/// near that window only while the broker holds a backlog for the gateway, and well below it
/// (about one input per busy lane) while the gateway keeps up.
pub const OVERLOAD_QUEUE_DEPTH: u64 = 64;

/// Environment variable naming a receipt id the gateway receives but never applies (its lane
/// stalls on it and logs a warning). Only for crash tests: `kill -9` while it stalls proves the
/// broker still holds the receipt (acknowledged only after it is durable) and redelivers it.
pub const STALL_RECEIPT_ENV: &str = "LOYALTY_FAULT_STALL_RECEIPT";

/// Opens the store and starts the gateway's tasks; they stop when `shutdown` is cancelled.
/// Takes the configuration as built at load: its card matcher, earning rules, voucher rules and
/// receipt profiles are used as they are, never built again.
pub async fn start(
    built: Built,
    options: StartOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<GatewayHandle> {
    let built = Arc::new(built);
    let config = built.raw.clone();
    let store = {
        let storage = config.storage.clone();
        let store_id = config.store.id.clone();
        tokio::task::spawn_blocking(move || Store::open(&storage, &store_id)).await??
    };
    let rules = built.rules.clone();
    let vouchers = {
        let settings = crate::vouchers::VoucherSettings::from_config(&built)
            .map_err(|err| anyhow::anyhow!("rewards: {err}"))?;
        let keys = settings
            .trusted_keys(&built)
            .map_err(|err| anyhow::anyhow!("rewards.trusted_keys: {err}"))?;
        Vouchers::open(&store, settings, keys)?
    };
    {
        // Other stores trust this store's vouchers once the CRM distributes its public key.
        let vouchers = vouchers.clone();
        let now = Timestamp::now();
        if tokio::task::spawn_blocking(move || vouchers.announce_store_key(now)).await?? {
            tracing::info!("announced this store's voucher key to the CRM");
        }
    }
    let cards = built
        .cards
        .clone()
        .with_voucher_prefix(loyalty_core::voucher::QR_PREFIX);
    let rules = Arc::new(RwLock::new(Arc::new(RulesPolicy::new(
        rules,
        config.store.time_zone(),
    ))));

    let metrics = Metrics::new();
    let heartbeat = Heartbeat::new();
    let high_water = {
        let vouchers = vouchers.clone();
        tokio::task::spawn_blocking(move || vouchers.time_floor()).await??
    };
    let clock = Arc::new(Mutex::new(TrustedClock::new(
        high_water,
        config.store.require_ntp_sync,
    )));
    let storage_failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let in_lanes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks = TaskTracker::new();
    let sync = Arc::new(
        crate::sync::start_with_metrics(
            &config,
            store.clone(),
            shutdown.clone(),
            Some(metrics.clone()),
        )
        .map_err(|err| anyhow::anyhow!("crm: {err}"))?,
    );
    {
        let sync = sync.clone();
        tasks.spawn(async move { sync.stopped().await });
    }
    spawn_crm_followers(&tasks, &config, &sync, &rules, &vouchers, &store, &shutdown);

    let (input_tx, input_rx) = mpsc::channel::<Input>(1024);
    // Answers fan out to the broker (when connected) and to in-process observers, straight
    // from the lane (no forwarding task: every hand-off between threads costs latency).
    let (mqtt_answers_tx, mqtt_answers_rx) = crate::mqtt::answer_channel();
    let (broadcast_tx, _) = broadcast::channel::<Response>(4096);
    let (broker_tx, broker_rx) = watch::channel(BrokerState::default());
    let devices = Arc::new(Mutex::new(BTreeMap::new()));
    let counters = Arc::new(Counters::default());

    let shared = Arc::new(Shared {
        store: store.clone(),
        vouchers: vouchers.clone(),
        time_zone: config.store.time_zone(),
        rules: rules.clone(),
        cards,
        enroll_unknown: config.cards.enroll_unknown,
        lane_reach: crate::config::lane_reach(&config),
        to_mqtt: options.mqtt.then_some(mqtt_answers_tx),
        observers: broadcast_tx.clone(),
        sync: sync.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
        storage_failures: storage_failures.clone(),
        card_before_receipt: SignedDuration::from_secs(
            config.lanes.card_before_receipt_secs as i64,
        ),
        card_after_receipt: SignedDuration::from_secs(config.lanes.card_after_receipt_secs as i64),
        counters: counters.clone(),
        stall_receipt: std::env::var(STALL_RECEIPT_ENV).ok(),
        in_lanes: in_lanes.clone(),
        redeem: RedeemSettings {
            value: config
                .redeem
                .point_value(loyalty_core::money::currency_decimals(
                    &config.store.currency,
                )),
            reservation: config.redeem.reservation(),
            decimals: loyalty_core::money::currency_decimals(&config.store.currency),
        },
    });

    // Cancelled once the lanes have handled everything they took: the broker edge sends the
    // last answers and acknowledgements before it says goodbye.
    let lanes_drained = CancellationToken::new();
    let policy = LanePolicy {
        names: config.lanes.names.iter().cloned().collect(),
        max_lanes: config.lanes.max_lanes,
        idle_evict: config.lanes.idle_evict(),
    };
    {
        let router = route_inputs(
            input_rx,
            shared,
            policy,
            devices.clone(),
            heartbeat.clone(),
            shutdown.clone(),
        );
        let lanes_drained = lanes_drained.clone();
        tasks.spawn(async move {
            router.await;
            lanes_drained.cancel();
        });
    }

    if !config.serial.is_empty() {
        let built = built.clone();
        let inputs = input_tx.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(err) = crate::serial::run_all(&built, inputs, shutdown).await {
                tracing::error!(error = %err, "serial devices stopped");
            }
        });
    }
    if !config.printer_proxy.is_empty() {
        let built = built.clone();
        let inputs = input_tx.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(err) = crate::printer_proxy::run_all(&built, inputs, shutdown).await {
                tracing::error!(error = %err, "printer proxies stopped");
            }
        });
    }
    if options.mqtt && config.mqtt.enabled {
        let config = config.clone();
        let inputs = input_tx.clone();
        let shutdown = shutdown.clone();
        let drained = lanes_drained.clone();
        let metrics = metrics.clone();
        tasks.spawn(async move {
            let stop = crate::mqtt::Stop { shutdown, drained };
            if let Err(err) =
                crate::mqtt::run(config, inputs, mqtt_answers_rx, broker_tx, metrics, stop).await
            {
                tracing::error!(error = %err, "the MQTT edge stopped");
            }
        });
    }

    let handle = GatewayHandle {
        inputs: input_tx,
        answers: broadcast_tx,
        store,
        vouchers,
        broker: broker_rx,
        devices,
        rules,
        counters,
        sync,
        metrics,
        heartbeat,
        clock,
        tasks: tasks.clone(),
        storage_failures,
        in_lanes,
    };
    tasks.spawn(housekeeping(handle.clone(), shutdown.clone()));
    if config.http.enabled {
        let server = crate::http::ApiServer::bind(&config.http).await?;
        tracing::info!(addr = %config.http.bind, "local API listening");
        let mut devices: Vec<String> = config.serial.iter().map(|s| s.name.clone()).collect();
        devices.extend(config.printer_proxy.iter().map(|p| p.name.clone()));
        let backend = Arc::new(backend::GatewayBackend::new(
            handle.clone(),
            options.mqtt && config.mqtt.enabled,
            devices,
            &config.store.currency,
        ));
        let server = if config.http.staff.enabled {
            let bound = server.local_addr()?;
            let staff = crate::staff::StaffPage::start(
                handle.clone(),
                backend.clone(),
                &config,
                bound,
                shutdown.clone(),
            )?;
            tracing::info!(addr = %bound, "staff page on /staff");
            server.with_staff(staff)
        } else {
            server
        };
        let metrics = handle.metrics.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(err) = server.serve(backend, metrics, shutdown).await {
                tracing::error!(error = %err, "the local API stopped");
            }
        });
    }
    Ok(handle)
}

/// Every few seconds: outbox, broker and clock gauges; once a minute the time is persisted as
/// the floor a later boot with a wrong clock cannot go below (the wall time while the clock is
/// trusted, the proven floor while not: both are lower bounds on the real time).
async fn housekeeping(handle: GatewayHandle, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last_persisted: Option<Timestamp> = None;
    let mut next_prune = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let gauges = handle.clone();
        if let Err(err) = tokio::task::spawn_blocking(move || refresh_gauges(&gauges)).await {
            tracing::error!(error = %err, "refreshing the gauges panicked");
        }
        let time = trusted_now(&handle.clock);
        {
            // Pay with points: reservations that ran out are released.
            let (handle, time) = (handle.clone(), time);
            let _ = tokio::task::spawn_blocking(move || redeem::sweep(&handle, &time)).await;
        }
        let due = last_persisted
            .is_none_or(|at| time.now.duration_since(at) >= SignedDuration::from_secs(60));
        if due {
            let vouchers = handle.vouchers.clone();
            let now = if time.trusted { time.now } else { time.floor };
            if let Ok(Ok(())) =
                tokio::task::spawn_blocking(move || vouchers.observe_trusted_time(now)).await
            {
                last_persisted = Some(now);
            }
        }
        if tokio::time::Instant::now() >= next_prune {
            // `storage.receipt_retention_days`: old receipts go, unsynced ones stay; only
            // with a trusted clock (a wrong date must not decide what is deleted).
            next_prune = tokio::time::Instant::now() + RECEIPT_PRUNE_INTERVAL;
            if time.trusted {
                let store = handle.store.clone();
                let now = time.now;
                match tokio::task::spawn_blocking(move || store.prune_receipts(now)).await {
                    Ok(Ok(report)) if report.removed > 0 || report.kept_unsynced > 0 => {
                        tracing::info!(
                            removed = report.removed,
                            kept_unsynced = report.kept_unsynced,
                            "receipts older than storage.receipt_retention_days pruned (those the CRM has not acknowledged are kept)"
                        );
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, "pruning old receipts failed; retrying later")
                    }
                    Err(err) => tracing::error!(error = %err, "pruning old receipts panicked"),
                }
            }
        }
    }
}

/// How often receipts past `storage.receipt_retention_days` are pruned (and once at start).
const RECEIPT_PRUNE_INTERVAL: Duration = Duration::from_secs(6 * 3600);

/// Sets the gauges from their sources, now: the outbox's depth and oldest unsent event (read
/// from the store), the broker connection, the clock. Every `/metrics` scrape calls it first
/// (so a scrape right after receipts queue sees them), and housekeeping every few seconds.
/// Blocking (reads the store).
pub(crate) fn refresh_gauges(handle: &GatewayHandle) {
    use crate::sync::uploader::Outbox as _;
    match handle.store.counts() {
        Ok(counts) => {
            let age = counts
                .oldest_unsent_at
                .and_then(|at| Duration::try_from(Timestamp::now().duration_since(at)).ok());
            handle.metrics.outbox(counts.depth, age);
        }
        Err(err) => tracing::debug!(error = %err, "outbox gauges not refreshed"),
    }
    let durability = handle.store.durability_stats();
    handle
        .metrics
        .durability(durability.commits, durability.tickets);
    handle.metrics.broker(handle.broker.borrow().connected);
    handle.metrics.input_queue(handle.input_queue_depth());
    redeem::refresh_gauges(handle);
    handle
        .metrics
        .clock_trusted(trusted_now(&handle.clock).trusted);
}

/// How often the voucher keys the CRM sent are reloaded from the store without being told: a
/// fallback only, the changes feed signals every page that stored keys
/// ([`crate::sync::SyncHandle::voucher_keys`]) and they are reloaded at once.
const KEY_RELOAD_FALLBACK: Duration = Duration::from_secs(60);

/// Follows what the CRM sends down: swaps in accepted rules, and keeps the voucher keys the
/// changes feed stored in the trusted set (revoked ones removed), reloaded as soon as the feed
/// stored a page with keys.
fn spawn_crm_followers(
    tasks: &TaskTracker,
    config: &Config,
    sync: &crate::sync::SyncHandle,
    rules: &Arc<RwLock<Arc<RulesPolicy>>>,
    vouchers: &Vouchers,
    store: &Store,
    shutdown: &CancellationToken,
) {
    let mut crm_rules = sync.rules();
    let rules = rules.clone();
    let time_zone = config.store.time_zone();
    let follow_rules = shutdown.clone();
    tasks.spawn(async move {
        loop {
            if let Some(accepted) = crm_rules.borrow_and_update().clone() {
                let policy = Arc::new(RulesPolicy::new(accepted.rules.clone(), time_zone.clone()));
                if let Ok(mut current) = rules.write() {
                    *current = policy;
                    tracing::info!("earning rules from the CRM are in force");
                }
            }
            tokio::select! {
                changed = crm_rules.changed() => if changed.is_err() { break },
                () = follow_rules.cancelled() => break,
            }
        }
    });
    let vouchers = vouchers.clone();
    let store = store.clone();
    let follow_keys = shutdown.clone();
    let mut keys_stored = sync.voucher_keys();
    tasks.spawn(async move {
        loop {
            keys_stored.borrow_and_update();
            let (vouchers, store) = (vouchers.clone(), store.clone());
            let _ = tokio::task::spawn_blocking(move || {
                for key in store.crm_keys().unwrap_or_default() {
                    if key.revoked {
                        vouchers.trusted_keys().remove(&key.key_id);
                    } else if let Err(err) =
                        vouchers.trusted_keys().insert_base64(&key.key_id, &key.public_key)
                    {
                        tracing::warn!(key = %key.key_id, error = %err, "a voucher key from the CRM was refused");
                    }
                }
            })
            .await;
            tokio::select! {
                changed = keys_stored.changed() => if changed.is_err() {
                    // The feed is gone (sync off or stopping): the fallback alone remains.
                    tokio::select! {
                        () = tokio::time::sleep(KEY_RELOAD_FALLBACK) => {}
                        () = follow_keys.cancelled() => break,
                    }
                },
                () = tokio::time::sleep(KEY_RELOAD_FALLBACK) => {}
                () = follow_keys.cancelled() => break,
            }
        }
    });
}
