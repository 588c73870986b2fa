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

use crate::backoff::{Backoff, Jitter};
use crate::config::Config;
use crate::input::{Handled, Input, Origin, Unreadable};
use crate::telemetry::Secret;
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
    /// The broker's TLS files could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsSetupError),
    /// A credentials file could not be read.
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

/// The broker's TLS: its CA file (or the compiled-in Mozilla roots), TLS 1.2 or 1.3, and the
/// client certificate when both `client_cert_file` and `client_key_file` are set.
fn tls_config(config: &crate::config::MqttConfig) -> Result<rustls::ClientConfig, MqttError> {
    let identity = match (&config.client_cert_file, &config.client_key_file) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        _ => None,
    };
    Ok(crate::tls::build_client_config(&crate::tls::ClientSpec {
        section: "mqtt",
        ca_file: config.ca_file.as_deref(),
        identity,
        tls13_only: false,
        alpn: &[],
    })?)
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
            Some(path) => {
                let bytes = zeroize::Zeroizing::new(read_file(path)?);
                Secret::new(String::from_utf8_lossy(&bytes).trim())
            }
            None => Secret::new(""),
        };
        // rumqttc keeps its own copy for every reconnect; ours is wiped when dropped.
        options.set_credentials(username.clone(), password.expose());
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

/// When the broker edge stops, in two steps.
#[derive(Debug, Clone)]
pub struct Stop {
    /// Stop taking messages from the broker (messages not taken stay unacknowledged: the broker
    /// delivers them again to the next session).
    pub shutdown: CancellationToken,
    /// Cancelled once the lanes have handled everything they took: the edge then sends the last
    /// answers and acknowledgements, publishes the retained `offline` status and disconnects.
    pub drained: CancellationToken,
}

/// How long the edge waits for the lanes to drain after `shutdown` (answers and acks keep
/// flowing meanwhile).
const DRAIN_BOUND: Duration = Duration::from_secs(5);
/// How long the goodbye (retained `offline`, DISCONNECT, the broker closing) may take.
const GOODBYE_BOUND: Duration = Duration::from_secs(2);

/// Runs the broker edge until `stop`: incoming scans and receipts become [`Input`]s, answers
/// from `answers` are published to the lanes. `state` reports the connection for health.
pub async fn run(
    config: Config,
    inputs: mpsc::Sender<Input>,
    answers: AnswerReceiver,
    state: watch::Sender<BrokerState>,
    stop: Stop,
) -> Result<(), MqttError> {
    let Stop { shutdown, drained } = stop;
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
    // Acknowledgements and subscriptions run beside the polling task; the goodbye waits for
    // them.
    let helpers = tokio_util::task::TaskTracker::new();
    let publisher = {
        let client = client.clone();
        let topics = topics.clone();
        let drained = drained.clone();
        tokio::spawn(async move {
            let publish = |answer: Response| {
                let client = client.clone();
                let topic = topics.response(answer.lane());
                async move {
                    if let Err(err) = client
                        .publish(topic, QoS::AtLeastOnce, false, answer.to_json())
                        .await
                    {
                        tracing::warn!(error = %err, "could not queue an answer for the broker");
                    }
                }
            };
            loop {
                let answer = tokio::select! {
                    answer = answers.recv() => answer,
                    () = drained.cancelled() => None,
                };
                let Some(answer) = answer else { break };
                publish(answer).await;
            }
            // The lanes are done: what they queued still goes out.
            while let Ok(answer) = answers.try_recv() {
                publish(answer).await;
            }
        })
    };

    let backoff = Backoff::new(
        Duration::from_millis(config.mqtt.reconnect_min_ms),
        Duration::from_millis(config.mqtt.reconnect_max_ms),
    )
    .with_jitter(Jitter::Extra);
    poll_loop(
        &mut eventloop,
        &client,
        &topics,
        decimals,
        &inputs,
        &state,
        backoff,
        &shutdown,
        &helpers,
    )
    .await;
    drop(inputs);

    // Drain: keep the connection turning (answers and acks are only sent while the event loop
    // is polled) until the lanes are done and every answer and acknowledgement is queued.
    // Messages still arriving are not taken (nor acknowledged).
    let flushed = async {
        drained.cancelled().await;
        helpers.close();
        helpers.wait().await;
        let _ = publisher.await;
    };
    tokio::pin!(flushed);
    let drain = async {
        loop {
            tokio::select! {
                () = &mut flushed => return true,
                event = eventloop.poll() => if event.is_err() { return false },
            }
        }
    };
    let connected = matches!(tokio::time::timeout(DRAIN_BOUND, drain).await, Ok(true));
    if !connected {
        tracing::warn!("broker edge: the drain did not finish (broker away or lanes slow)");
    }

    // Goodbye: the retained offline status, then DISCONNECT; done when the broker closes the
    // connection (it has then read both).
    let goodbye = async {
        let _ = client
            .publish(topics.status(), QoS::AtLeastOnce, true, "offline")
            .await;
        let _ = client.disconnect().await;
        let mut sent = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => sent = true,
                Ok(_) => {}
                Err(_) => return sent,
            }
        }
    };
    match tokio::time::timeout(GOODBYE_BOUND, goodbye).await {
        Ok(true) => tracing::info!("offline status published; disconnected from the broker"),
        Ok(false) | Err(_) => tracing::warn!("the goodbye to the broker was cut short"),
    }
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
    helpers: &tokio_util::task::TaskTracker,
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
                helpers.spawn(async move {
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
                handle_publish(publish, client, topics, decimals, inputs, helpers).await;
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
    helpers: &tokio_util::task::TaskTracker,
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
            spawn_ack(helpers, client.clone(), publish, None);
        }
        Some(IncomingTopic::Receipt(lane)) => {
            let receipt =
                till::parse_receipt(&publish.payload, &lane, decimals).map_err(|err| Unreadable {
                    receipt_id: till::readable_receipt_id(&publish.payload),
                    message: err.to_string(),
                });
            let (done, handled) = oneshot::channel();
            let sent = inputs
                .send(Input::Receipt {
                    lane,
                    receipt,
                    origin: Origin::Mqtt,
                    done: Some(done),
                    answer: None,
                })
                .await;
            if sent.is_ok() {
                spawn_ack(helpers, client.clone(), publish, Some(handled));
            }
        }
        None => {
            tracing::debug!(topic = %publish.topic, "ignoring a message on an unknown topic");
            spawn_ack(helpers, client.clone(), publish, None);
        }
    }
}

/// Acknowledges `publish` to the broker once `handled` says it may be (immediately when `None`).
/// A receipt that failed for an internal reason is not acknowledged: the broker redelivers it.
fn spawn_ack(
    helpers: &tokio_util::task::TaskTracker,
    client: AsyncClient,
    publish: rumqttc::Publish,
    handled: Option<oneshot::Receiver<Handled>>,
) {
    helpers.spawn(async move {
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
}
