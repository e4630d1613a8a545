//! The per-server replication task: connect, preflight, stream, apply,
//! and on transient trouble reconnect with clamped backoff and resume from
//! the checkpoint. This module wires the parts together; decoding lives in
//! [`crate::decode`], the atomic publish in [`crate::publish`].

use crate::checkpoint::Checkpoint;
use crate::cursor::Cursor;
use crate::decode::{Action, Decoder};
use crate::error::{classify_mysql, CdcError, Definite, SessionError, Transient};
use crate::metrics as m;
use crate::preflight;
use crate::publish::{Batch, Publisher};
use crate::xa::XaBranches;
use futures::{FutureExt, StreamExt};
use mysql_async::{Conn, Opts};
use rps_core::health::Readiness;
use rps_core::retry::Backoff;
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
/// Smallest and largest wait between reconnects.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Asking for a rebuild is tried this often, this far apart, before the
/// operator is left to follow the error's advice by hand.
const RESNAPSHOT_ATTEMPTS: u32 = 5;
const RESNAPSHOT_WAIT: Duration = Duration::from_secs(1);

/// Runs every server's reader until `shutdown`; a server that stops on a
/// definite error is reported while the others go on.
pub async fn run(config: Arc<Config>, shutdown: CancellationToken) -> Result<(), CdcError> {
    run_with_readiness(config, shutdown, Readiness::new()).await
}

/// [`run`], keeping `ready` current: one check per server, passing while
/// that server's binlog is being streamed.
pub async fn run_with_readiness(
    config: Arc<Config>,
    shutdown: CancellationToken,
    ready: Readiness,
) -> Result<(), CdcError> {
    let all: Vec<usize> = (0..config.servers.len()).collect();
    run_servers(config, &all, shutdown, ready).await
}

/// [`run_with_readiness`] for some of the servers (by index in
/// `config.servers`): one reader process per MySQL server, each its own
/// failure domain, as a deployment that outgrows one process runs them.
pub async fn run_servers(
    config: Arc<Config>,
    servers: &[usize],
    shutdown: CancellationToken,
    ready: Readiness,
) -> Result<(), CdcError> {
    let mut tasks = Vec::new();
    for &i in servers {
        let c = config.clone();
        let s = shutdown.clone();
        let r = ready.clone();
        tasks.push(tokio::spawn(async move {
            run_server_reporting(c, i, s, r).await
        }));
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
            client = crate::publish::connect_redis(&config.redis, "trim")
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
    run_server_reporting(config, index, shutdown, Readiness::new()).await
}

async fn run_server_reporting(
    config: Arc<Config>,
    index: usize,
    shutdown: CancellationToken,
    ready: Readiness,
) -> Result<(), Definite> {
    let server = config.servers[index].name.clone();
    let span = info_span!("cdc_reader", server = %server);
    async move {
        ready.not_ready(&server, "connecting");
        let labels = [("server", server.clone())];
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            let started = Instant::now();
            let r = session(&config, index, &shutdown, &ready).await;
            metrics::gauge!(m::UP, &labels).set(0.0);
            match r {
                Ok(()) => {
                    ready.not_ready(&server, "stopped");
                    return Ok(());
                }
                Err(SessionError::Definite(d)) => {
                    ready.not_ready(&server, format!("stopped: {d}"));
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
                        ready.not_ready(&server, "stopped");
                        return Ok(());
                    }
                    ready.not_ready(&server, format!("reconnecting: {t}"));
                    // A session that ran a while was healthy: start over small.
                    if started.elapsed() > BACKOFF_MAX {
                        backoff.reset();
                    }
                    let wait = backoff.next_delay().unwrap_or(BACKOFF_MAX);
                    warn!(error = %t, wait_ms = wait.as_millis() as u64, "reconnecting");
                    metrics::counter!(m::RECONNECTS, &labels).increment(1);
                    if !rps_core::retry::sleep(wait, &shutdown).await {
                        return Ok(());
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
    let mut backoff = Backoff::new(RESNAPSHOT_WAIT, RESNAPSHOT_WAIT);
    for attempt in 1..=RESNAPSHOT_ATTEMPTS {
        let asked = async {
            let client = crate::publish::connect_redis(&config.redis, "resnapshot")
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
                if !backoff.wait(shutdown).await {
                    return;
                }
            }
        }
    }
    error!(key = %key, "could not ask for a rebuild; follow the error's advice by hand");
}

fn mysql_opts(config: &Config, index: usize) -> Result<Opts, Definite> {
    let s = &config.servers[index];
    rps_event_store::server_opts(s, rps_event_store::Account::Pipeline)
        .map(Opts::from)
        .map_err(|e| Definite::Url {
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
    ready: &Readiness,
) -> Result<(), SessionError> {
    let server = config.servers[index].name.clone();
    let ck_key = config.keys().cdc_checkpoint(&server);
    let (mut publisher, resume) = Publisher::connect(config, index).await?;
    let mysql = |e| classify_mysql(&server, &ck_key, e);
    let (mut conn, facts) = connect_checked(config, index).await?;
    let start = match resume.start {
        Some(c) => c,
        None => {
            let c = preflight::current_position(&mut conn, facts.flavor)
                .await
                .map_err(mysql)?;
            // Store the starting point at once: a crash before the first
            // commit must not move the start past rows written meanwhile.
            publisher.publish(&mut Batch::default(), &c, &[]).await?;
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
    let at = Start {
        checkpoint: start,
        ahead: resume.ahead,
    };
    stream(config, index, conn, at, publisher, facts, shutdown, ready).await
}

/// Where a session streams from.
pub struct Start {
    pub checkpoint: Checkpoint,
    /// What targets already have past it ([`crate::publish::Resume::ahead`]).
    pub ahead: Vec<(usize, Checkpoint)>,
}

/// Streams one server's binlog from `start` and publishes it; returns on
/// shutdown (Ok) or the first error. `ready`'s check for the server passes
/// from the moment the binlog is open.
#[allow(clippy::too_many_arguments)]
pub async fn stream(
    config: &Arc<Config>,
    index: usize,
    conn: Conn,
    start: Start,
    publisher: Publisher,
    facts: preflight::ServerFacts,
    shutdown: &CancellationToken,
    ready: &Readiness,
) -> Result<(), SessionError> {
    let server = config.servers[index].name.clone();
    let labels = [("server", server.clone())];
    let ck_key = config.keys().cdc_checkpoint(&server);
    let mysql = |e| classify_mysql(&server, &ck_key, e);
    let Start {
        checkpoint: start,
        ahead,
    } = start;
    let heartbeat = Duration::from_millis(config.cdc.heartbeat_ms.max(100));
    let server_id = config.cdc.server_id_base + index as u32;
    info!(gtid = %start.gtid, file = %start.file, pos = start.pos,
          inflight = ?start.inflight, "streaming");
    let mut binlog = open_binlog(facts.flavor, conn, server_id, &start, heartbeat)
        .await
        .map_err(mysql)?;
    info!(flavor = %facts.flavor, "binlog opened");
    metrics::gauge!(m::UP, &labels).set(1.0);
    metrics::gauge!(m::HEARTBEAT_TIMESTAMP, &labels).set(unix_seconds());
    ready.ready(&server);
    // Export the counters from the start, so a reader with nothing to
    // publish yet shows 0 instead of no series (a rate needs both ends).
    metrics::counter!(m::EVENTS_PUBLISHED, &labels).increment(0);
    metrics::counter!(m::BATCHES, &labels).increment(0);
    let _ = metrics::histogram!(m::PUBLISH_SECONDS);

    let (lag_tx, lag_rx) = watch::channel((start.file.clone(), start.pos));
    let lag_task = tokio::spawn(lag_bytes_loop(
        config.clone(),
        index,
        facts.flavor,
        lag_rx,
        shutdown.child_token(),
    ));
    let _stop_lag = AbortOnDrop(lag_task);

    let xa = XaBranches::load(
        publisher.client(),
        &config.keys(),
        &server,
        config.shard_count,
    )
    .await?;
    let mut decoder = Decoder::new(config.clone(), &server, &start.file);
    let mut cursor = Cursor::new(
        publisher,
        xa,
        &start,
        ahead,
        config.cdc.batch_rows,
        &server,
        lag_tx,
    );
    let mut actions = Vec::with_capacity(1024);
    let silence = heartbeat * 3 + Duration::from_secs(2);

    loop {
        // Drain what is already buffered; flush before waiting, so latency is
        // one step when idle and batches grow by themselves under load.
        let next = match binlog.next().now_or_never() {
            Some(n) => n,
            None => {
                // Under load the socket runs dry for a moment between
                // packets; lingering briefly lets a batch grow instead of
                // paying a Redis round trip per few rows. A batch that is
                // already old (or a lone event after idleness) goes at once.
                let mut got = None;
                if cursor.pending() && cursor.since_flush() < MAX_BATCH_AGE {
                    if let Ok(n) = tokio::time::timeout(LINGER, binlog.next()).await {
                        got = Some(n);
                    }
                }
                match got {
                    Some(n) => n,
                    None => {
                        if cursor.pending() {
                            cursor.flush().await?;
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => {
                                let _ = binlog.close().await;
                                cursor.quit().await;
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
            cursor.apply(action, decoder.file()).await?;
        }
    }
}

/// Now as Unix seconds, for the timestamp gauges.
pub(crate) fn unix_seconds() -> f64 {
    Timestamp::now().as_micros() as f64 / 1e6
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
