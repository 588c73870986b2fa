//! systemd integration: `sd_notify` messages (READY, STOPPING, STATUS, WATCHDOG), the watchdog
//! driver that pings only while the main loop proves it is alive and the daemon is healthy, and
//! the kernel's NTP synchronisation flag (input to `clock`).
//!
//! Messages go through the `sd-notify` crate: one datagram of newline-terminated `KEY=VALUE`
//! lines to the Unix socket named by `NOTIFY_SOCKET`. Outside systemd (`NOTIFY_SOCKET` unset)
//! every call is a silent no-op, so the same binary runs in a terminal, in tests and under
//! `Type=notify`. A socket can also be named explicitly ([`Notifier::from_socket_name`]: a
//! path, or `@name` for the abstract namespace), which the crate cannot do; that path sends the
//! same bytes, formatted by the crate.
//!
//! Invariant: `WATCHDOG=1` is sent only when the [`Heartbeat`] advanced since the previous check
//! and the health predicate passed; a wedged main loop or a broken store therefore gets the
//! daemon restarted by systemd (`WatchdogSec=` + `Restart=on-failure`).

use loyalty_core::clock::{ClockGuard, NtpState, TrustedTime};
use sd_notify::NotifyState;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Where notifications go: the socket systemd passed in `NOTIFY_SOCKET`, one named
/// explicitly, or nowhere.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Target>,
}

#[derive(Debug, Clone)]
enum Target {
    /// `NOTIFY_SOCKET`, read by `sd_notify::notify` on every message.
    Environment,
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// The notifier systemd asked for (`NOTIFY_SOCKET`), or a disabled one.
    pub fn from_env() -> Notifier {
        let set = std::env::var_os("NOTIFY_SOCKET").is_some_and(|name| !name.is_empty());
        Notifier {
            target: set.then_some(Target::Environment),
        }
    }

    /// A notifier for the socket named like `NOTIFY_SOCKET` (`/path` or `@abstract`); `None` or
    /// an empty name gives a disabled notifier.
    pub fn from_socket_name(name: Option<OsString>) -> Notifier {
        let target = name.filter(|name| !name.is_empty()).map(|name| {
            let bytes = name.as_bytes();
            match bytes.strip_prefix(b"@") {
                Some(rest) => Target::Abstract(rest.to_vec()),
                None => Target::Path(PathBuf::from(name)),
            }
        });
        Notifier { target }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// True when there is a socket to notify.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `states` as one notification.
    pub fn notify(&self, states: &[NotifyState<'_>]) -> io::Result<()> {
        let socket_name = match &self.target {
            None => return Ok(()),
            Some(Target::Environment) => return sd_notify::notify(states),
            Some(Target::Path(path)) => path,
            Some(Target::Abstract(name)) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = SocketAddr::from_abstract_name(name)?;
                return send_whole(&UnixDatagram::unbound()?, &addr, states);
            }
        };
        let addr = SocketAddr::from_pathname(socket_name)?;
        send_whole(&UnixDatagram::unbound()?, &addr, states)
    }

    /// `READY=1` with a status line: storage, configuration and inputs are up.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.notify(&[NotifyState::Ready, NotifyState::Status(&one_line(status))])
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) -> io::Result<()> {
        self.notify(&[NotifyState::Stopping, NotifyState::Status("stopping")])
    }

    /// `STATUS=...`: a one-line state shown by `systemctl status`.
    pub fn status(&self, text: &str) -> io::Result<()> {
        self.notify(&[NotifyState::Status(&one_line(text))])
    }

    /// `WATCHDOG=1`: one keep-alive ping. Normally sent by [`Watchdog::run`] only.
    pub fn watchdog_ping(&self) -> io::Result<()> {
        self.notify(&[NotifyState::Watchdog])
    }

    /// `EXTEND_TIMEOUT_USEC=...`: asks for more start-up (or shutdown) time, for example while a
    /// large database is opened or verified (at most `u32::MAX` µs, about 71 minutes, at once).
    pub fn extend_timeout(&self, by: Duration) -> io::Result<()> {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        self.notify(&[NotifyState::ExtendTimeoutUsec(usec)])
    }
}

/// The datagram `sd_notify::notify` sends: each state formatted by the crate, newline-terminated.
fn send_whole(
    socket: &UnixDatagram,
    to: &SocketAddr,
    states: &[NotifyState<'_>],
) -> io::Result<()> {
    let message: String = states.iter().map(|state| format!("{state}\n")).collect();
    if socket.send_to_addr(message.as_bytes(), to)? == message.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "incomplete sd_notify datagram",
        ))
    }
}

/// Status texts must be one line: the protocol is newline-separated.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// `READY=1` to the socket in `NOTIFY_SOCKET` (no-op outside systemd).
pub fn ready(status: &str) -> io::Result<()> {
    Notifier::from_env().ready(status)
}

/// `STOPPING=1` to the socket in `NOTIFY_SOCKET` (no-op outside systemd).
pub fn stopping() -> io::Result<()> {
    Notifier::from_env().stopping()
}

/// `STATUS=text` to the socket in `NOTIFY_SOCKET` (no-op outside systemd).
pub fn status(text: &str) -> io::Result<()> {
    Notifier::from_env().status(text)
}

/// The watchdog timeout systemd expects pings within (`WATCHDOG_USEC`), when the watchdog is
/// enabled for this process (`WATCHDOG_PID` unset or equal to our pid).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] from explicit values (for tests and callers that captured the
/// environment early).
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// The kernel's view of NTP synchronisation (`adjtimex` read-only query): `Unsynchronized`
/// while `STA_UNSYNC` is set (from boot until an NTP client such as systemd-timesyncd has
/// disciplined the clock), `Unknown` when it cannot be read.
pub fn ntp_state() -> NtpState {
    // SAFETY: `timex` is plain data; all-zero (modes = 0) asks adjtimex to only read the state.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, exclusively borrowed `timex` is passed; modes = 0 changes nothing.
    let state = unsafe { libc::adjtimex(&mut timex) };
    if state < 0 {
        NtpState::Unknown
    } else if state == libc::TIME_ERROR || timex.status & libc::STA_UNSYNC != 0 {
        NtpState::Unsynchronized
    } else {
        NtpState::Synchronized
    }
}

/// Reads the wall clock, the monotonic clock (since `origin`, typically the process start) and,
/// when `use_ntp` is set, the kernel's NTP state, and lets `guard` judge them (see `clock`).
pub fn observe_clock(guard: &mut ClockGuard, origin: Instant, use_ntp: bool) -> TrustedTime {
    let ntp = if use_ntp {
        ntp_state()
    } else {
        NtpState::Unknown
    };
    guard.observe(jiff::Timestamp::now(), origin.elapsed(), ntp)
}

/// Proof of life from the main loop: a counter the loop bumps on every iteration (including a
/// periodic tick when idle). Cheap to clone and to bump.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    inner: Arc<HeartbeatInner>,
}

#[derive(Debug)]
struct HeartbeatInner {
    origin: Instant,
    count: AtomicU64,
    last_nanos: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

impl Heartbeat {
    /// A heartbeat that has not beaten yet.
    pub fn new() -> Heartbeat {
        Heartbeat {
            inner: Arc::new(HeartbeatInner {
                origin: Instant::now(),
                count: AtomicU64::new(0),
                last_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Called by the main loop on every iteration: "I am still turning".
    pub fn beat(&self) {
        let nanos = u64::try_from(self.inner.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.inner.last_nanos.store(nanos, Ordering::Relaxed);
        self.inner.count.fetch_add(1, Ordering::Release);
    }

    /// How many beats so far.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Acquire)
    }

    /// Time since the last beat (since creation if none).
    pub fn since_last_beat(&self) -> Duration {
        let last = Duration::from_nanos(self.inner.last_nanos.load(Ordering::Relaxed));
        self.inner.origin.elapsed().saturating_sub(last)
    }
}

/// What one watchdog check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogCheck {
    /// Heartbeat advanced and healthy: `WATCHDOG=1` sent.
    Pinged,
    /// The heartbeat did not advance since the previous check: no ping.
    Stalled,
    /// The health predicate failed: no ping.
    Unhealthy,
}

/// The watchdog driver: every [`Watchdog::check_every`] it pings systemd if, and only if, the
/// main loop's [`Heartbeat`] advanced since the previous check and `health()` returns true.
#[derive(Debug, Clone)]
pub struct Watchdog {
    notifier: Notifier,
    timeout: Duration,
}

impl Watchdog {
    /// The watchdog systemd configured (`WATCHDOG_USEC`), or `None` when it is off.
    pub fn from_env(notifier: Notifier) -> Option<Watchdog> {
        watchdog_interval().map(|timeout| Watchdog::new(notifier, timeout))
    }

    /// A watchdog that must be pinged within `timeout` (systemd's `WatchdogSec=`).
    pub fn new(notifier: Notifier, timeout: Duration) -> Watchdog {
        Watchdog { notifier, timeout }
    }

    /// The timeout systemd enforces.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How often the heartbeat is checked and a ping possibly sent: a third of the timeout, so
    /// one stalled check is tolerated and a wedge longer than the timeout always gets caught.
    pub fn check_every(&self) -> Duration {
        (self.timeout / 3).max(Duration::from_millis(10))
    }

    /// The longest period the main loop may go without beating: half a check period. Tick the
    /// main loop at least this often when it is idle.
    pub fn beat_at_least_every(&self) -> Duration {
        self.check_every() / 2
    }

    /// Runs until `shutdown`: checks the heartbeat every [`Watchdog::check_every`] and pings only
    /// when it advanced and `health()` passed. `health` must be cheap and must not block (read
    /// flags the daemon maintains); it should fail only for conditions a restart can fix (a
    /// wedged store), not for a broker or CRM that is down.
    pub async fn run<H>(self, heartbeat: Heartbeat, health: H, shutdown: CancellationToken)
    where
        H: Fn() -> bool + Send,
    {
        let mut ticker = tokio::time::interval(self.check_every());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = heartbeat.count();
        let mut last_check = None;
        // The first tick completes at once: ping right away if the loop is already beating.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let count = heartbeat.count();
            let check = if count == seen && last_check.is_some() {
                WatchdogCheck::Stalled
            } else if !health() {
                WatchdogCheck::Unhealthy
            } else {
                WatchdogCheck::Pinged
            };
            seen = count;
            if check == WatchdogCheck::Pinged {
                if let Err(err) = self.notifier.watchdog_ping() {
                    tracing::warn!(error = %err, "cannot send the systemd watchdog ping");
                }
            } else if last_check != Some(check) {
                let text = match check {
                    WatchdogCheck::Stalled => format!(
                        "watchdog withheld: main loop has not turned for {} ms",
                        heartbeat.since_last_beat().as_millis()
                    ),
                    _ => "watchdog withheld: health check failed".to_string(),
                };
                tracing::error!("{text}; systemd will restart the daemon if this persists");
                let _ = self.notifier.status(&text);
            }
            last_check = Some(check);
        }
    }
}
