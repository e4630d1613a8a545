//! MariaDB GTIDs (`domain-server-seq`) and the replication position made of
//! them: one last GTID per replication domain, as `@@gtid_binlog_pos` shows
//! it and `@slave_connect_state` takes it.
//!
//! MariaDB GTIDs are not MySQL GTID sets (mysql_common does not parse them),
//! so the few shapes needed here are written out by hand.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// One MariaDB GTID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a MariaDB GTID (domain-server-seq): {0:?}")]
pub struct GtidParseError(pub String);

impl FromStr for Gtid {
    type Err = GtidParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || GtidParseError(s.to_string());
        let mut it = s.trim().split('-');
        let (Some(d), Some(sv), Some(q), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(err());
        };
        Ok(Gtid {
            domain: d.parse().map_err(|_| err())?,
            server: sv.parse().map_err(|_| err())?,
            seq: q.parse().map_err(|_| err())?,
        })
    }
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// The last applied GTID of every domain: the replication position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidState {
    domains: BTreeMap<u32, Gtid>,
}

impl GtidState {
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Records a committed transaction of its domain.
    pub fn advance(&mut self, gtid: Gtid) {
        self.domains.insert(gtid.domain, gtid);
    }

    pub fn get(&self, domain: u32) -> Option<Gtid> {
        self.domains.get(&domain).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = Gtid> + '_ {
        self.domains.values().copied()
    }
}

impl FromStr for GtidState {
    type Err = GtidParseError;
    /// `d-s-n,d-s-n,…`; the empty string is the empty state.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut state = GtidState::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g: Gtid = part.parse()?;
            if state.domains.insert(g.domain, g).is_some() {
                return Err(GtidParseError(s.to_string()));
            }
        }
        Ok(state)
    }
}

impl fmt::Display for GtidState {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_advances_per_domain() {
        let mut s: GtidState = "0-1-10, 1-2-5".parse().unwrap();
        assert_eq!(s.to_string(), "0-1-10,1-2-5");
        s.advance("0-3-11".parse().unwrap());
        assert_eq!(s.to_string(), "0-3-11,1-2-5");
        assert!("".parse::<GtidState>().unwrap().is_empty());
        assert!("0-1".parse::<GtidState>().is_err());
        assert!("0-1-2,0-1-3".parse::<GtidState>().is_err());
    }
}
