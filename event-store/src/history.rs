//! Reads of event history: ordered and in constant memory, or the few
//! matches a caller names.
//!
//! A table is read in primary-key pages (`WHERE id > last ORDER BY id LIMIT
//! n`, [`TableReader`]), or a shard's tables in ranges of match ids
//! ([`MatchRangeReader`]); either way each query is short, so a reader holds
//! one page or range at a time, and the range reader runs inside a
//! consistent-snapshot transaction on the snapshot's connection. Export
//! reads each table in one streaming query in `occurred_at` order
//! ([`read_in_time_order`]), rows as stored ([`StoredRow`]) rather than as
//! the model judges them. The compensator reads the events of the matches
//! it claimed ([`EventStore::read_matches`]).

use crate::{id_list, EventStore, StoreError};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use rps_core::{EventType, Gesture, MatchEvent, Outcome, SeasonId, ShardId, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;
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

/// Reads one event table page by page, in primary-key order, on a pooled
/// connection of its own (taken at the first page, returned at the end).
pub struct TableReader {
    store: EventStore,
    shard: ShardId,
    database: String,
    table: String,
    filter_sql: String,
    last_id: i64,
    page_size: usize,
    conn: Option<Conn>,
    done: bool,
}

impl EventStore {
    /// A reader of `table` of `shard`, `page_size` rows per page.
    pub fn table_reader(
        &self,
        shard: ShardId,
        table: &str,
        filter: &HistoryFilter,
        page_size: usize,
    ) -> TableReader {
        TableReader {
            store: self.clone(),
            shard,
            database: self.config().database(shard),
            table: table.to_string(),
            filter_sql: filter.where_sql(),
            last_id: 0,
            page_size: page_size.max(1),
            conn: None,
            done: false,
        }
    }

    /// Every stored event of `match_ids` in `tables` of `shard`, table by
    /// table (tagged with the table's index in `tables`), each table's rows
    /// in `(match_id, version)` order: one query per table on one
    /// connection. Rows that do not fit the model come back as errors in
    /// place.
    pub async fn read_matches(
        &self,
        shard: ShardId,
        tables: &[String],
        match_ids: &[i64],
    ) -> Result<Vec<RangeRow>, StoreError> {
        let mut out = Vec::new();
        if match_ids.is_empty() {
            return Ok(out);
        }
        let (pool, server) = self.pool_for_shard(shard);
        let db = self.config().database(shard);
        let mut conn = pool.get_conn().await.map_err(StoreError::mysql(server))?;
        let list = id_list(match_ids);
        for (ti, table) in tables.iter().enumerate() {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM `{db}`.`{table}` WHERE match_id IN ({list}) \
                 ORDER BY match_id, version"
            );
            let rows: Vec<Row> = conn.query(sql).await.map_err(StoreError::mysql(server))?;
            out.extend(rows.iter().map(|row| (ti, decode_checked(row, &db, table))));
        }
        Ok(out)
    }
}

impl TableReader {
    /// The next page, or `None` at the end. Rows that do not fit the model
    /// come back as errors in place, so one bad row never hides the rest.
    pub async fn next_page(&mut self) -> Result<Option<Vec<RowResult>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self
                .conn
                .insert(self.store.conn_for_shard(self.shard).await?),
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM `{}`.`{}` WHERE id > {}{} ORDER BY id LIMIT {}",
            self.database, self.table, self.last_id, self.filter_sql, self.page_size
        );
        let server = self.store.pool_for_shard(self.shard).1;
        let rows: Vec<Row> = conn.query(sql).await.map_err(StoreError::mysql(server))?;
        if rows.len() < self.page_size {
            self.done = true;
            self.conn = None;
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

/// [`decode_row`], a misfit as [`StoreError::BadRow`] naming where it lives.
fn decode_checked(row: &Row, database: &str, table: &str) -> RowResult {
    decode_row(row).map_err(|message| StoreError::BadRow {
        database: database.to_string(),
        table: table.to_string(),
        row_id: row.as_ref(0).and_then(int).unwrap_or(0),
        message,
    })
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
                out.push((ti, decode_checked(&row, &self.database, table)));
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

/// One event row as stored, typed by column but not judged by the model:
/// an event the pipeline rejects is still history. Timestamps are UTC
/// microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub id: i64,
    pub event_id: String,
    pub match_id: i64,
    pub version: i32,
    pub event_type: Arc<str>,
    pub season_id: Arc<str>,
    pub player_a_id: i64,
    pub player_b_id: i64,
    /// `None` for NULL and for the empty ENUM value alike.
    pub gesture_a: Option<Arc<str>>,
    pub gesture_b: Option<Arc<str>>,
    pub winner_player_id: Option<i64>,
    pub loser_player_id: Option<i64>,
    pub outcome: Option<Arc<str>>,
    pub deadline_at: Option<i64>,
    pub occurred_at: i64,
}

/// What [`read_in_time_order`] hands out: up to `chunk_rows` rows, or the
/// error that ended the read.
pub type TimeOrderedChunk = Result<Vec<StoredRow>, StoreError>;

/// Reads `table` of `shard` in `(occurred_at, id)` order, on a task of its
/// own, in chunks of `chunk_rows` with at most `chunks_ahead` waiting for the
/// consumer. The table has no index on `occurred_at`: one streaming query
/// sorts it once, where a paged keyset query would sort it again for every
/// page. The task ends at the table's end, at the first error (sent as the
/// last chunk) or when the receiver is dropped.
pub fn read_in_time_order(
    store: EventStore,
    shard: ShardId,
    table: String,
    filter: HistoryFilter,
    chunk_rows: usize,
    chunks_ahead: usize,
) -> (mpsc::Receiver<TimeOrderedChunk>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(chunks_ahead.max(1));
    let task = tokio::spawn(async move {
        let chunk_rows = chunk_rows.max(1);
        let r = async {
            let (pool, server) = store.pool_for_shard(shard);
            let db = store.config().database(shard);
            let mut conn = pool.get_conn().await.map_err(StoreError::mysql(server))?;
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM `{db}`.`{table}` WHERE TRUE{} ORDER BY occurred_at, id",
                filter.where_sql()
            );
            let mut result = conn.query_iter(sql).await.map_err(StoreError::mysql(server))?;
            let mut chunk = Vec::with_capacity(chunk_rows);
            let mut interner = Interner::default();
            while let Some(row) = result.next().await.map_err(StoreError::mysql(server))? {
                chunk.push(decode_stored(&row, &db, &table, &mut interner)?);
                if chunk.len() == chunk_rows {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(chunk_rows));
                    if tx.send(Ok(full)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if !chunk.is_empty() {
                let _ = tx.send(Ok(chunk)).await;
            }
            Ok::<(), StoreError>(())
        }
        .await;
        if let Err(e) = r {
            let _ = tx.send(Err(e)).await;
        }
    });
    (rx, task)
}

/// Shares one allocation per distinct value of the few-valued columns
/// (event type, season, gestures, outcome): allocating them per row was a
/// fifth of the export's CPU.
#[derive(Default)]
struct Interner(HashMap<Vec<u8>, Arc<str>>);

impl Interner {
    /// Distinct values kept; a table full of odd values stops sharing.
    const MAX: usize = 4096;

    fn get(&mut self, v: &Value) -> Option<Arc<str>> {
        let Value::Bytes(b) = v else {
            return text(v).map(Arc::from);
        };
        if let Some(s) = self.0.get(b.as_slice()) {
            return Some(s.clone());
        }
        let s: Arc<str> = Arc::from(String::from_utf8_lossy(b).as_ref());
        if self.0.len() < Self::MAX {
            self.0.insert(b.clone(), s.clone());
        }
        Some(s)
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::NULL => None,
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

/// Decodes a row selected with [`EVENT_COLUMNS`] as stored; only a missing
/// or non-integer id, match, version or player, or a missing timestamp,
/// does not fit.
fn decode_stored(
    row: &Row,
    database: &str,
    table: &str,
    interner: &mut Interner,
) -> Result<StoredRow, StoreError> {
    let col = |i: usize| row.as_ref(i).unwrap_or(&Value::NULL);
    let req = |i: usize| {
        int(col(i)).ok_or_else(|| StoreError::BadRow {
            database: database.to_string(),
            table: table.to_string(),
            row_id: int(col(0)).unwrap_or(0),
            message: format!(
                "column `{}` is NULL or not an integer",
                rps_core::event::COLUMNS[i]
            ),
        })
    };
    Ok(StoredRow {
        id: req(0)?,
        event_id: text(col(1)).unwrap_or_default(),
        match_id: req(2)?,
        version: req(3)? as i32,
        event_type: interner.get(col(4)).unwrap_or_else(|| Arc::from("")),
        season_id: interner.get(col(5)).unwrap_or_else(|| Arc::from("")),
        player_a_id: req(6)?,
        player_b_id: req(7)?,
        gesture_a: interner.get(col(8)).filter(|s| !s.is_empty()),
        gesture_b: interner.get(col(9)).filter(|s| !s.is_empty()),
        winner_player_id: int(col(10)),
        loser_player_id: int(col(11)),
        outcome: interner.get(col(12)).filter(|s| !s.is_empty()),
        deadline_at: int(col(13)),
        occurred_at: req(14)?,
    })
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
