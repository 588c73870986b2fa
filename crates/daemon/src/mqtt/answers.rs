//! The answers' own broker connection: every answer to a lane goes out on a second MQTT
//! connection (client id `{mqtt.client_id}-answers`) that subscribes to nothing, so a stream of
//! incoming inputs can never hold answers back. rumqttc's event loop hands out at most one
//! queued request per turn and only when no incoming packet is waiting; on the inputs'
//! connection, under a flood of receipts, answers queued there starved (measured: 10-25
//! answers/s while 1,000 receipts/s were applied). Answers keep their order: straight into
//! rumqttc's request queue, or, while that queue is full (broker away), into a backlog sent in
//! order by one task; once anything waits there, everything after it waits behind it.

use super::Topics;
use crate::backoff::{Backoff, Jitter};
use loyalty_protocol::till::Response;
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, QoS};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// Sends answers to the lanes, in the order given, never blocking (see the module's doc).
#[derive(Clone)]
pub struct AnswerSender {
    shared: Arc<Outgoing>,
}

/// The receiving end of [`AnswerSender`], handed to [`super::run`].
pub struct AnswerReceiver {
    shared: Arc<Outgoing>,
}

struct Outgoing {
    direct: OnceLock<(AsyncClient, Topics)>,
    backlog: Mutex<Backlog>,
    wake: Notify,
    /// Answers given to [`AnswerSender::send`] so far, in their order.
    sent: AtomicU64,
    /// Of those, how many the broker has acknowledged (PUBACK; one given up at shutdown counts
    /// too): an input is acknowledged only once the answers given before it are, and the
    /// goodbye waits for all of them ([`AnswersDelivered`]).
    acked: watch::Sender<u64>,
}

#[derive(Default)]
struct Backlog {
    queue: VecDeque<Response>,
    /// The publisher task holds an answer it is sending (taken from `queue`, not yet in
    /// rumqttc's queue): nothing may go direct meanwhile.
    sending: bool,
}

/// A connected pair of answer sender and receiver.
pub fn answer_channel() -> (AnswerSender, AnswerReceiver) {
    let shared = Arc::new(Outgoing {
        direct: OnceLock::new(),
        backlog: Mutex::new(Backlog::default()),
        wake: Notify::new(),
        sent: AtomicU64::new(0),
        acked: watch::Sender::new(0),
    });
    (
        AnswerSender {
            shared: shared.clone(),
        },
        AnswerReceiver { shared },
    )
}

impl AnswerSender {
    /// Publishes `answer` on its lane's response topic (QoS 1), never blocking.
    pub fn send(&self, answer: Response) {
        let shared = &*self.shared;
        let mut backlog = shared
            .backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Counted under the backlog's lock: the count's order is the answers' order.
        shared.sent.fetch_add(1, Ordering::Relaxed);
        if backlog.queue.is_empty() && !backlog.sending {
            if let Some((client, topics)) = shared.direct.get() {
                let topic = topics.response(answer.lane());
                if client
                    .try_publish(topic, QoS::AtLeastOnce, false, answer.to_json())
                    .is_ok()
                {
                    return;
                }
            }
        }
        backlog.queue.push_back(answer);
        drop(backlog);
        shared.wake.notify_one();
    }
}

impl Outgoing {
    /// The next answer of the backlog, marked as being sent; `None` (and nothing being sent)
    /// when the backlog is empty.
    fn next(&self) -> Option<Response> {
        let mut backlog = self
            .backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let item = backlog.queue.pop_front();
        backlog.sending = item.is_some();
        item
    }
}

impl AnswerReceiver {
    /// A handle that waits until the broker has the answers given so far.
    pub(super) fn delivered(&self) -> AnswersDelivered {
        AnswersDelivered {
            shared: self.shared.clone(),
        }
    }
}

/// Waits for the broker's acknowledgement of answers (see [`Outgoing::acked`]).
#[derive(Clone)]
pub(super) struct AnswersDelivered {
    shared: Arc<Outgoing>,
}

impl AnswersDelivered {
    /// Returns once the broker has acknowledged every answer given before the call: then an
    /// input answered before it may be acknowledged (a kill -9 can no longer lose its answer
    /// while the broker forgets the input).
    pub(super) async fn all_given_so_far(&self) {
        let given = self.shared.sent.load(Ordering::Relaxed);
        let mut acked = self.shared.acked.subscribe();
        let _ = acked.wait_for(|acked| *acked >= given).await;
    }
}

/// The answers sent to the broker and not acknowledged yet, by packet id, so that a PUBACK
/// counts once, for an answer still waiting for it. The broker may acknowledge a publish twice
/// around a reconnect (rumqttc sends the unacknowledged ones again), and rumqttc reports an
/// unsolicited PUBACK as an event too: counting every PUBACK could let an input be
/// acknowledged before its answer reached the broker.
#[derive(Default)]
struct Unacknowledged(HashSet<u16>);

impl Unacknowledged {
    /// Follows the connection's `event`: a publish going out (again, after a reconnect: the same
    /// packet id) waits for its PUBACK; whether this event is the PUBACK of an answer still
    /// waiting for one.
    fn acknowledges_an_answer(&mut self, event: &Event) -> bool {
        match event {
            Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => {
                self.0.insert(*pkid);
                false
            }
            Event::Incoming(rumqttc::Packet::PubAck(ack)) => self.0.remove(&ack.pkid),
            _ => false,
        }
    }
}

/// The running answers' connection.
pub(super) struct AnswerConnection {
    client: AsyncClient,
    shared: Arc<Outgoing>,
    publisher: tokio::task::JoinHandle<()>,
    poller: tokio::task::JoinHandle<()>,
    closing: CancellationToken,
}

impl AnswerConnection {
    /// Connects with `options` and starts sending what `answers` is given. `drained`: the
    /// lanes have handled everything; the backlog's publisher ends once it is empty.
    pub(super) fn start(
        answers: AnswerReceiver,
        options: MqttOptions,
        topics: Topics,
        backoff: Backoff,
        drained: CancellationToken,
    ) -> AnswerConnection {
        let (client, mut eventloop) = AsyncClient::new(options, super::REQUEST_QUEUE);
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(5);
        eventloop.set_network_options(network);
        let _ = answers.shared.direct.set((client.clone(), topics.clone()));
        let shared = answers.shared.clone();
        let publisher = tokio::spawn(send_backlog(
            answers.shared,
            client.clone(),
            topics,
            drained,
        ));
        let closing = CancellationToken::new();
        let poller = {
            let shared = shared.clone();
            let closing = closing.clone();
            let mut backoff = backoff.with_jitter(Jitter::Extra);
            tokio::spawn(async move {
                let mut unacknowledged = Unacknowledged::default();
                loop {
                    let event = eventloop.poll().await;
                    if let Ok(event) = &event {
                        if unacknowledged.acknowledges_an_answer(event) {
                            shared.acked.send_modify(|n| *n += 1);
                        }
                    }
                    match event {
                        Ok(Event::Incoming(rumqttc::Packet::ConnAck(_))) => backoff.reset(),
                        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                        Ok(_) => {}
                        Err(err) => {
                            if closing.is_cancelled() {
                                return;
                            }
                            tracing::warn!(error = %err, "answers' broker connection lost; reconnecting");
                            tokio::select! {
                                () = tokio::time::sleep(backoff.next_delay()) => {}
                                () = closing.cancelled() => return,
                            }
                        }
                    }
                }
            })
        };
        AnswerConnection {
            client,
            shared,
            publisher,
            poller,
            closing,
        }
    }

    /// Once the lanes are drained: waits for the backlog to be queued and for the broker to
    /// acknowledge every answer (a connection lost meanwhile is reconnected and rumqttc sends
    /// the unacknowledged ones again: their inputs are acknowledged already), then
    /// disconnects, within `bound`.
    pub(super) async fn close(self, bound: Duration) {
        let AnswerConnection {
            client,
            shared,
            publisher,
            mut poller,
            closing,
        } = self;
        let goodbye = async {
            let _ = publisher.await;
            AnswersDelivered { shared }.all_given_so_far().await;
            closing.cancel();
            let _ = client.disconnect().await;
            let _ = (&mut poller).await;
        };
        if tokio::time::timeout(bound, goodbye).await.is_err() {
            tracing::warn!("the answers' connection did not close in time");
            poller.abort();
        }
    }
}

/// Sends the backlog of [`AnswerSender`] in order, waiting for room in rumqttc's queue, until
/// `drained` and the backlog is empty.
async fn send_backlog(
    shared: Arc<Outgoing>,
    client: AsyncClient,
    topics: Topics,
    drained: CancellationToken,
) {
    loop {
        if let Some(answer) = shared.next() {
            let topic = topics.response(answer.lane());
            if let Err(err) = client
                .publish(topic, QoS::AtLeastOnce, false, answer.to_json())
                .await
            {
                // The connection's queue is gone (shutdown): nothing will acknowledge it.
                tracing::warn!(error = %err, "could not queue an answer for the broker");
                shared.acked.send_modify(|n| *n += 1);
            }
            continue;
        }
        if drained.is_cancelled() {
            return;
        }
        tokio::select! {
            () = shared.wake.notified() => {}
            () = drained.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Unacknowledged;
    use rumqttc::{Event, Outgoing, Packet, PubAck};

    #[test]
    fn a_puback_counts_once_for_an_answer_still_waiting_for_it() {
        let sent = |pkid| Event::Outgoing(Outgoing::Publish(pkid));
        let puback = |pkid| Event::Incoming(Packet::PubAck(PubAck::new(pkid)));
        let mut unacknowledged = Unacknowledged::default();
        assert!(!unacknowledged.acknowledges_an_answer(&sent(5)));
        assert!(!unacknowledged.acknowledges_an_answer(&sent(6)));
        assert!(unacknowledged.acknowledges_an_answer(&puback(5)));
        // The broker acknowledges 5 again after a reconnect: no second answer counted.
        assert!(!unacknowledged.acknowledges_an_answer(&puback(5)));
        // 6 is sent again after the reconnect (same packet id) and acknowledged once.
        assert!(!unacknowledged.acknowledges_an_answer(&sent(6)));
        assert!(unacknowledged.acknowledges_an_answer(&puback(6)));
        assert!(!unacknowledged.acknowledges_an_answer(&puback(6)));
        // An acknowledgement for a publish never sent counts nothing.
        assert!(!unacknowledged.acknowledges_an_answer(&puback(7)));
    }
}
