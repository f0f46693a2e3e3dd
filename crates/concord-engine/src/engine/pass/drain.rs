//! The drain phase of a pass: each written system's outbox goes out in batches, each batch's
//! outcome committed after it; records a conditional write found changed are read again.

use super::*;

impl Engine {
    /// Writes the outboxes of the active systems the job writes (only `only`'s entities when
    /// given), skipping systems that failed in this pass, those `written` directly by this
    /// flush ([`Engine::write_direct`]) — and, at a chunk boundary, the system being read, and
    /// every delete (see [`Flush`]); returns, per system, the entities
    /// whose conditional update found them changed since they were read.
    pub(super) async fn write_systems(
        &self,
        pass: &mut Pass<'_>,
        only: Option<&BTreeSet<EntityId>>,
        flush: Flush<'_>,
        written: &BTreeSet<SystemId>,
    ) -> Result<BTreeMap<SystemId, Vec<EntityId>>, EngineError> {
        let job = pass.job;
        let mut stale = BTreeMap::new();
        let mid_read = flush != Flush::Last;
        let targets: Vec<&Arc<dyn Connector>> = pass
            .active
            .iter()
            .copied()
            .filter(|c| job.role(c.system()).write)
            .collect();
        for conn in targets {
            if pass.failed.contains(conn.system())
                || written.contains(conn.system())
                || matches!(flush, Flush::Chunk { reading } if reading == conn.system())
            {
                continue;
            }
            match self
                .drain_outbox(
                    job,
                    conn.as_ref(),
                    only,
                    mid_read,
                    pass.started,
                    &mut pass.report,
                )
                .await
            {
                Ok(s) => {
                    if !s.is_empty() {
                        stale.insert(conn.system().clone(), s);
                    }
                }
                Err(EngineError::Connector(e)) if job.options.isolate_failures => {
                    pass.writes_failed(conn.system(), &e)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(stale)
    }

    /// Point reads of records a write found changed: their current content as observations.
    pub(super) async fn reread(
        &self,
        pass: &mut Pass<'_>,
        stale: &BTreeMap<SystemId, Vec<EntityId>>,
    ) -> Result<BTreeMap<EntityId, BTreeMap<SystemId, Observation>>, EngineError> {
        let job = pass.job;
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
                    pass.failed.insert(sys.clone());
                    pass.report.errors.insert(sys.to_string(), e.to_string());
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

    /// What one outbox mark of `entity` asks of `sys`, from the entity's head and what `sys`
    /// holds (`parts`). `mid_read`: a chunk flush, the pass still reads — deletes wait for the
    /// last flush (the delete guard needs the whole pass). `unconfirmed`: whether an earlier
    /// write of this entity to `sys` is unconfirmed (see below).
    fn owed(
        &self,
        job: &SyncJob,
        sys: &SystemId,
        mid_read: bool,
        unconfirmed: Unconfirmed,
        entity: &EntityId,
        parts: EntityParts,
    ) -> Result<Owed, EngineError> {
        // A system the job reads gets conditional, partial updates (what changed since its
        // snapshot, if it still holds the snapshot there); a write-only target is kept equal to
        // the head in every mapped field.
        let conditional = job.role(sys).read;
        let EntityParts {
            head,
            snapshot: snap,
            native,
        } = parts;
        let Some(head) = head else {
            return Ok(Owed::Settled);
        };
        let parked = self.parked(entity)?;
        if parked.held {
            // A record-level conflict waits for resolution: nothing goes out.
            return Ok(Owed::Settled);
        }
        // What this system should hold: the head, minus parked fields (it keeps its own).
        let keep = with_identity(&parked.fields, job.identity(sys));
        let (content, hash) = target_for(&head, snap.as_ref(), &keep);
        // Its modification time there is unknown until the system is read again (the head's
        // is another system's clock: no precondition may be built on it).
        let target = Version {
            content,
            hash,
            clock: head.clock.clone(),
            modstamp: None,
            origin: head.origin.clone(),
            field_origins: head.field_origins.clone(),
        };
        if snap.as_ref().and_then(|s| s.hash) == target.hash {
            return Ok(Owed::Settled); // already holds it
        }
        if unconfirmed != Unconfirmed::No && conditional {
            // An earlier write here is unconfirmed (its answer was lost): the system may hold
            // what it sent, edited since. Only a read tells what the system holds then (the
            // plan recognises the version sent, and merges an edit made on it): a write sent
            // before — an upsert by entity id, or an update whose failed precondition drops the
            // record of that earlier write — could lose the edit. So nothing more is sent until
            // a read has settled it: at a chunk flush the pass's read of the system will; at
            // the last, the read did not meet the record, so it is looked at by its key.
            if mid_read {
                return Ok(Owed::Held);
            }
            if native.is_some() {
                return Ok(Owed::Reread);
            }
        }
        if unconfirmed == Unconfirmed::MayStillLand && native.is_none() {
            // A create whose record no read has found — but the system may still be making
            // it (a request outlives its client): sent again now, it could make the record
            // twice. It waits until the system's in-flight limit has passed.
            return Ok(Owed::InFlight);
        }
        // Otherwise no record of it known there, and the system's complete read (or, for a
        // write-only target, the look for lost creates) did not find one, begun after the
        // system was done with the request: the create did not land. Sent again.
        // A system whose snapshot is a tombstone (or absent) has no record to update: writing
        // there is a (re-)create.
        let exists = snap.as_ref().is_some_and(|s| !s.is_tombstone());
        let key = if exists { native } else { None };
        if job.options.correlate && key.is_none() && target.content.is_some() {
            // Correlate never creates a record in a system.
            return Ok(Owed::Settled);
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
            (None, Some(_)) if mid_read => return Ok(Owed::Held),
            (None, Some(key)) => WriteOp::Delete {
                entity: *entity,
                key,
            },
            // Never existed there: nothing to delete.
            (None, None) => return Ok(Owed::Tombstone(target)),
        };
        Ok(Owed::Write(op, target, head.modstamp))
    }

    /// Writes `conn`'s outbox (only `only`'s entities when given; deletes left marked with
    /// `mid_read`, see [`Engine::owed`]). Returns the entities whose conditional update found the record
    /// changed since it was read (left in the outbox).
    pub(super) async fn drain_outbox(
        &self,
        job: &SyncJob,
        conn: &dyn Connector,
        only: Option<&BTreeSet<EntityId>>,
        mid_read: bool,
        pass_started: Timestamp,
        report: &mut SyncReport,
    ) -> Result<Vec<EntityId>, EngineError> {
        let sys = conn.system().clone();
        let mut pending = self.state.outbox(&sys, usize::MAX)?;
        if let Some(only) = only {
            pending.retain(|(e, _)| only.contains(e));
        }
        let conditional = job.role(&sys).read;
        // Writes sent earlier whose outcome is unknown, and when they were sent (see `owed`):
        // where the system is read, or a create repeated could make a second record.
        let unconfirmed = if conditional || !conn.creates_idempotent() {
            self.state.pending_entities(&sys)?
        } else {
            BTreeMap::new()
        };
        let limit = conn.in_flight_limit().as_millis() as i64;
        let how_unconfirmed = |e: &EntityId| match unconfirmed.get(e) {
            None => Unconfirmed::No,
            Some(_) if conn.creates_idempotent() || limit == 0 => Unconfirmed::Yes,
            // (Sent before its time was recorded: long ago.)
            Some(None) => Unconfirmed::Yes,
            Some(Some(t)) if t.millis().saturating_add(limit) > pass_started.millis() => {
                Unconfirmed::MayStillLand
            }
            Some(Some(_)) => Unconfirmed::Yes,
        };
        let mut stale = Vec::new();
        let mut sources = std::collections::HashMap::new();
        for chunk in pending.chunks(job.batch_size.max(1)) {
            let mut cp = self.state.checkpoint();
            let mut ops = Vec::new();
            let mut heads = Vec::new();
            for (entity, entry) in chunk {
                let parts = self.state.entity_parts(None, entity, &sys)?;
                match self.owed(job, &sys, mid_read, how_unconfirmed(entity), entity, parts)? {
                    Owed::Settled => cp.outbox_remove(&sys, entity),
                    Owed::Held => {} // the mark waits
                    Owed::InFlight => {
                        *report.in_flight.entry(sys.to_string()).or_default() += 1;
                        if let Some(Some(sent)) = unconfirmed.get(entity) {
                            let due = Timestamp(sent.millis().saturating_add(limit));
                            report.in_flight_due =
                                Some(report.in_flight_due.map_or(due, |d| d.min(due)));
                        }
                    }
                    Owed::Reread => stale.push(*entity), // read again, then written
                    Owed::Tombstone(target) => {
                        cp.put_snapshot(&sys, entity, &target);
                        cp.outbox_remove(&sys, entity);
                    }
                    Owed::Write(op, target, source) => {
                        ops.push(op);
                        sources.insert(*entity, source);
                        heads.push((*entity, target, entry.clone()));
                    }
                }
            }
            if !ops.is_empty() {
                // Write-ahead: record what is about to be sent, durably, before sending it —
                // where a lost answer needs it: a system read again (its read recognises the
                // version sent) or one whose creates are not idempotent (the content sent
                // finds the record). A write-only target with idempotent creates needs none:
                // its outbox mark sends the same write again.
                let write_ahead = conditional || !conn.creates_idempotent();
                if write_ahead {
                    let mut ahead = self.state.checkpoint();
                    let now = Timestamp::now();
                    for (entity, head, _) in &heads {
                        ahead.put_pending(&sys, entity, head, now);
                    }
                    self.state.commit(ahead)?;
                }
                let results = conn.write(ops).await?;
                check_results(job, &sys, results.len(), heads.len())?;
                let how = Settle {
                    write_ahead,
                    marked: true,
                };
                for ((entity, head, entry), res) in heads.into_iter().zip(results) {
                    let source = sources.remove(&entity).flatten();
                    if let Some(e) =
                        how.settle(&mut cp, &sys, entity, &head, entry, res, report, source)
                    {
                        stale.push(e);
                    }
                }
            }
            self.state.commit(cp)?;
            if job.options.stopping() {
                // Asked to stop: this batch is settled and committed; the rest stays in the
                // outbox, durable, for the next pass.
                return Err(EngineError::Stopped {
                    job: job.name.clone(),
                });
            }
        }
        Ok(stale)
    }

    /// Writes what the plan in `cp` marked for `conn` straight from `cp`, whose commit then
    /// records the plan and the outcome at once: no outbox mark is stored for a record written
    /// here, and one store write carries its entity. Only for a chunk flush (its deletes are
    /// held: their marks stay in `cp`), and for a write-only target whose creates are
    /// idempotent with nothing queued in its outbox: a crash before `cp` commits loses the
    /// chunk's plan with it, and the next pass reads the chunk again from the old cursor and
    /// sends the same writes again. A write that failed keeps its mark in `cp`. On an error,
    /// every mark not settled is back in `cp`, which the caller commits.
    pub(super) async fn write_direct(
        &self,
        job: &SyncJob,
        conn: &dyn Connector,
        cp: &mut Checkpoint,
        report: &mut SyncReport,
    ) -> Result<(), EngineError> {
        let sys = conn.system().clone();
        let mut queue = Vec::new();
        let mut sources = std::collections::HashMap::new();
        for (entity, entry) in cp.take_outbox(&sys)? {
            let parts = self.state.entity_parts(Some(cp), &entity, &sys)?;
            // (A write-only target: no write to it is conditional, `owed` ignores `unconfirmed`.)
            match self.owed(job, &sys, true, Unconfirmed::No, &entity, parts)? {
                Owed::Settled => {}
                Owed::Held | Owed::Reread | Owed::InFlight => cp.outbox_put(&sys, &entity, &entry),
                Owed::Tombstone(target) => cp.put_snapshot(&sys, &entity, &target),
                Owed::Write(op, target, source) => {
                    sources.insert(entity, source);
                    queue.push((op, (entity, target, entry)));
                }
            }
        }
        let how = Settle {
            write_ahead: false,
            marked: false,
        };
        let mut queue = queue.into_iter();
        loop {
            let (ops, heads): (Vec<_>, Vec<_>) = queue.by_ref().take(job.batch_size.max(1)).unzip();
            if ops.is_empty() {
                return Ok(());
            }
            let results = match conn.write(ops).await {
                Ok(r) => check_results(job, &sys, r.len(), heads.len()).map(|()| r),
                Err(e) => Err(e.into()),
            };
            let results = match results {
                Ok(r) => r,
                Err(e) => {
                    // Nothing of this batch or after it is known written: the marks stay.
                    for (entity, _, entry) in heads.into_iter().chain(queue.map(|(_, h)| h)) {
                        cp.outbox_put(&sys, &entity, &entry);
                    }
                    return Err(e);
                }
            };
            for ((entity, head, entry), res) in heads.into_iter().zip(results) {
                // (A write-only target's writes are not conditional: never stale.)
                let source = sources.remove(&entity).flatten();
                let _ = how.settle(cp, &sys, entity, &head, entry, res, report, source);
            }
        }
    }
}

/// What one outbox mark asks of a system (see [`Engine::owed`]).
enum Owed {
    /// Nothing to send: the mark goes.
    Settled,
    /// A delete held until the pass's last flush, or a write waiting for the system's read
    /// to settle an unconfirmed one: the mark stays.
    Held,
    /// A write waiting for a point read of the record to settle an unconfirmed one: the mark
    /// stays, the record is read again (as one a conditional write found changed).
    Reread,
    /// A create whose answer was lost, which the system may still be making: the mark stays
    /// until the system's in-flight limit has passed (and a read has not found the record).
    InFlight,
    /// Nothing existed there to delete: the snapshot records the tombstone, the mark goes.
    Tombstone(Version),
    /// This write, and the version the system holds once it succeeds.
    Write(WriteOp, Version, Option<Timestamp>),
}

/// Whether an earlier write of an entity to a system is unconfirmed (its answer lost).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unconfirmed {
    No,
    Yes,
    /// And sent less than the system's in-flight limit before this pass began, to a system
    /// where a create repeated can make a second record.
    MayStillLand,
}

fn check_results(
    job: &SyncJob,
    sys: &SystemId,
    got: usize,
    sent: usize,
) -> Result<(), EngineError> {
    if got == sent {
        return Ok(());
    }
    Err(EngineError::Config {
        job: job.name.clone(),
        message: format!("system '{sys}' answered {got} results for {sent} writes"),
    })
}

/// How a write's outcome is recorded: whether a write-ahead `pending` entry was stored, and
/// whether the record's outbox mark is in the store (else only in the checkpoint).
struct Settle {
    write_ahead: bool,
    marked: bool,
}

impl Settle {
    /// Records one write's outcome in `cp`; returns the entity when the system answered that
    /// the record changed since it was read (its mark stays, to be read again and merged).
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        cp: &mut Checkpoint,
        sys: &SystemId,
        entity: EntityId,
        head: &Version,
        entry: OutboxEntry,
        res: WriteResult,
        report: &mut SyncReport,
        source: Option<Timestamp>,
    ) -> Option<EntityId> {
        match res {
            WriteResult::Ok { key } => {
                cp.put_xref(sys, &key, &entity);
                cp.put_snapshot(sys, &entity, head);
                if self.write_ahead {
                    cp.delete_pending(sys, &entity);
                }
                if self.marked {
                    cp.outbox_remove(sys, &entity);
                }
                *report.written.entry(sys.to_string()).or_default() += 1;
                if let Some(t) = source {
                    let ms = (Timestamp::now().millis() - t.millis()).max(0) as u64;
                    report.lag.entry(sys.to_string()).or_default().add(ms);
                }
                None
            }
            WriteResult::Err {
                kind: WriteErrorKind::NotFound,
                ..
            } => {
                // Deleted behind our back: the next read reports the delete, and the delete
                // rule decides. Nothing to retry.
                if self.marked {
                    cp.outbox_remove(sys, &entity);
                }
                None
            }
            WriteResult::Err {
                kind: WriteErrorKind::Stale,
                message,
            } => {
                // Changed since it was read: nothing was written; it is read again and merged
                // (the entry stays until then).
                tracing::info!(system = %sys, entity = %entity, %message, "record changed since it was read; reading it again to merge");
                cp.delete_pending(sys, &entity);
                cp.outbox_put(
                    sys,
                    &entity,
                    &OutboxEntry {
                        last_error: Some(message),
                        ..entry
                    },
                );
                Some(entity)
            }
            WriteResult::Err { kind, message } => {
                report.failed += 1;
                *report.failed_in.entry(sys.to_string()).or_default() += 1;
                tracing::warn!(system = %sys, entity = %entity, ?kind, %message, "write failed; kept in the outbox");
                if matches!(kind, WriteErrorKind::Rejected | WriteErrorKind::NotApplied) {
                    // Certainly not written: no create to look for.
                    cp.delete_pending(sys, &entity);
                }
                cp.outbox_put(
                    sys,
                    &entity,
                    &OutboxEntry {
                        enqueued_ms: entry.enqueued_ms,
                        attempts: entry.attempts.saturating_add(1),
                        last_error: Some(message),
                    },
                );
                None
            }
        }
    }
}
