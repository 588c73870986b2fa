//! The customer answer as the till's screen: besides name, tier and balance, her redeemable
//! points, open vouchers, active offers and one or two hints for the cashier
//! (`loyalty_protocol::till::Screen`), read in one trip to the storage threads and bounded
//! (`Response::fit_screen`, at most 1 KiB).
//!
//! Consent: offers are listed only with `profiling` consent (`Store::active_offers`); the
//! greeting `name` is given unless the customer's consent is known and `marketing` is false
//! (greeting by name is the program addressing her personally; a profile without consent
//! flags, as before consent existed, keeps its name). Hints: `birthday_this_week` (her
//! birthday `MM-DD` falls in the store's current ISO week), `tier:<name>` (a tier above the
//! basic one), `reward_in:<points>` (at most a fifth of the smallest reward rule's points
//! missing).

use super::*;
use jiff::civil::Date;
use loyalty_protocol::till::{Screen, ScreenOffer, ScreenVoucher};
use loyalty_store::offers::ScreenProfile;

/// What a customer answer shows, read from the store.
pub(super) struct ScreenRead {
    /// The screen's items.
    pub(super) screen: Screen,
    /// Whether the greeting name may be shown.
    pub(super) show_name: bool,
}

/// Reads the screen of `customer_id` (blocking: call through `blocking`).
pub(super) fn read_screen(
    store: &Store,
    vouchers: &Vouchers,
    customer_id: &str,
    tier: Option<&str>,
    time_zone: &jiff::tz::TimeZone,
    now: Timestamp,
) -> Result<ScreenRead, StoreError> {
    let profile = store.screen_profile(customer_id)?.unwrap_or_default();
    // Vested points less those held for a payment at a lane (pay with points).
    let redeemable = store.available_points(customer_id, now)?;
    let (open, all) = vouchers.open_for_customer(customer_id, now, Screen::MAX_VOUCHERS)?;
    let settings = vouchers.settings();
    let decimals = loyalty_core::money::currency_decimals(&settings.currency);
    let voucher_lines: Vec<ScreenVoucher> = open
        .iter()
        .map(|v| ScreenVoucher {
            voucher_id: v.voucher.id.to_string(),
            value: match &v.voucher.benefit {
                Benefit::AmountOff(m) => m.format(decimals),
                Benefit::PercentOff(p) => format!("{p}%"),
                Benefit::FreeItem { sku } => format!("free:{sku}"),
            },
            valid_until: v.voucher.valid_until.to_string(),
        })
        .collect();
    let active = store.active_offers(customer_id, now)?;
    let offers: Vec<ScreenOffer> = active
        .iter()
        .take(Screen::MAX_OFFERS)
        .map(|o| ScreenOffer {
            offer_id: o.id.clone(),
            text: Screen::short_text(&o.text),
            amount_off: match o.benefit {
                loyalty_core::offers::OfferBenefit::AmountOff(m) => Some(m.format(decimals)),
                _ => None,
            },
        })
        .collect();
    let every = settings
        .rules
        .rules
        .iter()
        .map(|r| r.every_points)
        .filter(|p| *p > 0)
        .min();
    let hints = hints(
        &profile,
        tier,
        redeemable,
        every,
        now.to_zoned(time_zone.clone()).date(),
    );
    Ok(ScreenRead {
        screen: Screen {
            redeemable: Some(redeemable),
            more_vouchers: u32::try_from(all.saturating_sub(voucher_lines.len())).unwrap_or(0),
            vouchers: voucher_lines,
            more_offers: u32::try_from(active.len().saturating_sub(offers.len())).unwrap_or(0),
            offers,
            hints,
        },
        show_name: profile.consent.is_none_or(|c| c.marketing),
    })
}

/// The cashier's hints, at most [`Screen::MAX_HINTS`], most useful first.
fn hints(
    profile: &ScreenProfile,
    tier: Option<&str>,
    available: i64,
    reward_every: Option<i64>,
    today: Date,
) -> Vec<String> {
    let mut out = Vec::new();
    if profile
        .birthday
        .as_deref()
        .is_some_and(|b| birthday_this_week(b, today))
    {
        out.push("birthday_this_week".to_string());
    }
    if let Some(every) = reward_every {
        let missing = every - available.rem_euclid(every);
        if available >= 0 && missing > 0 && missing * 5 <= every {
            out.push(format!("reward_in:{missing}"));
        }
    }
    if let Some(tier) = tier.filter(|t| !t.is_empty() && *t != "basic") {
        out.push(format!("tier:{}", Screen::short_text(tier)));
    }
    out.truncate(Screen::MAX_HINTS);
    out
}

/// Whether `MM-DD` falls in the ISO week (Monday to Sunday) of `today` (29 February counts as
/// 28 February in other years).
fn birthday_this_week(birthday: &str, today: Date) -> bool {
    let Some((month, day)) = birthday.split_once('-') else {
        return false;
    };
    let (Ok(month), Ok(day)) = (month.parse::<i8>(), day.parse::<i8>()) else {
        return false;
    };
    let monday = today
        .checked_sub(jiff::Span::new().days(i64::from(today.weekday().to_monday_zero_offset())))
        .unwrap_or(today);
    (0..7).any(|offset| {
        let Ok(d) = monday.checked_add(jiff::Span::new().days(offset)) else {
            return false;
        };
        let leap_fallback = month == 2 && day == 29 && !d.in_leap_year();
        d.month() == month && (d.day() == day || (leap_fallback && d.day() == 28))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_protocol::till::Response;

    fn date(text: &str) -> Date {
        text.parse().expect("date")
    }

    #[test]
    fn birthdays_this_week() {
        // 2027-03-10 is a Wednesday: the week is 8 to 14 March.
        let today = date("2027-03-10");
        assert!(birthday_this_week("03-08", today));
        assert!(birthday_this_week("03-14", today));
        assert!(!birthday_this_week("03-15", today));
        assert!(!birthday_this_week("03-07", today));
        assert!(!birthday_this_week("nonsense", today));
        // 29 February in a common year: celebrated on the 28th.
        assert!(birthday_this_week("02-29", date("2027-02-28")));
    }

    #[test]
    fn hints_are_few_and_useful() {
        let profile = ScreenProfile {
            consent: None,
            birthday: Some("03-10".into()),
        };
        let today = date("2027-03-10");
        assert_eq!(
            hints(&profile, Some("gold"), 450, Some(500), today),
            vec!["birthday_this_week".to_string(), "reward_in:50".into()]
        );
        assert_eq!(
            hints(
                &ScreenProfile::default(),
                Some("gold"),
                10,
                Some(500),
                today
            ),
            vec!["tier:gold".to_string()]
        );
        assert!(hints(&ScreenProfile::default(), Some("basic"), 10, None, today).is_empty());
    }

    #[test]
    fn a_customer_with_a_hundred_offers_and_vouchers_fits_the_bound() {
        let long = "x".repeat(64);
        let screen = Screen {
            redeemable: Some(1_000_000),
            vouchers: (0..100)
                .map(|i| ScreenVoucher {
                    voucher_id: format!("{i:020X}"),
                    value: "1000.00".into(),
                    valid_until: "2027-03-10T10:00:00Z".into(),
                })
                .collect(),
            more_vouchers: 0,
            offers: (0..100)
                .map(|i| ScreenOffer {
                    offer_id: format!("{long}{i}"),
                    text: Screen::short_text(&"ü".repeat(100)),
                    amount_off: Some("5.00".into()),
                })
                .collect(),
            more_offers: 0,
            hints: vec!["birthday_this_week".into(), "reward_in:5".into()],
        };
        let mut answer = Response::Customer {
            lane: long.clone(),
            customer_id: long.clone(),
            card: long.clone(),
            name: Some(Screen::short_text(&long)),
            tier: long.clone(),
            balance: i64::MAX,
            replaced_card: Some(long.clone()),
            screen,
        };
        answer.fit_screen();
        let json = answer.to_json();
        assert!(json.len() <= Screen::MAX_ANSWER_BYTES, "{}", json.len());
        let value: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(
            value["offers"].as_array().map_or(0, Vec::len) as u64
                + value["more_offers"].as_u64().unwrap_or(0),
            100
        );
        assert!(value["more_vouchers"].as_u64().unwrap_or(0) > 0);
    }
}
