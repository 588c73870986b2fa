//! Receipt profiles against the python-escpos fixtures (tests/fixtures/escpos/, made by
//! make_fixtures.py) and the example configuration in docs/arch/escpos-config-snippet.toml:
//! bytes → assembler → document → Receipt, with the fields a till integrator expects.

use loyalty_core::escpos::{Document, DocumentEnd, ParseError};
use loyalty_core::money::Money;
use loyalty_core::receipt::{Receipt, ReceiptError, ReceiptKind, ReceiptLine};
use loyalty_daemon::capture::ReceiptCapture;
use loyalty_daemon::config::{self, Built, Config};
use std::time::{Duration, Instant};

fn config() -> Config {
    let snippet = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/arch/escpos-config-snippet.toml"
    ))
    .expect("the config snippet");
    let text = format!(
        "[store]\nid = \"berlin-1\"\ntimezone = \"Europe/Berlin\"\ncurrency = \"EUR\"\n\n{snippet}"
    );
    match config::parse(&text) {
        Ok(config) => config,
        Err(errors) => panic!("the snippet does not validate: {errors:#?}"),
    }
}

fn capture() -> ReceiptCapture {
    let config = config();
    ReceiptCapture::for_proxy(&config.printer_proxy[0], &built(&config)).expect("capture")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../tests/fixtures/escpos/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture; run make_fixtures.py")
}

/// Feeds a fixture in uneven chunks; returns the documents (cut ones, then an idle one).
fn documents(capture: &ReceiptCapture, bytes: &[u8]) -> Vec<Document> {
    let mut assembler = capture.assembler();
    let start = Instant::now();
    let mut docs = Vec::new();
    for (index, chunk) in bytes.chunks(37).enumerate() {
        docs.extend(assembler.feed(chunk, start + Duration::from_millis(index as u64)));
    }
    let quiet = start + Duration::from_secs(60);
    docs.extend(assembler.on_idle(quiet));
    docs
}

fn read(name: &str) -> (Document, Result<Receipt, ParseError>) {
    let capture = capture();
    let mut docs = documents(&capture, &fixture(name));
    assert_eq!(docs.len(), 1, "{name}: one receipt per fixture");
    let doc = docs.remove(0);
    let captured_at: jiff::Timestamp = "2026-12-01T12:00:00Z".parse().expect("time");
    let receipt = capture.read(&doc, captured_at);
    (doc, receipt)
}

fn line(sku: &str, name: &str, qty: i64, unit: Option<i64>, amount: i64) -> ReceiptLine {
    ReceiptLine {
        sku: sku.into(),
        name: name.into(),
        qty_milli: qty,
        unit_price: unit.map(Money),
        amount: Money(amount),
        category: None,
    }
}

#[test]
fn german_sale_in_cp858_with_barcodes_qr_and_image() {
    let (doc, receipt) = read("sale_cp858.bin");
    assert_eq!(doc.end, DocumentEnd::Cut);
    // Code page: euro sign and umlauts survive; no payload byte leaked into the text.
    assert_eq!(doc.lines[0], "Bäckerei Müller");
    assert!(doc.lines.contains(&"Sie haben 0,50 € gespart".to_string()));
    assert!(doc.lines.contains(&"  0,532 kg x 2,49 €/kg".to_string()));
    assert!(!doc.text().contains("BON4711"), "CODE128 payload leaked");
    assert!(!doc.text().contains("example.com"), "QR payload leaked");
    assert!(!doc.text().contains('\u{FFFD}'));
    assert_eq!(
        doc.lines.last().map(String::as_str),
        Some("Vielen Dank für Ihren Einkauf!")
    );
    let receipt = receipt.expect("the sale reads");
    assert_eq!(
        receipt,
        Receipt {
            id: "4-4711".into(),
            lane: "4".into(),
            timestamp: "2026-11-23T09:15:00Z".parse().expect("time"),
            kind: ReceiptKind::Sale,
            currency: "EUR".into(),
            total: Money(850),
            card: Some("2990000000019".into()),
            rewards: vec![],
            redemptions: Vec::new(),
            lines: vec![
                line("4006381333931", "Bleistift", 2000, Some(149), 298),
                line("2000000000015", "Brötchen", 1000, None, 120),
                line("", "Süßes Gebäck", 1000, None, 350),
                line("", "Äpfel", 532, Some(249), 132),
                line("", "Rabatt", 1000, None, -50),
            ],
        }
    );
}

#[test]
fn return_receipt_becomes_positive_returned_lines() {
    let (_, receipt) = read("return_cp858.bin");
    let receipt = receipt.expect("the return reads");
    assert_eq!(receipt.id, "4-4712");
    assert_eq!(
        receipt.kind,
        ReceiptKind::Return {
            original_receipt_id: "4-4711".into()
        }
    );
    assert_eq!(receipt.total, Money(499));
    assert_eq!(
        receipt.lines,
        vec![
            line("4006381333931", "Bleistift", 1000, None, 149),
            line("", "Süßes Gebäck", 1000, None, 350),
        ]
    );
    assert_eq!(
        receipt.timestamp,
        "2026-11-24T08:05:00Z"
            .parse::<jiff::Timestamp>()
            .expect("time")
    );
    assert_eq!(receipt.card.as_deref(), Some("2990000000019"));
}

#[test]
fn payment_card_numbers_are_masked_before_anyone_sees_the_text() {
    let (doc, receipt) = read("pan_cp858.bin");
    assert_eq!(doc.masked_pans, 2);
    let text = doc.text();
    assert!(text.contains("Karte: **** **** **** 1111"), "{text}");
    assert!(
        text.contains("PAN ************0004 Betrag 1.234,00"),
        "{text}"
    );
    assert!(!text.contains("4111 1111"));
    assert!(!text.contains("5500000000000004"));
    // The loyalty card (an EAN-13) and the article number are kept.
    assert!(text.contains("Kundenkarte: 2990000000019"));
    let receipt = receipt.expect("the card payment reads");
    assert_eq!(receipt.total, Money(123_400));
    assert_eq!(receipt.card.as_deref(), Some("2990000000019"));
    assert_eq!(receipt.lines[0].sku, "4006381333931");
    assert!(!format!("{receipt:?}").contains("41111111"));
}

#[test]
fn receipt_without_cut_ends_after_the_idle_gap_in_windows_1252() {
    let capture = capture();
    let bytes = fixture("idle_1252.bin");
    let mut assembler = capture.assembler();
    let start = Instant::now();
    assert!(
        assembler.feed(&bytes, start).is_empty(),
        "no cut, no receipt yet"
    );
    assert_eq!(
        assembler.deadline(),
        Some(start + Duration::from_millis(2000))
    );
    assert!(assembler
        .on_idle(start + Duration::from_millis(1999))
        .is_none());
    let doc = assembler
        .on_idle(start + Duration::from_millis(2000))
        .expect("the idle gap ends the receipt");
    assert_eq!(doc.end, DocumentEnd::IdleGap);
    assert_eq!(doc.lines[0], "Café Größenwahn");
    assert_eq!(
        doc.lines.last().map(String::as_str),
        Some("Danke – bis bald! Preise in €")
    );
    let receipt = capture
        .read(&doc, "2026-12-01T12:00:00Z".parse().expect("time"))
        .expect("reads");
    assert_eq!(receipt.id, "4-815");
    assert_eq!(receipt.total, Money(670));
    assert_eq!(receipt.lines[1].name, "Kaffee groß");
    assert!(
        assembler.on_idle(start + Duration::from_secs(10)).is_none(),
        "only once"
    );
}

#[test]
fn every_image_form_is_skipped() {
    let capture = capture();
    let docs = documents(&capture, &fixture("images.bin"));
    assert_eq!(docs.len(), 1);
    let printed: Vec<&str> = docs[0]
        .lines
        .iter()
        .map(String::as_str)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(printed, ["BEFORE", "RASTER", "COLUMN", "GRAPHICS", "AFTER"]);
}

fn doc(lines: &[&str]) -> Document {
    Document {
        lines: lines.iter().map(|l| l.to_string()).collect(),
        end: DocumentEnd::Cut,
        truncated: false,
        masked_pans: 0,
    }
}

#[test]
fn unreadable_receipts_get_a_clear_error() {
    let capture = capture();
    let at: jiff::Timestamp = "2026-12-01T12:00:00Z".parse().expect("time");
    let item = "Brot                          2,00 B";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["Bon-Nr.: 1", item], "no total found"),
        (vec![item, "SUMME EUR   2,00"], "no receipt number found"),
        (vec!["Bon-Nr.: 1", "SUMME EUR   2,00"], "no item lines"),
        (
            vec!["Bon-Nr.: 1", item, "SUMME EUR   2,10"],
            "does not add up: total 2.10 disagrees with the sum of the lines 2.00",
        ),
        (
            vec![
                "Bon-Nr.: 1",
                "Datum: 31.02.2026 10:00",
                item,
                "SUMME EUR   2,00",
            ],
            "printed line 2: date '31.02.2026 10:00'",
        ),
        (
            vec!["Bon-Nr.: 1", "Brot         2.000,0,0 B", "SUMME EUR   2,00"],
            "no item lines",
        ),
    ];
    for (lines, expected) in cases {
        let err = capture.read(&doc(&lines), at).expect_err("refused");
        assert!(err.to_string().contains(expected), "{lines:?}: {err}");
    }
    let mut truncated = doc(&["Bon-Nr.: 1", item, "SUMME EUR   2,00"]);
    truncated.truncated = true;
    assert_eq!(capture.read(&truncated, at), Err(ParseError::Truncated));
    // A receipt in range that adds up reads; the same with an absurd total does not.
    let ok = doc(&["Bon-Nr.: 1", item, "SUMME EUR   2,00"]);
    assert_eq!(capture.read(&ok, at).expect("reads").timestamp, at);
    let err = capture
        .read(
            &doc(&[
                "Bon-Nr.: 1",
                "Gold                 999.999.999,00 B",
                "SUMME EUR   999.999.999,00",
            ]),
            at,
        )
        .expect_err("absurd");
    assert!(
        matches!(
            err,
            ParseError::BadNumber { field: "total", .. }
                | ParseError::BadNumber {
                    field: "amount",
                    ..
                }
                | ParseError::Invalid(ReceiptError::AbsurdTotal(_))
        ),
        "{err}"
    );
}

#[test]
fn a_return_marker_must_name_the_original() {
    let mut config = config();
    let profile = config
        .receipt_profiles
        .get_mut("example")
        .expect("example profile");
    profile.return_marker = Some("^RÜCKGABE(?: zu Bon-Nr\\. (?P<original>\\d+))?".into());
    let capture =
        ReceiptCapture::for_proxy(&config.printer_proxy[0], &built(&config)).expect("capture");
    let at: jiff::Timestamp = "2026-12-01T12:00:00Z".parse().expect("time");
    let lines = [
        "Bon-Nr.: 1",
        "RÜCKGABE",
        "Brot                          -2,00 B",
        "SUMME EUR   -2,00",
    ];
    assert_eq!(
        capture.read(&doc(&lines), at),
        Err(ParseError::ReturnWithoutOriginal { line: 2 })
    );
}

/// A printed return (`RÜCKGABE`) of one item and a discount line, amounts as given.
fn printed_return(item: &str, discount: &str, total: &str) -> Vec<String> {
    vec![
        "Bon-Nr.: 12".into(),
        "RÜCKGABE zu Bon-Nr. 11".into(),
        format!("Bleistift                   {item} A"),
        format!("Rabatt                      {discount} A"),
        format!("SUMME EUR   {total}"),
    ]
}

fn read_lines(lines: &[String]) -> Result<Receipt, ParseError> {
    let at: jiff::Timestamp = "2026-12-01T12:00:00Z".parse().expect("time");
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    capture().read(&doc(&lines), at)
}

#[test]
fn printed_returns_read_alike_signed_either_way() {
    let negative = read_lines(&printed_return("-3,00", "0,50", "-2,50")).expect("negative");
    let positive = read_lines(&printed_return("3,00", "-0,50", "2,50")).expect("positive");
    assert_eq!(negative, positive);
    assert_eq!(negative.total, Money(250));
    assert_eq!(negative.lines[0].amount, Money(300));
    assert_eq!(negative.lines[1].amount, Money(-50));
    // Mixed: lines negative and the total positive, or the other way round.
    for (item, discount, total) in [("-3,00", "0,50", "2,50"), ("3,00", "-0,50", "-2,50")] {
        let err = read_lines(&printed_return(item, discount, total)).expect_err("mixed signs");
        assert!(
            err.to_string()
                .contains("signed alike, all positive or all negative"),
            "{item} {discount} {total}: {err}"
        );
    }
}

#[test]
fn amounts_with_trailing_minus_and_thousands_separators() {
    let capture = capture();
    let at: jiff::Timestamp = "2026-12-01T12:00:00Z".parse().expect("time");
    let receipt = capture
        .read(
            &doc(&[
                "Bon-Nr.: 9",
                "Fernseher                   1.299,00 A",
                "Pfand zurück                   0,25- A",
                "SUMME EUR   1.298,75",
            ]),
            at,
        )
        .expect("reads");
    assert_eq!(receipt.lines[0].amount, Money(129_900));
    assert_eq!(receipt.lines[1].amount, Money(-25));
    assert_eq!(receipt.total, Money(129_875));
}

#[test]
fn config_validation_names_profile_mistakes() {
    let snippet = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/arch/escpos-config-snippet.toml"
    ))
    .expect("snippet");
    let broken = snippet
        .replace("(?P<total>", "(?P<sum>")
        .replace("decimal_separator = \",\"", "decimal_separator = \";\"")
        .replace(
            "# pan_exempt_prefixes = [\"7777\"]",
            "pan_exempt_prefixes = [\"4\"]",
        )
        .replace("code_page = \"cp858\"        #", "code_page = \"ebcdic\" #");
    let text = format!("[store]\nid = \"s\"\n{broken}");
    let errors = config::parse(&text).expect_err("refused");
    let all = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for expected in [
        "receipt_profiles.example.total",
        "receipt_profiles.example.decimal_separator",
        "receipt_profiles.example.pan_exempt_prefixes[0]",
        "serial[1].code_page",
    ] {
        assert!(all.contains(expected), "missing {expected} in\n{all}");
    }
}

#[test]
fn capture_setup_names_the_device_and_profile() {
    let config = config();
    let mut device = config.serial[1].clone();
    device.profile = Some("nope".into());
    let err = ReceiptCapture::for_serial(&device, &built(&config)).expect_err("unknown profile");
    assert_eq!(
        err.to_string(),
        "lane3-printer: receipt profile 'nope' is not defined in [receipt_profiles]"
    );
    let capture = ReceiptCapture::for_serial(&config.serial[1], &built(&config)).expect("capture");
    assert_eq!(capture.lane, "3");
    assert_eq!(capture.idle_gap, Duration::from_millis(2000));
}

/// The configuration as the gateway runs it (its receipt profiles built).
fn built(config: &Config) -> Built {
    Built::new(config.clone()).unwrap_or_else(|errors| panic!("{errors:#?}"))
}
