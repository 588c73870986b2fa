//! Returns after points were converted into a voucher, on a real sled database in a temp dir:
//! the balance never goes below zero, what the return could not claw back is owed and paid
//! first from the customer's next earnings, the CRM sees every point move exactly (the
//! clawbacks of a return add up to what it clawed), and the owed points survive a reopen.

// The testkit's store helpers, included by path: the store may not depend on loyalty-tools.
#[allow(dead_code)] // each test binary uses some of them
#[path = "../../tools/src/testkit/store.rs"]
mod store_support;

use loyalty_store::events::EventType;
use serde_json::Value;
use store_support::*;

/// The `ledger` events' payloads of the outbox.
fn ledger_events(store: &loyalty_store::Store) -> Vec<Value> {
    store
        .outbox_after(0, 10_000)
        .expect("outbox")
        .into_iter()
        .filter(|e| e.kind == EventType::Ledger)
        .map(|e| e.json["payload"].clone())
        .collect()
}

#[test]
fn a_return_after_conversion_floors_the_balance_at_zero_and_next_earnings_pay_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = Policy::default();
    let c = {
        let store = open(dir.path());
        let c = store.enroll("2990000000019", now()).expect("enroll").id;
        // 30 points earned, 25 converted into a voucher (handed to the customer).
        store
            .apply_receipt(
                &sale("S-1", vec![line("a", 3000, None)]),
                Some(&c),
                &policy,
                now(),
            )
            .expect("sale");
        store
            .convert_to_voucher(&c, 25, "V-1", now())
            .expect("convert");
        assert_eq!(store.balance(&c, now()).expect("balance").total, 5);
        // The whole sale comes back: 30 to claw back, 5 on the balance.
        let back = store
            .apply_receipt(
                &ret("RET-1", "S-1", vec![line("a", 3000, None)]),
                None,
                &policy,
                now(),
            )
            .expect("return");
        assert_eq!(
            back.earned, -30,
            "the return clawed back what the sale earned"
        );
        assert_eq!(back.balance.map(|b| b.total), Some(0), "never below zero");
        assert_eq!(store.balance(&c, now()).expect("balance").total, 0);
        let ledger = ledger_events(&store);
        let claw = ledger.last().expect("the clawback");
        assert_eq!(claw["kind"], "clawback");
        assert_eq!(claw["points"], -5);
        assert_eq!(claw["owed"], 25);
        assert_eq!(claw["cause_receipt_id"], "RET-1");
        assert!(store.verify().expect("verify").is_consistent());
        c
    };

    // Reopened (the debt is stored with the account): the next sale earns 10, all of which
    // pay the debt; the one after earns 20, 15 pay the rest.
    let store = open(dir.path());
    let s2 = store
        .apply_receipt(
            &sale("S-2", vec![line("a", 1000, None)]),
            Some(&c),
            &policy,
            now(),
        )
        .expect("sale 2");
    assert_eq!(
        s2.earned, 10,
        "the sale's own points are reported as earned"
    );
    assert_eq!(s2.balance.map(|b| b.total), Some(0));
    let s3 = store
        .apply_receipt(
            &sale("S-3", vec![line("a", 2000, None)]),
            Some(&c),
            &policy,
            now(),
        )
        .expect("sale 3");
    assert_eq!(s3.balance.map(|b| b.total), Some(5));
    // Paid off: the next earnings stay whole.
    let s4 = store
        .apply_receipt(
            &sale("S-4", vec![line("a", 700, None)]),
            Some(&c),
            &policy,
            now(),
        )
        .expect("sale 4");
    assert_eq!(s4.balance.map(|b| b.total), Some(12));

    // What the CRM sees: every entry exact; the return's clawbacks add up to 30, each
    // collection names the sale whose points paid it.
    let ledger = ledger_events(&store);
    let of_return: Vec<&Value> = ledger
        .iter()
        .filter(|e| e["kind"] == "clawback" && e["cause_receipt_id"] == "RET-1")
        .collect();
    let clawed: i64 = of_return
        .iter()
        .map(|e| e["points"].as_i64().expect("points"))
        .sum();
    assert_eq!(clawed, -30);
    let collections: Vec<(String, i64)> = of_return[1..]
        .iter()
        .map(|e| {
            assert_eq!(e["receipt_id"], "S-1");
            assert!(e.get("owed").is_none());
            (
                e["reference"].as_str().expect("reference").to_string(),
                e["points"].as_i64().expect("points"),
            )
        })
        .collect();
    assert_eq!(
        collections,
        vec![("S-2".to_string(), -10), ("S-3".to_string(), -15)]
    );
    let sum: i64 = ledger
        .iter()
        .map(|e| e["points"].as_i64().expect("points"))
        .sum();
    assert_eq!(sum, 12, "the ledger's entries add up to the balance");
    assert!(store.verify().expect("verify").is_consistent());
}

#[test]
fn a_return_the_balance_covers_is_clawed_at_once_and_owes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let policy = Policy::default();
    let c = store.enroll("2990000000019", now()).expect("enroll").id;
    for (id, amount) in [("S-1", 3000), ("S-2", 4000)] {
        store
            .apply_receipt(
                &sale(id, vec![line("a", amount, None)]),
                Some(&c),
                &policy,
                now(),
            )
            .expect("sale");
    }
    store
        .apply_receipt(
            &ret("RET-1", "S-1", vec![line("a", 3000, None)]),
            None,
            &policy,
            now(),
        )
        .expect("return");
    assert_eq!(store.balance(&c, now()).expect("balance").total, 40);
    let claw = ledger_events(&store).pop().expect("clawback");
    assert_eq!(claw["points"], -30);
    assert!(claw.get("owed").is_none(), "{claw}");
    // The next sale's points stay whole.
    let s3 = store
        .apply_receipt(
            &sale("S-3", vec![line("a", 1000, None)]),
            Some(&c),
            &policy,
            now(),
        )
        .expect("sale");
    assert_eq!(s3.balance.map(|b| b.total), Some(50));
}
