//! The daemon as systemd and store IT see it: READY and watchdog pings on `NOTIFY_SOCKET`, the
//! local API's `/health`, `/metrics`, customer lookup and voucher images over real HTTP, and a
//! clean exit on SIGTERM.

use harness::{sale, Mosquitto, Till};
use loyalty_tools::testkit::{self as harness, http_get, GatewayBinary};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
fn gateway_binary() -> GatewayBinary {
    GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"))
}

fn config(dir: &std::path::Path, broker: u16, http: u16) -> String {
    let key = dir.join("voucher.key");
    if !key.exists() {
        loyalty_daemon::vouchers::keyfile::generate(&key).expect("signing key");
    }
    format!(
        "[store]\nid = \"d1\"\ntimezone = \"Europe/Berlin\"\nrequire_ntp_sync = false\n[storage]\ndata_dir = \"{}\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{broker}\"\nreconnect_min_ms = 50\n[cards]\nprefixes = [\"299\"]\n\
         [rules]\ncategories = [\"food\"]\n\
         [rewards]\nsigning_key_file = \"{}\"\nrules = [{{ every_points = 10, value = \"1.00\", validity_days = 30 }}]\n\
         [http]\nbind = \"127.0.0.1:{http}\"\n",
        dir.join("data").display(),
        key.display()
    )
}

#[test]
fn daemon_notifies_ready_and_pings_the_watchdog_then_stops_on_sigterm() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(
        &config_path,
        config(dir.path(), broker.port, harness::free_port()),
    )
    .expect("config");
    let mut child = Command::new(gateway_binary())
        .args(["run", "--config"])
        .arg(&config_path)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "600000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start daemon");
    let mut ready = false;
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline && (!ready || pings < 3) {
        let Ok(n) = socket.recv(&mut buf) else { break };
        let message = String::from_utf8_lossy(&buf[..n]);
        ready |= message.lines().any(|l| l == "READY=1");
        if message.lines().any(|l| l == "WATCHDOG=1") {
            assert!(ready, "a watchdog ping before READY");
            pings += 1;
        }
    }
    assert!(ready, "no READY=1");
    assert!(pings >= 3, "only {pings} watchdog pings");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown not bounded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_api_reports_health_metrics_and_customers() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let http = harness::free_port();
    let _gateway = gateway_binary().start(dir.path(), &config(dir.path(), broker.port, http));
    assert!(
        harness::wait_until(Duration::from_secs(20), || std::net::TcpStream::connect((
            "127.0.0.1",
            http
        ))
        .is_ok()),
        "local API did not come up"
    );
    // The local API comes up before the MQTT subscriptions: wait for the gateway's online status.
    harness::wait_online(broker.port, "loyalty/d1").await;
    let mut till = Till::connect(broker.port, "loyalty/d1", "till-api").await;
    till.receipt(
        "1",
        &sale(
            "H-1",
            "1",
            Some("2990000000019"),
            &[("A", 1, "12.00", "food")],
        ),
    )
    .await;
    let points = till.next(Duration::from_secs(15)).await;
    assert_eq!(points["earned"], 12, "{points}");
    assert!(points.get("unknown_categories").is_none(), "{points}");

    // A category the rules do not list: applied (not refused), flagged for the operator.
    till.receipt(
        "2",
        &sale(
            "H-2",
            "2",
            None,
            &[("A", 1, "3.00", "food"), ("G", 1, "9.00", "garden")],
        ),
    )
    .await;
    let flagged = till.next(Duration::from_secs(15)).await;
    assert_eq!(flagged["type"], "points", "{flagged}");
    assert_eq!(flagged["unknown_categories"], serde_json::json!(["garden"]));

    let port = http;
    let (status, body) = tokio::task::spawn_blocking(move || http_get(port, "/health"))
        .await
        .expect("join");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("health json");
    assert_eq!(health["broker"]["ok"], true, "{health}");
    assert_eq!(health["storage"]["ok"], true);

    let (status, body) = tokio::task::spawn_blocking(move || http_get(port, "/metrics"))
        .await
        .expect("join");
    assert_eq!(status, 200);
    assert!(
        body.lines()
            .any(|l| l.starts_with("loyalty_receipts_total{outcome=\"applied\"} 2")),
        "{body}"
    );
    assert!(body.contains("loyalty_answer_latency_seconds_bucket"));
    assert!(
        body.lines()
            .any(|l| l == "loyalty_receipts_unknown_category_total 1"),
        "{body}"
    );
    // Gauges are read at scrape time: the events the two receipts queued a moment ago show
    // (no CRM here, so none was acknowledged).
    let depth: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("loyalty_outbox_depth "))
        .and_then(|v| v.trim().parse().ok())
        .expect("loyalty_outbox_depth");
    assert!(
        depth >= 2,
        "outbox depth {depth} right after two receipts: {body}"
    );

    let (status, body) =
        tokio::task::spawn_blocking(move || http_get(port, "/customers?card=2990000000019"))
            .await
            .expect("join");
    assert_eq!(status, 200, "{body}");
    let customer: serde_json::Value = serde_json::from_str(&body).expect("customer json");
    // 12 points earned, 10 converted into the voucher the receipt issued.
    assert_eq!(customer["balance"], 2, "{customer}");

    // The issued voucher's images for the customer display.
    let voucher_id = points["vouchers"][0]["voucher_id"]
        .as_str()
        .expect("a voucher")
        .to_string();
    let png_path = format!("/vouchers/{voucher_id}.png");
    let (status, png) = tokio::task::spawn_blocking(move || http_get(port, &png_path))
        .await
        .expect("join");
    assert_eq!(status, 200);
    assert!(
        png.as_bytes().starts_with(b"\x89PNG") || png.contains("PNG"),
        "not a PNG"
    );
    let svg_path = format!("/vouchers/{voucher_id}.svg");
    let (status, svg) = tokio::task::spawn_blocking(move || http_get(port, &svg_path))
        .await
        .expect("join");
    assert_eq!(status, 200);
    assert!(svg.contains("<svg"), "not an SVG");
    let (status, _) =
        tokio::task::spawn_blocking(move || http_get(port, "/vouchers/00000000000000000000.png"))
            .await
            .expect("join");
    assert_eq!(status, 404);
    assert_eq!(customer["recent_purchases"][0]["receipt_id"], "H-1");

    let (status, _) =
        tokio::task::spawn_blocking(move || http_get(port, "/customers?card=2990000000026"))
            .await
            .expect("join");
    assert_eq!(status, 404);

    // The broker goes away: health degrades to 503 and says why.
    drop(broker);
    let degraded = harness::wait_until(Duration::from_secs(20), || {
        http_get(port, "/health").0 == 503
    });
    assert!(degraded, "health stayed 200 without a broker");
}
