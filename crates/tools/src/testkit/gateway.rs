//! Shared test harness: a real Mosquitto broker on a free port, a till client over MQTT, the
//! gateway binary with a generated configuration, and small helpers. Each test binary includes
//! it with `mod harness;`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until `check` is true or the deadline passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// A Mosquitto broker for one test, with persistence in its own directory.
pub struct Mosquitto {
    pub port: u16,
    broker: loyalty_tools::demo::broker::Mosquitto,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = loyalty_tools::demo::broker::Mosquitto::start(dir.path())
            .expect("mosquitto (apt-get install mosquitto; .ci/run does this)");
        Mosquitto {
            port: broker.port,
            broker,
            _dir: dir,
        }
    }

    /// Stops the broker the way a service manager does (SIGTERM: it saves its persistence).
    pub fn stop(&mut self) {
        self.broker.stop();
    }

    /// Starts it again on the same port with the same persistence.
    pub fn restart(&mut self) {
        self.broker.restart().expect("mosquitto restarts");
    }
}

/// A till (or several lanes) talking MQTT to the gateway, with rumqttc.
pub struct Till {
    pub client: rumqttc::AsyncClient,
    pub prefix: String,
    responses: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    _poller: tokio::task::JoinHandle<()>,
}

impl Till {
    /// Connects with client id `id` and subscribes to every lane's responses.
    pub async fn connect(port: u16, prefix: &str, id: &str) -> Till {
        let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1000);
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (tx, responses) = tokio::sync::mpsc::unbounded_channel();
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let poller = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        if let Ok(value) = serde_json::from_slice(&p.payload) {
                            let _ = tx.send(value);
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        if let Some(done) = subscribed_tx.take() {
                            let _ = done.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        client
            .subscribe(
                format!("{prefix}/lane/+/response"),
                rumqttc::QoS::AtLeastOnce,
            )
            .await
            .expect("subscribe");
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .expect("suback in time")
            .expect("suback");
        Till {
            client,
            prefix: prefix.to_string(),
            responses,
            _poller: poller,
        }
    }

    pub async fn scan(&self, lane: &str, data: &str) {
        self.client
            .publish(
                format!("{}/lane/{lane}/scan", self.prefix),
                rumqttc::QoS::AtLeastOnce,
                false,
                data.as_bytes().to_vec(),
            )
            .await
            .expect("publish scan");
    }

    pub async fn receipt(&self, lane: &str, json: &serde_json::Value) {
        self.client
            .publish(
                format!("{}/lane/{lane}/receipt", self.prefix),
                rumqttc::QoS::AtLeastOnce,
                false,
                serde_json::to_vec(json).expect("json"),
            )
            .await
            .expect("publish receipt");
    }

    pub async fn receipt_bytes(&self, lane: &str, bytes: &[u8]) {
        self.client
            .publish(
                format!("{}/lane/{lane}/receipt", self.prefix),
                rumqttc::QoS::AtLeastOnce,
                false,
                bytes.to_vec(),
            )
            .await
            .expect("publish receipt");
    }

    /// The next response, or a panic after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> serde_json::Value {
        tokio::time::timeout(timeout, self.responses.recv())
            .await
            .expect("a response in time")
            .expect("response channel open")
    }

    /// The next response within `timeout`, if any.
    pub async fn try_next(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        tokio::time::timeout(timeout, self.responses.recv())
            .await
            .ok()
            .flatten()
    }
}

/// A receipt JSON in the SPEC 2.3 shape.
pub fn sale(
    id: &str,
    lane: &str,
    card: Option<&str>,
    lines: &[(&str, i64, &str, &str)],
) -> serde_json::Value {
    let mut total = 0i64;
    let lines: Vec<serde_json::Value> = lines
        .iter()
        .map(|(sku, qty, amount, category)| {
            total += parse_cents(amount);
            serde_json::json!({"sku": sku, "name": sku, "qty": qty, "amount": amount, "category": category})
        })
        .collect();
    let mut receipt = serde_json::json!({
        "receipt_id": id, "lane": lane, "timestamp": "2026-11-23T10:15:00+01:00",
        "kind": "sale", "currency": "EUR", "total": format_cents(total), "lines": lines,
    });
    if let Some(card) = card {
        receipt["card"] = serde_json::Value::String(card.to_string());
    }
    receipt
}

pub fn parse_cents(text: &str) -> i64 {
    let (int, frac) = text.split_once('.').unwrap_or((text, "0"));
    int.parse::<i64>().expect("int") * 100
        + format!("{frac:0<2}")[..2].parse::<i64>().expect("frac")
}

pub fn format_cents(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// The gateway binary built by cargo for this test run (benchmarks comparing two builds may
/// point `LOYALTY_GATEWAY_BIN` at another one).
pub fn gateway_binary() -> PathBuf {
    std::env::var_os("LOYALTY_GATEWAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_loyalty-gateway")))
}

/// A running gateway process with its own data directory and configuration.
pub struct Gateway {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    /// Extra environment for the next `spawn`.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Gateway {
    /// Writes `config` (TOML) to a file in `dir` and starts `loyalty-gateway run`.
    pub fn start(dir: &Path, config: &str) -> Gateway {
        Gateway::start_with_env(dir, config, &[])
    }

    /// [`Gateway::start`] with extra environment variables (kept for later `spawn`s).
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Gateway {
        let config_path = dir.join("gateway.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut gateway = Gateway {
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

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("gateway.log"))
            .expect("log file");
        let child = Command::new(gateway_binary())
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
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().ok()
    }

    /// The running process's id.
    #[allow(dead_code)] // used by some test binaries only
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits for the gateway's retained `online` status, i.e. it is connected and subscribed.
pub async fn wait_online(port: u16, prefix: &str) {
    let mut options =
        rumqttc::MqttOptions::new(format!("probe-{}", free_port()), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    client
        .subscribe(
            format!("{prefix}/gateway/status"),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .expect("subscribe");
    let online = async {
        loop {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) =
                eventloop.poll().await
            {
                if p.payload.as_ref() == b"online" {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), online)
        .await
        .expect("gateway online in time");
}
