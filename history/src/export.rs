//! `rpsctl export`: the event history of all shards as one stream, merged in
//! `occurred_at` order, as NDJSON, CSV or Parquet, in constant memory.
//!
//! Each event table is read by one streaming query `ORDER BY occurred_at,
//! id` (the table has no index on `occurred_at`; a paged keyset query would
//! sort the whole table again for every page, one sort streamed row by row
//! costs one). Each reader fills a small bounded channel; a k-way merge takes
//! the smallest head (`occurred_at`, then shard, table and id, so the order
//! is total and repeatable) and hands it to the writer. Memory is bounded by
//! the channels and, for Parquet, one row group.
//!
//! Rows are exported as stored, not as the fold judges them: an event the
//! pipeline rejects is still history.

use crate::HistoryError;
use arrow_array::builder::{
    Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder, UInt16Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use mysql_async::prelude::*;
use mysql_async::Value;
use rps_core::{Config, SeasonId, ShardId, Timestamp};
use rps_event_store::{EventStore, EVENT_COLUMNS};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Rows a table reader sends per message.
const CHUNK_ROWS: usize = 1024;
/// Messages buffered per table reader.
const CHANNEL_CHUNKS: usize = 4;
/// Rows per Arrow batch handed to the Parquet writer.
const PARQUET_BATCH_ROWS: usize = 8192;
/// Rows per Parquet row group (bounds the writer's memory).
pub const PARQUET_ROW_GROUP_ROWS: usize = 128 * 1024;

/// The exported columns, in order: every table column, plus where the row
/// comes from.
pub const COLUMNS: [&str; 17] = {
    // The shard and source table, then the event table's own columns.
    let mut out = [""; 17];
    out[0] = "shard";
    out[1] = "source_table";
    let mut i = 0;
    while i < rps_core::event::COLUMNS.len() {
        out[i + 2] = rps_core::event::COLUMNS[i];
        i += 1;
    }
    out
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
    Parquet,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ndjson" | "jsonl" => Ok(Format::Ndjson),
            "csv" => Ok(Format::Csv),
            "parquet" => Ok(Format::Parquet),
            _ => Err(format!("unknown format {s:?} (ndjson, csv or parquet)")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: Format,
    pub season: Option<SeasonId>,
    /// `occurred_at >= from`.
    pub from: Option<Timestamp>,
    /// `occurred_at < to`.
    pub to: Option<Timestamp>,
    pub shards: Option<Vec<ShardId>>,
}

/// One exported row, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExportRow {
    pub shard: ShardId,
    pub source_table: Arc<str>,
    pub id: i64,
    pub event_id: String,
    pub match_id: i64,
    pub version: i32,
    pub event_type: Arc<str>,
    pub season_id: Arc<str>,
    pub player_a_id: i64,
    pub player_b_id: i64,
    pub gesture_a: Option<Arc<str>>,
    pub gesture_b: Option<Arc<str>>,
    pub winner_player_id: Option<i64>,
    pub loser_player_id: Option<i64>,
    pub outcome: Option<Arc<str>>,
    #[serde(serialize_with = "ser_opt_ts")]
    pub deadline_at: Option<i64>,
    #[serde(serialize_with = "ser_ts")]
    pub occurred_at: i64,
    /// Merge tie-break: position of the table among the shard's tables.
    #[serde(skip)]
    table_index: usize,
}

/// Timestamps as `YYYY-MM-DDTHH:MM:SS.ffffffZ` in text formats.
///
/// Formatted by hand (civil-from-days, H. Hinnant): this runs twice per
/// exported row and a format-string formatter dominated the export's time.
pub fn format_ts(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return Timestamp(micros)
            .to_naive()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
    }
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, sod / 3600);
    put(14, 2, sod / 60 % 60);
    put(17, 2, sod % 60);
    put(20, 6, frac);
    String::from_utf8_lossy(&b).into_owned()
}

fn ser_ts<S: serde::Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ts(*v))
}

fn ser_opt_ts<S: serde::Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&format_ts(*v)),
        None => s.serialize_none(),
    }
}

impl ExportRow {
    fn order_key(&self) -> (i64, ShardId, usize, i64) {
        (self.occurred_at, self.shard, self.table_index, self.id)
    }
}

struct Head(ExportRow, usize);

impl PartialEq for Head {
    fn eq(&self, o: &Self) -> bool {
        self.0.order_key() == o.0.order_key()
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Head {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.order_key().cmp(&o.0.order_key())
    }
}

fn where_sql(opts: &ExportOptions) -> String {
    let mut w = String::from(" WHERE 1=1");
    if let Some(s) = opts.season {
        w.push_str(&format!(" AND season_id = '{s}'"));
    }
    if let Some(t) = opts.from {
        w.push_str(&format!(" AND occurred_at >= '{t}'"));
    }
    if let Some(t) = opts.to {
        w.push_str(&format!(" AND occurred_at < '{t}'"));
    }
    w
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::UInt(u) => i64::try_from(*u).ok(),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// Shares one allocation per distinct value of the few-valued columns
/// (event type, season, gestures, outcome): allocating them per row was a
/// fifth of the export's CPU.
#[derive(Default)]
struct Interner(std::collections::HashMap<Vec<u8>, Arc<str>>);

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

fn decode(
    row: &mysql_async::Row,
    shard: ShardId,
    table: &Arc<str>,
    table_index: usize,
    interner: &mut Interner,
) -> Result<ExportRow, String> {
    let col = |i: usize| row.as_ref(i).unwrap_or(&Value::NULL);
    let req = |i: usize| {
        int(col(i)).ok_or_else(|| {
            format!(
                "column {} of {table} is NULL or not an integer",
                COLUMNS[i + 2]
            )
        })
    };
    Ok(ExportRow {
        shard,
        source_table: table.clone(),
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
        table_index,
    })
}

type Chunk = Result<Vec<ExportRow>, HistoryError>;

/// Streams one table in (occurred_at, id) order into a bounded channel.
async fn read_table(
    store: EventStore,
    shard: ShardId,
    table: String,
    table_index: usize,
    filter: String,
    tx: mpsc::Sender<Chunk>,
) {
    let r = async {
        let (_, server) = store.pool_for_shard(shard);
        let server = server.to_string();
        let db = store.config().database(shard);
        let mut conn = store.conn_for_shard(shard).await?;
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM `{db}`.`{table}`{filter} ORDER BY occurred_at, id"
        );
        let name: Arc<str> = Arc::from(table.as_str());
        let mut result = conn
            .query_iter(sql)
            .await
            .map_err(HistoryError::mysql(&server))?;
        let mut chunk = Vec::with_capacity(CHUNK_ROWS);
        let mut interner = Interner::default();
        while let Some(row) = result.next().await.map_err(HistoryError::mysql(&server))? {
            chunk.push(
                decode(&row, shard, &name, table_index, &mut interner)
                    .map_err(HistoryError::Definite)?,
            );
            if chunk.len() == CHUNK_ROWS {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ROWS));
                if tx.send(Ok(full)).await.is_err() {
                    return Ok(());
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.send(Ok(chunk)).await;
        }
        Ok::<(), HistoryError>(())
    }
    .await;
    if let Err(e) = r {
        let _ = tx.send(Err(e)).await;
    }
}

/// A sink for rows in one format.
trait RowSink {
    fn write(&mut self, row: &ExportRow) -> Result<(), HistoryError>;
    fn finish(self: Box<Self>) -> Result<(), HistoryError>;
}

struct NdjsonSink<W: Write>(W);

impl<W: Write> RowSink for NdjsonSink<W> {
    fn write(&mut self, row: &ExportRow) -> Result<(), HistoryError> {
        serde_json::to_writer(&mut self.0, row).map_err(|e| HistoryError::Format(e.to_string()))?;
        self.0.write_all(b"\n")?;
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> Result<(), HistoryError> {
        self.0.flush()?;
        Ok(())
    }
}

struct CsvSink<W: Write>(csv::Writer<W>);

impl<W: Write> RowSink for CsvSink<W> {
    fn write(&mut self, row: &ExportRow) -> Result<(), HistoryError> {
        self.0
            .serialize(row)
            .map_err(|e| HistoryError::Format(e.to_string()))
    }
    fn finish(mut self: Box<Self>) -> Result<(), HistoryError> {
        self.0.flush()?;
        Ok(())
    }
}

/// The Arrow schema of the Parquet export.
pub fn arrow_schema() -> Arc<Schema> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("shard", DataType::UInt16, false),
        Field::new("source_table", DataType::Utf8, false),
        Field::new("id", DataType::Int64, false),
        Field::new("event_id", DataType::Utf8, false),
        Field::new("match_id", DataType::Int64, false),
        Field::new("version", DataType::Int32, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("season_id", DataType::Utf8, false),
        Field::new("player_a_id", DataType::Int64, false),
        Field::new("player_b_id", DataType::Int64, false),
        Field::new("gesture_a", DataType::Utf8, true),
        Field::new("gesture_b", DataType::Utf8, true),
        Field::new("winner_player_id", DataType::Int64, true),
        Field::new("loser_player_id", DataType::Int64, true),
        Field::new("outcome", DataType::Utf8, true),
        Field::new("deadline_at", ts.clone(), true),
        Field::new("occurred_at", ts, false),
    ]))
}

struct ParquetSink<W: Write + Send> {
    writer: parquet::arrow::ArrowWriter<W>,
    schema: Arc<Schema>,
    rows: Vec<ExportRow>,
}

impl<W: Write + Send> ParquetSink<W> {
    fn new(out: W) -> Result<Self, HistoryError> {
        let schema = arrow_schema();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_size(PARQUET_ROW_GROUP_ROWS)
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let writer = parquet::arrow::ArrowWriter::try_new(out, schema.clone(), Some(props))
            .map_err(|e| HistoryError::Format(e.to_string()))?;
        Ok(ParquetSink {
            writer,
            schema,
            rows: Vec::with_capacity(PARQUET_BATCH_ROWS),
        })
    }

    fn flush_batch(&mut self) -> Result<(), HistoryError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let n = self.rows.len();
        let mut shard = UInt16Builder::with_capacity(n);
        let mut table = StringBuilder::new();
        let mut id = Int64Builder::with_capacity(n);
        let mut event_id = StringBuilder::new();
        let mut match_id = Int64Builder::with_capacity(n);
        let mut version = Int32Builder::with_capacity(n);
        let mut event_type = StringBuilder::new();
        let mut season = StringBuilder::new();
        let mut pa = Int64Builder::with_capacity(n);
        let mut pb = Int64Builder::with_capacity(n);
        let mut ga = StringBuilder::new();
        let mut gb = StringBuilder::new();
        let mut win = Int64Builder::with_capacity(n);
        let mut lose = Int64Builder::with_capacity(n);
        let mut out = StringBuilder::new();
        let mut dl = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        for r in self.rows.drain(..) {
            shard.append_value(r.shard);
            table.append_value(&*r.source_table);
            id.append_value(r.id);
            event_id.append_value(&r.event_id);
            match_id.append_value(r.match_id);
            version.append_value(r.version);
            event_type.append_value(&r.event_type);
            season.append_value(&r.season_id);
            pa.append_value(r.player_a_id);
            pb.append_value(r.player_b_id);
            ga.append_option(r.gesture_a.as_deref());
            gb.append_option(r.gesture_b.as_deref());
            win.append_option(r.winner_player_id);
            lose.append_option(r.loser_player_id);
            out.append_option(r.outcome.as_deref());
            dl.append_option(r.deadline_at);
            at.append_value(r.occurred_at);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(shard.finish()),
            Arc::new(table.finish()),
            Arc::new(id.finish()),
            Arc::new(event_id.finish()),
            Arc::new(match_id.finish()),
            Arc::new(version.finish()),
            Arc::new(event_type.finish()),
            Arc::new(season.finish()),
            Arc::new(pa.finish()),
            Arc::new(pb.finish()),
            Arc::new(ga.finish()),
            Arc::new(gb.finish()),
            Arc::new(win.finish()),
            Arc::new(lose.finish()),
            Arc::new(out.finish()),
            Arc::new(dl.finish()),
            Arc::new(at.finish()),
        ];
        let batch = RecordBatch::try_new(self.schema.clone(), cols)
            .map_err(|e| HistoryError::Format(e.to_string()))?;
        self.writer
            .write(&batch)
            .map_err(|e| HistoryError::Format(e.to_string()))
    }
}

impl<W: Write + Send> RowSink for ParquetSink<W> {
    fn write(&mut self, row: &ExportRow) -> Result<(), HistoryError> {
        self.rows.push(row.clone());
        if self.rows.len() >= PARQUET_BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> Result<(), HistoryError> {
        self.flush_batch()?;
        self.writer
            .close()
            .map_err(|e| HistoryError::Format(e.to_string()))?;
        Ok(())
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExportReport {
    pub rows: u64,
    pub seconds: f64,
}

/// Exports history to `out` (a file or stdout, already opened).
pub async fn export<W: Write + Send + 'static>(
    config: Arc<Config>,
    opts: ExportOptions,
    out: W,
    shutdown: CancellationToken,
) -> Result<ExportReport, HistoryError> {
    let started = std::time::Instant::now();
    let store = EventStore::new(config.clone())?;
    let shards: Vec<ShardId> = opts
        .shards
        .clone()
        .unwrap_or_else(|| (0..config.shard_count).collect());
    let filter = where_sql(&opts);
    let mut receivers = Vec::new();
    let mut tasks = Vec::new();
    for &shard in &shards {
        for (i, table) in store.event_tables(shard).await?.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
            tasks.push(tokio::spawn(read_table(
                store.clone(),
                shard,
                table,
                i,
                filter.clone(),
                tx,
            )));
            receivers.push(rx);
        }
    }
    let out = std::io::BufWriter::with_capacity(1 << 20, out);
    let mut sink: Box<dyn RowSink> = match opts.format {
        Format::Ndjson => Box::new(NdjsonSink(out)),
        Format::Csv => Box::new(CsvSink(csv::Writer::from_writer(out))),
        Format::Parquet => Box::new(ParquetSink::new(out)?),
    };
    // Each source: its current chunk (reversed, so pop takes the next row).
    let mut current: Vec<Vec<ExportRow>> = vec![Vec::new(); receivers.len()];
    let mut heap: BinaryHeap<Reverse<Head>> = BinaryHeap::new();
    async fn next_row(
        rx: &mut mpsc::Receiver<Chunk>,
        cur: &mut Vec<ExportRow>,
    ) -> Result<Option<ExportRow>, HistoryError> {
        if cur.is_empty() {
            match rx.recv().await {
                None => return Ok(None),
                Some(chunk) => {
                    *cur = chunk?;
                    cur.reverse();
                }
            }
        }
        Ok(cur.pop())
    }
    for (i, rx) in receivers.iter_mut().enumerate() {
        if let Some(r) = next_row(rx, &mut current[i]).await? {
            heap.push(Reverse(Head(r, i)));
        }
    }
    let mut rows = 0u64;
    while let Some(Reverse(Head(row, i))) = heap.pop() {
        sink.write(&row)?;
        rows += 1;
        if rows & 0xFFFF == 0 {
            metrics::counter!(crate::metrics::EXPORT_ROWS_TOTAL).increment(65_536);
            if shutdown.is_cancelled() {
                return Err(HistoryError::Cancelled);
            }
        }
        if let Some(r) = next_row(&mut receivers[i], &mut current[i]).await? {
            heap.push(Reverse(Head(r, i)));
        }
    }
    metrics::counter!(crate::metrics::EXPORT_ROWS_TOTAL).increment(rows % 65_536);
    sink.finish()?;
    for t in tasks {
        let _ = t.await;
    }
    store.disconnect().await;
    Ok(ExportReport {
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_timestamps_render_utc() {
        assert_eq!("csv".parse::<Format>().unwrap(), Format::Csv);
        assert!("xml".parse::<Format>().is_err());
        assert_eq!(
            format_ts(1_790_000_000_123_456),
            "2026-09-21T14:13:20.123456Z"
        );
        assert_eq!(arrow_schema().fields().len(), COLUMNS.len());
        for t in [
            0,
            951_782_400_000_001,
            1_709_164_800_999_999,
            -86_400_000_000,
        ] {
            assert_eq!(
                format_ts(t),
                Timestamp(t)
                    .to_naive()
                    .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                    .to_string()
            );
        }
    }
}
