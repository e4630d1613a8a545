//! Progress of a long command: a bar with rate and ETA on a terminal, plain
//! log lines (every few seconds) otherwise, so logs of a scripted run stay
//! readable.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A shared counter of work done, shown while it runs.
#[derive(Clone)]
pub struct Progress {
    done: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Progress {
    /// Starts showing `label` progress; `total` may be set later.
    pub fn start(label: &'static str, quiet: bool) -> Progress {
        let p = Progress {
            done: Arc::new(AtomicU64::new(0)),
            total: Arc::new(AtomicU64::new(0)),
            stop: CancellationToken::new(),
        };
        if !quiet {
            let me = p.clone();
            tokio::spawn(async move { me.show(label).await });
        }
        p
    }

    /// A counter nobody shows (tests, library callers).
    pub fn hidden() -> Progress {
        Self::start("", true)
    }

    pub fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    pub fn finish(&self) {
        self.stop.cancel();
    }

    async fn show(self, label: &'static str) {
        let started = Instant::now();
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec}, ETA {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(label);
            loop {
                let total = self.total.load(Ordering::Relaxed);
                let done = self.done.load(Ordering::Relaxed);
                bar.set_length(total.max(done));
                bar.set_position(done);
                tokio::select! {
                    _ = self.stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            bar.set_position(self.done.load(Ordering::Relaxed));
            bar.finish();
        } else {
            loop {
                tokio::select! {
                    _ = self.stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                let done = self.done.load(Ordering::Relaxed);
                let total = self.total.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                let rate = done as f64 / secs;
                let eta = if rate > 0.0 && total > done {
                    format!("{:.0}s", (total - done) as f64 / rate)
                } else {
                    "-".to_string()
                };
                tracing::info!(target: "progress", "{label}: {done}/{total} ({rate:.0}/s, ETA {eta})");
            }
        }
    }
}
