//! `loyalty-gateway demo`: a whole simulated store on this machine, with no hardware, no broker
//! set up by hand and no CRM. It starts a private Mosquitto on a free port when one is
//! installed (otherwise it feeds the lanes in-process and says so), the reference CRM receiver
//! with a throw-away PKI, and the gateway on a temporary data directory; then plays a scripted
//! morning at the tills, explaining each step, keeps trading until Ctrl-C (or
//! `--duration-secs`), and ends with a summary.

pub mod broker;
pub mod pty;

use crate::loadgen::{self, Peer, Percentiles};
use loyalty_daemon::gateway::{self, GatewayHandle, StartOptions};
use loyalty_daemon::input::{Input, Origin, Unreadable};
use loyalty_daemon::mqtt::Topics;
use loyalty_protocol::till::{LineMessage, Qty, ReceiptMessage};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Demo options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// After the scripted story, keep trading this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Feed the lanes in-process even when Mosquitto is installed.
    #[arg(long)]
    pub no_broker: bool,
    /// Keep the demo's data directory (printed at the start) instead of deleting it.
    #[arg(long)]
    pub keep_data: bool,
}

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

const STORE_ID: &str = "demo-store";

fn say(text: &str) {
    println!("\n\x1b[1m▶ {text}\x1b[0m");
}

fn explain(text: &str) {
    println!("  {text}");
}

fn show_answer(answer: &Value) {
    let mut shown = answer.clone();
    if let Some(vouchers) = shown.get_mut("vouchers").and_then(Value::as_array_mut) {
        for voucher in vouchers {
            let bytes = voucher["escpos_base64"]
                .as_str()
                .map_or(0, |b| b.len() * 3 / 4);
            voucher["escpos_base64"] =
                Value::String(format!("<{bytes} bytes of ESC/POS for the printer>"));
            voucher["text"] = Value::String("<the QR text>".into());
        }
    }
    println!("    ← {shown}");
}

/// A lane as the demo drives it: over MQTT through the broker, or straight into the gateway.
enum Lanes {
    Mqtt(Peer, Topics),
    InProcess(Box<GatewayHandle>),
}

impl Lanes {
    /// Sends one message to a lane's topic and waits for `count` answers on that lane.
    async fn send(
        &mut self,
        lane: &str,
        kind: &str,
        payload: Vec<u8>,
        count: usize,
    ) -> (Vec<Value>, Duration) {
        let started = Instant::now();
        let mut answers = Vec::new();
        match self {
            Lanes::Mqtt(peer, topics) => {
                let topic = if kind == "scan" {
                    topics.scan(lane)
                } else {
                    topics.receipt(lane)
                };
                if peer
                    .client
                    .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    return (answers, started.elapsed());
                }
                while answers.len() < count {
                    match tokio::time::timeout(Duration::from_secs(10), peer.incoming.recv()).await
                    {
                        Ok(Some((topic, bytes))) if topics.response_lane(&topic) == Some(lane) => {
                            answers.push(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
                        }
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
            }
            Lanes::InProcess(handle) => {
                let input = if kind == "scan" {
                    Input::Scan {
                        lane: lane.to_string(),
                        data: loyalty_protocol::till::scan_payload(&payload),
                        origin: Origin::Mqtt,
                    }
                } else {
                    Input::Receipt {
                        lane: lane.to_string(),
                        receipt: loyalty_protocol::till::parse_receipt(&payload, lane, 2).map_err(
                            |e| Unreadable {
                                receipt_id: loyalty_protocol::till::readable_receipt_id(&payload),
                                message: e.to_string(),
                            },
                        ),
                        origin: Origin::Mqtt,
                        done: None,
                    }
                };
                for answer in
                    gateway::request(handle, input, lane, count, Duration::from_secs(10)).await
                {
                    answers.push(serde_json::to_value(&answer).unwrap_or(Value::Null));
                }
            }
        }
        (answers, started.elapsed())
    }
}

fn receipt_json(
    id: &str,
    lane: &str,
    lines: &[(&str, &str, i64, &str, &str)],
    card: Option<&str>,
) -> ReceiptMessage {
    let mut total = loyalty_core::money::Money::ZERO;
    let lines: Vec<LineMessage> = lines
        .iter()
        .map(|(sku, name, qty, amount, category)| {
            total = total + loyalty_core::money::Money::parse(amount, 2).unwrap_or_default();
            let mut line = LineMessage::new(sku, name, Qty::Pieces(*qty), amount);
            line.category = Some(category.to_string());
            line
        })
        .collect();
    let now = jiff::Timestamp::now().to_string();
    let mut receipt = ReceiptMessage::sale(id, lane, &now, "EUR", &total.format(2), lines);
    receipt.card = card.map(str::to_string);
    receipt
}

/// The printed receipt the demo's till sends to its serial printer (made by python-escpos,
/// see `tests/fixtures/escpos/make_fixtures.py`).
const PRINTED_RECEIPT: &[u8] = include_bytes!("../../../tests/fixtures/escpos/sale_cp858.bin");

/// The receipt profile that reads it (the example profile of `config/gateway.toml`).
const RECEIPT_PROFILE: &str = r#"
[receipt_profiles.example]
item_line = '^(?:(?P<sku>\d{8,14}) )?(?P<name>\S.*?)\s{2,}(?P<amount>-?\d{1,3}(?:\.\d{3})*,\d{2}-?) [AB]$'
qty_line = '^\s+(?P<qty>\d+(?:,\d{1,3})?)(?: kg)? x (?P<unit_price>\d+,\d{2})'
total = '^SUMME EUR\s+(?P<total>-?\d{1,3}(?:\.\d{3})*,\d{2})$'
receipt_id = '^Bon-Nr\.:\s*(?P<receipt_id>\d+)'
receipt_id_format = "{lane}-{receipt_id}"
date = '^Datum:\s*(?P<date>\d{2}\.\d{2}\.\d{4})\s+(?P<time>\d{2}:\d{2})'
date_format = "%d.%m.%Y"
time_format = "%H:%M"
card = '^Kundenkarte:\s*(?P<card>\d{8,19})$'
return_marker = '^RÜCKGABE zu Bon-Nr\.\s*(?P<original>\d+)'
ignore = ['^MwSt ', '^Zwischensumme']
decimal_separator = ","
"#;

fn serial_tap_config(till_side: &Path, printer_side: &Path) -> String {
    format!(
        "[[serial]]\nname = \"lane5-printer\"\nkind = \"escpos\"\npath = \"{}\"\nprinter_path = \"{}\"\n\
         lane = \"5\"\nbaud = 38400\nprofile = \"example\"\ncode_page = \"cp858\"\nidle_gap_ms = 1000\n{RECEIPT_PROFILE}",
        till_side.display(),
        printer_side.display()
    )
}

fn demo_config(data_dir: &Path, broker_port: Option<u16>, crm: &str) -> String {
    // Keep in step with `config/gateway.toml`: the same sections, demo-sized values.
    let mqtt = match broker_port {
        Some(port) => format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nreconnect_min_ms = 50\n"),
        None => "[mqtt]\nenabled = false\n".into(),
    };
    format!(
        r#"[store]
id = "{STORE_ID}"
name = "Demo store"
timezone = "Europe/Berlin"
currency = "EUR"
# This machine may not run NTP; the clock is then judged by its floor alone.
require_ntp_sync = false

[storage]
data_dir = "{data}"

{mqtt}
[cards]
prefixes = ["299"]

[rules]
points_per_unit = 1
per_amount = "1.00"
categories = ["food", "fresh", "drugstore", "stationery", "books", "tobacco", "deposit"]
excluded_categories = ["tobacco", "deposit"]
excluded_gtin_prefixes = ["978", "979"]

[rules.category_multipliers]
fresh = "2"

[rewards]
signing_key_file = "{key}"
# Generous for a demo: every 30 points become a 3.00 voucher.
rules = [{{ every_points = 30, value = "3.00", validity_days = 30 }}]

{crm}
{tap}
[http]
enabled = false
"#,
        data = data_dir.join("gateway").display(),
        key = data_dir.join("voucher-signing.key").display(),
        tap = serial_tap_config(&data_dir.join("till-side"), &data_dir.join("printer-side"))
    )
}

struct Recorder {
    latencies: Vec<Duration>,
}

impl Recorder {
    async fn scan(
        &mut self,
        lanes: &mut Lanes,
        lane: &str,
        text: &[u8],
        answers: usize,
    ) -> Vec<Value> {
        self.step(lanes, lane, "scan", text.to_vec(), answers).await
    }

    async fn receipt(
        &mut self,
        lanes: &mut Lanes,
        lane: &str,
        receipt: &ReceiptMessage,
    ) -> Vec<Value> {
        self.step(lanes, lane, "receipt", receipt.to_json(), 1)
            .await
    }

    async fn step(
        &mut self,
        lanes: &mut Lanes,
        lane: &str,
        kind: &str,
        payload: Vec<u8>,
        count: usize,
    ) -> Vec<Value> {
        let shown = String::from_utf8_lossy(&payload);
        let shown: String = shown.chars().take(110).collect();
        println!("    → lane {lane} {kind}: {shown}");
        let (answers, elapsed) = lanes.send(lane, kind, payload, count).await;
        if !answers.is_empty() {
            self.latencies.push(elapsed);
        }
        for answer in &answers {
            show_answer(answer);
        }
        answers
    }
}

async fn story(lanes: &mut Lanes, recorder: &mut Recorder) {
    say("Lane 1: a customer scans her loyalty card (EAN-13 barcode with AIM prefix ]E0)");
    explain("The card 2990000000019 is in the program's range (prefix 299) but unknown here,");
    explain("so the gateway enrolls her offline and answers at once.");
    recorder.scan(lanes, "1", b"]E02990000000019", 1).await;

    say("Lane 1: the till sends the receipt as JSON over MQTT");
    explain("Fresh produce earns double; tobacco and bottle deposits earn nothing. The receipt is");
    explain("fsynced to disk before the lane hears 'points'.");
    let receipt = receipt_json(
        "D-1001",
        "1",
        &[
            ("4011", "Bananas", 2, "3.98", "fresh"),
            ("4006381333931", "Pencils", 3, "4.47", "stationery"),
            (
                "9780140449136",
                "Book (ISBN, excluded)",
                1,
                "12.00",
                "books",
            ),
            ("40084963", "Cigarettes", 1, "8.00", "tobacco"),
            ("PFAND", "Deposit", 6, "1.50", "deposit"),
        ],
        None,
    );
    recorder.receipt(lanes, "1", &receipt).await;

    say("Lane 1: the till's network hiccups and it sends the same receipt again");
    explain("Same receipt id: the same answer, marked duplicate, and no new points.");
    recorder.receipt(lanes, "1", &receipt).await;

    say("Lane 2: a card swiped through the magnetic stripe reader (track 2)");
    recorder
        .scan(lanes, "2", b";2990000000026=49120000000?", 1)
        .await;
    let receipt2 = receipt_json(
        "D-2001",
        "2",
        &[
            ("4000417025005", "Coffee", 2, "17.98", "food"),
            ("4005808262946", "Shampoo", 1, "3.45", "drugstore"),
        ],
        None,
    );
    recorder.receipt(lanes, "2", &receipt2).await;

    say("Lane 3: the customer shows the app's QR card on her phone");
    recorder
        .scan(
            lanes,
            "3",
            b"]Q1https://app.example.com/card/2990000000033",
            1,
        )
        .await;
    let receipt3 = receipt_json(
        "D-3001",
        "3",
        &[
            ("2000000000022", "Cheese", 1, "6.40", "fresh"),
            ("4001686301265", "Bread", 1, "2.99", "food"),
        ],
        None,
    );
    recorder.receipt(lanes, "3", &receipt3).await;

    say("Lane 3: a bigger shop crosses the reward threshold: a voucher is issued");
    explain(
        "Every 30 points become a 3.00 voucher. The points are converted by a ledger entry and",
    );
    explain(
        "the voucher is stored durably before the lane hears of it; the till prints its QR code.",
    );
    let receipt3b = receipt_json(
        "D-3002",
        "3",
        &[
            ("4011", "Bananas", 3, "5.97", "fresh"),
            ("4000417025005", "Coffee", 1, "8.99", "food"),
        ],
        Some("2990000000033"),
    );
    let answers = recorder.receipt(lanes, "3", &receipt3b).await;
    let voucher_text = answers
        .first()
        .and_then(|a| a["vouchers"][0]["text"].as_str())
        .map(str::to_string);
    let voucher_id = answers
        .first()
        .and_then(|a| a["vouchers"][0]["voucher_id"].as_str())
        .map(str::to_string);
    if let (Some(text), Some(id)) = (voucher_text, voucher_id) {
        explain("The voucher's QR code as the customer's phone or the receipt shows it:");
        match loyalty_daemon::render::terminal(&text, true) {
            Ok(art) => println!("{art}"),
            Err(err) => explain(&format!("(cannot draw the QR code: {err})")),
        }
        say("Lane 1: the customer comes back, shows her card and the voucher");
        explain(
            "The voucher is bound to her, so the lane identifies her first; the gateway checks",
        );
        explain(
            "the Ed25519 signature offline, the validity window and the binding, and reserves it.",
        );
        recorder.scan(lanes, "1", b"]E02990000000033", 1).await;
        recorder
            .step(lanes, "1", "scan", text.clone().into_bytes(), 1)
            .await;
        explain("The till applies the discount and names the voucher in the receipt: redeemed, durably.");
        let mut receipt = receipt_json(
            "D-1002",
            "1",
            &[("4000417025005", "Coffee", 1, "8.99", "food")],
            None,
        );
        receipt.rewards = vec![id.to_string()];
        recorder.receipt(lanes, "1", &receipt).await;
        say("Lane 2: someone tries the same voucher again");
        recorder
            .step(lanes, "2", "scan", text.into_bytes(), 1)
            .await;
    } else {
        explain("(no voucher was issued: check [rewards] in the demo configuration)");
    }

    say("Lane 4: a receipt without a card, then the card is scanned right after");
    explain("Within the configured window the card attaches to the receipt retroactively.");
    let receipt4 = receipt_json(
        "D-4001",
        "4",
        &[("4001686301265", "Bread", 2, "5.98", "food")],
        None,
    );
    recorder.receipt(lanes, "4", &receipt4).await;
    recorder.scan(lanes, "4", b"2990000000019", 2).await;

    say("Lane 2: a return: the customer brings the coffee back");
    explain("Points are clawed back in proportion to what was returned, never more than earned.");
    let ret = receipt_json(
        "D-2001-R",
        "2",
        &[("4000417025005", "Coffee", 2, "17.98", "food")],
        None,
    )
    .returning("D-2001");
    recorder.receipt(lanes, "2", &ret).await;

    say("Bad input gets a clear error answer, never silence");
    recorder
        .step(
            lanes,
            "3",
            "receipt",
            b"{\"receipt_id\": \"D-9\", \"total\": ".to_vec(),
            1,
        )
        .await;
    recorder.scan(lanes, "3", b"]E02990000000010", 1).await;
    recorder
        .scan(lanes, "3", b";4111111111111111=2912?", 1)
        .await;
}

/// Lane 5's till prints a receipt on its serial printer; the gateway passes every byte through
/// and reads the receipt from the printed text.
/// Returns the till's and the printer's ends of the pseudo-terminals: the caller keeps them
/// open until the demo ends (a closed till side is an unplugged device to the tap, which would
/// report it down in the middle of the demo).
async fn printer_tap(
    handle: &GatewayHandle,
    till_side: pty::Pty,
    printer_side: pty::Pty,
) -> Vec<std::fs::File> {
    use std::io::{Read, Write};
    say("Lane 5: a till without MQTT prints its receipt on a serial printer; the gateway taps the line");
    explain(
        "python-escpos made these bytes: code page 858 (€, umlauts), bold, a barcode, a QR code,",
    );
    explain(
        "the paper cut. The gateway passes every byte to the printer and parses the printed text.",
    );
    let mut answers = handle.answers.subscribe();
    // Wait until the serial edge has opened both sides before the till starts printing.
    let devices = handle.devices.clone();
    let is_up = || {
        devices
            .lock()
            .map(|d| d.get("lane5-printer").is_some_and(|s| s.up))
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !is_up() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !is_up() {
        let detail = devices
            .lock()
            .ok()
            .and_then(|d| d.get("lane5-printer").map(|s| s.detail.clone()))
            .unwrap_or_else(|| "not opened".into());
        explain(&format!(
            "(the serial tap could not open its pseudo-terminals: {detail}; skipped. Serial ports \
             do not work under qemu-user)"
        ));
        return Vec::new();
    }
    let expected = PRINTED_RECEIPT.len();
    let reader = tokio::task::spawn_blocking(move || {
        let mut printer = printer_side.master;
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        while received.len() < expected {
            match printer.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
        (received, printer)
    });
    let mut till = till_side.master;
    if let Err(err) = till.write_all(PRINTED_RECEIPT) {
        explain(&format!("(cannot write to the till side: {err})"));
        return vec![till];
    }
    println!(
        "    → lane 5 printer stream: {} bytes of ESC/POS",
        PRINTED_RECEIPT.len()
    );
    let mut keep_open = vec![till];
    match tokio::time::timeout(Duration::from_secs(5), reader).await {
        Ok(Ok((received, printer))) => {
            keep_open.push(printer);
            if received == PRINTED_RECEIPT {
                explain(&format!(
                    "The printer received all {} bytes unchanged.",
                    received.len()
                ));
            } else {
                explain(&format!(
                    "(the printer received {} of {} bytes)",
                    received.len(),
                    PRINTED_RECEIPT.len()
                ));
            }
        }
        _ => explain("(the printer side did not receive the stream in time)"),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(answer)) = tokio::time::timeout_at(deadline, answers.recv()).await {
        if answer.lane() == "5" {
            show_answer(&serde_json::to_value(&answer).unwrap_or(Value::Null));
            break;
        }
    }
    keep_open
}

/// Keeps the store trading until `stop` fires: each lane scans a card and sends a receipt.
async fn keep_trading(lanes: &mut Lanes, recorder: &mut Recorder, stop: &CancellationToken) -> u64 {
    let mut cycle = 0u64;
    while !stop.is_cancelled() {
        cycle += 1;
        let lane = format!("{}", 1 + cycle % 4);
        let card = loadgen::card_number("299", 100 + cycle % 40);
        let started = Instant::now();
        let (answers, elapsed) = lanes
            .send(&lane, "scan", format!("]E0{card}").into_bytes(), 1)
            .await;
        if !answers.is_empty() {
            recorder.latencies.push(elapsed);
        }
        let receipt = receipt_json(
            &format!("T-{cycle}"),
            &lane,
            &[
                ("4011", "Bananas", 1, "1.99", "fresh"),
                ("4001686301265", "Bread", 1, "2.99", "food"),
            ],
            None,
        );
        let (answers, elapsed) = lanes.send(&lane, "receipt", receipt.to_json(), 1).await;
        if !answers.is_empty() {
            recorder.latencies.push(elapsed);
        }
        // A relaxed pace for people watching: a few receipts a second.
        let pause = Duration::from_millis(200).saturating_sub(started.elapsed());
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => {}
        }
    }
    cycle
}

async fn run(args: DemoArgs) -> anyhow::Result<DemoSummary> {
    let dir = std::env::temp_dir().join(format!("loyalty-gateway-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "loyalty-gateway demo: a simulated store on this machine (data in {})",
        dir.display()
    );

    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            println!("\n(Ctrl-C: finishing up)");
            shutdown.cancel();
        });
    }

    say("Starting the store's MQTT broker");
    let broker = if args.no_broker {
        explain("--no-broker: the lanes talk to the gateway in-process.");
        None
    } else {
        match broker::Mosquitto::start(&dir.join("mosquitto")) {
            Ok(broker) => {
                explain(&format!(
                    "A private Mosquitto on 127.0.0.1:{} with persistence, as on a store box.",
                    broker.port
                ));
                Some(broker)
            }
            Err(err) => {
                explain(&format!(
                    "No broker ({err}); the lanes talk to the gateway in-process."
                ));
                explain("Install mosquitto (apt-get install mosquitto) to see the MQTT path too.");
                None
            }
        }
    };

    let till_side = pty::Pty::open(&dir.join("till-side"))?;
    let printer_side = pty::Pty::open(&dir.join("printer-side"))?;
    say("Starting the gateway");
    loyalty_daemon::vouchers::keyfile::generate(&dir.join("voucher-signing.key"))?;
    explain("A fresh Ed25519 voucher signing key for this store (mode 0600).");
    say("Starting the reference CRM receiver (mutual TLS)");
    let pki = crate::certs::write_local_pki(&dir, STORE_ID)?;
    let crm = crate::crm_reference::serve(crate::crm_reference::ReferenceConfig {
        listen: "127.0.0.1:0".parse()?,
        cert_file: pki.server_cert_file.clone(),
        key_file: pki.server_key_file.clone(),
        client_ca_file: pki.ca_file.clone(),
        data_dir: None,
        fsync: false,
        faults: Default::default(),
    })
    .await?;
    explain(&format!(
        "{} with a throw-away CA; the store authenticates with its own client certificate.",
        crm.url()
    ));
    explain(
        "It is the repository's reference receiver for integrators, not a CRM: it deduplicates",
    );
    explain("events by id and acknowledges them with acked_through.");
    let crm_section = format!(
        "[crm]\nenabled = true\nurl = \"{url}\"\nclient_cert_file = \"{cert}\"\nclient_key_file = \"{key}\"\n\
         ca_file = \"{ca}\"\nbatch_max_age_ms = 50\npoll_interval_secs = 1\nbackoff_min_ms = 100\nbackoff_max_ms = 2000\n",
        url = crm.url(),
        cert = pki.client_cert_file.display(),
        key = pki.client_key_file.display(),
        ca = pki.ca_file.display()
    );
    let config_text = demo_config(&dir, broker.as_ref().map(|b| b.port), &crm_section);
    let built = loyalty_daemon::config::parse_built(&config_text).map_err(|errors| {
        anyhow::anyhow!(
            "demo configuration invalid: {}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let topics = Topics::new(&built.raw.topic_prefix());
    let handle = gateway::start(
        built,
        StartOptions {
            mqtt: broker.is_some(),
        },
        shutdown.clone(),
    )
    .await?;
    explain(&format!(
        "Store data in sled with group commit + fsync; answers on {}.",
        topics.response("N")
    ));
    explain(&format!(
        "Lane 5's receipt printer is tapped inline on a serial line: {} (till) -> gateway -> {} (printer).",
        till_side.link.display(),
        printer_side.link.display()
    ));

    let mut lanes = match &broker {
        Some(broker) => {
            let mut status = handle.broker.clone();
            let _ = tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.connected))
                .await;
            let peer = loadgen::connect_peer(
                "127.0.0.1",
                broker.port,
                "demo-tills",
                &[topics.responses()],
            )
            .await?;
            Lanes::Mqtt(peer, topics.clone())
        }
        None => Lanes::InProcess(Box::new(handle.clone())),
    };

    let mut recorder = Recorder {
        latencies: Vec::new(),
    };
    story(&mut lanes, &mut recorder).await;
    // The till and the printer stay switched on until the demo ends.
    let _lane5_devices = printer_tap(&handle, till_side, printer_side).await;

    let trading_stop = shutdown.child_token();
    match args.duration_secs {
        Some(0) => {}
        Some(secs) => {
            say(&format!("The store keeps trading for {secs} s"));
            let stop = trading_stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                stop.cancel();
            });
            let cycles = keep_trading(&mut lanes, &mut recorder, &trading_stop).await;
            explain(&format!("{cycles} more customers served."));
        }
        None => {
            say("The store keeps trading: press Ctrl-C to stop and see the summary");
            let cycles = keep_trading(&mut lanes, &mut recorder, &trading_stop).await;
            explain(&format!("{cycles} more customers served."));
        }
    }

    say("Checking the ledger: replaying the hash-chained journal");
    let store = handle.store.clone();
    let report = tokio::task::spawn_blocking(move || store.verify()).await??;
    let ledger_verified = report.is_consistent();
    explain(&format!("{report}"));

    say("Syncing with the CRM");
    explain("Every receipt, ledger entry, enrolment and voucher event goes to the CRM in order,");
    explain("gzip-compressed over TLS 1.3; the store advances only on the CRM's acknowledgement.");
    let stats = {
        let store = handle.store.clone();
        tokio::task::spawn_blocking(move || store.outbox_stats()).await??
    };
    handle.sync.nudge();
    let deadline = Instant::now() + Duration::from_secs(20);
    while crm.acked_through(STORE_ID) < stats.last_seq && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    explain(&format!(
        "The CRM holds {} distinct events, acknowledged through sequence {} of {}.",
        crm.received_count(STORE_ID),
        crm.acked_through(STORE_ID),
        stats.last_seq
    ));
    let counters = &handle.counters;
    let summary = DemoSummary {
        via_mqtt: broker.is_some(),
        receipts: counters.receipts.load(Ordering::Relaxed),
        duplicates: counters.duplicates.load(Ordering::Relaxed),
        points: counters.points.load(Ordering::Relaxed),
        enrolled: counters.enrolled.load(Ordering::Relaxed),
        error_answers: counters.errors.load(Ordering::Relaxed),
        vouchers_issued: counters.vouchers_issued.load(Ordering::Relaxed),
        vouchers_redeemed: counters.vouchers_redeemed.load(Ordering::Relaxed),
        events_written: stats.last_seq,
        events_acknowledged: crm.received_count(STORE_ID) as u64,
        latency_ms: Percentiles::of(&mut recorder.latencies),
        ledger_verified,
    };
    shutdown.cancel();
    crm.shutdown().await;
    drop(lanes);
    drop(broker);
    if !args.keep_data {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(summary)
}

fn print_summary(summary: &DemoSummary) {
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

/// Runs the demo.
pub fn main(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    let summary_path = args.summary_json.clone();
    let summary = runtime.block_on(run(args))?;
    print_summary(&summary);
    if let Some(path) = summary_path {
        std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)?;
    }
    Ok(if summary.ledger_verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
