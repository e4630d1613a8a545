//! Match ids: the hybrid 64-bit generator the game servers use.
//!
//! Layout, high to low: 41 bits of milliseconds since [`EPOCH_MS`], 3 bits of
//! datacenter, 7 bits of node, 13 bits of sequence. Unique across nodes by
//! construction, strictly increasing per node, and still so when the wall
//! clock steps back: the generator keeps a logical `(ms, seq)` clock that
//! never moves backwards and borrows the next millisecond when a
//! millisecond's 8192 sequence numbers are used up.

use std::sync::atomic::{AtomicU64, Ordering};

/// 2024-01-01T00:00:00Z: 41 bits of milliseconds reach into 2093.
pub const EPOCH_MS: u64 = 1_704_067_200_000;
pub const SEQUENCE_BITS: u32 = 13;
pub const NODE_BITS: u32 = 7;
pub const DATACENTER_BITS: u32 = 3;
const TIMESTAMP_SHIFT: u32 = SEQUENCE_BITS + NODE_BITS + DATACENTER_BITS;

#[derive(Debug, thiserror::Error)]
#[error("datacenter {datacenter} must be < 8 and node {node} < 128")]
pub struct NodeOutOfRange {
    pub datacenter: u8,
    pub node: u8,
}

/// One node's generator; share it between threads by reference.
#[derive(Debug)]
pub struct MatchIdGenerator {
    datacenter: u64,
    node: u64,
    /// `(ms << SEQUENCE_BITS) | seq` of the last id handed out.
    clock: AtomicU64,
    now_ms: fn() -> u64,
}

fn system_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The parts of an id, for tests and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdParts {
    pub unix_ms: u64,
    pub datacenter: u8,
    pub node: u8,
    pub sequence: u16,
}

impl MatchIdGenerator {
    pub fn new(datacenter: u8, node: u8) -> Result<Self, NodeOutOfRange> {
        Self::with_clock(datacenter, node, system_ms)
    }

    /// A generator reading time from `now_ms` (Unix milliseconds).
    pub fn with_clock(
        datacenter: u8,
        node: u8,
        now_ms: fn() -> u64,
    ) -> Result<Self, NodeOutOfRange> {
        if u32::from(datacenter) >= 1 << DATACENTER_BITS || u32::from(node) >= 1 << NODE_BITS {
            return Err(NodeOutOfRange { datacenter, node });
        }
        Ok(MatchIdGenerator {
            datacenter: u64::from(datacenter),
            node: u64::from(node),
            clock: AtomicU64::new(0),
            now_ms,
        })
    }

    pub fn next_id(&self) -> i64 {
        let now = (self.now_ms)().saturating_sub(EPOCH_MS) << SEQUENCE_BITS;
        let mut prev = self.clock.load(Ordering::Relaxed);
        let next = loop {
            let next = now.max(prev + 1);
            match self
                .clock
                .compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break next,
                Err(actual) => prev = actual,
            }
        };
        let ms = next >> SEQUENCE_BITS;
        let seq = next & ((1 << SEQUENCE_BITS) - 1);
        ((ms << TIMESTAMP_SHIFT)
            | (self.datacenter << (SEQUENCE_BITS + NODE_BITS))
            | (self.node << SEQUENCE_BITS)
            | seq) as i64
    }

    pub fn parts(id: i64) -> IdParts {
        let id = id as u64;
        IdParts {
            unix_ms: (id >> TIMESTAMP_SHIFT) + EPOCH_MS,
            datacenter: ((id >> (SEQUENCE_BITS + NODE_BITS)) & 0b111) as u8,
            node: ((id >> SEQUENCE_BITS) & 0x7f) as u8,
            sequence: (id & 0x1fff) as u16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicU64 as Clock;

    static FAKE_NOW: Clock = Clock::new(EPOCH_MS + 1_000_000);
    fn fake_now() -> u64 {
        FAKE_NOW.load(Ordering::SeqCst)
    }

    #[test]
    fn bit_layout() {
        let g = MatchIdGenerator::new(5, 99).unwrap();
        let before = system_ms();
        let id = g.next_id();
        let p = MatchIdGenerator::parts(id);
        assert!(id > 0);
        assert_eq!((p.datacenter, p.node), (5, 99));
        assert!(p.unix_ms >= before && p.unix_ms <= system_ms());
        assert!(MatchIdGenerator::new(8, 0).is_err());
        assert!(MatchIdGenerator::new(0, 128).is_err());
    }

    #[test]
    fn monotonic_and_sequence_rolls_into_next_ms() {
        let g = MatchIdGenerator::with_clock(0, 1, fake_now).unwrap();
        let mut last = 0;
        for _ in 0..20_000 {
            let id = g.next_id();
            assert!(id > last);
            last = id;
        }
        // 20k ids in one frozen millisecond borrowed two more milliseconds.
        let p = MatchIdGenerator::parts(last);
        assert_eq!(p.unix_ms, fake_now() + 2);
    }

    #[test]
    fn clock_going_backwards_keeps_ids_increasing() {
        static NOW: Clock = Clock::new(EPOCH_MS + 5_000_000);
        fn now() -> u64 {
            NOW.load(Ordering::SeqCst)
        }
        let g = MatchIdGenerator::with_clock(1, 2, now).unwrap();
        let a = g.next_id();
        NOW.store(EPOCH_MS + 4_000_000, Ordering::SeqCst); // 1000 s back
        let b = g.next_id();
        let c = g.next_id();
        assert!(a < b && b < c);
        NOW.store(EPOCH_MS + 6_000_000, Ordering::SeqCst);
        let d = g.next_id();
        assert!(c < d);
        assert_eq!(MatchIdGenerator::parts(d).unix_ms, EPOCH_MS + 6_000_000);
    }

    #[test]
    fn unique_across_eight_threads_and_nodes() {
        let gens: Vec<_> = (0..4)
            .map(|n| MatchIdGenerator::new(0, n).unwrap())
            .collect();
        let ids: Vec<i64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let g = &gens[t % 4];
                    s.spawn(move || (0..50_000).map(|_| g.next_id()).collect::<Vec<_>>())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }
}
