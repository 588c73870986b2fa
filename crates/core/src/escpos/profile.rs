//! Receipt profiles: how the printed text of one till model becomes a [`Receipt`]. Pure.
//!
//! A profile is a set of regular expressions with named groups (see
//! [`ReceiptProfileConfig`]). Each line of a [`Document`] is tried, in this order: `ignore`,
//! `total`, `receipt_id`, `date`, `card`, `return_marker`, `qty_line`, `item_line`. Item and
//! quantity lines count only before the total line; the first total wins. Amounts are exact
//! (`Money`), with the profile's decimal separator, optional thousands separators and a
//! leading or trailing minus. A return's printed negative amounts become the positive
//! returned amounts the core expects.
//!
//! Invariant: [`ReceiptProfile::parse`] returns only receipts that pass
//! [`crate::receipt::validate`] for the store's currency (any category accepted); everything
//! else is a [`ParseError`] that names the profile field or line to look at.

use super::assembler::Document;
use super::profile_spec::ReceiptProfileConfig;
use crate::money::{currency_decimals, Money, MAX_ABS_MAJOR_UNITS};
use crate::receipt::{
    return_in_core_signs, validate, Receipt, ReceiptError, ReceiptKind, ReceiptLimits, ReceiptLine,
};
use regex::Regex;
use std::collections::BTreeSet;

/// A profile that cannot be built (normally caught by configuration validation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("receipt_profiles.{profile}.{field}: {message}")]
pub struct ProfileError {
    /// Profile name.
    pub profile: String,
    /// The field at fault.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Why printed text could not be read as a receipt. Messages name the profile field or the
/// 1-based printed line so that an integrator can fix the profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No line matched `total`.
    #[error("no total found: no printed line matched receipt_profiles.{profile}.total")]
    NoTotal {
        /// Profile name.
        profile: String,
    },
    /// No line matched `receipt_id`.
    #[error(
        "no receipt number found: no printed line matched receipt_profiles.{profile}.receipt_id"
    )]
    NoReceiptId {
        /// Profile name.
        profile: String,
    },
    /// No item line before the total.
    #[error("no item lines found before the total: check receipt_profiles.{profile}.item_line")]
    NoItems {
        /// Profile name.
        profile: String,
    },
    /// An amount or quantity group that is not a number.
    #[error("printed line {line}: {field} '{text}' is not a valid number ({reason})")]
    BadNumber {
        /// 1-based printed line.
        line: usize,
        /// The group name.
        field: &'static str,
        /// The captured text.
        text: String,
        /// Why.
        reason: String,
    },
    /// A date or time that does not fit the profile's formats.
    #[error("printed line {line}: date '{text}' does not match the profile's date_format/time_format ({reason})")]
    BadDate {
        /// 1-based printed line.
        line: usize,
        /// The captured text.
        text: String,
        /// Why.
        reason: String,
    },
    /// A return marker without the original receipt number.
    #[error(
        "printed line {line}: return marker without the original receipt number (group 'original')"
    )]
    ReturnWithoutOriginal {
        /// 1-based printed line.
        line: usize,
    },
    /// The receipt was longer than the capture limits; it is not trusted.
    #[error("the printed receipt was cut off at the capture limits; it is not read")]
    Truncated,
    /// The receipt was read but does not add up (lines vs total, range, quantities).
    #[error("the printed receipt does not add up: {0}")]
    Invalid(#[from] ReceiptError),
}

/// What the parser needs to know beside the text.
#[derive(Debug, Clone)]
pub struct ParseContext {
    /// The lane the printer belongs to.
    pub lane: String,
    /// The store's currency (ISO 4217).
    pub currency: String,
    /// The store's time zone, for the printed civil date and time.
    pub time_zone: jiff::tz::TimeZone,
    /// When the receipt was captured (used when nothing matches `date`).
    pub captured_at: jiff::Timestamp,
}

/// A compiled receipt profile.
#[derive(Debug, Clone)]
pub struct ReceiptProfile {
    name: String,
    item_line: Regex,
    qty_line: Option<Regex>,
    total: Regex,
    receipt_id: Regex,
    receipt_id_format: String,
    date: Option<Regex>,
    date_format: String,
    time_format: String,
    card: Option<Regex>,
    return_marker: Option<Regex>,
    ignore: Vec<Regex>,
    decimal_comma: bool,
    pan_exempt_prefixes: Vec<String>,
}

impl ReceiptProfile {
    /// Compiles the profile `[receipt_profiles.NAME]`.
    pub fn from_config(
        name: &str,
        config: &ReceiptProfileConfig,
    ) -> Result<ReceiptProfile, ProfileError> {
        let compile = |field: &str, pattern: &str| {
            Regex::new(pattern).map_err(|err| ProfileError {
                profile: name.to_string(),
                field: field.to_string(),
                message: format!("not a valid pattern: {err}"),
            })
        };
        let optional = |field: &str, pattern: &Option<String>| {
            pattern
                .as_deref()
                .map(|pattern| compile(field, pattern))
                .transpose()
        };
        let mut ignore = Vec::new();
        for (index, pattern) in config.ignore.iter().enumerate() {
            ignore.push(compile(&format!("ignore[{index}]"), pattern)?);
        }
        Ok(ReceiptProfile {
            name: name.to_string(),
            item_line: compile("item_line", &config.item_line)?,
            qty_line: optional("qty_line", &config.qty_line)?,
            total: compile("total", &config.total)?,
            receipt_id: compile("receipt_id", &config.receipt_id)?,
            receipt_id_format: config.receipt_id_format.clone(),
            date: optional("date", &config.date)?,
            date_format: config
                .date_format
                .clone()
                .unwrap_or_else(|| "%d.%m.%Y".into()),
            time_format: config.time_format.clone().unwrap_or_else(|| "%H:%M".into()),
            card: optional("card", &config.card)?,
            return_marker: optional("return_marker", &config.return_marker)?,
            ignore,
            decimal_comma: config.decimal_separator == ",",
            pan_exempt_prefixes: config.pan_exempt_prefixes.clone(),
        })
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Digit prefixes never masked as payment cards (for the [`super::Assembler`]).
    pub fn pan_exempt_prefixes(&self) -> &[String] {
        &self.pan_exempt_prefixes
    }

    /// True when the receipts print amounts with a decimal comma.
    pub fn decimal_comma(&self) -> bool {
        self.decimal_comma
    }

    /// How the receipts print dates (strftime).
    pub fn date_format(&self) -> &str {
        &self.date_format
    }

    /// Reads a printed receipt.
    pub fn parse(
        &self,
        document: &Document,
        context: &ParseContext,
    ) -> Result<Receipt, ParseError> {
        if document.truncated {
            return Err(ParseError::Truncated);
        }
        let decimals = currency_decimals(&context.currency);
        let mut total: Option<Money> = None;
        let mut number: Option<String> = None;
        let mut timestamp: Option<jiff::Timestamp> = None;
        let mut card: Option<String> = None;
        let mut original: Option<String> = None;
        let mut lines: Vec<ReceiptLine> = Vec::new();
        for (index, text) in document.lines.iter().enumerate() {
            let line_no = index + 1;
            if self.ignore.iter().any(|re| re.is_match(text)) {
                continue;
            }
            if total.is_none() {
                if let Some(caps) = self.total.captures(text) {
                    let raw = caps.name("total").map_or("", |m| m.as_str());
                    total = Some(self.amount(raw, decimals, line_no, "total")?);
                    continue;
                }
            }
            if number.is_none() {
                if let Some(id) = self
                    .receipt_id
                    .captures(text)
                    .and_then(|caps| caps.name("receipt_id"))
                {
                    number = Some(id.as_str().trim().to_string());
                    continue;
                }
            }
            if let (None, Some(re)) = (timestamp, &self.date) {
                if let Some(caps) = re.captures(text) {
                    let date = caps.name("date").map_or("", |m| m.as_str().trim());
                    let time = caps.name("time").map(|m| m.as_str().trim());
                    timestamp = Some(self.timestamp(date, time, line_no, context)?);
                    continue;
                }
            }
            if let (None, Some(re)) = (&card, &self.card) {
                if let Some(found) = re.captures(text).and_then(|caps| caps.name("card")) {
                    let digits: String = found
                        .as_str()
                        .chars()
                        .filter(|c| !c.is_whitespace() && *c != '-')
                        .collect();
                    // A masked number (`*`) is not a card the gateway can use.
                    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_alphanumeric()) {
                        card = Some(digits);
                        continue;
                    }
                }
            }
            if let (None, Some(re)) = (&original, &self.return_marker) {
                if let Some(caps) = re.captures(text) {
                    match caps.name("original") {
                        Some(found) if !found.as_str().trim().is_empty() => {
                            original = Some(found.as_str().trim().to_string());
                        }
                        _ => return Err(ParseError::ReturnWithoutOriginal { line: line_no }),
                    }
                    continue;
                }
            }
            if total.is_some() {
                continue;
            }
            if let (Some(re), Some(last)) = (&self.qty_line, lines.last_mut()) {
                if let Some(caps) = re.captures(text) {
                    if let Some(qty) = caps.name("qty") {
                        last.qty_milli = self.quantity(qty.as_str(), line_no)?;
                    }
                    if let Some(price) = caps.name("unit_price") {
                        last.unit_price =
                            Some(self.amount(price.as_str(), decimals, line_no, "unit_price")?);
                    }
                    continue;
                }
            }
            if let Some(caps) = self.item_line.captures(text) {
                let group = |name: &str| caps.name(name).map(|m| m.as_str().trim());
                let amount =
                    self.amount(group("amount").unwrap_or(""), decimals, line_no, "amount")?;
                let qty_milli = match group("qty") {
                    Some(qty) if !qty.is_empty() => self.quantity(qty, line_no)?,
                    _ => 1000,
                };
                let unit_price = match group("unit_price") {
                    Some(price) if !price.is_empty() => {
                        Some(self.amount(price, decimals, line_no, "unit_price")?)
                    }
                    _ => None,
                };
                lines.push(ReceiptLine {
                    sku: group("sku").unwrap_or("").to_string(),
                    name: group("name").unwrap_or("").to_string(),
                    qty_milli,
                    unit_price,
                    amount,
                    category: group("category")
                        .filter(|c| !c.is_empty())
                        .map(str::to_string),
                });
            }
        }
        let profile = self.name.clone();
        let mut total = total.ok_or(ParseError::NoTotal {
            profile: profile.clone(),
        })?;
        let number = number.ok_or(ParseError::NoReceiptId {
            profile: profile.clone(),
        })?;
        if lines.is_empty() {
            return Err(ParseError::NoItems { profile });
        }
        let kind = match original {
            None => ReceiptKind::Sale,
            Some(original) => {
                // Printed returns show negative amounts (or positive ones); the core wants
                // what was returned.
                return_in_core_signs(&mut total, &mut lines);
                ReceiptKind::Return {
                    original_receipt_id: self.format_id(&original, &context.lane),
                }
            }
        };
        let receipt = Receipt {
            id: self.format_id(&number, &context.lane),
            lane: context.lane.clone(),
            timestamp: timestamp.unwrap_or(context.captured_at),
            kind,
            currency: context.currency.clone(),
            total,
            card,
            rewards: Vec::new(),
            redemptions: Vec::new(),
            lines,
        };
        let limits = ReceiptLimits {
            currency: context.currency.clone(),
            max_total: Money(MAX_ABS_MAJOR_UNITS * 10_i64.pow(decimals)),
            known_categories: BTreeSet::new(),
        };
        validate(&receipt, &limits)?;
        Ok(receipt)
    }

    fn format_id(&self, number: &str, lane: &str) -> String {
        self.receipt_id_format
            .replace("{receipt_id}", number)
            .replace("{lane}", lane)
    }

    /// Normalises a printed number: sign (leading or trailing `-`), thousands separators,
    /// decimal separator. Returns the text `Money::parse` understands.
    fn normalise(&self, raw: &str, line: usize, field: &'static str) -> Result<String, ParseError> {
        let bad = |reason: &str| ParseError::BadNumber {
            line,
            field,
            text: raw.to_string(),
            reason: reason.to_string(),
        };
        let mut text: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        let mut negative = false;
        if let Some(rest) = text.strip_suffix('-') {
            negative = true;
            text = rest.to_string();
        }
        if let Some(rest) = text.strip_prefix('-') {
            if negative {
                return Err(bad("two minus signs"));
            }
            negative = true;
            text = rest.to_string();
        }
        let (decimal, thousands) = if self.decimal_comma {
            (',', '.')
        } else {
            ('.', ',')
        };
        let (int_part, frac_part) = match text.split_once(decimal) {
            Some((i, f)) => (i.to_string(), Some(f.to_string())),
            None => (text.clone(), None),
        };
        let int_part = if int_part.contains(thousands) || int_part.contains('\'') {
            let groups: Vec<&str> = int_part.split([thousands, '\'']).collect();
            let well_formed = !groups[0].is_empty()
                && groups[0].len() <= 3
                && groups[1..].iter().all(|g| g.len() == 3);
            if !well_formed {
                return Err(bad(if self.decimal_comma {
                    "the profile's decimal separator is ','"
                } else {
                    "the profile's decimal separator is '.'"
                }));
            }
            groups.concat()
        } else {
            int_part
        };
        if let Some(frac) = &frac_part {
            if frac.contains(decimal) || frac.contains(thousands) {
                return Err(bad("more than one decimal separator"));
            }
        }
        let sign = if negative { "-" } else { "" };
        Ok(match frac_part {
            Some(frac) => format!("{sign}{int_part}.{frac}"),
            None => format!("{sign}{int_part}"),
        })
    }

    fn amount(
        &self,
        raw: &str,
        decimals: u32,
        line: usize,
        field: &'static str,
    ) -> Result<Money, ParseError> {
        let text = self.normalise(raw, line, field)?;
        Money::parse(&text, decimals).map_err(|err| ParseError::BadNumber {
            line,
            field,
            text: raw.to_string(),
            reason: err.to_string(),
        })
    }

    fn quantity(&self, raw: &str, line: usize) -> Result<i64, ParseError> {
        let trimmed = raw.trim().trim_end_matches(['x', 'X', '*', '×']).trim_end();
        let text = self.normalise(trimmed, line, "qty")?;
        let milli = Money::parse(&text, 3).map_err(|err| ParseError::BadNumber {
            line,
            field: "qty",
            text: raw.to_string(),
            reason: err.to_string(),
        })?;
        Ok(milli.0)
    }

    fn timestamp(
        &self,
        date: &str,
        time: Option<&str>,
        line: usize,
        context: &ParseContext,
    ) -> Result<jiff::Timestamp, ParseError> {
        let bad = |reason: String| ParseError::BadDate {
            line,
            text: match time {
                Some(time) => format!("{date} {time}"),
                None => date.to_string(),
            },
            reason,
        };
        let date = jiff::civil::Date::strptime(&self.date_format, date)
            .map_err(|err| bad(err.to_string()))?;
        let time = match time {
            Some(time) if !time.is_empty() => {
                let format = &self.time_format;
                jiff::civil::Time::strptime(format, time)
                    .or_else(|first| {
                        // Tills print seconds on some receipts only.
                        jiff::civil::Time::strptime("%H:%M:%S", time).map_err(|_| first)
                    })
                    .map_err(|err| bad(err.to_string()))?
            }
            _ => jiff::civil::Time::midnight(),
        };
        date.to_datetime(time)
            .to_zoned(context.time_zone.clone())
            .map(|zoned| zoned.timestamp())
            .map_err(|err| bad(err.to_string()))
    }
}
