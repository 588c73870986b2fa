//! Pay with points end to end: the gateway binary against a real Mosquitto. A `redeem` is
//! reserved durably and answered; the receipt naming it commits it once (balance, one `redeem`
//! ledger event in the outbox, a redelivered receipt changes nothing); the same request again
//! answers the same; too many points are `insufficient`; a `void` releases the lane's points
//! and the voucher it held; a reservation expires and never commits; two lanes racing for the
//! same points: exactly one wins; `kill -9` between reserve and commit: after the restart the
//! receipt commits it exactly once.

use harness::{sale, wait_online, Mosquitto, Till};
use loyalty_protocol::till::RedeemMessage;
use loyalty_tools::testkit::{self as harness, http_get, metric_sample, GatewayBinary};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn gateway_binary() -> GatewayBinary {
    GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"))
}

const ANSWER: Duration = Duration::from_secs(15);
const CARD: &str = "2990000000019";

fn config(dir: &Path, port: u16, store_id: &str, extra: &str) -> String {
    format!(
        r#"
[store]
id = "{store_id}"
timezone = "Europe/Berlin"
currency = "EUR"
require_ntp_sync = false

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

[redeem]
point_value = "0.01"
{extra}
"#,
        data = dir.join("data").display()
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

async fn redemption(till: &mut Till, lane: &str, request: &RedeemMessage) -> Value {
    till.redeem(lane, request).await;
    let reference = request.reference.clone();
    answer_for(till, |a| {
        a["lane"] == lane && (a["reference"] == reference.as_str() || a["type"] == "error")
    })
    .await
}

/// Enrols the card with `euros` worth of points (a sale on `lane`); returns the customer id.
async fn customer_with(till: &mut Till, lane: &str, euros: i64) -> String {
    let amount = format!("{euros}.00");
    let id = format!("EARN-{lane}-{euros}");
    till.receipt(
        lane,
        &sale(&id, lane, Some(CARD), &[("A", 1, &amount, "food")]),
    )
    .await;
    let points = answer_for(till, |a| a["receipt_id"] == id.as_str()).await;
    assert_eq!(points["earned"], euros, "{points}");
    points["customer_id"]
        .as_str()
        .expect("customer")
        .to_string()
}

fn paying(id: &str, lane: &str, references: &[&str]) -> Value {
    let mut receipt = sale(id, lane, Some(CARD), &[("B", 1, "10.00", "food")]);
    receipt["redemptions"] = references.iter().map(|r| Value::from(*r)).collect();
    receipt
}

async fn balance(till: &mut Till, lane: &str) -> i64 {
    till.scan(lane, CARD).await;
    let customer = answer_for(till, |a| a["type"] == "customer" && a["lane"] == lane).await;
    customer["balance"].as_i64().expect("balance")
}

/// The `redeem` ledger events in the stopped gateway's outbox.
fn redeem_events(config: &str) -> Vec<Value> {
    let config = loyalty_daemon::config::parse(config).expect("config");
    let store = loyalty_store::Store::open(&config.storage, &config.store.id).expect("store");
    store
        .outbox_after(0, 100_000)
        .expect("outbox")
        .into_iter()
        .filter(|e| e.kind == loyalty_store::events::EventType::Ledger)
        .map(|e| e.json["payload"].clone())
        .filter(|p| p["kind"] == "redeem")
        .collect()
}

async fn metrics_until(http: u16, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = tokio::task::spawn_blocking(move || http_get(http, "/metrics"))
            .await
            .expect("join");
        if status == 200 && check(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redemption_is_reserved_and_the_receipt_commits_it_once() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let http = harness::free_port();
    let config = config(
        dir.path(),
        broker.port,
        "p1",
        &format!("[http]\nbind = \"127.0.0.1:{http}\"\n"),
    );
    let mut gateway = gateway_binary().start(dir.path(), &config);
    wait_online(broker.port, "loyalty/p1").await;
    let mut till = Till::connect(broker.port, "loyalty/p1", "till-p1").await;
    let customer = customer_with(&mut till, "1", 100).await;

    // 2.50 off: 250 points at 0.01 a point — more than she has.
    let too_much = redemption(
        &mut till,
        "1",
        &RedeemMessage::amount("PAY-0", &customer, "2.50"),
    )
    .await;
    assert_eq!(too_much["type"], "redemption", "{too_much}");
    assert_eq!(too_much["status"], "insufficient", "{too_much}");
    assert_eq!(too_much["points"], 250);
    assert_eq!(too_much["available"], 100);
    // 0.60 off: 60 points held.
    let reserved = redemption(
        &mut till,
        "1",
        &RedeemMessage::amount("PAY-1", &customer, "0.60"),
    )
    .await;
    assert_eq!(reserved["status"], "reserved", "{reserved}");
    assert_eq!(reserved["points"], 60);
    assert_eq!(reserved["discount"]["kind"], "amount_off");
    assert_eq!(reserved["discount"]["amount"], "0.60");
    assert_eq!(reserved["available"], 40);
    assert!(reserved["expires_at"].is_string(), "{reserved}");
    // The same request again: the same answer, nothing more held.
    let again = redemption(
        &mut till,
        "1",
        &RedeemMessage::points("PAY-1", &customer, 60),
    )
    .await;
    assert_eq!(again["status"], "reserved", "{again}");
    assert_eq!(again["available"], 40, "{again}");
    // Another customer's reference, a malformed request, an unknown customer.
    let unknown = redemption(&mut till, "1", &RedeemMessage::points("PAY-X", "nobody", 1)).await;
    assert_eq!(unknown["status"], "unknown_customer", "{unknown}");
    till.client
        .publish(
            loyalty_daemon::mqtt::Topics::new("loyalty/p1").redeem("1"),
            rumqttc::QoS::AtLeastOnce,
            false,
            br#"{"reference": "P", "customer_id": "C"}"#.to_vec(),
        )
        .await
        .expect("publish");
    let error = answer_for(&mut till, |a| a["type"] == "error").await;
    assert_eq!(error["code"], "malformed_redeem", "{error}");

    // The receipt names it: committed once; it earned 10 of its own.
    till.receipt("1", &paying("S-1", "1", &["PAY-1"])).await;
    let points = answer_for(&mut till, |a| a["receipt_id"] == "S-1").await;
    assert_eq!(points["type"], "points", "{points}");
    assert_eq!(points["redemptions"][0]["reference"], "PAY-1", "{points}");
    assert_eq!(points["redemptions"][0]["status"], "committed", "{points}");
    assert_eq!(points["redemptions"][0]["points"], 60, "{points}");
    assert_eq!(points["earned"], 10, "{points}");
    assert_eq!(
        points["balance"],
        100 - 60 + 10,
        "the balance after paying: {points}"
    );
    // Redelivered: the first answer again, nothing new.
    till.receipt("1", &paying("S-1", "1", &["PAY-1"])).await;
    let dup = answer_for(&mut till, |a| a["receipt_id"] == "S-1").await;
    assert_eq!(dup["duplicate"], true, "{dup}");
    assert_eq!(dup["redemptions"], points["redemptions"], "{dup}");
    // Another receipt naming it (and an unknown reference): applied, nothing committed.
    till.receipt("1", &paying("S-2", "1", &["PAY-1", "NOPE"]))
        .await;
    let other = answer_for(&mut till, |a| a["receipt_id"] == "S-2").await;
    assert_eq!(other["earned"], 10, "{other}");
    assert_eq!(other["redemptions"][0]["status"], "conflict", "{other}");
    assert_eq!(other["redemptions"][1]["status"], "unknown", "{other}");
    assert_eq!(balance(&mut till, "1").await, 100 - 60 + 10 + 10);
    let asked = redemption(
        &mut till,
        "1",
        &RedeemMessage::points("PAY-1", &customer, 60),
    )
    .await;
    assert_eq!(asked["status"], "committed", "{asked}");

    let body = metrics_until(http, "redemption metrics", |m| {
        metric_sample(m, "loyalty_points_redemptions_total{outcome=\"committed\"}") == Some(1.0)
    })
    .await;
    for (series, expected) in [
        (
            "loyalty_points_redemptions_total{outcome=\"reserved\"}",
            1.0,
        ),
        (
            "loyalty_points_redemptions_total{outcome=\"insufficient\"}",
            1.0,
        ),
        (
            "loyalty_points_redemptions_total{outcome=\"unknown_customer\"}",
            1.0,
        ),
        (
            "loyalty_points_redemptions_total{outcome=\"not_committed\"}",
            2.0,
        ),
        ("loyalty_points_reservations_open", 0.0),
        (
            "loyalty_answer_latency_seconds_count{type=\"redemption\"}",
            5.0,
        ),
    ] {
        assert_eq!(
            metric_sample(&body, series),
            Some(expected),
            "{series}:\n{body}"
        );
    }
    gateway.stop();
    let events = redeem_events(&config);
    assert_eq!(events.len(), 1, "one redeem event: {events:?}");
    assert_eq!(events[0]["points"], -60);
    assert_eq!(events[0]["reference"], "PAY-1");
    assert_eq!(events[0]["cause_receipt_id"], "S-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_releases_the_lanes_points_and_its_reserved_voucher() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("voucher.key");
    loyalty_daemon::vouchers::keyfile::generate(&key).expect("signing key");
    let rewards = format!(
        "[rewards]\nsigning_key_file = \"{}\"\nrules = [{{ every_points = 1000, value = \"5.00\", validity_days = 30 }}]\n[http]\nenabled = false\n",
        key.display()
    );
    let _gateway =
        gateway_binary().start(dir.path(), &config(dir.path(), broker.port, "p2", &rewards));
    wait_online(broker.port, "loyalty/p2").await;
    let mut till = Till::connect(broker.port, "loyalty/p2", "till-p2").await;
    // 1,000 points become a voucher; 100 more stay points.
    till.receipt(
        "1",
        &sale("V-1", "1", Some(CARD), &[("A", 1, "1000.00", "food")]),
    )
    .await;
    let earned = answer_for(&mut till, |a| a["receipt_id"] == "V-1").await;
    let voucher = earned["vouchers"][0]["text"]
        .as_str()
        .expect("a voucher")
        .to_string();
    let voucher_id = earned["vouchers"][0]["voucher_id"]
        .as_str()
        .expect("id")
        .to_string();
    let customer = customer_with(&mut till, "1", 100).await;

    // Lane 1's open sale: her card, the voucher, 80 points.
    assert_eq!(balance(&mut till, "1").await, 100);
    till.scan("1", &voucher).await;
    let reward = answer_for(&mut till, |a| a["type"] == "reward").await;
    assert_eq!(reward["status"], "valid", "{reward}");
    let held = redemption(
        &mut till,
        "1",
        &RedeemMessage::points("PAY-V", &customer, 80),
    )
    .await;
    assert_eq!(held["status"], "reserved", "{held}");
    // Lane 2 cannot have them meanwhile.
    assert_eq!(balance(&mut till, "2").await, 100);
    till.scan("2", &voucher).await;
    let taken = answer_for(&mut till, |a| a["type"] == "reward" && a["lane"] == "2").await;
    assert_eq!(taken["status"], "reserved", "{taken}");
    let short = redemption(
        &mut till,
        "2",
        &RedeemMessage::points("PAY-W", &customer, 80),
    )
    .await;
    assert_eq!(short["status"], "insufficient", "{short}");

    // The void on lane 1 releases both.
    till.void("1").await;
    let void = answer_for(&mut till, |a| a["type"] == "void").await;
    assert_eq!(void["lane"], "1");
    assert_eq!(void["redemptions"], serde_json::json!(["PAY-V"]), "{void}");
    assert_eq!(void["vouchers"], serde_json::json!([voucher_id]), "{void}");
    let freed = redemption(
        &mut till,
        "1",
        &RedeemMessage::points("PAY-V", &customer, 80),
    )
    .await;
    assert_eq!(freed["status"], "released", "{freed}");
    till.scan("2", &voucher).await;
    let now_valid = answer_for(&mut till, |a| a["type"] == "reward" && a["lane"] == "2").await;
    assert_eq!(now_valid["status"], "valid", "{now_valid}");
    let mine = redemption(
        &mut till,
        "2",
        &RedeemMessage::points("PAY-W2", &customer, 100),
    )
    .await;
    assert_eq!(mine["status"], "reserved", "{mine}");
    // A receipt naming the released reservation is applied without it.
    till.receipt("1", &paying("S-V", "1", &["PAY-V"])).await;
    let applied = answer_for(&mut till, |a| a["receipt_id"] == "S-V").await;
    assert_eq!(applied["type"], "points", "{applied}");
    assert_eq!(applied["redemptions"][0]["status"], "released", "{applied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_expires_is_released_by_the_sweep_and_never_commits() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let http = harness::free_port();
    let extra = format!("reservation_secs = 5\n[http]\nbind = \"127.0.0.1:{http}\"\n");
    let _gateway =
        gateway_binary().start(dir.path(), &config(dir.path(), broker.port, "p3", &extra));
    wait_online(broker.port, "loyalty/p3").await;
    let mut till = Till::connect(broker.port, "loyalty/p3", "till-p3").await;
    let customer = customer_with(&mut till, "1", 100).await;
    let held = redemption(
        &mut till,
        "1",
        &RedeemMessage::points("PAY-E", &customer, 70),
    )
    .await;
    assert_eq!(held["status"], "reserved", "{held}");
    let body = metrics_until(http, "the open reservation's gauge", |m| {
        metric_sample(m, "loyalty_points_reservations_open") == Some(1.0)
    })
    .await;
    assert_eq!(metric_sample(&body, "loyalty_points_reserved"), Some(70.0));
    // The housekeeping's sweep releases it once it ran out.
    metrics_until(http, "the sweep", |m| {
        metric_sample(m, "loyalty_points_redemptions_total{outcome=\"expired\"}") == Some(1.0)
            && metric_sample(m, "loyalty_points_reservations_open") == Some(0.0)
    })
    .await;
    let asked = redemption(
        &mut till,
        "1",
        &RedeemMessage::points("PAY-E", &customer, 70),
    )
    .await;
    assert_eq!(asked["status"], "expired", "{asked}");
    till.receipt("1", &paying("S-E", "1", &["PAY-E"])).await;
    let points = answer_for(&mut till, |a| a["receipt_id"] == "S-E").await;
    assert_eq!(points["redemptions"][0]["status"], "expired", "{points}");
    assert_eq!(balance(&mut till, "1").await, 110, "nothing spent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lanes_racing_for_the_same_points_exactly_one_wins() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let _gateway = gateway_binary().start(
        dir.path(),
        &config(dir.path(), broker.port, "p4", "[http]\nenabled = false\n"),
    );
    wait_online(broker.port, "loyalty/p4").await;
    let mut till = Till::connect(broker.port, "loyalty/p4", "till-p4").await;
    let customer = customer_with(&mut till, "1", 100).await;
    for round in 0..10 {
        let (a, b) = (format!("A-{round}"), format!("B-{round}"));
        // Published back to back: the two lane actors run at once.
        till.redeem("1", &RedeemMessage::points(&a, &customer, 80))
            .await;
        till.redeem("2", &RedeemMessage::points(&b, &customer, 80))
            .await;
        let mut statuses = Vec::new();
        while statuses.len() < 2 {
            let answer = till.next(ANSWER).await;
            if answer["type"] == "redemption" {
                statuses.push(answer["status"].as_str().expect("status").to_string());
            }
        }
        statuses.sort();
        assert_eq!(statuses, ["insufficient", "reserved"], "round {round}");
        for lane in ["1", "2"] {
            till.void(lane).await;
            answer_for(&mut till, |v| v["type"] == "void" && v["lane"] == lane).await;
        }
    }
}

/// `kill -9` while the receipt that commits a reservation is received but not yet durable
/// (fault injection holds it there): after the restart the broker redelivers the receipt, the
/// reservation is still there, and it is committed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_reserve_and_commit_commits_once_after_restart() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), broker.port, "p5", "[http]\nenabled = false\n");
    let mut gateway = gateway_binary().start_with_env(
        dir.path(),
        &config,
        &[(loyalty_daemon::gateway::STALL_RECEIPT_ENV, "S-K")],
    );
    wait_online(broker.port, "loyalty/p5").await;
    let mut till = Till::connect(broker.port, "loyalty/p5", "till-p5").await;
    let customer = customer_with(&mut till, "1", 100).await;
    let held = redemption(
        &mut till,
        "1",
        &RedeemMessage::points("PAY-K", &customer, 90),
    )
    .await;
    assert_eq!(held["status"], "reserved", "{held}");
    // Killed right after the answer: the reservation was durable before it.
    gateway.kill9();
    gateway.spawn();
    wait_online(broker.port, "loyalty/p5").await;
    let again = redemption(
        &mut till,
        "1",
        &RedeemMessage::points("PAY-K", &customer, 90),
    )
    .await;
    assert_eq!(
        again["status"], "reserved",
        "still held after kill -9: {again}"
    );
    assert_eq!(again["available"], 10, "{again}");

    // The receipt arrives and the gateway dies before it is durable.
    till.receipt("1", &paying("S-K", "1", &["PAY-K"])).await;
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
    let points = answer_for(&mut till, |a| a["receipt_id"] == "S-K").await;
    assert_eq!(points["duplicate"], false, "{points}");
    assert_eq!(points["redemptions"][0]["status"], "committed", "{points}");
    // Published once more: a duplicate, nothing spent twice.
    till.receipt("1", &paying("S-K", "1", &["PAY-K"])).await;
    let dup = answer_for(&mut till, |a| a["receipt_id"] == "S-K").await;
    assert_eq!(dup["duplicate"], true, "{dup}");
    assert_eq!(balance(&mut till, "1").await, 100 - 90 + 10);
    gateway.stop();
    assert_eq!(redeem_events(&config).len(), 1, "committed exactly once");
}
