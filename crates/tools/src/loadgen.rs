//! `loyalty-gateway loadgen`: simulated lanes against a running gateway over its MQTT broker.
//! Each lane is its own MQTT client (as each till is) and runs a closed loop of card scan,
//! receipt, and now and then a return or a voucher scan; every request waits for its answer on
//! the lane's response topic, which gives the answer latency. Before the measurement each lane
//! scans its cards once, so that measured scans identify known customers (`--fresh-cards`
//! measures enrollments instead). A relay client echoes messages through the broker without the
//! gateway, which measures the broker's own round-trip floor for the same path (till → broker →
//! client → broker → till): once before the lanes start (idle) and again while they run (the
//! broker and this process under the same load). With `--disk-floor-dir` the disk's own floor is
//! measured during the run too: a 4 KiB write and `fdatasync` every ~10 ms on that file system,
//! the least a durable answer costs there (a receipt is durable before its answer).

use loyalty_daemon::mqtt::Topics;
use loyalty_protocol::till::{LineMessage, Qty, ReceiptMessage};
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Options of `loyalty-gateway loadgen`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Broker URL (mqtt://host:port).
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// Topic prefix of the gateway (`loyalty/{store_id}`).
    #[arg(long, default_value = "loyalty/demo-store")]
    pub prefix: String,
    /// Number of simulated lanes.
    #[arg(long, default_value_t = 10)]
    pub lanes: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Cycles (card scan + receipt) per second per lane; 0: flat out, closed loop. Paced lanes
    /// start at a random moment of their first interval and jitter every interval by up to
    /// ±50%, as independent tills do (lanes that all fire in the same millisecond would
    /// measure the burst, not the gateway).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Card prefix of the program (cards are this prefix + digits + check digit, 13 digits).
    #[arg(long, default_value = "299")]
    pub card_prefix: String,
    /// Percent of receipts followed by a return of one line.
    #[arg(long, default_value_t = 10)]
    pub return_percent: u32,
    /// Percent of cycles that also scan a (forged) voucher.
    #[arg(long, default_value_t = 5)]
    pub voucher_percent: u32,
    /// PID of the gateway, for its RSS (found by name when not given).
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// Skip the broker floor measurement.
    #[arg(long)]
    pub no_floor: bool,
    /// Measure the disk's sync floor during the run in this directory (give the gateway's
    /// `storage.data_dir`): a 4 KiB write + `fdatasync` of a scratch file every ~10 ms.
    #[arg(long)]
    pub disk_floor_dir: Option<std::path::PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for one answer before counting a timeout.
    #[arg(long, default_value_t = 5)]
    pub answer_timeout_secs: u64,
    /// Measure with cards the gateway has never seen, so that most card scans enroll a new
    /// customer (a durable write each). By default every lane first scans each of its cards once,
    /// unmeasured, so that the measured scans identify known customers, as nearly all scans in a
    /// store do.
    #[arg(long)]
    pub fresh_cards: bool,
}

/// What a run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoadSummary {
    /// Lanes simulated.
    pub lanes: usize,
    /// Seconds measured.
    pub seconds: f64,
    /// Requests answered.
    pub answered: u64,
    /// Receipts answered with `points`.
    pub receipts: u64,
    /// Card scans answered `enrolled` (a new customer) during the measurement: 0 unless
    /// `--fresh-cards`.
    pub enrolled: u64,
    /// Answers of type `error`.
    pub error_answers: u64,
    /// Requests without an answer in time.
    pub timeouts: u64,
    /// Answers per second.
    pub throughput: f64,
    /// Answer latency percentiles in milliseconds: p50, p90, p99, max.
    pub latency_ms: Percentiles,
    /// Broker-only round trip over the same path, in milliseconds, measured before the lanes
    /// start (an idle machine).
    pub broker_floor_ms: Option<Percentiles>,
    /// The same round trip measured while the lanes run (a sample every ~20 ms): what the
    /// broker and this load generator cost under the same load, without the gateway.
    pub broker_floor_loaded_ms: Option<Percentiles>,
    /// A 4 KiB write + `fdatasync` in `--disk-floor-dir`, every ~10 ms during the run, in
    /// milliseconds: the disk's own floor under every receipt's answer.
    pub disk_sync_floor_ms: Option<Percentiles>,
    /// The gateway's resident memory in KiB (current, peak), when found.
    pub gateway_rss_kib: Option<(u64, u64)>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Samples.
    pub count: usize,
}

impl Percentiles {
    /// From samples (any order).
    pub fn of(samples: &mut [Duration]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort();
        let at = |q: f64| {
            let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[index].as_secs_f64() * 1000.0
        };
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
            count: samples.len(),
        }
    }
}

/// A uniformly distributed number in [0, 1) (for pacing only).
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::getrandom(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

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

fn broker_host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or_else(|| anyhow::anyhow!("--broker must be mqtt://host:port"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--broker must include a port"))?;
    Ok((host.to_string(), port.parse()?))
}

/// An MQTT client that plays a till (or a relay): publishes, and receives what it subscribed to.
pub struct Peer {
    /// The client, for publishing.
    pub client: AsyncClient,
    /// Messages received: (topic, payload).
    pub incoming: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    _poller: tokio::task::JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The poller owns the connection: without this it would keep reconnecting forever.
        self._poller.abort();
    }
}

/// Connects a peer with TCP_NODELAY and waits until its subscriptions are acknowledged.
pub async fn connect_peer(
    host: &str,
    port: u16,
    id: &str,
    subscribe: &[String],
) -> anyhow::Result<Peer> {
    let mut options = MqttOptions::new(id, host, port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (tx, incoming) = mpsc::unbounded_channel();
    let (ready_tx, ready) = tokio::sync::oneshot::channel::<()>();
    let wanted = subscribe.len();
    let poller = tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        let mut acked = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    acked += 1;
                    if acked >= wanted {
                        if let Some(done) = ready_tx.take() {
                            let _ = done.send(());
                        }
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) if wanted == 0 => {
                    if let Some(done) = ready_tx.take() {
                        let _ = done.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    for topic in subscribe {
        client.subscribe(topic.clone(), QoS::AtLeastOnce).await?;
    }
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .map_err(|_| anyhow::anyhow!("the broker at {host}:{port} did not answer"))??;
    Ok(Peer {
        client,
        incoming,
        _poller: poller,
    })
}

#[derive(Default)]
struct LaneResult {
    latencies: Vec<Duration>,
    answered: u64,
    receipts: u64,
    enrolled: u64,
    errors: u64,
    timeouts: u64,
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
async fn run_lane(
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

/// When an echo measurement stops.
enum EchoUntil {
    /// After this many answered echoes, one right after the other.
    Samples(usize),
    /// At this moment, with a pause of about `pause` (jittered ±50%) between echoes.
    Deadline { at: Instant, pause: Duration },
}

/// Measures the broker's round trip over the gateway's path without the gateway: a relay client
/// republishes every message it receives, and a sender times the echo.
async fn broker_floor(
    host: &str,
    port: u16,
    prefix: &str,
    until: EchoUntil,
) -> anyhow::Result<Percentiles> {
    let run = format!(
        "{}-{:x}-{:x}",
        std::process::id(),
        jiff::Timestamp::now().as_microsecond(),
        (random_fraction() * 1e9) as u64
    );
    let inbound = format!("{prefix}/loadgen/{run}/in");
    let outbound = format!("{prefix}/loadgen/{run}/out");
    let mut relay = connect_peer(
        host,
        port,
        &format!("loadgen-relay-{run}"),
        std::slice::from_ref(&inbound),
    )
    .await?;
    let relay_client = relay.client.clone();
    let relay_out = outbound.clone();
    let relay_task = tokio::spawn(async move {
        while let Some((_, payload)) = relay.incoming.recv().await {
            if relay_client
                .publish(relay_out.clone(), QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut sender = connect_peer(
        host,
        port,
        &format!("loadgen-echo-{run}"),
        std::slice::from_ref(&outbound),
    )
    .await?;
    let mut latencies = Vec::new();
    for i in 0.. {
        match until {
            EchoUntil::Samples(samples) if i >= samples => break,
            EchoUntil::Deadline { at, .. } if Instant::now() >= at => break,
            _ => {}
        }
        let started = Instant::now();
        sender
            .client
            .publish(
                inbound.clone(),
                QoS::AtLeastOnce,
                false,
                format!("{i}").into_bytes(),
            )
            .await?;
        if tokio::time::timeout(Duration::from_secs(5), sender.incoming.recv())
            .await
            .ok()
            .flatten()
            .is_some()
        {
            latencies.push(started.elapsed());
        }
        if let EchoUntil::Deadline { pause, .. } = until {
            tokio::time::sleep(pause.mul_f64(0.5 + random_fraction())).await;
        }
    }
    relay_task.abort();
    Ok(Percentiles::of(&mut latencies))
}

/// Times a 4 KiB write + `fdatasync` of a scratch file in `dir` every ~10 ms (jittered) until
/// `until`. The file is written in full and synced first, so that the measured syncs write data
/// only (no file growth, as in a preallocated log); it is removed afterwards.
fn disk_sync_floor(dir: &std::path::Path, until: Instant) -> anyhow::Result<Percentiles> {
    use std::os::unix::fs::FileExt;
    const BLOCK: usize = 4096;
    const BLOCKS: u64 = 1024;
    let path = dir.join(format!(".loadgen-disk-floor-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|err| anyhow::anyhow!("cannot create {}: {err}", path.display()))?;
    let measured = (|| -> anyhow::Result<Vec<Duration>> {
        let mut block = vec![0u8; BLOCK];
        for i in 0..BLOCKS {
            file.write_all_at(&block, i * BLOCK as u64)?;
        }
        file.sync_all()?;
        let mut samples = Vec::new();
        let mut i = 0u64;
        while Instant::now() < until {
            block[..8].copy_from_slice(&i.to_le_bytes());
            let started = Instant::now();
            file.write_all_at(&block, (i % BLOCKS) * BLOCK as u64)?;
            file.sync_data()?;
            samples.push(started.elapsed());
            i += 1;
            std::thread::sleep(Duration::from_millis(10).mul_f64(0.5 + random_fraction()));
        }
        Ok(samples)
    })();
    let _ = std::fs::remove_file(&path);
    Ok(Percentiles::of(&mut measured?))
}

/// Resident memory (current, peak) in KiB of `pid`.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Finds a running `loyalty-gateway run` process.
pub fn find_gateway_pid() -> Option<u32> {
    let own = std::process::id();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            if pid == own {
                return None;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_gateway = args
                .first()
                .is_some_and(|a| a.ends_with(b"loyalty-gateway"))
                && args.iter().any(|a| *a == b"run" || *a == b"demo");
            is_gateway.then_some(pid)
        })
}

/// Runs a load against the gateway and returns what it measured.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<LoadSummary> {
    let (host, port) = broker_host_port(&args.broker)?;
    let broker_floor_ms = if args.no_floor {
        None
    } else {
        Some(broker_floor(&host, port, &args.prefix, EchoUntil::Samples(300)).await?)
    };
    let run_id = format!("{:x}", jiff::Timestamp::now().as_millisecond());
    // Lanes connect (and enroll their cards) first; the measurement starts when all are ready.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(args.lanes + 1));
    let mut tasks = Vec::new();
    for lane in 0..args.lanes {
        tasks.push(tokio::spawn(run_lane(
            host.clone(),
            port,
            Topics::new(&args.prefix),
            format!("L{}", lane + 1),
            args.clone(),
            run_id.clone(),
            start.clone(),
        )));
    }
    start.wait().await;
    let started = Instant::now();
    let loaded_floor = (!args.no_floor).then(|| {
        let (host, prefix) = (host.clone(), args.prefix.clone());
        let until = EchoUntil::Deadline {
            at: started + Duration::from_secs(args.duration_secs),
            pause: Duration::from_millis(20),
        };
        tokio::spawn(async move { broker_floor(&host, port, &prefix, until).await })
    });
    let disk_floor = args.disk_floor_dir.clone().map(|dir| {
        let until = started + Duration::from_secs(args.duration_secs);
        tokio::task::spawn_blocking(move || disk_sync_floor(&dir, until))
    });
    let mut total = LaneResult::default();
    for task in tasks {
        let lane = task.await??;
        total.latencies.extend(lane.latencies);
        total.answered += lane.answered;
        total.receipts += lane.receipts;
        total.enrolled += lane.enrolled;
        total.errors += lane.errors;
        total.timeouts += lane.timeouts;
    }
    let seconds = started.elapsed().as_secs_f64();
    let broker_floor_loaded_ms = match loaded_floor {
        Some(task) => Some(task.await??),
        None => None,
    };
    let disk_sync_floor_ms = match disk_floor {
        Some(task) => Some(task.await??),
        None => None,
    };
    let pid = args.gateway_pid.or_else(find_gateway_pid);
    Ok(LoadSummary {
        lanes: args.lanes,
        seconds,
        answered: total.answered,
        receipts: total.receipts,
        enrolled: total.enrolled,
        error_answers: total.errors,
        timeouts: total.timeouts,
        throughput: total.answered as f64 / seconds.max(0.001),
        latency_ms: Percentiles::of(&mut total.latencies),
        broker_floor_ms,
        broker_floor_loaded_ms,
        disk_sync_floor_ms,
        gateway_rss_kib: pid.and_then(rss_kib),
    })
}

/// Prints a broker floor and what the gateway adds over it.
fn print_floor(label: &str, note: &str, over: &str, floor: &Percentiles, latency: &Percentiles) {
    println!(
        "{label} p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={}{note})",
        floor.p50, floor.p90, floor.p99, floor.max, floor.count
    );
    println!(
        "gateway adds     p50 {:.2} ms  p99 {:.2} ms  (over {over})",
        latency.p50 - floor.p50,
        latency.p99 - floor.p99
    );
}

/// Prints a summary for people.
pub fn print_summary(summary: &LoadSummary) {
    println!(
        "lanes {}  duration {:.1} s  answered {}  receipts {}  enrolled {}  error answers {}  timeouts {}",
        summary.lanes,
        summary.seconds,
        summary.answered,
        summary.receipts,
        summary.enrolled,
        summary.error_answers,
        summary.timeouts
    );
    println!("throughput       {:.0} answers/s", summary.throughput);
    let l = &summary.latency_ms;
    println!(
        "answer latency   p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={})",
        l.p50, l.p90, l.p99, l.max, l.count
    );
    if let Some(floor) = &summary.broker_floor_ms {
        print_floor("broker floor    ", "", "the idle floor", floor, l);
    }
    if let Some(floor) = &summary.broker_floor_loaded_ms {
        print_floor(
            "floor under load",
            ", during the run",
            "the floor under load",
            floor,
            l,
        );
    }
    if let Some(disk) = &summary.disk_sync_floor_ms {
        println!(
            "disk sync floor  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={}, 4 KiB + fdatasync, during the run)",
            disk.p50, disk.p90, disk.p99, disk.max, disk.count
        );
    }
    match summary.gateway_rss_kib {
        Some((rss, peak)) => println!("gateway RSS      {rss} KiB (peak {peak} KiB)"),
        None => println!("gateway RSS      (gateway process not found; pass --gateway-pid)"),
    }
}

/// Runs the load generator.
pub fn main(args: LoadgenArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    let json = args.json;
    let summary = runtime.block_on(run(args))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(ExitCode::SUCCESS)
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

    #[test]
    fn percentiles() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(p.count, 100);
        assert!((p.p50 - 51.0).abs() < 1.01);
        assert!((p.max - 100.0).abs() < 0.01);
    }
}
