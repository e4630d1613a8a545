//! The scriptable surface of `rpsctl`: exit codes (0 ok, 1 differences,
//! 2 usage, 3 could not run), `--json` reports and shell completions.
//! The "could not run" cases point at closed ports; the differences case
//! runs against a test slice of the shared servers.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use test_support::{test_config, TestEnv, TestServer};
use tokio_util::sync::CancellationToken;

const DIFFERENCES: i32 = 1;
const USAGE: i32 = 2;
const COULD_NOT_RUN: i32 = 3;

/// `rpsctl [--config FILE] <args>`: exit code, stdout, stderr.
fn rpsctl(config: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rpsctl"));
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("RPS_CONFIG")
        .output()
        .expect("run rpsctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn completions_need_no_config_and_name_the_subcommands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such.toml");
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = rpsctl(Some(&missing), &["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(!out.is_empty(), "{shell}: no output");
        for sub in ["verify", "replay", "dlq", "completions"] {
            assert!(out.contains(sub), "{shell}: `{sub}` not in\n{out}");
        }
    }
    let (code, _, _) = rpsctl(None, &["completions", "tcsh"]);
    assert_eq!(code, USAGE);
}

#[test]
fn help_documents_the_exit_codes() {
    let (code, out, _) = rpsctl(None, &["--help"]);
    assert_eq!(code, 0);
    for line in [
        "Exit codes:",
        "0  ok",
        "1  differences",
        "2  usage",
        "3  could not run",
    ] {
        assert!(out.contains(line), "{line:?} not in\n{out}");
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["statuz"][..],
        &["verify", "--no-such-flag"],
        // Durations need their unit.
        &["top", "--interval", "500"],
        &["replay", "--switch-timeout", "300"],
        &["xa", "sweep", "--older-than", "ten", "--rollback"],
        &["export"],
    ] {
        let (code, _, err) = rpsctl(None, args);
        assert_eq!(code, USAGE, "{args:?}: {err}");
    }
    let (_, _, err) = rpsctl(None, &["top", "--interval", "500"]);
    assert!(err.contains("not a duration"), "{err}");
}

#[test]
fn a_missing_config_could_not_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = rpsctl(Some(&dir.path().join("no-such.toml")), &["status"]);
    assert_eq!(code, COULD_NOT_RUN, "{err}");
    assert!(err.contains("no-such.toml"), "{err}");
}

#[test]
fn closed_ports_could_not_run() {
    let servers = [TestServer {
        name: "mysql-a".into(),
        port: closed_port(),
    }];
    let config = test_config(
        "exit_closed",
        2,
        &servers,
        &format!("redis://127.0.0.1:{}", closed_port()),
    );
    let (_dir, path) = test_support::write_config_file(&config);
    for args in [
        &["verify"][..],
        &["verify", "--json"],
        &["dlq", "list", "--json"],
        &["xa", "list"],
    ] {
        let t = std::time::Instant::now();
        let (code, out, err) = rpsctl(Some(&path), args);
        assert_eq!(
            code, COULD_NOT_RUN,
            "{args:?}\nstdout:\n{out}\nstderr:\n{err}"
        );
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "{args:?} took {:?}",
            t.elapsed()
        );
    }
    // Redis answers, the shard server does not.
    let config = test_config(
        "exit_closed",
        2,
        &servers,
        &test_support::shared_redis_url(),
    );
    let (_dir2, path2) = test_support::write_config_file(&config);
    for args in [&["verify"][..], &["export", "--format", "csv"]] {
        let (code, out, err) = rpsctl(Some(&path2), args);
        assert_eq!(
            code, COULD_NOT_RUN,
            "{args:?}\nstdout:\n{out}\nstderr:\n{err}"
        );
        assert!(err.contains("mysql-a"), "{args:?}: {err}");
    }
    // A shard the topology does not have is the caller's mistake.
    let (code, _, err) = rpsctl(Some(&path), &["export", "--format", "csv", "--shard", "7"]);
    assert_eq!(code, USAGE, "{err}");
    assert!(err.contains("shard 7 does not exist"), "{err}");
}

/// No pipeline runs: the live read models are empty, so the fold of the
/// simulated events differs from them everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_exits_1_with_the_report_on_stdout() {
    let env = TestEnv::new("exit_drift").await;
    let (_dir, path) = env.write_config_file();
    simulator::run(
        env.store.clone(),
        simulator::SimulateOptions {
            players: 50,
            matches: 40,
            seed: Some(7),
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await
    .expect("simulate");

    let (code, out, err) = rpsctl(Some(&path), &["verify", "--json"]);
    assert_eq!(code, DIFFERENCES, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("verify --json");
    assert!(v["total_differences"].as_u64().unwrap() > 0, "{v}");
    assert!(err.contains("differences"), "{err}");

    let (code, out, err) = rpsctl(Some(&path), &["verify"]);
    assert_eq!(code, DIFFERENCES, "{out}{err}");
    assert!(out.contains("differences"), "{out}");

    // A repair mends it: 0, and then there is nothing to find.
    let (code, out, err) = rpsctl(Some(&path), &["verify", "--repair", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = rpsctl(Some(&path), &["verify", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("verify --json");
    assert_eq!(v["total_differences"], 0, "{v}");
    env.cleanup().await;
}

/// `init`, `simulate`, `export` and `dlq` print one JSON document where a
/// script expects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_reports_of_init_simulate_export_and_dlq() {
    let env = TestEnv::new("exit_json").await;
    let (dir, path) = env.write_config_file();

    let (code, out, err) = rpsctl(Some(&path), &["init", "--json"]);
    assert_eq!(code, 0, "{err}");
    let init: serde_json::Value = serde_json::from_str(&out).expect("init --json");
    assert_eq!(init["changed"], false, "{init}");
    assert_eq!(
        init["servers"].as_array().expect("servers").len(),
        env.config.servers.len()
    );

    let (code, out, err) = rpsctl(
        Some(&path),
        &[
            "simulate",
            "--players",
            "50",
            "--matches",
            "30",
            "--seed",
            "3",
            "--deadline",
            "1m",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let sim: serde_json::Value = serde_json::from_str(&out).expect("simulate --json");
    let events = sim["events"].as_u64().expect("events");
    assert!(events >= 30, "{sim}");
    let per_shard: u64 = sim["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| s["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(per_shard, events);

    // To stdout: the rows alone on stdout, the summary on stderr.
    let (code, out, err) = rpsctl(Some(&path), &["export", "--format", "ndjson", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count() as u64, events);
    for l in out.lines() {
        let row: serde_json::Value = serde_json::from_str(l).expect("an ndjson row");
        assert!(row["event_id"].is_string(), "{l}");
    }
    let summary: serde_json::Value = serde_json::from_str(&err).expect("summary on stderr");
    assert_eq!(summary["rows"].as_u64(), Some(events), "{summary}");
    assert_eq!(summary["output"], "-");
    // To a file: the summary on stdout.
    let file = dir.path().join("events.csv");
    let (code, out, err) = rpsctl(
        Some(&path),
        &[
            "export",
            "--format",
            "csv",
            "--json",
            "--output",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).expect("summary on stdout");
    assert_eq!(summary["rows"].as_u64(), Some(events), "{summary}");
    assert_eq!(summary["format"], "csv");

    let (code, out, err) = rpsctl(Some(&path), &["dlq", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("dlq list --json");
    assert_eq!(list["total"], 0, "{list}");
    assert_eq!(list["entries"].as_array().map(Vec::len), Some(0));
    // An id that is not there: the command could not do it.
    let (code, _, err) = rpsctl(Some(&path), &["dlq", "show", "1-0", "--json"]);
    assert_eq!(code, COULD_NOT_RUN, "{err}");
    env.cleanup().await;
}
