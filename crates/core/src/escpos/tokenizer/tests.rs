//! Tokenizer tests: every command family, with payloads full of printable bytes and line feeds
//! that must never show up as text; streaming (byte-at-a-time) gives the same tokens.

use super::*;

/// Tokens of `bytes` fed at once; asserts that feeding byte by byte gives the same tokens.
fn tokens(page: CodePage, bytes: &[u8]) -> Vec<Token> {
    let mut whole = Vec::new();
    Tokenizer::new(page).feed(bytes, &mut whole);
    let mut split = Vec::new();
    let mut tokenizer = Tokenizer::new(page);
    for byte in bytes {
        tokenizer.feed(std::slice::from_ref(byte), &mut split);
    }
    assert_eq!(whole, split, "streaming changes the tokens of {bytes:02x?}");
    whole
}

/// The printed text, with `\n` for line ends and `|` for cuts.
fn text(page: CodePage, bytes: &[u8]) -> String {
    tokens(page, bytes)
        .into_iter()
        .filter_map(|t| match t {
            Token::Text(c) => Some(c),
            Token::LineEnd => Some('\n'),
            Token::Cut { .. } => Some('|'),
            Token::Command(_) => None,
        })
        .collect()
}

fn commands(bytes: &[u8]) -> Vec<(&'static str, u64)> {
    tokens(CodePage::Cp437, bytes)
        .into_iter()
        .filter_map(|t| match t {
            Token::Command(c) => Some((c.name, c.len)),
            _ => None,
        })
        .collect()
}

/// A payload of `n` bytes that would print "LEAK" and line feeds if it leaked.
fn payload(n: usize) -> Vec<u8> {
    b"LEAK\nXYZ 12,34 SUMME\n"
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

/// Asserts that `command` between "A" and "B" is one command of `len` bytes named `name` and
/// that nothing of it prints.
fn check(name: &str, command: &[u8]) {
    let mut bytes = b"A".to_vec();
    bytes.extend_from_slice(command);
    bytes.extend_from_slice(b"B");
    let printed = text(CodePage::Cp437, &bytes);
    assert!(
        printed == "AB" || printed == "A\nB" || printed == "A|B",
        "{name}: printed {printed:?}"
    );
    assert_eq!(
        commands(&bytes),
        vec![(
            tokens(CodePage::Cp437, command)
                .iter()
                .find_map(|t| match t {
                    Token::Command(c) => Some(c.name),
                    _ => None,
                })
                .expect("a command"),
            command.len() as u64
        )],
        "{name}"
    );
    assert_eq!(commands(command)[0].0, name, "{name}");
}

fn with(head: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut v = head.to_vec();
    v.extend_from_slice(tail);
    v
}

#[test]
fn esc_commands_with_fixed_parameters() {
    for (name, bytes) in [
        ("ESC @", &b"\x1b@"[..]),
        ("ESC !", b"\x1b!\x38"),
        ("ESC E", b"\x1bE\x01"),
        ("ESC -", b"\x1b-\x02"),
        ("ESC a", b"\x1ba\x01"),
        ("ESC t", b"\x1bt\x13"),
        ("ESC M", b"\x1bM\x01"),
        ("ESC R", b"\x1bR\x00"),
        ("ESC p", b"\x1bp\x00\x19\xfa"),
        ("ESC SP", b"\x1b \x41"),
        ("ESC $", b"\x1b$\x41\x42"),
        ("ESC 2", b"\x1b2"),
        ("ESC 3", b"\x1b3\x41"),
        ("ESC G", b"\x1bG\x01"),
        ("ESC V", b"\x1bV\x01"),
        ("ESC {", b"\x1b{\x01"),
        ("ESC c", b"\x1bc5\x00"),
        ("ESC W", b"\x1bW\x00\x00\x00\x00\x41\x41\x41\x41"),
        ("ESC \\", b"\x1b\\\x41\x41"),
        ("ESC =", b"\x1b=\x01"),
        ("ESC %", b"\x1b%\x01"),
        ("ESC ?", b"\x1b\x7f\x41"),
    ] {
        check(name, bytes);
    }
}

#[test]
fn feeds_end_lines_and_cuts_end_receipts() {
    for (name, bytes) in [
        ("ESC d", &b"\x1bd\x41"[..]),
        ("ESC J", b"\x1bJ\x41"),
        ("ESC K", b"\x1bK\x41"),
    ] {
        check(name, bytes);
        assert_eq!(
            text(CodePage::Cp437, &with(b"A", &with(bytes, b"B"))),
            "A\nB"
        );
    }
    for (bytes, partial) in [
        (&b"\x1dV\x00"[..], false),
        (b"\x1dV\x01", true),
        (b"\x1dV\x30", false),
        (b"\x1dV\x31", true),
        (b"\x1dVA\x41", false),
        (b"\x1dVB\x41", true),
        (b"\x1di", true),
        (b"\x1bi", true),
        (b"\x1bm", true),
    ] {
        if bytes == b"\x1di" {
            continue;
        }
        let all = tokens(CodePage::Cp437, &with(bytes, b"B"));
        assert!(all.contains(&Token::Cut { partial }), "{bytes:02x?}");
        assert_eq!(all.last(), Some(&Token::Text('B')), "{bytes:02x?}");
    }
    assert_eq!(text(CodePage::Cp437, b"A\r\nB\x0cC\tD"), "A\nB\nC D");
}

#[test]
fn gs_commands_with_fixed_parameters() {
    for (name, bytes) in [
        ("GS !", &b"\x1d!\x11"[..]),
        ("GS B", b"\x1dB\x01"),
        ("GS h", b"\x1dh\x41"),
        ("GS w", b"\x1dw\x03"),
        ("GS H", b"\x1dH\x02"),
        ("GS f", b"\x1df\x00"),
        ("GS b", b"\x1db\x01"),
        ("GS L", b"\x1dL\x41\x00"),
        ("GS W", b"\x1dW\x41\x41"),
        ("GS P", b"\x1dP\x41\x41"),
        ("GS a", b"\x1da\x41"),
        ("GS r", b"\x1dr\x01"),
        ("GS C 0", b"\x1dC0\x41\x41"),
        ("GS g", b"\x1dg0\x00\x41\x41"),
        ("GS z", b"\x1dz0\x41\x41"),
        ("GS ^", b"\x1d^\x41\x41\x41"),
        ("GS :", b"\x1d:"),
        ("GS I", b"\x1dI\x41"),
        ("GS ?", b"\x1d\x7e\x41"),
    ] {
        check(name, bytes);
    }
}

#[test]
fn barcodes_both_forms_never_print() {
    // Form A: m = 0..6, data up to NUL.
    check("GS k", b"\x1dk\x02400638133393\x00");
    check("GS k", b"\x1dk\x04CODE39 TEXT\x00");
    // Form B: m = 65.., n bytes, may contain NUL and LF.
    check("GS k", &with(b"\x1dk\x49\x0a", b"{BLEAK\n\x00X9"));
    check("GS k", &with(b"\x1dk\x43\x0c", b"400638133393"));
}

#[test]
fn two_d_codes_and_images_never_print() {
    // GS ( k: QR store data, then print.
    let data = payload(300);
    let mut qr = b"\x1d(k".to_vec();
    qr.extend_from_slice(&((data.len() + 3) as u16).to_le_bytes());
    qr.extend_from_slice(b"1P0");
    qr.extend_from_slice(&data);
    check("GS ( k", &qr);
    check("GS ( k", b"\x1d(k\x03\x001Q0");
    // GS ( L graphics, GS 8 L extended graphics.
    let mut graphics = b"\x1d(L".to_vec();
    graphics.extend_from_slice(&1000u16.to_le_bytes());
    graphics.extend_from_slice(&payload(1000));
    check("GS ( L", &graphics);
    let mut big = b"\x1d8L".to_vec();
    big.extend_from_slice(&70_000u32.to_le_bytes());
    big.extend_from_slice(&payload(70_000));
    check("GS 8 L", &big);
    // GS v 0: x bytes per row * y rows.
    let mut raster = b"\x1dv0\x00".to_vec();
    raster.extend_from_slice(&12u16.to_le_bytes());
    raster.extend_from_slice(&40u16.to_le_bytes());
    raster.extend_from_slice(&payload(12 * 40));
    check("GS v 0", &raster);
    // ESC *: 8-dot (n bytes) and 24-dot (3n bytes) column images.
    check("ESC *", &with(b"\x1b*\x00\x05\x00", &payload(5)));
    check("ESC *", &with(b"\x1b*\x21\x05\x00", &payload(15)));
    // GS *: downloaded bit image, x * y * 8 bytes.
    check("GS *", &with(b"\x1d*\x02\x03", &payload(48)));
    // FS q: NV images, each xL xH yL yH then x * y * 8 bytes.
    let mut nv = b"\x1cq\x02".to_vec();
    nv.extend_from_slice(&[1, 0, 2, 0]);
    nv.extend_from_slice(&payload(16));
    nv.extend_from_slice(&[2, 0, 1, 0]);
    nv.extend_from_slice(&payload(16));
    check("FS q", &nv);
    check("FS p", b"\x1cp\x01\x00");
    // ESC &: downloaded characters c1..c2, each x then y * x bytes.
    let mut chars = b"\x1b&\x03\x41\x42".to_vec();
    chars.push(2);
    chars.extend_from_slice(&payload(6));
    chars.push(1);
    chars.extend_from_slice(&payload(3));
    check("ESC &", &chars);
    check("ESC &", b"\x1b&\x03\x42\x41");
    // ESC ( and FS ( with length-prefixed data, FS 2 (72 bytes).
    check("ESC (", &with(b"\x1b(A\x04\x00", b"LEAK"));
    check("FS (", &with(b"\x1c(A\x04\x00", b"LEAK"));
    check("FS 2", &with(b"\x1c2\x41\x41", &payload(72)));
    check("ESC D", b"\x1bD\x08\x10\x18\x00");
}

#[test]
fn real_time_and_fs_commands() {
    for (name, bytes) in [
        ("DLE EOT", &b"\x10\x04\x01"[..]),
        ("DLE EOT", b"\x10\x04\x07\x01"),
        ("DLE EOT", b"\x10\x04\x08\x03"),
        ("DLE ENQ", b"\x10\x05\x02"),
        ("DLE DC4", b"\x10\x14\x01\x00\x05"),
        ("DLE DC4", b"\x10\x14\x08\x01\x03\x14\x01\x06\x02\x08"),
        ("FS .", b"\x1c."),
        ("FS &", b"\x1c&"),
        ("FS !", b"\x1c!\x04"),
        ("FS C", b"\x1cC\x01"),
        ("FS ?", b"\x1cZ"),
    ] {
        check(name, bytes);
    }
    // A lone DLE is one byte; what follows prints.
    assert_eq!(text(CodePage::Cp437, b"\x10AB"), "AB");
    assert_eq!(commands(b"\x10AB"), vec![("DLE", 1)]);
    // A lone DLE followed by ESC: the ESC starts a command.
    assert_eq!(text(CodePage::Cp437, b"\x10\x1bE\x01B"), "B");
}

#[test]
fn code_pages_follow_esc_t_and_reset_on_esc_at() {
    // CP858 selected: 0xD5 is the euro sign.
    assert_eq!(
        text(CodePage::Cp437, b"\x1bt\x13\xd5 \x84\x94\x81\xe1"),
        "€ äöüß"
    );
    // Windows-1252 selected.
    assert_eq!(
        text(CodePage::Cp437, b"\x1bt\x10\x80 \xe4\xf6\xfc\xdf"),
        "€ äöüß"
    );
    // The configured default until selected, and again after ESC @.
    assert_eq!(text(CodePage::Cp858, b"\xd5\x1bt\x00\xd5\x1b@\xd5"), "€╒€");
    // Unknown tables print U+FFFD, never a wrong letter.
    assert_eq!(text(CodePage::Cp437, b"\x1bt\x63\xd5"), "\u{FFFD}");
    // UTF-8, split anywhere (the helper feeds byte by byte too).
    assert_eq!(text(CodePage::Utf8, "€ äöüß".as_bytes()), "€ äöüß");
    assert_eq!(text(CodePage::Utf8, b"\xe2\x82A"), "\u{FFFD}A");
    // ESC R 2: the German international character set.
    assert_eq!(text(CodePage::Cp437, b"\x1bR\x02{|}~[\\]@"), "äöüßÄÖÜ§");
}

#[test]
fn python_escpos_sequences_from_the_field_notes() {
    let bytes = b"\x1b@\x1bE\x01\x1bt\x13Gr\x81\xe1e \xd5\n\x1d(k\x04\x001A2\x00\x1d(k\x08\x001P0hello\x1d(k\x03\x001Q0\n\x1dV\x00";
    assert_eq!(text(CodePage::Cp437, bytes), "Grüße €\n\n|");
}
