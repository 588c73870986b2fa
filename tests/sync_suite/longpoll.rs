//! Long-poll of the changes feed and by-card lookups against the reference receiver: a held
//! request is answered as soon as head office has a change, an empty long-poll ends without a
//! timeout error (the request timeout covers the wait), a CRM that ignores `wait` is polled at
//! the interval (no busy loop), and by-card answers a customer or 404.

use loyalty_daemon::sync::client::{ClientSettings, CrmClient, WireCounters};
use loyalty_protocol::crm::{ChangesPage, WireCustomer};
use loyalty_tools::testkit::crm::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn client(pki: &Pki, url: &str) -> CrmClient {
    let settings = ClientSettings::from_config(&pki.crm_config(url)).expect("settings");
    CrmClient::new(settings, Arc::new(WireCounters::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_is_answered_as_soon_as_a_change_exists() {
    let pki = Pki::new();
    let crm = pki.receiver(None).await;
    // The request timeout (1.5 s) is shorter than the wait: the client adds the wait to it.
    let mut c = client(&pki, &crm.url());
    let asked = Instant::now();
    let empty = c
        .get_changes(STORE, "i1", None, Duration::from_secs(2))
        .await
        .expect("an empty page after the wait, not a timeout");
    assert!(empty.is_empty());
    assert!(
        asked.elapsed() >= Duration::from_millis(1900),
        "held for the wait"
    );
    assert_eq!(crm.stats().long_polls_held, 1);
    let waiting = tokio::spawn(async move {
        let page = c
            .get_changes(STORE, "i1", Some(&empty.cursor), Duration::from_secs(20))
            .await
            .expect("page");
        (page, Instant::now())
    });
    while crm.stats().long_polls_held < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pushed = Instant::now();
    crm.push_changes(
        STORE,
        ChangesPage {
            erased: vec!["C1".into()],
            ..ChangesPage::default()
        },
    );
    let (page, answered) = waiting.await.expect("join");
    assert_eq!(page.erased, vec!["C1".to_string()]);
    let latency = answered - pushed;
    assert!(
        latency < Duration::from_secs(2),
        "answered {latency:?} after the change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_without_long_poll_is_polled_at_the_interval() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("tempdir");
    let crm = pki.receiver(None).await;
    crm.ignore_wait(true);
    let mut config = config(&pki, &crm.url(), data.path());
    config.crm.poll_interval_secs = 1;
    config.crm.feed_wait_secs = 25;
    let store = open_store(&config);
    let (handle, cancel) = start(&config, &store);
    wait_status(&handle.status(), |s| s.last_feed_success.is_some()).await;
    let first = crm.stats().changes_requests;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let polls = crm.stats().changes_requests - first;
    assert!(
        (1..=4).contains(&polls),
        "{polls} polls in 2.5 s at a 1 s interval (a busy loop would make hundreds)"
    );
    assert_eq!(crm.stats().long_polls_held, 0);
    // Changes still arrive, at the interval.
    crm.push_changes(
        STORE,
        ChangesPage {
            erased: vec!["C1".into()],
            ..ChangesPage::default()
        },
    );
    wait_status(&handle.status(), |s| s.feed_pages_applied >= 1).await;
    cancel.cancel();
    handle.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_card_answers_the_scripted_customer_or_404() {
    let pki = Pki::new();
    let crm = pki.receiver(None).await;
    crm.add_customer(WireCustomer {
        customer_id: "HO-9".into(),
        balance: 70,
        includes_store_seq: 0,
        tier: None,
        cards: vec!["2990000000019".into(), "A/B 1".into()],
        display_name: None,
        consent: None,
        phone_hash: None,
        email_hash: None,
        tags: Vec::new(),
        birthday: None,
    });
    let mut c = client(&pki, &crm.url());
    let found = c
        .get_customer_by_card(STORE, "i1", "2990000000019")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!((found.customer_id.as_str(), found.balance), ("HO-9", 70));
    // Any card text travels as one path segment.
    let odd = c
        .get_customer_by_card(STORE, "i1", "A/B 1")
        .await
        .expect("lookup");
    assert_eq!(odd.map(|c| c.customer_id), Some("HO-9".to_string()));
    assert_eq!(
        c.get_customer_by_card(STORE, "i1", "2990000000026")
            .await
            .expect("lookup"),
        None
    );
    assert_eq!(crm.stats().card_lookups, 3);
}
