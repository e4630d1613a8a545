//! Compare the fold of history with a live generation, and repair it.
//!
//! Every key the fold says must exist is read back and compared field by
//! field (hash fields, sorted-set members and scores, set members); then the
//! generation is scanned for keys the fold says must not exist. The result
//! is a list of differences (key, field, expected, actual). Repair rewrites
//! each differing key whole (DEL, then the expected value).
//!
//! The comparison is exact only when the pipeline is quiet (nothing between
//! the snapshot and the live generation's progress): see docs/operations.md.
//! [`VerifyReport::pipeline_moved`] says when it was not.

use crate::model::{
    classify, match_fields, player_hash, player_key, Expected, KeyKind, KeyRef, Model,
};
use crate::redis_io::{self, run_units, Cmd, IN_FLIGHT};
use crate::HistoryError;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, SetsInterface, SortedSetsInterface};
use futures::{stream, StreamExt, TryStreamExt};
use rps_core::keys::GenerationKeys;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

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

/// What one key must hold according to the model (`None`: must not exist).
pub fn expected_of(model: &Model, key: &KeyRef) -> Option<Expected> {
    match key {
        KeyRef::Player(pk) => model
            .players
            .get(pk)
            .filter(|s| s.matches > 0)
            .map(|s| Expected::Hash(player_hash(s))),
        KeyRef::Match(id) => model.match_state(*id).map(Expected::Match),
        KeyRef::Board(season) => {
            let members: Vec<(String, i64)> = model
                .counted_players()
                .filter(|((_, s), _)| s == season)
                .map(|((id, _), st)| (rps_core::keys::board_member(*id), st.board_score()))
                .collect();
            (!members.is_empty()).then_some(Expected::ZSet(members))
        }
        KeyRef::Seasons => {
            let s: BTreeSet<String> = model.seasons().iter().map(|s| s.to_string()).collect();
            (!s.is_empty()).then_some(Expected::Set(s))
        }
        KeyRef::Deadlines => {
            let d = model.deadlines();
            (!d.is_empty()).then_some(Expected::ZSet(d))
        }
    }
}

fn key_name(g: &GenerationKeys, key: &KeyRef) -> (String, KeyKind) {
    match key {
        KeyRef::Player(pk) => (
            player_key(g, pk),
            if pk.1.is_some() {
                KeyKind::PlayerSeason
            } else {
                KeyKind::Player
            },
        ),
        KeyRef::Match(id) => (g.match_state(*id), KeyKind::Match),
        KeyRef::Board(s) => (g.board(*s), KeyKind::Board),
        KeyRef::Seasons => (g.seasons(), KeyKind::Seasons),
        KeyRef::Deadlines => (g.deadlines(), KeyKind::Deadlines),
    }
}

fn score_text(s: f64) -> String {
    if s.fract() == 0.0 && s.abs() < 9.0e15 {
        format!("{}", s as i64)
    } else {
        s.to_string()
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
    let kind_s = kind.as_str();
    let diff = |field: &str, e: Option<String>, a: Option<String>| Difference {
        key: name.clone(),
        kind: kind_s,
        field: field.to_string(),
        expected: e,
        actual: a,
    };
    let mut out = Vec::new();
    let pairwise =
        |out: &mut Vec<Difference>, e: BTreeMap<String, String>, a: BTreeMap<String, String>| {
            for (f, ev) in &e {
                match a.get(f) {
                    Some(av) if av == ev => {}
                    other => out.push(diff(f, Some(ev.clone()), other.cloned())),
                }
            }
            for (f, av) in &a {
                if !e.contains_key(f) {
                    out.push(diff(f, None, Some(av.clone())));
                }
            }
        };
    match expected {
        None => {
            let exists: i64 = client.exists(name.as_str()).await?;
            if exists > 0 {
                out.push(diff("*", None, Some("(key exists)".into())));
            }
        }
        Some(Expected::Hash(fields)) => {
            let actual: HashMap<String, String> = client.hgetall(name.as_str()).await?;
            let mut e: BTreeMap<String, String> = fields.into_iter().collect();
            let mut a: BTreeMap<String, String> = actual.into_iter().collect();
            if matches!(kind, KeyKind::Player | KeyKind::PlayerSeason) {
                // Counters are incremented field by field live: a field never
                // touched is absent, which means 0.
                e.retain(|_, v| v != "0");
                a.retain(|_, v| v != "0");
            }
            pairwise(&mut out, e, a);
        }
        Some(Expected::Match(m)) => {
            let actual: Option<String> = client.get(name.as_str()).await?;
            match actual
                .as_deref()
                .map(|v| (v, rps_core::MatchState::from_value(v)))
            {
                None => out.push(diff("*", Some(m.to_value()), None)),
                Some((raw, None)) => out.push(diff("*", Some(m.to_value()), Some(raw.into()))),
                Some((_, Some(a))) => pairwise(
                    &mut out,
                    match_fields(&m).into_iter().collect(),
                    match_fields(&a).into_iter().collect(),
                ),
            }
        }
        Some(Expected::ZSet(members)) => {
            let actual: Vec<(String, f64)> = client
                .zrange(name.as_str(), 0, -1, None, false, None, true)
                .await?;
            pairwise(
                &mut out,
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
            pairwise(
                &mut out,
                members.into_iter().map(mark).collect(),
                actual.into_iter().map(mark).collect(),
            );
        }
    }
    Ok(out)
}

/// Compares the model with generation `g`.
pub async fn compare(
    client: &Client,
    g: &GenerationKeys,
    model: &Model,
) -> Result<VerifyReport, HistoryError> {
    let mut report = VerifyReport {
        generation: g.generation,
        ..Default::default()
    };
    // Keys the model says exist; per-key work is small, so the closures
    // compute each expected value only when its turn comes.
    let mut singles: Vec<KeyRef> = vec![KeyRef::Seasons, KeyRef::Deadlines];
    singles.extend(model.boards().into_keys().map(KeyRef::Board));
    let keys = model
        .matches
        .keys()
        .map(|id| KeyRef::Match(*id))
        .chain(model.counted_players().map(|(k, _)| KeyRef::Player(*k)))
        .chain(singles);
    let mut results = stream::iter(keys)
        .map(|k| async move {
            let e = expected_of(model, &k);
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
    // Keys present in Redis that the model does not have.
    let pattern = format!("{}:*", g.base());
    let mut cursor = "0".to_string();
    loop {
        let (next, names): (String, Vec<String>) = client
            .scan_page(cursor, pattern.clone(), Some(1000), None)
            .await?;
        for name in names {
            let Some((kind, key)) = classify(g, &name) else {
                continue;
            };
            let present_in_model = match key {
                KeyRef::Player(pk) => model.players.get(&pk).is_some_and(|s| s.matches > 0),
                KeyRef::Match(id) => model.matches.contains_key(&id),
                // Singletons were compared above whatever their state.
                KeyRef::Board(_) | KeyRef::Seasons | KeyRef::Deadlines => {
                    expected_of(model, &key).is_some()
                        || matches!(key, KeyRef::Seasons | KeyRef::Deadlines)
                }
            };
            if !present_in_model {
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
        if next == "0" {
            break;
        }
        cursor = next;
    }
    Ok(report)
}

/// Rewrites every differing key of the report to what the model says.
pub async fn repair(
    client: &Client,
    g: &GenerationKeys,
    model: &Model,
    report: &mut VerifyReport,
) -> Result<u64, HistoryError> {
    let units = report.differing.iter().map(|k| {
        let (name, _) = key_name(g, k);
        let mut unit = vec![Cmd::Del(name.clone())];
        match expected_of(model, k) {
            None => {}
            Some(Expected::Hash(f)) => unit.push(Cmd::Hset(name, f)),
            Some(Expected::Match(m)) => unit.push(Cmd::Set(name, m.to_value())),
            Some(Expected::ZSet(m)) => unit.push(Cmd::Zadd(
                name,
                m.into_iter().map(|(m, s)| (s as f64, m)).collect(),
            )),
            Some(Expected::Set(s)) => unit.push(Cmd::Sadd(name, s.into_iter().collect())),
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
    let client = crate::connect_redis(&config).await?;
    let keys = config.keys();
    let generation = redis_io::active_generation(&client, &keys).await?;
    let g = keys.generation_keys(generation);
    let before = redis_io::progress(&client, &g).await?;
    let progress = crate::progress::Progress::start("verify: folding history", !opts.show_progress);
    let out =
        crate::fold_history(&store, &crate::FoldOptions::default(), &progress, &shutdown).await;
    progress.finish();
    let out = out?;
    let mut report = compare(&client, &g, &out.model).await?;
    let after = redis_io::progress(&client, &g).await?;
    report.pipeline_moved = before != after;
    if opts.repair && report.total_differences > 0 {
        let n = repair(&client, &g, &out.model, &mut report).await?;
        tracing::info!(keys = n, generation, "repaired");
    }
    store.disconnect().await;
    Ok(report)
}
