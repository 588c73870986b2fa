//! `docs/openapi.yaml` against real payloads: what the uploader sends and what the reference
//! receiver answers are validated with a JSON Schema 2020-12 validator (Python `jsonschema`).

use std::path::Path;
use std::process::Command;

/// Validates `instances` (pairs of schema name and JSON text) against the document's
/// `components.schemas`. Panics with the validator's report on failure.
pub fn check_against_openapi(instances: &[(&str, String)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("instances.json");
    let list: Vec<serde_json::Value> = instances
        .iter()
        .map(|(schema, json)| {
            serde_json::json!({"schema": schema, "instance": serde_json::from_str::<serde_json::Value>(json).expect("payload is JSON")})
        })
        .collect();
    std::fs::write(&input, serde_json::to_vec(&list).expect("json")).expect("write");
    let script = root.join("tests/sync_suite/openapi_check.py");
    let run = || {
        Command::new("python3")
            .arg(&script)
            .arg(root.join("docs/openapi.yaml"))
            .arg(&input)
            .output()
            .expect("python3 must be installed to check docs/openapi.yaml")
    };
    let mut output = run();
    if output.status.code() == Some(3) {
        // The validator is missing: install it once (CI images start without it).
        let _ = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "jsonschema", "pyyaml"])
            .status();
        output = run();
    }
    assert!(
        output.status.success(),
        "payloads do not match docs/openapi.yaml:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_document_rejects_a_malformed_event() {
    let result = std::panic::catch_unwind(|| {
        check_against_openapi(&[(
            "EventsRequest",
            r#"{"store_id":"S1","events":[{"seq":1,"id":"x","type":"ledger","at":"now"}]}"#.into(),
        )])
    });
    assert!(
        result.is_err(),
        "an event without payload must be refused by the schema"
    );
    // An erasure confirmation carries the id and nothing personal.
    let result = std::panic::catch_unwind(|| {
        check_against_openapi(&[(
            "Event",
            r#"{"seq":1,"id":"x","type":"customer_erased","at":"2026-11-23T10:00:00Z","payload":{"customer_id":"C1","card":"2990000000019"}}"#.into(),
        )])
    });
    assert!(result.is_err(), "a card in customer_erased must be refused");
    let result = std::panic::catch_unwind(|| {
        check_against_openapi(&[(
            "ChangesPage",
            r#"{"cursor":"1","customers":[],"erased":[],"revoked_vouchers":[],"keys":[],"rules":null,"merged":[{"from":"C1"}]}"#.into(),
        )])
    });
    assert!(result.is_err(), "a merge without `into` must be refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_payloads_match_the_document() {
    use loyalty_protocol::crm::{AckResponse, ChangesPage, WireCustomer, WireKey};
    use loyalty_tools::testkit::crm::*;
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("tempdir");
    let crm = pki.receiver(None).await;
    let config = config(&pki, &crm.url(), data.path());
    let store = open_store(&config);
    // A customer from the CRM, local events, a ledger entry and a flagged enrolment.
    crm.push_changes(
        STORE,
        ChangesPage {
            customers: vec![WireCustomer {
                customer_id: "C1".into(),
                balance: 10,
                includes_store_seq: 0,
                tier: None,
                cards: vec!["2990000000019".into()],
                display_name: Some("Ada".into()),
                consent: Some(loyalty_protocol::crm::WireConsent {
                    marketing: true,
                    profiling: false,
                }),
                phone_hash: loyalty_core::contact::phone_hash("+49 170 1234567"),
                email_hash: loyalty_core::contact::email_hash("ada@example.org"),
                tags: Vec::new(),
                birthday: None,
            }],
            erased: vec!["C9".into()],
            merged: vec![loyalty_protocol::crm::WireMerge {
                from: "C8".into(),
                into: "C1".into(),
            }],
            revoked_vouchers: vec!["V1".into()],
            keys: vec![WireKey {
                key_id: "K1".into(),
                algorithm: "ed25519".into(),
                public_key: "AAAA".into(),
                issuer: None,
                revoked: false,
            }],
            rules: Some(serde_json::json!({"points_per_unit": 1, "per_amount": "1.00", "tiers": [{"name": "gold", "factor": "1.5"}]})),
            ..ChangesPage::default()
        },
    );
    let (handle, cancel) = start(&config, &store);
    wait_status(&handle.status(), |s| s.feed_pages_applied >= 1).await;
    add_events(&store, "O", 2);
    store
        .crm_adjustment("C1", 7, "adj-1", "goodwill", jiff::Timestamp::now())
        .expect("adjust");
    // An enrolment while the gateway's clock is untrusted: the event carries the flag.
    store
        .stamped(false)
        .enroll("2990000000026", jiff::Timestamp::now())
        .expect("enroll");
    // A sale of C1, who refused profiling (its lines are withheld), and one without a customer.
    {
        use loyalty_tools::testkit::store::{line, sale, Policy};
        let lines = || vec![line("4006381333931", 1250, Some("office"))];
        let policy = Policy::default();
        let at = jiff::Timestamp::now();
        store
            .apply_receipt(&sale("R-C1", lines()), Some("C1"), &policy, at)
            .expect("sale of C1");
        store
            .apply_receipt(&sale("R-ANON", lines()), None, &policy, at)
            .expect("anonymous sale");
    }
    handle.nudge();
    // 7: the erasure's `customer_erased` confirmation, two events, the adjustment, the
    // enrolment, two receipts (C1's with its ledger entry counts one more: 8).
    wait_status(&handle.status(), |s| s.acked_through == 8).await;
    let upload = String::from_utf8(crm.last_upload_body().expect("upload").to_vec()).expect("utf8");
    let changes =
        String::from_utf8(crm.last_changes_body().expect("changes").to_vec()).expect("utf8");
    assert!(upload.contains(r#""clock_trusted":false"#), "{upload}");
    let erased = crm
        .received(STORE)
        .into_iter()
        .find(|e| e.kind == "customer_erased")
        .expect("the erasure is confirmed");
    assert_eq!(erased.payload, serde_json::json!({"customer_id": "C9"}));
    let erased_event = serde_json::to_string(&erased).expect("json");
    assert!(
        changes.contains(r#""merged":[{"from":"C8","into":"C1"}]"#),
        "{changes}"
    );
    let receipts: Vec<_> = crm
        .received(STORE)
        .into_iter()
        .filter(|e| e.kind == "receipt")
        .collect();
    assert_eq!(receipts.len(), 2);
    let (c1, anonymous) = (&receipts[0].payload, &receipts[1].payload);
    assert_eq!(c1["customer_id"], "C1");
    assert_eq!(c1["lines"], serde_json::json!([]), "{c1}");
    assert_eq!(c1["lines_withheld"], true);
    assert_eq!(anonymous["lines"][0]["sku"], "4006381333931", "{anonymous}");
    assert!(anonymous.get("lines_withheld").is_none());
    let receipt_events: Vec<_> = receipts
        .iter()
        .map(|e| ("Event", serde_json::to_string(e).expect("json")))
        .collect();
    let ack = serde_json::to_string(&AckResponse { acked_through: 8 }).expect("json");
    // A page with a point adjustment, as the reference CRM sends it.
    let adjusting = serde_json::to_string(&ChangesPage {
        cursor: "7".into(),
        adjustments: vec![loyalty_protocol::crm::WireAdjustment {
            reference: "HO-ADJ-1".into(),
            customer_id: "C1".into(),
            points: -15,
            reason: "correction".into(),
        }],
        ..ChangesPage::default()
    })
    .expect("json");
    // A page with offers and clips, and an `offer_redeemed` event, as this code writes them.
    let offering = serde_json::to_string(&ChangesPage {
        cursor: "8".into(),
        offers: vec![
            serde_json::from_str(
                r#"{"offer_id":"OF-1","customer_id":"C1","valid_from":"2026-11-01T00:00:00Z",
                    "valid_until":"2026-12-01T00:00:00Z","text":"Double points on coffee",
                    "conditions":{"gtins":["4006381333931"],"brands":["400638"],
                                  "categories":["coffee"],"min_spend":"5.00",
                                  "exclude_categories":["tobacco"]},
                    "benefit":{"multiplier":"2"},"requires_activation":true,
                    "max_uses_per_customer":2}"#,
            )
            .expect("offer"),
            serde_json::from_str(
                r#"{"offer_id":"OF-2","segment":"pets","benefit":{"amount_off":"3.00"}}"#,
            )
            .expect("offer"),
            serde_json::from_str(r#"{"offer_id":"OF-3","withdrawn":true}"#).expect("offer"),
        ],
        clips: vec![loyalty_protocol::crm::WireClip {
            customer_id: "C1".into(),
            offer_id: "OF-1".into(),
            withdrawn: false,
        }],
        ..ChangesPage::default()
    })
    .expect("json");
    let redeemed = loyalty_protocol::crm::events::OfferRedeemedEvent {
        amount_off: Some("3.00".into()),
        bonus_points: 0,
        customer_id: "C1".into(),
        lane: "1".into(),
        offer_id: "OF-2".into(),
        receipt_id: "R-1".into(),
        redeemed_at: jiff::Timestamp::now(),
        uses: 1,
    };
    let redeemed_event = serde_json::json!({"seq": 9, "id": "e9", "type": "offer_redeemed",
        "at": "2026-11-23T10:00:00Z", "payload": redeemed})
    .to_string();
    check_against_openapi(&[
        ("EventsRequest", upload),
        ("Event", erased_event),
        ("ChangesPage", changes),
        ("ChangesPage", adjusting),
        ("ChangesPage", offering),
        ("Event", redeemed_event),
        ("AckResponse", ack),
    ]);
    check_against_openapi(&receipt_events);
    // The document refuses lines on a payload that says they were withheld.
    let mut forged = receipts[1].clone();
    forged.payload["customer_id"] = serde_json::json!("C1");
    forged.payload["lines_withheld"] = serde_json::json!(true);
    let forged = serde_json::to_string(&forged).expect("json");
    let result = std::panic::catch_unwind(|| check_against_openapi(&[("Event", forged)]));
    assert!(result.is_err(), "withheld lines must be empty");
    let result = std::panic::catch_unwind(|| {
        check_against_openapi(&[(
            "Event",
            r#"{"seq":1,"id":"x","type":"offer_redeemed","at":"2026-11-23T10:00:00Z","payload":{"offer_id":"O"}}"#.into(),
        )])
    });
    assert!(
        result.is_err(),
        "an offer_redeemed without its fields must be refused"
    );
    cancel.cancel();
    handle.join().await;
}
