//! An MQTT client that plays a till or a relay ([`Peer`]): TCP_NODELAY, subscriptions
//! acknowledged before it is handed out, every message received queued for the caller.

use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use std::time::Duration;
use tokio::sync::mpsc;

/// An MQTT client that plays a till (or a relay): publishes, and receives what it subscribed to.
pub struct Peer {
    /// The client, for publishing.
    pub client: AsyncClient,
    /// Messages received: (topic, payload).
    pub incoming: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    _poller: tokio::task::JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The poller owns the connection: without this it would keep reconnecting forever.
        self._poller.abort();
    }
}

/// Connects a peer with TCP_NODELAY and waits until its subscriptions are acknowledged.
pub async fn connect_peer(
    host: &str,
    port: u16,
    id: &str,
    subscribe: &[String],
) -> anyhow::Result<Peer> {
    let mut options = MqttOptions::new(id, host, port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (tx, incoming) = mpsc::unbounded_channel();
    let (ready_tx, ready) = tokio::sync::oneshot::channel::<()>();
    let wanted = subscribe.len();
    let poller = tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        let mut acked = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    acked += 1;
                    if acked >= wanted {
                        if let Some(done) = ready_tx.take() {
                            let _ = done.send(());
                        }
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) if wanted == 0 => {
                    if let Some(done) = ready_tx.take() {
                        let _ = done.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    for topic in subscribe {
        client.subscribe(topic.clone(), QoS::AtLeastOnce).await?;
    }
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .map_err(|_| anyhow::anyhow!("the broker at {host}:{port} did not answer"))??;
    Ok(Peer {
        client,
        incoming,
        _poller: poller,
    })
}
