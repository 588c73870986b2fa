//! The gateway and the CRM together, in-process, over real mutual TLS to the reference
//! receiver: what head office sends down reaches the lanes (a revoked voucher is refused at
//! once after the next poll; rules from the CRM are applied to the next receipt; voucher keys
//! from the feed are trusted by the lanes at once), and what the store writes reaches the CRM
//! exactly once.

use loyalty_daemon::gateway::{self, StartOptions};
use loyalty_daemon::input::{Input, Origin};
use loyalty_protocol::crm::ChangesPage;
use loyalty_protocol::till::Response;
use loyalty_tools::crm_reference::{self, ReferenceConfig, ReferenceCrm};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const STORE: &str = "crm-1";

async fn scan(handle: &gateway::GatewayHandle, lane: &str, text: &str) -> Response {
    let input = Input::Scan {
        lane: lane.into(),
        data: text.as_bytes().to_vec(),
        origin: Origin::Mqtt,
        done: None,
    };
    gateway::request(handle, input, lane, 1, Duration::from_secs(10))
        .await
        .pop()
        .expect("an answer")
}

async fn receipt(handle: &gateway::GatewayHandle, lane: &str, json: serde_json::Value) -> Response {
    let receipt =
        loyalty_protocol::till::parse_receipt(&serde_json::to_vec(&json).expect("json"), lane, 2)
            .expect("valid receipt");
    let (input, _done) = gateway::receipt_input(lane, receipt, Origin::Mqtt);
    gateway::request(handle, input, lane, 1, Duration::from_secs(10))
        .await
        .pop()
        .expect("an answer")
}

fn sale(id: &str, total: &str) -> serde_json::Value {
    serde_json::json!({"receipt_id": id, "timestamp": "2026-11-23T10:00:00Z", "currency": "EUR",
        "total": total, "card": "2990000000019",
        "lines": [{"sku": "1", "name": "Goods", "qty": 1, "amount": total, "category": "food"}]})
}

/// The reference CRM over mutual TLS with certificates made now, and an in-process gateway
/// syncing to it (no MQTT, no HTTP): `rewards` and `crm` are extra lines of those sections.
async fn gateway_with_crm(
    dir: &Path,
    rewards: &str,
    crm_timing: &str,
) -> (ReferenceCrm, gateway::GatewayHandle, CancellationToken) {
    let pki = loyalty_tools::certs::write_local_pki(dir, STORE).expect("pki");
    let crm = crm_reference::serve(ReferenceConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        cert_file: pki.server_cert_file.clone(),
        key_file: pki.server_key_file.clone(),
        client_ca_file: pki.ca_file.clone(),
        data_dir: None,
        fsync: false,
        faults: Default::default(),
    })
    .await
    .expect("reference CRM");
    let key = dir.join("signing.key");
    loyalty_daemon::vouchers::keyfile::generate(&key).expect("key");
    let config = loyalty_daemon::config::parse_built(&format!(
        r#"[store]
id = "{STORE}"
timezone = "Europe/Berlin"
require_ntp_sync = false
[storage]
data_dir = "{data}"
[mqtt]
enabled = false
[cards]
prefixes = ["299"]
[rewards]
signing_key_file = "{key}"
{rewards}
[crm]
enabled = true
url = "{url}"
client_cert_file = "{cert}"
client_key_file = "{ckey}"
ca_file = "{ca}"
{crm_timing}
backoff_min_ms = 50
backoff_max_ms = 500
[http]
enabled = false
"#,
        data = dir.join("data").display(),
        key = key.display(),
        url = crm.url(),
        cert = pki.client_cert_file.display(),
        ckey = pki.client_key_file.display(),
        ca = pki.ca_file.display(),
    ))
    .expect("valid config");
    let shutdown = CancellationToken::new();
    let handle = gateway::start(config, StartOptions { mqtt: false }, shutdown.clone())
        .await
        .expect("gateway starts");
    (crm, handle, shutdown)
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_revocations_and_rules_reach_the_lanes_and_every_event_reaches_the_crm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (crm, handle, shutdown) = gateway_with_crm(
        dir.path(),
        "rules = [{ every_points = 10, value = \"1.00\", validity_days = 30 }]",
        "poll_interval_secs = 1\nbatch_max_age_ms = 20",
    )
    .await;

    // A sale earns a voucher.
    let Response::Points { vouchers, .. } = receipt(&handle, "1", sale("C-1", "12.00")).await
    else {
        panic!("no points answer");
    };
    let voucher = vouchers.first().expect("a voucher was issued").clone();

    // Head office revokes it; after the next poll the lane refuses it.
    crm.push_changes(
        STORE,
        ChangesPage {
            cursor: "c1".into(),
            revoked_vouchers: vec![voucher.voucher_id.clone()],
            ..Default::default()
        },
    );
    handle.sync.poll_changes_now();
    let store = handle.store.clone();
    let id = voucher.voucher_id.clone();
    wait_for("the revocation to be applied", || {
        store.is_voucher_revoked(&id).unwrap_or(false)
    })
    .await;
    scan(&handle, "2", "2990000000019").await;
    match scan(&handle, "2", &voucher.text).await {
        Response::Reward { status, reason, .. } => {
            assert_ne!(status, "valid");
            assert!(
                reason.unwrap_or_default().contains("revoked"),
                "refused as revoked"
            );
        }
        other => panic!("unexpected answer {other:?}"),
    }

    // Head office doubles the points per unit; the next receipt earns by the new rules.
    crm.push_changes(
        STORE,
        ChangesPage {
            cursor: "c2".into(),
            rules: Some(serde_json::json!({"points_per_unit": 2, "per_amount": "1.00"})),
            ..Default::default()
        },
    );
    handle.sync.poll_changes_now();
    let mut earned = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    for attempt in 0.. {
        let Response::Points { earned: e, .. } =
            receipt(&handle, "1", sale(&format!("C-2-{attempt}"), "5.00")).await
        else {
            panic!("no points answer");
        };
        earned = e;
        if earned == 10 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        earned, 10,
        "5.00 at 2 points per 1.00 under the CRM's rules"
    );

    // Everything written reached the CRM once, in order.
    let store = handle.store.clone();
    let last = tokio::task::spawn_blocking(move || store.outbox_stats().expect("stats").last_seq)
        .await
        .expect("join");
    handle.sync.nudge();
    wait_for("the CRM to acknowledge every event", || {
        crm.acked_through(STORE) >= last
    })
    .await;
    let received = crm.received(STORE);
    assert_eq!(received.len() as u64, last, "each event exactly once");
    let announced = received
        .iter()
        .find(|event| event.kind == "voucher_key")
        .expect("the store's voucher key was announced");
    assert_eq!(announced.payload["algorithm"], "ed25519");
    assert!(announced.payload["public_key"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    assert_eq!(
        received
            .iter()
            .filter(|event| event.kind == "voucher_key")
            .count(),
        1,
        "announced once"
    );
    shutdown.cancel();
}

/// A voucher of 1.00 off, of head office's key `key_id`, valid since an hour.
fn head_office_voucher(key_id: &str) -> loyalty_core::voucher::Voucher {
    use loyalty_core::voucher::{Benefit, Voucher, VoucherId};
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).expect("now");
    Voucher {
        id: VoucherId::derived(key_id, "HO-1", 0),
        key_id: key_id.into(),
        currency: "EUR".into(),
        benefit: Benefit::AmountOff(loyalty_core::money::Money(100)),
        valid_from: now - jiff::SignedDuration::from_hours(1),
        valid_until: now + jiff::SignedDuration::from_hours(24),
        valid_from_issue: false,
        min_spend: None,
        customer: None,
    }
}

/// Issue 15: a key head office sends in a feed page is trusted by the lanes as soon as the page
/// is applied (the feed tells the gateway), not at the periodic reload (a minute). Two keys in
/// a row: whatever the phase of a periodic reload, the second key would wait for a whole period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voucher_keys_from_the_feed_reach_the_lanes_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (crm, handle, shutdown) = gateway_with_crm(
        dir.path(),
        "",
        "poll_interval_secs = 30\nfeed_wait_secs = 25",
    )
    .await;
    // The feed's first request is held by the CRM (long-poll).
    wait_for("the feed's long-poll", || crm.stats().long_polls_held >= 1).await;

    for (round, key_id) in ["ho-key-1", "ho-key-2"].into_iter().enumerate() {
        let signing =
            loyalty_daemon::vouchers::keyfile::generate(&dir.path().join(format!("{key_id}.key")))
                .expect("head office key");
        let text = head_office_voucher(key_id).sign(&signing).expect("signed");
        // Unknown key: refused.
        let Response::Reward { status, .. } = scan(&handle, "1", &text).await else {
            panic!("no reward answer");
        };
        assert_ne!(status, "valid", "{key_id} is not trusted yet");
        let pushed = Instant::now();
        crm.push_changes(
            STORE,
            ChangesPage {
                cursor: format!("k{round}"),
                keys: vec![loyalty_protocol::crm::WireKey {
                    key_id: key_id.into(),
                    algorithm: "ed25519".into(),
                    public_key: loyalty_core::voucher::keys::public_key_base64(
                        &signing.verifying_key(),
                    ),
                    issuer: Some("head-office".into()),
                    revoked: false,
                }],
                ..Default::default()
            },
        );
        let trusted = loop {
            let Response::Reward { status, .. } = scan(&handle, "1", &text).await else {
                panic!("no reward answer");
            };
            if status == "valid" {
                break pushed.elapsed();
            }
            assert!(
                pushed.elapsed() < Duration::from_secs(5),
                "{key_id} not trusted at the lane 5 s after head office sent it (last: {status})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        eprintln!(
            "{key_id}: valid at the lane {} ms after the push",
            trusted.as_millis()
        );
    }
    shutdown.cancel();
    handle.sync.stopped().await;
}
