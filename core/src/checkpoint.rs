//! The reader's checkpoint: where a server's binlog was read up to. The
//! cdc-reader writes one per publish target (`keys.cdc_target_checkpoint`,
//! in the same atomic step as the items it covers) and one per server
//! (`keys.cdc_checkpoint`, after a batch's target steps: where a restart
//! resumes); status and recovery read them.
//!
//! It names the last committed transaction (GTID state of every domain, and
//! binlog file and end position for humans and lag) plus, when a large
//! transaction is being published in bounded batches, how many of its items
//! are already out, so a restart skips exactly those.

use crate::gtid::{Gtid, GtidParseError, GtidPosition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a bootstrap's commit sets a server checkpoint to until it is done
/// (followed by the generation it builds): a reader that meets it waits.
pub const BOOTSTRAP_FENCE: &str = "bootstrap-in-progress:";

/// Whether a stored server checkpoint is a bootstrap's fence
/// ([`BOOTSTRAP_FENCE`]) rather than a position: every reader of the key
/// meets it for the length of a bootstrap's commit.
pub fn is_bootstrap_fence(stored: &str) -> bool {
    stored.starts_with(BOOTSTRAP_FENCE)
}

/// A position to stream from, and the fence that guards writing the next one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Every committed transaction by GTID: MariaDB's last GTID of every
    /// domain, or MySQL's executed GTID set.
    pub gtid: GtidPosition,
    /// Binlog file and end position of the last committed transaction.
    pub file: String,
    pub pos: u64,
    /// Commit time of the last committed transaction (micros).
    pub commit_ts: i64,
    /// A transaction partly published: its GTID and the number of its row
    /// items (entries and dead letters, in binlog order) already written.
    pub inflight: Option<(Gtid, u64)>,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u32,
    gtid: String,
    file: String,
    pos: u64,
    #[serde(default)]
    cts: i64,
    #[serde(default)]
    inflight_gtid: Option<String>,
    #[serde(default)]
    inflight_rows: u64,
    /// Which reader run wrote it, so a zombie's compare-and-set can never
    /// match a value written by its successor, even at the same position.
    writer: String,
    seq: u64,
    /// Server checkpoints only: target name → the step number of the
    /// target's last publish step ([`Stamp::targets`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    targets: BTreeMap<String, u64>,
}

/// Who wrote a checkpoint and when, beside its position.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stamp {
    /// The reader run that wrote it.
    pub writer: String,
    /// The step number: it grows with every batch, across reader runs.
    pub seq: u64,
    /// In a server checkpoint, the step number of each target's last step:
    /// a target checkpoint found older than that lost writes (a Redis
    /// Cluster failover rolled its slot back), and the reader resumes from
    /// it instead.
    pub targets: BTreeMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("checkpoint is not valid: {0}")]
pub struct CheckpointError(pub String);

impl Checkpoint {
    /// How many of the first items of the group `gtid` what this checkpoint
    /// covers already holds: all of them (`u64::MAX`) when the group is in
    /// its GTID position, the published count when it is the group in
    /// flight, else none.
    pub fn items_out(&self, gtid: &Gtid) -> u64 {
        if self.gtid.includes(gtid) {
            return u64::MAX;
        }
        match &self.inflight {
            Some((g, n)) if g == gtid => *n,
            _ => 0,
        }
    }

    /// The JSON stored in Redis.
    pub fn encode(&self, writer: &str, seq: u64) -> String {
        self.encode_stamped(&Stamp {
            writer: writer.to_string(),
            seq,
            targets: BTreeMap::new(),
        })
    }

    pub fn encode_stamped(&self, stamp: &Stamp) -> String {
        let w = Wire {
            v: 1,
            gtid: self.gtid.to_string(),
            file: self.file.clone(),
            pos: self.pos,
            cts: self.commit_ts,
            inflight_gtid: self.inflight.as_ref().map(|(g, _)| g.to_string()),
            inflight_rows: self.inflight.as_ref().map(|(_, n)| *n).unwrap_or(0),
            writer: stamp.writer.clone(),
            seq: stamp.seq,
            targets: stamp.targets.clone(),
        };
        serde_json::to_string(&w).unwrap_or_default()
    }

    pub fn decode(s: &str) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::decode_stamped(s).map(|(c, _)| c)
    }

    pub fn decode_stamped(s: &str) -> Result<(Checkpoint, Stamp), CheckpointError> {
        let w: Wire = serde_json::from_str(s).map_err(|e| CheckpointError(e.to_string()))?;
        if w.v != 1 {
            return Err(CheckpointError(format!("unknown version {}", w.v)));
        }
        let gtid = w
            .gtid
            .parse()
            .map_err(|e: GtidParseError| CheckpointError(e.to_string()))?;
        let inflight = match w.inflight_gtid {
            Some(g) => Some((
                g.parse()
                    .map_err(|e: GtidParseError| CheckpointError(e.to_string()))?,
                w.inflight_rows,
            )),
            None => None,
        };
        let stamp = Stamp {
            writer: w.writer,
            seq: w.seq,
            targets: w.targets,
        };
        let ck = Checkpoint {
            gtid,
            file: w.file,
            pos: w.pos,
            commit_ts: w.cts,
            inflight,
        };
        Ok((ck, stamp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Checkpoint {
            gtid: "0-1-7,3-2-9".parse().unwrap(),
            file: "binlog.000003".into(),
            pos: 4711,
            commit_ts: 1_790_000_000_000_000,
            inflight: Some(("0-1-8".parse().unwrap(), 4096)),
        };
        let s = c.encode("w", 3);
        assert_eq!(Checkpoint::decode(&s).unwrap(), c);
        assert_ne!(s, c.encode("other-writer", 3));
        assert!(Checkpoint::decode("{}").is_err());
        let stamp = Stamp {
            writer: "w".into(),
            seq: 9,
            targets: [("3".to_string(), 8), ("dl".to_string(), 2)].into(),
        };
        let (back, back_stamp) = Checkpoint::decode_stamped(&c.encode_stamped(&stamp)).unwrap();
        assert_eq!((back, back_stamp), (c.clone(), stamp));
    }

    #[test]
    fn mysql_gtid_sets_round_trip() {
        let c = Checkpoint {
            gtid: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7-9:blue:1-3,01f95083-edd4-11f1-b50e-02fc00000001:1-3"
                .parse()
                .unwrap(),
            file: "binlog.000002".into(),
            pos: 99,
            commit_ts: 1,
            inflight: Some(("3e11fa47-71ca-11e1-9e33-c80aa9429562:blue:4".parse().unwrap(), 12)),
        };
        assert_eq!(Checkpoint::decode(&c.encode("w", 1)).unwrap(), c);
    }
}
