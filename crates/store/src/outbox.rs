//! The outbox of sequence-numbered events for the CRM: reading after a seq, acknowledging,
//! counters and compaction of acknowledged events.

use super::*;

/// One outbox event, as the CRM receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Per-store, gapless, increasing.
    pub seq: u64,
    /// Globally unique (random), the CRM's deduplication key.
    pub id: String,
    /// Event type.
    pub kind: EventType,
    /// When it happened.
    pub at: Timestamp,
    /// The whole event as JSON: `{"seq", "id", "type", "at", "payload"}`.
    pub json: serde_json::Value,
}

/// Outbox counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// The last sequence number written (0: none yet).
    pub last_seq: u64,
    /// The CRM acknowledged everything up to here.
    pub acked_through: u64,
    /// Events written but not acknowledged.
    pub unacked: u64,
    /// Events still stored (acknowledged ones wait for compaction).
    pub stored: u64,
}

impl Store {
    /// Up to `max` events with `seq > after`, in order.
    pub fn outbox_after(&self, after: u64, max: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        let start = after.saturating_add(1);
        let mut out = Vec::new();
        for item in self.tree(OUTBOX).range(u64_be(start)..).take(max) {
            let (key, value) = item?;
            out.push(decode_event(&key, &value)?);
        }
        Ok(out)
    }

    /// The CRM acknowledged every event through `through`. An acknowledgement beyond the
    /// last local event means this database lost data: [`Failure::AckBeyondOutbox`].
    pub fn outbox_ack(&self, through: u64) -> Result<(), StoreError> {
        self.transact(&[], |tx| {
            let last = tx.get_u64(meta_key::NEXT_SEQ)?.max(1) - 1;
            if through > last {
                return abort(StoreError::Failed(Failure::AckBeyondOutbox {
                    acked: through,
                    last,
                }));
            }
            let acked = tx.get_u64(meta_key::ACKED)?;
            if through > acked {
                tx.tree(META).put(meta_key::ACKED, &u64_be(through)[..])?;
            }
            Ok(())
        })
    }

    /// Outbox counters.
    pub fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let meta = self.tree(META);
        let get = |key: &[u8]| -> Result<u64, StoreError> {
            Ok(meta.get(key)?.as_deref().and_then(read_u64).unwrap_or(0))
        };
        let last_seq = get(meta_key::NEXT_SEQ)?.max(1) - 1;
        let acked_through = get(meta_key::ACKED)?;
        Ok(OutboxStats {
            last_seq,
            acked_through,
            unacked: last_seq - acked_through.min(last_seq),
            stored: self.tree(OUTBOX).len() as u64,
        })
    }

    /// Removes acknowledged events older than `storage.outbox_retention_hours`; returns how
    /// many were removed. Unacknowledged events are never removed.
    pub fn compact_outbox(&self, now: Timestamp) -> Result<u64, StoreError> {
        let cutoff = now
            .checked_sub(self.inner.retention)
            .unwrap_or(Timestamp::MIN)
            .as_second();
        let acked = self.outbox_stats()?.acked_through;
        let outbox = self.tree(OUTBOX);
        let mut removed = 0u64;
        loop {
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            let mut done = true;
            for item in outbox.range(..=u64_be(acked)) {
                let (key, value) = item?;
                let at = value
                    .get(..8)
                    .map(|b| i64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
                    .unwrap_or(i64::MIN);
                if at > cutoff {
                    break;
                }
                batch.remove(key);
                in_batch += 1;
                if in_batch == 10_000 {
                    done = false;
                    break;
                }
            }
            if in_batch == 0 {
                break;
            }
            outbox.apply_batch(batch)?;
            removed += in_batch;
            if done {
                break;
            }
        }
        if removed > 0 {
            self.wait_durable()?;
        }
        Ok(removed)
    }
}

pub(crate) fn decode_event(key: &[u8], value: &[u8]) -> Result<OutboxEvent, StoreError> {
    let bad = |what: &str| StoreError::Failed(Failure::Corrupt(format!("outbox event: {what}")));
    let seq = read_u64(key).ok_or_else(|| bad("key"))?;
    let json: serde_json::Value =
        serde_json::from_slice(value.get(8..).ok_or_else(|| bad("value"))?)
            .map_err(|e| bad(&e.to_string()))?;
    let id = json["id"].as_str().ok_or_else(|| bad("id"))?.to_string();
    let kind = json["type"]
        .as_str()
        .and_then(EventType::parse)
        .ok_or_else(|| bad("type"))?;
    let at = json["at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad("at"))?;
    Ok(OutboxEvent {
        seq,
        id,
        kind,
        at,
        json,
    })
}
