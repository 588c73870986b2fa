//! What the demo did ([`DemoSummary`]), and the summary printed at its end.

use super::say;
use crate::loadgen::Percentiles;

/// What the demo did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DemoSummary {
    /// Whether the lanes went through a real MQTT broker.
    pub via_mqtt: bool,
    /// Receipts durably applied (not counting duplicates).
    pub receipts: u64,
    /// Duplicate receipts answered with their first outcome.
    pub duplicates: u64,
    /// Net points earned.
    pub points: i64,
    /// Customers enrolled offline.
    pub enrolled: u64,
    /// Error answers (the demo sends some bad input on purpose).
    pub error_answers: u64,
    /// Vouchers issued.
    pub vouchers_issued: u64,
    /// Vouchers redeemed.
    pub vouchers_redeemed: u64,
    /// Events written to the outbox.
    pub events_written: u64,
    /// Events the reference CRM acknowledged (after its deduplication).
    pub events_acknowledged: u64,
    /// Answer latency in milliseconds.
    pub latency_ms: Percentiles,
    /// Whether `verify` found the journal and every balance consistent at the end.
    pub ledger_verified: bool,
}

pub(super) fn print_summary(summary: &DemoSummary) {
    say("Summary");
    println!(
        "  lanes via            {}",
        if summary.via_mqtt {
            "MQTT (Mosquitto)"
        } else {
            "in-process"
        }
    );
    println!(
        "  receipts applied     {} (+{} duplicates answered, nothing doubled)",
        summary.receipts, summary.duplicates
    );
    println!("  points earned (net)  {}", summary.points);
    println!("  customers enrolled   {}", summary.enrolled);
    println!(
        "  error answers        {} (bad input sent on purpose)",
        summary.error_answers
    );
    println!(
        "  vouchers             {} issued, {} redeemed",
        summary.vouchers_issued, summary.vouchers_redeemed
    );
    println!(
        "  CRM events           {} written, {} acknowledged by the CRM",
        summary.events_written, summary.events_acknowledged
    );
    let l = &summary.latency_ms;
    println!(
        "  answer latency       p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms ({} requests)",
        l.p50, l.p90, l.p99, l.max, l.count
    );
    println!(
        "  ledger verified      {}",
        if summary.ledger_verified { "yes" } else { "NO" }
    );
}
