//! The plan phase of a pass: every entity the reads touched is planned by `core::plan` into the
//! pass's checkpoint (heads, snapshots, outbox marks, conflicts); the delete guard counts what
//! the plan would delete.

use super::*;

impl Engine {
    /// Plans every observed entity into `cp` (with `slice`, committing it as it grows); a dry
    /// run counts the writes instead.
    pub(super) fn plan_observed(
        &self,
        job: &SyncJob,
        all: &[SystemId],
        observed: &BTreeMap<EntityId, BTreeMap<SystemId, Observation>>,
        cp: &mut Checkpoint,
        report: &mut SyncReport,
        slice: bool,
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
            let (head, stored) = self.state.head_and_snapshots(entity, all)?;
            let mut snaps: Vec<(Option<Version>, Option<Version>)> = Vec::with_capacity(all.len());
            for (sys, snap) in all.iter().zip(stored) {
                let pending = if obs.contains_key(sys) {
                    self.state.pending(sys, entity)?
                } else {
                    None
                };
                snaps.push((snap, pending));
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
            if slice && cp.len() >= job.batch_size.max(1) * 4 {
                self.state.commit(std::mem::take(cp))?;
            }
        }
        Ok(marks)
    }

    /// The systems where the deletes this pass would write (planned now, `marks`, or queued
    /// by earlier passes) exceed the job's delete guard.
    pub(super) fn guard_deletes(
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

    /// `f` (the head's content, or what a system should hold of it) plus a provenance field:
    /// per field, the system that set its value, as the head records it.
    pub(super) fn with_provenance(head: &Version, f: &Fields, field: &str) -> Fields {
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
    pub(super) fn parked(&self, entity: &EntityId) -> Result<Parked, EngineError> {
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
}

pub(super) fn conflict_entry(
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
