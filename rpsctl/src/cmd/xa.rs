//! `rpsctl xa`: the operators' fallback for prepared XA branches.
//!
//! A game server's XA transaction that was prepared and never decided (its
//! transaction manager died) keeps its rows out of the pipeline: the
//! cdc-reader holds them until the binlog shows `XA COMMIT` or `XA
//! ROLLBACK`, and the branch keeps its row locks on the server. These
//! commands show such branches (`XA RECOVER` of every server joined with
//! the reader's registry `Keys::cdc_xa_branches`), decide one as an
//! operator, or decide every branch older than a threshold by a policy.
//! Every decision is preceded by an audit record in the dead-letter stream
//! (origin `operator`, kind `xa_decision`), so `rpsctl dlq list` shows who
//! decided what, and what the branch held.

use anyhow::{anyhow, bail, Context};
use fred::clients::Client;
use fred::interfaces::{SetsInterface, StreamsInterface};
use mysql_async::{Conn, Opts};
use rps_core::deadletter::{DeadLetter, Origin};
use rps_core::xa::HeldBranch;
use rps_core::{Config, Keys, ServerConfig, Timestamp, Xid};
use rps_event_store::xa::{self as store_xa, XaDecision};
use rps_event_store::Flavor;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The dead-letter kind of an audit record.
pub const AUDIT_KIND: &str = "xa_decision";

/// How long a server may take to accept a connection: an unreachable one
/// must not stall the listing of the others.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Matches of a branch named in its audit record at most (the registry's
/// count is always there); a branch of a game server holds a handful.
const AUDIT_MATCHES_MAX: usize = 1000;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Every prepared branch of every server, with what the cdc-reader holds of it.
    List {
        /// Print JSON (for scripts) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Commit one prepared branch (audit record first, in the dead-letter stream).
    Commit(DecideArgs),
    /// Roll back one prepared branch (audit record first, in the dead-letter stream).
    Rollback(DecideArgs),
    /// Decide every branch prepared longer ago than a threshold, by one policy.
    Sweep(SweepArgs),
}

#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    /// The branch: as `xa list` shows it (`1-7831-` or `X'7831',X'',1`) or
    /// as the client wrote it (`'x1'`, `'gtrid','bqual',7`).
    xid: String,
    /// The server, needed when the xid is prepared on more than one.
    #[arg(long)]
    server: Option<String>,
    /// Who decided, for the audit record (default: $USER).
    #[arg(long)]
    by: Option<String>,
    /// Print what was decided as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Decide branches prepared longer ago than this (binlog time of the
    /// prepare): `30s`, `10m`, `2h`, `1d`.
    #[arg(long, value_parser = crate::cli::parse_duration)]
    older_than: Duration,
    /// Commit them.
    #[arg(long, conflicts_with = "rollback", required_unless_present_any = ["rollback", "dry_run"])]
    commit: bool,
    /// Roll them back.
    #[arg(long)]
    rollback: bool,
    /// Only list what would be decided.
    #[arg(long)]
    dry_run: bool,
    /// Who runs the sweep, for the audit records (default: $USER).
    #[arg(long)]
    by: Option<String>,
    /// Print the sweep's report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: Arc<Config>, command: Command) -> anyhow::Result<()> {
    let client = super::common::connect_redis(&config).await?;
    let keys = config.keys();
    let by = |b: Option<String>| {
        b.or_else(|| std::env::var("USER").ok())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "unknown".into())
    };
    match command {
        Command::List { json } => {
            let scans = scan(&config, &client, &keys).await?;
            let report = ListReport::build(&scans, Timestamp::now());
            for s in scans {
                s.close().await;
            }
            if json {
                crate::cli::print_json(&report)?;
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
        Command::Commit(a) => {
            let by = by(a.by.clone());
            decide_command(&config, &client, &keys, a, XaDecision::Commit, by).await
        }
        Command::Rollback(a) => {
            let by = by(a.by.clone());
            decide_command(&config, &client, &keys, a, XaDecision::Rollback, by).await
        }
        Command::Sweep(a) => {
            let by = by(a.by.clone());
            sweep(&config, &client, &keys, a, by).await
        }
    }
}

// ---------------------------------------------------------------------------
// Looking: XA RECOVER and the reader's registry, per server.

/// A connection to a server with the pipeline account.
struct ServerConn {
    conn: Conn,
    flavor: Flavor,
    user: String,
}

async fn open(server: &ServerConfig) -> anyhow::Result<ServerConn> {
    let opts = Opts::from(rps_event_store::server_opts(
        server,
        rps_event_store::Account::Pipeline,
    )?);
    let user = opts.user().unwrap_or("").to_string();
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts))
        .await
        .map_err(|_| anyhow!("cannot connect: no answer within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| anyhow!("cannot connect: {e}"))?;
    let flavor = Flavor::detect(&mut conn)
        .await
        .context("detecting the server's flavor")?;
    Ok(ServerConn { conn, flavor, user })
}

impl ServerConn {
    /// `XA RECOVER`, with MySQL's privilege refusal turned into what to grant.
    async fn recover(&mut self) -> anyhow::Result<Vec<Xid>> {
        store_xa::recover(&mut self.conn).await.map_err(|e| {
            if store_xa::is_missing_recover_privilege(&self.flavor, &e) {
                let privileges = self.flavor.xa_privileges().join(", ");
                anyhow!(
                    "XA RECOVER refused ({e}): on {} the account `{}` needs {privileges} to list \
                     the prepared branches of other sessions; `rpsctl init` grants it \
                     (or: GRANT {privileges} ON *.* TO '{}'@'%')",
                    self.flavor,
                    self.user,
                    self.user
                )
            } else {
                anyhow!(e).context("XA RECOVER")
            }
        })
    }

    async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

/// One registry entry: the reader's record, or why it does not parse.
type RegistryEntry = Result<HeldBranch, String>;

async fn registry(
    client: &Client,
    keys: &Keys,
    server: &str,
    shard_count: u16,
) -> anyhow::Result<BTreeMap<String, RegistryEntry>> {
    let raw = rps_core::redis_client::xa_registry(client, keys, server, shard_count)
        .await
        .with_context(|| format!("reading the cdc-reader's XA registry of `{server}`"))?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, HeldBranch::from_json(&v).map_err(|e| e.to_string())))
        .collect())
}

/// A server as `xa` saw it.
struct ServerScan {
    name: String,
    /// The open connection and `XA RECOVER`'s answer, or why there is none.
    prepared: Result<(ServerConn, Vec<Xid>), String>,
    registry: BTreeMap<String, RegistryEntry>,
}

impl ServerScan {
    async fn close(self) {
        if let Ok((c, _)) = self.prepared {
            c.close().await;
        }
    }

    fn flavor(&self) -> Option<Flavor> {
        self.prepared.as_ref().ok().map(|(c, _)| c.flavor)
    }

    fn views(&self, now: Timestamp) -> Vec<BranchView> {
        join(
            &self.name,
            self.prepared.as_ref().ok().map(|(_, x)| x.as_slice()),
            &self.registry,
            now,
        )
    }
}

async fn scan_server(
    client: &Client,
    keys: &Keys,
    server: &ServerConfig,
    shard_count: u16,
) -> anyhow::Result<ServerScan> {
    // The registry first, then XA RECOVER: a branch the registry has and
    // XA RECOVER lacks was then surely decided (a branch prepared in between
    // shows up as "not seen", which it was at the time of the read).
    let registry = registry(client, keys, &server.name, shard_count).await?;
    let prepared = async {
        let mut c = open(server).await?;
        match c.recover().await {
            Ok(x) => Ok((c, x)),
            Err(e) => {
                c.close().await;
                Err(e)
            }
        }
    }
    .await
    .map_err(|e: anyhow::Error| format!("{e:#}"));
    Ok(ServerScan {
        name: server.name.clone(),
        prepared,
        registry,
    })
}

async fn scan(config: &Config, client: &Client, keys: &Keys) -> anyhow::Result<Vec<ServerScan>> {
    let mut out = Vec::with_capacity(config.servers.len());
    for s in &config.servers {
        out.push(scan_server(client, keys, s, config.shard_count).await?);
    }
    Ok(out)
}

/// Where a branch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Prepared on the server; the reader holds its rows.
    Held,
    /// Prepared on the server, not in the reader's registry (prepared
    /// before the reader started or beyond where it has read, or on a
    /// database it does not read).
    NotSeen,
    /// Decided on the server; the reader has not read the decision yet.
    Decided,
    /// In the registry, but the server could not be asked.
    Unknown,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Held => "held",
            State::NotSeen => "not seen",
            State::Decided => "decided",
            State::Unknown => "unknown",
        }
    }
}

/// One branch, for `xa list` (field names are the JSON interface).
#[derive(Debug, Clone, Serialize)]
pub struct BranchView {
    pub server: String,
    pub state: State,
    /// SQL form, valid after `XA COMMIT`.
    pub xid: String,
    /// `Xid::key`, the name in the registry and in Redis keys.
    pub xid_key: String,
    /// The gtrid as text, when printable.
    pub gtrid_text: Option<String>,
    /// Binlog time of the prepare (micros), from the registry.
    pub prepared_ts: Option<i64>,
    pub prepared_at: Option<String>,
    /// When the reader saw the prepare (micros, reader's clock).
    pub seen_ts: Option<i64>,
    pub seen_at: Option<String>,
    /// Seconds since the prepare (since the reader saw it if the registry
    /// has no binlog time); `null` when not in the registry.
    pub age_seconds: Option<f64>,
    pub gtid: Option<String>,
    pub file: Option<String>,
    pub pos: Option<u64>,
    /// Held rows by shard.
    pub shards: BTreeMap<u16, u64>,
    pub rows: Option<u64>,
    pub matches: Option<u64>,
    /// Held dead letters.
    pub dead: Option<u64>,
    /// The registry value did not parse (shown raw fields are missing).
    pub registry_error: Option<String>,
}

impl BranchView {
    fn holds(&self) -> String {
        match (self.rows, self.matches, self.dead) {
            (Some(r), Some(m), Some(d)) => holds_text(r, &self.shards, m, d),
            _ => "-".into(),
        }
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `3 rows (shard 0: 2, shard 2: 1), 2 matches, 0 dead letters`.
fn holds_text(rows: u64, shards: &BTreeMap<u16, u64>, matches: u64, dead: u64) -> String {
    let per: Vec<String> = shards
        .iter()
        .map(|(s, n)| format!("shard {s}: {n}"))
        .collect();
    let per = if per.is_empty() {
        String::new()
    } else {
        format!(" ({})", per.join(", "))
    };
    format!(
        "{}{per}, {}, {}",
        plural(rows, "row", "rows"),
        plural(matches, "match", "matches"),
        plural(dead, "dead letter", "dead letters")
    )
}

/// Age of a registry entry, from the prepare's binlog time, else from when
/// the reader saw it.
fn age_of(h: &HeldBranch, now: Timestamp) -> Option<f64> {
    let since = [h.prepared_ts, h.seen_ts].into_iter().find(|t| *t > 0)?;
    Some((now.as_micros() - since).max(0) as f64 / 1e6)
}

/// Joins `XA RECOVER` (`None`: the server could not be asked) with the
/// reader's registry of one server. Oldest first, then by key.
pub fn join(
    server: &str,
    prepared: Option<&[Xid]>,
    registry: &BTreeMap<String, RegistryEntry>,
    now: Timestamp,
) -> Vec<BranchView> {
    let blank = |state, xid: &Xid| BranchView {
        server: server.to_string(),
        state,
        xid: xid.to_string(),
        xid_key: xid.key(),
        gtrid_text: xid.gtrid_text().map(str::to_string),
        prepared_ts: None,
        prepared_at: None,
        seen_ts: None,
        seen_at: None,
        age_seconds: None,
        gtid: None,
        file: None,
        pos: None,
        shards: BTreeMap::new(),
        rows: None,
        matches: None,
        dead: None,
        registry_error: None,
    };
    let with_entry = |mut v: BranchView, entry: &RegistryEntry| {
        match entry {
            Ok(h) => {
                let ts = |t: i64| (t > 0).then_some(t);
                v.prepared_ts = ts(h.prepared_ts);
                v.prepared_at = v.prepared_ts.map(|t| Timestamp(t).to_rfc3339());
                v.seen_ts = ts(h.seen_ts);
                v.seen_at = v.seen_ts.map(|t| Timestamp(t).to_rfc3339());
                v.age_seconds = age_of(h, now);
                v.gtid = Some(h.gtid.clone()).filter(|g| !g.is_empty());
                v.file = Some(h.file.clone()).filter(|f| !f.is_empty());
                v.pos = v.file.as_ref().map(|_| h.pos);
                v.shards = h.shards.clone();
                v.rows = Some(h.rows());
                v.matches = Some(h.matches);
                v.dead = Some(h.dead);
            }
            Err(e) => v.registry_error = Some(e.clone()),
        }
        v
    };
    let mut out = Vec::new();
    let mut listed = std::collections::BTreeSet::new();
    for xid in prepared.unwrap_or_default() {
        let key = xid.key();
        let v = match registry.get(&key) {
            Some(entry) => with_entry(blank(State::Held, xid), entry),
            None => blank(State::NotSeen, xid),
        };
        listed.insert(key);
        out.push(v);
    }
    for (key, entry) in registry {
        if listed.contains(key) {
            continue;
        }
        let state = if prepared.is_some() {
            State::Decided
        } else {
            State::Unknown
        };
        // The field is the key; the value's SQL form serves when a field was
        // written in another spelling.
        let xid = Xid::from_key(key).ok().or_else(|| {
            entry
                .as_ref()
                .ok()
                .and_then(|h| Xid::parse_sql(&h.xid).ok())
        });
        let v = match xid {
            Some(x) => {
                let mut v = blank(state, &x);
                v.xid_key = key.clone();
                v
            }
            None => {
                let mut v = blank(
                    state,
                    &Xid {
                        format_id: 0,
                        gtrid: Vec::new(),
                        bqual: Vec::new(),
                    },
                );
                v.xid = entry.as_ref().map(|h| h.xid.clone()).unwrap_or_default();
                v.xid_key = key.clone();
                v.gtrid_text = None;
                v
            }
        };
        out.push(with_entry(v, entry));
    }
    out.sort_by(|a, b| {
        b.age_seconds
            .unwrap_or(-1.0)
            .total_cmp(&a.age_seconds.unwrap_or(-1.0))
            .then_with(|| a.xid_key.cmp(&b.xid_key))
    });
    out
}

/// One server's line of `xa list --json`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    pub server: String,
    pub flavor: Option<String>,
    pub reachable: bool,
    /// Why the server's branches could not be listed.
    pub error: Option<String>,
    /// Branches `XA RECOVER` lists.
    pub prepared: usize,
    /// Entries of the reader's registry.
    pub registry: usize,
}

/// `xa list`: every server, and every branch of all of them.
#[derive(Debug, Clone, Serialize)]
pub struct ListReport {
    pub at: String,
    pub servers: Vec<ServerReport>,
    pub branches: Vec<BranchView>,
}

impl ListReport {
    fn build(scans: &[ServerScan], now: Timestamp) -> ListReport {
        let servers = scans
            .iter()
            .map(|s| ServerReport {
                server: s.name.clone(),
                flavor: s.flavor().map(|f| f.to_string()),
                reachable: s.prepared.is_ok(),
                error: s.prepared.as_ref().err().cloned(),
                prepared: s.prepared.as_ref().map_or(0, |(_, x)| x.len()),
                registry: s.registry.len(),
            })
            .collect();
        let branches = scans.iter().flat_map(|s| s.views(now)).collect();
        ListReport {
            at: now.to_rfc3339(),
            servers,
            branches,
        }
    }

    /// The human table: one line per branch, then unreachable servers, a
    /// summary, and what the states mean.
    fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let rows: Vec<Vec<String>> = self
            .branches
            .iter()
            .map(|b| {
                vec![
                    b.server.clone(),
                    b.state.as_str().to_string(),
                    b.age_seconds.map_or("-".into(), age_text),
                    b.xid_key.clone(),
                    match &b.gtrid_text {
                        Some(t) => format!("{} ('{t}')", b.xid),
                        None => b.xid.clone(),
                    },
                    b.prepared_ts.map_or("-".into(), utc),
                    b.seen_ts.map_or("-".into(), utc),
                    o(&b.gtid),
                    match (&b.file, b.pos) {
                        (Some(f), Some(p)) => format!("{f}:{p}"),
                        _ => "-".into(),
                    },
                    match &b.registry_error {
                        Some(e) => format!("registry entry unreadable: {e}"),
                        None => b.holds(),
                    },
                ]
            })
            .collect();
        if !rows.is_empty() {
            s.push_str(&table(
                &[
                    "SERVER",
                    "STATE",
                    "AGE",
                    "XID KEY",
                    "XID",
                    "PREPARED (UTC)",
                    "SEEN (UTC)",
                    "GTID",
                    "BINLOG",
                    "HOLDS",
                ],
                &rows,
            ));
        }
        for v in &self.servers {
            if let Some(e) = &v.error {
                let _ = writeln!(s, "{}: cannot list its prepared branches: {e}", v.server);
            }
        }
        let count = |st: State| self.branches.iter().filter(|b| b.state == st).count();
        let parts: Vec<String> = [
            (State::Held, "held by the reader"),
            (State::NotSeen, "not seen by the reader"),
            (
                State::Decided,
                "decided, the reader has not read the decision yet",
            ),
            (State::Unknown, "unknown (server unreachable)"),
        ]
        .into_iter()
        .filter_map(|(st, what)| {
            let n = count(st);
            (n > 0).then(|| format!("{n} {what}"))
        })
        .collect();
        if parts.is_empty() {
            let _ = writeln!(s, "no prepared XA branches");
        } else {
            let _ = writeln!(
                s,
                "{}: {}",
                plural(self.branches.len() as u64, "branch", "branches"),
                parts.join(", ")
            );
        }
        if count(State::NotSeen) > 0 {
            let _ = writeln!(
                s,
                "not seen: prepared on the server but not in the reader's registry (prepared before \
                 the reader started or beyond where it has read, or on a database it does not \
                 read); its age is unknown"
            );
        }
        if count(State::Decided) > 0 {
            let _ = writeln!(
                s,
                "decided: no longer prepared on the server; the reader publishes (commit) or drops \
                 (rollback) the held rows when it reads the decision"
            );
        }
        s
    }
}

/// Columns padded to their widest cell, two spaces apart; the last one unpadded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut l = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `2026-11-27 07:41:36` (UTC) of a micros timestamp.
fn utc(micros: i64) -> String {
    Timestamp(micros)
        .to_naive()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A threshold as typed: `10m`, `1h30m`, `1d`, `45s`.
pub fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let parts: String = [
        (s / 86_400, "d"),
        (s % 86_400 / 3600, "h"),
        (s % 3600 / 60, "m"),
        (s % 60, "s"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, u)| format!("{n}{u}"))
    .collect();
    parts
}

/// `45s`, `12m03s`, `2h05m`, `3d04h`.
pub fn age_text(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

// ---------------------------------------------------------------------------
// Deciding: the audit record, then XA COMMIT / XA ROLLBACK.

/// Who or what decides, for the audit record's reason and payload.
struct Decider {
    by: String,
    /// The command line that decided (`rpsctl xa commit`, `rpsctl xa sweep
    /// --older-than 10m --rollback`).
    via: String,
    /// The sweep's policy, in words; `None` for an operator's own decision.
    policy: Option<String>,
}

fn verb(d: XaDecision) -> &'static str {
    match d {
        XaDecision::Commit => "XA COMMIT",
        XaDecision::Rollback => "XA ROLLBACK",
    }
}

fn done_word(d: XaDecision) -> &'static str {
    match d {
        XaDecision::Commit => "committed",
        XaDecision::Rollback => "rolled back",
    }
}

/// What happened to the held rows once the reader reads the decision.
fn reader_consequence(d: XaDecision) -> &'static str {
    match d {
        XaDecision::Commit => "the reader publishes the held rows when it reads the decision",
        XaDecision::Rollback => "the reader drops the held rows when it reads the decision",
    }
}

/// The audit record of one decision, written before it is made.
#[allow(clippy::too_many_arguments)]
fn audit_record(
    server: &str,
    xid: &Xid,
    decision: XaDecision,
    held: Option<&RegistryEntry>,
    matches: &[String],
    matches_total: u64,
    who: &Decider,
    now: Timestamp,
) -> DeadLetter {
    let h = held.and_then(|e| e.as_ref().ok());
    let holds = match held {
        Some(Ok(h)) => format!(
            "it held {}",
            holds_text(h.rows(), &h.shards, h.matches, h.dead)
        ),
        Some(Err(e)) => format!("its registry entry does not parse ({e})"),
        None => "it was not in the reader's registry (not seen by the reader)".into(),
    };
    let decider = match &who.policy {
        Some(p) => format!("sweep policy `{p}` ({}, run by {})", who.via, who.by),
        None => format!("operator {} ({})", who.by, who.via),
    };
    let age = h.and_then(|h| age_of(h, now));
    let reason = format!(
        "{} {xid} on {server} decided by {decider}{}; {holds}",
        verb(decision),
        age.map(|a| format!(", prepared {} ago", age_text(a)))
            .unwrap_or_default()
    );
    let payload = serde_json::json!({
        "decision": decision.as_str(),
        "xid": xid.to_string(),
        "xid_key": xid.key(),
        "server": server,
        "by": who.by,
        "via": who.via,
        "policy": who.policy,
        "age_seconds": age,
        "registry": h,
        "registry_error": held.and_then(|e| e.as_ref().err()),
        "matches": matches,
        "matches_total": matches_total,
    });
    let only_match = match matches {
        [m] => rps_core::keys::parse_deadline_member(m),
        _ => None,
    };
    DeadLetter {
        origin: Some(Origin::Operator),
        kind: AUDIT_KIND.into(),
        reason,
        server: server.to_string(),
        file: h.map(|h| h.file.clone()).unwrap_or_default(),
        pos: h.map_or(0, |h| h.pos),
        gtid: h.map(|h| h.gtid.clone()).unwrap_or_default(),
        // The shard (and match) columns of `dlq list` when the branch
        // touched exactly one.
        shard: h
            .filter(|h| h.shards.len() == 1)
            .and_then(|h| h.shards.keys().next().copied())
            .or(only_match.map(|(s, _)| s)),
        match_id: only_match.map(|(_, m)| m),
        payload: payload.to_string(),
        at: now,
        ..Default::default()
    }
}

/// The matches a branch holds rows of (at most [`AUDIT_MATCHES_MAX`]) and
/// how many there are, from the match set of every shard it holds rows of.
async fn held_matches(
    client: &Client,
    keys: &Keys,
    server: &str,
    key: &str,
    held: Option<&HeldBranch>,
) -> anyhow::Result<(Vec<String>, u64)> {
    let mut members = Vec::new();
    let mut total = 0u64;
    for &shard in held.map(|h| h.shards.keys()).into_iter().flatten() {
        let set = keys.cdc_xa_matches(server, shard, key);
        let n: u64 = client.scard(&set).await?;
        total += n;
        let want = AUDIT_MATCHES_MAX.saturating_sub(members.len());
        let part: Vec<String> = if n as usize <= want {
            client.smembers(&set).await?
        } else {
            client.srandmember(&set, Some(want)).await?
        };
        members.extend(part);
    }
    members.sort();
    Ok((members, total))
}

/// How one decision ended.
enum Outcome {
    Decided {
        audit_id: String,
    },
    /// `XA COMMIT` answered `ER_XA_RBROLLBACK`: the branch is gone, rolled
    /// back; the audit record was replaced by one that says so.
    RolledBackInstead {
        audit_id: String,
        message: String,
    },
    /// `ER_XAER_NOTA` although `XA RECOVER` listed the branch a moment ago.
    NotDecided {
        why: String,
    },
}

/// Writes the audit record, then decides. A decision that certainly did
/// not happen removes its audit record again, so the stream never claims
/// a decision nobody made; an error with unknown outcome keeps it.
#[allow(clippy::too_many_arguments)]
async fn decide_branch(
    client: &Client,
    keys: &Keys,
    sc: &mut ServerConn,
    server: &str,
    xid: &Xid,
    held: Option<&RegistryEntry>,
    decision: XaDecision,
    who: &Decider,
) -> anyhow::Result<Outcome> {
    let branch = held.and_then(|e| e.as_ref().ok());
    let (matches, matches_total) = held_matches(client, keys, server, &xid.key(), branch)
        .await
        .context("reading the matches the branch holds")?;
    let record = audit_record(
        server,
        xid,
        decision,
        held,
        &matches,
        matches_total,
        who,
        Timestamp::now(),
    );
    let pairs: Vec<(String, String)> = record
        .to_pairs()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let audit_id: String = client
        .xadd(keys.deadletter(), false, None, "*", pairs)
        .await
        .context("writing the audit record to the dead-letter stream; nothing was decided")?;
    match store_xa::decide(&mut sc.conn, xid, decision).await {
        Ok(true) => {
            tracing::info!(
                server,
                xid = %xid,
                decision = decision.as_str(),
                by = who.by.as_str(),
                via = who.via.as_str(),
                audit_id = audit_id.as_str(),
                "XA branch decided"
            );
            Ok(Outcome::Decided { audit_id })
        }
        Err(mysql_async::Error::Server(e)) if e.code == store_xa::ER_XA_RBROLLBACK => {
            tracing::info!(
                server,
                xid = %xid,
                decision = decision.as_str(),
                code = e.code,
                message = e.message.as_str(),
                "XA branch rolled back by the server"
            );
            if decision == XaDecision::Rollback {
                // Asked for a rollback, got one: the record stands.
                return Ok(Outcome::Decided { audit_id });
            }
            // The record must not claim a commit: the corrected one is
            // written before the first is removed, so one always exists.
            let mut corrected = record;
            corrected.reason = format!(
                "{}; the server rolled the branch back instead ({} {})",
                corrected.reason, e.code, e.message
            );
            let mut payload: serde_json::Value =
                serde_json::from_str(&corrected.payload).unwrap_or_default();
            payload["outcome"] = "rolled_back_by_server".into();
            corrected.payload = payload.to_string();
            let pairs: Vec<(String, String)> = corrected
                .to_pairs()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let new_id: String = client
                .xadd(keys.deadletter(), false, None, "*", pairs)
                .await
                .with_context(|| {
                    format!(
                        "the server rolled {xid} back instead of committing it; correcting \
                         audit record {audit_id}"
                    )
                })?;
            let _: i64 = client
                .xdel(keys.deadletter(), &audit_id)
                .await
                .context("removing the superseded audit record")?;
            Ok(Outcome::RolledBackInstead {
                audit_id: new_id,
                message: format!("{} {}", e.code, e.message),
            })
        }
        Ok(false) => {
            let _: i64 = client
                .xdel(keys.deadletter(), &audit_id)
                .await
                .context("removing the audit record of a decision that did not happen")?;
            let still = sc.recover().await.map(|x| x.contains(xid)).unwrap_or(false);
            let why = if still {
                sc.flavor.unknown_xid_but_listed().to_string()
            } else {
                "it is no longer prepared: decided by someone else meanwhile".to_string()
            };
            Ok(Outcome::NotDecided { why })
        }
        Err(e) => Err(anyhow!(e).context(format!(
            "{} {xid} on {server} failed; its outcome is unknown, see `rpsctl xa list` \
             (audit record {audit_id} kept)",
            verb(decision)
        ))),
    }
}

async fn decide_command(
    config: &Config,
    client: &Client,
    keys: &Keys,
    args: DecideArgs,
    decision: XaDecision,
    by: String,
) -> anyhow::Result<()> {
    let xid = Xid::parse_any(&args.xid).map_err(|e| {
        // A bare word is not guessed to be a gtrid: `1-61-` is a key.
        crate::failure::usage(format!(
            "{e}; give the key `xa list` shows, or the xid in SQL, quoted for the shell: \
             \"'gtrid'\" or \"'gtrid','bqual',fmt\""
        ))
    })?;
    let servers: Vec<&ServerConfig> = match &args.server {
        Some(name) => vec![config.server(name).ok_or_else(|| {
            let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
            crate::failure::usage(format!(
                "no server `{name}` in the topology (servers: {})",
                names.join(", ")
            ))
        })?],
        None => config.servers.iter().collect(),
    };
    let mut found: Vec<(&ServerConfig, ServerConn)> = Vec::new();
    let mut unreachable = Vec::new();
    for s in &servers {
        let listed = async {
            let mut c = open(s).await?;
            match c.recover().await {
                Ok(x) => Ok((c, x.contains(&xid))),
                Err(e) => {
                    c.close().await;
                    Err(e)
                }
            }
        }
        .await;
        match listed {
            Ok((c, true)) => found.push((s, c)),
            Ok((c, false)) => c.close().await,
            Err(e) => unreachable.push(format!("{}: {e:#}", s.name)),
        }
    }
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|(s, _)| s.name.as_str()).collect();
        for (_, c) in found {
            c.close().await;
        }
        return Err(crate::failure::usage(format!(
            "{xid} is prepared on {}; name one with --server",
            names.join(" and ")
        )));
    }
    let Some((server, mut sc)) = found.pop() else {
        let mut msg = format!(
            "no prepared XA branch {xid} ({}) on {}",
            xid.key(),
            if args.server.is_some() {
                format!("server {}", servers[0].name)
            } else {
                "any server".into()
            }
        );
        // The reader's registry tells whether it was decided and not read yet.
        for s in &servers {
            let held =
                rps_core::redis_client::xa_registry(client, keys, &s.name, config.shard_count)
                    .await
                    .is_ok_and(|r| r.contains_key(&xid.key()));
            if held {
                msg.push_str(&format!(
                    "; the reader's registry of {} still has it: decided, the reader has not \
                     read the decision yet",
                    s.name
                ));
            }
        }
        if !unreachable.is_empty() {
            msg.push_str(&format!(
                "; not asked (unreachable): {}",
                unreachable.join("; ")
            ));
        }
        bail!(msg);
    };
    let held = registry(client, keys, &server.name, config.shard_count)
        .await?
        .remove(&xid.key());
    let who = Decider {
        by,
        via: format!("rpsctl xa {}", decision.as_str()),
        policy: None,
    };
    let result = decide_branch(
        client,
        keys,
        &mut sc,
        &server.name,
        &xid,
        held.as_ref(),
        decision,
        &who,
    )
    .await;
    sc.close().await;
    match result? {
        Outcome::Decided { audit_id } => {
            if args.json {
                return crate::cli::print_json(&DecisionReport {
                    server: &server.name,
                    xid: xid.to_string(),
                    xid_key: xid.key(),
                    decision: decision.as_str(),
                    by: &who.by,
                    audit_id: &audit_id,
                    audit_stream: keys.deadletter(),
                    registry: held.as_ref().and_then(|h| h.as_ref().ok()),
                    registry_error: held.as_ref().and_then(|h| h.as_ref().err()),
                });
            }
            let holds = match &held {
                Some(Ok(h)) => format!(
                    "; it held {}; {}",
                    holds_text(h.rows(), &h.shards, h.matches, h.dead),
                    reader_consequence(decision)
                ),
                Some(Err(_)) => "; its registry entry does not parse".into(),
                None => "; it was not in the reader's registry".into(),
            };
            println!(
                "{}: {} {xid} ({}): {}{holds}",
                server.name,
                verb(decision),
                xid.key(),
                done_word(decision)
            );
            println!("audit record {audit_id} in {}", keys.deadletter());
            Ok(())
        }
        Outcome::RolledBackInstead { audit_id, message } => bail!(
            "{}: {} {xid} ({}): not committed, the server rolled the branch back instead \
             ({message}; MariaDB does so for a branch that changed nothing); audit record \
             {audit_id} says so",
            server.name,
            verb(decision),
            xid.key()
        ),
        Outcome::NotDecided { why } => bail!(
            "{}: {} {xid} ({}) did not happen: {why}",
            server.name,
            verb(decision),
            xid.key()
        ),
    }
}

/// `xa commit|rollback --json`: what was decided, and where its audit record is.
#[derive(Debug, Serialize)]
struct DecisionReport<'a> {
    server: &'a str,
    xid: String,
    xid_key: String,
    /// `commit` or `rollback`.
    decision: &'a str,
    by: &'a str,
    audit_id: &'a str,
    audit_stream: String,
    /// The reader's registry entry of the branch, `null` when it had none.
    registry: Option<&'a HeldBranch>,
    registry_error: Option<&'a String>,
}

/// One line of the sweep's table.
#[derive(Debug, Serialize)]
struct SweepLine {
    server: String,
    #[serde(rename = "xid_key")]
    key: String,
    xid: String,
    #[serde(rename = "age_seconds")]
    age: f64,
    holds: String,
    /// `would_decide`, `decided`, `rolled_back_by_server`, `not_decided` or `failed`.
    outcome: &'static str,
    audit_id: Option<String>,
    /// The table's RESULT column.
    result: String,
}

/// `xa sweep --json`.
#[derive(Debug, Serialize)]
struct SweepReport {
    policy: String,
    dry_run: bool,
    older_than_seconds: f64,
    branches: Vec<SweepLine>,
    skipped: Vec<String>,
    older: usize,
    decided: usize,
    failed: usize,
    younger: usize,
}

async fn sweep(
    config: &Config,
    client: &Client,
    keys: &Keys,
    args: SweepArgs,
    by: String,
) -> anyhow::Result<()> {
    let decision = match (args.commit, args.rollback) {
        (true, false) => Some(XaDecision::Commit),
        (false, true) => Some(XaDecision::Rollback),
        // clap enforces one of them unless --dry-run.
        _ => None,
    };
    if decision.is_none() && !args.dry_run {
        return Err(crate::failure::usage(
            "sweep needs a policy: --commit or --rollback (or --dry-run to only list)",
        ));
    }
    let threshold = args.older_than.as_secs_f64();
    let threshold_text = duration_text(args.older_than);
    let policy = format!(
        "{} branches prepared more than {threshold_text} ago",
        decision.map_or("decide", |d| d.as_str())
    );
    let who = Decider {
        by,
        via: format!(
            "rpsctl xa sweep --older-than {threshold_text}{}",
            decision.map_or(String::new(), |d| format!(" --{}", d.as_str()))
        ),
        policy: Some(policy.clone()),
    };
    if !args.json {
        println!(
            "policy: {policy}{}",
            if args.dry_run { " (dry run)" } else { "" }
        );
    }

    let now = Timestamp::now();
    let mut scans = scan(config, client, keys).await?;
    let mut lines = Vec::new();
    let mut skipped = Vec::new();
    let (mut younger, mut decided, mut failed) = (0usize, 0usize, 0usize);
    for s in &mut scans {
        let views = s.views(now);
        let (sc, _) = match &mut s.prepared {
            Ok(p) => p,
            Err(e) => {
                skipped.push(format!(
                    "{}: cannot list its prepared branches: {e}",
                    s.name
                ));
                continue;
            }
        };
        for v in views {
            match v.state {
                State::NotSeen => {
                    skipped.push(format!(
                        "{} {} {}: not seen by the reader, its age is unknown (decide it with \
                         `rpsctl xa commit|rollback`)",
                        v.server, v.xid_key, v.xid
                    ));
                    continue;
                }
                State::Decided | State::Unknown => continue,
                State::Held => {}
            }
            let Some(age) = v.age_seconds else {
                skipped.push(format!(
                    "{} {} {}: its registry entry has no readable time{}",
                    v.server,
                    v.xid_key,
                    v.xid,
                    v.registry_error
                        .as_ref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ));
                continue;
            };
            if age <= threshold {
                younger += 1;
                continue;
            }
            let mut line = SweepLine {
                server: v.server.clone(),
                key: v.xid_key.clone(),
                xid: v.xid.clone(),
                age,
                holds: v.holds(),
                outcome: "would_decide",
                audit_id: None,
                result: String::new(),
            };
            let Some(decision) = decision.filter(|_| !args.dry_run) else {
                line.result = match decision {
                    Some(d) => format!("would be {}", done_word(d)),
                    None => "would be decided".into(),
                };
                lines.push(line);
                continue;
            };
            let xid = match Xid::from_key(&v.xid_key) {
                Ok(x) => x,
                Err(e) => {
                    failed += 1;
                    line.outcome = "failed";
                    line.result = format!("failed: {e}");
                    lines.push(line);
                    continue;
                }
            };
            let held = s.registry.get(&v.xid_key);
            let (outcome, audit_id, result) =
                match decide_branch(client, keys, sc, &s.name, &xid, held, decision, &who).await {
                    Ok(Outcome::Decided { audit_id }) => {
                        decided += 1;
                        let r = format!("{} (audit {audit_id})", done_word(decision));
                        ("decided", Some(audit_id), r)
                    }
                    Ok(Outcome::RolledBackInstead { audit_id, message }) => {
                        failed += 1;
                        let r = format!(
                            "rolled back by the server instead ({message}; audit {audit_id})"
                        );
                        ("rolled_back_by_server", Some(audit_id), r)
                    }
                    Ok(Outcome::NotDecided { why }) => {
                        failed += 1;
                        ("not_decided", None, format!("not decided: {why}"))
                    }
                    Err(e) => {
                        failed += 1;
                        ("failed", None, format!("failed: {e:#}"))
                    }
                };
            line.outcome = outcome;
            line.audit_id = audit_id;
            line.result = result;
            lines.push(line);
        }
    }
    for s in scans {
        s.close().await;
    }

    let older = lines.len();
    if args.json {
        crate::cli::print_json(&SweepReport {
            policy,
            dry_run: args.dry_run,
            older_than_seconds: threshold,
            branches: lines,
            skipped,
            older,
            decided,
            failed,
            younger,
        })?;
    } else {
        print_sweep(&lines, &skipped);
        let summary = if args.dry_run {
            format!("{older} older than {threshold_text} would be decided")
        } else {
            format!(
                "{older} older than {threshold_text}: {decided} {}, {failed} failed",
                decision.map_or("decided", done_word)
            )
        };
        println!("{summary}; {younger} younger; {} skipped", skipped.len());
    }
    if failed > 0 {
        bail!("{failed} of {older} branches were not decided (see above)");
    }
    if args.dry_run && older > 0 {
        return Err(crate::failure::differences(format!(
            "dry run: {older} branches would be decided"
        )));
    }
    Ok(())
}

/// The sweep's table and its skipped branches.
fn print_sweep(lines: &[SweepLine], skipped: &[String]) {
    if !lines.is_empty() {
        let rows: Vec<Vec<String>> = lines
            .iter()
            .map(|l| {
                vec![
                    l.server.clone(),
                    l.key.clone(),
                    l.xid.clone(),
                    age_text(l.age),
                    l.holds.clone(),
                    l.result.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["SERVER", "XID KEY", "XID", "AGE", "HOLDS", "RESULT"],
                &rows
            )
        );
    }
    for s in skipped {
        println!("skipped: {s}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(prepared_ts: i64, shards: &[(u16, u64)]) -> HeldBranch {
        HeldBranch {
            xid: String::new(),
            gtid: "0-1-5".into(),
            file: "binlog.000003".into(),
            pos: 1234,
            prepared_ts,
            seen_ts: prepared_ts + 1_000_000,
            shards: shards.iter().copied().collect(),
            dead: 1,
            matches: 2,
            ..Default::default()
        }
    }

    #[test]
    fn ages_and_durations_print() {
        assert_eq!(duration_text(Duration::from_secs(600)), "10m");
        assert_eq!(duration_text(Duration::from_secs(5400)), "1h30m");
        assert_eq!(duration_text(Duration::from_secs(86_400)), "1d");
        assert_eq!(duration_text(Duration::from_millis(500)), "500ms");
        assert_eq!(age_text(45.9), "45s");
        assert_eq!(age_text(723.0), "12m03s");
        assert_eq!(age_text(7500.0), "2h05m");
        assert_eq!(age_text(3.0 * 86_400.0 + 4.0 * 3600.0), "3d04h");
    }

    #[test]
    fn join_tells_held_unseen_decided_unknown() {
        let now = Timestamp(10_000_000_000);
        let a = Xid::parse_sql("'a'").unwrap();
        let b = Xid::parse_sql("'b','q',7").unwrap();
        let c = Xid::parse_sql("'c'").unwrap();
        let mut reg = BTreeMap::new();
        reg.insert(a.key(), Ok(held(now.0 - 600_000_000, &[(2, 3)])));
        reg.insert(c.key(), Ok(held(now.0 - 60_000_000, &[])));
        let v = join("s1", Some(&[a.clone(), b.clone()]), &reg, now);
        assert_eq!(v.len(), 3);
        // Oldest first; the one without age last.
        assert_eq!((v[0].state, v[0].xid_key.as_str()), (State::Held, "1-61-"));
        assert_eq!(v[0].age_seconds, Some(600.0));
        assert_eq!(v[0].rows, Some(3));
        assert_eq!(v[0].file.as_deref(), Some("binlog.000003"));
        assert_eq!(v[0].gtrid_text.as_deref(), Some("a"));
        assert_eq!(v[1].state, State::Decided);
        assert_eq!(v[1].xid, "X'63',X'',1");
        assert_eq!((v[2].state, v[2].age_seconds), (State::NotSeen, None));
        assert_eq!(v[2].xid, b.to_string());
        assert_eq!(
            v[0].holds(),
            "3 rows (shard 2: 3), 2 matches, 1 dead letter"
        );
        assert_eq!(v[2].holds(), "-");

        let v = join("s1", None, &reg, now);
        assert!(v.iter().all(|b| b.state == State::Unknown), "{v:?}");

        let mut bad = BTreeMap::new();
        bad.insert(a.key(), Err("expected value".to_string()));
        let v = join("s1", Some(std::slice::from_ref(&a)), &bad, now);
        assert_eq!(v[0].state, State::Held);
        assert_eq!(v[0].registry_error.as_deref(), Some("expected value"));
        assert_eq!(v[0].age_seconds, None);
    }

    #[test]
    fn audit_record_names_decider_and_holdings() {
        let now = Timestamp(10_000_000_000);
        let x = Xid::parse_sql("'x1'").unwrap();
        let h: RegistryEntry = Ok(held(now.0 - 3_600_000_000, &[(3, 2)]));
        let who = Decider {
            by: "alice".into(),
            via: "rpsctl xa sweep --older-than 10m --rollback".into(),
            policy: Some("rollback branches prepared more than 10m ago".into()),
        };
        let d = audit_record(
            "mysql-a",
            &x,
            XaDecision::Rollback,
            Some(&h),
            &["3:991".to_string()],
            1,
            &who,
            now,
        );
        assert_eq!(d.origin, Some(Origin::Operator));
        assert_eq!(d.kind, AUDIT_KIND);
        assert_eq!((d.shard, d.match_id), (Some(3), Some(991)));
        assert_eq!((d.file.as_str(), d.pos), ("binlog.000003", 1234));
        for want in [
            "XA ROLLBACK X'7831',X'',1 on mysql-a",
            "sweep policy",
            "alice",
            "prepared 1h00m ago",
            "2 rows (shard 3: 2)",
        ] {
            assert!(d.reason.contains(want), "{want:?} not in {}", d.reason);
        }
        let p: serde_json::Value = serde_json::from_str(&d.payload).unwrap();
        assert_eq!(p["decision"], "rollback");
        assert_eq!(p["registry"]["shards"]["3"], 2);
        assert_eq!(p["matches"][0], "3:991");

        let op = Decider {
            by: "bob".into(),
            via: "rpsctl xa commit".into(),
            policy: None,
        };
        let d = audit_record("mysql-b", &x, XaDecision::Commit, None, &[], 0, &op, now);
        assert!(
            d.reason.contains("operator bob (rpsctl xa commit)"),
            "{}",
            d.reason
        );
        assert!(
            d.reason.contains("not in the reader's registry"),
            "{}",
            d.reason
        );
        assert_eq!(d.shard, None);
    }
}
