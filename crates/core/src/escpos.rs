//! ESC/POS capture, the pure part: a streaming tokenizer that knows every command's length
//! (so binary payloads never leak into text), code pages (`ESC t`), a receipt assembler that
//! ends a document at the paper cut or an idle gap, payment card number masking, and receipt
//! profiles that turn printed text into the same [`crate::receipt::Receipt`] the JSON path
//! produces. No I/O, no tokio: the edges (`serial`, `printer_proxy`) move the bytes and pass
//! the time in.
//!
//! Flow: bytes → [`Tokenizer`] → [`Assembler`] (lines, cut/idle, PAN masking) → [`Document`]
//! → [`ReceiptProfile::parse`] → `Receipt` or [`ParseError`]. [`ReceiptCapture`] bundles one
//! stream's settings from the configuration.
//!
//! The other direction: [`trailer`] composes the short slip the gateway prints after a till's
//! cut on printer lanes (points, balance, a new voucher's QR from [`qr`]).

mod assembler;
mod codepage;
mod pan;
mod profile;
mod profile_spec;
pub mod qr;
mod tokenizer;
pub mod trailer;

pub use assembler::{Assembler, Document, DocumentEnd, MAX_LINES, MAX_LINE_CHARS};
pub use codepage::{CodePage, CODE_PAGE_NAMES};
pub use pan::{gtin_valid, luhn_valid, mask_pans, prefix_overlaps_payment_cards};
pub use profile::{ParseContext, ParseError, ProfileError, ReceiptProfile};
pub use profile_spec::ReceiptProfileConfig;
pub use tokenizer::{Command, Token, Tokenizer};
