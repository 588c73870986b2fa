//! Vouchers end to end without storage: rendered images decoded by an independent QR decoder
//! (rqrr) and every refusal with its reason (the `keys` command line: the root's
//! `tests/gateway_commands.rs`).

use ed25519_dalek::SigningKey;
use jiff::Timestamp;
use loyalty_core::money::Money;
use loyalty_core::voucher::{
    self, check_text, Benefit, CheckContext, Clock, CustomerBinding, RedemptionState, Refusal,
    TrustedKeys, Verdict, Voucher, VoucherId,
};
use loyalty_daemon::render;
use std::collections::BTreeSet;

fn store_key() -> SigningKey {
    SigningKey::from_bytes(&[42u8; 32])
}

fn t(text: &str) -> Timestamp {
    text.parse().expect("time")
}

fn voucher() -> Voucher {
    Voucher {
        id: VoucherId::derived("store-S042", "R-0001", 0),
        key_id: "store-S042".into(),
        currency: "EUR".into(),
        benefit: Benefit::AmountOff(Money(500)),
        valid_from: t("2026-11-23T09:15:00Z"),
        valid_until: t("2027-02-22T23:00:00Z"),
        valid_from_issue: true,
        min_spend: Some(Money(2000)),
        customer: Some(CustomerBinding::of("C-0000012345")),
    }
}

fn keys() -> TrustedKeys {
    let keys = TrustedKeys::new();
    keys.insert("store-S042", store_key().verifying_key())
        .expect("key");
    keys
}

struct Lane<'a> {
    keys: &'a TrustedKeys,
    revoked: BTreeSet<VoucherId>,
    customer: Option<&'a str>,
    state: RedemptionState,
    now: Timestamp,
}

impl<'a> Lane<'a> {
    fn new(keys: &'a TrustedKeys) -> Lane<'a> {
        Lane {
            keys,
            revoked: BTreeSet::new(),
            customer: Some("C-0000012345"),
            state: RedemptionState::Free,
            now: t("2026-12-01T12:00:00Z"),
        }
    }

    fn check(&self, text: &str) -> Verdict {
        check_text(
            text,
            &CheckContext {
                keys: self.keys,
                clock: Clock::trusted(self.now),
                revocations: &self.revoked,
                currency: "EUR",
                lane: "3",
                customer_id: self.customer,
                state: &self.state,
            },
        )
    }
}

fn refusal(verdict: Verdict) -> Refusal {
    match verdict {
        Verdict::Refused(refusal) => refusal,
        Verdict::Valid { discount } => panic!("accepted: {discount:?}"),
    }
}

/// Decodes every QR code in a greyscale image with rqrr.
fn decode_qr(width: usize, height: usize, luma: impl Fn(usize, usize) -> u8) -> Vec<String> {
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, luma);
    image
        .detect_grids()
        .into_iter()
        .map(|grid| grid.decode().expect("rqrr decodes the code").1)
        .collect()
}

fn decode_png(bytes: &[u8]) -> Vec<String> {
    let decoder = png::Decoder::new(bytes);
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png frame");
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let (w, h) = (info.width as usize, info.height as usize);
    decode_qr(w, h, |x, y| buf[y * info.line_size + x])
}

#[test]
fn png_decoded_by_rqrr_gives_back_the_text_which_verifies() {
    let text = voucher().sign(&store_key()).expect("sign");
    let decoded = decode_png(&render::png(&text, 4).expect("png"));
    assert_eq!(decoded, vec![text.clone()]);
    assert!(matches!(
        Lane::new(&keys()).check(&decoded[0]),
        Verdict::Valid { .. }
    ));
}

#[test]
fn escpos_raster_decoded_by_rqrr_gives_back_the_text() {
    let text = voucher().sign(&store_key()).expect("sign");
    let bytes = render::escpos_qr_raster(&text, render::PAPER_58MM_DOTS).expect("raster");
    // Reassemble the GS v 0 bands into one bitmap.
    let mut rows: Vec<Vec<bool>> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        assert_eq!(&bytes[at..at + 4], &[0x1d, 0x76, 0x30, 0x00]);
        let width_bytes = bytes[at + 4] as usize + 256 * bytes[at + 5] as usize;
        let height = bytes[at + 6] as usize + 256 * bytes[at + 7] as usize;
        assert_eq!(width_bytes * 8, 384, "58 mm paper is 384 dots");
        at += 8;
        for _ in 0..height {
            let row = &bytes[at..at + width_bytes];
            rows.push(
                (0..width_bytes * 8)
                    .map(|x| row[x / 8] & (0x80 >> (x % 8)) != 0)
                    .collect(),
            );
            at += width_bytes;
        }
    }
    let decoded = decode_qr(384, rows.len(), |x, y| if rows[y][x] { 0 } else { 255 });
    assert_eq!(decoded, vec![text]);
}

#[test]
fn qr_version_and_level_fit_a_58mm_receipt() {
    let text = voucher().sign(&store_key()).expect("sign");
    let symbol = render::Symbol::new(&text).expect("symbol");
    eprintln!("bound: {} chars, version {}", text.len(), symbol.version);
    // A typical earned voucher (customer-bound, amount off, minimum spend): version 7 at level
    // M, modules of 6 dots (0.75 mm) on 58 mm paper.
    assert_eq!(symbol.version, 7);
    assert_eq!(
        render::module_dots(&symbol, render::PAPER_58MM_DOTS).expect("fits"),
        6
    );
    let unbound = Voucher {
        customer: None,
        ..voucher()
    };
    let text = unbound.sign(&store_key()).expect("sign");
    let symbol = render::Symbol::new(&text).expect("qr");
    eprintln!("unbound: {} chars, version {}", text.len(), symbol.version);
    assert!(symbol.version <= 7, "version {}", symbol.version);
    // The largest voucher the format allows (32-character key id and SKU, customer binding,
    // minimum spend): still version 9 with 6-dot modules on 58 mm paper.
    let largest = Voucher {
        key_id: "k".repeat(32),
        benefit: Benefit::FreeItem {
            sku: "9".repeat(32),
        },
        min_spend: Some(Money(voucher::format::MAX_AMOUNT_MINOR)),
        ..voucher()
    };
    let key = SigningKey::from_bytes(&[9u8; 32]);
    let text = largest.sign(&key).expect("sign");
    let symbol = render::Symbol::new(&text).expect("qr");
    eprintln!("largest: {} chars, version {}", text.len(), symbol.version);
    assert!(symbol.version <= 9, "version {}", symbol.version);
    assert_eq!(
        render::module_dots(&symbol, render::PAPER_58MM_DOTS).expect("fits"),
        6
    );
    // Its image still decodes.
    assert_eq!(decode_png(&render::png(&text, 3).expect("png")), vec![text]);
}

#[test]
fn svg_and_terminal_renderings() {
    let text = voucher().sign(&store_key()).expect("sign");
    let svg = render::svg(&text).expect("svg");
    assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
    let art = render::terminal(&text, true).expect("terminal");
    assert!(art.contains('\u{2588}'));
    let slip =
        render::escpos_slip(&voucher(), &text, &render::SlipOptions::default()).expect("slip");
    let printable = String::from_utf8_lossy(&slip);
    assert!(printable.contains("5.00 EUR off"));
    assert!(printable.contains("Minimum spend 20.00 EUR"));
    assert!(printable.contains(&voucher().id.to_string()));
    assert!(
        printable.contains(&text),
        "the native QR command carries the text"
    );
}

#[test]
fn refusals_each_with_its_reason() {
    let keys = keys();
    let text = voucher().sign(&store_key()).expect("sign");

    // Forged: signed by a key that is not the one trusted under this id.
    let forged = voucher()
        .sign(&SigningKey::from_bytes(&[1u8; 32]))
        .expect("sign");
    assert_eq!(
        refusal(Lane::new(&keys).check(&forged)),
        Refusal::ForgedSignature
    );

    // Unknown key id.
    let unknown = Voucher {
        key_id: "store-S999".into(),
        ..voucher()
    }
    .sign(&store_key())
    .expect("sign");
    assert!(matches!(
        refusal(Lane::new(&keys).check(&unknown)),
        Refusal::UnknownKey { key_id } if key_id == "store-S999"
    ));

    // Expired and not yet valid.
    let mut lane = Lane::new(&keys);
    lane.now = t("2027-02-22T23:00:00Z");
    let r = refusal(lane.check(&text));
    assert!(matches!(r, Refusal::Expired { .. }));
    assert_eq!(r.status(), "expired");
    lane.now = t("2026-11-23T09:14:59Z");
    let r = refusal(lane.check(&text));
    assert!(matches!(r, Refusal::NotYetValid { .. }));
    assert_eq!(r.status(), "not_yet_valid");

    // Revoked.
    let mut lane = Lane::new(&keys);
    lane.revoked.insert(voucher().id);
    assert_eq!(refusal(lane.check(&text)), Refusal::Revoked);

    // Bound to another customer; no customer identified.
    let mut lane = Lane::new(&keys);
    lane.customer = Some("C-0000099999");
    assert_eq!(refusal(lane.check(&text)), Refusal::BoundToAnotherCustomer);
    lane.customer = None;
    assert_eq!(refusal(lane.check(&text)), Refusal::CustomerNotIdentified);

    // Replay: already redeemed, with when and where.
    let mut lane = Lane::new(&keys);
    lane.state = RedemptionState::Redeemed {
        at: t("2026-11-30T15:00:00Z"),
        lane: "1".into(),
        receipt_id: "R-0042".into(),
    };
    let r = refusal(lane.check(&text));
    assert_eq!(r.status(), "redeemed");
    assert!(r.to_string().contains("lane 1"), "{r}");
    assert!(r.to_string().contains("2026-11-30T15:00:00Z"), "{r}");

    // Reserved by another lane.
    let mut lane = Lane::new(&keys);
    lane.state = RedemptionState::Reserved {
        lane: "7".into(),
        at: t("2026-12-01T11:59:00Z"),
        until: t("2026-12-01T12:04:00Z"),
    };
    assert!(matches!(
        refusal(lane.check(&text)),
        Refusal::ReservedElsewhere { lane, .. } if lane == "7"
    ));

    // Minimum spend, checked on the receipt.
    let receipt = loyalty_core::receipt::Receipt {
        id: "R-0050".into(),
        lane: "3".into(),
        timestamp: t("2026-12-01T12:01:00Z"),
        kind: loyalty_core::receipt::ReceiptKind::Sale,
        currency: "EUR".into(),
        total: Money(1999),
        card: None,
        rewards: vec![voucher().id.to_string()],
        redemptions: Vec::new(),
        lines: vec![loyalty_core::receipt::ReceiptLine {
            sku: "1".into(),
            name: "Bread".into(),
            qty_milli: 1000,
            unit_price: None,
            amount: Money(1999),
            category: None,
        }],
    };
    assert_eq!(
        voucher::check_receipt(&voucher(), &receipt),
        Err(Refusal::MinimumSpendNotMet {
            required: Money(2000),
            spent: Money(1999)
        })
    );
}

#[test]
fn one_flipped_byte_is_always_refused() {
    let keys = keys();
    let lane = Lane::new(&keys);
    let text = voucher().sign(&store_key()).expect("sign");
    const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
    // Every position of the base45 text, each replaced by another alphabet character.
    let prefix = voucher::QR_PREFIX.len();
    let expect_refused = |flipped: &str, what: String| {
        let r = refusal(lane.check(flipped));
        assert!(
            matches!(
                r,
                Refusal::ForgedSignature | Refusal::Malformed(_) | Refusal::UnknownKey { .. }
            ),
            "{what}: {r:?}"
        );
    };
    for position in prefix..text.len() {
        let mut bytes = text.clone().into_bytes();
        let replacement = if bytes[position] == b'0' { b'%' } else { b'0' };
        assert!(ALNUM.contains(&replacement));
        bytes[position] = replacement;
        let flipped = String::from_utf8(bytes).expect("ascii");
        expect_refused(&flipped, format!("text position {position}"));
    }
    // One bit of every byte of the binary payload (body and signature), a different bit
    // position each time, re-encoded canonically.
    let raw = base45::decode(&text[prefix..]).expect("base45");
    for index in 0..raw.len() {
        let mut flipped = raw.clone();
        flipped[index] ^= 1 << (index % 8);
        let flipped = format!("{}{}", voucher::QR_PREFIX, base45::encode(&flipped));
        expect_refused(&flipped, format!("payload byte {index}"));
    }
}
