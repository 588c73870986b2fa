//! Vouchers on a real sled store across `kill -9`: a child process (this test binary run again)
//! reserves and commits, the parent kills it at chosen points and reopens the store; every
//! acknowledged redemption and receipt is there exactly once and whole.

use loyalty_core::voucher::{RedemptionState, Refusal};
use loyalty_store::events::EventType;
use loyalty_store::vouchers::Vouchers;
use loyalty_store::ReceiptCustomer;
use loyalty_store::Store;
use std::io::BufRead;
use std::path::{Path, PathBuf};

mod voucher_support;
use voucher_support::*;

const CHILD_ENV: &str = "VOUCHER_KILL_CHILD_DIR";
const KILL_VOUCHERS: u8 = 12;

/// A child's directory (from the parent), store and vouchers, or `None` when run as a test of
/// its own.
fn child_open() -> Option<(PathBuf, Store, Vouchers)> {
    let dir = PathBuf::from(std::env::var(CHILD_ENV).ok()?);
    let (store, vouchers) = open(&dir, "named");
    Some((dir, store, vouchers))
}

/// Run only as a child of `kill_9_between_reservation_and_commit`: reserves vouchers at lane
/// 1, reports it, then commits them one receipt at a time, reporting each, until killed.
#[test]
#[ignore = "child process of kill_9_between_reservation_and_commit"]
fn kill_child() {
    let Some((dir, _store, vouchers)) = child_open() else {
        return;
    };
    for n in 0..KILL_VOUCHERS {
        let (_, text) = voucher_text(100 + n, None);
        assert!(is_valid(
            &vouchers.scan(&text, "1", None, t0()).expect("scan")
        ));
    }
    println!("CHILD RESERVED");
    let go = dir.join("go");
    while !go.exists() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for n in 0..KILL_VOUCHERS {
        let (id, _) = voucher_text(100 + n, None);
        let outcome = vouchers
            .commit_receipt(&receipt(&format!("R-{n}"), "1", 1000, &[id]), at(10))
            .expect("commit");
        assert_eq!(outcome.redeemed.len(), 1);
        println!("CHILD COMMITTED {n}");
    }
    println!("CHILD DONE");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn spawn_child(
    dir: &Path,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    spawn_test_child(dir, "kill_child")
}

/// This test binary re-executed to run only the (ignored) test `name`, in `dir`.
fn spawn_test_child(
    dir: &Path,
    name: &str,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", name, "--include-ignored", "--nocapture"])
        .env(CHILD_ENV, dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    (child, std::io::BufReader::new(stdout).lines())
}

fn wait_for(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    wanted: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("child output");
        if line.starts_with("CHILD") {
            seen.push(line.clone());
        }
        if line == wanted {
            return seen;
        }
    }
    panic!("child ended before {wanted:?}; saw {seen:?}");
}

#[test]
fn kill_9_between_reservation_and_commit() {
    for (round, kill_after) in [None, Some(0), Some(5)].into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut child, mut lines) = spawn_child(dir.path());
        wait_for(&mut lines, "CHILD RESERVED");
        let mut acknowledged = 0;
        if let Some(after) = kill_after {
            std::fs::write(dir.path().join("go"), b"").expect("go");
            // Kill while later commits are in flight.
            let seen = wait_for(&mut lines, &format!("CHILD COMMITTED {after}"));
            acknowledged = seen.iter().filter(|l| l.contains("COMMITTED")).count();
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        drop(lines);

        let (store, vouchers) = open(dir.path(), "named");
        for n in 0..KILL_VOUCHERS {
            let (id, text) = voucher_text(100 + n, None);
            let state = vouchers.state(&id).expect("state");
            let events = redeemed_events_for(&store, &id);
            match &state {
                RedemptionState::Redeemed { receipt_id, .. } => {
                    assert_eq!(events, 1, "round {round} voucher {n}");
                    assert_eq!(receipt_id, &format!("R-{n}"));
                }
                RedemptionState::Reserved { lane, .. } => {
                    assert_eq!(events, 0, "round {round} voucher {n}");
                    assert_eq!(lane, "1");
                    assert!(
                        (n as usize) >= acknowledged,
                        "round {round}: voucher {n} was acknowledged as redeemed but is not"
                    );
                    // Still held for lane 1 after the restart: lane 2 cannot take it.
                    assert!(matches!(
                        refusal(vouchers.scan(&text, "2", None, at(11)).expect("scan")),
                        Refusal::ReservedElsewhere { .. }
                    ));
                }
                RedemptionState::Free => panic!("round {round}: voucher {n} lost its reservation"),
            }
            // The lane's receipt (redelivered after the crash) redeems it exactly once.
            let outcome = vouchers
                .commit_receipt(&receipt(&format!("R-{n}"), "1", 1000, &[id]), at(12))
                .expect("commit");
            assert_eq!(outcome.redeemed.len(), 1, "round {round} voucher {n}");
            assert_eq!(redeemed_events_for(&store, &id), 1);
            // And never a second time.
            let replay = vouchers
                .commit_receipt(&receipt(&format!("R-X{n}"), "2", 1000, &[id]), at(13))
                .expect("commit");
            assert!(replay.redeemed.is_empty());
            assert_eq!(redeemed_events_for(&store, &id), 1);
        }
    }
}

const RECEIPT_CHILD_SALES: u8 = 40;
const RECEIPT_CHILD_CARD: &str = "2990000000033";

/// The child of `kill_9_during_receipts_leaves_each_receipt_whole`: sales for a card enrolled
/// by the first of them, each redeeming a reserved voucher and earning one (500 points).
#[test]
#[ignore = "child process of kill_9_during_receipts_leaves_each_receipt_whole"]
fn receipt_child() {
    use loyalty_core::ledger::EarningPolicy as _;
    let Some((_, store, vouchers)) = child_open() else {
        return;
    };
    let policy = store_support::Policy::default();
    for n in 0..RECEIPT_CHILD_SALES {
        let (_, text) = voucher_text(n, None);
        assert!(is_valid(
            &vouchers.scan(&text, "1", None, t0()).expect("scan")
        ));
    }
    println!("CHILD RESERVED");
    for n in 0..RECEIPT_CHILD_SALES {
        let (id, _) = voucher_text(n, None);
        let mut sale = receipt(&format!("R-{n}"), "1", 50_000, &[id]);
        sale.card = Some(RECEIPT_CHILD_CARD.into());
        let sale =
            loyalty_core::receipt::ValidReceipt::check(sale, policy.limits()).expect("valid");
        let customer = ReceiptCustomer::Card {
            card: RECEIPT_CHILD_CARD,
            enrol: true,
        };
        let applied = store
            .apply_valid_receipt(&sale, customer, &policy, Some(&vouchers), at(10))
            .expect("apply");
        assert_eq!(applied.vouchers.issued.len(), 1);
        println!("CHILD APPLIED {n}");
    }
    println!("CHILD DONE");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// kill -9 while receipts that enrol, redeem and issue are applied: after the restart each
/// receipt is all there (its points, its redemption, its voucher, its events) or not at all.
#[test]
fn kill_9_during_receipts_leaves_each_receipt_whole() {
    for kill_after in [0u8, 7] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut child, mut lines) = spawn_test_child(dir.path(), "receipt_child");
        wait_for(&mut lines, "CHILD RESERVED");
        let seen = wait_for(&mut lines, &format!("CHILD APPLIED {kill_after}"));
        let acknowledged = seen.iter().filter(|l| l.contains("APPLIED")).count();
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        drop(lines);

        let (store, vouchers) = open(dir.path(), "named");
        let customer = store
            .customer_by_card(RECEIPT_CHILD_CARD)
            .expect("read")
            .expect("enrolled with the first receipt");
        let mut applied = 0;
        for n in 0..RECEIPT_CHILD_SALES {
            let receipt_id = format!("R-{n}");
            let (id, _) = voucher_text(n, None);
            let present = store.receipt(&receipt_id).expect("read").is_some();
            let issued = vouchers.issued_for_receipt(&receipt_id).expect("issued");
            let redeemed = matches!(
                vouchers.state(&id).expect("state"),
                RedemptionState::Redeemed { .. }
            );
            assert_eq!(
                (issued.len(), redeemed),
                if present { (1, true) } else { (0, false) },
                "receipt {n} (present: {present}) is only partly there"
            );
            assert_eq!(redeemed_events_for(&store, &id), usize::from(redeemed));
            if present {
                applied += 1;
            } else {
                assert!(
                    usize::from(n) >= acknowledged,
                    "receipt {n} was acknowledged but is missing"
                );
            }
        }
        assert!(applied >= acknowledged);
        // 500 points earned and converted into a voucher per receipt.
        let balance = store.balance(&customer.id, at(20)).expect("balance");
        assert_eq!(balance.total, 0);
        assert_eq!(events_of(&store, EventType::Ledger).len(), 2 * applied);
        assert_eq!(events_of(&store, EventType::VoucherIssued).len(), applied);
        assert_eq!(events_of(&store, EventType::Receipt).len(), applied);
        assert_eq!(events_of(&store, EventType::CustomerEnrolled).len(), 1);
        let report = store.verify().expect("verify");
        assert!(report.is_consistent(), "{report}");
    }
}
