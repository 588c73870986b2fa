//! sd_notify and the watchdog driver against a real Unix datagram socket standing in for
//! systemd's `NOTIFY_SOCKET`: READY, STATUS, STOPPING, watchdog pings while a daemon-like loop
//! turns, and no pings once the loop wedges or the health check fails.

use loyalty_daemon::systemd::{self, Heartbeat, Notifier, Watchdog};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixDatagram;
use tokio_util::sync::CancellationToken;

/// A fake service manager: the receiving end of `NOTIFY_SOCKET`.
struct Manager {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        Manager {
            socket,
            path,
            _dir: dir,
        }
    }

    fn notifier(&self) -> Notifier {
        Notifier::from_socket_name(Some(self.path.clone().into_os_string()))
    }

    /// The next datagram, or `None` when nothing arrives within `within`.
    async fn next(&self, within: Duration) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(within, self.socket.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Ok(Err(err)) => panic!("recv: {err}"),
            Err(_) => None,
        }
    }

    /// Waits (bounded) for a datagram satisfying `want`; returns it and what came before.
    async fn wait_for(
        &self,
        deadline: Duration,
        want: impl Fn(&str) -> bool,
    ) -> (String, Vec<String>) {
        let end = Instant::now() + deadline;
        let mut before = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let message = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("timed out; received so far: {before:?}"));
            if want(&message) {
                return (message, before);
            }
            before.push(message);
        }
    }

    /// Counts `WATCHDOG=1` pings arriving during `window`.
    async fn pings_during(&self, window: Duration) -> usize {
        let end = Instant::now() + window;
        let mut pings = 0;
        while let Some(message) = self
            .next(end.saturating_duration_since(Instant::now()))
            .await
        {
            if message == "WATCHDOG=1\n" {
                pings += 1;
            }
        }
        pings
    }
}

/// A daemon-like main loop: turns every 10 ms and beats the heartbeat, until `wedge` is set,
/// then blocks its thread (like a deadlocked call) until `wedge` is cleared.
fn spawn_main_loop(heartbeat: Heartbeat, wedge: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            while wedge.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                std::thread::park_timeout(Duration::from_millis(5));
            }
            heartbeat.beat();
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_then_pings_while_the_loop_turns_and_none_once_it_wedges() {
    let manager = Manager::new();
    let notifier = manager.notifier();
    let heartbeat = Heartbeat::new();
    let wedge = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    spawn_main_loop(heartbeat.clone(), wedge.clone(), stop.clone());

    // Start-up done: READY.
    notifier
        .ready("3 devices, broker connected")
        .expect("ready");
    let watchdog = Watchdog::new(notifier.clone(), Duration::from_millis(300));
    assert_eq!(watchdog.check_every(), Duration::from_millis(100));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(watchdog.run(heartbeat.clone(), || true, cancel.clone()));

    let first = manager.next(Duration::from_secs(10)).await.expect("READY");
    assert_eq!(first, "READY=1\nSTATUS=3 devices, broker connected\n");
    let mut pings = 0;
    while pings < 3 {
        let (message, _) = manager
            .wait_for(Duration::from_secs(10), |m| m == "WATCHDOG=1\n")
            .await;
        assert_eq!(message, "WATCHDOG=1\n");
        pings += 1;
    }

    // The main loop wedges: the driver notices and withholds the pings.
    wedge.store(true, Ordering::Relaxed);
    let (status, _) = manager
        .wait_for(Duration::from_secs(10), |m| m.starts_with("STATUS="))
        .await;
    assert!(
        status.starts_with("STATUS=watchdog withheld: main loop has not turned"),
        "{status}"
    );
    // Longer than WatchdogSec: not a single ping, so systemd would restart the daemon.
    assert_eq!(manager.pings_during(Duration::from_millis(450)).await, 0);

    // A transient stall that ends in time: pings resume.
    wedge.store(false, Ordering::Relaxed);
    let (message, _) = manager
        .wait_for(Duration::from_secs(10), |m| m == "WATCHDOG=1\n")
        .await;
    assert_eq!(message, "WATCHDOG=1\n");

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("watchdog stops on shutdown")
        .expect("watchdog task");
    stop.store(true, Ordering::Relaxed);
    notifier.stopping().expect("stopping");
    let (message, _) = manager
        .wait_for(Duration::from_secs(10), |m| m.starts_with("STOPPING=1"))
        .await;
    assert_eq!(message, "STOPPING=1\nSTATUS=stopping\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_withholds_pings_even_while_the_loop_turns() {
    let manager = Manager::new();
    let heartbeat = Heartbeat::new();
    let wedge = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    spawn_main_loop(heartbeat.clone(), wedge, stop.clone());
    let healthy = Arc::new(AtomicBool::new(true));
    let cancel = CancellationToken::new();
    let health = {
        let healthy = healthy.clone();
        move || healthy.load(Ordering::Relaxed)
    };
    let watchdog = Watchdog::new(manager.notifier(), Duration::from_millis(300));
    let task = tokio::spawn(watchdog.run(heartbeat, health, cancel.clone()));

    manager
        .wait_for(Duration::from_secs(10), |m| m == "WATCHDOG=1\n")
        .await;
    healthy.store(false, Ordering::Relaxed);
    // (A loop starved for a moment may first be reported as not turning; the health check's
    // own status must follow.)
    manager
        .wait_for(Duration::from_secs(10), |m| {
            m == "STATUS=watchdog withheld: health check failed\n"
        })
        .await;
    assert_eq!(manager.pings_during(Duration::from_millis(450)).await, 0);
    healthy.store(true, Ordering::Relaxed);
    manager
        .wait_for(Duration::from_secs(10), |m| m == "WATCHDOG=1\n")
        .await;
    cancel.cancel();
    task.await.expect("watchdog task");
    stop.store(true, Ordering::Relaxed);
}

#[tokio::test]
async fn abstract_socket_names_are_supported() {
    let name = format!("loyalty-gateway-test-{}", std::process::id());
    let addr = {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name")
    };
    let std_socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind abstract");
    std_socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let notifier = Notifier::from_socket_name(Some(format!("@{name}").into()));
    assert!(notifier.is_enabled());
    notifier.status("line one\nline two").expect("status");
    let mut buf = [0u8; 256];
    let n = std_socket.recv(&mut buf).expect("datagram");
    assert_eq!(&buf[..n], b"STATUS=line one line two\n");
}

#[test]
fn without_notify_socket_everything_is_a_silent_no_op() {
    let notifier = Notifier::from_socket_name(None);
    assert!(!notifier.is_enabled());
    notifier.ready("x").expect("no-op");
    notifier.watchdog_ping().expect("no-op");
    assert!(!Notifier::from_socket_name(Some("".into())).is_enabled());
}

#[test]
fn a_missing_socket_is_an_error_not_a_panic() {
    let notifier = Notifier::from_socket_name(Some("/nonexistent/loyalty/notify.sock".into()));
    assert!(notifier.ready("x").is_err());
}

#[test]
fn watchdog_usec_and_pid_are_honoured() {
    let own = 4242;
    assert_eq!(
        systemd::watchdog_interval_from(Some("30000000"), None, own),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        systemd::watchdog_interval_from(Some("30000000"), Some("4242"), own),
        Some(Duration::from_secs(30))
    );
    // The watchdog belongs to another process (we are a child of the service).
    assert_eq!(
        systemd::watchdog_interval_from(Some("30000000"), Some("1"), own),
        None
    );
    assert_eq!(systemd::watchdog_interval_from(Some("0"), None, own), None);
    assert_eq!(
        systemd::watchdog_interval_from(Some("soon"), None, own),
        None
    );
    assert_eq!(systemd::watchdog_interval_from(None, None, own), None);
}

/// The environment path (`NOTIFY_SOCKET`, `WATCHDOG_USEC`) is exercised in a child process,
/// because changing the environment of this multi-threaded test process would be a data race.
#[test]
fn the_environment_is_read_like_systemd_sets_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "child_sends_from_env",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "500000")
        .env_remove("WATCHDOG_PID")
        .env("PI_NOTIFY_CHILD", "1")
        .output()
        .expect("run child");
    assert!(
        status.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    while received.len() < 3 {
        let n = socket.recv(&mut buf).expect("datagram from the child");
        received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(
        received,
        [
            "READY=1\nSTATUS=child ready\n",
            "STATUS=serving\n",
            "STOPPING=1\nSTATUS=stopping\n"
        ]
    );
}

#[test]
#[ignore = "run by the_environment_is_read_like_systemd_sets_it in a child process"]
fn child_sends_from_env() {
    if std::env::var_os("PI_NOTIFY_CHILD").is_none() {
        return;
    }
    assert_eq!(
        systemd::watchdog_interval(),
        Some(Duration::from_millis(500))
    );
    let watchdog = Watchdog::from_env(Notifier::from_env()).expect("watchdog enabled");
    assert_eq!(watchdog.timeout(), Duration::from_millis(500));
    systemd::ready("child ready").expect("ready");
    systemd::status("serving").expect("status");
    systemd::stopping().expect("stopping");
}

#[test]
fn the_real_clock_is_trusted_against_a_floor_in_the_past() {
    use loyalty_core::clock::{ClockGuard, NtpState};
    let origin = Instant::now();
    let floor: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("timestamp");
    let mut guard = ClockGuard::new(floor, None, Duration::ZERO);
    // Without the NTP signal only the floor decides: this machine's clock is past 2026-01-01.
    let reading = systemd::observe_clock(&mut guard, origin, false);
    assert!(reading.trusted, "{reading:?}");
    // The kernel's NTP flag can be read (any answer is fine; a container may say unsynchronised).
    let state = systemd::ntp_state();
    assert!(matches!(
        state,
        NtpState::Synchronized | NtpState::Unsynchronized | NtpState::Unknown
    ));
    // A floor far in the future makes the same clock untrusted.
    let future: jiff::Timestamp = "2099-01-01T00:00:00Z".parse().expect("timestamp");
    let mut guard = ClockGuard::new(floor, Some(future), Duration::ZERO);
    let reading = systemd::observe_clock(&mut guard, origin, false);
    assert!(!reading.trusted);
    assert!(reading.now >= future);
}
