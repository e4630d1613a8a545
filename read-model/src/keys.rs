//! Key names of one read-model generation, `{prefix}:g<g>:…`, and the
//! members stored in them.

use rps_core::{Keys, SeasonId};

/// The generation keys of the pipeline's [`Keys`].
pub trait ReadModelKeys {
    /// Keys of one read-model generation.
    fn generation_keys(&self, generation: u64) -> GenerationKeys;
}

impl ReadModelKeys for Keys {
    fn generation_keys(&self, generation: u64) -> GenerationKeys {
        GenerationKeys {
            base: format!("{}:g{generation}", self.prefix()),
            generation,
        }
    }
}

/// Keys of one read-model generation, `{prefix}:g{n}:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationKeys {
    base: String,
    pub generation: u64,
}

/// Board members are zero-padded player ids so that equal scores order by
/// the lower id (Redis breaks score ties lexicographically).
pub fn board_member(player_id: i64) -> String {
    format!("{player_id:019}")
}

pub fn parse_board_member(member: &str) -> Option<i64> {
    member.parse().ok()
}

/// Suffixes of a player's fields in a counters hash, in
/// [`rps_core::PlayerStats::stored_values`] order: wins, draws, losses,
/// forfeits. `matches` is not stored (wins + draws + losses).
pub const COUNTER_SUFFIXES: [&str; 4] = ["w", "d", "l", "f"];

/// A player's fields in a counters hash: `<id>:w`, `<id>:d`, `<id>:l`, `<id>:f`.
pub fn counter_fields(player_id: i64) -> [String; 4] {
    COUNTER_SUFFIXES.map(|c| format!("{player_id}:{c}"))
}

/// `(player, index in COUNTER_SUFFIXES)` of a counters-hash field.
pub fn parse_counter_field(field: &str) -> Option<(i64, usize)> {
    let (id, c) = field.rsplit_once(':')?;
    Some((
        id.parse().ok()?,
        COUNTER_SUFFIXES.iter().position(|s| *s == c)?,
    ))
}

impl GenerationKeys {
    /// Prefix of every key of the generation, for SCAN when dropping it.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// SCAN pattern of every key of the generation.
    pub fn pattern(&self) -> String {
        format!("{}:*", self.base)
    }

    pub fn progress(&self) -> String {
        format!("{}:progress", self.base)
    }

    /// The counters of every player in one scope (`None`: all-time), a
    /// hash of [`counter_fields`].
    pub fn counters(&self, season: Option<SeasonId>) -> String {
        match season {
            None => format!("{}:counters", self.base),
            Some(s) => format!("{}:counters:{s}", self.base),
        }
    }

    /// The all-time board (`None`) or a season's board.
    pub fn board(&self, season: Option<SeasonId>) -> String {
        match season {
            None => format!("{}:board", self.base),
            Some(s) => format!("{}:board:{s}", self.base),
        }
    }

    pub fn seasons(&self) -> String {
        format!("{}:seasons", self.base)
    }

    pub fn match_state(&self, match_id: i64) -> String {
        format!("{}:match:{match_id}", self.base)
    }

    pub fn deadlines(&self) -> String {
        format!("{}:deadlines", self.base)
    }

    /// Matches per lifecycle state, a hash of
    /// [`crate::lifecycle::MatchCounts`] fields.
    pub fn lifecycle(&self) -> String {
        format!("{}:lifecycle", self.base)
    }
}

/// Which read model a key is, for reports and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    Counters,
    Board,
    Seasons,
    Match,
    Deadlines,
    Lifecycle,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Counters => "counters",
            KeyKind::Board => "board",
            KeyKind::Seasons => "seasons",
            KeyKind::Match => "match",
            KeyKind::Deadlines => "deadlines",
            KeyKind::Lifecycle => "lifecycle",
        }
    }
}

/// A read-model key, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRef {
    Counters(Option<SeasonId>),
    Board(Option<SeasonId>),
    Seasons,
    Match(i64),
    Deadlines,
    Lifecycle,
}

impl GenerationKeys {
    /// What a key of the generation is, from its name (`None`: not a read
    /// model, e.g. `progress`, or not ours).
    pub fn classify(&self, key: &str) -> Option<(KeyKind, KeyRef)> {
        let rest = key.strip_prefix(self.base())?.strip_prefix(':')?;
        let mut parts = rest.split(':');
        let kind = parts.next()?;
        let a = parts.next();
        if parts.next().is_some() {
            return None;
        }
        let season = |s: &str| s.parse::<SeasonId>().ok();
        match (kind, a) {
            ("counters", None) => Some((KeyKind::Counters, KeyRef::Counters(None))),
            ("counters", Some(s)) => Some((KeyKind::Counters, KeyRef::Counters(Some(season(s)?)))),
            ("board", None) => Some((KeyKind::Board, KeyRef::Board(None))),
            ("board", Some(s)) => Some((KeyKind::Board, KeyRef::Board(Some(season(s)?)))),
            ("seasons", None) => Some((KeyKind::Seasons, KeyRef::Seasons)),
            ("match", Some(id)) => Some((KeyKind::Match, KeyRef::Match(id.parse().ok()?))),
            ("deadlines", None) => Some((KeyKind::Deadlines, KeyRef::Deadlines)),
            ("lifecycle", None) => Some((KeyKind::Lifecycle, KeyRef::Lifecycle)),
            _ => None,
        }
    }

    /// The name of a parsed key.
    pub fn name_of(&self, key: &KeyRef) -> (String, KeyKind) {
        match key {
            KeyRef::Counters(s) => (self.counters(*s), KeyKind::Counters),
            KeyRef::Match(id) => (self.match_state(*id), KeyKind::Match),
            KeyRef::Board(s) => (self.board(*s), KeyKind::Board),
            KeyRef::Seasons => (self.seasons(), KeyKind::Seasons),
            KeyRef::Deadlines => (self.deadlines(), KeyKind::Deadlines),
            KeyRef::Lifecycle => (self.lifecycle(), KeyKind::Lifecycle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let g = Keys::new("rps").generation_keys(2);
        let s: SeasonId = "2026Q4".parse().unwrap();
        assert_eq!(g.counters(Some(s)), "rps:g2:counters:2026Q4");
        assert_eq!(g.counters(None), "rps:g2:counters");
        assert_eq!(g.board(Some(s)), "rps:g2:board:2026Q4");
        assert_eq!(g.board(None), "rps:g2:board");
        assert_eq!(g.deadlines(), "rps:g2:deadlines");
        assert_eq!(g.lifecycle(), "rps:g2:lifecycle");
    }

    #[test]
    fn keys_classify_back() {
        let g = Keys::new("rps").generation_keys(3);
        let s: SeasonId = "2026Q4".parse().unwrap();
        for key in [
            KeyRef::Counters(Some(s)),
            KeyRef::Counters(None),
            KeyRef::Board(Some(s)),
            KeyRef::Match(9),
            KeyRef::Seasons,
            KeyRef::Deadlines,
            KeyRef::Lifecycle,
        ] {
            let (name, kind) = g.name_of(&key);
            assert_eq!(g.classify(&name), Some((kind, key)), "{name}");
        }
        assert_eq!(g.classify(&g.progress()), None);
        assert_eq!(g.classify("rps:g4:board"), None);
    }

    #[test]
    fn members_round_trip_and_sort_by_id() {
        assert!(board_member(9) < board_member(10));
        assert_eq!(parse_board_member(&board_member(1234)), Some(1234));
        assert_eq!(parse_counter_field(&counter_fields(77)[3]), Some((77, 3)));
        assert_eq!(parse_counter_field("77:x"), None);
    }
}
