//! Store-and-forward through the real uploader: a long outage, random faults, Retry-After, TLS
//! misconfigurations reported in the status and recovered from.

use loyalty_tools::certs::{write_pem, TestCa, Validity};
use loyalty_tools::crm_reference::{self, Fault, Faults};
use loyalty_tools::testkit::{crm::*, eventually};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_loses_nothing_and_delivers_each_event_once_in_order() {
    let pki = Pki::new();
    let crm_data = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    let crm = pki.receiver(Some(crm_data.path())).await;
    let addr = crm.addr();
    let config = config(&pki, &crm.url(), data.path());
    let store = open_store(&config);
    let (handle, cancel) = start(&config, &store);
    let status = handle.status();

    let s = store.clone();
    tokio::task::spawn_blocking(move || add_events(&s, "A", 40))
        .await
        .expect("add");
    handle.nudge();
    eventually(Duration::from_secs(20), "first 40 delivered", || {
        crm.received_count(STORE) == 40
    })
    .await;

    crm.shutdown().await;
    // Events keep coming while the CRM is away.
    let s = store.clone();
    tokio::task::spawn_blocking(move || add_events(&s, "B", 300))
        .await
        .expect("add");
    let st = wait_status(&status, |s| s.upload_failures >= 3 && s.outbox_depth == 300).await;
    assert!(st.last_upload_error.is_some());
    assert!(st.oldest_unsent_at.is_some());
    assert!(!st.healthy());

    let crm = crm_reference::serve(pki.receiver_config(addr, Some(crm_data.path())))
        .await
        .expect("receiver back");
    eventually(Duration::from_secs(30), "all 340 delivered", || {
        crm.received_count(STORE) == 340
    })
    .await;
    let st = wait_status(&status, |s| {
        s.acked_through == 340 && s.upload_failures == 0
    })
    .await;
    assert_eq!(st.outbox_depth, 0);
    assert!(st.last_upload_success.is_some());
    assert_delivered_exactly_once(&crm, &store);
    cancel.cancel();
    handle.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_lose_nothing_and_duplicate_nothing() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("tempdir");
    let crm = pki.receiver(None).await;
    // First every ack is lost (the events are stored, the answer never comes), so resends and
    // the receiver's deduplication are certain to be exercised, whatever the dice say later.
    crm.set_faults(Faults {
        rate_percent: 100,
        kinds: vec![Fault::DropAfter],
        on_changes: false,
    });
    let mut config = config(&pki, &crm.url(), data.path());
    config.crm.batch_max_events = 25;
    config.crm.request_timeout_ms = 300;
    config.crm.retry_after_max_ms = 30;
    let store = open_store(&config);
    let (handle, cancel) = start(&config, &store);
    let s = store.clone();
    let writer = tokio::task::spawn_blocking(move || {
        for round in 0..6 {
            add_events(&s, &format!("F{round}-"), 100);
        }
    });
    eventually(Duration::from_secs(20), "three acks lost", || {
        crm.stats().faults_injected >= 3
    })
    .await;
    assert_eq!(
        handle.status().snapshot().acked_through,
        0,
        "nothing can be acknowledged while every ack is lost"
    );
    // Then a random mix of every fault on 40 % of the requests.
    crm.set_faults(Faults {
        rate_percent: 40,
        kinds: vec![
            Fault::ServerError,
            Fault::TooManyRequests(1),
            Fault::Unavailable(1),
            Fault::Stall(Duration::from_millis(800)),
            Fault::DropBefore,
            Fault::DropAfter,
        ],
        on_changes: true,
    });
    writer.await.expect("writer");
    eventually(Duration::from_secs(60), "600 delivered", || {
        crm.received_count(STORE) == 600
    })
    .await;
    wait_status(&handle.status(), |s| s.acked_through == 600).await;
    let stats = crm.stats();
    assert!(stats.faults_injected >= 5, "{stats:?}");
    assert!(
        stats.duplicates > 0,
        "a lost ack must have caused a resend: {stats:?}"
    );
    assert_delivered_exactly_once(&crm, &store);
    cancel.cancel();
    handle.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("tempdir");
    let crm = pki.receiver(None).await;
    crm.set_faults(Faults {
        rate_percent: 100,
        kinds: vec![Fault::TooManyRequests(2)],
        on_changes: false,
    });
    let config = config(&pki, &crm.url(), data.path());
    let store = open_store(&config);
    add_events(&store, "R", 3);
    let (handle, cancel) = start(&config, &store);
    let st = wait_status(&handle.status(), |s| s.upload_failures >= 1).await;
    let refused_at = Instant::now();
    let requests = crm.stats().upload_requests;
    assert!(st.last_upload_error.expect("error").message.contains("429"));
    crm.set_faults(Faults::default());
    eventually(Duration::from_secs(10), "delivered", || {
        crm.received_count(STORE) == 3
    })
    .await;
    // backoff_max_ms is 100 in tests: only Retry-After (2 s) explains a wait of over a second,
    // however late this test noticed the refusal.
    assert!(
        refused_at.elapsed() >= Duration::from_secs(1),
        "{:?}",
        refused_at.elapsed()
    );
    assert_eq!(
        crm.stats().upload_requests,
        requests + 1,
        "no request during Retry-After"
    );
    cancel.cancel();
    handle.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_show_in_the_status_lose_nothing_and_recover_once_fixed() {
    // (name, break it, expected text, fix it)
    type Step = Box<dyn Fn(&Pki)>;
    let cases: Vec<(&str, Step, &str, Step)> = vec![
        (
            "unknown CA",
            Box::new(|p: &Pki| {
                let other = TestCa::new("other").expect("ca");
                std::fs::copy(&p.ca_file, p.dir.path().join("ca.good")).expect("copy");
                write_pem(&p.ca_file, &other.cert_pem(), false).expect("write");
            }),
            "unknown issuer",
            Box::new(|p: &Pki| {
                std::fs::copy(p.dir.path().join("ca.good"), &p.ca_file).expect("copy");
            }),
        ),
        (
            "expired client certificate",
            Box::new(|p: &Pki| p.reissue_client(Validity::Expired)),
            "expired",
            Box::new(|p: &Pki| p.reissue_client(Validity::Current)),
        ),
        (
            "missing client certificate",
            Box::new(|p: &Pki| std::fs::remove_file(&p.client_cert).expect("rm")),
            "client_cert_file",
            Box::new(|p: &Pki| p.reissue_client(Validity::Current)),
        ),
    ];
    for (name, break_it, needle, fix_it) in cases {
        let pki = Pki::new();
        let data = tempfile::tempdir().expect("tempdir");
        let crm = pki.receiver(None).await;
        let config = config(&pki, &crm.url(), data.path());
        let store = open_store(&config);
        add_events(&store, "T", 5);
        break_it(&pki);
        let (handle, cancel) = start(&config, &store);
        let st = wait_status(&handle.status(), |s| s.upload_failures >= 2).await;
        let error = st.last_upload_error.expect("error");
        assert_eq!(error.kind, "tls", "{name}: {error:?}");
        assert!(
            error.message.contains(needle),
            "{name}: '{}' lacks '{needle}'",
            error.message
        );
        assert_eq!(st.outbox_depth, 5, "{name}: nothing lost");
        assert_eq!(crm.received_count(STORE), 0);
        fix_it(&pki);
        wait_status(&handle.status(), |s| {
            s.acked_through == 5 && s.upload_failures == 0
        })
        .await;
        assert_delivered_exactly_once(&crm, &store);
        cancel.cancel();
        handle.join().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_name_shows_in_the_status() {
    let pki = Pki::with_server_names(&["crm.example.com"]);
    let data = tempfile::tempdir().expect("tempdir");
    let crm = pki.receiver(None).await;
    let config = config(&pki, &crm.url(), data.path());
    let store = open_store(&config);
    add_events(&store, "H", 2);
    let (handle, cancel) = start(&config, &store);
    let st = wait_status(&handle.status(), |s| s.upload_failures >= 1).await;
    assert!(st
        .last_upload_error
        .expect("error")
        .message
        .contains("wrong host name"));
    assert_eq!(st.outbox_depth, 2);
    cancel.cancel();
    handle.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_ahead_of_the_local_outbox_raises_the_alarm_and_acks_nothing() {
    let pki = Pki::new();
    let crm = pki.receiver(None).await;
    let first = tempfile::tempdir().expect("tempdir");
    let config_a = config(&pki, &crm.url(), first.path());
    let store = open_store(&config_a);
    // An old copy of this database (the same instance), taken before any event.
    store.wait_durable().expect("durable");
    drop(store);
    let second = tempfile::tempdir().expect("tempdir");
    loyalty_tools::testkit::copy_dir(first.path(), second.path());
    let store = open_store(&config_a);
    add_events(&store, "A", 20);
    let (handle, cancel) = start(&config_a, &store);
    wait_status(&handle.status(), |s| s.acked_through == 20).await;
    cancel.cancel();
    handle.join().await;
    drop(store);
    // The database went back in time (the old copy put back, or a power cut with sled,
    // FIELD-NOTES): the same instance restarts below what the CRM holds. (A new instance, a
    // replaced box, has its own sequence: `tests/gateway_replaced_box.rs`.)
    let config_b = config(&pki, &crm.url(), second.path());
    let store = open_store(&config_b);
    add_events(&store, "B", 5);
    let (handle, cancel) = start(&config_b, &store);
    let st = wait_status(&handle.status(), |s| s.alarm.is_some()).await;
    assert!(st.alarm.expect("alarm").contains("went back in time"));
    assert_eq!(
        store.outbox_stats().expect("stats").acked_through,
        0,
        "never a fresh start"
    );
    assert_eq!(crm.received_count(STORE), 20);
    assert!(crm.stats().seq_conflicts >= 5);
    cancel.cancel();
    handle.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_are_compacted_after_the_retention_period() {
    let pki = Pki::new();
    let crm = pki.receiver(None).await;
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = config(&pki, &crm.url(), data.path());
    config.storage.outbox_retention_hours = 0;
    let store = open_store(&config);
    add_events(&store, "C", 10);
    let (handle, cancel) = start(&config, &store);
    wait_status(&handle.status(), |s| s.acked_through == 10).await;
    cancel.cancel();
    handle.join().await;
    assert_eq!(crm.received_count(STORE), 10);
    // Compaction runs when the uploader starts (then hourly).
    tokio::time::sleep(Duration::from_millis(1100)).await; // event times have second resolution
    let (handle, cancel) = start(&config, &store);
    let s = store.clone();
    eventually(Duration::from_secs(10), "compacted", move || {
        s.outbox_stats().expect("stats").stored == 0
    })
    .await;
    let stats = store.outbox_stats().expect("stats");
    assert_eq!(
        (stats.last_seq, stats.acked_through, stats.unacked),
        (10, 10, 0)
    );
    cancel.cancel();
    handle.join().await;
}

/// Events written while the uploader reads and sends a batch: the CRM acknowledges sequence
/// numbers newer than the outbox counts the attempt began with. That is no data loss, and must
/// never raise the alarm (it did, in the demo under load: `/health` degraded for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_during_uploads_never_raise_the_data_loss_alarm() {
    let pki = Pki::new();
    let crm = pki.receiver(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(&pki, &crm.url(), dir.path());
    // Every attempt sends what it finds at once.
    config.crm.batch_max_age_ms = 0;
    let store = open_store(&config);
    let (handle, cancel) = start(&config, &store);
    let total = 1500;
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || add_events(&store, &format!("W{w}-"), total / 3))
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    let st = wait_status(&handle.status(), |s| {
        s.alarm.is_some() || s.acked_through == total as u64
    })
    .await;
    assert_eq!(st.alarm, None, "false data-loss alarm");
    assert!(
        st.batches_uploaded >= 10,
        "the uploads overlapped the writes: {} batches",
        st.batches_uploaded
    );
    assert_delivered_exactly_once(&crm, &store);
    cancel.cancel();
    handle.join().await;
}
