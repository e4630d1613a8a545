//! `rpsctl replay`: rebuild the read models from history into a new
//! generation beside the live one, catch it up, switch to it.
//!
//! 1. End what a replay that died may have left of a switch
//!    ([`switch::recover`]), then note the live generation `g` and its
//!    `progress` (where to read the streams from, less a safety margin:
//!    see [`CATCHUP_MARGIN_MS`]).
//! 2. Fold every shard's tables inside a consistent snapshot, noting each
//!    snapshot's binlog position ([`crate::fold`]).
//! 3. Write the fold into `g+1`, every key once.
//! 4. Catch up: read each shard stream up to `g`'s progress and fold the
//!    entries whose source position is after the shard's snapshot (the
//!    others are already in the fold), rewriting the keys they touch and
//!    `g+1`'s progress. Repeat until `g` has applied every entry the
//!    snapshot covers.
//! 5. Switch, in steps of one hash slot each ([`switch`]): hold every
//!    shard (the live projector's commits into `g` wait from here, so `g`'s
//!    progress is frozen), settle what `g`'s outbox still owes its
//!    partitions and the dead-letter stream, catch up once more to the
//!    frozen progress, then decide the switch (the marker becomes `g+1`)
//!    and move every slot's copy of the marker. The catch-up writes
//!    absolute counts from its in-memory fold, so it must be done before
//!    any shard's live commits reach `g+1`; the hold makes sure of it. The
//!    live projector continues on `g+1` from there. If the hold's deadline
//!    ([`ReplayOptions::switch_hold`]) passes first, the live projector
//!    resumes `g` and the replay catches up and tries again.
//! 6. Unlink `g`'s keys.
//!
//! A limited replay (`--season`, `--shard`, `--until`) is an inspection: it
//! folds and reports, and writes nothing (a partial model must never become
//! the live one).

use crate::fold::{FoldOptions, ShardSnapshot, SpilledMatches};
use crate::model::Model;
use crate::progress::Progress;
use crate::redis_io;
use crate::verify::{self, VerifyReport};
use crate::HistoryError;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, StreamsInterface};
use fred::types::Value;
use read_model::bulk::Write;
use read_model::generation::switch::{self, Decision, Resolution};
use read_model::score::{ScoreError, Scorer};
use read_model::GenerationKeys;
use read_model::ReadModelKeys;
use rps_core::redis_client::ClientPolicy;
use rps_core::stream::StreamId;
use rps_core::{Config, ShardId, StreamEvent};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Stream entries read per XRANGE while catching up.
const CATCHUP_PAGE: u64 = 2000;
/// The catch-up starts this long before the live progress noted before the
/// snapshot. The reader sees a transaction in the binlog (and the projector
/// may apply it) a moment before InnoDB makes it visible to new snapshots;
/// such an entry is after the snapshot position yet already behind that
/// progress, so the catch-up must look back for it. Entries the snapshot
/// covers are skipped by position, so looking back further costs only reads.
const CATCHUP_MARGIN_MS: u64 = 300_000;

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub fold: FoldOptions,
    /// Build and compare with the live generation, then drop what was built.
    pub dry_run: bool,
    pub show_progress: bool,
    /// How long to wait for the live generation to pass the snapshot.
    pub switch_timeout: Duration,
    /// How long the switch may hold the shards before it is decided: the
    /// live projector waits that long at most if the replay dies holding
    /// them, and resumes the old generation then.
    pub switch_hold: Duration,
    /// For crash tests: stop at this point of the switch as if the process
    /// died there, undoing and dropping nothing.
    #[doc(hidden)]
    pub crash_at: Option<CrashPoint>,
}

/// Where [`ReplayOptions::crash_at`] stops a replay.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Every shard held and the new generation completed, not decided.
    Held,
    /// Decided (the marker names the new generation), no copy moved yet.
    Decided,
}

/// The default [`ReplayOptions::switch_hold`]: far above a catch-up round
/// of one switch (milliseconds), and short enough that a replay killed
/// holding the shards stalls the live pipeline no longer than a brief
/// Redis failover would.
pub const SWITCH_HOLD: Duration = Duration::from_secs(15);

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            fold: FoldOptions::default(),
            dry_run: false,
            show_progress: false,
            switch_timeout: Duration::from_secs(300),
            switch_hold: SWITCH_HOLD,
            crash_at: None,
        }
    }
}

/// What a replay did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReplayReport {
    pub old_generation: u64,
    /// `None` for an inspection (limited replay).
    pub new_generation: Option<u64>,
    pub switched: bool,
    pub events: u64,
    pub matches: u64,
    pub players: u64,
    pub open_matches: u64,
    pub rejections: BTreeMap<String, u64>,
    pub rejection_samples: Vec<crate::model::RejectedEvent>,
    pub keys_written: u64,
    pub fold_seconds: f64,
    pub write_seconds: f64,
    pub catchup_entries: u64,
    pub catchup_skipped: u64,
    pub total_seconds: f64,
    pub old_keys_dropped: u64,
    pub snapshots: Vec<ShardSnapshot>,
    /// `--dry-run`: the fold compared with the live generation.
    pub comparison: Option<VerifyReport>,
}

impl ReplayReport {
    fn fill_from(&mut self, m: &Model) {
        self.events = m.events;
        self.matches = m.matches.len() as u64;
        self.players = m.players.keys().filter(|k| k.1.is_none()).count() as u64;
        self.open_matches = m.deadlines().len() as u64;
        self.rejections = m.rejections.by_code.clone();
        self.rejection_samples = m.rejections.samples.iter().take(20).cloned().collect();
    }
}

fn id_after(a: &str, b: &str) -> bool {
    StreamId::parse(a) > StreamId::parse(b)
}

/// Runs a replay; see the module doc.
pub async fn run(
    config: Arc<Config>,
    opts: ReplayOptions,
    shutdown: CancellationToken,
) -> Result<ReplayReport, HistoryError> {
    let started = Instant::now();
    let store = rps_event_store::EventStore::new(config.clone())?;
    let client = ClientPolicy::patient().connect(&config.redis).await?;
    let keys = config.keys();
    if opts.fold.is_complete() && !opts.dry_run {
        end_earlier_switch(&client, &keys, config.shard_count).await?;
    }
    let generation = redis_io::active_generation(&client, &keys).await?;
    let old = keys.generation_keys(generation);
    let mut report = ReplayReport {
        old_generation: generation,
        ..Default::default()
    };
    let start_progress = redis_io::progress(&client, &old, config.shard_count).await?;

    // A replay writes each range's matches into g+1 as the fold goes; a dry
    // run writes them too and also compares them with the live generation;
    // an inspection (limited fold) only counts them. No path keeps them.
    let new = keys.generation_keys(generation + 1);
    let writes = opts.fold.is_complete();
    let compares = writes && opts.dry_run;
    if opts.fold.is_complete() && redis_io::generation_exists(&client, &new).await? {
        let n = redis_io::drop_generation(&client, &new).await?;
        tracing::warn!(
            generation = new.generation,
            keys = n,
            "dropped leftovers of an unfinished replay"
        );
    }
    let progress = Progress::start("replay: folding history", !opts.show_progress);
    let t = Instant::now();
    let (tx, rx) = mpsc::channel::<SpilledMatches>(4);
    let fold = crate::fold_history_spilling(&store, &opts.fold, &progress, &shutdown, tx);
    let (to_sink, sink_rx) = mpsc::channel::<SpilledMatches>(4);
    let (to_compare, compare_rx) = mpsc::channel::<SpilledMatches>(4);
    let tee = tee(rx, to_sink, compares.then_some(to_compare));
    let sink = spill_sink(&client, writes.then_some(&new), config.shard_count, sink_rx);
    let comparison = async {
        if compares {
            verify::compare_spilled(&client, &old, config.shard_count, compare_rx, false)
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    };
    let (out, (), tally, comparison) = tokio::join!(fold, tee, sink, comparison);
    progress.finish();
    if writes && (out.is_err() || tally.is_err() || comparison.is_err()) {
        // What the failed fold wrote into g+1 is useless; do not leave it.
        let _ = redis_io::drop_generation(&client, &new).await;
    }
    // A failed writer or comparison ends the fold with `Cancelled`: report
    // the cause first.
    let spilled = tally?;
    let comparison = comparison?;
    let out = out?;
    store.disconnect().await;
    report.fold_seconds = t.elapsed().as_secs_f64();
    let mut model = out.model;
    report.snapshots = out.snapshots;
    report.fill_from(&model);
    report.matches += spilled.matches;
    report.open_matches += spilled.open;
    report.keys_written = spilled.keys;
    tracing::info!(
        events = model.events,
        matches = report.matches,
        seconds = report.fold_seconds,
        "history folded"
    );

    if !opts.fold.is_complete() {
        report.total_seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    report.new_generation = Some(new.generation);
    let t = Instant::now();
    report.keys_written += redis_io::write_model(&client, &new, &model)
        .instrument(tracing::info_span!(
            "write_generation",
            generation = new.generation
        ))
        .await?;
    report.write_seconds = t.elapsed().as_secs_f64();
    tracing::info!(
        keys = report.keys_written,
        seconds = report.write_seconds,
        generation = new.generation,
        "new generation written"
    );

    if let Some((index, mut comparison)) = comparison {
        verify::compare_rest(&client, &old, &model, &index, &mut comparison).await?;
        report.comparison = Some(comparison);
        redis_io::drop_generation(&client, &new).await?;
        report.total_seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    let snapshots = report.snapshots.clone();
    let catch_up = CatchUp {
        client: &client,
        config: &config,
        old: &old,
        new: &new,
        snapshots: &snapshots,
        start_progress: &start_progress,
        opts: &opts,
        shutdown: &shutdown,
    };
    let result = catch_up_and_switch(&catch_up, &mut model, &mut report)
        .instrument(tracing::info_span!("catch_up", generation = new.generation))
        .await;
    if let Err(e) = result {
        // The half-built generation is useless; do not leave it behind
        // (unless stopped as a crash, which leaves everything).
        if !matches!(e, HistoryError::Crashed(_)) {
            let _ = redis_io::drop_generation(&client, &new).await;
        }
        return Err(e);
    }
    report.switched = true;
    report.rejections = model.rejections.by_code.clone();
    report.rejection_samples = model.rejections.samples.iter().take(20).cloned().collect();
    report.old_keys_dropped = redis_io::drop_generation(&client, &old).await?;
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Ends what an earlier replay that died left of its switch (finishing a
/// decided one, releasing the shards of an undecided one), and drops the
/// generation a finished switch left behind: a replay that dies after the
/// decision never drops it, and neither does the live projector that
/// finishes the switch for it.
async fn end_earlier_switch(
    client: &Client,
    keys: &rps_core::Keys,
    shard_count: u16,
) -> Result<(), HistoryError> {
    if let Some((barrier, outcome)) = switch::recover(client, keys, shard_count).await? {
        tracing::warn!(
            from = barrier.from,
            to = barrier.to,
            ?outcome,
            "ended the switch an earlier replay left unfinished"
        );
    }
    let Some(last) = switch::record(client, keys).await? else {
        return Ok(());
    };
    let active = redis_io::active_generation(client, keys).await?;
    if last.state == switch::State::Done && last.barrier.from != active {
        let left = keys.generation_keys(last.barrier.from);
        let n = redis_io::drop_generation(client, &left).await?;
        if n > 0 {
            tracing::warn!(
                generation = left.generation,
                keys = n,
                "dropped the generation an earlier switch left behind"
            );
        }
    }
    Ok(())
}

/// What the fold handed out range by range.
#[derive(Debug, Default)]
struct SpillTally {
    matches: u64,
    open: u64,
    keys: u64,
}

/// Hands each range to the writer and, for a dry run, to the comparison.
/// When either stops taking ranges the fold's channel closes and it ends.
async fn tee(
    mut from: mpsc::Receiver<SpilledMatches>,
    writer: mpsc::Sender<SpilledMatches>,
    compare: Option<mpsc::Sender<SpilledMatches>>,
) {
    while let Some(range) = from.recv().await {
        if let Some(c) = &compare {
            if c.send(range.clone()).await.is_err() {
                return;
            }
        }
        if writer.send(range).await.is_err() {
            return;
        }
    }
}

/// Match states written per round by the replay's spill writer.
const SPILL_WRITE_MATCHES: usize = 16_384;

/// Takes each range's final match states from the fold: writes them (and
/// the deadlines of the open ones) into `into`, or only counts them.
async fn spill_sink(
    client: &Client,
    into: Option<&GenerationKeys>,
    shard_count: u16,
    mut rx: tokio::sync::mpsc::Receiver<SpilledMatches>,
) -> Result<SpillTally, HistoryError> {
    let mut tally = SpillTally::default();
    let mut failed = None;
    while let Some(mut batch) = rx.recv().await {
        // Ranges are small; what the shards handed out meanwhile goes in
        // the same round of pipelines.
        while batch.len() < SPILL_WRITE_MATCHES {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        tally.matches += batch.len() as u64;
        let deadlines: Vec<(f64, String)> = batch
            .iter()
            .filter_map(|(id, m)| m.deadline_entry(*id, shard_count))
            .map(|(member, ms)| (ms as f64, member))
            .collect();
        tally.open += deadlines.len() as u64;
        let (Some(g), None) = (into, &failed) else {
            // After a failed write the rest is only drained, so the fold
            // ends and the error is reported once.
            continue;
        };
        let mut units: Vec<Vec<Write>> = batch
            .iter()
            .map(|(id, m)| {
                let shard = rps_core::shard_of(m.player_a, shard_count);
                vec![Write::Set(
                    g.match_state(shard, *id),
                    m.state(*id).to_value(),
                )]
            })
            .collect();
        let mut by_shard: BTreeMap<ShardId, Vec<(f64, String)>> = BTreeMap::new();
        for (ms, member) in deadlines {
            if let Some((shard, _)) = rps_core::keys::parse_deadline_member(&member) {
                by_shard.entry(shard).or_default().push((ms, member));
            }
        }
        for (shard, d) in by_shard {
            units.push(vec![Write::Zadd(g.deadlines(shard), d)]);
        }
        match redis_io::run_units(client, units).await {
            Ok(n) => tally.keys += n,
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(tally),
    }
}

/// Per-shard catch-up state.
struct ShardCursor {
    shard: ShardId,
    stream: String,
    /// Last stream id read (exclusive start of the next read).
    last: Option<String>,
    /// An entry after the snapshot was seen at or before `last`: every entry
    /// the snapshot covers is behind us.
    passed_snapshot: bool,
}

/// What the catch-up reads and never changes: where it reads from and
/// writes to, where each snapshot was taken, where the live generation
/// stood before the fold, and when to give up.
#[derive(Clone, Copy)]
struct CatchUp<'a> {
    client: &'a Client,
    config: &'a Config,
    /// The live generation, followed until the switch.
    old: &'a GenerationKeys,
    /// The generation being built, caught up and switched to.
    new: &'a GenerationKeys,
    snapshots: &'a [ShardSnapshot],
    /// The live progress noted before the fold: where the streams are read from.
    start_progress: &'a HashMap<String, String>,
    opts: &'a ReplayOptions,
    shutdown: &'a CancellationToken,
}

/// Catches `new` up from the streams into `model` until it may take over
/// from `old`, then switches; what it did goes into `report`.
async fn catch_up_and_switch(
    cx: &CatchUp<'_>,
    model: &mut Model,
    report: &mut ReplayReport,
) -> Result<(), HistoryError> {
    let CatchUp {
        client,
        config,
        old,
        new,
        snapshots,
        start_progress,
        opts,
        shutdown,
    } = *cx;
    let keys = config.keys();
    let snap: HashMap<ShardId, &ShardSnapshot> = snapshots.iter().map(|s| (s.shard, s)).collect();
    let mut cursors: Vec<ShardCursor> = (0..config.shard_count)
        .map(|shard| ShardCursor {
            shard,
            stream: keys.events(shard),
            last: start_progress
                .get(&shard.to_string())
                .and_then(|id| StreamId::parse(id))
                .map(|id| format!("{}-0", id.ms.saturating_sub(CATCHUP_MARGIN_MS))),
            passed_snapshot: false,
        })
        .collect();
    for c in &cursors {
        check_not_trimmed(client, c, snap[&c.shard]).await?;
    }
    model.track_dirty();
    let deadline = Instant::now() + opts.switch_timeout;
    let mut last_note = Instant::now();
    loop {
        if shutdown.is_cancelled() {
            return Err(HistoryError::Cancelled);
        }
        let target = redis_io::progress(client, old, config.shard_count).await?;
        catch_up_to(cx, &target, &mut cursors, &snap, model, report).await?;
        let waiting = snapshot_passed(client, config, &mut cursors, &snap).await?;
        if let Some(why) = &waiting {
            if last_note.elapsed() > Duration::from_secs(5) {
                tracing::info!(waiting_for = %why, "catching up");
                last_note = Instant::now();
            }
        } else if switch_over(cx, &mut cursors, &snap, model, report).await? {
            tracing::info!(
                from = old.generation,
                to = new.generation,
                entries = report.catchup_entries,
                "switched"
            );
            return Ok(());
        } else {
            tracing::warn!(
                hold = ?opts.switch_hold,
                "the switch's hold ran out before it was decided; the live projector \
                 resumed generation {}; catching up to try again",
                old.generation
            );
        }
        if Instant::now() > deadline {
            return Err(HistoryError::SwitchTimeout {
                generation: old.generation,
                timeout: opts.switch_timeout,
                waiting: waiting.unwrap_or_else(|| "a switch within its hold".to_string()),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Folds every shard's stream entries up to `target` (the live
/// generation's progress) into `model` and writes what they changed into
/// `new`, with `new`'s progress at `target`.
async fn catch_up_to(
    cx: &CatchUp<'_>,
    target: &HashMap<String, String>,
    cursors: &mut [ShardCursor],
    snap: &HashMap<ShardId, &ShardSnapshot>,
    model: &mut Model,
    report: &mut ReplayReport,
) -> Result<(), HistoryError> {
    let CatchUp { client, new, .. } = *cx;
    let mut progress_pairs: Vec<(ShardId, Vec<(String, String)>)> = Vec::new();
    for c in cursors.iter_mut() {
        let Some(t) = target.get(&c.shard.to_string()) else {
            continue;
        };
        while c.last.as_deref().is_none_or(|l| id_after(t, l)) {
            let start = c.last.as_ref().map_or("-".to_string(), |l| format!("({l}"));
            let page: Vec<(String, HashMap<String, String>)> = client
                .xrange_values(c.stream.as_str(), start, t.as_str(), Some(CATCHUP_PAGE))
                .await?;
            if page.is_empty() {
                break;
            }
            let s = snap[&c.shard];
            let decoded: Vec<(&String, Option<StreamEvent>)> = page
                .iter()
                .map(|(id, fields)| {
                    let e = StreamEvent::decode(
                        fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
                    )
                    .ok()
                    .filter(|e| !s.covers(&e.source.file, e.source.pos));
                    (id, e)
                })
                .collect();
            let after_snapshot = decoded.iter().filter_map(|(_, e)| e.as_ref());
            load_missing_matches(client, new, model, after_snapshot).await?;
            for (id, event) in decoded {
                match event {
                    // Covered by the snapshot (already in the fold), or
                    // undecodable: the projector dead-letters those and
                    // they change no read model.
                    None => report.catchup_skipped += 1,
                    Some(e) => {
                        c.passed_snapshot = true;
                        report.catchup_entries += 1;
                        model.apply_reporting(
                            c.shard,
                            &e.source.database,
                            &e.source.table,
                            &e.event,
                        );
                    }
                }
                c.last = Some(id.clone());
            }
        }
        c.last = Some(t.clone());
        let mut fields = vec![("id".to_string(), t.clone())];
        // The projector's event and commit times beside the position
        // come along, so lag reports stay continuous across the switch.
        // Not the sequence: the new generation's starts at 0.
        let prefix = format!("{}:", c.shard);
        fields.extend(target.iter().filter_map(|(k, v)| {
            let field = k.strip_prefix(&prefix)?;
            (field == "at" || field == "applied_at").then(|| (field.to_string(), v.clone()))
        }));
        progress_pairs.push((c.shard, fields));
    }
    let dirty = model.take_dirty();
    let mut units = redis_io::dirty_units(new, model, dirty.matches, dirty.players);
    for (shard, fields) in progress_pairs {
        units.push(vec![Write::Hset(new.progress(shard), fields)]);
    }
    redis_io::run_units(client, units).await?;
    metrics::counter!(crate::metrics::REPLAY_CATCHUP_ENTRIES_TOTAL)
        .absolute(report.catchup_entries);
    Ok(())
}

/// The switch ([`switch`]): holds every shard, completes `new` up to the
/// live generation's frozen progress, decides and moves every copy of the
/// marker. `false` when the hold ran out before the decision: the live
/// projector resumes `old`, and the caller catches up and tries again.
async fn switch_over(
    cx: &CatchUp<'_>,
    cursors: &mut [ShardCursor],
    snap: &HashMap<ShardId, &ShardSnapshot>,
    model: &mut Model,
    report: &mut ReplayReport,
) -> Result<bool, HistoryError> {
    let CatchUp {
        client,
        config,
        old,
        new,
        opts,
        ..
    } = *cx;
    let keys = config.keys();
    let shards = config.shard_count;
    let barrier = match switch::begin(
        client,
        &keys,
        shards,
        (old.generation, new.generation),
        switch::Continuity::Continues,
        opts.switch_hold,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return Err(switch_error(e, old)),
    };
    // From here the live projector waits on every shard: be quick, and
    // never leave the shards held on the way out.
    let completed = async {
        let frozen = redis_io::progress(client, old, shards).await?;
        settle_outbox(client, &keys, old, shards, &frozen).await?;
        catch_up_to(cx, &frozen, cursors, snap, model, report).await
    }
    .await;
    let decided = match completed {
        Ok(()) if opts.crash_at == Some(CrashPoint::Held) => {
            return Err(HistoryError::Crashed("holding the shards"))
        }
        Ok(()) => switch::commit(client, &keys, &barrier)
            .await
            .map_err(|e| switch_error(e, old)),
        Err(e) => Err(e),
    };
    match decided {
        Ok(Decision::Switched) => {}
        Ok(Decision::Lapsed) => {
            // Lapsed means abandoned: this can only give the shards back.
            switch::resolve(client, &keys, shards, &barrier, true).await?;
            return Ok(false);
        }
        Err(e) => {
            // A commit whose reply was lost may have switched: the record
            // says, and finishing or giving the shards back follows it.
            return match switch::resolve(client, &keys, shards, &barrier, true).await {
                Ok(Resolution::Switched) => Ok(true),
                _ => Err(e),
            };
        }
    }
    if opts.crash_at == Some(CrashPoint::Decided) {
        return Err(HistoryError::Crashed("after deciding the switch"));
    }
    switch::finish(client, &keys, shards, &barrier).await?;
    Ok(true)
}

/// A switch step's failure; the active generation moving under it (another
/// replay, a bootstrap) is the replay's own "generation moved".
fn switch_error(e: switch::SwitchError, old: &GenerationKeys) -> HistoryError {
    match e {
        switch::SwitchError::Moved { .. } => HistoryError::GenerationMoved {
            expected: old.generation,
        },
        e => e.into(),
    }
}

/// Settles what the live generation's outbox still owes its partitions and
/// the dead-letter stream, now that its progress is frozen: a batch whose
/// worker died between its commit and its partition step would otherwise
/// never reach them once the partitions switch, and its dead letters would
/// never be forwarded (the new generation's outbox starts empty).
async fn settle_outbox(
    client: &Client,
    keys: &rps_core::Keys,
    old: &GenerationKeys,
    shards: u16,
    frozen: &HashMap<String, String>,
) -> Result<(), HistoryError> {
    // The old generation's own partition count, which a replay changing
    // `redis.partitions` does not share.
    let recorded: Option<u16> = client.hget(old.fences(0), "n").await?;
    let keys = match recorded {
        Some(n) if n > 0 && n != keys.partitions() => keys.clone().with_partitions(n),
        _ => keys.clone(),
    };
    let settles = (0..shards).map(|shard| {
        let q: u64 = frozen
            .get(&format!("{shard}:q"))
            .and_then(|q| q.parse().ok())
            .unwrap_or(0);
        let keys = keys.clone();
        async move {
            let mut scorer = Scorer::new(client.clone(), keys, old.generation, shard, false);
            (shard, scorer.settle(q, q, &[], &[]).await)
        }
    });
    for (shard, r) in futures::future::join_all(settles).await {
        match r {
            Ok(()) => {}
            // What the old generation lost, the new one has from history.
            Err(e @ (ScoreError::Lost { .. } | ScoreError::Layout { .. })) => {
                tracing::warn!(shard, error = %e, "the live generation's outbox cannot be settled");
            }
            Err(e) => return Err(HistoryError::Score(e)),
        }
    }
    Ok(())
}

/// The fold wrote match states into `new` and forgot them; before the
/// catch-up folds a page, the states of the matches it touches come back
/// from there (a match absent there has no valid `started` yet).
async fn load_missing_matches(
    client: &Client,
    new: &GenerationKeys,
    model: &mut Model,
    events: impl Iterator<Item = &StreamEvent>,
) -> Result<(), HistoryError> {
    let mut ids: Vec<(ShardId, i64)> = events
        .map(|e| {
            let shard = rps_core::shard_of(e.event.player_a_id, model.shard_count);
            (shard, e.event.match_id)
        })
        .filter(|(_, id)| !model.matches.contains_key(id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    let values = futures::future::join_all(
        ids.iter()
            .map(|(shard, id)| read_model::read::match_state(client, new, *shard, *id)),
    )
    .await;
    for ((_, id), v) in ids.into_iter().zip(values) {
        if let Some(state) = v? {
            model
                .matches
                .insert(id, crate::model::CompactMatch::from_state(&state));
        }
    }
    Ok(())
}

/// Fails if entries the catch-up needs were trimmed from a stream: something
/// was deleted after our start, and the first entry left is already after
/// the snapshot (so entries between the snapshot and it may be gone).
async fn check_not_trimmed(
    client: &Client,
    c: &ShardCursor,
    snap: &ShardSnapshot,
) -> Result<(), HistoryError> {
    let exists: i64 = client.exists(c.stream.as_str()).await?;
    if exists == 0 {
        return Ok(());
    }
    let info: HashMap<String, Value> = client.xinfo_stream(c.stream.as_str(), false, None).await?;
    let max_deleted = info
        .get("max-deleted-entry-id")
        .and_then(|v| v.as_string())
        .unwrap_or_else(|| "0-0".to_string());
    let deleted_after_start = match &c.last {
        None => max_deleted != "0-0",
        Some(l) => id_after(&max_deleted, l),
    };
    if !deleted_after_start {
        return Ok(());
    }
    let first: Vec<(String, HashMap<String, String>)> = client
        .xrange_values(c.stream.as_str(), "-", "+", Some(1))
        .await?;
    let covered = first.first().is_none_or(|(_, f)| {
        StreamEvent::decode(f.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
            .is_ok_and(|e| snap.covers(&e.source.file, e.source.pos))
    });
    if covered {
        Ok(())
    } else {
        Err(HistoryError::StreamTrimmed {
            stream: c.stream.clone(),
            file: snap.file.clone(),
            pos: snap.pos,
            shard: c.shard,
        })
    }
}

/// Whether the live generation has applied every entry the snapshots cover,
/// for every shard: either an entry after the snapshot was already read, or
/// the reader has published past the snapshot (its checkpoint, or any entry
/// of that server after it) and no covered entry waits after `g`'s progress.
/// `None` when passed, else what it still waits for.
async fn snapshot_passed(
    client: &Client,
    config: &Config,
    cursors: &mut [ShardCursor],
    snap: &HashMap<ShardId, &ShardSnapshot>,
) -> Result<Option<String>, HistoryError> {
    let keys = config.keys();
    let mut server_published: HashMap<String, bool> = HashMap::new();
    for c in cursors.iter_mut() {
        if c.passed_snapshot {
            continue;
        }
        let s = snap[&c.shard];
        let published = match server_published.get(&s.server) {
            Some(p) => *p,
            None => {
                let p = reader_published_past(client, config, &keys, &s.server, snap).await?;
                server_published.insert(s.server.clone(), p);
                p
            }
        };
        if !published {
            return Ok(Some(format!(
                "the cdc-reader of `{}` to publish up to the snapshot position {}:{}",
                s.server, s.file, s.pos
            )));
        }
        let start = c.last.as_ref().map_or("-".to_string(), |l| format!("({l}"));
        let next: Vec<(String, HashMap<String, String>)> = client
            .xrange_values(c.stream.as_str(), start, "+", Some(1))
            .await?;
        let waiting_covered = next.first().is_some_and(|(_, f)| {
            StreamEvent::decode(f.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
                .is_ok_and(|e| s.covers(&e.source.file, e.source.pos))
        });
        if waiting_covered {
            return Ok(Some(format!(
                "the projector to apply shard {} entries the snapshot covers (after {})",
                c.shard,
                c.last.as_deref().unwrap_or("the start")
            )));
        }
        c.passed_snapshot = true;
    }
    Ok(None)
}

/// Whether the reader of `server` has published everything up to the
/// latest snapshot position taken on it.
async fn reader_published_past(
    client: &Client,
    config: &Config,
    keys: &rps_core::Keys,
    server: &str,
    snap: &HashMap<ShardId, &ShardSnapshot>,
) -> Result<bool, HistoryError> {
    let Some(latest) = snap
        .values()
        .filter(|s| s.server == server)
        .max_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)))
    else {
        return Ok(true);
    };
    let raw: Option<String> = client.get(keys.cdc_checkpoint(server)).await?;
    if let Some((file, pos)) = raw.as_deref().and_then(crate::status::parse_checkpoint) {
        if (file.as_str(), pos) >= (latest.file.as_str(), latest.pos) {
            return Ok(true);
        }
    }
    let Some(sc) = config.server(server) else {
        return Ok(true);
    };
    for shard in &sc.shards {
        let last: Vec<(String, HashMap<String, String>)> = client
            .xrevrange_values(keys.events(*shard), "+", "-", Some(1))
            .await?;
        if last.first().is_some_and(|(_, f)| {
            StreamEvent::decode(f.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))).is_ok_and(
                |e| !e.source.file.is_empty() && !latest.covers(&e.source.file, e.source.pos),
            )
        }) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_numerically() {
        assert!(id_after("10-0", "9-5"));
        assert!(id_after("9-10", "9-9"));
        assert!(!id_after("9-9", "9-9"));
    }
}
