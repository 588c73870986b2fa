//! The daemon's shell: opens the store, starts the edges (MQTT, serial devices, printer
//! proxies, CRM sync, local API), and runs the main loop that routes every [`Input`] to the
//! actor of its lane. A lane actor handles its lane's inputs strictly in order (card scans and
//! receipts of one lane must not overtake each other) while different lanes run in parallel, so
//! their receipts share the store's group commits.
//!
//! Invariant: every input that names a lane gets exactly one answer on that lane (a refusal is
//! an `error` answer); a receipt's answer is sent only after the store reported it durable.

pub mod backend;

use crate::config::Config;
use crate::input::{Handled, Input, Origin};
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
use loyalty_store::vouchers::{CommitOutcome, IssuedVoucher, Vouchers};
use loyalty_store::{ReceiptOutcome, Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// State of one configured device (serial port or printer proxy), for health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Open and reading.
    pub up: bool,
    /// The last detail reported (path opened, or the error).
    pub detail: String,
}

/// The wall clock as the gateway trusts it (see `clock`): the guard and the process's
/// monotonic origin.
pub struct TrustedClock {
    guard: ClockGuard,
    origin: std::time::Instant,
    use_ntp: bool,
}

impl TrustedClock {
    /// A clock whose floor starts at the later of the build date and `high_water`.
    pub fn new(high_water: Option<Timestamp>, use_ntp: bool) -> Self {
        let origin = std::time::Instant::now();
        TrustedClock {
            guard: ClockGuard::new(
                loyalty_core::clock::build_floor(),
                high_water,
                origin.elapsed(),
            ),
            origin,
            use_ntp,
        }
    }

    /// Reads the clocks and judges them.
    pub fn observe(&mut self) -> TrustedTime {
        crate::systemd::observe_clock(&mut self.guard, self.origin, self.use_ntp)
    }
}

/// Reads the trusted time from a shared clock (a poisoned lock still holds a usable clock).
fn trusted_now(clock: &Mutex<TrustedClock>) -> TrustedTime {
    match clock.lock() {
        Ok(mut clock) => clock.observe(),
        Err(poisoned) => poisoned.into_inner().observe(),
    }
}

/// The time a scan or receipt is handled at, counted in the metrics when the clock is untrusted
/// (its events are then flagged, see `Store::stamped`).
fn input_time(shared: &Shared) -> TrustedTime {
    let time = trusted_now(&shared.clock);
    if !time.trusted {
        shared.metrics.untrusted_time_event();
    }
    time
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
    storage_failures: Arc<std::sync::atomic::AtomicU64>,
}

impl GatewayHandle {
    /// False after storage writes failed repeatedly without a success since (the watchdog and
    /// `/health` use it).
    pub fn storage_ok(&self) -> bool {
        self.storage_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            < 3
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

/// Whether a store error is a refusal of the request (answered to the lane, acknowledged to
/// the broker) rather than a storage failure (to be retried).
fn is_refusal(err: &StoreError) -> bool {
    matches!(
        err,
        StoreError::InvalidReceipt(_)
            | StoreError::InvalidId(_)
            | StoreError::UnknownCustomer(_)
            | StoreError::UnknownReceipt(_)
            | StoreError::NotASale(_)
            | StoreError::AlreadyAttached { .. }
            | StoreError::CardTaken { .. }
            | StoreError::Ledger(_)
    )
}

/// Everything a lane actor needs, shared by all lanes.
struct Shared {
    store: Store,
    vouchers: Vouchers,
    time_zone: jiff::tz::TimeZone,
    rules: Arc<RwLock<Arc<RulesPolicy>>>,
    cards: CardMatcher,
    enroll_unknown: bool,
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
}

/// Environment variable naming a receipt id the gateway receives but never applies (its lane
/// stalls on it and logs a warning). Only for crash tests: `kill -9` while it stalls proves the
/// broker still holds the receipt (acknowledged only after it is durable) and redelivers it.
pub const STALL_RECEIPT_ENV: &str = "LOYALTY_FAULT_STALL_RECEIPT";

/// Opens the store and starts the gateway's tasks; they stop when `shutdown` is cancelled.
pub async fn start(
    config: Config,
    options: StartOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<GatewayHandle> {
    let store = {
        let storage = config.storage.clone();
        let store_id = config.store.id.clone();
        tokio::task::spawn_blocking(move || Store::open(&storage, &store_id)).await??
    };
    let rules =
        loyalty_core::rules::EarningRules::from_config(&config.rules, &config.store.currency)
            .map_err(|err| anyhow::anyhow!("rules: {err}"))?;
    let vouchers = {
        let settings = crate::vouchers::VoucherSettings::from_config(&config)
            .map_err(|err| anyhow::anyhow!("rewards: {err}"))?;
        let keys = settings
            .trusted_keys(&config)
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
    let cards = CardMatcher::from_config(&config.cards)
        .map_err(|err| anyhow::anyhow!("cards: {err}"))?
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
    let sync = Arc::new(
        crate::sync::start(&config, store.clone(), shutdown.clone())
            .map_err(|err| anyhow::anyhow!("crm: {err}"))?,
    );
    spawn_crm_followers(&config, &sync, &rules, &vouchers, &store, &shutdown);

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
    });

    tokio::spawn(route_inputs(
        input_rx,
        shared,
        devices.clone(),
        heartbeat.clone(),
        shutdown.clone(),
    ));

    if !config.serial.is_empty() {
        let config = config.clone();
        let inputs = input_tx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(err) = crate::serial::run_all(&config, inputs, shutdown).await {
                tracing::error!(error = %err, "serial devices stopped");
            }
        });
    }
    if !config.printer_proxy.is_empty() {
        let config = config.clone();
        let inputs = input_tx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(err) = crate::printer_proxy::run_all(&config, inputs, shutdown).await {
                tracing::error!(error = %err, "printer proxies stopped");
            }
        });
    }
    if options.mqtt && config.mqtt.enabled {
        let config = config.clone();
        let inputs = input_tx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(err) =
                crate::mqtt::run(config, inputs, mqtt_answers_rx, broker_tx, shutdown).await
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
        storage_failures,
    };
    tokio::spawn(housekeeping(handle.clone(), shutdown.clone()));
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
        let metrics = handle.metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
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
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let status = handle.sync.status().snapshot();
        let age = status
            .oldest_unsent_at
            .and_then(|at| Duration::try_from(Timestamp::now().duration_since(at)).ok());
        handle.metrics.outbox(status.outbox_depth, age);
        handle.metrics.broker(handle.broker.borrow().connected);
        let time = trusted_now(&handle.clock);
        handle.metrics.clock_trusted(time.trusted);
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
    }
}

/// Follows what the CRM sends down: swaps in accepted rules, and keeps the voucher keys the
/// changes feed stored in the trusted set (revoked ones removed).
fn spawn_crm_followers(
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
    tokio::spawn(async move {
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
    tokio::spawn(async move {
        loop {
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
                () = tokio::time::sleep(Duration::from_secs(10)) => {}
                () = follow_keys.cancelled() => break,
            }
        }
    });
}

async fn route_inputs(
    mut inputs: mpsc::Receiver<Input>,
    shared: Arc<Shared>,
    devices: Arc<Mutex<BTreeMap<String, DeviceStatus>>>,
    heartbeat: Heartbeat,
    shutdown: CancellationToken,
) {
    let mut lanes: HashMap<String, mpsc::Sender<Input>> = HashMap::new();
    let mut idle_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        heartbeat.beat();
        let input = tokio::select! {
            input = inputs.recv() => input,
            _ = idle_tick.tick() => continue,
            () = shutdown.cancelled() => None,
        };
        let Some(input) = input else { break };
        let lane = match &input {
            Input::Scan { lane, .. } | Input::Receipt { lane, .. } => lane.clone(),
            Input::Device { name, up, detail } => {
                shared.metrics.device(name, *up);
                if let Ok(mut devices) = devices.lock() {
                    devices.insert(
                        name.clone(),
                        DeviceStatus {
                            up: *up,
                            detail: detail.clone(),
                        },
                    );
                }
                continue;
            }
        };
        let sender = lanes.entry(lane.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(256);
            tokio::spawn(lane_actor(lane.clone(), rx, shared.clone()));
            tx
        });
        if sender.send(input).await.is_err() {
            tracing::error!(lane = %lane, "a lane actor stopped; restarting it");
            lanes.remove(&lane);
        }
    }
}

async fn lane_actor(lane: String, mut inputs: mpsc::Receiver<Input>, shared: Arc<Shared>) {
    let mut session = LaneSession::new(shared.card_before_receipt, shared.card_after_receipt);
    while let Some(input) = inputs.recv().await {
        let started = std::time::Instant::now();
        match input {
            Input::Scan { data, origin, .. } => {
                shared
                    .counters
                    .scans
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let answers = on_scan(&lane, &data, &origin, &mut session, &shared).await;
                let kind = match answers.first() {
                    Some(Response::Reward { .. }) => ScanKind::Voucher,
                    Some(Response::Error { .. }) | None => ScanKind::Refused,
                    Some(_) => ScanKind::Card,
                };
                shared.metrics.scan(kind);
                for answer in answers {
                    send_answer(&shared, answer, started);
                }
            }
            Input::Receipt { receipt, done, .. } => {
                let (answer, handled) = on_receipt(&lane, receipt, &mut session, &shared).await;
                let outcome = match (&handled, &answer) {
                    (
                        Handled::Durable,
                        Response::Points {
                            duplicate: true, ..
                        },
                    ) => ReceiptMetric::Duplicate,
                    (Handled::Durable, _) => ReceiptMetric::Applied,
                    (Handled::Refused, _) => ReceiptMetric::Refused,
                    (Handled::Failed, _) => ReceiptMetric::Failed,
                };
                shared.metrics.receipt(outcome);
                let failures = &shared.storage_failures;
                match handled {
                    Handled::Failed => {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Handled::Durable => failures.store(0, std::sync::atomic::Ordering::Relaxed),
                    Handled::Refused => {}
                }
                send_answer(&shared, answer, started);
                if let Some(done) = done {
                    let _ = done.send(handled);
                }
            }
            Input::Device { .. } => {}
        }
    }
}

fn send_answer(shared: &Shared, answer: Response, started: std::time::Instant) {
    let kind = match &answer {
        Response::Customer { .. } => AnswerKind::Customer,
        Response::Enrolled { .. } => AnswerKind::Enrolled,
        Response::Points { .. } => AnswerKind::Points,
        Response::Reward { .. } => AnswerKind::Reward,
        Response::Error { .. } => {
            shared
                .counters
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            AnswerKind::Error
        }
    };
    shared.metrics.answer(kind, started.elapsed());
    if let Some(to_mqtt) = &shared.to_mqtt {
        to_mqtt.send(answer.clone());
    }
    let _ = shared.observers.send(answer);
}

/// Runs a blocking store call without stalling the async threads. On the multi-threaded
/// runtime (the daemon's) it runs in place, on the lane's own thread, while the runtime moves
/// the other tasks to another thread: no hand-off on the lane's path, each of which costs a
/// thread wake-up. Elsewhere (single-threaded test runtimes) it goes to the blocking pool.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        return tokio::task::block_in_place(call);
    }
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result,
        Err(err) => Err(StoreError::Io {
            context: "storage task failed".into(),
            source: std::io::Error::other(err.to_string()),
        }),
    }
}

/// Looks a program card up, enrolling it offline when unknown. Returns the customer and
/// whether it was enrolled now.
async fn identify(
    shared: &Shared,
    card: &str,
    time: TrustedTime,
) -> Result<(loyalty_core::customer::Customer, bool), StoreError> {
    let store = shared.store.stamped(time.trusted);
    let now = time.now;
    let card = card.to_string();
    let enroll_unknown = shared.enroll_unknown;
    blocking(move || identify_blocking(&store, &card, enroll_unknown, now)).await
}

fn identify_blocking(
    store: &Store,
    card: &str,
    enroll_unknown: bool,
    now: Timestamp,
) -> Result<(loyalty_core::customer::Customer, bool), StoreError> {
    match store.customer_by_card(card)? {
        Some(customer) => Ok((customer, false)),
        None if enroll_unknown => store.enroll(card, now).map(|customer| (customer, true)),
        None => Err(StoreError::UnknownCustomer(format!("card {card}"))),
    }
}

/// [`identify`] and the customer's balance, in one trip to the storage threads.
async fn identify_with_balance(
    shared: &Shared,
    card: &str,
    time: TrustedTime,
) -> Result<(loyalty_core::customer::Customer, bool, i64), StoreError> {
    let store = shared.store.stamped(time.trusted);
    let now = time.now;
    let card = card.to_string();
    let enroll_unknown = shared.enroll_unknown;
    blocking(move || {
        let (customer, enrolled) = identify_blocking(&store, &card, enroll_unknown, now)?;
        let balance = store.balance(&customer.id, now).map(|b| b.total)?;
        Ok((customer, enrolled, balance))
    })
    .await
}

async fn on_scan(
    lane: &str,
    data: &[u8],
    _origin: &Origin,
    session: &mut LaneSession,
    shared: &Shared,
) -> Vec<Response> {
    let time = input_time(shared);
    let now = time.now;
    let scan = match loyalty_core::scan::decode(data, &shared.cards) {
        Ok(scan) => scan,
        Err(err) => return vec![Response::error(lane, None, err.code(), err.to_string())],
    };
    match scan {
        Scan::Card { number, .. } => {
            let (customer, enrolled, balance) =
                match identify_with_balance(shared, &number, time).await {
                    Ok(found) => found,
                    Err(err) => return vec![refusal_or_storage(lane, None, &err)],
                };
            if enrolled {
                shared
                    .counters
                    .enrolled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let who = Identified {
                customer_id: customer.id.clone(),
                card: number.clone(),
            };
            match session.on_card(who, now) {
                CardDecision::HoldForNextReceipt { replaced } => {
                    vec![customer_answer(
                        lane, &customer, &number, balance, enrolled, replaced,
                    )]
                }
                CardDecision::AttachTo { receipt_id } => {
                    let mut answers = vec![customer_answer(
                        lane, &customer, &number, balance, enrolled, None,
                    )];
                    let store = shared.store.stamped(time.trusted);
                    let rules = current_rules(shared);
                    let customer_id = customer.id.clone();
                    let attach_id = receipt_id.clone();
                    match blocking(move || {
                        store.attach_customer(&attach_id, &customer_id, rules.as_ref(), now)
                    })
                    .await
                    {
                        Ok(outcome) => {
                            shared
                                .counters
                                .points
                                .fetch_add(outcome.earned, std::sync::atomic::Ordering::Relaxed);
                            answers.push(points_answer(lane, &outcome));
                        }
                        Err(err) => answers.push(refusal_or_storage(lane, Some(&receipt_id), &err)),
                    }
                    answers
                }
            }
        }
        Scan::Voucher { text } => {
            let vouchers = shared.vouchers.stamped(time.trusted);
            let lane_name = lane.to_string();
            let customer = session.held_card(now).map(|who| who.customer_id.clone());
            let verdict =
                blocking(move || vouchers.scan(&text, &lane_name, customer.as_deref(), now)).await;
            vec![reward_answer(lane, verdict)]
        }
        other => {
            let (code, message) = other
                .refusal()
                .unwrap_or(("unknown_card", "not a card of this program".into()));
            vec![Response::error(lane, None, code, message)]
        }
    }
}

fn current_rules(shared: &Shared) -> Arc<RulesPolicy> {
    match shared.rules.read() {
        Ok(rules) => rules.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn customer_answer(
    lane: &str,
    customer: &loyalty_core::customer::Customer,
    card: &str,
    balance: i64,
    enrolled: bool,
    replaced_card: Option<String>,
) -> Response {
    if enrolled {
        Response::Enrolled {
            lane: lane.to_string(),
            customer_id: customer.id.clone(),
            card: card.to_string(),
            tier: customer.tier.clone().unwrap_or_else(|| "basic".into()),
            balance,
            replaced_card,
        }
    } else {
        Response::Customer {
            lane: lane.to_string(),
            customer_id: customer.id.clone(),
            card: card.to_string(),
            name: customer.name.clone(),
            tier: customer.tier.clone().unwrap_or_else(|| "basic".into()),
            balance,
            replaced_card,
        }
    }
}

fn points_answer(lane: &str, outcome: &ReceiptOutcome) -> Response {
    Response::Points {
        lane: lane.to_string(),
        receipt_id: outcome.receipt_id.clone(),
        customer_id: outcome.customer_id.clone(),
        earned: outcome.earned,
        balance: outcome.balance.map(|b| b.total),
        duplicate: outcome.duplicate,
        vouchers: Vec::new(),
    }
}

fn storage_error(lane: &str, receipt_id: Option<&str>, err: &StoreError) -> Response {
    tracing::error!(lane, error = %err, "storage failure");
    Response::error(
        lane,
        receipt_id,
        "storage",
        "the gateway could not store this; the till should retry",
    )
}

fn refusal_or_storage(lane: &str, receipt_id: Option<&str>, err: &StoreError) -> Response {
    if is_refusal(err) {
        Response::error(lane, receipt_id, "refused", err.to_string())
    } else {
        storage_error(lane, receipt_id, err)
    }
}

async fn on_receipt(
    lane: &str,
    receipt: Result<Receipt, String>,
    session: &mut LaneSession,
    shared: &Shared,
) -> (Response, Handled) {
    let time = input_time(shared);
    let now = time.now;
    let receipt = match receipt {
        Ok(receipt) => receipt,
        Err(message) => {
            return (
                Response::error(lane, None, "malformed_receipt", message),
                Handled::Refused,
            )
        }
    };
    if shared.stall_receipt.as_deref() == Some(receipt.id.as_str()) {
        tracing::warn!(receipt = %receipt.id, "fault injection ({STALL_RECEIPT_ENV}): stalling on this receipt, it is never applied");
        std::future::pending::<()>().await;
    }
    // The limits of the rules in force (the CRM may have replaced them since start-up).
    let rules = current_rules(shared);
    if let Err(err) = loyalty_core::receipt::validate(&receipt, rules.limits()) {
        return (
            Response::error(lane, Some(&receipt.id), "invalid_receipt", err.to_string()),
            Handled::Refused,
        );
    }
    let in_receipt = match &receipt.card {
        None => None,
        Some(card) => {
            let normalized = match loyalty_core::scan::decode(card.as_bytes(), &shared.cards) {
                Ok(Scan::Card { number, .. }) => number,
                Ok(other) => {
                    let (code, message) = other
                        .refusal()
                        .unwrap_or(("unknown_card", "not a card of this program".into()));
                    return (
                        Response::error(lane, Some(&receipt.id), code, message),
                        Handled::Refused,
                    );
                }
                Err(err) => {
                    return (
                        Response::error(lane, Some(&receipt.id), "unknown_card", err.to_string()),
                        Handled::Refused,
                    )
                }
            };
            match identify(shared, &normalized, time).await {
                Ok((customer, _)) => Some(Identified {
                    customer_id: customer.id,
                    card: normalized,
                }),
                Err(err) => {
                    return (
                        storage_error(lane, Some(&receipt.id), &err),
                        Handled::Failed,
                    )
                }
            }
        }
    };
    let who = session.on_receipt(in_receipt, now);
    let store = shared.store.stamped(time.trusted);
    let vouchers = shared.vouchers.stamped(time.trusted);
    let customer_id = who.as_ref().map(|w| w.customer_id.clone());
    let receipt_id = receipt.id.clone();
    // Applying the receipt and settling its vouchers share one trip to the storage threads.
    let applied = blocking(move || {
        let outcome = store.apply_receipt(&receipt, customer_id.as_deref(), rules.as_ref(), now)?;
        let settled = settle_vouchers(&store, &vouchers, &receipt, &outcome, now);
        Ok((outcome, settled))
    })
    .await;
    match applied {
        Ok((outcome, settled)) => {
            session.on_receipt_applied(&outcome.receipt_id, outcome.customer_id.is_some(), now);
            shared.sync.nudge();
            let counter = if outcome.duplicate {
                &shared.counters.duplicates
            } else {
                shared
                    .counters
                    .points
                    .fetch_add(outcome.earned, std::sync::atomic::Ordering::Relaxed);
                &shared.counters.receipts
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !outcome.duplicate {
                shared.metrics.points(outcome.earned);
            }
            match settled {
                Ok(settled) => {
                    let settled = settled_answers(lane, &outcome, settled, shared);
                    let mut answer = points_answer(lane, &outcome);
                    if let Response::Points {
                        vouchers, balance, ..
                    } = &mut answer
                    {
                        if let Some(after) = settled.balance_after_issue {
                            // Issuing converted points: answer the balance after it.
                            *balance = Some(after);
                        }
                        *vouchers = settled.issued;
                    }
                    for refusal in settled.refusals {
                        send_answer(shared, refusal, std::time::Instant::now());
                    }
                    (answer, Handled::Durable)
                }
                Err(err) => (
                    storage_error(lane, Some(&receipt_id), &err),
                    Handled::Failed,
                ),
            }
        }
        Err(err) if is_refusal(&err) => (
            Response::error(lane, Some(&receipt_id), "refused", err.to_string()),
            Handled::Refused,
        ),
        Err(err) => (
            storage_error(lane, Some(&receipt_id), &err),
            Handled::Failed,
        ),
    }
}

/// What settling a receipt's vouchers did.
struct Settled {
    commit: CommitOutcome,
    issued: Vec<IssuedVoucher>,
    /// The customer's balance after vouchers were issued (None when none were).
    balance_after_issue: Option<i64>,
}

/// After a receipt is durable (runs on a storage thread): redeems the vouchers it names (or the
/// lane's reservation, per `rewards.redeem_on`) and issues the vouchers its points earned. Both
/// are idempotent, so a redelivered receipt changes nothing.
fn settle_vouchers(
    store: &Store,
    vouchers: &Vouchers,
    receipt: &Receipt,
    outcome: &ReceiptOutcome,
    now: Timestamp,
) -> Result<Settled, StoreError> {
    let commit = vouchers.commit_receipt(receipt, now)?;
    let is_sale = matches!(receipt.kind, loyalty_core::receipt::ReceiptKind::Sale);
    let issued = match (&outcome.customer_id, is_sale) {
        (Some(customer_id), true) => vouchers
            .issue_after_receipt(&receipt.id, customer_id, now)
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, receipt = %receipt.id, "no voucher issued");
                Vec::new()
            }),
        _ => Vec::new(),
    };
    let balance_after_issue = match (&outcome.customer_id, issued.is_empty()) {
        (Some(customer_id), false) => Some(store.balance(customer_id, now)?.total),
        _ => None,
    };
    Ok(Settled {
        commit,
        issued,
        balance_after_issue,
    })
}

/// What the lane is told about a receipt's vouchers.
struct SettledAnswers {
    /// For the `points` answer.
    issued: Vec<IssuedVoucherJson>,
    balance_after_issue: Option<i64>,
    /// An error answer for each voucher the receipt named that could not be redeemed.
    refusals: Vec<Response>,
}

/// Counts what settling did, and turns it into answers.
fn settled_answers(
    lane: &str,
    outcome: &ReceiptOutcome,
    settled: Settled,
    shared: &Shared,
) -> SettledAnswers {
    let Settled {
        commit,
        issued,
        balance_after_issue,
    } = settled;
    let redeemed_now = commit.redeemed.iter().filter(|r| !r.duplicate).count() as u64;
    for _ in 0..redeemed_now {
        shared.metrics.voucher_redeemed();
    }
    for _ in &issued {
        shared.metrics.voucher_issued();
    }
    shared
        .counters
        .vouchers_redeemed
        .fetch_add(redeemed_now, std::sync::atomic::Ordering::Relaxed);
    shared
        .counters
        .vouchers_issued
        .fetch_add(issued.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let refusals = commit
        .refused
        .into_iter()
        .map(|(voucher_id, refusal)| {
            Response::error(
                lane,
                Some(&outcome.receipt_id),
                refusal.code(),
                format!("voucher {voucher_id}: {refusal}"),
            )
        })
        .collect();
    SettledAnswers {
        issued: issued
            .iter()
            .map(|voucher| issued_json(voucher, &shared.time_zone))
            .collect(),
        balance_after_issue,
        refusals,
    }
}

fn issued_json(issued: &IssuedVoucher, time_zone: &jiff::tz::TimeZone) -> IssuedVoucherJson {
    use base64::Engine as _;
    let options = crate::render::SlipOptions {
        time_zone: time_zone.clone(),
        ..Default::default()
    };
    let escpos =
        crate::render::escpos_slip(&issued.voucher, &issued.text, &options).unwrap_or_default();
    let decimals = loyalty_core::money::currency_decimals(&issued.voucher.currency);
    IssuedVoucherJson {
        voucher_id: issued.voucher.id.to_string(),
        text: issued.text.clone(),
        escpos_base64: base64::engine::general_purpose::STANDARD.encode(escpos),
        value: match &issued.voucher.benefit {
            Benefit::AmountOff(amount) => amount.format(decimals),
            Benefit::PercentOff(percent) => format!("{percent}%"),
            Benefit::FreeItem { sku } => format!("free {sku}"),
        },
        valid_until: issued.voucher.valid_until.to_string(),
    }
}

fn reward_answer(lane: &str, verdict: Result<Verdict, StoreError>) -> Response {
    match verdict {
        Ok(Verdict::Valid { discount }) => {
            let decimals = loyalty_core::money::currency_decimals(&discount.currency);
            Response::Reward {
                lane: lane.to_string(),
                voucher_id: discount.voucher_id.to_string(),
                status: "valid".into(),
                discount: Some(match discount.benefit {
                    Benefit::AmountOff(amount) => DiscountJson::AmountOff {
                        amount: amount.format(decimals),
                    },
                    Benefit::PercentOff(percent) => DiscountJson::PercentOff {
                        percent: u32::from(percent),
                    },
                    Benefit::FreeItem { sku } => DiscountJson::FreeItem { sku },
                }),
                reason: discount
                    .min_spend
                    .filter(|m| m.0 > 0)
                    .map(|m| format!("minimum spend {}", m.format(decimals))),
            }
        }
        Ok(Verdict::Refused(refusal)) => Response::Reward {
            lane: lane.to_string(),
            voucher_id: String::new(),
            status: refusal.status().into(),
            discount: None,
            reason: Some(format!("{} ({})", refusal, refusal.code())),
        },
        Err(err) => storage_error(lane, None, &err),
    }
}

/// `loyalty-gateway run`: the daemon, until SIGTERM or SIGINT. Tells systemd READY once
/// storage, configuration and inputs are up, and pings its watchdog only while the main loop
/// turns and storage works.
pub fn run_daemon(config: Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Storage calls (one per lane at a time) run on blocking threads; more than this many
        // at once only queue. Keeps the thread count well inside the unit's `TasksMax=64`
        // (tokio's default allows 512).
        .max_blocking_threads(16)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let notifier = crate::systemd::Notifier::from_env();
        let handle = start(config, StartOptions::default(), shutdown.clone()).await?;
        // READY before the watchdog starts: its first ping is immediate, and systemd expects
        // pings only after READY.
        if let Err(err) = notifier.ready("serving the lanes") {
            tracing::warn!(error = %err, "cannot tell systemd we are ready");
        }
        if let Some(watchdog) = crate::systemd::Watchdog::from_env(notifier.clone()) {
            let heartbeat = handle.heartbeat.clone();
            let health_handle = handle.clone();
            tokio::spawn(watchdog.run(
                heartbeat,
                move || health_handle.storage_ok(),
                shutdown.clone(),
            ));
        }
        tracing::info!("gateway started");
        wait_for_signal().await;
        tracing::info!("stopping");
        let _ = notifier.stopping();
        shutdown.cancel();
        // Bounded goodbye: the broker edge publishes the retained offline status within 2 s.
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(handle);
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Sends one input and waits for the answers it produces on its lane (in-process use: demo,
/// tests). Returns the answers seen for `lane` until `count` arrived or `timeout` passed.
pub async fn request(
    handle: &GatewayHandle,
    input: Input,
    lane: &str,
    count: usize,
    timeout: Duration,
) -> Vec<Response> {
    let mut answers = handle.answers.subscribe();
    if handle.inputs.send(input).await.is_err() {
        return Vec::new();
    }
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while seen.len() < count {
        match tokio::time::timeout_at(deadline, answers.recv()).await {
            Ok(Ok(answer)) if answer.lane() == lane => seen.push(answer),
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
        }
    }
    seen
}

/// A receipt input for in-process use, with its completion channel.
pub fn receipt_input(
    lane: &str,
    receipt: Receipt,
    origin: Origin,
) -> (Input, oneshot::Receiver<Handled>) {
    let (done, handled) = oneshot::channel();
    (
        Input::Receipt {
            lane: lane.to_string(),
            receipt: Ok(receipt),
            origin,
            done: Some(done),
        },
        handled,
    )
}
