//! Query and path parameters: parsed by hand so every bad value becomes a
//! 400 with a JSON body naming the parameter, never an extractor's plain
//! text rejection or a panic.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use rps_core::SeasonId;

/// Pages are at most this long.
pub const MAX_LIMIT: u64 = 1000;

/// The largest `offset` accepted. A page is the merge of every player
/// partition's first `offset + limit` entries, so the depth is bounded;
/// a player's neighbourhood at any depth is `/v1/players/{id}/around`.
pub const MAX_OFFSET: u64 = 10_000;

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

/// Decimal digits only: no sign, no blanks, no exponent, which is what the
/// OpenAPI document promises (`str::parse` alone would take `+5`).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// An integer query parameter in `min..=max`, `default` when absent.
pub fn uint(
    q: &[(String, String)],
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ParamError> {
    let Some(s) = lookup(q, name) else {
        return Ok(default);
    };
    match digits(s) {
        Some(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(ParamError::new(
            name,
            format!("`{name}` must be an integer between {min} and {max}, got {s:?}"),
        )),
    }
}

/// A positive 64-bit id.
pub fn id(s: &str, name: &'static str) -> Result<i64, ParamError> {
    match digits(s).and_then(|v| i64::try_from(v).ok()) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(ParamError::new(
            name,
            format!("`{name}` must be a positive 64-bit integer, got {s:?}"),
        )),
    }
}

/// The `{id}` path segment, percent-decoded and parsed by [`id`]. `Path`
/// alone would answer a segment that decodes to invalid UTF-8 with a plain
/// text rejection; here it is the same 400 as any other bad id.
pub struct PathId(pub Result<i64, ParamError>);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(PathId(
            match Path::<String>::from_request_parts(parts, state).await {
                Ok(Path(s)) => id(&s, "id"),
                Err(e) => Err(ParamError::new(
                    "id",
                    format!(
                        "`id` must be a positive 64-bit integer, got a path segment that is not one: {}",
                        e.body_text()
                    ),
                )),
            },
        ))
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
        assert_eq!(uint(&q(&[]), "limit", 100, 1, 1000).unwrap(), 100);
        assert_eq!(
            uint(&q(&[("limit", "1000")]), "limit", 100, 1, 1000).unwrap(),
            1000
        );
        let e = uint(&q(&[("limit", "1001")]), "limit", 100, 1, 1000).unwrap_err();
        assert_eq!(e.parameter, "limit");
        assert_eq!(
            e.message,
            "`limit` must be an integer between 1 and 1000, got \"1001\""
        );
        for bad in ["0", "+5", " 5", "5 ", "1e3", "0x10", ""] {
            let e = uint(&q(&[("limit", bad)]), "limit", 100, 1, 1000).unwrap_err();
            assert_eq!(e.parameter, "limit", "{bad:?}");
        }
        // The last occurrence wins, as with most query parsers.
        assert_eq!(
            uint(&q(&[("limit", "7"), ("limit", "8")]), "limit", 100, 1, 1000).unwrap(),
            8
        );
        let e = uint(&q(&[("offset", "-1")]), "offset", 0, 0, 10).unwrap_err();
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
        assert_eq!(id("9223372036854775807", "id").unwrap(), i64::MAX);
        for bad in [
            "0",
            "-3",
            "+3",
            "abc",
            "9223372036854775808",
            "99999999999999999999",
            "",
        ] {
            assert_eq!(id(bad, "id").unwrap_err().parameter, "id", "{bad}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Any text, and text close to the valid forms, where the bugs are.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[-+0-9 .eExQ]{0,22}",
            any::<i128>().prop_map(|v| v.to_string()),
            any::<u64>().prop_map(|v| v.to_string()),
            "[0-9]{4}Q[0-9]",
        ]
    }

    fn is_digits(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
    }

    fn assert_clear(e: &ParamError, name: &str, got: &str) {
        assert_eq!(e.parameter, name);
        assert!(e.message.contains(&format!("`{name}`")), "{}", e.message);
        assert!(e.message.contains(&format!("{got:?}")), "{}", e.message);
    }

    proptest! {
        #[test]
        fn ids(s in text()) {
            match id(&s, "id") {
                Ok(v) => {
                    prop_assert!(is_digits(&s) && v > 0);
                    prop_assert_eq!(v.to_string(), s.trim_start_matches('0'));
                }
                Err(e) => {
                    let value = is_digits(&s).then(|| s.parse::<u128>().ok()).flatten();
                    prop_assert!(!matches!(value, Some(v) if (1..=i64::MAX as u128).contains(&v)));
                    assert_clear(&e, "id", &s);
                }
            }
        }

        #[test]
        fn integers(s in text(), min in 0u64..10, span in 0u64..2000) {
            let max = min + span;
            let q = vec![("limit".to_string(), s.clone())];
            match uint(&q, "limit", 7, min, max) {
                Ok(v) => {
                    prop_assert!(is_digits(&s) && (min..=max).contains(&v));
                    prop_assert_eq!(s.parse::<u64>().unwrap(), v);
                }
                Err(e) => {
                    let value = is_digits(&s).then(|| s.parse::<u128>().ok()).flatten();
                    prop_assert!(!matches!(value, Some(v) if (min as u128..=max as u128).contains(&v)));
                    assert_clear(&e, "limit", &s);
                }
            }
        }

        #[test]
        fn seasons(s in text()) {
            let q = vec![("season".to_string(), s.clone())];
            let b = s.as_bytes();
            let valid = b.len() == 6
                && b[..4].iter().all(u8::is_ascii_digit)
                && b[4] == b'Q'
                && (b'1'..=b'4').contains(&b[5]);
            match season(&q) {
                Ok(None) => prop_assert!(s.is_empty()),
                Ok(Some(season)) => {
                    prop_assert!(valid);
                    prop_assert_eq!(season.as_str(), s.as_str());
                }
                Err(e) => {
                    prop_assert!(!valid && !s.is_empty());
                    assert_clear(&e, "season", &s);
                }
            }
        }

        /// The last occurrence decides; other names never matter.
        #[test]
        fn repeated_and_foreign_names(
            pairs in proptest::collection::vec(("(limit|offset|radius|x)", text()), 0..6)
        ) {
            let q: Vec<(String, String)> = pairs;
            let last = q.iter().rev().find(|(k, _)| k == "offset").map(|(_, v)| v.as_str());
            let r = uint(&q, "offset", 0, 0, MAX_OFFSET);
            match last {
                None => prop_assert_eq!(r.unwrap(), 0),
                Some(v) => prop_assert_eq!(r.ok(), uint(&[("offset".into(), v.into())], "offset", 0, 0, MAX_OFFSET).ok()),
            }
        }
    }
}
