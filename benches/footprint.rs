//! The gateway's footprint on a Pi-sized budget (issue 6's figures): start-up time from exec to
//! systemd READY with 1,000,000 customers stored, and idle RSS with 100,000 customers stored.
//! Runs the release daemon with `NOTIFY_SOCKET` pointing at a socket this program reads, and
//! `MALLOC_ARENA_MAX=2` as the systemd unit sets it.
//!
//! Run: `cargo bench --bench footprint` (`FOOTPRINT_STARTUP_CUSTOMERS` / `FOOTPRINT_RSS_CUSTOMERS`
//! change the sizes).

use loyalty_gateway::config::StorageConfig;
use loyalty_gateway::store::Store;
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

fn seed(dir: &Path, customers: u64) -> Duration {
    let started = Instant::now();
    let storage = StorageConfig {
        data_dir: dir.join("data"),
        ..StorageConfig::default()
    };
    let store = Store::open(&storage, "footprint").expect("open store");
    store
        .seed_customers(customers, "299", jiff::Timestamp::now())
        .expect("seed");
    drop(store);
    started.elapsed()
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
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
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
        let n = socket.recv(&mut buf).expect("READY within 60 s");
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

fn main() {
    let startup_customers = env_u64("FOOTPRINT_STARTUP_CUSTOMERS", 1_000_000);
    let rss_customers = env_u64("FOOTPRINT_RSS_CUSTOMERS", 100_000);

    let dir = tempfile::tempdir().expect("tempdir");
    let seeded = seed(dir.path(), rss_customers);
    let (ready, rss, peak) = run_daemon(dir.path(), Duration::from_secs(3));
    println!(
        "{rss_customers} customers (seeded in {:.1} s): start-up to READY {:.0} ms, idle RSS {} KiB ({:.1} MiB), peak {} KiB",
        seeded.as_secs_f64(),
        ready.as_secs_f64() * 1000.0,
        rss,
        rss as f64 / 1024.0,
        peak
    );
    drop(dir);

    let dir = tempfile::tempdir().expect("tempdir");
    let seeded = seed(dir.path(), startup_customers);
    let open_started = Instant::now();
    let storage = StorageConfig {
        data_dir: dir.path().join("data"),
        ..StorageConfig::default()
    };
    drop(Store::open(&storage, "footprint").expect("reopen"));
    let store_open = open_started.elapsed();
    let mut startups: Vec<Duration> = (0..3)
        .map(|_| run_daemon(dir.path(), Duration::from_millis(500)).0)
        .collect();
    startups.sort();
    println!(
        "{startup_customers} customers (seeded in {:.1} s): Store::open alone {:.0} ms; start-up to READY median of 3 {:.0} ms (min {:.0}, max {:.0})",
        seeded.as_secs_f64(),
        store_open.as_secs_f64() * 1000.0,
        startups[1].as_secs_f64() * 1000.0,
        startups[0].as_secs_f64() * 1000.0,
        startups[2].as_secs_f64() * 1000.0
    );
}
