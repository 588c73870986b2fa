//! The store's figures (`figures` tree): counted in the transaction of the receipt, the ledger
//! entry, the enrolment or the voucher, read back per hour, and the points outstanding filled
//! from the journal for a database that had none.

#[allow(dead_code)] // each test binary uses some of them
#[path = "../../tools/src/testkit/store.rs"]
mod store_support;

use loyalty_core::figures::{aggregate, period_start, Metric};
use store_support::*;

#[test]
fn receipts_points_and_members_are_counted_with_what_they_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let policy = Policy::default();
    let tz = jiff::tz::TimeZone::UTC;
    let today = now().to_zoned(tz.clone()).date();
    let anna = store.enroll("2990000000019", now()).expect("enroll");
    store
        .apply_receipt(
            &sale("R-1", vec![line("a", 1250, None)]),
            Some(&anna.id),
            &policy,
            now(),
        )
        .expect("member sale");
    store
        .apply_receipt(
            &sale("R-2", vec![line("b", 400, None)]),
            None,
            &policy,
            now(),
        )
        .expect("other sale");
    store
        .apply_receipt(
            &sale("R-3", vec![line("c", 600, None)]),
            None,
            &policy,
            now(),
        )
        .expect("other sale");
    // A card scanned after the receipt makes it a member's sale.
    store
        .attach_customer("R-3", &anna.id, &policy, now())
        .expect("attach");
    store
        .redeem_points(&anna.id, 5, "redeem-1", now())
        .expect("redeem");
    // A duplicate counts nothing.
    store
        .apply_receipt(
            &sale("R-2", vec![line("b", 400, None)]),
            None,
            &policy,
            now(),
        )
        .expect("duplicate");

    let counts = store
        .figures_since(period_start(today, 7, &tz))
        .expect("figures");
    let week = aggregate(&counts, today, 7, &tz);
    let total = week.total;
    assert_eq!(total.get(Metric::Receipts), 3);
    assert_eq!(total.get(Metric::MemberReceipts), 2);
    assert_eq!(total.get(Metric::MemberSales), 1850);
    assert_eq!(total.get(Metric::OtherSales), 400);
    assert_eq!(total.get(Metric::Enrolments), 1);
    assert_eq!(total.get(Metric::PointsIssued), 12 + 6);
    assert_eq!(total.get(Metric::PointsRedeemed), 5);
    assert_eq!(week.active_members, 1);
    assert_eq!(week.outstanding, 13);
    assert_eq!(week.average_baskets(), (Some(925), Some(400)));
    assert_eq!(
        store.balance(&anna.id, now()).expect("balance").total,
        week.outstanding
    );

    // A database from before the figures: the outstanding points come from the journal.
    store
        .raw_tree_for_tests("figures")
        .expect("tree")
        .remove(b"o")
        .expect("remove");
    drop(counts);
    drop(store);
    let store = open(dir.path());
    let counts = store
        .figures_since(period_start(today, 1, &tz))
        .expect("figures");
    assert_eq!(counts.outstanding, 13);
}
