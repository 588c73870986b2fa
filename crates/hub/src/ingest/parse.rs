//! A batch as the hub accepts it: the `EventsRequest` body parsed and every event's payload
//! typed with `loyalty_protocol::crm::events` (the gateway's own definitions), checked before
//! any database work. Every refusal names what is wrong (`events[3] (seq 17, type ledger):
//! payload.points: invalid type ...`).

use loyalty_protocol::crm::events::{
    CustomerErasedEvent, CustomerEvent, EventType, LedgerEvent, ReceiptEvent, VoucherIssuedEvent,
    VoucherKeyEvent, VoucherRedeemedEvent,
};
use loyalty_protocol::crm::EventsRequest;

/// Longest id, instance or event id accepted.
const MAX_ID: usize = 256;

/// A typed payload.
#[derive(Debug)]
pub enum Payload<'a> {
    /// `customer_enrolled`.
    Enrolled(CustomerEvent<'a>),
    /// `ledger`.
    Ledger(LedgerEvent<'a>),
    /// `receipt`.
    Receipt(ReceiptEvent<'a>),
    /// `voucher_issued`.
    VoucherIssued(VoucherIssuedEvent<'a>),
    /// `voucher_redeemed`.
    VoucherRedeemed(VoucherRedeemedEvent<'a>),
    /// `voucher_key`.
    VoucherKey(VoucherKeyEvent<'a>),
    /// `customer_erased`: the store confirms an erasure.
    Erased(CustomerErasedEvent<'a>),
    /// A type this hub does not apply (stored, exported, not interpreted).
    Other,
}

/// One event of a batch.
#[derive(Debug)]
pub struct Event<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Event id.
    pub id: &'a str,
    /// Type string.
    pub kind: &'a str,
    /// `at` as sent.
    pub at_text: &'a str,
    /// `at` parsed.
    pub at: jiff::Timestamp,
    /// The payload's JSON text, verbatim.
    pub raw: &'a str,
    /// The payload, typed.
    pub payload: Payload<'a>,
}

/// A parsed, checked batch.
#[derive(Debug)]
pub struct Batch<'a> {
    /// Store id.
    pub store: &'a str,
    /// Database instance of the store.
    pub instance: &'a str,
    /// Events, seq increasing by one.
    pub events: Vec<Event<'a>>,
}

fn typed<'a, T: serde::Deserialize<'a>>(raw: &'a str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("payload.{path}: {}", e.inner())
        }
    })
}

/// True for decimal text like `12`, `-3.50`, `0.532`.
fn is_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    !int.is_empty()
        && int.len() <= 18
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac
            .is_none_or(|f| !f.is_empty() && f.len() <= 6 && f.bytes().all(|b| b.is_ascii_digit()))
}

fn decimal(field: &str, text: &str) -> Result<(), String> {
    if is_decimal(text) {
        Ok(())
    } else {
        Err(format!("payload.{field}: {text:?} is not a decimal number"))
    }
}

fn check_payload(payload: &Payload<'_>) -> Result<(), String> {
    match payload {
        Payload::Receipt(r) => {
            decimal("total", &r.total)?;
            for (i, line) in r.lines.iter().enumerate() {
                decimal(&format!("lines[{i}].amount"), &line.amount)?;
                decimal(&format!("lines[{i}].qty"), &line.qty)?;
                if let Some(price) = &line.unit_price {
                    decimal(&format!("lines[{i}].unit_price"), price)?;
                }
            }
            if r.kind != "sale" && r.kind != "return" {
                return Err(format!(
                    "payload.kind: {:?} is neither sale nor return",
                    r.kind
                ));
            }
            Ok(())
        }
        Payload::VoucherRedeemed(v) => decimal("discount", &v.discount),
        Payload::Ledger(l) if l.customer_id.is_empty() => {
            Err("payload.customer_id: empty".to_string())
        }
        Payload::Enrolled(c) if c.customer_id.is_empty() => {
            Err("payload.customer_id: empty".to_string())
        }
        _ => Ok(()),
    }
}

fn id_ok(what: &str, text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > MAX_ID {
        Err(format!("{what}: must be 1 to {MAX_ID} characters"))
    } else {
        Ok(())
    }
}

/// Parses `body` (a `POST /v1/stores/{store}/events` body) for `store`.
pub fn parse<'a>(body: &'a [u8], store: &'a str) -> Result<Batch<'a>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    if text.contains("\\u0000") {
        return Err(
            "the body contains a NUL character (\\u0000), which is not accepted in any field"
                .into(),
        );
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let request: EventsRequest<'a> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner().to_string();
        if inner.contains("expected a borrowed string") {
            format!(
                "malformed batch at {}: store_id, instance, id, type and at may not contain JSON escapes (quotes, backslashes, control characters)",
                e.path()
            )
        } else {
            format!("malformed batch at {}: {inner}", e.path())
        }
    })?;
    de.end()
        .map_err(|e| format!("trailing data after the batch: {e}"))?;
    if request.store_id != store {
        return Err(format!(
            "store_id {:?} in the body differs from the store in the path and certificate ({store:?})",
            request.store_id
        ));
    }
    id_ok("instance", request.instance)?;
    let mut events = Vec::with_capacity(request.events.len());
    for (i, event) in request.events.into_iter().enumerate() {
        let context = |message: String| {
            format!(
                "events[{i}] (seq {}, type {:?}): {message}",
                event.seq, event.kind
            )
        };
        if event.seq == 0 {
            return Err(context("seq must be at least 1".into()));
        }
        if let Some(prev) = events.last().map(|e: &Event| e.seq) {
            if event.seq != prev + 1 {
                return Err(context(format!(
                    "seq must follow {prev} without a gap inside a batch"
                )));
            }
        }
        if i64::try_from(event.seq).is_err() {
            return Err(context("seq is too large".into()));
        }
        id_ok("id", event.id).map_err(context)?;
        id_ok("type", event.kind).map_err(context)?;
        let at: jiff::Timestamp = event
            .at
            .parse()
            .map_err(|e| context(format!("at: {:?} is not an RFC 3339 time: {e}", event.at)))?;
        let raw = event.payload.get();
        let payload = match EventType::parse(event.kind) {
            Some(EventType::CustomerEnrolled) => typed(raw).map(Payload::Enrolled),
            Some(EventType::Ledger) => typed(raw).map(Payload::Ledger),
            Some(EventType::Receipt) => typed(raw).map(Payload::Receipt),
            Some(EventType::VoucherIssued) => typed(raw).map(Payload::VoucherIssued),
            Some(EventType::VoucherRedeemed) => typed(raw).map(Payload::VoucherRedeemed),
            Some(EventType::VoucherKey) => typed(raw).map(Payload::VoucherKey),
            Some(EventType::CustomerErased) => typed(raw).map(Payload::Erased),
            // Stored and exported as sent; head office does not interpret offer uses (yet).
            Some(EventType::OfferRedeemed) | None => {
                if !raw.starts_with('{') {
                    Err("payload must be a JSON object".to_string())
                } else {
                    Ok(Payload::Other)
                }
            }
        }
        .map_err(context)?;
        check_payload(&payload).map_err(context)?;
        events.push(Event {
            seq: event.seq,
            id: event.id,
            kind: event.kind,
            at_text: event.at,
            at,
            raw,
            payload,
        });
    }
    Ok(Batch {
        store,
        instance: request.instance,
        events,
    })
}
