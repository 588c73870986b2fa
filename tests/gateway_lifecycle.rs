//! The daemon binary's life cycle against a real Mosquitto (with its log, to see how the gateway
//! left) and the reference CRM over mutual TLS: SIGTERM drains the lanes, publishes the retained
//! `offline` status, disconnects cleanly and exits 0 within the bound, and what was answered is
//! in the store after a restart; lanes are bounded (listed, or capped, idle ones set aside);
//! every documented metric is recorded by the running daemon where its event happens.

use harness::{sale, wait_online, Till};
use loyalty_tools::testkit::{self as harness, http_get, metric_sample, GatewayBinary};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
fn gateway_binary() -> GatewayBinary {
    GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"))
}

const ANSWER: Duration = Duration::from_secs(15);
/// Receipts published just before SIGTERM.
const IN_FLIGHT: usize = 40;

/// A Mosquitto broker that logs everything to a file (the harness's broker logs nothing).
struct LoggingBroker {
    port: u16,
    log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl LoggingBroker {
    fn start() -> LoggingBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = loyalty_tools::demo::broker::find_mosquitto()
            .expect("mosquitto (apt-get install mosquitto)");
        for _ in 0..3 {
            let port = harness::free_port();
            let log = dir.path().join("mosquitto.log");
            let conf = dir.path().join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                     persistence_location {dir}/\nuser root\nlog_dest file {log}\n\
                     log_type all\nconnection_messages true\n",
                    dir = dir.path().display(),
                    log = log.display(),
                ),
            )
            .expect("mosquitto.conf");
            let mut child = Command::new(&binary)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start mosquitto");
            let up = harness::wait_until(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    || matches!(child.try_wait(), Ok(Some(_)))
            });
            if up && matches!(child.try_wait(), Ok(None)) {
                return LoggingBroker {
                    port,
                    log,
                    child,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("mosquitto did not come up");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LoggingBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Scrapes `/metrics` until `check` holds (each metric is recorded asynchronously to the
/// answer that caused it; the gauges of the housekeeping tick every 5 s).
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

fn base_config(dir: &Path, data: &str, store: &str, broker: u16, extra: &str) -> String {
    let key = dir.join("voucher.key");
    if !key.exists() {
        loyalty_daemon::vouchers::keyfile::generate(&key).expect("signing key");
    }
    format!(
        r#"[store]
id = "{store}"
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
[rewards]
signing_key_file = "{key}"
rules = [{{ every_points = 10, value = "1.00", validity_days = 30 }}]
{extra}"#,
        data = dir.join(data).display(),
        key = key.display(),
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

/// Waits for the process to exit (polling), up to `bound`.
fn wait_exit(child: &mut Child, bound: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + bound;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_lanes_says_goodbye_and_keeps_what_was_answered() {
    let broker = LoggingBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(
        &config_path,
        base_config(
            dir.path(),
            "data",
            "t1",
            broker.port,
            "[http]\nenabled = false\n",
        ),
    )
    .expect("config");
    let start = || {
        Command::new(gateway_binary())
            .args(["run", "--config"])
            .arg(&config_path)
            .env("LOYALTY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gateway")
    };
    let mut gateway = start();
    wait_online(broker.port, "loyalty/t1").await;
    let mut till = Till::connect(broker.port, "loyalty/t1", "till-life").await;

    // Answered just before SIGTERM: must be in the store afterwards.
    let last = sale(
        "L-1",
        "1",
        Some("2990000000019"),
        &[("A", 1, "7.00", "food")],
    );
    till.receipt("1", &last).await;
    let answer = answer_for(&mut till, |a| a["receipt_id"] == "L-1").await;
    assert_eq!(answer["type"], "points", "{answer}");
    assert_eq!(answer["duplicate"], false, "{answer}");
    // In flight at SIGTERM: each is applied exactly once, before the exit (drained: answered
    // before the goodbye) or after the restart (not taken: redelivered). A receipt applied but
    // not answered before the exit would be answered `duplicate` after the restart.
    for i in 0..IN_FLIGHT {
        till.receipt(
            &format!("{}", 2 + i % 2),
            &sale(
                &format!("F-{i}"),
                &format!("{}", 2 + i % 2),
                None,
                &[("A", 1, "1.00", "food")],
            ),
        )
        .await;
    }

    // SIGTERM while the gateway is busy with them.
    let mut first_answers: std::collections::BTreeMap<String, Vec<bool>> = Default::default();
    let early = answer_for(&mut till, |a| {
        a["receipt_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("F-"))
    })
    .await;
    first_answers
        .entry(early["receipt_id"].as_str().unwrap_or_default().to_string())
        .or_default()
        .push(early["duplicate"] == true);
    let stopping = Instant::now();
    // SAFETY: kill(2) on our own child with a valid signal.
    unsafe { libc::kill(gateway.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || {
        let status = wait_exit(&mut gateway, Duration::from_secs(12));
        if status.is_none() {
            let _ = gateway.kill();
        }
        status
    })
    .await
    .expect("join")
    .expect("the gateway exits within its 10 s shutdown bound");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        stopping.elapsed()
    );

    // The goodbye came from the gateway (its own retained PUBLISH and a DISCONNECT), not from
    // the broker firing the last will after the connection dropped.
    let log = broker.log();
    let client = "loyalty-gateway-t1";
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("Received PUBLISH from {client}"))
                && l.contains("r1")
                && l.contains("'loyalty/t1/gateway/status'")
                && l.contains("(7 bytes)")),
        "no retained offline PUBLISH from the gateway in the broker log:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("Received DISCONNECT from {client}"))),
        "no DISCONNECT from the gateway:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.contains(client)
            && (l.contains("closed its connection") || l.contains("exceeded timeout"))),
        "the gateway's connection was cut, not closed:\n{log}"
    );
    // The broker holds the retained offline status.
    let status = retained(broker.port, "loyalty/t1/gateway/status").await;
    assert_eq!(status, "offline");

    // After a restart the answered receipt is in the store (a duplicate now) and the in-flight
    // ones were each applied exactly once.
    let mut gateway = start();
    wait_online(broker.port, "loyalty/t1").await;
    till.receipt("1", &last).await;
    // Receipts not answered before the exit are redelivered now; answers sent before it are
    // already in the till's queue.
    let mut again = None;
    let deadline = Instant::now() + ANSWER;
    while (first_answers.len() < IN_FLIGHT || again.is_none()) && Instant::now() < deadline {
        let Some(answer) = till.try_next(Duration::from_millis(500)).await else {
            continue;
        };
        match answer["receipt_id"].as_str() {
            Some("L-1") => again = Some(answer),
            Some(id) if id.starts_with("F-") => first_answers
                .entry(id.to_string())
                .or_default()
                .push(answer["duplicate"] == true),
            _ => {}
        }
    }
    let again = again.expect("an answer to the receipt sent again");
    assert_eq!(again["type"], "points", "{again}");
    assert_eq!(
        again["duplicate"], true,
        "the answered receipt was lost: {again}"
    );
    assert_eq!(again["earned"], answer["earned"]);
    assert_eq!(first_answers.len(), IN_FLIGHT, "{first_answers:?}");
    for (id, answers) in &first_answers {
        assert_eq!(
            answers.first(),
            Some(&false),
            "{id} was applied but its answer lost at the exit: {answers:?}"
        );
    }
    unsafe { libc::kill(gateway.id() as i32, libc::SIGTERM) };
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut gateway, Duration::from_secs(12)))
            .await
            .expect("join");
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_that_never_finishes_does_not_hold_the_exit_past_the_bound() {
    let broker = LoggingBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(
        &config_path,
        base_config(
            dir.path(),
            "data",
            "t6",
            broker.port,
            "[http]\nenabled = false\n",
        ),
    )
    .expect("config");
    let log_path = dir.path().join("gateway.log");
    let mut gateway = Command::new(gateway_binary())
        .args(["run", "--config"])
        .arg(&config_path)
        .env("LOYALTY_LOG", "info")
        .env(loyalty_daemon::gateway::STALL_RECEIPT_ENV, "S-1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("start gateway");
    wait_online(broker.port, "loyalty/t6").await;
    let till = Till::connect(broker.port, "loyalty/t6", "till-stall").await;
    till.receipt("1", &sale("S-1", "1", None, &[("A", 1, "1.00", "food")]))
        .await;
    let stalled = harness::wait_until(Duration::from_secs(15), || {
        std::fs::read_to_string(&log_path).is_ok_and(|log| log.contains("stalling on this receipt"))
    });
    assert!(stalled, "the lane never took the receipt");

    let stopping = Instant::now();
    // SAFETY: kill(2) on our own child with a valid signal.
    unsafe { libc::kill(gateway.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || {
        let status = wait_exit(&mut gateway, Duration::from_secs(20));
        if status.is_none() {
            let _ = gateway.kill();
        }
        status
    })
    .await
    .expect("join")
    .expect("the gateway exits");
    let took = stopping.elapsed();
    assert!(status.success(), "exit status {status:?}");
    // 10 s bound plus the runtime's last 0.5 s, well inside TimeoutStopSec=30.
    assert!(took < Duration::from_secs(12), "shutdown took {took:?}");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(log.contains("shutdown bound reached"), "{log}");
    // The broker edge still said goodbye once its own drain bound passed.
    let broker_log = broker.log();
    assert!(
        broker_log
            .lines()
            .any(|l| l.contains("Received DISCONNECT from loyalty-gateway-t6")),
        "{broker_log}"
    );
}

/// The retained payload on `topic`.
async fn retained(port: u16, topic: &str) -> String {
    let mut options =
        rumqttc::MqttOptions::new(format!("probe-{}", harness::free_port()), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    client
        .subscribe(topic, rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let payload = async {
        loop {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) =
                eventloop.poll().await
            {
                return String::from_utf8_lossy(&p.payload).to_string();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), payload)
        .await
        .expect("a retained status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_are_capped_and_idle_ones_set_aside() {
    let broker = LoggingBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = base_config(
        dir.path(),
        "data",
        "t2",
        broker.port,
        "[lanes]\ncard_before_receipt_secs = 1\ncard_after_receipt_secs = 1\nmax_lanes = 2\nidle_evict_secs = 2\n[http]\nenabled = false\n",
    );
    let _gateway = gateway_binary().start(dir.path(), &config);
    wait_online(broker.port, "loyalty/t2").await;
    let mut till = Till::connect(broker.port, "loyalty/t2", "till-cap").await;
    for lane in ["1", "2"] {
        till.scan(lane, "2990000000019").await;
        let answer = answer_for(&mut till, |a| a["lane"] == lane).await;
        assert_ne!(answer["type"], "error", "{answer}");
    }
    // A third lane while two are active: an error on its response topic, for scans and
    // receipts alike (the receipt is named).
    till.scan("3", "2990000000019").await;
    let refused = answer_for(&mut till, |a| a["lane"] == "3").await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "too_many_lanes", "{refused}");
    till.receipt("3", &sale("C-1", "3", None, &[("A", 1, "1.00", "food")]))
        .await;
    let refused = answer_for(&mut till, |a| a["lane"] == "3").await;
    assert_eq!(refused["code"], "too_many_lanes", "{refused}");
    assert_eq!(refused["receipt_id"], "C-1", "{refused}");

    // Lanes 1 and 2 fall idle past the card windows: their actors are set aside and lane 3 is
    // served.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        till.scan("3", "2990000000019").await;
        let answer = answer_for(&mut till, |a| a["lane"] == "3").await;
        if answer["type"] != "error" {
            assert_eq!(answer["type"], "customer", "{answer}");
            break;
        }
        assert_eq!(answer["code"], "too_many_lanes", "{answer}");
        assert!(Instant::now() < deadline, "idle lanes were never set aside");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // An evicted lane comes back with its next input.
    till.scan("1", "2990000000019").await;
    let back = answer_for(&mut till, |a| a["lane"] == "1").await;
    assert_eq!(back["type"], "customer", "{back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_lanes_are_served_when_lanes_are_listed() {
    let broker = LoggingBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = base_config(
        dir.path(),
        "data",
        "t3",
        broker.port,
        "[lanes]\nnames = [\"1\", \"2\"]\n[http]\nenabled = false\n",
    );
    let _gateway = gateway_binary().start(dir.path(), &config);
    wait_online(broker.port, "loyalty/t3").await;
    let mut till = Till::connect(broker.port, "loyalty/t3", "till-listed").await;
    till.scan("2", "2990000000019").await;
    let answer = answer_for(&mut till, |a| a["lane"] == "2").await;
    assert_eq!(answer["type"], "enrolled", "{answer}");
    till.receipt("9", &sale("U-1", "9", None, &[("A", 1, "1.00", "food")]))
        .await;
    let refused = answer_for(&mut till, |a| a["lane"] == "9").await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "unknown_lane", "{refused}");
    assert_eq!(refused["receipt_id"], "U-1", "{refused}");
}

#[test]
fn check_config_names_bad_lane_settings_by_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        base_config(
            dir.path(),
            "data",
            "t4",
            1883,
            "[lanes]\nnames = [\"1\", \"a/b\", \"1\"]\nmax_lanes = 0\ncard_before_receipt_secs = 300\nidle_evict_secs = 60\n[http]\nenabled = false\n",
        ),
    )
    .expect("config");
    let output = Command::new(gateway_binary())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("check-config");
    assert!(!output.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for key in [
        "lanes.max_lanes",
        "lanes.idle_evict_secs",
        "lanes.names[1]",
        "lanes.names[2]",
    ] {
        assert!(text.contains(key), "{key} not named in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_daemon_records_every_documented_metric() {
    use loyalty_tools::crm_reference::{self, Fault, Faults, ReferenceConfig};
    let broker = LoggingBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = "t5";
    let pki = loyalty_tools::certs::write_local_pki(dir.path(), store).expect("pki");
    let crm = crm_reference::serve(ReferenceConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        cert_file: pki.server_cert_file.clone(),
        key_file: pki.server_key_file.clone(),
        client_ca_file: pki.ca_file.clone(),
        data_dir: None,
        fsync: false,
        faults: Faults {
            rate_percent: 100,
            kinds: vec![Fault::ServerError],
            on_changes: false,
        },
    })
    .await
    .expect("reference CRM");
    let http = harness::free_port();
    let crm_section = format!(
        "[crm]\nenabled = true\nurl = \"{url}\"\nclient_cert_file = \"{cert}\"\nclient_key_file = \"{key}\"\n\
         ca_file = \"{ca}\"\npoll_interval_secs = 1\nbatch_max_age_ms = 20\nbackoff_min_ms = 50\nbackoff_max_ms = 300\n\
         [http]\nbind = \"127.0.0.1:{http}\"\n\
         [[serial]]\nname = \"lane9-scanner\"\npath = \"{tty}\"\nlane = \"9\"\n",
        tty = dir.path().join("no-such-tty").display(),
        url = crm.url(),
        cert = pki.client_cert_file.display(),
        key = pki.client_key_file.display(),
        ca = pki.ca_file.display(),
    );
    let config = base_config(dir.path(), "data", store, broker.port, &crm_section);
    // An old copy of this store's (empty) database, put back later: the same instance gone
    // back in time.
    {
        let config = loyalty_daemon::config::parse(&config).expect("config");
        let store = loyalty_store::Store::open(&config.storage, &config.store.id).expect("store");
        store.wait_durable().expect("durable");
    }
    harness::copy_dir(&dir.path().join("data"), &dir.path().join("data-restored"));
    let mut gateway = gateway_binary().start(dir.path(), &config);
    wait_online(broker.port, "loyalty/t5").await;
    let mut till = Till::connect(broker.port, "loyalty/t5", "till-metrics").await;

    // A card, a sale that earns a voucher, a refused scan, the voucher redeemed.
    till.scan("1", "2990000000019").await;
    answer_for(&mut till, |a| a["lane"] == "1").await;
    till.receipt("1", &sale("M-1", "1", None, &[("A", 1, "12.00", "food")]))
        .await;
    let points = answer_for(&mut till, |a| a["receipt_id"] == "M-1").await;
    assert_eq!(points["earned"], 12, "{points}");
    till.scan("1", "not a code").await;
    answer_for(&mut till, |a| a["type"] == "error").await;
    // More events, so that the CRM later knows more of them than a restored store has.
    for i in 0..4 {
        let id = format!("M-1{i}");
        till.receipt(
            "1",
            &sale(&id, "1", Some("2990000000019"), &[("A", 1, "1.00", "food")]),
        )
        .await;
        answer_for(&mut till, |a| a["receipt_id"] == id.as_str()).await;
    }
    let voucher_text = points["vouchers"][0]["text"].as_str().expect("a voucher");
    let voucher_id = points["vouchers"][0]["voucher_id"]
        .as_str()
        .expect("its id");
    till.scan("1", "2990000000019").await;
    answer_for(&mut till, |a| a["type"] == "customer").await;
    till.scan("1", voucher_text).await;
    let reward = answer_for(&mut till, |a| a["type"] == "reward" || a["type"] == "error").await;
    assert_eq!(reward["type"], "reward", "{reward}");
    let mut redeeming = sale("M-R", "1", None, &[("A", 1, "2.00", "food")]);
    redeeming["rewards"] = serde_json::json!([voucher_id]);
    till.receipt("1", &redeeming).await;
    let redeemed = answer_for(&mut till, |a| a["receipt_id"] == "M-R").await;
    assert_eq!(redeemed["type"], "points", "{redeemed}");

    // The CRM answers 500 to every upload: sync errors of kind `server`, nothing acked.
    let body = metrics_until(http, "lane and sync-error metrics", |m| {
        metric_sample(m, "loyalty_sync_errors_total{kind=\"server\"}").is_some_and(|v| v >= 1.0)
            && metric_sample(m, "loyalty_broker_connected").is_some_and(|v| v == 1.0)
            && metric_sample(m, "loyalty_outbox_depth").is_some_and(|v| v >= 1.0)
            && metric_sample(m, "loyalty_outbox_oldest_unsent_age_seconds").is_some_and(|v| v > 0.0)
    })
    .await;
    for (series, expected) in [
        ("loyalty_scans_total{kind=\"card\"}", 2.0),
        ("loyalty_scans_total{kind=\"voucher\"}", 1.0),
        ("loyalty_scans_total{kind=\"refused\"}", 1.0),
        ("loyalty_receipts_total{outcome=\"applied\"}", 6.0),
        ("loyalty_points_earned_total", 18.0),
        ("loyalty_vouchers_issued_total", 1.0),
        ("loyalty_vouchers_redeemed_total", 1.0),
        ("loyalty_serial_device_up{device=\"lane9-scanner\"}", 0.0),
        ("loyalty_sync_events_acked_total", 0.0),
        ("loyalty_clock_untrusted", 0.0),
    ] {
        assert_eq!(
            metric_sample(&body, series),
            Some(expected),
            "{series}:\n{body}"
        );
    }
    assert!(
        metric_sample(
            &body,
            "loyalty_answer_latency_seconds_count{type=\"points\"}"
        ) == Some(6.0),
        "{body}"
    );

    // The CRM recovers: the outbox drains, acked events and the last success are recorded.
    crm.set_faults(Faults::default());
    let body = metrics_until(http, "acked events", |m| {
        metric_sample(m, "loyalty_sync_events_acked_total").is_some_and(|v| v >= 1.0)
            && metric_sample(m, "loyalty_outbox_depth") == Some(0.0)
    })
    .await;
    let acked = crm.acked_through(store);
    assert_eq!(
        metric_sample(&body, "loyalty_sync_events_acked_total"),
        Some(acked as f64),
        "{body}"
    );
    let last =
        metric_sample(&body, "loyalty_sync_last_success_timestamp_seconds").expect("last success");
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!(last > now - 120.0 && last <= now + 1.0, "{last} vs {now}");
    assert_eq!(
        metric_sample(
            &body,
            "loyalty_invariant_violations_total{what=\"crm_ack_beyond_outbox\"}"
        ),
        None,
        "{body}"
    );
    gateway.stop();

    // The store's data went back in time (the old copy of the same database instance put
    // back): the CRM acknowledges sequence numbers of this instance the store no longer has,
    // an invariant violation. And
    // its clock is behind the time floor persisted there (two days), so it is untrusted.
    let restored = base_config(
        dir.path(),
        "data-restored",
        store,
        broker.port,
        &crm_section,
    );
    {
        use loyalty_daemon::vouchers::{VoucherSettings, VoucherSettingsExt};
        let config = loyalty_daemon::config::parse(&restored).expect("config");
        let store = loyalty_store::Store::open(&config.storage, &config.store.id).expect("store");
        let built =
            loyalty_daemon::config::Built::new(config.clone()).expect("valid configuration");
        let settings = VoucherSettings::from_config(&built).expect("voucher settings");
        let keys = settings.trusted_keys(&built).expect("keys");
        let vouchers =
            loyalty_store::vouchers::Vouchers::open(&store, settings, keys).expect("vouchers");
        let floor = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
        vouchers.observe_trusted_time(floor).expect("floor");
        store.wait_durable().expect("durable");
    }
    let mut gateway = gateway_binary().start(dir.path(), &restored);
    wait_online(broker.port, "loyalty/t5").await;
    till.receipt("1", &sale("M-2", "1", None, &[("A", 1, "1.00", "food")]))
        .await;
    answer_for(&mut till, |a| a["receipt_id"] == "M-2").await;
    metrics_until(
        http,
        "the invariant violation and the untrusted clock",
        |m| {
            metric_sample(
                m,
                "loyalty_invariant_violations_total{what=\"crm_ack_beyond_outbox\"}",
            )
            .is_some_and(|v| v >= 1.0)
                && metric_sample(m, "loyalty_clock_untrusted") == Some(1.0)
                && metric_sample(m, "loyalty_untrusted_time_events_total").is_some_and(|v| v >= 1.0)
        },
    )
    .await;
    gateway.stop();
    crm.shutdown().await;
}
