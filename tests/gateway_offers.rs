//! Personal offers and the till's screen end to end (issue #16): the gateway binary, a real
//! Mosquitto and the reference CRM over mutual TLS. An offer fed for one customer appears in
//! her scan answer and not in another's; a receipt with the article earns the bonus once, also
//! when the gateway is killed (-9) after the answer and the till sends the receipt again, and
//! when it is killed before the receipt is durable and the broker redelivers it; without
//! `profiling` consent no offer is shown or applied; an excluded category never earns; her open
//! voucher is on the screen until it is redeemed; a customer with 100 offers gets an answer within the size bound;
//! each use reaches the CRM as one `offer_redeemed` event.

use harness::{sale, wait_online, Till};
use loyalty_protocol::crm::{ChangesPage, WireConsent, WireCustomer, WireOffer};
use loyalty_protocol::till::Screen;
use loyalty_tools::crm_reference::{self, Faults, ReferenceConfig, ReferenceCrm};
use loyalty_tools::testkit::{self as harness, GatewayBinary};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const STORE: &str = "of1";
const PREFIX: &str = "loyalty/of1";
const ADA: &str = "2990000000019";
const BEN: &str = "2990000000026";
/// No `profiling` consent.
const NOC: &str = "2990000000033";
/// 100 offers.
const MANY: &str = "2990000000040";
const COFFEE: &str = "4006381333931";
const ANSWER: Duration = Duration::from_secs(15);

fn config(
    dir: &Path,
    crm: &ReferenceCrm,
    pki: &loyalty_tools::certs::LocalPki,
    broker: u16,
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
[rules]
points_per_unit = 1
per_amount = "1.00"
excluded_categories = ["tobacco"]
offer_excluded_categories = ["baby"]
[rewards]
signing_key_file = "{key}"
rules = [{{ every_points = 100, value = "5.00", validity_days = 30 }}]
[crm]
enabled = true
url = "{url}"
client_cert_file = "{cert}"
client_key_file = "{ckey}"
ca_file = "{ca}"
poll_interval_secs = 1
batch_max_age_ms = 20
backoff_min_ms = 50
backoff_max_ms = 300
[http]
enabled = false
"#,
        data = dir.join("data").display(),
        key = dir.join("signing.key").display(),
        url = crm.url(),
        cert = pki.client_cert_file.display(),
        ckey = pki.client_key_file.display(),
        ca = pki.ca_file.display(),
    )
}

fn customer(id: &str, card: &str, profiling: bool) -> WireCustomer {
    WireCustomer {
        customer_id: id.into(),
        balance: 0,
        includes_store_seq: 0,
        tier: None,
        cards: vec![card.into()],
        display_name: Some(format!("Name of {id}")),
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

fn offer(json: &str) -> WireOffer {
    serde_json::from_str(json).expect("offer JSON")
}

/// Scans `text` on `lane` and returns its answer. A receipt's answer repeated meanwhile is
/// skipped: after a kill -9 the broker may redeliver a receipt whose PUBACK was lost, and the
/// gateway answers it again (`duplicate: true`).
async fn scan(till: &mut Till, lane: &str, text: &str) -> Value {
    till.scan(lane, text).await;
    loop {
        let answer = till.next_on(lane, ANSWER).await;
        if answer["duplicate"] != true {
            return answer;
        }
    }
}

fn offer_ids(answer: &Value) -> Vec<String> {
    answer["offers"]
        .as_array()
        .map(|offers| {
            offers
                .iter()
                .filter_map(|o| o["offer_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_offers_show_for_her_alone_and_apply_exactly_once() {
    let broker = harness::Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = loyalty_tools::certs::write_local_pki(dir.path(), STORE).expect("pki");
    loyalty_daemon::vouchers::keyfile::generate(&dir.path().join("signing.key")).expect("key");
    let crm = crm_reference::serve(ReferenceConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        cert_file: pki.server_cert_file.clone(),
        key_file: pki.server_key_file.clone(),
        client_ca_file: pki.ca_file.clone(),
        data_dir: Some(dir.path().join("crm")),
        fsync: false,
        faults: Faults::default(),
    })
    .await
    .expect("reference CRM");
    let mut offers = vec![
        offer(
            r#"{"offer_id":"OF-COFFEE","customer_id":"C-ADA","text":"100 bonus points on coffee",
                "conditions":{"gtins":["4006381333931"]},"benefit":{"bonus_points":100}}"#,
        ),
        offer(
            r#"{"offer_id":"OF-TOBACCO","customer_id":"C-ADA","text":"Tobacco bonus",
                "conditions":{"categories":["tobacco","baby"]},"benefit":{"bonus_points":50}}"#,
        ),
        offer(
            r#"{"offer_id":"OF-TEA","customer_id":"C-ADA","text":"Tea: 7 bonus points",
                "conditions":{"categories":["tea"]},"benefit":{"bonus_points":7}}"#,
        ),
        offer(
            r#"{"offer_id":"OF-CLIP","customer_id":"C-ADA","text":"Clip me first",
                "requires_activation":true,"benefit":{"bonus_points":1}}"#,
        ),
        offer(
            r#"{"offer_id":"OF-NOC","customer_id":"C-NOC","text":"Never shown",
                "conditions":{"gtins":["4006381333931"]},"benefit":{"bonus_points":100}}"#,
        ),
    ];
    for i in 0..100 {
        offers.push(offer(&format!(
            r#"{{"offer_id":"OF-MANY-{i:03}-{pad}","customer_id":"C-MANY",
                 "text":"{text}","benefit":{{"amount_off":"1.00"}}}}"#,
            pad = "x".repeat(40),
            text = "Ä long offer text for the till's small screen, longer than it can show",
        )));
    }
    crm.push_changes(
        STORE,
        ChangesPage {
            customers: vec![
                customer("C-ADA", ADA, true),
                customer("C-BEN", BEN, true),
                customer("C-NOC", NOC, false),
                customer("C-MANY", MANY, true),
            ],
            offers,
            ..ChangesPage::default()
        },
    );
    let binary = GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"));
    let mut gateway = binary.start_with_env(
        dir.path(),
        &config(dir.path(), &crm, &pki, broker.port),
        &[(loyalty_daemon::gateway::STALL_RECEIPT_ENV, "R-STALL")],
    );
    wait_online(broker.port, PREFIX).await;
    // The page is applied before the feed asks for the next one.
    assert!(
        harness::wait_until(ANSWER, || crm.stats().changes_requests >= 2),
        "the feed never came back for a second page; log:\n{}",
        gateway.log()
    );
    let mut till = Till::connect(broker.port, PREFIX, "till-of").await;

    // Her offers are on her screen (not the clipped-only one), nobody else's.
    let ada = scan(&mut till, "1", ADA).await;
    assert_eq!(ada["type"], "customer", "{ada}");
    assert_eq!(ada["name"], "Name of C-ADA");
    assert_eq!(
        offer_ids(&ada),
        vec!["OF-COFFEE", "OF-TEA", "OF-TOBACCO"],
        "{ada}"
    );
    assert_eq!(ada["offers"][0]["text"], "100 bonus points on coffee");
    assert_eq!(ada["redeemable"], 0);
    let ben = scan(&mut till, "2", BEN).await;
    assert!(offer_ids(&ben).is_empty(), "{ben}");
    let noc = scan(&mut till, "2", NOC).await;
    assert!(offer_ids(&noc).is_empty(), "no profiling consent: {noc}");
    till.receipt(
        "2",
        &sale("R-NOC", "2", Some(NOC), &[(COFFEE, 1, "5.00", "coffee")]),
    )
    .await;
    let points = till.next_on("2", ANSWER).await;
    assert_eq!(points["earned"], 5, "her offer is not applied: {points}");

    // The size bound: 100 offers, the answer stays within it and counts what it left out.
    till.scan("3", MANY).await;
    let many_raw = loop {
        let raw = till.next(ANSWER).await;
        if raw["lane"] == "3" {
            break raw;
        }
    };
    let bytes = serde_json::to_vec(&many_raw).expect("json").len();
    assert!(
        bytes <= Screen::MAX_ANSWER_BYTES,
        "{bytes} bytes: {many_raw}"
    );
    let shown = offer_ids(&many_raw).len();
    assert!((1..=Screen::MAX_OFFERS).contains(&shown), "{many_raw}");
    assert_eq!(
        shown as u64 + many_raw["more_offers"].as_u64().unwrap_or(0),
        100,
        "{many_raw}"
    );
    assert!(many_raw["offers"][0]["text"]
        .as_str()
        .is_some_and(|t| t.chars().count() <= Screen::MAX_TEXT_CHARS));
    assert_eq!(many_raw["offers"][0]["amount_off"], "1.00");

    // Her receipt: coffee earns the bonus; the tobacco and baby lines never earn an offer.
    let receipt = sale(
        "R-1",
        "1",
        Some(ADA),
        &[
            (COFFEE, 1, "5.00", "coffee"),
            ("5000000000001", 1, "8.00", "tobacco"),
            ("5000000000002", 1, "3.00", "baby"),
        ],
    );
    till.receipt("1", &receipt).await;
    let first = till.next_on("1", ANSWER).await;
    assert_eq!(first["type"], "points", "{first}");
    // 5 (coffee) + 3 (baby earns points, but no offer) + 100 bonus; tobacco earns nothing.
    assert_eq!(first["earned"], 108, "{first}");
    assert_eq!(first["duplicate"], false);
    let voucher_id = first["vouchers"][0]["voucher_id"]
        .as_str()
        .expect("100 points became a voucher")
        .to_string();
    let voucher_text = first["vouchers"][0]["text"]
        .as_str()
        .expect("its QR text")
        .to_string();

    // kill -9 after the answer; the till sends the receipt again: the same answer, no second
    // bonus.
    gateway.kill9();
    gateway.spawn();
    wait_online(broker.port, PREFIX).await;
    till.receipt("1", &receipt).await;
    let again = till.next_on("1", ANSWER).await;
    assert_eq!(again["receipt_id"], "R-1", "{again}");
    assert_eq!(again["earned"], 108, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    let ada = scan(&mut till, "1", ADA).await;
    assert_eq!(ada["balance"], 8, "108 earned, 100 converted: {ada}");
    assert_eq!(
        offer_ids(&ada),
        vec!["OF-TEA", "OF-TOBACCO"],
        "used up: {ada}"
    );
    assert_eq!(
        ada["vouchers"][0]["voucher_id"],
        voucher_id.as_str(),
        "{ada}"
    );
    assert_eq!(ada["vouchers"][0]["value"], "5.00");

    // Redeemed, the voucher leaves her screen.
    let reward = scan(&mut till, "1", &voucher_text).await;
    assert_eq!(reward["status"], "valid", "{reward}");
    let mut paying = sale(
        "R-2",
        "1",
        Some(ADA),
        &[("7000000000001", 1, "10.00", "food")],
    );
    paying["rewards"] = Value::Array(vec![Value::String(voucher_id.clone())]);
    till.receipt("1", &paying).await;
    let paid = loop {
        let answer = till.next_on("1", ANSWER).await;
        if answer["receipt_id"] == "R-2" {
            break answer;
        }
    };
    assert_eq!(paid["earned"], 10, "{paid}");
    let ada = scan(&mut till, "1", ADA).await;
    assert!(ada.get("vouchers").is_none(), "redeemed: {ada}");
    assert_eq!(ada["balance"], 18, "{ada}");

    // A receipt received but not yet durable when the gateway dies is redelivered by the
    // broker and earns its bonus exactly once.
    till.receipt(
        "1",
        &sale(
            "R-STALL",
            "1",
            Some(ADA),
            &[("6000000000001", 1, "2.00", "tea")],
        ),
    )
    .await;
    assert!(
        harness::wait_until(ANSWER, || gateway
            .log()
            .contains("stalling on this receipt")),
        "the gateway never received the receipt:\n{}",
        gateway.log()
    );
    gateway.kill9();
    gateway.env.clear();
    gateway.spawn();
    let stalled = loop {
        let answer = till.next_on("1", ANSWER).await;
        if answer["receipt_id"] == "R-STALL" {
            break answer;
        }
    };
    assert_eq!(stalled["earned"], 2 + 7, "{stalled}");
    let ada = scan(&mut till, "1", ADA).await;
    assert_eq!(ada["balance"], 18 + 9, "applied once: {ada}");
    assert_eq!(offer_ids(&ada), vec!["OF-TOBACCO"], "{ada}");

    // Each use reached head office once.
    let deadline = Instant::now() + ANSWER;
    loop {
        let uses: Vec<Value> = crm
            .received(STORE)
            .into_iter()
            .filter(|e| e.kind == "offer_redeemed")
            .map(|e| e.payload)
            .collect();
        if uses.len() >= 2 {
            let ids: Vec<&str> = uses.iter().filter_map(|u| u["offer_id"].as_str()).collect();
            assert_eq!(ids, vec!["OF-COFFEE", "OF-TEA"], "{uses:?}");
            assert_eq!(uses[0]["customer_id"], "C-ADA");
            assert_eq!(uses[0]["bonus_points"], 100);
            assert_eq!(uses[0]["receipt_id"], "R-1");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "offer uses not uploaded: {uses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.stop();
}
