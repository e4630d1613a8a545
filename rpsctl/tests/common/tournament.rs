//! A tournament played through `rpsctl run`, as the end-to-end tests set it
//! up: the whole pipeline in one process on the test's slice, streaming
//! before the simulator writes its first match.
// Each test file includes this and uses what it needs of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use test_support::{free_port, KillOnDrop, TestEnv};
use tokio_util::sync::CancellationToken;

/// `env` with the API on a free port and the compensator's retries in
/// fractions of a second, not the default's seconds to a minute: a deadline
/// whose first attempt fails still fires within the test's waits.
pub async fn tournament_env(env: TestEnv) -> TestEnv {
    let mut config = env.config.as_ref().clone();
    config.api.bind = format!("127.0.0.1:{}", free_port());
    config.compensator.retry_initial_ms = 200;
    config.compensator.retry_max_ms = 1_000;
    TestEnv::from_config(config.redis.prefix.clone(), config).await
}

/// `rpsctl run` (reader, projector, compensator and API) on the config file
/// at `path`.
pub fn rpsctl_run(path: &Path) -> KillOnDrop {
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_rpsctl"))
            .arg("--config")
            .arg(path)
            .arg("run")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rpsctl run"),
    )
}

/// The pipeline of a tournament. The fields drop in their order: the
/// pipeline is killed before its config file goes.
pub struct Tournament {
    pub pipeline: KillOnDrop,
    /// The config file `rpsctl` reads.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    pub env: TestEnv,
}

/// Starts `rpsctl run` on [`tournament_env`] of `env` and waits until the
/// readers have stored their starting checkpoints and the projector its
/// generation: from then on every row inserted is the pipeline's to
/// publish and apply.
pub async fn start(env: TestEnv) -> Tournament {
    let env = tournament_env(env).await;
    let (dir, path) = env.write_config_file();
    let pipeline = rpsctl_run(&path);
    test_support::pipeline::wait_until_streaming(&env.config).await;
    Tournament {
        pipeline,
        path,
        _dir: dir,
        env,
    }
}

/// The tournaments' mix of matches: a tenth abandoned (the compensator
/// times them out), some voided, every deadline two seconds after the start.
pub fn matches(players: u64, matches: u64, concurrency: usize) -> simulator::SimulateOptions {
    simulator::SimulateOptions {
        players,
        matches,
        abandoned: 0.1,
        voided: 0.05,
        deadline: Duration::from_secs(2),
        concurrency,
        ..Default::default()
    }
}

/// The simulator playing `options` on a task of its own, so the test can
/// watch the pipeline meanwhile.
pub fn play(
    env: &TestEnv,
    options: simulator::SimulateOptions,
) -> tokio::task::JoinHandle<simulator::Report> {
    let store = env.store.clone();
    tokio::spawn(async move {
        simulator::run(store, options, CancellationToken::new())
            .await
            .expect("simulate")
    })
}
