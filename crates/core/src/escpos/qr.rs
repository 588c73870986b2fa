//! QR codes on paper: a symbol of a text (error correction M, smallest version) and the two
//! ways an ESC/POS printer prints it: its native QR command (`GS ( k`: model 2, module size,
//! error correction, store, print) or a raster image (`GS v 0`) for printers without one.
//! Pure: returns bytes.

use qrcode::{EcLevel, QrCode, Version};

/// The error-correction level of every code we print.
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
pub const RASTER_BAND_ROWS: u32 = 128;

/// Why a code cannot be printed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QrError {
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
}

/// How a printer prints a QR code (per printer: `answer_qr` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QrMethod {
    /// The printer's `GS ( k` command (the printer encodes the symbol).
    #[default]
    Native,
    /// A `GS v 0` raster image (every ESC/POS printer that prints graphics).
    Raster,
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
    pub fn new(text: &str) -> Result<Symbol, QrError> {
        let code = QrCode::with_error_correction_level(text.as_bytes(), EC_LEVEL)
            .map_err(|err| QrError::Qr(err.to_string()))?;
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
pub fn module_dots(symbol: &Symbol, paper_dots: u32) -> Result<u32, QrError> {
    let size = (paper_dots / symbol.full_width()).min(MAX_MODULE_DOTS);
    if size == 0 {
        return Err(QrError::TooWide {
            modules: symbol.full_width(),
            paper_dots,
        });
    }
    Ok(size)
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
/// `paper_dots` wide, for printers without a QR command. Split into bands of at most
/// [`RASTER_BAND_ROWS`] rows.
pub fn escpos_qr_raster(text: &str, paper_dots: u32) -> Result<Vec<u8>, QrError> {
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

/// The code in `method`, sized for paper `paper_dots` wide.
pub fn escpos_qr(text: &str, method: QrMethod, paper_dots: u32) -> Result<Vec<u8>, QrError> {
    match method {
        QrMethod::Native => {
            let symbol = Symbol::new(text)?;
            let module = module_dots(&symbol, paper_dots)?;
            Ok(escpos_qr_native(text, module as u8))
        }
        QrMethod::Raster => escpos_qr_raster(text, paper_dots),
    }
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
            Err(QrError::TooWide { .. })
        ));
    }
}
