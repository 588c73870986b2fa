//! The chain demo's erasure step: head office names the merged customer through the admin API
//! (`PUT /v1/admin/customers/{id}`, bearer token, mutual TLS as `head-office`), both stores get
//! the name in their feed; then `POST /v1/admin/erasures` erases her everywhere, both stores
//! clear card and name, confirm with `customer_erased`, and `GET /v1/admin/erasures/{id}` reports
//! both confirmed.

use super::{until, StoreBox, WITHIN};
use crate::demo::{explain, say};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The admin API's bearer token (a throw-away one, written to `admin.token`).
pub(super) const TOKEN: &str = "chain-demo-admin-token-3f9c1a";
/// The name head office gives her before the erasure (to show it leaves the stores).
const NAME: &str = "Berta Beispiel";

/// `PUT /v1/admin/customers/{id}`'s body (only the name: cards and consent stay).
#[derive(serde::Serialize)]
struct Profile<'a> {
    display_name: &'a str,
}

/// `POST /v1/admin/erasures`'s body.
#[derive(serde::Serialize)]
struct Erasure<'a> {
    customer_id: &'a str,
}

/// What the erasure step found.
#[derive(Debug)]
pub(super) struct Erased {
    /// From the erasure request until the hub reported every store confirmed.
    pub elapsed: Duration,
    /// The stores the hub reports confirmed.
    pub confirmed: Vec<String>,
    /// Card and name gone from both stores' data.
    pub gone_at_both: bool,
    /// The hub reports the erasure complete.
    pub complete: bool,
}

/// One admin request to the hub (`https://localhost:port`) as `head-office`.
async fn admin(
    dir: &Path,
    port: u16,
    method: &str,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<(u16, Value)> {
    let files = dir.join("head-office");
    let (cert, key) = (files.join("client.pem"), files.join("client.key"));
    let config = loyalty_daemon::tls::build_client_config(&loyalty_daemon::tls::ClientSpec {
        section: "admin",
        ca_file: Some(&dir.join("ca.pem")),
        identity: Some((&cert, &key)),
        tls13_only: true,
        alpn: &[b"http/1.1"],
    })?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let bytes = body.unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn name_at(store: &StoreBox, id: &str) -> Option<String> {
    store
        .handle
        .store
        .customer(id)
        .ok()
        .flatten()
        .and_then(|c| c.name)
}

fn states(status: &Value) -> String {
    let stores = status["stores"].as_array().cloned().unwrap_or_default();
    let parts: Vec<String> = stores
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["store_id"].as_str().unwrap_or("?"),
                s["state"].as_str().unwrap_or("?")
            )
        })
        .collect();
    parts.join(", ")
}

/// Step 4: names `customer` (holder of `card`) at head office, then erases her everywhere.
pub(super) async fn erase(
    dir: &Path,
    port: u16,
    a: &StoreBox,
    b: &StoreBox,
    customer: Option<&str>,
    card: &str,
) -> anyhow::Result<Option<Erased>> {
    say("Head office names the merged customer, then erases her everywhere");
    let Some(id) = customer else {
        explain("(the merge step found no single customer: the step is skipped)");
        return Ok(None);
    };
    let started = Instant::now();
    let (status, answer) = admin(
        dir,
        port,
        "PUT",
        &format!("/v1/admin/customers/{id}"),
        Some(serde_json::to_string(&Profile { display_name: NAME })?),
    )
    .await?;
    if status != 200 {
        explain(&format!(
            "The admin API refused the name: {status} {answer}"
        ));
        return Ok(None);
    }
    let named = until(WITHIN, || {
        name_at(a, id).as_deref() == Some(NAME) && name_at(b, id).as_deref() == Some(NAME)
    })
    .await;
    explain(&format!(
        "PUT /v1/admin/customers/{id} {{display_name: {NAME:?}}}: {}",
        if named {
            format!(
                "both stores hold the name {} ms later.",
                started.elapsed().as_millis()
            )
        } else {
            "the stores do not hold the name within 5 s.".to_string()
        }
    ));

    let started = Instant::now();
    let (status, answer) = admin(
        dir,
        port,
        "POST",
        "/v1/admin/erasures",
        Some(serde_json::to_string(&Erasure { customer_id: id })?),
    )
    .await?;
    if status != 200 {
        explain(&format!(
            "The admin API refused the erasure: {status} {answer}"
        ));
        return Ok(None);
    }
    explain(&format!(
        "POST /v1/admin/erasures {{customer_id: {id}}}: head office's rows keep no card or name; \
         stores: {}.",
        states(&answer)
    ));
    let gone = |s: &StoreBox| s.customer_of(card).is_none() && name_at(s, id).is_none();
    let gone_at_both = until(WITHIN, || gone(a) && gone(b)).await;
    explain(&format!(
        "Both stores' data: card {card} {} and name {} ({} ms after the request); a lane would \
         now treat the card as new.",
        if a.customer_of(card).is_none() && b.customer_of(card).is_none() {
            "unknown"
        } else {
            "STILL KNOWN"
        },
        if name_at(a, id).is_none() && name_at(b, id).is_none() {
            "gone"
        } else {
            "STILL THERE"
        },
        started.elapsed().as_millis()
    ));
    // Each store confirms with a `customer_erased` event; upload it now.
    let _ = tokio::join!(a.synced(), b.synced());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut report = answer;
    while report["complete"] != true && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (status, answer) =
            admin(dir, port, "GET", &format!("/v1/admin/erasures/{id}"), None).await?;
        if status == 200 {
            report = answer;
        }
    }
    let elapsed = started.elapsed();
    let complete = report["complete"] == true;
    explain(&format!(
        "GET /v1/admin/erasures/{id}: complete = {complete}; {} ({} ms after the request).",
        states(&report),
        elapsed.as_millis()
    ));
    let confirmed = report["stores"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|s| s["state"] == "confirmed")
        .filter_map(|s| s["store_id"].as_str().map(str::to_string))
        .collect();
    Ok(Some(Erased {
        elapsed,
        confirmed,
        gone_at_both,
        complete,
    }))
}
