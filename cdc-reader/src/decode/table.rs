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
        labels: Option<Vec<Vec<u8>>>,
    ) -> Result<ColKind, String> {
        let ty = tme
            .get_column_type(i)
            .map_err(|e| format!("column {i}: {e}"))?
            .ok_or_else(|| format!("column {i}: no type"))?;
        let meta = tme.get_column_metadata(i).unwrap_or(&[]);
        let m = |k: usize| meta.get(k).copied().unwrap_or(0);
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
            MYSQL_TYPE_DATETIME2 => ColKind::DateTime2(m(0)),
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
            | MYSQL_TYPE_JSON => ColKind::Blob(m(0)),
            MYSQL_TYPE_ENUM => ColKind::Enum {
                pack: m(1),
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
            other => return Err(format!("column {i}: unsupported type {other:?}")),
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
}

impl TableLayout {
    /// Builds the layout; `shard` says whether rows of this table are followed.
    pub fn new(tme: &TableMapEvent<'_>, shard: Option<ShardId>) -> TableLayout {
        let n = tme.columns_count() as usize;
        let mut names: Vec<String> = Vec::with_capacity(n);
        let mut enum_labels: Vec<Vec<Vec<u8>>> = Vec::new();
        for field in tme.iter_optional_meta().flatten() {
            match field {
                OptionalMetadataField::ColumnName(cn) => {
                    names.extend(cn.iter_names().flatten().map(|c| c.name().into_owned()));
                }
                OptionalMetadataField::EnumStrValue(ev) => {
                    for vals in ev.iter_values().flatten() {
                        enum_labels.push(
                            vals.values()
                                .iter()
                                .map(|v| v.value_raw().to_vec())
                                .collect(),
                        );
                    }
                }
                _ => {}
            }
        }
        let names_known = names.len() == n;
        if !names_known {
            names = (0..n).map(|i| format!("col{i}")).collect();
        }
        let mut enums = enum_labels.into_iter();
        let kinds: Result<Vec<ColKind>, String> = (0..n)
            .map(|i| {
                let is_enum = matches!(
                    tme.get_column_type(i),
                    Ok(Some(ColumnType::MYSQL_TYPE_ENUM))
                );
                ColKind::from_tme(tme, i, if is_enum { enums.next() } else { None })
            })
            .collect();
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
        }
    }
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

fn malformed(what: &str) -> RowError {
    RowError::Malformed(format!("row image ends inside {what}"))
}

impl<'a> RowCursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        RowCursor { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RowError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| malformed("a value"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn uint_le(&mut self, n: u8) -> Result<u64, RowError> {
        let b = self.take(usize::from(n))?;
        let mut v = 0u64;
        for (i, x) in b.iter().enumerate() {
            v |= u64::from(*x) << (8 * i);
        }
        Ok(v)
    }

    fn read_value(&mut self, kind: &ColKind) -> Result<Val<'a>, RowError> {
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
                Val::Ts(datetime2(packed, micros))
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
        let n_present = present.iter().filter(|p| **p).count();
        let nulls = self.take(n_present.div_ceil(8))?;
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
            let v = self.read_value(kind)?;
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
        let n_present = present.iter().filter(|p| **p).count();
        let nulls = self.take(n_present.div_ceil(8))?;
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
                match (self.read_value(kind)?, kind) {
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
                    Err(bad(i, &format!("unknown enum index {ix}")))
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
