//! Scan decoding: one line from a scanner, a magnetic-stripe reader, an NFC reader or a till's
//! scan message, turned into what it is: a program loyalty card (and how it was read), a
//! voucher QR code, or a code that is not the program's. Owns AIM symbology identifiers,
//! EAN-13 / EAN-8 / UPC-A check digits, magnetic-stripe track 1 and 2, NFC UID lines, the
//! customer app's QR card, and the program's card number ranges ([`CardMatcher`]).
//!
//! Invariants:
//! - pure: no I/O; [`decode`] never panics, whatever the bytes (fuzzed);
//! - a payment card number (a PAN passing Luhn outside the program) is never returned, and
//!   never appears in an error message: only [`ScanError::PaymentCard`];
//! - a barcode with a wrong check digit is an error, never a card;
//! - GS1 coupon and refund-receipt numbers (EAN-13 starting `98`/`99`) are never cards.

mod spec;
pub use spec::{CardRangeConfig, CardsConfig};
mod cards;
pub use cards::*;
mod readers;
use readers::*;
mod digits;
pub use digits::*;
use std::fmt;

/// The prefix of voucher QR texts. The voucher module owns the real format; the gateway can
/// pass its own prefix with [`CardMatcher::with_voucher_prefix`].
pub const VOUCHER_QR_PREFIX: &str = "LGV1:";

/// The longest line accepted, in bytes.
pub const MAX_SCAN_BYTES: usize = 512;

/// The ASCII group separator (FNC1 in GS1 element strings).
const GS: char = '\u{1d}';

/// The barcode symbology, from the AIM identifier (`]E0` ...) or the till's hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Symbology {
    /// EAN-13 (`]E0` with 13 digits, `]E3` with an add-on).
    Ean13,
    /// UPC-A (`]E0` with 12 digits); its number is returned in 13-digit EAN form.
    UpcA,
    /// EAN-8 (`]E4`).
    Ean8,
    /// Code 128 (`]C0`, `]C2`, `]C4`).
    Code128,
    /// GS1-128 (`]C1`).
    Gs1_128,
    /// Code 39 (`]A`).
    Code39,
    /// Interleaved 2 of 5 (`]I`).
    Interleaved2of5,
    /// GS1 DataBar (`]e`).
    Gs1DataBar,
    /// QR code (`]Q`).
    Qr,
    /// Data Matrix (`]d`).
    DataMatrix,
    /// PDF417 (`]L`).
    Pdf417,
    /// Aztec (`]z`).
    Aztec,
    /// Another AIM symbology, by its identifier character.
    Other(char),
    /// No AIM identifier and no hint: the scanner did not say.
    Unspecified,
}

impl Symbology {
    /// A short name for answers and logs.
    pub fn name(self) -> String {
        match self {
            Symbology::Ean13 => "EAN-13".into(),
            Symbology::UpcA => "UPC-A".into(),
            Symbology::Ean8 => "EAN-8".into(),
            Symbology::Code128 => "Code 128".into(),
            Symbology::Gs1_128 => "GS1-128".into(),
            Symbology::Code39 => "Code 39".into(),
            Symbology::Interleaved2of5 => "ITF".into(),
            Symbology::Gs1DataBar => "GS1 DataBar".into(),
            Symbology::Qr => "QR".into(),
            Symbology::DataMatrix => "Data Matrix".into(),
            Symbology::Pdf417 => "PDF417".into(),
            Symbology::Aztec => "Aztec".into(),
            Symbology::Other(c) => format!("AIM ]{c}"),
            Symbology::Unspecified => "unspecified".into(),
        }
    }

    /// The symbology named by a till's scan message (`"ean13"`, `"EAN-13"`, `"code128"`,
    /// `"qr"`, `"datamatrix"` ...), or `None` when unknown.
    pub fn from_hint(hint: &str) -> Option<Symbology> {
        let key: String = hint
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        Some(match key.as_str() {
            "ean13" | "ean" | "jan" | "jan13" => Symbology::Ean13,
            "upca" | "upc" => Symbology::UpcA,
            "ean8" | "jan8" => Symbology::Ean8,
            "code128" => Symbology::Code128,
            "gs1128" | "ean128" | "ucc128" => Symbology::Gs1_128,
            "code39" => Symbology::Code39,
            "itf" | "interleaved2of5" | "i2of5" => Symbology::Interleaved2of5,
            "databar" | "gs1databar" | "rss14" => Symbology::Gs1DataBar,
            "qr" | "qrcode" => Symbology::Qr,
            "datamatrix" | "dm" => Symbology::DataMatrix,
            "pdf417" => Symbology::Pdf417,
            "aztec" => Symbology::Aztec,
            _ => return None,
        })
    }

    /// Whether the symbology carries GS1 element strings with FNC1 / GS separators.
    fn is_gs1(self, aim_modifier: Option<char>) -> bool {
        match self {
            Symbology::Gs1_128 | Symbology::Gs1DataBar => true,
            Symbology::DataMatrix => aim_modifier == Some('2'),
            Symbology::Qr => aim_modifier == Some('3'),
            _ => false,
        }
    }
}

/// How a card was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAs {
    /// A barcode of this symbology.
    Barcode(Symbology),
    /// A magnetic stripe, track 1 or 2.
    MagStripe {
        /// 1 or 2.
        track: u8,
    },
    /// An NFC card's UID.
    Nfc,
    /// The customer app's QR card.
    AppQr,
}

/// Why a well-formed code is not one of the program's cards. The gateway answers the lane
/// with an error (`code()`), it does not enroll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotProgramKind {
    /// A GS1 coupon or refund receipt (EAN-13 starting `98` or `99`).
    Coupon,
    /// An article number (a GTIN outside the program's numbers).
    Product,
    /// A number of another length or range (another program's card, a gift card ...).
    OtherNumber,
    /// An NFC UID while `cards.accept_nfc_uid` is off.
    NfcUid,
    /// Text that is neither a card, an app card nor a voucher.
    Text,
}

/// What a scanned line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// A card of the program: the gateway looks it up and enrolls an unknown one.
    Card {
        /// The card number: digits (UPC-A in 13-digit form), or `nfc:` + uppercase hex UID.
        number: String,
        /// How it was read.
        read_as: ReadAs,
    },
    /// A voucher QR code: the text, untouched, for the voucher module.
    Voucher {
        /// The QR text (AIM identifier and line end removed).
        text: String,
    },
    /// A valid code that is not the program's.
    NotProgram {
        /// What it is.
        kind: NotProgramKind,
        /// The number, when it is one and harmless to show (never for magnetic stripes).
        number: Option<String>,
        /// How it was read.
        read_as: ReadAs,
    },
}

impl Scan {
    /// For [`Scan::NotProgram`]: a stable error code and a message for the lane.
    pub fn refusal(&self) -> Option<(&'static str, String)> {
        let Scan::NotProgram { kind, number, .. } = self else {
            return None;
        };
        let shown = number
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        Some(match kind {
            NotProgramKind::Coupon => (
                "not_a_card",
                format!("code{shown} is a coupon or refund receipt, not a loyalty card"),
            ),
            NotProgramKind::Product => (
                "not_a_card",
                format!("code{shown} is an article number, not a loyalty card"),
            ),
            NotProgramKind::OtherNumber => (
                "unknown_card_range",
                format!("card{shown} does not belong to this loyalty program"),
            ),
            NotProgramKind::NfcUid => (
                "nfc_not_accepted",
                "NFC cards are not accepted in this store (cards.accept_nfc_uid)".into(),
            ),
            NotProgramKind::Text => (
                "not_a_card",
                "the scanned code is neither a loyalty card nor a voucher".into(),
            ),
        })
    }
}

/// Why a line could not be decoded. Messages never contain a payment card number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// Nothing but a line end.
    #[error("empty scan")]
    Empty,
    /// Longer than [`MAX_SCAN_BYTES`].
    #[error("scan of {len} bytes is longer than the {max} accepted", max = MAX_SCAN_BYTES)]
    TooLong {
        /// Length received.
        len: usize,
    },
    /// Not UTF-8.
    #[error(
        "scan is not valid UTF-8 (byte {offset}); check the scanner's keyboard/code page settings"
    )]
    NotUtf8 {
        /// Offset of the first bad byte.
        offset: usize,
    },
    /// A control character inside the line.
    #[error("scan contains control character 0x{byte:02X} at byte {offset}; check the scanner's prefix/suffix settings")]
    ControlCharacter {
        /// Offset of the character.
        offset: usize,
        /// Its value.
        byte: u8,
    },
    /// A `]` that does not start a complete AIM identifier.
    #[error("scan starts with ']' but has no complete AIM symbology identifier (]Xn)")]
    BadAimPrefix,
    /// A number barcode with other characters than digits.
    #[error("{symbology} must be digits only")]
    NotDigits {
        /// Symbology name.
        symbology: String,
    },
    /// A number barcode of the wrong length.
    #[error("{symbology} must have {expected} digits, got {len}")]
    WrongLength {
        /// Symbology name.
        symbology: String,
        /// Expected digits.
        expected: &'static str,
        /// Digits received.
        len: usize,
    },
    /// Wrong check digit: a misread, never a card.
    #[error(
        "{symbology} {number}: check digit {found} is wrong (expected {expected}); scan again"
    )]
    BadCheckDigit {
        /// Symbology name.
        symbology: String,
        /// The number as read.
        number: String,
        /// Check digit read.
        found: u8,
        /// Check digit computed.
        expected: u8,
    },
    /// A magnetic stripe read that stopped early (no end sentinel).
    #[error("partial read of magnetic stripe track {track} (no end sentinel '?'); swipe again")]
    PartialRead {
        /// 1 or 2.
        track: u8,
    },
    /// A magnetic stripe track that is not in ISO 7813 layout.
    #[error("magnetic stripe track {track} is malformed: {reason}; swipe again")]
    BadTrack {
        /// 1 or 2.
        track: u8,
        /// What is wrong (never the data itself).
        reason: &'static str,
    },
    /// A payment card. Its number is never kept or shown.
    #[error("payment card, not a loyalty card")]
    PaymentCard,
    /// An NFC UID of a length cards do not have.
    #[error("NFC UID of {bytes} bytes; card UIDs have 4, 7 or 10 bytes")]
    NfcUidLength {
        /// Bytes read.
        bytes: usize,
    },
}

impl ScanError {
    /// A stable code for the lane's error answer.
    pub fn code(&self) -> &'static str {
        match self {
            ScanError::Empty => "empty_scan",
            ScanError::TooLong { .. } => "scan_too_long",
            ScanError::NotUtf8 { .. } | ScanError::ControlCharacter { .. } => "garbled_scan",
            ScanError::BadAimPrefix => "bad_symbology_identifier",
            ScanError::NotDigits { .. } | ScanError::WrongLength { .. } => "bad_barcode",
            ScanError::BadCheckDigit { .. } => "bad_check_digit",
            ScanError::PartialRead { .. } | ScanError::BadTrack { .. } => "bad_swipe",
            ScanError::PaymentCard => "payment_card",
            ScanError::NfcUidLength { .. } => "bad_nfc_uid",
        }
    }
}

/// Decodes one scanned line (without or with its CR/LF). See the module docs for the formats.
pub fn decode(raw: &[u8], matcher: &CardMatcher) -> Result<Scan, ScanError> {
    decode_hinted(raw, None, matcher)
}

/// Like [`decode`], with the symbology a till named in its scan message
/// (`{"data": ..., "symbology": "ean13"}`); an AIM identifier in the data wins over the hint.
pub fn decode_hinted(
    raw: &[u8],
    symbology_hint: Option<&str>,
    matcher: &CardMatcher,
) -> Result<Scan, ScanError> {
    if raw.len() > MAX_SCAN_BYTES {
        return Err(ScanError::TooLong { len: raw.len() });
    }
    let text = std::str::from_utf8(raw).map_err(|e| ScanError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.trim_end_matches(['\r', '\n']);
    if let Some((offset, c)) = text
        .char_indices()
        .find(|(_, c)| c.is_control() && *c != GS)
    {
        return Err(ScanError::ControlCharacter {
            offset,
            byte: u8::try_from(u32::from(c)).unwrap_or(0xFF),
        });
    }
    let text = text.trim_matches(' ');
    if text.is_empty() {
        return Err(ScanError::Empty);
    }

    // AIM symbology identifier: "]" + code character + modifier character.
    let (symbology, modifier, data) = if let Some(rest) = text.strip_prefix(']') {
        let mut chars = rest.chars();
        let (Some(code), Some(modifier)) = (chars.next(), chars.next()) else {
            return Err(ScanError::BadAimPrefix);
        };
        if !code.is_ascii_alphabetic() || !modifier.is_ascii_alphanumeric() {
            return Err(ScanError::BadAimPrefix);
        }
        let mut data = chars.as_str();
        // `]E3`: EAN/UPC with a 2- or 5-digit add-on in one packet; the add-on is dropped.
        if (code, modifier) == ('E', '3') {
            data = match data.len() {
                15 | 18 => data.get(..13).unwrap_or(data),
                14 | 17 => data.get(..12).unwrap_or(data),
                _ => data,
            };
        }
        let symbology = match (code, modifier) {
            ('E', '4') => Symbology::Ean8,
            ('E', _) if data.len() == 12 => Symbology::UpcA,
            ('E', _) => Symbology::Ean13,
            ('C', '1') => Symbology::Gs1_128,
            ('C', _) => Symbology::Code128,
            ('A', _) => Symbology::Code39,
            ('I', _) => Symbology::Interleaved2of5,
            ('e', _) => Symbology::Gs1DataBar,
            ('Q', _) => Symbology::Qr,
            ('d', _) => Symbology::DataMatrix,
            ('L', _) => Symbology::Pdf417,
            ('z', _) => Symbology::Aztec,
            (other, _) => Symbology::Other(other),
        };
        if data.is_empty() {
            return Err(ScanError::Empty);
        }
        (Some(symbology), Some(modifier), data)
    } else {
        (symbology_hint.and_then(Symbology::from_hint), None, text)
    };
    let symbology_or_unspecified = symbology.unwrap_or(Symbology::Unspecified);

    if data.contains(GS) && !symbology_or_unspecified.is_gs1(modifier) {
        let offset = text.find(GS).unwrap_or(0);
        return Err(ScanError::ControlCharacter { offset, byte: 0x1D });
    }

    // Vouchers first: their text is the voucher module's business.
    if data.starts_with(matcher.voucher_prefix.as_str()) && !matcher.voucher_prefix.is_empty() {
        return Ok(Scan::Voucher {
            text: data.to_string(),
        });
    }

    match symbology {
        Some(s @ (Symbology::Ean13 | Symbology::UpcA | Symbology::Ean8)) => {
            return gtin(data, s, true, matcher)
        }
        Some(s) if s.is_gs1(modifier) => return gs1(data, s, matcher),
        Some(_) => {}
        None => {
            if data.starts_with(';') {
                return track2(data, matcher);
            }
            if data.starts_with('%') {
                return track1(data, matcher);
            }
            if let Some(uid) = nfc_uid(data)? {
                return Ok(nfc_card(uid, matcher));
            }
        }
    }

    if let Some(re) = &matcher.app_qr {
        if let Some(card) = re.captures(data).and_then(|c| c.name("card")) {
            let number = card.as_str();
            if !number.is_empty() {
                return Ok(Scan::Card {
                    number: number.to_string(),
                    read_as: ReadAs::AppQr,
                });
            }
        }
    }

    if data.bytes().all(|b| b.is_ascii_digit()) {
        // Without a symbology, 8, 12 and 13 digits are EAN/UPC and their check digit counts.
        if symbology.is_none() && matches!(data.len(), 8 | 12 | 13) {
            let s = match data.len() {
                8 => Symbology::Ean8,
                12 => Symbology::UpcA,
                _ => Symbology::Ean13,
            };
            return gtin(data, s, false, matcher);
        }
        return number(
            data,
            ReadAs::Barcode(symbology_or_unspecified),
            true,
            matcher,
        );
    }
    Ok(Scan::NotProgram {
        kind: NotProgramKind::Text,
        number: None,
        read_as: ReadAs::Barcode(symbology_or_unspecified),
    })
}

/// Classifies a digit string read from a barcode or a stripe.
fn number(
    digits: &str,
    read_as: ReadAs,
    show: bool,
    matcher: &CardMatcher,
) -> Result<Scan, ScanError> {
    if matcher.is_program_number(digits) {
        return Ok(Scan::Card {
            number: digits.to_string(),
            read_as,
        });
    }
    if looks_like_payment_card(digits) {
        return Err(ScanError::PaymentCard);
    }
    let kind = if digits.len() == 13 && is_gs1_coupon_range(digits) {
        NotProgramKind::Coupon
    } else {
        NotProgramKind::OtherNumber
    };
    Ok(Scan::NotProgram {
        kind,
        number: show.then(|| digits.to_string()),
        read_as,
    })
}

/// EAN-13, UPC-A (returned as 13 digits) and EAN-8, check digit verified.
fn gtin(
    data: &str,
    symbology: Symbology,
    declared: bool,
    matcher: &CardMatcher,
) -> Result<Scan, ScanError> {
    let name = symbology.name();
    if !data.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ScanError::NotDigits { symbology: name });
    }
    let (expected_len, expected_text) = match symbology {
        Symbology::Ean8 => (8, "8"),
        Symbology::UpcA => (12, "12"),
        _ => (13, "13 (or 12 for UPC-A)"),
    };
    if data.len() != expected_len {
        return Err(ScanError::WrongLength {
            symbology: name,
            expected: expected_text,
            len: data.len(),
        });
    }
    let found = data.as_bytes()[data.len() - 1] - b'0';
    let expected = gs1_check_digit(&data[..data.len() - 1]);
    if found != expected {
        return Err(ScanError::BadCheckDigit {
            symbology: name,
            number: data.to_string(),
            found,
            expected,
        });
    }
    let normalized = if symbology == Symbology::UpcA {
        format!("0{data}")
    } else {
        data.to_string()
    };
    // An undeclared 12/13-digit number is reported as what it was read as.
    let read_as = ReadAs::Barcode(if declared {
        symbology
    } else {
        Symbology::Unspecified
    });
    if matcher.is_program_number(&normalized) {
        return Ok(Scan::Card {
            number: normalized,
            read_as,
        });
    }
    let kind = if normalized.len() == 13 && is_gs1_coupon_range(&normalized) {
        NotProgramKind::Coupon
    } else {
        NotProgramKind::Product
    };
    Ok(Scan::NotProgram {
        kind,
        number: Some(normalized),
        read_as,
    })
}

/// GS1 element strings (GS1-128, GS1 DataMatrix, GS1 QR, DataBar): AI (01) is an article;
/// anything else is read as a plain number when it is digits.
fn gs1(data: &str, symbology: Symbology, matcher: &CardMatcher) -> Result<Scan, ScanError> {
    let data = data.trim_start_matches(GS);
    let read_as = ReadAs::Barcode(symbology);
    if let Some(rest) = data.strip_prefix("01") {
        if rest.len() >= 14 && rest.as_bytes()[..14].iter().all(u8::is_ascii_digit) {
            return Ok(Scan::NotProgram {
                kind: NotProgramKind::Product,
                number: Some(rest[..14].to_string()),
                read_as,
            });
        }
    }
    if data.bytes().all(|b| b.is_ascii_digit()) {
        return number(data, read_as, true, matcher);
    }
    Ok(Scan::NotProgram {
        kind: NotProgramKind::Text,
        number: None,
        read_as,
    })
}

impl fmt::Display for ReadAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadAs::Barcode(s) => write!(f, "barcode ({})", s.name()),
            ReadAs::MagStripe { track } => write!(f, "magnetic stripe track {track}"),
            ReadAs::Nfc => f.write_str("NFC"),
            ReadAs::AppQr => f.write_str("app QR card"),
        }
    }
}

#[cfg(test)]
mod tests;
