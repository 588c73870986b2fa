//! `loyalty-gateway run`: the runtime, the gateway, signal handling and the shutdown (and the
//! in-process restart an erasure owes: the store copies its database at open); and the
//! request helpers the demo and the tests use to talk to a running gateway in-process.

use super::*;

/// `loyalty-gateway run`: the daemon, until SIGTERM or SIGINT. Tells systemd READY once
/// storage, configuration and inputs are up, and pings its watchdog only while the main loop
/// turns and storage works.
pub fn run_daemon(config: Built) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Storage calls (one per lane at a time) run on blocking threads; more than this many
        // at once only queue. Keeps the thread count well inside the unit's `TasksMax=64`
        // (tokio's default allows 512).
        .max_blocking_threads(16)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let notifier = crate::systemd::Notifier::from_env();
        let signal = wait_for_signal();
        tokio::pin!(signal);
        loop {
            let shutdown = CancellationToken::new();
            let handle = start(config.clone(), StartOptions::default(), shutdown.clone()).await?;
            // READY before the watchdog starts: its first ping is immediate, and systemd
            // expects pings only after READY.
            if let Err(err) = notifier.ready("serving the lanes") {
                tracing::warn!(error = %err, "cannot tell systemd we are ready");
            }
            if let Some(watchdog) = crate::systemd::Watchdog::from_env(notifier.clone()) {
                let heartbeat = handle.heartbeat.clone();
                let health_handle = handle.clone();
                handle.tasks.spawn(watchdog.run(
                    heartbeat,
                    move || health_handle.storage_ok(),
                    shutdown.clone(),
                ));
            }
            tracing::info!("gateway started");
            let restart = tokio::select! {
                () = &mut signal => false,
                () = erasure_compaction_owed(&handle) => true,
            };
            if restart {
                tracing::info!(
                    "an erasure rewrote stored records: restarting the gateway in-process so that the store copies its database and no old version of her data stays on disk (the lanes' inputs wait in the broker meanwhile)"
                );
            } else {
                tracing::info!("stopping");
                let _ = notifier.stopping();
            }
            shutdown.cancel();
            // Every task ends (lanes drained, broker goodbye sent) and the store is flushed,
            // within a bound well inside systemd's TimeoutStopSec=30.
            let clean = handle.stop(SHUTDOWN_BOUND).await;
            tracing::info!(clean, "stopped");
            if !restart {
                return Ok(ExitCode::SUCCESS);
            }
            // The store must be closed before it is opened again (a task abandoned at the
            // bound that still holds it makes the next open fail: the daemon then exits and
            // systemd's restart compacts at start-up instead).
            drop(handle);
            // systemd's watchdog runs since READY: the copy's progress keeps it fed.
            loyalty_store::ping_watchdog_while_copying(true);
        }
    });
    // Tasks abandoned at the bound (and blocking calls) get a last moment, not an unbounded
    // wait as dropping the runtime would give them.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

/// Resolves once an erasure owes the store a copy of its database (see `loyalty_store`'s
/// `erasure` module) and the lanes are quiet: no input handled for [`ERASURE_COPY_QUIET`] (or
/// the copy has been owed for [`ERASURE_COPY_AT_LATEST`]), and none waiting. The daemon then
/// restarts its gateway in-process, and the store's open copies the database: the lanes pause
/// for that long (their inputs wait in the broker's session), so not in the middle of a rush.
async fn erasure_compaction_owed(handle: &GatewayHandle) {
    use std::sync::atomic::Ordering::Relaxed;
    let inputs = || {
        let c = &handle.counters;
        c.scans.load(Relaxed)
            + c.receipts.load(Relaxed)
            + c.duplicates.load(Relaxed)
            + c.errors.load(Relaxed)
    };
    let mut tick = tokio::time::interval(ERASURE_CHECK_INTERVAL);
    let mut owed_since: Option<tokio::time::Instant> = None;
    let (mut seen, mut quiet_since) = (inputs(), tokio::time::Instant::now());
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let handled = inputs();
        if handled != seen || handle.input_queue_depth() > 0 {
            (seen, quiet_since) = (handled, now);
        }
        if owed_since.is_none() {
            let store = handle.store.clone();
            let owed = matches!(
                tokio::task::spawn_blocking(move || store.erasure_compaction_owed()).await,
                Ok(Ok(true))
            );
            if !owed {
                continue;
            }
            tracing::info!(
                quiet_secs = ERASURE_COPY_QUIET.as_secs(),
                "an erasure owes a copy of the database: the gateway restarts in-process once the lanes are quiet"
            );
            owed_since = Some(now);
        }
        let quiet = now.duration_since(quiet_since) >= ERASURE_COPY_QUIET;
        let overdue = owed_since.is_some_and(|at| now.duration_since(at) >= ERASURE_COPY_AT_LATEST);
        if (quiet && handle.input_queue_depth() == 0) || overdue {
            return;
        }
    }
}

/// How often the daemon checks whether an erasure owes a copy of the database.
const ERASURE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long the lanes must have been quiet before that copy.
const ERASURE_COPY_QUIET: Duration = Duration::from_secs(20);

/// The copy happens by then whatever the lanes do.
const ERASURE_COPY_AT_LATEST: Duration = Duration::from_secs(6 * 3600);

/// How long the daemon's shutdown may take (the unit's `TimeoutStopSec` is 30 s).
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);

pub(super) async fn wait_for_signal() {
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
            answer: None,
        },
        handled,
    )
}
