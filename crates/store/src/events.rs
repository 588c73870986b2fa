//! Outbox events for the CRM (SPEC 2.5): their globally unique ids. The event types, the
//! envelope and every payload are `loyalty_protocol::crm::events`, built and serialised there
//! and nowhere else.
//!
//! Invariant: an event id is random (128 bits, hex), never derived from `seq`: a lost database
//! restarts `seq`, and the CRM deduplicates by `id`.

pub use loyalty_protocol::crm::events::EventType;

/// A source of globally unique event ids for one transaction: a random 128-bit base drawn
/// *before* the transaction (no I/O inside the closure), from which the n-th event of the
/// transaction takes `base + n`. A re-run of the closure hands out the same ids again.
#[derive(Debug, Clone, Copy)]
pub struct EventIds {
    base: u128,
}

impl EventIds {
    /// Draws a random base from the operating system.
    pub fn random() -> Result<EventIds, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes)?;
        Ok(EventIds {
            base: u128::from_be_bytes(bytes),
        })
    }

    /// The `n`-th id as 32 lower-case hex digits.
    pub fn nth(&self, n: u32) -> String {
        format!("{:032x}", self.base.wrapping_add(n as u128))
    }
}

/// Random lower-case hex of `bytes` random bytes (customer ids).
pub fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf)?;
    Ok(hex(&buf))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_hex() {
        let ids = EventIds::random().expect("random");
        assert_eq!(ids.nth(0).len(), 32);
        assert_ne!(ids.nth(0), ids.nth(1));
        assert_ne!(
            EventIds::random().expect("random").nth(0),
            EventIds::random().expect("random").nth(0)
        );
    }
}
