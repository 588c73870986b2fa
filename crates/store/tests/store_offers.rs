//! Personal and segment offers on a real sled database: fed by a changes page, applied once per
//! customer inside the receipt's transaction (a duplicate receipt changes nothing), never
//! without `profiling` consent, never on excluded lines; activation, withdrawal, segments;
//! each use an `offer_redeemed` event; a return claws the bonus back proportionally; the
//! offers survive a reopen.

#[allow(dead_code)] // each test binary uses some of them
#[path = "../../tools/src/testkit/store.rs"]
mod store_support;

use loyalty_core::money::Money;
use loyalty_core::offers::{Conditions, Offer, OfferBenefit, Target};
use loyalty_store::events::EventType;
use loyalty_store::offers::{CrmClip, CrmOfferChange};
use loyalty_store::sync_state::{ChangeSet, CrmConsent, CrmCustomer};
use store_support::*;

const COFFEE: &str = "4006381333931";

fn customer(id: &str, card: &str, profiling: bool, tags: &[&str]) -> CrmCustomer {
    CrmCustomer {
        customer_id: id.into(),
        balance: 0,
        includes_store_seq: 0,
        tier: None,
        cards: vec![card.into()],
        display_name: Some("Ada".into()),
        consent: Some(CrmConsent {
            marketing: true,
            profiling,
        }),
        phone_hash: None,
        email_hash: None,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        birthday: None,
    }
}

fn page(
    cursor: &str,
    customers: Vec<CrmCustomer>,
    offers: Vec<CrmOfferChange>,
    clips: Vec<CrmClip>,
) -> ChangeSet {
    ChangeSet {
        cursor: cursor.into(),
        now: now(),
        customers,
        offers,
        clips,
        ..Default::default()
    }
}

fn offer(id: &str, target: Target, benefit: OfferBenefit) -> Offer {
    Offer {
        id: id.into(),
        target,
        valid_from: None,
        valid_until: None,
        text: "Coffee bonus".into(),
        conditions: Conditions {
            gtins: vec![COFFEE.into()],
            ..Default::default()
        },
        benefit,
        requires_activation: false,
        requires_marketing: false,
        max_uses_per_customer: 1,
    }
}

fn offer_events(store: &loyalty_store::Store) -> Vec<serde_json::Value> {
    store
        .outbox_after(0, 10_000)
        .expect("outbox")
        .into_iter()
        .filter(|e| e.kind == EventType::OfferRedeemed)
        .map(|e| e.json["payload"].clone())
        .collect()
}

fn setup(dir: &std::path::Path) -> loyalty_store::Store {
    let store = open(dir);
    store
        .apply_changes(&page(
            "1",
            vec![
                customer("C1", "2990000000019", true, &[]),
                customer("C2", "2990000000026", true, &["pets"]),
                customer("C3", "2990000000033", false, &["pets"]),
            ],
            vec![
                CrmOfferChange::Upsert(Box::new(offer(
                    "OF-1",
                    Target::Customer("C1".into()),
                    OfferBenefit::BonusPoints(100),
                ))),
                CrmOfferChange::Upsert(Box::new(offer(
                    "OF-PETS",
                    Target::Segment("pets".into()),
                    OfferBenefit::Multiplier { hundredths: 300 },
                ))),
            ],
            vec![],
        ))
        .expect("page");
    store
}

#[test]
fn a_personal_offer_applies_once_and_a_duplicate_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = setup(dir.path());
    let policy = Policy::default();
    assert_eq!(store.active_offers("C1", now()).expect("offers").len(), 1);
    assert!(store.active_offers("C3", now()).expect("offers").is_empty());
    let receipt = sale(
        "R-1",
        vec![line(COFFEE, 500, Some("coffee")), line("1", 300, None)],
    );
    let first = store
        .apply_receipt(&receipt, Some("C1"), &policy, now())
        .expect("apply");
    assert_eq!(first.earned, 8 + 100);
    assert!(first.promotions.contains(&"offer:OF-1".to_string()));
    let again = store
        .apply_receipt(&receipt, Some("C1"), &policy, now())
        .expect("duplicate");
    assert!(again.duplicate);
    assert_eq!(again.earned, 108);
    assert_eq!(store.balance("C1", now()).expect("balance").total, 108);
    // Used up: the next sale earns the base points only, and the offer leaves the screen.
    let second = store
        .apply_receipt(
            &sale("R-2", vec![line(COFFEE, 500, Some("coffee"))]),
            Some("C1"),
            &policy,
            now(),
        )
        .expect("apply");
    assert_eq!(second.earned, 5);
    assert!(store.active_offers("C1", now()).expect("offers").is_empty());
    let events = offer_events(&store);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["offer_id"], "OF-1");
    assert_eq!(events[0]["bonus_points"], 100);
    assert_eq!(events[0]["receipt_id"], "R-1");
    assert_eq!(events[0]["uses"], 1);
    // Another customer's sale of the article gets nothing from her offer.
    let other = store
        .apply_receipt(
            &sale("R-3", vec![line(COFFEE, 500, Some("coffee"))]),
            Some("C2"),
            &policy,
            now(),
        )
        .expect("apply");
    // C2 is in the segment: triple points on the coffee (5 base + 10 extra).
    assert_eq!(other.earned, 15);
    assert_eq!(offer_events(&store).len(), 2);
    let report = store.verify().expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn without_profiling_consent_no_offer_applies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = setup(dir.path());
    let outcome = store
        .apply_receipt(
            &sale("R-1", vec![line(COFFEE, 500, Some("coffee"))]),
            Some("C3"),
            &Policy::default(),
            now(),
        )
        .expect("apply");
    assert_eq!(outcome.earned, 5);
    assert!(offer_events(&store).is_empty());
}

#[test]
fn excluded_lines_never_earn_an_offer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = setup(dir.path());
    // The offer names the article, but the line is tobacco (excluded by the rules).
    let outcome = store
        .apply_receipt(
            &sale("R-1", vec![line(COFFEE, 900, Some("tobacco"))]),
            Some("C1"),
            &Policy::default(),
            now(),
        )
        .expect("apply");
    assert_eq!(outcome.earned, 0);
    assert!(offer_events(&store).is_empty());
    // Still unused: it applies to the next real coffee.
    assert_eq!(store.active_offers("C1", now()).expect("offers").len(), 1);
}

#[test]
fn activation_withdrawal_and_validity_come_from_the_feed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = setup(dir.path());
    let mut clipped = offer(
        "OF-CLIP",
        Target::Customer("C1".into()),
        OfferBenefit::AmountOff(Money(200)),
    );
    clipped.requires_activation = true;
    let mut ended = offer(
        "OF-OLD",
        Target::Customer("C1".into()),
        OfferBenefit::BonusPoints(5),
    );
    ended.valid_until = Some(now());
    let report = store
        .apply_changes(&page(
            "2",
            vec![],
            vec![
                CrmOfferChange::Upsert(Box::new(clipped)),
                CrmOfferChange::Upsert(Box::new(ended)),
                CrmOfferChange::Withdraw("OF-1".into()),
            ],
            vec![],
        ))
        .expect("page");
    assert_eq!(report.offers.stored, 1);
    assert_eq!(report.offers.removed, 2);
    assert!(
        store.active_offers("C1", now()).expect("offers").is_empty(),
        "not clipped yet; OF-1 withdrawn; OF-OLD ended"
    );
    store
        .apply_changes(&page(
            "3",
            vec![],
            vec![],
            vec![CrmClip {
                customer_id: "C1".into(),
                offer_id: "OF-CLIP".into(),
                withdrawn: false,
            }],
        ))
        .expect("clip");
    drop(store);
    let store = open(dir.path());
    let active = store.active_offers("C1", now()).expect("offers");
    assert_eq!(active.len(), 1, "kept across a reopen");
    assert_eq!(active[0].id, "OF-CLIP");
    let outcome = store
        .apply_receipt(
            &sale("R-1", vec![line(COFFEE, 150, Some("coffee"))]),
            Some("C1"),
            &Policy::default(),
            now(),
        )
        .expect("apply");
    assert_eq!(outcome.earned, 1, "an amount off gives no points");
    let events = offer_events(&store);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["amount_off"], "1.50", "capped at the lines");
}

#[test]
fn a_return_claws_the_bonus_back_with_the_sale_points() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = setup(dir.path());
    let policy = Policy::default();
    store
        .apply_receipt(
            &sale(
                "R-1",
                vec![line(COFFEE, 500, Some("coffee")), line("1", 500, None)],
            ),
            Some("C1"),
            &policy,
            now(),
        )
        .expect("sale");
    assert_eq!(store.balance("C1", now()).expect("balance").total, 110);
    // Half the eligible amount comes back: half the sale's points, bonus included.
    let back = store
        .apply_receipt(
            &ret("R-2", "R-1", vec![line(COFFEE, 500, Some("coffee"))]),
            None,
            &policy,
            now(),
        )
        .expect("return");
    assert_eq!(back.earned, -55);
    assert_eq!(store.balance("C1", now()).expect("balance").total, 55);
    // The use is not given back.
    assert!(store.active_offers("C1", now()).expect("offers").is_empty());
}
