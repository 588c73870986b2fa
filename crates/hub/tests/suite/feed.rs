//! What stores get: long-poll delivery of a change, by-card lookup, a card enrolled offline in
//! two stores merged (points preserved, the merge in both feeds), a voucher redeemed in two
//! stores detected and revoked.

use crate::support::*;
use loyalty_protocol::crm::{AckResponse, ChangesPage, ErrorBody, WireCustomer};
use std::time::{Duration, Instant};

async fn drain(c: &Client, hub: &HubProcess, store: &str) -> String {
    let mut cursor = String::new();
    loop {
        let page: ChangesPage = c
            .get(
                hub.addr,
                &format!("/v1/stores/{store}/changes?cursor={cursor}"),
            )
            .await
            .json();
        let done = page.is_empty();
        cursor = page.cursor;
        if done {
            return cursor;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_as_soon_as_a_change_for_the_store_commits() {
    let env = Env::new();
    let hub = env.hub("");
    let a = env.client("A");
    let b = env.client("B");
    // Store B enrolled the customer; A knows nothing yet.
    b.post_ok(
        hub.addr,
        "B",
        body("B", "i", &[enrolled(1, "b1", "B-c1", "4000001")]),
    )
    .await;
    let cursor = drain(&b, &hub, "B").await;
    let waiter = {
        let b = b.clone();
        let addr = hub.addr;
        tokio::spawn(async move {
            let started = Instant::now();
            let page: ChangesPage = b
                .get(
                    addr,
                    &format!("/v1/stores/B/changes?cursor={cursor}&wait=30"),
                )
                .await
                .json();
            (started.elapsed(), page)
        })
    };
    // Let the long-poll reach its wait, then the customer earns in store A (found by card).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let found = a
        .get(hub.addr, "/v1/stores/A/customers/by-card/4000001")
        .await;
    assert_eq!(found.status, 200, "{}", found.text());
    let customer: WireCustomer = found.json();
    assert_eq!(customer.customer_id, "B-c1");
    let sent = Instant::now();
    let ack = a
        .post_events(
            hub.addr,
            "A",
            body("A", "i", &[ledger(1, "a1", "B-c1", "earn", 500, "RA1")]),
        )
        .await;
    assert_eq!(ack.json::<AckResponse>().acked_through, 1);
    let (waited, page) = waiter.await.expect("waiter");
    let delivered = sent.elapsed();
    assert!(
        waited < Duration::from_secs(25),
        "the long-poll timed out instead: {waited:?}"
    );
    assert!(delivered < Duration::from_secs(5), "{delivered:?}");
    let customer = page
        .customers
        .iter()
        .find(|c| c.customer_id == "B-c1")
        .unwrap_or_else(|| panic!("the change is not in the page: {page:?}"));
    assert_eq!(customer.balance, 500);
    assert_eq!(customer.includes_store_seq, 1);
    assert_eq!(customer.cards, vec!["4000001".to_string()]);
    println!("long-poll delivery after the upload's ack: {delivered:?}");

    // An unknown card: 404 with an ErrorBody.
    let missing = a.get(hub.addr, "/v1/stores/A/customers/by-card/999").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json::<ErrorBody>().code, "unknown_card");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_card_enrolled_offline_in_two_stores_is_merged_with_every_point_kept() {
    let env = Env::new();
    let hub = env.hub("");
    let a = env.client("A");
    let b = env.client("B");
    let early: jiff::Timestamp = "2026-11-20T10:00:00Z".parse().expect("t");
    let late: jiff::Timestamp = "2026-11-21T10:00:00Z".parse().expect("t");
    b.post_ok(
        hub.addr,
        "B",
        body(
            "B",
            "i",
            &[
                enrolled_at(1, "b1", "B-c", "4111", late),
                ledger(2, "b2", "B-c", "earn", 70, "RB1"),
            ],
        ),
    )
    .await;
    let cursor_b = drain(&b, &hub, "B").await;
    a.post_ok(
        hub.addr,
        "A",
        body(
            "A",
            "i",
            &[
                enrolled_at(1, "a1", "A-c", "4111", early),
                ledger(2, "a2", "A-c", "earn", 30, "RA1"),
            ],
        ),
    )
    .await;
    // B still uses its id: the entry lands on the survivor.
    b.post_ok(
        hub.addr,
        "B",
        body("B", "i", &[ledger(3, "b3", "B-c", "clawback", -5, "RB1")]),
    )
    .await;
    let page: ChangesPage = b
        .get(hub.addr, &format!("/v1/stores/B/changes?cursor={cursor_b}"))
        .await
        .json();
    assert_eq!(page.merged.len(), 1, "{page:?}");
    assert_eq!(page.merged[0].from, "B-c");
    assert_eq!(page.merged[0].into, "A-c", "the earliest enrolled survives");
    let survivor = page
        .customers
        .iter()
        .find(|c| c.customer_id == "A-c")
        .expect("survivor");
    assert_eq!(survivor.balance, 95);
    assert_eq!(survivor.includes_store_seq, 3);
    assert!(page.customers.iter().all(|c| c.customer_id != "B-c"));
    let page_a: ChangesPage = a.get(hub.addr, "/v1/stores/A/changes").await.json();
    assert!(
        page_a
            .merged
            .iter()
            .any(|m| m.from == "B-c" && m.into == "A-c"),
        "{page_a:?}"
    );
    let sql = env.sql().await;
    assert_eq!(count(&sql, "SELECT count(*) FROM customer_merges").await, 1);
    assert_eq!(
        count(
            &sql,
            "SELECT count(*) FROM ledger_entries WHERE customer_id = 'B-c'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &sql,
            "SELECT sum(points)::bigint FROM ledger_entries WHERE customer_id = 'A-c'"
        )
        .await,
        95
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voucher_redeemed_in_two_stores_is_recorded_counted_and_revoked_everywhere() {
    let env = Env::new();
    let hub = env.hub("");
    let a = env.client("A");
    let b = env.client("B");
    let cursor_b = drain(&b, &hub, "B").await;
    a.post_ok(
        hub.addr,
        "A",
        body("A", "i", &[redeemed(1, "a1", "V00FF", "RA1")]),
    )
    .await;
    // B (online) learns at once that the voucher is used.
    let page: ChangesPage = b
        .get(hub.addr, &format!("/v1/stores/B/changes?cursor={cursor_b}"))
        .await
        .json();
    assert_eq!(page.revoked_vouchers, vec!["V00FF".to_string()]);
    // B had been offline and redeemed it too.
    b.post_ok(
        hub.addr,
        "B",
        body("B", "i", &[redeemed(1, "b1", "V00FF", "RB7")]),
    )
    .await;
    let sql = env.sql().await;
    let row = sql
        .query_one(
            "SELECT first_store, first_receipt, second_store, second_receipt FROM double_redemptions
             WHERE kind = 'voucher' AND voucher_id = 'V00FF'",
            &[],
        )
        .await
        .expect("recorded");
    let got: (String, String, String, String) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(got, ("A".into(), "RA1".into(), "B".into(), "RB7".into()));
    let page: ChangesPage = a.get(hub.addr, "/v1/stores/A/changes").await.json();
    assert!(page.revoked_vouchers.contains(&"V00FF".to_string()));
    let metrics = a.get(hub.addr, "/metrics").await.text();
    assert!(
        metrics.contains("loyalty_hub_double_redemptions_total{kind=\"voucher\"} 1"),
        "{metrics}"
    );
    // Points spent beyond the chain-wide balance are recorded too.
    a.post_ok(
        hub.addr,
        "A",
        body(
            "A",
            "i",
            &[
                enrolled(2, "a2", "A-c", "4222"),
                ledger(3, "a3", "A-c", "earn", 10, "RA2"),
                ledger(4, "a4", "A-c", "redeem", -25, "RA3"),
                // Applied set-wise, yet counted in event order: this later earn does not
                // hide the overdraft before it.
                ledger(5, "a5", "A-c", "earn", 100, "RA4"),
            ],
        ),
    )
    .await;
    let row = sql
        .query_one(
            "SELECT balance_after FROM double_redemptions WHERE kind = 'points'",
            &[],
        )
        .await
        .expect("points recorded");
    assert_eq!(row.get::<_, Option<i64>>(0), Some(-15));
    let health = a.get(hub.addr, "/health").await;
    assert_eq!(health.status, 200, "{}", health.text());
    let latest = loyalty_hub::db::MIGRATIONS.len();
    assert!(
        health
            .text()
            .contains(&format!("\"schema_version\":{latest}")),
        "{}",
        health.text()
    );
}

/// Takes the next position as every hub writer does (its writer lock until COMMIT) and writes a
/// `voucher_revoked` change for `store` with it.
async fn revoke_in(tx: &tokio_postgres::Transaction<'_>, store: &str, voucher: &str) -> i64 {
    let id: i64 = writer_position(tx).await;
    tx.execute(
        "INSERT INTO changes (id, store_id, kind, voucher_id) VALUES ($1, $2, 'voucher_revoked', $3)",
        &[&id, &store, &voucher],
    )
    .await
    .expect("change");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_committed_after_a_later_one_is_not_skipped_by_the_cursor() {
    let env = Env::new();
    let hub = env.hub("");
    let a = env.client("A");
    let cursor = drain(&a, &hub, "A").await;
    // Two writers: the first takes the lower position but commits after the second.
    let mut first_sql = env.sql().await;
    let mut second_sql = env.sql().await;
    let first = first_sql.transaction().await.expect("tx");
    let early = revoke_in(&first, "A", "v-early").await;
    let second = second_sql.transaction().await.expect("tx");
    let late = revoke_in(&second, "A", "v-late").await;
    assert!(early < late);
    second.commit().await.expect("commit");
    // The store reads now: the page must wait for the first writer, not answer `late` alone
    // with a cursor past `early` (which would skip it for ever).
    let reader = {
        let a = a.clone();
        let addr = hub.addr;
        tokio::spawn(async move {
            a.get(addr, &format!("/v1/stores/A/changes?cursor={cursor}"))
                .await
                .json::<ChangesPage>()
        })
    };
    let watcher = env.sql().await;
    until_a_session_waits(&watcher, LockWait::Advisory, || reader.is_finished()).await;
    first.commit().await.expect("commit");
    let page = reader.await.expect("reader");
    assert_eq!(
        page.revoked_vouchers,
        vec!["v-early".to_string(), "v-late".to_string()],
        "{page:?}"
    );
    assert_eq!(page.cursor, late.to_string());
}
