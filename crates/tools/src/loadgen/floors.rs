//! The floors under the gateway's latency: the broker's own round trip over the same path
//! (a relay client echoing through the broker) and the disk's write + `fdatasync`.

use super::peer::connect_peer;
use super::random_fraction;
use super::report::Percentiles;
use rumqttc::QoS;
use std::time::{Duration, Instant};

/// When an echo measurement stops.
pub(super) enum EchoUntil {
    /// After this many answered echoes, one right after the other.
    Samples(usize),
    /// At this moment, with a pause of about `pause` (jittered ±50%) between echoes.
    Deadline { at: Instant, pause: Duration },
}

/// Measures the broker's round trip over the gateway's path without the gateway: a relay client
/// republishes every message it receives, and a sender times the echo.
pub(super) async fn broker_floor(
    host: &str,
    port: u16,
    prefix: &str,
    until: EchoUntil,
) -> anyhow::Result<Percentiles> {
    let run = format!(
        "{}-{:x}-{:x}",
        std::process::id(),
        jiff::Timestamp::now().as_microsecond(),
        (random_fraction() * 1e9) as u64
    );
    let inbound = format!("{prefix}/loadgen/{run}/in");
    let outbound = format!("{prefix}/loadgen/{run}/out");
    let mut relay = connect_peer(
        host,
        port,
        &format!("loadgen-relay-{run}"),
        std::slice::from_ref(&inbound),
    )
    .await?;
    let relay_client = relay.client.clone();
    let relay_out = outbound.clone();
    let relay_task = tokio::spawn(async move {
        while let Some((_, payload)) = relay.incoming.recv().await {
            if relay_client
                .publish(relay_out.clone(), QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut sender = connect_peer(
        host,
        port,
        &format!("loadgen-echo-{run}"),
        std::slice::from_ref(&outbound),
    )
    .await?;
    let mut latencies = Vec::new();
    for i in 0.. {
        match until {
            EchoUntil::Samples(samples) if i >= samples => break,
            EchoUntil::Deadline { at, .. } if Instant::now() >= at => break,
            _ => {}
        }
        let started = Instant::now();
        sender
            .client
            .publish(
                inbound.clone(),
                QoS::AtLeastOnce,
                false,
                format!("{i}").into_bytes(),
            )
            .await?;
        if tokio::time::timeout(Duration::from_secs(5), sender.incoming.recv())
            .await
            .ok()
            .flatten()
            .is_some()
        {
            latencies.push(started.elapsed());
        }
        if let EchoUntil::Deadline { pause, .. } = until {
            tokio::time::sleep(pause.mul_f64(0.5 + random_fraction())).await;
        }
    }
    relay_task.abort();
    Ok(Percentiles::of(&mut latencies))
}

/// Times a 4 KiB write + `fdatasync` of a scratch file in `dir` every ~10 ms (jittered) until
/// `until`. The file is written in full and synced first, so that the measured syncs write data
/// only (no file growth, as in a preallocated log); it is removed afterwards.
pub(super) fn disk_sync_floor(
    dir: &std::path::Path,
    until: Instant,
) -> anyhow::Result<Percentiles> {
    use std::os::unix::fs::FileExt;
    const BLOCK: usize = 4096;
    const BLOCKS: u64 = 1024;
    let path = dir.join(format!(".loadgen-disk-floor-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|err| anyhow::anyhow!("cannot create {}: {err}", path.display()))?;
    let measured = (|| -> anyhow::Result<Vec<Duration>> {
        let mut block = vec![0u8; BLOCK];
        for i in 0..BLOCKS {
            file.write_all_at(&block, i * BLOCK as u64)?;
        }
        file.sync_all()?;
        let mut samples = Vec::new();
        let mut i = 0u64;
        while Instant::now() < until {
            block[..8].copy_from_slice(&i.to_le_bytes());
            let started = Instant::now();
            file.write_all_at(&block, (i % BLOCKS) * BLOCK as u64)?;
            file.sync_data()?;
            samples.push(started.elapsed());
            i += 1;
            std::thread::sleep(Duration::from_millis(10).mul_f64(0.5 + random_fraction()));
        }
        Ok(samples)
    })();
    let _ = std::fs::remove_file(&path);
    Ok(Percentiles::of(&mut measured?))
}
