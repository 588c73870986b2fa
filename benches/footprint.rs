//! The gateway's footprint on a Pi-sized budget (issue 6's figures): start-up time from exec to
//! systemd READY with 1,000,000 customers stored, and idle RSS with 100,000 customers stored.
//! Runs the release daemon with `NOTIFY_SOCKET` pointing at a socket this program reads, and
//! `MALLOC_ARENA_MAX=2` as the systemd unit sets it.
//!
//! Start-up is measured in the steady state: customers are bulk-loaded (`Store::seed_customers`,
//! as `loyalty-gateway seed-test-customers` does on a Pi), the daemon is started once (that first
//! start compacts the database offline if the load left many free segments in sled's file, see
//! `src/store/compact.rs`; its time is reported on its own), then the median of five start-ups
//! to READY and of three `Store::open` calls alone is reported, with the database's size and the
//! share of free segments in sled's file.
//!
//! Run: `cargo bench --bench footprint` (`FOOTPRINT_STARTUP_CUSTOMERS` / `FOOTPRINT_RSS_CUSTOMERS`
//! change the sizes; `FOOTPRINT_ONLY=rss` or `=startup` runs one part; `FOOTPRINT_UNCOMPACTED=1`
//! also times `Store::open` on the bulk-loaded database before it is compacted).

use loyalty_daemon::config::StorageConfig;
use loyalty_store::{CompactTrigger, Store};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn storage(dir: &Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.join("data"),
        ..StorageConfig::default()
    }
}

fn seed(dir: &Path, customers: u64) -> Duration {
    let started = Instant::now();
    let store = Store::open(&storage(dir), "footprint").expect("open store");
    store
        .seed_customers(customers, "299", jiff::Timestamp::now())
        .expect("seed");
    drop(store);
    started.elapsed()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Bytes allocated on disk below `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// (segments, free segments) of sled's `db` file: a free segment's 20-byte header is all
/// zeros (sled zeroes free segments at every open). Segment size from sled's `conf`.
fn free_segments(db_dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::FileExt;
    let conf = std::fs::read_to_string(db_dir.join("conf")).unwrap_or_default();
    let segment_size: u64 = conf
        .lines()
        .find_map(|l| l.strip_prefix("segment_size: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(512 * 1024);
    let file = std::fs::File::open(db_dir.join("db")).expect("sled file");
    let segments = file.metadata().expect("metadata").len() / segment_size;
    let mut header = [0u8; 20];
    let free = (0..segments)
        .filter(|n| {
            file.read_exact_at(&mut header, n * segment_size).is_ok()
                && header.iter().all(|&b| b == 0)
        })
        .count() as u64;
    (segments, free)
}

fn describe_db(dir: &Path) -> String {
    let db_dir = dir.join("data/db");
    let (segments, free) = free_segments(&db_dir);
    format!(
        "{:.0} MiB on disk, {free} of {segments} segments free ({:.0} %)",
        mib(disk_bytes(&db_dir)),
        free as f64 * 100.0 / segments.max(1) as f64
    )
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Starts the daemon, waits for READY=1; returns (time to READY, RSS KiB after `idle`, peak KiB).
fn run_daemon(dir: &Path, idle: Duration) -> (Duration, u64, u64) {
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nid = \"footprint\"\ntimezone = \"Europe/Berlin\"\n[storage]\ndata_dir = \"{}\"\n\
             [mqtt]\nenabled = false\n[cards]\nprefixes = [\"299\"]\n[http]\nbind = \"127.0.0.1:0\"\n",
            dir.join("data").display()
        ),
    )
    .expect("config");
    let socket_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    // The first start may compact a million customers (minutes on a Pi).
    socket
        .set_read_timeout(Some(Duration::from_secs(600)))
        .expect("timeout");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_loyalty-gateway"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("LOYALTY_LOG", "warn")
        // As the systemd unit runs it (systemd/loyalty-gateway.service).
        .env("MALLOC_ARENA_MAX", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start daemon");
    let mut buf = [0u8; 512];
    let ready = loop {
        // Other messages (STATUS, EXTEND_TIMEOUT_USEC during a compaction) are skipped.
        let n = socket.recv(&mut buf).expect("READY within 600 s");
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            break started.elapsed();
        }
    };
    std::thread::sleep(idle);
    let rss = status_kib(child.id(), "VmRSS:");
    let peak = status_kib(child.id(), "VmHWM:");
    // SAFETY: kill(2) on our own child with a valid signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    (ready, rss, peak)
}

fn median(mut runs: Vec<Duration>) -> String {
    runs.sort();
    format!(
        "median of {} {:.0} ms (min {:.0}, max {:.0})",
        runs.len(),
        ms(runs[runs.len() / 2]),
        ms(runs[0]),
        ms(runs[runs.len() - 1])
    )
}

fn rss_part(customers: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let seeded = seed(dir.path(), customers);
    // The first start may compact the bulk-loaded database; the idle figure is a later start's.
    let (first, first_rss, _) = run_daemon(dir.path(), Duration::from_millis(500));
    let (ready, rss, peak) = run_daemon(dir.path(), Duration::from_secs(3));
    println!(
        "{customers} customers (seeded in {:.1} s; first start {:.0} ms, RSS {first_rss} KiB): start-up to READY {:.0} ms, idle RSS {rss} KiB ({:.1} MiB), peak {peak} KiB; {}",
        seeded.as_secs_f64(),
        ms(first),
        ms(ready),
        rss as f64 / 1024.0,
        describe_db(dir.path()),
    );
}

fn startup_part(customers: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let seeded = seed(dir.path(), customers);
    println!(
        "{customers} customers bulk-loaded in {:.1} s: {:.0} MiB on disk",
        seeded.as_secs_f64(),
        mib(disk_bytes(&dir.path().join("data/db")))
    );
    if std::env::var_os("FOOTPRINT_UNCOMPACTED").is_some() {
        // For comparison: opens that never compact (each zeroes every free segment again).
        let never = CompactTrigger {
            min_file_bytes: u64::MAX,
            min_free_percent: 100,
        };
        let opens: Vec<Duration> = (0..3)
            .map(|_| {
                let started = Instant::now();
                let store =
                    Store::open_with_compact_trigger(&storage(dir.path()), "footprint", never)
                        .expect("open");
                let took = started.elapsed();
                drop(store);
                took
            })
            .collect();
        println!(
            "  without compaction: Store::open {}; {}",
            median(opens),
            describe_db(dir.path())
        );
    }
    // The first start after the bulk load: recovery, and the one-off compaction if any.
    let (first, _, _) = run_daemon(dir.path(), Duration::from_millis(200));
    println!(
        "  first start to READY {:.0} ms; then {}",
        ms(first),
        describe_db(dir.path())
    );
    // A store restarts long after its bulk load: let the kernel write back what the load and
    // the compaction left dirty first (otherwise the next opens stall on that writeback).
    let settle = Instant::now();
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    println!("  writeback settled in {:.0} ms", ms(settle.elapsed()));
    let startups: Vec<Duration> = (0..5)
        .map(|_| run_daemon(dir.path(), Duration::from_millis(500)).0)
        .collect();
    println!("  start-up to READY: {}", median(startups));
    let opens: Vec<Duration> = (0..3)
        .map(|_| {
            let started = Instant::now();
            let store = Store::open(&storage(dir.path()), "footprint").expect("reopen");
            let took = started.elapsed();
            assert!(store.compacted_at_open().is_none(), "compacted again");
            drop(store);
            took
        })
        .collect();
    println!(
        "  Store::open alone (in the benchmark's process): {}",
        median(opens)
    );
    println!("  afterwards: {}", describe_db(dir.path()));
}

fn main() {
    let only = std::env::var("FOOTPRINT_ONLY").unwrap_or_default();
    if only != "startup" {
        rss_part(env_u64("FOOTPRINT_RSS_CUSTOMERS", 100_000));
    }
    if only != "rss" {
        startup_part(env_u64("FOOTPRINT_STARTUP_CUSTOMERS", 1_000_000));
    }
}
