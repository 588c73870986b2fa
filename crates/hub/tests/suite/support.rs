//! The hub tests' harness: a private PostgreSQL cluster (`testkit::Postgres`), a test PKI, real
//! `loyalty-hub` processes started from the built binary with a generated configuration, a
//! mutual-TLS HTTP client per store, event builders using the protocol's own payload types, the
//! admin API with its token, and SQL helpers to look at what the hub stored.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use loyalty_protocol::crm::events::{
    CustomerEvent, LedgerEvent, ReceiptEvent, VoucherRedeemedEvent,
};
use loyalty_protocol::crm::{EventsRequest, WireEvent};
use loyalty_tools::certs::{write_pem, Validity};
use loyalty_tools::testkit::crm::Pki;
use loyalty_tools::testkit::Postgres;
use std::borrow::Cow;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// PostgreSQL + PKI shared by the hubs of one test.
pub struct Env {
    pub pg: Postgres,
    pub pki: Pki,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            pg: Postgres::start(),
            pki: Pki::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The hub configuration text (listen on a free port chosen by the OS: `127.0.0.1:0`).
    pub fn config_text(&self, extra: &str) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n\
             [database]\nurl = {:?}\npool_size = 8\n[feed]\nlong_poll_max_secs = 60\n{extra}",
            self.pki.server_cert,
            self.pki.server_key,
            self.pki.ca_file,
            self.pg.connection_string(),
        )
    }

    /// Starts a `loyalty-hub` process.
    pub fn hub(&self, extra: &str) -> HubProcess {
        let config = self
            .dir
            .path()
            .join(format!("hub-{}.toml", loyalty_tools::testkit::free_port()));
        std::fs::write(&config, self.config_text(extra)).expect("write config");
        HubProcess::start(config)
    }

    /// A client for `store` (its own certificate from the test CA).
    pub fn client(&self, store: &str) -> Client {
        let issued = self.pki.ca.client(store, Validity::Current).expect("cert");
        let cert = self.dir.path().join(format!("{store}.pem"));
        let key = self.dir.path().join(format!("{store}.key"));
        write_pem(&cert, &issued.cert_pem, false).expect("write");
        write_pem(&key, &issued.key_pem, true).expect("write");
        let config = loyalty_daemon::tls::build_client_config(&loyalty_daemon::tls::ClientSpec {
            section: "crm",
            ca_file: Some(&self.pki.ca_file),
            identity: Some((&cert, &key)),
            tls13_only: true,
            alpn: &[b"http/1.1"],
        })
        .expect("client TLS");
        Client {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// A database connection for looking at rows.
    pub async fn sql(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.pg.connection_string(), tokio_postgres::NoTls)
                .await
                .expect("connect");
        tokio::spawn(connection);
        client
    }
}

/// One `loyalty-hub` child process.
pub struct HubProcess {
    child: Child,
    pub addr: SocketAddr,
    _config: PathBuf,
}

impl HubProcess {
    pub fn start(config: PathBuf) -> HubProcess {
        // `LOYALTY_HUB_BIN`: another build of the hub (the benchmark's A/B comparisons).
        let binary = std::env::var_os("LOYALTY_HUB_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_loyalty-hub")));
        let mut child = Command::new(binary)
            .args(["run", "--config"])
            .arg(&config)
            .env("LOYALTY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start loyalty-hub");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the hub did not report its address in 60 s");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        HubProcess {
            child,
            addr,
            _config: config,
        }
    }

    #[allow(dead_code)] // used by the benchmark
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// A mutual-TLS client of one store.
#[derive(Clone)]
pub struct Client {
    tls: tokio_rustls::TlsConnector,
}

/// An answer.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    /// A keep-alive connection to `addr`.
    #[allow(dead_code)] // used by the benchmark
    pub async fn connect(
        &self,
        addr: SocketAddr,
    ) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let tls = self.tls.connect(name, tcp).await.expect("TLS");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        sender
    }

    pub async fn request(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer { status, body })
    }

    pub async fn post_events(&self, addr: SocketAddr, store: &str, body: Vec<u8>) -> Answer {
        self.request(
            addr,
            "POST",
            &format!("/v1/stores/{store}/events"),
            body,
            &[],
        )
        .await
        .expect("request")
    }

    /// Posts a batch of events and asserts the hub took it (200), showing its answer otherwise.
    pub async fn post_ok(&self, addr: SocketAddr, store: &str, body: Vec<u8>) -> Answer {
        let ack = self.post_events(addr, store, body).await;
        assert_eq!(ack.status, 200, "{}", ack.text());
        ack
    }

    pub async fn get(&self, addr: SocketAddr, path: &str) -> Answer {
        self.request(addr, "GET", path, Vec::new(), &[])
            .await
            .expect("request")
    }
}

/// One event to send.
#[derive(Clone, Debug)]
pub struct Ev {
    pub seq: u64,
    pub id: String,
    pub kind: &'static str,
    pub payload: String,
}

pub fn at() -> jiff::Timestamp {
    "2026-11-23T10:00:00Z".parse().expect("time")
}

/// The body of a batch.
pub fn body(store: &str, instance: &str, events: &[Ev]) -> Vec<u8> {
    let raws: Vec<Box<serde_json::value::RawValue>> = events
        .iter()
        .map(|e| serde_json::value::RawValue::from_string(e.payload.clone()).expect("raw"))
        .collect();
    let request = EventsRequest {
        store_id: store,
        instance,
        events: events
            .iter()
            .zip(&raws)
            .map(|(e, raw)| WireEvent {
                seq: e.seq,
                id: &e.id,
                kind: e.kind,
                at: "2026-11-23T10:00:00Z",
                payload: raw,
            })
            .collect(),
    };
    serde_json::to_vec(&request).expect("json")
}

pub fn enrolled(seq: u64, id: &str, customer: &str, card: &str) -> Ev {
    let payload = CustomerEvent {
        card: Some(Cow::Borrowed(card)),
        customer_id: Cow::Borrowed(customer),
        enrolled_at: at(),
        name: None,
        tier: None,
    };
    Ev {
        seq,
        id: id.into(),
        kind: "customer_enrolled",
        payload: serde_json::to_string(&payload).expect("json"),
    }
}

pub fn enrolled_at(seq: u64, id: &str, customer: &str, card: &str, when: jiff::Timestamp) -> Ev {
    let payload = CustomerEvent {
        card: Some(Cow::Borrowed(card)),
        customer_id: Cow::Borrowed(customer),
        enrolled_at: when,
        name: None,
        tier: None,
    };
    Ev {
        seq,
        id: id.into(),
        kind: "customer_enrolled",
        payload: serde_json::to_string(&payload).expect("json"),
    }
}

/// A `receipt` event: a sale of `total` for `customer`, with the card it was scanned with.
pub fn receipt(
    seq: u64,
    id: &str,
    customer: &str,
    receipt: &str,
    total: &str,
    at: jiff::Timestamp,
    card: Option<&str>,
) -> Ev {
    let payload = ReceiptEvent {
        card: card.map(Cow::Borrowed),
        currency: Cow::Borrowed("EUR"),
        customer_id: Some(Cow::Borrowed(customer)),
        kind: Cow::Borrowed("sale"),
        lane: Cow::Borrowed("1"),
        lines: Vec::new(),
        lines_withheld: false,
        original_receipt_id: None,
        points: 10,
        receipt_id: Cow::Borrowed(receipt),
        rewards: Cow::Owned(Vec::new()),
        timestamp: at,
        total: total.to_string(),
        unknown_categories: Vec::new(),
    };
    Ev {
        seq,
        id: id.into(),
        kind: "receipt",
        payload: serde_json::to_string(&payload).expect("json"),
    }
}

pub fn ledger(seq: u64, id: &str, customer: &str, kind: &str, points: i64, receipt: &str) -> Ev {
    let payload = LedgerEvent {
        cause_receipt_id: None,
        customer_id: Cow::Borrowed(customer),
        entry: seq,
        hash: Cow::Borrowed("00"),
        kind: loyalty_core::ledger::EntryKind::parse(kind).expect("kind"),
        points,
        reason: None,
        receipt_id: Some(Cow::Borrowed(receipt)),
        reference: None,
        vests_at: None,
    };
    Ev {
        seq,
        id: id.into(),
        kind: "ledger",
        payload: serde_json::to_string(&payload).expect("json"),
    }
}

pub fn redeemed(seq: u64, id: &str, voucher: &str, receipt: &str) -> Ev {
    let payload = VoucherRedeemedEvent {
        currency: Cow::Borrowed("EUR"),
        discount: "5.00".into(),
        key_id: Cow::Borrowed("k1"),
        lane: Cow::Borrowed("1"),
        receipt_id: Cow::Borrowed(receipt),
        redeemed_at: at(),
        voucher_id: voucher.into(),
    };
    Ev {
        seq,
        id: id.into(),
        kind: "voucher_redeemed",
        payload: serde_json::to_string(&payload).expect("json"),
    }
}

/// `n` enrolments starting at `first` for `store` (ids `{store}-e{seq}`).
pub fn enrolments(store: &str, first: u64, n: u64) -> Vec<Ev> {
    (first..first + n)
        .map(|seq| {
            enrolled(
                seq,
                &format!("{store}-e{seq}"),
                &format!("{store}-c{seq}"),
                &format!("{store}9{seq:08}"),
            )
        })
        .collect()
}

/// The next position (change id, export position), taken as every hub writer takes it: under
/// its writer lock, held until the transaction ends.
pub async fn writer_position(tx: &tokio_postgres::Transaction<'_>) -> i64 {
    tx.query_one(
        "WITH held AS MATERIALIZED (SELECT pg_advisory_xact_lock($1, pg_backend_pid()))
         SELECT nextval('change_seq') FROM held",
        &[&loyalty_hub::ingest::changes::WRITER_LOCK_CLASS],
    )
    .await
    .expect("position")
    .get(0)
}

/// A lock a session can be seen waiting for in `pg_stat_activity`.
#[derive(Debug, Clone, Copy)]
pub enum LockWait {
    /// An advisory lock: a reader waiting for a writer holding positions until its COMMIT.
    Advisory,
    /// A row locked by another transaction.
    Row,
}

/// Waits until a session waits for `lock`; panics after 10 s, or if `finished()` (the session
/// expected to wait) turns true first: it did not wait.
pub async fn until_a_session_waits(
    watcher: &tokio_postgres::Client,
    lock: LockWait,
    finished: impl Fn() -> bool,
) {
    let events = match lock {
        LockWait::Advisory => "('advisory')",
        LockWait::Row => "('transactionid', 'tuple')",
    };
    let query = format!(
        "SELECT count(*) FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND wait_event IN {events}"
    );
    let started = std::time::Instant::now();
    loop {
        if count(watcher, &query).await > 0 {
            return;
        }
        assert!(!finished(), "it finished without waiting ({lock:?} lock)");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "it never waited ({lock:?} lock)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of a one-row, one-column bigint query.
pub async fn count(sql: &tokio_postgres::Client, query: &str) -> i64 {
    sql.query_one(query, &[]).await.expect(query).get(0)
}

/// Every table's row count (to show nothing changed).
pub async fn snapshot(sql: &tokio_postgres::Client) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for table in [
        "ingest_positions",
        "store_events",
        "customers",
        "cards",
        "customer_stores",
        "ledger_entries",
        "receipts",
        "receipt_lines",
        "vouchers",
        "redemptions",
        "double_redemptions",
        "changes",
        "customer_merges",
    ] {
        out.push((
            table.to_string(),
            count(sql, &format!("SELECT count(*) FROM {table}")).await,
        ));
    }
    out
}

/// Applies a sale of `amount` minor units dated now (the dashboard's windows end now) to a
/// real store, enrolling `card` if given; the points it earned.
pub fn apply_today(store: &loyalty_store::Store, id: &str, amount: i64, card: Option<&str>) -> i64 {
    use loyalty_core::ledger::EarningPolicy;
    use loyalty_tools::testkit::store::{line, sale, Policy};
    let policy = Policy::default();
    let mut receipt = sale(id, vec![line("A", amount, None)]);
    receipt.card = card.map(str::to_string);
    receipt.timestamp = jiff::Timestamp::now();
    let valid =
        loyalty_core::receipt::ValidReceipt::check(receipt, policy.limits()).expect("valid");
    let customer = match card {
        Some(card) => loyalty_store::ReceiptCustomer::Card { card, enrol: true },
        None => loyalty_store::ReceiptCustomer::FromReceipt,
    };
    store
        .apply_valid_receipt(&valid, customer, &policy, None, jiff::Timestamp::now())
        .expect("apply")
        .outcome
        .earned
}

/// The admin API's bearer token in the hub configurations of [`admin_config`].
pub const TOKEN: &str = "test-admin-token-0123456789";

/// Head office erases `customer_id` through the admin API; asserts it was accepted (200).
pub async fn erase(c: &Client, hub: &HubProcess, customer_id: &str) -> Answer {
    let erased = admin(
        c,
        hub,
        "POST",
        "/v1/admin/erasures",
        serde_json::json!({ "customer_id": customer_id }),
    )
    .await;
    assert_eq!(erased.status, 200, "{}", erased.text());
    erased
}

/// `[admin]` with a token file written in the test's directory.
pub fn admin_config(env: &Env, more: &str) -> String {
    let file = env.dir.path().join("admin.token");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("token");
    format!("{more}\n[admin]\ntoken_file = {file:?}\n")
}

/// A request to the admin API with [`TOKEN`].
pub async fn admin(
    c: &Client,
    hub: &HubProcess,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> Answer {
    let auth = format!("Bearer {TOKEN}");
    c.request(
        hub.addr,
        method,
        path,
        body.to_string().into_bytes(),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
    )
    .await
    .expect("request")
}

/// Every row of every table whose text holds `needle` (`table: row`): the erasure's search.
pub async fn rows_containing(sql: &tokio_postgres::Client, needle: &str) -> Vec<String> {
    let tables = sql
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .expect("tables");
    assert!(
        tables.len() >= 15,
        "schema not found: {} tables",
        tables.len()
    );
    let mut found = Vec::new();
    for table in &tables {
        let table: String = table.get(0);
        let rows = sql
            .query(
                &format!("SELECT t::text FROM {table} t WHERE t::text LIKE '%' || $1 || '%'"),
                &[&needle],
            )
            .await
            .expect("search");
        found.extend(
            rows.iter()
                .map(|r| format!("{table}: {}", r.get::<_, String>(0))),
        );
    }
    found
}
