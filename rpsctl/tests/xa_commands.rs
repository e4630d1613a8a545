//! `rpsctl xa list|commit|rollback|sweep` and the XA columns of `rpsctl
//! status`, against branches prepared on the real shared servers.
//!
//! Branches are prepared by an admin session that then disconnects, as a
//! game server's transaction manager that died would leave them. XA
//! RECOVER is server-wide, so every assertion looks only at this test's own
//! xids (unique per test), and every branch a test leaves is rolled back
//! before its databases are dropped, panic or not: a prepared branch holds
//! its locks and would block the DROP DATABASE.
//!
//! The reader's registry is written by hand where a test is about the
//! display and decision logic; `reader_holds_the_branch_until_xa_commit`
//! runs the real cdc-reader for what only the reader can show.

use fred::clients::Client;
use fred::interfaces::{HashesInterface, StreamsInterface};
use mysql_async::prelude::Queryable;
use rps_core::xa::HeldBranch;
use rps_core::{Config, MatchEvent, ShardId, Timestamp, Xid};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use test_support::xa::rollback_leftovers;
use test_support::{TestEnv, TestFlavor};

/// `rpsctl --config <file> xa <args>`: exit code, stdout, stderr.
fn xa(config: &Path, args: &[&str]) -> (i32, String, String) {
    rpsctl(config, &[&["xa"], args].concat())
}

fn rpsctl(config: &Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_rpsctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env("USER", "tester")
        .output()
        .expect("run rpsctl");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs and expects success; returns stdout.
fn xa_ok(config: &Path, args: &[&str]) -> String {
    let (code, out, err) = xa(config, args);
    assert_eq!(code, 0, "rpsctl xa {args:?} failed:\n{out}\n{err}");
    out
}

fn list_json(config: &Path) -> serde_json::Value {
    serde_json::from_str(&xa_ok(config, &["list", "--json"])).expect("xa list --json")
}

/// The branch of `xa list --json` with this key, if listed.
fn branch<'a>(list: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    list["branches"]
        .as_array()
        .expect("branches")
        .iter()
        .find(|b| b["xid_key"] == key)
}

/// One `started` row of `shard`.
fn started(config: &Config, shard: ShardId, match_id: i64) -> MatchEvent {
    let a = i64::from(shard) + i64::from(config.shard_count) * (match_id + 1);
    let now = Timestamp::now();
    MatchEvent::started(
        MatchEvent::timed_out_event_id(match_id, 1),
        match_id,
        "2026Q4".parse().unwrap(),
        (a, a + 1),
        now,
        Timestamp(now.0 + 30_000_000),
    )
}

/// Prepares branch `'gtrid'` holding one row of `shard` (match
/// `match_id`; none if `None`) and leaves it, as a dead transaction manager
/// does.
async fn prepare(env: &TestEnv, shard: ShardId, gtrid: &str, match_id: Option<i64>) -> Xid {
    let mut conn = env.admin_conn(shard).await;
    let id: Option<u64> = conn.query_first("SELECT CONNECTION_ID()").await.unwrap();
    conn.query_drop(format!("XA START '{gtrid}'"))
        .await
        .unwrap();
    if let Some(match_id) = match_id {
        env.store
            .append_batch(
                &mut conn,
                shard,
                "match_result_events",
                &[started(&env.config, shard, match_id)],
            )
            .await
            .expect("insert inside the branch");
    }
    conn.query_drop(format!("XA END '{gtrid}'")).await.unwrap();
    conn.query_drop(format!("XA PREPARE '{gtrid}'"))
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    // MariaDB gives the branch free to other sessions only once the server
    // has ended the preparing one; wait until it is gone.
    let mut admin = env.admin_conn(shard).await;
    for _ in 0..100 {
        let n: Option<u64> = admin
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.processlist WHERE id = ?",
                (id,),
            )
            .await
            .unwrap_or(Some(0));
        if n == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = admin.disconnect().await;
    Xid::parse_sql(&format!("'{gtrid}'")).unwrap()
}

/// Whether the branch is still prepared on the server of `shard`.
async fn prepared(env: &TestEnv, shard: ShardId, xid: &Xid) -> bool {
    let mut conn = env.admin_conn(shard).await;
    let xids = rps_event_store::xa::recover(&mut conn).await.unwrap();
    let _ = conn.disconnect().await;
    xids.contains(xid)
}

/// Rows of `match_id` a new session sees in `shard`'s event table.
async fn visible_rows(env: &TestEnv, shard: ShardId, match_id: i64) -> u64 {
    let mut conn = env.admin_conn(shard).await;
    let n: Option<u64> = conn
        .exec_first(
            format!(
                "SELECT COUNT(*) FROM `{}`.match_result_events WHERE match_id = ?",
                env.config.database(shard)
            ),
            (match_id,),
        )
        .await
        .unwrap();
    let _ = conn.disconnect().await;
    n.unwrap_or(0)
}

/// A registry entry as the reader writes it, prepared `age` ago, holding
/// one row of `shard` (match `match_id`).
async fn register(
    env: &TestEnv,
    redis: &Client,
    server: &str,
    xid: &Xid,
    age: Duration,
    shard: ShardId,
) -> HeldBranch {
    let prepared_ts = Timestamp::now().0 - age.as_micros() as i64;
    let h = HeldBranch {
        xid: xid.to_string(),
        gtid: "0-1-77".into(),
        file: "binlog.000042".into(),
        pos: 4711,
        prepared_ts,
        seen_ts: prepared_ts + 200_000,
        shards: [(shard, 1)].into_iter().collect(),
        dead: 0,
        matches: 1,
        ..Default::default()
    };
    let _: () = redis
        .hset(
            env.config
                .keys()
                .cdc_xa_branches(server, rps_core::keys::PublishTarget::Shard(shard)),
            (xid.key(), h.to_json()),
        )
        .await
        .unwrap();
    h
}

/// The audit records (`operator` dead letters) of this test's deployment.
async fn audit_records(env: &TestEnv, redis: &Client) -> Vec<HashMap<String, String>> {
    let all: Vec<(String, HashMap<String, String>)> = redis
        .xrange_values(env.config.keys().deadletter(), "-", "+", None)
        .await
        .unwrap();
    all.into_iter()
        .map(|(_, f)| f)
        .filter(|f| f.get("origin").map(String::as_str) == Some("operator"))
        .collect()
}

/// Runs `body`; whatever happens, rolls back the test's branches and drops
/// its databases and keys, then passes a panic on.
async fn guarded<F, Fut>(test: &str, body: F)
where
    F: FnOnce(std::sync::Arc<TestEnv>, PathBuf) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let env = std::sync::Arc::new(TestEnv::new(test).await);
    let (dir, path) = env.write_config_file();
    let result = tokio::spawn(body(env.clone(), path)).await;
    rollback_leftovers(&env, &env.name).await;
    env.cleanup().await;
    drop(dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_commit_rollback_with_audit_records() {
    guarded("xa_decide", |env, cfg| async move {
        let redis = env.redis().await;
        // Shard 0 lives on mysql-a, shard 1 on mysql-b.
        let held = prepare(&env, 0, &format!("{}_c", env.name), Some(10)).await;
        let unseen = prepare(&env, 1, &format!("{}_r", env.name), Some(11)).await;
        let gone = Xid::parse_sql(&format!("'{}_gone'", env.name)).unwrap();
        register(&env, &redis, "mysql-a", &held, Duration::from_secs(3600), 0).await;
        register(&env, &redis, "mysql-a", &gone, Duration::from_secs(60), 2).await;

        // list --json: one line per branch, the three states told apart.
        let list = list_json(&cfg);
        let servers = list["servers"].as_array().unwrap();
        assert_eq!(servers.len(), 2, "{list}");
        assert!(servers.iter().all(|s| s["reachable"] == true), "{list}");
        assert_eq!(servers[0]["registry"], 2);
        let b = branch(&list, &held.key()).expect("held branch listed");
        assert_eq!(b["server"], "mysql-a");
        assert_eq!(b["state"], "held");
        assert_eq!(b["xid"], held.to_string());
        assert_eq!(b["gtrid_text"], format!("{}_c", env.name));
        assert_eq!(b["gtid"], "0-1-77");
        assert_eq!(
            (b["file"].as_str(), b["pos"].as_u64()),
            (Some("binlog.000042"), Some(4711))
        );
        assert_eq!(b["shards"]["0"], 1);
        assert_eq!(
            (
                b["rows"].as_u64(),
                b["matches"].as_u64(),
                b["dead"].as_u64()
            ),
            (Some(1), Some(1), Some(0))
        );
        let age = b["age_seconds"].as_f64().unwrap();
        assert!((3590.0..3700.0).contains(&age), "{b}");
        assert!(b["seen_ts"].as_i64().unwrap() > b["prepared_ts"].as_i64().unwrap());
        assert!(b["prepared_at"].as_str().unwrap().ends_with('Z'));
        let b = branch(&list, &unseen.key()).expect("unseen branch listed");
        assert_eq!(
            (b["server"].as_str(), b["state"].as_str()),
            (Some("mysql-b"), Some("not_seen"))
        );
        assert!(b["age_seconds"].is_null() && b["rows"].is_null(), "{b}");
        let b = branch(&list, &gone.key()).expect("decided branch listed");
        assert_eq!(
            (b["server"].as_str(), b["state"].as_str()),
            (Some("mysql-a"), Some("decided"))
        );

        // The table says the same for people.
        let out = xa_ok(&cfg, &["list"]);
        let line = |key: &str| {
            out.lines()
                .find(|l| l.contains(key))
                .unwrap_or_else(|| panic!("{key} not in\n{out}"))
                .to_string()
        };
        assert!(out.starts_with("SERVER"), "{out}");
        let l = line(&held.key());
        for want in [
            "mysql-a",
            "held",
            "1h00m",
            "0-1-77",
            "binlog.000042:4711",
            "1 row (shard 0: 1), 1 match, 0 dead letters",
        ] {
            assert!(l.contains(want), "{want:?} not in {l}");
        }
        assert!(line(&unseen.key()).contains("not seen"));
        assert!(line(&gone.key()).contains("decided"));
        assert!(
            out.contains("decided, the reader has not read the decision yet"),
            "{out}"
        );

        // status: the reader's registry per server.
        let (code, st, err) = rpsctl(&cfg, &["status", "--json"]);
        assert_eq!(code, 0, "{err}");
        let st: serde_json::Value = serde_json::from_str(&st).unwrap();
        let a = &st["servers"][0];
        assert_eq!(
            (a["server"].as_str(), a["xa_held"].as_u64()),
            (Some("mysql-a"), Some(2)),
            "{st}"
        );
        let oldest = a["xa_oldest_age_seconds"].as_f64().unwrap();
        assert!((3590.0..3700.0).contains(&oldest), "{st}");
        assert_eq!(st["servers"][1]["xa_held"], 0);
        assert!(st["servers"][1]["xa_oldest_age_seconds"].is_null());
        let (_, table, _) = rpsctl(&cfg, &["status"]);
        assert!(
            table.contains("xa held") && table.contains("xa oldest"),
            "{table}"
        );

        // commit, by the key form `xa list` shows: the row becomes visible.
        assert_eq!(visible_rows(&env, 0, 10).await, 0);
        let out = xa_ok(&cfg, &["commit", &held.key()]);
        assert!(
            out.contains(&format!(
                "mysql-a: XA COMMIT {held} ({}): committed",
                held.key()
            )),
            "{out}"
        );
        assert!(
            out.contains("it held 1 row (shard 0: 1), 1 match, 0 dead letters"),
            "{out}"
        );
        assert!(out.contains("audit record "), "{out}");
        assert_eq!(visible_rows(&env, 0, 10).await, 1);
        assert!(!prepared(&env, 0, &held).await);

        // rollback, typed as the client wrote it: the row never appears.
        let typed = format!("'{}_r'", env.name);
        let out = xa_ok(
            &cfg,
            &[
                "rollback", &typed, "--server", "mysql-b", "--by", "alice", "--json",
            ],
        );
        let d: serde_json::Value = serde_json::from_str(&out).expect("rollback --json");
        assert_eq!(
            (
                d["server"].as_str(),
                d["decision"].as_str(),
                d["by"].as_str()
            ),
            (Some("mysql-b"), Some("rollback"), Some("alice")),
            "{d}"
        );
        assert_eq!(d["xid_key"], unseen.key());
        assert!(d["registry"].is_null(), "not in the reader's registry: {d}");
        assert!(d["audit_id"].is_string(), "{d}");
        assert_eq!(visible_rows(&env, 1, 11).await, 0);
        assert!(!prepared(&env, 1, &unseen).await);

        // Each decision left its audit record before it was made.
        let audit = audit_records(&env, &redis).await;
        assert_eq!(audit.len(), 2, "{audit:?}");
        let (c, r) = (&audit[0], &audit[1]);
        assert_eq!(c["kind"], "xa_decision");
        assert_eq!(c["server"], "mysql-a");
        assert_eq!(
            (c["file"].as_str(), c["pos"].as_str(), c["shard"].as_str()),
            ("binlog.000042", "4711", "0")
        );
        for want in [
            &format!("XA COMMIT {held} on mysql-a"),
            "operator tester (rpsctl xa commit)",
            "prepared 1h00m ago",
            "it held 1 row",
        ] {
            assert!(
                c["reason"].contains(want),
                "{want:?} not in {}",
                c["reason"]
            );
        }
        let p: serde_json::Value = serde_json::from_str(&c["payload"]).unwrap();
        assert_eq!(
            (p["decision"].as_str(), p["by"].as_str()),
            (Some("commit"), Some("tester"))
        );
        assert_eq!(p["registry"]["shards"]["0"], 1);
        assert!(
            r["reason"].contains(&format!("XA ROLLBACK {unseen} on mysql-b")),
            "{r:?}"
        );
        assert!(r["reason"].contains("operator alice"), "{r:?}");
        assert!(
            r["reason"].contains("not in the reader's registry"),
            "{r:?}"
        );
        // `dlq list` shows them among the dead letters.
        let (code, out, _) = rpsctl(&cfg, &["dlq", "list"]);
        assert_eq!(code, 0);
        assert_eq!(
            out.lines()
                .filter(|l| l.contains("operator") && l.contains("xa_decision"))
                .count(),
            2,
            "{out}"
        );

        // A branch no longer prepared: non-zero, and the registry's hint.
        let (code, _, err) = xa(&cfg, &["commit", &held.key()]);
        assert_eq!(code, 3, "{err}");
        assert!(
            err.contains(&format!("no prepared XA branch {held}")),
            "{err}"
        );
        assert!(err.contains("registry of mysql-a still has it"), "{err}");
        let (code, _, err) = xa(&cfg, &["rollback", &gone.to_string()]);
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("no prepared XA branch"), "{err}");
        // Nothing decided, nothing audited.
        assert_eq!(audit_records(&env, &redis).await.len(), 2);
        let (code, _, err) = xa(&cfg, &["commit", &held.key(), "--server", "nope"]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("no server `nope`") && err.contains("mysql-a, mysql-b"),
            "{err}"
        );
        let (code, _, err) = xa(&cfg, &["commit", "not an xid"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("not an XA xid"), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_dry_run_then_rollback_of_old_branches() {
    guarded("xa_sweep", |env, cfg| async move {
        let redis = env.redis().await;
        let old = prepare(&env, 0, &format!("{}_old", env.name), Some(20)).await;
        let young = prepare(&env, 2, &format!("{}_young", env.name), Some(21)).await;
        let unseen = prepare(&env, 1, &format!("{}_unseen", env.name), Some(22)).await;
        register(&env, &redis, "mysql-a", &old, Duration::from_secs(3600), 0).await;
        register(&env, &redis, "mysql-a", &young, Duration::from_secs(5), 2).await;

        // A policy is required unless it is a dry run, and only one.
        let (code, _, err) = xa(&cfg, &["sweep", "--older-than", "10m"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--commit"), "{err}");
        let (code, _, _) = xa(
            &cfg,
            &["sweep", "--older-than", "10m", "--commit", "--rollback"],
        );
        assert_eq!(code, 2);
        let (code, _, err) = xa(&cfg, &["sweep", "--older-than", "ten", "--rollback"]);
        assert_eq!(code, 2);
        assert!(err.contains("not a duration"), "{err}");

        // --dry-run lists and decides nothing; that it would decide one
        // branch makes it exit 1.
        let (code, out, err) = xa(
            &cfg,
            &["sweep", "--older-than", "10m", "--rollback", "--dry-run"],
        );
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            out.starts_with("policy: rollback branches prepared more than 10m ago (dry run)"),
            "{out}"
        );
        let l = out
            .lines()
            .find(|l| l.contains(&old.key()))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            l.contains("would be rolled back") && l.contains("1h00m"),
            "{l}"
        );
        assert!(!out.lines().any(|l| l.contains(&young.key())), "{out}");
        let s = out
            .lines()
            .find(|l| l.contains(&unseen.key()))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            s.starts_with("skipped: mysql-b") && s.contains("not seen by the reader"),
            "{s}"
        );
        assert!(
            out.contains("1 older than 10m would be decided; 1 younger"),
            "{out}"
        );
        let out = xa_ok(&cfg, &["sweep", "--older-than", "1d", "--dry-run"]);
        assert!(
            out.contains("0 older than 1d would be decided; 2 younger"),
            "{out}"
        );
        let (code, out, err) = xa(
            &cfg,
            &["sweep", "--older-than", "10m", "--dry-run", "--json"],
        );
        assert_eq!(code, 1, "{out}{err}");
        let dry: serde_json::Value = serde_json::from_str(&out).expect("sweep --json");
        assert_eq!(
            (dry["older"].as_u64(), dry["younger"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(dry["branches"][0]["xid_key"], old.key());
        assert_eq!(dry["branches"][0]["outcome"], "would_decide");
        // XA RECOVER is server-wide: other tests' branches are skipped too.
        assert!(
            dry["skipped"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s.as_str().unwrap().contains(&unseen.key())),
            "{dry}"
        );
        for (shard, x) in [(0, &old), (2, &young), (1, &unseen)] {
            assert!(prepared(&env, shard, x).await, "dry run decided {x}");
        }
        assert!(audit_records(&env, &redis).await.is_empty());

        // --rollback decides the old one only, with its audit record.
        let out = xa_ok(
            &cfg,
            &["sweep", "--older-than", "10m", "--rollback", "--by", "cron"],
        );
        let l = out
            .lines()
            .find(|l| l.contains(&old.key()))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            l.contains("rolled back (audit ") && !l.contains("would"),
            "{l}"
        );
        assert!(
            out.contains("1 older than 10m: 1 rolled back, 0 failed; 1 younger"),
            "{out}"
        );
        assert!(!prepared(&env, 0, &old).await);
        assert!(prepared(&env, 2, &young).await);
        assert!(prepared(&env, 1, &unseen).await);
        assert_eq!(visible_rows(&env, 0, 20).await, 0);
        let audit = audit_records(&env, &redis).await;
        assert_eq!(audit.len(), 1, "{audit:?}");
        let reason = &audit[0]["reason"];
        for want in [
            &format!("XA ROLLBACK {old} on mysql-a"),
            "sweep policy `rollback branches prepared more than 10m ago`",
            "rpsctl xa sweep --older-than 10m --rollback, run by cron",
        ] {
            assert!(reason.contains(want), "{want:?} not in {reason}");
        }
        let p: serde_json::Value = serde_json::from_str(&audit[0]["payload"]).unwrap();
        assert_eq!(p["policy"], "rollback branches prepared more than 10m ago");

        // The old branch is now "decided" (no reader here to clear it); a
        // second sweep finds nothing more to do.
        let list = list_json(&cfg);
        assert_eq!(branch(&list, &old.key()).unwrap()["state"], "decided");
        let out = xa_ok(&cfg, &["sweep", "--older-than", "10m", "--commit"]);
        assert!(
            out.contains("0 older than 10m: 0 committed, 0 failed; 1 younger"),
            "{out}"
        );
        assert!(prepared(&env, 2, &young).await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_and_the_recover_privilege() {
    guarded("xa_priv", |env, cfg| async move {
        let x = prepare(&env, 0, &format!("{}_p", env.name), Some(30)).await;

        // mysql-b unreachable: reported, mysql-a still listed.
        let mut broken = env.config.as_ref().clone();
        broken.servers[1].url = format!(
            "mysql://{}:{}@127.0.0.1:{}",
            test_support::PIPELINE_USER,
            test_support::PIPELINE_PASSWORD,
            test_support::free_port()
        );
        let dir = cfg.parent().unwrap();
        let broken_cfg = dir.join("broken.toml");
        std::fs::write(&broken_cfg, broken.to_toml()).unwrap();
        let list = list_json(&broken_cfg);
        let b = &list["servers"][1];
        assert_eq!(
            (b["server"].as_str(), b["reachable"].as_bool()),
            (Some("mysql-b"), Some(false)),
            "{list}"
        );
        assert!(
            b["error"].as_str().unwrap().contains("cannot connect"),
            "{list}"
        );
        assert_eq!(
            branch(&list, &x.key()).expect("listed")["state"],
            "not_seen"
        );
        let out = xa_ok(&broken_cfg, &["list"]);
        assert!(
            out.contains("mysql-b: cannot list its prepared branches: cannot connect"),
            "{out}"
        );
        assert!(out.contains(&x.key()), "{out}");
        // A decision of a branch not on mysql-a names what was not asked.
        let (code, _, err) = xa(&broken_cfg, &["commit", &format!("'{}_nowhere'", env.name)]);
        assert_ne!(code, 0);
        assert!(err.contains("not asked (unreachable): mysql-b"), "{err}");

        // An account without XA_RECOVER_ADMIN: MySQL refuses XA RECOVER and
        // the message names the privilege; MariaDB lists to anyone.
        let user = format!("xa{}", &env.name[1..env.name.len().min(24)]);
        for s in &env.config.servers {
            let mut c = env.admin_conn_to(&s.name).await;
            c.query_drop(format!(
                "CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY 'pw'"
            ))
            .await
            .unwrap();
            let _ = c.disconnect().await;
        }
        let mut weak = env.config.as_ref().clone();
        for (i, s) in weak.servers.iter_mut().enumerate() {
            s.url = format!(
                "mysql://{user}:pw@127.0.0.1:{}",
                env.config.servers[i].url.rsplit(':').next().unwrap()
            );
        }
        let weak_cfg = dir.join("weak.toml");
        std::fs::write(&weak_cfg, weak.to_toml()).unwrap();
        let (code, out, err) = xa(&weak_cfg, &["list", "--json"]);
        for s in &env.config.servers {
            let mut c = env.admin_conn_to(&s.name).await;
            let _ = c
                .query_drop(format!("DROP USER IF EXISTS '{user}'@'%'"))
                .await;
            let _ = c.disconnect().await;
        }
        assert_eq!(code, 0, "{err}");
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        let a = &list["servers"][0];
        match TestFlavor::current() {
            TestFlavor::MySql => {
                let e = a["error"].as_str().unwrap_or_default();
                assert!(
                    e.contains("XA_RECOVER_ADMIN")
                        && e.contains(&user)
                        && e.contains("rpsctl init"),
                    "{list}"
                );
                assert!(branch(&list, &x.key()).is_none());
            }
            TestFlavor::MariaDb => {
                assert!(a["error"].is_null(), "{list}");
                assert_eq!(
                    branch(&list, &x.key()).expect("listed")["state"],
                    "not_seen"
                );
            }
        }
        let out = xa_ok(&cfg, &["rollback", &x.key()]);
        assert!(out.contains("rolled back"), "{out}");
    })
    .await;
}

/// Needs the cdc-reader's XA support (registry, held rows, publish at
/// commit, drop at rollback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_holds_the_branch_until_xa_commit() {
    guarded("xa_reader", |env, cfg| async move {
        let redis = env.redis().await;
        let keys = env.config.keys();
        let token = tokio_util::sync::CancellationToken::new();
        let reader = {
            let (c, t) = (env.config.clone(), token.clone());
            tokio::spawn(async move { cdc_reader::run(c, t).await })
        };
        for s in &env.config.servers {
            test_support::eventually("initial checkpoint", Duration::from_secs(30), || {
                let (redis, key) = (redis.clone(), keys.cdc_checkpoint(&s.name));
                async move {
                    use fred::interfaces::KeysInterface;
                    let v = redis.get::<Option<String>, _>(key).await.ok().flatten()?;
                    // A bootstrap's fence is not yet a position.
                    rps_core::checkpoint::Checkpoint::decode(&v).ok()
                }
            })
            .await;
        }

        let x = prepare(&env, 2, &format!("{}_h", env.name), Some(40)).await;
        let registry = keys.cdc_xa_branches("mysql-a", rps_core::keys::PublishTarget::Shard(2));
        test_support::eventually("the reader registers the branch", Duration::from_secs(30), || {
            let (redis, registry, key) = (redis.clone(), registry.clone(), x.key());
            async move { redis.hget::<Option<String>, _, _>(registry, key).await.ok().flatten() }
        })
        .await;
        let list = list_json(&cfg);
        let b = branch(&list, &x.key()).expect("listed");
        assert_eq!(b["state"], "held", "{b}");
        assert_eq!(b["shards"]["2"], 1, "{b}");
        assert_eq!((b["rows"].as_u64(), b["matches"].as_u64()), (Some(1), Some(1)), "{b}");
        assert!(b["seen_ts"].as_i64().unwrap() >= b["prepared_ts"].as_i64().unwrap() - 1_000_000, "{b}");
        assert!(b["age_seconds"].as_f64().unwrap() < 60.0, "{b}");
        assert!(b["file"].is_string() && b["gtid"].is_string(), "{b}");
        let (_, st, _) = rpsctl(&cfg, &["status", "--json"]);
        let st: serde_json::Value = serde_json::from_str(&st).unwrap();
        // At least ours: the reader registers every branch it sees
        // prepared on the server, other tests' ones too.
        assert!(st["servers"][0]["xa_held"].as_u64().unwrap() >= 1, "{st}");
        assert!(st["servers"][0]["xa_oldest_age_seconds"].as_f64().unwrap() < 60.0, "{st}");
        let xlen = |shard| {
            let redis = redis.clone();
            let key = keys.events(shard);
            async move { redis.xlen::<u64, _>(key).await.unwrap() }
        };
        assert_eq!(xlen(2).await, 0, "held rows are not published");

        let out = xa_ok(&cfg, &["commit", &x.key()]);
        assert!(out.contains("it held 1 row (shard 2: 1), 1 match"), "{out}");
        assert!(out.contains("the reader publishes the held rows"), "{out}");
        test_support::eventually("published at the commit", Duration::from_secs(30), || {
            let f = xlen(2);
            async move { (f.await == 1).then_some(()) }
        })
        .await;
        test_support::eventually("registry entry removed", Duration::from_secs(30), || {
            let (redis, registry, key) = (redis.clone(), registry.clone(), x.key());
            async move { (!redis.hexists::<bool, _, _>(registry, key).await.unwrap()).then_some(()) }
        })
        .await;
        assert!(branch(&list_json(&cfg), &x.key()).is_none());

        // Rolled back: the held row is dropped, never published.
        let y = prepare(&env, 2, &format!("{}_h2", env.name), Some(41)).await;
        test_support::eventually("the reader registers the second branch", Duration::from_secs(30), || {
            let (redis, registry, key) = (redis.clone(), registry.clone(), y.key());
            async move { redis.hget::<Option<String>, _, _>(registry, key).await.ok().flatten() }
        })
        .await;
        let out = xa_ok(&cfg, &["rollback", &y.key()]);
        assert!(out.contains("the reader drops the held rows"), "{out}");
        test_support::eventually("registry entry of the rollback removed", Duration::from_secs(30), || {
            let (redis, registry, key) = (redis.clone(), registry.clone(), y.key());
            async move { (!redis.hexists::<bool, _, _>(registry, key).await.unwrap()).then_some(()) }
        })
        .await;
        assert_eq!(xlen(2).await, 1);

        token.cancel();
        reader.await.unwrap().expect("reader ends cleanly");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_that_changed_nothing() {
    guarded("xa_empty", |env, cfg| async move {
        let redis = env.redis().await;
        let x = prepare(&env, 0, &format!("{}_e1", env.name), None).await;
        let y = prepare(&env, 0, &format!("{}_e2", env.name), None).await;
        let (code, out, err) = xa(&cfg, &["commit", &x.key()]);
        match TestFlavor::current() {
            // MariaDB rolls a read-only branch back whatever it is told
            // (XA_RBROLLBACK); the audit record must say so, not "commit".
            TestFlavor::MariaDb => {
                assert_ne!(code, 0, "{out}");
                assert!(
                    err.contains("not committed, the server rolled the branch back instead"),
                    "{err}"
                );
                let audit = audit_records(&env, &redis).await;
                assert_eq!(audit.len(), 1, "{audit:?}");
                assert!(
                    audit[0]["reason"].contains("the server rolled the branch back instead"),
                    "{audit:?}"
                );
                let p: serde_json::Value = serde_json::from_str(&audit[0]["payload"]).unwrap();
                assert_eq!(p["outcome"], "rolled_back_by_server");
            }
            TestFlavor::MySql => {
                assert_eq!(code, 0, "{err}");
                assert!(out.contains("committed"), "{out}");
                assert_eq!(audit_records(&env, &redis).await.len(), 1);
            }
        }
        assert!(!prepared(&env, 0, &x).await);
        let out = xa_ok(&cfg, &["rollback", &y.key()]);
        assert!(out.contains("rolled back"), "{out}");
        assert!(!prepared(&env, 0, &y).await);
        assert_eq!(audit_records(&env, &redis).await.len(), 2);
    })
    .await;
}
