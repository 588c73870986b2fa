//! A replaced store box (issue #18), end to end: the gateway binary, a real Mosquitto and the
//! reference CRM over mutual TLS. A running store syncs receipts; its data directory is wiped
//! (a new SD card) and the box restarted: sync resumes under a new database instance, every
//! receipt reaches the CRM, nothing is refused or lost, and the CRM sees the instance change.
//! A box whose data went back in time (an old copy of the *same* instance put back) still
//! raises the `crm_ack_beyond_outbox` alarm.

use harness::{copy_dir, sale, wait_online, Till};
use loyalty_tools::crm_reference::{self, Faults, ReferenceConfig, ReferenceCrm};
use loyalty_tools::testkit::{self as harness, http_get, metric_sample, GatewayBinary};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const STORE: &str = "rb1";
const PREFIX: &str = "loyalty/rb1";
const CARD: &str = "2990000000019";

fn config(
    dir: &Path,
    crm: &ReferenceCrm,
    pki: &loyalty_tools::certs::LocalPki,
    broker: u16,
    http: u16,
) -> String {
    harness::synced_config(STORE, dir, broker, http, &crm.url(), pki)
}

const ALARM: &str = "loyalty_invariant_violations_total{what=\"crm_ack_beyond_outbox\"}";

/// The receipt ids of the `receipt` events the CRM holds for the store.
fn receipts_at_crm(crm: &ReferenceCrm) -> Vec<String> {
    crm.received(STORE)
        .into_iter()
        .filter(|e| e.kind == "receipt")
        .filter_map(|e| e.payload["receipt_id"].as_str().map(str::to_string))
        .collect()
}

/// Sends receipts `ids` (with the card) and checks each is answered with points.
async fn sell(till: &mut Till, ids: &[&str]) {
    for id in ids {
        till.receipt("1", &sale(id, "1", Some(CARD), &[("A", 1, "3.00", "food")]))
            .await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let answer: Value = till
                .next(deadline.saturating_duration_since(Instant::now()))
                .await;
            if answer["receipt_id"] == *id {
                assert_eq!(answer["type"], "points", "receipt {id} refused: {answer}");
                break;
            }
        }
    }
}

/// Waits until every receipt of `ids` is at the CRM (the gateway log on failure).
async fn until_at_crm(crm: &ReferenceCrm, gateway: &harness::Gateway, ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = receipts_at_crm(crm);
        if ids.iter().all(|id| held.iter().any(|h| h == id)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "receipts {ids:?} did not all reach the CRM (it holds {held:?}); gateway log:\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn instance(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data").join("instance"))
        .expect("instance file")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_box_resumes_sync_and_a_box_gone_back_in_time_raises_the_alarm() {
    let broker = harness::Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = loyalty_tools::certs::write_local_pki(dir.path(), STORE).expect("pki");
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
    let http = harness::free_port();
    let binary = GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"));
    let text = config(dir.path(), &crm, &pki, broker.port, http);

    // The store runs and syncs receipts.
    let mut gateway = binary.start(dir.path(), &text);
    wait_online(broker.port, PREFIX).await;
    let mut till = Till::connect(broker.port, PREFIX, "till-rb").await;
    sell(&mut till, &["A-1", "A-2"]).await;
    until_at_crm(&crm, &gateway, &["A-1", "A-2"]).await;
    gateway.stop();
    let first = instance(dir.path());
    // An old copy of this box's data, taken while it was stopped.
    copy_dir(&dir.path().join("data"), &dir.path().join("old-copy"));

    // It runs on and syncs more (more events than the restored copy will write later).
    gateway.spawn();
    wait_online(broker.port, PREFIX).await;
    sell(&mut till, &["A-3", "A-4", "A-5", "A-6"]).await;
    until_at_crm(&crm, &gateway, &["A-3", "A-4", "A-5", "A-6"]).await;
    gateway.stop();

    // The SD card dies: store IT installs a new one (same configuration) and starts the box.
    std::fs::remove_dir_all(dir.path().join("data")).expect("wipe the data dir");
    gateway.spawn();
    wait_online(broker.port, PREFIX).await;
    sell(&mut till, &["B-1", "B-2", "B-3"]).await;
    until_at_crm(&crm, &gateway, &["B-1", "B-2", "B-3"]).await;
    let second = instance(dir.path());
    assert_ne!(first, second, "a wiped data dir is a new database instance");
    assert_eq!(
        crm.instances(STORE),
        vec![first.clone(), second.clone()],
        "the CRM sees the instance change"
    );
    // Nothing refused or lost: every receipt once, no sequence conflicts or gaps.
    let mut held = receipts_at_crm(&crm);
    held.sort();
    assert_eq!(
        held,
        ["A-1", "A-2", "A-3", "A-4", "A-5", "A-6", "B-1", "B-2", "B-3"],
        "every receipt at the CRM exactly once"
    );
    let stats = crm.stats();
    assert_eq!((stats.seq_conflicts, stats.gaps), (0, 0), "{stats:?}");
    assert!(crm.acked_through_instance(STORE, &second) >= 3);
    // No alarm: /health is ok and the invariant was never violated.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, health) = tokio::task::spawn_blocking(move || http_get(http, "/health"))
            .await
            .expect("join");
        let (_, metrics) = tokio::task::spawn_blocking(move || http_get(http, "/metrics"))
            .await
            .expect("join");
        assert_eq!(
            metric_sample(&metrics, ALARM),
            None,
            "{metrics}\n{}",
            gateway.log()
        );
        let health: Value = serde_json::from_str(&health).unwrap_or(Value::Null);
        if status == 200 && health["sync"]["ok"] == true && health["sync"]["outbox_depth"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/health not ok: {status} {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.stop();

    // The old copy of the first instance is put back: its data went back in time. The CRM
    // holds more of that instance than the box has: the alarm, not a silent fresh start.
    std::fs::remove_dir_all(dir.path().join("data")).expect("remove the data dir");
    copy_dir(&dir.path().join("old-copy"), &dir.path().join("data"));
    assert_eq!(instance(dir.path()), first);
    gateway.spawn();
    wait_online(broker.port, PREFIX).await;
    sell(&mut till, &["C-1"]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = tokio::task::spawn_blocking(move || http_get(http, "/metrics"))
            .await
            .expect("join");
        let (status, health) = tokio::task::spawn_blocking(move || http_get(http, "/health"))
            .await
            .expect("join");
        if metric_sample(&metrics, ALARM).is_some_and(|v| v >= 1.0) && status == 503 {
            let health: Value = serde_json::from_str(&health).expect("health JSON");
            assert_eq!(health["sync"]["ok"], false, "{health}");
            let error = health["sync"]["last_error"].as_str().unwrap_or_default();
            assert!(
                error.contains(&first),
                "the alarm names the instance: {error}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no alarm for a box gone back in time: {status} {health}\n{metrics}\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !receipts_at_crm(&crm).iter().any(|id| id == "C-1"),
        "nothing of the box gone back in time is taken as acknowledged"
    );
    gateway.stop();
    crm.shutdown().await;
}
