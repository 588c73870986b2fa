//! Head office's figures: a real gateway's store syncs member and non-member receipts to a real
//! hub; the figures job's refresh puts them in `store_day_figures` (incrementally: a second
//! batch updates the same store-day) and the dashboard's queries read them back. The benchmark
//! (ignored; run it with `--ignored --nocapture`) times those queries over a generated year of
//! 1,000 stores.

use crate::support::*;
use loyalty_hub::figures;
use loyalty_tools::testkit::crm::{self as crmkit, STORE};
use std::time::Instant;

async fn pool(env: &Env) -> deadpool_postgres::Pool {
    let config: tokio_postgres::Config = env.pg.connection_string().parse().expect("pg config");
    loyalty_hub::db::pool(config, 2, loyalty_hub::db::Planning::PerExecution).expect("pool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_receipts_show_in_the_figures_after_an_incremental_refresh() {
    let env = Env::new();
    let hub = env.hub("");
    let data = tempfile::tempdir().expect("tempdir");
    let url = format!("https://localhost:{}", hub.addr.port());
    let config = crmkit::config(&env.pki, &url, data.path());
    let store = crmkit::open_store(&config);
    let (sync, cancel) = crmkit::start(&config, &store);
    let status = sync.status();
    let mut earned = 0;
    for i in 0..4 {
        earned += apply_today(&store, &format!("M{i}"), 2_000, Some("4000000000042"));
    }
    apply_today(&store, "N1", 1_000, None);
    let last = store.outbox_stats().expect("stats").last_seq;
    crmkit::wait_status(&status, |s| s.acked_through >= last).await;

    let pool = pool(&env).await;
    assert!(figures::refresh(&pool).await.expect("refresh") >= 1);
    let sql = env.sql().await;
    let day = figures::window(&sql, 2).await.expect("window");
    let (chain, s042) = (&day[0], &day[1]);
    assert_eq!(chain.store_id, None);
    assert_eq!(s042.store_id.as_deref(), Some(STORE));
    assert_eq!((s042.receipts, s042.member_receipts), (5, 4), "{s042:?}");
    assert_eq!(
        s042.repeat_receipts, 3,
        "every member visit after the first"
    );
    assert_eq!(s042.member_basket, "20.00");
    assert_eq!(s042.nonmember_basket, "10.00");
    assert_eq!(s042.enrolments, 1);
    assert_eq!(s042.points_issued, earned);
    assert!((s042.participation() - 80.0).abs() < 1e-9);
    assert_eq!(chain.receipts, 5);
    let outstanding = figures::points_outstanding(&sql)
        .await
        .expect("outstanding");
    let ledger = count(
        &sql,
        "SELECT coalesce(sum(points), 0)::bigint FROM ledger_entries",
    )
    .await;
    assert_eq!(outstanding[0], (None, ledger));
    let active = figures::active_members(&sql, 30).await.expect("active");
    assert_eq!(active, vec![(None, 1), (Some(STORE.to_string()), 1)]);
    let fleet = figures::fleet(&sql).await.expect("fleet");
    assert_eq!(fleet.len(), 1);
    assert_eq!(fleet[0].store_id, STORE);
    assert!(fleet[0].silent_secs < 60, "{:?}", fleet[0]);

    // More receipts the same day: the next run recomputes that store-day, nothing else.
    apply_today(&store, "M9", 3_000, Some("4000000000042"));
    let last = store.outbox_stats().expect("stats").last_seq;
    crmkit::wait_status(&status, |s| s.acked_through >= last).await;
    assert_eq!(figures::refresh(&pool).await.expect("refresh"), 1);
    let day = figures::window(&sql, 7).await.expect("window");
    assert_eq!((day[1].receipts, day[1].member_receipts), (6, 5));
    assert_eq!(day[1].member_basket, "22.00");
    assert_eq!(
        count(&sql, "SELECT count(*) FROM store_day_figures").await,
        1
    );
    cancel.cancel();
}

/// Writes, as ingest does (a position under the writer lock until COMMIT), one sale of today in
/// `store`: its event and its receipt row.
async fn sale_in(tx: &tokio_postgres::Transaction<'_>, store: &str, total: &str) {
    let position: i64 = writer_position(tx).await;
    let now = jiff::Timestamp::now().to_string();
    tx.execute(
        "INSERT INTO store_events (store_id, instance, seq, event_id, kind, at, payload, export_pos)
         VALUES ($1, 'i', 1, $1 || '-e1', 'receipt', $2, '{}', $3)",
        &[&store, &now, &position],
    )
    .await
    .expect("event");
    tx.execute(
        "INSERT INTO receipts (customer_key, store_id, receipt_id, event_id, kind, lane, currency,
             total, points, at)
         VALUES ('store:' || $1, $1, 'R1', $1 || '-e1', 'sale', '1', 'EUR', $3::text::numeric, 0,
             $2::text::timestamptz)",
        &[&store, &now, &total],
    )
    .await
    .expect("receipt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_committed_after_a_later_one_is_still_counted() {
    let env = Env::new();
    drop(env.hub("")); // migrated: the schema is there
    let pool = pool(&env).await;
    // Two ingest transactions: the first takes the lower position but commits after the second.
    let mut early_sql = env.sql().await;
    let mut late_sql = env.sql().await;
    let early = early_sql.transaction().await.expect("tx");
    sale_in(&early, "EARLY", "7.00").await;
    let late = late_sql.transaction().await.expect("tx");
    sale_in(&late, "LATE", "9.00").await;
    late.commit().await.expect("commit");
    // A refresh now must wait for the first writer: one that moved past its position while it
    // was uncommitted would never count that store-day.
    let refresh = {
        let pool = pool.clone();
        tokio::spawn(async move { figures::refresh(&pool).await.expect("refresh") })
    };
    let watcher = env.sql().await;
    until_a_session_waits(&watcher, LockWait::Advisory, || refresh.is_finished()).await;
    early.commit().await.expect("commit");
    assert_eq!(refresh.await.expect("refresh task"), 2);
    let day = figures::window(&watcher, 1).await.expect("window");
    let stores: Vec<(Option<String>, i64)> = day
        .iter()
        .map(|f| (f.store_id.clone(), f.receipts))
        .collect();
    assert_eq!(
        stores,
        vec![
            (None, 2),
            (Some("EARLY".into()), 1),
            (Some("LATE".into()), 1)
        ]
    );
    // Nothing new: the next run recomputes nothing.
    assert_eq!(figures::refresh(&pool).await.expect("refresh"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo test -p loyalty-hub --test hub figures_bench -- --ignored --nocapture"]
async fn figures_bench_a_year_of_1000_stores() {
    let env = Env::new();
    let hub = env.hub("");
    drop(hub); // migrated: the schema is there
    let sql = env.sql().await;
    let started = Instant::now();
    sql.batch_execute(
        "INSERT INTO store_day_figures
             SELECT 'S' || lpad(s::text, 4, '0'), current_date - d, 300, 120, 70,
                 120 * 31.5, 180 * 18.2, 3, 4000, 1500, 2400, 12, 9
             FROM generate_series(1, 1000) s, generate_series(0, 364) d;
         INSERT INTO customer_stores (customer_id, store_id, enrolled, last_activity_at)
             SELECT 'c' || c, 'S' || lpad((c % 1000 + 1)::text, 4, '0'), true,
                 now() - make_interval(days => (c % 365)::int)
             FROM generate_series(1, 2000000) c;
         INSERT INTO ingest_positions (store_id, instance, last_seq, last_seen_at)
             SELECT 'S' || lpad(s::text, 4, '0'), 'i1', 100000, now() - make_interval(secs => s)
             FROM generate_series(1, 1000) s;
         ANALYZE;",
    )
    .await
    .expect("generate");
    println!(
        "generated 365,000 store-days, 2,000,000 members, 1,000 stores in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Today's trading everywhere: 300 receipts in each of 1,000 stores, 40 % with a member,
    // then one refresh run over those 1,000 store-days.
    let started = Instant::now();
    sql.batch_execute(
        "INSERT INTO receipts (customer_key, store_id, receipt_id, event_id, customer_id, kind,
                 lane, currency, total, points, at)
             SELECT CASE WHEN r % 5 < 2 THEN 'c' || (r % 50000) ELSE 'store:' || st END, st,
                 'R' || r, 'e' || r, CASE WHEN r % 5 < 2 THEN 'c' || (r % 50000) END, 'sale', '1',
                 'EUR', 20.5, 20, date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                     + make_interval(secs => r % 3600)
             FROM (SELECT r, 'S' || lpad((r % 1000 + 1)::text, 4, '0') AS st
                   FROM generate_series(1, 300000) r) x;
         INSERT INTO store_events (store_id, instance, seq, event_id, kind, at, payload,
                 export_pos)
             SELECT 'S' || lpad((r % 1000 + 1)::text, 4, '0'), 'i1', r, 'e' || r, 'receipt',
                 to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD') || 'T00:10:00Z', '{}',
                 nextval('change_seq')
             FROM generate_series(1, 300000) r;
         ANALYZE;",
    )
    .await
    .expect("generate today");
    println!(
        "generated 300,000 receipts and events for today in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let pool = pool(&env).await;
    let t = Instant::now();
    let touched = figures::refresh(&pool).await.expect("refresh");
    println!(
        "refresh: {touched} store-days recomputed in {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let touched = figures::refresh(&pool).await.expect("refresh");
    println!(
        "refresh again at once (the 1-minute margin): {touched} store-days in {:?}",
        t.elapsed()
    );
    for _ in 0..2 {
        for days in [1, 7, 30] {
            let t = Instant::now();
            let rows = figures::window(&sql, days).await.expect("window");
            println!(
                "window {days:>2} days: {} rows in {:?}",
                rows.len(),
                t.elapsed()
            );
        }
        let t = Instant::now();
        figures::points_outstanding(&sql)
            .await
            .expect("outstanding");
        println!("points outstanding: {:?}", t.elapsed());
        for days in [1, 7, 30] {
            let t = Instant::now();
            figures::active_members(&sql, days).await.expect("active");
            println!("active members {days:>2} days: {:?}", t.elapsed());
        }
        let t = Instant::now();
        figures::fleet(&sql).await.expect("fleet");
        println!("fleet: {:?}", t.elapsed());
    }
}
