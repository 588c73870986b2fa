//! How the demo drives its lanes: over MQTT through the broker or straight into the gateway
//! ([`Lanes`]), each step shown and its answer latency recorded ([`Recorder`]).

use super::show_answer;
use crate::loadgen::Peer;
use loyalty_daemon::gateway::{self, GatewayHandle};
use loyalty_daemon::input::{Input, Origin, Unreadable};
use loyalty_daemon::mqtt::Topics;
use loyalty_protocol::till::ReceiptMessage;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A lane as the demo drives it: over MQTT through the broker, or straight into the gateway.
pub(super) enum Lanes {
    Mqtt(Peer, Topics),
    InProcess(Box<GatewayHandle>),
}

impl Lanes {
    /// Sends one message to a lane's topic and waits for `count` answers on that lane.
    pub(super) async fn send(
        &mut self,
        lane: &str,
        kind: &str,
        payload: Vec<u8>,
        count: usize,
    ) -> (Vec<Value>, Duration) {
        let started = Instant::now();
        let mut answers = Vec::new();
        match self {
            Lanes::Mqtt(peer, topics) => {
                let topic = match kind {
                    "scan" => topics.scan(lane),
                    "redeem" => topics.redeem(lane),
                    _ => topics.receipt(lane),
                };
                if peer
                    .client
                    .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    return (answers, started.elapsed());
                }
                while answers.len() < count {
                    match tokio::time::timeout(Duration::from_secs(10), peer.incoming.recv()).await
                    {
                        Ok(Some((topic, bytes))) if topics.response_lane(&topic) == Some(lane) => {
                            answers.push(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
                        }
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
            }
            Lanes::InProcess(handle) => {
                let input = if kind == "scan" {
                    Input::Scan {
                        lane: lane.to_string(),
                        data: loyalty_protocol::till::scan_payload(&payload),
                        origin: Origin::Mqtt,
                        done: None,
                    }
                } else if kind == "redeem" {
                    Input::Redeem {
                        lane: lane.to_string(),
                        request: loyalty_protocol::till::parse_redeem(&payload, 2)
                            .map_err(|e| e.to_string()),
                        done: None,
                    }
                } else {
                    Input::Receipt {
                        lane: lane.to_string(),
                        receipt: loyalty_protocol::till::parse_receipt(&payload, lane, 2).map_err(
                            |e| Unreadable {
                                receipt_id: loyalty_protocol::till::readable_receipt_id(&payload),
                                message: e.to_string(),
                            },
                        ),
                        origin: Origin::Mqtt,
                        done: None,
                        answer: None,
                    }
                };
                for answer in
                    gateway::request(handle, input, lane, count, Duration::from_secs(10)).await
                {
                    answers.push(serde_json::to_value(&answer).unwrap_or(Value::Null));
                }
            }
        }
        (answers, started.elapsed())
    }
}

pub(super) struct Recorder {
    pub(super) latencies: Vec<Duration>,
}

impl Recorder {
    pub(super) async fn scan(
        &mut self,
        lanes: &mut Lanes,
        lane: &str,
        text: &[u8],
        answers: usize,
    ) -> Vec<Value> {
        self.step(lanes, lane, "scan", text.to_vec(), answers).await
    }

    pub(super) async fn receipt(
        &mut self,
        lanes: &mut Lanes,
        lane: &str,
        receipt: &ReceiptMessage,
    ) -> Vec<Value> {
        self.step(lanes, lane, "receipt", receipt.to_json(), 1)
            .await
    }

    pub(super) async fn step(
        &mut self,
        lanes: &mut Lanes,
        lane: &str,
        kind: &str,
        payload: Vec<u8>,
        count: usize,
    ) -> Vec<Value> {
        let shown = String::from_utf8_lossy(&payload);
        let shown: String = shown.chars().take(110).collect();
        println!("    → lane {lane} {kind}: {shown}");
        let (answers, elapsed) = lanes.send(lane, kind, payload, count).await;
        if !answers.is_empty() {
            self.latencies.push(elapsed);
        }
        for answer in &answers {
            show_answer(answer);
        }
        answers
    }
}
