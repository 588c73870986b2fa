//! Vouchers on a real sled store: reservation races between lanes, redemption exactly once
//! (also across `kill -9`), replays, minimum spend at the receipt, issuing with points
//! conversion, revocation, goodwill limits.

use ed25519_dalek::SigningKey;
use jiff::{SignedDuration, Timestamp};
use loyalty_core::money::Money;
use loyalty_core::receipt::{Receipt, ReceiptKind, ReceiptLine};
use loyalty_core::voucher::{
    Benefit, RedemptionState, Refusal, StoreKey, Verdict, Voucher, VoucherId, VoucherSettings,
};
use loyalty_daemon::config::{Config, RewardRuleConfig};
use loyalty_daemon::vouchers::VoucherSettingsExt;
use loyalty_store::events::EventType;
use loyalty_store::vouchers::{IssueError, Vouchers};
use loyalty_store::{ReceiptCustomer, Store};
use std::io::BufRead;
use std::path::Path;
use std::sync::{Arc, Barrier};

#[path = "../../tools/src/testkit/store.rs"]
#[allow(dead_code)] // one source for the store tests' helpers; this test uses the policy only
mod store_support;

const KEY_ID: &str = "store-S042";

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[42u8; 32])
}

fn t0() -> Timestamp {
    "2026-12-01T12:00:00Z".parse().expect("time")
}

fn at(seconds: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(seconds)
}

fn config(dir: &Path, redeem_on: &str) -> Config {
    let mut config = Config::default();
    config.store.id = "S042".into();
    config.store.timezone = "Europe/Berlin".into();
    config.storage.data_dir = dir.to_path_buf();
    config.rewards.rules = vec![RewardRuleConfig {
        every_points: 500,
        value: "5.00".into(),
        validity_days: 90,
        min_spend: Some("20.00".into()),
    }];
    config.rewards.redeem_on = redeem_on.into();
    config.rewards.goodwill_max_value = "10.00".into();
    // Named because rules require a key file; `open` passes the key in memory instead.
    config.rewards.signing_key_file = Some(dir.join("store.key"));
    config
}

fn open(dir: &Path, redeem_on: &str) -> (Store, Vouchers) {
    let config = config(dir, redeem_on);
    let store = Store::open(&config.storage, &config.store.id).expect("open store");
    let key = StoreKey {
        key_id: KEY_ID.into(),
        signing: signing_key(),
    };
    let built = loyalty_daemon::config::Built::new(config).expect("valid configuration");
    let settings = VoucherSettings::with_key(&built, Some(key)).expect("settings");
    let keys = settings.trusted_keys(&built).expect("keys");
    let vouchers = Vouchers::open(&store, settings, keys).expect("vouchers");
    (store, vouchers)
}

/// A voucher signed with the store's key (as head office or another store would).
fn voucher_text(n: u8, min_spend: Option<i64>) -> (VoucherId, String) {
    let voucher = Voucher {
        id: VoucherId([n; 10]),
        key_id: KEY_ID.into(),
        currency: "EUR".into(),
        benefit: Benefit::AmountOff(Money(500)),
        valid_from: "2026-11-01T00:00:00Z".parse().expect("time"),
        valid_until: "2027-02-01T00:00:00Z".parse().expect("time"),
        valid_from_issue: true,
        min_spend: min_spend.map(Money),
        customer: None,
    };
    (voucher.id, voucher.sign(&signing_key()).expect("sign"))
}

fn receipt(id: &str, lane: &str, total: i64, rewards: &[VoucherId]) -> Receipt {
    Receipt {
        id: id.into(),
        lane: lane.into(),
        timestamp: t0(),
        kind: ReceiptKind::Sale,
        currency: "EUR".into(),
        total: Money(total),
        card: None,
        rewards: rewards.iter().map(|id| id.to_string()).collect(),
        redemptions: Vec::new(),
        lines: vec![ReceiptLine {
            sku: "4006381333931".into(),
            name: "Goods".into(),
            qty_milli: 1000,
            unit_price: None,
            amount: Money(total),
            category: None,
        }],
    }
}

fn events_of(store: &Store, kind: EventType) -> Vec<serde_json::Value> {
    store
        .outbox_after(0, 100_000)
        .expect("outbox")
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.json)
        .collect()
}

fn redeemed_events_for(store: &Store, id: &VoucherId) -> usize {
    events_of(store, EventType::VoucherRedeemed)
        .iter()
        .filter(|e| e["payload"]["voucher_id"] == id.to_string())
        .count()
}

fn is_valid(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Valid { .. })
}

fn refusal(verdict: Verdict) -> Refusal {
    match verdict {
        Verdict::Refused(r) => r,
        Verdict::Valid { discount } => panic!("accepted: {discount:?}"),
    }
}

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

// ----- kill -9 between reservation and commit -----

const CHILD_ENV: &str = "VOUCHER_KILL_CHILD_DIR";
const KILL_VOUCHERS: u8 = 12;

/// Run only as a child of `kill_9_between_reservation_and_commit`: reserves vouchers at lane
/// 1, reports it, then commits them one receipt at a time, reporting each, until killed.
#[test]
#[ignore = "child process of kill_9_between_reservation_and_commit"]
fn kill_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (_store, vouchers) = open(Path::new(&dir), "named");
    for n in 0..KILL_VOUCHERS {
        let (_, text) = voucher_text(100 + n, None);
        assert!(is_valid(
            &vouchers.scan(&text, "1", None, t0()).expect("scan")
        ));
    }
    println!("CHILD RESERVED");
    let go = Path::new(&dir).join("go");
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
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (store, vouchers) = open(Path::new(&dir), "named");
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
