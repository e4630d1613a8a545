//! Matches per lifecycle state: how many matches of a generation are open,
//! finished, timed out or voided, kept as one small hash
//! (`{prefix}:g<g>:lifecycle`, fields [`MatchStatus::as_str`]).
//!
//! Each count is the number of match keys whose state has that status, so
//! the fold of history and the live projector agree on it exactly: the
//! projector adds one batch's net moves (one `HINCRBY` per state that
//! changed in the batch), replay and the bootstrap write the fold's counts
//! whole, and `rpsctl verify` compares them like any other read model. An
//! absent field is 0; a field the projector brought back to 0 stays as
//! `"0"`, which means the same.

use rps_core::fold::MatchStatus;

/// The states in field order.
pub const STATES: [MatchStatus; 4] = [
    MatchStatus::InProgress,
    MatchStatus::Finished,
    MatchStatus::TimedOut,
    MatchStatus::Voided,
];

fn index(s: MatchStatus) -> usize {
    match s {
        MatchStatus::InProgress => 0,
        MatchStatus::Finished => 1,
        MatchStatus::TimedOut => 2,
        MatchStatus::Voided => 3,
    }
}

/// Matches per state, or a batch's net change of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatchCounts([i64; 4]);

impl MatchCounts {
    /// A match went from `from` (`None`: it had no valid event yet) to `to`.
    pub fn moved(&mut self, from: Option<MatchStatus>, to: MatchStatus) {
        if from == Some(to) {
            return;
        }
        if let Some(f) = from {
            self.0[index(f)] -= 1;
        }
        self.0[index(to)] += 1;
    }

    pub fn get(&self, s: MatchStatus) -> i64 {
        self.0[index(s)]
    }

    pub fn set(&mut self, s: MatchStatus, n: i64) {
        self.0[index(s)] = n;
    }

    pub fn add(&mut self, other: &MatchCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// Every match, whatever its state.
    pub fn total(&self) -> i64 {
        self.0.iter().sum()
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 4]
    }

    /// `(field, value)` of every state, in [`STATES`] order.
    pub fn fields(&self) -> [(&'static str, i64); 4] {
        STATES.map(|s| (s.as_str(), self.get(s)))
    }

    /// The fields that are not 0 (what is stored; absent = 0).
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, i64)> {
        self.fields().into_iter().filter(|(_, v)| *v != 0)
    }

    /// From stored fields; unknown fields and unreadable values are ignored.
    pub fn from_fields<'a, I>(fields: I) -> MatchCounts
    where
        I: IntoIterator<Item = (&'a str, i64)>,
    {
        let mut c = MatchCounts::default();
        for (f, v) in fields {
            if let Some(s) = MatchStatus::parse(f) {
                c.set(s, v);
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_net_out_and_fields_round_trip() {
        let mut batch = MatchCounts::default();
        batch.moved(None, MatchStatus::InProgress);
        batch.moved(Some(MatchStatus::InProgress), MatchStatus::InProgress);
        batch.moved(Some(MatchStatus::InProgress), MatchStatus::Finished);
        batch.moved(Some(MatchStatus::Finished), MatchStatus::Voided);
        assert_eq!(batch.get(MatchStatus::InProgress), 0);
        assert_eq!(batch.get(MatchStatus::Finished), 0);
        assert_eq!(batch.get(MatchStatus::Voided), 1);
        assert_eq!(batch.nonzero().collect::<Vec<_>>(), [("voided", 1)]);
        assert_eq!(batch.total(), 1);
        let back = MatchCounts::from_fields(batch.fields().into_iter().chain([("other", 9)]));
        assert_eq!(back, batch);
        let mut sum = MatchCounts::default();
        sum.add(&batch);
        sum.add(&batch);
        assert_eq!(sum.get(MatchStatus::Voided), 2);
        assert!(MatchCounts::default().is_zero());
    }
}
