//! The voucher's wire format: a compact binary body, signed with Ed25519, encoded in base45
//! behind the prefix [`QR_PREFIX`] so that the whole text fits QR's alphanumeric mode. Pure.
//!
//! Layout of the body (all integers big-endian; `varint` is canonical unsigned LEB128):
//!
//! | field | bytes |
//! |---|---|
//! | format version (= 1) | 1 |
//! | voucher id | 10 |
//! | issuer key id: length, ASCII | 1 + 1..=32 |
//! | currency (ISO 4217, uppercase ASCII) | 3 |
//! | flags: bit 0 minimum spend present, bit 1 customer bound, bit 2 valid from issue | 1 |
//! | benefit: 1 amount off (`varint` minor units), 2 percent off (1 byte, 1..=100), 3 free item (length + SKU ASCII) | 1 + value |
//! | valid from, valid until (Unix seconds, u32) | 4 + 4 |
//! | minimum spend (`varint` minor units), if flagged | 1..=5 |
//! | customer binding (hash of the customer id, see [`CustomerBinding`]), if flagged | 8 |
//!
//! followed by the 64-byte Ed25519 signature over [`SIGNING_CONTEXT`] ‖ body. The text is
//! `LGV1:` ‖ base45(body ‖ signature). Decoding is strict: a text whose base45 is not the
//! canonical encoding of its bytes, trailing bytes, unknown flags or kinds are all refused, so
//! one flipped character never yields a different but acceptable voucher.

use crate::money::Money;
use ed25519_dalek::{Signature, Signer, SigningKey};
use std::fmt;

/// The prefix every voucher text starts with (scan decoders recognise vouchers by it). Only
/// characters of QR's alphanumeric set, so the whole text encodes in alphanumeric mode.
pub const QR_PREFIX: &str = "LGV1:";

/// Domain separation for signatures: a voucher signature can never be confused with any other
/// message signed by the same key.
pub const SIGNING_CONTEXT: &[u8] = b"loyalty-gateway voucher v1\0";

/// Format version byte at the start of the body.
const FORMAT_VERSION: u8 = 1;
/// Longest issuer key id.
pub const MAX_KEY_ID_LEN: usize = 32;
/// Longest SKU of a free-item voucher.
pub const MAX_SKU_LEN: usize = 32;
/// Largest amount (minor units) a voucher may carry: 100,000.00 in a 2-decimal currency.
pub const MAX_AMOUNT_MINOR: i64 = 10_000_000;
/// Length of the encoded signature.
const SIGNATURE_LEN: usize = 64;

const FLAG_MIN_SPEND: u8 = 1;
const FLAG_CUSTOMER: u8 = 2;
const FLAG_FROM_ISSUE: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_MIN_SPEND | FLAG_CUSTOMER | FLAG_FROM_ISSUE;

const KIND_AMOUNT: u8 = 1;
const KIND_PERCENT: u8 = 2;
const KIND_FREE_ITEM: u8 = 3;

/// A voucher's identity: 10 random or derived bytes, written as 20 uppercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VoucherId(pub [u8; 10]);

impl VoucherId {
    /// Derives the id of the `index`-th voucher issued for `receipt_id` by key `key_id`, so that
    /// handling the same receipt twice yields the same voucher, never a second one.
    pub fn derived(key_id: &str, receipt_id: &str, index: u32) -> VoucherId {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(b"loyalty-gateway voucher id\0");
        hash.update(key_id.as_bytes());
        hash.update([0]);
        hash.update(receipt_id.as_bytes());
        hash.update([0]);
        hash.update(index.to_be_bytes());
        let digest = hash.finalize();
        let mut id = [0u8; 10];
        id.copy_from_slice(&digest[..10]);
        VoucherId(id)
    }

    /// Parses the 20-hex-digit text form (either case).
    pub fn parse(text: &str) -> Option<VoucherId> {
        let text = text.trim();
        if text.len() != 20 || !text.is_ascii() {
            return None;
        }
        let mut id = [0u8; 10];
        for (index, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
        }
        Some(VoucherId(id))
    }
}

impl fmt::Display for VoucherId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

/// A voucher's customer binding: the first 8 bytes of SHA-256 over a domain tag and the
/// customer id. Fixed size whatever the id's length, and the printed code does not reveal who
/// the customer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CustomerBinding(pub [u8; 8]);

impl CustomerBinding {
    /// The binding to `customer_id`.
    pub fn of(customer_id: &str) -> CustomerBinding {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(b"loyalty-gateway customer\0");
        hash.update(customer_id.as_bytes());
        let digest = hash.finalize();
        let mut out = [0u8; 8];
        out.copy_from_slice(&digest[..8]);
        CustomerBinding(out)
    }

    /// True when the binding is to `customer_id`.
    pub fn matches(&self, customer_id: &str) -> bool {
        *self == CustomerBinding::of(customer_id)
    }
}

/// What a voucher gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Benefit {
    /// A fixed amount off the receipt, in minor units of the voucher's currency.
    AmountOff(Money),
    /// A percentage (1..=100) off the receipt's goods.
    PercentOff(u8),
    /// One unit of the article with this SKU free.
    FreeItem {
        /// The article number (usually a GTIN).
        sku: String,
    },
}

/// The content of a voucher (what is signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voucher {
    /// Unique id.
    pub id: VoucherId,
    /// Id of the key that signed it (a store's key or head office's).
    pub key_id: String,
    /// ISO 4217 code the amounts are in.
    pub currency: String,
    /// What it gives.
    pub benefit: Benefit,
    /// Valid from this instant (whole seconds).
    pub valid_from: jiff::Timestamp,
    /// Valid until this instant, exclusive (whole seconds).
    pub valid_until: jiff::Timestamp,
    /// True when `valid_from` is the moment of issue: the voucher's existence then proves the
    /// window has started, which matters when the gateway's clock is not trusted.
    pub valid_from_issue: bool,
    /// Smallest receipt spend (goods, before discounts) it may be redeemed on.
    pub min_spend: Option<Money>,
    /// Only this customer may redeem it.
    pub customer: Option<CustomerBinding>,
}

/// A voucher read back from its text: the content, the signature, and the bytes signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedVoucher {
    /// The content.
    pub voucher: Voucher,
    /// Ed25519 signature over [`SIGNING_CONTEXT`] ‖ `body`.
    pub signature: [u8; 64],
    /// The body exactly as encoded (what the signature covers).
    pub body: Vec<u8>,
}

/// Why a voucher could not be built or read. A text that fails to decode is answered
/// `invalid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The text does not start with [`QR_PREFIX`].
    #[error("not a voucher (it does not start with {QR_PREFIX})")]
    NotAVoucher,
    /// The characters after the prefix are not canonical base45.
    #[error("the voucher text is damaged (not valid base45)")]
    BadEncoding,
    /// The bytes do not form a voucher body of a known version.
    #[error("the voucher is damaged or of an unknown format: {0}")]
    BadBody(&'static str),
    /// A field cannot be encoded (issuing side).
    #[error("cannot issue this voucher: {0}")]
    Unencodable(String),
}

impl Voucher {
    /// Checks that every field fits the format (issuing side).
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |what: String| Err(FormatError::Unencodable(what));
        if !valid_key_id(&self.key_id) {
            return bad(format!(
                "key id '{}' must be 1 to {MAX_KEY_ID_LEN} letters, digits, '-', '_' or '.'",
                self.key_id
            ));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return bad(format!(
                "currency '{}' is not an ISO 4217 code",
                self.currency
            ));
        }
        match &self.benefit {
            Benefit::AmountOff(amount) => {
                if amount.0 <= 0 || amount.0 > MAX_AMOUNT_MINOR {
                    return bad(format!(
                        "amount {} must be positive and at most {MAX_AMOUNT_MINOR} minor units",
                        amount.0
                    ));
                }
            }
            Benefit::PercentOff(percent) => {
                if !(1..=100).contains(percent) {
                    return bad(format!("percentage {percent} must be 1 to 100"));
                }
            }
            Benefit::FreeItem { sku } => {
                if sku.is_empty()
                    || sku.len() > MAX_SKU_LEN
                    || !sku.bytes().all(|b| b.is_ascii_graphic())
                {
                    return bad(format!(
                        "SKU '{sku}' must be 1 to {MAX_SKU_LEN} printable ASCII characters"
                    ));
                }
            }
        }
        if let Some(min) = self.min_spend {
            if min.0 < 0 || min.0 > MAX_AMOUNT_MINOR {
                return bad(format!("minimum spend {} is out of range", min.0));
            }
        }
        let from = unix_u32(self.valid_from)?;
        let until = unix_u32(self.valid_until)?;
        if from >= until {
            return bad("valid_until must be after valid_from".into());
        }
        if self.valid_from.subsec_nanosecond() != 0 || self.valid_until.subsec_nanosecond() != 0 {
            return bad("validity times must be whole seconds".into());
        }
        Ok(())
    }

    /// The body bytes (what is signed).
    pub fn encode_body(&self) -> Result<Vec<u8>, FormatError> {
        self.validate()?;
        let mut out = Vec::with_capacity(64);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.id.0);
        out.push(self.key_id.len() as u8);
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(self.currency.as_bytes());
        let mut flags = 0;
        if self.min_spend.is_some() {
            flags |= FLAG_MIN_SPEND;
        }
        if self.customer.is_some() {
            flags |= FLAG_CUSTOMER;
        }
        if self.valid_from_issue {
            flags |= FLAG_FROM_ISSUE;
        }
        out.push(flags);
        match &self.benefit {
            Benefit::AmountOff(amount) => {
                out.push(KIND_AMOUNT);
                put_varint(&mut out, amount.0 as u64);
            }
            Benefit::PercentOff(percent) => {
                out.push(KIND_PERCENT);
                out.push(*percent);
            }
            Benefit::FreeItem { sku } => {
                out.push(KIND_FREE_ITEM);
                out.push(sku.len() as u8);
                out.extend_from_slice(sku.as_bytes());
            }
        }
        out.extend_from_slice(&unix_u32(self.valid_from)?.to_be_bytes());
        out.extend_from_slice(&unix_u32(self.valid_until)?.to_be_bytes());
        if let Some(min) = self.min_spend {
            put_varint(&mut out, min.0 as u64);
        }
        if let Some(customer) = &self.customer {
            out.extend_from_slice(&customer.0);
        }
        Ok(out)
    }

    /// Signs the voucher and returns its QR text (`LGV1:...`).
    pub fn sign(&self, key: &SigningKey) -> Result<String, FormatError> {
        let body = self.encode_body()?;
        let signature = key.sign(&signed_message(&body));
        let mut bytes = body;
        bytes.extend_from_slice(&signature.to_bytes());
        Ok(format!("{QR_PREFIX}{}", base45::encode(&bytes)))
    }
}

/// The exact message an issuer signs for a body.
pub fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(body);
    message
}

/// True when `text` looks like a voucher (starts with [`QR_PREFIX`]); what scan decoders use.
pub fn is_voucher_text(text: &str) -> bool {
    text.starts_with(QR_PREFIX)
}

/// Reads a voucher text (does not verify the signature: see [`crate::voucher::check`]).
pub fn decode(text: &str) -> Result<SignedVoucher, FormatError> {
    let encoded = text
        .strip_prefix(QR_PREFIX)
        .ok_or(FormatError::NotAVoucher)?;
    let bytes = base45::decode(encoded).map_err(|_| FormatError::BadEncoding)?;
    // base45's 2-character tail can encode values above 255 that the decoder truncates; only
    // the canonical text of these bytes is accepted.
    if base45::encode(&bytes) != encoded {
        return Err(FormatError::BadEncoding);
    }
    if bytes.len() < SIGNATURE_LEN + 1 {
        return Err(FormatError::BadBody("too short"));
    }
    let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
    let mut sig = [0u8; 64];
    sig.copy_from_slice(signature);
    let voucher = decode_body(body)?;
    Ok(SignedVoucher {
        voucher,
        signature: sig,
        body: body.to_vec(),
    })
}

/// Parses body bytes.
pub fn decode_body(body: &[u8]) -> Result<Voucher, FormatError> {
    let mut r = Reader { bytes: body };
    if r.u8()? != FORMAT_VERSION {
        return Err(FormatError::BadBody("unknown format version"));
    }
    let mut id = [0u8; 10];
    id.copy_from_slice(r.take(10)?);
    let key_len = r.u8()? as usize;
    let key_id = r.ascii(key_len)?;
    if !valid_key_id(&key_id) {
        return Err(FormatError::BadBody("bad key id"));
    }
    let currency = r.ascii(3)?;
    if !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(FormatError::BadBody("bad currency"));
    }
    let flags = r.u8()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(FormatError::BadBody("unknown flags"));
    }
    let benefit = match r.u8()? {
        KIND_AMOUNT => {
            let minor = r.varint()?;
            if minor == 0 || minor > MAX_AMOUNT_MINOR as u64 {
                return Err(FormatError::BadBody("amount out of range"));
            }
            Benefit::AmountOff(Money(minor as i64))
        }
        KIND_PERCENT => {
            let percent = r.u8()?;
            if !(1..=100).contains(&percent) {
                return Err(FormatError::BadBody("percentage out of range"));
            }
            Benefit::PercentOff(percent)
        }
        KIND_FREE_ITEM => {
            let len = r.u8()? as usize;
            if len == 0 || len > MAX_SKU_LEN {
                return Err(FormatError::BadBody("bad SKU length"));
            }
            let sku = r.ascii(len)?;
            if !sku.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(FormatError::BadBody("bad SKU"));
            }
            Benefit::FreeItem { sku }
        }
        _ => return Err(FormatError::BadBody("unknown voucher kind")),
    };
    let valid_from = r.time()?;
    let valid_until = r.time()?;
    if valid_from >= valid_until {
        return Err(FormatError::BadBody("empty validity window"));
    }
    let min_spend = if flags & FLAG_MIN_SPEND != 0 {
        let minor = r.varint()?;
        if minor > MAX_AMOUNT_MINOR as u64 {
            return Err(FormatError::BadBody("minimum spend out of range"));
        }
        Some(Money(minor as i64))
    } else {
        None
    };
    let customer = if flags & FLAG_CUSTOMER != 0 {
        let mut binding = [0u8; 8];
        binding.copy_from_slice(r.take(8)?);
        Some(CustomerBinding(binding))
    } else {
        None
    };
    if !r.bytes.is_empty() {
        return Err(FormatError::BadBody("trailing bytes"));
    }
    Ok(Voucher {
        id: VoucherId(id),
        key_id,
        currency,
        benefit,
        valid_from,
        valid_until,
        valid_from_issue: flags & FLAG_FROM_ISSUE != 0,
        min_spend,
        customer,
    })
}

/// True for a key id the format can carry: 1..=32 of `[A-Za-z0-9._-]`.
pub fn valid_key_id(key_id: &str) -> bool {
    !key_id.is_empty()
        && key_id.len() <= MAX_KEY_ID_LEN
        && key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Signature bytes as the dalek type.
pub(crate) fn signature_of(signed: &SignedVoucher) -> Signature {
    Signature::from_bytes(&signed.signature)
}

fn unix_u32(time: jiff::Timestamp) -> Result<u32, FormatError> {
    u32::try_from(time.as_second())
        .map_err(|_| FormatError::Unencodable(format!("time {time} is outside 1970..2106")))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.bytes.len() < n {
            return Err(FormatError::BadBody("truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    fn ascii(&mut self, n: usize) -> Result<String, FormatError> {
        let bytes = self.take(n)?;
        if !bytes.is_ascii() {
            return Err(FormatError::BadBody("not ASCII"));
        }
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn time(&mut self) -> Result<jiff::Timestamp, FormatError> {
        let bytes = self.take(4)?;
        let seconds = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        jiff::Timestamp::from_second(i64::from(seconds))
            .map_err(|_| FormatError::BadBody("bad time"))
    }

    /// Canonical LEB128, at most 5 bytes (35 bits), no redundant trailing zero groups.
    fn varint(&mut self) -> Result<u64, FormatError> {
        let mut value: u64 = 0;
        for index in 0..5 {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                if index > 0 && byte == 0 {
                    return Err(FormatError::BadBody("non-canonical number"));
                }
                return Ok(value);
            }
        }
        Err(FormatError::BadBody("number too long"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Voucher {
        Voucher {
            id: VoucherId::derived("store-S042", "R-0001", 0),
            key_id: "store-S042".into(),
            currency: "EUR".into(),
            benefit: Benefit::AmountOff(Money(500)),
            valid_from: "2026-11-23T09:15:00Z".parse().expect("time"),
            valid_until: "2027-02-21T09:15:00Z".parse().expect("time"),
            valid_from_issue: true,
            min_spend: Some(Money(2000)),
            customer: None,
        }
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn round_trips_every_kind() {
        for benefit in [
            Benefit::AmountOff(Money(500)),
            Benefit::PercentOff(15),
            Benefit::FreeItem {
                sku: "4006381333931".into(),
            },
        ] {
            for customer in [None, Some(CustomerBinding::of("C-000123"))] {
                let voucher = Voucher {
                    benefit: benefit.clone(),
                    customer,
                    ..sample()
                };
                let text = voucher.sign(&key()).expect("sign");
                assert!(text.starts_with(QR_PREFIX));
                let decoded = decode(&text).expect("decode");
                assert_eq!(decoded.voucher, voucher);
            }
        }
    }

    #[test]
    fn typical_voucher_is_short_and_alphanumeric() {
        let text = sample().sign(&key()).expect("sign");
        assert!(text.len() <= 165, "{} chars: {text}", text.len());
        const ALNUM: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
        assert!(text.chars().all(|c| ALNUM.contains(c)));
        assert!(
            !text.ends_with(' '),
            "a trailing space could be trimmed by a scanner"
        );
    }

    #[test]
    fn refuses_non_canonical_and_truncated_text() {
        let text = sample().sign(&key()).expect("sign");
        assert_eq!(decode("LGV2:ABC"), Err(FormatError::NotAVoucher));
        assert!(decode(&text[..text.len() - 1]).is_err());
        assert!(decode(&format!("{text}00")).is_err());
        assert!(decode(&text.to_lowercase()).is_err());
        // "0G" = 0 + 16 * 45 = 720, which base45 truncates to the byte 208 whose canonical
        // text is "S4": only the canonical text is accepted.
        assert_eq!(base45::decode("0G"), Ok(vec![208]));
        assert_eq!(decode("LGV1:0G"), Err(FormatError::BadEncoding));
        assert_eq!(decode("LGV1:S4"), Err(FormatError::BadBody("too short")));
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = VoucherId::derived("k", "R-1", 0);
        assert_eq!(a, VoucherId::derived("k", "R-1", 0));
        assert_ne!(a, VoucherId::derived("k", "R-1", 1));
        assert_ne!(a, VoucherId::derived("k2", "R-1", 0));
        assert_eq!(VoucherId::parse(&a.to_string()), Some(a));
        assert_eq!(VoucherId::parse("xyz"), None);
    }

    #[test]
    fn refuses_unencodable_vouchers() {
        let mut v = sample();
        v.benefit = Benefit::AmountOff(Money(0));
        assert!(v.sign(&key()).is_err());
        let mut v = sample();
        v.valid_until = v.valid_from;
        assert!(v.sign(&key()).is_err());
        let mut v = sample();
        v.key_id = "has space".into();
        assert!(v.sign(&key()).is_err());
        let bound = CustomerBinding::of("C-1");
        assert!(bound.matches("C-1") && !bound.matches("C-2"));
    }

    proptest::proptest! {
        #[test]
        fn amounts_round_trip(minor in 1i64..=MAX_AMOUNT_MINOR, min in 0i64..=MAX_AMOUNT_MINOR) {
            let voucher = Voucher {
                benefit: Benefit::AmountOff(Money(minor)),
                min_spend: Some(Money(min)),
                ..sample()
            };
            let decoded = decode(&voucher.sign(&key()).expect("sign")).expect("decode");
            proptest::prop_assert_eq!(decoded.voucher, voucher);
        }
    }
}
