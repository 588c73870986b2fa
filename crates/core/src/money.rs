//! Exact money: amounts as integer minor units (cents), parsed from decimal text without ever
//! passing through binary floating point. Owns the currency table (how many decimals each
//! currency has) and the parser used by every input path (MQTT JSON, ESC/POS text, CRM).
//!
//! Invariant: no `f32`/`f64` is used for money anywhere in the crate.

use std::fmt;

/// An amount in minor units of some currency (for EUR: cents). May be negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(pub i64);

/// Why a decimal amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a decimal number at all.
    #[error(
        "'{0}' is not a decimal amount (expected digits with an optional '.', e.g. \"12.34\")"
    )]
    NotDecimal(String),
    /// More fractional digits than the currency has.
    #[error("'{text}' has more than {decimals} decimals, which the currency does not allow")]
    TooManyDecimals {
        /// The text as received.
        text: String,
        /// The currency's number of decimals.
        decimals: u32,
    },
    /// Outside the range the gateway accepts for one amount.
    #[error("'{0}' is outside the accepted range of amounts")]
    OutOfRange(String),
}

/// The largest absolute amount accepted in one field, in major units (a till never sells a
/// single receipt worth ten million; anything above is a scanning or integration error).
pub const MAX_ABS_MAJOR_UNITS: i64 = 10_000_000;

/// Number of decimals of an ISO 4217 currency code (2 when unknown, which is the common case).
pub fn currency_decimals(code: &str) -> u32 {
    match code {
        "JPY" | "KRW" | "ISK" | "CLP" | "VND" | "HUF" | "XAF" | "XOF" | "PYG" | "UGX" => 0,
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" | "LYD" | "IQD" => 3,
        _ => 2,
    }
}

impl Money {
    /// Zero.
    pub const ZERO: Money = Money(0);

    /// Parses a decimal text such as `"12.34"`, `"-0.5"` or `"7"` into minor units of a currency
    /// with `decimals` fractional digits. Trailing zeros beyond the currency's decimals are
    /// accepted (`"1.500"` is 150 cents); significant extra digits are refused.
    pub fn parse(text: &str, decimals: u32) -> Result<Money, MoneyError> {
        let not_decimal = || MoneyError::NotDecimal(text.to_string());
        let trimmed = text.trim();
        let (negative, unsigned) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
        };
        let (int_part, frac_part) = match unsigned.split_once('.') {
            Some((i, f)) => (i, f),
            None => (unsigned, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(not_decimal());
        }
        if !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
            || (unsigned.contains('.') && frac_part.is_empty() && int_part.is_empty())
        {
            return Err(not_decimal());
        }
        let significant_frac = frac_part.trim_end_matches('0');
        if significant_frac.len() > decimals as usize {
            return Err(MoneyError::TooManyDecimals {
                text: text.to_string(),
                decimals,
            });
        }
        let int_digits = int_part.trim_start_matches('0');
        if int_digits.len() > 12 {
            return Err(MoneyError::OutOfRange(text.to_string()));
        }
        let int_value: i64 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| not_decimal())?
        };
        if int_value > MAX_ABS_MAJOR_UNITS {
            return Err(MoneyError::OutOfRange(text.to_string()));
        }
        let mut frac_value: i64 = 0;
        for i in 0..decimals as usize {
            let digit = significant_frac
                .as_bytes()
                .get(i)
                .map_or(0, |b| (b - b'0') as i64);
            frac_value = frac_value * 10 + digit;
        }
        let minor = int_value * 10_i64.pow(decimals) + frac_value;
        Ok(Money(if negative { -minor } else { minor }))
    }

    /// Formats as a decimal text with exactly `decimals` fractional digits (`"12.34"`).
    pub fn format(self, decimals: u32) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        if decimals == 0 {
            return format!("{sign}{abs}");
        }
        let scale = 10_u64.pow(decimals);
        format!(
            "{sign}{}.{:0width$}",
            abs / scale,
            abs % scale,
            width = decimals as usize
        )
    }

    /// Minor units.
    pub fn minor(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format(2))
    }
}

impl std::ops::Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0 + rhs.0)
    }
}

impl std::ops::Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0 - rhs.0)
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        Money(iter.map(|m| m.0).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(Money::parse("12.34", 2), Ok(Money(1234)));
        assert_eq!(Money::parse("0.1", 2), Ok(Money(10)));
        assert_eq!(Money::parse("7", 2), Ok(Money(700)));
        assert_eq!(Money::parse("-1.50", 2), Ok(Money(-150)));
        assert_eq!(Money::parse("1.500", 2), Ok(Money(150)));
        assert_eq!(Money::parse(".5", 2), Ok(Money(50)));
        assert_eq!(Money::parse("100", 0), Ok(Money(100)));
    }

    #[test]
    fn refuses_extra_decimals_and_garbage() {
        assert!(matches!(
            Money::parse("1.234", 2),
            Err(MoneyError::TooManyDecimals { .. })
        ));
        for bad in [
            "", "-", ".", "1,5", "1.2.3", "abc", "1e3", " 1 2", "0x10", "NaN",
        ] {
            assert!(Money::parse(bad, 2).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            Money::parse("99999999999999999999", 2),
            Err(MoneyError::OutOfRange(_))
        ));
        assert!(matches!(
            Money::parse("10000001", 2),
            Err(MoneyError::OutOfRange(_))
        ));
    }

    #[test]
    fn formats_round_trip() {
        for (minor, text) in [(1234, "12.34"), (-5, "-0.05"), (0, "0.00"), (100, "1.00")] {
            assert_eq!(Money(minor).format(2), text);
            assert_eq!(Money::parse(text, 2), Ok(Money(minor)));
        }
        assert_eq!(Money(42).format(0), "42");
        assert_eq!(Money(1234).format(3), "1.234");
    }
}
