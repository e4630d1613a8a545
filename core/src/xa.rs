//! XA branches: the xid that names a prepared branch, and what the reader
//! records about a branch it holds.
//!
//! A branch is named by its full xid, `(formatID, gtrid, bqual)`. The same
//! xid reaches the pipeline in four spellings: MariaDB's GTID event (binary),
//! the XA_PREPARE event (binary), the `XA COMMIT X'…',X'…',fmt` text of the
//! decision, and a row of `XA RECOVER`. All of them become one [`Xid`], whose
//! [`Xid::key`] names the branch in Redis and whose `Display` is valid SQL
//! for `XA COMMIT` / `XA ROLLBACK`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Longest gtrid and bqual the servers accept (MySQL's and MariaDB's
/// `MAXGTRIDSIZE` / `MAXBQUALSIZE`).
pub const MAX_PART: usize = 64;

/// The identifier of one XA branch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Xid {
    pub format_id: i64,
    pub gtrid: Vec<u8>,
    pub bqual: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an XA xid: {input:?}: {reason}")]
pub struct XidParseError {
    pub input: String,
    pub reason: &'static str,
}

impl Xid {
    /// From the binary layout shared by the XA_PREPARE event, MariaDB's GTID
    /// event and `XA RECOVER`: gtrid and bqual concatenated in `data`.
    pub fn from_parts(
        format_id: i64,
        gtrid_len: usize,
        bqual_len: usize,
        data: &[u8],
    ) -> Option<Xid> {
        if gtrid_len > MAX_PART || bqual_len > MAX_PART || data.len() < gtrid_len + bqual_len {
            return None;
        }
        Some(Xid {
            format_id,
            gtrid: data[..gtrid_len].to_vec(),
            bqual: data[gtrid_len..gtrid_len + bqual_len].to_vec(),
        })
    }

    /// The name of the branch in Redis keys and fields: `fmt-gtridhex-bqualhex`
    /// (hex, so any byte is safe in a key and the name is the same however
    /// the xid was spelled).
    pub fn key(&self) -> String {
        format!(
            "{}-{}-{}",
            self.format_id,
            hex(&self.gtrid),
            hex(&self.bqual)
        )
    }

    /// Parses [`Xid::key`] back.
    pub fn from_key(key: &str) -> Result<Xid, XidParseError> {
        let err = |reason| XidParseError {
            input: key.to_string(),
            reason,
        };
        let mut it = key.splitn(3, '-');
        let (Some(f), Some(g), Some(b)) = (it.next(), it.next(), it.next()) else {
            return Err(err("expected fmt-gtridhex-bqualhex"));
        };
        let format_id = f.parse().map_err(|_| err("format id is not a number"))?;
        let xid = Xid {
            format_id,
            gtrid: unhex(g).ok_or_else(|| err("gtrid is not hex"))?,
            bqual: unhex(b).ok_or_else(|| err("bqual is not hex"))?,
        };
        xid.check().map_err(err)?;
        Ok(xid)
    }

    fn check(&self) -> Result<(), &'static str> {
        if self.gtrid.is_empty() {
            return Err("gtrid is empty");
        }
        if self.gtrid.len() > MAX_PART || self.bqual.len() > MAX_PART {
            return Err("gtrid and bqual are at most 64 bytes each");
        }
        Ok(())
    }

    /// The xid a statement names after `XA COMMIT` / `XA ROLLBACK` / `XA
    /// START` / `XA END` / `XA PREPARE`, as the servers write it in the
    /// binlog (`X'…',X'…',fmt`) or as a person types it (`'abc'`,
    /// `'abc','def',7`). Trailing words (`ONE PHASE`, `SUSPEND`) are ignored.
    pub fn parse_sql(text: &str) -> Result<Xid, XidParseError> {
        let err = |reason| XidParseError {
            input: text.to_string(),
            reason,
        };
        let mut rest = text.trim_start();
        let gtrid = sql_string(&mut rest).ok_or_else(|| err("expected a string literal"))?;
        let mut bqual = Vec::new();
        let mut format_id = 1i64;
        if let Some(r) = rest.trim_start().strip_prefix(',') {
            rest = r.trim_start();
            bqual = sql_string(&mut rest).ok_or_else(|| err("expected bqual after ','"))?;
            if let Some(r) = rest.trim_start().strip_prefix(',') {
                let r = r.trim_start();
                let end = r
                    .find(|c: char| !(c.is_ascii_digit() || c == '-'))
                    .unwrap_or(r.len());
                format_id = r[..end]
                    .parse()
                    .map_err(|_| err("format id is not a number"))?;
            }
        }
        let xid = Xid {
            format_id,
            gtrid,
            bqual,
        };
        xid.check().map_err(err)?;
        Ok(xid)
    }

    /// An operator's spelling: the SQL form (`X'…',X'…',fmt`, `'abc'`) or
    /// the key form (`fmt-gtridhex-bqualhex`) that `rpsctl xa list` shows.
    pub fn parse_any(text: &str) -> Result<Xid, XidParseError> {
        let t = text.trim();
        if t.starts_with('\'')
            || t.starts_with('X')
            || t.starts_with('x') && t[1..].starts_with('\'')
        {
            Xid::parse_sql(t)
        } else {
            Xid::from_key(t)
        }
    }

    /// The gtrid as text when it is printable, for people.
    pub fn gtrid_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.gtrid)
            .ok()
            .filter(|s| s.chars().all(|c| !c.is_control()))
    }
}

/// What a statement of the binlog does to an XA branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XaStatement {
    Start,
    End,
    Prepare,
    Commit,
    Rollback,
}

/// Recognises `XA START|BEGIN|END|PREPARE|COMMIT|ROLLBACK <xid>` and
/// returns the verb and the xid; anything else is `None`.
pub fn parse_xa_statement(sql: &str) -> Option<Result<(XaStatement, Xid), XidParseError>> {
    let s = sql.trim_start();
    // `get`: the third byte of an arbitrary statement may fall inside a character.
    if !s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("XA ")) {
        return None;
    }
    let s = s[3..].trim_start();
    let word_end = s.find(char::is_whitespace).unwrap_or(s.len());
    let verb = match s[..word_end].to_ascii_uppercase().as_str() {
        "START" | "BEGIN" => XaStatement::Start,
        "END" => XaStatement::End,
        "PREPARE" => XaStatement::Prepare,
        "COMMIT" => XaStatement::Commit,
        "ROLLBACK" => XaStatement::Rollback,
        _ => return None,
    };
    Some(Xid::parse_sql(&s[word_end..]).map(|x| (verb, x)))
}

impl fmt::Display for Xid {
    /// `X'gtrid',X'bqual',fmt`: how the servers write it, and valid SQL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "X'{}',X'{}',{}",
            hex(&self.gtrid),
            hex(&self.bqual),
            self.format_id
        )
    }
}

/// What the reader recorded when it saw a branch prepared, kept in
/// `Keys::cdc_xa_branches(server)` until the branch is decided.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HeldBranch {
    /// The xid in SQL form.
    pub xid: String,
    /// GTID of the prepare part.
    pub gtid: String,
    /// Binlog file and end position of the prepare part.
    pub file: String,
    pub pos: u64,
    /// When the server prepared it (binlog time, micros).
    pub prepared_ts: i64,
    /// When the reader saw it prepared (reader's clock, micros).
    pub seen_ts: i64,
    /// Held rows of event tables, by shard.
    pub shards: BTreeMap<u16, u64>,
    /// Held dead letters (an UPDATE or bad row inside the branch).
    pub dead: u64,
    /// The same by dead-letter kind, for metrics when they are released.
    #[serde(default)]
    pub dead_kinds: BTreeMap<String, u64>,
    /// Distinct matches the held rows belong to.
    pub matches: u64,
}

impl HeldBranch {
    pub fn rows(&self) -> u64 {
        self.shards.values().sum()
    }

    /// Everything the branch holds: rows and dead letters.
    pub fn items(&self) -> u64 {
        self.rows() + self.dead
    }

    /// The targets it holds items for: each keeps its part of the branch
    /// (hold, registry entry) in its own slot.
    pub fn targets(&self) -> Vec<crate::keys::PublishTarget> {
        use crate::keys::PublishTarget;
        let shards = self
            .shards
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, _)| PublishTarget::Shard(*s));
        let dead = (self.dead > 0).then_some(PublishTarget::DeadLetters);
        shards.chain(dead).collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(s: &str) -> Result<HeldBranch, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// The member of a branch's match set: `shard:match`, as deadlines name a match.
pub fn held_match_member(shard: u16, match_id: i64) -> String {
    crate::keys::deadline_member(shard, match_id)
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One SQL string literal at the start of `rest`: `'text'` (with `''` and
/// backslash escapes), `X'hex'` or `0xhex`; advances `rest` past it.
fn sql_string(rest: &mut &str) -> Option<Vec<u8>> {
    let s = *rest;
    let b = s.as_bytes();
    if b.len() >= 2 && (b[0] == b'X' || b[0] == b'x') && b[1] == b'\'' {
        let end = s[2..].find('\'')? + 2;
        *rest = &s[end + 1..];
        return unhex(&s[2..end]);
    }
    if b.len() >= 2 && b[0] == b'0' && (b[1] == b'x' || b[1] == b'X') {
        let end = s[2..]
            .find(|c: char| !c.is_ascii_hexdigit())
            .map_or(s.len(), |e| e + 2);
        *rest = &s[end..];
        return unhex(&s[2..end]);
    }
    let quote = *b.first()?;
    if quote != b'\'' && quote != b'"' {
        return None;
    }
    let mut out = Vec::new();
    let mut i = 1;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() {
            out.push(match b[i + 1] {
                b'n' => b'\n',
                b't' => b'\t',
                b'0' => 0,
                x => x,
            });
            i += 2;
        } else if c == quote {
            if b.get(i + 1) == Some(&quote) {
                out.push(quote);
                i += 2;
            } else {
                *rest = &s[i + 1..];
                return Some(out);
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_names_the_same_branch() {
        let from_binlog = Xid::parse_sql("X'6731',X'6231',7").unwrap();
        let typed = Xid::parse_sql("'g1','b1',7").unwrap();
        let from_event = Xid::from_parts(7, 2, 2, b"g1b1").unwrap();
        assert_eq!(from_binlog, typed);
        assert_eq!(from_binlog, from_event);
        assert_eq!(from_binlog.to_string(), "X'6731',X'6231',7");
        assert_eq!(from_binlog.key(), "7-6731-6231");
        assert_eq!(Xid::from_key("7-6731-6231").unwrap(), from_binlog);
        assert_eq!(Xid::parse_any("7-6731-6231").unwrap(), from_binlog);
        assert_eq!(Xid::parse_any("X'6731',X'6231',7").unwrap(), from_binlog);
        assert_eq!(Xid::parse_any("'g1','b1',7").unwrap(), from_binlog);
        // Defaults: bqual '' and format 1, as the servers default them.
        let short = Xid::parse_sql("'g2'").unwrap();
        assert_eq!(short.to_string(), "X'6732',X'',1");
        assert_eq!(Xid::parse_sql("0x00FF").unwrap().gtrid, vec![0, 255]);
        assert_eq!(Xid::parse_sql(" 'it''s'").unwrap().gtrid, b"it's".to_vec());
    }

    #[test]
    fn statements_of_the_binlog() {
        use XaStatement::*;
        let x = Xid::parse_sql("X'6733',X'',1").unwrap();
        for (sql, verb) in [
            ("XA START X'6733',X'',1", Start),
            ("XA END X'6733',X'',1", End),
            ("XA COMMIT X'6733',X'',1", Commit),
            ("xa rollback X'6733',X'',1", Rollback),
            ("XA COMMIT X'6733',X'',1 ONE PHASE", Commit),
            ("XA PREPARE X'6733',X'',1", Prepare),
        ] {
            assert_eq!(
                parse_xa_statement(sql).unwrap().unwrap(),
                (verb, x.clone()),
                "{sql}"
            );
        }
        assert!(parse_xa_statement("XA RECOVER").is_none());
        assert!(parse_xa_statement("INSERT INTO t VALUES (1)").is_none());
        assert!(parse_xa_statement("XA COMMIT nonsense").unwrap().is_err());
    }

    #[test]
    fn bad_xids_are_refused() {
        assert!(Xid::parse_sql("''").is_err());
        assert!(Xid::from_key("1-zz-").is_err());
        assert!(Xid::from_key("abc").is_err());
        assert!(Xid::from_parts(1, 65, 0, &[0; 65]).is_none());
        assert!(Xid::from_parts(1, 3, 2, b"abcd").is_none());
    }

    #[test]
    fn a_statement_that_is_not_xa_never_panics() {
        assert!(parse_xa_statement("ab€ xyz").is_none());
        assert!(parse_xa_statement("x").is_none());
    }

    #[test]
    fn held_branch_round_trips() {
        let mut h = HeldBranch {
            xid: "X'6731',X'',1".into(),
            dead: 1,
            ..Default::default()
        };
        h.shards.insert(2, 5);
        h.shards.insert(4, 1);
        assert_eq!(h.rows(), 6);
        assert_eq!(h.items(), 7);
        assert_eq!(HeldBranch::from_json(&h.to_json()).unwrap(), h);
    }
}
