//! A store's figures (issue 17): what the store counts per hour as receipts, points and vouchers
//! happen ([`Metric`], [`HourCounts`], kept by `loyalty-store` in the transaction of what they
//! count), and their aggregation into the store's local days and a period ([`aggregate`]):
//! receipts, participation, enrolments, active and returning members, average basket of members
//! and non-members, points issued and redeemed, vouchers issued and redeemed.
//!
//! Counted per UTC hour so that any time zone's days can be made from them at read time.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

/// What is counted, per hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Metric {
    /// Sales receipts.
    Receipts = 1,
    /// Sales receipts with a member (card scanned, named or attached later).
    MemberReceipts = 2,
    /// Total of members' sales, minor units.
    MemberSales = 3,
    /// Total of other sales, minor units.
    OtherSales = 4,
    /// Customers enrolled.
    Enrolments = 5,
    /// Points earned (net of clawbacks).
    PointsIssued = 6,
    /// Points spent (redemptions, conversions into vouchers).
    PointsRedeemed = 7,
    /// Vouchers issued.
    VouchersIssued = 8,
    /// Vouchers redeemed.
    VouchersRedeemed = 9,
}

impl Metric {
    /// Every metric, in key order.
    pub const ALL: [Metric; 9] = [
        Metric::Receipts,
        Metric::MemberReceipts,
        Metric::MemberSales,
        Metric::OtherSales,
        Metric::Enrolments,
        Metric::PointsIssued,
        Metric::PointsRedeemed,
        Metric::VouchersIssued,
        Metric::VouchersRedeemed,
    ];

    /// The metric of a stored key byte.
    pub fn from_byte(byte: u8) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| *m as u8 == byte)
    }

    fn index(self) -> usize {
        self as usize - 1
    }
}

/// The hour (`unix seconds / 3600`) an instant falls in.
pub fn hour_of(at: Timestamp) -> i64 {
    at.as_second().div_euclid(3600)
}

/// One hour's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts(pub [i64; 9]);

impl Counts {
    /// The value of `metric`.
    pub fn get(&self, metric: Metric) -> i64 {
        self.0[metric.index()]
    }

    /// Adds `value` to `metric`.
    pub fn add(&mut self, metric: Metric, value: i64) {
        self.0[metric.index()] += value;
    }

    fn merge(&mut self, other: &Counts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0.iter()) {
            *mine += theirs;
        }
    }
}

/// What the store read back for a period: counts by hour, members' visits by hour, and the
/// points outstanding now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourCounts {
    /// Counts by hour.
    pub hours: BTreeMap<i64, Counts>,
    /// `(hour, customer id)` of each member's visits.
    pub visits: Vec<(i64, String)>,
    /// Points earned and not spent, over this store's whole ledger.
    pub outstanding: i64,
}

/// A period's figures in the store's days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    /// Each day of the period, oldest first, with its counts.
    pub days: Vec<(Date, Counts)>,
    /// The period's sums.
    pub total: Counts,
    /// Members with at least one receipt in the period.
    pub active_members: u64,
    /// Of those, members who came on two or more days.
    pub returning_members: u64,
    /// Points outstanding now.
    pub outstanding: i64,
}

impl Figures {
    /// The average basket of members and of the others (minor units; `None` without receipts).
    pub fn average_baskets(&self) -> (Option<i64>, Option<i64>) {
        let members = self.total.get(Metric::MemberReceipts);
        let others = self.total.get(Metric::Receipts) - members;
        let average = |sum: i64, n: i64| (n > 0).then(|| (sum + n / 2) / n);
        (
            average(self.total.get(Metric::MemberSales), members),
            average(self.total.get(Metric::OtherSales), others),
        )
    }
}

/// The first instant of the period of `days` days ending with `today` in `tz`.
pub fn period_start(today: Date, days: u32, tz: &TimeZone) -> Timestamp {
    let first = today
        .checked_sub(jiff::Span::new().days(i64::from(days.max(1)) - 1))
        .unwrap_or(today);
    first
        .to_zoned(tz.clone())
        .map(|zoned| zoned.timestamp())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Aggregates `counts` into the `days` days ending with `today` in `tz`.
pub fn aggregate(counts: &HourCounts, today: Date, days: u32, tz: &TimeZone) -> Figures {
    let days = days.max(1);
    let mut by_day: Vec<(Date, Counts)> = (0..days)
        .rev()
        .filter_map(|back| {
            today
                .checked_sub(jiff::Span::new().days(i64::from(back)))
                .ok()
                .map(|day| (day, Counts::default()))
        })
        .collect();
    let first = by_day.first().map(|(day, _)| *day).unwrap_or(today);
    let day_of = |hour: i64| -> Option<Date> {
        Timestamp::from_second(hour * 3600)
            .ok()
            .map(|at| at.to_zoned(tz.clone()).date())
    };
    let mut total = Counts::default();
    for (hour, hour_counts) in &counts.hours {
        let Some(day) = day_of(*hour) else { continue };
        if day < first || day > today {
            continue;
        }
        if let Some((_, counts)) = by_day.iter_mut().find(|(d, _)| *d == day) {
            counts.merge(hour_counts);
            total.merge(hour_counts);
        }
    }
    let mut visit_days: BTreeMap<&str, BTreeSet<Date>> = BTreeMap::new();
    for (hour, customer) in &counts.visits {
        let Some(day) = day_of(*hour) else { continue };
        if day < first || day > today {
            continue;
        }
        visit_days.entry(customer).or_default().insert(day);
    }
    Figures {
        days: by_day,
        total,
        active_members: visit_days.len() as u64,
        returning_members: visit_days.values().filter(|d| d.len() >= 2).count() as u64,
        outstanding: counts.outstanding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_become_the_store_days_and_members_who_come_back_are_counted() {
        let tz = TimeZone::get("Europe/Berlin").expect("tz");
        let today = jiff::civil::date(2026, 12, 2);
        let at = |h: i8, d: i8| {
            jiff::civil::date(2026, 12, d)
                .at(h, 30, 0, 0)
                .to_zoned(tz.clone())
                .expect("zoned")
                .timestamp()
        };
        let mut counts = HourCounts::default();
        let mut add = |when: Timestamp, metric: Metric, value: i64| {
            counts
                .hours
                .entry(hour_of(when))
                .or_default()
                .add(metric, value);
        };
        // 00:30 Berlin on the 2nd is 23:30 UTC on the 1st: it belongs to the 2nd.
        add(at(0, 2), Metric::Receipts, 1);
        add(at(0, 2), Metric::MemberReceipts, 1);
        add(at(0, 2), Metric::MemberSales, 1000);
        add(at(10, 1), Metric::Receipts, 2);
        add(at(10, 1), Metric::OtherSales, 700);
        add(at(10, 1), Metric::Receipts, 1);
        add(at(10, 1), Metric::MemberReceipts, 1);
        add(at(10, 1), Metric::MemberSales, 2000);
        counts.visits = vec![
            (hour_of(at(0, 2)), "a".into()),
            (hour_of(at(10, 1)), "a".into()),
            (hour_of(at(10, 1)), "b".into()),
        ];
        let today_only = aggregate(&counts, today, 1, &tz);
        assert_eq!(today_only.total.get(Metric::Receipts), 1);
        assert_eq!(today_only.active_members, 1);
        assert_eq!(today_only.returning_members, 0);
        let week = aggregate(&counts, today, 7, &tz);
        assert_eq!(week.days.len(), 7);
        assert_eq!(week.days[6].1.get(Metric::Receipts), 1);
        assert_eq!(week.days[5].1.get(Metric::Receipts), 3);
        assert_eq!(week.total.get(Metric::Receipts), 4);
        assert_eq!(week.active_members, 2);
        assert_eq!(week.returning_members, 1);
        assert_eq!(week.average_baskets(), (Some(1500), Some(350)));
        assert!(period_start(today, 7, &tz) < at(10, 1));
    }
}
