//! End to end, shaped like a peer comparison (issue 19): an open-loop raw-socket publisher
//! (QoS 1, `testkit::flood`) offers receipts on 8 lanes at fixed rates (1,000/s, 5,000/s, flat
//! out) through a real Mosquitto to the release gateway, which applies each durably, answers the
//! lane and uploads it to the reference CRM (mutual TLS, every batch fsynced). Answers are
//! collected on their own connection. Reported per step: offered and delivered answers/s,
//! answer latency p50/p99 (publish to answer, broker queueing included), CRM receipt events/s,
//! lost and duplicated (at the lanes and at the CRM), the gateway's peak RSS and its CPU per
//! receipt (utime + stime from `/proc/<pid>/stat`). Each step starts a fresh gateway and CRM.
//! `scripts/peer-thingsboard.sh` runs the ThingsBoard IoT Gateway through the same load.
//!
//! Run: `cargo bench --bench e2e` (`E2E_SECS` seconds offered per step, default 10;
//! `E2E_RATES="1000,5000,0"`, 0 = flat out; `LOYALTY_GATEWAY_BIN` to measure another build).

use loyalty_tools::crm_reference::{self, Faults, ReferenceConfig};
use loyalty_tools::loadgen::{rss_kib, Percentiles};
use loyalty_tools::testkit::{self as harness, crm::Pki, flood, GatewayBinary};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const LANES: usize = 8;
const STORE: &str = harness::crm::STORE;

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf with a valid name has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

fn config(dir: &std::path::Path, broker: u16, pki: &Pki, crm_url: &str) -> String {
    format!(
        r#"[store]
id = "{STORE}"
timezone = "Europe/Berlin"
require_ntp_sync = false
[storage]
data_dir = "{data}"
[mqtt]
url = "mqtt://127.0.0.1:{broker}"
[cards]
prefixes = ["299"]
[crm]
enabled = true
url = "{crm_url}"
client_cert_file = "{cert}"
client_key_file = "{key}"
ca_file = "{ca}"
[http]
enabled = false
"#,
        data = dir.join("data").display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
        ca = pki.ca_file.display(),
    )
}

struct Step {
    offered: f64,
    delivered: f64,
    latency: Percentiles,
    crm_per_second: f64,
    lost: usize,
    duplicated: usize,
    crm_lost: usize,
    crm_duplicates: u64,
    rss_peak_kib: u64,
    cpu_us_per_receipt: f64,
}

fn run_step(runtime: &tokio::runtime::Runtime, rate: Option<f64>, seconds: u64) -> Step {
    let broker = harness::Mosquitto::start();
    let pki = Pki::new();
    let crm_dir = tempfile::tempdir().expect("tempdir");
    let crm = runtime.block_on(async {
        crm_reference::serve(ReferenceConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            cert_file: pki.server_cert.clone(),
            key_file: pki.server_key.clone(),
            client_ca_file: pki.ca_file.clone(),
            data_dir: Some(crm_dir.path().to_path_buf()),
            fsync: true,
            faults: Faults::default(),
        })
        .await
        .expect("reference CRM")
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway")).start(
        dir.path(),
        &config(dir.path(), broker.port, &pki, &crm.url()),
    );
    let pid = gateway.pid().expect("gateway running");
    runtime.block_on(harness::wait_online(broker.port, "loyalty/S042"));
    let mut till = runtime.block_on(harness::Till::connect(
        broker.port,
        "loyalty/S042",
        "e2e-answers",
    ));
    // Flat out: as many receipts as the 5,000/s step, written as fast as the broker takes them.
    let total = (rate.unwrap_or(5_000.0) * seconds as f64) as usize;
    let offer = flood::Offer {
        prefix: "loyalty/S042".into(),
        lanes: LANES,
        per_second: rate,
        total,
        first: 0,
        client_id: "e2e-publisher".into(),
    };
    let cpu_before = cpu_seconds(pid);
    let port = broker.port;
    let publisher = std::thread::spawn(move || flood::publish(port, &offer));
    let mut answers: Vec<(Instant, String)> = Vec::with_capacity(total);
    runtime.block_on(async {
        while answers.len() < total {
            match till.try_next(Duration::from_secs(20)).await {
                Some(answer) => answers.push((
                    Instant::now(),
                    answer["receipt_id"].as_str().unwrap_or("").to_string(),
                )),
                None => break,
            }
        }
    });
    let sent_at = publisher.join().expect("publisher");
    let first = sent_at[0];
    let offered_for = sent_at[sent_at.len() - 1].duration_since(first);
    // The CRM's copy: wait until its count of events stops growing (2 s without a new one).
    let mut count = crm.received_count(STORE);
    let mut crm_done = Instant::now();
    let crm_deadline = Instant::now() + Duration::from_secs(120);
    while crm_done.elapsed() < Duration::from_secs(2) && Instant::now() < crm_deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = crm.received_count(STORE);
        if now != count {
            count = now;
            crm_done = Instant::now();
        }
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    let rss_peak_kib = rss_kib(pid).map(|(_, peak)| peak).unwrap_or(0);
    let mut distinct = HashSet::new();
    let mut latencies = Vec::with_capacity(answers.len());
    let mut duplicated = 0;
    for (at, id) in &answers {
        if !distinct.insert(id.clone()) {
            duplicated += 1;
            continue;
        }
        if let Some(index) = id.strip_prefix("R-").and_then(|i| i.parse::<usize>().ok()) {
            if let Some(sent) = sent_at.get(index) {
                latencies.push(at.duration_since(*sent));
            }
        }
    }
    let last_answer = answers.last().map(|(at, _)| *at).unwrap_or(first);
    let at_crm = crm
        .received(STORE)
        .iter()
        .filter(|e| e.kind == "receipt")
        .count();
    let stats = crm.stats();
    drop(gateway);
    Step {
        offered: total as f64 / offered_for.as_secs_f64().max(0.001),
        delivered: distinct.len() as f64
            / last_answer.duration_since(first).as_secs_f64().max(0.001),
        latency: Percentiles::of(&mut latencies),
        crm_per_second: at_crm as f64 / crm_done.duration_since(first).as_secs_f64().max(0.001),
        lost: total - distinct.len(),
        duplicated,
        crm_lost: total.saturating_sub(at_crm),
        crm_duplicates: stats.duplicates,
        rss_peak_kib,
        cpu_us_per_receipt: cpu * 1e6 / distinct.len().max(1) as f64,
    }
}

fn main() {
    let seconds: u64 = std::env::var("E2E_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rates: Vec<Option<f64>> = std::env::var("E2E_RATES")
        .unwrap_or_else(|_| "1000,5000,0".into())
        .split(',')
        .filter_map(|r| r.trim().parse::<f64>().ok())
        .map(|r| (r > 0.0).then_some(r))
        .collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    println!("e2e: {LANES} lanes, QoS 1 open loop, {seconds} s offered per step; reference CRM with fsync; latency = publish to answer (broker queueing included)");
    println!("offered/s  answers/s   p50 ms    p99 ms  CRM receipts/s  lost dup  CRM lost CRM dup  RSS peak KiB  CPU us/receipt");
    for rate in rates {
        let s = run_step(&runtime, rate, seconds);
        println!(
            "{:>9.0} {:>10.0} {:>8.1} {:>9.1} {:>15.0} {:>5} {:>3} {:>9} {:>7} {:>13} {:>15.0}",
            s.offered,
            s.delivered,
            s.latency.p50,
            s.latency.p99,
            s.crm_per_second,
            s.lost,
            s.duplicated,
            s.crm_lost,
            s.crm_duplicates,
            s.rss_peak_kib,
            s.cpu_us_per_receipt
        );
    }
}
