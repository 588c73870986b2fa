//! The gateway binary as a child process: [`GatewayBinary`] is the executable under test (the
//! testkit cannot see cargo's `CARGO_BIN_EXE_*`, so the test passes it in), [`Gateway`] one
//! running `loyalty-gateway run` with its own data directory, configuration and log file.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The `loyalty-gateway` executable a test runs. A test in the root package makes it with one
/// call, `GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"))`; benchmarks comparing two
/// builds may point `LOYALTY_GATEWAY_BIN` at another one, which then wins.
#[derive(Debug, Clone)]
pub struct GatewayBinary {
    path: PathBuf,
}

impl GatewayBinary {
    /// The binary cargo built for this test (`env!("CARGO_BIN_EXE_loyalty-gateway")`), unless
    /// `LOYALTY_GATEWAY_BIN` names another.
    pub fn new(cargo_bin: impl Into<PathBuf>) -> GatewayBinary {
        let path = std::env::var_os("LOYALTY_GATEWAY_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| cargo_bin.into());
        GatewayBinary { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command running it (add the subcommand and arguments).
    pub fn command(&self) -> Command {
        Command::new(&self.path)
    }

    /// Writes `config` (TOML) to a file in `dir` and starts `loyalty-gateway run`.
    pub fn start(&self, dir: &Path, config: &str) -> Gateway {
        self.start_with_env(dir, config, &[])
    }

    /// [`GatewayBinary::start`] with extra environment variables (kept for later `spawn`s).
    pub fn start_with_env(&self, dir: &Path, config: &str, env: &[(&str, &str)]) -> Gateway {
        let config_path = dir.join("gateway.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut gateway = Gateway {
            binary: self.clone(),
            dir: dir.to_path_buf(),
            config_path,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        gateway.spawn();
        gateway
    }
}

impl AsRef<OsStr> for GatewayBinary {
    fn as_ref(&self) -> &OsStr {
        self.path.as_os_str()
    }
}

/// A running gateway process with its own data directory and configuration; killed on drop.
pub struct Gateway {
    binary: GatewayBinary,
    /// Its directory (configuration, log).
    pub dir: PathBuf,
    /// Its configuration file.
    pub config_path: PathBuf,
    /// Extra environment for the next `spawn`.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Gateway {
    /// Starts the process (again, after [`Gateway::kill9`] or [`Gateway::stop`]), its stderr
    /// appended to `gateway.log` in its directory.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("gateway.log"))
            .expect("log file");
        let child = self
            .binary
            .command()
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .env("LOYALTY_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start gateway");
        self.child = Some(child);
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) with a pid this process spawned and has not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().ok()
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Copies the directory `from` (a stopped gateway's data directory: sled files, `instance`)
/// to `to`, recursively, as store IT's backup or disk image would.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// The configuration of a gateway under a black-box sync test: store `store`, its data in
/// `dir/data`, the broker on `broker`, the local API on `http`, syncing at once (1 s polls,
/// 20 ms batches, short backoff) to the CRM at `crm_url` with `pki`'s client certificate.
pub fn synced_config(
    store: &str,
    dir: &Path,
    broker: u16,
    http: u16,
    crm_url: &str,
    pki: &crate::certs::LocalPki,
) -> String {
    format!(
        r#"[store]
id = "{store}"
timezone = "Europe/Berlin"
require_ntp_sync = false
[storage]
data_dir = "{data}"
[mqtt]
url = "mqtt://127.0.0.1:{broker}"
reconnect_min_ms = 50
reconnect_max_ms = 500
[cards]
prefixes = ["299"]
[crm]
enabled = true
url = "{crm_url}"
client_cert_file = "{cert}"
client_key_file = "{key}"
ca_file = "{ca}"
poll_interval_secs = 1
batch_max_age_ms = 20
backoff_min_ms = 50
backoff_max_ms = 300
[http]
bind = "127.0.0.1:{http}"
"#,
        data = dir.join("data").display(),
        cert = pki.client_cert_file.display(),
        key = pki.client_key_file.display(),
        ca = pki.ca_file.display(),
    )
}
