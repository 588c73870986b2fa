//! The simulated lanes: each lane's cards (EAN-13 numbers of the program), its preparation
//! (cards scanned once, unmeasured) and its measured closed loop of scan, receipt, return and
//! voucher, with what it counted.

use super::peer::{connect_peer, Peer};
use super::{random_fraction, LoadgenArgs};
use loyalty_daemon::mqtt::Topics;
use loyalty_protocol::till::{LineMessage, Qty, ReceiptMessage};
use rumqttc::QoS;
use std::time::{Duration, Instant};

/// A card number of the program: `prefix` + serial digits + EAN-13 check digit.
pub fn card_number(prefix: &str, serial: u64) -> String {
    let body_len = 12usize.saturating_sub(prefix.len());
    let body = format!(
        "{prefix}{:0width$}",
        serial % 10u64.pow(body_len as u32),
        width = body_len
    );
    let check = ean13_check_digit(&body);
    format!("{body}{check}")
}

fn ean13_check_digit(twelve: &str) -> u32 {
    let sum: u32 = twelve
        .bytes()
        .enumerate()
        .map(|(i, b)| (b - b'0') as u32 * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    (10 - sum % 10) % 10
}

#[derive(Default)]
pub(super) struct LaneResult {
    pub(super) latencies: Vec<Duration>,
    pub(super) answered: u64,
    pub(super) receipts: u64,
    pub(super) enrolled: u64,
    pub(super) errors: u64,
    pub(super) timeouts: u64,
}

async fn request(
    connection: &mut Peer,
    topic: String,
    payload: Vec<u8>,
    timeout: Duration,
    result: &mut LaneResult,
) -> anyhow::Result<Option<serde_json::Value>> {
    let started = Instant::now();
    connection
        .client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await?;
    match tokio::time::timeout(timeout, connection.incoming.recv()).await {
        Ok(Some((_, payload))) => {
            result.latencies.push(started.elapsed());
            result.answered += 1;
            let value: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
            match value["type"].as_str() {
                Some("error") => result.errors += 1,
                Some("points") => result.receipts += 1,
                Some("enrolled") => result.enrolled += 1,
                _ => {}
            }
            Ok(Some(value))
        }
        _ => {
            result.timeouts += 1;
            Ok(None)
        }
    }
}

/// Cards each simulated lane scans in turn.
const CARDS_PER_LANE: u64 = 50;

/// The `serial`-th card (modulo [`CARDS_PER_LANE`]) of lane `lane_number`.
fn lane_card(prefix: &str, lane_number: u64, serial: u64) -> String {
    card_number(prefix, lane_number * 1_000_000 + serial % CARDS_PER_LANE)
}

/// Scans `card` at `lane` as an EAN-13 barcode (AIM `]E0`) and waits for the answer.
async fn scan_card(
    connection: &mut Peer,
    topics: &Topics,
    lane: &str,
    card: &str,
    timeout: Duration,
    result: &mut LaneResult,
) -> anyhow::Result<Option<serde_json::Value>> {
    request(
        connection,
        topics.scan(lane),
        format!("]E0{card}").into_bytes(),
        timeout,
        result,
    )
    .await
}

/// Connects a lane and, unless `--fresh-cards`, scans each of its cards once (unmeasured: the
/// gateway enrolls each card the first time it sees it).
async fn prepare_lane(
    host: &str,
    port: u16,
    topics: &Topics,
    lane: &str,
    lane_number: u64,
    args: &LoadgenArgs,
    run_id: &str,
) -> anyhow::Result<Peer> {
    let response_topic = topics.response(lane);
    let mut connection = connect_peer(
        host,
        port,
        &format!("loadgen-{run_id}-{lane}"),
        std::slice::from_ref(&response_topic),
    )
    .await?;
    if !args.fresh_cards {
        let timeout = Duration::from_secs(args.answer_timeout_secs);
        let mut unmeasured = LaneResult::default();
        for serial in 0..CARDS_PER_LANE {
            let card = lane_card(&args.card_prefix, lane_number, serial);
            scan_card(
                &mut connection,
                topics,
                lane,
                &card,
                timeout,
                &mut unmeasured,
            )
            .await?;
        }
    }
    Ok(connection)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run_lane(
    host: String,
    port: u16,
    topics: Topics,
    lane: String,
    args: LoadgenArgs,
    run_id: String,
    start: std::sync::Arc<tokio::sync::Barrier>,
) -> anyhow::Result<LaneResult> {
    let timeout = Duration::from_secs(args.answer_timeout_secs);
    let lane_number: u64 = lane.trim_start_matches('L').parse().unwrap_or(0);
    let ready = prepare_lane(&host, port, &topics, &lane, lane_number, &args, &run_id).await;
    // Every lane reaches the start, ready or not (a lane that failed must not hold up the rest).
    start.wait().await;
    let mut connection = ready?;
    let mut result = LaneResult::default();
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    if let Some(interval) = interval {
        tokio::time::sleep(interval.mul_f64(random_fraction())).await;
    }
    let mut cycle: u64 = 0;
    while Instant::now() < deadline {
        let cycle_started = Instant::now();
        cycle += 1;
        let card = lane_card(&args.card_prefix, lane_number, cycle);
        scan_card(&mut connection, &topics, &lane, &card, timeout, &mut result).await?;
        if cycle % 100 < args.voucher_percent as u64 {
            request(
                &mut connection,
                topics.scan(&lane),
                b"LGV1:NOT-A-REAL-VOUCHER".to_vec(),
                timeout,
                &mut result,
            )
            .await?;
        }
        let receipt_id = format!("LG-{run_id}-{lane}-{cycle}");
        let line = |sku: &str, name: &str, qty: i64, unit_price: &str, amount: &str| LineMessage {
            unit_price: Some(unit_price.to_string()),
            ..LineMessage::new(sku, name, Qty::Pieces(qty), amount)
        };
        let receipt = ReceiptMessage::sale(
            &receipt_id,
            &lane,
            &jiff::Timestamp::now().to_string(),
            "EUR",
            "13.47",
            vec![
                line("4006381333931", "Pencil", 3, "1.49", "4.47"),
                line("4000417025005", "Coffee", 1, "9.00", "9.00"),
            ],
        );
        request(
            &mut connection,
            topics.receipt(&lane),
            receipt.to_json(),
            timeout,
            &mut result,
        )
        .await?;
        if cycle % 100 < args.return_percent as u64 {
            let ret = ReceiptMessage::sale(
                &format!("{receipt_id}-R"),
                &lane,
                &jiff::Timestamp::now().to_string(),
                "EUR",
                "1.49",
                vec![line("4006381333931", "Pencil", 1, "1.49", "1.49")],
            )
            .returning(&receipt_id);
            request(
                &mut connection,
                topics.receipt(&lane),
                ret.to_json(),
                timeout,
                &mut result,
            )
            .await?;
        }
        if let Some(interval) = interval {
            let this_interval = interval.mul_f64(0.5 + random_fraction());
            let elapsed = cycle_started.elapsed();
            if elapsed < this_interval {
                tokio::time::sleep(this_interval - elapsed).await;
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_have_valid_check_digits() {
        let card = card_number("299", 19);
        assert_eq!(card.len(), 13);
        assert!(card.starts_with("299"));
        assert_eq!(card, "2990000000194");
        assert_eq!(ean13_check_digit("400638133393"), 1);
    }
}
