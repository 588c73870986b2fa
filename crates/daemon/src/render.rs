//! Voucher images: QR codes of voucher texts as ESC/POS printer bytes (the printer's native QR
//! command `GS ( k`, or a raster image `GS v 0` for printers without it), PNG, SVG, and Unicode
//! half-blocks for a terminal; and the printed voucher slip around the code. Pure: returns
//! bytes and strings, writes nothing.
//!
//! Every code uses error-correction level M (15 % of the symbol may be lost) and the smallest
//! QR version that fits; voucher texts are all alphanumeric-mode characters, so a typical
//! voucher is version 7 (45 modules), a customer-bound one version 8 or 9. See
//! `docs/arch/voucher.md` for why.

use loyalty_core::escpos::qr::QrError;
pub use loyalty_core::escpos::qr::{
    escpos_qr_native, module_dots, QrMethod, Symbol, EC_LEVEL, MAX_MODULE_DOTS, PAPER_58MM_DOTS,
    PAPER_80MM_DOTS, QUIET_ZONE,
};
use loyalty_core::voucher::{issue::last_valid_day, Benefit, Voucher};
use qrcode::QrCode;

/// Why an image could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The text does not fit a QR code.
    #[error("cannot make a QR code of this text: {0}")]
    Qr(String),
    /// The code does not fit the paper at one dot per module.
    #[error("a QR code of {modules} modules does not fit {paper_dots} dots of paper")]
    TooWide {
        /// Modules including the quiet zone.
        modules: u32,
        /// Paper width.
        paper_dots: u32,
    },
    /// PNG encoding failed.
    #[error("PNG encoding failed: {0}")]
    Png(String),
}

impl From<QrError> for RenderError {
    fn from(err: QrError) -> Self {
        match err {
            QrError::Qr(message) => RenderError::Qr(message),
            QrError::TooWide {
                modules,
                paper_dots,
            } => RenderError::TooWide {
                modules,
                paper_dots,
            },
        }
    }
}

/// A PNG (8-bit greyscale) of the code, `scale` pixels per module, quiet zone included.
pub fn png(text: &str, scale: u32) -> Result<Vec<u8>, RenderError> {
    let symbol = Symbol::new(text)?;
    let scale = scale.clamp(1, 64);
    let side = symbol.full_width() * scale;
    let mut pixels = Vec::with_capacity((side * side) as usize);
    for y in 0..side {
        for x in 0..side {
            let dark = symbol.dark_with_quiet_zone(x / scale, y / scale);
            pixels.push(if dark { 0 } else { 255 });
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let png_err = |err: png::EncodingError| RenderError::Png(err.to_string());
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(&pixels).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(out)
}

/// An SVG document of the code (at least 256 px, quiet zone included).
pub fn svg(text: &str) -> Result<String, RenderError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EC_LEVEL)
        .map_err(|err| RenderError::Qr(err.to_string()))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// The code as Unicode half blocks (two module rows per text line). `light_on_dark` for the
/// usual terminal with light text on a dark background (the blocks then draw the light
/// modules).
pub fn terminal(text: &str, light_on_dark: bool) -> Result<String, RenderError> {
    let symbol = Symbol::new(text)?;
    let side = symbol.full_width();
    let mut out = String::new();
    let mut y = 0;
    while y < side {
        for x in 0..side {
            // Painted cells: dark modules, or light ones on a dark-background terminal.
            let top = symbol.dark_with_quiet_zone(x, y) != light_on_dark;
            let bottom = y + 1 < side && symbol.dark_with_quiet_zone(x, y + 1) != light_on_dark;
            out.push(match (top, bottom) {
                (true, true) => '\u{2588}',
                (true, false) => '\u{2580}',
                (false, true) => '\u{2584}',
                (false, false) => ' ',
            });
        }
        out.push('\n');
        y += 2;
    }
    Ok(out)
}

/// ESC/POS: the code as a raster image (`GS v 0`), centred on paper `paper_dots` wide, for
/// printers without a QR command (see [`loyalty_core::escpos::qr`]).
pub fn escpos_qr_raster(text: &str, paper_dots: u32) -> Result<Vec<u8>, RenderError> {
    Ok(loyalty_core::escpos::qr::escpos_qr_raster(
        text, paper_dots,
    )?)
}

/// Options for a printed voucher slip.
#[derive(Debug, Clone)]
pub struct SlipOptions {
    /// Native QR command or raster image.
    pub method: QrMethod,
    /// Printable width in dots (384 for 58 mm paper).
    pub paper_dots: u32,
    /// The store's time zone (for "valid until").
    pub time_zone: jiff::tz::TimeZone,
    /// Heading line.
    pub title: String,
}

impl Default for SlipOptions {
    fn default() -> Self {
        SlipOptions {
            method: QrMethod::Native,
            paper_dots: PAPER_58MM_DOTS,
            time_zone: jiff::tz::TimeZone::UTC,
            title: "REWARD VOUCHER".into(),
        }
    }
}

/// The human-readable lines of a voucher slip (ASCII only, so no code page matters).
pub fn slip_lines(voucher: &Voucher, time_zone: &jiff::tz::TimeZone) -> Vec<String> {
    let decimals = loyalty_core::money::currency_decimals(&voucher.currency);
    let mut lines = vec![match &voucher.benefit {
        Benefit::AmountOff(amount) => {
            format!("{} {} off", amount.format(decimals), voucher.currency)
        }
        Benefit::PercentOff(percent) => format!("{percent}% off"),
        Benefit::FreeItem { sku } => format!("1 free item {sku}"),
    }];
    if let Some(min) = voucher.min_spend.filter(|m| m.0 > 0) {
        lines.push(format!(
            "Minimum spend {} {}",
            min.format(decimals),
            voucher.currency
        ));
    }
    lines.push(format!(
        "Valid until {}",
        last_valid_day(voucher, time_zone)
    ));
    if voucher.customer.is_some() {
        lines.push("Personal: show your loyalty card".into());
    }
    lines
}

/// ESC/POS bytes of a whole voucher slip: centred title, value, conditions, the QR code and
/// the voucher id under it. Sends no initialise (`ESC @`) and no cut, so it can be appended to
/// a receipt; leaves alignment left and bold off.
pub fn escpos_slip(
    voucher: &Voucher,
    text: &str,
    options: &SlipOptions,
) -> Result<Vec<u8>, RenderError> {
    let mut out = Vec::new();
    out.extend_from_slice(b"\n\x1ba\x01"); // ESC a 1: centre
    out.extend_from_slice(b"\x1bE\x01"); // ESC E 1: bold
    out.extend_from_slice(ascii(&options.title).as_bytes());
    out.extend_from_slice(b"\n\x1bE\x00");
    for line in slip_lines(voucher, &options.time_zone) {
        out.extend_from_slice(ascii(&line).as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(&loyalty_core::escpos::qr::escpos_qr(
        text,
        options.method,
        options.paper_dots,
    )?);
    out.push(b'\n');
    out.extend_from_slice(format!("{}\n", voucher.id).as_bytes());
    out.extend_from_slice(b"\x1ba\x00\n"); // ESC a 0: left
    Ok(out)
}

fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "LGV1:HELLO WORLD 0123456789$%*+-./:";

    #[test]
    fn terminal_has_one_line_per_two_rows() {
        let symbol = Symbol::new(TEXT).expect("symbol");
        let art = terminal(TEXT, false).expect("terminal");
        assert_eq!(art.lines().count() as u32, symbol.full_width().div_ceil(2));
        assert!(art
            .lines()
            .all(|l| l.chars().count() as u32 == symbol.full_width()));
    }
}
