//! A short-lived cache of rendered leaderboard pages.
//!
//! A page costs one ZRANGE plus one HMGET per row; at tens of thousands of
//! requests per second that would be millions of Redis operations. Pages are
//! the same for every caller, so each is rendered at most once per TTL and
//! served from memory in between; the staleness this adds is bounded by the
//! TTL (100 ms by default) on top of the projector's own freshness.

use rps_core::SeasonId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `(generation, season, offset, limit)`: a generation switch is a new key.
pub type PageKey = (u64, Option<SeasonId>, u64, u64);

/// Pages kept at most; beyond it the map is dropped (rare, deep pages).
const MAX_PAGES: usize = 4096;

/// A rendered page and when it was rendered.
type Page = (Instant, Arc<Vec<u8>>);

pub struct PageCache {
    ttl: Duration,
    pages: Mutex<HashMap<PageKey, Page>>,
}

impl PageCache {
    pub fn new(ttl: Duration) -> Self {
        PageCache {
            ttl,
            pages: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &PageKey) -> Option<Arc<Vec<u8>>> {
        if self.ttl.is_zero() {
            return None;
        }
        let pages = self.pages.lock().ok()?;
        let (at, body) = pages.get(key)?;
        (at.elapsed() < self.ttl).then(|| body.clone())
    }

    pub fn put(&self, key: PageKey, body: Vec<u8>) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut pages) = self.pages.lock() {
            if pages.len() >= MAX_PAGES {
                pages.clear();
            }
            pages.insert(key, (Instant::now(), Arc::new(body)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_can_be_disabled() {
        let c = PageCache::new(Duration::from_millis(30));
        c.put((1, None, 0, 100), b"x".to_vec());
        assert_eq!(c.get(&(1, None, 0, 100)).unwrap().as_slice(), b"x");
        assert!(c.get(&(2, None, 0, 100)).is_none());
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get(&(1, None, 0, 100)).is_none());
        let off = PageCache::new(Duration::ZERO);
        off.put((1, None, 0, 1), b"y".to_vec());
        assert!(off.get(&(1, None, 0, 1)).is_none());
    }
}
