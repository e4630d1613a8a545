//! Global transaction ids and the replication positions made of them, for
//! both server flavors.
//!
//! - MariaDB: `domain-server-seq`; a position is the last GTID of every
//!   replication domain, as `@@gtid_binlog_pos` shows it and
//!   `@slave_connect_state` takes it.
//! - MySQL: `uuid:gno` or, from 8.3, `uuid:tag:gno`; a position is the set of
//!   every executed GTID, as `@@gtid_executed` shows it
//!   (`uuid:1-5:7-9,uuid2:1-3`, tags inside their uuid's block:
//!   `uuid:1-5:blue:1-3`) and COM_BINLOG_DUMP_GTID takes it. After a
//!   failover a set names several server uuids.
//!
//! [`Gtid`] and [`GtidPosition`] are what the rest of the pipeline sees; the
//! flavor shows only in their text, which is what checkpoints store.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a GTID or GTID position: {0:?}")]
pub struct GtidParseError(pub String);

/// One MariaDB GTID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MariaDbGtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl FromStr for MariaDbGtid {
    type Err = GtidParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || GtidParseError(s.to_string());
        let mut it = s.trim().split('-');
        let (Some(d), Some(sv), Some(q), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(err());
        };
        Ok(MariaDbGtid {
            domain: d.parse().map_err(|_| err())?,
            server: sv.parse().map_err(|_| err())?,
            seq: q.parse().map_err(|_| err())?,
        })
    }
}

impl fmt::Display for MariaDbGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// The last applied GTID of every MariaDB domain: the replication position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MariaDbGtidState {
    domains: BTreeMap<u32, MariaDbGtid>,
}

impl MariaDbGtidState {
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Records a committed transaction of its domain.
    pub fn advance(&mut self, gtid: MariaDbGtid) {
        self.domains.insert(gtid.domain, gtid);
    }

    pub fn get(&self, domain: u32) -> Option<MariaDbGtid> {
        self.domains.get(&domain).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = MariaDbGtid> + '_ {
        self.domains.values().copied()
    }
}

impl FromStr for MariaDbGtidState {
    type Err = GtidParseError;
    /// `d-s-n,d-s-n,…`; the empty string is the empty state.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut state = MariaDbGtidState::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g: MariaDbGtid = part.parse()?;
            if state.domains.insert(g.domain, g).is_some() {
                return Err(GtidParseError(s.to_string()));
            }
        }
        Ok(state)
    }
}

impl fmt::Display for MariaDbGtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.domains.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

/// One MySQL GTID: the originating server's uuid, an optional tag (8.3+,
/// lower case) and the transaction number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MySqlGtid {
    pub sid: Uuid,
    pub tag: Option<Arc<str>>,
    pub gno: u64,
}

impl fmt::Display for MySqlGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tag {
            Some(t) => write!(f, "{}:{t}:{}", self.sid, self.gno),
            None => write!(f, "{}:{}", self.sid, self.gno),
        }
    }
}

impl FromStr for MySqlGtid {
    type Err = GtidParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || GtidParseError(s.to_string());
        let parts: Vec<&str> = s.trim().split(':').collect();
        let (sid, tag, gno) = match parts.as_slice() {
            [sid, gno] => (sid, None, gno),
            [sid, tag, gno] => (sid, Some(parse_tag(tag).ok_or_else(err)?), gno),
            _ => return Err(err()),
        };
        Ok(MySqlGtid {
            sid: Uuid::parse_str(sid).map_err(|_| err())?,
            tag,
            gno: gno.parse().ok().filter(|g| *g > 0).ok_or_else(err)?,
        })
    }
}

/// A MySQL tag: `[a-z_][a-z0-9_]{0,31}`, case-insensitive (MySQL shows it
/// in lower case).
fn parse_tag(s: &str) -> Option<Arc<str>> {
    let t = s.trim().to_ascii_lowercase();
    let mut chars = t.chars();
    let first = chars.next()?;
    let ok = t.len() <= 32
        && (first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    ok.then(|| Arc::from(t.as_str()))
}

/// The source of a MySQL GTID: server uuid and optional tag.
type Tsid = (Uuid, Option<Arc<str>>);

/// A set of MySQL GTIDs: per (uuid, tag), sorted disjoint half-open
/// intervals `[start, end)` of transaction numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MySqlGtidSet {
    sets: BTreeMap<Tsid, Vec<(u64, u64)>>,
}

impl MySqlGtidSet {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Adds one transaction, merging it into its neighbours.
    pub fn add(&mut self, gtid: &MySqlGtid) {
        self.add_interval(gtid.sid, gtid.tag.clone(), gtid.gno, gtid.gno + 1);
    }

    fn add_interval(&mut self, sid: Uuid, tag: Option<Arc<str>>, start: u64, end: u64) {
        let v = self.sets.entry((sid, tag)).or_default();
        // Transactions arrive in order, so the common case appends at the end.
        if let Some(last) = v.last_mut() {
            if last.0 <= start && start <= last.1 {
                last.1 = last.1.max(end);
                return;
            }
        }
        v.push((start, end));
        v.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for &(s, e) in v.iter() {
            match merged.last_mut() {
                Some(m) if s <= m.1 => m.1 = m.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *v = merged;
    }

    pub fn contains(&self, gtid: &MySqlGtid) -> bool {
        self.sets
            .get(&(gtid.sid, gtid.tag.clone()))
            .is_some_and(|v| v.iter().any(|&(s, e)| s <= gtid.gno && gtid.gno < e))
    }

    /// Every block as (uuid, tag, half-open intervals), in display order.
    pub fn blocks(&self) -> impl Iterator<Item = (Uuid, Option<&str>, &[(u64, u64)])> + '_ {
        self.sets
            .iter()
            .map(|((sid, tag), v)| (*sid, tag.as_deref(), v.as_slice()))
    }
}

impl FromStr for MySqlGtidSet {
    type Err = GtidParseError;
    /// `@@gtid_executed` text; the empty string is the empty set.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || GtidParseError(s.to_string());
        let mut set = MySqlGtidSet::default();
        for block in s.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            let mut parts = block.split(':').map(str::trim);
            let sid = Uuid::parse_str(parts.next().unwrap_or_default()).map_err(|_| err())?;
            let mut tag: Option<Arc<str>> = None;
            let mut any = false;
            for part in parts {
                if part.starts_with(|c: char| c.is_ascii_digit()) {
                    let (a, b) = part.split_once('-').unwrap_or((part, part));
                    let a: u64 = a.parse().map_err(|_| err())?;
                    let b: u64 = b.parse().map_err(|_| err())?;
                    if a == 0 || b < a {
                        return Err(err());
                    }
                    set.add_interval(sid, tag.clone(), a, b + 1);
                    any = true;
                } else {
                    tag = Some(parse_tag(part).ok_or_else(err)?);
                }
            }
            if !any {
                return Err(err());
            }
        }
        Ok(set)
    }
}

impl fmt::Display for MySqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last_sid: Option<Uuid> = None;
        for ((sid, tag), intervals) in &self.sets {
            if last_sid != Some(*sid) {
                if last_sid.is_some() {
                    f.write_str(",")?;
                }
                write!(f, "{sid}")?;
                last_sid = Some(*sid);
            }
            if let Some(t) = tag {
                write!(f, ":{t}")?;
            }
            for &(s, e) in intervals {
                if e == s + 1 {
                    write!(f, ":{s}")?;
                } else {
                    write!(f, ":{s}-{}", e - 1)?;
                }
            }
        }
        Ok(())
    }
}

/// The GTID of one transaction, of either flavor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Gtid {
    MariaDb(MariaDbGtid),
    MySql(MySqlGtid),
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gtid::MariaDb(g) => g.fmt(f),
            Gtid::MySql(g) => g.fmt(f),
        }
    }
}

impl FromStr for Gtid {
    type Err = GtidParseError;
    /// MySQL's text has colons; MariaDB's never has.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            s.parse().map(Gtid::MySql)
        } else {
            s.parse().map(Gtid::MariaDb)
        }
    }
}

/// A replication position by GTID: what a reader has applied, of either
/// flavor; `None` on a server that never logged a GTID (a reader then
/// resumes by file and position).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GtidPosition {
    #[default]
    None,
    MariaDb(MariaDbGtidState),
    MySql(MySqlGtidSet),
}

impl GtidPosition {
    pub fn is_empty(&self) -> bool {
        match self {
            GtidPosition::None => true,
            GtidPosition::MariaDb(s) => s.is_empty(),
            GtidPosition::MySql(s) => s.is_empty(),
        }
    }

    /// Records a committed transaction. A GTID of the other flavor than the
    /// position's replaces nothing and starts a position of its own flavor
    /// (a position is only ever read from one server).
    pub fn advance(&mut self, gtid: &Gtid) {
        match (&mut *self, gtid) {
            (GtidPosition::MariaDb(s), Gtid::MariaDb(g)) => s.advance(*g),
            (GtidPosition::MySql(s), Gtid::MySql(g)) => s.add(g),
            (_, Gtid::MariaDb(g)) => {
                let mut s = MariaDbGtidState::default();
                s.advance(*g);
                *self = GtidPosition::MariaDb(s);
            }
            (_, Gtid::MySql(g)) => {
                let mut s = MySqlGtidSet::default();
                s.add(g);
                *self = GtidPosition::MySql(s);
            }
        }
    }

    /// Whether the position already includes `gtid` (MySQL: in the set;
    /// MariaDB: at or below its domain's last sequence number).
    pub fn includes(&self, gtid: &Gtid) -> bool {
        match (self, gtid) {
            (GtidPosition::MySql(s), Gtid::MySql(g)) => s.contains(g),
            (GtidPosition::MariaDb(s), Gtid::MariaDb(g)) => {
                s.get(g.domain).is_some_and(|last| last.seq >= g.seq)
            }
            _ => false,
        }
    }
}

impl FromStr for GtidPosition {
    type Err = GtidParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            Ok(GtidPosition::None)
        } else if s.contains(':') {
            s.parse().map(GtidPosition::MySql)
        } else {
            s.parse().map(GtidPosition::MariaDb)
        }
    }
}

impl fmt::Display for GtidPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidPosition::None => Ok(()),
            GtidPosition::MariaDb(s) => s.fmt(f),
            GtidPosition::MySql(s) => s.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_state_round_trips_and_advances_per_domain() {
        let mut s: MariaDbGtidState = "0-1-10, 1-2-5".parse().unwrap();
        assert_eq!(s.to_string(), "0-1-10,1-2-5");
        s.advance("0-3-11".parse().unwrap());
        assert_eq!(s.to_string(), "0-3-11,1-2-5");
        assert!("".parse::<MariaDbGtidState>().unwrap().is_empty());
        assert!("0-1".parse::<MariaDbGtidState>().is_err());
        assert!("0-1-2,0-1-3".parse::<MariaDbGtidState>().is_err());
    }

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "01f95083-edd4-11f1-b50e-02fc00000001";

    #[test]
    fn mysql_sets_parse_as_the_server_prints_them() {
        // Upper case, newlines after commas (as @@gtid_executed prints
        // long sets), unsorted blocks, a tag inside its uuid's block.
        let text = format!("{},\n{}:1-5:7-9:Blue:1-3:11", A.to_uppercase(), B);
        let text = text.replacen(&A.to_uppercase(), &format!("{}:4", A.to_uppercase()), 1);
        let s: MySqlGtidSet = text.parse().unwrap();
        assert_eq!(s.to_string(), format!("{B}:1-5:7-9:blue:1-3:11,{A}:4"));
        assert_eq!(s.to_string().parse::<MySqlGtidSet>().unwrap(), s);
        for bad in [
            "x:1",
            A,
            &format!("{A}:0"),
            &format!("{A}:5-3"),
            &format!("{A}:Bad-Tag:1"),
        ] {
            assert!(bad.parse::<MySqlGtidSet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mysql_sets_merge_what_is_added() {
        let mut s: MySqlGtidSet = format!("{A}:1-3:5").parse().unwrap();
        let g = |n: u64| MySqlGtid {
            sid: Uuid::parse_str(A).unwrap(),
            tag: None,
            gno: n,
        };
        s.add(&g(4));
        assert_eq!(s.to_string(), format!("{A}:1-5"));
        s.add(&g(7));
        s.add(&g(6));
        assert_eq!(s.to_string(), format!("{A}:1-7"));
        assert!(s.contains(&g(7)) && !s.contains(&g(8)));
        let tagged: MySqlGtid = format!("{A}:blue:1").parse().unwrap();
        s.add(&tagged);
        assert_eq!(s.to_string(), format!("{A}:1-7:blue:1"));
        assert!(s.contains(&tagged));
    }

    #[test]
    fn positions_know_their_flavor_by_text() {
        let mut p: GtidPosition = "".parse().unwrap();
        assert_eq!(p, GtidPosition::None);
        let g: Gtid = format!("{A}:9").parse().unwrap();
        p.advance(&g);
        assert_eq!(p.to_string(), format!("{A}:9"));
        assert!(p.includes(&g));
        let m: GtidPosition = "0-1-5".parse().unwrap();
        assert!(matches!(m, GtidPosition::MariaDb(_)));
        assert!(m.includes(&"0-2-4".parse().unwrap()));
        assert!(!m.includes(&"0-1-6".parse().unwrap()));
    }
}
