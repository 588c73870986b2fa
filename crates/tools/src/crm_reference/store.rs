//! The receiver's event store: per store, the events received (deduplicated by id, accepted in
//! sequence order), kept in memory and appended as JSON lines to `{store_id}.events.jsonl`
//! before the answer; and the shared state behind every connection (counters, faults).

use super::changes::changes_path;
use super::server::{error_response, json_response};
use super::{Fault, Faults, ReceiverStats};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use loyalty_protocol::crm::{AckResponse, ChangesPage, OwnedEvent, WireCustomer};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
pub(super) struct StoreLog {
    pub(super) events: Vec<OwnedEvent>,
    pub(super) ids: HashSet<String>,
    /// The highest contiguous sequence number stored, per database instance.
    pub(super) acked: HashMap<String, u64>,
    /// Database instances in the order they were first seen.
    pub(super) instances: Vec<String>,
    pub(super) file: Option<std::io::BufWriter<std::fs::File>>,
    pub(super) pages: Vec<ChangesPage>,
}

pub(super) struct State {
    pub(super) data_dir: Option<PathBuf>,
    pub(super) fsync: bool,
    pub(super) stores: HashMap<String, StoreLog>,
    pub(super) stats: ReceiverStats,
    pub(super) faults: Faults,
    pub(super) rng: u64,
    pub(super) last_tls_error: Option<String>,
    pub(super) last_upload: Option<Bytes>,
    pub(super) last_changes: Option<Bytes>,
    /// Customers scripted for by-card lookups, by card (chain-wide: any store may ask).
    pub(super) customers: HashMap<String, WireCustomer>,
    /// When set, by-card requests are accepted and never answered (a stalled head office).
    pub(super) stall_lookups: bool,
    /// When set, `?wait=` is ignored (an older CRM without long-poll).
    pub(super) ignore_wait: bool,
    /// Bumped whenever a changes page is scripted: wakes long-polls.
    pub(super) pages_version: tokio::sync::watch::Sender<u64>,
}

impl State {
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(super) fn pick_fault(&mut self, changes: bool) -> Option<Fault> {
        if self.faults.kinds.is_empty() || (changes && !self.faults.on_changes) {
            return None;
        }
        if self.random() % 100 >= u64::from(self.faults.rate_percent) {
            return None;
        }
        let index = (self.random() % self.faults.kinds.len() as u64) as usize;
        self.stats.faults_injected += 1;
        Some(self.faults.kinds[index])
    }

    pub(super) fn store(&mut self, store_id: &str) -> Result<&mut StoreLog, String> {
        if !self.stores.contains_key(store_id) {
            let log = load_store(self.data_dir.as_deref(), store_id)?;
            self.stores.insert(store_id.to_string(), log);
        }
        self.stores
            .get_mut(store_id)
            .ok_or_else(|| "store vanished".to_string())
    }
}

impl StoreLog {
    /// The highest contiguous sequence number stored of `instance` (0: none).
    pub(super) fn acked_through(&self, instance: &str) -> u64 {
        self.acked.get(instance).copied().unwrap_or(0)
    }

    fn set_acked(&mut self, instance: &str, seq: u64) {
        if !self.acked.contains_key(instance) {
            self.instances.push(instance.to_string());
        }
        self.acked.insert(instance.to_string(), seq);
    }
}

/// One line of `{store_id}.events.jsonl`: the event and the database instance that sent it
/// (absent in files written before instances were known: the empty instance).
#[derive(serde::Deserialize)]
struct StoredEvent {
    #[serde(default)]
    instance: String,
    #[serde(flatten)]
    event: OwnedEvent,
}

/// [`StoredEvent`] for writing.
#[derive(serde::Serialize)]
struct StoredEventRef<'a> {
    instance: &'a str,
    #[serde(flatten)]
    event: &'a OwnedEvent,
}

fn events_path(dir: &Path, store_id: &str) -> PathBuf {
    dir.join(format!("{store_id}.events.jsonl"))
}

fn load_store(dir: Option<&Path>, store_id: &str) -> Result<StoreLog, String> {
    let mut log = StoreLog::default();
    let Some(dir) = dir else {
        return Ok(log);
    };
    let path = events_path(dir, store_id);
    if let Ok(file) = std::fs::File::open(&path) {
        for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|err| format!("{}: {err}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            // A torn last line (a crash mid-write) is ignored: its batch was never acknowledged.
            let Ok(StoredEvent { instance, event }) = serde_json::from_str::<StoredEvent>(&line)
            else {
                tracing::warn!(file = %path.display(), line = number + 1, "skipping a torn line");
                continue;
            };
            if event.seq == log.acked_through(&instance) + 1 {
                log.set_acked(&instance, event.seq);
            }
            log.ids.insert(event.id.clone());
            log.events.push(event);
        }
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|err| format!("cannot open {}: {err}", path.display()))?;
    log.file = Some(std::io::BufWriter::new(file));
    if let Ok(text) = std::fs::read_to_string(changes_path(dir, store_id)) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let page: ChangesPage = serde_json::from_str(line)
                .map_err(|err| format!("{}: {err}", changes_path(dir, store_id).display()))?;
            log.pages.push(page);
        }
    }
    Ok(log)
}

pub(super) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(super) fn store_events(
    state: &Mutex<State>,
    store_id: &str,
    body: &[u8],
) -> Response<Full<Bytes>> {
    #[derive(serde::Deserialize)]
    struct Upload {
        store_id: String,
        /// Absent from gateways older than instances: the empty instance.
        #[serde(default)]
        instance: String,
        events: Vec<OwnedEvent>,
    }
    let upload: Upload = match serde_json::from_slice(body) {
        Ok(upload) => upload,
        Err(err) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("the body is not an events upload: {err}"),
            )
        }
    };
    if upload.store_id != store_id {
        return error_response(
            StatusCode::BAD_REQUEST,
            "store_mismatch",
            format!(
                "body store_id '{}' differs from the path's '{store_id}'",
                upload.store_id
            ),
        );
    }
    let mut guard = lock(state);
    let state = &mut *guard;
    let fsync = state.fsync;
    let log = match state.store(store_id) {
        Ok(log) => log,
        Err(err) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, "storage", err),
    };
    let (mut duplicates, mut conflicts, mut gap) = (0, 0, false);
    let mut lines = Vec::new();
    let received = upload.events.len() as u64;
    let instance = upload.instance;
    if !log.acked.contains_key(&instance) {
        log.set_acked(&instance, 0);
        tracing::info!(store = %store_id, instance = %instance, "reference receiver: a new database instance of this store");
    }
    for event in upload.events {
        if log.ids.contains(&event.id) {
            duplicates += 1;
            continue;
        }
        let acked = log.acked_through(&instance);
        if event.seq <= acked {
            conflicts += 1;
            continue;
        }
        if event.seq != acked + 1 {
            gap = true;
            break;
        }
        if log.file.is_some() {
            let stored = StoredEventRef {
                instance: &instance,
                event: &event,
            };
            match serde_json::to_vec(&stored) {
                Ok(mut line) => {
                    line.push(b'\n');
                    lines.extend_from_slice(&line);
                }
                Err(err) => {
                    return error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "storage",
                        err.to_string(),
                    )
                }
            }
        }
        log.set_acked(&instance, event.seq);
        log.ids.insert(event.id.clone());
        log.events.push(event);
    }
    if let Some(file) = log.file.as_mut() {
        let written = file
            .write_all(&lines)
            .and_then(|_| file.flush())
            .and_then(|_| {
                if fsync {
                    file.get_ref().sync_data()
                } else {
                    Ok(())
                }
            });
        if let Err(err) = written {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                err.to_string(),
            );
        }
    }
    let acked_through = log.acked_through(&instance);
    state.stats.events_received += received;
    state.stats.duplicates += duplicates;
    state.stats.seq_conflicts += conflicts;
    state.stats.gaps += u64::from(gap);
    let body = serde_json::to_vec(&AckResponse { acked_through }).unwrap_or_default();
    json_response(StatusCode::OK, body)
}
