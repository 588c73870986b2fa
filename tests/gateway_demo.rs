//! `loyalty-gateway demo`, run non-interactively as a newcomer would, with its summary checked.

use std::process::Command;

#[test]
fn demo_runs_the_whole_store_and_its_summary_adds_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let summary_path = dir.path().join("summary.json");
    let output = Command::new(env!("CARGO_BIN_EXE_loyalty-gateway"))
        .args(["demo", "--duration-secs", "1", "--summary-json"])
        .arg(&summary_path)
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary_path).expect("summary written"))
            .expect("json");
    assert_eq!(
        summary["via_mqtt"], true,
        "mosquitto is installed in CI: the lanes use MQTT"
    );
    assert!(
        summary["receipts"].as_u64().expect("receipts") >= 6,
        "{summary}"
    );
    assert!(summary["duplicates"].as_u64().expect("duplicates") >= 1);
    assert!(summary["error_answers"].as_u64().expect("errors") >= 3);
    assert_eq!(summary["ledger_verified"], true);
    assert!(
        summary["vouchers_issued"].as_u64().expect("issued") >= 1,
        "{summary}"
    );
    assert_eq!(summary["vouchers_redeemed"], 1, "{summary}");
    let replayed = stdout
        .lines()
        .find(|line| line.contains("\"status\":\"redeemed\""))
        .expect("the second scan is refused");
    // The refusal names the voucher whose text decoded.
    assert!(
        replayed.contains("\"voucher_id\":\"") && !replayed.contains("\"voucher_id\":\"\""),
        "{replayed}"
    );
    // Paying with points: the redemption reserved, then committed by the receipt naming it.
    let reserved = stdout
        .lines()
        .find(|line| line.contains("\"type\":\"redemption\""))
        .expect("a redemption answer");
    assert!(
        reserved.contains("\"status\":\"reserved\"") && reserved.contains("\"amount\":\"1.50\""),
        "{reserved}"
    );
    let paid = stdout
        .lines()
        .find(|line| line.contains("\"receipt_id\":\"D-2002\""))
        .expect("the receipt paid with points");
    assert!(
        paid.contains("\"reference\":\"PAY-2002\"") && paid.contains("\"status\":\"committed\""),
        "{paid}"
    );
    let written = summary["events_written"].as_u64().expect("written");
    assert!(written > 10, "{summary}");
    assert_eq!(
        summary["events_acknowledged"].as_u64(),
        Some(written),
        "every event reached the reference CRM once: {summary}"
    );
    assert!(summary["latency_ms"]["count"].as_u64().expect("count") > 10);
    assert!(stdout.contains("Summary"));
    assert!(
        stdout.contains("The printer received all"),
        "the serial printer tap passed every byte through"
    );
    assert!(
        stdout.contains("\"receipt_id\":\"5-4711\""),
        "the printed receipt was parsed and applied"
    );
    // A personal offer from head office: on her screen at the scan, applied once on her receipt
    // (8 points for the coffee + 50 from the offer).
    assert!(
        stdout.lines().any(|l| l.contains("\"type\":\"customer\"")
            && l.contains("\"customer_id\":\"demo-ada\"")
            && l.contains("\"offers\":[{\"offer_id\":\"D-OFFER-1\"")),
        "her offer is in her scan answer:\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("\"receipt_id\":\"D-6001\"") && l.contains("\"earned\":58")),
        "the offer's bonus is applied on her receipt:\n{stdout}"
    );
    // The demo shows the daemon's warnings and errors only: on a healthy machine there are none
    // (a newcomer would take one for a fault; the till's pseudo-terminal closed mid-demo was one).
    let log = String::from_utf8_lossy(&output.stderr);
    for line in stdout.lines().chain(log.lines()) {
        assert!(
            !line.contains(" WARN ") && !line.contains(" ERROR "),
            "the demo logged: {line}"
        );
    }
}

/// `demo --chain`: PostgreSQL, the hub and two stores; its summary lines say what happened.
#[test]
fn chain_demo_recognises_refuses_merges_and_erases_across_two_stores() {
    let output = Command::new(env!("CARGO_BIN_EXE_loyalty-gateway"))
        .args(["demo", "--chain"])
        .output()
        .expect("run the chain demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "chain demo failed:\n{stdout}\n{stderr}"
    );
    let summary = stdout
        .split("Chain summary")
        .nth(1)
        .expect("a chain summary");
    let line = |start: &str| {
        summary
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in:\n{summary}"))
            .to_string()
    };
    let recognised = line("recognised at store B:");
    assert!(recognised.contains(": yes, balance "), "{recognised}");
    let ms: u64 = recognised
        .split(", ")
        .find_map(|part| part.strip_suffix(" ms after the receipt in A"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no delay in {recognised}"));
    assert!(ms <= 5_000, "recognised after {ms} ms: {recognised}");
    let voucher = line("voucher redeemed in A, at store B:");
    assert!(
        voucher.contains("refused") && voucher.contains("revoked by head office"),
        "{voucher}"
    );
    let merged = line("card enrolled in both stores:");
    assert!(merged.contains("merged, store-"), "{merged}");
    // One customer id shown at both stores' lanes after the merge.
    let id = merged
        .split("merged, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("id");
    let shown = stdout
        .lines()
        .filter(|l| l.contains("\"card\":\"2990000000026\"") && l.contains("\"type\":\"customer\""))
        .filter(|l| l.contains(&format!("\"customer_id\":\"{id}\"")))
        .count();
    assert_eq!(shown, 2, "both stores' lanes show {id}:\n{stdout}");
    // The erasure of that customer: gone from both stores' data, both confirmed at the hub.
    let erasure = line("erasure at head office:");
    assert!(
        erasure.contains("card and name gone at both stores")
            && erasure.contains("confirmed by store-a, store-b (complete)"),
        "{erasure}"
    );
    assert!(
        stdout.contains(&format!("POST /v1/admin/erasures {{customer_id: {id}}}")),
        "the erased customer is the merged one:\n{stdout}"
    );
    assert!(
        stdout.contains("both stores hold the name"),
        "the name reached both stores before the erasure:\n{stdout}"
    );
    // Store B trusts store A's voucher key within 5 s (the feed signals the gateway).
    let trusted: u64 = stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Store B trusts store A's voucher key ")?
                .split(" ms after")
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no key figure in:\n{stdout}"));
    assert!(trusted <= 5_000, "store A's key trusted after {trusted} ms");
    for line in stdout.lines().chain(stderr.lines()) {
        assert!(
            !line.contains(" WARN ") && !line.contains(" ERROR "),
            "the chain demo logged: {line}"
        );
    }
}
