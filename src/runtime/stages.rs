//! The stages of consecutive batches, overlapped: while batch n commits (its thread), batch
//! n+1 is written (a task on the IO runtime) and batch n+2 is collected and applied (the main
//! thread), reading through n+1's write ([`ReadThrough`]).
//!
//! Two rules keep it exact. A batch's write is sent only once the write before it has landed:
//! its compare-and-set bases are what that write leaves. And only once the batch before that
//! one has committed: a conversation keeps the outboxes of its last two writes, so the records
//! older than both must be committed ones. A commit thread begins its transaction only once its
//! batch is written and the thread before it has committed ([`Turn`]); when either fails it
//! begins none, and the batches after the failure are replayed with it.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::commit::{Commit, Failed, InFlight, Turn, Txn};
use super::{Runtime, RuntimeError};
use crate::runtime::pipeline::{
    note_commits, prepare_batch_at, BatchOutput, GroupOffsets, InputRecord, Limits, PipelineError,
    Prepared,
};
use crate::runtime::store::{DirectorySource, Overlay, ReadThrough, StateStore};

/// A batch's write in flight on the IO runtime.
pub(super) struct Writing {
    task: tokio::task::JoinHandle<Result<(), PipelineError>>,
    /// What the next batch reads through.
    overlay: Overlay,
    /// The group's commits the write tells the store of (see `note_commits`).
    noted: GroupOffsets,
}

impl<S: StateStore + 'static, D: DirectorySource> Runtime<S, D> {
    /// Applies a batch while the one before is written and the one before that commits; then
    /// sends its write and hands it to its commit thread.
    pub(super) fn step(&mut self, batch: Vec<InputRecord>) -> Result<(), RuntimeError> {
        if let Some(flag) = &self.started {
            flag.store(true, Ordering::SeqCst);
        }
        let count = batch.len() as u64;
        let applying = Instant::now();
        let through = ReadThrough {
            inner: &*self.store,
            overlay: self.writing.as_ref().map(|w| &w.overlay),
        };
        let prepared = self.io.block_on(prepare_batch_at(
            &through,
            &self.directory,
            self.config.dialect,
            Limits::of(&self.config),
            batch,
            &self.committed,
        ));
        self.land()?;
        let prepared = prepared?;
        self.settle_older()?;
        self.metrics
            .apply_seconds
            .observe(applying.elapsed().as_secs_f64());
        let notes = note_commits(&self.config.topics.input, &self.committed, &self.noted);
        let prepared = prepared.after_commits(&self.committed).noting(notes);
        self.start(prepared, count)
    }

    /// Sends the batch's write, and starts its commit thread, which waits for it.
    fn start(&mut self, prepared: Prepared, records: u64) -> Result<(), RuntimeError> {
        let (staged, out) = prepared.stage();
        let (landed, overlay_landed) = watch::channel(false);
        let (written, written_rx) = mpsc::channel();
        let overlay = staged.overlay(overlay_landed);
        let store = Arc::clone(&self.store);
        let task = self.io.spawn(async move {
            let result = staged.write(&*store).await;
            let _ = written.send(result.is_ok());
            let _ = landed.send(true);
            result
        });
        self.writing = Some(Writing {
            task,
            overlay,
            noted: self.committed.clone(),
        });
        self.start_commit(out, records, written_rx)
    }

    /// Hands a batch's outputs and offsets to a commit thread of its own.
    fn start_commit(
        &mut self,
        out: BatchOutput,
        records: u64,
        written: mpsc::Receiver<bool>,
    ) -> Result<(), RuntimeError> {
        self.metrics.consumer_lag.committing(&out.next_offsets);
        let commit = Commit {
            producer: Arc::clone(&self.producer),
            topics: self.config.topics.clone(),
            offsets: self.input.offsets(&out.next_offsets)?,
            group: self.input.group_metadata(),
            outputs: out.outputs,
            timeout: std::time::Duration::from_millis(
                self.config.kafka.transaction_timeout_ms.into(),
            ),
        };
        let outputs = commit.outputs.len() as u64;
        let dead_letters = commit
            .outputs
            .iter()
            .filter(|o| o.topic == crate::core::event::Topic::DeadLetters)
            .count() as u64;
        let (next, turn) = mpsc::channel();
        let turn = Turn {
            previous: self.turn.replace(turn),
            written,
            next,
        };
        let thread = commit.spawn(&self.committing, turn)?;
        self.flights.0.push_back(InFlight {
            thread,
            records,
            outputs,
            dead_letters,
            kinds: out.kinds,
            next_offsets: out.next_offsets,
            began: Instant::now(),
        });
        Ok(())
    }

    /// Waits for the write in flight, if any.
    fn land(&mut self) -> Result<(), RuntimeError> {
        let Some(w) = self.writing.take() else {
            return Ok(());
        };
        self.io
            .block_on(w.task)
            .map_err(RuntimeError::WriteTask)??;
        self.noted = w.noted;
        Ok(())
    }

    /// Books every batch in flight but the last: its write is sent next.
    fn settle_older(&mut self) -> Result<(), RuntimeError> {
        while self.flights.0.len() > 1 {
            let f = self.flights.0.pop_front().expect("more than one");
            self.book(f)?;
        }
        Ok(())
    }

    /// Waits for the write and the commits in flight, and books them. The first failure is
    /// reported, not the batches abandoned after it.
    pub(super) fn settle(&mut self) -> Result<(), RuntimeError> {
        let landed = self.land();
        let mut failed = None;
        while let Some(f) = self.flights.0.pop_front() {
            match self.book(f) {
                Ok(()) | Err(RuntimeError::Abandoned) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        self.turn = None;
        match failed {
            Some(e) => Err(e),
            None => landed,
        }
    }

    /// Joins a batch's commit thread and books its outcome.
    fn book(&mut self, f: InFlight) -> Result<(), RuntimeError> {
        let result = f
            .thread
            .join()
            .unwrap_or_else(|_| Err(Failed::Open(RuntimeError::CommitPanicked)));
        let took = match result {
            Ok(took) => took,
            Err(Failed::NotBegun(error)) => return Err(error),
            Err(Failed::Open(error)) => {
                self.txn = Txn::Open(f.began);
                return Err(error);
            }
        };
        self.committed.0.extend(&f.next_offsets);
        self.metrics.produce_seconds.observe(took.as_secs_f64());
        self.metrics.consumer_lag.committed();
        self.metrics.batch_outcome(true);
        self.metrics.batches.inc();
        self.metrics.batch_size.observe(f.records as f64);
        self.metrics.outputs.inc_by(f.outputs);
        self.metrics.dead_letters.inc_by(f.dead_letters);
        for ((kind, outcome), n) in &f.kinds {
            self.metrics
                .messages
                .with_label_values(&[kind.as_str(), outcome])
                .inc_by(*n);
        }
        self.stats.batches += 1;
        self.stats.records += f.records;
        self.stats.outputs += f.outputs;
        Ok(())
    }
}
