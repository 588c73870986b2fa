//! The answer trailer of a printer lane: the short slip the gateway prints on the real printer
//! after the till's cut (lanes whose receipts are tapped from a serial printer line or proxied
//! on TCP 9100 cannot show an MQTT answer). Points earned, the balance, and each voucher the
//! receipt converted points into, with its QR code (the printer's `GS ( k` or a `GS v 0`
//! raster image, per printer), then a cut. Pure: composes bytes, writes nothing.
//!
//! Invariants: the text is encoded in the configured code page (selected with `ESC t` first)
//! and the stream's own code page is selected again at the end, so the till's next receipt
//! prints as it would without the trailer; the trailer leaves alignment left, bold off, and
//! ends with a feed and a full cut (`GS V 0`).

use super::codepage::CodePage;
use super::qr::{escpos_qr, QrError, QrMethod};

/// The words printed on the trailer (configurable per device, any language the code page
/// can print).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailerLabels {
    /// The heading.
    pub title: String,
    /// Before the points this receipt earned.
    pub earned: String,
    /// Before the balance.
    pub balance: String,
    /// The heading of each voucher.
    pub voucher: String,
    /// Before a voucher's last valid day.
    pub valid_until: String,
}

impl Default for TrailerLabels {
    fn default() -> Self {
        TrailerLabels {
            title: "LOYALTY".into(),
            earned: "Points earned".into(),
            balance: "Points balance".into(),
            voucher: "REWARD VOUCHER".into(),
            valid_until: "Valid until".into(),
        }
    }
}

/// How one printer prints a trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailerStyle {
    /// The printer's QR command, or a raster image.
    pub qr: QrMethod,
    /// Printable width in dots (384 for 58 mm paper, 576 for 80 mm).
    pub paper_dots: u32,
    /// The table the trailer's text is encoded in.
    pub code_page: CodePage,
    /// The words.
    pub labels: TrailerLabels,
}

/// One voucher on the trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailerVoucher {
    /// The voucher id, printed under the code.
    pub id: String,
    /// The text the QR code carries (what a scanner reads back).
    pub text: String,
    /// Its value as printed (`5,00 €`).
    pub value: String,
    /// Its last valid day as printed.
    pub valid_until: String,
}

/// What a trailer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    /// Points the receipt earned (negative for a return).
    pub earned: i64,
    /// The balance after it, when known.
    pub balance: Option<i64>,
    /// Vouchers the receipt's points were converted into.
    pub vouchers: Vec<TrailerVoucher>,
}

/// The bytes of `trailer` for a printer styled `style`, whose stream had `restore` selected
/// (selected again at the end).
pub fn compose(
    trailer: &Trailer,
    style: &TrailerStyle,
    restore: CodePage,
) -> Result<Vec<u8>, QrError> {
    let page = style.code_page;
    let labels = &style.labels;
    let mut out = Vec::with_capacity(256);
    if let Some(n) = page.esc_t() {
        out.extend_from_slice(&[0x1b, b't', n]);
    }
    let line = |out: &mut Vec<u8>, text: &str| {
        out.extend_from_slice(&page.encode(text));
        out.push(b'\n');
    };
    out.extend_from_slice(b"\x1ba\x01\x1bE\x01"); // centre, bold
    line(&mut out, &labels.title);
    out.extend_from_slice(b"\x1bE\x00");
    line(
        &mut out,
        &format!("{}: {:+}", labels.earned, trailer.earned),
    );
    if let Some(balance) = trailer.balance {
        line(&mut out, &format!("{}: {balance}", labels.balance));
    }
    for voucher in &trailer.vouchers {
        out.push(b'\n');
        out.extend_from_slice(b"\x1bE\x01");
        line(&mut out, &labels.voucher);
        out.extend_from_slice(b"\x1bE\x00");
        line(&mut out, &voucher.value);
        line(
            &mut out,
            &format!("{} {}", labels.valid_until, voucher.valid_until),
        );
        out.extend_from_slice(&escpos_qr(&voucher.text, style.qr, style.paper_dots)?);
        out.push(b'\n');
        line(&mut out, &voucher.id);
    }
    out.extend_from_slice(b"\x1ba\x00"); // left
    out.extend_from_slice(b"\x1bd\x04\x1dV\x00"); // feed 4 lines, full cut
    if restore != page {
        if let Some(n) = restore.esc_t() {
            out.extend_from_slice(&[0x1b, b't', n]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escpos::qr::PAPER_58MM_DOTS;
    use crate::escpos::{Token, Tokenizer};

    const CODE: &str = "LGV1:8Q7M2ZK3:EXAMPLE-VOUCHER-TEXT-0123456789";

    fn trailer() -> Trailer {
        Trailer {
            earned: 12,
            balance: Some(40),
            vouchers: vec![TrailerVoucher {
                id: "8Q7M2ZK3".into(),
                text: CODE.into(),
                value: "5,00 €".into(),
                valid_until: "02.03.2027".into(),
            }],
        }
    }

    fn style(qr: QrMethod) -> TrailerStyle {
        TrailerStyle {
            qr,
            paper_dots: PAPER_58MM_DOTS,
            code_page: CodePage::Cp858,
            labels: TrailerLabels {
                title: "Danke für Ihren Einkauf".into(),
                earned: "Punkte".into(),
                balance: "Punktestand".into(),
                voucher: "Ihr Gutschein".into(),
                valid_until: "Gültig bis".into(),
            },
        }
    }

    /// The printed text (the final feed `ESC d` reads as one line end) and the commands, as the gateway's own tokenizer reads them.
    fn read(bytes: &[u8]) -> (String, Vec<&'static str>) {
        let mut tokenizer = Tokenizer::new(CodePage::Cp437);
        let mut tokens = Vec::new();
        tokenizer.feed(bytes, &mut tokens);
        let mut text = String::new();
        let mut commands = Vec::new();
        for token in tokens {
            match token {
                Token::Text(ch) => text.push(ch),
                Token::LineEnd => text.push('\n'),
                Token::Cut { .. } => commands.push("cut"),
                Token::Command(command) => commands.push(command.name),
            }
        }
        (text, commands)
    }

    #[test]
    fn native_trailer_selects_the_code_page_prints_the_qr_and_cuts_last() {
        let bytes = compose(&trailer(), &style(QrMethod::Native), CodePage::Cp437).expect("bytes");
        assert!(bytes.starts_with(&[0x1b, b't', 19]), "selects CP858 first");
        assert!(
            bytes.ends_with(&[0x1d, b'V', 0x00, 0x1b, b't', 0]),
            "cut, then the stream's page"
        );
        let (text, commands) = read(&bytes);
        assert_eq!(
            text,
            "Danke für Ihren Einkauf\nPunkte: +12\nPunktestand: 40\n\nIhr Gutschein\n5,00 €\n\
             Gültig bis 02.03.2027\n\n8Q7M2ZK3\n\n"
        );
        assert_eq!(commands.iter().filter(|c| **c == "cut").count(), 1);
        // GS ( k: model 2 (fn 65, n 50), module size, error correction M (49), store, print.
        let gs_k = |fun: u8| {
            bytes
                .windows(7)
                .position(|w| w[..3] == [0x1d, b'(', b'k'] && w[5] == 0x31 && w[6] == fun)
                .expect("GS ( k function")
        };
        let (model, size, level, store, print) =
            (gs_k(0x41), gs_k(0x43), gs_k(0x45), gs_k(0x50), gs_k(0x51));
        assert!(model < size && size < level && level < store && store < print);
        assert_eq!(bytes[model + 7], 0x32, "model 2");
        assert!((1..=16).contains(&bytes[size + 7]));
        assert_eq!(bytes[level + 7], 0x31, "level M");
        let len = usize::from(bytes[store + 3]) + 256 * usize::from(bytes[store + 4]);
        assert_eq!(len, CODE.len() + 3);
        assert_eq!(&bytes[store + 8..store + 8 + CODE.len()], CODE.as_bytes());
        assert_eq!(
            &bytes[print + 3..print + 8],
            &[0x03, 0x00, 0x31, 0x51, 0x30]
        );
        assert!(
            print
                < bytes
                    .windows(3)
                    .position(|w| w == [0x1d, b'V', 0])
                    .expect("cut")
        );
    }

    #[test]
    fn raster_trailer_carries_an_image_instead() {
        let bytes = compose(&trailer(), &style(QrMethod::Raster), CodePage::Cp858).expect("bytes");
        assert!(!bytes.windows(3).any(|w| w == [0x1d, b'(', b'k']));
        assert!(bytes.windows(4).any(|w| w == [0x1d, b'v', b'0', 0]));
        assert!(
            bytes.ends_with(&[0x1d, b'V', 0x00]),
            "same page: nothing to restore"
        );
        let (text, _) = read(&bytes);
        assert!(text.contains("5,00 €"), "{text}");
        assert!(!text.contains("LGV1"), "the image bytes are not text");
    }

    /// Renders every `GS v 0` band of `bytes` into one image and decodes its QR codes.
    pub(crate) fn decode_raster(bytes: &[u8]) -> Vec<String> {
        let mut rows: Vec<Vec<bool>> = Vec::new();
        let mut at = 0;
        while let Some(found) = bytes[at..]
            .windows(4)
            .position(|w| w == [0x1d, b'v', b'0', 0])
        {
            let start = at + found;
            let width = usize::from(bytes[start + 4]) + 256 * usize::from(bytes[start + 5]);
            let height = usize::from(bytes[start + 6]) + 256 * usize::from(bytes[start + 7]);
            let data = &bytes[start + 8..start + 8 + width * height];
            for row in data.chunks(width) {
                rows.push(
                    (0..width * 8)
                        .map(|x| row[x / 8] & (0x80 >> (x % 8)) != 0)
                        .collect(),
                );
            }
            at = start + 8 + width * height;
        }
        let (w, h) = (rows.first().map_or(0, Vec::len), rows.len());
        let mut image =
            rqrr::PreparedImage::prepare_from_greyscale(
                w,
                h,
                |x, y| {
                    if rows[y][x] {
                        0
                    } else {
                        255
                    }
                },
            );
        image
            .detect_grids()
            .into_iter()
            .filter_map(|grid| grid.decode().ok().map(|(_, text)| text))
            .collect()
    }

    #[test]
    fn the_raster_fallback_decodes_to_the_voucher_text() {
        let bytes = compose(&trailer(), &style(QrMethod::Raster), CodePage::Cp858).expect("bytes");
        assert_eq!(decode_raster(&bytes), vec![CODE.to_string()]);
    }

    #[test]
    fn without_vouchers_only_points_are_printed() {
        let mut plain = trailer();
        plain.vouchers.clear();
        plain.earned = -7;
        let bytes = compose(&plain, &style(QrMethod::Native), CodePage::Cp858).expect("bytes");
        let (text, _) = read(&bytes);
        assert_eq!(
            text,
            "Danke für Ihren Einkauf\nPunkte: -7\nPunktestand: 40\n\n"
        );
    }
}
