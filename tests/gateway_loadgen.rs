//! A short load-generator run against the real gateway over Mosquitto: checks the tool works
//! (answers counted, latencies and the broker floor measured, the gateway's RSS found). Not a
//! performance assertion.

mod harness;

use harness::{Gateway, Mosquitto};
use std::process::Command;

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
    let gateway = Gateway::start(dir.path(), &config);
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(harness::wait_online(broker.port, "loyalty/lg"));
    let output = Command::new(harness::gateway_binary())
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
        ])
        .output()
        .expect("run loadgen");
    assert!(
        output.status.success(),
        "loadgen failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        gateway.log()
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json summary");
    assert_eq!(summary["lanes"], 3);
    assert!(
        summary["answered"].as_u64().expect("answered") > 10,
        "{summary}"
    );
    assert!(
        summary["receipts"].as_u64().expect("receipts") > 3,
        "{summary}"
    );
    assert_eq!(summary["timeouts"], 0, "{summary}");
    assert!(summary["latency_ms"]["p99"].as_f64().expect("p99") > 0.0);
    assert!(summary["broker_floor_ms"]["count"].as_u64().expect("floor") > 100);
    let rss = summary["gateway_rss_kib"][0]
        .as_u64()
        .expect("the gateway's RSS was found");
    assert!(rss > 1000, "{summary}");
}
