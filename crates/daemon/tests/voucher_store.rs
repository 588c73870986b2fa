//! Vouchers on a real sled store: reservation races between lanes, redemption exactly once,
//! replays, minimum spend at the receipt, issuing with points conversion, revocation, goodwill
//! limits, head office's merges, points held for a payment. Across `kill -9`: `voucher_kill.rs`.

use jiff::Timestamp;
use loyalty_core::money::Money;
use loyalty_core::voucher::{Benefit, RedemptionState, Refusal, Verdict};
use loyalty_store::events::EventType;
use loyalty_store::vouchers::IssueError;
use loyalty_store::ReceiptCustomer;
use std::sync::{Arc, Barrier};

mod voucher_support;
use voucher_support::*;

#[test]
fn two_lanes_scanning_at_the_same_moment_exactly_one_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, vouchers) = open(dir.path(), "named");
    for n in 0..8u8 {
        let (id, text) = voucher_text(n, None);
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = ["1", "2"]
            .into_iter()
            .map(|lane| {
                let vouchers = vouchers.clone();
                let barrier = barrier.clone();
                let text = text.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    vouchers.scan(&text, lane, None, t0()).expect("scan")
                })
            })
            .collect();
        let verdicts: Vec<Verdict> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        let winners = verdicts.iter().filter(|v| is_valid(v)).count();
        assert_eq!(winners, 1, "voucher {n}: {verdicts:?}");
        let loser = verdicts.into_iter().find(|v| !is_valid(v)).expect("loser");
        let r = refusal(loser);
        assert!(matches!(r, Refusal::ReservedElsewhere { .. }), "{r:?}");
        assert_eq!(r.status(), "reserved");
        assert!(matches!(
            vouchers.state(&id).expect("state"),
            RedemptionState::Reserved { .. }
        ));
    }
}

#[test]
fn redeemed_once_then_every_scan_says_when_and_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, vouchers) = open(dir.path(), "named");
    let (id, text) = voucher_text(1, Some(2000));
    assert!(is_valid(
        &vouchers.scan(&text, "3", None, t0()).expect("scan")
    ));
    // Same lane again: still valid (renewed); another lane: in use.
    assert!(is_valid(
        &vouchers.scan(&text, "3", None, at(5)).expect("scan")
    ));
    assert!(matches!(
        refusal(vouchers.scan(&text, "4", None, at(6)).expect("scan")),
        Refusal::ReservedElsewhere { lane, .. } if lane == "3"
    ));

    // Minimum spend not met: refused, nothing redeemed, still reserved.
    let small = vouchers
        .commit_receipt(&receipt("R-1", "3", 1999, &[id]), at(10))
        .expect("commit");
    assert!(small.redeemed.is_empty());
    assert!(matches!(
        small.refused[0].1,
        Refusal::MinimumSpendNotMet {
            required: Money(2000),
            spent: Money(1999)
        }
    ));
    assert_eq!(redeemed_events_for(&store, &id), 0);

    let outcome = vouchers
        .commit_receipt(&receipt("R-2", "3", 2500, &[id]), at(20))
        .expect("commit");
    assert_eq!(outcome.redeemed.len(), 1);
    assert_eq!(outcome.redeemed[0].discount, Money(500));
    assert!(!outcome.redeemed[0].duplicate);

    // The same receipt again (redelivered): same answer, nothing new.
    let again = vouchers
        .commit_receipt(&receipt("R-2", "3", 2500, &[id]), at(21))
        .expect("commit");
    assert!(again.redeemed[0].duplicate);
    assert_eq!(redeemed_events_for(&store, &id), 1);

    // Replay anywhere in the store: redeemed, with when and where.
    for lane in ["3", "4", "9"] {
        let r = refusal(vouchers.scan(&text, lane, None, at(30)).expect("scan"));
        assert_eq!(
            r,
            Refusal::AlreadyRedeemed {
                at: at(20),
                lane: "3".into(),
                receipt_id: "R-2".into()
            }
        );
        assert_eq!(r.status(), "redeemed");
    }
    // Another receipt naming it is refused.
    let other = vouchers
        .commit_receipt(&receipt("R-3", "4", 3000, &[id]), at(40))
        .expect("commit");
    assert!(other.redeemed.is_empty());
    assert!(matches!(
        other.refused[0].1,
        Refusal::AlreadyRedeemed { .. }
    ));
    assert_eq!(redeemed_events_for(&store, &id), 1);
    let event = &events_of(&store, EventType::VoucherRedeemed)[0];
    assert_eq!(event["payload"]["discount"], "5.00");
    assert_eq!(event["payload"]["receipt_id"], "R-2");
}

#[test]
fn reservations_end_by_timeout_void_or_next_receipt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, vouchers) = open(dir.path(), "next_receipt");
    let (id, text) = voucher_text(2, None);
    assert!(is_valid(
        &vouchers.scan(&text, "1", None, t0()).expect("scan")
    ));
    // After the timeout (300 s) another lane may take it.
    assert!(!is_valid(
        &vouchers.scan(&text, "2", None, at(299)).expect("scan")
    ));
    assert!(is_valid(
        &vouchers.scan(&text, "2", None, at(301)).expect("scan")
    ));
    // A voided sale releases it at once.
    assert_eq!(vouchers.release_lane("2").expect("release"), vec![id]);
    assert_eq!(vouchers.state(&id).expect("state"), RedemptionState::Free);
    assert!(is_valid(
        &vouchers.scan(&text, "1", None, at(310)).expect("scan")
    ));
    // redeem_on = next_receipt: the lane's next receipt redeems it without naming it.
    let outcome = vouchers
        .commit_receipt(&receipt("R-10", "1", 1000, &[]), at(320))
        .expect("commit");
    assert_eq!(outcome.redeemed.len(), 1);
    assert_eq!(outcome.redeemed[0].voucher_id, id);
    assert_eq!(redeemed_events_for(&store, &id), 1);
}

#[test]
fn issuing_converts_points_once_and_the_voucher_redeems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, vouchers) = open(dir.path(), "named");
    let customer = store.enroll("2990000000019", t0()).expect("enroll");
    store
        .crm_adjustment(&customer.id, 1200, "adj-1", "test points", t0())
        .expect("points");
    let issued = vouchers
        .issue_after_receipt("R-100", &customer.id, at(1))
        .expect("issue");
    assert_eq!(issued.len(), 2);
    assert_eq!(
        store
            .balance(&customer.id, at(2))
            .expect("balance")
            .available,
        200
    );
    // Idempotent per receipt: the same vouchers, no second conversion.
    let again = vouchers
        .issue_after_receipt("R-100", &customer.id, at(3))
        .expect("issue");
    assert_eq!(again, issued);
    assert_eq!(
        store
            .balance(&customer.id, at(4))
            .expect("balance")
            .available,
        200
    );
    assert_eq!(events_of(&store, EventType::VoucherIssued).len(), 2);
    let payload = &events_of(&store, EventType::VoucherIssued)[0]["payload"];
    assert_eq!(payload["value"], "5.00");
    assert_eq!(payload["text"], issued[0].text);
    // Below the threshold: nothing.
    assert!(vouchers
        .issue_after_receipt("R-101", &customer.id, at(5))
        .expect("issue")
        .is_empty());

    // The earned voucher is personal: refused without the card, valid with it.
    let text = &issued[0].text;
    assert_eq!(
        refusal(vouchers.scan(text, "2", None, at(6)).expect("scan")),
        Refusal::CustomerNotIdentified
    );
    assert_eq!(
        refusal(
            vouchers
                .scan(text, "2", Some("someone-else"), at(6))
                .expect("scan")
        ),
        Refusal::BoundToAnotherCustomer
    );
    assert!(is_valid(
        &vouchers
            .scan(text, "2", Some(&customer.id), at(7))
            .expect("scan")
    ));
    let outcome = vouchers
        .commit_receipt(&receipt("R-102", "2", 2500, &[issued[0].voucher.id]), at(8))
        .expect("commit");
    assert_eq!(outcome.redeemed.len(), 1);
}

/// One receipt that names a new card, redeems a voucher and earns one: the enrolment, the
/// points, the redemption and the issue are one transaction made durable by one group commit;
/// delivered again, it changes nothing and answers the same vouchers.
#[test]
fn a_receipt_enrols_redeems_and_issues_in_one_durable_commit() {
    use loyalty_core::ledger::EarningPolicy as _;
    use loyalty_core::receipt::ValidReceipt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, vouchers) = open(dir.path(), "named");
    let (id, text) = voucher_text(7, None);
    assert!(is_valid(
        &vouchers.scan(&text, "1", None, at(1)).expect("scan")
    ));
    let card = "2990000000026";
    let mut sale = receipt("R-700", "1", 60_000, &[id]);
    sale.card = Some(card.into());
    let policy = store_support::Policy::default();
    let sale = ValidReceipt::check(sale, policy.limits()).expect("valid");
    let customer = ReceiptCustomer::Card { card, enrol: true };

    let before = store.durability_stats();
    let seq_before = store.outbox_stats().expect("stats").last_seq;
    let applied = store
        .apply_valid_receipt(&sale, customer, &policy, Some(&vouchers), at(2))
        .expect("apply");
    let after = store.durability_stats();
    assert_eq!(after.tickets - before.tickets, 1, "one durable commit");
    assert_eq!(after.commits - before.commits, 1, "one group commit");

    let enrolled = store
        .customer_by_card(card)
        .expect("read")
        .expect("enrolled");
    assert_eq!(
        applied.outcome.customer_id.as_deref(),
        Some(enrolled.id.as_str())
    );
    assert_eq!(
        (applied.outcome.earned, applied.outcome.duplicate),
        (600, false)
    );
    assert_eq!(applied.vouchers.commit.redeemed.len(), 1);
    assert!(applied.vouchers.commit.refused.is_empty());
    assert_eq!(applied.vouchers.issued.len(), 1);
    assert_eq!(applied.vouchers.balance_after_issue, Some(100));
    assert!(matches!(
        vouchers.state(&id).expect("state"),
        RedemptionState::Redeemed { .. }
    ));
    // Enrolled, receipt, earn, redeemed, conversion, issued: six events, in that order.
    let kinds: Vec<EventType> = store
        .outbox_after(seq_before, 100)
        .expect("outbox")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventType::CustomerEnrolled,
            EventType::Ledger,
            EventType::Receipt,
            EventType::VoucherRedeemed,
            EventType::Ledger,
            EventType::VoucherIssued,
        ]
    );

    // Redelivered: the same answer (same voucher ids), nothing new written.
    let seq_after = store.outbox_stats().expect("stats").last_seq;
    let again = store
        .apply_valid_receipt(&sale, customer, &policy, Some(&vouchers), at(3))
        .expect("apply again");
    assert!(again.outcome.duplicate);
    assert_eq!(again.outcome.customer_id, applied.outcome.customer_id);
    assert_eq!(again.vouchers.issued, applied.vouchers.issued);
    assert_eq!(again.vouchers.balance_after_issue, Some(100));
    assert!(again.vouchers.commit.redeemed.iter().all(|r| r.duplicate));
    assert_eq!(store.outbox_stats().expect("stats").last_seq, seq_after);
    let report = store.verify().expect("verify");
    assert!(report.is_consistent(), "{report}");
}

#[test]
fn no_voucher_is_issued_on_an_untrusted_clock_and_the_points_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, vouchers) = open(dir.path(), "named");
    let customer = store.enroll("2990000000019", t0()).expect("enroll");
    store
        .crm_adjustment(&customer.id, 600, "adj-1", "test points", t0())
        .expect("points");
    let untrusted = vouchers
        .stamped(false)
        .issue_after_receipt("R-100", &customer.id, at(1))
        .expect("issue");
    assert!(untrusted.is_empty(), "{untrusted:?}");
    assert_eq!(
        store
            .balance(&customer.id, at(2))
            .expect("balance")
            .available,
        600
    );
    assert!(events_of(&store, EventType::VoucherIssued).is_empty());
    // The next sale with a trusted clock converts them.
    let issued = vouchers
        .issue_after_receipt("R-101", &customer.id, at(3))
        .expect("issue");
    assert_eq!(issued.len(), 1);
    assert_eq!(
        store
            .balance(&customer.id, at(4))
            .expect("balance")
            .available,
        100
    );
}

#[test]
fn revocation_stops_scans_and_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, vouchers) = open(dir.path(), "named");
    let (reserved_id, reserved) = voucher_text(3, None);
    let (other_id, other) = voucher_text(4, None);
    assert!(is_valid(
        &vouchers.scan(&reserved, "1", None, t0()).expect("scan")
    ));
    let report = vouchers
        .revoke(
            &[reserved_id.to_string(), other_id.to_string(), "junk".into()],
            at(1),
        )
        .expect("revoke");
    assert_eq!(report.revoked, 2);
    assert_eq!(report.unparsable, vec!["junk".to_string()]);
    assert_eq!(
        vouchers
            .revoke(&[other_id.to_string()], at(2))
            .expect("revoke")
            .already,
        1
    );
    assert_eq!(
        refusal(vouchers.scan(&other, "1", None, at(3)).expect("scan")),
        Refusal::Revoked
    );
    let outcome = vouchers
        .commit_receipt(&receipt("R-1", "1", 5000, &[reserved_id]), at(4))
        .expect("commit");
    assert_eq!(outcome.refused[0].1, Refusal::Revoked);
}

#[test]
fn goodwill_is_capped_and_nothing_is_written_above_the_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, vouchers) = open(dir.path(), "named");
    let before = store.outbox_after(0, 1000).expect("outbox").len();
    assert!(matches!(
        vouchers.issue_goodwill("10.01", None, None, t0()),
        Err(IssueError::AboveGoodwillMax { .. })
    ));
    assert!(matches!(
        vouchers.issue_goodwill("-1", None, None, t0()),
        Err(IssueError::BadValue(_))
    ));
    assert_eq!(store.outbox_after(0, 1000).expect("outbox").len(), before);
    let issued = vouchers
        .issue_goodwill("10.00", None, Some(7), t0())
        .expect("goodwill");
    assert_eq!(issued.voucher.benefit, Benefit::AmountOff(Money(1000)));
    assert_eq!(
        vouchers.issued(&issued.voucher.id).expect("read"),
        Some(issued.clone())
    );
    assert_eq!(events_of(&store, EventType::VoucherIssued).len(), 1);
    assert!(is_valid(
        &vouchers
            .scan(&issued.text, "1", None, at(60))
            .expect("scan")
    ));
    // Expired after 7 days (through the end of the 7th day, Berlin time).
    assert!(matches!(
        refusal(
            vouchers
                .scan(&issued.text, "2", None, at(9 * 86_400))
                .expect("scan")
        ),
        Refusal::Expired { .. }
    ));
}

#[test]
fn untrusted_clock_uses_the_stored_floor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, vouchers) = open(dir.path(), "named");
    let (_, text) = voucher_text(5, None);
    // A Pi that booted in 2030 by mistake, untrusted: the voucher (ends 2027-02-01) is not
    // expired on that clock alone...
    let future: Timestamp = "2030-01-01T00:00:00Z".parse().expect("time");
    assert!(is_valid(
        &vouchers
            .stamped(false)
            .scan(&text, "1", None, future)
            .expect("scan")
    ));
    vouchers.release_lane("1").expect("release");
    // ...but once a trusted time past its end has been seen, it is expired for sure.
    vouchers
        .observe_trusted_time("2027-03-01T00:00:00Z".parse().expect("time"))
        .expect("observe");
    let past: Timestamp = "1970-01-02T00:00:00Z".parse().expect("time");
    assert!(matches!(
        refusal(
            vouchers
                .stamped(false)
                .scan(&text, "1", None, past)
                .expect("scan")
        ),
        Refusal::Expired { .. }
    ));
}

#[test]
fn a_voucher_bound_to_a_customer_merged_at_head_office_is_hers() {
    use loyalty_store::sync_state::{ChangeSet, CrmMerge};
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, vouchers) = open(dir.path(), "named");
    let old = store.enroll("2990000000019", t0()).expect("enroll").id;
    let survivor = store.enroll("2990000000026", t0()).expect("enroll").id;
    let issued = vouchers
        .issue_goodwill("5.00", Some(&old), Some(30), t0())
        .expect("goodwill");
    // Someone else's voucher is refused before the merge.
    assert!(matches!(
        refusal(
            vouchers
                .scan(&issued.text, "1", Some(&survivor), at(60))
                .expect("scan")
        ),
        Refusal::BoundToAnotherCustomer
    ));
    store
        .apply_changes(&ChangeSet {
            cursor: "1".into(),
            now: t0(),
            merged: vec![CrmMerge {
                from: old.clone(),
                into: survivor.clone(),
            }],
            customers: vec![],
            adjustments: vec![],
            erased: vec![],
            revoked_vouchers: vec![],
            keys: vec![],
            rules_json: None,
            rules_rejection: None,
            offers: Vec::new(),
            clips: Vec::new(),
        })
        .expect("merge");
    // Her old card now identifies the survivor, whose voucher it is.
    let holder = store
        .customer_by_card("2990000000019")
        .expect("lookup")
        .expect("known");
    assert_eq!(holder.id, survivor);
    assert!(is_valid(
        &vouchers
            .scan(&issued.text, "1", Some(&survivor), at(120))
            .expect("scan")
    ));
}

/// Pay with points: points held for a payment at a lane are not converted into a voucher by
/// another receipt meanwhile; once the hold is released (a void), they are.
#[test]
fn points_held_for_a_payment_are_not_converted_into_vouchers() {
    use loyalty_core::ledger::EarningPolicy as _;
    use loyalty_core::receipt::ValidReceipt;
    use loyalty_store::reservations::Reserve;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, vouchers) = open(dir.path(), "named");
    let policy = store_support::Policy::default();
    let c = store.enroll("2990000000026", at(0)).expect("enroll").id;
    store
        .apply_receipt(&receipt("R-H1", "1", 45_000, &[]), Some(&c), &policy, at(0))
        .expect("450 points");
    let held = store
        .reserve_points(
            &Reserve {
                reference: "PAY-H",
                lane: "2",
                customer_id: &c,
                points: 100,
                discount: Money(100),
                until: at(900),
            },
            at(1),
        )
        .expect("reserve");
    assert_eq!(held.available, Some(350));
    // 100 more earned: 550 on the balance, but only 450 not held: below the 500 of a voucher.
    let sale =
        ValidReceipt::check(receipt("R-H2", "1", 10_000, &[]), policy.limits()).expect("valid");
    let applied = store
        .apply_valid_receipt(
            &sale,
            ReceiptCustomer::Id(&c),
            &policy,
            Some(&vouchers),
            at(2),
        )
        .expect("apply");
    assert_eq!(applied.outcome.earned, 100);
    assert!(applied.vouchers.issued.is_empty(), "held points converted");
    assert_eq!(store.available_points(&c, at(3)).expect("available"), 450);
    // Voided: the next sale converts them.
    assert_eq!(
        store.release_lane_points("2", at(4)).expect("void"),
        vec!["PAY-H".to_string()]
    );
    let sale =
        ValidReceipt::check(receipt("R-H3", "1", 2_000, &[]), policy.limits()).expect("valid");
    let applied = store
        .apply_valid_receipt(
            &sale,
            ReceiptCustomer::Id(&c),
            &policy,
            Some(&vouchers),
            at(5),
        )
        .expect("apply");
    assert_eq!(applied.vouchers.issued.len(), 1);
    assert_eq!(applied.vouchers.balance_after_issue, Some(70));
}
