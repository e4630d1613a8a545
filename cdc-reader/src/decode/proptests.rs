//! Property tests of the decoder on binlog events built byte by byte, as
//! the servers write them: a valid row of any event, under any column
//! order, ENUM label order and extra columns, decodes to that event; a row
//! that does not fit is one dead letter whose reason names the column; no
//! bytes make the decoder panic or loop.

use super::table::{RowCursor, RowError, TableLayout};
use super::{event_type as et, kind, Action, Decoder};
use mysql_async::binlog::events::{Event, FormatDescriptionEvent, TableMapEvent};
use mysql_async::binlog::BinlogVersion;
use proptest::collection::vec;
use proptest::prelude::*;
use rps_core::event::{EventType, Gesture, MatchEvent, Outcome, SeasonId, COLUMNS};
use rps_core::{Config, SourcePosition, StreamEvent, Timestamp};
use std::path::Path;
use std::sync::Arc;

const SHARD: u16 = 3;
const DB: &str = "rps_shard_3";
const TABLE: &str = "match_result_events";
const SERVER: &str = "mysql-a";
const FILE: &str = "binlog.000001";
const TABLE_ID: u64 = 0x0102_0304_0506;

// Column indexes in `COLUMNS`.
const EVENT_ID: usize = 1;
const VERSION: usize = 3;
const SEASON_ID: usize = 5;
const ENUMS: [usize; 4] = [4, 8, 9, 12];
const DATETIMES: [usize; 2] = [13, 14];
const NULLABLE: [usize; 6] = [8, 9, 10, 11, 12, 13];

// ---------------------------------------------------------------------------
// Binlog bytes.

/// A column type as a table map describes it.
#[derive(Debug, Clone)]
enum Ty {
    Tiny,
    Long,
    LongLong,
    /// CHAR with its maximum length in bytes.
    Char(u16),
    VarChar(u16),
    /// BLOB/TEXT with the bytes of its length prefix.
    Blob(u8),
    Enum(Vec<Vec<u8>>),
    Set(u8),
    DateTime(u8),
    Timestamp(u8),
    /// DECIMAL(precision, scale) and its size in a row image.
    Decimal(u8, u8, usize),
}

impl Ty {
    /// The type byte and the column's metadata bytes; ENUM and SET travel
    /// as STRING with the real type in the metadata, as MySQL writes them.
    fn code_and_meta(&self) -> (u8, Vec<u8>) {
        match self {
            Ty::Tiny => (1, vec![]),
            Ty::Long => (3, vec![]),
            Ty::LongLong => (8, vec![]),
            Ty::Char(max) => (254, vec![254 ^ ((max & 0x300) >> 4) as u8, *max as u8]),
            Ty::VarChar(max) => (15, max.to_le_bytes().to_vec()),
            Ty::Blob(prefix) => (252, vec![*prefix]),
            Ty::Enum(labels) => (254, vec![247, enum_pack(labels)]),
            Ty::Set(n) => (254, vec![248, *n]),
            Ty::DateTime(fsp) => (18, vec![*fsp]),
            Ty::Timestamp(fsp) => (17, vec![*fsp]),
            Ty::Decimal(p, s, _) => (246, vec![*p, *s]),
        }
    }

    /// What the decoder makes of a value of this type.
    fn class(&self) -> Class {
        match self {
            Ty::Tiny | Ty::Long | Ty::LongLong => Class::Int,
            Ty::Char(_) | Ty::VarChar(_) | Ty::Blob(_) => Class::Str,
            Ty::Enum(_) => Class::Enum,
            Ty::DateTime(_) => Class::DateTime,
            Ty::Set(_) | Ty::Timestamp(_) | Ty::Decimal(..) => Class::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Int,
    Str,
    Enum,
    DateTime,
    Other,
}

fn enum_pack(labels: &[Vec<u8>]) -> u8 {
    if labels.len() < 256 {
        1
    } else {
        2
    }
}

fn str_prefix(max: u16) -> usize {
    if max < 256 {
        1
    } else {
        2
    }
}

/// A value in a row image.
#[derive(Debug, Clone)]
enum V {
    Null,
    Int(i64),
    Bytes(Vec<u8>),
    Enum(u16),
    /// DATETIME2: the packed 40-bit integer and the stored fraction.
    DateTime {
        packed: u64,
        frac: u32,
    },
    /// Bytes written as they are (fixed-size values).
    Raw(Vec<u8>),
}

fn encode_value(ty: &Ty, v: &V, out: &mut Vec<u8>) {
    let le = |out: &mut Vec<u8>, x: u64, n: usize| out.extend(&x.to_le_bytes()[..n]);
    match (ty, v) {
        (_, V::Raw(b)) => out.extend(b),
        (Ty::Tiny, V::Int(x)) => le(out, *x as u64, 1),
        (Ty::Long, V::Int(x)) => le(out, *x as u64, 4),
        (Ty::LongLong, V::Int(x)) => le(out, *x as u64, 8),
        (Ty::Char(max) | Ty::VarChar(max), V::Bytes(b)) => {
            let n = str_prefix(*max);
            assert!(b.len() < 1 << (8 * n), "string too long for its prefix");
            le(out, b.len() as u64, n);
            out.extend(b);
        }
        (Ty::Blob(n), V::Bytes(b)) => {
            le(out, b.len() as u64, usize::from(*n));
            out.extend(b);
        }
        (Ty::Enum(labels), V::Enum(ix)) => le(out, u64::from(*ix), usize::from(enum_pack(labels))),
        (Ty::DateTime(fsp), V::DateTime { packed, frac }) => {
            out.extend(&packed.to_be_bytes()[3..]);
            let n = usize::from(*fsp).div_ceil(2);
            out.extend(&frac.to_be_bytes()[4 - n..]);
        }
        (ty, v) => panic!("test bug: {v:?} is not a value of {ty:?}"),
    }
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    ty: Ty,
}

fn lenenc(n: u64, out: &mut Vec<u8>) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xffff => {
            out.push(252);
            out.extend(&n.to_le_bytes()[..2]);
        }
        0x1_0000..=0xff_ffff => {
            out.push(253);
            out.extend(&n.to_le_bytes()[..3]);
        }
        _ => {
            out.push(254);
            out.extend(n.to_le_bytes());
        }
    }
}

fn lenenc_str(b: &[u8], out: &mut Vec<u8>) {
    lenenc(b.len() as u64, out);
    out.extend(b);
}

fn tlv(field: u8, value: &[u8], out: &mut Vec<u8>) {
    out.push(field);
    lenenc_str(value, out);
}

/// A TABLE_MAP event's data; `names` is `binlog_row_metadata=FULL`.
fn table_map(table: &str, cols: &[Column], names: bool) -> Vec<u8> {
    let types: Vec<u8> = cols.iter().map(|c| c.ty.code_and_meta().0).collect();
    let meta: Vec<u8> = cols.iter().flat_map(|c| c.ty.code_and_meta().1).collect();
    let mut optional = Vec::new();
    if names {
        let mut v = Vec::new();
        for c in cols {
            lenenc_str(c.name.as_bytes(), &mut v);
        }
        tlv(4, &v, &mut optional);
        let mut v = Vec::new();
        for c in cols {
            if let Ty::Enum(labels) = &c.ty {
                lenenc(labels.len() as u64, &mut v);
                for l in labels {
                    lenenc_str(l, &mut v);
                }
            }
        }
        if !v.is_empty() {
            tlv(6, &v, &mut optional);
        }
    }
    table_map_raw(table, &types, &meta, &optional)
}

fn table_map_raw(table: &str, types: &[u8], meta: &[u8], optional: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(&TABLE_ID.to_le_bytes()[..6]);
    d.extend([0, 0]);
    for name in [DB, table] {
        d.push(name.len() as u8);
        d.extend(name.as_bytes());
        d.push(0);
    }
    lenenc(types.len() as u64, &mut d);
    d.extend(types);
    lenenc_str(meta, &mut d);
    d.extend(vec![0xff; types.len().div_ceil(8)]);
    d.extend(optional);
    d
}

fn bitmap(bits: &[bool], out: &mut Vec<u8>) {
    let mut b = vec![0u8; bits.len().div_ceil(8)];
    for (i, set) in bits.iter().enumerate() {
        if *set {
            b[i / 8] |= 1 << (i % 8);
        }
    }
    out.extend(b);
}

/// A row image, and where its NULL bitmap and each column's value end.
fn row_image(cols: &[Column], present: &[bool], vals: &[V]) -> (Vec<u8>, Vec<(String, usize)>) {
    let mut out = Vec::new();
    let nulls: Vec<bool> = present
        .iter()
        .zip(vals)
        .filter(|(p, _)| **p)
        .map(|(_, v)| matches!(v, V::Null))
        .collect();
    bitmap(&nulls, &mut out);
    let mut ends = vec![("the NULL bitmap".to_string(), out.len())];
    for ((c, p), v) in cols.iter().zip(present).zip(vals) {
        if *p && !matches!(v, V::Null) {
            encode_value(&c.ty, v, &mut out);
            ends.push((format!("column `{}`", c.name), out.len()));
        }
    }
    (out, ends)
}

/// A rows event's data: WRITE (one image per row) or UPDATE (two).
fn rows_event(v2: bool, ncols: usize, bitmaps: &[&[bool]], rows: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(&TABLE_ID.to_le_bytes()[..6]);
    d.extend([0, 0]);
    if v2 {
        d.extend(2u16.to_le_bytes());
    }
    lenenc(ncols as u64, &mut d);
    for b in bitmaps {
        bitmap(b, &mut d);
    }
    d.extend(rows);
    d
}

fn query_event(schema: &str, sql: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(7u32.to_le_bytes());
    d.extend(0u32.to_le_bytes());
    d.push(schema.len() as u8);
    d.extend(0u16.to_le_bytes());
    d.extend(0u16.to_le_bytes());
    d.extend(schema.as_bytes());
    d.push(0);
    d.extend(sql);
    d
}

/// Binlog header fields of the test events.
const EVENT_TS: u32 = 1_790_000_000;
const SERVER_ID: u32 = 1;

fn header(type_code: u8, log_pos: u32, data_len: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(19);
    h.extend(EVENT_TS.to_le_bytes());
    h.push(type_code);
    h.extend(SERVER_ID.to_le_bytes());
    h.extend((19 + data_len as u32).to_le_bytes());
    h.extend(log_pos.to_le_bytes());
    h.extend(0u16.to_le_bytes());
    h
}

/// An event as mysql_async hands it over (checksums off).
fn event(type_code: u8, log_pos: u32, data: &[u8]) -> Event {
    let mut b = header(type_code, log_pos, data.len());
    b.extend(data);
    Event::read(
        &FormatDescriptionEvent::new(BinlogVersion::Version4),
        &b[..],
    )
    .expect("a framed event")
}

fn config() -> Arc<Config> {
    static CONFIG: std::sync::OnceLock<Arc<Config>> = std::sync::OnceLock::new();
    CONFIG.get_or_init(parse_config).clone()
}

fn parse_config() -> Arc<Config> {
    let text = r#"
shard_count = 8
[redis]
url = "redis://127.0.0.1:6380"
[api]
bind = "127.0.0.1:8080"
[[servers]]
name = "mysql-a"
url = "mysql://u:p@127.0.0.1:3307"
shards = [0, 1, 2, 3, 4, 5, 6, 7]
"#;
    Arc::new(Config::parse(text, Path::new("test.toml")).expect("test config"))
}

fn decoder() -> Decoder {
    Decoder::new(config(), SERVER, FILE)
}

/// Decodes `events` in order; the table map's own actions are none.
fn decode_all(events: &[Event]) -> Vec<Action> {
    let mut d = decoder();
    let mut out = Vec::new();
    for ev in events {
        d.decode(ev, &mut out).expect("events that parse");
    }
    out
}

fn layout(table: &str, cols: &[Column], names: bool) -> TableLayout {
    let ev = event(et::TABLE_MAP, 0, &table_map(table, cols, names));
    let tme: TableMapEvent<'_> = ev.read_event().expect("a table map");
    TableLayout::new(&tme, ev.data(), Some(SHARD))
}

// ---------------------------------------------------------------------------
// Events, tables and rows.

fn model_labels(i: usize) -> Vec<Vec<u8>> {
    let labels: Vec<&str> = match i {
        4 => EventType::ALL.iter().map(|v| v.as_str()).collect(),
        8 | 9 => Gesture::ALL.iter().map(|v| v.as_str()).collect(),
        _ => Outcome::ALL.iter().map(|v| v.as_str()).collect(),
    };
    labels.into_iter().map(|l| l.as_bytes().to_vec()).collect()
}

/// The table as `sql/schema.sql` creates it (utf8mb4).
fn canonical() -> Vec<Column> {
    COLUMNS
        .iter()
        .enumerate()
        .map(|(i, name)| Column {
            name: name.to_string(),
            ty: match i {
                EVENT_ID => Ty::Char(144),
                VERSION => Ty::Long,
                SEASON_ID => Ty::Char(24),
                i if ENUMS.contains(&i) => Ty::Enum(model_labels(i)),
                i if DATETIMES.contains(&i) => Ty::DateTime(6),
                _ => Ty::LongLong,
            },
        })
        .collect()
}

fn model_index(c: &Column) -> Option<usize> {
    COLUMNS.iter().position(|m| m.eq_ignore_ascii_case(&c.name))
}

fn datetime_parts(t: Timestamp) -> [u64; 7] {
    // `YYYY-MM-DD HH:MM:SS.ffffff`
    let s = t.to_string();
    let n = |r: std::ops::Range<usize>| s[r].parse::<u64>().expect("timestamp digits");
    [
        n(0..4),
        n(5..7),
        n(8..10),
        n(11..13),
        n(14..16),
        n(17..19),
        n(20..26),
    ]
}

fn pack_datetime([y, mo, d, h, mi, s]: [u64; 6]) -> u64 {
    let ymd = ((y * 13 + mo) << 5) | d;
    0x80_0000_0000 + ((ymd << 17) | (h << 12) | (mi << 6) | s)
}

/// `t` as DATETIME2(fsp) stores it.
fn datetime_value(t: Timestamp, fsp: u8) -> V {
    let [y, mo, d, h, mi, s, us] = datetime_parts(truncated(t, fsp));
    let frac = match usize::from(fsp).div_ceil(2) {
        0 => 0,
        1 => us / 10_000,
        2 => us / 100,
        _ => us,
    };
    V::DateTime {
        packed: pack_datetime([y, mo, d, h, mi, s]),
        frac: frac as u32,
    }
}

/// `t` as read back from DATETIME(fsp): the digits past `fsp` are gone.
fn truncated(t: Timestamp, fsp: u8) -> Timestamp {
    let unit = 10i64.pow(6 - u32::from(fsp.min(6)));
    Timestamp(t.0 - t.0.rem_euclid(unit))
}

fn enum_value(ty: &Ty, label: &str) -> V {
    let Ty::Enum(labels) = ty else {
        panic!("test bug: {ty:?} is not an ENUM");
    };
    let ix = labels
        .iter()
        .position(|l| l == label.as_bytes())
        .expect("label");
    V::Enum(ix as u16 + 1)
}

/// The value `col` of the table holds for `e`; `extra` for other columns.
fn value_of(col: &Column, e: &MatchEvent, extra: &V) -> V {
    let Some(i) = model_index(col) else {
        return extra.clone();
    };
    let int = |v: i64| V::Int(v);
    let opt_int = |v: Option<i64>| v.map_or(V::Null, V::Int);
    let en = |v: Option<&str>| v.map_or(V::Null, |l| enum_value(&col.ty, l));
    let dt = |t: Option<Timestamp>| match (&col.ty, t) {
        (Ty::DateTime(fsp), Some(t)) => datetime_value(t, *fsp),
        _ => V::Null,
    };
    match i {
        0 => int(e.row_id),
        1 => V::Bytes(e.event_id.hyphenated().to_string().into_bytes()),
        2 => int(e.match_id),
        3 => int(i64::from(e.version)),
        4 => en(Some(e.event_type.as_str())),
        5 => V::Bytes(e.season_id.to_string().into_bytes()),
        6 => int(e.player_a_id),
        7 => int(e.player_b_id),
        8 => en(e.gesture_a.map(Gesture::as_str)),
        9 => en(e.gesture_b.map(Gesture::as_str)),
        10 => opt_int(e.winner_player_id),
        11 => opt_int(e.loser_player_id),
        12 => en(e.outcome.map(Outcome::as_str)),
        13 => dt(e.deadline_at),
        _ => dt(Some(e.occurred_at)),
    }
}

/// `e` as the table gives it back (DATETIME precision).
fn expected(cols: &[Column], e: &MatchEvent) -> MatchEvent {
    let fsp = |i: usize| match cols
        .iter()
        .find(|c| model_index(c) == Some(i))
        .map(|c| &c.ty)
    {
        Some(Ty::DateTime(fsp)) => *fsp,
        _ => 6,
    };
    MatchEvent {
        deadline_at: e.deadline_at.map(|t| truncated(t, fsp(13))),
        occurred_at: truncated(e.occurred_at, fsp(14)),
        ..e.clone()
    }
}

/// A table of the model's columns in any order, names in any case, ENUM
/// labels in any order with labels of later versions among them, and
/// columns the model does not know (with a value each and a flag whether
/// the row image carries them, as with `binlog_row_image=MINIMAL`).
#[derive(Debug, Clone)]
struct Table {
    cols: Vec<Column>,
    extras: Vec<V>,
    present: Vec<bool>,
}

impl Table {
    fn values(&self, e: &MatchEvent) -> Vec<V> {
        self.cols
            .iter()
            .zip(&self.extras)
            .map(|(c, x)| value_of(c, e, x))
            .collect()
    }

    fn image(&self, e: &MatchEvent) -> Vec<u8> {
        row_image(&self.cols, &self.present, &self.values(e)).0
    }
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (
        1000i32..=9999,
        1u32..=12,
        1u32..=31,
        0u32..24,
        0u32..60,
        0u32..60,
        0u32..1_000_000,
    )
        .prop_filter_map("a calendar date", |(y, mo, d, h, mi, s, us)| {
            Timestamp::from_parts(y, mo, d, h, mi, s, us)
        })
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
            event_id: uuid::Uuid::from_u128(eid),
            match_id,
            version,
            event_type,
            season_id: format!("{year:04}Q{q}").parse().expect("a season"),
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

/// Some bytes, of any kind: text, digits, invalid UTF-8, long.
fn junk(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..max.min(40)),
        any::<String>().prop_map(|s| s.into_bytes()),
        "[0-9a-fA-F-]{30,40}".prop_map(String::into_bytes),
        "[0-9]{4}Q[0-9]".prop_map(String::into_bytes),
        vec(any::<u8>(), max / 2..max),
    ]
    .prop_map(move |mut b| {
        b.truncate(max);
        b
    })
}

/// A column type the model does not use for its own columns.
fn extra_type() -> impl Strategy<Value = Ty> {
    prop_oneof![
        Just(Ty::Tiny),
        Just(Ty::Long),
        Just(Ty::LongLong),
        (1u16..300).prop_map(Ty::Char),
        (1u16..700).prop_map(Ty::VarChar),
        (1u8..=4).prop_map(Ty::Blob),
        vec("[a-z]{1,6}", 1..5)
            .prop_map(|l| Ty::Enum(l.into_iter().map(String::into_bytes).collect())),
        (1u8..=8).prop_map(Ty::Set),
        (0u8..=6).prop_map(Ty::DateTime),
        (0u8..=6).prop_map(Ty::Timestamp),
        prop::sample::select(vec![(10, 2, 5), (18, 9, 8), (5, 0, 3)])
            .prop_map(|(p, s, n)| Ty::Decimal(p, s, n)),
    ]
}

/// Any value of `ty` (NULL included).
fn value(ty: &Ty) -> BoxedStrategy<V> {
    let fixed = |n: usize| vec(any::<u8>(), n).prop_map(V::Raw).boxed();
    let some = match ty {
        Ty::Tiny | Ty::Long | Ty::LongLong => any::<i64>().prop_map(V::Int).boxed(),
        Ty::Char(max) | Ty::VarChar(max) => {
            junk(usize::from(*max).min(if *max < 256 { 255 } else { 600 }))
                .prop_map(V::Bytes)
                .boxed()
        }
        Ty::Blob(n) => junk(if *n == 1 { 255 } else { 600 })
            .prop_map(V::Bytes)
            .boxed(),
        Ty::Enum(labels) => (0..labels.len() as u16 + 3).prop_map(V::Enum).boxed(),
        Ty::Set(n) => fixed(usize::from(*n)),
        Ty::DateTime(fsp) => fixed(5 + usize::from(*fsp).div_ceil(2)),
        Ty::Timestamp(fsp) => fixed(4 + usize::from(*fsp).div_ceil(2)),
        Ty::Decimal(_, _, n) => fixed(*n),
    };
    prop_oneof![1 => Just(V::Null), 4 => some].boxed()
}

fn model_column(i: usize) -> BoxedStrategy<Ty> {
    match i {
        EVENT_ID => prop_oneof![
            prop::sample::select(vec![36u16, 108, 144, 400]).prop_map(Ty::Char),
            prop::sample::select(vec![36u16, 144, 400]).prop_map(Ty::VarChar),
        ]
        .boxed(),
        VERSION => prop_oneof![Just(Ty::Long), Just(Ty::LongLong)].boxed(),
        SEASON_ID => prop_oneof![
            prop::sample::select(vec![6u16, 24, 300]).prop_map(Ty::Char),
            prop::sample::select(vec![6u16, 24, 300]).prop_map(Ty::VarChar),
        ]
        .boxed(),
        i if ENUMS.contains(&i) => {
            // Labels in any order, with some the model does not know.
            vec("[a-z_]{1,8}", 0..3)
                .prop_filter_map("no label twice", move |more| {
                    let mut labels = model_labels(i);
                    for m in more {
                        let m = m.into_bytes();
                        if labels.contains(&m) {
                            return None;
                        }
                        labels.push(m);
                    }
                    Some(labels)
                })
                .prop_flat_map(|labels| Just(labels).prop_shuffle())
                .prop_map(Ty::Enum)
                .boxed()
        }
        i if DATETIMES.contains(&i) => (0u8..=6).prop_map(Ty::DateTime).boxed(),
        _ => Just(Ty::LongLong).boxed(),
    }
}

fn table() -> impl Strategy<Value = Table> {
    let model: Vec<BoxedStrategy<(Column, V, bool)>> = (0..COLUMNS.len())
        .map(|i| {
            (model_column(i), any::<bool>())
                .prop_map(move |(ty, upper)| {
                    let name = if upper {
                        COLUMNS[i].to_ascii_uppercase()
                    } else {
                        COLUMNS[i].to_string()
                    };
                    (Column { name, ty }, V::Null, true)
                })
                .boxed()
        })
        .collect();
    let extras = vec(
        extra_type().prop_flat_map(|ty| (value(&ty), any::<bool>(), Just(ty))),
        0..4,
    )
    .prop_map(|xs| {
        xs.into_iter()
            .enumerate()
            .map(|(k, (v, present, ty))| {
                let name = format!("extra_{k}");
                (Column { name, ty }, v, present)
            })
            .collect::<Vec<_>>()
    });
    (model, extras)
        .prop_flat_map(|(mut cols, extras)| {
            cols.extend(extras);
            Just(cols).prop_shuffle()
        })
        .prop_map(|cols| {
            let mut t = Table {
                cols: vec![],
                extras: vec![],
                present: vec![],
            };
            for (c, v, p) in cols {
                t.cols.push(c);
                t.extras.push(v);
                t.present.push(p);
            }
            t
        })
}

fn row(e: &MatchEvent, t: &Table, pos: u64, table: &str) -> Action {
    Action::Row(StreamEvent {
        shard: SHARD,
        event: expected(&t.cols, e),
        source: SourcePosition {
            server: SERVER.into(),
            database: DB.into(),
            table: table.into(),
            file: FILE.into(),
            pos,
            gtid: String::new(),
            commit_ts: Timestamp::default(),
        },
    })
}

fn dead(a: &Action) -> Option<(&str, &str, &str)> {
    match a {
        Action::Dead(d) => Some((d.kind.as_str(), d.reason.as_str(), d.payload.as_str())),
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------
// Faults.

/// One way a row does not fit the model.
#[derive(Debug, Clone)]
enum Fault {
    /// NULL in a NOT NULL column.
    Null(usize),
    /// An ENUM index past the labels (or 0, MySQL's "invalid").
    EnumIndex(usize, u16),
    /// A label the model does not know, added to the table's labels.
    UnknownLabel(usize, String),
    /// `event_id` or `season_id` holding something else.
    Text(usize, Vec<u8>),
    /// The column has another type than the model's (a schema change).
    WrongType(usize, Ty),
    /// `version` wider than INT.
    VersionOutOfRange(i64),
    /// A DATETIME that is no calendar instant.
    BadDateTime(usize, u64, u32),
    /// The table lacks the column.
    Missing(usize),
    /// The table map carries no column names.
    NoNames,
}

impl Fault {
    fn column(&self) -> Option<&'static str> {
        match self {
            Fault::Null(i)
            | Fault::EnumIndex(i, _)
            | Fault::UnknownLabel(i, _)
            | Fault::Text(i, _)
            | Fault::WrongType(i, _)
            | Fault::BadDateTime(i, ..)
            | Fault::Missing(i) => Some(COLUMNS[*i]),
            Fault::VersionOutOfRange(_) => Some(COLUMNS[VERSION]),
            Fault::NoNames => None,
        }
    }

    /// What the reason says, besides the column's name.
    fn says(&self) -> &'static str {
        match self {
            Fault::Null(_) => "NULL in required column",
            Fault::EnumIndex(..) => "unknown enum index",
            Fault::UnknownLabel(..) => "unknown value",
            Fault::Text(EVENT_ID, _) => "malformed UUID",
            Fault::Text(..) => "invalid season_id",
            Fault::WrongType(..) => "expected",
            Fault::VersionOutOfRange(_) => "out of range",
            Fault::BadDateTime(..) => "invalid DATETIME",
            Fault::Missing(_) => "table has no column",
            Fault::NoNames => "binlog_row_metadata is not FULL",
        }
    }
}

fn class_of_model(i: usize) -> Class {
    match i {
        EVENT_ID | SEASON_ID => Class::Str,
        i if ENUMS.contains(&i) => Class::Enum,
        i if DATETIMES.contains(&i) => Class::DateTime,
        _ => Class::Int,
    }
}

/// DATETIME2 values that are no instant: month 0, day 0 or past
/// the month, hour 24+, minute or second 60+, before year 0 (negative),
/// or a fraction of a second or more.
fn bad_datetime() -> impl Strategy<Value = (u64, u32)> {
    let ok = (
        1000u64..=9999,
        1u64..=12,
        1u64..=28,
        0u64..24,
        0u64..60,
        0u64..60,
    );
    (ok, 0usize..7, any::<u64>()).prop_map(|((y, mo, d, h, mi, s), how, r)| {
        let fields = match how {
            // Month 13 packs as month 0 of the next year.
            0 => [y, [0, 13][r as usize % 2], d, h, mi, s],
            1 => [y, mo, 0, h, mi, s],
            2 => [2026, [2, 4, 6, 9, 11][r as usize % 5], 31, h, mi, s],
            3 => [y, mo, d, 24 + r % 8, mi, s],
            4 => [y, mo, d, h, 60 + r % 4, s],
            5 => [y, mo, d, h, mi, 60 + r % 4],
            _ => [y, mo, d, h, mi, s],
        };
        match how {
            6 if r % 2 == 0 => (r % 0x80_0000_0000, 0),
            6 => (pack_datetime(fields), 1_000_000 + (r % 1_000_000) as u32),
            _ => (pack_datetime(fields), 0),
        }
    })
}

fn fault() -> impl Strategy<Value = Fault> {
    let required: Vec<usize> = (0..COLUMNS.len())
        .filter(|i| !NULLABLE.contains(i))
        .collect();
    let wrong = (0..COLUMNS.len(), extra_type()).prop_filter_map("another class", |(i, ty)| {
        (ty.class() != class_of_model(i)).then_some(Fault::WrongType(i, ty))
    });
    let text = prop_oneof![Just(EVENT_ID), Just(SEASON_ID)]
        .prop_flat_map(|i| (Just(i), junk(600)))
        .prop_filter_map("not valid by chance", |(i, b)| {
            let valid = match i {
                EVENT_ID => uuid::Uuid::try_parse_ascii(&b).is_ok(),
                _ => SeasonId::parse_bytes(&b).is_ok(),
            };
            (!valid).then_some(Fault::Text(i, b))
        });
    prop_oneof![
        prop::sample::select(required).prop_map(Fault::Null),
        (
            prop::sample::select(ENUMS.to_vec()),
            prop_oneof![Just(0u16), 8u16..256]
        )
            .prop_map(|(i, ix)| Fault::EnumIndex(i, ix)),
        (prop::sample::select(ENUMS.to_vec()), "[a-z]{1,8}|.{1,8}").prop_filter_map(
            "not a model label",
            |(i, l)| {
                (!model_labels(i).contains(&l.clone().into_bytes()))
                    .then_some(Fault::UnknownLabel(i, l))
            }
        ),
        text,
        wrong,
        prop_oneof![
            i64::MIN..i64::from(i32::MIN),
            i64::from(i32::MAX) + 1..i64::MAX
        ]
        .prop_map(Fault::VersionOutOfRange),
        (prop::sample::select(DATETIMES.to_vec()), bad_datetime())
            .prop_map(|(i, (p, f))| Fault::BadDateTime(i, p, f)),
        (0..COLUMNS.len()).prop_map(Fault::Missing),
        Just(Fault::NoNames),
    ]
}

/// The table and row values of `e` with `fault` applied, and whether the
/// table map carries names.
fn apply(fault: &Fault, t: &Table, e: &MatchEvent) -> (Vec<Column>, Vec<V>, Vec<bool>, bool) {
    let mut cols = t.cols.clone();
    let mut vals = t.values(e);
    let mut present = t.present.clone();
    let at = |cols: &[Column], i: usize| {
        cols.iter()
            .position(|c| model_index(c) == Some(i))
            .expect("a model column")
    };
    match fault {
        Fault::Null(i) => vals[at(&cols, *i)] = V::Null,
        Fault::EnumIndex(i, ix) => vals[at(&cols, *i)] = V::Enum(*ix),
        Fault::UnknownLabel(i, l) => {
            let k = at(&cols, *i);
            if let Ty::Enum(labels) = &mut cols[k].ty {
                labels.push(l.clone().into_bytes());
                vals[k] = V::Enum(labels.len() as u16);
            }
        }
        Fault::Text(i, b) => {
            let k = at(&cols, *i);
            cols[k].ty = Ty::VarChar(1000);
            vals[k] = V::Bytes(b.clone());
        }
        Fault::WrongType(i, ty) => {
            let k = at(&cols, *i);
            cols[k].ty = ty.clone();
            vals[k] = match ty {
                Ty::Tiny | Ty::Long | Ty::LongLong => V::Int(7),
                Ty::Char(_) | Ty::VarChar(_) | Ty::Blob(_) => V::Bytes(b"rock".to_vec()),
                Ty::Enum(_) => V::Enum(1),
                Ty::Set(n) => V::Raw(vec![1; usize::from(*n)]),
                Ty::DateTime(fsp) => datetime_value(e.occurred_at, *fsp),
                Ty::Timestamp(fsp) => V::Raw(vec![1; 4 + usize::from(*fsp).div_ceil(2)]),
                Ty::Decimal(_, _, n) => V::Raw(vec![0x80; *n]),
            };
        }
        Fault::VersionOutOfRange(v) => {
            let k = at(&cols, VERSION);
            cols[k].ty = Ty::LongLong;
            vals[k] = V::Int(*v);
        }
        Fault::BadDateTime(i, packed, frac) => {
            let k = at(&cols, *i);
            cols[k].ty = Ty::DateTime(6);
            vals[k] = V::DateTime {
                packed: *packed,
                frac: *frac,
            };
        }
        Fault::Missing(i) => {
            let k = at(&cols, *i);
            cols[k].name = format!("{}_old", COLUMNS[*i]);
        }
        Fault::NoNames => {}
    }
    // A column of the fault is always in the image.
    if let Some(c) = fault.column() {
        if let Some(k) = cols.iter().position(|col| col.name.eq_ignore_ascii_case(c)) {
            present[k] = true;
        }
    }
    (cols, vals, present, !matches!(fault, Fault::NoNames))
}

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures become named regression tests, not files beside the code.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(proptest_config(256))]

    /// Any event, written by any version of the table, reads back as itself.
    #[test]
    fn decode_valid_rows_round_trip_through_the_layout(
        t in table(),
        events in vec(match_event(), 1..4),
    ) {
        let l = layout(TABLE, &t.cols, true);
        let bytes: Vec<u8> = events.iter().flat_map(|e| t.image(e)).collect();
        let mut cur = RowCursor::new(&bytes);
        for e in &events {
            prop_assert_eq!(cur.next_event(&l, &t.present), Ok(expected(&t.cols, e)));
        }
        prop_assert!(cur.is_empty());
        // The dead-letter view reads the same images by name.
        let mut cur = RowCursor::new(&bytes);
        for _ in &events {
            let json = cur.next_json(&l, &t.present).expect("json of a valid row");
            let names = t.cols.iter().zip(&t.present).filter(|(_, p)| **p);
            for (c, _) in names {
                prop_assert!(json.get(&c.name).is_some(), "{} in {}", c.name, json);
            }
        }
        prop_assert!(cur.is_empty());
    }

    #[test]
    fn decode_valid_rows_round_trip_through_the_decoder(
        t in table(),
        events in vec(match_event(), 1..4),
        v2 in any::<bool>(),
        season_table in any::<bool>(),
        pos in 4u32..u32::MAX,
    ) {
        let table = if season_table { "match_result_events_2026q4" } else { TABLE };
        let rows: Vec<u8> = events.iter().flat_map(|e| t.image(e)).collect();
        let kind = if v2 { et::WRITE_ROWS_V2 } else { et::WRITE_ROWS_V1 };
        let out = decode_all(&[
            event(et::TABLE_MAP, pos - 1, &table_map(table, &t.cols, true)),
            event(kind, pos, &rows_event(v2, t.cols.len(), &[&t.present], &rows)),
        ]);
        let want: Vec<Action> = events.iter().map(|e| row(e, &t, u64::from(pos), table)).collect();
        prop_assert_eq!(out, want);
    }

    /// A row that does not fit is one dead letter naming the column, and
    /// the rows around it are still published.
    #[test]
    fn decode_a_bad_row_is_a_dead_letter_naming_the_column(
        t in table(),
        e in match_event(),
        neighbour in match_event(),
        fault in fault(),
    ) {
        let (cols, vals, present, names) = apply(&fault, &t, &e);
        let (bad, _) = row_image(&cols, &present, &vals);
        let l = layout(TABLE, &cols, names);
        let err = RowCursor::new(&bad).next_event(&l, &present);
        let Err(RowError::Model(reason)) = err else {
            return Err(TestCaseError::fail(format!("{fault:?}: {err:?}")));
        };
        prop_assert!(reason.contains(fault.says()), "{:?}: {}", fault, reason);
        if let Some(c) = fault.column() {
            prop_assert!(reason.contains(&format!("`{c}`")), "{:?}: {}", fault, reason);
        }

        // Through the decoder, between two good rows (when a good row can
        // be written to that table at all).
        let fits = !matches!(fault, Fault::Missing(_) | Fault::NoNames | Fault::WrongType(..)
            | Fault::Text(..) | Fault::VersionOutOfRange(_) | Fault::BadDateTime(..));
        let good = Table { cols: cols.clone(), extras: t.extras.clone(), present: present.clone() };
        let mut rows = Vec::new();
        if fits {
            rows.extend(good.image(&neighbour));
        }
        rows.extend(&bad);
        if fits {
            rows.extend(good.image(&neighbour));
        }
        let out = decode_all(&[
            event(et::TABLE_MAP, 100, &table_map(TABLE, &cols, names)),
            event(et::WRITE_ROWS_V2, 200, &rows_event(true, cols.len(), &[&present], &rows)),
        ]);
        let want_rows = if fits { 2 } else { 0 };
        prop_assert_eq!(out.len(), want_rows + 1, "{:?}", out);
        let dead_at = if fits { 1 } else { 0 };
        let (k, r, payload) = dead(&out[dead_at]).expect("a dead letter");
        prop_assert_eq!(k, kind::BAD_ROW);
        prop_assert_eq!(r, reason.as_str());
        // The payload shows the row by column name.
        let json: serde_json::Value = serde_json::from_str(payload).expect("a JSON payload");
        prop_assert!(json.is_object(), "{}", payload);
        if fits {
            prop_assert_eq!(&out[0], &row(&neighbour, &good, 200, TABLE));
            prop_assert_eq!(&out[2], &row(&neighbour, &good, 200, TABLE));
        }
    }

    /// A row image cut anywhere says where it ends; the decoder keeps the
    /// rows before it and puts the event's bytes in one dead letter.
    #[test]
    fn decode_a_truncated_row_names_where_it_ends(
        t in table(),
        events in vec(match_event(), 2..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let l = layout(TABLE, &t.cols, true);
        let last = events.last().expect("rows");
        let (image, ends) = row_image(&t.cols, &t.present, &t.values(last));
        let cut = cut.index(image.len());
        let at = &ends.iter().find(|(_, end)| *end > cut).expect("a part").0;
        let err = RowCursor::new(&image[..cut]).next_event(&l, &t.present);
        let Err(RowError::Malformed(reason)) = err else {
            return Err(TestCaseError::fail(format!("cut at {cut}: {err:?}")));
        };
        prop_assert_eq!(reason, format!("row image ends inside {at}"));

        let mut rows: Vec<u8> = events[..events.len() - 1].iter().flat_map(|e| t.image(e)).collect();
        rows.extend(&image[..cut]);
        let out = decode_all(&[
            event(et::TABLE_MAP, 100, &table_map(TABLE, &t.cols, true)),
            event(et::WRITE_ROWS_V2, 200, &rows_event(true, t.cols.len(), &[&t.present], &rows)),
        ]);
        let good = events.len() - 1;
        prop_assert_eq!(out.len(), good + usize::from(cut > 0), "{:?}", out);
        for (a, e) in out.iter().zip(&events[..good]) {
            prop_assert_eq!(a, &row(e, &t, 200, TABLE));
        }
        if cut > 0 {
            let (k, r, payload) = dead(&out[good]).expect("a dead letter");
            prop_assert_eq!(k, kind::BAD_ROW);
            prop_assert!(r.starts_with("row image ends inside"), "{}", r);
            prop_assert!(payload.contains(&hex(&rows)), "{}", payload);
        }
    }

    #[test]
    fn decode_a_wrong_column_count_is_a_dead_letter(
        t in table(),
        e in match_event(),
        other in 0usize..40,
    ) {
        prop_assume!(other != t.cols.len());
        let present = vec![true; other];
        let out = decode_all(&[
            event(et::TABLE_MAP, 100, &table_map(TABLE, &t.cols, true)),
            event(et::WRITE_ROWS_V2, 200, &rows_event(true, other, &[&present], &t.image(&e))),
        ]);
        prop_assert_eq!(out.len(), 1, "{:?}", out);
        let (k, r, _) = dead(&out[0]).expect("a dead letter");
        prop_assert_eq!(k, kind::BAD_ROW);
        prop_assert_eq!(
            r,
            format!("rows event has {other} columns, table map has {}", t.cols.len())
        );
    }

    /// UPDATE and DELETE of valid rows are dead letters with the images.
    #[test]
    fn decode_updates_and_deletes_are_dead_letters(
        t in table(),
        before in match_event(),
        after in match_event(),
        update in any::<bool>(),
    ) {
        let (kind_code, dl_kind, rows, bitmaps): (u8, &str, Vec<u8>, Vec<&[bool]>) = if update {
            let mut rows = t.image(&before);
            rows.extend(t.image(&after));
            (et::UPDATE_ROWS_V2, kind::UPDATE, rows, vec![&t.present, &t.present])
        } else {
            (et::DELETE_ROWS_V2, kind::DELETE, t.image(&before), vec![&t.present])
        };
        let out = decode_all(&[
            event(et::TABLE_MAP, 100, &table_map(TABLE, &t.cols, true)),
            event(kind_code, 200, &rows_event(true, t.cols.len(), &bitmaps, &rows)),
        ]);
        prop_assert_eq!(out.len(), 1, "{:?}", out);
        let (k, _, payload) = dead(&out[0]).expect("a dead letter");
        prop_assert_eq!(k, dl_kind);
        let json: serde_json::Value = serde_json::from_str(payload).expect("JSON");
        let eid = before.event_id.hyphenated().to_string();
        let image = json["before"].as_object().expect("the before image");
        let by_name = image.iter().find(|(k, _)| k.eq_ignore_ascii_case("event_id"));
        prop_assert_eq!(by_name.map(|(_, v)| v.as_str()), Some(Some(eid.as_str())));
    }

    /// Row images of any bytes under any column bitmap: a result, never a
    /// panic, and reading on always moves forward.
    #[test]
    fn decode_arbitrary_row_bytes_never_panic(
        (t, present) in table().prop_flat_map(|t| {
            let n = t.cols.len();
            let present = prop_oneof![
                6 => vec(any::<bool>(), n),
                2 => vec(any::<bool>(), 0..24),
                1 => Just(vec![false; n]),
            ];
            (Just(t), present)
        }),
        bytes in vec(any::<u8>(), 0..300),
    ) {
        let l = layout(TABLE, &t.cols, true);
        for json in [false, true] {
            let mut cur = RowCursor::new(&bytes);
            let mut rows = 0;
            while !cur.is_empty() && rows <= bytes.len() {
                let r = if json {
                    cur.next_json(&l, &present).map(|_| ())
                } else {
                    cur.next_event(&l, &present).map(|_| ())
                };
                match r {
                    Ok(()) | Err(RowError::Model(_)) => rows += 1,
                    Err(RowError::Malformed(m)) => {
                        prop_assert!(!m.is_empty());
                        break;
                    }
                }
                if !present.contains(&true) {
                    break;
                }
            }
        }
        // And the same bytes as a rows event of the decoder.
        let mut d = decoder();
        let mut out = Vec::new();
        d.decode(&event(et::TABLE_MAP, 1, &table_map(TABLE, &t.cols, true)), &mut out)
            .expect("a table map");
        let ev = event(et::WRITE_ROWS_V2, 2, &rows_event(true, present.len(), &[&present], &bytes));
        d.decode(&ev, &mut out).expect("a framed rows event");
        prop_assert!(out.iter().all(Action::is_item), "{:?}", out);
        prop_assert!(bytes.is_empty() || !out.is_empty(), "row bytes vanished");
    }
}

proptest! {
    #![proptest_config(proptest_config(128))]

    /// Events of any type and bytes, after a valid table map: each is a
    /// result or a protocol error, never a panic.
    #[test]
    fn decode_arbitrary_events_never_panic(
        t in table(),
        e in match_event(),
        events in vec(
            (
                prop_oneof![
                    prop::sample::select(vec![
                        et::QUERY, et::ROTATE, et::XID, et::TABLE_MAP,
                        et::WRITE_ROWS_V1, et::UPDATE_ROWS_V1, et::DELETE_ROWS_V1,
                        et::HEARTBEAT, et::WRITE_ROWS_V2, et::UPDATE_ROWS_V2,
                        et::DELETE_ROWS_V2, et::MYSQL_GTID, et::MYSQL_ANONYMOUS_GTID,
                        et::XA_PREPARE, et::PARTIAL_UPDATE_ROWS, et::TRANSACTION_PAYLOAD,
                        et::HEARTBEAT_V2, et::MYSQL_GTID_TAGGED, et::MARIADB_GTID,
                        et::MARIADB_GTID_LIST,
                    ]),
                    // FORMAT_DESCRIPTION is framed by mysql_common before
                    // the decoder sees it.
                    any::<u8>().prop_filter("not an FDE", |c| *c != et::FORMAT_DESCRIPTION),
                ],
                any::<u32>(),
                vec(any::<u8>(), 0..120),
                // Keep a valid rows event's head, so the rows path runs.
                any::<bool>(),
                vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            ),
            1..8,
        ),
    ) {
        let mut d = decoder();
        let mut out = Vec::new();
        d.decode(&event(et::TABLE_MAP, 1, &table_map(TABLE, &t.cols, true)), &mut out)
            .expect("a table map");
        let valid = rows_event(true, t.cols.len(), &[&t.present], &t.image(&e));
        for (code, pos, bytes, keep_head, flips) in events {
            let mut data = if keep_head { valid.clone() } else { bytes.clone() };
            if keep_head {
                data.truncate(bytes.len().max(9));
            }
            for (at, x) in flips {
                if !data.is_empty() {
                    let i = at.index(data.len());
                    data[i] ^= x;
                }
            }
            let _ = d.decode(&event(code, pos, &data), &mut out);
        }
    }

    /// Table maps of any column types, metadata and optional metadata
    /// (names, ENUM labels, counts of any size), then rows of any bytes.
    #[test]
    fn decode_arbitrary_table_maps_never_panic(
        types in vec(
            prop_oneof![
                6 => prop::sample::select(vec![1u8, 3, 8, 15, 17, 18, 246, 247, 248, 252, 254, 245, 255]),
                1 => any::<u8>(),
            ],
            0..6,
        ),
        meta in vec(any::<u8>(), 0..40),
        optional in prop_oneof![
            vec(any::<u8>(), 0..60),
            vec((prop::sample::select(vec![4u8, 5, 6, 1, 12]), vec(any::<u8>(), 0..30)), 0..4)
                .prop_map(|fields| {
                    let mut out = Vec::new();
                    for (f, v) in fields {
                        tlv(f, &v, &mut out);
                    }
                    out
                }),
        ],
        rows in vec(any::<u8>(), 0..120),
    ) {
        let mut d = decoder();
        let mut out = Vec::new();
        let map = table_map_raw(TABLE, &types, &meta, &optional);
        let _ = d.decode(&event(et::TABLE_MAP, 1, &map), &mut out);
        let present = vec![true; types.len()];
        let ev = event(et::WRITE_ROWS_V2, 2, &rows_event(true, types.len(), &[&present], &rows));
        let _ = d.decode(&ev, &mut out);
        prop_assert!(out.iter().all(Action::is_item), "{:?}", out);
    }

    /// Statements of any text: DDL and XA recognition never panic.
    #[test]
    fn decode_arbitrary_queries_never_panic(
        head in prop::sample::select(vec![
            "", "XA ", "xa start ", "XA COMMIT X'", "ALTER TABLE ", "DROP DATABASE IF ",
            "RENAME TABLE `a`.`b` TO ", "truncate ", "/*!", "BEGIN", "ab",
        ]),
        tail in prop_oneof![any::<String>(), "[`'., ()/*!€é a-z]{0,30}"],
        raw in vec(any::<u8>(), 0..40),
        use_raw in any::<bool>(),
    ) {
        let mut sql = head.as_bytes().to_vec();
        if use_raw {
            sql.extend(&raw);
        } else {
            sql.extend(tail.as_bytes());
        }
        let _ = super::ddl::ddl_target(&String::from_utf8_lossy(&sql));
        let mut d = decoder();
        let mut out = Vec::new();
        let _ = d.decode(&event(et::QUERY, 10, &query_event(DB, &sql)), &mut out);
    }
}

// ---------------------------------------------------------------------------
// Regressions: inputs that once panicked or hung.

fn names_tlv(names: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for n in names {
        lenenc_str(n.as_bytes(), &mut v);
    }
    let mut out = Vec::new();
    tlv(4, &v, &mut out);
    out
}

// `XA ` was recognised by slicing the first three bytes of the statement,
// which panicked when they ended inside a character.
#[test]
fn a_statement_whose_third_byte_splits_a_character_is_not_xa() {
    for sql in ["ab€", "XA€ START 'x'", "x\u{e9}\u{e9}"] {
        let mut out = Vec::new();
        decoder()
            .decode(
                &event(et::QUERY, 10, &query_event(DB, sql.as_bytes())),
                &mut out,
            )
            .unwrap();
        assert!(!out.iter().any(|a| matches!(a, Action::XaStart { .. })));
    }
}

// A BLOB length prefix or ENUM index wider than 8 bytes overflowed a shift;
// both are corrupt table maps, so the rows go to the dead letter whole.
#[test]
fn a_length_prefix_or_enum_index_of_impossible_width_is_a_table_error() {
    for (code, meta, what) in [
        (252, [9, 0], "BLOB length prefix of 9 bytes"),
        (252, [0, 0], "BLOB length prefix of 0 bytes"),
        (254, [247, 9], "ENUM index of 9 bytes"),
        (254, [247, 0], "ENUM index of 0 bytes"),
    ] {
        let meta = if code == 252 { &meta[..1] } else { &meta[..] };
        let data = table_map_raw(TABLE, &[code], meta, &names_tlv(&["id"]));
        let rows = vec![0u8; 20];
        let out = decode_all(&[
            event(et::TABLE_MAP, 1, &data),
            event(
                et::WRITE_ROWS_V2,
                2,
                &rows_event(true, 1, &[&[true]], &rows),
            ),
        ]);
        assert_eq!(out.len(), 1, "{out:?}");
        let (k, reason, payload) = dead(&out[0]).unwrap();
        assert_eq!(k, kind::BAD_ROW);
        assert_eq!(reason, format!("column 0 (`id`): {what}"));
        assert!(payload.contains(&hex(&rows)), "{payload}");
    }
}

// A rows event whose column bitmap names no column has row images of no
// bytes: reading them never moved on, and the decoder looped forever.
#[test]
fn a_rows_event_naming_no_columns_is_one_dead_letter() {
    let cols = canonical();
    let none = vec![false; cols.len()];
    let out = decode_all(&[
        event(et::TABLE_MAP, 1, &table_map(TABLE, &cols, true)),
        event(
            et::WRITE_ROWS_V2,
            2,
            &rows_event(true, cols.len(), &[&none], &[1, 2, 3]),
        ),
        event(
            et::UPDATE_ROWS_V2,
            3,
            &rows_event(true, cols.len(), &[&none, &none], &[4]),
        ),
        event(
            et::DELETE_ROWS_V2,
            4,
            &rows_event(true, cols.len(), &[&none], &[5]),
        ),
    ]);
    assert_eq!(out.len(), 3, "{out:?}");
    for (a, hex) in out.iter().zip(["010203", "04", "05"]) {
        let (k, reason, payload) = dead(a).unwrap();
        assert_eq!(k, kind::BAD_ROW);
        assert_eq!(reason, "rows event names no columns, yet carries row bytes");
        assert!(payload.contains(hex), "{payload}");
    }
}

// mysql_common reserves room for as many ENUM labels as the count says
// before it reads them: a corrupt count panicked (capacity overflow) or
// aborted the process (allocation failure).
#[test]
fn a_corrupt_enum_label_count_is_a_table_error() {
    for count in [u64::MAX, 1 << 40, 3] {
        let cols = &canonical()[..5];
        let types: Vec<u8> = cols.iter().map(|c| c.ty.code_and_meta().0).collect();
        let meta: Vec<u8> = cols.iter().flat_map(|c| c.ty.code_and_meta().1).collect();
        let mut optional = names_tlv(&COLUMNS[..5]);
        let mut v = Vec::new();
        lenenc(count, &mut v);
        lenenc_str(b"started", &mut v);
        tlv(6, &v, &mut optional);
        let data = table_map_raw(TABLE, &types, &meta, &optional);
        let rows = vec![0u8; 30];
        let out = decode_all(&[
            event(et::TABLE_MAP, 1, &data),
            event(
                et::WRITE_ROWS_V2,
                2,
                &rows_event(true, 5, &[&[true; 5]], &rows),
            ),
        ]);
        assert_eq!(out.len(), 1, "{out:?}");
        let (k, reason, _) = dead(&out[0]).unwrap();
        assert_eq!(k, kind::BAD_ROW);
        assert_eq!(reason, "the table map's ENUM labels are malformed");
    }
}

// Before the FORMAT_DESCRIPTION event, a ROTATE whose last 4 bytes happen
// to be its own CRC32 lost them from the name, and a name shorter than 4
// bytes (the CRC then lying over the position) underflowed.
#[test]
fn a_rotate_whose_position_looks_like_a_checksum_keeps_its_name() {
    let low = 4u32.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header(et::ROTATE, 0, 8));
    crc.update(&low);
    let mut data = low.to_vec();
    data.extend(crc.finalize().to_le_bytes());
    let mut out = Vec::new();
    decoder()
        .decode(&event(et::ROTATE, 0, &data), &mut out)
        .unwrap();
    assert_eq!(
        out,
        vec![Action::Rotate {
            file: String::new()
        }]
    );
}

// A DATETIME2 fraction of a second or more was handed to chrono, which
// reads 1_000_000..2_000_000 µs as a leap second.
#[test]
fn a_datetime_fraction_of_a_second_or_more_is_invalid() {
    let cols = canonical();
    let l = layout(TABLE, &cols, true);
    let present = vec![true; cols.len()];
    let t = Table {
        cols: cols.clone(),
        extras: vec![V::Null; cols.len()],
        present: present.clone(),
    };
    let e = MatchEvent::started(
        uuid::Uuid::from_u128(7),
        1,
        "2026Q4".parse().unwrap(),
        (8, 9),
        Timestamp::from_parts(2016, 12, 31, 23, 59, 59, 0).unwrap(),
        Timestamp::from_parts(2017, 1, 1, 0, 0, 29, 0).unwrap(),
    );
    let mut vals = t.values(&e);
    let V::DateTime { packed, .. } = vals[14] else {
        panic!("occurred_at");
    };
    vals[14] = V::DateTime {
        packed,
        frac: 1_500_000,
    };
    let (image, _) = row_image(&cols, &present, &vals);
    let err = RowCursor::new(&image).next_event(&l, &present).unwrap_err();
    assert_eq!(
        err,
        RowError::Model("column `occurred_at`: invalid DATETIME".into())
    );
}

// The decoder read TRANSACTION_PAYLOAD headers with mysql_common, which
// panics on a field that claims more bytes than the event holds.
#[test]
fn a_transaction_payload_header_is_read_without_trusting_its_lengths() {
    let field = |t: u64, v: u64, out: &mut Vec<u8>| {
        let mut value = Vec::new();
        lenenc(v, &mut value);
        lenenc(t, out);
        lenenc_str(&value, out);
    };
    let header = |uncompressed: u64| {
        let mut d = Vec::new();
        field(2, 0, &mut d);
        field(3, uncompressed, &mut d);
        field(1, 3, &mut d);
        d.push(0);
        d.extend([1, 2, 3]);
        d
    };
    let decode = |events: &[Event]| {
        let mut d = decoder();
        let mut out = Vec::new();
        events
            .iter()
            .try_for_each(|ev| d.decode(ev, &mut out))
            .map(|()| out)
    };
    // The announced size is what the inner events are counted against.
    let out = decode(&[
        event(et::TRANSACTION_PAYLOAD, 500, &header(0)),
        event(et::XID, 500, &7u64.to_le_bytes()),
    ])
    .unwrap();
    assert!(
        matches!(out[..], [Action::Commit { pos: 500, .. }]),
        "{out:?}"
    );
    let err = decode(&[
        event(et::TRANSACTION_PAYLOAD, 500, &header(90)),
        event(et::XID, 500, &7u64.to_le_bytes()),
    ])
    .unwrap_err();
    assert!(err.message.contains("yielded 0 of its 90 bytes"), "{err}");
    // A field longer than the event, a payload longer than the event, no
    // end mark, no compression field: errors, not panics.
    let mut long_field = Vec::new();
    lenenc(9, &mut long_field);
    lenenc(190, &mut long_field);
    long_field.extend([0; 10]);
    let mut long_payload = header(0);
    long_payload.truncate(long_payload.len() - 1);
    let no_end = header(0)[..6].to_vec();
    let mut no_compression = Vec::new();
    field(1, 0, &mut no_compression);
    no_compression.push(0);
    for data in [long_field, long_payload, no_end, no_compression, vec![]] {
        let err = decode(&[event(et::TRANSACTION_PAYLOAD, 500, &data)]).unwrap_err();
        assert!(err.message.contains("TRANSACTION_PAYLOAD header"), "{err}");
    }
}
