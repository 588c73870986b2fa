//! A streaming ESC/POS tokenizer: bytes in (split anywhere), tokens out: printed characters
//! (decoded through the selected code page), line ends, paper cuts and recognised commands.
//! Pure, allocation-bounded, never panics.
//!
//! Invariant: the tokenizer knows the length of every command it recognises, including the
//! binary payload of images (`GS v 0`, `ESC *`, `GS ( L`, `GS 8 L`, `FS q`), barcodes (`GS k`,
//! both forms), 2D codes (`GS ( k`) and downloaded characters (`ESC &`), so payload bytes are
//! skipped without being buffered and never appear as text. An unknown command is assumed to
//! take one parameter byte (the most common shape) and is reported as such.

use super::codepage::CodePage;

const ESC: u8 = 0x1B;
const GS: u8 = 0x1D;
const FS: u8 = 0x1C;
const DLE: u8 = 0x10;

/// The longest command header collected before its payload (DLE DC4 8 and ESC W: 10 bytes).
const MAX_HEADER: usize = 16;
/// The longest `GS k` form-A barcode text before the tokenizer gives up waiting for its NUL.
const MAX_BARCODE_A: u32 = 255;

/// A recognised command: its mnemonic and its full length in bytes (header and payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    /// Mnemonic, `"GS v 0"`; unknown commands are `"ESC ?"`, `"GS ?"`, `"FS ?"`.
    pub name: &'static str,
    /// Bytes the command took, payload included.
    pub len: u64,
}

/// One token of the printer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// A printed character, decoded through the current code page (HT becomes a space).
    Text(char),
    /// The printer prints the line buffer and moves on (LF, FF, `ESC d`, `ESC J`, `ESC K`).
    LineEnd,
    /// A paper cut (`GS V`, `ESC i`, `ESC m`): the end of a receipt.
    Cut {
        /// True for a partial cut.
        partial: bool,
    },
    /// A command, complete with its payload.
    Command(Command),
}

#[derive(Debug, Clone)]
enum State {
    Ground,
    /// Collecting a command header (starts with ESC, GS, FS or DLE).
    Header {
        buf: [u8; MAX_HEADER],
        len: usize,
    },
    /// Skipping `remaining` payload bytes of command `name` (`total` bytes in all).
    Skip {
        name: &'static str,
        remaining: u64,
        total: u64,
    },
    /// Skipping up to and including a NUL (`GS k` form A, `ESC D`).
    UntilNul {
        name: &'static str,
        left: u32,
        total: u64,
    },
    /// `ESC &`: per character, one width byte `x` then `y * x` bytes.
    DownloadChars {
        y: u64,
        chars_left: u32,
        skip: u64,
        total: u64,
    },
    /// `FS q`: per image, `xL xH yL yH` then `x * y * 8` bytes.
    NvImages {
        images_left: u32,
        hdr: [u8; 4],
        hdr_len: usize,
        skip: u64,
        total: u64,
    },
}

/// What a (partial) header means.
enum Step {
    More,
    Done(&'static str),
    Payload(&'static str, u64),
    UntilNul(&'static str, u32),
    DownloadChars {
        y: u64,
        chars: u32,
    },
    NvImages(u32),
    /// Not a command after all: only the first byte was the (lone) control byte.
    Lone(&'static str),
}

/// The streaming tokenizer. Keep one per printer stream; it remembers the selected code page
/// and international character set across receipts until `ESC @` resets them.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    state: State,
    default_page: CodePage,
    page: CodePage,
    charset: u8,
    utf8: [u8; 4],
    utf8_len: usize,
    utf8_need: usize,
}

impl Tokenizer {
    /// A tokenizer that assumes `default_page` until the stream selects one (and after `ESC @`).
    pub fn new(default_page: CodePage) -> Tokenizer {
        Tokenizer {
            state: State::Ground,
            default_page,
            page: default_page,
            charset: 0,
            utf8: [0; 4],
            utf8_len: 0,
            utf8_need: 0,
        }
    }

    /// The code page currently selected.
    pub fn code_page(&self) -> CodePage {
        self.page
    }

    /// True when no command or multi-byte character is half-read.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Ground) && self.utf8_need == 0
    }

    /// Tokenizes `bytes`, appending to `out`. Bytes may be split anywhere between calls.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Token>) {
        let mut i = 0;
        while i < bytes.len() {
            match &mut self.state {
                State::Skip {
                    name,
                    remaining,
                    total,
                } => {
                    let take = (*remaining).min((bytes.len() - i) as u64);
                    *remaining -= take;
                    i += take as usize;
                    if *remaining == 0 {
                        out.push(Token::Command(Command { name, len: *total }));
                        self.state = State::Ground;
                    }
                }
                State::DownloadChars {
                    y,
                    chars_left,
                    skip,
                    total,
                } => {
                    if *skip > 0 {
                        let take = (*skip).min((bytes.len() - i) as u64);
                        *skip -= take;
                        *total += take;
                        i += take as usize;
                    } else if *chars_left == 0 {
                        out.push(Token::Command(Command {
                            name: "ESC &",
                            len: *total,
                        }));
                        self.state = State::Ground;
                    } else {
                        *skip = *y * bytes[i] as u64;
                        *chars_left -= 1;
                        *total += 1;
                        i += 1;
                    }
                    self.finish_download_chars(out);
                }
                State::NvImages {
                    images_left,
                    hdr,
                    hdr_len,
                    skip,
                    total,
                } => {
                    if *skip > 0 {
                        let take = (*skip).min((bytes.len() - i) as u64);
                        *skip -= take;
                        *total += take;
                        i += take as usize;
                    } else {
                        hdr[*hdr_len] = bytes[i];
                        *hdr_len += 1;
                        *total += 1;
                        i += 1;
                        if *hdr_len == 4 {
                            let x = u16::from_le_bytes([hdr[0], hdr[1]]) as u64;
                            let y = u16::from_le_bytes([hdr[2], hdr[3]]) as u64;
                            *skip = x * y * 8;
                            *hdr_len = 0;
                            *images_left -= 1;
                        }
                    }
                    self.finish_nv_images(out);
                }
                State::UntilNul { name, left, total } => {
                    let byte = bytes[i];
                    i += 1;
                    *total += 1;
                    *left = left.saturating_sub(1);
                    if byte == 0 || *left == 0 {
                        out.push(Token::Command(Command { name, len: *total }));
                        self.state = State::Ground;
                    }
                }
                State::Header { buf, len } => {
                    buf[*len] = bytes[i];
                    *len += 1;
                    i += 1;
                    let (buf, len) = (*buf, *len);
                    self.header_step(&buf[..len], out);
                }
                State::Ground => {
                    self.ground(bytes[i], out);
                    i += 1;
                }
            }
        }
    }

    fn finish_download_chars(&mut self, out: &mut Vec<Token>) {
        if let State::DownloadChars {
            chars_left: 0,
            skip: 0,
            total,
            ..
        } = self.state
        {
            out.push(Token::Command(Command {
                name: "ESC &",
                len: total,
            }));
            self.state = State::Ground;
        }
    }

    fn finish_nv_images(&mut self, out: &mut Vec<Token>) {
        if let State::NvImages {
            images_left: 0,
            hdr_len: 0,
            skip: 0,
            total,
            ..
        } = self.state
        {
            out.push(Token::Command(Command {
                name: "FS q",
                len: total,
            }));
            self.state = State::Ground;
        }
    }

    fn ground(&mut self, byte: u8, out: &mut Vec<Token>) {
        if self.utf8_need > 0 {
            if byte & 0xC0 == 0x80 {
                self.utf8[self.utf8_len] = byte;
                self.utf8_len += 1;
                if self.utf8_len == self.utf8_need {
                    let ch = std::str::from_utf8(&self.utf8[..self.utf8_len])
                        .ok()
                        .and_then(|s| s.chars().next())
                        .unwrap_or(char::REPLACEMENT_CHARACTER);
                    out.push(Token::Text(ch));
                    self.utf8_need = 0;
                    self.utf8_len = 0;
                }
                return;
            }
            out.push(Token::Text(char::REPLACEMENT_CHARACTER));
            self.utf8_need = 0;
            self.utf8_len = 0;
        }
        match byte {
            ESC | GS | FS | DLE => {
                let mut buf = [0; MAX_HEADER];
                buf[0] = byte;
                self.state = State::Header { buf, len: 1 };
            }
            b'\n' | 0x0C => out.push(Token::LineEnd),
            b'\t' => out.push(Token::Text(' ')),
            0x00..=0x1F | 0x7F => {}
            0x20..=0x7E => out.push(Token::Text(self.ascii(byte))),
            0x80..=0xFF => {
                if self.page == CodePage::Utf8 {
                    let need = match byte {
                        0xC2..=0xDF => 2,
                        0xE0..=0xEF => 3,
                        0xF0..=0xF4 => 4,
                        _ => 0,
                    };
                    if need == 0 {
                        out.push(Token::Text(char::REPLACEMENT_CHARACTER));
                    } else {
                        self.utf8[0] = byte;
                        self.utf8_len = 1;
                        self.utf8_need = need;
                    }
                } else {
                    out.push(Token::Text(self.page.decode_byte(byte)));
                }
            }
        }
    }

    /// ASCII through the international character set selected by `ESC R n`.
    fn ascii(&self, byte: u8) -> char {
        match (self.charset, byte) {
            // Germany
            (2, b'@') => '§',
            (2, b'[') => 'Ä',
            (2, b'\\') => 'Ö',
            (2, b']') => 'Ü',
            (2, b'{') => 'ä',
            (2, b'|') => 'ö',
            (2, b'}') => 'ü',
            (2, b'~') => 'ß',
            // United Kingdom
            (3, b'#') => '£',
            _ => byte as char,
        }
    }

    fn header_step(&mut self, header: &[u8], out: &mut Vec<Token>) {
        match classify(header) {
            Step::More => {
                if header.len() >= MAX_HEADER {
                    // Cannot happen for the table below; never loop or panic on it either.
                    self.state = State::Ground;
                }
            }
            Step::Done(name) => {
                self.state = State::Ground;
                out.push(Token::Command(Command {
                    name,
                    len: header.len() as u64,
                }));
                self.apply(name, header, out);
            }
            Step::Payload(name, 0) => {
                self.state = State::Ground;
                out.push(Token::Command(Command {
                    name,
                    len: header.len() as u64,
                }));
            }
            Step::Payload(name, payload) => {
                self.state = State::Skip {
                    name,
                    remaining: payload,
                    total: header.len() as u64 + payload,
                };
            }
            Step::UntilNul(name, max) => {
                self.state = State::UntilNul {
                    name,
                    left: max,
                    total: header.len() as u64,
                };
            }
            Step::DownloadChars { y, chars } => {
                self.state = State::DownloadChars {
                    y,
                    chars_left: chars,
                    skip: 0,
                    total: header.len() as u64,
                };
                self.finish_download_chars(out);
            }
            Step::NvImages(images) => {
                self.state = State::NvImages {
                    images_left: images,
                    hdr: [0; 4],
                    hdr_len: 0,
                    skip: 0,
                    total: header.len() as u64,
                };
                self.finish_nv_images(out);
            }
            Step::Lone(name) => {
                self.state = State::Ground;
                out.push(Token::Command(Command { name, len: 1 }));
                let rest: Vec<u8> = header[1..].to_vec();
                self.feed(&rest, out);
            }
        }
    }

    /// The effect of a complete command on the tokenizer and the token stream.
    fn apply(&mut self, name: &'static str, header: &[u8], out: &mut Vec<Token>) {
        match name {
            "ESC @" => {
                self.page = self.default_page;
                self.charset = 0;
            }
            "ESC t" => self.page = CodePage::from_esc_t(header[2]),
            "ESC R" => self.charset = header[2],
            "ESC d" | "ESC J" | "ESC K" => out.push(Token::LineEnd),
            "ESC i" => out.push(Token::Cut { partial: true }),
            "ESC m" => out.push(Token::Cut { partial: true }),
            "GS V" => {
                let partial = matches!(header[2], 1 | 49 | 66 | 98 | 104);
                out.push(Token::Cut { partial });
            }
            _ => {}
        }
    }
}

fn need(header: &[u8], n: usize, name: &'static str) -> Step {
    if header.len() < n {
        Step::More
    } else {
        Step::Done(name)
    }
}

fn need_payload(
    header: &[u8],
    n: usize,
    name: &'static str,
    payload: impl Fn(&[u8]) -> u64,
) -> Step {
    if header.len() < n {
        Step::More
    } else {
        Step::Payload(name, payload(header))
    }
}

fn le16(lo: u8, hi: u8) -> u64 {
    u16::from_le_bytes([lo, hi]) as u64
}

/// What the header collected so far means. `header[0]` is ESC, GS, FS or DLE.
fn classify(h: &[u8]) -> Step {
    if h.len() < 2 {
        return Step::More;
    }
    match h[0] {
        ESC => classify_esc(h),
        GS => classify_gs(h),
        FS => classify_fs(h),
        _ => classify_dle(h),
    }
}

fn classify_esc(h: &[u8]) -> Step {
    match h[1] {
        0x0C => Step::Done("ESC FF"),
        b' ' => need(h, 3, "ESC SP"),
        b'!' => need(h, 3, "ESC !"),
        b'$' => need(h, 4, "ESC $"),
        b'%' => need(h, 3, "ESC %"),
        b'&' => {
            if h.len() < 5 {
                return Step::More;
            }
            let (y, c1, c2) = (h[2] as u64, h[3], h[4]);
            let chars = if c2 >= c1 { (c2 - c1) as u32 + 1 } else { 0 };
            Step::DownloadChars { y, chars }
        }
        b'(' => need_payload(h, 5, "ESC (", |h| le16(h[3], h[4])),
        b'*' => need_payload(h, 5, "ESC *", |h| {
            let n = le16(h[3], h[4]);
            if matches!(h[2], 32 | 33) {
                n * 3
            } else {
                n
            }
        }),
        b'-' => need(h, 3, "ESC -"),
        b'2' => Step::Done("ESC 2"),
        b'3' => need(h, 3, "ESC 3"),
        b'<' => Step::Done("ESC <"),
        b'=' => need(h, 3, "ESC ="),
        b'?' => need(h, 3, "ESC ?n"),
        b'@' => Step::Done("ESC @"),
        b'D' => Step::UntilNul("ESC D", 33),
        b'E' => need(h, 3, "ESC E"),
        b'G' => need(h, 3, "ESC G"),
        b'J' => need(h, 3, "ESC J"),
        b'K' => need(h, 3, "ESC K"),
        b'L' => Step::Done("ESC L"),
        b'M' => need(h, 3, "ESC M"),
        b'R' => need(h, 3, "ESC R"),
        b'S' => Step::Done("ESC S"),
        b'T' => need(h, 3, "ESC T"),
        b'U' => need(h, 3, "ESC U"),
        b'V' => need(h, 3, "ESC V"),
        b'W' => need(h, 10, "ESC W"),
        b'\\' => need(h, 4, "ESC \\"),
        b'a' => need(h, 3, "ESC a"),
        b'c' => need(h, 4, "ESC c"),
        b'd' => need(h, 3, "ESC d"),
        b'e' => need(h, 3, "ESC e"),
        b'i' => Step::Done("ESC i"),
        b'm' => Step::Done("ESC m"),
        b'p' => need(h, 5, "ESC p"),
        b'r' => need(h, 3, "ESC r"),
        b't' => need(h, 3, "ESC t"),
        b'u' => need(h, 3, "ESC u"),
        b'v' => Step::Done("ESC v"),
        b'{' => need(h, 3, "ESC {"),
        _ => need(h, 3, "ESC ?"),
    }
}

fn classify_gs(h: &[u8]) -> Step {
    match h[1] {
        b'!' => need(h, 3, "GS !"),
        b'$' => need(h, 4, "GS $"),
        b'(' => {
            if h.len() < 3 {
                return Step::More;
            }
            let name = match h[2] {
                b'k' => "GS ( k",
                b'L' => "GS ( L",
                b'A' => "GS ( A",
                b'C' => "GS ( C",
                b'D' => "GS ( D",
                b'E' => "GS ( E",
                b'H' => "GS ( H",
                b'K' => "GS ( K",
                b'M' => "GS ( M",
                b'N' => "GS ( N",
                b'Q' => "GS ( Q",
                _ => "GS ( ?",
            };
            need_payload(h, 5, name, |h| le16(h[3], h[4]))
        }
        b'*' => need_payload(h, 4, "GS *", |h| h[2] as u64 * h[3] as u64 * 8),
        b'/' => need(h, 3, "GS /"),
        b':' => Step::Done("GS :"),
        b'8' => {
            if h.len() < 3 {
                return Step::More;
            }
            if h[2] == b'L' {
                need_payload(h, 7, "GS 8 L", |h| {
                    u32::from_le_bytes([h[3], h[4], h[5], h[6]]) as u64
                })
            } else {
                Step::Done("GS ?")
            }
        }
        b'B' => need(h, 3, "GS B"),
        b'C' => {
            if h.len() < 3 {
                return Step::More;
            }
            match h[2] {
                b'0' => need(h, 5, "GS C 0"),
                b'1' => need(h, 9, "GS C 1"),
                b'2' => need(h, 5, "GS C 2"),
                _ => Step::Done("GS ?"),
            }
        }
        b'E' => need(h, 3, "GS E"),
        b'H' => need(h, 3, "GS H"),
        b'I' => need(h, 3, "GS I"),
        b'L' => need(h, 4, "GS L"),
        b'P' => need(h, 4, "GS P"),
        b'T' => need(h, 3, "GS T"),
        b'V' => {
            if h.len() < 3 {
                return Step::More;
            }
            if matches!(h[2], 65 | 66 | 97 | 98 | 103 | 104) {
                need(h, 4, "GS V")
            } else {
                Step::Done("GS V")
            }
        }
        b'W' => need(h, 4, "GS W"),
        b'\\' => need(h, 4, "GS \\"),
        b'^' => need(h, 5, "GS ^"),
        b'a' => need(h, 3, "GS a"),
        b'b' => need(h, 3, "GS b"),
        b'c' => Step::Done("GS c"),
        b'f' => need(h, 3, "GS f"),
        b'g' => {
            if h.len() < 3 {
                return Step::More;
            }
            if matches!(h[2], b'0' | b'2') {
                need(h, 6, "GS g")
            } else {
                Step::Done("GS ?")
            }
        }
        b'h' => need(h, 3, "GS h"),
        b'j' => need(h, 3, "GS j"),
        b'k' => {
            if h.len() < 3 {
                return Step::More;
            }
            if h[2] <= 6 {
                Step::UntilNul("GS k", MAX_BARCODE_A)
            } else {
                need_payload(h, 4, "GS k", |h| h[3] as u64)
            }
        }
        b'r' => need(h, 3, "GS r"),
        b'v' => {
            if h.len() < 3 {
                return Step::More;
            }
            if h[2] == b'0' {
                need_payload(h, 8, "GS v 0", |h| le16(h[4], h[5]) * le16(h[6], h[7]))
            } else {
                Step::Done("GS ?")
            }
        }
        b'w' => need(h, 3, "GS w"),
        b'z' => need(h, 5, "GS z"),
        _ => need(h, 3, "GS ?"),
    }
}

fn classify_fs(h: &[u8]) -> Step {
    match h[1] {
        b'!' => need(h, 3, "FS !"),
        b'&' => Step::Done("FS &"),
        b'-' => need(h, 3, "FS -"),
        b'.' => Step::Done("FS ."),
        b'2' => need_payload(h, 4, "FS 2", |_| 72),
        b'(' => need_payload(h, 5, "FS (", |h| le16(h[3], h[4])),
        b'C' => need(h, 3, "FS C"),
        b'S' => need(h, 4, "FS S"),
        b'W' => need(h, 3, "FS W"),
        b'g' => {
            if h.len() < 3 {
                return Step::More;
            }
            match h[2] {
                b'1' => need_payload(h, 10, "FS g 1", |h| le16(h[8], h[9])),
                b'2' => need(h, 10, "FS g 2"),
                _ => Step::Done("FS ?"),
            }
        }
        b'p' => need(h, 4, "FS p"),
        b'q' => {
            if h.len() < 3 {
                return Step::More;
            }
            Step::NvImages(h[2] as u32)
        }
        _ => Step::Done("FS ?"),
    }
}

fn classify_dle(h: &[u8]) -> Step {
    match h[1] {
        0x04 => {
            if h.len() < 3 {
                Step::More
            } else if matches!(h[2], 7 | 8) {
                need(h, 4, "DLE EOT")
            } else {
                Step::Done("DLE EOT")
            }
        }
        0x05 => need(h, 3, "DLE ENQ"),
        0x14 => {
            if h.len() < 3 {
                return Step::More;
            }
            match h[2] {
                7 => need(h, 4, "DLE DC4"),
                8 => need(h, 10, "DLE DC4"),
                _ => need(h, 5, "DLE DC4"),
            }
        }
        _ => Step::Lone("DLE"),
    }
}

#[cfg(test)]
mod tests;
