//! Ingest benchmark: many stores (`HUB_BENCH_STORES`, default 1000) upload concurrently over
//! mutual TLS, each on its own keep-alive connection, `HUB_BENCH_BATCHES` batches (default 5) of
//! `HUB_BENCH_EVENTS` events (default 100: enrolments, receipts with two lines, earn entries) to
//! one `loyalty-hub` process on a private PostgreSQL (fsync on) on this machine. Meanwhile
//! `HUB_BENCH_PROBES` (default 10) more stores long-poll their feed and a head-office change is
//! committed for one of them every 200 ms (a `voucher_revoked` row written as the hub's writers
//! do: a position under the writer lock, change row, NOTIFY). Reports, in a table:
//! events/s into PostgreSQL, batch acknowledgement p50/p99, feed delivery p50/p99 (change
//! committed -> the store's long-poll answered with it), PostgreSQL bytes per event and the
//! hub's peak RSS. `cargo bench -p loyalty-hub --bench ingest`.
//!
//! Where the database's time goes: `HUB_BENCH_STATEMENTS=20` with
//! `LOYALTY_PG_SETTINGS="shared_preload_libraries=pg_stat_statements
//! pg_stat_statements.track_planning=on"` prints the statements with the most time (execution
//! and planning) per event. Other server settings to try (`shared_buffers=2GB ...`) go in
//! `LOYALTY_PG_SETTINGS` too.

#[path = "../tests/suite/support.rs"]
#[allow(dead_code)]
mod support;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use loyalty_protocol::crm::events::{ReceiptEvent, ReceiptEventLine};
use loyalty_protocol::crm::ChangesPage;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn receipt(seq: u64, store: &str, customer: &str) -> Ev {
    let rid = format!("{store}-r{seq}");
    let lines = vec![
        ReceiptEventLine {
            amount: "12.50".into(),
            category: Some(Cow::Borrowed("food")),
            name: Cow::Borrowed("Bread"),
            qty: "1".into(),
            sku: Cow::Borrowed("4001"),
            unit_price: Some("12.50".into()),
        },
        ReceiptEventLine {
            amount: "3.20".into(),
            category: None,
            name: Cow::Borrowed("Milk"),
            qty: "2".into(),
            sku: Cow::Borrowed("4002"),
            unit_price: Some("1.60".into()),
        },
    ];
    let payload = ReceiptEvent {
        card: None,
        currency: Cow::Borrowed("EUR"),
        customer_id: Some(Cow::Borrowed(customer)),
        kind: Cow::Borrowed("sale"),
        lane: Cow::Borrowed("1"),
        lines,
        lines_withheld: false,
        original_receipt_id: None,
        points: 15,
        receipt_id: Cow::Owned(rid),
        rewards: Cow::Owned(Vec::new()),
        timestamp: at(),
        total: "15.70".into(),
        unknown_categories: Vec::new(),
    };
    Ev {
        seq,
        id: format!("{store}-x{seq}"),
        kind: "receipt",
        payload: serde_json::to_string(&payload).expect("json"),
    }
}

fn events(store: &str, n: u64) -> Vec<Ev> {
    (1..=n)
        .map(|seq| {
            let customer = format!("{store}-c{}", seq / 3);
            match seq % 3 {
                0 => enrolled(
                    seq,
                    &format!("{store}-e{seq}"),
                    &format!("{store}-c{}", seq / 3),
                    &format!("{store}:{seq}"),
                ),
                1 => receipt(seq, store, &customer),
                _ => ledger(seq, &format!("{store}-l{seq}"), &customer, "earn", 15, "r"),
            }
        })
        .collect()
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Committed-at of every probe change, and how long each took to reach its store.
#[derive(Default)]
struct Probes {
    sent: HashMap<String, Instant>,
    delays: Vec<Duration>,
    /// Long-polls answered 503.
    refused: u64,
}

/// A probe store: long-polls its feed on one keep-alive connection until `stop`, recording when
/// each probe voucher arrives.
async fn probe_store(
    client: Client,
    addr: std::net::SocketAddr,
    store: String,
    probes: Arc<Mutex<Probes>>,
    stop: Arc<AtomicBool>,
) {
    let mut sender = client.connect(addr).await;
    let mut cursor = String::new();
    while !stop.load(Ordering::Relaxed) {
        let request =
            hyper::Request::get(format!("/v1/stores/{store}/changes?cursor={cursor}&wait=2"))
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))
                .expect("request");
        let response = sender.send_request(request).await.expect("long-poll");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let now = Instant::now();
        if status == hyper::StatusCode::SERVICE_UNAVAILABLE {
            // As the gateway does: back off, ask again.
            probes.lock().expect("lock").refused += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let page: ChangesPage = serde_json::from_slice(&bytes).expect("page");
        let mut p = probes.lock().expect("lock");
        for voucher in &page.revoked_vouchers {
            if let Some(sent) = p.sent.get(voucher).copied() {
                p.delays.push(now.saturating_duration_since(sent));
            }
        }
        cursor = page.cursor;
    }
}

/// Commits one head-office change for `store` (as the hub's writers do) and notes when.
async fn inject(
    sql: &mut tokio_postgres::Client,
    store: &str,
    voucher: &str,
    probes: &Mutex<Probes>,
) {
    let tx = sql.transaction().await.expect("tx");
    let last: i64 = writer_position(&tx).await;
    tx.execute(
        "INSERT INTO changes (id, store_id, kind, voucher_id) VALUES ($1, $2, 'voucher_revoked', $3)",
        &[&last, &store, &voucher],
    )
    .await
    .expect("change");
    tx.execute("SELECT pg_notify('loyalty_changes', $1)", &[&store])
        .await
        .expect("notify");
    probes
        .lock()
        .expect("lock")
        .sent
        .insert(voucher.to_string(), Instant::now());
    tx.commit().await.expect("commit");
}

/// The `n` statements with the most execution time (pg_stat_statements), per event ingested.
async fn print_statements(sql: &tokio_postgres::Client, n: usize, events: f64) {
    let rows = sql
        .query(
            "SELECT calls, total_exec_time + total_plan_time, total_plan_time, rows, regexp_replace(query, '\\s+', ' ', 'g')
             FROM pg_stat_statements ORDER BY total_exec_time + total_plan_time DESC LIMIT $1",
            &[&(n as i64)],
        )
        .await
        .expect("pg_stat_statements");
    println!("\n| µs/event | of it planning | calls | rows | statement |\n|---|---|---|---|---|");
    for row in rows {
        let calls: i64 = row.get(0);
        let ms: f64 = row.get(1);
        let plan_ms: f64 = row.get(2);
        let count: i64 = row.get(3);
        let query: String = row.get(4);
        let short: String = query.chars().take(100).collect();
        let per_event = |ms: f64| ms * 1000.0 / events;
        println!(
            "| {:.1} | {:.1} | {calls} | {count} | `{short}` |",
            per_event(ms),
            per_event(plan_ms)
        );
    }
}

fn main() {
    let stores = env_num("HUB_BENCH_STORES", 1000);
    let batches = env_num("HUB_BENCH_BATCHES", 5);
    let per_batch = env_num("HUB_BENCH_EVENTS", 100);
    let probe_count = env_num("HUB_BENCH_PROBES", 10);
    let env = Env::new();
    let hub = env.hub("");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let sql = env.sql().await;
        let size_before: i64 = sql
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
            .expect("size")
            .get(0);
        let statements = env_num("HUB_BENCH_STATEMENTS", 0);
        if statements > 0 {
            sql.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()")
                .await
                .expect("pg_stat_statements (LOYALTY_PG_SETTINGS=shared_preload_libraries=pg_stat_statements)");
        }
        println!("preparing {stores} stores (certificates) ...");
        let mut clients = Vec::new();
        for i in 0..stores {
            let store = format!("B{i:04}");
            let client = env.client(&store);
            // The request bodies are made before the clock starts: the stores' own work is not
            // the hub's.
            let bodies: Vec<Bytes> = events(&store, (batches * per_batch) as u64)
                .chunks(per_batch)
                .map(|chunk| Bytes::from(body(&store, "i", chunk)))
                .collect();
            clients.push((store, client, bodies));
        }
        let probes = Arc::new(Mutex::new(Probes::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut probe_tasks = tokio::task::JoinSet::new();
        for i in 0..probe_count {
            let store = format!("P{i:03}");
            let client = env.client(&store);
            probe_tasks.spawn(probe_store(client, hub.addr, store, probes.clone(), stop.clone()));
        }
        let injector = {
            let mut sql = env.sql().await;
            let probes = probes.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) && probe_count > 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let store = format!("P{:03}", n % probe_count);
                    inject(&mut sql, &store, &format!("probe-{n}"), &probes).await;
                    n += 1;
                }
            })
        };
        let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let retries = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (store, client, bodies) in clients {
            let latencies = latencies.clone();
            let retries = retries.clone();
            let addr = hub.addr;
            tasks.spawn(async move {
                let mut sender = client.connect(addr).await;
                for body in bodies {
                    let t = Instant::now();
                    loop {
                        let request = hyper::Request::post(format!("/v1/stores/{store}/events"))
                            .header("host", "localhost")
                            .body(Full::new(body.clone()))
                            .expect("request");
                        let response = sender.send_request(request).await.expect("send");
                        let status = response.status();
                        let bytes = response.into_body().collect().await.expect("body").to_bytes();
                        if status == hyper::StatusCode::SERVICE_UNAVAILABLE {
                            // As the gateway does: back off and send the same batch again.
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            continue;
                        }
                        assert!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&bytes));
                        break;
                    }
                    latencies.lock().expect("lock").push(t.elapsed());
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("store task");
        }
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        injector.await.expect("injector");
        while let Some(r) = probe_tasks.join_next().await {
            r.expect("probe store");
        }
        let feed_refused = probes.lock().expect("lock").refused;
        let mut feed = probes.lock().expect("lock").delays.clone();
        feed.sort();
        let feed_pct = |p: f64| {
            feed.get(((feed.len() as f64 * p) as usize).min(feed.len().saturating_sub(1)))
                .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
                .unwrap_or_else(|| "n/a".into())
        };
        let total = (stores * batches * per_batch) as f64;
        let mut l = latencies.lock().expect("lock").clone();
        l.sort();
        let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
        let size_after: i64 = sql
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
            .expect("size")
            .get(0);
        let stored: i64 = sql
            .query_one("SELECT count(*) FROM store_events", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(stored as f64, total, "every event stored once");
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        let rows = [
            ("events/s into PostgreSQL".to_string(), format!("{:.0}", total / elapsed.as_secs_f64())),
            ("batch ack p50 / p99 / max".into(), format!("{} / {} / {}", ms(pct(0.50)), ms(pct(0.99)), ms(l[l.len() - 1]))),
            ("batches answered 503 and sent again".into(), retries.load(Ordering::Relaxed).to_string()),
            (format!("feed delivery p50 / p99 ({} changes)", feed.len()), format!("{} / {}", feed_pct(0.50), feed_pct(0.99))),
            ("feed long-polls answered 503".into(), feed_refused.to_string()),
            ("PostgreSQL bytes/event (database growth)".into(), format!("{:.0}", (size_after - size_before) as f64 / total)),
            ("hub RSS peak / now".into(), format!("{} MiB / {} MiB", rss_kb(hub.pid(), "VmHWM:") / 1024, rss_kb(hub.pid(), "VmRSS:") / 1024)),
        ];
        println!(
            "ingest: {stores} stores x {batches} batches x {per_batch} events over mutual TLS, one hub, PostgreSQL fsync=on, {:.1} s"
            , elapsed.as_secs_f64()
        );
        println!("| figure | value |\n|---|---|");
        for (name, value) in rows {
            println!("| {name} | {value} |");
        }
        if statements > 0 {
            print_statements(&sql, statements, total).await;
        }
    });
}
