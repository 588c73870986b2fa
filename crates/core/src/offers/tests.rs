//! Tests of the offers' decisions: targeting, consent, activation, uses, exclusions, benefits.

use super::*;
use crate::receipt::{ReceiptKind, ReceiptLine};
use proptest::prelude::*;

fn at(text: &str) -> Timestamp {
    text.parse().expect("time")
}

fn now() -> Timestamp {
    at("2027-03-10T10:00:00Z")
}

fn line(sku: &str, category: &str, amount: i64) -> ReceiptLine {
    ReceiptLine {
        sku: sku.into(),
        name: sku.into(),
        qty_milli: 1000,
        unit_price: None,
        amount: Money(amount),
        category: Some(category.into()),
    }
}

fn sale(lines: Vec<ReceiptLine>) -> Receipt {
    Receipt {
        id: "R-1".into(),
        lane: "1".into(),
        timestamp: now(),
        kind: ReceiptKind::Sale,
        currency: "EUR".into(),
        total: Money(lines.iter().map(|l| l.amount.0).sum()),
        card: None,
        rewards: Vec::new(),
        redemptions: Vec::new(),
        lines,
    }
}

fn offer(id: &str, benefit: OfferBenefit) -> Offer {
    Offer {
        id: id.into(),
        target: Target::Customer("C1".into()),
        valid_from: None,
        valid_until: None,
        text: "offer".into(),
        conditions: Conditions::default(),
        benefit,
        requires_activation: false,
        requires_marketing: false,
        max_uses_per_customer: 1,
    }
}

fn holder(profiling: bool) -> Holder<'static> {
    Holder {
        customer_id: "C1",
        tags: &[],
        consent: Some(Consent {
            marketing: false,
            profiling,
        }),
        ..Default::default()
    }
}

/// Every line allowed, one point per euro.
fn allowed(receipt: &Receipt) -> Vec<OfferLine> {
    receipt
        .lines
        .iter()
        .map(|l| OfferLine {
            allowed: true,
            points: l.amount.0 / 100,
        })
        .collect()
}

#[test]
fn a_personal_offer_is_hers_alone() {
    let offers = [offer("O1", OfferBenefit::BonusPoints(50))];
    assert_eq!(active(&offers, &holder(true), now()).len(), 1);
    let other = Holder {
        customer_id: "C2",
        ..holder(true)
    };
    assert!(active(&offers, &other, now()).is_empty());
}

#[test]
fn without_profiling_consent_nothing_is_shown_or_applied() {
    let offers = [offer("O1", OfferBenefit::BonusPoints(50))];
    let receipt = sale(vec![line("4006381333931", "food", 500)]);
    for who in [
        holder(false),
        Holder {
            consent: None,
            ..holder(true)
        },
    ] {
        assert!(active(&offers, &who, now()).is_empty());
        assert!(apply(&offers, &who, &receipt, &allowed(&receipt), now()).is_empty());
    }
    let mut marketing = offer("O2", OfferBenefit::BonusPoints(5));
    marketing.requires_marketing = true;
    assert!(active(&[marketing], &holder(true), now()).is_empty());
}

#[test]
fn segments_validity_activation_and_uses() {
    let mut o = offer("O1", OfferBenefit::BonusPoints(50));
    o.target = Target::Segment("pets".into());
    let tags = vec!["pets".to_string()];
    let mut who = Holder {
        tags: &tags,
        ..holder(true)
    };
    assert!(who.may_use(&o, now()));
    o.valid_from = Some(at("2027-03-11T00:00:00Z"));
    assert!(!who.may_use(&o, now()), "not yet");
    o.valid_from = None;
    o.valid_until = Some(now());
    assert!(!who.may_use(&o, now()), "ended (exclusive)");
    o.valid_until = None;
    o.requires_activation = true;
    assert!(!who.may_use(&o, now()), "not clipped");
    who.clipped.insert("O1".into());
    assert!(who.may_use(&o, now()));
    who.uses.insert("O1".into(), 1);
    assert!(!who.may_use(&o, now()), "used up");
    o.max_uses_per_customer = 2;
    assert!(who.may_use(&o, now()));
}

#[test]
fn conditions_pick_lines_and_exclusions_win() {
    let mut o = offer("O1", OfferBenefit::Multiplier { hundredths: 300 });
    o.conditions.gtins = vec!["4006381333931".into()];
    o.conditions.brands = vec!["400123".into()];
    o.conditions.categories = vec!["coffee".into(), "tobacco".into()];
    let receipt = sale(vec![
        line("4006381333931", "stationery", 1000), // by GTIN: 10 points
        line("4001234000001", "food", 500),        // by brand: 5 points
        line("1111111111111", "coffee", 700),      // by category: 7 points
        line("2222222222222", "tobacco", 900),     // the rules exclude it
        line("3333333333333", "food", 2000),       // not named
        line("4006381333931", "stationery", -300), // a discount line
    ]);
    let mut lines = allowed(&receipt);
    lines[3].allowed = false;
    let used = apply(
        std::slice::from_ref(&o),
        &holder(true),
        &receipt,
        &lines,
        now(),
    );
    assert_eq!(used.len(), 1);
    // (10 + 5 + 7) * (3 - 1)
    assert_eq!(used[0].bonus_points, 44);
    assert_eq!(used[0].qualifying, Money(2200));
    // The offer's own exclusion.
    o.conditions.exclude_categories = vec!["coffee".into()];
    let used = apply(&[o], &holder(true), &receipt, &lines, now());
    assert_eq!(used[0].bonus_points, 30);
}

#[test]
fn minimum_spend_and_amount_off() {
    let mut o = offer("O1", OfferBenefit::AmountOff(Money(500)));
    o.conditions.categories = vec!["coffee".into()];
    o.conditions.min_spend = Some(Money(1000));
    let small = sale(vec![line("1", "coffee", 999)]);
    assert!(apply(
        std::slice::from_ref(&o),
        &holder(true),
        &small,
        &allowed(&small),
        now()
    )
    .is_empty());
    o.conditions.min_spend = Some(Money(300));
    let cheap = sale(vec![line("1", "coffee", 400)]);
    let used = apply(&[o], &holder(true), &cheap, &allowed(&cheap), now());
    assert_eq!(used[0].amount_off, Some(Money(400)), "capped at the lines");
    assert_eq!(used[0].bonus_points, 0);
}

#[test]
fn a_sale_without_qualifying_lines_uses_nothing() {
    let mut o = offer("O1", OfferBenefit::BonusPoints(100));
    o.conditions.categories = vec!["coffee".into()];
    let receipt = sale(vec![line("1", "tea", 400)]);
    assert!(apply(&[o], &holder(true), &receipt, &allowed(&receipt), now()).is_empty());
}

#[test]
fn factors() {
    assert_eq!(parse_factor("2"), Some(200));
    assert_eq!(parse_factor("1.5"), Some(150));
    assert_eq!(parse_factor("0.5"), None);
    assert_eq!(parse_factor("101"), None);
    assert_eq!(parse_factor("x"), None);
}

proptest! {
    /// Whatever the lines, a line that is not allowed or is in an excluded category never
    /// adds to what an offer gives, and the bonus is never negative.
    #[test]
    fn excluded_lines_never_earn(
        amounts in prop::collection::vec((1i64..100_000, 0usize..3, any::<bool>()), 1..12),
        hundredths in 100i64..1_000,
    ) {
        let categories = ["coffee", "tobacco", "food"];
        let receipt = sale(amounts.iter().enumerate()
            .map(|(i, (amount, c, _))| line(&format!("{i}"), categories[*c], *amount))
            .collect());
        let lines: Vec<OfferLine> = amounts.iter()
            .map(|(amount, _, allowed)| OfferLine { allowed: *allowed, points: amount / 100 })
            .collect();
        let mut o = offer("O1", OfferBenefit::Multiplier { hundredths });
        o.conditions.exclude_categories = vec!["tobacco".into()];
        let used = apply(std::slice::from_ref(&o), &holder(true), &receipt, &lines, now());
        // The same receipt with every excluded line removed gives exactly the same.
        let kept: Vec<usize> = (0..amounts.len())
            .filter(|&i| lines[i].allowed && amounts[i].1 != 1)
            .collect();
        let trimmed = sale(kept.iter().map(|&i| receipt.lines[i].clone()).collect());
        let trimmed_lines: Vec<OfferLine> = kept.iter().map(|&i| lines[i]).collect();
        let again = apply(&[o], &holder(true), &trimmed, &trimmed_lines, now());
        prop_assert_eq!(&used, &again);
        for u in &used {
            prop_assert!(u.bonus_points >= 0);
            let base: i64 = trimmed_lines.iter().map(|l| l.points).sum();
            prop_assert!(u.bonus_points <= base * (hundredths - 100) / 100);
        }
    }
}
