//! A private Mosquitto for the demo, the tests and the benchmarks: found on this machine,
//! started on a free loopback port with its own configuration and persistence directory, and
//! stopped (SIGTERM, so it saves its persistence) or killed when dropped.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian and others install the broker (it lives in `sbin`, often not on a user's PATH).
const CANDIDATES: [&str; 4] = [
    "/usr/sbin/mosquitto",
    "/usr/bin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/usr/local/bin/mosquitto",
];

/// The mosquitto binary, if installed.
pub fn find_mosquitto() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("mosquitto"))
                    .find(|p| p.exists())
            })
        })
}

/// A free TCP port on loopback.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The messages the broker queues for a client before it drops newer ones, as in the store's
/// configuration (`config/mosquitto-gateway.conf`).
pub const QUEUE_LIMIT: usize = 200_000;

/// A running private broker.
pub struct Mosquitto {
    /// Its port on 127.0.0.1.
    pub port: u16,
    binary: PathBuf,
    dir: PathBuf,
    queue_limit: usize,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts a broker with persistence in `dir` on a free port, queueing up to [`QUEUE_LIMIT`]
    /// messages per client. Fails when mosquitto is not installed or does not come up within
    /// 10 s.
    pub fn start(dir: &Path) -> std::io::Result<Mosquitto> {
        Mosquitto::start_queueing(dir, QUEUE_LIMIT)
    }

    /// [`Mosquitto::start`] with a queue of `queue_limit` messages per client.
    pub fn start_queueing(dir: &Path, queue_limit: usize) -> std::io::Result<Mosquitto> {
        let binary = find_mosquitto().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "mosquitto is not installed (apt-get install mosquitto)",
            )
        })?;
        std::fs::create_dir_all(dir)?;
        let mut broker = Mosquitto {
            port: free_port()?,
            binary,
            dir: dir.to_path_buf(),
            queue_limit,
            child: None,
        };
        // The free port may be taken by someone else before mosquitto binds it: then it exits,
        // and another port is tried.
        let mut attempts = 0;
        loop {
            match broker.spawn() {
                Ok(()) => return Ok(broker),
                Err(err) if err.kind() == std::io::ErrorKind::AddrInUse && attempts < 3 => {
                    attempts += 1;
                    broker.port = free_port()?;
                }
                Err(err) => return Err(err),
            }
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let conf = self.dir.join("mosquitto.conf");
        let mut file = std::fs::File::create(&conf)?;
        write!(
            file,
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {dir}/\nautosave_interval 1\nset_tcp_nodelay true\n\
             max_queued_messages {queue_limit}\nmax_inflight_messages 100\n",
            port = self.port,
            dir = self.dir.display(),
            queue_limit = self.queue_limit
        )?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        format!(
                            "mosquitto exited ({status}) at start: is port {} in use?",
                            self.port
                        ),
                    ));
                }
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("mosquitto did not start on port {}", self.port),
        ))
    }

    /// Stops the broker as a service manager does (SIGTERM: it saves its persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) with a pid we own and a valid signal number.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same persistence.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}
