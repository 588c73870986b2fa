//! The gateway's trusted clock: one `ClockGuard` shared by the lanes and housekeeping, read
//! once per input (and counted when untrusted).

use super::*;

/// The wall clock as the gateway trusts it (see `clock`): the guard and the process's
/// monotonic origin.
pub struct TrustedClock {
    guard: ClockGuard,
    origin: std::time::Instant,
    use_ntp: bool,
}

impl TrustedClock {
    /// A clock whose floor starts at the later of the build date and `high_water`.
    pub fn new(high_water: Option<Timestamp>, use_ntp: bool) -> Self {
        let origin = std::time::Instant::now();
        TrustedClock {
            guard: ClockGuard::new(
                loyalty_core::clock::build_floor(),
                high_water,
                origin.elapsed(),
            ),
            origin,
            use_ntp,
        }
    }

    /// Reads the clocks and judges them.
    pub fn observe(&mut self) -> TrustedTime {
        crate::systemd::observe_clock(&mut self.guard, self.origin, self.use_ntp)
    }
}

/// Reads the trusted time from a shared clock (a poisoned lock still holds a usable clock).
pub(super) fn trusted_now(clock: &Mutex<TrustedClock>) -> TrustedTime {
    match clock.lock() {
        Ok(mut clock) => clock.observe(),
        Err(poisoned) => poisoned.into_inner().observe(),
    }
}

/// The time a scan or receipt is handled at, counted in the metrics when the clock is untrusted
/// (its events are then flagged, see `Store::stamped`).
pub(super) fn input_time(shared: &Shared) -> TrustedTime {
    let time = trusted_now(&shared.clock);
    if !time.trusted {
        shared.metrics.untrusted_time_event();
    }
    time
}
