//! Exactly once under faults: two hub processes receiving the same store's retries at once,
//! `kill -9` of a hub in the middle of a batch, PostgreSQL's postmaster killed under uploads.

use crate::support::*;
use loyalty_protocol::crm::AckResponse;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

async fn assert_exactly_once(env: &Env, store: &str, events: &[Ev]) {
    let sql = env.sql().await;
    let stored: Vec<(i64, String)> = sql
        .query(
            "SELECT seq, event_id FROM store_events WHERE store_id = $1 ORDER BY seq",
            &[&store],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(i64, String)> = events
        .iter()
        .map(|e| (e.seq as i64, e.id.clone()))
        .collect();
    assert_eq!(stored.len(), expected.len(), "event count");
    assert!(stored == expected, "stored events differ from those sent");
    let customers: i64 = sql
        .query_one(
            "SELECT count(*) FROM customers WHERE enrolled_store = $1",
            &[&store],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(customers, events.len() as i64, "customers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_receiving_the_same_retries_at_once_lose_and_double_nothing() {
    let env = Env::new();
    let a = env.hub("");
    let b = env.hub("");
    let c = env.client("S1");
    let events = enrolments("S1", 1, 200);
    for round in 1..=20usize {
        // Both hubs get the whole prefix so far at the same moment (a retry racing the first
        // delivery through a load balancer).
        let batch = body("S1", "i1", &events[..round * 10]);
        let (x, y) = tokio::join!(
            c.post_events(a.addr, "S1", batch.clone()),
            c.post_events(b.addr, "S1", batch)
        );
        for answer in [x, y] {
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert_eq!(
                answer.json::<AckResponse>().acked_through,
                round as u64 * 10
            );
        }
    }
    assert_exactly_once(&env, "S1", &events).await;
}

/// Sends `events` in batches of `size` the way the gateway does (from the last ack on, the
/// same batch again after any failure) to whatever address `addr` holds; returns when all are
/// acknowledged.
async fn upload(
    client: Client,
    addr: tokio::sync::watch::Receiver<SocketAddr>,
    events: Vec<Ev>,
    size: usize,
    acked_tx: tokio::sync::watch::Sender<u64>,
) {
    let mut acked = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (acked as usize) < events.len() {
        assert!(
            Instant::now() < deadline,
            "upload did not finish (acked {acked})"
        );
        let start = acked as usize;
        let end = (start + size).min(events.len());
        let batch = body("S1", "i1", &events[start..end]);
        let target = *addr.borrow();
        match client
            .request(target, "POST", "/v1/stores/S1/events", batch, &[])
            .await
        {
            Ok(answer) if answer.status == 200 => {
                acked = answer.json::<AckResponse>().acked_through;
                let _ = acked_tx.send(acked);
            }
            Ok(answer) => {
                assert_eq!(answer.status, 503, "{}", answer.text());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_mid_batch_then_the_retry_stores_everything_exactly_once() {
    let env = Env::new();
    let mut hub = env.hub("");
    let c = env.client("S1");
    let events = enrolments("S1", 1, 3000);
    let (addr_tx, addr_rx) = tokio::sync::watch::channel(hub.addr);
    let (acked_tx, mut acked_rx) = tokio::sync::watch::channel(0u64);
    let task = tokio::spawn(upload(c, addr_rx, events.clone(), 300, acked_tx));
    // Kill the hub while a batch is in flight: right after an acknowledgement the next batch
    // is being sent and applied.
    acked_rx.wait_for(|a| *a >= 600).await.expect("acks");
    hub.kill_9();
    let replacement = env.hub("");
    addr_tx.send(replacement.addr).expect("addr");
    task.await.expect("upload");
    assert_exactly_once(&env, "S1", &events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_under_uploads_then_restarted_loses_and_doubles_nothing() {
    let mut env = Env::new();
    let hub = env.hub("");
    let c = env.client("S1");
    let events = enrolments("S1", 1, 2000);
    let (_addr_tx, addr_rx) = tokio::sync::watch::channel(hub.addr);
    let (acked_tx, mut acked_rx) = tokio::sync::watch::channel(0u64);
    let task = tokio::spawn(upload(c, addr_rx, events.clone(), 100, acked_tx));
    acked_rx.wait_for(|a| *a >= 300).await.expect("acks");
    tokio::task::block_in_place(|| {
        env.pg.kill_9();
        env.pg.restart();
    });
    task.await.expect("upload");
    assert_exactly_once(&env, "S1", &events).await;
}
