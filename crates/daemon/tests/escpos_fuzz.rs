//! Property tests (fuzzing) of the ESC/POS core: arbitrary bytes, split anywhere, never panic
//! the tokenizer, assembler or profile, and give the same documents however they are split;
//! binary payloads of any content never leak into text; card numbers never survive.
//!
//! Case counts (the final report quotes them): 10,000 arbitrary streams (up to 2,000 bytes,
//! biased toward command bytes, each fed whole and split), 1,000 arbitrary streams through the
//! receipt profile, 2,000 raster images, 2,000 QR payloads, 2,000 barcode payloads, 2,000 PAN
//! lines.

use loyalty_core::escpos::{luhn_valid, mask_pans, Assembler, CodePage, Document, ReceiptProfile};
use loyalty_daemon::capture::ReceiptCapture;
use loyalty_daemon::config::ReceiptProfileConfig;
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn capture() -> &'static ReceiptCapture {
    static CAPTURE: std::sync::OnceLock<ReceiptCapture> = std::sync::OnceLock::new();
    CAPTURE.get_or_init(build_capture)
}

fn build_capture() -> ReceiptCapture {
    let profile = ReceiptProfileConfig {
        item_line: r"^(?P<name>\S.*?)\s{2,}(?P<amount>-?\d+,\d{2})$".into(),
        qty_line: Some(r"^\s+(?P<qty>\d+) x (?P<unit_price>\d+,\d{2})$".into()),
        total: r"^SUMME\s+(?P<total>-?\d+,\d{2})$".into(),
        receipt_id: r"^Bon (?P<receipt_id>\d+)".into(),
        date: Some(r"^Datum (?P<date>\S+) (?P<time>\S+)".into()),
        date_format: Some("%d.%m.%Y".into()),
        card: Some(r"^Karte (?P<card>\S+)".into()),
        return_marker: Some(r"^RETOUR(?: (?P<original>\d+))?".into()),
        decimal_separator: ",".into(),
        ..ReceiptProfileConfig::default()
    };
    ReceiptCapture::new(
        "1".into(),
        CodePage::Cp858,
        Duration::from_millis(500),
        ReceiptProfile::from_config("fuzz", &profile).expect("profile"),
        "EUR".into(),
        jiff::tz::TimeZone::UTC,
    )
}

fn run(bytes: &[u8], splits: &[usize]) -> Vec<Document> {
    let mut assembler = Assembler::new(CodePage::Cp858, Duration::from_millis(500), vec![]);
    let t0 = Instant::now();
    let mut docs = Vec::new();
    let mut rest = bytes;
    for &split in splits {
        let at = split.min(rest.len());
        let (head, tail) = rest.split_at(at);
        docs.extend(assembler.feed(head, t0));
        rest = tail;
    }
    docs.extend(assembler.feed(rest, t0));
    docs.extend(assembler.on_idle(t0 + Duration::from_secs(1)));
    docs.extend(assembler.end_of_stream());
    docs
}

/// One stream byte from 16 random bits, biased toward command prefixes, line feeds and the
/// characters the profile looks for (cheap to generate, unlike a weighted union per byte).
fn biased(r: u16) -> u8 {
    const TEXT: &[u8] = b"0123456789 ,-SUMEBonKartRETOUDatum";
    let value = (r >> 4) as u8;
    match r % 13 {
        0..=5 => value,
        6 => 0x1b,
        7 => 0x1d,
        8 => 0x1c,
        9 => 0x10,
        10 => b'\n',
        _ => TEXT[value as usize % TEXT.len()],
    }
}

fn stream(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u16>(), 0..max)
        .prop_map(|raw| raw.into_iter().map(biased).collect())
}

/// The one-line text of `bytes` ended by a cut.
fn printed(bytes: &[u8]) -> Vec<String> {
    let mut all = bytes.to_vec();
    all.extend_from_slice(b"\n\x1dV\x00");
    let docs = run(&all, &[]);
    docs.into_iter().flat_map(|d| d.lines).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_streams_never_panic_and_split_anywhere(
        bytes in stream(2000),
        splits in prop::collection::vec(0usize..400, 0..20),
    ) {
        let whole = run(&bytes, &[]);
        let split = run(&bytes, &splits);
        prop_assert_eq!(&whole, &split);
        for doc in &whole {
            prop_assert!(doc.lines.len() <= loyalty_core::escpos::MAX_LINES);
        }
    }
}

proptest! {
    // Regex matching is slow in debug builds: fewer cases for the profile.
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_documents_never_panic_the_profile(
        bytes in stream(2000),
    ) {
        let capture = capture();
        for doc in run(&bytes, &[]) {
            if let Ok(receipt) = capture.read(&doc, jiff::Timestamp::UNIX_EPOCH) {
                // Whatever reads is a valid receipt.
                let sum: i64 = receipt.lines.iter().map(|l| l.amount.0).sum();
                prop_assert_eq!(sum, receipt.total.0);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn raster_payloads_never_leak(
        x in 1u16..16, y in 1u16..24, seed in any::<u64>(),
    ) {
        let len = x as usize * y as usize;
        let data: Vec<u8> = (0..len).map(|i| (seed.rotate_left(i as u32 % 64) as u8) ^ (i as u8)).collect();
        let mut bytes = b"A".to_vec();
        bytes.extend_from_slice(b"\x1dv0\x00");
        bytes.extend_from_slice(&x.to_le_bytes());
        bytes.extend_from_slice(&y.to_le_bytes());
        bytes.extend_from_slice(&data);
        bytes.extend_from_slice(b"B");
        prop_assert_eq!(printed(&bytes), vec!["AB".to_string()]);
    }

    #[test]
    fn qr_payloads_never_leak(data in prop::collection::vec(any::<u8>(), 0..700)) {
        let mut bytes = b"A\x1d(k".to_vec();
        bytes.extend_from_slice(&((data.len() + 3) as u16).to_le_bytes());
        bytes.extend_from_slice(b"1P0");
        bytes.extend_from_slice(&data);
        bytes.extend_from_slice(b"\x1d(k\x03\x001Q0B");
        prop_assert_eq!(printed(&bytes), vec!["AB".to_string()]);
    }

    #[test]
    fn barcode_payloads_never_leak(
        data in prop::collection::vec(any::<u8>(), 0..255),
        text in "[0-9A-Z]{1,40}",
    ) {
        // Form B (length-prefixed, anything inside) then form A (printable, NUL-terminated).
        let mut bytes = b"A\x1dkI".to_vec();
        bytes.push(data.len() as u8);
        bytes.extend_from_slice(&data);
        bytes.extend_from_slice(b"\x1dk\x04");
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(b"\x00B");
        prop_assert_eq!(printed(&bytes), vec!["AB".to_string()]);
    }
}

/// A Luhn-valid number of `len` digits built from `body`.
fn with_check_digit(body: &str) -> String {
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|n| luhn_valid(n.as_bytes()))
        .expect("one check digit fits")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn card_numbers_never_survive_masking(
        first in prop::sample::select(vec!["4", "51", "55", "34", "37", "6011", "2221", "35"]),
        rest in "[0-9]{14,16}",
        grouping in 0usize..3,
        before in "[A-Za-z :]{0,12}",
        after in "( [0-9]{1,4},[0-9]{2})?",
    ) {
        let body: String = format!("{first}{rest}").chars().take(18).collect();
        let pan = with_check_digit(&body);
        let written = match grouping {
            0 => pan.clone(),
            1 => pan.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap_or("")).collect::<Vec<_>>().join(" "),
            _ => pan.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap_or("")).collect::<Vec<_>>().join("-"),
        };
        let line = format!("{before}{written}{after}");
        let (masked, count) = mask_pans(&line, &[]);
        let digits: String = masked.chars().filter(char::is_ascii_digit).collect();
        prop_assert!(count >= 1, "{} not masked", line);
        prop_assert!(!digits.contains(&pan[..pan.len() - 4]), "{} -> {}", line, masked);
        // (The last four may be masked too: a number glued to the PAN can form a longer
        // Luhn-valid candidate. Masking more is allowed, less is not.)
        prop_assert_eq!(masked.chars().count(), line.chars().count());
    }
}
