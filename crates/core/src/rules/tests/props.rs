//! Earning-rule properties over random receipts (proptest): monotone in spend, never negative,
//! within the cap, excluded lines earning nothing, rounding modes ordered, promotions on the
//! store's clock, returns never clawing back more than was earned, no panic on absurd amounts.

use super::*;

const SKUS: [&str; 6] = [
    "4006381333931",
    "9783161484100",
    "9791234567896",
    "12345",
    "4012345678901",
    "DISC",
];
const CATEGORIES: [Option<&str>; 6] = [
    None,
    Some("food"),
    Some("fresh"),
    Some("tobacco"),
    Some("giftcard"),
    Some("books"),
];

fn arb_line(allow_negative: bool) -> impl Strategy<Value = ReceiptLine> {
    let low = if allow_negative { -5_000_i64 } else { 0 };
    (0..SKUS.len(), 0..CATEGORIES.len(), low..200_000_i64).prop_map(|(s, c, amount)| ReceiptLine {
        sku: SKUS[s].into(),
        name: "item".into(),
        qty_milli: 1000,
        unit_price: None,
        amount: Money(amount),
        category: CATEGORIES[c].map(str::to_string),
    })
}

fn arb_tier() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        Just(None),
        Just(Some("silver")),
        Just(Some("gold")),
        Just(Some("x"))
    ]
}

/// Any instant in 2026.
fn arb_timestamp() -> impl Strategy<Value = Timestamp> {
    (1_767_225_600_i64..1_798_761_600).prop_map(|s| Timestamp::from_second(s).expect("in range"))
}

fn receipt_of(lines: Vec<ReceiptLine>, at: Timestamp) -> Receipt {
    let mut r = sale("", MONDAY);
    r.total = lines.iter().map(|l| l.amount).sum();
    r.lines = lines;
    r.timestamp = at;
    r
}

fn with_rounding(mode: &str) -> EarningRules {
    rules(&format!(
        "{}\nrounding = \"{mode}\"",
        PROGRAM.replace("rounding = \"floor\"", "")
    ))
}

proptest! {
    #[test]
    fn points_are_monotone_in_spend(
        lines in prop::collection::vec(arb_line(true), 1..8),
        pick in any::<prop::sample::Index>(),
        extra in 0..50_000_i64,
        tier in arb_tier(),
        at in arb_timestamp(),
        mode in prop_oneof![Just("floor"), Just("nearest"), Just("ceil")],
    ) {
        let r = with_rounding(mode);
        let before = r.earn(&receipt_of(lines.clone(), at), tier, &berlin());
        let mut more = lines;
        let i = pick.index(more.len());
        more[i].amount = Money(more[i].amount.0 + extra);
        let after = r.earn(&receipt_of(more, at), tier, &berlin());
        prop_assert!(after.points >= before.points, "{} < {}", after.points, before.points);
    }

    #[test]
    fn points_are_never_negative_and_add_up(
        lines in prop::collection::vec(arb_line(true), 1..10),
        tier in arb_tier(),
        at in arb_timestamp(),
    ) {
        let r = rules(PROGRAM);
        let earned = r.earn(&receipt_of(lines, at), tier, &berlin());
        prop_assert!(earned.points >= 0);
        prop_assert!(earned.bonus_points >= 0);
        prop_assert!(earned.lines.iter().all(|l| l.points >= 0));
        prop_assert_eq!(
            earned.lines.iter().map(|l| l.points).sum::<i64>() + earned.bonus_points,
            earned.points
        );
    }

    #[test]
    fn the_cap_is_respected(
        lines in prop::collection::vec(arb_line(false), 1..10),
        cap in 1..3000_i64,
        tier in arb_tier(),
        at in arb_timestamp(),
    ) {
        let mut c = config(PROGRAM);
        c.cap_per_receipt = cap;
        let capped = EarningRules::from_config(&c, "EUR").expect("valid");
        c.cap_per_receipt = 0;
        let free = EarningRules::from_config(&c, "EUR").expect("valid");
        let receipt = receipt_of(lines, at);
        let a = capped.earn(&receipt, tier, &berlin());
        let b = free.earn(&receipt, tier, &berlin());
        prop_assert!(a.points <= cap);
        prop_assert_eq!(a.points, b.points.min(cap));
        prop_assert_eq!(a.capped, b.points > cap);
    }

    #[test]
    fn excluded_lines_contribute_nothing(
        lines in prop::collection::vec(arb_line(true), 1..8),
        excluded_amount in -10_000..500_000_i64,
        which in 0..3_usize,
        position in any::<prop::sample::Index>(),
        tier in arb_tier(),
        at in arb_timestamp(),
    ) {
        let r = rules(PROGRAM);
        let before = r.earn(&receipt_of(lines.clone(), at), tier, &berlin());
        let (sku, category) = [
            ("4006381333931", Some("tobacco")),
            ("9783161484100", Some("books")),
            ("9790000000001", None),
        ][which];
        let mut more = lines;
        let at_index = position.index(more.len() + 1);
        more.insert(at_index, ReceiptLine {
            sku: sku.into(),
            name: "excluded".into(),
            qty_milli: 1000,
            unit_price: None,
            amount: Money(excluded_amount),
            category: category.map(str::to_string),
        });
        let after = r.earn(&receipt_of(more, at), tier, &berlin());
        prop_assert_eq!(after.points, before.points);
        prop_assert_eq!(after.eligible, before.eligible);
        prop_assert_eq!(after.lines[at_index].points, 0);
        prop_assert!(after.lines[at_index].excluded.is_some());
    }

    #[test]
    fn floor_le_nearest_le_ceil(
        lines in prop::collection::vec(arb_line(true), 1..8),
        tier in arb_tier(),
        at in arb_timestamp(),
    ) {
        let receipt = receipt_of(lines, at);
        let [f, n, c] = ["floor", "nearest", "ceil"]
            .map(|m| with_rounding(m).earn(&receipt, tier, &berlin()).points);
        prop_assert!(f <= n && n <= c, "{f} {n} {c}");
        prop_assert!(c - f <= 1);
    }

    #[test]
    fn weekend_promotion_follows_the_store_clock(at in arb_timestamp()) {
        let r = rules(PROGRAM);
        let earned = r.earn(&receipt_of(lines("1 10.00 food"), at), None, &berlin());
        let local = at.to_zoned(berlin()).weekday();
        let weekend = matches!(local, Weekday::Saturday | Weekday::Sunday);
        let advent = earned.promotions.iter().any(|p| p == "advent-bonus");
        prop_assert!(!advent);
        prop_assert_eq!(earned.points, if weekend { 20 } else { 10 });
        prop_assert_eq!(earned.promotions.is_empty(), !weekend);
    }

    #[test]
    fn partial_returns_never_claw_back_more_than_earned(
        sale_points in 0..10_000_i64,
        sale_eligible in 1..100_000_i64,
        returns in prop::collection::vec(0..40_000_i64, 1..6),
        mode in prop_oneof![Just("floor"), Just("nearest"), Just("ceil")],
    ) {
        let r = with_rounding(mode);
        let mut returned = Money::ZERO;
        let mut clawed = 0;
        for amount in returns {
            let c = r.clawback(sale_points, Money(sale_eligible), returned, &[ReceiptLine {
                sku: "1".into(),
                name: "x".into(),
                qty_milli: 1000,
                unit_price: None,
                amount: Money(amount),
                category: Some("food".into()),
            }]);
            prop_assert!(c.points >= 0);
            returned = returned + c.eligible_returned;
            clawed += c.points;
        }
        prop_assert!(clawed <= sale_points);
        prop_assert!(returned.0 <= sale_eligible);
        if returned.0 == sale_eligible {
            prop_assert_eq!(clawed, sale_points);
        }
    }

    #[test]
    fn absurd_amounts_never_panic(
        amounts in prop::collection::vec(any::<i64>(), 1..6),
        at in arb_timestamp(),
    ) {
        let r = rules(PROGRAM);
        let lines = amounts.into_iter().map(|a| ReceiptLine {
            sku: "1".into(),
            name: "x".into(),
            qty_milli: 1000,
            unit_price: None,
            amount: Money(a),
            category: Some("fresh".into()),
        }).collect();
        let mut receipt = receipt_of(vec![], at);
        receipt.lines = lines;
        let earned = r.earn(&receipt, Some("gold"), &berlin());
        prop_assert!(earned.points >= 0 && earned.points <= 5000);
    }
}
