//! What the runtime does when something fails. One policy, [`Recovery::action`], maps every
//! [`RuntimeError`] to an [`Action`]; its match follows this table row for row:
//!
//! | error | action |
//! |---|---|
//! | the group consumer was fenced as a static member (`ConsumerFatal` with `FencedInstanceId`): after a session that lapsed (a network cut longer than `session.timeout.ms`), librdkafka's rejoin is refused as if another member had taken the name (librdkafka issue 3437) | `ReplaceConsumer`: a new consumer under the same `group.instance.id`, which rejoins; the fourth within 10 minutes means another live instance has the name: `Exit` |
//! | the group consumer failed fatally otherwise (`ConsumerFatal`) | `Exit` |
//! | a producer call (begin, produce, send offsets, commit, abort, init) failed as fenced: `Fenced`, `ProducerFenced` or `Fatal` | `ReplaceProducer { fenced: true }`: a new producer (same transactional ID, new epoch), then rewind. The fourth fencing within 10 minutes: `Exit` |
//! | the coordinator timed the transaction out and bumped the epoch (a long broker outage, a stall past `transaction.timeout.ms`): a producer call or the abort failed with `InvalidProducerEpoch`, or any producer call of a transaction open longer than the timeout failed (`TimedOut`: librdkafka reports that as fenced too) | `ReplaceProducer { fenced: false }`: not a fencing by another instance, so not counted towards the exit |
//! | the abort failed otherwise | `ReplaceProducer { fenced: false }`: a new producer with the same ID fences the old one and the coordinator finishes whatever it had begun; then rewind |
//! | the batch's offsets were refused because the group's generation moved on (`IllegalGeneration`, `RebalanceInProgress`: a rebalance began while the batch committed) | `Replay`: abort, seek back to the offsets this instance knows are committed (the group would answer a fetch only once the rebalance is over), no back-off |
//! | anything else, from a recovery step, once a stop was asked | `Stop`: `run` ends as at any stop (status 0), the error logged; whoever resumes replays from the last commit |
//! | anything else: Redis, the broker, a stale write, a commit that failed (a timed-out one after 3 resumes), the commit thread | `Retry`: abort the open transaction, rewind to the last commit. A failed batch then backs off 100 ms × the failures in a row (at most 3 s); a failed recovery step is retried after 200 ms, doubling up to 5 s |
//! | any of the above whose abort purged records that may have reached the broker (a delivery report with a status other than "not persisted") | after the abort, a new transactional producer (new epoch) before the rewind: librdkafka gives the next records the purged ones' sequence numbers, and a broker holding a purged record would take the replayed one for its duplicate and drop it |
//!
//! A rewind goes to whatever was committed, so a transaction the coordinator finished for a
//! replaced producer is consistent either way, and the batches after the last commit replay
//! exactly once (`docs/architecture.md`). A batch collected across a rebalance is dropped the
//! same way ([`Runtime::rewind`]); at stop, the last batch's transaction is only ended
//! ([`Runtime::abandon`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{Producer, PurgeConfig};
use tracing::{error, info, warn};

use super::commit::{outlived, Txn};
use super::consumer::Reassigned;
use super::kafka::{abort_serving_deliveries, init_serving_events, new_producer};
use super::{Runtime, RuntimeError};
use crate::runtime::pipeline::{Halt, PipelineError};
use crate::runtime::store::{DirectorySource, StateStore};

/// More fencings than this within [`FENCE_WINDOW`] mean another live instance shares the
/// transactional ID: exit rather than fight it.
const MAX_FENCES: usize = 3;
const FENCE_WINDOW: Duration = Duration::from_secs(600);
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(200);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// What is done about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Abort the open transaction, rewind to the last commit, back off.
    Retry,
    /// Start a new transactional producer, then rewind. `fenced`: this one was fenced (and it
    /// counts towards [`MAX_FENCES`]), rather than unable to abort.
    ReplaceProducer { fenced: bool },
    /// End the open transaction and start a new group consumer (same `group.instance.id`),
    /// which rejoins the group; what the old one held is forgotten.
    ReplaceConsumer,
    /// Give up: `run` returns the error.
    Exit,
    /// Abort the open transaction and seek back to the offsets known to be committed, at once.
    Replay,
    /// A stop was asked and the way back to the last commit failed: go no further and let `run`
    /// end as at any stop. Nothing is lost: whatever was not committed replays for whoever
    /// resumes, as after a stop with the last batch uncommitted.
    Stop,
}

/// What the policy remembers between errors.
pub(super) struct Recovery {
    /// When this instance was fenced, within the last [`FENCE_WINDOW`].
    fences: Vec<Instant>,
    /// When its group consumer was fenced as a static member, within the last [`FENCE_WINDOW`].
    consumer_fences: Vec<Instant>,
    /// Batches failed in a row.
    failures: u32,
    /// How long to wait before the next try of a failed recovery step.
    retry_wait: Duration,
    /// `switchboard_fencings_total`.
    fencings: IntCounter,
}

impl Recovery {
    pub(super) fn new(fencings: IntCounter) -> Self {
        Recovery {
            fencings,
            fences: Vec::new(),
            consumer_fences: Vec::new(),
            failures: 0,
            retry_wait: FIRST_RETRY_WAIT,
        }
    }

    /// The policy: the table above, row for row. `stopping`: a stop was asked and `error` came
    /// from a recovery step (a failed batch is recovered even when stopping: `run` then ends
    /// normally).
    pub(super) fn action(&mut self, error: &RuntimeError, stopping: bool) -> Action {
        match error {
            RuntimeError::ConsumerFatal {
                code: RDKafkaErrorCode::FencedInstanceId,
                ..
            } => self.consumer_fenced(),
            RuntimeError::ConsumerFatal { .. } => Action::Exit,
            RuntimeError::Producer(e) | RuntimeError::Abort(e) if fencing(e) => self.fenced(),
            RuntimeError::Producer(e) | RuntimeError::Abort(e) if timed_out(e) => {
                Action::ReplaceProducer { fenced: false }
            }
            RuntimeError::TimedOut(_) => Action::ReplaceProducer { fenced: false },
            RuntimeError::Abort(_) => Action::ReplaceProducer { fenced: false },
            RuntimeError::Producer(e) if overtaken(e) => Action::Replay,
            _ if stopping => Action::Stop,
            _ => Action::Retry,
        }
    }

    /// The producer was fenced. Usually this instance was the zombie: frozen (a long GC-like
    /// pause, a stopped VM) past its session and transaction timeouts, its transaction aborted by
    /// the coordinator and its partitions given to others. Then the way on is a fresh producer
    /// (same transactional ID, new epoch) and a rewind to what was committed; the state writes it
    /// may still attempt are refused in Redis (compare-and-set on the offset they read). But if another running instance shares
    /// the transactional ID (a misconfiguration), the two would fence each other for ever: more
    /// than [`MAX_FENCES`] fencings within [`FENCE_WINDOW`] end this instance instead.
    fn fenced(&mut self) -> Action {
        self.fencings.inc();
        if too_often(&mut self.fences) {
            Action::Exit
        } else {
            Action::ReplaceProducer { fenced: true }
        }
    }

    /// The group consumer was fenced as a static member. librdkafka rejoins after a lapsed
    /// session (a network cut longer than `session.timeout.ms`) in a way the coordinator takes
    /// for another member with the same `group.instance.id`, and the consumer is then beyond
    /// use; a new one under the same name rejoins cleanly. Two live instances started with one
    /// name fence each other in turn instead: more than [`MAX_FENCES`] within [`FENCE_WINDOW`]
    /// end this one, with the error that says so.
    fn consumer_fenced(&mut self) -> Action {
        self.fencings.inc();
        if too_often(&mut self.consumer_fences) {
            Action::Exit
        } else {
            Action::ReplaceConsumer
        }
    }

    /// A batch went through.
    pub(super) fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// After a failed batch was recovered: the longer failures go on, the longer the wait.
    fn back_off(&mut self) {
        self.failures += 1;
        std::thread::sleep(Duration::from_millis(
            100 * u64::from(self.failures.min(30)),
        ));
    }

    /// What the policy says about a failed recovery step; a retry waits first, 200 ms and
    /// doubling up to 5 s, for as long as the recovery goes on failing.
    fn after_failed_step(&mut self, error: &RuntimeError, stop: &AtomicBool) -> Action {
        let action = self.action(error, stop.load(Ordering::SeqCst));
        if action == Action::Retry {
            let wait = self.retry_wait;
            self.retry_wait = (wait * 2).min(MAX_RETRY_WAIT);
            warn!(error = %error, retry_in = ?wait, "recovery failed; retrying");
            std::thread::sleep(wait);
        }
        action
    }

    /// Back at the last commit: the next failed recovery step waits the shortest again.
    fn recovered(&mut self) {
        self.retry_wait = FIRST_RETRY_WAIT;
    }
}

/// Notes one more fencing in `times`: true when that makes more than [`MAX_FENCES`] within
/// [`FENCE_WINDOW`].
fn too_often(times: &mut Vec<Instant>) -> bool {
    times.retain(|t| t.elapsed() < FENCE_WINDOW);
    times.push(Instant::now());
    times.len() > MAX_FENCES
}

/// Row 1's error codes: the producer was fenced by another with its transactional ID, or is
/// otherwise beyond use.
fn fencing(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::Fatal)
    )
}

/// The group's generation moved on while the batch's offsets were sent: a rebalance began (under
/// the cooperative protocol, an instance rejoins before it gives any partition up), and the
/// coordinator refuses offsets of the generation before (KIP-447). Nothing of the transaction
/// is committed, so the offsets this instance tracks are the group's: it goes back to them
/// without asking. Asking would wait for the rebalance to end (3 s, measured), and the
/// partitions it keeps would wait with it.
fn overtaken(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::IllegalGeneration | RDKafkaErrorCode::RebalanceInProgress)
    )
}

/// Row 2's: the coordinator aborted the transaction as timed out and bumped the producer's epoch
/// (KIP-588). The producer must be replaced, but no other instance is involved: counting it
/// towards the exit would end an instance after a few long broker outages (review F9).
fn timed_out(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::InvalidProducerEpoch)
}

impl RuntimeError {
    /// The error `run` exits with: a fencing says what it means.
    fn into_exit(self) -> Self {
        match self {
            RuntimeError::Producer(e) | RuntimeError::Abort(e) if fencing(&e) => {
                RuntimeError::Fenced(e)
            }
            other => other,
        }
    }
}

impl<S: StateStore, D: DirectorySource> Runtime<S, D> {
    /// A batch failed (to apply, to write or to commit): book it, get back to the last commit
    /// as the policy says, and back off if it was retried.
    pub(super) fn failed(
        &mut self,
        error: RuntimeError,
        stop: &AtomicBool,
    ) -> Result<(), RuntimeError> {
        // A failure while preparing may leave the previous batch committing: settle it first.
        if let Err(e) = self.settle() {
            warn!(error = %e, "the batch before the failed one did not commit either");
        }
        self.stats.aborted += 1;
        self.metrics.aborted.inc();
        self.metrics.batch_outcome(false);
        let halted = match &error {
            RuntimeError::Pipeline(PipelineError::Halt(halts)) => self.halt(halts),
            _ => false,
        };
        // Recovered even when a stop was asked: `run` then ends normally.
        let action = self.recovery.action(&error, false);
        if action == Action::Replay {
            info!(error = %error, "the group rebalanced while the batch committed; aborting and replaying it from the last commit");
        } else if action == Action::Retry && !halted {
            warn!(error = %error, "batch failed; aborting and replaying from the last commit");
        }
        self.recover(action, error, stop)?;
        // The batch goes on at once without the halted partitions: nothing to wait for.
        if action == Action::Retry && !halted {
            self.recovery.back_off();
        }
        Ok(())
    }

    /// Stops consuming the partitions a batch found cannot go on (see
    /// [`PipelineError::Halt`]); the others go on. True if any was halted; a partition that
    /// cannot be paused is halted all the same (its records are dropped as they arrive).
    fn halt(&mut self, halts: &[Halt]) -> bool {
        for h in halts {
            if self.metrics.halts.halt(h.partition, &h.reason) {
                error!(partition = h.partition, reason = %h.reason, "partition halted");
            }
        }
        let partitions: Vec<i32> = halts.iter().map(|h| h.partition).collect();
        if let Err(e) = self.input.pause(&partitions) {
            warn!(error = %e, ?partitions, "cannot pause the halted partitions; dropping their records instead");
        }
        !halts.is_empty()
    }

    /// Rewinds the consumer to the last commit, and learns what that commit is.
    fn rewind_input(&mut self) -> Result<(), RuntimeError> {
        self.committed = self.input.rewind(None)?;
        Ok(())
    }

    /// After a rebalance: forgets what is known of the partitions given up and rewinds those
    /// just assigned, leaving the others where they are. True when the records collected from
    /// those others may go on; false when every partition was rewound instead (a failed
    /// rebalance, or a failure on the way).
    pub(super) fn reassign(
        &mut self,
        changes: &Reassigned,
        stop: &AtomicBool,
    ) -> Result<bool, RuntimeError> {
        if changes.all {
            self.rewind(stop)?;
            return Ok(false);
        }
        for p in changes.revoked.iter().chain(&changes.assigned) {
            self.committed.0.remove(p);
            self.noted.0.remove(p);
        }
        let partial = self.end_transaction().and_then(|()| {
            if !changes.assigned.is_empty() {
                let fetched = self.input.rewind(Some(&changes.assigned))?;
                self.committed.0.extend(fetched.0);
            }
            Ok(())
        });
        match partial {
            Ok(()) => Ok(true),
            Err(e) => {
                let action = self.recovery.after_failed_step(&e, stop);
                self.recover(action, e, stop)?;
                Ok(false)
            }
        }
    }

    /// Back to the last commit after a batch was dropped (collected across a rebalance).
    pub(super) fn rewind(&mut self, stop: &AtomicBool) -> Result<(), RuntimeError> {
        match self.end_transaction().and_then(|()| self.rewind_input()) {
            Ok(()) => Ok(()),
            Err(e) => {
                let action = self.recovery.after_failed_step(&e, stop);
                self.recover(action, e, stop)
            }
        }
    }

    /// Does `action` about `error`, then what the policy says about each failure on the way
    /// (the broker or Redis unavailable: a restart, a network blip), until the consumer is back
    /// at the last commit; `Err` is the error to exit with.
    fn recover(
        &mut self,
        mut action: Action,
        mut error: RuntimeError,
        stop: &AtomicBool,
    ) -> Result<(), RuntimeError> {
        loop {
            let step = match action {
                Action::Exit => return Err(error.into_exit()),
                // Exiting with the error would tell an orchestrator that asked for the stop that
                // the processor failed, for an outage it only happened to stop during.
                Action::Stop => {
                    warn!(error = %error, "stopping without getting back to the last commit; whoever resumes replays from it");
                    return Ok(());
                }
                Action::ReplaceProducer { fenced: true } => {
                    warn!(error = %error, "fenced: starting a new transactional producer and replaying from the last commit");
                    self.replace_producer()
                }
                Action::ReplaceProducer { fenced: false } => {
                    warn!(error = %error, "abort failed; replacing the transactional producer");
                    self.replace_producer()
                }
                Action::ReplaceConsumer => {
                    warn!(error = %error, "the group fenced this instance's consumer; starting a new one under the same group.instance.id to rejoin");
                    self.replace_consumer()
                }
                Action::Retry | Action::Replay => self.end_transaction(),
            };
            let back = step.and_then(|()| match action {
                Action::Replay => self.input.seek(&self.committed),
                // Nothing is assigned yet: each partition is rewound as it is.
                Action::ReplaceConsumer => Ok(()),
                _ => self.rewind_input(),
            });
            match back {
                Ok(()) => {
                    self.recovery.recovered();
                    return Ok(());
                }
                Err(e) => error = e,
            }
            action = self.recovery.after_failed_step(&error, stop);
        }
    }

    /// At stop, when the last batch did not commit: its transaction is ended as in a recovery,
    /// but nothing is retried or rewound; whoever resumes replays the batch.
    pub(super) fn abandon(&mut self) {
        if let Err(e) = self.end_transaction() {
            if self.recovery.action(&e, true) == (Action::ReplaceProducer { fenced: false }) {
                let _ = self.replace_producer();
            }
        }
    }

    /// Ends an open transaction without committing it. When the abort itself fails — after a
    /// broker restart the producer can be left waiting on requests that will never be answered —
    /// the policy replaces the producer.
    ///
    /// If a record of the aborted transaction failed delivery after it may have reached the
    /// broker, the producer is replaced too (a new epoch): librdkafka would give the replay's
    /// records the same sequence numbers, and the broker would take them for duplicates of the
    /// aborted ones (see [`super::kafka::AuthFailures::sent_then_failed`]). Until a replacement
    /// has initialised, every call tries again (`stale_sequences`).
    fn end_transaction(&mut self) -> Result<(), RuntimeError> {
        if let Txn::Open(began) = self.txn {
            let timeout = Duration::from_millis(self.config.kafka.transaction_timeout_ms.into());
            // Aborting what the coordinator already aborted fails as fenced: not another
            // instance.
            abort_serving_deliveries(&self.producer).map_err(|e| {
                match outlived(e, began, timeout) {
                    RuntimeError::Producer(e) => RuntimeError::Abort(e),
                    timed_out => timed_out,
                }
            })?;
            self.txn = Txn::Idle;
        }
        if self.producer.context().sent_then_failed() {
            self.stale_sequences = true;
        }
        if self.stale_sequences {
            warn!("records of the aborted transaction may have reached the broker; starting a new transactional producer (new epoch) before the replay");
            self.replace_producer()?;
        }
        Ok(())
    }

    /// A new group consumer in place of one beyond use: the partitions the old one held are
    /// forgotten (their offsets, their halts), and come back, rewound, as the new one is
    /// assigned them.
    fn replace_consumer(&mut self) -> Result<(), RuntimeError> {
        self.end_transaction()?;
        let fresh = super::consumer::Input::new(
            &self.config,
            Arc::clone(&self.metrics),
            Arc::clone(&self.committing),
        )?;
        self.input = fresh;
        self.input.subscribe()?;
        self.committed = Default::default();
        self.noted = Default::default();
        let halted = self.metrics.halts.partitions();
        self.metrics.halts.release(halted);
        Ok(())
    }

    /// A new transactional producer with the same ID: it fences the old one, and the coordinator
    /// finishes or aborts whatever that one had begun. Its epoch is new: its sequence numbers
    /// start afresh (see [`Runtime::end_transaction`]).
    fn replace_producer(&mut self) -> Result<(), RuntimeError> {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        self.producer = Arc::new(new_producer(&self.config)?);
        init_serving_events(&self.producer).map_err(RuntimeError::Producer)?;
        self.txn = Txn::Idle;
        self.stale_sequences = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_fenced_as_a_static_member_is_replaced_three_times_then_exits() {
        let counter = IntCounter::new("fencings", "fencings").unwrap();
        let mut recovery = Recovery::new(counter.clone());
        let fatal = |code| RuntimeError::ConsumerFatal {
            code,
            reason: "fenced".into(),
            instance: "sb-1".into(),
        };
        for _ in 0..MAX_FENCES {
            assert_eq!(
                recovery.action(&fatal(RDKafkaErrorCode::FencedInstanceId), false),
                Action::ReplaceConsumer
            );
        }
        assert_eq!(
            recovery.action(&fatal(RDKafkaErrorCode::FencedInstanceId), false),
            Action::Exit
        );
        assert_eq!(counter.get(), MAX_FENCES as u64 + 1);
        // Any other fatal consumer error ends the run at once.
        let mut fresh = Recovery::new(IntCounter::new("f", "f").unwrap());
        assert_eq!(
            fresh.action(&fatal(RDKafkaErrorCode::Fatal), false),
            Action::Exit
        );
    }

    #[test]
    fn every_fencing_recognised_is_counted_and_nothing_else() {
        let counter = IntCounter::new("fencings", "fencings").unwrap();
        let mut recovery = Recovery::new(counter.clone());
        let fenced =
            || RuntimeError::Producer(KafkaError::MessageProduction(RDKafkaErrorCode::Fenced));
        let other = || {
            RuntimeError::Producer(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            ))
        };
        assert_eq!(recovery.action(&other(), false), Action::Retry);
        assert_eq!(
            recovery.action(&RuntimeError::Abort(KafkaError::Canceled), false),
            Action::ReplaceProducer { fenced: false }
        );
        // A transaction the coordinator timed out, however often and however librdkafka names
        // it: replaced, never an exit.
        for _ in 0..2 * MAX_FENCES {
            let fenced_late =
                RuntimeError::TimedOut(KafkaError::MessageProduction(RDKafkaErrorCode::Fenced));
            assert_eq!(
                recovery.action(&fenced_late, false),
                Action::ReplaceProducer { fenced: false }
            );
        }
        let timed_out = || {
            RuntimeError::Producer(KafkaError::MessageProduction(
                RDKafkaErrorCode::InvalidProducerEpoch,
            ))
        };
        for _ in 0..2 * MAX_FENCES {
            assert_eq!(
                recovery.action(&timed_out(), false),
                Action::ReplaceProducer { fenced: false }
            );
        }
        let overtaken = RuntimeError::Producer(KafkaError::MessageProduction(
            RDKafkaErrorCode::IllegalGeneration,
        ));
        assert_eq!(recovery.action(&overtaken, false), Action::Replay);
        assert_eq!(counter.get(), 0);
        for _ in 0..MAX_FENCES {
            assert_eq!(
                recovery.action(&fenced(), false),
                Action::ReplaceProducer { fenced: true }
            );
        }
        // The one too many is counted too, as the instance exits.
        assert_eq!(recovery.action(&fenced(), true), Action::Exit);
        assert_eq!(counter.get(), MAX_FENCES as u64 + 1);
        // Anything else failing once a stop was asked ends the run as a stop, not an error.
        assert_eq!(recovery.action(&other(), true), Action::Stop);
        assert_eq!(
            recovery.action(&RuntimeError::Abort(KafkaError::Canceled), true),
            Action::ReplaceProducer { fenced: false }
        );
    }
}
