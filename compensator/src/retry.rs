//! The retry schedule of a failed deadline, as a pure function.
//!
//! A deadline whose firing failed (shard down, Redis hiccup) is retried after
//! `retry_initial_ms`, then after twice that, doubling up to `retry_max_ms`;
//! after `max_attempts` failed attempts it goes to the dead letter. The
//! schedule is not slept on in-process: the next attempt time becomes the
//! deadline's lease expiry in Redis, so it survives a crash and any
//! compensator may take the retry. Keeping it pure lets the tests drive it on
//! tokio's paused clock.

use rps_core::config::CompensatorConfig;
use std::time::Duration;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Try again after this long.
    RetryAfter(Duration),
    /// Give up: dead-letter and park the deadline.
    DeadLetter,
}

/// Exponential backoff with a clamp and an attempt limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub max_attempts: u32,
}

impl RetryPolicy {
    pub fn from_config(c: &CompensatorConfig) -> Self {
        RetryPolicy {
            initial: Duration::from_millis(c.retry_initial_ms),
            max: Duration::from_millis(c.retry_max_ms.max(c.retry_initial_ms)),
            max_attempts: c.max_attempts.max(1),
        }
    }

    /// The step after `failed` attempts have failed (1 after the first failure).
    pub fn after_failures(&self, failed: u32) -> NextStep {
        if failed >= self.max_attempts {
            return NextStep::DeadLetter;
        }
        let exp = failed.saturating_sub(1).min(30);
        let delay = self
            .initial
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max)
            .min(self.max);
        NextStep::RetryAfter(delay)
    }

    /// The delays between attempts, in order (one fewer than `max_attempts`).
    pub fn delays(&self) -> Vec<Duration> {
        (1..)
            .map_while(|n| match self.after_failures(n) {
                NextStep::RetryAfter(d) => Some(d),
                NextStep::DeadLetter => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn policy() -> RetryPolicy {
        RetryPolicy::from_config(&CompensatorConfig::default())
    }

    #[test]
    fn default_schedule_is_5_10_20_then_dead_letter() {
        let p = policy();
        assert_eq!(
            p.delays(),
            vec![
                Duration::from_secs(5),
                Duration::from_secs(10),
                Duration::from_secs(20)
            ]
        );
        assert_eq!(p.after_failures(4), NextStep::DeadLetter);
    }

    #[test]
    fn doubling_is_clamped_at_the_maximum() {
        let p = RetryPolicy {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(60),
            max_attempts: 10,
        };
        let d = p.delays();
        assert_eq!(d.len(), 9);
        assert_eq!(d[3], Duration::from_secs(40));
        assert!(d[4..].iter().all(|x| *x == Duration::from_secs(60)));
        // No overflow for absurd attempt counts.
        let p = RetryPolicy {
            max_attempts: u32::MAX,
            ..p
        };
        assert_eq!(
            p.after_failures(1000),
            NextStep::RetryAfter(Duration::from_secs(60))
        );
    }

    /// Drives an always-failing operation by the schedule on the paused
    /// clock: attempts happen at 0, 5, 15 and 35 s, then it is given up.
    #[tokio::test(start_paused = true)]
    async fn attempts_follow_the_schedule_on_the_paused_clock() {
        let p = policy();
        let start = Instant::now();
        let attempts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = attempts.clone();
        let task = tokio::spawn(async move {
            let mut failed = 0;
            loop {
                log.lock().unwrap().push(start.elapsed());
                failed += 1;
                match p.after_failures(failed) {
                    NextStep::RetryAfter(d) => tokio::time::sleep(d).await,
                    NextStep::DeadLetter => return failed,
                }
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(attempts.lock().unwrap().len(), 1, "first attempt at once");
        // Just before each retry is due nothing has happened yet; at the due
        // instant it has.
        for (due, count) in [(5u64, 2usize), (15, 3), (35, 4)] {
            tokio::time::advance(Duration::from_millis(due * 1000 - 1) - start.elapsed()).await;
            tokio::task::yield_now().await;
            assert_eq!(attempts.lock().unwrap().len(), count - 1, "before {due}s");
            tokio::time::advance(Duration::from_millis(1)).await;
            tokio::task::yield_now().await;
            assert_eq!(attempts.lock().unwrap().len(), count, "at {due}s");
        }
        assert_eq!(task.await.unwrap(), 4);
        let at: Vec<u64> = attempts
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(at, vec![0, 5, 15, 35]);
    }
}
