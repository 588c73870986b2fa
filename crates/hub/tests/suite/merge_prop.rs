//! Property: the same card enrolled offline in two stores, with random earns and clawbacks in
//! each and a random interleaving of their uploads (each event in its own batch, possibly before
//! the other store's enrolment reaches the hub), ends as one customer whose chain balance is the
//! sum of every entry, none lost or doubled. One cluster and hub for all cases; each case uses
//! its own stores and card.

use crate::support::*;
use loyalty_protocol::crm::ChangesPage;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(Debug, Clone)]
struct Case {
    /// Enrolment time offsets (hours) of A and B.
    enrolled: [i64; 2],
    /// Points of each store's ledger entries (earn when positive, clawback when negative).
    entries: [Vec<i64>; 2],
    /// Which store uploads its next event (true: B).
    order: Vec<bool>,
}

fn case() -> impl Strategy<Value = Case> {
    let points = || prop::collection::vec((-40i64..200).prop_filter("non-zero", |p| *p != 0), 0..5);
    (
        0i64..48,
        0i64..48,
        points(),
        points(),
        prop::collection::vec(any::<bool>(), 0..14),
    )
        .prop_map(|(a, b, pa, pb, order)| Case {
            enrolled: [a, b],
            entries: [pa, pb],
            order,
        })
}

#[test]
fn merging_one_card_enrolled_in_two_stores_keeps_every_point_exactly_once() {
    let env = Env::new();
    let hub = env.hub("");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let base: jiff::Timestamp = "2026-11-01T00:00:00Z".parse().expect("t");
    let counter = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&case(), |case| {
            counter.set(counter.get() + 1);
            let n = counter.get();
            runtime.block_on(run_case(&env, &hub, n, base, &case));
            Ok(())
        })
        .expect("property holds");
}

async fn run_case(env: &Env, hub: &HubProcess, n: u32, base: jiff::Timestamp, case: &Case) {
    let stores = [format!("A{n}"), format!("B{n}")];
    let card = format!("7{n:08}");
    let ids = [format!("A{n}-c"), format!("B{n}-c")];
    let mut queues: [Vec<Ev>; 2] = [Vec::new(), Vec::new()];
    let mut total = 0;
    for s in 0..2 {
        let when = base + jiff::SignedDuration::from_hours(case.enrolled[s]);
        queues[s].push(enrolled_at(
            1,
            &format!("{}-e", stores[s]),
            &ids[s],
            &card,
            when,
        ));
        for (i, points) in case.entries[s].iter().enumerate() {
            let seq = i as u64 + 2;
            let kind = if *points > 0 { "earn" } else { "clawback" };
            queues[s].push(ledger(
                seq,
                &format!("{}-l{seq}", stores[s]),
                &ids[s],
                kind,
                *points,
                "R",
            ));
            total += points;
        }
    }
    let clients = [env.client(&stores[0]), env.client(&stores[1])];
    let mut next = [0usize, 0usize];
    let mut order = case.order.clone();
    order.extend(std::iter::repeat_n(false, queues[0].len()));
    order.extend(std::iter::repeat_n(true, queues[1].len()));
    for pick in order {
        let s = usize::from(pick);
        if next[s] >= queues[s].len() {
            continue;
        }
        let event = queues[s][next[s]].clone();
        clients[s]
            .post_ok(hub.addr, &stores[s], body(&stores[s], "i", &[event]))
            .await;
        next[s] += 1;
    }
    let survivor = if (case.enrolled[0], &ids[0]) <= (case.enrolled[1], &ids[1]) {
        &ids[0]
    } else {
        &ids[1]
    };
    let loser = if survivor == &ids[0] {
        &ids[1]
    } else {
        &ids[0]
    };
    let sql = env.sql().await;
    let row = sql
        .query_one(
            "SELECT coalesce(sum(points), 0)::bigint, count(*) FROM ledger_entries
             WHERE customer_id = ANY($1)",
            &[&vec![survivor.as_str(), loser.as_str()]],
        )
        .await
        .expect("sum");
    let entries = case.entries[0].len() + case.entries[1].len();
    assert_eq!(
        row.get::<_, i64>(1),
        entries as i64,
        "no entry lost or doubled"
    );
    assert_eq!(row.get::<_, i64>(0), total);
    let on_loser: i64 = sql
        .query_one(
            "SELECT count(*) FROM ledger_entries WHERE customer_id = $1",
            &[loser],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(on_loser, 0, "the merged-away customer keeps nothing");
    let into: Option<String> = sql
        .query_one(
            "SELECT into_id FROM customer_merges WHERE from_id = $1",
            &[loser],
        )
        .await
        .expect("merge row")
        .get(0);
    assert_eq!(into.as_deref(), Some(survivor.as_str()));
    // Both stores see the survivor with the whole chain balance.
    for s in 0..2 {
        let page: ChangesPage = clients[s]
            .get(hub.addr, &format!("/v1/stores/{}/changes", stores[s]))
            .await
            .json();
        let customer = page
            .customers
            .iter()
            .find(|c| &c.customer_id == survivor)
            .unwrap_or_else(|| panic!("survivor missing in {}'s feed: {page:?}", stores[s]));
        assert_eq!(customer.balance, total);
        assert!(page.customers.iter().all(|c| &c.customer_id != loser));
    }
}
