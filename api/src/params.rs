//! Query and path parameters: parsed by hand so every bad value becomes a
//! 400 with a JSON body naming the parameter, never an extractor's plain
//! text rejection or a panic.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use rps_core::SeasonId;

/// A parameter that cannot be used, and why.
#[derive(Debug, Clone)]
pub struct ParamError {
    pub parameter: &'static str,
    pub message: String,
}

impl ParamError {
    pub fn new(parameter: &'static str, message: impl Into<String>) -> Self {
        ParamError {
            parameter,
            message: message.into(),
        }
    }
}

/// The query string as pairs, or why it could not be read.
pub struct QueryPairs(pub Result<Vec<(String, String)>, ParamError>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let q = Query::<Vec<(String, String)>>::from_request_parts(parts, state).await;
        Ok(QueryPairs(q.map(|Query(v)| v).map_err(|e| {
            ParamError::new(
                "query",
                format!("malformed query string: {}", e.body_text()),
            )
        })))
    }
}

fn lookup<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `season=YYYYQn`; absent or empty means all-time.
pub fn season(q: &[(String, String)]) -> Result<Option<SeasonId>, ParamError> {
    match lookup(q, "season") {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            ParamError::new(
                "season",
                format!("`season` must look like 2026Q4 (YYYYQn, n in 1..4), got {s:?}"),
            )
        }),
    }
}

/// A non-negative integer parameter no larger than `max`.
pub fn uint(
    q: &[(String, String)],
    name: &'static str,
    default: u64,
    max: u64,
) -> Result<u64, ParamError> {
    let Some(s) = lookup(q, name) else {
        return Ok(default);
    };
    match s.parse::<u64>() {
        Ok(v) if v <= max => Ok(v),
        _ => Err(ParamError::new(
            name,
            format!("`{name}` must be an integer between 0 and {max}, got {s:?}"),
        )),
    }
}

/// A positive 64-bit id from the path.
pub fn id(s: &str, name: &'static str) -> Result<i64, ParamError> {
    match s.parse::<i64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(ParamError::new(
            name,
            format!("`{name}` must be a positive 64-bit integer, got {s:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn limits_and_offsets() {
        assert_eq!(uint(&q(&[]), "limit", 100, 1000).unwrap(), 100);
        assert_eq!(
            uint(&q(&[("limit", "1000")]), "limit", 100, 1000).unwrap(),
            1000
        );
        let e = uint(&q(&[("limit", "1001")]), "limit", 100, 1000).unwrap_err();
        assert_eq!(e.parameter, "limit");
        let e = uint(&q(&[("offset", "-1")]), "offset", 0, 10).unwrap_err();
        assert_eq!(e.parameter, "offset");
        assert!(e.message.contains("-1"));
    }

    #[test]
    fn seasons_and_ids() {
        assert_eq!(season(&q(&[])).unwrap(), None);
        assert_eq!(
            season(&q(&[("season", "2026Q4")]))
                .unwrap()
                .unwrap()
                .as_str(),
            "2026Q4"
        );
        assert_eq!(
            season(&q(&[("season", "2026Q5")])).unwrap_err().parameter,
            "season"
        );
        assert_eq!(id("42", "id").unwrap(), 42);
        for bad in ["0", "-3", "abc", "99999999999999999999", ""] {
            assert_eq!(id(bad, "id").unwrap_err().parameter, "id", "{bad}");
        }
    }
}
