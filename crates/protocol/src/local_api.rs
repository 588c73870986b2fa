//! The local HTTP API's JSON (SPEC 2.7): the answers of `GET /health` and
//! `GET /customers?card=...`, and the `{"error": ...}` body of every refusal. The server
//! (`loyalty_daemon::http`) fills and sends these types; nothing else builds this JSON.

use serde::Serialize;

/// One part of the gateway (storage, broker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentHealth {
    /// True when the part works (or is disabled by configuration: say so in `detail`).
    pub ok: bool,
    /// One line for the operator.
    pub detail: String,
}

/// One configured serial device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceHealth {
    /// Configured name.
    pub name: String,
    /// True while open and reading.
    pub up: bool,
    /// The path opened, or the last error.
    pub detail: String,
}

/// CRM sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncHealth {
    /// True when disabled, or when the lag is within what the gateway considers normal.
    pub ok: bool,
    /// Whether sync is configured at all.
    pub enabled: bool,
    /// Events not yet acknowledged by the CRM.
    pub outbox_depth: u64,
    /// Age in seconds of the oldest unacknowledged event (`None` when the outbox is empty).
    pub lag_seconds: Option<u64>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// The wall clock (see `clock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClockHealth {
    /// True when the wall clock is trusted.
    pub ok: bool,
    /// Why not, or "trusted".
    pub detail: String,
}

/// The lanes' input queue: `overloaded` while inputs arrive faster than the gateway applies
/// them (the broker then holds the backlog; answers keep flowing at the applied rate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LanesHealth {
    /// True while the input queue is at or above the overload threshold.
    pub overloaded: bool,
    /// Inputs taken from the edges that no lane has answered yet.
    pub queue_depth: u64,
}

/// Everything `GET /health` reports. The answer is 200 when every part is ok, else 503.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// The embedded database.
    pub storage: ComponentHealth,
    /// The store's MQTT broker.
    pub broker: ComponentHealth,
    /// Each configured serial device.
    pub devices: Vec<DeviceHealth>,
    /// CRM sync.
    pub sync: SyncHealth,
    /// The wall clock.
    pub clock: ClockHealth,
    /// The lanes' input queue.
    pub lanes: LanesHealth,
}

impl HealthReport {
    /// True when every part is ok and the lanes keep up.
    pub fn healthy(&self) -> bool {
        !self.lanes.overloaded && self.parts_ok()
    }

    /// True when every part is ok (the lanes may be overloaded).
    fn parts_ok(&self) -> bool {
        self.storage.ok
            && self.broker.ok
            && self.devices.iter().all(|device| device.up)
            && self.sync.ok
            && self.clock.ok
    }
}

/// A customer as shown to staff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerView {
    /// Customer id.
    pub customer_id: String,
    /// The card looked up.
    pub card: String,
    /// Display name, if known.
    pub name: Option<String>,
    /// Tier, if any.
    pub tier: Option<String>,
    /// Spendable points.
    pub balance: i64,
    /// Points earned but not yet vested.
    pub pending: i64,
    /// Most recent purchases first.
    pub recent_purchases: Vec<PurchaseView>,
}

/// One purchase in a [`CustomerView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurchaseView {
    /// Receipt id.
    pub receipt_id: String,
    /// When (RFC 3339).
    #[serde(serialize_with = "serialize_display")]
    pub at: jiff::Timestamp,
    /// Lane id.
    pub lane: String,
    /// Total as a decimal string (`Money::format` with the currency's decimals).
    pub total: String,
    /// Points earned (negative for a return).
    pub points: i64,
}

fn serialize_display<S: serde::Serializer>(
    value: &jiff::Timestamp,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// The body of `GET /health`: `{"status": "healthy" | "overloaded" | "degraded", ...the
/// report}`; `overloaded` when every part is ok but the lanes' input queue is past its threshold.
#[derive(Debug, Clone, Serialize)]
pub struct HealthAnswer<'a> {
    /// `healthy` when every part is ok, `overloaded` when only the lanes are behind, else
    /// `degraded`.
    pub status: &'static str,
    /// Every part.
    #[serde(flatten)]
    pub report: &'a HealthReport,
}

impl<'a> HealthAnswer<'a> {
    /// The answer for `report`.
    pub fn new(report: &'a HealthReport) -> Self {
        HealthAnswer {
            status: if report.healthy() {
                "healthy"
            } else if report.parts_ok() {
                "overloaded"
            } else {
                "degraded"
            },
            report,
        }
    }
}

/// The body of an error answer: `{"error": "what went wrong"}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorAnswer<'a> {
    /// One line for the caller.
    pub error: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_their_shape() {
        let report = HealthReport {
            storage: ComponentHealth {
                ok: true,
                detail: "ok".into(),
            },
            broker: ComponentHealth {
                ok: false,
                detail: "down".into(),
            },
            devices: vec![DeviceHealth {
                name: "printer".into(),
                up: true,
                detail: "/dev/ttyUSB0".into(),
            }],
            sync: SyncHealth {
                ok: true,
                enabled: false,
                outbox_depth: 0,
                lag_seconds: None,
                last_error: None,
            },
            clock: ClockHealth {
                ok: true,
                detail: "trusted".into(),
            },
            lanes: LanesHealth {
                overloaded: false,
                queue_depth: 3,
            },
        };
        assert_eq!(
            serde_json::to_string(&HealthAnswer::new(&report)).expect("json"),
            r#"{"status":"degraded","storage":{"ok":true,"detail":"ok"},"broker":{"ok":false,"detail":"down"},"devices":[{"name":"printer","up":true,"detail":"/dev/ttyUSB0"}],"sync":{"ok":true,"enabled":false,"outbox_depth":0,"lag_seconds":null,"last_error":null},"clock":{"ok":true,"detail":"trusted"},"lanes":{"overloaded":false,"queue_depth":3}}"#
        );
        let view = CustomerView {
            customer_id: "c".into(),
            card: "2990000000019".into(),
            name: None,
            tier: Some("gold".into()),
            balance: 12,
            pending: 3,
            recent_purchases: vec![PurchaseView {
                receipt_id: "R-1".into(),
                at: jiff::Timestamp::from_second(1_800_000_000).expect("time"),
                lane: "3".into(),
                total: "13.47".into(),
                points: 13,
            }],
        };
        assert_eq!(
            serde_json::to_string(&view).expect("json"),
            r#"{"customer_id":"c","card":"2990000000019","name":null,"tier":"gold","balance":12,"pending":3,"recent_purchases":[{"receipt_id":"R-1","at":"2027-01-15T08:00:00Z","lane":"3","total":"13.47","points":13}]}"#
        );
        assert_eq!(
            serde_json::to_string(&ErrorAnswer {
                error: "no such resource"
            })
            .expect("json"),
            r#"{"error":"no such resource"}"#
        );
    }
}
