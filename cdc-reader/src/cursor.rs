//! The reader's place in one server's binlog: the last committed position,
//! the group being read, and the batch being filled, with one method per
//! decoded [`Action`] and one flush policy.
//!
//! [`crate::reader::stream`] feeds it events and decides *when* to flush
//! (socket dry, batch old); this type decides *what* a flush writes: the
//! batch together with the checkpoint that covers exactly what is in it.

use crate::checkpoint::Checkpoint;
use crate::decode::Action;
use crate::error::Transient;
use crate::metrics as m;
use crate::publish::{Batch, BatchMark, Publisher, RELEASE_CHUNK};
use crate::xa::{Release, XaBranches};
use rps_core::deadletter::{DeadLetter, Origin};
use rps_core::gtid::Gtid;
use rps_core::keys::PublishTarget;
use rps_core::Timestamp;
use std::time::Instant;
use tokio::sync::watch;
use tracing::{error, info};

/// A batch is flushed at this size, whatever `cdc.batch_rows` says, so the
/// reader's memory stays bounded by bytes, not only by rows.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// The group (transaction) being read.
struct Group {
    gtid: Option<Gtid>,
    /// Row items (entries and dead letters) seen so far, skipped ones included.
    items: u64,
    /// The same by target ([`PublishTarget::index`]).
    items_by: Vec<u64>,
    /// By target: how many of its first items an earlier run already
    /// published (`u64::MAX`: all of them).
    skip_by: Vec<u64>,
    /// Where the group's items start in the batch being filled.
    mark: BatchMark,
    /// Some of its items went out with an earlier batch.
    spilled: bool,
}

pub struct Cursor {
    publisher: Publisher,
    batch: Batch,
    xa: XaBranches,
    /// Everything up to the last group end; `inflight` is always None here.
    committed: Checkpoint,
    /// Target checkpoints past the start ([`crate::publish::Resume::ahead`]),
    /// until the groups they hold are read again.
    ahead: Vec<(usize, Checkpoint)>,
    /// The dead letters' target index.
    dead_letters: usize,
    group: Group,
    /// A group ended since the last flush: the checkpoint has moved.
    dirty: bool,
    last_flush: Instant,
    batch_rows: u64,
    server: String,
    labels: [(&'static str, String); 1],
    lag_tx: watch::Sender<(String, u64)>,
}

impl Cursor {
    pub fn new(
        publisher: Publisher,
        xa: XaBranches,
        start: &Checkpoint,
        ahead: Vec<(usize, Checkpoint)>,
        batch_rows: usize,
        server: &str,
        lag_tx: watch::Sender<(String, u64)>,
    ) -> Cursor {
        let batch = Batch::default();
        let targets = publisher.target_count();
        let dead_letters = PublishTarget::DeadLetters.index(publisher.shard_count());
        Cursor {
            group: Group {
                gtid: None,
                items: 0,
                items_by: vec![0; targets],
                skip_by: vec![0; targets],
                mark: batch.mark(),
                spilled: false,
            },
            ahead,
            dead_letters,
            publisher,
            batch,
            xa,
            committed: Checkpoint {
                inflight: None,
                ..start.clone()
            },
            dirty: false,
            last_flush: Instant::now(),
            batch_rows: batch_rows.max(1) as u64,
            server: server.to_string(),
            labels: [("server", server.to_string())],
            lag_tx,
        }
    }

    /// Something waits to be written: items, or a checkpoint that moved.
    pub fn pending(&self) -> bool {
        self.dirty || !self.batch.is_empty()
    }

    pub fn since_flush(&self) -> std::time::Duration {
        self.last_flush.elapsed()
    }

    pub async fn quit(self) {
        self.publisher.quit().await;
    }

    /// Applies one decoded action; `file` is the binlog file it was read in.
    pub async fn apply(&mut self, action: Action, file: &str) -> Result<(), Transient> {
        match action {
            Action::Begin { gtid, .. } => self.begin(gtid),
            Action::XaStart { xid } => self.xa.start(&self.batch, xid),
            Action::Row(ev) => {
                let publish = self
                    .next_item(PublishTarget::Shard(ev.shard).index(self.publisher.shard_count()));
                if self.xa.in_branch() {
                    self.xa
                        .hold_row(&self.publisher, &mut self.batch, &ev, publish);
                } else if publish {
                    self.publisher.push_entry(&mut self.batch, &ev);
                }
            }
            Action::Dead(dl) => {
                let publish = self.next_item(self.dead_letters);
                if self.xa.in_branch() {
                    self.xa
                        .hold_dead(&self.publisher, &mut self.batch, &dl, publish);
                } else if publish {
                    self.publisher.push_dead(&mut self.batch, &dl);
                }
            }
            Action::Commit { pos, ts } => {
                if self.xa.in_branch() {
                    let release = self.xa.commit_one_phase(&self.publisher, &mut self.batch);
                    self.release_in_steps(release, true).await?;
                }
                self.end_group(file, pos, ts);
            }
            Action::Prepare { xid, pos, ts } => {
                let gtid = self
                    .group
                    .gtid
                    .as_ref()
                    .map(Gtid::to_string)
                    .unwrap_or_default();
                self.xa.prepare(
                    &self.publisher,
                    &mut self.batch,
                    xid,
                    (&gtid, file, pos),
                    ts,
                );
                self.end_group(file, pos, ts);
            }
            Action::XaDecision {
                xid,
                commit,
                pos,
                ts,
            } => {
                let release = self
                    .xa
                    .decide(&self.publisher, &mut self.batch, &xid, commit);
                // The decision's own GTID is not in the checkpoint until
                // its release is complete: a restart reads it again.
                self.release_in_steps(release, false).await?;
                self.end_group(file, pos, ts);
            }
            Action::Rollback { pos, ts } => {
                self.rollback(file, pos);
                self.end_group(file, pos, ts);
            }
            Action::Heartbeat { .. } => {
                if !self.pending() {
                    metrics::gauge!(m::LAG_SECONDS, &self.labels).set(0.0);
                }
                metrics::gauge!(m::HEARTBEAT_TIMESTAMP, &self.labels)
                    .set(crate::reader::unix_seconds());
                self.xa.export_metrics();
            }
            Action::Rotate { file } => info!(file = %file, "binlog rotated"),
        }
        if self.batch.items() >= self.batch_rows || self.batch.bytes >= MAX_BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    fn begin(&mut self, gtid: Option<Gtid>) {
        self.xa.begin();
        self.group.items = 0;
        self.group.items_by.fill(0);
        self.group.skip_by.fill(0);
        if let (Some(g), false) = (&gtid, self.ahead.is_empty()) {
            let skip_by = &mut self.group.skip_by;
            // A target checkpoint holds the groups in its GTID position and
            // the first items of its group in flight; that group is
            // recognised by its GTID (groups of other databases may come
            // first), and once it is met the target has nothing more.
            self.ahead.retain(|(t, ck)| {
                let out = ck.items_out(g);
                skip_by[*t] = out;
                match &ck.inflight {
                    _ if out == u64::MAX => true,
                    Some((in_flight, _)) => in_flight != g,
                    None => false,
                }
            });
            if self.ahead.is_empty() {
                info!("read past every target's checkpoint: publishing everything again");
            }
        }
        self.group.gtid = gtid;
        self.group.mark = self.batch.mark();
        self.group.spilled = false;
    }

    /// Counts a row item of the group for target `t`; false if an earlier
    /// run published it.
    fn next_item(&mut self, t: usize) -> bool {
        self.group.items += 1;
        let n = &mut self.group.items_by[t];
        *n += 1;
        *n > self.group.skip_by[t]
    }

    /// Some target already had part of the group from an earlier run.
    fn published_before(&self) -> bool {
        self.group.skip_by.iter().any(|&n| n > 0)
    }

    fn end_group(&mut self, file: &str, pos: u64, ts: Timestamp) {
        if let Some(g) = self.group.gtid.take() {
            self.committed.gtid.advance(&g);
        }
        self.committed.file = file.to_string();
        self.committed.pos = pos;
        self.committed.commit_ts = ts.as_micros();
        self.group.items = 0;
        self.group.items_by.fill(0);
        self.group.skip_by.fill(0);
        self.dirty = true;
    }

    /// A group that ended with ROLLBACK: what is still in the batch is cut;
    /// what went out before is named in a dead letter.
    fn rollback(&mut self, file: &str, pos: u64) {
        metrics::counter!(m::ROLLED_BACK_GROUPS, &self.labels).increment(1);
        if self.xa.rollback_open(&self.publisher, &mut self.batch) {
            return;
        }
        let cut = self.batch.truncate(self.group.mark);
        if cut && !self.group.spilled && !self.published_before() {
            return;
        }
        let dl = DeadLetter {
            origin: Some(Origin::CdcReader),
            kind: crate::decode::kind::ROLLED_BACK.to_string(),
            reason: format!(
                "the group ended with ROLLBACK after {} of its items were published in earlier \
                 batches (it touched a non-transactional table and was larger than one batch): \
                 the read models count rows the tables do not hold; rebuild with `rpsctl replay`",
                self.group.items
            ),
            server: self.server.clone(),
            file: file.to_string(),
            pos,
            gtid: self
                .group
                .gtid
                .as_ref()
                .map(Gtid::to_string)
                .unwrap_or_default(),
            at: Timestamp::now(),
            ..Default::default()
        };
        error!(reason = %dl.reason, "a group ended with ROLLBACK after part of it was published");
        if self.next_item(self.dead_letters) {
            self.publisher.push_dead(&mut self.batch, &dl);
        }
    }

    /// The checkpoint that covers the batch: the last group end, plus the
    /// open group's published item count when the batch ends inside it.
    fn checkpoint(&self, in_group: bool) -> Checkpoint {
        let mut ck = self.committed.clone();
        if in_group && self.group.items > 0 {
            ck.inflight = self.group.gtid.clone().map(|g| (g, self.group.items));
        }
        ck
    }

    /// Writes the batch with the checkpoints that cover it.
    pub async fn flush(&mut self) -> Result<(), Transient> {
        let ck = self.checkpoint(true);
        self.write(&ck).await?;
        // Items of the open group before this point are out.
        self.group.spilled |= self.group.items > 0;
        self.group.mark = self.batch.mark();
        self.dirty = false;
        self.last_flush = Instant::now();
        Ok(())
    }

    async fn write(&mut self, ck: &Checkpoint) -> Result<(), Transient> {
        let entries = self.batch.entries + self.batch.released;
        let dead = std::mem::take(&mut self.batch.dead);
        let t0 = Instant::now();
        self.publisher
            .publish(&mut self.batch, ck, &self.group.items_by)
            .await?;
        let took = t0.elapsed().as_secs_f64();
        tracing::debug!(
            entries,
            dead = dead.len(),
            ms = took * 1e3,
            pos = ck.pos,
            "published"
        );
        metrics::histogram!(m::PUBLISH_SECONDS).record(took);
        metrics::gauge!(m::HEARTBEAT_TIMESTAMP, &self.labels).set(crate::reader::unix_seconds());
        metrics::counter!(m::EVENTS_PUBLISHED, &self.labels).increment(entries);
        metrics::counter!(m::BATCHES, &self.labels).increment(1);
        for kind in dead {
            metrics::counter!(m::DEAD_LETTERS, "server" => self.server.clone(), "kind" => kind)
                .increment(1);
        }
        if ck.commit_ts > 0 {
            let lag = (Timestamp::now().as_micros() - ck.commit_ts).max(0) as f64 / 1e6;
            metrics::gauge!(m::LAG_SECONDS, &self.labels).set(lag);
        }
        let _ = self.lag_tx.send((ck.file.clone(), ck.pos));
        Ok(())
    }

    /// A large committed branch goes out in bounded steps under the
    /// checkpoint before its decision (`in_group`: a one-phase commit, whose
    /// own items count in it), so a crash mid-way reads the decision again
    /// and releases the rest; the batch then gets the final, forgetting
    /// release.
    async fn release_in_steps(
        &mut self,
        release: Release,
        in_group: bool,
    ) -> Result<(), Transient> {
        let Release::Chunked(targets) = release else {
            return Ok(());
        };
        let before = self.checkpoint(in_group);
        // A decision group has no items of its own: counts are all 0 there.
        let in_flight = self.group.items_by.clone();
        let released = std::mem::take(&mut self.batch.released);
        self.write(&before).await?;
        let mut steps = 0u64;
        for keys in &targets {
            loop {
                self.publisher
                    .push_release(&mut self.batch, keys, Some(RELEASE_CHUNK));
                let left = self
                    .publisher
                    .publish(&mut self.batch, &before, &in_flight)
                    .await?;
                steps += 1;
                if left == 0 {
                    break;
                }
            }
        }
        if let Some(keys) = targets.first() {
            info!(branch = %keys.field, steps, "large XA branch released in steps");
        }
        for keys in &targets {
            self.publisher.push_release(&mut self.batch, keys, None);
        }
        self.batch.released = released;
        Ok(())
    }
}
