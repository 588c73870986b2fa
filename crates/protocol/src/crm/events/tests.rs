//! Pins the exact bytes of every CRM outbox payload for fixed inputs (field order, number
//! formatting, nulls and omitted fields). The expected texts were taken from the payloads as the
//! store built them with `serde_json::json!` before they moved here: they must never change.

use super::*;
use jiff::Timestamp;
use loyalty_core::customer::{Customer, CustomerOrigin};
use loyalty_core::ledger::EntryKind;
use loyalty_core::money::Money;
use loyalty_core::receipt::{Receipt, ReceiptKind, ReceiptLine};
use loyalty_core::voucher::{Benefit, KeyAnnouncement, Voucher, VoucherId};

fn text<T: Serialize>(payload: &T) -> String {
    serde_json::to_string(payload).expect("serialise")
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).expect("time")
}

fn sale() -> Receipt {
    Receipt {
        id: "R-1".into(),
        lane: "3".into(),
        timestamp: at(1_800_000_000),
        kind: ReceiptKind::Sale,
        currency: "EUR".into(),
        total: Money(1347),
        card: Some("2990000000019".into()),
        rewards: vec!["0123456789abcdef0123".into()],
        redemptions: Vec::new(),
        lines: vec![
            ReceiptLine {
                sku: "4006381333931".into(),
                name: "Pencil \"HB\"".into(),
                qty_milli: 3000,
                unit_price: Some(Money(149)),
                amount: Money(447),
                category: Some("office".into()),
            },
            ReceiptLine {
                sku: "2000000000008".into(),
                name: "Käse".into(),
                qty_milli: 532,
                unit_price: None,
                amount: Money(-900),
                category: None,
            },
        ],
    }
}

fn ret() -> Receipt {
    Receipt {
        id: "R-1-R".into(),
        lane: "3".into(),
        timestamp: at(1_800_000_060),
        kind: ReceiptKind::Return {
            original_receipt_id: "R-1".into(),
        },
        currency: "JPY".into(),
        total: Money(149),
        card: None,
        rewards: Vec::new(),
        redemptions: Vec::new(),
        lines: vec![ReceiptLine {
            sku: "4006381333931".into(),
            name: "Pencil".into(),
            qty_milli: 1000,
            unit_price: Some(Money(149)),
            amount: Money(149),
            category: None,
        }],
    }
}

fn voucher(benefit: Benefit, min_spend: Option<Money>) -> Voucher {
    Voucher {
        id: VoucherId([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23]),
        key_id: "berlin-001-k1".into(),
        currency: "EUR".into(),
        benefit,
        valid_from: at(1_800_000_000),
        valid_until: at(1_802_592_000),
        valid_from_issue: true,
        min_spend,
        customer: None,
    }
}

#[test]
fn event_envelope() {
    let customer = customer(false);
    let payload = CustomerEvent::new(&customer);
    let event = |seq, id, kind, clock_trusted| Event {
        at: at(1_800_000_000),
        clock_trusted,
        id,
        payload: &payload,
        seq,
        kind,
    };
    assert_eq!(
        event(
            7,
            "0000000000000000000000000000000a",
            EventType::CustomerEnrolled,
            true
        )
        .to_json()
        .expect("serialise"),
        r#"{"at":"2027-01-15T08:00:00Z","id":"0000000000000000000000000000000a","payload":{"card":null,"customer_id":"berlin-001-00ff","enrolled_at":"2027-01-15T08:00:00Z","name":null,"tier":null},"seq":7,"type":"customer_enrolled"}"#
    );
    assert_eq!(
        event(
            18_446_744_073_709_551_615,
            "b",
            EventType::VoucherKey,
            false
        )
        .to_json()
        .expect("serialise"),
        r#"{"at":"2027-01-15T08:00:00Z","clock_trusted":false,"id":"b","payload":{"card":null,"customer_id":"berlin-001-00ff","enrolled_at":"2027-01-15T08:00:00Z","name":null,"tier":null},"seq":18446744073709551615,"type":"voucher_key"}"#
    );
}

fn customer(full: bool) -> Customer {
    Customer {
        id: "berlin-001-00ff".into(),
        card: full.then(|| "2990000000019".into()),
        name: full.then(|| "Zoë \u{1F600}".into()),
        tier: full.then(|| "gold".into()),
        enrolled_at: at(1_800_000_000),
        origin: CustomerOrigin::Local,
        confirmed: None,
    }
}

#[test]
fn receipt_payloads() {
    assert_eq!(
        text(&ReceiptEvent::new(&sale(), Some("berlin-001-00ff"), 13)),
        r#"{"card":"2990000000019","currency":"EUR","customer_id":"berlin-001-00ff","kind":"sale","lane":"3","lines":[{"amount":"4.47","category":"office","name":"Pencil \"HB\"","qty":"3","sku":"4006381333931","unit_price":"1.49"},{"amount":"-9.00","category":null,"name":"Käse","qty":"0.532","sku":"2000000000008","unit_price":null}],"original_receipt_id":null,"points":13,"receipt_id":"R-1","rewards":["0123456789abcdef0123"],"timestamp":"2027-01-15T08:00:00Z","total":"13.47"}"#
    );
    assert_eq!(
        text(&ReceiptEvent::new(&ret(), None, -2)),
        r#"{"card":null,"currency":"JPY","customer_id":null,"kind":"return","lane":"3","lines":[{"amount":"149","category":null,"name":"Pencil","qty":"1","sku":"4006381333931","unit_price":"149"}],"original_receipt_id":"R-1","points":-2,"receipt_id":"R-1-R","rewards":[],"timestamp":"2027-01-15T08:01:00Z","total":"149"}"#
    );
    // Categories the rules do not list are flagged (and only then present).
    let flagged =
        text(&ReceiptEvent::new(&sale(), None, 0).with_unknown_categories(vec!["office".into()]));
    assert!(
        flagged.ends_with(r#""total":"13.47","unknown_categories":["office"]}"#),
        "{flagged}"
    );
}

/// A customer without `profiling` consent: her receipt event keeps the customer, card, totals
/// and points, and carries no lines and no categories (SPEC deviation documented in the README,
/// "What data is kept and what leaves the box").
#[test]
fn receipt_payloads_without_profiling_consent_carry_no_lines() {
    assert_eq!(
        text(
            &ReceiptEvent::new(&sale(), Some("berlin-001-00ff"), 13)
                .lines_linked(false)
                .with_unknown_categories(vec!["office".into()])
        ),
        r#"{"card":"2990000000019","currency":"EUR","customer_id":"berlin-001-00ff","kind":"sale","lane":"3","lines":[],"lines_withheld":true,"original_receipt_id":null,"points":13,"receipt_id":"R-1","rewards":["0123456789abcdef0123"],"timestamp":"2027-01-15T08:00:00Z","total":"13.47"}"#
    );
    assert_eq!(
        text(&ReceiptEvent::new(&ret(), Some("berlin-001-00ff"), -2).withholding_lines()),
        r#"{"card":null,"currency":"JPY","customer_id":"berlin-001-00ff","kind":"return","lane":"3","lines":[],"lines_withheld":true,"original_receipt_id":"R-1","points":-2,"receipt_id":"R-1-R","rewards":[],"timestamp":"2027-01-15T08:01:00Z","total":"149"}"#
    );
    // With consent the payload is byte for byte what it always was.
    assert_eq!(
        text(&ReceiptEvent::new(&sale(), Some("berlin-001-00ff"), 13).lines_linked(true)),
        text(&ReceiptEvent::new(&sale(), Some("berlin-001-00ff"), 13))
    );
    let withheld = text(&ReceiptEvent::new(&sale(), Some("c"), 13).withholding_lines());
    let back: ReceiptEvent = serde_json::from_str(&withheld).expect("parse");
    assert!(back.lines_withheld && back.lines.is_empty());
    let linked = text(&ReceiptEvent::new(&sale(), Some("c"), 13));
    let linked: ReceiptEvent = serde_json::from_str(&linked).expect("parse");
    assert!(!linked.lines_withheld, "absent reads as false");
}

#[test]
fn ledger_payloads() {
    let full = LedgerEvent {
        entry: 42,
        customer_id: "berlin-001-00ff".into(),
        kind: EntryKind::Clawback,
        points: -7,
        receipt_id: Some("R-1".into()),
        cause_receipt_id: Some("R-1-R".into()),
        reference: Some("ref".into()),
        reason: Some("goodwill".into()),
        vests_at: Some(at(1_801_209_600)),
        hash: "ab12".into(),
    };
    assert_eq!(
        text(&full),
        r#"{"cause_receipt_id":"R-1-R","customer_id":"berlin-001-00ff","entry":42,"hash":"ab12","kind":"clawback","points":-7,"reason":"goodwill","receipt_id":"R-1","reference":"ref","vests_at":"2027-01-29T08:00:00Z"}"#
    );
    let bare = LedgerEvent {
        entry: 1,
        customer_id: "c".into(),
        kind: EntryKind::Earn,
        points: 13,
        receipt_id: None,
        cause_receipt_id: None,
        reference: None,
        reason: None,
        vests_at: None,
        hash: "00".into(),
    };
    assert_eq!(
        text(&bare),
        r#"{"cause_receipt_id":null,"customer_id":"c","entry":1,"hash":"00","kind":"earn","points":13,"reason":null,"receipt_id":null,"reference":null,"vests_at":null}"#
    );
    // A return after conversion: 3 points clawed now, 7 still owed.
    let floored = OwingLedgerEvent {
        entry: LedgerEvent {
            entry: 9,
            customer_id: "c".into(),
            kind: EntryKind::Clawback,
            points: -3,
            receipt_id: Some("S-1".into()),
            cause_receipt_id: Some("R-1".into()),
            reference: None,
            reason: None,
            vests_at: None,
            hash: "01".into(),
        },
        owed: 7,
    };
    assert_eq!(
        text(&floored),
        r#"{"cause_receipt_id":"R-1","customer_id":"c","entry":9,"hash":"01","kind":"clawback","points":-3,"reason":null,"receipt_id":"S-1","reference":null,"vests_at":null,"owed":7}"#
    );
}

#[test]
fn customer_payloads() {
    assert_eq!(
        text(&CustomerEvent::new(&customer(true))),
        r#"{"card":"2990000000019","customer_id":"berlin-001-00ff","enrolled_at":"2027-01-15T08:00:00Z","name":"Zoë 😀","tier":"gold"}"#
    );
    assert_eq!(
        text(&CustomerEvent::new(&customer(false))),
        r#"{"card":null,"customer_id":"berlin-001-00ff","enrolled_at":"2027-01-15T08:00:00Z","name":null,"tier":null}"#
    );
}

#[test]
fn customer_erased_payload_names_the_id_only() {
    assert_eq!(
        text(&CustomerErasedEvent {
            customer_id: "berlin-001-00ff"
        }),
        r#"{"customer_id":"berlin-001-00ff"}"#
    );
}

#[test]
fn offer_redeemed_payload_is_pinned() {
    let at: Timestamp = "2027-01-15T08:00:00Z".parse().expect("time");
    let event = OfferRedeemedEvent {
        amount_off: None,
        bonus_points: 100,
        customer_id: "berlin-001-00ff".into(),
        lane: "3".into(),
        offer_id: "OF-1".into(),
        receipt_id: "R-1".into(),
        redeemed_at: at,
        uses: 1,
    };
    let pinned = r#"{"amount_off":null,"bonus_points":100,"customer_id":"berlin-001-00ff","lane":"3","offer_id":"OF-1","receipt_id":"R-1","redeemed_at":"2027-01-15T08:00:00Z","uses":1}"#;
    assert_eq!(text(&event), pinned);
    let back: OfferRedeemedEvent = serde_json::from_str(pinned).expect("reads back");
    assert_eq!(text(&back), pinned);
}

#[test]
fn changes_page_offers_and_clips() {
    use crate::crm::{ChangesPage, WireOfferBenefit};
    let page: ChangesPage = serde_json::from_str(
        r#"{"cursor":"3","customers":[{"customer_id":"C1","balance":0,"includes_store_seq":0,"tags":["pets"]}],
            "offers":[{"offer_id":"OF-1","customer_id":"C1","text":"Double points on coffee",
                       "conditions":{"categories":["coffee"],"min_spend":"5.00"},
                       "benefit":{"multiplier":"2"},"requires_activation":true},
                      {"offer_id":"OF-2","withdrawn":true}],
            "clips":[{"customer_id":"C1","offer_id":"OF-1"}]}"#,
    )
    .expect("page with offers");
    assert_eq!(page.customers[0].tags, vec!["pets".to_string()]);
    assert_eq!(page.offers.len(), 2);
    assert_eq!(page.offers[0].max_uses_per_customer, 1);
    assert_eq!(
        page.offers[0].benefit,
        Some(WireOfferBenefit::Multiplier("2".into()))
    );
    assert!(page.offers[1].withdrawn);
    assert_eq!(page.clips[0].offer_id, "OF-1");
    assert!(!page.is_empty());
    // A page without offers writes none of the new fields.
    let plain = serde_json::to_string(&ChangesPage {
        cursor: "1".into(),
        ..Default::default()
    })
    .expect("json");
    assert!(
        !plain.contains("offers") && !plain.contains("clips"),
        "{plain}"
    );
}

#[test]
fn changes_page_merges_and_consent() {
    use crate::crm::{ChangesPage, WireConsent, WireCustomer, WireMerge};
    // Older pages (no `merged`, no `consent`) still read; empty lists are left out.
    let old: ChangesPage =
        serde_json::from_str(r#"{"cursor":"1","customers":[{"customer_id":"C1","balance":5,"includes_store_seq":0}],"erased":[],"revoked_vouchers":[],"keys":[],"rules":null}"#)
            .expect("old page");
    assert!(old.merged.is_empty());
    assert_eq!(old.customers[0].consent, None);
    assert_eq!(
        text(&old),
        r#"{"cursor":"1","customers":[{"customer_id":"C1","balance":5,"includes_store_seq":0,"tier":null,"cards":[],"display_name":null}],"erased":[],"revoked_vouchers":[],"keys":[],"rules":null}"#
    );
    let page = ChangesPage {
        cursor: "2".into(),
        customers: vec![WireCustomer {
            customer_id: "C2".into(),
            balance: 12,
            includes_store_seq: 3,
            tier: None,
            cards: vec!["2990000000019".into(), "2990000000026".into()],
            display_name: None,
            consent: Some(WireConsent {
                marketing: true,
                profiling: false,
            }),
            phone_hash: None,
            email_hash: None,
            tags: Vec::new(),
            birthday: None,
        }],
        merged: vec![WireMerge {
            from: "C1".into(),
            into: "C2".into(),
        }],
        ..ChangesPage::default()
    };
    assert_eq!(
        text(&page),
        r#"{"cursor":"2","customers":[{"customer_id":"C2","balance":12,"includes_store_seq":3,"tier":null,"cards":["2990000000019","2990000000026"],"display_name":null,"consent":{"marketing":true,"profiling":false}}],"erased":[],"merged":[{"from":"C1","into":"C2"}],"revoked_vouchers":[],"keys":[],"rules":null}"#
    );
    let merges_only = ChangesPage {
        merged: page.merged.clone(),
        ..ChangesPage::default()
    };
    assert!(
        !merges_only.is_empty(),
        "a page with a merge carries a change"
    );
}

#[test]
fn voucher_payloads() {
    let issued = |benefit, min_spend, bound: bool, origin| {
        let issue = Issue {
            text: "LGV1:TEXT",
            receipt_id: bound.then_some("R-1"),
            customer_id: bound.then_some("berlin-001-00ff"),
            points: if bound { 500 } else { 0 },
            origin,
            issued_by: None,
        };
        text(&VoucherIssuedEvent::new(
            &voucher(benefit, min_spend),
            issue,
        ))
    };
    assert_eq!(
        issued(
            Benefit::AmountOff(Money(500)),
            Some(Money(2000)),
            true,
            "store"
        ),
        r#"{"currency":"EUR","customer_id":"berlin-001-00ff","key_id":"berlin-001-k1","kind":"amount_off","min_spend":"20.00","origin":"store","points":500,"receipt_id":"R-1","text":"LGV1:TEXT","valid_from":"2027-01-15T08:00:00Z","valid_until":"2027-02-14T08:00:00Z","value":"5.00","voucher_id":"0123456789ABCDEF0123"}"#
    );
    assert_eq!(
        issued(Benefit::PercentOff(15), None, false, "goodwill"),
        r#"{"currency":"EUR","customer_id":null,"key_id":"berlin-001-k1","kind":"percent_off","min_spend":null,"origin":"goodwill","points":0,"receipt_id":null,"text":"LGV1:TEXT","valid_from":"2027-01-15T08:00:00Z","valid_until":"2027-02-14T08:00:00Z","value":15,"voucher_id":"0123456789ABCDEF0123"}"#
    );
    assert_eq!(
        issued(
            Benefit::FreeItem {
                sku: "4000417025005".into()
            },
            None,
            false,
            "crm"
        ),
        r#"{"currency":"EUR","customer_id":null,"key_id":"berlin-001-k1","kind":"free_item","min_spend":null,"origin":"crm","points":0,"receipt_id":null,"text":"LGV1:TEXT","valid_from":"2027-01-15T08:00:00Z","valid_until":"2027-02-14T08:00:00Z","value":"4000417025005","voucher_id":"0123456789ABCDEF0123"}"#
    );
    // A goodwill voucher from the staff page names who issued it.
    let by_staff = Issue {
        text: "LGV1:TEXT",
        receipt_id: None,
        customer_id: Some("berlin-001-00ff"),
        points: 0,
        origin: "goodwill",
        issued_by: Some("Anna"),
    };
    assert_eq!(
        text(&VoucherIssuedEvent::new(
            &voucher(Benefit::AmountOff(Money(500)), None),
            by_staff
        )),
        r#"{"currency":"EUR","customer_id":"berlin-001-00ff","issued_by":"Anna","key_id":"berlin-001-k1","kind":"amount_off","min_spend":null,"origin":"goodwill","points":0,"receipt_id":null,"text":"LGV1:TEXT","valid_from":"2027-01-15T08:00:00Z","valid_until":"2027-02-14T08:00:00Z","value":"5.00","voucher_id":"0123456789ABCDEF0123"}"#
    );
    let v = voucher(Benefit::AmountOff(Money(500)), None);
    assert_eq!(
        text(&VoucherRedeemedEvent::new(
            &v,
            "3",
            "R-1",
            Money(500),
            at(1_800_000_120)
        )),
        r#"{"currency":"EUR","discount":"5.00","key_id":"berlin-001-k1","lane":"3","receipt_id":"R-1","redeemed_at":"2027-01-15T08:02:00Z","voucher_id":"0123456789ABCDEF0123"}"#
    );
}

#[test]
fn key_payload() {
    let key = KeyAnnouncement {
        key_id: "berlin-001-k1".into(),
        algorithm: "ed25519",
        public_key: "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".into(),
    };
    assert_eq!(
        text(&VoucherKeyEvent::new(&key)),
        r#"{"algorithm":"ed25519","key_id":"berlin-001-k1","public_key":"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}"#
    );
}

#[test]
fn quantities_are_exact() {
    assert_eq!(qty_text(2000), "2");
    assert_eq!(qty_text(532), "0.532");
    assert_eq!(qty_text(1500), "1.5");
}

#[test]
fn event_types_round_trip() {
    for kind in [
        EventType::Receipt,
        EventType::Ledger,
        EventType::CustomerEnrolled,
        EventType::VoucherIssued,
        EventType::VoucherRedeemed,
        EventType::VoucherKey,
        EventType::CustomerErased,
        EventType::OfferRedeemed,
    ] {
        assert_eq!(EventType::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(EventType::parse("nope"), None);
}

#[test]
fn every_payload_reads_back_what_it_wrote() {
    fn round<'a, T: serde::Serialize + serde::Deserialize<'a>>(text: &'a str) {
        let back: T = serde_json::from_str(text).expect(text);
        assert_eq!(serde_json::to_string(&back).expect("json"), text);
    }
    let sale = sale();
    let receipt = text(&ReceiptEvent::new(&sale, Some("berlin-001-00ff"), 13));
    round::<ReceiptEvent>(&receipt);
    let flagged =
        text(&ReceiptEvent::new(&sale, None, 0).with_unknown_categories(vec!["office".into()]));
    round::<ReceiptEvent>(&flagged);
    let withheld = text(&ReceiptEvent::new(&sale, Some("c"), 13).withholding_lines());
    round::<ReceiptEvent>(&withheld);
    let customer = text(&CustomerEvent::new(&customer(true)));
    round::<CustomerEvent>(&customer);
    // Escaped text (quotes, backslashes) is read into owned strings.
    let escaped = r#"{"card":"1'; DROP TABLE x;--\"","customer_id":"c","enrolled_at":"2026-01-01T00:00:00Z","name":"O\"Brien","tier":null}"#;
    let back: CustomerEvent = serde_json::from_str(escaped).expect("escaped");
    assert_eq!(back.name.as_deref(), Some("O\"Brien"));
    round::<CustomerEvent>(escaped);
    let ledger = r#"{"cause_receipt_id":null,"customer_id":"c","entry":1,"hash":"00","kind":"earn","points":13,"reason":null,"receipt_id":"R","reference":null,"vests_at":"2027-01-29T08:00:00Z"}"#;
    round::<LedgerEvent>(ledger);
    let bad = ledger.replace("earn", "steal");
    assert!(serde_json::from_str::<LedgerEvent>(&bad).is_err());
}

#[test]
fn an_erasure_scrubs_card_and_name_and_leaves_every_other_byte() {
    let her = ErasedPerson {
        ids: vec!["berlin-001-00ff".into()],
        cards: vec!["2990000000019".into()],
    };
    let enrolled = Event {
        at: at(1_800_000_000),
        clock_trusted: false,
        id: "e1",
        payload: &CustomerEvent::new(&customer(true)),
        seq: 7,
        kind: EventType::CustomerEnrolled,
    }
    .to_json()
    .expect("json");
    let scrubbed = scrub_erased(enrolled.as_bytes(), &her)
        .expect("parse")
        .expect("changed");
    assert_eq!(
        String::from_utf8(scrubbed).expect("utf8"),
        r#"{"at":"2027-01-15T08:00:00Z","clock_trusted":false,"id":"e1","payload":{"card":null,"customer_id":"berlin-001-00ff","enrolled_at":"2027-01-15T08:00:00Z","name":null,"tier":"gold"},"seq":7,"type":"customer_enrolled"}"#
    );
    // Her receipt: the card goes, the lines (article names) stay.
    let receipt = Event {
        at: at(1_800_000_000),
        clock_trusted: true,
        id: "e2",
        payload: &ReceiptEvent::new(&sale(), Some("berlin-001-00ff"), 13),
        seq: 8,
        kind: EventType::Receipt,
    }
    .to_json()
    .expect("json");
    let scrubbed = String::from_utf8(
        scrub_erased(receipt.as_bytes(), &her)
            .expect("parse")
            .expect("changed"),
    )
    .expect("utf8");
    assert_eq!(
        scrubbed,
        receipt.replace(r#""card":"2990000000019""#, r#""card":null"#)
    );
    // A receipt without a customer carrying her card loses the card; anyone else's is untouched.
    let anonymous = Event {
        at: at(1_800_000_000),
        clock_trusted: true,
        id: "e3",
        payload: &ReceiptEvent::new(&sale(), None, 0),
        seq: 9,
        kind: EventType::Receipt,
    }
    .to_json()
    .expect("json");
    let scrubbed = scrub_erased(anonymous.as_bytes(), &her)
        .expect("parse")
        .expect("changed");
    assert!(!String::from_utf8_lossy(&scrubbed).contains("2990000000019"));
    let someone_else = ErasedPerson {
        ids: vec!["other".into()],
        cards: vec!["2990000000026".into()],
    };
    assert_eq!(
        scrub_erased(receipt.as_bytes(), &someone_else).expect("parse"),
        None
    );
    assert_eq!(
        scrub_erased(enrolled.as_bytes(), &someone_else).expect("parse"),
        None
    );
}

#[test]
fn an_unsent_anonymous_receipt_attached_to_a_customer_without_consent_loses_its_lines() {
    let event = |payload: &ReceiptEvent| {
        Event {
            at: at(1_800_000_000),
            clock_trusted: true,
            id: "e9",
            payload,
            seq: 9,
            kind: EventType::Receipt,
        }
        .to_json()
        .expect("json")
    };
    let anonymous =
        event(&ReceiptEvent::new(&sale(), None, 0).with_unknown_categories(vec!["office".into()]));
    let rewritten = withhold_attached_receipt_lines(anonymous.as_bytes(), "R-1", "c-9")
        .expect("parse")
        .expect("rewritten");
    assert_eq!(
        String::from_utf8(rewritten).expect("utf8"),
        event(&ReceiptEvent::new(&sale(), Some("c-9"), 0).withholding_lines())
    );
    // Another receipt, or one that has a customer already, is left alone.
    assert_eq!(
        withhold_attached_receipt_lines(anonymous.as_bytes(), "R-2", "c-9").expect("parse"),
        None
    );
    let hers = event(&ReceiptEvent::new(&sale(), Some("c-1"), 13));
    assert_eq!(
        withhold_attached_receipt_lines(hers.as_bytes(), "R-1", "c-9").expect("parse"),
        None
    );
}
