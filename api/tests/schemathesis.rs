//! Schemathesis against the running API over real read models: every
//! operation of `/openapi.json` with the document's examples, its coverage
//! cases (boundaries, wrong types, undeclared methods) and fuzzed inputs,
//! with all of its checks: no 5xx, every answer as documented (status,
//! content type, body schema), invalid input refused, valid input accepted,
//! 405 with `Allow` for undeclared methods, no answer slower than the limit,
//! and the whole run within a time limit.
//!
//! Schemathesis comes from PyPI through `scripts/schemathesis.sh`, which
//! installs it under `.dev-env/` on first use; without network that fails,
//! and so does this test, saying why.

mod common;

use rps_api::ApiOptions;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use test_support::TestEnv;
use tokio::process::Command;

/// Installing takes about ten seconds with a warm network; pip alone may
/// retry for a minute without one before it gives up.
const INSTALL_LIMIT: Duration = Duration::from_secs(300);
/// A run takes well under a minute; anything near this is a hang.
const RUN_LIMIT: Duration = Duration::from_secs(240);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/schemathesis.sh")
}

/// Runs the script with `args`, killing it at `limit`; its exit status and
/// everything it printed.
async fn run(args: &[String], limit: Duration) -> (Option<i32>, String) {
    // Schemathesis keeps caches in its working directory; not the checkout.
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    let child = Command::new(script())
        .args(args)
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()));
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.expect("schemathesis.sh output");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.code(), text)
        }
        Err(_) => panic!(
            "`{} {}` did not finish within {limit:?} (killed): a hang",
            script().display(),
            args.join(" ")
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let (code, out) = run(&["install".to_string()], INSTALL_LIMIT).await;
    assert_eq!(
        code,
        Some(0),
        "schemathesis is needed for this test and could not be installed \
         (scripts/schemathesis.sh; it needs python3, python3-venv and access to PyPI):\n{out}"
    );

    let env = TestEnv::with_shards("api_schemathesis", 1).await;
    common::load_fixture(&env).await;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let server = common::Server::start(env.config.clone(), metrics, ApiOptions::default()).await;

    // A fixed seed keeps a failure reproducible; RPS_SCHEMATHESIS_SEED
    // explores others.
    let seed = std::env::var("RPS_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261120".into());
    let report = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("schemathesis");
    // The checked-in document (the one served, see the unit tests) rather
    // than its URL: schemathesis leaves out the operation it loaded the
    // document from, and `/openapi.json` is one of ours.
    let document = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let args: Vec<String> = [
        "run",
        &document.display().to_string(),
        "--url",
        &format!("http://{}", server.addr),
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "300",
        "--seed",
        &seed,
        "--workers",
        "2",
        "--request-timeout",
        "5",
        "--max-response-time",
        "2",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        &report.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    // More options for a run by hand, e.g. `--report har` or `-n 2000`.
    .chain(
        std::env::var("RPS_SCHEMATHESIS_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from),
    )
    .collect();
    let (code, out) = run(&args, RUN_LIMIT).await;
    server.stop().await;
    env.cleanup().await;
    println!("{out}");
    assert_eq!(
        code,
        Some(0),
        "schemathesis found problems (seed {seed}; report in {}):\n{out}",
        report.display()
    );
    // Guards against a run that tested nothing (a schema it could not load
    // or operations it filtered out) and still exited 0.
    let doc: serde_json::Value = serde_json::from_str(rps_api::OPENAPI_JSON).unwrap();
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().keys())
        .filter(|k| {
            [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&k.as_str())
        })
        .count();
    assert!(
        out.contains(&format!("Tested: {operations}\n")),
        "expected all {operations} operations to be tested:\n{out}"
    );
}
