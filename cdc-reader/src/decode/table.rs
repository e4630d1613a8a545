//! Table layouts from TABLE_MAP events, and the row decoder specialised for
//! the event table.
//!
//! A layout is built once per table map (mysql_common parses the event and
//! its optional metadata); rows are then read straight from the rows
//! event's bytes into a [`MatchEvent`], without per-row allocation. Columns
//! are found by NAME from `binlog_row_metadata=FULL`, never by position, and
//! ENUM indexes are mapped through the labels the metadata carries, so a
//! reordered or widened table still decodes right or fails loudly.

use mysql_async::binlog::events::{OptionalMetadataField, TableMapEvent};
use mysql_async::consts::ColumnType;
use rps_core::event::{EventType, Gesture, MatchEvent, Outcome, SeasonId, ShardId};
use rps_core::Timestamp;
use serde_json::{Map, Value};

/// The event-table columns the model needs, in this order.
pub const MODEL_COLUMNS: [&str; 15] = rps_core::event::COLUMNS;

/// Which model columns may be NULL.
const NULLABLE: [bool; 15] = [
    false, false, false, false, false, false, false, false, true, true, true, true, true, true,
    false,
];

/// How a column's value is laid out in a row image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColKind {
    /// Little-endian signed integer of 1, 2, 3, 4 or 8 bytes.
    Int(u8),
    /// CHAR: length prefix of 1 or 2 bytes, then bytes.
    Str(u8),
    /// VARCHAR/VAR_STRING: length prefix of 1 or 2 bytes.
    VarStr(u8),
    /// BLOB/TEXT/JSON/GEOMETRY: length prefix of 1..4 bytes.
    Blob(u8),
    /// ENUM: 1-based index in 1 or 2 bytes; labels from the metadata.
    Enum { pack: u8, labels: Vec<Vec<u8>> },
    /// SET: bitmask of n bytes.
    Set(u8),
    /// DATETIME2 with its fractional-second precision.
    DateTime2(u8),
    /// A fixed-size value we only need to skip (FLOAT, DATE, TIMESTAMP2, …).
    Fixed(usize),
}

impl ColKind {
    fn from_tme(
        tme: &TableMapEvent<'_>,
        i: usize,
        name: &str,
        labels: Option<Vec<Vec<u8>>>,
    ) -> Result<ColKind, String> {
        let bad = |what: String| format!("column {i} (`{name}`): {what}");
        let ty = tme
            .get_column_type(i)
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad("no type".into()))?;
        // `None` when the metadata block ends early: every size read from
        // it would be a guess.
        let meta = tme
            .get_column_metadata(i)
            .ok_or_else(|| bad("the table map's column metadata is truncated".into()))?;
        let m = |k: usize| meta.get(k).copied().unwrap_or(0);
        // Length prefixes and ENUM indexes are little-endian integers of
        // at most 4 and 2 bytes; anything else is a corrupt table map.
        let prefix = |n: u8, max: u8, what: &str| {
            if (1..=max).contains(&n) {
                Ok(n)
            } else {
                Err(bad(format!("{what} of {n} bytes")))
            }
        };
        use ColumnType::*;
        Ok(match ty {
            MYSQL_TYPE_TINY => ColKind::Int(1),
            MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR => {
                if ty == MYSQL_TYPE_YEAR {
                    ColKind::Fixed(1)
                } else {
                    ColKind::Int(2)
                }
            }
            MYSQL_TYPE_INT24 => ColKind::Int(3),
            MYSQL_TYPE_LONG => ColKind::Int(4),
            MYSQL_TYPE_LONGLONG => ColKind::Int(8),
            MYSQL_TYPE_FLOAT => ColKind::Fixed(4),
            MYSQL_TYPE_DOUBLE => ColKind::Fixed(8),
            MYSQL_TYPE_NEWDATE | MYSQL_TYPE_DATE => ColKind::Fixed(3),
            MYSQL_TYPE_TIMESTAMP2 => ColKind::Fixed(4 + usize::from(m(0)).div_ceil(2)),
            MYSQL_TYPE_TIME2 => ColKind::Fixed(3 + usize::from(m(0)).div_ceil(2)),
            MYSQL_TYPE_DATETIME2 if m(0) <= 6 => ColKind::DateTime2(m(0)),
            MYSQL_TYPE_DATETIME2 => return Err(bad(format!("DATETIME precision {}", m(0)))),
            MYSQL_TYPE_NEWDECIMAL => ColKind::Fixed(decimal_bin_size(m(0), m(1))),
            MYSQL_TYPE_BIT => ColKind::Fixed(usize::from(m(1)) + usize::from(m(0)).div_ceil(8)),
            MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
                let max = u16::from_le_bytes([m(0), m(1)]);
                ColKind::VarStr(if max < 256 { 1 } else { 2 })
            }
            MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_BLOB
            | MYSQL_TYPE_GEOMETRY
            | MYSQL_TYPE_JSON => ColKind::Blob(prefix(m(0), 4, "BLOB length prefix")?),
            MYSQL_TYPE_ENUM => ColKind::Enum {
                pack: prefix(m(1), 2, "ENUM index")?,
                labels: labels.unwrap_or_default(),
            },
            MYSQL_TYPE_SET => ColKind::Set(m(1)),
            MYSQL_TYPE_STRING => {
                let (b0, b1) = (usize::from(m(0)), usize::from(m(1)));
                let max = if b0 & 0x30 != 0x30 {
                    b1 | (((b0 & 0x30) ^ 0x30) << 4)
                } else {
                    b1
                };
                ColKind::Str(if max < 256 { 1 } else { 2 })
            }
            other => return Err(bad(format!("unsupported type {other:?}"))),
        })
    }
}

/// Storage size of DECIMAL(precision, scale) in a row image.
fn decimal_bin_size(precision: u8, scale: u8) -> usize {
    const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let intg = usize::from(precision.saturating_sub(scale));
    let frac = usize::from(scale);
    (intg / 9) * 4 + DIG2BYTES[intg % 9] + (frac / 9) * 4 + DIG2BYTES[frac % 9]
}

/// A decoded table map: names, kinds, and where the model's columns are.
#[derive(Debug)]
pub struct TableLayout {
    pub database: String,
    pub table: String,
    /// `Some` if this is an event table in one of our shard databases.
    pub shard: Option<ShardId>,
    pub names: Vec<String>,
    /// `Err` when a column cannot be decoded at all: rows cannot even be
    /// split, so a whole rows event goes to the dead letter.
    pub kinds: Result<Vec<ColKind>, String>,
    /// Column index → model column (index into [`MODEL_COLUMNS`]).
    slot_of: Vec<Option<u8>>,
    /// Model columns the table lacks (after a schema change).
    pub missing: Vec<&'static str>,
    /// Whether the table map carried column names (`binlog_row_metadata=FULL`).
    pub named: bool,
    /// For the four enum model columns: index → variant position, 255 unknown.
    enum_maps: [Vec<u8>; 15],
    /// The same columns' labels, to name an unknown value in an error.
    enum_labels: [Vec<Vec<u8>>; 15],
}

impl TableLayout {
    /// Builds the layout from the table map `tme` parsed from the event
    /// bytes `data`; `shard` says whether rows of this table are followed.
    pub fn new(tme: &TableMapEvent<'_>, data: &[u8], shard: Option<ShardId>) -> TableLayout {
        let n = tme.columns_count() as usize;
        let mut names: Vec<String> = Vec::with_capacity(n);
        for field in tme.iter_optional_meta().flatten() {
            if let OptionalMetadataField::ColumnName(cn) = field {
                names.extend(cn.iter_names().flatten().map(|c| c.name().into_owned()));
            }
        }
        let names_known = names.len() == n;
        if !names_known {
            names = (0..n).map(|i| format!("col{i}")).collect();
        }
        let enum_labels = enum_labels(data);
        let mut enums = enum_labels.iter().flatten().cloned();
        let kinds: Result<Vec<ColKind>, String> = (0..n)
            .map(|i| {
                let is_enum = matches!(
                    tme.get_column_type(i),
                    Ok(Some(ColumnType::MYSQL_TYPE_ENUM))
                );
                let labels = if is_enum { enums.next() } else { None };
                ColKind::from_tme(tme, i, &names[i], labels)
            })
            .collect();
        let kinds = enum_labels.and(kinds);
        let mut slot_of = vec![None; n];
        let mut found = [false; 15];
        if names_known {
            for (i, name) in names.iter().enumerate() {
                if let Some(s) = MODEL_COLUMNS
                    .iter()
                    .position(|m| m.eq_ignore_ascii_case(name))
                {
                    slot_of[i] = Some(s as u8);
                    found[s] = true;
                }
            }
        }
        let missing = MODEL_COLUMNS
            .iter()
            .zip(found)
            .filter(|(_, f)| !f)
            .map(|(m, _)| *m)
            .collect();
        let mut enum_maps: [Vec<u8>; 15] = Default::default();
        let mut slot_labels: [Vec<Vec<u8>>; 15] = Default::default();
        if let Ok(kinds) = &kinds {
            for (i, k) in kinds.iter().enumerate() {
                let (Some(slot), ColKind::Enum { labels, .. }) = (slot_of[i], k) else {
                    continue;
                };
                let pos = |l: &[u8]| -> u8 {
                    let p = match slot {
                        4 => EventType::from_bytes(l)
                            .ok()
                            .and_then(|v| EventType::ALL.iter().position(|x| *x == v)),
                        8 | 9 => Gesture::from_bytes(l)
                            .ok()
                            .and_then(|v| Gesture::ALL.iter().position(|x| *x == v)),
                        12 => Outcome::from_bytes(l)
                            .ok()
                            .and_then(|v| Outcome::ALL.iter().position(|x| *x == v)),
                        _ => None,
                    };
                    p.map(|p| p as u8).unwrap_or(255)
                };
                enum_maps[slot as usize] = labels.iter().map(|l| pos(l)).collect();
                slot_labels[slot as usize] = labels.clone();
            }
        }
        TableLayout {
            database: tme.database_name().into_owned(),
            table: tme.table_name().into_owned(),
            shard,
            names,
            kinds,
            slot_of,
            missing,
            named: names_known,
            enum_maps,
            enum_labels: slot_labels,
        }
    }
}

/// The optional metadata of a TABLE_MAP event's bytes: what follows the
/// ids, names, column types, column metadata and NULL bitmap.
fn optional_metadata(d: &[u8]) -> Option<&[u8]> {
    let mut p = 8usize;
    // Database and table: a length byte, the name, a NUL.
    for _ in 0..2 {
        p += usize::from(*d.get(p)?) + 2;
    }
    let (n, used) = super::lenenc(d.get(p..)?)?;
    let n = usize::try_from(n).ok()?;
    p = p.checked_add(used)?.checked_add(n)?;
    let (meta, used) = super::lenenc(d.get(p..)?)?;
    let meta = usize::try_from(meta).ok()?;
    p = p
        .checked_add(used)?
        .checked_add(meta)?
        .checked_add(n.div_ceil(8))?;
    d.get(p..)
}

/// A length-encoded string at the start of `b`, and what follows it.
fn lenenc_bytes(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, used) = super::lenenc(b)?;
    let rest = b.get(used..)?;
    let len = usize::try_from(len).ok().filter(|l| *l <= rest.len())?;
    Some(rest.split_at(len))
}

/// The ENUM labels of a TABLE_MAP event, one list per ENUM column, read
/// from its bytes: mysql_common reserves room for as many labels as the
/// count says before it reads them, so a corrupt count is a capacity
/// overflow panic or an allocation abort there.
fn enum_labels(data: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, String> {
    const ENUM_STR_VALUE: u8 = 6;
    let bad = || "the table map's ENUM labels are malformed".to_string();
    let mut rest = optional_metadata(data).unwrap_or_default();
    let mut out = Vec::new();
    while let Some((&field, r)) = rest.split_first() {
        let (mut v, r) = lenenc_bytes(r).ok_or_else(bad)?;
        rest = r;
        if field != ENUM_STR_VALUE {
            continue;
        }
        while !v.is_empty() {
            let (count, used) = super::lenenc(v).ok_or_else(bad)?;
            v = &v[used..];
            let mut labels = Vec::new();
            // Each label takes at least a byte, so the count cannot outrun `v`.
            for _ in 0..count {
                let (label, r) = lenenc_bytes(v).ok_or_else(bad)?;
                labels.push(label.to_vec());
                v = r;
            }
            out.push(labels);
        }
    }
    Ok(out)
}

/// A row-decoding failure: the row does not fit the model (`Model`), or the
/// bytes cannot be split at all (`Malformed`, the rest of the event is lost
/// to decoding and goes to the dead letter whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowError {
    Model(String),
    Malformed(String),
}

#[derive(Clone, Copy)]
enum Val<'a> {
    Null,
    Int(i64),
    Bytes(&'a [u8]),
    Enum(u16),
    Ts(Option<Timestamp>),
    Other,
}

/// A cursor over a rows event's row images.
#[derive(Clone)]
pub struct RowCursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// The row image ends before the value being read does.
struct Truncated;

fn truncated(what: &str) -> impl FnOnce(Truncated) -> RowError + '_ {
    move |Truncated| RowError::Malformed(format!("row image ends inside {what}"))
}

fn truncated_column(name: &str) -> impl FnOnce(Truncated) -> RowError + '_ {
    move |Truncated| RowError::Malformed(format!("row image ends inside column `{name}`"))
}

impl<'a> RowCursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        RowCursor { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or(Truncated)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// A little-endian integer of `n` bytes; layouts only build `n` of
    /// 1..=8, and wider input keeps its low 8 bytes rather than overflow.
    fn uint_le(&mut self, n: u8) -> Result<u64, Truncated> {
        let b = self.take(usize::from(n))?;
        let mut v = 0u64;
        for (i, x) in b.iter().take(8).enumerate() {
            v |= u64::from(*x) << (8 * i);
        }
        Ok(v)
    }

    fn read_value(&mut self, kind: &ColKind) -> Result<Val<'a>, Truncated> {
        Ok(match kind {
            ColKind::Int(n) => {
                let raw = self.uint_le(*n)?;
                let shift = 64 - 8 * u32::from(*n);
                Val::Int(((raw << shift) as i64) >> shift)
            }
            ColKind::Str(l) | ColKind::VarStr(l) | ColKind::Blob(l) => {
                let len = self.uint_le(*l)? as usize;
                Val::Bytes(self.take(len)?)
            }
            ColKind::Enum { pack, .. } => Val::Enum(self.uint_le(*pack)? as u16),
            ColKind::Set(n) => {
                self.take(usize::from(*n))?;
                Val::Other
            }
            ColKind::DateTime2(fsp) => {
                let b = self.take(5)?;
                let packed = b.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x));
                let frac_len = usize::from(*fsp).div_ceil(2);
                let fb = self.take(frac_len)?;
                let frac = fb.iter().fold(0u32, |a, x| (a << 8) | u32::from(*x));
                let micros = match frac_len {
                    1 => frac * 10_000,
                    2 => frac * 100,
                    3 => frac,
                    _ => 0,
                };
                // Past a million, chrono would read a leap second.
                Val::Ts(
                    Some(micros)
                        .filter(|m| *m < 1_000_000)
                        .and_then(|m| datetime2(packed, m)),
                )
            }
            ColKind::Fixed(n) => {
                self.take(*n)?;
                Val::Other
            }
        })
    }

    /// Reads one row image of `present` columns into the model's slots.
    fn read_slots(
        &mut self,
        layout: &TableLayout,
        kinds: &[ColKind],
        present: &[bool],
    ) -> Result<[Val<'a>; 15], RowError> {
        columns_match(kinds, present)?;
        let n_present = present.iter().filter(|p| **p).count();
        let nulls = self
            .take(n_present.div_ceil(8))
            .map_err(truncated("the NULL bitmap"))?;
        let mut vals = [Val::Null; 15];
        let mut bit = 0usize;
        for (i, kind) in kinds.iter().enumerate() {
            if !present[i] {
                continue;
            }
            let is_null = nulls[bit / 8] & (1 << (bit % 8)) != 0;
            bit += 1;
            if is_null {
                continue;
            }
            let v = self
                .read_value(kind)
                .map_err(truncated_column(&layout.names[i]))?;
            if let Some(s) = layout.slot_of[i] {
                vals[s as usize] = v;
            }
        }
        Ok(vals)
    }

    /// Decodes the next row image as a model event.
    pub fn next_event(
        &mut self,
        layout: &TableLayout,
        present: &[bool],
    ) -> Result<MatchEvent, RowError> {
        let kinds = layout
            .kinds
            .as_ref()
            .map_err(|e| RowError::Malformed(e.clone()))?;
        let vals = self.read_slots(layout, kinds, present)?;
        to_event(layout, &vals)
    }

    /// Decodes the next row image generically, as JSON (column name → value),
    /// for dead-letter payloads.
    pub fn next_json(&mut self, layout: &TableLayout, present: &[bool]) -> Result<Value, RowError> {
        let kinds = layout
            .kinds
            .as_ref()
            .map_err(|e| RowError::Malformed(e.clone()))?;
        columns_match(kinds, present)?;
        let n_present = present.iter().filter(|p| **p).count();
        let nulls = self
            .take(n_present.div_ceil(8))
            .map_err(truncated("the NULL bitmap"))?;
        let mut out = Map::new();
        let mut bit = 0usize;
        for (i, kind) in kinds.iter().enumerate() {
            if !present[i] {
                continue;
            }
            let is_null = nulls[bit / 8] & (1 << (bit % 8)) != 0;
            bit += 1;
            let v = if is_null {
                Value::Null
            } else {
                let v = self
                    .read_value(kind)
                    .map_err(truncated_column(&layout.names[i]))?;
                match (v, kind) {
                    (Val::Int(v), _) => Value::from(v),
                    (Val::Bytes(b), _) => Value::from(String::from_utf8_lossy(b).into_owned()),
                    (Val::Enum(ix), ColKind::Enum { labels, .. }) => {
                        match labels.get(usize::from(ix).wrapping_sub(1)) {
                            Some(l) => Value::from(String::from_utf8_lossy(l).into_owned()),
                            None => Value::from(format!("#{ix}")),
                        }
                    }
                    (Val::Enum(ix), _) => Value::from(format!("#{ix}")),
                    (Val::Ts(Some(t)), _) => Value::from(t.to_string()),
                    (Val::Ts(None), _) => Value::from("invalid datetime"),
                    _ => Value::from("(not shown)"),
                }
            };
            out.insert(layout.names[i].clone(), v);
        }
        Ok(Value::Object(out))
    }
}

fn columns_match(kinds: &[ColKind], present: &[bool]) -> Result<(), RowError> {
    if kinds.len() == present.len() {
        Ok(())
    } else {
        Err(RowError::Malformed(format!(
            "row has {} columns, table map has {}",
            present.len(),
            kinds.len()
        )))
    }
}

/// DATETIME2's packed integer form (5 bytes, big-endian, offset by 2^39).
fn datetime2(packed: u64, micros: u32) -> Option<Timestamp> {
    let v = packed.checked_sub(0x80_0000_0000)?;
    let ymd = v >> 17;
    let ym = ymd >> 5;
    let hms = v & 0x1_ffff;
    Timestamp::from_parts(
        (ym / 13) as i32,
        (ym % 13) as u32,
        (ymd & 0x1f) as u32,
        (hms >> 12) as u32,
        ((hms >> 6) & 0x3f) as u32,
        (hms & 0x3f) as u32,
        micros,
    )
}

fn to_event(layout: &TableLayout, vals: &[Val<'_>; 15]) -> Result<MatchEvent, RowError> {
    if !layout.named {
        return Err(RowError::Model(
            "the table map carries no column names: binlog_row_metadata is not FULL".into(),
        ));
    }
    if let Some(m) = layout.missing.first() {
        return Err(RowError::Model(format!(
            "table has no column `{m}` (schema change?)"
        )));
    }
    for (i, v) in vals.iter().enumerate() {
        if matches!(v, Val::Null) && !NULLABLE[i] {
            return Err(RowError::Model(format!(
                "NULL in required column `{}`",
                MODEL_COLUMNS[i]
            )));
        }
    }
    let bad =
        |i: usize, what: &str| RowError::Model(format!("column `{}`: {what}", MODEL_COLUMNS[i]));
    let int = |i: usize| -> Result<Option<i64>, RowError> {
        match vals[i] {
            Val::Null => Ok(None),
            Val::Int(v) => Ok(Some(v)),
            _ => Err(bad(i, "expected an integer")),
        }
    };
    let req = |i: usize| -> Result<i64, RowError> { int(i)?.ok_or_else(|| bad(i, "NULL")) };
    let en = |i: usize| -> Result<Option<usize>, RowError> {
        match vals[i] {
            Val::Null => Ok(None),
            Val::Enum(ix) => {
                let p = usize::from(ix)
                    .checked_sub(1)
                    .and_then(|k| layout.enum_maps[i].get(k))
                    .copied()
                    .unwrap_or(255);
                if p == 255 {
                    let label = usize::from(ix)
                        .checked_sub(1)
                        .and_then(|k| layout.enum_labels[i].get(k));
                    Err(bad(
                        i,
                        &match label {
                            Some(l) => format!(
                                "unknown value {:?} (enum index {ix})",
                                String::from_utf8_lossy(l)
                            ),
                            None => format!("unknown enum index {ix}"),
                        },
                    ))
                } else {
                    Ok(Some(usize::from(p)))
                }
            }
            _ => Err(bad(i, "expected an ENUM")),
        }
    };
    let ts = |i: usize| -> Result<Option<Timestamp>, RowError> {
        match vals[i] {
            Val::Null => Ok(None),
            Val::Ts(Some(t)) => Ok(Some(t)),
            Val::Ts(None) => Err(bad(i, "invalid DATETIME")),
            _ => Err(bad(i, "expected a DATETIME")),
        }
    };
    let bytes = |i: usize| -> Result<&[u8], RowError> {
        match vals[i] {
            Val::Bytes(b) => Ok(b),
            _ => Err(bad(i, "expected a string")),
        }
    };
    let eid = bytes(1)?;
    let event_id = uuid::Uuid::try_parse_ascii(eid).map_err(|_| {
        bad(
            1,
            &format!("malformed UUID {:?}", String::from_utf8_lossy(eid)),
        )
    })?;
    let season = bytes(5)?;
    let season_id = SeasonId::parse_bytes(season).map_err(|e| bad(5, &e.to_string()))?;
    let version = i32::try_from(req(3)?).map_err(|_| bad(3, "out of range"))?;
    Ok(MatchEvent {
        row_id: req(0)?,
        event_id,
        match_id: req(2)?,
        version,
        event_type: EventType::ALL[en(4)?.ok_or_else(|| bad(4, "NULL"))?],
        season_id,
        player_a_id: req(6)?,
        player_b_id: req(7)?,
        gesture_a: en(8)?.map(|p| Gesture::ALL[p]),
        gesture_b: en(9)?.map(|p| Gesture::ALL[p]),
        winner_player_id: int(10)?,
        loser_player_id: int(11)?,
        outcome: en(12)?.map(|p| Outcome::ALL[p]),
        deadline_at: ts(13)?,
        occurred_at: ts(14)?.ok_or_else(|| bad(14, "NULL"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime2_unpacks_calendar_fields() {
        // 2026-11-27 07:41:36 packed as MySQL does.
        let ym = 2026u64 * 13 + 11;
        let packed = 0x80_0000_0000u64 | (((ym << 5) | 27) << 17) | (7 << 12) | (41 << 6) | 36;
        let t = datetime2(packed, 123_456).unwrap();
        assert_eq!(t.to_string(), "2026-11-27 07:41:36.123456");
    }

    #[test]
    fn decimal_sizes() {
        assert_eq!(decimal_bin_size(10, 2), 5);
        assert_eq!(decimal_bin_size(18, 9), 8);
    }
}
