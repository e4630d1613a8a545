//! The pure half of applying a batch: from the entries and the read state
//! they were read against (the shard's committed progress and the committed
//! states of the matches they touch) to the writes of one commit, the match
//! states after it and the report the commit will return.
//!
//! No I/O here, so the fold of a batch is tested without Redis;
//! [`crate::apply::Applier`] loads the read state, performs the plan in one
//! fenced commit and keeps the cache. Each entry meets one handler by what
//! it turns out to be: undecodable, skipped, on the wrong shard, folded or
//! rejected by the fold.

use super::{ApplyReport, BatchEntry, StreamId, Undecodable};
use read_model::commit::BatchWrite;
use read_model::score::{ScoredDelta, ScoredLetter};
use rps_core::deadletter::{DeadLetter, Origin};
use rps_core::fold::{DeadlineChange, Transition};
use rps_core::{MatchState, Rejection, ShardId, StreamEvent, Timestamp};
use std::collections::HashMap;

/// What a batch is planned against: the read state as the applier knows it.
#[derive(Debug, Clone, Copy)]
pub struct ReadState<'a> {
    /// Committed `progress[shard]`; entries at or below it are redelivered.
    pub progress: Option<StreamId>,
    /// Entries the shard has committed in the generation so far: the last
    /// sequence number given out ([`ScoredDelta::seq`]).
    pub sequence: u64,
    /// Committed match states; `None` = known to have no valid event yet.
    /// A match not in the map is taken as having none either, so the
    /// caller loads every fresh entry's match first ([`missing_matches`]).
    pub matches: &'a HashMap<i64, Option<MatchState>>,
}

/// The shard a batch belongs to, for the wrong-shard check.
#[derive(Debug, Clone, Copy)]
pub struct Shard {
    pub id: ShardId,
    pub count: u16,
}

/// What one commit is to do.
#[derive(Debug, Default)]
pub struct Plan {
    /// The report of the batch; the commit adds progress, time and conflicts.
    pub report: ApplyReport,
    /// `None` when every entry was redelivered: nothing to commit.
    pub commit: Option<CommitPlan>,
}

/// The writes of the fresh entries and what they are fenced by.
#[derive(Debug)]
pub struct CommitPlan {
    pub write: BatchWrite,
    /// `progress[shard]` the plan was computed against.
    pub expected: Option<StreamId>,
    /// `progress[shard]` after the batch: the id of its last entry.
    pub last_id: StreamId,
    /// The shard's sequence after the batch: one number per fresh entry.
    pub sequence: u64,
    /// The state of every match the batch folded, for the cache once the
    /// commit succeeded (and only then: a failed commit changed nothing).
    pub states: HashMap<i64, Option<MatchState>>,
}

/// How many leading entries are at or below `progress` (redelivered).
pub fn fresh_from(ids: &[StreamId], progress: Option<StreamId>) -> usize {
    ids.iter()
        .position(|id| progress.is_none_or(|p| *id > p))
        .unwrap_or(ids.len())
}

/// The matches of `fresh` whose state is not in `known`, each once, in the
/// order of first appearance: what to load before planning.
pub fn missing_matches(fresh: &[BatchEntry], known: &HashMap<i64, Option<MatchState>>) -> Vec<i64> {
    let mut missing: Vec<i64> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for e in fresh {
        if let Ok(ev) = &e.entry {
            let mid = ev.event.match_id;
            if !known.contains_key(&mid) && seen.insert(mid) {
                missing.push(mid);
            }
        }
    }
    missing
}

/// Plans one batch in stream order (`ids[i]` is `entries[i]`'s id, strictly
/// increasing). `skip(id, event)` answers true for an entry the generation
/// already contains: it is not folded but still advances progress.
pub fn plan<F>(
    entries: &[BatchEntry],
    ids: &[StreamId],
    read: ReadState<'_>,
    shard: Shard,
    skip: &F,
) -> Plan
where
    F: Fn(&str, &StreamEvent) -> bool,
{
    let fresh = fresh_from(ids, read.progress);
    let report = ApplyReport {
        redelivered: fresh,
        progress: read.progress,
        ..Default::default()
    };
    let Some(&last_id) = ids.last().filter(|_| fresh < entries.len()) else {
        return Plan {
            report,
            commit: None,
        };
    };
    let mut planner = Planner {
        shard,
        seq: read.sequence,
        committed: read.matches,
        write: BatchWrite::default(),
        states: HashMap::new(),
        report,
    };
    for (e, id) in entries[fresh..].iter().zip(&ids[fresh..]) {
        planner.entry(e, *id, skip);
    }
    Plan {
        report: planner.report,
        commit: Some(CommitPlan {
            write: planner.write,
            expected: read.progress,
            last_id,
            sequence: planner.seq,
            states: planner.states,
        }),
    }
}

/// The fold of one batch in progress: what it writes, the match states it
/// reached, what it reports.
struct Planner<'a> {
    shard: Shard,
    /// Sequence number of the entry being planned.
    seq: u64,
    committed: &'a HashMap<i64, Option<MatchState>>,
    write: BatchWrite,
    states: HashMap<i64, Option<MatchState>>,
    report: ApplyReport,
}

impl Planner<'_> {
    fn entry<F>(&mut self, e: &BatchEntry, id: StreamId, skip: &F)
    where
        F: Fn(&str, &StreamEvent) -> bool,
    {
        // Every fresh entry takes a number, whatever becomes of it, so the
        // numbers follow from the stream's contents alone.
        self.seq += 1;
        let ev = match &e.entry {
            Ok(ev) => ev,
            Err(bad) => return self.undecodable(&e.id, bad),
        };
        self.write.last_at = Some(ev.event.occurred_at);
        if skip(&e.id, ev) {
            self.report.skipped += 1;
            return;
        }
        let expected = rps_core::shard_of(ev.event.player_a_id, self.shard.count);
        if expected != self.shard.id {
            let r = Rejection::WrongShard {
                expected,
                got: self.shard.id,
            };
            return self.rejected(&e.id, ev, &r);
        }
        let mid = ev.event.match_id;
        let prev = match self.states.get(&mid) {
            Some(s) => s.as_ref(),
            None => self.committed.get(&mid).and_then(|s| s.as_ref()),
        };
        let from = prev.map(|p| p.status);
        match rps_core::fold::apply(prev, &ev.event) {
            Ok(t) => self.folded(id, ev, from, t),
            Err(r) => self.rejected(&e.id, ev, &r),
        }
    }

    fn undecodable(&mut self, id: &str, bad: &Undecodable) {
        self.write.dead.push(ScoredLetter {
            seq: self.seq,
            letter: undecodable_letter(self.shard.id, id, bad),
        });
        self.report.rejected.push((id.to_string(), "undecodable"));
    }

    fn rejected(&mut self, id: &str, ev: &StreamEvent, r: &Rejection) {
        self.report.rejected.push((id.to_string(), r.code()));
        self.write.dead.push(ScoredLetter {
            seq: self.seq,
            letter: rejection_letter(self.shard.id, id, ev, r),
        });
    }

    fn folded(
        &mut self,
        id: StreamId,
        ev: &StreamEvent,
        from: Option<rps_core::MatchStatus>,
        t: Transition,
    ) {
        let w = &mut self.write;
        // Summed in memory: the script sees one net change per state.
        w.lifecycle.moved(from, t.state.status);
        w.scored.extend(t.effects.iter().map(|d| ScoredDelta {
            seq: self.seq,
            delta: *d,
        }));
        let mid = ev.event.match_id;
        if t.deadline != DeadlineChange::Unchanged {
            w.deadlines.insert(mid, t.deadline);
        }
        w.matches.insert(mid, t.state.clone());
        self.states.insert(mid, Some(t.state));
        let r = &mut self.report;
        r.applied += 1;
        r.applied_by_type[ev.event.event_type as usize] += 1;
        r.occurred.push(ev.event.occurred_at);
        r.published
            .push(Timestamp(id.ms.saturating_mul(1000) as i64));
    }
}

fn rejection_letter(shard: ShardId, id: &str, ev: &StreamEvent, r: &Rejection) -> DeadLetter {
    let s = &ev.source;
    DeadLetter {
        origin: Some(Origin::Projector),
        kind: r.code().to_string(),
        reason: format!(
            "match {} version {} ({}): {r}",
            ev.event.match_id, ev.event.version, ev.event.event_type
        ),
        server: s.server.clone(),
        database: s.database.clone(),
        table: s.table.clone(),
        file: s.file.clone(),
        pos: s.pos,
        gtid: s.gtid.clone(),
        shard: Some(shard),
        match_id: Some(ev.event.match_id),
        event_id: ev.event.event_id.hyphenated().to_string(),
        stream_id: id.to_string(),
        payload: payload_json(&ev.to_named_pairs()),
        at: Timestamp::now(),
    }
}

fn undecodable_letter(shard: ShardId, id: &str, bad: &Undecodable) -> DeadLetter {
    let field = |name: &str| {
        bad.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    DeadLetter {
        origin: Some(Origin::Projector),
        kind: "undecodable".to_string(),
        reason: format!("stream entry cannot be decoded: {}", bad.error),
        server: field("srv"),
        database: field("db"),
        table: field("tbl"),
        file: field("file"),
        pos: field("pos").parse().unwrap_or(0),
        gtid: field("gtid"),
        shard: Some(shard),
        match_id: field("mid").parse().ok(),
        event_id: field("eid"),
        stream_id: id.to_string(),
        payload: payload_json(
            &bad.fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect::<Vec<_>>(),
        ),
        at: Timestamp::now(),
    }
}

/// The entry's fields as a flat JSON object, so an operator can read and
/// re-inject it.
fn payload_json<K: AsRef<str>>(pairs: &[(K, String)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(&mut out, k.as_ref());
        out.push(':');
        json_str(&mut out, v);
    }
    out.push('}');
    out
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use rps_core::stream::DecodeError;
    use rps_core::{EventType, Gesture, MatchEvent, MatchStatus, Outcome, SourcePosition};

    const SHARDS: u16 = 4;
    /// Player 8 plays on shard 0 (8 mod 4), player 9 on shard 1.
    const A: i64 = 8;
    const B: i64 = 9;
    const SHARD: Shard = Shard {
        id: 0,
        count: SHARDS,
    };

    fn event(match_id: i64, version: i32, t: EventType, player_a: i64) -> MatchEvent {
        MatchEvent {
            row_id: version as i64,
            ..MatchEvent::new(
                uuid::Uuid::from_u128((match_id as u128) << 32 | version as u128),
                match_id,
                version,
                t,
                "2026Q4".parse().unwrap(),
                (player_a, B),
                Timestamp(1_000_000 * i64::from(version)),
            )
        }
    }

    fn started(match_id: i64) -> MatchEvent {
        MatchEvent {
            deadline_at: Some(Timestamp(31_000_000)),
            ..event(match_id, 1, EventType::Started, A)
        }
    }

    fn moved(match_id: i64, version: i32, a: Option<Gesture>, b: Option<Gesture>) -> MatchEvent {
        MatchEvent {
            gesture_a: a,
            gesture_b: b,
            ..event(match_id, version, EventType::Moved, A)
        }
    }

    /// A's rock beats B's scissors at version 4.
    fn finished(match_id: i64) -> MatchEvent {
        MatchEvent {
            gesture_a: Some(Gesture::Rock),
            gesture_b: Some(Gesture::Scissors),
            outcome: Some(Outcome::Win),
            winner_player_id: Some(A),
            loser_player_id: Some(B),
            ..event(match_id, 4, EventType::Finished, A)
        }
    }

    fn whole_match(match_id: i64) -> Vec<MatchEvent> {
        vec![
            started(match_id),
            moved(match_id, 2, None, Some(Gesture::Scissors)),
            moved(match_id, 3, Some(Gesture::Rock), None),
            finished(match_id),
        ]
    }

    /// Entries with ids `1-0`, `2-0`, … in order.
    fn batch(events: Vec<MatchEvent>) -> (Vec<BatchEntry>, Vec<StreamId>) {
        let entries: Vec<BatchEntry> = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| BatchEntry {
                id: format!("{}-0", i + 1),
                entry: Ok(StreamEvent {
                    shard: 0,
                    event,
                    source: SourcePosition::default(),
                }),
            })
            .collect();
        let ids = entries.iter().map(|e| e.id.parse().unwrap()).collect();
        (entries, ids)
    }

    fn id(s: &str) -> StreamId {
        s.parse().unwrap()
    }

    fn no_skip(_: &str, _: &StreamEvent) -> bool {
        false
    }

    fn plan_fresh(entries: &[BatchEntry], ids: &[StreamId]) -> Plan {
        let none = HashMap::new();
        let read = ReadState {
            progress: None,
            sequence: 0,
            matches: &none,
        };
        plan(entries, ids, read, SHARD, &no_skip)
    }

    #[test]
    fn a_whole_match_is_one_net_change_and_two_scopes_per_player() {
        let (entries, ids) = batch(whole_match(7));
        let p = plan_fresh(&entries, &ids);
        assert_eq!(p.report.applied, 4);
        assert_eq!(p.report.applied_by_type[EventType::Moved as usize], 2);
        assert_eq!(p.report.redelivered, 0);
        assert!(p.report.rejected.is_empty());
        // The entry id `1-0` entered its stream at 1 ms.
        assert_eq!(p.report.published[0], Timestamp(1_000));
        assert_eq!(p.report.occurred.len(), 4);
        let c = p.commit.expect("something to commit");
        assert_eq!(c.last_id, id("4-0"));
        assert_eq!(c.expected, None);
        let w = &c.write;
        assert_eq!(w.lifecycle.get(MatchStatus::Finished), 1);
        assert_eq!(w.lifecycle.get(MatchStatus::InProgress), 0);
        assert_eq!(w.matches[&7].status, MatchStatus::Finished);
        assert_eq!(w.matches[&7].version, 4);
        // One delta per player, numbered by the finishing entry (the 4th).
        assert_eq!(c.sequence, 4);
        assert_eq!(w.scored.len(), 2);
        assert!(w.scored.iter().all(|s| s.seq == 4));
        let of = |p: i64| w.scored.iter().find(|s| s.delta.player_id == p).unwrap();
        assert_eq!(of(A).delta.delta.wins, 1);
        assert_eq!(of(B).delta.delta.losses, 1);
        assert_eq!(w.deadlines[&7], DeadlineChange::Clear);
        assert_eq!(w.last_at, Some(Timestamp(4_000_000)));
        assert!(w.dead.is_empty());
        assert_eq!(
            c.states[&7].as_ref().map(|s| s.status),
            Some(MatchStatus::Finished)
        );
    }

    #[test]
    fn everything_at_or_below_progress_plans_no_commit() {
        let (entries, ids) = batch(whole_match(7));
        let none = HashMap::new();
        let read = ReadState {
            progress: Some(id("4-0")),
            sequence: 0,
            matches: &none,
        };
        let p = plan(&entries, &ids, read, SHARD, &no_skip);
        assert!(p.commit.is_none());
        assert_eq!(p.report.redelivered, 4);
        assert_eq!(p.report.progress, Some(id("4-0")));
        assert_eq!(p.report.applied, 0);
    }

    #[test]
    fn a_redelivered_prefix_folds_from_the_committed_state() {
        let (entries, ids) = batch(whole_match(7));
        // The first two entries are committed; their state is what Redis holds.
        let mut state = None;
        for e in &entries[..2] {
            let ev = &e.entry.as_ref().unwrap().event;
            state = Some(rps_core::fold::apply(state.as_ref(), ev).unwrap().state);
        }
        let committed = HashMap::from([(7, state)]);
        let read = ReadState {
            progress: Some(id("2-0")),
            sequence: 0,
            matches: &committed,
        };
        let p = plan(&entries, &ids, read, SHARD, &no_skip);
        assert_eq!(p.report.redelivered, 2);
        assert_eq!(p.report.applied, 2);
        assert!(p.report.rejected.is_empty());
        let c = p.commit.unwrap();
        assert_eq!(c.expected, Some(id("2-0")));
        // In progress before the batch, finished after: one move.
        assert_eq!(c.write.lifecycle.get(MatchStatus::InProgress), -1);
        assert_eq!(c.write.lifecycle.get(MatchStatus::Finished), 1);
    }

    #[test]
    fn a_match_the_read_state_lacks_is_unknown() {
        let (entries, ids) = batch(vec![finished(7)]);
        let p = plan_fresh(&entries, &ids);
        assert_eq!(
            p.report.rejected,
            vec![("1-0".to_string(), "unknown_match")]
        );
        let c = p.commit.unwrap();
        assert_eq!(c.write.dead.len(), 1);
        assert_eq!(c.write.dead[0].letter.kind, "unknown_match");
        assert_eq!(c.write.dead[0].letter.stream_id, "1-0");
        assert_eq!(c.write.dead[0].letter.match_id, Some(7));
        assert!(c.write.matches.is_empty());
        // A rejected batch still moves progress past its entries.
        assert_eq!(c.last_id, id("1-0"));
    }

    #[test]
    fn an_event_of_another_shard_is_a_dead_letter() {
        let (entries, ids) = batch(vec![MatchEvent {
            deadline_at: Some(Timestamp(31_000_000)),
            ..event(7, 1, EventType::Started, B)
        }]);
        let p = plan_fresh(&entries, &ids);
        assert_eq!(p.report.rejected, vec![("1-0".to_string(), "wrong_shard")]);
        assert_eq!(p.report.applied, 0);
        let c = p.commit.unwrap();
        assert_eq!(c.write.dead[0].letter.shard, Some(0));
        assert!(c.states.is_empty());
    }

    #[test]
    fn skipped_entries_advance_progress_unfolded() {
        let (entries, ids) = batch(whole_match(7));
        let none = HashMap::new();
        let read = ReadState {
            progress: None,
            sequence: 0,
            matches: &none,
        };
        let p = plan(&entries, &ids, read, SHARD, &|id, _| id == "1-0");
        assert_eq!(p.report.skipped, 1);
        // Without its start the rest of the match is unknown.
        assert_eq!(p.report.rejected.len(), 3);
        let c = p.commit.unwrap();
        assert_eq!(c.last_id, id("4-0"));
        assert_eq!(c.write.last_at, Some(Timestamp(4_000_000)));
    }

    #[test]
    fn an_undecodable_entry_keeps_its_fields_in_the_dead_letter() {
        let (mut entries, ids) = batch(vec![started(7), started(8)]);
        entries[0].entry = Err(Undecodable {
            error: DecodeError::Missing("mid"),
            fields: vec![
                ("srv".into(), "a".into()),
                ("pos".into(), "120".into()),
                ("mid".into(), "7".into()),
            ],
        });
        let p = plan_fresh(&entries, &ids);
        assert_eq!(p.report.rejected, vec![("1-0".to_string(), "undecodable")]);
        assert_eq!(p.report.applied, 1);
        let c = p.commit.unwrap();
        let dl = &c.write.dead[0].letter;
        assert_eq!(
            (dl.server.as_str(), dl.pos, dl.match_id),
            ("a", 120, Some(7))
        );
        assert_eq!(dl.payload, r#"{"srv":"a","pos":"120","mid":"7"}"#);
        assert_eq!(c.write.lifecycle.get(MatchStatus::InProgress), 1);
    }

    #[test]
    fn only_fresh_matches_the_read_state_lacks_are_loaded() {
        let (entries, _) = batch(vec![started(7), started(8), moved(7, 2, None, None)]);
        let known = HashMap::from([(8, None)]);
        assert_eq!(missing_matches(&entries, &known), vec![7]);
        assert_eq!(fresh_from(&[id("1-0"), id("2-0")], Some(id("1-5"))), 1);
        assert_eq!(fresh_from(&[id("1-0")], Some(id("1-0"))), 1);
    }

    #[test]
    fn payload_is_escaped_json() {
        let p = payload_json(&[("a", "x\"y\\".to_string()), ("b", "\n".to_string())]);
        assert_eq!(p, r#"{"a":"x\"y\\","b":"\u000a"}"#);
    }
}
