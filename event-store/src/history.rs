//! Ordered reads of event history, in constant memory.
//!
//! A table is read in primary-key pages (`WHERE id > last ORDER BY id LIMIT
//! n`), or a shard's tables in ranges of match ids ([`MatchRangeReader`]);
//! either way each query is short, so a reader holds one page or range at a
//! time and can run inside a consistent-snapshot transaction on the same
//! connection.

use crate::StoreError;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use rps_core::{EventType, Gesture, MatchEvent, Outcome, SeasonId, Timestamp};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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

/// One event read by a [`MatchRangeReader`]: which of the shard's tables it
/// came from (index into the reader's table list) and the row.
pub type RangeRow = (usize, RowResult);

/// Reads a shard's event tables in ranges of match ids, every table per
/// range, so that each range holds every event of its matches.
///
/// A consumer folding range by range can drop each match once its range is
/// done: memory follows the range, not the history. Each range is sized to
/// at most `range_rows` rows per table by a boundary read on the
/// `(match_id, version)` index, and every query is short, so the reader
/// runs inside one consistent-snapshot transaction on one connection.
pub struct MatchRangeReader {
    database: String,
    tables: Vec<String>,
    filter_sql: String,
    range_rows: usize,
    /// Lower bound (inclusive) of the next range; `None` when done.
    next_lo: Option<i64>,
}

impl MatchRangeReader {
    pub fn new(
        database: &str,
        tables: &[String],
        filter: &HistoryFilter,
        range_rows: usize,
    ) -> Self {
        MatchRangeReader {
            database: database.to_string(),
            tables: tables.to_vec(),
            filter_sql: filter.where_sql(),
            range_rows: range_rows.max(1),
            next_lo: (!tables.is_empty()).then_some(i64::MIN),
        }
    }

    /// The next range's rows (in no particular order; the caller sorts), or
    /// `None` at the end. Rows that do not fit the model come back as errors
    /// in place.
    pub async fn next_range(
        &mut self,
        conn: &mut Conn,
    ) -> Result<Option<Vec<RangeRow>>, mysql_async::Error> {
        let Some(lo) = self.next_lo else {
            return Ok(None);
        };
        // The range ends where the first table to reach `range_rows` rows does.
        // i64::MIN written as a literal would be a DECIMAL; no bound instead.
        let lower = if lo == i64::MIN {
            String::new()
        } else {
            format!(" AND match_id >= {lo}")
        };
        let mut hi: Option<i64> = None;
        for table in &self.tables {
            let sql = format!(
                "SELECT match_id FROM `{}`.`{}` WHERE TRUE{lower} ORDER BY match_id LIMIT 1 OFFSET {}",
                self.database, table, self.range_rows
            );
            if let Some(b) = conn.query_first::<i64, _>(sql).await? {
                hi = Some(hi.map_or(b, |h| h.min(b)));
            }
        }
        // A match never straddles ranges: the bound is a match id, exclusive.
        let hi = hi.map(|h| h.max(lo.saturating_add(1)));
        let upper = hi.map_or(String::new(), |h| format!(" AND match_id < {h}"));
        let mut out = Vec::new();
        for (ti, table) in self.tables.iter().enumerate() {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM `{}`.`{}` WHERE TRUE{lower}{upper}{} \
                 ORDER BY match_id, version",
                self.database, table, self.filter_sql
            );
            let mut result = conn.query_iter(sql).await?;
            while let Some(row) = result.next().await? {
                let id = row.as_ref(0).and_then(int).unwrap_or(0);
                out.push((
                    ti,
                    decode_row(&row).map_err(|message| StoreError::BadRow {
                        database: self.database.clone(),
                        table: table.clone(),
                        row_id: id,
                        message,
                    }),
                ));
            }
        }
        self.next_lo = hi;
        Ok(Some(out))
    }
}

/// One database's event tables, for [`read_ranges_ahead`].
pub type RangePlan = Vec<(String, Vec<String>)>;

/// Ranges as [`read_ranges_ahead`] hands them out: `(index in the plan, rows)`.
pub type PlannedRanges = mpsc::Receiver<(usize, Vec<RangeRow>)>;

/// The reading task; it hands the connection back.
pub type RangeReadTask = JoinHandle<Result<Conn, mysql_async::Error>>;

/// Reads the ranges of match ids of each `(database, tables)` of `plan` in
/// turn, on `conn` and on a task of its own, one range ahead of the
/// consumer, who receives `(index in plan, rows)`. The task ends when the
/// plan is read or the receiver is dropped, and hands the connection back
/// (a snapshot's transaction is still open on it).
pub fn read_ranges_ahead(
    mut conn: Conn,
    plan: RangePlan,
    filter: HistoryFilter,
    range_rows: usize,
) -> (PlannedRanges, RangeReadTask) {
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(async move {
        for (i, (database, tables)) in plan.iter().enumerate() {
            let mut ranges = MatchRangeReader::new(database, tables, &filter, range_rows);
            while let Some(range) = ranges.next_range(&mut conn).await? {
                if tx.send((i, range)).await.is_err() {
                    return Ok(conn);
                }
            }
        }
        Ok(conn)
    });
    (rx, task)
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
