//! XA branches on the reader's side: what a prepared branch holds, until
//! its decision.
//!
//! The server writes a branch's prepare part (its rows, ended by
//! XA_PREPARE) when it is prepared and counts it as executed, so the
//! checkpoint moves past it like past any commit. The rows cannot go to the
//! shard streams yet (the branch may roll back), and they cannot wait in
//! memory (a restart would lose them, the binlog would not send them
//! again). So they go to the branch's hold stream in Redis, in the same
//! atomic steps as the checkpoints that move past them, and the branch is
//! recorded in the registry hash. Each target (a shard, the dead letters)
//! keeps its part of a branch — hold, registry entry, match set — in its
//! own slot, so a decision is one atomic step per target. The decision, a later group of
//! its own, moves the held items to their streams (commit) or deletes them
//! (rollback), again in the step of the checkpoint that covers it. A crash
//! anywhere leaves either the step before or the step after: exactly once.
//!
//! Memory stays bounded: a branch's items leave the reader with each batch;
//! what stays is one [`HeldBranch`] summary per undecided branch.

use crate::error::Transient;
use crate::publish::{redis_err, Batch, BranchKeys, Publisher};
use fred::prelude::*;
use rps_core::keys::PublishTarget;
use rps_core::xa::{held_match_member, HeldBranch, Xid};
use rps_core::{Keys, StreamEvent, Timestamp};
use std::collections::{HashMap, HashSet};
use tracing::{debug, info, warn};

/// A branch committing with at most this many items is released inside
/// the batch that covers its decision; a larger one in steps of
/// [`crate::publish::RELEASE_CHUNK`] first.
pub const RELEASE_INLINE_MAX: u64 = 4096;

/// A branch's steps in the batch being filled, so that a decision in the
/// same batch can be applied in place ([`Batch::decide_in_place`]).
#[derive(Default)]
struct InBatch {
    epoch: u64,
    ops: Vec<usize>,
    /// Some step of the branch already went out with an earlier batch.
    spilled: bool,
}

impl InBatch {
    fn new(batch: &Batch) -> InBatch {
        InBatch {
            epoch: batch.epoch(),
            ..InBatch::default()
        }
    }

    fn push(&mut self, batch: &Batch, op: usize) {
        if self.epoch != batch.epoch() {
            self.spilled |= !self.ops.is_empty();
            self.ops.clear();
            self.epoch = batch.epoch();
        }
        self.ops.push(op);
    }

    /// Every step of the branch is in the batch being filled.
    fn whole_in(&self, batch: &Batch) -> bool {
        !self.spilled && (self.epoch == batch.epoch() || self.ops.is_empty())
    }
}

/// The branch of the group being read, between its start and its prepare.
struct OpenBranch {
    xid: Xid,
    summary: HeldBranch,
    matches: HashSet<(u16, i64)>,
    in_batch: InBatch,
}

/// What the reader knows of one server's XA branches.
pub struct XaBranches {
    server: String,
    keys: Keys,
    shard_count: u16,
    /// Prepared and undecided: the mirror of the registry hash.
    held: HashMap<Xid, HeldBranch>,
    /// Prepared and undecided, holding nothing of the event tables (another
    /// application's branch on the same server): not in the registry, so
    /// `rpsctl xa sweep` never decides them; kept to recognise the decision.
    empty: HashSet<Xid>,
    /// Prepared branches whose every step is in the batch being filled.
    in_batch: HashMap<Xid, InBatch>,
    in_batch_epoch: u64,
    open: Option<OpenBranch>,
}

/// What a decision asks of the reader beyond the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Done inside the batch.
    Inline,
    /// Too large for one step: release these targets' holds in bounded
    /// steps first.
    Chunked(Vec<BranchKeys>),
}

impl XaBranches {
    /// Loads the registry: branches an earlier run saw prepared.
    /// Every target's registry holds the branches with items for it; a
    /// branch with items for several targets is in each of them.
    pub async fn load(
        client: &Client,
        keys: &Keys,
        server: &str,
        shard_count: u16,
    ) -> Result<XaBranches, Transient> {
        let raw = rps_core::redis_client::xa_registry(client, keys, server, shard_count)
            .await
            .map_err(redis_err(server))?;
        let mut held = HashMap::new();
        for (field, json) in raw {
            match (Xid::from_key(&field), HeldBranch::from_json(&json)) {
                (Ok(xid), Ok(b)) => {
                    held.insert(xid, b);
                }
                // Kept in Redis for an operator; the decision still finds
                // its hold by key.
                _ => warn!(server, field = %field, "unreadable XA registry entry"),
            }
        }
        if !held.is_empty() {
            info!(
                branches = held.len(),
                "prepared XA branches held from before"
            );
        }
        let b = XaBranches {
            server: server.to_string(),
            keys: keys.clone(),
            shard_count,
            held,
            empty: HashSet::new(),
            in_batch: HashMap::new(),
            in_batch_epoch: 0,
            open: None,
        };
        b.export_metrics();
        Ok(b)
    }

    fn branch_keys(&self, xid: &Xid, target: PublishTarget) -> BranchKeys {
        let field = xid.key();
        BranchKeys {
            target,
            hold: self.keys.cdc_xa_held(&self.server, target, &field),
            matches: match target {
                PublishTarget::Shard(s) => Some(self.keys.cdc_xa_matches(&self.server, s, &field)),
                PublishTarget::DeadLetters => None,
            },
            registry: self.keys.cdc_xa_branches(&self.server, target),
            field,
        }
    }

    /// The branch's keys in every target it holds items for; every target
    /// when that is not known (cheap: an empty hold costs nothing).
    fn all_branch_keys(&self, xid: &Xid, summary: Option<&HeldBranch>) -> Vec<BranchKeys> {
        match summary {
            Some(s) => s.targets(),
            None => PublishTarget::all(self.shard_count).collect(),
        }
        .into_iter()
        .map(|t| self.branch_keys(xid, t))
        .collect()
    }

    /// Whether the group being read is an XA branch.
    pub fn in_branch(&self) -> bool {
        self.open.is_some()
    }

    /// A new group begins: a branch left open by a group that never ended
    /// (a stream cut mid-group) is forgotten, its items are re-read.
    pub fn begin(&mut self) {
        self.open = None;
    }

    pub fn start(&mut self, batch: &Batch, xid: Xid) {
        self.open = Some(OpenBranch {
            summary: HeldBranch {
                xid: xid.to_string(),
                ..HeldBranch::default()
            },
            xid,
            matches: HashSet::new(),
            in_batch: InBatch::new(batch),
        });
    }

    /// Holds a row of the open branch; `publish` false when an earlier run
    /// already put it in the hold (it is still counted).
    pub fn hold_row(
        &mut self,
        publisher: &Publisher,
        batch: &mut Batch,
        ev: &StreamEvent,
        publish: bool,
    ) {
        let keys = match &self.open {
            Some(b) => self.branch_keys(&b.xid, PublishTarget::Shard(ev.shard)),
            None => return,
        };
        let Some(b) = &mut self.open else { return };
        *b.summary.shards.entry(ev.shard).or_default() += 1;
        let new_match = b.matches.insert((ev.shard, ev.event.match_id));
        if !publish {
            b.in_batch.spilled = true;
            return;
        }
        let op = publisher.push_held(batch, &keys, ev.to_pairs());
        b.in_batch.push(batch, op);
        if let (true, Some(matches)) = (new_match, &keys.matches) {
            let member = held_match_member(ev.shard, ev.event.match_id);
            let op = publisher.push_sadd(batch, keys.target, matches, member);
            b.in_batch.push(batch, op);
        }
    }

    pub fn hold_dead(
        &mut self,
        publisher: &Publisher,
        batch: &mut Batch,
        dl: &rps_core::deadletter::DeadLetter,
        publish: bool,
    ) {
        let keys = match &self.open {
            Some(b) => self.branch_keys(&b.xid, PublishTarget::DeadLetters),
            None => return,
        };
        let Some(b) = &mut self.open else { return };
        b.summary.dead += 1;
        *b.summary.dead_kinds.entry(dl.kind.clone()).or_default() += 1;
        if !publish {
            b.in_batch.spilled = true;
            return;
        }
        let op = publisher.push_held(batch, &keys, dl.to_pairs());
        b.in_batch.push(batch, op);
    }

    /// The open branch is prepared: it is recorded, and waits.
    pub fn prepare(
        &mut self,
        publisher: &Publisher,
        batch: &mut Batch,
        xid: Xid,
        at: (&str, &str, u64),
        ts: Timestamp,
    ) {
        let open = self.open.take().filter(|b| b.xid == xid);
        let (mut summary, mut in_batch) = match open {
            Some(b) => {
                let mut s = b.summary;
                s.matches = b.matches.len() as u64;
                (s, b.in_batch)
            }
            // A prepare without its start (the group began before this
            // stream): it holds nothing of ours.
            None => (
                HeldBranch {
                    xid: xid.to_string(),
                    ..HeldBranch::default()
                },
                InBatch::new(batch),
            ),
        };
        let (gtid, file, pos) = at;
        summary.gtid = gtid.to_string();
        summary.file = file.to_string();
        summary.pos = pos;
        summary.prepared_ts = ts.as_micros();
        summary.seen_ts = Timestamp::now().as_micros();
        if summary.items() == 0 {
            self.empty.insert(xid);
            return;
        }
        let json = summary.to_json();
        for keys in self.all_branch_keys(&xid, Some(&summary)) {
            let op = publisher.push_hset(
                batch,
                keys.target,
                &keys.registry,
                &keys.field,
                json.clone(),
            );
            in_batch.push(batch, op);
        }
        debug!(xid = %xid, rows = summary.rows(), matches = summary.matches, gtid, "XA branch prepared: holding it until its decision");
        if self.in_batch_epoch != batch.epoch() {
            self.in_batch.clear();
            self.in_batch_epoch = batch.epoch();
        }
        if in_batch.whole_in(batch) {
            self.in_batch.insert(xid.clone(), in_batch);
        }
        self.held.insert(xid, summary);
        self.export_metrics();
    }

    /// The open branch commits in its own group (`XA COMMIT … ONE PHASE`).
    pub fn commit_one_phase(&mut self, publisher: &Publisher, batch: &mut Batch) -> Release {
        let Some(b) = self.open.take() else {
            return Release::Inline;
        };
        metrics::counter!(crate::metrics::XA_DECISIONS, "server" => self.server.clone(), "decision" => "one_phase").increment(1);
        if b.in_batch.whole_in(batch) {
            batch.decide_in_place(&b.in_batch.ops, true);
            count_dead(batch, &b.summary);
            return Release::Inline;
        }
        let keys = self.all_branch_keys(&b.xid, Some(&b.summary));
        release(publisher, batch, keys, &b.summary)
    }

    /// The group ended with ROLLBACK: the open branch's items are dropped.
    /// Returns whether a branch was open.
    pub fn rollback_open(&mut self, publisher: &Publisher, batch: &mut Batch) -> bool {
        let Some(b) = self.open.take() else {
            return false;
        };
        if b.in_batch.whole_in(batch) {
            batch.decide_in_place(&b.in_batch.ops, false);
        } else {
            for keys in self.all_branch_keys(&b.xid, Some(&b.summary)) {
                publisher.push_drop(batch, &keys);
            }
        }
        true
    }

    /// A decision group: commit releases what the branch holds, rollback
    /// drops it; in place when the whole branch is in the batch.
    pub fn decide(
        &mut self,
        publisher: &Publisher,
        batch: &mut Batch,
        xid: &Xid,
        commit: bool,
    ) -> Release {
        self.open = None;
        if self.empty.remove(xid) {
            return Release::Inline;
        }
        let decision = if commit { "commit" } else { "rollback" };
        metrics::counter!(crate::metrics::XA_DECISIONS, "server" => self.server.clone(), "decision" => decision).increment(1);
        let summary = self.held.remove(xid);
        self.export_metrics();
        let in_batch = self.in_batch.remove(xid).filter(|b| b.whole_in(batch));
        match (&summary, in_batch) {
            (Some(s), Some(b)) => {
                batch.decide_in_place(&b.ops, commit);
                if commit {
                    count_dead(batch, s);
                }
                return Release::Inline;
            }
            (Some(s), None) => {
                debug!(xid = %xid, decision, rows = s.rows(), "XA branch decided")
            }
            (None, _) => warn!(
                xid = %xid, decision,
                "XA decision for a branch this reader never saw prepared with event rows (another \
                 application's branch, or one prepared before the reader's start position): if it \
                 held event rows, they are not published; `rpsctl verify` shows the difference"
            ),
        }
        let keys = self.all_branch_keys(xid, summary.as_ref());
        if !commit {
            for k in &keys {
                publisher.push_drop(batch, k);
            }
            return Release::Inline;
        }
        match summary {
            Some(s) => release(publisher, batch, keys, &s),
            // Unknown size: released in bounded steps, which cost nothing
            // when the hold is empty.
            None => Release::Chunked(keys),
        }
    }

    pub fn export_metrics(&self) {
        let labels = [("server", self.server.clone())];
        metrics::gauge!(crate::metrics::XA_PREPARED, &labels).set(self.held.len() as f64);
        let oldest = self.held.values().map(|b| b.prepared_ts).min();
        let age = oldest.map_or(0.0, |ts| {
            (Timestamp::now().as_micros() - ts).max(0) as f64 / 1e6
        });
        metrics::gauge!(crate::metrics::XA_OLDEST_SECONDS, &labels).set(age);
    }
}

/// The committed branch's dead letters count like any others.
fn count_dead(batch: &mut Batch, summary: &HeldBranch) {
    for (kind, n) in &summary.dead_kinds {
        batch
            .dead
            .extend(std::iter::repeat_n(kind.clone(), *n as usize));
    }
}

fn release(
    publisher: &Publisher,
    batch: &mut Batch,
    keys: Vec<BranchKeys>,
    summary: &HeldBranch,
) -> Release {
    batch.released += summary.rows();
    count_dead(batch, summary);
    if summary.items() <= RELEASE_INLINE_MAX {
        for k in &keys {
            publisher.push_release(batch, k, None);
        }
        Release::Inline
    } else {
        Release::Chunked(keys)
    }
}
