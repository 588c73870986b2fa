//! A short load-generator run against the real gateway over Mosquitto: checks the tool works
//! (answers counted, latencies, the broker floor and the disk's sync floor measured, the gateway's
//! RSS found). Not a performance assertion.

use harness::Mosquitto;
use loyalty_tools::testkit::{self as harness, GatewayBinary};
use std::process::Command;

/// The binary under test.
fn gateway_binary() -> GatewayBinary {
    GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"))
}

#[test]
fn loadgen_drives_lanes_and_reports_its_measurements() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[store]\nid = \"lg\"\ntimezone = \"Europe/Berlin\"\n[storage]\ndata_dir = \"{}\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[cards]\nprefixes = [\"299\"]\n[http]\nenabled = false\n",
        dir.path().join("data").display(),
        broker.port
    );
    let gateway = gateway_binary().start(dir.path(), &config);
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(harness::wait_online(broker.port, "loyalty/lg"));
    let gateway_pid = gateway.pid().expect("gateway running").to_string();
    let loadgen = |extra: &[&str]| {
        let output = Command::new(gateway_binary())
            .args([
                "loadgen",
                "--broker",
                &format!("mqtt://127.0.0.1:{}", broker.port),
                "--prefix",
                "loyalty/lg",
                "--lanes",
                "3",
                "--duration-secs",
                "2",
                "--json",
                "--answer-timeout-secs",
                "10",
                "--gateway-pid",
                &gateway_pid,
            ])
            .args(extra)
            .output()
            .expect("run loadgen");
        assert!(
            output.status.success(),
            "loadgen failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            gateway.log()
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("json summary")
    };
    let data_dir = dir.path().join("data");
    let summary = loadgen(&["--disk-floor-dir", data_dir.to_str().expect("utf-8 path")]);
    assert_eq!(summary["lanes"], 3);
    // Counts that depend on the machine's speed are only checked to be there: at least one scan
    // and one receipt per lane, and some echoes of the floor under load (one every ~20 ms for
    // 2 s on an idle machine, fewer on a loaded one). The idle floor is a fixed 300 samples.
    assert!(
        summary["answered"].as_u64().expect("answered") >= 6,
        "{summary}"
    );
    assert!(
        summary["receipts"].as_u64().expect("receipts") >= 3,
        "{summary}"
    );
    assert_eq!(summary["timeouts"], 0, "{summary}");
    assert!(summary["latency_ms"]["p99"].as_f64().expect("p99") > 0.0);
    assert!(summary["broker_floor_ms"]["count"].as_u64().expect("floor") > 100);
    assert!(
        summary["broker_floor_loaded_ms"]["count"]
            .as_u64()
            .expect("loaded floor")
            >= 1,
        "{summary}"
    );
    // The disk's sync floor was measured in the data directory, and its scratch file is gone.
    assert!(
        summary["disk_sync_floor_ms"]["count"]
            .as_u64()
            .expect("disk floor")
            >= 1,
        "{summary}"
    );
    assert!(summary["disk_sync_floor_ms"]["p50"].as_f64().expect("p50") > 0.0);
    let leftovers: Vec<_> = std::fs::read_dir(&data_dir)
        .expect("data dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".loadgen-disk-floor")
        })
        .collect();
    assert!(leftovers.is_empty(), "scratch file left: {leftovers:?}");
    // Each lane's cards were enrolled before the measurement: measured scans identify.
    assert_eq!(summary["enrolled"], 0, "{summary}");
    let rss = summary["gateway_rss_kib"][0]
        .as_u64()
        .expect("the gateway's RSS was found");
    assert!(rss > 1000, "{summary}");
    // With --fresh-cards the measured scans enroll new customers (cards of a sub-range the
    // gateway has not seen yet: the first run's cards are known now).
    let fresh = loadgen(&["--fresh-cards", "--card-prefix", "2991"]);
    assert!(fresh["enrolled"].as_u64().expect("enrolled") > 0, "{fresh}");
    assert_eq!(fresh["timeouts"], 0, "{fresh}");
    assert!(fresh["disk_sync_floor_ms"].is_null(), "{fresh}");
}
