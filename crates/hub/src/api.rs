//! The HTTP router: one module per API area. `stores` serves SPEC 2.5 to the stores (events,
//! changes, by-card), `ops` the operator's `/health` and `/metrics`, [`crate::admin`] the admin
//! API and [`crate::export`] the export stream (both behind the admin token). Every answer is JSON; every refusal an
//! `ErrorBody` whose message says what to do, and a refusal changes nothing.

mod ops;
mod stores;

use crate::Hub;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use loyalty_protocol::crm::ErrorBody;
use std::io::Read;
use std::sync::Arc;

/// A response body.
pub type Body = Full<Bytes>;

/// Routes one request of the store `store` (its certificate's common name).
pub async fn route(request: Request<Incoming>, hub: Arc<Hub>, store: Arc<str>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["health"] => ops::health(&hub).await,
        ["metrics"] => ops::metrics(&hub).await,
        ["v1", "admin", rest @ ..] => {
            let rest: Vec<String> = rest.iter().map(|s| percent_decode(s)).collect();
            crate::admin::route(request, &hub, &rest).await
        }
        ["v1", "export"] => crate::export::route(request, &hub).await,
        ["v1", "stores", id, rest @ ..] => {
            let id = percent_decode(id);
            if *id != *store {
                hub.metrics.refuse("wrong_store");
                return error(
                    StatusCode::FORBIDDEN,
                    "wrong_store",
                    format!(
                        "this client certificate is for store {store:?}, not {id:?}: each store uses its own certificate"
                    ),
                );
            }
            let rest: Vec<String> = rest.iter().map(|s| percent_decode(s)).collect();
            stores::route(request, &hub, &store, &rest).await
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint {path}"),
        ),
    }
}

/// Decodes `%xx` escapes (invalid ones are kept as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `name` in a query string, percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(&value.replace('+', " ")))
    })
}

/// A JSON answer.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// An `ErrorBody` answer.
pub fn error(status: StatusCode, code: &str, message: String) -> Response<Body> {
    json(
        status,
        &ErrorBody {
            code: code.to_string(),
            message,
        },
    )
}

/// Most bytes of a refused (too large) body read and dropped before the answer: a server that
/// answers while the client is still sending, and closes, makes the client see a broken
/// connection instead of the 413. Past this, the answer goes out at once.
const DRAIN_MAX: u64 = 16 * 1024 * 1024;

/// Reads and drops up to [`DRAIN_MAX`] bytes of `body` (nothing when its declared length is
/// more).
async fn drain(mut body: Incoming, declared: Option<u64>) {
    if declared.is_some_and(|len| len > DRAIN_MAX) {
        return;
    }
    let mut read = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, |d| d.len() as u64);
        if read > DRAIN_MAX {
            return;
        }
    }
}

/// The request body, decompressed when `Content-Encoding: gzip`, at most `max` bytes either
/// way; the refusal to answer otherwise (413 too large, 400 bad gzip).
pub async fn read_body(request: Request<Incoming>, max: usize) -> Result<Bytes, Response<Body>> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the body is larger than {max} bytes (limits.max_body_bytes): send smaller batches"
            ),
        )
    };
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        drain(request.into_body(), declared).await;
        return Err(too_large());
    }
    let gzip = match request.headers().get(hyper::header::CONTENT_ENCODING) {
        None => false,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"gzip") => true,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"identity") => false,
        Some(v) => {
            return Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("Content-Encoding {v:?} is not supported: send gzip or plain JSON"),
            ))
        }
    };
    let mut incoming = request.into_body();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("the body could not be read: {e}"),
            )
        })?;
        if let Some(data) = frame.data_ref() {
            if body.len() + data.len() > max {
                drain(incoming, declared).await;
                return Err(too_large());
            }
            body.extend_from_slice(data);
        }
    }
    let body = Bytes::from(body);
    if !gzip {
        return Ok(body);
    }
    let mut out = Vec::new();
    match flate2::read::GzDecoder::new(&body[..])
        .take(max as u64 + 1)
        .read_to_end(&mut out)
    {
        Ok(_) if out.len() > max => Err(too_large()),
        Ok(_) => Ok(Bytes::from(out)),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_gzip",
            format!("Content-Encoding is gzip but the body is not valid gzip: {e}"),
        )),
    }
}
