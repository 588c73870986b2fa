//! Scan decoding tests: one table per outcome (cards, vouchers, refusals, errors) through one
//! `check` helper, and a proptest fuzz target feeding arbitrary bytes to `decode`.

use super::*;
use crate::scan::CardsConfig;
use proptest::prelude::*;

fn cards(text: &str) -> CardsConfig {
    toml::from_str(text).expect("cards fixture parses")
}

/// The default program (prefix 299) plus an `04` range and the default app pattern.
fn matcher() -> CardMatcher {
    CardMatcher::from_config(&cards(
        r#"
prefixes = ["299"]
ranges = [{ from = "0400000000000", to = "0400099999999" }, { from = "7000000000", to = "7000009999" }]
"#,
    ))
    .expect("valid")
}

fn check(raw: &[u8]) -> Result<Scan, ScanError> {
    decode(raw, &matcher())
}

fn card(number: &str, read_as: ReadAs) -> Result<Scan, ScanError> {
    Ok(Scan::Card {
        number: number.into(),
        read_as,
    })
}

fn bar(s: Symbology) -> ReadAs {
    ReadAs::Barcode(s)
}

#[test]
fn program_cards_in_every_format() {
    use Symbology::*;
    #[rustfmt::skip]
    let table: &[(&[u8], Result<Scan, ScanError>)] = &[
        (b"2990000000019", card("2990000000019", bar(Unspecified))),
        (b"2990000000019\r\n", card("2990000000019", bar(Unspecified))),
        (b"2990000000019\n", card("2990000000019", bar(Unspecified))),
        (b"  2990000000019 \r", card("2990000000019", bar(Unspecified))),
        (b"]E02990000000019", card("2990000000019", bar(Ean13))),
        (b"]E32990000000019", card("2990000000019", bar(Ean13))),
        (b"]E3299000000001912", card("2990000000019", bar(Ean13))),
        (b"]E3299000000001912345", card("2990000000019", bar(Ean13))),
        (b"]E340000012345512", card("0400000123455", bar(UpcA))),
        // UPC-A 12 digits (number system 4 = in-store) becomes 13-digit 04...
        (b"]E0400000123455", card("0400000123455", bar(UpcA))),
        (b"400000123455", card("0400000123455", bar(Unspecified))),
        (b"]E40400000123455", Err(ScanError::WrongLength { symbology: "EAN-8".into(), expected: "8", len: 13 })),
        // Code 128 is free text: no EAN check digit, the range decides.
        (b"]C07000001234", card("7000001234", bar(Code128))),
        (b"]C0299000000008", card("299000000008", bar(Code128))),
        (b"7000001234", card("7000001234", bar(Unspecified))),
        (b"]C12990000000019", card("2990000000019", bar(Gs1_128))),
        (b"]d22990000000019", card("2990000000019", bar(DataMatrix))),
        (b"]Q12990000000019", card("2990000000019", bar(Qr))),
        // Magnetic stripes: track 2 with and without separator, track 1, both tracks.
        (b";2990000000019?", card("2990000000019", ReadAs::MagStripe { track: 2 })),
        (b";2990000000019=2912101?", card("2990000000019", ReadAs::MagStripe { track: 2 })),
        (b";2990000000019=2912101?5", card("2990000000019", ReadAs::MagStripe { track: 2 })),
        (b"%B2990000000019^MUSTERMANN/ERIKA^2912101?", card("2990000000019", ReadAs::MagStripe { track: 1 })),
        (b"%B2990000000019^MUSTERMANN/ERIKA^2912101?;2990000000019=2912?", card("2990000000019", ReadAs::MagStripe { track: 2 })),
        // NFC UIDs: 4, 7 and 10 bytes, separators, tags, lower case.
        (b"04:A2:3B:4C:5D:6E:80", card("nfc:04A23B4C5D6E80", ReadAs::Nfc)),
        (b"04-a2-3b-4c-5d-6e-80", card("nfc:04A23B4C5D6E80", ReadAs::Nfc)),
        (b"04 A2 3B 4C", card("nfc:04A23B4C", ReadAs::Nfc)),
        (b"04a23b4c5d6e80", card("nfc:04A23B4C5D6E80", ReadAs::Nfc)),
        (b"DEADBEEF", card("nfc:DEADBEEF", ReadAs::Nfc)),
        (b"UID:12345678", card("nfc:12345678", ReadAs::Nfc)),
        (b"nfc: 0102030405060708090a", card("nfc:0102030405060708090A", ReadAs::Nfc)),
        // The customer app's QR card.
        (b"https://app.example.com/card/2990000000019", card("2990000000019", ReadAs::AppQr)),
        (b"]Q1https://app.example.com/card/12345678", card("12345678", ReadAs::AppQr)),
    ];
    for (raw, expected) in table {
        assert_eq!(&check(raw), expected, "{}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn vouchers_are_passed_on_untouched() {
    for (raw, text) in [
        (&b"LGV1:ABC.DEF-123"[..], "LGV1:ABC.DEF-123"),
        (b"]Q1LGV1:6BFOXN*TS0BI$ZD.\r\n", "LGV1:6BFOXN*TS0BI$ZD."),
        (b"LGV1:", "LGV1:"),
    ] {
        assert_eq!(check(raw), Ok(Scan::Voucher { text: text.into() }));
    }
    // The voucher module can change its prefix.
    let m = matcher().with_voucher_prefix("HC1:");
    assert_eq!(
        decode(b"HC1:XYZ", &m),
        Ok(Scan::Voucher {
            text: "HC1:XYZ".into()
        })
    );
    assert!(matches!(
        decode(b"LGV1:XYZ", &m),
        Ok(Scan::NotProgram {
            kind: NotProgramKind::Text,
            ..
        })
    ));
}

#[test]
fn codes_outside_the_program_are_refused_with_what_they_are() {
    use NotProgramKind::*;
    use Symbology::*;
    let np = |kind, number: Option<&str>, read_as| {
        Ok(Scan::NotProgram {
            kind,
            number: number.map(str::to_string),
            read_as,
        })
    };
    #[rustfmt::skip]
    let table: &[(&[u8], Result<Scan, ScanError>)] = &[
        (b"4006381333931", np(Product, Some("4006381333931"), bar(Unspecified))),
        (b"]E04006381333931", np(Product, Some("4006381333931"), bar(Ean13))),
        (b"]E496385074", np(Product, Some("96385074"), bar(Ean8))),
        (b"96385074", np(Product, Some("96385074"), bar(Unspecified))),
        (b"]E0036000291452", np(Product, Some("0036000291452"), bar(UpcA))),
        (b"9812345678902", np(Coupon, Some("9812345678902"), bar(Unspecified))),
        (b"]E09800000000014", np(Coupon, Some("9800000000014"), bar(Ean13))),
        (b"]C0ABC-123", np(Text, None, bar(Code128))),
        (b"https://example.com/other", np(Text, None, bar(Unspecified))),
        (b"]C08000001234", np(OtherNumber, Some("8000001234"), bar(Code128))),
        (b"]C101040063813339311712310", np(Product, Some("04006381333931"), bar(Gs1_128))),
        (b"]C1\x1d01040063813339311712310", np(Product, Some("04006381333931"), bar(Gs1_128))),
        (b"]Xx2990000000019", card("2990000000019", bar(Other('X')))),
        // A non-payment stripe outside the program: number not shown.
        (b";1234567890123?", np(OtherNumber, None, ReadAs::MagStripe { track: 2 })),
    ];
    for (raw, expected) in table {
        assert_eq!(&check(raw), expected, "{}", String::from_utf8_lossy(raw));
    }
    let m = CardMatcher::from_config(&cards("accept_nfc_uid = false")).expect("valid");
    let nfc = decode(b"04:A2:3B:4C", &m).expect("decodes");
    assert_eq!(
        nfc,
        Scan::NotProgram {
            kind: NfcUid,
            number: None,
            read_as: ReadAs::Nfc
        }
    );
    assert_eq!(nfc.refusal().map(|r| r.0), Some("nfc_not_accepted"));
    let coupon = check(b"9812345678902").expect("decodes");
    let (code, message) = coupon.refusal().expect("a refusal");
    assert_eq!(code, "not_a_card");
    assert!(message.contains("coupon"), "{message}");
    assert_eq!(
        check(b"2990000000019").expect("card").refusal(),
        None,
        "a card is no refusal"
    );
}

#[test]
fn every_error_has_a_clear_message() {
    #[rustfmt::skip]
    let table: &[(&[u8], ScanError, &str)] = &[
        (b"", ScanError::Empty, "empty scan"),
        (b"\r\n", ScanError::Empty, "empty scan"),
        (b"   ", ScanError::Empty, "empty scan"),
        (b"]E0", ScanError::Empty, "empty scan"),
        (b"]E", ScanError::BadAimPrefix, "AIM"),
        (b"]", ScanError::BadAimPrefix, "AIM"),
        (b"]!0123", ScanError::BadAimPrefix, "AIM"),
        (b"2990000000018", ScanError::BadCheckDigit { symbology: "EAN-13".into(), number: "2990000000018".into(), found: 8, expected: 9 }, "check digit 8 is wrong (expected 9)"),
        (b"]E02990000000018", ScanError::BadCheckDigit { symbology: "EAN-13".into(), number: "2990000000018".into(), found: 8, expected: 9 }, "scan again"),
        (b"]E496385075", ScanError::BadCheckDigit { symbology: "EAN-8".into(), number: "96385075".into(), found: 5, expected: 4 }, "EAN-8"),
        (b"036000291453", ScanError::BadCheckDigit { symbology: "UPC-A".into(), number: "036000291453".into(), found: 3, expected: 2 }, "UPC-A"),
        (b"]E0299000000001900", ScanError::WrongLength { symbology: "EAN-13".into(), expected: "13 (or 12 for UPC-A)", len: 15 }, "must have 13"),
        (b"]E0ABCDEFGHIJKLM", ScanError::NotDigits { symbology: "EAN-13".into() }, "digits only"),
        (b";2990000000019", ScanError::PartialRead { track: 2 }, "partial read of magnetic stripe track 2"),
        (b";123", ScanError::PartialRead { track: 2 }, "swipe again"),
        (b"%B2990000000019^MUSTER", ScanError::PartialRead { track: 1 }, "track 1"),
        (b";12A4=?", ScanError::BadTrack { track: 2, reason: "only digits and '=' are allowed" }, "malformed"),
        (b";123?", ScanError::BadTrack { track: 2, reason: "the card number field must have 6 to 19 digits" }, "6 to 19"),
        (b";2990000000019?garbage", ScanError::BadTrack { track: 2, reason: "data after the end sentinel" }, "end sentinel"),
        (b"%A2990000000019^X^?", ScanError::BadTrack { track: 1, reason: "format code must be 'B'" }, "format code"),
        (b"%B2990000000019?", ScanError::BadTrack { track: 1, reason: "missing '^' field separator after the card number" }, "separator"),
        (b"04:A2:3B", ScanError::NfcUidLength { bytes: 3 }, "4, 7 or 10 bytes"),
        (b"04:A2:3B:4C:5D", ScanError::NfcUidLength { bytes: 5 }, "5 bytes"),
        (b"UID:0102030", ScanError::NfcUidLength { bytes: 3 }, "NFC UID"),
        (b"UID:xyz", ScanError::NfcUidLength { bytes: 0 }, "NFC UID"),
        (b"2990\x07000000019", ScanError::ControlCharacter { offset: 4, byte: 7 }, "control character 0x07 at byte 4"),
        (b"29900\t00000019", ScanError::ControlCharacter { offset: 5, byte: 9 }, "0x09"),
        (b"2990000000019\r\n2990000000019", ScanError::ControlCharacter { offset: 13, byte: 13 }, "0x0D"),
        (b"]C0AB\x1dCD", ScanError::ControlCharacter { offset: 5, byte: 0x1d }, "0x1D"),
        (b"\x1b[A", ScanError::ControlCharacter { offset: 0, byte: 0x1b }, "0x1B"),
        (b"29900\xff00000019", ScanError::NotUtf8 { offset: 5 }, "not valid UTF-8 (byte 5)"),
        (b"\xc3", ScanError::NotUtf8 { offset: 0 }, "UTF-8"),
    ];
    for (raw, expected, text) in table {
        let got = check(raw);
        assert_eq!(
            &got,
            &Err(expected.clone()),
            "{}",
            String::from_utf8_lossy(raw)
        );
        let message = expected.to_string();
        assert!(message.contains(text), "{message:?} lacks {text:?}");
        assert!(!expected.code().is_empty());
    }
    let long = vec![b'1'; MAX_SCAN_BYTES + 1];
    assert_eq!(check(&long), Err(ScanError::TooLong { len: 513 }));
    assert!(check(&long)
        .unwrap_err()
        .to_string()
        .contains("longer than the 512"));
    // 512 bytes are accepted (as text that is not a card).
    let mut ok = b"]C0".to_vec();
    ok.resize(MAX_SCAN_BYTES, b'A');
    assert!(check(&ok).is_ok());
}

#[test]
fn payment_cards_are_refused_and_never_shown() {
    const PANS: [&str; 4] = [
        "4111111111111111", // Visa test card
        "5555555555554444", // Mastercard test card
        "378282246310005",  // Amex test card
        "6011111111111117", // Discover test card
    ];
    for pan in PANS {
        assert!(luhn_valid(pan), "{pan}");
        let inputs = [
            format!(";{pan}=29121011234567890000?"),
            format!(";{pan}?"),
            format!("%B{pan}^MUSTERMANN/ERIKA^2912101123400567000000?"),
            format!("%B{pan}^MUSTERMANN/ERIKA^2912101?;{pan}=2912101?"),
            format!("]C0{pan}"),
            pan.to_string(),
        ];
        for input in inputs {
            let result = check(input.as_bytes());
            assert_eq!(result, Err(ScanError::PaymentCard), "{input}");
            let message = result.unwrap_err().to_string();
            assert_eq!(message, "payment card, not a loyalty card");
            assert!(!message.contains(&pan[pan.len() - 8..]));
            assert_eq!(ScanError::PaymentCard.code(), "payment_card");
        }
    }
    // A Luhn-valid number inside the program is the program's card.
    let m = CardMatcher::from_config(&cards(r#"prefixes = ["4111"]"#)).expect("valid");
    assert_eq!(
        decode(b";4111111111111111=2912?", &m),
        card("4111111111111111", ReadAs::MagStripe { track: 2 })
    );
    // A stripe of the right shape failing Luhn is not a payment card, and its number is
    // still not shown.
    assert_eq!(
        check(b";4111111111111112=2912?"),
        Ok(Scan::NotProgram {
            kind: NotProgramKind::OtherNumber,
            number: None,
            read_as: ReadAs::MagStripe { track: 2 }
        })
    );
    // Debug output of the error carries no digits either.
    assert!(!format!("{:?}", ScanError::PaymentCard).contains("4111"));
}

#[test]
fn check_digits_and_luhn() {
    assert_eq!(gs1_check_digit("400638133393"), 1);
    assert_eq!(gs1_check_digit("9638507"), 4);
    assert_eq!(gs1_check_digit("03600029145"), 2);
    assert!(luhn_valid("79927398713"));
    assert!(!luhn_valid("79927398710"));
    assert!(!luhn_valid(""));
    assert!(!luhn_valid("12a"));
    assert!(looks_like_payment_card("4111111111111111"));
    assert!(
        !looks_like_payment_card("7111111111111110"),
        "MII 7 is not a payment network"
    );
    assert!(!looks_like_payment_card("411111111111"), "too short");
}

#[test]
fn program_numbers_follow_prefixes_and_ranges() {
    let m = matcher();
    assert!(m.is_program_number("2990000000019"));
    assert!(m.is_program_number("0400000000000"));
    assert!(m.is_program_number("0400099999999"));
    assert!(!m.is_program_number("0400100000000"));
    assert!(
        !m.is_program_number("040000000000"),
        "range numbers have the range's length"
    );
    assert!(!m.is_program_number(""));
    assert!(!m.is_program_number("299abc"));
}

#[test]
fn symbology_hints_from_the_till() {
    let m = matcher();
    assert_eq!(
        decode_hinted(b"2990000000019", Some("EAN-13"), &m),
        card("2990000000019", bar(Symbology::Ean13))
    );
    assert_eq!(
        decode_hinted(b"7000001234", Some("code128"), &m),
        card("7000001234", bar(Symbology::Code128))
    );
    // A hinted symbology is a barcode: no magnetic stripe or NFC guessing.
    assert!(matches!(
        decode_hinted(b"DEADBEEF", Some("qr"), &m),
        Ok(Scan::NotProgram {
            kind: NotProgramKind::Text,
            ..
        })
    ));
    // The AIM identifier wins over the hint.
    assert_eq!(
        decode_hinted(b"]E02990000000019", Some("qr"), &m),
        card("2990000000019", bar(Symbology::Ean13))
    );
    assert_eq!(Symbology::from_hint("nonsense"), None);
}

#[test]
fn cards_configuration_problems_are_named() {
    let err = CardMatcher::from_config(&cards(
        r#"
prefixes = ["98", "2a", ""]
ranges = [{ from = "200", to = "1999" }, { from = "9900", to = "9999" }]
app_qr_pattern = "^card/(?P<number>[0-9]+)$"
"#,
    ))
    .expect_err("invalid");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "prefixes[0]",
            "prefixes[1]",
            "prefixes[2]",
            "ranges[0]",
            "ranges[1]",
            "app_qr_pattern"
        ]
    );
    assert!(err.to_string().contains("cards.prefixes[0]: 98x and 99"));
    let err = CardMatcher::from_config(&cards("app_qr_pattern = \"(\"")).expect_err("invalid");
    assert!(err.problems[0].message.contains("not a valid pattern"));
    // Empty pattern: no app cards, and such a URL is just text.
    let m = CardMatcher::from_config(&cards("app_qr_pattern = \"\"")).expect("valid");
    assert!(matches!(
        decode(b"https://app.example.com/card/2990000000019", &m),
        Ok(Scan::NotProgram { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Fuzzing: arbitrary bytes never panic, and what comes out respects the invariants.

/// Inputs biased towards the interesting shapes (AIM prefixes, sentinels, separators, digits).
fn scan_bytes() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        Just(b"]E0".to_vec()),
        Just(b"]E4".to_vec()),
        Just(b"]C1".to_vec()),
        Just(b"]Q1".to_vec()),
        Just(b"]d2".to_vec()),
        Just(b";".to_vec()),
        Just(b"%B".to_vec()),
        Just(b"?".to_vec()),
        Just(b"=".to_vec()),
        Just(b"^".to_vec()),
        Just(b":".to_vec()),
        Just(b"\x1d".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"LGV1:".to_vec()),
        Just(b"UID:".to_vec()),
        Just(b"https://app.example.com/card/".to_vec()),
        Just(b"299".to_vec()),
        Just(b"4111111111111111".to_vec()),
        prop::collection::vec(b'0'..=b'9', 1..20),
        prop::collection::vec(prop_oneof![b'0'..=b'9', b'A'..=b'F'], 1..21),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(fragment, 0..12).prop_map(|parts| parts.concat()),
    ]
}

fn assert_invariants(raw: &[u8], result: &Result<Scan, ScanError>) {
    match result {
        Ok(Scan::Card { number, read_as }) => {
            assert!(!number.is_empty());
            match read_as {
                ReadAs::Nfc => assert!(number.starts_with("nfc:")),
                ReadAs::AppQr => {}
                _ => assert!(matcher().is_program_number(number), "{number}"),
            }
        }
        Ok(Scan::Voucher { text }) => assert!(text.starts_with(VOUCHER_QR_PREFIX)),
        Ok(Scan::NotProgram { number, .. }) => {
            if let Some(n) = number {
                assert!(!looks_like_payment_card(n) || n.len() == 13 || n.len() == 14);
            }
        }
        Err(err) => {
            let message = err.to_string();
            assert!(!message.is_empty());
            assert!(raw.len() <= MAX_SCAN_BYTES || matches!(err, ScanError::TooLong { .. }));
        }
    }
}

fn fuzz(cases: u32) -> u32 {
    let m = matcher();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let ran = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&scan_bytes(), |raw| {
            ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let result = decode(&raw, &m);
            assert_invariants(&raw, &result);
            Ok(())
        })
        .expect("decode never panics and keeps its invariants");
    ran.into_inner()
}

#[test]
fn fuzz_decode_small() {
    let ran = fuzz(2_000);
    assert!(ran >= 2_000);
    eprintln!("fuzz_decode_small: {ran} inputs");
}

/// The long run: `cargo test -p loyalty-core --lib scan::tests::fuzz_decode_long -- --ignored --nocapture`.
#[test]
#[ignore]
fn fuzz_decode_long() {
    let ran = fuzz(100_000);
    assert!(ran >= 100_000);
    eprintln!("fuzz_decode_long: {ran} inputs");
}
