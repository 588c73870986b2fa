//! The store broker edge (SPEC 2.3), with rumqttc. Owns every topic name, the session settings
//! and the acknowledgement discipline:
//!
//! - persistent session (`clean_session = false`, a stable client id) so messages published
//!   while the gateway restarts are delivered afterwards;
//! - manual acks: a receipt is PUBACKed only after the gateway reports it durably handled (and
//!   answered), so a crash in between makes the broker redeliver it and idempotency absorbs the
//!   duplicate;
//! - large packets (receipts with many lines), TCP_NODELAY (Nagle costs 40 ms a hop), reconnect
//!   with exponential backoff and jitter, the retained `online`/`offline` status with last will;
//! - the inputs' event loop is polled by one task that never publishes and **never awaits the
//!   gateway's input queue** (it only offers to it, keeping what does not fit while it keeps
//!   polling); it writes the acknowledgements itself, batched, between polls (queued in
//!   rumqttc's request queue they starved behind incoming packets);
//! - answers go out on a connection of their own (`answers`: `{client_id}-answers`), so a flood
//!   of inputs cannot hold them back (publishing from the polling task can deadlock, rumqttc
//!   #1025);
//! - an intake window: every input (scan or receipt) is acknowledged only after it is handled
//!   and the broker acknowledged its answer, and past [`INTAKE_WINDOW`] unanswered inputs the
//!   polling task stops reading (acknowledgements still go out), so the broker's persistent
//!   session queue is the buffer past capacity, not the gateway's memory.

use crate::backoff::{Backoff, Jitter};
use crate::config::Config;
use crate::input::{Handled, Input, Origin, Unreadable};
use crate::telemetry::Metrics;
use crate::telemetry::Secret;
use answers::AnswerConnection;
pub use answers::{answer_channel, AnswerReceiver, AnswerSender};
use loyalty_protocol::till;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions, Packet,
    QoS, TlsConfiguration, Transport,
};

mod answers;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};
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
    /// `{prefix}/lane/{lane}/redeem` (pay with points)
    Redeem(String),
    /// `{prefix}/lane/{lane}/void` (release the open sale's reservations)
    Void(String),
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

    /// Where a lane's `redeem` requests (pay with points) arrive.
    pub fn redeem(&self, lane: &str) -> String {
        format!("{}/lane/{lane}/redeem", self.prefix)
    }

    /// Where a lane's `void` requests arrive.
    pub fn void(&self, lane: &str) -> String {
        format!("{}/lane/{lane}/void", self.prefix)
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
    pub fn subscriptions(&self) -> [String; 4] {
        [
            self.scan("+"),
            self.receipt("+"),
            self.redeem("+"),
            self.void("+"),
        ]
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
            "redeem" => Some(IncomingTopic::Redeem(lane.to_string())),
            "void" => Some(IncomingTopic::Void(lane.to_string())),
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

/// Builds the rumqttc options of the inputs' connection from the configuration.
pub fn options(config: &Config) -> Result<MqttOptions, MqttError> {
    let topics = Topics::new(&config.topic_prefix());
    let mut options = connection_options(config, "")?;
    options.set_last_will(LastWill::new(
        topics.status(),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    Ok(options)
}

/// The options both connections share, under the client id `{mqtt.client_id}{suffix}`.
fn connection_options(config: &Config, suffix: &str) -> Result<MqttOptions, MqttError> {
    let mqtt = &config.mqtt;
    let address = mqtt.broker_address().map_err(MqttError::Config)?;
    let client_id = mqtt.client_id.replace("{store_id}", &config.store.id) + suffix;
    let mut options = MqttOptions::new(client_id, address.host.clone(), address.port);
    options
        .set_keep_alive(Duration::from_secs(mqtt.keep_alive_secs.max(5)))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(mqtt.max_packet_bytes, mqtt.max_packet_bytes)
        .set_inflight(100)
        .set_request_channel_capacity(REQUEST_QUEUE);
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
    metrics: Metrics,
    stop: Stop,
) -> Result<(), MqttError> {
    let Stop { shutdown, drained } = stop;
    let options = options(&config)?;
    let answer_options = connection_options(&config, "-answers")?;
    let topics = Topics::new(&config.topic_prefix());
    let decimals = loyalty_core::money::currency_decimals(&config.store.currency);
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(5);
    eventloop.set_network_options(network);
    let backoff = Backoff::new(
        Duration::from_millis(config.mqtt.reconnect_min_ms),
        Duration::from_millis(config.mqtt.reconnect_max_ms),
    );
    let delivered = answers.delivered();
    let answer_connection = AnswerConnection::start(
        answers,
        answer_options,
        topics.clone(),
        backoff.clone(),
        drained.clone(),
    );
    // Acknowledgements and subscriptions run beside the polling task; the goodbye waits for
    // them.
    let helpers = tokio_util::task::TaskTracker::new();
    let (acks_tx, mut acks) = mpsc::unbounded_channel();
    let intake = Intake {
        topics: &topics,
        decimals,
        inputs: &inputs,
        acks: acks_tx,
        metrics: &metrics,
        helpers: &helpers,
        held: Arc::new((std::sync::atomic::AtomicUsize::new(0), Notify::new())),
        delivered,
    };
    let backoff = backoff.with_jitter(Jitter::Extra);
    poll_loop(
        &mut eventloop,
        &client,
        &intake,
        &mut acks,
        &state,
        backoff,
        &shutdown,
    )
    .await;
    drop(intake);
    drop(inputs);

    // Drain: keep the connection turning (acks are only sent while the event loop is polled)
    // until the lanes are done and every acknowledgement is queued; the answers' connection
    // turns in its own task. Messages still arriving are not taken (nor acknowledged).
    let flushed = async {
        drained.cancelled().await;
        helpers.close();
        helpers.wait().await;
    };
    tokio::pin!(flushed);
    let drain = async {
        loop {
            write_acks(&mut eventloop, &mut acks).await;
            tokio::select! {
                () = &mut flushed => {
                    write_acks(&mut eventloop, &mut acks).await;
                    return true;
                }
                event = eventloop.poll() => if event.is_err() { return false },
                Some(pkid) = acks.recv() => write_ack_batch(&mut eventloop, pkid, &mut acks).await,
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
    let (said, ()) = tokio::join!(
        tokio::time::timeout(GOODBYE_BOUND, goodbye),
        answer_connection.close(GOODBYE_BOUND)
    );
    match said {
        Ok(true) => tracing::info!("offline status published; disconnected from the broker"),
        Ok(false) | Err(_) => tracing::warn!("the goodbye to the broker was cut short"),
    }
    state.send_replace(BrokerState::default());
    Ok(())
}

/// How many requests (answers, acknowledgements, subscriptions) rumqttc's queue holds. The
/// gateway holds at most the broker's in-flight window of inputs (`max_inflight_messages`:
/// nothing is acknowledged before it is answered), each with an answer or two and an
/// acknowledgement, so this queue only fills while the broker is away.
const REQUEST_QUEUE: usize = 4096;

/// The most MQTT inputs the gateway holds unanswered. At this many the polling task stops
/// reading from the broker (after its answers and acknowledgements went out: it reads again as
/// soon as one more is answered), so past capacity the broker's session queue holds the backlog,
/// not the gateway's memory. Mosquitto's own `max_inflight_messages` would bound it too, but
/// Mosquitto 2.0 was measured sending far past it under a flood of publishers, so the gateway
/// does not rely on it.
pub const INTAKE_WINDOW: usize = 256;

/// What the polling task needs to turn a message into an [`Input`] without ever waiting.
struct Intake<'a> {
    topics: &'a Topics,
    decimals: u32,
    inputs: &'a mpsc::Sender<Input>,
    /// Packet ids to acknowledge, written by the polling task itself between polls.
    acks: mpsc::UnboundedSender<u16>,
    metrics: &'a Metrics,
    helpers: &'a tokio_util::task::TaskTracker,
    /// MQTT inputs taken and not yet answered, and the wake-up when one is.
    held: Arc<(std::sync::atomic::AtomicUsize, Notify)>,
    /// The broker's acknowledgements of the answers: an input is acknowledged only after its
    /// answer was (a kill -9 between the two would otherwise lose the answer for good).
    delivered: answers::AnswersDelivered,
}

/// Polls the event loop until `shutdown`. **Never awaits the gateway's input queue**: while
/// that queue is full, messages taken wait in `waiting` and the loop keeps turning, so the
/// broker's acknowledgements of our answers are read and our answers and acknowledgements keep
/// going out. Since nothing is acknowledged before its answer, the broker's in-flight window
/// bounds what the gateway holds; the rest waits in the broker's session queue.
async fn poll_loop(
    eventloop: &mut EventLoop,
    client: &AsyncClient,
    intake: &Intake<'_>,
    acks: &mut mpsc::UnboundedReceiver<u16>,
    state: &watch::Sender<BrokerState>,
    mut backoff: Backoff,
    shutdown: &CancellationToken,
) {
    let mut waiting: VecDeque<Input> = VecDeque::new();
    loop {
        // Past the intake window, stop reading (what was queued for the broker went out with
        // the last poll) until a lane answers one more.
        write_acks(eventloop, acks).await;
        while intake.held.0.load(std::sync::atomic::Ordering::Acquire) >= INTAKE_WINDOW {
            tokio::select! {
                () = intake.held.1.notified() => {}
                Some(pkid) = acks.recv() => write_ack_batch(eventloop, pkid, acks).await,
                () = shutdown.cancelled() => return,
            }
        }
        let event = tokio::select! {
            event = eventloop.poll() => event,
            permit = intake.inputs.reserve(), if !waiting.is_empty() => {
                match (permit, waiting.pop_front()) {
                    (Ok(permit), Some(input)) => permit.send(input),
                    // The gateway stopped: what waits is dropped unacknowledged (redelivered).
                    _ => waiting.clear(),
                }
                continue;
            }
            Some(pkid) = acks.recv() => {
                write_ack_batch(eventloop, pkid, acks).await;
                continue;
            }
            () = shutdown.cancelled() => return,
        };
        if let Ok(Event::Incoming(_)) = &event {
            heard_from_broker(eventloop);
        }
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the broker"
                );
                let client = client.clone();
                let topics = intake.topics.clone();
                let state = state.clone();
                // Subscribing and announcing are publishes: never from the polling task.
                intake.helpers.spawn(async move {
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
                if let Some(input) = intake.take(publish) {
                    if !waiting.is_empty() {
                        waiting.push_back(input);
                    } else if let Err(mpsc::error::TrySendError::Full(input)) =
                        intake.inputs.try_send(input)
                    {
                        waiting.push_back(input);
                    }
                }
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

impl Intake<'_> {
    /// The input a message carries, with its acknowledgement arranged: given once the gateway
    /// has answered it (a receipt: durably applied, or refused), after that answer. `None` for
    /// a topic the gateway does not serve (acknowledged at once).
    fn take(&self, publish: rumqttc::Publish) -> Option<Input> {
        let arrived = std::time::Instant::now();
        let (done, handled) = oneshot::channel();
        let input = match self.topics.classify(&publish.topic) {
            Some(IncomingTopic::Scan(lane)) => Input::Scan {
                lane,
                data: till::scan_payload(&publish.payload),
                origin: Origin::Mqtt,
                done: Some(done),
            },
            Some(IncomingTopic::Receipt(lane)) => {
                let receipt =
                    till::parse_receipt(&publish.payload, &lane, self.decimals).map_err(|err| {
                        Unreadable {
                            receipt_id: till::readable_receipt_id(&publish.payload),
                            message: err.to_string(),
                        }
                    });
                Input::Receipt {
                    lane,
                    receipt,
                    origin: Origin::Mqtt,
                    done: Some(done),
                    answer: None,
                }
            }
            Some(IncomingTopic::Redeem(lane)) => Input::Redeem {
                lane,
                request: till::parse_redeem(&publish.payload, self.decimals)
                    .map_err(|err| err.to_string()),
                done: Some(done),
            },
            Some(IncomingTopic::Void(lane)) => Input::Void {
                lane,
                request: till::parse_void(&publish.payload).map_err(|err| err.to_string()),
                done: Some(done),
            },
            None => {
                tracing::debug!(topic = %publish.topic, "ignoring a message on an unknown topic");
                let _ = self.acks.send(publish.pkid);
                return None;
            }
        };
        let acks = self.acks.clone();
        let metrics = self.metrics.clone();
        let held = self.held.clone();
        let delivered = self.delivered.clone();
        held.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.helpers.spawn(async move {
            // The lane reports once the input is durably handled and its answer queued, so the
            // acknowledgement follows both. A receipt that failed for an internal reason is not
            // acknowledged: the broker redelivers it.
            match handled.await {
                Ok(Handled::Durable | Handled::Refused) => {
                    metrics.answer_age(arrived.elapsed());
                    // Its answer was given before it was handled.
                    delivered.all_given_so_far().await;
                    let _ = acks.send(publish.pkid);
                }
                Ok(Handled::Failed) | Err(_) => {}
            }
            held.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            held.1.notify_one();
        });
        Some(input)
    }
}

/// Writes every acknowledgement waiting in `acks` (none: nothing is written).
async fn write_acks(eventloop: &mut EventLoop, acks: &mut mpsc::UnboundedReceiver<u16>) {
    if let Ok(pkid) = acks.try_recv() {
        write_ack_batch(eventloop, pkid, acks).await;
    }
}

/// Writes the acknowledgement of `first` and every other one waiting in `acks` straight to the
/// broker's connection, in one flush. The polling task does this itself, between polls, rather
/// than through rumqttc's request queue: rumqttc takes one queued request per turn and only
/// when no incoming packet is waiting, so under a flood of inputs queued acknowledgements
/// starved (and an acknowledgement waiting for room there deadlocked the intake window). A
/// PUBACK needs no client state. Without a connection they are dropped: the broker
/// redelivers those messages to the resumed session, and the gateway's idempotency absorbs
/// them.
async fn write_ack_batch(
    eventloop: &mut EventLoop,
    first: u16,
    acks: &mut mpsc::UnboundedReceiver<u16>,
) {
    let Some(network) = eventloop.network.as_mut() else {
        while acks.try_recv().is_ok() {}
        return;
    };
    let mut pkid = Some(first);
    while let Some(id) = pkid {
        if let Err(err) = network
            .write(Packet::PubAck(rumqttc::PubAck::new(id)))
            .await
        {
            tracing::warn!(error = ?err, "could not acknowledge a message to the broker");
            return;
        }
        pkid = acks.try_recv().ok();
    }
    if let Err(err) = network.flush().await {
        tracing::warn!(error = ?err, "could not acknowledge messages to the broker");
    }
}

/// Counts a packet heard from the broker as the answer to our last keep-alive ping. Under a
/// backlog the gateway reads its input connection only as fast as it answers, and Mosquitto
/// queues its PINGRESP behind every message it has already sent down that connection (2.0 sends
/// far past `max_inflight_messages`): at 5x capacity the PINGRESP came more than a keep-alive
/// later, rumqttc gave up on the connection ("Last pingreq isn't acked") once a minute, and
/// every reconnection redelivered the unacknowledged messages (answered again as duplicates).
/// A broker that sends nothing for a whole keep-alive still fails the check.
fn heard_from_broker(eventloop: &mut EventLoop) {
    eventloop.state.await_pingresp = false;
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
        assert_eq!(
            topics.classify(&topics.redeem("4")),
            Some(IncomingTopic::Redeem("4".into()))
        );
        assert_eq!(
            topics.classify("loyalty/berlin-001/lane/4/void"),
            Some(IncomingTopic::Void("4".into()))
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
