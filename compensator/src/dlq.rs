//! The operator's dead-letter operations behind `rpsctl dlq`: list, show,
//! retry and drop any entry of `keys.deadletter()`, whichever component
//! wrote it (cdc-reader and projector rejections, failed deadlines).
//!
//! Retrying means re-submitting to where the entry failed:
//! - a failed deadline (`compensator`/`deadline_failed`) is un-parked, so the
//!   next claim takes it again, and the compensators are woken;
//! - a rejected event is re-added to its shard stream, from its payload (or
//!   from the original stream entry if it is still there), so the projector
//!   validates it afresh;
//! - an entry that cannot be re-decoded into an event is left in place and
//!   the answer says why.
//!
//! A retried entry is removed only after the re-submission succeeded.

use crate::deadlines::{DeadlineStore, DEADLINE_FAILED};
use fred::clients::Client;
use fred::interfaces::{PubsubInterface, StreamsInterface};
use rps_core::deadletter::Origin;
use rps_core::keys::{deadline_member, Keys};
use rps_core::{StreamEvent, Timestamp};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("no dead letter with id {0} (see `rpsctl dlq list`)")]
    NotFound(String),
    #[error("dead letter {id} cannot be retried: {reason}")]
    CannotRetry { id: String, reason: String },
}

/// Field order for display: the [`rps_core::deadletter::DeadLetter`] fields.
pub const FIELD_ORDER: [&str; 15] = [
    "origin",
    "kind",
    "reason",
    "server",
    "db",
    "tbl",
    "file",
    "pos",
    "gtid",
    "shard",
    "mid",
    "eid",
    "stream_id",
    "payload",
    "at",
];

/// One dead letter as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqEntry {
    pub id: String,
    pub fields: HashMap<String, String>,
}

impl DlqEntry {
    pub fn get(&self, field: &str) -> &str {
        self.fields.get(field).map(String::as_str).unwrap_or("")
    }

    pub fn origin(&self) -> &str {
        self.get("origin")
    }

    pub fn kind(&self) -> &str {
        self.get("kind")
    }

    pub fn shard(&self) -> Option<u16> {
        self.get("shard").parse().ok()
    }

    pub fn match_id(&self) -> Option<i64> {
        self.get("mid").parse().ok()
    }

    /// When it was written (`at`, or the stream id's milliseconds).
    pub fn at(&self) -> Timestamp {
        self.get("at")
            .parse()
            .ok()
            .map(Timestamp)
            .or_else(|| {
                self.id
                    .split('-')
                    .next()
                    .and_then(|ms| ms.parse().ok())
                    .map(Timestamp::from_millis)
            })
            .unwrap_or_default()
    }

    /// Every field, known ones first in their documented order.
    pub fn ordered_fields(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = FIELD_ORDER
            .iter()
            .filter_map(|k| self.fields.get(*k).map(|v| (*k, v.as_str())))
            .collect();
        let mut rest: Vec<(&str, &str)> = self
            .fields
            .iter()
            .filter(|(k, _)| !FIELD_ORDER.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        rest.sort();
        out.extend(rest);
        out
    }
}

type Raw = Vec<(String, HashMap<String, String>)>;

async fn range(client: &Client, key: &str, start: &str, count: u64) -> Result<Raw, DlqError> {
    Ok(client
        .xrange_values::<String, String, String, _, _, _>(key, start, "+", Some(count))
        .await?)
}

/// Entries oldest first, optionally only one origin, at most `limit`.
pub async fn list(
    client: &Client,
    keys: &Keys,
    origin: Option<&str>,
    limit: usize,
) -> Result<Vec<DlqEntry>, DlqError> {
    let key = keys.deadletter();
    let mut out = Vec::new();
    let mut start = "-".to_string();
    while out.len() < limit {
        let page = range(client, &key, &start, 1000).await?;
        let n = page.len();
        for (id, fields) in page {
            start = format!("({id}");
            let e = DlqEntry { id, fields };
            if origin.is_none_or(|o| e.origin() == o) && out.len() < limit {
                out.push(e);
            }
        }
        if n < 1000 {
            break;
        }
    }
    Ok(out)
}

/// Number of entries.
pub async fn count(client: &Client, keys: &Keys) -> Result<u64, DlqError> {
    Ok(client.xlen(keys.deadletter()).await?)
}

pub async fn show(client: &Client, keys: &Keys, id: &str) -> Result<DlqEntry, DlqError> {
    let page: Raw = client
        .xrange_values::<String, String, String, _, _, _>(keys.deadletter(), id, id, Some(1))
        .await?;
    page.into_iter()
        .next()
        .map(|(id, fields)| DlqEntry { id, fields })
        .ok_or_else(|| DlqError::NotFound(id.to_string()))
}

/// What a retry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    /// The deadline `<shard>:<match>` is claimable again.
    DeadlineUnparked { member: String },
    /// The event was re-added to `stream` as entry `new_id`.
    EventRequeued { stream: String, new_id: String },
}

/// Re-submits a dead letter, then removes it.
pub async fn retry(client: &Client, keys: &Keys, id: &str) -> Result<Retried, DlqError> {
    let e = show(client, keys, id).await?;
    let cannot = |reason: String| DlqError::CannotRetry {
        id: id.to_string(),
        reason,
    };
    let done = if e.origin() == Origin::Compensator.as_str() {
        if e.kind() != DEADLINE_FAILED {
            return Err(cannot(format!("unknown compensator kind `{}`", e.kind())));
        }
        let (Some(shard), Some(mid)) = (e.shard(), e.match_id()) else {
            return Err(cannot("it names no shard and match".into()));
        };
        let member = deadline_member(shard, mid);
        DeadlineStore::new(client.clone(), keys.clone())
            .unpark(shard, mid)
            .await?;
        let _: i64 = client
            .publish(keys.compensator_wakeup(), member.clone())
            .await?;
        Retried::DeadlineUnparked { member }
    } else if e.origin() == Origin::Projector.as_str() || e.origin() == Origin::CdcReader.as_str() {
        let ev = match decode_payload(e.get("payload")) {
            Ok(ev) => ev,
            Err(payload_err) => match original_entry(client, keys, &e).await? {
                Some(ev) => ev,
                None => {
                    return Err(cannot(format!(
                        "its payload does not decode into an event ({payload_err}) and the original \
                         stream entry is gone; fix the row at its source ({}.{} {}:{}) and drop this entry",
                        e.get("db"),
                        e.get("tbl"),
                        e.get("file"),
                        e.get("pos")
                    )))
                }
            },
        };
        let stream = keys.events(ev.shard);
        let new_id: String = client
            .xadd(
                &stream,
                false,
                None,
                "*",
                ev.to_pairs()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<Vec<_>>(),
            )
            .await?;
        Retried::EventRequeued { stream, new_id }
    } else {
        return Err(cannot(format!("unknown origin `{}`", e.origin())));
    };
    let _: i64 = client.xdel(keys.deadletter(), id).await?;
    tracing::info!(
        id,
        origin = e.origin(),
        kind = e.kind(),
        ?done,
        "dead letter retried"
    );
    Ok(done)
}

/// Removes a dead letter, logging who dropped it and when.
pub async fn drop_entry(
    client: &Client,
    keys: &Keys,
    id: &str,
    by: &str,
) -> Result<DlqEntry, DlqError> {
    let e = show(client, keys, id).await?;
    // A dropped failed deadline stays parked: nobody fires it any more (the
    // operator decided so); its attempt history stays for reference.
    let _: i64 = client.xdel(keys.deadletter(), id).await?;
    tracing::info!(
        id,
        by,
        at = %Timestamp::now(),
        origin = e.origin(),
        kind = e.kind(),
        shard = ?e.shard(),
        match_id = ?e.match_id(),
        reason = e.get("reason"),
        "dead letter dropped"
    );
    Ok(e)
}

/// A payload holding a stream entry's fields: a JSON object `{field: value}`
/// or an array of `[field, value]` pairs.
pub fn decode_payload(payload: &str) -> Result<StreamEvent, String> {
    let v: serde_json::Value =
        serde_json::from_str(payload).map_err(|e| format!("not JSON: {e}"))?;
    let pairs: Vec<(String, String)> = match v {
        serde_json::Value::Object(m) => m.into_iter().map(|(k, v)| (k, json_text(v))).collect(),
        serde_json::Value::Array(a) => a
            .into_iter()
            .filter_map(|p| match p {
                serde_json::Value::Array(kv) if kv.len() == 2 => {
                    let mut it = kv.into_iter();
                    let k = json_text(it.next()?);
                    Some((k, json_text(it.next()?)))
                }
                _ => None,
            })
            .collect(),
        _ => return Err("JSON is neither an object nor a list of pairs".into()),
    };
    StreamEvent::decode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
        .map_err(|e| e.to_string())
}

fn json_text(v: serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The rejected entry as it still sits in its shard stream, if it does.
async fn original_entry(
    client: &Client,
    keys: &Keys,
    e: &DlqEntry,
) -> Result<Option<StreamEvent>, DlqError> {
    let (Some(shard), sid) = (e.shard(), e.get("stream_id")) else {
        return Ok(None);
    };
    if sid.is_empty() {
        return Ok(None);
    }
    let page: Raw = client
        .xrange_values::<String, String, String, _, _, _>(keys.events(shard), sid, sid, Some(1))
        .await?;
    Ok(page.into_iter().next().and_then(|(_, f)| {
        StreamEvent::decode(f.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))).ok()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_forms() {
        assert!(decode_payload("nope").unwrap_err().contains("not JSON"));
        assert!(decode_payload("3").is_err());
        let err = decode_payload(r#"{"shard":"1"}"#).unwrap_err();
        assert!(err.contains("lacks field"), "{err}");
    }
}
