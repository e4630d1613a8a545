//! Timestamps as the event table stores them: `DATETIME(6)` read as UTC.
//!
//! Kept as microseconds since the Unix epoch so decoding, comparing and
//! encoding never allocate; chrono is used only at the edges (parsing and
//! formatting for humans and SQL).

use chrono::{DateTime, NaiveDateTime, Utc};
use std::fmt;

/// Microseconds since 1970-01-01 00:00:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_micros())
    }

    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms * 1000)
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }

    pub fn as_millis(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn from_naive(dt: NaiveDateTime) -> Self {
        Timestamp(dt.and_utc().timestamp_micros())
    }

    pub fn to_naive(self) -> NaiveDateTime {
        DateTime::<Utc>::from_timestamp_micros(self.0)
            .unwrap_or_default()
            .naive_utc()
    }

    /// Builds a timestamp from calendar fields, as a binlog `DATETIME2` carries them.
    pub fn from_parts(
        year: i32,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
        micros: u32,
    ) -> Option<Self> {
        let date = chrono::NaiveDate::from_ymd_opt(year, month, day)?;
        let dt = date.and_hms_micro_opt(hour, minute, second, micros)?;
        Some(Self::from_naive(dt))
    }

    /// Parses `YYYY-MM-DD HH:MM:SS[.ffffff]` (SQL) or RFC 3339.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Some(Timestamp(dt.with_timezone(&Utc).timestamp_micros()));
        }
        for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d"] {
            if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
                return Some(Self::from_naive(dt));
            }
            if fmt == "%Y-%m-%d" {
                if let Ok(d) = chrono::NaiveDate::parse_from_str(s, fmt) {
                    return Some(Self::from_naive(d.and_hms_opt(0, 0, 0)?));
                }
            }
        }
        None
    }

    /// RFC 3339 with microseconds, for JSON.
    pub fn to_rfc3339(self) -> String {
        self.to_naive()
            .and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }
}

impl fmt::Display for Timestamp {
    /// SQL form, `2026-11-27 07:41:36.123456`, as MySQL accepts it for DATETIME(6).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_naive().format("%Y-%m-%d %H:%M:%S%.6f"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_round_trip_keeps_microseconds() {
        let t = Timestamp::parse("2026-11-27 07:41:36.123456").unwrap();
        assert_eq!(t.to_string(), "2026-11-27 07:41:36.123456");
        assert_eq!(Timestamp::parse(&t.to_rfc3339()), Some(t));
        assert_eq!(
            Timestamp::from_parts(2026, 11, 27, 7, 41, 36, 123456),
            Some(t)
        );
    }

    #[test]
    fn date_only_is_midnight() {
        let t = Timestamp::parse("2026-10-01").unwrap();
        assert_eq!(t.to_string(), "2026-10-01 00:00:00.000000");
    }
}
