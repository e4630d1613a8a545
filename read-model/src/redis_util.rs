//! Small helpers over fred: connecting with the pipeline's policy and
//! reading raw replies (`Value`) of commands fred has no typed form for.

use fred::prelude::*;
use fred::types::Value;
use rps_core::redis_client::ClientPolicy;

/// A connected client with the pipeline's policy: it reconnects by itself
/// and never resends a command that was in flight (an `XREADGROUP >` sent
/// twice would move the group past entries this worker never received).
pub async fn connect(redis: &rps_core::config::RedisConfig) -> Result<Client, fred::error::Error> {
    ClientPolicy::default().connect(redis).await
}

/// A text reply (bulk string, simple string or integer) as a `String`.
pub fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Array(_) | Value::Map(_) => None,
        other => other.as_str().map(|s| s.into_owned()),
    }
}

/// A flat `[k1, v1, k2, v2, …]` reply (or a map) as pairs; `None` when empty.
pub fn hash_pairs(v: Value) -> Option<Vec<(String, String)>> {
    let pairs: Vec<(String, String)> = match v {
        Value::Map(m) => m
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), value_text(&v)?)))
            .collect(),
        Value::Array(a) => a
            .chunks(2)
            .filter_map(|c| Some((value_text(c.first()?)?, value_text(c.get(1)?)?)))
            .collect(),
        _ => return None,
    };
    (!pairs.is_empty()).then_some(pairs)
}

/// Whether a failed EVALSHA means the script is not loaded.
pub fn is_noscript(e: &fred::error::Error) -> bool {
    e.details().starts_with("NOSCRIPT")
}

/// A batch script's `{status, detail}` reply as two strings (empty when
/// absent).
pub fn script_reply(reply: Value) -> (String, String) {
    let mut parts = reply.into_array().into_iter();
    let mut next = || {
        parts
            .next()
            .and_then(|v| value_text(&v))
            .unwrap_or_default()
    };
    let status = next();
    (status, next())
}
