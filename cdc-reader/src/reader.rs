//! The per-server replication task: connect, preflight, stream, apply,
//! and on transient trouble reconnect with clamped backoff and resume from
//! the checkpoint. This module wires the parts together; decoding lives in
//! [`crate::decode`], the atomic publish in [`crate::publish`].

use crate::checkpoint::Checkpoint;
use crate::decode::{Action, Decoder};
use crate::error::{classify_mysql, CdcError, Definite, SessionError, Transient};
use crate::metrics as m;
use crate::preflight;
use crate::publish::{Batch, Publisher, RELEASE_CHUNK};
use crate::xa::{Release, XaBranches};
use backon::BackoffBuilder;
use futures::{FutureExt, StreamExt};
use mysql_async::{Conn, Opts};
use rps_core::gtid::Gtid;
use rps_core::{Config, Timestamp};
use rps_event_store::{BinlogPosition, Flavor};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

/// How often lag in bytes is polled from the server.
const LAG_POLL: Duration = Duration::from_secs(5);
/// How often streams are trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(30);
/// How long a growing batch waits for more binlog data before it is flushed.
const LINGER: Duration = Duration::from_millis(1);
/// A batch older than this is flushed as soon as the binlog pauses.
const MAX_BATCH_AGE: Duration = Duration::from_millis(5);
/// A batch is also flushed at this size, whatever `cdc.batch_rows` says,
/// so the reader's memory stays bounded by bytes, not only by rows.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Smallest and largest wait between reconnects.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Runs every server's reader until `shutdown`; a server that stops on a
/// definite error is reported while the others go on.
pub async fn run(config: Arc<Config>, shutdown: CancellationToken) -> Result<(), CdcError> {
    let mut tasks = Vec::new();
    for i in 0..config.servers.len() {
        let c = config.clone();
        let s = shutdown.clone();
        tasks.push(tokio::spawn(async move { run_server(c, i, s).await }));
    }
    let trim = tokio::spawn(trim_loop(config.clone(), shutdown.clone()));
    let mut failures = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(d)) => failures.push(d),
            Err(e) => error!(error = %e, "reader task panicked"),
        }
    }
    shutdown.cancel();
    let _ = trim.await;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CdcError::Stopped(failures))
    }
}

async fn trim_loop(config: Arc<Config>, shutdown: CancellationToken) {
    let mut client = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(TRIM_EVERY) => {}
        }
        if client.is_none() {
            client = crate::publish::connect_redis(&config.redis.url, "trim")
                .await
                .ok();
        }
        let Some(c) = &client else { continue };
        let now = Timestamp::now().as_millis().max(0) as u64;
        match crate::trim::trim_once(c, &config, now).await {
            Ok(n) => metrics::counter!(m::TRIMMED).increment(n),
            Err(e) => warn!(error = %e, "trimming the shard streams failed; retrying later"),
        }
    }
}

/// One server's reader: sessions with backoff until shutdown or a definite error.
pub async fn run_server(
    config: Arc<Config>,
    index: usize,
    shutdown: CancellationToken,
) -> Result<(), Definite> {
    let server = config.servers[index].name.clone();
    let span = info_span!("cdc_reader", server = %server);
    async move {
        let labels = [("server", server.clone())];
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(BACKOFF_MIN)
            .with_max_delay(BACKOFF_MAX)
            .with_jitter()
            .without_max_times();
        let mut backoff = builder.build();
        loop {
            let started = Instant::now();
            let r = session(&config, index, &shutdown).await;
            metrics::gauge!(m::UP, &labels).set(0.0);
            match r {
                Ok(()) => return Ok(()),
                Err(SessionError::Definite(d)) => {
                    match &d {
                        Definite::BinlogUnavailable { message, .. }
                            if config.cdc.resnapshot_when_purged =>
                        {
                            warn!(error = %d, "reader stopped; asking for a rebuild from snapshots");
                            request_resnapshot(&config, &server, message, &shutdown).await;
                        }
                        _ => error!(error = %d, "reader stopped"),
                    }
                    return Err(d);
                }
                Err(SessionError::Transient(t)) => {
                    if shutdown.is_cancelled() {
                        return Ok(());
                    }
                    // A session that ran a while was healthy: start over small.
                    if started.elapsed() > BACKOFF_MAX {
                        backoff = builder.build();
                    }
                    let wait = backoff.next().unwrap_or(BACKOFF_MAX);
                    warn!(error = %t, wait_ms = wait.as_millis() as u64, "reconnecting");
                    metrics::counter!(m::RECONNECTS, &labels).increment(1);
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Asks the recovery supervisor (which watches the key) to rebuild from
/// consistent snapshots: the rows whose binlog is gone are still in the
/// tables. Without a supervisor the request only waits, and the reader stays
/// stopped as for any definite error.
async fn request_resnapshot(
    config: &Config,
    server: &str,
    message: &str,
    shutdown: &CancellationToken,
) {
    use fred::interfaces::HashesInterface;
    let key = config.keys().cdc_resnapshot();
    for attempt in 1..=5u32 {
        let asked = async {
            let client = crate::publish::connect_redis(&config.redis.url, "resnapshot")
                .await
                .map_err(|e| e.to_string())?;
            let r: Result<i64, _> = client.hset(&key, (server, message)).await;
            let _ = fred::interfaces::ClientLike::quit(&client).await;
            r.map(|_| ()).map_err(|e| e.to_string())
        };
        match asked.await {
            Ok(()) => {
                info!(key = %key, "rebuild from snapshots requested (cdc.resnapshot_when_purged)");
                return;
            }
            Err(e) => {
                warn!(error = %e, attempt, "asking for a rebuild from snapshots failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    error!(key = %key, "could not ask for a rebuild; follow the error's advice by hand");
}

fn mysql_opts(config: &Config, index: usize) -> Result<Opts, Definite> {
    let s = &config.servers[index];
    Opts::from_url(&s.url).map_err(|e| Definite::Url {
        server: s.name.clone(),
        message: e.to_string(),
    })
}

/// The server's current position, where a reader without a checkpoint
/// starts. A later snapshot step may instead hand [`stream`] its own start.
pub async fn start_position(config: &Config, index: usize) -> Result<Checkpoint, SessionError> {
    let s = &config.servers[index];
    let ck_key = config.keys().cdc_checkpoint(&s.name);
    let mut conn = Conn::new(mysql_opts(config, index)?)
        .await
        .map_err(|e| classify_mysql(&s.name, &ck_key, e))?;
    let r = async {
        let flavor = Flavor::detect(&mut conn).await?;
        preflight::current_position(&mut conn, flavor).await
    }
    .await
    .map_err(|e| classify_mysql(&s.name, &ck_key, e));
    let _ = conn.disconnect().await;
    r
}

/// Connects to a server for replication and runs the preflight; a
/// mismatch is logged setting by setting and stops the reader for good.
async fn connect_checked(
    config: &Arc<Config>,
    index: usize,
) -> Result<(Conn, preflight::ServerFacts), SessionError> {
    let server = &config.servers[index].name;
    let ck_key = config.keys().cdc_checkpoint(server);
    let mysql = |e| classify_mysql(server, &ck_key, e);
    let mut conn = Conn::new(mysql_opts(config, index)?).await.map_err(mysql)?;
    match preflight::preflight(&mut conn, config, index)
        .await
        .map_err(mysql)?
    {
        Ok(facts) => Ok((conn, facts)),
        Err(mismatches) => {
            for mm in &mismatches {
                error!(setting = %mm.setting, expected = %mm.expected, actual = %mm.actual, "preflight mismatch");
            }
            Err(Definite::Misconfigured {
                server: server.clone(),
                mismatches,
            }
            .into())
        }
    }
}

async fn session(
    config: &Arc<Config>,
    index: usize,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let server = config.servers[index].name.clone();
    let ck_key = config.keys().cdc_checkpoint(&server);
    let (mut publisher, stored) = Publisher::connect(config, index).await?;
    let mysql = |e| classify_mysql(&server, &ck_key, e);
    let (mut conn, facts) = connect_checked(config, index).await?;
    let start = match stored {
        Some(c) => c,
        None => {
            let c = preflight::current_position(&mut conn, facts.flavor)
                .await
                .map_err(mysql)?;
            // Store the starting point at once: a crash before the first
            // commit must not move the start past rows written meanwhile.
            publisher.publish(&mut Batch::default(), &c).await?;
            info!(gtid = %c.gtid, file = %c.file, pos = c.pos, "no checkpoint: starting at the server's current position");
            // Their prepare parts are behind the start: if they hold event
            // rows, a later commit cannot publish them.
            if let Ok(prepared) = rps_event_store::xa::recover(&mut conn).await {
                if !prepared.is_empty() {
                    let xids: Vec<String> = prepared.iter().map(ToString::to_string).collect();
                    warn!(branches = %xids.join(" "), "XA branches were prepared before this reader's start: \
                          rows they hold will not be published when they commit; decide them before \
                          starting a reader, or run `rpsctl replay` after they are decided");
                }
            }
            c
        }
    };
    stream(config, index, conn, start, publisher, facts, shutdown).await
}

/// Streams one server's binlog from `start` and publishes it; returns on
/// shutdown (Ok) or the first error.
pub async fn stream(
    config: &Arc<Config>,
    index: usize,
    conn: Conn,
    start: Checkpoint,
    mut publisher: Publisher,
    facts: preflight::ServerFacts,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let server = config.servers[index].name.clone();
    let labels = [("server", server.clone())];
    let ck_key = config.keys().cdc_checkpoint(&server);
    let mysql = |e| classify_mysql(&server, &ck_key, e);
    let heartbeat = Duration::from_millis(config.cdc.heartbeat_ms.max(100));
    let server_id = config.cdc.server_id_base + index as u32;
    info!(gtid = %start.gtid, file = %start.file, pos = start.pos,
          inflight = ?start.inflight, "streaming");
    let mut binlog = open_binlog(facts.flavor, conn, server_id, &start, heartbeat)
        .await
        .map_err(mysql)?;
    info!(flavor = %facts.flavor, "binlog opened");
    metrics::gauge!(m::UP, &labels).set(1.0);
    // Export the counters from the start, so a reader with nothing to
    // publish yet shows 0 instead of no series (a rate needs both ends).
    metrics::counter!(m::EVENTS_PUBLISHED, &labels).increment(0);
    metrics::counter!(m::BATCHES, &labels).increment(0);

    let (lag_tx, lag_rx) = watch::channel((start.file.clone(), start.pos));
    let lag_task = tokio::spawn(lag_bytes_loop(
        config.clone(),
        index,
        facts.flavor,
        lag_rx,
        shutdown.child_token(),
    ));
    let _stop_lag = AbortOnDrop(lag_task);

    let mut xa = XaBranches::load(publisher.client(), &config.keys(), &server).await?;
    let mut decoder = Decoder::new(config.clone(), &server, &start.file);
    let mut committed = Checkpoint {
        inflight: None,
        ..start.clone()
    };
    let mut skip = start.inflight.clone();
    let mut trx: Option<Gtid> = None;
    let mut trx_items = 0u64;
    let mut skip_n = 0u64;
    let mut dirty = false;
    let mut batch = Batch::default();
    let mut trx_mark = batch.mark();
    let mut trx_spilled = false;
    let mut actions = Vec::with_capacity(1024);
    let batch_rows = config.cdc.batch_rows.max(1) as u64;
    let silence = heartbeat * 3 + Duration::from_secs(2);
    let mut last_flush = Instant::now();

    loop {
        // Drain what is already buffered; flush before waiting, so latency is
        // one step when idle and batches grow by themselves under load.
        let next = match binlog.next().now_or_never() {
            Some(n) => n,
            None => {
                let pending = dirty || !batch.is_empty();
                // Under load the socket runs dry for a moment between
                // packets; lingering briefly lets a batch grow instead of
                // paying a Redis round trip per few rows. A batch that is
                // already old (or a lone event after idleness) goes at once.
                let mut got = None;
                if pending && last_flush.elapsed() < MAX_BATCH_AGE {
                    if let Ok(n) = tokio::time::timeout(LINGER, binlog.next()).await {
                        got = Some(n);
                    }
                }
                match got {
                    Some(n) => n,
                    None => {
                        if pending {
                            let ck = checkpoint_now(&committed, trx.as_ref(), trx_items);
                            flush(&mut publisher, &mut batch, &ck, &labels, &lag_tx).await?;
                            // Items of the open group before this point are out.
                            trx_spilled |= trx_items > 0;
                            trx_mark = batch.mark();
                            dirty = false;
                            last_flush = Instant::now();
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => {
                                let _ = binlog.close().await;
                                publisher.quit().await;
                                return Ok(());
                            }
                            n = tokio::time::timeout(silence, binlog.next()) => match n {
                                Ok(n) => n,
                                Err(_) => return Err(Transient::Silent { server: server.clone(), secs: silence.as_secs() }.into()),
                            }
                        }
                    }
                }
            }
        };
        let event = match next {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => return Err(mysql(e)),
            None => {
                return Err(Transient::StreamEnded {
                    server: server.clone(),
                }
                .into())
            }
        };
        actions.clear();
        decoder
            .decode(&event, &mut actions)
            .map_err(|source| Definite::Decode {
                server: server.clone(),
                source,
            })?;
        for action in actions.drain(..) {
            // Where the group ended, for the checkpoint after it.
            let mut ended: Option<(u64, Timestamp)> = None;
            match action {
                Action::Begin { gtid, .. } => {
                    xa.begin();
                    trx_mark = batch.mark();
                    trx_spilled = false;
                    trx_items = 0;
                    // The partly published transaction is recognised by its
                    // GTID; transactions of other databases may come first.
                    skip_n = match &skip {
                        Some((g, n)) if gtid.as_ref() == Some(g) => {
                            let n = *n;
                            skip = None;
                            n
                        }
                        _ => 0,
                    };
                    trx = gtid;
                }
                Action::XaStart { xid } => xa.start(&batch, xid),
                Action::Row(ev) => {
                    trx_items += 1;
                    let publish = trx_items > skip_n;
                    if xa.in_branch() {
                        xa.hold_row(&publisher, &mut batch, &ev, publish);
                    } else if publish {
                        publisher.push_entry(&mut batch, &ev);
                    }
                }
                Action::Dead(dl) => {
                    trx_items += 1;
                    let publish = trx_items > skip_n;
                    if xa.in_branch() {
                        xa.hold_dead(&publisher, &mut batch, &dl, publish);
                    } else if publish {
                        publisher.push_dead(&mut batch, &dl);
                    }
                }
                Action::Commit { pos, ts } => {
                    if xa.in_branch() {
                        let release = xa.commit_one_phase(&publisher, &mut batch);
                        let ck = checkpoint_now(&committed, trx.as_ref(), trx_items);
                        release_in_steps(
                            &mut publisher,
                            &mut batch,
                            release,
                            &ck,
                            &labels,
                            &lag_tx,
                        )
                        .await?;
                    }
                    ended = Some((pos, ts));
                }
                Action::Prepare { xid, pos, ts } => {
                    let gtid = trx.as_ref().map(Gtid::to_string).unwrap_or_default();
                    xa.prepare(
                        &publisher,
                        &mut batch,
                        xid,
                        (&gtid, decoder.file(), pos),
                        ts,
                    );
                    ended = Some((pos, ts));
                }
                Action::XaDecision {
                    xid,
                    commit,
                    pos,
                    ts,
                } => {
                    let release = xa.decide(&publisher, &mut batch, &xid, commit);
                    // The decision's own GTID is not in the checkpoint until
                    // its release is complete: a restart reads it again.
                    let ck = checkpoint_now(&committed, None, 0);
                    release_in_steps(&mut publisher, &mut batch, release, &ck, &labels, &lag_tx)
                        .await?;
                    ended = Some((pos, ts));
                }
                Action::Rollback { pos, ts } => {
                    metrics::counter!(m::ROLLED_BACK_GROUPS, &labels).increment(1);
                    if !xa.rollback_open(&publisher, &mut batch)
                        && (!batch.truncate(trx_mark) || trx_spilled || skip_n > 0)
                    {
                        // Part of the group went out with an earlier batch.
                        let dl = rolled_back_after_publish(
                            &server,
                            decoder.file(),
                            pos,
                            trx.as_ref(),
                            trx_items,
                        );
                        error!(reason = %dl.reason, "a group ended with ROLLBACK after part of it was published");
                        publisher.push_dead(&mut batch, &dl);
                    }
                    ended = Some((pos, ts));
                }
                Action::Heartbeat { .. } => {
                    if batch.is_empty() && !dirty {
                        metrics::gauge!(m::LAG_SECONDS, &labels).set(0.0);
                    }
                    xa.export_metrics();
                }
                Action::Rotate { file } => {
                    info!(file = %file, "binlog rotated");
                }
            }
            if let Some((pos, ts)) = ended {
                if let Some(g) = trx.take() {
                    committed.gtid.advance(&g);
                }
                committed.file = decoder.file().to_string();
                committed.pos = pos;
                committed.commit_ts = ts.as_micros();
                trx_items = 0;
                skip_n = 0;
                dirty = true;
            }
            if batch.items() >= batch_rows || batch.bytes >= MAX_BATCH_BYTES {
                let ck = checkpoint_now(&committed, trx.as_ref(), trx_items);
                flush(&mut publisher, &mut batch, &ck, &labels, &lag_tx).await?;
                // Items of the open group before this point are out.
                trx_spilled |= trx_items > 0;
                trx_mark = batch.mark();
                dirty = false;
                last_flush = Instant::now();
            }
        }
    }
}

/// A large committed branch goes out in bounded steps under the checkpoint
/// before its decision (so a crash mid-way reads the decision again and
/// releases the rest); the batch then gets the final, forgetting release.
async fn release_in_steps(
    publisher: &mut Publisher,
    batch: &mut Batch,
    release: Release,
    before: &Checkpoint,
    labels: &[(&'static str, String); 1],
    lag_tx: &watch::Sender<(String, u64)>,
) -> Result<(), Transient> {
    let Release::Chunked(keys) = release else {
        return Ok(());
    };
    let released = std::mem::take(&mut batch.released);
    flush(publisher, batch, before, labels, lag_tx).await?;
    let mut steps = 0u64;
    loop {
        publisher.push_release(batch, &keys, Some(RELEASE_CHUNK));
        let left = publisher.publish(batch, before).await?;
        steps += 1;
        if left == 0 {
            break;
        }
    }
    info!(branch = %keys.field, steps, "large XA branch released in steps");
    publisher.push_release(batch, &keys, None);
    batch.released = released;
    Ok(())
}

fn rolled_back_after_publish(
    server: &str,
    file: &str,
    pos: u64,
    gtid: Option<&Gtid>,
    items: u64,
) -> rps_core::deadletter::DeadLetter {
    rps_core::deadletter::DeadLetter {
        origin: Some(rps_core::deadletter::Origin::CdcReader),
        kind: crate::decode::kind::ROLLED_BACK.to_string(),
        reason: format!(
            "the group ended with ROLLBACK after {items} of its items were published in earlier \
             batches (it touched a non-transactional table and was larger than one batch): the \
             read models count rows the tables do not hold; rebuild with `rpsctl replay`"
        ),
        server: server.to_string(),
        file: file.to_string(),
        pos,
        gtid: gtid.map(Gtid::to_string).unwrap_or_default(),
        at: Timestamp::now(),
        ..Default::default()
    }
}

/// The checkpoint after what was decoded so far: the last commit, plus the
/// open transaction's published row count when a batch ends inside it.
fn checkpoint_now(committed: &Checkpoint, trx: Option<&Gtid>, trx_items: u64) -> Checkpoint {
    let mut ck = committed.clone();
    ck.inflight = trx
        .filter(|_| trx_items > 0)
        .map(|g| (g.clone(), trx_items));
    ck
}

async fn flush(
    publisher: &mut Publisher,
    batch: &mut Batch,
    ck: &Checkpoint,
    labels: &[(&'static str, String); 1],
    lag_tx: &watch::Sender<(String, u64)>,
) -> Result<(), Transient> {
    let entries = batch.entries + batch.released;
    let dead = std::mem::take(&mut batch.dead);
    let t0 = Instant::now();
    publisher.publish(batch, ck).await?;
    tracing::debug!(
        entries,
        dead = dead.len(),
        ms = t0.elapsed().as_secs_f64() * 1e3,
        pos = ck.pos,
        "published"
    );
    metrics::counter!(m::EVENTS_PUBLISHED, labels).increment(entries);
    metrics::counter!(m::BATCHES, labels).increment(1);
    for kind in dead {
        metrics::counter!(m::DEAD_LETTERS, "server" => labels[0].1.clone(), "kind" => kind)
            .increment(1);
    }
    if ck.commit_ts > 0 {
        let lag = (Timestamp::now().as_micros() - ck.commit_ts).max(0) as f64 / 1e6;
        metrics::gauge!(m::LAG_SECONDS, labels).set(lag);
    }
    let _ = lag_tx.send((ck.file.clone(), ck.pos));
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn lag_bytes_loop(
    config: Arc<Config>,
    index: usize,
    flavor: Flavor,
    rx: watch::Receiver<(String, u64)>,
    shutdown: CancellationToken,
) {
    let server = config.servers[index].name.clone();
    let labels = [("server", server)];
    let mut conn: Option<Conn> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(LAG_POLL) => {}
        }
        if conn.is_none() {
            if let Ok(opts) = mysql_opts(&config, index) {
                conn = Conn::new(opts).await.ok();
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let (file, pos) = rx.borrow().clone();
        match preflight::lag_bytes(c, flavor, &file, pos).await {
            Ok(b) => metrics::gauge!(m::LAG_BYTES, &labels).set(b as f64),
            Err(_) => conn = None,
        }
    }
}

/// What [`decode_only`] saw.
#[derive(Debug, Clone, Default)]
pub struct DecodeStats {
    pub rows: u64,
    pub dead_letters: u64,
    pub commits: u64,
    pub events: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Reads a server's binlog from `start` and decodes it without publishing,
/// until `rows` rows were decoded or the server is idle (a heartbeat with no
/// transaction open). For measuring and for dry runs.
pub async fn decode_only(
    config: &Arc<Config>,
    index: usize,
    start: &Checkpoint,
    rows: u64,
) -> Result<DecodeStats, SessionError> {
    let server = config.servers[index].name.clone();
    let ck_key = config.keys().cdc_checkpoint(&server);
    let mysql = |e| classify_mysql(&server, &ck_key, e);
    let (conn, facts) = connect_checked(config, index).await?;
    // A replica id of its own, so a dry run never displaces the live reader.
    let server_id = config.cdc.server_id_base + 90 + index as u32;
    let mut binlog = open_binlog(
        facts.flavor,
        conn,
        server_id,
        start,
        Duration::from_millis(500),
    )
    .await
    .map_err(mysql)?;
    let mut decoder = Decoder::new(config.clone(), &server, &start.file);
    let mut stats = DecodeStats::default();
    let mut actions = Vec::with_capacity(1024);
    let t0 = Instant::now();
    while stats.rows < rows {
        let Some(ev) = binlog.next().await else { break };
        let ev = ev.map_err(mysql)?;
        stats.events += 1;
        // Events unpacked from a compressed payload (log_pos 0) are not
        // binlog bytes of their own.
        if ev.header().log_pos() != 0 {
            stats.bytes += u64::from(ev.header().event_size());
        }
        actions.clear();
        decoder
            .decode(&ev, &mut actions)
            .map_err(|source| Definite::Decode {
                server: server.clone(),
                source,
            })?;
        let mut idle = false;
        for a in &actions {
            match a {
                Action::Row(_) => stats.rows += 1,
                Action::Dead(_) => stats.dead_letters += 1,
                Action::Commit { .. } => stats.commits += 1,
                // MySQL also sends heartbeats while it skips what the GTID
                // set already holds, before the first new event.
                Action::Heartbeat { .. }
                    if stats.rows > 0 || t0.elapsed() > Duration::from_secs(3) =>
                {
                    idle = true
                }
                _ => {}
            }
        }
        if idle {
            break;
        }
    }
    stats.elapsed = t0.elapsed();
    let _ = binlog.close().await;
    Ok(stats)
}

/// Opens the binlog dump on `conn` as replica `server_id`, from `start`
/// (by GTID position when the checkpoint has one, else by file and
/// position), with heartbeats while idle.
async fn open_binlog(
    flavor: Flavor,
    conn: Conn,
    server_id: u32,
    start: &Checkpoint,
    heartbeat: Duration,
) -> Result<mysql_async::BinlogStream, mysql_async::Error> {
    let from = BinlogPosition {
        gtid: start.gtid.clone(),
        file: start.file.clone(),
        pos: start.pos,
    };
    flavor.open_binlog(conn, server_id, &from, heartbeat).await
}
