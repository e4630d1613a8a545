//! Ordered reads of event history, in constant memory.
//!
//! A table is read in primary-key pages (`WHERE id > last ORDER BY id LIMIT
//! n`), each page a short query, so a reader holds one page at a time and
//! can run inside a consistent-snapshot transaction on the same connection.

use crate::StoreError;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use rps_core::{EventType, Gesture, MatchEvent, Outcome, SeasonId, Timestamp};

/// The SELECT list that [`decode_row`] reads, in order. Timestamps come as
/// integer microseconds so no date parsing is needed on this side.
pub const EVENT_COLUMNS: &str = "id, event_id, match_id, version, event_type, season_id, \
    player_a_id, player_b_id, gesture_a, gesture_b, winner_player_id, loser_player_id, outcome, \
    TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', deadline_at), \
    TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', occurred_at)";

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub season: Option<SeasonId>,
    /// `occurred_at >= from`.
    pub from: Option<Timestamp>,
    /// `occurred_at < to`.
    pub to: Option<Timestamp>,
    /// Only rows with `id <= max_row_id` (a snapshot's high-water mark).
    pub max_row_id: Option<i64>,
}

impl HistoryFilter {
    fn where_sql(&self) -> String {
        let mut w = String::new();
        if let Some(s) = self.season {
            w.push_str(&format!(" AND season_id = '{s}'"));
        }
        if let Some(t) = self.from {
            w.push_str(&format!(" AND occurred_at >= '{t}'"));
        }
        if let Some(t) = self.to {
            w.push_str(&format!(" AND occurred_at < '{t}'"));
        }
        if let Some(id) = self.max_row_id {
            w.push_str(&format!(" AND id <= {id}"));
        }
        w
    }
}

/// A row of an event table: decoded, or why it does not fit the model.
pub type RowResult = Result<MatchEvent, StoreError>;

/// Reads one event table page by page, in primary-key order.
pub struct TableReader {
    database: String,
    table: String,
    filter_sql: String,
    last_id: i64,
    page_size: usize,
    done: bool,
}

impl TableReader {
    pub fn new(database: &str, table: &str, filter: &HistoryFilter, page_size: usize) -> Self {
        TableReader {
            database: database.to_string(),
            table: table.to_string(),
            filter_sql: filter.where_sql(),
            last_id: 0,
            page_size: page_size.max(1),
            done: false,
        }
    }

    /// The next page, or `None` at the end. Rows that do not fit the model
    /// come back as errors in place, so one bad row never hides the rest.
    pub async fn next_page(
        &mut self,
        conn: &mut Conn,
    ) -> Result<Option<Vec<RowResult>>, mysql_async::Error> {
        if self.done {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM `{}`.`{}` WHERE id > {}{} ORDER BY id LIMIT {}",
            self.database, self.table, self.last_id, self.filter_sql, self.page_size
        );
        let rows: Vec<Row> = conn.query(sql).await?;
        if rows.len() < self.page_size {
            self.done = true;
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id = match row.as_ref(0) {
                Some(v) => int(v).unwrap_or(self.last_id),
                None => self.last_id,
            };
            self.last_id = self.last_id.max(id);
            out.push(decode_row(&row).map_err(|message| StoreError::BadRow {
                database: self.database.clone(),
                table: self.table.clone(),
                row_id: id,
                message,
            }));
        }
        Ok(Some(out))
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Bytes(b) => Some(b),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::UInt(u) => i64::try_from(*u).ok(),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// Decodes a row selected with [`EVENT_COLUMNS`].
pub fn decode_row(row: &Row) -> Result<MatchEvent, String> {
    let col = |i: usize| row.as_ref(i).unwrap_or(&Value::NULL);
    let name = |i: usize| row.columns_ref()[i].name_str().into_owned();
    let req_int =
        |i: usize| int(col(i)).ok_or_else(|| format!("`{}` is NULL or not an integer", name(i)));
    let opt_int = |i: usize| -> Result<Option<i64>, String> {
        match col(i) {
            Value::NULL => Ok(None),
            v => int(v)
                .map(Some)
                .ok_or_else(|| format!("`{}` is not an integer", name(i))),
        }
    };
    let req_bytes = |i: usize| bytes(col(i)).ok_or_else(|| format!("`{}` is NULL", name(i)));
    let opt_enum = |i: usize| -> Option<&[u8]> { bytes(col(i)).filter(|b| !b.is_empty()) };
    let e = |e: rps_core::event::ModelError| e.to_string();
    let event_id_bytes = req_bytes(1)?;
    Ok(MatchEvent {
        row_id: req_int(0)?,
        event_id: uuid::Uuid::try_parse_ascii(event_id_bytes).map_err(|_| {
            format!(
                "invalid event_id: {:?} (a UUID)",
                String::from_utf8_lossy(event_id_bytes)
            )
        })?,
        match_id: req_int(2)?,
        version: i32::try_from(req_int(3)?).map_err(|_| "version out of range".to_string())?,
        event_type: EventType::from_bytes(req_bytes(4)?).map_err(e)?,
        season_id: SeasonId::parse_bytes(req_bytes(5)?).map_err(e)?,
        player_a_id: req_int(6)?,
        player_b_id: req_int(7)?,
        gesture_a: opt_enum(8)
            .map(Gesture::from_bytes)
            .transpose()
            .map_err(e)?,
        gesture_b: opt_enum(9)
            .map(Gesture::from_bytes)
            .transpose()
            .map_err(e)?,
        winner_player_id: opt_int(10)?,
        loser_player_id: opt_int(11)?,
        outcome: opt_enum(12)
            .map(Outcome::from_bytes)
            .transpose()
            .map_err(e)?,
        deadline_at: opt_int(13)?.map(Timestamp),
        occurred_at: Timestamp(req_int(14)?),
    })
}
