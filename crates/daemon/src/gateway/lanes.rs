//! The router and the lane actors: every input goes to the actor of its lane, which handles
//! the lane's inputs strictly in order while lanes run in parallel; answers go to MQTT and to
//! in-process observers. Owns which lanes get an actor (listed or capped, idle ones set aside)
//! and the drain at shutdown.

use super::*;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

/// Which lanes are served: the configured list, or any lane up to a cap; and when an idle lane's
/// actor is stopped.
pub(super) struct LanePolicy {
    /// The configured lanes (empty: any lane, up to `max_lanes`).
    pub names: std::collections::BTreeSet<String>,
    /// Most lanes at once when `names` is empty.
    pub max_lanes: usize,
    /// Idle time after which a lane's actor stops (longer than the card windows).
    pub idle_evict: Duration,
}

struct LaneEntry {
    sender: mpsc::Sender<Input>,
    last_input: tokio::time::Instant,
    /// Inputs sent to the lane's actor and not yet answered (queued or in flight).
    unanswered: Arc<AtomicUsize>,
}

/// The main loop: routes every input to its lane's actor until `shutdown`, then drains: inputs
/// already queued are still routed, the lane actors finish what they hold, and the loop returns
/// once every lane actor has ended (the caller then lets the broker edge say goodbye).
pub(super) async fn route_inputs(
    mut inputs: mpsc::Receiver<Input>,
    shared: Arc<Shared>,
    policy: LanePolicy,
    devices: Arc<Mutex<BTreeMap<String, DeviceStatus>>>,
    heartbeat: Heartbeat,
    shutdown: CancellationToken,
) {
    let mut lanes: HashMap<String, LaneEntry> = HashMap::new();
    let actors = tokio_util::task::TaskTracker::new();
    let mut idle_tick = tokio::time::interval(Duration::from_secs(1));
    let mut stopping = false;
    loop {
        heartbeat.beat();
        let input = tokio::select! {
            input = inputs.recv() => input,
            _ = idle_tick.tick() => {
                evict_idle(&mut lanes, policy.idle_evict);
                continue;
            }
            () = shutdown.cancelled(), if !stopping => {
                // No new inputs; what is queued is still routed (recv returns None after it).
                stopping = true;
                inputs.close();
                continue;
            }
        };
        let Some(input) = input else { break };
        let lane = match &input {
            Input::Scan { lane, .. }
            | Input::Receipt { lane, .. }
            | Input::Redeem { lane, .. }
            | Input::Void { lane, .. } => lane.clone(),
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
        if !lanes.contains_key(&lane) {
            if let Err((code, message)) = admit(&policy, &lane, lanes.len()) {
                refuse(&shared, input, code, message);
                continue;
            }
            let (tx, rx) = mpsc::channel(256);
            let unanswered = Arc::new(AtomicUsize::new(0));
            actors.spawn(lane_actor(
                lane.clone(),
                rx,
                shared.clone(),
                unanswered.clone(),
            ));
            lanes.insert(
                lane.clone(),
                LaneEntry {
                    sender: tx,
                    last_input: tokio::time::Instant::now(),
                    unanswered,
                },
            );
        }
        let Some(entry) = lanes.get_mut(&lane) else {
            continue;
        };
        entry.last_input = tokio::time::Instant::now();
        // Counted until its lane has answered it (the input queue's depth, for /health).
        shared.in_lanes.fetch_add(1, Ordering::Relaxed);
        entry.unanswered.fetch_add(1, Ordering::Relaxed);
        if entry.sender.send(input).await.is_err() {
            shared.in_lanes.fetch_sub(1, Ordering::Relaxed);
            entry.unanswered.fetch_sub(1, Ordering::Relaxed);
            tracing::error!(lane = %lane, "a lane actor stopped; restarting it");
            lanes.remove(&lane);
        }
    }
    // Closing the lanes' queues ends each actor once it has handled what it holds.
    drop(lanes);
    drop(shared);
    actors.close();
    actors.wait().await;
    tracing::debug!("every lane drained");
}

/// Whether a new actor may start for `lane` (`active` lanes have one).
fn admit(policy: &LanePolicy, lane: &str, active: usize) -> Result<(), (&'static str, String)> {
    if !policy.names.is_empty() {
        if policy.names.contains(lane) {
            return Ok(());
        }
        return Err((
            "unknown_lane",
            format!("lane {lane:?} is not one of this store's lanes (lanes.names)"),
        ));
    }
    if active >= policy.max_lanes {
        return Err((
            "too_many_lanes",
            format!(
                "the gateway already serves {} lanes (lanes.max_lanes); list the store's lanes in lanes.names or raise lanes.max_lanes",
                policy.max_lanes
            ),
        ));
    }
    Ok(())
}

/// Answers an input the gateway will not serve with an `error` on its lane. A receipt counts as
/// refused (acknowledged: redelivering it cannot help).
fn refuse(shared: &Shared, input: Input, code: &str, message: String) {
    let started = std::time::Instant::now();
    tracing::warn!(code, "{message}");
    match input {
        Input::Scan { lane, done, .. } => {
            shared.metrics.scan(ScanKind::Refused);
            send_answer(shared, Response::error(&lane, None, code, message), started);
            if let Some(done) = done {
                let _ = done.send(Handled::Refused);
            }
        }
        Input::Receipt {
            lane,
            receipt,
            done,
            ..
        } => {
            shared.metrics.receipt(ReceiptMetric::Refused);
            let receipt_id = receipt.as_ref().ok().map(|r| r.id.as_str());
            send_answer(
                shared,
                Response::error(&lane, receipt_id, code, message),
                started,
            );
            if let Some(done) = done {
                let _ = done.send(Handled::Refused);
            }
        }
        Input::Redeem { lane, done, .. } | Input::Void { lane, done, .. } => {
            send_answer(shared, Response::error(&lane, None, code, message), started);
            if let Some(done) = done {
                let _ = done.send(Handled::Refused);
            }
        }
        Input::Device { .. } => {}
    }
}

/// Stops the actors of lanes idle for `idle_evict` with nothing unanswered (queued or waiting
/// for its group commit; a new actor must not answer before the old one's last answers):
/// dropping the sender ends the actor after its last input. The next input for the lane starts
/// a fresh one (with an empty session, which is what the old one held: the idle time exceeds
/// the card windows).
fn evict_idle(lanes: &mut HashMap<String, LaneEntry>, idle_evict: Duration) {
    lanes.retain(|lane, entry| {
        let idle = entry.last_input.elapsed() >= idle_evict
            && entry.unanswered.load(Ordering::Relaxed) == 0;
        if idle {
            tracing::debug!(lane = %lane, "lane idle: its actor stops until its next input");
        }
        !idle
    });
}

/// How many inputs a lane holds answered-to-be at once: receipts committed and waiting for their
/// group commit, and the inputs queued behind them. A busy lane applies its next receipt while
/// the last one's flush and fsync run, so one group commit serves several of its receipts.
pub(super) const LANE_PIPELINE: usize = 32;

/// An input's delivery: completes once the input is durable (or needed no write), giving its
/// answers, its acknowledgement and its count.
type Delivery = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A lane: handles its inputs strictly in order (each sees the session the one before left) and
/// answers them in that order, each once it is durable. A receipt's answer may wait for its
/// group commit while the next inputs are already handled: only the oldest delivery is polled,
/// so no answer overtakes an earlier one.
pub(super) async fn lane_actor(
    lane: String,
    mut inputs: mpsc::Receiver<Input>,
    shared: Arc<Shared>,
    unanswered: Arc<AtomicUsize>,
) {
    let mut session = LaneSession::new(shared.card_before_receipt, shared.card_after_receipt);
    let mut in_flight: VecDeque<Delivery> = VecDeque::new();
    loop {
        let room = in_flight.len() < LANE_PIPELINE;
        let oldest = std::future::poll_fn(|cx| match in_flight.front_mut() {
            Some(delivery) => delivery.as_mut().poll(cx),
            None => Poll::Pending,
        });
        let input = tokio::select! {
            biased;
            () = oldest => {
                in_flight.pop_front();
                unanswered.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            input = inputs.recv(), if room => input,
        };
        let Some(input) = input else { break };
        // Alone (nothing queued or in flight on this lane), a receipt waits for its own group
        // commit on this thread, leading it when no other lane writes: no hand-off.
        let alone = in_flight.is_empty() && inputs.is_empty();
        in_flight.push_back(handle(&lane, input, &mut session, &shared, alone).await);
    }
    while let Some(delivery) = in_flight.pop_front() {
        delivery.await;
        unanswered.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Handles one input of the lane now; returns its delivery.
async fn handle(
    lane: &str,
    input: Input,
    session: &mut LaneSession,
    shared: &Arc<Shared>,
    alone: bool,
) -> Delivery {
    let started = std::time::Instant::now();
    let shared = shared.clone();
    match input {
        Input::Scan {
            data, origin, done, ..
        } => {
            shared.counters.scans.fetch_add(1, Ordering::Relaxed);
            let answers = on_scan(lane, &data, &origin, session, &shared).await;
            let kind = match answers.first() {
                Some(Response::Reward { .. }) => ScanKind::Voucher,
                Some(Response::Error { .. }) | None => ScanKind::Refused,
                Some(_) => ScanKind::Card,
            };
            shared.metrics.scan(kind);
            Box::pin(async move {
                for answer in answers {
                    send_answer(&shared, answer, started);
                }
                let handled = match kind {
                    ScanKind::Refused => Handled::Refused,
                    ScanKind::Card | ScanKind::Voucher => Handled::Durable,
                };
                delivered(&shared, done, handled);
            })
        }
        Input::Receipt {
            receipt,
            done,
            answer: reply,
            ..
        } => {
            let step = match on_receipt(lane, receipt, session, &shared).await {
                ReceiptStep::Committed(pending) if alone => {
                    let (answer, handled) = pending.answer(true, &shared).await;
                    ReceiptStep::Answered(answer, handled)
                }
                step => step,
            };
            Box::pin(async move {
                let (answer, handled) = match step {
                    ReceiptStep::Answered(answer, handled) => (answer, handled),
                    ReceiptStep::Committed(pending) => pending.answer(false, &shared).await,
                };
                deliver_receipt(&shared, answer, handled, reply, done, started);
            })
        }
        Input::Redeem { request, done, .. } => {
            let (answer, handled) = on_redeem(lane, request, &shared).await;
            answer_in_turn(shared, answer, handled, done, started)
        }
        Input::Void { request, done, .. } => {
            let (answer, handled) = on_void(lane, request, &shared).await;
            answer_in_turn(shared, answer, handled, done, started)
        }
        Input::Device { .. } => Box::pin(async move { delivered(&shared, None, Handled::Refused) }),
    }
}

/// The delivery of an input already answered (durable, or refused): its answer goes out in the
/// lane's turn.
fn answer_in_turn(
    shared: Arc<Shared>,
    answer: Response,
    handled: Handled,
    done: Option<oneshot::Sender<Handled>>,
    started: std::time::Instant,
) -> Delivery {
    Box::pin(async move {
        send_answer(&shared, answer, started);
        delivered(&shared, done, handled);
    })
}

/// A receipt's answer goes out: counted, to MQTT and observers, to the edge that prints it.
fn deliver_receipt(
    shared: &Shared,
    answer: Response,
    handled: Handled,
    reply: Option<oneshot::Sender<Response>>,
    done: Option<oneshot::Sender<Handled>>,
    started: std::time::Instant,
) {
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
            failures.fetch_add(1, Ordering::Relaxed);
        }
        Handled::Durable => failures.store(0, Ordering::Relaxed),
        Handled::Refused => {}
    }
    // The edge prints it (a printer lane's trailer), after MQTT and observers had it.
    let printed = reply.map(|reply| (reply, answer.clone()));
    send_answer(shared, answer, started);
    if let Some((reply, answer)) = printed {
        let _ = reply.send(answer);
    }
    delivered(shared, done, handled);
}

/// The input is answered: its edge may acknowledge it, and it leaves the input queue's count.
fn delivered(shared: &Shared, done: Option<oneshot::Sender<Handled>>, handled: Handled) {
    if let Some(done) = done {
        let _ = done.send(handled);
    }
    shared.in_lanes.fetch_sub(1, Ordering::Relaxed);
}

pub(super) fn send_answer(shared: &Shared, answer: Response, started: std::time::Instant) {
    let kind = match &answer {
        Response::Customer { .. } => AnswerKind::Customer,
        Response::Enrolled { .. } => AnswerKind::Enrolled,
        Response::Points { .. } => AnswerKind::Points,
        Response::Reward { .. } => AnswerKind::Reward,
        Response::Redemption { .. } => AnswerKind::Redemption,
        Response::Void { .. } => AnswerKind::Void,
        Response::Error { .. } => {
            shared.counters.errors.fetch_add(1, Ordering::Relaxed);
            AnswerKind::Error
        }
    };
    shared.metrics.answer(kind, started.elapsed());
    if let Some(to_mqtt) = &shared.to_mqtt {
        to_mqtt.send(answer.clone());
    }
    let _ = shared.observers.send(answer);
}
