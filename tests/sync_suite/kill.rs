//! `kill -9` of the uploading process, many times: the test binary re-executes itself as a
//! child (`--exact sync_suite::kill::child_uploader --include-ignored`) that opens the store,
//! keeps adding events and uploads them; the parent SIGKILLs it at random moments and restarts
//! it. The receiver (in the parent) must end with every event once, in order.

use loyalty_tools::testkit::crm::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "LOYALTY_SYNC_KILL_CHILD";

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("random");
    u64::from_le_bytes(b) % n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_upload_resumes_at_the_right_sequence() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("tempdir");
    let crm = pki.receiver(None).await;
    {
        let config = config(&pki, &crm.url(), data.path());
        let store = open_store(&config);
        add_events(&store, "K", 1500);
    }
    let exe = std::env::current_exe().expect("exe");
    let spawn = |extra: &str| {
        Command::new(&exe)
            .args([
                "--exact",
                "sync_suite::kill::child_uploader",
                "--include-ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, "1")
            .env("LOYALTY_SYNC_KILL_URL", crm.url())
            .env("LOYALTY_SYNC_KILL_DATA", data.path())
            .env("LOYALTY_SYNC_KILL_PKI", pki.dir.path())
            .env("LOYALTY_SYNC_KILL_ROUND", extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child")
    };
    let mut kills = 0;
    let mut progressed_then_killed = 0;
    let mut round = 0;
    // At least 10 kills, and keep going (up to 40) until 3 of them landed while an upload was
    // still draining a backlog. Three rounds in four kill just after the run's first upload
    // landed (whatever the machine's speed), the fourth at a blind moment; a drained backlog is
    // refilled by the parent (the child is dead then, so the store is free).
    while round < 40 && (kills < 10 || progressed_then_killed < 3) {
        let written = {
            let config = config(&pki, &crm.url(), data.path());
            let store = open_store(&config);
            if crm.received_count(STORE) as u64 >= store.outbox_stats().expect("stats").last_seq {
                add_events(&store, &format!("K{round}-"), 1000);
            }
            store.outbox_stats().expect("stats").last_seq
        };
        let before = crm.received_count(STORE);
        let mut child = spawn(&round.to_string());
        if round % 4 == 0 {
            // A blind moment: often during start-up, before anything was uploaded.
            tokio::time::sleep(Duration::from_millis(60 + random_below(300))).await;
        } else {
            // Shortly after the first upload of this run landed, however slow the machine is.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while crm.received_count(STORE) == before && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis(random_below(15))).await;
        }
        // Child::kill sends SIGKILL on Unix: no chance to clean up, like kill -9.
        let _ = child.kill();
        let _ = child.wait();
        kills += 1;
        let after = crm.received_count(STORE);
        if after > before && (after as u64) < written {
            progressed_then_killed += 1;
        }
        round += 1;
    }
    // A last run to completion.
    let mut child = spawn("final");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the final child did not finish in 90 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "the final child failed");
    assert!(kills >= 10);
    assert!(
        progressed_then_killed >= 3,
        "too few kills landed mid-upload ({progressed_then_killed})"
    );
    let config = config(&pki, &crm.url(), data.path());
    let store = open_store(&config);
    assert_eq!(store.outbox_stats().expect("stats").unacked, 0);
    assert!(crm.received_count(STORE) >= 1500);
    assert_delivered_exactly_once(&crm, &store);
}

/// The child side (ignored unless re-executed by the test above).
#[test]
#[ignore = "child process of kill_9_during_upload_resumes_at_the_right_sequence"]
fn child_uploader() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let url = std::env::var("LOYALTY_SYNC_KILL_URL").expect("url");
    let data = PathBuf::from(std::env::var("LOYALTY_SYNC_KILL_DATA").expect("data"));
    let pki_dir = PathBuf::from(std::env::var("LOYALTY_SYNC_KILL_PKI").expect("pki"));
    let round = std::env::var("LOYALTY_SYNC_KILL_ROUND").expect("round");
    let mut config = loyalty_daemon::config::Config::default();
    config.store.id = STORE.into();
    config.storage.data_dir = data;
    config.crm = loyalty_daemon::config::CrmConfig {
        enabled: true,
        url,
        client_cert_file: Some(pki_dir.join("client.pem")),
        client_key_file: Some(pki_dir.join("client.key")),
        ca_file: Some(pki_dir.join("ca.pem")),
        batch_max_events: 40,
        batch_max_age_ms: 1,
        backoff_min_ms: 10,
        backoff_max_ms: 50,
        ..Default::default()
    };
    let store = open_store(&config);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (handle, cancel) = start(&config, &store);
        // Keep adding events while uploading, as a live gateway does.
        let s = store.clone();
        let prefix = format!("K{round}-");
        let writer = tokio::task::spawn_blocking(move || add_events(&s, &prefix, 30));
        writer.await.expect("writer");
        // Everything written so far, read from the store itself: the status may still show a
        // last_seq from before the writer finished.
        let last_seq = store.outbox_stats().expect("stats").last_seq;
        handle.nudge();
        handle
            .status()
            .wait_for(|s| s.acked_through >= last_seq)
            .await;
        cancel.cancel();
        handle.join().await;
    });
}
