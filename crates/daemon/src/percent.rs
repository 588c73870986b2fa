//! Percent-encoding of URL query values, both ways, with the `percent-encoding` crate: the only
//! place that knows the escapes. Used by the local API (`?card=`), the CRM client (`?cursor=`,
//! `/customers/by-card/{card}`) and the reference CRM in the tools.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) is escaped.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a query value (everything but unreserved characters, upper-case hex).
pub fn encode_query_value(text: &str) -> String {
    utf8_percent_encode(text, QUERY_VALUE).to_string()
}

/// Percent-encodes one URL path segment (the escapes of a query value; `/` is escaped too).
pub fn encode_path_segment(text: &str) -> String {
    encode_query_value(text)
}

/// Decodes one URL path segment; `None` when the bytes are not UTF-8.
pub fn decode_path_segment(text: &str) -> Option<String> {
    percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

/// The first value of `name` in a URL query string, percent-decoded (`+` is a space). `None`
/// when the name is absent, or when a value is malformed: a `%` not followed by two hex digits,
/// or bytes that are not UTF-8 (the crate would pass the first through and the caller would
/// look up a garbled value).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(key)? == name).then(|| decode_component(value))?
    })
}

fn decode_component(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &byte)| {
        byte != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(
            query_param("card=2990000000019", "card").as_deref(),
            Some("2990000000019")
        );
        assert_eq!(
            query_param("x=1&card=%32%39+9", "card").as_deref(),
            Some("29 9")
        );
        assert_eq!(query_param("x=1", "card"), None);
        assert_eq!(query_param("card", "card").as_deref(), Some(""));
        // An escaped name still counts; `%2B` is a plus, `+` a space.
        assert_eq!(
            query_param("%63ard=a%2Bb+c", "card").as_deref(),
            Some("a+b c")
        );
    }

    #[test]
    fn hostile_values_are_refused_or_decoded_exactly() {
        // Malformed escapes: refused, never passed through.
        for query in [
            "card=%zz",
            "card=%",
            "card=%4",
            "card=1%",
            "card=%%41",
            "card=%+1",
        ] {
            assert_eq!(query_param(query, "card"), None, "{query}");
        }
        // Not UTF-8 (an overlong slash, a lone continuation byte): refused.
        assert_eq!(query_param("card=%C0%AF", "card"), None);
        assert_eq!(query_param("card=%80", "card"), None);
        // Decoded exactly; the caller judges the content (the local API refuses control
        // characters and over-long values).
        assert_eq!(
            query_param("card=..%2F..%2Fetc%2Fpasswd", "card").as_deref(),
            Some("../../etc/passwd")
        );
        assert_eq!(query_param("card=a%00b", "card").as_deref(), Some("a\0b"));
        assert_eq!(query_param("card=%25zz", "card").as_deref(), Some("%zz"));
        // A malformed first pair does not hide a later, well-formed one of another name.
        assert_eq!(query_param("x=%zz&card=7", "card").as_deref(), Some("7"));
    }

    #[test]
    fn encoding_escapes_all_but_unreserved_in_upper_case() {
        assert_eq!(encode_query_value("aZ09-._~"), "aZ09-._~");
        assert_eq!(
            encode_query_value("a b&c=d/é+%"),
            "a%20b%26c%3Dd%2F%C3%A9%2B%25"
        );
    }

    proptest! {
        #[test]
        fn any_text_round_trips(text in any::<String>()) {
            let query = format!("x=1&cursor={}", encode_query_value(&text));
            prop_assert_eq!(query_param(&query, "cursor"), Some(text));
        }
    }
}
