//! A private PostgreSQL cluster for a test: `initdb` into a temporary directory, `postgres` on a
//! free loopback port with `fsync=on`, run as the unprivileged `postgres` user when the test runs
//! as root (PostgreSQL refuses root). The server binaries come from `LOYALTY_PG_BINDIR`, else
//! `pg_config --bindir`, else the newest `/usr/lib/postgresql/<version>/bin` (Debian's
//! `postgresql` package). [`Postgres::kill_9`] and [`Postgres::restart`] are the faults the hub's
//! tests inject; dropping the handle stops the server and removes the directory.
//!
//! The cluster directory is made directly under the system temp dir and handed to the server's
//! user: a directory below a root-only parent would be unreachable for it (FIELD-NOTES).
//!
//! `LOYALTY_PG_SETTINGS` (whitespace-separated `name=value`) adds server settings, for
//! benchmarks that measure a tuned server (`crates/hub/benches/ingest.rs`); tests leave it unset.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running private cluster (see the module doc).
pub struct Postgres {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    user: Option<(u32, u32)>,
    child: Option<Child>,
}

/// The directory holding `initdb` and `postgres`; panics naming the package to install.
pub fn bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOYALTY_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let dir = entry.path().join("bin");
            has_initdb(&dir).then_some((version, dir))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, dir)) => dir,
        None => panic!(
            "PostgreSQL's server binaries were not found: install Debian's `postgresql` \
             (scripts/test.sh does) or set LOYALTY_PG_BINDIR to the folder holding initdb"
        ),
    }
}

/// The server settings named in `LOYALTY_PG_SETTINGS` (see the module doc).
fn extra_settings() -> Vec<String> {
    std::env::var("LOYALTY_PG_SETTINGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The uid and gid of the `postgres` user when running as root; `None` otherwise.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: a valid C string; the returned record is read at once, before any other call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root, but there is no `postgres` user to run PostgreSQL as (install Debian's `postgresql`)"
    );
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some((uid, gid))
}

fn as_user(command: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

impl Postgres {
    /// Creates and starts a cluster; panics with what went wrong.
    pub fn start() -> Postgres {
        let bindir = bindir();
        let user = server_user();
        let dir = tempfile::Builder::new()
            .prefix("loyalty-pg-")
            .tempdir_in(std::env::temp_dir())
            .expect("temp dir for PostgreSQL");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the cluster dir to postgres");
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut initdb, user);
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            dir,
            bindir,
            port: crate::testkit::free_port(),
            user,
            child: None,
        };
        pg.spawn();
        pg
    }

    fn spawn(&mut self) {
        self.spawn_once();
        let ready = crate::testkit::wait_until(Duration::from_secs(30), || self.ready());
        assert!(ready, "PostgreSQL did not come up in 30 s:\n{}", self.log());
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq-style connection string (`host=127.0.0.1 port=… user=postgres dbname=postgres`).
    pub fn connection_string(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `SIGKILL` to the postmaster (its backends end when they notice); waits for it to exit.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Backends of a killed postmaster exit on their own; the new postmaster refuses to start
        // while they hold the shared memory, so `restart` waits for the lock file to be free.
    }

    /// Starts the server again on the same port and data (after [`Postgres::kill_9`] or
    /// [`Postgres::stop`]); crash recovery replays the WAL.
    pub fn restart(&mut self) {
        self.stop();
        // After a kill -9 the old backends may hold the shared memory for a moment; postgres
        // refuses to start until they are gone, so retry until it starts.
        for _ in 0..50 {
            self.spawn_once();
            let ok = crate::testkit::wait_until(Duration::from_secs(10), || {
                self.exited() || self.ready()
            });
            if ok && self.ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("PostgreSQL did not restart:\n{}", self.log());
    }

    fn spawn_once(&mut self) {
        let log_path = self.dir.path().join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("server log");
        let mut command = Command::new(self.bindir.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=on",
                "-c",
                "max_connections=200",
            ])
            .args(extra_settings().iter().flat_map(|s| ["-c", s.as_str()]))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        as_user(&mut command, self.user);
        self.child = Some(command.spawn().expect("start postgres"));
    }

    fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    fn ready(&self) -> bool {
        Command::new(self.bindir.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stops the server (fast shutdown) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT: fast shutdown (disconnects clients, checkpoints).
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: signalling our own child.
                unsafe {
                    libc::kill(pid, libc::SIGINT);
                }
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
