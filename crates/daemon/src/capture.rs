//! Everything an edge (serial tap, printer proxy) needs to turn one printer stream into
//! receipts, built from the configuration: the lane, the default code page, the idle gap and
//! the profile (compiled once, at load, by `config::Built`, and shared); and, the other way,
//! how the lane's answers are printed after the till's cut (`answer = "print"`: the trailer's
//! bytes, composed by `loyalty_core::escpos::trailer`). Pure.

use crate::config::{AnswerLabelsConfig, AnswerMode, AnswerQr};
use crate::config::{Built, PrinterProxyConfig, SerialConfig};
use loyalty_core::escpos::qr::{QrMethod, PAPER_58MM_DOTS, PAPER_80MM_DOTS};
use loyalty_core::escpos::trailer::{Trailer, TrailerLabels, TrailerStyle, TrailerVoucher};
use loyalty_core::escpos::CodePage;
use loyalty_core::escpos::{Assembler, Document};
use loyalty_core::escpos::{ParseContext, ParseError, ProfileError, ReceiptProfile};
use loyalty_core::receipt::Receipt;
use loyalty_protocol::till::Response;
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
    /// How the lane's answers are printed (None: they are not).
    answers: Option<Arc<PrintedAnswers>>,
}

/// How a printer stream prints the answers to its receipts.
#[derive(Debug, Clone)]
pub struct PrintedAnswers {
    /// The printer's QR method, paper width, code page and words.
    pub style: TrailerStyle,
    /// How long the till's next bytes are held for the answer.
    pub timeout: Duration,
}

/// The settings of one device that concern printed answers.
struct AnswerSettings<'a> {
    mode: AnswerMode,
    qr: AnswerQr,
    paper_width_mm: u32,
    timeout_ms: u64,
    labels: &'a AnswerLabelsConfig,
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
            answers: None,
        }
    }

    /// This capture printing the answers as `answers` says.
    pub fn with_printed_answers(mut self, answers: PrintedAnswers) -> ReceiptCapture {
        self.answers = Some(Arc::new(answers));
        self
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
            AnswerSettings {
                mode: device.answer,
                qr: device.answer_qr,
                paper_width_mm: device.paper_width_mm,
                timeout_ms: device.answer_timeout_ms,
                labels: &device.answer_labels,
            },
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
            AnswerSettings {
                mode: proxy.answer,
                qr: proxy.answer_qr,
                paper_width_mm: proxy.paper_width_mm,
                timeout_ms: proxy.answer_timeout_ms,
                labels: &proxy.answer_labels,
            },
        )
    }

    fn build(
        device: &str,
        lane: &str,
        profile: Option<&str>,
        code_page: &str,
        idle_gap_ms: u64,
        config: &Built,
        answer: AnswerSettings<'_>,
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
        let answers = (answer.mode == AnswerMode::Print).then(|| {
            let labels = answer.labels;
            Arc::new(PrintedAnswers {
                style: TrailerStyle {
                    qr: match answer.qr {
                        AnswerQr::Native => QrMethod::Native,
                        AnswerQr::Raster => QrMethod::Raster,
                    },
                    paper_dots: if answer.paper_width_mm == 80 {
                        PAPER_80MM_DOTS
                    } else {
                        PAPER_58MM_DOTS
                    },
                    code_page,
                    labels: TrailerLabels {
                        title: labels.title.clone(),
                        earned: labels.earned.clone(),
                        balance: labels.balance.clone(),
                        voucher: labels.voucher.clone(),
                        valid_until: labels.valid_until.clone(),
                    },
                },
                timeout: Duration::from_millis(answer.timeout_ms),
            })
        });
        Ok(ReceiptCapture {
            lane: lane.to_string(),
            code_page,
            idle_gap: Duration::from_millis(idle_gap_ms),
            currency: config.raw.store.currency.clone(),
            time_zone: config.raw.store.time_zone(),
            profile,
            answers,
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

    /// How long the till's next bytes are held for an answer to print, when answers are
    /// printed.
    pub fn answer_timeout(&self) -> Option<Duration> {
        self.answers.as_ref().map(|answers| answers.timeout)
    }

    /// The trailer to print for the lane's `answer` to a receipt, when answers are printed and
    /// the answer has something for the customer (points of a known customer); `restore` is
    /// the code page the till's stream has selected (selected again after the trailer).
    pub fn trailer(&self, answer: &Response, restore: CodePage) -> Option<Vec<u8>> {
        let answers = self.answers.as_ref()?;
        let Response::Points {
            customer_id: Some(_),
            earned,
            balance,
            vouchers,
            ..
        } = answer
        else {
            return None;
        };
        let trailer = Trailer {
            earned: *earned,
            balance: *balance,
            vouchers: vouchers
                .iter()
                .map(|voucher| TrailerVoucher {
                    id: voucher.voucher_id.clone(),
                    text: voucher.text.clone(),
                    value: self.printed_amount(&voucher.value),
                    valid_until: self.printed_last_day(&voucher.valid_until),
                })
                .collect(),
        };
        match loyalty_core::escpos::trailer::compose(&trailer, &answers.style, restore) {
            Ok(bytes) => Some(bytes),
            Err(err) => {
                tracing::warn!(lane = %self.lane, error = %err, "the answer cannot be printed; check paper_width_mm");
                None
            }
        }
    }

    /// `5.00` as the receipts print it, with the currency's sign: `5,00 €`.
    fn printed_amount(&self, value: &str) -> String {
        let value = if self.profile.decimal_comma() {
            value.replace('.', ",")
        } else {
            value.to_string()
        };
        let sign = match self.currency.as_str() {
            "EUR" => "€",
            "GBP" => "£",
            "USD" => "$",
            "CHF" => "CHF",
            other => other,
        };
        format!("{value} {sign}")
    }

    /// A voucher's end of validity (the midnight after its last day) as its last day, in the
    /// receipts' date format.
    fn printed_last_day(&self, valid_until: &str) -> String {
        match valid_until.parse::<jiff::Timestamp>() {
            Ok(end) => {
                let last = end
                    .checked_sub(jiff::SignedDuration::from_secs(1))
                    .unwrap_or(end);
                let date = last.to_zoned(self.time_zone.clone()).date();
                jiff::fmt::strtime::format(self.profile.date_format(), date)
                    .unwrap_or_else(|_| date.to_string())
            }
            Err(_) => valid_until.to_string(),
        }
    }
}
