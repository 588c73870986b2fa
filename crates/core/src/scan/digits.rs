//! Check digits: GS1 (EAN/UPC/GTIN), Luhn, and whether a number looks like a payment card.

/// The GS1 check digit (EAN-8, UPC-A, EAN-13, GTIN-14) of `digits` without it.
pub fn gs1_check_digit(digits: &str) -> u8 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b.wrapping_sub(b'0') % 10);
            if i % 2 == 0 {
                d * 3
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Luhn (mod 10) check over all digits, the last being the check digit.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let dd = d * 2;
                if dd > 9 {
                    dd - 9
                } else {
                    dd
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// A payment card number: 13 to 19 digits, passing Luhn, issued by a payment network
/// (major industry identifier 2 to 6).
pub fn looks_like_payment_card(digits: &str) -> bool {
    (13..=19).contains(&digits.len())
        && matches!(digits.as_bytes().first(), Some(b'2'..=b'6'))
        && luhn_valid(digits)
}
