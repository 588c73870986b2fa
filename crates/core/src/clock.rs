//! Trusted time on a box without a real-time clock (pure: no I/O, no tokio).
//!
//! A Raspberry Pi has no RTC. After a power cut it boots with whatever time `fake-hwclock` saved
//! (or 1970) until NTP answers, and that time can be days behind. This module decides whether
//! the wall clock can be believed and what time the gateway should use meanwhile:
//!
//! - The **floor** is a proven lower bound on the real time: the latest of the build date, the
//!   persisted high-water mark (the caller stores [`ClockGuard::high_water`] durably and hands it
//!   back at start-up) and the last trusted reading, each advanced by the monotonic time elapsed
//!   since (real time passes at least as fast as `CLOCK_MONOTONIC`).
//! - A reading is **trusted** when it is not earlier than the floor (minus a small tolerance for
//!   NTP slewing and oscillator drift) and NTP does not report the clock as unsynchronised.
//! - [`TrustedTime::now`] is the time to stamp events with and to decide validity windows at:
//!   the wall time when trusted (never below the floor), otherwise the floor itself. Events
//!   stamped while untrusted carry `trusted == false` so the CRM and the audit can tell.
//! - Because an untrusted `now` is a proven lower bound on the real time, an untrusted clock can
//!   neither expire a voucher early nor activate a voucher or promotion early: both need proof
//!   that the real time has passed the boundary ([`TrustedTime::window`]). See `docs/arch/pi.md`.
//!
//! Invariants: the floor never decreases; `now >= floor`; `now` never decreases across
//! observations with non-decreasing monotonic readings; an untrusted `now` equals the floor.

use jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// How far below the floor a reading may be and still be trusted (NTP slewing, oscillator drift
/// of the monotonic clock over long untrusted stretches).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(10);

/// Used when the build did not set `LOYALTY_BUILD_EPOCH` (seconds since 1970; `cross/build.sh`
/// sets it to the commit time): 2026-11-01T00:00:00Z.
const FALLBACK_BUILD_EPOCH: i64 = 1_793_491_200;

/// The build date: no real time can be earlier than the moment this binary was built.
pub fn build_floor() -> Timestamp {
    let seconds = option_env!("LOYALTY_BUILD_EPOCH")
        .and_then(|text| text.trim().parse::<i64>().ok())
        .unwrap_or(FALLBACK_BUILD_EPOCH);
    Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// What the operating system says about NTP synchronisation (the kernel's `STA_UNSYNC` flag,
/// read by `systemd::ntp_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NtpState {
    /// An NTP client has disciplined the clock.
    Synchronized,
    /// The kernel reports the clock as not synchronised (typical right after boot).
    Unsynchronized,
    /// No information (or the store runs without NTP by design): only the floor decides.
    Unknown,
}

/// Why a reading was not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distrust {
    /// Earlier than the date this binary was built.
    BeforeBuildDate,
    /// Earlier than a time already recorded (persisted high-water mark or an earlier reading).
    BeforeHighWater,
    /// Not earlier than the floor, but NTP reports the clock as unsynchronised.
    NotSynchronized,
}

impl Distrust {
    /// Short stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Distrust::BeforeBuildDate => "before_build_date",
            Distrust::BeforeHighWater => "before_high_water",
            Distrust::NotSynchronized => "not_synchronized",
        }
    }
}

/// Where a moment stands relative to a validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// Before the window's start.
    NotYetValid,
    /// Inside the window.
    Active,
    /// At or after the window's end.
    Expired,
}

/// One judged clock reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedTime {
    /// The time to stamp events with and to decide validity windows at: `max(wall, floor)` when
    /// trusted, the floor when not. Never goes backwards.
    pub now: Timestamp,
    /// Whether the wall clock was believed.
    pub trusted: bool,
    /// Proven lower bound on the real time.
    pub floor: Timestamp,
    /// The raw wall-clock reading.
    pub wall: Timestamp,
    /// Why the reading was not trusted (`None` when trusted).
    pub distrust: Option<Distrust>,
}

impl TrustedTime {
    /// Where [`TrustedTime::now`] stands relative to the window `[start, end)` (either
    /// bound may be open). With an untrusted clock a voucher is expired only once the floor
    /// has passed its end, and becomes valid only once the floor has passed its start.
    pub fn window(&self, start: Option<Timestamp>, end: Option<Timestamp>) -> WindowState {
        let at = self.now;
        if start.is_some_and(|start| at < start) {
            WindowState::NotYetValid
        } else if end.is_some_and(|end| at >= end) {
            WindowState::Expired
        } else {
            WindowState::Active
        }
    }
}

/// Judges wall-clock readings against a floor that only moves forward.
///
/// `mono` arguments are monotonic readings (for example `Instant::now() - process_start`); they
/// must not decrease between calls.
#[derive(Debug, Clone)]
pub struct ClockGuard {
    build_floor: Timestamp,
    /// Lower bound on the real time at monotonic reading `base_mono`.
    base: Timestamp,
    base_mono: Duration,
    last_mono: Duration,
    tolerance: SignedDuration,
    /// Reason the base is what it is, for readings below it.
    base_is_build_floor: bool,
}

impl ClockGuard {
    /// Starts from the build date and the persisted high-water mark (if any), at monotonic
    /// reading `mono`.
    pub fn new(build_floor: Timestamp, high_water: Option<Timestamp>, mono: Duration) -> Self {
        let base = high_water.map_or(build_floor, |hw| hw.max(build_floor));
        ClockGuard {
            build_floor,
            base,
            base_mono: mono,
            last_mono: mono,
            tolerance: SignedDuration::try_from(DEFAULT_TOLERANCE).unwrap_or(SignedDuration::ZERO),
            base_is_build_floor: base == build_floor,
        }
    }

    /// Replaces the tolerance (default [`DEFAULT_TOLERANCE`]).
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = SignedDuration::try_from(tolerance).unwrap_or(SignedDuration::ZERO);
        self
    }

    /// The proven lower bound on the real time at monotonic reading `mono`.
    pub fn floor_at(&self, mono: Duration) -> Timestamp {
        let elapsed = mono.saturating_sub(self.base_mono);
        self.base.saturating_add(elapsed).unwrap_or(self.base)
    }

    /// The value to persist durably (and pass back to [`ClockGuard::new`] after a restart): the
    /// floor as of the latest observation.
    pub fn high_water(&self) -> Timestamp {
        self.floor_at(self.last_mono)
    }

    /// Judges one wall-clock reading taken at monotonic reading `mono`.
    pub fn observe(&mut self, wall: Timestamp, mono: Duration, ntp: NtpState) -> TrustedTime {
        let mono = mono.max(self.last_mono);
        self.last_mono = mono;
        let floor = self.floor_at(mono);
        let lowest_trusted = floor.saturating_sub(self.tolerance).unwrap_or(floor);
        let distrust = if wall < lowest_trusted {
            let below_build = wall < self.build_floor;
            Some(
                if below_build || (self.base_is_build_floor && wall < floor) {
                    Distrust::BeforeBuildDate
                } else {
                    Distrust::BeforeHighWater
                },
            )
        } else if ntp == NtpState::Unsynchronized {
            Some(Distrust::NotSynchronized)
        } else {
            None
        };
        let trusted = distrust.is_none();
        let now = if trusted { wall.max(floor) } else { floor };
        if trusted {
            // Rebase on the trusted reading: the floor moves forward (never back).
            self.base = now;
            self.base_mono = mono;
            self.base_is_build_floor = false;
        }
        TrustedTime {
            now,
            trusted,
            floor: self.floor_at(mono),
            wall,
            distrust,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    const BUILD: &str = "2026-11-01T00:00:00Z";

    #[test]
    fn first_boot_with_a_sane_clock_is_trusted() {
        let mut guard = ClockGuard::new(ts(BUILD), None, secs(0));
        let t = guard.observe(ts("2026-11-23T10:00:00Z"), secs(1), NtpState::Unknown);
        assert!(t.trusted);
        assert_eq!(t.distrust, None);
        assert_eq!(t.now, ts("2026-11-23T10:00:00Z"));
        assert_eq!(t.floor, ts("2026-11-23T10:00:00Z"));
        assert_eq!(guard.high_water(), ts("2026-11-23T10:00:00Z"));
    }

    #[test]
    fn a_clock_before_the_build_date_is_untrusted_and_events_use_the_floor() {
        let mut guard = ClockGuard::new(ts(BUILD), None, secs(0));
        let t = guard.observe(ts("1970-01-01T00:00:30Z"), secs(30), NtpState::Unknown);
        assert!(!t.trusted);
        assert_eq!(t.distrust, Some(Distrust::BeforeBuildDate));
        // 30 s of monotonic time have passed since start: the floor moved with it.
        assert_eq!(t.floor, ts("2026-11-01T00:00:30Z"));
        assert_eq!(t.now, t.floor);
    }

    #[test]
    fn after_a_power_cut_a_clock_behind_the_high_water_mark_is_untrusted_until_ntp_fixes_it() {
        let high_water = ts("2026-11-20T18:00:00Z");
        let mut guard = ClockGuard::new(ts(BUILD), Some(high_water), secs(5));
        // fake-hwclock restored a time three days old.
        let t = guard.observe(
            ts("2026-11-17T09:00:00Z"),
            secs(65),
            NtpState::Unsynchronized,
        );
        assert!(!t.trusted);
        assert_eq!(t.distrust, Some(Distrust::BeforeHighWater));
        assert_eq!(t.floor, ts("2026-11-20T18:01:00Z"));
        assert_eq!(t.now, t.floor);
        // NTP answers: the clock jumps forward, is trusted and becomes the new floor.
        let t = guard.observe(
            ts("2026-11-23T08:30:00Z"),
            secs(125),
            NtpState::Synchronized,
        );
        assert!(t.trusted);
        assert_eq!(t.now, ts("2026-11-23T08:30:00Z"));
        assert_eq!(guard.high_water(), ts("2026-11-23T08:30:00Z"));
        // Ten minutes later (monotonic), a normal reading.
        let t = guard.observe(
            ts("2026-11-23T08:40:00Z"),
            secs(725),
            NtpState::Synchronized,
        );
        assert!(t.trusted);
    }

    #[test]
    fn a_clock_set_backwards_while_running_is_caught_by_monotonic_time() {
        let mut guard = ClockGuard::new(ts(BUILD), None, secs(0));
        assert!(
            guard
                .observe(ts("2026-11-23T10:00:00Z"), secs(0), NtpState::Unknown)
                .trusted
        );
        // One hour later the wall clock says only 10:30.
        let t = guard.observe(ts("2026-11-23T10:30:00Z"), secs(3600), NtpState::Unknown);
        assert!(!t.trusted);
        assert_eq!(t.distrust, Some(Distrust::BeforeHighWater));
        assert_eq!(t.now, ts("2026-11-23T11:00:00Z"));
    }

    #[test]
    fn small_steps_back_within_the_tolerance_stay_trusted_and_now_does_not_go_back() {
        let mut guard = ClockGuard::new(ts(BUILD), None, secs(0));
        let first = guard.observe(ts("2026-11-23T10:00:00Z"), secs(0), NtpState::Synchronized);
        let second = guard.observe(ts("2026-11-23T09:59:58Z"), secs(1), NtpState::Synchronized);
        assert!(second.trusted);
        assert!(second.now >= first.now);
        assert_eq!(second.now, ts("2026-11-23T10:00:01Z"));
    }

    #[test]
    fn an_unsynchronised_clock_ahead_of_the_floor_is_untrusted_and_events_use_the_floor() {
        let mut guard = ClockGuard::new(ts(BUILD), Some(ts("2026-11-20T00:00:00Z")), secs(0));
        let t = guard.observe(
            ts("2026-11-22T00:00:00Z"),
            secs(1),
            NtpState::Unsynchronized,
        );
        assert!(!t.trusted);
        assert_eq!(t.distrust, Some(Distrust::NotSynchronized));
        assert_eq!(t.now, ts("2026-11-20T00:00:01Z"));
        assert_eq!(t.wall, ts("2026-11-22T00:00:00Z"));
        // The floor did not move to the untrusted reading.
        assert_eq!(guard.high_water(), ts("2026-11-20T00:00:01Z"));
    }

    #[test]
    fn untrusted_clock_neither_expires_nor_activates_a_voucher_early() {
        let mut guard = ClockGuard::new(ts(BUILD), Some(ts("2026-11-20T00:00:00Z")), secs(0));
        // The clock claims 2026-12-05, but NTP has not confirmed it.
        let t = guard.observe(
            ts("2026-12-05T00:00:00Z"),
            secs(0),
            NtpState::Unsynchronized,
        );
        let until_dec_1 = Some(ts("2026-12-01T00:00:00Z"));
        // Valid until Dec 1: not provably expired, so still honoured.
        assert_eq!(t.window(None, until_dec_1), WindowState::Active);
        // Valid from Dec 1: not provably started, so not yet valid.
        assert_eq!(t.window(until_dec_1, None), WindowState::NotYetValid);
        // Once trusted, the same clock decides both.
        let t = guard.observe(ts("2026-12-05T00:00:00Z"), secs(1), NtpState::Synchronized);
        assert_eq!(t.window(None, until_dec_1), WindowState::Expired);
        assert_eq!(t.window(until_dec_1, None), WindowState::Active);
    }

    #[test]
    fn window_bounds_are_start_inclusive_end_exclusive() {
        let at = ts("2026-11-23T10:00:00Z");
        let t = TrustedTime {
            now: at,
            trusted: true,
            floor: at,
            wall: at,
            distrust: None,
        };
        assert_eq!(t.window(Some(at), None), WindowState::Active);
        assert_eq!(t.window(None, Some(at)), WindowState::Expired);
        assert_eq!(t.window(None, None), WindowState::Active);
    }

    #[test]
    fn high_water_from_a_future_build_date_wins() {
        let guard = ClockGuard::new(ts(BUILD), Some(ts("2020-01-01T00:00:00Z")), secs(0));
        assert_eq!(guard.high_water(), ts(BUILD));
    }

    #[test]
    fn build_floor_is_plausible() {
        assert!(build_floor() >= ts("2026-01-01T00:00:00Z"));
    }

    proptest! {
        #[test]
        fn now_never_goes_back_and_floor_never_decreases(
            steps in proptest::collection::vec((-1_000_000i64..1_000_000, 0u64..10_000, 0u8..3), 1..40)
        ) {
            let start = ts("2026-11-23T00:00:00Z");
            let mut guard = ClockGuard::new(ts(BUILD), Some(start), secs(0));
            let mut mono = secs(0);
            let mut last_now = Timestamp::UNIX_EPOCH;
            let mut last_floor = Timestamp::UNIX_EPOCH;
            for (offset, advance, ntp) in steps {
                mono += secs(advance);
                let ntp = [NtpState::Synchronized, NtpState::Unsynchronized, NtpState::Unknown][ntp as usize];
                let wall = start.checked_add(SignedDuration::from_secs(offset)).expect("in range");
                let t = guard.observe(wall, mono, ntp);
                prop_assert!(t.now >= last_now);
                prop_assert!(t.floor >= last_floor);
                prop_assert!(t.now >= t.floor);
                prop_assert_eq!(t.trusted, t.distrust.is_none());
                if t.trusted { prop_assert!(ntp != NtpState::Unsynchronized); }
                last_now = t.now;
                last_floor = t.floor;
            }
        }
    }
}
