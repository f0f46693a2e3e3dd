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
use crate::connector::{Change, Connector, WriteErrorKind, WriteOp, WriteResult};
use crate::core::{plan, target_for, Observation, Parked, Policy, Resolution, SystemState};
use crate::model::{canonical, Actor, EntityId, NormalizeOptions, SystemId, Timestamp, Version};
use crate::store::{
    Checkpoint, ConflictEntry, ConflictSideEntry, OutboxEntry, RunLogEntry, StateStore,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A job as the engine runs it.
pub struct SyncJob {
    pub name: String,
    pub systems: Vec<Arc<dyn Connector>>,
    pub policy: Policy,
    pub normalize: NormalizeOptions,
    /// Records per write call and per checkpoint.
    pub batch_size: usize,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Records read, per system.
    pub read: BTreeMap<String, u64>,
    /// Entities whose content changed in some system.
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
}

impl SyncReport {
    pub fn total_written(&self) -> u64 {
        self.written.values().sum()
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
        c
    }
}

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

    fn actor(&self, sys: &SystemId) -> crate::model::ActorId {
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
        for conn in &active {
            self.read_system(
                job,
                conn.as_ref(),
                &mut observed,
                &mut cp,
                &mut cursors,
                &mut report,
            )
            .await?;
        }

        // 2. Plan each touched entity.
        let now = Timestamp::now().millis();
        for (entity, obs) in &observed {
            let head = self.state.head(entity)?;
            let mut snaps: Vec<(Option<Version>, Option<Version>)> = Vec::with_capacity(all.len());
            for sys in &all {
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
                })
                .collect();
            // Reading a system settles any unconfirmed write to it: the plan has used it.
            for (sys, (_, pending)) in all.iter().zip(&snaps) {
                if pending.is_some() {
                    cp.delete_pending(sys, entity);
                }
            }
            let parked = self.parked(entity)?;
            let p = plan(head.as_ref(), &states, &job.policy, &parked);
            if !p.changed_in.is_empty() {
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
                self.state.commit(std::mem::take(&mut cp))?;
            }
        }
        cp.extend(cursors);
        self.state.commit(cp)?;

        // 3. Write what the active systems are owed.
        for conn in &active {
            self.drain_outbox(job, conn.as_ref(), &mut report).await?;
        }
        Ok(report)
    }

    async fn read_system(
        &self,
        job: &SyncJob,
        conn: &dyn Connector,
        observed: &mut BTreeMap<EntityId, BTreeMap<SystemId, Observation>>,
        cp: &mut Checkpoint,
        cursors: &mut Checkpoint,
        report: &mut SyncReport,
    ) -> Result<(), EngineError> {
        let sys = conn.system().clone();
        let mut cursor = self.state.cursor(&job.name, &sys)?;
        let mut complete = true;
        let mut seen: BTreeSet<EntityId> = BTreeSet::new();
        let mut count = 0u64;
        loop {
            let page = conn.read(cursor.as_deref()).await?;
            complete &= page.complete;
            for ch in page.changes {
                count += 1;
                let Change {
                    key,
                    entity_hint,
                    fields,
                    modstamp,
                } = ch;
                let entity = match self.state.entity_for(&sys, &key)? {
                    Some(e) => e,
                    None => {
                        let e = entity_hint.unwrap_or_else(|| EntityId::derive(&sys, key.as_str()));
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
                if let Some(c) = &page.cursor {
                    cursors.put_cursor(&job.name, &sys, c);
                }
                break;
            }
            cursor = page.cursor;
        }
        if complete {
            // A scan: what we had and did not see is gone.
            let mut gone = Vec::new();
            self.state.scan_snapshot_meta(&sys, &mut |e, m| {
                if m.hash.is_some() && !seen.contains(&e) {
                    gone.push(e);
                }
                true
            })?;
            for e in gone {
                observed
                    .entry(e)
                    .or_default()
                    .insert(sys.clone(), Observation::Absent);
            }
        }
        *report.read.entry(sys.to_string()).or_default() += count;
        Ok(())
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

    async fn drain_outbox(
        &self,
        job: &SyncJob,
        conn: &dyn Connector,
        report: &mut SyncReport,
    ) -> Result<(), EngineError> {
        let sys = conn.system().clone();
        let pending = self.state.outbox(&sys, usize::MAX)?;
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
                let (content, hash) = target_for(&head, snap.as_ref(), &parked.fields);
                let target = Version {
                    content,
                    hash,
                    clock: head.clock.clone(),
                    modstamp: head.modstamp,
                    origin: head.origin.clone(),
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
                let op = match (&target.content, key) {
                    (Some(f), key) => WriteOp::Upsert {
                        entity: *entity,
                        key,
                        fields: f.clone(),
                    },
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
                        WriteResult::Err { kind, message } => {
                            report.failed += 1;
                            tracing::warn!(system = %sys, entity = %entity, ?kind, %message, "write failed; kept in the outbox");
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
        Ok(())
    }
}

fn conflict_entry(
    job: &str,
    entity: &EntityId,
    c: &crate::core::Conflict,
    now: i64,
) -> ConflictEntry {
    let bytes = |v: &Option<crate::model::Value>| {
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
