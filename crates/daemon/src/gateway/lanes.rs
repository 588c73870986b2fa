//! The router and the lane actors: every input goes to the actor of its lane, which handles
//! the lane's inputs strictly in order while lanes run in parallel; answers go to MQTT and to
//! in-process observers.

use super::*;
use loyalty_store::Failure;

pub(super) async fn route_inputs(
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

pub(super) async fn lane_actor(
    lane: String,
    mut inputs: mpsc::Receiver<Input>,
    shared: Arc<Shared>,
) {
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

pub(super) fn send_answer(shared: &Shared, answer: Response, started: std::time::Instant) {
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
pub(super) async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        return tokio::task::block_in_place(call);
    }
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result,
        Err(err) => Err(StoreError::Failed(Failure::Io {
            context: "storage task failed".into(),
            source: std::io::Error::other(err.to_string()),
        })),
    }
}
