//! Stream trimming: keep each shard stream short without ever dropping an
//! entry some consumer group has not acknowledged.
//!
//! The trim point of a stream is the lowest id any group still needs (its
//! oldest pending entry, else its last-delivered id), and never more recent
//! than `now − cdc.stream_retain_secs`, so a recent window stays for a
//! replay's catch-up. A stream without groups is never trimmed: nobody has
//! said what they read.

use fred::prelude::*;
use fred::types::{CustomCommand, Value};
use rps_core::redis_client::slot_of;
use rps_core::stream::StreamId;
use rps_core::Config;
fn text(v: &Value) -> Option<String> {
    v.as_string()
}

/// The lowest id any group of `key` still needs; `None` if it has no group.
pub async fn lowest_needed(
    client: &Client,
    key: &str,
) -> Result<Option<StreamId>, fred::error::Error> {
    let groups: Value = client
        .custom(
            CustomCommand::new_static("XINFO", slot_of(key), false),
            vec!["GROUPS", key],
        )
        .await?;
    let mut lowest: Option<StreamId> = None;
    for g in groups.into_array() {
        let fields = g.into_array();
        let mut name = None;
        let mut pending = 0u64;
        let mut last = None;
        for kv in fields.chunks(2) {
            let (Some(k), Some(v)) = (kv.first().and_then(text), kv.get(1)) else {
                continue;
            };
            match k.as_str() {
                "name" => name = text(v),
                "pending" => pending = v.as_u64().unwrap_or(0),
                "last-delivered-id" => last = text(v).and_then(|s| StreamId::parse(&s)),
                _ => {}
            }
        }
        let Some(name) = name else { continue };
        let need = if pending > 0 {
            let summary: Value = client
                .custom(
                    CustomCommand::new_static("XPENDING", slot_of(key), false),
                    vec![key, name.as_str()],
                )
                .await?;
            summary
                .into_array()
                .get(1)
                .and_then(text)
                .and_then(|s| StreamId::parse(&s))
        } else {
            last
        };
        // A group we cannot read keeps everything.
        let need = need.unwrap_or_default();
        lowest = Some(lowest.map_or(need, |l| l.min(need)));
    }
    Ok(lowest)
}

/// Trims every shard stream once; returns the entries removed.
pub async fn trim_once(
    client: &Client,
    config: &Config,
    now_ms: u64,
) -> Result<u64, fred::error::Error> {
    let keys = config.keys();
    let floor = StreamId {
        ms: now_ms.saturating_sub(config.cdc.stream_retain_secs.saturating_mul(1000)),
        seq: 0,
    };
    let mut removed = 0u64;
    for shard in 0..config.shard_count {
        let key = keys.events(shard);
        let Some(needed) = lowest_needed(client, &key).await? else {
            continue;
        };
        let min_id = needed.min(floor);
        if min_id == StreamId::default() {
            continue;
        }
        let n: Value = client
            .custom(
                CustomCommand::new_static("XTRIM", slot_of(&key), false),
                vec![key.clone(), "MINID".into(), min_id.to_string()],
            )
            .await?;
        removed += n.as_u64().unwrap_or(0);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_numerically() {
        assert!(StreamId::parse("9-5").unwrap() < StreamId::parse("10-0").unwrap());
        assert_eq!(StreamId::parse("17").unwrap(), StreamId { ms: 17, seq: 0 });
        assert_eq!(StreamId { ms: 3, seq: 4 }.to_string(), "3-4");
    }
}
