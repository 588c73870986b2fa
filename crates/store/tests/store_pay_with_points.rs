//! Pay with points on a real sled database in a temp dir: a reservation is taken against the
//! available points (balance less other open holds) and never below zero; it is idempotent per
//! reference; two threads racing for the same points get exactly one hold; the receipt naming
//! it commits it once in its own transaction (journal entry and `ledger` event once, a
//! redelivered receipt changes nothing); a receipt naming an unknown, released or expired
//! reference is applied all the same; a void releases the lane's holds; the sweep expires
//! holds and they never commit; a reopen keeps an open hold, which the receipt then commits.

#[allow(dead_code)] // each test binary uses some of them
#[path = "../../tools/src/testkit/store.rs"]
mod store_support;

use jiff::{SignedDuration, Timestamp};
use loyalty_core::money::Money;
use loyalty_core::redemption::Status;
use loyalty_store::events::EventType;
use loyalty_store::reservations::Reserve;
use loyalty_store::Store;
use serde_json::Value;
use store_support::*;

fn ledger_events(store: &Store) -> Vec<Value> {
    store
        .outbox_after(0, 10_000)
        .expect("outbox")
        .into_iter()
        .filter(|e| e.kind == EventType::Ledger)
        .map(|e| e.json["payload"].clone())
        .collect()
}

fn later(minutes: i64) -> Timestamp {
    now() + SignedDuration::from_mins(minutes)
}

fn ask<'a>(reference: &'a str, lane: &'a str, customer_id: &'a str, points: i64) -> Reserve<'a> {
    Reserve {
        reference,
        lane,
        customer_id,
        points,
        discount: Money(points),
        until: later(15),
    }
}

/// A customer with `points` available (a sale of `points` euros).
fn customer_with(store: &Store, card: &str, points: i64) -> String {
    let c = store.enroll(card, now()).expect("enroll").id;
    store
        .apply_receipt(
            &sale(&format!("EARN-{card}"), vec![line("a", points * 100, None)]),
            Some(&c),
            &Policy::default(),
            now(),
        )
        .expect("sale");
    c
}

fn paying(id: &str, references: &[&str]) -> loyalty_core::receipt::Receipt {
    let mut receipt = sale(id, vec![line("a", 1000, None)]);
    receipt.redemptions = references.iter().map(|r| r.to_string()).collect();
    receipt
}

#[test]
fn a_reservation_holds_points_and_the_receipt_commits_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let policy = Policy::default();
    let c = customer_with(&store, "2990000000019", 100);

    let held = store
        .reserve_points(&ask("PAY-1", "1", &c, 60), now())
        .expect("reserve");
    assert_eq!(held.status, Status::Reserved);
    assert_eq!(held.available, Some(40));
    assert_eq!(store.available_points(&c, now()).expect("available"), 40);
    // The same request again: the same answer, nothing more held.
    let again = store
        .reserve_points(&ask("PAY-1", "1", &c, 60), now())
        .expect("again");
    assert_eq!((again.status, again.points), (Status::Reserved, 60));
    assert_eq!(store.available_points(&c, now()).expect("available"), 40);
    // The reference for other points: a conflict.
    let other = store
        .reserve_points(&ask("PAY-1", "1", &c, 10), now())
        .expect("conflict");
    assert_eq!(other.status, Status::Conflict);
    // More than is available: refused, nothing held.
    let big = store
        .reserve_points(&ask("PAY-2", "2", &c, 41), now())
        .expect("big");
    assert_eq!(
        (big.status, big.available),
        (Status::Insufficient, Some(40))
    );
    assert_eq!(
        store
            .reserve_points(&ask("PAY-3", "2", "nobody", 1), now())
            .expect("nobody")
            .status,
        Status::UnknownCustomer
    );
    let ledger_before = ledger_events(&store).len();

    // The receipt (its own 10 points earned) commits the 60.
    let applied = store
        .apply_receipt(&paying("S-1", &["PAY-1"]), Some(&c), &policy, later(1))
        .expect("receipt");
    assert_eq!(applied.earned, 10);
    assert_eq!(applied.redemptions.len(), 1);
    assert_eq!(applied.redemptions[0].status, Status::Committed);
    assert_eq!(applied.redemptions[0].points, 60);
    assert_eq!(applied.balance.map(|b| b.total), Some(50));
    assert_eq!(store.balance(&c, later(1)).expect("balance").total, 50);
    let ledger = ledger_events(&store);
    assert_eq!(ledger.len(), ledger_before + 2, "earn + redeem");
    let redeem = ledger.last().expect("redeem event");
    assert_eq!(redeem["kind"], "redeem");
    assert_eq!(redeem["points"], -60);
    assert_eq!(redeem["reference"], "PAY-1");
    assert_eq!(redeem["cause_receipt_id"], "S-1");

    // Redelivered: the first answer, nothing new.
    let dup = store
        .apply_receipt(&paying("S-1", &["PAY-1"]), Some(&c), &policy, later(2))
        .expect("duplicate");
    assert!(dup.duplicate);
    assert_eq!(dup.redemptions, applied.redemptions);
    assert_eq!(ledger_events(&store).len(), ledger.len());
    // Another receipt naming it: applied, not committed again.
    let other = store
        .apply_receipt(
            &paying("S-2", &["PAY-1", "NOPE"]),
            Some(&c),
            &policy,
            later(3),
        )
        .expect("second receipt");
    assert!(!other.duplicate);
    let statuses: Vec<_> = other.redemptions.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Status::Conflict, Status::Unknown]);
    assert_eq!(store.balance(&c, later(3)).expect("balance").total, 60);
    // The request again answers `committed`.
    let asked = store
        .reserve_points(&ask("PAY-1", "1", &c, 60), later(4))
        .expect("asked");
    assert_eq!(asked.status, Status::Committed);
    assert!(store.verify().expect("verify").is_consistent());
}

#[test]
fn two_lanes_racing_for_the_same_points_get_exactly_one_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let c = customer_with(&store, "2990000000019", 100);
    for round in 0..20 {
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<Status> = std::thread::scope(|s| {
            let handles: Vec<_> = ["1", "2"]
                .iter()
                .map(|lane| {
                    let (store, barrier, c) = (&store, &barrier, &c);
                    s.spawn(move || {
                        let reference = format!("R{round}-{lane}");
                        barrier.wait();
                        store
                            .reserve_points(&ask(&reference, lane, c, 80), now())
                            .expect("reserve")
                            .status
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let won = results.iter().filter(|s| **s == Status::Reserved).count();
        let lost = results
            .iter()
            .filter(|s| **s == Status::Insufficient)
            .count();
        assert_eq!((won, lost), (1, 1), "round {round}: {results:?}");
        // Voided on both lanes for the next round.
        store.release_lane_points("1", now()).expect("void 1");
        store.release_lane_points("2", now()).expect("void 2");
        assert_eq!(store.available_points(&c, now()).expect("available"), 100);
    }
}

#[test]
fn void_and_expiry_release_and_a_released_or_expired_hold_never_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let policy = Policy::default();
    let c = customer_with(&store, "2990000000019", 100);
    store
        .reserve_points(&ask("V-1", "1", &c, 30), now())
        .expect("v1");
    store
        .reserve_points(&ask("V-2", "1", &c, 20), now())
        .expect("v2");
    store
        .reserve_points(&ask("E-1", "2", &c, 50), now())
        .expect("e1");
    assert_eq!(store.available_points(&c, now()).expect("available"), 0);
    assert_eq!(store.open_reservations().expect("open").count, 3);

    let mut released = store.release_lane_points("1", now()).expect("void");
    released.sort();
    assert_eq!(released, vec!["V-1".to_string(), "V-2".to_string()]);
    assert_eq!(store.available_points(&c, now()).expect("available"), 50);
    assert!(store
        .release_lane_points("1", now())
        .expect("again")
        .is_empty());

    // Past its expiry the hold no longer counts, even before the sweep.
    assert_eq!(
        store.available_points(&c, later(16)).expect("available"),
        100
    );
    let swept = store.sweep_reservations(later(16)).expect("sweep");
    assert_eq!(swept.expired, vec!["E-1".to_string()]);
    assert_eq!(store.open_reservations().expect("open").count, 0);
    assert_eq!(
        store
            .reservation("E-1", later(16))
            .expect("read")
            .map(|r| r.status),
        Some(Status::Expired)
    );

    let applied = store
        .apply_receipt(
            &paying("S-1", &["V-1", "E-1"]),
            Some(&c),
            &policy,
            later(17),
        )
        .expect("applied all the same");
    let statuses: Vec<_> = applied.redemptions.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Status::Released, Status::Expired]);
    assert_eq!(applied.earned, 10);
    assert_eq!(store.balance(&c, later(17)).expect("balance").total, 110);

    // An unswept hold past its expiry does not commit either.
    store
        .reserve_points(&ask("E-2", "3", &c, 10), later(17))
        .expect("e2");
    let late = store
        .apply_receipt(&paying("S-2", &["E-2"]), Some(&c), &policy, later(40))
        .expect("late receipt");
    assert_eq!(late.redemptions[0].status, Status::Expired);
    assert_eq!(store.open_reservations().expect("open").count, 0);
    // Closed records are pruned after 30 days.
    let month = now() + SignedDuration::from_hours(31 * 24);
    assert!(store.sweep_reservations(month).expect("prune").pruned >= 4);
    assert_eq!(store.reservation("V-1", month).expect("read"), None);
    assert!(store.verify().expect("verify").is_consistent());
}

#[test]
fn an_open_hold_survives_a_reopen_and_its_receipt_commits_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = {
        let store = open(dir.path());
        let c = customer_with(&store, "2990000000019", 100);
        store
            .reserve_points(&ask("K-1", "1", &c, 70), now())
            .expect("reserve");
        c
    };
    let store = open(dir.path());
    assert_eq!(store.available_points(&c, now()).expect("available"), 30);
    // Points held for a payment are not converted, and a hold never goes below zero.
    assert_eq!(
        store
            .reserve_points(&ask("K-2", "2", &c, 31), now())
            .expect("k2")
            .status,
        Status::Insufficient
    );
    let policy = Policy::default();
    let applied = store
        .apply_receipt(&paying("S-K", &["K-1"]), Some(&c), &policy, later(5))
        .expect("receipt");
    assert_eq!(applied.redemptions[0].status, Status::Committed);
    assert_eq!(store.balance(&c, later(5)).expect("balance").total, 40);
    let redeems = ledger_events(&store)
        .into_iter()
        .filter(|e| e["kind"] == "redeem")
        .count();
    assert_eq!(redeems, 1);
}
