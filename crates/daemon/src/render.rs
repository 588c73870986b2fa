//! Voucher images: QR codes of voucher texts as ESC/POS printer bytes (the printer's native QR
//! command `GS ( k`, or a raster image `GS v 0` for printers without it), PNG, SVG, and Unicode
//! half-blocks for a terminal; and the printed voucher slip around the code. Pure: returns
//! bytes and strings, writes nothing.
//!
//! Every code uses error-correction level M (15 % of the symbol may be lost) and the smallest
//! QR version that fits; voucher texts are all alphanumeric-mode characters, so a typical
//! voucher is version 7 (45 modules), a customer-bound one version 8 or 9. See
//! `docs/arch/voucher.md` for why.

use loyalty_core::voucher::{issue::last_valid_day, Benefit, Voucher};
use qrcode::{EcLevel, QrCode, Version};

/// The error-correction level of every voucher code.
pub const EC_LEVEL: EcLevel = EcLevel::M;
/// Printable width of 58 mm paper at 203 dpi, in dots.
pub const PAPER_58MM_DOTS: u32 = 384;
/// Printable width of 80 mm paper at 203 dpi, in dots.
pub const PAPER_80MM_DOTS: u32 = 576;
/// Largest module size used on paper (6 dots = 0.75 mm at 203 dpi: easy for any scanner
/// without wasting paper).
pub const MAX_MODULE_DOTS: u32 = 6;
/// Quiet zone around a code, in modules (the QR standard's 4).
pub const QUIET_ZONE: u32 = 4;
/// Rows per `GS v 0` command: small printer buffers overflow on one large image.
const RASTER_BAND_ROWS: u32 = 128;

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

/// A QR symbol: a square of dark/light modules.
#[derive(Debug, Clone)]
pub struct Symbol {
    /// Modules per side, without quiet zone.
    pub width: u32,
    /// QR version (1..=40).
    pub version: i16,
    dark: Vec<bool>,
}

impl Symbol {
    /// Encodes `text` at level M, smallest version.
    pub fn new(text: &str) -> Result<Symbol, RenderError> {
        let code = QrCode::with_error_correction_level(text.as_bytes(), EC_LEVEL)
            .map_err(|err| RenderError::Qr(err.to_string()))?;
        let version = match code.version() {
            Version::Normal(v) | Version::Micro(v) => v,
        };
        Ok(Symbol {
            width: code.width() as u32,
            version,
            dark: code
                .to_colors()
                .into_iter()
                .map(|c| c == qrcode::Color::Dark)
                .collect(),
        })
    }

    /// True when the module at (x, y) is dark; coordinates include the quiet zone (which is
    /// light).
    pub fn dark_with_quiet_zone(&self, x: u32, y: u32) -> bool {
        let (Some(x), Some(y)) = (x.checked_sub(QUIET_ZONE), y.checked_sub(QUIET_ZONE)) else {
            return false;
        };
        x < self.width && y < self.width && self.dark[(y * self.width + x) as usize]
    }

    /// Modules per side including the quiet zone.
    pub fn full_width(&self) -> u32 {
        self.width + 2 * QUIET_ZONE
    }
}

/// Module size in dots for a code on paper `paper_dots` wide (quiet zone included).
pub fn module_dots(symbol: &Symbol, paper_dots: u32) -> Result<u32, RenderError> {
    let size = (paper_dots / symbol.full_width()).min(MAX_MODULE_DOTS);
    if size == 0 {
        return Err(RenderError::TooWide {
            modules: symbol.full_width(),
            paper_dots,
        });
    }
    Ok(size)
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

/// ESC/POS: the printer's native QR command sequence (`GS ( k`): model 2, module size,
/// error correction M, store the data, print. The printer encodes the symbol itself.
pub fn escpos_qr_native(text: &str, module_dots: u8) -> Vec<u8> {
    let data = text.as_bytes();
    let mut out = Vec::with_capacity(data.len() + 32);
    // fn 165: select model 2.
    out.extend_from_slice(&[0x1d, 0x28, 0x6b, 0x04, 0x00, 0x31, 0x41, 0x32, 0x00]);
    // fn 167: module size (1..=16 dots).
    out.extend_from_slice(&[
        0x1d,
        0x28,
        0x6b,
        0x03,
        0x00,
        0x31,
        0x43,
        module_dots.clamp(1, 16),
    ]);
    // fn 169: error correction level M (48 L, 49 M, 50 Q, 51 H).
    out.extend_from_slice(&[0x1d, 0x28, 0x6b, 0x03, 0x00, 0x31, 0x45, 0x31]);
    // fn 180: store data; pL pH count the 3 bytes cn fn m plus the data.
    let len = data.len() + 3;
    out.extend_from_slice(&[
        0x1d,
        0x28,
        0x6b,
        (len & 0xff) as u8,
        (len >> 8) as u8,
        0x31,
        0x50,
        0x30,
    ]);
    out.extend_from_slice(data);
    // fn 181: print the stored symbol.
    out.extend_from_slice(&[0x1d, 0x28, 0x6b, 0x03, 0x00, 0x31, 0x51, 0x30]);
    out
}

/// ESC/POS: the code as a raster image (`GS v 0`, normal density), centred on paper
/// `paper_dots` wide, for printers without a QR command. Split into bands of at most 128 rows.
pub fn escpos_qr_raster(text: &str, paper_dots: u32) -> Result<Vec<u8>, RenderError> {
    let symbol = Symbol::new(text)?;
    let module = module_dots(&symbol, paper_dots)?;
    let image_dots = symbol.full_width() * module;
    let width_bytes = paper_dots.div_ceil(8);
    let left = (paper_dots - image_dots) / 2;
    let rows = image_dots;
    let mut out = Vec::new();
    let mut band_start = 0;
    while band_start < rows {
        let band_rows = (rows - band_start).min(RASTER_BAND_ROWS);
        out.extend_from_slice(&[
            0x1d,
            0x76,
            0x30,
            0x00,
            (width_bytes & 0xff) as u8,
            (width_bytes >> 8) as u8,
            (band_rows & 0xff) as u8,
            (band_rows >> 8) as u8,
        ]);
        for row in band_start..band_start + band_rows {
            for byte_index in 0..width_bytes {
                let mut byte = 0u8;
                for bit in 0..8 {
                    let x = byte_index * 8 + bit;
                    let dark = x >= left
                        && x < left + image_dots
                        && symbol.dark_with_quiet_zone((x - left) / module, row / module);
                    if dark {
                        byte |= 0x80 >> bit;
                    }
                }
                out.push(byte);
            }
        }
        band_start += band_rows;
    }
    Ok(out)
}

/// How the code is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrMethod {
    /// The printer's `GS ( k` command.
    Native,
    /// A `GS v 0` raster image.
    Raster,
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
    match options.method {
        QrMethod::Native => {
            let symbol = Symbol::new(text)?;
            let module = module_dots(&symbol, options.paper_dots)?;
            out.extend_from_slice(&escpos_qr_native(text, module as u8));
        }
        QrMethod::Raster => out.extend_from_slice(&escpos_qr_raster(text, options.paper_dots)?),
    }
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
    fn native_command_carries_the_text_with_exact_lengths() {
        let bytes = escpos_qr_native(TEXT, 6);
        let store = [0x1d, 0x28, 0x6b];
        let store_at = bytes
            .windows(8)
            .position(|w| w[..3] == store && w[5..8] == [0x31, 0x50, 0x30])
            .expect("store command");
        let len = bytes[store_at + 3] as usize + 256 * bytes[store_at + 4] as usize;
        assert_eq!(len, TEXT.len() + 3);
        assert_eq!(
            &bytes[store_at + 8..store_at + 8 + TEXT.len()],
            TEXT.as_bytes()
        );
        assert!(bytes.ends_with(&[0x1d, 0x28, 0x6b, 0x03, 0x00, 0x31, 0x51, 0x30]));
        assert!(bytes
            .windows(8)
            .any(|w| w == [0x1d, 0x28, 0x6b, 0x03, 0x00, 0x31, 0x45, 0x31]));
    }

    #[test]
    fn raster_fits_58mm_paper() {
        let bytes = escpos_qr_raster(TEXT, PAPER_58MM_DOTS).expect("raster");
        assert_eq!(&bytes[..4], &[0x1d, 0x76, 0x30, 0x00]);
        assert_eq!(bytes[4], 48);
        assert!(matches!(
            escpos_qr_raster(TEXT, 16),
            Err(RenderError::TooWide { .. })
        ));
    }

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
