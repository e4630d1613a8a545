//! The stream entry: one decoded event with its source coordinates.
//!
//! cdc-reader encodes, the projector decodes; both use this module so the
//! wire format is written once.
//!
//! On the wire an entry has one field, [`ENTRY_FIELD`], holding the 23 values
//! of [`FIELDS`] joined by `|` behind a format tag (NULL is an empty value).
//! Redis' cost of XADD and XREADGROUP grows with the number of fields, not
//! with bytes: 23 fields cost ~5 µs per entry on each side, one field about a
//! fifth of it. The named form (one field per value) is still decoded, and is
//! what dead letters carry, so that an operator reads every value by name.

use crate::event::{EventType, Gesture, MatchEvent, ModelError, Outcome, SeasonId, ShardId};
use crate::time::Timestamp;
use uuid::Uuid;

/// A Redis stream entry id, `<ms>-<seq>`, ordered numerically as Redis
/// orders entries (not as text: `9-5` < `10-0`). A bare `<ms>` is `<ms>-0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub fn parse(s: &str) -> Option<StreamId> {
        let (a, b) = s.split_once('-').unwrap_or((s, "0"));
        Some(StreamId {
            ms: a.parse().ok()?,
            seq: b.parse().ok()?,
        })
    }
}

impl std::str::FromStr for StreamId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        StreamId::parse(s).ok_or_else(|| format!("not a stream id: {s:?}"))
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

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

/// The one field of a wire entry.
pub const ENTRY_FIELD: &str = "e";
/// Format tag in front of the values of a wire entry.
const FORMAT_TAG: &str = "1";
/// The values that can hold any text; `|` and `%` in them are escaped.
const TEXT_FIELDS: std::ops::RangeInclusive<usize> = 16..=21;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("stream entry lacks field `{0}`")]
    Missing(&'static str),
    #[error("stream entry field `{field}` is not valid: {value:?}")]
    Invalid { field: &'static str, value: String },
    #[error("stream entry is not in format {FORMAT_TAG} with 23 values: {0:?}")]
    Format(String),
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

    /// The wire entry's value: the format tag and every value, `|`-joined.
    /// Written straight into one buffer: this runs once per published row.
    pub fn to_wire(&self) -> String {
        use std::fmt::Write;
        let e = &self.event;
        let src = &self.source;
        let mut out = String::with_capacity(160 + src.database.len() + src.file.len());
        let mut uuid = uuid::Uuid::encode_buffer();
        // Writing into a String cannot fail.
        let _ = write!(
            out,
            "{FORMAT_TAG}|{}|{}|{}|{}|{}|{}|{}|{}|{}|",
            self.shard,
            e.row_id,
            e.event_id.hyphenated().encode_lower(&mut uuid),
            e.match_id,
            e.version,
            e.event_type.as_str(),
            e.season_id,
            e.player_a_id,
            e.player_b_id,
        );
        let opt = |out: &mut String, v: Option<&dyn std::fmt::Display>| {
            if let Some(v) = v {
                let _ = write!(out, "{v}");
            }
            out.push('|');
        };
        opt(&mut out, e.gesture_a.as_ref().map(|g| g as _));
        opt(&mut out, e.gesture_b.as_ref().map(|g| g as _));
        opt(&mut out, e.winner_player_id.as_ref().map(|p| p as _));
        opt(&mut out, e.loser_player_id.as_ref().map(|p| p as _));
        opt(&mut out, e.outcome.as_ref().map(|o| o as _));
        let deadline = e.deadline_at.map(Timestamp::as_micros);
        opt(&mut out, deadline.as_ref().map(|d| d as _));
        let _ = write!(out, "{}", e.occurred_at.as_micros());
        for text in [&src.server, &src.database, &src.table, &src.file] {
            out.push('|');
            escape_into(&mut out, text);
        }
        let _ = write!(out, "|{}|", src.pos);
        escape_into(&mut out, &src.gtid);
        let _ = write!(out, "|{}", src.commit_ts.as_micros());
        out
    }

    /// Field/value pairs ready for XADD: the one-field wire form.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        vec![(ENTRY_FIELD, self.to_wire())]
    }

    /// One pair per value, by name: what a person reads (dead letters).
    pub fn to_named_pairs(&self) -> Vec<(&'static str, String)> {
        FIELDS.iter().copied().zip(self.encode()).collect()
    }

    /// Decodes an entry from its field/value pairs: the wire form or the
    /// named form (any order).
    pub fn decode<'a, I>(pairs: I) -> Result<StreamEvent, DecodeError>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut v: [Option<&[u8]>; 23] = [None; 23];
        let mut wire = false;
        for (k, val) in pairs {
            if k == ENTRY_FIELD.as_bytes() {
                split_wire(val, &mut v)?;
                wire = true;
                break;
            }
            if let Some(i) = FIELDS.iter().position(|f| f.as_bytes() == k) {
                v[i] = Some(val);
            }
        }
        let get = |i: usize| v[i].ok_or(DecodeError::Missing(FIELDS[i]));
        let text = |i: usize| -> Result<std::borrow::Cow<'_, str>, DecodeError> {
            let s =
                std::str::from_utf8(get(i)?).map_err(|_| invalid(i, get(i).unwrap_or_default()))?;
            Ok(if wire && s.contains('%') {
                std::borrow::Cow::Owned(unescape(s))
            } else {
                std::borrow::Cow::Borrowed(s)
            })
        };
        let int = |i: usize| -> Result<i64, DecodeError> {
            std::str::from_utf8(get(i)?)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| invalid(i, get(i).unwrap_or_default()))
        };
        let opt_int = |i: usize| -> Result<Option<i64>, DecodeError> {
            if get(i)?.is_empty() {
                Ok(None)
            } else {
                int(i).map(Some)
            }
        };
        let uint = |i: usize| -> Result<u64, DecodeError> {
            std::str::from_utf8(get(i)?)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| invalid(i, get(i).unwrap_or_default()))
        };
        let opt_enum = |i: usize| -> Result<Option<&[u8]>, DecodeError> {
            let b = get(i)?;
            Ok((!b.is_empty()).then_some(b))
        };
        // Both gesture columns share one enum type, whose error alone would
        // not say which of the two was bad.
        let column = |field: &'static str| move |e: ModelError| ModelError { field, ..e };
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
            gesture_a: opt_enum(9)?
                .map(Gesture::from_bytes)
                .transpose()
                .map_err(column("gesture_a"))?,
            gesture_b: opt_enum(10)?
                .map(Gesture::from_bytes)
                .transpose()
                .map_err(column("gesture_b"))?,
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
                server: text(16)?.into_owned(),
                database: text(17)?.into_owned(),
                table: text(18)?.into_owned(),
                file: text(19)?.into_owned(),
                pos: uint(20)?,
                gtid: text(21)?.into_owned(),
                commit_ts: Timestamp(int(22)?),
            },
        })
    }
}

/// The named pairs of an entry in either form, as far as they can be read:
/// for an operator's view of an entry that does not decode.
pub fn named_fields<'a, I>(pairs: I) -> Vec<(String, String)>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let pairs: Vec<(&[u8], &[u8])> = pairs.into_iter().collect();
    if let Some((_, wire)) = pairs.iter().find(|(k, _)| *k == ENTRY_FIELD.as_bytes()) {
        let mut v: [Option<&[u8]>; 23] = [None; 23];
        if split_wire(wire, &mut v).is_ok() {
            return FIELDS
                .iter()
                .zip(v)
                .enumerate()
                .map(|(i, (f, val))| {
                    let val = lossy(val.unwrap_or_default());
                    let val = if TEXT_FIELDS.contains(&i) {
                        unescape(&val)
                    } else {
                        val
                    };
                    (f.to_string(), val)
                })
                .collect();
        }
    }
    pairs.iter().map(|(k, v)| (lossy(k), lossy(v))).collect()
}

fn split_wire<'a>(wire: &'a [u8], out: &mut [Option<&'a [u8]>; 23]) -> Result<(), DecodeError> {
    let bad = || DecodeError::Format(String::from_utf8_lossy(wire).into_owned());
    let mut parts = wire.split(|b| *b == b'|');
    if parts.next() != Some(FORMAT_TAG.as_bytes()) {
        return Err(bad());
    }
    for slot in out.iter_mut() {
        *slot = Some(parts.next().ok_or_else(bad)?);
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(())
}

fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '%' => out.push_str("%25"),
            '|' => out.push_str("%7C"),
            c => out.push(c),
        }
    }
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(t) = tail.strip_prefix("%7C") {
            out.push('|');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("%25") {
            out.push('%');
            rest = t;
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
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
        for pairs in [e.to_pairs(), e.to_named_pairs()] {
            let decoded =
                StreamEvent::decode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
                    .unwrap();
            assert_eq!(decoded, e);
        }
    }

    #[test]
    fn wire_form_escapes_text_and_reads_back_by_name() {
        let mut e = sample();
        e.source.server = "a|b%7C%".into();
        e.event.winner_player_id = None;
        let pairs = e.to_pairs();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].1.split('|').count(), 24, "{}", pairs[0].1);
        let bytes = || pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
        assert_eq!(StreamEvent::decode(bytes()).unwrap(), e);
        let named = named_fields(bytes());
        let expected: Vec<(String, String)> = e
            .to_named_pairs()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(named, expected);
    }

    #[test]
    fn wire_form_is_the_named_values_joined() {
        let mut e = sample();
        let check = |e: &StreamEvent| {
            let joined: Vec<String> = e.encode().to_vec();
            assert_eq!(e.to_wire(), format!("{FORMAT_TAG}|{}", joined.join("|")));
        };
        check(&e);
        e.event.gesture_a = None;
        e.event.outcome = None;
        e.event.deadline_at = Some(Timestamp(5));
        e.source.gtid.clear();
        check(&e);
    }

    #[test]
    fn wire_form_with_wrong_tag_or_count_is_a_format_error() {
        let wire = sample().to_wire();
        for bad in [
            format!("9{}", &wire[1..]),
            format!("{wire}|x"),
            "1|2|3".into(),
        ] {
            let err = StreamEvent::decode([(ENTRY_FIELD.as_bytes(), bad.as_bytes())]).unwrap_err();
            assert!(matches!(err, DecodeError::Format(_)), "{err}");
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut pairs = sample().to_named_pairs();
        pairs[9].1 = "lizard".into();
        let err = StreamEvent::decode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
            .unwrap_err();
        assert!(err.to_string().contains("lizard"), "{err}");
        pairs.remove(3);
        let err = StreamEvent::decode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
            .unwrap_err();
        assert_eq!(err, DecodeError::Missing("mid"));
    }

    // Positions were read as i64 and cast: one above i64::MAX did not
    // decode, and a negative one came back as a huge position.
    #[test]
    fn positions_are_unsigned_in_both_directions() {
        let mut e = sample();
        e.source.pos = u64::MAX;
        for pairs in [e.to_pairs(), e.to_named_pairs()] {
            let decoded =
                StreamEvent::decode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
            assert_eq!(decoded.unwrap(), e);
        }
        let mut pairs = sample().to_named_pairs();
        pairs[20].1 = "-1".into();
        let err = StreamEvent::decode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
            .unwrap_err();
        assert_eq!(
            err,
            DecodeError::Invalid {
                field: "pos",
                value: "-1".into()
            }
        );
    }

    #[test]
    fn a_bad_gesture_names_its_column() {
        for (i, column) in [(9, "gesture_a"), (10, "gesture_b")] {
            let mut pairs = sample().to_named_pairs();
            pairs[i].1 = "lizard".into();
            let err = StreamEvent::decode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
                .unwrap_err();
            assert!(
                matches!(&err, DecodeError::Model(m) if m.field == column),
                "{err}"
            );
            assert!(err.to_string().contains(column), "{err}");
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn timestamp() -> impl Strategy<Value = Timestamp> {
        any::<i64>().prop_map(Timestamp)
    }

    /// Text that exercises the wire escapes as well as any Unicode.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[|%7Ca-c25]{0,12}"]
    }

    fn match_event() -> impl Strategy<Value = MatchEvent> {
        let ids = (any::<i64>(), any::<u128>(), any::<i64>(), any::<i32>());
        let kind = (
            prop::sample::select(EventType::ALL.to_vec()),
            (0u16..=9999, 1u8..=4),
            any::<i64>(),
            any::<i64>(),
        );
        let gesture = || prop::option::of(prop::sample::select(Gesture::ALL.to_vec()));
        let result = (
            gesture(),
            gesture(),
            any::<Option<i64>>(),
            any::<Option<i64>>(),
            prop::option::of(prop::sample::select(Outcome::ALL.to_vec())),
        );
        let times = (prop::option::of(timestamp()), timestamp());
        (ids, kind, result, times).prop_map(
            |(
                (row_id, eid, match_id, version),
                (event_type, (year, q), player_a_id, player_b_id),
                (gesture_a, gesture_b, winner_player_id, loser_player_id, outcome),
                (deadline_at, occurred_at),
            )| MatchEvent {
                row_id,
                event_id: Uuid::from_u128(eid),
                match_id,
                version,
                event_type,
                season_id: format!("{year:04}Q{q}").parse().expect("valid season"),
                player_a_id,
                player_b_id,
                gesture_a,
                gesture_b,
                winner_player_id,
                loser_player_id,
                outcome,
                deadline_at,
                occurred_at,
            },
        )
    }

    fn stream_event() -> impl Strategy<Value = StreamEvent> {
        let source = (
            (text(), text(), text(), text()),
            any::<u64>(),
            text(),
            timestamp(),
        )
            .prop_map(|((server, database, table, file), pos, gtid, commit_ts)| {
                SourcePosition {
                    server,
                    database,
                    table,
                    file,
                    pos,
                    gtid,
                    commit_ts,
                }
            });
        (any::<u16>(), match_event(), source).prop_map(|(shard, event, source)| StreamEvent {
            shard,
            event,
            source,
        })
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            vec(any::<u8>(), 0..48),
            any::<String>().prop_map(String::into_bytes),
            "-?[0-9]{1,25}".prop_map(String::into_bytes),
        ]
    }

    fn decode_owned(pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<StreamEvent, DecodeError> {
        StreamEvent::decode(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    }

    fn decode_str(pairs: &[(&'static str, String)]) -> Result<StreamEvent, DecodeError> {
        StreamEvent::decode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    /// The event column a stream field's enum or season error names.
    fn column_of(field: &str) -> &str {
        match field {
            "type" => "event_type",
            "season" => "season_id",
            "ga" => "gesture_a",
            "gb" => "gesture_b",
            "out" => "outcome",
            other => other,
        }
    }

    /// Whether `err` is about field `i` and nothing else.
    fn names_field(err: &DecodeError, i: usize) -> bool {
        let msg = err.to_string();
        match err {
            DecodeError::Missing(f) | DecodeError::Invalid { field: f, .. } => {
                *f == FIELDS[i] && msg.contains(FIELDS[i])
            }
            DecodeError::Model(m) => m.field == column_of(FIELDS[i]) && msg.contains(m.field),
            DecodeError::Format(_) => false,
        }
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn stream_wire_form_round_trips(e in stream_event()) {
            prop_assert_eq!(decode_str(&e.to_pairs())?, e);
        }

        #[test]
        fn stream_named_form_round_trips_in_any_order(
            (e, order) in stream_event().prop_flat_map(|e| {
                (Just(e), Just((0..FIELDS.len()).collect::<Vec<_>>()).prop_shuffle())
            })
        ) {
            let named = e.to_named_pairs();
            let shuffled: Vec<_> = order.iter().map(|i| named[*i].clone()).collect();
            prop_assert_eq!(decode_str(&shuffled)?, e);
        }

        #[test]
        fn stream_wire_form_reads_back_by_name(e in stream_event()) {
            let pairs = e.to_pairs();
            let named = named_fields(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
            let expected: Vec<(String, String)> = e
                .to_named_pairs()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            prop_assert_eq!(named, expected);
        }

        #[test]
        fn stream_arbitrary_pairs_are_an_error_not_a_panic(
            pairs in vec(
                (
                    prop_oneof![
                        prop::sample::select(FIELDS.to_vec()).prop_map(|f| f.as_bytes().to_vec()),
                        Just(ENTRY_FIELD.as_bytes().to_vec()),
                        vec(any::<u8>(), 0..4),
                    ],
                    bytes(),
                ),
                0..30,
            )
        ) {
            let _ = named_fields(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
            if let Err(err) = decode_owned(&pairs) {
                prop_assert!(!err.to_string().is_empty());
                if let DecodeError::Missing(f) | DecodeError::Invalid { field: f, .. } = err {
                    prop_assert!(FIELDS.contains(&f), "{}", f);
                }
            }
        }

        #[test]
        fn stream_arbitrary_wire_is_an_error_not_a_panic(
            wire in prop_oneof![
                vec(any::<u8>(), 0..200),
                vec(prop_oneof![Just(b'|'), Just(b'%'), Just(b'1'), any::<u8>()], 0..80),
            ]
        ) {
            let _ = named_fields([(ENTRY_FIELD.as_bytes(), wire.as_slice())]);
            let parts: Vec<&[u8]> = wire.split(|b| *b == b'|').collect();
            let framed = parts.len() == 24 && parts[0] == FORMAT_TAG.as_bytes();
            match StreamEvent::decode([(ENTRY_FIELD.as_bytes(), wire.as_slice())]) {
                Ok(e) => prop_assert_eq!(decode_str(&e.to_pairs())?, e),
                Err(DecodeError::Format(_)) => prop_assert!(!framed),
                Err(err) => prop_assert!(framed, "{}", err),
            }
        }

        #[test]
        fn stream_a_bad_wire_value_names_its_field(
            e in stream_event(),
            i in 0..FIELDS.len(),
            junk in bytes().prop_map(|b| b.into_iter().filter(|c| *c != b'|').collect::<Vec<u8>>()),
        ) {
            let wire = e.to_wire();
            let mut parts: Vec<&[u8]> = wire.as_bytes().split(|b| *b == b'|').collect();
            parts[i + 1] = &junk;
            let bad = parts.join(&b'|');
            match StreamEvent::decode([(ENTRY_FIELD.as_bytes(), bad.as_slice())]) {
                Ok(d) => prop_assert_eq!(decode_str(&d.to_pairs())?, d),
                Err(err) => prop_assert!(names_field(&err, i), "field {}: {}", FIELDS[i], err),
            }
        }

        #[test]
        fn stream_a_bad_or_missing_named_value_names_its_field(
            e in stream_event(),
            i in 0..FIELDS.len(),
            junk in prop::option::of(bytes()),
        ) {
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = e
                .to_named_pairs()
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
                .collect();
            match junk {
                Some(junk) => pairs[i].1 = junk,
                None => {
                    pairs.remove(i);
                }
            }
            match decode_owned(&pairs) {
                Ok(d) => prop_assert_eq!(decode_str(&d.to_named_pairs())?, d),
                Err(err) => prop_assert!(names_field(&err, i), "field {}: {}", FIELDS[i], err),
            }
        }
    }
}
