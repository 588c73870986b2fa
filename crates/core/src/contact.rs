//! A customer's phone number and e-mail address as the store may know them: only as hashes.
//! Owns the one normalisation both sides use (head office computes the same hash before it
//! sends `phone_hash` / `email_hash`; the staff page hashes what staff type), documented in
//! `docs/openapi.yaml`:
//!
//! - phone: every digit, in order, nothing else (a leading `+` is dropped, its country code
//!   kept as digits: `+49 170 123-4567` → `491701234567`); allowed separators are spaces, `-`,
//!   `.`, `/` and parentheses; 6 to 15 digits (E.164's maximum). A national form
//!   (`0170 …`) is a different number: head office should record the international form.
//! - e-mail: trimmed and lowercased (`  Anna@Example.COM ` → `anna@example.com`); one `@`
//!   with something on both sides, no whitespace inside.
//!
//! The hash is the lowercase hex SHA-256 of the normalised value's UTF-8 bytes.

use sha2::{Digest, Sha256};

/// The normalised phone number (digits only), or `None` when `raw` is not a phone number.
pub fn normalise_phone(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let body = raw.strip_prefix('+').unwrap_or(raw);
    let mut digits = String::with_capacity(body.len());
    for c in body.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '/' | '(' | ')' => {}
            _ => return None,
        }
    }
    (6..=15).contains(&digits.len()).then_some(digits)
}

/// The normalised e-mail address (trimmed, lowercased), or `None` when `raw` is not one.
pub fn normalise_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let valid = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !email.chars().any(char::is_whitespace)
        && email.len() <= 254;
    valid.then_some(email)
}

/// `phone_hash` of a phone number as typed, or `None` when it is not a phone number.
pub fn phone_hash(raw: &str) -> Option<String> {
    normalise_phone(raw).map(|n| sha256_hex(&n))
}

/// `email_hash` of an e-mail address as typed, or `None` when it is not one.
pub fn email_hash(raw: &str) -> Option<String> {
    normalise_email(raw).map(|n| sha256_hex(&n))
}

/// Whether `value` has the shape of a contact hash (64 lowercase hex digits).
pub fn is_contact_hash(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn sha256_hex(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_formats_normalise_to_the_same_digits() {
        for raw in [
            "+49 170 123-4567",
            "+491701234567",
            " +49 (170) 123 45 67 ",
            "49-170-123-4567",
            "49.170/1234567",
        ] {
            assert_eq!(
                normalise_phone(raw).as_deref(),
                Some("491701234567"),
                "{raw}"
            );
        }
        assert_eq!(
            normalise_phone("0170 1234567").as_deref(),
            Some("01701234567")
        );
        for bad in [
            "",
            "+",
            "12345",
            "1234567890123456",
            "call me",
            "+49 170 x",
            "++49170123",
        ] {
            assert_eq!(normalise_phone(bad), None, "{bad}");
        }
    }

    #[test]
    fn email_is_trimmed_and_lowercased() {
        assert_eq!(
            normalise_email("  Anna.Schmidt@Example.COM \n").as_deref(),
            Some("anna.schmidt@example.com")
        );
        for bad in [
            "",
            "anna",
            "@example.com",
            "anna@",
            "an na@example.com",
            "a@b@c",
        ] {
            assert_eq!(normalise_email(bad), None, "{bad}");
        }
    }

    #[test]
    fn hashes_are_hex_sha256_of_the_normalised_value() {
        // printf '%s' 491701234567 | sha256sum
        let expected = "8b47a52ed04d068c3a9c5632b98cec18780a9f9f4099d4f8afe233970ce116fe";
        assert_eq!(phone_hash("+49 170 123-4567").as_deref(), Some(expected));
        assert!(is_contact_hash(expected));
        // printf '%s' abc | sha256sum (a known vector: the function is plain SHA-256)
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(email_hash(" A@B.de"), email_hash("a@b.DE"));
        assert_ne!(email_hash("a@b.de"), phone_hash("+49 170 123-4567"));
        assert!(!is_contact_hash("ABC"));
    }
}
