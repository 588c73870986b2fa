//! The local API's view of a running gateway: implements `http::ApiBackend` over the store, the
//! vouchers, the broker state, the devices, CRM sync and the clock.

use super::{GatewayHandle, TrustedClock};
use crate::http::{
    ApiBackend, BackendError, ClockHealth, ComponentHealth, CustomerView, DeviceHealth,
    HealthReport, ImageFormat, LanesHealth, PurchaseView, SyncHealth,
};
use loyalty_core::ledger::EntryKind;
use std::sync::{Arc, Mutex};

/// How old the oldest unsent event may get before sync counts as degraded.
const SYNC_LAG_DEGRADED_SECS: u64 = 15 * 60;

/// Purchases shown in a staff lookup.
const RECENT_PURCHASES: usize = 10;

/// The gateway as the local API sees it.
pub struct GatewayBackend {
    handle: GatewayHandle,
    mqtt_enabled: bool,
    configured_devices: Vec<String>,
    decimals: u32,
    clock: Arc<Mutex<TrustedClock>>,
}

impl GatewayBackend {
    /// A backend over `handle`; `configured_devices` are the names of `[[serial]]` and
    /// `[[printer_proxy]]` entries (a device never opened is reported down).
    pub fn new(
        handle: GatewayHandle,
        mqtt_enabled: bool,
        configured_devices: Vec<String>,
        currency: &str,
    ) -> Self {
        let clock = handle.clock.clone();
        GatewayBackend {
            handle,
            mqtt_enabled,
            configured_devices,
            decimals: loyalty_core::money::currency_decimals(currency),
            clock,
        }
    }
}

fn backend_error(err: impl std::fmt::Display) -> BackendError {
    BackendError(err.to_string())
}

impl ApiBackend for GatewayBackend {
    fn refresh_metrics(&self) {
        super::refresh_gauges(&self.handle);
    }

    fn health(&self) -> HealthReport {
        let storage = match self.handle.store.outbox_stats() {
            Ok(_) if self.handle.storage_ok() => ComponentHealth {
                ok: true,
                detail: "sled open, writes durable".into(),
            },
            Ok(_) => ComponentHealth {
                ok: false,
                detail: "recent writes failed: check the disk and the log".into(),
            },
            Err(err) => ComponentHealth {
                ok: false,
                detail: err.to_string(),
            },
        };
        let broker_state = self.handle.broker.borrow().clone();
        let broker = if !self.mqtt_enabled {
            ComponentHealth {
                ok: true,
                detail: "disabled by configuration".into(),
            }
        } else if broker_state.connected {
            ComponentHealth {
                ok: true,
                detail: "connected".into(),
            }
        } else {
            ComponentHealth {
                ok: false,
                detail: broker_state
                    .last_error
                    .unwrap_or_else(|| "not connected yet".into()),
            }
        };
        let reported = self
            .handle
            .devices
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        let devices = self
            .configured_devices
            .iter()
            .map(|name| match reported.get(name) {
                Some(status) => DeviceHealth {
                    name: name.clone(),
                    up: status.up,
                    detail: status.detail.clone(),
                },
                None => DeviceHealth {
                    name: name.clone(),
                    up: false,
                    detail: "not opened yet".into(),
                },
            })
            .collect();
        let status = self.handle.sync.status().snapshot();
        let lag_seconds = status
            .oldest_unsent_at
            .map(|at| (jiff::Timestamp::now() - at).get_seconds().max(0) as u64);
        let sync = SyncHealth {
            ok: !status.enabled
                || (status.alarm.is_none()
                    && lag_seconds.is_none_or(|lag| lag < SYNC_LAG_DEGRADED_SECS)),
            enabled: status.enabled,
            outbox_depth: status.outbox_depth,
            lag_seconds,
            last_error: status
                .alarm
                .clone()
                .or_else(|| status.last_upload_error.as_ref().map(|e| e.message.clone())),
        };
        let clock = match self.clock.lock() {
            Ok(mut clock) => {
                let time = clock.observe();
                ClockHealth {
                    ok: time.trusted,
                    detail: match time.distrust {
                        None => "trusted".into(),
                        Some(why) => format!("untrusted: {}", why.as_str()),
                    },
                }
            }
            Err(_) => ClockHealth {
                ok: false,
                detail: "clock state unavailable".into(),
            },
        };
        let queue_depth = self.handle.input_queue_depth();
        HealthReport {
            storage,
            broker,
            devices,
            sync,
            clock,
            lanes: LanesHealth {
                overloaded: queue_depth >= super::OVERLOAD_QUEUE_DEPTH,
                queue_depth,
            },
        }
    }

    fn customer_by_card(&self, card: &str) -> Result<Option<CustomerView>, BackendError> {
        let store = &self.handle.store;
        let Some(customer) = store.customer_by_card(card).map_err(backend_error)? else {
            return Ok(None);
        };
        let balance = store
            .balance(&customer.id, jiff::Timestamp::now())
            .map_err(backend_error)?;
        let entries = store
            .customer_entries(&customer.id)
            .map_err(backend_error)?;
        let mut recent_purchases = Vec::new();
        for entry in entries.iter().rev() {
            if recent_purchases.len() >= RECENT_PURCHASES {
                break;
            }
            if !matches!(entry.kind, EntryKind::Earn | EntryKind::Clawback) {
                continue;
            }
            let Some(receipt_id) = &entry.receipt_id else {
                continue;
            };
            if let Some(receipt) = store.receipt(receipt_id).map_err(backend_error)? {
                recent_purchases.push(PurchaseView {
                    receipt_id: receipt.id.clone(),
                    at: receipt.timestamp,
                    lane: receipt.lane.clone(),
                    total: receipt.total.format(self.decimals),
                    points: entry.points,
                });
            }
        }
        Ok(Some(CustomerView {
            customer_id: customer.id,
            card: card.to_string(),
            name: customer.name,
            tier: customer.tier,
            balance: balance.available,
            pending: balance.pending,
            recent_purchases,
        }))
    }

    fn voucher_image(
        &self,
        voucher_id: &str,
        format: ImageFormat,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let Some(id) = loyalty_core::voucher::VoucherId::parse(voucher_id) else {
            return Ok(None);
        };
        let Some(issued) = self.handle.vouchers.issued(&id).map_err(backend_error)? else {
            return Ok(None);
        };
        let image = match format {
            ImageFormat::Png => crate::render::png(&issued.text, 8).map_err(backend_error)?,
            ImageFormat::Svg => crate::render::svg(&issued.text)
                .map_err(backend_error)?
                .into_bytes(),
        };
        Ok(Some(image))
    }
}
