//! Waiting in tests: a free port to listen on, and polling a condition until a deadline (for
//! the states no event announces; prefer awaiting the event where there is one).

use std::time::{Duration, Instant};

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    crate::demo::broker::free_port().expect("a free port")
}

/// Blocks until `check` is true or `timeout` passes; returns whether it became true. For sync
/// code and for tests that assert on the outcome themselves.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// [`wait_until`] for async tests: polls `check` without blocking the runtime and fails the
/// test with `what` if `limit` passes first.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
