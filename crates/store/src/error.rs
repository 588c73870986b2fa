//! The store's errors, in two kinds the type tells apart: a [`Refused`] request (the input is
//! wrong; nothing was written; answer the caller, do not retry) and a [`Failure`] of the storage
//! itself (retry later; the operator must look at the disk or the data). [`StoreError`] is one
//! or the other, so no caller keeps its own list of which is which.

use super::durability::DurabilityError;
use loyalty_core::customer::IdError;
use loyalty_core::ledger::LedgerError;
use loyalty_core::receipt::ReceiptError;
use sled::transaction::TransactionError;
use std::path::PathBuf;

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request was refused: the input is wrong, nothing was written.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The storage failed.
    #[error(transparent)]
    Failed(#[from] Failure),
}

impl StoreError {
    /// Whether the request was refused (bad input) rather than failed (storage).
    pub fn is_refusal(&self) -> bool {
        matches!(self, StoreError::Refused(_))
    }
}

/// A request the store refused because of its input; nothing was written. Answer the caller
/// (the lane, the CLI user) with it; retrying the same request gets the same refusal.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The receipt was refused; nothing was written.
    #[error("receipt refused: {0}")]
    InvalidReceipt(#[from] ReceiptError),
    /// An identifier was refused.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// No such customer.
    #[error("unknown customer '{0}'")]
    UnknownCustomer(String),
    /// No such receipt.
    #[error("unknown receipt '{0}'")]
    UnknownReceipt(String),
    /// The receipt is a return, where a sale is needed.
    #[error("receipt '{0}' is a return, not a sale")]
    NotASale(String),
    /// The receipt already belongs to another customer.
    #[error("receipt '{receipt_id}' already belongs to customer '{customer_id}'")]
    AlreadyAttached {
        /// Receipt.
        receipt_id: String,
        /// Its customer.
        customer_id: String,
    },
    /// The card belongs to another customer.
    #[error("card '{card}' already belongs to customer '{customer_id}'")]
    CardTaken {
        /// Card number.
        card: String,
        /// Its customer.
        customer_id: String,
    },
    /// The ledger refused the operation.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The storage failed: the request may succeed later, or the operator must act (the message
/// says what to do).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The database could not be opened.
    #[error("cannot open the database at {path}: {source} (check storage.data_dir and its permissions; is another gateway running?)")]
    Open {
        /// Database directory.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// A sled read or write failed.
    #[error("storage error: {0} (check the disk)")]
    Sled(#[from] sled::Error),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// Writes could not be made durable.
    #[error(transparent)]
    Durability(#[from] DurabilityError),
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0} (run `loyalty-gateway verify`)")]
    Corrupt(String),
    /// The database was written by a newer version.
    #[error("database schema version {found} is newer than this program supports ({supported}); install the newer version again")]
    SchemaTooNew {
        /// Version found.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// The database came up empty although this data directory held one before.
    #[error("the database at {0} is empty or replaced although it held data before (lost on a power cut?); restore a backup, or remove {0}/instance to start afresh deliberately")]
    DataLost(PathBuf),
    /// The operating system's random source failed.
    #[error("no random numbers from the operating system: {0}")]
    Random(getrandom::Error),
    /// The CRM acknowledged events this store never wrote: the local database lost data.
    #[error("the CRM acknowledged outbox sequence {acked} but the last local event is {last}: this store's database lost events (restore a backup; do not continue as a fresh store)")]
    AckBeyondOutbox {
        /// What the CRM acknowledged.
        acked: u64,
        /// The last sequence number written here.
        last: u64,
    },
}

impl From<sled::Error> for StoreError {
    fn from(err: sled::Error) -> Self {
        StoreError::Failed(Failure::Sled(err))
    }
}

impl From<DurabilityError> for StoreError {
    fn from(err: DurabilityError) -> Self {
        StoreError::Failed(Failure::Durability(err))
    }
}

impl From<ReceiptError> for StoreError {
    fn from(err: ReceiptError) -> Self {
        StoreError::Refused(Refused::InvalidReceipt(err))
    }
}

impl From<IdError> for StoreError {
    fn from(err: IdError) -> Self {
        StoreError::Refused(Refused::InvalidId(err))
    }
}

impl From<LedgerError> for StoreError {
    fn from(err: LedgerError) -> Self {
        StoreError::Refused(Refused::Ledger(err))
    }
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(err: TransactionError<StoreError>) -> Self {
        match err {
            TransactionError::Abort(err) => err,
            TransactionError::Storage(err) => err.into(),
        }
    }
}
