//! Compare the fold of history with a live generation, and repair it.
//!
//! Every key the fold says must exist is read back and compared field by
//! field (hash fields, sorted-set members and scores, set members); then the
//! generation is scanned for keys the fold says must not exist. Match
//! states are compared range by range while the fold reads on (MGET per
//! thousand matches) and then forgotten, keeping only their ids: memory
//! follows players, plus 8 bytes a match. The result
//! is a list of differences (key, field, expected, actual). Repair rewrites
//! each differing key whole (DEL, then the expected value).
//!
//! The comparison is exact only when the pipeline is quiet (nothing between
//! the snapshot and the live generation's progress): see docs/operations.md.
//! [`VerifyReport::pipeline_moved`] says when it was not.

use crate::fold::SpilledMatches;
use crate::model::{match_fields, CompactMatch, Expected, Model};
use crate::redis_io::{self, run_units, IN_FLIGHT};
use crate::HistoryError;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, SetsInterface, SortedSetsInterface};
use futures::{stream, Stream, StreamExt, TryStreamExt};
use read_model::bulk::Write;
use read_model::ReadModelKeys;
use read_model::{GenerationKeys, KeyKind, KeyRef};
use rps_core::redis_client::ClientPolicy;
use rps_core::{MatchState, ShardId};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use tokio::sync::mpsc;

/// Differences kept in full (the rest are counted).
pub const MAX_REPORTED: usize = 100_000;

/// One difference between the fold and Redis. `None` means absent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    pub key: String,
    pub kind: &'static str,
    /// Hash field, sorted-set or set member, or `*` for the key as a whole.
    pub field: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
}

/// What verify found.
#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub generation: u64,
    pub keys_checked: u64,
    pub total_differences: u64,
    pub differences: Vec<Difference>,
    /// Keys that differ, for repair.
    #[serde(skip)]
    pub differing: HashSet<KeyRef>,
    /// The live generation's progress changed while verifying: differences
    /// may be events that arrived meanwhile; run again when quiet.
    pub pipeline_moved: bool,
    pub repaired_keys: u64,
}

impl VerifyReport {
    fn add(&mut self, key_ref: KeyRef, d: Difference) {
        metrics::counter!(crate::metrics::VERIFY_DIFFERENCES_TOTAL, "kind" => d.kind).increment(1);
        self.total_differences += 1;
        self.differing.insert(key_ref);
        if self.differences.len() < MAX_REPORTED {
            self.differences.push(d);
        }
    }
}

/// Match keys read per MGET.
const MATCHES_PER_READ: usize = 1_000;
/// MGETs in flight while comparing match states.
const READS_IN_FLIGHT: usize = 8;

/// Every match of the fold as verify keeps it once its state is compared:
/// the id (for the scan of keys the fold does not have) and its open
/// deadline, 8 bytes a match instead of the whole state; for a repair, the
/// expected state of the matches found different.
#[derive(Debug, Default)]
pub struct MatchIndex {
    ids: Vec<i64>,
    deadlines: Vec<(String, i64)>,
    keep_differing: bool,
    differing: HashMap<i64, CompactMatch>,
}

impl MatchIndex {
    fn finish(&mut self) {
        self.ids.sort_unstable();
        self.deadlines.sort();
    }

    fn contains(&self, match_id: i64) -> bool {
        self.ids.binary_search(&match_id).is_ok()
    }
}

/// What one key must hold according to the fold (`None`: must not exist).
/// The model holds the players; match states come from the index, which
/// keeps those that differed (the only ones repair rewrites).
pub fn expected_of(
    g: &GenerationKeys,
    model: &Model,
    index: &MatchIndex,
    key: &KeyRef,
) -> Option<Expected> {
    match key {
        KeyRef::Counters(part, season) => {
            let fields: Vec<(String, String)> = model
                .counted_players()
                .filter(|((id, s), _)| s == season && g.partition_of(*id) == *part)
                .flat_map(|((id, _), st)| read_model::bulk::player_fields(*id, st))
                .collect();
            (!fields.is_empty()).then_some(Expected::Hash(fields))
        }
        KeyRef::Match(_, id) => index
            .differing
            .get(id)
            .map(|m| Expected::Match(m.state(*id))),
        KeyRef::Board(part, season) => {
            let members: Vec<(String, i64)> = model
                .counted_players()
                .filter(|((id, s), _)| s == season && g.partition_of(*id) == *part)
                .map(|((id, _), st)| (read_model::board_member(*id), st.board_score()))
                .collect();
            (!members.is_empty()).then_some(Expected::ZSet(members))
        }
        KeyRef::Seasons(part) => {
            let s: BTreeSet<String> = model
                .scored_seasons()
                .filter(|(id, _)| g.partition_of(*id) == *part)
                .map(|(_, s)| s.to_string())
                .collect();
            (!s.is_empty()).then_some(Expected::Set(s))
        }
        KeyRef::Deadlines(shard) => {
            let mine: Vec<(String, i64)> = index
                .deadlines
                .iter()
                .filter(|(m, _)| {
                    rps_core::keys::parse_deadline_member(m).is_some_and(|(s, _)| s == *shard)
                })
                .cloned()
                .collect();
            (!mine.is_empty()).then_some(Expected::ZSet(mine))
        }
        KeyRef::Lifecycle(shard) => {
            let fields: Vec<(String, String)> = model
                .lifecycle
                .get(shard)
                .cloned()
                .unwrap_or_default()
                .nonzero()
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect();
            (!fields.is_empty()).then_some(Expected::Hash(fields))
        }
    }
}

fn key_name(g: &GenerationKeys, key: &KeyRef) -> (String, KeyKind) {
    g.name_of(key)
}

fn score_text(s: f64) -> String {
    if s.fract() == 0.0 && s.abs() < 9.0e15 {
        format!("{}", s as i64)
    } else {
        s.to_string()
    }
}

/// Differences of one key, field by field.
struct KeyDiff<'a> {
    name: &'a str,
    kind: KeyKind,
    out: Vec<Difference>,
}

impl<'a> KeyDiff<'a> {
    fn new(name: &'a str, kind: KeyKind) -> Self {
        KeyDiff {
            name,
            kind,
            out: Vec::new(),
        }
    }

    fn push(&mut self, field: &str, expected: Option<String>, actual: Option<String>) {
        self.out.push(Difference {
            key: self.name.to_string(),
            kind: self.kind.as_str(),
            field: field.to_string(),
            expected,
            actual,
        });
    }

    fn pairwise(&mut self, e: BTreeMap<String, String>, a: BTreeMap<String, String>) {
        for (f, ev) in &e {
            match a.get(f) {
                Some(av) if av == ev => {}
                other => self.push(f, Some(ev.clone()), other.cloned()),
            }
        }
        for (f, av) in &a {
            if !e.contains_key(f) {
                self.push(f, None, Some(av.clone()));
            }
        }
    }

    /// A match key against its stored value (`None`: absent).
    fn match_state(mut self, expected: &MatchState, actual: Option<&str>) -> Vec<Difference> {
        match actual.map(|v| (v, MatchState::from_value(v))) {
            None => self.push("*", Some(expected.to_value()), None),
            Some((raw, None)) => self.push("*", Some(expected.to_value()), Some(raw.into())),
            Some((_, Some(a))) => self.pairwise(
                match_fields(expected).into_iter().collect(),
                match_fields(&a).into_iter().collect(),
            ),
        }
        self.out
    }
}

/// Reads a key as the type the model expects and lists the differences.
async fn compare_key(
    client: &Client,
    g: &GenerationKeys,
    key: KeyRef,
    expected: Option<Expected>,
) -> Result<Vec<Difference>, HistoryError> {
    let (name, kind) = key_name(g, &key);
    let mut diff = KeyDiff::new(&name, kind);
    match expected {
        None => {
            let exists: i64 = client.exists(name.as_str()).await?;
            if exists > 0 {
                diff.push("*", None, Some("(key exists)".into()));
            }
        }
        Some(Expected::Hash(fields)) => {
            let actual: HashMap<String, String> = client.hgetall(name.as_str()).await?;
            let mut e: BTreeMap<String, String> = fields.into_iter().collect();
            let mut a: BTreeMap<String, String> = actual.into_iter().collect();
            if matches!(kind, KeyKind::Counters | KeyKind::Lifecycle) {
                // Counters are incremented field by field live: a field never
                // touched is absent, which means 0 (and so does a "0" left
                // behind by increments that cancelled out).
                e.retain(|_, v| v != "0");
                a.retain(|_, v| v != "0");
            }
            diff.pairwise(e, a);
        }
        Some(Expected::Match(m)) => {
            let actual: Option<String> = client.get(name.as_str()).await?;
            return Ok(diff.match_state(&m, actual.as_deref()));
        }
        Some(Expected::ZSet(members)) => {
            let actual: Vec<(String, f64)> = client
                .zrange(name.as_str(), 0, -1, None, false, None, true)
                .await?;
            diff.pairwise(
                members
                    .into_iter()
                    .map(|(m, s)| (m, s.to_string()))
                    .collect(),
                actual
                    .into_iter()
                    .map(|(m, s)| (m, score_text(s)))
                    .collect(),
            );
        }
        Some(Expected::Set(members)) => {
            let actual: Vec<String> = client.smembers(name.as_str()).await?;
            let mark = |s: String| (s, "member".to_string());
            diff.pairwise(
                members.into_iter().map(mark).collect(),
                actual.into_iter().map(mark).collect(),
            );
        }
    }
    Ok(diff.out)
}

/// Reads the stored values of a run of matches: one MGET per shard the
/// run touches (a shard's matches share its slot).
async fn read_states(
    client: &Client,
    g: &GenerationKeys,
    shard_count: u16,
    chunk: Vec<(i64, CompactMatch)>,
) -> Result<(Vec<(i64, CompactMatch)>, Vec<Option<String>>), HistoryError> {
    let mut by_shard: BTreeMap<ShardId, Vec<usize>> = BTreeMap::new();
    for (i, (_, m)) in chunk.iter().enumerate() {
        by_shard
            .entry(rps_core::shard_of(m.player_a, shard_count))
            .or_default()
            .push(i);
    }
    let reads = by_shard.iter().map(|(shard, at)| {
        let names: Vec<String> = at
            .iter()
            .map(|i| g.match_state(*shard, chunk[*i].0))
            .collect();
        client.mget::<Vec<Option<String>>, _>(names)
    });
    let mut values = vec![None; chunk.len()];
    for ((_, at), read) in by_shard.iter().zip(futures::future::join_all(reads).await) {
        for (i, v) in at.iter().zip(read?) {
            values[*i] = v;
        }
    }
    Ok((chunk, values))
}

/// Compares match states as they come, recording each match in the index.
async fn compare_matches<S>(
    client: &Client,
    g: &GenerationKeys,
    shard_count: u16,
    chunks: S,
    index: &mut MatchIndex,
    report: &mut VerifyReport,
) -> Result<(), HistoryError>
where
    S: Stream<Item = Vec<(i64, CompactMatch)>>,
{
    let mut reads = std::pin::pin!(chunks
        .map(|chunk| read_states(client, g, shard_count, chunk))
        .buffered(READS_IN_FLIGHT));
    while let Some((chunk, values)) = reads.try_next().await? {
        for ((id, m), actual) in chunk.into_iter().zip(values) {
            index.ids.push(id);
            index.deadlines.extend(m.deadline_entry(id, shard_count));
            report.keys_checked += 1;
            let expected = m.state(id);
            let shard = rps_core::shard_of(m.player_a, shard_count);
            let name = g.match_state(shard, id);
            let diffs =
                KeyDiff::new(&name, KeyKind::Match).match_state(&expected, actual.as_deref());
            if !diffs.is_empty() {
                for d in diffs {
                    report.add(KeyRef::Match(shard, id), d);
                }
                if index.keep_differing {
                    index.differing.insert(id, m);
                }
            }
        }
    }
    Ok(())
}

/// Compares each range's matches as a spilling fold hands them out, so
/// verify's memory follows players, not matches. Returns the index of every
/// match seen (with the expected state of those that differ if
/// `for_repair`) and the differences found.
pub async fn compare_spilled(
    client: &Client,
    g: &GenerationKeys,
    shard_count: u16,
    spilled: mpsc::Receiver<SpilledMatches>,
    for_repair: bool,
) -> Result<(MatchIndex, VerifyReport), HistoryError> {
    let mut index = MatchIndex {
        keep_differing: for_repair,
        ..Default::default()
    };
    let mut report = VerifyReport {
        generation: g.generation,
        ..Default::default()
    };
    let ranges = stream::unfold(spilled, |mut rx| async move {
        rx.recv().await.map(|range| (range, rx))
    });
    let chunks = ranges.flat_map(|range| {
        stream::iter(
            range
                .chunks(MATCHES_PER_READ)
                .map(<[_]>::to_vec)
                .collect::<Vec<_>>(),
        )
    });
    compare_matches(client, g, shard_count, chunks, &mut index, &mut report).await?;
    index.finish();
    Ok((index, report))
}

/// Compares everything but the match states (already compared into
/// `report`): players, boards, seasons, deadlines, matches per lifecycle
/// state, and keys the fold does not have.
pub async fn compare_rest(
    client: &Client,
    g: &GenerationKeys,
    model: &Model,
    index: &MatchIndex,
    report: &mut VerifyReport,
) -> Result<(), HistoryError> {
    // Per-key work is small, so the closures compute each expected value
    // only when its turn comes.
    let mut keys: Vec<KeyRef> = Vec::new();
    for shard in 0..model.shard_count {
        keys.push(KeyRef::Deadlines(shard));
        keys.push(KeyRef::Lifecycle(shard));
    }
    keys.extend(g.all_partitions().map(KeyRef::Seasons));
    for scope in model.boards().into_keys() {
        for p in g.all_partitions() {
            keys.push(KeyRef::Board(p, scope));
            keys.push(KeyRef::Counters(p, scope));
        }
    }
    let mut results = stream::iter(keys)
        .map(|k| async move {
            let e = expected_of(g, model, index, &k);
            compare_key(client, g, k, e).await.map(|d| (k, d))
        })
        .buffer_unordered(IN_FLIGHT);
    while let Some((k, diffs)) = results.try_next().await? {
        report.keys_checked += 1;
        for d in diffs {
            report.add(k, d);
        }
    }
    drop(results);
    // Keys present in Redis that the fold does not have (every master's,
    // on a cluster).
    let mut scan = rps_core::redis_client::KeyScan::new(client, &g.pattern()).await?;
    while let Some(names) = scan.next_page(client).await? {
        for name in names {
            let Some((kind, key)) = g.classify(&name) else {
                continue;
            };
            let present_in_fold = match key {
                KeyRef::Match(_, id) => index.contains(id),
                // Singletons were compared above whatever their state.
                KeyRef::Board(..)
                | KeyRef::Counters(..)
                | KeyRef::Seasons(_)
                | KeyRef::Deadlines(_)
                | KeyRef::Lifecycle(_) => {
                    expected_of(g, model, index, &key).is_some()
                        || matches!(
                            key,
                            KeyRef::Seasons(_) | KeyRef::Deadlines(_) | KeyRef::Lifecycle(_)
                        )
                }
            };
            if !present_in_fold {
                report.keys_checked += 1;
                report.add(
                    key,
                    Difference {
                        key: name,
                        kind: kind.as_str(),
                        field: "*".into(),
                        expected: None,
                        actual: Some("(key exists)".into()),
                    },
                );
            }
        }
    }
    Ok(())
}

/// Rewrites every differing key of the report to what the fold says.
pub async fn repair(
    client: &Client,
    g: &GenerationKeys,
    model: &Model,
    index: &MatchIndex,
    report: &mut VerifyReport,
) -> Result<u64, HistoryError> {
    let units = report.differing.iter().map(|k| {
        let (name, _) = key_name(g, k);
        let mut unit = vec![Write::Del(name.clone())];
        match expected_of(g, model, index, k) {
            None => {}
            Some(Expected::Hash(f)) => unit.push(Write::Hset(name, f)),
            Some(Expected::Match(m)) => unit.push(Write::Set(name, m.to_value())),
            Some(Expected::ZSet(m)) => unit.push(Write::Zadd(
                name,
                m.into_iter().map(|(m, s)| (s as f64, m)).collect(),
            )),
            Some(Expected::Set(s)) => unit.push(Write::Sadd(name, s.into_iter().collect())),
        }
        unit
    });
    run_units(client, units.collect::<Vec<_>>()).await?;
    report.repaired_keys = report.differing.len() as u64;
    Ok(report.repaired_keys)
}

/// Options of [`run`].
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub repair: bool,
    /// Show a progress bar or log lines.
    pub show_progress: bool,
}

/// `rpsctl verify`: fold history, compare with the active generation,
/// optionally repair.
pub async fn run(
    config: std::sync::Arc<rps_core::Config>,
    opts: VerifyOptions,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<VerifyReport, HistoryError> {
    let store = rps_event_store::EventStore::new(config.clone())?;
    let client = ClientPolicy::patient().connect(&config.redis).await?;
    let keys = config.keys();
    let generation = redis_io::active_generation(&client, &keys).await?;
    let g = keys.generation_keys(generation);
    let before = redis_io::progress(&client, &g, config.shard_count).await?;
    let progress = crate::progress::Progress::start("verify: folding history", !opts.show_progress);
    // Match states are compared range by range while the fold goes on; the
    // fold keeps only the players.
    let (tx, rx) = mpsc::channel::<SpilledMatches>(4);
    let fold_options = crate::FoldOptions::default();
    let fold = crate::fold_history_spilling(&store, &fold_options, &progress, &shutdown, tx);
    let matches = compare_spilled(&client, &g, config.shard_count, rx, opts.repair);
    let (out, matches) = tokio::join!(fold, matches);
    progress.finish();
    // A failed comparison ends the fold with `Cancelled`: report its cause.
    let (index, mut report) = matches?;
    let out = out?;
    compare_rest(&client, &g, &out.model, &index, &mut report).await?;
    let after = redis_io::progress(&client, &g, config.shard_count).await?;
    report.pipeline_moved = before != after;
    if opts.repair && report.total_differences > 0 {
        let n = repair(&client, &g, &out.model, &index, &mut report).await?;
        tracing::info!(keys = n, generation, "repaired");
    }
    store.disconnect().await;
    Ok(report)
}
