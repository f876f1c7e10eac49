//! `switchboard_consumer_lag{topic, partition}`: how many records of each assigned input
//! partition the group has not committed yet.
//!
//! librdkafka's own `consumer_lag` statistic subtracts the committed offset *as the consumer
//! knows it*, and offsets committed through the producer's transaction never reach the
//! consumer: that value only grew (143 while the group's real lag was 0 or 1). So the offsets
//! are the runtime's own: fetched from the group coordinator when a partition is assigned, then
//! a batch's next offsets each time its transaction commits. The end of a partition is its last
//! stable offset (LSO) from librdkafka's statistics: the consumer reads `read_committed`, so
//! records past the LSO belong to transactions still open — among them Switchboard's own relay
//! records — and cannot be consumed yet; counting them would report lag that nothing can work
//! off. Once no transaction is open, the LSO is the high watermark, which is what
//! `kafka-consumer-groups --describe` subtracts.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus::IntGaugeVec;

/// What the group has committed for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The next offset to consume.
    At(i64),
    /// Nothing: the consumer starts at the log start (`auto.offset.reset = earliest`).
    Nothing,
    /// Not known (fetching it failed): no lag is reported until a batch commits.
    Unknown,
}

#[derive(Debug)]
struct Partition {
    committed: Committed,
    /// The log start and the last stable offset, once the statistics have reported them.
    start: Option<i64>,
    end: Option<i64>,
}

impl Partition {
    fn lag(&self) -> Option<i64> {
        let from = match self.committed {
            Committed::At(offset) => offset,
            Committed::Nothing => self.start?,
            Committed::Unknown => return None,
        };
        // The statistics arrive every 5 s and a commit may overtake the last end they gave.
        Some((self.end? - from).max(0))
    }
}

#[derive(Debug, Default)]
struct State {
    topic: String,
    /// The assigned partitions: only these have a series.
    partitions: BTreeMap<i32, Partition>,
    /// The next offsets of the batch whose transaction is committing.
    committing: Option<BTreeMap<i32, i64>>,
}

/// The lag per assigned partition, and its gauge. Fed by the consumer's rebalance and
/// statistics callbacks and by the runtime when a batch's commit settles; all of them run on
/// the runtime's thread, so the lock is never contended.
pub struct ConsumerLag {
    gauge: IntGaugeVec,
    state: Mutex<State>,
}

impl ConsumerLag {
    pub(super) fn new(gauge: IntGaugeVec) -> Self {
        ConsumerLag {
            gauge,
            state: Mutex::new(State::default()),
        }
    }

    /// Partitions of `topic` were assigned, with what the group had committed for them.
    pub fn assigned(&self, topic: &str, committed: impl IntoIterator<Item = (i32, Committed)>) {
        let mut s = self.lock();
        if s.topic != topic {
            self.forget_all(&mut s);
            s.topic = topic.to_string();
        }
        for (partition, committed) in committed {
            s.partitions.insert(
                partition,
                Partition {
                    committed,
                    start: None,
                    end: None,
                },
            );
            self.publish(&s, partition);
        }
    }

    /// Partitions were revoked: their series go, so that they do not linger at their last
    /// value on an instance that no longer consumes them.
    pub fn revoked(&self, partitions: impl IntoIterator<Item = i32>) {
        let mut s = self.lock();
        for partition in partitions {
            if s.partitions.remove(&partition).is_some() {
                let _ = self
                    .gauge
                    .remove_label_values(&[&s.topic, &partition.to_string()]);
            }
        }
    }

    /// The statistics' (partition, log start, last stable offset) of the input topic. Partitions
    /// not assigned (librdkafka keeps reporting revoked ones for a while) are ignored.
    pub fn ends(&self, ends: impl IntoIterator<Item = (i32, i64, i64)>) {
        let mut s = self.lock();
        for (partition, start, end) in ends {
            if let Some(p) = s.partitions.get_mut(&partition) {
                p.start = (start >= 0).then_some(start);
                p.end = (end >= 0).then_some(end);
                self.publish(&s, partition);
            }
        }
    }

    /// A batch's transaction, carrying these next offsets, is committing.
    pub fn committing(&self, next: &BTreeMap<i32, i64>) {
        self.lock().committing = Some(next.clone());
    }

    /// The batch's transaction committed: its offsets are the group's now. Partitions revoked
    /// meanwhile are left out; offsets only move forward within an assignment.
    pub fn committed(&self) {
        let mut s = self.lock();
        let Some(next) = s.committing.take() else {
            return;
        };
        for (partition, offset) in next {
            if let Some(p) = s.partitions.get_mut(&partition) {
                p.committed = match p.committed {
                    Committed::At(before) => Committed::At(before.max(offset)),
                    Committed::Nothing | Committed::Unknown => Committed::At(offset),
                };
                self.publish(&s, partition);
            }
        }
    }

    /// The lag of `partition` as the gauge shows it (`None`: no series).
    pub fn get(&self, partition: i32) -> Option<i64> {
        let s = self.lock();
        s.partitions.get(&partition).and_then(Partition::lag)
    }

    fn publish(&self, s: &State, partition: i32) {
        let labels = [s.topic.as_str(), &partition.to_string()];
        match s.partitions.get(&partition).and_then(Partition::lag) {
            Some(lag) => self.gauge.with_label_values(&labels).set(lag),
            None => {
                let _ = self.gauge.remove_label_values(&labels);
            }
        }
    }

    fn forget_all(&self, s: &mut State) {
        for partition in std::mem::take(&mut s.partitions).into_keys() {
            let _ = self
                .gauge
                .remove_label_values(&[&s.topic, &partition.to_string()]);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it leaves plain numbers behind: still fit to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn lag() -> ConsumerLag {
        ConsumerLag::new(
            IntGaugeVec::new(Opts::new("lag", "lag"), &["topic", "partition"]).unwrap(),
        )
    }

    /// The gauge's series as ("topic/partition", value), sorted.
    fn series(l: &ConsumerLag) -> Vec<(String, i64)> {
        use prometheus::core::Collector;
        let mut out: Vec<(String, i64)> = l.gauge.collect()[0]
            .get_metric()
            .iter()
            .map(|m| {
                let label = |name: &str| {
                    let pair = m.get_label().iter().find(|l| l.name() == name);
                    pair.map(|l| l.value().to_string()).unwrap_or_default()
                };
                let key = format!("{}/{}", label("topic"), label("partition"));
                (key, m.get_gauge().get_value() as i64)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn lag_is_the_end_minus_what_the_group_committed() {
        let l = lag();
        l.assigned(
            "in",
            [
                (0, Committed::At(10)),
                (1, Committed::Nothing),
                (2, Committed::Unknown),
            ],
        );
        // No end yet: no series.
        assert!(series(&l).is_empty());
        l.ends([(0, 0, 15), (1, 3, 8), (2, 0, 9), (7, 0, 100)]);
        assert_eq!(
            series(&l),
            vec![("in/0".into(), 5), ("in/1".into(), 5)],
            "unknown and unassigned partitions have no series"
        );
        // A commit moves it, before the next statistics.
        l.committing(&BTreeMap::from([(0, 15), (2, 9)]));
        assert_eq!(l.get(0), Some(5), "not before the commit settles");
        l.committed();
        assert_eq!(l.get(0), Some(0));
        assert_eq!(l.get(2), Some(0));
        // Overtaking the last end reported: zero, not negative.
        l.committing(&BTreeMap::from([(1, 12)]));
        l.committed();
        assert_eq!(l.get(1), Some(0));
        // Settled twice, or late: offsets do not go back.
        l.committing(&BTreeMap::from([(0, 11)]));
        l.committed();
        l.committed();
        assert_eq!(l.get(0), Some(0));
    }

    #[test]
    fn a_revoked_partition_loses_its_series_and_late_news_of_it_is_ignored() {
        let l = lag();
        l.assigned("in", [(0, Committed::At(1)), (1, Committed::At(1))]);
        l.ends([(0, 0, 4), (1, 0, 6)]);
        l.committing(&BTreeMap::from([(0, 2), (1, 3)]));
        l.revoked([1]);
        assert_eq!(series(&l), vec![("in/0".into(), 3)]);
        // The commit settles after the revocation; the statistics still list partition 1.
        l.committed();
        l.ends([(0, 0, 4), (1, 0, 9)]);
        assert_eq!(series(&l), vec![("in/0".into(), 2)]);
        // Reassigned: a fresh start from what the group has.
        l.assigned("in", [(1, Committed::At(9))]);
        l.ends([(1, 0, 9)]);
        assert_eq!(series(&l), vec![("in/0".into(), 2), ("in/1".into(), 0)]);
    }
}
