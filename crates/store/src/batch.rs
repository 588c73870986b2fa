//! Receipt batching (flat combining): concurrent `apply_receipt` calls are combined into one
//! sled transaction, so that sled's per-transaction cost (0.34 runs every transaction under one
//! global write lock, and commits each with its own log reservation) is paid once per batch
//! rather than once per receipt.
//!
//! A caller prepares a [`ReceiptRequest`] *outside* any lock (validation, the receipt record,
//! the earning for the customer's tier as read before), queues it, and either becomes the
//! *leader* (nobody is applying a batch: it takes up to [`MAX_BATCH`] queued requests, applies
//! them in one transaction, posts every answer) or waits for its answer. Nobody is a dedicated
//! thread: with one submitter the caller applies its own receipt without any hand-off.
//!
//! Invariants:
//! - Requests of a batch are applied in queue order inside one transaction, each seeing the
//!   writes of the ones before it (a duplicate receipt id in the same batch is answered as a
//!   duplicate of the first; the journal chain and outbox seqs continue from request to request).
//! - A refusal (unknown customer, a return of a return) is decided *before* the request writes
//!   anything, and is that request's answer; it never aborts the batch.
//! - Anything else that fails inside the batch (corrupt record, storage error) aborts the whole
//!   transaction: nothing of the batch is written, and every request of it is answered
//!   [`BatchAnswer::Retry`], so each caller re-applies its receipt alone (the error then reaches
//!   only the request it belongs to).
//! - An answer is only a commit; callers still wait for durability (group commit) before they
//!   answer their own caller.

use super::{BatchStats, ReceiptApplied, StoreError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Most requests applied in one transaction (bounds the time sled's global lock is held).
pub(crate) const MAX_BATCH: usize = 128;

/// What the batch did with one request.
#[derive(Debug)]
// Each answer is moved once, into its caller's hands: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum BatchAnswer {
    /// Applied (or refused, or answered as a duplicate) and committed.
    Done(Result<ReceiptApplied, StoreError>),
    /// Not applied: the caller applies it alone (its precomputed earning no longer fits the
    /// customer, or the batch transaction failed).
    Retry,
}

/// Where one caller waits, woken only for itself: when its answer is posted, or when it is
/// first in the queue and the leader finished (a nudge to lead). One shared condition variable
/// woke every waiting caller after each batch, and most went back to sleep: at 64 submitters the
/// wake-ups cost more CPU than the receipts.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    wake: Condvar,
}

#[derive(Default)]
struct SlotState {
    answer: Option<BatchAnswer>,
    nudged: bool,
}

impl Slot {
    fn post(&self, answer: BatchAnswer) {
        lock(&self.state).answer = Some(answer);
        self.wake.notify_one();
    }

    fn nudge(&self) {
        lock(&self.state).nudged = true;
        self.wake.notify_one();
    }

    /// The answer, if it was posted.
    fn take(&self) -> Option<BatchAnswer> {
        lock(&self.state).answer.take()
    }

    /// Waits for the answer or a nudge (then `None`).
    fn wait(&self) -> Option<BatchAnswer> {
        let mut state = lock(&self.state);
        while state.answer.is_none() && !state.nudged {
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(|poison| poison.into_inner());
        }
        state.nudged = false;
        state.answer.take()
    }
}

struct State<R> {
    queue: VecDeque<(Arc<Slot>, R)>,
    busy: bool,
}

/// The queue of pending requests (a caller's slot with each); lock order: the queue, then a
/// slot.
pub(crate) struct Combiner<R> {
    state: Mutex<State<R>>,
    batches: AtomicU64,
    requests: AtomicU64,
    leading_nanos: AtomicU64,
    leading_cpu_nanos: AtomicU64,
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`; 0 if the clock is unavailable).
fn thread_cpu_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if status != 0 {
        return 0;
    }
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State is consistent between statements (the leader's work happens unlocked).
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Clears `busy` and nudges the first queued caller even when the leader panics while applying
/// (followers then lead); a leader that did not finish answers its batch [`BatchAnswer::Retry`].
struct Leading<'a, R> {
    combiner: &'a Combiner<R>,
    own: &'a Arc<Slot>,
    slots: Vec<Arc<Slot>>,
    answered: bool,
}

impl<R> Drop for Leading<'_, R> {
    fn drop(&mut self) {
        if !self.answered {
            // The leader's own caller is unwinding and will not pick its answer up.
            for slot in self.slots.iter().filter(|s| !Arc::ptr_eq(s, self.own)) {
                slot.post(BatchAnswer::Retry);
            }
        }
        let mut state = lock(&self.combiner.state);
        state.busy = false;
        if let Some((next, _)) = state.queue.front() {
            next.nudge();
        }
    }
}

impl<R> Combiner<R> {
    pub(crate) fn new() -> Combiner<R> {
        Combiner {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                busy: false,
            }),
            batches: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            leading_nanos: AtomicU64::new(0),
            leading_cpu_nanos: AtomicU64::new(0),
        }
    }

    /// Batches, requests and leading time since this combiner was made.
    pub(crate) fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.batches.load(Ordering::Relaxed),
            receipts: self.requests.load(Ordering::Relaxed),
            leading_nanos: self.leading_nanos.load(Ordering::Relaxed),
            leading_cpu_nanos: self.leading_cpu_nanos.load(Ordering::Relaxed),
        }
    }

    /// Queues `request` and returns its answer; `apply` runs a batch (in order) and returns one
    /// answer per request, in the same order.
    pub(crate) fn submit(
        &self,
        request: R,
        apply: impl Fn(&[R]) -> Vec<BatchAnswer>,
    ) -> BatchAnswer {
        let own = Arc::new(Slot::default());
        let mut state = lock(&self.state);
        state.queue.push_back((own.clone(), request));
        loop {
            if let Some(answer) = own.take() {
                return answer;
            }
            if !state.busy {
                state.busy = true;
                let take = state.queue.len().min(MAX_BATCH);
                let (slots, requests): (Vec<Arc<Slot>>, Vec<R>) = state.queue.drain(..take).unzip();
                drop(state);
                let started = Instant::now();
                let started_cpu = thread_cpu_nanos();
                let mut leading = Leading {
                    combiner: self,
                    own: &own,
                    slots,
                    answered: false,
                };
                let mut answers = apply(&requests).into_iter();
                let mut mine = None;
                for slot in &leading.slots {
                    let answer = answers.next().unwrap_or(BatchAnswer::Retry);
                    if Arc::ptr_eq(slot, &own) {
                        mine = Some(answer);
                    } else {
                        slot.post(answer);
                    }
                }
                leading.answered = true;
                // Counted before the next leader is nudged: a woken leader often takes over the
                // CPU at once, and this one's clock would run on through its wait.
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.requests
                    .fetch_add(requests.len() as u64, Ordering::Relaxed);
                self.leading_nanos
                    .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                self.leading_cpu_nanos.fetch_add(
                    thread_cpu_nanos().saturating_sub(started_cpu),
                    Ordering::Relaxed,
                );
                drop(leading);
                if let Some(answer) = mine {
                    return answer;
                }
                // Its own request was past this batch: lead again, or wait.
                state = lock(&self.state);
                continue;
            }
            drop(state);
            if let Some(answer) = own.wait() {
                return answer;
            }
            state = lock(&self.state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn done(n: u32) -> BatchAnswer {
        BatchAnswer::Done(Ok(ReceiptApplied {
            outcome: crate::ReceiptOutcome {
                receipt_id: n.to_string(),
                customer_id: None,
                earned: n as i64,
                balance: None,
                promotions: Vec::new(),
                duplicate: false,
                note: None,
                redemptions: Vec::new(),
            },
            vouchers: Default::default(),
        }))
    }

    /// What [`hammer`] saw: batches applied, the largest, answers checked.
    struct Seen {
        batches: usize,
        largest: usize,
        answered: usize,
    }

    /// `threads` callers submit `rounds` requests each; a batch yields its thread when
    /// `pause(round)`. Every answer must be the caller's own.
    fn hammer(combiner: &Combiner<u32>, threads: u32, rounds: u32, pause: fn(u32) -> bool) -> Seen {
        let batches = AtomicUsize::new(0);
        let largest = AtomicUsize::new(0);
        let answered = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (batches, largest, answered) = (&batches, &largest, &answered);
                s.spawn(move || {
                    for n in 0..rounds {
                        let request = t * 1000 + n;
                        let answer = combiner.submit(request, |requests| {
                            batches.fetch_add(1, Ordering::Relaxed);
                            largest.fetch_max(requests.len(), Ordering::Relaxed);
                            if pause(n) {
                                std::thread::yield_now();
                            }
                            requests.iter().map(|r| done(*r)).collect()
                        });
                        match answer {
                            BatchAnswer::Done(Ok(applied)) => {
                                assert_eq!(applied.outcome.earned, request as i64);
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            other => panic!("unexpected answer {other:?}"),
                        }
                    }
                });
            }
        });
        Seen {
            batches: batches.into_inner(),
            largest: largest.into_inner(),
            answered: answered.into_inner(),
        }
    }

    #[test]
    fn every_request_gets_its_own_answer_and_batches_form_under_contention() {
        let seen = hammer(&Combiner::new(), 16, 200, |_| true);
        assert!(seen.batches <= 16 * 200);
        assert!(seen.largest <= MAX_BATCH);
    }

    /// The figures the store benchmark reports: every request and batch counted once, and the
    /// leaders' time.
    #[test]
    fn stats_count_each_batch_and_request_once() {
        let combiner = Combiner::new();
        assert_eq!(combiner.stats(), BatchStats::default());
        let seen = hammer(&combiner, 8, 100, |_| true);
        let stats = combiner.stats();
        assert_eq!(stats.receipts, 8 * 100);
        assert_eq!(stats.batches, seen.batches as u64);
        assert!(stats.leading_nanos > 0);
    }

    /// Many callers, short batches, callers arriving while a leader hands over: every caller
    /// gets its answer (a lost wake-up would hang here), each exactly once.
    #[test]
    fn no_caller_is_left_waiting_when_leaders_hand_over() {
        let combiner = Combiner::new();
        let seen = hammer(&combiner, 64, 300, |n| n % 7 == 0);
        assert_eq!(seen.answered, 64 * 300);
        let state = lock(&combiner.state);
        assert!(state.queue.is_empty() && !state.busy);
    }

    #[test]
    fn a_panicking_leader_leaves_retry_answers_and_the_combiner_usable() {
        let combiner = Combiner::<u32>::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            combiner.submit(1, |_| panic!("boom"))
        }));
        assert!(result.is_err());
        match combiner.submit(2, |requests| requests.iter().map(|r| done(*r)).collect()) {
            BatchAnswer::Done(Ok(applied)) => assert_eq!(applied.outcome.earned, 2),
            other => panic!("unexpected answer {other:?}"),
        }
        // Nothing is left behind for the caller that unwound.
        let state = lock(&combiner.state);
        assert!(state.queue.is_empty() && !state.busy);
    }

    /// A batch applied directly (deterministic composition): a sale, a refused sale (unknown
    /// customer), a duplicate of the first sale in the same batch, a return of it, a refused
    /// return of a return, and a sale whose customer's tier changed after it was prepared.
    #[test]
    fn a_batch_with_refusals_duplicates_and_a_stale_tier() {
        use crate::StorageConfig;
        use crate::{OutcomeNote, Refused, Store};
        use jiff::Timestamp;
        use loyalty_core::customer::Customer;
        use loyalty_core::ledger::{Earning, EarningPolicy};
        use loyalty_core::money::Money;
        use loyalty_core::receipt::{Receipt, ReceiptKind, ReceiptLimits, ReceiptLine};
        use std::sync::Arc;

        struct Policy(ReceiptLimits);
        impl EarningPolicy for Policy {
            fn earn(&self, receipt: &Receipt, tier: Option<&str>) -> Earning {
                let eligible = self.eligible_amount(&receipt.lines);
                let factor = if tier == Some("gold") { 2 } else { 1 };
                Earning {
                    points: eligible.0 / 100 * factor,
                    eligible,
                    vests_at: None,
                    promotions: Vec::new(),
                }
            }
            fn eligible_amount(&self, lines: &[ReceiptLine]) -> Money {
                lines.iter().map(|l| l.amount).sum()
            }
            fn limits(&self) -> &ReceiptLimits {
                &self.0
            }
        }
        let policy = Policy(ReceiptLimits {
            currency: "EUR".into(),
            max_total: Money(10_000_000),
            known_categories: Default::default(),
        });
        let now: Timestamp = "2026-11-23T10:00:00Z".parse().expect("time");
        let receipt = |id: &str, amount: i64, original: Option<&str>| Receipt {
            id: id.into(),
            lane: "1".into(),
            timestamp: now,
            kind: match original {
                None => ReceiptKind::Sale,
                Some(o) => ReceiptKind::Return {
                    original_receipt_id: o.into(),
                },
            },
            currency: "EUR".into(),
            total: Money(amount),
            card: None,
            rewards: vec![],
            redemptions: Vec::new(),
            lines: vec![ReceiptLine {
                sku: "1".into(),
                name: "item".into(),
                qty_milli: 1000,
                unit_price: Some(Money(amount)),
                amount: Money(amount),
                category: None,
            }],
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StorageConfig {
            data_dir: dir.path().to_path_buf(),
            cache_capacity_mb: 8,
            outbox_retention_hours: 0,
            receipt_retention_days: 0,
        };
        let store = Store::open(&config, "S1").expect("open");
        let alice = store.enroll("2990000000019", now).expect("enroll");
        let bob = store.enroll("2990000000026", now).expect("enroll");
        let carol = store.enroll("2990000000033", now).expect("enroll");
        let events_before = store.outbox_stats().expect("stats").last_seq;

        let prepare = |r: &Receipt, customer: Option<&str>| {
            Arc::new(
                store
                    .prepare_receipt(r, customer, false, &policy, now)
                    .expect("prepare"),
            )
        };
        let batch = vec![
            prepare(&receipt("S-1", 1000, None), Some(&alice.id)),
            prepare(&receipt("S-2", 500, None), Some("S1-unknown")),
            prepare(&receipt("S-1", 9900, None), Some(&bob.id)),
            prepare(&receipt("R-1", 500, Some("S-1")), None),
            prepare(&receipt("R-2", 100, Some("R-1")), None),
            prepare(&receipt("S-3", 700, None), Some(&carol.id)),
            prepare(&receipt("S-4", 300, None), None),
        ];
        // Carol became gold after her sale was prepared (as silver).
        let mut gold = carol.clone();
        gold.tier = Some("gold".into());
        store.upsert_crm_customer(&gold).expect("upsert");

        let answers = store.apply_batch(&batch);
        assert_eq!(answers.len(), batch.len());
        let outcome = |i: usize| match &answers[i] {
            BatchAnswer::Done(Ok(applied)) => applied.outcome.clone(),
            other => panic!("answer {i}: {other:?}"),
        };
        let first = outcome(0);
        assert_eq!((first.earned, first.duplicate), (10, false));
        assert!(matches!(
            &answers[1],
            BatchAnswer::Done(Err(StoreError::Refused(Refused::UnknownCustomer(_))))
        ));
        let duplicate = outcome(2);
        assert!(duplicate.duplicate);
        assert_eq!(duplicate.earned, 10);
        assert_eq!(duplicate.customer_id.as_deref(), Some(alice.id.as_str()));
        let ret = outcome(3);
        assert_eq!(ret.earned, -5);
        assert_eq!(ret.balance.map(|b| b.total), Some(5));
        assert!(matches!(
            &answers[4],
            BatchAnswer::Done(Err(StoreError::Refused(Refused::NotASale(_))))
        ));
        assert!(matches!(&answers[5], BatchAnswer::Retry));
        assert_eq!(outcome(6).note, Some(OutcomeNote::NoCustomer));

        // Nothing of the refused or retried receipts was written.
        assert!(store.receipt("S-2").expect("read").is_none());
        assert!(store.receipt("R-2").expect("read").is_none());
        assert!(store.receipt("S-3").expect("read").is_none());
        assert_eq!(store.balance(&carol.id, now).expect("balance").total, 0);
        assert_eq!(store.receipt_count(), 3);
        // S-1: receipt + ledger, R-1: receipt + ledger, S-4: receipt.
        let events = store.outbox_after(events_before, 100).expect("outbox");
        assert_eq!(events.len(), 5);
        for (n, event) in events.iter().enumerate() {
            assert_eq!(event.seq, events_before + 1 + n as u64);
        }
        let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), events.len());

        // The retried sale, applied alone, earns at carol's new tier.
        let carol_sale = store
            .apply_receipt(&receipt("S-3", 700, None), Some(&carol.id), &policy, now)
            .expect("apply alone");
        assert_eq!(carol_sale.earned, 14);
        let _: Option<Customer> = store.customer(&carol.id).expect("customer");
        let report = store.verify().expect("verify");
        assert!(report.is_consistent(), "{report}");
        assert_eq!(report.entries, 3);
    }
}
