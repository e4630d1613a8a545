//! The compensator beside a hanging XA branch, on the real dev servers with
//! the real pipeline (cdc-reader, projector, compensator).
//!
//! A game server's branch that is prepared and not decided holds the InnoDB
//! lock of the row it inserted (the match's next version), so the
//! compensator's `timed_out` for that version waits on `uk_match_version`.
//! It must give up after its short `lock_wait_secs` (not the server's 50 s),
//! name the branch from the reader's registry in the attempt history and the
//! dead letter, keep to its retry schedule, and fire correctly once the
//! branch is decided: after a rollback exactly one `timed_out`, after the
//! commit of a `finished` none.
//!
//! The matches reach the deadline set, and the branch the reader's registry
//! (`Keys::cdc_xa_branches` / `Keys::cdc_xa_matches`), through the binlog,
//! as in production.

mod common;

use common::*;
use compensator::blocker::XaHolder;
use compensator::deadlines::{AttemptHistory, PARKED};
use compensator::dlq;
use compensator::fred::clients::Client;
use compensator::fred::interfaces::{
    KeysInterface, SetsInterface, SortedSetsInterface, StreamsInterface,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use mysql_async::prelude::Queryable;
use read_model::GenerationKeys;
use read_model::ReadModelKeys;
use rps_core::fold::{MatchState, MatchStatus};
use rps_core::keys::deadline_member;
use rps_core::xa::{held_match_member, HeldBranch};
use rps_core::{Config, EventType, Gesture, MatchEvent, Timestamp, Xid};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use test_support::pipeline::InProcessPipeline;
use test_support::xa::{decide_branch, held_branches, write_branch, BranchEnd};
use test_support::{eventually, TestEnv};

/// One recorder for the process (the tests run side by side in it), so
/// the counters are cumulative: the tests assert lower bounds or growth.
fn metrics() -> &'static PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("metrics recorder")
    })
}

fn counter(series: &str) -> u64 {
    metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

const LOCK_WAITS_NAMED: &str = r#"rps_compensator_lock_waits_total{holder="xa_branch"}"#;

/// cdc-reader, projector and compensator on one config, in this process.
async fn start_pipeline(config: &Arc<Config>) -> InProcessPipeline {
    let mut p = InProcessPipeline::new();
    p.spawn("cdc-reader", config, cdc_reader::run);
    p.spawn("projector", config, projector::run);
    p.spawn("compensator", config, compensator::run);
    p.ready(config).await;
    p
}

async fn generation_keys(env: &TestEnv, redis: &Client) -> GenerationKeys {
    let g: Option<u64> = redis.get(env.config.keys().generation()).await.unwrap();
    env.config.keys().generation_keys(g.unwrap_or(0))
}

/// Commits the plot's rows (they reach the read models through the binlog)
/// and waits until the projector has the match's deadline.
async fn commit_match(env: &TestEnv, redis: &Client, m: &Match, plot: Plot) {
    for ev in events(m, plot) {
        env.store.append(m.shard, TABLE, &ev).await.expect("append");
    }
    let g = generation_keys(env, redis).await;
    let member = deadline_member(m.shard, m.match_id);
    eventually(
        "the projector scheduled the deadline",
        Duration::from_secs(15),
        || async {
            let s: Option<f64> = redis.zscore(g.deadlines(m.shard), &member).await.unwrap();
            s.map(|_| ())
        },
    )
    .await;
}

async fn match_status(env: &TestEnv, redis: &Client, m: &Match) -> Option<MatchStatus> {
    let g = generation_keys(env, redis).await;
    let v: Option<String> = redis.get(g.match_state(m.shard, m.match_id)).await.unwrap();
    Some(MatchState::from_value(&v?)?.status)
}

/// A prepared branch of a test. Dropping it undecided (a failed assertion)
/// rolls it back, because an undecided branch keeps its locks on the shared
/// servers for every later test.
struct Branch {
    xid: Xid,
    sql: String,
    shard: u16,
    admin_url: String,
    decided: bool,
}

impl Branch {
    /// `XA START; INSERT ev; XA END; XA PREPARE` on an admin session that
    /// then disconnects (the branch survives it on both flavors); waits
    /// until the reader has it in its registry and returns what it recorded.
    async fn prepare(env: &TestEnv, m: &Match, ev: &MatchEvent, tag: &str) -> (Branch, HeldBranch) {
        let sql = format!("'{}-{tag}'", env.name);
        let xid = Xid::parse_sql(&sql).expect("test xid");
        let branch = Branch {
            xid: xid.clone(),
            sql: sql.clone(),
            shard: m.shard,
            admin_url: env
                .config
                .server_of(m.shard)
                .admin_url
                .clone()
                .expect("admin url"),
            decided: false,
        };
        write_branch(
            env,
            m.shard,
            &sql,
            std::slice::from_ref(ev),
            1,
            BranchEnd::Prepare,
        )
        .await;
        let server = env.config.server_of(m.shard).name.clone();
        let redis = env.redis().await;
        let matches = env
            .config
            .keys()
            .cdc_xa_matches(&server, m.shard, &xid.key());
        let member = held_match_member(m.shard, m.match_id);
        let held = eventually(
            "the reader recorded the prepared branch and its match",
            Duration::from_secs(15),
            || async {
                let h = held_branches(env, &server).await.remove(&xid.key())?;
                let is: bool = redis.sismember(&matches, member.as_str()).await.unwrap();
                is.then_some(h)
            },
        )
        .await;
        assert_eq!(held.xid, xid.to_string());
        assert!(
            !held.gtid.is_empty(),
            "the reader recorded the prepare GTID"
        );
        (branch, held)
    }

    /// `XA COMMIT` / `XA ROLLBACK` from another session.
    async fn decide(&mut self, env: &TestEnv, commit: bool) {
        decide_branch(env, self.shard, &self.sql, commit).await;
        self.decided = true;
    }
}

impl Drop for Branch {
    fn drop(&mut self) {
        if self.decided {
            return;
        }
        // Drop cannot await, and the test's runtime may be unwinding: roll
        // back from a thread with a runtime of its own.
        let (url, xid) = (self.admin_url.clone(), self.xid.to_string());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let opts = mysql_async::Opts::from_url(&url).expect("url");
                match mysql_async::Conn::new(opts).await {
                    Ok(mut c) => {
                        if let Err(e) = c.query_drop(format!("XA ROLLBACK {xid}")).await {
                            eprintln!("rolling back the test's branch {xid}: {e}");
                        }
                        let _ = c.disconnect().await;
                    }
                    Err(e) => eprintln!("rolling back the test's branch {xid}: {e}"),
                }
            })
        })
        .join();
    }
}

/// Every attempt names the branch as the reader recorded it, in the error
/// text and structured.
fn assert_names_branch(h: &AttemptHistory, held: &HeldBranch, server: &str) {
    for a in &h.attempts {
        assert!(
            a.error.starts_with("lock wait timeout after"),
            "{}",
            a.error
        );
        assert!(
            a.error
                .contains(&format!("blocked by prepared XA branch {}", held.xid)),
            "{}",
            a.error
        );
        assert!(
            a.error.contains(&format!("prepare gtid {}", held.gtid)),
            "{}",
            a.error
        );
        assert!(
            a.error
                .contains(&format!("prepared {} UTC", Timestamp(held.prepared_ts))),
            "{}",
            a.error
        );
        assert_eq!(
            a.held_by,
            vec![XaHolder {
                server: server.to_string(),
                xid: held.xid.clone(),
                gtid: held.gtid.clone(),
                prepared_ts: held.prepared_ts,
            }]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_branch_lets_the_timeout_fire_once() {
    metrics();
    let env = TestEnv::new("comp_xa_rb").await;
    let lock_wait_secs = 2;
    let config = with_settings(&env.config, |c| {
        c.lock_wait_secs = lock_wait_secs;
        c.retry_initial_ms = 500;
        c.retry_max_ms = 1_000;
        c.max_attempts = 100;
    });
    let redis = env.redis().await;
    let pipeline = start_pipeline(&config).await;
    let deadline = in_ms(5_000);
    // Nobody moved yet; the hanging branch holds B's move (version 2), the
    // version the timeout wants.
    let m = new_match(&env.config, 4, deadline);
    // Same shard, same deadline, not held: claimed in the same batch, it
    // must fire on time although the batch INSERT waits on the other.
    let free = new_match(&env.config, 4 + i64::from(env.config.shard_count), deadline);
    assert_eq!(m.shard, free.shard);
    commit_match(&env, &redis, &m, Plot::NobodyMoved).await;
    commit_match(&env, &redis, &free, Plot::NobodyMoved).await;
    let held_move = events(&m, Plot::OnlyB(Gesture::Paper))[1].clone();
    assert_eq!(
        (held_move.version, held_move.event_type),
        (2, EventType::Moved)
    );
    let (mut branch, held) = Branch::prepare(&env, &m, &held_move, "rb").await;
    assert!(
        Timestamp::now() < deadline,
        "set-up took past the deadline; the first attempt may precede the registry"
    );
    let server = env.config.server_of(m.shard).name.clone();
    let member = deadline_member(m.shard, m.match_id);
    let named_before = counter(LOCK_WAITS_NAMED);

    let t = eventually("the free match fired", Duration::from_secs(25), || async {
        timed_outs(&stored(&env, &free).await)
            .first()
            .map(|t| (*t).clone())
    })
    .await;
    assert!(
        t.occurred_at.0 - deadline.0 < (2 * i64::from(lock_wait_secs) + 3) * 1_000_000,
        "the free match waited too long behind the held one: {}",
        t.occurred_at
    );

    let h = attempts_recorded(&env, &member, 2, Duration::from_secs(30)).await;
    assert!(!h.parked);
    assert_names_branch(&h, &held, &server);
    let first = h.attempts[0].at - deadline.as_micros();
    assert!(
        first >= i64::from(lock_wait_secs) * 1_000_000 - 100_000,
        "the first attempt failed {first} µs after the deadline, before a lock wait of \
         {lock_wait_secs} s: {}",
        h.attempts[0].error
    );
    assert!(
        first < 12_000_000,
        "the first attempt took {first} µs: waited out the server's default lock wait?"
    );
    // Retries keep the short wait (a pooled session is reset between uses
    // and must get the setting again): retry delay ≤ 1 s plus at most two
    // lock waits plus slack.
    for w in h.attempts.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap < (1 + 2 * i64::from(lock_wait_secs) + 3) * 1_000_000,
            "attempts {gap} µs apart"
        );
    }
    assert!(
        timed_outs(&stored(&env, &m).await).is_empty(),
        "fired past a held version"
    );
    assert!(counter(LOCK_WAITS_NAMED) >= named_before + 2);

    branch.decide(&env, false).await;
    let evs = eventually(
        "timed_out after the rollback",
        Duration::from_secs(15),
        || async {
            let evs = stored(&env, &m).await;
            (!timed_outs(&evs).is_empty()).then_some(evs)
        },
    )
    .await;
    eventually(
        "the timeout projected and the attempt history cleared",
        Duration::from_secs(15),
        || async {
            let projected = match_status(&env, &redis, &m).await == Some(MatchStatus::TimedOut);
            (projected && history(&env, &member).await.is_none()).then_some(())
        },
    )
    .await;
    let g = generation_keys(&env, &redis).await;
    let d: Option<f64> = redis.zscore(g.deadlines(m.shard), &member).await.unwrap();
    assert_eq!(d, None, "the projector removed the deadline");
    assert!(
        !held_branches(&env, &server)
            .await
            .contains_key(&branch.xid.key()),
        "the reader dropped the rolled-back branch"
    );
    pipeline.stop().await;

    // The rolled-back move never counted: version 2 is the timeout, nobody
    // moved, both forfeit.
    assert_eq!(evs, stored(&env, &m).await, "nothing written after it");
    assert_eq!(evs.len(), 2, "{evs:?}");
    let t = timed_outs(&evs);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].version, 2);
    assert_eq!((t[0].winner_player_id, t[0].loser_player_id), (None, None));
    assert_eq!(timed_outs(&stored(&env, &free).await).len(), 1);
    let dl: u64 = redis.xlen(env.config.keys().deadletter()).await.unwrap();
    assert_eq!(dl, 0, "decided before the last attempt: no dead letter");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_finish_means_nothing_to_fire() {
    metrics();
    let env = TestEnv::new("comp_xa_commit").await;
    let config = with_settings(&env.config, |c| {
        c.lock_wait_secs = 1;
        c.retry_initial_ms = 300;
        c.retry_max_ms = 600;
        c.max_attempts = 100;
    });
    let redis = env.redis().await;
    let pipeline = start_pipeline(&config).await;
    // Both moved; the hanging branch holds the `finished` (version 4, rock
    // beats scissors), the version the timeout wants.
    let m = new_match(&env.config, 6, in_ms(4_000));
    commit_match(
        &env,
        &redis,
        &m,
        Plot::Both(Gesture::Rock, Gesture::Scissors),
    )
    .await;
    let finished = events(&m, Plot::Finished(Gesture::Rock, Gesture::Scissors))[3].clone();
    assert_eq!(
        (finished.version, finished.event_type),
        (4, EventType::Finished)
    );
    let (mut branch, held) = Branch::prepare(&env, &m, &finished, "commit").await;
    let server = env.config.server_of(m.shard).name.clone();
    let member = deadline_member(m.shard, m.match_id);

    let h = attempts_recorded(&env, &member, 1, Duration::from_secs(30)).await;
    assert_names_branch(&h, &held, &server);
    assert!(timed_outs(&stored(&env, &m).await).is_empty());

    // Committed from another session: the `finished` counts, the match is
    // over. Whichever comes first, the compensator's retry (re-reads, finds
    // it finished) or the projector's removal of the deadline (the next
    // claim drops the lease and its history), nothing is fired.
    branch.decide(&env, true).await;
    eventually(
        "the finish projected and the attempt history gone",
        Duration::from_secs(15),
        || async {
            let projected = match_status(&env, &redis, &m).await == Some(MatchStatus::Finished);
            (projected && history(&env, &member).await.is_none()).then_some(())
        },
    )
    .await;
    // Past another retry period or two: still nothing.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    pipeline.stop().await;
    let evs = stored(&env, &m).await;
    assert!(timed_outs(&evs).is_empty(), "{evs:?}");
    assert_eq!(evs.len(), 4);
    assert_eq!(evs[3].event_type, EventType::Finished);
    assert_eq!(evs[3].event_id, finished.event_id, "the branch's own row");
    assert!(history(&env, &member).await.is_none());
    let dl: u64 = redis.xlen(env.config.keys().deadletter()).await.unwrap();
    assert_eq!(dl, 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_names_the_branch_to_decide() {
    metrics();
    let env = TestEnv::new("comp_xa_dead").await;
    let config = with_settings(&env.config, |c| {
        c.lock_wait_secs = 1;
        c.retry_initial_ms = 300;
        c.retry_max_ms = 300;
        c.max_attempts = 2;
    });
    let redis = env.redis().await;
    let keys = env.config.keys();
    let pipeline = start_pipeline(&config).await;
    // Nobody moved; the branch holds A's move (version 2).
    let m = new_match(&env.config, 2, in_ms(4_000));
    commit_match(&env, &redis, &m, Plot::NobodyMoved).await;
    let held_move = events(&m, Plot::Both(Gesture::Rock, Gesture::Paper))[1].clone();
    assert_eq!(
        (held_move.version, held_move.gesture_a),
        (2, Some(Gesture::Rock))
    );
    let (mut branch, held) = Branch::prepare(&env, &m, &held_move, "dead").await;
    let server = env.config.server_of(m.shard).name.clone();
    let member = deadline_member(m.shard, m.match_id);

    let entries = eventually(
        "a dead letter after the last attempt",
        Duration::from_secs(30),
        || async {
            let l = dlq::list(&redis, &keys, None, 10).await.unwrap();
            (!l.is_empty()).then_some(l)
        },
    )
    .await;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!((e.origin(), e.kind()), ("compensator", "deadline_failed"));
    assert_eq!((e.shard(), e.match_id()), (Some(m.shard), Some(m.match_id)));
    assert_eq!(e.get("server"), server);
    let reason = e.get("reason");
    assert!(reason.contains("2 attempts"), "{reason}");
    assert!(reason.contains("lock wait timeout after 1 s"), "{reason}");
    assert!(reason.contains(&held.xid), "{reason}");
    assert!(
        reason.contains(&format!("prepare gtid {}", held.gtid)),
        "{reason}"
    );
    assert!(
        reason.contains(&format!(
            "`rpsctl xa commit|rollback \"{}\" --server {server}`",
            held.xid
        )),
        "{reason}"
    );
    let h: AttemptHistory = serde_json::from_str(e.get("payload")).unwrap();
    assert_eq!(h.attempts.len(), 2);
    assert!(h.parked);
    assert_names_branch(&h, &held, &server);
    let lease: Option<f64> = redis
        .zscore(keys.deadline_leases(m.shard), &member)
        .await
        .unwrap();
    assert_eq!(lease, Some(PARKED as f64));

    // The operator rolls the branch back, as the dead letter says, and
    // retries the deadline: it fires once.
    branch.decide(&env, false).await;
    dlq::retry(&redis, &keys, &e.id).await.unwrap();
    eventually(
        "fired after the operator's retry and projected",
        Duration::from_secs(15),
        || async {
            (match_status(&env, &redis, &m).await == Some(MatchStatus::TimedOut)).then_some(())
        },
    )
    .await;
    pipeline.stop().await;
    let evs = stored(&env, &m).await;
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert_eq!(timed_outs(&evs).len(), 1);
    assert_eq!(dlq::count(&redis, &keys).await.unwrap(), 0);
    assert!(history(&env, &member).await.is_none());
    env.cleanup().await;
}
