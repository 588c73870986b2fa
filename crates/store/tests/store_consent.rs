//! Consent on a real sled database: the `receipt` event of a customer without `profiling`
//! consent (refused, or unknown: enrolled at the till) carries her id, card, totals and points
//! but no lines and no categories; with consent, and without a customer, the lines go as
//! before; a return follows the sale's customer; the store keeps every line itself; a card-less
//! sale attached afterwards to a customer without consent loses its lines if its event is
//! still unsent.

#[allow(dead_code)] // each test binary uses some of them
#[path = "../../tools/src/testkit/store.rs"]
mod store_support;

use loyalty_core::money::Money;
use loyalty_core::receipt::ReceiptLimits;
use loyalty_store::sync_state::{ChangeSet, CrmConsent, CrmCustomer};
use store_support::*;

fn customer(id: &str, card: &str, consent: Option<(bool, bool)>) -> CrmCustomer {
    CrmCustomer {
        customer_id: id.into(),
        balance: 0,
        includes_store_seq: 0,
        tier: None,
        cards: vec![card.into()],
        display_name: Some(format!("name of {id}")),
        consent: consent.map(|(marketing, profiling)| CrmConsent {
            marketing,
            profiling,
        }),
        phone_hash: None,
        email_hash: None,
        tags: vec![],
        birthday: None,
    }
}

fn page(cursor: &str, customers: Vec<CrmCustomer>) -> ChangeSet {
    ChangeSet {
        cursor: cursor.into(),
        now: now(),
        customers,
        ..Default::default()
    }
}

/// The payload of the `receipt` event of `receipt_id`.
fn receipt_event(store: &loyalty_store::Store, receipt_id: &str) -> serde_json::Value {
    store
        .outbox_raw_after(0, usize::MAX)
        .expect("outbox")
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(&e.json).expect("json"))
        .find(|e| e["type"] == "receipt" && e["payload"]["receipt_id"] == receipt_id)
        .map(|e| e["payload"].clone())
        .expect("receipt event")
}

#[test]
fn receipt_lines_leave_the_box_tied_to_a_customer_only_with_profiling_consent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    // `office` is not a category the rules know: flagged only where lines go.
    let policy = Policy {
        limits: ReceiptLimits {
            currency: "EUR".into(),
            max_total: Money(10_000_000),
            known_categories: ["food".to_string()].into_iter().collect(),
        },
        ..Policy::default()
    };
    store
        .apply_changes(&page(
            "1",
            vec![
                customer("YES", "2990000000019", Some((false, true))),
                customer("NO", "2990000000026", Some((true, false))),
                customer("UNKNOWN", "2990000000033", None),
            ],
        ))
        .expect("customers");
    let local = store.enroll("2990000000040", now()).expect("enroll").id;
    let lines = || vec![line("4006381333931", 1500, Some("office"))];
    for (receipt_id, customer) in [
        ("R-YES", Some("YES")),
        ("R-NO", Some("NO")),
        ("R-UNKNOWN", Some("UNKNOWN")),
        ("R-LOCAL", Some(local.as_str())),
        ("R-ANON", None),
    ] {
        store
            .apply_receipt(&sale(receipt_id, lines()), customer, &policy, now())
            .expect("sale");
    }
    let linked = receipt_event(&store, "R-YES");
    assert_eq!(linked["customer_id"], "YES");
    assert_eq!(linked["lines"][0]["sku"], "4006381333931");
    assert_eq!(linked["unknown_categories"], serde_json::json!(["office"]));
    assert!(linked.get("lines_withheld").is_none());
    let anonymous = receipt_event(&store, "R-ANON");
    assert_eq!(anonymous["customer_id"], serde_json::Value::Null);
    assert_eq!(anonymous["lines"][0]["sku"], "4006381333931");
    for (receipt_id, customer) in [
        ("R-NO", "NO"),
        ("R-UNKNOWN", "UNKNOWN"),
        ("R-LOCAL", local.as_str()),
    ] {
        let payload = receipt_event(&store, receipt_id);
        assert_eq!(payload["customer_id"], customer, "{payload}");
        assert_eq!(payload["lines"], serde_json::json!([]), "{payload}");
        assert_eq!(payload["lines_withheld"], true, "{payload}");
        assert!(payload.get("unknown_categories").is_none(), "{payload}");
        assert_eq!(
            (payload["total"].as_str(), payload["points"].as_i64()),
            (Some("15.00"), Some(15))
        );
        // The store keeps the lines (returns need them); only the event goes without.
        let kept = store.receipt(receipt_id).expect("read").expect("stored");
        assert_eq!(kept.lines.len(), 1);
    }
    // A return is the sale customer's: her consent decides, whoever hands it in.
    for original in ["R-NO", "R-YES"] {
        let return_id = format!("{original}-BACK");
        store
            .apply_receipt(&ret(&return_id, original, lines()), None, &policy, now())
            .expect("return");
        let payload = receipt_event(&store, &return_id);
        let withheld = original == "R-NO";
        assert_eq!(payload["lines_withheld"] == true, withheld, "{payload}");
        assert_eq!(
            payload["lines"].as_array().map(Vec::len),
            Some(usize::from(!withheld))
        );
        assert_eq!(payload["points"], -15);
    }
    // Consent given later: the next receipt carries lines (nothing earlier is re-sent).
    store
        .apply_changes(&page(
            "2",
            vec![customer("NO", "2990000000026", Some((true, true)))],
        ))
        .expect("consent given");
    store
        .apply_receipt(&sale("R-NO-2", lines()), Some("NO"), &policy, now())
        .expect("sale");
    assert_eq!(
        receipt_event(&store, "R-NO-2")["lines"][0]["sku"],
        "4006381333931"
    );
}

#[test]
fn a_cardless_sale_attached_to_a_customer_without_consent_loses_its_unsent_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let policy = Policy::default();
    store
        .apply_changes(&page(
            "1",
            vec![
                customer("NO", "2990000000026", Some((true, false))),
                customer("YES", "2990000000019", Some((true, true))),
            ],
        ))
        .expect("customers");
    let lines = || vec![line("4006381333931", 1500, Some("office"))];
    // Sent already: the attach cannot take the lines back (documented residue).
    store
        .apply_receipt(&sale("SENT", lines()), None, &policy, now())
        .expect("sale");
    let last = store.outbox_stats().expect("stats").last_seq;
    store.outbox_ack(last).expect("ack");
    for id in ["UNSENT", "UNSENT-YES"] {
        store
            .apply_receipt(&sale(id, lines()), None, &policy, now())
            .expect("sale");
    }
    for (id, customer) in [("SENT", "NO"), ("UNSENT", "NO"), ("UNSENT-YES", "YES")] {
        let attached = store
            .attach_customer(id, customer, &policy, now())
            .expect("attach");
        assert_eq!(attached.earned, 15);
    }
    let unsent = receipt_event(&store, "UNSENT");
    assert_eq!(unsent["customer_id"], "NO", "{unsent}");
    assert_eq!(unsent["lines"], serde_json::json!([]));
    assert_eq!(unsent["lines_withheld"], true);
    let consenting = receipt_event(&store, "UNSENT-YES");
    assert_eq!(consenting["customer_id"], serde_json::Value::Null);
    assert_eq!(consenting["lines"][0]["sku"], "4006381333931");
    assert_eq!(
        receipt_event(&store, "SENT")["lines"][0]["sku"],
        "4006381333931"
    );
    // The store keeps the lines; the attach is idempotent.
    assert_eq!(
        store
            .receipt("UNSENT")
            .expect("read")
            .expect("kept")
            .lines
            .len(),
        1
    );
    let again = store
        .attach_customer("UNSENT", "NO", &policy, now())
        .expect("again");
    assert!(again.duplicate);
}
