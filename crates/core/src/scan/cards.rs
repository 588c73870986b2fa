//! Which numbers are the program's cards: the matcher built from the card ranges, the app QR
//! pattern and the enrolment switch, with every problem of the definition named.

use super::*;

/// A problem in `[cards]`, named by its key below the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardsProblem {
    /// Key relative to `[cards]` (`ranges[0]`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Why a [`CardMatcher`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid [cards]: {}", .problems.iter().map(|p| format!("cards.{}: {}", p.key, p.message)).collect::<Vec<_>>().join("; "))]
pub struct CardsError {
    /// Every problem found.
    pub problems: Vec<CardsProblem>,
}

/// Which numbers are the program's cards, how app cards look, and the voucher prefix.
#[derive(Debug, Clone)]
pub struct CardMatcher {
    pub(super) prefixes: Vec<String>,
    pub(super) ranges: Vec<(String, String)>,
    pub(super) app_qr: Option<regex::Regex>,
    pub(super) accept_nfc_uid: bool,
    pub(super) voucher_prefix: String,
}

pub(super) fn is_gs1_coupon_range(number: &str) -> bool {
    number.starts_with("98") || number.starts_with("99")
}

impl CardMatcher {
    /// Builds the matcher from `[cards]`, reporting every problem. An empty `app_qr_pattern`
    /// disables app cards.
    pub fn from_config(config: &CardsConfig) -> Result<CardMatcher, CardsError> {
        let mut problems = Vec::new();
        let mut problem = |key: String, message: String| {
            problems.push(CardsProblem { key, message });
        };
        for (index, prefix) in config.prefixes.iter().enumerate() {
            if prefix.is_empty() || prefix.len() > 19 || !prefix.bytes().all(|b| b.is_ascii_digit())
            {
                problem(
                    format!("prefixes[{index}]"),
                    "must be 1 to 19 digits".into(),
                );
            } else if is_gs1_coupon_range(prefix) {
                problem(
                    format!("prefixes[{index}]"),
                    "98x and 99 are GS1 coupon and refund ranges, not loyalty cards".into(),
                );
            }
        }
        for (index, range) in config.ranges.iter().enumerate() {
            let digits =
                |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
            if !(digits(&range.from)
                && digits(&range.to)
                && range.from.len() == range.to.len()
                && range.from <= range.to)
            {
                problem(
                    format!("ranges[{index}]"),
                    "from and to must be digit strings of equal length (at most 19) with from <= to"
                        .into(),
                );
            } else if is_gs1_coupon_range(&range.to) || is_gs1_coupon_range(&range.from) {
                problem(
                    format!("ranges[{index}]"),
                    "98x and 99 are GS1 coupon and refund ranges, not loyalty cards".into(),
                );
            }
        }
        let app_qr = if config.app_qr_pattern.is_empty() {
            None
        } else {
            match regex::Regex::new(&config.app_qr_pattern) {
                Err(err) => {
                    problem(
                        "app_qr_pattern".into(),
                        format!("not a valid pattern: {err}"),
                    );
                    None
                }
                Ok(re) if !re.capture_names().flatten().any(|n| n == "card") => {
                    problem(
                        "app_qr_pattern".into(),
                        "the pattern needs a named group (?P<card>...)".into(),
                    );
                    None
                }
                Ok(re) => Some(re),
            }
        };
        if !problems.is_empty() {
            return Err(CardsError { problems });
        }
        Ok(CardMatcher {
            prefixes: config.prefixes.clone(),
            ranges: config
                .ranges
                .iter()
                .map(|r| (r.from.clone(), r.to.clone()))
                .collect(),
            app_qr,
            accept_nfc_uid: config.accept_nfc_uid,
            voucher_prefix: VOUCHER_QR_PREFIX.into(),
        })
    }

    /// The same matcher recognising vouchers by `prefix` (e.g. `voucher::QR_PREFIX`).
    pub fn with_voucher_prefix(mut self, prefix: impl Into<String>) -> CardMatcher {
        self.voucher_prefix = prefix.into();
        self
    }

    /// Whether `number` (digits) is one of the program's card numbers: it starts with one of
    /// the prefixes or lies in one of the ranges (same length). An EAN-13 starting `98`/`99`
    /// never is.
    pub fn is_program_number(&self, number: &str) -> bool {
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        if number.len() == 13 && is_gs1_coupon_range(number) {
            return false;
        }
        self.prefixes.iter().any(|p| number.starts_with(p.as_str()))
            || self.ranges.iter().any(|(from, to)| {
                number.len() == from.len() && from.as_str() <= number && number <= to.as_str()
            })
    }
}
