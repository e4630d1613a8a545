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

    pub fn player(&self, player_id: i64) -> String {
        format!("{}:player:{player_id}", self.base)
    }

    /// A player's hash in one scope (`None`: all-time).
    pub fn player_scope(&self, player_id: i64, season: Option<SeasonId>) -> String {
        match season {
            None => self.player(player_id),
            Some(s) => self.player_season(player_id, s),
        }
    }

    pub fn player_season(&self, player_id: i64, season: SeasonId) -> String {
        format!("{}:player:{player_id}:{season}", self.base)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let g = Keys::new("rps").generation_keys(2);
        let s: SeasonId = "2026Q4".parse().unwrap();
        assert_eq!(g.player_season(5, s), "rps:g2:player:5:2026Q4");
        assert_eq!(g.board(Some(s)), "rps:g2:board:2026Q4");
        assert_eq!(g.board(None), "rps:g2:board");
        assert_eq!(g.deadlines(), "rps:g2:deadlines");
    }

    #[test]
    fn members_round_trip_and_sort_by_id() {
        assert!(board_member(9) < board_member(10));
        assert_eq!(parse_board_member(&board_member(1234)), Some(1234));
    }
}
