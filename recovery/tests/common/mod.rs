//! Shared pieces of the recovery tests: an independent fold of the event
//! tables (straight from `rps_core::fold::apply`, not the code under test),
//! the read models as Redis holds them, and the pipeline components run
//! in-process.

#![allow(dead_code)]

use fred::clients::Client;
use fred::interfaces::{KeysInterface, SortedSetsInterface};
use read_model::board_member;
use read_model::ReadModelKeys;
use rps_core::fold::{MatchStatus, PlayerStats};
use rps_core::keys::deadline_member;
use rps_core::{shard_of, Config, MatchState};
use rps_event_store::{EventStore, HistoryFilter};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What "equal" compares: every player's all-time and season counters, the
/// boards and the open-deadline set.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadModels {
    /// `<id>` (all-time) or `<id>:<season>` → counters.
    pub players: BTreeMap<String, [i64; 4]>,
    /// Board suffix (`""` or `:<season>`) → member → score.
    pub boards: BTreeMap<String, BTreeMap<String, i64>>,
    /// Deadline member → ms.
    pub deadlines: BTreeMap<String, i64>,
}

impl ReadModels {
    pub fn summary(&self) -> String {
        format!(
            "{} player scopes, {} boards, {} open deadlines",
            self.players.len(),
            self.boards.len(),
            self.deadlines.len()
        )
    }

    /// A short description of the first differences.
    pub fn diff(&self, other: &ReadModels) -> String {
        let mut out = Vec::new();
        for (k, v) in &self.players {
            if other.players.get(k) != Some(v) {
                out.push(format!(
                    "player {k}: expected {v:?}, got {:?}",
                    other.players.get(k)
                ));
            }
        }
        for k in other
            .players
            .keys()
            .filter(|k| !self.players.contains_key(*k))
        {
            out.push(format!("player {k}: unexpected"));
        }
        if self.boards != other.boards {
            out.push("boards differ".into());
        }
        for (k, v) in &self.deadlines {
            if other.deadlines.get(k) != Some(v) {
                out.push(format!(
                    "deadline {k}: expected {v}, got {:?}",
                    other.deadlines.get(k)
                ));
            }
        }
        for k in other
            .deadlines
            .keys()
            .filter(|k| !self.deadlines.contains_key(*k))
        {
            out.push(format!("deadline {k}: unexpected"));
        }
        out.truncate(10);
        out.join("; ")
    }
}

/// Folds every event table of every shard, as they are now.
pub async fn independent_fold(store: &EventStore) -> ReadModels {
    let config = store.config().clone();
    let mut matches: HashMap<i64, MatchState> = HashMap::new();
    let mut stats: HashMap<(i64, Option<String>), PlayerStats> = HashMap::new();
    for shard in 0..config.shard_count {
        let tables = store.event_tables(shard).await.expect("tables");
        for table in tables {
            let mut reader = store.table_reader(shard, &table, &HistoryFilter::default(), 20_000);
            while let Some(page) = reader.next_page().await.expect("page") {
                for row in page {
                    let Ok(ev) = row else { continue };
                    if shard_of(ev.player_a_id, config.shard_count) != shard {
                        continue;
                    }
                    let Ok(t) = rps_core::fold::apply(matches.get(&ev.match_id), &ev) else {
                        continue;
                    };
                    for e in &t.effects {
                        for scope in [None, Some(e.season.to_string())] {
                            stats.entry((e.player_id, scope)).or_default().add(&e.delta);
                        }
                    }
                    matches.insert(ev.match_id, t.state);
                }
            }
        }
    }
    let mut m = ReadModels::default();
    for ((id, season), s) in stats {
        if s.matches <= 0 {
            continue;
        }
        let (pk, bk) = match &season {
            None => (id.to_string(), String::new()),
            Some(se) => (format!("{id}:{se}"), format!(":{se}")),
        };
        m.players.insert(pk, s.stored_values());
        m.boards
            .entry(bk)
            .or_default()
            .insert(board_member(id), s.board_score());
    }
    for st in matches.values() {
        if st.status == MatchStatus::InProgress {
            if let Some(d) = st.deadline_at {
                m.deadlines.insert(
                    deadline_member(shard_of(st.player_a, config.shard_count), st.match_id),
                    d.as_millis(),
                );
            }
        }
    }
    m
}

/// The active generation, if any.
pub async fn active_generation(redis: &Client, config: &Config) -> Option<u64> {
    let v: Option<String> = redis.get(config.keys().generation()).await.ok()?;
    v.and_then(|s| s.parse().ok())
}

pub async fn scan(redis: &Client, pattern: &str) -> Vec<String> {
    test_support::scan_keys(redis, pattern).await
}

/// The read models of the active generation as Redis holds them.
pub async fn read_models(redis: &Client, config: &Config) -> Option<ReadModels> {
    let g = active_generation(redis, config).await?;
    let gk = config.keys().generation_keys(g);
    let mut m = ReadModels::default();
    let seasons = read_model::read::seasons(redis, &gk).await.ok()?;
    for scope in std::iter::once(None).chain(seasons.into_iter().map(Some)) {
        let counters = read_model::read::scope_counters(redis, &gk, scope)
            .await
            .ok()?;
        for (id, s) in counters {
            let pk = match scope {
                None => id.to_string(),
                Some(se) => format!("{id}:{se}"),
            };
            m.players.insert(pk, s.stored_values());
        }
        // Every partition's part of the board.
        let mut board: BTreeMap<String, i64> = BTreeMap::new();
        for p in gk.all_partitions() {
            let z: Vec<(String, f64)> = redis
                .zrange(gk.board(p, scope), 0, -1, None, false, None, true)
                .await
                .ok()?;
            board.extend(z.into_iter().map(|(k, s)| (k, s as i64)));
        }
        if !board.is_empty() {
            let name = scope.map(|s| format!(":{s}")).unwrap_or_default();
            m.boards.insert(name, board);
        }
    }
    for shard in 0..config.shard_count {
        let d: Vec<(String, f64)> = redis
            .zrange(gk.deadlines(shard), 0, -1, None, false, None, true)
            .await
            .ok()?;
        m.deadlines
            .extend(d.into_iter().map(|(k, s)| (k, s as i64)));
    }
    Some(m)
}

/// Polls until Redis' read models equal the independent fold of the tables
/// (taken again on each try, so writes still landing are waited out).
pub async fn converges(
    store: &EventStore,
    redis: &Client,
    timeout: std::time::Duration,
) -> ReadModels {
    let config = store.config().clone();
    let started = std::time::Instant::now();
    loop {
        let expected = independent_fold(store).await;
        let last = match read_models(redis, &config).await {
            Some(actual) if actual == expected => return expected,
            Some(actual) => expected.diff(&actual),
            None => "no active generation".to_string(),
        };
        assert!(
            started.elapsed() < timeout,
            "read models did not converge to the fold of the tables within {timeout:?}: {last}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Starts cdc-reader, projector and compensator for `token` (the closure
/// handed to `recovery::supervise`).
pub fn components(
    config: Arc<Config>,
) -> impl FnMut(CancellationToken) -> futures::future::BoxFuture<'static, Result<(), String>> {
    move |token: CancellationToken| {
        let c = config.clone();
        Box::pin(async move {
            let (a, b, d) = tokio::join!(
                cdc_reader::run(c.clone(), token.clone()),
                projector::run(c.clone(), token.clone()),
                compensator::run(c.clone(), token.clone()),
            );
            a.map_err(|e| format!("cdc-reader: {e}"))?;
            b.map_err(|e| format!("projector: {e}"))?;
            d.map_err(|e| format!("compensator: {e}"))?;
            Ok(())
        })
    }
}

/// Simulator options for a test: few players (many results per player),
/// short deadlines so abandoned matches fall due during the test.
pub fn sim(
    matches: u64,
    first_node: u8,
    rate: Option<f64>,
    seed: u64,
) -> simulator::SimulateOptions {
    simulator::SimulateOptions {
        players: 300,
        matches,
        rate,
        concurrency: 2000,
        deadline: std::time::Duration::from_secs(2),
        seed: Some(seed),
        nodes: 2,
        first_node,
        ..Default::default()
    }
}
