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

mod floors;
mod lanes;
mod peer;
mod report;

pub use lanes::card_number;
pub use peer::{connect_peer, Peer};
pub use report::{find_gateway_pid, print_summary, rss_kib, Percentiles};

use floors::{broker_floor, disk_sync_floor, EchoUntil};
use lanes::{run_lane, LaneResult};
use loyalty_daemon::mqtt::Topics;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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

/// A uniformly distributed number in [0, 1) (for pacing only).
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::getrandom(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
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
