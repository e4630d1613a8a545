//! Small helpers over fred: connecting with the pipeline's policy and
//! reading raw replies (`Value`) of commands fred has no typed form for.

use fred::prelude::*;
use fred::types::Value;
use std::time::Duration;

/// A connected client that reconnects by itself; commands fail fast while
/// disconnected so the caller's retry loop decides what to do.
pub async fn connect(url: &str) -> Result<Client, fred::error::Error> {
    let config = fred::types::config::Config::from_url(url)?;
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(30);
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build()?;
    client.init().await?;
    Ok(client)
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

/// Whether a failed XGROUP CREATE means the group exists already.
pub fn is_busygroup(e: &fred::error::Error) -> bool {
    e.details().contains("BUSYGROUP")
}
