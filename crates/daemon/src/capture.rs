//! Everything an edge (serial tap, printer proxy) needs to turn one printer stream into
//! receipts, built from the configuration: the lane, the default code page, the idle gap and
//! the profile (compiled once, at load, by `config::Built`, and shared). Pure.

use crate::config::{Built, PrinterProxyConfig, SerialConfig};
use loyalty_core::escpos::CodePage;
use loyalty_core::escpos::{Assembler, Document};
use loyalty_core::escpos::{ParseContext, ParseError, ProfileError, ReceiptProfile};
use loyalty_core::receipt::Receipt;
use std::sync::Arc;
use std::time::Duration;

/// Why a capture could not be set up from the configuration (normally caught by validation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureSetupError {
    /// The device names no profile, or one that is not defined.
    #[error("{device}: receipt profile '{profile}' is not defined in [receipt_profiles]")]
    UnknownProfile {
        /// Device or proxy name.
        device: String,
        /// The profile it names.
        profile: String,
    },
    /// The code page is not known.
    #[error("{device}: unknown code page '{code_page}'")]
    UnknownCodePage {
        /// Device or proxy name.
        device: String,
        /// The configured name.
        code_page: String,
    },
    /// The profile does not compile.
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// How one printer stream is captured. Cheap to clone (the profile is shared).
#[derive(Debug, Clone)]
pub struct ReceiptCapture {
    /// The lane the printer belongs to.
    pub lane: String,
    /// Code page until the stream selects one.
    pub code_page: CodePage,
    /// Bytes-free time that ends a receipt without a cut.
    pub idle_gap: Duration,
    /// The store's currency.
    pub currency: String,
    /// The store's time zone.
    pub time_zone: jiff::tz::TimeZone,
    profile: Arc<ReceiptProfile>,
}

impl ReceiptCapture {
    /// A capture from its parts.
    pub fn new(
        lane: String,
        code_page: CodePage,
        idle_gap: Duration,
        profile: ReceiptProfile,
        currency: String,
        time_zone: jiff::tz::TimeZone,
    ) -> ReceiptCapture {
        ReceiptCapture {
            lane,
            code_page,
            idle_gap,
            currency,
            time_zone,
            profile: Arc::new(profile),
        }
    }

    /// The capture of a `kind = "escpos"` serial device.
    pub fn for_serial(
        device: &SerialConfig,
        config: &Built,
    ) -> Result<ReceiptCapture, CaptureSetupError> {
        Self::build(
            &device.name,
            &device.lane,
            device.profile.as_deref(),
            &device.code_page,
            device.idle_gap_ms,
            config,
        )
    }

    /// The capture of a network printer proxy.
    pub fn for_proxy(
        proxy: &PrinterProxyConfig,
        config: &Built,
    ) -> Result<ReceiptCapture, CaptureSetupError> {
        Self::build(
            &proxy.name,
            &proxy.lane,
            proxy.profile.as_deref(),
            &proxy.code_page,
            proxy.idle_gap_ms,
            config,
        )
    }

    fn build(
        device: &str,
        lane: &str,
        profile: Option<&str>,
        code_page: &str,
        idle_gap_ms: u64,
        config: &Built,
    ) -> Result<ReceiptCapture, CaptureSetupError> {
        let unknown = || CaptureSetupError::UnknownProfile {
            device: device.to_string(),
            profile: profile.unwrap_or("").to_string(),
        };
        let name = profile.ok_or_else(unknown)?;
        let profile = config
            .receipt_profiles
            .get(name)
            .ok_or_else(unknown)?
            .clone();
        let code_page =
            CodePage::from_name(code_page).ok_or_else(|| CaptureSetupError::UnknownCodePage {
                device: device.to_string(),
                code_page: code_page.to_string(),
            })?;
        Ok(ReceiptCapture {
            lane: lane.to_string(),
            code_page,
            idle_gap: Duration::from_millis(idle_gap_ms),
            currency: config.raw.store.currency.clone(),
            time_zone: config.raw.store.time_zone(),
            profile,
        })
    }

    /// A fresh assembler for one stream (one per serial tap, one per till connection).
    pub fn assembler(&self) -> Assembler {
        Assembler::new(
            self.code_page,
            self.idle_gap,
            self.profile.pan_exempt_prefixes().to_vec(),
        )
    }

    /// Reads a finished document as a receipt of this lane.
    pub fn read(
        &self,
        document: &Document,
        captured_at: jiff::Timestamp,
    ) -> Result<Receipt, ParseError> {
        self.profile.parse(
            document,
            &ParseContext {
                lane: self.lane.clone(),
                currency: self.currency.clone(),
                time_zone: self.time_zone.clone(),
                captured_at,
            },
        )
    }

    /// The profile.
    pub fn profile(&self) -> &ReceiptProfile {
        &self.profile
    }
}
