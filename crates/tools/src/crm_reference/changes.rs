//! The scripted changes feed: pages pushed in-process or read from `{store_id}.changes.jsonl`,
//! served in order; the cursor is the number of pages consumed. A request with `?wait=N` is
//! held while nothing is scripted after its cursor (long-poll, see `server`).

use super::server::{error_response, json_response};
use super::store::{lock, State};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use loyalty_protocol::crm::ChangesPage;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub(super) fn changes_path(dir: &Path, store_id: &str) -> PathBuf {
    dir.join(format!("{store_id}.changes.jsonl"))
}

/// Whether a scripted page exists after `cursor` (an unreadable cursor counts as pending: the
/// answer is an error at once).
pub(super) fn has_pending(state: &mut State, store_id: &str, cursor: Option<&str>) -> bool {
    let position: usize = match cursor {
        None | Some("") => 0,
        Some(text) => match text.parse() {
            Ok(position) => position,
            Err(_) => return true,
        },
    };
    match state.store(store_id) {
        Ok(log) => log.pages.len() > position,
        Err(_) => true,
    }
}

pub(super) fn changes_page(
    state: &Mutex<State>,
    store_id: &str,
    cursor: Option<&str>,
) -> Response<Full<Bytes>> {
    let position: usize = match cursor {
        None | Some("") => 0,
        Some(text) => match text.parse() {
            Ok(position) => position,
            Err(_) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_cursor",
                    format!("unknown cursor '{text}'"),
                )
            }
        },
    };
    let mut guard = lock(state);
    let log = match guard.store(store_id) {
        Ok(log) => log,
        Err(err) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, "storage", err),
    };
    let page = match log.pages.get(position) {
        Some(page) => ChangesPage {
            cursor: (position + 1).to_string(),
            ..page.clone()
        },
        None => ChangesPage {
            cursor: position.min(log.pages.len()).to_string(),
            ..ChangesPage::default()
        },
    };
    let body = serde_json::to_vec(&page).unwrap_or_default();
    if !page.is_empty() {
        guard.last_changes = Some(Bytes::from(body.clone()));
    }
    json_response(StatusCode::OK, body)
}
