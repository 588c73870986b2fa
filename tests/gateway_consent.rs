//! Consent and erasure end to end (issue #16): the gateway binary, a real Mosquitto and the
//! reference CRM over mutual TLS, customers and erasures scripted in its changes feed.
//!
//! - Without `profiling` consent no customer-linked lines leave the box: her receipt reaches
//!   the CRM with her id, card, total and points and `lines: []`, `lines_withheld: true`; a
//!   customer with consent gets her lines as before.
//! - After an erasure a byte scan of the data directory finds neither card nor name: receipts
//!   with her card, an event not yet sent (the CRM refuses uploads meanwhile), the erasure
//!   through the feed; the running daemon restarts its gateway in-process so that the store
//!   copies its database, then every file under the data directory is read and searched. The
//!   unsent event reaches the CRM afterwards without her card.

use harness::{sale, wait_online, Till};
use loyalty_protocol::crm::{ChangesPage, WireConsent, WireCustomer};
use loyalty_tools::crm_reference::{self, Fault, Faults, ReferenceConfig, ReferenceCrm};
use loyalty_tools::testkit::store::files_holding;
use loyalty_tools::testkit::{self as harness, http_get, GatewayBinary};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const STORE: &str = "cs1";
const PREFIX: &str = "loyalty/cs1";
const HER_CARD: &str = "2990000000026";
const HER_NAME: &str = "Zoë Quintessa-Erasmus";
const HIS_CARD: &str = "2990000000019";
const HIS_NAME: &str = "Bartholomew Keepsake";

fn config(
    dir: &Path,
    crm: &ReferenceCrm,
    pki: &loyalty_tools::certs::LocalPki,
    broker: u16,
    http: u16,
) -> String {
    harness::synced_config(STORE, dir, broker, http, &crm.url(), pki)
}

fn customer(id: &str, card: &str, name: &str, profiling: bool) -> WireCustomer {
    WireCustomer {
        customer_id: id.into(),
        balance: 0,
        includes_store_seq: 0,
        tier: None,
        cards: vec![card.into()],
        display_name: Some(name.into()),
        consent: Some(WireConsent {
            marketing: true,
            profiling,
        }),
        phone_hash: None,
        email_hash: None,
        tags: Vec::new(),
        birthday: None,
    }
}

/// Sends receipt `id` with `card` and waits for its `points` answer.
async fn sell(till: &mut Till, id: &str, card: &str) -> Value {
    let lines = [
        ("PENCIL-4711", 2, "3.00", "stationery"),
        ("PAPER-0815", 1, "4.50", "stationery"),
    ];
    till.receipt("1", &sale(id, "1", Some(card), &lines)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer: Value = till
            .next(deadline.saturating_duration_since(Instant::now()))
            .await;
        if answer["receipt_id"] == id {
            assert_eq!(answer["type"], "points", "receipt {id} refused: {answer}");
            return answer;
        }
    }
}

/// The payload of the `receipt` event of `id` the CRM holds, once it is there.
async fn at_crm(crm: &ReferenceCrm, gateway: &harness::Gateway, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = crm
            .received(STORE)
            .into_iter()
            .find(|e| e.kind == "receipt" && e.payload["receipt_id"] == id);
        if let Some(event) = found {
            return event.payload;
        }
        assert!(
            Instant::now() < deadline,
            "receipt {id} did not reach the CRM; gateway log:\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_profiling_no_customer_linked_lines_leave_the_box_and_an_erasure_leaves_no_byte_on_disk(
) {
    let broker = harness::Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = loyalty_tools::certs::write_local_pki(dir.path(), STORE).expect("pki");
    let crm = crm_reference::serve(ReferenceConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        cert_file: pki.server_cert_file.clone(),
        key_file: pki.server_key_file.clone(),
        client_ca_file: pki.ca_file.clone(),
        data_dir: None,
        fsync: false,
        faults: Faults::default(),
    })
    .await
    .expect("reference CRM");
    crm.push_changes(
        STORE,
        ChangesPage {
            customers: vec![
                customer("HIS", HIS_CARD, HIS_NAME, true),
                customer("HERS", HER_CARD, HER_NAME, false),
            ],
            ..ChangesPage::default()
        },
    );
    let http = harness::free_port();
    let binary = GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"));
    let mut gateway = binary.start(
        dir.path(),
        &config(dir.path(), &crm, &pki, broker.port, http),
    );
    wait_online(broker.port, PREFIX).await;
    harness::eventually(Duration::from_secs(30), "the feed's customers", || {
        let (status, body) = http_get(http, &format!("/customers?card={HER_CARD}"));
        status == 200 && body.contains("HERS")
    })
    .await;
    let mut till = Till::connect(broker.port, PREFIX, "till-cs").await;

    // Consent decides what leaves the box.
    let his = sell(&mut till, "HIS-1", HIS_CARD).await;
    let answer = sell(&mut till, "HERS-1", HER_CARD).await;
    assert_eq!(
        (his["customer_id"].as_str(), answer["customer_id"].as_str()),
        (Some("HIS"), Some("HERS"))
    );
    let his = at_crm(&crm, &gateway, "HIS-1").await;
    assert_eq!(his["customer_id"], "HIS");
    assert_eq!(his["lines"].as_array().map(Vec::len), Some(2), "{his}");
    assert_eq!(his["lines"][0]["sku"], "PENCIL-4711");
    assert!(his.get("lines_withheld").is_none(), "{his}");
    let hers = at_crm(&crm, &gateway, "HERS-1").await;
    assert_eq!(hers["customer_id"], "HERS");
    assert_eq!(hers["card"], HER_CARD);
    assert_eq!(hers["total"], "7.50");
    assert_eq!(hers["points"], answer["earned"], "{hers}");
    assert_eq!(hers["lines"], serde_json::json!([]), "{hers}");
    assert_eq!(hers["lines_withheld"], true);
    let all = serde_json::to_string(&crm.received(STORE)).expect("json");
    let hers_at_crm: Vec<_> = crm
        .received(STORE)
        .into_iter()
        .filter(|e| e.payload["customer_id"] == "HERS")
        .collect();
    let hers_text = serde_json::to_string(&hers_at_crm).expect("json");
    assert!(
        !hers_text.contains("PENCIL") && !hers_text.contains("stationery"),
        "{hers_text}"
    );
    assert!(all.contains("PENCIL"), "his lines went");

    // Head office cannot be reached for uploads: her next receipt stays in the outbox.
    crm.set_faults(Faults {
        rate_percent: 100,
        kinds: vec![Fault::ServerError],
        on_changes: false,
    });
    sell(&mut till, "HERS-2", HER_CARD).await;
    assert!(
        !files_holding(&dir.path().join("data"), HER_NAME).is_empty(),
        "her name is on disk before the erasure (else the scan below proves nothing)"
    );
    assert!(!files_holding(&dir.path().join("data"), HER_CARD).is_empty());

    // The erasure comes down the feed.
    crm.push_changes(
        STORE,
        ChangesPage {
            erased: vec!["HERS".into()],
            ..ChangesPage::default()
        },
    );
    let data = dir.path().join("data");
    let erasure_sent = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: Vec<String> = [HER_CARD, HER_NAME]
            .iter()
            .flat_map(|t| files_holding(&data, t))
            .collect();
        let restarted = gateway.log().contains("restarting the gateway in-process");
        if left.is_empty() && restarted {
            eprintln!(
                "erasure pushed to the feed -> no byte of hers on disk: {:?}",
                erasure_sent.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "her data is still on disk in {left:?} (restarted: {restarted}); gateway log:\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The scan finds what was not erased.
    assert!(!files_holding(&data, HIS_CARD).is_empty());
    assert!(!files_holding(&data, HIS_NAME).is_empty());

    // The gateway serves the lanes again after its restart, and once head office is back
    // the unsent receipt arrives without her card, with the erasure's confirmation.
    wait_online(broker.port, PREFIX).await;
    crm.set_faults(Faults::default());
    sell(&mut till, "HIS-2", HIS_CARD).await;
    let unsent = at_crm(&crm, &gateway, "HERS-2").await;
    assert_eq!(unsent["customer_id"], "HERS");
    assert_eq!(unsent["card"], Value::Null, "{unsent}");
    assert_eq!(unsent["lines"], serde_json::json!([]));
    at_crm(&crm, &gateway, "HIS-2").await;
    harness::eventually(
        Duration::from_secs(30),
        "the erasure's confirmation",
        || {
            crm.received(STORE)
                .iter()
                .any(|e| e.kind == "customer_erased" && e.payload["customer_id"] == "HERS")
        },
    )
    .await;
    let sent = serde_json::to_string(&crm.received(STORE)).expect("json");
    let after_erasure = &sent[sent.find("HERS-2").expect("sent")..];
    assert!(!after_erasure.contains(HER_CARD), "{after_erasure}");
    // Her card is free again: scanned, it is a stranger's (enrolled anew), not her.
    let (status, _) = http_get(http, &format!("/customers?card={HER_CARD}"));
    assert_eq!(status, 404);
    for personal in [HER_CARD, HER_NAME] {
        assert_eq!(
            files_holding(&data, personal),
            Vec::<String>::new(),
            "{personal}"
        );
    }
    assert_eq!(
        gateway.stop().and_then(|s| s.code()),
        Some(0),
        "{}",
        gateway.log()
    );
}
