//! The CRM side of a test: a throw-away PKI (PEM files from [`crate::certs`]), the reference
//! receiver ([`crate::crm_reference`]) on 127.0.0.1:0, CRM configurations with short timeouts
//! and backoffs, and helpers to start sync on a real store and check what was delivered.

use crate::certs::{write_pem, TestCa, Validity};
use crate::crm_reference::{self, Faults, ReferenceConfig, ReferenceCrm};
use loyalty_daemon::config::CrmConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The store id the client certificate is issued for.
pub const STORE: &str = "S042";

/// PEM files of one test PKI.
pub struct Pki {
    /// Where the files are.
    pub dir: tempfile::TempDir,
    /// The CA, to issue more certificates.
    pub ca: TestCa,
    /// The CA certificate.
    pub ca_file: PathBuf,
    /// The receiver's certificate.
    pub server_cert: PathBuf,
    /// The receiver's key.
    pub server_key: PathBuf,
    /// The store's client certificate (for [`STORE`]).
    pub client_cert: PathBuf,
    /// The store's client key.
    pub client_key: PathBuf,
}

impl Pki {
    /// A PKI whose server certificate names `localhost` and `127.0.0.1`.
    #[allow(clippy::new_without_default)] // makes files: not a default value
    pub fn new() -> Pki {
        Self::with_server_names(&["localhost", "127.0.0.1"])
    }

    /// A PKI whose server certificate names `names`.
    pub fn with_server_names(names: &[&str]) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("test CA").expect("CA");
        let server = ca.server(names).expect("server cert");
        let client = ca.client(STORE, Validity::Current).expect("client cert");
        let p = |name: &str| dir.path().join(name);
        let pki = Pki {
            ca_file: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            ca,
            dir,
        };
        write_pem(&pki.ca_file, &pki.ca.cert_pem(), false).expect("write");
        write_pem(&pki.server_cert, &server.cert_pem, false).expect("write");
        write_pem(&pki.server_key, &server.key_pem, true).expect("write");
        write_pem(&pki.client_cert, &client.cert_pem, false).expect("write");
        write_pem(&pki.client_key, &client.key_pem, true).expect("write");
        pki
    }

    /// Replaces the client certificate with one of the given validity from this CA.
    pub fn reissue_client(&self, validity: Validity) {
        let client = self.ca.client(STORE, validity).expect("client cert");
        write_pem(&self.client_cert, &client.cert_pem, false).expect("write");
        write_pem(&self.client_key, &client.key_pem, true).expect("write");
    }

    /// The reference receiver's configuration with this PKI's files, listening on `listen`.
    pub fn receiver_config(&self, listen: SocketAddr, data_dir: Option<&Path>) -> ReferenceConfig {
        ReferenceConfig {
            listen,
            cert_file: self.server_cert.clone(),
            key_file: self.server_key.clone(),
            client_ca_file: self.ca_file.clone(),
            data_dir: data_dir.map(Path::to_path_buf),
            fsync: false,
            faults: Faults::default(),
        }
    }

    /// The reference receiver running in this process on a free loopback port.
    pub async fn receiver(&self, data_dir: Option<&Path>) -> ReferenceCrm {
        crm_reference::serve(self.receiver_config("127.0.0.1:0".parse().expect("addr"), data_dir))
            .await
            .expect("reference receiver")
    }

    /// A `[crm]` section pointing at `url`, with test-sized timeouts and backoffs.
    pub fn crm_config(&self, url: &str) -> CrmConfig {
        CrmConfig {
            enabled: true,
            url: url.to_string(),
            client_cert_file: Some(self.client_cert.clone()),
            client_key_file: Some(self.client_key.clone()),
            ca_file: Some(self.ca_file.clone()),
            batch_max_events: 200,
            batch_max_bytes: 256 * 1024,
            batch_max_age_ms: 5,
            poll_interval_secs: 1,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 1_500,
            backoff_min_ms: 10,
            backoff_max_ms: 100,
            ..CrmConfig::default()
        }
    }
}

use loyalty_daemon::config::Config;
use loyalty_daemon::sync::{self, SyncHandle};
use loyalty_store::Store;
use tokio_util::sync::CancellationToken;

/// A whole-gateway configuration for the sync tests.
pub fn config(pki: &Pki, url: &str, data_dir: &Path) -> Config {
    let mut config = Config::default();
    config.store.id = STORE.to_string();
    config.storage.data_dir = data_dir.to_path_buf();
    config.crm = pki.crm_config(url);
    config
}

/// Opens the store of `config`.
pub fn open_store(config: &Config) -> Store {
    Store::open(&config.storage, &config.store.id).expect("open store")
}

/// Starts sync; returns the handle and its cancellation token.
pub fn start(config: &Config, store: &Store) -> (SyncHandle, CancellationToken) {
    let cancel = CancellationToken::new();
    let handle = sync::start(config, store.clone(), cancel.clone()).expect("start sync");
    (handle, cancel)
}

/// Writes `n` outbox events (one `customer_enrolled` each) with cards `{prefix}{i}`.
pub fn add_events(store: &Store, prefix: &str, n: usize) {
    for i in 0..n {
        store
            .enroll(&format!("{prefix}{i}"), jiff::Timestamp::now())
            .expect("enroll");
    }
}

/// The ids of every event in the local outbox, in order.
pub fn outbox_ids(store: &Store) -> Vec<(u64, String)> {
    store
        .outbox_raw_after(0, usize::MAX)
        .expect("outbox")
        .into_iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.json).expect("json");
            (e.seq, v["id"].as_str().expect("id").to_string())
        })
        .collect()
}

/// Asserts the receiver holds exactly the local outbox: every event once, in order.
pub fn assert_delivered_exactly_once(crm: &ReferenceCrm, store: &Store) {
    let local = outbox_ids(store);
    let remote: Vec<(u64, String)> = crm
        .received(STORE)
        .into_iter()
        .map(|e| (e.seq, e.id))
        .collect();
    assert_eq!(remote.len(), local.len(), "event count differs");
    assert!(
        remote == local,
        "the receiver's events differ from the outbox"
    );
    let ids: std::collections::HashSet<_> = remote.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), remote.len(), "duplicate ids at the receiver");
}

/// Waits (at most 60 s, then fails) until the sync status satisfies `predicate`.
pub async fn wait_status(
    status: &loyalty_daemon::sync::SyncStatusHandle,
    predicate: impl FnMut(&loyalty_daemon::sync::SyncStatus) -> bool,
) -> loyalty_daemon::sync::SyncStatus {
    tokio::time::timeout(Duration::from_secs(60), status.wait_for(predicate))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "status condition not reached in 60 s: {:?}",
                status.snapshot()
            )
        })
}
