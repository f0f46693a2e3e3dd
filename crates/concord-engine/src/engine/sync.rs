//! One sync pass over a job's systems: read, plan every touched entity, checkpoint, write the
//! outbox, checkpoint again.
//!
//! Crash safety rests on the order (see `docs/design.md`, "Sync pass"):
//! 1. reads are planned and the new heads, snapshots, cross-references, cursors and outbox marks
//!    are committed in one durable checkpoint *before* any write leaves;
//! 2. a write's success is committed afterwards (snapshot = head, outbox mark removed). If that
//!    commit is lost, the next read finds the system holding the head and the plan's echo rule
//!    turns it into a snapshot update: no second version, no write back.
//! 3. creates carry the entity id, so a create whose cross-reference was lost is found again
//!    instead of being made twice.

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
    Checkpoint, ConflictEntry, ConflictSideEntry, MatchEntry, OutboxEntry, RunLogEntry, StateStore,
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
    /// Per system, the canonical fields that hold its native key: a record's identity, never
    /// rewritten by an update (each system keeps its own values there; a create takes the
    /// head's).
    pub identity: BTreeMap<SystemId, BTreeSet<String>>,
}

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

/// What one system's read produced, kept apart until the read completes.
#[derive(Default)]
struct SystemRead {
    observed: BTreeMap<EntityId, BTreeMap<SystemId, Observation>>,
    cp: Checkpoint,
    cursors: Checkpoint,
    report: SyncReport,
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
        let mut report = SyncReport::default();
        let dry = job.options.dry_run;
        let all: Vec<SystemId> = job.systems.iter().map(|c| c.system().clone()).collect();
        let active: Vec<&Arc<dyn Connector>> = job
            .systems
            .iter()
            .filter(|c| only.is_none_or(|o| o.contains(c.system())))
            .collect();

        // 1. Read.
        let mut observed: BTreeMap<EntityId, BTreeMap<SystemId, Observation>> = BTreeMap::new();
        let mut cp = self.state.checkpoint();
        // Cursors move only in the last checkpoint of the planning phase, after every change
        // read has been committed: a crash in between re-reads instead of skipping.
        let mut cursors = self.state.checkpoint();
        let mut matches = MatchOverlay::default();
        for conn in active.iter().filter(|c| job.role(c.system()).read) {
            // What this system's read produces is kept apart until the read completes: a read
            // that failed part-way is never taken as complete, and nothing of it is planned,
            // committed or written anywhere.
            let mut read = SystemRead::default();
            let r = self
                .read_system(
                    job,
                    conn.as_ref(),
                    &mut read.observed,
                    &mut read.cp,
                    &mut read.cursors,
                    &mut read.report,
                    &mut matches,
                )
                .await;
            match r {
                Ok(()) => {
                    matches.keep();
                    for (e, obs) in read.observed {
                        observed.entry(e).or_default().extend(obs);
                    }
                    cp.extend(read.cp);
                    cursors.extend(read.cursors);
                    report.absorb_read(read.report);
                }
                Err(EngineError::Connector(e)) if job.options.isolate_failures => {
                    matches.discard();
                    tracing::warn!(system = %conn.system(), error = %e, "read failed; nothing of it is used, the other systems go on");
                    report
                        .errors
                        .insert(conn.system().to_string(), e.to_string());
                }
                Err(e) => return Err(e),
            }
        }

        report.unmatched = matches.unmatched();

        // 2. Plan each touched entity.
        let marks = self.plan_observed(job, &all, &observed, &mut cp, &mut report)?;
        if dry {
            report.held_deletes = self.guard_deletes(job, &active, &marks)?;
            // Writes already queued by earlier passes would go out too.
            for conn in active.iter().filter(|c| job.role(c.system()).write) {
                let queued = self.state.outbox_len(conn.system())?;
                if queued > 0 {
                    report
                        .planned
                        .entry(conn.system().to_string())
                        .or_default()
                        .queued = queued;
                }
            }
            return Ok(report);
        }
        cp.extend(cursors);
        self.state.commit(cp)?;

        // The delete guard: a pass that would delete an unusual share of a system's records
        // writes nothing at all; the plan stays committed, its deletes queued, until a run that
        // allows them (or a source that holds the records again, which cancels them).
        report.held_deletes = self.guard_deletes(job, &active, &marks)?;
        if !report.held_deletes.is_empty() {
            for (sys, h) in &report.held_deletes {
                tracing::warn!(system = %sys, deletes = h.deletes, synced = h.synced, "delete guard: nothing written");
            }
            return Ok(report);
        }

        // 3. Write what the active systems are owed; with isolation a failing system does not
        //    hold the others back (its writes stay in its outbox).
        let mut failed: BTreeSet<SystemId> = report
            .errors
            .keys()
            .filter_map(|s| SystemId::new(s).ok())
            .collect();
        // A system not read in this pass that may hold records from creates whose answer was
        // lost is looked through first, so they are linked instead of created twice.
        for conn in active.iter().filter(|c| job.role(c.system()).write) {
            let sys = conn.system();
            if job.role(sys).read || failed.contains(sys) {
                continue; // read above: linked there
            }
            match self.link_lost_creates(job, conn.as_ref()).await {
                Ok(()) => {}
                Err(EngineError::Connector(e)) if job.options.isolate_failures => {
                    tracing::warn!(system = %sys, error = %e, "could not look for records of unconfirmed creates; its writes wait");
                    failed.insert(sys.clone());
                    report.errors.insert(sys.to_string(), e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        let mut stale = self
            .write_systems(job, &active, None, &mut failed, &mut report)
            .await?;

        // 4. Records that changed in a system between its read and the write (the write found
        //    them `Stale` and left them alone) are read again, merged with what the pass
        //    planned, and written again: a concurrent edit is merged, never overwritten.
        for _ in 0..STALE_ROUNDS {
            if stale.is_empty() {
                break;
            }
            let observed = self.reread(job, &stale, &mut failed, &mut report).await?;
            let mut cp = self.state.checkpoint();
            // (A re-read finds at most the records that went stale: the guard was passed.)
            self.plan_observed(job, &all, &observed, &mut cp, &mut report)?;
            self.state.commit(cp)?;
            let touched: BTreeSet<EntityId> = observed.keys().copied().collect();
            stale = self
                .write_systems(job, &active, Some(&touched), &mut failed, &mut report)
                .await?;
        }
        for (sys, entities) in &stale {
            tracing::warn!(system = %sys, records = entities.len(), "records kept changing under the writes; left in the outbox for the next pass");
        }
        Ok(report)
    }

    /// Writes the outboxes of the active systems the job writes (only `only`'s entities when
    /// given), skipping systems that failed in this pass; returns, per system, the entities
    /// whose conditional update found them changed since they were read.
    async fn write_systems(
        &self,
        job: &SyncJob,
        active: &[&Arc<dyn Connector>],
        only: Option<&BTreeSet<EntityId>>,
        failed: &mut BTreeSet<SystemId>,
        report: &mut SyncReport,
    ) -> Result<BTreeMap<SystemId, Vec<EntityId>>, EngineError> {
        let mut stale = BTreeMap::new();
        for conn in active.iter().filter(|c| job.role(c.system()).write) {
            if failed.contains(conn.system()) {
                continue;
            }
            match self.drain_outbox(job, conn.as_ref(), only, report).await {
                Ok(s) => {
                    if !s.is_empty() {
                        stale.insert(conn.system().clone(), s);
                    }
                }
                Err(EngineError::Connector(e)) if job.options.isolate_failures => {
                    tracing::warn!(system = %conn.system(), error = %e, "writes failed; kept in the outbox, the other systems go on");
                    failed.insert(conn.system().clone());
                    report
                        .errors
                        .insert(conn.system().to_string(), e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(stale)
    }

    /// Point reads of records a write found changed: their current content as observations.
    async fn reread(
        &self,
        job: &SyncJob,
        stale: &BTreeMap<SystemId, Vec<EntityId>>,
        failed: &mut BTreeSet<SystemId>,
        report: &mut SyncReport,
    ) -> Result<BTreeMap<EntityId, BTreeMap<SystemId, Observation>>, EngineError> {
        let mut observed: BTreeMap<EntityId, BTreeMap<SystemId, Observation>> = BTreeMap::new();
        for (sys, entities) in stale {
            let Some(conn) = job.systems.iter().find(|c| c.system() == sys) else {
                continue;
            };
            let mut keys = Vec::new();
            let mut of = Vec::new();
            for e in entities {
                if let Some(k) = self.state.native_key(e, sys)? {
                    keys.push(k);
                    of.push(*e);
                }
            }
            let got = match conn.fetch(&keys).await {
                Ok(g) => g,
                Err(e) if job.options.isolate_failures => {
                    tracing::warn!(system = %sys, error = %e, "re-reading changed records failed; their writes wait in the outbox");
                    failed.insert(sys.clone());
                    report.errors.insert(sys.to_string(), e.to_string());
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for (e, ch) in of.into_iter().zip(got) {
                let obs = match ch.fields {
                    Some(mut f) => {
                        f.apply_options(&job.normalize);
                        Observation::Present {
                            fields: f,
                            modstamp: ch.modstamp,
                        }
                    }
                    None => Observation::Absent,
                };
                observed.entry(e).or_default().insert(sys.clone(), obs);
            }
        }
        Ok(observed)
    }

    /// Plans every observed entity into `cp` (committing it as it grows); a dry run counts the
    /// writes instead.
    fn plan_observed(
        &self,
        job: &SyncJob,
        all: &[SystemId],
        observed: &BTreeMap<EntityId, BTreeMap<SystemId, Observation>>,
        cp: &mut Checkpoint,
        report: &mut SyncReport,
    ) -> Result<BTreeMap<SystemId, Marks>, EngineError> {
        let mut marks: BTreeMap<SystemId, Marks> = BTreeMap::new();
        let dry = job.options.dry_run;
        // An aggregate composes its golden record from its sources (core::plan::compose).
        let sources: Option<Vec<SystemId>> = job.is_aggregate().then(|| {
            job.systems
                .iter()
                .map(|c| c.system().clone())
                .filter(|s| job.role(s).read)
                .collect()
        });
        let now = Timestamp::now().millis();
        for (entity, obs) in observed {
            let head = self.state.head(entity)?;
            let mut snaps: Vec<(Option<Version>, Option<Version>)> = Vec::with_capacity(all.len());
            for sys in all {
                let pending = if obs.contains_key(sys) {
                    self.state.pending(sys, entity)?
                } else {
                    None
                };
                snaps.push((self.state.snapshot(sys, entity)?, pending));
            }
            let states: Vec<SystemState<'_>> = all
                .iter()
                .zip(&snaps)
                .map(|(sys, (snap, pending))| SystemState {
                    system: sys,
                    actor: self.actor(sys),
                    snapshot: snap.as_ref(),
                    pending: pending.as_ref(),
                    observed: obs.get(sys).cloned().unwrap_or(Observation::NotRead),
                    identity: job.identity(sys),
                })
                .collect();
            // Reading a system settles any unconfirmed write to it: the plan has used it.
            for (sys, (_, pending)) in all.iter().zip(&snaps) {
                if pending.is_some() {
                    cp.delete_pending(sys, entity);
                }
            }
            let parked = self.parked(entity)?;
            let fold = match &sources {
                Some(src) => Fold::Compose(src),
                None => Fold::Merge,
            };
            let mut p = plan_with(head.as_ref(), &states, &job.policy, &parked, fold);
            // Systems the job never writes (sources) are never dirty.
            p.dirty.retain(|s| job.role(s).write);
            if !p.changed_in.is_empty() || !p.dirty.is_empty() {
                report.changed += 1;
            }
            report.echoes += p.echoes.len() as u64;
            for c in &p.conflicts {
                if c.resolution == Resolution::Parked {
                    report.conflicts_parked += 1;
                    cp.put_conflict(&conflict_entry(&job.name, entity, c, now));
                } else {
                    report.conflicts_resolved += 1;
                }
            }
            let deleting = p.head.as_ref().is_some_and(Version::is_tombstone);
            for sys in &p.dirty {
                let m = marks.entry(sys.clone()).or_default();
                m.marks += 1;
                let live = all
                    .iter()
                    .zip(&snaps)
                    .find(|(s, _)| *s == sys)
                    .and_then(|(_, (sn, _))| sn.as_ref())
                    .is_some_and(|s| !s.is_tombstone());
                if deleting && live {
                    m.deletes += 1;
                    if dry {
                        m.dry_deletes.insert(*entity);
                    }
                }
            }
            if dry {
                for sys in &p.dirty {
                    let snap = all
                        .iter()
                        .zip(&snaps)
                        .find(|(s, _)| *s == sys)
                        .and_then(|(_, (sn, _))| sn.as_ref());
                    let exists = snap.is_some_and(|s| !s.is_tombstone());
                    let e = report.planned.entry(sys.to_string()).or_default();
                    match (&p.head, exists) {
                        (Some(h), true) if h.is_tombstone() => e.deletes += 1,
                        (Some(h), false) if h.is_tombstone() => {}
                        (_, true) => e.updates += 1,
                        (_, false) => e.creates += 1,
                    }
                }
                continue;
            }
            for (sys, v) in &p.snapshots {
                cp.put_snapshot(sys, entity, v);
            }
            if p.head_changed {
                if let Some(h) = &p.head {
                    cp.put_head(entity, h);
                }
            }
            for sys in &p.dirty {
                cp.outbox_put(
                    sys,
                    entity,
                    &OutboxEntry {
                        enqueued_ms: now,
                        attempts: 0,
                        last_error: None,
                    },
                );
            }
            if cp.len() >= job.batch_size.max(1) * 4 {
                self.state.commit(std::mem::take(cp))?;
            }
        }
        Ok(marks)
    }

    /// The systems where the deletes this pass would write (planned now, `marks`, or queued
    /// by earlier passes) exceed the job's delete guard.
    fn guard_deletes(
        &self,
        job: &SyncJob,
        active: &[&Arc<dyn Connector>],
        marks: &BTreeMap<SystemId, Marks>,
    ) -> Result<BTreeMap<String, HeldDeletes>, EngineError> {
        let mut held = BTreeMap::new();
        let Some(guard) = job
            .options
            .delete_guard
            .filter(|_| !job.options.allow_deletes)
        else {
            return Ok(held);
        };
        for conn in active.iter().filter(|c| job.role(c.system()).write) {
            let sys = conn.system();
            let none = Marks::default();
            let m = marks.get(sys).unwrap_or(&none);
            // Marks left by earlier passes (a held pass, failed writes) count too: counted
            // exactly by a look at the outbox when there are any (in a dry run, with this
            // pass's, which are not in it).
            let queued = self.state.outbox_len(sys)?;
            let deletes = if queued > m.marks || job.options.dry_run && queued > 0 {
                let mut n = if job.options.dry_run { m.deletes } else { 0 };
                for (e, _) in self.state.outbox(sys, usize::MAX)? {
                    if m.dry_deletes.contains(&e) {
                        continue;
                    }
                    let live = self
                        .state
                        .snapshot(sys, &e)?
                        .is_some_and(|s| !s.is_tombstone());
                    if live && self.state.head(&e)?.is_some_and(|h| h.is_tombstone()) {
                        n += 1;
                    }
                }
                n
            } else {
                m.deletes
            };
            if deletes == 0 {
                continue;
            }
            // The records synced there; counted only as far as the share needs (all of them
            // when the pass is held: the report gives the figure).
            let mut synced = 0u64;
            let enough = if deletes > guard.max_deletes {
                f64::INFINITY
            } else {
                (deletes as f64 / guard.max_share).floor()
            };
            self.state.scan_snapshot_hashes(sys, &mut |_, h| {
                synced += u64::from(h.is_some());
                synced as f64 <= enough
            })?;
            if deletes > guard.max_deletes || deletes as f64 > guard.max_share * synced as f64 {
                held.insert(sys.to_string(), HeldDeletes { deletes, synced });
            }
        }
        Ok(held)
    }

    #[allow(clippy::too_many_arguments)]
    async fn read_system(
        &self,
        job: &SyncJob,
        conn: &dyn Connector,
        observed: &mut BTreeMap<EntityId, BTreeMap<SystemId, Observation>>,
        cp: &mut Checkpoint,
        cursors: &mut Checkpoint,
        report: &mut SyncReport,
        matches: &mut MatchOverlay,
    ) -> Result<(), EngineError> {
        let sys = conn.system().clone();
        // A full read (drift repair) scans from the start and leaves the read cursor alone.
        let mut cursor = if job.options.full_read {
            None
        } else {
            self.state.cursor(&job.name, &sys)?
        };
        let mut complete = true;
        let mut seen: BTreeSet<EntityId> = BTreeSet::new();
        // Creates sent here whose outcome is unknown (answer lost, crash), by content.
        let mut unknown = self.unknown_creates(conn)?;
        let mut count = 0u64;
        loop {
            let page = if job.options.full_read {
                conn.scan(cursor.as_deref()).await?
            } else {
                conn.read(cursor.as_deref()).await?
            };
            complete &= page.complete;
            for ch in page.changes {
                count += 1;
                let Change {
                    key,
                    entity_hint,
                    fields,
                    modstamp,
                } = ch;
                let known = self.state.entity_for(&sys, &key)?;
                // The record a create whose answer was lost made (the content sent): linked to
                // that entity, it is the write's echo, not a new record.
                let lost_create = match (&known, &fields) {
                    (None, Some(f)) if !unknown.is_empty() => {
                        unknown.take(&normal_hash(f, &job.normalize))
                    }
                    _ => None,
                };
                let entity = match (known, lost_create) {
                    (Some(e), _) => e,
                    (None, Some(e)) => {
                        tracing::info!(system = %sys, key = %key, entity = %e, "a create whose answer was lost is found: linked");
                        cp.put_xref(&sys, &key, &e);
                        e
                    }
                    (None, None) => {
                        let by_match = match &job.options.matching {
                            None => Matched::Own,
                            Some(spec) => {
                                let mut f = fields.clone();
                                if let Some(f) = f.as_mut() {
                                    f.apply_options(&job.normalize);
                                }
                                self.match_record(
                                    job,
                                    spec,
                                    &sys,
                                    &key,
                                    f.as_ref(),
                                    cp,
                                    matches,
                                    observed,
                                    report,
                                )
                                .await?
                            }
                        };
                        let e = match by_match {
                            Matched::Drop => continue,
                            Matched::Entity(e) => e,
                            Matched::Own => {
                                entity_hint.unwrap_or_else(|| EntityId::derive(&sys, key.as_str()))
                            }
                        };
                        let linked_elsewhere =
                            self.state.native_key(&e, &sys)?.is_some_and(|k| k != key);
                        // A stale link (the record it names is known deleted) does not count.
                        if linked_elsewhere
                            && self
                                .state
                                .snapshot(&sys, &e)?
                                .is_some_and(|s| !s.is_tombstone())
                        {
                            // Another record of this system already stands for this entity.
                            report.duplicates_ignored += 1;
                            tracing::warn!(system = %sys, key = %key, entity = %e, "record duplicates an entity already linked; ignored");
                            continue;
                        }
                        cp.put_xref(&sys, &key, &e);
                        e
                    }
                };
                if !seen.insert(entity) {
                    report.duplicates_ignored += 1;
                    continue;
                }
                let obs = match fields {
                    Some(mut f) => {
                        f.apply_options(&job.normalize);
                        Observation::Present {
                            fields: f,
                            modstamp,
                        }
                    }
                    None => Observation::Absent,
                };
                observed.entry(entity).or_default().insert(sys.clone(), obs);
            }
            if !page.more {
                if let Some(c) = page.cursor.as_ref().filter(|_| !job.options.full_read) {
                    cursors.put_cursor(&job.name, &sys, c);
                }
                break;
            }
            cursor = page.cursor;
        }
        if complete {
            // A scan: what we had and did not see is gone.
            for e in self.state.unseen_snapshots(&sys, &seen)? {
                observed
                    .entry(e)
                    .or_default()
                    .insert(sys.clone(), Observation::Absent);
            }
        }
        *report.read.entry(sys.to_string()).or_default() += count;
        Ok(())
    }

    /// Scans a write-only target holding creates whose outcome is unknown (and only then):
    /// every record of it not linked yet whose content is such a create's is linked to that
    /// entity, with the version sent as its snapshot. What stays unknown did not land (or was
    /// edited since) and is created again.
    async fn link_lost_creates(
        &self,
        job: &SyncJob,
        conn: &dyn Connector,
    ) -> Result<(), EngineError> {
        let mut unknown = self.unknown_creates(conn)?;
        if unknown.is_empty() {
            return Ok(());
        }
        let sys = conn.system().clone();
        let sent: HashMap<EntityId, Version> =
            self.state.pending_creates(&sys)?.into_iter().collect();
        let mut cp = self.state.checkpoint();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let page = conn.scan(cursor.as_deref()).await?;
            for ch in page.changes {
                if self.state.entity_for(&sys, &ch.key)?.is_some() {
                    continue;
                }
                let Some(f) = &ch.fields else { continue };
                if let Some(e) = unknown.take(&normal_hash(f, &job.normalize)) {
                    tracing::info!(system = %sys, key = %ch.key, entity = %e, "a create whose answer was lost is found: linked");
                    cp.put_xref(&sys, &ch.key, &e);
                    if let Some(v) = sent.get(&e) {
                        cp.put_snapshot(&sys, &e, v);
                    }
                    cp.delete_pending(&sys, &e);
                }
            }
            if !page.more || unknown.is_empty() {
                break;
            }
            cursor = page.cursor;
        }
        self.state.commit(cp)?;
        Ok(())
    }

    /// The creates sent to `conn` whose outcome is unknown, by the hash of the content sent —
    /// only where repeating a create could duplicate the record.
    fn unknown_creates(&self, conn: &dyn Connector) -> Result<UnknownCreates, EngineError> {
        let mut out = UnknownCreates::default();
        if conn.creates_idempotent() {
            return Ok(out);
        }
        for (e, v) in self.state.pending_creates(conn.system())? {
            if let Some(h) = v.hash {
                out.0.entry(h).or_default().push(e);
            }
        }
        Ok(out)
    }

    /// Links a record without a cross-reference by its match key (see [`JobOptions::matching`]).
    #[allow(clippy::too_many_arguments)]
    async fn match_record(
        &self,
        job: &SyncJob,
        spec: &MatchSpec,
        sys: &SystemId,
        key: &Key,
        fields: Option<&Fields>,
        cp: &mut Checkpoint,
        matches: &mut MatchOverlay,
        observed: &mut BTreeMap<EntityId, BTreeMap<SystemId, Observation>>,
        report: &mut SyncReport,
    ) -> Result<Matched, EngineError> {
        let hash = fields.and_then(|f| spec.hash(f));
        // Where the record was filed before (a lonely correlate record whose key changed, or
        // that was deleted): take it out of that entry.
        let previous = match matches.rev(sys, key) {
            Some(h) => h,
            None => self.state.match_of(&job.name, sys, key)?,
        };
        if let Some(h0) = previous.filter(|h0| Some(*h0) != hash) {
            let mut e0 = matches.get(&self.state, &job.name, &h0)?;
            e0.lonely
                .retain(|(s, k)| !(s == sys.as_str() && k == key.as_str()));
            matches.put(cp, &job.name, h0, e0);
            matches.set_rev(sys, key, None);
            cp.delete_match_rev(&job.name, sys, key);
        }
        let Some(hash) = hash else {
            // Deleted, or no match key: correlate keeps nothing of it; others sync it alone.
            return Ok(if job.options.correlate || fields.is_none() {
                if fields.is_some() && job.options.correlate {
                    matches.set_lonely(sys, key, true);
                }
                if job.options.correlate {
                    Matched::Drop
                } else {
                    Matched::Own
                }
            } else {
                Matched::Own
            });
        };
        let mut entry = matches.get(&self.state, &job.name, &hash)?;
        if let Some(e) = entry.entity {
            if !job.options.correlate {
                report.matched += 1; // joins its golden record
            }
            return Ok(Matched::Entity(EntityId(e)));
        }
        if !job.options.correlate {
            // Aggregate: the first record with this key starts the entity; the others join it.
            let e = match_entity(&job.name, &hash);
            entry.entity = Some(e.0);
            matches.put(cp, &job.name, hash, entry);
            report.matched += 1;
            report.golden_created += 1;
            return Ok(Matched::Entity(e));
        }
        let others: Vec<(String, String)> = entry
            .lonely
            .iter()
            .filter(|(s, _)| s != sys.as_str())
            .cloned()
            .collect();
        if others.is_empty() {
            if !entry
                .lonely
                .iter()
                .any(|(s, k)| s == sys.as_str() && k == key.as_str())
            {
                entry
                    .lonely
                    .push((sys.to_string(), key.as_str().to_string()));
            }
            matches.put(cp, &job.name, hash, entry);
            matches.set_rev(sys, key, Some(hash));
            cp.put_match_rev(&job.name, sys, key, &hash);
            matches.set_lonely(sys, key, true);
            return Ok(Matched::Drop);
        }
        // A match: the entity starts now, with the other side's record fetched again (it was
        // not kept when it was read alone).
        let e = match_entity(&job.name, &hash);
        for (s2, k2) in &others {
            let Some(conn) = job.systems.iter().find(|c| c.system().as_str() == s2) else {
                continue;
            };
            let k2 = Key::new(k2.as_str());
            let got = conn.fetch(std::slice::from_ref(&k2)).await?;
            if let Some(Some(mut f)) = got.into_iter().next().map(|c| c.fields) {
                f.apply_options(&job.normalize);
                let s2 = conn.system().clone();
                cp.put_xref(&s2, &k2, &e);
                cp.delete_match_rev(&job.name, &s2, &k2);
                matches.set_rev(&s2, &k2, None);
                matches.set_lonely(&s2, &k2, false);
                observed.entry(e).or_default().insert(
                    s2,
                    Observation::Present {
                        fields: f,
                        modstamp: None,
                    },
                );
            }
        }
        entry.entity = Some(e.0);
        entry.lonely.clear();
        matches.put(cp, &job.name, hash, entry);
        report.matched += 1;
        Ok(Matched::Entity(e))
    }

    /// `f` (the head's content, or what a system should hold of it) plus a provenance field:
    /// per field, the system that set its value, as the head records it.
    fn with_provenance(head: &Version, f: &Fields, field: &str) -> Fields {
        let mut map = serde_json::Map::new();
        for (name, _) in f.iter() {
            if let Some(s) = head.origin_of(name) {
                map.insert(name.to_string(), serde_json::Value::String(s.to_string()));
            }
        }
        let mut out = f.clone();
        out.set(
            StdArc::<str>::from(field),
            Value::Json(serde_json::Value::Object(map)),
        );
        out
    }

    /// The entity's entries in the conflict queue, as the plan needs them.
    fn parked(&self, entity: &EntityId) -> Result<Parked, EngineError> {
        let mut p = Parked::default();
        for c in self.state.conflicts_of(entity)? {
            match c.field {
                Some(f) => {
                    p.fields.insert(f);
                }
                None => p.held = true,
            }
        }
        Ok(p)
    }

    /// Writes `conn`'s outbox (only `only`'s entities when given). Returns the entities whose
    /// conditional update found the record changed since it was read (left in the outbox).
    async fn drain_outbox(
        &self,
        job: &SyncJob,
        conn: &dyn Connector,
        only: Option<&BTreeSet<EntityId>>,
        report: &mut SyncReport,
    ) -> Result<Vec<EntityId>, EngineError> {
        let sys = conn.system().clone();
        let mut pending = self.state.outbox(&sys, usize::MAX)?;
        if let Some(only) = only {
            pending.retain(|(e, _)| only.contains(e));
        }
        // A system the job reads gets conditional, partial updates (what changed since its
        // snapshot, if it still holds the snapshot there); a write-only target is kept equal to
        // the head in every mapped field.
        let conditional = job.role(&sys).read;
        let mut stale = Vec::new();
        for chunk in pending.chunks(job.batch_size.max(1)) {
            let mut cp = self.state.checkpoint();
            let mut ops = Vec::new();
            let mut heads = Vec::new();
            for (entity, entry) in chunk {
                let head = self.state.head(entity)?;
                let snap = self.state.snapshot(&sys, entity)?;
                let Some(head) = head else {
                    cp.outbox_remove(&sys, entity);
                    continue;
                };
                let parked = self.parked(entity)?;
                if parked.held {
                    // A record-level conflict waits for resolution: nothing goes out.
                    cp.outbox_remove(&sys, entity);
                    continue;
                }
                // What this system should hold: the head, minus parked fields (it keeps its own).
                let keep = with_identity(&parked.fields, job.identity(&sys));
                let (content, hash) = target_for(&head, snap.as_ref(), &keep);
                // Its modification time there is unknown until the system is read again (the
                // head's is another system's clock: no precondition may be built on it).
                let target = Version {
                    content,
                    hash,
                    clock: head.clock.clone(),
                    modstamp: None,
                    origin: head.origin.clone(),
                    field_origins: head.field_origins.clone(),
                };
                if snap.as_ref().and_then(|s| s.hash) == target.hash {
                    cp.outbox_remove(&sys, entity); // already holds it
                    continue;
                }
                // A system whose snapshot is a tombstone (or absent) has no record to update:
                // writing there is a (re-)create.
                let exists = snap.as_ref().is_some_and(|s| !s.is_tombstone());
                let key = if exists {
                    self.state.native_key(entity, &sys)?
                } else {
                    None
                };
                if job.options.correlate && key.is_none() && target.content.is_some() {
                    // Correlate never creates a record in a system.
                    cp.outbox_remove(&sys, entity);
                    continue;
                }
                let base = snap
                    .as_ref()
                    .filter(|_| conditional)
                    .and_then(|s| s.content.clone().map(|c| (c, s.modstamp)));
                let op = match (&target.content, key) {
                    (Some(f), key) => {
                        let fields = match &job.options.provenance_field {
                            Some(pf) => Self::with_provenance(&head, f, pf),
                            None => f.clone(),
                        };
                        match (key, base) {
                            (Some(key), Some((b, modstamp))) => WriteOp::Update {
                                entity: *entity,
                                key,
                                fields,
                                base: WriteBase {
                                    fields: b,
                                    modstamp,
                                },
                            },
                            (key, _) => WriteOp::Upsert {
                                entity: *entity,
                                key,
                                fields,
                            },
                        }
                    }
                    (None, Some(key)) => WriteOp::Delete {
                        entity: *entity,
                        key,
                    },
                    (None, None) => {
                        // Never existed there: nothing to delete.
                        cp.put_snapshot(&sys, entity, &target);
                        cp.outbox_remove(&sys, entity);
                        continue;
                    }
                };
                ops.push(op);
                heads.push((*entity, target, entry.clone()));
            }
            if !ops.is_empty() {
                // Write-ahead: record what is about to be sent, durably, before sending it.
                let mut ahead = self.state.checkpoint();
                for (entity, head, _) in &heads {
                    ahead.put_pending(&sys, entity, head);
                }
                self.state.commit(ahead)?;
                let results = conn.write(ops).await?;
                if results.len() != heads.len() {
                    return Err(EngineError::Config {
                        job: job.name.clone(),
                        message: format!(
                            "system '{sys}' answered {} results for {} writes",
                            results.len(),
                            heads.len()
                        ),
                    });
                }
                for ((entity, head, entry), res) in heads.into_iter().zip(results) {
                    match res {
                        WriteResult::Ok { key } => {
                            cp.put_xref(&sys, &key, &entity);
                            cp.put_snapshot(&sys, &entity, &head);
                            cp.delete_pending(&sys, &entity);
                            cp.outbox_remove(&sys, &entity);
                            *report.written.entry(sys.to_string()).or_default() += 1;
                        }
                        WriteResult::Err {
                            kind: WriteErrorKind::NotFound,
                            ..
                        } => {
                            // Deleted behind our back: the next read reports the delete, and
                            // the delete rule decides. Nothing to retry.
                            cp.outbox_remove(&sys, &entity);
                        }
                        WriteResult::Err {
                            kind: WriteErrorKind::Stale,
                            message,
                        } => {
                            // Changed since it was read: nothing was written; it is read again
                            // and merged (the entry stays until then).
                            tracing::info!(system = %sys, entity = %entity, %message, "record changed since it was read; reading it again to merge");
                            cp.delete_pending(&sys, &entity);
                            cp.outbox_put(
                                &sys,
                                &entity,
                                &OutboxEntry {
                                    last_error: Some(message),
                                    ..entry
                                },
                            );
                            stale.push(entity);
                        }
                        WriteResult::Err { kind, message } => {
                            report.failed += 1;
                            tracing::warn!(system = %sys, entity = %entity, ?kind, %message, "write failed; kept in the outbox");
                            if matches!(kind, WriteErrorKind::Rejected | WriteErrorKind::NotApplied)
                            {
                                // Certainly not written: no create to look for.
                                cp.delete_pending(&sys, &entity);
                            }
                            cp.outbox_put(
                                &sys,
                                &entity,
                                &OutboxEntry {
                                    enqueued_ms: entry.enqueued_ms,
                                    attempts: entry.attempts.saturating_add(1),
                                    last_error: Some(message),
                                },
                            );
                        }
                    }
                }
            }
            self.state.commit(cp)?;
        }
        Ok(stale)
    }
}

/// Creates whose outcome is unknown, by the hash of the content sent: several entities may
/// have sent the same content, and each record found with it links one of them.
#[derive(Default)]
struct UnknownCreates(HashMap<concord_model::model::ContentHash, Vec<EntityId>>);

impl UnknownCreates {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One entity whose create sent content `h` (the lowest id first: the same on every run).
    fn take(&mut self, h: &concord_model::model::ContentHash) -> Option<EntityId> {
        let list = self.0.get_mut(h)?;
        list.sort_unstable_by(|a, b| b.cmp(a));
        let e = list.pop();
        if list.is_empty() {
            self.0.remove(h);
        }
        e
    }
}

/// How a record without a cross-reference is linked.
enum Matched {
    /// Its own new entity (from its entity hint or native key).
    Own,
    /// The entity its match key stands for.
    Entity(EntityId),
    /// Not synced (correlate: no match yet).
    Drop,
}

/// The content hash of `f` as the pass compares it (normalised).
fn normal_hash(f: &Fields, opts: &NormalizeOptions) -> concord_model::model::ContentHash {
    let mut f = f.clone();
    f.apply_options(opts);
    f.content_hash()
}

/// The entity a match hash stands for in a job: the same in every pass and instance.
fn match_entity(job: &str, hash: &[u8; 32]) -> EntityId {
    let mut h = blake3::Hasher::new();
    h.update(b"concord.match.entity.v1");
    h.update(job.as_bytes());
    h.update(&[0]);
    h.update(hash);
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    EntityId(id)
}

/// Match entries changed in this pass, ahead of their commit: those of the systems read so far,
/// and those of the system being read, which are dropped if its read fails.
#[derive(Default)]
struct MatchOverlay {
    entries: HashMap<[u8; 32], MatchEntry>,
    revs: HashMap<(SystemId, Key), Option<[u8; 32]>>,
    reading: HashMap<[u8; 32], MatchEntry>,
    reading_revs: HashMap<(SystemId, Key), Option<[u8; 32]>>,
    /// Correlate: records read alone in this pass (`true`), or matched since (`false`).
    lonely: HashMap<(SystemId, Key), bool>,
    reading_lonely: HashMap<(SystemId, Key), bool>,
}

impl MatchOverlay {
    fn get(
        &mut self,
        state: &StateStore,
        job: &str,
        hash: &[u8; 32],
    ) -> Result<MatchEntry, EngineError> {
        if let Some(e) = self.reading.get(hash).or_else(|| self.entries.get(hash)) {
            return Ok(e.clone());
        }
        Ok(state.match_entry(job, hash)?.unwrap_or_default())
    }

    fn put(&mut self, cp: &mut Checkpoint, job: &str, hash: [u8; 32], e: MatchEntry) {
        if e.entity.is_none() && e.lonely.is_empty() {
            cp.delete_match(job, &hash);
        } else {
            cp.put_match(job, &hash, &e);
        }
        self.reading.insert(hash, e);
    }

    /// Where this pass filed a record (`Some(None)`: nowhere any more); `None`: not touched.
    fn rev(&self, sys: &SystemId, key: &Key) -> Option<Option<[u8; 32]>> {
        let k = (sys.clone(), key.clone());
        self.reading_revs
            .get(&k)
            .or_else(|| self.revs.get(&k))
            .copied()
    }

    fn set_rev(&mut self, sys: &SystemId, key: &Key, hash: Option<[u8; 32]>) {
        self.reading_revs.insert((sys.clone(), key.clone()), hash);
    }

    fn set_lonely(&mut self, sys: &SystemId, key: &Key, lonely: bool) {
        self.reading_lonely
            .insert((sys.clone(), key.clone()), lonely);
    }

    /// Records read in this pass that are still without a match (each counted once).
    fn unmatched(&self) -> u64 {
        self.lonely.values().filter(|l| **l).count() as u64
    }

    /// The system's read completed: its changes count.
    fn keep(&mut self) {
        self.entries.extend(self.reading.drain());
        self.revs.extend(self.reading_revs.drain());
        self.lonely.extend(self.reading_lonely.drain());
    }

    /// The system's read failed: nothing it changed counts.
    fn discard(&mut self) {
        self.reading.clear();
        self.reading_revs.clear();
        self.reading_lonely.clear();
    }
}

fn conflict_entry(
    job: &str,
    entity: &EntityId,
    c: &concord_model::core::Conflict,
    now: i64,
) -> ConflictEntry {
    let bytes = |v: &Option<concord_model::model::Value>| {
        v.as_ref().map(canonical::value_bytes).unwrap_or_default()
    };
    ConflictEntry {
        job: job.to_string(),
        entity: entity.0,
        field: c.field.clone(),
        base: bytes(&c.base),
        sides: c
            .sides
            .iter()
            .map(|s| ConflictSideEntry {
                system: s.system.to_string(),
                value: bytes(&s.value),
                modstamp: s.modstamp.map(|m| m.millis()),
            })
            .collect(),
        detected_ms: now,
    }
}
