//! Past capacity the lanes keep their answers (issue 19): a raw-socket publisher offers receipts
//! on 8 lanes, open loop, far faster than the gateway applies them, against a real Mosquitto and
//! the real gateway process. Asserts behaviour, not timings: every lane keeps receiving answers
//! while its receipts are pending (no gap of several seconds), in the lane's order, each receipt
//! answered exactly once and applied once; `/health` says `overloaded` with the queue's depth
//! while the backlog lasts and stops saying so once it has drained.

use harness::{http_get, metric_sample, Mosquitto, Till};
use loyalty_tools::testkit::{self as harness, GatewayBinary};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const LANES: usize = 8;
/// Receipts offered per second (the debug gateway applies roughly 1,000/s here, fewer on a busy
/// machine) and for how long.
const OFFERED_PER_SECOND: usize = 4_000;
const OFFER_SECONDS: usize = 4;
/// The longest a lane with receipts pending may go without an answer. On the old code answers
/// stalled for 10 s and more while receipts were applied.
const MAX_GAP: Duration = Duration::from_secs(3);

fn gateway_binary() -> GatewayBinary {
    GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"))
}

fn health(port: u16) -> serde_json::Value {
    let (_, body) = http_get(port, "/health");
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

/// A gateway for store `ov` on a fresh Mosquitto, with its HTTP port (`/health`, `/metrics`).
async fn gateway_on_a_broker(dir: &std::path::Path) -> (Mosquitto, harness::Gateway, u16) {
    let broker = Mosquitto::start();
    let http_port = harness::free_port();
    let config = format!(
        "[store]\nid = \"ov\"\ntimezone = \"Europe/Berlin\"\nrequire_ntp_sync = false\n[storage]\ndata_dir = \"{}\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[cards]\nprefixes = [\"299\"]\n\
         [http]\nbind = \"127.0.0.1:{http_port}\"\n",
        dir.join("data").display(),
        broker.port
    );
    let gateway = gateway_binary().start(dir, &config);
    harness::wait_online(broker.port, "loyalty/ov").await;
    (broker, gateway, http_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_capacity_every_lane_keeps_receiving_answers_in_order_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, gateway, http_port) = gateway_on_a_broker(dir.path()).await;
    let mut till = Till::connect(broker.port, "loyalty/ov", "overload-till").await;

    // Health and the applied count sampled beside the load, from their own thread.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        std::thread::spawn(move || {
            let mut most = 0u64;
            let mut overloaded_seen = false;
            let mut applied = Vec::new();
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let report = health(http_port);
                if report["lanes"]["overloaded"] == true {
                    overloaded_seen = true;
                    assert_eq!(report["status"], "overloaded", "{report}");
                }
                most = most.max(report["lanes"]["queue_depth"].as_u64().unwrap_or(0));
                let (_, metrics) = http_get(http_port, "/metrics");
                if let Some(count) =
                    metric_sample(&metrics, "loyalty_receipts_total{outcome=\"applied\"}")
                {
                    applied.push((Instant::now(), count as usize));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (overloaded_seen, most, applied)
        })
    };

    let port = broker.port;
    let offer = harness::flood::Offer {
        prefix: "loyalty/ov".into(),
        lanes: LANES,
        per_second: Some(OFFERED_PER_SECOND as f64),
        total: OFFERED_PER_SECOND * OFFER_SECONDS,
        client_id: "overload-publisher".into(),
    };
    let publisher = std::thread::spawn(move || harness::flood::publish(port, &offer));

    // Every answer, with when it arrived, until all are in (or nothing comes for a while).
    let mut answers: Vec<(Instant, serde_json::Value)> = Vec::new();
    let expected = OFFERED_PER_SECOND * OFFER_SECONDS;
    while answers.len() < expected {
        match till.try_next(Duration::from_secs(30)).await {
            Some(answer) => answers.push((Instant::now(), answer)),
            None => break,
        }
    }
    let sent_at = publisher.join().expect("publisher");
    assert_eq!(sent_at.len(), expected);
    let started = sent_at[0];
    let offered_for = Duration::from_secs(OFFER_SECONDS as u64);
    let drained_after = answers.last().map(|(at, _)| at.duration_since(started));

    // Nothing lost, nothing doubled: each receipt answered once, with points, not a duplicate.
    let mut per_lane: HashMap<String, Vec<(Instant, usize)>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for (at, answer) in &answers {
        assert_eq!(answer["type"], "points", "{answer}");
        assert_eq!(answer["duplicate"], false, "{answer}");
        let id = answer["receipt_id"].as_str().expect("receipt id");
        assert!(seen.insert(id.to_string()), "answered twice: {id}");
        let index: usize = id.trim_start_matches("R-").parse().expect("index");
        let lane = answer["lane"].as_str().expect("lane").to_string();
        per_lane.entry(lane).or_default().push((*at, index));
    }
    assert_eq!(
        answers.len(),
        expected,
        "answers lost (drained after {drained_after:?}); log:\n{}",
        gateway.log()
    );
    // The offer really was past capacity: answering took clearly longer than offering.
    let drained_after = drained_after.expect("answers");
    assert!(
        drained_after > offered_for + Duration::from_secs(1),
        "the gateway kept up ({drained_after:?}): the test did not overload it"
    );

    // The backlog drained: the queue is empty and /health no longer says overloaded.
    let drained = harness::wait_until(Duration::from_secs(10), || {
        let report = health(http_port);
        report["lanes"]["overloaded"] == false && report["lanes"]["queue_depth"] == 0
    });
    assert!(drained, "the backlog did not drain: {}", health(http_port));
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let (overloaded_seen, most, applied) = watcher.join().expect("watcher");
    // Answers kept pace with what was applied: a second after any moment, the lanes had heard
    // about every receipt applied by then, but for what the gateway may hold in hand (its
    // intake window). On the old code answers fell thousands behind.
    let arrivals: Vec<Instant> = answers.iter().map(|(at, _)| *at).collect();
    for (at, count) in &applied {
        let heard = arrivals.partition_point(|t| *t <= *at + Duration::from_secs(1));
        assert!(
            heard + 512 >= *count,
            "answers fell behind: {count} receipts applied but only {heard} answers heard a second later"
        );
    }
    assert!(
        overloaded_seen,
        "/health never said overloaded (deepest queue seen: {most})"
    );

    // Every lane kept receiving answers, in its order, with no long silence while it had
    // receipts pending (from the first offer to its last answer).
    assert_eq!(per_lane.len(), LANES);
    for (lane, lane_answers) in &per_lane {
        let mut last = started;
        for (at, index) in lane_answers {
            let gap = at.duration_since(last);
            assert!(
                gap <= MAX_GAP,
                "lane {lane} heard nothing for {gap:?} before receipt R-{index} while receipts were pending"
            );
            last = *at;
        }
        let indexes: Vec<usize> = lane_answers.iter().map(|(_, i)| *i).collect();
        // The gateway answers a lane in the order the broker delivered its receipts. Mosquitto
        // guarantees in-order delivery only with max_inflight_messages 1 (its documentation);
        // under this backlog, with receipts still arriving, it was seen delivering a message or
        // a few some 2,000 places late (about 1 run in 4), and, since lanes pipeline (faster
        // acknowledgements), 11 neighbours of one lane swapped in one run of about ten. A
        // backlog the broker delivers in order is answered in order without a single swap
        // (`a_busy_lane_answers_in_order…` below). The old code, whose answers overtook each
        // other in the gateway, swapped dozens per lane.
        let swapped: Vec<_> = indexes.windows(2).filter(|w| w[0] > w[1]).collect();
        assert!(
            swapped.len() <= 25,
            "lane {lane} answered out of order: {swapped:?} of {}",
            indexes.len()
        );
    }

    // Applied once each, as the gateway counts them; the answer-age histogram saw them all.
    let (_, metrics) = http_get(http_port, "/metrics");
    let applied = metric_sample(&metrics, "loyalty_receipts_total{outcome=\"applied\"}");
    assert_eq!(applied, Some(expected as f64), "{metrics}");
    assert_eq!(
        metric_sample(&metrics, "loyalty_receipts_total{outcome=\"duplicate\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric_sample(&metrics, "loyalty_answer_age_seconds_count"),
        Some(expected as f64)
    );
    assert_eq!(
        metric_sample(&metrics, "loyalty_input_queue_depth"),
        Some(0.0)
    );
}

/// A busy lane applies its next receipt while the last one's group commit runs (issue 19): one
/// lane's backlog (queued by the broker while the gateway was stopped, then delivered at once)
/// shares flushes and fsyncs, and is still answered in the lane's order, each receipt once, each
/// only once durable (the kill -9 tests check that part). Handled one at a time, each receipt
/// waited for a group commit of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_lane_answers_in_order_while_its_receipts_share_group_commits() {
    const RECEIPTS: usize = 400;
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, mut gateway, http_port) = gateway_on_a_broker(dir.path()).await;
    let mut till = Till::connect(broker.port, "loyalty/ov", "busy-lane-till").await;
    // The backlog: published while the gateway is away, kept in its persistent session.
    gateway.stop().expect("the gateway stops");
    let offer = harness::flood::Offer {
        prefix: "loyalty/ov".into(),
        lanes: 1,
        per_second: None,
        total: RECEIPTS,
        client_id: "busy-lane-publisher".into(),
    };
    let port = broker.port;
    tokio::task::spawn_blocking(move || harness::flood::publish(port, &offer))
        .await
        .expect("publisher");
    gateway.spawn();

    let mut order = Vec::new();
    while order.len() < RECEIPTS {
        let Some(answer) = till.try_next(Duration::from_secs(30)).await else {
            break;
        };
        assert_eq!(answer["type"], "points", "{answer}");
        assert_eq!(answer["duplicate"], false, "{answer}");
        let id = answer["receipt_id"].as_str().expect("receipt id");
        order.push(id.trim_start_matches("R-").parse::<usize>().expect("index"));
    }
    assert_eq!(
        order.len(),
        RECEIPTS,
        "answers lost; log:\n{}",
        gateway.log()
    );
    let mut sorted = order.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), RECEIPTS, "a receipt answered twice");
    // In the lane's order (the broker delivers a session's backlog in order).
    let swapped = order.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(
        swapped == 0,
        "answered out of order ({swapped} swaps): {order:?}"
    );

    // Since the restart (its own few start-up writes included).
    let (_, metrics) = http_get(http_port, "/metrics");
    let commits =
        metric_sample(&metrics, "loyalty_store_group_commits_total").expect("group commits");
    let writes =
        metric_sample(&metrics, "loyalty_store_durable_writes_total").expect("durable writes");
    assert!(
        writes >= RECEIPTS as f64,
        "{writes} durable writes for {RECEIPTS} receipts"
    );
    // How many share depends on how a commit's time compares with the disk's sync (a fast disk
    // syncs one receipt before the next is committed); handled one at a time, none would.
    assert!(
        commits + 20.0 <= writes,
        "{commits} group commits for {writes} durable writes: the lane's receipts did not share them"
    );
}
