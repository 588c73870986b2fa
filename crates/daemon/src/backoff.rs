//! Retry delays for every edge that reconnects or retries (MQTT, CRM sync, serial reopen,
//! printer-proxy bind, HTTP accept): one exponential [`Backoff`] with a per-edge [`Jitter`],
//! and `Retry-After` parsing. Pure arithmetic plus a tiny random source; no I/O, no sleeping
//! (each edge sleeps in its own way: async and cancellable, or in short slices on a thread).
//!
//! The n-th consecutive failure has the step `min * 2^n`, capped at `max`; [`Backoff::reset`]
//! after a success starts again from `min`.

use std::time::Duration;

/// How the delay is spread around the step, so that many gateways do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the step (a local resource: a serial device, a port, `accept`).
    None,
    /// "Equal jitter": between half and all of the step (the CRM link, shared by every store).
    Equal,
    /// The step plus up to half of it again (the store's MQTT broker).
    Extra,
}

/// Exponential backoff state: consecutive failures, the bounds and the jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: Jitter,
    failures: u32,
    rng: u64,
}

impl Backoff {
    /// A fresh backoff from `min` doubling up to `max` (`max` below `min` counts as `min`),
    /// without jitter.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let mut seed = [0u8; 8];
        // Jitter only spreads retries; a failed seed read still gives a usable (fixed) seed.
        let _ = getrandom::getrandom(&mut seed);
        Backoff {
            min,
            max: max.max(min),
            jitter: Jitter::None,
            failures: 0,
            rng: u64::from_le_bytes(seed) | 1,
        }
    }

    /// The same backoff with `jitter`.
    pub fn with_jitter(mut self, jitter: Jitter) -> Backoff {
        self.jitter = jitter;
        self
    }

    /// Forgets past failures (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next attempt, counting one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let step = exponential(self.min, self.max, self.failures);
        self.failures = self.failures.saturating_add(1);
        match self.jitter {
            Jitter::None => step,
            Jitter::Equal => {
                let half = step / 2;
                half + self.random_millis_up_to(step - half)
            }
            Jitter::Extra => {
                let fraction = self.next_random() % 1000;
                step + step.mul_f64(fraction as f64 / 2000.0)
            }
        }
    }

    /// [`Backoff::next_delay`], but never shorter than `retry_after` (from a 429 or 503) taken
    /// up to `retry_after_cap`.
    pub fn next_delay_honouring(
        &mut self,
        retry_after: Option<Duration>,
        retry_after_cap: Duration,
    ) -> Duration {
        let delay = self.next_delay();
        match retry_after {
            Some(after) => delay.max(after.min(retry_after_cap)),
            None => delay,
        }
    }

    fn random_millis_up_to(&mut self, span: Duration) -> Duration {
        let span = u64::try_from(span.as_millis()).unwrap_or(u64::MAX);
        if span == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(self.next_random() % span.saturating_add(1))
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// `min * 2^failures`, capped at `max`.
pub fn exponential(min: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    min.checked_mul(factor).unwrap_or(max).min(max)
}

/// Reads a `Retry-After` header value: delay-seconds (the HTTP-date form is rare from APIs and
/// is treated as absent).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn retry_after_is_seconds() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn retry_after_wins_over_a_shorter_backoff_but_is_capped() {
        let mut b = Backoff::new(ms(10), ms(20)).with_jitter(Jitter::Equal);
        let d = b.next_delay_honouring(Some(Duration::from_secs(2)), Duration::from_secs(60));
        assert_eq!(d, Duration::from_secs(2));
        let d = b.next_delay_honouring(Some(Duration::from_secs(2000)), Duration::from_secs(60));
        assert_eq!(d, Duration::from_secs(60));
    }

    #[test]
    fn without_jitter_delays_double_up_to_the_cap_and_reset() {
        // The printer proxy's bind retry: 200 ms doubling to 10 s.
        let mut b = Backoff::new(ms(200), Duration::from_secs(10));
        let delays: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert_eq!(
            delays,
            [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000].map(ms)
        );
        assert_eq!(b.failures(), 8);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.next_delay(), ms(200));
    }

    #[test]
    fn a_cap_below_the_minimum_is_the_minimum() {
        let mut b = Backoff::new(ms(100), ms(10));
        assert_eq!(b.next_delay(), ms(100));
        assert_eq!(b.next_delay(), ms(100));
    }

    #[test]
    fn extra_jitter_adds_up_to_half_and_grows_to_its_limit() {
        // The MQTT reconnect (reconnect_min_ms .. reconnect_max_ms).
        let mut b = Backoff::new(ms(100), ms(800)).with_jitter(Jitter::Extra);
        let delays: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        for (delay, step) in delays.iter().zip([100, 200, 400, 800, 800, 800]) {
            assert!(
                *delay >= ms(step) && *delay < ms(step) * 3 / 2,
                "{delay:?} vs {step}"
            );
        }
        b.reset();
        assert!(b.next_delay() < ms(150));
    }

    #[test]
    fn failures_saturate_instead_of_overflowing() {
        let mut b = Backoff::new(ms(1), Duration::from_secs(1));
        b.failures = u32::MAX - 1;
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        assert_eq!(b.failures(), u32::MAX);
    }

    proptest! {
        #[test]
        fn equal_jitter_stays_within_half_and_whole_of_the_step(min in 1u64..1000, extra in 0u64..100_000, n in 0u32..64) {
            let min = ms(min);
            let max = min + ms(extra);
            let mut b = Backoff::new(min, max).with_jitter(Jitter::Equal);
            for _ in 0..n { b.next_delay(); }
            let step = exponential(min, max, n);
            let d = b.next_delay();
            prop_assert!(d <= step && d >= step / 2, "{d:?} vs {step:?}");
            prop_assert!(d <= max);
        }

        #[test]
        fn every_jitter_is_monotone_in_its_bounds(min in 1u64..1000, extra in 0u64..100_000, n in 0u32..64) {
            let min = ms(min);
            let max = min + ms(extra);
            for jitter in [Jitter::None, Jitter::Equal, Jitter::Extra] {
                let mut b = Backoff::new(min, max).with_jitter(jitter);
                for _ in 0..n { b.next_delay(); }
                let d = b.next_delay();
                prop_assert!(d >= min / 2 && d <= max * 3 / 2, "{jitter:?}: {d:?}");
            }
        }
    }
}
