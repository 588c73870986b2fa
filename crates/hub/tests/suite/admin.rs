//! Head office's side: the admin API behind its bearer token (profiles with consent and cards,
//! phone and e-mail kept only as hashes, rules, keys, offers, adjustments reaching the stores'
//! feeds and waking long-polls), erasure everywhere (no trace of the card, the name or the
//! contact hashes left in any row of any table; a real gateway's confirmation), the export
//! stream (commit order, resumable, not skipping under concurrent ingest) and tiers qualified
//! across stores (upgrade on ingest, downgrade as time passes).

use crate::support::*;
use loyalty_core::ledger::EarningPolicy;
use loyalty_core::receipt::ValidReceipt;
use loyalty_hub::export::ExportPage;
use loyalty_protocol::crm::{ChangesPage, WireCustomer};
use loyalty_store::ReceiptCustomer;
use loyalty_tools::testkit::crm::{self as crmkit, STORE};
use loyalty_tools::testkit::store::{line, sale, Policy};
use std::time::{Duration, Instant};

async fn drain(c: &Client, hub: &HubProcess, store: &str, cursor: &str) -> (String, ChangesPage) {
    let mut cursor = cursor.to_string();
    let mut all = ChangesPage::default();
    loop {
        let page: ChangesPage = c
            .get(
                hub.addr,
                &format!("/v1/stores/{store}/changes?cursor={cursor}"),
            )
            .await
            .json();
        let done = page.is_empty();
        cursor = page.cursor.clone();
        all.customers.extend(page.customers);
        all.adjustments.extend(page.adjustments);
        all.offers.extend(page.offers);
        all.erased.extend(page.erased);
        all.keys.extend(page.keys);
        if page.rules.is_some() {
            all.rules = page.rules;
        }
        if done {
            return (cursor, all);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_leaves_no_personal_data_in_any_row_and_a_real_gateway_confirms_it() {
    let env = Env::new();
    let hub = env.hub(&admin_config(&env, ""));
    let office = env.client("head-office");
    let data = tempfile::tempdir().expect("tempdir");
    let url = format!("https://localhost:{}", hub.addr.port());
    let config = crmkit::config(&env.pki, &url, data.path());
    let store = crmkit::open_store(&config);
    let policy = Policy::default();
    let (sync, cancel) = crmkit::start(&config, &store);
    let card = "4000000000042";
    let second_card = "4000000000777";
    let name = "Zelda Quarkworth";
    let (phone, email) = ("+49 170 9876-543", "Zelda@Quark.example");
    let phone_hash = loyalty_core::contact::phone_hash(phone).expect("phone");
    let email_hash = loyalty_core::contact::email_hash(email).expect("email");
    let mut customer = None;
    for i in 0..3 {
        let mut receipt = sale(&format!("R{i}"), vec![line("A", 2_000 + i * 100, None)]);
        receipt.card = Some(card.into());
        let valid = ValidReceipt::check(receipt, policy.limits()).expect("valid");
        let applied = store
            .apply_valid_receipt(
                &valid,
                ReceiptCustomer::Card { card, enrol: true },
                &policy,
                None,
                loyalty_tools::testkit::store::now(),
            )
            .expect("apply");
        customer = applied.outcome.customer_id.clone();
    }
    let customer = customer.expect("enrolled");
    assert!(
        !customer.contains(card),
        "the test needs an id without the card"
    );
    let last = store.outbox_stats().expect("stats").last_seq;
    let status = sync.status();
    crmkit::wait_status(&status, |s| s.acked_through >= last).await;

    // Head office names her, gives her a second card, records her consent, phone and e-mail.
    let put = admin(
        &office,
        &hub,
        "PUT",
        &format!("/v1/admin/customers/{customer}"),
        serde_json::json!({"display_name": name, "cards": [card, second_card],
                           "consent": {"marketing": true, "profiling": false},
                           "phone": phone, "email": email}),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
    let store_client = env.client(STORE);
    let found: WireCustomer = store_client
        .get(
            hub.addr,
            &format!("/v1/stores/{STORE}/customers/by-card/{second_card}"),
        )
        .await
        .json();
    assert_eq!(found.display_name.as_deref(), Some(name));
    assert_eq!(found.cards, vec![card.to_string(), second_card.to_string()]);
    let consent = found.consent.expect("consent in the feed");
    assert!(consent.marketing && !consent.profiling);
    assert_eq!(found.phone_hash.as_deref(), Some(phone_hash.as_str()));
    assert_eq!(found.email_hash.as_deref(), Some(email_hash.as_str()));
    let sql = env.sql().await;
    // Only the hashes are kept: no row holds the phone or e-mail in clear, in any format.
    for needle in [
        "1709876543",
        "9876-543",
        "zelda@quark",
        "Zelda@Quark",
        "quark.example",
    ] {
        let clear = rows_containing(&sql, needle).await;
        assert!(clear.is_empty(), "{needle:?} in clear: {clear:#?}");
    }
    assert!(!rows_containing(&sql, &phone_hash).await.is_empty());
    // The store's feed brings the hashes to the gateway: staff can find her by phone.
    let deadline = Instant::now() + Duration::from_secs(60);
    while store
        .customer_by_contact_hash("phone", &phone_hash)
        .expect("lookup")
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "phone hash not at the store in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let points_before = count(
        &sql,
        &format!("SELECT coalesce(sum(points), 0)::bigint FROM ledger_entries WHERE customer_id = '{customer}'"),
    )
    .await;
    assert!(points_before > 0);
    assert!(
        !rows_containing(&sql, card).await.is_empty(),
        "the search finds the card before"
    );

    let erased = erase(&office, &hub, &customer).await;
    let body: serde_json::Value = erased.json();
    assert_eq!(body["stores"][0]["store_id"], STORE, "{body}");
    assert_eq!(body["complete"], false, "{body}");

    for needle in [card, second_card, name, &phone_hash, &email_hash] {
        let left = rows_containing(&sql, needle).await;
        assert!(left.is_empty(), "{needle:?} still in: {left:#?}");
    }
    let points_after = count(
        &sql,
        &format!("SELECT coalesce(sum(points), 0)::bigint FROM ledger_entries WHERE customer_id = '{customer}'"),
    )
    .await;
    assert_eq!(points_after, points_before, "the anonymous figures stay");
    let gone = store_client
        .get(
            hub.addr,
            &format!("/v1/stores/{STORE}/customers/by-card/{card}"),
        )
        .await;
    assert_eq!(gone.status, 404);

    // The gateway gets the erasure in its feed, applies it and confirms with customer_erased.
    let deadline = Instant::now() + Duration::from_secs(60);
    let confirmed = loop {
        let answer = admin(
            &office,
            &hub,
            "GET",
            &format!("/v1/admin/erasures/{customer}"),
            serde_json::Value::Null,
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let body: serde_json::Value = answer.json();
        if body["complete"] == true {
            break body;
        }
        assert!(Instant::now() < deadline, "not confirmed in 60 s: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(confirmed["stores"][0]["state"], "confirmed", "{confirmed}");
    for (kind, hash) in [("phone", &phone_hash), ("email", &email_hash)] {
        let left = store.customer_by_contact_hash(kind, hash).expect("lookup");
        assert!(left.is_none(), "{kind} hash still indexed at the store");
    }
    for needle in [card, second_card, name] {
        let left = rows_containing(&sql, needle).await;
        assert!(left.is_empty(), "{needle:?} back in: {left:#?}");
    }
    let metrics = store_client.get(hub.addr, "/metrics").await.text();
    assert!(
        metrics.contains("loyalty_hub_erasures_pending 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("loyalty_hub_erasures_confirmed_total 1"),
        "{metrics}"
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_its_token_and_every_change_reaches_the_stores_concerned() {
    let env = Env::new();
    let hub = env.hub(&admin_config(&env, ""));
    let office = env.client("head-office");
    let a = env.client("A");
    let b = env.client("B");
    for (store, client) in [("A", &a), ("B", &b)] {
        client
            .post_ok(
                hub.addr,
                store,
                body(
                    store,
                    "i",
                    &[enrolled(
                        1,
                        &format!("{store}1"),
                        &format!("{store}-c1"),
                        &format!("{store}-card"),
                    )],
                ),
            )
            .await;
    }
    let (cursor_a, _) = drain(&a, &hub, "A", "").await;
    let (cursor_b, _) = drain(&b, &hub, "B", "").await;
    // Without the token, or with a wrong one: 401, nothing written.
    let before = snapshot(&env.sql().await).await;
    let none = office
        .request(hub.addr, "PUT", "/v1/admin/rules", b"{}".to_vec(), &[])
        .await
        .expect("request");
    assert_eq!(none.status, 401, "{}", none.text());
    let wrong = office
        .request(
            hub.addr,
            "PUT",
            "/v1/admin/rules",
            b"{}".to_vec(),
            &[("authorization", "Bearer test-admin-token-0123456780")],
        )
        .await
        .expect("request");
    assert_eq!(wrong.status, 401);
    let export = office.get(hub.addr, "/v1/export").await;
    assert_eq!(export.status, 401);
    assert_eq!(snapshot(&env.sql().await).await, before);

    // A long-poll of store A wakes on the profile change.
    let waiter = {
        let a = a.clone();
        let addr = hub.addr;
        let cursor = cursor_a.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let page: ChangesPage = a
                .get(
                    addr,
                    &format!("/v1/stores/A/changes?cursor={cursor}&wait=30"),
                )
                .await
                .json();
            (started.elapsed(), page)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let put = admin(
        &office,
        &hub,
        "PUT",
        "/v1/admin/customers/A-c1",
        serde_json::json!({"display_name": "Ada", "cards": ["A-card", "A-card-2"], "tier": "gold",
                           "consent": {"marketing": false, "profiling": true}}),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
    let (waited, page) = waiter.await.expect("waiter");
    assert!(waited < Duration::from_secs(5), "long-poll took {waited:?}");
    let c = &page.customers[0];
    assert_eq!(
        (c.customer_id.as_str(), c.tier.as_deref()),
        ("A-c1", Some("gold"))
    );
    assert_eq!(c.cards, vec!["A-card".to_string(), "A-card-2".to_string()]);
    assert_eq!(
        c.consent.map(|c| (c.marketing, c.profiling)),
        Some((false, true))
    );
    // A card of another customer is refused.
    let taken = admin(
        &office,
        &hub,
        "PUT",
        "/v1/admin/customers/A-c1",
        serde_json::json!({"cards": ["B-card"]}),
    )
    .await;
    assert_eq!(taken.status, 409, "{}", taken.text());

    let rules = serde_json::json!({"points_per_unit": 2});
    assert_eq!(
        admin(&office, &hub, "PUT", "/v1/admin/rules", rules.clone())
            .await
            .status,
        200
    );
    let key = serde_json::json!({"key_id": "ho1", "algorithm": "ed25519",
        "public_key": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="});
    let k = admin(&office, &hub, "POST", "/v1/admin/keys", key).await;
    assert_eq!(k.status, 200, "{}", k.text());
    let adj = admin(
        &office,
        &hub,
        "POST",
        "/v1/admin/adjustments",
        serde_json::json!({"reference": "goodwill-1", "customer_id": "A-c1", "points": 50,
                           "reason": "goodwill"}),
    )
    .await;
    assert_eq!(adj.status, 200, "{}", adj.text());
    let offer = admin(
        &office,
        &hub,
        "POST",
        "/v1/admin/offers",
        serde_json::json!({"offer_id": "o1", "segment": "all", "valid_from": "2026-12-01T00:00:00Z",
            "valid_until": "2027-01-01T00:00:00Z", "offer": {"text": "2 for 1",
            "conditions": {"categories": ["coffee"]}, "benefit": {"bonus_points": 20}}}),
    )
    .await;
    assert_eq!(offer.status, 200, "{}", offer.text());
    // An offer a store cannot apply is refused, naming what is missing.
    let unusable = admin(
        &office,
        &hub,
        "POST",
        "/v1/admin/offers",
        serde_json::json!({"offer_id": "o2", "segment": "all", "valid_from": "2026-12-01T00:00:00Z",
            "valid_until": "2027-01-01T00:00:00Z", "offer": {"text": "no benefit"}}),
    )
    .await;
    assert_eq!(unusable.status, 400, "{}", unusable.text());
    assert!(unusable.text().contains("benefit"), "{}", unusable.text());
    let bad = admin(
        &office,
        &hub,
        "POST",
        "/v1/admin/adjustments",
        serde_json::json!({"reference": "x"}),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("customer_id"), "{}", bad.text());

    let (_, page_a) = drain(&a, &hub, "A", &page.cursor).await;
    let (_, page_b) = drain(&b, &hub, "B", &cursor_b).await;
    for page in [&page_a, &page_b] {
        assert_eq!(page.rules.as_ref(), Some(&rules));
        assert!(page
            .keys
            .iter()
            .any(|k| k.key_id == "ho1" && k.issuer.as_deref() == Some("head-office")));
    }
    assert_eq!(
        page_a.adjustments.len(),
        1,
        "the customer's store applies the adjustment"
    );
    assert_eq!(page_a.adjustments[0].points, 50);
    assert!(page_b.adjustments.is_empty(), "only one store journals it");
    assert!(page_b.customers.is_empty(), "B does not know A-c1");
    for page in [&page_a, &page_b] {
        assert_eq!(page.offers.len(), 1, "every store gets the offer");
        assert_eq!(page.offers[0].offer_id, "o1");
        assert_eq!(page.offers[0].segment.as_deref(), Some("all"));
        assert_eq!(page.offers[0].text, "2 for 1");
    }
    let sql = env.sql().await;
    assert_eq!(count(&sql, "SELECT count(*) FROM offers").await, 1);
    let metrics = office.get(hub.addr, "/metrics").await.text();
    assert!(
        metrics.contains("loyalty_hub_admin_changes_total{kind=\"customer\"} 1"),
        "{metrics}"
    );
}

async fn export_all(
    c: &Client,
    hub: &HubProcess,
    after: &str,
    limit: usize,
) -> (String, Vec<(String, u64)>) {
    let mut cursor = after.to_string();
    let mut out = Vec::new();
    loop {
        let answer = c
            .request(
                hub.addr,
                "GET",
                &format!("/v1/export?after={cursor}&limit={limit}"),
                Vec::new(),
                &[("authorization", &format!("Bearer {TOKEN}"))],
            )
            .await
            .expect("request");
        assert_eq!(answer.status, 200, "{}", answer.text());
        let page: ExportPage = answer.json();
        let n = page.events.len();
        out.extend(page.events.into_iter().map(|e| (e.store_id, e.seq)));
        cursor = page.cursor;
        if n == 0 {
            return (cursor, out);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_gives_every_event_once_in_commit_order_and_resumes_without_gap() {
    let env = Env::new();
    let hub = env.hub(&admin_config(&env, ""));
    let office = env.client("head-office");
    let s1 = env.client("S1");
    let s2 = env.client("S2");
    let mut expected = Vec::new();
    for round in 0..4u64 {
        for (store, client) in [("S1", &s1), ("S2", &s2)] {
            let events = enrolments(store, round * 3 + 1, 3);
            client
                .post_ok(hub.addr, store, body(store, "i", &events))
                .await;
            expected.extend(events.iter().map(|e| (store.to_string(), e.seq)));
        }
    }
    let (end, all) = export_all(&office, &hub, "", 5).await;
    assert_eq!(all, expected, "every event once, in commit order");
    // Resuming from a cursor taken mid-way continues without gap or duplicate.
    let answer = office
        .request(
            hub.addr,
            "GET",
            "/v1/export?limit=7",
            Vec::new(),
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await
        .expect("request");
    let first: ExportPage = answer.json();
    assert_eq!(first.events.len(), 7);
    let first_seen: Vec<(String, u64)> = first
        .events
        .iter()
        .map(|e| (e.store_id.clone(), e.seq))
        .collect();
    let (_, rest) = export_all(&office, &hub, &first.cursor, 4).await;
    let joined: Vec<_> = first_seen.into_iter().chain(rest).collect();
    assert_eq!(joined, expected);
    assert_eq!(first.events[0].kind, "customer_enrolled");
    assert!(first.events[0].payload.get().contains("S1-c1"));

    // A reader following while a third store ingests concurrently skips nothing.
    let s3 = env.client("S3");
    let writer = {
        let addr = hub.addr;
        tokio::spawn(async move {
            for batch in 0..40u64 {
                let events = enrolments("S3", batch * 2 + 1, 2);
                s3.post_ok(addr, "S3", body("S3", "i", &events)).await;
            }
        })
    };
    let mut cursor = end;
    let mut seen: Vec<u64> = Vec::new();
    loop {
        // One more full read after the writer is done: then every event must be there.
        let finished = writer.is_finished();
        let (next, got) = export_all(&office, &hub, &cursor, 3).await;
        cursor = next;
        for (store, seq) in got {
            assert_eq!(store, "S3");
            seen.push(seq);
        }
        if finished {
            break;
        }
    }
    writer.await.expect("writer");
    assert_eq!(
        seen,
        (1..=80).collect::<Vec<u64>>(),
        "each S3 event once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_in_two_stores_qualifies_a_tier_both_stores_see_and_time_takes_it_away() {
    let env = Env::new();
    let tiers = "tier_recompute_secs = 3600\n[[tiers]]\nname = \"silver\"\nmin_spend = 100\nmonths = 12\n[[tiers]]\nname = \"gold\"\nmin_spend = 300\nmonths = 12\n";
    let hub = env.hub(&admin_config(&env, tiers));
    let a = env.client("A");
    let b = env.client("B");
    let now = jiff::Timestamp::now();
    a.post_ok(
        hub.addr,
        "A",
        body(
            "A",
            "i",
            &[
                enrolled(1, "a1", "C1", "4000100"),
                receipt(2, "a2", "C1", "RA1", "200.00", now, None),
            ],
        ),
    )
    .await;
    let (_, page) = drain(&a, &hub, "A", "").await;
    assert_eq!(
        page.customers
            .last()
            .and_then(|c| c.tier.clone())
            .as_deref(),
        Some("silver")
    );
    b.post_ok(
        hub.addr,
        "B",
        body(
            "B",
            "i",
            &[receipt(1, "b1", "C1", "RB1", "150.00", now, None)],
        ),
    )
    .await;
    for (store, client) in [("A", &a), ("B", &b)] {
        let found: WireCustomer = client
            .get(
                hub.addr,
                &format!("/v1/stores/{store}/customers/by-card/4000100"),
            )
            .await
            .json();
        assert_eq!(found.tier.as_deref(), Some("gold"), "{store}");
    }
    let (cursor_b, page_b) = drain(&b, &hub, "B", "").await;
    assert_eq!(
        page_b
            .customers
            .last()
            .and_then(|c| c.tier.clone())
            .as_deref(),
        Some("gold")
    );
    // Thirteen months later the periodic job (run here as of that time) downgrades her.
    let text = env.config_text(&admin_config(&env, tiers));
    let config = loyalty_hub::config::parse(&text).expect("config");
    let pg = config.pg_config().expect("pg");
    let pool = loyalty_hub::db::pool(pg.clone(), 2, loyalty_hub::db::Planning::PerExecution)
        .expect("pool");
    let ingest_pool = loyalty_hub::db::pool(pg, 1, loyalty_hub::db::Planning::Once).expect("pool");
    let job_hub = loyalty_hub::Hub {
        config,
        pool,
        ingest_pool,
        metrics: loyalty_hub::metrics::Metrics::new(),
        notifier: Default::default(),
        admin_token: None,
        ingest_queue: tokio::sync::Semaphore::new(1),
    };
    let later = now + jiff::SignedDuration::from_hours(24 * 400);
    let changed = loyalty_hub::tiers::round(&job_hub, &later.to_string())
        .await
        .expect("round");
    assert_eq!(changed, Some(1));
    let again = loyalty_hub::tiers::round(&job_hub, &later.to_string())
        .await
        .expect("round");
    assert_eq!(again, Some(0), "idempotent");
    let (_, page_b) = drain(&b, &hub, "B", &cursor_b).await;
    assert_eq!(page_b.customers.len(), 1);
    assert_eq!(
        page_b.customers[0].tier, None,
        "downgraded, and store B is told"
    );
}
