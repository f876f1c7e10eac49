//! The partitions this instance has halted, and why: what `switchboard_halted_partitions`
//! counts and `/readyz` lists. Shared by the runtime, which halts them, the consumer's
//! rebalance callback, which forgets those it gives up, and the HTTP endpoints.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus::{IntGauge, Registry};

pub struct Halts {
    partitions: Mutex<BTreeMap<i32, String>>,
    gauge: IntGauge,
}

impl Halts {
    pub(super) fn registered(registry: &Registry) -> Self {
        Halts {
            partitions: Mutex::new(BTreeMap::new()),
            gauge: super::gauge(
                registry,
                "switchboard_halted_partitions",
                "Assigned input partitions this instance stopped consuming because going on would lose, repeat or diverge (the log and /readyz say why)",
            ),
        }
    }

    /// Halts `partition` for `reason`; false if it was halted already.
    pub fn halt(&self, partition: i32, reason: &str) -> bool {
        let mut halted = self.partitions.lock().expect("halts lock");
        let new = halted.insert(partition, reason.to_string()).is_none();
        self.gauge.set(halted.len() as i64);
        new
    }

    /// The halted partitions, as they are now.
    pub fn partitions(&self) -> std::collections::BTreeSet<i32> {
        let halted = self.partitions.lock().expect("halts lock");
        halted.keys().copied().collect()
    }

    /// Forgets the halts of partitions given up: whoever gets them next finds what halted them
    /// again, for as long as it lasts.
    pub fn release(&self, partitions: impl IntoIterator<Item = i32>) {
        let mut halted = self.partitions.lock().expect("halts lock");
        for p in partitions {
            halted.remove(&p);
        }
        self.gauge.set(halted.len() as i64);
    }

    /// Every halted partition with its reason, in partition order.
    pub fn list(&self) -> Vec<(i32, String)> {
        let halted = self.partitions.lock().expect("halts lock");
        halted.iter().map(|(p, r)| (*p, r.clone())).collect()
    }
}
