//! The gateway binary against a real Mosquitto started on a free port: card scans and receipts
//! get their answers; duplicates, returns and bad input are answered correctly; receipts
//! published while the gateway is down are applied after it restarts; `kill -9` during load
//! loses nothing that was answered and doubles nothing; a broker restart is survived.

use harness::{sale, wait_online, Mosquitto, Till};
use loyalty_daemon::vouchers::VoucherSettingsExt;
use loyalty_tools::testkit::{self as harness, GatewayBinary};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The binary under test.
fn gateway_binary() -> GatewayBinary {
    GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"))
}

const ANSWER: Duration = Duration::from_secs(15);

fn config(data_dir: &std::path::Path, port: u16, store_id: &str) -> String {
    format!(
        r#"
[store]
id = "{store_id}"
timezone = "Europe/Berlin"
currency = "EUR"

[storage]
data_dir = "{data}"

[mqtt]
url = "mqtt://127.0.0.1:{port}"
reconnect_min_ms = 50
reconnect_max_ms = 500

[cards]
prefixes = ["299"]

[rules]
points_per_unit = 1
per_amount = "1.00"
excluded_categories = ["tobacco"]

[http]
enabled = false
"#,
        data = data_dir.join("data").display()
    )
}

async fn answer_for(till: &mut Till, predicate: impl Fn(&Value) -> bool) -> Value {
    loop {
        let answer = till.next(ANSWER).await;
        if predicate(&answer) {
            return answer;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_then_receipt_earns_points_and_duplicates_change_nothing() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let _gateway = gateway_binary().start(dir.path(), &config(dir.path(), broker.port, "s1"));
    wait_online(broker.port, "loyalty/s1").await;
    let mut till = Till::connect(broker.port, "loyalty/s1", "till-1").await;

    till.scan("1", "]E02990000000019").await;
    let enrolled = till.next(ANSWER).await;
    assert_eq!(enrolled["type"], "enrolled", "{enrolled}");
    assert_eq!(enrolled["lane"], "1");
    assert_eq!(enrolled["card"], "2990000000019");
    let customer_id = enrolled["customer_id"].as_str().expect("id").to_string();

    let receipt = sale(
        "R-1",
        "1",
        None,
        &[
            ("4006381333931", 2, "12.40", "stationery"),
            ("1", 1, "8.00", "tobacco"),
        ],
    );
    till.receipt("1", &receipt).await;
    let points = till.next(ANSWER).await;
    assert_eq!(points["type"], "points", "{points}");
    assert_eq!(points["receipt_id"], "R-1");
    assert_eq!(points["customer_id"], customer_id.as_str());
    assert_eq!(points["earned"], 12, "tobacco earns nothing: {points}");
    assert_eq!(points["balance"], 12);

    // The same receipt again: the same answer, no new points.
    till.receipt("1", &receipt).await;
    let again = till.next(ANSWER).await;
    assert_eq!(again["earned"], 12);
    assert_eq!(again["balance"], 12);
    assert_eq!(again["duplicate"], true);

    // Scanning the card again shows the balance.
    till.scan("2", "2990000000019").await;
    let known = till.next(ANSWER).await;
    assert_eq!(known["type"], "customer");
    assert_eq!(known["balance"], 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_claw_back_and_bad_input_gets_error_answers() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let _gateway = gateway_binary().start(dir.path(), &config(dir.path(), broker.port, "s2"));
    wait_online(broker.port, "loyalty/s2").await;
    let mut till = Till::connect(broker.port, "loyalty/s2", "till-2").await;

    let receipt = sale(
        "R-10",
        "3",
        Some("2990000000026"),
        &[("A", 1, "10.00", "food"), ("B", 1, "20.00", "food")],
    );
    till.receipt("3", &receipt).await;
    let points = till.next(ANSWER).await;
    assert_eq!(points["earned"], 30, "{points}");

    let ret = json!({"receipt_id": "R-10-R", "lane": "3", "timestamp": "2026-11-23T11:00:00+01:00",
        "kind": "return", "original_receipt_id": "R-10", "currency": "EUR", "total": "20.00",
        "lines": [{"sku": "B", "name": "B", "qty": 1, "amount": "20.00", "category": "food"}]});
    till.receipt("3", &ret).await;
    let back = till.next(ANSWER).await;
    assert_eq!(back["type"], "points", "{back}");
    assert_eq!(back["earned"], -20);
    assert_eq!(back["balance"], 10);

    // Malformed JSON, a total that disagrees with its lines, garbage scans: error answers.
    till.receipt_bytes("3", b"{\"receipt_id\": ").await;
    let malformed = till.next(ANSWER).await;
    assert_eq!(malformed["type"], "error");
    assert_eq!(malformed["code"], "malformed_receipt");

    // One unreadable amount: refused as malformed, naming the receipt it could read.
    let mut bad_amount = sale("R-12", "3", None, &[("A", 1, "10.00", "food")]);
    bad_amount["lines"][0]["amount"] = json!("5.0.0");
    till.receipt("3", &bad_amount).await;
    let malformed = till.next(ANSWER).await;
    assert_eq!(malformed["code"], "malformed_receipt", "{malformed}");
    assert_eq!(malformed["receipt_id"], "R-12", "{malformed}");

    let mut wrong_total = sale("R-11", "3", None, &[("A", 1, "10.00", "food")]);
    wrong_total["total"] = json!("11.00");
    till.receipt("3", &wrong_total).await;
    let invalid = till.next(ANSWER).await;
    assert_eq!(invalid["code"], "invalid_receipt", "{invalid}");
    assert_eq!(invalid["receipt_id"], "R-11");

    till.scan("3", "\u{1}\u{2}garbage").await;
    assert_eq!(till.next(ANSWER).await["type"], "error");
    till.scan("3", "]E09800000000014").await;
    let coupon = till.next(ANSWER).await;
    assert_eq!(coupon["type"], "error", "98x is a coupon range: {coupon}");

    // Nothing was written for the refused receipt: sending a valid R-11 now earns points.
    till.receipt(
        "3",
        &sale(
            "R-11",
            "3",
            Some("2990000000026"),
            &[("A", 1, "10.00", "food")],
        ),
    )
    .await;
    let ok = till.next(ANSWER).await;
    assert_eq!(ok["earned"], 10, "{ok}");
    assert_eq!(ok["duplicate"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_scanned_after_a_cardless_receipt_attaches_to_it() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let _gateway = gateway_binary().start(dir.path(), &config(dir.path(), broker.port, "s3"));
    wait_online(broker.port, "loyalty/s3").await;
    let mut till = Till::connect(broker.port, "loyalty/s3", "till-3").await;

    till.receipt("5", &sale("R-20", "5", None, &[("A", 1, "7.00", "food")]))
        .await;
    let anonymous = till.next(ANSWER).await;
    assert_eq!(anonymous["earned"], 0);
    assert_eq!(anonymous["customer_id"], Value::Null);

    till.scan("5", "2990000000033").await;
    let who = till.next(ANSWER).await;
    assert_eq!(who["type"], "enrolled");
    let attached = till.next(ANSWER).await;
    assert_eq!(attached["type"], "points", "{attached}");
    assert_eq!(attached["receipt_id"], "R-20");
    assert_eq!(attached["earned"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_published_while_the_gateway_is_down_are_applied_after_restart() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gateway = gateway_binary().start(dir.path(), &config(dir.path(), broker.port, "s4"));
    wait_online(broker.port, "loyalty/s4").await;
    gateway.stop();

    let mut till = Till::connect(broker.port, "loyalty/s4", "till-4").await;
    for i in 0..20 {
        till.receipt(
            "1",
            &sale(
                &format!("R-{i}"),
                "1",
                Some("2990000000019"),
                &[("A", 1, "1.00", "food")],
            ),
        )
        .await;
    }
    gateway.spawn();
    let mut seen = BTreeSet::new();
    while seen.len() < 20 {
        let answer = till.next(ANSWER).await;
        assert_eq!(answer["type"], "points", "{answer}");
        seen.insert(answer["receipt_id"].as_str().expect("id").to_string());
    }
    till.scan("1", "2990000000019").await;
    let customer = answer_for(&mut till, |a| a["type"] == "customer").await;
    assert_eq!(customer["balance"], 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_load_loses_no_answered_receipt_and_doubles_none() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gateway = gateway_binary().start(dir.path(), &config(dir.path(), broker.port, "s5"));
    wait_online(broker.port, "loyalty/s5").await;
    let mut till = Till::connect(broker.port, "loyalty/s5", "till-5").await;

    // Each receipt earns 1 point for the same customer; the final balance must equal the
    // number of distinct receipts, whatever the kills did.
    let total = 120;
    let mut answered: BTreeMap<String, i64> = BTreeMap::new();
    let mut next = 0;
    for round in 0..4 {
        for _ in 0..total / 4 {
            till.receipt(
                "1",
                &sale(
                    &format!("K-{next}"),
                    "1",
                    Some("2990000000019"),
                    &[("A", 1, "1.00", "food")],
                ),
            )
            .await;
            next += 1;
        }
        // Let some answers arrive, then kill without warning mid-stream.
        for _ in 0..(5 + round * 3) {
            if let Some(answer) = till.try_next(Duration::from_secs(5)).await {
                if answer["type"] == "points" {
                    answered.insert(
                        answer["receipt_id"].as_str().expect("id").into(),
                        answer["earned"].as_i64().expect("earned"),
                    );
                }
            }
        }
        gateway.kill9();
        gateway.spawn();
    }
    // After the last restart every receipt is eventually answered (redelivered by the broker).
    while answered.len() < total {
        let answer = till.next(Duration::from_secs(30)).await;
        if answer["type"] == "points" {
            answered.insert(
                answer["receipt_id"].as_str().expect("id").into(),
                answer["earned"].as_i64().expect("earned"),
            );
        }
    }
    assert!(answered.values().all(|earned| *earned == 1));
    till.scan("1", "2990000000019").await;
    let customer = answer_for(&mut till, |a| a["type"] == "customer").await;
    assert_eq!(
        customer["balance"], total as i64,
        "every receipt counted exactly once"
    );
    gateway.stop();

    let output = std::process::Command::new(gateway_binary())
        .args(["verify", "--config"])
        .arg(&gateway.config_path)
        .output()
        .expect("run verify");
    assert!(
        output.status.success(),
        "verify failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_is_survived() {
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let _gateway = gateway_binary().start(dir.path(), &config(dir.path(), broker.port, "s6"));
    wait_online(broker.port, "loyalty/s6").await;
    {
        let mut till = Till::connect(broker.port, "loyalty/s6", "till-6").await;
        till.receipt(
            "1",
            &sale(
                "B-1",
                "1",
                Some("2990000000019"),
                &[("A", 1, "3.00", "food")],
            ),
        )
        .await;
        assert_eq!(till.next(ANSWER).await["earned"], 3);
    }
    broker.restart();
    wait_online(broker.port, "loyalty/s6").await;
    let mut till = Till::connect(broker.port, "loyalty/s6", "till-6b").await;
    till.receipt(
        "1",
        &sale(
            "B-2",
            "1",
            Some("2990000000019"),
            &[("A", 1, "4.00", "food")],
        ),
    )
    .await;
    let answer = till.next(ANSWER).await;
    assert_eq!(answer["earned"], 4, "{answer}");
    assert_eq!(answer["balance"], 7);
}

/// A Pi that boots with its clock in the past (no RTC, NTP not yet answering): the gateway
/// keeps answering, stamps events with its proven lower bound on the time (the floor it
/// persisted while the clock was right), and flags them `clock_trusted: false` for the CRM.
/// Events from the earlier run, with a trusted clock, carry no flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_behind_the_persisted_floor_keeps_answering_and_flags_its_events() {
    use loyalty_daemon::vouchers::VoucherSettings;
    use loyalty_store::vouchers::Vouchers;
    use loyalty_store::Store;

    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // Trust follows the persisted floor only (this VM's kernel may report NTP unsynchronised).
    let config_text = config(dir.path(), broker.port, "s8").replace(
        "currency = \"EUR\"\n",
        "currency = \"EUR\"\nrequire_ntp_sync = false\n",
    );
    assert!(config_text.contains("require_ntp_sync = false"));
    let mut gateway = gateway_binary().start(dir.path(), &config_text);
    wait_online(broker.port, "loyalty/s8").await;
    let mut till = Till::connect(broker.port, "loyalty/s8", "till-8").await;
    till.scan("1", "2990000000019").await;
    assert_eq!(till.next(ANSWER).await["type"], "enrolled");
    gateway.stop();

    // The floor a later boot cannot go below: two days ahead of this machine's clock, as if
    // the wall clock were now two days behind the real time.
    let floor = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
    let config = loyalty_daemon::config::parse(&config_text).expect("config");
    let first_run_last_seq = {
        let store = Store::open(&config.storage, &config.store.id).expect("open store");
        let built =
            loyalty_daemon::config::Built::new(config.clone()).expect("valid configuration");
        let settings = VoucherSettings::from_config(&built).expect("voucher settings");
        let keys = settings.trusted_keys(&built).expect("keys");
        let vouchers = Vouchers::open(&store, settings, keys).expect("vouchers");
        vouchers.observe_trusted_time(floor).expect("floor");
        store.wait_durable().expect("durable");
        store.outbox_stats().expect("stats").last_seq
    };

    gateway.spawn();
    wait_online(broker.port, "loyalty/s8").await;
    till.receipt(
        "1",
        &sale(
            "R-1",
            "1",
            Some("2990000000019"),
            &[("A", 1, "3.00", "food")],
        ),
    )
    .await;
    let points = answer_for(&mut till, |a| a["type"] == "points").await;
    assert_eq!(points["earned"], 3, "{points}");
    till.scan("1", "2990000000026").await;
    assert_eq!(
        answer_for(&mut till, |a| a["type"] == "enrolled").await["card"],
        "2990000000026"
    );
    gateway.stop();

    let store = Store::open(&config.storage, &config.store.id).expect("open store");
    let events = store.outbox_after(0, 1000).expect("outbox");
    let (before, after): (Vec<_>, Vec<_>) =
        events.iter().partition(|e| e.seq <= first_run_last_seq);
    assert!(!before.is_empty(), "the first run wrote events");
    for event in &before {
        assert!(event.json.get("clock_trusted").is_none(), "{}", event.json);
    }
    let kinds: BTreeSet<&str> = after.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        ["receipt", "ledger", "customer_enrolled"]
            .iter()
            .all(|kind| kinds.contains(kind)),
        "{kinds:?}"
    );
    for event in &after {
        assert_eq!(event.json["clock_trusted"], false, "{}", event.json);
        if event.kind.as_str() == "receipt" {
            continue; // stamped with the till's time, not the gateway's
        }
        // The floor is persisted in whole seconds.
        assert!(
            event.at.as_second() >= floor.as_second(),
            "stamped at the floor or later: {}",
            event.json
        );
    }
}

/// Deterministic proof of the acknowledgement contract: the gateway receives a receipt and is
/// killed before it is durable (fault injection holds it there). The broker must still hold the
/// receipt and redeliver it to the restarted gateway, which applies it exactly once. With
/// acknowledgements on receipt (rumqttc's default) the receipt would be lost here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_received_but_not_yet_durable_is_redelivered_after_kill_9() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gateway = gateway_binary().start_with_env(
        dir.path(),
        &config(dir.path(), broker.port, "s9"),
        &[(loyalty_daemon::gateway::STALL_RECEIPT_ENV, "R-STALL")],
    );
    wait_online(broker.port, "loyalty/s9").await;
    let mut till = Till::connect(broker.port, "loyalty/s9", "till-9").await;
    till.receipt(
        "1",
        &sale(
            "R-STALL",
            "1",
            Some("2990000000019"),
            &[("A", 1, "7.00", "food")],
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
    assert!(
        till.try_next(Duration::from_millis(200)).await.is_none(),
        "no answer before the receipt is durable"
    );

    gateway.env.clear();
    gateway.spawn();
    let points = answer_for(&mut till, |a| a["receipt_id"] == "R-STALL").await;
    assert_eq!(points["type"], "points", "{points}");
    assert_eq!(points["earned"], 7, "{points}");
    assert_eq!(points["duplicate"], false, "{points}");
    till.scan("1", "2990000000019").await;
    let customer = answer_for(&mut till, |a| a["type"] == "customer").await;
    assert_eq!(customer["balance"], 7, "applied exactly once: {customer}");
}
