//! Paces match starts to `--rate` matches per second, shared by every shard
//! writer; without a rate every claim is granted at once.
//!
//! The schedule is absolute (start `n` is due at `n / rate` seconds after
//! the pacer was made), so a writer that falls behind catches up in a burst
//! instead of drifting, and the long-run rate is exact.

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::{Duration, Instant};

#[derive(Debug)]
pub struct Pacer {
    rate: Option<f64>,
    t0: Instant,
    claimed: AtomicU64,
}

impl Pacer {
    /// `rate` in starts per second; `None` or a non-positive rate means unpaced.
    pub fn new(rate: Option<f64>) -> Self {
        Pacer {
            rate: rate.filter(|r| *r > 0.0 && r.is_finite()),
            t0: Instant::now(),
            claimed: AtomicU64::new(0),
        }
    }

    /// Takes up to `want` starts that are due now; returns how many were granted.
    pub fn claim(&self, want: u64) -> u64 {
        let Some(rate) = self.rate else {
            return want;
        };
        let due = (self.t0.elapsed().as_secs_f64() * rate).floor() as u64 + 1;
        let mut claimed = self.claimed.load(Ordering::Relaxed);
        loop {
            let grant = due.saturating_sub(claimed).min(want);
            if grant == 0 {
                return 0;
            }
            match self.claimed.compare_exchange_weak(
                claimed,
                claimed + grant,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return grant,
                Err(actual) => claimed = actual,
            }
        }
    }

    /// When the next unclaimed start falls due (now, when unpaced).
    pub fn next_due(&self) -> Instant {
        match self.rate {
            None => Instant::now(),
            Some(rate) => {
                let n = self.claimed.load(Ordering::Relaxed);
                self.t0 + Duration::from_secs_f64(n as f64 / rate)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn grants_follow_the_schedule() {
        let p = Pacer::new(Some(100.0));
        assert_eq!(p.claim(10), 1, "the first start is due at once");
        assert_eq!(p.claim(10), 0);
        tokio::time::advance(Duration::from_millis(55)).await;
        assert_eq!(p.claim(10), 5, "starts 1..=5 fell due at 10..50 ms");
        assert_eq!(p.next_due(), p.t0 + Duration::from_millis(60));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(p.claim(3), 3, "a claim never exceeds what is asked");
        assert_eq!(p.claim(1000), 106 - 9, "1.055 s in: starts 0..=105 are due");
    }

    #[test]
    fn unpaced_grants_everything() {
        let p = Pacer::new(None);
        assert_eq!(p.claim(12345), 12345);
        assert!(p.next_due() <= Instant::now());
        assert_eq!(Pacer::new(Some(0.0)).claim(7), 7);
    }
}
