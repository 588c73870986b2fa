//! Receipt retention (`storage.receipt_retention_days`) on a real sled database in a temp dir:
//! receipts older than the retention are pruned once the CRM acknowledged them, an old receipt
//! the CRM has not acknowledged is kept, a return inside the window still claws back, the
//! journal still verifies, and what was pruned stays pruned after a reopen.

// The testkit's store helpers, included by path: the store may not depend on loyalty-tools.
#[allow(dead_code)] // each test binary uses some of them
#[path = "../../tools/src/testkit/store.rs"]
mod store_support;

use jiff::SignedDuration;
use loyalty_store::{PruneReport, StorageConfig, Store};
use std::path::Path;
use store_support::*;

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

fn open_keeping(dir: &Path, retention_days: u32) -> Store {
    let config = StorageConfig {
        receipt_retention_days: retention_days,
        ..config(dir)
    };
    Store::open(&config, "S1").expect("open")
}

#[test]
fn old_synced_receipts_are_pruned_unsynced_ones_kept_and_returns_in_the_window_claw_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = Policy::default();
    let today = now();
    let c = {
        let store = open_keeping(dir.path(), 30);
        let c = store
            .enroll("2990000000019", today - days(200))
            .expect("enroll")
            .id;
        let apply = |id: &str, at| {
            store
                .apply_receipt(
                    &sale(id, vec![line("a", 1000, None)]),
                    Some(&c),
                    &policy,
                    at,
                )
                .expect("sale")
        };
        apply("OLD-SYNCED", today - days(100));
        // The CRM acknowledged everything so far.
        let last = store.outbox_stats().expect("stats").last_seq;
        store.outbox_ack(last).expect("ack");
        apply("OLD-UNSYNCED", today - days(90));
        apply("RECENT", today - days(10));
        // Nothing is pruned without a retention.
        drop(store);
        let forever = open_keeping(dir.path(), 0);
        assert_eq!(
            forever.prune_receipts(today).expect("prune"),
            PruneReport::default()
        );
        assert!(forever.receipt("OLD-SYNCED").expect("read").is_some());
        c
    };

    let store = open_keeping(dir.path(), 30);
    let report = store.prune_receipts(today).expect("prune");
    assert_eq!(
        report,
        PruneReport {
            removed: 1,
            kept_unsynced: 1
        }
    );
    assert!(store.receipt("OLD-SYNCED").expect("read").is_none());
    assert!(
        store.receipt("OLD-UNSYNCED").expect("read").is_some(),
        "the CRM has not acknowledged it"
    );
    assert!(store.receipt("RECENT").expect("read").is_some());
    // The balance is the journal's, untouched by pruning.
    assert_eq!(store.balance(&c, today).expect("balance").total, 30);

    // A return inside the window finds its sale and claws back.
    let back = store
        .apply_receipt(
            &ret("RET-1", "RECENT", vec![line("a", 1000, None)]),
            None,
            &policy,
            today,
        )
        .expect("return");
    assert_eq!(back.earned, -10);
    assert_eq!(back.customer_id.as_deref(), Some(c.as_str()));
    assert_eq!(store.balance(&c, today).expect("balance").total, 20);
    let verify = store.verify().expect("verify");
    assert!(verify.is_consistent(), "{:?}", verify.problems);

    // A return of a pruned sale (outside the window) finds nothing to claw back: the balance
    // stays, the return is stored and answered as of an unknown sale.
    let late = store
        .apply_receipt(
            &ret("RET-OLD", "OLD-SYNCED", vec![line("a", 1000, None)]),
            None,
            &policy,
            today,
        )
        .expect("late return");
    assert_eq!((late.earned, late.customer_id.as_deref()), (0, None));
    assert_eq!(late.note, Some(loyalty_store::OutcomeNote::OriginalUnknown));
    assert_eq!(store.balance(&c, today).expect("balance").total, 20);

    // Once the CRM acknowledged the rest, the old one goes too; durable across a reopen.
    let last = store.outbox_stats().expect("stats").last_seq;
    store.outbox_ack(last).expect("ack");
    assert_eq!(store.prune_receipts(today).expect("prune").removed, 1);
    drop(store);
    let store = open_keeping(dir.path(), 30);
    for gone in ["OLD-SYNCED", "OLD-UNSYNCED"] {
        assert!(store.receipt(gone).expect("read").is_none(), "{gone}");
    }
    for kept in ["RECENT", "RET-1", "RET-OLD"] {
        assert!(store.receipt(kept).expect("read").is_some(), "{kept}");
    }
    let verify = store.verify().expect("verify");
    assert!(verify.is_consistent(), "{:?}", verify.problems);
}

#[test]
fn sales_whose_points_still_vest_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_keeping(dir.path(), 30);
    let policy = Policy {
        vesting_days: 60,
        ..Policy::default()
    };
    let today = now();
    let c = store
        .enroll("2990000000019", today - days(100))
        .expect("enroll")
        .id;
    store
        .apply_receipt(
            &sale("VESTING", vec![line("a", 1000, None)]),
            Some(&c),
            &policy,
            today - days(40),
        )
        .expect("sale");
    let last = store.outbox_stats().expect("stats").last_seq;
    store.outbox_ack(last).expect("ack");
    assert_eq!(store.prune_receipts(today).expect("prune").removed, 0);
    assert!(store.receipt("VESTING").expect("read").is_some());
}

/// Measurement (run with `--ignored --nocapture`): one pruning run over 20,000 stored receipts
/// of which half are past the retention.
#[test]
#[ignore]
fn measure_pruning_20000_receipts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_keeping(dir.path(), 30);
    let policy = Policy::default();
    let today = now();
    // Receipts without a customer: the measurement is about the receipts tree.
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (store, policy) = (&store, &policy);
            scope.spawn(move || {
                for i in 0..2500 {
                    let at = if i % 2 == 0 { today - days(100) } else { today };
                    store
                        .apply_receipt(
                            &sale(&format!("R-{t}-{i}"), vec![line("a", 1000, None)]),
                            None,
                            policy,
                            at,
                        )
                        .expect("sale");
                }
            });
        }
    });
    let last = store.outbox_stats().expect("stats").last_seq;
    store.outbox_ack(last).expect("ack");
    let started = std::time::Instant::now();
    let report = store.prune_receipts(today).expect("prune");
    let took = started.elapsed();
    assert_eq!(report.removed, 10_000);
    let started = std::time::Instant::now();
    assert_eq!(store.prune_receipts(today).expect("prune").removed, 0);
    println!(
        "pruned {} of 20000 receipts in {took:?}; a run with nothing to prune: {:?}",
        report.removed,
        started.elapsed()
    );
}
