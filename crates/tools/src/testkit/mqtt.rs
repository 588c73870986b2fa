//! The MQTT side of a test: a real Mosquitto broker on a free port with its own persistence, a
//! till (or several lanes) publishing scans and receipts with rumqttc, the wait for the
//! gateway's retained `online` status, and receipt JSON in the till's shape (SPEC 2.3).

use loyalty_daemon::mqtt::Topics;
use serde_json::{Map, Value};
use std::time::Duration;

/// A Mosquitto broker for one test, with persistence in its own directory.
pub struct Mosquitto {
    /// The loopback port it listens on.
    pub port: u16,
    broker: crate::demo::broker::Mosquitto,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts a broker on a free port, queueing as much for a client as a store's broker
    /// (panics, saying how to install Mosquitto, if it cannot).
    pub fn start() -> Mosquitto {
        Mosquitto::start_queueing(crate::demo::broker::QUEUE_LIMIT)
    }

    /// [`Mosquitto::start`] queueing up to `queue_limit` messages for a client.
    pub fn start_queueing(queue_limit: usize) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = crate::demo::broker::Mosquitto::start_queueing(dir.path(), queue_limit)
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
    /// The connected client, for publishing what the helpers below do not cover.
    pub client: rumqttc::AsyncClient,
    /// The topic prefix (e.g. `loyalty/s1`).
    pub prefix: String,
    responses: tokio::sync::mpsc::UnboundedReceiver<Value>,
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
            .subscribe(Topics::new(prefix).response("+"), rumqttc::QoS::AtLeastOnce)
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

    /// Publishes a card scan on `lane`.
    pub async fn scan(&self, lane: &str, data: &str) {
        self.client
            .publish(
                Topics::new(&self.prefix).scan(lane),
                rumqttc::QoS::AtLeastOnce,
                false,
                data.as_bytes().to_vec(),
            )
            .await
            .expect("publish scan");
    }

    /// Publishes a receipt (JSON) on `lane`.
    pub async fn receipt(&self, lane: &str, json: &Value) {
        self.client
            .publish(
                Topics::new(&self.prefix).receipt(lane),
                rumqttc::QoS::AtLeastOnce,
                false,
                serde_json::to_vec(json).expect("json"),
            )
            .await
            .expect("publish receipt");
    }

    /// Publishes a `redeem` request (pay with points) on `lane`.
    pub async fn redeem(&self, lane: &str, request: &loyalty_protocol::till::RedeemMessage) {
        self.client
            .publish(
                Topics::new(&self.prefix).redeem(lane),
                rumqttc::QoS::AtLeastOnce,
                false,
                request.to_json(),
            )
            .await
            .expect("publish redeem");
    }

    /// Publishes a `void` of `lane`'s open sale.
    pub async fn void(&self, lane: &str) {
        self.client
            .publish(
                Topics::new(&self.prefix).void(lane),
                rumqttc::QoS::AtLeastOnce,
                false,
                b"{}".to_vec(),
            )
            .await
            .expect("publish void");
    }

    /// Publishes raw bytes as a receipt on `lane` (for malformed input).
    pub async fn receipt_bytes(&self, lane: &str, bytes: &[u8]) {
        self.client
            .publish(
                Topics::new(&self.prefix).receipt(lane),
                rumqttc::QoS::AtLeastOnce,
                false,
                bytes.to_vec(),
            )
            .await
            .expect("publish receipt");
    }

    /// The next response, or a panic after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Value {
        tokio::time::timeout(timeout, self.responses.recv())
            .await
            .expect("a response in time")
            .expect("response channel open")
    }

    /// The next response within `timeout`, if any.
    pub async fn try_next(&mut self, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, self.responses.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next response on `lane` within `limit` (responses of other lanes are skipped), or a
    /// panic naming the lane.
    pub async fn next_on(&mut self, lane: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let answer = self
                .try_next(left)
                .await
                .unwrap_or_else(|| panic!("no answer on lane {lane} within {limit:?}"));
            if answer["lane"] == lane {
                return answer;
            }
        }
    }
}

/// Waits for the gateway's retained `online` status, i.e. it is connected and subscribed.
pub async fn wait_online(port: u16, prefix: &str) {
    let mut options =
        rumqttc::MqttOptions::new(format!("probe-{}", super::free_port()), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    client
        .subscribe(Topics::new(prefix).status(), rumqttc::QoS::AtLeastOnce)
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

/// A receipt JSON in the SPEC 2.3 shape; `lines` are `(sku, qty, amount, category)`.
pub fn sale(id: &str, lane: &str, card: Option<&str>, lines: &[(&str, i64, &str, &str)]) -> Value {
    fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
        Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Map<String, Value>>(),
        )
    }
    let mut total = 0i64;
    let lines: Vec<Value> = lines
        .iter()
        .map(|(sku, qty, amount, category)| {
            total += parse_cents(amount);
            object([
                ("sku", (*sku).into()),
                ("name", (*sku).into()),
                ("qty", (*qty).into()),
                ("amount", (*amount).into()),
                ("category", (*category).into()),
            ])
        })
        .collect();
    let mut receipt = object([
        ("receipt_id", id.into()),
        ("lane", lane.into()),
        ("timestamp", "2026-11-23T10:15:00+01:00".into()),
        ("kind", "sale".into()),
        ("currency", "EUR".into()),
        ("total", format_cents(total).into()),
        ("lines", lines.into()),
    ]);
    if let Some(card) = card {
        receipt["card"] = Value::String(card.to_string());
    }
    receipt
}

/// `"12.5"` or `"12.50"` as cents (1250).
pub fn parse_cents(text: &str) -> i64 {
    let (int, frac) = text.split_once('.').unwrap_or((text, "0"));
    int.parse::<i64>().expect("int") * 100
        + format!("{frac:0<2}")[..2].parse::<i64>().expect("frac")
}

/// Cents as `"12.50"`.
pub fn format_cents(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}
