//! The CRM link without the store: client against the reference receiver over mutual TLS;
//! deduplication, the scripted changes feed, and every TLS misconfiguration.

use loyalty_daemon::sync::client::{gzip, ClientSettings, CrmClient, WireCounters};
use loyalty_daemon::sync::SyncError;
use loyalty_protocol::crm::ChangesPage;
use loyalty_tools::certs::{write_pem, TestCa, Validity};
use loyalty_tools::testkit::crm::{Pki, STORE};
use std::sync::Arc;

fn client(pki: &Pki, url: &str) -> CrmClient {
    let settings = ClientSettings::from_config(&pki.crm_config(url)).expect("settings");
    CrmClient::new(settings, Arc::new(WireCounters::default()))
}

fn batch(seqs: std::ops::RangeInclusive<u64>) -> hyper::body::Bytes {
    let events: Vec<String> = seqs
        .map(|seq| {
            format!(r#"{{"seq":{seq},"id":"id-{seq}","type":"ledger","at":"2026-11-23T10:00:00Z","payload":{{"points":{seq}}}}}"#)
        })
        .collect();
    gzip(
        format!(
            r#"{{"store_id":"{STORE}","events":[{}]}}"#,
            events.join(",")
        )
        .as_bytes(),
    )
}

#[tokio::test]
async fn uploads_are_deduplicated_by_id_and_acknowledged_in_order() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("tempdir");
    let crm = pki.receiver(Some(data.path())).await;
    let mut c = client(&pki, &crm.url());
    assert_eq!(
        c.post_events(STORE, batch(1..=3)).await.expect("upload").0,
        3
    );
    assert_eq!(
        c.post_events(STORE, batch(1..=5)).await.expect("upload").0,
        5
    );
    // A batch after a gap stores nothing past the gap.
    assert_eq!(
        c.post_events(STORE, batch(8..=9)).await.expect("upload").0,
        5
    );
    let seqs: Vec<u64> = crm.received(STORE).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(crm.stats().duplicates, 3);
    assert_eq!(crm.stats().gaps, 1);
    // Persisted: a restarted receiver on the same data still deduplicates.
    let addr = crm.addr();
    crm.shutdown().await;
    let crm = loyalty_tools::crm_reference::serve(pki.receiver_config(addr, Some(data.path())))
        .await
        .expect("restart");
    let mut c = client(&pki, &crm.url());
    assert_eq!(
        c.post_events(STORE, batch(4..=6)).await.expect("upload").0,
        6
    );
    assert_eq!(crm.received_count(STORE), 6);
}

#[tokio::test]
async fn changes_pages_are_served_in_order_with_cursors() {
    let pki = Pki::new();
    let crm = pki.receiver(None).await;
    let mut c = client(&pki, &crm.url());
    let empty = c
        .get_changes(STORE, "i1", None, std::time::Duration::ZERO)
        .await
        .expect("page");
    assert!(empty.is_empty());
    crm.push_changes(
        STORE,
        ChangesPage {
            erased: vec!["C1".into()],
            ..ChangesPage::default()
        },
    );
    let page = c
        .get_changes(STORE, "i1", Some(&empty.cursor), std::time::Duration::ZERO)
        .await
        .expect("page");
    assert_eq!(page.erased, vec!["C1".to_string()]);
    let next = c
        .get_changes(STORE, "i1", Some(&page.cursor), std::time::Duration::ZERO)
        .await
        .expect("page");
    assert!(next.is_empty());
    assert_eq!(next.cursor, page.cursor);
}

async fn expect_tls_error(c: &mut CrmClient, needle: &str) -> String {
    let err = c
        .post_events(STORE, batch(1..=1))
        .await
        .expect_err("must fail");
    let text = err.to_string();
    assert!(
        matches!(err, SyncError::Tls(_) | SyncError::TlsSetup(_)),
        "not a TLS error: {err:?}"
    );
    assert!(
        text.contains(needle),
        "'{text}' does not mention '{needle}'"
    );
    text
}

#[tokio::test]
async fn unknown_server_ca_is_reported_and_recovers_when_fixed() {
    let pki = Pki::new();
    let crm = pki.receiver(None).await;
    let other = TestCa::new("some other CA").expect("ca");
    let good_ca = std::fs::read_to_string(&pki.ca_file).expect("read");
    write_pem(&pki.ca_file, &other.cert_pem(), false).expect("write");
    let mut c = client(&pki, &crm.url());
    expect_tls_error(&mut c, "unknown issuer").await;
    write_pem(&pki.ca_file, &good_ca, false).expect("write");
    assert_eq!(
        c.post_events(STORE, batch(1..=1)).await.expect("fixed").0,
        1
    );
}

#[tokio::test]
async fn wrong_host_name_is_reported() {
    let pki = Pki::with_server_names(&["crm.example.com"]);
    let crm = pki.receiver(None).await;
    let mut c = client(&pki, &crm.url());
    expect_tls_error(&mut c, "wrong host name").await;
    assert_eq!(crm.received_count(STORE), 0);
}

#[tokio::test]
async fn expired_client_certificate_is_reported_and_recovers_after_renewal() {
    let pki = Pki::new();
    let crm = pki.receiver(None).await;
    pki.reissue_client(Validity::Expired);
    let mut c = client(&pki, &crm.url());
    expect_tls_error(&mut c, "expired").await;
    assert_eq!(crm.received_count(STORE), 0);
    pki.reissue_client(Validity::Current);
    assert_eq!(
        c.post_events(STORE, batch(1..=1)).await.expect("renewed").0,
        1
    );
}

#[tokio::test]
async fn missing_or_foreign_client_certificate_is_reported() {
    let pki = Pki::new();
    let crm = pki.receiver(None).await;
    let saved = std::fs::read(&pki.client_cert).expect("read");
    std::fs::remove_file(&pki.client_cert).expect("rm");
    let mut c = client(&pki, &crm.url());
    expect_tls_error(&mut c, "client_cert_file").await;
    // A certificate from a CA the CRM does not know.
    let other = TestCa::new("rogue CA").expect("ca");
    let rogue = other.client(STORE, Validity::Current).expect("cert");
    write_pem(&pki.client_cert, &rogue.cert_pem, false).expect("write");
    write_pem(&pki.client_key, &rogue.key_pem, true).expect("write");
    expect_tls_error(&mut c, "refused this store's client certificate").await;
    assert!(crm.stats().tls_failures >= 1);
    assert_eq!(crm.received_count(STORE), 0);
    drop(saved);
}
