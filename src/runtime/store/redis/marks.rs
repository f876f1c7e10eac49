//! Where the watermarks live. On one node: one hash per topic, one field per partition (and
//! `<partition>:committed`), written in the batch's script. On a Redis Cluster a batch's write is
//! one script per primary, and a primary that loses writes (a failover to a lagging replica, a
//! restore) must show it as one node would: so each topic has [`COPIES`] hashes, their hash tags
//! chosen to spread them over the slot space, every batch moves all of them (each in its
//! primary's script, with that primary's conversations), and a read takes the least of them. A
//! primary serving at least `16384 / COPIES` consecutive slots holds at least one copy, whose
//! offsets fall back with its lost conversations; resharding moves copies with their slots.

use std::sync::OnceLock;

use super::conn::{slot, Connection};
use super::RedisStore;
use crate::runtime::store::Watermark;

/// Watermark copies per topic on a Cluster: one per 128 slots.
const COPIES: usize = 128;

impl RedisStore {
    /// The keys holding `topic`'s watermarks.
    pub(super) fn marks_keys(&self, topic: &str) -> Vec<String> {
        let single = format!("{}:marks:{topic}", self.prefix);
        match self.conn {
            Connection::Cluster { .. } => tags()
                .iter()
                .map(|tag| format!("{single}:{{{tag}}}"))
                .collect(),
            _ => vec![single],
        }
    }
}

/// One hash tag per run of 16384 / COPIES slots: the first decimal number whose slot falls in it.
fn tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let width = 16384 / COPIES;
        let mut tags: Vec<Option<String>> = vec![None; COPIES];
        let mut missing = COPIES;
        let mut n = 0u64;
        while missing > 0 {
            let tag = n.to_string();
            let run = usize::from(slot(&format!("{{{tag}}}"))) / width;
            if tags[run].is_none() {
                tags[run] = Some(tag);
                missing -= 1;
            }
            n += 1;
        }
        tags.into_iter().flatten().collect()
    })
}

/// The watermarks of `partitions` from every copy's HMGET (next, committed per partition): the
/// least of each offset, a copy without the partition counting as -1, or `None` where no copy
/// has it.
pub(super) fn least(partitions: usize, copies: &[Vec<Option<i64>>]) -> Vec<Option<Watermark>> {
    (0..partitions)
        .map(|p| {
            // Per copy, the partition's (next, committed) fields.
            let field = |c: &Vec<Option<i64>>, i: usize| c.get(2 * p + i).copied().flatten();
            if copies.iter().all(|c| field(c, 0).is_none()) {
                return None;
            }
            let least = |i: usize| {
                copies
                    .iter()
                    .map(|c| field(c, i).unwrap_or(-1))
                    .min()
                    .unwrap_or(-1)
            };
            Some(Watermark {
                next: least(0),
                committed: least(1),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copies_cover_every_run_of_slots() {
        let width = 16384 / COPIES;
        let runs: std::collections::BTreeSet<usize> = tags()
            .iter()
            .map(|t| usize::from(slot(&format!("x:{{{t}}}"))) / width)
            .collect();
        assert_eq!(runs.len(), COPIES);
    }

    #[test]
    fn the_least_copy_speaks_for_the_store() {
        let copies = vec![
            vec![Some(10), Some(8), None, None],
            vec![Some(7), Some(8), None, None],
        ];
        let w = least(2, &copies);
        assert_eq!(
            w[0],
            Some(Watermark {
                next: 7,
                committed: 8
            })
        );
        assert_eq!(w[1], None);
        // A copy that lost the partition altogether counts as having applied nothing.
        let copies = vec![vec![Some(10), Some(8)], vec![None, None]];
        assert_eq!(
            least(1, &copies)[0],
            Some(Watermark {
                next: -1,
                committed: -1
            })
        );
    }
}
