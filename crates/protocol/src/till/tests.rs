//! Tests of the till's JSON contract: receipts read exactly (returns signed either way, the id
//! read leniently when the rest is refused), responses and scan payloads.

use super::*;

const RECEIPT: &str = r#"{"receipt_id": "R-0001", "lane": "3", "timestamp": "2026-11-23T10:15:00+01:00",
 "kind": "sale", "currency": "EUR", "total": "12.34", "card": "2990000000019", "rewards": [],
 "lines": [{"sku": "4006381333931", "name": "Pencil", "qty": 2, "unit_price": "1.49", "amount": "2.98", "category": "stationery"},
           {"sku": "1", "name": "Book", "qty": 1, "amount": 9.36}]}"#;

#[test]
fn reads_the_spec_example_exactly() {
    let receipt = parse_receipt(RECEIPT.as_bytes(), "3", 2).expect("valid");
    assert_eq!(receipt.id, "R-0001");
    assert_eq!(receipt.total, Money(1234));
    assert_eq!(receipt.lines[0].qty_milli, 2000);
    assert_eq!(receipt.lines[0].unit_price, Some(Money(149)));
    // A JSON number is read from its text: 9.36 stays 936 cents.
    assert_eq!(receipt.lines[1].amount, Money(936));
    assert_eq!(receipt.card.as_deref(), Some("2990000000019"));
}

#[test]
fn refuses_bad_messages_with_the_field() {
    assert!(matches!(
        parse_receipt(b"{not json", "3", 2),
        Err(WireError::Malformed(_))
    ));
    let wrong_lane = parse_receipt(RECEIPT.as_bytes(), "4", 2).expect_err("lane");
    assert!(wrong_lane.to_string().starts_with("lane:"));
    let too_precise = RECEIPT.replace("\"12.34\"", "\"12.345\"");
    let err = parse_receipt(too_precise.as_bytes(), "3", 2).expect_err("decimals");
    assert!(err.to_string().starts_with("total:"), "{err}");
    let float_exp = RECEIPT.replace("9.36", "9.36e0");
    assert!(parse_receipt(float_exp.as_bytes(), "3", 2).is_err());
    let typo = RECEIPT.replace("\"rewards\"", "\"reward\"");
    assert!(matches!(
        parse_receipt(typo.as_bytes(), "3", 2),
        Err(WireError::Malformed(_))
    ));
    let ret = RECEIPT.replace("\"sale\"", "\"return\"");
    let err = parse_receipt(ret.as_bytes(), "3", 2).expect_err("no original");
    assert!(err.to_string().starts_with("original_receipt_id"));
}

#[test]
fn negative_return_lines_are_normalised() {
    let text = r#"{"receipt_id": "R-2", "timestamp": "2026-11-23T10:15:00Z", "kind": "return",
        "original_receipt_id": "R-1", "currency": "EUR", "total": "-2.98",
        "lines": [{"sku": "4006381333931", "qty": -2, "amount": "-2.98"}]}"#;
    let receipt = parse_receipt(text.as_bytes(), "1", 2).expect("valid");
    assert_eq!(receipt.total, Money(298));
    assert_eq!(receipt.lines[0].qty_milli, 2000);
    assert_eq!(receipt.lines[0].amount, Money(298));
}

/// A return of `amounts` (one line each, qty 1) totalling `total`, as a till sends it.
fn return_json(total: &str, amounts: &[&str]) -> String {
    let lines: Vec<String> = amounts
        .iter()
        .enumerate()
        .map(|(i, amount)| format!(r#"{{"sku": "{i}", "qty": 1, "amount": "{amount}"}}"#))
        .collect();
    format!(
        r#"{{"receipt_id": "R-9", "timestamp": "2026-11-23T10:15:00Z", "kind": "return",
        "original_receipt_id": "R-1", "currency": "EUR", "total": "{total}",
        "lines": [{}]}}"#,
        lines.join(", ")
    )
}

fn checked(total: &str, amounts: &[&str]) -> Result<Receipt, String> {
    use loyalty_core::receipt::{validate, ReceiptLimits};
    let limits = ReceiptLimits {
        currency: "EUR".into(),
        max_total: Money(1_000_000),
        known_categories: Default::default(),
    };
    let receipt = parse_receipt(return_json(total, amounts).as_bytes(), "1", 2)
        .map_err(|err| err.to_string())?;
    validate(&receipt, &limits).map_err(|err| err.to_string())?;
    Ok(receipt)
}

#[test]
fn returns_are_accepted_signed_either_way() {
    // The issue's return: qty 1, amount -3.00, total -3.00.
    let negative = checked("-3.00", &["-3.00"]).expect("negative return");
    let positive = checked("3.00", &["3.00"]).expect("positive return");
    assert_eq!(negative, positive);
    assert_eq!(negative.total, Money(300));
    assert_eq!(negative.lines[0].amount, Money(300));
    // With a discount line, signed the other way in either convention.
    let negative = checked("-2.50", &["-3.00", "0.50"]).expect("negative with discount");
    let positive = checked("2.50", &["3.00", "-0.50"]).expect("positive with discount");
    assert_eq!(negative, positive);
    assert_eq!(negative.lines[1].amount, Money(-50));
}

#[test]
fn returns_mixing_signs_are_refused_clearly() {
    for (total, amounts) in [
        ("3.00", &["-3.00"][..]),
        ("-3.00", &["3.00"][..]),
        ("-5.00", &["-3.00", "2.00"][..]),
        ("5.00", &["3.00", "-2.00"][..]),
    ] {
        let err = checked(total, amounts).expect_err("mixed signs");
        assert!(
            err.contains("signed alike, all positive or all negative"),
            "{total} {amounts:?}: {err}"
        );
    }
    // Lines that add up under neither convention are a plain mismatch.
    let err = checked("-9.00", &["-3.00"]).expect_err("mismatch");
    assert!(err.contains("disagrees with the sum of the lines"), "{err}");
}

#[test]
fn the_receipt_id_is_read_whatever_else_is_wrong() {
    // The issue's receipt: one amount unreadable. Strict for money, lenient for the id.
    let bad_amount = RECEIPT.replace("\"2.98\"", "\"5.0.0\"");
    let err = parse_receipt(bad_amount.as_bytes(), "3", 2).expect_err("5.0.0");
    assert!(err.to_string().starts_with("lines[0].amount"), "{err}");
    assert_eq!(
        readable_receipt_id(bad_amount.as_bytes()).as_deref(),
        Some("R-0001")
    );
    // Broken JSON after the id, a missing field, a numeric id.
    let broken = br#"{"lane": "3", "receipt_id": "R-\"7\"", "total": 5.0.0, "#;
    assert_eq!(readable_receipt_id(broken).as_deref(), Some("R-\"7\""));
    let no_lines = RECEIPT.replace("\"lines\"", "\"items\"");
    assert!(parse_receipt(no_lines.as_bytes(), "3", 2).is_err());
    assert_eq!(
        readable_receipt_id(no_lines.as_bytes()).as_deref(),
        Some("R-0001")
    );
    assert_eq!(
        readable_receipt_id(br#"{"receipt_id": 42, "total": "x"}"#).as_deref(),
        Some("42")
    );
    // No id, an empty one, one too long, not JSON at all: none.
    assert_eq!(readable_receipt_id(br#"{"total": "1.00"}"#), None);
    assert_eq!(readable_receipt_id(br#"{"receipt_id": ""}"#), None);
    let long = format!(r#"{{"receipt_id": "{}"}}"#, "x".repeat(65));
    assert_eq!(readable_receipt_id(long.as_bytes()), None);
    assert_eq!(readable_receipt_id(b"\x01garbage"), None);
    assert_eq!(
        readable_receipt_id(br#"{"original_receipt_id": "R-1", "#),
        None
    );
}

#[test]
fn scan_payloads() {
    assert_eq!(scan_payload(b"]E02990000000019\r\n"), b"]E02990000000019");
    assert_eq!(
        scan_payload(br#"{"data": "2990000000019", "symbology": "]E0"}"#),
        b"]E02990000000019"
    );
}

#[test]
fn responses_carry_type_and_lane() {
    let json = Response::error("3", Some("R-1"), "invalid_receipt", "total disagrees").to_json();
    let value: serde_json::Value = serde_json::from_slice(&json).expect("json");
    assert_eq!(value["type"], "error");
    assert_eq!(value["lane"], "3");
    assert_eq!(value["receipt_id"], "R-1");
    assert_eq!(value["code"], "invalid_receipt");
}

#[test]
fn receipt_messages_keep_their_bytes_and_parse() {
    let mut line = LineMessage::new("4000417025005", "Coffee", Qty::Pieces(2), "17.98");
    line.category = Some("food".into());
    let mut sale = ReceiptMessage::sale(
        "D-2001",
        "2",
        "2027-01-15T08:00:00Z",
        "EUR",
        "17.98",
        vec![line],
    );
    sale.card = Some("2990000000019".into());
    assert_eq!(
        String::from_utf8(sale.to_json()).expect("utf-8"),
        r#"{"card":"2990000000019","currency":"EUR","kind":"sale","lane":"2","lines":[{"amount":"17.98","category":"food","name":"Coffee","qty":2,"sku":"4000417025005"}],"receipt_id":"D-2001","timestamp":"2027-01-15T08:00:00Z","total":"17.98"}"#
    );
    let mut weighed = LineMessage::new("2", "Cheese", Qty::Decimal("0.532".into()), "9.00");
    weighed.unit_price = Some("16.92".into());
    let mut ret = ReceiptMessage::sale(
        "D-2001-R",
        "2",
        "2027-01-15T08:00:00Z",
        "EUR",
        "9.00",
        vec![weighed],
    )
    .returning("D-2001");
    ret.rewards = vec!["0123456789ABCDEF0123".into()];
    assert_eq!(
        String::from_utf8(ret.to_json()).expect("utf-8"),
        r#"{"currency":"EUR","kind":"return","lane":"2","lines":[{"amount":"9.00","name":"Cheese","qty":"0.532","sku":"2","unit_price":"16.92"}],"original_receipt_id":"D-2001","receipt_id":"D-2001-R","rewards":["0123456789ABCDEF0123"],"timestamp":"2027-01-15T08:00:00Z","total":"9.00"}"#
    );
    let parsed = parse_receipt(&ret.to_json(), "2", 2).expect("parses");
    assert_eq!(parsed.lines[0].qty_milli, 532);
    assert_eq!(
        parsed.kind,
        ReceiptKind::Return {
            original_receipt_id: "D-2001".into()
        }
    );
    assert!(parse_receipt(&sale.to_json(), "2", 2).is_ok());
}

#[test]
fn scan_messages_round_trip() {
    let scan = ScanMessage {
        data: "2990000000019".into(),
        symbology: Some("]E0".into()),
    };
    let json = serde_json::to_vec(&scan).expect("json");
    assert_eq!(json, br#"{"data":"2990000000019","symbology":"]E0"}"#);
    assert_eq!(scan_payload(&json), b"]E02990000000019");
}

#[test]
fn redeem_requests_take_points_or_an_amount() {
    use loyalty_core::redemption::Ask;
    let points = RedeemMessage::points("PAY-1", "C-1", 250);
    assert_eq!(
        points.to_json(),
        br#"{"customer_id":"C-1","points":250,"reference":"PAY-1"}"#
    );
    let read = parse_redeem(&points.to_json(), 2).expect("parses");
    assert_eq!(read.reference, "PAY-1");
    assert_eq!(read.customer_id, "C-1");
    assert_eq!(read.ask, Ask::Points(250));
    let amount = RedeemMessage::amount("PAY-2", "C-1", "2.50");
    assert_eq!(
        amount.to_json(),
        br#"{"amount":"2.50","customer_id":"C-1","reference":"PAY-2"}"#
    );
    assert_eq!(
        parse_redeem(&amount.to_json(), 2).expect("parses").ask,
        Ask::Amount(Money(250))
    );
    // A JSON number is read from its text, never through a float.
    let number = br#"{"reference": "P", "customer_id": "C", "amount": 0.1}"#;
    assert_eq!(
        parse_redeem(number, 2).expect("parses").ask,
        Ask::Amount(Money(10))
    );
    // Both, neither, a typo, an empty reference: refused with the field.
    for bad in [
        &br#"{"reference": "P", "customer_id": "C", "points": 1, "amount": "1.00"}"#[..],
        br#"{"reference": "P", "customer_id": "C"}"#,
        br#"{"reference": "P", "customer": "C", "points": 1}"#,
        br#"{"reference": "", "customer_id": "C", "points": 1}"#,
        br#"{"reference": "P", "customer_id": "C", "points": 1.5}"#,
        b"not json",
    ] {
        assert!(
            parse_redeem(bad, 2).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(parse_void(b"").is_ok());
    assert!(parse_void(br#"{"reason": "customer left"}"#).is_ok());
    assert!(parse_void(b"[1]").is_err());
}

#[test]
fn redemption_answers_are_pinned() {
    let reserved = Response::Redemption {
        lane: "3".into(),
        reference: "PAY-1".into(),
        status: "reserved".into(),
        points: 250,
        discount: Some(DiscountJson::AmountOff {
            amount: "2.50".into(),
        }),
        available: Some(50),
        expires_at: Some("2026-11-23T10:30:00Z".into()),
    };
    assert_eq!(
        String::from_utf8(reserved.to_json()).expect("utf-8"),
        r#"{"type":"redemption","lane":"3","reference":"PAY-1","status":"reserved","points":250,"discount":{"kind":"amount_off","amount":"2.50"},"available":50,"expires_at":"2026-11-23T10:30:00Z"}"#
    );
    let insufficient = Response::Redemption {
        lane: "3".into(),
        reference: "PAY-2".into(),
        status: "insufficient".into(),
        points: 900,
        discount: None,
        available: Some(50),
        expires_at: None,
    };
    assert_eq!(
        String::from_utf8(insufficient.to_json()).expect("utf-8"),
        r#"{"type":"redemption","lane":"3","reference":"PAY-2","status":"insufficient","points":900,"available":50}"#
    );
    let void = Response::Void {
        lane: "3".into(),
        redemptions: vec!["PAY-1".into()],
        vouchers: vec!["abc".into()],
    };
    assert_eq!(
        String::from_utf8(void.to_json()).expect("utf-8"),
        r#"{"type":"void","lane":"3","redemptions":["PAY-1"],"vouchers":["abc"]}"#
    );
    let points = Response::Points {
        lane: "3".into(),
        receipt_id: "R-1".into(),
        customer_id: Some("C-1".into()),
        earned: 12,
        balance: Some(62),
        duplicate: false,
        vouchers: Vec::new(),
        unknown_categories: Vec::new(),
        redemptions: vec![RedemptionResultJson {
            reference: "PAY-1".into(),
            status: "committed".into(),
            points: 250,
        }],
    };
    assert_eq!(
        String::from_utf8(points.to_json()).expect("utf-8"),
        r#"{"type":"points","lane":"3","receipt_id":"R-1","customer_id":"C-1","earned":12,"balance":62,"duplicate":false,"redemptions":[{"reference":"PAY-1","status":"committed","points":250}]}"#
    );
}

#[test]
fn receipts_name_their_redemptions() {
    let mut sale = ReceiptMessage::sale(
        "R-7",
        "2",
        "2026-11-23T10:15:00Z",
        "EUR",
        "1.00",
        vec![LineMessage::new("1", "Tea", Qty::Pieces(1), "1.00")],
    );
    sale.redemptions = vec!["PAY-1".into()];
    let json = String::from_utf8(sale.to_json()).expect("utf-8");
    assert!(
        json.contains(r#""receipt_id":"R-7","redemptions":["PAY-1"],"timestamp""#),
        "{json}"
    );
    let parsed = parse_receipt(json.as_bytes(), "2", 2).expect("parses");
    assert_eq!(parsed.redemptions, vec!["PAY-1".to_string()]);
    assert!(parse_receipt(RECEIPT.as_bytes(), "3", 2)
        .expect("valid")
        .redemptions
        .is_empty());
}
