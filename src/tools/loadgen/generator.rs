//! The interleaving: up to `concurrency` conversations open at once, each next message from
//! one of them at random, the k-th created at `start + k / rate`. With a hot conversation, each
//! next message is its own with the model's `hot` probability while its budget lasts.

use serde_json::Value;

use super::conversation::Conversation;
use super::model::Model;

/// The traffic of a model, one JSON message at a time.
pub struct Generator {
    model: Model,
    open: Vec<Conversation>,
    /// Conversation 0 when the model has a hot share: kept apart from `open`, so that it is
    /// drawn by its share rather than as one of many.
    hot: Option<Conversation>,
    /// The next conversation to open.
    next_conversation: u64,
    emitted: u64,
    rng: fastrand::Rng,
}

impl Generator {
    pub fn new(model: Model) -> Self {
        let rng = fastrand::Rng::with_seed(model.seed);
        let mut g = Generator {
            model,
            open: Vec::new(),
            hot: None,
            next_conversation: 0,
            emitted: 0,
            rng,
        };
        if let Some(budget) = g.hot_budget() {
            let hot = Conversation::new(&g.model, 0, Some(budget));
            g.hot = (!hot.done()).then_some(hot);
            g.next_conversation = 1;
        }
        g
    }

    /// The hot conversation's budget: its share of the total (none without both).
    fn hot_budget(&self) -> Option<u64> {
        let total = self.model.messages?;
        (self.model.hot > 0.0 && self.model.conversations > 1)
            .then(|| (total as f64 * self.model.hot.min(1.0)).round() as u64)
    }

    /// Budget of conversation `n` when a total is given: spread evenly, the remainder first,
    /// over what the hot conversation leaves.
    fn budget(&self, n: u64) -> Option<u64> {
        let total = self.model.messages?;
        match self.hot_budget() {
            Some(hot) if n == 0 => Some(hot),
            Some(hot) => {
                let (rest, c, k) = (total - hot, self.model.conversations - 1, n - 1);
                Some(rest / c + u64::from(k < rest % c))
            }
            None => {
                let c = self.model.conversations;
                Some(total / c + u64::from(n < total % c))
            }
        }
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
        let created_at = self.time(self.emitted);
        let (seed, organizations) = (self.model.seed, self.model.organizations());
        let hot_turn =
            self.hot.is_some() && (self.open.is_empty() || self.rng.f64() < self.model.hot);
        let m = if hot_turn {
            let hot = self.hot.as_mut().expect("checked above");
            let m = hot.next(seed, organizations, &created_at);
            if hot.done() {
                self.hot = None;
            }
            m
        } else {
            if self.open.is_empty() {
                return None;
            }
            let i = self.rng.usize(..self.open.len());
            let m = self.open[i].next(seed, organizations, &created_at);
            if self.open[i].done() {
                self.open.swap_remove(i);
            }
            m
        };
        self.emitted += 1;
        Some(m)
    }
}
