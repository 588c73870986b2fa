//! An open-loop MQTT publisher on a plain socket, as a peer comparison offers load: QoS 1
//! receipts on several lanes at a fixed rate (or flat out), never waiting for the broker's
//! PUBACKs (a thread reads them away), so the offered rate does not bend to the system under
//! test. Receipt `i` is `R-{i}` on lane `L{i % lanes + 1}`, numbered from `first`; the send time
//! of each is returned.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// What to offer.
#[derive(Debug, Clone)]
pub struct Offer {
    /// Topic prefix of the gateway (`loyalty/{store_id}`).
    pub prefix: String,
    /// Lanes the receipts are spread over, round robin.
    pub lanes: usize,
    /// Receipts per second; `None`: flat out (as fast as the socket takes them).
    pub per_second: Option<f64>,
    /// Receipts in total.
    pub total: usize,
    /// The number of the first receipt (a second offer to the same gateway starts past the first).
    pub first: usize,
    /// The MQTT client id.
    pub client_id: String,
}

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

fn mqtt_string(text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// One receipt's PUBLISH packet (QoS 1, packet id `pkid`).
fn receipt_packet(offer: &Offer, index: usize, pkid: u16, out: &mut Vec<u8>) {
    let lane = format!("L{}", index % offer.lanes + 1);
    let body = serde_json::to_vec(&super::sale(
        &format!("R-{index}"),
        &lane,
        None,
        &[("4006381333931", 2, "2.98", "stationery")],
    ))
    .expect("receipt json");
    let mut variable = Vec::with_capacity(body.len() + 64);
    mqtt_string(
        &loyalty_daemon::mqtt::Topics::new(&offer.prefix).receipt(&lane),
        &mut variable,
    );
    variable.extend_from_slice(&pkid.to_be_bytes());
    variable.extend_from_slice(&body);
    out.push(0x32);
    remaining_length(variable.len(), out);
    out.extend_from_slice(&variable);
}

/// Connects to the broker on `127.0.0.1:port` and publishes `offer`; returns when every receipt
/// is written, with the time each was written (index = receipt number less `offer.first`).
pub fn publish(port: u16, offer: &Offer) -> Vec<Instant> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut connect = Vec::new();
    mqtt_string("MQTT", &mut connect);
    connect.extend_from_slice(&[4, 2, 0, 60]);
    mqtt_string(&offer.client_id, &mut connect);
    let mut packet = vec![0x10];
    remaining_length(connect.len(), &mut packet);
    packet.extend_from_slice(&connect);
    stream.write_all(&packet).expect("CONNECT");
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack[3], 0, "the broker refused the publisher");
    let mut reader = stream.try_clone().expect("clone");
    std::thread::spawn(move || {
        let mut sink = [0u8; 65536];
        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
    });
    let started = Instant::now();
    let mut sent_at = Vec::with_capacity(offer.total);
    let mut pkid: u16 = 0;
    let mut batch = Vec::new();
    while sent_at.len() < offer.total {
        let due = match offer.per_second {
            Some(rate) => ((started.elapsed().as_secs_f64() * rate) as usize).min(offer.total),
            // Flat out: 64 at a time, as fast as the broker reads them.
            None => (sent_at.len() + 64).min(offer.total),
        };
        batch.clear();
        let written = sent_at.len();
        for index in written..due {
            pkid = pkid % u16::MAX + 1;
            receipt_packet(offer, offer.first + index, pkid, &mut batch);
        }
        if !batch.is_empty() {
            stream.write_all(&batch).expect("PUBLISH");
            let now = Instant::now();
            sent_at.resize(due, now);
        }
        if offer.per_second.is_some() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sent_at
}
