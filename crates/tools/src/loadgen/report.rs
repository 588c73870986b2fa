//! What a run reports: latency percentiles, the gateway's memory, and the summary printed for
//! people.

use super::LoadSummary;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(p.count, 100);
        assert!((p.p50 - 51.0).abs() < 1.01);
        assert!((p.max - 100.0).abs() < 0.01);
    }
}
