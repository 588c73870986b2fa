//! The receipt assembler: printer-stream bytes in, finished documents (decoded, PAN-masked text
//! lines) out, at the paper cut or after an idle gap. Pure: the caller passes the time.
//!
//! Invariants: a [`Document`] never holds an unmasked payment card number (masking happens
//! before a document leaves this module); memory per stream is bounded ([`MAX_LINES`] lines of
//! at most [`MAX_LINE_CHARS`] characters; binary payloads are skipped, not buffered); a
//! document without any printed character (status polls, init sequences) is never emitted.

use super::codepage::CodePage;
use super::pan::mask_pans;
use super::tokenizer::{Token, Tokenizer};
use std::time::{Duration, Instant};

/// Lines kept per receipt; the rest is dropped and the document marked truncated.
pub const MAX_LINES: usize = 2000;
/// Characters kept per line; the rest is dropped and the document marked truncated.
pub const MAX_LINE_CHARS: usize = 512;

/// What ended a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentEnd {
    /// A paper cut command.
    Cut,
    /// No bytes for the idle gap.
    IdleGap,
    /// The stream ended (the till closed its printer connection).
    StreamEnd,
}

/// One printed receipt as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Printed lines, decoded, right-trimmed, payment card numbers masked; no blank lines at
    /// the start or the end.
    pub lines: Vec<String>,
    /// What ended it.
    pub end: DocumentEnd,
    /// True when lines or characters beyond the limits were dropped.
    pub truncated: bool,
    /// How many payment card numbers were masked.
    pub masked_pans: usize,
}

impl Document {
    /// The lines joined with `\n`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// Assembles documents from one printer stream.
#[derive(Debug, Clone)]
pub struct Assembler {
    tokenizer: Tokenizer,
    idle_gap: Duration,
    pan_exempt_prefixes: Vec<String>,
    lines: Vec<String>,
    current: String,
    current_chars: usize,
    has_text: bool,
    truncated: bool,
    last_byte_at: Option<Instant>,
    tokens: Vec<Token>,
}

impl Assembler {
    /// An assembler for a stream whose code page is `default_page` until selected, that ends a
    /// receipt after `idle_gap` without bytes, and never masks numbers starting with one of
    /// `pan_exempt_prefixes`.
    pub fn new(
        default_page: CodePage,
        idle_gap: Duration,
        pan_exempt_prefixes: Vec<String>,
    ) -> Assembler {
        Assembler {
            tokenizer: Tokenizer::new(default_page),
            idle_gap,
            pan_exempt_prefixes,
            lines: Vec::new(),
            current: String::new(),
            current_chars: 0,
            has_text: false,
            truncated: false,
            last_byte_at: None,
            tokens: Vec::new(),
        }
    }

    /// Feeds bytes received at `now`; returns the documents finished by cuts inside them
    /// (usually none or one). A pending document whose idle gap passed before `now` is
    /// finished first. Status requests alone do not restart the idle gap.
    pub fn feed(&mut self, bytes: &[u8], now: Instant) -> Vec<Document> {
        let mut done = Vec::new();
        if let Some(doc) = self.on_idle(now) {
            done.push(doc);
        }
        if bytes.is_empty() {
            return done;
        }
        let mut tokens = std::mem::take(&mut self.tokens);
        tokens.clear();
        self.tokenizer.feed(bytes, &mut tokens);
        // Status polls (DLE EOT, DLE ENQ, DLE DC4, GS r, GS a) do not print: a till that polls
        // its printer every second must not keep a receipt without cut open for ever.
        let prints = tokens.iter().any(|token| match token {
            Token::Command(command) => {
                !(command.name.starts_with("DLE") || matches!(command.name, "GS r" | "GS a"))
            }
            _ => true,
        });
        if prints || !self.tokenizer.is_idle() {
            self.last_byte_at = Some(now);
        }
        for token in &tokens {
            match *token {
                Token::Text(ch) => {
                    if self.current_chars < MAX_LINE_CHARS {
                        self.current.push(ch);
                        self.current_chars += 1;
                        if !ch.is_whitespace() {
                            self.has_text = true;
                        }
                    } else {
                        self.truncated = true;
                    }
                }
                Token::LineEnd => self.end_line(),
                Token::Cut { .. } => {
                    if let Some(doc) = self.finish(DocumentEnd::Cut) {
                        done.push(doc);
                    }
                }
                Token::Command(_) => {}
            }
        }
        self.tokens = tokens;
        done
    }

    /// Like [`Assembler::feed`], but stops right after the first document that ends: returns
    /// how many bytes of `bytes` were consumed (the rest is not fed) and that document. A
    /// pending document whose idle gap passed before `now` ends first, consuming nothing. An
    /// edge that prints after a till's cut uses it to find where the cut is: the bytes up to it
    /// go to the printer, then the trailer, then the rest.
    pub fn feed_until_document(&mut self, bytes: &[u8], now: Instant) -> (usize, Option<Document>) {
        if let Some(doc) = self.on_idle(now) {
            return (0, Some(doc));
        }
        for (index, byte) in bytes.iter().enumerate() {
            if let Some(doc) = self.feed(std::slice::from_ref(byte), now).pop() {
                return (index + 1, Some(doc));
            }
        }
        (bytes.len(), None)
    }

    /// When the pending document's idle gap ends, if there is a pending document.
    pub fn deadline(&self) -> Option<Instant> {
        if self.has_text {
            self.last_byte_at.map(|at| at + self.idle_gap)
        } else {
            None
        }
    }

    /// Finishes the pending document if no byte came for the idle gap before `now`.
    pub fn on_idle(&mut self, now: Instant) -> Option<Document> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.finish(DocumentEnd::IdleGap),
            _ => None,
        }
    }

    /// Finishes the pending document because the stream ended.
    pub fn end_of_stream(&mut self) -> Option<Document> {
        self.finish(DocumentEnd::StreamEnd)
    }

    /// The code page the stream currently has selected.
    pub fn code_page(&self) -> CodePage {
        self.tokenizer.code_page()
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.current);
        self.current_chars = 0;
        if self.lines.len() < MAX_LINES {
            self.lines.push(line.trim_end().to_string());
        } else {
            self.truncated = true;
        }
    }

    fn finish(&mut self, end: DocumentEnd) -> Option<Document> {
        if !self.current.is_empty() {
            self.end_line();
        }
        let lines = std::mem::take(&mut self.lines);
        let truncated = std::mem::replace(&mut self.truncated, false);
        let has_text = std::mem::replace(&mut self.has_text, false);
        if !has_text {
            return None;
        }
        let mut masked_pans = 0;
        let first = lines.iter().position(|l| !l.is_empty()).unwrap_or(0);
        let last = lines
            .iter()
            .rposition(|l| !l.is_empty())
            .map_or(0, |l| l + 1);
        let lines = lines
            .into_iter()
            .take(last)
            .skip(first)
            .map(|line| {
                let (masked, count) = mask_pans(&line, &self.pan_exempt_prefixes);
                masked_pans += count;
                masked
            })
            .collect();
        Some(Document {
            lines,
            end,
            truncated,
            masked_pans,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_polls_do_not_keep_a_receipt_open() {
        let t0 = Instant::now();
        let gap = Duration::from_millis(2000);
        let mut assembler = Assembler::new(CodePage::Cp858, gap, vec![]);
        assert!(assembler.feed(b"Bon 1\nSumme 1,00\n", t0).is_empty());
        // The till polls DLE EOT every 500 ms.
        for i in 1..4 {
            let at = t0 + Duration::from_millis(500 * i);
            assert!(assembler.feed(b"\x10\x04\x01", at).is_empty());
        }
        assert_eq!(assembler.deadline(), Some(t0 + gap));
        let docs = assembler.feed(b"\x10\x04\x01", t0 + gap);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].lines, ["Bon 1", "Summe 1,00"]);
        assert_eq!(docs[0].end, DocumentEnd::IdleGap);
        // Printing bytes do restart it.
        let t1 = t0 + Duration::from_secs(10);
        assembler.feed(b"A", t1);
        assembler.feed(b"\x1bE\x01B", t1 + Duration::from_millis(1500));
        assert_eq!(
            assembler.deadline(),
            Some(t1 + Duration::from_millis(1500) + gap)
        );
    }

    #[test]
    fn feeding_until_a_document_stops_right_after_the_cut() {
        let t0 = Instant::now();
        let mut assembler = Assembler::new(CodePage::Cp858, Duration::from_secs(2), vec![]);
        let stream = b"Bon 1\n\x1dV\x00\x1b@Bon 2\n\x1dVA\x03tail";
        let (used, doc) = assembler.feed_until_document(stream, t0);
        assert_eq!(&stream[..used], b"Bon 1\n\x1dV\x00");
        assert_eq!(doc.expect("first").lines, ["Bon 1"]);
        let rest = &stream[used..];
        let (used, doc) = assembler.feed_until_document(rest, t0);
        assert_eq!(&rest[..used], b"\x1b@Bon 2\n\x1dVA\x03");
        assert_eq!(doc.expect("second").lines, ["Bon 2"]);
        assert_eq!(assembler.feed_until_document(b"tail", t0), (4, None));
        // An idle gap that passed ends the pending document before anything is fed.
        let later = t0 + Duration::from_secs(3);
        let (used, doc) = assembler.feed_until_document(b"x", later);
        assert_eq!(used, 0);
        assert_eq!(doc.expect("idle").end, DocumentEnd::IdleGap);
    }

    #[test]
    fn documents_without_text_are_not_emitted_and_limits_hold() {
        let t0 = Instant::now();
        let mut assembler = Assembler::new(CodePage::Cp858, Duration::from_secs(1), vec![]);
        assert!(assembler.feed(b"\x1b@\n\n\x1dV\x00", t0).is_empty());
        assert!(assembler.end_of_stream().is_none());
        let long = vec![b'x'; MAX_LINE_CHARS + 10];
        assembler.feed(&long, t0);
        let doc = assembler.end_of_stream().expect("a document");
        assert!(doc.truncated);
        assert_eq!(doc.lines[0].chars().count(), MAX_LINE_CHARS);
        assert_eq!(doc.end, DocumentEnd::StreamEnd);
    }
}
