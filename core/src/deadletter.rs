//! Dead-letter entries: what was rejected, where it came from, and why.
//!
//! Every component writes the same shape to `rps:deadletter` so an operator
//! sees one list (`rpsctl dlq list`), whatever rejected the entry.

use crate::time::Timestamp;

/// Which component put the entry there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    CdcReader,
    Projector,
    Compensator,
    /// A person's (or an operator policy's) decision recorded for audit,
    /// e.g. `rpsctl xa commit` / `sweep` (kind `xa_decision`).
    Operator,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::CdcReader => "cdc-reader",
            Origin::Projector => "projector",
            Origin::Compensator => "compensator",
            Origin::Operator => "operator",
        }
    }
}

/// One dead letter. `payload` is the offending data as JSON or as the
/// stream entry's fields; coordinates say where to find it at the source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeadLetter {
    pub origin: Option<Origin>,
    /// Stable low-cardinality code (`version_gap`, `update_on_event_table`, …).
    pub kind: String,
    /// Human-readable reason, with the values involved.
    pub reason: String,
    pub server: String,
    pub database: String,
    pub table: String,
    pub file: String,
    pub pos: u64,
    pub gtid: String,
    pub shard: Option<u16>,
    pub match_id: Option<i64>,
    pub event_id: String,
    /// Stream entry id, for entries rejected by the projector.
    pub stream_id: String,
    pub payload: String,
    pub at: Timestamp,
}

impl DeadLetter {
    /// Field/value pairs for XADD.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "origin",
                self.origin.map(Origin::as_str).unwrap_or("").to_string(),
            ),
            ("kind", self.kind.clone()),
            ("reason", self.reason.clone()),
            ("server", self.server.clone()),
            ("db", self.database.clone()),
            ("tbl", self.table.clone()),
            ("file", self.file.clone()),
            ("pos", self.pos.to_string()),
            ("gtid", self.gtid.clone()),
            (
                "shard",
                self.shard.map(|s| s.to_string()).unwrap_or_default(),
            ),
            (
                "mid",
                self.match_id.map(|s| s.to_string()).unwrap_or_default(),
            ),
            ("eid", self.event_id.clone()),
            ("stream_id", self.stream_id.clone()),
            ("payload", self.payload.clone()),
            ("at", self.at.as_micros().to_string()),
        ]
    }
}
