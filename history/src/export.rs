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
//! pipeline rejects is still history. The reading (query, row decoding,
//! the bounded channel per table) is the event store's
//! ([`rps_event_store::read_in_time_order`]); this module merges and writes.

use crate::HistoryError;
use rps_core::{Config, SeasonId, ShardId, Timestamp};
use rps_event_store::{read_in_time_order, EventStore, HistoryFilter, StoredRow, TimeOrderedChunk};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Rows a table reader sends per message.
const CHUNK_ROWS: usize = 1024;
/// Messages buffered per table reader.
const CHANNEL_CHUNKS: usize = 4;
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

/// One exported row: the row as stored and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRow {
    pub shard: ShardId,
    pub source_table: Arc<str>,
    pub row: StoredRow,
    /// Merge tie-break: position of the table among the shard's tables.
    table_index: usize,
}

/// The text formats' record: [`COLUMNS`], in order, timestamps as text.
impl serde::Serialize for ExportRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let r = &self.row;
        let mut out = s.serialize_struct("ExportRow", COLUMNS.len())?;
        out.serialize_field("shard", &self.shard)?;
        out.serialize_field("source_table", &self.source_table)?;
        out.serialize_field("id", &r.id)?;
        out.serialize_field("event_id", &r.event_id)?;
        out.serialize_field("match_id", &r.match_id)?;
        out.serialize_field("version", &r.version)?;
        out.serialize_field("event_type", &r.event_type)?;
        out.serialize_field("season_id", &r.season_id)?;
        out.serialize_field("player_a_id", &r.player_a_id)?;
        out.serialize_field("player_b_id", &r.player_b_id)?;
        out.serialize_field("gesture_a", &r.gesture_a)?;
        out.serialize_field("gesture_b", &r.gesture_b)?;
        out.serialize_field("winner_player_id", &r.winner_player_id)?;
        out.serialize_field("loser_player_id", &r.loser_player_id)?;
        out.serialize_field("outcome", &r.outcome)?;
        out.serialize_field("deadline_at", &Ts(r.deadline_at))?;
        out.serialize_field("occurred_at", &Ts(r.occurred_at))?;
        out.end()
    }
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

/// A timestamp field of the text formats, through [`format_ts`].
struct Ts<T>(T);

impl serde::Serialize for Ts<i64> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_ts(self.0))
    }
}

impl serde::Serialize for Ts<Option<i64>> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(v) => s.serialize_str(&format_ts(v)),
            None => s.serialize_none(),
        }
    }
}

impl ExportRow {
    fn order_key(&self) -> (i64, ShardId, usize, i64) {
        (
            self.row.occurred_at,
            self.shard,
            self.table_index,
            self.row.id,
        )
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

/// Where a merge source's rows come from.
struct Source {
    shard: ShardId,
    table: Arc<str>,
    table_index: usize,
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

/// The Parquet schema of the export. The logical types are the ones Arrow
/// readers (arrow-rs, pyarrow, DuckDB, Spark) map to UInt16, Utf8, Int64,
/// Int32 and Timestamp(µs, "UTC"), the types the export has always had.
pub const PARQUET_SCHEMA: &str = "
message rps_export {
    REQUIRED INT32 shard (INTEGER(16, false));
    REQUIRED BYTE_ARRAY source_table (STRING);
    REQUIRED INT64 id;
    REQUIRED BYTE_ARRAY event_id (STRING);
    REQUIRED INT64 match_id;
    REQUIRED INT32 version;
    REQUIRED BYTE_ARRAY event_type (STRING);
    REQUIRED BYTE_ARRAY season_id (STRING);
    REQUIRED INT64 player_a_id;
    REQUIRED INT64 player_b_id;
    OPTIONAL BYTE_ARRAY gesture_a (STRING);
    OPTIONAL BYTE_ARRAY gesture_b (STRING);
    OPTIONAL INT64 winner_player_id;
    OPTIONAL INT64 loser_player_id;
    OPTIONAL BYTE_ARRAY outcome (STRING);
    OPTIONAL INT64 deadline_at (TIMESTAMP(MICROS, true));
    REQUIRED INT64 occurred_at (TIMESTAMP(MICROS, true));
}";

/// [`PARQUET_SCHEMA`], parsed.
pub fn parquet_schema() -> parquet::schema::types::Type {
    parquet::schema::parser::parse_message_type(PARQUET_SCHEMA)
        .expect("PARQUET_SCHEMA is a valid message type")
}

fn parquet_err(e: parquet::errors::ParquetError) -> HistoryError {
    HistoryError::Format(e.to_string())
}

/// Writes the next column of a row group: `defs` is `None` for a required
/// column, the definition levels for a nullable one.
fn column<W: Write + Send, T: parquet::data_type::DataType>(
    rg: &mut parquet::file::writer::SerializedRowGroupWriter<'_, W>,
    values: &[T::T],
    defs: Option<&[i16]>,
) -> Result<(), HistoryError> {
    let mut col = rg
        .next_column()
        .map_err(parquet_err)?
        .ok_or_else(|| HistoryError::Format("the Parquet schema has fewer columns".into()))?;
    col.typed::<T>()
        .write_batch(values, defs, None)
        .map_err(parquet_err)?;
    col.close().map_err(parquet_err)
}

/// One buffered numeric column of a row group. A nullable column also keeps
/// one definition level per row (1 present, 0 NULL) and only the present
/// values, which is how the column writer takes them.
#[derive(Default)]
struct Nums<T> {
    values: Vec<T>,
    defs: Vec<i16>,
}

impl<T> Nums<T> {
    fn push(&mut self, v: T) {
        self.values.push(v);
    }

    fn push_opt(&mut self, v: Option<T>) {
        self.defs.push(i16::from(v.is_some()));
        self.values.extend(v);
    }
}

/// One buffered text column: the bytes of all values back to back, so a row
/// costs no allocation and the page values are slices of one buffer.
#[derive(Default)]
struct Texts {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    defs: Vec<i16>,
}

impl Texts {
    fn push(&mut self, v: &str) {
        self.bytes.extend_from_slice(v.as_bytes());
        self.ends.push(self.bytes.len());
    }

    fn push_opt(&mut self, v: Option<&str>) {
        self.defs.push(i16::from(v.is_some()));
        if let Some(v) = v {
            self.push(v);
        }
    }

    /// The values, as slices of one shared buffer.
    fn take(&mut self) -> Vec<parquet::data_type::ByteArray> {
        let data = bytes::Bytes::from(std::mem::take(&mut self.bytes));
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let v = data.slice(start..end).into();
                start = end;
                v
            })
            .collect()
    }
}

/// The columns of the row group being filled, in schema order.
#[derive(Default)]
struct RowGroup {
    rows: usize,
    shard: Nums<i32>,
    source_table: Texts,
    id: Nums<i64>,
    event_id: Texts,
    match_id: Nums<i64>,
    version: Nums<i32>,
    event_type: Texts,
    season_id: Texts,
    player_a_id: Nums<i64>,
    player_b_id: Nums<i64>,
    gesture_a: Texts,
    gesture_b: Texts,
    winner_player_id: Nums<i64>,
    loser_player_id: Nums<i64>,
    outcome: Texts,
    deadline_at: Nums<i64>,
    occurred_at: Nums<i64>,
}

impl RowGroup {
    fn push(&mut self, e: &ExportRow) {
        let r = &e.row;
        self.rows += 1;
        self.shard.push(i32::from(e.shard));
        self.source_table.push(&e.source_table);
        self.id.push(r.id);
        self.event_id.push(&r.event_id);
        self.match_id.push(r.match_id);
        self.version.push(r.version);
        self.event_type.push(&r.event_type);
        self.season_id.push(&r.season_id);
        self.player_a_id.push(r.player_a_id);
        self.player_b_id.push(r.player_b_id);
        self.gesture_a.push_opt(r.gesture_a.as_deref());
        self.gesture_b.push_opt(r.gesture_b.as_deref());
        self.winner_player_id.push_opt(r.winner_player_id);
        self.loser_player_id.push_opt(r.loser_player_id);
        self.outcome.push_opt(r.outcome.as_deref());
        self.deadline_at.push_opt(r.deadline_at);
        self.occurred_at.push(r.occurred_at);
    }
}

/// Writes Parquet through the column writers of the `parquet` crate
/// directly: its Arrow layer (arrow-array, -cast, -select, -ipc) was most of
/// the release build's time and only moved these rows through one more copy.
struct ParquetSink<W: Write + Send> {
    writer: parquet::file::writer::SerializedFileWriter<W>,
    group: RowGroup,
    group_rows: usize,
}

impl<W: Write + Send> ParquetSink<W> {
    fn new(out: W, group_rows: usize) -> Result<Self, HistoryError> {
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_size(group_rows)
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let writer = parquet::file::writer::SerializedFileWriter::new(
            out,
            Arc::new(parquet_schema()),
            Arc::new(props),
        )
        .map_err(parquet_err)?;
        Ok(ParquetSink {
            writer,
            group: RowGroup::default(),
            group_rows,
        })
    }

    fn flush_group(&mut self) -> Result<(), HistoryError> {
        use parquet::data_type::{ByteArrayType as Text, Int32Type as I32, Int64Type as I64};
        let mut g = std::mem::take(&mut self.group);
        if g.rows == 0 {
            return Ok(());
        }
        let mut rg = self.writer.next_row_group().map_err(parquet_err)?;
        column::<_, I32>(&mut rg, &g.shard.values, None)?;
        column::<_, Text>(&mut rg, &g.source_table.take(), None)?;
        column::<_, I64>(&mut rg, &g.id.values, None)?;
        column::<_, Text>(&mut rg, &g.event_id.take(), None)?;
        column::<_, I64>(&mut rg, &g.match_id.values, None)?;
        column::<_, I32>(&mut rg, &g.version.values, None)?;
        column::<_, Text>(&mut rg, &g.event_type.take(), None)?;
        column::<_, Text>(&mut rg, &g.season_id.take(), None)?;
        column::<_, I64>(&mut rg, &g.player_a_id.values, None)?;
        column::<_, I64>(&mut rg, &g.player_b_id.values, None)?;
        column::<_, Text>(&mut rg, &g.gesture_a.take(), Some(&g.gesture_a.defs))?;
        column::<_, Text>(&mut rg, &g.gesture_b.take(), Some(&g.gesture_b.defs))?;
        let (w, l) = (&g.winner_player_id, &g.loser_player_id);
        column::<_, I64>(&mut rg, &w.values, Some(&w.defs))?;
        column::<_, I64>(&mut rg, &l.values, Some(&l.defs))?;
        column::<_, Text>(&mut rg, &g.outcome.take(), Some(&g.outcome.defs))?;
        let d = &g.deadline_at;
        column::<_, I64>(&mut rg, &d.values, Some(&d.defs))?;
        column::<_, I64>(&mut rg, &g.occurred_at.values, None)?;
        rg.close().map_err(parquet_err)?;
        Ok(())
    }
}

impl<W: Write + Send> RowSink for ParquetSink<W> {
    fn write(&mut self, row: &ExportRow) -> Result<(), HistoryError> {
        self.group.push(row);
        if self.group.rows >= self.group_rows {
            self.flush_group()?;
        }
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> Result<(), HistoryError> {
        self.flush_group()?;
        self.writer.close().map_err(parquet_err)?;
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
pub fn export<W: Write + Send + 'static>(
    config: Arc<Config>,
    opts: ExportOptions,
    out: W,
    shutdown: CancellationToken,
) -> Pin<Box<dyn Future<Output = Result<ExportReport, HistoryError>>>> {
    export_dyn(config, opts, Box::new(out), shutdown)
}

/// The export behind one writer type and a boxed future. A future the
/// binary polls by its own type is compiled into the binary, in the release
/// build's last and serial step, once per writer type; boxed here, the
/// export and the Parquet writer are compiled once, with this crate.
#[inline(never)]
fn export_dyn(
    config: Arc<Config>,
    opts: ExportOptions,
    out: Box<dyn Write + Send>,
    shutdown: CancellationToken,
) -> Pin<Box<dyn Future<Output = Result<ExportReport, HistoryError>>>> {
    Box::pin(export_boxed(config, opts, out, shutdown))
}

async fn export_boxed(
    config: Arc<Config>,
    opts: ExportOptions,
    out: Box<dyn Write + Send>,
    shutdown: CancellationToken,
) -> Result<ExportReport, HistoryError> {
    let started = std::time::Instant::now();
    let store = EventStore::new(config.clone())?;
    let shards: Vec<ShardId> = opts
        .shards
        .clone()
        .unwrap_or_else(|| (0..config.shard_count).collect());
    let filter = HistoryFilter {
        season: opts.season,
        from: opts.from,
        to: opts.to,
        max_row_id: None,
    };
    let mut receivers = Vec::new();
    let mut sources = Vec::new();
    let mut tasks = Vec::new();
    for &shard in &shards {
        for (i, table) in store.event_tables(shard).await?.into_iter().enumerate() {
            sources.push(Source {
                shard,
                table: Arc::from(table.as_str()),
                table_index: i,
            });
            let (rx, task) = read_in_time_order(
                store.clone(),
                shard,
                table,
                filter.clone(),
                CHUNK_ROWS,
                CHANNEL_CHUNKS,
            );
            tasks.push(task);
            receivers.push(rx);
        }
    }
    let out = std::io::BufWriter::with_capacity(1 << 20, out);
    let mut sink: Box<dyn RowSink> = match opts.format {
        Format::Ndjson => Box::new(NdjsonSink(out)),
        Format::Csv => Box::new(CsvSink(csv::Writer::from_writer(out))),
        Format::Parquet => Box::new(ParquetSink::new(out, PARQUET_ROW_GROUP_ROWS)?),
    };
    // Each source: its current chunk (reversed, so pop takes the next row).
    let mut current: Vec<Vec<StoredRow>> = vec![Vec::new(); receivers.len()];
    let mut heap: BinaryHeap<Reverse<Head>> = BinaryHeap::new();
    async fn next_row(
        rx: &mut mpsc::Receiver<TimeOrderedChunk>,
        cur: &mut Vec<StoredRow>,
        source: &Source,
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
        Ok(cur.pop().map(|row| ExportRow {
            shard: source.shard,
            source_table: source.table.clone(),
            row,
            table_index: source.table_index,
        }))
    }
    for (i, rx) in receivers.iter_mut().enumerate() {
        if let Some(r) = next_row(rx, &mut current[i], &sources[i]).await? {
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
        if let Some(r) = next_row(&mut receivers[i], &mut current[i], &sources[i]).await? {
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

    fn row(i: i64) -> ExportRow {
        let decided = i % 3 != 0;
        let text = |s: &str| Some(Arc::<str>::from(s));
        ExportRow {
            shard: (i % 5) as ShardId,
            source_table: Arc::from(if i % 2 == 0 {
                "match_result_events"
            } else {
                "match_result_events_p1"
            }),
            row: StoredRow {
                id: i,
                event_id: format!("00000000-0000-0000-0000-{i:012}"),
                match_id: 1_000 + i / 4,
                version: (i % 4) as i32,
                event_type: Arc::from(if decided {
                    "MatchDecided"
                } else {
                    "MatchCreated"
                }),
                season_id: Arc::from("2026Q4"),
                player_a_id: 7,
                player_b_id: 8 + i,
                gesture_a: if decided { text("rock") } else { None },
                gesture_b: if decided { text("scissors") } else { None },
                winner_player_id: decided.then_some(7),
                loser_player_id: decided.then_some(8 + i),
                outcome: if decided { text("a_wins") } else { None },
                deadline_at: (!decided).then_some(1_790_000_000_000_000 + i),
                occurred_at: 1_790_000_000_123_456 + i * 1_000,
            },
            table_index: 0,
        }
    }

    /// The fields parquet's record reader gives for `e`.
    fn fields(e: &ExportRow) -> Vec<(String, parquet::record::Field)> {
        use parquet::record::Field;
        let r = &e.row;
        let s = |v: &str| Field::Str(v.to_string());
        let o = |v: Option<Field>| v.unwrap_or(Field::Null);
        let values = vec![
            Field::UShort(e.shard),
            s(&e.source_table),
            Field::Long(r.id),
            s(&r.event_id),
            Field::Long(r.match_id),
            Field::Int(r.version),
            s(&r.event_type),
            s(&r.season_id),
            Field::Long(r.player_a_id),
            Field::Long(r.player_b_id),
            o(r.gesture_a.as_deref().map(s)),
            o(r.gesture_b.as_deref().map(s)),
            o(r.winner_player_id.map(Field::Long)),
            o(r.loser_player_id.map(Field::Long)),
            o(r.outcome.as_deref().map(s)),
            o(r.deadline_at.map(Field::TimestampMicros)),
            Field::TimestampMicros(r.occurred_at),
        ];
        COLUMNS.iter().map(|c| c.to_string()).zip(values).collect()
    }

    #[test]
    fn parquet_reads_back_with_the_types_and_values_written() {
        use parquet::basic::{LogicalType, TimeUnit, Type as Physical};
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let rows: Vec<ExportRow> = (0..2_500).map(row).collect();
        let mut out = Vec::new();
        let mut sink = Box::new(ParquetSink::new(&mut out, 1_000).unwrap());
        for r in &rows {
            sink.write(r).unwrap();
        }
        sink.finish().unwrap();

        let reader = SerializedFileReader::new(bytes::Bytes::from(out)).unwrap();
        let meta = reader.metadata();
        let groups: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(groups, [1_000, 1_000, 500]);
        assert!(meta
            .row_groups()
            .iter()
            .flat_map(|g| g.columns())
            .all(|c| c.compression() == parquet::basic::Compression::SNAPPY));

        // The types the Arrow writer gave the export before: UInt16, Utf8,
        // Int64, Int32 and Timestamp(µs, "UTC"), NULL only where the table
        // allows it.
        let text = (Physical::BYTE_ARRAY, Some(LogicalType::String));
        let i64 = (Physical::INT64, None);
        let ts = (
            Physical::INT64,
            Some(LogicalType::Timestamp {
                is_adjusted_to_u_t_c: true,
                unit: TimeUnit::MICROS(Default::default()),
            }),
        );
        let u16 = (
            Physical::INT32,
            Some(LogicalType::Integer {
                bit_width: 16,
                is_signed: false,
            }),
        );
        let expected = [
            (u16, false),
            (text.clone(), false),
            (i64.clone(), false),
            (text.clone(), false),
            (i64.clone(), false),
            ((Physical::INT32, None), false),
            (text.clone(), false),
            (text.clone(), false),
            (i64.clone(), false),
            (i64.clone(), false),
            (text.clone(), true),
            (text.clone(), true),
            (i64.clone(), true),
            (i64, true),
            (text, true),
            (ts.clone(), true),
            (ts, false),
        ];
        let columns = meta.file_metadata().schema_descr().columns().to_vec();
        assert_eq!(columns.len(), COLUMNS.len());
        for ((col, name), ((physical, logical), nullable)) in
            columns.iter().zip(COLUMNS).zip(expected)
        {
            assert_eq!(col.name(), name);
            assert_eq!(col.physical_type(), physical, "{name}");
            assert_eq!(col.logical_type(), logical, "{name}");
            assert_eq!(col.self_type().is_optional(), nullable, "{name}");
        }

        let read: Vec<_> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| {
                r.unwrap()
                    .get_column_iter()
                    .map(|(n, f)| (n.clone(), f.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(read.len(), rows.len());
        for (got, want) in read.iter().zip(&rows) {
            assert_eq!(got, &fields(want));
        }
    }

    #[test]
    fn an_empty_parquet_export_is_a_valid_file() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let mut out = Vec::new();
        Box::new(ParquetSink::new(&mut out, 1_000).unwrap())
            .finish()
            .unwrap();
        let reader = SerializedFileReader::new(bytes::Bytes::from(out)).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
        assert_eq!(
            reader
                .metadata()
                .file_metadata()
                .schema_descr()
                .num_columns(),
            COLUMNS.len()
        );
    }
}
