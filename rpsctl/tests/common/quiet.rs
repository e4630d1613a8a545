//! The quiet moment after a tournament played through `rpsctl run`: what
//! every end-to-end test waits for before it compares.

// Each test file includes this and uses what it needs of it.
#![allow(dead_code)]

use history::verify::VerifyReport;
use std::time::Duration;
use test_support::{eventually, TestEnv};
use tokio_util::sync::CancellationToken;

/// Waits until `abandoned` matches have a `timed_out` in the event tables
/// and asserts there are no more: every deadline fired exactly once.
pub async fn every_abandoned_match_timed_out_once(env: &TestEnv, abandoned: u64) {
    let timed_out = eventually(
        "every abandoned match to time out",
        Duration::from_secs(90),
        || async move {
            let n = env.count_events("timed_out").await;
            (n >= abandoned).then_some(n)
        },
    )
    .await;
    assert_eq!(timed_out, abandoned, "a deadline fired more than once");
}

/// Waits until `rpsctl verify` finds the live read models equal to the fold
/// of every event table; returns its report.
pub async fn read_models_equal_the_fold(env: &TestEnv) -> VerifyReport {
    verified(env, "read models to equal the fold of history", |r| {
        r.total_differences == 0
    })
    .await
}

/// As [`read_models_equal_the_fold`], from a run during which the live
/// generation's progress did not move: what the pipeline shows then is the
/// quiet state itself.
pub async fn read_models_equal_the_fold_unmoved(env: &TestEnv) -> VerifyReport {
    verified(env, "the read models to equal the fold", |r| {
        r.total_differences == 0 && !r.pipeline_moved
    })
    .await
}

async fn verified(env: &TestEnv, what: &str, done: fn(&VerifyReport) -> bool) -> VerifyReport {
    let verify = eventually(what, Duration::from_secs(90), || {
        let config = env.config.clone();
        async move {
            let r = history::verify::run(config, Default::default(), CancellationToken::new())
                .await
                .ok()?;
            done(&r).then_some(r)
        }
    })
    .await;
    assert!(verify.keys_checked > 0);
    verify
}
