//! The exactly-once check of a load from `test_support::shard_load`, on the
//! reader's own summaries of the shard streams. rpsctl's kill test includes
//! this file too: test-support cannot depend on the reader.

use cdc_reader::inspect::StreamSummary;
use fred::clients::Client;
use rps_core::{Config, ShardId};
use std::collections::HashMap;

/// Asserts that every shard's stream holds its rows of `want` (count and
/// event-id checksum), none twice; returns the summaries.
pub async fn published_once(
    redis: &Client,
    config: &Config,
    want: &HashMap<ShardId, (u64, u128)>,
) -> HashMap<ShardId, StreamSummary> {
    let got = cdc_reader::inspect::all_streams(redis, config)
        .await
        .unwrap();
    for (shard, (n, sum)) in want {
        let s = &got[shard];
        assert_eq!(s.entries, *n, "shard {shard}: entries");
        assert_eq!(s.distinct_events, *n, "shard {shard}: duplicates");
        assert_eq!(s.id_checksum, *sum, "shard {shard}: id checksum");
    }
    got
}
