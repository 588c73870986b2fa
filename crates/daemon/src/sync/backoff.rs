//! Retry delays: exponential backoff with jitter, and `Retry-After`. Pure arithmetic plus a
//! tiny random source; no I/O.

use std::time::Duration;

/// Exponential backoff state with "equal jitter": the n-th failure waits between half and all
/// of `min * 2^n`, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    rng: u64,
}

impl Backoff {
    /// A fresh backoff between `min` and `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let mut seed = [0u8; 8];
        let _ = getrandom::getrandom(&mut seed);
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
            rng: u64::from_le_bytes(seed) | 1,
        }
    }

    /// Forgets past failures (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next attempt after one more failure. `retry_after` (from a 429 or
    /// 503) is honoured: the delay is never shorter than it, up to `retry_after_cap`.
    pub fn next_delay(
        &mut self,
        retry_after: Option<Duration>,
        retry_after_cap: Duration,
    ) -> Duration {
        let ceiling = exponential(self.min, self.max, self.failures);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        let span = (ceiling - half).as_millis() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.next_random() % (span + 1)
        };
        let delay = half + Duration::from_millis(jitter);
        match retry_after {
            Some(after) => delay.max(after.min(retry_after_cap)),
            None => delay,
        }
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

    #[test]
    fn retry_after_is_seconds() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn retry_after_wins_over_a_shorter_backoff_but_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(20));
        let d = b.next_delay(Some(Duration::from_secs(2)), Duration::from_secs(60));
        assert_eq!(d, Duration::from_secs(2));
        let d = b.next_delay(Some(Duration::from_secs(2000)), Duration::from_secs(60));
        assert_eq!(d, Duration::from_secs(60));
    }

    proptest! {
        #[test]
        fn delays_stay_within_half_and_whole_of_the_exponential(min in 1u64..1000, extra in 0u64..100_000, n in 0u32..64) {
            let min = Duration::from_millis(min);
            let max = min + Duration::from_millis(extra);
            let mut b = Backoff::new(min, max);
            for _ in 0..n { b.next_delay(None, max); }
            let ceiling = exponential(min, max, n);
            let d = b.next_delay(None, max);
            prop_assert!(d <= ceiling && d >= ceiling / 2, "{d:?} vs {ceiling:?}");
            prop_assert!(d <= max);
        }
    }
}
