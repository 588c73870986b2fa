//! Payment card number (PAN) masking for captured receipt text. Pure.
//!
//! A PAN candidate is a run of 13 to 19 digits, written either without separators or in groups
//! separated by single spaces or dashes (`4111 1111 1111 1111`, `4111-1111-1111-1111`), that
//! passes the Luhn check. Candidates are looked for at every group boundary of a digit run,
//! so a PAN followed by another number (`4111111111111111 12`) is still found. Every digit of a
//! candidate except the last four is replaced by `*`; separators are kept.
//!
//! Deliberate exceptions (documented in docs/arch/escpos.md):
//! - a run of exactly 13 digits that is a valid EAN-13/GTIN-13 is an article or loyalty card
//!   number, not a card (13-digit PANs have not been issued for years);
//! - numbers starting with one of the profile's `pan_exempt_prefixes` (the program's own
//!   Luhn-numbered cards; validation refuses prefixes inside payment card ranges).
//!
//! Invariant: a string returned by [`mask_pans`] contains no Luhn-valid 13–19 digit candidate
//! outside those exceptions.

/// Luhn (mod 10) check over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut sum = 0u32;
    for (index, &d) in digits.iter().rev().enumerate() {
        let mut v = (d - b'0') as u32;
        if index % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

/// GS1 check digit over ASCII digits (EAN-13, EAN-8, GTIN-14).
pub fn gtin_valid(digits: &[u8]) -> bool {
    if digits.len() < 2 || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let (body, check) = digits.split_at(digits.len() - 1);
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| (d - b'0') as u32 * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    (10 - sum % 10) % 10 == (check[0] - b'0') as u32
}

/// True when a digit prefix could begin a payment card number (major industry identifiers
/// 1 and 3 to 6, and Mastercard's 2221–2720), so it must not exempt numbers from masking.
pub fn prefix_overlaps_payment_cards(prefix: &str) -> bool {
    let Some(first) = prefix.bytes().next() else {
        return true;
    };
    match first {
        b'1' | b'3'..=b'6' => true,
        b'2' => {
            // Compare the range of 4-digit prefixes this prefix covers with 2221..=2720.
            let digits: String = prefix.chars().take(4).collect();
            let Ok(value) = digits.parse::<u32>() else {
                return true;
            };
            let scale = 10u32.pow(4 - digits.len() as u32);
            let low = value * scale;
            let high = low + scale - 1;
            low <= 2720 && high >= 2221
        }
        _ => false,
    }
}

/// Masks every PAN candidate in `text` (all digits but the last four become `*`). Returns the
/// masked text and how many numbers were masked. `exempt_prefixes` are digit prefixes that
/// are never masked.
pub fn mask_pans(text: &str, exempt_prefixes: &[String]) -> (String, usize) {
    let mut chars: Vec<char> = text.chars().collect();
    let mut masked = 0;
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // A run: digits, with single ' ' or '-' between digits.
        let start = i;
        let mut end = i;
        while end < chars.len() {
            let separator = (chars[end] == ' ' || chars[end] == '-')
                && end > start
                && chars.get(end + 1).is_some_and(char::is_ascii_digit);
            if chars[end].is_ascii_digit() || separator {
                end += 1;
            } else {
                break;
            }
        }
        masked += mask_run(&mut chars[start..end], exempt_prefixes);
        i = end;
    }
    (chars.into_iter().collect(), masked)
}

/// Masks candidates inside one run (`chars` holds digits and single separators).
fn mask_run(run: &mut [char], exempt_prefixes: &[String]) -> usize {
    // Digit positions, and the digit indexes at which a group starts.
    let positions: Vec<usize> = (0..run.len())
        .filter(|&p| run[p].is_ascii_digit())
        .collect();
    if positions.len() < 13 {
        return 0;
    }
    let digits: Vec<u8> = positions.iter().map(|&p| run[p] as u8).collect();
    let mut group_starts = vec![0usize];
    let mut group_ends = Vec::new();
    for (k, pair) in positions.windows(2).enumerate() {
        if pair[1] != pair[0] + 1 {
            group_ends.push(k + 1);
            group_starts.push(k + 1);
        }
    }
    group_ends.push(digits.len());
    let mut to_mask = vec![false; digits.len()];
    let mut found = 0usize;
    for &from in &group_starts {
        for &to in &group_ends {
            if to <= from {
                continue;
            }
            let len = to - from;
            if !(13..=19).contains(&len) {
                continue;
            }
            let candidate = &digits[from..to];
            if !luhn_valid(candidate) {
                continue;
            }
            if len == 13 && gtin_valid(candidate) {
                continue;
            }
            let text = std::str::from_utf8(candidate).unwrap_or("");
            if exempt_prefixes
                .iter()
                .any(|p| !p.is_empty() && text.starts_with(p.as_str()))
            {
                continue;
            }
            found += 1;
            for flag in &mut to_mask[from..to - 4] {
                *flag = true;
            }
        }
    }
    for (k, &mask) in to_mask.iter().enumerate() {
        if mask {
            run[positions[k]] = '*';
        }
    }
    if found == 0 {
        return 0;
    }
    // Count masked segments (two adjacent numbers count as two).
    let mut segments = 0;
    let mut previous = false;
    for &mask in &to_mask {
        if mask && !previous {
            segments += 1;
        }
        previous = mask;
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(text: &str) -> String {
        mask_pans(text, &[]).0
    }

    #[test]
    fn masks_luhn_valid_card_numbers_in_any_layout() {
        assert_eq!(mask("4111111111111111"), "************1111");
        assert_eq!(
            mask("Karte 4111 1111 1111 1111 VISA"),
            "Karte **** **** **** 1111 VISA"
        );
        assert_eq!(mask("5500-0000-0000-0004"), "****-****-****-0004");
        // Amex, 15 digits in 4-6-5 groups.
        assert_eq!(mask("3782 822463 10005"), "**** ****** *0005");
        // Two numbers in one run.
        assert_eq!(
            mask_pans("4111111111111111 5500000000000004", &[]),
            ("************1111 ************0004".to_string(), 2)
        );
        // Followed by another number, glued with a space: still found.
        assert_eq!(mask("4111111111111111 12,50"), "************1111 12,50");
        // Several on one line.
        assert_eq!(
            mask("A 4111111111111111 B 5500000000000004"),
            "A ************1111 B ************0004"
        );
        assert_eq!(mask_pans("x 4111111111111111 y", &[]).1, 1);
    }

    #[test]
    fn keeps_what_is_not_a_card() {
        for keep in [
            "4111111111111112",     // Luhn fails
            "Summe 12,34",          // short
            "411111111111",         // 12 digits
            "41111111111111111111", // 20 digits in one group, Luhn-valid or not
            "4006381333931",        // EAN-13 article number
            "2990000000019",        // EAN-13 loyalty card
            "Bon-Nr. 4711 Kasse 3",
            "Datum 23.11.2026 10:15",
        ] {
            assert_eq!(mask(keep), keep, "{keep}");
        }
        // Exempt prefixes (the program's own 16-digit Luhn cards).
        let own = "7777000000000006";
        assert!(luhn_valid(own.as_bytes()));
        assert_eq!(mask_pans(own, &["7777".into()]).0, own);
        assert_eq!(mask_pans(own, &[]).0, "************0006");
    }

    #[test]
    fn checksums() {
        assert!(luhn_valid(b"79927398713"));
        assert!(!luhn_valid(b"79927398710"));
        assert!(!luhn_valid(b""));
        assert!(gtin_valid(b"4006381333931"));
        assert!(!gtin_valid(b"4006381333932"));
        assert!(gtin_valid(b"2990000000019"));
    }

    #[test]
    fn exempt_prefixes_must_not_cover_payment_ranges() {
        for bad in [
            "", "4", "51", "3", "6", "1", "2", "22", "2221", "272", "2720", "25",
        ] {
            assert!(prefix_overlaps_payment_cards(bad), "{bad}");
        }
        for ok in ["299", "7777", "0", "9", "21", "2220", "2721", "28", "8"] {
            assert!(!prefix_overlaps_payment_cards(ok), "{ok}");
        }
    }
}
