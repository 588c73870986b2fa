//! The gateway against head office (issue #15, SPEC 2.5), end to end: the gateway binary, a
//! real Mosquitto and the reference CRM over mutual TLS as the test double of `loyalty-hub`.
//! A card known at head office is recognised at a lane with its chain-wide id and balance; a
//! change scripted while the gateway long-polls reaches a lane within 5 s (the poll interval is
//! 300 s, so only the long-poll can explain it); a merge moves a card enrolled offline into the
//! head-office account; an erasure is confirmed with `customer_erased`; a head office that
//! accepts and never answers costs a lane at most the lookup timeout and stalls no other lane.

use harness::{sale, wait_online, Till};
use loyalty_protocol::crm::{ChangesPage, WireCustomer, WireMerge};
use loyalty_tools::crm_reference::{self, Faults, ReferenceConfig, ReferenceCrm};
use loyalty_tools::testkit::{self as harness, http_get, metric_sample, GatewayBinary};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const STORE: &str = "hb1";
const PREFIX: &str = "loyalty/hb1";
/// Known at head office (customer `HO-1`).
const HO_CARD: &str = "2990000000019";
/// Enrolled offline in this store, then merged into `HO-1` at head office.
const OFFLINE_CARD: &str = "2990000000026";

fn config(
    dir: &Path,
    crm: &ReferenceCrm,
    pki: &loyalty_tools::certs::LocalPki,
    broker: u16,
    lookup_timeout_ms: u64,
    http: u16,
) -> String {
    format!(
        r#"[store]
id = "{STORE}"
timezone = "Europe/Berlin"
require_ntp_sync = false
[storage]
data_dir = "{data}"
[mqtt]
url = "mqtt://127.0.0.1:{broker}"
reconnect_min_ms = 50
reconnect_max_ms = 500
[cards]
prefixes = ["299"]
[crm]
enabled = true
url = "{url}"
client_cert_file = "{cert}"
client_key_file = "{key}"
ca_file = "{ca}"
poll_interval_secs = 300
feed_wait_secs = 25
lookup_timeout_ms = {lookup_timeout_ms}
batch_max_age_ms = 20
backoff_min_ms = 50
backoff_max_ms = 300
[http]
bind = "127.0.0.1:{http}"
"#,
        data = dir.join("data").display(),
        url = crm.url(),
        cert = pki.client_cert_file.display(),
        key = pki.client_key_file.display(),
        ca = pki.ca_file.display(),
    )
}

async fn head_office(dir: &Path, pki: &loyalty_tools::certs::LocalPki) -> ReferenceCrm {
    crm_reference::serve(ReferenceConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        cert_file: pki.server_cert_file.clone(),
        key_file: pki.server_key_file.clone(),
        client_ca_file: pki.ca_file.clone(),
        data_dir: Some(dir.join("crm")),
        fsync: false,
        faults: Faults::default(),
    })
    .await
    .expect("reference CRM")
}

/// Scans `card` on `lane` and returns the answer.
async fn scan(till: &mut Till, lane: &str, card: &str) -> Value {
    till.scan(lane, card).await;
    till.next_on(lane, Duration::from_secs(15)).await
}

/// Waits until the gateway's changes request is being held open at head office (one more
/// held long-poll than `before`).
async fn until_long_poll_held(crm: &ReferenceCrm, before: u64, gateway: &harness::Gateway) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while crm.stats().long_polls_held <= before {
        assert!(
            Instant::now() < deadline,
            "the gateway never long-polled; log:\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ho_customer(balance: i64, cards: &[&str]) -> WireCustomer {
    WireCustomer {
        customer_id: "HO-1".into(),
        balance,
        includes_store_seq: 0,
        tier: Some("gold".into()),
        cards: cards.iter().map(|c| c.to_string()).collect(),
        display_name: Some("Ada".into()),
        consent: None,
        phone_hash: None,
        email_hash: None,
        tags: Vec::new(),
        birthday: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_office_customers_changes_merges_and_erasures_reach_the_lanes() {
    let broker = harness::Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = loyalty_tools::certs::write_local_pki(dir.path(), STORE).expect("pki");
    let crm = head_office(dir.path(), &pki).await;
    crm.add_customer(ho_customer(500, &[HO_CARD]));
    let binary = GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"));
    let http = harness::free_port();
    let gateway = binary.start(
        dir.path(),
        &config(dir.path(), &crm, &pki, broker.port, 300, http),
    );
    wait_online(broker.port, PREFIX).await;
    let mut till = Till::connect(broker.port, PREFIX, "till-hb").await;

    // A card this store never saw, known at head office: answered as her, not enrolled.
    let answer = scan(&mut till, "1", HO_CARD).await;
    assert_eq!(answer["type"], "customer", "{answer}");
    assert_eq!(answer["customer_id"], "HO-1");
    assert_eq!(answer["balance"], 500);
    assert_eq!(answer["tier"], "gold");
    assert_eq!(crm.stats().card_lookups, 1);
    // Known now: the next scan asks nobody.
    assert_eq!(scan(&mut till, "1", HO_CARD).await["balance"], 500);
    assert_eq!(crm.stats().card_lookups, 1);

    // A change at head office while the gateway's request is held reaches the lane within
    // 5 s (the poll interval is 300 s: only the long-poll can bring it).
    let held = crm.stats().long_polls_held;
    until_long_poll_held(&crm, held.saturating_sub(1), &gateway).await;
    let changed_at = Instant::now();
    crm.push_changes(
        STORE,
        ChangesPage {
            customers: vec![ho_customer(800, &[HO_CARD])],
            ..ChangesPage::default()
        },
    );
    loop {
        let answer = scan(&mut till, "2", HO_CARD).await;
        if answer["balance"] == 800 {
            break;
        }
        assert!(
            changed_at.elapsed() < Duration::from_secs(5),
            "the change did not reach the lane within 5 s (still {answer}); log:\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = changed_at.elapsed();
    eprintln!("change at head office to the lane's answer: {delivered:?}");

    // A card head office does not know is enrolled offline here and earns points.
    let enrolled = scan(&mut till, "3", OFFLINE_CARD).await;
    assert_eq!(enrolled["type"], "enrolled", "{enrolled}");
    let local_id = enrolled["customer_id"].as_str().expect("id").to_string();
    till.receipt(
        "3",
        &sale(
            "HB-1",
            "3",
            Some(OFFLINE_CARD),
            &[("A", 1, "30.00", "food")],
        ),
    )
    .await;
    let points = till.next_on("3", Duration::from_secs(15)).await;
    assert_eq!(points["type"], "points", "{points}");
    let earned = points["earned"].as_i64().expect("earned");
    assert!(earned > 0, "{points}");

    // Head office finds it is the same person and merges the offline account into HO-1.
    crm.push_changes(
        STORE,
        ChangesPage {
            merged: vec![WireMerge {
                from: local_id.clone(),
                into: "HO-1".into(),
            }],
            ..ChangesPage::default()
        },
    );
    let merged_at = Instant::now();
    loop {
        let answer = scan(&mut till, "3", OFFLINE_CARD).await;
        if answer["customer_id"] == "HO-1" {
            assert_eq!(answer["type"], "customer");
            assert_eq!(answer["balance"], 800 + earned, "no point lost or doubled");
            break;
        }
        assert_eq!(answer["customer_id"], local_id.as_str());
        assert!(
            merged_at.elapsed() < Duration::from_secs(5),
            "the merge did not reach the lane; log:\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = scan(&mut till, "1", HO_CARD).await;
    assert_eq!(
        (answer["customer_id"].clone(), answer["balance"].clone()),
        (Value::from("HO-1"), Value::from(800 + earned))
    );

    // An erasure is applied and confirmed to head office, with the id only.
    crm.push_changes(
        STORE,
        ChangesPage {
            erased: vec!["HO-1".into()],
            ..ChangesPage::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while crm.erasures_confirmed(STORE) != ["HO-1"] {
        assert!(
            Instant::now() < deadline,
            "no customer_erased confirmation; log:\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let confirmation = crm
        .received(STORE)
        .into_iter()
        .find(|e| e.kind == "customer_erased")
        .expect("confirmation");
    assert_eq!(
        confirmation.payload,
        serde_json::json!({"customer_id": "HO-1"})
    );
    crm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_head_office_costs_a_lane_at_most_the_lookup_timeout_and_stalls_no_other_lane() {
    const TIMEOUT: Duration = Duration::from_millis(1500);
    let broker = harness::Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = loyalty_tools::certs::write_local_pki(dir.path(), STORE).expect("pki");
    let crm = head_office(dir.path(), &pki).await;
    let binary = GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"));
    let http = harness::free_port();
    let text = config(
        dir.path(),
        &crm,
        &pki,
        broker.port,
        TIMEOUT.as_millis() as u64,
        http,
    );
    let gateway = binary.start(dir.path(), &text);
    wait_online(broker.port, PREFIX).await;
    let mut till = Till::connect(broker.port, PREFIX, "till-hb2").await;

    // Head office answers 404 for a card it does not know: enrolled offline.
    let known = scan(&mut till, "2", HO_CARD).await;
    assert_eq!(known["type"], "enrolled", "{known}");
    assert_eq!(crm.stats().card_lookups, 1);

    // Head office now accepts lookups and never answers.
    crm.stall_lookups(true);
    let scanned_at = Instant::now();
    till.scan("1", OFFLINE_CARD).await;
    // Another lane is served meanwhile, long before the stalled lookup gives up.
    till.scan("2", HO_CARD).await;
    let other = till.next_on("2", Duration::from_secs(15)).await;
    let other_after = scanned_at.elapsed();
    assert_eq!(other["type"], "customer", "{other}");
    let stalled = till.next_on("1", Duration::from_secs(15)).await;
    let stalled_after = scanned_at.elapsed();
    assert_eq!(stalled["type"], "enrolled", "{stalled}");
    assert!(
        other_after < stalled_after,
        "lane 2 ({other_after:?}) waited for lane 1's lookup ({stalled_after:?})"
    );
    assert!(
        stalled_after < TIMEOUT + Duration::from_secs(2),
        "the lane waited {stalled_after:?} for a lookup limited to {TIMEOUT:?}"
    );
    // The lookup reached head office and was abandoned, not answered.
    assert_eq!(crm.stats().card_lookups, 2);
    eprintln!(
        "stalled lookup: lane answered after {stalled_after:?}, other lane after {other_after:?}"
    );

    // Sync is known to be down now: the next new card is enrolled without asking.
    let quick = scan(&mut till, "1", "2990000000033").await;
    assert_eq!(quick["type"], "enrolled", "{quick}");
    assert_eq!(
        crm.stats().card_lookups,
        2,
        "no lookup while head office is down"
    );
    assert!(
        gateway.log().contains("lookup abandoned"),
        "{}",
        gateway.log()
    );
    let (status, metrics) = http_get(http, "/metrics");
    assert_eq!(status, 200);
    for (outcome, count) in [
        ("not_found", 1.0),
        ("failed", 1.0),
        ("skipped", 1.0),
        ("found", 0.0),
    ] {
        let series = format!("loyalty_card_lookups_total{{outcome=\"{outcome}\"}}");
        assert_eq!(
            metric_sample(&metrics, &series),
            Some(count),
            "{series} in:\n{metrics}"
        );
    }
    crm.shutdown().await;
}
