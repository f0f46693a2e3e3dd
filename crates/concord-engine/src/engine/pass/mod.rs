//! One sync pass over a job's systems: read, plan every touched entity, checkpoint, write the
//! outbox, checkpoint again — in chunks of a bounded number of records, so a pass's memory is
//! bounded by the chunk, not by the table (see `docs/design.md`, "Sync pass").
//!
//! Crash safety rests on the order (see `docs/design.md`, "Sync pass"):
//! 1. reads are planned and the new heads, snapshots, cross-references, cursors and outbox marks
//!    are committed in one durable checkpoint *before* any write leaves;
//! 2. a write's success is committed afterwards (snapshot = head, outbox mark removed). If that
//!    commit is lost, the next read finds the system holding the head and the plan's echo rule
//!    turns it into a snapshot update: no second version, no write back.
//! 3. creates carry the entity id, so a create whose cross-reference was lost is found again
//!    instead of being made twice.

mod drain;
mod plan;
mod read;

use read::MatchOverlay;

use super::EngineError;
use concord_connector::{Change, Connector, WriteBase, WriteErrorKind, WriteOp, WriteResult};
use concord_model::core::{
    plan_with, target_for, with_identity, Fold, MatchSpec, Observation, Parked, Policy, Resolution,
    SystemState, NO_IDENTITY,
};
use concord_model::model::{
    canonical, Actor, EntityId, NormalizeOptions, SystemId, Timestamp, Version,
};
use concord_model::model::{Fields, Key, Value};
use concord_store::{
    Checkpoint, ConflictEntry, ConflictSideEntry, EntityParts, MatchEntry, OutboxEntry,
    RunLogEntry, StateStore, Tree,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc as StdArc;
use std::sync::Arc;

/// A job as the engine runs it.
pub struct SyncJob {
    pub name: String,
    pub systems: Vec<Arc<dyn Connector>>,
    pub policy: Policy,
    pub normalize: NormalizeOptions,
    /// Records per write call and per checkpoint.
    pub batch_size: usize,
    /// What the pattern asks beyond a plain bidirectional sync.
    pub options: JobOptions,
}

/// What a system may be used for in a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    /// Its changes are read (a source, or a side of a two-way sync).
    pub read: bool,
    /// The head is written to it (a destination, or a side of a two-way sync).
    pub write: bool,
}

impl Default for Role {
    fn default() -> Self {
        Role {
            read: true,
            write: true,
        }
    }
}

/// Pattern options of a job (all off by default: a bidirectional sync of every system).
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    /// Per system; a system not listed is read and written.
    pub roles: BTreeMap<SystemId, Role>,
    /// Records without a cross-reference are linked to entities by this match key (correlate,
    /// aggregate) instead of each starting an entity of its own.
    pub matching: Option<MatchSpec>,
    /// Correlate: only entities matched in two or more systems exist. A record whose match key
    /// no other system has is not stored (only its match hash and native key, to find it again
    /// when a match appears) and never created elsewhere; no entity is ever created in a system.
    pub correlate: bool,
    /// A system's failure is reported and the others go on (broadcast destinations, any job
    /// run by the CLI); otherwise the pass stops at the first failure.
    pub isolate_failures: bool,
    /// Records written carry this extra field: a JSON object naming, per field, the system
    /// its value came from (aggregate provenance).
    pub provenance_field: Option<String>,
    /// Read and plan only: nothing is committed and nothing is written (`--dry-run`, `plan`).
    pub dry_run: bool,
    /// Read every system by a complete scan instead of its change feed (drift repair: what
    /// changed behind the feed becomes ordinary changes, and a stored record not seen is
    /// deleted by the delete rule). Read cursors are left as they are.
    pub full_read: bool,
    /// Stops a pass that would delete an unusual share of a system's records before it writes
    /// anything (the deletes stay queued); `None`: no limit.
    pub delete_guard: Option<DeleteGuard>,
    /// Lets deletes held by the guard through (`concord run --allow-deletes`).
    pub allow_deletes: bool,
    /// Records observed (across the systems read) before the pass plans, checkpoints and
    /// writes them as one chunk and reads on; `None`: [`DEFAULT_CHUNK`].
    pub chunk_size: Option<usize>,
    /// Per system, the canonical fields that hold its native key: a record's identity, never
    /// rewritten by an update (each system keeps its own values there; a create takes the
    /// head's).
    pub identity: BTreeMap<SystemId, BTreeSet<String>>,
    /// Set by the caller to stop a pass early (a service shutting down): the pass stops at its
    /// next chunk boundary (after that chunk's checkpoint and writes) or after the write batch
    /// under way, with [`EngineError::Stopped`]. What it committed stays: a read cut short
    /// keeps its old cursor (the next pass reads again; what was flushed compares equal), and
    /// writes not sent stay in the outbox for the next pass.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Per system, where its change feed stood when the pass began (see
    /// `Connector::subscribe`): committed with the system's cursor when its read completes
    /// (a read that started after the feed's announcements finds their changes), so a feed
    /// subscribing again after a restart goes on from there.
    pub feed_positions: BTreeMap<SystemId, Vec<u8>>,
}

impl JobOptions {
    /// Whether the caller asked the pass to stop.
    pub fn stopping(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Records per chunk of a pass unless the job says otherwise: what a pass holds in memory.
pub const DEFAULT_CHUNK: usize = 20_000;

/// The delete guard's limits: a pass holds when, in some system, the deletes it would write
/// (with those already queued) exceed `max_share` of the records synced there, or `max_deletes`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeleteGuard {
    pub max_share: f64,
    pub max_deletes: u64,
}

impl Default for DeleteGuard {
    fn default() -> Self {
        DeleteGuard {
            max_share: 0.10,
            max_deletes: 1000,
        }
    }
}

/// End-to-end lag of the writes to one system: from the change's modification time in the
/// system it came from (its clock) to the write's acknowledgement here. Writes of versions
/// without a modification time (files, SQL scan mode) are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    pub count: u64,
    pub sum_ms: u64,
    pub max_ms: u64,
}

impl Lag {
    pub fn add(&mut self, ms: u64) {
        self.count += 1;
        self.sum_ms += ms;
        self.max_ms = self.max_ms.max(ms);
    }
}

/// Deletes the guard held back in one system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldDeletes {
    /// Deletes the pass would write (this pass's and those queued before).
    pub deletes: u64,
    /// Records synced in that system (live snapshots) before them.
    pub synced: u64,
}

impl SyncJob {
    /// What the job uses `sys` for (read and write unless the pattern says otherwise).
    pub fn role(&self, sys: &SystemId) -> Role {
        self.options.roles.get(sys).copied().unwrap_or_default()
    }

    /// Records per chunk (see [`JobOptions::chunk_size`]).
    pub fn chunk(&self) -> usize {
        self.options.chunk_size.unwrap_or(DEFAULT_CHUNK).max(1)
    }

    /// The canonical fields holding `sys`'s native key (see [`JobOptions::identity`]).
    pub fn identity(&self, sys: &SystemId) -> &BTreeSet<String> {
        self.options.identity.get(sys).unwrap_or(&NO_IDENTITY)
    }

    /// Records are joined by a match key into one golden record per key, composed from the
    /// sources (not correlate).
    pub fn is_aggregate(&self) -> bool {
        self.options.matching.is_some() && !self.options.correlate
    }
}

/// Writes a dry run would make in one system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Planned {
    pub creates: u64,
    pub updates: u64,
    pub deletes: u64,
    /// Writes queued by earlier passes (failed or interrupted), sent again as well.
    pub queued: u64,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Records read, per system.
    pub read: BTreeMap<String, u64>,
    /// Entities with a change to carry: changed in a system read in this pass, or owed to a
    /// system (a change another job sharing a system brought, a write queued earlier).
    pub changed: u64,
    /// Records written (created, updated or deleted), per system.
    pub written: BTreeMap<String, u64>,
    /// Writes that failed and stay in the outbox.
    pub failed: u64,
    /// The same, per system written.
    pub failed_in: BTreeMap<String, u64>,
    /// Reads that matched what concord had written (no new version, nothing written back).
    pub echoes: u64,
    /// Conflicts decided by the policy.
    pub conflicts_resolved: u64,
    /// Conflicts parked for manual resolution.
    pub conflicts_parked: u64,
    /// Records ignored because another record of the same system carries the same entity id.
    pub duplicates_ignored: u64,
    /// Correlate: records read in this pass that have no match in the other system (not
    /// synced, not stored); each counted once, however often it was met.
    pub unmatched: u64,
    /// Correlate: entities matched in this pass. Aggregate: records linked to a golden record
    /// by their match key in this pass.
    pub matched: u64,
    /// Aggregate: golden records started in this pass.
    pub golden_created: u64,
    /// Systems that failed in this pass (with `isolate_failures`), and why.
    pub errors: BTreeMap<String, String>,
    /// Dry run: the writes the pass would make, per system.
    pub planned: BTreeMap<String, Planned>,
    /// The delete guard stopped the pass before it wrote anything (a dry run: would stop), per
    /// system whose deletes exceed the limits; the deletes stay queued.
    pub held_deletes: BTreeMap<String, HeldDeletes>,
    /// Per system written: the end-to-end lag of its writes.
    pub lag: BTreeMap<String, Lag>,
    /// Per system: creates whose answer was lost, whose record no read has found yet, sent
    /// less than the system's in-flight limit before the pass began (see
    /// [`Connector::in_flight_limit`]). Not sent again yet: the system may still make them.
    pub in_flight: BTreeMap<String, u64>,
    /// When the first of those may be sent again (local clock).
    pub in_flight_due: Option<Timestamp>,
}

impl SyncReport {
    pub fn total_written(&self) -> u64 {
        self.written.values().sum()
    }

    /// Adds the counts of one system's completed read.
    fn absorb_read(&mut self, r: SyncReport) {
        for (s, n) in r.read {
            *self.read.entry(s).or_default() += n;
        }
        self.duplicates_ignored += r.duplicates_ignored;
        self.matched += r.matched;
        self.golden_created += r.golden_created;
    }

    /// The figures as (name, count) pairs, for the run log.
    pub fn counts(&self) -> Vec<(String, u64)> {
        let mut c: Vec<(String, u64)> = Vec::new();
        for (s, n) in &self.read {
            c.push((format!("read.{s}"), *n));
        }
        for (s, n) in &self.written {
            c.push((format!("written.{s}"), *n));
        }
        c.push(("changed".into(), self.changed));
        c.push(("failed".into(), self.failed));
        c.push(("echoes".into(), self.echoes));
        c.push(("conflicts_resolved".into(), self.conflicts_resolved));
        c.push(("conflicts_parked".into(), self.conflicts_parked));
        c.push(("duplicates_ignored".into(), self.duplicates_ignored));
        c.push(("unmatched".into(), self.unmatched));
        c.push(("matched".into(), self.matched));
        c.push(("new_match_entities".into(), self.golden_created));
        c.push(("system_errors".into(), self.errors.len() as u64));
        c.push((
            "held_deletes".into(),
            self.held_deletes.values().map(|h| h.deletes).sum(),
        ));
        c.push(("in_flight".into(), self.in_flight.values().sum()));
        c
    }
}

/// Outbox marks a plan made in one system, and how many of them delete a record it holds.
#[derive(Debug, Clone, Default)]
struct Marks {
    marks: u64,
    deletes: u64,
    /// In a dry run (nothing reaches the outbox): the entities this pass would delete there.
    dry_deletes: BTreeSet<EntityId>,
}

impl Marks {
    fn add(&mut self, other: Marks) {
        self.marks += other.marks;
        self.deletes += other.deletes;
        self.dry_deletes.extend(other.dry_deletes);
    }
}

/// Which flush of a pass: one at a chunk boundary while a system is still being read, or the
/// last, once every read completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush<'a> {
    /// Mid-read: no cursor moves; deletes wait in the outbox for the last flush (the delete
    /// guard needs the whole pass); nothing is written to `reading`, the system being read
    /// (its scan could miss a record written behind it and infer its delete; a page read in
    /// parallel could predate the write).
    Chunk { reading: &'a SystemId },
    /// Every read completed: cursors, the delete guard, every write.
    Last,
}

/// One pass's state, threaded through its phases: read, plan, checkpoint, guard, drain, and
/// the re-read of what went stale under the writes.
struct Pass<'j> {
    job: &'j SyncJob,
    /// Every system of the job (the plan's view), and the connectors this pass works on.
    all: Vec<SystemId>,
    active: Vec<&'j Arc<dyn Connector>>,
    /// What the reads observed since the last flush, per entity and system.
    observed: BTreeMap<EntityId, BTreeMap<SystemId, Observation>>,
    /// The plan's writes to the store, and the read cursors (committed last, with it).
    cp: Checkpoint,
    cursors: Checkpoint,
    report: SyncReport,
    /// Systems that failed in this pass: nothing more is written to them in it.
    failed: BTreeSet<SystemId>,
    /// The outbox marks of every flush so far (the delete guard counts the whole pass).
    marks: BTreeMap<SystemId, Marks>,
    /// Write-only targets were looked through for records of lost creates (once a pass).
    linked: bool,
    /// When the pass began (local clock): every read in it began later.
    started: Timestamp,
}

impl Pass<'_> {
    /// Writes to `sys` failed (with isolation): its writes wait in its outbox, nothing more is
    /// written to it in this pass, and the report says why.
    fn writes_failed(&mut self, sys: &SystemId, e: &concord_connector::ConnectorError) {
        tracing::warn!(system = %sys, error = %e, "writes failed; kept in the outbox, the other systems go on");
        self.failed.insert(sys.clone());
        self.report.errors.insert(sys.to_string(), e.to_string());
    }
}

/// What one system's read produced, kept apart until the read completes (or, at a chunk
/// boundary, joins the pass with the pages read whole so far; its cursor only at the end).
#[derive(Default)]
struct SystemRead {
    observed: BTreeMap<EntityId, BTreeMap<SystemId, Observation>>,
    cp: Checkpoint,
    cursors: Checkpoint,
    report: SyncReport,
}

/// Why a system's read stopped: the read itself failed (isolated as that system's error), or
/// the flush of a chunk met by the way did (the pass's error).
enum ReadFailure {
    Read(EngineError),
    Flush(EngineError),
}

impl<'j> Pass<'j> {
    /// `read`'s observations, checkpoint entries, cursors and counts join the pass, as do the
    /// match entries it changed (a chunk boundary keeps the cursors back: they move only once
    /// the read completes).
    fn join(&mut self, read: SystemRead, matches: &mut MatchOverlay) {
        matches.keep();
        for (e, obs) in read.observed {
            self.observed.entry(e).or_default().extend(obs);
        }
        self.cp.extend(read.cp);
        self.cursors.extend(read.cursors);
        self.report.absorb_read(read.report);
    }
}

/// Rounds of re-reading and re-writing records that changed under a pass's writes, before
/// what still changes is left to the next pass.
const STALE_ROUNDS: usize = 3;

/// The engine over one state store.
pub struct Engine {
    state: StateStore,
}

impl Engine {
    pub fn new(state: StateStore) -> Self {
        Engine { state }
    }

    pub fn state(&self) -> &StateStore {
        &self.state
    }

    fn actor(&self, sys: &SystemId) -> concord_model::model::ActorId {
        Actor::new(self.state.instance().clone(), sys.clone()).id()
    }

    /// One pass over `only` (default: every system of the job). Systems not read keep their
    /// snapshots; writes they need stay in their outbox for a later pass.
    pub async fn sync(
        &self,
        job: &SyncJob,
        only: Option<&[SystemId]>,
    ) -> Result<SyncReport, EngineError> {
        let started = Timestamp::now().millis();
        let res = self.sync_inner(job, only).await;
        if job.options.dry_run {
            return res;
        }
        let (status, message, counts) = match &res {
            Ok(r) => ("ok", None, r.counts()),
            Err(e @ EngineError::Stopped { .. }) => ("stopped", Some(e.to_string()), Vec::new()),
            Err(e) => ("failed", Some(e.to_string()), Vec::new()),
        };
        let mut cp = self.state.checkpoint();
        cp.log_run(&RunLogEntry {
            job: job.name.clone(),
            started_ms: started,
            finished_ms: Timestamp::now().millis(),
            status: status.into(),
            counts,
            message,
        });
        match res {
            Ok(r) => {
                self.state.commit(cp)?;
                Ok(r)
            }
            Err(e) => {
                // Best effort: the store may be the thing that failed.
                let _ = self.state.commit(cp);
                Err(e)
            }
        }
    }

    async fn sync_inner(
        &self,
        job: &SyncJob,
        only: Option<&[SystemId]>,
    ) -> Result<SyncReport, EngineError> {
        let mut pass = Pass {
            job,
            all: job.systems.iter().map(|c| c.system().clone()).collect(),
            active: job
                .systems
                .iter()
                .filter(|c| only.is_none_or(|o| o.contains(c.system())))
                .collect(),
            observed: BTreeMap::new(),
            cp: self.state.checkpoint(),
            cursors: self.state.checkpoint(),
            report: SyncReport::default(),
            failed: BTreeSet::new(),
            marks: BTreeMap::new(),
            linked: false,
            started: Timestamp::now(),
        };

        if job.options.stopping() {
            return Err(EngineError::Stopped {
                job: job.name.clone(),
            });
        }
        // 1. Read, flushing a chunk (2–6 below) whenever the observations reach its size.
        self.read_all(&mut pass).await?;
        // 2–6 for what is left, with the cursors, the delete guard and every write.
        self.flush(&mut pass, Flush::Last).await?;
        Ok(pass.report)
    }

    /// Plans what the pass observed since the last flush and carries it out: checkpoint,
    /// delete guard (last flush only), writes, re-reads of what went stale under them.
    async fn flush(&self, pass: &mut Pass<'_>, flush: Flush<'_>) -> Result<(), EngineError> {
        let job = pass.job;
        let last = flush == Flush::Last;
        // 2. Plan each touched entity.
        let observed = std::mem::take(&mut pass.observed);
        // Targets this chunk's writes go to straight from its plan (see `write_direct`): its
        // plan is then committed whole, with their outcome.
        let direct = if last || job.options.dry_run {
            Vec::new()
        } else {
            self.direct_targets(pass)?
        };
        let slice = direct.is_empty();
        let marks = self.plan_observed(
            job,
            &pass.all,
            &observed,
            &mut pass.cp,
            &mut pass.report,
            slice,
        )?;
        drop(observed);
        for (sys, m) in marks {
            pass.marks.entry(sys).or_default().add(m);
        }
        if job.options.dry_run {
            if last {
                pass.report.held_deletes = self.guard_deletes(job, &pass.active, &pass.marks)?;
                // Writes already queued by earlier passes would go out too.
                for conn in pass.active.iter().filter(|c| job.role(c.system()).write) {
                    let queued = self.state.outbox_len(conn.system())?;
                    if queued > 0 {
                        pass.report
                            .planned
                            .entry(conn.system().to_string())
                            .or_default()
                            .queued = queued;
                    }
                }
            }
            return Ok(());
        }

        // 3. Checkpoint: the plan (and, last, the cursors) in one durable commit before any
        //    write.
        let mut cp = std::mem::take(&mut pass.cp);
        if last {
            cp.extend(std::mem::take(&mut pass.cursors));
        }
        // A plan that parks or settles a conflict goes the usual way: the writes must see the
        // conflict in the store.
        let mut written = BTreeSet::new();
        if !direct.is_empty() && !cp.touches(Tree::Conflict) {
            if !pass.linked {
                self.link_lost_creates_unread(pass).await?;
                pass.linked = true;
            }
            for conn in direct {
                if pass.failed.contains(conn.system()) {
                    continue;
                }
                match self
                    .write_direct(job, conn.as_ref(), &mut cp, &mut pass.report)
                    .await
                {
                    Ok(()) => {
                        written.insert(conn.system().clone());
                    }
                    Err(EngineError::Connector(e)) if job.options.isolate_failures => {
                        pass.writes_failed(conn.system(), &e)
                    }
                    Err(e) => {
                        self.state.commit(cp)?;
                        return Err(e);
                    }
                }
            }
        }
        self.state.commit(cp)?;

        // 4. The delete guard: a pass that would delete an unusual share of a system's records
        //    sends no delete and, from here, nothing at all; the plan stays committed, its
        //    deletes queued, until a run that allows them (or a source that holds the records
        //    again, which cancels them). Chunks before the last send no deletes.
        if last {
            pass.report.held_deletes = self.guard_deletes(job, &pass.active, &pass.marks)?;
            if !pass.report.held_deletes.is_empty() {
                for (sys, h) in &pass.report.held_deletes {
                    tracing::warn!(system = %sys, deletes = h.deletes, synced = h.synced, "delete guard: no delete written");
                }
                return Ok(());
            }
        }

        // 5. Drain what the active systems are owed; with isolation a failing system does not
        //    hold the others back (its writes stay in its outbox).
        pass.failed.extend(
            pass.report
                .errors
                .keys()
                .filter_map(|s| SystemId::new(s).ok()),
        );
        if !pass.linked {
            self.link_lost_creates_unread(pass).await?;
            pass.linked = true;
        }
        let mut stale = self.write_systems(pass, None, flush, &written).await?;

        // 6. Records that changed in a system between its read and the write (the write found
        //    them `Stale` and left them alone) are read again, merged with what the pass
        //    planned, and written again: a concurrent edit is merged, never overwritten.
        for _ in 0..STALE_ROUNDS {
            if stale.is_empty() {
                break;
            }
            let observed = self.reread(pass, &stale).await?;
            let mut cp = self.state.checkpoint();
            // (A re-read finds at most the records that went stale: the guard was passed.)
            self.plan_observed(job, &pass.all, &observed, &mut cp, &mut pass.report, true)?;
            self.state.commit(cp)?;
            let touched: BTreeSet<EntityId> = observed.keys().copied().collect();
            stale = self
                .write_systems(pass, Some(&touched), flush, &BTreeSet::new())
                .await?;
        }
        for (sys, entities) in &stale {
            tracing::warn!(system = %sys, records = entities.len(), "records kept changing under the writes; left in the outbox for the next pass");
        }
        Ok(())
    }

    /// Reads every active system the job reads, each apart until its read completes or a
    /// chunk fills (see [`SystemRead`]); a failed read (with isolation) counts as that
    /// system's error and nothing of it since the last flush is used.
    async fn read_all(&self, pass: &mut Pass<'_>) -> Result<(), EngineError> {
        let job = pass.job;
        let readers: Vec<&Arc<dyn Connector>> = pass
            .active
            .iter()
            .copied()
            .filter(|c| job.role(c.system()).read)
            .collect();
        // A dry run plans a chunk and forgets it: exact only when no other system's read
        // observes the same entities later, so a dry run of several reads plans them at once.
        let chunked = !job.options.dry_run || readers.len() == 1;
        let mut matches = MatchOverlay::default();
        for conn in readers {
            let mut read = SystemRead::default();
            let r = self
                .read_system(pass, conn, &mut read, &mut matches, chunked)
                .await;
            // Waiting records the read staged (mapped sides) become durable with its checkpoint,
            // or nothing of them stays with a read that failed.
            let staged = self.state.take_staged_waiting(&job.name, conn.system());
            match r {
                Ok(()) => {
                    for (key, w) in &staged {
                        read.cp
                            .put_waiting(&job.name, conn.system(), key, w.as_ref());
                    }
                    pass.join(read, &mut matches);
                }
                Err(ReadFailure::Read(EngineError::Connector(e)))
                    if job.options.isolate_failures =>
                {
                    matches.discard();
                    tracing::warn!(system = %conn.system(), error = %e, "read failed; nothing of it since the last chunk is used, the other systems go on");
                    pass.report
                        .errors
                        .insert(conn.system().to_string(), e.to_string());
                }
                Err(ReadFailure::Read(e) | ReadFailure::Flush(e)) => return Err(e),
            }
        }
        pass.report.unmatched = matches.unmatched();
        Ok(())
    }

    /// A system written but not read in this pass that may hold records from creates whose
    /// answer was lost is looked through first, so they are linked instead of created twice.
    /// The systems a chunk flush writes straight from its plan ([`Engine::write_direct`]):
    /// write-only targets whose creates are idempotent, that did not fail in this pass, with
    /// nothing queued in their outbox (no earlier mark the direct writes would have to clear).
    fn direct_targets<'j>(
        &self,
        pass: &Pass<'j>,
    ) -> Result<Vec<&'j Arc<dyn Connector>>, EngineError> {
        let job = pass.job;
        let mut out = Vec::new();
        for conn in &pass.active {
            let sys = conn.system();
            let role = job.role(sys);
            if !role.write
                || role.read
                || !conn.creates_idempotent()
                || pass.failed.contains(sys)
                || pass.report.errors.contains_key(sys.as_str())
            {
                continue;
            }
            if self.state.outbox(sys, 1)?.is_empty() {
                out.push(*conn);
            }
        }
        Ok(out)
    }

    async fn link_lost_creates_unread(&self, pass: &mut Pass<'_>) -> Result<(), EngineError> {
        let job = pass.job;
        for conn in pass.active.iter().filter(|c| job.role(c.system()).write) {
            let sys = conn.system();
            if job.role(sys).read || pass.failed.contains(sys) {
                continue; // read above: linked there
            }
            match self.link_lost_creates(job, conn.as_ref()).await {
                Ok(()) => {}
                Err(EngineError::Connector(e)) if job.options.isolate_failures => {
                    tracing::warn!(system = %sys, error = %e, "could not look for records of unconfirmed creates; its writes wait");
                    pass.failed.insert(sys.clone());
                    pass.report.errors.insert(sys.to_string(), e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
