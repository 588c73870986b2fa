//! The changes feed: balance rebase under any interleaving of local entries, uploads and pulls;
//! erasure; revoked vouchers and keys; rules (accepted, refused, kept across restarts); the
//! cursor stored with its page.

use loyalty_protocol::crm::{ChangesPage, WireAdjustment, WireCustomer, WireKey};
use loyalty_store::sync_state::{ChangeSet, CrmCustomer};
use loyalty_store::Store;
use loyalty_tools::testkit::crm::*;
use proptest::prelude::*;
use std::time::Duration;

fn page_for(customer: CrmCustomer, cursor: &str) -> ChangeSet {
    ChangeSet {
        cursor: cursor.into(),
        now: jiff::Timestamp::now(),
        merged: vec![],
        customers: vec![customer],
        adjustments: vec![],
        erased: vec![],
        revoked_vouchers: vec![],
        keys: vec![],
        rules_json: None,
        rules_rejection: None,
        offers: Vec::new(),
        clips: Vec::new(),
    }
}

fn crm_customer(balance: i64, through: u64) -> CrmCustomer {
    CrmCustomer {
        customer_id: "C1".into(),
        balance,
        includes_store_seq: through,
        tier: Some("gold".into()),
        cards: vec!["2990000000019".into()],
        display_name: Some("Ada".into()),
        consent: None,
        phone_hash: None,
        email_hash: None,
        tags: Vec::new(),
        birthday: None,
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A local ledger entry (points) in this store.
    Local(i64),
    /// Points from elsewhere (other stores, CRM adjustments) at the CRM.
    Elsewhere(i64),
    /// The CRM ingests this store's events up to `min(last_seq, ingested + n)`.
    Upload(u64),
    /// The CRM takes a balance snapshot now (delivered later, in order).
    Snapshot,
    /// The next pending snapshot arrives through the feed.
    Pull,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (-50i64..100).prop_filter("non-zero", |p| *p != 0).prop_map(Op::Local),
        1 => (1i64..100).prop_map(Op::Elsewhere),
        2 => (0u64..4).prop_map(Op::Upload),
        2 => Just(Op::Snapshot),
        2 => Just(Op::Pull),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn rebase_never_double_counts_nor_loses_an_entry(ops in proptest::collection::vec(op(), 1..40)) {
        let data = tempfile::tempdir().expect("tempdir");
        let mut config = loyalty_daemon::config::Config::default();
        config.store.id = STORE.into();
        config.storage.data_dir = data.path().to_path_buf();
        let store = Store::open(&config.storage, STORE).expect("open");
        let now = jiff::Timestamp::now();
        // The CRM knows the customer with 1000 points before this store saw anything.
        store.apply_changes(&page_for(crm_customer(1000, 0), "0")).expect("apply");
        let mut local: Vec<(u64, i64)> = Vec::new(); // (seq, points) of this store's entries
        let mut elsewhere = 0i64;
        let mut ingested = 0u64; // this store's seq the CRM has
        let mut snapshots: std::collections::VecDeque<(i64, u64)> = Default::default();
        let mut held: (i64, u64) = (1000, 0);
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Local(points) => {
                    store.crm_adjustment("C1", *points, &format!("adj-{i}"), "test", now).expect("entry");
                    let seq = store.outbox_stats().expect("stats").last_seq;
                    local.push((seq, *points));
                }
                Op::Elsewhere(points) => elsewhere += points,
                Op::Upload(n) => {
                    let last = store.outbox_stats().expect("stats").last_seq;
                    ingested = (ingested + n).min(last);
                }
                Op::Snapshot => {
                    let crm_balance = 1000 + elsewhere
                        + local.iter().filter(|(s, _)| *s <= ingested).map(|(_, p)| p).sum::<i64>();
                    snapshots.push_back((crm_balance, ingested));
                }
                Op::Pull => {
                    if let Some((balance, through)) = snapshots.pop_front() {
                        store.apply_changes(&page_for(crm_customer(balance, through), &i.to_string())).expect("apply");
                        if through >= held.1 { held = (balance, through); }
                    }
                }
            }
            let expected = held.0 + local.iter().filter(|(s, _)| *s > held.1).map(|(_, p)| p).sum::<i64>();
            prop_assert_eq!(store.balance("C1", now).expect("balance").total, expected);
        }
        // Everything uploaded and pulled: the store agrees with the CRM exactly.
        let last = store.outbox_stats().expect("stats").last_seq;
        let total = 1000 + elsewhere + local.iter().map(|(_, p)| p).sum::<i64>();
        store.apply_changes(&page_for(crm_customer(total, last), "end")).expect("apply");
        prop_assert_eq!(store.balance("C1", now).expect("balance").total, total);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_applies_customers_erasures_revocations_keys_and_rules() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("tempdir");
    let crm = pki.receiver(None).await;
    let config = config(&pki, &crm.url(), data.path());
    let store = open_store(&config);
    let (handle, cancel) = start(&config, &store);
    let mut rules = handle.rules();
    assert!(rules.borrow().is_none());
    crm.push_changes(
        STORE,
        ChangesPage {
            customers: vec![WireCustomer {
                customer_id: "C7".into(),
                balance: 250,
                includes_store_seq: 0,
                tier: Some("gold".into()),
                cards: vec!["2990000000071".into()],
                display_name: Some("Grace".into()),
                consent: None,
                phone_hash: None,
                email_hash: None,
                tags: Vec::new(),
                birthday: None,
            }],
            keys: vec![WireKey {
                key_id: "HO-2026".into(),
                algorithm: "ed25519".into(),
                public_key: "MCowBQYDK2VwAyEA".into(),
                issuer: Some("head-office".into()),
                revoked: false,
            }],
            revoked_vouchers: vec!["V-1".into()],
            rules: Some(serde_json::json!({"points_per_unit": 2, "per_amount": "1.00"})),
            ..ChangesPage::default()
        },
    );
    handle.poll_changes_now();
    tokio::time::timeout(Duration::from_secs(20), rules.changed())
        .await
        .expect("rules in time")
        .expect("rules");
    assert_eq!(
        rules
            .borrow()
            .as_ref()
            .expect("rules")
            .config
            .points_per_unit,
        2
    );
    let s = store.clone();
    let (customer, balance, revoked, keys, cursor) = tokio::task::spawn_blocking(move || {
        (
            s.customer_by_card("2990000000071").expect("read"),
            s.balance("C7", jiff::Timestamp::now()).expect("balance"),
            s.is_voucher_revoked("V-1").expect("read"),
            s.crm_keys().expect("keys"),
            s.sync_cursor().expect("cursor"),
        )
    })
    .await
    .expect("join");
    let customer = customer.expect("customer by card");
    assert_eq!(
        (
            customer.id.as_str(),
            customer.name.as_deref(),
            customer.tier.as_deref()
        ),
        ("C7", Some("Grace"), Some("gold"))
    );
    assert_eq!(balance.total, 250);
    assert!(revoked);
    assert_eq!(keys.len(), 1);
    assert_eq!(cursor.as_deref(), Some("1"));

    // A local entry, then an erasure and a bad rule set in one page.
    let s = store.clone();
    tokio::task::spawn_blocking(move || {
        s.crm_adjustment("C7", 5, "adj-1", "goodwill", jiff::Timestamp::now())
    })
    .await
    .expect("join")
    .expect("adjust");
    let events_before = store.outbox_stats().expect("stats").last_seq;
    crm.push_changes(
        STORE,
        ChangesPage {
            erased: vec!["C7".into()],
            revoked_vouchers: vec!["V-2".into()],
            rules: Some(serde_json::json!({"points_per_unit": -3, "per_amount": "1.00"})),
            ..ChangesPage::default()
        },
    );
    handle.poll_changes_now();
    let st = tokio::time::timeout(
        Duration::from_secs(20),
        handle
            .status()
            .wait_for(|s| s.rules_rejected.is_some() && s.feed_cursor.as_deref() == Some("2")),
    )
    .await
    .expect("bad rules reported");
    assert!(st
        .rules_rejected
        .expect("rejection")
        .message
        .contains("refused"));
    assert_eq!(
        rules
            .borrow()
            .as_ref()
            .expect("old rules kept")
            .config
            .points_per_unit,
        2
    );
    assert!(
        store
            .customer_by_card("2990000000071")
            .expect("read")
            .is_none(),
        "card erased"
    );
    let erased = store.customer("C7").expect("read").expect("account kept");
    assert_eq!(erased.name, None);
    assert_eq!(
        store
            .balance("C7", jiff::Timestamp::now())
            .expect("balance")
            .total,
        255,
        "ledger arithmetic kept"
    );
    assert!(
        store.is_voucher_revoked("V-2").expect("read"),
        "the rest of the page applied"
    );
    // The erasure sends one confirmation, with the id only (no card, no name).
    let sent = store.outbox_after(events_before, 10).expect("outbox");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0].kind,
        loyalty_store::events::EventType::CustomerErased
    );
    assert_eq!(
        sent[0].json["payload"],
        serde_json::json!({"customer_id": "C7"})
    );
    cancel.cancel();
    handle.join().await;

    // After a restart, the accepted CRM rules are in force again.
    let cancel = tokio_util::sync::CancellationToken::new();
    let handle =
        loyalty_daemon::sync::start(&config, store.clone(), cancel.clone()).expect("start");
    assert_eq!(
        handle
            .rules()
            .borrow()
            .as_ref()
            .expect("stored rules")
            .config
            .points_per_unit,
        2
    );
    assert!(handle.status().snapshot().rules_rejected.is_some());
    cancel.cancel();
    handle.join().await;
}

/// Waits until the feed stored `cursor` (the page before it applied).
async fn wait_cursor(handle: &loyalty_daemon::sync::SyncHandle, cursor: &str) {
    handle.poll_changes_now();
    tokio::time::timeout(
        Duration::from_secs(20),
        handle
            .status()
            .wait_for(|s| s.feed_cursor.as_deref() == Some(cursor)),
    )
    .await
    .expect("page applied in time");
}

/// The outbox's `ledger` events carrying `reference`.
fn ledger_events_with(store: &Store, reference: &str) -> Vec<serde_json::Value> {
    store
        .outbox_after(0, 1000)
        .expect("outbox")
        .into_iter()
        .map(|e| e.json)
        .filter(|j| j["type"] == "ledger" && j["payload"]["reference"] == reference)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adjustments_from_the_feed_apply_once_even_when_delivered_twice() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("tempdir");
    let crm = pki.receiver(None).await;
    let config = config(&pki, &crm.url(), data.path());
    let store = open_store(&config);
    let (handle, cancel) = start(&config, &store);
    let adjustment = WireAdjustment {
        reference: "HO-ADJ-1".into(),
        customer_id: "C8".into(),
        points: 40,
        reason: "goodwill: broken coffee machine".into(),
    };
    // The customer, then an adjustment and an invalid one (unknown customer) in the next page.
    crm.push_changes(
        STORE,
        ChangesPage {
            customers: vec![WireCustomer {
                customer_id: "C8".into(),
                balance: 100,
                includes_store_seq: 0,
                tier: None,
                cards: vec!["2990000000088".into()],
                display_name: None,
                consent: None,
                phone_hash: None,
                email_hash: None,
                tags: Vec::new(),
                birthday: None,
            }],
            ..ChangesPage::default()
        },
    );
    crm.push_changes(
        STORE,
        ChangesPage {
            adjustments: vec![
                adjustment.clone(),
                WireAdjustment {
                    reference: "HO-ADJ-2".into(),
                    customer_id: "NOBODY".into(),
                    points: 5,
                    reason: "unknown here".into(),
                },
            ],
            ..ChangesPage::default()
        },
    );
    wait_cursor(&handle, "2").await;
    let balance = |store: &Store| {
        store
            .balance("C8", jiff::Timestamp::now())
            .expect("balance")
    };
    assert_eq!(balance(&store).total, 140, "the adjustment counts");
    let events = ledger_events_with(&store, "HO-ADJ-1");
    assert_eq!(events.len(), 1, "one ledger event: {events:?}");
    assert_eq!(events[0]["payload"]["points"], 40);
    assert_eq!(events[0]["payload"]["kind"], "adjustment");
    assert_eq!(
        events[0]["payload"]["reason"],
        "goodwill: broken coffee machine"
    );
    assert!(
        ledger_events_with(&store, "HO-ADJ-2").is_empty(),
        "unknown customer skipped"
    );

    // The CRM delivers the same adjustment again (a retried page): nothing changes.
    let last_seq = store.outbox_stats().expect("stats").last_seq;
    crm.push_changes(
        STORE,
        ChangesPage {
            adjustments: vec![adjustment],
            ..ChangesPage::default()
        },
    );
    wait_cursor(&handle, "3").await;
    assert_eq!(balance(&store).total, 140, "applied once");
    assert_eq!(ledger_events_with(&store, "HO-ADJ-1").len(), 1);
    assert_eq!(store.outbox_stats().expect("stats").last_seq, last_seq);
    let entries = store.customer_entries("C8").expect("entries");
    assert_eq!(entries.len(), 1, "{entries:?}");

    // The CRM confirms a balance that includes the store's ledger event: no double count.
    crm.push_changes(
        STORE,
        ChangesPage {
            customers: vec![WireCustomer {
                customer_id: "C8".into(),
                balance: 140,
                includes_store_seq: last_seq,
                tier: None,
                cards: vec!["2990000000088".into()],
                display_name: None,
                consent: None,
                phone_hash: None,
                email_hash: None,
                tags: Vec::new(),
                birthday: None,
            }],
            ..ChangesPage::default()
        },
    );
    wait_cursor(&handle, "4").await;
    assert_eq!(balance(&store).total, 140, "confirmed, not counted twice");
    cancel.cancel();
    handle.join().await;
}

#[test]
fn rules_with_unknown_keys_or_bad_values_are_refused() {
    use loyalty_daemon::sync::feed::validate_rules;
    assert!(validate_rules(&serde_json::json!({"points_per_unit": 1}), "EUR").is_ok());
    let err = validate_rules(&serde_json::json!({"points_per_unitt": 1}), "EUR").expect_err("typo");
    assert!(err.contains("points_per_unitt"), "{err}");
    assert!(validate_rules(&serde_json::json!({"per_amount": "abc"}), "EUR").is_err());
    assert!(validate_rules(&serde_json::json!([1, 2]), "EUR").is_err());
}
