//! Rows appended to every shard at once, and what each shard stream must
//! hold once the reader has published them: the exactly-once checks of the
//! reader's scale and kill tests.

use rps_core::{MatchEvent, ShardId, Timestamp};
use rps_event_store::EventStore;
use std::collections::HashMap;

/// `n` valid `started` events routed to `shard`, match ids from
/// `first_match`. Unlike [`crate::started_events`], an event's id is a
/// function of its match id (a v5 UUID), so the same rows come out every
/// time, and the players are too (`shard + shard_count * match_id`), so
/// matches made by separate calls never share a player.
pub fn started_events_of_fixed_ids(
    shard: ShardId,
    shard_count: u16,
    first_match: i64,
    n: usize,
) -> Vec<MatchEvent> {
    let now = Timestamp::now();
    (0..n as i64)
        .map(|k| {
            let match_id = first_match + k;
            let a = i64::from(shard) + i64::from(shard_count) * match_id;
            MatchEvent::started(
                MatchEvent::timed_out_event_id(match_id, 1),
                match_id,
                "2026Q4".parse().expect("season"),
                (a, a + 1),
                Timestamp(now.0 + k),
                Timestamp(now.0 + 30_000_000),
            )
        })
        .collect()
}

/// Every shard's load, each appending on a task of its own.
pub struct ShardLoads {
    want: HashMap<ShardId, (u64, u128)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts appending `events(shard)` to every shard of `store`, in
/// multi-row INSERTs of `chunk` rows, the shards in parallel.
pub fn load_every_shard(
    store: &EventStore,
    shard_count: u16,
    chunk: usize,
    mut events: impl FnMut(ShardId) -> Vec<MatchEvent>,
) -> ShardLoads {
    let mut loads = ShardLoads {
        want: HashMap::new(),
        tasks: Vec::new(),
    };
    for shard in 0..shard_count {
        let evs = events(shard);
        loads.want.insert(shard, crate::count_and_checksum(&evs));
        loads
            .tasks
            .push(crate::spawn_append(store, shard, evs, chunk));
    }
    loads
}

impl ShardLoads {
    /// Waits until every row is in; returns the count and event-id
    /// checksum that each shard's stream must then hold.
    pub async fn appended(self) -> HashMap<ShardId, (u64, u128)> {
        for t in self.tasks {
            t.await.expect("append task");
        }
        self.want
    }
}
