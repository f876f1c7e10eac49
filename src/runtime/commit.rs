//! A batch's transaction: where it stands ([`Txn`]), the commit thread that carries it
//! ([`Commit`]), and the [`Gate`] through which a rebalance waits for that thread.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::TopicPartitionList;
use tracing::warn;

use super::kafka::{await_deliveries, send, TxnProducer, TIMEOUT};
use super::RuntimeError;
use crate::config::Topics;
use crate::runtime::store::OutRecord;

/// How many times a commit that timed out is resumed before the batch is given up.
const COMMIT_ATTEMPTS: u32 = 3;
/// The longest a commit can take: sending the offsets, waiting for deliveries, and every
/// attempt at the commit itself each wait up to [`TIMEOUT`]. A rebalance waits this long for
/// the commit in flight (30 s before, so a slow commit's partitions could move while it ran).
pub(super) const LONGEST_COMMIT: Duration = TIMEOUT.saturating_mul(2 + COMMIT_ATTEMPTS);
/// How long the main thread waits for a commit before taking it for stuck: a call's timeout
/// longer than the longest a commit whose calls keep their timeouts can take ([`LONGEST_COMMIT`],
/// plus the sends, which wait for a full queue at most as long as a record may stay queued:
/// `transaction_timeout`). librdkafka's `send_offsets_to_transaction` can block past its own
/// timeout, for ever, once the group coordinator's broker went down and came back
/// (confluentinc/librdkafka#5456 and #5511, open; seen in `tests/kafka_cluster.rs`).
pub(super) fn stuck_after(transaction_timeout: Duration) -> Duration {
    LONGEST_COMMIT + transaction_timeout + TIMEOUT
}
/// The exit status of an instance whose commit is stuck (EX_SOFTWARE).
pub const STUCK_EXIT: i32 = 70;

/// Where the producer's transaction stands. One at a time: a batch's transaction begins only
/// once the one before it has committed or been ended, so "open and committing" has no value.
pub(super) enum Txn {
    /// No transaction: the next batch may begin one.
    Idle,
    /// The commit thread is carrying a batch's transaction (begun there, committed there).
    Committing(InFlight),
    /// A transaction was begun (at that instant) and did not commit: it must be aborted before
    /// the next.
    Open(Instant),
}

impl Txn {
    /// The commit thread is still at work.
    pub(super) fn committing(&self) -> bool {
        matches!(self, Txn::Committing(f) if !f.thread.is_finished())
    }

    /// The batch in flight, if any, leaving `Idle` in its place; any other state stays.
    pub(super) fn take_in_flight(&mut self) -> Option<InFlight> {
        match std::mem::replace(self, Txn::Idle) {
            Txn::Committing(f) => Some(f),
            other => {
                *self = other;
                None
            }
        }
    }
}

/// A batch written to the store, its transaction committing on a thread of its own while the
/// next batch is prepared.
pub(super) struct InFlight {
    pub(super) thread: JoinHandle<Result<Duration, Failed>>,
    pub(super) records: u64,
    pub(super) outputs: u64,
    pub(super) dead_letters: u64,
    pub(super) kinds: HashMap<(String, &'static str), u64>,
    /// The offsets the transaction commits, per input partition.
    pub(super) next_offsets: std::collections::BTreeMap<i32, i64>,
    /// When its transaction began (about: when the thread was started).
    pub(super) began: Instant,
}

/// Ends the process on a commit stuck inside librdkafka: no call can end or abort it, and its
/// thread cannot be stopped, so the instance would hold on to nothing, consume nothing and never
/// stop. `_exit`, as after `kill -9`: the coordinator aborts the transaction at its timeout, the
/// group gives the partitions to others, and the instance restarted (by its supervisor) goes on
/// from the last commit; the store's outboxes make that exact.
pub(super) fn exit_stuck(batch: &InFlight, waited: Duration) -> ! {
    tracing::error!(
        waited_s = waited.as_secs(),
        records = batch.records,
        "the commit in flight is stuck inside librdkafka (confluentinc/librdkafka#5456): exiting \
         with status {STUCK_EXIT} for a restart to go on from the last commit"
    );
    signal_hook::low_level::exit(STUCK_EXIT)
}

/// A transaction that did not commit, by whether it is still open (to be aborted).
pub(super) enum Failed {
    /// It could not even begin.
    NotBegun(RuntimeError),
    Open(RuntimeError),
}

/// What one batch's transaction carries.
pub(super) struct Commit {
    pub(super) producer: Arc<TxnProducer>,
    pub(super) topics: Topics,
    pub(super) outputs: Vec<OutRecord>,
    pub(super) offsets: TopicPartitionList,
    pub(super) group: ConsumerGroupMetadata,
    /// `transaction.timeout.ms`: a transaction open longer has been aborted by the coordinator.
    pub(super) timeout: Duration,
}

impl Commit {
    /// Runs the commit on a thread of its own, `gate` busy until it is done.
    pub(super) fn spawn(
        self,
        gate: &Arc<Gate>,
    ) -> Result<JoinHandle<Result<Duration, Failed>>, RuntimeError> {
        let busy = Busy::new(gate);
        std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || {
                // Held until the thread ends, however it ends: a panic unwinding past it frees the
                // gate too, rather than leaving every later rebalance to wait out its timeout.
                let _busy = busy;
                self.run()
            })
            .map_err(RuntimeError::Thread)
    }

    /// Produces the outputs and commits them with the offsets, in one transaction; returns how
    /// long that took.
    fn run(self) -> Result<Duration, Failed> {
        let _span = tracing::trace_span!(
            target: crate::runtime::pipeline::trace::TARGET,
            "commit",
            outputs = self.outputs.len()
        )
        .entered();
        let started = Instant::now();
        let p = &self.producer;
        p.begin_transaction()
            .map_err(|e| Failed::NotBegun(RuntimeError::Producer(e)))?;
        let timeout = self.timeout;
        let open = |e: KafkaError| Failed::Open(outlived(e, started, timeout));
        for record in &self.outputs {
            let mut pending = BaseRecord::to(self.topics.name(record.topic))
                .key(record.key.as_str())
                .payload(record.value.as_str());
            // The CloudEvents content type, the input's trace context, a dead letter's context.
            if let Some(headers) = record.headers.to_kafka() {
                pending = pending.headers(headers);
            }
            send(p, pending).map_err(open)?;
        }
        p.send_offsets_to_transaction(&self.offsets, &self.group, TIMEOUT)
            .map_err(open)?;
        await_deliveries(p, TIMEOUT);
        // A commit that timed out (a broker restarting) is still under way: librdkafka asks for
        // the call to be repeated to learn its outcome. Giving up instead left the abort that
        // followed failing as "conflicting", and the producer replaced, every time.
        let mut attempts = 1;
        loop {
            match p.commit_transaction(TIMEOUT) {
                Ok(()) => return Ok(started.elapsed()),
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && attempts < COMMIT_ATTEMPTS =>
                {
                    warn!(error = %e, attempts, "commit not finished yet; asking again");
                    attempts += 1;
                }
                Err(e) => return Err(open(e)),
            }
        }
    }
}

/// A transaction open longer than `timeout` was aborted by the coordinator, which bumped the
/// producer's epoch; librdkafka then reports the producer as fenced "by a newer instance", as it
/// does when another instance took the transactional ID. Told apart by the transaction's age, a
/// broker outage is not counted as a fencing (review F9): only another instance can fence a
/// transaction younger than its timeout.
pub(super) fn outlived(e: KafkaError, started: Instant, timeout: Duration) -> RuntimeError {
    if started.elapsed() > timeout {
        RuntimeError::TimedOut(e)
    } else {
        RuntimeError::Producer(e)
    }
}

/// The rebalance callback's view of [`Txn::Committing`]: whether the commit thread is at work.
/// Partitions are given up only once it is done: their next owner then starts from offsets that
/// are settled, committed or aborted.
#[derive(Default)]
pub(super) struct Gate {
    busy: Mutex<bool>,
    idle: Condvar,
}

impl Gate {
    fn set(&self, busy: bool) {
        *self.busy.lock().expect("gate lock") = busy;
        if !busy {
            self.idle.notify_all();
        }
    }

    /// Waits until no commit is at work, or `timeout` passed; true when idle.
    pub(super) fn wait_idle(&self, timeout: Duration) -> bool {
        let busy = self.busy.lock().expect("gate lock");
        let (busy, _) = self
            .idle
            .wait_timeout_while(busy, timeout, |busy| *busy)
            .expect("gate lock");
        !*busy
    }
}

/// The gate held busy for as long as this lives.
pub(super) struct Busy(Arc<Gate>);

impl Busy {
    pub(super) fn new(gate: &Arc<Gate>) -> Self {
        gate.set(true);
        Busy(Arc::clone(gate))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_thread_that_panics_frees_the_gate() {
        let gate = Arc::new(Gate::default());
        let busy = Busy::new(&gate);
        assert!(
            !gate.wait_idle(Duration::from_millis(10)),
            "busy while held"
        );
        let thread = std::thread::spawn(move || {
            let _busy = busy;
            panic!("the commit thread fails");
        });
        assert!(thread.join().is_err());
        assert!(gate.wait_idle(Duration::from_millis(10)));
    }

    #[test]
    fn a_failure_of_a_transaction_older_than_its_timeout_is_the_coordinators_doing() {
        let fenced = || KafkaError::MessageProduction(rdkafka::error::RDKafkaErrorCode::Fenced);
        let young = Instant::now();
        assert!(matches!(
            outlived(fenced(), young, Duration::from_secs(60)),
            RuntimeError::Producer(_)
        ));
        let old = Instant::now() - Duration::from_secs(61);
        assert!(matches!(
            outlived(fenced(), old, Duration::from_secs(60)),
            RuntimeError::TimedOut(_)
        ));
    }

    #[test]
    fn a_commit_blocked_past_the_limit_is_seen_stuck_in_time() {
        let gate = Arc::new(Gate::default());
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let busy = Busy::new(&gate);
        // A commit blocked in a call that never returns, as librdkafka#5456's.
        let thread = std::thread::spawn(move || {
            let _busy = busy;
            let _ = blocked.recv();
        });
        let waited = Instant::now();
        assert!(!gate.wait_idle(Duration::from_millis(50)), "seen stuck");
        let waited = waited.elapsed();
        assert!(waited >= Duration::from_millis(50) && waited < Duration::from_secs(5));
        release.send(()).unwrap();
        assert!(gate.wait_idle(Duration::from_secs(10)), "idle once it ends");
        thread.join().unwrap();
        assert_eq!(
            stuck_after(Duration::from_secs(30)),
            Duration::from_secs(210)
        );
    }

    #[test]
    fn a_rebalance_waits_as_long_as_a_commit_can_take() {
        // send_offsets + deliveries + three commit attempts, 30 s each.
        assert_eq!(LONGEST_COMMIT, Duration::from_secs(150));
    }
}
