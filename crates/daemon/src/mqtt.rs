//! The store broker edge (SPEC 2.3), with rumqttc. Owns every topic name, the session settings
//! and the acknowledgement discipline:
//!
//! - persistent session (`clean_session = false`, a stable client id) so messages published
//!   while the gateway restarts are delivered afterwards;
//! - manual acks: a receipt is PUBACKed only after the gateway reports it durably handled, so a
//!   crash in between makes the broker redeliver it and idempotency absorbs the duplicate;
//! - large packets (receipts with many lines), TCP_NODELAY (Nagle costs 40 ms a hop), reconnect
//!   with exponential backoff and jitter, the retained `online`/`offline` status with last will;
//! - the event loop is polled by one task that never publishes; answers and acks are sent from
//!   other tasks (publishing from the polling task can deadlock, rumqttc #1025).

use crate::config::Config;
use crate::input::{Handled, Input, Origin};
use loyalty_protocol::till::{self, Response};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions, Packet,
    QoS, TlsConfiguration, Transport,
};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Why the broker edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// Invalid broker settings (should have been caught by `check-config`).
    #[error("mqtt configuration: {0}")]
    Config(String),
    /// A credentials or TLS file could not be read.
    #[error("cannot read {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// The broker connection as health reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerState {
    /// Connected and subscribed.
    pub connected: bool,
    /// The last connection error, if any.
    pub last_error: Option<String>,
}

/// Topic names under one prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

/// What an incoming topic is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncomingTopic {
    /// `{prefix}/lane/{lane}/scan`
    Scan(String),
    /// `{prefix}/lane/{lane}/receipt`
    Receipt(String),
}

impl Topics {
    /// Topics under `prefix` (already expanded, e.g. `loyalty/berlin-001`).
    pub fn new(prefix: &str) -> Self {
        Topics {
            prefix: prefix.to_string(),
        }
    }

    /// Where a lane's scans arrive.
    pub fn scan(&self, lane: &str) -> String {
        format!("{}/lane/{lane}/scan", self.prefix)
    }

    /// Where a lane's receipts arrive.
    pub fn receipt(&self, lane: &str) -> String {
        format!("{}/lane/{lane}/receipt", self.prefix)
    }

    /// Where a lane's answers go.
    pub fn response(&self, lane: &str) -> String {
        format!("{}/lane/{lane}/response", self.prefix)
    }

    /// Every lane's answers (`{prefix}/lane/+/response`): what a till, or a tool playing the
    /// tills, subscribes to.
    pub fn responses(&self) -> String {
        self.response("+")
    }

    /// The lane an answer topic is for: `Some("3")` for `{prefix}/lane/3/response`, `None` for
    /// any other topic.
    pub fn response_lane<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let lane = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("/lane/")?
            .strip_suffix("/response")?;
        (!lane.is_empty() && !lane.contains('/')).then_some(lane)
    }

    /// The retained gateway status topic.
    pub fn status(&self) -> String {
        format!("{}/gateway/status", self.prefix)
    }

    /// Subscriptions the gateway needs.
    pub fn subscriptions(&self) -> [String; 2] {
        [self.scan("+"), self.receipt("+")]
    }

    /// Classifies an incoming topic.
    pub fn classify(&self, topic: &str) -> Option<IncomingTopic> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix("/lane/")?;
        let (lane, kind) = rest.split_once('/')?;
        if lane.is_empty() || lane.contains('/') {
            return None;
        }
        match kind {
            "scan" => Some(IncomingTopic::Scan(lane.to_string())),
            "receipt" => Some(IncomingTopic::Receipt(lane.to_string())),
            _ => None,
        }
    }
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, MqttError> {
    std::fs::read(path).map_err(|err| MqttError::File {
        path: path.display().to_string(),
        message: err.to_string(),
    })
}

fn tls_config(config: &crate::config::MqttConfig) -> Result<rustls::ClientConfig, MqttError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca_file) = &config.ca_file {
        let pem = read_file(ca_file)?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|err| MqttError::File {
                path: ca_file.display().to_string(),
                message: err.to_string(),
            })?;
            roots
                .add(cert)
                .map_err(|err| MqttError::Config(err.to_string()))?;
        }
    } else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| MqttError::Config(err.to_string()))?
    .with_root_certificates(roots);
    match (&config.client_cert_file, &config.client_key_file) {
        (Some(cert_file), Some(key_file)) => {
            let cert_pem = read_file(cert_file)?;
            let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| MqttError::File {
                    path: cert_file.display().to_string(),
                    message: err.to_string(),
                })?;
            let key_pem = read_file(key_file)?;
            let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
                .ok()
                .flatten()
                .ok_or_else(|| MqttError::File {
                    path: key_file.display().to_string(),
                    message: "no private key in PEM".into(),
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|err| MqttError::Config(err.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Builds the rumqttc options from the configuration.
pub fn options(config: &Config) -> Result<MqttOptions, MqttError> {
    let mqtt = &config.mqtt;
    let address = mqtt.broker_address().map_err(MqttError::Config)?;
    let client_id = mqtt.client_id.replace("{store_id}", &config.store.id);
    let topics = Topics::new(&config.topic_prefix());
    let mut options = MqttOptions::new(client_id, address.host.clone(), address.port);
    options
        .set_keep_alive(Duration::from_secs(mqtt.keep_alive_secs.max(5)))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(mqtt.max_packet_bytes, mqtt.max_packet_bytes)
        .set_inflight(100)
        .set_request_channel_capacity(1024)
        .set_last_will(LastWill::new(
            topics.status(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(username) = &mqtt.username {
        let password = match &mqtt.password_file {
            Some(path) => String::from_utf8_lossy(&read_file(path)?)
                .trim()
                .to_string(),
            None => String::new(),
        };
        options.set_credentials(username.clone(), password);
    }
    if address.tls {
        options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(
            tls_config(mqtt)?,
        ))));
    }
    Ok(options)
}

/// Sends answers to the lanes: straight into rumqttc's request queue once the broker edge is
/// running (no hand-off to another task: each one costs latency at the lanes), otherwise (at
/// start-up, or while that queue is full because the broker is away) through the edge's
/// publisher task, which waits for room.
#[derive(Clone)]
pub struct AnswerSender {
    direct: Arc<OnceLock<(AsyncClient, Topics)>>,
    queued: mpsc::UnboundedSender<Response>,
}

/// The receiving end of [`AnswerSender`], handed to [`run`].
pub struct AnswerReceiver {
    direct: Arc<OnceLock<(AsyncClient, Topics)>>,
    queued: mpsc::UnboundedReceiver<Response>,
}

/// A connected pair of answer sender and receiver.
pub fn answer_channel() -> (AnswerSender, AnswerReceiver) {
    let direct = Arc::new(OnceLock::new());
    let (queued_tx, queued_rx) = mpsc::unbounded_channel();
    (
        AnswerSender {
            direct: direct.clone(),
            queued: queued_tx,
        },
        AnswerReceiver {
            direct,
            queued: queued_rx,
        },
    )
}

impl AnswerSender {
    /// Publishes `answer` on its lane's response topic (QoS 1), never blocking.
    pub fn send(&self, answer: Response) {
        if let Some((client, topics)) = self.direct.get() {
            let topic = topics.response(answer.lane());
            if client
                .try_publish(topic, QoS::AtLeastOnce, false, answer.to_json())
                .is_ok()
            {
                return;
            }
        }
        let _ = self.queued.send(answer);
    }
}

/// Runs the broker edge until `shutdown`: incoming scans and receipts become [`Input`]s, answers
/// from `answers` are published to the lanes. `state` reports the connection for health.
pub async fn run(
    config: Config,
    inputs: mpsc::Sender<Input>,
    answers: AnswerReceiver,
    state: watch::Sender<BrokerState>,
    shutdown: CancellationToken,
) -> Result<(), MqttError> {
    let options = options(&config)?;
    let topics = Topics::new(&config.topic_prefix());
    let decimals = loyalty_core::money::currency_decimals(&config.store.currency);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(5);
    eventloop.set_network_options(network);

    let _ = answers.direct.set((client.clone(), topics.clone()));
    let mut answers = answers.queued;
    let publisher = {
        let client = client.clone();
        let topics = topics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let answer = tokio::select! {
                    answer = answers.recv() => answer,
                    () = shutdown.cancelled() => None,
                };
                let Some(answer) = answer else { break };
                let topic = topics.response(answer.lane());
                if let Err(err) = client
                    .publish(topic, QoS::AtLeastOnce, false, answer.to_json())
                    .await
                {
                    tracing::warn!(error = %err, "could not queue an answer for the broker");
                }
            }
        })
    };

    let backoff = Backoff::new(
        Duration::from_millis(config.mqtt.reconnect_min_ms),
        Duration::from_millis(config.mqtt.reconnect_max_ms),
    );
    poll_loop(
        &mut eventloop,
        &client,
        &topics,
        decimals,
        &inputs,
        &state,
        backoff,
        &shutdown,
    )
    .await;

    // Orderly goodbye: retained offline status, then disconnect, bounded in time.
    publisher.abort();
    let goodbye = async {
        let _ = client
            .publish(topics.status(), QoS::AtLeastOnce, true, "offline")
            .await;
        let _ = client.disconnect().await;
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), goodbye).await;
    state.send_replace(BrokerState::default());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn poll_loop(
    eventloop: &mut EventLoop,
    client: &AsyncClient,
    topics: &Topics,
    decimals: u32,
    inputs: &mpsc::Sender<Input>,
    state: &watch::Sender<BrokerState>,
    mut backoff: Backoff,
    shutdown: &CancellationToken,
) {
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            () = shutdown.cancelled() => return,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the broker"
                );
                let client = client.clone();
                let topics = topics.clone();
                let state = state.clone();
                // Subscribing and announcing are publishes: never from the polling task.
                tokio::spawn(async move {
                    for topic in topics.subscriptions() {
                        if let Err(err) = client.subscribe(topic, QoS::AtLeastOnce).await {
                            tracing::warn!(error = %err, "could not subscribe");
                        }
                    }
                    let _ = client
                        .publish(topics.status(), QoS::AtLeastOnce, true, "online")
                        .await;
                    state.send_replace(BrokerState {
                        connected: true,
                        last_error: None,
                    });
                });
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                handle_publish(publish, client, topics, decimals, inputs).await;
            }
            Ok(_) => {}
            Err(err) => {
                let message = describe(&err);
                tracing::warn!(error = %message, "broker connection lost; reconnecting");
                state.send_replace(BrokerState {
                    connected: false,
                    last_error: Some(message),
                });
                let delay = backoff.next_delay();
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

async fn handle_publish(
    publish: rumqttc::Publish,
    client: &AsyncClient,
    topics: &Topics,
    decimals: u32,
    inputs: &mpsc::Sender<Input>,
) {
    match topics.classify(&publish.topic) {
        Some(IncomingTopic::Scan(lane)) => {
            let data = till::scan_payload(&publish.payload);
            let _ = inputs
                .send(Input::Scan {
                    lane,
                    data,
                    origin: Origin::Mqtt,
                })
                .await;
            spawn_ack(client.clone(), publish, None);
        }
        Some(IncomingTopic::Receipt(lane)) => {
            let receipt = till::parse_receipt(&publish.payload, &lane, decimals)
                .map_err(|err| err.to_string());
            let (done, handled) = oneshot::channel();
            let sent = inputs
                .send(Input::Receipt {
                    lane,
                    receipt,
                    origin: Origin::Mqtt,
                    done: Some(done),
                })
                .await;
            if sent.is_ok() {
                spawn_ack(client.clone(), publish, Some(handled));
            }
        }
        None => {
            tracing::debug!(topic = %publish.topic, "ignoring a message on an unknown topic");
            spawn_ack(client.clone(), publish, None);
        }
    }
}

/// Acknowledges `publish` to the broker once `handled` says it may be (immediately when `None`).
/// A receipt that failed for an internal reason is not acknowledged: the broker redelivers it.
fn spawn_ack(
    client: AsyncClient,
    publish: rumqttc::Publish,
    handled: Option<oneshot::Receiver<Handled>>,
) {
    tokio::spawn(async move {
        if let Some(handled) = handled {
            match handled.await {
                Ok(Handled::Durable | Handled::Refused) => {}
                Ok(Handled::Failed) | Err(_) => return,
            }
        }
        if let Err(err) = client.ack(&publish).await {
            tracing::warn!(error = %err, "could not acknowledge a message to the broker");
        }
    });
}

fn describe(err: &ConnectionError) -> String {
    match err {
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "broker refused the connection (is mosquitto running? check mqtt.url)".into()
        }
        ConnectionError::ConnectionRefused(code) => format!(
            "broker refused the session ({code:?}): check mqtt.username / mqtt.password_file"
        ),
        other => other.to_string(),
    }
}

/// Exponential backoff with jitter (rumqttc has none of its own).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// From `min`, doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            current: min,
        }
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// The next delay: the current one with up to 50% jitter, then doubled for next time.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let mut random = [0u8; 8];
        let _ = getrandom::getrandom(&mut random);
        let fraction = u64::from_le_bytes(random) % 1000;
        base + base.mul_f64(fraction as f64 / 2000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        let topics = Topics::new("loyalty/berlin-001");
        assert_eq!(
            topics.classify("loyalty/berlin-001/lane/3/scan"),
            Some(IncomingTopic::Scan("3".into()))
        );
        assert_eq!(
            topics.classify(&topics.receipt("12")),
            Some(IncomingTopic::Receipt("12".into()))
        );
        assert_eq!(topics.classify("loyalty/berlin-001/lane/3/response"), None);
        assert_eq!(topics.classify("loyalty/other/lane/3/scan"), None);
        assert_eq!(topics.classify("loyalty/berlin-001/lane//scan"), None);
        assert_eq!(topics.status(), "loyalty/berlin-001/gateway/status");
        assert_eq!(topics.responses(), "loyalty/berlin-001/lane/+/response");
        assert_eq!(topics.response_lane(&topics.response("7")), Some("7"));
        assert_eq!(topics.response_lane("loyalty/berlin-001/lane/7/scan"), None);
        assert_eq!(topics.response_lane("loyalty/other/lane/7/response"), None);
        assert_eq!(
            topics.response_lane("loyalty/berlin-001/lane//response"),
            None
        );
    }

    #[test]
    fn backoff_grows_to_its_limit() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<_> = (0..6).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(150));
        assert!(
            delays[5] >= Duration::from_millis(800) && delays[5] <= Duration::from_millis(1200)
        );
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(150));
    }
}
