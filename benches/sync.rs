//! Sync benchmark: 100,000 queued `ledger` events (as the store writes them: random 128-bit
//! ids, 256-bit journal hashes) drained by the real uploader to the reference receiver over
//! mutual TLS on loopback. Reports events/s and bytes per event counted at the TCP level (TLS
//! records included). Targets: >= 20,000 events/s, <= 150 bytes/event.
//!
//! Run: `CARGO_TARGET_DIR=/work/targets/sync cargo bench --bench sync` (env `SYNC_BENCH_EVENTS`
//! overrides the count).

use loyalty_core::ledger::EntryKind;
use loyalty_daemon::config::Config;
use loyalty_daemon::sync;
use loyalty_protocol::crm::events::LedgerEvent;
use loyalty_store::events::{self, EventType};
use loyalty_store::Store;
use loyalty_tools::certs::write_local_pki;
use loyalty_tools::crm_reference::{self, Faults, ReferenceConfig};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const STORE: &str = "S001";

fn main() {
    let total: u64 = std::env::var("SYNC_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = write_local_pki(&dir.path().join("pki"), STORE).expect("pki");
    let mut config = Config::default();
    config.store.id = STORE.into();
    config.storage.data_dir = dir.path().join("gateway");
    let store = Store::open(&config.storage, STORE).expect("store");

    // Queue the events (1,000 per transaction).
    let customers: Vec<String> = (0..500)
        .map(|_| format!("{STORE}-{}", events::random_hex(8).expect("random")))
        .collect();
    let started = Instant::now();
    let mut written = 0u64;
    while written < total {
        let n = (total - written).min(1000);
        let hashes: Vec<String> = (0..n)
            .map(|_| events::random_hex(32).expect("random"))
            .collect();
        let base = written;
        store
            .transact(&[], |tx| {
                for i in 0..n {
                    let entry = base + i + 1;
                    let receipt = format!("R-{:06}", entry / 2);
                    let payload = LedgerEvent {
                        entry,
                        customer_id: customers[(entry % 500) as usize].as_str().into(),
                        kind: EntryKind::Earn,
                        points: (entry % 97) as i64 + 1,
                        receipt_id: Some(receipt.as_str().into()),
                        cause_receipt_id: None,
                        reference: None,
                        reason: None,
                        vests_at: None,
                        hash: hashes[i as usize].as_str().into(),
                    };
                    tx.append_event(EventType::Ledger, jiff::Timestamp::now(), &payload)?;
                }
                Ok(())
            })
            .expect("queue events");
        written += n;
    }
    let sample = store.outbox_raw_after(0, 1).expect("outbox");
    println!(
        "queued {total} events in {:.1}s; one event is {} bytes of JSON: {}",
        started.elapsed().as_secs_f64(),
        sample[0].json.len(),
        sample[0].json
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let crm = crm_reference::serve(ReferenceConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            cert_file: pki.server_cert_file.clone(),
            key_file: pki.server_key_file.clone(),
            client_ca_file: pki.ca_file.clone(),
            data_dir: Some(dir.path().join("crm")),
            fsync: true,
            faults: Faults::default(),
        })
        .await
        .expect("receiver");
        config.crm.enabled = true;
        config.crm.url = crm.url();
        config.crm.ca_file = Some(pki.ca_file.clone());
        config.crm.client_cert_file = Some(pki.client_cert_file.clone());
        config.crm.client_key_file = Some(pki.client_key_file.clone());
        config.crm.poll_interval_secs = 3600;
        let cancel = CancellationToken::new();
        let started = Instant::now();
        let handle = sync::start(&config, store.clone(), cancel.clone()).expect("start");
        let status = handle.status();
        tokio::time::timeout(
            Duration::from_secs(600),
            status.wait_for(|s| s.acked_through >= total),
        )
        .await
        .expect("drained within 10 minutes");
        let elapsed = started.elapsed();
        let (sent, received) = handle.wire_bytes();
        let st = status.snapshot();
        assert_eq!(
            crm.received_count(STORE) as u64,
            total,
            "receiver has every event"
        );
        println!(
            "drained {total} events in {:.2}s: {:.0} events/s, {} batches",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64(),
            st.batches_uploaded
        );
        println!(
            "wire (TCP, TLS included): {:.1} bytes/event sent, {:.1} bytes/event both directions",
            sent as f64 / total as f64,
            (sent + received) as f64 / total as f64
        );
        cancel.cancel();
        handle.join().await;
        crm.shutdown().await;
    });
}
