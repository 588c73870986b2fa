//! The story the demo tells: a scripted morning at the tills (cards, receipts, a duplicate, a
//! voucher issued and redeemed, paying with points, a return, bad input), then ordinary trading until stopped.

use super::lanes::{Lanes, Recorder};
use super::{explain, say};
use crate::loadgen;
use loyalty_protocol::till::{LineMessage, Qty, ReceiptMessage, RedeemMessage};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub(super) fn receipt_json(
    id: &str,
    lane: &str,
    lines: &[(&str, &str, i64, &str, &str)],
    card: Option<&str>,
) -> ReceiptMessage {
    let mut total = loyalty_core::money::Money::ZERO;
    let lines: Vec<LineMessage> = lines
        .iter()
        .map(|(sku, name, qty, amount, category)| {
            total = total + loyalty_core::money::Money::parse(amount, 2).unwrap_or_default();
            let mut line = LineMessage::new(sku, name, Qty::Pieces(*qty), amount);
            line.category = Some(category.to_string());
            line
        })
        .collect();
    let now = jiff::Timestamp::now().to_string();
    let mut receipt = ReceiptMessage::sale(id, lane, &now, "EUR", &total.format(2), lines);
    receipt.card = card.map(str::to_string);
    receipt
}

pub(super) async fn story(lanes: &mut Lanes, recorder: &mut Recorder) {
    say("Lane 1: a customer scans her loyalty card (EAN-13 barcode with AIM prefix ]E0)");
    explain("The card 2990000000019 is in the program's range (prefix 299) but unknown here,");
    explain("so the gateway enrolls her offline and answers at once.");
    recorder.scan(lanes, "1", b"]E02990000000019", 1).await;

    say("Lane 1: the till sends the receipt as JSON over MQTT");
    explain("Fresh produce earns double; tobacco and bottle deposits earn nothing. The receipt is");
    explain("fsynced to disk before the lane hears 'points'.");
    let receipt = receipt_json(
        "D-1001",
        "1",
        &[
            ("4011", "Bananas", 2, "3.98", "fresh"),
            ("4006381333931", "Pencils", 3, "4.47", "stationery"),
            (
                "9780140449136",
                "Book (ISBN, excluded)",
                1,
                "12.00",
                "books",
            ),
            ("40084963", "Cigarettes", 1, "8.00", "tobacco"),
            ("PFAND", "Deposit", 6, "1.50", "deposit"),
        ],
        None,
    );
    recorder.receipt(lanes, "1", &receipt).await;

    say("Lane 1: the till's network hiccups and it sends the same receipt again");
    explain("Same receipt id: the same answer, marked duplicate, and no new points.");
    recorder.receipt(lanes, "1", &receipt).await;

    say("Lane 2: a card swiped through the magnetic stripe reader (track 2)");
    let scanned = recorder
        .scan(lanes, "2", b";2990000000026=49120000000?", 1)
        .await;
    let receipt2 = receipt_json(
        "D-2001",
        "2",
        &[
            ("4000417025005", "Coffee", 2, "17.98", "food"),
            ("4005808262946", "Shampoo", 1, "3.45", "drugstore"),
        ],
        None,
    );
    recorder.receipt(lanes, "2", &receipt2).await;
    if let Some(customer) = scanned.first().and_then(|a| a["customer_id"].as_str()) {
        pay_with_points(lanes, recorder, customer).await;
    }

    say("Lane 3: the customer shows the app's QR card on her phone");
    recorder
        .scan(
            lanes,
            "3",
            b"]Q1https://app.example.com/card/2990000000033",
            1,
        )
        .await;
    let receipt3 = receipt_json(
        "D-3001",
        "3",
        &[
            ("2000000000022", "Cheese", 1, "6.40", "fresh"),
            ("4001686301265", "Bread", 1, "2.99", "food"),
        ],
        None,
    );
    recorder.receipt(lanes, "3", &receipt3).await;

    say("Lane 3: a bigger shop crosses the reward threshold: a voucher is issued");
    explain(
        "Every 30 points become a 3.00 voucher. The points are converted by a ledger entry and",
    );
    explain(
        "the voucher is stored durably before the lane hears of it; the till prints its QR code.",
    );
    let receipt3b = receipt_json(
        "D-3002",
        "3",
        &[
            ("4011", "Bananas", 3, "5.97", "fresh"),
            ("4000417025005", "Coffee", 1, "8.99", "food"),
        ],
        Some("2990000000033"),
    );
    let answers = recorder.receipt(lanes, "3", &receipt3b).await;
    let voucher_text = answers
        .first()
        .and_then(|a| a["vouchers"][0]["text"].as_str())
        .map(str::to_string);
    let voucher_id = answers
        .first()
        .and_then(|a| a["vouchers"][0]["voucher_id"].as_str())
        .map(str::to_string);
    if let (Some(text), Some(id)) = (voucher_text, voucher_id) {
        explain("The voucher's QR code as the customer's phone or the receipt shows it:");
        match loyalty_daemon::render::terminal(&text, true) {
            Ok(art) => println!("{art}"),
            Err(err) => explain(&format!("(cannot draw the QR code: {err})")),
        }
        say("Lane 1: the customer comes back, shows her card and the voucher");
        explain(
            "The voucher is bound to her, so the lane identifies her first; the gateway checks",
        );
        explain(
            "the Ed25519 signature offline, the validity window and the binding, and reserves it.",
        );
        recorder.scan(lanes, "1", b"]E02990000000033", 1).await;
        recorder
            .step(lanes, "1", "scan", text.clone().into_bytes(), 1)
            .await;
        explain("The till applies the discount and names the voucher in the receipt: redeemed, durably.");
        let mut receipt = receipt_json(
            "D-1002",
            "1",
            &[("4000417025005", "Coffee", 1, "8.99", "food")],
            None,
        );
        receipt.rewards = vec![id.to_string()];
        recorder.receipt(lanes, "1", &receipt).await;
        say("Lane 2: someone tries the same voucher again");
        recorder
            .step(lanes, "2", "scan", text.into_bytes(), 1)
            .await;
    } else {
        explain("(no voucher was issued: check [rewards] in the demo configuration)");
    }

    say("Lane 4: a receipt without a card, then the card is scanned right after");
    explain("Within the configured window the card attaches to the receipt retroactively.");
    let receipt4 = receipt_json(
        "D-4001",
        "4",
        &[("4001686301265", "Bread", 2, "5.98", "food")],
        None,
    );
    recorder.receipt(lanes, "4", &receipt4).await;
    recorder.scan(lanes, "4", b"2990000000019", 2).await;

    say("Lane 2: a return: the customer brings the coffee back");
    explain("Points are clawed back in proportion to what was returned, never more than earned.");
    let ret = receipt_json(
        "D-2001-R",
        "2",
        &[("4000417025005", "Coffee", 2, "17.98", "food")],
        None,
    )
    .returning("D-2001");
    recorder.receipt(lanes, "2", &ret).await;

    say("Bad input gets a clear error answer, never silence");
    recorder
        .step(
            lanes,
            "3",
            "receipt",
            b"{\"receipt_id\": \"D-9\", \"total\": ".to_vec(),
            1,
        )
        .await;
    recorder.scan(lanes, "3", b"]E02990000000010", 1).await;
    recorder
        .scan(lanes, "3", b";4111111111111111=2912?", 1)
        .await;
}
/// Lane 2: the customer pays part of her next purchase with points.
async fn pay_with_points(lanes: &mut Lanes, recorder: &mut Recorder, customer: &str) {
    say("Lane 2: she pays 1.50 of her next purchase with points");
    explain("At 0.10 a point that is 15 points: the gateway holds them durably for this sale");
    explain("(never more than she has; a second lane cannot take them meanwhile) and answers the");
    explain("discount. The receipt names the reservation: committed once, in its own transaction.");
    let redeem = RedeemMessage::amount("PAY-2002", customer, "1.50");
    recorder
        .step(lanes, "2", "redeem", redeem.to_json(), 1)
        .await;
    let mut receipt = receipt_json(
        "D-2002",
        "2",
        &[("4001686301265", "Bread", 2, "5.98", "food")],
        Some("2990000000026"),
    );
    receipt.redemptions = vec!["PAY-2002".into()];
    recorder.receipt(lanes, "2", &receipt).await;
}

/// The customer head office sent with a personal offer (see [`offer_page`]).
pub(super) const OFFER_CARD: &str = "2990000000057";

/// The changes page the demo's CRM serves first: a customer who consented to personalisation,
/// with a personal offer on coffee.
pub(super) fn offer_page() -> loyalty_protocol::crm::ChangesPage {
    use loyalty_protocol::crm::{
        ChangesPage, WireConsent, WireCustomer, WireOffer, WireOfferBenefit, WireOfferConditions,
    };
    ChangesPage {
        customers: vec![WireCustomer {
            customer_id: "demo-ada".into(),
            balance: 0,
            includes_store_seq: 0,
            tier: None,
            cards: vec![OFFER_CARD.into()],
            display_name: Some("Ada".into()),
            consent: Some(WireConsent {
                marketing: true,
                profiling: true,
            }),
            phone_hash: None,
            email_hash: None,
            tags: Vec::new(),
            birthday: None,
        }],
        offers: vec![WireOffer {
            offer_id: "D-OFFER-1".into(),
            customer_id: Some("demo-ada".into()),
            segment: None,
            valid_from: None,
            valid_until: None,
            text: "50 bonus points on coffee".into(),
            conditions: WireOfferConditions {
                gtins: vec!["4000417025005".into()],
                ..Default::default()
            },
            benefit: Some(WireOfferBenefit::BonusPoints(50)),
            requires_activation: false,
            requires_marketing: false,
            max_uses_per_customer: 1,
            withdrawn: false,
        }],
        ..ChangesPage::default()
    }
}

/// Ada's personal offer: on her screen at the scan, applied once on her receipt.
pub(super) async fn personal_offer(lanes: &mut Lanes, recorder: &mut Recorder) {
    say("Lane 2: Ada scans her card: head office sent her a personal offer");
    explain("She consented to personalisation, so her offer is on the till's screen in the");
    explain("customer answer (offers), with her redeemable points and open vouchers.");
    let mut scan = OFFER_CARD.as_bytes().to_vec();
    scan.splice(0..0, *b"]E0");
    recorder.scan(lanes, "2", &scan, 1).await;
    explain("She buys the coffee: the offer adds its 50 points, once, in the receipt's own");
    explain("transaction; the use goes to head office as an offer_redeemed event.");
    let receipt = receipt_json(
        "D-6001",
        "2",
        &[("4000417025005", "Coffee", 1, "8.99", "food")],
        Some(OFFER_CARD),
    );
    recorder.receipt(lanes, "2", &receipt).await;
}

/// Keeps the store trading until `stop` fires: each lane scans a card and sends a receipt.
pub(super) async fn keep_trading(
    lanes: &mut Lanes,
    recorder: &mut Recorder,
    stop: &CancellationToken,
) -> u64 {
    let mut cycle = 0u64;
    while !stop.is_cancelled() {
        cycle += 1;
        let lane = format!("{}", 1 + cycle % 4);
        let card = loadgen::card_number("299", 100 + cycle % 40);
        let started = Instant::now();
        let (answers, elapsed) = lanes
            .send(&lane, "scan", format!("]E0{card}").into_bytes(), 1)
            .await;
        if !answers.is_empty() {
            recorder.latencies.push(elapsed);
        }
        let receipt = receipt_json(
            &format!("T-{cycle}"),
            &lane,
            &[
                ("4011", "Bananas", 1, "1.99", "fresh"),
                ("4001686301265", "Bread", 1, "2.99", "food"),
            ],
            None,
        );
        let (answers, elapsed) = lanes.send(&lane, "receipt", receipt.to_json(), 1).await;
        if !answers.is_empty() {
            recorder.latencies.push(elapsed);
        }
        // A relaxed pace for people watching: a few receipts a second.
        let pause = Duration::from_millis(200).saturating_sub(started.elapsed());
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => {}
        }
    }
    cycle
}
