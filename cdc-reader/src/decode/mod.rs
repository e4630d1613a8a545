//! Decode: binlog events in, typed actions out (rows, commits with their
//! position, dead letters, heartbeats, rotations). No I/O here, so it can be
//! tested and measured without Redis; [`crate::reader`] applies the actions.
//!
//! mysql_common parses the framing, FORMAT_DESCRIPTION, ROTATE, TABLE_MAP
//! (with optional metadata), QUERY, MySQL's GTID events (plain and tagged)
//! and TRANSACTION_PAYLOAD; MariaDB's own GTID events (types 160–163) are
//! read from the raw bytes here because mysql_common does not know them,
//! and row images are decoded by [`table`], which is specialised for the
//! event table.
//!
//! A compressed MySQL transaction (`binlog_transaction_compression=ON`)
//! arrives as one TRANSACTION_PAYLOAD event, which mysql_async follows with
//! the events it holds, decompressed, each with `log_pos = 0`. The decoder
//! takes the commit position from the payload event and counts the inner
//! bytes against the payload's uncompressed size, because mysql_async yields
//! nothing (rather than an error) for a payload it cannot decompress.

pub mod ddl;
pub mod table;

#[cfg(test)]
mod proptests;

use mysql_async::binlog::events::{Event, GtidEvent, QueryEvent, RotateEvent, TableMapEvent};
use rps_core::config::is_event_table;
use rps_core::deadletter::{DeadLetter, Origin};
use rps_core::gtid::{Gtid, MariaDbGtid, MySqlGtid};
use rps_core::xa::{parse_xa_statement, XaStatement, Xid};
use rps_core::{Config, SourcePosition, StreamEvent, Timestamp};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use table::{RowCursor, RowError, TableLayout};

/// Binlog event type codes used here (MySQL's, plus MariaDB's 160–163).
/// <https://mariadb.com/kb/en/2-binlog-event-header/>,
/// MySQL's `libs/mysql/binlog/event/binlog_event.h`.
pub mod event_type {
    pub const QUERY: u8 = 2;
    pub const ROTATE: u8 = 4;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const WRITE_ROWS_V1: u8 = 23;
    pub const UPDATE_ROWS_V1: u8 = 24;
    pub const DELETE_ROWS_V1: u8 = 25;
    pub const HEARTBEAT: u8 = 27;
    pub const WRITE_ROWS_V2: u8 = 30;
    pub const UPDATE_ROWS_V2: u8 = 31;
    pub const DELETE_ROWS_V2: u8 = 32;
    pub const MYSQL_GTID: u8 = 33;
    pub const MYSQL_ANONYMOUS_GTID: u8 = 34;
    pub const MYSQL_PREVIOUS_GTIDS: u8 = 35;
    pub const XA_PREPARE: u8 = 38;
    pub const PARTIAL_UPDATE_ROWS: u8 = 39;
    pub const TRANSACTION_PAYLOAD: u8 = 40;
    pub const HEARTBEAT_V2: u8 = 41;
    pub const MYSQL_GTID_TAGGED: u8 = 42;
    pub const MARIADB_ANNOTATE_ROWS: u8 = 160;
    pub const MARIADB_BINLOG_CHECKPOINT: u8 = 161;
    pub const MARIADB_GTID: u8 = 162;
    pub const MARIADB_GTID_LIST: u8 = 163;
}

/// MariaDB GTID event flags
/// (<https://mariadb.com/kb/en/gtid_event/>): the transaction is a single
/// statement without BEGIN/COMMIT (DDL, non-transactional engines); a group
/// commit id follows; the group is the prepare part of an XA branch, whose
/// xid follows; the group decides an XA branch.
const FL_STANDALONE: u8 = 1;
const FL_GROUP_COMMIT_ID: u8 = 2;
const FL_PREPARED_XA: u8 = 64;
const FL_COMPLETED_XA: u8 = 128;

/// Dead-letter kinds the reader produces (low-cardinality metric label too).
pub mod kind {
    pub const UPDATE: &str = "update_on_event_table";
    pub const DELETE: &str = "delete_on_event_table";
    pub const DDL: &str = "ddl_on_event_table";
    pub const BAD_ROW: &str = "bad_row";
    /// A group ended with ROLLBACK after part of it was published (it was
    /// larger than one batch): those rows are not in the tables.
    pub const ROLLED_BACK: &str = "rolled_back_after_publish";
    pub const ALL: [&str; 5] = [UPDATE, DELETE, DDL, BAD_ROW, ROLLED_BACK];
}

/// What a binlog event means to the reader.
// Rows dominate the traffic; boxing them would cost an allocation per row.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A transaction starts (a GTID event; MySQL's anonymous GTID event,
    /// with GTIDs off, has none).
    Begin { gtid: Option<Gtid>, ts: Timestamp },
    /// A row of an event table, decoded.
    Row(StreamEvent),
    /// Input that does not fit: goes to the dead letter.
    Dead(DeadLetter),
    /// The transaction is an XA branch: its rows and dead letters belong to
    /// `xid` and count only if it commits.
    XaStart { xid: Xid },
    /// The transaction committed; `pos` is the end of its last event. For an
    /// XA branch this is a one-phase commit.
    Commit { pos: u64, ts: Timestamp },
    /// The XA branch of this group is prepared (ends the group): what it
    /// holds waits for a later [`Action::XaDecision`].
    Prepare { xid: Xid, pos: u64, ts: Timestamp },
    /// A group whose one statement commits or rolls back a prepared branch.
    XaDecision {
        xid: Xid,
        commit: bool,
        pos: u64,
        ts: Timestamp,
    },
    /// The group ends with ROLLBACK (it touched a non-transactional table):
    /// nothing of it happened.
    Rollback { pos: u64, ts: Timestamp },
    /// The server is idle at `pos` (no transaction open).
    Heartbeat { pos: u64 },
    /// Reading goes on in `file`.
    Rotate { file: String },
}

impl Action {
    /// Entries and dead letters count as the row items of a transaction.
    pub fn is_item(&self) -> bool {
        matches!(self, Action::Row(_) | Action::Dead(_))
    }
}

/// A protocol-level failure: an event that cannot be framed or parsed.
#[derive(Debug, thiserror::Error)]
#[error("binlog event of type {event_type} at {file}:{pos} cannot be parsed: {message}")]
pub struct DecodeError {
    pub event_type: u8,
    pub file: String,
    pub pos: u64,
    pub message: String,
}

struct Trx {
    gtid_text: String,
    /// The transaction is one statement that commits by itself (DDL):
    /// MariaDB says so in a GTID flag; a MySQL transaction is one until its
    /// `BEGIN` arrives.
    standalone: bool,
    /// The group is an XA branch (its XaStart went out).
    xa: bool,
    ts: Timestamp,
}

/// A TRANSACTION_PAYLOAD being unpacked: where it ends in the binlog and
/// how many of its uncompressed bytes have arrived as inner events.
struct Payload {
    pos: u64,
    expected: u64,
    seen: u64,
}

/// The per-connection decoder of one server's binlog.
pub struct Decoder {
    config: Arc<Config>,
    server: String,
    file: String,
    seen_fde: bool,
    tables: HashMap<u64, (Vec<u8>, Option<Arc<TableLayout>>)>,
    trx: Option<Trx>,
    payload: Option<Payload>,
}

/// Beyond this many cached table maps the cache is rebuilt from scratch
/// (table ids grow with every new table definition on the server).
const TABLE_CACHE_MAX: usize = 4096;

impl Decoder {
    /// `file` is where the stream starts (may be empty until the first ROTATE).
    pub fn new(config: Arc<Config>, server: &str, file: &str) -> Decoder {
        Decoder {
            config,
            server: server.to_string(),
            file: file.to_string(),
            seen_fde: false,
            tables: HashMap::new(),
            trx: None,
            payload: None,
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// Whether a transaction is open (begun, not committed).
    pub fn in_transaction(&self) -> bool {
        self.trx.is_some()
    }

    fn err(&self, ev: &Event, e: impl std::fmt::Display) -> DecodeError {
        DecodeError {
            event_type: ev.header().event_type_raw(),
            file: self.file.clone(),
            pos: u64::from(ev.header().log_pos()),
            message: e.to_string(),
        }
    }

    /// Decodes one event, appending what it means to `out`.
    pub fn decode(&mut self, ev: &Event, out: &mut Vec<Action>) -> Result<(), DecodeError> {
        use event_type::*;
        let h = ev.header();
        let mut pos = u64::from(h.log_pos());
        if let Some(p) = &mut self.payload {
            if pos == 0 {
                // An event from inside the payload: it ends where the payload does.
                p.seen += u64::from(h.event_size());
                pos = p.pos;
            } else {
                let (expected, seen) = (p.expected, p.seen);
                self.payload = None;
                if seen != expected {
                    return Err(self.err(
                        ev,
                        format!(
                            "the compressed transaction before this event yielded {seen} of its \
                             {expected} bytes (it could not be decompressed or parsed)"
                        ),
                    ));
                }
            }
        }
        match h.event_type_raw() {
            FORMAT_DESCRIPTION => self.seen_fde = true,
            ROTATE => {
                let r: RotateEvent<'_> = ev.read_event().map_err(|e| self.err(ev, e))?;
                let mut name = r.name_raw();
                // Before the FORMAT_DESCRIPTION event the parser does not know
                // the checksum algorithm yet, so the first fake ROTATE may
                // still carry its 4 checksum bytes at the end of the name.
                // Whether it does is what the server sent, not a flavor rule.
                // The checksum may also match bytes of the position field
                // when the name is shorter than it.
                if !self.seen_fde && name.len() >= 4 && ends_with_own_crc32(ev) {
                    name = &name[..name.len() - 4];
                }
                let name = String::from_utf8_lossy(name).into_owned();
                if name != self.file {
                    self.file = name.clone();
                    out.push(Action::Rotate { file: name });
                }
            }
            MARIADB_GTID => {
                let d = ev.data();
                if d.len() < 13 {
                    return Err(self.err(ev, "GTID event shorter than 13 bytes"));
                }
                let seq = u64::from_le_bytes(d[0..8].try_into().unwrap_or_default());
                let domain = u32::from_le_bytes(d[8..12].try_into().unwrap_or_default());
                let gtid = Gtid::MariaDb(MariaDbGtid {
                    domain,
                    server: h.server_id(),
                    seq,
                });
                let ts = Timestamp(i64::from(h.timestamp()) * 1_000_000);
                let flags = d[12];
                // A decision group is one statement, ended by that statement.
                let standalone = flags & (FL_STANDALONE | FL_COMPLETED_XA) != 0;
                self.begin(Some(gtid), standalone, ts, out);
                if flags & FL_PREPARED_XA != 0 {
                    let at = 13
                        + if flags & FL_GROUP_COMMIT_ID != 0 {
                            8
                        } else {
                            0
                        };
                    let xid = d.get(at..at + 6).and_then(|x| {
                        let fmt = i32::from_le_bytes([x[0], x[1], x[2], x[3]]);
                        Xid::from_parts(
                            i64::from(fmt),
                            usize::from(x[4]),
                            usize::from(x[5]),
                            d.get(at + 6..)?,
                        )
                    });
                    let xid = xid.ok_or_else(|| {
                        self.err(ev, "GTID event of an XA prepare without a valid xid")
                    })?;
                    if let Some(t) = &mut self.trx {
                        t.xa = true;
                    }
                    out.push(Action::XaStart { xid });
                }
            }
            MYSQL_GTID | MYSQL_GTID_TAGGED => {
                let g: GtidEvent = ev.read_event().map_err(|e| self.err(ev, e))?;
                let gtid = Gtid::MySql(MySqlGtid {
                    sid: uuid::Uuid::from_bytes(g.sid()),
                    tag: g.tag().map(|t| Arc::from(t.as_str().to_ascii_lowercase())),
                    gno: g.gno(),
                });
                // Microseconds, when the server writes them (5.7.? and later).
                let ts = match g.immediate_commit_timestamp() {
                    0 => Timestamp(i64::from(h.timestamp()) * 1_000_000),
                    us => Timestamp(us as i64),
                };
                self.begin(Some(gtid), true, ts, out);
            }
            MYSQL_ANONYMOUS_GTID => {
                let ts = Timestamp(i64::from(h.timestamp()) * 1_000_000);
                self.begin(None, true, ts, out);
            }
            TRANSACTION_PAYLOAD => {
                let expected = payload_uncompressed_size(ev.data()).ok_or_else(|| {
                    self.err(ev, "TRANSACTION_PAYLOAD header is malformed or incomplete")
                })?;
                self.payload = Some(Payload {
                    pos,
                    expected,
                    seen: 0,
                });
            }
            XID => {
                self.payload_complete(ev)?;
                self.commit(pos, out)
            }
            XA_PREPARE => {
                self.payload_complete(ev)?;
                // one_phase (1), formatID (4), gtrid_length (4),
                // bqual_length (4), data: the same on both flavors.
                let d = ev.data();
                let xid = d.get(..13).and_then(|x| {
                    let u32_at =
                        |i: usize| u32::from_le_bytes([x[i], x[i + 1], x[i + 2], x[i + 3]]);
                    Xid::from_parts(
                        i64::from(u32_at(1) as i32),
                        u32_at(5) as usize,
                        u32_at(9) as usize,
                        d.get(13..)?,
                    )
                });
                let xid =
                    xid.ok_or_else(|| self.err(ev, "XA_PREPARE event without a valid xid"))?;
                if d[0] != 0 {
                    // XA COMMIT … ONE PHASE: a commit like any other.
                    self.commit(pos, out);
                } else {
                    let ts = self.trx.take().map(|t| t.ts).unwrap_or_default();
                    out.push(Action::Prepare { xid, pos, ts });
                }
            }
            QUERY => {
                let q: QueryEvent<'_> = ev.read_event().map_err(|e| self.err(ev, e))?;
                let sql = q.query();
                let head = sql.trim_start();
                if head.eq_ignore_ascii_case("BEGIN") {
                    if let Some(t) = &mut self.trx {
                        t.standalone = false;
                    }
                    return Ok(());
                }
                if head.eq_ignore_ascii_case("COMMIT") {
                    self.commit(pos, out);
                    return Ok(());
                }
                if head.eq_ignore_ascii_case("ROLLBACK") {
                    let ts = self.trx.take().map(|t| t.ts).unwrap_or_default();
                    out.push(Action::Rollback { pos, ts });
                    return Ok(());
                }
                // Only an ASCII `XA ` head is handed on: the parser slices
                // the first three bytes, which may split a character.
                let xa_head = head
                    .as_bytes()
                    .get(..3)
                    .is_some_and(|b| b.eq_ignore_ascii_case(b"XA "));
                if let Some(xa) = xa_head.then(|| parse_xa_statement(head)).flatten() {
                    let (verb, xid) = xa.map_err(|e| self.err(ev, e))?;
                    match verb {
                        XaStatement::Start => {
                            // MySQL marks the branch with the statement;
                            // MariaDB already did in the GTID event.
                            if let Some(t) = &mut self.trx {
                                t.standalone = false;
                                if !t.xa {
                                    out.push(Action::XaStart { xid });
                                }
                                t.xa = true;
                            }
                        }
                        XaStatement::End | XaStatement::Prepare => {}
                        XaStatement::Commit | XaStatement::Rollback => {
                            let ts = self.trx.take().map(|t| t.ts).unwrap_or_default();
                            out.push(Action::XaDecision {
                                xid,
                                commit: verb == XaStatement::Commit,
                                pos,
                                ts,
                            });
                        }
                    }
                    return Ok(());
                }
                self.check_ddl(&q.schema(), &sql, pos, out);
                if self.trx.as_ref().is_some_and(|t| t.standalone) {
                    self.commit(pos, out);
                }
            }
            TABLE_MAP => {
                let table_id = table_id(ev.data());
                if let Some((raw, _)) = self.tables.get(&table_id) {
                    if raw.as_slice() == ev.data() {
                        return Ok(());
                    }
                }
                let tme: TableMapEvent<'_> = ev.read_event().map_err(|e| self.err(ev, e))?;
                let db = tme.database_name();
                let tbl = tme.table_name();
                let shard = self
                    .config
                    .shard_of_database(&db)
                    .filter(|_| is_event_table(&tbl));
                let layout = shard.map(|s| Arc::new(TableLayout::new(&tme, ev.data(), Some(s))));
                if self.tables.len() >= TABLE_CACHE_MAX {
                    self.tables.clear();
                }
                self.tables
                    .insert(tme.table_id(), (ev.data().to_vec(), layout));
            }
            t @ (WRITE_ROWS_V1 | UPDATE_ROWS_V1 | DELETE_ROWS_V1 | WRITE_ROWS_V2
            | UPDATE_ROWS_V2 | DELETE_ROWS_V2) => self.rows(ev, t, pos, out)?,
            PARTIAL_UPDATE_ROWS => self.partial_update(ev, pos, out),
            HEARTBEAT | HEARTBEAT_V2 if self.trx.is_none() => out.push(Action::Heartbeat { pos }),
            _ => {}
        }
        Ok(())
    }

    fn begin(
        &mut self,
        gtid: Option<Gtid>,
        standalone: bool,
        ts: Timestamp,
        out: &mut Vec<Action>,
    ) {
        self.trx = Some(Trx {
            gtid_text: gtid.as_ref().map(Gtid::to_string).unwrap_or_default(),
            standalone,
            xa: false,
            ts,
        });
        out.push(Action::Begin { gtid, ts });
    }

    /// MySQL's PARTIAL_UPDATE_ROWS_EVENT (`binlog_row_value_options =
    /// PARTIAL_JSON`): an UPDATE whose after-image holds JSON diffs. It is a
    /// dead letter like any UPDATE on the event table; its images travel as
    /// bytes, since the diffs are not rows.
    fn partial_update(&mut self, ev: &Event, pos: u64, out: &mut Vec<Action>) {
        let d = ev.data();
        let Some((_, Some(layout))) = self.tables.get(&table_id(d)) else {
            return;
        };
        let layout = layout.clone();
        let reason = "UPDATE (partial JSON) on an append-only event table".to_string();
        self.dead_bytes(kind::UPDATE, &layout, reason, d, pos, out);
    }

    /// A group's last event: a compressed payload it ends must have yielded
    /// every byte.
    fn payload_complete(&mut self, ev: &Event) -> Result<(), DecodeError> {
        if let Some(p) = self.payload.take() {
            if p.seen != p.expected {
                return Err(self.err(
                    ev,
                    format!(
                        "the compressed transaction ending at {} yielded {} of its {} bytes",
                        p.pos, p.seen, p.expected
                    ),
                ));
            }
        }
        Ok(())
    }

    fn commit(&mut self, pos: u64, out: &mut Vec<Action>) {
        let ts = self.trx.take().map(|t| t.ts).unwrap_or_default();
        out.push(Action::Commit { pos, ts });
    }

    fn dead(
        &self,
        kind: &str,
        reason: String,
        layout_db: &str,
        table: &str,
        pos: u64,
        payload: String,
    ) -> DeadLetter {
        DeadLetter {
            origin: Some(Origin::CdcReader),
            kind: kind.to_string(),
            reason,
            server: self.server.clone(),
            database: layout_db.to_string(),
            table: table.to_string(),
            file: self.file.clone(),
            pos,
            gtid: self
                .trx
                .as_ref()
                .map(|t| t.gtid_text.clone())
                .unwrap_or_default(),
            shard: self.config.shard_of_database(layout_db),
            payload,
            at: Timestamp::now(),
            ..DeadLetter::default()
        }
    }

    fn check_ddl(&self, schema: &str, sql: &str, pos: u64, out: &mut Vec<Action>) {
        let Some(target) = ddl::ddl_target(sql) else {
            return;
        };
        let mut hit: Option<(String, String)> = None;
        if let Some(db) = &target.database {
            if self.config.shard_of_database(db).is_some() {
                hit = Some((db.clone(), String::new()));
            }
        }
        for (db, tbl) in &target.tables {
            let db = db.as_deref().unwrap_or(schema);
            if self.config.shard_of_database(db).is_some() && is_event_table(tbl) {
                hit = Some((db.to_string(), tbl.clone()));
                break;
            }
        }
        if let Some((db, tbl)) = hit {
            let reason = format!(
                "{} on an append-only event table: the table's rows may no longer match what was published",
                target.verb
            );
            let payload = json!({ "query": sql }).to_string();
            out.push(Action::Dead(self.dead(
                kind::DDL,
                reason,
                &db,
                &tbl,
                pos,
                payload,
            )));
        }
    }

    fn rows(
        &mut self,
        ev: &Event,
        t: u8,
        pos: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), DecodeError> {
        use event_type::*;
        let d = ev.data();
        let table_id = table_id(d);
        let Some((_, layout)) = self.tables.get(&table_id) else {
            return Err(self.err(ev, format!("rows event for unknown table id {table_id}")));
        };
        let Some(layout) = layout.clone() else {
            return Ok(()); // not an event table of ours
        };
        let mut p = 8usize;
        if matches!(t, WRITE_ROWS_V2 | UPDATE_ROWS_V2 | DELETE_ROWS_V2) {
            let extra = d
                .get(p..p + 2)
                .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
                .ok_or_else(|| self.err(ev, "truncated rows header"))?;
            p += extra.max(2);
        }
        let (ncols, used) = lenenc(d.get(p..).unwrap_or_default())
            .ok_or_else(|| self.err(ev, "truncated column count"))?;
        p += used;
        let ncols = ncols as usize;
        let bm_len = ncols.div_ceil(8);
        let bitmap = |p: usize| -> Option<Vec<bool>> {
            let b = d.get(p..p + bm_len)?;
            Some((0..ncols).map(|i| b[i / 8] & (1 << (i % 8)) != 0).collect())
        };
        let before = bitmap(p).ok_or_else(|| self.err(ev, "truncated column bitmap"))?;
        p += bm_len;
        let is_update = matches!(t, UPDATE_ROWS_V1 | UPDATE_ROWS_V2);
        let after = if is_update {
            let a = bitmap(p).ok_or_else(|| self.err(ev, "truncated column bitmap"))?;
            p += bm_len;
            a
        } else {
            before.clone()
        };
        let body = &d[p.min(d.len())..];
        if layout.kinds.as_ref().is_ok_and(|k| k.len() != ncols) {
            let reason = format!(
                "rows event has {ncols} columns, table map has {}",
                layout.names.len()
            );
            let payload = json!({ "hex": hex(body) }).to_string();
            out.push(self.dead_row(kind::BAD_ROW, reason, &layout, pos, payload));
            return Ok(());
        }
        // A row image of no columns takes no bytes: the body could never be
        // split into rows, and reading on would never end.
        let empty_images = match t {
            WRITE_ROWS_V1 | WRITE_ROWS_V2 => !after.contains(&true),
            UPDATE_ROWS_V1 | UPDATE_ROWS_V2 => !before.contains(&true) && !after.contains(&true),
            _ => !before.contains(&true),
        };
        if empty_images && !body.is_empty() {
            let reason = "rows event names no columns, yet carries row bytes".to_string();
            self.malformed(&layout, reason, body, pos, out);
            return Ok(());
        }
        let mut cur = RowCursor::new(body);
        while !cur.is_empty() {
            let item = match t {
                WRITE_ROWS_V1 | WRITE_ROWS_V2 => {
                    self.inserted_row(&mut cur, &layout, &after, pos, out)
                }
                UPDATE_ROWS_V1 | UPDATE_ROWS_V2 => self
                    .updated_row(&mut cur, &layout, &before, &after, pos)
                    .map(|a| out.push(a)),
                _ => self
                    .deleted_row(&mut cur, &layout, &before, pos)
                    .map(|a| out.push(a)),
            };
            match item {
                Ok(()) => {}
                Err(reason) => {
                    // The rest cannot be split into rows.
                    self.malformed(&layout, reason, body, pos, out);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// An inserted row: an entry, or a dead letter when it does not fit the
    /// model; `Err` when the images cannot be split any further. It pushes
    /// the entry itself: rows are the hot path, and the action is large.
    fn inserted_row(
        &self,
        cur: &mut RowCursor<'_>,
        layout: &TableLayout,
        columns: &[bool],
        pos: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        let mut probe = cur.clone();
        match cur.next_event(layout, columns) {
            Ok(event) => {
                let trx = self.trx.as_ref();
                out.push(Action::Row(StreamEvent {
                    shard: layout.shard.unwrap_or_default(),
                    event,
                    source: SourcePosition {
                        server: self.server.clone(),
                        database: layout.database.clone(),
                        table: layout.table.clone(),
                        file: self.file.clone(),
                        pos,
                        gtid: trx.map(|t| t.gtid_text.clone()).unwrap_or_default(),
                        commit_ts: trx.map(|t| t.ts).unwrap_or_default(),
                    },
                }));
                Ok(())
            }
            Err(RowError::Model(reason)) => {
                let payload = probe
                    .next_json(layout, columns)
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                out.push(self.dead_row(kind::BAD_ROW, reason, layout, pos, payload));
                Ok(())
            }
            Err(RowError::Malformed(reason)) => Err(reason),
        }
    }

    /// An UPDATE of an event table: a dead letter with both images.
    fn updated_row(
        &self,
        cur: &mut RowCursor<'_>,
        layout: &TableLayout,
        before: &[bool],
        after: &[bool],
        pos: u64,
    ) -> Result<Action, String> {
        let images = cur
            .next_json(layout, before)
            .and_then(|b| Ok((b, cur.next_json(layout, after)?)));
        match images {
            Ok((b, a)) => {
                let payload = json!({ "before": b, "after": a }).to_string();
                let reason = "UPDATE on an append-only event table".to_string();
                Ok(self.dead_row(kind::UPDATE, reason, layout, pos, payload))
            }
            Err(RowError::Malformed(r) | RowError::Model(r)) => Err(r),
        }
    }

    /// A DELETE from an event table: a dead letter with the image.
    fn deleted_row(
        &self,
        cur: &mut RowCursor<'_>,
        layout: &TableLayout,
        before: &[bool],
        pos: u64,
    ) -> Result<Action, String> {
        match cur.next_json(layout, before) {
            Ok(b) => {
                let payload = json!({ "before": b }).to_string();
                let reason = "DELETE on an append-only event table".to_string();
                Ok(self.dead_row(kind::DELETE, reason, layout, pos, payload))
            }
            Err(RowError::Malformed(r) | RowError::Model(r)) => Err(r),
        }
    }

    /// A dead letter about a row of `layout`'s table.
    fn dead_row(
        &self,
        kind: &str,
        reason: String,
        layout: &TableLayout,
        pos: u64,
        payload: String,
    ) -> Action {
        Action::Dead(self.dead(kind, reason, &layout.database, &layout.table, pos, payload))
    }

    /// The rest of a rows event cannot be split into rows: one dead letter
    /// carries its bytes, so nothing is dropped silently.
    fn malformed(
        &self,
        layout: &TableLayout,
        reason: String,
        body: &[u8],
        pos: u64,
        out: &mut Vec<Action>,
    ) {
        self.dead_bytes(kind::BAD_ROW, layout, reason, body, pos, out);
    }

    /// A dead letter whose payload is the event's bytes, for input that
    /// cannot be split into rows.
    fn dead_bytes(
        &self,
        kind: &str,
        layout: &TableLayout,
        reason: String,
        bytes: &[u8],
        pos: u64,
        out: &mut Vec<Action>,
    ) {
        let payload = json!({ "hex": hex(bytes) }).to_string();
        out.push(self.dead_row(kind, reason, layout, pos, payload));
    }
}

/// Whether the event's last 4 data bytes are the CRC32 of the event before
/// them: the checksum the parser has not stripped because it arrived before
/// the FORMAT_DESCRIPTION event that announces it.
fn ends_with_own_crc32(ev: &Event) -> bool {
    let d = ev.data();
    if d.len() < 4 {
        return false;
    }
    let h = ev.header();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h.timestamp().to_le_bytes());
    crc.update(&[h.event_type_raw()]);
    crc.update(&h.server_id().to_le_bytes());
    crc.update(&h.event_size().to_le_bytes());
    crc.update(&h.log_pos().to_le_bytes());
    crc.update(&h.flags_raw().to_le_bytes());
    crc.update(&d[..d.len() - 4]);
    crc.finalize().to_le_bytes() == d[d.len() - 4..]
}

fn table_id(d: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if d.len() >= 6 {
        b[..6].copy_from_slice(&d[..6]);
    }
    u64::from_le_bytes(b)
}

/// The uncompressed size a TRANSACTION_PAYLOAD header announces. Read
/// here rather than by mysql_common, whose parser slices past the end of
/// a header field that claims more bytes than the event has, and unwraps
/// an unknown compression type.
///
/// The header is fields of (type, length, value), each a length-encoded
/// integer, up to the end mark (type 0); the payload's size, its
/// compression and its uncompressed size are fields 1, 2 and 3.
fn payload_uncompressed_size(d: &[u8]) -> Option<u64> {
    const END: u64 = 0;
    const PAYLOAD_SIZE: u64 = 1;
    const COMPRESSION: u64 = 2;
    const UNCOMPRESSED_SIZE: u64 = 3;
    let mut rest = d;
    let (mut size, mut compression, mut uncompressed) = (None, false, 0);
    loop {
        let (field, used) = lenenc(rest)?;
        rest = &rest[used..];
        if field == END {
            break;
        }
        let (len, used) = lenenc(rest)?;
        let len = usize::try_from(len).ok()?;
        let value = rest.get(used..)?.get(..len)?;
        rest = &rest[used + len..];
        let int = || lenenc(value).map(|(v, _)| v);
        match field {
            PAYLOAD_SIZE => size = Some(int()?),
            COMPRESSION => compression = true,
            UNCOMPRESSED_SIZE => uncompressed = int()?,
            _ => {}
        }
    }
    let payload_fits = usize::try_from(size?).is_ok_and(|s| s <= rest.len());
    (compression && payload_fits).then_some(uncompressed)
}

/// MySQL length-encoded integer: value and bytes used.
fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let n = match first {
        0..=250 => return Some((u64::from(first), 1)),
        252 => 2,
        253 => 3,
        254 => 8,
        _ => return None,
    };
    let bytes = b.get(1..1 + n)?;
    let v = bytes
        .iter()
        .rev()
        .fold(0u64, |a, x| (a << 8) | u64::from(*x));
    Some((v, 1 + n))
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len().min(4096) * 2);
    for x in b.iter().take(4096) {
        let _ = write!(s, "{x:02x}");
    }
    s
}
