//! The interleaving: up to `concurrency` conversations open at once, each next message from
//! one of them at random, the k-th created at `start + k / rate`.

use serde_json::Value;

use super::conversation::Conversation;
use super::model::Model;

/// The traffic of a model, one JSON message at a time.
pub struct Generator {
    model: Model,
    open: Vec<Conversation>,
    /// The next conversation to open.
    next_conversation: u64,
    emitted: u64,
    rng: fastrand::Rng,
}

impl Generator {
    pub fn new(model: Model) -> Self {
        let rng = fastrand::Rng::with_seed(model.seed);
        Generator {
            model,
            open: Vec::new(),
            next_conversation: 0,
            emitted: 0,
            rng,
        }
    }

    /// Budget of conversation `n` when a total is given: spread evenly, the remainder first.
    fn budget(&self, n: u64) -> Option<u64> {
        let total = self.model.messages?;
        let c = self.model.conversations;
        Some(total / c + u64::from(n < total % c))
    }

    fn refill(&mut self) {
        while self.open.len() < self.model.concurrency.max(1)
            && self.next_conversation < self.model.conversations
        {
            let n = self.next_conversation;
            self.next_conversation += 1;
            let c = Conversation::new(&self.model, n, self.budget(n));
            if !c.done() {
                self.open.push(c);
            }
        }
    }

    /// `createdAt` of the k-th message.
    fn time(&self, k: u64) -> String {
        let micros = self.model.start_micros + (k as f64 * 1e6 / self.model.rate) as i64;
        chrono::DateTime::from_timestamp_micros(micros)
            .expect("a time in range")
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }
}

impl Iterator for Generator {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        self.refill();
        if self.open.is_empty() {
            return None;
        }
        let i = self.rng.usize(..self.open.len());
        let created_at = self.time(self.emitted);
        let (seed, organizations) = (self.model.seed, self.model.organizations());
        let m = self.open[i].next(seed, organizations, &created_at);
        self.emitted += 1;
        if self.open[i].done() {
            self.open.swap_remove(i);
        }
        Some(m)
    }
}
