//! The label values of the metric families: what a scan, a receipt, an answer or a sync error
//! turned out to be, each with its stable exported name.

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use std::fmt;

/// Defines a label-value enum with stable lower-case names.
macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, so each series is exported (at zero) from the start.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value as exported.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
                fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

label_enum! {
    /// What a scan turned out to be (`loyalty_scans_total{kind}`).
    ScanKind {
        /// A program card (barcode, stripe, NFC, app QR).
        Card => "card",
        /// A voucher QR code.
        Voucher => "voucher",
        /// Refused: not a program card, unreadable, unknown range.
        Refused => "refused",
    }
}

label_enum! {
    /// What happened to a receipt (`loyalty_receipts_total{outcome}`).
    ReceiptOutcome {
        /// Applied and durable.
        Applied => "applied",
        /// A duplicate of an applied receipt (same answer, no new points).
        Duplicate => "duplicate",
        /// Refused as bad input (nothing written).
        Refused => "refused",
        /// Internal failure (storage); redelivery expected.
        Failed => "failed",
    }
}

label_enum! {
    /// The type of an answer to a lane (`loyalty_answer_latency_seconds{type}`).
    AnswerKind {
        /// `customer` after a card scan.
        Customer => "customer",
        /// `enrolled` after an unknown card of the program's range.
        Enrolled => "enrolled",
        /// `points` after a receipt.
        Points => "points",
        /// `reward` after a voucher scan.
        Reward => "reward",
        /// `redemption` after a `redeem` request.
        Redemption => "redemption",
        /// `void` after a `void` request.
        Void => "void",
        /// `error` for anything refused.
        Error => "error",
    }
}

label_enum! {
    /// Why a sync request failed (`loyalty_sync_errors_total{kind}`).
    SyncErrorKind {
        /// DNS, TCP or TLS connect failure, or timeout.
        Network => "network",
        /// The CRM answered 5xx.
        Server => "server",
        /// The CRM refused the request (4xx): needs an operator.
        Rejected => "rejected",
        /// The CRM's answer could not be understood.
        Protocol => "protocol",
    }
}

label_enum! {
    /// What a by-card lookup at the CRM gave (`loyalty_card_lookups_total{outcome}`).
    LookupOutcomeKind {
        /// The CRM knew the card: the customer was taken over.
        Found => "found",
        /// The CRM answered 404: enrolled offline.
        NotFound => "not_found",
        /// Not asked, sync known down: enrolled offline.
        Skipped => "skipped",
        /// Timed out or failed: enrolled offline, lookups pause.
        Failed => "failed",
    }
}

label_enum! {
    /// What happened to a points redemption (`loyalty_points_redemptions_total{outcome}`).
    RedemptionOutcome {
        /// A `redeem` request held the points.
        Reserved => "reserved",
        /// Refused: the customer's available points do not cover it.
        Insufficient => "insufficient",
        /// Refused: no such customer.
        UnknownCustomer => "unknown_customer",
        /// Refused: the reference is used for another customer or number of points.
        Conflict => "conflict",
        /// A receipt committed it (the points are spent).
        Committed => "committed",
        /// A receipt named it but could not commit it (unknown, expired, released,
        /// insufficient): the receipt was applied without it.
        NotCommitted => "not_committed",
        /// A `void` released it.
        Released => "released",
        /// It ran out before a receipt named it and was released by the sweep.
        Expired => "expired",
    }
}
