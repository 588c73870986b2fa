//! Store benchmark: durable receipts per second with 1, 8 and 64 concurrent submitters (p50/p99
//! latency per receipt, fsyncs per receipt, CPU and log bytes per receipt, how busy the one
//! batch leader and the group commit were), peak RSS, and the database size on disk after
//! 1,000,000 events went through the outbox (acknowledged and compacted), before and after the
//! offline compaction at open.
//!
//! Peak RSS is reported per section (VmHWM reset before each; see `reset_hwm` for its limits).
//!
//! Run: `cargo bench --bench store` (all), or `cargo bench --bench store -- throughput` /
//! `-- outbox`; `STORE_SUBMITTERS=64` runs only those submitter counts (comma-separated). The
//! database lives under `$CARGO_TARGET_DIR` (a real disk, not tmpfs).

use loyalty_store::events::EventType;
use loyalty_store::Store;
use loyalty_tools::testkit::store::*;
use std::time::{Duration, Instant};

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    std::fs::create_dir_all(&base).expect("bench base dir");
    tempfile::tempdir_in(base).expect("bench dir")
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) of the whole process so far, in seconds.
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Bytes this process has handed to `write`-like calls so far (`wchar` of /proc/self/io: sled's
/// log writes, including the zeroes of each new segment).
fn process_written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|line| line.strip_prefix("wchar: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the process's peak RSS (VmHWM) to the current RSS (Linux >= 4.0) before a section.
/// The new baseline still holds what earlier sections left in the allocator's arenas (stores
/// opened and dropped, 64 submitter threads); run a section alone (`-- outbox`) for its own
/// figure.
fn reset_hwm() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Run {
    per_sec: f64,
    cpu_us_per_receipt: f64,
    written_kib_per_receipt: f64,
    leader_busy: f64,
    leader_cpu_us_per_receipt: f64,
    receipts_per_batch: f64,
    sync_busy: f64,
    p50: Duration,
    p99: Duration,
    fsyncs_per_receipt: f64,
    commits: u64,
}

fn throughput_run(submitters: usize, duration: Duration) -> Run {
    let dir = bench_dir();
    let store = open(dir.path());
    let policy = Policy::default();
    let customers: Vec<String> = (0..1000)
        .map(|n| {
            store
                .enroll(&format!("299{n:010}"), now())
                .expect("enroll")
                .id
        })
        .collect();
    let before = store.durability_stats();
    let batches_before = store.batch_stats();
    let cpu_before = process_cpu_secs();
    let written_before = process_written_bytes();
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..submitters)
            .map(|t| {
                let store = store.clone();
                let policy = &policy;
                let customers = &customers;
                s.spawn(move || {
                    let mut lat = Vec::new();
                    let mut n = 0usize;
                    while started.elapsed() < duration {
                        let receipt = sale(
                            &format!("B{t}-{n}"),
                            vec![
                                line("4006381333931", 298, Some("stationery")),
                                line("1", 1250, None),
                            ],
                        );
                        let customer = &customers[(t * 7919 + n) % customers.len()];
                        let one = Instant::now();
                        store
                            .apply_receipt(&receipt, Some(customer), policy, now())
                            .expect("apply");
                        lat.push(one.elapsed());
                        n += 1;
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("submitter"))
            .collect()
    });
    let elapsed = started.elapsed();
    let cpu = process_cpu_secs() - cpu_before;
    let after = store.durability_stats();
    let batches = store.batch_stats();
    latencies.sort();
    let count = latencies.len();
    let pct = |p: f64| latencies[((count as f64 * p) as usize).min(count - 1)];
    Run {
        per_sec: count as f64 / elapsed.as_secs_f64(),
        cpu_us_per_receipt: cpu * 1e6 / count as f64,
        written_kib_per_receipt: (process_written_bytes() - written_before) as f64
            / 1024.0
            / count as f64,
        leader_busy: (batches.leading_nanos - batches_before.leading_nanos) as f64
            / 1e9
            / elapsed.as_secs_f64(),
        leader_cpu_us_per_receipt: (batches.leading_cpu_nanos - batches_before.leading_cpu_nanos)
            as f64
            / 1e3
            / count as f64,
        receipts_per_batch: (batches.receipts - batches_before.receipts) as f64
            / (batches.batches - batches_before.batches).max(1) as f64,
        sync_busy: (after.sync_nanos - before.sync_nanos) as f64 / 1e9 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        fsyncs_per_receipt: (after.fsyncs - before.fsyncs) as f64 / count as f64,
        commits: after.commits - before.commits,
    }
}

/// The submitter counts to run: `STORE_SUBMITTERS="64"` (comma-separated) or 1, 8 and 64.
fn submitter_counts() -> Vec<usize> {
    match std::env::var("STORE_SUBMITTERS") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("STORE_SUBMITTERS: comma-separated counts")
            })
            .collect(),
        Err(_) => vec![1, 8, 64],
    }
}

/// Returns the peak RSS (KiB) seen.
fn throughput() -> u64 {
    println!(
        "durable receipts (apply_receipt incl. flush + fsync), 3 runs of 4 s each, median run:"
    );
    println!(
        "(cpu: process CPU time per receipt; written: bytes handed to the log file per receipt; leader busy: share of the time a batch leader was applying (one at a time), leader cpu: its CPU time per receipt; sync busy: share of the time a group commit was flushing + fsyncing)"
    );
    println!("submitters  receipts/s   p50 ms   p99 ms   fsyncs/receipt   group commits   cpu us/receipt   written KiB/receipt   receipts/batch   leader busy   leader cpu us   sync busy   peak RSS");
    let mut peak = 0;
    for submitters in submitter_counts() {
        reset_hwm();
        let mut runs: Vec<Run> = (0..3)
            .map(|_| throughput_run(submitters, Duration::from_secs(4)))
            .collect();
        runs.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
        let r = &runs[1];
        println!(
            "{submitters:>10} {:>11.0} {:>8.2} {:>8.2} {:>16.3} {:>15} {:>16.0} {:>21.1} {:>16.1} {:>12.0}% {:>15.0} {:>10.0}% {:>6.1} MiB   (runs: {:.0} / {:.0} / {:.0})",
            r.per_sec,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.fsyncs_per_receipt,
            r.commits,
            r.cpu_us_per_receipt,
            r.written_kib_per_receipt,
            r.receipts_per_batch,
            r.leader_busy * 100.0,
            r.leader_cpu_us_per_receipt,
            r.sync_busy * 100.0,
            vm_hwm_kib() as f64 / 1024.0,
            runs[0].per_sec,
            runs[1].per_sec,
            runs[2].per_sec
        );
        peak = peak.max(vm_hwm_kib());
    }
    peak
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Returns the peak RSS (KiB) seen.
fn outbox() -> u64 {
    reset_hwm();
    let events_env = std::env::var("LG_BENCH_OUTBOX_EVENTS").ok();
    let events: u64 = events_env.and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    const PER_TX: u64 = 100;
    const SYNC_EVERY: u64 = 20_000;
    let dir = bench_dir();
    let store = open(dir.path());
    let payload = serde_json::json!({
        "receipt_id": "R-000000000", "lane": "3", "timestamp": "2026-11-23T10:15:00+01:00",
        "kind": "sale", "currency": "EUR", "total": "12.34", "customer_id": "S1-0123456789abcdef",
        "lines": [{"sku": "4006381333931", "name": "Pencil", "qty": "2", "unit_price": "1.49",
                   "amount": "2.98", "category": "stationery"},
                  {"sku": "1", "name": "Bread", "qty": "1", "unit_price": null, "amount": "9.36",
                   "category": "food"}],
        "points": 12
    });
    let started = Instant::now();
    let mut written = 0;
    let mut peak = 0;
    while written < events {
        store
            .transact(&[], |tx| {
                for _ in 0..PER_TX {
                    tx.append_event(EventType::Receipt, now(), &payload)?;
                }
                Ok(())
            })
            .expect("append");
        written += PER_TX;
        if written % SYNC_EVERY == 0 {
            // What the sync task does after the CRM acknowledged a batch.
            store.outbox_ack(written).expect("ack");
            store.compact_outbox(now()).expect("compact");
            peak = peak.max(store.size_on_disk().expect("size"));
        }
    }
    let live_events = store.outbox_stats().expect("stats").stored;
    let size = store.size_on_disk().expect("size");
    println!(
        "outbox: {events} events of ~{} bytes appended, acknowledged and compacted in {:.1} s",
        payload.to_string().len() + 120,
        started.elapsed().as_secs_f64()
    );
    println!(
        "  db size on disk after the churn: {:.1} MiB (peak seen {:.1} MiB), events still stored: {live_events}",
        mib(size),
        mib(peak)
    );
    drop(store);
    let reopened = Instant::now();
    let store = open(dir.path());
    println!(
        "  after reopen (offline compaction at open when size >> live data): {:.1} MiB, open took {:.2} s",
        mib(store.size_on_disk().expect("size")),
        reopened.elapsed().as_secs_f64()
    );
    assert_eq!(store.outbox_stats().expect("stats").last_seq, events);
    let peak = vm_hwm_kib();
    println!(
        "  peak RSS during the outbox section: {:.1} MiB",
        peak as f64 / 1024.0
    );
    peak
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let mut peak = 0;
    if wants("throughput") {
        peak = peak.max(throughput());
    }
    if wants("outbox") {
        peak = peak.max(outbox());
    }
    // Measured from a reset of VmHWM before each section (see `reset_hwm`).
    println!(
        "peak RSS (VmHWM, largest since a section's reset): {:.1} MiB",
        peak as f64 / 1024.0
    );
    let _ = Store::open; // the benchmark goes through the public API only
}
