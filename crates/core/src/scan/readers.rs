//! Magnetic stripe (track 1 and 2) and NFC UID readers: what each sends and how it becomes a
//! card number.

use super::*;

/// Track 2: `;PAN=YYMM...?` (or `;NUMBER?` on loyalty cards).
pub(super) fn track2(data: &str, matcher: &CardMatcher) -> Result<Scan, ScanError> {
    let body = data.strip_prefix(';').unwrap_or(data);
    let Some(end) = body.find('?') else {
        return Err(ScanError::PartialRead { track: 2 });
    };
    let (body, after) = (&body[..end], &body[end + 1..]);
    // One LRC character may follow the end sentinel.
    if after.len() > 1 {
        return Err(ScanError::BadTrack {
            track: 2,
            reason: "data after the end sentinel",
        });
    }
    if !body.bytes().all(|b| b.is_ascii_digit() || b == b'=') {
        return Err(ScanError::BadTrack {
            track: 2,
            reason: "only digits and '=' are allowed",
        });
    }
    let pan = body.split('=').next().unwrap_or("");
    if !(6..=19).contains(&pan.len()) {
        return Err(ScanError::BadTrack {
            track: 2,
            reason: "the card number field must have 6 to 19 digits",
        });
    }
    number(pan, ReadAs::MagStripe { track: 2 }, false, matcher)
}

/// Track 1: `%B<PAN>^<NAME>^<YYMM...>?`, optionally followed by track 2 on the same line.
pub(super) fn track1(data: &str, matcher: &CardMatcher) -> Result<Scan, ScanError> {
    let body = data.strip_prefix('%').unwrap_or(data);
    let Some(end) = body.find('?') else {
        return Err(ScanError::PartialRead { track: 1 });
    };
    let (body, after) = (&body[..end], &body[end + 1..]);
    if !after.is_empty() {
        if after.starts_with(';') {
            // Both tracks on one line: track 2 must be complete; it decides.
            return track2(after, matcher);
        }
        if after.len() > 1 {
            return Err(ScanError::BadTrack {
                track: 1,
                reason: "data after the end sentinel",
            });
        }
    }
    let Some(rest) = body.strip_prefix('B') else {
        return Err(ScanError::BadTrack {
            track: 1,
            reason: "format code must be 'B'",
        });
    };
    let mut fields = rest.split('^');
    let pan: String = fields
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| *c != ' ')
        .collect();
    if fields.next().is_none() {
        return Err(ScanError::BadTrack {
            track: 1,
            reason: "missing '^' field separator after the card number",
        });
    }
    if !(6..=19).contains(&pan.len()) || !pan.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ScanError::BadTrack {
            track: 1,
            reason: "the card number field must have 6 to 19 digits",
        });
    }
    number(&pan, ReadAs::MagStripe { track: 1 }, false, matcher)
}

/// An NFC reader line: `04:A2:3B:...` (`:`, `-` or space separated byte pairs), `UID:` /
/// `NFC:` followed by hex, or bare hex of 8, 14 or 20 characters with at least one letter
/// (an all-digit string is a number, not a UID). `Ok(None)`: not an NFC line.
pub(super) fn nfc_uid(data: &str) -> Result<Option<String>, ScanError> {
    let lower = data.get(..4).map(str::to_ascii_lowercase);
    let (tagged, body) = match lower.as_deref() {
        Some("uid:") | Some("nfc:") => (true, data[4..].trim_start_matches(' ')),
        _ => (false, data),
    };
    let separated = body.contains([':', '-', ' ']);
    let hex: String = if separated {
        let groups: Vec<&str> = body.split([':', '-', ' ']).collect();
        if !groups
            .iter()
            .all(|g| g.len() == 2 && g.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return if tagged {
                Err(ScanError::NfcUidLength { bytes: 0 })
            } else {
                Ok(None)
            };
        }
        groups.concat()
    } else {
        if body.is_empty() || !body.bytes().all(|b| b.is_ascii_hexdigit()) {
            return if tagged {
                Err(ScanError::NfcUidLength { bytes: 0 })
            } else {
                Ok(None)
            };
        }
        if !tagged
            && (!matches!(body.len(), 8 | 14 | 20) || body.bytes().all(|b| b.is_ascii_digit()))
        {
            return Ok(None);
        }
        if body.len() % 2 != 0 {
            return Err(ScanError::NfcUidLength {
                bytes: body.len() / 2,
            });
        }
        body.to_string()
    };
    let bytes = hex.len() / 2;
    if !matches!(bytes, 4 | 7 | 10) {
        return Err(ScanError::NfcUidLength { bytes });
    }
    Ok(Some(hex.to_ascii_uppercase()))
}

pub(super) fn nfc_card(uid: String, matcher: &CardMatcher) -> Scan {
    if matcher.accept_nfc_uid {
        Scan::Card {
            number: format!("nfc:{uid}"),
            read_as: ReadAs::Nfc,
        }
    } else {
        Scan::NotProgram {
            kind: NotProgramKind::NfcUid,
            number: None,
            read_as: ReadAs::Nfc,
        }
    }
}
