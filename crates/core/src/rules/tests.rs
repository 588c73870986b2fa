//! Earning-rule tests: a fixture table (receipt + expected points) run through one `check`
//! helper, targeted tests for rounding, allocation, vesting, clawback and configuration
//! errors; the proptest properties over random receipts are in `tests/props.rs`.

use super::*;
use crate::rules::RulesConfig;
use proptest::prelude::*;

/// The example program: the same rules as `docs/arch/rules-config-snippet.toml`.
const PROGRAM: &str = r#"
points_per_unit = 1
per_amount = "1.00"
rounding = "floor"
categories = ["food", "fresh", "drugstore", "stationery", "books", "tobacco", "deposit", "giftcard"]
excluded_categories = ["tobacco", "deposit", "giftcard"]
excluded_gtin_prefixes = ["978", "979"]
min_spend = "5.00"
cap_per_receipt = 5000
vesting_days = 14

[category_multipliers]
fresh = "2"

[[tiers]]
name = "silver"
factor = "1.25"

[[tiers]]
name = "gold"
factor = "1.5"

[[promotions]]
name = "weekend-double"
weekdays = ["sat", "sun"]
factor = "2"

[[promotions]]
name = "advent-bonus"
from = "2026-11-29"
until = "2026-12-24"
bonus_points = 50
min_spend = "30.00"
"#;

fn config(text: &str) -> RulesConfig {
    toml::from_str(text).expect("rules fixture parses")
}

fn rules(text: &str) -> EarningRules {
    EarningRules::from_config(&config(text), "EUR").expect("rules fixture is valid")
}

fn berlin() -> TimeZone {
    TimeZone::get("Europe/Berlin").expect("tzdb bundled")
}

/// Lines written as `"sku amount [category]"`, separated by `;`.
fn lines(spec: &str) -> Vec<ReceiptLine> {
    spec.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let mut parts = item.split_whitespace();
            let sku = parts.next().expect("sku");
            let amount = Money::parse(parts.next().expect("amount"), 2).expect("amount");
            ReceiptLine {
                sku: sku.into(),
                name: sku.into(),
                qty_milli: 1000,
                unit_price: Some(amount),
                amount,
                category: parts.next().map(str::to_string),
            }
        })
        .collect()
}

fn sale(spec: &str, at: &str) -> Receipt {
    let lines = lines(spec);
    Receipt {
        id: "R-1".into(),
        lane: "1".into(),
        timestamp: at.parse().expect("fixture timestamp"),
        kind: ReceiptKind::Sale,
        currency: "EUR".into(),
        total: lines.iter().map(|l| l.amount).sum(),
        card: Some("2990000000019".into()),
        rewards: vec![],
        redemptions: Vec::new(),
        lines,
    }
}

const MONDAY: &str = "2026-11-23T10:15:00+01:00";
const SATURDAY: &str = "2026-11-28T10:00:00+01:00";
const ADVENT_TUESDAY: &str = "2026-12-01T10:00:00+01:00";

/// The one place the fixtures call the API: points, per-line points and promotions.
fn check(
    rules: &EarningRules,
    spec: &str,
    at: &str,
    tier: Option<&str>,
    expected_points: i64,
    expected_promotions: &[&str],
) -> Earned {
    let receipt = sale(spec, at);
    let earned = rules.earn(&receipt, tier, &berlin());
    assert_eq!(
        earned.points, expected_points,
        "{spec} at {at} tier {tier:?}: {earned:#?}"
    );
    assert_eq!(
        earned.promotions, expected_promotions,
        "{spec} at {at}: promotions"
    );
    assert_eq!(earned.lines.len(), receipt.lines.len());
    assert_eq!(
        earned.lines.iter().map(|l| l.points).sum::<i64>() + earned.bonus_points,
        earned.points,
        "per-line points add up"
    );
    earned
}

/// name, lines, when, tier, expected points, expected promotions.
type Fixture<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    i64,
    &'a [&'a str],
);

#[test]
fn fixture_table() {
    let r = rules(PROGRAM);
    #[rustfmt::skip]
    let table: &[Fixture] = &[
        // name, lines, when, tier, points, promotions
        ("plain food, floor", "4006381333931 12.34 food", MONDAY, None, 12, &[]),
        ("tobacco excluded", "1 10.00 food; 2 8.00 tobacco", MONDAY, None, 10, &[]),
        ("deposit and gift card excluded", "1 10.00 food; 2 0.25 deposit; 3 25.00 giftcard", MONDAY, None, 10, &[]),
        ("only excluded lines earn nothing", "3 50.00 giftcard", MONDAY, None, 0, &[]),
        ("book by ISBN 978 excluded", "9783161484100 20.00 books; 1 6.00 food", MONDAY, None, 6, &[]),
        ("book by ISBN 979 excluded", "9791234567896 20.00 stationery; 1 6.00 food", MONDAY, None, 6, &[]),
        ("978 inside an internal sku is not a GTIN", "978 20.00 stationery", MONDAY, None, 20, &[]),
        ("UPC-A is read as 0+12 digits, not a book", "978123456786 20.00 stationery", MONDAY, None, 20, &[]),
        ("below min spend", "1 4.99 food", MONDAY, None, 0, &[]),
        ("min spend counts eligible spend only", "1 4.00 food; 2 10.00 tobacco", MONDAY, None, 0, &[]),
        ("exactly min spend", "1 5.00 food", MONDAY, None, 5, &[]),
        ("fresh doubles", "1 7.50 fresh", MONDAY, None, 15, &[]),
        ("fresh doubles, floor once", "1 7.55 fresh", MONDAY, None, 15, &[]),
        ("rounding once over the sum", "1 5.99 food; 2 5.99 food", MONDAY, None, 11, &[]),
        ("gold tier", "1 10.00 food", MONDAY, Some("gold"), 15, &[]),
        ("silver tier floors 13.7375", "1 10.99 food", MONDAY, Some("silver"), 13, &[]),
        ("unknown tier earns as basic", "1 10.00 food", MONDAY, Some("platinum"), 10, &[]),
        ("weekend double", "1 10.00 food", SATURDAY, None, 20, &["weekend-double"]),
        ("all factors multiply", "1 10.00 fresh", SATURDAY, Some("gold"), 60, &["weekend-double"]),
        ("weekend promo ignores excluded lines", "1 10.00 food; 2 30.00 tobacco", SATURDAY, None, 20, &["weekend-double"]),
        ("discount line reduces eligible spend", "1 20.00 food; DISC -5.00", MONDAY, None, 15, &[]),
        ("discount below min spend", "1 9.00 food; DISC -5.00", MONDAY, None, 0, &[]),
        ("advent bonus", "1 30.00 food", ADVENT_TUESDAY, None, 80, &["advent-bonus"]),
        ("advent bonus needs its min spend", "1 29.99 food", ADVENT_TUESDAY, None, 29, &[]),
        ("advent bonus ignores excluded spend", "1 20.00 food; 2 20.00 tobacco", ADVENT_TUESDAY, None, 20, &[]),
        ("advent is over", "1 30.00 food", "2026-12-25T10:00:00+01:00", None, 30, &[]),
        ("advent first day", "1 30.00 food", "2026-11-29T00:00:00+01:00", None, 110, &["weekend-double", "advent-bonus"]),
        ("cap", "1 6000.00 food", MONDAY, None, 5000, &[]),
        ("cap takes base first, bonus fills", "1 4990.00 food", ADVENT_TUESDAY, None, 5000, &["advent-bonus"]),
        ("Saturday in Berlin while UTC is still Friday", "1 10.00 food", "2026-11-27T23:30:00Z", None, 20, &["weekend-double"]),
        ("Friday 23:30 in Berlin is no weekend", "1 10.00 food", "2026-11-27T22:30:00Z", None, 10, &[]),
        ("Sunday 23:30 Berlin is Sunday although UTC is 22:30", "1 10.00 food", "2026-11-29T22:30:00Z", None, 20, &["weekend-double"]),
        ("Monday 00:30 Berlin is no weekend although UTC is Sunday", "1 10.00 food", "2026-11-29T23:30:00Z", None, 10, &[]),
    ];
    for (name, spec, at, tier, points, promotions) in table {
        let earned = std::panic::catch_unwind(|| check(&r, spec, at, *tier, *points, promotions));
        assert!(earned.is_ok(), "fixture '{name}' failed");
    }
}

#[test]
fn excluded_lines_are_marked_with_the_reason() {
    let r = rules(PROGRAM);
    let earned = check(
        &r,
        "1 10.00 food; 2 8.00 tobacco; 9783161484100 12.00 books",
        MONDAY,
        None,
        10,
        &[],
    );
    assert_eq!(earned.eligible, Money(1000));
    assert_eq!(earned.lines[0].excluded, None);
    assert_eq!(earned.lines[0].points, 10);
    assert_eq!(earned.lines[0].factor_hundredths, 100);
    assert_eq!(
        earned.lines[1].excluded,
        Some(Exclusion::Category("tobacco".into()))
    );
    assert_eq!(
        earned.lines[2].excluded,
        Some(Exclusion::GtinPrefix("978".into()))
    );
    assert_eq!(earned.lines[1].points + earned.lines[2].points, 0);
    assert_eq!(
        earned.lines[2].excluded.as_ref().map(ToString::to_string),
        Some("articles with GTIN prefix 978 do not earn".into())
    );
}

#[test]
fn a_category_the_rules_do_not_know_earns_nothing_and_the_rest_earns() {
    let r = rules(PROGRAM);
    let earned = check(&r, "1 10.00 food; 2 30.00 garden", MONDAY, None, 10, &[]);
    assert_eq!(earned.eligible, Money(1000));
    assert_eq!(earned.lines[1].points, 0);
    assert_eq!(
        earned.lines[1].excluded,
        Some(Exclusion::UnknownCategory("garden".into()))
    );
    let limits = r.receipt_limits();
    let receipt = sale("1 10.00 food; 2 30.00 garden", MONDAY);
    assert_eq!(
        crate::receipt::validate(&receipt, &limits),
        Ok(()),
        "applied"
    );
    assert_eq!(
        limits.unknown_categories(&receipt),
        vec!["garden".to_string()]
    );
}

#[test]
fn per_line_points_are_distributed_by_largest_remainder() {
    let r = rules(PROGRAM);
    // Exact 5.99 + 11.98 = 17.97 -> 17; shares 5.67 and 11.33 -> 6 and 11.
    let earned = check(&r, "1 5.99 food; 2 5.99 fresh", MONDAY, None, 17, &[]);
    assert_eq!(
        earned.lines.iter().map(|l| l.points).collect::<Vec<_>>(),
        [6, 11]
    );
    assert_eq!(earned.lines[1].factor_hundredths, 200);
    // A discount line shows 0; the positive lines carry the points.
    let earned = check(
        &r,
        "1 10.00 food; D -2.50; 2 10.00 food",
        MONDAY,
        None,
        17,
        &[],
    );
    assert_eq!(
        earned.lines.iter().map(|l| l.points).collect::<Vec<_>>(),
        [9, 0, 8]
    );
}

#[test]
fn rounding_modes() {
    for (amount, floor, nearest, ceil) in [
        ("12.50", 12, 13, 13),
        ("12.49", 12, 12, 13),
        ("12.00", 12, 12, 12),
        ("12.51", 12, 13, 13),
    ] {
        for (mode, expected) in [("floor", floor), ("nearest", nearest), ("ceil", ceil)] {
            let r = rules(&format!("rounding = \"{mode}\""));
            let earned = r.earn(&sale(&format!("1 {amount}"), MONDAY), None, &berlin());
            assert_eq!(earned.points, expected, "{amount} {mode}");
        }
    }
    assert_eq!(round_div(-5, 2, RoundingMode::Floor), -3);
    assert_eq!(round_div(-5, 2, RoundingMode::Ceil), -2);
    assert_eq!(round_div(-5, 2, RoundingMode::Nearest), -2);
    assert_eq!(round_div(5, 0, RoundingMode::Nearest), 0);
}

#[test]
fn points_per_amount_scales() {
    // 5 points per 2.00: 9.99 -> 24.975 -> 24.
    let r = rules("points_per_unit = 5\nper_amount = \"2.00\"");
    assert_eq!(r.earn(&sale("1 9.99", MONDAY), None, &berlin()).points, 24);
    // JPY has no decimals: 1 point per 100 yen.
    let mut c = config("per_amount = \"100\"");
    c.max_receipt_total = "10000000".into();
    let r = EarningRules::from_config(&c, "JPY").expect("valid");
    let mut receipt = sale("1 0", MONDAY);
    receipt.lines[0].amount = Money(1999);
    assert_eq!(r.earn(&receipt, None, &berlin()).points, 19);
}

#[test]
fn returns_earn_nothing() {
    let r = rules(PROGRAM);
    let mut receipt = sale("1 100.00 food", MONDAY);
    receipt.kind = ReceiptKind::Return {
        original_receipt_id: "R-0".into(),
    };
    let earned = r.earn(&receipt, Some("gold"), &berlin());
    assert_eq!(earned.points, 0);
    assert_eq!(earned.vests_at, None);
    assert_eq!(earned.eligible, Money(10000));
}

#[test]
fn vesting_uses_calendar_days_in_the_store_time_zone() {
    let r = rules(PROGRAM);
    let earned = r.earn(&sale("1 10.00 food", MONDAY), None, &berlin());
    assert_eq!(
        earned.vests_at,
        Some("2026-12-07T10:15:00+01:00".parse().expect("ts"))
    );
    // Across the DST change (29 March 2026): same wall-clock time, one hour less.
    let earned = r.earn(
        &sale("1 10.00 food", "2026-03-20T10:00:00+01:00"),
        None,
        &berlin(),
    );
    assert_eq!(
        earned.vests_at,
        Some("2026-04-03T10:00:00+02:00".parse().expect("ts"))
    );
    // Nothing earned: nothing vests.
    let earned = r.earn(&sale("1 1.00 food", MONDAY), None, &berlin());
    assert_eq!(earned.vests_at, None);
    // No vesting configured.
    let r = rules("");
    assert_eq!(
        r.earn(&sale("1 10.00", MONDAY), None, &berlin()).vests_at,
        None
    );
}

const EXTRA_PROMOTIONS: &str = r#"
categories = ["food", "fresh"]

[[tiers]]
name = "gold"
factor = "1"

[[promotions]]
name = "happy-hour"
time_from = "18:00"
time_until = "20:00"
categories = ["fresh"]
factor = "3"

[[promotions]]
name = "fresh-week"
categories = ["fresh"]
factor = "2"

[[promotions]]
name = "gold-night"
time_from = "22:00"
time_until = "02:00"
tiers = ["gold"]
bonus_points = 7
"#;

#[test]
fn time_windows_categories_tiers_and_no_stacking() {
    let r = rules(EXTRA_PROMOTIONS);
    // 17:59: fresh-week only (factor 2) on fresh; food unaffected.
    check(
        &r,
        "1 10.00 fresh; 2 10.00 food",
        "2026-11-23T17:59:00+01:00",
        None,
        30,
        &["fresh-week"],
    );
    // 18:00: happy hour (3) beats fresh-week (2); they do not stack.
    check(
        &r,
        "1 10.00 fresh; 2 10.00 food",
        "2026-11-23T18:00:00+01:00",
        None,
        40,
        &["happy-hour"],
    );
    // 20:00 is outside (until is exclusive).
    check(
        &r,
        "1 10.00 fresh",
        "2026-11-23T20:00:00+01:00",
        None,
        20,
        &["fresh-week"],
    );
    // Window across midnight, gold only.
    check(
        &r,
        "2 10.00 food",
        "2026-11-24T01:30:00+01:00",
        Some("gold"),
        17,
        &["gold-night"],
    );
    check(
        &r,
        "2 10.00 food",
        "2026-11-24T01:30:00+01:00",
        None,
        10,
        &[],
    );
    check(
        &r,
        "2 10.00 food",
        "2026-11-24T02:00:00+01:00",
        Some("gold"),
        10,
        &[],
    );
    check(
        &r,
        "2 10.00 food",
        "2026-11-23T22:00:00+01:00",
        Some("gold"),
        17,
        &["gold-night"],
    );
}

#[test]
fn clawback_is_proportional_and_never_exceeds_the_sale() {
    let r = rules(PROGRAM);
    let third = lines("1 33.33 food");
    let c1 = r.clawback(100, Money(10000), Money::ZERO, &third);
    assert_eq!(
        c1,
        Clawback {
            points: 34,
            eligible_returned: Money(3333)
        }
    );
    let c2 = r.clawback(100, Money(10000), Money(3333), &third);
    assert_eq!(c2.points, 33);
    let c3 = r.clawback(100, Money(10000), Money(6666), &lines("1 33.34 food"));
    assert_eq!(c3.points, 33);
    assert_eq!(c1.points + c2.points + c3.points, 100);
    // Returning more than was bought takes back nothing more.
    let c4 = r.clawback(100, Money(10000), Money(10000), &third);
    assert_eq!(
        c4,
        Clawback {
            points: 0,
            eligible_returned: Money::ZERO
        }
    );
    // Excluded returned lines take back nothing.
    let c = r.clawback(100, Money(10000), Money::ZERO, &lines("2 50.00 tobacco"));
    assert_eq!(c.points, 0);
    // A sale that earned nothing.
    assert_eq!(r.clawback(0, Money(400), Money::ZERO, &third).points, 0);
    assert_eq!(r.clawback(10, Money::ZERO, Money::ZERO, &third).points, 0);
}

#[test]
fn receipt_limits_follow_the_rules() {
    let limits = rules(PROGRAM).receipt_limits();
    assert_eq!(limits.currency, "EUR");
    assert_eq!(limits.max_total, Money(10_000_000));
    assert!(limits.known_categories.contains("books"));
    assert_eq!(limits.known_categories.len(), 8);
}

#[test]
fn every_configuration_problem_is_named() {
    let text = r#"
points_per_unit = -1
per_amount = "0"
min_spend = "x"
cap_per_receipt = -5
vesting_days = 400
categories = ["food", "tobacco"]
excluded_categories = ["tobaco"]
excluded_gtin_prefixes = ["97x"]

[category_multipliers]
food = "1.234"

[[tiers]]
name = "gold"
factor = "1.5"

[[tiers]]
name = "gold"
factor = "101"

[[promotions]]
name = "bad"
from = "2026-12-24"
until = "2026-12-01"
weekdays = ["saturday"]
time_from = "25:00"
factor = "0.5"
tiers = ["platinum"]
categories = ["fod"]

[[promotions]]
name = ""
"#;
    let err = EarningRules::from_config(&config(text), "EUR").expect_err("invalid");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "points_per_unit",
        "per_amount",
        "min_spend",
        "cap_per_receipt",
        "vesting_days",
        "excluded_categories[0]",
        "excluded_gtin_prefixes[0]",
        "category_multipliers.food",
        "tiers[1].name",
        "tiers[1].factor",
        "promotions[0].until",
        "promotions[0].weekdays[0]",
        "promotions[0].time_from",
        "promotions[0].factor",
        "promotions[0].tiers[0]",
        "promotions[0].categories[0]",
        "promotions[1].name",
        "promotions[1]",
    ] {
        assert!(keys.contains(&key), "no problem for {key}: {keys:?}");
    }
    assert!(err
        .to_string()
        .contains("rules.excluded_categories[0]: 'tobaco'"));
}

#[test]
fn the_config_snippet_builds() {
    let snippet = include_str!("../../../../docs/arch/rules-config-snippet.toml");
    #[derive(serde::Deserialize)]
    struct Snippet {
        rules: RulesConfig,
        cards: crate::scan::CardsConfig,
    }
    let file: Snippet = toml::from_str(snippet).unwrap_or_else(|e| panic!("{e}"));
    let built = EarningRules::from_config(&file.rules, "EUR").expect("valid");
    assert_eq!(
        built,
        rules(PROGRAM),
        "the snippet and the test fixture agree"
    );
    crate::scan::CardMatcher::from_config(&file.cards).expect("cards snippet valid");
}

mod props;
