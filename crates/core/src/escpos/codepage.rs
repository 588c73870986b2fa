//! Character code pages of ESC/POS printers: which table `ESC t n` selects, and how one byte of
//! printed text becomes a `char`. Pure.
//!
//! The DOS pages come from the `oem_cp` crate's tables; Windows-1252 and ISO 8859-15 are small
//! hand tables here (they differ from Latin-1 in a few positions only). UTF-8 is decoded by the
//! tokenizer, which keeps the state a multi-byte sequence needs.

use oem_cp::code_table;

/// A character table the decoder knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodePage {
    /// PC437 (USA, standard Europe): the printers' factory default.
    Cp437,
    /// PC850 (Multilingual Latin-1).
    Cp850,
    /// PC852 (Latin-2, Central Europe).
    Cp852,
    /// PC858 (PC850 with `€` at 0xD5).
    Cp858,
    /// PC860 (Portuguese).
    Cp860,
    /// PC863 (Canadian French).
    Cp863,
    /// PC865 (Nordic).
    Cp865,
    /// PC866 (Cyrillic).
    Cp866,
    /// Windows-1252 (`€` at 0x80).
    Windows1252,
    /// ISO 8859-15 (Latin-9, `€` at 0xA4).
    Iso8859_15,
    /// UTF-8 (some modern printers and till drivers).
    Utf8,
    /// A table selected by `ESC t n` that the decoder does not know: bytes 0x80..=0xFF become
    /// U+FFFD so that nothing is silently misread.
    Unknown(u8),
}

/// The configuration names of the code pages (`code_page = "cp858"`), for validation messages.
pub const CODE_PAGE_NAMES: [&str; 11] = [
    "cp437",
    "cp850",
    "cp852",
    "cp858",
    "cp860",
    "cp863",
    "cp865",
    "cp866",
    "windows-1252",
    "iso-8859-15",
    "utf-8",
];

/// Windows-1252 positions 0x80..=0x9F (the rest equals Latin-1). `None` is undefined.
const CP1252_HIGH: [Option<char>; 32] = [
    Some('€'),
    None,
    Some('‚'),
    Some('ƒ'),
    Some('„'),
    Some('…'),
    Some('†'),
    Some('‡'),
    Some('ˆ'),
    Some('‰'),
    Some('Š'),
    Some('‹'),
    Some('Œ'),
    None,
    Some('Ž'),
    None,
    None,
    Some('‘'),
    Some('’'),
    Some('“'),
    Some('”'),
    Some('•'),
    Some('–'),
    Some('—'),
    Some('˜'),
    Some('™'),
    Some('š'),
    Some('›'),
    Some('œ'),
    None,
    Some('ž'),
    Some('Ÿ'),
];

impl CodePage {
    /// The code page of a configuration name (case-insensitive; `cp1252` and `latin9` accepted
    /// as aliases).
    pub fn from_name(name: &str) -> Option<CodePage> {
        let page = match name.to_ascii_lowercase().as_str() {
            "cp437" | "pc437" => CodePage::Cp437,
            "cp850" | "pc850" => CodePage::Cp850,
            "cp852" | "pc852" => CodePage::Cp852,
            "cp858" | "pc858" => CodePage::Cp858,
            "cp860" | "pc860" => CodePage::Cp860,
            "cp863" | "pc863" => CodePage::Cp863,
            "cp865" | "pc865" => CodePage::Cp865,
            "cp866" | "pc866" => CodePage::Cp866,
            "windows-1252" | "cp1252" | "wpc1252" => CodePage::Windows1252,
            "iso-8859-15" | "latin9" | "latin-9" => CodePage::Iso8859_15,
            "utf-8" | "utf8" => CodePage::Utf8,
            _ => return None,
        };
        Some(page)
    }

    /// The table that `ESC t n` selects on Epson-compatible printers (the numbering that
    /// python-escpos and the Epson TM series use).
    pub fn from_esc_t(n: u8) -> CodePage {
        match n {
            0 => CodePage::Cp437,
            2 => CodePage::Cp850,
            3 => CodePage::Cp860,
            4 => CodePage::Cp863,
            5 => CodePage::Cp865,
            16 => CodePage::Windows1252,
            17 => CodePage::Cp866,
            18 => CodePage::Cp852,
            19 => CodePage::Cp858,
            40 => CodePage::Iso8859_15,
            other => CodePage::Unknown(other),
        }
    }

    /// The `n` of `ESC t n` that selects this table (the inverse of [`CodePage::from_esc_t`]);
    /// `None` for UTF-8, which printers select by other means.
    pub fn esc_t(self) -> Option<u8> {
        Some(match self {
            CodePage::Cp437 => 0,
            CodePage::Cp850 => 2,
            CodePage::Cp860 => 3,
            CodePage::Cp863 => 4,
            CodePage::Cp865 => 5,
            CodePage::Windows1252 => 16,
            CodePage::Cp866 => 17,
            CodePage::Cp852 => 18,
            CodePage::Cp858 => 19,
            CodePage::Iso8859_15 => 40,
            CodePage::Unknown(n) => n,
            CodePage::Utf8 => return None,
        })
    }

    /// Encodes text for a printer set to this table: control characters are dropped, a
    /// character the table lacks prints as `?`.
    pub fn encode(self, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        for ch in text.chars() {
            if ch.is_control() {
                continue;
            }
            if ch.is_ascii() {
                out.push(ch as u8);
            } else if self == CodePage::Utf8 {
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            } else {
                let byte = (0x80..=0xFFu8).find(|&b| self.decode_byte(b) == ch);
                out.push(byte.unwrap_or(b'?'));
            }
        }
        out
    }

    /// Decodes one byte of printed text (0x20..=0xFF) in a single-byte page. Undefined
    /// positions become U+FFFD. For [`CodePage::Utf8`] only ASCII is decoded here (the
    /// tokenizer assembles multi-byte sequences).
    pub fn decode_byte(self, byte: u8) -> char {
        if byte < 0x80 {
            return byte as char;
        }
        let high = (byte - 0x80) as usize;
        match self {
            CodePage::Cp437 => code_table::DECODING_TABLE_CP437[high],
            CodePage::Cp850 => code_table::DECODING_TABLE_CP850[high],
            CodePage::Cp852 => code_table::DECODING_TABLE_CP852[high],
            CodePage::Cp858 => code_table::DECODING_TABLE_CP858[high],
            CodePage::Cp860 => code_table::DECODING_TABLE_CP860[high],
            CodePage::Cp863 => code_table::DECODING_TABLE_CP863[high],
            CodePage::Cp865 => code_table::DECODING_TABLE_CP865[high],
            CodePage::Cp866 => code_table::DECODING_TABLE_CP866[high],
            CodePage::Windows1252 => {
                if byte < 0xA0 {
                    CP1252_HIGH[high].unwrap_or(char::REPLACEMENT_CHARACTER)
                } else {
                    latin1(byte)
                }
            }
            CodePage::Iso8859_15 => match byte {
                0xA4 => '€',
                0xA6 => 'Š',
                0xA8 => 'š',
                0xB4 => 'Ž',
                0xB8 => 'ž',
                0xBC => 'Œ',
                0xBD => 'œ',
                0xBE => 'Ÿ',
                0x80..=0x9F => char::REPLACEMENT_CHARACTER,
                _ => latin1(byte),
            },
            CodePage::Utf8 | CodePage::Unknown(_) => char::REPLACEMENT_CHARACTER,
        }
    }
}

fn latin1(byte: u8) -> char {
    char::from_u32(byte as u32).unwrap_or(char::REPLACEMENT_CHARACTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(page: CodePage, bytes: &[u8]) -> String {
        bytes.iter().map(|&b| page.decode_byte(b)).collect()
    }

    #[test]
    fn euro_and_umlauts_in_each_western_page() {
        // "€ äöüß ÄÖÜ" as each page encodes it.
        assert_eq!(
            decode(
                CodePage::Cp858,
                &[0xD5, b' ', 0x84, 0x94, 0x81, 0xE1, b' ', 0x8E, 0x99, 0x9A]
            ),
            "€ äöüß ÄÖÜ"
        );
        assert_eq!(
            decode(
                CodePage::Windows1252,
                &[0x80, b' ', 0xE4, 0xF6, 0xFC, 0xDF, b' ', 0xC4, 0xD6, 0xDC]
            ),
            "€ äöüß ÄÖÜ"
        );
        assert_eq!(
            decode(CodePage::Iso8859_15, &[0xA4, b' ', 0xE4, 0xF6, 0xFC, 0xDF]),
            "€ äöüß"
        );
        // CP437 and CP850 have the umlauts at the same places; 0xD5 is not `€` there.
        assert_eq!(decode(CodePage::Cp437, &[0x84, 0x94, 0x81, 0xE1]), "äöüß");
        assert_eq!(decode(CodePage::Cp850, &[0x84, 0x94, 0x81, 0xE1]), "äöüß");
        assert_eq!(CodePage::Cp850.decode_byte(0xD5), 'ı');
        assert_eq!(CodePage::Cp852.decode_byte(0xA5), 'ą');
    }

    #[test]
    fn esc_t_numbers_and_names() {
        assert_eq!(CodePage::from_esc_t(0), CodePage::Cp437);
        assert_eq!(CodePage::from_esc_t(2), CodePage::Cp850);
        assert_eq!(CodePage::from_esc_t(16), CodePage::Windows1252);
        assert_eq!(CodePage::from_esc_t(19), CodePage::Cp858);
        assert_eq!(CodePage::from_esc_t(99), CodePage::Unknown(99));
        assert_eq!(CodePage::Unknown(99).decode_byte(0xD5), '\u{FFFD}');
        assert_eq!(CodePage::Windows1252.decode_byte(0x81), '\u{FFFD}');
        for name in CODE_PAGE_NAMES {
            assert!(CodePage::from_name(name).is_some(), "{name}");
        }
        assert_eq!(CodePage::from_name("CP1252"), Some(CodePage::Windows1252));
        assert_eq!(CodePage::from_name("ebcdic"), None);
        for n in [0, 2, 3, 4, 5, 16, 17, 18, 19, 40, 99] {
            assert_eq!(CodePage::from_esc_t(n).esc_t(), Some(n));
        }
        assert_eq!(CodePage::Utf8.esc_t(), None);
    }

    #[test]
    fn encoding_round_trips_euro_and_umlauts() {
        let text = "5,00 € Gutschein für Müller ÄÖÜß";
        for page in [CodePage::Cp858, CodePage::Windows1252, CodePage::Iso8859_15] {
            assert_eq!(decode(page, &page.encode(text)), text, "{page:?}");
        }
        assert_eq!(CodePage::Utf8.encode("€"), "€".as_bytes());
        // CP437 has the umlauts but no euro sign.
        assert_eq!(CodePage::Cp437.encode("ä €"), vec![0x84, b' ', b'?']);
    }
}
