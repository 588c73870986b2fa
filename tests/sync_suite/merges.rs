//! Customers merged at head office (`merged` in the changes page): the local account moves with
//! its cards, points, receipts and vouchers, the journal still verifies, a merge applies once,
//! and a property test interleaves merges with earns, returns, uploads and rebases: no point is
//! lost or doubled.

use loyalty_store::sync_state::{ChangeSet, CrmCustomer, CrmMerge};
use loyalty_store::Store;
use loyalty_tools::testkit::store::{line, now, open, ret, sale, Policy};
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};

const CARD_1: &str = "2990000000019";
const CARD_2: &str = "2990000000026";

fn page(cursor: &str, merged: Vec<CrmMerge>, customers: Vec<CrmCustomer>) -> ChangeSet {
    ChangeSet {
        cursor: cursor.into(),
        now: now(),
        merged,
        customers,
        adjustments: vec![],
        erased: vec![],
        revoked_vouchers: vec![],
        keys: vec![],
        rules_json: None,
        rules_rejection: None,
        offers: Vec::new(),
        clips: Vec::new(),
    }
}

fn crm(id: &str, cards: &[&str], balance: i64, through: u64) -> CrmCustomer {
    CrmCustomer {
        customer_id: id.into(),
        balance,
        includes_store_seq: through,
        tier: None,
        cards: cards.iter().map(|c| c.to_string()).collect(),
        display_name: None,
        consent: None,
        phone_hash: None,
        email_hash: None,
        tags: Vec::new(),
        birthday: None,
    }
}

fn merge(from: &str, into: &str) -> CrmMerge {
    CrmMerge {
        from: from.into(),
        into: into.into(),
    }
}

fn total(store: &Store, id: &str) -> i64 {
    store.balance(id, now()).expect("balance").total
}

fn assert_consistent(store: &Store) {
    let report = store.verify().expect("verify");
    assert!(report.is_consistent(), "{report}");
}

#[test]
fn a_merge_moves_cards_points_and_receipts_and_applies_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let policy = Policy::default();
    // Enrolled offline here (card 1) and known at head office (card 2).
    let local = store.enroll(CARD_1, now()).expect("enroll").id;
    store
        .apply_changes(&page("1", vec![], vec![crm("HO-7", &[CARD_2], 300, 0)]))
        .expect("apply");
    store
        .apply_receipt(
            &sale("R-1", vec![line("a", 4200, None)]),
            Some(&local),
            &policy,
            now(),
        )
        .expect("sale");
    assert_eq!(total(&store, &local), 42);
    let merged = page("2", vec![merge(&local, "HO-7")], vec![]);
    let report = store.apply_changes(&merged).expect("merge");
    assert_eq!(report.merges, 1);
    // Both cards now name the survivor, with the sum of both balances.
    for card in [CARD_1, CARD_2] {
        let customer = store
            .customer_by_card(card)
            .expect("lookup")
            .expect("known");
        assert_eq!(customer.id, "HO-7");
    }
    assert_eq!(total(&store, "HO-7"), 342);
    // The old id resolves to the survivor (a lane that identified her before the merge).
    assert_eq!(
        store.customer(&local).expect("lookup").expect("known").id,
        "HO-7"
    );
    assert_consistent(&store);
    // Applying the same merge again (a page delivered twice) changes nothing.
    let again = store.apply_changes(&merged).expect("again");
    assert_eq!((again.merges, again.merges_without_effect), (0, 1));
    assert_eq!(total(&store, "HO-7"), 342);
    // A return of the sale made under the old id claws back from the survivor.
    let back = store
        .apply_receipt(
            &ret("R-1-R", "R-1", vec![line("a", 2100, None)]),
            None,
            &policy,
            now(),
        )
        .expect("return");
    assert_eq!(back.earned, -21);
    assert_eq!(total(&store, "HO-7"), 321);
    // The survivor's entries include those made under the old id.
    let entries = store.customer_entries("HO-7").expect("entries");
    assert_eq!(entries.iter().map(|e| e.points).sum::<i64>(), 21);
    // Head office's next balance (which includes both) rebases as usual.
    let last = store.outbox_stats().expect("stats").last_seq;
    store
        .apply_changes(&page(
            "3",
            vec![],
            vec![crm("HO-7", &[CARD_2, CARD_1], 321, last)],
        ))
        .expect("rebase");
    assert_eq!(total(&store, "HO-7"), 321);
    assert_eq!(
        store
            .customer_by_card(CARD_1)
            .expect("lookup")
            .map(|c| c.id),
        Some("HO-7".to_string())
    );
    // An entry for the merged-away id in a later page is skipped, not resurrected.
    let stale = store
        .apply_changes(&page("4", vec![], vec![crm(&local, &[CARD_1], 5, last)]))
        .expect("stale");
    assert_eq!(stale.merged_away_customers, 1);
    assert_eq!(total(&store, "HO-7"), 321);
    assert_consistent(&store);
    // Reopening keeps all of it.
    drop(store);
    let store = open(dir.path());
    assert_eq!(total(&store, &local), 321);
    assert_consistent(&store);
}

#[test]
fn merges_that_cannot_apply_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = store.enroll(CARD_1, now()).expect("enroll").id;
    let report = store
        .apply_changes(&page(
            "1",
            vec![merge(&a, &a), merge("", &a), merge("unknown-here", &a)],
            vec![],
        ))
        .expect("apply");
    assert_eq!(
        (report.refused_merges, report.merges_without_effect),
        (2, 1)
    );
    assert_eq!(
        store
            .customer_by_card(CARD_1)
            .expect("lookup")
            .map(|c| c.id),
        Some(a)
    );
    assert_consistent(&store);
}

#[derive(Debug, Clone)]
enum Op {
    /// A sale in this store for customer 0 or 1 (as the lane identified her: after the local
    /// merge, customer 0's id resolves to the survivor), of this many whole euros.
    Earn(usize, i64),
    /// A return of part (percent) of an earlier sale (index modulo the sales made).
    Return(usize, i64),
    /// Points from other stores at head office, for customer 0 or 1.
    Elsewhere(usize, i64),
    /// Head office ingests this store's events up to `min(last_seq, ingested + n)`.
    Upload(u64),
    /// Head office merges customer 0 into customer 1 (once).
    Merge,
    /// Head office takes a snapshot of the page it will send (delivered later, in order).
    Snapshot,
    /// The next page arrives through the feed.
    Pull,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..2, 1i64..60).prop_map(|(w, e)| Op::Earn(w, e)),
        1 => (0usize..8, 10i64..101).prop_map(|(k, p)| Op::Return(k, p)),
        1 => (0usize..2, 1i64..100).prop_map(|(w, p)| Op::Elsewhere(w, p)),
        2 => (0u64..4).prop_map(Op::Upload),
        1 => Just(Op::Merge),
        2 => Just(Op::Snapshot),
        2 => Just(Op::Pull),
    ]
}

const IDS: [&str; 2] = ["C1", "C2"];
const CARDS: [&str; 2] = [CARD_1, CARD_2];
const BASE: [i64; 2] = [1000, 500];

/// The points of both accounts together as the store answers them (one account once merged).
fn store_total(store: &Store) -> i64 {
    let first = store.customer(IDS[0]).expect("lookup").expect("known");
    if first.id == IDS[1] {
        total(store, IDS[1])
    } else {
        total(store, IDS[0]) + total(store, IDS[1])
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    #[test]
    fn merges_never_lose_nor_double_a_point(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let policy = Policy::default();
        store.apply_changes(&page("0", vec![], vec![
            crm(IDS[0], &[CARDS[0]], BASE[0], 0),
            crm(IDS[1], &[CARDS[1]], BASE[1], 0),
        ])).expect("apply");
        // This store's ledger entries: seq → (points, id the journal names).
        let mut local: BTreeMap<u64, (i64, String)> = BTreeMap::new();
        let mut seen_seq = store.outbox_stats().expect("stats").last_seq;
        let mut elsewhere = [0i64; 2];
        let mut ingested = 0u64;
        let mut hub_merged = false;
        let mut pages: VecDeque<ChangeSet> = VecDeque::new();
        let mut sales: Vec<(String, i64)> = Vec::new();
        // What the store holds from head office: the sum of both confirmed balances and the
        // sequence number they include (the same for both: every page carries both, or the
        // survivor only).
        let mut held: (i64, u64) = (BASE[0] + BASE[1], 0);
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Earn(who, euros) => {
                    let id = format!("R-{i}");
                    store.apply_receipt(&sale(&id, vec![line("a", euros * 100, None)]),
                        Some(IDS[*who]), &policy, now()).expect("sale");
                    sales.push((id, euros * 100));
                }
                Op::Return(k, percent) => {
                    if !sales.is_empty() {
                        let (original, cents) = sales[k % sales.len()].clone();
                        store.apply_receipt(&ret(&format!("R-{i}-R"), &original,
                            vec![line("a", cents * percent / 100, None)]), None, &policy, now())
                            .expect("return");
                    }
                }
                Op::Elsewhere(who, points) => elsewhere[*who] += points,
                Op::Upload(n) => {
                    let last = store.outbox_stats().expect("stats").last_seq;
                    ingested = (ingested + n).min(last);
                }
                Op::Merge => hub_merged = true,
                Op::Snapshot => {
                    // Head office's balances: everything it has, attributed as it knows them.
                    let mut balance = [BASE[0] + elsewhere[0], BASE[1] + elsewhere[1]];
                    for (seq, (points, id)) in &local {
                        if *seq <= ingested {
                            balance[usize::from(id != IDS[0])] += points;
                        }
                    }
                    pages.push_back(if hub_merged {
                        page(&i.to_string(), vec![merge(IDS[0], IDS[1])], vec![
                            crm(IDS[1], &CARDS, balance[0] + balance[1], ingested)])
                    } else {
                        page(&i.to_string(), vec![], vec![
                            crm(IDS[0], &[CARDS[0]], balance[0], ingested),
                            crm(IDS[1], &[CARDS[1]], balance[1], ingested),
                        ])
                    });
                }
                Op::Pull => {
                    if let Some(page) = pages.pop_front() {
                        held = (page.customers.iter().map(|c| c.balance).sum(),
                            page.customers[0].includes_store_seq);
                        store.apply_changes(&page).expect("apply");
                    }
                }
            }
            for event in store.outbox_after(seen_seq, 1000).expect("outbox") {
                seen_seq = event.seq;
                if event.kind == loyalty_store::events::EventType::Ledger {
                    let payload = &event.json["payload"];
                    let id = payload["customer_id"].as_str().expect("id").to_string();
                    let points = payload["points"].as_i64().expect("points");
                    local.insert(event.seq, (points, id));
                }
            }
            let expected = held.0
                + local.range(held.1 + 1..).map(|(_, (p, _))| p).sum::<i64>();
            prop_assert_eq!(store_total(&store), expected, "after {:?}", op);
            let report = store.verify().expect("verify");
            prop_assert!(report.is_consistent(), "{}", report);
        }
        // Everything uploaded, merged and pulled: the store agrees with head office exactly.
        while let Some(page) = pages.pop_front() {
            store.apply_changes(&page).expect("apply");
        }
        let last = store.outbox_stats().expect("stats").last_seq;
        let all_local: i64 = local.values().map(|(p, _)| p).sum();
        let chain_total = BASE[0] + BASE[1] + elsewhere[0] + elsewhere[1] + all_local;
        store.apply_changes(&page("end", vec![merge(IDS[0], IDS[1])], vec![
            crm(IDS[1], &CARDS, chain_total, last)])).expect("apply");
        prop_assert_eq!(total(&store, IDS[0]), chain_total);
        prop_assert_eq!(total(&store, IDS[1]), chain_total);
        for card in CARDS {
            prop_assert_eq!(store.customer_by_card(card).expect("card").map(|c| c.id),
                Some(IDS[1].to_string()));
        }
        let report = store.verify().expect("verify");
        prop_assert!(report.is_consistent(), "{}", report);
    }
}
