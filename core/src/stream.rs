//! The stream entry: one decoded event with its source coordinates.
//!
//! cdc-reader encodes, the projector decodes; both use this module so the
//! wire format is written once. Every entry has the same field names in the
//! same order (NULL is an empty value) so Redis stores them compactly.

use crate::event::{EventType, Gesture, MatchEvent, ModelError, Outcome, SeasonId, ShardId};
use crate::time::Timestamp;
use uuid::Uuid;

/// Where an event came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourcePosition {
    /// Server name from the topology.
    pub server: String,
    /// Database and table the row was inserted into.
    pub database: String,
    pub table: String,
    /// Binlog file and the end position of the row's event (empty and 0 for
    /// rows read by an initial snapshot).
    pub file: String,
    pub pos: u64,
    /// The transaction's GTID (`domain-server-seq`), empty if none.
    pub gtid: String,
    /// Commit time of the transaction (second precision, from the binlog).
    pub commit_ts: Timestamp,
}

/// A decoded event on its way from a shard's binlog to the read models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    pub shard: ShardId,
    pub event: MatchEvent,
    pub source: SourcePosition,
}

/// Field names of a stream entry, in order.
pub const FIELDS: [&str; 23] = [
    "shard", "row", "eid", "mid", "ver", "type", "season", "pa", "pb", "ga", "gb", "win", "lose",
    "out", "dl", "at", "srv", "db", "tbl", "file", "pos", "gtid", "cts",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("stream entry lacks field `{0}`")]
    Missing(&'static str),
    #[error("stream entry field `{field}` is not valid: {value:?}")]
    Invalid { field: &'static str, value: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

fn opt_str<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl StreamEvent {
    /// The entry's field values, in [`FIELDS`] order.
    pub fn encode(&self) -> [String; 23] {
        let e = &self.event;
        let s = &self.source;
        [
            self.shard.to_string(),
            e.row_id.to_string(),
            e.event_id.hyphenated().to_string(),
            e.match_id.to_string(),
            e.version.to_string(),
            e.event_type.as_str().to_string(),
            e.season_id.to_string(),
            e.player_a_id.to_string(),
            e.player_b_id.to_string(),
            opt_str(e.gesture_a),
            opt_str(e.gesture_b),
            opt_str(e.winner_player_id),
            opt_str(e.loser_player_id),
            opt_str(e.outcome),
            opt_str(e.deadline_at.map(Timestamp::as_micros)),
            e.occurred_at.as_micros().to_string(),
            s.server.clone(),
            s.database.clone(),
            s.table.clone(),
            s.file.clone(),
            s.pos.to_string(),
            s.gtid.clone(),
            s.commit_ts.as_micros().to_string(),
        ]
    }

    /// Field/value pairs ready for XADD.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        FIELDS.iter().copied().zip(self.encode()).collect()
    }

    /// Decodes an entry from its field/value pairs (any order).
    pub fn decode<'a, I>(pairs: I) -> Result<StreamEvent, DecodeError>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut v: [Option<&[u8]>; 23] = [None; 23];
        for (k, val) in pairs {
            if let Some(i) = FIELDS.iter().position(|f| f.as_bytes() == k) {
                v[i] = Some(val);
            }
        }
        let get = |i: usize| v[i].ok_or(DecodeError::Missing(FIELDS[i]));
        let text = |i: usize| -> Result<&str, DecodeError> {
            std::str::from_utf8(get(i)?).map_err(|_| invalid(i, get(i).unwrap_or_default()))
        };
        let int = |i: usize| -> Result<i64, DecodeError> {
            text(i)?
                .parse::<i64>()
                .map_err(|_| invalid(i, get(i).unwrap_or_default()))
        };
        let opt_int = |i: usize| -> Result<Option<i64>, DecodeError> {
            if get(i)?.is_empty() {
                Ok(None)
            } else {
                int(i).map(Some)
            }
        };
        let opt_enum = |i: usize| -> Result<Option<&[u8]>, DecodeError> {
            let b = get(i)?;
            Ok((!b.is_empty()).then_some(b))
        };
        let event = MatchEvent {
            row_id: int(1)?,
            event_id: Uuid::try_parse_ascii(get(2)?)
                .map_err(|_| invalid(2, get(2).unwrap_or_default()))?,
            match_id: int(3)?,
            version: i32::try_from(int(4)?).map_err(|_| invalid(4, get(4).unwrap_or_default()))?,
            event_type: EventType::from_bytes(get(5)?)?,
            season_id: SeasonId::parse_bytes(get(6)?)?,
            player_a_id: int(7)?,
            player_b_id: int(8)?,
            gesture_a: opt_enum(9)?.map(Gesture::from_bytes).transpose()?,
            gesture_b: opt_enum(10)?.map(Gesture::from_bytes).transpose()?,
            winner_player_id: opt_int(11)?,
            loser_player_id: opt_int(12)?,
            outcome: opt_enum(13)?.map(Outcome::from_bytes).transpose()?,
            deadline_at: opt_int(14)?.map(Timestamp),
            occurred_at: Timestamp(int(15)?),
        };
        Ok(StreamEvent {
            shard: u16::try_from(int(0)?).map_err(|_| invalid(0, get(0).unwrap_or_default()))?,
            event,
            source: SourcePosition {
                server: text(16)?.to_string(),
                database: text(17)?.to_string(),
                table: text(18)?.to_string(),
                file: text(19)?.to_string(),
                pos: int(20)? as u64,
                gtid: text(21)?.to_string(),
                commit_ts: Timestamp(int(22)?),
            },
        })
    }
}

fn invalid(i: usize, value: &[u8]) -> DecodeError {
    DecodeError::Invalid {
        field: FIELDS[i],
        value: String::from_utf8_lossy(value).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> StreamEvent {
        StreamEvent {
            shard: 3,
            event: MatchEvent {
                row_id: 12,
                event_id: Uuid::new_v4(),
                match_id: 1 << 40,
                version: 4,
                event_type: EventType::Finished,
                season_id: "2026Q4".parse().unwrap(),
                player_a_id: 11,
                player_b_id: 12,
                gesture_a: Some(Gesture::Rock),
                gesture_b: Some(Gesture::Paper),
                winner_player_id: Some(12),
                loser_player_id: Some(11),
                outcome: Some(Outcome::Lose),
                deadline_at: None,
                occurred_at: Timestamp(1_790_000_000_123_456),
            },
            source: SourcePosition {
                server: "mysql-a".into(),
                database: "rps_shard_3".into(),
                table: "match_result_events".into(),
                file: "binlog.000002".into(),
                pos: 4711,
                gtid: "0-1-99".into(),
                commit_ts: Timestamp(1_790_000_000_000_000),
            },
        }
    }

    #[test]
    fn round_trip() {
        let e = sample();
        let pairs = e.to_pairs();
        let decoded =
            StreamEvent::decode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))).unwrap();
        assert_eq!(decoded, e);
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut pairs = sample().to_pairs();
        pairs[9].1 = "lizard".into();
        let err = StreamEvent::decode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
            .unwrap_err();
        assert!(err.to_string().contains("lizard"), "{err}");
        pairs.remove(3);
        let err = StreamEvent::decode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
            .unwrap_err();
        assert_eq!(err, DecodeError::Missing("mid"));
    }
}
