//! What every subcommand's command line shares: duration values and the
//! `--json` output.

use serde::Serialize;
use std::time::Duration;

/// A duration with its unit: `500ms`, `30s`, `2m`, `1h`, `1d`, `1h30m`.
/// A bare number is refused: `500` could be either milliseconds or seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like 500ms, 30s, 2m, 1h, 1d ({e})"))?;
    if d.is_zero() {
        return Err(format!("`{s}` must be a positive duration"));
    }
    Ok(d)
}

/// A report as scripts read it: pretty JSON, one document, on stdout.
pub fn print_json<T: Serialize + ?Sized>(report: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
}

/// The same on stderr, for a command whose stdout carries data.
pub fn eprint_json<T: Serialize + ?Sized>(report: &T) -> anyhow::Result<()> {
    eprintln!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 10m "), Ok(Duration::from_secs(600)));
        for bad in ["45", "0s", "0d", "s", "xd", "ten", "-5s", ""] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("ten")
            .unwrap_err()
            .contains("not a duration"));
    }
}
